"""Per-lesion segmentation quality: Dice and IoU of matched lesion pairs, and the panoptic quality PQ.

Not in the paper (its lesion-wise results are detection counts); the quality of the lesions it finds,
as panoptica reports it. At one lesion IoU threshold t (default 0.5, parameter ``threshold``) the
lesions are matched with the package's own one-to-one rule (:func:`amtlib.evaluation.lesions.match_lesions`:
most pairs with IoU > t, then largest total IoU; predicted components under 10 voxels removed first),
so TP, FP and FN are those of ``lesion_counts.csv`` at t. Then, per case and pooled over cases:

    RQ = TP / (TP + FP/2 + FN/2)      SQ = mean IoU of the matched pairs      PQ = SQ x RQ

Empty rules: no lesion on either side gives NaN for all three (left out, counted); lesions but no
match gives RQ = 0, SQ NaN (no pair to average) and PQ = 0. Pooled SQ averages every matched pair of
every case (each pair weighs the same), pooled RQ sums the counts.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import pandas as pd

from amtlib.evaluation import lesions

#: Lesion IoU threshold of the per-lesion quality when none is given.
PQ_IOU_THRESHOLD: float = 0.5
#: ``lesion_pairs.csv`` columns: one row per matched (predicted, reference) lesion pair.
PAIR_COLUMNS: tuple[str, ...] = ("case_id", "iou_threshold", "pred_lesion", "ref_lesion", "pred_voxels", "ref_voxels",
                                 "intersection_voxels", "dice", "iou")
#: Per-case columns added to ``per_case.csv``.
CASE_COLUMNS: tuple[str, ...] = ("pq", "sq", "rq")


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float if it lies in [0, 1), else a ValueError saying so."""
    t = float(threshold)
    if not 0 <= t < 1:
        raise ValueError(f"the lesion IoU threshold of the per-lesion quality must be in [0, 1), got {threshold!r}")
    return t


def intersections(overlap: lesions.Overlap, min_pred_voxels: int = lesions.MIN_PRED_VOXELS
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dense shared-voxel matrix (kept predicted x reference components) of an :class:`~amtlib.evaluation.lesions.Overlap`.

    Predicted components under ``min_pred_voxels`` are dropped, as for the detection counts. Returns
    ``(inter, pred_sizes, ref_sizes, pred_ids)``, ``pred_ids`` the 1-based labels of the kept predictions.
    """
    keep = overlap.pred_sizes >= min_pred_voxels
    new_row = np.cumsum(keep) - 1
    inter = np.zeros((int(keep.sum()), len(overlap.ref_sizes)), dtype=np.int64)
    sel = keep[overlap.rows]
    inter[new_row[overlap.rows[sel]], overlap.cols[sel]] = overlap.inter[sel]
    return inter, overlap.pred_sizes[keep], overlap.ref_sizes, np.flatnonzero(keep) + 1


def quality(tp: int, fp: int, fn: int, iou_sum: float) -> dict[str, float]:
    """``pq, sq, rq`` from lesion counts and the summed IoU of the TP pairs (empty rules: module docstring)."""
    denom = tp + fp / 2 + fn / 2
    if denom == 0:
        return {"pq": math.nan, "sq": math.nan, "rq": math.nan}
    rq = tp / denom
    sq = iou_sum / tp if tp else math.nan
    return {"pq": sq * rq if tp else 0.0, "sq": sq, "rq": rq}


def case_pairs(overlap: lesions.Overlap, threshold: float = PQ_IOU_THRESHOLD,
               min_pred_voxels: int = lesions.MIN_PRED_VOXELS) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Matched lesion pairs of one case at ``threshold`` and its ``tp, fp, fn, pq, sq, rq``.

    Each pair is a dict of :data:`PAIR_COLUMNS` (without ``case_id``): component labels (1-based, the
    kept predicted components and all reference components in cc3d's order), sizes in voxels, Dice
    2I/(|P|+|R|) and IoU I/(|P|+|R|-I).
    """
    t = check_threshold(threshold)
    inter, ps, rs, pred_ids = intersections(overlap, min_pred_voxels)
    union = ps[:, None] + rs[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)
    match = lesions.match_lesions(iou, t)
    pairs = [{"iou_threshold": t, "pred_lesion": int(pred_ids[i]), "ref_lesion": int(j) + 1, "pred_voxels": int(ps[i]),
              "ref_voxels": int(rs[j]), "intersection_voxels": int(inter[i, j]),
              "dice": 2.0 * inter[i, j] / (ps[i] + rs[j]), "iou": float(iou[i, j])} for i, j in match]
    tp = len(pairs)
    counts = {"tp": tp, "fp": len(ps) - tp, "fn": len(rs) - tp}
    return pairs, {**counts, **quality(tp, counts["fp"], counts["fn"], sum(p["iou"] for p in pairs))}


def pooled_quality(case_counts: pd.DataFrame, pairs: pd.DataFrame) -> dict[str, float]:
    """PQ, SQ, RQ pooled over cases: counts ``tp, fp, fn`` summed, SQ the mean IoU of all ``pairs``.

    Also returns ``tp, fp, fn``, ``n_pairs`` and ``median_pair_dice``. No case: every value NaN.
    """
    tp, fp, fn = (int(case_counts[c].sum()) for c in ("tp", "fp", "fn"))
    out = quality(tp, fp, fn, float(pairs["iou"].sum()) if len(pairs) else 0.0)
    return {**out, "tp": tp, "fp": fp, "fn": fn, "n_pairs": int(len(pairs)),
            "median_pair_dice": float(pairs["dice"].median()) if len(pairs) else math.nan}


def pairs_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """``lesion_pairs.csv`` as a frame with :data:`PAIR_COLUMNS` (also when there is no pair)."""
    return pd.DataFrame(list(rows), columns=list(PAIR_COLUMNS))


def conventions(threshold: float = PQ_IOU_THRESHOLD) -> list[tuple[str, str, str, str]]:
    """``(metric, convention, parameter, value)`` rows of the per-lesion quality (for ``conventions.csv``)."""
    return [
        ("pq, sq, rq", "lesions matched one to one by the detection rule (most pairs with IoU > t, then largest total "
         "IoU); predicted components under the size limit removed first", "pq_iou_threshold", f"{float(threshold):g}"),
        ("pq, sq, rq", "RQ = TP / (TP + FP/2 + FN/2); SQ = mean IoU of the matched pairs; PQ = SQ x RQ", "", ""),
        ("pq, sq, rq", "no lesion on either side: NaN; lesions but no match: PQ 0, RQ 0, SQ NaN", "", ""),
        ("pq, sq, rq", "pooled over cases: TP, FP, FN summed; SQ the mean IoU over every matched pair", "", ""),
        ("lesion pair dice", "2 |P and R| / (|P| + |R|) of each matched pair (lesion_pairs.csv)", "", ""),
    ]
