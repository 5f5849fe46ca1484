"""The package's copy of the paper's reported values and their formatting."""

import math

from amtlib import paper


def test_reported_tables_hold_the_papers_numbers():
    t3 = paper.table3().set_index(["subgroup", "metric"])
    assert t3.loc[("overall", "dice"), ["mean", "sd", "ci_low", "ci_high"]].tolist() == [0.82, 0.15, 0.79, 0.84]
    assert t3.loc[("overall", "dice"), "n"] == 164
    # subgroup sizes add up to the external test set, per family
    n = paper.table3().drop_duplicates("subgroup").set_index("subgroup")["n"]
    assert n[["canon_medical_systems", "ge_healthcare", "siemens", "fujifilm", "philips_healthcare"]].sum() == 164
    assert n[["size_large", "size_medium", "size_small"]].sum() == 164
    assert n[["thymoma", "thymic_carcinoma", "thymic_cyst", "lymphoma", "others"]].sum() == 164
    t4 = paper.table4().set_index(["subgroup", "iou_threshold", "metric"])
    assert t4.loc[("overall", 0.5, "sensitivity"), "mean"] == 0.87
    assert t4.loc[("overall", 0.1, "fp_per_scan"), "ci_high"] == 0.68
    assert set(paper.SUBGROUP_LABELS) == set(paper.reported()["table3"])


def test_format_cell_matches_the_papers_style():
    assert paper.format_cell(0.87, 0.02, 0.81, 0.92) == "0.87 ± 0.02 (0.81–0.92)"
    assert paper.format_cell(1, 0, 1, 1) == "1.00 ± 0.00 (1.00–1.00)"
    assert paper.format_cell(0.5, math.nan, 0.1, 0.9) == "0.50 ± – (0.10–0.90)"


# ----------------------------------------------------------------- paper vs regenerated verdicts

import pandas as pd  # noqa: E402
import pytest  # noqa: E402


@pytest.mark.parametrize("paper_v, regen, verdict", [(164, 164, paper.AGREE), (164, 163, paper.DIFFER), (164, None, paper.MISSING)])
def test_verdict_count(paper_v, regen, verdict):
    assert paper.verdict_count(paper_v, regen)[0] == verdict


@pytest.mark.parametrize("regen, verdict", [
    ([0.80, 0.1, 0.77, 0.83], paper.AGREE),       # overlaps 0.79-0.84
    ([0.70, 0.1, 0.60, 0.785], paper.AGREE),      # touches 0.785, the lowest value printing as 0.79
    ([0.70, 0.1, 0.60, 0.78], paper.DIFFER),      # below
    ([0.90, 0.1, 0.86, 0.95], paper.DIFFER),      # above
    ([float("nan")] * 4, paper.MISSING), (None, paper.MISSING),
])
def test_verdict_mean_ci_is_ci_overlap(regen, verdict):
    got, why = paper.verdict_mean_ci([0.82, 0.15, 0.79, 0.84], regen)
    assert got == verdict
    if verdict == paper.DIFFER:
        assert ("below" in why) == (regen[0] < 0.82)


def test_verdict_p_value_direction_range_median_and_setting():
    assert paper.verdict_p_value(0.003, 0.04)[0] == paper.AGREE
    assert paper.verdict_p_value(0.003, 0.06)[0] == paper.DIFFER
    assert paper.verdict_p_value(0.42, 0.19)[0] == paper.AGREE
    assert paper.verdict_p_value(0.42, 0.01)[0] == paper.DIFFER
    assert paper.verdict_p_value(0.42, float("nan"))[0] == paper.MISSING
    d = {"VoxelVolume": "top", "TotalEnergy": "top"}
    assert paper.verdict_direction(d, {"VoxelVolume": "top", "TotalEnergy": "top"})[0] == paper.AGREE
    got, why = paper.verdict_direction(d, {"VoxelVolume": "bottom", "TotalEnergy": "top"})
    assert got == paper.DIFFER and "VoxelVolume" in why and "TotalEnergy" not in why
    assert paper.verdict_range([0.95, 0.97], [0.96, 0.99])[0] == paper.AGREE
    assert paper.verdict_range([0.51, 0.52], [0.60, 0.70])[0] == paper.DIFFER
    assert paper.verdict_median_range([58, 20, 87], [60, 21, 85])[0] == paper.AGREE
    assert paper.verdict_median_range([58, 20, 87], [90, 85, 95])[0] == paper.DIFFER
    assert paper.verdict_setting(0.001, 0.001)[0] == paper.AGREE
    assert paper.verdict_setting(3, 2)[0] == paper.DIFFER
    assert paper.verdict_setting(5, "5, 7")[0] == paper.DIFFER


