"""The paper beside the regenerated results: every comparison in one place.

Reported values come from :mod:`amtlib.reported` (re-exported here). This module holds each
side-by-side table the notebooks show (cohort flow, split, FROC narrative, the named radiomics
features, Table 3/4 cells for the forest plots) and the reviewer report's per-leaf comparison with
its stated rules and overall classification.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from amtlib import cohort
from amtlib import split as split_mod
from amtlib.reported import REPORTED_VALUES, format_cell, metric_cell, reported, table3, table4  # noqa: F401
from amtlib.subgroups import SUBGROUP_LABELS  # noqa: F401  (the vocabulary lives in amtlib.subgroups)

#: The features the paper names (Failure analysis), as short name -> pyradiomics key (image type "original").
NAMED_FEATURES: dict[str, str] = {
    "VoxelVolume": "original_shape_VoxelVolume",
    "Maximum3DDiameter": "original_shape_Maximum3DDiameter",
    "TotalEnergy": "original_firstorder_TotalEnergy",
    "Mean": "original_firstorder_Mean",
    "Median": "original_firstorder_Median",
}


# ------------------------------------------------------------------------------ tables beside the paper
# (each notebook shows one of these beside its regenerated table)


def flow_vs_paper(flow: dict[str, Any]) -> pd.DataFrame:
    """The cohort counts beside the paper's (Fig. 2, cohort_flow in reported values)."""
    rep = reported()["cohort_flow"]
    rows = [
        ("screened", flow["screened"], rep["screened"]),
        ("excluded", flow["excluded"], rep["excluded"]),
        ("included", flow["included"], rep["included"]),
        ("included institutions", flow["included_institutions"], rep["included_institutions"]),
    ]
    for reason, n in flow.get("excluded_by_reason", {}).items():
        rows.append((f"  excluded: {cohort.REASONS.get(reason, reason)}", n, None))
    df = pd.DataFrame(rows, columns=["item", "regenerated", "paper"])
    df["paper"] = df["paper"].astype("Int64")
    return df


def split_vs_paper(split: pd.DataFrame) -> pd.DataFrame:
    """The split's case and institution counts beside the paper's (Fig. 2)."""
    rep = reported()["cohort_flow"]
    flow = split_mod.split_flow(split)
    rows = []
    for box, key in (("external_test", "external_test"), ("training", "training"), ("tuning", "tuning")):
        for what in ("cases", "institutions"):
            rows.append({"item": f"{box} {what}", "regenerated": flow[box][what], "paper": rep[key][what]})
    dev_rep = rep["training"]["cases"] + rep["tuning"]["cases"]
    rows.append({"item": "development cases", "regenerated": flow["development"]["cases"], "paper": dev_rep})
    rows.append({"item": "development institutions", "regenerated": flow["development"]["institutions"],
                 "paper": rep["included_institutions"] - rep["external_test"]["institutions"]})
    return pd.DataFrame(rows)


def froc_vs_paper(froc: pd.DataFrame) -> pd.DataFrame:
    """The paper's Fig. 4 narrative (IoU 0.05-0.15 range; IoU 0.5 mean ± SD (CI)) beside the regenerated curve."""
    text = reported()["froc_text"]
    at = froc.set_index("iou_threshold")
    low = at.loc[[t for t in at.index if 0.05 - 1e-9 <= t <= 0.15 + 1e-9]]
    p05 = text["iou_0.50"]

    def span(v: pd.Series) -> str:
        return f"{v.min():.2f}–{v.max():.2f}" if len(v) else "–"

    def cell(m: str) -> str:
        if not np.isclose(at.index, 0.5).any():
            return "–"
        r = at.loc[at.index[np.isclose(at.index, 0.5)][0]]
        return format_cell(r[m], r[f"{m}_sd"], r[f"{m}_ci_low"], r[f"{m}_ci_high"])

    rows = {
        "sensitivity, IoU 0.05-0.15": ("{:.2f}–{:.2f}".format(*text["iou_0.05_to_0.15"]["sensitivity"]),
                                       span(low["sensitivity"])),
        "FP/scan, IoU 0.05-0.15": ("{:.2f}–{:.2f}".format(*text["iou_0.05_to_0.15"]["fp_per_scan"]), span(low["fp_per_scan"])),
        "sensitivity, IoU 0.5": (format_cell(p05["sensitivity"], p05["sensitivity_sd"], *p05["sensitivity_ci"]),
                                 cell("sensitivity")),
        "FP/scan, IoU 0.5": (format_cell(p05["fp_per_scan"], p05["fp_sd"], *p05["fp_ci"]), cell("fp_per_scan")),
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=["paper", "regenerated"])


