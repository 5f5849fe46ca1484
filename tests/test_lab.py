"""Issue 26, JupyterLab as a teacher: `make lab` as root, notebooks that Lab opens and saves without
dirtying git, and a notebook run in Lab recorded in its run folder's run.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amtlib import pipeline

REPO = Path(__file__).resolve().parent.parent


def _run_folder(tmp_path: Path, status: str = "ok") -> Path:
    run = tmp_path / "runs" / "demo"
    (run / "04_evaluate").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": status, "steps": {
        "04_evaluate": {"status": "ok", "fingerprint": "abc", "ended": "2026-01-01T00:00:00+00:00"}}}))
    return run


def test_record_interactive_run_marks_the_step_and_refuses_a_running_folder(tmp_path):
    run = _run_folder(tmp_path)
    assert pipeline.record_interactive_run(run, "04_evaluate", {"run_dir": "runs/demo", "bad": object()},
                                           "notebooks/04_evaluate.ipynb", "2026-02-02T10:00:00+00:00")
    rec = json.loads((run / "run.json").read_text())
    entry = rec["steps"]["04_evaluate"]
    assert entry["executed_in"] == "jupyterlab" and entry["fingerprint"] == pipeline.LAB_FINGERPRINT
    assert entry["parameters"] == {"run_dir": "runs/demo"} and entry["started"] == "2026-02-02T10:00:00+00:00"
    assert rec["changed_in_jupyterlab"] == entry["ended"] and entry["status"] == "ok"
    busy = _run_folder(tmp_path / "b", status="running")
    before = (busy / "run.json").read_text()
    assert not pipeline.record_interactive_run(busy, "04_evaluate", {})
    assert (busy / "run.json").read_text() == before
    assert not pipeline.record_interactive_run(tmp_path / "nowhere", "04_evaluate", {})


class _FakeShell:
    def __init__(self, ns: dict):
        self.user_ns = ns
        self.callbacks: list = []
        self.events = self

    def register(self, event: str, fn) -> None:
        assert event == "post_run_cell"
        self.callbacks.append(fn)


def test_the_lab_extension_records_after_the_cell_that_wrote_the_step(tmp_path, monkeypatch):
    run = _run_folder(tmp_path)
    monkeypatch.setenv("JPY_SESSION_NAME", str(REPO / "notebooks" / "04_evaluate.ipynb"))
    monkeypatch.delenv("PAPERMILL_INPUT_PATH", raising=False)
    ip = _FakeShell({"run_dir": str(run), "eval_split": "external_test"})
    pipeline.load_ipython_extension(ip)
    (after,) = ip.callbacks
    after(None)  # a cell that wrote nothing into 04_evaluate/
    assert json.loads((run / "run.json").read_text())["steps"]["04_evaluate"]["fingerprint"] == "abc"
    (run / "04_evaluate" / "table3.csv").write_text("x\n")
    after(None)
    entry = json.loads((run / "run.json").read_text())["steps"]["04_evaluate"]
    assert entry["executed_in"] == "jupyterlab" and entry["parameters"]["eval_split"] == "external_test"
    assert "run_dir" in entry["parameters"]
    # another notebook name (not a pipeline step) registers nothing
    monkeypatch.setenv("JPY_SESSION_NAME", "scratch.ipynb")
    other = _FakeShell({})
    pipeline.load_ipython_extension(other)
    assert other.callbacks == []


def test_lab_kernel_loads_the_recorder_and_matches_the_tracked_kernelspec():
    spec = json.loads((REPO / "tools" / "jupyter" / "kernels" / "python3" / "kernel.json").read_text())
    assert "--ext=amtlib.pipeline" in spec["argv"] and spec["argv"][0] == "python"
    sys.path.insert(0, str(REPO / "tools"))
    import nbclean
    import py2nb

    assert nbclean.LAB_METADATA["kernelspec"]["display_name"] == spec["display_name"]
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        assert json.loads(nb.read_text())["metadata"] == nbclean.LAB_METADATA, nb.name
    assert py2nb.convert("# %%\nx = 1\n").metadata == nbclean.LAB_METADATA  # a rebuilt notebook too


def test_nbclean_accepts_lab_metadata_of_another_python_but_not_outputs(tmp_path):
    nb = json.loads((REPO / "notebooks" / "02_split.ipynb").read_text())
    nb["metadata"]["language_info"]["version"] = "3.13.1"
    p = tmp_path / "nb.ipynb"
    p.write_text(json.dumps(nb))
    check = [sys.executable, str(REPO / "tools" / "nbclean.py"), "--check", str(p)]
    assert subprocess.run(check, capture_output=True).returncode == 0
    nb["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["x"]}]
    p.write_text(json.dumps(nb))
    assert subprocess.run(check, capture_output=True).returncode == 1


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX only")
def test_make_lab_adds_allow_root_only_for_root():
    r = subprocess.run(["make", "-n", "-W", "pyproject.toml", "lab"], cwd=REPO, capture_output=True, text=True)
    lab = [line for line in r.stdout.splitlines() if "jupyter lab" in line]
    assert lab and ("--allow-root" in lab[0]) == (os.geteuid() == 0)
    assert "tools/jupyter" in lab[0]


def test_the_report_shows_a_step_run_in_lab(tmp_path):
    from amtlib import report

    run = _run_folder(tmp_path)
    assert report.run_summary(run)["steps"]["04_evaluate"]["status"] == "ok"
    pipeline.record_interactive_run(run, "04_evaluate", {}, "notebooks/04_evaluate.ipynb")
    s = report.run_summary(run)
    assert s["steps"]["04_evaluate"]["status"] == "ok (run in JupyterLab)" and s["changed_in_jupyterlab"]
