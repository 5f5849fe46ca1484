"""Figures of the failure analysis: feature box plots, Dice against size, and paper Figs 5 and 6.

Paper Figs 5 (best cases, axial views plus sagittal and coronal of one case) and 6 (failure modes):
reference outlined in orange, prediction in blue, CT in a mediastinal window. Slices are chosen where
the shown voxels are most numerous and cropped around reference and prediction.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from amtlib.evaluation.failure import CaseVolumes, structure_mask
from amtlib.figures import ARROW_COLOUR, PREDICTION_COLOUR, REFERENCE_COLOUR, show_slice
from amtlib.subgroups import SIZE_EDGES_MM

#: Group colours of the box plots (bottom = failures, top = successes).
GROUP_PALETTE: dict[str, str] = {"bottom": "#d62728", "top": "#2ca02c"}
VIEWS: tuple[str, ...] = ("axial", "coronal", "sagittal")
_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}


def plot_feature_boxes(
    features: pd.DataFrame,
    columns: dict[str, str],
    tests: pd.DataFrame | None = None,
    group_col: str = "group",
    order: Sequence[str] = ("bottom", "top"),
    seed: int = 0,
) -> plt.Figure:
    """Box and strip plot of each feature by group, one panel per ``columns`` item (label -> column).

    The panel title carries the regenerated p-value from ``tests`` (column ``feature``) when given.
    Missing values (failed extractions) are not drawn. The strip plot's horizontal jitter is drawn
    from ``seed``, so the figure is the same on every run.
    """
    import seaborn as sns

    fig, axes = plt.subplots(1, len(columns), figsize=(2.6 * len(columns), 3.2), squeeze=False)
    p_values = {} if tests is None else dict(zip(tests["feature"], tests["p_value"]))
    for ax, (label, col) in zip(axes[0], columns.items()):
        data = features[[group_col, col]].dropna()
        kw = dict(data=data, x=group_col, y=col, order=list(order), hue=group_col, hue_order=list(order), palette=GROUP_PALETTE, legend=False, ax=ax)
        sns.boxplot(showfliers=False, width=0.55, boxprops={"alpha": 0.5}, **kw)
        with _seeded_global_rng(seed):  # seaborn draws the jitter from numpy's global generator
            sns.stripplot(size=3.5, jitter=0.15, edgecolor="black", linewidth=0.3, **kw)
        p = p_values.get(col)
        ax.set_title(label if p is None or p != p else f"{label}\np = {p:.3f}", fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel(col.removeprefix("original_").replace("_", " "), fontsize=8)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


@contextmanager
def _seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed numpy's global generator for the block, then restore its previous state."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def plot_dice_vs_size(
    table: pd.DataFrame,
    size_col: str = "max_axial_diameter_mm",
    dice_col: str = "dice",
    groups: pd.DataFrame | None = None,
    bins_mm: Sequence[float] = SIZE_EDGES_MM,
) -> plt.Figure:
    """Dice of each case against tumour size, with the paper's size-bin edges (50 and 80 mm) marked.

    Cases in ``groups`` (``case_id, group``) are coloured by group; the rest are grey.
    """
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    data = table[["case_id", size_col, dice_col]].copy()
    membership = {} if groups is None else dict(zip(groups["case_id"], groups["group"]))
    data["group"] = [membership.get(c, "others") for c in data["case_id"]]
    colours = {"others": "#9e9e9e", **GROUP_PALETTE}
    for name in ("others", "bottom", "top"):
        part = data[data["group"] == name]
        if not part.empty:
            ax.scatter(part[size_col], part[dice_col], s=16, c=colours[name], label=f"{name} (n={len(part)})", alpha=0.85, edgecolors="none")
    for edge in bins_mm:
        ax.axvline(edge, color="black", linestyle="--", linewidth=0.8)
        ax.text(edge, 1.02, f" {edge:g} mm", fontsize=7, va="bottom", ha="left", transform=ax.get_xaxis_transform())
    ax.set_xlabel("maximum axial diameter (mm)" if size_col == "max_axial_diameter_mm" else size_col)
    ax.set_ylabel("Dice")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class Panel:
    """One 2D view: HU slice, reference and prediction masks, pixel spacing (rows, cols) in mm, title,
    and the (row, col) an arrowhead points at (the paper's Fig 6 marks each error so), if any."""

    image: np.ndarray
    reference: np.ndarray
    prediction: np.ndarray
    spacing: tuple[float, float]
    title: str
    arrow_at: tuple[float, float] | None = None


def _focus_sets(reference: np.ndarray, prediction: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "ref": reference,
        "pred": prediction,
        "fp": prediction & ~reference,
        "fn": reference & ~prediction,
        "union": reference | prediction,
    }


def arrow_target(mask: np.ndarray) -> tuple[float, float] | None:
    """Where to point at the largest 8-connected region of a 2D mask: its centroid, or the region's
    pixel nearest to it when the centroid falls outside (a rim or crescent); None when empty."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return None
    region = labels == int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    r, c = ndimage.center_of_mass(region)
    if not region[int(round(r)), int(round(c))]:
        rows, cols = np.nonzero(region)
        k = int(np.argmin((rows - r) ** 2 + (cols - c) ** 2))
        r, c = rows[k], cols[k]
    return float(r), float(c)


def pick_slice(reference: np.ndarray, prediction: np.ndarray, axis: int = 0, focus: str = "ref",
               focus_mask: np.ndarray | None = None) -> int:
    """Index along ``axis`` with the most ``focus`` voxels (``ref``, ``pred``, ``fp``, ``fn``, ``union``).

    ``focus_mask`` replaces the ``focus`` set by explicit voxels (e.g. the false positives inside the
    aorta), still named by ``focus`` for the ``fp`` rule below.
    For ``fp`` the slice is sought among those that also show the reference when any does, so an
    over-segmentation is shown next to the tumour it grew from. Falls back to the union of both
    masks, then to the middle slice, when the focus set is empty.
    """
    sets = _focus_sets(reference, prediction)
    if focus_mask is not None:
        sets[focus] = focus_mask
    elif focus not in sets:
        raise ValueError(f"focus must be one of {sorted(sets)}, got {focus!r}")
    other = tuple(a for a in range(3) if a != axis)
    for mask in (sets[focus], sets["union"]):
        counts = mask.sum(axis=other)
        if counts.any():
            if focus == "fp":
                beside = counts * (reference.sum(axis=other) > 0)
                counts = beside if beside.any() else counts
            return int(np.argmax(counts))
    return reference.shape[axis] // 2


def _orient(arr: np.ndarray, view: str, affine: np.ndarray) -> np.ndarray:
    """Flip a 2D view to radiological display: anterior/superior up, patient right on the left.

    Uses the sign of the affine's diagonal (RAS), i.e. assumes an axis-aligned grid.
    """
    sign = np.sign(np.diag(affine)[:3])  # x (i), y (j), z (k) in RAS
    rows_axis, cols_axis = {"axial": (1, 0), "coronal": (2, 0), "sagittal": (2, 1)}[view]
    if sign[rows_axis] > 0:
        arr = arr[::-1]
    if sign[cols_axis] > 0:
        arr = arr[:, ::-1]
    return arr


def case_panel(
    vol: CaseVolumes,
    view: str = "axial",
    focus: str = "ref",
    index: int | None = None,
    margin_mm: float = 30.0,
    title: str = "",
    arrow: bool = False,
    focus_mask: np.ndarray | None = None,
) -> Panel:
    """A cropped 2D view of one case through the slice with the most ``focus`` voxels.

    The crop spans the in-plane bounding box of the whole reference (all slices) and of the reference
    and prediction on the shown slice, plus ``margin_mm``: the tumour and the error on view, without
    widening to false positives elsewhere in the volume. The whole slice when all of these are empty.
    With ``arrow``, the panel records where an arrowhead should point: the largest ``focus`` region on
    the shown slice. ``focus_mask`` (3D) replaces the ``focus`` voxels for both (see :func:`pick_slice`).
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    axis = _AXIS[view]
    index = pick_slice(vol.reference, vol.prediction, axis, focus, focus_mask) if index is None else index
    image, ref, pred = (np.take(a, index, axis=axis) for a in (vol.image, vol.reference, vol.prediction))
    chosen = _focus_sets(ref, pred)[focus] if focus_mask is None else np.take(focus_mask, index, axis=axis)
    spacing = tuple(s for a, s in enumerate(vol.spacing) if a != axis)
    other = [a for a in range(3) if a != axis]
    ref_rows_cols = np.nonzero(vol.reference)
    coords = [np.concatenate([ref_rows_cols[a], np.nonzero(ref | pred)[dim]]) for dim, a in enumerate(other)]
    if coords[0].size:
        box = []
        for dim in range(2):
            pad = int(math.ceil(margin_mm / spacing[dim]))
            lo, hi = int(coords[dim].min()) - pad, int(coords[dim].max()) + pad + 1
            box.append(slice(max(lo, 0), min(hi, image.shape[dim])))
        image, ref, pred, chosen = (a[tuple(box)] for a in (image, ref, pred, chosen))
    image, ref, pred, chosen = (_orient(a, view, vol.affine) for a in (image, ref, pred, chosen))
    target = arrow_target(chosen) if arrow else None
    return Panel(image, ref, pred, (float(spacing[0]), float(spacing[1])), title, target)


def plot_panels(panels: Sequence[Panel], ncols: int = 4, size_in: float = 2.4, legend: bool = True) -> plt.Figure:
    """Grid of panels with reference (orange) and prediction (blue) outlines, lettered a, b, c..."""
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size_in * ncols, size_in * nrows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i >= len(panels):
            ax.set_axis_off()
            continue
        p = panels[i]
        show_slice(ax, p.image, [(p.reference, REFERENCE_COLOUR), (p.prediction, PREDICTION_COLOUR)], p.spacing, title=f"({chr(97 + i)}) {p.title}")
        if p.arrow_at is not None:
            r, c = p.arrow_at
            d = 0.18 * max(p.image.shape)
            ax.annotate("", xy=(c + 0.15 * d, r - 0.15 * d), xytext=(c + d, r - d), annotation_clip=False,
                        arrowprops={"arrowstyle": "-|>", "color": ARROW_COLOUR, "lw": 1.6, "mutation_scale": 12})
    if legend:
        handles = [plt.Line2D([], [], color=REFERENCE_COLOUR, label="reference"), plt.Line2D([], [], color=PREDICTION_COLOUR, label="prediction")]
        fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.05 if legend else 0, 1, 1))
    return fig


