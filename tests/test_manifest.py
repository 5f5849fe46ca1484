"""Tests for amtlib.manifest: schema, row-level validation messages, the CLI, data_manifest/ files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from amtlib import manifest as mf
from amtlib.io import affine_from_spacing, save_nifti, sha256_file

from conftest import write_nifti_case  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _case(base: Path, cid: str, shape: tuple[int, int, int] = (3, 4, 5), spacing: tuple[float, float, float] = (2.0, 0.5, 0.7)) -> dict[str, str]:
    mask = np.zeros(shape, np.uint8)
    mask[1, 1:3, 1:3] = 1
    write_nifti_case(base, cid, np.arange(np.prod(shape), dtype=np.int16).reshape(shape), mask, spacing=spacing, origin=(10.0, -5.0, 3.0))
    return {
        "case_id": cid, "patient_id": cid, "institution": "CENTRAL", "study_uid": f"1.2.{cid}", "series_uid": f"1.3.{cid}",
        "image_path": f"images/{cid}.nii.gz", "mask_path": f"masks/{cid}.nii.gz", "anatomy_path": "",
        "histology": "thymoma", "age": "61", "sex": "F", "manufacturer": "SIEMENS", "model_name": "X", "kvp": "120",
        "slice_thickness_mm": "2", "spacing_z": str(spacing[0]), "spacing_y": str(spacing[1]), "spacing_x": str(spacing[2]),
        "shape_z": str(shape[0]), "shape_y": str(shape[1]), "shape_x": str(shape[2]),
        "image_sha256": sha256_file(base / "images" / f"{cid}.nii.gz"),
        "mask_sha256": sha256_file(base / "masks" / f"{cid}.nii.gz"), "split": "",
    }


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    rows = [_case(tmp_path, "A"), _case(tmp_path, "B")]
    pd.DataFrame(rows, columns=list(mf.COLUMN_NAMES)).to_csv(tmp_path / "manifest.csv", index=False)
    return tmp_path / "manifest.csv"


def _edit(path: Path, **changes: tuple[int, str]) -> None:
    df = mf.read_manifest(path)
    for col, (row, value) in changes.items():
        df.loc[row, col] = value
    df.to_csv(path, index=False)


def _messages(path: Path, **kw: object) -> list[str]:
    return [str(i) for i in mf.validate_manifest(path, **kw)]  # type: ignore[arg-type]


def test_valid_manifest_has_no_issues(good: Path) -> None:
    assert mf.validate_manifest(good) == []


def test_missing_file_is_reported_on_its_row(good: Path) -> None:
    (good.parent / "masks" / "B.nii.gz").unlink()
    msgs = _messages(good)
    assert len(msgs) == 1
    assert msgs[0].startswith("line 3 (case B): mask_path: file not found:") and msgs[0].endswith("masks/B.nii.gz")


def test_checksum_mismatch_is_reported(good: Path) -> None:
    _case(good.parent, "A", shape=(3, 4, 5))  # same content: still valid
    assert mf.validate_manifest(good) == []
    img = np.ones((3, 4, 5), np.int16)
    save_nifti(img, affine_from_spacing((2.0, 0.5, 0.7), (10.0, -5.0, 3.0)), good.parent / "images" / "A.nii.gz")
    msgs = _messages(good)
    assert len(msgs) == 1 and msgs[0].startswith("line 2 (case A): image_path:") and "SHA-256" in msgs[0]
    assert mf.validate_manifest(good, checksums=False) == []


def test_mask_shape_and_affine_mismatch(good: Path) -> None:
    base = good.parent
    save_nifti(np.zeros((3, 4, 6), np.uint8), affine_from_spacing((2.0, 0.5, 0.7), (10.0, -5.0, 3.0)), base / "masks" / "A.nii.gz")
    shifted = np.zeros((3, 4, 5), np.uint8)
    shifted[1, 1, 1] = 1  # not empty: only its affine is wrong
    save_nifti(shifted, affine_from_spacing((2.0, 0.5, 0.7), (10.0, -5.0, 4.0)), base / "masks" / "B.nii.gz")
    msgs = _messages(base / "manifest.csv", checksums=False)
    assert msgs == [
        "line 2 (case A): mask_path: geometry differs from the image (shape (z, y, x) (3, 4, 6) vs (3, 4, 5)); "
        "a mask must be drawn on exactly its image's voxel grid",
        "line 3 (case B): mask_path: geometry differs from the image (affine differs by up to 1 mm); "
        "a mask must be drawn on exactly its image's voxel grid",
    ]


def test_shape_and_spacing_columns_must_match_header(good: Path) -> None:
    _edit(good, shape_z=(0, "4"), spacing_x=(1, "0.8"))
    assert _messages(good) == ["line 2 (case A): shape_z: 4 != 3 read from the image header",
                               "line 3 (case B): spacing_x: 0.8 != 0.7 read from the image header"]


def test_non_binary_mask(good: Path) -> None:
    m = np.zeros((3, 4, 5), np.uint8)
    m[0, 0, 0] = 2
    save_nifti(m, affine_from_spacing((2.0, 0.5, 0.7), (10.0, -5.0, 3.0)), good.parent / "masks" / "A.nii.gz")
    msgs = _messages(good, checksums=False)
    assert msgs == ["line 2 (case A): mask_path: mask holds values other than 0/1: [2]"]


def test_duplicate_ids_name_both_lines(good: Path) -> None:
    _edit(good, case_id=(1, "A"), patient_id=(1, "A"))
    msgs = _messages(good, files=False)
    assert "line 2 (case A): case_id: duplicate value 'A' (also on line 3)" in msgs
    assert "line 3 (case A): case_id: duplicate value 'A' (also on line 2)" in msgs
    assert "line 3 (case A): patient_id: duplicate value 'A' (also on line 2)" in msgs


def test_bad_and_missing_columns_and_values(good: Path) -> None:
    df = mf.read_manifest(good).drop(columns=["mask_sha256"]).rename(columns={"age": "Age"})
    df.loc[0, "sex"] = "X"
    df.loc[1, "histology"] = "adenoma"
    df.loc[1, "kvp"] = "high"
    df.loc[0, "case_id"] = "A/1"
    df.to_csv(good, index=False)
    msgs = _messages(good, files=False)
    assert "file: Age: unknown column; allowed columns are " + ", ".join(mf.COLUMN_NAMES) in msgs
    assert "file: age: missing column" in msgs and "file: mask_sha256: missing column" in msgs
    assert "line 2 (case A/1): sex: 'X' not one of M, F" in msgs
    assert "line 3 (case B): histology: 'adenoma' not one of " + ", ".join(mf.HISTOLOGIES) in msgs
    assert "line 3 (case B): kvp: 'high' is not a number" in msgs
    assert any(m.startswith("line 2 (case A/1): case_id: 'A/1' is not file-name safe") for m in msgs)


def test_empty_required_cell_and_absolute_path(good: Path) -> None:
    _edit(good, institution=(0, ""), image_path=(1, "/abs/B.nii.gz"))
    msgs = _messages(good, files=False)
    assert msgs == ["line 2 (case A): institution: empty, but required",
                    "line 3 (case B): image_path: '/abs/B.nii.gz' must be relative to the manifest's folder"]


def test_input_stage_allows_missing_derived_columns(good: Path) -> None:
    df = mf.read_manifest(good)[list(mf.INPUT_COLUMNS)]
    df.to_csv(good, index=False)
    assert mf.validate_manifest(good, stage="input") == []
    assert "file: image_sha256: missing column" in _messages(good, files=False)


def test_assert_valid_raises_with_every_problem(good: Path) -> None:
    _edit(good, sex=(0, "X"), age=(1, "-3"))
    with pytest.raises(mf.ManifestError, match=r"2 problem\(s\)\n  line 2 \(case A\): sex: .*\n  line 3 \(case B\): age: '-3' is outside"):
        mf.assert_valid(good, files=False)


def test_unreadable_csv_and_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(mf.ManifestError, match="manifest not found"):
        mf.validate_manifest(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(mf.ManifestError, match="not a readable CSV"):
        mf.validate_manifest(tmp_path / "empty.csv")


def test_cli_exit_codes_and_messages(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert mf.cli_main(["validate", str(good)]) == 0
    assert "OK (2 cases)" in capsys.readouterr().out
    (good.parent / "images" / "A.nii.gz").unlink()
    assert mf.cli_main(["validate", str(good)]) == 1
    err = capsys.readouterr().err
    assert "line 2 (case A): image_path: file not found" in err and "INVALID (1 problem(s))" in err
    with pytest.raises(SystemExit):
        mf.cli_main(["validate"])


def test_schema_yaml_mirrors_the_code() -> None:
    doc = yaml.safe_load((REPO / "data_manifest" / "schema.yaml").read_text())
    got = [{k: c.get(k, [] if k == "allowed" else None) for k in ("name", "type", "required", "derived", "allowed", "description")}
           for c in doc["columns"]]
    assert got == mf.schema_records()


def test_template_is_a_valid_input_manifest() -> None:
    template = REPO / "data_manifest" / "template.csv"
    assert mf.read_manifest(template).columns.tolist() == list(mf.INPUT_COLUMNS)
    assert mf.validate_manifest(template, stage="input", files=False) == []


def test_typed_converts_numbers() -> None:
    df = pd.DataFrame({"age": ["61", ""], "kvp": ["120", "100.5"]})
    t = mf.typed(df)
    assert t["age"].tolist()[0] == 61 and pd.isna(t["age"].tolist()[1])
    assert t["kvp"].tolist() == [120.0, 100.5]


def test_classifier_columns_are_optional_and_checked_when_present(tmp_path) -> None:
    template = REPO / "data_manifest" / "template.csv"
    df = mf.read_manifest(template)
    without = df.drop(columns=list(mf.CLASSIFIER_COLUMNS))
    assert mf.validate_manifest(without, stage="input", files=False) == []
    bad = df.assign(who_subtype=["C", ""])
    issues = mf.validate_manifest(bad, stage="input", files=False)
    assert [i.column for i in issues] == ["who_subtype"]


def test_each_file_problem_is_one_issue_on_its_row_and_stops_that_files_later_checks(good: Path) -> None:
    """One problem per file, in the order the checks run (issue 24, item 6: the row checks as named steps):
    an all-zero mask, a 4D image, a file that is not NIfTI, and a truncated mask (with checksums off,
    the voxel-data read names it; with them on, the whole-file check does, once)."""
    import gzip

    base = good.parent
    save_nifti(np.zeros((3, 4, 5), np.uint8), affine_from_spacing((2.0, 0.5, 0.7), (10.0, -5.0, 3.0)), base / "masks" / "A.nii.gz")
    assert _messages(good, checksums=False) == [
        f"line 2 (case A): mask_path: {base / 'masks' / 'A.nii.gz'}: mask is empty (all zero); every included "
        "case needs its tumour outlined: check the file or exclude the case"]

    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((5, 4, 3, 2), np.int16), np.eye(4)), str(base / "images" / "B.nii.gz"))
    msgs = _messages(good, checksums=False)
    assert msgs[1] == "line 3 (case B): image_path: expected a 3D image, got shape (5, 4, 3, 2)" and len(msgs) == 2

    _case(base, "B")
    (base / "images" / "B.nii.gz").write_bytes(gzip.compress(b"not a nifti header" * 30))
    msgs = _messages(good, checksums=False)
    assert msgs[1] == f"line 3 (case B): image_path: {base / 'images' / 'B.nii.gz'}: not a readable NIfTI file (ImageFileError)"
    assert len(msgs) == 2  # no geometry or header-column issues for a row without a readable image

    _case(base, "A"), _case(base, "B")
    whole = gzip.decompress((base / "masks" / "B.nii.gz").read_bytes())
    (base / "masks" / "B.nii.gz").write_bytes(gzip.compress(whole[:-20]))
    msgs = _messages(good, checksums=False)
    assert len(msgs) == 1 and msgs[0].startswith(f"line 3 (case B): mask_path: {base / 'masks' / 'B.nii.gz'}: voxel data unreadable")
    msgs = _messages(good)
    assert len(msgs) == 2 and "SHA-256" in msgs[0] and "voxel data unreadable" not in msgs[1] and msgs[1].endswith("copy or export the file again")
