"""Issue 13: progress lines, batch prefetching, run folders resolved as in JupyterLab, clean notebooks,
byte-identical figures and the viewer's starting position."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from amtlib import paths, progress
from amtlib.segmentation.prefetch import Prefetcher

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------- progress
def test_format_line_hand_computed():
    assert progress.format_line("train", 400, 2400, 80.0, 5.0) == "train: 400/2400 (17%), 5.00 it/s, ETA 6m40s"
    assert progress.format_line("cohort", 47, 47, 7.2, 6.5, "patient") == "cohort: 47/47 (100%), 6.50 patient/s, done in 7s"
    assert progress.format_line("x", 3, None, 1.0, None) == "x: 3"
    assert progress.format_duration(3725) == "1h02m" and progress.format_duration(float("nan")) == "?"


def test_progress_throttles_lines_and_uses_only_this_calls_rate(monkeypatch, tmp_path):
    monkeypatch.setenv(progress.PROGRESS_FILE_ENV, str(tmp_path / "p.log"))
    now = [0.0]
    lines: list[str] = []
    p = progress.Progress(100, "train", initial=20, every_s=10, emit=lines.append, clock=lambda: now[0])
    for _ in range(40):  # 40 items at 0.5 s each: lines at t = 10 and t = 20 only
        now[0] += 0.5
        p.update(1, loss="0.5")
    p.close()
    p.close()
    assert lines[0] == "train: 20/100 (20%)"
    assert lines[1] == "train: 40/100 (40%), 2.00 it/s, ETA 30s, loss 0.5"
    assert lines[2] == "train: 60/100 (60%), 2.00 it/s, ETA 20s, loss 0.5"
    assert len(lines) == 4 and lines[3].startswith("train: 60/100")


def test_plain_lines_go_to_stdout_and_the_progress_file(monkeypatch, tmp_path, capsys):
    log = tmp_path / "p.log"
    monkeypatch.setenv(progress.PROGRESS_FILE_ENV, str(log))
    assert list(progress.track(range(3), desc="cases", unit="case")) == [0, 1, 2]
    out = capsys.readouterr()
    assert out.err == "" and out.out.splitlines()[0] == "cases: 0/3 (0%)"
    assert log.read_text().splitlines()[-1].startswith("cases: 3/3 (100%)")
    assert list(progress.track([1, 2], enabled=False)) == [1, 2] and capsys.readouterr().out == ""


def test_relay_passes_lines_written_by_a_child_process(tmp_path):
    said: list[str] = []
    code = ("from amtlib.progress import track\n"
            "for _ in track(range(2), desc='child'): pass\n")
    with progress.relay(tmp_path / "progress.log", said.append, poll_s=0.05):
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert said == ["    child: 0/2 (0%)", said[1]] and said[1].startswith("    child: 2/2 (100%)")
    assert progress.PROGRESS_FILE_ENV not in os.environ


# --------------------------------------------------------------------------------------------- prefetch
def test_prefetcher_gives_the_same_sequence_in_order():
    seen_threads = set()

    def fn(i: int) -> int:
        seen_threads.add(threading.current_thread().name)
        time.sleep(0.001 * (i % 3))
        return i * i

    assert list(Prefetcher(fn, 3, 12)) == [i * i for i in range(3, 12)]
    assert seen_threads == {"amt-batch-prefetch"}
    assert list(Prefetcher(fn, 0, 4, depth=0)) == [0, 1, 4, 9]
    assert list(Prefetcher(fn, 5, 5)) == []


def test_prefetcher_reraises_at_the_failing_item_and_stops():
    def fn(i: int) -> int:
        if i == 2:
            raise ValueError("bad batch 2")
        return i

    got = []
    with pytest.raises(ValueError, match="bad batch 2"):
        for v in Prefetcher(fn, 0, 10):
            got.append(v)
    assert got == [0, 1]
    p = Prefetcher(lambda i: i, 0, 1000, depth=2)
    it = iter(p)
    assert next(it) == 0
    p.close()  # an abandoned loop does not leave the thread blocked
    assert p._thread is not None and not p._thread.is_alive()


def test_training_with_prefetch_equals_training_without(tmp_path, monkeypatch):
    import amtlib.segmentation.train as T
    from amtlib.segmentation.preprocess import CaseVolume, Normalisation

    rng = np.random.default_rng(0)
    cases = []
    for i in range(3):
        img = rng.normal(0, 100, (12, 24, 24)).astype(np.float32)
        m = np.zeros(img.shape, np.uint8)
        m[4:8, 8:14, 8:14] = 1
        cases.append(CaseVolume(str(i), img, m, img.shape, (5.0, 3.0, 3.0), np.eye(4), -300.0, 300.0, np.flatnonzero(m)))
    cfg = T.TrainConfig(patch=(8, 16, 16), base_width=2, blocks_per_level=1, iterations=6, eval_every=3, device="cpu", workers=1)
    norm = Normalisation(-300.0, 300.0)
    # the CPU makes batches inline and a GPU prefetches them: force each way on the CPU
    monkeypatch.setattr(T, "Prefetcher", lambda fn, s, e, depth=2: Prefetcher(fn, s, e, depth=2))
    a = T.train(cases, cases[:1], cfg, tmp_path / "a", norm, resume=False, progress=False)
    monkeypatch.setattr(T, "Prefetcher", lambda fn, s, e, depth=2: Prefetcher(fn, s, e, depth=0))
    b = T.train(cases, cases[:1], cfg, tmp_path / "b", norm, resume=False, progress=False)
    cols = ["iteration", "train_loss", "tuning_dice"]
    assert a.log[cols].equals(b.log[cols])
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(np.array_equal(sa[k].numpy(), sb[k].numpy()) for k in sa)


# ------------------------------------------------------------------------------------ run folders, Lab
def test_relative_run_dir_is_taken_from_the_project_root(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO / "notebooks")  # where JupyterLab starts a notebook's kernel
    assert paths.RunPaths("runs/demo").root == REPO / "runs" / "demo"
    assert paths.RunPaths(tmp_path / "r").root == (tmp_path / "r").resolve()


def test_figure_copies_go_to_the_project_figures_folder_from_any_working_directory(monkeypatch, tmp_path):
    import matplotlib.pyplot as plt

    from amtlib.figures import save_figure

    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path / "project")
    (tmp_path / "project" / "notebooks").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "project" / "notebooks")
    fig = plt.figure()
    save_figure(fig, tmp_path / "run" / "f", formats=("png",), copy_to="figures")
    plt.close(fig)
    assert (tmp_path / "project" / "figures" / "f.png").is_file()
    assert not (tmp_path / "project" / "notebooks" / "figures").exists()


def test_step_folder_is_not_created_before_its_inputs_exist(tmp_path):
    P = paths.RunPaths(tmp_path / "run")
    with pytest.raises(ValueError, match=r"manifest.csv: not found, so step 04_evaluate cannot run.*01_cohort, 02_split"):
        P.step("04_evaluate")
    assert not (tmp_path / "run" / "04_evaluate").exists()
    assert P.step("04_evaluate", create=False) == P.root / "04_evaluate"
    assert P.step("00_data").is_dir() and P.step("01_cohort").is_dir()


def test_tracked_notebooks_are_clean():
    r = subprocess.run([sys.executable, str(REPO / "tools" / "nbclean.py"), "--check",
                        *map(str, sorted((REPO / "notebooks").glob("*.ipynb")))], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_nbclean_strips_what_lab_adds(tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    import nbclean

    nb = json.loads((REPO / "notebooks" / "04_evaluate.ipynb").read_text())
    lab = json.loads(json.dumps(nb))
    lab["metadata"]["widgets"] = {"state": {}}
    lab["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stderr", "text": ["Traceback"]}]
    lab["cells"][1]["execution_count"] = 3
    lab["cells"][1]["metadata"]["execution"] = {"iopub.execute_input": "2026-01-01"}
    p = tmp_path / "nb.ipynb"
    p.write_text(json.dumps(lab))
    assert nbclean.main(["--check", str(p)]) == 1
    assert nbclean.main([str(p)]) == 0
    assert json.loads(p.read_text()) == nb


# --------------------------------------------------------------------------------------------- figures
def test_radiomics_boxplots_are_byte_identical_on_rerun(tmp_path):
    import pandas as pd

    from amtlib.figures import save_figure
    from amtlib.figures.failure import plot_feature_boxes

    rng = np.random.default_rng(1)
    features = pd.DataFrame({"group": ["top"] * 8 + ["bottom"] * 8, "f": rng.normal(size=16)})
    np.random.seed(123)
    files = []
    for k in range(2):
        files.append(save_figure(plot_feature_boxes(features, {"F": "f"}), tmp_path / f"b{k}", formats=("png", "pdf")))
        np.random.random()  # a different global state must not change the figure
    for a, b in zip(*files):
        assert a.read_bytes() == b.read_bytes(), a.name


# ----------------------------------------------------------------------------------------------- viewer
def test_crosshair_fraction_hand_computed(tmp_path):
    from amtlib.io import save_nifti
    from amtlib.viewer import crosshair_fraction

    m = np.zeros((10, 20, 40), np.uint8)  # (z, y, x)
    m[2, 5, 30] = 1
    # x and y flipped (LPS-like storage, as the phantom writes): RAS index = n - 1 - i
    save_nifti(m, np.diag([-1.0, -1.0, 2.0, 1.0]), tmp_path / "m.nii.gz")
    assert crosshair_fraction(tmp_path / "m.nii.gz") == pytest.approx([(40 - 1 - 30 + 0.5) / 40, (20 - 1 - 5 + 0.5) / 20, 2.5 / 10])
    save_nifti(np.zeros((2, 2, 2), np.uint8), np.eye(4), tmp_path / "e.nii.gz")
    assert crosshair_fraction(tmp_path / "e.nii.gz") is None


# ------------------------------------------------------------------------------------------- phantom
def test_tumour_occupancy_equals_the_plain_expression_bitwise():
    """The shell-only, in-place lobulation gives the very values of the plain full-box expression."""
    from amtlib.phantom import render as R

    def plain(shape, spacing, centre, radii_mm, angle, lobes, lobe_amp, edge_mm):
        _, box = R._tumour_fraction(shape, spacing, centre, radii_mm, angle, [], lobe_amp, edge_mm)
        lo = [s.start for s in box]
        hi = [s.stop for s in box]
        y = ((np.arange(lo[1], hi[1]) - centre[1]) * spacing[1])[None, :, None]
        x = ((np.arange(lo[2], hi[2]) - centre[2]) * spacing[2])[None, None, :]
        yr, xr = np.cos(angle) * y - np.sin(angle) * x, np.sin(angle) * y + np.cos(angle) * x
        acc = np.zeros(tuple(h - l for l, h in zip(lo, hi)), np.float32)
        for dz in (-1 / 3, 0.0, 1 / 3):
            z = ((np.arange(lo[0], hi[0]) + dz - centre[0]) * spacing[0])[:, None, None]
            nzv, nyv, nxv = z / radii_mm[0], yr / radii_mm[1], xr / radii_mm[2]
            rho = np.sqrt(nzv**2 + nyv**2 + nxv**2)
            inv = 1.0 / np.maximum(rho, 1e-6)
            lob = sum(a * np.sin((k[0] * nzv + k[1] * nyv + k[2] * nxv) * inv + ph) for a, k, ph in lobes)
            acc += np.clip(((1.0 + lobe_amp * lob) - rho) * float(np.mean(radii_mm)) / edge_mm + 0.5, 0.0, 1.0)
        return acc / 3.0

    rng = np.random.default_rng(5)
    for _ in range(6):
        spacing = (float(rng.choice([1.0, 2.5, 5.0])), 0.7, 0.7)
        shape = (int(rng.integers(30, 60)), 90, 100)
        centre = np.array([shape[0] / 2, 45 + rng.uniform(-5, 5), 50 + rng.uniform(-5, 5)])
        radii = rng.uniform(6, 20, 3)
        lobes = [(rng.uniform(0.3, 0.6), rng.normal(0.0, 2.2, 3), rng.uniform(0, 2 * np.pi)) for _ in range(4)]
        args = (shape, spacing, centre, radii, rng.uniform(-0.4, 0.4), lobes, rng.uniform(0, 0.3), 0.7 * float(rng.choice([1.0, 2.5])))
        got, _ = R._tumour_fraction(*args)
        want = plain(*args)
        assert got.dtype == want.dtype and np.array_equal(got, want)
        assert 0 < (got > 0).mean() < 1  # the box holds both the tumour and its outside


# ----------------------------------------------------------------------------------------------- kernel
def test_kernels_of_two_runs_never_share_sockets(tmp_path):
    """Two runs started from one folder once met at kernel-ipc-N ("Invalid Signature")."""
    from amtlib.kernel import MAX_PREFIX, IPCKernelManager, ipc_prefix

    a, b = IPCKernelManager(), IPCKernelManager()
    assert a.transport == "ipc" and a.ip != b.ip and os.path.isabs(a.ip) and len(a.ip) <= MAX_PREFIX
    assert ipc_prefix(str(tmp_path / ("x" * 120))).startswith(tempfile_dir())


def test_no_interrupt_is_sent_at_shutdown(monkeypatch):
    import asyncio

    from amtlib.kernel import IPCKernelManager

    sent = []
    km = IPCKernelManager()
    monkeypatch.setattr(km, "_async_signal_kernel", lambda signum: sent.append(signum) or asyncio.sleep(0))
    monkeypatch.setattr(type(km), "has_kernel", property(lambda self: True))
    km.shutting_down = True
    asyncio.run(km._async_interrupt_kernel())
    assert sent == []
    km.shutting_down = False
    km._kernel_spec = type("Spec", (), {"interrupt_mode": "signal"})()
    asyncio.run(km._async_interrupt_kernel())
    assert sent == [2]


def tempfile_dir() -> str:
    import tempfile

    return tempfile.gettempdir()


def test_notebook_runs_in_an_ipc_kernel_without_the_tcp_warning(tmp_path):
    import nbformat


    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os\nprint(os.environ.get('AMT_PROGRESS_FILE'))")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    env_file = tmp_path / "p.log"
    r = subprocess.run(
        [sys.executable, "-c",
         "import sys, papermill as pm\nfrom amtlib.kernel import IPCKernelManager\n"
         f"pm.execute_notebook({str(tmp_path / 'in.ipynb')!r}, {str(tmp_path / 'out.ipynb')!r}, kernel_name='python3', "
         "progress_bar=False, kernel_manager_class=IPCKernelManager)\n"],
        capture_output=True, text=True, env={**os.environ, "AMT_PROGRESS_FILE": str(env_file)}, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "without encryption" not in r.stderr
    out = json.loads((tmp_path / "out.ipynb").read_text())
    assert "".join(out["cells"][0]["outputs"][0]["text"]).strip() == str(env_file)


# ------------------------------------------------------------------------------------ seed spread
def _load_script(rel: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(rel).stem, REPO / rel)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_results(run: Path, best: float, dice: float, fp01: float) -> None:
    import pandas as pd

    (run / "03_train").mkdir(parents=True)
    (run / "04_evaluate").mkdir()
    (run / "05_froc").mkdir()
    pd.DataFrame({"iteration": [200, 400], "best_tuning_dice": [best - 0.1, best]}).to_csv(run / "03_train" / "train_log.csv")
    pd.DataFrame([{"subgroup": "overall", "dice_mean": dice, "precision_mean": 0.8, "recall_mean": 0.7}]).to_csv(
        run / "04_evaluate" / "table3.csv", index=False)
    pd.DataFrame([{"subgroup": "overall", "sensitivity_iou0.1": "0.99 ± 0.01 (0.96–1.00)", "sensitivity_iou0.5": "0.90 ± 0.03 (0.85–0.96)",
                   "fp_per_scan_iou0.1": f"{fp01:.2f} ± 0.07 (0.37–0.63)", "fp_per_scan_iou0.5": "0.60 ± 0.08 (0.43–0.73)"}]).to_csv(
        run / "05_froc" / "table4.csv", index=False)


def test_seed_spread_table_and_readme_sentence(tmp_path: Path) -> None:
    """benchmarks/seed_spread.py reads each seed run's headline figures; tools/readme_results.py states
    their range (hand-made runs: Dice 0.70 and 0.80, FP/scan 0.50 and 2.10)."""
    spread = _load_script("benchmarks/seed_spread.py")
    readme = _load_script("tools/readme_results.py")
    base, other = tmp_path / "run", tmp_path / "run_seed1"
    _fake_results(base, 0.81, 0.80, 0.50)
    _fake_results(other, 0.74, 0.70, 2.10)
    (base / "config.yaml").write_text("seed: 0\n")
    assert spread.main([str(base), "--seeds", "1", "--report-only"]) == 0
    table = __import__("pandas").read_csv(base / "seed_spread.csv")
    assert table["seed"].tolist() == [0, 1] and table["best_tuning_dice"].tolist() == [0.81, 0.74]
    assert table["fp_iou0.1"].tolist() == [0.5, 2.1] and table["sens_iou0.5"].tolist() == [0.9, 0.9]
    text = readme.seed_sentence(base)
    assert "seeds 0, 1" in text and "Dice 0.70-0.80 (mean 0.75)" in text and "0.50-2.10 / 0.60-0.60 false positives" in text
    (base / "seed_spread.csv").unlink()
    assert readme.seed_sentence(base) == ""


def test_seed_spread_histology_part_and_cnn_shortcut(tmp_path: Path) -> None:
    """--part histology tabulates each seed's training/external AUCs; cnn_shortcut averages the CNN's
    reference-ROI scores per split, background and label (hand-made: two cases per cell)."""
    import pandas as pd

    spread = _load_script("benchmarks/seed_spread.py")
    base, other = tmp_path / "run", tmp_path / "run_07seed5"
    for run, cnn_ext in ((base, 0.3), (other, 0.4)):
        (run / "07_histology").mkdir(parents=True)
        pd.DataFrame({"model": ["cnn_resnet2d"] * 3, "split": ["train", "external_test", "external_test"],
                      "roi": ["reference", "predicted", "reference"], "auc": [0.8, cnn_ext, 0.9]}).to_csv(
            run / "07_histology" / "auc.csv", index=False)
    (base / "config.yaml").write_text("seed: 0\n")
    assert spread.main([str(base), "--part", "histology", "--seeds", "5", "--report-only"]) == 0
    t = pd.read_csv(base / "seed_spread_07.csv")
    assert t.to_dict("list") == {"seed": [0, 5], "cnn_resnet2d_train_auc": [0.8, 0.8], "cnn_resnet2d_external_auc": [0.3, 0.4]}
    (base / "00_data" / "raw").mkdir(parents=True)
    (base / "01_cohort").mkdir()
    ids = [f"c{i}" for i in range(4)]
    pd.DataFrame({"case_id": ids, "series_uid": [f"u{i}" for i in range(4)]}).to_csv(base / "01_cohort" / "manifest.csv", index=False)
    pd.DataFrame({"series_uid": [f"u{i}" for i in range(4)] + ["u9"], "background": ["a", "a", "b", "b", "a"],
                  "native_noise_sd": [1.0, 2.0, 3.0, 4.0, 9.0]}).to_csv(base / "00_data" / "raw" / "synthesis.csv", index=False)
    pd.DataFrame({"case_id": ids * 2, "split": "train", "roi": ["reference"] * 4 + ["predicted"] * 4, "label": [0, 0, 1, 1] * 2,
                  "score": [0.1, 0.3, 0.6, 0.8, 9, 9, 9, 9], "model": "cnn_resnet2d"}).to_csv(base / "07_histology" / "scores.csv", index=False)
    table = spread.cnn_shortcut(base)
    assert table[["background", "label", "n"]].values.tolist() == [["a", 0, 2], ["b", 1, 2]]
    assert table["mean_score"].tolist() == pytest.approx([0.2, 0.7]) and table["rho_score_noise_in_split"].tolist() == [1.0, 1.0]


def test_seed_spread_fusion_part(tmp_path: Path) -> None:
    """--part fusion tabulates each seed's external AUCs of step 08 per task and model (hand-made runs)."""
    import pandas as pd

    spread = _load_script("benchmarks/seed_spread.py")
    base, other = tmp_path / "run", tmp_path / "run_08seed4"
    for run, fusion in ((base, 0.70), (other, 0.90)):
        (run / "08_fusion").mkdir(parents=True)
        pd.DataFrame({"task": ["binary", "binary", "multiclass"], "model": ["fusion", "ct_only_cnn", "fusion"],
                      "auc": [fusion, 0.58, 0.61]}).to_csv(run / "08_fusion" / "auc.csv", index=False)
    (base / "config.yaml").write_text("seed: 0\n")
    assert spread.main([str(base), "--part", "fusion", "--seeds", "4", "--report-only"]) == 0
    t = pd.read_csv(base / "seed_spread_08.csv")
    assert t.to_dict("list") == {"seed": [0, 4], "binary_fusion_auc": [0.7, 0.9], "binary_ct_only_cnn_auc": [0.58, 0.58],
                                 "multiclass_fusion_auc": [0.61, 0.61]}
    from amtlib import report

    spreads = report.seed_spreads(base)
    assert spreads["dmfn_fusion.binary_validation.fusion.auc"] == (0.7, 0.9, "0, 4")
    assert spreads["dmfn_fusion.binary_test.fusion.auc"] == (0.7, 0.9, "0, 4")


