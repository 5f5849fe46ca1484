"""Predicted tumour masks out as DICOM: SEG and RT Structure Set referencing the source CT series.

Paper section: Discussion (hand-off of the model's masks to PACS and treatment planning as DICOM RT
Structure Sets). ``amt export`` is :func:`cli_main`; notebook 09 calls :func:`export_run`.

- **SEG** (highdicom): BINARY, one segment "Mediastinal tumour" coded as SCT 49755003 Morphologically
  abnormal structure / SCT 108369006 Neoplasm, anatomic region SCT 72410000 Mediastinum; algorithm
  identification: name, family DCM 123110 Artificial Intelligence, version = amtlib's version, source
  ``amtlib``, parameter ``model_sha256`` (SHA-256 of the model file, when given). Frames reference the
  source slices (SOPInstanceUID; for a multi-frame Enhanced CT source, the instance and its
  ReferencedFrameNumber) and carry their positions; empty slices are omitted (all slices are kept
  when the mask is empty).
- **RTSTRUCT** (pydicom; contours from scikit-image ``find_contours``): one ROI, one CLOSED_PLANAR
  contour per connected outline per slice, each point in LPS mm on the slice plane and referencing its
  slice (or its frame of a multi-frame source). Outlines run along the 0.5 level between tumour and
  background pixel centres, so rasterising them with the pixel-centre rule of
  :func:`amtlib.dicom.annotations.read_rtstruct` gives the mask back (holes are inner contours, filled
  even-odd). Why not rt-utils: it is lightly maintained, pins OpenCV for contouring and has no test
  of the world geometry it writes; building the few RTSTRUCT modules here with pydicom is short, and
  the tests validate them with dciodvfy and read them back.
  Written in Implicit VR Little Endian, where ContourData has no 64 KiB element limit.

Both objects copy the Patient and General Study modules of the source series (as DICOM requires) and
nothing else of it; their own series, equipment ("amtlib") and UIDs are new. Another model's masks
(``amt export --pred DIR --algorithm NAME``) are written under that model's name and version
(:class:`Algorithm`). UIDs are deterministic: :func:`amtlib.dicom.dicomio.deterministic_uid` of the run,
the case id, the mask's content (:func:`mask_digest`) and the object kind, so re-exporting the same
masks gives the same UIDs and a changed mask new ones (a PACS keeps the first object under a UID);
with ``SOURCE_DATE_EPOCH`` set (:func:`creation_time`) the dates are fixed too and a re-export is
byte-identical. Files are written atomically. A tilted-gantry series,
which the reader resamples onto an orthogonal grid, is exported onto its acquired slices: SEG frames
are the grid slices moved back by their in-plane shift; RTSTRUCT contours are world coordinates, and
each grid slice lies in the plane of the acquired slice it references.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import errno
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from amtlib import __version__
from amtlib.dicom.annotations import RTSTRUCT_STORAGE, voxel_to_lps
from amtlib.dicom.dicomio import deterministic_uid, fill_uids_from_file_meta, shift_mask_slice, slice_shift
from amtlib.errors import AmtError, DomainError
from amtlib.io import atomic_path, load_nifti, output_lock, refuse_link, sha256_file, write_csv

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("seg", "rtstruct")
SEGMENT_LABEL = "Mediastinal tumour"
ALGORITHM_NAME = "amtlib 3D U-Net"
#: Patient and General Study (+ Patient Study) module keywords copied from the source series.
PATIENT_STUDY_KEYWORDS: tuple[str, ...] = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "OtherPatientIDsSequence",
    "PatientIdentityRemoved", "DeidentificationMethod", "StudyInstanceUID", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription", "PatientAge", "PatientSize",
    "PatientWeight",
)
#: Of those, the Type 2 ones (present, possibly empty).
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")
_EXPORT_COLUMNS = ("case_id", "series_uid", "status", "detail", "source_folder", "n_voxels", "seg_path", "rtstruct_path")
#: ``status`` of a row of ``export.csv``: the case's files were written, or its ``detail`` says why not.
STATUSES: tuple[str, ...] = ("written", "failed")
#: Files an export writes into a case folder: a folder holding nothing else is an earlier export's.
CASE_FILES: frozenset[str] = frozenset({"seg.dcm", "rtstruct.dcm"})
#: errno values that stop a whole export (no later case can be written either): disk full, quota, read-only.
_FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class ExportError(DomainError):
    """A prediction that cannot be exported: ``ExportError(file, problem, remedy)``, the file being the
    case, file, folder or option at fault."""


@dataclass(frozen=True)
class Algorithm:
    """Who made the masks, as the exported objects state it. The default is this package's model
    (``model_sha256``: SHA-256 of its file); another model's masks carry that model's name and version
    and no SHA-256 of ours. Text goes into LO elements: at most 64 characters, no backslash."""

    name: str = ALGORITHM_NAME
    version: str = __version__
    model_sha256: str = ""

    @property
    def ours(self) -> bool:
        return self.name == ALGORITHM_NAME

    def check(self) -> "Algorithm":
        for what, text in (("algorithm name", self.name), ("algorithm version", self.version)):
            if not text.strip() or len(text) > 64 or "\\" in text:
                raise ExportError(f"{what} {text!r}", "not a DICOM LO value",
                                  "give 1-64 characters without a backslash")
        return self


# --------------------------------------------------------------------------------------------------
# source series


def read_source_headers(geometry: dict[str, Any]) -> list[Any]:
    """Headers (no pixel data) of the series' slices in z order, from ``geometry['files']``.

    A multi-frame (Enhanced CT) source gives its one header for each of its frames (read once; the
    frame of each slice is in :func:`frame_numbers`). Refuses a series whose files changed since it
    was read.
    """
    import pydicom

    headers, read = [], {}
    for path, uid in zip(geometry["files"], geometry["sop_uids"]):
        sop = uid.partition("#")[0]
        if path not in read:
            read[path] = _as_the_standard_reads_it(pydicom.dcmread(str(path), stop_before_pixels=True))
            _check_source_uids(path, read[path])
        ds = read[path]
        if str(ds.SOPInstanceUID) != sop:
            raise ExportError(path, f"SOPInstanceUID {ds.SOPInstanceUID} is not the slice read before ({sop})",
                              "the source series changed since the cohort was built: build the cohort again")
        headers.append(ds)
    return headers


#: UIDs of a source slice that the exported objects copy or reference (Type 1 in both).
SOURCE_UIDS: tuple[str, ...] = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
                                "FrameOfReferenceUID")


def _check_source_uids(path: str | Path, ds: Any) -> None:
    """Refuse a source whose UIDs cannot be referenced: absent, empty or not a valid UID (digits and dots,
    at most 64 characters). Exported objects would otherwise carry them with only a pydicom warning."""
    from pydicom.uid import UID

    for keyword in SOURCE_UIDS:
        value = str(ds.get(keyword, "") or "")
        if not value:
            raise ExportError(path, f"the source slice has no {keyword}; a SEG or RTSTRUCT must reference it, so "
                              "the series cannot be exported", "restore the tag from the original export")
        if not UID(value).is_valid:
            raise ExportError(path, f"{keyword} {value[:70]!r} is not a valid DICOM UID (digits and dots, at most "
                              "64 characters)", "the series cannot be referenced: restore the original UIDs")


def _as_the_standard_reads_it(ds: Any) -> Any:
    """A source header (in memory; the file is never changed) with two common real-world lapses read as
    DICOM defines them: a SpecificCharacterSet present but empty (common in GE data) is the default
    repertoire, so it is dropped; an absent Type 2 patient/study element (AccessionNumber in
    de-identified series) is present and empty; a SOP class or instance UID an anonymiser blanked is the
    file meta's (:func:`amtlib.dicom.dicomio.fill_uids_from_file_meta`, as the series reader reads it)."""
    fill_uids_from_file_meta(ds)
    if "SpecificCharacterSet" in ds:
        values = ds.SpecificCharacterSet
        if not any(str(v).strip() for v in ([values] if isinstance(values, str) else values)):
            del ds.SpecificCharacterSet
    for keyword in _TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def frame_numbers(geometry: dict[str, Any]) -> list[int | None]:
    """Frame number (1-based) of each slice in a multi-frame source, None for single-frame files
    (the series reader names frame f of a multi-frame instance ``uid#f``)."""
    return [int(uid.partition("#")[2]) if "#" in uid else None for uid in geometry["sop_uids"]]


