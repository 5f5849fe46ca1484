"""Fault injection (issue 11): every re-run, bad argument and interruption ends in the right answer or a
clear refusal. One test (or more) per item of the issue, named ``test_item<N>_...``; each failed on the
code before the fix.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_pipeline import _notebook  # the one tiny-notebook writer of the runner tests
import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import make_run  # noqa: E402

from amtlib import cli, pipeline  # noqa: E402
from amtlib.evaluation import evaluate, lesions
from amtlib import manifest as mf  # noqa: E402
from amtlib.errors import AmtError, type_problem  # noqa: E402
from amtlib.io import affine_from_spacing, save_nifti, sha256_file, write_text  # noqa: E402
from amtlib.segmentation.train import TrainConfig, prepare_data, save_checkpoint, train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
AMT = [PYTHON, "-m", "amtlib.cli"]
TINY = dict(spacing_mm=(5.0, 8.0, 8.0), patch=(8, 16, 16), base_width=2, blocks_per_level=1, iterations=6, eval_every=3,
            workers=1, device="cpu")


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture()
def toy(tmp_path: Path) -> tuple[Path, Path]:
    """Two tiny steps: 00 writes value*2 (after ``pause`` s) and copies a 'figure' to figures_dir; 01 adds offset."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(nbs / "00_make.ipynb", 'run_dir = "x"\nvalue = 1\npause = 0.0\nfigures_dir = "figures"',
              "import time\nfrom pathlib import Path\nPath(run_dir, 'a.txt').write_text(str(value * 2))\n"
              "time.sleep(pause)\n"
              "if figures_dir:\n    Path(figures_dir).mkdir(parents=True, exist_ok=True)\n"
              "    Path(figures_dir, 'fig.txt').write_text('figure')")
    _notebook(nbs / "01_use.ipynb", 'run_dir = "x"\noffset = 0',
              "from pathlib import Path\nv = int(Path(run_dir, 'a.txt').read_text())\n"
              "Path(run_dir, 'b.txt').write_text(str(v + offset))")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"value: 5\noffset: 3\nfigures_dir: {tmp_path / 'figs'}\n")
    return nbs, cfg


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    run_dir = make_run(tmp_path_factory.mktemp("run"), n_train=4, n_tuning=2, n_test=2, shape=(16, 40, 36), spacing=(5.0, 4.0, 4.0))
    cfg = TrainConfig(**TINY)
    return prepare_data(run_dir / "01_cohort/manifest.csv", run_dir / "02_split/split.csv", cfg, tmp_path_factory.mktemp("cache"))


def _train(data, out: Path, **kw) -> object:
    stop = kw.pop("stop_after", None)
    return train(data.train, data.tuning, TrainConfig(**{**TINY, **kw}), out, data.norm, progress=False, stop_after=stop)


SHAPE = (4, 16, 16)
AFFINE = affine_from_spacing((5.0, 1.0, 1.0))


def _block(value: int = 1, y1: int = 8) -> np.ndarray:
    m = np.zeros(SHAPE, np.uint8)
    m[1:3, 2:y1, 2:8] = value
    return m


