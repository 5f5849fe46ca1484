"""Smoke run of the whole pipeline: every notebook, tiny procedural cohort, CPU, a couple of minutes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from amtlib import pipeline
from amtlib.paths import RunPaths

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_smoke_pipeline_end_to_end(tmp_path):
    run = tmp_path / "smoke"
    res = pipeline.run_pipeline(ROOT / "configs" / "smoke.yaml", out=run, echo=lambda m: None)
    steps = [s.name for s in pipeline.discover_steps()]
    assert res.executed == steps
    rec = json.loads((run / "run.json").read_text())
    assert rec["status"] == "ok"
    assert all(rec["steps"][s]["status"] == "ok" for s in steps)

    P = RunPaths(run)
    manifest = pd.read_csv(P.manifest, dtype={"case_id": str})
    split = pd.read_csv(P.split_csv, dtype={"case_id": str})
    assert set(split["case_id"]) == set(manifest["case_id"])
    assert set(split["split"]) == {"train", "tuning", "external_test"}
    evaluated = split.loc[split["split"].isin(["tuning", "external_test"]), "case_id"]
    assert all((P.predictions_dir / f"{c}.nii.gz").is_file() for c in evaluated)
    per_case = pd.read_csv(P.per_case, dtype={"case_id": str})
    assert per_case["dice"].between(0, 1).all()
    froc = pd.read_csv(P.froc)
    assert len(froc) == 19 and froc["sensitivity"].between(0, 1).all()
    assert P.radiomics_tests.is_file()
    # downstream classifiers (issue 17): external AUC tables of notebooks 07 and 08
    auc07 = pd.read_csv(run / "07_histology" / "auc.csv")
    assert set(auc07["roi"]) == {"predicted", "reference"} and set(auc07["model"]) == {"radiomics_svm", "cnn_resnet2d"}
    auc08 = pd.read_csv(run / "08_fusion" / "auc.csv")
    assert set(auc08["model"]) == {"ct_only_cnn", "ctc_clinical_logistic", "fusion"}
    # a second run changes nothing and skips every step
    again = pipeline.run_pipeline(ROOT / "configs" / "smoke.yaml", out=run, echo=lambda m: None)
    assert again.executed == [] and again.skipped == steps
