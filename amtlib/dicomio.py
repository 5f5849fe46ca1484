"""Reading and writing DICOM CT series: header scan, geometry checks, HU volumes, NIfTI conversion.

Paper section: Data collection (one chest CT series per patient, as delivered by each institution).

Geometry conventions. DICOM positions are in the patient LPS frame (x to the patient's left, y to the
posterior, z to the head). Volumes are returned as (z, y, x) numpy arrays with x = column index,
y = row index and z = slice index sorted by position along the slice normal (row cosine x column
cosine), so for a standard axial series z = 0 is the most inferior slice. The NIfTI ``affine`` maps
the voxel index (i, j, k) = (x, y, z) to RAS mm (the first two rows of the LPS matrix negated), which
is what :func:`amtlib.io.save_nifti` expects. ``origin`` (LPS mm, position of voxel (0, 0, 0)) and
``direction`` (row-major 3x3, columns = x, y, z axes in LPS) follow SimpleITK's convention.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from amtlib.io import save_nifti

log = logging.getLogger(__name__)

#: Columns of the series table returned by :func:`scan_tree`.
SERIES_COLUMNS: tuple[str, ...] = (
    "folder",
    "patient_id",
    "study_uid",
    "series_uid",
    "institution",
    "manufacturer",
    "model_name",
    "kvp",
    "slice_thickness_mm",
    "convolution_kernel",
    "series_description",
    "study_date",
    "modality",
    "n_files",
)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Relative tolerance on slice steps; larger deviations count as uneven spacing.
SPACING_RTOL = 0.01
#: Absolute tolerance (mm) below which two slice positions are the same position.
POSITION_ATOL_MM = 1e-3
#: Tags a series must carry to be placed in space.
_GEOMETRY_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
#: LPS <-> RAS flip of the first two world axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class DicomSeriesError(ValueError):
    """A DICOM series that cannot be turned into one consistent volume; the message names the folder."""


# --------------------------------------------------------------------------------------------------
# reading


def _read_header(path: Path) -> Any:
    import pydicom

    return pydicom.dcmread(str(path), stop_before_pixels=True)


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def _number(ds: Any, keyword: str) -> float:
    value = ds.get(keyword, None)
    try:
        return float(value) if value not in (None, "") else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def scan_tree(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Index every DICOM series under ``root`` from headers only (pixel data is not read).

    Paper section: Data collection. Returns ``(series, unreadable)``: ``series`` has one row per
    (folder, SeriesInstanceUID) with the columns of :data:`SERIES_COLUMNS` (``kvp`` and
    ``slice_thickness_mm`` are floats, NaN when absent; ``folder`` is absolute); ``unreadable`` has one
    row per file that is not readable DICOM (``path``, ``reason``). Hidden files are skipped. An empty
    or missing tree gives two empty frames with those columns (a missing ``root`` raises ValueError).
    """
    import pydicom

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder; give the raw cohort's dicom/ folder")
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    bad: list[dict[str, str]] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        try:
            ds = _read_header(path)
            uid = _text(ds, "SeriesInstanceUID")
            if not uid:
                raise ValueError("no SeriesInstanceUID")
        except (pydicom.errors.InvalidDicomError, ValueError, OSError, EOFError, AttributeError) as exc:
            bad.append({"path": str(path.resolve()), "reason": f"{type(exc).__name__}: {exc}"})
            continue
        key = (str(path.parent.resolve()), uid)
        if key in groups:
            groups[key]["n_files"] += 1
            continue
        groups[key] = {
            "folder": key[0],
            "patient_id": _text(ds, "PatientID"),
            "study_uid": _text(ds, "StudyInstanceUID"),
            "series_uid": uid,
            "institution": _text(ds, "InstitutionName"),
            "manufacturer": _text(ds, "Manufacturer"),
            "model_name": _text(ds, "ManufacturerModelName"),
            "kvp": _number(ds, "KVP"),
            "slice_thickness_mm": _number(ds, "SliceThickness"),
            "convolution_kernel": _text(ds, "ConvolutionKernel"),
            "series_description": _text(ds, "SeriesDescription"),
            "study_date": _text(ds, "StudyDate"),
            "modality": _text(ds, "Modality"),
            "n_files": 1,
        }
    series = pd.DataFrame(list(groups.values()), columns=list(SERIES_COLUMNS))
    unreadable = pd.DataFrame(bad, columns=["path", "reason"])
    return series, unreadable