def _eval(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(["evaluate", *argv, "--bootstrap", "50", "--no-progress"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture()
def masks(tmp_path: Path) -> tuple[Path, Path]:
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    for c in "abc":
        save_nifti(_block(), AFFINE, ref / f"{c}.nii.gz")
        save_nifti(_block(y1=5), AFFINE, pred / f"{c}.nii.gz")
    return pred, ref


# -------------------------------------------------------------------- 1. resume keyed on every setting


def test_item1_shorter_run_after_longer_one_retrains_instead_of_keeping_the_old_model(data, tmp_path):
    _train(data, tmp_path / "run")  # 6 iterations, evaluated at 3 and 6
    with pytest.warns(UserWarning, match=r"not resumed: .*iterations: checkpoint 6 vs config 2"):
        short = _train(data, tmp_path / "run", iterations=2, eval_every=1)
    assert short.log["iteration"].tolist() == [1, 2] and short.resumed_from == 0
    model = torch.load(tmp_path / "run/model.pt", weights_only=True)
    assert model["iteration"] <= 2
    _train(data, tmp_path / "fresh", iterations=2, eval_every=1)
    assert (tmp_path / "run/model.pt").read_bytes() == (tmp_path / "fresh/model.pt").read_bytes()
    notices = (tmp_path / "run/notices.txt").read_text()
    assert "not resumed" in notices and "training starts afresh" in notices


def test_item1_eval_every_change_is_not_resumed(data, tmp_path):
    _train(data, tmp_path, stop_after=2)
    with pytest.warns(UserWarning, match="eval_every: checkpoint 3 vs config 2"):
        res = _train(data, tmp_path, eval_every=2)
    assert res.log["iteration"].tolist() == [2, 4, 6]


def test_item1_resume_is_reported_for_the_terminal(data, tmp_path):
    _train(data, tmp_path, stop_after=4)
    (tmp_path / "notices.txt").unlink(missing_ok=True)
    res = _train(data, tmp_path)
    assert res.resumed_from == 4
    assert "resumed from" in (tmp_path / "notices.txt").read_text() and "iteration 4 of 6" in (tmp_path / "notices.txt").read_text()


def test_item1_runner_shows_a_steps_notices_on_the_terminal(toy, tmp_path):
    nbs, cfg = toy
    _notebook(nbs / "02_note.ipynb", 'run_dir = "x"',
              "from pathlib import Path\nd = Path(run_dir, '02_note'); d.mkdir(exist_ok=True)\n"
              "(d / 'notices.txt').write_text('resumed from last.pt at iteration 250 of 300\\n')")
    lines: list[str] = []
    pipeline.run_pipeline(cfg, out=tmp_path / "run", notebooks_dir=nbs, echo=lines.append)
    assert "[3/3] 02_note: resumed from last.pt at iteration 250 of 300" in lines
    rec = json.loads((tmp_path / "run/run.json").read_text())
    assert rec["steps"]["02_note"]["notices"] == ["resumed from last.pt at iteration 250 of 300"]


# ------------------------------------------------------------------ 2. amt evaluate --out owns outputs


def test_item2_reused_evaluate_out_keeps_no_stale_tables(masks, tmp_path, capsys):
    pred, ref = masks
    clinical = tmp_path / "clinical.csv"
    pd.DataFrame({"case_id": list("abc"), "manufacturer": ["SIEMENS"] * 3, "histology": ["thymoma"] * 3}).to_csv(clinical, index=False)
    out = tmp_path / "out"
    rc, _, err = _eval(["--pred", str(pred), "--ref", str(ref), "--out", str(out), "--clinical", str(clinical)], capsys)
    assert rc == 0 and (out / "table3.csv").is_file(), err
    other = tmp_path / "pred2"
    for c in "abc":
        save_nifti(_block(), AFFINE, other / f"{c}.nii.gz")
    rc, _, err = _eval(["--pred", str(other), "--ref", str(ref), "--out", str(out)], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["froc.csv", "lesion_counts.csv", "per_case.csv", "summary.json"]
    assert json.loads((out / "summary.json").read_text())["outputs"] == ["froc.csv", "lesion_counts.csv", "per_case.csv"]
    assert pd.read_csv(out / "per_case.csv")["dice"].tolist() == [1.0, 1.0, 1.0]


def test_item2_evaluate_refuses_an_out_folder_with_other_files(masks, tmp_path, capsys):
    pred, ref = masks
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.docx").write_text("precious")
    rc, _, err = _eval(["--pred", str(pred), "--ref", str(ref), "--out", str(out)], capsys)
    assert rc == 2 and "thesis.docx" in err and "did not write" in err
    assert sorted(p.name for p in out.iterdir()) == ["thesis.docx"]


# ------------------------------------------------------------------- 3. --label for predictions only


def test_item3_label_applies_to_predictions_only(tmp_path, capsys):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    save_nifti(_block(value=2), AFFINE, pred / "a.nii.gz")
    save_nifti(_block(value=1), AFFINE, ref / "a.nii.gz")
    rc, _, err = _eval(["--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "o"), "--label", "2"], capsys)
    assert rc == 0, err
    row = pd.read_csv(tmp_path / "o/per_case.csv").iloc[0]
    assert row["dice"] == 1.0 and row["recall"] == 1.0
    # references with another label need --ref-label; the error says so
    save_nifti(_block(value=3), AFFINE, ref / "a.nii.gz")
    rc, _, err = _eval(["--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "o"), "--label", "2"], capsys)
    assert rc == 2 and "--ref-label" in err
    rc, _, err = _eval(["--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "o"), "--label", "2", "--ref-label", "3"], capsys)
    assert rc == 0 and pd.read_csv(tmp_path / "o/per_case.csv")["dice"].tolist() == [1.0]


def test_item3_a_label_no_voxel_has_is_warned(tmp_path):
    save_nifti(_block(value=1), AFFINE, tmp_path / "a.nii.gz")
    with pytest.warns(UserWarning, match="no voxel has label 2"):
        m, _, _ = evaluate.load_mask(tmp_path / "a.nii.gz", label=2)
    assert not m.any()


# -------------------------------------------------------- 4. empty, misnamed, nested prediction folders


@pytest.mark.parametrize("layout, expect", [
    ("empty", "holds no NIfTI files"),
    ("misnamed", "none of its 3 NIfTI files is named after a reference case (e.g. a_pred.nii.gz"),
    ("nested", "subfolders with NIfTI files: fold0/"),
])
def test_item4_prediction_folder_matching_no_case_is_refused(masks, tmp_path, capsys, layout, expect):
    _, ref = masks
    pred = tmp_path / layout
    pred.mkdir()
    for c in "abc":
        if layout == "misnamed":
            save_nifti(_block(), AFFINE, pred / f"{c}_pred.nii.gz")
        elif layout == "nested":
            save_nifti(_block(), AFFINE, pred / "fold0" / f"{c}.nii.gz")
    rc, _, err = _eval(["--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and expect in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_item4_partial_match_is_reported_loudly(masks, tmp_path, capsys):
    pred, ref = masks
    (pred / "b.nii.gz").unlink()
    (pred / "c.nii.gz").unlink()
    rc, out, err = _eval(["--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "o")], capsys)
    assert rc == 0
    assert "2 of 3 reference cases have NO prediction" in err and "b, c" in err
    assert "(2 without prediction) scored as empty" in out


# --------------------------------------------------------------- 5. hard-linked copies are not written


def test_item5_run_into_a_hardlinked_copy_leaves_the_original_untouched(toy, tmp_path):
    nbs, cfg = toy
    original = tmp_path / "run"
    pipeline.run_pipeline(cfg, out=original, notebooks_dir=nbs, echo=_quiet)
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-al", str(original), str(copy)], check=True)
    watched = ["run.log", "run.json", "config.yaml", "notebooks/00_make.ipynb", "notebooks/01_use.ipynb"]
    before = {f: (original / f).read_bytes() for f in watched}
    pipeline.run_pipeline(cfg, out=copy, notebooks_dir=nbs, overrides={"value": 7}, force=True, echo=_quiet)
    assert (copy / "b.txt").read_text() == "17"
    for f in watched:
        assert (original / f).read_bytes() == before[f], f
        assert (copy / f).read_bytes() != before[f], f  # the copy got its own, new files


# ---------------------------------------------------------------------------------- 6. run-folder lock


def test_item6_a_second_run_into_a_locked_folder_is_refused_and_the_lock_dies_with_its_holder(toy, tmp_path):
    nbs, cfg = toy
    run = tmp_path / "run"
    holder = subprocess.Popen([PYTHON, "-c", "import sys, time\nfrom amtlib.io import folder_lock\n"
                               f"with folder_lock({str(run)!r}):\n    print('locked', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(AmtError, match=rf"in use by another amt run or amt train \(pid {holder.pid}"):
            pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, echo=_quiet)
        assert not (run / "run.json").exists()
    finally:
        holder.kill()  # kill -9: the kernel releases the lock
        holder.wait()
    res = pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, echo=_quiet)
    assert res.executed == ["00_make", "01_use"]


# ------------------------------------------------------------------------------ 7. manifest validate


def _manifest(base: Path, ids=("A", "B"), mask_value: int = 1, shape=(3, 4, 5)) -> Path:
    rows = []
    rng = np.random.default_rng(0)
    for cid in ids:
        img = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
        mask = np.zeros(shape, np.uint8)
        mask[1, 1:3, 1:3] = mask_value
        if shape != (3, 4, 5):  # a big, incompressible mask: its header survives a truncation
            mask = (rng.random(shape) < 0.5).astype(np.uint8)
        name = cid.strip()
        save_nifti(img, AFFINE, base / "images" / f"{name}.nii.gz")
        save_nifti(mask, AFFINE, base / "masks" / f"{name}.nii.gz")
        rows.append({"case_id": cid, "patient_id": name, "institution": "CENTRAL", "study_uid": f"1.{name}",
                     "series_uid": f"2.{name}{len(rows)}", "image_path": f"images/{name}.nii.gz",
                     "mask_path": f"masks/{name}.nii.gz", "anatomy_path": "", "histology": "thymoma", "age": "60",
                     "sex": "F", "manufacturer": "X", "model_name": "Y", "kvp": "120", "slice_thickness_mm": "5",
                     "spacing_z": "5.0", "spacing_y": "1.0", "spacing_x": "1.0", "shape_z": str(shape[0]),
                     "shape_y": str(shape[1]), "shape_x": str(shape[2]), "image_sha256": sha256_file(base / "images" / f"{name}.nii.gz"),
                     "mask_sha256": sha256_file(base / "masks" / f"{name}.nii.gz"), "split": ""})
    pd.DataFrame(rows, columns=list(mf.COLUMN_NAMES)).to_csv(base / "manifest.csv", index=False)
    return base / "manifest.csv"


def _truncate(path: Path, keep: float = 0.6) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def test_item7_truncated_image_fails_even_when_its_checksum_matches(tmp_path):
    _manifest(tmp_path)
    img = tmp_path / "images/A.nii.gz"
    big = np.arange(40 * 64 * 64, dtype=np.int16).reshape(40, 64, 64)  # a header that survives truncation
    save_nifti(big, AFFINE, img)
    _truncate(img)
    df = mf.read_manifest(tmp_path / "manifest.csv")
    df.loc[0, ["image_sha256", "shape_z", "shape_y", "shape_x"]] = [sha256_file(img), "40", "64", "64"]
    df.to_csv(tmp_path / "manifest.csv", index=False)
    msgs = [str(i) for i in mf.validate_manifest(tmp_path / "manifest.csv", geometry=False)]
    assert any("A.nii.gz" in m and "truncated" in m for m in msgs), msgs


def test_item7_truncated_mask_is_a_named_problem_not_a_traceback(tmp_path, capsys):
    m = _manifest(tmp_path, shape=(20, 64, 64))
    mask = tmp_path / "masks/B.nii.gz"
    _truncate(mask)  # the header still reads; the voxel data ends early
    rc = cli.main(["manifest", "validate", str(m), "--no-checksums"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and "B.nii.gz" in err and ("truncated" in err or "unreadable" in err), err


def test_item7_padded_duplicate_ids_and_empty_masks_are_refused(tmp_path):
    m = _manifest(tmp_path, ids=("PT0001", " PT0001"))
    msgs = [str(i) for i in mf.validate_manifest(m)]
    assert any("case_id" in x and "leading or trailing spaces" in x for x in msgs), msgs
    assert any("case_id" in x and "duplicate value" in x for x in msgs), msgs
    m = _manifest(tmp_path / "zero", mask_value=0)
    msgs = [str(i) for i in mf.validate_manifest(m)]
    assert sum("mask is empty" in x for x in msgs) == 2, msgs


# ------------------------------------------------------------ 8. truncated checkpoint; re-run hints


def test_item8_truncated_checkpoint_is_a_named_error_with_a_remedy(data, tmp_path):
    _train(data, tmp_path, stop_after=2)
    _truncate(tmp_path / "checkpoints/last.pt", 0.5)
    with pytest.raises(AmtError) as err:
        _train(data, tmp_path)
    text = str(err.value)
    assert str(tmp_path / "checkpoints/last.pt") in text and "truncated or corrupt" in text and "delete it" in text


def test_item8_step_failure_hint_is_a_command_that_runs(toy, tmp_path):
    nbs, cfg = toy
    _notebook(nbs / "02_fail.ipynb", 'run_dir = "x"', "raise ValueError('planted')")
    run = tmp_path / "r"
    with pytest.raises(pipeline.StepFailed) as err:
        pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, overrides={"value": 4}, echo=_quiet)
    hint = str(err.value).split("re-run this step alone with `")[1].split("`")[0]
    assert f"--config {cfg}" in hint and f"--out {run.resolve()}" in hint and "--only 02_fail" in hint
    assert "-p value=4" in hint


# --------------------------------------------------------------------- 9. messages, not tracebacks


def test_item9_evaluate_out_that_is_a_file_is_refused_before_scoring(masks, tmp_path, capsys, monkeypatch):
    pred, ref = masks
    monkeypatch.setattr(evaluate, "evaluate_cases", lambda *a, **k: pytest.fail("scored before checking --out"))
    (tmp_path / "afile").write_text("x")
    rc, _, err = _eval(["--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "afile")], capsys)
    assert rc == 2 and "is a file" in err and "Traceback" not in err


def test_item9_evaluate_unwritable_out_is_refused_before_scoring(masks, tmp_path, capsys, monkeypatch):
    pred, ref = masks
    out = tmp_path / "ro"
    out.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: make the probe fail as a read-only folder would
        def refuse(*a, dir=None, **k):
            raise PermissionError(13, "Permission denied", str(dir))
        monkeypatch.setattr("tempfile.mkstemp", refuse)
    else:
        out.chmod(0o555)
    monkeypatch.setattr(evaluate, "evaluate_cases", lambda *a, **k: pytest.fail("scored before checking --out"))
    rc, _, err = _eval(["--pred", str(pred), "--ref", str(ref), "--out", str(out)], capsys)
    out.chmod(0o755)
    assert rc == 2 and "cannot write into --out" in err and "Traceback" not in err


def test_item9_disk_full_while_writing_is_one_line_and_leaves_no_summary(masks, tmp_path, capsys, monkeypatch):
    pred, ref = masks

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluate, "write_outputs", full)
    rc, _, err = _eval(["--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "No space left on device" in err and "free disk space" in err and "Traceback" not in err
    assert not (tmp_path / "o/summary.json").exists()


def test_item9_amt_train_argument_errors_are_messages_and_create_nothing(tmp_path, capsys):
    rc = cli.main(["train", "--run-dir", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert rc == 2 and "run folder not found" in err and "Traceback" not in err
    assert not (tmp_path / "missing").exists()
    run = make_run(tmp_path / "run", n_train=2, n_tuning=1, n_test=1, shape=(8, 16, 16))
    for argv, expect in [(["--set", "train_iterations=abc"], "train_iterations: 'abc' is a string, expected an integer"),
                         (["--set", "train_iterations=2.5"], "train_iterations: 2.5 is a number, expected an integer"),
                         (["--set", "train_iteratons=5"], "did you mean train_iterations?"),
                         (["--config", str(tmp_path / "nope.yaml")], "config file not found")]:
        rc = cli.main(["train", "--run-dir", str(run), *argv])
        err = capsys.readouterr().err
        assert rc == 2 and expect in err and "Traceback" not in err, (argv, err)
    assert not (run / "03_train").exists()


@pytest.mark.parametrize("value, expect", [("abc", "'abc' is a string"), ("2.5", "2.5 is a number"), ("true", "True is true/false")])
def test_item9_wrong_parameter_type_names_the_key_before_any_step(tmp_path, capsys, value, expect):
    out = tmp_path / "r"
    rc = cli.main(["run", "--config", str(ROOT / "configs/smoke.yaml"), "--out", str(out), "-p", f"train_iterations={value}"])
    err = capsys.readouterr().err
    assert rc == 2 and "parameter train_iterations" in err and expect in err and "03_train" in err
    assert not out.exists()


def test_item9_type_rule():
    assert type_problem(5, 20000) is None and type_problem(0.1, 1) is not None and type_problem(True, 1) is not None
    assert type_problem(1, 0.5) is None and type_problem("x", 0.5) is not None
    assert type_problem([8, 16, 16], [48, 128, 128]) is None and type_problem([8, 16.5, 16], [48, 128, 128]) is not None
    assert type_problem([0.1, 0.5], None) is None and type_problem(None, "figures") is None


# ------------------------------------------------------------------------ 10. interrupted runs


def _amt_run(cfg: Path, nbs: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([*AMT, "run", "--config", str(cfg), "--out", str(out), "--notebooks", str(nbs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=ROOT)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.2)
    time.sleep(1.0)


@pytest.mark.slow
def test_item10_ctrl_c_marks_the_run_interrupted_and_prints_one_line(toy, tmp_path):
    nbs, cfg = toy
    cfg.write_text(cfg.read_text() + "pause: 60\n")
    run = tmp_path / "run"
    proc = _amt_run(cfg, nbs, run)
    _wait_for(run / "a.txt", proc)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["amt run: interrupted"], err
    rec = json.loads((run / "run.json").read_text())
    assert rec["status"] == "interrupted" and rec["steps"]["00_make"]["status"] == "interrupted"
    assert "INTERRUPTED" in (run / "run.log").read_text() and "INTERRUPTED" in out


@pytest.mark.slow
def test_item10_a_killed_run_is_marked_by_the_next_run(toy, tmp_path):
    nbs, cfg = toy
    run = tmp_path / "run"
    slow = tmp_path / "slow.yaml"
    slow.write_text(cfg.read_text() + "pause: 60\n")
    proc = _amt_run(slow, nbs, run)
    _wait_for(run / "a.txt", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # nobody could write otherwise
    pipeline.run_pipeline(cfg, out=run, notebooks_dir=nbs, echo=_quiet)
    log = (run / "run.log").read_text()
    assert "was killed during 00_make; marked interrupted" in log
    assert json.loads((run / "run.json").read_text())["status"] == "ok"


# --------------------------------------------------------------------------------- 11. file modes


def test_item11_artifacts_get_the_usual_permissions(data, tmp_path):
    from amtlib.figures import save_figure

    old = os.umask(0o022)
    try:
        files = [write_text(tmp_path / "a.txt", "x"), save_nifti(_block(), AFFINE, tmp_path / "m.nii.gz"),
                 save_checkpoint(tmp_path / "c.pt", {"a": 1})]
        import matplotlib.pyplot as plt

        fig = plt.figure()
        files += save_figure(fig, tmp_path / "f", copy_to=tmp_path / "figs")
        plt.close(fig)
        files += [tmp_path / "figs/f.png"]
        for f in files:
            assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
    finally:
        os.umask(old)


# ----------------------------------------------------------------------- 12. byte-identical model


def test_item12_model_pt_is_byte_identical_between_identical_runs(data, tmp_path):
    _train(data, tmp_path / "a")
    _train(data, tmp_path / "b")
    assert (tmp_path / "a/model.pt").read_bytes() == (tmp_path / "b/model.pt").read_bytes()
    assert (tmp_path / "a/train_log.csv").read_bytes() == (tmp_path / "b/train_log.csv").read_bytes()


# ------------------------------------------------------------------------------------- 13. minor


def _lattice(n_z: int, n_y: int, n_x: int) -> np.ndarray:
    """n_z * n_y * n_x separate 2x2x3-voxel components on a 3x3x4 lattice."""
    m = np.zeros((3 * n_z, 3 * n_y, 4 * n_x), bool)
    for dz in range(2):
        for dy in range(2):
            for dx in range(3):
                m[dz::3, dy::3, dx::4] = True
    return m


@pytest.mark.timeout(120)
def test_item13_lesion_matching_memory_grows_with_overlaps_not_components_squared():
    ref = _lattice(8, 30, 30)  # 7,200 components: a dense 7,201^2 table is 0.4 GB per array
    pred = ref.copy()
    tracemalloc.start()
    row, counts = evaluate.score_case(pred, ref, (1.0, 1.0, 1.0))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert row["n_ref_lesions"] == row["n_pred_lesions"] == 7200
    assert counts["tp"].tolist() == [7200] * 19 and counts["fp"].sum() == counts["fn"].sum() == 0
    assert peak < 150 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_item13_sparse_matching_equals_dense_matching_on_random_label_images():
    rng = np.random.default_rng(7)
    for trial in range(40):
        pred = rng.random((6, 12, 12)) < rng.uniform(0.2, 0.5)
        ref = rng.random((6, 12, 12)) < rng.uniform(0.2, 0.5)
        pl, n_pred = lesions.label_components(pred, 6)
        rl, n_ref = lesions.label_components(ref, 6)
        dense_iou, _, dense_ref = lesions.lesion_iou(lesions.overlap_table(pl, n_pred, rl, n_ref), 3)
        ov = lesions.sparse_overlap(pl, n_pred, rl, n_ref)
        sparse_iou, _, ref_sizes = lesions.sparse_lesion_iou(ov, 3)
        np.testing.assert_allclose(sparse_iou.toarray(), dense_iou)
        np.testing.assert_array_equal(ref_sizes, dense_ref)
        for a, b in zip(lesions.detection_counts(sparse_iou), lesions.detection_counts(dense_iou)):
            np.testing.assert_array_equal(a, b)


def test_item13_nii_beside_nii_gz_is_refused(masks, tmp_path, capsys):
    pred, ref = masks
    save_nifti(_block(), AFFINE, pred / "a.nii")
    rc, _, err = _eval(["--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "case a is there twice: a.nii and a.nii.gz" in err


def test_item13_only_an_unknown_step_creates_nothing(tmp_path, capsys):
    out = tmp_path / "r"
    rc = cli.main(["run", "--config", str(ROOT / "configs/smoke.yaml"), "--out", str(out), "--only", "NOSUCHSTEP"])
    assert rc == 2 and "unknown step" in capsys.readouterr().err
    assert not out.exists()


def test_item13_mistyped_p_key_is_an_error_naming_the_nearest_key(toy, tmp_path):
    nbs, cfg = toy
    with pytest.raises(AmtError, match="-p ofset: no notebook declares this parameter; did you mean offset"):
        pipeline.run_pipeline(cfg, out=tmp_path / "r", notebooks_dir=nbs, overrides={"ofset": 1}, echo=_quiet)
    assert not (tmp_path / "r").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pipeline.run_pipeline(cfg, out=tmp_path / "r", notebooks_dir=nbs, overrides={"ofset": 1},
                                    allow_unknown=True, echo=_quiet)
    assert res.executed == ["00_make", "01_use"]


def test_item13_a_scratch_run_does_not_overwrite_the_configs_figures(toy, tmp_path, monkeypatch):
    nbs, cfg = toy
    figs = tmp_path / "figs"
    lines: list[str] = []
    pipeline.run_pipeline(cfg, out=tmp_path / "scratch", notebooks_dir=nbs, echo=lines.append)
    assert not figs.exists()
    assert any("figures stay in the run folder" in ln for ln in lines)
    # the config's default run folder (runs/<config name>) does use it
    monkeypatch.setattr(pipeline, "REPO_ROOT", tmp_path)
    pipeline.run_pipeline(cfg, notebooks_dir=nbs, echo=_quiet)
    assert (tmp_path / "runs/cfg/a.txt").is_file() and (figs / "fig.txt").is_file()
    # and -p figures_dir asks for a copy from anywhere
    pipeline.run_pipeline(cfg, out=tmp_path / "s2", notebooks_dir=nbs, overrides={"figures_dir": str(tmp_path / "f2")}, echo=_quiet)
    assert (tmp_path / "f2/fig.txt").is_file()


def test_truncated_model_file_is_named_with_the_remedy(tmp_path: Path) -> None:
    """infer.load_model (notebooks 03-06, amt export) on a truncated model.pt: the file and what to do."""
    from amtlib.errors import AmtError
    from amtlib.segmentation.infer import load_model

    path = tmp_path / "model.pt"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(AmtError, match=r"model\.pt.*unreadable model file, truncated or corrupt.*03_train"):
        load_model(path)


def test_amt_error_raised_in_a_worker_process_arrives_whole():
    """An AmtError crosses a process boundary pickled (evaluate/export/cohort workers): it must come back
    with its file, problem and remedy, not break the pool ("terminated abruptly")."""
    import pickle
    from concurrent.futures import ProcessPoolExecutor

    e = pickle.loads(pickle.dumps(AmtError("a.dcm", "no segment", "set --segment")))
    assert (e.file, e.problem, e.remedy, str(e)) == ("a.dcm", "no segment", "set --segment", "a.dcm: no segment; set --segment")
    with ProcessPoolExecutor(max_workers=1) as pool:
        with pytest.raises(AmtError, match=r"^x\.nii: bad; fix it$"):
            pool.submit(_raise_amt_error).result()


def _raise_amt_error() -> None:
    raise AmtError("x.nii", "bad", "fix it")


def test_ctrl_c_while_a_command_loads_is_one_line(monkeypatch, capsys):
    """Issue 23 item 11: Ctrl-C in the first second of `amt evaluate` (its libraries loading) printed a
    KeyboardInterrupt traceback; the import now runs under the guard."""
    import importlib

    from amtlib import cli

    real = importlib.import_module

    def interrupted(name, *args):
        if name == "amtlib.evaluation.evaluate":
            raise KeyboardInterrupt
        return real(name, *args)

    monkeypatch.setattr(cli.importlib, "import_module", interrupted)
    assert cli.main(["evaluate", "--help"]) == 130
    assert capsys.readouterr().err == "amt evaluate: interrupted\n"
