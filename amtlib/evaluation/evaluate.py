"""Evaluate predicted masks against reference masks: per-case metrics, lesion counts, FROC, Tables 3-4.

Paper: Evaluation (voxel-wise and lesion-wise metrics). This module is the file-facing edge of
:mod:`amtlib.evaluation.metrics`, :mod:`amtlib.evaluation.lesions` and :mod:`amtlib.evaluation.stats`: it pairs ``<case_id>.nii.gz``
files, checks them, scores each case once (components labelled once, every IoU threshold matched on
the small IoU matrix) and writes the tables. It needs nothing else from the pipeline, so it scores any
model's masks (``amt evaluate --pred DIR --ref DIR --out DIR``), NIfTI or, with ``--sources``, DICOM
SEG/RTSTRUCT paired to cases by the series they reference (:mod:`amtlib.dicom.predictions`).

Bad input is reported, never silently dropped: a reference without prediction is scored as an empty
prediction (``pred_missing`` is True) with a warning that counts them; a prediction folder in which no
file is named after a reference case (empty, misnamed ``c1_pred.nii.gz``, nested ``fold0/``) is an
error; a prediction without reference is ignored with a warning; ``c1.nii`` beside ``c1.nii.gz`` is an
error. Masks are read as the cohort reads reference masks (:mod:`amtlib.masks`: NIfTI or NRRD, the
reference's grid in any axis order or flip, or padded in-plane, placed by world coordinates); a grid
that really differs is an error naming the case unless ``resample_pred`` (nearest neighbour onto the
reference grid). Label values other than 0/1 are an error unless a label is chosen:
``label`` (``--label``) picks the tumour label of the *predictions* only, ``ref_label``
(``--ref-label``) that of the references; each side is otherwise read as 0/1.

``amt evaluate --out DIR`` owns its outputs: DIR must be new, empty, or hold only files an earlier
``amt evaluate`` wrote (:data:`OUTPUT_FILES`), which are all removed before the new ones are written,
``summary.json`` last; anything else there is refused. A folder that cannot be written is refused
before any scoring.

.. note:: The voxel metrics score the raw binary prediction; the < 10-voxel filter applies only to
   the lesion-wise analysis.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from amtlib import io, masks, subgroups
from amtlib.evaluation import boundary, lesions, panoptic, stats
from amtlib.errors import AmtError
from amtlib.evaluation.metrics import VOXEL_METRICS, metrics_from_counts
from amtlib.workers import process_pool


#: ``per_case.csv`` columns (docs/architecture.md), then ``pred_missing``; metadata columns follow.
PER_CASE_COLUMNS: tuple[str, ...] = (
    "case_id", "dice", "iou", "precision", "recall", "tp_voxels", "fp_voxels", "fn_voxels",
    "n_ref_lesions", "n_pred_lesions", "max_axial_diameter_mm", "volume_ml", "pred_missing",
)
#: Case metadata carried from the clinical table / manifest into ``per_case.csv`` when present.
META_COLUMNS: tuple[str, ...] = ("manufacturer", "histology", "split")
LESION_COUNT_COLUMNS: tuple[str, ...] = ("case_id", "iou_threshold", "tp", "fp", "fn", "n_ref_lesions", "n_pred_lesions",
                                         "fp_no_overlap")
#: Mask files paired by name (the mask reader's: NIfTI, and NRRD as 3D Slicer writes it).
NIFTI_SUFFIXES: tuple[str, ...] = masks.MASK_SUFFIXES
#: Every file ``amt evaluate`` may write into ``--out`` (replaced as a whole on a re-run).
OUTPUT_FILES: tuple[str, ...] = ("per_case.csv", "lesion_counts.csv", "froc.csv", "table3.csv", "table4.csv",
                                  "boundary_table.csv", "conventions.csv", "lesion_pairs.csv", "summary.json")
#: ``--metrics`` choices: the paper's four (always computed), the boundary metrics, and ``pq`` (per-lesion quality).
METRIC_CHOICES: tuple[str, ...] = (*VOXEL_METRICS, *boundary.BOUNDARY_METRICS, "pq")
#: Files of an nnU-Net prediction folder that are not masks; skipped without a warning.
NNUNET_SIDE_FILES: tuple[str, ...] = ("dataset.json", "plans.json", "predict_from_raw_data_args.json", "summary.json")


@dataclass(frozen=True)
class ExtraMetrics:
    """What is scored beyond the paper's metrics: boundary metrics and the per-lesion quality.

    ``metrics`` holds names of :data:`METRIC_CHOICES` (the paper's four are always computed);
    ``nsd_tolerance_mm`` the NSD tolerances tau; ``pq_threshold`` the lesion IoU threshold of ``pq``.
    """

    metrics: tuple[str, ...] = ()
    nsd_tolerance_mm: tuple[float, ...] = boundary.NSD_TOLERANCE_MM
    pq_threshold: float = panoptic.PQ_IOU_THRESHOLD

    @property
    def boundary(self) -> list[str]:
        return [m for m in boundary.BOUNDARY_METRICS if m in self.metrics]

    @property
    def pq(self) -> bool:
        return "pq" in self.metrics

    def columns(self) -> list[str]:
        """The ``per_case.csv`` columns these metrics add (after :data:`PER_CASE_COLUMNS`)."""
        return boundary.boundary_columns(self.boundary, self.nsd_tolerance_mm) + (list(panoptic.CASE_COLUMNS) if self.pq else [])


def extra_metrics(metrics: "str | Sequence[str] | None" = None, nsd_tolerance_mm: "str | Sequence[float] | None" = None,
                  pq_threshold: float = panoptic.PQ_IOU_THRESHOLD) -> ExtraMetrics:
    """Check and normalise the extra metrics (a comma list or names; tau in mm, a comma list or numbers).

    Raises ``ValueError`` naming the bad value: an unknown metric, a tau that is not a positive number,
    a threshold outside [0, 1).
    """
    names = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics or ()) if m.strip()]
    unknown = [m for m in names if m not in METRIC_CHOICES]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRIC_CHOICES)}")
    taus_in = (nsd_tolerance_mm.split(",") if isinstance(nsd_tolerance_mm, str) else
               boundary.NSD_TOLERANCE_MM if nsd_tolerance_mm is None else nsd_tolerance_mm)
    try:
        taus = tuple(float(t) for t in taus_in)
    except (TypeError, ValueError):
        raise ValueError(f"NSD tolerances must be numbers in mm, e.g. 1,2; got {nsd_tolerance_mm!r}") from None
    if not taus or any(not np.isfinite(t) or t <= 0 for t in taus):
        raise ValueError(f"NSD tolerances must be positive numbers in mm, e.g. 1,2; got {nsd_tolerance_mm!r}")
    chosen = tuple(m for m in METRIC_CHOICES if m in names and m not in VOXEL_METRICS)
    return ExtraMetrics(chosen, tuple(dict.fromkeys(taus)), panoptic.check_threshold(pq_threshold))


@dataclass
class Evaluation:
    """Scores of a set of cases: ``per_case`` (one row per case) and ``lesion_counts`` (case x threshold).

    With the per-lesion quality (``pq``), ``lesion_pairs`` holds the matched pairs (``lesion_pairs.csv``);
    ``n_voxels`` is each case's image size in voxels (the TN of nnU-Net's ``summary.json``).
    """

    per_case: pd.DataFrame
    lesion_counts: pd.DataFrame
    lesion_pairs: "pd.DataFrame | None" = None
    n_voxels: "np.ndarray | None" = None
    extra: ExtraMetrics = ExtraMetrics()
    min_pred_voxels: int = lesions.MIN_PRED_VOXELS
    connectivity: int = lesions.CONNECTIVITY


def conventions_table(extra: ExtraMetrics = ExtraMetrics(), min_pred_voxels: int = lesions.MIN_PRED_VOXELS,
                      connectivity: int = lesions.CONNECTIVITY) -> pd.DataFrame:
    """Every convention behind the metrics in use (``conventions.csv``: metric, convention, parameter, value).

    The paper's voxel metrics and lesion definitions always; the boundary metrics'
    (:data:`amtlib.evaluation.boundary.CONVENTIONS`) and the per-lesion quality's when ``extra`` asks for them.
    """
    rows = [
        ("dice, iou, precision, recall", "voxel counts of the whole CT series, one value per case; a 0 denominator "
         "gives NaN, left out of means and counted", "both_empty", "NaN"),
        ("dice, iou, precision, recall", "the raw binary prediction (the size filter applies to lesions only)", "", ""),
        ("lesions", "3D connected components", "connectivity", str(int(connectivity))),
        ("lesions", "predicted components with fewer voxels removed; reference components kept", "min_lesion_voxels",
         str(int(min_pred_voxels))),
        ("lesion counts", "one to one: most pairs with IoU > t (strict), then largest total IoU (Hungarian)",
         "iou_thresholds", "0.05, 0.10, ..., 0.95"),
    ]
    table = pd.DataFrame(rows, columns=["metric", "convention", "parameter", "value"])
    parts = [table]
    if extra.boundary:
        parts.append(boundary.conventions_table(extra.nsd_tolerance_mm))
    if extra.pq:
        parts.append(pd.DataFrame(panoptic.conventions(extra.pq_threshold), columns=list(table.columns)))
    return pd.concat(parts, ignore_index=True)


def score_case(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float],
    thresholds: np.ndarray = lesions.IOU_THRESHOLDS, min_pred_voxels: int = lesions.MIN_PRED_VOXELS,
    connectivity: int = lesions.CONNECTIVITY, extra: ExtraMetrics = ExtraMetrics(),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Voxel metrics, tumour size and lesion TP/FP/FN at every threshold for one (z, y, x) mask pair.

    Paper: Voxel-wise metrics, Post-processing, Lesion-wise metrics. Both masks are cropped to the box
    of their union, components are labelled once per mask, and one sparse joint histogram of the two
    label images (only overlapping pairs) gives both the voxel confusion counts and the lesion IoU matrix.
    ``max_axial_diameter_mm`` and ``volume_ml`` describe the reference (NaN / 0 when it is empty).
    Returns ``(row, counts)`` with ``counts`` = ``{"tp", "fp", "fn", "fp_no_overlap"}`` arrays over
    ``thresholds``. ``extra`` adds the boundary metrics (:mod:`amtlib.evaluation.boundary`, found inside
    each lesion's box) and the per-lesion quality (:mod:`amtlib.evaluation.panoptic`; its pairs in ``counts["pairs"]``).
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} != reference shape {ref.shape}")
    pred = pred if pred.dtype == bool else pred != 0
    ref = ref if ref.dtype == bool else ref != 0
    n_voxels = int(pred.size)
    box = lesions.bounding_box(pred | ref)
    if box is None:
        pred = ref = np.zeros((1, 1, 1), dtype=bool)
    else:  # labelling the foreground box gives the same components, much faster
        pred, ref = np.ascontiguousarray(pred[box]), np.ascontiguousarray(ref[box])
    pl, n_pred = lesions.label_components(pred, connectivity)
    rl, n_ref = lesions.label_components(ref, connectivity)
    overlap = lesions.sparse_overlap(pl, n_pred, rl, n_ref)
    tp_v, fp_v, fn_v = overlap.tp_voxels, overlap.fp_voxels, overlap.fn_voxels
    iou, _, ref_sizes = lesions.sparse_lesion_iou(overlap, min_pred_voxels)
    tp, fp, fn = lesions.detection_counts(iou, thresholds)
    fp_no_overlap = lesions.detection_counts(iou, thresholds, "no_overlap")[1]  # the paper's second FP definition
    row = {
        **metrics_from_counts(tp_v, fp_v, fn_v), "tp_voxels": tp_v, "fp_voxels": fp_v, "fn_voxels": fn_v,
        "n_ref_lesions": n_ref, "n_pred_lesions": int(iou.shape[0]),
        "max_axial_diameter_mm": lesions.max_axial_diameter_mm(ref, spacing),
        "volume_ml": float(ref_sizes.sum()) * float(np.prod(spacing)) / 1000.0,
    }
    counts: dict[str, Any] = {"tp": tp, "fp": fp, "fn": fn, "fp_no_overlap": fp_no_overlap, "n_voxels": n_voxels}
    if extra.boundary:
        row.update({k: v for k, v in boundary.boundary_metrics(pred, ref, spacing, extra.nsd_tolerance_mm).items()
                    if k in extra.columns()})
    if extra.pq:
        pairs, quality = panoptic.case_pairs(overlap, extra.pq_threshold, min_pred_voxels)
        row.update({k: quality[k] for k in panoptic.CASE_COLUMNS})
        counts["pairs"] = pairs
    return row, counts


def _read_any_mask(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """``(array zyx, spacing zyx mm, affine)`` of a NIfTI (:func:`amtlib.io.load_nifti`) or NRRD mask
    (:func:`amtlib.masks.read_mask_file`, LPS turned to RAS as for NIfTI)."""
    if not masks.mask_suffix(path).endswith("nrrd"):
        return io.load_nifti(path)
    loaded = masks.read_mask_file(path)
    zooms = np.linalg.norm(loaded.affine[:3, :3], axis=0)
    return (np.ascontiguousarray(loaded.data.transpose(2, 1, 0)), (float(zooms[2]), float(zooms[1]), float(zooms[0])),
            loaded.affine)


def load_mask(path: str | Path, label: int | None = None,
              hint: str = "choose the tumour label with --label N (label=N)") -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """Read a binary mask (NIfTI, or NRRD through :mod:`amtlib.masks`) as ``(bool array zyx, spacing_zyx_mm, affine)``.

    Values must be 0/1 unless ``label`` is given, in which case voxels equal to ``label`` are the
    tumour; a mask with other nonzero values but none equal to ``label`` gives a warning (the label
    is probably wrong). Raises ``ValueError`` naming the file for unreadable input or other label
    values (``hint`` says which option picks the label).
    """
    arr, spacing, affine = _read_any_mask(path)
    if label is not None:
        tumour = arr == label
        if not tumour.any() and arr.any():
            found = np.unique(arr[arr != 0])[:5].tolist()
            warnings.warn(f"{path}: no voxel has label {label}, but it holds values {found}; is the label right?",
                          stacklevel=2)
        return tumour, spacing, affine
    if arr.dtype == bool:
        return arr, spacing, affine
    if np.issubdtype(arr.dtype, np.integer):
        binary = arr.size == 0 or (arr.min() >= 0 and arr.max() <= 1)
    else:
        binary = bool(np.all((arr == 0) | (arr == 1)))
    if not binary:
        found = np.unique(arr[(arr != 0) & (arr != 1)])[:5]
        raise AmtError(path, f"mask has label values other than 0/1 (e.g. {found.tolist()})", hint)
    return arr.view(bool) if arr.dtype.itemsize == 1 and np.issubdtype(arr.dtype, np.integer) else arr != 0, spacing, affine


def resample_nearest(mask: np.ndarray, affine: np.ndarray, shape: tuple[int, ...], target_affine: np.ndarray) -> np.ndarray:
    """Resample a (z, y, x) mask onto another grid (``shape`` zyx, ``target_affine``), nearest neighbour."""
    import nibabel as nib
    from nibabel.processing import resample_from_to

    img = nib.Nifti1Image(np.ascontiguousarray(mask.astype(np.uint8).transpose(2, 1, 0)), affine)
    out = resample_from_to(img, (tuple(shape[::-1]), target_affine), order=0)
    return np.ascontiguousarray(np.asarray(out.dataobj).transpose(2, 1, 0)) != 0


def load_pair(
    case_id: str, pred_path: "str | Path | None", ref_path: str | Path, label: int | None = None, resample_pred: bool = False,
    ref_label: int | None = None, pred_sources: "Sequence[str] | None" = None, segment: str | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Load a case's prediction and reference on the reference grid: ``(pred, ref, spacing)``.

    ``label`` is the tumour label of the prediction, ``ref_label`` that of the reference (None: 0/1).
    With ``pred_sources`` (the files of the CT series it references) the prediction is a DICOM SEG or
    RTSTRUCT, read onto that series' grid (:func:`amtlib.dicom.predictions.read_prediction`; ``segment``
    names the segment or ROI). A missing prediction (``pred_path`` None) is an empty mask. A
    prediction on the reference's grid in another axis order or flip (dcm2niix's row flip, a permuted
    export) or padded in-plane around it is placed by world coordinates, as the cohort places reference
    masks (:func:`amtlib.masks.place_on_grid`); only a grid that really differs needs ``resample_pred``
    (nearest neighbour), else ``ValueError`` names the case.
    """
    ref, spacing, ref_aff = load_mask(ref_path, ref_label, "choose the reference's tumour label with --ref-label N "
                                                            "(--label N applies to the predictions only)")
    if pred_path is None:
        return np.zeros_like(ref, dtype=bool), ref, spacing
    if pred_sources:
        from amtlib.dicom.predictions import read_prediction

        pred, pred_aff = read_prediction(pred_path, pred_sources, segment)
    else:
        pred, _, pred_aff = load_mask(pred_path, label)
    if not io.same_geometry(pred.shape, pred_aff, ref.shape, ref_aff):
        try:  # the same grid stored another way: placed exactly, no resampling
            pred = masks.place_on_grid(pred.transpose(2, 1, 0), pred_aff, ref_aff, ref.shape, path=pred_path)[0] > 0
        except masks.MaskError:
            if not resample_pred:
                what = (f"shape {pred.shape} != reference shape {ref.shape} (z, y, x)" if pred.shape != ref.shape
                        else f"affine differs from the reference's by up to {np.abs(pred_aff - ref_aff).max():.3g} mm")
                raise AmtError(f"case {case_id}", f"prediction {pred_path} {what}, and it is not the reference's grid "
                               "in another axis order", "resample it onto the reference grid with --resample-pred "
                               "(resample_pred=True, nearest neighbour)") from None
            pred = resample_nearest(pred, pred_aff, ref.shape, ref_aff)
    return pred, ref, spacing


