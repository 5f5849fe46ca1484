"""Lesion components, size filter, matching and FROC on hand-made phantoms with exact IoUs."""

from __future__ import annotations

import itertools
from fractions import Fraction as F

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from amtlib.evaluation import lesions, stats
from amtlib.evaluation.lesions import IOU_THRESHOLDS, detection_counts, lesion_iou_from_masks, match_lesions, max_axial_diameter_mm

SHAPE = (1, 14, 40)


def boxes(*spec: tuple[int, int, int, int]) -> np.ndarray:
    """Mask of SHAPE with each (row0, row1, col0, col1) box (end exclusive) set, in slice 0."""
    m = np.zeros(SHAPE, dtype=bool)
    for r0, r1, c0, c1 in spec:
        m[0, r0:r1, c0:c1] = True
    return m


def at(t: float, counts: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[int, int, int]:
    i = int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, t))[0])
    return int(counts[0][i]), int(counts[1][i]), int(counts[2][i])


REF = (0, 10, 0, 10)  # 100 voxels

# name, prediction boxes, reference boxes, exact IoU matrix (pred x ref), {threshold: (TP, FP, FN)}
PHANTOMS = [
    ("perfect", [REF], [REF], [[F(1)]], {0.05: (1, 0, 0), 0.95: (1, 0, 0)}),
    # shifted 4 columns: 60 / 140
    ("shifted, IoU = 3/7", [(0, 10, 4, 14)], [REF], [[F(3, 7)]], {0.4: (1, 0, 0), 0.45: (0, 1, 1)}),
    # one lesion predicted in two pieces (row 5 missing): 50/100 and 40/100; the second piece is FP
    ("split, IoU = 1/2 and 2/5", [(0, 5, 0, 10), (6, 10, 0, 10)], [REF], [[F(1, 2)], [F(2, 5)]],
     {0.3: (1, 1, 0), 0.45: (1, 1, 0), 0.5: (0, 2, 1)}),
    # two lesions 2 columns apart covered by one prediction of 220 voxels: 100/220 each
    ("merged, IoU = 5/11 twice", [(0, 10, 0, 22)], [REF, (0, 10, 12, 22)], [[F(5, 11), F(5, 11)]],
     {0.45: (1, 0, 1), 0.5: (0, 1, 2)}),
    # a 9-voxel speck is removed, a 10-voxel one stays and is an FP
    ("specks of 9 and 10 voxels", [REF, (12, 13, 20, 29), (12, 13, 30, 40)], [REF], [[F(1)], [F(0)]],
     {0.05: (1, 1, 0), 0.95: (1, 1, 0)}),
    ("empty prediction", [], [REF], np.zeros((0, 1)), {0.05: (0, 0, 1), 0.95: (0, 0, 1)}),
    ("empty reference", [REF], [], np.zeros((1, 0)), {0.05: (0, 1, 0)}),
    # greedy takes A-ref1 (20/37) and leaves B; the maximum matching is A-ref2 (8/49) + B-ref1 (1/10)
    ("greedy trap, IoU = 20/37, 8/49, 1/10", [(0, 8, 0, 16), (9, 10, 0, 10)], [REF, (0, 10, 12, 22)],
     [[F(20, 37), F(8, 49)], [F(1, 10), F(0)]], {0.05: (2, 0, 0), 0.1: (1, 1, 1), 0.15: (1, 1, 1), 0.55: (0, 2, 2)}),
]


@pytest.mark.parametrize("name, pred, ref, iou, expected", PHANTOMS, ids=[p[0] for p in PHANTOMS])
def test_phantom_iou_and_counts(name, pred, ref, iou, expected):
    got = lesion_iou_from_masks(boxes(*pred), boxes(*ref))
    want = np.array(iou, dtype=float).reshape(got.shape if np.size(iou) == 0 else np.shape(iou))
    # components are labelled in raster order, so rows/cols follow the box order above
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    counts = detection_counts(got)
    for t, tpfpfn in expected.items():
        assert at(t, counts) == tpfpfn, f"{name} at IoU {t}"


