"""Uncertainty and subgroup tables: case bootstrap, mean ± SD (95% CI), Tables 3 and 4.

Paper: Results, Tables 3-4 and Fig. 4 ("mean ± standard deviation (95% confidence interval)"). The
paper does not say how its intervals were computed; the standard choices made here, each a parameter:

- Per-case metrics (Table 3): mean and SD (ddof 1) of the cases, and a 95% CI of the mean by case
  bootstrap (percentile, ``n_resamples`` = 2000, seeded). A t-interval is given as a cross-check and
  a ``small_n`` flag marks subgroups with fewer than 10 cases, where both are unreliable. NaN values
  (0/0 metrics) are left out and counted.
- Lesion metrics (Table 4, Fig. 4): pooled sensitivity and FP/scan; the case-level bootstrap re-sums
  the resampled cases' TP/FN/FP (matching is never redone) and reports the SD of the replicates and
  the percentile CI.
- Subgroups: scanner vendor (DICOM Manufacturer), tumour size by maximum axial diameter of the
  reference (< 50, 50-80, > 80 mm), histology (thymoma, thymic carcinoma, thymic cyst, lymphoma,
  others). Each subgroup draws from its own generator keyed by (seed, subgroup), so a row does not
  depend on which other rows are computed.
"""

from __future__ import annotations

import warnings
import zlib
from typing import Iterable

import numpy as np
import pandas as pd
from scipy import stats as sps

from amtlib.reported import format_cell, reported
from amtlib.evaluation.lesions import FP_DEFINITION, check_fp_definition
from amtlib.evaluation.metrics import VOXEL_METRICS
from amtlib.subgroups import subgroup_label, subgroup_masks

#: Subgroups with fewer cases than this are flagged ``small_n``.
SMALL_N: int = 10
#: Lesion-wise table thresholds (Table 4).
TABLE4_THRESHOLDS: tuple[float, ...] = (0.1, 0.5)
LESION_METRICS: tuple[str, ...] = ("sensitivity", "fp_per_scan")

def subgroup_rng(seed: int, key: str) -> np.random.Generator:
    """Generator for one subgroup, keyed by ``seed`` and the subgroup name (order-independent)."""
    return np.random.default_rng([int(seed), zlib.crc32(key.encode())])


