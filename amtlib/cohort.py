"""Cohort construction: inclusion/exclusion criteria, one series per patient, NIfTI conversion, manifest.

Paper section: *Inclusion and exclusion criteria* (Fig. 2) and *Patient characteristics* (Tables 1-2).
Screened patients are the rows of ``clinical.csv``. Each gets the first failing reason of, in order:

==============================  ================================================================
``unusable_patient_id``          the patient id (the case id, a file name) is not a safe name:
                                 letters, digits, '.', '_', '-', at most 128 (``paths.is_safe_id``)
``missing_clinical_data``        age, sex, histology, institution or pathology flag empty
``age_below_minimum``            age < ``min_age`` (18 years in the paper)
``not_pathologically_confirmed`` ``pathology_confirmed`` is false
``no_ct_series``                 no CT series for the patient in the DICOM tree
``unreadable_files``             the preferred series has a broken file (not DICOM, truncated, no
                                 pixel data, no geometry tags), or the patient has only such files
``incomplete_or_poor_quality_ct`` no series forms one consistent volume (missing/duplicate slices,
                                 uneven spacing, mixed geometry)
``single_slice_series``          the series is one slice (a scout-like single image, not a volume;
                                 its slice spacing could only be invented)
``tilted_gantry``                the series is sheared by a tilted gantry and ``tilt_policy`` is
                                 ``exclude`` (with ``resample``, the default, it is resampled)
``no_reference_mask``            no mask for any usable series (see *Masks* below)
``mask_geometry_mismatch``       the mask's voxel grid is not the image's (largest distance in mm)
``invalid_reference_mask``       the mask is unreadable, ambiguous (two files), holds values other
                                 than 0/1 without ``mask_label``, or no tumour voxel
==============================  ================================================================

Series rule (paper): the referring institution's original series (InstitutionName != ``CENTRAL``)
when available, else the central hospital's. Among several series of the same kind the earliest
StudyDate wins (the original diagnostic scan), then the most slices, then the smaller SeriesInstanceUID
(deterministic). A preferred series that turns out unusable falls back to the next one; the patient is
excluded only when none is usable, with the reason of the preferred series. Only headers are read
for ranking; pixel data is read for the series tried. The case's institution is the selected series'
InstitutionName (where the image was acquired; ``clinical.csv``'s institution when the tag is empty).
Case ids equal patient ids (one case per patient; stable and traceable to the source).

Patients and series. The patient is the folder under ``dicom/`` (the documented layout); a blank
PatientID tag, or one that differs from the folder, is a warning in ``warnings.csv``, not an
exclusion. Series are grouped by SeriesInstanceUID across the patient's sub-folders (blank UIDs: by
folder, with a derived id); files are read by content (see :mod:`amtlib.dicom.dicomio`): non-DICOM files are
skipped with a warning, and SEG, RTSTRUCT, SR, localizers and derived images are not image candidates.

Masks. ``masks/<SeriesInstanceUID><ext>`` or, when the patient has exactly one candidate series,
``masks/<patient_id><ext>``, with ext one of :data:`amtlib.masks.MASK_SUFFIXES` (NIfTI, NRRD,
``.seg.nrrd``). A mask on the image's grid in any axis order or flip is reoriented by world
coordinates (a warning); other grids are refused (:mod:`amtlib.masks`). ``mask_label`` picks the
tumour label of a multi-label mask; it is never guessed.
"""

from __future__ import annotations

import logging
import os
import shutil
from amtlib.workers import process_pool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from amtlib.dicom import dicomio
from amtlib.errors import AmtError
from amtlib import manifest as mf
from amtlib import masks as mk
from amtlib.io import atomic_path, prune_folder, save_nifti, sha256_file, write_csv, write_json
from amtlib.subgroups import vendor_key

log = logging.getLogger(__name__)

