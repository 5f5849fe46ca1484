"""Benchmark and acceptance check of steps 01-02 on the synthetic cohort (not run in CI).

Generates the demo cohort with tiny placeholder images (``images=False``, procedural backgrounds),
then runs the cohort build and the split (or, with ``--notebooks``, executes notebooks 01 and 02 with
papermill) and prints every regenerated count beside the paper's: Fig. 2 flow, Table 1, Table 2, plus
how the exclusions and the external institutions compare with the generator's audit columns.

    python benchmarks/bench_cohort.py --scale 1.0 --workers 2 --out /tmp/bench_cohort
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from amtlib import cohort, paper, split
from amtlib.manifest import validate_manifest
from amtlib.paths import RunPaths

REPO = Path(__file__).resolve().parent.parent


def _papermill(notebook: str, run_dir: Path, params: dict[str, object]) -> None:
    args = [sys.executable, "-m", "papermill", str(REPO / "notebooks" / notebook), str(run_dir / "notebooks" / notebook),
            "-k", "python3", "-p", "run_dir", str(run_dir), "-p", "figures_dir", ""]
    for k, v in params.items():
        args += ["-p", k, str(v)]
    (run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    subprocess.run(args, check=True, cwd=REPO, capture_output=True)


def search_split_seeds(manifest: pd.DataFrame, assigned: pd.DataFrame, n_seeds: int, tuning_fraction: float) -> pd.DataFrame:
    """Seeds whose training/tuning shuffle (as :func:`amtlib.split.assign_splits` draws it) gives the
    paper's tuning histology counts, with the institution counts and ages each seed gives."""
    from amtlib.paper import reported

    hist_rep = reported()["table1"]["histology_counts"]
    names = list(hist_rep)
    target = np.array([hist_rep[h]["tuning"] for h in names])
    dev = assigned[assigned["split"] != "external_test"].merge(manifest[["case_id", "histology", "age"]], on="case_id")
    dev = dev.sort_values("patient_id").reset_index(drop=True)  # assign_splits shuffles sorted patient ids
    hist = dev["histology"].map({h: i for i, h in enumerate(names)}).to_numpy()
    inst = np.unique(dev["institution"], return_inverse=True)[1]
    age = dev["age"].astype(float).to_numpy()
    n_tuning = int(round(tuning_fraction * len(dev)))
    rows = []
    for seed in range(n_seeds):
        perm = np.random.default_rng(seed).permutation(len(dev))
        tun, tr = perm[:n_tuning], perm[n_tuning:]
        if np.array_equal(np.bincount(hist[tun], minlength=len(names)), target):
            rows.append({"seed": seed, "training_institutions": len(np.unique(inst[tr])), "tuning_institutions": len(np.unique(inst[tun])),
                         "training_age": f"{np.median(age[tr]):.1f} ({age[tr].min():.0f}-{age[tr].max():.0f})",
                         "tuning_age": f"{np.median(age[tun]):.1f} ({age[tun].min():.0f}-{age[tun].max():.0f})"})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0, help="synth_seed")
    ap.add_argument("--split-seed", type=int, default=split.DEFAULT_SPLIT_SEED)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default="/tmp/bench_cohort")
    ap.add_argument("--notebooks", action="store_true", help="execute notebooks 01 and 02 with papermill")
    ap.add_argument("--keep", action="store_true", help="reuse an existing raw cohort in --out")
    ap.add_argument("--search-seed", type=int, default=0, metavar="N",
                    help="also try split seeds 0..N-1 for the paper's Table 1 tuning histology and Fig. 2 institutions")
    args = ap.parse_args(argv)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)

    from amtlib import phantom

    P = RunPaths(args.out)
    times: dict[str, float] = {}
    if not (args.keep and (P.raw_dir / "clinical.csv").is_file()):
        shutil.rmtree(P.root, ignore_errors=True)
        t = time.perf_counter()
        phantom.synthesize_cohort(P.raw_dir, scale=args.scale, seed=args.seed, backgrounds="procedural", images=False,
                                  workers=args.workers)
        times["synthesize (images=False)"] = time.perf_counter() - t
    for step in ("01_cohort", "02_split"):
        shutil.rmtree(P.root / step, ignore_errors=True)

    clinical = pd.read_csv(P.raw_dir / "clinical.csv", dtype=str, keep_default_na=False)
    dev_param = ""
    if split.read_development_list(P.raw_dir) is None:
        # The harness, not the pipeline, reads the audit column: it stands in for the investigator's design file.
        dev_param = ",".join(sorted(set(clinical.loc[(clinical["role"] == "development") & (clinical["institution"] != "CENTRAL"), "institution"])))
        print(f"NOTE: {P.raw_dir / split.DEVELOPMENT_FILE} not written by the generator; the harness passes the "
              f"development institutions from clinical.csv's audit column role ({dev_param.count(',') + 1} sites)")

    t = time.perf_counter()
    if args.notebooks:
        _papermill("01_cohort.ipynb", P.root, {"workers": args.workers})
    else:
        cohort.build_cohort(P.raw_dir, P.step("01_cohort"), workers=args.workers)
    times["01 cohort (screen, select, convert)"] = time.perf_counter() - t
    t = time.perf_counter()
    issues = validate_manifest(P.manifest)
    times["manifest validate (with checksums)"] = time.perf_counter() - t
    manifest = pd.read_csv(P.manifest, dtype=str, keep_default_na=False)
    flow = json.loads(P.cohort_flow.read_text())

    t = time.perf_counter()
    if args.notebooks:
        _papermill("02_split.ipynb", P.root, {"split_seed": args.split_seed, "development_institutions": dev_param})
        assigned = pd.read_csv(P.split_csv, dtype=str)
    else:
        assigned, _ = split.make_split(manifest, P.step("02_split"), split_seed=args.split_seed,
                                       development_institutions=dev_param, raw_dir=P.raw_dir)
    times["02 split + audit"] = time.perf_counter() - t
    audit = json.loads((P.root / "02_split" / "leakage_audit.json").read_text())

    print(f"\n== scale {args.scale}, synth_seed {args.seed}, split_seed {args.split_seed} ==")
    print(f"manifest validation: {'OK' if not issues else f'{len(issues)} problem(s), e.g. {issues[0]}'}")
    checks = ", ".join(f"{k}={v['ok']}" for k, v in audit["checks"].items())
    print(f"leakage audit passed: {audit['passed']}  ({checks})")
    print("\n-- Fig. 2 flow (regenerated vs paper) --")
    print(pd.concat([paper.flow_vs_paper(flow), paper.split_vs_paper(assigned)], ignore_index=True).to_string(index=False))
    intended = clinical.set_index("patient_id")["intended_exclusion"]
    excl = pd.read_csv(P.root / "01_cohort" / "exclusions.csv", dtype=str, keep_default_na=False)
    print("\n-- exclusion reason (pipeline) vs intended_exclusion (generator audit) --")
    print(pd.crosstab(excl["reason"], excl["patient_id"].map(intended)).to_string())
    wrongly_included = manifest["patient_id"].map(intended).ne("").sum()
    print(f"included patients the generator meant to exclude: {wrongly_included}")
    role = clinical.set_index("patient_id")["role"]
    ext_ok = (assigned["split"].eq("external_test") == assigned["patient_id"].map(role).eq("external_candidate")).all()
    print(f"external test == generator role external_candidate for every case: {ext_ok}")
    by_case = manifest.drop(columns="split").merge(assigned[["case_id", "split"]], on="case_id")
    print("\n-- Table 1 --")
    print(cohort.table1(by_case).to_string(index=False))
    print("\n-- Table 2 --")
    print(cohort.table2(by_case).to_string(index=False))
    if args.search_seed:
        t = time.perf_counter()
        found = search_split_seeds(manifest, assigned, args.search_seed, split.PAPER_TUNING_FRACTION)
        times[f"seed search ({args.search_seed} seeds)"] = time.perf_counter() - t
        both = found[(found["training_institutions"] == 13) & (found["tuning_institutions"] == 4)] if len(found) else found
        print(f"\n-- split seeds 0..{args.search_seed - 1}: {len(found)} give Table 1's tuning histology, "
              f"{len(both)} of them also 13/4 institutions --")
        print(both.head(10).to_string(index=False))
    print("\n-- timings --")
    for k, v in times.items():
        print(f"{k:40s} {v:8.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
