"""Tests for amtlib.dicom.annotations: SEG written by highdicom directly and RTSTRUCT built by hand with pydicom
from known polygons, on an oblique, row-flipped, anisotropic series, imported to the expected masks."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from matplotlib.path import Path as MplPath
from pydicom.sequence import Sequence as Seq
from pydicom.sr.codedict import codes

from amtlib.dicom import annotations as an
from amtlib.dicom import dicomio
from dicom_fixtures import SHAPE, pixel_to_lps, tilted_ball_series, write_oblique_series

RTSTRUCT = an.RTSTRUCT_STORAGE


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list]:
    folder = write_oblique_series(tmp_path_factory.mktemp("ct") / "s1")
    _, geometry = dicomio.read_series(folder)
    by_uid = {str(d.SOPInstanceUID): d for d in (pydicom.dcmread(p) for p in folder.glob("*.dcm"))}
    return folder, geometry, [by_uid[u] for u in geometry["sop_uids"]]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ SEG


def _highdicom_labelmap(sources: list, labels: np.ndarray, names: list[str], path: Path) -> Path:
    """A Label Map SEG (DICOM 2024) written with highdicom: pixel value k is segment k (``names[k - 1]``)."""
    algo = hd.AlgorithmIdentificationSequence(name="test", family=codes.cid7162.ArtificialIntelligence, version="1")
    descs = [hd.seg.SegmentDescription(i + 1, label, codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm,
                                       "AUTOMATIC", algo) for i, label in enumerate(names)]
    seg = hd.seg.Segmentation(sources, labels.astype(np.uint8), "LABELMAP", descs, hd.UID(), 5, hd.UID(), 1,
                              "test", "test", "1", "1")
    seg.save_as(path)
    return path


def test_label_map_seg_segments_by_pixel_value(series, tmp_path: Path) -> None:
    """Label Map Segmentation Storage (its own SOP class; every segment in one frame as pixel values):
    each segment is read as the voxels holding its number, placed by reference or by position."""
    _, geometry, sources = series
    labels = np.zeros(SHAPE, np.uint8)
    labels[1:4, 5:12, 6:15] = 1
    labels[2, 0:3, 20:24] = 2
    labels[2, 7:9, 8:10] = 2  # the heart label inside the tumour's box: not tumour
    path = _highdicom_labelmap(sources, labels, ["Tumour", "Heart"], tmp_path / "lm.dcm")
    assert str(pydicom.dcmread(path).SOPClassUID) == an.LABELMAP_SEG_STORAGE
    assert an.annotation_kind(path) == "seg" and an.referenced_series_uid(path) == geometry["series_uid"]
    np.testing.assert_array_equal(an.read_seg(path, geometry, "tumour"), (labels == 1).astype(np.uint8))
    np.testing.assert_array_equal(an.read_annotation(path, geometry, 2), (labels == 2).astype(np.uint8))
    with pytest.raises(an.AnnotationError, match=r"2 segments \(1: 'Tumour', 2: 'Heart'\); name one"):
        an.read_seg(path, geometry)  # the label map's background segment 0 is no candidate
    only = _highdicom_labelmap(sources, (labels == 1).astype(np.uint8), ["Tumour"], tmp_path / "one.dcm")
    np.testing.assert_array_equal(an.read_seg(only, geometry), (labels == 1).astype(np.uint8))
    ds = pydicom.dcmread(path)
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.DerivationImageSequence
    ds.save_as(tmp_path / "lm_pos.dcm")
    np.testing.assert_array_equal(an.read_seg(tmp_path / "lm_pos.dcm", geometry, "Tumour"), (labels == 1).astype(np.uint8))


def test_every_annotation_class_the_scan_names_is_read() -> None:
    assert set(an.KIND_OF_CLASS) == set(dicomio.ANNOTATION_CLASSES)


def _highdicom_seg(sources: list, masks: dict[str, np.ndarray], path: Path, fractional: bool = False) -> Path:
    """A SEG written with highdicom directly (not through amtlib.dicom.export): one segment per label."""
    algo = hd.AlgorithmIdentificationSequence(name="test", family=codes.cid7162.ArtificialIntelligence, version="1")
    descs = [hd.seg.SegmentDescription(i + 1, label, codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm,
                                       "AUTOMATIC", algo) for i, label in enumerate(masks)]
    stack = np.stack(list(masks.values()), axis=-1)
    seg = hd.seg.Segmentation(
        sources, stack.astype(np.float32 if fractional else np.uint8),
        "FRACTIONAL" if fractional else "BINARY", descs, hd.UID(), 5, hd.UID(), 1, "test", "test", "1", "1",
        max_fractional_value=200)
    seg.save_as(path)
    return path


def test_highdicom_seg_segments_by_label_and_number(series, tmp_path: Path) -> None:
    _, geometry, sources = series
    tumour = np.zeros(SHAPE, np.uint8)
    tumour[1:4, 5:12, 6:15] = 1
    heart = np.zeros(SHAPE, np.uint8)
    heart[2, 0:3, 20:24] = 1
    path = _highdicom_seg(sources, {"Tumour": tumour, "Heart": heart}, tmp_path / "two.dcm")
    assert an.annotation_kind(path) == "seg"
    assert an.referenced_series_uid(path) == geometry["series_uid"]
    np.testing.assert_array_equal(an.read_seg(path, geometry, "tumour"), tumour)
    np.testing.assert_array_equal(an.read_seg(path, geometry, 2), heart)
    np.testing.assert_array_equal(an.read_annotation(path, geometry, 2), heart)
    with pytest.raises(an.AnnotationError, match=r"2 segments \(1: 'Tumour', 2: 'Heart'\); name one"):
        an.read_seg(path, geometry)
    with pytest.raises(an.AnnotationError, match=f"{path}: no segment matching 'lesion'"):
        an.read_seg(path, geometry, "lesion")


def test_fractional_seg_is_thresholded_at_half(series, tmp_path: Path) -> None:
    _, geometry, sources = series
    frac = np.zeros(SHAPE, np.float32)
    frac[2, 4, 4:8] = [0.3, 0.495, 0.5, 0.9]  # stored as round(f * 200): 60, 99, 100, 180
    path = _highdicom_seg(sources, {"Tumour": frac}, tmp_path / "frac.dcm", fractional=True)
    expected = np.zeros(SHAPE, np.uint8)
    expected[2, 4, 6:8] = 1
    np.testing.assert_array_equal(an.read_seg(path, geometry), expected)


def test_seg_frames_placed_by_position_when_no_slice_is_referenced(series, tmp_path: Path) -> None:
    _, geometry, sources = series
    mask = np.zeros(SHAPE, np.uint8)
    mask[0, 2:5, 3:9] = 1
    mask[5, 10:12, 1:3] = 1
    path = _highdicom_seg(sources, {"Tumour": mask}, tmp_path / "pos.dcm")
    ds = pydicom.dcmread(path)
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.DerivationImageSequence
    ds.save_as(tmp_path / "pos_only.dcm")
    np.testing.assert_array_equal(an.read_seg(tmp_path / "pos_only.dcm", geometry), mask)
    # the same frames moved by half a slice lie on no slice
    for item in ds.PerFrameFunctionalGroupsSequence:
        ipp = np.array([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
        item.PlanePositionSequence[0].ImagePositionPatient = [f"{v:.6f}" for v in ipp + pixel_to_lps(0, 0, 0.5) - pixel_to_lps(0, 0, 0)]
    ds.save_as(tmp_path / "off.dcm")
    with pytest.raises(an.AnnotationError, match=r"frame 1 at .* lies on no slice of the series"):
        an.read_seg(tmp_path / "off.dcm", geometry)


def test_seg_on_a_tilted_gantry_lands_on_the_resampled_grid(tmp_path: Path) -> None:
    """A SEG drawn on a tilted gantry's acquired (sheared) slices, written by highdicom: read onto the
    reader's orthogonal grid it is the ball at the grid's own voxel centres (whole-pixel shear: 1 mm
    per 2.5 mm slice, 21.8 degrees), whether frames are placed by reference or by position alone."""
    centre, hu = tilted_ball_series(tmp_path / "ct", (1.0, 0.0), "tilt-seg")
    _, geometry = dicomio.read_series(tmp_path / "ct")
    assert geometry["tilt_deg"] == pytest.approx(np.degrees(np.arctan(1.0 / 2.5)), abs=0.01)
    by_uid = {str(d.SOPInstanceUID): d for d in (pydicom.dcmread(p) for p in (tmp_path / "ct").iterdir())}
    sources = [by_uid[u] for u in geometry["sop_uids"]]
    path = _highdicom_seg(sources, {"Tumour": (hu > 0).astype(np.uint8)}, tmp_path / "seg.dcm")
    # the grid: voxel centres in world mm straight from the geometry, the ball tested there
    nz, ny, nx = geometry["shape"]
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    lps = np.stack([x, y, z, np.ones_like(x)], -1).reshape(-1, 4) @ an.voxel_to_lps(geometry).T
    expected = (np.sum((lps[:, :3] - centre) ** 2, axis=1) <= 36.0).reshape(nz, ny, nx).astype(np.uint8)
    assert expected.sum() > 300
    np.testing.assert_array_equal(an.read_seg(path, geometry), expected)
    ds = pydicom.dcmread(path)
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.DerivationImageSequence
    ds.save_as(tmp_path / "pos_only.dcm")
    np.testing.assert_array_equal(an.read_seg(tmp_path / "pos_only.dcm", geometry), expected)


def test_seg_of_another_series_or_grid_is_refused(series, tmp_path: Path) -> None:
    folder, geometry, sources = series
    path = _highdicom_seg(sources, {"Tumour": np.ones(SHAPE, np.uint8)}, tmp_path / "a.dcm")
    before = _sha(path)
    other = {**geometry, "series_uid": "1.2.3.4"}
    with pytest.raises(an.AnnotationError, match=rf"{path}: references series {geometry['series_uid']}, not the CT series 1.2.3.4"):
        an.read_seg(path, other)
    small = {**geometry, "shape": (SHAPE[0], SHAPE[1] - 1, SHAPE[2])}
    with pytest.raises(an.AnnotationError, match="frames are 20x24 pixels, the series' slices 19x24"):
        an.read_seg(path, small)
    assert _sha(path) == before  # inputs are never modified


def test_corrupt_or_wrong_files_get_a_reason(series, tmp_path: Path) -> None:
    folder, geometry, sources = series
    path = _highdicom_seg(sources, {"Tumour": np.ones(SHAPE, np.uint8)}, tmp_path / "a.dcm")
    data = path.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 40])
    with pytest.raises(an.AnnotationError, match=r"cut.dcm: corrupt DICOM SEG .*re-export"):
        an.read_seg(tmp_path / "cut.dcm", geometry)
    (tmp_path / "notes.txt").write_text("not dicom")
    assert an.annotation_kind(tmp_path / "notes.txt") is None
    assert an.annotation_kind(next(folder.glob("*.dcm"))) is None  # a CT image is not an annotation
    with pytest.raises(an.AnnotationError, match="notes.txt: not a readable DICOM file"):
        an.read_seg(tmp_path / "notes.txt", geometry)
    with pytest.raises(an.AnnotationError, match="not an RTSTRUCT"):
        an.read_rtstruct(path, geometry)
    with pytest.raises(an.AnnotationError, match="not a DICOM SEG or RTSTRUCT"):
        an.referenced_series_uid(next(folder.glob("*.dcm")))


# ------------------------------------------------------------------------------------------- RTSTRUCT


def _hand_rtstruct(sources: list, rois: dict[str, list[tuple[int, list[tuple[float, float]]]]], path: Path,
                   series_uid: str | None = None) -> Path:
    """An RTSTRUCT built by hand with pydicom (independent of amtlib.dicom.export): polygons given in pixel
    coordinates (column x, row y) per slice k, converted to LPS mm by the test design's formula."""
    first = sources[0]
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT, pydicom.uid.generate_uid()
    ds.PatientID, ds.StudyInstanceUID, ds.Modality = first.PatientID, first.StudyInstanceUID, "RTSTRUCT"
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    series_ref = pydicom.Dataset()
    series_ref.SeriesInstanceUID = series_uid or first.SeriesInstanceUID
    study_ref = pydicom.Dataset()
    study_ref.RTReferencedSeriesSequence = Seq([series_ref])
    frame_ref = pydicom.Dataset()
    frame_ref.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame_ref.RTReferencedStudySequence = Seq([study_ref])
    ds.ReferencedFrameOfReferenceSequence = Seq([frame_ref])
    ds.StructureSetROISequence, ds.ROIContourSequence = Seq(), Seq()
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = pydicom.Dataset()
        roi.ROINumber, roi.ROIName = number, name
        ds.StructureSetROISequence.append(roi)
        item = pydicom.Dataset()
        item.ReferencedROINumber = number
        item.ContourSequence = Seq()
        for k, poly in contours:
            c = pydicom.Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR"
            pts = np.array([pixel_to_lps(x, y, k) for x, y in poly])
            c.NumberOfContourPoints = len(pts)
            c.ContourData = [f"{v:.6f}" for v in pts.ravel()]
            item.ContourSequence.append(c)
        ds.ROIContourSequence.append(item)
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def test_hand_made_rtstruct_with_hole_and_island(series, tmp_path: Path) -> None:
    _, geometry, sources = series
    contours = [
        (2, _rect(2.5, 3.5, 12.5, 13.5)),   # outer: columns 3..12, rows 4..13
        (2, _rect(5.5, 6.5, 9.5, 10.5)),    # hole: columns 6..9, rows 7..10
        (2, _rect(6.5, 7.5, 7.5, 8.5)),     # island in the hole: column 7, row 8
        (4, [(20.2, 1.2), (22.9, 1.2), (20.2, 3.9)]),  # triangle: x > 20.2, y > 1.2, x + y < 24.1
    ]
    path = _hand_rtstruct(sources, {"GTV": contours, "Heart": [(0, _rect(0.5, 0.5, 1.5, 1.5))]}, tmp_path / "rs.dcm")
    assert an.annotation_kind(path) == "rtstruct"
    assert an.referenced_series_uid(path) == geometry["series_uid"]
    mask = an.read_rtstruct(path, geometry, "gtv")
    expected = np.zeros(SHAPE, np.uint8)
    expected[2, 4:14, 3:13] = 1
    expected[2, 7:11, 6:10] = 0
    expected[2, 8, 7] = 1
    expected[4, 2, 21:23] = 1  # centres (x, y) = (21, 2), (22, 2), (21, 3)
    expected[4, 3, 21] = 1
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(an.read_annotation(path, geometry, "GTV"), expected)
    other = _hand_rtstruct(sources, {"GTV": contours}, tmp_path / "other", series_uid="1.2.3.9")
    assert an.annotations_of_series([other, path, next(iter(geometry["files"])), tmp_path / "none"], geometry["series_uid"]) == [path]
    with pytest.raises(an.AnnotationError, match="neither a DICOM SEG nor an RTSTRUCT"):
        an.read_annotation(path.with_name("nothing.dcm"), geometry)
    with pytest.raises(an.AnnotationError, match=r"2 ROIs \('GTV', 'Heart'\); name one \(mask_label in the cohort step, --segment in amt evaluate\)"):
        an.read_rtstruct(path, geometry)
    with pytest.raises(an.AnnotationError, match=f"{path}: no ROI named 'tumour'"):
        an.read_rtstruct(path, geometry, "tumour")


