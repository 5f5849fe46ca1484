"""Preprocessing (resampling, normalisation, cache) and whole-volume inference back to the original grid."""

import numpy as np
import pytest
import torch

from amtlib.segmentation import preprocess
from conftest import write_nifti_case
from amtlib.segmentation.infer import load_model, predict_cases, predict_nifti, predict_probability
from amtlib.io import load_nifti, save_nifti
from amtlib.segmentation.model import UNet3D
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


class _InputPlusWindowMean(torch.nn.Module):
    """A stand-in network whose logit is a known function of its window: the voxel plus the window's mean.

    The voxel term shows where each output lands (padding cropped, flips undone); the mean term differs
    between windows, so overlapping windows show how they are blended.
    """

    def forward(self, x):
        return x + x.mean(dim=(2, 3, 4), keepdim=True)


def _gaussian_weights(patch):
    """The blending weight of each patch voxel: a separable Gaussian, sigma patch/8, centred on the patch,
    floored at max(its minimum, 1e-3) (the importance map of MONAI's "gaussian" mode)."""
    w = np.ones((), np.float64)
    for p in patch:
        g = np.exp(-((np.arange(p) - (p - 1) / 2) ** 2) / (2 * (p / 8) ** 2))
        w = np.multiply.outer(w, g)
    return np.maximum(w, max(w.min(), 1e-3))


def _expected_probability(image, patch, starts, pad_value):
    """sigmoid of the weighted mean of ``_InputPlusWindowMean``'s logits over the windows at ``starts``
    (one list per axis, on the padded grid), after padding each short axis on both sides with
    ``pad_value`` (the smaller half first), then cropped back to ``image``'s shape."""
    pads = [((p - s) // 2 if p > s else 0, p - s - (p - s) // 2 if p > s else 0) for s, p in zip(image.shape, patch)]
    padded = np.pad(image.astype(np.float64), pads, constant_values=pad_value)
    weights = _gaussian_weights(patch)
    total = np.zeros_like(padded)
    count = np.zeros_like(padded)
    for corner in np.array(np.meshgrid(*starts, indexing="ij")).reshape(3, -1).T:
        window = tuple(slice(c, c + p) for c, p in zip(corner, patch))
        total[window] += weights * (padded[window] + padded[window].mean())
        count[window] += weights
    prob = 1 / (1 + np.exp(-total / count))
    return prob[tuple(slice(b, b + s) for (b, _), s in zip(pads, image.shape))]


def test_sliding_window_on_volume_smaller_than_patch():
    """One window: the volume is padded with pad_value on both sides, the logit is the voxel plus the
    padded window's mean, the padding is cropped off again and the sigmoid applied."""
    image = np.random.default_rng(0).normal(size=(5, 11, 13)).astype(np.float32)
    prob = predict_probability(_InputPlusWindowMean(), image, (8, 16, 16), pad_value=-1.5)
    assert prob.shape == (5, 11, 13) and prob.dtype == np.float32
    padded_mean = (image.sum(dtype=np.float64) - 1.5 * (8 * 16 * 16 - image.size)) / (8 * 16 * 16)
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-(image + padded_mean))), rtol=0, atol=1e-6)


def test_sliding_window_blends_overlapping_windows():
    """A volume longer than the patch in y and x (several windows at overlap 0.5) and shorter in z
    (padded): each voxel's probability is the sigmoid of the Gaussian-weighted mean of the windows
    covering it; with ``mirror`` the mean over the 8 flips, each flipped back."""
    rng = np.random.default_rng(1)
    image = (rng.normal(size=(6, 20, 37)) + np.linspace(-2, 2, 37)).astype(np.float32)
    patch = (8, 16, 16)
    prob = predict_probability(_InputPlusWindowMean(), image, patch, overlap=0.5, sw_batch_size=3, pad_value=-1.0)
    assert prob.shape == image.shape and prob.dtype == np.float32
    # interval int(16 * 0.5) = 8; the last window is moved back to end at the edge: y 0, 4 and x 0, 8, 16, 21;
    # z is padded to 8 (one slice each side), one window
    starts = ([0], [0, 4], [0, 8, 16, 21])
    np.testing.assert_allclose(prob, _expected_probability(image, patch, starts, -1.0), rtol=0, atol=1e-5)
    # where one window alone covers a voxel its weight cancels: the voxel plus that window's mean
    padded = np.pad(image.astype(np.float64), ((1, 1), (0, 0), (0, 0)), constant_values=-1.0)
    for ys, xs, first_y, first_x in ((slice(0, 4), slice(0, 8), 0, 0), (slice(16, 20), slice(32, 37), 4, 21)):
        mean = padded[:, first_y:first_y + 16, first_x:first_x + 16].mean()
        np.testing.assert_allclose(prob[:, ys, xs], 1 / (1 + np.exp(-(image[:, ys, xs] + mean))), rtol=0, atol=1e-6)
    mirrored = predict_probability(_InputPlusWindowMean(), image, patch, overlap=0.5, pad_value=-1.0, mirror=True)
    flips = [tuple(a for a, bit in zip(range(3), (i & 1, i & 2, i & 4)) if bit) for i in range(8)]
    expected = np.mean([np.flip(_expected_probability(np.flip(image, f), patch, starts, -1.0), f) for f in flips], axis=0)
    np.testing.assert_allclose(mirrored, expected, rtol=0, atol=1e-5)
    assert np.abs(mirrored - prob).max() > 1e-3  # the flipped volumes are tiled by other windows


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
