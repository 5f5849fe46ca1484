"""``amt predict``: a trained model on new CTs (NIfTI, DICOM folder, a real Orthanc over DICOMweb and DIMSE),
the results back to the PACS, the model card, and every bad input as one line."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from amtlib.cli import main as amt
from amtlib.dicom.dicomio import write_ct_series
from amtlib.io import load_nifti
from amtlib.paths import RunPaths
from amtlib.segmentation import infer
from amtlib.segmentation import train as T
from amtlib.segmentation.preprocess import load_case
from train_fixtures import make_run

TINY = dict(spacing_mm=(5.0, 8.0, 8.0), patch=(8, 16, 16), base_width=2, blocks_per_level=1, iterations=4, eval_every=2,
            workers=1, device="cpu")
JAPANESE_NAME = "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"
JAPANESE_CHARSET = ["ISO 2022 IR 13", "ISO 2022 IR 87"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run whose step 03 trained a tiny model and predicted its tuning and external cases at a threshold
    chosen so that the masks are neither empty nor full (an untrained model's 0.5 may give either)."""
    run = make_run(tmp_path_factory.mktemp("run"), n_train=4, n_tuning=1, n_test=2, shape=(16, 40, 36), spacing=(5.0, 4.0, 4.0))
    cfg = T.TrainConfig(**TINY)
    T.run_step(run, cfg, progress=False)
    P = RunPaths(run)
    model, meta = infer.load_model(P.step("03_train") / "model.pt")
    case = load_case("case005", run / "01_cohort/images/case005.nii.gz", None, meta["spacing_mm"])
    prob = infer.predict_case_probability(model, meta, case)
    threshold = float(np.quantile(prob, 0.8))
    cfg = replace(cfg, threshold=threshold)
    cases = T.prepare_data(P.manifest, P.split_csv, cfg)
    T.predict_split_cases(P.step("03_train") / "model.pt", cases.tuning + cases.external_test, P.predictions_dir, None, cfg,
                          progress=False)
    return run, threshold


def _predict(*args: str) -> int:
    return amt(["predict", *args])


def _dicom_series(folder: Path, image: np.ndarray, uid_seed: str, patient_id: str = "P-NEW", **meta) -> list[Path]:
    return write_ct_series(image.astype(np.float32), (5.0, 4.0, 4.0), folder,
                           {"PatientID": patient_id, "InstitutionName": "NEW-HOSPITAL", "Manufacturer": "GE", **meta}, uid_seed)


def _japanese(files: list[Path]) -> None:
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SpecificCharacterSet = JAPANESE_CHARSET
        ds.PatientName = JAPANESE_NAME
        ds.save_as(f)