def test_compare_has_one_row_per_reported_leaf_with_a_stated_rule():
    leaves = paper.reported_leaves()
    assert "table3.overall.dice" in leaves and leaves["table3.overall.dice"] == [0.82, 0.15, 0.79, 0.84]
    assert "cohort_flow.external_test.cases" in leaves
    comp = paper.compare({})
    assert list(comp["key"]) == list(leaves)
    assert set(comp["rule"]) <= set(paper.RULES)
    shown_only = comp["rule"].isin(["documented", "part", "shown", "other_cohort", "not_trained"])
    assert (comp.loc[shown_only, "verdict"] == paper.NOT_COMPARED).all()
    assert (comp.loc[~shown_only, "verdict"] == paper.MISSING).all()
    rules = comp.set_index("key")["rule"]
    assert rules["table3.overall.n"] == "count" and rules["table4.siemens.iou_0.5.fp_per_scan"] == "mean_ci"
    assert rules["radiomics_failure_modes.p_values.Mean"] == "p_value"
    assert rules["froc_text.iou_0.50.sensitivity"] == "mean_ci" and rules["froc_text.iou_0.50.fp_ci"] == "part"


def _paper_as_run(leaves):
    """The paper's own values in the shapes a run gives (a proportion with a large n, a test as [p, a, b])."""
    regen = {}
    for k in leaves:
        v, rule = paper._paper_value(k, leaves), paper.comparison_rule(k)
        regen[k] = ([v, 10_000] if rule in ("proportion", "drawn_rate") else [v[0], v[1], 10_000] if rule == "drawn_mean_sd"
                    else [v / 2, 0.9, 0.8] if rule == "p_below" else v)
    return regen


def test_compare_the_paper_with_itself_reproduces_everything():
    leaves = paper.reported_leaves()
    comp = paper.compare(_paper_as_run(leaves))
    assert set(comp["verdict"]) == {paper.AGREE, paper.NOT_COMPARED, paper.BOTH_ZERO}
    zero = comp[comp["verdict"] == paper.BOTH_ZERO]
    # the 0 = 0 rows are Table 1's empty cells and the zero FP/scan of Table 4's "others" (cell [0, 0, 0, 0])
    assert "table1.histology_counts.teratoma.tuning" in set(zero["key"]) and "table4.others.iou_0.5.fp_per_scan" in set(zero["key"])
    assert all(leaves[k] == 0 or leaves[k] == [0, 0, 0, 0] for k in zero["key"])
    cls = paper.classify(comp)
    assert cls["classification"] == "reproduced" and cls[paper.BOTH_ZERO] == len(zero)
    assert cls["compared"] == int((comp["verdict"] == paper.AGREE).sum())
    # on a cohort generated at scale 0.5 the paper's own counts are no longer the design: every count above 8
    # differs (n - n/2 > 2 sqrt(n/2) once n > 8)
    half = paper.compare(_paper_as_run(leaves), scale=0.5).set_index("key")
    counts = [k for k in half.index if half.loc[k, "rule"] == "count" and not k.startswith(("tet_", "dmfn_"))]
    assert {half.loc[k, "verdict"] for k in counts if leaves[k] > 8} == {paper.DIFFER}
    assert {half.loc[k, "verdict"] for k in counts if 0 < leaves[k] <= 8} == {paper.AS_DESIGNED}
    assert half.loc["cohort_flow.screened", "why"] == "858 vs 429 expected at scale 0.5 (858 x 0.5)"