def _check_mask(mask: np.ndarray, geometry: dict[str, Any], what: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != tuple(geometry["shape"]):
        raise ExportError(what, f"mask shape (z, y, x) {mask.shape} != source series {tuple(geometry['shape'])}",
                          "export masks predicted on this series' grid")
    values = np.unique(mask)
    if np.setdiff1d(values, [0, 1]).size:
        raise ExportError(what, f"mask values {values[:6].tolist()} are not 0/1", "threshold the prediction first")
    return mask.astype(bool)


def _copy_patient_study(target: Any, source: Any) -> None:
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in source:
            target[keyword] = source[keyword]
        elif keyword in _TYPE2:
            setattr(target, keyword, "")


# --------------------------------------------------------------------------------------------------
# SEG


def creation_time() -> _dt.datetime:
    """When an exported object is created: now, or the UTC time given by the ``SOURCE_DATE_EPOCH``
    environment variable (seconds since 1970, the reproducible-builds convention) so that exporting the
    same run twice gives byte-identical files. A value that is not an integer is an error naming it."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not epoch:
        return _dt.datetime.now()
    try:
        return _dt.datetime.fromtimestamp(int(epoch), tz=_dt.timezone.utc).replace(tzinfo=None)
    except (ValueError, OverflowError, OSError):
        raise ExportError(f"SOURCE_DATE_EPOCH={epoch!r}", "not a whole number of seconds since 1970", "unset it or fix it") from None


def _stamp_seg(seg: Any, when: _dt.datetime) -> Any:
    """Set the SEG's creation, content and contribution date/times (highdicom stamps the wall clock)."""
    date, time_ = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    seg.InstanceCreationDate, seg.InstanceCreationTime = date, time_
    seg.ContentDate, seg.ContentTime = date, time_
    for item in seg.get("ContributingEquipmentSequence", None) or []:
        if "ContributionDateTime" in item:
            item.ContributionDateTime = date + time_
    return seg


def mask_to_seg(mask: np.ndarray, sources: Sequence[Any], geometry: dict[str, Any], uid_seed: str,
                model_sha256: str = "", series_number: int = 901, algorithm: Algorithm | None = None) -> Any:
    """A BINARY DICOM SEG (highdicom ``Segmentation``) of a (z, y, x) 0/1 ``mask`` on the source series.

    ``sources``: slice headers in z order (:func:`read_source_headers`). UIDs derive from
    ``uid_seed``. ``algorithm``: who made the mask (default: this package's model with
    ``model_sha256``). On a tilted-gantry series (read resampled) each frame is the grid slice moved
    back onto its acquired slice (:func:`amtlib.dicom.dicomio.shift_mask_slice`; exact for whole-pixel
    shifts, else up to the outline pixels). Raises :class:`ExportError` for a mask off the series grid
    or not 0/1.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    on = _check_mask(mask, geometry, f"case {uid_seed}")
    algo = (algorithm or Algorithm(model_sha256=model_sha256)).check()
    identification = hd.AlgorithmIdentificationSequence(
        name=algo.name, family=codes.cid7162.ArtificialIntelligence, version=algo.version,
        source="amtlib" if algo.ours else None,
        parameters={"model_sha256": algo.model_sha256} if algo.model_sha256 else None)
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=identification, tracking_uid=deterministic_uid(uid_seed, "seg-tracking"),
        tracking_id="tumour", anatomic_regions=[codes.SCT.Mediastinum])
    frames = frame_numbers(geometry)
    # frames lie on the acquired slices: a tilted gantry's grid slices go back by their in-plane shift
    on = np.stack([shift_mask_slice(on[z], tuple(-v for v in slice_shift(geometry, z))) for z in range(on.shape[0])])
    source_images, pixels = list(sources), on.astype(np.uint8)
    if any(f is not None for f in frames):
        # a multi-frame source: one source image, the segmentation's frames in its frame order
        instances = {str(ds.SOPInstanceUID) for ds in sources}
        if len(instances) != 1 or None in frames:
            raise ExportError(f"case {uid_seed}", f"the series spans {len(instances)} instance(s), some multi-frame",
                              "DICOM SEG export needs single-frame slices or one multi-frame instance")
        source_images = [sources[0]]
        pixels = np.zeros((int(sources[0].NumberOfFrames), *on.shape[1:]), np.uint8)
        for z, f in enumerate(frames):
            pixels[f - 1] = on[z]
    seg = hd.seg.Segmentation(
        source_images=source_images, pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[description],
        series_instance_uid=deterministic_uid(uid_seed, "seg-series"), series_number=series_number,
        sop_instance_uid=deterministic_uid(uid_seed, "seg-instance"), instance_number=1,
        manufacturer="amtlib", manufacturer_model_name=algo.name, software_versions=__version__,
        device_serial_number=(algo.model_sha256 or "none")[:16], series_description=_series_description(algo, "SEG"),
        content_label="TUMOUR", omit_empty_frames=bool(on.any()))
    # highdicom draws the dimension organisation UID at random: derive it like every other UID
    dim_uid = deterministic_uid(uid_seed, "seg-dimension-organization")
    for elem in seg.iterall():
        if elem.keyword == "DimensionOrganizationUID":
            elem.value = dim_uid
    return _stamp_seg(_tidy_pixel_measures(seg), creation_time())


def _tidy_pixel_measures(seg: Any) -> Any:
    """SliceThickness and SpacingBetweenSlices of the SEG's Pixel Measures rounded to 1e-6 mm and written in
    the shortest Decimal String: highdicom derives the spacing from float positions, which gave values like
    ``10.0000000000000`` (or, in other versions, 17 characters, over the 16 that DS allows)."""
    from pydicom.valuerep import DSfloat

    for elem in seg.iterall():
        if elem.keyword in ("SpacingBetweenSlices", "SliceThickness") and elem.value not in (None, ""):
            elem.value = DSfloat(f"{round(float(elem.value), 6):.6f}".rstrip("0").rstrip(".") or "0", auto_format=True)
    return seg


# --------------------------------------------------------------------------------------------------
# RTSTRUCT


def mask_contours(slice_yx: np.ndarray) -> list[np.ndarray]:
    """Closed outlines of a 2D 0/1 slice as (n, 2) arrays of (x = column, y = row) pixel coordinates.

    scikit-image ``find_contours`` at level 0.5 on the slice padded with background (so outlines at the
    border close); the repeated closing point and collinear points are dropped.
    """
    from skimage.measure import find_contours

    out = []
    for c in find_contours(np.pad(slice_yx.astype(np.float32), 1), 0.5):
        pts = c[:-1, ::-1] - 1.0  # (row, col) -> (x, y), unpad; find_contours repeats the first point
        prev, nxt = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
        cross = (pts[:, 0] - prev[:, 0]) * (nxt[:, 1] - pts[:, 1]) - (pts[:, 1] - prev[:, 1]) * (nxt[:, 0] - pts[:, 0])
        keep = np.abs(cross) > 1e-9
        if keep.sum() >= 3:
            out.append(pts[keep])
    return out


def _ds(values: np.ndarray) -> list[str]:
    """Decimal Strings of coordinates in mm, 1e-4 mm precision (well under 16 characters)."""
    return [f"{v:.4f}".rstrip("0").rstrip(".") if abs(v) >= 5e-5 else "0" for v in values]


def _series_description(algo: Algorithm, kind: str) -> str:
    """``AMT prediction (SEG)`` for this package's model, else the other model's name (LO: 64 characters)."""
    suffix = f" prediction ({kind})"
    return ("AMT" if algo.ours else algo.name[: 64 - len(suffix)]) + suffix


def mask_to_rtstruct(mask: np.ndarray, sources: Sequence[Any], geometry: dict[str, Any], uid_seed: str,
                     roi_name: str = SEGMENT_LABEL, model_sha256: str = "", series_number: int = 902,
                     algorithm: Algorithm | None = None) -> Any:
    """An RT Structure Set (pydicom ``FileDataset``) with one ROI outlining ``mask`` on the source series.

    Contours per slice from :func:`mask_contours`, in LPS mm through the series' voxel -> LPS matrix
    (so oblique and flipped grids are exact). An empty mask gives the ROI without contours.
    """
    on = _check_mask(mask, geometry, f"case {uid_seed}")
    algo = (algorithm or Algorithm(model_sha256=model_sha256)).check()
    ds = _rtstruct_header(sources[0], uid_seed, algo, series_number)
    ds.ReferencedFrameOfReferenceSequence = _referenced_frame(sources, geometry)
    _add_roi(ds, roi_name, algo, _slice_contours(on, geometry, sources))
    return ds


def _rtstruct_header(first: Any, uid_seed: str, algo: Algorithm, series_number: int) -> Any:
    """The structure set's file meta, identifiers, patient and study (copied from the source's ``first``
    slice), series and structure-set labels, in the source's frame of reference."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ImplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    sop_uid = deterministic_uid(uid_seed, "rtstruct-instance")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_STORAGE, sop_uid
    _copy_patient_study(ds, first)
    now = creation_time()
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = deterministic_uid(uid_seed, "rtstruct-series")
    ds.SeriesNumber, ds.InstanceNumber = series_number, 1
    ds.SeriesDescription = _series_description(algo, "RTSTRUCT")
    ds.OperatorsName = ""
    ds.Manufacturer, ds.ManufacturerModelName = "amtlib", algo.name
    ds.SoftwareVersions = __version__
    ds.StructureSetLabel = "AMT prediction" if algo.ours else "prediction"
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.FrameOfReferenceUID = str(first.FrameOfReferenceUID)  # the structures lie in the source's frame of reference
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    return ds


