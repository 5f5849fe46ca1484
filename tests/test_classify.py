"""Downstream classifiers: ICC(3,1) by hand, pruning, labels, no leakage of external cases, 2D CNN parts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from amtlib.classify import arms as clf
from amtlib.classify import cnn2d, fusion, histology as hist


def test_icc31_by_hand():
    # subjects (1,2), (2,3), (3,5), (4,4): SSR 9, SSC 2, SSE 1 -> MSR 3, MSE 1/3 -> ICC (3-1/3)/(3+1/3) = 0.8
    r = np.array([[1, 2], [2, 3], [3, 5], [4, 4]], float)
    assert clf.icc31(r)[0] == pytest.approx(0.8)
    # consistency form: a constant offset between raters does not lower it; a constant feature is NaN
    x = np.arange(6.0)
    stacked = np.stack([np.c_[x, x + 10], np.c_[np.ones(6), np.ones(6)]], axis=2)
    icc = clf.icc31(stacked)
    assert icc[0] == pytest.approx(1.0) and np.isnan(icc[1])


def test_prune_correlated_keeps_first_of_a_redundant_pair():
    rng = np.random.default_rng(0)
    a = rng.normal(size=50)
    df = pd.DataFrame({"a": a, "b": 2 * a + rng.normal(scale=0.01, size=50), "c": rng.normal(size=50), "k": np.ones(50)})
    assert clf.prune_correlated(df, 0.9) == ["a", "c"]


def test_risk_groups_and_labels():
    cases = pd.DataFrame({"histology": ["thymoma", "thymoma", "thymic_carcinoma", "lymphoma", "thymoma"],
                          "who_subtype": ["AB", "B3", "", "", ""], "risk_group": ["", "", "", "", ""]})
    assert [clf.risk_group(h, s) for h, s in zip(cases["histology"], cases["who_subtype"])] == ["LRT", "HRT", "TC", "", ""]
    assert clf.risk_labels(cases, tc_as_hrt=True).tolist()[:3] == [0.0, 1.0, 1.0]
    lab = clf.risk_labels(cases, tc_as_hrt=False)
    assert np.isnan(lab[2]) and np.isnan(lab[3]) and np.isnan(lab[4])
    assert clf.malignant_labels(pd.Series(["thymic_cyst", "teratoma", "lymphoma"])).tolist() == [0, 0, 1]
    assert clf.histology_class_labels(pd.Series(["carcinoid", "thymoma"])).tolist() == [4, 0]


def test_missing_columns_skip_with_a_message():
    cases = pd.DataFrame({"histology": ["thymoma"], "ctc_level": [""]})
    assert clf.missing_columns(cases, ["who_subtype", "ctc_level"]) == ["who_subtype", "ctc_level"]
    assert "data_manifest/README.md" in clf.skip_message("08_fusion", ["ctc_level"])


def _synthetic_radiomics(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cases and a feature table (train/tuning/external, reference/predicted ROIs) with signal in f0-f2."""
    rng = np.random.default_rng(seed)
    n = {"train": 60, "tuning": 12, "external_test": 20}
    cases, feats = [], []
    for split, k in n.items():
        for i in range(k):
            cid = f"{split[:2]}{i:03d}"
            y = int(rng.random() < 0.7)
            cases.append({"case_id": cid, "split": split, "label": float(y)})
            base = rng.normal(size=12) + np.r_[1.2 * y, 0.8 * y, -0.8 * y, np.zeros(9)]
            for roi in ("reference", "predicted"):
                if split == "train" and roi == "predicted":
                    continue
                noise = rng.normal(scale=0.05 if roi == "predicted" else 0.0, size=12)
                noise[9:] = rng.normal(scale=3.0, size=3) if roi == "predicted" else 0.0  # unstable features
                feats.append({"case_id": cid, "split": split, "roi": roi, "status": "ok", "error": "",
                              **{f"original_x_f{j}": v for j, v in enumerate(base + noise)}})
    return pd.DataFrame(cases), pd.DataFrame(feats)


def test_radiomics_arm_never_sees_external_cases():
    cases, feats = _synthetic_radiomics()
    model = hist.fit_svm_arm(feats, cases, seed=0)
    assert not {"original_x_f9", "original_x_f10", "original_x_f11"} & set(model.stable)  # ICC filter on tuning pairs
    ext = feats["split"] == "external_test"
    perturbed = feats.copy()
    cols = [c for c in feats.columns if c.startswith("original_")]
    perturbed.loc[ext, cols] = np.random.default_rng(9).normal(scale=50, size=(int(ext.sum()), len(cols)))
    flipped = cases.assign(label=np.where(cases["split"] == "external_test", 1 - cases["label"], cases["label"]))
    model2 = hist.fit_svm_arm(perturbed, flipped, seed=0)
    assert model2.features == model.features and model2.threshold == model.threshold
    assert np.array_equal(model2.pipeline[-1].dual_coef_, model.pipeline[-1].dual_coef_)
    s1, s2 = hist.svm_scores(model, feats, cases), hist.svm_scores(model2, perturbed, flipped)
    train = s1["split"] == "train"
    assert np.array_equal(s1.loc[train, "score"], s2.loc[train, "score"])
    assert not np.allclose(s1.loc[~train, "score"], s2.loc[~train, "score"])  # the perturbation was real


