"""Smoke run of the whole pipeline: every notebook, tiny procedural cohort, CPU, a couple of minutes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from amtlib import pipeline
from amtlib.paths import RunPaths

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    run = tmp_path_factory.mktemp("smoke") / "smoke"
    return run, pipeline.run_pipeline(ROOT / "configs" / "smoke.yaml", out=run, echo=lambda m: None)


@pytest.mark.slow
def test_smoke_pipeline_end_to_end(smoke):
    run, res = smoke
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
    exported = pd.read_csv(P.export_dir / "export.csv", dtype={"case_id": str})  # step 09, export_formats on
    assert set(exported["case_id"]) == set(split.loc[split["split"] == "external_test", "case_id"])
    assert all((P.export_dir / p).is_file() for p in [*exported["seg_path"], *exported["rtstruct_path"]])
    # the last step, the reviewer's report, holds every reported number (amtlib.paper.reported_leaves)
    from amtlib import paper

    comparison = pd.read_csv(run / "report" / "comparison.csv")
    page = (run / "report" / "index.html").read_text()
    assert all(k in set(comparison["key"]) and f">{k}<" in page for k in paper.reported_leaves())
    assert "The data are synthetic" in page
    # downstream classifiers (issue 17): external AUC tables of notebooks 07 and 08
    auc07 = pd.read_csv(run / "07_histology" / "auc.csv")
    assert set(auc07["roi"]) == {"predicted", "reference"} and set(auc07["model"]) == {"radiomics_svm", "cnn_resnet2d"}
    auc08 = pd.read_csv(run / "08_fusion" / "auc.csv")
    assert set(auc08["model"]) == {"ct_only_cnn", "ctc_clinical_logistic", "fusion"}
    # a second run changes nothing and skips every step
    said: list[str] = []
    again = pipeline.run_pipeline(ROOT / "configs" / "smoke.yaml", out=run, echo=said.append)
    assert again.executed == [] and again.skipped == steps
    assert said[-1] == f"reviewer's report: {run / 'report' / 'index.html'} (open in a browser); executed notebooks: {run / 'notebooks'}"


def _artifacts(run: Path) -> dict[str, bytes]:
    """The model, every CSV (but the wall-clock train_timing.csv), every figure and prediction of a run."""
    files = [p for p in run.rglob("*") if p.is_file() and "cache" not in p.parts and (
        p.suffix in {".csv", ".png", ".pdf"} or p.name == "model.pt" or p.parent.name == "predictions")]
    return {str(p.relative_to(run)): p.read_bytes() for p in files if p.name != "train_timing.csv"}


@pytest.mark.slow
def test_identical_runs_give_byte_identical_model_tables_and_figures(smoke):
    """Issue 11, item 12: a reproduction can be confirmed by checksums (same path, so same paths inside)."""
    run, _ = smoke
    first = run.with_name("first")
    shutil.move(run, first)
    pipeline.run_pipeline(ROOT / "configs" / "smoke.yaml", out=run, echo=lambda m: None)
    a, b = _artifacts(first), _artifacts(run)
    assert sorted(a) == sorted(b)
    assert {"03_train/model.pt", "04_evaluate/per_case.csv", "05_froc/fig4_froc.pdf", "06_failure/radiomics_boxplots.png"} <= set(a)
    assert [k for k in a if a[k] != b[k]] == []