def _referenced_frame(sources: Sequence[Any], geometry: dict[str, Any]) -> Any:
    """Referenced Frame of Reference Sequence: frame -> study -> series -> every source image (and its
    frame in a multi-frame source)."""
    import pydicom
    from pydicom.sequence import Sequence as Seq

    first = sources[0]
    images = [_image_ref(s, f) for s, f in zip(sources, frame_numbers(geometry))]
    series_ref = pydicom.Dataset()
    series_ref.SeriesInstanceUID = str(first.SeriesInstanceUID)
    series_ref.ContourImageSequence = Seq(images)
    study_ref = pydicom.Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired; the standard's value)
    study_ref.ReferencedSOPInstanceUID = str(first.StudyInstanceUID)
    study_ref.RTReferencedSeriesSequence = Seq([series_ref])
    frame_ref = pydicom.Dataset()
    frame_ref.FrameOfReferenceUID = str(first.FrameOfReferenceUID)
    frame_ref.RTReferencedStudySequence = Seq([study_ref])
    return Seq([frame_ref])


def _add_roi(ds: Any, roi_name: str, algo: Algorithm, contours: list[Any]) -> None:
    """The one ROI (number 1, automatic, naming the algorithm and model), its contours (none for an
    empty mask) and its observation, added to ``ds``."""
    import pydicom
    from pydicom.sequence import Sequence as Seq

    roi = pydicom.Dataset()
    roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = 1, ds.FrameOfReferenceUID, roi_name
    roi.ROIGenerationAlgorithm = "AUTOMATIC"
    roi.ROIGenerationDescription = ((f"amtlib {__version__}" if algo.ours else f"{algo.name} {algo.version}"[:48] + " via amtlib")
                                    + (f" model sha256 {algo.model_sha256[:16]}" if algo.model_sha256 else ""))
    ds.StructureSetROISequence = Seq([roi])
    contour_roi = pydicom.Dataset()
    contour_roi.ReferencedROINumber = 1
    contour_roi.ROIDisplayColor = [0, 114, 178]
    if contours:
        contour_roi.ContourSequence = Seq(contours)
    ds.ROIContourSequence = Seq([contour_roi])
    obs = pydicom.Dataset()
    obs.ObservationNumber, obs.ReferencedROINumber = 1, 1
    obs.RTROIInterpretedType = ""
    obs.ROIInterpreter = ""
    ds.RTROIObservationsSequence = Seq([obs])


