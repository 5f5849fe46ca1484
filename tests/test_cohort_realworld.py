"""The cohort build on a raw tree as real archives deliver it: every edge of issue 15, one patient each.

Each patient is used correctly (with a warning where something was unusual) or excluded with a reason
naming the file or series and the tag or problem; the input tree is never modified.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from amtlib import cohort
from amtlib.dicom import dicomio, export
from amtlib.io import load_nifti, save_nifti
from test_cohort import tree_hash
from test_annotations import _highdicom_labelmap, _highdicom_seg
from test_dicom_real import replicate

SHAPE = (5, 8, 9)
SPACING = (2.5, 0.8, 0.9)


def _series(raw: Path, pid: str, sub: str, seed: str, **meta: object) -> tuple[Path, dict]:
    vol = np.full(SHAPE, -50.0) + np.arange(SHAPE[0])[:, None, None]
    folder = raw / "dicom" / pid / sub
    dicomio.write_ct_series(vol, SPACING, folder, {"PatientID": pid, "InstitutionName": "INST-1", **meta}, seed)
    return folder, dicomio.read_series(folder, accept_derived=True, tilt_policy="resample")[1] if "ImageType" not in meta else {}


def _truth() -> np.ndarray:
    m = np.zeros(SHAPE, np.uint8)
    m[1:4, 2:5, 3:6] = 1
    m[4, 6, 7] = 1
    return m


def _blank(folder: Path, *keywords: str) -> None:
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        for kw in keywords:
            setattr(ds, kw, "")
        ds.save_as(path)


@pytest.fixture(scope="module")
def realworld(tmp_path_factory, scanner) -> tuple[Path, dict[str, str], cohort.CohortResult, str]:
    base = tmp_path_factory.mktemp("realworld")
    raw = base / "raw"
    (raw / "masks").mkdir(parents=True)
    expected: dict[str, str] = {}
    rows = []

    def patient(pid: str, reason: str = "") -> None:
        rows.append({"patient_id": pid, "institution": "INST-1", "age": "60", "sex": "F", "histology": "thymoma",
                     "pathology_confirmed": "True", "scan_date": "2020-01-01"})
        expected[pid] = reason

    # R01: a real Siemens CT in JPEG Lossless SV1, exported with DICOMDIR backup, text, XML, PNG, hidden and empty files
    folder = raw / "dicom" / "R01" / "export"
    replicate(scanner["scanner_bad_sequence"], folder, n=4, seed="R01", name="{k:08d}", PatientID="R01")
    shutil.copy(get_testdata_file("DICOMDIR"), folder / "DICOMDIR.bak")
    (folder / "README.txt").write_text("exported by PACS")
    (folder / "index.xml").write_text("<study/>")
    (folder / "preview.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    (folder / "empty").write_bytes(b"")
    _, geom = dicomio.read_series(sorted(p for p in folder.iterdir() if p.name.isdigit()))
    m = np.zeros(geom["shape"], np.uint8)
    m[1:3, 200:260, 220:300] = 1
    save_nifti(m, geom["affine"], raw / "masks" / f"{geom['series_uid']}.nii.gz")
    patient("R01")
    # R02: anonymised export, StudyInstanceUID, SeriesInstanceUID and PatientID blanked; mask by patient id
    folder, geom = _series(raw, "R02", "anon", "R02")
    _blank(folder, "StudyInstanceUID", "SeriesInstanceUID", "PatientID")
    save_nifti(_truth(), geom["affine"], raw / "masks" / "R02.nii.gz")
    patient("R02")
    # R03: PatientID pseudonymised differently from the folder; files without suffix or .IMA, split across folders
    folder, geom = _series(raw, "R03", "a", "R03", PatientID="PSEUDO-9")
    (raw / "dicom" / "R03" / "b" / "deeper").mkdir(parents=True)
    for i, path in enumerate(sorted(folder.iterdir())):
        target = raw / "dicom" / "R03" / ("b/deeper" if i % 2 else "a") / (path.stem if i < 2 else path.stem + ".IMA")
        path.rename(target)
    save_nifti(_truth(), geom["affine"], raw / "masks" / f"{geom['series_uid']}.nii.gz")
    patient("R03")
    # R04: the CT beside an RTSTRUCT, a localizer and a derived reformat: only the original is a candidate
    folder, geom = _series(raw, "R04", "ct", "R04")
    save_nifti(_truth(), geom["affine"], raw / "masks" / f"{geom['series_uid']}.nii.gz")
    shutil.copy(get_testdata_file("rtstruct.dcm"), raw / "dicom" / "R04" / "ct" / "RS.dcm")
    _series(raw, "R04", "scout", "R04s", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], StudyDate="19990101")
    _series(raw, "R04", "mpr", "R04m", ImageType=["DERIVED", "SECONDARY", "REFORMATTED"], StudyDate="19990101")
    patient("R04")
    # R05: tilted gantry (positions sheared in y, axial orientation): resampled, with a warning
    folder, geom = _series(raw, "R05", "tilt", "R05", GantryDetectorTilt=15)
    for k, path in enumerate(sorted(folder.iterdir())):
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], float(ds.ImagePositionPatient[1]) + 0.67 * k, ds.ImagePositionPatient[2]]
        ds.save_as(path)
    save_nifti(_truth(), geom["affine"], raw / "masks" / f"{geom['series_uid']}.nii.gz")
    patient("R05")
    # R15: GantryDetectorTilt recorded, positions along the normal (already corrected): a note, read as positioned
    folder, geom = _series(raw, "R15", "s", "R15", GantryDetectorTilt=12)
    save_nifti(_truth(), geom["affine"], raw / "masks" / f"{geom['series_uid']}.nii.gz")
    patient("R15")
    # R16: tilted gantry (one 0.8 mm row per slice) with a DICOM SEG drawn on the acquired slices by highdicom
    folder, _ = _series(raw, "R16", "tilt", "R16", GantryDetectorTilt=17.7)
    for k, path in enumerate(sorted(folder.iterdir())):
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], float(ds.ImagePositionPatient[1]) + SPACING[1] * k, ds.ImagePositionPatient[2]]
        ds.save_as(path)
    acquired = np.zeros(SHAPE, np.uint8)
    acquired[1:4, 1:3, 3:6] = 1
    sources = sorted((pydicom.dcmread(p) for p in folder.iterdir()), key=lambda d: int(d.InstanceNumber))
    _highdicom_seg(sources, {"Tumour": acquired}, raw / "masks" / "seg_R16.dcm")
    patient("R16")
    # R17: a Label Map SEG (DICOM 2024's own SOP class; background segment 0, tumour 1) beside the series
    folder, geom = _series(raw, "R17", "ct", "R17")
    sources = sorted((pydicom.dcmread(p) for p in folder.iterdir()), key=lambda d: int(d.InstanceNumber))
    _highdicom_labelmap(sources, _truth(), ["Tumour"], folder / "LABELMAP.dcm")
    patient("R17")
    # R18: an RTSTRUCT whose tumour ROI also holds an OPEN contour and a 2-point one: used, both in warnings.csv
    folder, geom = _series(raw, "R18", "ct", "R18")
    written = export.export_case(_truth(), folder, base / "tmp18", "R18", formats=["rtstruct"])
    rs = pydicom.dcmread(written["rtstruct"])
    contours = rs.ROIContourSequence[0].ContourSequence
    open_contour, two_points = copy.deepcopy(contours[0]), copy.deepcopy(contours[0])
    open_contour.ContourGeometricType = "OPEN_PLANAR"
    two_points.ContourData, two_points.NumberOfContourPoints = list(two_points.ContourData[:6]), 2
    contours.extend([open_contour, two_points])  # contours 5 and 6 after the 4 of the truth
    rs.save_as(folder / "RS.R18")
    patient("R18")
    # R19: an anonymiser blanked the Type 1 UIDs of the data set; the file meta keeps the SOP class and instance
    folder, geom = _series(raw, "R19", "ct", "R19")
    _blank(folder, "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
    save_nifti(_truth(), geom["affine"], raw / "masks" / "R19.nii.gz")  # by patient: its series id is derived
    patient("R19")
    # R06: mask as dcm2niix writes it (rows flipped, affine diag(-dx, +dy, dz))
    folder, geom = _series(raw, "R06", "s", "R06")
    aff = geom["affine"].copy()
    flip = aff.copy()
    flip[:3, 1], flip[:3, 3] = -aff[:3, 1], aff[:3, 3] + aff[:3, 1] * (SHAPE[1] - 1)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(_truth().transpose(2, 1, 0)[:, ::-1, :]), flip), str(raw / "masks" / f"{geom['series_uid']}.nii"))
    patient("R06")
    # R07: 3D Slicer .seg.nrrd with the tumour as segment label 1 among others? here: values 0/2, name 'tumour'
    folder, geom = _series(raw, "R07", "s", "R07")
    img = sitk.GetImageFromArray(_truth() * 2)
    img.SetSpacing(geom["spacing"][::-1])
    img.SetOrigin(geom["origin"])
    img.SetDirection(geom["direction"])
    sitk.WriteImage(img, str(raw / "masks" / f"{geom['series_uid']}.seg.nrrd"))
    patient("R07", "invalid_reference_mask")  # label 2 without mask_label: never guessed
    # R08: mask half a voxel off the grid
    folder, geom = _series(raw, "R08", "s", "R08")
    off = geom["affine"].copy()
    off[:3, 3] += [0.45, 0, 0]
    save_nifti(_truth(), off, raw / "masks" / f"{geom['series_uid']}.nii.gz")
    patient("R08", "mask_geometry_mismatch")
    # R09: two mask files for one series
    folder, geom = _series(raw, "R09", "s", "R09")
    save_nifti(_truth(), geom["affine"], raw / "masks" / f"{geom['series_uid']}.nii.gz")
    shutil.copy(raw / "masks" / f"{geom['series_uid']}.nii.gz", raw / "masks" / f"{geom['series_uid']}.nrrd")
    patient("R09", "invalid_reference_mask")
    # R10: only a localizer and a dose report: no CT series, and the detail says what was found
    _series(raw, "R10", "scout", "R10", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    patient("R10", "no_ct_series")
    # R11: a pixel-data-truncated slice: unreadable_files, naming the file and the byte counts
    folder, geom = _series(raw, "R11", "s", "R11")
    save_nifti(_truth(), geom["affine"], raw / "masks" / f"{geom['series_uid']}.nii.gz")
    victim = sorted(folder.iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:-30])
    patient("R11", "unreadable_files")
    # R12: an RTSTRUCT beside the series in the patient's DICOM folder (a clinical export)
    folder, geom = _series(raw, "R12", "ct", "R12")
    written = export.export_case(_truth(), folder, base / "tmp12", "R12", formats=["rtstruct"])
    shutil.copy(written["rtstruct"], folder / "RS.R12")
    patient("R12")
    # R13: a DICOM SEG in masks/ under any name
    folder, geom = _series(raw, "R13", "ct", "R13")
    written = export.export_case(_truth(), folder, base / "tmp13", "R13", formats=["seg"])
    shutil.copy(written["seg"], raw / "masks" / "tumour_seg_R13")
    patient("R13")
    # R14: a NIfTI mask and an RTSTRUCT for the same series: which is the reference is never guessed
    folder, geom = _series(raw, "R14", "ct", "R14")
    written = export.export_case(_truth(), folder, base / "tmp14", "R14", formats=["rtstruct"])
    shutil.copy(written["rtstruct"], folder / "RS.dcm")
    save_nifti(_truth(), geom["affine"], raw / "masks" / f"{geom['series_uid']}.nii.gz")
    patient("R14", "invalid_reference_mask")
    pd.DataFrame(rows).to_csv(raw / "clinical.csv", index=False)
    before = tree_hash(raw)
    result = cohort.build_cohort(raw, base / "out")
    return raw, expected, result, before


def test_each_real_world_patient_is_used_or_excluded_for_the_right_reason(realworld) -> None:
    raw, expected, result, _ = realworld
    got = dict(zip(result.exclusions["patient_id"], result.exclusions["reason"]))
    got.update({p: "" for p in result.manifest["patient_id"]})
    assert got == expected


def test_input_tree_is_never_modified(realworld) -> None:
    raw, _, _, before = realworld
    assert tree_hash(raw) == before


def test_parallel_scan_finds_the_same_as_a_serial_one(realworld) -> None:
    """scan_tree(workers=2) splits the tree by patient folder (issue 13); every table it returns,
    warnings and unreadable files included, equals the serial scan's, row for row."""
    raw = realworld[0]
    serial = dicomio.scan_tree(raw / "dicom", workers=1)
    parallel = dicomio.scan_tree(raw / "dicom", workers=2)
    for name in ("series", "objects", "unreadable", "skipped", "warnings"):
        pd.testing.assert_frame_equal(getattr(parallel, name), getattr(serial, name), obj=name)
    assert len(serial.series) >= 14 and len(serial.warnings) and len(serial.skipped) and len(serial.objects)


