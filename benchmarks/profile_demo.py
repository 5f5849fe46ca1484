"""cProfile of the demo's heavy steps at a reduced size: where the time of synthesis, cohort
conversion and the training loop goes (issue 13). Single process (workers=1), so the profile sees
every call; prints the top functions by cumulative and by own time.

    python benchmarks/profile_demo.py synth --scale 0.05              # 00: demo cohort synthesis
    python benchmarks/profile_demo.py cohort --raw runs/demo/00_data/raw --limit 40   # 01: DICOM -> NIfTI
    python benchmarks/profile_demo.py train --run-dir runs/demo --iters 50           # 03: training loop

Findings on the 2-core machine (issue 13): synthesis was a quarter the tumour occupancy's lobulation
sum (now computed only where it matters, 3x faster, bitwise equal), a quarter pydicom writing, the rest
resampling and smoothing of the background; the training loop spent as long making batches (MONAI
affine on the main thread, between the model's OpenMP regions) as in the model step, now prefetched
in a thread (amtlib.prefetch).
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
    ap.add_argument("what", choices=("synth", "cohort", "train"))
    ap.add_argument("--scale", type=float, default=0.05, help="synth: fraction of the paper's cohort")
    ap.add_argument("--raw", default=str(ROOT / "runs" / "demo" / "00_data" / "raw"), help="cohort: raw cohort folder")
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "demo"), help="train: a run folder with steps 01-02")
    ap.add_argument("--iters", type=int, default=50, help="train: iterations")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
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
            import amtlib.train as T
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


if __name__ == "__main__":
    raise SystemExit(main())
