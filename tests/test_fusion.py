"""amtlib.classify.fusion (notebook 08): labels and standardisation by hand, the three models on a toy set
whose image carries no information and whose CTC level separates the classes, determinism under a seed,
the external statistics, calls, McNemar and confusion matrices on hand-built scores, and the mapping to
the fusion paper's tables (:data:`amtlib.reported.CTC_ROW`).

tests/test_classify.py already checks that external cases never inform the models, one CTC row and the
NaN rows when no external case is scored; this file tests the rest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from amtlib.classify import arms as clf
from amtlib.classify import cnn2d, fusion
from amtlib.reported import CTC_ROW, reported

CFG = cnn2d.CNNConfig(epochs=10, batch_size=8, widths=(4, 8, 8, 8), threads=1)
K = len(clf.HISTOLOGY_CLASSES)


def _toy(seed: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """36 cases (24 training, 12 external, each a quarter thymoma / cyst / lymphoma / teratoma). Every crop
    is the same fixed pattern, so the image says nothing; the CTC level is 20 (malignant) or 5 (benign)."""
    rng = np.random.default_rng(seed)
    hists = ["thymoma", "thymic_cyst", "lymphoma", "teratoma"] * 9
    split = ["train"] * 24 + ["external_test"] * 12
    cases = pd.DataFrame({"case_id": [f"c{i:02d}" for i in range(36)], "split": split, "histology": hists,
                          "age": rng.integers(30, 80, 36).astype(str), "sex": rng.choice(["M", "F"], 36)})
    malignant = ~cases["histology"].isin(clf.BENIGN_HISTOLOGIES)
    cases["ctc_level"] = (np.where(malignant, 20.0, 5.0) + rng.normal(0, 0.5, 36)).round(2).astype(str)
    pattern = np.random.default_rng(99).normal(size=(16, 16)).astype(np.float32)
    crops = {c: np.repeat(pattern[None], 2 if s == "train" else 1, axis=0) for c, s in zip(cases["case_id"], split)}
    return cases, crops


@pytest.fixture(scope="module")
def binary_scores() -> pd.DataFrame:
    cases, crops = _toy()
    return fusion.fit_and_score(cases, crops, "binary", CFG, seed=0)


# ------------------------------------------------------------------------------------ labels, inputs
def test_task_labels_binary_and_multiclass_by_hand():
    cases = pd.DataFrame({"histology": ["thymoma", "thymic_cyst", "teratoma", "lymphoma", "carcinoid", "thymic_carcinoma"]})
    assert fusion.task_labels(cases, "binary").tolist() == [1, 0, 0, 1, 1, 1]
    assert fusion.task_labels(cases, "multiclass").tolist() == [0, 3, 4, 2, 4, 1]  # teratoma, carcinoid: others
    with pytest.raises(ValueError, match=r"task must be one of \('binary', 'multiclass'\), got 'ternary'"):
        fusion.task_labels(cases, "ternary")


def test_standardise_uses_training_rows_only_and_imputes_their_mean():
    x = np.array([[1.0, 10.0], [3.0, 10.0], [np.nan, 10.0], [100.0, 5.0]])
    train = np.array([True, True, True, False])
    z = fusion.standardise(x, train)
    # column 0: training mean 2, SD 1 (1 and 3); NaN -> 0; column 1: SD 0 -> only centred
    assert z.dtype == np.float32
    np.testing.assert_array_equal(z, np.array([[-1, 0], [1, 0], [0, 0], [98, -5]], np.float32))


# ------------------------------------------------------------------------------------ the three models
def test_scores_have_one_row_per_case_and_model_with_probabilities(binary_scores):
    s = binary_scores
    assert list(s.columns) == ["case_id", "split", "model", "label", "proba_0", "proba_1", "task"]
    assert len(s) == 3 * 36 and s.groupby("model").size().to_dict() == {m: 36 for m in fusion.MODELS}
    assert (s["task"] == "binary").all()
    np.testing.assert_allclose(s[["proba_0", "proba_1"]].sum(axis=1), 1.0, atol=1e-6)
    cases, _ = _toy()
    for _, g in s.groupby("model"):
        assert g["case_id"].tolist() == cases["case_id"].tolist()
        assert g["label"].tolist() == fusion.task_labels(cases, "binary").tolist()


def test_ctc_separates_so_fusion_and_logistic_rank_perfectly_and_ct_only_cannot(binary_scores):
    table = fusion.evaluate(binary_scores, n_resamples=50).set_index("model")
    assert (table["n"] == 12).all()
    assert table.loc["fusion", "auc"] == 1.0 and table.loc["ctc_clinical_logistic", "auc"] == 1.0
    # one image for every case: the CT-only CNN gives every case the same score, AUC 1/2, and the
    # Youden threshold (the only score seen) calls all 12 malignant: 6 right
    ct = binary_scores[binary_scores["model"] == "ct_only_cnn"]
    assert ct["proba_1"].nunique() == 1
    assert table.loc["ct_only_cnn", "auc"] == 0.5 and table.loc["ct_only_cnn", "accuracy"] == 0.5
    assert (table.loc["ct_only_cnn", "sensitivity"], table.loc["ct_only_cnn", "specificity"]) == (1.0, 0.0)
    # fusion right on all 12, CT-only on 6: b = 6 discordant pairs, c = 0, exact p = 2 * 0.5**6
    test = fusion.compare_fusion_ct(binary_scores).iloc[0]
    assert (test["n"], test["acc_fusion"], test["acc_ct_only"]) == (12, 1.0, 0.5)
    assert (test["mcnemar_b"], test["mcnemar_c"]) == (6, 0) and test["mcnemar_p"] == pytest.approx(0.03125)
    assert (test["delong_auc_fusion"], test["delong_auc_ct_only"]) == (1.0, 0.5)


def test_same_seed_same_scores_other_seed_other_networks(binary_scores):
    cases, crops = _toy()
    again = fusion.fit_and_score(cases, crops, "binary", CFG, seed=0)
    pd.testing.assert_frame_equal(again, binary_scores)
    other = fusion.fit_and_score(cases, crops, "binary", CFG, seed=1)
    for model in ("ct_only_cnn", "fusion"):  # each network follows the seed
        m = other["model"] == model
        assert not np.allclose(other.loc[m, "proba_1"], binary_scores.loc[m, "proba_1"])


def test_multiclass_logistic_gives_zero_to_a_class_absent_from_training():
    cases, crops = _toy()
    s = fusion.fit_and_score(cases, crops, "multiclass", CFG, seed=0)
    assert [c for c in s.columns if c.startswith("proba_")] == [f"proba_{i}" for i in range(K)]
    probs = s[[f"proba_{i}" for i in range(K)]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    lr = s["model"] == "ctc_clinical_logistic"
    assert (s.loc[lr, "proba_1"] == 0).all()  # no thymic carcinoma among the training cases
    assert (s.loc[lr, ["proba_0", "proba_2", "proba_3", "proba_4"]] > 0).all().all()


# ------------------------------------------------------------------------------------ hand-built scores
def _scores() -> pd.DataFrame:
    """Binary and multi-class scores of the fusion and CT-only models, written by hand."""
    rows = []
    train_p = [0.2, 0.6, 0.7, 0.9]  # labels 0, 0, 1, 1: Youden's threshold is 0.7 (J = 1)
    ext = {"fusion": [0.69, 0.3, 0.72, 0.68], "ct_only_cnn": [0.8, 0.75, 0.9, 0.1]}  # labels 0, 0, 1, 1
    for model in ext:
        for i, (y, p) in enumerate(zip([0, 0, 1, 1], train_p)):
            rows.append({"case_id": f"t{i}", "split": "train", "model": model, "label": y, "task": "binary", "proba_0": 1 - p, "proba_1": p})
        for i, (y, p) in enumerate(zip([0, 0, 1, 1], ext[model])):
            rows.append({"case_id": f"e{i}", "split": "external_test", "model": model, "label": y, "task": "binary",
                         "proba_0": 1 - p, "proba_1": p})
    # multi-class, external labels 0, 2, 3, 4; fusion's largest probabilities 0, 2, 1, 4
    mc = np.array([[0.6, 0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.5, 0.2, 0.1], [0.1, 0.4, 0.1, 0.3, 0.1], [0.1, 0.1, 0.1, 0.2, 0.5]])
    for model in ext:
        for i, (y, p) in enumerate(zip([0, 2, 3, 4], mc if model == "fusion" else np.roll(mc, 1, axis=1))):
            for split in ("train", "external_test"):
                rows.append({"case_id": f"{split[0]}{i}", "split": split, "model": model, "label": y, "task": "multiclass",
                             **{f"proba_{j}": p[j] for j in range(K)}})
    return pd.DataFrame(rows)


def test_binary_calls_use_the_training_youden_threshold():
    calls = fusion.calls(_scores(), "binary", "fusion")
    assert calls["case_id"].tolist() == ["e0", "e1", "e2", "e3"]
    assert calls["call"].tolist() == [0, 0, 1, 0]  # >= 0.7, not >= 0.5 (which would call e0 and e3 malignant)
    row = fusion.evaluate(_scores(), n_resamples=50).set_index(["task", "model"]).loc[("binary", "fusion")]
    # AUC: of the pairs (0.72, 0.68) x (0.69, 0.3) only 0.68 < 0.69 is misordered -> 3/4
    assert row["auc"] == pytest.approx(0.75) and row["threshold"] == pytest.approx(0.7)
    # calls 0, 0, 1, 0 for labels 0, 0, 1, 1: TP 1, FN 1, TN 2, FP 0
    assert (row["accuracy"], row["sensitivity"], row["specificity"], row["ppv"]) == (0.75, 0.5, 1.0, 1.0)
    assert row["npv"] == pytest.approx(2 / 3)


def test_multiclass_accuracy_and_macro_auc_against_sklearn():
    s = _scores()
    row = fusion.evaluate(s, n_resamples=50).set_index(["task", "model"]).loc[("multiclass", "fusion")]
    assert row["accuracy"] == 0.75 and row["n"] == 4
    ex = s[(s["task"] == "multiclass") & (s["model"] == "fusion") & (s["split"] == "external_test")]
    y, p = ex["label"].to_numpy(), ex[[f"proba_{j}" for j in range(K)]].to_numpy()
    want = np.mean([roc_auc_score(y == c, p[:, c]) for c in (0, 2, 3, 4)])  # class 1 absent: left out
    assert row["auc"] == pytest.approx(want)


def test_mcnemar_and_confusion_matrices_by_hand():
    s = _scores()
    # binary: fusion right on e0, e1, e2; CT-only (calls 1, 1, 1, 0) right on e2 only -> b = 2, c = 0
    t = fusion.compare_fusion_ct(s).set_index("task")
    assert (t.loc["binary", "acc_fusion"], t.loc["binary", "acc_ct_only"]) == (0.75, 0.25)
    assert (t.loc["binary", "mcnemar_b"], t.loc["binary", "mcnemar_c"]) == (2, 0)
    assert t.loc["binary", "mcnemar_p"] == pytest.approx(0.5)  # exact: 2 * 0.5**2
    m = fusion.confusion_matrices(s, "binary")
    np.testing.assert_array_equal(m["fusion"], [[2, 0], [1, 1]])
    np.testing.assert_array_equal(m["ct_only_cnn"], [[0, 2], [1, 1]])
    assert m["ctc_clinical_logistic"].sum() == 0  # no rows for it
    mc = fusion.confusion_matrices(s, "multiclass")["fusion"]
    assert mc.shape == (K, K) and mc.sum() == 4 and mc[3, 1] == 1 and np.trace(mc) == 3


def test_one_class_external_set_gives_its_n_and_nan_statistics():
    s = _scores()
    one = s[~((s["split"] == "external_test") & (s["label"] == 0))]  # binary external: two malignant only
    row = fusion.evaluate(one, n_resamples=50).set_index(["task", "model"]).loc[("binary", "fusion")]
    assert row["n"] == 2 and np.isnan(row["auc"]) and np.isnan(row["accuracy"]) and np.isnan(row["threshold"])


# ------------------------------------------------------------------------------------ the fusion paper
def test_beside_paper_maps_each_model_to_the_papers_table():
    rep = reported()["dmfn_fusion"]
    table = pd.DataFrame({"task": ["binary", "binary", "multiclass", "binary"],
                          "model": ["fusion", "ct_only_cnn", "fusion", "ctc_clinical_logistic"], "n": [12, 12, 12, 12],
                          "auc": [0.9, 0.6, 0.8, 0.7], "auc_boot_low": [0.8, 0.5, 0.7, 0.6], "auc_boot_high": [1.0, 0.7, 0.9, 0.8]})
    out = fusion.beside_paper(table)
    assert out[["paper_auc", "paper_ci_low", "paper_ci_high"]].iloc[0].tolist() == rep["binary_validation"]["fusion"]["auc"]
    assert out["paper_auc"].iloc[:3].tolist() == [0.941, 0.710, 0.884]
    assert out[["paper_auc", "paper_ci_low", "paper_ci_high"]].iloc[3].isna().all()  # the paper has no such model
    assert out[["auc", "ci_low", "ci_high"]].iloc[1].tolist() == [0.6, 0.5, 0.7]


def test_ctc_rows_follow_ctc_row_for_every_histology_and_subtype_for_thymomas():
    paper = reported()["dmfn_fusion"]["table2_ctc_level"]
    hist = list(CTC_ROW) + ["thymoma", "thymoma", "thymoma", "germ_cell_tumour"]
    sub = [""] * len(CTC_ROW) + ["AB", "ab", "", ""]
    ctc = [str(10.0 + i) for i in range(len(CTC_ROW))] + ["12", "14", "30", "n/a"]
    t = fusion.ctc_vs_paper(pd.DataFrame({"histology": hist, "who_subtype": sub, "ctc_level": ctc}))
    for i, h in enumerate(CTC_ROW):
        row = CTC_ROW[h]
        assert t.loc[row, "count"] == 1 and t.loc[row, "mean"] == 10.0 + i
        assert [t.loc[row, "paper_mean"], t.loc[row, "paper_sd"]] == paper[row]
    # thymomas by subtype (case-insensitive): 12 and 14 -> mean 13, SD sqrt(2)
    assert t.loc["thymoma_ab", "count"] == 2 and t.loc["thymoma_ab", "mean"] == 13.0
    assert t.loc["thymoma_ab", "std"] == pytest.approx(np.sqrt(2.0))
    assert t.loc["thymoma_ab", "paper_mean"] == paper["thymoma_ab"][0]
    # a thymoma without a subtype and an unlisted histology are "others"; a non-number is not counted
    assert t.loc["others", "count"] == 1 and t.loc["others", "mean"] == 30.0
    assert t.loc["others", "paper_mean"] == paper["others"][0]
    assert set(t.index) == set(CTC_ROW.values()) | {"thymoma_ab", "others"}