def test_warnings_say_what_was_unusual(realworld) -> None:
    _, _, result, _ = realworld
    w = result.warnings
    kinds = {(r.patient_id, r.kind) for r in w.itertuples()}
    assert ("R01", "non_dicom_files") in kinds
    r01 = w[(w.patient_id == "R01") & (w.kind == "non_dicom_files")].detail.iloc[0]
    assert "skipped 5 non-DICOM file(s)" in r01 and "DICOMDIR.bak" in r01 and ".DS_Store" not in r01
    assert {("R02", "series_uid_derived"), ("R02", "patient_id_blank"), ("R03", "patient_id_differs"),
            ("R04", "not_image_candidates"), ("R05", "gantry_tilt_resampled"), ("R06", "mask_reoriented"),
            ("R12", "mask_from_annotation"), ("R13", "mask_from_annotation"), ("R15", "gantry_tilt_tag"),
            ("R16", "gantry_tilt_resampled"), ("R16", "mask_from_annotation"), ("R17", "mask_from_annotation"),
            ("R17", "not_image_candidates"), ("R18", "contour_not_closed"), ("R18", "contour_degenerate")} <= kinds
    r19 = " | ".join(w[(w.patient_id == "R19") & (w.kind == "uids_blank")].detail)
    assert "SOPClassUID, SOPInstanceUID blank, taken from the file meta" in r19
    assert "StudyInstanceUID, FrameOfReferenceUID blank" in r19 and ("R19", "series_uid_derived") in kinds
    r18 = " | ".join(w[w.patient_id == "R18"].detail)
    assert "RS.R18: contour 5 of ROI 1 is OPEN_PLANAR" in r18 and "RS.R18: contour 6 of ROI 1 has 2 point(s)" in r18
    assert ("R05", "gantry_tilt_tag") not in kinds
    r04 = " | ".join(w[(w.patient_id == "R04") & (w.kind == "not_image_candidates")].detail)
    assert "RT Structure Set Storage" in r04 and "localizer/scout" in r04 and "derived or secondary" in r04
    r17 = " | ".join(w[(w.patient_id == "R17") & (w.kind == "not_image_candidates")].detail)
    assert "Label Map Segmentation Storage" in r17
    assert (Path(result.paths["warnings"]).read_text().splitlines()[0] == "patient_id,series_uid,kind,detail")
    # and on the terminal: amt run shows the step's notices after it
    notices = (Path(result.paths["warnings"]).parent / "notices.txt").read_text()
    assert "excluded 6 patient(s): " in notices and "1 mask_geometry_mismatch" in notices and "warning(s), nothing excluded" in notices