def _image_ref(source: Any, frame: int | None = None) -> Any:
    """A Contour Image Sequence item: the slice's instance, and its frame in a multi-frame source."""
    import pydicom

    ref = pydicom.Dataset()
    ref.ReferencedSOPClassUID = str(source.SOPClassUID)
    ref.ReferencedSOPInstanceUID = str(source.SOPInstanceUID)
    if frame is not None:
        ref.ReferencedFrameNumber = int(frame)
    return ref


def _slice_contours(on: np.ndarray, geometry: dict[str, Any], sources: Sequence[Any]) -> list[Any]:
    import pydicom
    from pydicom.sequence import Sequence as Seq

    to_lps = voxel_to_lps(geometry)
    frames = frame_numbers(geometry)
    out = []
    for k in np.flatnonzero(on.any(axis=(1, 2))):
        for pts in mask_contours(on[k]):
            vox = np.c_[pts, np.full(len(pts), float(k)), np.ones(len(pts))]
            lps = (vox @ to_lps.T)[:, :3]
            item = pydicom.Dataset()
            item.ContourImageSequence = Seq([_image_ref(sources[k], frames[k])])
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(lps)
            item.ContourData = _ds(lps.ravel())
            out.append(item)
    return out


# --------------------------------------------------------------------------------------------------
# files and runs


