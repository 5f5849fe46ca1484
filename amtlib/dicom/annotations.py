"""Tumour annotations from clinical tools in: DICOM SEG and RT Structure Sets onto a CT series' grid.

Paper section: Data collection (reference masks drawn by radiologists; hospitals keep them as DICOM SEG
or RTSTRUCT). Pure readers: each takes the file and the ``geometry`` of the CT series it must annotate
(the dict of :func:`amtlib.dicom.dicomio.read_series`) and returns a ``uint8`` (z, y, x) 0/1 mask on that
grid. Nothing is written and the input file is never modified.

- :func:`annotation_kind` tells ``"seg"``, ``"rtstruct"`` or ``None`` by content (SOP Class UID), not
  by file name.
- :func:`read_seg` (highdicom): BINARY segments as stored, FRACTIONAL ones thresholded at 0.5 of the
  maximum fractional value (fraction >= 0.5 is tumour), LABELMAP ones (Label Map Segmentation Storage,
  DICOM 2024) by their pixel value, which is the segment number. The segment is chosen by label (case-
  insensitive) or number; ``None`` takes the only one. A frame (or label-map value) naming a segment
  the SEG does not define, and a FRACTIONAL SEG without a positive MaximumFractionalValue, are refused. A frame is placed on the slice whose
  SOPInstanceUID it references, else on the slice at its ImagePositionPatient (which must coincide with
  a slice origin within ``atol_mm`` and have the series' orientation, pixel spacing and size). On a
  series resampled from a tilted gantry the frames lie on the acquired (sheared) slices: each slice
  of the mask is moved onto the reader's grid as the image was (:func:`amtlib.dicom.dicomio.shift_mask_slice`).
- :func:`read_rtstruct` (pydicom): the contours of one ROI (by name, case-insensitive) are rasterised in
  world coordinates: every contour point (LPS mm) goes through the inverse of the series' voxel -> LPS
  matrix, each contour lands on the slice it lies on (within ``slice_tol`` of a slice), and the
  contours of a slice are filled together by the even-odd rule, so an inner contour is a hole (and an
  island in a hole is tumour again). Boundary convention: a pixel is tumour when its centre is inside
  the polygon; a centre exactly on an edge counts as inside on edges bounding the polygon towards lower
  column (left) and lower row (top) indices and outside on the others (the half-open scanline rule,
  so two polygons sharing an edge never both claim its pixels); contour points are snapped to 1e-4
  pixel first, so a point written on a pixel centre counts as on it. Contours of POINT/OPEN types and
  closed ones of fewer than 3 points enclose nothing: they are left out with a note the caller keeps
  (the cohort's ``warnings.csv``).

:func:`read_annotation` reads either kind (by content); :func:`referenced_series_uid` names the series
an object annotates, for matching files to series before reading any pixels.

Errors are :class:`AnnotationError` naming the file, what it references and what to do: not DICOM or
corrupt, not a SEG/RTSTRUCT, referencing another series or frame of reference, no matching segment or
ROI, frames or contours off the series grid.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from pydicom.multival import MultiValue

from amtlib.dicom.dicomio import shift_mask_slice, slice_shift
from amtlib.errors import DomainError

log = logging.getLogger(__name__)

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
#: DICOM 2024's label-map SEG: one frame per slice, pixel values are segment numbers.
LABELMAP_SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
#: Annotation kind of each SOP class read here (:data:`amtlib.dicom.dicomio.ANNOTATION_CLASSES` names them).
KIND_OF_CLASS: dict[str, str] = {SEG_STORAGE: "seg", LABELMAP_SEG_STORAGE: "seg", RTSTRUCT_STORAGE: "rtstruct"}
#: Where a user names the segment or ROI: both options, since the same reader serves both commands.
_CHOOSE = "(mask_label in the cohort step, --segment in amt evaluate)"
#: Remedies shared by several AnnotationErrors.
_OTHER_GRID = "the SEG is on another grid: export it from this series"
_REEXPORT_SEG = "re-export the SEG from its tool"
#: Fractional segments: a pixel is tumour when its fraction is at least this.
FRACTIONAL_THRESHOLD = 0.5


#: Reason codes of :class:`AnnotationError` (the cohort maps them to its exclusion reasons; messages may change).
OFF_GRID = "off_grid"
INVALID = "invalid"


class AnnotationError(DomainError):
    """A SEG/RTSTRUCT that cannot give a mask for the series: ``AnnotationError(file, problem, remedy, reason=...)``.

    ``reason``: :data:`OFF_GRID` when the object lies on another grid (frames or contours off the
    series' slices, another size, orientation or spacing), else :data:`INVALID`.
    """

    DEFAULT_REASON = INVALID


def _note(notes: list[tuple[str, str]] | None, kind: str, detail: str) -> None:
    """A reading decision the caller must see (``warnings.csv``): logged, and kept in ``notes`` when given."""
    log.warning("%s", detail)
    if notes is not None:
        notes.append((kind, detail))


# --------------------------------------------------------------------------------------------------
# geometry


def voxel_to_lps(geometry: dict[str, Any]) -> np.ndarray:
    """4x4 matrix mapping a voxel index (x = column, y = row, z = slice, 1) to LPS mm.

    Built from ``origin``, ``direction`` (columns = x, y, z axes in LPS) and ``spacing`` (z, y, x) of a
    :func:`amtlib.dicom.dicomio.read_series` geometry.
    """
    direction = np.asarray(geometry["direction"], dtype=float).reshape(3, 3)
    dz, dy, dx = (float(s) for s in geometry["spacing"])
    m = np.eye(4)
    m[:3, :3] = direction * np.array([dx, dy, dz])
    m[:3, 3] = np.asarray(geometry["origin"], dtype=float)
    return m


def lps_to_voxel(geometry: dict[str, Any], points_lps: np.ndarray) -> np.ndarray:
    """(n, 3) LPS mm -> (n, 3) continuous voxel indices (x, y, z)."""
    pts = np.asarray(points_lps, dtype=float).reshape(-1, 3)
    inv = np.linalg.inv(voxel_to_lps(geometry))
    return pts @ inv[:3, :3].T + inv[:3, 3]


# --------------------------------------------------------------------------------------------------
# reading headers


def _dcmread(path: Path, **kw: Any) -> Any:
    import pydicom

    if not path.is_file():
        raise AnnotationError(path, "file not found", "check the path of the SEG or RTSTRUCT file")
    try:
        return pydicom.dcmread(str(path), **kw)
    except Exception as exc:  # pydicom raises several types for non-DICOM or truncated input
        raise AnnotationError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})",
                              "re-export the annotation from its tool") from None


def annotation_kind(path: str | Path) -> str | None:
    """``"seg"``, ``"rtstruct"`` or ``None`` (not DICOM, unreadable, or another object), by SOP Class UID."""
    return annotation_header(path)[0]


def annotation_header(path: str | Path) -> tuple[str | None, str | None]:
    """``(kind, referenced SeriesInstanceUID)`` of a file from one header read: the kind as in
    :func:`annotation_kind` (None for anything else, then no UID either), the UID as in
    :func:`referenced_series_uid` (None when the object names no series)."""
    try:
        ds = _dcmread(Path(path), stop_before_pixels=True)
    except AnnotationError:
        return None, None
    kind = KIND_OF_CLASS.get(str(ds.get("SOPClassUID", "")))
    uids = _referenced_series(ds) if kind else []
    return kind, (uids[0] if uids else None)


def _referenced_series(ds: Any) -> list[str]:
    uids = [str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", [])]  # SEG
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):  # RTSTRUCT
        for study in frame.get("RTReferencedStudySequence", []):
            uids += [str(s.SeriesInstanceUID) for s in study.get("RTReferencedSeriesSequence", [])]
    return list(dict.fromkeys(uids))


def referenced_series_uid(path: str | Path) -> str | None:
    """SeriesInstanceUID of the image series a SEG or RTSTRUCT annotates (the first when several).

    ``None`` when the object names no series (a SEG placed by position only). Raises
    :class:`AnnotationError` for a file that is not a readable SEG/RTSTRUCT.
    """
    path = Path(path)
    ds = _dcmread(path, stop_before_pixels=True)
    if str(ds.get("SOPClassUID", "")) not in KIND_OF_CLASS:
        raise AnnotationError(path, f"not a DICOM SEG or RTSTRUCT (SOP Class {ds.get('SOPClassUID', 'missing')})",
                              "give the segmentation or structure set file")
    uids = _referenced_series(ds)
    return uids[0] if uids else None


def annotations_of_series(paths: Iterable[str | Path], series_uid: str) -> list[Path]:
    """The SEG/RTSTRUCT files among ``paths`` that reference ``series_uid``, by content (any file name;
    other files, unreadable ones and annotations of other series are skipped). Headers only."""
    found = []
    for path in paths:
        path = Path(path)
        if annotation_kind(path) and referenced_series_uid(path) == series_uid:
            found.append(path)
    return sorted(found)


def _check_reference(path: Path, ds: Any, geometry: dict[str, Any]) -> None:
    """Refuse an annotation of another series (or, when it names none, another frame of reference)."""
    uids = _referenced_series(ds)
    series = str(geometry.get("series_uid", ""))
    if uids and series and series not in uids:
        raise AnnotationError(path, f"references series {', '.join(uids)}, not the CT series {series}",
                              "put it beside the series it annotates or export it from that series")
    frame_uids = {str(ds.get("FrameOfReferenceUID", ""))} | {
        str(f.get("FrameOfReferenceUID", "")) for f in ds.get("ReferencedFrameOfReferenceSequence", [])}
    frame_uids.discard("")
    expected = str(geometry.get("frame_of_reference_uid", ""))
    if not uids and frame_uids and expected and expected not in frame_uids:
        raise AnnotationError(path, f"frame of reference {', '.join(sorted(frame_uids))} differs from the CT "
                              f"series' {expected}", "it annotates another acquisition: give the annotation of this series")


# --------------------------------------------------------------------------------------------------
# DICOM SEG


def _choose_segment(path: Path, seg: Any, segment: str | int | None) -> int:
    # segment 0 of a label map is its background (highdicom writes it): never a candidate
    items = [(int(s.SegmentNumber), str(s.get("SegmentLabel", ""))) for s in seg.SegmentSequence if int(s.SegmentNumber) != 0]
    listing = ", ".join(f"{n}: {label!r}" for n, label in items)
    if segment is None:
        if len(items) != 1:
            raise AnnotationError(path, f"{len(items)} segments ({listing})", f"name one {_CHOOSE}")
        return items[0][0]
    if isinstance(segment, (int, np.integer)) and not isinstance(segment, bool):
        hits = [n for n, _ in items if n == int(segment)]
    else:
        hits = [n for n, label in items if label.strip().lower() == str(segment).strip().lower()]
    if len(hits) != 1:
        what = "no" if not hits else f"{len(hits)}"
        raise AnnotationError(path, f"{what} segment matching {segment!r} (segments {listing})",
                              f"name one of these labels or numbers {_CHOOSE}")
    return hits[0]


def _frame_slice(path: Path, item: Any, shared: Any, index: int, geometry: dict[str, Any],
                 slice_of_uid: dict[str, int], atol_mm: float) -> int:
    """Slice index (z) of one SEG frame: by referenced SOPInstanceUID, else by its position."""
    for deriv in item.get("DerivationImageSequence", []):
        for src in deriv.get("SourceImageSequence", []):
            uid = str(src.get("ReferencedSOPInstanceUID", ""))
            frames = src.get("ReferencedFrameNumber", None)
            keys = [uid]
            if frames is not None:  # a frame of a multi-frame source: the series reader names it uid#frame
                keys.insert(0, f"{uid}#{int(frames[0] if isinstance(frames, (list, MultiValue)) else frames)}")
            for key in keys:
                if key in slice_of_uid:
                    return slice_of_uid[key]
    plane = item.get("PlanePositionSequence") or (shared.get("PlanePositionSequence") if shared else None)
    if not plane:
        raise AnnotationError(path, f"frame {index + 1} references no slice of the series and has no position",
                              "export the SEG from this series", reason=OFF_GRID)
    pos = np.array([float(v) for v in plane[0].ImagePositionPatient])
    x, y, z = lps_to_voxel(geometry, pos)[0]
    k = int(round(z))
    # an acquired slice's first pixel sits at its in-plane shift on the grid (zero unless tilted)
    sy, sx = slice_shift(geometry, k) if 0 <= k < geometry["shape"][0] else (0.0, 0.0)
    off_mm = np.abs(voxel_to_lps(geometry)[:3, :3] @ np.array([x - sx, y - sy, z - k]))
    if not 0 <= k < geometry["shape"][0] or off_mm.max() > atol_mm:
        raise AnnotationError(path, f"frame {index + 1} at {pos.round(3).tolist()} mm (LPS) lies on no slice of the "
                              f"series (nearest slice {k}, {off_mm.max():.3g} mm off)", _OTHER_GRID, reason=OFF_GRID)
    return k


def _check_seg_grid(path: Path, seg: Any, geometry: dict[str, Any], atol_mm: float) -> None:
    nz, ny, nx = geometry["shape"]
    if (int(seg.Rows), int(seg.Columns)) != (ny, nx):
        raise AnnotationError(path, f"frames are {seg.Rows}x{seg.Columns} pixels, the series' slices {ny}x{nx}",
                              _OTHER_GRID, reason=OFF_GRID)
    shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else None
    direction = np.asarray(geometry["direction"], dtype=float).reshape(3, 3)
    orient = shared.get("PlaneOrientationSequence") if shared else None
    if orient:
        iop = np.array([float(v) for v in orient[0].ImageOrientationPatient])
        if not np.allclose(iop, np.r_[direction[:, 0], direction[:, 1]], atol=1e-4):
            raise AnnotationError(path, f"orientation {iop.round(4).tolist()} differs from the series'",
                                  _OTHER_GRID, reason=OFF_GRID)
    measures = shared.get("PixelMeasuresSequence") if shared else None
    if measures and "PixelSpacing" in measures[0]:
        spacing = np.array([float(v) for v in measures[0].PixelSpacing])
        if not np.allclose(spacing, geometry["spacing"][1:], atol=atol_mm):
            raise AnnotationError(path, f"pixel spacing {spacing.tolist()} mm differs from the series' "
                                  f"{list(geometry['spacing'][1:])}", _OTHER_GRID, reason=OFF_GRID)


def _frame_segments(path: Path, seg: Any, frames: np.ndarray, kind: str, shared: Any) -> list[int] | None:
    """The segment number of each frame (None for a label map, whose frames hold every segment as pixel
    values), after refusing frames or label-map values naming a segment the SEG does not define: they
    would be dropped silently (a reference losing part of its tumour, a prediction scoring Dice 0)."""
    defined = {int(s.SegmentNumber) for s in seg.SegmentSequence}
    if kind == "LABELMAP":
        values = {int(v) for v in np.unique(frames)} - defined - {0}
        if values:
            raise AnnotationError(path, f"pixel values {sorted(values)[:5]} name no segment of this label map "
                                  f"(segments {sorted(defined)})", _REEXPORT_SEG)
        return None
    numbers: list[int] = []
    undefined: dict[int, list[int]] = {}
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ident = item.get("SegmentIdentificationSequence") or (shared.get("SegmentIdentificationSequence") if shared else None)
        if not ident:
            raise AnnotationError(path, f"frame {i + 1} names no segment (no SegmentIdentificationSequence)",
                                  _REEXPORT_SEG)
        number = int(ident[0].ReferencedSegmentNumber)
        numbers.append(number)
        if number not in defined:
            undefined.setdefault(number, []).append(i + 1)
    if undefined:
        number, where = next(iter(undefined.items()))
        raise AnnotationError(path, f"{sum(map(len, undefined.values()))} frame(s) (e.g. frame {where[0]}) reference "
                              f"segment {number}, which the SEG does not define (segments {sorted(defined)})",
                              _REEXPORT_SEG)
    return numbers


def _max_fractional_value(path: Path, seg: Any) -> float:
    """MaximumFractionalValue of a FRACTIONAL SEG (Type 1: the value meaning a fraction of 1); refused when
    absent or not positive, since any guess would move the 0.5 threshold."""
    value = seg.get("MaximumFractionalValue", None)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number > 0:
        raise AnnotationError(path, f"FRACTIONAL SEG with MaximumFractionalValue {value!r} (must be a positive "
                              "number, the stored value of a fraction of 1)", _REEXPORT_SEG)
    return number


def read_seg(path: str | Path, geometry: dict[str, Any], segment: str | int | None = None,
             atol_mm: float = 0.01) -> np.ndarray:
    """One segment of a DICOM SEG as a ``uint8`` (z, y, x) 0/1 mask on the series grid ``geometry``.

    Paper section: Data collection (reference masks). ``segment``: label (case-insensitive), number,
    or ``None`` for the only segment. Frames are placed by referenced SOPInstanceUID, else by
    ImagePositionPatient (``atol_mm`` off a slice origin at most). Slices without a frame are empty;
    two frames on one slice are combined (union). FRACTIONAL: fraction >= 0.5 is tumour. An empty
    segment gives an all-zero mask (the caller decides whether that is acceptable). Raises
    :class:`AnnotationError` (module docstring).
    """
    import highdicom as hd

    path = Path(path)
    head = _dcmread(path, stop_before_pixels=True)
    if KIND_OF_CLASS.get(str(head.get("SOPClassUID", ""))) != "seg":
        raise AnnotationError(path, f"not a DICOM SEG (SOP Class {head.get('SOPClassUID', 'missing')})",
                              "give the segmentation file")
    _check_reference(path, head, geometry)
    try:
        seg = hd.seg.segread(str(path))
        frames = np.asarray(seg.pixel_array)
    except Exception as exc:  # highdicom/pydicom raise several types for a broken SEG
        raise AnnotationError(path, f"corrupt DICOM SEG ({type(exc).__name__}: {exc})", "re-export it from its tool") from None
    number = _choose_segment(path, seg, segment)
    _check_seg_grid(path, seg, geometry, atol_mm)
    if frames.ndim == 2:
        frames = frames[None]
    kind = str(seg.SegmentationType)
    shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else None
    frame_segments = _frame_segments(path, seg, frames, kind, shared)
    max_value = _max_fractional_value(path, seg) if kind == "FRACTIONAL" else 1.0
    slice_of_uid = {uid: k for k, uid in enumerate(geometry.get("sop_uids", ()))}
    mask = np.zeros(tuple(geometry["shape"]), dtype=np.uint8)
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        if frame_segments is not None and frame_segments[i] != number:
            continue
        k = _frame_slice(path, item, shared, i, geometry, slice_of_uid, atol_mm)
        frame = frames[i]
        if kind == "LABELMAP":
            on = frame == number
        elif kind == "FRACTIONAL":
            on = frame.astype(np.float64) / max_value >= FRACTIONAL_THRESHOLD
        else:
            on = frame > 0
        mask[k] |= on.astype(np.uint8)
    for k in np.flatnonzero(mask.any(axis=(1, 2))):  # frames lie on the acquired slices: onto the grid
        mask[k] = shift_mask_slice(mask[k], slice_shift(geometry, k))
    return mask



# --------------------------------------------------------------------------------------------------
# RTSTRUCT


def _choose_roi(path: Path, ds: Any, roi: str | None) -> int:
    items = [(int(r.ROINumber), str(r.get("ROIName", ""))) for r in ds.get("StructureSetROISequence", [])]
    names = ", ".join(repr(n) for _, n in items)
    if not items:
        raise AnnotationError(path, "the structure set holds no ROI", "re-export it with the tumour contour")
    if roi is None:
        if len(items) != 1:
            raise AnnotationError(path, f"{len(items)} ROIs ({names})", f"name one {_CHOOSE}")
        return items[0][0]
    hits = [n for n, name in items if name.strip().lower() == str(roi).strip().lower()]
    if len(hits) != 1:
        raise AnnotationError(path, f"{'no' if not hits else len(hits)} ROI named {roi!r} (ROIs {names})",
                              f"name one of these ROIs {_CHOOSE}")
    return hits[0]


def fill_polygons_even_odd(polygons: list[np.ndarray], shape_yx: tuple[int, int]) -> np.ndarray:
    """Rasterise closed polygons given as (n, 2) (x = column, y = row) pixel coordinates together.

    A pixel is set when its centre (integer coordinates) is inside by the even-odd rule over all
    polygons; edges follow the half-open scanline rule (module docstring). Returns a bool (y, x) array.
    """
    ny, nx = shape_yx
    out = np.zeros((ny, nx), dtype=bool)
    edges = []
    for poly in polygons:
        p = np.asarray(poly, dtype=float).reshape(-1, 2)
        if len(p) < 3:
            continue
        edges.append(np.concatenate([p, np.roll(p, -1, axis=0)], axis=1))
    if not edges:
        return out
    e = np.concatenate(edges)  # x0, y0, x1, y1
    e = e[e[:, 1] != e[:, 3]]  # horizontal edges cross no scanline
    cols = np.arange(nx, dtype=float)
    for row in range(ny):
        y = float(row)
        lo, hi = np.minimum(e[:, 1], e[:, 3]), np.maximum(e[:, 1], e[:, 3])
        hit = e[(lo <= y) & (y < hi)]
        if not len(hit):
            continue
        xs = hit[:, 0] + (y - hit[:, 1]) * (hit[:, 2] - hit[:, 0]) / (hit[:, 3] - hit[:, 1])
        crossings = np.searchsorted(np.sort(xs), cols, side="right")  # edges at or left of each centre
        out[row] = crossings % 2 == 1
    return out


def read_rtstruct(path: str | Path, geometry: dict[str, Any], roi: str | None = None,
                  slice_tol: float = 0.1, notes: list[tuple[str, str]] | None = None) -> np.ndarray:
    """One ROI of an RT Structure Set rasterised to a ``uint8`` (z, y, x) 0/1 mask on ``geometry``.

    Paper section: Data collection (reference masks). ``roi``: ROI name (case-insensitive) or ``None``
    for the only ROI. Each CLOSED_PLANAR contour (LPS mm) is mapped to voxel coordinates; it must be
    planar on one slice (every point within ``slice_tol`` slices of the same slice index) and that
    slice inside the series. Contours of a slice are filled together by the even-odd rule, pixel
    centres inside (module docstring). An ROI without contours gives an all-zero mask. Contours that
    enclose nothing are skipped with a note (``notes``, as ``(kind, detail)``, and the log): an OPEN or
    POINT contour (``contour_not_closed``) and a closed one of fewer than 3 points
    (``contour_degenerate``). Raises :class:`AnnotationError` (module docstring).
    """
    path = Path(path)
    ds = _dcmread(path)
    if str(ds.get("SOPClassUID", "")) != RTSTRUCT_STORAGE:
        raise AnnotationError(path, f"not an RTSTRUCT (SOP Class {ds.get('SOPClassUID', 'missing')})",
                              "give the structure set file")
    _check_reference(path, ds, geometry)
    number = _choose_roi(path, ds, roi)
    nz, ny, nx = geometry["shape"]
    per_slice: dict[int, list[np.ndarray]] = {}
    try:
        items = [c for c in ds.get("ROIContourSequence", []) if int(c.ReferencedROINumber) == number]
        contours = [c for item in items for c in item.get("ContourSequence", [])]
        for i, contour in enumerate(contours):
            kind = str(contour.get("ContourGeometricType", "CLOSED_PLANAR"))
            if kind != "CLOSED_PLANAR":
                _note(notes, "contour_not_closed", f"{path}: contour {i + 1} of ROI {number} is {kind}, not "
                      "CLOSED_PLANAR; it encloses no area and was left out")
                continue
            points = np.array([float(v) for v in contour.ContourData]).reshape(-1, 3)
            if len(points) < 3:
                _note(notes, "contour_degenerate", f"{path}: contour {i + 1} of ROI {number} has {len(points)} point(s); "
                      "it encloses no area and was left out (check the structure set: a truncated contour loses its voxels)")
                continue
            # snapped to 1e-4 pixel: a point written on a pixel centre (up to the Decimal String
            # precision of ContourData) is exactly on it, so the edge rule applies deterministically
            vox = np.round(lps_to_voxel(geometry, points), 4)
            k = int(round(float(np.median(vox[:, 2]))))
            if np.abs(vox[:, 2] - k).max() > slice_tol or not 0 <= k < nz:
                raise AnnotationError(
                    path, f"contour {i + 1} of ROI {number} (first point {points[0].round(2).tolist()} mm LPS) lies on "
                    f"no slice of the series (slice index {vox[:, 2].min():.2f}..{vox[:, 2].max():.2f})",
                    "the structure set belongs to another grid: export it from this series", reason=OFF_GRID)
            per_slice.setdefault(k, []).append(vox[:, :2])
    except AnnotationError:
        raise
    except (AttributeError, ValueError, TypeError, KeyError) as exc:
        raise AnnotationError(path, f"corrupt RTSTRUCT contour data ({type(exc).__name__}: {exc})",
                              "re-export it from its tool") from None
    mask = np.zeros((nz, ny, nx), dtype=np.uint8)
    for k, polygons in per_slice.items():
        mask[k] = fill_polygons_even_odd(polygons, (ny, nx))
    return mask


def read_annotation(path: str | Path, geometry: dict[str, Any], label: str | int | None = None,
                    notes: list[tuple[str, str]] | None = None) -> np.ndarray:
    """Mask of a SEG or RTSTRUCT, whichever ``path`` holds (by content): :func:`read_seg` with
    ``segment=label`` or :func:`read_rtstruct` with ``roi=label`` (its ``notes``). Raises
    :class:`AnnotationError` for any other file."""
    path = Path(path)
    kind = annotation_kind(path)
    if kind == "seg":
        return read_seg(path, geometry, label)
    if kind == "rtstruct":
        return read_rtstruct(path, geometry, None if label is None else str(label), notes=notes)
    raise AnnotationError(path, "neither a DICOM SEG nor an RTSTRUCT", "give a segmentation or structure set file")