CENTRAL = "CENTRAL"
#: Exclusion reasons in the order they are tested (first failing reason wins), with display labels.
REASONS: dict[str, str] = {
    "unusable_patient_id": "patient id unusable as a file name",
    "missing_clinical_data": "missing demographic or clinical data",
    "age_below_minimum": "age below minimum",
    "not_pathologically_confirmed": "not pathologically confirmed",
    "no_ct_series": "no CT series",
    "unreadable_files": "unreadable DICOM files",
    "incomplete_or_poor_quality_ct": "incomplete or poor-quality CT",
    "single_slice_series": "a single CT slice, not a volume",
    "tilted_gantry": "tilted gantry (tilt_policy='exclude')",
    "no_reference_mask": "no reference mask",
    "mask_geometry_mismatch": "mask geometry differs from image",
    "invalid_reference_mask": "mask not binary or empty",
}
#: Exclusion reason of each :data:`amtlib.dicom.dicomio.SERIES_REASONS` code of a series that cannot be read
#: (the code decides, never the message text, so rewording a message moves no patient in Fig 2).
SERIES_REASON_TO_EXCLUSION: dict[str, str] = {"tilted_gantry": "tilted_gantry", "unreadable_file": "unreadable_files",
                                              "inconsistent_series": "incomplete_or_poor_quality_ct",
                                              "not_found": "incomplete_or_poor_quality_ct"}
#: Columns of ``warnings.csv`` (nothing recorded there excludes a patient).
WARNING_COLUMNS: tuple[str, ...] = ("patient_id", "series_uid", "kind", "detail")
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
    warnings: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(WARNING_COLUMNS)))


# --------------------------------------------------------------------------------------------------
# clinical table and criteria (pure)


def read_clinical(path: str | Path) -> pd.DataFrame:
    """Read ``clinical.csv`` as text (empty = ``""``); raise :class:`~amtlib.errors.AmtError` naming the
    file when it is missing, lacks columns or repeats a patient id (one row per screened patient)."""
    path = Path(path)
    if not path.is_file():
        raise AmtError(path, "clinical table not found", "the raw folder needs clinical.csv (data_manifest/README.md)")
    df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in CLINICAL_COLUMNS if c not in df]
    if missing:
        raise AmtError(path, f"missing column(s) {', '.join(missing)}", f"give the columns {', '.join(CLINICAL_COLUMNS)}")
    df = df.apply(lambda s: s.str.strip())
    dup = df.loc[df["patient_id"].duplicated(keep=False), "patient_id"]
    if len(dup):
        lines = {pid: [int(i) + 2 for i in idx] for pid, idx in dup.groupby(dup).groups.items()}
        shown = "; ".join(f"{pid!r} on lines {v}" for pid, v in list(lines.items())[:10])
        raise AmtError(path, f"duplicate patient_id ({shown})", "give one row per screened patient")
    return df


#: Inclusion: age in years at the scan at least this (paper: Inclusion criteria, adults of 18 or older).
MIN_AGE_YEARS: float = 18


def clinical_reason(row: pd.Series, min_age: float = MIN_AGE_YEARS) -> tuple[str, str] | None:
    """First failing clinical criterion of one ``clinical.csv`` row as ``(reason, detail)``, else None.

    Paper section: Inclusion and exclusion criteria. A non-numeric age or an unrecognised
    ``pathology_confirmed`` value counts as missing data.
    """
    from amtlib.paths import is_safe_id

    pid = str(row.get("patient_id", ""))
    if pid and not is_safe_id(pid):  # it names the case's files: a 245-character id failed the whole step
        return "unusable_patient_id", (f"patient id {pid[:40]!r}{'...' if len(pid) > 40 else ''} ({len(pid)} characters) "
                                       "is not a safe file name; rename the patient folder and clinical.csv row")
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


# --------------------------------------------------------------------------------------------------
# one patient: choose a usable series, convert it (I/O)


def _load_mask(path: Path) -> tuple[np.ndarray, np.ndarray]:
    loaded = mk.read_mask_file(path)
    return np.ascontiguousarray(loaded.data.transpose(2, 1, 0)), loaded.affine


def _as_hu_array(volume: np.ndarray) -> np.ndarray:
    """int16 when the HU values are integers in range (smaller files), else float32."""
    if np.all(np.isfinite(volume)) and np.array_equal(volume, np.round(volume)) and volume.min() >= -32768 and volume.max() <= 32767:
        return volume.astype(np.int16)
    return volume.astype(np.float32)


