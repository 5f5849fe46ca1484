"""cProfile of the demo's heavy steps at a reduced size: where the time of synthesis, cohort
conversion and the training loop goes (issue 13). Single process (workers=1), so the profile sees
every call; prints the top functions by cumulative and by own time.

    python benchmarks/profile_demo.py synth --scale 0.05              # 00: demo cohort synthesis
    python benchmarks/profile_demo.py cohort --raw runs/demo/00_data/raw --limit 40   # 01: DICOM -> NIfTI
    python benchmarks/profile_demo.py train --run-dir runs/demo --iters 50           # 03: training loop
    python benchmarks/profile_demo.py step 07_histology --run-dir runs/demo          # any step, kernel included

``step`` re-runs one notebook of a finished run (``amt run --only STEP --force``) under the py-spy
sampling profiler, following the Jupyter kernel it starts, and prints the functions with the most
samples by own time and by inclusive time (py-spy is installed with the ``bench`` extra, which
``make venv`` includes). cProfile cannot see inside the kernel process; py-spy can. The step's
outputs are made again (the same, for a deterministic step); the run's ``run.json`` is put back
afterwards, so its step times stay those of the real run, not of the profiled one.

Findings on the 2-core machine (issue 13): synthesis was a quarter the tumour occupancy's lobulation
sum (now computed only where it matters, 3x faster, bitwise equal), a quarter pydicom writing, the rest
resampling and smoothing of the background; the training loop spent as long making batches (MONAI
affine on the main thread, between the model's OpenMP regions) as in the model step, now prefetched
in a thread (amtlib.segmentation.prefetch).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("synth", "cohort", "train", "step"))
    ap.add_argument("step", nargs="?", default="", help="step: the step to profile, e.g. 07_histology or 07")
    ap.add_argument("--scale", type=float, default=0.05, help="synth: fraction of the paper's cohort")
    ap.add_argument("--raw", default=str(ROOT / "runs" / "demo" / "00_data" / "raw"), help="cohort: raw cohort folder")
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "demo"), help="train: a run folder with steps 01-02")
    ap.add_argument("--iters", type=int, default=50, help="train: iterations")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    if args.what == "step":
        return profile_step(args.step, Path(args.run_dir), args.top)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.what == "synth":
            from amtlib import phantom

            prof.runcall(phantom.synthesize_cohort, Path(tmp) / "raw", scale=args.scale, seed=0, backgrounds="real", workers=1)
        elif args.what == "cohort":
            from amtlib import cohort

            prof.runcall(cohort.build_cohort, args.raw, Path(tmp) / "01_cohort", workers=1)
        else:
            import amtlib.segmentation.train as T
            from amtlib.paths import RunPaths

            P = RunPaths(args.run_dir)
            cfg = T.TrainConfig.from_params({**config, "train_iterations": args.iters, "train_eval_every": args.iters})
            data = T.prepare_data(P.manifest, P.split_csv, cfg, cache_dir=P.root / "03_train" / "cache")
            prof.runcall(T.train, data.train, [], cfg, tmp, data.norm, resume=False, progress=False)
    print(f"{args.what}: {time.perf_counter() - t0:.1f} s wall")
    stats = pstats.Stats(prof)
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)
    return 0


def profile_step(step: str, run_dir: Path, top: int) -> int:
    """Sample one notebook step of ``run_dir`` with py-spy (kernel included); print the hot functions."""
    import shutil
    import subprocess
    import sys
    from collections import Counter

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy not found: install the bench extra (make venv does)", file=sys.stderr)
        return 2
    if not step or not (run_dir / "run.json").is_file():
        print(f"give a step and a finished run folder (no {run_dir / 'run.json'})", file=sys.stderr)
        return 2
    amt = str(Path(sys.executable).parent / "amt")
    record = (run_dir / "run.json").read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "stacks.txt"
        t0 = time.perf_counter()
        cmd = [spy, "record", "--subprocesses", "--rate", "100", "--format", "raw", "--output", str(raw), "--nonblocking",
               "--", amt, "run", "--out", str(run_dir), "--only", step, "--force"]
        try:
            rc = subprocess.run(cmd, cwd=ROOT).returncode
        finally:
            from amtlib.io import atomic_path

            with atomic_path(run_dir / "run.json") as tmp_record:  # the real run's record, not the profiled one's
                Path(tmp_record).write_bytes(record)
        wall = time.perf_counter() - t0
        own: Counter[str] = Counter()
        incl: Counter[str] = Counter()
        total = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
            if not frames:
                continue
            total += n
            own[frames[-1]] += n
            for f in set(frames):
                incl[f] += n
    print(f"{step}: {wall:.1f} s wall, {total} samples at 100 Hz over every process (rc {rc})")
    # inclusive time: the package's own functions (the kernel's event loop holds every sample)
    ours = Counter({k: v for k, v in incl.items() if "amtlib/" in k})
    for title, counter in (("own time", own), ("inclusive time, amtlib functions", ours)):
        print(f"\n-- top {top} by {title} (share of samples)")
        for name, n in counter.most_common(top):
            print(f"{100 * n / max(total, 1):6.1f}%  {name[:150]}")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