def write_dataset(ds: Any, path: str | Path) -> Path:
    """Save a pydicom/highdicom dataset as a DICOM file atomically."""
    with atomic_path(path) as tmp:
        ds.save_as(str(tmp), enforce_file_format=True)
    return Path(path)


def export_case(mask: np.ndarray, source: str | Path | Sequence[str | Path], out_dir: str | Path, uid_seed: str,
                formats: Sequence[str] = FORMATS, model_sha256: str = "",
                affine: np.ndarray | None = None, atol_mm: float = 0.01, algorithm: Algorithm | None = None) -> dict[str, Path]:
    """Write ``seg.dcm`` and/or ``rtstruct.dcm`` of one (z, y, x) mask into ``out_dir``.

    UIDs derive from ``uid_seed``: give a seed that changes when the mask does (:func:`export_run`
    adds :func:`mask_digest`), since a PACS keeps the first object it receives under a UID.
    ``algorithm``: who made the mask (default this package's model, :class:`Algorithm`).

    ``source``: the CT series the mask was predicted on, a folder or its files (read with
    :func:`amtlib.dicom.dicomio.read_series`; a tilted gantry resampled as the cohort reads it). ``affine``: the mask's NIfTI
    voxel -> RAS matrix, checked against the series' within ``atol_mm``. Returns ``{format: path}``.
    """
    from amtlib.dicom.dicomio import DicomSeriesError, read_series

    bad = sorted(set(formats) - set(FORMATS))
    if bad or not formats:
        raise ExportError(f"formats {list(formats)}", "not export formats", f"choose from {', '.join(FORMATS)}")
    try:
        _, geometry = read_series(source, tilt_policy="resample")
    except DicomSeriesError as exc:
        raise ExportError(exc.file, f"source series unusable for export: {exc.problem}", exc.remedy) from None
    where = source if isinstance(source, (str, Path)) else Path(list(source)[0]).parent
    if affine is not None and not np.allclose(affine, geometry["affine"], atol=atol_mm):
        raise ExportError(f"case {uid_seed}", f"mask affine differs from source series {where} by up to "
                          f"{np.abs(np.asarray(affine) - geometry['affine']).max():.3g} mm", "export predictions of this series")
    return export_series(mask, geometry, out_dir, uid_seed, formats, model_sha256, algorithm)


def export_series(mask: np.ndarray, geometry: dict[str, Any], out_dir: str | Path, uid_seed: str,
                  formats: Sequence[str] = FORMATS, model_sha256: str = "", algorithm: Algorithm | None = None) -> dict[str, Path]:
    """As :func:`export_case`, on a series already read (``geometry`` from :func:`amtlib.dicom.dicomio.read_series`,
    whose files must still be in place): writes ``seg.dcm`` and/or ``rtstruct.dcm`` into ``out_dir``."""
    bad = sorted(set(formats) - set(FORMATS))
    if bad or not formats:
        raise ExportError(f"formats {list(formats)}", "not export formats", f"choose from {', '.join(FORMATS)}")
    sources = read_source_headers(geometry)
    out_dir = Path(out_dir)
    written = {}
    if "seg" in formats:
        written["seg"] = write_dataset(mask_to_seg(mask, sources, geometry, uid_seed, model_sha256, algorithm=algorithm),
                                       out_dir / "seg.dcm")
    if "rtstruct" in formats:
        written["rtstruct"] = write_dataset(mask_to_rtstruct(mask, sources, geometry, uid_seed, model_sha256=model_sha256,
                                                             algorithm=algorithm), out_dir / "rtstruct.dcm")
    return written


def find_series_files(dicom_root: str | Path, series_uids: Sequence[str]) -> dict[str, list[str]]:
    """SeriesInstanceUID -> its files under ``dicom_root`` (headers only), for the UIDs asked."""
    from amtlib.dicom.dicomio import scan_tree

    series = scan_tree(dicom_root).series
    rows = series[series["series_uid"].isin(set(series_uids))]
    return {str(r["series_uid"]): list(r["files"]) for _, r in rows.iterrows()}


def case_sources(P: Any, manifest: pd.DataFrame, raw_dir: str | Path | None) -> dict[str, list[str]]:
    """case id -> source files of its series: ``01_cohort/sources.json`` (written by the cohort build),
    else a header scan of the raw ``dicom/`` tree by SeriesInstanceUID."""
    import json

    if P.sources_json.is_file():
        known = json.loads(P.sources_json.read_text())
        if all(c in known for c in manifest["case_id"]):
            # slices in z order; a multi-frame file stands once for each of its frames: each file once
            return {c: list(dict.fromkeys(known[c]["files"])) for c in manifest["case_id"]}
    root = Path(raw_dir) if raw_dir else _run_raw_dir(P.root)
    if not len(manifest):
        return {}
    by_uid = find_series_files(root / "dicom", list(manifest["series_uid"])) if (root / "dicom").is_dir() else {}
    return {c: by_uid[u] for c, u in zip(manifest["case_id"], manifest["series_uid"]) if u in by_uid}


def _run_raw_dir(run_dir: Path) -> Path:
    import yaml

    cfg_path = run_dir / "config.yaml"
    raw = ""
    if cfg_path.is_file():
        raw = (yaml.safe_load(cfg_path.read_text()) or {}).get("raw_dir", "") or ""
    return Path(raw) if raw else run_dir / "00_data" / "raw"


