"""Radiomics of the reference masks and the top-vs-bottom Dice group comparison.

Paper section "Quantitative analysis of failure modes": shape and first-order features of the
reference-standard masks are extracted with pyradiomics over the original CT (HU) and compared between
the bottom and top 10% of external-test cases by Dice. The paper reports VoxelVolume (p = 0.003),
Maximum3DDiameter (p = 0.025) and TotalEnergy (p = 0.009) as different and Mean (p = 0.42) and Median
(p = 0.33) HU as not; it does not name the test, so the default here is the two-sided Mann-Whitney U
test (Welch's t-test as an option), with Benjamini-Hochberg q-values added.

Units follow pyradiomics: mm, mm^2, mm^3 for shape features and HU for first-order features.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from amtlib.workers import process_pool
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from amtlib.io import write_text
from amtlib.paper import NAMED_FEATURES  # noqa: F401  (the paper's five named features)

#: Tests offered by :func:`compare_groups`.
TESTS: tuple[str, ...] = ("mannwhitney", "welch")

Params = dict[str, Any]


def radiomics_params(
    bin_width: float = 25.0,
    voxel_array_shift: int = 0,
    resampled_spacing_mm: tuple[float, float, float] | None = None,
    label: int = 1,
    minimum_roi_size: int | None = None,
    feature_classes: Iterable[str] = ("shape", "firstorder"),
    diagnostics: bool = True,
) -> Params:
    """pyradiomics parameters: all features of ``feature_classes`` on the original image.

    Defaults are pyradiomics' own (the paper gives none): fixed bin width 25 HU (first-order Entropy
    and Uniformity only), ``voxelArrayShift`` 0 (Energy/TotalEnergy/RMS of the HU values as they are),
    no resampling and no normalisation. ``resampled_spacing_mm`` is (x, y, z) as pyradiomics expects;
    ``minimum_roi_size`` (voxels) makes smaller masks fail with a recorded reason. ``diagnostics``
    adds pyradiomics' ``diagnostics_*`` entries (versions, image and mask hashes, ROI statistics); off,
    the features are the same and an extraction is faster (the image hashes alone cost ~25 ms).
    """
    setting: dict[str, Any] = {
        "binWidth": float(bin_width),
        "voxelArrayShift": int(voxel_array_shift),
        "label": int(label),
        "normalize": False,
        "additionalInfo": bool(diagnostics),
    }
    if resampled_spacing_mm is not None:
        setting["resampledPixelSpacing"] = [float(s) for s in resampled_spacing_mm]
        setting["interpolator"] = "sitkBSpline"
    if minimum_roi_size is not None:
        setting["minimumROISize"] = int(minimum_roi_size)
    return {
        "setting": setting,
        "imageType": {"Original": {}},
        "featureClass": {name: [] for name in feature_classes},
    }


def write_params(params: Params, path: str | Path) -> Path:
    """Save ``params`` as a pyradiomics YAML parameter file (reusable with ``pyradiomics --param``)."""
    return write_text(path, yaml.safe_dump(params, sort_keys=False))


def _extractor(params: Params) -> Any:
    """pyradiomics' extractor for ``params``, built once per process and settings (building one
    validates the settings against pyradiomics' YAML schema: a quarter of a small ROI's time)."""
    return _extractor_for(json.dumps(params, sort_keys=True, default=list))


@functools.lru_cache(maxsize=8)
def _extractor_for(key: str) -> Any:
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    return featureextractor.RadiomicsFeatureExtractor(json.loads(key))


def _plain(value: Any) -> Any:
    """pyradiomics values (0-d arrays, tuples of numpy scalars) as floats or strings for a CSV."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (complex, np.complexfloating)):
        # eigenvalue-based shape features of flat ROIs come back complex with a rounding-size imaginary part
        return float(value.real) if abs(value.imag) <= 1e-9 * max(abs(value.real), 1.0) else float("nan")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, (tuple, list)):
        return str(tuple(_plain(v) for v in value))
    return str(value)


def check_geometry(image: Any, mask: Any, atol_mm: float = 1e-3) -> str:
    """Empty string when the two SimpleITK images share size, spacing, origin and direction, else why not."""
    for what, a, b in (
        ("size", image.GetSize(), mask.GetSize()),
        ("spacing", image.GetSpacing(), mask.GetSpacing()),
        ("origin", image.GetOrigin(), mask.GetOrigin()),
        ("direction", image.GetDirection(), mask.GetDirection()),
    ):
        if len(a) != len(b) or not np.allclose(a, b, atol=atol_mm):
            return f"geometry mismatch: mask {what} {tuple(round(v, 4) for v in b)} != image {what} {tuple(round(v, 4) for v in a)}"
    return ""


