"""ROC statistics: hand-computed DeLong, cross-checks with scikit-learn, bootstrap and null simulations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from amtlib.classify import roc


def test_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 80))
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        s = np.round(rng.normal(size=n) + y, 1)  # rounding makes ties
        assert roc.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert roc.auc(y, s) == roc.delong(y, s)[0][0]  # the rank formula and DeLong's components agree exactly here
    assert np.isnan(roc.auc([1, 1, 1], [0.2, 0.5, 0.9]))
    with pytest.raises(ValueError, match="labels must be 0/1"):
        roc.auc([0, 2, 1], [0.1, 0.2, 0.3])


def test_delong_small_example_by_hand():
    # positives .9 .6 .4, negatives .7 .3: V10 = (1, 1/2, 1/2), V01 = (1/3, 1)
    # AUC = 2/3; var = var(V10)/3 + var(V01)/2 = (1/12)/3 + (2/9)/2 = 5/36
    y = [1, 1, 1, 0, 0]
    s = [0.9, 0.6, 0.4, 0.7, 0.3]
    out = roc.delong_ci(y, s)
    assert out["auc"] == pytest.approx(2 / 3)
    assert out["se"] ** 2 == pytest.approx(5 / 36)
    assert out["ci_low"] == pytest.approx(max(0, 2 / 3 - 1.959964 * np.sqrt(5 / 36)), abs=1e-5)
    assert out["ci_high"] == 1.0  # clipped


def test_delong_variance_matches_bootstrap():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(400), np.zeros(600)].astype(int)
    s = rng.normal(size=y.size) + 1.0 * y
    var = roc.delong_ci(y, s)["se"] ** 2
    idx = roc.stratified_bootstrap_indices(y, 2000, np.random.default_rng(2))
    boot = np.array([roc.auc(y[i], s[i]) for i in idx])
    assert var == pytest.approx(boot.var(ddof=1), rel=0.12)


def test_delong_paired_p_uniform_under_null():
    # two scores of equal true AUC, correlated through a shared signal: p ~ U(0, 1)
    rng = np.random.default_rng(3)
    ps = []
    for _ in range(400):
        y = np.r_[np.ones(40), np.zeros(60)].astype(int)
        shared = rng.normal(size=y.size) + 0.8 * y
        a = shared + rng.normal(size=y.size)
        b = shared + rng.normal(size=y.size)
        ps.append(roc.delong_test(y, a, b)["p"])
    assert sps.kstest(ps, "uniform").pvalue > 0.01
    # and a real difference is detected
    y = np.r_[np.ones(80), np.zeros(80)].astype(int)
    strong = rng.normal(size=y.size) + 2.0 * y
    weak = rng.normal(size=y.size) + 0.2 * y
    assert roc.delong_test(y, strong, weak)["p"] < 1e-4


def test_delong_identical_scores_and_one_class():
    y = [1, 0, 1, 0, 1]
    s = [0.1, 0.2, 0.3, 0.4, 0.5]
    assert np.isnan(roc.delong_test(y, s, s)["p"])
    assert np.isnan(roc.auc([1, 1, 1], [0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="0/1"):
        roc.auc([0, 2], [0.1, 0.2])


def test_macro_ovr_auc_equals_sklearn():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, 200)
    logits = rng.normal(size=(200, 4)) + np.eye(4)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert roc.macro_ovr_auc(y, p) == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    # an absent class is left out of the mean
    keep = y != 3
    expected = np.mean([roc.auc((y[keep] == c).astype(int), p[keep, c]) for c in range(3)])
    assert roc.macro_ovr_auc(y[keep], p[keep]) == pytest.approx(expected)


def test_bootstrap_ci_covers_and_is_seeded():
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(50), np.zeros(50)].astype(int)
    s = rng.normal(size=100) + y
    a = roc.bootstrap_ci(y, s, roc.auc, n_resamples=300, seed=7)
    b = roc.bootstrap_ci(y, s, roc.auc, n_resamples=300, seed=7)
    assert a == b
    assert a["ci_low"] < a["estimate"] < a["ci_high"]
    d = roc.delong_ci(y, s)
    assert abs(a["ci_low"] - d["ci_low"]) < 0.05 and abs(a["ci_high"] - d["ci_high"]) < 0.05


def test_youden_threshold_and_confusion_by_hand():
    y = [0, 0, 0, 1, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8, 0.3, 0.9]
    # t = 0.8: sens 2/3, spec 1 -> J 2/3; t = 0.3: sens 1, spec 1/3 -> J 1/3
    assert roc.youden_threshold(y, s) == 0.8
    m = roc.confusion_metrics(y, [int(v >= 0.8) for v in s])
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 0, 3, 1)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["npv"] == pytest.approx(3 / 4)
    assert np.isnan(roc.confusion_metrics([0, 0], [0, 0])["ppv"])


def test_mcnemar_exact_by_hand():
    # 6 discordant pairs all favouring A: exact two-sided p = 2 * 0.5**6
    a = [True] * 10
    b = [True] * 4 + [False] * 6
    out = roc.mcnemar_test(a, b)
    assert (out["b"], out["c"]) == (6, 0)
    assert out["p"] == pytest.approx(2 * 0.5**6)
    assert roc.mcnemar_test(a, a)["p"] == 1.0


def test_roc_points_area_is_auc():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.normal(size=60) + y, 1)
    pts = roc.roc_points(y, s)
    assert np.trapezoid(pts["tpr"], pts["fpr"]) == pytest.approx(roc.auc(y, s))
