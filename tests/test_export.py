"""Tests for amtlib.dicom.export: SEG and RTSTRUCT round trips on an oblique, row-flipped, anisotropic series,
read back with pydicom alone in world mm, dciodvfy, deterministic UIDs, the run export and the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from amtlib.dicom import annotations as an
from amtlib.dicom import dicomio, export
from amtlib.cli import main as amt_main
from amtlib.io import save_nifti
from amtlib.evaluation.metrics import voxel_metrics
from dicom_fixtures import (SHAPE, SPACING, dciodvfy_errors, oblique_axes, require_dciodvfy, tilted_ball_series,
                            write_oblique_series)


def _mask() -> np.ndarray:
    """A tumour with a hole, an island in the hole, a second component touching the border, a diagonal pair."""
    m = np.zeros(SHAPE, np.uint8)
    m[1:5, 4:15, 5:18] = 1
    m[2:4, 7:11, 9:13] = 0
    m[2, 8, 10] = 1
    m[3, 0:3, 20:24] = 1
    m[0, 17, 2] = m[0, 18, 3] = 1
    return m


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[str, Path]]:
    root = tmp_path_factory.mktemp("exp")
    folder = write_oblique_series(root / "ct")
    _, geometry = dicomio.read_series(folder)
    written = export.export_case(_mask(), folder, root / "out", "run:P1", model_sha256="ab" * 32, affine=geometry["affine"])
    return folder, geometry, written


def _ct_by_uid(folder: Path) -> dict[str, pydicom.Dataset]:
    return {str(d.SOPInstanceUID): d for d in (pydicom.dcmread(p, stop_before_pixels=True) for p in folder.glob("*.dcm"))}


def test_seg_round_trip_is_voxel_exact(exported) -> None:
    _, geometry, written = exported
    np.testing.assert_array_equal(an.read_seg(written["seg"], geometry), _mask())


def test_rtstruct_round_trip_dice(exported) -> None:
    _, geometry, written = exported
    back = an.read_rtstruct(written["rtstruct"], geometry)
    assert voxel_metrics(back > 0, _mask() > 0)["dice"] >= 0.98
    np.testing.assert_array_equal(back, _mask())  # the 0.5-level outlines give every pixel back


def test_seg_read_with_pydicom_alone_in_world_mm(exported) -> None:
    folder, geometry, written = exported
    ct = _ct_by_uid(folder)
    ds = pydicom.dcmread(written["seg"])
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == geometry["series_uid"]
    assert ds.FrameOfReferenceUID == geometry["frame_of_reference_uid"]
    assert ds.SegmentationType == "BINARY" and len(ds.SegmentSequence) == 1
    seg = ds.SegmentSequence[0]
    assert (seg.SegmentedPropertyTypeCodeSequence[0].CodeValue, seg.AnatomicRegionSequence[0].CodeValue) == ("108369006", "72410000")
    algo = seg.SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmSource == "amtlib" and "ab" * 32 in algo.AlgorithmParameters
    frames = ds.pixel_array.reshape(-1, SHAPE[1], SHAPE[2])
    k_of_uid = {u: k for k, u in enumerate(geometry["sop_uids"])}
    row, col, _ = oblique_axes()
    iop = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    np.testing.assert_allclose([float(v) for v in iop], np.r_[row, col], atol=1e-5)
    seen = set()
    for item, frame in zip(ds.PerFrameFunctionalGroupsSequence, frames):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        pos = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(pos, [float(v) for v in ct[uid].ImagePositionPatient], atol=1e-4)
        np.testing.assert_array_equal(frame, _mask()[k_of_uid[uid]])
        seen.add(k_of_uid[uid])
    assert seen == {k for k in range(SHAPE[0]) if _mask()[k].any()}  # empty slices omitted


def test_rtstruct_read_with_pydicom_alone_in_world_mm(exported) -> None:
    folder, geometry, written = exported
    ct = _ct_by_uid(folder)
    ds = pydicom.dcmread(written["rtstruct"])
    ref = ds.ReferencedFrameOfReferenceSequence[0]
    assert ref.FrameOfReferenceUID == geometry["frame_of_reference_uid"]
    series_ref = ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series_ref.SeriesInstanceUID == geometry["series_uid"]
    assert {i.ReferencedSOPInstanceUID for i in series_ref.ContourImageSequence} == set(geometry["sop_uids"])
    assert [r.ROIName for r in ds.StructureSetROISequence] == [export.SEGMENT_LABEL]
    contours = ds.ROIContourSequence[0].ContourSequence
    dz, dy, dx = SPACING
    slices_hit = set()
    for c in contours:
        img = ct[c.ContourImageSequence[0].ReferencedSOPInstanceUID]
        iop = np.array([float(v) for v in img.ImageOrientationPatient])
        ipp = np.array([float(v) for v in img.ImagePositionPatient])
        row, col = iop[:3], iop[3:]
        pts = np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
        assert len(pts) == c.NumberOfContourPoints
        rel = pts - ipp
        np.testing.assert_allclose(rel @ np.cross(row, col), 0, atol=1e-3)  # on the referenced slice's plane
        x, y = rel @ row / dx, rel @ col / dy
        # marching squares points sit halfway between pixel centres: one coordinate integer, one half-integer
        frac = np.c_[np.abs(x - np.round(x)), np.abs(y - np.round(y))]
        assert np.all(np.isclose(np.sort(frac, axis=1), [0.0, 0.5], atol=1e-3))
        k = geometry["sop_uids"].index(str(img.SOPInstanceUID))
        rows, cols = np.nonzero(_mask()[k])
        assert rows.min() - 0.5 - 1e-3 <= y.min() and y.max() <= rows.max() + 0.5 + 1e-3
        assert cols.min() - 0.5 - 1e-3 <= x.min() and x.max() <= cols.max() + 0.5 + 1e-3
        slices_hit.add(k)
    assert slices_hit == {k for k in range(SHAPE[0]) if _mask()[k].any()}


def test_patient_and_study_copied_and_nothing_else(exported) -> None:
    folder, geometry, written = exported
    src = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True)
    for path in written.values():
        ds = pydicom.dcmread(path)
        for kw in ("PatientID", "PatientSex", "PatientBirthDate", "StudyInstanceUID", "StudyDate", "StudyID"):
            assert ds[kw].value == src[kw].value, (path.name, kw)
        assert ds.SeriesInstanceUID != src.SeriesInstanceUID and ds.SOPInstanceUID != src.SOPInstanceUID
        assert ds.Manufacturer == "amtlib" and "KVP" not in ds and "ConvolutionKernel" not in ds
        assert "InstitutionName" not in ds and "BodyPartExamined" not in ds


def test_uids_are_deterministic_per_run_and_case(exported, tmp_path: Path) -> None:
    folder, geometry, written = exported
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    again = export.export_case(_mask(), folder, tmp_path / "a", "run:P1")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the source series is never modified
    other = export.export_case(_mask(), folder, tmp_path / "b", "run:P2")
    for kind in ("seg", "rtstruct"):
        uids = [(d.SOPInstanceUID, d.SeriesInstanceUID) for d in (pydicom.dcmread(p[kind]) for p in (written, again, other))]
        assert uids[0] == uids[1] and uids[0][0] != uids[2][0] and uids[0][1] != uids[2][1]


def test_exports_pass_dciodvfy(exported, tmp_path: Path) -> None:
    require_dciodvfy()
    folder, _, written = exported
    empty = export.export_case(np.zeros(SHAPE, np.uint8), folder, tmp_path / "empty", "run:P0")
    for path in [*written.values(), *empty.values()]:
        assert dciodvfy_errors(path) == [], path
    assert not pydicom.dcmread(empty["rtstruct"]).ROIContourSequence[0].get("ContourSequence")
    assert an.read_seg(empty["seg"], dicomio.read_series(folder)[1]).sum() == 0


def test_bad_masks_and_formats_are_refused(exported, tmp_path: Path) -> None:
    folder, geometry, _ = exported
    with pytest.raises(export.ExportError, match=r"mask shape \(z, y, x\) \(6, 20, 23\) != source series \(6, 20, 24\)"):
        export.export_case(np.zeros((6, 20, 23), np.uint8), folder, tmp_path / "x", "run:P1")
    with pytest.raises(export.ExportError, match=r"mask values \[0, 2\] are not 0/1"):
        export.export_case(_mask() * 2, folder, tmp_path / "x", "run:P1")
    shifted = geometry["affine"].copy()
    shifted[0, 3] += 5.0
    with pytest.raises(export.ExportError, match="mask affine differs from source series .* by up to 5 mm"):
        export.export_case(_mask(), folder, tmp_path / "x", "run:P1", affine=shifted)
    with pytest.raises(export.ExportError, match="choose from seg, rtstruct"):
        export.export_case(_mask(), folder, tmp_path / "x", "run:P1", formats=["nifti"])
    assert not (tmp_path / "x").exists()
    assert export.parse_formats("both") == ["seg", "rtstruct"] and export.parse_formats([]) == []
    assert export.parse_formats(["rtstruct"]) == ["rtstruct"]
    with pytest.raises(export.ExportError, match=r"\['png'\]: not a format written here; choose seg, rtstruct or both"):
        export.parse_formats("seg,png")


# ------------------------------------------------------------------------------------ run folder + CLI


def _fake_run(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A run folder with a raw DICOM tree, manifest, split and predictions for two test cases."""
    run = tmp_path / "run"
    preds = {}
    rows = []
    for i, pid in enumerate(["P1", "P2", "P3"]):
        folder = write_oblique_series(run / "00_data" / "raw" / "dicom" / pid / "s1", seed=i, patient_id=pid)
        _, geometry = dicomio.read_series(folder)
        m = np.roll(_mask(), i, axis=2)
        save_nifti(m, geometry["affine"], run / "03_train" / "predictions" / f"{pid}.nii.gz")
        preds[pid] = m
        rows.append({"case_id": pid, "series_uid": geometry["series_uid"]})
    (run / "01_cohort").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(run / "01_cohort" / "manifest.csv", index=False)
    (run / "02_split").mkdir()
    pd.DataFrame({"case_id": ["P1", "P2", "P3"], "split": ["external_test", "train", "external_test"]}).to_csv(
        run / "02_split" / "split.csv", index=False)
    return run, preds


