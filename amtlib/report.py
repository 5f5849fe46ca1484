"""The reviewer's report of a run: summary, paper vs regenerated, statistical audit, methods map.

``amt report --run DIR`` (and notebook ``10_report``, the last pipeline step) writes ``DIR/report/``:
``index.html`` (one self-contained page: figures embedded, no network, printable), ``comparison.csv``
(every number of ``reported_values.yaml`` beside its regenerated twin, :func:`amtlib.paper.compare`),
``audit.csv`` (:mod:`amtlib.audit` on the paper's tables and, as a self-check, on the regenerated
ones) and ``methods_map.csv`` (:mod:`amtlib.methods_map`).

This module is the I/O edge: it reads the run folder (any step may be absent: its numbers are then
``missing``), hands plain values to the pure comparison and audit functions, and renders HTML.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from amtlib import audit, io, methods_map, paper
from amtlib.errors import AmtError
from amtlib.paths import RunPaths

REPORT_DIR = "report"
#: Figures shown beside each comparison section (paths relative to the run folder; absent ones skipped).
SECTION_FIGURES: dict[str, tuple[str, ...]] = {
    "Fig 2 (cohort flow)": ("02_split/fig2_flow.png", "01_cohort/cohort_gallery.png"),
    "Methods: training": ("03_train/training_curve.png", "03_train/augmented_batch.png"),
    "Table 3": ("04_evaluate/table3_forest.png",),
    "Table 4": ("05_froc/table4_forest.png",),
    "Fig 4 (text)": ("05_froc/fig4_froc.png", "05_froc/fig4_froc_fp_definitions.png"),
    "Failure modes": ("06_failure/fig5_success.png", "06_failure/fig6_failures.png",
                      "06_failure/radiomics_boxplots.png", "06_failure/dice_vs_size.png"),
}
SPLIT_NAMES = {"train": "training", "tuning": "tuning", "external_test": "external_testing"}


# ------------------------------------------------------------------------------------ reading


def _csv(path: Path) -> pd.DataFrame | None:
    """A run's table, None when the step did not write it (a damaged one is an AmtError)."""
    if not path.is_file():
        return None
    return io.read_csv(path, {"case_id": str, "patient_id": str}, remedy="re-run the step that writes it")


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as exc:
        raise AmtError(path, f"not valid JSON ({exc})", "re-run the step that writes it") from None


def _cell(row: pd.Series, prefix: str) -> list[float] | None:
    vals = [row.get(f"{prefix}_{k}") for k in ("mean", "sd", "ci_low", "ci_high")]
    if any(v is None or pd.isna(v) for v in (vals[0], vals[2], vals[3])):
        return None
    return [float(v) if v is not None and not pd.isna(v) else float("nan") for v in vals]


def _flow_values(P: RunPaths, split: pd.DataFrame | None, manifest: pd.DataFrame | None) -> dict[str, Any]:
    from amtlib.split import split_flow

    out: dict[str, Any] = {}
    flow = _json(P.cohort_flow)
    for k in ("screened", "excluded", "included", "included_institutions"):
        if k in flow:
            out[f"cohort_flow.{k}"] = flow[k]
    if split is not None:
        sf = split_flow(split)
        for box in ("external_test", "training", "tuning"):
            for what in ("cases", "institutions"):
                out[f"cohort_flow.{box}.{what}"] = sf[box][what]
    if manifest is not None and "sex" in manifest:
        sex = manifest["sex"].astype(str).str.upper()
        out["cohort_flow.sex.male"], out["cohort_flow.sex.female"] = int((sex == "M").sum()), int((sex == "F").sum())
    return out


def _table12_values(cases: pd.DataFrame | None) -> dict[str, Any]:
    """Table 1 (age, histology by split) and Table 2 (external vendors) from the manifest joined to the split."""
    from amtlib.subgroups import vendor_key

    out: dict[str, Any] = {}
    if cases is None:
        return out
    ext = cases[cases["split"] == "external_test"]
    for s, name in SPLIT_NAMES.items():
        sub = cases[cases["split"] == s]
        age = pd.to_numeric(sub.get("age"), errors="coerce").dropna() if "age" in sub else pd.Series(dtype=float)
        if len(age):
            out[f"table1.age_median_range.{name}"] = [float(age.median()), float(age.min()), float(age.max())]
        for h in paper.reported()["table1"]["histology_counts"]:
            out[f"table1.histology_counts.{h}.{name}"] = int((sub.get("histology") == h).sum())
    if "manufacturer" in ext:
        vendors = ext["manufacturer"].map(vendor_key).value_counts()
        for v in paper.reported()["table2"]:
            out[f"table2.{v}"] = int(vendors.get(v, 0))
    if "slice_thickness_mm" in ext and len(ext):
        th = sorted(pd.to_numeric(ext["slice_thickness_mm"], errors="coerce").dropna().unique().tolist())
        out["cohort_flow.external_test_slice_thickness_mm"] = th[0] if len(th) == 1 else ", ".join(f"{t:g}" for t in th)
    return out


