"""Notebook 07: WHO risk stratification of thymic epithelial tumours, radiomics SVM vs 2D CNN.

Related TET paper (``tet_risk_stratification`` in reported_values.yaml). The split is the package's
own: the development institutions' training cases fit everything, the tuning cases (development) give
the second delineation for the ICC filter, and the external test set (unseen institutions, from
``02_split/split.csv``) is scored once. The external set is scored with ROIs from the predicted masks
and, separately, from the reference masks, so the cost of segmentation error is visible; the fitted
models are the same for both (training ROIs are reference masks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from amtlib.classify import arms as clf
from amtlib.classify import cnn2d, roc
from amtlib.manifest import CLASSIFIER_COLUMNS, read_manifest
from amtlib.paths import RunPaths
from amtlib.split import source_raw_dir

#: Columns notebook 07 needs (risk group may be derived from the subtype).
NEEDED_07: tuple[str, ...] = ("who_subtype",)
#: Metric columns of the paper-style table.
TABLE_COLUMNS: tuple[str, ...] = ("auc", "auc_ci_low", "auc_ci_high", "accuracy", "sensitivity", "specificity", "ppv", "npv")


def load_cases(run_dir: str | Path) -> pd.DataFrame:
    """Manifest rows with their split and the classifier columns (text as read, ``split`` added).

    The classifier columns come from the manifest; when it lacks them (a cohort built before they
    existed), they are joined from the raw ``clinical.csv`` named by ``01_cohort/cohort_flow.json``.
    """
    paths = RunPaths(run_dir)
    cases = read_manifest(paths.manifest)
    split = pd.read_csv(paths.split_csv, dtype=str, keep_default_na=False)
    cases = cases.drop(columns=["split"], errors="ignore").merge(split[["case_id", "split"]], on="case_id", how="inner")
    lacking = [c for c in CLASSIFIER_COLUMNS if c not in cases or cases[c].eq("").all()]
    if lacking and paths.cohort_flow.is_file():
        raw = source_raw_dir(json.loads(paths.cohort_flow.read_text()))
        clinical = (raw or paths.raw_dir) / "clinical.csv"
        if clinical.is_file():
            extra = pd.read_csv(clinical, dtype=str, keep_default_na=False)
            have = [c for c in lacking if c in extra]
            if have:
                cases = cases.drop(columns=have, errors="ignore").merge(extra[["patient_id", *have]], on="patient_id", how="left").fillna("")
    return cases


def tet_cases(cases: pd.DataFrame, tc_as_hrt: bool = True) -> pd.DataFrame:
    """Thymic epithelial tumours in the binary task, with ``label`` (1 = HRT) and ``risk_group``."""
    out = cases[cases["histology"].isin(clf.TET_HISTOLOGIES)].copy()
    out["risk_group"] = [clf.risk_group(h, s, g) for h, s, g in zip(out["histology"], clf.text_column(out, "who_subtype"),
                                                                     clf.text_column(out, "risk_group"))]
    out["label"] = clf.risk_labels(out, tc_as_hrt)
    return out[out["label"].notna()].reset_index(drop=True)


def split_counts(cases: pd.DataFrame) -> pd.DataFrame:
    """Cases per split and class, beside the TET paper's Fig. 1 counts."""
    from amtlib.paper import reported

    t = cases.groupby(["split", "label"]).size().unstack(fill_value=0).rename(columns={0.0: "LRT", 1.0: "HRT"})
    coh = reported()["tet_risk_stratification"]["cohort"]
    t.loc["paper training", ["LRT", "HRT"]] = [coh["training"]["lrt"], coh["training"]["hrt"]]
    t.loc["paper external", ["LRT", "HRT"]] = [coh["external_testing"]["lrt"], coh["external_testing"]["hrt"]]
    return t.astype(int)


def radiomics_features(cases: pd.DataFrame, run_dir: str | Path, params: dict, workers: int = 1) -> pd.DataFrame:
    """Radiomics of every TET case's reference ROI and of the tuning/external predicted ROIs.

    Returns one row per (case, ``roi``) with ``case_id, split, roi, status, error`` and features.
    """
    paths = RunPaths(run_dir)
    base = paths.manifest.parent
    ref = clf.roi_table(cases, base, paths.predictions_dir, "reference").assign(roi="reference")
    pred = clf.roi_table(cases[cases["split"] != "train"], base, paths.predictions_dir, "predicted")
    return clf.extract_roi_table(pd.concat([ref, pred], ignore_index=True), params, workers)


