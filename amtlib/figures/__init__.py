"""Plotting helpers shared by the notebooks (paper Figs 2, 4, 5, 6).

Area-specific plots live in submodules (``figures.cohort``, ``figures.evaluation``,
``figures.training``, ``figures.failure``); this module holds what they share: saving a figure as PNG
and PDF atomically, and showing a CT slice in a mediastinal window with mask outlines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence




import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from amtlib.io import atomic_path, copy_file  # noqa: E402
from amtlib.paths import project_path  # noqa: E402

#: savefig metadata that leaves out the creation date (PNG carries none by default).
_NO_DATE = {"pdf": {"CreationDate": None}, "svg": {"Date": None}, "ps": {"CreationDate": None}}

#: Mediastinal window (level, width) in HU used for all CT displays.
MEDIASTINAL_WINDOW: tuple[float, float] = (40.0, 400.0)
#: Colours of the paper's figures: reference (orange) and prediction (blue).
REFERENCE_COLOUR = "#ff8c00"
PREDICTION_COLOUR = "#1f77ff"
#: Arrowheads marking an error (paper Fig 6).
ARROW_COLOUR = "#ffd400"


def save_figure(
    fig: "plt.Figure",
    path: str | Path,
    formats: Sequence[str] = ("png", "pdf"),
    copy_to: str | Path | None = None,
    dpi: int = 150,
) -> list[Path]:
    """Save ``fig`` as ``path`` with each suffix in ``formats`` (atomic writes); return the paths.

    ``path`` is given without suffix (any suffix is replaced). When ``copy_to`` is a folder (the
    repository's ``figures/``), each file is copied there too (atomically). No creation date is
    written, so identical figures give identical bytes.
    """
    base = Path(path)
    base = base.with_suffix("") if base.suffix in {".png", ".pdf", ".svg"} else base
    out = []
    for fmt in formats:
        target = base.parent / f"{base.name}.{fmt}"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=_NO_DATE.get(fmt))
        out.append(target)
        if copy_to is not None:
            copy_file(target, project_path(copy_to) / target.name)  # "figures": the project's, also from Lab
    return out


def window(image_hu: np.ndarray, level: float = MEDIASTINAL_WINDOW[0], width: float = MEDIASTINAL_WINDOW[1]) -> np.ndarray:
    """Map HU to [0, 1] for display with the given window level and width."""
    lo, hi = level - width / 2, level + width / 2
    return np.clip((np.asarray(image_hu, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)


def show_slice(
    ax: "plt.Axes",
    image_hu: np.ndarray,
    masks: Iterable[tuple[np.ndarray, str]] = (),
    spacing_yx: tuple[float, float] = (1.0, 1.0),
    title: str | None = None,
) -> None:
    """Draw a 2D HU slice in mediastinal window with each ``(mask, colour)`` as an outline.

    ``spacing_yx`` sets the pixel aspect so anisotropic slices (sagittal/coronal) look right.
    """
    ax.imshow(window(image_hu), cmap="gray", vmin=0.0, vmax=1.0, aspect=spacing_yx[0] / spacing_yx[1], interpolation="nearest")
    for mask, colour in masks:
        m = np.asarray(mask) > 0
        if m.any():
            ax.contour(m.astype(float), levels=[0.5], colors=[colour], linewidths=1.2)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