def seg_in_world(seg: pydicom.Dataset, affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A BINARY SEG's frames placed by their own positions (pydicom alone) onto a NIfTI grid (voxel -> RAS)."""
    out = np.zeros(shape, np.uint8)
    shared = seg.SharedFunctionalGroupsSequence[0]
    iop = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    dy, dx = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    to_voxel = np.linalg.inv(affine)
    rows, cols = np.nonzero(np.ones((seg.Rows, seg.Columns)))
    for f, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        pos = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
        on = f[rows, cols] > 0
        lps = pos + np.outer(cols[on] * dx, iop[:3]) + np.outer(rows[on] * dy, iop[3:])
        ras = np.c_[-lps[:, 0], -lps[:, 1], lps[:, 2], np.ones(len(lps))]
        ijk = np.rint((to_voxel @ ras.T)[:3]).astype(int)  # (x, y, z) voxel indices
        out[ijk[2], ijk[1], ijk[0]] = 1
    return out


def rtstruct_in_world(rt: pydicom.Dataset, affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """An RTSTRUCT's contours (world mm, pydicom alone) filled on a NIfTI grid, slice by slice."""
    from skimage.draw import polygon

    out = np.zeros(shape, np.uint8)
    to_voxel = np.linalg.inv(affine)
    for c in rt.ROIContourSequence[0].get("ContourSequence", []):
        lps = np.asarray(c.ContourData, float).reshape(-1, 3)
        ras = np.c_[-lps[:, 0], -lps[:, 1], lps[:, 2], np.ones(len(lps))]
        x, y, z = (to_voxel @ ras.T)[:3]
        k = int(np.rint(z.mean()))
        rr, cc = polygon(y, x, shape[1:])
        out[k, rr, cc] ^= 1  # a hole is a contour inside another
    return out


# ------------------------------------------------------------------------------------------ NIfTI and DICOM


def test_predict_reproduces_step03_predictions_voxel_for_voxel(trained, tmp_path, capsys):
    run, threshold = trained
    out = tmp_path / "pred"
    assert _predict("--model", str(run), "--input", str(run / "01_cohort" / "images"), "--out", str(out),
                    "--threshold", repr(threshold)) == 0
    said = capsys.readouterr().out
    assert "model sha256" in said and "tuning Dice" in said  # the model's identity comes first
    table = pd.read_csv(out / "predictions.csv", dtype={"id": str})
    assert (table["status"] == "predicted").all() and len(table) == 7
    step03 = sorted(p.name.split(".")[0] for p in RunPaths(run).predictions_dir.glob("*.nii.gz"))
    assert step03 == ["case004", "case005", "case006"]
    for cid in step03:
        ours, _, aff = load_nifti(out / cid / "mask.nii.gz")
        theirs, _, aff03 = load_nifti(RunPaths(run).predictions_dir / f"{cid}.nii.gz")
        assert ours.dtype == np.uint8 and np.array_equal(ours, theirs) and np.array_equal(aff, aff03)
        assert 0 < ours.sum() < ours.size  # neither empty nor full: the comparison means something
        row = table.set_index("id").loc[cid]
        assert row["volume_ml"] == pytest.approx(ours.sum() * 5 * 4 * 4 / 1000)
    record = json.loads((out / "predict.json").read_text())
    assert record["model"]["sha256"] and record["options"]["threshold"] == threshold and record["versions"]["torch"]
    assert record["model"]["card"]["training_cohort"]["cases"] == 4


def test_dicom_folder_predicts_every_ct_series_and_lists_the_rest(trained, tmp_path):
    run, threshold = trained
    image, _, _ = load_nifti(run / "01_cohort/images/case005.nii.gz")
    tree = tmp_path / "archive"
    files = _dicom_series(tree / "a" / "b" / "study" / "ct", image, "new-ct")
    for i, f in enumerate(files):  # names a scanner would give, not ours
        f.rename(f.parent / f"1.3.12.{i}")
    mr = pydicom.dcmread(files[0].parent / "1.3.12.0")
    mr.SOPClassUID, mr.Modality, mr.SeriesInstanceUID = "1.2.840.10008.5.1.4.1.1.4", "MR", "1.2.826.0.1.99.1"
    (tree / "mr").mkdir()
    mr.save_as(tree / "mr" / "IM1")
    scout = pydicom.dcmread(files[0].parent / "1.3.12.3")
    scout.ImageType, scout.SeriesInstanceUID = ["ORIGINAL", "PRIMARY", "LOCALIZER"], "1.2.826.0.1.99.2"
    (tree / "scout").mkdir()
    scout.save_as(tree / "scout" / "IM1")
    _dicom_series(tree / "single", image[:1], "single-slice")
    out = tmp_path / "pred"
    assert _predict("--model", str(run), "--input", str(tree), "--out", str(out), "--threshold", repr(threshold)) == 0
    table = pd.read_csv(out / "predictions.csv", dtype=str).set_index("series_uid")
    ct_uid = str(pydicom.dcmread(files[0].parent / "1.3.12.0").SeriesInstanceUID)
    assert table.loc[ct_uid, "status"] == "predicted"
    assert table.loc["1.2.826.0.1.99.1", "status"] == "not_ct" and "MR" in table.loc["1.2.826.0.1.99.1", "detail"]
    assert table.loc["1.2.826.0.1.99.2", "status"] == "localizer"
    assert sorted(table["status"]) == ["localizer", "not_ct", "predicted", "single_slice"]
    # the mask from DICOM equals the mask from the cohort's NIfTI of the same voxels
    nifti_out = tmp_path / "from_nifti"
    assert _predict("--model", str(run), "--input", str(run / "01_cohort/images/case005.nii.gz"), "--out", str(nifti_out),
                    "--threshold", repr(threshold)) == 0
    from_dicom, _, affine = load_nifti(out / ct_uid / "mask.nii.gz")
    assert np.array_equal(from_dicom, load_nifti(nifti_out / "case005" / "mask.nii.gz")[0])
    seg = pydicom.dcmread(out / ct_uid / "seg.dcm")
    rt = pydicom.dcmread(out / ct_uid / "rtstruct.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_uid
    assert np.array_equal(seg_in_world(seg, affine, from_dicom.shape), from_dicom)
    assert np.array_equal(rtstruct_in_world(rt, affine, from_dicom.shape), from_dicom)


def test_column_direction_flipped_series_is_not_mirrored(trained, tmp_path):
    """TotalSegmentator PR 598: a SEG mirrored front-to-back when the column direction is (0, -1, 0)."""
    run, threshold = trained
    image, _, _ = load_nifti(run / "01_cohort/images/case006.nii.gz")
    files = _dicom_series(tmp_path / "ct", image, "flipped")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = [1, 0, 0, 0, -1, 0]
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], 80.0, ds.ImagePositionPatient[2]]
        ds.save_as(f)
    out = tmp_path / "pred"
    assert _predict("--model", str(run), "--input", str(tmp_path / "ct"), "--out", str(out), "--threshold", repr(threshold),
                    "--format", "seg") == 0
    uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    mask, _, affine = load_nifti(out / uid / "mask.nii.gz")
    assert mask.any() and not (out / uid / "rtstruct.dcm").exists()
    assert np.array_equal(seg_in_world(pydicom.dcmread(out / uid / "seg.dcm"), affine, mask.shape), mask)
    assert affine[1, 1] > 0  # rows run anterior -> posterior: (0, -1, 0) in LPS is +y in RAS


def test_restart_skips_finished_series_clears_leftovers_and_parts_share_a_folder(trained, tmp_path):
    run, _ = trained
    images = run / "01_cohort" / "images"
    out = tmp_path / "pred"
    assert _predict("--model", str(run), "--input", str(images), "--out", str(out)) == 0
    kept = (out / "case001" / "mask.nii.gz").stat().st_mtime_ns
    leftover = out / ".tmp-case002.999999999"
    leftover.mkdir()
    (leftover / "mask.nii.gz").write_bytes(b"half")
    import shutil

    shutil.rmtree(out / "case003")
    assert _predict("--model", str(run), "--input", str(images), "--out", str(out)) == 0
    assert (out / "case001" / "mask.nii.gz").stat().st_mtime_ns == kept  # not predicted again
    assert (out / "case003" / "mask.nii.gz").is_file() and not leftover.exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]
    # two parts into one folder give the whole table
    parts = tmp_path / "parts"
    assert _predict("--model", str(run), "--input", str(images), "--out", str(parts), "--part", "1/2") == 0
    first = pd.read_csv(parts / "predictions.csv")
    assert sorted(first["status"].unique()) == ["not_in_part", "predicted"] and (first["status"] == "predicted").sum() == 4
    assert _predict("--model", str(run), "--input", str(images), "--out", str(parts), "--part", "2/2") == 0
    both = pd.read_csv(parts / "predictions.csv", dtype={"id": str})
    whole = pd.read_csv(out / "predictions.csv", dtype={"id": str})
    assert (both["status"] == "predicted").all()
    assert both["id"].tolist() == whole["id"].tolist() and both["volume_ml"].tolist() == whole["volume_ml"].tolist()