def test_fusion_models_never_see_external_cases():
    rng = np.random.default_rng(1)
    hists = ["thymoma", "thymic_carcinoma", "lymphoma", "thymic_cyst", "teratoma"] * 6
    cases = pd.DataFrame({"case_id": [f"c{i:02d}" for i in range(30)], "split": ["train"] * 20 + ["external_test"] * 10,
                          "histology": hists, "age": rng.integers(30, 80, 30).astype(str),
                          "sex": rng.choice(["M", "F"], 30), "ctc_level": rng.normal(13, 4, 30).round(2).astype(str)})
    crops = {c: rng.normal(size=(2 if s == "train" else 1, 16, 16)).astype(np.float32) for c, s in zip(cases["case_id"], cases["split"])}
    cfg = cnn2d.CNNConfig(epochs=2, batch_size=8, widths=(4, 8, 8, 8), threads=1)
    a = fusion.fit_and_score(cases, crops, "binary", cfg, seed=3)
    ext = cases["split"] == "external_test"
    cases2 = cases.copy()
    cases2.loc[ext, "ctc_level"] = "99"
    cases2.loc[ext, "histology"] = "thymic_cyst"
    crops2 = {c: (v + 5 if c in set(cases.loc[ext, "case_id"]) else v) for c, v in crops.items()}
    b = fusion.fit_and_score(cases2, crops2, "binary", cfg, seed=3)
    tr = a["split"] == "train"
    assert np.allclose(a.loc[tr, ["proba_0", "proba_1"]], b.loc[tr, ["proba_0", "proba_1"]], atol=1e-6)
    assert not np.allclose(a.loc[~tr, "proba_1"], b.loc[~tr, "proba_1"])


def test_crop_planes_centre_on_the_roi_and_refuse_an_empty_one():
    image = np.zeros((10, 80, 80), np.float32)
    mask = np.zeros_like(image, np.uint8)
    mask[4:7, 30:40, 50:62] = 1
    image[mask > 0] = 100.0
    crops = cnn2d.crop_planes(image, mask, (5.0, 1.0, 1.0), (0.0, 1.0), size_px=32, margin_mm=6.0)
    assert crops.shape == (2, 32, 32)
    assert crops[0, 16, 16] > 0 > crops[0, 1, 1]  # tumour in the centre, background at the corner
    with pytest.raises(ValueError, match="empty ROI"):
        cnn2d.crop_planes(image, np.zeros_like(mask), (5.0, 1.0, 1.0))


def test_networks_forward_gradcam_and_user_weights(tmp_path):
    import torch

    net = cnn2d.make_network(3, n_tabular=2, widths=(4, 8, 8, 8))
    out = net(torch.zeros(2, 1, 32, 32), torch.zeros(2, 2))
    assert out.shape == (2, 3)
    ct = cnn2d.make_network(2, widths=(4, 8, 8, 8)).eval()
    cams = cnn2d.grad_cam(ct, np.random.default_rng(0).normal(size=(2, 32, 32)))
    assert cams.shape == (2, 32, 32) and cams.min() >= 0 and cams.max() <= 1 + 1e-6
    torch.save(ct.state_dict(), tmp_path / "w.pt")
    cfg = cnn2d.CNNConfig(epochs=0, widths=(4, 8, 8, 8), weights=str(tmp_path / "w.pt"))
    loaded, _ = cnn2d.train_network(np.zeros((2, 32, 32), np.float32), np.array([0, 1]), 2, cfg)
    assert all(torch.equal(a, b) for a, b in zip(ct.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="cnn_weights"):
        cnn2d.train_network(np.zeros((2, 32, 32), np.float32), np.array([0, 1]), 2,
                            cnn2d.CNNConfig(epochs=0, widths=(4, 8, 8, 8), weights=str(tmp_path / "nope.pt")))


def test_cnn_training_is_reproducible_with_a_seed():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 16, 16)).astype(np.float32)
    y = np.array([0, 1] * 6)
    cfg = cnn2d.CNNConfig(epochs=2, batch_size=4, widths=(4, 8, 8, 8), threads=1)
    p1 = cnn2d.predict_proba(cnn2d.train_network(x, y, 2, cfg, seed=5)[0], x)
    p2 = cnn2d.predict_proba(cnn2d.train_network(x, y, 2, cfg, seed=5)[0], x)
    assert np.array_equal(p1, p2)


