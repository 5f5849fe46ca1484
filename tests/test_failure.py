"""Tests of amtlib.evaluation.failure (groups, categories, attribution), its figures, and notebook 06 end to end."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from amtlib.evaluation import failure
from amtlib.figures import failure as ffig
from amtlib.io import affine_from_spacing, save_nifti

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------------
# Fixture run folder: tiny synthetic CTs with a tumour, anatomy labels and scripted predictions.
# ---------------------------------------------------------------------------------------------------
SHAPE = (20, 72, 72)
SPACING = (3.0, 1.25, 1.25)


def _ellipsoid(shape, centre, radii_mm, spacing):
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    d = sum(((g - c) * s / r) ** 2 for g, c, r, s in zip((zz, yy, xx), centre, radii_mm, spacing))
    return d <= 1.0


def _phantom(rng, radius_mm, tumour_hu):
    """One synthetic chest: (image HU int16, tumour mask bool, anatomy labels uint8/uint16)."""
    anatomy = np.zeros(SHAPE, np.uint16)
    anatomy[:, :, :12] = 10
    anatomy[:, :, 60:] = 13
    heart = _ellipsoid(SHAPE, (2, 54, 36), (12, 14, 18), SPACING)
    shell = _ellipsoid(SHAPE, (2, 54, 36), (15, 18, 22), SPACING) & ~heart
    shell[:, 54:] = False
    anatomy[heart], anatomy[shell] = 51, 201
    zz, yy, xx = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    aorta = np.broadcast_to(((yy - 44) * SPACING[1]) ** 2 + ((xx - 50) * SPACING[2]) ** 2 <= 49, SHAPE)
    anatomy[aorta] = 52
    anatomy[:, 2:5, 30:42] = 116
    if radius_mm <= 0:
        tumour = np.zeros(SHAPE, bool)
        tumour[10, 22, 36] = True
    else:
        tumour = _ellipsoid(SHAPE, (10, 22, 36), (min(radius_mm, 24.0), radius_mm, radius_mm), SPACING)
    anatomy[tumour] = 200
    hu = {0: -100, 10: -850, 13: -850, 51: 40, 201: 10, 52: 190, 116: 500, 200: tumour_hu}
    image = np.vectorize(lambda c: hu[c])(anatomy).astype(np.float32) + rng.normal(0, 8, SHAPE)
    return image.astype(np.int16), tumour, anatomy


def _scripted_prediction(mode, tumour, anatomy):
    if mode == "miss":
        return np.zeros_like(tumour)
    if mode == "miss_fp":
        pred = np.zeros_like(tumour)
        pred[12:14, 30:34, 20:24] = True
        return pred
    if mode == "partial":
        pred = tumour.copy()
        cut = np.nonzero(tumour)[2]
        pred[:, :, : int(np.percentile(cut, 70))] = False
        return pred
    shifted = np.roll(tumour, (1, 1), axis=(1, 2))
    if mode == "aorta":
        return shifted | (anatomy == 52)
    if mode == "effusion":
        return shifted | (anatomy == 201)
    return shifted


def write_fixture_run(root: Path, n_external: int = 40, seed: int = 0) -> Path:
    """A run folder with 01_cohort, 02_split, 03_train/predictions and 04_evaluate/per_case.csv.

    Radii grow with the case index and the smallest cases get the scripted failures (one 1-voxel
    tumour that pyradiomics must refuse, misses, partial detections, over-segmentation into the aorta
    and a pericardial effusion); case ids are shuffled so they do not follow size. Three tuning cases
    check the split filter.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    cohort, preds = root / "01_cohort", root / "03_train" / "predictions"
    modes = ["miss", "miss", "miss", "miss_fp", "partial", "partial", "partial", "aorta", "aorta", "effusion"]
    radii = np.concatenate([[0.0, 3.0, 4.0, 4.5, 5.0, 6.0, 7.0, 6.0, 8.0, 7.0], np.linspace(8.0, 20.0, n_external - len(modes) + 3)])
    affine = affine_from_spacing(SPACING) @ np.diag([-1.0, -1.0, 1.0, 1.0])
    numbers = rng.permutation(len(radii))
    manifest, split, per_case = [], [], []
    for i, radius in enumerate(radii):
        case_id = f"case_{numbers[i]:03d}"
        role = "tuning" if i >= n_external else "external_test"
        mode = modes[i] if i < len(modes) else "good"
        image, tumour, anatomy = _phantom(rng, float(radius), int(rng.integers(30, 60)))
        pred = _scripted_prediction(mode, tumour, anatomy)
        for sub, arr in (("images", image), ("masks", tumour.astype(np.uint8)), ("anatomy", anatomy)):
            save_nifti(arr, affine, cohort / sub / f"{case_id}.nii.gz")
        save_nifti(pred.astype(np.uint8), affine, preds / f"{case_id}.nii.gz")
        tp, fp, fn = int((pred & tumour).sum()), int((pred & ~tumour).sum()), int((~pred & tumour).sum())
        manifest.append(
            {
                "case_id": case_id,
                "patient_id": f"P{numbers[i]:03d}",
                "institution": "INST-001",
                "image_path": f"images/{case_id}.nii.gz",
                "mask_path": f"masks/{case_id}.nii.gz",
                "anatomy_path": f"anatomy/{case_id}.nii.gz",
                "histology": "thymoma",
                "manufacturer": "Siemens",
                "split": role,
            }
        )
        split.append({"case_id": case_id, "patient_id": f"P{numbers[i]:03d}", "institution": "INST-001", "split": role})
        per_case.append(
            {
                "case_id": case_id,
                "dice": 2 * tp / (2 * tp + fp + fn),
                "iou": tp / (tp + fp + fn),
                "precision": tp / (tp + fp) if tp + fp else np.nan,
                "recall": tp / (tp + fn),
                "tp_voxels": tp,
                "fp_voxels": fp,
                "fn_voxels": fn,
                "n_ref_lesions": 1,
                "n_pred_lesions": int(pred.any()),
                "max_axial_diameter_mm": max(2 * radius, SPACING[1]),
                "volume_ml": tumour.sum() * np.prod(SPACING) / 1000,
                "split": role,
            }
        )
    pd.DataFrame(manifest).to_csv(cohort / "manifest.csv", index=False)
    (root / "02_split").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(split).to_csv(root / "02_split" / "split.csv", index=False)
    (root / "04_evaluate").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(per_case).to_csv(root / "04_evaluate" / "per_case.csv", index=False)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return write_fixture_run(tmp_path_factory.mktemp("run"), n_external=12)


