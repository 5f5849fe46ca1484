"""amtlib.segmentation.preprocess: min-max rescaling, the resampling grid, voxel-centre alignment, mask
thresholding, foreground thinning, the empty rules and the loaders' contracts.

tests/test_infer.py already covers the basic [-1000, 1000] rescaling, one grid_shape case, a ramp's
down-and-up round trip, load_case's cache hit and spacing key, the mask geometry error and a one-case
training_normalisation; this file tests the rest.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest

from amtlib.io import affine_from_spacing, save_nifti
from amtlib.segmentation.preprocess import (AIR_HU, CaseVolume, Normalisation, case_from_array, foreground_indices,
                                            grid_shape, load_case, load_cases, resample_to_shape, training_normalisation,
                                            warn_empty_masks)
from conftest import write_nifti_case


def _case(cid: str, hu_min: float, hu_max: float, fg: int = 1) -> CaseVolume:
    """A 1x1x4 case whose mask has ``fg`` foreground voxels."""
    mask = np.zeros((1, 1, 4), np.uint8)
    mask.ravel()[:fg] = 1
    return CaseVolume(cid, np.zeros((1, 1, 4), np.float32), mask, (1, 1, 4), (1.0, 1.0, 1.0), np.eye(4),
                      hu_min, hu_max, foreground_indices(mask))


# ------------------------------------------------------------------------------------ normalisation
def test_three_voxel_ramp_maps_to_zero_half_one_as_float32():
    n = Normalisation(-100.0, 200.0)
    out = n.apply(np.array([-100, 50, 200], dtype=np.int16))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([0.0, 0.5, 1.0], np.float32))
    # (-25 + 100) / 300 = 0.25; 125 -> 0.75
    np.testing.assert_allclose(n.apply(np.array([-25.0, 125.0])), [0.25, 0.75], rtol=1e-6)


def test_pad_value_is_air_normalised_when_air_lies_inside_the_range():
    # (-1024 - (-2024)) / (976 - (-2024)) = 1000 / 3000
    assert Normalisation(-2024.0, 976.0).pad_value == pytest.approx(1.0 / 3.0, rel=1e-6)
    assert Normalisation(AIR_HU, 0.0).pad_value == 0.0
    assert Normalisation(-3000.0, -2000.0).pad_value == 1.0  # above the range: clipped to 1


@pytest.mark.parametrize("lo, hi", [(np.nan, 1.0), (0.0, np.inf), (-np.inf, 0.0), (10.0, -10.0), (3.0, 3.0)])
def test_normalisation_refuses_a_non_finite_empty_or_reversed_range(lo, hi):
    with pytest.raises(ValueError, match="invalid intensity range"):
        Normalisation(lo, hi)


def test_normalisation_dict_round_trip():
    n = Normalisation(-1000.5, 1500.25)
    d = n.to_dict()
    assert d == {"hu_min": -1000.5, "hu_max": 1500.25}
    assert Normalisation.from_dict(d) == n


def test_training_normalisation_takes_min_and_max_over_all_cases():
    cases = [_case("a", -500.0, 100.0), _case("b", -1000.0, 50.0), _case("c", -20.0, 900.0)]
    assert training_normalisation(cases) == Normalisation(-1000.0, 900.0)


# ------------------------------------------------------------------------------------ resampling grid
def test_grid_shape_doubles_and_halves_by_hand():
    assert grid_shape((4, 6, 8), (2.0, 2.0, 2.0), (1.0, 1.0, 1.0)) == (8, 12, 16)
    assert grid_shape((4, 6, 8), (2.0, 2.0, 2.0), (4.0, 4.0, 4.0)) == (2, 3, 4)
    # per axis: 7*1/3 = 2.33 -> 2; 10*1.5/4 = 3.75 -> 4; 9*0.7/0.7 = 9
    assert grid_shape((7, 10, 9), (1.0, 1.5, 0.7), (3.0, 4.0, 0.7)) == (2, 4, 9)


def test_grid_shape_never_drops_an_axis_to_zero_voxels():
    assert grid_shape((1, 2, 3), (1.0, 1.0, 1.0), (10.0, 10.0, 10.0)) == (1, 1, 1)


def test_realised_spacing_is_within_half_a_voxel_of_the_target():
    rng = np.random.default_rng(0)
    for _ in range(200):
        shape = rng.integers(2, 300, 3)
        spacing = rng.uniform(0.3, 6.0, 3)
        target = rng.uniform(0.5, 5.0, 3)
        got = np.array(grid_shape(tuple(shape), tuple(spacing), tuple(target)))
        extent = shape * spacing
        assert np.all(np.abs(got - np.maximum(extent / target, 1.0)) <= 0.5 + 1e-9)


def test_resample_same_shape_returns_float32_values_unchanged():
    vol = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    out = resample_to_shape(vol, (2, 3, 4))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, vol.astype(np.float32))


def test_downsampling_a_world_ramp_samples_it_at_the_new_voxel_centres():
    # 4 voxels of 1 mm, value = world position of the centre (0.5 .. 3.5); 2 voxels of 2 mm have their
    # centres at 1.0 and 3.0 mm, so a ramp in world space stays the same ramp
    ramp = np.broadcast_to(np.array([0.5, 1.5, 2.5, 3.5], np.float32), (2, 2, 4)).copy()
    out = resample_to_shape(ramp, (2, 2, 2))
    np.testing.assert_allclose(out[0, 0], [1.0, 3.0], atol=1e-6)
    # upsampling to 8 voxels of 0.5 mm: centres 0.25, 0.75, ..., 3.75; interior is the ramp, edges clamp
    up = resample_to_shape(ramp, (2, 2, 8))[0, 0]
    np.testing.assert_allclose(up[1:-1], 0.25 + 0.5 * np.arange(1, 7), atol=1e-6)
    assert up[0] == pytest.approx(0.5) and up[-1] == pytest.approx(3.5)


def _world_centroid(arr: np.ndarray, first_centre_xyz: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Intensity-weighted centroid (x, y, z mm) of ``arr`` on the grid of ``affine_from_spacing``."""
    aff = affine_from_spacing(spacing_zyx, tuple(first_centre_xyz))
    idx_xyz = np.argwhere(arr > 0)[:, ::-1].astype(float)
    pts = idx_xyz @ aff[:3, :3].T + aff[:3, 3]
    w = arr[arr > 0]
    return (pts * w[:, None]).sum(0) / w.sum()


