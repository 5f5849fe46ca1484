"""``amt evaluate`` end to end on tiny NIfTI folders: pairing, bad input, outputs and a pipeline run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from amtlib import paper
from amtlib.evaluation import evaluate, lesions
from amtlib.io import affine_from_spacing, save_nifti

SHAPE = (4, 16, 16)
SPACING = (5.0, 1.0, 1.0)
AFFINE = affine_from_spacing(SPACING)


def block(z0=1, z1=3, y0=2, y1=8, x0=2, x1=8, shape=SHAPE, value=1) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    m[z0:z1, y0:y1, x0:x1] = value
    return m


def write(folder: Path, case_id: str, arr: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    return save_nifti(arr, affine, folder / f"{case_id}.nii.gz")


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """Refs a, b, c; preds a (perfect), b (half), d (no reference), plus a stray text file."""
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    for c in "abc":
        write(ref, c, block())
    write(pred, "a", block())
    write(pred, "b", block(y1=5))
    write(pred, "d", block())
    (pred / "notes.txt").write_text("not a mask")
    return pred, ref


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = evaluate.cli_main([*argv, "--bootstrap", "100", "--no-progress"])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_cli_end_to_end_with_missing_and_orphan_predictions(folders, tmp_path, capsys):
    pred, ref = folders
    out = tmp_path / "out"
    rc, stdout, err = run(["--pred", str(pred), "--ref", str(ref), "--out", str(out)], capsys)
    assert rc == 0, err
    assert "case c: no prediction" in err and "without reference ignored: d" in err and "notes.txt" in err
    pc = pd.read_csv(out / "per_case.csv", dtype={"case_id": str}).set_index("case_id")
    assert list(pc.index) == ["a", "b", "c"]
    assert list(pc.columns) == list(evaluate.PER_CASE_COLUMNS[1:])
    assert pc.loc["a", "dice"] == 1.0 and pc.loc["b", "dice"] == pytest.approx(2 * 36 / (36 + 72))
    assert pc.loc["c", "pred_missing"] and pc.loc["c", "dice"] == 0 and np.isnan(pc.loc["c", "precision"])
    assert pc.loc["a", "volume_ml"] == pytest.approx(72 * 5 / 1000)
    assert pc.loc["a", "max_axial_diameter_mm"] == pytest.approx(np.hypot(5, 6))
    counts = pd.read_csv(out / "lesion_counts.csv", dtype={"case_id": str})
    assert len(counts) == 3 * 19 and list(counts.columns) == list(evaluate.LESION_COUNT_COLUMNS)
    froc = pd.read_csv(out / "froc.csv").set_index("iou_threshold")
    assert len(froc) == 19
    # a: IoU 1; b: IoU 1/2; c: missed. At 0.45 two of three lesions are found, at 0.5 one (strict).
    assert froc.loc[0.45, "sensitivity"] == pytest.approx(2 / 3) and froc.loc[0.5, "sensitivity"] == pytest.approx(1 / 3)
    assert froc.loc[0.5, "fp_per_scan"] == pytest.approx(1 / 3)
    assert not (out / "table3.csv").exists()
    assert sorted(p.name for p in out.iterdir()) == ["froc.csv", "lesion_counts.csv", "per_case.csv", "summary.json"]
    assert "3 cases (1 without prediction)" in stdout


def test_cli_with_clinical_metadata_writes_tables(folders, tmp_path, capsys):
    pred, ref = folders
    clinical = tmp_path / "clinical.csv"
    pd.DataFrame({"case_id": ["a", "b", "c"], "manufacturer": ["TOSHIBA", "SIEMENS", "SIEMENS"],
                  "histology": ["thymoma", "lymphoma", "teratoma"]}).to_csv(clinical, index=False)
    out = tmp_path / "out"
    rc, _, err = run(["--pred", str(pred), "--ref", str(ref), "--out", str(out), "--clinical", str(clinical)], capsys)
    assert rc == 0, err
    t3 = pd.read_csv(out / "table3.csv").set_index("subgroup")
    assert t3.loc["siemens", "n"] == 2 and t3.loc["size_small", "n"] == 3 and t3.loc["others", "n"] == 1
    assert t3.loc["overall", "dice_reported"] == "0.82 ± 0.15 (0.79–0.84)"
    t4 = pd.read_csv(out / "table4.csv").set_index("subgroup")
    assert t4.loc["overall", "sensitivity_iou0.5_mean"] == pytest.approx(1 / 3)
    pc = pd.read_csv(out / "per_case.csv")
    assert {"manufacturer", "histology", "size_bin"} <= set(pc.columns)


def test_shape_mismatch_names_the_case_and_writes_nothing(folders, tmp_path, capsys):
    pred, ref = folders
    write(pred, "b", block(shape=(4, 8, 18)))  # fewer rows than the reference: not its grid stored another way
    out = tmp_path / "out"
    rc, _, err = run(["--pred", str(pred), "--ref", str(ref), "--out", str(out)], capsys)
    assert rc == 2
    assert "case b" in err and "(4, 8, 18)" in err and "--resample-pred" in err
    assert not out.exists()


def test_affine_mismatch_is_an_error(folders, tmp_path):
    pred, ref = folders
    shifted = AFFINE.copy()
    shifted[0, 3] = 3.0
    write(pred, "a", block(), shifted)
    with pytest.warns(UserWarning) as rec:
        cases = evaluate.pair_folders(pred, ref)
    assert any("without reference ignored: d" in str(w.message) for w in rec)
    with pytest.warns(UserWarning, match="case c"):
        with pytest.raises(ValueError, match="case a: .*affine differs"):
            evaluate.evaluate_cases(cases, progress=False)


def test_resample_pred_maps_the_prediction_onto_the_reference_grid(folders, tmp_path, capsys):
    pred, ref = folders
    # a larger grid starting 2 voxels earlier in x and y: reference voxel (z, y, x) is its (z, y+2, x+2)
    big = np.zeros((4, 20, 20), dtype=np.uint8)
    big[1:3, 4:10, 4:10] = 1
    shifted = AFFINE.copy()
    shifted[:2, 3] = -2.0
    write(pred, "a", big, shifted)
    out = tmp_path / "out"
    # the same lattice, padded in-plane: placed exactly, as the cohort places reference masks (no resampling)
    rc, _, err = run(["--pred", str(pred), "--ref", str(ref), "--out", str(out)], capsys)
    assert rc == 0, err
    assert pd.read_csv(out / "per_case.csv", dtype={"case_id": str}).set_index("case_id").loc["a", "dice"] == 1.0
    half = AFFINE.copy()
    half[:3, 3] += 0.5 * AFFINE[:3, 0]  # half a voxel off in x: really another grid
    write(pred, "a", block(), half)
    rc, _, err = run(["--pred", str(pred), "--ref", str(ref), "--out", str(out)], capsys)
    assert rc == 2 and "case a" in err and "--resample-pred" in err
    rc, _, err = run(["--pred", str(pred), "--ref", str(ref), "--out", str(out), "--resample-pred"], capsys)
    assert rc == 0, err


def test_the_same_grid_stored_another_way_scores_without_resampling(folders, tmp_path, capsys):
    """Issue 24 item 4: amt evaluate refused a pure axis flip of the reference's grid (dcm2niix's row flip)
    unless --resample-pred, and read NIfTI only; it now reads masks as the cohort does."""
    import SimpleITK as sitk

    pred, ref = folders
    m = block()
    flip = AFFINE.copy()
    flip[:, 1] = -AFFINE[:, 1]
    flip[:3, 3] = AFFINE[:3, 3] + AFFINE[:3, 1] * (m.shape[1] - 1)
    write(pred, "a", np.ascontiguousarray(m[:, ::-1, :]), flip)  # rows stored bottom-up
    (pred / "b.nii.gz").unlink()
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ AFFINE  # the reference grid in LPS, as 3D Slicer writes NRRD
    img = sitk.GetImageFromArray(block(y1=5).astype(np.uint8))  # (z, y, x) -> x, y, z image
    img.SetSpacing([float(v) for v in np.linalg.norm(lps[:3, :3], axis=0)])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    img.SetDirection([float(v) for v in (lps[:3, :3] / np.linalg.norm(lps[:3, :3], axis=0)).ravel()])
    sitk.WriteImage(img, str(pred / "b.nrrd"))
    out = tmp_path / "out"
    rc, _, err = run(["--pred", str(pred), "--ref", str(ref), "--out", str(out)], capsys)
    assert rc == 0, err
    pc = pd.read_csv(out / "per_case.csv", dtype={"case_id": str}).set_index("case_id")
    assert pc.loc["a", "dice"] == 1.0 and pc.loc["b", "dice"] == pytest.approx(2 * 36 / (36 + 72))


def test_label_values_other_than_binary(folders, tmp_path, capsys):
    pred, ref = folders
    write(ref, "a", block(value=2))
    write(pred, "a", block(value=2))
    out = tmp_path / "out"
    rc, _, err = run(["--pred", str(pred), "--ref", str(ref), "--out", str(out)], capsys)
    assert rc == 2 and "a.nii.gz" in err and "[2]" in err and "--label" in err
    m, _, _ = evaluate.load_mask(ref / "a.nii.gz", label=2)
    assert m.sum() == 72


def test_a_file_that_is_not_nifti(folders, tmp_path, capsys):
    pred, ref = folders
    (ref / "e.nii.gz").write_text("this is text")
    rc, _, err = run(["--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "out")], capsys)
    assert rc == 2 and "e.nii.gz" in err and "not a readable NIfTI" in err


def test_missing_folder_and_empty_reference(tmp_path, capsys):
    rc, _, err = run(["--pred", str(tmp_path / "nope"), "--ref", str(tmp_path), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "prediction folder not found" in err
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    rc, _, err = run(["--pred", str(tmp_path / "p"), "--ref", str(tmp_path / "r"), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "no reference masks" in err


def test_workers_give_the_same_result(folders):
    pred, ref = folders
    with pytest.warns(UserWarning):
        cases = evaluate.pair_folders(pred, ref)
    with pytest.warns(UserWarning, match="case c"):
        one = evaluate.evaluate_cases(cases, progress=False)
        two = evaluate.evaluate_cases(cases, workers=2, progress=False)
    pd.testing.assert_frame_equal(one.per_case, two.per_case)
    pd.testing.assert_frame_equal(one.lesion_counts, two.lesion_counts)


def test_score_case_counts_lesions_once_for_all_thresholds():
    ref = block()
    pred = block(y1=5)
    pred[0, 12:14, 12:15] = 1  # 6-voxel speck: FP voxels, but no lesion
    row, counts = evaluate.score_case(pred.astype(bool), ref.astype(bool), SPACING)
    assert row["fp_voxels"] == 6 and row["n_pred_lesions"] == 1 and row["n_ref_lesions"] == 1
    i = int(np.flatnonzero(np.isclose(lesions.IOU_THRESHOLDS, 0.45))[0])
    assert (counts["tp"][i], counts["fp"][i], counts["fn"][i]) == (1, 0, 0)
    assert (counts["tp"][i + 1], counts["fp"][i + 1], counts["fn"][i + 1]) == (0, 1, 1)


def test_run_cases_reads_manifest_split_and_predictions(tmp_path):
    from amtlib.paths import RunPaths

    P = RunPaths(tmp_path / "run")
    for c in ("001", "002", "003"):
        write(P.masks_dir, c, block())
    write(P.predictions_dir, "001", block())
    P.split_csv.parent.mkdir(parents=True)
    pd.DataFrame({"case_id": ["001", "002", "003"], "mask_path": [f"masks/{c}.nii.gz" for c in ("001", "002", "003")],
                  "manufacturer": ["SIEMENS", "TOSHIBA", "GE"], "histology": ["thymoma"] * 3, "split": [""] * 3}
                 ).to_csv(P.manifest, index=False)
    pd.DataFrame({"case_id": ["001", "002", "003"], "patient_id": ["p1", "p2", "p3"], "institution": ["X", "Y", "CENTRAL"],
                  "split": ["external_test", "external_test", "train"]}).to_csv(P.split_csv, index=False)
    cases = evaluate.run_cases(P.root, "external_test")
    assert list(cases["case_id"]) == ["001", "002"]
    assert cases.loc[0, "pred_path"].endswith("predictions/001.nii.gz") and pd.isna(cases.loc[1, "pred_path"])
    assert Path(cases.loc[1, "ref_path"]) == P.masks_dir / "002.nii.gz"
    with pytest.warns(UserWarning, match="case 002"):
        ev = evaluate.evaluate_cases(cases, progress=False)
    assert list(ev.per_case["split"]) == ["external_test"] * 2 and ev.per_case["size_bin"].tolist() == ["size_small"] * 2
    with pytest.raises(ValueError, match="no case in split"):
        evaluate.run_cases(P.root, "tuning")


def test_score_case_equals_full_volume_computation_on_random_masks():
    from amtlib.evaluation.metrics import voxel_metrics

    rng = np.random.default_rng(3)
    for _ in range(5):
        pred = np.zeros((10, 40, 40), dtype=bool)
        ref = np.zeros_like(pred)
        pred[2:8, 5:30, 10:35] = rng.random((6, 25, 25)) < 0.4
        ref[3:9, 8:33, 5:30] = rng.random((6, 25, 25)) < 0.4
        row, counts = evaluate.score_case(pred, ref, (2.0, 0.5, 0.5))
        iou = lesions.lesion_iou_from_masks(pred, ref)  # uncropped, independent path
        tp, fp, fn = lesions.detection_counts(iou)
        np.testing.assert_array_equal(counts["tp"], tp)
        np.testing.assert_array_equal(counts["fp"], fp)
        np.testing.assert_array_equal(counts["fn"], fn)
        assert {k: row[k] for k in ("tp_voxels", "fp_voxels", "fn_voxels")} == {
            k: v for k, v in voxel_metrics(pred, ref).items() if k.endswith("voxels")}
        assert row["n_pred_lesions"] == iou.shape[0]
        assert row["max_axial_diameter_mm"] == pytest.approx(lesions.max_axial_diameter_mm(ref, (2.0, 0.5, 0.5)))


def _errorbar_series(ax, label: str) -> tuple[np.ndarray, list, list]:
    """The points (n, 2) of the errorbar series called ``label`` on ``ax`` and its bars' segments,
    horizontal and vertical, one per point in the points' order (empty list where the series has none)."""
    (series,) = [c for c in ax.containers if c.get_label() == label]
    bars = list(series.lines[2])
    horizontal = bars.pop(0).get_segments() if series.has_xerr else []
    vertical = bars.pop(0).get_segments() if series.has_yerr else []
    return series.lines[0].get_xydata(), horizontal, vertical


