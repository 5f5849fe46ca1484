"""The embedded demo cohort: synthetic anterior mediastinal tumours in real (public) chest CTs, as DICOM.

Paper sections: Data collection, Inclusion/exclusion, Image acquisition protocol, Dataset splitting
(Fig. 2, Tables 1-2). The paper's images are not public; this package builds a stand-in raw cohort in
the layout of docs/architecture.md so every later step runs for real:

    raw/clinical.csv                          one row per screened patient (+ audit columns)
    raw/dicom/<patient_id>/<series_folder>/   CT Image Storage series (pydicom)
    raw/masks/<SeriesInstanceUID>.nii.gz      reference tumour mask (0/1) in the series geometry
    raw/anatomy/<SeriesInstanceUID>.nii.gz    organ labels (:data:`LABELS`) + tumour 200, effusion 201
    raw/synthesis.csv                         audit: one row per series (design and measured facts)
    raw/CREDITS.txt                           attribution of the public backgrounds
    raw/development_institutions.txt          the institutions of the development cohort, one a line

Each patient is one of three public CTs (:mod:`amtlib.fetch`) made distinct by a random smooth warp
and body-size scaling, with one inserted tumour (:mod:`amtlib.phantom.render`) and the acquisition of
its institution (:mod:`amtlib.phantom.clinical`). Same seed and scale give byte-identical files:
per-patient generators come from ``np.random.SeedSequence([seed, 2, patient_number])``, so the number
of workers does not change the output.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from amtlib.dicom.dicomio import write_ct_series
from amtlib.errors import AmtError
from amtlib.io import atomic_path, save_nifti, write_csv, write_text
from amtlib.progress import track
from amtlib.phantom.backgrounds import (
    AIRWAY_CODES, BONE_CODES, CAVITY, HEART, LABELS, SOFT_TISSUE, VESSEL_CODES, Background,
    load_background, procedural_background,
)
from amtlib.phantom.clinical import CENTRAL, CENTRAL_THICKNESS_MM, CLINICAL_COLUMNS, MANUFACTURER_TO_VENDOR, design_cohort, _central_model
from amtlib.phantom.render import CaseImage, max_axial_diameter_mm, render_case, size_bin, tumour_bounding_region
from amtlib.workers import process_pool

__all__ = [
    "LABELS", "MANUFACTURER_TO_VENDOR", "synthesize_cohort", "design_cohort", "render_case", "tumour_bounding_region",
    "max_axial_diameter_mm", "size_bin", "load_background", "procedural_background", "cli_main",
]

log = logging.getLogger(__name__)
REAL_BACKGROUNDS = ("lidc", "lung1", "lung2")
#: Codes a tumour must never occupy.
FORBIDDEN_CODES = BONE_CODES + VESSEL_CODES + AIRWAY_CODES + (HEART, SOFT_TISSUE)
TINY_SHAPE = (4, 16, 16)
_BACKGROUNDS: dict[str, Background] = {}


def _background(name: str, cache_dir: str | Path | None) -> Background:
    if name not in _BACKGROUNDS:
        _BACKGROUNDS[name] = load_background(name, cache_dir)
    return _BACKGROUNDS[name]


def _series_plan(row: dict, rng: np.random.Generator) -> list[dict]:
    """The series of one patient: the institution's original, plus a central rescan when planned."""
    first = {
        "institution": row["institution"], "vendor": row["vendor"], "manufacturer": row["manufacturer"],
        "model_name": row["model_name"], "kvp": row["kvp"], "kernel": row["kernel"],
        "slice_thickness_mm": row["slice_thickness_mm"], "study_date": row["study_date"], "expected_selected": True,
    }
    plans = [first]
    if row["second_series"]:
        d = pd.Timestamp(row["scan_date"]) + pd.Timedelta(days=int(rng.integers(14, 60)))
        manufacturer, model = _central_model(d.year)
        thickness = float(rng.choice(list(CENTRAL_THICKNESS_MM), p=np.array(list(CENTRAL_THICKNESS_MM.values()))))
        plans.append({
            "institution": CENTRAL, "vendor": "canon_medical_systems", "manufacturer": manufacturer, "model_name": model,
            "kvp": 120, "kernel": "FC13", "slice_thickness_mm": thickness, "study_date": d.strftime("%Y%m%d"),
            "expected_selected": False,
        })
    return plans


