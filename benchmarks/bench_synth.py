"""Benchmark of the demo cohort generator (amtlib.phantom) and a check of its scale-1.0 counts.

Times ``synthesize_cohort`` at the demo scale (default 0.25, 2 workers, real backgrounds), prints the
scale-1.0 clinical-table counts beside the paper's (screened / excluded / included / institutions,
histology per intended split, external-test vendors), and optionally draws a montage of a few cases
(axial + sagittal, mediastinal window, reference outline) read back from the written DICOM and masks.

    .venv/bin/python benchmarks/bench_synth.py --out /tmp/bench_synth --montage /tmp/demo_cases.png
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from amtlib.paper import reported
from amtlib.phantom.clinical import HISTOLOGIES, design_cohort

_SPLIT_KEYS = {"train": "training", "tuning": "tuning", "external_test": "external_testing"}


def paper_comparison(seed: int = 0) -> pd.DataFrame:
    """Scale-1.0 design counts beside the paper's, one row per quantity."""
    d = design_cohort(1.0, seed)
    inc = d[d["intended_exclusion"] == ""]
    flow, t1, t2 = reported()["cohort_flow"], reported()["table1"], reported()["table2"]
    rows = [
        ("screened", len(d), flow["screened"]),
        ("excluded", int((d["intended_exclusion"] != "").sum()), flow["excluded"]),
        ("included", len(inc), flow["included"]),
        ("included institutions", inc["institution"].nunique(), flow["included_institutions"]),
        ("external test institutions", inc[inc["intended_split"] == "external_test"]["institution"].nunique(), flow["external_test"]["institutions"]),
        ("development institutions", inc[inc["intended_split"] != "external_test"]["institution"].nunique(),
         flow["training"]["institutions"] + flow["tuning"]["institutions"] - 2),
        ("male / female", f"{(inc['sex'] == 'M').sum()}/{(inc['sex'] == 'F').sum()}", f"{flow['sex']['male']}/{flow['sex']['female']}"),
    ]
    for split, key in _SPLIT_KEYS.items():
        part = inc[inc["intended_split"] == split]
        rows.append((f"{split} cases", len(part), {"train": flow["training"], "tuning": flow["tuning"], "external_test": flow["external_test"]}[split]["cases"]))
        ages = part["age"].astype(float)
        rows.append((f"{split} age median (range)", f"{ages.median():.1f} ({ages.min():.0f}-{ages.max():.0f})",
                     "{:.1f} ({}-{})".format(*t1["age_median_range"][key])))
        for h in HISTOLOGIES:
            rows.append((f"{split} {h}", int((part["histology"] == h).sum()), t1["histology_counts"][h][key]))
    ext = inc[inc["intended_split"] == "external_test"]
    for vendor, n in t2.items():
        rows.append((f"external_test {vendor}", int((ext["vendor"] == vendor).sum()), n))
    rows.append(("external_test slice 5 mm", int((ext["slice_thickness_mm"] == 5.0).sum()), flow["external_test"]["cases"]))
    out = pd.DataFrame(rows, columns=["quantity", "generated", "paper"])
    out["match"] = out["generated"].astype(str) == out["paper"].astype(str)
    return out


def montage(raw_dir: Path, out_png: Path, n_cases: int = 8) -> Path:
    """Axial + sagittal views of ``n_cases`` selected series, read back from DICOM and mask files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from amtlib.dicom.dicomio import read_series
    from amtlib.figures import REFERENCE_COLOUR, save_figure, show_slice
    from amtlib.io import load_nifti

    syn = pd.read_csv(raw_dir / "synthesis.csv")
    syn = syn[syn["expected_selected"] & syn["defect"].isna()]
    wanted = [
        syn["effusion"], syn["low_contrast"], syn["histology"] == "thymic_carcinoma", syn["histology"] == "lymphoma",
        syn["histology"] == "thymic_cyst", syn["histology"].str.contains("teratoma"), syn["aorta_contact_ratio"] > 0.05,
    ]
    picks: list[int] = []
    for key in ("lidc", "lung1", "lung2"):
        picks += list(syn[(syn["background"] == key) & (syn["size_bin_measured"] == "large")].head(1).index)
    for cond in wanted:
        picks += [i for i in syn[cond].index if i not in picks][:1]
    picks = list(dict.fromkeys(picks + list(syn.index)))[:n_cases]
    fig, axes = plt.subplots(2, len(picks), figsize=(3.2 * len(picks), 6.4))
    for col, idx in enumerate(picks):
        r = syn.loc[idx]
        vol, geom = read_series(raw_dir / r["series_folder"])
        mask, _, affine = load_nifti(raw_dir / "masks" / f"{r['series_uid']}.nii.gz")
        anat, _, _ = load_nifti(raw_dir / "anatomy" / f"{r['series_uid']}.nii.gz")
        assert mask.shape == vol.shape and np.allclose(affine, geom["affine"], atol=1e-4)
        k = int(np.argmax(mask.sum(axis=(1, 2))))
        x = int(np.argmax(mask.sum(axis=(0, 1))))
        title = f"{r['patient_id']} {r['background']}\n{r['histology']} {r['max_axial_diameter_mm']:.0f} mm, {r['vendor'].split('_')[0]}"
        show_slice(axes[0, col], vol[k], [(mask[k], REFERENCE_COLOUR), (anat[k] == 201, "#33dd33")], geom["spacing"][1:], title)
        show_slice(axes[1, col], vol[::-1, :, x], [(mask[::-1, :, x], REFERENCE_COLOUR), (anat[::-1, :, x] == 201, "#33dd33")],
                   (geom["spacing"][0], geom["spacing"][1]))
    fig.tight_layout()
    save_figure(fig, out_png, formats=("png",))
    return out_png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/bench_synth")
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backgrounds", default="real")
    parser.add_argument("--montage", default="", help="PNG path for a montage of a few cases")
    parser.add_argument("--skip-run", action="store_true", help="only the montage/counts of an existing --out")
    args = parser.parse_args(argv)
    from amtlib.phantom import synthesize_cohort

    out = Path(args.out)
    if not args.skip_run:
        if out.exists():
            shutil.rmtree(out)
        t0 = time.perf_counter()
        summary = synthesize_cohort(out, scale=args.scale, seed=0, backgrounds=args.backgrounds, workers=args.workers)
        wall = time.perf_counter() - t0
        sys.stdout.write(f"scale {args.scale}, {args.workers} workers: {wall:.1f} s wall, {summary['series']} series, "
                         f"{summary['bytes'] / 1e6:.0f} MB, size-bin mismatches {summary['size_bin_mismatch']}\n")
    t0 = time.perf_counter()
    comp = paper_comparison()
    sys.stdout.write(comp.to_string(index=False) + "\n")
    sys.stdout.write(f"scale-1.0 design: {time.perf_counter() - t0:.1f} s; all match: {bool(comp['match'].all())}\n")
    if args.montage:
        montage(out, Path(args.montage))
        sys.stdout.write(f"montage: {args.montage}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