def test_tta_mirrors_eight_ways_and_min_component_voxels_uses_the_lesion_rule(trained, tmp_path):
    run, threshold = trained
    model, meta = infer.load_model(RunPaths(run).step("03_train") / "model.pt")
    case = load_case("c", run / "01_cohort/images/case005.nii.gz", None, meta["spacing_mm"])
    plain = infer.predict_case_probability(model, meta, case)
    mirrored = infer.predict_case_probability(model, meta, case, mirror=True)
    assert not np.allclose(plain, mirrored)
    # by hand: the mean over the 8 flips of the probability of the flipped volume, flipped back
    norm = infer.Normalisation.from_dict(meta["norm"])
    x = norm.apply(case.image_hu)
    total = np.zeros_like(x)
    for axes in [(), (0,), (1,), (0, 1), (2,), (0, 2), (1, 2), (0, 1, 2)]:
        p = infer.predict_probability(model, np.flip(x, axes) if axes else x, meta["patch"], "cpu", meta["sw_overlap"],
                                      4, norm.pad_value)
        total += np.flip(p, axes) if axes else p
    assert np.allclose(infer.to_original_grid(total / 8, case), mirrored, atol=1e-5)
    from amtlib.segmentation.predict import remove_small_components

    m = np.zeros((5, 9, 9), np.uint8)
    m[0, 0, 0] = 1
    m[2:4, 2:6, 2:6] = 1
    assert remove_small_components(m, 10).sum() == 32 and remove_small_components(m, 0).sum() == 33