def _tiny_case(design: dict, rng: np.random.Generator) -> CaseImage:
    """A 4x16x16 series of the procedural background with a 2x2x1 tumour (fast full-scale runs)."""
    bg = procedural_background()
    nz, ny, nx = bg.ct.shape
    ks = np.linspace(nz * 0.35, nz * 0.65, TINY_SHAPE[0]).astype(int)
    js = np.linspace(ny * 0.15, ny * 0.85, TINY_SHAPE[1]).astype(int)
    is_ = np.linspace(nx * 0.15, nx * 0.85, TINY_SHAPE[2]).astype(int)
    hu = bg.ct[np.ix_(ks, js, is_)].astype(np.float32) + rng.normal(0, 5, TINY_SHAPE).astype(np.float32)
    organs = bg.labels[np.ix_(ks, js, is_)].copy()
    organs[np.isin(organs, (CAVITY, SOFT_TISSUE))] = 0
    mask = np.zeros(TINY_SHAPE, np.uint8)
    mask[1, 4:6, 7:9] = 1
    organs[mask > 0] = 200
    spacing = (float(design["slice_thickness_mm"]), float(design["fov_mm"]) / 16, float(design["fov_mm"]) / 16)
    return CaseImage(hu, mask, organs, spacing, {"max_axial_diameter_mm": max_axial_diameter_mm(mask > 0, spacing)})


