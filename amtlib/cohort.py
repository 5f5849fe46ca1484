"""Cohort construction: inclusion/exclusion criteria, one series per patient, NIfTI conversion, manifest.

Paper section: *Inclusion and exclusion criteria* (Fig. 2) and *Patient characteristics* (Tables 1-2).
Screened patients are the rows of ``clinical.csv``. Each gets the first failing reason of, in order:

==============================  ================================================================
``missing_clinical_data``        age, sex, histology, institution or pathology flag empty
``age_below_minimum``            age < ``min_age`` (18 years in the paper)
``not_pathologically_confirmed`` ``pathology_confirmed`` is false
``no_ct_series``                 no CT series for the patient in the DICOM tree
``unreadable_files``             the preferred series has a broken file (not DICOM, truncated, no
                                 pixel data, no geometry tags), or the patient has only such files
``incomplete_or_poor_quality_ct`` no series forms one consistent volume (missing/duplicate slices,
                                 uneven spacing, mixed geometry)
``no_reference_mask``            no ``masks/<SeriesInstanceUID>.nii.gz`` for any usable series
``mask_geometry_mismatch``       the mask's shape or affine differs from its image
``invalid_reference_mask``       the mask holds values other than 0/1, or no tumour voxel
==============================  ================================================================

Series rule (paper): the referring institution's original series (InstitutionName != ``CENTRAL``)
when available, else the central hospital's. Among several series of the same kind the earliest
StudyDate wins (the original diagnostic scan), then the most slices, then the smaller SeriesInstanceUID
(deterministic). A preferred series that turns out unusable falls back to the next one; the patient is
excluded only when none is usable, with the reason of the preferred series. Only headers are read
for ranking; pixel data is read for the series tried. The case's institution is the selected series'
InstitutionName (where the image was acquired; ``clinical.csv``'s institution when the tag is empty).
Case ids equal patient ids (one case per patient; stable and traceable to the source).
"""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from amtlib import manifest as mf
from amtlib.io import atomic_path, prune_folder, save_nifti, sha256_file, write_csv, write_json
from amtlib.stats import vendor_key

log = logging.getLogger(__name__)

CENTRAL = "CENTRAL"
#: Exclusion reasons in the order they are tested (first failing reason wins), with display labels.
REASONS: dict[str, str] = {
    "missing_clinical_data": "missing demographic or clinical data",
    "age_below_minimum": "age below minimum",
    "not_pathologically_confirmed": "not pathologically confirmed",
    "no_ct_series": "no CT series",
    "unreadable_files": "unreadable DICOM files",
    "incomplete_or_poor_quality_ct": "incomplete or poor-quality CT",
    "no_reference_mask": "no reference mask",
    "mask_geometry_mismatch": "mask geometry differs from image",
    "invalid_reference_mask": "mask not binary or empty",
}
#: Phrases of :func:`amtlib.dicomio.check_series` messages that mean a broken file (reason
#: ``unreadable_files``) rather than an inconsistent volume (``incomplete_or_poor_quality_ct``).
FILE_LEVEL_MARKERS: tuple[str, ...] = ("non-DICOM file", "pixel data unreadable", "has no pixel data", " lacks ")
CLINICAL_COLUMNS: tuple[str, ...] = ("patient_id", "institution", "age", "sex", "histology", "pathology_confirmed")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


@dataclass
class CohortResult:
    """What :func:`build_cohort` produced: the manifest, the exclusions and the flow counts."""

    manifest: pd.DataFrame
    exclusions: pd.DataFrame
    flow: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# clinical table and criteria (pure)