@pytest.mark.parametrize("paper_v, regen, scale, strict, verdict", [
    (858, 429, 0.5, True, paper.AS_DESIGNED),   # exactly half
    (147, 74, 0.5, True, paper.AS_DESIGNED),    # 73.5 rounded up
    (147, 73, 0.5, True, paper.AS_DESIGNED),    # or down
    (858, 427, 0.5, True, paper.DIFFER),        # screened is set exactly: 2 off is a difference
    (291, 147, 0.5, False, paper.AS_DESIGNED),  # 145.5 +- 2 sqrt(145.5) = +- 24.1
    (291, 169, 0.5, False, paper.AS_DESIGNED),
    (291, 170, 0.5, False, paper.DIFFER),
    (6, 6, 0.5, False, paper.AS_DESIGNED),      # 3 +- 3.46
    (164, 164, 0.5, False, paper.DIFFER),       # the unscaled count is not the design
    (1, 1, 0.5, False, paper.AS_DESIGNED),      # a nonzero category keeps one case
    (0, 0, 0.5, False, paper.BOTH_ZERO), (0, 0, 1.0, False, paper.BOTH_ZERO),
    (0, 1, 1.0, False, paper.DIFFER), (858, 858, 1.0, True, paper.AGREE),
])
def test_verdict_count_knows_the_cohort_scale(paper_v, regen, scale, strict, verdict):
    got, why = paper.verdict_count(paper_v, regen, scale, strict)
    assert got == verdict
    if verdict == paper.AS_DESIGNED:
        assert f"x {scale:g}" in why


def test_zero_cells_setting_design_and_classification():
    assert paper.verdict_mean_ci([0, 0, 0, 0], [0.0, 0.0, 0.0, 0.0])[0] == paper.BOTH_ZERO
    assert paper.verdict_mean_ci([0, 0, 0, 0], [0.1, 0.1, 0.0, 0.2])[0] == paper.AGREE
    assert paper.verdict_setting(224, 48, full_scale=224) == (
        paper.AS_DESIGNED, "the demo uses 48 to fit 2 CPU cores; configs/paper.yaml uses the paper's 224")
    assert paper.verdict_setting(500, 6, full_scale=100)[0] == paper.DIFFER  # paper.yaml does not restore it either
    assert paper.verdict_setting([0, 1], [0.0, 1.0])[0] == paper.AGREE
    cls = paper.classify(pd.DataFrame({"verdict": [paper.AGREE, paper.DIFFER] + [paper.AS_DESIGNED] * 50 + [paper.BOTH_ZERO] * 9}))
    assert (cls["compared"], cls[paper.AS_DESIGNED], cls["not compared in all"], cls["classification"]) == (2, 50, 9, "partly reproduced")


def test_wilson_interval_against_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    for k, n in ((5, 10), (0, 7), (40, 41), (1, 1)):
        lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
        assert paper.wilson_interval(k / n, n) == pytest.approx((lo, hi), abs=1e-9)
    assert paper.wilson_interval(0.5, 0) == (0.0, 1.0)


