#!/usr/bin/env python3
"""Benchmark ``amt evaluate`` on synthetic mask pairs (paper scale: 164 CTs of 512 x 512 x 60 voxels).

Writes seeded synthetic reference/prediction NIfTI pairs to a temporary folder, then prints:

- floor: reading every mask plus one connected-components pass per mask (the least any lesion-wise
  evaluation must do);
- full: ``amt evaluate`` end to end (voxel metrics, components once, IoU matrix once, matching at all
  19 thresholds, 2000-resample bootstrap FROC, CSV writing);
- naive: recomputing components and pairwise IoUs from the masks at every threshold, timed on
  ``--naive-cases`` cases and extrapolated per case (its counts are checked against the full run);
- boundary: ``amt evaluate --metrics hd95,assd,nsd`` (HD95, ASSD, NSD at 2 mm inside each lesion's
  box), against the floor (target: within 2x) and against MONAI's whole-volume
  compute_hausdorff_distance + compute_average_surface_distance + compute_surface_dice on the same
  pairs (target: >= 10x faster). MONAI takes seconds per pair here, so it is timed on
  ``--monai-cases`` pairs and scaled to all of them (said so in the output); its values are checked
  against ours on those pairs;
- picai_eval, when installed (it sweeps a confidence threshold, not IoU, so it is only noted).

Floor, full and boundary runs are repeated ``--repeat`` times, interleaved, and the fastest of each is
reported (on a shared machine the others measure the neighbours).

    python benchmarks/bench_evaluate.py                       # paper scale (minutes)
    python benchmarks/bench_evaluate.py --n-cases 8 --shape 20,128,128
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from amtlib.evaluation import evaluate, lesions
from amtlib.io import affine_from_spacing, load_nifti, save_nifti

SPACING = (5.0, 0.7, 0.7)


def ellipsoid(mask: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> None:
    """Set an axis-aligned ellipsoid (voxel centre, radii) in ``mask`` in place, touching only its box."""
    lo = np.maximum(np.floor(centre - radii).astype(int), 0)
    hi = np.minimum(np.ceil(centre + radii).astype(int) + 1, mask.shape)
    if np.any(hi <= lo):
        return
    z, y, x = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    inside = ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((x - centre[2]) / radii[2]) ** 2 <= 1
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] |= inside


def synthetic_pair(shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A reference with 1-2 tumours (20-120 mm) and an imperfect prediction with FPs and specks."""
    ref = np.zeros(shape, dtype=bool)
    pred = np.zeros(shape, dtype=bool)
    sp = np.array(SPACING)
    for _ in range(1 + int(rng.random() < 0.15)):
        radii = np.maximum(np.array([rng.uniform(10, 40), *rng.uniform(10, 60, 2)]) / sp, 1.0)
        centre = np.array(shape) * rng.uniform(0.3, 0.7, 3)
        ellipsoid(ref, centre, radii)
        if rng.random() > 0.05:
            ellipsoid(pred, centre + rng.normal(0, 3, 3) / sp, radii * rng.uniform(0.6, 1.3, 3))
    if rng.random() < 0.4:
        ellipsoid(pred, np.array(shape) * rng.uniform(0.2, 0.8, 3), np.maximum(rng.uniform(3, 15, 3) / sp, 1.0))
    for _ in range(rng.integers(0, 4)):
        z, y, x = (rng.integers(0, s - 2) for s in shape)
        pred[z, y:y + 2, x:x + 2] = True
    return pred.astype(np.uint8), ref.astype(np.uint8)


def write_cases(folder: Path, n: int, shape: tuple[int, int, int], seed: int) -> tuple[Path, Path]:
    pred_dir, ref_dir = folder / "pred", folder / "ref"
    rng = np.random.default_rng(seed)
    affine = affine_from_spacing(SPACING)
    for i in range(n):
        pred, ref = synthetic_pair(shape, rng)
        save_nifti(ref, affine, ref_dir / f"case{i:04d}.nii.gz")
        save_nifti(pred, affine, pred_dir / f"case{i:04d}.nii.gz")
    return pred_dir, ref_dir


def floor(cases: pd.DataFrame) -> float:
    """Seconds to read every mask and label its components once."""
    t0 = time.perf_counter()
    for r in cases.itertuples(index=False):
        for path in (r.pred_path, r.ref_path):
            arr = load_nifti(path)[0]
            lesions.label_components(arr, 26)
    return time.perf_counter() - t0


def naive_case(pred_path: str, ref_path: str, thresholds: np.ndarray) -> np.ndarray:
    """TP per threshold, recomputing components and each pair's IoU from the full masks every time."""
    pred, ref = load_nifti(pred_path)[0] != 0, load_nifti(ref_path)[0] != 0
    tps = []
    for t in thresholds:
        pl, n_p = lesions.label_components(pred, 26)
        rl, n_r = lesions.label_components(ref, 26)
        keep = [i for i in range(1, n_p + 1) if np.count_nonzero(pl == i) >= lesions.MIN_PRED_VOXELS]
        iou = np.zeros((len(keep), n_r))
        for a, i in enumerate(keep):
            pi = pl == i
            for j in range(1, n_r + 1):
                rj = rl == j
                inter = np.count_nonzero(pi & rj)
                iou[a, j - 1] = inter / np.count_nonzero(pi | rj) if inter else 0.0
        tps.append(len(lesions.match_lesions(iou, t)))
    return np.array(tps)


