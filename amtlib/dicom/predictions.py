"""Another model's predictions as DICOM SEG or RT Structure Sets, for ``amt evaluate``.

Paper: Evaluation (the same metrics for any model's masks). Clinical AI products hand their masks over
as DICOM SEG or RTSTRUCT, named as their tool names them. Each file found under the prediction folder
(any depth, any name; told apart by content) is paired with a case through the CT series it
references (SeriesInstanceUID), and read onto that series' grid with :mod:`amtlib.dicom.annotations` (the
same readers the cohort uses for reference annotations, tilted gantries included).

Where the series are (``sources``):

- a cohort's ``01_cohort/sources.json`` (what ``amt run`` writes: case id -> series UID and files), or
- a DICOM folder, scanned by SeriesInstanceUID, with case ids from a table holding ``case_id`` and
  ``series_uid`` (the cohort's ``manifest.csv`` qualifies).

Nothing is guessed: two prediction files for one case are refused (name the kind with ``kind``, or
keep one file per series); a file whose series is no case's is left out with a warning; files that are
not SEG/RTSTRUCT are counted in a warning; a case without prediction is scored as an empty prediction
(with a warning), as for NIfTI predictions.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from amtlib.errors import AmtError

#: Kinds of prediction objects (``--dicom-kind``).
KINDS: tuple[str, ...] = ("seg", "rtstruct")


def load_sources(sources: str | Path, clinical: pd.DataFrame | None = None) -> dict[str, dict[str, Any]]:
    """case id -> ``{"series_uid": uid, "files": [...]}`` from a ``sources.json`` or a DICOM folder.

    A folder is scanned (headers only) and its series matched to ``clinical``'s ``series_uid`` column.
    Raises :class:`AmtError` for a missing path, an unreadable JSON, or a folder without a case table.
    """
    path = Path(sources)
    if path.is_file():
        try:
            known = json.loads(path.read_text())
            return {str(c): {"series_uid": str(v["series_uid"]), "files": list(dict.fromkeys(v["files"]))}
                    for c, v in known.items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise AmtError(path, "not a sources.json (case id -> series_uid and files)",
                           "give the cohort's 01_cohort/sources.json or the DICOM folder of the CT series") from None
    if not path.is_dir():
        raise AmtError(path, "not found", "give the cohort's 01_cohort/sources.json or the DICOM folder of the CT series")
    if clinical is None or not {"case_id", "series_uid"} <= set(clinical.columns):
        raise AmtError(path, "a DICOM folder needs the case of each series",
                       "give --clinical with case_id and series_uid columns (the cohort's manifest.csv has them)")
    from amtlib.dicom.dicomio import scan_tree

    series = scan_tree(path).series
    files = {str(r["series_uid"]): list(r["files"]) for _, r in series.iterrows()}
    return {str(r.case_id): {"series_uid": str(r.series_uid), "files": files[str(r.series_uid)]}
            for r in clinical.itertuples(index=False) if str(r.series_uid) in files}


def find_predictions(pred_dir: str | Path, kind: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Every SEG/RTSTRUCT under ``pred_dir``: ``path, kind, series_uid`` (sorted by path), and the
    files that are not such objects (hidden files are skipped). ``kind`` keeps one kind only."""
    from amtlib.dicom.annotations import annotation_header

    if kind is not None and kind not in KINDS:
        raise AmtError("--dicom-kind", f"{kind!r} is not a kind of prediction object", f"use one of {', '.join(KINDS)}")
    root = Path(pred_dir)
    if not root.is_dir():
        raise AmtError(root, "prediction folder not found", "give the folder of DICOM SEG/RTSTRUCT predictions as --pred")
    rows, other = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        found, uid = annotation_header(path)
        if found is None:
            other.append(str(path))
            continue
        if kind is not None and found != kind:
            continue
        rows.append({"path": str(path), "kind": found, "series_uid": uid})
    return pd.DataFrame(rows, columns=["path", "kind", "series_uid"]), other