def test_related_paper_rules_hand_computed():
    # TET Table 2 row: [auc, lo, hi, acc, sens, spec, ppv, npv]
    rep = [0.876, 0.7908, 0.9604, 0.820, 0.878, 0.700, 0.857, 0.737]
    got, why = paper.verdict_auc_row(rep, [0.40, 0.20, 0.60, 0.5, 0.6, 0.3, 0.7, 0.2])
    assert got == paper.DIFFER and "below" in why and "sensitivity 0.60 / specificity 0.30 here, 0.88 / 0.70" in why
    assert paper.verdict_auc_row(rep, [0.70, 0.55, 0.791, 0.5, 0.6, 0.3, 0.7, 0.2])[0] == paper.AGREE  # 0.791 >= 0.7908
    assert paper.verdict_auc_ci([0.941, 0.901, 0.982], None)[0] == paper.MISSING
    # 0.70 on n = 40 positives: Wilson 0.546-0.819 holds 0.809, not 0.929
    assert paper.verdict_proportion(0.809, [0.70, 40])[0] == paper.AGREE
    assert paper.verdict_proportion(0.929, [0.70, 40])[0] == paper.DIFFER
    assert paper.verdict_p_below(0.05, [0.01, 0.9, 0.7])[0] == paper.AGREE
    assert paper.verdict_p_below(0.05, [0.01, 0.4, 0.7])[0] == paper.DIFFER  # significant, the wrong way round
    assert paper.verdict_p_below(0.05, [0.20, 0.9, 0.7])[0] == paper.DIFFER
    # a drawn level: 12.48 ± 1.96 x 5.23 / sqrt(25) = 12.48 ± 2.05
    assert paper.verdict_drawn_mean_sd([12.48, 5.23], [14.4, 5.0, 25], generated=True)[0] == paper.AS_DESIGNED
    assert paper.verdict_drawn_mean_sd([12.48, 5.23], [14.6, 5.0, 25], generated=True)[0] == paper.DIFFER
    assert paper.verdict_drawn_mean_sd([12.48, 5.23], [14.4, 5.0, 25])[0] == paper.AGREE
    assert paper.verdict_drawn_rate(0.1235, [0.15, 40], generated=True)[0] == paper.AS_DESIGNED


def test_sections_have_readable_titles_and_causes_point_to_known_gaps():
    comp = paper.compare({})
    assert not comp["section"].isin(["tet_risk_stratification", "dmfn_fusion"]).any()
    sec = comp.set_index("key")["section"]
    assert sec["tet_risk_stratification.table2.resnet101"].startswith(paper.TET_TITLE + ": ")
    assert sec["dmfn_fusion.binary_validation.fusion.auc"].startswith(paper.FUSION_TITLE + ": ")
    assert "known gap 1" in paper.cause_of("table4.overall.iou_0.1.fp_per_scan")
    inside = paper.cause_of("table4.overall.iou_0.1.fp_per_scan", [1.6, 0.1, 1.4, 1.8], (0.50, 2.09, "0, 1, 2, 3"))
    assert inside.startswith("seed spread 0.50-2.09 (seeds 0, 1, 2, 3): this run lies inside it")
    assert "lies outside" in paper.cause_of("table3.overall.dice", [0.60, 0.1, 0.5, 0.7], (0.72, 0.81, "0, 1"))
    assert paper.cause_of("dmfn_fusion.multiclass.fusion.auc", [0.62, 0.56, 0.68], (0.60, 0.69, "0, 1, 2"),
                          paper_value=[0.884, 0.837, 0.931]).startswith(
        "seed spread 0.60-0.69 (seeds 0, 1, 2): this run lies inside it, the paper's 0.88 outside; README known gap 4")
    assert "known gap 3" in paper.cause_of("tet_risk_stratification.table2.resnet101")
    assert "known gap 4" in paper.cause_of("dmfn_fusion.binary_validation.fusion.auc")
    assert paper.cause_of("radiomics_failure_modes.p_values.Mean") == ""


@pytest.mark.parametrize("verdicts, label", [
    ([paper.AGREE] * 3, "reproduced"),
    ([paper.AGREE] * 2 + [paper.DIFFER] * 2, "partly reproduced"),
    ([paper.AGREE] + [paper.DIFFER] * 2 + [paper.MISSING] * 5, "not reproduced"),
    ([paper.MISSING, paper.NOT_COMPARED], "not reproduced"),
])
def test_classification_counts(verdicts, label):
    cls = paper.classify(pd.DataFrame({"verdict": verdicts}))
    assert cls["classification"] == label
    assert cls["compared"] == verdicts.count(paper.AGREE) + verdicts.count(paper.DIFFER)
