"""Tests for amtlib.split: external-institution rules, patient-level random split, leakage audit."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from amtlib import split as sp
from amtlib.paper import reported


def _cohort() -> pd.DataFrame:
    """CENTRAL x 40, DEV-1 x 5, DEV-2 x 1, EXT-1..EXT-5 x 2: 56 cases, one per patient."""
    insts = ["CENTRAL"] * 40 + ["DEV-1"] * 5 + ["DEV-2"] + [f"EXT-{i}" for i in range(1, 6) for _ in range(2)]
    ids = [f"P{i:03d}" for i in range(len(insts))]
    return pd.DataFrame({"case_id": ids, "patient_id": ids, "institution": insts,
                         "study_uid": [f"st{i}" for i in ids], "series_uid": [f"se{i}" for i in ids],
                         "image_sha256": [f"{i:064x}" for i in range(len(ids))]})


def test_external_rules() -> None:
    c = _cohort()
    assert sp.external_institutions(c, development_institutions="DEV-1, DEV-2") == [f"EXT-{i}" for i in range(1, 6)]
    assert sp.external_institutions(c, "all_referral", development_institutions="DEV-1") == ["DEV-1", "DEV-2"] + [f"EXT-{i}" for i in range(1, 6)]
    with pytest.warns(UserWarning, match="no development institutions listed"):
        assert len(sp.external_institutions(c)) == 7
    with pytest.raises(ValueError, match="not in the cohort: DEV-9"):
        sp.external_institutions(c, development_institutions=["DEV-1", "DEV-9"])
    with pytest.raises(ValueError, match="external_rule 'by_size' unknown"):
        sp.external_institutions(c, "by_size")
    with pytest.raises(ValueError, match="no external institution"):
        sp.external_institutions(c, development_institutions=["DEV-1", "DEV-2"] + [f"EXT-{i}" for i in range(1, 6)])


def test_development_list_parameter_then_file(tmp_path: Path) -> None:
    assert sp.development_list("", tmp_path) == ([], "none")
    (tmp_path / "development_institutions.txt").write_text("# design: development partners\nDEV-1\n\nDEV-2  # small site\n")
    assert sp.development_list("", tmp_path) == (["DEV-1", "DEV-2"], str(tmp_path / "development_institutions.txt"))
    assert sp.development_list("DEV-2", tmp_path) == (["DEV-2"], "parameter development_institutions")
    assert sp.development_list(None, None) == ([], "none")


def test_assign_splits_sizes_and_determinism() -> None:
    c = _cohort()
    ext = [f"EXT-{i}" for i in range(1, 6)]
    s = sp.assign_splits(c, ext, tuning_fraction=0.25, seed=3)
    assert s.columns.tolist() == ["case_id", "patient_id", "institution", "split"]
    assert s["split"].value_counts().to_dict() == {"train": 34, "tuning": 12, "external_test": 10}  # round(0.25 x 46)
    assert set(s.loc[s["split"] == "external_test", "institution"]) == set(ext)
    assert s.equals(sp.assign_splits(c, ext, tuning_fraction=0.25, seed=3))
    assert not s.equals(sp.assign_splits(c, ext, tuning_fraction=0.25, seed=4))
    assert s.equals(sp.assign_splits(c.iloc[::-1], ext, tuning_fraction=0.25, seed=3).sort_values("case_id").reset_index(drop=True))


def test_paper_fraction_gives_paper_sizes() -> None:
    ids = [f"P{i}" for i in range(547)]
    dev = pd.DataFrame({"case_id": ids, "patient_id": ids, "institution": "CENTRAL"})
    assert sp.assign_splits(dev, [], seed=0)["split"].value_counts().to_dict() == {"train": 485, "tuning": 62}


def test_patients_with_two_cases_never_straddle_splits() -> None:
    c = pd.DataFrame({"case_id": [f"C{i}" for i in range(40)], "patient_id": [f"P{i // 2}" for i in range(40)],
                      "institution": ["CENTRAL"] * 38 + ["EXT", "CENTRAL"]})
    s = sp.assign_splits(c, ["EXT"], tuning_fraction=0.3, seed=1)
    assert s.groupby("patient_id")["split"].nunique().max() == 1
    assert s.loc[s["patient_id"] == "P19", "split"].tolist() == ["external_test", "external_test"]


def test_clean_split_passes_audit() -> None:
    c = _cohort()
    s = sp.assign_splits(c, [f"EXT-{i}" for i in range(1, 6)], 0.25, seed=0)
    audit = sp.leakage_audit(s, c)
    assert audit["passed"], audit
    assert audit["counts"]["external_test"] == {"cases": 10, "patients": 10, "institutions": 5}
    sp.raise_on_leakage(audit)


def _planted(column: str, value_from: str, value_to: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    c = _cohort()
    s = sp.assign_splits(c, [f"EXT-{i}" for i in range(1, 6)], 0.25, seed=0)
    a = s.loc[s["split"] == value_from, "case_id"].iloc[0]
    b = s.loc[s["split"] == value_to, "case_id"].iloc[0]
    target = s if column in ("patient_id", "institution") else c
    src = target.loc[target["case_id"] == a, column].iloc[0]
    target.loc[target["case_id"] == b, column] = src
    return s, c


@pytest.mark.parametrize("column,check", [("patient_id", "patient_id"), ("study_uid", "study_uid"),
                                          ("series_uid", "series_uid")])
def test_audit_catches_planted_leak(column: str, check: str) -> None:
    s, c = _planted(column, "train", "tuning")
    audit = sp.leakage_audit(s, c)
    assert not audit["passed"] and not audit["checks"][check]["ok"]
    assert list(audit["checks"][check]["offenders"].values()) == [["train", "tuning"]]
    with pytest.raises(sp.LeakageError, match=f"{check}: 1 shared"):
        sp.raise_on_leakage(audit)


def test_identical_images_are_reported_not_failed() -> None:
    s, c = _planted("image_sha256", "train", "external_test")
    with pytest.warns(UserWarning, match="1 image file"):
        audit = sp.leakage_audit(s, c)
    assert audit["passed"] and len(audit["identical_images_across_splits"]) == 1


def test_audit_catches_institution_in_external_and_development() -> None:
    s, c = _planted("institution", "external_test", "train")
    audit = sp.leakage_audit(s, c)
    check = audit["checks"]["institution_external_vs_development"]
    assert not check["ok"] and list(check["offenders"].values()) == [["external_test", "train"]]
    with pytest.raises(sp.LeakageError, match=r"institution_external_vs_development: 1 shared \(EXT-\d in external_test, train\)"):
        sp.raise_on_leakage(audit)


def test_train_and_tuning_may_share_institutions_and_duplicate_case_is_caught() -> None:
    c = _cohort()
    s = sp.assign_splits(c, [f"EXT-{i}" for i in range(1, 6)], 0.25, seed=0)
    assert {"train", "tuning"} <= set(s.loc[s["institution"] == "CENTRAL", "split"])
    assert sp.leakage_audit(s, c)["passed"]
    dup = pd.concat([s, s.iloc[[0]]], ignore_index=True)
    assert not sp.leakage_audit(dup)["checks"]["case_id"]["ok"]


def test_make_split_writes_files_and_unseen_background(tmp_path: Path) -> None:
    c = _cohort()
    bg = pd.Series({pid: ("lidc" if i % 7 == 0 else "procedural") for i, pid in enumerate(c["patient_id"])})
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "development_institutions.txt").write_text("DEV-1\nDEV-2\n")
    pd.DataFrame({"patient_id": bg.index, "background": bg.values}).to_csv(raw / "clinical.csv", index=False)
    split, audit = sp.make_split(c, tmp_path, split_seed=1, tuning_fraction=0.25, unseen_background="lidc", raw_dir=raw)
    assert audit["parameters"]["development_source"].endswith("development_institutions.txt")
    assert audit["external_institutions"] == [f"EXT-{i}" for i in range(1, 6)]
    lidc = set(bg[bg == "lidc"].index)
    assert set(split.loc[split["patient_id"].isin(lidc), "split"]) == {"external_test"}
    assert audit["passed"] and set(audit["exempt_from_institution_check"]) == {p for p in lidc if p < "P046"}
    on_disk = pd.read_csv(tmp_path / "split.csv", dtype=str)
    assert on_disk.equals(split)
    sj = json.loads((tmp_path / "splits.json").read_text())
    assert set(sj[0]) == {"train", "val", "external_test"} and sj[0]["val"] == sorted(split.loc[split["split"] == "tuning", "case_id"])
    assert json.loads((tmp_path / "leakage_audit.json").read_text())["passed"] is True
    table = sp.background_by_split(split, bg)
    assert table.loc["lidc", "train"] == 0 and table.loc["lidc", "tuning"] == 0
    with pytest.raises(ValueError, match="matches no case"):
        sp.make_split(c, tmp_path, unseen_background="pelvis", backgrounds=bg, development_institutions="DEV-1")
    with pytest.raises(ValueError, match="needs the clinical 'background' column"):
        sp.make_split(c, tmp_path, unseen_background="lidc", development_institutions="DEV-1")


def test_split_flow_counts() -> None:
    s = pd.DataFrame({"case_id": list("abcdef"), "patient_id": list("abcdef"),
                      "institution": ["C", "C", "D", "E", "F", "F"],
                      "split": ["train", "tuning", "train", "external_test", "external_test", "external_test"]})
    assert sp.split_flow(s) == {"external_test": {"cases": 3, "institutions": 2}, "development": {"cases": 3, "institutions": 2},
                                "training": {"cases": 2, "institutions": 2}, "tuning": {"cases": 1, "institutions": 1}}


def test_default_seed_gives_paper_institution_counts_on_the_demo_design() -> None:
    """At scale 1.0 the generator's design (its audit column ``role`` names the development sites, as
    an investigator's list would) split with DEFAULT_SPLIT_SEED gives Fig. 2 and Table 1's histology
    counts exactly (pins the documented seed to the generator's design)."""
    clinical = pytest.importorskip("amtlib.phantom.clinical")
    design = clinical.design_cohort(scale=1.0, seed=0)
    included = design[design["intended_exclusion"] == ""].assign(case_id=lambda d: d["patient_id"])
    dev = sorted(set(included.loc[(included["role"] == "development") & (included["institution"] != "CENTRAL"), "institution"]))
    external = sp.external_institutions(included, development_institutions=dev)
    s = sp.assign_splits(included, external, seed=sp.DEFAULT_SPLIT_SEED)
    assert sp.split_flow(s) == {"external_test": {"cases": 164, "institutions": 121}, "development": {"cases": 547, "institutions": 15},
                                "training": {"cases": 485, "institutions": 13}, "tuning": {"cases": 62, "institutions": 4}}
    assert (s["split"].eq("external_test") == included["role"].eq("external_candidate").to_numpy()).all()
    hist = s.assign(h=included["histology"].to_numpy()).groupby(["split", "h"]).size()
    for h, counts in reported()["table1"]["histology_counts"].items():
        for split_name, key in (("train", "training"), ("tuning", "tuning"), ("external_test", "external_testing")):
            assert hist.get((split_name, h), 0) == counts[key], (h, split_name)