def _rows(features: pd.DataFrame, cases: pd.DataFrame, split: str, roi: str) -> pd.DataFrame:
    sub = features[(features["split"] == split) & (features["roi"] == roi)]
    return cases[["case_id", "label"]].merge(sub, on="case_id", how="inner")


def fit_svm_arm(features: pd.DataFrame, cases: pd.DataFrame, icc_threshold: float = 0.85, corr_threshold: float = 0.9,
                lasso_folds: int = 5, seed: int = 0, smote: bool = True) -> clf.RadiomicsSVM:
    """The radiomics arm fit on training cases; the ICC filter compares the tuning cases' reference and
    predicted ROIs (development data, never the external set)."""
    train = _rows(features, cases, "train", "reference")
    train = train[train["status"] == "ok"]
    ref_t = _rows(features, cases, "tuning", "reference").set_index("case_id")
    pred_t = _rows(features, cases, "tuning", "predicted").set_index("case_id")
    both = [c for c in ref_t.index if c in pred_t.index and ref_t.at[c, "status"] == "ok" and pred_t.at[c, "status"] == "ok"]
    stab = (ref_t.loc[both], pred_t.loc[both]) if len(both) >= 3 else (None, None)
    return clf.fit_radiomics_svm(train, train["label"].to_numpy(int), *stab, icc_threshold=icc_threshold,
                                 corr_threshold=corr_threshold, lasso_folds=lasso_folds, smote=smote, seed=seed)


def svm_scores(model: clf.RadiomicsSVM, features: pd.DataFrame, cases: pd.DataFrame) -> pd.DataFrame:
    """SVM decision values: ``case_id, split, roi, label, score`` for training (reference) and external
    (predicted and reference) ROIs; cases whose ROI failed get NaN."""
    out = []
    for split, roi in (("train", "reference"), ("external_test", "predicted"), ("external_test", "reference")):
        rows = _rows(features, cases, split, roi)
        ok = rows["status"] == "ok"
        score = np.full(len(rows), np.nan)
        if ok.any():
            score[ok.to_numpy()] = model.score(rows[ok])
        out.append(pd.DataFrame({"case_id": rows["case_id"], "split": split, "roi": roi, "label": rows["label"], "score": score}))
    return pd.concat(out, ignore_index=True).assign(model="radiomics_svm")


def cnn_crops(cases: pd.DataFrame, run_dir: str | Path, offsets_mm=(0.0, 1.0), size_px: int = 64, margin_mm: float = 10.0) -> dict[str, dict[str, np.ndarray]]:
    """Crops per ROI source: ``{"reference": {case: planes}, "predicted": {case: planes}}`` (training
    cases only under reference)."""
    paths = RunPaths(run_dir)
    base = paths.manifest.parent
    ref = clf.roi_table(cases, base, paths.predictions_dir, "reference")
    pred = clf.roi_table(cases[cases["split"] != "train"], base, paths.predictions_dir, "predicted")
    return {"reference": cnn2d.load_crops(ref, offsets_mm, size_px, margin_mm),
            "predicted": cnn2d.load_crops(pred, offsets_mm, size_px, margin_mm)}


def fit_cnn_arm(crops: dict[str, dict[str, np.ndarray]], cases: pd.DataFrame, cfg: cnn2d.CNNConfig, seed: int = 0) -> tuple[Any, pd.DataFrame]:
    """Train the 2D ResNet on the training cases' reference crops (all planes) -> (model, loss log)."""
    train = cases[(cases["split"] == "train") & cases["case_id"].isin(crops["reference"])]
    x, owner = cnn2d.stack(crops["reference"], list(train["case_id"]))
    y = train["label"].to_numpy(int)[owner]
    return cnn2d.train_network(x, y, 2, cfg, seed)