def test_exclusion_details_name_the_file_and_problem(realworld) -> None:
    _, _, result, _ = realworld
    d = dict(zip(result.exclusions["patient_id"], result.exclusions["detail"]))
    assert "values [0, 2] are not 0/1" in d["R07"] and ".seg.nrrd" in d["R07"]
    assert "largest distance between voxel centres 0.45 mm" in d["R08"]
    assert "2 masks for one series" in d["R09"]
    assert "2 masks for one series" in d["R14"] and "RS.dcm" in d["R14"] and ".nii.gz" in d["R14"]
    assert "localizer/scout" in d["R10"]
    assert "IM00003.dcm truncated: PixelData holds" in d["R11"]


def test_included_cases_have_the_right_voxels_and_patient(realworld) -> None:
    raw, _, result, _ = realworld
    out = Path(result.paths["manifest"]).parent
    man = result.manifest.set_index("case_id")
    for pid in ("R02", "R03", "R04", "R06", "R12", "R13", "R17", "R18", "R19"):
        mask, _, _ = load_nifti(out / man.loc[pid, "mask_path"])
        np.testing.assert_array_equal(mask, _truth(), err_msg=pid)
    assert man.loc["R02", "series_uid"].startswith("derived.") and man.loc["R03", "patient_id"] == "R03"
    assert man.loc["R01", "manufacturer"] == "SIEMENS" and man.loc["R01", "shape_y"] == 512
    img, _, _ = load_nifti(out / man.loc["R01", "image_path"])
    ds = pydicom.dcmread(sorted((raw / "dicom" / "R01" / "export").glob("0*"))[0])
    np.testing.assert_array_equal(img[0], ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    # R16: the SEG's acquired slice k lands k rows lower on the orthogonal grid (by hand)
    tilted = np.zeros(SHAPE, np.uint8)
    tilted[1, 2:4, 3:6] = tilted[2, 3:5, 3:6] = tilted[3, 4:6, 3:6] = 1
    mask, _, _ = load_nifti(out / man.loc["R16", "mask_path"])
    np.testing.assert_array_equal(mask, tilted)
    sources = json.loads(Path(result.paths["sources"]).read_text())
    assert len(sources["R03"]["files"]) == SHAPE[0] and {Path(f).suffix for f in sources["R03"]["files"]} == {"", ".IMA"}


def test_tilt_policy_exclude_excludes_with_the_reason(realworld, tmp_path) -> None:
    raw, _, _, _ = realworld
    result = cohort.build_cohort(raw, tmp_path / "out", tilt_policy="exclude")
    d = result.exclusions.set_index("patient_id")
    assert d.loc["R05", "reason"] == "tilted_gantry" and "sheared" in d.loc["R05", "detail"]


def test_mask_label_selects_the_named_segment(realworld, tmp_path) -> None:
    raw, _, _, _ = realworld
    result = cohort.build_cohort(raw, tmp_path / "out", mask_label=2)
    assert "R07" in set(result.manifest["patient_id"])
    mask, _, _ = load_nifti(tmp_path / "out" / "masks" / "R07.nii.gz")
    np.testing.assert_array_equal(mask, _truth())


def test_the_tilted_and_label_map_annotations_score_as_predictions(realworld, tmp_path) -> None:
    """End to end: R16's SEG (tilted gantry) and R17's label-map SEG, given to amt evaluate as another
    model's DICOM predictions against the references the cohort made from them, pair by series through
    the cohort's sources.json and score Dice 1."""
    from amtlib.cli import main as amt_main

    raw, _, result, _ = realworld
    out = Path(result.paths["manifest"]).parent
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    shutil.copy(raw / "masks" / "seg_R16.dcm", pred / "a")
    shutil.copy(raw / "dicom" / "R17" / "ct" / "LABELMAP.dcm", pred / "b")
    for case in ("R16", "R17"):
        shutil.copy(out / "masks" / f"{case}.nii.gz", ref / f"{case}.nii.gz")
    assert amt_main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--sources", str(result.paths["sources"]),
                     "--out", str(tmp_path / "ev"), "--bootstrap", "20", "--no-progress"]) == 0
    per_case = pd.read_csv(tmp_path / "ev" / "per_case.csv")
    assert per_case["case_id"].tolist() == ["R16", "R17"] and per_case["dice"].tolist() == [1.0, 1.0]


