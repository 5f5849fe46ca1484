"""How much the demo's headline results move with the training seed alone (same cohort, same split).

The demo model is small and trained for minutes at a constant learning rate, and the tuning Dice that
selects its checkpoint swings between evaluations, so one run's Table 3/4 figures are one draw. This
re-trains a finished run's model with other seeds (steps 03-05 only; 00_data is linked, 01_cohort and
02_split copied) and tabulates the external-test results of every seed beside the run's own:

    python benchmarks/seed_spread.py runs/bench_demo --seeds 1 2 3     # trains 3 models (~3 min each)
    python benchmarks/seed_spread.py runs/bench_demo --seeds 1 2 3 --report-only

Seed runs go to ``<run>_seed<N>/``. Prints one row per seed and the range, and writes
``seed_spread.csv`` into the base run (read by ``tools/readme_results.py``). On another machine
(another CPU's floating-point kernels) the same seed is a different draw of the same spread.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("seed", "best_tuning_dice", "dice", "precision", "recall", "sens_iou0.1", "sens_iou0.5", "fp_iou0.1", "fp_iou0.5")


def _num(text: object) -> float:
    """``"0.85 ± 0.10 (0.83–0.87)"`` -> 0.85."""
    return float(str(text).split()[0])


def results_of(run: Path, seed: int) -> dict[str, float]:
    """The external-test headline figures of one finished run (03-05)."""
    log = pd.read_csv(run / "03_train" / "train_log.csv")
    t3 = pd.read_csv(run / "04_evaluate" / "table3.csv").set_index("subgroup").loc["overall"]
    t4 = pd.read_csv(run / "05_froc" / "table4.csv").set_index("subgroup").loc["overall"]
    return {"seed": seed, "best_tuning_dice": float(log["best_tuning_dice"].iloc[-1]),
            "dice": float(t3["dice_mean"]), "precision": float(t3["precision_mean"]), "recall": float(t3["recall_mean"]),
            "sens_iou0.1": _num(t4["sensitivity_iou0.1"]), "sens_iou0.5": _num(t4["sensitivity_iou0.5"]),
            "fp_iou0.1": _num(t4["fp_per_scan_iou0.1"]), "fp_iou0.5": _num(t4["fp_per_scan_iou0.5"])}


def seed_run(base: Path, seed: int) -> Path:
    """Train and evaluate ``base``'s model again with ``seed`` in ``<base>_seed<seed>`` (steps 03-05)."""
    out = base.parent / f"{base.name}_seed{seed}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "00_data").symlink_to(os.path.relpath(base / "00_data", out))
    for step in ("01_cohort", "02_split"):
        shutil.copytree(base / step, out / step)
    config = yaml.safe_load((base / "config.yaml").read_text())
    cmd = [sys.executable, "-m", "amtlib.cli", "run", "--config", str(base / "config.yaml"), "--out", str(out),
           "--from", "03", "--to", "05", "-p", f"seed={seed}", "-p", "train_resume=false"]
    if config.get("raw_dir"):
        cmd += ["-p", f"raw_dir={config['raw_dir']}"]
    print(f"seed {seed}: {' '.join(cmd[2:])}", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a finished demo run folder (steps 00-05 at least)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--report-only", action="store_true", help="tabulate existing <run>_seed<N> folders")
    args = ap.parse_args(argv)
    base = Path(args.run).resolve()
    base_seed = int(yaml.safe_load((base / "config.yaml").read_text()).get("seed", 0))
    rows = [results_of(base, base_seed)]
    for seed in args.seeds:
        out = base.parent / f"{base.name}_seed{seed}"
        if not args.report_only:
            out = seed_run(base, seed)
        rows.append(results_of(out, seed))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table.to_csv(base / "seed_spread.csv", index=False)
    print(table.round(3).to_string(index=False))
    for c in COLUMNS[1:]:
        print(f"RANGE {c} {table[c].min():.3f}-{table[c].max():.3f} mean {table[c].mean():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