def figure5(best: pd.DataFrame, load: Callable[[str], CaseVolumes], extra_views_of: int = -1, ncols: int = 4) -> plt.Figure:
    """Paper Fig 5: axial views of the ``best`` cases (``case_id, dice``) plus sagittal and coronal of one.

    ``load`` maps a case id to its volumes; ``extra_views_of`` picks the row (default the last, as the
    paper shows views of its case f).
    """
    panels, volumes = [], {}
    for row in best.itertuples(index=False):
        volumes[row.case_id] = vol = load(row.case_id)
        panels.append(case_panel(vol, "axial", "ref", title=f"{row.case_id} Dice {row.dice:.2f}"))
    if len(best):
        chosen = best.iloc[extra_views_of]
        for view in ("sagittal", "coronal"):
            panels.append(case_panel(volumes[chosen["case_id"]], view, "ref", title=f"{chosen['case_id']} {view}"))
    return plot_panels(panels, ncols=ncols)


def figure6(examples: pd.DataFrame, table: pd.DataFrame, load: Callable[[str], CaseVolumes], ncols: int = 3) -> plt.Figure:
    """Paper Fig 6: one axial view per failure example (:func:`amtlib.evaluation.failure.select_examples`).

    ``table`` supplies each case's Dice. The title names the category and, for over-segmentation, the
    structure the false positives lie in; an arrowhead points at the error on the shown slice (the
    excess for over-segmentation, the missed part for under-segmentation, the tumour for a miss).
    """
    dice = dict(zip(table["case_id"], table["dice"]))
    panels = []
    for row in examples.itertuples(index=False):
        label = row.category.replace("_", "-" if row.category.endswith("segmentation") else " ")
        if row.fp_main_structure and row.focus == "fp":  # where the excess lies; not for misses
            label += f"\n({row.fp_main_structure})"
        vol = load(row.case_id)
        focus_mask = None
        if row.focus == "fp" and row.fp_main_structure and vol.anatomy is not None:
            # show the excess where it lies in the named structure, not the largest excess anywhere
            focus_mask = vol.prediction & ~vol.reference & structure_mask(vol.anatomy, str(row.fp_main_structure))
            focus_mask = focus_mask if focus_mask.any() else None
        panels.append(case_panel(vol, "axial", row.focus, title=f"{label}\n{row.case_id} Dice {dice[row.case_id]:.2f}",
                                 arrow=True, focus_mask=focus_mask))
    return plot_panels(panels, ncols=min(ncols, max(len(panels), 1)), size_in=3.0)