def greedy_match(iou: np.ndarray, t: float) -> list[tuple[int, int]]:
    """Independent greedy matcher (highest IoU first), as naive FROC code does."""
    pairs, used_p, used_r = [], set(), set()
    for i, j in sorted(np.argwhere(iou > t).tolist(), key=lambda ij: -iou[ij[0], ij[1]]):
        if i not in used_p and j not in used_r:
            pairs.append((i, j))
            used_p.add(i)
            used_r.add(j)
    return pairs


def test_greedy_finds_fewer_matches_than_maximum_cardinality():
    iou = lesion_iou_from_masks(boxes((0, 8, 0, 16), (9, 10, 0, 10)), boxes(REF, (0, 10, 12, 22)))
    assert len(greedy_match(iou, 0.05)) == 1
    assert sorted(map(tuple, match_lesions(iou, 0.05))) == [(0, 1), (1, 0)]


def test_equal_cardinality_prefers_larger_total_iou():
    iou = np.array([[0.6, 0.5], [0.5, 0.2]])
    assert sorted(map(tuple, match_lesions(iou, 0.1))) == [(0, 1), (1, 0)]  # 1.0 beats greedy's 0.8
    assert sum(iou[i, j] for i, j in greedy_match(iou, 0.1)) == pytest.approx(0.8)


def test_threshold_is_strict():
    iou = np.array([[0.5]])
    assert len(match_lesions(iou, 0.5)) == 0
    assert len(match_lesions(iou, 0.45)) == 1


def brute_force_best(iou: np.ndarray, t: float) -> tuple[int, float]:
    """(cardinality, total IoU) of the best one-to-one matching by enumeration."""
    n_p, n_r = iou.shape
    best = (0, 0.0)
    for k in range(min(n_p, n_r), 0, -1):
        for rows in itertools.combinations(range(n_p), k):
            for cols in itertools.permutations(range(n_r), k):
                vals = [iou[i, j] for i, j in zip(rows, cols)]
                if all(v > t for v in vals):
                    best = max(best, (k, sum(vals)))
        if best[0]:
            return best
    return best


def test_matching_equals_brute_force_on_random_matrices():
    rng = np.random.default_rng(1)
    for _ in range(200):
        shape = tuple(rng.integers(1, 5, size=2))
        iou = np.where(rng.random(shape) < 0.5, rng.random(shape), 0.0)
        t = float(rng.choice(IOU_THRESHOLDS))
        pairs = match_lesions(iou, t)
        assert len(set(pairs[:, 0])) == len(pairs) and len(set(pairs[:, 1])) == len(pairs)
        k, total = brute_force_best(iou, t)
        assert len(pairs) == k
        assert iou[pairs[:, 0], pairs[:, 1]].sum() == pytest.approx(total)


def test_26_connectivity_joins_corner_neighbours():
    m = np.zeros((3, 3, 3), dtype=bool)
    m[0, 0, 0] = m[1, 1, 1] = m[2, 2, 2] = True
    assert lesions.label_components(m, 26)[1] == 1
    assert lesions.label_components(m, 6)[1] == 3
    with pytest.raises(ValueError, match="connectivity"):
        lesions.label_components(m, 8)


def test_components_match_scipy_ndimage_label():
    rng = np.random.default_rng(0)
    for density in (0.05, 0.2, 0.35):
        m = rng.random((12, 20, 24)) < density
        ours, n = lesions.label_components(m, 26)
        theirs, n_ref = ndimage.label(m, structure=np.ones((3, 3, 3)))
        assert n == n_ref
        pairs = {(a, b) for a, b in zip(ours[m].tolist(), theirs[m].tolist())}
        assert len(pairs) == n  # the two labellings are the same partition up to renumbering
        assert np.array_equal(ours > 0, m)


def test_overlap_table_counts_voxels():
    pl = np.array([[[0, 1, 1, 2, 0]]])
    rl = np.array([[[1, 1, 0, 2, 2]]])
    j = lesions.overlap_table(pl, 2, rl, 2)
    # voxel pairs (p, r): (0,1) (1,1) (1,0) (2,2) (0,2)
    np.testing.assert_array_equal(j, [[0, 1, 1], [1, 1, 0], [0, 0, 1]])


