"""The numbers the paper reports (ground layer): the package's own copy, loaded once, and the paper's
number format.

The values live in ``amtlib/data/reported_values.yaml`` (the paper's tables and text, numbers only).
Metric cells there are ``[mean, sd, ci_low, ci_high]``. Data-layer modules read reported values from
here; the comparisons of regenerated results with them live in :mod:`amtlib.paper`. Imports nothing
from ``amtlib``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

REPORTED_VALUES = Path(__file__).with_name("data") / "reported_values.yaml"
#: Cohort histology -> row of the fusion paper's Table 2 (``dmfn_fusion.table2_ctc_level``) whose CTC
#: level describes it: thymomas go by WHO subtype (``thymoma_<subtype>``), the rest by this mapping, our
#: choice of the closest row where the names differ; anything else is ``"others"``. The demo cohort draws
#: its CTC levels from these rows and step 08 compares with them (one mapping for both).
CTC_ROW: dict[str, str] = {
    "thymic_carcinoma": "tscc", "lymphoma": "lymphoma", "thymic_cyst": "cyst", "teratoma": "mature_teratoma",
    "carcinoid": "carcinoid", "sarcomatous_transformation_of_teratoma": "immature_teratoma",
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