def test_boundary_convention_centres_on_edges(series, tmp_path: Path) -> None:
    """A square through pixel centres: left and top edges are inside, right and bottom outside."""
    _, geometry, sources = series
    path = _hand_rtstruct(sources, {"GTV": [(1, _rect(2, 3, 5, 6))]}, tmp_path / "edge.dcm")
    mask = an.read_rtstruct(path, geometry)
    expected = np.zeros(SHAPE, np.uint8)
    expected[1, 3:6, 2:5] = 1  # rows 3, 4, 5 and columns 2, 3, 4: 3 x 3 of the 4 x 4 centres touched
    np.testing.assert_array_equal(mask, expected)
    # two squares sharing an edge never claim its pixels twice (even-odd would then cancel them)
    path2 = _hand_rtstruct(sources, {"GTV": [(1, _rect(2, 3, 5, 6)), (1, _rect(5, 3, 8, 6))]}, tmp_path / "two.dcm")
    expected[1, 3:6, 5:8] = 1
    np.testing.assert_array_equal(an.read_rtstruct(path2, geometry), expected)


def test_even_odd_fill_matches_matplotlib_on_random_polygons() -> None:
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:30, 0:40]
    centres = np.c_[xx.ravel(), yy.ravel()].astype(float)
    for _ in range(60):
        polys = [rng.uniform(-3, 43, size=(rng.integers(3, 9), 2)) * [1, 0.75] for _ in range(rng.integers(1, 4))]
        polys = [p + rng.uniform(0.01, 0.02) for p in polys]  # vertices off the pixel-centre lattice
        oracle = np.zeros(len(centres), bool)
        for p in polys:
            oracle ^= MplPath(np.vstack([p, p[:1]]), closed=True).contains_points(centres)
        got = an.fill_polygons_even_odd(polys, (30, 40)).ravel()
        # matplotlib's own boundary handling may differ only for centres within 1e-9 of an edge
        assert (got != oracle).sum() == 0


