"""Lesion-wise detection: components, size filter, one-to-one matching and the IoU-sweep FROC.

Paper: "Post-processing for separating lesion-wise components" and "Lesion-wise detection performance
metrics" (Fig. 4, Table 4). Definitions, each a parameter with this default:

- Lesions are 3D connected components, 26-connectivity (``connectivity``). Predicted components
  smaller than 10 voxels (``min_pred_voxels``) are removed; reference components are not filtered.
- Per case and IoU threshold ``t`` the matching is one-to-one and of maximum cardinality among pairs
  whose IoU is strictly greater than ``t``; among matchings of that size, the one of largest total IoU
  (Hungarian assignment with matched-pair priority, as picai_eval does). A matched predicted component
  is a TP; every unmatched predicted component is an FP, including one that overlaps a reference
  lesion already matched to another prediction; every unmatched reference lesion is an FN.
- The paper also describes an FP as a predicted component overlapping no reference component; the
  two definitions differ when a prediction overlaps a reference without being matched. Parameter
  ``fp_definition``: ``"unmatched"`` (default, the matching rule above; FP rises with the threshold)
  or ``"no_overlap"`` (FP does not depend on the threshold). ``lesion_counts`` carries both (``fp``
  and ``fp_no_overlap``), so a FROC under either needs no re-matching.
- Sensitivity is pooled over all reference lesions (sum TP / sum reference lesions); FP/scan is the
  sum of FP over the number of scans. Thresholds 0.05, 0.10, ..., 0.95.

Efficiency: components are labelled once per case; the overlapping pairs come from one joint
histogram of the two label images over the foreground voxels, kept sparse (:func:`sparse_overlap`:
only pairs that share a voxel, since only those have IoU > 0 and can match), so memory grows with the
number of overlaps, not with predicted x reference components; each threshold is then matched per
connected group of overlapping components (:func:`detection_counts` on a sparse IoU matrix).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph
from scipy.optimize import linear_sum_assignment

from amtlib.geometry import bounding_box, max_axial_diameter_mm  # noqa: F401  (part of this module's API)


#: The paper's IoU sweep: 0.05 to 0.95 in steps of 0.05 (rounded so that 0.1 == 0.10 exactly).
IOU_THRESHOLDS: np.ndarray = np.round(np.arange(1, 20) * 0.05, 2)
#: Predicted components below this many voxels are removed before matching.
MIN_PRED_VOXELS: int = 10
#: 3D neighbourhood of connected components (6, 18 or 26).
CONNECTIVITY: int = 26
#: What counts as a lesion FP: every unmatched prediction, or only a prediction overlapping no reference.
FP_DEFINITIONS: tuple[str, ...] = ("unmatched", "no_overlap")
FP_DEFINITION: str = "unmatched"


def check_fp_definition(fp_definition: str) -> str:
    """Return ``fp_definition`` if it is one of :data:`FP_DEFINITIONS`, else raise a ValueError saying so."""
    if fp_definition not in FP_DEFINITIONS:
        raise ValueError(f"fp_definition must be one of {', '.join(FP_DEFINITIONS)}, got {fp_definition!r}")
    return fp_definition


def iou_thresholds(values: "list[float] | np.ndarray | None" = None) -> np.ndarray:
    """The IoU thresholds to sweep: ``values`` rounded to 4 decimals, or the paper's 0.05..0.95."""
    if values is None:
        return IOU_THRESHOLDS.copy()
    t = np.round(np.asarray(values, dtype=float).ravel(), 4)
    if t.size == 0 or np.any((t < 0) | (t >= 1)):
        raise ValueError(f"IoU thresholds must be a non-empty list in [0, 1), got {list(t)}")
    return t


def label_components(mask: np.ndarray, connectivity: int = CONNECTIVITY) -> tuple[np.ndarray, int]:
    """Label the 3D connected components of a (z, y, x) mask (nonzero = foreground) with cc3d.

    Returns ``(labels, n)`` with labels 1..n (0 = background). ``connectivity`` is 6, 18 or 26.
    """
    if connectivity not in (6, 18, 26):
        raise ValueError(f"connectivity must be 6, 18 or 26 (3D), got {connectivity}")
    import cc3d

    labels, n = cc3d.connected_components(np.asarray(mask), connectivity=connectivity, binary_image=True, return_N=True)
    return labels, int(n)