# ---------------------------------------------------------------------------------------------------
# Group selection
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, fraction, expected", [(164, 0.1, 17), (170, 0.1, 17), (171, 0.1, 18), (10, 0.1, 1), (11, 0.1, 2), (7, 0.5, 4)])
def test_group_size_is_ceiling(n, fraction, expected):
    assert failure.group_size(n, fraction) == expected


def test_group_size_rejects_fraction_outside_range():
    with pytest.raises(ValueError, match="failure_fraction"):
        failure.group_size(10, 0.6)


def test_select_groups_exact_members_and_ties_broken_by_case_id():
    dice = {"a": 0.9, "b": 0.1, "c": 0.3, "d": 0.3, "e": 0.5, "f": 0.8, "g": 0.3, "h": 0.95, "i": 0.6, "j": 0.7, "k": 0.2}
    table = pd.DataFrame({"case_id": list(dice), "dice": list(dice.values())})
    with pytest.warns(UserWarning, match="bottom group: 1 member"):
        groups = failure.select_groups(table, fraction=0.25)  # ceil(2.75) = 3 per group
    bottom = groups[groups["group"] == "bottom"]
    top = groups[groups["group"] == "top"]
    assert bottom["case_id"].tolist() == ["b", "k", "c"]  # c, d, g tie at 0.3: c wins by id
    assert bottom["tie_at_cut"].tolist() == [False, False, True]
    assert top["case_id"].tolist() == ["h", "a", "f"]
    assert top["rank"].tolist() == [1, 2, 3]
    with pytest.warns(UserWarning, match="ties broken by case_id"):
        shuffled = failure.select_groups(table.sample(frac=1, random_state=3), fraction=0.25)
    pd.testing.assert_frame_equal(groups, shuffled)


