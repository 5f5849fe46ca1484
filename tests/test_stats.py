"""Bootstrap CIs, NaN handling, subgroup keys and Tables 3-4."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from amtlib import paper
from amtlib.evaluation import lesions, stats


def test_mean_sd_ci_drops_and_counts_nan():
    r = stats.mean_sd_ci([1.0, 2.0, 3.0, 4.0, np.nan], n_resamples=500, seed=0)
    assert r["n"] == 4 and r["n_nan"] == 1 and r["small_n"]
    assert r["mean"] == pytest.approx(2.5)
    assert r["sd"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    lo, hi = sps.t.interval(0.95, 3, loc=2.5, scale=r["sd"] / 2)
    assert (r["t_ci_low"], r["t_ci_high"]) == pytest.approx((lo, hi))
    assert 1.0 <= r["ci_low"] < 2.5 < r["ci_high"] <= 4.0


def test_mean_sd_ci_edge_sizes():
    empty = stats.mean_sd_ci([np.nan, np.nan])
    assert empty["n"] == 0 and empty["n_nan"] == 2 and np.isnan(empty["mean"]) and np.isnan(empty["ci_low"])
    one = stats.mean_sd_ci([0.7])
    assert one["mean"] == one["ci_low"] == one["ci_high"] == 0.7 and np.isnan(one["sd"])


def test_bootstrap_is_reproducible_with_a_seed():
    x = np.random.default_rng(5).random(30)
    assert stats.mean_sd_ci(x, 400, seed=1) == stats.mean_sd_ci(x, 400, seed=1)
    assert stats.mean_sd_ci(x, 400, seed=1)["ci_low"] != stats.mean_sd_ci(x, 400, seed=2)["ci_low"]


def test_bootstrap_weights_resample_n_cases():
    w = stats.bootstrap_weights(7, 50, np.random.default_rng(0))
    assert w.shape == (50, 7) and (w.sum(axis=1) == 7).all() and (w >= 0).all()


def test_percentile_ci_agrees_with_scipy_bootstrap():
    x = np.random.default_rng(2).gamma(2.0, 0.1, size=60)
    ours = stats.mean_sd_ci(x, 4000, seed=0)
    theirs = sps.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", rng=np.random.default_rng(9)).confidence_interval
    assert ours["ci_low"] == pytest.approx(theirs.low, abs=0.006)
    assert ours["ci_high"] == pytest.approx(theirs.high, abs=0.006)


def test_ci_covers_the_true_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(11)
    covered = 0
    n_sim = 400
    for _ in range(n_sim):
        r = stats.mean_sd_ci(rng.normal(0.8, 0.15, 40), 500, seed=rng)
        covered += r["ci_low"] <= 0.8 <= r["ci_high"]
    # nominal 0.95; the percentile bootstrap runs slightly narrow at n = 40 (binomial SD ~ 0.011)
    assert 0.90 <= covered / n_sim <= 0.98


def test_detection_rates_ci_coverage_of_a_known_sensitivity():
    rng = np.random.default_rng(4)
    covered, n_sim = 0, 300
    for _ in range(n_sim):
        tp = rng.binomial(1, 0.85, size=(80, 1))
        r = stats.detection_rates(tp, np.zeros_like(tp), 1 - tp, 500, 0.95, rng)
        covered += r["sensitivity_ci_low"][0] <= 0.85 <= r["sensitivity_ci_high"][0]
    assert 0.89 <= covered / n_sim <= 0.99


def per_case_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "case_id": ["a", "b", "c", "d", "e"],
        "dice": [0.9, 0.8, np.nan, 0.0, 0.7],
        "iou": [0.8, 0.7, np.nan, 0.0, 0.6],
        "precision": [0.9, 0.9, np.nan, np.nan, 0.8],
        "recall": [0.9, 0.7, np.nan, 0.0, 0.6],
        "manufacturer": ["TOSHIBA", "GE MEDICAL SYSTEMS", "TOSHIBA", "Neusoft", "SIEMENS"],
        "histology": ["thymoma", "thymoma", "lymphoma", "teratoma", "thymic_carcinoma"],
        "max_axial_diameter_mm": [30.0, 50.0, 80.0, 81.0, np.nan],
    })


def test_table3_rows_counts_and_paper_cells():
    t = stats.table3(per_case_frame(), n_resamples=200).set_index("subgroup")
    assert [k for k in t.index if k in paper.SUBGROUP_LABELS] == list(paper.SUBGROUP_LABELS)  # paper order
    assert t.index[6] == "neusoft"  # a vendor the paper lacks follows the paper's vendors
    assert t.loc["overall", "n"] == 5 and t.loc["overall", "dice_n_nan"] == 1
    assert t.loc["overall", "precision_n_nan"] == 2
    assert t.loc["overall", "dice_mean"] == pytest.approx(0.6)
    assert t.loc["canon_medical_systems", "n"] == 2 and t.loc["fujifilm", "n"] == 0
    assert (t.loc["size_small", "n"], t.loc["size_medium", "n"], t.loc["size_large", "n"]) == (1, 2, 1)
    assert t.loc["others", "n"] == 1 and t.loc["thymoma", "n"] == 2
    assert t.loc["thymoma", "dice"] == paper.format_cell(0.85, np.std([0.9, 0.8], ddof=1),
                                                         t.loc["thymoma", "dice_ci_low"], t.loc["thymoma", "dice_ci_high"])
    assert t.loc["overall", "dice_reported"] == "0.82 ± 0.15 (0.79–0.84)"
    assert t.loc["overall", "n_reported"] == 164 and t.loc["overall", "small_n"]
    assert t.loc["fujifilm", "dice"].startswith("–")


def test_table4_overall_equals_froc_and_subgroups_resum_counts():
    pc = per_case_frame()
    rows = []
    for i, cid in enumerate(pc["case_id"]):
        for t in lesions.IOU_THRESHOLDS:
            tp = int(t < 0.6 or i == 0)
            rows.append({"case_id": cid, "iou_threshold": t, "tp": tp, "fp": i % 2, "fn": 1 - tp})
    counts = pd.DataFrame(rows)
    t4 = stats.table4(pc, counts, n_resamples=300, seed=7).set_index("subgroup")
    froc = stats.froc_curve(counts, 300, seed=7).set_index("iou_threshold")
    for thr in (0.1, 0.5):
        for m in ("sensitivity", "fp_per_scan"):
            for suffix in ("mean", "sd", "ci_low", "ci_high"):
                src = m if suffix == "mean" else f"{m}_{suffix}"
                assert t4.loc["overall", f"{m}_iou{thr:g}_{suffix}"] == pytest.approx(froc.loc[thr, src], nan_ok=True)
    assert t4.loc["canon_medical_systems", "fp_iou0.5"] == 0 + 0  # cases a (i=0) and c (i=2)
    assert t4.loc["overall", "fp_per_scan_iou0.1_mean"] == pytest.approx(2 / 5)
    assert t4.loc["overall", "sensitivity_iou0.5_reported"] == "0.87 ± 0.02 (0.81–0.92)"
    assert t4.loc["fujifilm", "n"] == 0 and t4.loc["fujifilm", "sensitivity_iou0.1"].startswith("–")


def test_side_by_side_puts_paper_next_to_regenerated():
    t = stats.table3(per_case_frame(), n_resamples=50)
    s = stats.side_by_side(t, ["dice"])
    assert list(s.columns) == ["Subgroup", "n", "n (paper)", "dice", "dice (paper)"]
    assert s.iloc[0]["n (paper)"] == "164"
