"""amtlib.paths: the run-folder contract: safe ids, step folders created only when their inputs exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from amtlib.paths import STEP_INPUTS, STEP_READS, RunPaths, is_safe_id


@pytest.mark.parametrize("text, safe", [
    ("PT0001", True), ("case_1.v2-a", True), ("1.2.840.113619.2.55", True), ("a" * 128, True), ("a" * 129, False),
    ("../x", False), ("/abs", False), (".hidden", False), ("a/b", False), ("a b", False), ("", False), ("é", False),
    (None, False), (42, False),
])
def test_ids_that_name_files(text, safe) -> None:
    assert is_safe_id(text) is safe


def test_a_step_folder_is_made_only_when_its_inputs_exist(tmp_path: Path) -> None:
    P = RunPaths(tmp_path / "run")
    with pytest.raises(ValueError, match=r"manifest.csv: not found, so step 03_train cannot run .* 01_cohort, 02_split"):
        P.step("03_train")
    assert not (tmp_path / "run" / "03_train").exists()
    P.step("01_cohort")
    P.manifest.write_text("case_id\n")
    P.cohort_flow.write_text("{}")
    P.step("02_split")
    P.split_csv.write_text("case_id,split\n")
    assert P.step("03_train") == tmp_path / "run" / "03_train" and (tmp_path / "run" / "03_train").is_dir()
    with pytest.raises(ValueError, match="unknown step '11_more'"):
        P.step("11_more")


def test_what_a_step_reads_includes_what_it_needs() -> None:
    for step, needs in STEP_INPUTS.items():
        assert set(needs) <= set(STEP_READS[step]), step
    P = RunPaths("/r")
    for step, reads in STEP_READS.items():
        for key in reads:  # every name is a path of the contract, inside the run folder
            assert str(getattr(P, key)).startswith("/r/"), (step, key)
