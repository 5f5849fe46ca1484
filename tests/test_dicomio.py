"""Tests for amtlib.dicom.dicomio: roundtrip, geometry against SimpleITK, a real scanner file, defect checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from amtlib.dicom import dicomio
from amtlib.io import load_nifti

META = {
    "PatientID": "P0001",
    "InstitutionName": "INST-007",
    "Manufacturer": "Siemens",
    "ManufacturerModelName": "SOMATOM Definition",
    "KVP": 120,
    "ConvolutionKernel": "B30f",
    "SeriesDescription": "CHEST 5mm",
    "StudyDate": "20150304",
}
SPACING = (2.5, 0.75, 0.8)
ORIGIN = (-12.5, -30.0, -100.0)


@pytest.fixture()
def volume() -> np.ndarray:
    return np.random.default_rng(3).integers(-1024, 1500, size=(6, 9, 7)).astype(np.float32)


@pytest.fixture()
def series(tmp_path: Path, volume: np.ndarray) -> Path:
    folder = tmp_path / "dicom" / "P0001" / "s1"
    dicomio.write_ct_series(volume, SPACING, folder, META, 11, origin=ORIGIN)
    return folder


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_roundtrip_identical_hu_and_geometry(series: Path, volume: np.ndarray) -> None:
    vol, geom = dicomio.read_series(series)
    assert vol.dtype == np.float32
    np.testing.assert_array_equal(vol, volume)
    assert geom["spacing"] == pytest.approx(SPACING)
    assert geom["origin"] == pytest.approx(ORIGIN)
    # hand-computed: x, y flip sign from LPS to RAS, z keeps it
    expected = np.array([[-0.8, 0, 0, 12.5], [0, -0.75, 0, 30.0], [0, 0, 2.5, -100.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(geom["affine"], expected, atol=1e-6)


def test_geometry_matches_simpleitk(series: Path, volume: np.ndarray) -> None:
    img = _sitk_series(series)
    _, geom = dicomio.read_series(series)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), volume.astype(np.int16))
    assert geom["origin"] == pytest.approx(img.GetOrigin())
    assert geom["spacing"][::-1] == pytest.approx(img.GetSpacing())
    assert geom["direction"] == pytest.approx(img.GetDirection())


def test_nifti_affine_places_voxels_where_dicom_does(series: Path, tmp_path: Path) -> None:
    out = tmp_path / "img.nii.gz"
    info = dicomio.series_to_nifti(series, out)
    img = nib.load(str(out))
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    sitk_img = _sitk_series(series)
    for ijk in [(0, 0, 0), (6, 8, 5), (3, 1, 2)]:
        lps = np.array(sitk_img.TransformIndexToPhysicalPoint(ijk))
        ras = img.affine @ np.array([*ijk, 1.0])
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-5)
    arr, spacing, _ = load_nifti(out)
    assert arr.shape == info["shape"] == (6, 9, 7)
    assert spacing == pytest.approx(SPACING)


@pytest.mark.parametrize("iop, step", [
    ([1, 0, 0, 0, 0, -1], [0, -2.5, 0]),       # coronal: normal = (1,0,0) x (0,0,-1) = (0,1,0), stored anterior-first
    ([0, 1, 0, 0, 0, -1], [2.5, 0, 0]),        # sagittal: normal = (0,1,0) x (0,0,-1) = (-1,0,0)
    ([0.8660254, 0.5, 0, 0, 0, -1], [0, 0, 0]),  # oblique: positions placed along the normal below
])
def test_non_axial_orientations_match_simpleitk(series: Path, iop, step) -> None:
    normal = np.cross(iop[:3], iop[3:])
    for k, path in enumerate(sorted(series.glob("*.dcm"))):
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = iop
        shift = np.array(step) * (5 - k) if any(step) else normal * 2.5 * k
        ds.ImagePositionPatient = [f"{v:.6f}" for v in np.array(ORIGIN) + shift]
        ds.save_as(path)
    vol, geom = dicomio.read_series(series)
    img = _sitk_series(series)
    np.testing.assert_array_equal(vol, sitk.GetArrayFromImage(img).astype(np.float32))
    assert geom["origin"] == pytest.approx(img.GetOrigin())
    assert geom["direction"] == pytest.approx(img.GetDirection())
    lps = np.array(img.TransformIndexToPhysicalPoint((2, 3, 4)))
    np.testing.assert_allclose((geom["affine"] @ [2, 3, 4, 1])[:3], lps * [-1, -1, 1], atol=1e-5)


def test_same_seed_same_bytes_other_seed_other_uids(tmp_path: Path, volume: np.ndarray) -> None:
    a = dicomio.write_ct_series(volume, SPACING, tmp_path / "a", META, 5)
    b = dicomio.write_ct_series(volume, SPACING, tmp_path / "b", META, 5)
    c = dicomio.write_ct_series(volume, SPACING, tmp_path / "c", META, 6)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    uid = lambda p: pydicom.dcmread(p).SeriesInstanceUID  # noqa: E731
    assert uid(a[0]) != uid(c[0])
    assert len({pydicom.dcmread(p).SOPInstanceUID for p in a}) == len(a)


def test_spliced_header_equals_what_pydicom_writes(series: Path) -> None:
    """The writer encodes the static header once and splices per-slice elements in (issue 13): every
    file must equal, byte for byte, what pydicom's own ``save_as`` writes for the same dataset, and
    the spliced elements must be the slice's own (position rising by the slice step)."""
    import io

    files = sorted(series.glob("*.dcm"))
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        assert buf.getvalue() == path.read_bytes(), path.name
        assert ds.InstanceNumber == k + 1 and ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert float(ds.ImagePositionPatient[2]) == pytest.approx(ORIGIN[2] + k * SPACING[0])
        assert float(ds.SliceLocation) == pytest.approx(ORIGIN[2] + k * SPACING[0])