# ------------------------------------------------------------------------------------ README layout
def _layout_entries() -> tuple[list[str], dict[str, str]]:
    """README's Layout block: the first line's top-level files, and ``folder/`` -> its description."""
    text = (REPO / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    lines = [line for line in block.splitlines() if line.strip()]
    top, entries, current = lines[0].split(), {}, None
    for line in lines[1:]:
        if not line.startswith(" "):
            current, _, rest = line.partition(" ")
            entries[current] = rest
        elif current:
            entries[current] += " " + line.strip()
    return top, entries


def test_readme_layout_matches_the_tree():
    """Every tracked top-level file and folder is in README's Layout; in the folders a newcomer browses,
    every tracked file (or sub-folder) is named, and every name given exists."""
    r = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("not a git checkout")
    tracked = [Path(p) for p in r.stdout.splitlines() if (REPO / p).exists()]
    top, entries = _layout_entries()
    top_files = {p.parts[0] for p in tracked if len(p.parts) == 1} | {"/".join(p.parts[:2]) for p in tracked if p.parts[0] == ".ci"}
    assert top_files <= set(top), f"missing from the Layout's first line: {sorted(top_files - set(top))}"
    folders = {p.parts[0] + "/" for p in tracked if len(p.parts) > 1 and p.parts[0] != ".ci"}
    assert folders <= set(entries), f"folders missing from the Layout: {sorted(folders - set(entries))}"
    for folder in ("notebooks/", "configs/", "docs/", "tools/", "benchmarks/", "data_manifest/"):
        inside = {p.parts[1] if len(p.parts) == 2 else p.parts[1] + "/" for p in tracked if p.parts[0] == folder[:-1]}
        names = {n[:-6] if n.endswith(".ipynb") else n for n in inside}
        words = set(re.findall(r"[\w.-]+/?", entries[folder]))
        assert names <= words, f"{folder}: not named in the Layout: {sorted(names - words)}"
        named = {w for w in words if re.fullmatch(r"\d\d_\w+|[\w-]+\.(py|md|yaml|csv)|[\w-]+/", w)}
        assert named <= names, f"{folder}: named in the Layout but not in the tree: {sorted(named - names)}"
    packages = {p.parts[1] + "/" for p in tracked if p.parts[0] == "amtlib" and len(p.parts) > 2}
    assert packages <= set(re.findall(r"[\w]+/", entries["amtlib/"])), "amtlib/: a subpackage is not named"