def pair_predictions(pred_dir: str | Path, refs: dict[str, Path], sources: dict[str, dict[str, Any]],
                     kind: str | None = None) -> pd.DataFrame:
    """``case_id, pred_path, ref_path, pred_sources`` for every reference case (pred_path None when no
    prediction names its series; ``pred_sources`` the list of the series' files, else None).

    Raises :class:`AmtError` when no file is a SEG/RTSTRUCT of a known case's series or a case has two.
    """
    found, other = find_predictions(pred_dir, kind)
    if other:
        warnings.warn(f"{len(other)} file(s) under {pred_dir} are not DICOM SEG/RTSTRUCT and were ignored, e.g. "
                      f"{', '.join(Path(p).name for p in other[:3])}", stacklevel=2)
    case_of = {v["series_uid"]: c for c, v in sources.items() if c in refs}
    found["case_id"] = found["series_uid"].map(case_of)
    unnamed = found[found["series_uid"].isna()]
    unknown = found[found["series_uid"].notna() & found["case_id"].isna()]
    if len(unnamed):
        warnings.warn(f"{len(unnamed)} prediction(s) name no CT series and were ignored: "
                      f"{', '.join(unnamed['path'].head(5))}", stacklevel=2)
    if len(unknown):
        warnings.warn(f"{len(unknown)} prediction(s) reference a series of no reference case and were ignored: "
                      f"{', '.join(unknown['path'].head(5))}", stacklevel=2)
    found = found[found["case_id"].notna()]
    if found.empty:
        what = f"{kind.upper()} " if kind else ""
        raise AmtError(pred_dir, f"no {what}DICOM SEG/RTSTRUCT file references the CT series of a reference case "
                       f"({len(refs)} reference cases, {len(sources)} series in the sources)",
                       "give the predictions of these series as --pred and the cohort's sources.json (or DICOM folder) as --sources")
    twice = found[found.duplicated("case_id", keep=False)]
    if len(twice):
        case = str(twice["case_id"].iloc[0])
        names = ", ".join(twice.loc[twice["case_id"] == case, "path"])
        raise AmtError(pred_dir, f"case {case} has {int((twice['case_id'] == case).sum())} predictions ({names})",
                       "keep one per series, or choose the kind with --dicom-kind seg|rtstruct")
    by_case = found.set_index("case_id")["path"].to_dict()
    missing = [c for c in refs if c not in by_case]
    if missing:
        warnings.warn(f"{len(missing)} of {len(refs)} reference cases have NO prediction in {pred_dir} and are scored "
                      f"as empty predictions (Dice 0): {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}",
                      stacklevel=2)
    return pd.DataFrame({
        "case_id": list(refs),
        "pred_path": [by_case.get(c) for c in refs],
        "ref_path": [str(p) for p in refs.values()],
        "pred_sources": [list(sources[c]["files"]) if c in by_case else None for c in refs],
    })


def read_prediction(path: str | Path, source_files: Sequence[str], segment: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A SEG/RTSTRUCT prediction on its CT series' grid: ``(bool mask (z, y, x), voxel -> RAS affine)``.

    ``segment``: the SEG segment (label, or number when all digits) or RTSTRUCT ROI name; None takes the
    only one. The series is read as the cohort reads it (a tilted gantry resampled). Raises
    :class:`AmtError` naming the file when it cannot be read onto that grid.
    """
    from amtlib.dicom.annotations import AnnotationError, read_annotation
    from amtlib.dicom.dicomio import DicomSeriesError, read_series

    try:
        _, geometry = read_series(list(source_files), tilt_policy="resample")
    except DicomSeriesError as exc:
        raise AmtError(path, f"its CT series cannot be read ({exc})", "check the sources given with --sources") from None
    label: str | int | None = int(segment) if segment is not None and str(segment).isdigit() else segment
    try:
        mask = read_annotation(path, geometry, label)
    except AnnotationError as exc:
        raise AmtError(None, str(exc), "") from None
    return mask.astype(bool), np.asarray(geometry["affine"], dtype=float)
