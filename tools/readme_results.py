#!/usr/bin/env python3
"""Write the README's demo timing table and results paragraph from a run folder (no hand-typed numbers).

    python tools/readme_results.py runs/demo            # print the two generated blocks
    python tools/readme_results.py runs/demo --write    # replace them in README.md

Reads ``run.json`` (step durations), ``bench_demo.json`` when ``benchmarks/bench_demo.py`` timed the run
(model-step time and ratios), ``04_evaluate/table3.csv``, ``05_froc/table4.csv`` and
``06_failure/radiomics_focus.csv`` and ``seed_spread.csv`` (``benchmarks/seed_spread.py``) when present. The blocks sit between
``<!-- demo-timing:begin -->`` / ``<!-- demo-timing:end -->`` (docs/performance.md) and
``<!-- demo-results:begin -->`` / ``<!-- demo-results:end -->`` (README.md).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
STEP_LABELS = {"00_data": "00 data", "01_cohort": "01 cohort", "02_split": "02 split", "03_train": "03 train",
               "04_evaluate": "04 evaluate", "05_froc": "05 FROC", "06_failure": "06 failure",
               "07_histology": "07 histology", "08_fusion": "08 fusion", "09_export": "09 export", "10_report": "10 report"}


def _num(text: str) -> float:
    """``"0.85 ± 0.10 (0.83–0.87)"`` -> 0.85."""
    return float(str(text).split()[0])


def timing_block(run: Path) -> str:
    record = json.loads((run / "run.json").read_text())
    bench_file = run / "bench_demo.json"
    bench = json.loads(bench_file.read_text()) if bench_file.is_file() else None
    step_s = bench["model_step_s"] if bench else None
    rows = ["| step | seconds | model steps |", "|---|---|---|"]
    total = 0.0
    for name, st in sorted(record["steps"].items()):
        sec = float(st.get("wall_s") or st.get("duration_s") or 0.0)
        total += sec
        rows.append(f"| {STEP_LABELS.get(name, name)} | {sec:.0f} | {sec / step_s:.0f} |" if step_s else f"| {STEP_LABELS.get(name, name)} | {sec:.0f} | |")
    rows.append(f"| whole pipeline | {total:.0f} | {total / step_s:.0f} |" if step_s else f"| whole pipeline | {total:.0f} | |")
    lines = [f"`make demo` on {record['device'].get('cpu_count')} CPU cores ({record['platform']['machine']}), "
             f"run of {record['started'][:10]} (`runs/{run.name}/run.json`):", "", *rows, ""]
    if bench:
        b, a = bench.get("model_step_s_before"), bench.get("model_step_s_after")
        text = (f"The demo model's optimisation step alone (`benchmarks/bench_demo.py`, as `bench_train.py` times it) took "
                f"{b:.3f} s before and {a:.3f} s after the run on that machine, so the pipeline took about "
                f"{total / step_s:.0f} model steps. " if a else
                f"The demo model's optimisation step alone took {step_s:.3f} s, so the pipeline took about {total / step_s:.0f} model steps. ")
        text += f"Training ran at {bench.get('train_loop_it_per_s', float('nan')):.2f} it/s including its tuning evaluations"
        if "loop_it_per_s_prefetch" in bench:
            text += (f"; the bare training loop on the run's cases ran at {bench['loop_it_per_s_prefetch']:.2f} it/s with batches "
                     f"prefetched in a thread and {bench['loop_it_per_s_no_prefetch']:.2f} it/s with batches made between "
                     "model steps (what training does on a CPU; a GPU prefetches), measured in one process minutes apart")
        text += ". "
        if a and b and max(a, b) > 1.25 * min(a, b):
            text += ("The two model-step measurements differ by more than 25%: the machine was busy during the run, so the "
                     "model-step column is only indicative. ")
        text += "Machines of the same kind differ by 2x or more in absolute time."
        lines.append(text)
    return "\n".join(lines)


def results_block(run: Path) -> str:
    t3 = pd.read_csv(run / "04_evaluate" / "table3.csv").set_index("subgroup")
    t4 = pd.read_csv(run / "05_froc" / "table4.csv").set_index("subgroup")
    focus = pd.read_csv(run / "06_failure" / "radiomics_focus.csv").set_index("name")
    o = t3.loc["overall"]
    metric = lambda m, row=o: _num(row[m])  # noqa: E731
    rep = lambda m, row=o: _num(row[f"{m}_reported"])  # noqa: E731
    size = [s for s in ("large", "medium", "small") if f"size_{s}" in t3.index]
    f = t4.loc["overall"]
    n_groups = int(focus["n_top"].iloc[0]) if len(focus) else 0

    def p(name: str) -> str:
        return f"{focus.loc[name, 'p_value']:.3g}" if name in focus.index else "n/a"

    def p_rep(name: str) -> str:
        return f"{focus.loc[name, 'p_reported']:g}" if name in focus.index else "n/a"

    text = (
        f"Mean Dice {metric('dice'):.2f} (IoU {metric('iou'):.2f}, precision {metric('precision'):.2f}, recall "
        f"{metric('recall'):.2f}; paper {rep('dice'):.2f}, {rep('iou'):.2f}, {rep('precision'):.2f}, {rep('recall'):.2f}) "
        f"on the {int(o['n'])} external-test cases"
    )
    if size:
        text += (", by tumour size " + ", ".join(f"{s} {_num(t3.loc[f'size_{s}', 'dice']):.2f}" for s in size)
                 + " (paper " + ", ".join(f"{_num(t3.loc[f'size_{s}', 'dice_reported']):.2f}" for s in size) + ")")
    text += (
        f". Lesion sensitivity {_num(f['sensitivity_iou0.1']):.2f} / {_num(f['sensitivity_iou0.5']):.2f} at IoU 0.1 / 0.5 "
        f"with {_num(f['fp_per_scan_iou0.1']):.2f} / {_num(f['fp_per_scan_iou0.5']):.2f} false positives per scan (paper "
        f"{_num(f['sensitivity_iou0.1_reported']):.2f} / {_num(f['sensitivity_iou0.5_reported']):.2f} and "
        f"{_num(f['fp_per_scan_iou0.1_reported']):.2f} / {_num(f['fp_per_scan_iou0.5_reported']):.2f}). "
        f"The top and bottom groups by Dice ({n_groups} cases each) give p = {p('VoxelVolume')}, "
        f"{p('Maximum3DDiameter')} and {p('TotalEnergy')} for VoxelVolume, Maximum3DDiameter and TotalEnergy "
        f"(paper {p_rep('VoxelVolume')}, {p_rep('Maximum3DDiameter')}, {p_rep('TotalEnergy')}) and p = {p('Mean')} and "
        f"{p('Median')} for mean and median HU (paper {p_rep('Mean')} and {p_rep('Median')})."
    )
    text += related_sentence(run) + seed_sentence(run)
    return f"Generated by `python tools/readme_results.py runs/{run.name} --write` from that run:\n\n{text}"


def related_sentence(run: Path) -> str:
    """The related papers' headline AUCs (07_histology, 08_fusion) beside theirs, "" when skipped."""
    parts = []
    auc7 = run / "07_histology" / "auc.csv"
    if auc7.is_file():
        t = pd.read_csv(auc7)
        ext = t[(t["split"] == "external_test") & (t["roi"] == "predicted")].set_index("model")
        neg = int(ext["n"].iloc[0] - ext["n_pos"].iloc[0]) if len(ext) else 0
        got = ", ".join(f"{m.replace('_', ' ')} {ext.loc[m, 'auc']:.2f} ({ext.loc[m, 'auc_ci_low']:.2f}-{ext.loc[m, 'auc_ci_high']:.2f})"
                        for m in ("radiomics_svm", "cnn_resnet2d") if m in ext.index)
        if got:
            from amtlib.paper import reported

            resnet = reported()["tet_risk_stratification"]["table2"]["resnet101"][0]
            parts.append(f"WHO risk group (07, external set from the model's own masks, {int(ext['n'].iloc[0])} TETs of which "
                         f"{neg} low-risk): AUC {got}; the TET paper's ResNet 101 {resnet:.2f}")
    auc8 = run / "08_fusion" / "table_vs_paper.csv"
    if auc8.is_file():
        t = pd.read_csv(auc8)
        b = t[t["task"] == "binary"].set_index("model")
        if {"fusion", "ct_only_cnn"} <= set(b.index):
            parts.append(f"benign vs malignant (08): fusion AUC {b.loc['fusion', 'auc']:.2f}, CT only {b.loc['ct_only_cnn', 'auc']:.2f} "
                         f"(fusion paper {b.loc['fusion', 'paper_auc']:.2f} and {b.loc['ct_only_cnn', 'paper_auc']:.2f})")
    return (" Related papers: " + "; ".join(parts) + ".") if parts else ""