def test_rtstruct_bad_input(series, tmp_path: Path) -> None:
    _, geometry, sources = series
    other = _hand_rtstruct(sources, {"GTV": [(1, _rect(2, 3, 5, 6))]}, tmp_path / "other.dcm", series_uid="1.2.3.9")
    with pytest.raises(an.AnnotationError, match=rf"other.dcm: references series 1.2.3.9, not the CT series {geometry['series_uid']}"):
        an.read_rtstruct(other, geometry)
    between = _hand_rtstruct(sources, {"GTV": [(1.5, _rect(2, 3, 5, 6))]}, tmp_path / "between.dcm")
    with pytest.raises(an.AnnotationError, match=r"between.dcm: contour 1 of ROI 1 .* lies on no slice"):
        an.read_rtstruct(between, geometry)
    outside = _hand_rtstruct(sources, {"GTV": [(9, _rect(2, 3, 5, 6))]}, tmp_path / "outside.dcm")
    with pytest.raises(an.AnnotationError, match="lies on no slice"):
        an.read_rtstruct(outside, geometry)
    broken = pydicom.dcmread(between)
    broken.ROIContourSequence[0].ContourSequence[0].ContourData = ["1", "2"]
    broken.save_as(tmp_path / "broken.dcm")
    with pytest.raises(an.AnnotationError, match="broken.dcm: corrupt RTSTRUCT contour data"):
        an.read_rtstruct(tmp_path / "broken.dcm", geometry)
    empty = pydicom.dcmread(between)
    empty.StructureSetROISequence, empty.ROIContourSequence = Seq(), Seq()
    empty.save_as(tmp_path / "empty.dcm")
    with pytest.raises(an.AnnotationError, match="empty.dcm: the structure set holds no ROI"):
        an.read_rtstruct(tmp_path / "empty.dcm", geometry, "GTV")
    data = between.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:200])
    with pytest.raises(an.AnnotationError, match="cut.dcm: not a readable DICOM file|cut.dcm: not an RTSTRUCT"):
        an.read_rtstruct(tmp_path / "cut.dcm", geometry)
    with pytest.raises(an.AnnotationError, match="missing.dcm: file not found"):
        an.read_rtstruct(tmp_path / "missing.dcm", geometry)