def test_export_run_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run, preds = _fake_run(tmp_path)
    table = export.export_run(run, formats=["seg"])
    assert table["case_id"].tolist() == ["P1", "P3"] and table["rtstruct_path"].eq("").all()
    assert (run / "09_export" / "export.csv").is_file() and not (run / "09_export" / "P2").exists()
    _, geometry = dicomio.read_series(run / "00_data" / "raw" / "dicom" / "P3" / "s1")
    np.testing.assert_array_equal(an.read_seg(run / "09_export" / "P3" / "seg.dcm", geometry), preds["P3"])
    assert table.loc[1, "n_voxels"] == preds["P3"].sum()
    check = export.verify_export(run, n_cases=2)
    assert check["format"].tolist() == ["seg", "seg"] and check["identical"].all() and (check["dice"] == 1).all()
    out = tmp_path / "cli_out"
    assert amt_main(["export", "--run", str(run), "--split", "all", "--format", "rtstruct", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["P1", "P2", "P3", "export.csv"]  # the lock leaves no file
    assert (out / "P2" / "rtstruct.dcm").is_file() and not (out / "P2" / "seg.dcm").exists()
    (run / "03_train" / "predictions" / "P3.nii.gz").unlink()
    assert amt_main(["export", "--run", str(run), "--format", "seg", "--out", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert "amt export: case P3: prediction" in err and "P3.nii.gz not found" in err and "1 case(s) failed" in err
    assert (tmp_path / "o2" / "P1" / "seg.dcm").is_file()  # the case before it was written, and its row says so
    rows = pd.read_csv(tmp_path / "o2" / "export.csv", dtype=str, keep_default_na=False).set_index("case_id")
    assert rows.loc["P1", "status"] == "written" and rows.loc["P3", "status"] == "failed"


def test_export_run_in_worker_processes_writes_the_same_cases(tmp_path: Path) -> None:
    """workers=2 (issue 13) gives the same table and, per case, the same SEG voxels and the same
    RTSTRUCT contours as a serial export; a missing prediction still names its case."""
    import pydicom

    run, preds = _fake_run(tmp_path)
    serial = export.export_run(run, tmp_path / "serial", split=None, workers=1)
    parallel = export.export_run(run, tmp_path / "parallel", split=None, workers=2)
    pd.testing.assert_frame_equal(serial.drop(columns="source_folder"), parallel.drop(columns="source_folder"))
    assert serial["case_id"].tolist() == ["P1", "P2", "P3"]
    for pid in ("P1", "P2", "P3"):
        _, geometry = dicomio.read_series(run / "00_data" / "raw" / "dicom" / pid / "s1")
        np.testing.assert_array_equal(an.read_seg(tmp_path / "parallel" / pid / "seg.dcm", geometry), preds[pid])
        contours = {d: [[list(c.ContourData) for c in roi.ContourSequence]
                        for roi in pydicom.dcmread(tmp_path / d / pid / "rtstruct.dcm").ROIContourSequence]
                    for d in ("serial", "parallel")}
        assert contours["serial"] == contours["parallel"] and contours["serial"][0]
    (run / "03_train" / "predictions" / "P3.nii.gz").unlink()
    table = export.export_run(run, tmp_path / "p3", workers=2).set_index("case_id")
    assert table["status"].to_dict() == {"P1": "written", "P3": "failed"}  # one case fails, not the batch
    assert table.loc["P3", "detail"].startswith("prediction ") and "P3.nii.gz not found" in table.loc["P3", "detail"]


def test_export_run_names_a_missing_source_series(tmp_path: Path) -> None:
    run, _ = _fake_run(tmp_path)
    manifest = pd.read_csv(run / "01_cohort" / "manifest.csv")
    manifest.loc[0, "series_uid"] = "1.2.3.999"
    manifest.to_csv(run / "01_cohort" / "manifest.csv", index=False)
    table = export.export_run(run).set_index("case_id")
    assert table.loc["P1", "status"] == "failed" and table.loc["P3", "status"] == "written"
    assert table.loc["P1", "detail"].startswith("source series 1.2.3.999 not found under the raw DICOM folder")


def test_export_run_takes_source_files_from_the_cohort_sources_json(tmp_path: Path) -> None:
    import json
    import shutil

    run, preds = _fake_run(tmp_path)
    moved = tmp_path / "archive"
    shutil.move(str(run / "00_data" / "raw" / "dicom"), moved)  # the raw tree is gone: only sources.json knows
    sources = {}
    for pid in ("P1", "P3"):
        _, geometry = dicomio.read_series(moved / pid / "s1")
        sources[pid] = {"series_uid": geometry["series_uid"], "files": list(geometry["files"]), "sop_uids": list(geometry["sop_uids"])}
    (run / "01_cohort" / "sources.json").write_text(json.dumps(sources))
    table = export.export_run(run, formats=["rtstruct"])
    assert table["source_folder"].tolist() == [str(moved / "P1" / "s1"), str(moved / "P3" / "s1")]
    _, geometry = dicomio.read_series(moved / "P1" / "s1")
    np.testing.assert_array_equal(an.read_rtstruct(run / "09_export" / "P1" / "rtstruct.dcm", geometry), preds["P1"])


def test_shift_mask_slice_by_hand() -> None:
    """Zero shift: unchanged; whole pixels: moved exactly, background shifted in; fractions: linear
    interpolation then >= 0.5 (a pixel moved 0.4 stays, moved 0.6 goes to its neighbour)."""
    s = np.zeros((4, 5), np.uint8)
    s[1, 1] = s[1, 2] = s[2, 4] = 1
    np.testing.assert_array_equal(dicomio.shift_mask_slice(s, (0.0, 0.0)), s.astype(bool))
    moved = np.zeros((4, 5), bool)
    moved[2, 3] = moved[2, 4] = True  # (1, 1), (1, 2) down 1 and right 2; (2, 4) leaves the slice
    np.testing.assert_array_equal(dicomio.shift_mask_slice(s, (1.0, 2.0)), moved)
    one = np.zeros((3, 5), np.uint8)
    one[1, 2] = 1
    np.testing.assert_array_equal(np.flatnonzero(dicomio.shift_mask_slice(one, (0.0, 0.4))[1]), [2])  # 0.6 of it stays
    np.testing.assert_array_equal(np.flatnonzero(dicomio.shift_mask_slice(one, (0.0, 0.6))[1]), [3])  # 0.6 arrives at 3
    np.testing.assert_array_equal(np.flatnonzero(dicomio.shift_mask_slice(one, (0.0, -0.6))[1]), [1])


@pytest.mark.parametrize("shear_mm", [1.0, float(np.tan(np.radians(15.0)) * 2.5)], ids=["whole-pixel", "15deg"])
def test_tilted_gantry_series_exports_onto_its_acquired_slices(tmp_path: Path, shear_mm: float) -> None:
    """A tilted-gantry series (read resampled onto an orthogonal grid): the SEG's frames are the
    grid mask moved back onto the acquired slices, so each frame equals the ball drawn on its acquired
    slice (exactly for whole-pixel shear, up to the outline for 15 degrees); the RTSTRUCT's contours
    lie in the planes of the slices they reference; both read back onto the grid; dciodvfy is clean."""
    _, hu_acquired = tilted_ball_series(tmp_path / "ct", (shear_mm, 0.0), "tilt-export")
    vol, geometry = dicomio.read_series(tmp_path / "ct")
    assert geometry["tilt_deg"] > 10 and geometry["slice_shift_px"][4] == pytest.approx((4 * shear_mm, 0.0), abs=1e-3)  # IPP written to 1e-4 mm
    mask = (vol > 0).astype(np.uint8)
    written = export.export_case(mask, tmp_path / "ct", tmp_path / "out", "run:T1", affine=geometry["affine"])
    ct = _ct_by_uid(tmp_path / "ct")
    z_of = {uid: z for z, uid in enumerate(geometry["sop_uids"])}
    seg = pydicom.dcmread(written["seg"])
    frames = seg.pixel_array.reshape(-1, *mask.shape[1:])
    exact = shear_mm == 1.0
    seen = set()
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        z = z_of[uid]
        seen.add(z)
        ipp = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert ipp == pytest.approx([float(v) for v in ct[uid].ImagePositionPatient], abs=1e-3)  # the acquired slice
        truth = hu_acquired[z] > 0
        if exact:
            np.testing.assert_array_equal(frames[i].astype(bool), truth)
        else:
            assert np.sum(frames[i].astype(bool) != truth) <= 0.15 * truth.sum() + 2
    assert seen == set(np.flatnonzero(mask.any(axis=(1, 2))))
    back = an.read_seg(written["seg"], geometry)
    if exact:
        np.testing.assert_array_equal(back, mask)
    else:
        assert voxel_metrics(back, mask)["dice"] > 0.95
    rt = pydicom.dcmread(written["rtstruct"])
    normal = np.asarray(geometry["direction"]).reshape(3, 3)[:, 2]
    for c in rt.ROIContourSequence[0].ContourSequence:
        ref = ct[str(c.ContourImageSequence[0].ReferencedSOPInstanceUID)]
        pts = np.asarray([float(v) for v in c.ContourData]).reshape(-1, 3)
        assert np.abs((pts - [float(v) for v in ref.ImagePositionPatient]) @ normal).max() < 1e-3
    np.testing.assert_array_equal(an.read_rtstruct(written["rtstruct"], geometry), mask)
    for path in written.values():
        assert dciodvfy_errors(path) == []


def test_source_date_epoch_makes_exports_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With SOURCE_DATE_EPOCH set (reproducible-builds convention) two exports of the same run are
    byte-identical: every date/time is that instant (1700000000 s = 2023-11-14 22:13:20 UTC, by hand)
    and every UID derives from the run and case (highdicom's random dimension UID included)."""
    import pydicom

    run, _ = _fake_run(tmp_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    export.export_run(run, tmp_path / "a")
    export.export_run(run, tmp_path / "b")
    for name in ("seg.dcm", "rtstruct.dcm"):
        a, b = tmp_path / "a" / "P1" / name, tmp_path / "b" / "P1" / name
        assert a.read_bytes() == b.read_bytes(), name
        stamps = {e.keyword: str(e.value) for e in pydicom.dcmread(a).iterall()
                  if e.VR in ("DA", "TM", "DT") and not e.keyword.startswith(("Study", "Series", "Patient"))}
        assert stamps and all(v.startswith(("20231114", "221320")) for v in stamps.values()), stamps
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(export.ExportError, match="SOURCE_DATE_EPOCH='yesterday'"):
        export.export_run(run, tmp_path / "c")


def test_export_of_a_real_multiframe_enhanced_ct(scanner, tmp_path: Path) -> None:
    """pydicom-data's real Enhanced CT (one instance, two frames stored top-down): the SEG references
    that instance frame by frame (ReferencedFrameNumber, the frame at the slice's position), the
    RTSTRUCT's contour images name the frame of their slice, both read back to the mask, and
    dciodvfy finds no error in either."""
    import shutil

    (tmp_path / "ect").mkdir()
    shutil.copy(scanner["scanner_ect_supplemental"], tmp_path / "ect" / "ct.dcm")
    _, geometry = dicomio.read_series(tmp_path / "ect")
    frames = export.frame_numbers(geometry)
    assert frames == [2, 1]  # the reader's z order is the reverse of the stored frames
    mask = np.zeros(geometry["shape"], np.uint8)
    mask[0, 200:260, 180:250] = 1  # lower slice only (stored as frame 2)
    mask[1, 300:330, 300:340] = 1
    written = export.export_case(mask, tmp_path / "ect", tmp_path / "out", "ect:1")
    np.testing.assert_array_equal(an.read_seg(written["seg"], geometry), mask)
    assert voxel_metrics(an.read_rtstruct(written["rtstruct"], geometry), mask)["dice"] > 0.97
    src = pydicom.dcmread(tmp_path / "ect" / "ct.dcm", stop_before_pixels=True)
    seg = pydicom.dcmread(written["seg"])
    for item in seg.PerFrameFunctionalGroupsSequence:
        ref = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
        source_pos = src.PerFrameFunctionalGroupsSequence[int(ref.ReferencedFrameNumber) - 1].PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
                                   [float(v) for v in source_pos], atol=1e-3)
    rt = pydicom.dcmread(written["rtstruct"])
    for contour in rt.ROIContourSequence[0].ContourSequence:
        ref = contour.ContourImageSequence[0]
        z_mm = float(contour.ContourData[2])
        source_pos = src.PerFrameFunctionalGroupsSequence[int(ref.ReferencedFrameNumber) - 1].PlanePositionSequence[0].ImagePositionPatient
        assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID and float(source_pos[2]) == pytest.approx(z_mm, abs=1e-3)
    require_dciodvfy()
    for path in written.values():
        assert dciodvfy_errors(path) == [], path.name


def test_export_run_of_a_multiframe_case_from_sources_json(scanner, tmp_path: Path) -> None:
    """The cohort's sources.json lists a multi-frame file once per frame; export_run reads it once
    and writes the case (issue 16 follow-up)."""
    import json
    import shutil

    (tmp_path / "ect").mkdir()
    shutil.copy(scanner["scanner_ect_supplemental"], tmp_path / "ect" / "ct.dcm")
    _, geometry = dicomio.read_series(tmp_path / "ect")
    run = tmp_path / "run"
    for step in ("01_cohort", "02_split", "03_train/predictions"):
        (run / step).mkdir(parents=True)
    mask = np.zeros(geometry["shape"], np.uint8)
    mask[1, 100:140, 120:170] = 1
    save_nifti(mask, geometry["affine"], run / "03_train" / "predictions" / "E1.nii.gz")
    pd.DataFrame({"case_id": ["E1"], "series_uid": [geometry["series_uid"]]}).to_csv(run / "01_cohort" / "manifest.csv", index=False)
    pd.DataFrame({"case_id": ["E1"], "split": ["external_test"]}).to_csv(run / "02_split" / "split.csv", index=False)
    assert len(set(geometry["files"])) == 1 < len(geometry["files"])
    (run / "01_cohort" / "sources.json").write_text(json.dumps(
        {"E1": {"series_uid": geometry["series_uid"], "files": list(geometry["files"]), "sop_uids": list(geometry["sop_uids"])}}))
    table = export.export_run(run, formats=["seg", "rtstruct"])
    assert table["n_voxels"].tolist() == [int(mask.sum())]
    np.testing.assert_array_equal(an.read_seg(run / "09_export" / "E1" / "seg.dcm", geometry), mask)


def test_another_models_masks_are_exported_under_its_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """amt export --pred DIR --algorithm NAME: another model's NIfTI masks become SEG/RTSTRUCT that name
    that model (not ours, no SHA-256 of our model file) and get UIDs of their own."""
    run, preds = _fake_run(tmp_path)
    other = tmp_path / "vendor_masks"
    for case in ("P1", "P3"):
        _, geometry = dicomio.read_series(run / "00_data" / "raw" / "dicom" / case / "s1")
        save_nifti(np.roll(preds[case], 2, axis=1), geometry["affine"], other / f"{case}.nii.gz")
    (run / "03_train" / "model.pt").write_bytes(b"our model")
    own = export.export_run(run, tmp_path / "own")
    assert amt_main(["export", "--run", str(run), "--pred", str(other), "--algorithm", "Vendor AI", "--algorithm-version", "2.1",
                     "--out", str(tmp_path / "theirs")]) == 0
    _, geometry = dicomio.read_series(run / "00_data" / "raw" / "dicom" / "P3" / "s1")
    np.testing.assert_array_equal(an.read_seg(tmp_path / "theirs" / "P3" / "seg.dcm", geometry), np.roll(preds["P3"], 2, axis=1))
    seg = pydicom.dcmread(tmp_path / "theirs" / "P3" / "seg.dcm")
    algo = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("Vendor AI", "2.1")
    assert "AlgorithmSource" not in algo and "AlgorithmParameters" not in algo
    assert seg.SeriesDescription == "Vendor AI prediction (SEG)" and seg.ManufacturerModelName == "Vendor AI"
    rt = pydicom.dcmread(tmp_path / "theirs" / "P3" / "rtstruct.dcm")
    assert rt.ManufacturerModelName == "Vendor AI" and rt.StructureSetROISequence[0].ROIGenerationDescription == "Vendor AI 2.1 via amtlib"
    ours = pydicom.dcmread(tmp_path / "own" / "P3" / "seg.dcm")
    ours_algo = ours.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert ours_algo.AlgorithmName == export.ALGORITHM_NAME and ours_algo.AlgorithmSource == "amtlib"
    assert ours.SOPInstanceUID != seg.SOPInstanceUID and ours.SeriesInstanceUID != seg.SeriesInstanceUID
    assert len(own) == 2
    for kind in ("seg", "rtstruct"):
        assert dciodvfy_errors(tmp_path / "theirs" / "P3" / f"{kind}.dcm") == []
    # refused: masks without a name, a name without masks, a name that is no DICOM LO value
    assert amt_main(["export", "--run", str(run), "--pred", str(other), "--out", str(tmp_path / "x")]) == 2
    assert "need that model's name" in capsys.readouterr().err
    assert amt_main(["export", "--run", str(run), "--algorithm", "Vendor AI", "--out", str(tmp_path / "y")]) == 2
    assert "give them with --pred DIR" in capsys.readouterr().err
    assert amt_main(["export", "--run", str(run), "--pred", str(other), "--algorithm", "A" * 65, "--out", str(tmp_path / "z")]) == 2
    assert "1-64 characters" in capsys.readouterr().err
    misnamed = tmp_path / "misnamed"
    misnamed.mkdir()
    shutil.copy(other / "P1.nii.gz", misnamed / "P1_pred.nii.gz")
    assert amt_main(["export", "--run", str(run), "--pred", str(misnamed), "--algorithm", "V", "--split", "all",
                     "--out", str(tmp_path / "m")]) == 2
    assert "no mask named after a case of the cohort (found P1_pred.nii.gz)" in capsys.readouterr().err


def test_export_refuses_a_split_typo_and_a_run_without_predictions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run, _ = _fake_run(tmp_path)
    assert amt_main(["export", "--run", str(run), "--split", "external", "--out", str(tmp_path / "a")]) == 2
    assert "split 'external' is not in" in capsys.readouterr().err  # not 0 cases exported with exit 0
    shutil.rmtree(run / "03_train" / "predictions")
    (run / "03_train" / "predictions").mkdir()
    assert amt_main(["export", "--run", str(run), "--split", "all", "--out", str(tmp_path / "b")]) == 2
    assert "no prediction to export (split all); run step 03_train first" in capsys.readouterr().err


def test_a_changed_mask_gets_new_uids_and_the_same_mask_the_same(tmp_path: Path) -> None:
    """A PACS keeps the first object it receives under a SOP Instance UID: a retrained model's masks
    must not reuse the UIDs of the earlier export; re-exporting the same masks gives the same UIDs."""
    run, preds = _fake_run(tmp_path)
    export.export_run(run, tmp_path / "a", formats=["seg"])
    export.export_run(run, tmp_path / "b", formats=["seg"])
    _, geometry = dicomio.read_series(run / "00_data" / "raw" / "dicom" / "P1" / "s1")
    changed = preds["P1"].copy()
    changed[2, 10, 10] = 1 - changed[2, 10, 10]
    save_nifti(changed, geometry["affine"], run / "03_train" / "predictions" / "P1.nii.gz")
    export.export_run(run, tmp_path / "c", formats=["seg"])
    uid = {k: {c: str(pydicom.dcmread(tmp_path / k / c / "seg.dcm").SOPInstanceUID) for c in ("P1", "P3")} for k in "abc"}
    assert uid["a"] == uid["b"]
    assert uid["c"]["P1"] != uid["a"]["P1"] and uid["c"]["P3"] == uid["a"]["P3"]
    assert export.mask_digest(preds["P1"], geometry["affine"]) == export.mask_digest(preds["P1"].astype(bool), geometry["affine"])
    assert export.mask_digest(changed, geometry["affine"]) != export.mask_digest(preds["P1"], geometry["affine"])


def test_ge_empty_character_set_and_missing_accession_number_export(tmp_path: Path) -> None:
    """Issue 23, items 14-15: real GE series carry SpecificCharacterSet present but empty, and
    de-identified series often lack AccessionNumber (Type 2). Both are read as DICOM says (the default
    repertoire; an empty Type 2 value): SEG and RTSTRUCT are written, conformant, the sources untouched."""
    import hashlib

    files = dicomio.write_ct_series(np.full((4, 16, 16), -500, np.float32), (3.0, 1.0, 1.0), tmp_path / "ct",
                                    {"PatientID": "GE1", "Manufacturer": "GE MEDICAL SYSTEMS"}, "ge-empty")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SpecificCharacterSet = ""
        if "AccessionNumber" in ds:
            del ds.AccessionNumber
        ds.save_as(f)
    before = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    mask = np.zeros((4, 16, 16), np.uint8)
    mask[1:3, 4:9, 4:9] = 1
    written = export.export_case(mask, tmp_path / "ct", tmp_path / "out", "ge-empty")
    for kind, path in written.items():
        ds = pydicom.dcmread(path)
        assert ds.AccessionNumber == "" and ds.PatientID == "GE1", kind
        if shutil.which("dciodvfy"):
            assert dciodvfy_errors(path) == [], kind
    assert an.read_seg(written["seg"], dicomio.read_series(tmp_path / "ct")[1]).sum() == mask.sum()
    assert {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files} == before


@pytest.mark.parametrize("case_id", ["../../../escaped", "/tmp/absolute-escape", "a/../../b", ".."])
def test_a_case_id_from_the_manifest_never_leaves_the_output_folder(tmp_path: Path, case_id: str) -> None:
    """Issue 23, item 1: a run folder from someone else is untrusted: its manifest's case ids name folders."""
    run, _ = _fake_run(tmp_path)
    for name in ("manifest.csv",):
        table = pd.read_csv(run / "01_cohort" / name)
        table.loc[0, "case_id"] = case_id
        table.to_csv(run / "01_cohort" / name, index=False)
    split = pd.read_csv(run / "02_split" / "split.csv")
    split.loc[0, "case_id"] = case_id
    split.to_csv(run / "02_split" / "split.csv", index=False)
    # the attacker's prediction sits where the case id points, so an unchecked export would find it
    planted = (run / "03_train" / "predictions" / f"{case_id}.nii.gz").resolve()
    if str(planted).startswith(str(tmp_path)) and planted.parent.is_dir():
        (run / "03_train" / "predictions" / "P1.nii.gz").rename(planted)
    out = tmp_path / "deep" / "er" / "out"
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(export.ExportError, match="is not a safe folder name"):
        export.export_run(run, out)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before and not Path("/tmp/absolute-escape").exists()


def test_a_link_planted_at_a_case_folder_or_the_export_folder_is_refused(tmp_path: Path) -> None:
    """Issue 23, item 3: outputs are never written where a planted symbolic link points."""
    from amtlib.errors import AmtError

    run, _ = _fake_run(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "P1").symlink_to(elsewhere)
    table = export.export_run(run, out).set_index("case_id")
    assert table.loc["P1", "status"] == "failed" and "case P1's export folder is a symbolic link" in table.loc["P1", "detail"]
    assert (out / "P1").is_symlink() and (out / "P3" / "seg.dcm").is_file()
    linked_out = tmp_path / "linked_out"
    linked_out.symlink_to(elsewhere)
    with pytest.raises(AmtError, match="export folder is a symbolic link"):
        export.export_run(run, linked_out)
    assert list(elsewhere.iterdir()) == []


# ---------------------------------------------- one bad case never sinks the batch; stale and concurrent outputs
# (issue 23 items 9-11 and 21)


def _edit_series(folder: Path, **tags: object) -> None:
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        for keyword, value in tags.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        ds.save_as(path)


@pytest.mark.parametrize("fmt", ["seg", "rtstruct", "both"])
def test_a_source_without_frame_of_reference_fails_its_case_only(tmp_path: Path, capsys, fmt: str) -> None:
    """SEG stopped the whole export at such a case, naming none; RTSTRUCT was an AttributeError traceback."""
    run, preds = _fake_run(tmp_path)
    _edit_series(run / "00_data" / "raw" / "dicom" / "P1" / "s1", FrameOfReferenceUID=None)
    out = tmp_path / "out"
    assert amt_main(["export", "--run", str(run), "--split", "all", "--format", fmt, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "amt export: case P1: " in err and "has no FrameOfReferenceUID" in err and "1 case(s) failed" in err
    assert "Traceback" not in err
    rows = pd.read_csv(out / "export.csv", dtype=str, keep_default_na=False).set_index("case_id")
    assert rows["status"].to_dict() == {"P1": "failed", "P2": "written", "P3": "written"}
    assert not (out / "P1").exists() and (out / "P3").is_dir()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no partial folder left


def test_a_source_with_an_invalid_uid_is_refused_by_name(tmp_path: Path) -> None:
    run, _ = _fake_run(tmp_path)
    _edit_series(run / "00_data" / "raw" / "dicom" / "P3" / "s1", StudyInstanceUID="1.2.840.abc")
    table = export.export_run(run, tmp_path / "out").set_index("case_id")
    assert table.loc["P3", "status"] == "failed"
    assert "StudyInstanceUID '1.2.840.abc' is not a valid DICOM UID" in table.loc["P3", "detail"]
    assert table.loc["P1", "status"] == "written"


def test_a_second_export_into_a_folder_in_use_is_refused(tmp_path: Path) -> None:
    from amtlib.errors import AmtError
    from amtlib.io import output_lock

    run, _ = _fake_run(tmp_path)
    out = tmp_path / "out"
    with output_lock(out, "amt export"):  # the first export, still writing
        with pytest.raises(AmtError, match=r"out: in use by another amt export writing into it"):
            export.export_run(run, out)
    assert not out.exists()  # nothing was written: the folder the first holder made is gone with it


def test_an_export_replaces_what_an_earlier_one_wrote_there(tmp_path: Path) -> None:
    run, _ = _fake_run(tmp_path)
    out = tmp_path / "out"
    export.export_run(run, out, split=None)  # P1, P2, P3, both formats
    (out / "notes").mkdir()
    (out / "notes" / "read_me.txt").write_text("the user's own")
    export.export_run(run, out, split="external_test", formats=["seg"])  # P1 and P3, SEG only
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["P1", "P3", "export.csv", "notes"]
    assert sorted(p.name for p in (out / "P1").iterdir()) == ["seg.dcm"]  # the old rtstruct.dcm went with its folder
    assert (out / "notes" / "read_me.txt").read_text() == "the user's own"


def test_what_a_killed_export_left_is_removed_first(tmp_path: Path) -> None:
    run, _ = _fake_run(tmp_path)
    out = tmp_path / "out"
    export.export_run(run, out)
    (out / "P1" / ".seg.k2j4q.dcm").write_bytes(b"half a SEG")  # an older export's atomic temporary
    (out / ".P3.partial-x81").mkdir()  # this export's partial folder
    (out / ".P3.partial-x81" / "seg.dcm").write_bytes(b"half")
    (out / ".export.3k.csv").write_text("case_id\n")
    export.export_run(run, out)
    assert sorted(p.name for p in out.rglob(".*")) == []


def test_a_full_disk_stops_the_export_with_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    import errno

    run, _ = _fake_run(tmp_path)

    def full(ds, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "write_dataset", full)
    out = tmp_path / "out"
    assert amt_main(["export", "--run", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"amt export: error: {out / 'P1'}: cannot write (No space left on device); free disk space or "
                   "choose a writable folder (--out), then run again"]
    assert not (out / "export.csv").exists() and not (out / "P1").exists()


def test_debug_shows_the_traceback_of_a_failed_case(tmp_path: Path, capsys) -> None:
    run, _ = _fake_run(tmp_path)
    (run / "03_train" / "predictions" / "P3.nii.gz").unlink()
    assert amt_main(["--debug", "export", "--run", str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "P3.nii.gz not found" in err


def test_seg_pixel_measures_are_short_decimal_strings(tmp_path: Path) -> None:
    """A 10 mm series at z = 12.7 mm gave SpacingBetweenSlices '10.0000000000000' (17 characters elsewhere)."""
    vol = np.full((3, 8, 9), -50.0)
    folder = tmp_path / "s"
    dicomio.write_ct_series(vol, (10.0, 0.7, 0.7), folder, {"PatientID": "P"}, "ds", origin=(0.0, 0.0, 12.7))
    mask = np.zeros((3, 8, 9), np.uint8)
    mask[1, 2:5, 2:5] = 1
    seg = pydicom.dcmread(export.export_case(mask, folder, tmp_path / "o", "ds", formats=["seg"])["seg"])
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert str(measures.SpacingBetweenSlices) == "10" and str(measures.SliceThickness) == "10"
    assert all(len(str(v)) <= 16 for e in seg.iterall() if e.VR == "DS"
               for v in (e.value if isinstance(e.value, (list, pydicom.multival.MultiValue)) else [e.value]))


def test_a_series_whose_sop_uids_an_anonymiser_blanked_exports_with_the_file_meta_uids(tmp_path: Path) -> None:
    """Issue 23 item 16: blanked SOPClassUID/SOPInstanceUID with the file meta intact read as pydicom reads them."""
    run, preds = _fake_run(tmp_path)
    folder = run / "00_data" / "raw" / "dicom" / "P1" / "s1"
    meta_uids = sorted(str(pydicom.dcmread(p).file_meta.MediaStorageSOPInstanceUID) for p in folder.iterdir())
    _edit_series(folder, SOPClassUID="", SOPInstanceUID="")
    table = export.export_run(run, tmp_path / "out").set_index("case_id")
    assert table.loc["P1", "status"] == "written", table.loc["P1", "detail"]
    seg = pydicom.dcmread(tmp_path / "out" / "P1" / "seg.dcm")
    referenced = {str(i.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
    assert referenced and referenced <= set(meta_uids)
    _, geometry = dicomio.read_series(folder)
    np.testing.assert_array_equal(an.read_seg(tmp_path / "out" / "P1" / "seg.dcm", geometry), preds["P1"])