# ------------------------------------------------------------------------------------------ model card


def test_step03_writes_the_model_card_and_amt_model_card_prints_it(trained, capsys):
    run, _ = trained
    P = RunPaths(run)
    card_md = (P.step("03_train") / "model_card.md").read_text()
    _, meta = infer.load_model(P.step("03_train") / "model.pt")
    card = meta["card"]
    assert card["training_cohort"]["cases"] == 4 and card["training_cohort"]["institutions"] == ["CENTRAL"]
    from amtlib.io import sha256_file

    assert card["training_cohort"]["manifest_sha256"] == sha256_file(P.manifest)
    assert card["expected_input"]["spacing_mm_zyx"] == [[5.0, 5.0], [4.0, 4.0], [4.0, 4.0]]
    assert card["selected_iteration"] == meta["iteration"] and card["seed"] == 0
    assert "Not a medical device" in card_md
    assert amt(["model-card", str(run)]) == 0
    printed = capsys.readouterr().out
    assert sha256_file(P.step("03_train") / "model.pt") in printed and "training cases: 4" in printed


# ------------------------------------------------------------------------------------------ bad input


def test_bad_inputs_are_one_line_and_leave_nothing(trained, tmp_path, capsys):
    run, _ = trained
    image = run / "01_cohort" / "images" / "case005.nii.gz"
    model = RunPaths(run).step("03_train") / "model.pt"

    def fails(*args: str, expect: str, code: int = 2) -> str:
        capsys.readouterr()
        assert _predict(*args) == code
        err = capsys.readouterr().err
        assert expect in err and "Traceback" not in err, err
        return err

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(model.read_bytes()[:5000])
    fails("--model", str(truncated), "--input", str(image), "--out", str(tmp_path / "o1"), expect="truncated.pt: unreadable model file")
    import torch

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    fails("--model", str(foreign), "--input", str(image), "--out", str(tmp_path / "o2"), expect="not an amtlib 3D U-Net model")
    class Payload:  # a pickle that would call print() when loaded unsafely
        def __reduce__(self):
            return (print, ("payload ran",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "amtlib-unet3d/1", "model": Payload()}, evil)
    capsys.readouterr()
    assert _predict("--model", str(evil), "--input", str(image), "--out", str(tmp_path / "o11")) == 2
    said = capsys.readouterr()
    assert "evil.pt: not a model file amtlib wrote: it holds Python objects a safe load refuses" in said.err
    assert "weights_only" not in said.err and "truncated" not in said.err and "payload ran" not in said.out + said.err
    four_d = tmp_path / "in4d" / "cine.nii.gz"
    four_d.parent.mkdir()
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.int16), np.eye(4)), four_d)
    err = fails("--model", str(run), "--input", str(four_d), "--out", str(tmp_path / "o3"), expect="cine.nii.gz", code=1)
    assert "3D" in err and not (tmp_path / "o3" / "cine").exists()
    # a tiny .nii.gz whose header claims 2000^3 int16 voxels (16 GB): refused from its sizes, nothing allocated
    import gzip

    liar = tmp_path / "liar" / "huge.nii.gz"
    liar.parent.mkdir()
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 2000))
    header.set_data_dtype(np.int16)
    liar.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 4096))
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    err = fails("--model", str(run), "--input", str(liar), "--out", str(tmp_path / "o8"), expect="huge.nii.gz", code=1)
    assert "cannot hold" in err and resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB
    # a DICOM folder with only an MR series: nothing to predict is an error naming what was found
    mr = tmp_path / "mr"
    files = _dicom_series(mr, load_nifti(image)[0], "mr-only")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SOPClassUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.4", "MR"
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.save_as(f)
    err = fails("--model", str(run), "--input", str(mr), "--out", str(tmp_path / "o10"), expect="no CT series to predict")
    assert "not_ct" in err and "MR Image Storage" in err and not (tmp_path / "o10").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.docx").write_text("mine")
    fails("--model", str(run), "--input", str(image), "--out", str(busy), expect="holds other files (thesis.docx)")
    assert sorted(p.name for p in busy.iterdir()) == ["thesis.docx"]
    fails("--model", str(run), "--input", str(image), "--out", str(tmp_path / "o4"), "--part", "3/2", expect="--part")
    fails("--model", str(run), "--input", str(image), "--out", str(tmp_path / "o9"), "--push", "dimse://PACS@127.0.0.1:104",
          expect="--push: nothing to send")
    err = fails("--model", str(run), "--input", "dicomweb://amt:hunter2@127.0.0.1:1/dicom-web?StudyInstanceUID=1.2",
                "--out", str(tmp_path / "o5"), expect="credentials in the address are refused")
    assert "hunter2" not in err
    port = __import__("pacs_fixtures").free_port()
    fails("--model", str(run), "--input", f"dicomweb://127.0.0.1:{port}/dicom-web?StudyInstanceUID=1.2.3", "--out",
          str(tmp_path / "o6"), expect="cannot reach the PACS")
    fails("--model", str(run), "--input", f"dimse://NOBODY@127.0.0.1:{port}?StudyInstanceUID=1.2.3", "--out",
          str(tmp_path / "o7"), expect="cannot be reached or did not answer")
    assert not any((tmp_path / f"o{i}").exists() for i in (1, 2, 4, 5, 6, 7, 9))


