"""Voxel-wise metrics: exact counts, empty-mask NaNs, and a cross-check against MONAI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from amtlib.evaluation.metrics import confusion_counts, metrics_from_counts, voxel_metrics


def test_exact_fractions_on_a_phantom():
    ref = np.zeros((2, 6, 6), dtype=np.uint8)
    pred = np.zeros_like(ref)
    ref[0, 0:4, 0:4] = 1  # 16 voxels
    pred[0, 1:4, 0:5] = 1  # 15 voxels, 12 inside the reference
    m = voxel_metrics(pred, ref)
    assert (m["tp_voxels"], m["fp_voxels"], m["fn_voxels"]) == (12, 3, 4)
    assert m["dice"] == pytest.approx(24 / 31)
    assert m["iou"] == pytest.approx(12 / 19)
    assert m["precision"] == pytest.approx(12 / 15)
    assert m["recall"] == pytest.approx(12 / 16)


def test_empty_masks_give_nan_only_where_the_denominator_is_zero():
    both = metrics_from_counts(0, 0, 0)
    assert all(math.isnan(v) for v in both.values())
    no_pred = metrics_from_counts(0, 0, 7)
    assert no_pred["dice"] == 0 and no_pred["iou"] == 0 and no_pred["recall"] == 0
    assert math.isnan(no_pred["precision"])
    no_ref = metrics_from_counts(0, 5, 0)
    assert no_ref["precision"] == 0 and math.isnan(no_ref["recall"])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        confusion_counts(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))


def test_inputs_are_not_modified():
    pred = np.array([[[0, 2, 1]]], dtype=np.uint8)
    before = pred.copy()
    voxel_metrics(pred, np.array([[[1, 1, 0]]]))
    np.testing.assert_array_equal(pred, before)


def test_matches_monai_on_random_masks():
    torch = pytest.importorskip("torch")
    from monai.metrics import DiceMetric, compute_confusion_matrix_metric, compute_iou, get_confusion_matrix

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    for p_density, r_density in ((0.1, 0.3), (0.5, 0.5), (0.02, 0.6)):
        pred = rng.random((8, 16, 16)) < p_density
        ref = rng.random((8, 16, 16)) < r_density
        ours = voxel_metrics(pred, ref)
        yp = torch.from_numpy(pred[None, None].astype(np.float32))
        yr = torch.from_numpy(ref[None, None].astype(np.float32))
        dice = DiceMetric(include_background=True, reduction="none")(yp, yr).item()
        iou = compute_iou(yp, yr, include_background=True).item()
        cm = get_confusion_matrix(yp, yr, include_background=True)
        tp, fp, _, fn = cm[0, 0].tolist()
        assert ours["dice"] == pytest.approx(dice, rel=1e-6)
        assert ours["iou"] == pytest.approx(iou, rel=1e-6)
        assert (ours["tp_voxels"], ours["fp_voxels"], ours["fn_voxels"]) == (tp, fp, fn)
        assert ours["precision"] == pytest.approx(compute_confusion_matrix_metric("precision", cm).item(), rel=1e-6)
        assert ours["recall"] == pytest.approx(compute_confusion_matrix_metric("sensitivity", cm).item(), rel=1e-6)
