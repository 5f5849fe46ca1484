"""Notebook 08: CT + CTC/clinical fusion for benign vs malignant and multi-class diagnosis.

Related fusion paper (``dmfn_fusion`` in reported_values.yaml): a CT-only CNN, a CTC/clinical-only
model and a fusion network (image features and an MLP of the CTC level and clinical variables,
concatenated before the classifier). Here on the package's own cohort and split: training cases fit
every model (tabular inputs standardised with training statistics), the external test set (unseen
institutions) is scored once. Binary: 1 = malignant (:data:`amtlib.classify.arms.BENIGN_HISTOLOGIES`
benign); multi-class: :data:`amtlib.classify.arms.HISTOLOGY_CLASSES`. Binary calls use the Youden
threshold of the training scores, multi-class calls the largest probability.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from amtlib.classify import arms as clf
from amtlib.classify import cnn2d, roc
from amtlib.paths import RunPaths

NEEDED_08: tuple[str, ...] = ("ctc_level",)
TABULAR: tuple[str, ...] = ("ctc_level", "age", "sex")
MODELS: tuple[str, ...] = ("ct_only_cnn", "ctc_clinical_logistic", "fusion")
TASKS: tuple[str, ...] = ("binary", "multiclass")


def task_labels(cases: pd.DataFrame, task: str) -> np.ndarray:
    """Labels of ``task``: ``binary`` 0 benign / 1 malignant, ``multiclass`` index of HISTOLOGY_CLASSES."""
    if task == "binary":
        return clf.malignant_labels(cases["histology"]).to_numpy(int)
    if task == "multiclass":
        return clf.histology_class_labels(cases["histology"]).to_numpy(int)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def prepare(cases: pd.DataFrame, run_dir: str | Path, roi_source: str = "predicted", offsets_mm: Sequence[float] = (0.0, 1.0),
            size_px: int = 64) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Training and external cases that have a ROI crop, and the crops (training: all planes).

    Returns ``(cases with roi, crops)``; external cases without a ROI are dropped and counted in
    ``cases.attrs["n_roi_missing"]``.
    """
    paths = RunPaths(run_dir)
    use = cases[cases["split"].isin(["train", "external_test"])].reset_index(drop=True)
    rois = clf.roi_table(use, paths.manifest.parent, paths.predictions_dir, roi_source)
    crops = cnn2d.load_crops(rois, offsets_mm, size_px)
    kept = use[use["case_id"].isin(crops)].reset_index(drop=True)
    kept.attrs["n_roi_missing"] = int(((use["split"] == "external_test") & ~use["case_id"].isin(crops)).sum())
    return kept, crops