def find_masks(raw_dir: Path, series_uid: str, patient_id: str, n_candidates: int,
               annotations: Sequence[str] = ()) -> list[Path]:
    """Every reference mask of one series: ``masks/<series_uid><ext>`` (else ``masks/<patient_id><ext>``
    when the patient has exactly one candidate series) and the DICOM SEG/RTSTRUCT files that reference
    the series (``annotations``: found in the patient's DICOM folder or in ``masks/``). More than one is
    returned for the caller to refuse as ambiguous: which one is the reference is never guessed."""
    from amtlib.paths import is_safe_id

    folder = raw_dir / "masks"
    keys = [series_uid] + ([patient_id] if n_candidates == 1 else [])
    files: list[Path] = []
    # an id from the data names a file only when it cannot leave masks/ (a UID "../../x" never does)
    for key in (k for k in keys if is_safe_id(k)):
        files = [folder / f"{key}{suffix}" for suffix in mk.MASK_SUFFIXES if (folder / f"{key}{suffix}").is_file()]
        if files:
            break
    return files + [Path(a) for a in annotations]


def annotation_index(raw_dir: Path, objects: pd.DataFrame) -> dict[str, list[str]]:
    """SEG and RTSTRUCT files by the SeriesInstanceUID they reference: those of the DICOM tree
    (``objects`` of :func:`amtlib.dicom.dicomio.scan_tree`) and any DICOM file in ``masks/`` (by content)."""
    from amtlib.dicom import annotations as an
    index: dict[str, list[str]] = {}
    kinds = set(an.KIND_OF_CLASS)
    for row in objects.itertuples():
        if row.sop_class in kinds and row.referenced_series_uid:
            index.setdefault(row.referenced_series_uid, []).append(row.path)
    masks = raw_dir / "masks"
    if masks.is_dir():
        for path in sorted(p for p in masks.iterdir() if p.is_file() and not p.name.startswith(".") and not mk.mask_suffix(p)):
            kind, ds, _ = dicomio.sniff(path)
            if kind == "dicom" and str(ds.get("SOPClassUID", "")) in kinds:
                uid = dicomio.referenced_series(ds)  # from the header already read
                if uid:
                    index.setdefault(uid, []).append(str(path.resolve()))
                else:
                    log.warning("%s: annotation without a referenced series; not used", path)
    return {k: sorted(set(v)) for k, v in index.items()}


def _try_series(row: dict[str, Any], raw_dir: Path, unreadable_files: dict[str, list[str]], options: dict[str, Any]) -> tuple[Any, ...]:
    """Read one candidate: ``(volume, geometry, mask, anatomy, warnings)`` or raise ``_Unusable(reason, detail)``.

    The CT is checked before its mask, in the order of :data:`REASONS` (a broken CT without a mask is
    ``unreadable_files``)."""
    volume, geometry = _read_ct(row, unreadable_files, options)
    mask_path = _the_reference_mask(row, raw_dir)
    mask, notes = _mask_on_series(mask_path, geometry, volume.shape, options)
    anatomy = _anatomy_on_series(raw_dir, row["series_uid"], volume.shape, geometry, options)
    return volume, geometry, mask, anatomy, _tilt_warnings(row["folder"], geometry) + notes


def _read_ct(row: dict[str, Any], unreadable_files: dict[str, list[str]], options: dict[str, Any]) -> tuple[np.ndarray, dict]:
    """The candidate's CT volume and geometry; unusable beside an unreadable file, when the reader
    refuses it (:data:`SERIES_REASON_TO_EXCLUSION`), or when it is a single slice."""
    broken = sorted(f for folder in {str(Path(f).parent) for f in row["files"]} for f in unreadable_files.get(folder, []))
    if broken:
        # a file that claims to be DICOM and does not parse may be a slice of this series: never guess
        raise _Unusable("unreadable_files", f"{len(broken)} unreadable file(s) beside the series, e.g. {broken[0]}; "
                        "repair or remove it (a missing slice cannot be ruled out)")
    try:
        volume, geometry = dicomio.read_series(list(row["files"]), tilt_policy=options["tilt_policy"],
                                               accept_derived=options["accept_derived"])
    except dicomio.DicomSeriesError as exc:
        raise _Unusable(SERIES_REASON_TO_EXCLUSION.get(exc.reason, "incomplete_or_poor_quality_ct"), str(exc)) from None
    if volume.shape[0] < 2:
        raise _Unusable("single_slice_series", f"{row['folder']}: one slice of {volume.shape[2]}x{volume.shape[1]} pixels, "
                        "not a volume (its slice spacing is unknown); give the whole series")
    return volume, geometry