def test_iou_thresholds_default_and_validation():
    t = lesions.iou_thresholds()
    assert len(t) == 19 and t[0] == 0.05 and t[-1] == 0.95 and 0.1 in t and 0.5 in t
    np.testing.assert_array_equal(lesions.iou_thresholds([0.1, 0.5]), [0.1, 0.5])
    with pytest.raises(ValueError):
        lesions.iou_thresholds([1.2])


# --- maximum axial diameter -------------------------------------------------------------------------


def line_mask(n: int) -> np.ndarray:
    m = np.zeros((3, 4, 100), dtype=bool)
    m[1, 2, :n] = True
    return m


@pytest.mark.parametrize("n, expected", [(49, 49.0), (50, 50.0), (80, 80.0), (81, 81.0)])
def test_diameter_of_a_line_counts_whole_pixels(n, expected):
    assert max_axial_diameter_mm(line_mask(n), (5.0, 1.0, 1.0)) == pytest.approx(expected, abs=1e-9)


def test_diameter_rectangle_anisotropic_and_max_over_slices():
    m = np.zeros((2, 10, 10), dtype=bool)
    m[0, 0:3, 0:4] = True  # 3 x 4 pixels: outline points (0, -0.5) and (2, 3.5)
    assert max_axial_diameter_mm(m, (1, 1, 1)) == pytest.approx(np.sqrt(2**2 + 4**2))
    assert max_axial_diameter_mm(m, (1, 2.0, 0.5)) == pytest.approx(max(np.hypot(4, 2), np.hypot(6, 1.5)))
    m[1, 0:6, 0:6] = True
    assert max_axial_diameter_mm(m, (1, 1, 1)) == pytest.approx(np.hypot(5, 6))
    assert np.isnan(max_axial_diameter_mm(np.zeros((2, 3, 3)), (1, 1, 1)))


def test_diameter_matches_pyradiomics_maximum_2d_diameter_slice():
    sitk = pytest.importorskip("SimpleITK")
    shape_mod = pytest.importorskip("radiomics.shape")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :50]
    for _ in range(3):
        m = np.zeros((5, 40, 50), np.uint8)
        a, b = rng.uniform(5, 15, 2)
        m[1:4] = ((yy - 20 - rng.uniform(-2, 2)) / a) ** 2 + ((xx - 25) / b) ** 2 <= 1
        m[2, 5:8, 5:30] = 1
        spacing = (5.0, 0.7, 0.9)
        img = sitk.GetImageFromArray(rng.normal(size=m.shape))
        msk = sitk.GetImageFromArray(m)
        img.SetSpacing(spacing[::-1])
        msk.SetSpacing(spacing[::-1])
        theirs = shape_mod.RadiomicsShape(img, msk).getMaximum2DDiameterSliceFeatureValue()
        assert max_axial_diameter_mm(m, spacing) == pytest.approx(theirs, rel=1e-9)


# --- FROC ----------------------------------------------------------------------------------------------


def counts_frame(rows: dict[str, tuple[int, int, int]], thresholds=(0.1, 0.5)) -> pd.DataFrame:
    return pd.DataFrame([{"case_id": c, "iou_threshold": t, "tp": tp, "fp": fp, "fn": fn}
                         for c, (tp, fp, fn) in rows.items() for t in thresholds])


def test_froc_pools_lesions_and_scans():
    froc = stats.froc_curve(counts_frame({"a": (1, 1, 0), "b": (0, 0, 2), "c": (1, 2, 0)}), n_resamples=200)
    assert list(froc.columns) == ["iou_threshold", "sensitivity", "sensitivity_sd", "sensitivity_ci_low",
                                  "sensitivity_ci_high", "fp_per_scan", "fp_per_scan_sd", "fp_per_scan_ci_low",
                                  "fp_per_scan_ci_high", "tp", "fn", "fp", "n_ref_lesions", "n_scans"]
    row = froc.iloc[0]
    assert row.sensitivity == pytest.approx(2 / 4)  # pooled, not the mean of per-case 1, 0, 1
    assert row.fp_per_scan == pytest.approx(3 / 3)
    assert (row.tp, row.fn, row.fp, row.n_ref_lesions, row.n_scans) == (2, 2, 3, 4, 3)
    assert row.sensitivity_ci_low <= row.sensitivity <= row.sensitivity_ci_high
    assert row.sensitivity_sd > 0


