"""amtlib.masks: a mask placed on its image's grid by world coordinates, by hand-built affines.

Permutations and flips are reoriented; a larger grid that contains the image's (dcm2niix pads a
tilt-corrected series with rows) is cropped when no tumour voxel lies outside; anything else is refused
with the reason code the cohort maps to ``mask_geometry_mismatch`` (issue 23 item 19, issue 24 item 2).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from amtlib import masks

SHAPE_ZYX = (4, 6, 5)
#: image voxel (x, y, z) -> RAS mm: 0.8 x 0.7 mm pixels, 2.5 mm slices, an arbitrary origin
IMAGE_AFFINE = np.array([[0.8, 0, 0, -40.0], [0, 0.7, 0, 12.0], [0, 0, 2.5, -101.0], [0, 0, 0, 1]])


def _truth() -> np.ndarray:
    m = np.zeros(SHAPE_ZYX, np.uint8)  # (z, y, x)
    m[1:3, 2:4, 1:3] = 1
    m[3, 5, 4] = 1  # a corner voxel: any off-by-one in the crop moves or loses it
    return m


def _save(data_xyz: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(data_xyz.astype(np.uint8), affine), str(path))
    return path


def test_a_mask_on_the_image_grid_reads_as_it_is(tmp_path: Path) -> None:
    path = _save(_truth().transpose(2, 1, 0), IMAGE_AFFINE, tmp_path / "m.nii.gz")
    mask, reoriented = masks.mask_on_image_grid(path, IMAGE_AFFINE, SHAPE_ZYX)
    np.testing.assert_array_equal(mask, _truth())
    assert reoriented is False


def test_a_row_flipped_mask_is_reoriented(tmp_path: Path) -> None:
    flip = IMAGE_AFFINE.copy()
    flip[:, 1] = -IMAGE_AFFINE[:, 1]  # y runs the other way: origin moves to the last row
    flip[:3, 3] = IMAGE_AFFINE[:3, 3] + IMAGE_AFFINE[:3, 1] * (SHAPE_ZYX[1] - 1)
    path = _save(_truth().transpose(2, 1, 0)[:, ::-1, :], flip, tmp_path / "m.nii.gz")
    mask, reoriented = masks.mask_on_image_grid(path, IMAGE_AFFINE, SHAPE_ZYX)
    np.testing.assert_array_equal(mask, _truth())
    assert reoriented is True


def test_a_mask_on_a_padded_grid_is_cropped_with_a_note(tmp_path: Path) -> None:
    """dcm2niix's tilt correction: 3 rows added before the image's first row and 2 after its last."""
    padded = np.zeros((SHAPE_ZYX[0], SHAPE_ZYX[1] + 5, SHAPE_ZYX[2]), np.uint8)
    padded[:, 3:3 + SHAPE_ZYX[1], :] = _truth()
    affine = IMAGE_AFFINE.copy()
    affine[:3, 3] = IMAGE_AFFINE[:3, 3] - 3 * IMAGE_AFFINE[:3, 1] + 2e-6  # 3 rows earlier, float noise
    path = _save(padded.transpose(2, 1, 0), affine, tmp_path / "padded.nii.gz")
    notes: list[tuple[str, str]] = []
    mask, _ = masks.mask_on_image_grid(path, IMAGE_AFFINE, SHAPE_ZYX, notes=notes)
    np.testing.assert_array_equal(mask, _truth())
    assert [k for k, _ in notes] == ["mask_cropped"] and "at voxel (0, 3, 0)" in notes[0][1]
    assert masks.grid_embedding(affine, padded.transpose(2, 1, 0).shape, IMAGE_AFFINE, SHAPE_ZYX[::-1])[1].tolist() == [0, 3, 0]


def test_a_tumour_voxel_in_the_padding_is_refused(tmp_path: Path) -> None:
    padded = np.zeros((SHAPE_ZYX[0], SHAPE_ZYX[1] + 5, SHAPE_ZYX[2]), np.uint8)
    padded[:, 3:3 + SHAPE_ZYX[1], :] = _truth()
    padded[0, 1, 0] = 1  # outside the image
    affine = IMAGE_AFFINE.copy()
    affine[:3, 3] = IMAGE_AFFINE[:3, 3] - 3 * IMAGE_AFFINE[:3, 1]
    path = _save(padded.transpose(2, 1, 0), affine, tmp_path / "padded.nii.gz")
    with pytest.raises(masks.MaskError, match=r"1 tumour voxel\(s\) lie outside the image") as err:
        masks.mask_on_image_grid(path, IMAGE_AFFINE, SHAPE_ZYX)
    assert err.value.reason == masks.OFF_GRID


@pytest.mark.parametrize("case", ["half_voxel", "smaller", "other_spacing"])
def test_masks_on_other_grids_are_refused_with_the_grid_code(tmp_path: Path, case: str) -> None:
    data, affine = _truth().transpose(2, 1, 0), IMAGE_AFFINE.copy()
    if case == "half_voxel":
        affine[:3, 3] += 0.5 * IMAGE_AFFINE[:3, 0]
        expected = r"largest distance between voxel centres 0.4 mm"
    elif case == "smaller":  # a cropped export: on the lattice, but not the whole image
        data = data[:, 1:, :]
        affine[:3, 3] += IMAGE_AFFINE[:3, 1]
        expected = r"lie on the image's lattice .* but its extent is not the image's"
    else:
        affine[:3, :3] = affine[:3, :3] * 0.5
        data = np.zeros((10, 12, 8), np.uint8)
        data[2, 2, 2] = 1
        expected = r"largest distance between voxel centres"
    path = _save(data, affine, tmp_path / f"{case}.nii.gz")
    with pytest.raises(masks.MaskError, match=expected) as err:
        masks.mask_on_image_grid(path, IMAGE_AFFINE, SHAPE_ZYX)
    assert err.value.reason == masks.OFF_GRID


def test_value_problems_carry_the_invalid_code(tmp_path: Path) -> None:
    data = _truth().transpose(2, 1, 0) * 2
    path = _save(data, IMAGE_AFFINE, tmp_path / "twos.nii.gz")
    with pytest.raises(masks.MaskError, match=r"values \[0, 2\] are not 0/1") as err:
        masks.mask_on_image_grid(path, IMAGE_AFFINE, SHAPE_ZYX)
    assert err.value.reason == masks.INVALID
    np.testing.assert_array_equal(masks.mask_on_image_grid(path, IMAGE_AFFINE, SHAPE_ZYX, label=2)[0], _truth())


def test_a_mask_on_dcm2niix_tilt_corrected_grid_lands_on_the_readers_grid(tmp_path: Path) -> None:
    """The real case of issue 23 item 19: dcm2niix pads a tilt-corrected series (40 -> 48 rows); a mask drawn on
    its output was refused as mask_geometry_mismatch with a distance of 5e-06 mm."""
    import shutil
    import subprocess
    import sys

    if shutil.which("dcm2niix") is None:
        pytest.skip("dcm2niix not installed: apt-get install dcm2niix")
    sys.path.insert(0, str(Path(__file__).parent))
    from dicom_fixtures import tilted_ball_series

    from amtlib.dicom import dicomio

    tilted_ball_series(tmp_path / "s", (1.0, 0.0), "tilt19")  # one row of shear per slice: both resample exactly
    (tmp_path / "n").mkdir()
    subprocess.run(["dcm2niix", "-z", "y", "-f", "ct", "-o", str(tmp_path / "n"), str(tmp_path / "s")],
                   check=True, capture_output=True)
    corrected = nib.load(str(tmp_path / "n" / "ct_Tilt_1.nii.gz"))
    ours, geometry = dicomio.read_series(tmp_path / "s", tilt_policy="resample")
    assert corrected.shape[1] > ours.shape[1]  # padded with rows
    path = _save(np.asarray(corrected.dataobj) > 0, corrected.affine, tmp_path / "mask.nii.gz")
    notes: list[tuple[str, str]] = []
    mask, _ = masks.mask_on_image_grid(path, geometry["affine"], ours.shape, notes=notes)
    np.testing.assert_array_equal(mask, (ours > 0).astype(np.uint8))
    assert mask.sum() > 100 and notes[0][0] == "mask_cropped"


def test_a_mask_with_more_slices_than_its_series_is_never_cropped(tmp_path: Path) -> None:
    """Extra slices mean the series lost some (a truncated transfer): that stays a mismatch."""
    longer = np.zeros((SHAPE_ZYX[0] + 2, *SHAPE_ZYX[1:]), np.uint8)
    longer[:SHAPE_ZYX[0]] = _truth()
    path = _save(longer.transpose(2, 1, 0), IMAGE_AFFINE, tmp_path / "longer.nii.gz")
    with pytest.raises(masks.MaskError, match=r"but its extent is not the image's \(mask shape \(i, j, k\) \(5, 6, 6\)") as err:
        masks.mask_on_image_grid(path, IMAGE_AFFINE, SHAPE_ZYX)
    assert err.value.reason == masks.OFF_GRID


def test_a_tiny_file_claiming_gigabytes_is_refused_before_reading(tmp_path: Path) -> None:
    """A reference mask from a stranger: a 2000^3 header in a few hundred bytes (issue 23 item 5, mask side)."""
    import gzip

    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape((2000, 2000, 2000))
    path = tmp_path / "bomb.nii.gz"
    with gzip.open(path, "wb") as f:
        f.write(header.binaryblock + b"\0" * 68)  # the 4-byte extension flag and a few voxels
    assert path.stat().st_size < 1000
    with pytest.raises(masks.MaskError, match=r"bomb.nii.gz: \d+ compressed bytes cannot hold what its header claims"):
        masks.mask_on_image_grid(path, IMAGE_AFFINE, SHAPE_ZYX)