def _the_reference_mask(row: dict[str, Any], raw_dir: Path) -> Path:
    """The one mask file, SEG or RTSTRUCT of the candidate (:func:`find_masks`); none or several: unusable."""
    uid = row["series_uid"]
    found = find_masks(raw_dir, uid, str(row.get("patient_folder", "")), int(row.get("_n_candidates", 1)), row.get("_annotations", ()))
    if not found:
        keys = f"{uid}" + (f" or {row.get('patient_folder')}" if int(row.get("_n_candidates", 1)) == 1 else "")
        raise _Unusable("no_reference_mask", f"{raw_dir / 'masks'}: no mask named {keys} with {', '.join(mk.MASK_SUFFIXES)}, "
                        "and no DICOM SEG or RTSTRUCT referencing the series")
    if len(found) > 1:
        raise _Unusable("invalid_reference_mask", f"{len(found)} masks for one series ({', '.join(str(p) for p in found)}); keep one")
    return found[0]


def _tilt_warnings(folder: str, geometry: dict) -> list[tuple[str, str]]:
    """A GantryDetectorTilt tag the positions do not show, or a tilted series resampled (warnings.csv)."""
    warnings = []
    tag = geometry.get("gantry_tilt_tag_deg", float("nan"))
    if not geometry.get("tilt_deg", 0.0) and np.isfinite(tag) and abs(tag) > 0.05:
        warnings.append(("gantry_tilt_tag", f"{folder}: GantryDetectorTilt {tag:g} degrees, but the slice positions "
                         "lie along the slice normal (oblique orientation or already corrected); read as positioned"))
    if geometry.get("tilt_deg", 0.0):
        warnings.append(("gantry_tilt_resampled", f"{folder}: positions sheared {geometry['tilt_deg']:.2f} degrees "
                         "(tilted gantry); resampled to an orthogonal grid (linear interpolation)"))
    return warnings


def _mask_on_series(mask_path: Path, geometry: dict, shape: tuple[int, ...], options: dict[str, Any]) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """The reference mask (a NIfTI/NRRD file, or a SEG/RTSTRUCT rasterised) on the series' grid, with
    its notes; off the grid: ``mask_geometry_mismatch``, otherwise invalid: ``invalid_reference_mask``."""
    from amtlib.dicom import annotations as an

    notes: list[tuple[str, str]] = []
    try:
        if mk.mask_suffix(mask_path):
            mask, reoriented = mk.mask_on_image_grid(mask_path, geometry["affine"], shape, label=options["mask_label"],
                                                     tolerance_mm=options["mask_tolerance_mm"], notes=notes)
            if reoriented:
                notes.append(("mask_reoriented", f"{mask_path}: axes permuted or flipped relative to the image; reoriented by world coordinates"))
            return mask, notes
        mask = an.read_annotation(mask_path, geometry, label=options["mask_label"], notes=notes)
    except mk.MaskError as exc:
        raise _Unusable("mask_geometry_mismatch" if exc.reason == mk.OFF_GRID else "invalid_reference_mask", str(exc)) from None
    except an.AnnotationError as exc:
        raise _Unusable("mask_geometry_mismatch" if exc.reason == an.OFF_GRID else "invalid_reference_mask", str(exc)) from None
    if not mask.any():
        raise _Unusable("invalid_reference_mask", f"{mask_path}: no tumour voxel in the chosen segment/ROI")
    notes.append(("mask_from_annotation", f"{mask_path}: {an.annotation_kind(mask_path)} rasterised onto the series grid"))
    return mask, notes