# ------------------------------------------------------------------------------------------ a real PACS


@pytest.fixture()
def pacs_env(orthanc, monkeypatch):
    import pacs_fixtures

    monkeypatch.setenv("AMT_PACS_USER", pacs_fixtures.USER)
    monkeypatch.setenv("AMT_PACS_PASSWORD", pacs_fixtures.PASSWORD)
    orthanc.clear()
    return orthanc


def _study(tmp_path: Path, run: Path, orthanc, patient_id: str = "P-NEW") -> tuple[str, str, list[Path]]:
    image, _, _ = load_nifti(run / "01_cohort/images/case005.nii.gz")
    files = _dicom_series(tmp_path / "source", image, f"pacs-{patient_id}", patient_id)
    _japanese(files)
    orthanc.upload(files)
    ds = pydicom.dcmread(files[0])
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), files


def _check_round_trip(orthanc, out: Path, series_uid: str) -> None:
    """In Orthanc (its own REST API): a SEG and an RTSTRUCT that reference the source series, carry the
    source's Japanese name and decode, in world coordinates, to the voxels of mask.nii.gz."""
    mask, _, affine = load_nifti(out / series_uid / "mask.nii.gz")
    assert 0 < mask.sum() < mask.size
    for modality, decode in (("SEG", seg_in_world), ("RTSTRUCT", rtstruct_in_world)):
        ids = orthanc.find(Modality=modality)
        assert len(ids) == 1, modality
        import io

        ds = pydicom.dcmread(io.BytesIO(orthanc.file(ids[0])))
        ref = (ds.ReferencedSeriesSequence[0].SeriesInstanceUID if modality == "SEG" else
               ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID)
        assert ref == series_uid
        assert str(ds.PatientName) == JAPANESE_NAME, (modality, ds.SpecificCharacterSet)
        assert np.array_equal(decode(ds, affine, mask.shape), mask), modality


