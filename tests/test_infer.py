"""Preprocessing (resampling, normalisation, cache) and whole-volume inference back to the original grid."""

import numpy as np
import pytest
import torch

from amtlib.segmentation import preprocess
from conftest import write_nifti_case
from amtlib.segmentation.infer import load_model, predict_cases, predict_nifti, predict_probability
from amtlib.io import affine_from_spacing, load_nifti, save_nifti
from amtlib.segmentation.model import ModelConfig, UNet3D
from amtlib.segmentation.preprocess import Normalisation, grid_shape, load_case, resample_to_shape, training_normalisation
from amtlib.segmentation.train import TrainConfig, _model_blob, save_checkpoint


def test_one_dice_with_an_explicit_empty_rule():
    """metrics.dice is the Dice of training (selection), inference and evaluation: the same number as
    the evaluation's voxel_metrics, with the both-empty case chosen by the caller."""
    from amtlib.evaluation.metrics import dice, voxel_metrics

    a = np.zeros((2, 3, 3), np.uint8)
    b = np.zeros_like(a)
    assert np.isnan(dice(a, b)) and np.isnan(voxel_metrics(a, b)["dice"])  # evaluation: left out of means
    assert dice(a, b, both_empty=1.0) == 1.0  # model selection: nothing to find, nothing found
    a[0, 0, :3] = 1  # 3 voxels
    b[0, 0, 1:3] = 1
    b[1, 1, 1] = 1  # 3 voxels, 2 shared
    assert dice(a, b) == pytest.approx(2 * 2 / 6) == voxel_metrics(a, b)["dice"]
    assert dice(a, np.zeros_like(a), both_empty=1.0) == 0.0
    import amtlib.segmentation.infer
    import amtlib.segmentation.train

    assert not hasattr(amtlib.segmentation.infer, "dice") and amtlib.segmentation.train.dice is dice


def test_normalisation_maps_range_and_clips():
    n = Normalisation(-1000.0, 1000.0)
    np.testing.assert_allclose(n.apply(np.array([-1000, 0, 1000, 3000, -2000])), [0, 0.5, 1, 1, 0])
    assert n.pad_value == pytest.approx(0.0)  # air below the range is clipped to 0
    with pytest.raises(ValueError, match="constant"):
        Normalisation(5.0, 5.0)


def test_grid_shape_and_resample_round_trip():
    assert grid_shape((50, 130, 130), (5.0, 1.5, 1.5), (5.0, 3.0, 3.0)) == (50, 65, 65)
    assert grid_shape((7, 9, 11), (1, 1, 1), None) == (7, 9, 11)
    vol = np.random.default_rng(0).normal(size=(6, 10, 12)).astype(np.float32)
    assert resample_to_shape(vol, (6, 5, 6)).shape == (6, 5, 6)
    assert resample_to_shape(vol, vol.shape) is not None and np.array_equal(resample_to_shape(vol, vol.shape), vol)
    # a linear ramp along x survives down- and up-sampling in the interior (trilinear, aligned extents)
    ramp = np.broadcast_to(np.arange(24, dtype=np.float32), (4, 8, 24)).copy()
    back = resample_to_shape(resample_to_shape(ramp, (4, 8, 12)), (4, 8, 24))
    np.testing.assert_allclose(back[..., 2:-2], ramp[..., 2:-2], atol=1e-4)


def _write_case(tmp_path, shape=(6, 20, 18), spacing=(5.0, 2.0, 2.0)):
    mask = np.zeros(shape, np.uint8)
    mask[2:4, 5:12, 6:12] = 1
    c = write_nifti_case(tmp_path, "c1", mask=mask, spacing=spacing, image_name="img.nii.gz", mask_name="mask.nii.gz")
    return c.image, c.mask, c.affine