def _anatomy_on_series(raw_dir: Path, uid: str, shape: tuple[int, ...], geometry: dict, options: dict[str, Any]) -> np.ndarray | None:
    """``anatomy/<series_uid>.nii.gz`` (the synthetic cohort's organ labels) when it lies on the series' grid."""
    from amtlib.paths import is_safe_id

    anat_path = raw_dir / "anatomy" / f"{uid}.nii.gz"
    if not (is_safe_id(uid) and anat_path.is_file()):
        return None
    anat, anat_affine = _load_mask(anat_path)
    if anat.shape == shape and np.allclose(anat_affine, geometry["affine"], atol=options["atol_mm"]):
        return anat
    log.warning("%s: anatomy geometry differs from its image; anatomy not used", anat_path)
    return None


class _Unusable(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def process_patient(
    patient: dict[str, Any],
    candidates: list[dict[str, Any]],
    raw_dir: str | Path,
    out_dir: str | Path,
    unreadable_files: dict[str, list[str]] | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Pick the first usable ranked series of one patient and write its NIfTI image, mask and anatomy.

    ``patient`` is its clinical row, ``candidates`` its ranked series rows (:func:`rank_series`).
    ``unreadable_files`` maps a folder to its files that claim to be DICOM and do not parse;
    ``options`` are :data:`DEFAULT_OPTIONS` (tilt policy, derived images, mask label and tolerance).
    Returns ``{"row": manifest row, "warnings": [(kind, detail)], "files": [...]}`` or
    ``{"exclusion": (reason, detail)}``; never raises for bad input data. Writes ``images/``,
    ``masks/``, ``anatomy/<case_id>.nii.gz`` under ``out_dir``.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    unreadable = unreadable_files or {}
    options = {**DEFAULT_OPTIONS, **(options or {})}
    pid = str(patient["patient_id"])
    first: _Unusable | None = None
    details = []
    for row in candidates:
        try:
            volume, geometry, mask, anatomy, warnings = _try_series(row, raw_dir, unreadable, options)
        except _Unusable as exc:
            first = first or exc
            details.append(f"{row['folder']}: {exc.detail}")
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
        }, "warnings": warnings, "files": list(geometry["files"]), "sop_uids": list(geometry["sop_uids"])}
    assert first is not None
    return {"exclusion": (first.reason, " | ".join(details))}


#: Reading options of the cohort build (notebook 01 parameters of the same names).
DEFAULT_OPTIONS: dict[str, Any] = {
    "tilt_policy": "resample",     # tilted gantry: "resample" to an orthogonal grid (as dcm2niix) or "exclude"
    "accept_derived": False,       # DERIVED/SECONDARY CT images as candidates
    "mask_label": None,            # tumour label of a multi-label mask (int or .seg.nrrd segment name)
    "mask_tolerance_mm": mk.TOLERANCE_MM,  # mask voxel centres vs the image's
    "atol_mm": 1e-3,               # anatomy label maps (synthetic cohort) vs the image affine
}


def _process_star(args: tuple) -> dict[str, Any]:
    return process_patient(*args)


# --------------------------------------------------------------------------------------------------
# the whole cohort (I/O)


def _scan(raw_dir: Path, accept_derived: bool, workers: int = 1) -> Any:
    dicom_root = raw_dir / "dicom"
    if dicom_root.is_dir():
        return dicomio.scan_tree(dicom_root, patient_level=True, accept_derived=accept_derived, workers=workers)
    log.warning("%s: no dicom/ folder; every patient will be excluded as no_ct_series", raw_dir)
    return dicomio.ScanResult.empty()


