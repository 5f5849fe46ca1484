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
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from amtlib.errors import AmtError, DomainError
from amtlib.io import save_nifti

log = logging.getLogger(__name__)

#: Columns of the series table returned by :func:`scan_tree`.
SERIES_COLUMNS: tuple[str, ...] = (
    "folder",
    "patient_folder",
    "patient_id",
    "study_uid",
    "series_uid",
    "series_uid_derived",
    "sop_class",
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
    "files",
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


#: Reason codes of :class:`DicomSeriesError`, most decisive first (the cohort maps them to its exclusion
#: reasons; the messages are free to change).
SERIES_REASONS: tuple[str, ...] = ("tilted_gantry", "unreadable_file", "inconsistent_series", "not_found")


class DicomSeriesError(DomainError):
    """A DICOM series that cannot be turned into one consistent volume; the message names the folder.

    ``reason`` (:data:`SERIES_REASONS`): ``tilted_gantry`` (sheared positions with
    ``tilt_policy="exclude"``), ``unreadable_file`` (a file that does not parse, truncated or
    undecodable pixel data, a frame without geometry tags), ``inconsistent_series`` (no image, several
    series, mixed geometry, duplicate, missing or uneven slices) or ``not_found`` (no such folder).
    Built as ``DicomSeriesError(folder, problem, remedy, reason=...)``.
    """

    DEFAULT_REASON = "inconsistent_series"


# --------------------------------------------------------------------------------------------------
# reading
#
# What is read, and what is not (paper section: Data collection; real archives hold more than CT slices):
#
# * Files are recognised by content, never by name: a file is DICOM when it has the ``DICM`` marker
#   at byte 128, or (old exports without a preamble) when pydicom can parse it and it carries a
#   SOPClassUID. Other files (DICOMDIR backups, text, XML, images, zero-byte, hidden files) are skipped
#   with one warning per folder; they never exclude a series. A file that claims to be DICOM (marker,
#   or a DICOM-like name: .dcm, .ima, .dicom) but cannot be parsed is *unreadable*.
# * Image candidates are CT Image Storage, Enhanced CT and Legacy Converted Enhanced CT objects whose
#   ImageType is ORIGINAL\PRIMARY (absent ImageType is accepted): localizers/scouts are never
#   candidates, DERIVED or SECONDARY images only with ``accept_derived``. Every other DICOM object
#   (SEG, RTSTRUCT, SR, presentation states, RT dose, secondary captures, dose reports, DICOMDIR) is
#   listed in ``ScanResult.objects`` with the reason it is not an image candidate.
# * Series are grouped by SeriesInstanceUID within a patient, across sub-folders. A blank or missing
#   UID falls back to the folder, split by orientation and slice thickness, with a derived id
#   ``derived.<hash>`` (deterministic) and a warning.

#: Media Storage Directory (DICOMDIR): an index of a medium, not an object of the cohort.
MEDIA_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"
#: SOP classes read as CT volumes (single-frame and multi-frame).
CT_IMAGE_CLASSES: dict[str, str] = {
    CT_IMAGE_STORAGE: "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}
#: SOP classes of annotations that can become reference masks (read by :mod:`amtlib.dicom.annotations`).
ANNOTATION_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set Storage",
}
#: File name suffixes that claim DICOM content (a file so named that does not parse is unreadable).
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima", ".dic")
#: Largest angle (degrees) between the slice-to-slice step and the slice normal still read as orthogonal.
TILT_TOLERANCE_DEG = 0.05
#: What to do with a tilted-gantry (sheared) series: resample to an orthogonal grid or exclude it.
TILT_POLICIES: tuple[str, ...] = ("resample", "exclude")
#: Pixel-data plugins that decode each compressed transfer syntax (named in errors).
_DECODERS: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg + pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg + pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.57": "pylibjpeg + pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.70": "pylibjpeg + pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.80": "pylibjpeg + pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.81": "pylibjpeg + pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.90": "pylibjpeg + pylibjpeg-openjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg + pylibjpeg-openjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.5": "pylibjpeg + pylibjpeg-rle (or pydicom's own RLE decoder)",
}


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


def _has_dicm_marker(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


#: Data-set UIDs that an anonymiser may blank while the file meta keeps them, and the meta element that does.
FILE_META_UIDS: dict[str, str] = {"SOPClassUID": "MediaStorageSOPClassUID", "SOPInstanceUID": "MediaStorageSOPInstanceUID"}
#: Type 1 UIDs that, when blank, are recorded in the series' warnings (``uids_blank``).
BLANKABLE_UIDS: tuple[str, ...] = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
                                   "FrameOfReferenceUID")


def fill_uids_from_file_meta(ds: Any) -> list[str]:
    """Fill SOPClassUID / SOPInstanceUID that are present but blank in the data set from the file meta's
    MediaStorage UIDs (in memory; the file is never changed), as pydicom and dcm2niix read such a file.
    An element that is absent altogether is left absent (a header cut short, not an anonymiser's blank).
    Returns the keywords filled; :func:`blank_uids` names what is still blank."""
    meta = getattr(ds, "file_meta", None) or {}
    filled = []
    for keyword, meta_keyword in FILE_META_UIDS.items():
        if keyword in ds and not _text(ds, keyword) and _text(meta, meta_keyword):
            setattr(ds, keyword, _text(meta, meta_keyword))
            filled.append(keyword)
    return filled


def blank_uids(ds: Any) -> list[str]:
    """The :data:`BLANKABLE_UIDS` that are present in ``ds`` with an empty value."""
    return [k for k in BLANKABLE_UIDS if k in ds and not _text(ds, k)]


def sniff(path: str | Path, stop_before_pixels: bool = True) -> tuple[str, Any, str]:
    """Classify one file by content: ``("dicom", dataset, "")``, ``("unreadable", None, why)`` for a
    file that claims to be DICOM but does not parse, or ``("other", None, why)`` for a non-DICOM file.

    See the rules at the top of this section. Never raises for a bad file (an unreadable folder entry
    is "other"); the dataset is read without pixel data unless ``stop_before_pixels`` is False.
    """
    import pydicom

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return "other", None, f"cannot stat ({exc.strerror})"
    if size == 0:
        return "other", None, "empty file"
    marked = _has_dicm_marker(path)
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels, force=not marked)
        meta_class = str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "") or "")
        if meta_class == MEDIA_DIRECTORY_STORAGE:
            return "other", None, "DICOMDIR (media directory, not an image)"
        ds.amt_uids_from_meta = fill_uids_from_file_meta(ds)  # a Python attribute, not a DICOM element
        sop = str(ds.get("SOPClassUID", "") or "")
        if not sop or not all(part.isdigit() for part in sop.split(".")):
            # SOPClassUID is Type 1 in every storage object: without it the header is cut short
            raise pydicom.errors.InvalidDicomError("no SOPClassUID in the data set")
        return "dicom", ds, ""
    except Exception as exc:  # pydicom raises many types on garbage; all mean "not parseable"
        why = f"{type(exc).__name__}: {str(exc)[:160]}"
        if marked or path.suffix.lower() in DICOM_SUFFIXES:
            return "unreadable", None, f"not parseable as DICOM, file truncated or corrupt? ({why})"
        return "other", None, "not DICOM"