def test_select_groups_small_n_and_missing_values():
    ok = failure.select_groups(pd.DataFrame({"case_id": ["x", "y"], "dice": [0.2, 0.4]}), fraction=0.1)
    assert dict(zip(ok["group"], ok["case_id"])) == {"bottom": "x", "top": "y"}
    with pytest.raises(ValueError, match="at least 4"):
        failure.select_groups(pd.DataFrame({"case_id": ["x", "y", "z"], "dice": [0.2, 0.4, 0.5]}), fraction=0.5)
    with pytest.raises(ValueError, match="1 case"):
        failure.select_groups(pd.DataFrame({"case_id": ["x"], "dice": [0.2]}))
    with pytest.warns(UserWarning, match="without a dice value.*q"):
        out = failure.select_groups(pd.DataFrame({"case_id": ["p", "q", "r"], "dice": [0.1, np.nan, 0.7]}), fraction=0.5)
    assert sorted(out["case_id"]) == ["p", "r"]


# ---------------------------------------------------------------------------------------------------
# Failure categories
# ---------------------------------------------------------------------------------------------------
def test_categorise_hand_cases():
    table = pd.DataFrame(
        {
            "case_id": ["ok", "miss", "empty", "under", "over", "mixed"],
            "dice": [0.9, 0.0, 0.0, 2 * 20 / (40 + 0 + 80), 2 * 50 / (100 + 150 + 0), 0.2],
            "precision": [0.9, 0.0, np.nan, 1.0, 0.25, 0.2],
            "recall": [0.9, 0.0, 0.0, 0.2, 1.0, 0.2],
            "tp_voxels": [90, 0, 0, 20, 50, 10],
        }
    )
    out = failure.categorise(table)
    assert out["category"].astype(str).tolist() == ["success", "complete_miss", "complete_miss", "under_segmentation", "over_segmentation", "mixed"]
    assert "category" not in table.columns
    # listed failures (the bottom Dice group) above the Dice cut: the lower ratio names the error
    listed = pd.DataFrame({"case_id": ["o", "u", "fine"], "dice": [0.72, 0.70, 0.72],
                           "precision": [0.6, 0.95, 0.6], "recall": [0.9, 0.55, 0.9]})
    out = failure.categorise(listed, failures=["o", "u"])
    assert out["category"].astype(str).tolist() == ["over_segmentation", "under_segmentation", "success"]
    # thresholds above the Dice cut: a low-Dice case with both ratios "high" is named by the lower one
    both = failure.categorise(pd.DataFrame({"case_id": ["o"], "dice": [0.5], "precision": [0.5], "recall": [0.55]}), low_dice=0.6, low_recall=0.4, low_precision=0.4)
    assert both["category"].astype(str).tolist() == ["over_segmentation"]


def test_categorise_needs_metric_columns():
    with pytest.raises(ValueError, match="recall"):
        failure.categorise(pd.DataFrame({"case_id": ["a"], "dice": [0.1], "precision": [0.1]}))


# ---------------------------------------------------------------------------------------------------
# Anatomy attribution and contrast
# ---------------------------------------------------------------------------------------------------
def test_attribute_false_positives_tiny_label_map():
    ref = np.zeros((1, 4, 4), bool)
    ref[0, 0, :2] = True
    pred = np.zeros((1, 4, 4), bool)
    pred[0, 0, :] = True  # 2 TP + 2 FP in row 0
    pred[0, 1:3, :] = True  # 8 FP
    anatomy = np.zeros((1, 4, 4), np.uint16)
    anatomy[0, 0, 2:] = 201  # 2 FP in effusion
    anatomy[0, 1, :] = 52  # 4 FP in aorta
    anatomy[0, 2, :2] = 77  # 2 FP in an unnamed label, 2 FP unlabelled
    anatomy[0, 0, :2] = 200  # under the reference: not false positives
    table = failure.attribute_false_positives(ref, pred, anatomy, spacing=(2.0, 5.0, 10.0))
    assert table["structure"].tolist() == ["aorta", "label 77", "pericardial effusion", "unlabelled"]
    assert table["fp_voxels"].tolist() == [4, 2, 2, 2]
    assert table["fraction"].tolist() == [0.4, 0.2, 0.2, 0.2]
    assert table["fp_ml"].iloc[0] == pytest.approx(4 * 100 / 1000)
    assert failure.main_structure(table) == "aorta"
    assert failure.main_structure(table, min_fraction=0.5) == ""
    none = failure.attribute_false_positives(ref, ref, anatomy, (1.0, 1.0, 1.0))
    assert none.empty and failure.main_structure(none) == ""