def test_risk_group_derived_when_the_column_is_absent():
    cases = pd.DataFrame({"case_id": ["a", "b", "c"], "split": ["train"] * 3, "histology": ["thymoma", "thymic_carcinoma", "lymphoma"],
                          "who_subtype": ["B1", "", ""]})
    out = hist.tet_cases(cases, tc_as_hrt=True)
    assert out["risk_group"].tolist() == ["LRT", "TC"] and out["label"].tolist() == [0.0, 1.0]


def test_ctc_table_maps_thymomas_by_subtype_to_the_papers_rows():
    cases = pd.DataFrame({"histology": ["thymoma", "thymoma", "thymic_cyst", "carcinoid"], "who_subtype": ["B2", "B2", "", ""],
                          "ctc_level": ["10", "14", "9.5", "9.9"]})
    t = fusion.ctc_vs_paper(cases)
    assert t.loc["thymoma_b2", "mean"] == 12.0 and t.loc["thymoma_b2", "paper_mean"] == 12.43
    assert t.loc["cyst", "paper_sd"] == 4.44 and t.loc["carcinoid", "count"] == 1


def test_icc_filter_falls_back_to_the_most_stable_features_when_none_passes():
    cases, feats = _synthetic_radiomics()
    model = hist.fit_svm_arm(feats, cases, icc_threshold=0.9999, seed=0)
    assert model.selection["icc_fallback_best"] == model.selection["icc_stable"] == clf.ICC_FALLBACK_KEEP
    assert {f"original_x_f{j}" for j in range(9)} <= set(model.stable)  # the 9 stable ones rank first


# ------------------------------------------------ a model that finds nothing (issue 23 item 12)


def _binary_scores(n_train: int = 12, n_ext: int = 8, seed: int = 0) -> pd.DataFrame:
    """Fusion-style long scores of both tasks: every model scores every case (random, seeded)."""
    rng = np.random.default_rng(seed)
    rows = []
    for task, k in (("binary", 2), ("multiclass", len(clf.HISTOLOGY_CLASSES))):
        for split, n in (("train", n_train), ("external_test", n_ext)):
            labels = np.arange(n) % k
            for model in fusion.MODELS:
                p = rng.dirichlet(np.ones(k), size=n)
                for i in range(n):
                    rows.append({"case_id": f"{split}{i}", "split": split, "model": model, "label": int(labels[i]), "task": task,
                                 **{f"proba_{j}": p[i, j] for j in range(k)}})
    return pd.DataFrame(rows)


def test_fusion_tables_with_no_external_case_scored_are_rows_of_nan() -> None:
    scores = _binary_scores()
    full = fusion.evaluate(scores, 50)
    assert (full["n"] == 8).all() and full["auc"].between(0, 1).all()
    none = scores[scores["split"] != "external_test"]
    table = fusion.evaluate(none, 50)
    assert list(table.columns) == list(full.columns) and (table["n"] == 0).all() and table["auc"].isna().all()
    tests = fusion.compare_fusion_ct(none)
    assert tests["n"].tolist() == [0, 0] and tests["mcnemar_p"].isna().all()
    assert all(m.sum() == 0 for t in fusion.TASKS for m in fusion.confusion_matrices(none, t).values())
    assert fusion.beside_paper(table)["auc"].isna().all()


def test_delong_cnn_vs_svm_without_predicted_rois_is_a_row_of_nan() -> None:
    rng = np.random.default_rng(1)
    rows = [{"case_id": f"c{i}", "split": "external_test", "roi": roi, "model": model, "label": i % 2, "score": rng.random()}
            for i in range(10) for roi in ("reference", "predicted") for model in ("cnn_resnet2d", "radiomics_svm")
            if not (roi == "predicted" and model == "cnn_resnet2d")]  # the CNN had no predicted crop at all
    table = hist.delong_cnn_vs_svm(pd.DataFrame(rows)).set_index("roi")
    assert table.loc["reference", "n"] == 10 and 0 <= table.loc["reference", "p"] <= 1
    assert table.loc["predicted", "n"] == 0 and np.isnan(table.loc["predicted", "auc_cnn"])
    cases = pd.DataFrame({"case_id": ["c0", "c1", "c2"], "split": "external_test", "label": [0, 1, 0]})
    assert hist.gradcam_cases(cases, {}, 2).empty
    assert hist.gradcam_cases(cases, {"c0": 0, "c1": 0, "c2": 0}, 1)["case_id"].tolist() == ["c0", "c1"]