def overlap_table(pred_labels: np.ndarray, n_pred: int, ref_labels: np.ndarray, n_ref: int) -> np.ndarray:
    """Joint voxel histogram ``J`` of two label images, shape ``(n_pred + 1, n_ref + 1)``.

    ``J[i, j]`` counts voxels with predicted label i and reference label j (0 = background); ``J[0, 0]``
    is left at 0. Row sums are predicted component sizes, column sums reference sizes, and
    ``J[1:, 1:].sum()``, ``J[1:, 0].sum()``, ``J[0, 1:].sum()`` the voxel TP, FP, FN of the raw masks.
    Only foreground voxels are visited.
    """
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"label images differ in shape: {pred_labels.shape} != {ref_labels.shape}")
    p = pred_labels.ravel()
    r = ref_labels.ravel()
    fg = np.flatnonzero(p | r)
    code = p[fg].astype(np.int64) * (n_ref + 1) + r[fg]
    return np.bincount(code, minlength=(n_pred + 1) * (n_ref + 1)).reshape(n_pred + 1, n_ref + 1)


@dataclass(frozen=True)
class Overlap:
    """Sparse overlap of two label images: component sizes and the voxel counts of overlapping pairs.

    ``pred_sizes`` (n_pred,) and ``ref_sizes`` (n_ref,) in voxels, components 1..n at index 0..n-1;
    ``rows``, ``cols``, ``inter``: the (pred index, ref index, shared voxels) of every pair sharing at
    least one voxel. The voxel TP/FP/FN of the raw masks are properties.
    """

    pred_sizes: np.ndarray
    ref_sizes: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    inter: np.ndarray

    @property
    def tp_voxels(self) -> int:
        return int(self.inter.sum())

    @property
    def fp_voxels(self) -> int:
        return int(self.pred_sizes.sum()) - self.tp_voxels

    @property
    def fn_voxels(self) -> int:
        return int(self.ref_sizes.sum()) - self.tp_voxels