def test_seg_frame_of_a_multiframe_source_is_found_by_uid_and_frame_number(series, tmp_path: Path) -> None:
    """The series reader names frame f of a multi-frame file ``uid#f``; a SEG names it by
    ReferencedSOPInstanceUID + ReferencedFrameNumber."""
    _, geometry, sources = series
    mask = np.zeros(SHAPE, np.uint8)
    mask[3, 2:5, 3:9] = 1
    ds = pydicom.dcmread(_highdicom_seg(sources, {"Tumour": mask}, tmp_path / "mf.dcm"))
    for item in ds.PerFrameFunctionalGroupsSequence:
        item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber = 1
        ipp = np.array([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])  # moved off the
        item.PlanePositionSequence[0].ImagePositionPatient = [f"{v:.6f}" for v in ipp + [0, 0, 1.3]]  # grid: only
        # the reference can place the frame
    ds.save_as(tmp_path / "mf2.dcm")
    multi = {**geometry, "sop_uids": tuple(f"{u}#1" for u in geometry["sop_uids"])}
    np.testing.assert_array_equal(an.read_seg(tmp_path / "mf2.dcm", multi), mask)
    np.testing.assert_array_equal(an.read_seg(tmp_path / "mf2.dcm", geometry), mask)  # single-frame naming too