#: Codes of :func:`image_candidate_check` (why an object is not a CT image candidate).
NOT_CANDIDATE_CODES: dict[str, str] = {"not_ct": "not a CT image (another SOP class)",
                                       "localizer": "localizer, scout or topogram", "derived": "DERIVED or SECONDARY image"}


def image_candidate_reason(ds: Any, accept_derived: bool = False) -> str:
    """Why a DICOM object is not a CT image candidate ("" when it is). The rule is stated above."""
    return image_candidate_check(ds, accept_derived)[1]


def image_candidate_check(ds: Any, accept_derived: bool = False) -> tuple[str, str]:
    """``(code, message)`` of why a DICOM object is not a CT image candidate, ``("", "")`` when it is.

    Codes are :data:`NOT_CANDIDATE_CODES`; the message names the SOP class or ImageType and may change.
    """
    sop = _text(ds, "SOPClassUID") or _text(getattr(ds, "file_meta", {}), "MediaStorageSOPClassUID")
    if sop not in CT_IMAGE_CLASSES:
        try:
            from pydicom.uid import UID

            name = ANNOTATION_CLASSES.get(sop) or (UID(sop).name if sop else "no SOPClassUID")
        except Exception:  # an unparsable UID string
            name = sop
        return "not_ct", f"not a CT image ({name})"
    image_type = [str(v).strip().upper() for v in (ds.get("ImageType") or [])]
    if "LOCALIZER" in image_type or "SCOUT" in image_type or "TOPOGRAM" in image_type:
        return "localizer", "localizer/scout image (ImageType " + "\\".join(image_type) + ")"
    derived = (len(image_type) >= 1 and image_type[0] == "DERIVED") or (len(image_type) >= 2 and image_type[1] == "SECONDARY")
    if derived and not accept_derived:
        return "derived", "derived or secondary image (ImageType " + "\\".join(image_type) + "; accept_derived=True reads it)"
    return "", ""


@dataclass
class ScanResult:
    """What :func:`scan_tree` found: image series, other DICOM objects, skipped and unreadable files.

    ``series``: one row per CT series (:data:`SERIES_COLUMNS`; ``files`` is a tuple of absolute paths,
    ``folder`` the common folder of those files, ``series_uid`` the tag or a derived id
    ``derived.<hash>`` when the tag is blank). ``objects``: non-candidate DICOM objects (``path``,
    ``patient_folder``, ``sop_class``, ``series_uid``, ``referenced_series_uid``, ``reason``, ``code``
    of :data:`NOT_CANDIDATE_CODES`, ``modality``).
    ``unreadable``: files that claim to be DICOM and do not parse (``path``, ``reason``).
    ``skipped``: non-DICOM files (``path``, ``reason``). ``warnings``: (``patient_folder``,
    ``series_uid``, ``kind``, ``detail``), see :data:`WARNING_KINDS`.
    """

    series: pd.DataFrame
    objects: pd.DataFrame
    unreadable: pd.DataFrame
    skipped: pd.DataFrame
    warnings: pd.DataFrame

    @classmethod
    def empty(cls) -> "ScanResult":
        """A scan that found nothing (frames with the documented columns)."""
        files = ["path", "reason"]
        return cls(pd.DataFrame(columns=list(SERIES_COLUMNS)), pd.DataFrame(columns=_OBJECT_COLUMNS),
                   pd.DataFrame(columns=files), pd.DataFrame(columns=files), pd.DataFrame(columns=_WARNING_COLUMNS))


#: Kinds of rows in ``warnings`` (nothing here excludes anything; each is recorded in warnings.csv).
WARNING_KINDS: dict[str, str] = {
    "non_dicom_files": "non-DICOM files skipped in a folder",
    "not_image_candidates": "DICOM objects that are not CT image candidates (SEG, RTSTRUCT, SR, localizers, derived, ...)",
    "patient_id_blank": "PatientID tag blank; the patient is the folder under dicom/",
    "patient_id_differs": "PatientID tag differs from the patient folder name",
    "series_uid_derived": "SeriesInstanceUID blank; series taken from the folder with a derived id",
    "files_outside_patient_folders": "files directly under dicom/, not in a patient folder; ignored",
    "gantry_tilt_resampled": "tilted gantry: resampled to an orthogonal grid",
    "gantry_tilt_tag": "GantryDetectorTilt recorded but the positions are not sheared: read as positioned",
    "mask_reoriented": "mask stored in another axis order or flip; reoriented by world coordinates",
    "mask_from_annotation": "reference mask rasterised from a DICOM SEG or RTSTRUCT onto the series grid",
    "mask_cropped": "mask on a larger grid containing the image's (dcm2niix's padded tilt correction): cropped",
    "uids_blank": "Type 1 UIDs blank in the data set (an anonymiser's): SOP class/instance taken from the file meta",
    "contour_not_closed": "an RTSTRUCT contour is OPEN or POINT: it encloses no area and was left out",
    "contour_degenerate": "an RTSTRUCT contour has fewer than 3 points: it encloses no area and was left out",
}

