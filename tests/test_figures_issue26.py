"""Issue 26, item 7: confusion matrices in words with percentages and a colour bar, the ROC legend off
the curves, Fig 4's paper band visible, and the t-interval of a bounded metric clipped to [0, 1]."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from amtlib.figures import classify as cfig  # noqa: E402
from amtlib.figures.evaluation import plot_froc  # noqa: E402


def test_readable_names():
    assert cfig.readable("binary: ct_only_cnn") == "benign vs malignant: CT-only CNN"
    assert cfig.readable("cnn_resnet2d, predicted ROI") == "2D CNN (ResNet), predicted ROI"
    assert cfig.readable("thymic_carcinoma") == "thymic carcinoma"


def test_confusion_cells_give_count_and_row_percentage_with_a_colour_bar():
    m = np.array([[3, 1], [2, 6]])  # rows true: 3/4 = 75 %, 1/4 = 25 %, 2/8 = 25 %, 6/8 = 75 %
    fig = cfig.plot_confusions({"binary: fusion": m, "binary: ct_only_cnn": np.zeros((2, 2), int)}, ["benign", "malignant"])
    ax = fig.axes[0]
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["1\n25%", "2\n25%", "3\n75%", "6\n75%"]
    assert ax.get_title() == "benign vs malignant: fusion network\n(n = 12)"
    assert sorted(t.get_text() for t in fig.axes[1].texts) == ["0\n0%"] * 4  # an empty row is 0 %, not NaN
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert len(bars) == 1 and bars[0].get_ylabel() == "% of the true class (row)"
    assert np.allclose(ax.images[0].get_array(), [[75, 25], [25, 75]])
    plt.close(fig)


def test_roc_legend_sits_below_the_axes():
    rng = np.random.default_rng(0)
    scores = pd.DataFrame({"curve": ["radiomics_svm, predicted"] * 40, "label": [0, 1] * 20, "score": rng.random(40)})
    fig = cfig.plot_roc(scores, "t", {"ResNet 101": (0.3, 0.88)})
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert legend.y1 < ax.get_window_extent().y0  # wholly below the plotting area
    assert any(t.get_text().startswith("radiomics SVM, model's masks (AUC") for t in ax.get_legend().get_texts())
    plt.close(fig)


def test_froc_paper_band_is_drawn_above_the_markers():
    t = np.round(np.arange(0.05, 0.96, 0.05), 2)
    froc = pd.DataFrame({"iou_threshold": t, "sensitivity": np.linspace(0.99, 0.2, len(t)), "fp_per_scan": np.linspace(1.5, 2.5, len(t))})
    for c in ("sensitivity", "fp_per_scan"):
        froc[f"{c}_ci_low"], froc[f"{c}_ci_high"] = froc[c] - 0.02, froc[c] + 0.02
    fig = plot_froc(froc)
    ax = fig.axes[0]
    outline = [p for p in ax.patches if p.get_label() == "paper, IoU 0.05-0.15 (text)"]
    markers = max(line.get_zorder() for line in ax.lines)
    assert len(outline) == 1 and outline[0].get_zorder() > markers and not outline[0].get_fill()
    assert any(a.get_text() == "paper, IoU 0.05-0.15" for a in ax.texts)
    plt.close(fig)


def test_t_interval_of_a_bounded_metric_is_clipped_to_0_1():
    from amtlib.evaluation import stats

    per_case = pd.DataFrame({"case_id": ["a", "b", "c"], "manufacturer": "SIEMENS", "histology": "teratoma",
                             "dice": [0.05, 0.90, 0.95], "iou": [0.02, 0.8, 0.9], "precision": [0.1, 0.9, 0.9],
                             "recall": [0.1, 0.9, 0.99], "max_axial_diameter_mm": 40.0})
    t3 = stats.table3(per_case, n_resamples=200).set_index("subgroup")
    # by hand: mean 0.633, SD 0.506, t(0.975, 2) = 4.303 -> 0.633 -/+ 1.257 = -0.62 .. 1.89, clipped to 0 .. 1
    assert t3.loc["others", "dice_t_ci_low"] == 0.0 and t3.loc["others", "dice_t_ci_high"] == 1.0
    assert 0.0 <= t3.loc["others", "dice_ci_low"] <= t3.loc["others", "dice_ci_high"] <= 1.0