def focused_table(tests: pd.DataFrame, values: dict[str, Any] | None = None) -> pd.DataFrame:
    """The five features the paper names, regenerated p-values beside the reported ones.

    ``values`` is ``reported()["radiomics_failure_modes"]`` (loaded when None). Adds
    ``larger_in`` (the group with the larger values by rank-biserial sign; the paper: ``top`` for the
    three size-related features), ``p_reported``, ``significant_reported`` (p < 0.05) and ``agrees`` (same side of 0.05; missing when
    there is no regenerated p-value). A named feature absent from ``tests`` keeps NaN regenerated values.
    """
    if values is None:
        values = reported()["radiomics_failure_modes"]
    p_rep = values["p_values"]
    keep = ["feature", "n_top", "n_bottom", "n_missing", "median_top", "median_bottom", "p_value", "q_value", "rank_biserial"]
    rows = []
    for short, key in NAMED_FEATURES.items():
        hit = tests[tests["feature"] == key]
        row = hit[[c for c in keep if c in hit.columns]].iloc[0].to_dict() if not hit.empty else {"feature": key}
        rows.append({"name": short, **row, "p_reported": float(p_rep[short])})
    table = pd.DataFrame(rows)
    table["larger_in"] = np.select([table["rank_biserial"] > 0, table["rank_biserial"] < 0], ["top", "bottom"], default="")
    table["significant_reported"] = table["p_reported"] < 0.05
    agrees = ((table["p_value"] < 0.05) == table["significant_reported"]).astype("boolean")
    table["agrees"] = agrees.mask(table["p_value"].isna())
    return table


def reported_cell(column: str, subgroup: str) -> list[float] | None:
    """Paper ``[mean, sd, lo, hi]`` for a Table 3 metric (``"dice"``) or Table 4 column (``"sensitivity_iou0.5"``)."""
    r = reported()
    if "_iou" in column:
        metric, thr = column.split("_iou")
        return r["table4"].get(subgroup, {}).get(f"iou_{float(thr):g}", {}).get(metric)
    return r["table3"].get(subgroup, {}).get(column)


# ------------------------------------------------------------------------------ paper vs regenerated
#
# Every leaf of reported_values.yaml (a metric cell [mean, sd, lo, hi] counts as one leaf) is compared
# with its regenerated twin by one stated rule; the rule is chosen by the leaf's key.

AGREE, DIFFER, MISSING, NOT_COMPARED = "agrees", "differs", "missing", "not compared"
#: Columns of ``comparison.csv``.
COMPARISON_COLUMNS: tuple[str, ...] = ("key", "section", "rule", "paper", "regenerated", "verdict", "why")
#: Comparison rules: what each compares and when it agrees.
RULES: dict[str, str] = {
    "count": "counts: equal",
    "mean_ci": "mean (95% CI): the two CIs overlap",
    "range": "a range of values: the two ranges overlap (printed ends widened by half a digit)",
    "median_range": "median (range): each median lies inside the other's range",
    "p_value": "p-value: same side of alpha = 0.05",
    "direction": "direction of a difference: the same group is larger, and the same features differ",
    "setting": "a stated setting: the run's value equals the paper's",
    "part": "part of a value compared on another row (an SD or CI of the same estimate, a percentage of a count)",
    "documented": "a methods statement, not a number: see the methods map",
}
_RULE_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"^(table3|table4)\.[^.]+\.n$", "count"),
    (r"^cohort_flow\.(screened|excluded|included|included_institutions)$", "count"),
    (r"^cohort_flow\.(external_test|training|tuning)\.(cases|institutions)$", "count"),
    (r"^cohort_flow\.sex\.", "count"),
    (r"^table1\.histology_counts\.", "count"),
    (r"^table2\.", "count"),
    (r"^radiomics_failure_modes\.groups\.", "count"),
    (r"^table3\.[^.]+\.(dice|iou|precision|recall)$", "mean_ci"),
    (r"^table4\..+\.(sensitivity|fp_per_scan)$", "mean_ci"),
    (r"^froc_text\.iou_0\.50\.(sensitivity|fp_per_scan)$", "mean_ci"),
    (r"^froc_text\.iou_0\.50\.", "part"),
    (r"^printed_percentages\.", "part"),
    (r"^froc_text\.iou_0\.05_to_0\.15\.", "range"),
    (r"^table1\.age_median_range\.", "median_range"),
    (r"^radiomics_failure_modes\.p_values\.", "p_value"),
    (r"^radiomics_failure_modes\.direction$", "direction"),
    (r"^training\.(batch_size|optimizer\.(lr|beta1|beta2))$", "setting"),
    (r"^evaluation\.froc_iou_thresholds\.", "setting"),
    (r"^cohort_flow\.external_test_slice_thickness_mm$", "setting"),
)
_SECTIONS: dict[str, str] = {
    "cohort_flow": "Fig 2 (cohort flow)", "table1": "Table 1", "table2": "Table 2", "acquisition": "Methods: acquisition",
    "training": "Methods: training", "evaluation": "Methods: evaluation", "table3": "Table 3", "table4": "Table 4",
    "froc_text": "Fig 4 (text)", "radiomics_failure_modes": "Failure modes", "printed_percentages": "Tables 1-2 (percentages)",
}


