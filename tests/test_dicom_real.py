"""Real-world DICOM in (issue: any scanner export, masks from any common tool).

Real scanner files come from pydicom (its own test files, installed with it) and pydicom-data (fetched
by package name from PyPI and cached, like the demo backgrounds; never committed). The tests replicate
single real slices into series, and cross-check HU and geometry with SimpleITK (GDCM), an independent
reader.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from amtlib import masks
from amtlib.dicom import dicomio
from amtlib.io import save_nifti
from dicom_fixtures import tilted_ball_series


def replicate(src: str | Path, folder: Path, n: int = 5, step_mm: float = 2.5, seed: str = "r",
              shear_mm: tuple[float, float] = (0.0, 0.0), name: str = "IM{k:04d}.dcm", **tags: object) -> list[Path]:
    """Copy one real slice into an ``n``-slice series along its normal (pixel data kept as stored,
    compressed or not); ``shear_mm`` moves slice k by k x shear in (x, y): a tilted gantry."""
    ds = pydicom.dcmread(str(src))
    folder.mkdir(parents=True, exist_ok=True)
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    origin = np.array([float(v) for v in ds.ImagePositionPatient])
    series_uid = dicomio.deterministic_uid(seed, "series")
    paths = []
    for k in range(n):
        d = copy.deepcopy(ds)
        uid = dicomio.deterministic_uid(seed, "sop", k)
        d.SOPInstanceUID = uid
        d.file_meta.MediaStorageSOPInstanceUID = uid
        d.SeriesInstanceUID = series_uid
        d.StudyInstanceUID = dicomio.deterministic_uid(seed, "study")
        pos = origin + k * step_mm * normal + k * np.array([shear_mm[0], shear_mm[1], 0.0])
        d.ImagePositionPatient = [f"{v:.4f}" for v in pos]
        d.InstanceNumber = k + 1
        for key, value in tags.items():
            setattr(d, key, value)
        path = folder / name.format(k=k + 1)
        d.save_as(str(path))
        paths.append(path)
    return paths


def sitk_read(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


# ------------------------------------------------------------------------------ decoding


@pytest.mark.parametrize("compressed, original", [
    ("scanner_693_j2kr", "scanner_693_uncr"),                        # CT, JPEG 2000 lossless
    ("scanner_emri_small_jpeg_ls_lossless", "scanner_emri_small"),   # JPEG-LS lossless, multi-frame
    ("scanner_emri_small_rle", "scanner_emri_small"),                # RLE lossless
    ("scanner_emri_small_jpeg_2k_lossless", "scanner_emri_small"),   # JPEG 2000 lossless
])
def test_lossless_syntaxes_decode_to_the_uncompressed_original(scanner, compressed, original) -> None:
    a = dicomio._decode(scanner[compressed], pydicom.dcmread(scanner[compressed]))
    b = dicomio._decode(scanner[original], pydicom.dcmread(scanner[original]))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name, syntax", [
    ("JPGExtended.dcm", "1.2.840.10008.1.2.4.51"),       # JPEG extended (process 2 and 4), 12 bit
    ("JPEG2000.dcm", "1.2.840.10008.1.2.4.91"),          # JPEG 2000 (lossy allowed)
    ("JPEGLSNearLossless_16.dcm", "1.2.840.10008.1.2.4.81"),
    ("MR_small_RLE.dcm", "1.2.840.10008.1.2.5"),
    ("image_dfl.dcm", "1.2.840.10008.1.2.1.99"),         # deflated explicit VR little endian
])
def test_other_syntaxes_decode(name, syntax) -> None:
    path = Path(get_testdata_file(name))
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == syntax
    arr = dicomio._decode(path, ds)
    assert arr.shape == (int(ds.get("NumberOfFrames", 1) or 1), ds.Rows, ds.Columns) and arr.std() > 0


def test_jpeg_lossless_sv1_decodes(scanner) -> None:
    """Process 14 SV1, the commonest PACS compression (an NM and the Siemens CT below)."""
    ds = pydicom.dcmread(scanner["scanner_jpeg_ll"])
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    assert dicomio._decode(scanner["scanner_jpeg_ll"], ds).std() > 0


def test_lossy_jpeg2000_ct_is_close_to_its_decompressed_twin(scanner) -> None:
    lossy = Path(get_testdata_file("693_J2KI.dcm"))
    a = dicomio._decode(lossy, pydicom.dcmread(lossy)).astype(float)
    b = dicomio._decode(scanner["scanner_693_unci"], pydicom.dcmread(scanner["scanner_693_unci"])).astype(float)
    assert a.shape == b.shape == (1, 512, 512)
    assert np.abs(a - b).mean() < 2.0 and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999


def test_undecodable_syntax_names_the_syntax_and_the_plugin(monkeypatch, scanner) -> None:
    """Without the JPEG plugins the reason names the syntax and the packages, never 'truncated'."""
    path = scanner["scanner_bad_sequence"]
    ds = pydicom.dcmread(path)

    def no_plugins(*args, **kwargs):
        raise RuntimeError("Unable to decompress 'JPEG Lossless, Non-Hierarchical, First-Order Prediction' pixel data "
                           "because all plugins are missing dependencies: pylibjpeg - requires pylibjpeg-libjpeg")

    monkeypatch.setattr(type(ds), "pixel_array", property(no_plugins))
    with pytest.raises(ValueError) as err:
        dicomio._decode(Path(path), ds)
    text = str(err.value)
    assert "JPEG Lossless" in text and "1.2.840.10008.1.2.4.70" in text and "pylibjpeg-libjpeg" in text
    assert "truncated" not in text


# ------------------------------------------------------------------------------ real CT series


@pytest.mark.parametrize("source", ["CT_small.dcm", "scanner_bad_sequence", "scanner_693_j2kr", "scanner_693_uncr"])
def test_real_ct_series_match_simpleitk(scanner, tmp_path, source) -> None:
    """GE explicit VR, Siemens JPEG Lossless SV1, JPEG 2000 lossless: HU and geometry as GDCM reads them."""
    src = get_testdata_file(source) if source.endswith(".dcm") else scanner[source]
    folder = tmp_path / "s"
    replicate(src, folder, n=4, step_mm=2.5)
    vol, geom = dicomio.read_series(folder)
    img = sitk_read(folder)
    np.testing.assert_array_equal(vol, sitk.GetArrayFromImage(img).astype(np.float32))
    assert geom["origin"] == pytest.approx(img.GetOrigin(), abs=1e-3)
    assert geom["spacing"] == pytest.approx(img.GetSpacing()[::-1], abs=1e-4)
    assert geom["direction"] == pytest.approx(img.GetDirection(), abs=1e-6)
    assert len(geom["sop_uids"]) == 4 and geom["tilt_deg"] == 0.0


def test_tilted_orientation_reads_with_the_oblique_affine(tmp_path) -> None:
    """Siemens-style tilt (a real file, GantryDetectorTilt -22): the tilt is in ImageOrientationPatient
    and positions move along the normal, so the volume is oblique, not sheared."""
    src = get_testdata_file("J2K_pixelrep_mismatch.dcm")
    assert float(pydicom.dcmread(src).GantryDetectorTilt) == -22.0
    folder = tmp_path / "s"
    replicate(src, folder, n=3, step_mm=5.0)
    vol, geom = dicomio.read_series(folder, tilt_policy="exclude")  # no shear: nothing to exclude
    img = sitk_read(folder)
    assert geom["tilt_deg"] == 0.0
    assert geom["direction"] == pytest.approx(img.GetDirection(), abs=1e-4)
    assert geom["origin"] == pytest.approx(img.GetOrigin(), abs=1e-3)


def test_tilted_gantry_is_resampled_to_where_the_tissue_is(tmp_path) -> None:
    shear = (np.tan(np.radians(15.0)) * 2.5, 0.0)  # 15 degrees: 0.67 mm per 2.5 mm slice, in y
    centre, _ = tilted_ball_series(tmp_path / "s", shear, "tilt")
    vol, geom = dicomio.read_series(tmp_path / "s")
    assert geom["tilt_deg"] == pytest.approx(15.0, abs=0.05)
    idx = np.argwhere(vol > 0).mean(axis=0)  # (z, y, x) centroid of the ball after resampling
    lps = (np.linalg.inv(dicomio._LPS_TO_RAS) @ geom["affine"] @ np.r_[idx[::-1], 1.0])[:3]
    assert np.linalg.norm(lps - centre) < 0.35  # within a third of a voxel of where it was drawn
    with pytest.raises(dicomio.DicomSeriesError, match=r"tilted_gantry: slice positions are sheared 15\.0\d degrees .*GantryDetectorTilt 15"):
        dicomio.read_series(tmp_path / "s", tilt_policy="exclude")


def test_enhanced_ct_multiframe_reads_like_the_single_frame_series(tmp_path) -> None:
    vol = np.random.default_rng(1).integers(-1000, 1000, size=(4, 6, 5)).astype(np.float32)
    single = dicomio.write_ct_series(vol, (3.0, 0.7, 0.9), tmp_path / "single", {"PatientID": "E"}, 5, origin=(1.0, 2.0, 3.0))
    ref_vol, ref_geom = dicomio.read_series(tmp_path / "single")
    slices = [pydicom.dcmread(p) for p in single]
    ds = copy.deepcopy(slices[0])
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
               "RescaleIntercept", "RescaleSlope", "RescaleType", "InstanceNumber", "SliceLocation"):
        if kw in ds:
            delattr(ds, kw)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.NumberOfFrames = len(slices)
    shared = pydicom.Dataset()
    meas, orient, rescale = pydicom.Dataset(), pydicom.Dataset(), pydicom.Dataset()
    meas.PixelSpacing, meas.SliceThickness = slices[0].PixelSpacing, 3.0
    orient.ImageOrientationPatient = slices[0].ImageOrientationPatient
    rescale.RescaleIntercept, rescale.RescaleSlope, rescale.RescaleType = -1024, 1, "HU"
    shared.PixelMeasuresSequence = [meas]
    shared.PlaneOrientationSequence = [orient]
    shared.PixelValueTransformationSequence = [rescale]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for s in reversed(slices):  # frames stored top-down: the reader must sort by position
        item, pos = pydicom.Dataset(), pydicom.Dataset()
        pos.ImagePositionPatient = s.ImagePositionPatient
        item.PlanePositionSequence = [pos]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = b"".join(s.PixelData for s in reversed(slices))
    (tmp_path / "multi").mkdir()
    ds.save_as(str(tmp_path / "multi" / "enhanced"), enforce_file_format=True)  # no suffix: read by content
    got, geom = dicomio.read_series(tmp_path / "multi")
    np.testing.assert_array_equal(got, ref_vol)
    np.testing.assert_allclose(geom["affine"], ref_geom["affine"], atol=1e-6)
    assert geom["sop_uids"][0].endswith("#4") and len(set(geom["sop_uids"])) == 4


def test_real_enhanced_ct_frames_are_placed_by_functional_groups(scanner) -> None:
    path = scanner["scanner_ect_supplemental"]
    ds = pydicom.dcmread(path)
    assert dicomio.image_candidate_reason(ds).startswith("derived or secondary image (ImageType DERIVED")
    vol, geom = dicomio.read_series([path], accept_derived=True)
    frames = ds.PerFrameFunctionalGroupsSequence
    iop = np.array([float(v) for v in ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])  # row -x, column +y: the normal points to the feet (-z)
    pos = sorted((np.array([float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient]) for f in frames), key=lambda p: p @ normal)
    assert vol.shape == (2, 512, 512) and normal @ [0, 0, 1] == -1
    assert geom["origin"] == pytest.approx(tuple(pos[0])) and geom["spacing"][0] == pytest.approx(10.0)
    groups = ds.SharedFunctionalGroupsSequence[0]
    item = (groups.get("PixelValueTransformationSequence") or frames[1].PixelValueTransformationSequence)[0]
    expected = ds.pixel_array[1] * float(item.RescaleSlope) + float(item.RescaleIntercept)
    np.testing.assert_array_equal(vol[0], expected)  # z = 0 is the frame first along the normal, in HU


# ------------------------------------------------------------------------------ what is a candidate


def test_candidate_rule() -> None:
    ds = pydicom.Dataset()
    ds.SOPClassUID = dicomio.CT_IMAGE_STORAGE
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert dicomio.image_candidate_reason(ds) == ""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    assert dicomio.image_candidate_reason(ds, accept_derived=True).startswith("localizer/scout")
    ds.ImageType = ["DERIVED", "SECONDARY", "REFORMATTED"]
    assert dicomio.image_candidate_reason(ds).startswith("derived or secondary")
    assert dicomio.image_candidate_reason(ds, accept_derived=True) == ""
    del ds.ImageType
    assert dicomio.image_candidate_reason(ds) == ""
    for uid, name in (("1.2.840.10008.5.1.4.1.1.66.4", "Segmentation Storage"), ("1.2.840.10008.5.1.4.1.1.481.3", "RT Structure Set Storage"),
                      ("1.2.840.10008.5.1.4.1.1.88.67", "X-Ray Radiation Dose SR Storage"), ("1.2.840.10008.5.1.4.1.1.7", "Secondary Capture Image Storage"),
                      ("1.2.840.10008.5.1.4.1.1.11.1", "Grayscale Softcopy Presentation State Storage"), ("1.2.840.10008.5.1.4.1.1.481.2", "RT Dose Storage")):
        ds.SOPClassUID = uid
        assert dicomio.image_candidate_reason(ds) == f"not a CT image ({name})"


def test_sniff_by_content(tmp_path) -> None:
    ct = Path(get_testdata_file("CT_small.dcm"))
    (tmp_path / "noext").write_bytes(ct.read_bytes())
    (tmp_path / "IMG.IMA").write_bytes(ct.read_bytes())
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "notes.xml").write_text("<xml/>")
    (tmp_path / "cut.dcm").write_bytes(ct.read_bytes()[:300])
    (tmp_path / "DICOMDIR.bak").write_bytes(Path(get_testdata_file("DICOMDIR")).read_bytes())
    (tmp_path / "old").write_bytes(Path(get_testdata_file("rtstruct.dcm")).read_bytes())  # no preamble
    kinds = {p.name: dicomio.sniff(p)[0] for p in tmp_path.iterdir()}
    assert kinds == {"noext": "dicom", "IMG.IMA": "dicom", "empty.dcm": "other", "notes.xml": "other",
                     "cut.dcm": "unreadable", "DICOMDIR.bak": "other", "old": "dicom"}
    assert dicomio.sniff(tmp_path / "DICOMDIR.bak")[2].startswith("DICOMDIR")


# ------------------------------------------------------------------------------ masks on the image grid


def _image(folder: Path, shape_zyx=(5, 6, 7), spacing=(2.5, 0.8, 0.9), seed="img") -> tuple[np.ndarray, dict]:
    vol = np.zeros(shape_zyx, np.float32)
    dicomio.write_ct_series(vol, spacing, folder, {"PatientID": "M"}, seed, origin=(-3.0, 4.0, 10.0))
    return dicomio.read_series(folder)


def _blob(shape_zyx) -> np.ndarray:
    m = np.zeros(shape_zyx, np.uint8)
    m[1:3, 2:5, 1:3] = 1
    m[3, 4, 5] = 1  # asymmetric: any wrong flip or permutation moves it
    return m


def _save_xyz(path: Path, data_xyz: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data_xyz, affine), str(path))
    return path


def test_masks_in_every_common_convention_land_on_the_same_voxels(tmp_path) -> None:
    vol, geom = _image(tmp_path / "image")
    truth = _blob(vol.shape)
    aff = geom["affine"]
    # 1. this package's own convention (LPS->RAS)
    plain = save_nifti(truth, aff, tmp_path / "plain.nii.gz")
    # 2. dcm2niix: rows flipped, affine diag(-dx, +dy, dz) (y axis reversed in the array)
    data = truth.transpose(2, 1, 0)[:, ::-1, :]
    flip = aff.copy()
    flip[:3, 1] = -aff[:3, 1]
    flip[:3, 3] = aff[:3, 3] + aff[:3, 1] * (vol.shape[1] - 1)
    assert flip[1, 1] > 0  # +dy in RAS: the dcm2niix form
    rowflip = _save_xyz(tmp_path / "dcm2niix.nii", np.ascontiguousarray(data), flip)
    # 3. axis permutation: stored (z, y, x) with the affine permuted to match
    perm = aff[:, [2, 1, 0, 3]]
    permuted = _save_xyz(tmp_path / "zyx.nii.gz", np.ascontiguousarray(truth), perm)
    # 4. 3D Slicer NRRD (LPS) and a .seg.nrrd with a named segment of label 2
    img = sitk.GetImageFromArray(truth)
    img.SetSpacing(geom["spacing"][::-1])
    img.SetOrigin(geom["origin"])
    img.SetDirection(geom["direction"])
    sitk.WriteImage(img, str(tmp_path / "slicer.nrrd"))
    seg = sitk.GetImageFromArray(truth * 2)
    seg.CopyInformation(img)
    for key, value in {"Segment0_Name": "tumour", "Segment0_LabelValue": "2", "Segment0_Layer": "0"}.items():
        seg.SetMetaData(key, value)
    sitk.WriteImage(seg, str(tmp_path / "slicer.seg.nrrd"))
    results = {}
    for path, label in ((plain, None), (rowflip, None), (permuted, None), (tmp_path / "slicer.nrrd", None),
                        (tmp_path / "slicer.seg.nrrd", "tumour"), (tmp_path / "slicer.seg.nrrd", 2)):
        mask, reoriented = masks.mask_on_image_grid(path, aff, vol.shape, label=label)
        np.testing.assert_array_equal(mask, truth, err_msg=str(path))
        results[path.name] = reoriented
    assert results == {"plain.nii.gz": False, "dcm2niix.nii": True, "zyx.nii.gz": True, "slicer.nrrd": False, "slicer.seg.nrrd": False}
    with pytest.raises(masks.MaskError, match=r"values \[0, 2\] are not 0/1; segments \{'tumour': 2\}.*never guessed"):
        masks.mask_on_image_grid(tmp_path / "slicer.seg.nrrd", aff, vol.shape)
    with pytest.raises(masks.MaskError, match="no segment named 'mass'"):
        masks.mask_on_image_grid(tmp_path / "slicer.seg.nrrd", aff, vol.shape, label="mass")


def test_mask_off_the_grid_is_refused_with_the_distance(tmp_path) -> None:
    vol, geom = _image(tmp_path / "image")
    shifted = geom["affine"].copy()
    shifted[:3, 3] += np.array([0.45, 0.0, 0.0])  # half a voxel in x
    path = save_nifti(_blob(vol.shape), shifted, tmp_path / "m.nii.gz")
    with pytest.raises(masks.MaskError, match=r"m\.nii\.gz: voxel grid does not coincide .* largest distance between voxel centres 0\.45 mm"):
        masks.mask_on_image_grid(path, geom["affine"], vol.shape)
    rotated = geom["affine"].copy()
    c, s = np.cos(np.radians(3)), np.sin(np.radians(3))
    rotated[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ rotated[:3, :3]
    path = save_nifti(_blob(vol.shape), rotated, tmp_path / "r.nii.gz")
    with pytest.raises(masks.MaskError, match="does not coincide"):
        masks.mask_on_image_grid(path, geom["affine"], vol.shape)
    # within the tolerance (float32 affines, rounding of a converter) is the same grid
    near = geom["affine"].copy()
    near[:3, 3] += 0.01
    path = save_nifti(_blob(vol.shape), near, tmp_path / "n.nii.gz")
    np.testing.assert_array_equal(masks.mask_on_image_grid(path, geom["affine"], vol.shape)[0], _blob(vol.shape))


def test_mask_label_values_are_never_guessed(tmp_path) -> None:
    vol, geom = _image(tmp_path / "image")
    m = _blob(vol.shape) * 3
    m[0, 0, 0] = 1
    path = save_nifti(m, geom["affine"], tmp_path / "multi.nii.gz")
    with pytest.raises(masks.MaskError, match=r"values \[0, 1, 3\] are not 0/1"):
        masks.mask_on_image_grid(path, geom["affine"], vol.shape)
    got, _ = masks.mask_on_image_grid(path, geom["affine"], vol.shape, label=3)
    np.testing.assert_array_equal(got, _blob(vol.shape))
    with pytest.raises(masks.MaskError, match="label 7 not in the mask"):
        masks.mask_on_image_grid(path, geom["affine"], vol.shape, label=7)
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b truncated")
    with pytest.raises(masks.MaskError, match=r"bad\.nii\.gz: not a readable NIfTI file"):
        masks.mask_on_image_grid(tmp_path / "bad.nii.gz", geom["affine"], vol.shape)