def test_froc_bootstrap_is_seeded_and_degenerate_when_cases_agree():
    c = counts_frame({str(i): (1, i % 3, i % 2) for i in range(20)})
    a, b = stats.froc_curve(c, 300, seed=3), stats.froc_curve(c, 300, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert not stats.froc_curve(c, 300, seed=4).equals(a)
    same = stats.froc_curve(counts_frame({str(i): (1, 1, 0) for i in range(10)}), 300)
    assert (same.sensitivity_sd == 0).all() and (same.sensitivity_ci_low == 1).all()
    assert (same.fp_per_scan_ci_high == 1).all()


def test_bounding_box_tight_padded_and_clipped():
    m = np.zeros((5, 8, 8), bool)
    m[2, 3:5, 1] = True
    assert lesions.bounding_box(m) == (slice(2, 3), slice(3, 5), slice(1, 2))
    assert lesions.bounding_box(m, (1, 2, 3)) == (slice(1, 4), slice(1, 7), slice(0, 5))  # x clipped at 0
    assert lesions.bounding_box(np.zeros((2, 2, 2))) is None


# FP definitions on the phantoms: "unmatched" counts a split piece or a lesion merged past the threshold;
# "no_overlap" counts only a component touching no reference (the 10-voxel speck), at every threshold.
@pytest.mark.parametrize("name, pred, ref, t, unmatched, no_overlap", [
    ("split, IoU = 1/2 and 2/5", [(0, 5, 0, 10), (6, 10, 0, 10)], [REF], 0.45, 1, 0),
    ("split, IoU = 1/2 and 2/5", [(0, 5, 0, 10), (6, 10, 0, 10)], [REF], 0.5, 2, 0),
    ("merged, IoU = 5/11 twice", [(0, 10, 0, 22)], [REF, (0, 10, 12, 22)], 0.5, 1, 0),
    ("speck of 10 voxels", [REF, (12, 13, 30, 40)], [REF], 0.95, 1, 1),
    ("empty reference", [REF], [], 0.05, 1, 1),
])
def test_fp_definitions_on_phantoms(name, pred, ref, t, unmatched, no_overlap):
    iou = lesion_iou_from_masks(boxes(*pred), boxes(*ref))
    assert at(t, detection_counts(iou, fp_definition="unmatched"))[1] == unmatched
    tp, fp, fn = detection_counts(iou, fp_definition="no_overlap")
    assert at(t, (tp, fp, fn))[1] == no_overlap
    assert len(set(fp.tolist())) == 1  # threshold-independent
    # TP and FN do not depend on the definition; unmatched conserves TP + FP = predictions
    tp_u, fp_u, fn_u = detection_counts(iou)
    assert np.array_equal(tp, tp_u) and np.array_equal(fn, fn_u)
    assert np.all(tp_u + fp_u == iou.shape[0])


def test_fp_definition_is_validated_and_selects_the_column():
    with pytest.raises(ValueError, match="fp_definition must be one of unmatched, no_overlap"):
        detection_counts(np.zeros((1, 1)), fp_definition="overlap")
    c = counts_frame({"a": (1, 2, 0), "b": (0, 1, 1)})
    with pytest.raises(ValueError, match="no 'fp_no_overlap' column"):
        stats.froc_curve(c, 50, fp_definition="no_overlap")
    c["fp_no_overlap"] = 0
    froc = stats.froc_curve(c, 50, fp_definition="no_overlap")
    assert (froc["fp_per_scan"] == 0).all() and (froc["fp"] == 0).all()
    assert (stats.froc_curve(c, 50)["fp_per_scan"] == 1.5).all()
