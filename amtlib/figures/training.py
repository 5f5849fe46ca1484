"""Figures of notebook 03: the training curve and an example augmented batch (paper: "Training settings")."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from amtlib.figures import PREDICTION_COLOUR, REFERENCE_COLOUR


def plot_training_curve(log: pd.DataFrame) -> "plt.Figure":
    """Mean training Dice loss between evaluations and tuning Dice against iteration; the selected model is starred.

    ``log`` has the columns of ``train_log.csv`` (``iteration``, ``train_loss``, ``tuning_dice``). An
    empty log gives an empty, labelled figure.
    """
    fig, ax = plt.subplots(figsize=(6.0, 3.2))
    ax.set_xlabel("iteration")
    ax.set_ylabel("training Dice loss", color=REFERENCE_COLOUR)
    ax.set_ylim(0, 1)
    ax2 = ax.twinx()
    ax2.set_ylabel("tuning Dice", color=PREDICTION_COLOUR)
    ax2.set_ylim(0, 1)
    if len(log):
        ax.plot(log["iteration"], log["train_loss"], "o-", color=REFERENCE_COLOUR, ms=3, label="training loss")
        if log["tuning_dice"].notna().any():
            ax2.plot(log["iteration"], log["tuning_dice"], "s-", color=PREDICTION_COLOUR, ms=3, label="tuning Dice")
            best = log.loc[log["tuning_dice"].idxmax()]
            ax2.plot([best["iteration"]], [best["tuning_dice"]], "*", color="k", ms=12,
                     label=f"selected: {best['tuning_dice']:.3f} @ {int(best['iteration'])}")
            handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
            ax2.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_batch(images: np.ndarray, masks: np.ndarray, case_ids: Sequence[str]) -> "plt.Figure":
    """Middle axial slice of each crop of a batch (normalised intensities), tumour outlined.

    ``images`` and ``masks`` are (B, 1, z, y, x) arrays or tensors as drawn by the batch sampler; the
    grey scale is stretched per crop, because min-max normalised CT has little contrast in soft tissue.
    """
    images, masks = np.asarray(images)[:, 0], np.asarray(masks)[:, 0]
    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.6), squeeze=False)
    for ax, img, m, cid in zip(axes[0], images, masks, case_ids):
        fg_slices = np.flatnonzero(m.reshape(len(m), -1).any(1))
        z = int(fg_slices[len(fg_slices) // 2]) if fg_slices.size else len(img) // 2
        lo, hi = np.percentile(img[z], [1, 99])
        ax.imshow(img[z], cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
        if m[z].any():
            ax.contour(m[z].astype(float), levels=[0.5], colors=[REFERENCE_COLOUR], linewidths=1.2)
        ax.set_title(f"{cid}  z={z}  fg={m.mean():.0%}", fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    return fig
