#!/usr/bin/env python3
"""nnU-Net's own tools on the hand-over: its integrity check on ``amt export-nnunet``, its metrics and
``load_summary_json`` on ``amt evaluate``'s summary.json, and an nnU-Net-written prediction folder scored as it is.

nnunetv2 is not a dependency of this project; install it beside the project without touching the
environment (only what these imports need), then run this on a run folder with steps 01-03:

    .venv/bin/pip install --no-deps --target /tmp/xcheck nnunetv2 batchgenerators acvl-utils \\
        dynamic-network-architectures blosc2 numexpr msgpack ndindex
    PYTHONPATH=/tmp/xcheck .venv/bin/python benchmarks/check_nnunet.py --run runs/demo

Steps (the run folder is only read; everything is written to a temporary folder):
1. ``amt export-nnunet`` into a fresh nnUNet_raw, then nnU-Net's ``verify_dataset_integrity``;
2. the run's external-test predictions rewritten by nnU-Net's own writer (SimpleITKIO, geometry from
   its reader of each test image) into a folder with nnU-Net's side files (dataset.json, plans.json,
   predict_from_raw_data_args.json), as ``nnUNetv2_predict`` leaves it;
3. ``amt evaluate`` on that folder against ``labelsTs`` as it is; its Dice per case must equal the
   run's own step 04 Dice;
4. nnU-Net's ``compute_metrics_on_folder`` on the same folders: its TP, FP, FN, TN and Dice per case
   must equal those in amt evaluate's summary.json; and ``load_summary_json`` must read that file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import pandas as pd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/demo"))
    ap.add_argument("--dataset-id", type=int, default=501)
    args = ap.parse_args(argv)
    try:
        from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder, load_summary_json
        from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
        from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    except ImportError as exc:
        sys.stderr.write(f"nnunetv2 not importable ({exc}); see this script's docstring\n")
        return 2
    from amtlib.evaluation import evaluate, nnunet
    from amtlib.paths import RunPaths

    P = RunPaths(args.run)
    with tempfile.TemporaryDirectory(prefix="check_nnunet_") as tmp:
        res = nnunet.export_dataset(P.root, Path(tmp) / "nnUNet_raw", args.dataset_id)
        print(f"1. exported {res.folder.name}: {res.n_train} train + {res.n_val} val (fold 0) in imagesTr, {res.n_test} in "
              f"imagesTs; files: {res.placed}")
        verify_dataset_integrity(str(res.folder), num_processes=2)
        print("   nnU-Net verify_dataset_integrity: passed (it raises on any problem)")
        split = json.loads((res.folder / "splits_final.json").read_text())
        own = pd.read_csv(P.split_csv, dtype={"case_id": str})
        same = (split[0]["train"] == sorted(own.loc[own["split"] == "train", "case_id"])
                and split[0]["val"] == sorted(own.loc[own["split"] == "tuning", "case_id"]))
        print(f"   splits_final.json fold 0 = the run's 02_split train/tuning: {same}")
        rw, preds = SimpleITKIO(), Path(tmp) / "nnunet_predictions"
        preds.mkdir()
        written = 0
        for img in sorted((res.folder / "imagesTs").glob("*_0000.nii.gz")):
            cid = img.name[: -len("_0000.nii.gz")]
            ours = P.predictions_dir / f"{cid}.nii.gz"
            if not ours.is_file():
                continue
            _, props = rw.read_images([str(img)])
            seg, _ = rw.read_seg(str(ours))
            rw.write_seg(seg[0], str(preds / f"{cid}.nii.gz"), props)
            written += 1
        for name in ("dataset.json", "plans.json", "predict_from_raw_data_args.json"):
            (preds / name).write_text("{}\n")
        print(f"2. {written} predictions rewritten by nnU-Net's SimpleITKIO into a folder with its side files")
        out = Path(tmp) / "amt_eval"
        rc = evaluate.cli_main(["--pred", str(preds), "--ref", str(res.folder / "labelsTs"), "--out", str(out),
                                "--metrics", "hd95,assd,nsd,pq", "--no-progress", "--bootstrap", "200"])
        if rc != 0:
            return rc
        pc = pd.read_csv(out / "per_case.csv", dtype={"case_id": str}).set_index("case_id")
        step04 = pd.read_csv(P.per_case, dtype={"case_id": str}).set_index("case_id") if P.per_case.is_file() else None
        if step04 is not None:
            common = pc.index.intersection(step04.index)
            diff = (pc.loc[common, "dice"] - step04.loc[common, "dice"]).abs().max()
            print(f"3. amt evaluate scored the nnU-Net folder as it is: {len(pc)} cases; Dice vs the run's step 04 on "
                  f"{len(common)} cases: largest difference {diff:.2g}")
        theirs = compute_metrics_on_folder(str(res.folder / "labelsTs"), str(preds), str(Path(tmp) / "nnunet_summary.json"),
                                           rw, ".nii.gz", [1], num_processes=2)
        mine = load_summary_json(str(out / "summary.json"))
        by_ref = {Path(c["reference_file"]).name: c["metrics"][1] for c in mine["metric_per_case"]}
        worst, keys = 0.0, ("TP", "FP", "FN", "TN", "Dice", "IoU", "n_pred", "n_ref")
        for c in theirs["metric_per_case"]:
            m, t = by_ref[Path(c["reference_file"]).name], c["metrics"][1]
            for k in keys:
                a, b = float(m[k]), float(t[k])
                if not (math.isnan(a) and math.isnan(b)):
                    worst = max(worst, abs(a - b))
        print(f"4. load_summary_json read amt evaluate's summary.json: {len(mine['metric_per_case'])} cases, label keys "
              f"{list(mine['mean'])}, mean Dice {mine['mean'][1]['Dice']:.4f} (nnU-Net's own: {theirs['mean'][1]['Dice']:.4f}); "
              f"largest per-case difference from nnU-Net's compute_metrics_on_folder over {', '.join(keys)}: {worst:.2g}")
        return 0 if worst < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
