"""Cohort figures: the data-collection and splitting flow diagram (paper Fig. 2) and a case gallery.

The flow diagram is drawn from counts (``cohort_flow.json`` and :func:`amtlib.split.split_flow`), each
box giving the regenerated count with the paper's beside it. The gallery shows, per case, the axial
slice with the largest tumour area in the mediastinal window with the reference mask outlined.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from amtlib.figures import REFERENCE_COLOUR, show_slice


def _box(ax: "plt.Axes", xy: tuple[float, float], text: str, width: float = 0.3, colour: str = "#eef3fb") -> None:
    ax.text(xy[0], xy[1], text, ha="center", va="center", fontsize=8, wrap=True,
            bbox={"boxstyle": "round,pad=0.5", "fc": colour, "ec": "#335", "lw": 0.8})


def _arrow(ax: "plt.Axes", start: tuple[float, float], end: tuple[float, float]) -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "->", "lw": 0.9, "color": "#335"})


def _n(box: dict[str, Any] | None, paper: dict[str, Any] | None, label: str) -> str:
    text = f"{label}\nN = {box['cases']} ({box['institutions']} institutions)" if box else label
    if paper:
        text += f"\npaper: N = {paper['cases']} ({paper['institutions']} inst.)"
    return text


def flow_diagram(flow: dict[str, Any], split_counts: dict[str, dict[str, int]] | None = None,
                 reported: dict[str, Any] | None = None, reason_labels: dict[str, str] | None = None) -> "plt.Figure":
    """Fig. 2: screened -> excluded (by reason) -> included -> external test / development -> training / tuning.

    ``flow`` is ``cohort_flow.json``; ``split_counts`` is :func:`amtlib.split.split_flow` (omit it to draw
    the first three boxes only); ``reported`` is ``amtlib.paper.reported()["cohort_flow"]`` to print the
    paper's counts in each box (omit for none).
    """
    rep = reported or {}
    labels = reason_labels or {}
    fig, ax = plt.subplots(figsize=(8.5, 7.0 if split_counts else 4.0))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_axis_off()
    top, mid, low = (0.92, 0.62, 0.32) if split_counts else (0.85, 0.2, 0.0)
    scr = f"Screened patients\nN = {flow['screened']}" + (f"\npaper: N = {rep['screened']}" if rep else "")
    _box(ax, (0.3, top), scr)
    reasons = "\n".join(f"{labels.get(k, k.replace('_', ' '))}: {v}" for k, v in flow.get("excluded_by_reason", {}).items())
    exc = f"Excluded N = {flow['excluded']}" + (f" (paper: {rep['excluded']})" if rep else "") + (f"\n{reasons}" if reasons else "")
    _box(ax, (0.75, (top + mid) / 2), exc, colour="#fbeeee")
    inc = f"Included\nN = {flow['included']} ({flow['included_institutions']} institutions)"
    if rep:
        inc += f"\npaper: N = {rep['included']} ({rep['included_institutions']} inst.)"
    _box(ax, (0.3, mid), inc)
    _arrow(ax, (0.3, top - 0.06), (0.3, mid + 0.07))
    _arrow(ax, (0.3, (top + mid) / 2), (0.56, (top + mid) / 2))
    if split_counts:
        dev_rep = None
        if rep:
            dev_rep = {"cases": rep["training"]["cases"] + rep["tuning"]["cases"],
                       "institutions": rep["included_institutions"] - rep["external_test"]["institutions"]}
        _box(ax, (0.15, low), _n(split_counts["external_test"], rep.get("external_test"), "External testing"), colour="#eefbf0")
        _box(ax, (0.62, low), _n(split_counts["development"], dev_rep, "Development"))
        _arrow(ax, (0.3, mid - 0.07), (0.15, low + 0.07))
        _arrow(ax, (0.3, mid - 0.07), (0.62, low + 0.07))
        _box(ax, (0.45, 0.06), _n(split_counts["training"], rep.get("training"), "Training"), colour="#fdf8e8")
        _box(ax, (0.82, 0.06), _n(split_counts["tuning"], rep.get("tuning"), "Tuning"), colour="#fdf8e8")
        _arrow(ax, (0.62, low - 0.07), (0.45, 0.12))
        _arrow(ax, (0.62, low - 0.07), (0.82, 0.12))
    return fig


def largest_tumour_slice(mask_zyx: np.ndarray) -> int:
    """Index of the axial slice with the most mask voxels (middle slice for an empty mask)."""
    area = np.asarray(mask_zyx > 0).reshape(mask_zyx.shape[0], -1).sum(axis=1)
    return int(np.argmax(area)) if area.any() else mask_zyx.shape[0] // 2


def case_gallery(manifest: pd.DataFrame, base_dir: str | Path, case_ids: Sequence[str] | None = None,
                 n: int = 6, seed: int = 0, ncols: int = 3) -> "plt.Figure":
    """A grid of cases: the largest-tumour axial slice, mediastinal window, reference mask outlined.

    ``case_ids`` defaults to ``n`` cases drawn with ``seed``; titles give case id, histology and
    manufacturer. Paths in ``manifest`` are relative to ``base_dir``.
    """
    from amtlib.io import load_nifti

    if case_ids is None:
        rng = np.random.default_rng(seed)
        ids = manifest["case_id"].astype(str).to_numpy()
        case_ids = sorted(rng.choice(ids, size=min(n, len(ids)), replace=False).tolist())
    rows = manifest.set_index(manifest["case_id"].astype(str))
    nrows = max(1, int(np.ceil(len(case_ids) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 3.1 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, cid in zip(axes.ravel(), case_ids):
        row = rows.loc[cid]
        image, spacing, _ = load_nifti(Path(base_dir) / row["image_path"])
        mask, _, _ = load_nifti(Path(base_dir) / row["mask_path"])
        # NIfTI from DICOM keeps the LPS row order, so row 0 is anterior: display as radiologists do.
        k = largest_tumour_slice(mask)
        title = f"{cid}\n{row['histology']}, {row.get('manufacturer', '') or '?'}"
        show_slice(ax, image[k], [(mask[k], REFERENCE_COLOUR)], spacing_yx=(spacing[1], spacing[2]), title=title)
    fig.tight_layout()
    return fig