_OBJECT_COLUMNS = ["path", "patient_folder", "sop_class", "series_uid", "referenced_series_uid", "reason", "code", "modality"]
_WARNING_COLUMNS = ["patient_folder", "series_uid", "kind", "detail"]


def referenced_series(ds: Any) -> str:
    """SeriesInstanceUID an annotation refers to (SEG: ReferencedSeriesSequence; RTSTRUCT: the
    RT Referenced Series of the referenced frame of reference); "" when none is recorded."""
    for item in ds.get("ReferencedSeriesSequence", None) or []:
        uid = _text(item, "SeriesInstanceUID")
        if uid:
            return uid
    for frame in ds.get("ReferencedFrameOfReferenceSequence", None) or []:
        for study in frame.get("RTReferencedStudySequence", None) or []:
            for series in study.get("RTReferencedSeriesSequence", None) or []:
                uid = _text(series, "SeriesInstanceUID")
                if uid:
                    return uid
    return ""


def _derived_series_id(folder: Path, ds: Any) -> str:
    """Deterministic id for a series whose SeriesInstanceUID is blank: folder, orientation, thickness."""
    iop = ds.get("ImageOrientationPatient", None)
    orient = "" if iop is None else ",".join(f"{float(v):.3f}" for v in iop)
    thick = _number(ds, "SliceThickness")
    key = f"{folder.name}|{orient}|{'' if not np.isfinite(thick) else round(thick, 3)}"
    return "derived." + hashlib.sha256(key.encode()).hexdigest()[:16]