def _rng(seed: "int | np.random.Generator | None") -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def bootstrap_weights(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Case multiplicities of ``n_resamples`` bootstrap resamples of ``n`` cases, shape (B, n).

    Row b counts how often each case is drawn in replicate b (rows sum to ``n``), so a replicate's
    sum of any per-case quantity ``x`` is ``W @ x``.
    """
    idx = rng.integers(0, n, size=(n_resamples, n))
    flat = idx + n * np.arange(n_resamples)[:, None]
    return np.bincount(flat.ravel(), minlength=n_resamples * n).reshape(n_resamples, n)


def _percentile_ci(replicates: np.ndarray, ci_level: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = 100 * (1 - ci_level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column (no lesions) gives NaN
        lo, hi = np.nanpercentile(replicates, [alpha, 100 - alpha], axis=0)
    return lo, hi


def mean_sd_ci(
    values: Iterable[float],
    n_resamples: int = 2000,
    ci_level: float = 0.95,
    seed: "int | np.random.Generator | None" = 0,
    small_n: int = SMALL_N,
) -> dict[str, float]:
    """Mean ± SD (ddof 1) and the percentile case-bootstrap CI of the mean of per-case values.

    Paper: Table 3 cells. NaN values are dropped first and counted in ``n_nan``. Returns ``mean, sd,
    ci_low, ci_high`` (bootstrap), ``t_ci_low, t_ci_high`` (t-interval cross-check), ``n``, ``n_nan``
    and ``small_n`` (n < ``small_n``). n = 0: all NaN; n = 1: SD and t-interval NaN, CI = the value.
    """
    x = np.asarray(values if isinstance(values, (np.ndarray, pd.Series)) else list(values), dtype=float).ravel()
    ok = x[~np.isnan(x)]
    n = ok.size
    out = {"mean": np.nan, "sd": np.nan, "ci_low": np.nan, "ci_high": np.nan, "t_ci_low": np.nan,
           "t_ci_high": np.nan, "n": n, "n_nan": int(x.size - n), "small_n": bool(n < small_n)}
    if n == 0:
        return out
    out["mean"] = float(ok.mean())
    means = bootstrap_weights(n, n_resamples, _rng(seed)) @ ok / n
    lo, hi = _percentile_ci(means, ci_level)
    out["ci_low"], out["ci_high"] = float(lo), float(hi)
    if n >= 2:
        sd = float(ok.std(ddof=1))
        out["sd"] = sd
        half = sps.t.ppf(0.5 + ci_level / 2, n - 1) * sd / np.sqrt(n)
        out["t_ci_low"], out["t_ci_high"] = out["mean"] - half, out["mean"] + half
    return out


def detection_rates(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, n_resamples: int = 2000, ci_level: float = 0.95,
    seed: "int | np.random.Generator | None" = 0,
) -> dict[str, np.ndarray]:
    """Pooled sensitivity and FP/scan per threshold with case-bootstrap SD and percentile CI.

    Paper: Fig. 4 and Table 4. ``tp, fp, fn`` are lesion counts of shape (cases, thresholds).
    Sensitivity = sum TP / sum (TP + FN); FP/scan = sum FP / cases. Each replicate resamples cases and
    re-sums their counts (same resample for every threshold). A replicate without reference lesions has
    NaN sensitivity and is left out of its SD and CI. Keys are the ``froc.csv`` columns (minus the
    threshold); with no cases every rate is NaN.
    """
    tp, fp, fn = (np.atleast_2d(np.asarray(a, dtype=float)) for a in (tp, fp, fn))
    n = tp.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = tp.sum(0) / (tp.sum(0) + fn.sum(0))
        fps = fp.sum(0) / n if n else np.full(tp.shape[1], np.nan)
    out = {"sensitivity": sens}
    if n:
        w = bootstrap_weights(n, n_resamples, _rng(seed))
        btp, bfn, bfp = w @ tp, w @ fn, w @ fp
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = {"sensitivity": btp / (btp + bfn), "fp_per_scan": bfp / n}
    else:
        boot = {k: np.full((1, tp.shape[1]), np.nan) for k in LESION_METRICS}
    for name, point in (("sensitivity", sens), ("fp_per_scan", fps)):
        lo, hi = _percentile_ci(boot[name], ci_level)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            sd = np.nanstd(boot[name], axis=0, ddof=1)
        out.update({name: point, f"{name}_sd": sd, f"{name}_ci_low": lo, f"{name}_ci_high": hi})
    out.update({"tp": tp.sum(0).astype(int), "fn": fn.sum(0).astype(int), "fp": fp.sum(0).astype(int),
                "n_ref_lesions": (tp + fn).sum(0).astype(int), "n_scans": np.full(tp.shape[1], n)})
    return out


def _reported_n(table: str, key: str) -> float:
    entry = reported()[table].get(key)
    return float(entry["n"]) if entry else np.nan


def table3(
    per_case: pd.DataFrame, n_resamples: int = 2000, ci_level: float = 0.95, seed: int = 0,
    metrics: tuple[str, ...] = VOXEL_METRICS, small_n: int = SMALL_N,
) -> pd.DataFrame:
    """Table 3: voxel metrics per subgroup, regenerated beside the paper's values.

    Paper: Table 3. One row per subgroup (:func:`subgroup_masks`): ``subgroup, label, n, n_reported,
    small_n`` then per metric ``m``: ``m`` (formatted ``0.87 ± 0.02 (0.81–0.92)``), ``m_reported``,
    ``m_mean, m_sd, m_ci_low, m_ci_high, m_t_ci_low, m_t_ci_high, m_n_nan``. The CI is the case
    bootstrap's; the t-interval beside it is clipped to [0, 1] (the metrics' range; NaN stays NaN).
    """
    paper_rows = reported()["table3"]
    rows = []
    for key, mask in subgroup_masks(per_case).items():
        sub = per_case.loc[mask]
        row = {"subgroup": key, "label": subgroup_label(key), "n": int(mask.sum()),
               "n_reported": _reported_n("table3", key), "small_n": bool(mask.sum() < small_n)}
        for m in metrics:
            r = mean_sd_ci(sub[m].to_numpy(float), n_resamples, ci_level, subgroup_rng(seed, f"{key}/{m}"), small_n)
            row[m] = format_cell(r["mean"], r["sd"], r["ci_low"], r["ci_high"])
            cell = paper_rows.get(key, {}).get(m)
            row[f"{m}_reported"] = format_cell(*cell) if cell else ""
            # the voxel metrics lie in [0, 1]: their t-interval (the cross-check) is clipped there, as the bootstrap
            # CI (the one reported) already is; a small subgroup's t-interval otherwise runs below 0
            r["t_ci_low"], r["t_ci_high"] = float(np.clip(r["t_ci_low"], 0.0, 1.0)), float(np.clip(r["t_ci_high"], 0.0, 1.0))
            row.update({f"{m}_{k}": r[k] for k in ("mean", "sd", "ci_low", "ci_high", "t_ci_low", "t_ci_high", "n_nan")})
        rows.append(row)
    return pd.DataFrame(rows)


def _col(metric: str, thr: float) -> str:
    return f"{metric}_iou{thr:g}"


def counts_arrays(counts: pd.DataFrame, fp_definition: str = FP_DEFINITION,
                  ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``lesion_counts`` long table -> ``(case_ids, thresholds, tp, fp, fn)`` with arrays (case, threshold).

    ``fp`` is the ``fp`` column for ``fp_definition="unmatched"``, ``fp_no_overlap`` for ``"no_overlap"``.
    """
    fp_col = "fp" if check_fp_definition(fp_definition) == "unmatched" else "fp_no_overlap"
    if fp_col not in counts:
        raise ValueError(f"lesion counts have no {fp_col!r} column (needed for fp_definition={fp_definition!r}); "
                         "re-run the evaluation (notebook 05 or amt evaluate) with this version")
    wide = counts.pivot_table(index="case_id", columns="iou_threshold", values=["tp", fp_col, "fn"], aggfunc="sum", sort=True)
    thresholds = np.asarray(wide["tp"].columns, dtype=float)
    return (
        [str(c) for c in wide.index],
        thresholds,
        wide["tp"].to_numpy(np.int64),
        wide[fp_col].to_numpy(np.int64),
        wide["fn"].to_numpy(np.int64),
    )


