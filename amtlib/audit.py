"""Statistical audit of reported tables: is each printed number consistent with the others?

Reviewers' checks of a paper's own tables (and, as a self-check, of the regenerated ones). Each rule is
a small pure function over the printed numbers that returns a :class:`Finding`: the values, the range
the rule allows, a verdict and one line of why. Every printed number is an interval, not a point:
``0.89`` printed with 2 digits is anything in [0.885, 0.895), and each rule allows for that
(:func:`printed_interval`), so a verdict of ``inconsistent`` means no set of unrounded values could have
printed as the table does.

Verdicts: ``consistent`` (some unrounded values satisfy the rule), ``inconsistent`` (none do),
``cannot tell`` (the rule does not apply, e.g. n < 2 or a value missing). The table runners at the end
(:func:`audit_table3`, :func:`audit_table4`, :func:`audit_counts`, :func:`audit_reported`) apply every
rule to the cells of ``reported_values.yaml`` or to a regenerated ``table3.csv``/``table4.csv``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

CONSISTENT, INCONSISTENT, CANNOT_TELL = "consistent", "inconsistent", "cannot tell"
#: Columns of ``audit.csv``.
FINDING_COLUMNS: tuple[str, ...] = ("source", "table", "row", "rule", "reported", "allowed", "verdict", "why")
#: Relative slack on the expected CI width: a percentile bootstrap of a skewed [0, 1] metric need not
#: equal the normal-theory width; 25% covers that for n >= 5 (simulated: 0.81-1.15 x; tests check it).
CI_WIDTH_SLACK: float = 0.25


@dataclass(frozen=True)
class Finding:
    """One row of the audit: where, which rule, the values, the allowed range, verdict and why."""

    table: str
    row: str
    rule: str
    reported: str
    allowed: str
    verdict: str
    why: str
    source: str = "paper"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def printed_interval(x: float, digits: int = 2) -> tuple[float, float]:
    """Values that print as ``x`` when rounded to ``digits`` decimals: ``[x - h, x + h]``, h = 10^-d / 2."""
    h = 0.5 * 10.0 ** (-digits)
    return x - h, x + h


def _fmt(x: float, d: int = 3) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.{d}f}"


def _overlaps(a: tuple[float, float], b: tuple[float, float], eps: float = 1e-9) -> bool:
    """Whether two half-open intervals [lo, hi) share a point (touching ends do not)."""
    return a[0] < b[1] - eps and b[0] < a[1] - eps


# ----------------------------------------------------------------------------------------- rules


def ci_width_of_mean(mean: float, sd: float, lo: float, hi: float, n: int, digits: int = 2,
                     level: float = 0.95, slack: float = CI_WIDTH_SLACK) -> tuple[str, str, str]:
    """Width of a CI of a mean of ``n`` cases against 2 x z x SD / sqrt(n).

    Applies to: Table 3 ("mean ± SD (95% CI)" over cases). The narrowest width allowed is the bootstrap's,
    2 z SD sqrt((n-1)/n) / sqrt(n) with the smallest SD that prints as ``sd``; the widest the t
    interval's, 2 t_{n-1} SD / sqrt(n) with the largest; each widened by ``slack`` (relative; 0.45
    below for n < 5, where a bootstrap has few distinct means). The printed width ``hi - lo`` is
    itself known to ±10^-digits. n < 2 or NaN input: cannot tell.
    Returns ``(verdict, allowed, why)``.
    """
    if n is None or n < 2 or any(v is None or not np.isfinite(v) for v in (sd, lo, hi)):
        return CANNOT_TELL, "", "needs n >= 2 and a printed SD and CI"
    z = sps.norm.ppf(0.5 + level / 2)
    t = sps.t.ppf(0.5 + level / 2, n - 1)
    sd_lo, sd_hi = printed_interval(sd, digits)
    sd_lo = max(sd_lo, 0.0)
    low_slack = slack if n >= 5 else 0.45  # a bootstrap of 3-4 cases has few distinct means: narrower CIs
    w_min = 2 * z * sd_lo * math.sqrt((n - 1) / n) / math.sqrt(n) * (1 - low_slack)
    w_max = 2 * t * sd_hi / math.sqrt(n) * (1 + slack)
    step = 10.0 ** (-digits)
    printed = (max(hi - lo - step, 0.0), hi - lo + step)
    allowed = f"width {_fmt(w_min)}-{_fmt(w_max)}"
    expect = 2 * z * sd / math.sqrt(n)
    if _overlaps(printed, (w_min, w_max)):
        return CONSISTENT, allowed, f"printed width {hi - lo:.2f} fits 2 x 1.96 x SD / sqrt(n) = {expect:.3f}"
    ratio = (hi - lo) / expect if expect > 0 else float("inf")
    implied_n = (2 * z * sd / (hi - lo)) ** 2 if hi > lo else float("inf")
    return INCONSISTENT, allowed, (f"printed width {hi - lo:.2f} is {ratio:.1f}x the {expect:.3f} of a mean of {n} "
                                   f"cases with SD {sd:g} (it fits n ~ {implied_n:.0f}, or a CI of single cases)")


def ci_width_of_estimate(sd: float, lo: float, hi: float, digits: int = 2, level: float = 0.95,
                         slack: float = CI_WIDTH_SLACK) -> tuple[str, str, str]:
    """Width of a CI against 2 x z x SD where SD is the bootstrap SD of the estimate itself (a standard error).

    Applies to: Table 4 and Fig. 4 (pooled sensitivity and FP/scan; their "SD" can only be a standard
    error, since a pooled rate has no per-case SD). A percentile CI clipped at 0 or 1 is narrower, so
    only too wide a CI is inconsistent when a bound sits at 0 or 1. SD printed 0: cannot tell.
    """
    if any(v is None or not np.isfinite(v) for v in (sd, lo, hi)):
        return CANNOT_TELL, "", "needs a printed SD and CI"
    z = sps.norm.ppf(0.5 + level / 2)
    sd_lo, sd_hi = printed_interval(sd, digits)
    w_min = 2 * z * max(sd_lo, 0.0) * (1 - slack)
    w_max = 2 * z * sd_hi * (1 + slack)
    step = 10.0 ** (-digits)
    clipped = lo <= 0 + step / 2 or hi >= 1 - step / 2
    if clipped:
        w_min = 0.0
    printed = (max(hi - lo - step, 0.0), hi - lo + step)
    allowed = f"width {_fmt(w_min)}-{_fmt(w_max)}" + (" (CI clipped at a bound)" if clipped else "")
    if _overlaps(printed, (w_min, w_max)):
        return CONSISTENT, allowed, f"printed width {hi - lo:.2f} fits 2 x 1.96 x SD = {2 * z * sd:.3f}"
    return INCONSISTENT, allowed, f"printed width {hi - lo:.2f} against 2 x 1.96 x SD = {2 * z * sd:.3f}"


def mean_inside_ci(mean: float, lo: float, hi: float, digits: int = 2) -> tuple[str, str, str]:
    """The point estimate lies inside its own CI (each end known to ±half a printed digit)."""
    if any(v is None or not np.isfinite(v) for v in (mean, lo, hi)):
        return CANNOT_TELL, "", "missing value"
    h = 0.5 * 10.0 ** (-digits)
    allowed = f"{lo - h:.3f} <= mean <= {hi + h:.3f}"
    # unrounded mean in [mean - h, mean + h) must be able to sit inside [lo - h, hi + h)
    if lo - mean < 2 * h - 1e-9 and mean - hi < 2 * h - 1e-9:
        return CONSISTENT, allowed, "mean inside its CI"
    return INCONSISTENT, allowed, f"mean {mean:g} outside its own CI {lo:g}-{hi:g}"


def sd_bound_unit_interval(mean: float, sd: float, n: int, digits: int = 2) -> tuple[str, str, str]:
    """The SD (ddof 1) of n values in [0, 1] with mean m is at most sqrt(m(1-m) n/(n-1)).

    The bound is reached when every value is 0 or 1; the largest m(1-m) over the means that print as
    ``mean`` and the smallest SD that prints as ``sd`` are compared. n < 2: cannot tell.
    """
    if n is None or n < 2 or any(v is None or not np.isfinite(v) for v in (mean, sd)):
        return CANNOT_TELL, "", "needs n >= 2"
    m_lo, m_hi = printed_interval(mean, digits)
    m_lo, m_hi = max(m_lo, 0.0), min(m_hi, 1.0)
    m_best = min(max(0.5, m_lo), m_hi)
    bound = math.sqrt(m_best * (1 - m_best) * n / (n - 1))
    allowed = f"SD <= {bound:.3f}"
    if printed_interval(sd, digits)[0] <= bound + 1e-12:
        return CONSISTENT, allowed, f"SD {sd:g} within the bound {bound:.3f} of a [0, 1] metric with mean {mean:g}"
    return INCONSISTENT, allowed, f"SD {sd:g} exceeds the largest possible {bound:.3f} for values in [0, 1] with mean {mean:g}"


def iou_between_dice_bounds(mean_dice: float, mean_iou: float, digits: int = 2) -> tuple[str, str, str]:
    """Per case IoU = D / (2 - D) <= D, and D / (2 - D) is convex, so by Jensen's inequality
    meanDice / (2 - meanDice) <= mean IoU <= mean Dice (each end widened by the printed rounding)."""
    if any(v is None or not np.isfinite(v) for v in (mean_dice, mean_iou)):
        return CANNOT_TELL, "", "missing value"
    d_lo, d_hi = printed_interval(mean_dice, digits)
    lo, hi = d_lo / (2 - d_lo), d_hi
    allowed = f"{lo:.3f} <= IoU <= {hi:.3f}"
    if _overlaps(printed_interval(mean_iou, digits), (lo, hi)):
        return CONSISTENT, allowed, f"mean IoU {mean_iou:g} between D/(2-D) = {mean_dice / (2 - mean_dice):.3f} and D = {mean_dice:g}"
    return INCONSISTENT, allowed, f"mean IoU {mean_iou:g} outside [D/(2-D), D] for mean Dice {mean_dice:g}"


def partition_counts(total: int, parts: Mapping[str, int]) -> tuple[str, str, str]:
    """The subgroup sizes of a partition of the cases add up to the total."""
    s = int(sum(parts.values()))
    if s == int(total):
        return CONSISTENT, f"sum = {total}", f"{' + '.join(str(v) for v in parts.values())} = {s}"
    return INCONSISTENT, f"sum = {total}", f"subgroup sizes add up to {s}, not {total}"


def partition_mean(overall: float, parts: Sequence[tuple[int, float]], digits: int = 2) -> tuple[str, str, str]:
    """The overall mean equals the n-weighted mean of the subgroup means of a partition.

    ``parts`` is ``[(n_i, mean_i), ...]``. Each printed mean is an interval, so the weighted mean is
    too; it must overlap the overall mean's interval. (Cases left out as NaN would break the identity;
    the paper reports none.)
    """
    n = np.array([p[0] for p in parts], dtype=float)
    m = np.array([p[1] for p in parts], dtype=float)
    if n.sum() <= 0 or not np.all(np.isfinite(m)):
        return CANNOT_TELL, "", "no subgroup means"
    h = 0.5 * 10.0 ** (-digits)
    w = float(n @ m / n.sum())
    allowed = f"{w - h:.3f}-{w + h:.3f}"
    if _overlaps(printed_interval(overall, digits), (w - h, w + h)):
        return CONSISTENT, allowed, f"n-weighted subgroup mean {w:.4f} prints as the overall {overall:g}"
    return INCONSISTENT, allowed, f"n-weighted subgroup mean {w:.4f} cannot print as the overall {overall:g}"


def partition_sd(overall_sd: float, overall_mean: float, parts: Sequence[tuple[int, float, float]],
                 digits: int = 2) -> tuple[str, str, str]:
    """The overall SD follows from the subgroups' n, means and SDs (law of total variance).

    (N-1) s^2 = sum (n_i - 1) s_i^2 + sum n_i (m_i - m)^2, with m the weighted mean of the m_i. Each
    printed SD and mean spans its rounding interval; the allowed range takes the extremes.
    ``parts`` is ``[(n_i, mean_i, sd_i), ...]``.
    """
    n = np.array([p[0] for p in parts], dtype=float)
    m = np.array([p[1] for p in parts], dtype=float)
    s = np.array([p[2] for p in parts], dtype=float)
    N = n.sum()
    if N < 2 or not (np.all(np.isfinite(m)) and np.all(np.isfinite(s))):
        return CANNOT_TELL, "", "no subgroup SDs"
    h = 0.5 * 10.0 ** (-digits)
    s_lo, s_hi = np.maximum(s - h, 0), s + h
    within_lo, within_hi = float(((n - 1) * s_lo**2).sum()), float(((n - 1) * s_hi**2).sum())
    mbar = float(n @ m / N)
    dev = np.abs(m - mbar)
    between_lo = float((n * np.maximum(dev - 2 * h, 0) ** 2).sum())
    between_hi = float((n * (dev + 2 * h) ** 2).sum())
    lo, hi = math.sqrt((within_lo + between_lo) / (N - 1)), math.sqrt((within_hi + between_hi) / (N - 1))
    allowed = f"SD {lo:.3f}-{hi:.3f}"
    if _overlaps(printed_interval(overall_sd, digits), (lo, hi)):
        return CONSISTENT, allowed, f"overall SD {overall_sd:g} within the {lo:.3f}-{hi:.3f} the subgroups imply"
    return INCONSISTENT, allowed, f"the subgroups imply an overall SD of {lo:.3f}-{hi:.3f}, not {overall_sd:g}"


def attainable_counts(value: float, denominator: int, digits: int = 2, truncated: bool = False) -> list[int]:
    """Integers k with k / ``denominator`` printing as ``value`` (rounded to ``digits``; also truncated
    to ``digits`` when ``truncated``)."""
    lo, hi = printed_interval(value, digits)
    eps = 1e-9
    scale = 10**digits
    # an exact half-way value (339/40 = 8.475) may print either way (round-half-even, binary floats)
    return [k for k in range(max(math.floor(lo * denominator) - 1, 0), math.ceil(hi * denominator) + 2)
            if lo - eps <= k / denominator <= hi + eps
            or (truncated and math.floor(k / denominator * scale + eps) == round(value * scale))]


def attainable_rate(value: float, n: int, digits: int = 2, what: str = "FP/scan") -> tuple[str, str, str]:
    """A count divided by a known n (FP/scan = FP / n scans) must print as the reported value."""
    if n is None or n < 1 or value is None or not np.isfinite(value):
        return CANNOT_TELL, "", "needs n"
    ks = attainable_counts(value, n, digits)
    if ks:
        return CONSISTENT, f"{what} = k/{n}", f"{ks[0]}/{n} = {ks[0] / n:.4f}"
    below = math.floor(value * n + 1e-9)
    near = ", ".join(f"{k}/{n} = {k / n:.4f}" for k in (below, below + 1) if k >= 0)
    trunc = " (the value is a truncation, not a rounding)" if any(
        math.floor(k / n * 10**digits + 1e-9) / 10**digits == round(value, digits) for k in (below, below + 1)) else ""
    return INCONSISTENT, f"{what} = k/{n}", f"no count over {n} prints as {value:.{digits}f}: {near}{trunc}"


def percent_of_count(count: int, total: int, printed: float, digits: int = 1) -> tuple[str, str, str]:
    """A printed percentage must be 100 x count / total rounded to ``digits`` (Tables 1-2 "n (%)")."""
    if not total:
        return CANNOT_TELL, "", "total is 0"
    exact = 100.0 * count / total
    allowed = f"{exact:.{digits}f}"
    if abs(exact - printed) <= 0.5 * 10.0 ** (-digits) + 1e-9:  # a half-way value may print either way
        return CONSISTENT, allowed, f"{count}/{total} = {exact:.3f}%"
    trunc = math.floor(exact * 10**digits + 1e-9) / 10**digits
    note = " (a truncation, not a rounding)" if math.isclose(trunc, printed, abs_tol=1e-9) else ""
    return INCONSISTENT, allowed, f"{count}/{total} = {exact:.3f}% prints as {exact:.{digits}f}, not {printed:.{digits}f}{note}"


def attainable_proportion(value: float, min_denominator: int, max_denominator: int, digits: int = 2) -> list[int]:
    """Denominators N in [min, max] for which some k/N prints as ``value`` (e.g. sensitivity = TP/N_ref)."""
    return [d for d in range(max(min_denominator, 1), max_denominator + 1) if attainable_counts(value, d, digits)]


def implied_reference_lesions(n: int, sens: tuple[float, float], fp: tuple[float, float], digits: int = 2,
                              max_per_scan: int = 4, truncated: bool = False) -> list[int]:
    """Numbers of reference lesions N_ref that two operating points of one-to-one matching allow.

    Applies to: Table 4 (IoU 0.1 and 0.5). With one-to-one matching TP(t) + FP(t) = N_pred at every
    threshold, so a rise in FP between the thresholds equals the fall in TP:
    n x dFP/scan = N_ref x dSensitivity. Returns every N_ref in [n, ``max_per_scan`` x n] (each scan
    has at least one tumour) for which integer TP and FP counts print as the four reported values.
    ``sens`` and ``fp`` are (value at the lower threshold, value at the higher). ``truncated`` also
    accepts counts whose ratio was truncated, not rounded, to the printed digits.
    """
    fp_lo = attainable_counts(fp[0], n, digits, truncated)
    fp_hi = attainable_counts(fp[1], n, digits, truncated)
    d_tp = {b - a for a in fp_lo for b in fp_hi}
    out = []
    for N in range(max(n, 1), max_per_scan * n + 1):
        tp1 = attainable_counts(sens[0], N, digits, truncated)
        tp2 = attainable_counts(sens[1], N, digits, truncated)
        if tp1 and tp2 and any((a - b) in d_tp for a in tp1 for b in tp2):
            out.append(N)
    return out


def ranges_text(values: Sequence[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``."""
    if not values:
        return "none"
    out, start, prev = [], values[0], values[0]
    for v in [*values[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(out)


def fp_definition_evidence(fp_low: float, fp_high: float, digits: int = 2) -> dict[str, tuple[str, str]]:
    """Which FP definition two FP/scan values at a lower and a higher IoU threshold can follow.

    ``unmatched`` (every unmatched prediction is an FP): FP can only rise with the threshold.
    ``no_overlap`` (only a component overlapping no reference is an FP): FP does not depend on the
    threshold. Returns ``{definition: (verdict, why)}``.
    """
    a, b = printed_interval(fp_low, digits), printed_interval(fp_high, digits)
    same = _overlaps(a, b)
    rises = b[1] > a[0]
    return {
        "unmatched": (CONSISTENT if rises else INCONSISTENT,
                      f"FP/scan {fp_low:g} -> {fp_high:g}: " + ("may rise with the threshold" if rises else "falls, impossible")),
        "no_overlap": (CONSISTENT if same else INCONSISTENT,
                       f"FP/scan {fp_low:g} -> {fp_high:g}: " + ("unchanged, as it must be" if same else "changes with the threshold, impossible")),
    }


# --------------------------------------------------------------------------------- table runners

VOXEL_METRICS: tuple[str, ...] = ("dice", "iou", "precision", "recall")
#: Partitions of the cases as Table 3/4 rows (amtlib.paper.SUBGROUP_LABELS keys).
PARTITIONS: dict[str, tuple[str, ...]] = {
    "vendor": ("canon_medical_systems", "ge_healthcare", "siemens", "fujifilm", "philips_healthcare"),
    "size": ("size_large", "size_medium", "size_small"),
    "histology": ("thymoma", "thymic_carcinoma", "thymic_cyst", "lymphoma", "others"),
}


def _cells3(table3: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in table3.items() if isinstance(v, Mapping)}


def _f(table: str, row: str, rule: str, reported: str, res: tuple[str, str, str], source: str) -> Finding:
    return Finding(table, row, rule, reported, res[1], res[0], res[2], source)


def _cell_text(c: Sequence[float]) -> str:
    return f"{c[0]:.2f} ± {c[1]:.2f} ({c[2]:.2f}-{c[3]:.2f})"


def audit_table3(table3: Mapping[str, Mapping[str, Any]], source: str = "paper", digits: int = 2) -> list[Finding]:
    """Every Table 3 rule: CI width of a mean, mean in CI, SD bound, IoU vs Dice, partitions.

    ``table3`` is ``{subgroup: {"n": n, metric: [mean, sd, lo, hi]}}`` as in ``reported_values.yaml``
    (or :func:`table3_cells` of a regenerated ``table3.csv``).
    """
    out: list[Finding] = []
    rows = _cells3(table3)
    for key, e in rows.items():
        n = e.get("n")
        for m in VOXEL_METRICS:
            c = e.get(m)
            if c is None:
                continue
            txt = _cell_text(c)
            out.append(_f("Table 3", f"{key} {m}", "CI width of a mean (2 x 1.96 x SD / sqrt(n))", f"{txt}, n = {n}",
                          ci_width_of_mean(*c, n=n, digits=digits), source))
            out.append(_f("Table 3", f"{key} {m}", "mean inside its CI", txt, mean_inside_ci(c[0], c[2], c[3], digits), source))
            out.append(_f("Table 3", f"{key} {m}", "SD of a [0, 1] metric <= sqrt(m(1-m) n/(n-1))", f"{txt}, n = {n}",
                          sd_bound_unit_interval(c[0], c[1], n, digits), source))
        if e.get("dice") is not None and e.get("iou") is not None:
            out.append(_f("Table 3", f"{key}", "meanDice/(2-meanDice) <= mean IoU <= mean Dice",
                          f"Dice {e['dice'][0]:.2f}, IoU {e['iou'][0]:.2f}",
                          iou_between_dice_bounds(e["dice"][0], e["iou"][0], digits), source))
    out += _audit_partitions3(rows, source, digits)
    return out


def _audit_partitions3(rows: Mapping[str, Mapping[str, Any]], source: str, digits: int) -> list[Finding]:
    out: list[Finding] = []
    overall = rows.get("overall")
    if overall is None:
        return out
    for name, keys in PARTITIONS.items():
        parts = {k: rows[k] for k in keys if k in rows and rows[k].get("n")}
        if not parts:
            continue
        ns = {k: int(v["n"]) for k, v in parts.items()}
        out.append(_f("Table 3", f"{name} partition", "subgroup n add up to the overall n",
                      f"{', '.join(f'{k} {v}' for k, v in ns.items())}; overall {overall['n']}",
                      partition_counts(int(overall["n"]), ns), source))
        for m in VOXEL_METRICS:
            if overall.get(m) is None or any(v.get(m) is None for v in parts.values()):
                continue
            mp = [(int(v["n"]), float(v[m][0])) for v in parts.values()]
            rep = f"overall {overall[m][0]:.2f}; " + ", ".join(f"{k} {v[m][0]:.2f} (n {v['n']})" for k, v in parts.items())
            out.append(_f("Table 3", f"{name} partition {m}", "overall mean = n-weighted mean of subgroup means", rep,
                          partition_mean(float(overall[m][0]), mp, digits), source))
            sp = [(int(v["n"]), float(v[m][0]), float(v[m][1])) for v in parts.values()]
            rep = f"overall SD {overall[m][1]:.2f}; " + ", ".join(f"{k} {v[m][0]:.2f} ± {v[m][1]:.2f}" for k, v in parts.items())
            out.append(_f("Table 3", f"{name} partition {m}", "overall SD from subgroup n, means, SDs (total variance)", rep,
                          partition_sd(float(overall[m][1]), float(overall[m][0]), sp, digits), source))
    return out


def audit_table4(table4: Mapping[str, Mapping[str, Any]], source: str = "paper", digits: int = 2,
                 thresholds: tuple[str, str] = ("iou_0.1", "iou_0.5")) -> list[Finding]:
    """Every Table 4 rule: CI of an estimate, mean in CI, attainable FP/scan, implied N_ref, FP definition.

    ``table4`` is ``{subgroup: {"n": n, "iou_0.1": {"sensitivity": [..], "fp_per_scan": [..]}, ...}}``.
    """
    out: list[Finding] = []
    implied: dict[str, list[int]] = {}
    for key, e in table4.items():
        if not isinstance(e, Mapping):
            continue
        n = int(e["n"])
        for t in thresholds:
            for m in ("sensitivity", "fp_per_scan"):
                c = e.get(t, {}).get(m)
                if c is None:
                    continue
                row, txt = f"{key} {m} {t}", _cell_text(c)
                out.append(_f("Table 4", row, "CI width of a pooled estimate (2 x 1.96 x bootstrap SD)", txt,
                              ci_width_of_estimate(c[1], c[2], c[3], digits), source))
                out.append(_f("Table 4", row, "mean inside its CI", txt, mean_inside_ci(c[0], c[2], c[3], digits), source))
                if m == "fp_per_scan":
                    out.append(_f("Table 4", row, "FP/scan = FP / n is an attainable fraction", f"{c[0]:.2f}, n = {n}",
                                  attainable_rate(c[0], n, digits), source))
                else:
                    dens = attainable_proportion(c[0], n, 4 * n, digits)
                    res = ((CONSISTENT, f"N_ref >= {n}", f"needs N_ref in {ranges_text(dens)} reference lesions") if dens
                           else (INCONSISTENT, f"N_ref >= {n}", f"no TP/N_ref with N_ref in {n}-{4 * n} prints as {c[0]:.2f}"))
                    out.append(_f("Table 4", row, "sensitivity = TP / N_ref is an attainable fraction", f"{c[0]:.2f}, n = {n}",
                                  res, source))
        if all(e.get(t, {}).get(m) is not None for t in thresholds for m in ("sensitivity", "fp_per_scan")):
            s = tuple(float(e[t]["sensitivity"][0]) for t in thresholds)
            f = tuple(float(e[t]["fp_per_scan"][0]) for t in thresholds)
            ns = implied_reference_lesions(n, s, f, digits)  # type: ignore[arg-type]
            nt = ns or implied_reference_lesions(n, s, f, digits, truncated=True)  # type: ignore[arg-type]
            implied[key] = nt
            rep = f"sens {s[0]:.2f} -> {s[1]:.2f}, FP/scan {f[0]:.2f} -> {f[1]:.2f}, n = {n}"
            res = ((CONSISTENT, f"N_ref in {n}-{4 * n}", f"TP + FP conserved for N_ref in {ranges_text(ns)}") if ns else
                   (CONSISTENT, f"N_ref in {n}-{4 * n}", f"only if some values were truncated, not rounded: N_ref in {ranges_text(nt)}")
                   if nt else
                   (INCONSISTENT, f"N_ref in {n}-{4 * n}",
                    "no integer TP/FP counts (rounded or truncated) conserve TP + FP = N_pred between the two thresholds"))
            out.append(_f("Table 4", key, "one-to-one matching: n x dFP/scan = N_ref x dSensitivity", rep, res, source))
            for d, (verdict, why) in fp_definition_evidence(f[0], f[1], digits).items():
                out.append(Finding("Table 4", key, f"FP definition: {d}", f"FP/scan {f[0]:.2f} -> {f[1]:.2f}",
                                   "FP rises with t" if d == "unmatched" else "FP constant in t", verdict, why, source))
    out += _audit_implied_partitions(implied, table4, source)
    return out


def _audit_implied_partitions(implied: Mapping[str, list[int]], table4: Mapping[str, Any], source: str) -> list[Finding]:
    """The reference-lesion counts implied per subgroup must add up to one the overall row allows."""
    out: list[Finding] = []
    if not implied.get("overall"):
        return out
    total = set(implied["overall"])
    for name, keys in PARTITIONS.items():
        if not all(implied.get(k) for k in keys):
            continue
        lo = sum(min(implied[k]) for k in keys)
        hi = sum(max(implied[k]) for k in keys)
        fits = [N for N in total if lo <= N <= hi]
        rep = "; ".join(f"{k} {ranges_text(implied[k])}" for k in keys)
        res = ((CONSISTENT, f"overall N_ref in {ranges_text(sorted(total))}", f"subgroups sum to {lo}-{hi}") if fits else
               (INCONSISTENT, f"overall N_ref in {ranges_text(sorted(total))}",
                f"the subgroups' implied N_ref sum to {lo}-{hi}, which the overall row does not allow"))
        out.append(_f("Table 4", f"{name} partition", "implied N_ref add up across a partition", rep, res, source))
    return out


def audit_counts(reported: Mapping[str, Any]) -> list[Finding]:
    """Count partitions of Fig. 2 and Tables 1-2: flow boxes, splits, histology and vendor counts."""
    flow, t1, t2 = reported["cohort_flow"], reported["table1"], reported["table2"]
    out = [
        _f("Fig 2", "screened", "screened - excluded = included", f"{flow['screened']} - {flow['excluded']}",
           partition_counts(flow["screened"], {"included": flow["included"], "excluded": flow["excluded"]}), "paper"),
        _f("Fig 2", "included", "training + tuning + external = included", str(flow["included"]),
           partition_counts(flow["included"], {k: flow[k]["cases"] for k in ("training", "tuning", "external_test")}), "paper"),
        _f("Fig 2", "sex", "male + female = included", str(flow["included"]),
           partition_counts(flow["included"], dict(flow["sex"])), "paper"),
    ]
    inst = flow["included_institutions"]
    ext, tr, tu = (flow[k]["institutions"] for k in ("external_test", "training", "tuning"))
    dev = inst - ext
    ok = max(tr, tu) <= dev <= tr + tu
    out.append(Finding("Fig 2", "institutions", "development institutions = included - external (disjoint)",
                       f"{inst} included, {ext} external, training {tr}, tuning {tu}", f"{max(tr, tu)}-{tr + tu}",
                       CONSISTENT if ok else INCONSISTENT,
                       f"{inst} - {ext} = {dev} development institutions, so training and tuning share {tr + tu - dev}"
                       if ok else f"{dev} development institutions cannot hold training {tr} and tuning {tu}"))
    split_n = {"training": flow["training"]["cases"], "tuning": flow["tuning"]["cases"],
               "external_testing": flow["external_test"]["cases"]}
    for split, n in split_n.items():
        parts = {h: v[split] for h, v in t1["histology_counts"].items()}
        out.append(_f("Table 1", f"histology, {split}", "histology counts add up to the split's n",
                      ", ".join(f"{k} {v}" for k, v in parts.items()), partition_counts(n, parts), "paper"))
    out.append(_f("Table 2", "manufacturers", "vendor counts add up to the external n", ", ".join(f"{k} {v}" for k, v in t2.items()),
                  partition_counts(flow["external_test"]["cases"], dict(t2)), "paper"))
    pct = reported.get("printed_percentages", {})
    for h, by_split in pct.get("table1", {}).items():
        for split, p in by_split.items():
            out.append(_f("Table 1", f"{h}, {split}", "percent = 100 x count / n, rounded", f"{t1['histology_counts'][h][split]} ({p}%) of {split_n[split]}",
                          percent_of_count(t1["histology_counts"][h][split], split_n[split], p), "paper"))
    for v, p in pct.get("table2", {}).items():
        n_ext = flow["external_test"]["cases"]
        out.append(_f("Table 2", v, "percent = 100 x count / n, rounded", f"{t2[v]} ({p}%) of {n_ext}",
                      percent_of_count(t2[v], n_ext, p), "paper"))
    for h, (count, p) in pct.get("text_histology_overall", {}).items():
        by_split = t1["histology_counts"].get(h, {})
        out.append(_f("Results text", h, "overall count = sum of the Table 1 split counts", f"{count}",
                      partition_counts(count, dict(by_split)), "paper"))
        out.append(_f("Results text", h, "percent = 100 x count / n, rounded", f"{count} ({p}%) of {flow['included']}",
                      percent_of_count(count, flow["included"], p), "paper"))
    for split, (med, lo, hi) in t1["age_median_range"].items():
        res = (CONSISTENT, "min <= median <= max", "median inside the range") if lo <= med <= hi else \
            (INCONSISTENT, "min <= median <= max", "median outside the range")
        out.append(_f("Table 1", f"age, {split}", "median inside its range", f"{med} ({lo}-{hi})", res, "paper"))
    return out


def audit_froc_text(reported: Mapping[str, Any], digits: int = 2) -> list[Finding]:
    """The Fig. 4 narrative against Table 4's overall row at IoU 0.5 (the same numbers, printed twice)."""
    text = reported["froc_text"]["iou_0.50"]
    t4 = reported["table4"]["overall"]["iou_0.5"]
    out = []
    for m, (val, sd, ci) in {"sensitivity": (text["sensitivity"], text["sensitivity_sd"], text["sensitivity_ci"]),
                             "fp_per_scan": (text["fp_per_scan"], text["fp_sd"], text["fp_ci"])}.items():
        cell = [val, sd, *ci]
        same = np.allclose(cell, t4[m])
        out.append(Finding("Fig 4 text", f"{m} IoU 0.5", "text equals Table 4", f"text {_cell_text(cell)}; Table 4 {_cell_text(t4[m])}",
                           "identical", CONSISTENT if same else INCONSISTENT,
                           "the same in both places" if same else "the text and Table 4 print different CIs for one estimate"))
    low = reported["froc_text"]["iou_0.05_to_0.15"]
    t01 = reported["table4"]["overall"]["iou_0.1"]
    for m in ("sensitivity", "fp_per_scan"):
        lo, hi = low[m]
        v = t01[m][0]
        ok = lo - 0.005 <= v <= hi + 0.005
        out.append(Finding("Fig 4 text", f"{m} IoU 0.05-0.15", "Table 4 IoU 0.1 inside the text's range", f"range {lo}-{hi}; Table 4 {v}",
                           f"{lo}-{hi}", CONSISTENT if ok else INCONSISTENT, "inside" if ok else "outside the range the text gives"))
    return out


def audit_radiomics(reported: Mapping[str, Any], n_external: int) -> list[Finding]:
    """Bottom/top 10% group sizes against the external test n (10% of n, rounded either way)."""
    g = reported["radiomics_failure_modes"]["groups"]
    expect = (math.floor(0.1 * n_external), math.ceil(0.1 * n_external))
    out = []
    for k, v in g.items():
        ok = expect[0] <= v <= expect[1]
        out.append(Finding("Failure modes", f"{k} group", "group = 10% of the external test set", f"{v} of {n_external}",
                           f"{expect[0]}-{expect[1]}", CONSISTENT if ok else INCONSISTENT,
                           f"10% of {n_external} = {0.1 * n_external:.1f}"))
    return out


def audit_reported(reported: Mapping[str, Any]) -> pd.DataFrame:
    """Every rule on the paper's reported tables (``amtlib.paper.reported()``): the audit.csv rows."""
    findings = [*audit_counts(reported), *audit_table3(reported["table3"]), *audit_table4(reported["table4"]),
                *audit_froc_text(reported), *audit_radiomics(reported, int(reported["cohort_flow"]["external_test"]["cases"]))]
    return findings_frame(findings)


def findings_frame(findings: Iterable[Finding]) -> pd.DataFrame:
    """Findings as a frame with :data:`FINDING_COLUMNS`."""
    return pd.DataFrame([f.as_dict() for f in findings], columns=list(FINDING_COLUMNS))


def table3_cells(table3_csv: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """A regenerated ``table3.csv`` as the ``reported_values.yaml`` shape (rounded to 2 digits as printed)."""
    out: dict[str, dict[str, Any]] = {}
    for r in table3_csv.to_dict("records"):
        cell = {"n": int(r["n"])}
        for m in VOXEL_METRICS:
            vals = [r.get(f"{m}_{k}") for k in ("mean", "sd", "ci_low", "ci_high")]
            if all(v is not None and np.isfinite(v) for v in vals):
                cell[m] = [round(float(v), 2) for v in vals]
        if int(r["n"]) > 0:
            out[str(r["subgroup"])] = cell
    return out


def table4_cells(table4_csv: pd.DataFrame, thresholds: tuple[float, ...] = (0.1, 0.5)) -> dict[str, dict[str, Any]]:
    """A regenerated ``table4.csv`` as the ``reported_values.yaml`` shape (rounded to 2 digits)."""
    out: dict[str, dict[str, Any]] = {}
    for r in table4_csv.to_dict("records"):
        if int(r["n"]) == 0:
            continue
        cell: dict[str, Any] = {"n": int(r["n"])}
        for t in thresholds:
            for m in ("sensitivity", "fp_per_scan"):
                vals = [r.get(f"{m}_iou{t:g}_{k}") for k in ("mean", "sd", "ci_low", "ci_high")]
                if all(v is not None and np.isfinite(v) for v in vals):
                    cell.setdefault(f"iou_{t:g}", {})[m] = [round(float(v), 2) for v in vals]
        out[str(r["subgroup"])] = cell
    return out
