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
