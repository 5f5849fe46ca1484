"""The nnU-Net hand-over: ``amt export-nnunet`` on a tiny run folder (layout, dataset.json, the split as
fold 0, links, refusals), and, where nnunetv2 is importable, its own integrity check on the export, its
``load_summary_json`` on ``amt evaluate``'s summary and a prediction written by its writer scored as it is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from amtlib import cli
from amtlib.errors import AmtError
from amtlib.evaluation import evaluate, nnunet
from amtlib.io import affine_from_spacing, save_nifti
from amtlib.paths import RunPaths

SPLITS = {"c01": "train", "c02": "train", "c03": "tuning", "c04": "external_test", "c05": "external_test"}


def tiny_run(root: Path) -> RunPaths:
    """01_cohort (manifest, images, masks) and 02_split of five 6 x 24 x 24 cases."""
    P = RunPaths(root)
    rng = np.random.default_rng(0)
    affine = affine_from_spacing((5.0, 0.8, 0.8), (-10.0, -10.0, 30.0))
    rows = []
    for cid in SPLITS:
        image = rng.integers(-1000, 400, (6, 24, 24)).astype(np.int16)
        mask = np.zeros((6, 24, 24), np.uint8)
        mask[2:5, 6:14, 8:16] = 1
        save_nifti(image, affine, P.images_dir / f"{cid}.nii.gz")
        save_nifti(mask, affine, P.masks_dir / f"{cid}.nii.gz")
        rows.append({"case_id": cid, "image_path": f"images/{cid}.nii.gz", "mask_path": f"masks/{cid}.nii.gz",
                     "manufacturer": "SIEMENS", "histology": "thymoma"})
    pd.DataFrame(rows).to_csv(P.manifest, index=False)
    P.split_csv.parent.mkdir(parents=True)
    pd.DataFrame({"case_id": list(SPLITS), "split": list(SPLITS.values())}).to_csv(P.split_csv, index=False)
    return P


def test_export_layout_dataset_json_and_split(tmp_path, capsys):
    P = tiny_run(tmp_path / "run")
    raw = tmp_path / "nnUNet_raw"
    assert cli.main(["export-nnunet", "--run", str(P.root), "--out", str(raw), "--dataset-id", "7"]) == 0
    assert "3 training cases (fold 0: 2 train, 1 val = tuning), 2 test cases" in capsys.readouterr().out
    ds = raw / "Dataset007_AMT"
    assert sorted(p.name for p in (ds / "imagesTr").iterdir()) == ["c01_0000.nii.gz", "c02_0000.nii.gz", "c03_0000.nii.gz"]
    assert sorted(p.name for p in (ds / "labelsTr").iterdir()) == ["c01.nii.gz", "c02.nii.gz", "c03.nii.gz"]
    assert sorted(p.name for p in (ds / "imagesTs").iterdir()) == ["c04_0000.nii.gz", "c05_0000.nii.gz"]
    assert sorted(p.name for p in (ds / "labelsTs").iterdir()) == ["c04.nii.gz", "c05.nii.gz"]
    meta = json.loads((ds / "dataset.json").read_text())
    assert (meta["channel_names"], meta["labels"], meta["numTraining"], meta["file_ending"]) == (
        {"0": "CT"}, {"background": 0, "tumour": 1}, 3, ".nii.gz")
    assert json.loads((ds / "splits_final.json").read_text()) == [{"train": ["c01", "c02"], "val": ["c03"]}]
    # the same file as the run's (a hard link on this file system), and the run is untouched
    assert (ds / "imagesTr" / "c01_0000.nii.gz").samefile(P.images_dir / "c01.nii.gz")
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]


def test_export_refusals_are_one_line(tmp_path, capsys):
    P = tiny_run(tmp_path / "run")
    raw = tmp_path / "raw"
    nnunet.export_dataset(P.root, raw)
    with pytest.raises(AmtError, match="already there"):
        nnunet.export_dataset(P.root, raw)
    with pytest.raises(AmtError, match="1..999"):
        nnunet.export_dataset(P.root, raw, 1000)
    P.split_csv.unlink()
    assert cli.main(["export-nnunet", "--run", str(P.root), "--out", str(tmp_path / "raw2")]) == 2
    err = capsys.readouterr().err
    assert "split.csv" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "raw2").exists()


def test_nnunet_accepts_the_export_and_the_summary(tmp_path, capsys):
    pytest.importorskip("nnunetv2", reason="pip install nnunetv2 --no-deps (+ its imports); "
                                           "benchmarks/check_nnunet.py runs these checks on its own")
    from nnunetv2.evaluation.evaluate_predictions import load_summary_json
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    P = tiny_run(tmp_path / "run")
    ds = nnunet.export_dataset(P.root, tmp_path / "raw").folder
    verify_dataset_integrity(str(ds), num_processes=1)  # raises on any problem
    # an nnU-Net prediction: its own writer, geometry from its own reader of the test image
    io_ = SimpleITKIO()
    preds = tmp_path / "preds"
    preds.mkdir()
    for cid in ("c04", "c05"):
        _, props = io_.read_images([str(ds / "imagesTs" / f"{cid}_0000.nii.gz")])
        seg = np.zeros((6, 24, 24), np.uint8)
        seg[2:5, 6:14, 8:12 if cid == "c04" else 16] = 1
        io_.write_seg(seg, str(preds / f"{cid}.nii.gz"), props)
    for name in ("dataset.json", "plans.json", "predict_from_raw_data_args.json"):
        (preds / name).write_text("{}")
    out = tmp_path / "eval"
    rc = evaluate.cli_main(["--pred", str(preds), "--ref", str(ds / "labelsTs"), "--out", str(out), "--metrics", "hd95,nsd",
                            "--bootstrap", "50", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    summary = load_summary_json(str(out / "summary.json"))
    assert list(summary["mean"]) == [1]  # nnU-Net turned the key "1" back into its label
    dice = {Path(c["reference_file"]).name: c["metrics"][1]["Dice"] for c in summary["metric_per_case"]}
    assert dice == {"c04.nii.gz": pytest.approx(2 * 96 / (96 + 192)), "c05.nii.gz": 1.0}