def _is_cell(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 4 and all(isinstance(x, (int, float)) for x in v)


def reported_leaves(values: dict[str, Any] | None = None, prefix: str = "") -> dict[str, Any]:
    """Flatten reported values to ``{"table3.overall.dice": [0.82, 0.15, 0.79, 0.84], ...}``.

    Dicts are walked; any other value (a number, a string, a list, a metric cell) is a leaf.
    """
    values = reported() if values is None else values
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(reported_leaves(v, key + "."))
        else:
            out[key] = v
    return out


def comparison_rule(key: str) -> str:
    """The rule (a key of :data:`RULES`) that compares leaf ``key``."""
    import re

    return next((rule for pat, rule in _RULE_PATTERNS if re.search(pat, key)), "documented")


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x


def verdict_count(paper: Any, regen: Any) -> tuple[str, str]:
    """Counts agree when equal."""
    if not _num(regen):
        return MISSING, "no regenerated count"
    if int(paper) == int(regen):
        return AGREE, "equal"
    return DIFFER, f"{int(regen)} vs {int(paper)} ({int(regen) - int(paper):+d})"


def verdict_mean_ci(paper: list[float], regen: "list[float] | None", digits: int = 2) -> tuple[str, str]:
    """Mean (95% CI) cells agree when the two CIs overlap (the paper's ends widened by half a digit)."""
    if regen is None or len(regen) != 4 or not all(_num(x) for x in (regen[0], regen[2], regen[3])):
        return MISSING, "no regenerated estimate (empty subgroup or step absent)"
    h = 0.5 * 10.0 ** (-digits)
    lo, hi = paper[2] - h, paper[3] + h
    if regen[2] <= hi and lo <= regen[3]:
        return AGREE, f"CIs overlap ({regen[2]:.2f}-{regen[3]:.2f} and {paper[2]:.2f}-{paper[3]:.2f})"
    side = "above" if regen[2] > hi else "below"
    return DIFFER, f"regenerated CI {regen[2]:.2f}-{regen[3]:.2f} lies {side} the paper's {paper[2]:.2f}-{paper[3]:.2f}"


def verdict_range(paper: list[float], regen: "list[float] | None", digits: int = 2) -> tuple[str, str]:
    """Two ranges [lo, hi] agree when they overlap (the paper's ends widened by half a digit)."""
    if regen is None or not all(_num(x) for x in regen):
        return MISSING, "no regenerated values"
    h = 0.5 * 10.0 ** (-digits)
    if regen[0] <= paper[1] + h and paper[0] - h <= regen[1]:
        return AGREE, "ranges overlap"
    return DIFFER, f"regenerated {regen[0]:.2f}-{regen[1]:.2f} vs paper {paper[0]:.2f}-{paper[1]:.2f}"


def verdict_median_range(paper: list[float], regen: "list[float] | None") -> tuple[str, str]:
    """Median (min, max): agree when each median lies inside the other's range."""
    if regen is None or not all(_num(x) for x in regen):
        return MISSING, "no regenerated ages"
    ok = paper[1] <= regen[0] <= paper[2] and regen[1] <= paper[0] <= regen[2]
    return (AGREE, "each median inside the other's range") if ok else (DIFFER, "a median outside the other's range")


def verdict_p_value(paper: float, regen: Any, alpha: float = 0.05) -> tuple[str, str]:
    """p-values agree when both are below ``alpha`` or both are not."""
    if not _num(regen):
        return MISSING, "no regenerated p-value"
    same = (paper < alpha) == (regen < alpha)
    side = lambda p: "significant" if p < alpha else "not significant"  # noqa: E731
    return (AGREE if same else DIFFER), f"{side(regen)} here, {side(paper)} in the paper (alpha {alpha:g})"


def verdict_direction(paper_larger: dict[str, str], regen_larger: "dict[str, str] | None") -> tuple[str, str]:
    """Directions agree when, for each feature the paper names as different, the same group is larger."""
    if not regen_larger:
        return MISSING, "no regenerated direction"
    diff = {f: (g, regen_larger.get(f)) for f, g in paper_larger.items() if regen_larger.get(f) != g}
    if not diff:
        return AGREE, "same group larger for " + ", ".join(paper_larger)
    return DIFFER, "; ".join(f"{f}: larger in {r} here, {p} in the paper" for f, (p, r) in diff.items())


def verdict_setting(paper: Any, regen: Any) -> tuple[str, str]:
    """A stated setting agrees when the run used the same value."""
    if regen is None:
        return MISSING, "setting not recorded in the run"
    try:
        same = bool(np.isclose(float(paper), float(regen)))
    except (TypeError, ValueError):
        same = paper == regen
    return (AGREE, "same setting") if same else (DIFFER, f"run used {regen}, paper {paper}")


#: For the direction rule: the features the paper names as larger in the top (high-Dice) group.
PAPER_DIRECTION: dict[str, str] = {"VoxelVolume": "top", "Maximum3DDiameter": "top", "TotalEnergy": "top"}


def _paper_value(key: str, leaves: dict[str, Any]) -> Any:
    """The paper side of a leaf; the Fig. 4 text cells are assembled from their SD and CI siblings."""
    if key == "froc_text.iou_0.50.sensitivity":
        base = "froc_text.iou_0.50."
        return [leaves[base + "sensitivity"], leaves[base + "sensitivity_sd"], *leaves[base + "sensitivity_ci"]]
    if key == "froc_text.iou_0.50.fp_per_scan":
        base = "froc_text.iou_0.50."
        return [leaves[base + "fp_per_scan"], leaves[base + "fp_sd"], *leaves[base + "fp_ci"]]
    if key == "radiomics_failure_modes.direction":
        return PAPER_DIRECTION
    return leaves[key]


def _show(v: Any) -> str:
    if v is None:
        return "–"
    if _is_cell(v):
        return format_cell(*v)
    if isinstance(v, dict):
        return ", ".join(f"{k}: {x}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(f"{x:.3g}" if isinstance(x, float) else str(x) for x in v)
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


#: The verdict function of each compared rule (the other rules are documented, not compared).
VERDICTS: dict[str, Any] = {
    "count": verdict_count, "mean_ci": verdict_mean_ci, "range": verdict_range, "median_range": verdict_median_range,
    "p_value": verdict_p_value, "direction": verdict_direction, "setting": verdict_setting,
}


def compare(regenerated: dict[str, Any], values: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per reported leaf: key, section, rule, paper, regenerated, verdict, why (``comparison.csv``).

    ``regenerated`` maps leaf keys to regenerated values in the shape of the paper's (a count, a cell
    ``[mean, sd, lo, hi]``, a range, a p-value, ``{feature: larger group}`` for the direction, a
    setting); absent keys are ``missing`` (a step not run). ``documented`` and ``part`` leaves are
    shown but not compared.
    """
    leaves = reported_leaves(values)
    rows = []
    for key in leaves:
        rule = comparison_rule(key)
        paper_v = _paper_value(key, leaves)
        regen = regenerated.get(key)
        judge = VERDICTS.get(rule)
        verdict, why = judge(paper_v, regen) if judge is not None else (NOT_COMPARED, RULES[rule])
        rows.append({"key": key, "section": _SECTIONS.get(key.split(".")[0], key.split(".")[0]), "rule": rule,
                     "paper": _show(paper_v), "regenerated": _show(regen), "verdict": verdict, "why": why})
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


#: Overall classification, in the style of replication-package reviews.
CLASSIFICATION_RULE = ("reproduced: every compared value agrees; partly reproduced: at least half agree; "
                       "not reproduced: fewer than half agree (values not compared or missing are left out)")


def classify(comparison: pd.DataFrame) -> dict[str, Any]:
    """Overall verdict from ``comparison.csv``: counts of each verdict and the classification."""
    counts = comparison["verdict"].value_counts().to_dict()
    agree, differ = int(counts.get(AGREE, 0)), int(counts.get(DIFFER, 0))
    compared = agree + differ
    if compared == 0:
        label = "not reproduced"
    elif differ == 0:
        label = "reproduced"
    elif agree >= compared / 2:
        label = "partly reproduced"
    else:
        label = "not reproduced"
    return {"classification": label, "compared": compared, AGREE: agree, DIFFER: differ,
            MISSING: int(counts.get(MISSING, 0)), NOT_COMPARED: int(counts.get(NOT_COMPARED, 0)),
            "rule": CLASSIFICATION_RULE}
