"""Per-lesion quality: matched pairs, PQ = SQ x RQ on exact phantoms (IoU 5/7 and 7/13), the empty rules,
pooling over cases, and panoptica's numbers on random phantoms (skipped without panoptica)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from amtlib.evaluation import lesions, panoptic


def overlap_of(pred: np.ndarray, ref: np.ndarray) -> lesions.Overlap:
    pl, n_p = lesions.label_components(pred)
    rl, n_r = lesions.label_components(ref)
    return lesions.sparse_overlap(pl, n_p, rl, n_r)


def phantom() -> tuple[np.ndarray, np.ndarray]:
    """Two matched lesions (IoU 5/7 and 7/13), one FP of 30 voxels, one missed lesion, one 4-voxel speck."""
    ref = np.zeros((10, 30, 30), np.uint8)
    pred = np.zeros_like(ref)
    ref[1:4, 2:8, 2:8] = 1
    pred[1:4, 2:8, 3:9] = 1  # 90 shared of 108 + 108: IoU 90/126 = 5/7
    ref[5:8, 15:25, 15:25] = 1
    pred[5:8, 15:25, 18:28] = 1  # 210 shared of 300 + 300: IoU 210/390 = 7/13
    pred[1:3, 20:25, 2:5] = 1  # FP, 30 voxels
    ref[7:9, 2:6, 20:24] = 1  # FN
    pred[9, 28:30, 28:30] = 1  # 4 voxels: removed (< 10) before matching
    return pred, ref


def test_pairs_and_quality_of_an_exact_phantom():
    pred, ref = phantom()
    pairs, q = panoptic.case_pairs(overlap_of(pred, ref), 0.5)
    assert (q["tp"], q["fp"], q["fn"]) == (2, 1, 1)
    by_iou = sorted(pairs, key=lambda p: p["iou"])
    assert [p["iou"] for p in by_iou] == pytest.approx([7 / 13, 5 / 7])
    assert [p["dice"] for p in by_iou] == pytest.approx([0.7, 5 / 6])  # 2 IoU / (1 + IoU)
    assert [(p["pred_voxels"], p["ref_voxels"], p["intersection_voxels"]) for p in by_iou] == [(300, 300, 210), (108, 108, 90)]
    sq, rq = (5 / 7 + 7 / 13) / 2, 2 / (2 + 1 / 2 + 1 / 2)
    assert (q["sq"], q["rq"], q["pq"]) == pytest.approx((sq, rq, sq * rq))
    # at 0.6 only the 5/7 pair is matched: TP 1, FP 2, FN 2
    pairs, q = panoptic.case_pairs(overlap_of(pred, ref), 0.6)
    assert len(pairs) == 1 and (q["tp"], q["fp"], q["fn"]) == (1, 2, 2)
    assert q["pq"] == pytest.approx(5 / 7 * 1 / (1 + 1 + 1))


def test_empty_rules_and_pooling():
    empty = np.zeros((4, 8, 8), np.uint8)
    _, q = panoptic.case_pairs(overlap_of(empty, empty))
    assert all(math.isnan(q[k]) for k in ("pq", "sq", "rq"))
    ref = empty.copy()
    ref[1:3, 2:6, 2:6] = 1
    _, q = panoptic.case_pairs(overlap_of(empty, ref))
    assert (q["pq"], q["rq"], q["fn"]) == (0.0, 0.0, 1) and math.isnan(q["sq"])
    pred, ref2 = phantom()
    rows, counts = [], []
    for cid, (p, r) in {"a": (pred, ref2), "b": (empty, ref)}.items():
        pairs, q = panoptic.case_pairs(overlap_of(p, r))
        rows += [{"case_id": cid, **x} for x in pairs]
        counts.append(q)
    pooled = panoptic.pooled_quality(pd.DataFrame(counts), panoptic.pairs_frame(rows))
    assert (pooled["tp"], pooled["fp"], pooled["fn"], pooled["n_pairs"]) == (2, 1, 2, 2)
    assert pooled["rq"] == pytest.approx(2 / 3.5) and pooled["sq"] == pytest.approx((5 / 7 + 7 / 13) / 2)
    with pytest.raises(ValueError, match="threshold"):
        panoptic.check_threshold(1.0)


def random_phantom(rng: np.random.Generator, shape=(12, 40, 40)) -> tuple[np.ndarray, np.ndarray]:
    """Boxes for references; predictions shifted, resized or dropped, plus FP boxes, all >= 10 voxels."""
    ref, pred = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        size = rng.integers(4, 10, 3)
        lo = [int(rng.integers(0, s - z)) for s, z in zip(shape, size)]
        ref[tuple(slice(a, a + z) for a, z in zip(lo, size))] = 1
        if rng.random() < 0.8:
            lo2 = [min(max(a + int(rng.integers(-1, 2)), 0), s - z) for a, s, z in zip(lo, shape, size)]
            pred[tuple(slice(a, a + z) for a, z in zip(lo2, size))] = 1
    if rng.random() < 0.5:
        pred[0:3, 0:4, 0:4] = 1
    return pred, ref


def test_agrees_with_panoptica_on_random_phantoms():
    """panoptica's connected components, naive matching at IoU > 0.5 (unique there, so both pick the same
    pairs) and its PQ, SQ, RQ; our size filter is off (panoptica has none)."""
    pytest.importorskip("panoptica", reason="pip install panoptica (it pins numpy < 2.3, so it is not in the test "
                                            "extra); benchmarks/crosscheck_panoptica.py runs this check on its own")
    from panoptica import ConnectedComponentsInstanceApproximator, InputType, NaiveThresholdMatching, Panoptica_Evaluator
    from panoptica.metrics import Metric

    evaluator = Panoptica_Evaluator(expected_input=InputType.SEMANTIC,
                                    instance_approximator=ConnectedComponentsInstanceApproximator(),
                                    instance_matcher=NaiveThresholdMatching(matching_metric=Metric.IOU, matching_threshold=0.5,
                                                                            strict_threshold=True), verbose=False)
    rng = np.random.default_rng(11)
    for _ in range(10):
        pred, ref = random_phantom(rng)
        _, q = panoptic.case_pairs(overlap_of(pred, ref), 0.5, min_pred_voxels=1)
        theirs = evaluator.evaluate(pred, ref, verbose=False)["ungrouped"]
        assert (q["tp"], q["fp"], q["fn"]) == (theirs.tp, theirs.fp, theirs.fn)
        for k in ("pq", "rq"):
            assert q[k] == pytest.approx(getattr(theirs, k))
        if q["tp"]:
            assert q["sq"] == pytest.approx(theirs.sq)
