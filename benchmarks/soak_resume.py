#!/usr/bin/env python3
"""Kill-and-resume soak of training: kill -9 at random points, resume, compare with an uninterrupted run.

    python benchmarks/soak_resume.py [--trials 5] [--kills 2] [--iterations 40] [--seed 0] [--work DIR]

1. Builds a smoke run folder once (steps 00-02 of configs/smoke.yaml: procedural cohort, CPU).
2. Trains it uninterrupted with ``python -m amtlib.segmentation.train`` (``amt train``): the reference, timed.
3. Each trial starts from a fresh copy of steps 01-02 (the training cache copied too), then ``--kills``
   times starts the same training and sends it SIGKILL at a random point of the training itself: once
   ``checkpoints/last.pt`` reaches a random iteration beyond the one this attempt resumed from, after a
   further random 0-0.5 s (so the kill lands inside an optimisation step, an evaluation or a
   checkpoint write); then lets it run to the end, resuming from ``checkpoints/last.pt``.
4. Compares ``model.pt``, ``train_log.csv`` and every ``predictions/*.nii.gz`` byte for byte, and the
   final checkpoint's model and optimiser tensors, with the reference.

Prints N (trials), the kills that hit a running training, how many runs resumed, and IDENTICAL or
DIFFERENT per trial; exits 1 when any trial differs. Threads are fixed (workers=1) so the CPU
arithmetic is the same in every process.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def train_cmd(run: Path, iterations: int, eval_every: int) -> list[str]:
    return [PY, "-m", "amtlib.segmentation.train", "--run-dir", str(run), "--config", str(ROOT / "configs/smoke.yaml"), "--no-progress",
            "--set", f"train_iterations={iterations}", f"train_eval_every={eval_every}", "train_checkpoint_every=1",
            "workers=1", "device=cpu"]


def build_base(work: Path) -> Path:
    base = work / "base"
    if not (base / "02_split/split.csv").is_file():
        subprocess.run([PY, "-m", "amtlib.cli", "run", "--config", str(ROOT / "configs/smoke.yaml"), "--out", str(base),
                        "--to", "02"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return base


def fresh_copy(base: Path, dest: Path, cache_from: Path | None) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    for step in ("01_cohort", "02_split"):
        shutil.copytree(base / step, dest / step, copy_function=_link)
    if cache_from is not None and cache_from.is_dir():
        shutil.copytree(cache_from, dest / "03_train/cache")
    return dest


def _link(src: str, dst: str) -> None:
    Path(dst).hardlink_to(src)  # step 03 only reads 01-02, and writes atomically: links are safe


def outputs(run: Path) -> dict[str, bytes]:
    t = run / "03_train"
    files = [t / "model.pt", t / "train_log.csv", *sorted((t / "predictions").glob("*.nii.gz"))]
    return {str(f.relative_to(run)): f.read_bytes() for f in files}


def wait_for_iteration(ckpt: Path, target: int, proc: subprocess.Popen) -> int | None:
    """Poll ``last.pt`` until it records an iteration >= ``target``; None when the process ended first."""
    seen = None
    while proc.poll() is None:
        stamp = ckpt.stat().st_mtime_ns if ckpt.is_file() else None
        if stamp is not None and stamp != seen:
            seen = stamp
            try:
                it = int(torch.load(ckpt, weights_only=True)["iteration"])
            except (RuntimeError, OSError, KeyError):  # replaced while reading: read the next one
                continue
            if it >= target:
                return it
        time.sleep(0.05)
    return None


def same_checkpoint(a: Path, b: Path) -> bool:
    ca, cb = (torch.load(p / "03_train/checkpoints/last.pt", weights_only=True) for p in (a, b))
    if ca["iteration"] != cb["iteration"] or ca["best_iteration"] != cb["best_iteration"]:
        return False
    if any(not torch.equal(v, cb["model"][k]) for k, v in ca["model"].items()):
        return False
    return all(torch.equal(t, cb["optimizer"]["state"][pid][name])
               for pid, st in ca["optimizer"]["state"].items() for name, t in st.items())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--kills", type=int, default=2, help="kill -9 attempts per trial before the final, uninterrupted one")
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one, removed)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="amt-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        base = build_base(work)
        ref = fresh_copy(base, work / "reference", None)
        t0 = time.perf_counter()
        subprocess.run(train_cmd(ref, args.iterations, args.eval_every), check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        t_ref = time.perf_counter() - t0
        want = outputs(ref)
        print(f"reference: {args.iterations} iterations (eval every {args.eval_every}, checkpoint every 1) in {t_ref:.1f} s; "
              f"{len(want)} files compared")
        differing, hits, resumed = 0, 0, 0
        for trial in range(1, args.trials + 1):
            run = fresh_copy(base, work / f"trial{trial}", ref / "03_train/cache")
            delays = []
            ckpt = run / "03_train/checkpoints/last.pt"
            for _ in range(args.kills):
                done = int(torch.load(ckpt, weights_only=True)["iteration"]) if ckpt.is_file() else 0
                if done + 1 >= args.iterations:
                    break
                # a point after the checkpoint this attempt resumes from, so the kill lands in training
                target, jitter = rng.randrange(done + 1, args.iterations), rng.uniform(0.0, 0.5)
                proc = subprocess.Popen(train_cmd(run, args.iterations, args.eval_every), cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                reached = wait_for_iteration(ckpt, target, proc)
                if reached is None:
                    delays.append(f"iteration {target} (finished first)")
                    continue
                time.sleep(jitter)
                proc.kill()  # SIGKILL: no handler runs, no file is closed cleanly
                proc.wait()
                hits += 1
                delays.append(f"iteration {reached}+{jitter:.2f}s")
            final = subprocess.run(train_cmd(run, args.iterations, args.eval_every), cwd=ROOT, capture_output=True, text=True)
            if final.returncode != 0:
                print(final.stderr[-2000:])
                return 1
            resumed += "resumed at iteration" in final.stdout
            got = outputs(run)
            ok = got == want and same_checkpoint(ref, run)
            differing += not ok
            diff = [k for k in want if got.get(k) != want[k]]
            print(f"trial {trial}: kills at {', '.join(delays)}; final run: {final.stdout.strip().splitlines()[-1]}; "
                  f"{'IDENTICAL' if ok else 'DIFFERENT: ' + ', '.join(diff[:5])}")
        print(f"N = {args.trials} trials, {hits} kill -9 during training, {resumed} final runs resumed from a checkpoint: "
              f"{args.trials - differing} of {args.trials} identical to the uninterrupted run")
        return 1 if differing else 0
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
