"""Tests of the papermill runner (amtlib.pipeline) and the ``amt`` command, on throw-away notebooks."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from amtlib import cli, pipeline


def _notebook(path: Path, params: str, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), p, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)
    return path


@pytest.fixture()
def project(tmp_path: Path) -> tuple[Path, Path]:
    """Two steps: 00 writes value*2 to a file, 01 reads it and adds offset."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(nbs / "00_make.ipynb", 'run_dir = "x"\nvalue = 1',
              "from pathlib import Path\nPath(run_dir, 'a.txt').write_text(str(value * 2))")
    _notebook(nbs / "01_use.ipynb", 'run_dir = "x"\noffset = 0',
              "from pathlib import Path\nv = int(Path(run_dir, 'a.txt').read_text())\n"
              "Path(run_dir, 'b.txt').write_text(str(v + offset))")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("value: 5\noffset: 3\n")
    return nbs, cfg


def test_run_writes_artifacts_and_provenance(project, tmp_path):
    nbs, cfg = project
    run = tmp_path / "run"
    res = pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, echo=lambda m: None)
    assert res.executed == ["00_make", "01_use"]
    assert (run / "b.txt").read_text() == "13"  # 5*2 + 3: both parameters were injected
    rec = json.loads((run / "run.json").read_text())
    for key in ("git", "config", "versions", "platform", "device", "seeds", "started", "ended", "steps"):
        assert key in rec, key
    assert rec["status"] == "ok"
    assert rec["config"] == {"value": 5, "offset": 3}
    assert {"commit", "dirty"} <= set(rec["git"])
    assert rec["versions"]["papermill"] and rec["device"]["type"] in {"cpu", "cuda"}
    for step in ("00_make", "01_use"):
        entry = rec["steps"][step]
        assert entry["status"] == "ok" and entry["duration_s"] > 0
        assert (run / entry["notebook"]).is_file()
    # each notebook received only the keys it declares
    assert rec["steps"]["00_make"]["parameters"] == {"value": 5, "run_dir": str(run.resolve())}
    assert (run / "config.yaml").is_file() and (run / "run.log").is_file()


def test_unchanged_steps_are_skipped_and_changes_propagate(project, tmp_path):
    nbs, cfg = project
    run = tmp_path / "run"
    pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, echo=lambda m: None)
    again = pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, echo=lambda m: None)
    assert again.executed == [] and again.skipped == ["00_make", "01_use"]
    # a change to step 00's parameter re-runs 00 and, through the fingerprint chain, 01
    changed = pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, overrides={"value": 6}, echo=lambda m: None)
    assert changed.executed == ["00_make", "01_use"]
    assert (run / "b.txt").read_text() == "15"
    forced = pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, overrides={"value": 6}, force=True,
                                   only=["01"], echo=lambda m: None)
    assert forced.executed == ["01_use"]


def test_only_reruns_one_step_from_earlier_artifacts(project, tmp_path):
    nbs, cfg = project
    run = tmp_path / "run"
    pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, echo=lambda m: None)
    res = pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, only=["use"],
                                overrides={"offset": 10}, echo=lambda m: None)
    assert res.executed == ["01_use"]
    assert (run / "b.txt").read_text() == "20"


def test_failing_notebook_names_step_cell_error_and_copy(project, tmp_path):
    nbs, cfg = project
    _notebook(nbs / "02_fail.ipynb", 'run_dir = "x"',
              "# the failing cell\nraise ValueError('planted failure')")
    run = tmp_path / "run"
    with pytest.raises(pipeline.StepFailed) as err:
        pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, echo=lambda m: None)
    msg = str(err.value)
    assert "02_fail" in msg and "ValueError" in msg and "planted failure" in msg
    assert "cell" in msg and "raise ValueError" in msg
    executed = run / "notebooks" / "02_fail.ipynb"
    assert str(executed) in msg and executed.is_file()
    rec = json.loads((run / "run.json").read_text())
    assert rec["status"] == "failed" and rec["steps"]["02_fail"]["status"] == "failed"
    assert rec["steps"]["01_use"]["status"] == "ok"


def test_cli_run_exit_code_on_failure(project, tmp_path, capsys):
    nbs, cfg = project
    _notebook(nbs / "02_fail.ipynb", 'run_dir = "x"', "1/0")
    rc = cli.main(["run", "--config", str(cfg), "--out", str(tmp_path / "r"), "--notebooks", str(nbs)])
    assert rc == 1
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_step_selection_and_overrides():
    steps = [pipeline.Step(n, Path(f"{n}.ipynb")) for n in ("00_data", "01_cohort", "02_split", "03_train")]
    assert [s.name for s in pipeline.select_steps(steps, start="01", stop="split")] == ["01_cohort", "02_split"]
    assert [s.name for s in pipeline.select_steps(steps, only=["3"])] == ["03_train"]
    with pytest.raises(ValueError, match="unknown step"):
        pipeline.select_steps(steps, only=["nope"])
    with pytest.raises(ValueError, match="after"):
        pipeline.select_steps(steps, start="03", stop="01")
    assert pipeline.parse_overrides(["a=1", "b=x", "c=[1, 2]", "d=true"]) == {"a": 1, "b": "x", "c": [1, 2], "d": True}
    with pytest.raises(ValueError, match="key=value"):
        pipeline.parse_overrides(["novalue"])