def _settings_values(config: dict[str, Any], froc: pd.DataFrame | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "train_batch_size" in config:
        out["training.batch_size"] = config["train_batch_size"]
    if "train_lr" in config:
        out["training.optimizer.lr"] = config["train_lr"]
    betas = config.get("train_betas")
    if isinstance(betas, (list, tuple)) and len(betas) == 2:
        out["training.optimizer.beta1"], out["training.optimizer.beta2"] = betas
    if froc is not None and len(froc):
        t = np.sort(froc["iou_threshold"].to_numpy(float))
        out["evaluation.froc_iou_thresholds.start"] = round(float(t[0]), 4)
        out["evaluation.froc_iou_thresholds.stop"] = round(float(t[-1]), 4)
        if len(t) > 1:
            out["evaluation.froc_iou_thresholds.step"] = round(float(np.median(np.diff(t))), 4)
    return out


def _evaluation_values(table3: pd.DataFrame | None, table4: pd.DataFrame | None, froc: pd.DataFrame | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in ([] if table3 is None else table3.to_dict("records")):
        key = r["subgroup"]
        out[f"table3.{key}.n"] = int(r["n"])
        for m in audit.VOXEL_METRICS:
            cell = _cell(pd.Series(r), m)
            if cell is not None:
                out[f"table3.{key}.{m}"] = cell
    for r in ([] if table4 is None else table4.to_dict("records")):
        key = r["subgroup"]
        out[f"table4.{key}.n"] = int(r["n"])
        for t in ("0.1", "0.5"):
            for m in ("sensitivity", "fp_per_scan"):
                cell = _cell(pd.Series(r), f"{m}_iou{t}")
                if cell is not None:
                    out[f"table4.{key}.iou_{t}.{m}"] = cell
    if froc is not None and len(froc):
        f = froc.set_index("iou_threshold")
        low = f.loc[[t for t in f.index if 0.05 - 1e-9 <= t <= 0.15 + 1e-9]]
        for m in ("sensitivity", "fp_per_scan"):
            if len(low):
                out[f"froc_text.iou_0.05_to_0.15.{m}"] = [float(low[m].min()), float(low[m].max())]
        at = [t for t in f.index if np.isclose(t, 0.5)]
        if at:
            r = f.loc[at[0]]
            base = "froc_text.iou_0.50."
            for m, sd_key, ci_key in (("sensitivity", "sensitivity_sd", "sensitivity_ci"), ("fp_per_scan", "fp_sd", "fp_ci")):
                out[base + m] = [float(r[m]), float(r[f"{m}_sd"]), float(r[f"{m}_ci_low"]), float(r[f"{m}_ci_high"])]
                out[base + sd_key] = float(r[f"{m}_sd"])
                out[base + ci_key] = [float(r[f"{m}_ci_low"]), float(r[f"{m}_ci_high"])]
    return out


def _failure_values(step: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    groups, focus, cats = _csv(step / "groups.csv"), _csv(step / "radiomics_focus.csv"), _csv(step / "failure_categories.csv")
    if groups is not None:
        for g in ("bottom", "top"):
            out[f"radiomics_failure_modes.groups.{g}"] = int((groups["group"] == g).sum())
    if focus is not None:
        for r in focus.to_dict("records"):
            if not pd.isna(r.get("p_value")):
                out[f"radiomics_failure_modes.p_values.{r['name']}"] = float(r["p_value"])
        larger = {r["name"]: r["larger_in"] for r in focus.to_dict("records") if r["name"] in paper.PAPER_DIRECTION}
        if larger:
            out["radiomics_failure_modes.direction"] = larger
    if cats is not None and len(cats):
        seen = cats[cats["n_cases"] > 0]
        out["radiomics_failure_modes.qualitative_failure_modes"] = [
            f"{r['category']}{' into ' + str(r['fp_main_structure']) if isinstance(r['fp_main_structure'], str) else ''}: {int(r['n_cases'])}"
            for r in seen.to_dict("records")]
    return out


def _acquisition_values(cases: pd.DataFrame | None) -> dict[str, Any]:
    """Methods, image acquisition: the central hospital's kVp, slice thicknesses and FOV, the referral
    hospitals' kVp and thickness ranges, from the manifest's DICOM header columns."""
    from amtlib.split import CENTRAL

    out: dict[str, Any] = {}
    if cases is None or "institution" not in cases:
        return out
    central = cases["institution"].astype(str).str.upper() == CENTRAL
    base = "acquisition."
    num = lambda sub, c: pd.to_numeric(sub[c], errors="coerce").dropna() if c in sub else pd.Series(dtype=float)  # noqa: E731
    cen, ref = cases[central], cases[~central]
    kvp = sorted(num(cen, "kvp").unique().tolist())
    if kvp:
        out[base + "central_hospital.kvp"] = kvp[0] if len(kvp) == 1 else kvp
    th = sorted(num(cen, "slice_thickness_mm").unique().tolist())
    if th:
        out[base + "central_hospital.slice_thickness_mm"] = th
    if {"spacing_x", "shape_x"} <= set(cen.columns) and len(cen):
        fov = num(cen, "spacing_x") * num(cen, "shape_x")
        if len(fov):
            out[base + "central_hospital.fov_mm"] = [float(fov.min()), float(fov.max())]
    for col, leaf in (("kvp", "kvp"), ("slice_thickness_mm", "slice_thickness_mm")):
        v = num(ref, col)
        if len(v):
            out[f"{base}referral_hospitals.{leaf}"] = [float(v.min()), float(v.max())]
    return out


def _auc_row(r: dict[str, Any]) -> list[float]:
    return [float(r[c]) for c in ("auc", "auc_ci_low", "auc_ci_high", "accuracy", "sensitivity", "specificity", "ppv", "npv")]


#: Key prefix of the TET paper's values (amtlib/data/reported_values.yaml).
_TET = "tet_risk_stratification."


def _tet_values(step: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Step 07's twins of the TET paper's numbers: Table 2 rows (external set scored on the ROIs of
    ``roi_source``; training rows), DeLong CNN vs SVM, the drawn correlates' rates, its settings."""
    roi = config.get("roi_source", "predicted")
    return {**_tet_settings(step, config), **_tet_feature_counts(step / "radiomics_features.csv"),
            **_tet_auc_rows(_csv(step / "auc.csv"), _csv(step / "delong_cnn_vs_svm.csv"), roi),
            **_tet_correlate_rates(_csv(step / "cohort_summary.csv")), **_tet_cohort(_csv(step / "scores.csv"))}


def _tet_settings(step: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The step's settings the paper states: the radiomics and CNN parameters of the config, and (when
    the step ran) the interpolator and the HU window it used."""
    from amtlib.classify.arms import TET_WINDOW_HU

    settings = {"radiomics.resampled_spacing_mm": "histology_spacing_mm", "radiomics.bin_width": "histology_bin_width",
                "radiomics.icc_threshold": "histology_icc", "radiomics.correlation_threshold": "histology_corr",
                "radiomics.lasso_cv_folds": "histology_lasso_folds", "cnn.input_size_px": "cnn_size_px",
                "cnn.training_offsets_mm": "cnn_offsets_mm", "cnn.lr": "cnn_lr", "cnn.epochs": "cnn_epochs",
                "cnn.batch_size": "cnn_batch_size"}
    out: dict[str, Any] = {_TET + leaf: config[param] for leaf, param in settings.items() if param in config}
    if "histology_smote" in config:
        out[_TET + "radiomics.smote_ratio"] = 1.0 if config["histology_smote"] else 0.0
    if step.is_dir():
        out[_TET + "radiomics.interpolator"] = "bspline"  # amtlib.evaluation.radiomics.radiomics_params (sitkBSpline)
        lo, hi = TET_WINDOW_HU
        out[_TET + "radiomics.window_width_hu"], out[_TET + "radiomics.window_level_hu"] = hi - lo, (hi + lo) / 2
    return out


def _tet_feature_counts(features_csv: Path) -> dict[str, Any]:
    """How many shape, first-order and texture features the radiomics table's header holds, and in all."""
    if not features_csv.is_file():
        return {}
    with open(features_csv) as f:
        columns = f.readline().strip().split(",")
    kinds = {"shape": ("_shape_",), "firstorder": ("_firstorder_",),
             "texture": ("_glcm_", "_glrlm_", "_glszm_", "_gldm_", "_ngtdm_")}
    counts = {k: sum(any(t in c for t in tags) for c in columns) for k, tags in kinds.items()}
    return {f"{_TET}radiomics.features_extracted.{k}": n for k, n in {**counts, "total": sum(counts.values())}.items()}


def _tet_auc_rows(auc: pd.DataFrame | None, delong: pd.DataFrame | None, roi: str) -> dict[str, Any]:
    """Table 2 rows of the two models (training on the reference ROIs; external test on ``roi``) and
    the DeLong test of CNN vs SVM on ``roi``; a model without an AUC is left out."""
    out: dict[str, Any] = {}
    if auc is not None:
        names = {"cnn_resnet2d": "resnet101", "radiomics_svm": "rad_svm"}
        for r in auc.to_dict("records"):
            name = names.get(r["model"])
            if name is None or pd.isna(r.get("auc")):
                continue
            if r["split"] == "train" and r["roi"] == "reference":
                out[f"{_TET}table2.{name}_training"] = _auc_row(r)
            elif r["split"] == "external_test" and r["roi"] == roi:
                out[f"{_TET}table2.{name}"] = _auc_row(r)
    if delong is not None and len(delong[delong["roi"] == roi]):
        r = delong[delong["roi"] == roi].iloc[0]
        out[_TET + "cnn_vs_svm_delong_p_below"] = [float(r["p"]), float(r["auc_cnn"]), float(r["auc_svm"])]
    return out


def _tet_correlate_rates(summary: pd.DataFrame | None) -> dict[str, Any]:
    """Table 1's pooled rates of an unclear margin and heterogeneous enhancement per risk group, with n."""
    out: dict[str, Any] = {}
    if summary is None:
        return out
    t = summary.set_index("variable")
    for group in ("LRT", "HRT"):
        if group not in t or "n" not in t.index:
            continue
        n = int(float(t.loc["n", group]))
        for row, leaf in (("margin_irregular_pct", "margin_unclear"), ("heterogeneous_enhancement_pct", "heterogeneous_enhancement")):
            if row in t.index and not pd.isna(t.loc[row, group]):
                out[f"{_TET}table1_pooled_rates.{group}.{leaf}"] = [float(t.loc[row, group]) / 100, n]
    return out


def _tet_cohort(scores: pd.DataFrame | None) -> dict[str, Any]:
    """Cases, low-risk and high-risk counts of the training and external sets."""
    out: dict[str, Any] = {}
    if scores is None or not {"split", "label", "case_id"} <= set(scores.columns):
        return out
    cases = scores.drop_duplicates(["case_id", "split"])
    for split, leaf in (("train", "training"), ("external_test", "external_testing")):
        sub = cases[cases["split"] == split]
        out[f"{_TET}cohort.{leaf}.n"] = len(sub)
        out[f"{_TET}cohort.{leaf}.lrt"] = int((sub["label"] == 0).sum())
        out[f"{_TET}cohort.{leaf}.hrt"] = int((sub["label"] == 1).sum())
    return out


def _dmfn_values(step: Path) -> dict[str, Any]:
    """Step 08's twins of the fusion paper's numbers: external AUCs with bootstrap CIs, the binary
    operating point (with its denominators), the fusion-vs-CT test, the drawn CTC levels."""
    out: dict[str, Any] = {}
    base = "dmfn_fusion."
    auc = _csv(step / "auc.csv")
    scores = _csv(step / "scores.csv")
    n_pos = n_neg = None
    if scores is not None and {"task", "split", "label", "case_id"} <= set(scores.columns):
        ext = scores[(scores["task"] == "binary") & (scores["split"] == "external_test")].drop_duplicates("case_id")
        n_pos, n_neg = int((ext["label"] == 1).sum()), int((ext["label"] == 0).sum())
        cases = scores[scores["task"] == "binary"].drop_duplicates(["case_id", "split"])
        for split, leaf in (("train", "training"), ("tuning", "validation"), ("external_test", "test")):
            if (cases["split"] == split).any():
                out[f"{base}cohort.{leaf}"] = int((cases["split"] == split).sum())
    if auc is not None:
        for r in auc.to_dict("records"):
            if pd.isna(r.get("auc")):
                continue
            cell = [float(r["auc"]), float(r["auc_boot_low"]), float(r["auc_boot_high"])]
            if r["task"] == "binary" and r["model"] in ("ct_only_cnn", "fusion"):
                out[f"{base}binary_validation.{r['model']}.auc"] = cell
                if r["model"] == "fusion":
                    out[f"{base}binary_test.fusion.auc"] = cell
                dens = {"sensitivity": n_pos, "specificity": n_neg, "accuracy": None if n_pos is None else n_pos + n_neg}
                for m, n in dens.items():
                    if n is not None and not pd.isna(r.get(m)):
                        out[f"{base}binary_validation.{r['model']}.{m}"] = [float(r[m]), n]
                for m in ("ppv", "npv"):
                    if not pd.isna(r.get(m)):
                        out[f"{base}binary_validation.{r['model']}.{m}"] = float(r[m])
            elif r["task"] == "multiclass" and r["model"] in ("ct_only_cnn", "fusion"):
                out[f"{base}multiclass.{r['model']}.auc"] = cell
    tests = _csv(step / "fusion_vs_ct.csv")
    if tests is not None and (tests["task"] == "multiclass").any():
        out[base + "multiclass.fusion_vs_ct_only_p"] = float(tests.loc[tests["task"] == "multiclass", "mcnemar_p"].iloc[0])
    ctc = _csv(step / "ctc_by_histology.csv")
    if ctc is not None and "paper_row" in ctc:
        from amtlib.reported import reported

        for row in reported()["dmfn_fusion"]["table2_ctc_level"]:  # a row without a case here: n = 0
            out[f"{base}table2_ctc_level.{row}"] = [float("nan"), float("nan"), 0]
        for r in ctc.to_dict("records"):
            out[f"{base}table2_ctc_level.{r['paper_row']}"] = [float(r["mean"]), float(r["std"]), int(r["count"])]
    return out


def regenerated_values(run_dir: str | Path) -> dict[str, Any]:
    """The run's twin of every reported leaf it can regenerate (``amtlib.paper.reported_leaves`` keys)."""
    P = RunPaths(run_dir)
    manifest, split = _csv(P.manifest), _csv(P.split_csv)
    cases = None
    if manifest is not None and split is not None:
        cases = manifest.drop(columns=["split"], errors="ignore").merge(split[["case_id", "split"]], on="case_id", how="inner")
    froc = _csv(P.froc)
    config = _json(P.root / "run.json").get("config", {})
    return {
        **_flow_values(P, split, manifest), **_table12_values(cases), **_settings_values(config, froc),
        **_acquisition_values(cases),
        **_evaluation_values(_csv(P.root / "04_evaluate" / "table3.csv"), _csv(P.root / "05_froc" / "table4.csv"), froc),
        **_failure_values(P.root / "06_failure"),
        **_tet_values(P.root / "07_histology", config), **_dmfn_values(P.root / "08_fusion"),
    }


def data_digest(manifest: pd.DataFrame | None) -> str | None:
    """SHA-256 over the manifest's sorted ``case_id, image_sha256, mask_sha256`` rows: one digest of the data."""
    if manifest is None or not {"image_sha256", "mask_sha256"} <= set(manifest.columns):
        return None
    rows = sorted(f"{r.case_id},{r.image_sha256},{r.mask_sha256}" for r in manifest.itertuples(index=False))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def is_synthetic(run_dir: str | Path, config: dict[str, Any]) -> bool:
    """True when the cohort is the generated demo cohort (no ``raw_dir`` or ``manifest_in`` of the user's)."""
    P = RunPaths(run_dir)
    generated = (P.root / "00_data" / "raw_summary.json").is_file() or (P.raw_dir / "synthesis.csv").is_file()
    return generated and not config.get("raw_dir") and not config.get("manifest_in")


def _final_state(rec: dict[str, Any], now: str | None = None) -> tuple[dict[str, dict[str, Any]], Any, Any]:
    """Steps, status and end time of ``run.json``, written as the run will end when the running step is
    this report (the last step): it is ``ok`` as of ``now`` (UTC, ISO 8601), and so is the run when every
    other step is ``ok``. Any other state is shown as recorded."""
    from datetime import datetime, timezone

    now = now or datetime.now(timezone.utc).isoformat(timespec="seconds")
    raw = rec.get("steps", {})
    steps = {name: {"status": s.get("status") + (" (run in JupyterLab)" if s.get("executed_in") == "jupyterlab" else "")
                    if s.get("status") else s.get("status"), "duration_s": s.get("duration_s"), "ended": s.get("ended")}
             for name, s in sorted(raw.items())}
    mine = [n for n, s in raw.items() if s.get("status") == "running" and n.endswith("_report")]
    status, ended = rec.get("status"), rec.get("ended")
    if status == "running" and mine and all(s["status"].startswith("ok") for n, s in steps.items() if n not in mine):
        for n in mine:
            started = raw[n].get("started")
            took = (datetime.fromisoformat(now) - datetime.fromisoformat(started)).total_seconds() if started else None
            steps[n] = {"status": "ok", "duration_s": None if took is None else round(took, 1), "ended": now}
        status, ended = "ok", now
    return steps, status, ended


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """What was run: commit, dirty flag, config, data source and digest, device, seeds, step durations."""
    P = RunPaths(run_dir)
    rec = _json(P.root / "run.json")
    if not rec:
        raise AmtError(P.root / "run.json", "not found", f"is {P.root} a run folder? Run `amt run` first")
    config = rec.get("config", {})
    manifest = _csv(P.manifest)
    flow = _json(P.cohort_flow)
    source = (config.get("manifest_in") or config.get("raw_dir") or flow.get("source", {}).get("raw_dir")
              or str(P.raw_dir))
    # the report is the last step: while it writes this page, the run's state is the state it ends in
    steps, status, ended = _final_state(rec)
    return {
        "run_dir": str(P.root), "commit": rec.get("git", {}).get("commit"), "dirty": rec.get("git", {}).get("dirty"),
        "config_file": rec.get("config_file"), "config": config, "status": status,
        "started": rec.get("started"), "ended": ended, "device": rec.get("device", {}),
        "seeds": rec.get("seeds", {}), "steps": steps, "data_source": source,
        "data_digest": data_digest(manifest), "n_cases": None if manifest is None else len(manifest),
        "synthetic": is_synthetic(P.root, config), "versions": rec.get("versions", {}),
        "changed_in_jupyterlab": rec.get("changed_in_jupyterlab"),
    }


def audit_run(run_dir: str | Path) -> pd.DataFrame:
    """The audit of the paper's tables plus the same rules on the run's Tables 3 and 4 (``source`` column)."""
    P = RunPaths(run_dir)
    frames = [audit.audit_reported(paper.reported())]
    t3, t4 = _csv(P.root / "04_evaluate" / "table3.csv"), _csv(P.root / "05_froc" / "table4.csv")
    regen: list[audit.Finding] = []
    if t3 is not None:
        regen += audit.audit_table3(audit.table3_cells(t3), source="regenerated")
    if t4 is not None:
        regen += audit.audit_table4(audit.table4_cells(t4), source="regenerated")
    frames.append(audit.findings_frame(regen))
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------- design, causes


def run_design(run_dir: str | Path, config: dict[str, Any]) -> dict[str, Any]:
    """What the run was built to give: ``scale`` (of a generated cohort; 1.0 otherwise), ``generated``
    and ``full_scale`` (each setting leaf -> its value in ``configs/paper.yaml``, read with the same readers)."""
    generated = is_synthetic(run_dir, config)
    scale = float(config.get("synth_scale") or 1.0) if generated else 1.0
    full: dict[str, Any] = {}
    paper_yaml = Path(__file__).resolve().parent.parent / "configs" / "paper.yaml"
    if paper_yaml.is_file():
        import yaml

        pcfg = yaml.safe_load(paper_yaml.read_text()) or {}
        full = {**_settings_values(pcfg, None), **_tet_values(Path(run_dir) / "no such step", pcfg)}
    return {"scale": scale, "generated": generated, "full_scale": full}


#: Tables of ``benchmarks/seed_spread.py`` in a run folder: file -> (what was re-run, column -> the leaves it spreads).
SEED_SPREAD_FILES: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "seed_spread.csv": ("the U-Net retrained (steps 03-05)", {
        "dice": ("table3.overall.dice",), "precision": ("table3.overall.precision",), "recall": ("table3.overall.recall",),
        "sens_iou0.1": ("table4.overall.iou_0.1.sensitivity",),
        "sens_iou0.5": ("table4.overall.iou_0.5.sensitivity", "froc_text.iou_0.50.sensitivity"),
        "fp_iou0.1": ("table4.overall.iou_0.1.fp_per_scan",),
        "fp_iou0.5": ("table4.overall.iou_0.5.fp_per_scan", "froc_text.iou_0.50.fp_per_scan")}),
    "seed_spread_07.csv": ("the WHO-risk classifiers retrained (step 07)", {
        "cnn_resnet2d_external_auc": ("tet_risk_stratification.table2.resnet101",),
        "radiomics_svm_external_auc": ("tet_risk_stratification.table2.rad_svm",),
        "cnn_resnet2d_train_auc": ("tet_risk_stratification.table2.resnet101_training",),
        "radiomics_svm_train_auc": ("tet_risk_stratification.table2.rad_svm_training",)}),
    "seed_spread_08.csv": ("the fusion models retrained (step 08)", {
        "binary_fusion_auc": ("dmfn_fusion.binary_validation.fusion.auc", "dmfn_fusion.binary_test.fusion.auc"),
        "binary_ct_only_cnn_auc": ("dmfn_fusion.binary_validation.ct_only_cnn.auc",),
        "multiclass_fusion_auc": ("dmfn_fusion.multiclass.fusion.auc",),
        "multiclass_ct_only_cnn_auc": ("dmfn_fusion.multiclass.ct_only_cnn.auc",)}),
}


def seed_spreads(root: Path) -> dict[str, tuple[float, float, str]]:
    """Leaf key -> (min, max, seeds) over the run's seed-spread tables (none: {})."""
    out: dict[str, tuple[float, float, str]] = {}
    for name, (_, columns) in SEED_SPREAD_FILES.items():
        t = _csv(root / name)
        if t is None or len(t) < 2:
            continue
        seeds = ", ".join(str(int(v)) for v in t["seed"])
        for col, keys in columns.items():
            if col in t and t[col].notna().any():
                for k in keys:
                    out[k] = (float(t[col].min()), float(t[col].max()), seeds)
    return out


def audit_flagged_keys(findings: pd.DataFrame) -> set[str]:
    """Leaf keys of the paper's Table 3/4 cells that the audit finds inconsistent (CI width, attainable FP/scan)."""
    keys = set()
    bad = findings[(findings["source"] == "paper") & (findings["verdict"] == audit.INCONSISTENT)]
    for r in bad.itertuples():
        parts = str(r.row).split()
        if r.table == "Table 3" and len(parts) == 2:
            keys.add(f"table3.{parts[0]}.{parts[1]}")
        elif r.table == "Table 4" and len(parts) == 3:
            keys.add(f"table4.{parts[0]}.{parts[2]}.{parts[1]}")
    return keys


def add_causes(comp: pd.DataFrame, regen: dict[str, Any], spreads: dict[str, tuple[float, float, str]],
               flagged: set[str]) -> pd.DataFrame:
    """``comparison.csv`` with a ``cause`` column: for each differing leaf the seed spread, the audit or
    the README known gap that explains it ('no known cause' when none does); empty elsewhere."""
    causes = []
    leaves = paper.reported_leaves()
    for r in comp.itertuples():
        if r.verdict != paper.DIFFER:
            causes.append("")
            continue
        c = paper.cause_of(r.key, regen.get(r.key), spreads.get(r.key), r.key in flagged, paper._paper_value(r.key, leaves))
        causes.append(c or "no known cause: a real difference")
    return comp.assign(cause=causes)


# ------------------------------------------------------------------------------------- checklist

#: Reporting items (CLAIM 2024 and TRIPOD+AI, by topic; item numbers differ between versions) that a run
#: can evidence: (topic, guideline, files of the run that show it, what a run cannot show).
CHECKLIST: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("Data sources (where the images and labels come from)", "CLAIM 2024; TRIPOD+AI",
     ("01_cohort/cohort_flow.json", "00_data/raw_summary.json", "config.yaml"), ""),
    ("Eligibility criteria and the flow of participants", "CLAIM 2024; TRIPOD+AI",
     ("01_cohort/cohort_flow.json", "01_cohort/exclusions.csv", "02_split/fig2_flow.png"), ""),
    ("Data partitions: how assigned, their sizes", "CLAIM 2024; TRIPOD+AI",
     ("02_split/split.csv", "02_split/splits.json"), ""),
    ("Patient- and site-level split, no leakage between partitions", "CLAIM 2024; TRIPOD+AI",
     ("02_split/leakage_audit.json",), ""),
    ("Characteristics of each partition (demographics, histology, vendors)", "CLAIM 2024; TRIPOD+AI",
     ("02_split/table1.csv", "02_split/table2.csv"), ""),
    ("Reference standard: the masks scored against, with checksums", "CLAIM 2024",
     ("01_cohort/manifest.csv",), ""),
    ("Annotators' qualifications and inter-reader agreement", "CLAIM 2024", (),
     "a property of how the data were labelled, not of a run: state it with the data (data_manifest/README.md)"),
    ("Data pre-processing (resampling, intensity normalisation)", "CLAIM 2024",
     ("03_train/model_card.md", "config.yaml"), ""),
    ("Model: architecture, initialisation, number of parameters", "CLAIM 2024; TRIPOD+AI",
     ("03_train/model_card.md", "03_train/model.pt"), ""),
    ("Training: hyper-parameters, augmentation, model selection", "CLAIM 2024; TRIPOD+AI",
     ("03_train/train_log.csv", "03_train/training_curve.png", "config.yaml"), ""),
    ("Performance metrics and their definitions, uncertainty (CIs)", "CLAIM 2024; TRIPOD+AI",
     ("04_evaluate/table3.csv", "04_evaluate/conventions.csv", "05_froc/froc.csv"), ""),
    ("Evaluation on an external test set (institutions unseen in training)", "CLAIM 2024; TRIPOD+AI",
     ("04_evaluate/per_case.csv", "05_froc/table4.csv"), ""),
    ("Results by subgroup (vendor, size, histology) with CIs", "CLAIM 2024; TRIPOD+AI",
     ("04_evaluate/table3.csv", "05_froc/table4.csv", "04_evaluate/table3_forest.png"), ""),
    ("Failure analysis of poorly segmented cases", "CLAIM 2024",
     ("06_failure/failure_categories.csv", "06_failure/radiomics_tests.csv", "06_failure/fig6_failures.png"), ""),
    ("Robustness: run-to-run variation with other seeds", "CLAIM 2024; TRIPOD+AI",
     ("seed_spread.csv", "seed_spread_07.csv", "seed_spread_08.csv"),
     "run benchmarks/seed_spread.py on this run folder"),
    ("Missing data and how they were handled", "TRIPOD+AI",
     ("01_cohort/exclusions.csv", "04_evaluate/table3.csv"), ""),
    ("Intended use and limits of the model", "CLAIM 2024; TRIPOD+AI", ("03_train/model_card.md",), ""),
    ("Code, environment and provenance (commit, versions, seeds)", "CLAIM 2024; TRIPOD+AI",
     ("run.json", "config.yaml", "notebooks"), ""),
    ("Sample size justification", "CLAIM 2024; TRIPOD+AI", (),
     "a design decision of the study, taken before any run"),
    ("Calibration of predicted probabilities", "TRIPOD+AI", (),
     "the segmentation masks are thresholded; steps 07-08 report discrimination (AUC) only"),
    ("Comparison with clinicians or a clinical baseline", "CLAIM 2024", (),
     "neither the paper nor a run reads the images with human readers"),
    ("Ethics approval, consent and de-identification", "CLAIM 2024; TRIPOD+AI", (),
     "a property of the study and the data, not of a run"),
)
CHECKLIST_COLUMNS: tuple[str, ...] = ("item", "guideline", "status", "evidence", "note")


def checklist(root: Path) -> pd.DataFrame:
    """The reporting checklist of a run (``checklist.csv``): per item, the run files that show it
    (those present), else 'not shown by a run' with why, or 'not in this run' when its step did not run."""
    rows = []
    for item, guideline, files, why_not in CHECKLIST:
        present = [f for f in files if (root / f).exists()]
        if present:
            status, note = "shown", ""
        elif files:
            status, note = "not in this run", why_not or "the step that writes " + ", ".join(files) + " did not run"
        else:
            status, note = "not shown by a run", why_not
        rows.append({"item": item, "guideline": guideline, "status": status, "evidence": "; ".join(present), "note": note})
    return pd.DataFrame(rows, columns=list(CHECKLIST_COLUMNS))


# ------------------------------------------------------------------------------------- HTML

CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:1em 1.5em;color:#222}
h1{font-size:1.6em;margin:.3em 0} h2{border-bottom:2px solid #ccd;padding-bottom:.2em;margin-top:1.6em}
h3{margin:1.2em 0 .4em} h4{margin:1em 0 .3em}
table{border-collapse:collapse;margin:.5em 0;font-size:12.5px;width:100%} th,td{border:1px solid #ccd;padding:3px 6px;vertical-align:top;text-align:left;overflow-wrap:break-word}
.cmp td:first-child,.mm td:nth-child(n+3),td code{word-break:break-all} .diffs td:first-child{min-width:11em}
th{background:#eef0f6} tr:nth-child(even) td{background:#fafbfd}
.banner{background:#fff4d6;border:1px solid #e0b84a;padding:.6em 1em;border-radius:4px;margin:.8em 0}
.verdict{font-size:1.15em;padding:.6em 1em;border-radius:4px;margin:.5em 0;border:1px solid #99a;background:#f6f7fb}
.counts span{display:inline-block;margin-right:1.2em}
.agrees,.consistent,.shown{color:#176b2c;font-weight:600} .differs,.inconsistent{color:#b01c1c;font-weight:600}
.as-designed{color:#1d4f91;font-weight:600} .missing,.cannot-tell,.not-compared,.both-zero,.not-shown-by-a-run,.not-in-this-run{color:#666}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:.8em;margin:.6em 0}
figure{margin:0} figure img{width:100%;border:1px solid #ddd;cursor:zoom-in} figcaption{font-size:12px;color:#555}
#lightbox{display:none;position:fixed;inset:0;background:rgba(0,0,0,.85);z-index:10;cursor:zoom-out;padding:1em;text-align:center}
#lightbox img{max-width:100%;max-height:100%;background:#fff} #lightbox.open{display:block}
nav a{margin-right:1em} code{font-size:12px} details{margin:.4em 0}
@media print{nav,#lightbox{display:none} details{display:block} h2{page-break-before:always} h2:first-of-type{page-break-before:avoid}}
"""
#: Click a figure to see it at full size (no network: the image is the page's own data URI).
LIGHTBOX = """<div id="lightbox" role="dialog" aria-label="figure at full size"><img alt=""></div>
<script>
(function(){var box=document.getElementById('lightbox'),big=box.querySelector('img');
document.addEventListener('click',function(e){var t=e.target;
 if(t.tagName==='IMG'&&t.closest('figure')){big.src=t.src;big.alt=t.alt;box.classList.add('open');}
 else if(box.contains(t)){box.classList.remove('open');}});
document.addEventListener('keydown',function(e){if(e.key==='Escape')box.classList.remove('open');});})();
</script>"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _table(df: pd.DataFrame, verdict_col: str | None = "verdict", css: str = "") -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    body = []
    for r in df.itertuples(index=False):
        cells = []
        for c, v in zip(df.columns, r):
            cls = f' class="{_e(str(v).replace(" ", "-"))}"' if c == verdict_col else ""
            cells.append(f"<td{cls}>{_e(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cls = f' class="{css}"' if css else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _figure(path: Path, root: Path) -> str:
    """A figure inlined as base64, only when it is a real PNG file inside the run folder: a link or a
    file of another kind under a figure's name (a planted ``fig2_flow.png -> secret.txt``) is named, never embedded."""
    real = not path.is_symlink() and path.is_file() and path.resolve().is_relative_to(root.resolve())
    if real:
        with open(path, "rb") as f:
            real = f.read(8) == PNG_SIGNATURE
    if not real:
        return f"<p class=\"missing\">{_e(path.relative_to(root))}: not embedded (not a PNG file of this run folder)</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{_e(path.name)}" title="click to enlarge" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(path.relative_to(root))} (click to enlarge)</figcaption></figure>")


def _figures(paths: Sequence[Path], root: Path) -> str:
    return f'<div class="figs">{"".join(_figure(f, root) for f in paths)}</div>' if paths else ""


def _summary_html(s: dict[str, Any]) -> str:
    dev = s["device"] or {}
    device = dev.get("name") or f"{dev.get('type', '?')} ({dev.get('cpu_count', '?')} cores)"
    rows = [
        ("run folder", s["run_dir"]), ("status", s["status"]), ("started / ended", f"{s['started']} / {s['ended'] or '–'}"),
        *([("changed in JupyterLab", f"{s['changed_in_jupyterlab']}: the steps marked 'run in JupyterLab' ran there "
            "after this run; the next amt run re-runs them")] if s.get("changed_in_jupyterlab") else []),
        ("commit", s["commit"]), ("uncommitted changes (dirty)", s["dirty"]), ("config", s["config_file"]),
        ("data source", s["data_source"]), ("data digest (SHA-256 of the manifest's image and mask checksums)", s["data_digest"]),
        ("cases in the cohort", s["n_cases"]), ("device", device), ("seeds", ", ".join(f"{k}={v}" for k, v in s["seeds"].items())),
        ("python, torch, amtlib", ", ".join(str(s["versions"].get(k)) for k in ("python", "torch", "amtlib"))),
    ]
    out = _table(pd.DataFrame(rows, columns=["item", "value"]), None)
    steps = pd.DataFrame([{"step": k, **v} for k, v in s["steps"].items()], columns=["step", "status", "duration_s", "ended"])
    steps = steps.astype(object).where(steps.notna(), "")
    out += "<h3>Steps</h3>" + _table(steps, None)
    out += "<details><summary>Resolved configuration</summary>" + _table(
        pd.DataFrame([(k, json.dumps(v)) for k, v in s["config"].items()], columns=["parameter", "value"]), None) + "</details>"
    return out


def _synthetic_banner(s: dict[str, Any]) -> str:
    if not s["synthetic"]:
        return ""
    scale = s["config"].get("synth_scale")
    return ('<p class="banner"><b>The data are synthetic.</b> This run used the generated demo cohort (public CT '
            "backgrounds with inserted tumours and the paper's cohort structure), not the paper's patients. The "
            "comparison below is of the findings and of the analysis running end to end, not of the clinical numbers."
            + (f" The cohort was generated at scale {_e(scale)} of the paper's: its counts are compared with "
               f"{_e(scale)} x the paper's and read <i>as designed</i> when they match." if scale not in (None, 1, 1.0) else "")
            + "</p>")


def _label(key: str) -> str:
    """A leaf key for people: ``table4.overall.iou_0.1.fp_per_scan`` -> ``table4 · overall · IoU 0.1 · FP/scan``."""
    words = {"fp_per_scan": "FP/scan", "dice": "Dice", "iou": "IoU", "n": "n", "tet_risk_stratification": "TET paper",
             "dmfn_fusion": "fusion paper", "resnet101": "ResNet 101 (external)", "rad_svm": "radiomics SVM (external)"}
    parts = key.replace("iou_0.", "IoU 0,").split(".")
    return " · ".join(words.get(p, p.replace("IoU 0,", "IoU 0.").replace("_", " ")) for p in parts)


def _headline_html(comp: pd.DataFrame, cls: dict[str, Any]) -> str:
    """The verdict a reviewer reads first: the four counts, then the real differences with their causes."""
    out = (f'<div class="verdict">Overall: <b>{_e(cls["classification"])}</b>: {cls[paper.AGREE]} of {cls["compared"]} '
           "values that can show it agree."
           f'<div class="counts"><span class="as-designed">as designed: {cls[paper.AS_DESIGNED]}</span>'
           f'<span class="agrees">agrees: {cls[paper.AGREE]}</span><span class="differs">differs: {cls[paper.DIFFER]}</span>'
           f'<span class="not-compared">not compared: {cls["not compared in all"]}</span></div></div>'
           f"<p><i>As designed</i>: the run gives what it was built to give (counts at the cohort's scale, rates and "
           f"settings the demo is made with), so it is no evidence either way. <i>Not compared</i>: "
           f"{cls[paper.NOT_COMPARED]} statements that are no number to compare (methods, the related papers' own "
           f"cohorts, parts of a cell), {cls[paper.BOTH_ZERO]} values that are 0 on both sides (equal, no evidence) and "
           f"{cls[paper.MISSING]} values of steps that did not run or of empty subgroups. "
           f"Classification rule: {_e(cls['rule'])}.</p>")
    diff = comp[comp["verdict"] == paper.DIFFER]
    diff = diff.assign(_known=~diff["cause"].str.startswith("no known cause")).sort_values("_known", kind="stable")
    if len(diff):
        rows = pd.DataFrame({"value": [_label(k) for k in diff["key"]], "paper": diff["paper"], "regenerated": diff["regenerated"],
                             "why": diff["why"], "cause": diff["cause"]})
        out += f'<h3 class="differences">The {len(diff)} real differences</h3>' + _table(rows, None, css="diffs")
    return out


def _section_tables(sub: pd.DataFrame) -> str:
    cols = ["key", "rule", "paper", "regenerated", "verdict", "why"]
    shown = sub[~sub["verdict"].isin([paper.NOT_COMPARED])]
    rest = sub[sub["verdict"] == paper.NOT_COMPARED]
    out = _table(shown[cols], css="cmp") if len(shown) else ""
    if len(rest):
        label = "statements not compared (methods, the related paper's own cohort, parts of a cell)"
        out += (f"<details><summary>{len(rest)} {label}</summary>"
                f"{_table(rest[['key', 'rule', 'paper', 'regenerated', 'why']], None)}</details>")
    return out


def _counts_note(sub: pd.DataFrame) -> str:
    v = sub["verdict"].value_counts()
    compared = int(v.get(paper.AGREE, 0) + v.get(paper.DIFFER, 0))
    parts = [f"{int(v.get(paper.AGREE, 0))} of {compared} agree"] if compared else []
    parts += [f"{int(v[k])} {k}" for k in (paper.AS_DESIGNED, paper.BOTH_ZERO, paper.MISSING, paper.NOT_COMPARED) if v.get(k)]
    return ", ".join(parts) or "nothing to compare"


#: Figures of the related papers' steps, shown with their sections.
RELATED_FIGURES: dict[str, tuple[str, ...]] = {
    paper.TET_TITLE: ("07_histology/roc_external.png", "07_histology/gradcam.png"),
    paper.FUSION_TITLE: ("08_fusion/confusion_binary.png", "08_fusion/confusion_multiclass.png"),
}


def _comparison_html(comp: pd.DataFrame, root: Path) -> str:
    out = "<p>Verdict rules: " + "; ".join(f"<b>{_e(k)}</b>: {_e(v)}" for k, v in paper.RULES.items()) + ".</p>"
    group = None
    sections = list(comp.groupby("section", sort=False))
    # within a related paper, its results (AUCs) first, then the settings and cohorts they rest on
    first = ("AUC", "benign vs malignant", "multi-class")
    def order(item: tuple[str, Any]) -> tuple[int, bool]:
        title = next((t for t in RELATED_FIGURES if item[0].startswith(t + ": ")), None)
        part = item[0][len(title) + 2:] if title else ""
        return (list(RELATED_FIGURES).index(title) if title else -1, not any(w in part for w in first))

    sections.sort(key=order)
    for section, sub in sections:
        title = next((t for t in RELATED_FIGURES if section.startswith(t + ": ")), None)
        head, part = (title, section[len(title) + 2:]) if title else (section, "")
        if part and head != group:
            group = head
            out += f'<h3 class="related">{_e(head)}</h3>' + _seed_spread_html(root, head) + _figures(
                [root / p for p in RELATED_FIGURES.get(head, ()) if (root / p).is_file()], root)
        title = f"<h4>{_e(part)} <small>({_counts_note(sub)})</small></h4>" if part else (
            f"<h3>{_e(section)} <small>({_counts_note(sub)})</small></h3>")
        figs = [root / p for p in SECTION_FIGURES.get(section, ()) if (root / p).is_file()]
        out += title + _section_tables(sub) + _figures(figs, root)
    return out


def _seed_spread_html(root: Path, only: str | None = None) -> str:
    """The run's results beside those of other seeds, when ``benchmarks/seed_spread.py`` wrote them
    (``only``: the related paper's title, for its step's table; None: the segmentation table)."""
    files = {paper.TET_TITLE: "seed_spread_07.csv", paper.FUSION_TITLE: "seed_spread_08.csv"}
    name = files.get(only, "seed_spread.csv") if only else "seed_spread.csv"
    what = SEED_SPREAD_FILES[name][0]
    t = _csv(root / name)
    if t is None or len(t) < 2:
        cmd = {"seed_spread.csv": "", "seed_spread_07.csv": " --part histology", "seed_spread_08.csv": " --part fusion"}[name]
        return (f"<p class=\"missing\">No seed spread for {_e(what)} in this run folder "
                f"(<code>python benchmarks/seed_spread.py RUN{cmd} --seeds 1 2 3</code> writes {_e(name)}).</p>")
    ranges = pd.DataFrame([{"figure": c, "min": t[c].min(), "max": t[c].max(), "mean": t[c].mean()}
                           for c in t.columns if c != "seed"])
    return (f"<p>This run is one draw: {_e(what)} with seeds {_e(', '.join(str(int(v)) for v in t['seed']))} "
            "(<code>benchmarks/seed_spread.py</code>) gives the range below; a difference from the paper inside it is "
            f"run-to-run variation.</p>{_table(ranges.round(3), None)}"
            f"<details><summary>every seed</summary>{_table(t.round(3), None)}</details>")


def _checklist_html(table: pd.DataFrame) -> str:
    v = table["status"].value_counts()
    return (f"<p>What a run can show of the reporting items of CLAIM 2024 and TRIPOD+AI, named by topic (the "
            f"guidelines number them differently across versions): {int(v.get('shown', 0))} shown by this run's files, "
            f"{int(v.get('not in this run', 0))} not in this run (their step did not run), "
            f"{int(v.get('not shown by a run', 0))} not shown by any run. Also <code>report/checklist.csv</code>.</p>"
            + _table(table, "status"))


def _conventions_html(root: Path) -> str:
    """``04_evaluate/conventions.csv`` (boundary metrics: which convention, which parameter), when step 04 wrote it."""
    t = _csv(root / "04_evaluate" / "conventions.csv")
    if t is None:
        return ""
    return ('<h3 class="conventions">Conventions of the metrics used</h3><p>Where implementations differ, the convention '
            "this run used (<code>04_evaluate/conventions.csv</code>).</p>" + _table(t.astype(object).where(t.notna(), ""), None))


def _audit_html(findings: pd.DataFrame) -> str:
    out = ""
    for source, sub in findings.groupby("source", sort=False):
        counts = sub["verdict"].value_counts().to_dict()
        title = "The paper's reported tables" if source == "paper" else "The regenerated tables (self-check)"
        out += (f"<h3>{title}</h3><p>{len(sub)} checks: " + ", ".join(f"{v} {_e(k)}" for k, v in counts.items()) + ".</p>")
        cols = ["table", "row", "rule", "reported", "allowed", "verdict", "why"]
        flagged = sub[sub["verdict"] != audit.CONSISTENT]
        if len(flagged):
            out += "<p><b>Findings (inconsistent or cannot tell)</b></p>" + _table(flagged[cols])
        ok = sub[sub["verdict"] == audit.CONSISTENT]
        if len(ok):
            out += f"<details><summary>{len(ok)} consistent checks</summary>{_table(ok[cols])}</details>"
        fp = sub[sub["rule"].str.startswith("FP definition") & (sub["row"] == "overall")]
        if len(fp):
            ok_defs = [r.rule.split(": ")[1] for r in fp.itertuples() if r.verdict == audit.CONSISTENT]
            out += (f"<p>FP definition: the overall FP/scan at IoU 0.1 and 0.5 are consistent with "
                    f"<b>{_e(' and '.join(ok_defs) or 'neither')}</b>.</p>")
    return out


def _other_steps_html(root: Path, shown: set[Path]) -> str:
    """Figures of steps this report does not show with a comparison (07 and later), if those steps ran."""
    parts = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name[:2].isdigit() and p.name[2:3] == "_"):
        figs = [f for f in sorted(d.glob("*.png")) if f not in shown and d.name[:2] > "06"]
        if figs:
            parts.append(f"<h3>{_e(d.name)}</h3>" + _figures(figs, root))
    return "".join(parts) or "<p>No other step (07 and later) has figures beyond those shown above.</p>"


SECTIONS_NAV: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"), ("comparison", "Paper vs regenerated"), ("checklist", "Reporting checklist"),
    ("audit", "Statistical audit"), ("methods", "Methods map"), ("other", "Other steps"))


def render_html(summary: dict[str, Any], comp: pd.DataFrame, cls: dict[str, Any], findings: pd.DataFrame,
                methods: pd.DataFrame, root: Path, checks: pd.DataFrame | None = None) -> str:
    """The whole page as one string (figures inlined as base64 PNG, no external resource)."""
    if "cause" not in comp:
        comp = comp.assign(cause="")
    checks = checklist(root) if checks is None else checks
    shown = {root / p for ps in (*SECTION_FIGURES.values(), *RELATED_FIGURES.values()) for p in ps}
    nav = "".join(f'<a href="#{i}">{t}</a>' for i, t in SECTIONS_NAV)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Reviewer's report: {_e(Path(summary['run_dir']).name)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>
<h1>Reviewer's report — anterior mediastinal tumour segmentation (Takemura et al., Sci Rep 2026)</h1>
<nav>{nav}</nav>
<h2 id="summary">1. Summary</h2>{_synthetic_banner(summary)}{_headline_html(comp, cls)}<h3>The run</h3>{_summary_html(summary)}
<h2 id="comparison">2. Paper vs regenerated</h2>{_seed_spread_html(root)}{_comparison_html(comp, root)}
<h2 id="checklist">3. Reporting checklist</h2>{_checklist_html(checks)}
<h2 id="audit">4. Statistical audit of the reported tables</h2>
<p>Each rule allows for rounding to the printed digits; <i>inconsistent</i> means no unrounded values could
print as the table does. Rules: CI width of a mean against 2 x 1.96 x SD / sqrt(n) (t or bootstrap);
mean inside its CI; SD of a [0, 1] metric at most sqrt(m(1-m) n/(n-1)); mean IoU between
meanDice/(2-meanDice) and mean Dice; subgroup n, means and SDs of a partition reproduce the overall
row; FP/scan = FP/n and sensitivity = TP/N_ref attainable; one-to-one matching conserves TP + FP between
thresholds; which FP definition the numbers follow.</p>{_audit_html(findings)}{_conventions_html(root)}
<h2 id="methods">5. Methods map</h2><p>Each methods statement (paraphrased) with the function, tests and notebook cell that implement it.</p>
{_table(methods, None, css="mm")}
<h2 id="other">6. Other steps</h2>{_other_steps_html(root, shown)}
{LIGHTBOX}
</body></html>
"""


def compare_run(run_dir: str | Path, findings: pd.DataFrame | None = None) -> pd.DataFrame:
    """``comparison.csv`` of a run: every reported leaf beside its twin, judged knowing the run's design
    (:func:`run_design`), with the cause of each difference (:func:`add_causes`)."""
    root = RunPaths(run_dir).root
    design = run_design(root, _json(root / "run.json").get("config", {}))
    regen = regenerated_values(root)
    findings = audit_run(root) if findings is None else findings
    comp = paper.compare(regen, scale=design["scale"], generated=design["generated"], full_scale=design["full_scale"])
    return add_causes(comp, regen, seed_spreads(root), audit_flagged_keys(findings))


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``index.html``, ``comparison.csv``, ``audit.csv``, ``methods_map.csv``, ``checklist.csv``
    and ``summary.json`` into ``run_dir/report``.

    Raises :class:`~amtlib.errors.AmtError` (a ``ValueError``) when ``run_dir`` has no ``run.json``, a
    file of the run is not JSON or CSV, or ``out_dir`` is a file. Missing steps give ``missing`` rows.
    """
    root = RunPaths(run_dir).root
    out = io.refuse_link(Path(out_dir) if out_dir else root / REPORT_DIR, "report folder")
    if out.exists() and not out.is_dir():
        raise AmtError(out, "--out is a file, not a folder", "give a new or empty folder as --out")
    summary = run_summary(root)
    design = run_design(root, summary["config"])
    findings = audit_run(root)
    comp = compare_run(root, findings)
    cls = paper.classify(comp)
    methods = methods_map.table()
    checks = checklist(root)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "comparison": io.write_csv(out / "comparison.csv", comp),
        "audit": io.write_csv(out / "audit.csv", findings),
        "methods_map": io.write_csv(out / "methods_map.csv", methods),
        "checklist": io.write_csv(out / "checklist.csv", checks),
        "summary": io.write_json(out / "summary.json", {**{k: v for k, v in summary.items() if k != "config"},
                                                         "design": {k: v for k, v in design.items() if k != "full_scale"},
                                                         "classification": cls}),
        "index": io.write_text(out / "index.html", render_html(summary, comp, cls, findings, methods, root, checks)),
    }
    return {k: Path(v) for k, v in paths.items()}


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``amt report --run DIR [--out DIR]``."""
    from amtlib.clihelp import HelpFormatter, examples

    p = argparse.ArgumentParser(
        prog="amt report", formatter_class=HelpFormatter,
        description=("Write the reviewer's report of a run folder: report/index.html (the verdict, every reported "
                     "number beside its regenerated twin, the related papers, a reporting checklist, a statistical "
                     "audit of the paper's tables, the methods map) with comparison.csv, audit.csv, checklist.csv "
                     "and methods_map.csv. Steps that did not run show as missing."),
        epilog=examples("amt report --run runs/demo        # then open runs/demo/report/index.html"))
    p.add_argument("--run", required=True, help="run folder (with run.json), e.g. runs/demo")
    p.add_argument("--out", default=None, help="output folder (default: RUN/report)")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    paths = write_report(args.run, args.out)  # bad input (AmtError) reaches the guard: one line, exit 2
    cls = json.loads(paths["summary"].read_text())["classification"]
    print(f"{paths['index']}: {cls['classification']} ({cls['agrees']} of {cls['compared']} compared values agree; "
          f"{cls['as designed']} as designed, {cls['differs']} differ, {cls['not compared in all']} not compared)")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