def test_figures_and_paper_comparison_from_cli_outputs(folders, tmp_path, capsys):
    """The figures draw the CLI's numbers: the FROC line is froc.csv's (FP/scan, sensitivity) with its CIs
    as bars and the paper's Table 4 points beside it; the forest plot puts each subgroup's mean and CI
    on the row its tick names."""
    import matplotlib

    matplotlib.use("Agg")
    from amtlib.evaluation import stats
    from amtlib.figures.evaluation import plot_froc, plot_subgroup_forest

    pred, ref = folders
    out = tmp_path / "out"
    assert run(["--pred", str(pred), "--ref", str(ref), "--out", str(out)], capsys)[0] == 0
    froc = pd.read_csv(out / "froc.csv")
    ax = plot_froc(froc.sample(frac=1, random_state=0)).axes[0]  # rows shuffled: the curve runs by IoU threshold
    f = froc.sort_values("iou_threshold")
    points, fp_bars, sens_bars = _errorbar_series(ax, "regenerated (95% CI)")
    np.testing.assert_allclose(points, f[["fp_per_scan", "sensitivity"]].to_numpy())
    x, y = f["fp_per_scan"].to_numpy(), f["sensitivity"].to_numpy()
    np.testing.assert_allclose(fp_bars, np.stack([np.c_[f["fp_per_scan_ci_low"], y], np.c_[f["fp_per_scan_ci_high"], y]], 1))
    np.testing.assert_allclose(sens_bars, np.stack([np.c_[x, f["sensitivity_ci_low"]], np.c_[x, f["sensitivity_ci_high"]]], 1))
    ours = {line.get_label(): line.get_xydata() for line in ax.lines if line.get_label().startswith("regenerated, IoU")}
    # IoU 0.1: a and b found, no FP; 0.5 (strict): b's IoU of 1/2 no longer matches, one FP in three scans
    assert ours.keys() == {"regenerated, IoU 0.1", "regenerated, IoU 0.5"}
    np.testing.assert_allclose(ours["regenerated, IoU 0.1"], [[0, 2 / 3]])
    np.testing.assert_allclose(ours["regenerated, IoU 0.5"], [[1 / 3, 1 / 3]])
    t4 = paper.reported()["table4"]["overall"]["iou_0.5"]
    paper_05, _, paper_sens_bar = _errorbar_series(ax, "paper, IoU 0.5")
    np.testing.assert_allclose(paper_05, [[t4["fp_per_scan"][0], t4["sensitivity"][0]]])
    np.testing.assert_allclose(paper_sens_bar[0][:, 1], [0.81, 0.92])  # the paper's CI of 0.87
    cmp = paper.froc_vs_paper(froc)
    assert cmp.loc["sensitivity, IoU 0.5", "paper"] == "0.87 ± 0.02 (0.81–0.92)"
    assert cmp.loc["sensitivity, IoU 0.5", "regenerated"].startswith("0.33 ± ")

    # a: Dice 1, b: 2/3, c: 0 (missed), on two vendors and two histologies, so the rows differ
    pc = pd.read_csv(out / "per_case.csv", dtype={"case_id": str}).assign(
        manufacturer=["SIEMENS", "TOSHIBA", "SIEMENS"], histology=["thymoma", "lymphoma", "thymoma"])
    table = stats.table3(pc, n_resamples=50)
    fig = plot_subgroup_forest(table, ["dice", "recall"], ["Dice", "Recall"])
    assert [a.get_title() for a in fig.axes] == ["Dice", "Recall"]
    rows = {tick.get_text(): y for y, tick in zip(fig.axes[0].get_yticks(), fig.axes[0].get_yticklabels())}
    by_key = table.set_index("subgroup")
    assert {k: by_key.loc[k, "dice_mean"] for k in ("overall", "siemens", "canon_medical_systems", "lymphoma")} == \
        pytest.approx({"overall": 5 / 9, "siemens": 1 / 2, "canon_medical_systems": 2 / 3, "lymphoma": 2 / 3})
    for ax, col in zip(fig.axes, ["dice", "recall"]):
        points, ci_bars, _ = _errorbar_series(ax, "regenerated")
        paper_points, _, _ = _errorbar_series(ax, "paper")
        for i, r in enumerate(table.itertuples()):
            y = rows[f"{r.label} (n={r.n})"]
            mean, lo, hi = (getattr(r, f"{col}_{k}") for k in ("mean", "ci_low", "ci_high"))
            if r.n:
                np.testing.assert_allclose(points[i], [mean, y + 0.15])
                np.testing.assert_allclose(ci_bars[i], [[lo, y + 0.15], [hi, y + 0.15]])
            else:
                assert np.isnan(points[i, 0])  # no case: only the paper's value is drawn
            cell = paper.reported_cell(col, r.subgroup)
            np.testing.assert_allclose(paper_points[i], [cell[0] if cell else np.nan, y - 0.15])