def extract_images(image: Any, mask: Any, params: Params) -> dict[str, Any]:
    """Features and diagnostics of one SimpleITK ``image`` (HU) and binary ``mask`` (any nonzero = ROI).

    Returns pyradiomics' ordered result with plain values. Raises ``ValueError`` on a geometry mismatch
    and passes on pyradiomics' errors (empty or too small ROI).
    """
    import SimpleITK as sitk

    reason = check_geometry(image, mask)
    if reason:
        raise ValueError(reason)
    label = int(params.get("setting", {}).get("label", 1))
    roi = sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8) * label
    result = _extractor(params).execute(image, roi)
    return {key: _plain(value) for key, value in result.items()}


def extract_arrays(image_zyx: np.ndarray, mask_zyx: np.ndarray, spacing_zyx: tuple[float, float, float], params: Params) -> dict[str, Any]:
    """:func:`extract_images` for (z, y, x) numpy arrays with (z, y, x) spacing in mm."""
    import SimpleITK as sitk

    def to_sitk(arr: np.ndarray) -> Any:
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        img.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
        return img

    return extract_images(to_sitk(np.asarray(image_zyx, dtype=np.float32)), to_sitk(np.asarray(mask_zyx).astype(np.uint8)), params)


def extract_case(case_id: str, image_path: str | Path, mask_path: str | Path, params: Params) -> dict[str, Any]:
    """Features of one case read from NIfTI; never raises: a failure is returned with its reason.

    Returns ``case_id``, ``status`` (``ok``/``failed``), ``error`` (empty when ok) and pyradiomics'
    ``diagnostics_*`` and ``original_*`` keys. SimpleITK reads the NIfTI geometry (spacing, origin,
    direction) itself.
    """
    import SimpleITK as sitk

    out: dict[str, Any] = {"case_id": str(case_id), "status": "ok", "error": ""}
    try:
        for path in (image_path, mask_path):
            if not Path(path).is_file():
                raise ValueError(f"{path}: file not found")
        result = extract_images(sitk.ReadImage(str(image_path)), sitk.ReadImage(str(mask_path)), params)
    except Exception as exc:  # any per-case failure is data for the report, not a crash of the cohort run
        out.update(status="failed", error=f"{type(exc).__name__}: {exc}".strip())
        return out
    out.update(result)
    return out


def _extract_row(args: tuple[str, str, str, Params]) -> dict[str, Any]:
    return extract_case(*args)


