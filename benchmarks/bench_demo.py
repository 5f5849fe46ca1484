"""The demo pipeline's step times beside the demo model's step time measured in the same run.

Absolute times vary a lot between machines of the same kind (and on a shared machine between minutes),
so the benchmark also expresses each step in "model steps": the time of one optimisation step of the
demo's U-Net (forward, Dice loss, backward, Adam at the demo's batch and patch) measured here, before
and after the pipeline. The ratio pipeline / model step is comparable across machines; issue 13's
target is a whole demo of at most about 3,600 model steps, and a training loop at least 85% as fast as
the model step alone.

    python benchmarks/bench_demo.py                         # runs the demo into runs/bench_demo (forced)
    python benchmarks/bench_demo.py --run-dir runs/demo     # only reports an existing run's times
    python benchmarks/bench_demo.py -p synth_scale=0.1 -p train_iterations=200   # a reduced run

Prints one line per step and a SUMMARY line, and writes ``bench_demo.json`` into the run folder
(read by ``tools/readme_results.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_train import time_steps  # noqa: E402

from amtlib.segmentation.model import ModelConfig, UNet3D  # noqa: E402
from amtlib.segmentation.train import resolve_device  # noqa: E402


def model_step_s(config: dict, iters: int = 30, warmup: int = 5) -> float:
    """Seconds per optimisation step of the config's U-Net on random data (as bench_train does)."""
    device = resolve_device(config.get("device", "auto"), 0)
    torch.manual_seed(0)
    model = UNet3D(ModelConfig(base_width=int(config["train_base_width"]), blocks_per_level=int(config["train_blocks_per_level"]),
                               levels=int(config["train_levels"])))
    r = time_steps(model, device, int(config["train_batch_size"]), tuple(config["train_patch"]), iters, warmup,
                   bool(config.get("train_amp", True)))
    return float(r["s_per_step"])


def loop_speed(run_dir: Path, config: dict, iters: int) -> dict:
    """Training-loop it/s on the run's training cases (no tuning evaluation), with and without prefetching.

    The loop of :func:`amtlib.segmentation.train.train` as the demo runs it, for ``iters`` iterations; the second
    measurement replaces the background prefetcher by on-demand batches (what the CPU uses).
    """
    import tempfile
    import warnings

    import amtlib.segmentation.train as T
    from amtlib.paths import RunPaths
    from amtlib.segmentation.prefetch import Prefetcher

    P = RunPaths(run_dir)
    cfg = T.TrainConfig.from_params({**config, "train_iterations": iters, "train_eval_every": iters})
    data = T.prepare_data(P.manifest, P.split_csv, cfg, cache_dir=P.root / "03_train" / "cache")
    out = {}
    original = T.Prefetcher
    try:
        # forced each way (train() itself prefetches on a GPU only)
        for name, factory in (("prefetch", lambda fn, a, b, depth=2: Prefetcher(fn, a, b, depth=2)),
                              ("no_prefetch", lambda fn, a, b, depth=0: Prefetcher(fn, a, b, depth=0))):
            T.Prefetcher = factory
            with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = T.train(data.train, [], cfg, tmp, data.norm, resume=False, progress=False)
            out[name] = float(r.log["iterations_per_s"].iloc[-1])
    finally:
        T.Prefetcher = original
    return out


