"""The nnU-Net hand-over: the paper's split as an nnU-Net v2 raw dataset, and results in its ``summary.json`` schema.

Not in the paper; nnU-Net is the baseline a reviewer will want beside its U-Net. Two directions:

- ``amt export-nnunet --run RUN --out DIR [--dataset-id 501]`` writes ``DIR/Dataset501_AMT/`` with
  ``imagesTr/<case>_0000.nii.gz`` and ``labelsTr/<case>.nii.gz`` (training + tuning cases),
  ``imagesTs``/``labelsTs`` (external test), ``dataset.json`` (one CT channel, labels background 0 and
  tumour 1, ``.nii.gz``) and ``splits_final.json``: fold 0 = the run's institution-level split, training
  cases as ``train`` and tuning cases as ``val`` (``02_split/split.csv``; nnU-Net's planner copies it
  from the raw dataset to where its trainer reads it). Files are hard links to the
  run's ``01_cohort`` NIfTI where the file system allows, else symbolic links, else copies; nnU-Net
  only reads its raw folder. The dataset appears at once (built beside it under a hidden name, then
  renamed); an existing dataset of that id is refused.
- :func:`summary` gives the keys of nnU-Net v2's ``summary.json`` (``metric_per_case`` with
  ``prediction_file``/``reference_file`` and per-label metrics under ``"1"``, ``mean``, ``foreground_mean``)
  that ``amt evaluate`` adds to its own; nnU-Net's ``load_summary_json`` reads the file. Means are
  nnU-Net's: NaN left out (``nanmean``), so an infinite HD95 makes its mean infinite.

nnU-Net itself is not a dependency (benchmarks/check_nnunet.py runs its integrity check on an export).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from amtlib import io
from amtlib.clihelp import HelpFormatter, examples
from amtlib.errors import AmtError
from amtlib.paths import RunPaths, is_safe_id

#: nnU-Net's dataset id when none is given (the first of the range nnU-Net leaves to users' own datasets).
DATASET_ID: int = 501
DATASET_SUFFIX: str = "AMT"
#: The single label nnU-Net's summary reports, as its JSON key.
LABEL_KEY: str = "1"
#: per_case.csv column -> nnU-Net metric name (the rest of per_case's metrics keep their own names).
NNUNET_NAMES: dict[str, str] = {"dice": "Dice", "iou": "IoU"}


def dataset_name(dataset_id: int) -> str:
    """``Dataset501_AMT`` for 501; ``dataset_id`` must be 1..999 (nnU-Net's three digits)."""
    if not 1 <= int(dataset_id) <= 999:
        raise AmtError("--dataset-id", f"nnU-Net dataset ids are 1..999, got {dataset_id}", "e.g. --dataset-id 501")
    return f"Dataset{int(dataset_id):03d}_{DATASET_SUFFIX}"


def summary(per_case: pd.DataFrame, cases: pd.DataFrame, n_voxels: "Sequence[int] | None" = None,
            extra_columns: Sequence[str] = ()) -> dict[str, Any]:
    """nnU-Net v2 ``summary.json`` keys of an evaluation: ``metric_per_case``, ``mean``, ``foreground_mean``.

    ``per_case`` is ``per_case.csv``, ``cases`` the ``case_id, pred_path, ref_path`` table scored,
    ``n_voxels`` each case's image size (for TN; None: TN is None), ``extra_columns`` the extra metrics
    of ``per_case`` to carry (``Evaluation.extra.columns()``).

    Per case under label ``"1"``: ``Dice``, ``IoU``, ``TP``, ``FP``, ``FN``, ``TN`` (voxels; TN needs
    the image size), ``n_pred``, ``n_ref`` as nnU-Net computes them (both empty: Dice and IoU NaN), then
    every extra metric of ``per_case`` under its own name (``hd95_mm``, ``nsd_2mm``, ``pq`` ...).
    ``prediction_file`` is None for a case without prediction. ``mean`` is the NaN-ignoring mean per
    metric; ``foreground_mean`` equals it (one foreground label).
    """
    pc = per_case.reset_index(drop=True)
    extra = list(extra_columns)
    files = cases.set_index(cases["case_id"].astype(str))
    n_vox = np.asarray(n_voxels) if n_voxels is not None else np.full(len(pc), -1)
    per_case = []
    for i, row in pc.iterrows():
        tp, fp, fn = (int(row[c]) for c in ("tp_voxels", "fp_voxels", "fn_voxels"))
        m: dict[str, Any] = {"Dice": float(row["dice"]), "IoU": float(row["iou"]), "FP": fp, "TP": tp, "FN": fn,
                             "TN": int(n_vox[i]) - tp - fp - fn if n_vox[i] >= 0 else None,
                             "n_pred": tp + fp, "n_ref": tp + fn}
        m.update({c: float(row[c]) for c in extra})
        src = files.loc[str(row["case_id"])] if str(row["case_id"]) in files.index else None
        pred = None if src is None or _missing(src.get("pred_path")) else str(Path(src["pred_path"]).resolve())
        ref = None if src is None else str(Path(src["ref_path"]).resolve())
        per_case.append({"metrics": {LABEL_KEY: m}, "prediction_file": pred, "reference_file": ref})
    keys = ["Dice", "IoU", "FP", "TP", "FN", "TN", "n_pred", "n_ref", *extra]
    mean = {k: _nanmean([c["metrics"][LABEL_KEY][k] for c in per_case]) for k in keys}
    return {"metric_per_case": per_case, "mean": {LABEL_KEY: mean}, "foreground_mean": dict(mean)}


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or str(v) == ""


def _nanmean(values: list[Any]) -> float:
    x = np.array([np.nan if v is None else v for v in values], dtype=float)
    ok = x[~np.isnan(x)]
    return float(ok.mean()) if ok.size else math.nan


@dataclass
class Export:
    """What :func:`export_dataset` wrote: the dataset folder, case counts and how files were placed."""

    folder: Path
    n_train: int
    n_val: int
    n_test: int
    placed: dict[str, int] = field(default_factory=lambda: {"hard link": 0, "symbolic link": 0, "copy": 0})


def _place(src: Path, dst: Path, placed: dict[str, int]) -> None:
    """``dst`` as a hard link to ``src``, else a symbolic link, else a copy (counted in ``placed``)."""
    try:
        os.link(src, dst)
        placed["hard link"] += 1
        return
    except OSError:
        pass
    try:
        os.symlink(src.resolve(), dst)
        placed["symbolic link"] += 1
    except OSError:
        shutil.copy2(src, dst)
        placed["copy"] += 1


def split_cases(run_dir: str | Path) -> pd.DataFrame:
    """The run's cases with ``case_id, split, image, mask`` (absolute paths), checked for nnU-Net.

    Reads ``01_cohort/manifest.csv`` and ``02_split/split.csv``. Raises :class:`AmtError` naming the
    file when one is missing, a case id cannot name a file, or an image or mask is missing.
    """
    P = RunPaths(run_dir)
    for f, step in ((P.manifest, "01_cohort"), (P.split_csv, "02_split")):
        if not f.is_file():
            raise AmtError(f, "not found", f"run the steps up to {step} first (amt run --to {step} --out {P.root})")
    manifest = pd.read_csv(P.manifest, dtype={"case_id": str})
    split = pd.read_csv(P.split_csv, dtype={"case_id": str})
    m = manifest.drop(columns=["split"], errors="ignore").merge(split[["case_id", "split"]], on="case_id")
    if m.empty:
        raise AmtError(P.split_csv, "no case of the split is in the manifest", "run 02_split again on this run folder")
    bad = [c for c in m["case_id"] if not is_safe_id(c)]
    if bad:
        raise AmtError(P.manifest, f"case id {bad[0]!r} cannot name a file (letters, digits, '.', '_', '-')",
                       "rename the case in the manifest")
    base = P.manifest.parent
    out = pd.DataFrame({"case_id": m["case_id"], "split": m["split"],
                        "image": [(base / p).resolve() for p in m["image_path"]],
                        "mask": [(base / p).resolve() for p in m["mask_path"]]}).sort_values("case_id")
    for col in ("image", "mask"):
        lacking = [p for p in out[col] if not p.is_file()]
        if lacking:
            raise AmtError(lacking[0], f"{col} of a case in the manifest is missing", "run 01_cohort again on this run folder")
    return out.reset_index(drop=True)


def dataset_json(n_training: int, run_dir: Path) -> dict[str, Any]:
    """nnU-Net v2 ``dataset.json``: one CT channel (CT normalisation), labels background/tumour, ``.nii.gz``."""
    return {"channel_names": {"0": "CT"}, "labels": {"background": 0, "tumour": 1}, "numTraining": int(n_training),
            "file_ending": ".nii.gz", "name": DATASET_SUFFIX,
            "description": "Anterior mediastinal tumour segmentation in chest CT, exported by amt export-nnunet from "
                           f"the run folder {run_dir}; splits_final.json holds its institution-level split as fold 0"}


def splits_final(cases: pd.DataFrame) -> list[dict[str, list[str]]]:
    """nnU-Net's ``splits_final.json``: one fold, ``train`` = training cases, ``val`` = tuning cases."""
    ids = {s: sorted(cases.loc[cases["split"] == s, "case_id"]) for s in ("train", "tuning")}
    return [{"train": ids["train"], "val": ids["tuning"]}]


def export_dataset(run_dir: str | Path, out: str | Path, dataset_id: int = DATASET_ID) -> Export:
    """Write the run's cases as the nnU-Net v2 raw dataset ``out/DatasetNNN_AMT`` (module docstring).

    Raises :class:`AmtError` when ``out`` already holds a dataset with this id, or the run lacks the
    cohort or the split. The run folder is only read.
    """
    name = dataset_name(dataset_id)
    cases = split_cases(run_dir)
    out = io.refuse_link(Path(out), "--out")
    clash = sorted(p.name for p in out.glob(f"Dataset{int(dataset_id):03d}_*")) if out.is_dir() else []
    if clash:
        raise AmtError(out / clash[0], f"an nnU-Net dataset with id {int(dataset_id):03d} is already there",
                       "remove it or choose another --dataset-id")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    result = Export(out / name, int((cases["split"] == "train").sum()), int((cases["split"] == "tuning").sum()),
                    int((cases["split"] == "external_test").sum()))
    try:
        for part, splits in (("Tr", ("train", "tuning")), ("Ts", ("external_test",))):
            (tmp / f"images{part}").mkdir(parents=True)
            (tmp / f"labels{part}").mkdir()
            for r in cases[cases["split"].isin(splits)].itertuples(index=False):
                _place(r.image, tmp / f"images{part}" / f"{r.case_id}_0000.nii.gz", result.placed)
                _place(r.mask, tmp / f"labels{part}" / f"{r.case_id}.nii.gz", result.placed)
        io.write_json(tmp / "dataset.json", dataset_json(result.n_train + result.n_val, RunPaths(run_dir).root))
        io.write_json(tmp / "splits_final.json", splits_final(cases))
        os.rename(tmp, result.folder)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise AmtError(out, f"writing the nnU-Net dataset failed ({exc.strerror or exc})",
                       "free disk space or fix the permissions, then run again") from None
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="amt export-nnunet",
        description="Write a run's cohort and institution-level split as an nnU-Net v2 raw dataset: "
                    "imagesTr/labelsTr (training + tuning), imagesTs/labelsTs (external test), dataset.json and "
                    "splits_final.json (fold 0: train = training, val = tuning). Files are hard-linked where possible.",
        epilog="then, with nnU-Net installed (README: Compare with nnU-Net on the paper's split):\n"
               "  nnUNetv2_plan_and_preprocess -d ID --verify_dataset_integrity   (copies splits_final.json along)\n"
               "  nnUNetv2_train ID 3d_fullres 0   (fold 0 = the run's split)\n"
               "  nnUNetv2_predict -i DatasetNNN_AMT/imagesTs -o PRED -d ID -c 3d_fullres -f 0\n"
               "  amt evaluate --pred PRED --ref DatasetNNN_AMT/labelsTs --out DIR\n\n"
               + examples("amt export-nnunet --run runs/paper --out $nnUNet_raw",
                          "amt export-nnunet --run runs/demo --out /tmp/nnUNet_raw --dataset-id 502"),
        formatter_class=HelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="run folder with 01_cohort and 02_split")
    p.add_argument("--out", required=True, type=Path, help="nnU-Net raw folder ($nnUNet_raw); DatasetNNN_AMT is made inside")
    p.add_argument("--dataset-id", type=int, default=DATASET_ID, help="nnU-Net dataset id, 1..999")
    return p


def cli_main(argv: list[str] | None = None) -> int:
    """``amt export-nnunet``: exit 0, or 2 with one line for bad input."""
    from amtlib.errors import debug_requested, run_guarded

    argv = list(sys.argv[1:] if argv is None else argv)
    return run_guarded("amt export-nnunet", _cli, argv, debug_requested(argv))


def _cli(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    res = export_dataset(args.run, args.out, args.dataset_id)
    how = ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in res.placed.items() if n)
    sys.stdout.write(f"wrote {res.folder}: {res.n_train + res.n_val} training cases (fold 0: {res.n_train} train, "
                     f"{res.n_val} val = tuning), {res.n_test} test cases in imagesTs/labelsTs; files: {how}\n")
    return 0