def test_attribution_merges_lung_lobes_and_unlabelled_never_wins():
    ref = np.zeros((1, 1, 6), bool)
    pred = np.ones((1, 1, 6), bool)
    anatomy = np.array([[[0, 0, 0, 0, 10, 14]]])
    table = failure.attribute_false_positives(ref, pred, anatomy, (1.0, 1.0, 1.0))
    assert dict(zip(table["structure"], table["fp_voxels"])) == {"unlabelled": 4, "lung": 2}
    assert failure.main_structure(table, min_fraction=0.3) == "lung"


def test_attribution_shape_mismatch_is_explained():
    with pytest.raises(ValueError, match="resample the label map"):
        failure.attribute_false_positives(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), (1, 1, 1))


def test_tumour_contrast_against_ring_without_lung():
    image = np.full((9, 9, 9), -800.0)
    image[2:7, 2:7, 2:7] = 0.0  # soft-tissue shell two voxels thick
    image[3:6, 3:6, 3:6] = 50.0
    ref = image == 50.0
    assert failure.tumour_contrast_hu(image, ref, (1.0, 1.0, 1.0), ring_mm=3.0) == pytest.approx(50.0)
    assert math.isnan(failure.tumour_contrast_hu(image, np.zeros_like(ref), (1.0, 1.0, 1.0)))


# ---------------------------------------------------------------------------------------------------
# Tables built from the fixture run
# ---------------------------------------------------------------------------------------------------
def _table(run_dir: Path) -> pd.DataFrame:
    return failure.load_eval_table(
        run_dir / "01_cohort" / "manifest.csv",
        run_dir / "02_split" / "split.csv",
        run_dir / "04_evaluate" / "per_case.csv",
        run_dir / "03_train" / "predictions",
    )


def test_load_eval_table_filters_split_and_resolves_paths(run_dir):
    table = _table(run_dir)
    assert len(table) == 12
    assert all(Path(p).is_file() for p in table["image_path"]) and all(Path(p).is_file() for p in table["pred_path"])
    with pytest.raises(ValueError, match="no case in split 'validation'"):
        failure.load_eval_table(run_dir / "01_cohort" / "manifest.csv", run_dir / "02_split" / "split.csv", run_dir / "04_evaluate" / "per_case.csv", run_dir, "validation")


def test_load_case_rejects_prediction_off_grid(run_dir, tmp_path):
    row = _table(run_dir).iloc[0].copy()
    vol = failure.load_case(row)
    assert vol.image.shape == vol.reference.shape == vol.anatomy.shape == SHAPE
    assert vol.spacing == pytest.approx(SPACING)
    bad = tmp_path / "bad.nii.gz"
    save_nifti(np.zeros((20, 72, 70), np.uint8), vol.affine, bad)
    row["pred_path"] = str(bad)
    with pytest.raises(ValueError, match="bad.nii.gz.*image grid"):
        failure.load_case(row)


def test_structure_mask_by_display_name():
    anatomy = np.array([0, 10, 14, 52, 201, 77, 52])
    assert failure.structure_mask(anatomy, "lung").tolist() == [False, True, True, False, False, False, False]
    assert failure.structure_mask(anatomy, "aorta").nonzero()[0].tolist() == [3, 6]
    assert failure.structure_mask(anatomy, "unlabelled").nonzero()[0].tolist() == [0]
    assert failure.structure_mask(anatomy, "label 77").nonzero()[0].tolist() == [5]
    assert not failure.structure_mask(anatomy, "spleen").any()