def _load_folder(folder: Path) -> tuple[list[tuple[Path, Any]], list[str]]:
    """Read every file of a series folder with pixel data; return (datasets, problems)."""
    import pydicom

    if not folder.is_dir():
        raise DicomSeriesError(f"{folder}: series folder not found")
    datasets: list[tuple[Path, Any]] = []
    problems: list[str] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(str(path))
        except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError) as exc:
            problems.append(f"non-DICOM file {path.name} ({type(exc).__name__}: {exc})")
            continue
        if "PixelData" not in ds:
            problems.append(f"file {path.name} has no pixel data")
            continue
        try:
            ds.pixel_array  # decodes now so a truncated file is found here, not later
        except Exception as exc:  # pydicom raises several types for broken pixel data
            problems.append(f"file {path.name}: pixel data unreadable, file truncated? ({type(exc).__name__}: {exc})")
            continue
        missing = [t for t in _GEOMETRY_TAGS if t not in ds]
        if missing:
            problems.append(f"file {path.name} lacks {', '.join(missing)}")
            continue
        datasets.append((path, ds))
    if not datasets and not problems:
        problems.append("no DICOM files")
    return datasets, problems


def _geometry_problems(datasets: list[tuple[Path, Any]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Consistency checks across slices; returns (problems, sort order, positions along the normal)."""
    problems: list[str] = []
    if not datasets:
        return problems, np.zeros(0, dtype=int), np.zeros(0)
    uids = {_text(ds, "SeriesInstanceUID") for _, ds in datasets}
    if len(uids) > 1:
        problems.append(f"{len(uids)} different SeriesInstanceUIDs in one folder")
    orients = np.array([[float(v) for v in ds.ImageOrientationPatient] for _, ds in datasets])
    if not np.allclose(orients, orients[0], atol=1e-4):
        problems.append("mixed ImageOrientationPatient")
    pix = np.array([[float(v) for v in ds.PixelSpacing] for _, ds in datasets])
    if not np.allclose(pix, pix[0], atol=1e-4):
        problems.append(f"mixed PixelSpacing {sorted({tuple(p) for p in pix.round(4).tolist()})}")
    shapes = {(int(ds.Rows), int(ds.Columns)) for _, ds in datasets}
    if len(shapes) > 1:
        problems.append(f"mixed image shape {sorted(shapes)}")
    normal = np.cross(orients[0][:3], orients[0][3:])
    pos = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in datasets]) @ normal
    order = np.argsort(pos, kind="stable")
    pos_sorted = pos[order]
    if len(pos_sorted) >= 2:
        steps = np.diff(pos_sorted)
        dup = steps < POSITION_ATOL_MM
        if dup.any():
            names = [datasets[order[i + 1]][0].name for i in np.flatnonzero(dup)]
            problems.append(f"duplicate slice position ({len(names)}x, e.g. {names[0]} at {pos_sorted[np.flatnonzero(dup)[0]]:.2f} mm)")
        real = steps[~dup]
        if real.size:
            step = float(np.median(real))
            gaps = np.flatnonzero(real > 1.5 * step)
            if gaps.size:
                problems.append(
                    f"missing slice: gap of {real[gaps[0]]:.2f} mm where the step is {step:.2f} mm ({gaps.size} gap(s))"
                )
            elif np.abs(real - step).max() > max(SPACING_RTOL * step, POSITION_ATOL_MM):
                problems.append(f"uneven slice spacing: steps from {real.min():.3f} to {real.max():.3f} mm")
    return problems, order, pos_sorted


def check_series(folder: str | Path) -> list[str]:
    """List what prevents ``folder`` from being one consistent CT volume; ``[]`` when it is fine.

    Paper section: Inclusion/exclusion (incomplete CT series). Finds non-DICOM or truncated files,
    files without geometry tags, several series in one folder, mixed orientation, pixel spacing or
    image shape, duplicate slice positions, gaps (a step more than 1.5x the median: missing slice) and
    uneven steps (more than 1 % off the median). Reads the pixel data of every file. A missing folder
    raises :class:`DicomSeriesError`.
    """
    folder = Path(folder)
    datasets, problems = _load_folder(folder)
    geo, _, _ = _geometry_problems(datasets)
    return problems + geo


def _slice_step_mm(datasets: list[tuple[Path, Any]], pos_sorted: np.ndarray) -> float:
    if len(pos_sorted) >= 2:
        return float((pos_sorted[-1] - pos_sorted[0]) / (len(pos_sorted) - 1))
    ds = datasets[0][1]
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _number(ds, keyword)
        if np.isfinite(value) and value > 0:
            return value
    return 1.0


def read_series(folder: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a CT series folder as HU ``float32`` (z, y, x) plus its geometry.

    Paper section: Data collection. Slices are sorted along the slice normal; HU = stored value x
    RescaleSlope + RescaleIntercept (per file; 1 and 0 when absent). ``geometry`` holds ``spacing``
    (z, y, x) mm, ``affine`` (4x4 voxel (x, y, z) -> RAS, for :func:`amtlib.io.save_nifti`),
    ``origin`` (LPS mm of voxel 0), ``direction`` (row-major 3x3, SimpleITK convention), ``shape``
    (z, y, x), ``series_uid``, ``frame_of_reference_uid`` and ``sop_uids`` (SOPInstanceUID of each
    slice, z = 0 first; what DICOM SEG and RTSTRUCT reference). A single
    slice gets SpacingBetweenSlices or SliceThickness as z spacing. Raises :class:`DicomSeriesError`
    naming the folder and every problem :func:`check_series` would report.
    """
    folder = Path(folder)
    datasets, problems = _load_folder(folder)
    geo, order, pos_sorted = _geometry_problems(datasets)
    problems += geo
    if problems:
        raise DicomSeriesError(f"{folder}: " + "; ".join(problems) + "; exclude this series or repair it")
    slices = []
    for idx in order:
        ds = datasets[idx][1]
        slope = _number(ds, "RescaleSlope")
        intercept = _number(ds, "RescaleIntercept")
        slope = 1.0 if not np.isfinite(slope) else slope
        intercept = 0.0 if not np.isfinite(intercept) else intercept
        slices.append(ds.pixel_array.astype(np.float32) * np.float32(slope) + np.float32(intercept))
    volume = np.stack(slices, axis=0)
    first = datasets[order[0]][1]
    iop = np.array([float(v) for v in first.ImageOrientationPatient])
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    dy, dx = (float(v) for v in first.PixelSpacing)
    dz = _slice_step_mm(datasets, pos_sorted)
    origin = np.array([float(v) for v in first.ImagePositionPatient])
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dx
    lps[:3, 1] = col_dir * dy
    lps[:3, 2] = normal * dz
    lps[:3, 3] = origin
    direction = np.stack([row_dir, col_dir, normal], axis=1)
    geometry = {
        "spacing": (abs(dz), dy, dx),
        "affine": _LPS_TO_RAS @ lps,
        "origin": tuple(origin.tolist()),
        "direction": tuple(direction.ravel().tolist()),
        "shape": tuple(volume.shape),
        "series_uid": _text(first, "SeriesInstanceUID"),
        "frame_of_reference_uid": _text(first, "FrameOfReferenceUID"),
        "sop_uids": tuple(_text(datasets[i][1], "SOPInstanceUID") for i in order),
    }
    return volume, geometry


def series_to_nifti(folder: str | Path, out_path: str | Path) -> dict[str, Any]:
    """Convert a DICOM series folder to a NIfTI file in HU (float32, atomic write); return the geometry.

    Raises :class:`DicomSeriesError` for an inconsistent series (see :func:`read_series`).
    """
    volume, geometry = read_series(folder)
    save_nifti(volume, geometry["affine"], out_path)
    return geometry


# --------------------------------------------------------------------------------------------------
# writing


def _uid_seed(rng_or_uid_seed: Any) -> str:
    if isinstance(rng_or_uid_seed, np.random.Generator):
        return str(int(rng_or_uid_seed.integers(0, 2**63 - 1)))
    return str(rng_or_uid_seed)


def deterministic_uid(*parts: Any) -> str:
    """A DICOM UID under the ``2.25.`` root derived from ``parts`` (same parts, same UID)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


#: Header values the writer fills when ``meta`` does not give them.
_DEFAULT_META: dict[str, Any] = {
    "PatientID": "ANON",
    "InstitutionName": "",
    "Manufacturer": "",
    "ManufacturerModelName": "",
    "KVP": 120,
    "ConvolutionKernel": "",
    "SeriesDescription": "CHEST",
    "StudyDate": "20000101",
    "SeriesNumber": 1,
    "BodyPartExamined": "CHEST",
}


def write_ct_series(
    volume_hu: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    out_dir: str | Path,
    meta: dict[str, Any],
    rng_or_uid_seed: Any,
    origin: tuple[float, float, float] | None = None,
) -> list[Path]:
    """Write a (z, y, x) HU volume as an axial CT Image Storage series, one file per slice.

    Pixels are int16 with RescaleSlope 1 and RescaleIntercept -1024 (HU rounded to integers, clipped
    to [-1024, 31743]); slice k lies at ``origin`` + k x spacing_z along +z (LPS, so z = 0 is the most
    inferior slice) with orientation [1,0,0,0,1,0]. ``origin`` (LPS mm of voxel (0, 0, 0)) defaults to
    centring the volume in x and y at z = 0. ``meta`` gives header values by DICOM keyword (PatientID,
    InstitutionName, Manufacturer, ManufacturerModelName, KVP, ConvolutionKernel, SeriesDescription,
    StudyDate, optionally StudyInstanceUID/SeriesInstanceUID, PatientSex, PatientAge, ...). Missing
    UIDs are derived from ``rng_or_uid_seed`` (an int/str seed or a Generator), so the same inputs give
    byte-identical files. No names, birth dates or other identifiers are written: Type 2 elements
    (PatientName, PatientBirthDate, PatientSex, PositionReferenceIndicator, ...) are present and empty
    unless ``meta`` gives them, PatientPosition is ``HFS`` and AcquisitionNumber 1, so every file passes
    ``dciodvfy`` (dicom3tools) and can be referenced by DICOM SEG/RTSTRUCT (highdicom). Files are
    ``IM00001.dcm``...; the series is written in a hidden sibling folder and renamed onto ``out_dir``
    (replacing an existing one), so a folder is either complete or absent. Returns the paths in slice order.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    volume = np.asarray(volume_hu)
    if volume.ndim != 3:
        raise ValueError(f"{out_dir}: expected a 3D (z, y, x) volume, got shape {volume.shape}")
    dz, dy, dx = (float(s) for s in spacing_zyx)
    if min(dz, dy, dx) <= 0:
        raise ValueError(f"{out_dir}: spacing must be positive, got {spacing_zyx}")
    nz, ny, nx = volume.shape
    if origin is None:
        origin = (-(nx - 1) * dx / 2.0, -(ny - 1) * dy / 2.0, 0.0)
    seed = _uid_seed(rng_or_uid_seed)
    fields = {**_DEFAULT_META, **meta}
    study_uid = str(fields.pop("StudyInstanceUID", "") or deterministic_uid(seed, "study"))
    series_uid = str(fields.pop("SeriesInstanceUID", "") or deterministic_uid(seed, "series", study_uid))
    frame_uid = deterministic_uid(seed, "frame", series_uid)
    stored = np.clip(np.rint(volume.astype(np.float64)) + 1024.0, -32768, 32767).astype(np.int16)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # the series is written into a hidden sibling folder and renamed into place in one step
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = pydicom.Dataset()
    ds.file_meta = file_meta
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientName = ""
    # Type 2 elements of the Patient, General Series, Frame of Reference and CT Image modules: present,
    # empty when unknown (dciodvfy reports their absence; highdicom cannot reference a source without them)
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientPosition = "HFS"
    ds.PositionReferenceIndicator = ""
    ds.AcquisitionNumber = 1
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyTime = "000000"
    ds.SeriesDate = str(fields.get("StudyDate", ""))
    for keyword, value in fields.items():
        setattr(ds, keyword, value)
    ds.SliceThickness = fields.get("SliceThickness", dz)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [_ds_str(dy), _ds_str(dx)]
    ds.Rows, ds.Columns = ny, nx
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    paths: list[Path] = []
    for k in range(nz):
        # one dataset, per-slice elements replaced: building a fresh header per file is the slow part
        sop_uid = deterministic_uid(seed, "sop", series_uid, k)
        file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds_str(origin[0]), _ds_str(origin[1]), _ds_str(origin[2] + k * dz)]
        ds.SliceLocation = _ds_str(origin[2] + k * dz)
        ds.PixelData = np.ascontiguousarray(stored[k]).astype("<i2").tobytes()
        name = f"IM{k + 1:05d}.dcm"
        ds.save_as(str(staging / name), enforce_file_format=True)
        paths.append(out_dir / name)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)
    return paths


def _ds_str(value: float) -> str:
    """Decimal String for a coordinate: at most 16 characters, round-trips to 1e-6 mm."""
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def iter_series_folders(root: str | Path) -> Iterable[Path]:
    """Folders under ``root`` that directly contain at least one file (candidate series folders)."""
    root = Path(root)
    return sorted({p.parent for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")})