def cnn_scores(model: Any, crops: dict[str, dict[str, np.ndarray]], cases: pd.DataFrame) -> pd.DataFrame:
    """CNN P(HRT) on the 0 mm plane: training (reference) and external (predicted, reference) ROIs;
    NaN when a case has no ROI."""
    out = []
    for split, roi in (("train", "reference"), ("external_test", "predicted"), ("external_test", "reference")):
        sub = cases[cases["split"] == split]
        have = [c for c in sub["case_id"] if c in crops[roi]]
        x = np.stack([crops[roi][c][0] for c in have]) if have else np.zeros((0, 1, 1), np.float32)
        p = cnn2d.predict_proba(model, x)[:, 1] if have else np.zeros(0)
        score = dict(zip(have, p))
        out.append(pd.DataFrame({"case_id": sub["case_id"], "split": split, "roi": roi, "label": sub["label"],
                                 "score": [score.get(c, np.nan) for c in sub["case_id"]]}))
    return pd.concat(out, ignore_index=True).assign(model="cnn_resnet2d")


def metrics_table(scores: pd.DataFrame, thresholds: dict[str, float], ci_level: float = 0.95) -> pd.DataFrame:
    """Paper Table 2 rows: per (model, split, roi) AUC with DeLong CI and confusion metrics at the
    model's training Youden threshold; ``n_roi_missing`` counts cases left out for lack of a ROI."""
    rows = []
    for (model, split, roi), g in scores.groupby(["model", "split", "roi"], sort=False):
        ok = g["score"].notna()
        row = roc.binary_summary(g.loc[ok, "label"].to_numpy(int), g.loc[ok, "score"].to_numpy(), thresholds[model], ci_level)
        rows.append({"model": model, "split": split, "roi": roi, **row, "n_roi_missing": int((~ok).sum())})
    return pd.DataFrame(rows)


#: Columns of :func:`delong_cnn_vs_svm`.
DELONG_COLUMNS: tuple[str, ...] = ("roi", "n", "auc_cnn", "auc_svm", "diff", "se_diff", "z", "p")


def delong_cnn_vs_svm(scores: pd.DataFrame) -> pd.DataFrame:
    """DeLong's paired test CNN vs SVM on the external cases both scored, per ROI source.

    A ROI source where fewer than two cases have both scores (every predicted ROI empty: a model that
    found nothing) is a row with its ``n`` and NaN statistics, never an error."""
    rows = []
    ext = scores[scores["split"] == "external_test"]
    for roi, g in ext.groupby("roi", sort=False):
        wide = g.pivot_table(index="case_id", columns="model", values="score").dropna()
        both = {"cnn_resnet2d", "radiomics_svm"} <= set(wide.columns)
        if not both or len(wide) < 2:
            rows.append({"roi": roi, "n": len(wide) if both else 0})
            continue
        lab = g.drop_duplicates("case_id").set_index("case_id").loc[wide.index, "label"].to_numpy(int)
        test = roc.delong_test(lab, wide["cnn_resnet2d"], wide["radiomics_svm"])
        rows.append({"roi": roi, "n": len(wide), "auc_cnn": test["auc_a"], "auc_svm": test["auc_b"],
                     **{k: test[k] for k in ("diff", "se_diff", "z", "p")}})
    return pd.DataFrame(rows, columns=list(DELONG_COLUMNS))


def gradcam_cases(cases: pd.DataFrame, crops: dict[str, Any], per_class: int) -> pd.DataFrame:
    """The first ``per_class`` external cases of each class that have a crop in ``crops`` (case id ->
    crop), for the Grad-CAM figure (paper Fig. 5); empty when no external case has one (every ROI
    empty)."""
    ext = cases[(cases["split"] == "external_test") & cases["case_id"].isin(list(crops))]
    parts = [g.head(per_class) for _, g in ext.groupby("label", sort=True)]
    return pd.concat(parts) if parts else ext.iloc[:0]


def beside_paper(table: pd.DataFrame) -> pd.DataFrame:
    """External-set rows next to the TET paper's ResNet-101 and radiomics SVM rows (Table 2)."""
    from amtlib.paper import reported

    rep = reported()["tet_risk_stratification"]["table2"]
    ext = table[table["split"] == "external_test"]
    rows = [{"source": f"ours: {r.model}, {r.roi} ROI (n={r.n})", **{c: getattr(r, c) for c in TABLE_COLUMNS}} for r in ext.itertuples()]
    rows += [{"source": "paper: ResNet 101 (n=61)", **dict(zip(TABLE_COLUMNS, rep["resnet101"]))},
             {"source": "paper: radiomics SVM (n=61)", **dict(zip(TABLE_COLUMNS, rep["rad_svm"]))}]
    return pd.DataFrame(rows).set_index("source")