# ------------------------------------------------------------------ annotations that would be misread (issue 23, 6-8)


def test_seg_frames_naming_an_undefined_segment_are_refused(series, tmp_path: Path) -> None:
    """Frames pointing to a segment number the SEG never defines were dropped: half a reference kept, exit 0."""
    _, geometry, sources = series
    tumour = np.zeros(SHAPE, np.uint8)
    tumour[1:4, 5:12, 6:15] = 1
    path = _highdicom_seg(sources, {"Tumour": tumour}, tmp_path / "one.dcm")
    ds = pydicom.dcmread(path)
    frames = ds.PerFrameFunctionalGroupsSequence
    assert len(frames) == 3  # one frame per tumour slice
    shared = ds.SharedFunctionalGroupsSequence[0]
    if "SegmentIdentificationSequence" in shared:  # one segment: highdicom names it once for all frames
        for item in frames:
            item.SegmentIdentificationSequence = copy.deepcopy(shared.SegmentIdentificationSequence)
        del shared.SegmentIdentificationSequence
    frames[1].SegmentIdentificationSequence[0].ReferencedSegmentNumber = 7
    ds.save_as(tmp_path / "undefined.dcm")
    with pytest.raises(an.AnnotationError, match=r"undefined.dcm: 1 frame\(s\) \(e.g. frame 2\) reference segment 7, "
                                                 r"which the SEG does not define \(segments \[1\]\)") as err:
        an.read_seg(tmp_path / "undefined.dcm", geometry)
    assert err.value.reason == an.INVALID
    np.testing.assert_array_equal(an.read_seg(path, geometry), tumour)  # the intact file still reads whole


