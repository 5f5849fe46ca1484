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
    assert (comp.loc[comp["rule"].isin(["documented", "part"]), "verdict"] == paper.NOT_COMPARED).all()
    assert (comp.loc[~comp["rule"].isin(["documented", "part"]), "verdict"] == paper.MISSING).all()
    rules = comp.set_index("key")["rule"]
    assert rules["table3.overall.n"] == "count" and rules["table4.siemens.iou_0.5.fp_per_scan"] == "mean_ci"
    assert rules["radiomics_failure_modes.p_values.Mean"] == "p_value"
    assert rules["froc_text.iou_0.50.sensitivity"] == "mean_ci" and rules["froc_text.iou_0.50.fp_ci"] == "part"


def test_compare_the_paper_with_itself_reproduces_everything():
    leaves = paper.reported_leaves()
    regen = {k: paper._paper_value(k, leaves) for k in leaves}
    comp = paper.compare(regen)
    assert set(comp["verdict"]) == {paper.AGREE, paper.NOT_COMPARED}
    assert paper.classify(comp)["classification"] == "reproduced"


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
