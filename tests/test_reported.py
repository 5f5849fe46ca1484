"""amtlib.reported: the package's copy of the papers' numbers and their format."""

from __future__ import annotations

import math

from amtlib.reported import CTC_ROW, format_cell, metric_cell, reported, table3


def test_the_copy_holds_the_papers_headline_numbers() -> None:
    """Spot checks against the paper (Table 3, overall row: 164 cases, Dice 0.82 ± 0.15, 0.79-0.84)."""
    r = reported()
    assert {"table3", "table4", "cohort_flow", "tet_risk_stratification", "dmfn_fusion"} <= set(r)
    assert metric_cell(r["table3"]["overall"]["dice"]) == {"mean": 0.82, "sd": 0.15, "ci_low": 0.79, "ci_high": 0.84}
    t = table3().set_index(["subgroup", "metric"])
    assert t.loc[("overall", "dice"), "n"] == 164 and t.loc[("canon_medical_systems", "precision"), "mean"] == 0.91
    assert reported() is reported()  # loaded once


def test_cells_print_as_the_paper_prints_them() -> None:
    assert format_cell(0.8712, 0.0234, 0.81, 0.9249) == "0.87 ± 0.02 (0.81–0.92)"
    assert format_cell(0.5, math.nan, 0.1, 0.9, digits=1) == "0.5 ± – (0.1–0.9)"
    assert metric_cell([1, 2, 3, 4]) == {"mean": 1, "sd": 2, "ci_low": 3, "ci_high": 4}


def test_the_ctc_mapping_names_rows_of_the_fusion_papers_table() -> None:
    rows = set(reported()["dmfn_fusion"]["table2_ctc_level"])
    assert set(CTC_ROW.values()) <= rows
    assert {"thymoma_ab", "thymoma_b3", "others"} & rows  # thymomas go by subtype, the rest fall back to others