def _no_series_reason(pid: str, dicom_root: Path, scan: Any) -> tuple[str, str]:
    """Reason for a screened patient without a candidate CT series, naming what was found instead."""
    bad = [p for p in scan.unreadable["path"] if dicomio.patient_folder_of(p, dicom_root) == pid]
    if bad:
        return "unreadable_files", f"{len(bad)} unreadable file(s), e.g. {bad[0]}: {scan.unreadable.set_index('path').loc[bad[0], 'reason']}"
    others = scan.objects[scan.objects["patient_folder"] == pid]
    if len(others):
        kinds = sorted({f"{r}, modality {m}" if m else r for r, m in zip(others["reason"], others["modality"])})
        return "no_ct_series", f"no CT image series under {dicom_root / pid}; found only {len(others)} other object(s): {'; '.join(kinds)}"
    if not (dicom_root / pid).is_dir():
        return "no_ct_series", f"no folder {dicom_root / pid} (the patient's DICOM goes in dicom/<patient_id>/)"
    return "no_ct_series", f"no DICOM CT files under {dicom_root / pid}"


def build_cohort(
    raw_dir: str | Path,
    out_dir: str | Path,
    min_age: float = MIN_AGE_YEARS,
    workers: int = 1,
    central_name: str = CENTRAL,
    atol_mm: float = 1e-3,
    tilt_policy: str = "resample",
    accept_derived: bool = False,
    mask_label: int | str | None = None,
    mask_tolerance_mm: float = mk.TOLERANCE_MM,
) -> CohortResult:
    """Apply the criteria to a raw cohort, select and convert one series per patient, write the outputs.

    Paper section: Inclusion and exclusion criteria. ``raw_dir`` follows data_manifest/README.md
    (``clinical.csv``, ``dicom/<patient_id>/...``, ``masks/``, optional ``anatomy/``) and is only read.
    Writes into ``out_dir``: ``images/``, ``masks/``, ``anatomy/``, ``manifest.csv``,
    ``exclusions.csv`` (patient_id, reason, detail), ``warnings.csv`` (:data:`WARNING_COLUMNS`),
    ``sources.json`` (case id -> series UID and source files in slice order, for DICOM export) and
    ``cohort_flow.json``. Patient folders absent from ``clinical.csv`` are ignored with a warning (they
    were not screened). ``workers`` > 1 scans and converts patients in parallel processes. ``tilt_policy``,
    ``accept_derived``, ``mask_label`` and ``mask_tolerance_mm`` are described in :mod:`amtlib.dicom.dicomio`
    and :mod:`amtlib.masks`; none of them changes what is read silently (each use is in warnings.csv).
    """
    if tilt_policy not in dicomio.TILT_POLICIES:
        raise AmtError(f"tilt_policy {tilt_policy!r}", "unknown tilt policy", f"use one of {', '.join(dicomio.TILT_POLICIES)}")
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    clinical = read_clinical(raw_dir / "clinical.csv")
    scan = _scan(raw_dir, accept_derived, workers)
    warnings = _scan_warnings(scan, set(clinical["patient_id"]), raw_dir / "dicom")
    options = {"tilt_policy": tilt_policy, "accept_derived": accept_derived, "mask_label": mask_label,
               "mask_tolerance_mm": mask_tolerance_mm, "atol_mm": atol_mm}
    exclusions, jobs = _screen(clinical, scan, raw_dir, out_dir, min_age, central_name, options)
    results = _convert(jobs, workers)
    rows, sources = [], {}
    for job, res in zip(jobs, results):
        pid = job[0]["patient_id"]
        if "row" in res:
            rows.append(res["row"])
            sources[res["row"]["case_id"]] = {"series_uid": res["row"]["series_uid"], "files": res["files"], "sop_uids": res["sop_uids"]}
            warnings.extend({"patient_id": pid, "series_uid": res["row"]["series_uid"], "kind": k, "detail": d} for k, d in res["warnings"])
        else:
            exclusions.append({"patient_id": pid, "reason": res["exclusion"][0], "detail": res["exclusion"][1]})
    full = pd.DataFrame(rows)
    manifest = full.reindex(columns=list(mf.COLUMN_NAMES)) if len(full) else mf.empty_manifest()
    excl = _exclusions_table(exclusions)
    warn = pd.DataFrame(warnings, columns=list(WARNING_COLUMNS)).sort_values(["patient_id", "kind"], kind="stable").reset_index(drop=True)
    flow = cohort_flow(len(clinical), excl, manifest)
    flow.update({"series_selected": {k: int(v) for k, v in (full["series_kind"].value_counts().to_dict() if len(full) else {}).items()},
                 "min_age": min_age, "source": {"raw_dir": str(raw_dir.resolve())}, "unreadable_files": int(len(scan.unreadable)),
                 "skipped_non_dicom_files": int(len(scan.skipped)), "other_dicom_objects": int(len(scan.objects)),
                 "warnings_by_kind": {str(k): int(v) for k, v in warn["kind"].value_counts().sort_index().items()},
                 "options": {k: v for k, v in options.items() if k != "atol_mm"}})
    paths = write_outputs(out_dir, manifest, excl, flow, warn, sources)
    _log_summary(excl, warn, paths)
    return CohortResult(manifest, excl, flow, paths, warn)