def test_load_case_resamples_and_caches(tmp_path, monkeypatch):
    img, mask, aff = _write_case(tmp_path)
    case = load_case("c1", tmp_path / "img.nii.gz", tmp_path / "mask.nii.gz", (5.0, 4.0, 4.0), tmp_path / "cache")
    assert case.shape == (6, 10, 9) and case.original_shape == img.shape
    assert (case.hu_min, case.hu_max) == (float(img.min()), float(img.max()))
    assert case.mask.sum() > 0 and case.has_foreground
    np.testing.assert_array_equal(case.affine, aff)

    def boom(*a, **k):
        raise AssertionError("NIfTI re-read although cached")

    monkeypatch.setattr(preprocess, "load_nifti", boom)
    again = load_case("c1", tmp_path / "img.nii.gz", tmp_path / "mask.nii.gz", (5.0, 4.0, 4.0), tmp_path / "cache")
    np.testing.assert_array_equal(again.image_hu, case.image_hu)
    np.testing.assert_array_equal(again.fg_indices, case.fg_indices)
    with pytest.raises(AssertionError, match="re-read"):  # another spacing is another cache key
        load_case("c1", tmp_path / "img.nii.gz", tmp_path / "mask.nii.gz", (5.0, 2.0, 2.0), tmp_path / "cache")


def test_mask_geometry_mismatch_names_the_case(tmp_path):
    _write_case(tmp_path)
    save_nifti(np.zeros((6, 20, 17), np.uint8), np.eye(4), tmp_path / "bad.nii.gz")
    with pytest.raises(ValueError, match="case c9: mask"):
        load_case("c9", tmp_path / "img.nii.gz", tmp_path / "bad.nii.gz")


def test_training_normalisation_ignores_other_splits(tmp_path):
    _write_case(tmp_path)
    a = load_case("a", tmp_path / "img.nii.gz", tmp_path / "mask.nii.gz")
    n = training_normalisation([a])
    assert (n.hu_min, n.hu_max) == (a.hu_min, a.hu_max)
    with pytest.raises(ValueError, match="no training cases"):
        training_normalisation([])


def test_sliding_window_on_volume_smaller_than_patch():
    torch.manual_seed(0)
    model = UNet3D(ModelConfig(base_width=2, blocks_per_level=1))
    prob = predict_probability(model, np.zeros((5, 11, 13), np.float32), (8, 16, 16))
    assert prob.shape == (5, 11, 13) and prob.dtype == np.float32 and np.all((prob >= 0) & (prob <= 1))


def test_predictions_land_in_original_geometry_after_coarse_grid(tmp_path):
    img, mask, aff = _write_case(tmp_path, shape=(7, 21, 19), spacing=(5.0, 1.5, 1.5))
    cfg = TrainConfig(spacing_mm=(5.0, 3.0, 3.0), patch=(8, 16, 16), base_width=2, blocks_per_level=1, threshold=0.4)
    torch.manual_seed(0)
    model = UNet3D(cfg.model_config)
    norm = Normalisation(-1000, 500)
    save_checkpoint(tmp_path / "model.pt", _model_blob(model, cfg, norm, 1, 0.5))
    loaded, meta = load_model(tmp_path / "model.pt")
    assert meta["spacing_mm"] == [5.0, 3.0, 3.0] and meta["threshold"] == 0.4 and meta["norm"] == norm.to_dict()
    case = load_case("c2", tmp_path / "img.nii.gz", None, meta["spacing_mm"])
    assert case.shape == (7, 10, 10)  # coarser than the image
    rows = predict_cases(loaded, meta, [case], tmp_path / "pred", tmp_path / "prob")
    pred, _, paff = load_nifti(tmp_path / "pred/c2.nii.gz")
    prob, _, _ = load_nifti(tmp_path / "prob/c2.nii.gz")
    assert pred.shape == img.shape and pred.dtype == np.uint8
    np.testing.assert_array_equal(paff, aff)
    np.testing.assert_array_equal(pred, (prob >= 0.4).astype(np.uint8))
    assert rows.loc[0, "predicted_voxels"] == int(pred.sum())
    out = predict_nifti(tmp_path / "model.pt", tmp_path / "img.nii.gz", tmp_path / "single.nii.gz")
    np.testing.assert_array_equal(load_nifti(out)[0], pred)
    np.testing.assert_array_equal(load_nifti(tmp_path / "img.nii.gz")[0], img)  # the input is untouched


def test_load_model_refuses_foreign_file(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not an amtlib 3D U-Net"):
        load_model(tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not found"):
        load_model(tmp_path / "missing.pt")
