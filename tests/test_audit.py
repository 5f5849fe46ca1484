"""Audit rules on hand-made tables whose answers are known, and cross-checks on tables made from data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from amtlib import audit, paper
from amtlib.evaluation import stats
from amtlib.audit import CONSISTENT, INCONSISTENT, CANNOT_TELL


def test_printed_interval():
    assert audit.printed_interval(0.89) == pytest.approx((0.885, 0.895))
    assert audit.printed_interval(12.3, 1) == pytest.approx((12.25, 12.35))


# --------------------------------------------------------------------- CI width of a mean of n cases

def test_ci_width_the_issue_example_canon_dice():
    verdict, allowed, why = audit.ci_width_of_mean(0.89, 0.04, 0.86, 0.93, n=80)
    assert verdict == INCONSISTENT
    lo, hi = (float(x) for x in allowed.removeprefix("width ").split("-"))
    assert lo < 2 * 1.96 * 0.04 / np.sqrt(80) < hi < 0.05  # allows ~0.018, nowhere near 0.07
    assert "0.018" in why


@pytest.mark.parametrize("cell, n, expected", [
    ((0.50, 0.10, 0.48, 0.52), 100, CONSISTENT),   # 2 x 1.96 x 0.1 / 10 = 0.039
    ((0.50, 0.10, 0.40, 0.60), 100, INCONSISTENT),  # 0.20 is 5x too wide
    ((0.50, 0.10, 0.50, 0.50), 100, INCONSISTENT),  # zero width
    ((0.88, 0.04, 0.85, 0.91), 6, CONSISTENT),      # t_5: 2 x 2.571 x 0.04 / sqrt(6) = 0.084
    ((0.50, 0.10, 0.40, 0.60), 1, CANNOT_TELL),
])
def test_ci_width_known_answers(cell, n, expected):
    assert audit.ci_width_of_mean(*cell, n=n)[0] == expected


@pytest.mark.parametrize("n", [3, 6, 10, 37, 80])
def test_ci_width_accepts_every_bootstrap_ci_of_real_data(n):
    """Self-check: a printed cell computed from data (skewed [0, 1] values) is never called inconsistent."""
    rng = np.random.default_rng(n)
    for _ in range(20):
        x = rng.beta(5, 1.2, size=n)
        r = stats.mean_sd_ci(x, n_resamples=400, seed=rng)
        cell = [round(r[k], 2) for k in ("mean", "sd", "ci_low", "ci_high")]
        assert audit.ci_width_of_mean(*cell, n=n)[0] == CONSISTENT, (n, cell)


def test_ci_width_of_an_estimate():
    assert audit.ci_width_of_estimate(0.08, 0.46, 0.78)[0] == CONSISTENT  # 2 x 1.96 x 0.08 = 0.31
    assert audit.ci_width_of_estimate(0.02, 0.46, 0.78)[0] == INCONSISTENT
    assert audit.ci_width_of_estimate(0.00, 1.00, 1.00)[0] == CONSISTENT  # clipped at 1
    assert audit.ci_width_of_estimate(0.05, 0.50, 1.00)[0] == INCONSISTENT  # clipped, but too wide


# ------------------------------------------------------------------------------------ bounds

@pytest.mark.parametrize("mean, lo, hi, expected", [
    (0.50, 0.40, 0.60, CONSISTENT), (0.70, 0.40, 0.60, INCONSISTENT),
    (0.61, 0.40, 0.60, INCONSISTENT),  # mean >= 0.605 but the upper end < 0.605
    (0.60, 0.40, 0.60, CONSISTENT), (0.39, 0.40, 0.60, INCONSISTENT),
])
def test_mean_inside_ci(mean, lo, hi, expected):
    assert audit.mean_inside_ci(mean, lo, hi)[0] == expected


@pytest.mark.parametrize("mean, sd, n, expected", [
    (0.50, 0.71, 2, CONSISTENT),    # [0, 1]: SD sqrt(0.5) = 0.7071
    (0.50, 0.72, 2, INCONSISTENT),
    (0.90, 0.32, 10, CONSISTENT),   # nine 1s and one 0: SD = sqrt(0.9 x 0.1 x 10/9) = 0.316
    (0.90, 0.33, 10, INCONSISTENT),
    (0.95, 0.30, 10, INCONSISTENT),
    (0.90, 0.30, 1, CANNOT_TELL),
])
def test_sd_bound_of_a_unit_interval_metric(mean, sd, n, expected):
    assert audit.sd_bound_unit_interval(mean, sd, n)[0] == expected


@pytest.mark.parametrize("dice, iou, expected", [
    (0.82, 0.72, CONSISTENT), (0.80, 0.67, CONSISTENT),  # every case 0.8: IoU = 0.8 / 1.2 = 0.667
    (0.82, 0.66, INCONSISTENT),  # below D / (2 - D) = 0.695
    (0.82, 0.83, INCONSISTENT),  # above the Dice
])
def test_iou_between_dice_bounds(dice, iou, expected):
    assert audit.iou_between_dice_bounds(dice, iou)[0] == expected


def test_iou_dice_bounds_hold_for_any_cases():
    rng = np.random.default_rng(1)
    for _ in range(200):
        d = rng.uniform(0, 1, size=rng.integers(1, 30)) ** rng.uniform(0.2, 3)
        assert audit.iou_between_dice_bounds(round(d.mean(), 2), round((d / (2 - d)).mean(), 2))[0] == CONSISTENT


# -------------------------------------------------------------------------------- partitions

def test_partition_counts_and_means():
    assert audit.partition_counts(164, {"a": 80, "b": 37, "c": 35, "d": 6, "e": 6})[0] == CONSISTENT
    assert audit.partition_counts(164, {"a": 80, "b": 37})[0] == INCONSISTENT
    assert audit.partition_mean(0.60, [(2, 0.5), (2, 0.7)])[0] == CONSISTENT
    assert audit.partition_mean(0.62, [(2, 0.5), (2, 0.7)])[0] == INCONSISTENT
    # the paper's vendor rows: (80 x .89 + 37 x .81 + 35 x .82 + 6 x .88 + 6 x .85) / 164 = 0.8552
    verdict, allowed, why = audit.partition_mean(0.82, [(80, .89), (37, .81), (35, .82), (6, .88), (6, .85)])
    assert verdict == INCONSISTENT and "0.8552" in why


def test_partition_sd_by_hand():
    # group A = [0, 1] (mean .5, SD .7071), group B = [1, 1]: overall [0, 1, 1, 1] has mean .75, SD .5
    parts = [(2, 0.50, 0.71), (2, 1.00, 0.00)]
    assert audit.partition_sd(0.50, 0.75, parts)[0] == CONSISTENT
    assert audit.partition_sd(0.60, 0.75, parts)[0] == INCONSISTENT


def test_partition_rules_accept_tables_made_from_data():
    rng = np.random.default_rng(5)
    x = rng.beta(4, 1, 120)
    groups = np.array(["a"] * 70 + ["b"] * 35 + ["c"] * 15)
    parts = [(int((groups == g).sum()), round(x[groups == g].mean(), 2), round(x[groups == g].std(ddof=1), 2)) for g in "abc"]
    assert audit.partition_mean(round(x.mean(), 2), [p[:2] for p in parts])[0] == CONSISTENT
    assert audit.partition_sd(round(x.std(ddof=1), 2), round(x.mean(), 2), parts)[0] == CONSISTENT


# ------------------------------------------------------------------------ count-derived values

@pytest.mark.parametrize("value, n, expected", [
    (0.17, 6, CONSISTENT), (0.33, 6, CONSISTENT), (0.16, 6, INCONSISTENT), (0.50, 35, INCONSISTENT),
    (0.51, 164, CONSISTENT), (0.00, 3, CONSISTENT),
])
def test_attainable_rate(value, n, expected):
    assert audit.attainable_rate(value, n)[0] == expected


def test_attainable_rate_names_truncation():
    assert "truncation" in audit.attainable_rate(0.16, 6)[2]  # 1/6 = 0.1667 truncated
    assert audit.attainable_counts(0.16, 6, truncated=True) == [1]
    assert audit.attainable_counts(0.33, 6) == [2]
    assert audit.attainable_proportion(0.81, 10, 20) == [16]  # 13/16 = 0.8125; no N in 10-15 gives 0.81


def test_implied_reference_lesions_by_hand():
    # 10 scans, 12 lesions: TP 11 -> 9 and FP 3 -> 5 between the thresholds (TP + FP = 14 both times)
    s, f = (round(11 / 12, 2), round(9 / 12, 2)), (0.30, 0.50)
    found = audit.implied_reference_lesions(10, s, f)
    assert 12 in found
    for N in found:  # every answer has counts that print as reported and conserve predictions
        assert any(a - b in (2,) for a in audit.attainable_counts(s[0], N) for b in audit.attainable_counts(s[1], N))
    # sensitivity cannot rise while FP rises (TP would have to rise with FP)
    assert audit.implied_reference_lesions(10, (0.80, 0.90), (0.30, 0.50)) == []


def test_fp_definition_evidence():
    ev = audit.fp_definition_evidence(0.51, 0.61)
    assert ev["unmatched"][0] == CONSISTENT and ev["no_overlap"][0] == INCONSISTENT
    ev = audit.fp_definition_evidence(0.16, 0.16)
    assert ev["unmatched"][0] == CONSISTENT and ev["no_overlap"][0] == CONSISTENT
    assert audit.fp_definition_evidence(0.60, 0.50)["unmatched"][0] == INCONSISTENT


def test_ranges_text():
    assert audit.ranges_text([3, 4, 5, 9]) == "3-5, 9"
    assert audit.ranges_text([]) == "none"


# ------------------------------------------------------------------------ the paper's tables

def test_audit_of_the_papers_tables_flags_the_known_problems():
    df = audit.audit_reported(paper.reported())
    assert list(df.columns) == list(audit.FINDING_COLUMNS)
    assert set(df["verdict"]) <= {CONSISTENT, INCONSISTENT, CANNOT_TELL}

    def verdict(table, row, rule_start):
        hit = df[(df.table == table) & (df.row == row) & df.rule.str.startswith(rule_start)]
        assert len(hit) == 1, (table, row, rule_start)
        return hit.verdict.iloc[0]

    assert verdict("Table 3", "canon_medical_systems dice", "CI width of a mean") == INCONSISTENT
    assert verdict("Table 3", "overall dice", "CI width of a mean") == CONSISTENT
    assert verdict("Table 3", "vendor partition dice", "overall mean") == INCONSISTENT
    assert verdict("Table 3", "size partition dice", "overall mean") == CONSISTENT
    assert verdict("Table 3", "vendor partition", "subgroup n add up") == CONSISTENT
    assert verdict("Table 4", "fujifilm fp_per_scan iou_0.1", "FP/scan = FP / n") == INCONSISTENT
    assert verdict("Table 4", "overall", "FP definition: unmatched") == CONSISTENT
    assert verdict("Table 4", "overall", "FP definition: no_overlap") == INCONSISTENT
    assert verdict("Fig 4 text", "fp_per_scan IoU 0.5", "text equals Table 4") == INCONSISTENT
    assert verdict("Fig 2", "included", "training + tuning") == CONSISTENT
    assert verdict("Failure modes", "bottom group", "group = 10%") == CONSISTENT


def test_regenerated_tables_pass_their_own_audit():
    """Self-check: Table 3 computed from data, printed to 2 digits, breaks no width, bound or partition rule."""
    rng = np.random.default_rng(11)
    n = 90
    dice = rng.beta(6, 1.5, n)
    per_case = pd.DataFrame({
        "case_id": [f"c{i}" for i in range(n)], "dice": dice, "iou": dice / (2 - dice),
        "precision": rng.beta(8, 1.5, n), "recall": rng.beta(5, 1.5, n),
        "manufacturer": rng.choice(["CANON", "GE MEDICAL SYSTEMS", "SIEMENS"], n),
        "histology": rng.choice(["thymoma", "thymic_carcinoma", "lymphoma"], n),
        "max_axial_diameter_mm": rng.uniform(20, 120, n),
    })
    t3 = stats.table3(per_case, n_resamples=500, seed=2)
    findings = audit.findings_frame(audit.audit_table3(audit.table3_cells(t3), source="regenerated"))
    bad = findings[findings.verdict == INCONSISTENT]
    assert bad.empty, bad[["row", "rule", "why"]].to_string()
    assert (findings["source"] == "regenerated").all()


@pytest.mark.parametrize("count, total, printed, expected", [
    (291, 485, 60.0, CONSISTENT), (4, 62, 6.5, CONSISTENT), (4, 62, 6.4, INCONSISTENT),  # 6.452
    (37, 164, 22.6, CONSISTENT), (37, 164, 22.5, INCONSISTENT), (0, 62, 0.0, CONSISTENT), (1, 0, 0.0, CANNOT_TELL),
])
def test_percent_of_count(count, total, printed, expected):
    assert audit.percent_of_count(count, total, printed)[0] == expected


def test_percent_findings_on_the_paper_name_truncation():
    df = audit.audit_reported(paper.reported())
    pct = df[df.rule.str.startswith("percent")]
    bad = pct[pct.verdict == INCONSISTENT]
    assert sorted(bad["row"]) == ["ge_healthcare", "lymphoma", "thymic_cyst, tuning"]
    assert bad["why"].str.contains("truncation").all()
    totals = df[df.rule == "overall count = sum of the Table 1 split counts"]
    assert len(totals) == 5 and (totals.verdict == CONSISTENT).all()


def test_a_half_way_value_may_print_either_way():
    # 339 / 40 = 8.475 exactly: Python prints 8.47 (binary float), half-up prints 8.48; both are attainable
    assert 339 in audit.attainable_counts(8.47, 40) and 339 in audit.attainable_counts(8.48, 40)
    assert audit.attainable_rate(8.47, 40)[0] == CONSISTENT
    assert audit.percent_of_count(1, 8, 12.5)[0] == CONSISTENT and audit.percent_of_count(1, 16, 6.2, 1)[0] == CONSISTENT