def test_a_tiny_file_claiming_a_huge_volume_is_refused_before_allocation(folders, tmp_path, capsys):
    """Issue 23, item 5: a 79-byte .nii.gz whose header claims 2000^3 voxels reached 8 GB resident."""
    import gzip
    import resource

    import nibabel as nib

    pred, ref = folders
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 2000))
    header.set_data_dtype(np.int16)
    (pred / "a.nii.gz").write_bytes(gzip.compress(header.binaryblock + b"\0" * 4100))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rc, _, err = run(["--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "out")], capsys)
    assert rc == 2 and "a.nii.gz" in err and "cannot hold what its header claims 16000000000 bytes" in err
    assert "Traceback" not in err and resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000


def test_cli_boundary_metrics_and_lesion_quality(folders, tmp_path, capsys):
    """--metrics adds hd95_mm, assd_mm, nsd_<tau>mm and pq/sq/rq after the paper's columns; the paper's
    columns are unchanged; the missing prediction (c) is infinite, never NaN; a perfect one is 0."""
    pred, ref = folders
    out, plain = tmp_path / "out", tmp_path / "plain"
    assert run(["--pred", str(pred), "--ref", str(ref), "--out", str(plain)], capsys)[0] == 0
    rc, stdout, err = run(["--pred", str(pred), "--ref", str(ref), "--out", str(out), "--metrics", "hd95,assd,nsd,pq",
                           "--nsd-tolerance-mm", "1,2.5"], capsys)
    assert rc == 0, err
    pc = pd.read_csv(out / "per_case.csv", dtype={"case_id": str}).set_index("case_id")
    extra = ["hd95_mm", "assd_mm", "nsd_1mm", "nsd_2.5mm", "pq", "sq", "rq"]
    assert list(pc.columns) == [*evaluate.PER_CASE_COLUMNS[1:], *extra]
    base = pd.read_csv(plain / "per_case.csv", dtype={"case_id": str}).set_index("case_id")
    pd.testing.assert_frame_equal(pc[base.columns], base)
    assert pc.loc["a", ["hd95_mm", "assd_mm", "nsd_1mm", "pq"]].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert np.isinf(pc.loc["c", "hd95_mm"]) and np.isinf(pc.loc["c", "assd_mm"]) and pc.loc["c", "nsd_1mm"] == 0
    # b: rows 2-4 of the 2-7 block: every boundary distance is 0, 1 (x, y) or 5 mm (z); IoU 1/2 is no match at > 0.5
    assert pc.loc["b", "pq"] == 0 and pc.loc["b", "rq"] == 0
    pairs = pd.read_csv(out / "lesion_pairs.csv", dtype={"case_id": str})
    assert pairs["case_id"].tolist() == ["a"] and pairs.loc[0, "dice"] == 1.0 and pairs.loc[0, "iou_threshold"] == 0.5
    table = pd.read_csv(out / "boundary_table.csv").set_index("subgroup")
    assert table.loc["overall", "hd95_mm_n_inf"] == 1 and np.isinf(table.loc["overall", "hd95_mm_q3"])
    conventions = pd.read_csv(out / "conventions.csv")
    assert list(conventions.columns) == ["metric", "convention", "parameter", "value"]
    assert "1, 2.5" in conventions["value"].tolist()
    # pooled: TP 1 (a), FP 1 (b), FN 2 (b, c): RQ = 1 / (1 + 1/2 + 2/2) = 0.4, SQ = 1
    assert "hd95_mm median" in stdout and "1 infinite" in stdout and "PQ 0.400 = SQ 1.000 x RQ 0.400" in stdout


def test_cli_bad_extra_metrics_are_one_line(folders, tmp_path, capsys):
    pred, ref = folders
    for bad in (["--metrics", "hd100"], ["--metrics", "nsd", "--nsd-tolerance-mm", "0"],
                ["--metrics", "pq", "--pq-iou-threshold", "1.5"]):
        rc, _, err = run(["--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "o"), *bad], capsys)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert not (tmp_path / "o").exists()


def test_summary_json_has_nnunet_schema(folders, tmp_path, capsys):
    """nnU-Net v2's keys: metric_per_case (files, metrics under "1" with TN from the image size),
    mean (NaN left out), foreground_mean; the run's own keys stay."""
    import json

    pred, ref = folders
    out = tmp_path / "out"
    assert run(["--pred", str(pred), "--ref", str(ref), "--out", str(out), "--metrics", "hd95"], capsys)[0] == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["n_cases"] == 3 and s["metrics"] == ["dice", "iou", "precision", "recall", "hd95"]
    cases = {Path(c["reference_file"]).name: c for c in s["metric_per_case"]}
    a, c = cases["a.nii.gz"], cases["c.nii.gz"]
    assert a["prediction_file"] == str((pred / "a.nii.gz").resolve()) and c["prediction_file"] is None
    m = a["metrics"]["1"]
    assert (m["Dice"], m["TP"], m["FP"], m["FN"], m["TN"], m["n_pred"], m["n_ref"]) == (1.0, 72, 0, 0, 4 * 16 * 16 - 72, 72, 72)
    b = cases["b.nii.gz"]["metrics"]["1"]  # half the block predicted: TN = all voxels - TP - FP - FN
    assert (b["TP"], b["FP"], b["FN"], b["TN"], b["IoU"]) == (36, 0, 36, 4 * 16 * 16 - 72, 0.5)
    assert c["metrics"]["1"]["hd95_mm"] == float("inf")
    assert s["mean"]["1"]["Dice"] == pytest.approx((1 + 2 * 36 / 108 + 0) / 3)
    assert s["foreground_mean"] == s["mean"]["1"]


def test_nnunet_prediction_folder_scores_as_it_is(folders, tmp_path, capsys):
    """nnU-Net writes dataset.json, plans.json, predict_from_raw_data_args.json (and .npz/.pkl with
    --save_probabilities) beside the masks: they are skipped without a warning."""
    pred, ref = folders
    (pred / "notes.txt").unlink()
    for name in ("dataset.json", "plans.json", "predict_from_raw_data_args.json", "a.npz", "a.pkl"):
        (pred / name).write_text("{}")
    rc, _, err = run(["--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "o")], capsys)
    assert rc == 0 and "not a NIfTI" not in err, err


def test_extra_metric_settings_agree_everywhere():
    """One source for the new settings: the library defaults, notebooks 04-05 and every config."""
    import yaml

    from amtlib.evaluation import boundary, panoptic
    from amtlib.evaluation.metrics import VOXEL_METRICS
    from amtlib.pipeline import parameter_defaults

    root = Path(__file__).resolve().parent.parent
    nb04, nb05 = (parameter_defaults(root / "notebooks" / f) for f in ("04_evaluate.ipynb", "05_froc.ipynb"))
    assert tuple(nb04["metrics"]) == VOXEL_METRICS and tuple(nb04["nsd_tolerance_mm"]) == boundary.NSD_TOLERANCE_MM
    assert nb05["pq_iou_threshold"] == panoptic.PQ_IOU_THRESHOLD
    for cfg in sorted((root / "configs").glob("*.yaml")):
        c = yaml.safe_load(cfg.read_text())
        assert tuple(c["metrics"]) == VOXEL_METRICS, cfg.name
        assert tuple(c["nsd_tolerance_mm"]) == boundary.NSD_TOLERANCE_MM and c["pq_iou_threshold"] == panoptic.PQ_IOU_THRESHOLD
    # the default adds nothing: Table 3 is the paper's four metrics
    assert evaluate.extra_metrics(nb04["metrics"], nb04["nsd_tolerance_mm"]).columns() == []


def test_boundary_and_lesion_quality_figures():
    import matplotlib

    matplotlib.use("Agg")
    from amtlib.figures.evaluation import plot_dice_vs_boundary, plot_lesion_quality
    from amtlib.evaluation import panoptic

    pc = pd.DataFrame({"case_id": ["a", "b", "c", "d"], "dice": [0.9, 0.0, np.nan, 0.4],
                       "hd95_mm": [2.0, np.inf, np.nan, 30.0]})
    fig = plot_dice_vs_boundary(pc, "hd95_mm", failure_ids=["b", "d"])
    ax = fig.axes[0]
    assert "1 with both masks empty left out" in ax.get_title() and ax.get_yscale() == "log"
    assert sorted(t.get_text() for t in ax.texts) == ["b", "d"]
    quality = {"pq": 0.0, "sq": float("nan"), "rq": 0.0, "tp": 0, "fp": 1, "fn": 2, "iou_threshold": 0.5}
    fig = plot_lesion_quality(panoptic.pairs_frame([]), quality)
    assert "no matched lesion pair" in [t.get_text() for t in fig.axes[0].texts]