def test_fixture_failures_are_categorised_and_attributed(run_dir):
    table = failure.categorise(_table(run_dir))
    analysed = pd.DataFrame([failure.analyse_case(failure.load_case(r)) for _, r in table.iterrows()])
    cases = table.merge(analysed, on="case_id")
    by_mode = cases.set_index("case_id")
    over = by_mode[by_mode["category"].astype(str) == "over_segmentation"]
    assert sorted(over["fp_main_structure"]) == ["aorta", "aorta", "pericardial effusion"]
    assert (by_mode["category"].astype(str) == "complete_miss").sum() == 4
    counts = failure.category_counts(cases)
    assert set(counts["category"]) == set(failure.CATEGORIES[:-1])
    assert counts.loc[counts["fp_main_structure"] == "aorta", "n_cases"].item() == 2
    assert counts["n_cases"].sum() == (by_mode["category"].astype(str) != "success").sum()
    examples = failure.select_examples(cases)
    assert examples["category"].tolist()[:2] == ["over_segmentation", "over_segmentation"]
    assert examples["fp_main_structure"].tolist()[:2] == ["aorta", "pericardial effusion"]
    assert examples["category"].tolist()[-1] == "complete_miss"
    assert examples["category"].value_counts().max() == 2  # the two named structures
    more = failure.select_examples(cases, per_category=3)
    counts = more["category"].value_counts()
    assert counts["over_segmentation"] == 3 and counts["complete_miss"] == 3 and not more["case_id"].duplicated().any()
    # the worst misses first
    misses = by_mode.loc[more.loc[more["category"] == "complete_miss", "case_id"], "dice"].tolist()
    assert misses == sorted(misses)


# ---------------------------------------------------------------------------------------------------
# Figure helpers
# ---------------------------------------------------------------------------------------------------
def test_pick_slice_and_crop():
    ref = np.zeros((5, 40, 40), bool)
    ref[1, 10:14, 10:14] = True
    ref[3, 10:12, 10:12] = True
    pred = np.zeros_like(ref)
    pred[4, 30:35, 30:35] = True
    assert ffig.pick_slice(ref, pred, 0, "ref") == 1
    assert ffig.pick_slice(ref, pred, 0, "fp") == 4  # no slice shows both: the largest excess
    pred[3, 20:22, 20:22] = True
    assert ffig.pick_slice(ref, pred, 0, "fp") == 3  # the excess beside the tumour wins over a larger one
    assert ffig.pick_slice(ref, pred, 0, "fn") == 1
    assert ffig.pick_slice(np.zeros_like(ref), np.zeros_like(ref), 0, "ref") == 2
    vol = failure.CaseVolumes("c", np.zeros(ref.shape), ref, pred, None, (3.0, 1.0, 1.0), np.eye(4))
    panel = ffig.case_panel(vol, "axial", "ref", margin_mm=2.0)
    # the reference's box (rows 10..13) plus 2 mm each side; the false positives of slices 3 and 4
    # are not on this slice and do not widen the crop
    assert panel.image.shape == (4 + 4, 4 + 4) and panel.reference[2:6, 2:6].all() and panel.reference.sum() == 16
    assert panel.arrow_at is None
    # slice 3 shows the tumour and an excess at 20..21: the crop spans both, the arrow points at the excess
    panel = ffig.case_panel(vol, "axial", "fp", margin_mm=2.0, arrow=True)
    assert panel.image.shape == (12 + 4, 12 + 4) and panel.prediction.sum() == 4
    # a positive RAS diagonal flips rows and columns: the excess at crop (12.5, 12.5) shows at (2.5, 2.5)
    assert panel.arrow_at == (2.5, 2.5) and panel.prediction[2:4, 2:4].all()
    # an explicit focus (the excess inside one structure) picks its own slice and arrow
    far = np.zeros_like(ref)
    far[4] = pred[4]
    assert ffig.pick_slice(ref, pred, 0, "fp", focus_mask=far) == 4
    panel = ffig.case_panel(vol, "axial", "fp", margin_mm=2.0, arrow=True, focus_mask=far)
    assert panel.prediction.sum() == 25 and panel.prediction[tuple(int(v) for v in panel.arrow_at)]
    assert ffig.arrow_target(np.zeros((3, 3), bool)) is None
    two = np.zeros((9, 9), bool)
    two[0, 0] = True
    two[5:8, 5:8] = True
    assert ffig.arrow_target(two) == (6.0, 6.0)  # the larger region
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7] = True
    ring[3:6, 3:6] = False  # centroid (4, 4) lies in the hole: point at the rim pixel nearest to it
    r, c = ffig.arrow_target(ring)
    assert ring[int(r), int(c)] and (r - 4) ** 2 + (c - 4) ** 2 == 4