def test_bad_config_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        pipeline.load_config(bad)
    nested = tmp_path / "nested.yaml"
    nested.write_text("train:\n  lr: 1\n")
    with pytest.raises(ValueError, match="flat"):
        pipeline.load_config(nested)


def test_unparsable_parameter_line_is_refused(tmp_path):
    nb = _notebook(tmp_path / "00_x.ipynb", 'run_dir = "x"\nk = 1  # a = b', "pass")
    with pytest.raises(ValueError, match="cannot parse"):
        pipeline.notebook_parameters(nb)


def test_run_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = capsys.readouterr().out
    for opt in ("--config", "--out", "--only", "--from", "--to", "-p", "--force", "--list", "--notebooks"):
        assert opt in text


def test_repository_notebooks_have_one_parsable_parameters_cell():
    steps = pipeline.discover_steps()
    assert steps[0].name == "00_data"
    for step in steps:
        params = pipeline.notebook_parameters(step.notebook)
        assert "run_dir" in params, step.name
        nb = json.loads(step.notebook.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), f"{step.name} has outputs"
        assert "parameters" in code[0]["metadata"].get("tags", []), f"{step.name}: parameters must be the first code cell"


def _one_step(tmp_path: Path, name: str, params: str, body: str) -> tuple[Path, Path]:
    """A project of one notebook ``name`` and an empty config: ``(notebooks folder, config)``."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(nbs / f"{name}.ipynb", params, body)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("{}\n")
    return nbs, cfg


def test_a_step_reruns_when_a_file_it_reads_is_replaced(tmp_path):
    """Issue 23 item 20: after 03_train/predictions/ was replaced by hand, `--only 07_histology` called the
    step unchanged and kept the old tables. The files a step reads are part of its fingerprint."""
    nbs, cfg = _one_step(tmp_path, "07_histology", 'run_dir = "x"',
                         "from pathlib import Path\nfiles = sorted(Path(run_dir, '03_train', 'predictions').iterdir())\n"
                         "Path(run_dir, 'seen.txt').write_text(' '.join(f.read_text() for f in files))")
    run = tmp_path / "run"
    preds = run / "03_train" / "predictions"
    preds.mkdir(parents=True)
    (preds / "A.nii.gz").write_text("ours")
    first = pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, echo=lambda m: None)
    assert first.executed == ["07_histology"] and (run / "seen.txt").read_text() == "ours"
    again = pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, echo=lambda m: None)
    assert again.skipped == ["07_histology"]
    (preds / "A.nii.gz").write_text("another model's")  # dropped in by hand
    third = pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, only=["07"], echo=lambda m: None)
    assert third.executed == ["07_histology"] and (run / "seen.txt").read_text() == "another model's"
    (preds / "B.nii.gz").write_text("new case")
    assert pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, echo=lambda m: None).executed == ["07_histology"]


def test_a_step_that_skips_its_work_says_so_on_the_terminal(tmp_path):
    """Issue 23 item 12: a skipped 07/08 said "done"; the skip was only in skipped.json."""
    nbs, cfg = _one_step(tmp_path, "08_fusion", 'run_dir = "x"\nskip = True',
                         "import json\nfrom pathlib import Path\nout = Path(run_dir, '08_fusion')\nout.mkdir(exist_ok=True)\n"
                         "if skip:\n    (out / 'skipped.json').write_text(json.dumps({'reason': 'no ctc_level column'}))")
    run, lines = tmp_path / "run", []
    pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, echo=lines.append)
    said = [line for line in lines if "08_fusion:" in line][-1]
    assert "08_fusion: SKIPPED by the notebook (no ctc_level column) in " in said and ": done" not in said
    assert json.loads((run / "run.json").read_text())["steps"]["08_fusion"]["skipped_reason"] == "no ctc_level column"
    lines.clear()  # the same step doing its work: the earlier skipped.json is gone and it says done
    pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, overrides={"skip": False}, echo=lines.append)
    assert any("08_fusion: done in " in line for line in lines) and not (run / "08_fusion" / "skipped.json").exists()
    assert "skipped_reason" not in json.loads((run / "run.json").read_text())["steps"]["08_fusion"]


def test_a_run_folder_made_by_another_library_version_reruns_once_then_is_skipped(project, tmp_path, monkeypatch):
    """The README's promise for run folders made before the subpackage move (issue 24): moving a module
    (same bytes, another path) changes the library hash; a changed hash re-runs every step once, and
    the next run skips them all."""
    pkg = tmp_path / "pkg"
    (pkg / "evaluation").mkdir(parents=True)
    (pkg / "metrics.py").write_text("x = 1\n")
    flat = pipeline.library_hash(pkg)
    (pkg / "metrics.py").rename(pkg / "evaluation" / "metrics.py")
    moved = pipeline.library_hash(pkg)
    assert moved != flat
    (pkg / "evaluation" / "notes.txt").write_text("not code")
    assert pipeline.library_hash(pkg) == moved  # only .py, .yaml and .json files count

    nbs, cfg = project
    run = tmp_path / "run"
    pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, echo=lambda m: None)
    monkeypatch.setattr(pipeline, "library_hash", lambda: "another version of amtlib")
    first = pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, echo=lambda m: None)
    second = pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, echo=lambda m: None)
    assert first.executed == ["00_make", "01_use"] and second.executed == [] and second.skipped == ["00_make", "01_use"]
