"""Segment, then classify: labels, ROI choice, and the radiomics SVM and tabular arms (notebooks 07-08).

Related papers (reported values under ``tet_risk_stratification`` and ``dmfn_fusion`` in
``amtlib/data/reported_values.yaml``):

- TET paper, radiomics arm: features on 1 mm isotropic B-spline resampled images (window W400/L40 HU,
  fixed bin width 32), shape, first-order and texture classes (pyradiomics); z-scoring, then (1) ICC >
  0.85 between two delineations, (2) |Pearson r| > 0.9 pruning, (3) LASSO with 5-fold CV (nonzero
  coefficients), SMOTE to 1:1 on the training set, an RBF SVM. Here the two delineations are the
  reference and the model's predicted mask of the development *tuning* cases (the only development
  cases with a prediction), so the filter keeps features robust to segmentation error and never sees
  an external case; ICC(3,1) is the two-way mixed, consistency, single-measure form (Shrout & Fleiss).
- Every step that learns anything (scaling, ICC filter, pruning, LASSO, SMOTE, SVM, threshold) is fit on
  training cases only; :func:`fit_radiomics_svm` receives no other case.
- ROIs: ``roi_source="predicted"`` (default) takes the external/tuning ROI from the segmentation
  model's predicted mask (its largest connected component), ``"reference"`` from the reference mask.
  Training ROIs are always the reference masks (the models learn from expert delineations). A case
  whose predicted mask is empty has no ROI; it is left out and counted (``n_roi_missing``).
- Fusion paper, tabular arm: logistic regression on the CTC level and clinical variables (age, sex).

Labels are 0/1 with 1 the positive class (high risk; malignant).
"""

from __future__ import annotations

import logging
from amtlib.workers import process_pool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from amtlib.manifest import CLASSIFIER_COLUMNS
from amtlib.evaluation.radiomics import Params, extract_images, radiomics_params

log = logging.getLogger(__name__)

#: Thymic epithelial tumours: the population of the TET paper.
TET_HISTOLOGIES: tuple[str, ...] = ("thymoma", "thymic_carcinoma")
#: Simplified WHO scheme: thymoma subtype -> risk group.
SUBTYPE_GROUP: dict[str, str] = {"A": "LRT", "AB": "LRT", "B1": "LRT", "B2": "HRT", "B3": "HRT"}
#: Benign histologies of the cohort (the fusion paper's Table 2: cysts and mature teratoma benign).
BENIGN_HISTOLOGIES: tuple[str, ...] = ("thymic_cyst", "teratoma")
#: Multi-class labels: the paper's histology rows, rarer histologies pooled as "others".
HISTOLOGY_CLASSES: tuple[str, ...] = ("thymoma", "thymic_carcinoma", "lymphoma", "thymic_cyst", "others")
ROI_SOURCES: tuple[str, ...] = ("predicted", "reference")
#: TET paper window: width 400 HU, level 40 HU -> [-160, 240] HU.
TET_WINDOW_HU: tuple[float, float] = (-160.0, 240.0)
TEXTURE_CLASSES: tuple[str, ...] = ("glcm", "glrlm", "glszm", "gldm", "ngtdm")
#: Features kept (highest ICC) when none passes the ICC threshold (a poor segmentation model).
ICC_FALLBACK_KEEP = 10


# ---------------------------------------------------------------------------------------------------
# labels and columns


def missing_columns(cases: pd.DataFrame, needed: Sequence[str]) -> list[str]:
    """Columns of ``needed`` that ``cases`` lacks or leaves wholly empty (the notebooks then skip)."""
    out = []
    for c in needed:
        if c not in cases or cases[c].astype(str).str.strip().replace({"nan": "", "<NA>": ""}).eq("").all():
            out.append(c)
    return out


def skip_message(step: str, missing: Sequence[str]) -> str:
    """The one-line reason a classifier notebook skips (data_manifest/README.md names the columns)."""
    return (f"{step}: skipped, the cohort has no {', '.join(missing)} column(s); add them to clinical.csv or the "
            f"manifest (optional columns, see data_manifest/README.md) to run this analysis")


def text_column(cases: pd.DataFrame, name: str) -> pd.Series:
    """Column ``name`` as text, or empty strings when ``cases`` lacks it (optional columns)."""
    if name not in cases:
        return pd.Series([""] * len(cases), index=cases.index, dtype=object)
    return cases[name].astype(object).where(cases[name].notna(), "").astype(str)