def _scan_warnings(scan: Any, screened: set[str], dicom_root: Path) -> list[dict[str, str]]:
    """warnings.csv rows of the scan: patient folders not in clinical.csv (ignored), then the scan's own."""
    warnings = []
    unknown = sorted(set(scan.series["patient_folder"]) - screened)
    if unknown:
        log.warning("%d patient folder(s) under dicom/ not in clinical.csv, ignored: %s", len(unknown), ", ".join(unknown[:10]))
        for pid in unknown:
            warnings.append({"patient_id": pid, "series_uid": "", "kind": "patient_not_screened",
                             "detail": f"{dicom_root / pid}: no row in clinical.csv; not screened, ignored"})
    for w in scan.warnings.itertuples():
        warnings.append({"patient_id": w.patient_folder, "series_uid": w.series_uid, "kind": w.kind, "detail": w.detail})
    return warnings


def _screen(clinical: pd.DataFrame, scan: Any, raw_dir: Path, out_dir: Path, min_age: float, central_name: str,
            options: dict[str, Any]) -> tuple[list[dict[str, str]], list[tuple]]:
    """The clinical criteria and the presence of a CT series, patient by patient in clinical.csv order:
    exclusion rows for those who fail, and one :func:`process_patient` job (its ranked series) for the rest."""
    dicom_root = raw_dir / "dicom"
    series = scan.series
    unreadable_files: dict[str, list[str]] = {}
    for path in scan.unreadable["path"]:
        unreadable_files.setdefault(str(Path(path).parent), []).append(path)
    annotations = annotation_index(raw_dir, scan.objects)
    by_patient = dict(tuple(series.groupby("patient_folder"))) if len(series) else {}
    exclusions: list[dict[str, str]] = []
    jobs: list[tuple] = []
    for _, patient in clinical.iterrows():
        pid = patient["patient_id"]
        failed = clinical_reason(patient, min_age)
        if failed is None and pid not in by_patient:
            failed = _no_series_reason(pid, dicom_root, scan)
        if failed is not None:
            exclusions.append({"patient_id": pid, "reason": failed[0], "detail": failed[1]})
            continue
        ranked = rank_series(by_patient[pid], central_name).assign(_n_candidates=len(by_patient[pid]))
        ranked["_annotations"] = [tuple(annotations.get(uid, ())) for uid in ranked["series_uid"]]
        jobs.append((patient.to_dict(), ranked.to_dict("records"), raw_dir, out_dir, unreadable_files, options))
    return exclusions, jobs