def read_clinical(path: str | Path) -> pd.DataFrame:
    """Read ``clinical.csv`` as text (empty = ``""``); raise ValueError naming the file on missing
    columns or duplicate patient ids (one row per screened patient is the contract)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: clinical table not found; the raw folder needs clinical.csv (docs/architecture.md)")
    df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in CLINICAL_COLUMNS if c not in df]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(CLINICAL_COLUMNS)}")
    df = df.apply(lambda s: s.str.strip())
    dup = df.loc[df["patient_id"].duplicated(keep=False), "patient_id"]
    if len(dup):
        lines = {pid: [int(i) + 2 for i in idx] for pid, idx in dup.groupby(dup).groups.items()}
        shown = "; ".join(f"{pid!r} on lines {v}" for pid, v in list(lines.items())[:10])
        raise ValueError(f"{path}: duplicate patient_id ({shown}); give one row per screened patient")
    return df


def clinical_reason(row: pd.Series, min_age: float = 18) -> tuple[str, str] | None:
    """First failing clinical criterion of one ``clinical.csv`` row as ``(reason, detail)``, else None.

    Paper section: Inclusion and exclusion criteria. A non-numeric age or an unrecognised
    ``pathology_confirmed`` value counts as missing data.
    """
    empty = [c for c in ("age", "sex", "histology", "institution", "pathology_confirmed") if str(row.get(c, "")).strip() == ""]
    if empty:
        return "missing_clinical_data", f"empty {', '.join(empty)}"
    try:
        age = float(row["age"])
    except ValueError:
        return "missing_clinical_data", f"age {row['age']!r} is not a number"
    flag = str(row["pathology_confirmed"]).strip().lower()
    if flag not in _TRUE | _FALSE:
        return "missing_clinical_data", f"pathology_confirmed {row['pathology_confirmed']!r} is not true/false"
    if row["sex"] not in mf.SEXES:
        return "missing_clinical_data", f"sex {row['sex']!r} is not M or F"
    if row["histology"] not in mf.HISTOLOGIES:
        return "missing_clinical_data", f"histology {row['histology']!r} not one of {', '.join(mf.HISTOLOGIES)}"
    if age < min_age:
        return "age_below_minimum", f"age {age:g} < {min_age:g}"
    if flag in _FALSE:
        return "not_pathologically_confirmed", "pathology_confirmed is false"
    return None


def rank_series(series: pd.DataFrame, central_name: str = CENTRAL) -> pd.DataFrame:
    """Order one patient's series by the paper's rule: referral originals first, then central series.

    Within each kind: earliest StudyDate (empty dates last), most files, then SeriesInstanceUID.
    Returns a re-indexed copy with a ``kind`` column (``referral_original`` / ``central``).
    """
    out = series.copy()
    out["kind"] = np.where(out["institution"].astype(str).str.upper() == central_name.upper(), "central", "referral_original")
    out["_central"] = out["kind"] == "central"
    out["_date"] = out["study_date"].astype(str).replace("", "99999999")
    out["_files"] = -pd.to_numeric(out["n_files"], errors="coerce").fillna(0)
    out = out.sort_values(["_central", "_date", "_files", "series_uid"], kind="stable")
    return out.drop(columns=["_central", "_date", "_files"]).reset_index(drop=True)


def cohort_flow(n_screened: int, exclusions: pd.DataFrame, manifest: pd.DataFrame) -> dict[str, Any]:
    """Counts of Fig. 2's first boxes: screened, excluded (by reason), included, institutions."""
    by_reason = {r: int((exclusions["reason"] == r).sum()) for r in REASONS if (exclusions["reason"] == r).any()}
    inst = manifest["institution"].value_counts().sort_index()
    return {
        "screened": int(n_screened),
        "excluded": int(len(exclusions)),
        "excluded_by_reason": by_reason,
        "included": int(len(manifest)),
        "included_institutions": int(inst.size),
        "institutions": {str(k): int(v) for k, v in inst.items()},
    }


def flow_vs_paper(flow: dict[str, Any]) -> pd.DataFrame:
    """The cohort counts beside the paper's (Fig. 2, cohort_flow in reported values)."""
    from amtlib.paper import reported

    rep = reported()["cohort_flow"]
    rows = [
        ("screened", flow["screened"], rep["screened"]),
        ("excluded", flow["excluded"], rep["excluded"]),
        ("included", flow["included"], rep["included"]),
        ("included institutions", flow["included_institutions"], rep["included_institutions"]),
    ]
    for reason, n in flow.get("excluded_by_reason", {}).items():
        rows.append((f"  excluded: {REASONS.get(reason, reason)}", n, None))
    df = pd.DataFrame(rows, columns=["item", "regenerated", "paper"])
    df["paper"] = df["paper"].astype("Int64")
    return df


# --------------------------------------------------------------------------------------------------
# one patient: choose a usable series, convert it (I/O)