def _evaluate_one(case_id: str, pred_path: "str | None", ref_path: str, pred_sources: "list[str] | None",
                  options: dict[str, Any]) -> tuple[dict, dict]:
    pred, ref, spacing = load_pair(case_id, pred_path, ref_path, options["label"], options["resample_pred"],
                                   options["ref_label"], pred_sources, options["segment"])
    row, counts = score_case(pred, ref, spacing, options["thresholds"], options["min_pred_voxels"], options["connectivity"],
                             options["extra"])
    return {"case_id": case_id, **row, "pred_missing": pred_path is None}, counts


def evaluate_cases(
    cases: pd.DataFrame, thresholds: "list[float] | np.ndarray | None" = None,
    min_pred_voxels: int = lesions.MIN_PRED_VOXELS, connectivity: int = lesions.CONNECTIVITY,
    label: int | None = None, resample_pred: bool = False, workers: int = 1, progress: bool = True,
    ref_label: int | None = None, segment: str | None = None, extra: ExtraMetrics = ExtraMetrics(),
) -> Evaluation:
    """Score every case of ``cases`` (columns ``case_id, pred_path, ref_path``; pred_path may be empty).

    Paper: Evaluation. Cases run in ``workers`` processes with a tqdm bar. Columns of ``cases`` named in
    :data:`META_COLUMNS` are carried into ``per_case`` with the tumour ``size_bin``. Rows keep the
    order of ``cases``. ``label`` picks the predictions' tumour label, ``ref_label`` the references'.
    A ``pred_sources`` column (lists of CT files, from :func:`amtlib.dicom.predictions.pair_predictions`)
    marks DICOM SEG/RTSTRUCT predictions; ``segment`` names their tumour segment or ROI. ``extra``
    (:func:`extra_metrics`) adds boundary metrics and the per-lesion quality; the default scores the paper's.
    """
    from amtlib.progress import Progress

    thr = lesions.iou_thresholds(thresholds)
    options = {"thresholds": thr, "min_pred_voxels": int(min_pred_voxels), "connectivity": int(connectivity),
               "label": label, "resample_pred": bool(resample_pred), "ref_label": ref_label, "segment": segment,
               "extra": extra}
    sources = cases["pred_sources"] if "pred_sources" in cases else pd.Series([None] * len(cases), index=cases.index)
    jobs = [(str(r.case_id), None if _empty(r.pred_path) else str(r.pred_path), str(r.ref_path),
             [str(f) for f in src] if isinstance(src, (list, tuple)) and src else None)
            for r, src in zip(cases.itertuples(index=False), sources)]
    for cid, pred_path, _, _ in jobs:
        if pred_path is None:
            warnings.warn(f"case {cid}: no prediction; scored as an empty prediction", stacklevel=2)
    results: list[tuple[dict, dict]] = []
    with Progress(len(jobs), "evaluate", unit="case", enabled=progress) as bar:
        if workers <= 1:
            for job in jobs:
                results.append(_evaluate_one(*job, options))
                bar.update()
        else:
            with process_pool(workers) as pool:
                futures = [pool.submit(_evaluate_one, *job, options) for job in jobs]
                for f in futures:
                    f.add_done_callback(lambda _: bar.update())
                results = [f.result() for f in futures]
    per_case = pd.DataFrame([row for row, _ in results], columns=[*PER_CASE_COLUMNS, *extra.columns()])
    meta = [c for c in META_COLUMNS if c in cases]
    if meta:
        for c in meta:
            per_case[c] = cases[c].to_numpy()
        per_case["size_bin"] = per_case["max_axial_diameter_mm"].map(subgroups.size_bin)
    counts = pd.DataFrame({
        "case_id": np.repeat([r["case_id"] for r, _ in results], len(thr)),
        "iou_threshold": np.tile(thr, len(results)),
        **{k: np.concatenate([c[k] for _, c in results]) if results else np.zeros(0, int) for k in ("tp", "fp", "fn")},
        "n_ref_lesions": np.repeat([r["n_ref_lesions"] for r, _ in results], len(thr)),
        "n_pred_lesions": np.repeat([r["n_pred_lesions"] for r, _ in results], len(thr)),
        "fp_no_overlap": np.concatenate([c["fp_no_overlap"] for _, c in results]) if results else np.zeros(0, int),
    }, columns=list(LESION_COUNT_COLUMNS))
    pairs = panoptic.pairs_frame({"case_id": r["case_id"], **p} for r, c in results for p in c["pairs"]) if extra.pq else None
    return Evaluation(per_case, counts, pairs, np.array([c["n_voxels"] for _, c in results], dtype=np.int64), extra,
                      int(min_pred_voxels), int(connectivity))


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or str(v) == ""