def risk_group(histology: str, who_subtype: str = "", given: str = "") -> str:
    """Simplified WHO risk group: ``given`` if set, else LRT/HRT from the thymoma subtype, TC for
    thymic carcinoma; empty for other histologies or a thymoma without a subtype."""
    given = str(given or "").strip()
    if given and given.lower() not in ("nan", "<na>"):
        return given
    if histology == "thymic_carcinoma":
        return "TC"
    if histology == "thymoma":
        return SUBTYPE_GROUP.get(str(who_subtype or "").strip(), "")
    return ""


def risk_labels(cases: pd.DataFrame, tc_as_hrt: bool = True) -> pd.Series:
    """0 (LRT) / 1 (HRT) per case, NaN when not in the binary task.

    ``tc_as_hrt`` (default True): thymic carcinoma joins the high-risk class (the TET paper's cohort of
    TETs is wholly split into LRT and HRT); False leaves thymic carcinomas out (thymomas only).
    """
    groups = [risk_group(h, s, g) for h, s, g in zip(cases["histology"], text_column(cases, "who_subtype"), text_column(cases, "risk_group"))]
    mapping = {"LRT": 0.0, "HRT": 1.0, "TC": 1.0 if tc_as_hrt else np.nan}
    return pd.Series([mapping.get(g, np.nan) for g in groups], index=cases.index, name="label")


def malignant_labels(histology: pd.Series) -> pd.Series:
    """1 = malignant, 0 = benign (:data:`BENIGN_HISTOLOGIES`)."""
    return (~histology.isin(BENIGN_HISTOLOGIES)).astype(int).rename("label")


def histology_class_labels(histology: pd.Series) -> pd.Series:
    """Index into :data:`HISTOLOGY_CLASSES` (rarer histologies -> ``others``)."""
    names = histology.where(histology.isin(HISTOLOGY_CLASSES[:-1]), "others")
    return names.map({c: i for i, c in enumerate(HISTOLOGY_CLASSES)}).astype(int).rename("label")