def test_dicomweb_round_trip_through_a_real_orthanc(trained, tmp_path, pacs_env, capsys):
    run, threshold = trained
    study, series, files = _study(tmp_path, run, pacs_env)
    out = tmp_path / "pred"
    address = f"{pacs_env.dicomweb}?StudyInstanceUID={study}"
    assert _predict("--model", str(run), "--input", address, "--out", str(out), "--threshold", repr(threshold),
                    "--push", pacs_env.dicomweb) == 0
    said = capsys.readouterr()
    assert "2 object(s) stored" in said.out and "confirmed" in said.out
    _check_round_trip(pacs_env, out, series)
    # the same voxels as the series read from the local files
    local = tmp_path / "local"
    assert _predict("--model", str(run), "--input", str(files[0].parent), "--out", str(local), "--threshold", repr(threshold)) == 0
    assert np.array_equal(load_nifti(out / series / "mask.nii.gz")[0], load_nifti(local / series / "mask.nii.gz")[0])
    # no secret anywhere: the output folder, the table, what was printed
    import pacs_fixtures

    for p in out.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".csv"):
            assert pacs_fixtures.PASSWORD not in p.read_text()
    assert pacs_fixtures.PASSWORD not in said.out + said.err
    assert not [p for p in out.iterdir() if p.name.startswith(".incoming")]


def test_dimse_round_trip_through_a_real_orthanc(trained, tmp_path, pacs_env, capsys):
    run, threshold = trained
    study, series, _ = _study(tmp_path, run, pacs_env)
    out = tmp_path / "pred"
    assert _predict("--model", str(run), "--input", f"{pacs_env.dimse}?StudyInstanceUID={study}", "--out", str(out),
                    "--threshold", repr(threshold), "--push", pacs_env.dimse, "--calling-aet", "AMT") == 0
    assert "2 object(s) stored" in capsys.readouterr().out
    _check_round_trip(pacs_env, out, series)
    table = pd.read_csv(out / "predictions.csv", dtype=str)
    assert table["pushed"].str.contains("2 confirmed").all()


