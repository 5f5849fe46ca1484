"""ROC statistics: AUC, DeLong variance and paired test (fast algorithm), bootstrap CIs, thresholds.

Related papers (docs/architecture.md, notebooks 07-08): the TET risk-stratification paper reports the
external-set AUC with a 95% CI, accuracy, sensitivity, specificity, PPV and NPV, and compares ROC curves
with DeLong's test; the DMFN fusion paper reports AUCs with 95% CIs, DeLong's test and McNemar's test.
Neither names its CI method; the defaults here are the standard ones, each a parameter:

- AUC is the Mann-Whitney statistic with ties counted 1/2 (= the trapezoidal area under the ROC).
- DeLong et al. (Biometrics 1988) variance and covariance by the fast midrank algorithm of Sun & Xu
  (IEEE SPL 2014); the CI is AUC ± z·SE clipped to [0, 1] (as pROC's ``ci.auc(method="delong")``).
- Bootstrap CIs resample cases within each class (stratified, as pROC's default) and take percentiles.
- The decision threshold is Youden's J maximum on the *training* scores; a case is positive when its
  score is >= the threshold.
- Ratios with a zero denominator (e.g. PPV with no positive calls) are NaN.

Labels are 0/1 (1 = the positive class: high risk, malignant). Every function needs both classes;
with one class only it returns NaN (AUC, variance) rather than raising, and says so in its docstring.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

CONFUSION_METRICS: tuple[str, ...] = ("accuracy", "sensitivity", "specificity", "ppv", "npv")


def _labels_scores(y: Sequence[int], scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(int).ravel()
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    if s.shape[-1] != y.size:
        raise ValueError(f"scores have {s.shape[-1]} cases but labels have {y.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0/1, got values {sorted(set(y.tolist()))[:5]}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN; drop those cases first")
    return y, s


def _midranks(x: np.ndarray) -> np.ndarray:
    """Midranks (1-based, ties averaged) along the last axis."""
    return sps.rankdata(x, axis=-1, method="average")


def delong(y: Sequence[int], scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix for ``k`` score vectors on the same cases.

    ``scores``: shape (n,) or (k, n). Returns ``(auc (k,), cov (k, k))`` by the fast midrank algorithm
    (Sun & Xu 2014): V10 = (Tz - Tx)/n per positive, V01 = 1 - (Tz - Ty)/m per negative, S = S10/m +
    S01/n. With fewer than two cases in a class the covariance is NaN (it needs a sample variance);
    with no case in a class the AUC is NaN too.
    """
    y, s = _labels_scores(y, scores)
    pos, neg = s[:, y == 1], s[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    k = s.shape[0]
    if m == 0 or n == 0:
        return np.full(k, np.nan), np.full((k, k), np.nan)
    tx, ty = _midranks(pos), _midranks(neg)
    tz = _midranks(np.concatenate([pos, neg], axis=1))
    auc = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    if m < 2 or n < 2:
        return auc, np.full((k, k), np.nan)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return auc, cov


def auc(y: Sequence[int], score: Sequence[float]) -> float:
    """Area under the ROC curve (Mann-Whitney, ties 1/2); NaN when a class is empty.

    From midranks, (R1 - n1 (n1 + 1) / 2) / (n1 n0): the value :func:`delong` gives (tested), without
    its covariance, so the bootstrap's thousands of replicates stay cheap.
    """
    y, scores = _labels_scores(y, np.asarray(score, dtype=float).ravel())
    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((_midranks(scores[0])[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def delong_ci(y: Sequence[int], score: Sequence[float], ci_level: float = 0.95) -> dict[str, float]:
    """AUC with its DeLong standard error and normal CI clipped to [0, 1]: ``auc, se, ci_low, ci_high``."""
    a, cov = delong(y, np.asarray(score, dtype=float))
    se = float(np.sqrt(cov[0, 0])) if np.isfinite(cov[0, 0]) else np.nan
    z = sps.norm.ppf(0.5 + ci_level / 2)
    if not np.isfinite(se):
        return {"auc": float(a[0]), "se": se, "ci_low": np.nan, "ci_high": np.nan}
    return {"auc": float(a[0]), "se": se, "ci_low": float(max(0.0, a[0] - z * se)), "ci_high": float(min(1.0, a[0] + z * se))}


def delong_test(y: Sequence[int], score_a: Sequence[float], score_b: Sequence[float]) -> dict[str, float]:
    """DeLong's paired test of two correlated AUCs on the same cases (two-sided).

    Returns ``auc_a, auc_b, diff, se_diff, z, p``. p is NaN when the difference has zero variance
    (e.g. identical scores) or a class has fewer than two cases.
    """
    a, cov = delong(y, np.vstack([np.asarray(score_a, float), np.asarray(score_b, float)]))
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    se = float(np.sqrt(var)) if np.isfinite(var) and var > 1e-15 else np.nan
    z = float((a[0] - a[1]) / se) if np.isfinite(se) else np.nan
    p = float(2 * sps.norm.sf(abs(z))) if np.isfinite(z) else np.nan
    return {"auc_a": float(a[0]), "auc_b": float(a[1]), "diff": float(a[0] - a[1]), "se_diff": se, "z": z, "p": p}


def stratified_bootstrap_indices(y: Sequence[int], n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Case indices of ``n_resamples`` stratified bootstrap resamples, shape (B, n): each class is
    resampled with replacement within itself, so every replicate keeps both classes' counts."""
    y = np.asarray(y).ravel()
    parts = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        parts.append(idx[rng.integers(0, idx.size, size=(n_resamples, idx.size))])
    return np.concatenate(parts, axis=1) if parts else np.zeros((n_resamples, 0), int)


def bootstrap_ci(
    y: Sequence[int], predictions: np.ndarray, statistic: Callable[[np.ndarray, np.ndarray], float],
    n_resamples: int = 2000, ci_level: float = 0.95, seed: int | np.random.Generator = 0,
) -> dict[str, float]:
    """Statistic with a stratified percentile-bootstrap CI: ``estimate, ci_low, ci_high, n_resamples``.

    ``predictions`` is indexed by case along axis 0 (scores (n,) or probabilities (n, classes));
    ``statistic(y, predictions)`` gives one float. Replicates where it is NaN (e.g. a class absent
    from a one-vs-rest term) are dropped; the number kept is ``n_resamples``.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    y = np.asarray(y).ravel()
    p = np.asarray(predictions)
    est = float(statistic(y, p))
    idx = stratified_bootstrap_indices(y, n_resamples, rng)
    reps = np.array([statistic(y[i], p[i]) for i in idx], dtype=float)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return {"estimate": est, "ci_low": np.nan, "ci_high": np.nan, "n_resamples": 0}
    lo, hi = np.percentile(reps, [50 * (1 - ci_level), 100 - 50 * (1 - ci_level)])
    return {"estimate": est, "ci_low": float(lo), "ci_high": float(hi), "n_resamples": int(reps.size)}


def macro_ovr_auc(y: Sequence[int], proba: np.ndarray) -> float:
    """Macro one-vs-rest AUC of class probabilities ``proba`` (n, K) for labels ``y`` in 0..K-1.

    Classes absent from ``y`` (no positive) are left out of the mean, so a small external set
    still gets a value; with all classes present this equals scikit-learn's
    ``roc_auc_score(y, proba, multi_class="ovr", average="macro")``. NaN if fewer than two classes.
    """
    y = np.asarray(y).astype(int).ravel()
    proba = np.asarray(proba, dtype=float)
    present = [c for c in range(proba.shape[1]) if 0 < (y == c).sum() < y.size]
    if len(present) < 2:
        return np.nan
    return float(np.mean([auc((y == c).astype(int), proba[:, c]) for c in present]))


def youden_threshold(y: Sequence[int], score: Sequence[float]) -> float:
    """Score threshold maximising Youden's J = sensitivity + specificity - 1 (positive: score >= t).

    Candidates are the observed scores; among equal J the highest threshold wins (fewer positive
    calls). Fit it on training scores only and apply it unchanged to the external set.
    """
    y, s = _labels_scores(y, np.asarray(score, dtype=float))
    s = s[0]
    if (y == 1).sum() == 0 or (y == 0).sum() == 0:
        raise ValueError("Youden's threshold needs both classes in the training labels")
    cands = np.unique(s)[::-1]
    pred = s[None, :] >= cands[:, None]
    sens = (pred & (y == 1)).sum(axis=1) / (y == 1).sum()
    spec = (~pred & (y == 0)).sum(axis=1) / (y == 0).sum()
    return float(cands[int(np.argmax(sens + spec - 1))])


def _ratio(a: int, b: int) -> float:
    return a / b if b else np.nan


def confusion_metrics(y: Sequence[int], pred: Sequence[int]) -> dict[str, float]:
    """Counts and rates of binary calls: ``tp, fp, tn, fn`` and :data:`CONFUSION_METRICS` (0/0 -> NaN)."""
    y = np.asarray(y).astype(int).ravel()
    p = np.asarray(pred).astype(int).ravel()
    tp, fp = int(((p == 1) & (y == 1)).sum()), int(((p == 1) & (y == 0)).sum())
    tn, fn = int(((p == 0) & (y == 0)).sum()), int(((p == 0) & (y == 1)).sum())
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "accuracy": _ratio(tp + tn, y.size), "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp), "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn)}


def mcnemar_test(correct_a: Sequence[bool], correct_b: Sequence[bool], exact: bool = True) -> dict[str, float]:
    """McNemar's test of paired accuracies: discordant counts ``b`` (only A right), ``c`` (only B right), p.

    ``exact`` (default): the binomial test on the discordant pairs (right for small external sets);
    otherwise the chi-square with continuity correction. p = 1 when there is no discordant pair.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    a = np.asarray(correct_a, bool).ravel()
    b = np.asarray(correct_b, bool).ravel()
    if a.size != b.size:
        raise ValueError(f"paired accuracies need equal lengths, got {a.size} and {b.size}")
    table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
    n_disc = table[0][1] + table[1][0]
    p = 1.0 if n_disc == 0 else float(mcnemar(table, exact=exact, correction=True).pvalue)
    return {"b": table[0][1], "c": table[1][0], "p": p}


def roc_points(y: Sequence[int], score: Sequence[float]) -> pd.DataFrame:
    """ROC curve vertices (``fpr, tpr, threshold``) from (0, 0) to (1, 1), thresholds descending."""
    y, s = _labels_scores(y, np.asarray(score, dtype=float))
    s = s[0]
    cands = np.unique(s)[::-1]
    pred = s[None, :] >= cands[:, None]
    tpr = (pred & (y == 1)).sum(axis=1) / max((y == 1).sum(), 1)
    fpr = (pred & (y == 0)).sum(axis=1) / max((y == 0).sum(), 1)
    return pd.DataFrame({"fpr": np.r_[0.0, fpr], "tpr": np.r_[0.0, tpr], "threshold": np.r_[np.inf, cands]})


def binary_summary(
    y: Sequence[int], score: Sequence[float], threshold: float, ci_level: float = 0.95,
) -> dict[str, float]:
    """External-set row of the TET paper's Table 2: AUC with DeLong CI and the confusion metrics at a
    fixed ``threshold`` (positive: score >= threshold), plus ``n, n_pos``."""
    y = np.asarray(y).astype(int)
    s = np.asarray(score, dtype=float)
    ci = delong_ci(y, s, ci_level)
    return {"n": int(y.size), "n_pos": int(y.sum()), "auc": ci["auc"], "auc_ci_low": ci["ci_low"], "auc_ci_high": ci["ci_high"],
            "threshold": float(threshold), **confusion_metrics(y, (s >= threshold).astype(int))}