def test_figures_build_from_fixture(run_dir):
    table = failure.categorise(_table(run_dir))
    best = table.sort_values("dice", ascending=False).head(2)
    fig5 = ffig.figure5(best, failure.case_loader(table))
    assert len([a for a in fig5.axes if a.images]) == 4
    fig = ffig.plot_dice_vs_size(table)
    assert [line.get_xdata()[0] for line in fig.axes[0].lines] == [50.0, 80.0]
    examples = failure.select_examples(table[table["category"].astype(str) != "success"])
    assert len(examples) >= 2
    fig6 = ffig.figure6(examples, table, failure.case_loader(table))
    drawn = [a for a in fig6.axes if a.images]
    assert len(drawn) == len(examples)
    # one arrowhead per panel (every example has its error on the shown slice)
    assert [sum(isinstance(t, matplotlib.text.Annotation) for t in a.texts) for a in drawn] == [1] * len(examples)


# ---------------------------------------------------------------------------------------------------
# Notebook 06 end to end
# ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_notebook_06_runs_on_fixture(tmp_path):
    papermill = pytest.importorskip("papermill")
    run = write_fixture_run(tmp_path / "run", n_external=40)
    figures = tmp_path / "figures"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        papermill.execute_notebook(
            str(REPO / "notebooks" / "06_failure.ipynb"),
            str(tmp_path / "out.ipynb"),
            parameters={"run_dir": str(run), "figures_dir": str(figures)},
            kernel_name="python3",
            progress_bar=False,
            cwd=str(REPO),
        )
    step = run / "06_failure"
    for name in ("groups.csv", "radiomics_features.csv", "radiomics_tests.csv", "radiomics_params.yaml", "failure_categories.csv", "fig5_success.png", "fig6_failures.pdf"):
        assert (step / name).is_file(), name
    groups = pd.read_csv(step / "groups.csv")
    assert (groups["group"].value_counts() == 4).all()  # ceil(0.1 * 40)
    features = pd.read_csv(step / "radiomics_features.csv")
    assert (features["status"] == "failed").sum() == 1  # the 1-voxel tumour, kept with its reason
    assert (figures / "fig6_failures.png").is_file()


# ---------------------------------------------------------------------------------------------------
# Viewer (ipyniivue builds the widget model without a browser)
# ---------------------------------------------------------------------------------------------------
def test_viewer_layers_and_errors(run_dir, monkeypatch):
    from amtlib import viewer

    table = _table(run_dir)
    case_id = table["case_id"].iloc[0]
    pytest.importorskip("ipyniivue")
    box = viewer.view_table_case(table, case_id)
    nv = box.niivue
    assert len(nv.volumes) == 3  # CT, prediction, reference: anatomy off by default
    assert (nv.volumes[0].cal_min, nv.volumes[0].cal_max) == (-160.0, 240.0)
    lut = nv.volumes[2].colormap_label  # reference drawn last, in the figures' orange
    assert [int(v) for v in lut.lut[4:8]] == [255, 140, 0, 255]
    assert "reference" in box.children[0].value and "prediction" in box.children[0].value
    frac = viewer.crosshair_fraction(table.loc[table["case_id"] == case_id, "mask_path"].iloc[0])
    assert nv.scene.crosshair_pos == frac and frac != [0.5, 0.5, 0.5]
    with_anatomy = viewer.view_table_case(table, case_id, show_anatomy=True, legend=False)
    assert len(with_anatomy.volumes) == (4 if table["anatomy_path"].notna().any() else 3) if "anatomy_path" in table else True
    with pytest.raises(ValueError, match="missing.nii.gz: file not found"):
        viewer.view_case(run_dir / "missing.nii.gz")
    with pytest.raises(ValueError, match="not in the evaluation table"):
        viewer.view_table_case(table, "nope")
    monkeypatch.setitem(__import__("sys").modules, "ipyniivue", None)
    with pytest.raises(ImportError, match=r"\.\[viewer\]"):
        viewer.view_case(table["image_path"].iloc[0])