def scan_tree(root: str | Path, patient_level: bool = True, accept_derived: bool = False, workers: int = 1) -> ScanResult:
    """Index every DICOM object under ``root`` from headers only (pixel data is not read).

    Paper section: Data collection. With ``patient_level`` (the cohort layout
    ``dicom/<patient>/<any sub-folders>/<files>``) the patient is the first folder under ``root``
    (``patient_folder``), whatever the PatientID tag says: a blank or different tag is a warning.
    Without it, ``root`` itself holds one patient's files (``patient_folder`` ""). Series are grouped
    by (patient, SeriesInstanceUID) across sub-folders; the rules for files, candidates and blank
    UIDs are stated at the top of this section. A missing ``root`` raises ValueError. ``workers`` > 1
    reads the patient folders in that many processes (the same result, in the same order).
    """
    root = Path(root)
    if not root.is_dir():
        raise AmtError(root, "not a folder", "give the raw cohort's dicom/ folder")
    by_patient: dict[str, list[Path]] = defaultdict(list)
    found = _Found()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).parts
        if any(part.startswith(".") for part in rel):
            continue  # hidden files and folders (.DS_Store, editors' backups) are not data
        if patient_level and len(rel) < 2:
            found.outside.append(path.name)
            continue
        by_patient[rel[0] if patient_level else ""].append(path)
    jobs = [(patient, files, accept_derived) for patient, files in by_patient.items()]
    if workers > 1 and len(jobs) > 1:
        from amtlib.workers import process_pool

        with process_pool(workers) as pool:
            parts = list(pool.map(_scan_patient, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
    else:
        parts = [_scan_patient(job) for job in jobs]
    for part in parts:
        found.merge(part)
    warnings = found.warnings + _skipped_warnings(found.skipped, root, patient_level)
    warnings += [{"patient_folder": o["patient_folder"], "series_uid": o["series_uid"], "kind": "not_image_candidates",
                  "detail": f"{o['path']}: {o['reason']}"} for o in found.objects]
    if patient_level:
        warnings += _patient_id_warnings(found.tag_ids)
    if found.outside:
        detail = (f"{root}: {len(found.outside)} file(s) directly under dicom/, not in a patient folder, ignored: "
                  f"{', '.join(found.outside[:5])}")
        log.warning("%s", detail)
        warnings.append({"patient_folder": "", "series_uid": "", "kind": "files_outside_patient_folders", "detail": detail})
    series = pd.DataFrame(found.rows, columns=list(SERIES_COLUMNS))
    if len(series):
        series = series.sort_values(["patient_folder", "series_uid"], kind="stable").reset_index(drop=True)
    return ScanResult(series, pd.DataFrame(found.objects, columns=_OBJECT_COLUMNS),
                      pd.DataFrame(found.unreadable, columns=["path", "reason"]),
                      pd.DataFrame(found.skipped, columns=["path", "reason"]), pd.DataFrame(warnings, columns=_WARNING_COLUMNS))


@dataclass
class _Series:
    """One CT series being collected by :func:`scan_tree`: the header tags of its first file, its files."""

    patient: str
    uid: str
    derived: bool
    ds: Any
    files: list[str]

    def row(self) -> dict[str, Any]:
        ds = self.ds
        return {
            "folder": os.path.commonpath([str(Path(f).parent) for f in self.files]),
            "patient_folder": self.patient, "patient_id": _text(ds, "PatientID"),
            "study_uid": _text(ds, "StudyInstanceUID"), "series_uid": self.uid, "series_uid_derived": self.derived,
            "sop_class": _text(ds, "SOPClassUID"), "institution": _text(ds, "InstitutionName"),
            "manufacturer": _text(ds, "Manufacturer"), "model_name": _text(ds, "ManufacturerModelName"),
            "kvp": _number(ds, "KVP"), "slice_thickness_mm": _number(ds, "SliceThickness"),
            "convolution_kernel": _text(ds, "ConvolutionKernel"), "series_description": _text(ds, "SeriesDescription"),
            "study_date": _text(ds, "StudyDate"), "modality": _text(ds, "Modality"),
            "n_files": len(self.files), "files": tuple(self.files),
        }


@dataclass
class _Found:
    """What :func:`scan_tree` has seen so far, file by file."""

    groups: dict[tuple[str, str], _Series] = field(default_factory=dict)
    objects: list[dict[str, str]] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    tag_ids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    outside: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def finish(self) -> "_Found":
        """Series rows from the collected groups; headers dropped (what a worker sends back)."""
        self.rows.extend(g.row() for g in self.groups.values())
        self.groups = {}
        return self

    def merge(self, other: "_Found") -> None:
        """Append another patient folder's findings (patients are disjoint)."""
        for name in ("objects", "unreadable", "skipped", "warnings", "outside", "rows"):
            getattr(self, name).extend(getattr(other, name))
        for patient, ids in other.tag_ids.items():
            self.tag_ids[patient] |= ids

    def add(self, path: Path, patient: str, accept_derived: bool) -> None:
        """Sort one file: skipped, unreadable, a non-candidate object, or a slice of a series."""
        kind, ds, why = sniff(path)
        where = str(path.resolve())
        if kind != "dicom":
            (self.skipped if kind == "other" else self.unreadable).append({"path": where, "reason": why})
            return
        code, reason = image_candidate_check(ds, accept_derived)
        if reason:
            self.objects.append({"path": where, "patient_folder": patient, "sop_class": _text(ds, "SOPClassUID"),
                                 "series_uid": _text(ds, "SeriesInstanceUID"),
                                 "referenced_series_uid": referenced_series(ds), "reason": reason, "code": code,
                                 "modality": _text(ds, "Modality")})
            return
        uid = _text(ds, "SeriesInstanceUID")
        derived = not uid
        if derived:
            uid = _derived_series_id(path.parent, ds)
        self.tag_ids[patient].add(_text(ds, "PatientID"))
        if (patient, uid) in self.groups:
            self.groups[(patient, uid)].files.append(where)
            return
        self.groups[(patient, uid)] = _Series(patient, uid, derived, ds, [where])
        from_meta = getattr(ds, "amt_uids_from_meta", [])
        still_blank = [k for k in blank_uids(ds) if k != "SeriesInstanceUID"]
        if from_meta or still_blank:
            self.warnings.append({"patient_folder": patient, "series_uid": uid, "kind": "uids_blank",
                                  "detail": f"{path}: " + "; ".join(
                                      ([f"{', '.join(from_meta)} blank, taken from the file meta"] if from_meta else [])
                                      + ([f"{', '.join(still_blank)} blank (left blank: DICOM export of this series "
                                          "needs them restored)"] if still_blank else []))})
        if derived:
            self.warnings.append({"patient_folder": patient, "series_uid": uid, "kind": "series_uid_derived",
                                  "detail": f"{path.parent}: SeriesInstanceUID blank; series id {uid} derived from "
                                            "the folder, orientation and slice thickness"})


def _scan_patient(job: tuple[str, list[Path], bool]) -> _Found:
    """One patient folder's files through :meth:`_Found.add` (a worker of :func:`scan_tree`)."""
    patient, files, accept_derived = job
    found = _Found()
    for path in files:
        found.add(path, patient, accept_derived)
    return found.finish()


def _skipped_warnings(skipped: list[dict[str, str]], root: Path, patient_level: bool) -> list[dict[str, str]]:
    """One warning per folder that held non-DICOM files (also logged)."""
    by_folder: dict[str, list[str]] = defaultdict(list)
    for item in skipped:
        by_folder[str(Path(item["path"]).parent)].append(Path(item["path"]).name)
    out = []
    for folder, names in sorted(by_folder.items()):
        detail = f"{folder}: skipped {len(names)} non-DICOM file(s): {', '.join(names[:5])}" + (" ..." if len(names) > 5 else "")
        log.warning("%s", detail)
        out.append({"patient_folder": patient_folder_of(folder, root) if patient_level else "", "series_uid": "",
                    "kind": "non_dicom_files", "detail": detail})
    return out


def _patient_id_warnings(tag_ids: dict[str, set[str]]) -> list[dict[str, str]]:
    """A blank PatientID, or one that differs from the patient folder: warnings, never exclusions."""
    out = []
    for patient, ids in sorted(tag_ids.items()):
        if ids == {""}:
            out.append({"patient_folder": patient, "series_uid": "", "kind": "patient_id_blank",
                        "detail": f"PatientID blank in {patient}/; the patient is the folder name {patient!r}"})
        elif ids - {patient, ""}:
            others = ", ".join(sorted(repr(i) for i in ids - {patient, ""}))
            out.append({"patient_folder": patient, "series_uid": "", "kind": "patient_id_differs",
                        "detail": f"PatientID {others} in folder {patient}/; the patient is the folder name"})
    return out


def patient_folder_of(path: str | Path, root: Path) -> str:
    """The patient of ``path``: its first folder under ``root`` ("" when outside it)."""
    try:
        return Path(path).resolve().relative_to(root.resolve()).parts[0]
    except (ValueError, IndexError):
        return ""


@dataclass
class _Frame:
    """One 2D image of a series: a single-frame file, or one frame of a multi-frame file."""

    path: Path
    ds: Any
    frame: int | None
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    thickness: float
    slope: float
    intercept: float
    sop_uid: str

    @property
    def name(self) -> str:
        return self.path.name if self.frame is None else f"{self.path.name}[frame {self.frame + 1}]"


def _first(seq: Any) -> Any:
    return seq[0] if seq is not None and len(seq) else None


def _frames_of(path: Path, ds: Any) -> list[_Frame]:
    """Split a dataset into frames with their geometry; raises ValueError naming the missing tag."""
    def rescale(item: Any, fallback: Any) -> tuple[float, float]:
        slope, intercept = _number(item, "RescaleSlope"), _number(item, "RescaleIntercept")
        if not np.isfinite(slope) and fallback is not None:
            slope, intercept = _number(fallback, "RescaleSlope"), _number(fallback, "RescaleIntercept")
        return (1.0 if not np.isfinite(slope) else slope), (0.0 if not np.isfinite(intercept) else intercept)

    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    sop = _text(ds, "SOPInstanceUID")
    if "PerFrameFunctionalGroupsSequence" not in ds:
        missing = [t for t in _GEOMETRY_TAGS if t not in ds]
        if missing:
            raise ValueError(f"lacks {', '.join(missing)}")
        if n_frames != 1:
            raise ValueError(f"{n_frames} frames without per-frame functional groups (SOP class {_text(ds, 'SOPClassUID')})")
        slope, intercept = rescale(ds, None)
        return [_Frame(path, ds, None, np.array([float(v) for v in ds.ImagePositionPatient]),
                       np.array([float(v) for v in ds.ImageOrientationPatient]),
                       tuple(float(v) for v in ds.PixelSpacing), _number(ds, "SliceThickness"), slope, intercept, sop)]
    shared = _first(ds.get("SharedFunctionalGroupsSequence", None))
    frames = []
    for k, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        def group(name: str) -> Any:
            found = _first(item.get(name, None))
            if found is None and shared is not None:
                found = _first(shared.get(name, None))
            return found
        pos, orient, meas = group("PlanePositionSequence"), group("PlaneOrientationSequence"), group("PixelMeasuresSequence")
        if pos is None or orient is None or meas is None or "PixelSpacing" not in meas:
            missing = [n for n, v in (("PlanePositionSequence", pos), ("PlaneOrientationSequence", orient), ("PixelMeasuresSequence", meas)) if v is None]
            raise ValueError(f"frame {k + 1} lacks {', '.join(missing) or 'PixelSpacing'} in the functional groups")
        slope, intercept = rescale(group("PixelValueTransformationSequence") or {}, ds)
        frames.append(_Frame(path, ds, k, np.array([float(v) for v in pos.ImagePositionPatient]),
                             np.array([float(v) for v in orient.ImageOrientationPatient]),
                             tuple(float(v) for v in meas.PixelSpacing), _number(meas, "SliceThickness"),
                             slope, intercept, f"{sop}" if n_frames == 1 else f"{sop}#{k + 1}"))
    return frames


def _decode(path: Path, ds: Any) -> np.ndarray:
    """Decode the pixel data of a dataset to (frames, rows, cols) stored values; a ValueError says why
    not: a truncated file, or a transfer syntax no installed plugin decodes (naming the plugin)."""
    meta = getattr(ds, "file_meta", None)
    syntax = _text(meta, "TransferSyntaxUID") if meta is not None else ""
    try:
        from pydicom.uid import UID

        syntax_name = UID(syntax).name if syntax else "implicit VR little endian (no file meta)"
    except Exception:
        syntax_name = syntax
    compressed = syntax in _DECODERS
    if not compressed:
        expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
        got = len(ds.PixelData)
        if got < expected:
            raise ValueError(f"file {path.name} truncated: PixelData holds {got} of {expected} bytes")
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom raises several types for broken or undecodable pixel data
        text = f"{type(exc).__name__}: {str(exc)[:200]}"
        if compressed and ("plugin" in text.lower() or "missing dependencies" in text.lower() or "no pixel data handler" in text.lower()):
            raise ValueError(f"file {path.name}: transfer syntax {syntax_name} ({syntax}) cannot be decoded here; "
                             f"install {_DECODERS[syntax]} ({text})") from None
        raise ValueError(f"file {path.name}: pixel data of transfer syntax {syntax_name} could not be decoded, "
                         f"the file is truncated or corrupt ({text})") from None
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise ValueError(f"file {path.name}: {int(ds.SamplesPerPixel)} samples per pixel; a CT image has 1 (greyscale)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return arr.reshape(frames, int(ds.Rows), int(ds.Columns))


def _as_paths(source: str | Path | Sequence[str | Path]) -> tuple[str, list[Path]]:
    """(label for messages, files) of a series given as a folder or as a list of files."""
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise DicomSeriesError(folder, "series folder not found", "give the folder that holds the series' DICOM files",
                                   reason="not_found")
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        return str(folder), files
    files = [Path(p) for p in source]
    label = os.path.commonpath([str(p.parent) for p in files]) if files else "(no files)"
    return label, files


def _load_frames(files: list[Path], accept_derived: bool = True) -> tuple[list[_Frame], list[str]]:
    """Headers (with pixel data) of a series' files as frames; non-DICOM files are skipped silently
    (the scan warned), non-candidate objects (SEG, RTSTRUCT, localizers) are left out."""
    frames: list[_Frame] = []
    problems: list[str] = []
    for path in files:
        kind, ds, why = sniff(path, stop_before_pixels=False)
        if kind == "other":
            continue
        if kind == "unreadable":
            problems.append(f"unreadable file {path.name}: {why}")
            continue
        if image_candidate_reason(ds, accept_derived=accept_derived):
            continue
        if "PixelData" not in ds:
            problems.append(f"file {path.name} has no pixel data")
            continue
        try:
            frames.extend(_frames_of(path, ds))
        except ValueError as exc:
            problems.append(f"file {path.name} {exc}")
    return frames, problems


def _geometry_problems(frames: list[_Frame], tilt_policy: str = "resample") -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray, float]:
    """Consistency checks across slices; returns (problems as ``(reason, message)``, sort order, positions
    along the normal, tilt in degrees). A sheared stack (tilted gantry) is a problem only with
    ``tilt_policy="exclude"``."""
    problems: list[tuple[str, str]] = []
    if not frames:
        return problems, np.zeros(0, dtype=int), np.zeros(0), 0.0
    uids = {_text(f.ds, "SeriesInstanceUID") for f in frames}
    if len(uids) > 1:
        problems.append(("inconsistent_series", f"{len(uids)} different SeriesInstanceUIDs in one series"))
    orients = np.array([f.orientation for f in frames])
    if not np.allclose(orients, orients[0], atol=1e-4):
        problems.append(("inconsistent_series", "mixed ImageOrientationPatient"))
    pix = np.array([f.pixel_spacing for f in frames])
    if not np.allclose(pix, pix[0], atol=1e-4):
        problems.append(("inconsistent_series", f"mixed PixelSpacing {sorted({tuple(p) for p in pix.round(4).tolist()})}"))
    shapes = {(int(f.ds.Rows), int(f.ds.Columns)) for f in frames}
    if len(shapes) > 1:
        problems.append(("inconsistent_series", f"mixed image shape {sorted(shapes)}"))
    normal = np.cross(orients[0][:3], orients[0][3:])
    positions = np.array([f.position for f in frames])
    pos = positions @ normal
    order = np.argsort(pos, kind="stable")
    pos_sorted = pos[order]
    tilt = 0.0
    if len(pos_sorted) >= 2:
        steps = np.diff(pos_sorted)
        dup = steps < POSITION_ATOL_MM
        if dup.any():
            names = [frames[order[i + 1]].name for i in np.flatnonzero(dup)]
            problems.append(("inconsistent_series", f"duplicate slice position ({len(names)}x, e.g. {names[0]} at "
                                                    f"{pos_sorted[np.flatnonzero(dup)[0]]:.2f} mm)"))
        real = steps[~dup]
        if real.size:
            step = float(np.median(real))
            gaps = np.flatnonzero(real > 1.5 * step)
            if gaps.size:
                problems.append(("inconsistent_series", f"missing slice: gap of {real[gaps[0]]:.2f} mm where the step "
                                                        f"is {step:.2f} mm ({gaps.size} gap(s))"))
            elif np.abs(real - step).max() > max(SPACING_RTOL * step, POSITION_ATOL_MM):
                problems.append(("inconsistent_series",
                                 f"uneven slice spacing: steps from {real.min():.3f} to {real.max():.3f} mm"))
        along = positions[order[-1]] - positions[order[0]]
        normal_part = float(along @ normal)
        inplane = float(np.linalg.norm(along - normal_part * normal))
        tilt = float(np.degrees(np.arctan2(inplane, abs(normal_part)))) if normal_part else 90.0
        if tilt > TILT_TOLERANCE_DEG and tilt_policy == "exclude":
            gantry = _text(frames[0].ds, "GantryDetectorTilt") or "not recorded"
            problems.append(("tilted_gantry", f"tilted_gantry: slice positions are sheared {tilt:.2f} degrees from the slice "
                                              f"normal (GantryDetectorTilt {gantry}); tilt_policy='resample' resamples "
                                              "to an orthogonal grid"))
    return problems, order, pos_sorted, tilt


def check_series(source: str | Path | Sequence[str | Path], tilt_policy: str = "resample") -> list[str]:
    """List what prevents a series (a folder, or a list of files) from being one consistent CT volume;
    ``[]`` when it is fine.

    Paper section: Inclusion/exclusion (incomplete CT series). Finds files that claim to be DICOM and
    do not parse, truncated or undecodable pixel data, files without geometry tags, several series,
    mixed orientation, pixel spacing or image shape, duplicate slice positions, gaps (a step more than
    1.5x the median: missing slice), uneven steps (more than 1 % off the median) and, with
    ``tilt_policy="exclude"``, a tilted gantry. Non-DICOM files are ignored. Decodes every file. A
    missing folder raises :class:`DicomSeriesError`.
    """
    return [message for _, message in _series_problems(source, tilt_policy)[1]]


def _series_problems(source: str | Path | Sequence[str | Path], tilt_policy: str, accept_derived: bool = True) -> tuple[Any, ...]:
    """``(label, [(reason, message)], frames, pixels, order, pos_sorted, tilt)`` of a series: every
    problem with its :data:`SERIES_REASONS` code (file-level ones from reading and decoding, the rest
    from the geometry checks)."""
    label, files = _as_paths(source)
    frames, file_problems = _load_frames(files, accept_derived=accept_derived)
    decode_problems, pixels = _decode_all(frames)
    problems = [("unreadable_file", m) for m in file_problems + decode_problems]
    if not frames and not file_problems:
        problems.append(("inconsistent_series", "no CT image files"))
    geo, order, pos_sorted, tilt = _geometry_problems(frames, tilt_policy)
    problems += geo
    return label, problems, frames, pixels, order, pos_sorted, tilt


def _decode_all(frames: list[_Frame]) -> tuple[list[str], dict[Path, np.ndarray]]:
    """Decode each file of ``frames`` once: (problems, stored values by file path)."""
    problems: list[str] = []
    pixels: dict[Path, np.ndarray] = {}
    for f in frames:
        if f.path in pixels:
            continue
        try:
            pixels[f.path] = _decode(f.path, f.ds)
        except ValueError as exc:
            problems.append(str(exc))
            pixels[f.path] = np.zeros(0)
    return problems, pixels


def _slice_step_mm(frames: list[_Frame], pos_sorted: np.ndarray) -> float:
    if len(pos_sorted) >= 2:
        return float((pos_sorted[-1] - pos_sorted[0]) / (len(pos_sorted) - 1))
    ds = frames[0].ds
    for value in (_number(ds, "SpacingBetweenSlices"), frames[0].thickness):
        if np.isfinite(value) and value > 0:
            return value
    return 1.0


def slice_shifts_px(frames: list[_Frame], order: np.ndarray, row_dir: np.ndarray, col_dir: np.ndarray,
                    spacing_yx: tuple[float, float]) -> tuple[tuple[float, float], ...]:
    """In-plane offset (rows, columns) of each slice (z order) from the slice normal through the first
    slice's position: zero for an orthogonal stack, growing with z on a tilted gantry."""
    dy, dx = spacing_yx
    normal = np.cross(row_dir, col_dir)
    origin = frames[order[0]].position
    out = []
    for idx in order:
        d = frames[idx].position - origin
        e = d - (d @ normal) * normal
        out.append((float(e @ col_dir) / dy, float(e @ row_dir) / dx))
    return tuple(out)


def _unshear(volume: np.ndarray, shifts: Sequence[tuple[float, float]], fill_hu: float) -> np.ndarray:
    """Resample a sheared (tilted-gantry) stack onto the orthogonal grid of its first slice.

    Each slice is shifted in-plane by its offset from the slice normal through the first slice's
    position (``shifts``, :func:`slice_shifts_px`; linear interpolation, ``fill_hu`` outside the
    acquired field), as dcm2niix does.
    """
    from scipy import ndimage

    out = np.empty_like(volume)
    for z, shift in enumerate(shifts):
        out[z] = ndimage.shift(volume[z], shift, order=1, mode="constant", cval=fill_hu)
    return out


def slice_shift(geometry: dict[str, Any], k: int) -> tuple[float, float]:
    """(rows, columns) shift that took acquired slice ``k`` onto the grid of ``geometry`` (zero unless
    the series was a tilted gantry, or when the geometry does not record it)."""
    shifts = geometry.get("slice_shift_px")
    return (0.0, 0.0) if not shifts else (float(shifts[k][0]), float(shifts[k][1]))


def shift_mask_slice(slice_yx: np.ndarray, shift_yx: Sequence[float]) -> np.ndarray:
    """A 0/1 (y, x) slice moved in-plane by ``shift_yx`` pixels (rows, columns), as a bool array.

    How masks follow a tilted-gantry series between its acquired slices and the reader's orthogonal
    grid: ``geometry["slice_shift_px"][z]`` takes slice z of the files onto the grid, its negative back.
    Linear interpolation of the 0/1 values (the image's own resampling), then >= 0.5; a zero shift
    returns the slice unchanged, an integer shift moves it exactly; pixels shifted in from outside
    the slice are background.
    """
    on = np.asarray(slice_yx) > 0
    if not any(abs(float(v)) > 1e-9 for v in shift_yx):
        return on
    from scipy import ndimage

    moved = ndimage.shift(on.astype(np.float32), tuple(float(v) for v in shift_yx), order=1, mode="constant", cval=0.0)
    return moved >= 0.5 - 1e-6


def read_series(source: str | Path | Sequence[str | Path], tilt_policy: str = "resample",
                accept_derived: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a CT series (a folder, or a list of its files) as HU ``float32`` (z, y, x) plus its geometry.

    Paper section: Data collection. Single-frame CT and multi-frame Enhanced CT are read (frames placed
    by their functional groups); every common transfer syntax decodes through pydicom's plugins.
    Slices are sorted along the slice normal; HU = stored value x RescaleSlope + RescaleIntercept (per
    frame; 1 and 0 when absent). A tilted gantry (positions sheared off the normal) is resampled onto
    an orthogonal grid (``tilt_policy="resample"``, linear, the series' minimum outside the field;
    recorded as ``tilt_deg``) or refused (``"exclude"``).

    ``geometry`` holds ``spacing`` (z, y, x) mm, ``affine`` (4x4 voxel (x, y, z) -> RAS, for
    :func:`amtlib.io.save_nifti`), ``origin`` (LPS mm of voxel 0), ``direction`` (row-major 3x3,
    SimpleITK convention), ``shape`` (z, y, x), ``series_uid``, ``frame_of_reference_uid``,
    ``sop_uids`` (SOPInstanceUID of each slice, z = 0 first; what DICOM SEG and RTSTRUCT reference;
    ``uid#k`` for frame k of a multi-frame file), ``files`` (z = 0 first), ``tilt_deg`` (shear of the
    positions, resampled), ``slice_shift_px`` (per slice in z order, the (rows, columns) shift that
    took the acquired slice onto the grid; zero unless tilted; :func:`shift_mask_slice` moves masks
    between the two) and ``gantry_tilt_tag_deg`` (GantryDetectorTilt as recorded, NaN when absent;
    the geometry follows the positions, not this tag). Raises :class:`DicomSeriesError` naming the
    series and every problem :func:`check_series` would report.
    """
    if tilt_policy not in TILT_POLICIES:
        raise AmtError(f"tilt_policy {tilt_policy!r}", "unknown tilt policy", f"use one of {', '.join(TILT_POLICIES)}")
    label, problems, frames, pixels, order, pos_sorted, tilt = _series_problems(source, tilt_policy, accept_derived)
    if problems:
        found = {code for code, _ in problems}
        raise DicomSeriesError(label, "; ".join(m for _, m in problems), "exclude this series or repair it",
                               reason=next(code for code in SERIES_REASONS if code in found))
    return _on_grid(_hu_volume(frames, pixels, order), frames, order, pos_sorted, tilt)


def _hu_volume(frames: Sequence[Any], pixels: dict[Any, np.ndarray], order: Sequence[int]) -> np.ndarray:
    """The slices in ``order`` as HU float32 (z, y, x): stored value x RescaleSlope + RescaleIntercept."""
    slices = []
    for idx in order:
        f = frames[idx]
        stored = pixels[f.path][0 if f.frame is None else f.frame]
        slices.append(stored.astype(np.float32) * np.float32(f.slope) + np.float32(f.intercept))
    return np.stack(slices, axis=0)


def _on_grid(volume: np.ndarray, frames: Sequence[Any], order: Sequence[int], pos_sorted: np.ndarray,
             tilt: float) -> tuple[np.ndarray, dict[str, Any]]:
    """The volume on an orthogonal grid (a tilted series' slices shifted back, see :func:`_unshear`) and
    the geometry :func:`read_series` returns, from the first slice's orientation and position."""
    first = frames[order[0]]
    row_dir, col_dir = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row_dir, col_dir)
    dy, dx = first.pixel_spacing
    dz = _slice_step_mm(frames, pos_sorted)
    tilted = tilt > TILT_TOLERANCE_DEG
    shifts = slice_shifts_px(frames, order, row_dir, col_dir, (dy, dx)) if tilted else ((0.0, 0.0),) * len(order)
    if tilted:
        volume = _unshear(volume, shifts, float(volume.min()))
    origin = first.position
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
        "series_uid": _text(first.ds, "SeriesInstanceUID"),
        "frame_of_reference_uid": _text(first.ds, "FrameOfReferenceUID"),
        "sop_uids": tuple(frames[i].sop_uid for i in order),
        "files": tuple(str(frames[i].path) for i in order),
        "tilt_deg": round(tilt, 4) if tilted else 0.0,
        "slice_shift_px": shifts,
        "gantry_tilt_tag_deg": _number(first.ds, "GantryDetectorTilt"),
    }
    return volume, geometry


def series_to_nifti(source: str | Path | Sequence[str | Path], out_path: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Convert a DICOM series (folder or files) to a NIfTI file in HU (float32, atomic write); return
    the geometry. Raises :class:`DicomSeriesError` for an inconsistent series (see :func:`read_series`).
    """
    volume, geometry = read_series(source, **kwargs)
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
    ds = _ct_series_header(fields, study_uid, series_uid, deterministic_uid(seed, "frame", series_uid), (dz, dy, dx), (ny, nx))
    stored = np.clip(np.rint(volume.astype(np.float64)) + 1024.0, -32768, 32767).astype(np.int16)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # the series is written into a hidden sibling folder and renamed into place in one step
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    writer = _SliceEncoder(ds, ("SOPInstanceUID", "InstanceNumber", "ImagePositionPatient", "SliceLocation", "PixelData"))
    paths: list[Path] = []
    for k in range(nz):
        sop_uid = deterministic_uid(seed, "sop", series_uid, k)
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        z = _ds_str(origin[2] + k * dz)
        body = writer.encode({
            "SOPInstanceUID": sop_uid, "InstanceNumber": k + 1,
            "ImagePositionPatient": [_ds_str(origin[0]), _ds_str(origin[1]), z], "SliceLocation": z,
            "PixelData": np.ascontiguousarray(stored[k]).astype("<i2").tobytes(),
        })
        name = f"IM{k + 1:05d}.dcm"
        (staging / name).write_bytes(_file_meta_bytes(ds.file_meta) + body)
        paths.append(out_dir / name)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)
    return paths


def _ct_series_header(fields: dict[str, Any], study_uid: str, series_uid: str, frame_uid: str,
                      spacing_zyx: tuple[float, float, float], rows_columns: tuple[int, int]) -> Any:
    """The elements every slice of :func:`write_ct_series` shares (with its file meta): identifiers,
    the Type 2 elements present and empty, ``fields`` by keyword, geometry and the int16 pixel format."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    dz, dy, dx = spacing_zyx
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
    ds.Rows, ds.Columns = rows_columns
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
    return ds


class _SliceEncoder:
    """Explicit VR little-endian encoding of a dataset whose ``dynamic`` elements change per file.

    The static elements are encoded once (pydicom's own element writer, in tag order); each
    :meth:`encode` encodes only the dynamic values and splices them in, so the bytes equal those
    ``Dataset.save_as`` writes for the same dataset (tested) at a fraction of the cost (issue 13:
    re-encoding every header element of every slice was a quarter of the demo's synthesis).
    """

    def __init__(self, ds: Any, dynamic: Sequence[str]) -> None:
        from pydicom.datadict import tag_for_keyword

        self._template = ds
        self._tags = {kw: int(tag_for_keyword(kw)) for kw in dynamic}
        for kw in dynamic:  # placeholders, so the template holds every element in its final order
            if kw not in ds:
                setattr(ds, kw, b"" if kw == "PixelData" else "0")
        self._chunks: list[bytes | str] = []
        static = bytearray()
        dynamic_tags = {t: kw for kw, t in self._tags.items()}
        for elem in ds:
            kw = dynamic_tags.get(int(elem.tag))
            if kw is None:
                static += self._encode(elem, ds)
                continue
            self._chunks.append(bytes(static))
            self._chunks.append(kw)
            static = bytearray()
        self._chunks.append(bytes(static))

    @staticmethod
    def _encode(elem: Any, ds: Any) -> bytes:
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import correct_ambiguous_vr_element, write_data_element

        elem = correct_ambiguous_vr_element(elem, ds, True)  # e.g. PixelData OB or OW, as save_as does
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_data_element(fp, elem)
        return fp.getvalue()

    def encode(self, values: dict[str, Any]) -> bytes:
        """The dataset's bytes (no preamble or file meta) with ``values`` for the dynamic elements."""
        parts = []
        for chunk in self._chunks:
            if isinstance(chunk, bytes):
                parts.append(chunk)
            else:
                setattr(self._template, chunk, values[chunk])
                parts.append(self._encode(self._template[self._tags[chunk]], self._template))
        return b"".join(parts)


def _file_meta_bytes(file_meta: Any) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group, as ``save_as`` writes them."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, file_meta, enforce_standard=True)
    return fp.getvalue()


def _ds_str(value: float) -> str:
    """Decimal String for a coordinate: at most 16 characters, round-trips to 1e-6 mm."""
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
