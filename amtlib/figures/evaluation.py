"""Evaluation figures: the IoU-sweep FROC curve (paper Fig. 4) and subgroup forest plots (Tables 3-4).

Every plot shows the paper's reported values beside the regenerated ones (grey = paper).
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from amtlib import paper
from amtlib.figures import PREDICTION_COLOUR

PAPER_COLOUR = "#7f7f7f"


def plot_froc(froc: pd.DataFrame, mark_threshold: float = 0.5, label_thresholds: Sequence[float] = (0.05, 0.1, 0.3, 0.7, 0.95),
              ax: "plt.Axes | None" = None) -> "plt.Figure":
    """Sensitivity vs FP/scan as the matching IoU threshold sweeps (Fig. 4), with the paper's points.

    ``froc`` is the ``froc.csv`` table. Error bars are the bootstrap CIs on both axes. The paper's
    Table 4 values at IoU 0.1 (square) and 0.5 (diamond) are overlaid in grey with their CIs, beside
    ours in the same shapes; the paper's text range for IoU 0.05-0.15 is a grey box; an arrowhead marks
    IoU ``mark_threshold`` (0.5 in the paper). Thresholds that share a point are labelled as a range.
    """
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.5, 4.5))
    f = froc.sort_values("iou_threshold").reset_index(drop=True)
    t, x, y = f["iou_threshold"].to_numpy(), f["fp_per_scan"].to_numpy(), f["sensitivity"].to_numpy()
    ax.errorbar(x, y, xerr=[x - f["fp_per_scan_ci_low"], f["fp_per_scan_ci_high"] - x],
                yerr=[y - f["sensitivity_ci_low"], f["sensitivity_ci_high"] - y], color=PREDICTION_COLOUR,
                ecolor=(*plt.matplotlib.colors.to_rgb(PREDICTION_COLOUR), 0.35), elinewidth=0.8, marker="o", ms=4,
                lw=1.5, label="regenerated (95% CI)")
    start = 0
    for i in range(1, len(t) + 1):  # runs of thresholds sharing one point
        if i == len(t) or (x[i], y[i]) != (x[start], y[start]):
            run = t[start:i]
            if any(np.isclose(run, v).any() for v in label_thresholds):
                text = f"{run[0]:g}" if len(run) == 1 else f"{run[0]:g}-{run[-1]:g}"
                ax.annotate(text, (x[start], y[start]), xytext=(6, 4), textcoords="offset points", fontsize=7,
                            color=PREDICTION_COLOUR)
            start = i
    t4 = paper.reported()["table4"]["overall"]
    for thr, marker in ((0.1, "s"), (0.5, "D")):
        s, fp = t4[f"iou_{thr:g}"]["sensitivity"], t4[f"iou_{thr:g}"]["fp_per_scan"]
        ax.errorbar(fp[0], s[0], xerr=[[fp[0] - fp[2]], [fp[3] - fp[0]]], yerr=[[s[0] - s[2]], [s[3] - s[0]]],
                    color=PAPER_COLOUR, marker=marker, ms=6, capsize=2, lw=0, elinewidth=1, label=f"paper, IoU {thr:g}")
        hit = np.isclose(t, thr)
        if hit.any():
            ax.plot(x[hit], y[hit], marker=marker, ms=8, mfc="none", mec=PREDICTION_COLOUR, mew=1.5, lw=0,
                    label=f"regenerated, IoU {thr:g}")
    box = paper.reported()["froc_text"]["iou_0.05_to_0.15"]
    (s0, s1), (f0, f1) = box["sensitivity"], box["fp_per_scan"]
    # the band is small (FP/scan 0.51-0.52, sensitivity 0.95-0.97) and the IoU 0.1 marker sits on it: draw it
    # above the markers as a dark outline and point to it, so it stays visible
    ax.add_patch(plt.Rectangle((f0 - 0.01, s0 - 0.005), f1 - f0 + 0.02, s1 - s0 + 0.01, facecolor=PAPER_COLOUR, alpha=0.35,
                               edgecolor="none", zorder=6))
    ax.add_patch(plt.Rectangle((f0 - 0.01, s0 - 0.005), f1 - f0 + 0.02, s1 - s0 + 0.01, fill=False, edgecolor="black",
                               lw=1.2, zorder=7, label="paper, IoU 0.05-0.15 (text)"))
    ax.annotate("paper, IoU 0.05-0.15", (f1 + 0.01, (s0 + s1) / 2), xytext=(28, -26), textcoords="offset points",
                fontsize=7, color="black", zorder=8, arrowprops={"arrowstyle": "-", "color": "black", "lw": 0.8})
    hit = np.isclose(t, mark_threshold)
    if hit.any():
        ax.annotate(f"IoU {mark_threshold:g}", (x[hit][0], y[hit][0]), xytext=(30, -30), textcoords="offset points",
                    fontsize=8, arrowprops={"arrowstyle": "-|>", "color": "black", "lw": 1})
    ax.set_xlabel("False positives per scan")
    ax.set_ylabel("Sensitivity")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("FROC over IoU thresholds 0.05-0.95 (Fig. 4)", fontsize=9)
    return fig


def plot_subgroup_forest(table: pd.DataFrame, columns: Sequence[str], titles: Sequence[str] | None = None) -> "plt.Figure":
    """Forest plot per column: regenerated mean and 95% CI beside the paper's, one row per subgroup.

    ``table`` is :func:`amtlib.evaluation.stats.table3` or :func:`~amtlib.evaluation.stats.table4` output (``{c}_mean``,
    ``{c}_ci_low``, ``{c}_ci_high``). Subgroups without cases show the paper's value only.
    """
    n = len(table)
    fig, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns) + 1.5, 0.32 * n + 1.2), sharey=True, squeeze=False)
    ypos = np.arange(n)[::-1]
    for ax, col, title in zip(axes[0], columns, titles or columns):
        m, lo, hi = (table[f"{col}_{k}"].to_numpy(float) for k in ("mean", "ci_low", "ci_high"))
        ax.errorbar(m, ypos + 0.15, xerr=[m - lo, hi - m], fmt="o", ms=4, color=PREDICTION_COLOUR, capsize=2, label="regenerated")
        cells = [paper.reported_cell(col, k) for k in table["subgroup"]]
        rep = np.array([c if c else [np.nan] * 4 for c in cells], dtype=float)
        ax.errorbar(rep[:, 0], ypos - 0.15, xerr=[rep[:, 0] - rep[:, 2], rep[:, 3] - rep[:, 0]], fmt="s", ms=4,
                    color=PAPER_COLOUR, capsize=2, label="paper")
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_yticks(ypos, [f"{lab} (n={k})" for lab, k in zip(table["label"], table["n"])], fontsize=8)
    axes[0, -1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def plot_froc_definitions(frocs: "dict[str, pd.DataFrame]") -> "plt.Figure":
    """Fig. 4 drawn once per lesion FP definition (``{"unmatched": froc, "no_overlap": froc}``), side by side.

    Paper: Lesion-wise detection performance metrics states two FP definitions; each panel is
    :func:`plot_froc` with the paper's points, so the reader sees which definition gives FP/scan rising
    from 0.51 at IoU 0.1 to 0.61 at IoU 0.5 (``no_overlap`` cannot: its FP does not depend on the IoU).
    """
    fig, axes = plt.subplots(1, len(frocs), figsize=(5.5 * len(frocs), 4.5), squeeze=False, sharey=True)
    for ax, (name, froc) in zip(axes[0], frocs.items()):
        plot_froc(froc, ax=ax)
        ax.set_title(f"FP definition: {name}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_dice_vs_boundary(per_case: pd.DataFrame, column: str = "hd95_mm", failure_ids: Sequence[str] = (),
                          ax: "plt.Axes | None" = None) -> "plt.Figure":
    """Per-case Dice against a boundary distance (HD95 by default, mm, log scale), failure cases marked.

    Not in the paper (boundary metrics are an addition; :mod:`amtlib.evaluation.boundary`). Cases in
    ``failure_ids`` (e.g. the bottom 10% by Dice of step 06) are ringed and labelled; an infinite
    distance (one mask empty) is drawn as a triangle on the top edge; cases where both masks are
    empty (NaN) are left out and counted in the title.
    """
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.5, 4.2))
    d = per_case[["case_id", "dice", column]].copy()
    d["case_id"] = d["case_id"].astype(str)
    nan = d[column].isna() | d["dice"].isna()
    d = d[~nan]
    finite = np.isfinite(d[column].to_numpy(dtype=float))
    positive = d.loc[finite, column].to_numpy(dtype=float)
    floor_mm = max(float(positive[positive > 0].min()) / 2, 0.1) if (positive > 0).any() else 0.1
    top = max(float(positive.max()) * 2, floor_mm * 10) if positive.size else 10.0
    y = np.where(finite, np.maximum(d[column].to_numpy(dtype=float), floor_mm), top)
    x = d["dice"].to_numpy(dtype=float)
    ax.scatter(x[finite], y[finite], s=18, color=PREDICTION_COLOUR, label="case")
    if (~finite).any():
        ax.scatter(x[~finite], y[~finite], s=40, marker="^", color="#d62728", label="infinite (one mask empty)")
    fail = d["case_id"].isin({str(c) for c in failure_ids}).to_numpy()
    if fail.any():
        ax.scatter(x[fail], y[fail], s=90, facecolors="none", edgecolors="#d62728", linewidths=1.2, label="failure case")
        for xi, yi, cid in zip(x[fail], y[fail], d.loc[fail, "case_id"]):
            ax.annotate(cid, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_yscale("log")
    ax.set_ylim(floor_mm / 1.5, top * 1.5)
    ax.set_xlim(-0.03, 1.03)
    ax.set_xlabel("Dice")
    name = column.replace("_mm", "").replace("hd95", "HD95").replace("assd", "ASSD")
    ax.set_ylabel(f"{name} (mm)")
    ax.set_title(f"Dice and {name} per case" + (f" ({int(nan.sum())} with both masks empty left out)" if nan.any() else ""),
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def plot_lesion_quality(pairs: pd.DataFrame, quality: dict, ax: "plt.Axes | None" = None) -> "plt.Figure":
    """Distribution of the per-lesion Dice of matched pairs, with the pooled PQ = SQ x RQ in the title.

    Not in the paper (:mod:`amtlib.evaluation.panoptic`). ``pairs`` is ``lesion_pairs.csv``;
    ``quality`` the pooled ``pq, sq, rq, tp, fp, fn`` and ``iou_threshold``. No pair: an empty axis
    saying so.
    """
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.5, 3.6))
    dice = pairs["dice"].to_numpy(dtype=float)
    if dice.size:
        ax.hist(dice, bins=np.linspace(0, 1, 21), color=PREDICTION_COLOUR, edgecolor="white")
        ax.axvline(float(np.median(dice)), color="k", lw=1, ls="--", label=f"median {np.median(dice):.2f}")
        ax.legend(fontsize=8, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no matched lesion pair", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, 1)
    ax.set_xlabel("Dice of a matched lesion pair")
    ax.set_ylabel("lesion pairs")
    t = quality.get("iou_threshold", float("nan"))
    ax.set_title(f"PQ {quality['pq']:.3f} = SQ {quality['sq']:.3f} x RQ {quality['rq']:.3f} "
                 f"(IoU > {t:g}; TP {quality['tp']}, FP {quality['fp']}, FN {quality['fn']})", fontsize=9)
    fig.tight_layout()
    return fig