def seed_sentence(run: Path) -> str:
    """The spread over training seeds (``seed_spread.csv`` of ``benchmarks/seed_spread.py``), "" without."""
    path = run / "seed_spread.csv"
    if not path.is_file():
        return ""
    t = pd.read_csv(path)
    if len(t) < 2:
        return ""
    rng = lambda c: f"{t[c].min():.2f}-{t[c].max():.2f}"  # noqa: E731
    seeds = ", ".join(str(int(v)) for v in t["seed"])
    return (f" Trained with seeds {seeds} on the same cohort and split (`benchmarks/seed_spread.py`), the model gives "
            f"Dice {rng('dice')} (mean {t['dice'].mean():.2f}), sensitivity {rng('sens_iou0.1')} / {rng('sens_iou0.5')} and "
            f"{rng('fp_iou0.1')} / {rng('fp_iou0.5')} false positives per scan at IoU 0.1 / 0.5: one run's figures are one "
            "draw of that spread (on another CPU, whose floating-point kernels may round differently, the same seed may "
            "draw differently).")


def replace_block(readme: str, name: str, body: str) -> str:
    pat = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pat.search(readme):
        raise ValueError(f"README.md has no <!-- {name}:begin --> ... <!-- {name}:end --> block")
    return pat.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), readme)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run folder of a finished demo run")
    ap.add_argument("--write", action="store_true", help="replace the blocks in README.md")
    args = ap.parse_args(argv)
    run = Path(args.run).resolve()
    blocks = {"demo-timing": timing_block(run), "demo-results": results_block(run)}
    if not args.write:
        for name, body in blocks.items():
            print(f"<!-- {name} -->\n{body}\n")
        return 0
    # the results block lives in README.md, the per-step timing table in docs/performance.md
    for doc in (ROOT / "README.md", ROOT / "docs" / "performance.md"):
        text = doc.read_text()
        mine = {n: b for n, b in blocks.items() if f"<!-- {n}:begin -->" in text}
        for name, body in mine.items():
            text = replace_block(text, name, body)
        if mine:
            doc.write_text(text)
            print(f"updated {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