def export_run(run_dir: str | Path, out_dir: str | Path | None = None, split: str | None = "external_test",
               formats: Sequence[str] = FORMATS, raw_dir: str | Path | None = None, workers: int = 1,
               pred_dir: str | Path | None = None, algorithm: Algorithm | None = None) -> pd.DataFrame:
    """Export the predictions of a run folder as DICOM; return one row per case (``export.csv`` too).

    Reads ``01_cohort/manifest.csv`` (case, ``series_uid``), ``02_split/split.csv`` when ``split`` is
    given (``None``: every predicted case), and ``03_train/predictions/<case_id>.nii.gz``, or another
    model's ``<case_id>.nii.gz`` in ``pred_dir`` (then ``algorithm`` must name that model). Source files
    come from ``01_cohort/sources.json``, else are found by SeriesInstanceUID under ``raw_dir``/dicom
    (default: the run's ``raw_dir`` setting, else ``00_data/raw``). Writes
    ``out_dir/<case_id>/seg.dcm`` and/or ``rtstruct.dcm`` (default ``out_dir``: ``RUN/09_export``) and
    ``out_dir/export.csv``. UIDs derive from the run folder's name, the case id and the mask's content
    (:func:`mask_digest`): the same mask gives the same files, another mask new UIDs.

    Each case on its own: one that cannot be written (no prediction, no source series, a source the
    objects cannot reference) is a row with ``status`` ``failed`` and its ``detail``, and the others are
    written (:func:`failed_cases` counts them). A full or read-only disk stops the export. The folder is
    locked while it is written (a second export into it is refused); each case folder is replaced whole;
    what an interrupted export left (hidden partial folders) is removed first, and case folders of an
    earlier export into the same folder that this one does not write are removed after. Raises
    :class:`ExportError` for a run that cannot be exported at all. ``workers`` > 1 writes cases in that
    many processes (the same files).
    """
    from amtlib.paths import RunPaths

    P = RunPaths(run_dir)
    out = refuse_link(Path(out_dir) if out_dir else P.export_dir, "export folder")
    manifest, pred_root = _cases_to_export(P, split, pred_dir, algorithm)
    creation_time()  # a bad SOURCE_DATE_EPOCH stops the export here, not once per case
    sources = case_sources(P, manifest, raw_dir)
    if algorithm is None:
        algorithm = Algorithm(model_sha256=sha256_file(P.model) if P.model.is_file() else "")
    remedy = "run step 03_train (prediction) first" if pred_dir is None else "give a mask for every case of the split"
    jobs = [(case["case_id"], case["series_uid"], pred_root / f"{case['case_id']}.nii.gz", sources.get(case["case_id"]),
             out, f"{P.root.name}:{case['case_id']}", tuple(formats), algorithm, remedy)
            for _, case in manifest.sort_values("case_id").iterrows()]
    with output_lock(out, "amt export"):
        _remove_partial_folders(out)
        if workers > 1 and len(jobs) > 1:
            from amtlib.workers import process_pool

            with process_pool(workers) as pool:
                rows = list(pool.map(_export_job, jobs))
        else:
            rows = [_export_job(job) for job in jobs]
        _remove_earlier_cases(out, keep={job[0] for job in jobs})
        table = pd.DataFrame(rows, columns=list(_EXPORT_COLUMNS))
        write_csv(out / "export.csv", table)
    return table


