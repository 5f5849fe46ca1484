"""The numbers reported in the paper, for side-by-side comparison with regenerated results.

The values live in ``amtlib/data/reported_values.yaml`` (a copy of the paper's tables, facts only).
Metric cells there are ``[mean, sd, ci_low, ci_high]``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

REPORTED_VALUES = Path(__file__).with_name("data") / "reported_values.yaml"

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


@lru_cache(maxsize=1)
def reported() -> dict[str, Any]:
    """All reported values as a nested dict (cached; treat as read-only)."""
    return yaml.safe_load(REPORTED_VALUES.read_text())


def metric_cell(cell: list[float]) -> dict[str, float]:
    """``[mean, sd, lo, hi]`` -> ``{"mean":..., "sd":..., "ci_low":..., "ci_high":...}``."""
    mean, sd, lo, hi = cell
    return {"mean": mean, "sd": sd, "ci_low": lo, "ci_high": hi}


def table3() -> pd.DataFrame:
    """Paper Table 3 (voxel-wise metrics) in long form: subgroup, n, metric, mean, sd, ci_low, ci_high."""
    rows = []
    for key, entry in reported()["table3"].items():
        for metric in ("dice", "iou", "precision", "recall"):
            rows.append({"subgroup": key, "n": entry["n"], "metric": metric, **metric_cell(entry[metric])})
    return pd.DataFrame(rows)


def table4() -> pd.DataFrame:
    """Paper Table 4 (lesion-wise) in long form: subgroup, n, iou_threshold, metric, mean, sd, ci_low, ci_high."""
    rows = []
    for key, entry in reported()["table4"].items():
        for thr_key in ("iou_0.1", "iou_0.5"):
            thr = float(thr_key.split("_")[1])
            for metric in ("sensitivity", "fp_per_scan"):
                rows.append(
                    {
                        "subgroup": key,
                        "n": entry["n"],
                        "iou_threshold": thr,
                        "metric": metric,
                        **metric_cell(entry[thr_key][metric]),
                    }
                )
    return pd.DataFrame(rows)


def format_cell(mean: float, sd: float, lo: float, hi: float, digits: int = 2) -> str:
    """Format as the paper does: ``0.87 ± 0.02 (0.81–0.92)``; NaN parts print as ``–``."""

    def f(x: float) -> str:
        return "–" if x is None or x != x else f"{x:.{digits}f}"

    return f"{f(mean)} ± {f(sd)} ({f(lo)}–{f(hi)})"