def _nifti_files(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise AmtError(folder, f"{what} folder not found", "give an existing folder of <case_id>.nii.gz files")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        suffix = next((s for s in NIFTI_SUFFIXES if p.name.endswith(s)), None)
        if p.is_file() and suffix:
            case = p.name[: -len(suffix)]
            if case in out:
                raise AmtError(folder, f"{what} of case {case} is there twice: {out[case].name} and {p.name}",
                               "keep one of them")
            out[case] = p
        elif p.is_file() and not p.name.startswith(".") and not _nnunet_side_file(p):
            warnings.warn(f"{p}: not a NIfTI file (.nii.gz/.nii); ignored", stacklevel=3)
    return out


def _nnunet_side_file(path: Path) -> bool:
    """An nnU-Net prediction folder's own files (plans, arguments, probabilities): not masks, not worth a warning."""
    return path.name in NNUNET_SIDE_FILES or (path.suffix in (".npz", ".pkl") and
                                              any((path.parent / (path.stem + s)).is_file() for s in NIFTI_SUFFIXES))


def _no_match_problem(pred_dir: Path, preds: dict[str, Path], refs: dict[str, Path]) -> str:
    """Why a prediction folder matches no reference: empty, misnamed files, or masks in subfolders."""
    nested = sorted(d.name + "/" for d in pred_dir.iterdir() if d.is_dir() and any(
        f.name.endswith(NIFTI_SUFFIXES) for f in d.rglob("*")))
    ref_eg = next(iter(refs)) + ".nii.gz"
    if preds:
        names = ", ".join(p.name for p in list(preds.values())[:3])
        problem = f"none of its {len(preds)} NIfTI files is named after a reference case (e.g. {names}; references e.g. {ref_eg})"
    else:
        problem = "holds no NIfTI files"
    if nested:
        problem += f"; subfolders with NIfTI files: {', '.join(nested[:5])} (give one of them as --pred)"
    return problem


def reference_files(ref_dir: str | Path) -> dict[str, Path]:
    """case id -> reference mask ``<case_id>.nii.gz`` of a folder; raises :class:`AmtError` when it holds none."""
    refs = _nifti_files(Path(ref_dir), "reference")
    if not refs:
        raise AmtError(ref_dir, "no reference masks (<case_id>.nii.gz) found", "give the folder of reference masks as --ref")
    return refs


def pair_folders(pred_dir: str | Path, ref_dir: str | Path) -> pd.DataFrame:
    """Pair ``<case_id>.nii.gz`` files of two folders by name: ``case_id, pred_path, ref_path``.

    Every reference is kept (pred_path None when the prediction is missing; one warning counts them);
    a prediction without reference is ignored with a warning; other files are ignored with a warning.
    Raises :class:`~amtlib.errors.AmtError` when a folder is missing, the reference folder holds no
    NIfTI file, no prediction matches any reference case, or a case is there as both ``.nii`` and ``.nii.gz``.
    """
    preds = _nifti_files(Path(pred_dir), "prediction")
    refs = reference_files(ref_dir)
    if not set(preds) & set(refs):
        raise AmtError(pred_dir, _no_match_problem(Path(pred_dir), preds, refs),
                       "name each prediction <case_id>.nii.gz as its reference is named")
    orphans = sorted(set(preds) - set(refs))
    if orphans:
        warnings.warn(f"{len(orphans)} prediction(s) without reference ignored: {', '.join(orphans[:10])}"
                      f"{' ...' if len(orphans) > 10 else ''}", stacklevel=2)
    missing = [c for c in refs if c not in preds]
    if missing:
        warnings.warn(f"{len(missing)} of {len(refs)} reference cases have NO prediction in {pred_dir} and are scored "
                      f"as empty predictions (Dice 0): {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}",
                      stacklevel=2)
    return pd.DataFrame({"case_id": list(refs), "pred_path": [str(preds[c]) if c in preds else None for c in refs],
                         "ref_path": [str(p) for p in refs.values()]})


def read_clinical(path: str | Path) -> pd.DataFrame:
    """Case metadata CSV (``case_id, manufacturer, histology`` [, ``split``]); the manifest qualifies."""
    columns = "give a CSV with case_id, manufacturer and histology (the cohort's manifest.csv has them)"
    df = io.read_csv(path, {"case_id": str}, "clinical CSV", columns)
    need = {"case_id", "manufacturer", "histology"}
    if not need <= set(df.columns):
        raise AmtError(path, f"clinical CSV needs columns {sorted(need)}; has {list(df.columns)}", columns)
    return df[["case_id", *[c for c in META_COLUMNS if c in df.columns]]]


def attach_clinical(cases: pd.DataFrame, clinical: pd.DataFrame) -> pd.DataFrame:
    """Add the metadata columns of ``clinical`` to ``cases`` by ``case_id``; warn about cases without."""
    cols = [c for c in clinical.columns if c != "case_id" and c not in cases.columns]
    out = cases.merge(clinical[["case_id", *cols]].drop_duplicates("case_id"), on="case_id", how="left")
    lacking = sorted(set(cases["case_id"]) - set(clinical["case_id"]))
    if lacking:
        warnings.warn(f"{len(lacking)} case(s) without clinical metadata (left out of subgroups): "
                      f"{', '.join(lacking[:10])}", stacklevel=2)
    return out


def run_cases(run_dir: str | Path, split: str = "external_test") -> pd.DataFrame:
    """Cases of one split of a pipeline run: ``case_id, pred_path, ref_path, manufacturer, histology, split``.

    Reads ``01_cohort/manifest.csv`` (reference = ``mask_path`` relative to the manifest folder) and
    ``02_split/split.csv``; predictions are ``03_train/predictions/<case_id>.nii.gz`` (None if absent).
    """
    from amtlib.paths import RunPaths

    P = RunPaths(run_dir)
    for f in (P.manifest, P.split_csv):
        if not f.is_file():
            raise AmtError(f, "not found", "run the earlier steps (01_cohort, 02_split) first")
    manifest = pd.read_csv(P.manifest, dtype={"case_id": str})
    split_df = pd.read_csv(P.split_csv, dtype={"case_id": str})
    ids = split_df.loc[split_df["split"] == split, "case_id"]
    if ids.empty:
        raise AmtError(P.split_csv, f"no case in split {split!r}", f"splits are {sorted(split_df['split'].unique())}")
    m = manifest.drop(columns=["split"], errors="ignore").merge(split_df[["case_id", "split"]], on="case_id")
    m = m[m["case_id"].isin(set(ids))].sort_values("case_id").reset_index(drop=True)
    pred = [P.predictions_dir / f"{c}.nii.gz" for c in m["case_id"]]
    if not any(p.is_file() for p in pred):
        raise AmtError(P.predictions_dir, f"no prediction for any of the {len(pred)} {split} cases",
                       "run step 03_train first (amt run --only 03_train)")
    return pd.DataFrame({
        "case_id": m["case_id"],
        "pred_path": [str(p) if p.is_file() else None for p in pred],
        "ref_path": [str((P.manifest.parent / mp).resolve()) for mp in m["mask_path"]],
        "manufacturer": m["manufacturer"], "histology": m["histology"], "split": m["split"],
    })


def write_outputs(
    ev: Evaluation, out_dir: str | Path, n_resamples: int = 2000, ci_level: float = 0.95, seed: int = 0,
) -> dict[str, Path]:
    """Write ``per_case.csv``, ``lesion_counts.csv``, ``froc.csv`` and, with metadata, ``table3.csv``
    and ``table4.csv`` into ``out_dir`` (atomic writes); return the paths by name.

    With boundary metrics also ``boundary_table.csv`` (median [Q1, Q3] and infinite count per
    subgroup); with ``pq`` also ``lesion_pairs.csv``; with either, ``conventions.csv`` (every convention used).
    """
    out = Path(out_dir)
    paths = {"per_case": io.write_csv(out / "per_case.csv", ev.per_case),
             "lesion_counts": io.write_csv(out / "lesion_counts.csv", ev.lesion_counts)}
    if ev.extra.boundary:
        paths["boundary_table"] = io.write_csv(out / "boundary_table.csv", boundary.boundary_table(ev.per_case))
    if ev.extra.metrics:
        paths["conventions"] = io.write_csv(out / "conventions.csv",
                                            conventions_table(ev.extra, ev.min_pred_voxels, ev.connectivity))
    if ev.lesion_pairs is not None:
        paths["lesion_pairs"] = io.write_csv(out / "lesion_pairs.csv", ev.lesion_pairs)
    froc = stats.froc_curve(ev.lesion_counts, n_resamples, ci_level, seed)
    paths["froc"] = io.write_csv(out / "froc.csv", froc)
    if any(c in ev.per_case for c in ("manufacturer", "histology")):
        paths["table3"] = io.write_csv(out / "table3.csv", stats.table3(ev.per_case, n_resamples, ci_level, seed))
        paths["table4"] = io.write_csv(
            out / "table4.csv",
            stats.table4(ev.per_case, ev.lesion_counts, n_resamples=n_resamples, ci_level=ci_level, seed=seed))
    return paths


CLI_DEFINITIONS = """definitions (Takemura et al. 2026, Methods; each a parameter with this default):
  voxel metrics per case: Dice 2TP/(2TP+FP+FN), IoU TP/(TP+FP+FN), precision TP/(TP+FP), recall TP/(TP+FN);
    a 0 denominator gives NaN, left out of means and counted
  lesions: 26-connected 3D components; predicted components < 10 voxels removed, references kept
  matching per case and IoU threshold t (0.05..0.95): one-to-one, most pairs with IoU > t, then largest
    total IoU (Hungarian); matched prediction = TP, other predictions = FP, unmatched references = FN
  sensitivity pooled over reference lesions; FP/scan = all FP / scans; SD and percentile 95% CI from a
    seeded case bootstrap (per-case metrics: mean +- SD, bootstrap CI of the mean)
  subgroups: vendor (DICOM Manufacturer), size by max axial diameter (<50, 50-80, >80 mm), histology

boundary metrics (not in the paper; --metrics hd95,assd,nsd; every convention in conventions.csv):
  boundary voxel = foreground voxel with a 6-neighbour in background; distances between voxel centres
    to the nearest boundary voxel of the other mask, in mm with the image's anisotropic spacing
  hd95_mm = larger of the two directed 95th percentiles (linear interpolation); assd_mm = mean of the
    distances pooled over both directions; nsd_<tau>mm = fraction of pooled boundary voxels within tau
    (distance <= tau; --nsd-tolerance-mm, default 2)
  both masks empty: NaN (left out, counted); one empty: hd95/assd inf, nsd 0; boundary_table.csv gives
    median [Q1, Q3] of hd95/assd and the number of infinite cases
per-lesion quality (--metrics pq, at --pq-iou-threshold, default 0.5, the matching above):
  lesion_pairs.csv: Dice and IoU of each matched pair; per case and in summary.json
  PQ = SQ x RQ, RQ = TP / (TP + FP/2 + FN/2), SQ = mean IoU of matched pairs

outputs in --out: per_case.csv, lesion_counts.csv, froc.csv, summary.json (also in nnU-Net v2's schema:
  metric_per_case, mean, foreground_mean); with --clinical table3.csv and table4.csv (regenerated
  beside the paper's values); with --metrics conventions.csv, and boundary_table.csv (boundary
  metrics) or lesion_pairs.csv (pq). --out must be new, empty or an earlier amt evaluate output
  folder, whose outputs are all replaced (none is left from the earlier run).
labels: --label N picks the tumour label of the predictions only; --ref-label M that of the references.
"""


#: Examples at the end of ``amt evaluate --help``.
CLI_EXAMPLES = """examples:
  amt evaluate --pred runs/demo/03_train/predictions --ref runs/demo/01_cohort/masks --out eval/ \\
               --clinical runs/demo/01_cohort/manifest.csv
  amt evaluate --pred their_seg_files/ --sources runs/demo/01_cohort/sources.json --ref runs/demo/01_cohort/masks --out eval/"""


def build_parser() -> argparse.ArgumentParser:
    from amtlib.clihelp import HelpFormatter

    p = argparse.ArgumentParser(
        prog="amt evaluate",
        description="Score predicted tumour masks against reference masks (<case_id>.nii.gz in two folders; predictions "
                    "may instead be DICOM SEG/RTSTRUCT files, with --sources): "
                    "voxel-wise Dice/IoU/precision/recall per case, lesion-wise IoU-sweep FROC with case "
                    "bootstrap, and Tables 3-4 by vendor, size and histology when --clinical is given.",
        epilog=CLI_EXAMPLES + "\n\n" + CLI_DEFINITIONS, formatter_class=HelpFormatter)
    p.add_argument("--pred", required=True, type=Path,
                   help="folder of predicted masks <case_id>.nii.gz, or (with --sources) of DICOM SEG/RTSTRUCT files, any names")
    p.add_argument("--ref", required=True, type=Path, help="folder of reference masks <case_id>.nii.gz")
    p.add_argument("--sources", type=Path,
                   help="the predictions are DICOM SEG/RTSTRUCT: where their CT series are, a cohort's 01_cohort/sources.json "
                        "or a DICOM folder (then --clinical gives each case's series_uid)")
    p.add_argument("--dicom-kind", choices=("seg", "rtstruct"), help="with --sources: read only this kind of prediction file")
    p.add_argument("--segment", help="with --sources: the tumour's SEG segment (label or number) or RTSTRUCT ROI name "
                                     "(default: the only one)")
    p.add_argument("--out", required=True, type=Path, help="output folder (the only place written)")
    p.add_argument("--clinical", type=Path, help="CSV with case_id, manufacturer, histology (manifest.csv qualifies)")
    p.add_argument("--resample-pred", action="store_true",
                   help="resample predictions onto the reference grid (nearest neighbour) when geometry differs")
    p.add_argument("--label", type=int,
                   help="tumour label of the PREDICTIONS when they are not 0/1 (references are read as 0/1)")
    p.add_argument("--ref-label", type=int, help="tumour label of the REFERENCES when they are not 0/1")
    p.add_argument("--min-lesion-voxels", type=int, default=lesions.MIN_PRED_VOXELS,
                   help="drop predicted components smaller than this (default 10)")
    p.add_argument("--connectivity", type=int, default=lesions.CONNECTIVITY, choices=(6, 18, 26),
                   help="3D connectivity of lesions (default 26)")
    p.add_argument("--metrics", default="",
                   help="extra metrics, comma-separated: hd95, assd, nsd (boundary) and pq (per-lesion quality); "
                        "the paper's dice, iou, precision, recall are always computed")
    p.add_argument("--nsd-tolerance-mm", default=",".join(f"{t:g}" for t in boundary.NSD_TOLERANCE_MM),
                   help="NSD tolerance(s) tau in mm, comma-separated (default 2): columns nsd_<tau>mm")
    p.add_argument("--pq-iou-threshold", type=float, default=panoptic.PQ_IOU_THRESHOLD,
                   help="lesion IoU threshold of the per-lesion quality (--metrics pq; default 0.5)")
    p.add_argument("--bootstrap", type=int, default=2000, help="case-bootstrap resamples (default 2000)")
    p.add_argument("--ci-level", type=float, default=0.95, help="confidence level (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--workers", type=int, default=1, help="cases evaluated in parallel (default 1)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def claim_out_dir(out: Path) -> list[Path]:
    """Check that ``amt evaluate`` may write into ``out``; return its stale outputs (removed later).

    ``out`` may be missing, empty, or hold only :data:`OUTPUT_FILES` (and hidden temporary files) of
    an earlier evaluation. It must be writable: a probe file is created and removed (and a folder
    created for the probe is removed again, so an error later leaves nothing behind). Raises
    :class:`~amtlib.errors.AmtError` naming the folder otherwise.
    """
    if out.exists() and not out.is_dir():
        raise AmtError(out, "--out is a file, not a folder", "give a new or empty folder as --out")
    stale: list[Path] = []
    if out.is_dir():
        foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir()
                         if not p.name.startswith(".") and p.name not in OUTPUT_FILES)
        if foreign:
            raise AmtError(out, f"--out holds files amt evaluate did not write ({', '.join(foreign[:5])}"
                           f"{' ...' if len(foreign) > 5 else ''})", "give a new or empty folder as --out")
        stale = [out / n for n in OUTPUT_FILES if (out / n).is_file()]
    first_new = next((p for p in [out, *out.parents][::-1] if not p.exists()), None)
    try:
        out.mkdir(parents=True, exist_ok=True)
        io.check_writable(out)
    except OSError as exc:
        raise AmtError(out, f"cannot write into --out ({exc.strerror or exc})",
                       "choose a folder you can write to, with free space") from None
    finally:
        if first_new is not None and first_new.is_dir():
            shutil.rmtree(first_new, ignore_errors=True)
    return stale


def write_evaluation(ev: Evaluation, out: Path, stale: Sequence[Path], summary: dict[str, Any], n_resamples: int,
                     ci_level: float, seed: int) -> dict[str, Path]:
    """Replace the outputs of ``out`` as a whole: stale ones removed, new ones written, ``summary.json`` last.

    A run interrupted or failing midway leaves no ``summary.json``; a disk-full or permission error
    is an :class:`~amtlib.errors.AmtError` naming the folder.
    """
    try:
        for path in sorted(stale, key=lambda p: p.name != "summary.json"):  # the summary goes first
            path.unlink(missing_ok=True)
        paths = write_outputs(ev, out, n_resamples, ci_level, seed)
        paths["summary"] = io.write_json(out / "summary.json", {**summary, "outputs": sorted(p.name for p in paths.values())})
    except OSError as exc:
        raise AmtError(out, f"writing the results failed ({exc.strerror or exc}); no summary.json was written",
                       "free disk space or fix the permissions, then run again") from None
    return paths


def cli_main(argv: list[str] | None = None) -> int:
    """``amt evaluate``: score a folder of predictions against a folder of references; exit code 0/2."""
    from amtlib.errors import debug_requested, run_guarded

    argv = list(sys.argv[1:] if argv is None else argv)
    return run_guarded("amt evaluate", _cli, argv, debug_requested(argv))


def _cli(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        sys.stderr.write(f"amt evaluate: warning: {message}\n")

    with warnings.catch_warnings(), contextlib.ExitStack() as hold:
        warnings.simplefilter("always")
        warnings.showwarning = show
        extra = _checked_options(args)
        out = args.out.resolve()
        hold.enter_context(io.output_lock(out, "amt evaluate"))  # a second one into this folder is refused at once
        stale = claim_out_dir(out)
        cases = _cli_cases(args)
        ev = evaluate_cases(cases, None, args.min_lesion_voxels, args.connectivity, args.label,
                            args.resample_pred, args.workers, progress=not args.no_progress, ref_label=args.ref_label,
                            segment=args.segment, extra=extra)
        missing = ev.per_case.loc[ev.per_case["pred_missing"], "case_id"].tolist()
        paths = write_evaluation(ev, out, stale, {
            "n_cases": len(ev.per_case), "missing_predictions": missing,
            "pred_dir": str(args.pred.resolve()), "ref_dir": str(args.ref.resolve()),
            "sources": str(args.sources.resolve()) if args.sources else None, "dicom_kind": args.dicom_kind,
            "segment": args.segment,
            "clinical": str(args.clinical.resolve()) if args.clinical else None,
            "min_lesion_voxels": args.min_lesion_voxels, "connectivity": args.connectivity,
            "bootstrap": args.bootstrap, "ci_level": args.ci_level, "seed": args.seed,
            "label": args.label, "ref_label": args.ref_label, "resample_pred": args.resample_pred,
            "iou_thresholds": lesions.IOU_THRESHOLDS.tolist(),
            "metrics": [*VOXEL_METRICS, *extra.metrics], "nsd_tolerance_mm": list(extra.nsd_tolerance_mm),
            "pq_iou_threshold": extra.pq_threshold,
            **summary_extras(ev, cases),
        }, args.bootstrap, args.ci_level, args.seed)
    at = pd.read_csv(paths["froc"]).set_index("iou_threshold")
    summary = (f"{len(ev.per_case)} cases ({len(missing)} without prediction){' scored as empty' if missing else ''}; "
               f"mean Dice {ev.per_case['dice'].mean():.3f}; sensitivity {at.loc[0.1, 'sensitivity']:.3f} / "
               f"{at.loc[0.5, 'sensitivity']:.3f} and FP/scan {at.loc[0.1, 'fp_per_scan']:.3f} / "
               f"{at.loc[0.5, 'fp_per_scan']:.3f} at IoU 0.1 / 0.5; wrote {', '.join(p.name for p in paths.values())} to {out}")
    sys.stdout.write(summary + "\n")
    if extra.metrics:
        sys.stdout.write(extra_summary_line(ev) + "\n")
    return 0


def _checked_options(args: argparse.Namespace) -> Any:
    """Refuse option values and combinations that cannot work, before any file is read; returns the
    parsed ``--metrics`` request (:func:`extra_metrics`)."""
    for option, value in (("--min-lesion-voxels", args.min_lesion_voxels), ("--seed", args.seed)):
        if value < 0:
            raise AmtError(option, f"{value} is negative", "give 0 or more")
    if args.bootstrap < 1 or not 0 < args.ci_level < 1:
        raise AmtError("--bootstrap/--ci-level", "--bootstrap must be >= 1 and --ci-level in (0, 1)", "e.g. --bootstrap 2000 --ci-level 0.95")
    out = args.out.resolve()
    if out in (args.pred.resolve(), args.ref.resolve()):
        raise AmtError(out, "--out must differ from the --pred and --ref folders", "give a new folder as --out")
    if args.sources is not None and args.label is not None:
        raise AmtError("--label", "applies to NIfTI predictions (a label value); DICOM predictions name a segment",
                       "use --segment NAME (a SEG segment label or number, or an RTSTRUCT ROI name)")
    if (args.dicom_kind or args.segment) and args.sources is None:
        raise AmtError("--dicom-kind/--segment", "apply to DICOM predictions only",
                       "give --sources (the cohort's sources.json or the DICOM folder of the CT series)")
    try:
        return extra_metrics(args.metrics, args.nsd_tolerance_mm, args.pq_iou_threshold)
    except ValueError as exc:
        raise AmtError("--metrics/--nsd-tolerance-mm/--pq-iou-threshold", str(exc),
                       "e.g. --metrics hd95,assd,nsd,pq --nsd-tolerance-mm 1,2 --pq-iou-threshold 0.5") from None


def _cli_cases(args: argparse.Namespace) -> pd.DataFrame:
    """The case table of the command: NIfTI/NRRD folders paired by file name, or DICOM predictions
    paired through the CT series they reference (``--sources``), with ``--clinical`` columns attached."""
    if args.sources is not None:
        from amtlib.dicom import predictions as dicom_predictions

        refs = reference_files(args.ref)
        table = io.read_csv(args.clinical, {"case_id": str, "series_uid": str}) if args.clinical else None
        sources = dicom_predictions.load_sources(args.sources, table)
        cases = dicom_predictions.pair_predictions(args.pred, refs, sources, args.dicom_kind)
    else:
        cases = pair_folders(args.pred, args.ref)
    if args.clinical is not None:
        cases = attach_clinical(cases, read_clinical(args.clinical))
    return cases


def summary_extras(ev: Evaluation, cases: pd.DataFrame) -> dict[str, Any]:
    """The ``summary.json`` keys beyond the run's settings: nnU-Net v2's schema and, with ``pq``, the pooled PQ."""
    from amtlib.evaluation import nnunet

    out = nnunet.summary(ev.per_case, cases, ev.n_voxels, ev.extra.columns())
    if ev.lesion_pairs is not None:
        out["panoptic_quality"] = pooled_lesion_quality(ev)
    return out


def pooled_lesion_quality(ev: Evaluation) -> dict[str, float]:
    """PQ, SQ, RQ pooled over the cases of ``ev`` at its ``pq_threshold`` (:func:`panoptic.pooled_quality`)."""
    if ev.lesion_pairs is None:
        raise ValueError("the evaluation has no per-lesion quality; score it with extra_metrics('pq')")
    return {"iou_threshold": ev.extra.pq_threshold,
            **panoptic.pooled_quality(ev.per_case.assign(**case_lesion_counts(ev)), ev.lesion_pairs)}


def case_lesion_counts(ev: Evaluation) -> dict[str, np.ndarray]:
    """Per-case lesion ``tp, fp, fn`` at the per-lesion quality's threshold (from the pairs and component counts)."""
    pairs = ev.lesion_pairs if ev.lesion_pairs is not None else panoptic.pairs_frame([])
    tp = ev.per_case["case_id"].map(pairs.groupby("case_id").size()).fillna(0).to_numpy(dtype=int)
    return {"tp": tp, "fp": ev.per_case["n_pred_lesions"].to_numpy(dtype=int) - tp,
            "fn": ev.per_case["n_ref_lesions"].to_numpy(dtype=int) - tp}


def extra_summary_line(ev: Evaluation) -> str:
    """One line of the extra metrics for the terminal: median HD95/ASSD, infinite cases, mean NSD, pooled PQ."""
    pc, parts = ev.per_case, []
    for c in ("hd95_mm", "assd_mm"):
        if c in pc:
            s = boundary.summarise(pc[c])
            parts.append(f"{c} median {s['median']:.2f} [{s['q1']:.2f}, {s['q3']:.2f}] ({s['n_inf']} infinite)")
    parts += [f"{c} mean {pc[c].mean():.3f}" for c in pc.columns if c.startswith("nsd_")]
    if ev.lesion_pairs is not None:
        q = pooled_lesion_quality(ev)
        parts.append(f"PQ {q['pq']:.3f} = SQ {q['sq']:.3f} x RQ {q['rq']:.3f} at lesion IoU > {ev.extra.pq_threshold:g}")
    return "; ".join(parts)