def _convert(jobs: list[tuple], workers: int) -> list[dict[str, Any]]:
    """Run :func:`process_patient` on every job, in ``workers`` processes when > 1, results in job order."""
    from amtlib.progress import track  # cases done and ETA, as plain lines under papermill

    if workers > 1 and len(jobs) > 1:
        with process_pool(workers) as pool:
            # small chunks: results (and the progress line) arrive steadily, not in bursts of 1/8 of the cohort
            return list(track(pool.map(_process_star, jobs, chunksize=max(1, min(4, len(jobs) // (4 * workers)))),
                              len(jobs), "cohort", "patient"))
    return list(track(map(_process_star, jobs), len(jobs), "cohort", "patient"))


def _exclusions_table(exclusions: list[dict[str, str]]) -> pd.DataFrame:
    """exclusions.csv: sorted by reason in the order of :data:`REASONS` (Fig 2's boxes), then patient id."""
    excl = pd.DataFrame(exclusions, columns=["patient_id", "reason", "detail"])
    order = {r: i for i, r in enumerate(REASONS)}
    return excl.sort_values(["reason", "patient_id"], key=lambda s: s.map(order) if s.name == "reason" else s).reset_index(drop=True)


def _log_summary(exclusions: pd.DataFrame, warnings: pd.DataFrame, paths: dict[str, Path]) -> None:
    """One line per exclusion reason and per warning kind, with the first detail, on the log."""
    for reason, rows in exclusions.groupby("reason", sort=False):
        log.info("excluded %d patient(s): %s, e.g. %s: %s", len(rows), reason, rows["patient_id"].iloc[0], rows["detail"].iloc[0][:300])
    for kind, rows in warnings.groupby("kind", sort=False):
        log.info("warning (%d): %s, e.g. %s", len(rows), kind, rows["detail"].iloc[0][:300])
    log.info("details: %s, %s", paths["exclusions"], paths["warnings"])
    # the same summary for the terminal: amt run shows a step's notices after it
    from amtlib.paths import add_notice

    step_dir = Path(paths["exclusions"]).parent
    if len(exclusions):
        counts = ", ".join(f"{n} {r}" for r, n in exclusions["reason"].value_counts(sort=False).items())
        add_notice(step_dir, f"excluded {len(exclusions)} patient(s): {counts} (each with its file and problem in {paths['exclusions']})")
    if len(warnings):
        kinds = ", ".join(f"{n} {k}" for k, n in warnings["kind"].value_counts(sort=False).items())
        add_notice(step_dir, f"{len(warnings)} warning(s), nothing excluded for them: {kinds} (see {paths['warnings']})")


def write_outputs(out_dir: str | Path, manifest: pd.DataFrame, exclusions: pd.DataFrame, flow: dict[str, Any],
                  warnings: pd.DataFrame | None = None, sources: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``manifest.csv``, ``exclusions.csv``, ``warnings.csv``, ``sources.json`` and
    ``cohort_flow.json`` atomically into ``out_dir``,
    and delete the NIfTIs of ``images/``, ``masks/``, ``anatomy/`` of cases no longer in the manifest
    (left by an earlier run of the step on another cohort)."""
    out_dir = Path(out_dir)
    for folder in ("images", "masks", "anatomy"):
        prune_folder(out_dir / folder, set(manifest["case_id"].astype(str)) if len(manifest) else set())
    return {
        "manifest": write_csv(out_dir / "manifest.csv", manifest),
        "exclusions": write_csv(out_dir / "exclusions.csv", exclusions),
        "cohort_flow": write_json(out_dir / "cohort_flow.json", flow),
        "warnings": write_csv(out_dir / "warnings.csv", warnings if warnings is not None else pd.DataFrame(columns=list(WARNING_COLUMNS))),
        "sources": write_json(out_dir / "sources.json", sources or {}),
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
#: Manufacturer strings (upper case, substring) -> Table 2 / Table 3 key (amtlib.subgroups.SUBGROUP_LABELS).
def table1(cases: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 1 regenerated beside the reported values: age median (range), sex, histology by split.

    ``cases`` needs ``split``, ``age``, ``sex``, ``histology``. One row per (variable, level); for each
    split two columns: regenerated ``<split>`` and ``<split> (paper)``. Percentages are of the split,
    recomputed from the paper's counts too (so 4/62 shows 6.5% where the paper prints 6.4%). The paper
    gives no sex counts per split (only 339 M / 372 F overall), hence ``–``.
    """
    from amtlib.reported import reported

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

    Manufacturers are mapped with :func:`amtlib.subgroups.vendor_key` (the key Tables 3-4 use too); unknown
    ones keep their own key and a missing one shows as ``unknown``. Percentages are
    recomputed from counts (37/164 shows 22.6% where the paper prints 22.5%).
    """
    from amtlib.reported import reported
    from amtlib.subgroups import SUBGROUP_LABELS

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