def test_header_tags_and_scan_tree(series: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(next(series.glob("*.dcm")))
    assert ds.SOPClassUID == dicomio.CT_IMAGE_STORAGE
    assert (ds.RescaleSlope, ds.RescaleIntercept, ds.PixelRepresentation) == (1, -1024, 1)
    assert str(ds.PatientName) == "" and ds.PatientBirthDate == ""  # Type 2: present, empty
    (series / "notes.txt").write_text("not a dicom file")
    scan = dicomio.scan_tree(tmp_path / "dicom")
    table = scan.series
    assert len(table) == 1
    row = table.iloc[0]
    assert row["n_files"] == 6 and row["patient_id"] == "P0001" and row["institution"] == "INST-007"
    assert (row["manufacturer"], row["model_name"], row["convolution_kernel"]) == ("Siemens", "SOMATOM Definition", "B30f")
    assert (row["kvp"], row["slice_thickness_mm"], row["study_date"], row["modality"]) == (120.0, 2.5, "20150304", "CT")
    assert row["patient_folder"] == "P0001" and len(row["files"]) == 6 and row["folder"] == str(series.resolve())
    # a text file is skipped with a warning for its folder, never counted as a broken DICOM file
    assert scan.unreadable.empty and list(scan.skipped["path"]) == [str((series / "notes.txt").resolve())]
    assert list(scan.warnings["kind"]) == ["non_dicom_files"]


def test_ct_small_real_scanner_file(tmp_path: Path) -> None:
    src = pydicom.data.get_testdata_file("CT_small.dcm")
    folder = tmp_path / "ct_small"
    folder.mkdir()
    shutil.copy(src, folder / "CT_small.dcm")
    vol, geom = dicomio.read_series(folder)
    ds = pydicom.dcmread(src)
    expected = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(vol[0], expected)
    img = sitk.ReadImage(str(src))
    assert geom["origin"] == pytest.approx(img.GetOrigin())
    assert geom["spacing"][1:] == pytest.approx(img.GetSpacing()[1::-1])
    assert geom["spacing"][0] == pytest.approx(float(ds.SliceThickness))
    scan = dicomio.scan_tree(folder, patient_level=False)
    assert scan.series.iloc[0]["manufacturer"] == str(ds.Manufacturer) and scan.unreadable.empty
    assert dicomio.check_series(folder) == []


def test_missing_slice_is_reported(series: Path) -> None:
    sorted(series.glob("*.dcm"))[2].unlink()
    problems = dicomio.check_series(series)
    assert len(problems) == 1 and problems[0].startswith("missing slice: gap of 5.00 mm")
    with pytest.raises(dicomio.DicomSeriesError, match=str(series)):
        dicomio.read_series(series)


def test_duplicate_and_uneven_positions_are_reported(series: Path) -> None:
    files = sorted(series.glob("*.dcm"))
    ds = pydicom.dcmread(files[-1])
    ds.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], ORIGIN[2] + 5 * 2.5 + 0.6]
    ds.save_as(files[-1])
    assert [p.split(":")[0] for p in dicomio.check_series(series)] == ["uneven slice spacing"]
    shutil.copy(files[1], series / "copy.dcm")
    assert any(p.startswith("duplicate slice position") for p in dicomio.check_series(series))


def test_truncated_and_non_dicom_files_are_reported(series: Path) -> None:
    files = sorted(series.glob("*.dcm"))
    data = files[3].read_bytes()
    files[3].write_bytes(data[: len(data) - 40])
    (series / "IM99999.dcm").write_bytes(b"\x00" * 50)
    (series / "README.txt").write_text("exported by PACS")  # not DICOM, not named like DICOM: ignored
    problems = dicomio.check_series(series)
    assert any(p.startswith("file IM00004.dcm truncated: PixelData holds") for p in problems), problems
    # named like DICOM, content is not: a broken file of the series
    assert any(p.startswith("unreadable file IM99999.dcm: not parseable as DICOM") for p in problems), problems
    assert not any("README" in p for p in problems)


def test_mixed_pixel_spacing_is_reported(series: Path) -> None:
    path = sorted(series.glob("*.dcm"))[0]
    ds = pydicom.dcmread(path)
    ds.PixelSpacing = [0.9, 0.9]
    ds.save_as(path)
    assert [p.split(" [")[0] for p in dicomio.check_series(series)] == ["mixed PixelSpacing"]


def test_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(dicomio.DicomSeriesError, match="not found"):
        dicomio.check_series(tmp_path / "nope")
