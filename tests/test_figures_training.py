"""amtlib.figures.training: the training curve's lines hold the log's columns, the star sits on the
iteration the log marks as selected, the legend names each series; the batch figure shows the middle
tumour slice of each crop, stretched per crop, outlined only where the slice has tumour."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from amtlib.figures import PREDICTION_COLOUR, REFERENCE_COLOUR  # noqa: E402
from amtlib.figures.training import plot_batch, plot_training_curve  # noqa: E402

# A train_log.csv as step 03 writes it (LOG_COLUMNS): evaluations every 50 iterations; is_best marks a
# strict improvement, so the tie at 200 (0.62 again) is not selected and the model of iteration 100 is.
LOG = pd.DataFrame({
    "iteration": [50, 100, 150, 200, 250],
    "epoch": [1.0, 2.0, 3.0, 4.0, 5.0],
    "train_loss": [0.91, 0.74, 0.60, 0.52, 0.47],
    "tuning_dice": [0.31, 0.62, 0.55, 0.62, 0.58],
    "best_tuning_dice": [0.31, 0.62, 0.62, 0.62, 0.62],
    "is_best": [True, True, False, False, False],
}, index=[7, 8, 9, 10, 11])  # not 0..n-1: a position taken for a label would show


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _axes(fig):
    ax, ax2 = fig.axes  # the loss axes and its twin (tuning Dice)
    assert ax.get_shared_x_axes().joined(ax, ax2)
    return ax, ax2


def test_curve_lines_are_the_log_columns_on_two_labelled_axes():
    fig = plot_training_curve(LOG)
    ax, ax2 = _axes(fig)
    assert ax.get_xlabel() == "iteration"
    assert ax.get_ylabel() == "training Dice loss" and ax2.get_ylabel() == "tuning Dice"
    assert to_hex(ax.yaxis.label.get_color()) == REFERENCE_COLOUR and to_hex(ax2.yaxis.label.get_color()) == PREDICTION_COLOUR
    assert ax.get_ylim() == (0, 1) and ax2.get_ylim() == (0, 1)
    (loss,) = ax.lines
    assert loss.get_label() == "training loss" and to_hex(loss.get_color()) == REFERENCE_COLOUR
    np.testing.assert_array_equal(np.asarray(loss.get_xdata(), float), [50, 100, 150, 200, 250])
    np.testing.assert_array_equal(np.asarray(loss.get_ydata(), float), [0.91, 0.74, 0.60, 0.52, 0.47])
    dice, _ = ax2.lines
    assert dice.get_label() == "tuning Dice" and to_hex(dice.get_color()) == PREDICTION_COLOUR
    np.testing.assert_array_equal(np.asarray(dice.get_xdata(), float), LOG["iteration"].to_numpy(float))
    np.testing.assert_array_equal(np.asarray(dice.get_ydata(), float), LOG["tuning_dice"].to_numpy(float))


def test_star_marks_the_iteration_the_log_selected_and_the_legend_names_it():
    fig = plot_training_curve(LOG)
    _, ax2 = _axes(fig)
    star = ax2.lines[1]
    selected = LOG[LOG["is_best"]].iloc[-1]  # the last strict improvement: the model step 03 kept
    assert (selected["iteration"], selected["tuning_dice"]) == (100, 0.62)
    assert list(star.get_xdata()) == [100] and list(star.get_ydata()) == [0.62]
    assert star.get_marker() == "*" and to_hex(star.get_color()) == "#000000"
    assert star.get_label() == "selected: 0.620 @ 100"
    legend = ax2.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["training loss", "tuning Dice", "selected: 0.620 @ 100"]
    fig.canvas.draw()  # the figure renders (Agg) with its legend below the axes


def test_evaluations_without_a_score_are_gaps_and_do_not_move_the_star():
    """Rows whose tuning Dice is NaN (an iteration logged between evaluations) stay in the loss line,
    are gaps in the Dice line, and the star sits on the best real score (0.70 at 30)."""
    log = pd.DataFrame({"iteration": [10, 20, 30, 40], "train_loss": [0.8, 0.7, 0.6, 0.5],
                        "tuning_dice": [0.40, np.nan, 0.70, np.nan]})
    fig = plot_training_curve(log)
    ax, ax2 = _axes(fig)
    np.testing.assert_array_equal(np.asarray(ax.lines[0].get_ydata(), float), [0.8, 0.7, 0.6, 0.5])
    np.testing.assert_array_equal(np.asarray(ax2.lines[0].get_ydata(), float), [0.40, np.nan, 0.70, np.nan])
    star = ax2.lines[1]
    assert list(star.get_xdata()) == [30] and list(star.get_ydata()) == [0.70]
    assert star.get_label() == "selected: 0.700 @ 30"


def test_a_run_without_tuning_cases_has_only_the_loss_and_an_empty_log_an_empty_figure():
    # no tuning split: step 03 writes NaN tuning Dice; there is nothing to select, so no star
    log = pd.DataFrame({"iteration": [5, 10], "train_loss": [0.9, 0.8], "tuning_dice": [np.nan, np.nan]})
    ax, ax2 = _axes(plot_training_curve(log))
    assert len(ax.lines) == 1 and len(ax2.lines) == 0 and ax2.get_legend() is None
    empty = pd.DataFrame(columns=["iteration", "train_loss", "tuning_dice"])
    ax, ax2 = _axes(plot_training_curve(empty))
    assert len(ax.lines) == 0 and len(ax2.lines) == 0
    assert (ax.get_xlabel(), ax.get_ylabel(), ax2.get_ylabel()) == ("iteration", "training Dice loss", "tuning Dice")


def test_batch_shows_the_middle_tumour_slice_of_each_crop():
    """Two crops of 6 slices (4 x 5 voxels). Crop A: tumour on slices 1, 3 and 4 (the middle one is 3), 12
    of 120 voxels (10%). Crop B: no tumour, so the middle slice 6 // 2 = 3, and that slice is constant,
    so its grey scale is [c, c + 1]."""
    z, y, x = 6, 4, 5
    rng = np.random.default_rng(3)
    images = np.zeros((2, 1, z, y, x), np.float32)
    images[0, 0] = np.arange(z)[:, None, None] * 10 + rng.random((z, y, x))  # each slice its own values
    images[1, 0] = np.arange(z)[:, None, None] * 1.0
    masks = np.zeros_like(images, dtype=np.uint8)
    masks[0, 0, 1, 0, :4] = 1
    masks[0, 0, 3, 1:3, 1:3] = 1
    masks[0, 0, 4, :2, :2] = 1
    assert masks[0].sum() == 12
    fig = plot_batch(images, masks, ["caseA", "caseB"])
    a, b = fig.axes
    assert a.get_title() == "caseA  z=3  fg=10%" and b.get_title() == "caseB  z=3  fg=0%"
    (img_a,), (img_b,) = a.get_images(), b.get_images()
    np.testing.assert_array_equal(img_a.get_array(), images[0, 0, 3])
    np.testing.assert_array_equal(img_b.get_array(), images[1, 0, 3])
    lo, hi = np.percentile(images[0, 0, 3], [1, 99])
    assert img_a.get_clim() == pytest.approx((lo, hi)) and img_b.get_clim() == (3.0, 4.0)
    # the outline: a contour on crop A's slice (orange) and none on crop B
    (contour,) = a.collections
    assert to_hex(contour.get_edgecolor()[0]) == REFERENCE_COLOUR and list(contour.levels) == [0.5]
    assert len(b.collections) == 0
    assert not a.axison and not b.axison


def test_batch_of_one_crop_accepts_tensors():
    import torch

    images = torch.zeros((1, 1, 3, 4, 4))
    images[0, 0, 2] = torch.arange(16.0).reshape(4, 4)
    masks = torch.zeros((1, 1, 3, 4, 4), dtype=torch.uint8)
    masks[0, 0, 2, 1, 1] = 1
    fig = plot_batch(images, masks, ["only"])
    (ax,) = fig.axes
    assert ax.get_title() == "only  z=2  fg=2%"  # 1 of 48 voxels
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), np.arange(16.0).reshape(4, 4))
