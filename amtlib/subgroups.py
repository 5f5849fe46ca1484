"""The subgroup vocabulary of Tables 2-4, shared by data and evaluation alike (ground layer).

Paper: Tables 3-4 (subgroups by scanner manufacturer, tumour size, histology). One place names every
subgroup: its key (``canon_medical_systems``, ``size_small``, ``thymoma``, ...), its display label, and
the rules that map a DICOM Manufacturer, a maximum axial diameter (mm) or a histology to a key. The
synthetic cohort draws its tumour sizes by the same bins (:func:`size_class`), the evaluation groups its
cases by them (:func:`size_bin`). Imports nothing from ``amtlib``.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

#: Table 3/4 row keys in the order the paper prints them, with display labels.
SUBGROUP_LABELS: dict[str, str] = {
    "overall": "Overall",
    "canon_medical_systems": "Canon Medical Systems",
    "ge_healthcare": "GE Healthcare",
    "siemens": "Siemens",
    "fujifilm": "Fujifilm",
    "philips_healthcare": "Philips Healthcare",
    "size_large": "Large (> 8 cm)",
    "size_medium": "Medium (5-8 cm)",
    "size_small": "Small (< 5 cm)",
    "thymoma": "Thymoma",
    "thymic_carcinoma": "Thymic carcinoma",
    "thymic_cyst": "Thymic cyst",
    "lymphoma": "Lymphoma",
    "others": "Others",
}
#: Tumour-size bin edges in mm (maximum axial diameter): small < 50 <= medium <= 80 < large.
SIZE_EDGES_MM: tuple[float, float] = (50.0, 80.0)
#: Size classes, smallest first; the subgroup key of a class is ``size_<class>``.
SIZE_CLASSES: tuple[str, ...] = ("small", "medium", "large")
#: Histologies with their own row; every other histology is "others" (as in the paper).
HISTOLOGY_ROWS: tuple[str, ...] = ("thymoma", "thymic_carcinoma", "thymic_cyst", "lymphoma")


def size_class(diameter_mm: float, edges: tuple[float, float] = SIZE_EDGES_MM) -> str | None:
    """Size class of a maximum axial diameter in mm: ``small`` (< 50), ``medium`` (50 to 80, both
    inclusive), ``large`` (> 80); None for NaN or None (no tumour)."""
    if diameter_mm is None or not np.isfinite(diameter_mm):
        return None
    if diameter_mm < edges[0]:
        return "small"
    return "medium" if diameter_mm <= edges[1] else "large"


def size_bin(diameter_mm: float, edges: tuple[float, float] = SIZE_EDGES_MM) -> str | None:
    """Tumour-size subgroup key (``size_small``/``size_medium``/``size_large``) of a maximum axial
    diameter in mm, by :func:`size_class`; None for NaN (no tumour)."""
    cls = size_class(diameter_mm, edges)
    return None if cls is None else f"size_{cls}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_")


def vendor_key(manufacturer: "str | None") -> str | None:
    """Table 3/4 vendor key of a DICOM Manufacturer string (Toshiba = Canon, Hitachi = Fujifilm).

    Unknown vendors get their own slug key (``"neusoft_medical"``); empty or missing gives None.
    """
    if manufacturer is None or (isinstance(manufacturer, float) and np.isnan(manufacturer)):
        return None
    s = _slug(manufacturer)
    tokens = set(s.split("_"))
    if not s:
        return None
    if tokens & {"canon", "toshiba"}:
        return "canon_medical_systems"
    if "ge" in tokens or "gehc" in tokens or "general_electric" in s:
        return "ge_healthcare"
    if any(t.startswith("siemens") for t in tokens):
        return "siemens"
    if tokens & {"fujifilm", "fuji", "hitachi"}:
        return "fujifilm"
    if "philips" in tokens:
        return "philips_healthcare"
    return s


def histology_key(histology: "str | None") -> str | None:
    """Table 3/4 histology key: one of :data:`HISTOLOGY_ROWS`, else ``"others"``; None when missing."""
    if histology is None or (isinstance(histology, float) and np.isnan(histology)) or not str(histology).strip():
        return None
    s = _slug(histology)
    return s if s in HISTOLOGY_ROWS else "others"


def subgroup_labels(meta: pd.DataFrame) -> dict[str, pd.Series]:
    """Per-case subgroup key for each stratification whose column is present in ``meta``.

    ``vendor`` from ``manufacturer``, ``size`` from ``size_bin`` (else ``max_axial_diameter_mm``),
    ``histology`` from ``histology``; a case without the information has None.
    """
    out: dict[str, pd.Series] = {}
    if "manufacturer" in meta:
        out["vendor"] = meta["manufacturer"].map(vendor_key)
    if "size_bin" in meta:
        out["size"] = meta["size_bin"].map(lambda v: v if isinstance(v, str) and v else None)
    elif "max_axial_diameter_mm" in meta:
        out["size"] = meta["max_axial_diameter_mm"].map(size_bin)
    if "histology" in meta:
        out["histology"] = meta["histology"].map(histology_key)
    return out


#: The paper's rows of each stratification, in its order.
PAPER_ROWS: dict[str, list[str]] = {
    "vendor": [k for k in SUBGROUP_LABELS if k != "overall" and not k.startswith("size_") and k not in (*HISTOLOGY_ROWS, "others")],
    "size": [k for k in SUBGROUP_LABELS if k.startswith("size_")],
    "histology": [*HISTOLOGY_ROWS, "others"],
}


def subgroup_masks(meta: pd.DataFrame) -> dict[str, np.ndarray]:
    """Boolean row masks of ``meta`` for every subgroup, in the paper's row order.

    ``overall`` first; then, for each stratification present (:func:`subgroup_labels`), the paper's
    rows (also when empty here) followed by any value the paper lacks (e.g. another vendor).
    """
    keys: dict[str, np.ndarray] = {"overall": np.ones(len(meta), dtype=bool)}
    for kind, lab in subgroup_labels(meta).items():
        values = np.array([v if isinstance(v, str) else None for v in lab], dtype=object)
        extra = sorted({v for v in values if v is not None} - set(PAPER_ROWS[kind]))
        for key in [*PAPER_ROWS[kind], *extra]:
            keys[key] = values == key
    return keys


def subgroup_label(key: str) -> str:
    """Display label of a subgroup key (the paper's wording, or the key itself)."""
    return SUBGROUP_LABELS.get(key, key.replace("_", " ").title())