def standardise(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Z-score columns of ``x`` with the mean and SD of the ``train`` rows (NaN -> training mean)."""
    mu, sd = np.nanmean(x[train], axis=0), np.nanstd(x[train], axis=0)
    z = (x - mu) / np.where(sd > 0, sd, 1.0)
    return np.nan_to_num(z, nan=0.0).astype(np.float32)


def fit_and_score(cases: pd.DataFrame, crops: dict[str, np.ndarray], task: str, cfg: cnn2d.CNNConfig, seed: int = 0) -> pd.DataFrame:
    """Fit the three models of ``task`` on training cases; probabilities of every case.

    Returns long rows ``case_id, split, model, label, proba_0..proba_{K-1}`` (the 0 mm plane scored).
    """
    y = task_labels(cases, task)
    k = 2 if task == "binary" else len(clf.HISTOLOGY_CLASSES)
    train = (cases["split"] == "train").to_numpy()
    tab = standardise(clf.tabular_matrix(cases, TABULAR), train)
    x, owner = cnn2d.stack(crops, list(cases.loc[train, "case_id"]))
    tr_idx = np.flatnonzero(train)[owner]
    centre = np.stack([crops[c][0] for c in cases["case_id"]])
    probs: dict[str, np.ndarray] = {}
    ct, _ = cnn2d.train_network(x, y[tr_idx], k, cfg, seed)
    probs["ct_only_cnn"] = cnn2d.predict_proba(ct, centre)
    fus, _ = cnn2d.train_network(x, y[tr_idx], k, cfg, seed, tabular=tab[tr_idx])
    probs["fusion"] = cnn2d.predict_proba(fus, centre, tab)
    lr = clf.fit_logistic(tab[train], y[train], seed)
    p = np.zeros((len(cases), k))
    p[:, lr.classes_] = lr.predict_proba(tab)
    probs["ctc_clinical_logistic"] = p
    rows = []
    for model in MODELS:
        df = cases[["case_id", "split"]].assign(model=model, label=y)
        rows.append(pd.concat([df, pd.DataFrame(probs[model], columns=[f"proba_{i}" for i in range(k)])], axis=1))
    return pd.concat(rows, ignore_index=True).assign(task=task)


def _proba(g: pd.DataFrame, task_rows: pd.DataFrame | None = None) -> np.ndarray:
    """Class probabilities of ``g``, (n, K): the ``proba_*`` columns the task fills (judged on
    ``task_rows``, default ``g``, so an empty ``g`` still has the task's K columns)."""
    like = g if task_rows is None else task_rows
    return g[[c for c in like.columns if c.startswith("proba_") and like[c].notna().any()]].to_numpy(float)


def _two_classes(y: np.ndarray) -> bool:
    return len(np.unique(y)) >= 2


#: Columns of :func:`evaluate`'s rows for each task.
EVALUATE_COLUMNS_BINARY: tuple[str, ...] = ("task", "model", "n", "auc", "auc_boot_low", "auc_boot_high", "auc_delong_low",
                                            "auc_delong_high", *roc.CONFUSION_METRICS, "threshold")
EVALUATE_COLUMNS_MULTICLASS: tuple[str, ...] = ("task", "model", "n", "auc", "auc_boot_low", "auc_boot_high", "accuracy")


def evaluate(scores: pd.DataFrame, n_resamples: int = 2000, ci_level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """External AUC (binary) or macro OvR AUC (multi-class) with stratified bootstrap CIs; binary rows
    add the DeLong CI and the confusion metrics at the training Youden threshold; ``accuracy`` for all.
    A model with no external case scored (every predicted ROI empty) or one class only is a row with
    its ``n`` and NaN statistics."""
    rows = []
    for (task, model), g in scores.groupby(["task", "model"], sort=False):
        tr, ex = g[g["split"] == "train"], g[g["split"] == "external_test"]
        y, p = ex["label"].to_numpy(int), _proba(ex, g)
        if not _two_classes(y):  # no external case scored (every predicted ROI empty), or one class only
            keys = EVALUATE_COLUMNS_BINARY if task == "binary" else EVALUATE_COLUMNS_MULTICLASS
            rows.append({"task": task, "model": model, "n": len(y), **{k: np.nan for k in keys[3:]}})
            continue
        if task == "binary":
            thr = roc.youden_threshold(tr["label"].to_numpy(int), _proba(tr)[:, 1])
            ci = roc.bootstrap_ci(y, p[:, 1], roc.auc, n_resamples, ci_level, seed)
            row = {**roc.binary_summary(y, p[:, 1], thr, ci_level)}
            row = {"task": task, "model": model, "n": len(y), "auc": row["auc"], "auc_boot_low": ci["ci_low"], "auc_boot_high": ci["ci_high"],
                   "auc_delong_low": row["auc_ci_low"], "auc_delong_high": row["auc_ci_high"],
                   **{m: row[m] for m in roc.CONFUSION_METRICS}, "threshold": thr}
        else:
            ci = roc.bootstrap_ci(y, p, roc.macro_ovr_auc, n_resamples, ci_level, seed)
            row = {"task": task, "model": model, "n": len(y), "auc": ci["estimate"], "auc_boot_low": ci["ci_low"], "auc_boot_high": ci["ci_high"],
                   "accuracy": float((p.argmax(1) == y).mean()) if len(y) else np.nan}
        rows.append(row)
    return pd.DataFrame(rows)


def calls(scores: pd.DataFrame, task: str, model: str) -> pd.DataFrame:
    """External-set calls of one model: ``case_id, label, call`` (binary: training Youden threshold)."""
    g = scores[(scores["task"] == task) & (scores["model"] == model)]
    ex = g[g["split"] == "external_test"]
    p = _proba(ex, g)
    if not len(ex):
        return pd.DataFrame({"case_id": pd.Series(dtype=str), "label": pd.Series(dtype=int), "call": pd.Series(dtype=int)})
    if task == "binary":
        thr = roc.youden_threshold(g.loc[g["split"] == "train", "label"].to_numpy(int), _proba(g[g["split"] == "train"], g)[:, 1])
        call = (p[:, 1] >= thr).astype(int)
    else:
        call = p.argmax(1)
    return pd.DataFrame({"case_id": ex["case_id"].to_numpy(), "label": ex["label"].to_numpy(int), "call": call})


def compare_fusion_ct(scores: pd.DataFrame) -> pd.DataFrame:
    """Fusion vs CT-only on the external set: DeLong (binary AUC) and McNemar (accuracy), per task."""
    rows = []
    for task in scores["task"].unique():
        f, c = calls(scores, task, "fusion"), calls(scores, task, "ct_only_cnn")
        if not len(f):  # no external case scored (every predicted ROI empty)
            rows.append({"task": task, "n": 0, **{k: np.nan for k in ("acc_fusion", "acc_ct_only", "mcnemar_b", "mcnemar_c",
                                                                      "mcnemar_p")}})
            continue
        mc = roc.mcnemar_test(f["call"] == f["label"], c["call"] == c["label"])
        row = {"task": task, "n": len(f), "acc_fusion": float((f["call"] == f["label"]).mean()), "acc_ct_only": float((c["call"] == c["label"]).mean()),
               "mcnemar_b": mc["b"], "mcnemar_c": mc["c"], "mcnemar_p": mc["p"]}
        if task == "binary":
            ex = scores[(scores["task"] == task) & (scores["split"] == "external_test")]
            wide = ex.pivot_table(index="case_id", columns="model", values="proba_1")
            lab = ex.drop_duplicates("case_id").set_index("case_id").loc[wide.index, "label"].to_numpy(int)
            dl = roc.delong_test(lab, wide["fusion"], wide["ct_only_cnn"])
            row.update({"delong_auc_fusion": dl["auc_a"], "delong_auc_ct_only": dl["auc_b"], "delong_p": dl["p"]})
        rows.append(row)
    return pd.DataFrame(rows)


def confusion_matrices(scores: pd.DataFrame, task: str) -> dict[str, np.ndarray]:
    """External confusion matrix (rows true, columns called) of each model of ``task``."""
    k = 2 if task == "binary" else len(clf.HISTOLOGY_CLASSES)
    out = {}
    for model in MODELS:
        c = calls(scores, task, model)
        m = np.zeros((k, k), int)
        np.add.at(m, (c["label"].to_numpy(), c["call"].to_numpy()), 1)
        out[model] = m
    return out


def beside_paper(table: pd.DataFrame) -> pd.DataFrame:
    """Our external AUCs next to the fusion paper's (binary: validation cohort Table 3; multi-class:
    abstract)."""
    from amtlib.paper import reported

    rep = reported()["dmfn_fusion"]
    paper = {("binary", "ct_only_cnn"): rep["binary_validation"]["ct_only_cnn"]["auc"], ("binary", "fusion"): rep["binary_validation"]["fusion"]["auc"],
             ("multiclass", "ct_only_cnn"): rep["multiclass"]["ct_only_cnn"]["auc"], ("multiclass", "fusion"): rep["multiclass"]["fusion"]["auc"]}
    rows = []
    for r in table.itertuples():
        p = paper.get((r.task, r.model), [np.nan] * 3)
        rows.append({"task": r.task, "model": r.model, "n": r.n, "auc": r.auc, "ci_low": r.auc_boot_low, "ci_high": r.auc_boot_high,
                     "paper_auc": p[0], "paper_ci_low": p[1], "paper_ci_high": p[2]})
    return pd.DataFrame(rows)


def ctc_vs_paper(cases: pd.DataFrame) -> pd.DataFrame:
    """CTC level per histology (thymomas per WHO subtype) beside the fusion paper's Table 2 row that
    the demo cohort draws it from (:data:`amtlib.reported.CTC_ROW`): n, mean, SD."""
    from amtlib.reported import CTC_ROW, reported

    rep = reported()["dmfn_fusion"]["table2_ctc_level"]
    sub = clf.text_column(cases, "who_subtype")
    key = np.where(cases["histology"].eq("thymoma") & sub.ne(""), "thymoma_" + sub.str.lower(), cases["histology"].map(lambda h: CTC_ROW.get(h, "others")))
    ctc = pd.to_numeric(cases["ctc_level"], errors="coerce")
    g = ctc.groupby(pd.Series(key, index=cases.index, name="paper_row")).agg(["count", "mean", "std"])
    g["paper_mean"] = [rep.get(k, [np.nan, np.nan])[0] for k in g.index]
    g["paper_sd"] = [rep.get(k, [np.nan, np.nan])[1] for k in g.index]
    return g
