"""The reviewer's report on a small run folder made in the test (some steps absent)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from amtlib import cli, paper, report
from amtlib.evaluation import lesions, stats

VENDORS = ["CANON_MEC", "GE MEDICAL SYSTEMS", "SIEMENS", "FUJIFILM", "Philips"]
HISTOLOGY = ["thymoma", "thymic_carcinoma", "lymphoma", "thymic_cyst", "teratoma"]


def make_run(root: Path, synthetic: bool = True) -> Path:
    """Steps 00-02, 04 and 05 of a 30-case run; 03 and 06 (and 07-09) absent."""
    rng = np.random.default_rng(0)
    n = 30
    split = np.array(["train"] * 16 + ["tuning"] * 4 + ["external_test"] * 10)
    manifest = pd.DataFrame({
        "case_id": [f"PT{i:04d}" for i in range(n)], "patient_id": [f"PT{i:04d}" for i in range(n)],
        "institution": ["CENTRAL"] * 20 + [f"INST-{i:03d}" for i in range(10)],
        "histology": [HISTOLOGY[i % 5] for i in range(n)], "age": rng.integers(20, 88, n), "sex": ["M", "F"] * 15,
        "manufacturer": [VENDORS[i % 5] for i in range(n)], "slice_thickness_mm": 5.0,
        "image_sha256": [f"{i:064x}" for i in range(n)], "mask_sha256": [f"{i + 99:064x}" for i in range(n)],
    })
    (root / "01_cohort").mkdir(parents=True)
    (root / "02_split").mkdir()
    manifest.to_csv(root / "01_cohort" / "manifest.csv", index=False)
    (root / "01_cohort" / "cohort_flow.json").write_text(json.dumps(
        {"screened": 33, "excluded": 3, "included": 30, "included_institutions": 11, "source": {"raw_dir": str(root / "00_data/raw")}}))
    manifest.assign(split=split)[["case_id", "patient_id", "institution", "split"]].to_csv(root / "02_split" / "split.csv", index=False)
    ext = manifest[split == "external_test"]
    dice = rng.uniform(0.5, 0.95, len(ext))
    per_case = ext[["case_id", "manufacturer", "histology"]].assign(
        dice=dice, iou=dice / (2 - dice), precision=rng.uniform(.6, 1, len(ext)), recall=rng.uniform(.6, 1, len(ext)),
        max_axial_diameter_mm=rng.uniform(20, 120, len(ext)))
    (root / "04_evaluate").mkdir()
    stats.table3(per_case, n_resamples=100).to_csv(root / "04_evaluate" / "table3.csv", index=False)
    counts = pd.DataFrame([{"case_id": c, "iou_threshold": t, "tp": int(t < 0.6), "fp": int(t >= 0.6) + (i % 2),
                            "fn": int(t >= 0.6), "fp_no_overlap": i % 2}
                           for i, c in enumerate(ext["case_id"]) for t in lesions.IOU_THRESHOLDS])
    (root / "05_froc").mkdir()
    stats.froc_curve(counts, 100).to_csv(root / "05_froc" / "froc.csv", index=False)
    stats.table4(per_case, counts, n_resamples=100).to_csv(root / "05_froc" / "table4.csv", index=False)
    (root / "07_histology").mkdir()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    fig.savefig(root / "07_histology" / "roc.png")
    plt.close(fig)
    if synthetic:
        (root / "00_data").mkdir()
        (root / "00_data" / "raw_summary.json").write_text("{}")
    config = {"raw_dir": "", "train_batch_size": 3, "train_lr": 0.001, "train_betas": [0.9, 0.999], "seed": 0, "stats_seed": 0}
    steps = {s: {"status": "ok", "duration_s": 1.5} for s in ("00_data", "01_cohort", "02_split", "04_evaluate", "05_froc")}
    (root / "run.json").write_text(json.dumps({
        "config": config, "config_file": "configs/test.yaml", "git": {"commit": "abc123", "dirty": False},
        "device": {"type": "cpu", "cpu_count": 2}, "seeds": {"seed": 0, "stats_seed": 0}, "steps": steps,
        "status": "ok", "versions": {"python": "3.11"}}))
    return root


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = make_run(tmp_path_factory.mktemp("run") / "r")
    return root, report.write_report(root)


def test_report_files_and_every_reported_key(written):
    root, paths = written
    assert sorted(p.name for p in (root / "report").iterdir()) == [
        "audit.csv", "checklist.csv", "comparison.csv", "index.html", "methods_map.csv", "summary.json"]
    comp = pd.read_csv(paths["comparison"])
    page = paths["index"].read_text()
    for key in paper.reported_leaves():
        assert key in set(comp["key"]), key
        assert f">{key}<" in page, key


def test_regenerated_values_are_read_from_the_run(written):
    root, paths = written
    comp = pd.read_csv(paths["comparison"], keep_default_na=False).set_index("key")
    assert comp.loc["cohort_flow.screened", "regenerated"] == "33"
    assert comp.loc["cohort_flow.external_test.cases", "regenerated"] == "10"
    assert comp.loc["table2.canon_medical_systems", "regenerated"] == "2"  # external cases 20-29, every fifth vendor
    assert comp.loc["table1.histology_counts.teratoma.external_testing", "regenerated"] == "2"
    # a generated cohort is built with the paper's 5 mm: agreement there is the design, not evidence
    assert comp.loc["cohort_flow.external_test_slice_thickness_mm", "verdict"] == paper.AS_DESIGNED
    assert comp.loc["training.optimizer.beta2", "verdict"] == paper.AGREE
    assert comp.loc["table3.overall.n", "verdict"] == paper.DIFFER
    # steps 03 and 06 did not run: their numbers are missing, not failures
    assert comp.loc["radiomics_failure_modes.p_values.VoxelVolume", "verdict"] == paper.MISSING
    assert comp.loc["radiomics_failure_modes.groups.top", "verdict"] == paper.MISSING


def test_summary_and_synthetic_statement(written, tmp_path):
    root, paths = written
    page = paths["index"].read_text()
    assert "The data are synthetic" in page and "abc123" in page
    s = json.loads(paths["summary"].read_text())
    assert s["synthetic"] and s["commit"] == "abc123" and s["dirty"] is False and len(s["data_digest"]) == 64
    user = make_run(tmp_path / "u", synthetic=False)
    assert "The data are synthetic" not in report.render_html(
        report.run_summary(user), paper.compare({}), paper.classify(paper.compare({})), report.audit_run(user),
        pd.DataFrame(), user)


def test_data_digest_depends_on_content_not_order(written):
    root, _ = written
    m = pd.read_csv(root / "01_cohort" / "manifest.csv", dtype=str)
    d = report.data_digest(m)
    assert report.data_digest(m.iloc[::-1]) == d
    m.loc[0, "mask_sha256"] = "0" * 64
    assert report.data_digest(m) != d


def test_audit_covers_paper_and_regenerated_tables(written):
    _, paths = written
    a = pd.read_csv(paths["audit"])
    assert set(a["source"]) == {"paper", "regenerated"}
    canon = a[(a.source == "paper") & (a.row == "canon_medical_systems dice") & a.rule.str.startswith("CI width")]
    assert canon["verdict"].tolist() == ["inconsistent"]


def test_page_is_self_contained_and_shows_other_steps(written):
    _, paths = written
    page = paths["index"].read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page), "the page must not load anything from the network"
    assert "07_histology" in page and "data:image/png;base64," in page
    assert page.count("<h2") == 6


class _PageTables(HTMLParser):
    """Every ``<table>`` of a page as ``(css class, rows)``, each row a dict header -> (cell text, cell class)."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[dict[str, tuple[str, str]]]]] = []
        self._header: list[str] = []
        self._row: list[tuple[str, str]] | None = None
        self._cell: list[str] | None = None
        self._cell_class = ""
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append((dict(attrs).get("class") or "", []))
            self._header = []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell, self._cell_class = [], dict(attrs).get("class") or ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(("".join(self._cell), self._cell_class))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if not self._header:
                self._header = [text for text, _ in self._row]
            else:
                self.tables[-1][1].append(dict(zip(self._header, self._row)))
            self._row = None