def extract_features(cases: pd.DataFrame, params: Params, workers: int = 1, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Extract every case of ``cases`` (``case_id, image_path, mask_path``) in ``workers`` processes.

    Returns ``(features, diagnostics)``: one row per case in input order, both keyed by ``case_id`` with
    ``status`` and ``error``; feature columns keep pyradiomics names (``original_shape_VoxelVolume``).
    Failed cases stay in both frames with NaN features and their reason. Other columns of ``cases``
    (``group``, ``dice``) are carried into ``features``.
    """
    from amtlib.progress import track

    need = {"case_id", "image_path", "mask_path"}
    if not need <= set(cases.columns):
        raise ValueError(f"cases need columns {sorted(need)}; missing {sorted(need - set(cases.columns))}")
    jobs = [(str(r.case_id), str(r.image_path), str(r.mask_path), params) for r in cases.itertuples(index=False)]
    bar = dict(total=len(jobs), desc="radiomics", unit="case", enabled=progress)
    if workers > 1 and len(jobs) > 1:
        with process_pool(workers) as pool:
            results = list(track(pool.map(_extract_row, jobs), **bar))
    else:
        results = [_extract_row(job) for job in track(jobs, **bar)]
    table = pd.DataFrame(results)
    feature_cols = [c for c in table.columns if c.startswith("original_")]
    diag_cols = [c for c in table.columns if c.startswith("diagnostics_")]
    carried = cases.drop(columns=["image_path", "mask_path"]).assign(case_id=lambda d: d["case_id"].astype(str))
    features = carried.merge(table[["case_id", "status", "error", *feature_cols]], on="case_id", how="left")
    features[feature_cols] = features[feature_cols].astype(float)
    return features, table[["case_id", "status", "error", *diag_cols]]


def feature_columns(features: pd.DataFrame) -> list[str]:
    """The pyradiomics feature columns of a features frame, in extraction order."""
    return [c for c in features.columns if c.startswith("original_")]


def rank_biserial(x: np.ndarray, y: np.ndarray) -> float:
    """Rank-biserial correlation ``P(x > y) - P(x < y)`` (ties count half): +1 when every x exceeds every y.

    Equals ``2 U_x / (n_x n_y) - 1`` with ``U_x`` the Mann-Whitney statistic of ``x``. NaN when either
    sample is empty.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size == 0 or y.size == 0:
        return float("nan")
    diff = x[:, None] - y[None, :]
    return float((np.sum(diff > 0) - np.sum(diff < 0)) / diff.size)


def _two_sample(x: np.ndarray, y: np.ndarray, test: str, method: str) -> tuple[float, float]:
    if test == "mannwhitney":
        res = stats.mannwhitneyu(x, y, alternative="two-sided", method=method)
    else:
        if x.size < 2 or y.size < 2:
            return float("nan"), float("nan")
        res = stats.ttest_ind(x, y, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def compare_groups(
    features: pd.DataFrame,
    columns: Iterable[str] | None = None,
    group_col: str = "group",
    groups: tuple[str, str] = ("top", "bottom"),
    test: str = "mannwhitney",
    alpha: float = 0.05,
    method: str = "auto",
) -> pd.DataFrame:
    """Two-sided test of each feature between ``groups`` (paper: top vs bottom 10% by Dice).

    ``test`` is ``mannwhitney`` (scipy ``mannwhitneyu``, ``method`` ``auto``: exact for small samples
    without ties) or ``welch`` (unequal-variance t-test). Cases with a missing value (failed
    extraction) are left out of that feature's test and counted in ``n_missing``. Returns one row per
    feature: ``feature, feature_class, name, n_top, n_bottom, n_missing, median_/q1_/q3_`` per group,
    ``statistic, p_value, q_value`` (Benjamini-Hochberg over the features with a p-value),
    ``rank_biserial`` (positive: first group larger), ``significant`` (p < alpha, as the paper marks)
    and ``significant_bh`` (q < alpha).
    """
    from statsmodels.stats.multitest import multipletests

    if test not in TESTS:
        raise ValueError(f"radiomics_test must be one of {TESTS}, got {test!r}")
    columns = feature_columns(features) if columns is None else list(columns)
    first, second = groups
    rows = []
    for col in columns:
        a = features.loc[features[group_col] == first, col].astype(float)
        b = features.loc[features[group_col] == second, col].astype(float)
        missing = int(a.isna().sum() + b.isna().sum())
        a, b = a.dropna().to_numpy(), b.dropna().to_numpy()
        statistic, p = _two_sample(a, b, test, method) if a.size and b.size else (float("nan"), float("nan"))
        parts = col.split("_", 2)
        row: dict[str, Any] = {
            "feature": col,
            "feature_class": parts[1] if len(parts) == 3 else "",
            "name": parts[2] if len(parts) == 3 else col,
            f"n_{first}": a.size,
            f"n_{second}": b.size,
            "n_missing": missing,
        }
        for label, values in ((first, a), (second, b)):
            q1, med, q3 = np.percentile(values, [25, 50, 75]) if values.size else (np.nan,) * 3
            row.update({f"median_{label}": med, f"q1_{label}": q1, f"q3_{label}": q3})
        row.update(statistic=statistic, p_value=p, rank_biserial=rank_biserial(a, b))
        rows.append(row)
    stat_cols = [f"{s}_{label}" for label in groups for s in ("median", "q1", "q3")]
    table = pd.DataFrame(
        rows,
        columns=["feature", "feature_class", "name", f"n_{first}", f"n_{second}", "n_missing", *stat_cols, "statistic", "p_value", "rank_biserial"],
    )
    table["q_value"] = np.nan
    finite = table["p_value"].notna()
    if finite.any():
        table.loc[finite, "q_value"] = multipletests(table.loc[finite, "p_value"], method="fdr_bh")[1]
    table["significant"] = table["p_value"] < alpha
    table["significant_bh"] = table["q_value"] < alpha
    table["test"] = test
    return table


def failed_cases(features: pd.DataFrame) -> pd.DataFrame:
    """``case_id, group, error`` of the cases whose extraction failed (empty frame when none)."""
    cols = [c for c in ("case_id", "group", "error") if c in features.columns]
    return features.loc[features["status"] != "ok", cols].reset_index(drop=True)


def format_p(p: float) -> str:
    """p-value as the paper prints it (3 decimals, ``< 0.001`` below)."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