def cohort_summary(cases: pd.DataFrame, reported_rates: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """Table-1 style summary of the classifier variables by risk group, beside the TET paper's rates.

    Rows: n, age mean ± SD, male %, margin irregular %, heterogeneous enhancement %, CTC level mean ±
    SD; columns per group (LRT, HRT, TC) plus ``paper_LRT``/``paper_HRT`` (pooled Table 1 rates).
    """
    groups = pd.Series([risk_group(h, s, g) for h, s, g in zip(cases["histology"], text_column(cases, "who_subtype"),
                                                                text_column(cases, "risk_group"))], index=cases.index)
    rows = []
    for name in ("LRT", "HRT", "TC"):
        sub = cases[groups == name]
        age = pd.to_numeric(sub["age"], errors="coerce")
        ctc = pd.to_numeric(sub.get("ctc_level"), errors="coerce") if "ctc_level" in sub else pd.Series(dtype=float)
        def pct(col: str) -> float:
            v = pd.to_numeric(sub.get(col), errors="coerce") if col in sub else pd.Series(dtype=float)
            return float(100 * v.mean()) if v.notna().any() else np.nan
        rows.append({"group": name, "n": len(sub), "age_mean": age.mean(), "age_sd": age.std(), "male_pct": 100 * (sub["sex"] == "M").mean() if len(sub) else np.nan,
                     "margin_irregular_pct": pct("margin_irregular"), "heterogeneous_enhancement_pct": pct("heterogeneous_enhancement"),
                     "ctc_mean": ctc.mean(), "ctc_sd": ctc.std()})
    out = pd.DataFrame(rows).set_index("group").T
    if reported_rates:
        for g in ("LRT", "HRT"):
            out[f"paper_{g}"] = np.nan
            out.loc["margin_irregular_pct", f"paper_{g}"] = 100 * reported_rates[g]["margin_unclear"]
            out.loc["heterogeneous_enhancement_pct", f"paper_{g}"] = 100 * reported_rates[g]["heterogeneous_enhancement"]
    return out


# ---------------------------------------------------------------------------------------------------
# ROIs


def roi_table(cases: pd.DataFrame, manifest_dir: str | Path, predictions_dir: str | Path, roi_source: str = "predicted") -> pd.DataFrame:
    """``case_id, split, image_path, mask_path, roi`` per case: the mask each classifier reads.

    Training cases always use the reference mask; tuning and external cases use ``roi_source``.
    ``roi`` says which (``reference``/``predicted``); a predicted mask file that does not exist gives
    an empty ``mask_path`` (the case has no ROI). ``cases`` needs ``case_id, split, image_path,
    mask_path`` with paths relative to ``manifest_dir``.
    """
    if roi_source not in ROI_SOURCES:
        raise ValueError(f"roi_source must be one of {ROI_SOURCES}, got {roi_source!r}")
    base, pred = Path(manifest_dir), Path(predictions_dir)
    rows = []
    for r in cases.itertuples(index=False):
        use_pred = roi_source == "predicted" and r.split != "train"
        mask = pred / f"{r.case_id}.nii.gz" if use_pred else base / r.mask_path
        rows.append({"case_id": str(r.case_id), "split": r.split, "image_path": str(base / r.image_path),
                     "mask_path": str(mask) if mask.is_file() else "", "roi": "predicted" if use_pred else "reference"})
    return pd.DataFrame(rows)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 26-connected component of a binary mask (the single tumour ROI); empty stays empty."""
    import cc3d

    m = np.asarray(mask) > 0
    if not m.any():
        return m
    return cc3d.largest_k(m.astype(np.uint8), k=1, connectivity=26) > 0


# ---------------------------------------------------------------------------------------------------
# radiomics features


def tet_radiomics_params(spacing_mm: float = 1.0, bin_width: float = 32.0, texture: bool = True) -> Params:
    """pyradiomics settings of the TET paper: isotropic ``spacing_mm`` B-spline resampling, bin width
    ``bin_width`` HU, shape + first-order (+ the five texture classes), original image only; no
    pyradiomics diagnostics (:func:`extract_roi_features` keeps the features only)."""
    classes = ("shape", "firstorder", *(TEXTURE_CLASSES if texture else ()))
    return radiomics_params(bin_width=bin_width, resampled_spacing_mm=(spacing_mm,) * 3, feature_classes=classes, diagnostics=False)


def extract_roi_features(case_id: str, image_path: str, mask_path: str, params: Params,
                         window_hu: tuple[float, float] = TET_WINDOW_HU) -> dict[str, Any]:
    """Radiomics of one ROI (largest component of the mask) on the windowed image; never raises.

    The image is clipped to ``window_hu`` (the TET paper's W400/L40) before extraction. Returns
    ``case_id, status, error`` and the ``original_*`` features; ``status`` is ``failed`` with the
    reason for a missing file or an empty ROI.
    """
    import SimpleITK as sitk

    out: dict[str, Any] = {"case_id": case_id, "status": "ok", "error": ""}
    try:
        if not mask_path:
            raise ValueError("no ROI (predicted mask missing or empty)")
        image = sitk.Clamp(sitk.Cast(sitk.ReadImage(image_path), sitk.sitkFloat32), sitk.sitkFloat32, *window_hu)
        mask_img = sitk.ReadImage(mask_path)
        roi = largest_component(sitk.GetArrayFromImage(mask_img))
        if not roi.any():
            raise ValueError("no ROI (predicted mask empty)")
        roi_img = sitk.GetImageFromArray(roi.astype(np.uint8))
        roi_img.CopyInformation(mask_img)
        out.update({k: v for k, v in extract_images(image, roi_img, params).items() if k.startswith("original_")})
    except Exception as exc:  # a failed ROI is a counted outcome, not a crash
        out.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    return out


def _extract_star(args: tuple) -> dict[str, Any]:
    return extract_roi_features(*args)


def extract_roi_table(rois: pd.DataFrame, params: Params, workers: int = 1, window_hu: tuple[float, float] = TET_WINDOW_HU) -> pd.DataFrame:
    """:func:`extract_roi_features` for every row of ``rois`` (``case_id, image_path, mask_path``);
    other columns are carried; rows keep input order."""
    jobs = [(str(r.case_id), str(r.image_path), str(r.mask_path), params, tuple(window_hu)) for r in rois.itertuples(index=False)]
    if workers > 1 and len(jobs) > 1:
        with process_pool(workers) as pool:
            results = list(pool.map(_extract_star, jobs, chunksize=2))
    else:
        results = [_extract_star(j) for j in jobs]
    table = pd.DataFrame(results)
    carried = rois.drop(columns=["image_path", "mask_path"]).reset_index(drop=True)
    return pd.concat([carried, table.drop(columns=["case_id"])], axis=1)


def feature_names(table: pd.DataFrame) -> list[str]:
    """Numeric ``original_*`` feature columns (diagnostic strings excluded)."""
    return [c for c in table.columns if c.startswith("original_") and pd.api.types.is_numeric_dtype(table[c])]


# ---------------------------------------------------------------------------------------------------
# feature selection (TET paper, three steps)


def icc31(ratings: np.ndarray) -> np.ndarray:
    """ICC(3,1): two-way mixed effects, consistency, single rater (Shrout & Fleiss 1979).

    ``ratings``: (n subjects, k raters) or (n, k, features) -> one ICC per feature. ICC = (MSR - MSE)
    / (MSR + (k-1) MSE). NaN when n < 2 or when both mean squares are 0 (a constant feature).
    """
    x = np.asarray(ratings, dtype=float)
    if x.ndim == 2:
        x = x[:, :, None]
    n, k = x.shape[:2]
    if n < 2 or k < 2:
        return np.full(x.shape[2], np.nan)
    grand = x.mean(axis=(0, 1))
    rows = x.mean(axis=1)
    cols = x.mean(axis=0)
    ss_rows = k * ((rows - grand) ** 2).sum(axis=0)
    ss_cols = n * ((cols - grand) ** 2).sum(axis=0)
    ss_total = ((x - grand) ** 2).sum(axis=(0, 1))
    msr = ss_rows / (n - 1)
    mse = (ss_total - ss_rows - ss_cols) / ((n - 1) * (k - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        icc = (msr - mse) / (msr + (k - 1) * mse)
    return np.where((msr + (k - 1) * mse) > 0, icc, np.nan)


def prune_correlated(x: pd.DataFrame, threshold: float = 0.9) -> list[str]:
    """Greedy redundancy pruning: walk columns in order, keep one unless |Pearson r| > ``threshold``
    with a column already kept. Constant columns are dropped."""
    keep: list[str] = []
    sd = x.std()
    cols = [c for c in x.columns if np.isfinite(sd[c]) and sd[c] > 0]
    corr = x[cols].corr().abs()
    for c in cols:
        if all(corr.loc[c, k] <= threshold for k in keep):
            keep.append(c)
    return keep


def lasso_select(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Indices of features with a nonzero coefficient of LASSO (regression on 0/1, 5-fold CV λ).

    λ is the CV-error minimum (scikit-learn ``LassoCV``; the TET paper names the method and folds, not
    the rule). If every coefficient is zero the single feature with the largest |coefficient| along the
    path's least-penalised fit is kept, so the SVM always has an input.
    """
    from sklearn.linear_model import LassoCV
    from sklearn.model_selection import StratifiedKFold

    folds = int(max(2, min(folds, np.bincount(y.astype(int)).min())))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    model = LassoCV(cv=list(cv.split(x, y)), random_state=seed, max_iter=20000).fit(x, y)
    idx = np.flatnonzero(model.coef_ != 0)
    if idx.size == 0:
        from sklearn.linear_model import lasso_path

        _, coefs, _ = lasso_path(x, y, n_alphas=50)
        idx = np.array([int(np.argmax(np.abs(coefs[:, -1])))])
    return idx


@dataclass
class RadiomicsSVM:
    """A fitted radiomics arm: the selected features and the scaler + SMOTE + RBF SVM pipeline."""

    features: list[str]
    pipeline: Any
    threshold: float
    selection: dict[str, int] = field(default_factory=dict)
    stable: list[str] = field(default_factory=list)

    def score(self, table: pd.DataFrame) -> np.ndarray:
        """SVM decision values (higher = positive class) of the rows of ``table``."""
        return self.pipeline.decision_function(table[self.features].to_numpy(float))


def fit_radiomics_svm(
    train: pd.DataFrame, y: np.ndarray, stability_ref: pd.DataFrame | None = None, stability_pred: pd.DataFrame | None = None,
    icc_threshold: float = 0.85, corr_threshold: float = 0.9, lasso_folds: int = 5, smote: bool = True, seed: int = 0,
) -> RadiomicsSVM:
    """Fit the TET paper's radiomics arm on the training cases only.

    ``train``: one row per training case with ``original_*`` features; ``y`` its 0/1 labels.
    ``stability_ref``/``stability_pred``: features of the same (development) cases from two
    delineations, rows aligned, for the ICC(3,1) > ``icc_threshold`` filter (skipped when None).
    Then |r| > ``corr_threshold`` pruning and LASSO (``lasso_folds``-fold CV) on z-scored training
    features; the final pipeline is z-scoring -> SMOTE 1:1 (training only) -> RBF SVM. The decision
    threshold is Youden's on the training decision values.
    """
    from imblearn.over_sampling import SMOTE
    from imblearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from amtlib.classify.roc import youden_threshold

    y = np.asarray(y).astype(int)
    names = [c for c in feature_names(train) if train[c].notna().all() and np.isfinite(train[c]).all()]
    counts = {"extracted": len(names)}
    stable = names
    if stability_ref is not None and stability_pred is not None and len(stability_ref) >= 2:
        pair = np.stack([stability_ref[names].to_numpy(float), stability_pred[names].to_numpy(float)], axis=1)
        ok = np.isfinite(pair).all(axis=(0, 1))
        icc = np.where(ok, icc31(np.where(np.isfinite(pair), pair, 0.0)), np.nan)
        stable = [n for n, v in zip(names, icc) if np.isfinite(v) and v > icc_threshold]
        if not stable:
            # a poor segmentation model makes every feature unstable: keep the most stable ones rather
            # than stop, and say so (the selection counts record it)
            order = [names[i] for i in np.argsort(-np.nan_to_num(icc, nan=-np.inf)) if np.isfinite(icc[i])]
            stable = order[:ICC_FALLBACK_KEEP]
            counts["icc_fallback_best"] = len(stable)
            log.warning("no feature has ICC > %s between the two delineations; keeping the %d most stable (best ICC %.2f)",
                        icc_threshold, len(stable), float(np.nanmax(icc)) if np.isfinite(icc).any() else float("nan"))
    counts["icc_stable"] = len(stable)
    if not stable:
        raise ValueError("no finite radiomics feature in the training cases; check radiomics_features.csv status/error")
    x = train[stable].astype(float)
    z = (x - x.mean()) / x.std(ddof=0).replace(0, np.nan)
    pruned = prune_correlated(z.dropna(axis=1), corr_threshold)
    counts["uncorrelated"] = len(pruned)
    chosen = [pruned[i] for i in lasso_select(z[pruned].to_numpy(), y, lasso_folds, seed)]
    counts["lasso"] = len(chosen)
    minority = int(np.bincount(y, minlength=2).min())
    steps: list[tuple[str, Any]] = [("scale", StandardScaler())]
    if smote and minority >= 2:
        steps.append(("smote", SMOTE(sampling_strategy=1.0, k_neighbors=min(5, minority - 1), random_state=seed)))
    steps.append(("svm", SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed)))
    pipe = Pipeline(steps).fit(train[chosen].to_numpy(float), y)
    model = RadiomicsSVM(chosen, pipe, np.nan, counts, stable)
    model.threshold = youden_threshold(y, model.score(train))
    return model


# ---------------------------------------------------------------------------------------------------
# tabular arm (fusion paper: CTC / clinical only)


def tabular_matrix(cases: pd.DataFrame, columns: Sequence[str] = ("ctc_level", "age", "sex")) -> np.ndarray:
    """Numeric matrix of the tabular inputs: numbers as they are, ``sex`` as 1 = M; NaN -> column
    mean is left to the caller's imputer (the demo cohort has none)."""
    out = []
    for c in columns:
        if c == "sex":
            out.append((cases["sex"].astype(str) == "M").astype(float).to_numpy())
        else:
            out.append(pd.to_numeric(cases[c], errors="coerce").to_numpy(float))
    return np.column_stack(out)


def fit_logistic(x_train: np.ndarray, y_train: np.ndarray, seed: int = 0) -> Any:
    """Standardised (multinomial for > 2 classes) logistic regression, mean-imputed, class-balanced,
    fit on training rows only; ``predict_proba`` gives the class probabilities."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed))
    return model.fit(x_train, np.asarray(y_train).astype(int))


__all__ = [
    "BENIGN_HISTOLOGIES", "CLASSIFIER_COLUMNS", "HISTOLOGY_CLASSES", "ROI_SOURCES", "RadiomicsSVM", "TET_HISTOLOGIES",
    "cohort_summary", "extract_roi_table", "feature_names", "fit_logistic", "fit_radiomics_svm", "histology_class_labels",
    "icc31", "lasso_select", "malignant_labels", "missing_columns", "prune_correlated", "risk_group", "risk_labels",
    "roi_table", "skip_message", "tabular_matrix", "tet_radiomics_params",
]