def test_cli(written, tmp_path, capsys):
    """``amt report``'s page and its one line say what the CSVs it wrote beside them hold: the headline
    counts of comparison.csv, each shown value's verdict, the audit's counts and findings; without
    run.json, one line naming the file and what to do, and nothing written."""
    root, _ = written
    out = tmp_path / "o"
    assert cli.main(["report", "--run", str(root), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    comp = pd.read_csv(out / "comparison.csv", keep_default_na=False).set_index("key")
    findings = pd.read_csv(out / "audit.csv", keep_default_na=False)
    page = (out / "index.html").read_text()

    v = comp["verdict"].value_counts()
    agree, differ, designed = v[paper.AGREE], v[paper.DIFFER], v[paper.AS_DESIGNED]
    not_compared = v[paper.NOT_COMPARED] + v[paper.MISSING] + v.get(paper.BOTH_ZERO, 0)  # steps 03 and 06 missing
    assert differ and agree < (agree + differ) / 2  # so the run is "not reproduced"
    assert stdout == (f"{out / 'index.html'}: not reproduced ({agree} of {agree + differ} compared values agree; "
                      f"{designed} as designed, {differ} differ, {not_compared} not compared)\n")
    assert (f"Overall: <b>not reproduced</b>: {agree} of {agree + differ} values that can show it agree."
            f'<div class="counts"><span class="as-designed">as designed: {designed}</span><span class="agrees">agrees: '
            f'{agree}</span><span class="differs">differs: {differ}</span><span class="not-compared">not compared: '
            f"{not_compared}</span></div>") in page

    tables = _PageTables(page).tables
    shown = {r["key"][0]: r for css, rows in tables if css == "cmp" for r in rows}
    assert set(shown) == set(comp.index[comp["verdict"] != paper.NOT_COMPARED])  # not-compared ones are folded away
    for key, r in shown.items():
        verdict = comp.loc[key, "verdict"]
        assert (r["verdict"], r["regenerated"][0]) == ((verdict, verdict.replace(" ", "-")), comp.loc[key, "regenerated"]), key
    assert shown["cohort_flow.screened"]["regenerated"][0] == "33"  # cohort_flow.json of the made run
    assert shown["training.optimizer.beta2"]["verdict"][0] == paper.AGREE  # 0.999 both
    assert shown["table3.overall.n"]["verdict"][0] == paper.DIFFER  # 10 external cases, not the paper's
    assert shown["radiomics_failure_modes.groups.top"]["verdict"][0] == paper.MISSING  # step 06 did not run
    (diffs,) = [rows for css, rows in tables if css == "diffs"]
    assert f'<h3 class="differences">The {differ} real differences</h3>' in page and len(diffs) == differ

    for source, title in (("paper", "The paper's reported tables"), ("regenerated", "The regenerated tables (self-check)")):
        sub = findings[findings["source"] == source]
        said = re.search(rf"<h3>{re.escape(title)}</h3><p>(\d+) checks: ([^<]*)\.</p>", page)
        assert int(said.group(1)) == len(sub)
        assert {k: int(n) for n, k in (part.split(" ", 1) for part in said.group(2).split(", "))} == \
            sub["verdict"].value_counts().to_dict()
    flagged = [r for css, rows in tables if css == "" for r in rows if "allowed" in r and r["verdict"][0] != "consistent"]
    assert len(flagged) == (findings["verdict"] != "consistent").sum() > 0
    canon = [r for r in flagged if r["row"][0] == "canon_medical_systems dice" and r["rule"][0].startswith("CI width")]
    assert [r["verdict"] for r in canon] == [("inconsistent", "inconsistent")]

    empty = tmp_path / "not_a_run"
    empty.mkdir()
    for argv, written_to in (([], empty / "report"), (["--out", str(tmp_path / "o2")], tmp_path / "o2")):
        assert cli.main(["report", "--run", str(empty), *argv]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err == (
            f"amt report: error: {empty / 'run.json'}: not found; is {empty} a run folder? Run `amt run` first\n")
        assert not written_to.exists() and list(empty.iterdir()) == []


def test_seed_spread_is_shown_when_the_run_has_it(tmp_path):
    root = make_run(tmp_path / "r")
    assert "This run is one draw" not in report.write_report(root)["index"].read_text()
    pd.DataFrame({"seed": [0, 1, 2], "dice": [0.80, 0.72, 0.81], "fp_iou0.1": [1.54, 2.09, 0.50]}).to_csv(root / "seed_spread.csv", index=False)
    page = report.write_report(root)["index"].read_text()
    assert "This run is one draw: the U-Net retrained (steps 03-05) with seeds 0, 1, 2" in page
    assert "<tr><td>dice</td><td>0.72</td><td>0.81</td><td>0.777</td></tr>" in page  # min, max, mean by hand
    assert "<tr><td>fp_iou0.1</td><td>0.5</td><td>2.09</td><td>1.377</td></tr>" in page


def test_only_real_pngs_of_the_run_are_embedded_and_links_are_refused(tmp_path):
    """Issue 23, items 3-4: a planted ``02_split/fig2_flow.png -> secret.txt`` link, or a text file under a
    figure's name, is named and never inlined; a ``report`` link is refused instead of written through."""
    import base64

    from amtlib.errors import AmtError

    run = make_run(tmp_path / "run")
    secret = tmp_path / "secret.txt"
    secret.write_text("PATIENT NAME: the secret")
    (run / "02_split").mkdir(exist_ok=True)
    (run / "02_split" / "fig2_flow.png").symlink_to(secret)
    (run / "03_train").mkdir(exist_ok=True)
    (run / "03_train" / "training_curve.png").write_text("not a png")
    report.write_report(run)
    page = (run / "report" / "index.html").read_text()
    encoded = base64.b64encode(secret.read_bytes()).decode()
    assert encoded[:20] not in page and "the secret" not in page
    assert "02_split/fig2_flow.png: not embedded" in page and "03_train/training_curve.png: not embedded" in page
    assert "data:image/png;base64,iVBOR" in page  # the real PNG of step 07 still is
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    import shutil

    shutil.rmtree(run / "report")
    (run / "report").symlink_to(elsewhere)
    with pytest.raises(AmtError, match="report folder is a symbolic link"):
        report.write_report(run)
    assert list(elsewhere.iterdir()) == []


def _add_related_steps(root: Path) -> None:
    """Hand-made step 07 and 08 outputs: AUC rows, DeLong, the drawn rates and CTC levels."""
    s7, s8 = root / "07_histology", root / "08_fusion"
    s7.mkdir(exist_ok=True)
    s8.mkdir(exist_ok=True)
    row = dict(n=71, n_pos=61, threshold=0.5, accuracy=0.55, sensitivity=0.57, specificity=0.40, ppv=0.85, npv=0.13)
    pd.DataFrame([{"model": "cnn_resnet2d", "split": "external_test", "roi": "predicted", "auc": 0.39, "auc_ci_low": 0.17, "auc_ci_high": 0.60, **row},
                  {"model": "radiomics_svm", "split": "external_test", "roi": "predicted", "auc": 0.69, "auc_ci_low": 0.54, "auc_ci_high": 0.84, **row},
                  {"model": "radiomics_svm", "split": "external_test", "roi": "reference", "auc": 0.99, "auc_ci_low": 0.98, "auc_ci_high": 1.0, **row}]
                 ).to_csv(s7 / "auc.csv", index=False)
    pd.DataFrame([{"roi": "predicted", "n": 71, "auc_cnn": 0.39, "auc_svm": 0.69, "p": 0.053}]).to_csv(s7 / "delong_cnn_vs_svm.csv", index=False)
    pd.DataFrame({"variable": ["n", "margin_irregular_pct"], "LRT": [64, 15.625], "HRT": [136, 74.26]}).to_csv(s7 / "cohort_summary.csv", index=False)
    pd.DataFrame([{"task": "binary", "model": "fusion", "n": 82, "auc": 0.70, "auc_boot_low": 0.55, "auc_boot_high": 0.85,
                   "accuracy": 0.8, "sensitivity": 0.80, "specificity": 1.0, "ppv": 1.0, "npv": 0.3},
                  {"task": "multiclass", "model": "fusion", "n": 82, "auc": 0.62, "auc_boot_low": 0.56, "auc_boot_high": 0.68}]
                 ).to_csv(s8 / "auc.csv", index=False)
    pd.DataFrame({"task": "binary", "split": "external_test", "case_id": [f"c{i}" for i in range(82)], "label": [1] * 76 + [0] * 6,
                  "model": "fusion"}).to_csv(s8 / "scores.csv", index=False)
    pd.DataFrame([{"paper_row": "cyst", "count": 25, "mean": 10.5, "std": 4.0}]).to_csv(s8 / "ctc_by_histology.csv", index=False)
    pd.DataFrame([{"metric": "hd95", "convention": "percentile of the pooled distances", "parameter": "percentile", "value": 95}]
                 ).to_csv(root / "04_evaluate" / "conventions.csv", index=False)


def test_related_papers_checklist_conventions_and_headline(tmp_path):
    root = make_run(tmp_path / "r")
    _add_related_steps(root)
    paths = report.write_report(root)
    comp = pd.read_csv(paths["comparison"], keep_default_na=False).set_index("key")
    tet, dmfn = "tet_risk_stratification.", "dmfn_fusion."
    assert comp.loc[tet + "table2.resnet101", "verdict"] == paper.DIFFER  # 0.17-0.60 below 0.79-0.96
    assert "known gap 3" in comp.loc[tet + "table2.resnet101", "cause"]
    assert comp.loc[tet + "table2.rad_svm", "verdict"] == paper.AGREE  # 0.54-0.84 meets 0.66-0.89 (predicted ROIs, not the reference row)
    assert comp.loc[tet + "cnn_vs_svm_delong_p_below", "verdict"] == paper.DIFFER
    assert comp.loc[tet + "table1_pooled_rates.LRT.margin_unclear", "verdict"] == paper.AS_DESIGNED  # 0.12 in Wilson(0.156, 64)
    assert comp.loc[dmfn + "binary_validation.fusion.auc", "regenerated"] == "0.700 (0.550–0.850)"
    assert comp.loc[dmfn + "binary_validation.fusion.auc", "verdict"] == paper.DIFFER  # below 0.901-0.982
    assert comp.loc[dmfn + "binary_validation.fusion.specificity", "regenerated"] == "1.000 (n=6)"
    assert comp.loc[dmfn + "binary_validation.fusion.specificity", "verdict"] == paper.AGREE  # 0.929 in Wilson(1, 6) = 0.61-1
    assert comp.loc[dmfn + "table2_ctc_level.cyst", "verdict"] == paper.AS_DESIGNED
    assert comp.loc[dmfn + "table2_ctc_level.lipoma", "verdict"] == paper.NOT_COMPARED  # no case of that row
    assert comp.loc[tet + "table2.vgg11", "verdict"] == paper.NOT_COMPARED
    page = paths["index"].read_text()
    assert "tet_risk_stratification (" not in page and "dmfn_fusion (" not in page
    assert f'<h3 class="related">{paper.TET_TITLE}</h3>' in page and f'<h3 class="related">{paper.FUSION_TITLE}</h3>' in page
    assert page.index('class="differences"') < page.index('id="comparison"')  # the differences come first
    # within each related paper its results come before the settings and cohorts they rest on
    assert page.index("AUC, sensitivity, specificity (Table 2)") < page.index("its cohort (Fig 1)")
    assert page.index("benign vs malignant (Table 3)</h4>".split("</h4>")[0]) < page.index("its lesion counts (Table 2)")
    assert "percentile of the pooled distances" in page  # 04_evaluate/conventions.csv shown
    checks = pd.read_csv(paths["checklist"], keep_default_na=False).set_index("item")
    assert set(checks["status"]) == {"shown", "not in this run", "not shown by a run"}
    split_item = checks.loc["Patient- and site-level split, no leakage between partitions"]
    assert split_item["status"] == "not in this run"  # the made run has no leakage_audit.json
    assert checks.loc["Sample size justification", "status"] == "not shown by a run" and checks.loc["Sample size justification", "note"]
    assert "04_evaluate/conventions.csv" in checks.loc["Performance metrics and their definitions, uncertainty (CIs)", "evidence"]


def test_summary_is_the_runs_final_state_while_the_report_writes():
    rec = {"status": "running", "ended": None, "steps": {
        "09_export": {"status": "ok", "duration_s": 3.0, "ended": "2026-01-01T00:00:10+00:00"},
        "10_report": {"status": "running", "started": "2026-01-01T00:00:10+00:00"}}}
    steps, status, ended = report._final_state(rec, now="2026-01-01T00:00:25+00:00")
    assert (status, ended) == ("ok", "2026-01-01T00:00:25+00:00")
    assert steps["10_report"] == {"status": "ok", "duration_s": 15.0, "ended": "2026-01-01T00:00:25+00:00"}
    rec["steps"]["09_export"]["status"] = "failed"
    assert report._final_state(rec, now="2026-01-01T00:00:25+00:00")[1:] == ("running", None)  # shown as recorded
