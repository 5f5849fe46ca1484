"""amtlib.figures.cohort: the Fig. 2 flow diagram's box texts and arrows against counts computed by hand
from a small cohort, the paper's counts beside them, and the case gallery's slices, outlines and titles."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402

from amtlib.cohort import REASONS  # noqa: E402
from amtlib.figures import window  # noqa: E402
from amtlib.figures.cohort import case_gallery, flow_diagram, largest_tumour_slice  # noqa: E402
from amtlib.reported import reported  # noqa: E402
from amtlib.split import split_flow  # noqa: E402
from conftest import write_nifti_case  # noqa: E402

# 12 screened patients; 2 excluded; the 10 included come from institutions A-E:
#   external test: A, A, B          -> 3 cases, 2 institutions
#   training:      C, C, D, D, D    -> 5 cases, 2 institutions
#   tuning:        D, E             -> 2 cases, 2 institutions
#   development = training + tuning -> 7 cases, 3 institutions (C, D, E)
SPLIT = pd.DataFrame({"split": ["external_test"] * 3 + ["train"] * 5 + ["tuning"] * 2,
                      "institution": list("AAB") + list("CCDDD") + list("DE")})
FLOW = {"screened": 12, "excluded": 2, "excluded_by_reason": {"no_reference_mask": 1, "tilted_gantry": 1},
        "included": 10, "included_institutions": 5}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _boxes(fig: "plt.Figure") -> dict[str, tuple[float, float]]:
    """Box text -> its (x, y) position."""
    return {t.get_text(): t.get_position() for t in fig.axes[0].texts if not isinstance(t, Annotation)}


def _arrows(fig: "plt.Figure") -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """(start, end) of each arrow."""
    return [(a.xyann, a.xy) for a in fig.axes[0].texts if isinstance(a, Annotation)]


def test_split_boxes_give_the_hand_counted_cases_and_institutions():
    fig = flow_diagram(FLOW, split_flow(SPLIT))
    boxes = _boxes(fig)
    assert set(boxes) == {
        "Screened patients\nN = 12",
        "Excluded N = 2\nno reference mask: 1\ntilted gantry: 1",
        "Included\nN = 10 (5 institutions)",
        "External testing\nN = 3 (2 institutions)",
        "Development\nN = 7 (3 institutions)",
        "Training\nN = 5 (2 institutions)",
        "Tuning\nN = 2 (2 institutions)",
    }
    assert len(_arrows(fig)) == 6


def test_arrows_join_included_to_both_arms_and_development_to_training_and_tuning():
    fig = flow_diagram(FLOW, split_flow(SPLIT))
    at = {text.split("\n")[0]: xy for text, xy in _boxes(fig).items()}
    arrows = _arrows(fig)

    def targets_from(box: str) -> set[str]:
        x, y = at[box]
        # an arrow leaves a box from just below it (or its right side) and ends just above (or left of) another
        ends = [e for s, e in arrows if abs(s[0] - x) < 1e-9 and 0 < y - s[1] <= 0.07 + 1e-9]
        return {name for name, (bx, by) in at.items() for ex, ey in ends if abs(ex - bx) < 1e-9 and 0 < ey - by <= 0.07 + 1e-9}

    assert targets_from("Screened patients") == {"Included"}
    assert targets_from("Included") == {"External testing", "Development"}
    assert targets_from("Development") == {"Training", "Tuning"}
    # the exclusion arrow leaves the screened-to-included line towards the excluded box, level with it
    (ex_x, ex_y), = [xy for name, xy in at.items() if name.startswith("Excluded")]
    assert any(e[1] == pytest.approx(ex_y) and s[0] == pytest.approx(at["Included"][0]) and e[0] < ex_x for s, e in arrows)


def test_paper_counts_beside_ours_with_development_derived_from_the_papers_arms():
    rep = reported()["cohort_flow"]
    fig = flow_diagram(FLOW, split_flow(SPLIT), rep, REASONS)
    boxes = set(_boxes(fig))
    # development in the paper: 485 + 62 = 547 cases, 136 - 121 = 15 institutions
    assert "Development\nN = 7 (3 institutions)\npaper: N = 547 (15 inst.)" in boxes
    assert "Screened patients\nN = 12\npaper: N = 858" in boxes
    assert "Included\nN = 10 (5 institutions)\npaper: N = 711 (136 inst.)" in boxes
    assert "External testing\nN = 3 (2 institutions)\npaper: N = 164 (121 inst.)" in boxes
    assert "Training\nN = 5 (2 institutions)\npaper: N = 485 (13 inst.)" in boxes
    assert "Tuning\nN = 2 (2 institutions)\npaper: N = 62 (4 inst.)" in boxes
    # reasons in the cohort's words
    assert f"Excluded N = 2 (paper: 147)\n{REASONS['no_reference_mask']}: 1\n{REASONS['tilted_gantry']}: 1" in boxes


def test_without_split_counts_only_the_first_three_boxes_on_a_shorter_figure():
    fig = flow_diagram({**FLOW, "excluded_by_reason": {}})
    assert set(_boxes(fig)) == {"Screened patients\nN = 12", "Excluded N = 2", "Included\nN = 10 (5 institutions)"}
    assert len(_arrows(fig)) == 2
    assert tuple(fig.get_size_inches()) == (8.5, 4.0)
    assert tuple(flow_diagram(FLOW, split_flow(SPLIT)).get_size_inches()) == (8.5, 7.0)


# ------------------------------------------------------------------------------------------------ gallery
def test_largest_tumour_slice_by_hand():
    m = np.zeros((5, 4, 4), np.uint8)
    m[1, :2, :2] = 1  # 4 voxels
    m[3, :3, :3] = 1  # 9 voxels
    m[4, 0, :4] = 3  # 4 voxels: a voxel counts once whatever its label (not by its value, 12)
    assert largest_tumour_slice(m) == 3
    m[0, :3, :3] = 1  # a tie: the first slice
    assert largest_tumour_slice(m) == 0
    assert largest_tumour_slice(np.zeros((5, 4, 4))) == 2 and largest_tumour_slice(np.zeros((4, 2, 2))) == 2


def _gallery_cases(tmp_path) -> pd.DataFrame:
    """Three cases; slice z has HU 10 * z (so the slice shown can be identified) and each case's largest
    tumour sits in a different slice."""
    rows = []
    for cid, k, maker in (("a", 1, "Siemens"), ("b", 4, ""), ("c", 2, "GE")):
        image = np.broadcast_to((10 * np.arange(6, dtype=np.int16))[:, None, None], (6, 12, 10)).copy()
        mask = np.zeros(image.shape, np.uint8)
        mask[k, 3:8, 2:7] = 1
        mask[(k + 1) % 6, 4:6, 4:6] = 1  # a smaller part in the next slice
        write_nifti_case(tmp_path, cid, image=image, mask=mask, spacing=(5.0, 0.8, 0.8))
        rows.append({"case_id": cid, "image_path": f"images/{cid}.nii.gz", "mask_path": f"masks/{cid}.nii.gz",
                     "histology": "thymoma" if cid != "b" else "lymphoma", "manufacturer": maker})
    return pd.DataFrame(rows)


def test_gallery_shows_each_cases_largest_tumour_slice_outlined_with_its_title(tmp_path):
    manifest = _gallery_cases(tmp_path)
    fig = case_gallery(manifest, tmp_path, case_ids=["b", "a", "c"], ncols=2)
    axes = fig.axes
    assert len(axes) == 4  # ceil(3 / 2) rows of 2
    shown = [ax for ax in axes if ax.images]
    assert [ax.get_title() for ax in shown] == ["b\nlymphoma, ?", "a\nthymoma, Siemens", "c\nthymoma, GE"]
    for ax, k in zip(shown, (4, 1, 2)):
        np.testing.assert_allclose(ax.images[0].get_array(), window(np.full((12, 10), 10.0 * k)))
        assert len(ax.collections) == 1  # the reference outline
        assert not ax.axison
    assert not axes[3].images and not axes[3].axison


def test_gallery_draws_n_cases_reproducibly_by_seed(tmp_path):
    manifest = _gallery_cases(tmp_path)

    def titles(seed: int, n: int = 2) -> list[str]:
        fig = case_gallery(manifest.drop(columns="manufacturer"), tmp_path, n=n, seed=seed)
        got = [ax.get_title() for ax in fig.axes if ax.images]
        assert all(t.endswith(", ?") for t in got)  # no manufacturer column: "?"
        return [t.split("\n")[0] for t in got]

    first = titles(0)
    assert len(first) == 2 and first == sorted(first) and set(first) <= {"a", "b", "c"}
    assert titles(0) == first
    assert {tuple(titles(s)) for s in range(8)} != {tuple(first)}  # the seed chooses
    assert titles(0, n=10) == ["a", "b", "c"]  # n above the cohort size: every case
