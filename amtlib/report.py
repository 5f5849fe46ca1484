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
    return pd.read_csv(path, dtype={"case_id": str, "patient_id": str}) if path.is_file() else None


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); re-run the step that writes it") from None


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
        **_evaluation_values(_csv(P.root / "04_evaluate" / "table3.csv"), _csv(P.root / "05_froc" / "table4.csv"), froc),
        **_failure_values(P.root / "06_failure"),
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


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """What was run: commit, dirty flag, config, data source and digest, device, seeds, step durations."""
    P = RunPaths(run_dir)
    rec = _json(P.root / "run.json")
    if not rec:
        raise ValueError(f"{P.root / 'run.json'}: not found; is {P.root} a run folder? Run `amt run` first")
    config = rec.get("config", {})
    manifest = _csv(P.manifest)
    flow = _json(P.cohort_flow)
    source = (config.get("manifest_in") or config.get("raw_dir") or flow.get("source", {}).get("raw_dir")
              or str(P.raw_dir))
    # the report may be the running last step of this very run: say so instead of "running"
    steps = {name: {"status": "writing this report" if s.get("status") == "running" and name.endswith("_report") else s.get("status"),
                    "duration_s": s.get("duration_s"), "ended": s.get("ended")}
             for name, s in sorted(rec.get("steps", {}).items())}
    status = rec.get("status")
    if status == "running" and any(v["status"] == "writing this report" for v in steps.values()):
        status = "ok so far (the report is its last step)" if all(
            v["status"] in ("ok", "writing this report") for v in steps.values()) else status
    return {
        "run_dir": str(P.root), "commit": rec.get("git", {}).get("commit"), "dirty": rec.get("git", {}).get("dirty"),
        "config_file": rec.get("config_file"), "config": config, "status": status,
        "started": rec.get("started"), "ended": rec.get("ended"), "device": rec.get("device", {}),
        "seeds": rec.get("seeds", {}), "steps": steps, "data_source": source,
        "data_digest": data_digest(manifest), "n_cases": None if manifest is None else len(manifest),
        "synthetic": is_synthetic(P.root, config), "versions": rec.get("versions", {}),
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


# ------------------------------------------------------------------------------------- HTML

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:1em 2em;color:#222}
h1{font-size:1.6em;margin:.3em 0} h2{border-bottom:2px solid #ccd;padding-bottom:.2em;margin-top:1.6em}
h3{margin:1.2em 0 .4em}
table{border-collapse:collapse;margin:.5em 0;font-size:12.5px} th,td{border:1px solid #ccd;padding:3px 6px;vertical-align:top;text-align:left}
th{background:#eef0f6} tr:nth-child(even) td{background:#fafbfd}
.banner{background:#fff4d6;border:1px solid #e0b84a;padding:.6em 1em;border-radius:4px;margin:.8em 0}
.verdict{font-size:1.2em;padding:.5em 1em;border-radius:4px;display:inline-block;margin:.3em 0;border:1px solid #99a}
.agrees,.consistent{color:#176b2c;font-weight:600} .differs,.inconsistent{color:#b01c1c;font-weight:600}
.missing,.cannot-tell,.not-compared{color:#777}
.pair{display:flex;gap:1.2em;align-items:flex-start;flex-wrap:wrap}
.pair>div:first-child{flex:3 1 700px;min-width:0;overflow-x:auto} .pair>div:last-child{flex:1 1 300px;min-width:0}
figure{margin:.4em 0} figure img{max-width:100%;border:1px solid #ddd} figcaption{font-size:12px;color:#555}
nav a{margin-right:1em} code{font-size:12px} details{margin:.4em 0}
table.cmp{width:100%} .cmp td:nth-child(1){word-break:break-all;min-width:12em} .cmp td:nth-child(n+2):nth-child(-n+5){white-space:nowrap}
.pair>div:last-child{position:sticky;top:0} .mm td:nth-child(2){min-width:22em} .mm td:nth-child(3){word-break:break-all}
@media print{nav{display:none} details{display:block} .pair{display:block} h2{page-break-before:always} h2:first-of-type{page-break-before:avoid}}
"""


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
    return (f'<figure><img alt="{_e(path.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(path.relative_to(root))}</figcaption></figure>")


def _summary_html(s: dict[str, Any]) -> str:
    dev = s["device"] or {}
    device = dev.get("name") or f"{dev.get('type', '?')} ({dev.get('cpu_count', '?')} cores)"
    rows = [
        ("run folder", s["run_dir"]), ("status", s["status"]), ("started / ended", f"{s['started']} / {s['ended']}"),
        ("commit", s["commit"]), ("uncommitted changes (dirty)", s["dirty"]), ("config", s["config_file"]),
        ("data source", s["data_source"]), ("data digest (SHA-256 of the manifest's image and mask checksums)", s["data_digest"]),
        ("cases in the cohort", s["n_cases"]), ("device", device), ("seeds", ", ".join(f"{k}={v}" for k, v in s["seeds"].items())),
        ("python, torch, amtlib", ", ".join(str(s["versions"].get(k)) for k in ("python", "torch", "amtlib"))),
    ]
    out = ""
    if s["synthetic"]:
        out += ('<p class="banner"><b>The data are synthetic.</b> This run used the generated demo cohort (public CT '
                "backgrounds with inserted tumours and the paper's cohort structure), not the paper's patients. The "
                "comparison below is of the findings and of the analysis running end to end, not of the clinical numbers."
                + (f" The cohort was generated at scale {_e(s['config'].get('synth_scale'))} of the paper's, so its counts "
                   "differ from the paper's by design." if s["config"].get("synth_scale") not in (None, 1, 1.0) else "")
                + "</p>")
    out += _table(pd.DataFrame(rows, columns=["item", "value"]), None)
    steps = pd.DataFrame([{"step": k, **v} for k, v in s["steps"].items()], columns=["step", "status", "duration_s", "ended"])
    steps = steps.astype(object).where(steps.notna(), "")
    out += "<h3>Steps</h3>" + _table(steps, None)
    out += "<details><summary>Resolved configuration</summary>" + _table(
        pd.DataFrame([(k, json.dumps(v)) for k, v in s["config"].items()], columns=["parameter", "value"]), None) + "</details>"
    return out


def _comparison_html(comp: pd.DataFrame, cls: dict[str, Any], root: Path) -> str:
    out = (f'<p class="verdict">Overall: <b>{_e(cls["classification"])}</b> — {cls["agrees"]} of {cls["compared"]} compared '
           f'values agree, {cls["differs"]} differ; {cls["missing"]} missing (step not run or empty subgroup), '
           f'{cls["not compared"]} methods statements not compared.</p><p>Rule: {_e(cls["rule"])}.</p>')
    out += "<p>Verdict rules: " + "; ".join(f"<b>{_e(k)}</b>: {_e(v)}" for k, v in paper.RULES.items()) + ".</p>"
    for section, sub in comp.groupby("section", sort=False):
        figs = [root / p for p in SECTION_FIGURES.get(section, ()) if (root / p).is_file()]
        agree = int((sub["verdict"] == paper.AGREE).sum())
        compared = int(sub["verdict"].isin([paper.AGREE, paper.DIFFER]).sum())
        cols = ["key", "rule", "paper", "regenerated", "verdict", "why"]
        shown = sub[sub["verdict"] != paper.NOT_COMPARED]
        rest = sub[sub["verdict"] == paper.NOT_COMPARED]
        table = _table(shown[cols], css="cmp") if len(shown) else ""
        if len(rest):
            table += (f"<details><summary>{len(rest)} statements not compared (methods, parts of a cell)</summary>"
                      f"{_table(rest[['key', 'rule', 'paper', 'regenerated', 'why']], None)}</details>")
        out += f"<h3>{_e(section)} <small>({agree} of {compared} agree)</small></h3>"
        out += (f'<div class="pair"><div>{table}</div><div>{"".join(_figure(f, root) for f in figs)}</div></div>'
                if figs else table)
    return out


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


#: Tables of ``benchmarks/seed_spread.py`` in a run folder: file -> what was re-run with other seeds.
SEED_SPREAD_FILES: dict[str, str] = {"seed_spread.csv": "the U-Net retrained (steps 03-05)",
                                     "seed_spread_07.csv": "the WHO-risk classifiers retrained (step 07)"}


def _seed_spread_html(root: Path) -> str:
    """The run's results beside those of other seeds, when ``benchmarks/seed_spread.py`` wrote them."""
    parts = []
    for name, what in SEED_SPREAD_FILES.items():
        t = _csv(root / name)
        if t is None or len(t) < 2:
            continue
        ranges = pd.DataFrame([{"figure": c, "min": t[c].min(), "max": t[c].max(), "mean": t[c].mean()}
                               for c in t.columns if c != "seed"])
        parts.append(f"<h3>{_e(what)}: seeds {_e(', '.join(str(int(v)) for v in t['seed']))}</h3>"
                     f'<div class="pair"><div>{_table(t.round(3), None)}</div><div>{_table(ranges.round(3), None)}</div></div>')
    if not parts:
        return ""
    return ('<p>This run is one draw. The same cohort and split with other seeds (<code>benchmarks/seed_spread.py</code>) '
            "give the figures below: a difference from the paper inside this range is run-to-run variation.</p>" + "".join(parts))


def _other_steps_html(root: Path, shown: set[Path]) -> str:
    """Figures of steps this report does not know (e.g. 07-09 of other issues), if those steps ran."""
    parts = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name[:2].isdigit() and p.name[2:3] == "_"):
        figs = [f for f in sorted(d.glob("*.png")) if f not in shown and d.name[:2] > "06"]
        if figs:
            parts.append(f"<h3>{_e(d.name)}</h3>" + "".join(_figure(f, root) for f in figs))
    return "".join(parts) or "<p>No other step (07 and later) has run in this folder.</p>"


def render_html(summary: dict[str, Any], comp: pd.DataFrame, cls: dict[str, Any], findings: pd.DataFrame,
                methods: pd.DataFrame, root: Path) -> str:
    """The whole page as one string (figures inlined as base64 PNG, no external resource)."""
    shown = {root / p for ps in SECTION_FIGURES.values() for p in ps}
    nav = "".join(f'<a href="#{i}">{t}</a>' for i, t in (("summary", "Summary"), ("comparison", "Paper vs regenerated"),
                                                            ("audit", "Statistical audit"), ("methods", "Methods map"),
                                                            ("other", "Other steps")))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Reviewer's report: {_e(Path(summary['run_dir']).name)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>
<h1>Reviewer's report — anterior mediastinal tumour segmentation (Takemura et al., Sci Rep 2026)</h1>
<nav>{nav}</nav>
<h2 id="summary">1. Summary</h2>{_summary_html(summary)}
<h2 id="comparison">2. Paper vs regenerated</h2>{_seed_spread_html(root)}{_comparison_html(comp, cls, root)}
<h2 id="audit">3. Statistical audit of the reported tables</h2>
<p>Each rule allows for rounding to the printed digits; <i>inconsistent</i> means no unrounded values could
print as the table does. Rules: CI width of a mean against 2 x 1.96 x SD / sqrt(n) (t or bootstrap);
mean inside its CI; SD of a [0, 1] metric at most sqrt(m(1-m) n/(n-1)); mean IoU between
meanDice/(2-meanDice) and mean Dice; subgroup n, means and SDs of a partition reproduce the overall
row; FP/scan = FP/n and sensitivity = TP/N_ref attainable; one-to-one matching conserves TP + FP between
thresholds; which FP definition the numbers follow.</p>{_audit_html(findings)}
<h2 id="methods">4. Methods map</h2><p>Each methods statement (paraphrased) with the function, tests and notebook cell that implement it.</p>
{_table(methods, None, css="mm")}
<h2 id="other">5. Other steps</h2>{_other_steps_html(root, shown)}
</body></html>
"""


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``index.html``, ``comparison.csv``, ``audit.csv``, ``methods_map.csv`` into ``run_dir/report``.

    Raises ValueError when ``run_dir`` has no ``run.json``. Missing steps give ``missing`` rows.
    """
    root = RunPaths(run_dir).root
    out = io.refuse_link(Path(out_dir) if out_dir else root / REPORT_DIR, "report folder")
    summary = run_summary(root)
    comp = paper.compare(regenerated_values(root))
    cls = paper.classify(comp)
    findings = audit_run(root)
    methods = methods_map.table()
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "comparison": io.write_csv(out / "comparison.csv", comp),
        "audit": io.write_csv(out / "audit.csv", findings),
        "methods_map": io.write_csv(out / "methods_map.csv", methods),
        "summary": io.write_json(out / "summary.json", {**{k: v for k, v in summary.items() if k != "config"},
                                                         "classification": cls}),
        "index": io.write_text(out / "index.html", render_html(summary, comp, cls, findings, methods, root)),
    }
    return {k: Path(v) for k, v in paths.items()}


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``amt report --run DIR [--out DIR]``."""
    p = argparse.ArgumentParser(prog="amt report", description=(
        "Write the reviewer's report of a run folder: report/index.html (summary, every reported number beside "
        "its regenerated twin, a statistical audit of the paper's tables, the methods map) with comparison.csv, "
        "audit.csv and methods_map.csv. Steps that did not run show as missing."))
    p.add_argument("--run", required=True, help="run folder (with run.json), e.g. runs/demo")
    p.add_argument("--out", default=None, help="output folder (default: RUN/report)")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        paths = write_report(args.run, args.out)
    except ValueError as exc:
        print(f"amt report: {exc}", file=sys.stderr)
        return 2
    cls = json.loads(paths["summary"].read_text())["classification"]
    print(f"{paths['index']}: {cls['classification']} ({cls['agrees']} of {cls['compared']} compared values agree)")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
