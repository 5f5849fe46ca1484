"""Failure-mode analysis: top/bottom Dice groups, failure categories and anatomy attribution.

Paper section "Per-case analysis of successes and failures" and "Quantitative analysis of failure
modes": the bottom and top 10% of external-test cases by Dice (17 of 164 each) are compared, and the
low-Dice cases are sorted into over-segmentation (false positives in the ascending aorta or a
pericardial effusion), partial under-segmentation and complete misses of small or low-contrast tumours.

Arrays are (z, y, x); spacing is (z, y, x) in mm; volumes in ml; HU for CT values.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy import ndimage

from amtlib.io import load_nifti, same_geometry
from amtlib.geometry import bounding_box

#: Display names of anatomy label codes (architecture.md; TotalSegmentator-style plus generator codes).
#: Lung lobes and ribs are merged because attribution cares about the structure, not the lobe.
STRUCTURE_NAMES: dict[int, str] = {
    **{code: "lung" for code in range(10, 15)},
    15: "oesophagus",
    16: "trachea",
    51: "heart",
    52: "aorta",
    53: "pulmonary vein",
    59: "brachiocephalic vein",
    60: "brachiocephalic vein",
    62: "superior vena cava",
    **{code: "rib" for code in range(92, 116)},
    116: "sternum",
    118: "costal cartilage",
    200: "tumour (label map)",
    201: "pericardial effusion",
    202: "thymic bed",
}
#: Name used for false-positive voxels outside every labelled structure (mediastinal fat, muscle...).
UNLABELLED = "unlabelled"

#: Category names, in the order tables and figures show them.
CATEGORIES: tuple[str, ...] = (
    "complete_miss",
    "under_segmentation",
    "over_segmentation",
    "mixed",
    "other",
    "success",
)


def group_size(n: int, fraction: float = 0.1) -> int:
    """Cases per group: ``ceil(fraction * n)`` (17 of 164 at 10%).

    The product is rounded to 9 decimals first so that e.g. 0.1 x 170 gives 17, not 18 from the
    binary representation of 0.1.
    """
    if not 0 < fraction <= 0.5:
        raise ValueError(f"failure_fraction must be in (0, 0.5], got {fraction}")
    return math.ceil(round(fraction * n, 9))


def select_groups(per_case: pd.DataFrame, fraction: float = 0.1, metric: str = "dice") -> pd.DataFrame:
    """Bottom and top ``fraction`` of cases by ``metric`` (paper: 10% by Dice, N = 17 of 164 each).

    Returns one row per selected case: ``case_id, group`` (``bottom``/``top``), ``rank`` (1 = most
    extreme in its group), the metric, and ``tie_at_cut``. Tie rule: cases are ordered by the metric
    and then by ``case_id`` (ascending, as strings), so each group holds exactly N cases and the result
    does not depend on row order; a member whose metric equals that of a case left out of the group is
    flagged ``tie_at_cut`` and a warning names the count. Cases with a missing metric are left out with
    a warning. Raises ``ValueError`` when fewer than ``2 N`` cases remain (the groups would overlap).
    """
    if metric not in per_case.columns or "case_id" not in per_case.columns:
        raise ValueError(f"per-case table needs columns 'case_id' and {metric!r}; has {list(per_case.columns)}")
    table = per_case[["case_id", metric]].copy()
    table["case_id"] = table["case_id"].astype(str)
    missing = table[metric].isna()
    if missing.any():
        warnings.warn(
            f"{int(missing.sum())} case(s) without a {metric} value left out of the groups: "
            f"{', '.join(table.loc[missing, 'case_id'])}",
            stacklevel=2,
        )
        table = table[~missing]
    n = len(table)
    size = group_size(n, fraction)
    if n < 2 * size or size < 1:
        raise ValueError(
            f"{n} case(s) with a {metric} value: the bottom and top {fraction:.0%} groups need "
            f"{size} case(s) each without overlap, so at least {2 * size}; evaluate more cases or lower failure_fraction"
        )
    groups = []
    for name, ascending in (("bottom", True), ("top", False)):
        ordered = table.sort_values([metric, "case_id"], ascending=[ascending, True], kind="mergesort")
        members, rest = ordered.iloc[:size], ordered.iloc[size:]
        out = members.assign(group=name, rank=np.arange(1, size + 1))
        out["tie_at_cut"] = out[metric].isin(rest[metric])
        n_tied = int(out["tie_at_cut"].sum())
        if n_tied:
            warnings.warn(
                f"{name} group: {n_tied} member(s) share their {metric} with cases left out; "
                "ties broken by case_id",
                stacklevel=2,
            )
        groups.append(out)
    return pd.concat(groups, ignore_index=True)[["case_id", "group", "rank", metric, "tie_at_cut"]]


def categorise(
    per_case: pd.DataFrame,
    low_dice: float = 0.5,
    low_recall: float = 0.5,
    low_precision: float = 0.5,
    failures: "pd.Series | list[str] | set[str] | None" = None,
) -> pd.DataFrame:
    """Failure category of each case from its voxel metrics (paper Fig 6 failure modes).

    A failure is a case with ``dice < low_dice`` or one listed in ``failures`` (the notebook passes
    the bottom Dice group, so the paper's "worst cases" are always categorised); every other case is
    ``success``. A failure is a ``complete_miss`` when prediction and reference do not overlap
    (``tp_voxels == 0`` when given, else ``recall == 0``; an empty prediction counts as a miss);
    ``mixed`` when ``recall < low_recall`` and ``precision < low_precision``; otherwise
    ``under_segmentation`` when recall is the lower of the two (missed tumour dominates) and
    ``over_segmentation`` when precision is (excess dominates). Below Dice 0.5 at least one ratio is
    below 0.5, so with the defaults the lower ratio is the low one. ``other`` is kept for a failure
    that overlaps the reference but has no precision or recall. Returns a copy with a ``category`` column.
    """
    need = {"case_id", "dice", "precision", "recall"}
    if not need <= set(per_case.columns):
        raise ValueError(f"per-case table needs columns {sorted(need)}; missing {sorted(need - set(per_case.columns))}")
    out = per_case.copy()
    dice, recall = out["dice"].astype(float), out["recall"].astype(float)
    precision = out["precision"].astype(float)
    listed = out["case_id"].astype(str).isin({str(c) for c in (failures if failures is not None else [])})
    miss = (out["tp_voxels"] == 0) if "tp_voxels" in out.columns else (recall.fillna(0) == 0)
    low_r, low_p = recall < low_recall, precision < low_precision
    category = np.select(
        [~((dice < low_dice) | listed), miss, low_r & low_p, recall < precision, precision <= recall],
        ["success", "complete_miss", "mixed", "under_segmentation", "over_segmentation"],
        default="other",
    )
    out["category"] = pd.Categorical(category, categories=list(CATEGORIES))
    return out


def attribute_false_positives(
    reference: np.ndarray,
    prediction: np.ndarray,
    anatomy: np.ndarray,
    spacing: tuple[float, float, float],
    names: dict[int, str] | None = None,
) -> pd.DataFrame:
    """Split the false-positive voxels (predicted, not reference) by the anatomy label under them.

    Paper Fig 6a-c: over-segmentation into the ascending aorta or a pericardial effusion. Returns
    ``structure, fp_voxels, fp_ml, fraction`` sorted by voxels (descending, then name); codes without a
    name are reported as ``label <code>``, label 0 as ``unlabelled``. Empty frame when there are no
    false positives. Raises ``ValueError`` when the three arrays differ in shape.
    """
    names = STRUCTURE_NAMES if names is None else names
    if not reference.shape == prediction.shape == anatomy.shape:
        raise ValueError(
            f"reference {reference.shape}, prediction {prediction.shape} and anatomy {anatomy.shape} "
            "must share one shape; resample the label map to the image grid"
        )
    fp = (prediction > 0) & ~(reference > 0)
    codes, counts = np.unique(anatomy[fp], return_counts=True)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows: dict[str, int] = {}
    for code, count in zip(codes.tolist(), counts.tolist()):
        name = UNLABELLED if code == 0 else names.get(int(code), f"label {int(code)}")
        rows[name] = rows.get(name, 0) + int(count)
    table = pd.DataFrame({"structure": list(rows), "fp_voxels": list(rows.values())}, columns=["structure", "fp_voxels"])
    table["fp_ml"] = table["fp_voxels"] * voxel_ml
    total = int(fp.sum())
    table["fraction"] = table["fp_voxels"] / total if total else np.nan
    return table.sort_values(["fp_voxels", "structure"], ascending=[False, True], ignore_index=True)


def structure_mask(anatomy: np.ndarray, structure: str, names: dict[int, str] | None = None) -> np.ndarray:
    """Voxels of the anatomy map whose label has the display name ``structure`` (``unlabelled``: 0)."""
    names = STRUCTURE_NAMES if names is None else names
    codes = [0] if structure == UNLABELLED else [code for code, name in names.items() if name == structure]
    if not codes and structure.startswith("label "):
        codes = [int(structure.removeprefix("label "))]
    return np.isin(anatomy, codes)


def main_structure(attribution: pd.DataFrame, min_fraction: float = 0.2) -> str:
    """The labelled structure holding the most false-positive voxels, if it holds ``>= min_fraction``.

    Unlabelled tissue never wins; returns ``""`` when no labelled structure reaches ``min_fraction``
    (default 0.2: a fifth of the excess) or there are no false positives.
    """
    labelled = attribution[attribution["structure"] != UNLABELLED]
    if labelled.empty or labelled["fraction"].iloc[0] < min_fraction:
        return ""
    return str(labelled["structure"].iloc[0])


def tumour_contrast_hu(
    image: np.ndarray,
    reference: np.ndarray,
    spacing: tuple[float, float, float],
    ring_mm: float = 3.0,
    ring_hu: tuple[float, float] = (-200.0, 400.0),
) -> float:
    """Median HU inside the reference minus median HU in a ``ring_mm`` shell around it.

    Supports the paper's "low-contrast tumours" observation with a number. Shell voxels outside
    ``ring_hu`` (lung air, bone) are left out so the contrast is against mediastinal soft tissue and
    vessels. NaN when the reference is empty or no shell voxel is in range. Works on the bounding box
    of the reference plus the shell, so full CT volumes stay cheap.
    """
    ref = reference > 0
    if not ref.any():
        return float("nan")
    box = bounding_box(ref, [int(math.ceil(ring_mm / s)) + 1 for s in spacing])
    sub_ref, sub_img = ref[box], np.asarray(image[box], dtype=np.float64)
    distance = ndimage.distance_transform_edt(~sub_ref, sampling=spacing)
    shell = (distance > 0) & (distance <= ring_mm) & (sub_img >= ring_hu[0]) & (sub_img <= ring_hu[1])
    if not shell.any():
        return float("nan")
    return float(np.median(sub_img[sub_ref]) - np.median(sub_img[shell]))


@dataclass(frozen=True)
class CaseVolumes:
    """One case's CT (HU), reference, prediction and optional anatomy map on one (z, y, x) grid."""

    case_id: str
    image: np.ndarray
    reference: np.ndarray
    prediction: np.ndarray
    anatomy: np.ndarray | None
    spacing: tuple[float, float, float]
    affine: np.ndarray


def load_case(row: pd.Series) -> CaseVolumes:
    """Read a case from a row with absolute ``image_path, mask_path, pred_path`` (+ ``anatomy_path``).

    Raises ``ValueError`` naming the file when a mask, prediction or label map is not on the image grid.
    """
    image, spacing, affine = load_nifti(row["image_path"])
    volumes = {}
    for key in ("mask_path", "pred_path", "anatomy_path"):
        path = row.get(key)
        if key == "anatomy_path" and (path is None or (isinstance(path, float) and math.isnan(path)) or str(path) == ""):
            volumes[key] = None
            continue
        arr, _, aff = load_nifti(path)
        if not same_geometry(arr.shape, aff, image.shape, affine):
            raise ValueError(
                f"{path}: shape {arr.shape} / affine differ from image {row['image_path']} {image.shape}; "
                "predictions and masks must be written on the image grid"
            )
        volumes[key] = arr
    return CaseVolumes(
        case_id=str(row["case_id"]),
        image=image,
        reference=volumes["mask_path"] > 0,
        prediction=volumes["pred_path"] > 0,
        anatomy=volumes["anatomy_path"],
        spacing=spacing,
        affine=affine,
    )


def case_loader(table: pd.DataFrame) -> Callable[[str], CaseVolumes]:
    """A function ``case_id -> CaseVolumes`` reading the paths of :func:`load_eval_table`'s rows."""
    rows = {str(r["case_id"]): r for _, r in table.iterrows()}

    def load(case_id: str) -> CaseVolumes:
        if case_id not in rows:
            raise ValueError(f"case {case_id!r} is not in the evaluation table")
        return load_case(rows[case_id])

    return load


def load_eval_table(
    manifest_csv: str | Path,
    split_csv: str | Path,
    per_case_csv: str | Path,
    predictions_dir: str | Path,
    eval_split: str = "external_test",
) -> pd.DataFrame:
    """Per-case metrics of ``eval_split`` joined with manifest paths (made absolute) and prediction paths.

    Columns: those of ``per_case.csv`` plus ``image_path, mask_path, anatomy_path, pred_path`` and the
    manifest's ``manufacturer, histology`` when present. Raises ``ValueError`` when the split has no
    case, or when a split case is missing from the per-case table or the manifest.
    """
    manifest_csv = Path(manifest_csv)
    manifest = pd.read_csv(manifest_csv, dtype={"case_id": str}, keep_default_na=False, na_values=[""])
    split = pd.read_csv(split_csv, dtype={"case_id": str})
    per_case = pd.read_csv(per_case_csv, dtype={"case_id": str})
    ids = split.loc[split["split"] == eval_split, "case_id"]
    if ids.empty:
        raise ValueError(f"{split_csv}: no case in split {eval_split!r}; splits are {sorted(split['split'].unique())}")
    for name, frame, path in (("per-case table", per_case, per_case_csv), ("manifest", manifest, manifest_csv)):
        absent = sorted(set(ids) - set(frame["case_id"]))
        if absent:
            raise ValueError(f"{path}: {len(absent)} {eval_split} case(s) missing from the {name}: {', '.join(absent[:5])}")
    table = per_case[per_case["case_id"].isin(ids)].drop(columns=["split"], errors="ignore")
    root = manifest_csv.parent
    paths = manifest[["case_id"]].copy()
    for col in ("image_path", "mask_path", "anatomy_path"):
        values = manifest[col] if col in manifest.columns else pd.Series([""] * len(manifest))
        paths[col] = [str(root / v) if isinstance(v, str) and v else "" for v in values]
    extra = [c for c in ("manufacturer", "histology") if c in manifest.columns and c not in table.columns]
    table = table.merge(paths.join(manifest[extra]), on="case_id", how="left")
    table["pred_path"] = [str(Path(predictions_dir) / f"{c}.nii.gz") for c in table["case_id"]]
    return table.reset_index(drop=True)


def analyse_case(
    vol: CaseVolumes, min_fraction: float = 0.2, ring_mm: float = 3.0
) -> dict[str, object]:
    """False-positive attribution and tumour contrast of one case (one row of ``failure_cases.csv``).

    Keys: ``fp_ml`` (false-positive volume), ``fn_ml``, ``fp_main_structure`` (see
    :func:`main_structure`; empty without an anatomy map), ``fp_structures`` (``name:fraction`` pairs,
    ``;``-joined), ``contrast_hu`` (:func:`tumour_contrast_hu`).
    """
    voxel_ml = float(np.prod(vol.spacing)) / 1000.0
    fp = vol.prediction & ~vol.reference
    out: dict[str, object] = {
        "case_id": vol.case_id,
        "fp_ml": float(fp.sum()) * voxel_ml,
        "fn_ml": float((vol.reference & ~vol.prediction).sum()) * voxel_ml,
        "fp_main_structure": "",
        "fp_structures": "",
        "contrast_hu": tumour_contrast_hu(vol.image, vol.reference, vol.spacing, ring_mm=ring_mm),
    }
    if vol.anatomy is not None and fp.any():
        attribution = attribute_false_positives(vol.reference, vol.prediction, vol.anatomy, vol.spacing)
        out["fp_main_structure"] = main_structure(attribution, min_fraction)
        out["fp_structures"] = ";".join(f"{s}:{f:.2f}" for s, f in zip(attribution["structure"], attribution["fraction"]))
    return out


#: Columns of :func:`analyse_case` rows, so an empty result still has them.
ANALYSIS_COLUMNS: tuple[str, ...] = ("case_id", "fp_ml", "fn_ml", "fp_main_structure", "fp_structures", "contrast_hu")


def analyse_cases(
    case_ids: "pd.Series | list[str]",
    load: Callable[[str], CaseVolumes],
    min_fraction: float = 0.2,
    ring_mm: float = 3.0,
    progress: bool = True,
) -> pd.DataFrame:
    """:func:`analyse_case` for each case id (read one at a time with ``load``), one row per case."""
    from amtlib.progress import track

    ids = [str(c) for c in case_ids]
    rows = [analyse_case(load(c), min_fraction, ring_mm) for c in track(ids, desc="failure cases", unit="case", enabled=progress)]
    return pd.DataFrame(rows, columns=list(ANALYSIS_COLUMNS))


def select_best(table: pd.DataFrame, n: int = 6, min_dice: float = 0.7) -> pd.DataFrame:
    """The ``n`` highest-Dice cases above ``min_dice`` for Fig 5 (paper: six cases with Dice > 0.70).

    Ties are broken by ``case_id``; fewer than ``n`` rows (possibly none) when few cases pass.
    """
    passing = table[table["dice"] > min_dice]
    if len(passing) < n:
        warnings.warn(f"only {len(passing)} case(s) with Dice > {min_dice} for the success figure (wanted {n})", stacklevel=2)
    return passing.sort_values(["dice", "case_id"], ascending=[False, True]).head(n).reset_index(drop=True)


def category_counts(cases: pd.DataFrame, groups: pd.DataFrame | None = None) -> pd.DataFrame:
    """Counts of failure cases by ``category`` and ``fp_main_structure`` (``failure_categories.csv``).

    Only cases whose category is not ``success`` are counted; ``n_in_bottom_group`` counts those that
    are also in the bottom Dice group when ``groups`` is given. Every category appears (count 0 when
    absent) so the table shape does not depend on the cohort.
    """
    failures = cases[cases["category"].astype(str) != "success"].copy()
    if "fp_main_structure" not in failures.columns:
        failures["fp_main_structure"] = ""
    failures["fp_main_structure"] = failures["fp_main_structure"].fillna("").astype(str)
    bottom = set() if groups is None else set(groups.loc[groups["group"] == "bottom", "case_id"])
    failures["in_bottom"] = failures["case_id"].isin(bottom)
    rows = []
    for category in CATEGORIES[:-1]:
        sub = failures[failures["category"].astype(str) == category]
        if sub.empty:
            rows.append({"category": category, "fp_main_structure": "", "n_cases": 0, "n_in_bottom_group": 0})
        for structure, part in sub.groupby("fp_main_structure", sort=True):
            rows.append(
                {
                    "category": category,
                    "fp_main_structure": structure,
                    "n_cases": len(part),
                    "n_in_bottom_group": int(part["in_bottom"].sum()),
                }
            )
    return pd.DataFrame(rows)


def select_examples(
    cases: pd.DataFrame,
    over_structures: tuple[str, ...] = ("aorta", "pericardial effusion"),
    per_category: int = 1,
) -> pd.DataFrame:
    """Example cases per failure category for Fig 6 (the paper shows 3 over- and 5 under-segmentations).

    Over-segmentation: for each of ``over_structures`` present, the case with the largest false-positive
    volume attributed mainly to it, then the largest remaining over-segmentation cases until there are
    ``per_category``. Other categories: the ``per_category`` lowest-Dice cases (ties by ``case_id``).
    Returns ``case_id, category, fp_main_structure, focus`` where ``focus`` names the voxels the
    displayed slice should centre on (``fp``, ``fn`` or ``ref``).
    """
    rows: list[dict] = []
    cases = cases.assign(category=cases["category"].astype(str))
    over = cases[cases["category"] == "over_segmentation"]
    if "fp_main_structure" in over.columns:
        for structure in over_structures:
            hit = over[over["fp_main_structure"] == structure]
            if not hit.empty:
                best = hit.sort_values(["fp_ml", "case_id"], ascending=[False, True]).iloc[0]
                rows.append({"case_id": best["case_id"], "category": "over_segmentation", "fp_main_structure": structure, "focus": "fp"})
    key = ["fp_ml", "case_id"] if "fp_ml" in over.columns else ["dice", "case_id"]
    rest = over[~over["case_id"].isin([r["case_id"] for r in rows])].sort_values(key, ascending=[key[0] == "dice", True])
    for _, best in rest.head(max(per_category - len(rows), 0)).iterrows():
        rows.append({"case_id": best["case_id"], "category": "over_segmentation", "fp_main_structure": best.get("fp_main_structure", ""), "focus": "fp"})
    focus = {"mixed": "fn", "under_segmentation": "fn", "complete_miss": "ref"}
    for category in ("under_segmentation", "mixed", "complete_miss"):
        sub = cases[cases["category"] == category].sort_values(["dice", "case_id"])
        for _, best in sub.head(per_category).iterrows():
            rows.append({"case_id": best["case_id"], "category": category, "fp_main_structure": best.get("fp_main_structure", ""), "focus": focus[category]})
    return pd.DataFrame(rows, columns=["case_id", "category", "fp_main_structure", "focus"])
