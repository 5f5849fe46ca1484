"""Tests for amtlib.cohort: criteria, series rule, conversion, manifest, exclusions, Tables 1-2."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from amtlib import cohort
from amtlib.dicom import dicomio
from amtlib import manifest as mf
from amtlib.io import load_nifti, save_nifti

SHAPE = (5, 8, 8)
SPACING = (5.0, 0.8, 0.8)


def _write_series(raw: Path, pid: str, name: str, inst: str, seed: int, mask: bool = True,
                  date: str = "20200101", vendor: str = "CANON_MEDICAL_SYSTEMS") -> tuple[Path, str]:
    """One tiny CT series under raw/dicom/<pid>/<name> and its mask (a 2x2x2 cube) in raw/masks."""
    vol = np.full(SHAPE, -100.0) + np.arange(SHAPE[0])[:, None, None] * 10
    folder = raw / "dicom" / pid / name
    meta = {"PatientID": pid, "InstitutionName": inst, "Manufacturer": vendor, "KVP": 120, "StudyDate": date,
            "StudyInstanceUID": dicomio.deterministic_uid(pid, inst, "study")}
    dicomio.write_ct_series(vol, SPACING, folder, meta, seed)
    uid = str(pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).SeriesInstanceUID)
    if mask:
        _, geom = dicomio.read_series(folder)
        m = np.zeros(SHAPE, np.uint8)
        m[1:3, 3:5, 3:5] = 1
        save_nifti(m, geom["affine"], raw / "masks" / f"{uid}.nii.gz")
    return folder, uid


def _clinical_row(pid: str, inst: str = "CENTRAL", age: str = "60", sex: str = "F", hist: str = "thymoma",
                  confirmed: str = "True") -> dict[str, str]:
    return {"patient_id": pid, "institution": inst, "age": age, "sex": sex, "histology": hist,
            "pathology_confirmed": confirmed, "scan_date": "2020-01-01"}


def build_raw(raw: Path) -> dict[str, str]:
    """A raw cohort with one patient per criterion; returns patient -> expected reason ('' = included)."""
    rows, expected = [], {}

    def add(pid: str, reason: str, **kw: str) -> None:
        rows.append(_clinical_row(pid, **kw))
        expected[pid] = reason

    _write_series(raw, "P01", "s1", "CENTRAL", 1)
    add("P01", "")
    _write_series(raw, "P02", "central", "CENTRAL", 2, date="20200301")
    _write_series(raw, "P02", "referral", "INST-001", 3, date="20200401")
    add("P02", "", inst="INST-001")
    _write_series(raw, "P03", "s1", "CENTRAL", 4)
    add("P03", "age_below_minimum", age="17")
    _write_series(raw, "P04", "s1", "CENTRAL", 5)
    add("P04", "not_pathologically_confirmed", confirmed="False")
    _write_series(raw, "P05", "s1", "CENTRAL", 6)
    add("P05", "missing_clinical_data", sex="")
    folder, _ = _write_series(raw, "P06", "s1", "INST-002", 7)
    (folder / "IM00003.dcm").unlink()  # a missing middle slice
    add("P06", "incomplete_or_poor_quality_ct", inst="INST-002")
    (raw / "dicom" / "P07" / "s1").mkdir(parents=True)
    (raw / "dicom" / "P07" / "s1" / "IM00001.dcm").write_bytes(b"this is not DICOM at all")
    add("P07", "unreadable_files")
    folder, uid = _write_series(raw, "P08", "s1", "CENTRAL", 8)
    m, aff = np.zeros((4, 8, 8), np.uint8), nib.load(str(raw / "masks" / f"{uid}.nii.gz")).affine
    m[1, 2, 2] = 1
    save_nifti(m, aff, raw / "masks" / f"{uid}.nii.gz")  # mask with one slice fewer than its image
    add("P08", "mask_geometry_mismatch")
    _write_series(raw, "P09", "central", "CENTRAL", 9)
    folder, _ = _write_series(raw, "P09", "referral", "INST-003", 10)
    shutil.copyfile(folder / "IM00002.dcm", folder / "IM00009.dcm")  # duplicate slice in the referral series
    add("P09", "", inst="INST-003")
    _write_series(raw, "P10", "s1", "CENTRAL", 11, mask=False)
    add("P10", "no_reference_mask")
    add("P11", "no_ct_series")
    folder, _ = _write_series(raw, "P12", "s1", "INST-004", 12)
    ds = pydicom.dcmread(folder / "IM00004.dcm")
    ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], float(ds.ImagePositionPatient[2]) + 1.5]
    ds.save_as(folder / "IM00004.dcm")  # uneven slice spacing
    add("P12", "incomplete_or_poor_quality_ct", inst="INST-004")
    folder, _ = _write_series(raw, "P13", "s1", "INST-005", 13)
    (folder / "IM00005.dcm").write_bytes((folder / "IM00005.dcm").read_bytes()[:200])  # truncated file
    add("P13", "unreadable_files", inst="INST-005")
    _write_series(raw, "P14", "s1", "INST-006", 14, vendor="SIEMENS")
    add("P14", "", inst="INST-006", age="18", sex="M", hist="lymphoma")
    pd.DataFrame(rows).to_csv(raw / "clinical.csv", index=False)
    return expected


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], cohort.CohortResult, str, str]:
    base = tmp_path_factory.mktemp("cohort")
    raw = base / "raw"
    expected = build_raw(raw)
    before = tree_hash(raw)
    result = cohort.build_cohort(raw, base / "01_cohort", min_age=18)
    return base, expected, result, before, tree_hash(raw)


def test_each_patient_gets_the_expected_inclusion_or_reason(built) -> None:
    _, expected, result, _, _ = built
    got = dict(zip(result.exclusions["patient_id"], result.exclusions["reason"]))
    got.update({p: "" for p in result.manifest["patient_id"]})
    assert got == expected


def test_exclusion_details_name_the_problem_file(built) -> None:
    _, _, result, _, _ = built
    detail = dict(zip(result.exclusions["patient_id"], result.exclusions["detail"]))
    assert "missing slice" in detail["P06"]
    assert "uneven slice spacing" in detail["P12"]
    assert "IM00005.dcm" in detail["P13"]
    assert "mask shape (i, j, k) (8, 8, 4) vs image (x, y, z) (8, 8, 5)" in detail["P08"] and "does not coincide" in detail["P08"]
    assert detail["P05"] == "empty sex"
    assert "age 17 < 18" == detail["P03"]


def test_input_tree_is_not_modified(built) -> None:
    _, _, _, before, after = built
    assert before == after


def test_series_rule_prefers_referral_original_and_falls_back(built) -> None:
    _, _, result, _, _ = built
    m = result.manifest.set_index("patient_id")
    assert m.loc["P02", "institution"] == "INST-001"  # referral original beats the central series
    assert m.loc["P09", "institution"] == "CENTRAL"  # broken referral series -> central series
    assert m.loc["P01", "institution"] == "CENTRAL"
    assert result.flow["series_selected"] == {"referral_original": 2, "central": 2}


def test_rank_series_orders_by_kind_date_files_uid() -> None:
    s = pd.DataFrame({
        "series_uid": ["c-late", "r-b", "c-early", "r-a", "r-few"],
        "institution": ["CENTRAL", "INST-1", "central", "INST-2", "INST-1"],
        "study_date": ["20200301", "20200101", "20200101", "20200101", "20200101"],
        "n_files": [50, 40, 40, 40, 10],
    })
    ranked = cohort.rank_series(s)
    assert ranked["series_uid"].tolist() == ["r-a", "r-b", "r-few", "c-early", "c-late"]
    assert ranked["kind"].tolist() == ["referral_original"] * 3 + ["central"] * 2


def test_manifest_validates_and_images_round_trip(built) -> None:
    base, _, result, _, _ = built
    out = base / "01_cohort"
    assert mf.validate_manifest(out / "manifest.csv") == []
    on_disk = mf.read_manifest(out / "manifest.csv")
    assert on_disk.columns.tolist() == list(mf.COLUMN_NAMES)
    assert sorted(on_disk["case_id"]) == ["P01", "P02", "P09", "P14"]
    img, spacing, _ = load_nifti(out / "images" / "P14.nii.gz")
    mask, _, _ = load_nifti(out / "masks" / "P14.nii.gz")
    assert img.shape == SHAPE and spacing == pytest.approx(SPACING)
    assert img.dtype == np.int16 and img[2, 0, 0] == -80  # -100 HU + 10 HU per slice
    assert mask.dtype == np.uint8 and int(mask.sum()) == 8
    row = on_disk.set_index("case_id").loc["P14"]
    assert (row["manufacturer"], row["sex"], row["age"], row["histology"]) == ("SIEMENS", "M", "18", "lymphoma")


def test_cohort_flow_counts(built) -> None:
    base, expected, result, _, _ = built
    flow = json.loads((base / "01_cohort" / "cohort_flow.json").read_text())
    assert flow["screened"] == len(expected) == 14
    assert flow["included"] == 4 and flow["excluded"] == 10
    assert flow["excluded_by_reason"]["incomplete_or_poor_quality_ct"] == 2
    assert flow["excluded_by_reason"]["unreadable_files"] == 2
    assert flow["included_institutions"] == 3
    assert flow["institutions"] == {"CENTRAL": 2, "INST-001": 1, "INST-006": 1}
    excl = pd.read_csv(base / "01_cohort" / "exclusions.csv")
    assert excl.columns.tolist() == ["patient_id", "reason", "detail"] and len(excl) == 10


def test_parallel_conversion_gives_identical_manifest(built, tmp_path: Path) -> None:
    base, _, result, _, _ = built
    par = cohort.build_cohort(base / "raw", tmp_path / "out", workers=2)
    pd.testing.assert_frame_equal(par.manifest, result.manifest)


def test_clinical_reason_edge_cases() -> None:
    assert cohort.clinical_reason(pd.Series(_clinical_row("A", age="18"))) is None
    assert cohort.clinical_reason(pd.Series(_clinical_row("A", age="17.9")))[0] == "age_below_minimum"
    assert cohort.clinical_reason(pd.Series(_clinical_row("A", age="abc")))[0] == "missing_clinical_data"
    assert cohort.clinical_reason(pd.Series(_clinical_row("A", hist="adenoma")))[0] == "missing_clinical_data"
    assert cohort.clinical_reason(pd.Series(_clinical_row("A", confirmed="maybe")))[0] == "missing_clinical_data"
    assert cohort.clinical_reason(pd.Series(_clinical_row("A", age="", confirmed="False")))[0] == "missing_clinical_data"
    assert cohort.clinical_reason(pd.Series(_clinical_row("A", age="16")), min_age=16) is None


def test_duplicate_patient_ids_in_clinical_table_are_named(tmp_path: Path) -> None:
    pd.DataFrame([_clinical_row("P1"), _clinical_row("P2"), _clinical_row("P1")]).to_csv(tmp_path / "clinical.csv", index=False)
    with pytest.raises(ValueError, match=r"clinical.csv: duplicate patient_id \('P1' on lines \[2, 4\]\)"):
        cohort.read_clinical(tmp_path / "clinical.csv")


def test_import_manifest_links_user_nifti_and_fills_derived_columns(built, tmp_path: Path) -> None:
    base, _, _, _, _ = built
    user = tmp_path / "mydata"
    (user / "ct").mkdir(parents=True)
    for name in ("P01", "P14"):
        shutil.copyfile(base / "01_cohort" / "images" / f"{name}.nii.gz", user / "ct" / f"{name}_img.nii.gz")
        shutil.copyfile(base / "01_cohort" / "masks" / f"{name}.nii.gz", user / "ct" / f"{name}_seg.nii.gz")
    rows = [{"case_id": f"C{name}", "patient_id": name, "institution": inst, "image_path": f"ct/{name}_img.nii.gz",
             "mask_path": f"ct/{name}_seg.nii.gz", "anatomy_path": "", "histology": "thymoma", "age": "50", "sex": "F",
             "manufacturer": "", "model_name": "", "kvp": "", "slice_thickness_mm": ""}
            for name, inst in (("P01", "H1"), ("P14", "H2"))]
    pd.DataFrame(rows).to_csv(user / "cohort.csv", index=False)
    before = tree_hash(user)
    # an earlier run of the step on another cohort left a case behind: it must not survive
    for folder in ("images", "masks"):
        (tmp_path / "run01" / folder).mkdir(parents=True)
        (tmp_path / "run01" / folder / "OLD.nii.gz").write_bytes(b"stale")
    (tmp_path / "run01" / "images" / "notes.txt").write_text("not a case")
    res = cohort.import_manifest(user / "cohort.csv", tmp_path / "run01")
    assert tree_hash(user) == before
    assert sorted(p.name for p in (tmp_path / "run01" / "images").iterdir()) == ["CP01.nii.gz", "CP14.nii.gz", "notes.txt"]
    assert sorted(p.name for p in (tmp_path / "run01" / "masks").iterdir()) == ["CP01.nii.gz", "CP14.nii.gz"]
    assert mf.validate_manifest(tmp_path / "run01" / "manifest.csv") == []
    assert res.manifest["image_path"].tolist() == ["images/CP01.nii.gz", "images/CP14.nii.gz"]
    assert res.manifest[["shape_z", "shape_y", "shape_x"]].iloc[0].tolist() == list(SHAPE)
    assert res.flow["screened"] == res.flow["included"] == 2 and res.flow["excluded"] == 0


def test_import_manifest_rejects_bad_user_manifest(tmp_path: Path) -> None:
    pd.DataFrame([{"case_id": "A", "patient_id": "A", "institution": "H", "image_path": "missing.nii.gz",
                   "mask_path": "m.nii.gz", "histology": "thymoma", "age": "50", "sex": "F"}]).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(mf.ManifestError, match=r"line 2 \(case A\): image_path: file not found"):
        cohort.import_manifest(tmp_path / "c.csv", tmp_path / "out")


def _cases() -> pd.DataFrame:
    return pd.DataFrame({
        "split": ["train"] * 4 + ["tuning"] * 2 + ["external_test"] * 4,
        "age": ["40", "50", "60", "70", "30", "90", "21", "85", "58", "58"],
        "sex": ["M", "F", "F", "F", "M", "M", "F", "F", "M", "F"],
        "histology": ["thymoma", "thymoma", "thymic_carcinoma", "lymphoma", "thymoma", "thymic_cyst",
                      "carcinoid", "thymoma", "thymoma", "thymic_carcinoma"],
        "manufacturer": [""] * 6 + ["TOSHIBA", "Canon Medical Systems", "GE MEDICAL SYSTEMS", "Philips"],
    })


def test_table1_counts_percentages_and_paper_columns() -> None:
    t = cohort.table1(_cases()).set_index(["variable", "level"])
    assert t.loc[("age", "median (range)"), "training"] == "55.0 (40–70)"
    assert t.loc[("age", "median (range)"), "external_testing"] == "58.0 (21–85)"
    assert t.loc[("age", "median (range)"), "tuning (paper)"] == "60.5 (23–87)"
    assert t.loc[("histology", "thymoma"), "training"] == "2 (50.0%)"
    assert t.loc[("histology", "thymoma"), "training (paper)"] == "291 (60.0%)"
    assert t.loc[("histology", "thymic_carcinoma"), "external_testing (paper)"] == "71 (43.3%)"
    assert t.loc[("histology", "carcinoid"), "external_testing"] == "1 (25.0%)"
    assert t.loc[("sex", "M"), "tuning"] == "2 (100.0%)"


def test_table2_maps_vendor_names() -> None:
    t = cohort.table2(_cases()).set_index("key")
    assert t.loc["canon_medical_systems", "n"] == 2  # Toshiba is counted as Canon
    assert t.loc["ge_healthcare", "n"] == 1 and t.loc["siemens", "n"] == 0
    assert t.loc["canon_medical_systems", "external_testing (paper)"] == "80 (48.8%)"
    assert cohort.vendor_key("Hitachi Medical Corporation") == "fujifilm"
    assert cohort.vendor_key("GE") == "ge_healthcare" and cohort.vendor_key("Acme") == "acme"


#: Generator's intended exclusion -> the reason the cohort step must find (its audit column, tests only).
INTENDED_TO_REASON = {"age_under_18": {"age_below_minimum"}, "missing_clinical_data": {"missing_clinical_data"},
                      "no_pathology": {"not_pathologically_confirmed"}, "poor_image_quality": {"unreadable_files"},
                      # with 4-slice placeholder images, dropping the top slices leaves a consistent but
                      # shorter volume that only the mask's geometry reveals
                      "incomplete_series": {"incomplete_or_poor_quality_ct", "mask_geometry_mismatch"}}


def test_synthetic_cohort_exclusions_match_the_generators_intent(tmp_path: Path) -> None:
    phantom = pytest.importorskip("amtlib.phantom")
    raw = tmp_path / "raw"
    phantom.synthesize_cohort(raw, scale=0.05, seed=1, backgrounds="procedural", images=False)
    before = tree_hash(raw)
    result = cohort.build_cohort(raw, tmp_path / "01_cohort")
    assert tree_hash(raw) == before
    clinical = pd.read_csv(raw / "clinical.csv", dtype=str, keep_default_na=False).set_index("patient_id")
    assert set(result.manifest["patient_id"]) == set(clinical.index[clinical["intended_exclusion"] == ""])
    for pid, reason in zip(result.exclusions["patient_id"], result.exclusions["reason"]):
        assert reason in INTENDED_TO_REASON[clinical.loc[pid, "intended_exclusion"]], (pid, reason)
    # the rule picks the referral original whenever the generator wrote one (never its central rescan)
    synthesis = pd.read_csv(raw / "synthesis.csv", dtype=str)
    expected = synthesis[synthesis["expected_selected"] == "True"].set_index("patient_id")["series_uid"]
    chosen = result.manifest.set_index("patient_id")["series_uid"]
    assert (chosen == expected.loc[chosen.index]).all()
    assert mf.validate_manifest(tmp_path / "01_cohort" / "manifest.csv") == []


def test_a_series_uid_never_names_a_file_outside_masks(tmp_path: Path) -> None:
    """Issue 23, item 2: a SeriesInstanceUID ``../../planted`` must not make the cohort read
    ``raw/masks/../../planted.nii.gz`` as the case's reference mask (it was read, exit 0, no warning)."""
    raw = tmp_path / "raw"
    folder, _ = _write_series(raw, "P01", "s1", "CENTRAL", 1, mask=False)
    hostile = "../../planted"
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = hostile
        ds.save_as(f)
    _, geometry = dicomio.read_series(folder)
    m = np.zeros(SHAPE, np.uint8)
    m[1:3, 3:5, 3:5] = 1
    (raw / "masks").mkdir(parents=True)
    planted = save_nifti(m, geometry["affine"], (raw / "masks" / f"{hostile}.nii.gz").resolve())
    assert planted.parent == tmp_path and planted.is_file()  # outside raw/
    pd.DataFrame([_clinical_row("P01")]).to_csv(raw / "clinical.csv", index=False)
    result = cohort.build_cohort(raw, tmp_path / "01_cohort", min_age=18)
    assert result.manifest.empty
    assert result.exclusions.set_index("patient_id").loc["P01", "reason"] == "no_reference_mask"
    planted.unlink()