def test_label_map_values_naming_no_segment_are_refused(series, tmp_path: Path) -> None:
    _, geometry, sources = series
    labels = np.zeros(SHAPE, np.uint8)
    labels[2, 3:6, 3:6] = 1
    labels[3, 3:6, 3:6] = 2
    path = _highdicom_labelmap(sources, labels, ["Tumour", "Heart"], tmp_path / "lm.dcm")
    ds = pydicom.dcmread(path)
    keep = [item for item in ds.SegmentSequence if int(item.SegmentNumber) != 2]  # segment 2's pixels stay
    ds.SegmentSequence = Seq(keep)
    ds.save_as(tmp_path / "lm_cut.dcm")
    with pytest.raises(an.AnnotationError, match=r"lm_cut.dcm: pixel values \[2\] name no segment"):
        an.read_seg(tmp_path / "lm_cut.dcm", geometry)


@pytest.mark.parametrize("value", [0, None])
def test_fractional_seg_without_a_positive_maximum_is_refused(series, tmp_path: Path, value) -> None:
    """MaximumFractionalValue 0 was read as 1, so a stored 78 (39 % of 200) counted as tumour."""
    _, geometry, sources = series
    frac = np.zeros(SHAPE, np.float32)
    frac[2, 4, 4:8] = [0.3, 0.39, 0.5, 0.9]
    path = _highdicom_seg(sources, {"Tumour": frac}, tmp_path / "frac.dcm", fractional=True)
    ds = pydicom.dcmread(path)
    if value is None:
        del ds.MaximumFractionalValue
    else:
        ds.MaximumFractionalValue = value
    ds.save_as(tmp_path / "bad_max.dcm")
    with pytest.raises(an.AnnotationError, match=r"bad_max.dcm: FRACTIONAL SEG with MaximumFractionalValue"):
        an.read_seg(tmp_path / "bad_max.dcm", geometry)


def test_rtstruct_contours_enclosing_nothing_are_noted(series, tmp_path: Path) -> None:
    """A 2-point contour vanished without a word; an OPEN contour's warning reached only the log."""
    _, geometry, sources = series
    path = _hand_rtstruct(sources, {"GTV": [(1, _rect(2.5, 3.5, 6.5, 7.5)), (2, _rect(2.5, 3.5, 6.5, 7.5)),
                                            (3, _rect(2.5, 3.5, 6.5, 7.5))]}, tmp_path / "rs.dcm")
    ds = pydicom.dcmread(path)
    contours = ds.ROIContourSequence[0].ContourSequence
    contours[1].ContourData = contours[1].ContourData[:6]  # truncated to 2 points
    contours[1].NumberOfContourPoints = 2
    contours[2].ContourGeometricType = "OPEN_PLANAR"
    ds.save_as(tmp_path / "odd.dcm")
    notes: list[tuple[str, str]] = []
    mask = an.read_annotation(tmp_path / "odd.dcm", geometry, "GTV", notes=notes)
    expected = np.zeros(SHAPE, np.uint8)
    expected[1, 4:8, 3:7] = 1  # only the intact contour on slice 1
    np.testing.assert_array_equal(mask, expected)
    assert [k for k, _ in notes] == ["contour_degenerate", "contour_not_closed"]
    assert "odd.dcm: contour 2 of ROI 1 has 2 point(s)" in notes[0][1]
    assert "odd.dcm: contour 3 of ROI 1 is OPEN_PLANAR" in notes[1][1]
    clean: list[tuple[str, str]] = []
    an.read_rtstruct(path, geometry, "GTV", notes=clean)
    assert clean == []