def failed_cases(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of an :func:`export_run` table whose case was not written."""
    return table[table["status"] != "written"]


def _cases_to_export(P: Any, split: str | None, pred_dir: str | Path | None,
                     algorithm: Algorithm | None) -> tuple[pd.DataFrame, Path]:
    """The manifest rows to export and the folder of their masks; :class:`ExportError` when the run
    cannot be exported at all (no prediction folder, manifest or split; unsafe case ids; NIfTI input)."""
    from amtlib.paths import is_safe_id

    if pred_dir is not None and (algorithm is None or algorithm.ours):
        raise ExportError(pred_dir, "masks of another model need that model's name in the exported objects",
                          "give it (amt export --algorithm NAME [--algorithm-version V])")
    if algorithm is not None:
        algorithm.check()
    pred_root = Path(pred_dir) if pred_dir is not None else P.predictions_dir
    if not pred_root.is_dir():
        raise ExportError(pred_root, "prediction folder not found", "give the folder of <case_id>.nii.gz masks")
    if not P.manifest.is_file():
        raise ExportError(P.manifest, "not found", "run step 01_cohort first")
    manifest = pd.read_csv(P.manifest, dtype=str, keep_default_na=False)
    if split:
        if not P.split_csv.is_file():
            raise ExportError(P.split_csv, "not found", "run step 02_split first or export without --split")
        splits = pd.read_csv(P.split_csv, dtype=str, keep_default_na=False)
        if split not in set(splits["split"]):
            raise ExportError(None, f"split {split!r} is not in {P.split_csv}",
                              f"choose one of {', '.join(sorted(set(splits['split'])))} or all")
        chosen = set(splits.loc[splits["split"] == split, "case_id"])
        manifest = manifest[manifest["case_id"].isin(chosen)]
    else:
        manifest = manifest[[(pred_root / f"{c}.nii.gz").is_file() for c in manifest["case_id"]]]
    if not len(manifest) and pred_dir is not None:
        some = sorted(f.name for f in pred_root.iterdir())[:3]
        raise ExportError(pred_root, f"no mask named after a case of the cohort{' in split ' + split if split else ''} "
                          f"(found {', '.join(some) or 'no file'})", f"name each mask <case_id>.nii.gz as in {P.manifest}")
    if not len(manifest):
        raise ExportError(pred_root, f"no prediction to export (split {split or 'all'})", "run step 03_train first")
    if (manifest["series_uid"] == "").any():
        bad = manifest.loc[manifest["series_uid"] == "", "case_id"].tolist()
        raise ExportError(P.manifest, f"cases {bad[:5]} have no series_uid (NIfTI input)",
                          "DICOM export needs the source DICOM series: build the cohort from DICOM")
    unsafe = [c for c in manifest["case_id"] if not is_safe_id(c)]
    if unsafe:  # a case id names a folder under --out: one from an untrusted manifest must not leave it
        raise ExportError(P.manifest, f"case id {unsafe[0][:80]!r} is not a safe folder name (letters, digits, '.', "
                          f"'_', '-'; at most 128)", f"{len(unsafe)} such case(s) - fix the manifest")
    return manifest, pred_root


#: Hidden folders a case is written into before it replaces its folder (and the folder it replaces).
_PARTIAL, _REPLACED = ".partial-", ".replaced-"


def _remove_partial_folders(out: Path) -> None:
    """Remove what an interrupted export left in ``out``: hidden partial or replaced case folders and hidden
    temporary files (a PACS upload of the folder must never pick them up)."""
    for path in out.glob(".*"):
        if path.is_dir() and not path.is_symlink() and (_PARTIAL in path.name or _REPLACED in path.name):
            shutil.rmtree(path)
        elif path.is_file() and path.name.startswith((".export.", ".seg.", ".rtstruct.")):
            path.unlink()
    for case in out.iterdir():
        if case.is_dir() and not case.is_symlink() and not case.name.startswith("."):
            for tmp in case.glob(".*.dcm"):  # an older export's atomic temporary, e.g. .seg.k2j4.dcm
                if tmp.name.startswith((".seg.", ".rtstruct.")):
                    tmp.unlink()


def _remove_earlier_cases(out: Path, keep: set[str]) -> None:
    """Remove case folders of an earlier export that this one did not write: folders holding nothing but
    export files (:data:`CASE_FILES`). Anything else is left, with a warning."""
    for case in sorted(out.iterdir()):
        if not case.is_dir() or case.is_symlink() or case.name.startswith(".") or case.name in keep:
            continue
        names = {p.name for p in case.iterdir()}
        if names and names <= CASE_FILES:
            shutil.rmtree(case)
        else:
            log.warning("%s: not a case of this export and not only export files; left as it is", case)


def _write_case_folder(out: Path, cid: str, write: Any) -> dict[str, Path]:
    """Call ``write(folder)`` on a hidden partial folder, then put it in place of ``out/cid`` (whole or not
    at all: files of a format not written this time do not survive). Returns the paths in their place."""
    import tempfile

    target = refuse_link(out / cid, f"case {cid}'s export folder")
    partial = Path(tempfile.mkdtemp(prefix=f".{cid}{_PARTIAL}", dir=out))
    try:
        written = write(partial)
        if target.exists():
            replaced = Path(tempfile.mkdtemp(prefix=f".{cid}{_REPLACED}", dir=out))
            os.replace(target, replaced / cid)
            os.replace(partial, target)
            shutil.rmtree(replaced)
        else:
            os.replace(partial, target)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    return {kind: target / path.name for kind, path in written.items()}


def mask_digest(mask: np.ndarray, affine: np.ndarray) -> str:
    """16 hex digits of SHA-256 over a mask's shape, 0/1 voxels and affine: part of the UID seed, so a
    re-export of the same mask gives the same UIDs and a changed mask (a retrained model) new ones."""
    import hashlib

    h = hashlib.sha256()
    h.update(np.asarray(mask.shape, dtype=np.int64).tobytes())
    h.update(np.packbits(np.asarray(mask) > 0).tobytes())
    h.update(np.round(np.asarray(affine, dtype=np.float64), 4).tobytes())
    return h.hexdigest()[:16]


def _export_job(job: tuple) -> dict[str, Any]:
    """One case of :func:`export_run`: read the prediction, write its folder, return its row (``failed``
    with the reason when the case cannot be written; a full or read-only disk stops the whole export)."""
    from amtlib import errors

    cid, uid, pred_path, source_files, out, uid_seed, formats, algorithm, remedy = job
    row = {"case_id": cid, "series_uid": uid, "status": "failed", "detail": "", "source_folder": "", "n_voxels": "",
           "seg_path": "", "rtstruct_path": ""}
    try:
        if not pred_path.is_file():
            raise ExportError(None, f"prediction {pred_path} not found", remedy)
        if not source_files:
            raise ExportError(None, f"source series {uid} not found under the raw DICOM folder",
                              "set raw_dir to the cohort the run was built from")
        row["source_folder"] = os.path.commonpath([str(Path(f).parent) for f in source_files])
        mask, _, affine = load_nifti(pred_path, dtype=np.uint8)
        written = _write_case_folder(out, cid, lambda folder: export_case(
            mask, source_files, folder, f"{uid_seed}:{mask_digest(mask, affine)}", formats, algorithm.model_sha256,
            affine, algorithm=algorithm))
    except OSError as exc:
        if exc.errno in _FATAL_ERRNOS:
            raise AmtError(out / cid, f"cannot write ({exc.strerror})",
                           "free disk space or choose a writable folder (--out), then run again") from None
        if errors.DEBUG:
            raise
        row["detail"] = f"{exc.filename or pred_path}: {exc.strerror or exc}"
        return row
    except Exception as exc:  # one case's bad source or mask is that case's row, never the batch's end
        if errors.DEBUG:
            raise
        row["detail"] = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        return row
    return {**row, "status": "written", "n_voxels": int(mask.sum()),
            "seg_path": str(written["seg"].relative_to(out)) if "seg" in written else "",
            "rtstruct_path": str(written["rtstruct"].relative_to(out)) if "rtstruct" in written else ""}


def verify_export(run_dir: str | Path, out_dir: str | Path | None = None, n_cases: int = 1) -> pd.DataFrame:
    """Read the first ``n_cases`` exported cases back onto their source series and compare with the prediction.

    One row per (case, format): ``dice`` (NaN when both masks are empty) and ``identical`` (voxel for
    voxel). Uses :func:`amtlib.dicom.annotations.read_seg` / :func:`~amtlib.dicom.annotations.read_rtstruct`.
    """
    from amtlib.dicom.annotations import read_rtstruct, read_seg
    from amtlib.dicom.dicomio import read_series
    from amtlib.paths import RunPaths

    P = RunPaths(run_dir)
    out = Path(out_dir) if out_dir else P.export_dir
    table = pd.read_csv(out / "export.csv", dtype=str, keep_default_na=False)
    table = table[table["status"] == "written"].head(n_cases)
    sources = case_sources(P, table, None)
    rows = []
    for _, case in table.iterrows():
        pred, _, _ = load_nifti(P.predictions_dir / f"{case['case_id']}.nii.gz", dtype=np.uint8)
        _, geometry = read_series(sources[case["case_id"]])
        for kind, reader in (("seg", read_seg), ("rtstruct", read_rtstruct)):
            if case[f"{kind}_path"]:
                back = reader(out / case[f"{kind}_path"], geometry)
                rows.append({"case_id": case["case_id"], "format": kind, "dice": _readback_dice(back, pred),
                             "identical": bool(np.array_equal(back, pred > 0))})
    return pd.DataFrame(rows, columns=["case_id", "format", "dice", "identical"])


def _readback_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two 0/1 masks, NaN when both are empty: the read-back check only (the data layer does not
    import the evaluation's metrics; :func:`amtlib.evaluation.metrics.voxel_metrics` scores the paper)."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = int(a.sum()) + int(b.sum())
    return float("nan") if total == 0 else 2.0 * int((a & b).sum()) / total


def parse_formats(value: str | Sequence[str] | None) -> list[str]:
    """``"both"``/``"seg"``/``"rtstruct"``/a list/empty -> list of formats (empty: export off)."""
    if value is None or value == "" or value == []:
        return []
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        for part in str(item).replace(",", " ").split():
            out += list(FORMATS) if part == "both" else [part]
    bad = [f for f in out if f not in FORMATS]
    if bad:
        raise ExportError(f"export format(s) {bad}", "not a format written here", "choose seg, rtstruct or both")
    return list(dict.fromkeys(out))


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``amt export --run DIR [--split S] --format seg|rtstruct|both --out DIR``."""
    from amtlib.clihelp import HelpFormatter, examples

    p = argparse.ArgumentParser(prog="amt export", description="Export a run's predicted masks as DICOM SEG and/or RTSTRUCT "
                                "referencing the source CT series (out/<case_id>/seg.dcm, rtstruct.dcm, export.csv).",
                                formatter_class=HelpFormatter,
                                epilog=examples("amt export --run runs/demo --split external_test --format both --out exported/",
                                                "amt export --run runs/demo --pred their_masks/ --algorithm \"Vendor AI\" --out exported/"))
    p.add_argument("--run", required=True, help="run folder (with 01_cohort, 02_split, 03_train/predictions)")
    p.add_argument("--split", default="external_test", help="split to export (default external_test; 'all' for every predicted case)")
    p.add_argument("--format", default="both", choices=["seg", "rtstruct", "both"],
                   help="which DICOM objects to write per case: seg, rtstruct or both")
    p.add_argument("--out", default=None, help="output folder (default RUN/09_export)")
    p.add_argument("--raw-dir", default=None, help="raw cohort folder holding dicom/ (default: the run's raw_dir)")
    p.add_argument("--workers", type=int, default=1, help="cases written in parallel processes (default 1)")
    p.add_argument("--pred", default=None, help="another model's masks <case_id>.nii.gz on the cohort's grids "
                                                "(default RUN/03_train/predictions); needs --algorithm")
    p.add_argument("--algorithm", default=None, help="with --pred: the name of the model that made them (written into the objects)")
    p.add_argument("--algorithm-version", default="unspecified", help="with --pred: that model's version")
    args = p.parse_args(argv)
    if args.algorithm is not None and args.pred is None:
        raise ExportError("--algorithm", "names another model's masks", "give them with --pred DIR")
    algorithm = Algorithm(args.algorithm, args.algorithm_version) if args.algorithm is not None else None
    table = export_run(args.run, args.out, None if args.split == "all" else args.split,
                       parse_formats(args.format), args.raw_dir, args.workers, args.pred, algorithm)
    out = Path(args.out) if args.out else Path(args.run) / "09_export"
    failed = failed_cases(table)
    print(f"exported {len(table) - len(failed)} of {len(table)} case(s) to {out}")
    for row in failed.itertuples():
        print(f"amt export: case {row.case_id}: {row.detail}", file=sys.stderr)
    if len(failed):
        print(f"amt export: {len(failed)} case(s) failed (status and reason in {out / 'export.csv'})", file=sys.stderr)
        return 1
    return 0