def test_world_centroid_of_an_off_centre_voxel_is_preserved_by_upsampling():
    # one bright voxel at x index 1 of 5 (2 mm voxels). Upsampled to 10 voxels of 1 mm it spreads over
    # x = 1..4 with weights 1/4, 3/4, 3/4, 1/4: new centres -0.5 + (1.5, 2.5, 3.5, 4.5) mm relative to
    # the old first centre, weighted mean (0.375 + 1.875 + 2.625 + 1.125) / 2 = 3 - 1 = 2 mm = 1 * 2 mm
    vol = np.zeros((3, 3, 5), np.float32)
    vol[1, 1, 1] = 1.0
    up = resample_to_shape(vol, (6, 6, 10))
    np.testing.assert_allclose(up[2, 2, 1:5] / up[2, 2, 1:5].sum(), [0.125, 0.375, 0.375, 0.125], atol=1e-6)
    origin = np.array([11.0, -3.0, 7.0])  # x, y, z of the first voxel centre
    # both grids cover the same extent: the finer grid's first centre is half a new voxel in from the
    # old grid's edge, i.e. (1 - 2) / 2 = -0.5 mm from the old first centre on each axis
    before = _world_centroid(vol, origin, (2.0, 2.0, 2.0))
    after = _world_centroid(up, origin - 0.5, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(before, origin + [2.0, 2.0, 2.0])
    np.testing.assert_allclose(after, before, atol=1e-5)


def test_nearest_mode_keeps_labels_binary():
    m = np.zeros((2, 2, 2), np.float32)
    m[..., 1] = 1
    up = resample_to_shape(m, (4, 4, 4), mode="nearest")
    assert set(np.unique(up)) == {0.0, 1.0}
    np.testing.assert_array_equal(up[0, 0], [0, 0, 1, 1])


# ------------------------------------------------------------------------------------ foreground indices
def test_foreground_indices_are_evenly_thinned_and_deterministic():
    mask = np.zeros((1, 2, 5), np.uint8)
    mask.ravel()[[1, 3, 4, 6, 9]] = 1
    np.testing.assert_array_equal(foreground_indices(mask), [1, 3, 4, 6, 9])
    thinned = foreground_indices(mask, limit=3)  # linspace(0, 4, 3) = positions 0, 2, 4
    assert thinned.dtype == np.int64
    np.testing.assert_array_equal(thinned, [1, 4, 9])
    assert foreground_indices(np.zeros((2, 2, 2))).size == 0


# ------------------------------------------------------------------------------------ empty rules
def test_warn_empty_masks_names_the_empty_cases_and_returns_them():
    cases = [_case("a", 0, 1, fg=2), _case("b", 0, 1, fg=0), _case("c", 0, 1, fg=0)]
    with pytest.warns(UserWarning, match=r"2 training case\(s\) have an empty tumour mask \(b, c\)"):
        assert warn_empty_masks(cases) == ["b", "c"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_empty_masks(cases[:1]) == []


def test_warn_empty_masks_refuses_a_training_set_without_foreground():
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no training case has any foreground"):
        warn_empty_masks([_case("a", 0, 1, fg=0), _case("b", 0, 1, fg=0)])


# ------------------------------------------------------------------------------------ loading
def _ramp_case(tmp_path, mask_x: list[int]):
    """A (2, 2, 4) case at 1 mm, mask along x given, written as NIfTI."""
    image = np.broadcast_to(np.array([-1000, 0, 100, 400], np.int16), (2, 2, 4)).copy()
    mask = np.broadcast_to(np.array(mask_x, np.uint8), (2, 2, 4)).copy()
    return write_nifti_case(tmp_path, "r", image=image, mask=mask, spacing=(1.0, 1.0, 1.0))


def test_mask_is_resampled_trilinearly_and_kept_at_half_or_more(tmp_path):
    # [0, 1, 1, 0] halved in x: each new voxel averages a 0 and a 1 -> 0.5, which is kept (>= 0.5)
    c = _ramp_case(tmp_path, [0, 1, 1, 0])
    case = load_case("r", c.image_path, c.mask_path, (1.0, 1.0, 2.0))
    assert case.shape == (2, 2, 2) and case.mask.dtype == np.uint8
    np.testing.assert_array_equal(case.mask, np.ones((2, 2, 2), np.uint8))
    c = _ramp_case(tmp_path, [1, 0, 0, 0])  # first new voxel 0.5 -> kept, second 0 -> dropped
    np.testing.assert_array_equal(load_case("r", c.image_path, c.mask_path, (1.0, 1.0, 2.0)).mask[0, 0], [1, 0])


def test_intensity_range_is_of_the_original_voxels_not_the_resampled_ones(tmp_path):
    c = _ramp_case(tmp_path, [0, 1, 1, 0])
    case = load_case("r", c.image_path, c.mask_path, (1.0, 1.0, 2.0))
    np.testing.assert_allclose(case.image_hu[0, 0], [-500.0, 250.0])  # averaged pairs
    assert (case.hu_min, case.hu_max) == (-1000.0, 400.0)
    assert case.original_shape == (2, 2, 4) and case.original_spacing == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("no_mask", ["", float("nan"), None])
def test_blank_or_missing_mask_path_means_no_mask(tmp_path, no_mask):
    c = _ramp_case(tmp_path, [0, 1, 1, 0])
    case = load_case("r", c.image_path, no_mask)
    assert case.mask is None and not case.has_foreground


def test_case_from_array_matches_load_case_of_the_same_nifti(tmp_path):
    c = write_nifti_case(tmp_path, "x", shape=(5, 9, 7), spacing=(3.0, 1.5, 1.5))
    from_file = load_case("x", c.image_path, None, (4.0, 2.0, 2.5))
    from_array = case_from_array("x", c.image, (3.0, 1.5, 1.5), c.affine, (4.0, 2.0, 2.5))
    assert from_array.shape == from_file.shape == (4, 7, 4)  # 15/4 -> 4, 13.5/2 -> 7, 10.5/2.5 -> 4
    np.testing.assert_array_equal(from_array.image_hu, from_file.image_hu)
    np.testing.assert_array_equal(from_array.affine, from_file.affine)
    assert (from_array.hu_min, from_array.hu_max) == (from_file.hu_min, from_file.hu_max)
    assert from_array.original_shape == from_file.original_shape and from_array.mask is None


def test_changed_image_file_is_read_again_not_served_from_the_cache(tmp_path):
    c = _ramp_case(tmp_path, [0, 1, 1, 0])
    first = load_case("r", c.image_path, c.mask_path, None, tmp_path / "cache")
    st = os.stat(c.image_path)
    save_nifti(np.full((2, 2, 4), 7, np.int16), c.affine, c.image_path)
    os.utime(c.image_path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = load_case("r", c.image_path, c.mask_path, None, tmp_path / "cache")
    assert first.hu_max == 400.0 and second.hu_max == 7.0
    np.testing.assert_array_equal(second.image_hu, np.full((2, 2, 4), 7.0, np.float32))


def _manifest(tmp_path) -> pd.DataFrame:
    rows = []
    for i, cid in enumerate(["c0", "c1", "c2"]):
        mask = np.zeros((2, 3, 4), np.uint8)
        mask[0, 0, : i + 1] = 1  # i + 1 foreground voxels, so each case is recognisable
        write_nifti_case(tmp_path, cid, mask=mask, spacing=(1.0, 1.0, 1.0), seed=i)
        rows.append({"case_id": cid, "image_path": f"images/{cid}.nii.gz", "mask_path": f"masks/{cid}.nii.gz"})
    rows[2]["mask_path"] = np.nan  # a case without a reference mask
    return pd.DataFrame(rows)


@pytest.mark.parametrize("workers", [1, 2])
def test_load_cases_keeps_the_requested_order(tmp_path, workers):
    m = _manifest(tmp_path)
    cases = load_cases(m, ["c1", "c2", "c0"], tmp_path, workers=workers)
    assert [c.case_id for c in cases] == ["c1", "c2", "c0"]
    assert [c.mask.sum() if c.mask is not None else None for c in cases] == [2, None, 1]
    assert all(c.mask is None for c in load_cases(m, ["c0", "c1"], tmp_path, with_masks=False))


def test_load_cases_names_ids_missing_from_the_manifest(tmp_path):
    with pytest.raises(ValueError, match=r"cases \['zz', 'yy'\] \(of 2\) are in the split but not in the manifest"):
        load_cases(_manifest(tmp_path), ["c0", "zz", "yy"], tmp_path)