def test_pacs_bad_inputs_against_a_real_orthanc(trained, tmp_path, pacs_env, capsys):
    run, _ = trained
    # a study with no CT series
    image, _, _ = load_nifti(run / "01_cohort/images/case004.nii.gz")
    mr_files = _dicom_series(tmp_path / "mr", image, "mr-study", "P-MR")
    for f in mr_files:
        ds = pydicom.dcmread(f)
        ds.SOPClassUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.4", "MR"
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.save_as(f)
    pacs_env.upload(mr_files)
    mr_study = str(pydicom.dcmread(mr_files[0]).StudyInstanceUID)
    capsys.readouterr()
    assert _predict("--model", str(run), "--input", f"{pacs_env.dicomweb}?StudyInstanceUID={mr_study}",
                    "--out", str(tmp_path / "o1")) == 2
    err = capsys.readouterr().err
    assert "holds no CT series (modalities: MR)" in err and not (tmp_path / "o1").exists()
    # an AE title the PACS does not know: Orthanc accepts the association, then answers nothing
    assert _predict("--model", str(run), "--input", f"{pacs_env.dimse}?StudyInstanceUID={mr_study}", "--out",
                    str(tmp_path / "o2"), "--calling-aet", "STRANGER") == 2
    err = capsys.readouterr().err
    assert "without answering the C-FIND from our AE title STRANGER" in err and "--calling-aet" in err
    # a store the PACS silently drops (its Lua filter): named, and the local files stay
    import pacs_fixtures

    study, series, _ = _study(tmp_path / "refuse", run, pacs_env, patient_id=pacs_fixtures.REFUSED_PATIENT)
    for protocol in (pacs_env.dicomweb, pacs_env.dimse):
        out = tmp_path / f"o-{protocol[:5]}"
        assert _predict("--model", str(run), "--input", f"{pacs_env.dicomweb}?StudyInstanceUID={study}", "--out", str(out),
                        "--push", protocol) == 2
        err = capsys.readouterr().err
        # Orthanc answers success to both STOW-RS and C-STORE and keeps nothing: only the query finds out
        assert "seg.dcm" in err and "answered stored but a query does not find the object" in err, err
        assert "Traceback" not in err
        assert (out / series / "seg.dcm").is_file() and (out / series / "mask.nii.gz").is_file()
    assert pacs_env.find(Modality="SEG") == []
    # a wrong password: refused with HTTP 401, and the password is not printed
    os.environ["AMT_PACS_PASSWORD"] = "wrong-password"
    assert _predict("--model", str(run), "--input", f"{pacs_env.dicomweb}?StudyInstanceUID={study}", "--out",
                    str(tmp_path / "o3")) == 2
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "wrong-password" not in err


def test_tilted_gantry_series_is_predicted_and_its_seg_is_conformant(trained, tmp_path):
    """TotalSegmentator 610: tilted-gantry CTs refused. Here the series is read onto an orthogonal grid
    (as the cohort step reads it), predicted, and its SEG lies on the acquired slices."""
    from amtlib.dicom import annotations as an
    from amtlib.dicom.dicomio import read_series
    from dicom_fixtures import dciodvfy_errors, tilted_ball_series

    run, _ = trained
    tilted_ball_series(tmp_path / "ct", (1.0, 0.0), "tilt-predict")
    first = tmp_path / "first"
    assert _predict("--model", str(run), "--input", str(tmp_path / "ct"), "--out", str(first), "--probabilities",
                    "--format", "nifti") == 0
    prob = load_nifti(next(first.glob("*/probability.nii.gz")))[0]
    out = tmp_path / "pred"  # at a threshold that splits this series' voxels, so the mask is not trivial
    assert _predict("--model", str(run), "--input", str(tmp_path / "ct"), "--out", str(out), "--threshold",
                    repr(float(np.quantile(prob, 0.7)))) == 0
    table = pd.read_csv(out / "predictions.csv", dtype=str)
    assert table["status"].tolist() == ["predicted"]
    uid = table["series_uid"][0]
    _, geometry = read_series(tmp_path / "ct")
    assert geometry["tilt_deg"] > 20
    mask = load_nifti(out / uid / "mask.nii.gz")[0]
    assert mask.shape == tuple(geometry["shape"]) and 0 < mask.sum() < mask.size
    seg = out / uid / "seg.dcm"
    # whole-pixel shear: the SEG read back onto the grid is the mask, but where the shift moves voxels out
    inside = np.ones_like(mask)
    for z in range(mask.shape[0]):
        inside[z, : int(round(z * 1.0)), :] = 0  # rows shifted in from outside the acquired slice
    np.testing.assert_array_equal(an.read_seg(seg, geometry) * inside, mask * inside)
    assert dciodvfy_errors(seg) == [] and dciodvfy_errors(out / uid / "rtstruct.dcm") == []