def froc_curve(
    counts: pd.DataFrame, n_resamples: int = 2000, ci_level: float = 0.95, seed: int = 0, subgroup: str = "overall",
    fp_definition: str = FP_DEFINITION,
) -> pd.DataFrame:
    """Sensitivity and FP/scan per IoU threshold with case-bootstrap SD and percentile CI (Fig. 4).

    Paper: Lesion-wise detection performance metrics. ``counts`` is the ``lesion_counts`` table
    (case_id, iou_threshold, tp, fp, fn). Matching is not redone: each replicate re-sums resampled
    cases' counts (:func:`detection_rates`). The generator is keyed by ``seed`` and
    ``subgroup`` so the overall row of Table 4 equals this curve. ``fp_definition`` chooses the FP
    column (:func:`detection_counts`). Columns as ``froc.csv``.
    """
    _, thresholds, tp, fp, fn = counts_arrays(counts, fp_definition)
    r = detection_rates(tp, fp, fn, n_resamples, ci_level, subgroup_rng(seed, subgroup))
    return pd.DataFrame({"iou_threshold": thresholds, **r})


def table4(
    per_case: pd.DataFrame, counts: pd.DataFrame, thresholds: tuple[float, ...] = TABLE4_THRESHOLDS,
    n_resamples: int = 2000, ci_level: float = 0.95, seed: int = 0, small_n: int = SMALL_N,
    fp_definition: str = "unmatched",
) -> pd.DataFrame:
    """Table 4: lesion sensitivity and FP/scan per subgroup at IoU 0.1 and 0.5, beside the paper.

    Paper: Table 4. ``per_case`` gives subgroup membership (``case_id`` plus metadata), ``counts`` the
    ``lesion_counts`` table. Columns: ``subgroup, label, n, n_reported, small_n, n_ref_lesions``, then
    for metric ``m`` in (sensitivity, fp_per_scan) and threshold ``t``: ``m_iou{t}`` (formatted),
    ``m_iou{t}_reported`` and ``m_iou{t}_mean/_sd/_ci_low/_ci_high``, plus ``tp/fp/fn_iou{t}``.
    ``fp_definition`` (``unmatched`` or ``no_overlap``) picks the FP column, see :mod:`amtlib.evaluation.lesions`.
    """
    case_ids, thr_all, tp, fp, fn = counts_arrays(counts, fp_definition)
    cols = []
    for t in thresholds:
        hit = np.flatnonzero(np.isclose(thr_all, t))
        if hit.size == 0:
            raise ValueError(f"lesion counts have no IoU threshold {t}; available: {list(thr_all)}")
        cols.append(hit[0])
    pos = {c: i for i, c in enumerate(case_ids)}
    missing = [c for c in per_case["case_id"].astype(str) if c not in pos]
    if missing:
        raise ValueError(f"cases without lesion counts: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    order = np.array([pos[c] for c in per_case["case_id"].astype(str)], dtype=int)
    paper_rows = reported()["table4"]
    rows = []
    for key, mask in subgroup_masks(per_case).items():
        sel = order[mask]
        r = detection_rates(tp[sel][:, cols], fp[sel][:, cols], fn[sel][:, cols], n_resamples, ci_level,
                            subgroup_rng(seed, key))
        row = {"subgroup": key, "label": subgroup_label(key), "n": int(mask.sum()),
               "n_reported": _reported_n("table4", key), "small_n": bool(mask.sum() < small_n),
               "n_ref_lesions": int(r["n_ref_lesions"][0])}
        for j, t in enumerate(thresholds):
            for m in LESION_METRICS:
                c = _col(m, t)
                vals = [r[m][j], r[f"{m}_sd"][j], r[f"{m}_ci_low"][j], r[f"{m}_ci_high"][j]]
                row[c] = format_cell(*vals)
                cell = paper_rows.get(key, {}).get(f"iou_{t:g}", {}).get(m)
                row[f"{c}_reported"] = format_cell(*cell) if cell else ""
                row.update(dict(zip([f"{c}_mean", f"{c}_sd", f"{c}_ci_low", f"{c}_ci_high"], vals)))
            for k in ("tp", "fp", "fn"):
                row[f"{k}_iou{t:g}"] = int(r[k][j])
        rows.append(row)
    return pd.DataFrame(rows)


def side_by_side(table: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """Display frame: subgroup label, n (regenerated / paper), then each column beside its paper value."""
    out = pd.DataFrame({"Subgroup": table["label"], "n": table["n"],
                        "n (paper)": table["n_reported"].map(lambda v: "" if pd.isna(v) else f"{int(v)}")})
    for c in columns:
        out[c] = table[c]
        out[f"{c} (paper)"] = table[f"{c}_reported"]
    return out


