"""How much the demo's headline results move with the seed alone (same cohort, same split).

The demo models are small and trained for minutes, so one run's figures are one draw. This re-runs
part of a finished run with other seeds and tabulates every seed beside the run's own:

- ``--part seg`` (default): steps 03-05 (the U-Net trained again; Table 3 / Table 4 headline figures)
  into ``<run>_seed<N>/``, written to ``seed_spread.csv``;
- ``--part histology``: step 07 (radiomics SVM and 2D CNN on the same masks; external AUCs) into
  ``<run>_07seed<N>/``, written to ``seed_spread_07.csv``, followed by what the CNN's score follows on a
  demo cohort: its mean per public background CT and risk group, and its Spearman correlation with the
  background's native noise (``00_data/raw/synthesis.csv``);
- ``--part fusion``: step 08 (CT-only CNN, CTC/clinical logistic, fusion network; external AUCs, binary
  and multi-class) into ``<run>_08seed<N>/``, written to ``seed_spread_08.csv``.

    python benchmarks/seed_spread.py runs/bench_demo --seeds 1 2 3                  # ~3 min per seed
    python benchmarks/seed_spread.py runs/bench_demo --part histology --seeds 1 2 3 # ~40 s per seed
    python benchmarks/seed_spread.py runs/demo --part fusion --seeds 1 2 3          # ~30 s per seed
    python benchmarks/seed_spread.py runs/bench_demo --seeds 1 2 3 --report-only

Earlier step folders of the seed runs are links to the base run's (nothing writes into them). Prints
one row per seed and the range; ``tools/readme_results.py`` reads ``seed_spread.csv``. On another
machine (another CPU's floating-point kernels) the same seed is another draw of the same spread.
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
STEPS = ("00_data", "01_cohort", "02_split", "03_train", "04_evaluate", "05_froc", "06_failure", "07_histology", "08_fusion")
#: part -> (first step, last step, seed-run folder suffix, table written into the base run)
PARTS = {"seg": ("03", "05", "seed", "seed_spread.csv"), "histology": ("07", "07", "07seed", "seed_spread_07.csv"),
         "fusion": ("08", "08", "08seed", "seed_spread_08.csv")}
COLUMNS = ("seed", "best_tuning_dice", "dice", "precision", "recall", "sens_iou0.1", "sens_iou0.5", "fp_iou0.1", "fp_iou0.5")


def _num(text: object) -> float:
    """``"0.85 ± 0.10 (0.83–0.87)"`` -> 0.85."""
    return float(str(text).split()[0])


def seg_results(run: Path, seed: int) -> dict[str, float]:
    """The external-test headline figures of one finished run (03-05)."""
    log = pd.read_csv(run / "03_train" / "train_log.csv")
    t3 = pd.read_csv(run / "04_evaluate" / "table3.csv").set_index("subgroup").loc["overall"]
    t4 = pd.read_csv(run / "05_froc" / "table4.csv").set_index("subgroup").loc["overall"]
    return {"seed": seed, "best_tuning_dice": float(log["best_tuning_dice"].iloc[-1]),
            "dice": float(t3["dice_mean"]), "precision": float(t3["precision_mean"]), "recall": float(t3["recall_mean"]),
            "sens_iou0.1": _num(t4["sensitivity_iou0.1"]), "sens_iou0.5": _num(t4["sensitivity_iou0.5"]),
            "fp_iou0.1": _num(t4["fp_per_scan_iou0.1"]), "fp_iou0.5": _num(t4["fp_per_scan_iou0.5"])}


def histology_results(run: Path, seed: int) -> dict[str, float]:
    """Training and external-test AUCs (predicted ROIs) of each 07 model of one run."""
    t = pd.read_csv(run / "07_histology" / "auc.csv")
    row: dict[str, float] = {"seed": seed}
    for r in t.itertuples(index=False):
        if r.split == "train" or r.roi == "predicted":
            row[f"{r.model}_{'train' if r.split == 'train' else 'external'}_auc"] = float(r.auc)
    return row


def fusion_results(run: Path, seed: int) -> dict[str, float]:
    """External-test AUCs of each 08 model, binary and multi-class, of one run (``<task>_<model>_auc``)."""
    t = pd.read_csv(run / "08_fusion" / "auc.csv")
    row: dict[str, float] = {"seed": seed}
    for r in t.itertuples(index=False):
        row[f"{r.task}_{r.model}_auc"] = float(r.auc)
    return row


#: part -> the function that reads one run's figures
RESULTS = {"seg": seg_results, "histology": histology_results, "fusion": fusion_results}


def seed_run(base: Path, seed: int, part: str) -> Path:
    """Re-run ``part`` of ``base`` with ``seed`` in its own folder; earlier steps are links to ``base``'s."""
    first, last, suffix, _ = PARTS[part]
    out = base.parent / f"{base.name}_{suffix}{seed}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for step in STEPS:
        if step[:2] >= first:
            break
        (out / step).symlink_to(os.path.relpath(base / step, out))
    config = yaml.safe_load((base / "config.yaml").read_text())
    cmd = [sys.executable, "-m", "amtlib.cli", "run", "--config", str(base / "config.yaml"), "--out", str(out),
           "--from", first, "--to", last, "-p", f"seed={seed}", "-p", "train_resume=false"]
    if config.get("raw_dir"):
        cmd += ["-p", f"raw_dir={config['raw_dir']}"]
    print(f"seed {seed}: {' '.join(cmd[2:])}", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return out


def cnn_shortcut(run: Path) -> pd.DataFrame:
    """Mean 2D-CNN score (reference ROIs) per split, public background CT and label (0 low-risk, 1
    high-risk) of a demo run, with the Spearman correlation of the score with the rendered series'
    native noise per split."""
    from scipy.stats import spearmanr

    synth = pd.read_csv(run / "00_data" / "raw" / "synthesis.csv")
    manifest = pd.read_csv(run / "01_cohort" / "manifest.csv", dtype={"case_id": str})
    scores = pd.read_csv(run / "07_histology" / "scores.csv", dtype={"case_id": str})
    cnn = scores[(scores["model"] == "cnn_resnet2d") & (scores["roi"] == "reference")]
    m = manifest[["case_id", "series_uid"]].merge(cnn[["case_id", "split", "label", "score"]], on="case_id").merge(
        synth[["series_uid", "background", "native_noise_sd"]], on="series_uid")
    table = m.groupby(["split", "background", "label"]).agg(n=("score", "size"), mean_score=("score", "mean")).reset_index()
    rho = {s: spearmanr(g["native_noise_sd"], g["score"]).statistic for s, g in m.groupby("split")}
    table["rho_score_noise_in_split"] = table["split"].map(rho)
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a finished demo run folder")
    ap.add_argument("--part", choices=sorted(PARTS), default="seg")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--report-only", action="store_true", help="tabulate the existing seed-run folders")
    args = ap.parse_args(argv)
    base = Path(args.run).resolve()
    _, _, suffix, table_name = PARTS[args.part]
    results = RESULTS[args.part]
    base_seed = int(yaml.safe_load((base / "config.yaml").read_text()).get("seed", 0))
    rows = [results(base, base_seed)]
    for seed in args.seeds:
        out = base.parent / f"{base.name}_{suffix}{seed}"
        if not args.report_only:
            out = seed_run(base, seed, args.part)
        rows.append(results(out, seed))
    table = pd.DataFrame(rows, columns=list(COLUMNS) if args.part == "seg" else None)
    table.to_csv(base / table_name, index=False)
    print(table.round(3).to_string(index=False))
    for c in table.columns[1:]:
        print(f"RANGE {c} {table[c].min():.3f}-{table[c].max():.3f} mean {table[c].mean():.3f}")
    if args.part == "histology" and (base / "00_data" / "raw" / "synthesis.csv").is_file():
        print("\nWhat the CNN's score follows (demo cohort):")
        print(cnn_shortcut(base).round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