def _apply_defect(files: list[Path], kind: str, rng: np.random.Generator) -> str:
    """Damage a written series the way archives do; returns a short description."""
    import pydicom

    n = len(files)
    mid = n // 2
    if kind == "missing_slices":
        k = int(rng.integers(1, min(3, max(n - 2, 1)) + 1))
        for f in files[mid: mid + k]:
            f.unlink()
        return f"removed {k} slice file(s) from the middle"
    if kind == "uneven_spacing":
        for f in files[mid:]:
            ds = pydicom.dcmread(f)
            step = float(ds.SliceThickness)
            pos = [float(v) for v in ds.ImagePositionPatient]
            pos[2] += 0.4 * step
            ds.ImagePositionPatient = [f"{v:.6f}".rstrip("0").rstrip(".") for v in pos]
            ds.SliceLocation = ds.ImagePositionPatient[2]
            with atomic_path(f) as tmp:
                ds.save_as(tmp, enforce_file_format=True)
        return "upper half shifted by 0.4 slice"
    if kind == "truncated_file":
        data = files[mid].read_bytes()
        ds = pydicom.dcmread(files[mid], stop_before_pixels=True)
        cut = int(ds.Rows) * int(ds.Columns)  # half of the 16-bit pixel data
        with atomic_path(files[mid]) as tmp:
            tmp.write_bytes(data[: len(data) - cut])
        return f"{files[mid].name} lost the last half of its pixel data"
    if kind == "non_dicom_file":
        with atomic_path(files[mid]) as tmp:
            tmp.write_bytes(b"export interrupted\n" + rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
        return f"{files[mid].name} replaced by non-DICOM bytes"
    raise ValueError(f"unknown defect {kind!r}")


def _make_patient(task: tuple[dict, int, str, bool, str | None, tuple[int, int]]) -> list[dict]:
    """Worker: render and write every series of one patient; returns one audit row per series."""
    row, seed, out_dir, images, cache_dir, crop_yx = task
    out = Path(out_dir)
    number = int(row["patient_id"][2:])
    ss = np.random.SeedSequence([seed, 2, number])
    plan_ss, anatomy_ss, acq_ss, defect_ss = ss.spawn(4)
    plans = _series_plan(row, np.random.default_rng(plan_ss))
    acq_rngs = [np.random.default_rng(s) for s in acq_ss.spawn(len(plans))]
    rows = []
    for idx, (plan, acq_rng) in enumerate(zip(plans, acq_rngs), start=1):
        design = {**row, **plan}
        rng = np.random.default_rng(anatomy_ss)  # same anatomy draws for every series of the patient
        # imaging correlates of the classifiers (notebooks 07-08) draw from a stream of their own
        corr_rng = np.random.default_rng(np.random.SeedSequence([seed, 5, number]))
        if images:
            case = render_case(_background(row["background"], cache_dir), design, rng, crop_yx, corr_rng)
        else:
            case = _tiny_case(design, rng)
        folder = out / "dicom" / row["patient_id"] / f"{plan['study_date']}_S{idx}"
        nz, ny, nx = case.hu.shape
        origin = (-(nx - 1) * case.spacing[2] / 2, -(ny - 1) * case.spacing[1] / 2 - 20.0,
                  -float(np.round(acq_rng.uniform(120.0, 320.0), 1)))
        meta = {
            "PatientID": row["patient_id"], "InstitutionName": plan["institution"], "Manufacturer": plan["manufacturer"],
            "ManufacturerModelName": plan["model_name"], "KVP": int(plan["kvp"]), "ConvolutionKernel": plan["kernel"],
            "SeriesDescription": f"CHEST {plan['slice_thickness_mm']:g}mm", "StudyDate": plan["study_date"],
            "SeriesNumber": idx, "SliceThickness": float(plan["slice_thickness_mm"]),
        }
        files = write_ct_series(case.hu, case.spacing, folder, meta, f"{seed}:{row['patient_id']}:{idx}", origin=origin)
        from pydicom import dcmread

        series_uid = str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        affine = np.diag([-case.spacing[2], -case.spacing[1], case.spacing[0], 1.0])
        affine[:3, 3] = [-origin[0], -origin[1], origin[2]]
        save_nifti(case.mask.astype(np.uint8), affine, out / "masks" / f"{series_uid}.nii.gz")
        save_nifti(case.anatomy.astype(np.uint8), affine, out / "anatomy" / f"{series_uid}.nii.gz")
        defect = ""
        if row["defect"] and idx == 1:
            defect = _apply_defect(files, row["defect"], np.random.default_rng(defect_ss))
        rows.append({
            "patient_id": row["patient_id"], "series_uid": series_uid, "series_folder": str(folder.relative_to(out)),
            "institution": plan["institution"], "expected_selected": plan["expected_selected"], "background": row["background"],
            "vendor": plan["vendor"], "manufacturer": plan["manufacturer"], "model_name": plan["model_name"], "kvp": plan["kvp"],
            "kernel": plan["kernel"], "slice_thickness_mm": plan["slice_thickness_mm"], "fov_mm": round(float(row["fov_mm"]), 1),
            "pixel_spacing_mm": round(case.spacing[1], 4), "shape": f"{nz}x{ny}x{nx}", "histology": row["histology"],
            "size_bin_design": row["size_bin"], "effusion": bool(case.facts.get("effusion_ml", 0) > 0), "abut_aorta": row["abut_aorta"],
            "low_contrast": row["low_contrast"], "defect": row["defect"] if idx == 1 else "", "defect_detail": defect,
            **case.facts,
        })
    return rows


def synthesize_cohort(
    out_dir: str | Path,
    scale: float = 0.1,
    seed: int = 0,
    backgrounds: str = "real",
    images: bool = True,
    workers: int = 1,
    cache_dir: str | Path | None = None,
    crop_yx: tuple[int, int] = (160, 192),
) -> dict[str, Any]:
    """Generate the raw demo cohort into ``out_dir`` (layout: module docstring); return a summary.

    ``backgrounds``: ``real`` (the three public CTs; fetched on first use, see :mod:`amtlib.fetch`) or
    ``procedural`` (no download). ``images=False`` writes each series as a tiny 4x16x16 volume (for
    full-scale cohort benchmarks). ``crop_yx`` is the stored in-plane size in pixels. ``workers`` > 1
    uses processes; output does not depend on it.

    The cohort is written to a sibling ``.<name>.partial`` folder and moved into place when complete,
    so ``out_dir`` always holds one whole cohort: an earlier generated cohort there (one with a
    ``synthesis.csv``) is replaced as a whole, nothing of it left behind (a cohort of another scale
    would otherwise leave series that the cohort build reads). A non-empty ``out_dir`` that is not a
    generated cohort raises ``ValueError`` and is left untouched.
    """
    t0 = time.perf_counter()
    if backgrounds not in ("real", "procedural"):
        raise AmtError(f"backgrounds {backgrounds!r}", "unknown backgrounds", "use real or procedural")
    names = REAL_BACKGROUNDS if backgrounds == "real" else ("procedural",)
    final = Path(out_dir)
    out = _partial_folder(final)
    design = design_cohort(scale, seed, names)
    if images:
        _prepare_backgrounds(design, names, cache_dir)
    tasks = [(row, seed, str(out), images, None if cache_dir is None else str(cache_dir), tuple(crop_yx))
             for row in design.to_dict("records")]
    series = pd.DataFrame([r for rows in _make_patients(tasks, workers) for r in rows])
    _write_tables(out, design, series, backgrounds == "real")
    n_bytes = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    _replace_dir(out, final)
    included = design[design["intended_exclusion"] == ""]
    return {
        "out_dir": str(final), "scale": scale, "seed": seed, "backgrounds": backgrounds, "images": images,
        "screened": len(design), "intended_excluded": int((design["intended_exclusion"] != "").sum()),
        "intended_included": len(included), "institutions_included": int(included["institution"].nunique()),
        "intended_split": included["intended_split"].value_counts().to_dict(), "series": len(series),
        "size_bin_mismatch": int((images and (series["size_bin_design"] != series["size_bin_measured"]).sum()) or 0),
        "bytes": n_bytes, "duration_s": round(time.perf_counter() - t0, 2), "workers": workers,
    }


def _partial_folder(final: Path) -> Path:
    """The empty sibling ``.<name>.partial`` folder the cohort is written into (an interrupted run's
    removed first); refuses a ``final`` that exists and is not a generated cohort."""
    if final.exists() and (not final.is_dir() or (any(final.iterdir()) and not (final / "synthesis.csv").is_file())):
        raise AmtError(final, "exists and is not a generated cohort (no synthesis.csv); refusing to replace it",
                       "choose an empty or new folder")
    out = final.with_name(f".{final.name}.partial")
    if out.exists():
        shutil.rmtree(out)  # a partial cohort of an interrupted run
    out.mkdir(parents=True)
    return out


def _prepare_backgrounds(design: pd.DataFrame, names: Sequence[str], cache_dir: str | Path | None) -> None:
    """Load each background and its CT at every slice thickness the design uses, once, before any
    worker forks (the workers share them)."""
    thicknesses = set(design["slice_thickness_mm"]) | set(CENTRAL_THICKNESS_MM)
    for name in names:
        bg = _background(name, cache_dir)
        for t in sorted(thicknesses):
            bg.ct_for_thickness(float(t))


def _make_patients(tasks: list[tuple], workers: int) -> list[list[dict[str, Any]]]:
    """:func:`_make_patient` on every task, in ``workers`` forked processes when > 1, in task order."""
    if workers > 1:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with process_pool(workers, mp_context=ctx) as pool:
            return list(track(pool.map(_make_patient, tasks, chunksize=2), len(tasks), "synthesis", "patient"))
    return list(track(map(_make_patient, tasks), len(tasks), "synthesis", "patient"))


def _write_tables(out: Path, design: pd.DataFrame, series: pd.DataFrame, credits: bool) -> None:
    """clinical.csv, synthesis.csv, development_institutions.txt and (real backgrounds) CREDITS.txt."""
    write_csv(out / "clinical.csv", design[list(CLINICAL_COLUMNS)])
    write_csv(out / "synthesis.csv", series)
    # The study protocol's list of development institutions (the central hospital and the referral
    # institutions whose cases went to development): what a real cohort would document beside its
    # clinical table, and what the split step reads (amtlib.split.DEVELOPMENT_FILE).
    dev_included = (design["role"] == "development") & (design["intended_exclusion"] == "")
    dev = sorted(set(design.loc[dev_included, "institution"]))
    write_text(out / "development_institutions.txt", "\n".join(dev) + "\n")
    if credits:
        from amtlib.fetch import CREDITS

        write_text(out / "CREDITS.txt", CREDITS + "\n")


def _replace_dir(new: Path, final: Path) -> None:
    """Move the complete folder ``new`` to ``final``, replacing an earlier ``final`` (two renames)."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    new.rename(final)
    if old.exists():
        shutil.rmtree(old)


def cli_main(argv: list[str] | None = None) -> int:
    """``amt synth``: generate the raw demo cohort."""
    from amtlib.clihelp import HelpFormatter, examples

    parser = argparse.ArgumentParser(prog="amt synth", description="Generate the synthetic raw cohort (DICOM + clinical.csv + masks).",
                                     formatter_class=HelpFormatter,
                                     epilog=examples("amt synth --out /tmp/raw --scale 0.1 --workers 2",
                                                     "amt synth --out /tmp/full --scale 1.0 --no-images   # the paper's counts, tiny series"))
    parser.add_argument("--out", required=True, help="output folder (the raw cohort)")
    parser.add_argument("--scale", type=float, default=0.1, help="fraction of the paper's 858 screened patients (1.0 = paper)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice of the cohort")
    parser.add_argument("--backgrounds", choices=("real", "procedural"), default="real",
                        help="public CT backgrounds (real) or generated ones (procedural)")
    parser.add_argument("--no-images", action="store_true", help="tiny 4x16x16 series (fast full-scale cohort)")
    parser.add_argument("--workers", type=int, default=1, help="patients written in parallel processes")
    parser.add_argument("--cache-dir", default=None, help="background cache (default $AMT_CACHE or ~/.cache/amtlib)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # bad input (AmtError, FetchError) reaches the guard of amtlib.cli: one line, exit 2
    summary = synthesize_cohort(args.out, args.scale, args.seed, args.backgrounds, not args.no_images,
                                args.workers, args.cache_dir)
    for key, value in summary.items():
        log.info("%-22s %s", key, value)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