def _load_mask(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    return np.ascontiguousarray(data.transpose(2, 1, 0)), np.asarray(img.affine, dtype=float)


def _as_hu_array(volume: np.ndarray) -> np.ndarray:
    """int16 when the HU values are integers in range (smaller files), else float32."""
    if np.all(np.isfinite(volume)) and np.array_equal(volume, np.round(volume)) and volume.min() >= -32768 and volume.max() <= 32767:
        return volume.astype(np.int16)
    return volume.astype(np.float32)


def _try_series(row: dict[str, Any], raw_dir: Path, unreadable_folders: set[str], atol_mm: float) -> tuple[Any, ...]:
    """Read one candidate: ``(volume, geometry, mask, anatomy)`` or raise ``_Unusable(reason, detail)``."""
    from amtlib import dicomio

    folder = Path(row["folder"])
    uid = row["series_uid"]
    mask_path = raw_dir / "masks" / f"{uid}.nii.gz"
    if not mask_path.is_file():
        raise _Unusable("no_reference_mask", f"{mask_path} not found")
    try:
        volume, geometry = dicomio.read_series(folder)
    except dicomio.DicomSeriesError as exc:
        unreadable = str(folder) in unreadable_folders or any(m in str(exc) for m in FILE_LEVEL_MARKERS)
        raise _Unusable("unreadable_files" if unreadable else "incomplete_or_poor_quality_ct", str(exc)) from None
    try:
        mask, mask_affine = _load_mask(mask_path)
    except Exception as exc:  # nibabel raises several types for non-NIfTI input
        raise _Unusable("invalid_reference_mask", f"{mask_path}: not a readable NIfTI file ({type(exc).__name__})") from None
    if mask.shape != volume.shape or not np.allclose(mask_affine, geometry["affine"], atol=atol_mm):
        what = (f"shape (z, y, x) {mask.shape} != image {volume.shape}" if mask.shape != volume.shape
                else f"affine differs from the image by up to {np.abs(mask_affine - geometry['affine']).max():.3g} mm")
        raise _Unusable("mask_geometry_mismatch", f"{mask_path}: {what}")
    values = np.unique(mask)
    if np.setdiff1d(values, [0, 1]).size or not (values == 1).any():
        detail = "no tumour voxel" if np.setdiff1d(values, [0, 1]).size == 0 else f"values {values[:6].tolist()} not 0/1"
        raise _Unusable("invalid_reference_mask", f"{mask_path}: {detail}")
    anatomy = None
    anat_path = raw_dir / "anatomy" / f"{uid}.nii.gz"
    if anat_path.is_file():
        anat, anat_affine = _load_mask(anat_path)
        if anat.shape == volume.shape and np.allclose(anat_affine, geometry["affine"], atol=atol_mm):
            anatomy = anat
        else:
            log.warning("%s: anatomy geometry differs from its image; anatomy not used", anat_path)
    return volume, geometry, mask.astype(np.uint8), anatomy


class _Unusable(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def process_patient(
    patient: dict[str, Any],
    candidates: list[dict[str, Any]],
    raw_dir: str | Path,
    out_dir: str | Path,
    unreadable_folders: Iterable[str] = (),
    atol_mm: float = 1e-3,
) -> dict[str, Any]:
    """Pick the first usable ranked series of one patient and write its NIfTI image, mask and anatomy.

    ``patient`` is its clinical row, ``candidates`` its ranked series rows (:func:`rank_series`).
    Returns ``{"row": manifest row}`` or ``{"exclusion": (reason, detail)}``; never raises for bad
    input data. Writes ``images/``, ``masks/``, ``anatomy/<case_id>.nii.gz`` under ``out_dir``.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    unreadable = set(unreadable_folders)
    pid = str(patient["patient_id"])
    first: _Unusable | None = None
    details = []
    for row in candidates:
        try:
            volume, geometry, mask, anatomy = _try_series(row, raw_dir, unreadable, atol_mm)
        except _Unusable as exc:
            first = first or exc
            details.append(f"{Path(row['folder']).name}: {exc.detail}")
            continue
        case_id = pid
        image_path = out_dir / "images" / f"{case_id}.nii.gz"
        mask_path = out_dir / "masks" / f"{case_id}.nii.gz"
        save_nifti(_as_hu_array(volume), geometry["affine"], image_path)
        save_nifti(mask, geometry["affine"], mask_path)
        anatomy_rel = ""
        if anatomy is not None:
            save_nifti(anatomy.astype(np.int16 if anatomy.max() > 255 else np.uint8), geometry["affine"], out_dir / "anatomy" / f"{case_id}.nii.gz")
            anatomy_rel = f"anatomy/{case_id}.nii.gz"
        sz, sy, sx = (float(s) for s in geometry["spacing"])
        return {"row": {
            "case_id": case_id, "patient_id": pid,
            "institution": row["institution"] or patient["institution"],
            "study_uid": row["study_uid"], "series_uid": row["series_uid"],
            "image_path": f"images/{case_id}.nii.gz", "mask_path": f"masks/{case_id}.nii.gz", "anatomy_path": anatomy_rel,
            "histology": patient["histology"], "age": int(float(patient["age"])), "sex": patient["sex"],
            "manufacturer": row["manufacturer"], "model_name": row["model_name"],
            "kvp": row["kvp"], "slice_thickness_mm": row["slice_thickness_mm"],
            "spacing_z": round(sz, 6), "spacing_y": round(sy, 6), "spacing_x": round(sx, 6),
            "shape_z": volume.shape[0], "shape_y": volume.shape[1], "shape_x": volume.shape[2],
            "image_sha256": sha256_file(image_path), "mask_sha256": sha256_file(mask_path), "split": "",
            "series_kind": row["kind"],
            # optional classifier columns (issue 17), carried when clinical.csv has them
            **{c: patient[c] for c in mf.CLASSIFIER_COLUMNS if c in patient},
        }}
    assert first is not None
    return {"exclusion": (first.reason, " | ".join(details))}


def _process_star(args: tuple) -> dict[str, Any]:
    return process_patient(*args)


# --------------------------------------------------------------------------------------------------
# the whole cohort (I/O)


def _patient_of_path(path: str, dicom_root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(dicom_root.resolve()).parts[0]
    except (ValueError, IndexError):
        return ""


def build_cohort(
    raw_dir: str | Path,
    out_dir: str | Path,
    min_age: float = 18,
    workers: int = 1,
    central_name: str = CENTRAL,
    atol_mm: float = 1e-3,
) -> CohortResult:
    """Apply the criteria to a raw cohort, select and convert one series per patient, write the outputs.

    Paper section: Inclusion and exclusion criteria. ``raw_dir`` follows docs/architecture.md
    (``clinical.csv``, ``dicom/``, ``masks/``, optional ``anatomy/``) and is only read. Writes into
    ``out_dir``: ``images/``, ``masks/``, ``anatomy/``, ``manifest.csv``, ``exclusions.csv``
    (patient_id, reason, detail) and ``cohort_flow.json``. DICOM files of patients absent from
    ``clinical.csv`` are ignored with a warning (they were not screened). ``workers`` > 1 converts
    patients in parallel processes.
    """
    from amtlib import dicomio

    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    clinical = read_clinical(raw_dir / "clinical.csv")
    dicom_root = raw_dir / "dicom"
    if dicom_root.is_dir():
        series, unreadable = dicomio.scan_tree(dicom_root)
    else:
        log.warning("%s: no dicom/ folder; every patient will be excluded as no_ct_series", raw_dir)
        series, unreadable = pd.DataFrame(columns=list(dicomio.SERIES_COLUMNS)), pd.DataFrame(columns=["path", "reason"])
    series = series[series["modality"].isin(["CT", ""])]
    unknown = sorted(set(series["patient_id"]) - set(clinical["patient_id"]))
    if unknown:
        log.warning("%d DICOM patient id(s) not in clinical.csv, ignored: %s", len(unknown), ", ".join(unknown[:10]))
    unreadable_by_patient = unreadable.assign(pid=[_patient_of_path(p, dicom_root) for p in unreadable["path"]]).groupby("pid")["path"].apply(list).to_dict()
    unreadable_folders = {str(Path(p).parent.resolve()) for p in unreadable["path"]}

    exclusions: list[dict[str, str]] = []
    jobs: list[tuple] = []
    by_patient = dict(tuple(series.groupby("patient_id"))) if len(series) else {}
    for _, patient in clinical.iterrows():
        pid = patient["patient_id"]
        failed = clinical_reason(patient, min_age)
        if failed is None and pid not in by_patient:
            bad = unreadable_by_patient.get(pid, [])
            failed = (("unreadable_files", f"{len(bad)} unreadable file(s), e.g. {bad[0]}") if bad
                      else ("no_ct_series", f"no CT series for {pid} under {dicom_root}"))
        if failed is not None:
            exclusions.append({"patient_id": pid, "reason": failed[0], "detail": failed[1]})
            continue
        ranked = rank_series(by_patient[pid], central_name)
        jobs.append((patient.to_dict(), ranked.to_dict("records"), raw_dir, out_dir, unreadable_folders, atol_mm))

    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_process_star, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
    else:
        results = [_process_star(j) for j in jobs]
    rows = []
    for job, res in zip(jobs, results):
        if "row" in res:
            rows.append(res["row"])
        else:
            exclusions.append({"patient_id": job[0]["patient_id"], "reason": res["exclusion"][0], "detail": res["exclusion"][1]})

    full = pd.DataFrame(rows)
    kinds = full["series_kind"].value_counts().to_dict() if len(full) else {}
    manifest = full.reindex(columns=list(mf.COLUMN_NAMES)) if len(full) else mf.empty_manifest()
    excl = pd.DataFrame(exclusions, columns=["patient_id", "reason", "detail"])
    order = {r: i for i, r in enumerate(REASONS)}
    excl = excl.sort_values(["reason", "patient_id"], key=lambda s: s.map(order) if s.name == "reason" else s).reset_index(drop=True)
    flow = cohort_flow(len(clinical), excl, manifest)
    flow.update({"series_selected": {k: int(v) for k, v in kinds.items()}, "min_age": min_age,
                 "source": {"raw_dir": str(raw_dir.resolve())}, "unreadable_files": int(len(unreadable))})
    paths = write_outputs(out_dir, manifest, excl, flow)
    return CohortResult(manifest, excl, flow, paths)


def write_outputs(out_dir: str | Path, manifest: pd.DataFrame, exclusions: pd.DataFrame, flow: dict[str, Any]) -> dict[str, Path]:
    """Write ``manifest.csv``, ``exclusions.csv`` and ``cohort_flow.json`` atomically into ``out_dir``,
    and delete the NIfTIs of ``images/``, ``masks/``, ``anatomy/`` of cases no longer in the manifest
    (left by an earlier run of the step on another cohort)."""
    out_dir = Path(out_dir)
    for folder in ("images", "masks", "anatomy"):
        prune_folder(out_dir / folder, set(manifest["case_id"].astype(str)) if len(manifest) else set())
    return {
        "manifest": write_csv(out_dir / "manifest.csv", manifest),
        "exclusions": write_csv(out_dir / "exclusions.csv", exclusions),
        "cohort_flow": write_json(out_dir / "cohort_flow.json", flow),
    }


def _place(src: Path, dst: Path, mode: str) -> None:
    """Put ``src`` at ``dst`` as a hard link (falls back to a copy) or a copy; never touches ``src``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if mode == "link":
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def import_manifest(manifest_in: str | Path, out_dir: str | Path, mode: str = "link") -> CohortResult:
    """Bring a user's NIfTI cohort (``data_manifest/template.csv`` filled in) into the run folder layout.

    Validates the input (schema, files, geometry; raises :class:`amtlib.manifest.ManifestError` listing
    every problem), places each image/mask/anatomy at ``images/<case_id>.nii.gz`` etc. (hard link when
    ``mode="link"`` and possible, else copy; the input files are never modified), fills the derived
    columns (spacing, shape, SHA-256) from the files, and writes the same outputs as
    :func:`build_cohort` (no exclusions: the user's manifest is the included cohort).
    """
    import nibabel as nib

    manifest_in, out_dir = Path(manifest_in), Path(out_dir)
    mf.assert_valid(manifest_in, stage="input")
    src = mf.read_manifest(manifest_in)
    base = manifest_in.parent
    rows = []
    for _, r in src.iterrows():
        row = {c: r.get(c, "") for c in mf.COLUMN_NAMES}
        case = r["case_id"]
        for col, folder in (("image_path", "images"), ("mask_path", "masks"), ("anatomy_path", "anatomy")):
            if r.get(col, ""):
                rel = f"{folder}/{case}.nii.gz"
                _place(base / r[col], out_dir / rel, mode)
                row[col] = rel
        img = nib.load(str(out_dir / row["image_path"]))
        zooms, shape = img.header.get_zooms()[:3], img.shape[:3]
        row.update({"spacing_z": float(zooms[2]), "spacing_y": float(zooms[1]), "spacing_x": float(zooms[0]),
                    "shape_z": int(shape[2]), "shape_y": int(shape[1]), "shape_x": int(shape[0]),
                    "image_sha256": sha256_file(out_dir / row["image_path"]),
                    "mask_sha256": sha256_file(out_dir / row["mask_path"]), "split": ""})
        rows.append(row)
    manifest = pd.DataFrame(rows, columns=list(mf.COLUMN_NAMES))
    excl = pd.DataFrame(columns=["patient_id", "reason", "detail"])
    flow = cohort_flow(len(manifest), excl, manifest)
    flow["source"] = {"manifest_in": str(manifest_in.resolve())}
    paths = write_outputs(out_dir, manifest, excl, flow)
    return CohortResult(manifest, excl, flow, paths)


# --------------------------------------------------------------------------------------------------
# Tables 1 and 2 (pure)

#: Split names in the paper's table columns.
TABLE_SPLITS: dict[str, str] = {"train": "training", "tuning": "tuning", "external_test": "external_testing"}
#: Manufacturer strings (upper case, substring) -> Table 2 / Table 3 key (amtlib.paper.SUBGROUP_LABELS).
def table1(cases: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 1 regenerated beside the reported values: age median (range), sex, histology by split.

    ``cases`` needs ``split``, ``age``, ``sex``, ``histology``. One row per (variable, level); for each
    split two columns: regenerated ``<split>`` and ``<split> (paper)``. Percentages are of the split,
    recomputed from the paper's counts too (so 4/62 shows 6.5% where the paper prints 6.4%). The paper
    gives no sex counts per split (only 339 M / 372 F overall), hence ``–``.
    """
    from amtlib.paper import reported

    rep = reported()["table1"]
    cases = mf.typed(cases)
    rows: list[dict[str, str]] = []
    ages = {}
    for s, name in TABLE_SPLITS.items():
        a = cases.loc[cases["split"] == s, "age"].dropna().astype(float)
        ages[name] = f"{a.median():.1f} ({a.min():.0f}–{a.max():.0f})" if len(a) else "–"
    row = {"variable": "age", "level": "median (range)"}
    for name in TABLE_SPLITS.values():
        m, lo, hi = rep["age_median_range"][name]
        row[name], row[f"{name} (paper)"] = ages[name], f"{m:.1f} ({lo}–{hi})"
    rows.append(row)
    n = {name: int((cases["split"] == s).sum()) for s, name in TABLE_SPLITS.items()}
    rows.append({"variable": "n", "level": "cases", **{k: str(v) for k, v in n.items()},
                 **{f"{k} (paper)": str(reported()["cohort_flow"][k if k != "external_testing" else "external_test"]["cases"]) for k in n}})
    for sex in ("M", "F"):
        row = {"variable": "sex", "level": sex}
        for s, name in TABLE_SPLITS.items():
            k = int(((cases["split"] == s) & (cases["sex"] == sex)).sum())
            row[name], row[f"{name} (paper)"] = _count_pct(k, n[name]), "–"
        rows.append(row)
    for hist in mf.HISTOLOGIES:
        row = {"variable": "histology", "level": hist}
        for s, name in TABLE_SPLITS.items():
            k = int(((cases["split"] == s) & (cases["histology"] == hist)).sum())
            r = rep["histology_counts"][hist][name]
            total = sum(v[name] for v in rep["histology_counts"].values())
            row[name], row[f"{name} (paper)"] = _count_pct(k, n[name]), _count_pct(r, total)
        rows.append(row)
    cols = ["variable", "level"] + [c for name in TABLE_SPLITS.values() for c in (name, f"{name} (paper)")]
    return pd.DataFrame(rows, columns=cols)


def table2(cases: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 2 regenerated: scanner manufacturers of the external test set, count (percent), beside the paper.

    Manufacturers are mapped with :func:`amtlib.stats.vendor_key` (the key Tables 3-4 use too); unknown
    ones keep their own key and a missing one shows as ``unknown``. Percentages are
    recomputed from counts (37/164 shows 22.6% where the paper prints 22.5%).
    """
    from amtlib.paper import SUBGROUP_LABELS, reported

    rep = reported()["table2"]
    ext = cases[cases["split"] == "external_test"]
    keys = ext["manufacturer"].map(lambda m: vendor_key(m) or "unknown")
    n, n_rep = len(ext), sum(rep.values())
    rows = []
    for key in list(rep) + sorted(set(keys) - set(rep)):
        k = int((keys == key).sum())
        rows.append({"manufacturer": SUBGROUP_LABELS.get(key, key), "key": key, "n": k, "external_testing": _count_pct(k, n),
                     "n (paper)": rep.get(key, 0), "external_testing (paper)": _count_pct(rep.get(key, 0), n_rep)})
    return pd.DataFrame(rows)


def _count_pct(k: int, n: int) -> str:
    return f"{k} ({100 * k / n:.1f}%)" if n else f"{k} (–)"
