"""Figures of the downstream classifiers: ROC curves, confusion matrices, Grad-CAM overlays (notebooks 07-08)."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from amtlib.classify import roc


def plot_roc(scores: pd.DataFrame, title: str = "", reported: dict[str, tuple[float, float]] | None = None) -> plt.Figure:
    """ROC curves of ``scores`` (``curve, label, score``; one curve per ``curve`` value, AUC in the
    legend); ``reported`` adds the papers' (1 - specificity, sensitivity) operating points by name."""
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for name, g in scores.groupby("curve", sort=False):
        g = g[g["score"].notna()]
        if g["label"].nunique() < 2:
            continue
        pts = roc.roc_points(g["label"].to_numpy(int), g["score"].to_numpy())
        ax.plot(pts["fpr"], pts["tpr"], lw=1.6, label=f"{name} (AUC {roc.auc(g['label'].to_numpy(int), g['score'].to_numpy()):.3f})")
    for name, (fpr, tpr) in (reported or {}).items():
        ax.plot([fpr], [tpr], marker="*", ms=10, ls="", label=f"paper: {name}")
    ax.plot([0, 1], [0, 1], ls="--", c="0.6", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_confusions(matrices: dict[str, np.ndarray], class_names: Sequence[str], ncols: int = 3) -> plt.Figure:
    """Confusion matrices (rows true, columns predicted) side by side, counts annotated."""
    n = len(matrices)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    k = len(class_names)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.0 + 0.55 * k * ncols + 1.2 * ncols, 0.55 * k * nrows + 1.6 * nrows), squeeze=False)
    for ax, (name, m) in zip(axes.ravel(), matrices.items()):
        ax.imshow(m, cmap="Blues")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7, color="white" if m[i, j] > m.max() / 2 else "black")
        ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(k), class_names, fontsize=7)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_gradcam(images: np.ndarray, cams: np.ndarray, titles: Sequence[str], ncols: int = 4) -> plt.Figure:
    """Crops (z-scored) with their Grad-CAM maps overlaid (jet, alpha 0.4)."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols)) if n else 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 2.3 * nrows), squeeze=False)
    for ax, img, cam, t in zip(axes.ravel(), images, cams, titles):
        ax.imshow(img, cmap="gray")
        ax.imshow(cam, cmap="jet", alpha=0.4, vmin=0, vmax=1)
        ax.set_title(t, fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    return fig