def test_https_dicomweb_checks_the_certificate(trained, tmp_path, pacs_env, monkeypatch, capsys):
    """``https://`` works as ``dicomweb://`` does, here to the real Orthanc behind a TLS front with a
    self-signed certificate: trusted (REQUESTS_CA_BUNDLE), the round trip runs; untrusted, one line says so."""
    import pacs_fixtures

    front = pacs_fixtures.TlsFront(pacs_env, tmp_path / "tls")
    try:
        run, threshold = trained
        server = front.view
        study, series, _ = _study(tmp_path, run, pacs_env)
        address = f"{server.dicomweb}?StudyInstanceUID={study}"
        assert address.startswith("https://")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
        assert _predict("--model", str(run), "--input", address, "--out", str(tmp_path / "o1")) == 2
        assert "TLS certificate is not trusted" in capsys.readouterr().err
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.certificate))
        out = tmp_path / "o2"
        assert _predict("--model", str(run), "--input", address, "--out", str(out), "--threshold", repr(threshold),
                        "--push", server.dicomweb) == 0
        _check_round_trip(server, out, series)
    finally:
        front.close()


def test_kill_minus_9_half_way_then_restart_finishes_the_rest(trained, tmp_path):
    """A real ``kill -9`` of ``amt predict`` part-way through a folder: what finished stays (not predicted
    again), nothing half-written survives the restart, and the restart predicts the rest."""
    import shutil
    import signal
    import subprocess
    import sys
    import time

    run, _ = trained
    src = run / "01_cohort" / "images" / "case005.nii.gz"
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(24):
        shutil.copy(src, folder / f"ct{i:02d}.nii.gz")
    out = tmp_path / "pred"
    proc = subprocess.Popen([sys.executable, "-m", "amtlib.cli", "predict", "--model", str(run), "--input", str(folder),
                             "--out", str(out), "--tta"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_dir() and len([p for p in out.iterdir() if p.name.startswith("ct")]) >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.name: (p / "mask.nii.gz").stat().st_mtime_ns for p in out.iterdir() if p.name.startswith("ct")}
    assert 2 <= len(done) < 24, "the kill came too late to test a restart"
    assert all((out / name / "prediction.json").is_file() for name in done)  # a case folder is whole or absent
    assert _predict("--model", str(run), "--input", str(folder), "--out", str(out), "--tta") == 0
    table = pd.read_csv(out / "predictions.csv")
    assert (table["status"] == "predicted").all() and len(table) == 24
    assert all((out / name / "mask.nii.gz").stat().st_mtime_ns == t for name, t in done.items())
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]


def test_credentials_from_netrc_and_none_on_the_command_line(trained, tmp_path, orthanc, monkeypatch):
    """With no AMT_PACS_* variable set, ~/.netrc answers for the PACS host (requests reads it)."""
    import pacs_fixtures

    orthanc.clear()
    run, _ = trained
    for name in ("AMT_PACS_USER", "AMT_PACS_PASSWORD", "AMT_PACS_TOKEN", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(f"machine 127.0.0.1 login {pacs_fixtures.USER} password {pacs_fixtures.PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    study, series, _ = _study(tmp_path, run, orthanc)
    out = tmp_path / "pred"
    assert _predict("--model", str(run), "--input", f"{orthanc.dicomweb}?StudyInstanceUID={study}", "--out", str(out)) == 0
    assert (out / series / "seg.dcm").is_file()
    assert pacs_fixtures.PASSWORD not in (out / "predict.json").read_text()
    netrc.write_text("machine 127.0.0.1 login nobody password wrong\n")
    assert _predict("--model", str(run), "--input", f"{orthanc.dicomweb}?StudyInstanceUID={study}",
                    "--out", str(tmp_path / "other")) == 2


def test_a_link_planted_in_the_output_folder_is_not_written_through(trained, tmp_path, capsys):
    run, _ = trained
    images = run / "01_cohort" / "images"
    out = tmp_path / "pred"
    assert _predict("--model", str(run), "--input", str(images), "--out", str(out)) == 0
    import shutil

    shutil.rmtree(out / "case002")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "case002").symlink_to(elsewhere)
    capsys.readouterr()
    assert _predict("--model", str(run), "--input", str(images), "--out", str(out)) == 1
    assert "case002's folder is a symbolic link" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []
    table = pd.read_csv(out / "predictions.csv", dtype={"id": str}).set_index("id")
    assert table.loc["case002", "status"] == "failed" and (table.drop(index="case002")["status"] == "predicted").all()