def test_a_patient_with_only_non_ct_objects_is_excluded_naming_class_and_modality(tmp_path: Path) -> None:
    """Issue 23, item 18: the exclusion named only "not a CT image" (the SOP class was cut off)."""
    raw = tmp_path / "raw"
    folder, _ = _write_series(raw, "P01", "s1", "CENTRAL", 1, mask=False)
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.SOPClassUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.4", "MR"
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.save_as(f)
    pd.DataFrame([_clinical_row("P01")]).to_csv(raw / "clinical.csv", index=False)
    result = cohort.build_cohort(raw, tmp_path / "01_cohort", min_age=18)
    row = result.exclusions.set_index("patient_id").loc["P01"]
    assert row["reason"] == "no_ct_series"
    assert "not a CT image (MR Image Storage), modality MR" in row["detail"], row["detail"]


def test_a_single_slice_series_is_excluded_with_its_own_reason_and_never_given_a_spacing(tmp_path: Path) -> None:
    """Issue 23, item 17: a single CT slice became a 1-slice volume with an invented 1.0 mm spacing."""
    raw = tmp_path / "raw"
    folder = raw / "dicom" / "P01" / "one"
    dicomio.write_ct_series(np.zeros((1, 8, 8), np.float32), SPACING, folder, {"PatientID": "P01", "InstitutionName": "CENTRAL"}, 7)
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        del ds.SliceThickness
        ds.save_as(f)
    _write_series(raw, "P02", "one", "CENTRAL", 8, mask=False)
    single = raw / "dicom" / "P02" / "single"
    dicomio.write_ct_series(np.zeros((1, 8, 8), np.float32), SPACING, single, {"PatientID": "P02", "InstitutionName": "INST-001"}, 9)
    pd.DataFrame([_clinical_row("P01"), _clinical_row("P02")]).to_csv(raw / "clinical.csv", index=False)
    result = cohort.build_cohort(raw, tmp_path / "01_cohort", min_age=18)
    reasons = result.exclusions.set_index("patient_id")["reason"].to_dict()
    assert reasons["P01"] == "single_slice_series"
    assert "one slice of 8x8 pixels" in result.exclusions.set_index("patient_id").loc["P01", "detail"]
    # P02's preferred series (the referral's) is the single slice; it falls back to the central series, which has no
    # mask here: excluded with the preferred series' reason, as the series rule says
    assert reasons["P02"] == "single_slice_series" and result.manifest.empty
    assert result.flow["excluded_by_reason"]["single_slice_series"] >= 1  # Fig 2 counts it under its own reason


def test_a_long_patient_folder_or_series_uid_excludes_that_patient_not_the_cohort(tmp_path: Path) -> None:
    """Issue 23, item 13: a 245-character patient folder or a 1,000-character SeriesInstanceUID failed the
    whole cohort step (File name too long) instead of excluding that patient."""
    raw = tmp_path / "raw"
    long_pid = "P" * 245
    _write_series(raw, long_pid, "s1", "CENTRAL", 1, mask=False)
    folder, _ = _write_series(raw, "P02", "s1", "CENTRAL", 2, mask=False)
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = "1." + "2" * 998
        ds.save_as(f)
    _write_series(raw, "P03", "s1", "CENTRAL", 3)
    pd.DataFrame([_clinical_row(long_pid), _clinical_row("P02"), _clinical_row("P03")]).to_csv(raw / "clinical.csv", index=False)
    result = cohort.build_cohort(raw, tmp_path / "01_cohort", min_age=18)
    reasons = result.exclusions.set_index("patient_id")["reason"].to_dict()
    assert reasons == {long_pid: "unusable_patient_id", "P02": "no_reference_mask"}
    assert result.manifest["case_id"].tolist() == ["P03"]
