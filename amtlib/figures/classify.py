"""Figures of the downstream classifiers: ROC curves, confusion matrices, Grad-CAM overlays (notebooks 07-08)."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from amtlib.classify import roc


#: Words for the model and task codes of notebooks 07-08 (figure titles and legends).
NAMES: dict[str, str] = {
    "ct_only_cnn": "CT-only CNN", "ctc_clinical_logistic": "CTC + clinical (logistic)", "fusion": "fusion network",
    "cnn_resnet2d": "2D CNN (ResNet)", "radiomics_svm": "radiomics SVM", "binary": "benign vs malignant",
    "multiclass": "multi-class", "predicted": "model's masks", "reference": "reference masks",
}


def readable(name: str) -> str:
    """``"binary: ct_only_cnn"`` -> ``"benign vs malignant: CT-only CNN"`` (unknown parts kept, underscores as spaces)."""
    return ": ".join(", ".join(NAMES.get(w.strip(), w.strip().replace("_", " ")) for w in part.split(","))
                     for part in name.split(": "))


def plot_roc(scores: pd.DataFrame, title: str = "", reported: dict[str, tuple[float, float]] | None = None) -> plt.Figure:
    """ROC curves of ``scores`` (``curve, label, score``; one curve per ``curve`` value, AUC in the
    legend); ``reported`` adds the papers' (1 - specificity, sensitivity) operating points by name.
    The legend sits below the axes, off the curves."""
    fig, ax = plt.subplots(figsize=(5.0, 6.0))
    for name, g in scores.groupby("curve", sort=False):
        g = g[g["score"].notna()]
        if g["label"].nunique() < 2:
            continue
        pts = roc.roc_points(g["label"].to_numpy(int), g["score"].to_numpy())
        ax.plot(pts["fpr"], pts["tpr"], lw=1.6,
                label=f"{readable(str(name))} (AUC {roc.auc(g['label'].to_numpy(int), g['score'].to_numpy()):.3f})")
    for name, (fpr, tpr) in (reported or {}).items():
        ax.plot([fpr], [tpr], marker="*", ms=11, ls="", label=f"paper: {name}")
    ax.plot([0, 1], [0, 1], ls="--", c="0.6", lw=0.8, label="chance")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.set_aspect("equal")
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, frameon=False)
    fig.tight_layout()
    return fig


def plot_confusions(matrices: dict[str, np.ndarray], class_names: Sequence[str], ncols: int = 3) -> plt.Figure:
    """Confusion matrices (rows true, columns predicted) side by side, titled in words; each cell gives
    the count and its percentage of the true class (row), coloured by that percentage (colour bar)."""
    n = len(matrices)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    k = len(class_names)
    labels = [readable(c) for c in class_names]
    side = max(2.6, 0.62 * k + 1.2)
    fig, axes = plt.subplots(nrows, ncols, figsize=(side * ncols + 1.2, side * nrows + 0.6), squeeze=False)
    image = None
    for ax, (name, m) in zip(axes.ravel(), matrices.items()):
        m = np.asarray(m)
        rows = m.sum(axis=1, keepdims=True)
        pct = np.divide(100.0 * m, rows, out=np.zeros(m.shape, float), where=rows > 0)
        image = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{int(m[i, j])}\n{pct[i, j]:.0f}%", ha="center", va="center", fontsize=7,
                        color="white" if pct[i, j] > 55 else "black")
        ax.set_xticks(range(k), labels, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(k), labels, fontsize=7)
        ax.set_title(f"{readable(name)}\n(n = {int(m.sum())})", fontsize=8)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.tight_layout()
    if image is not None:
        bar = fig.colorbar(image, ax=list(axes.ravel()[:n]), fraction=0.025, pad=0.02)
        bar.set_label("% of the true class (row)", fontsize=7)
        bar.ax.tick_params(labelsize=7)
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