def monai_case(pred_path: str, ref_path: str) -> tuple[dict[str, float], float]:
    """MONAI's three whole-volume boundary functions on one pair: values and seconds (reading not timed)."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    pred, ref = load_nifti(pred_path)[0] != 0, load_nifti(ref_path)[0] != 0
    P, R = (torch.from_numpy(m[None, None].astype(np.float32)) for m in (pred, ref))
    t0 = time.perf_counter()
    values = {"hd95_mm": compute_hausdorff_distance(P, R, percentile=95, spacing=SPACING).item(),
              "assd_mm": compute_average_surface_distance(P, R, symmetric=True, spacing=SPACING).item(),
              "nsd_2mm": compute_surface_dice(P, R, [2.0], include_background=True, spacing=SPACING).item()}
    return values, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-cases", type=int, default=164)
    ap.add_argument("--shape", default="60,512,512", help="z,y,x voxels (default 60,512,512)")
    ap.add_argument("--naive-cases", type=int, default=8, help="cases timed for the naive approach (extrapolated)")
    ap.add_argument("--monai-cases", type=int, default=6, help="pairs timed with MONAI's whole-volume functions (scaled)")
    ap.add_argument("--repeat", type=int, default=3, help="floor, full and boundary runs each timed this often (fastest kept)")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    if len(shape) != 3:
        ap.error("--shape needs three integers z,y,x")
    with tempfile.TemporaryDirectory(prefix="bench_evaluate_") as tmp:
        t0 = time.perf_counter()
        pred_dir, ref_dir = write_cases(Path(tmp), args.n_cases, shape, args.seed)
        print(f"wrote {args.n_cases} synthetic pairs of {shape[2]} x {shape[1]} x {shape[0]} voxels in "
              f"{time.perf_counter() - t0:.1f} s (not timed below)")
        cases = evaluate.pair_folders(pred_dir, ref_dir)
        common = ["--pred", str(pred_dir), "--ref", str(ref_dir), "--bootstrap", str(args.bootstrap),
                  "--workers", str(args.workers), "--no-progress"]
        t_floor = t_full = t_boundary = float("inf")
        for _ in range(max(args.repeat, 1)):
            t_floor = min(t_floor, floor(cases))
            for extra, out_name in (([], "out"), (["--metrics", "hd95,assd,nsd"], "out_b")):
                t0 = time.perf_counter()
                rc = evaluate.cli_main([*common, "--out", str(Path(tmp) / out_name), *extra])
                took = time.perf_counter() - t0
                if rc != 0:
                    return rc
                if extra:
                    t_boundary = min(t_boundary, took)
                else:
                    t_full = min(t_full, took)
        counts = pd.read_csv(Path(tmp) / "out" / "lesion_counts.csv", dtype={"case_id": str})
        k = min(args.naive_cases, len(cases))
        t0 = time.perf_counter()
        for r in cases.head(k).itertuples(index=False):
            tp = naive_case(r.pred_path, r.ref_path, lesions.IOU_THRESHOLDS)
            ours = counts.loc[counts["case_id"] == r.case_id, "tp"].to_numpy()
            if not np.array_equal(tp, ours):
                sys.stderr.write(f"naive and full disagree on {r.case_id}: {tp} vs {ours}\n")
                return 1
        t_naive = (time.perf_counter() - t0) / max(k, 1) * len(cases)
        ours = pd.read_csv(Path(tmp) / "out_b" / "per_case.csv", dtype={"case_id": str}).set_index("case_id")
        km = min(args.monai_cases, len(cases))
        t_monai_part, worst = 0.0, 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI's deprecation notices and its empty-mask warnings
            for r in cases.head(km).itertuples(index=False):
                values, seconds = monai_case(r.pred_path, r.ref_path)
                t_monai_part += seconds
                for key, v in values.items():
                    mine = float(ours.loc[r.case_id, key])
                    if np.isfinite(v) or np.isfinite(mine):
                        worst = max(worst, abs(v - mine))
        t_monai = t_monai_part / max(km, 1) * len(cases)
    n = len(cases)
    print(f"fastest of {max(args.repeat, 1)} interleaved runs each:")
    print(f"floor (read + one components pass per mask): {t_floor:8.1f} s  ({t_floor / n * 1000:.0f} ms/case)")
    print(f"full amt evaluate (19 thresholds, {args.bootstrap} bootstrap resamples, workers={args.workers}): "
          f"{t_full:8.1f} s  ({t_full / n * 1000:.0f} ms/case)  = {t_full / t_floor:.2f} x floor")
    print(f"naive (components + IoUs recomputed per threshold; {k} cases timed, extrapolated to {n}): "
          f"{t_naive:8.1f} s  ({t_naive / n * 1000:.0f} ms/case)  = {t_naive / t_full:.1f} x full; counts identical")
    inc = t_boundary - t_full
    print(f"full + boundary metrics (--metrics hd95,assd,nsd: HD95, ASSD, NSD 2 mm): {t_boundary:8.1f} s  "
          f"({t_boundary / n * 1000:.0f} ms/case)  = {t_boundary / t_floor:.2f} x floor (target <= 2); the boundary "
          f"metrics alone {inc:.1f} s ({inc / n * 1000:.0f} ms/case)")
    print(f"MONAI whole-volume compute_hausdorff_distance + compute_average_surface_distance + compute_surface_dice "
          f"(reading not timed; {km} pairs timed, scaled to {n}): {t_monai:8.1f} s  ({t_monai / n * 1000:.0f} ms/case)  "
          f"= {t_monai / max(inc, 1e-9):.1f} x our boundary metrics alone, {t_monai / t_boundary:.1f} x our whole "
          f"evaluation with them (target >= 10); largest difference from MONAI on those pairs {worst:.2g} mm")
    try:
        import picai_eval  # noqa: F401
        print("picai_eval is installed but sweeps a detection-confidence threshold, not IoU; not compared")
    except ImportError:
        print("picai_eval not installed; skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
