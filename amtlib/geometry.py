"""Per-case geometry of a (z, y, x) mask: its bounding box and its largest axial diameter.

Ground layer (imports nothing from amtlib): the synthetic cohort sizes its tumours with the same
diameter the evaluation's size subgroups use (paper Tables 3-4: < 5, 5-8, > 8 cm), and every caller
crops to the same box. :mod:`amtlib.evaluation.lesions` re-exports both as part of its API.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist


def bounding_box(mask: np.ndarray, pad: Sequence[int] = (0, 0, 0)) -> tuple[slice, slice, slice] | None:
    """Slices of the smallest box holding every nonzero voxel of a (z, y, x) mask; None when empty.

    Components, overlaps and diameters inside this box equal those of the whole volume, so callers
    crop to it before labelling (CT masks are mostly background). ``pad`` widens the box by that many
    voxels per axis, clipped to the volume (room for a shell around the mask).
    """
    m = np.asarray(mask)
    m = m if m.dtype == bool else m != 0
    axes = [np.flatnonzero(m.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if axes[0].size == 0:
        return None
    return tuple(slice(max(int(a[0]) - p, 0), min(int(a[-1]) + 1 + p, n))  # type: ignore[return-value]
                 for a, p, n in zip(axes, pad, m.shape))


def max_axial_diameter_mm(mask: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Largest in-plane (Feret) diameter of a (z, y, x) mask over its axial slices, in mm.

    Paper: tumour size, "maximum diameter measured in the axial plane" (Tables 3-4 size subgroups).
    The outline is the pixel boundary as marching squares traces it: points halfway between a
    foreground pixel and a background 4-neighbour, so a row of n pixels of width s measures n * s
    (as pyradiomics' Maximum2DDiameterSlice). Distances use the (y, x) ``spacing`` in mm; only each
    row's and column's extreme points are needed (they span the convex hull). NaN for an empty mask.
    """
    m = np.asarray(mask) != 0
    box = bounding_box(m)
    if box is None:
        return float("nan")
    sub = m[box]
    sy, sx = float(spacing[1]), float(spacing[2])
    best = 0.0
    for sl in sub:
        rows = np.flatnonzero(sl.any(axis=1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(sl.any(axis=0))
        r, c = sl[rows], sl[:, cols]
        left, right = r.argmax(axis=1), r.shape[1] - 1 - r[:, ::-1].argmax(axis=1)
        top, bottom = c.argmax(axis=0), c.shape[0] - 1 - c[::-1, :].argmax(axis=0)
        ys = np.concatenate([rows, rows, top - 0.5, bottom + 0.5])
        xs = np.concatenate([left - 0.5, right + 0.5, cols, cols])
        best = max(best, _max_pairwise_distance(np.column_stack([ys * sy, xs * sx])))
    return best


def _max_pairwise_distance(points: np.ndarray) -> float:
    """Largest distance between any two points (n, 2); hull vertices suffice when the hull exists."""
    if len(points) > 16:
        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # collinear outline (a one-pixel-wide line): fall back to all points
            pass
    return float(pdist(points).max()) if len(points) > 1 else 0.0
