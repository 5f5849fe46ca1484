"""Voxel-wise segmentation metrics on binary masks (paper: "Voxel-wise segmentation performance metrics").

Each metric is computed per CT series as a whole (one value per case), from the voxel confusion counts
TP = |pred AND ref|, FP = |pred AND NOT ref|, FN = |NOT pred AND ref|:

    Dice = 2TP / (2TP + FP + FN)      IoU = TP / (TP + FP + FN)
    precision = TP / (TP + FP)        recall = TP / (TP + FN)

A ratio whose denominator is 0 is NaN (e.g. precision of an empty prediction, every metric of a case
where both masks are empty); :mod:`amtlib.evaluation.stats` leaves NaN out of means and reports how many it left
out. The raw network output is scored: the small-component filter of the lesion-wise analysis
(:mod:`amtlib.evaluation.lesions`) does not apply here.
"""

from __future__ import annotations

import numpy as np

#: Metric names in the order of the paper's Table 3.
VOXEL_METRICS: tuple[str, ...] = ("dice", "iou", "precision", "recall")


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` as a float, NaN when the denominator is 0."""
    return float(numerator) / float(denominator) if denominator else float("nan")


def confusion_counts(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int]:
    """Voxel counts ``(tp, fp, fn)`` of two same-shape masks (nonzero = foreground).

    Raises ``ValueError`` when the shapes differ.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} != reference shape {ref.shape}")
    p = np.asarray(pred) != 0
    r = np.asarray(ref) != 0
    tp = int(np.count_nonzero(p & r))
    return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(r)) - tp


def metrics_from_counts(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Dice, IoU, precision and recall from voxel counts; a 0 denominator gives NaN.

    Both masks empty: all four NaN. Empty prediction, non-empty reference: Dice = IoU = recall = 0,
    precision NaN. Empty reference, non-empty prediction: Dice = IoU = precision = 0, recall NaN.
    """
    return {
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "iou": ratio(tp, tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
    }


def dice(pred: np.ndarray, ref: np.ndarray, both_empty: float = float("nan")) -> float:
    """Dice = 2TP / (2TP + FP + FN) of two same-shape masks: the one Dice of training, inference and
    evaluation.

    Empty rule, explicit: when both masks are empty the ratio is 0/0 and ``both_empty`` is returned.
    The evaluation keeps the default NaN (the case is left out of means, and counted; Table 3). Model
    selection on the tuning set (:func:`amtlib.segmentation.train.tuning_dice`) passes 1.0: nothing to find and
    nothing found is a perfect score there, so a tumour-free tuning case can only lower the mean
    through false positives.
    """
    tp, fp, fn = confusion_counts(pred, ref)
    denom = 2 * tp + fp + fn
    return float(both_empty) if denom == 0 else 2.0 * tp / denom


def voxel_metrics(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Dice, IoU, precision, recall and the counts ``tp_voxels, fp_voxels, fn_voxels`` of one case.

    Paper: Voxel-wise segmentation performance metrics. Masks are (z, y, x), nonzero = tumour; see
    :func:`metrics_from_counts` for empty masks.
    """
    tp, fp, fn = confusion_counts(pred, ref)
    return {**metrics_from_counts(tp, fp, fn), "tp_voxels": tp, "fp_voxels": fp, "fn_voxels": fn}