def test_rewording_every_message_moves_no_patient(realworld, tmp_path, monkeypatch) -> None:
    """Issue 24 item 2: exclusion reasons (Fig 2's flow) come from codes on the exceptions, never from the
    messages. Every message of the series, mask and annotation readers is replaced by its reverse; the
    cohort built again from the same tree excludes the same patients for the same reasons."""
    from amtlib import masks
    from amtlib.dicom import annotations

    raw, _, result, _ = realworld
    tilt_excluded = cohort.build_cohort(raw, tmp_path / "tilt", tilt_policy="exclude")
    for cls in (dicomio.DicomSeriesError, masks.MaskError, annotations.AnnotationError):
        original = cls.__init__

        def reworded(self, message, *args, _original=original, **kw):
            _original(self, "reworded: " + str(message)[::-1], *args, **kw)

        monkeypatch.setattr(cls, "__init__", reworded)
    again = cohort.build_cohort(raw, tmp_path / "out")
    before = dict(zip(result.exclusions["patient_id"], result.exclusions["reason"]))
    after = dict(zip(again.exclusions["patient_id"], again.exclusions["reason"]))
    assert after == before and len(before) >= 6
    assert again.exclusions["detail"].str.contains("reworded: ").any()  # the rewording did reach them
    tilt_again = cohort.build_cohort(raw, tmp_path / "tilt_again", tilt_policy="exclude")
    reasons = dict(zip(tilt_excluded.exclusions["patient_id"], tilt_excluded.exclusions["reason"]))
    assert dict(zip(tilt_again.exclusions["patient_id"], tilt_again.exclusions["reason"])) == reasons
    assert {"tilted_gantry", "unreadable_files", "mask_geometry_mismatch", "invalid_reference_mask"} <= set(reasons.values())
    assert json.loads(Path(again.paths["cohort_flow"]).read_text()) == json.loads(Path(result.paths["cohort_flow"]).read_text())