def sparse_overlap(pred_labels: np.ndarray, n_pred: int, ref_labels: np.ndarray, n_ref: int) -> Overlap:
    """The :class:`Overlap` of two label images (0 = background), visiting only foreground voxels.

    Same counts as :func:`overlap_table` without its ``(n_pred + 1) x (n_ref + 1)`` array: memory
    grows with the foreground and the number of overlapping pairs.
    """
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"label images differ in shape: {pred_labels.shape} != {ref_labels.shape}")
    p = pred_labels.ravel()
    r = ref_labels.ravel()
    fg = np.flatnonzero(p | r)
    pf, rf = p[fg].astype(np.int64), r[fg].astype(np.int64)
    both = (pf > 0) & (rf > 0)
    code, inter = np.unique(pf[both] * (n_ref + 1) + rf[both], return_counts=True)
    return Overlap(np.bincount(pf, minlength=n_pred + 1)[1:], np.bincount(rf, minlength=n_ref + 1)[1:],
                   code // (n_ref + 1) - 1, code % (n_ref + 1) - 1, inter)


def sparse_lesion_iou(overlap: Overlap, min_pred_voxels: int = MIN_PRED_VOXELS) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
    """Sparse IoU matrix (kept predicted x reference components) of an :class:`Overlap`.

    As :func:`lesion_iou`: predicted components under ``min_pred_voxels`` are dropped (rows removed),
    reference components all kept; pairs that share no voxel (IoU 0) are not stored.
    Returns ``(iou, pred_sizes, ref_sizes)`` with the sizes of the kept components.
    """
    keep = overlap.pred_sizes >= min_pred_voxels
    new_row = np.cumsum(keep) - 1
    sel = keep[overlap.rows]
    rows, cols, inter = new_row[overlap.rows[sel]], overlap.cols[sel], overlap.inter[sel].astype(float)
    pred_sizes = overlap.pred_sizes[keep]
    iou = inter / (pred_sizes[rows] + overlap.ref_sizes[cols] - inter)
    shape = (int(keep.sum()), len(overlap.ref_sizes))
    return sparse.csr_matrix((iou, (rows, cols)), shape=shape), pred_sizes, overlap.ref_sizes


def lesion_iou(joint: np.ndarray, min_pred_voxels: int = MIN_PRED_VOXELS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairwise IoU of predicted (rows) and reference (columns) components from an overlap table.

    Paper: Post-processing for separating lesion-wise components. Predicted components with fewer than
    ``min_pred_voxels`` voxels are dropped (rows removed); reference components are all kept.
    Returns ``(iou, pred_sizes, ref_sizes)`` with the sizes in voxels of the kept components.
    """
    pred_sizes = joint[1:, :].sum(axis=1)
    ref_sizes = joint[:, 1:].sum(axis=0)
    keep = pred_sizes >= min_pred_voxels
    inter = joint[1:, 1:][keep].astype(float)
    union = pred_sizes[keep, None] + ref_sizes[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou, pred_sizes[keep], ref_sizes


def lesion_iou_from_masks(
    pred: np.ndarray, ref: np.ndarray, min_pred_voxels: int = MIN_PRED_VOXELS, connectivity: int = CONNECTIVITY
) -> np.ndarray:
    """IoU matrix (kept predicted components x reference components) of two (z, y, x) masks."""
    pl, n_pred = label_components(pred, connectivity)
    rl, n_ref = label_components(ref, connectivity)
    return lesion_iou(overlap_table(pl, n_pred, rl, n_ref), min_pred_voxels)[0]


def match_lesions(iou: np.ndarray, threshold: float) -> np.ndarray:
    """One-to-one matching of predicted (rows) to reference (columns) lesions at IoU > ``threshold``.

    Paper: Lesion-wise detection performance metrics. Maximum cardinality among pairs with IoU strictly
    above ``threshold``, then maximum total IoU: the Hungarian algorithm maximises the weight
    ``(iou > t) * (BIG + iou)`` with ``BIG = min(shape) + 1``, which exceeds any possible total IoU,
    so one more matched pair always outweighs a higher IoU sum. Returns an int array ``(k, 2)`` of
    ``(pred_index, ref_index)`` pairs; ``(0, 2)`` when nothing qualifies.
    """
    iou = np.asarray(iou, dtype=float)
    eligible = iou > threshold
    if not eligible.any():
        return np.zeros((0, 2), dtype=int)
    weight = np.where(eligible, min(iou.shape) + 1.0 + iou, 0.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    ok = eligible[rows, cols]
    return np.column_stack([rows[ok], cols[ok]]).astype(int)


def detection_counts(iou: "np.ndarray | sparse.spmatrix", thresholds: np.ndarray = IOU_THRESHOLDS,
                     fp_definition: str = FP_DEFINITION) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lesion TP, FP, FN of one case at each threshold, from its IoU matrix (pred x ref).

    Paper: Lesion-wise detection performance metrics. TP = matched pairs, FN = reference lesions minus
    TP. FP (``fp_definition``): ``"unmatched"`` = predicted components minus TP; ``"no_overlap"`` =
    predicted components whose IoU with every reference is 0 (the same at every threshold). An empty
    prediction gives FN = number of reference lesions; an empty reference gives FP only. ``iou`` may be
    dense or sparse (:func:`sparse_lesion_iou`); a sparse one is matched per connected group of
    eligible pairs (:func:`matched_pairs_sparse`), with the same result.
    """
    check_fp_definition(fp_definition)
    n_pred, n_ref = iou.shape
    if sparse.issparse(iou):
        tp = np.array([matched_pairs_sparse(iou, t) for t in thresholds], dtype=np.int64)
    else:
        tp = np.array([len(match_lesions(iou, t)) for t in thresholds], dtype=np.int64)
    if fp_definition == "no_overlap":
        overlaps = (np.asarray((iou > 0).sum(axis=1)).ravel() > 0) if sparse.issparse(iou) else (np.asarray(iou) > 0).any(axis=1)
        alone = int((~overlaps).sum()) if n_pred else 0
        return tp, np.full(len(tp), alone, dtype=np.int64), n_ref - tp
    return tp, n_pred - tp, n_ref - tp


def matched_pairs_sparse(iou: sparse.spmatrix, threshold: float) -> int:
    """Number of pairs :func:`match_lesions` matches at ``threshold``, from a sparse IoU matrix.

    The eligible pairs (IoU > ``threshold``) form a bipartite graph; a matching never joins two of its
    connected groups, so maximum cardinality then maximum total IoU is reached group by group. A group
    of one pair is one match; a larger group is matched densely on its own rows and columns.
    """
    coo = sparse.coo_matrix(iou)
    ok = coo.data > threshold
    rows, cols, w = coo.row[ok], coo.col[ok], coo.data[ok]
    if rows.size == 0:
        return 0
    n_rows, n_cols = iou.shape
    graph = sparse.coo_matrix((np.ones(rows.size), (rows, n_rows + cols)), shape=(n_rows + n_cols,) * 2)
    _, label = csgraph.connected_components(graph, directed=False)
    group = label[rows]
    ids, size = np.unique(group, return_counts=True)
    total = int((size == 1).sum())
    for g in ids[size > 1]:
        sel = group == g
        r_ids, r = np.unique(rows[sel], return_inverse=True)
        c_ids, c = np.unique(cols[sel], return_inverse=True)
        block = np.zeros((len(r_ids), len(c_ids)))
        block[r, c] = w[sel]
        total += len(match_lesions(block, threshold))
    return total
