"""``amt predict`` on a real 512x512 chest CT beside its floor, the sliding window's forward passes alone.

The CT is LIDC-IDRI-0001 (512x512x133 at 0.703x0.703x2.5 mm), the series ``amt fetch`` caches. Per
input kind (the NIfTI file; the same voxels as a DICOM series, with SEG and RTSTRUCT written) it
prints the seconds of one series through ``amt predict`` (read, resample to the training grid,
sliding window, back to the original grid, threshold, write) and the floor measured in the same run
(``predict_probability`` on the volume already on the training grid and normalised), and their
ratio (target at most 1.3). ``--tta`` is reported as its own ratio to the plain prediction. Peak
memory is the maximum resident set of a child ``amt predict`` on a 512x512x600 volume (LIDC stacked
along z), target at most 3 GB.

    python benchmarks/bench_predict.py                   # demo architecture, untrained weights
    python benchmarks/bench_predict.py --model runs/demo # the trained demo model

The weights do not change the cost, so without ``--model`` a model of ``configs/demo.yaml``'s
architecture with untrained weights stands in (said in the output). Timings are best-of-``--repeat``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from amtlib import fetch
from amtlib.dicom.dicomio import write_ct_series
from amtlib.io import load_nifti, save_nifti
from amtlib.segmentation import infer
from amtlib.segmentation.predict import run_predict
from amtlib.segmentation.preprocess import Normalisation, case_from_array
from amtlib.segmentation.train import TrainConfig, _model_blob, build_model, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def stand_in_model(path: Path, config: str = "demo") -> Path:
    """``model.pt`` of a config's architecture (configs/<config>.yaml) with untrained weights."""
    cfg = TrainConfig.from_params(yaml.safe_load((ROOT / "configs" / f"{config}.yaml").read_text()))
    torch.manual_seed(0)
    model = build_model(cfg)
    return save_checkpoint(path, _model_blob(model, cfg, Normalisation(-1024.0, 3071.0), 0, float("nan")))


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def floor_s(model_path: Path, image: np.ndarray, spacing, affine, repeat: int, mirror: bool = False) -> float:
    model, meta = infer.load_model(model_path)
    case = case_from_array("floor", image, spacing, affine, meta.get("spacing_mm"))
    norm = Normalisation.from_dict(meta["norm"])
    x = norm.apply(case.image_hu)
    return best(lambda: infer.predict_probability(model, x, meta["patch"], "cpu", float(meta["sw_overlap"]), 4,
                                                  norm.pad_value, True, mirror), repeat)


def predict_s(model_path: Path, source: Path, work: Path, repeat: int, **options) -> float:
    runs = iter(range(repeat))

    def once() -> None:
        out = work / f"out-{next(runs)}-{options.get('tta', False)}-{source.name}"
        run = run_predict(str(source), model_path, out, {"format": "both", **options}, "cpu", say=lambda _: None)
        assert (run.table["status"] == "predicted").all(), run.table

    return best(once, repeat)


def peak_rss_gb(model_path: Path, image: np.ndarray, affine: np.ndarray, slices: int, work: Path) -> float:
    reps = int(np.ceil(slices / image.shape[0]))
    big = np.concatenate([image] * reps, axis=0)[:slices]
    path = save_nifti(big.astype(np.int16), affine, work / "stacked600.nii.gz")
    del big
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, "-m", "amtlib.cli", "predict", "--model", str(model_path), "--input", str(path),
                    "--out", str(work / "out-big"), "--device", "cpu"], check=True, stdout=subprocess.DEVNULL)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert peak_kb >= before
    return peak_kb / 1024 ** 2


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="a run folder or model.pt (default: demo architecture, untrained)")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--slices", type=int, default=600, help="slices of the peak-memory volume")
    p.add_argument("--no-tta", action="store_true", help="skip the test-time mirroring measurement")
    p.add_argument("--paper", action="store_true",
                   help="also the paper's architecture (configs/paper.yaml, native grid) on the CT's 48 central "
                        "slices: minutes on a CPU, where the forward passes dominate")
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.model:
            from amtlib.segmentation.model_card import resolve_model

            model_path, _ = resolve_model(args.model)
            which = str(model_path)
        else:
            model_path = stand_in_model(work / "model.pt")
            which = "configs/demo.yaml architecture, untrained weights (same cost as trained)"
        lidc = fetch.fetch_backgrounds()["lidc_ct"]
        image, spacing, affine = load_nifti(lidc, dtype=np.float32)
        series = work / "dicom"
        write_ct_series(image, spacing, series, {"PatientID": "LIDC-IDRI-0001", "Manufacturer": "GE MEDICAL SYSTEMS"}, "bench")
        print(f"model: {which}; CT: LIDC-IDRI-0001 {image.shape[2]}x{image.shape[1]}x{image.shape[0]} at "
              f"{spacing[2]:.3f}x{spacing[1]:.3f}x{spacing[0]:.2f} mm; torch threads {torch.get_num_threads()}")
        floor = floor_s(model_path, image, spacing, affine, args.repeat)
        nifti = predict_s(model_path, lidc, work, args.repeat)
        dicom = predict_s(model_path, series, work, args.repeat)
        print(f"floor (sliding-window forward passes alone): {floor:.2f} s")
        print(f"amt predict, NIfTI in, mask out:             {nifti:.2f} s  ({nifti / floor:.2f}x the floor; target <= 1.3x)")
        print(f"amt predict, DICOM in, mask + SEG + RTSTRUCT: {dicom:.2f} s  ({dicom / floor:.2f}x the floor)")
        if not args.no_tta:
            tta_floor = floor_s(model_path, image, spacing, affine, 1, mirror=True)
            tta = predict_s(model_path, lidc, work, 1, tta=True)
            print(f"--tta (8 mirrorings), NIfTI in:              {tta:.2f} s  ({tta / nifti:.2f}x plain predict; "
                  f"its floor {tta_floor:.2f} s, {tta / tta_floor:.2f}x)")
        peak = peak_rss_gb(model_path, image, affine, args.slices, work)
        print(f"peak resident memory, 512x512x{args.slices} NIfTI: {peak:.2f} GB (target <= 3 GB)")
        if args.paper:
            paper = stand_in_model(work / "paper.pt", "paper")
            mid = image.shape[0] // 2
            crop = save_nifti(image[mid - 24: mid + 24].astype(np.int16), affine, work / "lidc48.nii.gz")
            p_floor = floor_s(paper, image[mid - 24: mid + 24], spacing, affine, 1)
            p_pred = predict_s(paper, crop, work, 1, format="nifti")
            print(f"paper architecture (untrained), 512x512x48: floor {p_floor:.1f} s, amt predict {p_pred:.1f} s "
                  f"({p_pred / p_floor:.2f}x the floor)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