def report(run_dir: Path, step_s: float, step_s_before: float | None = None, step_s_after: float | None = None) -> dict:
    """Per-step seconds and model-step equivalents of ``run_dir/run.json``; the training loop's it/s."""
    record = json.loads((run_dir / "run.json").read_text())
    rows = []
    for name, st in sorted(record.get("steps", {}).items()):
        sec = st.get("wall_s") or st.get("duration_s")
        if sec is not None:
            rows.append({"step": name, "seconds": round(float(sec), 1), "model_steps": round(float(sec) / step_s)})
    total = sum(r["seconds"] for r in rows)
    out = {"run_dir": str(run_dir), "machine": f"{platform.machine()} x{os.cpu_count()} ({platform.node()})",
           "torch_threads": torch.get_num_threads(), "model_step_s": round(step_s, 4),
           "model_step_s_before": None if step_s_before is None else round(step_s_before, 4),
           "model_step_s_after": None if step_s_after is None else round(step_s_after, 4),
           "steps": rows, "total_s": round(total, 1), "total_model_steps": round(total / step_s)}
    log = run_dir / "03_train" / "train_timing.csv"  # speed columns (train_log.csv holds only results)
    if log.is_file():
        t = pd.read_csv(log)
        if len(t):
            loop = float(t["iterations_per_s"].iloc[-1])  # whole loop incl. tuning evaluations
            # loop speed without the tuning evaluations: iterations over time between evaluations is not
            # logged, so also report the overall figure; both are compared with the model step alone
            out.update(train_iterations=int(t["iteration"].iloc[-1]), train_loop_it_per_s=round(loop, 2),
                       model_step_it_per_s=round(1 / step_s, 2), train_loop_vs_model_step=round(loop * step_s, 3))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_demo"), help="run folder of the timed run")
    ap.add_argument("--run-dir", default=None, help="report an existing run instead of running the demo")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ap.add_argument("--iters", type=int, default=30, help="model steps timed before and after the run")
    ap.add_argument("--loop-iters", type=int, default=60,
                    help="iterations of the bare training loop timed after the run, with and without prefetching (0: skip)")
    args = ap.parse_args(argv)
    config = yaml.safe_load(Path(args.config).read_text())
    for item in args.param:
        k, _, v = item.partition("=")
        config[k] = yaml.safe_load(v)
    before = model_step_s(config, args.iters)
    print(f"model step (before): {before:.4f} s ({1 / before:.2f} it/s)", flush=True)
    if args.run_dir:
        run_dir = Path(args.run_dir).resolve()
        after = None
    else:
        run_dir = Path(args.out).resolve()
        # --force re-runs every step; train_resume=false keeps training from continuing the checkpoint of
        # an earlier run in the same folder (which would finish instantly and time nothing)
        cmd = [str(Path(sys.executable).parent / "amt"), "run", "--config", args.config, "--out", str(run_dir), "--force",
               "-p", "train_resume=false"]
        for item in args.param:
            cmd += ["-p", item]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        print(f"pipeline wall time {time.perf_counter() - t0:.1f} s", flush=True)
        after = model_step_s(config, args.iters)
        print(f"model step (after): {after:.4f} s ({1 / after:.2f} it/s)", flush=True)
    loop = {}
    if args.loop_iters > 0 and (run_dir / "02_split" / "split.csv").is_file():
        loop = loop_speed(run_dir, config, args.loop_iters)
        print(f"bare training loop: {loop['prefetch']:.2f} it/s with prefetching, {loop['no_prefetch']:.2f} it/s without",
              flush=True)
        if after is None:
            after = model_step_s(config, args.iters)
            print(f"model step (after): {after:.4f} s ({1 / after:.2f} it/s)", flush=True)
    step_s = before if after is None else (before + after) / 2
    res = report(run_dir, step_s, before, after)
    if loop:
        res.update(loop_it_per_s_prefetch=round(loop["prefetch"], 2), loop_it_per_s_no_prefetch=round(loop["no_prefetch"], 2),
                   loop_prefetch_vs_model_step=round(loop["prefetch"] * step_s, 3),
                   loop_no_prefetch_vs_model_step=round(loop["no_prefetch"] * step_s, 3))
    res["overrides"] = args.param
    print(f"{'step':12s} {'seconds':>8s} {'model steps':>12s}")
    for r in res["steps"]:
        print(f"{r['step']:12s} {r['seconds']:8.1f} {r['model_steps']:12d}")
    print(f"{'total':12s} {res['total_s']:8.1f} {res['total_model_steps']:12d}")
    print("SUMMARY " + " ".join(f"{k}={v}" for k, v in res.items() if k not in ("steps", "run_dir", "overrides")), flush=True)
    (run_dir / "bench_demo.json").write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
