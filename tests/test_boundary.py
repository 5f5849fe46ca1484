"""Boundary metrics: exact phantoms computed by hand, the empty rules, the box-wise computation against a
whole-volume one, and MONAI's compute_hausdorff_distance / compute_average_surface_distance /
compute_surface_dice on random anisotropic masks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from amtlib.evaluation import boundary as B


def two_boxes(gap: int, axis: int = 2, shape: tuple[int, int, int] = (7, 7, 16)) -> tuple[np.ndarray, np.ndarray]:
    """Two 3x3x3 cubes ``gap`` empty voxels apart along ``axis``."""
    a, b = np.zeros(shape, bool), np.zeros(shape, bool)
    lo = [2, 2, 2]
    a[tuple(slice(s, s + 3) for s in lo)] = True
    lo[axis] += 3 + gap
    b[tuple(slice(s, s + 3) for s in lo)] = True
    return a, b


@pytest.mark.parametrize("axis", [0, 2])
def test_two_cubes_a_known_distance_apart(axis):
    """A 3x3x3 cube has 26 boundary voxels: 9 on the near face at (1+g) voxels, 8 in the middle ring at
    (2+g), 9 on the far face at (3+g), each from the other cube's near face (g = gap, s = spacing
    along the axis). HD95: rank 0.95 x 25 = 23.75 lies among the 9 far ones: (3+g) s. ASSD: (52 + 26 g) s / 52 x 2
    = (2+g) s. NSD at a tau between (1+g) s and (2+g) s: the near faces, 18 of 52 = 9/26."""
    spacing = (5.0, 0.8, 0.7)
    g, s = 2, spacing[axis]
    a, b = two_boxes(g, axis, shape=(16, 7, 7) if axis == 0 else (7, 7, 16))
    assert B.boundary(a).sum() == 26
    d_a, d_b = B.surface_distances(a, b, spacing)
    np.testing.assert_allclose(np.sort(d_a), np.repeat([(1 + g) * s, (2 + g) * s, (3 + g) * s], [9, 8, 9]))
    tau = (1.5 + g) * s
    m = B.boundary_metrics(a, b, spacing, tolerances_mm=(tau,))
    assert m["hd95_mm"] == pytest.approx((3 + g) * s)
    assert m["assd_mm"] == pytest.approx((2 + g) * s)
    assert m[B.nsd_column(tau)] == pytest.approx(9 / 26)


def test_mean_of_means_and_pooled_percentile_differ_from_the_defaults():
    """A 3x3x3 cube inside a 5x5x5 one (1 mm): each of the inner cube's 26 boundary voxels is 1 mm from
    the outer boundary; the outer's 98 are 1, sqrt 2 or sqrt 3 mm from the inner one (faces, edges,
    corners), so pooling weighs the outer shell more than the mean of the two directed means does."""
    outer = np.zeros((7, 7, 7), bool)
    outer[1:6, 1:6, 1:6] = True
    inner = np.zeros_like(outer)
    inner[2:5, 2:5, 2:5] = True
    d_in, d_out = B.surface_distances(inner, outer, (1.0, 1.0, 1.0))
    assert len(d_in) == 26 and len(d_out) == 98 and np.all(d_in == 1.0)
    pooled = B.metrics_from_distances(d_in, d_out)
    means = B.metrics_from_distances(d_in, d_out, assd_mode="mean_of_means")
    assert pooled["assd_mm"] == pytest.approx(np.concatenate([d_in, d_out]).mean())
    assert means["assd_mm"] == pytest.approx((1.0 + d_out.mean()) / 2)
    assert means["assd_mm"] < pooled["assd_mm"]
    assert sorted(set(np.round(d_out ** 2).astype(int))) == [1, 2, 3]
    hd_pooled = B.metrics_from_distances(d_in, d_out, hd_mode="pooled")["hd95_mm"]
    assert hd_pooled == pytest.approx(np.percentile(np.concatenate([d_in, d_out]), 95))
    assert hd_pooled <= pooled["hd95_mm"] == pytest.approx(np.percentile(d_out, 95))


def sphere(shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float) -> np.ndarray:
    z, y, x = np.indices(shape)
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


@pytest.mark.parametrize("shift", [1, 3])
def test_sphere_against_its_shifted_copy(shift):
    """Every boundary voxel of the copy is a boundary voxel of the sphere moved by ``shift`` voxels, so no
    distance exceeds shift x spacing, and the poles on the shift axis reach it: max = shift x s exactly,
    NSD at tau = shift x s is 1, and the two directions are mirror images (same distances)."""
    spacing = (1.0, 1.0, 0.8)
    a = sphere((24, 24, 30), (12, 12, 12), 7.0)
    b = np.roll(a, shift, axis=2)
    d_a, d_b = B.surface_distances(a, b, spacing)
    assert d_a.max() == pytest.approx(shift * 0.8) and d_b.max() == pytest.approx(shift * 0.8)
    np.testing.assert_allclose(np.sort(d_a), np.sort(d_b))
    m = B.boundary_metrics(a, b, spacing, tolerances_mm=(shift * 0.8,))
    assert m["hd95_mm"] <= shift * 0.8 + 1e-9 and m[B.nsd_column(shift * 0.8)] == 1.0
    same = B.boundary_metrics(a, a, spacing)
    assert same == {"hd95_mm": 0.0, "assd_mm": 0.0, "nsd_2mm": 1.0}


def test_empty_rules():
    a, _ = two_boxes(2)
    empty = np.zeros_like(a)
    both = B.boundary_metrics(empty, empty, (1.0, 1.0, 1.0), tolerances_mm=(1.0, 2.0))
    assert all(math.isnan(v) for v in both.values()) and set(both) == {"hd95_mm", "assd_mm", "nsd_1mm", "nsd_2mm"}
    for pred, ref in ((empty, a), (a, empty)):
        one = B.boundary_metrics(pred, ref, (1.0, 1.0, 1.0), tolerances_mm=(1.0, 2.0))
        assert one == {"hd95_mm": math.inf, "assd_mm": math.inf, "nsd_1mm": 0.0, "nsd_2mm": 0.0}


def whole_volume(p: np.ndarray, r: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    bp, br = B.boundary(p), B.boundary(r)
    return (ndimage.distance_transform_edt(~br, sampling=spacing)[bp],
            ndimage.distance_transform_edt(~bp, sampling=spacing)[br])


def random_pair(rng: np.random.Generator, shape=(10, 48, 48)) -> tuple[np.ndarray, np.ndarray]:
    """Sparse blobs, some touching the volume's edge, some far from anything of the other mask."""
    masks = []
    for _ in range(2):
        seeds = rng.random(shape) < rng.uniform(0.0005, 0.01)
        masks.append(ndimage.binary_dilation(seeds, iterations=int(rng.integers(0, 3))))
    return masks[0], masks[1]


def test_box_wise_distances_equal_the_whole_volume_transform():
    """Boundaries found lesion box by lesion box, nearest neighbours by k-d tree, equal a distance
    transform of the whole volume read at the boundary voxels (far-apart blobs, blobs at the edge)."""
    rng = np.random.default_rng(7)
    for _ in range(25):
        p, r = random_pair(rng)
        if not (p.any() and r.any()):
            continue
        spacing = tuple(rng.uniform(0.4, 5.0, 3))
        want = whole_volume(p, r, spacing)
        for g, w in zip(B.surface_distances(p, r, spacing), want):
            np.testing.assert_allclose(np.sort(g), np.sort(w))


def test_agrees_with_monai_on_random_anisotropic_masks():
    torch = pytest.importorskip("torch")
    metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(3)
    n = 0
    while n < 12:
        p, r = random_pair(rng, (12, 40, 36))
        if not (p.any() and r.any()):
            continue
        n += 1
        spacing = tuple(float(s) for s in rng.uniform(0.5, 5.0, 3))
        ours = B.boundary_metrics(p, r, spacing, tolerances_mm=(1.0, 2.5))
        P, R = (torch.from_numpy(m[None, None].astype(np.float32)) for m in (p, r))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI's deprecation notices
            hd = metrics.compute_hausdorff_distance(P, R, percentile=95, spacing=spacing).item()
            assd = metrics.compute_average_surface_distance(P, R, symmetric=True, spacing=spacing).item()
            nsd = [metrics.compute_surface_dice(P, R, [t], include_background=True, spacing=spacing).item() for t in (1.0, 2.5)]
        assert ours["hd95_mm"] == pytest.approx(hd, rel=1e-6)
        assert ours["assd_mm"] == pytest.approx(assd, rel=1e-6)
        assert [ours["nsd_1mm"], ours["nsd_2.5mm"]] == pytest.approx(nsd, rel=1e-6)


def test_lesion_regions_hold_each_component_whole():
    m = np.zeros((6, 40, 40), bool)
    m[0:2, 0:3, 0:3] = True  # at the volume's corner
    m[3:5, 20:30, 21:23] = True
    m[5, 38:40, 0:2] = True
    regions = B.lesion_regions(m)
    assert len(regions) == 3
    covered = np.zeros_like(m)
    for reg in regions:
        covered[reg] = True
        inner = m[reg]
        # a 1-voxel background rim wherever the box is not at the volume's edge
        for ax, s in enumerate(reg):
            if s.start > 0:
                assert not inner.take(0, axis=ax).any()
            if s.stop < m.shape[ax]:
                assert not inner.take(-1, axis=ax).any()
    assert covered[m].all() and B.lesion_regions(np.zeros_like(m)) == []


def test_quantiles_with_infinite_values():
    assert B.quantiles_with_inf([1.0, 2.0, math.inf]) == [1.5, 2.0, math.inf]
    assert B.quantiles_with_inf([math.inf, math.inf, 3.0]) == [math.inf, math.inf, math.inf]
    assert B.quantiles_with_inf([4.0, math.nan, 1.0, 2.0, 3.0]) == pytest.approx(list(np.quantile([1, 2, 3, 4], [0.25, 0.5, 0.75])))
    assert all(math.isnan(v) for v in B.quantiles_with_inf([math.nan]))
    s = B.summarise([1.0, math.inf, math.nan, 3.0])
    assert (s["median"], s["q1"], s["n"], s["n_inf"], s["n_nan"]) == (3.0, 2.0, 3, 1, 1)


def test_columns_and_conventions_table():
    assert B.nsd_column(2) == "nsd_2mm" and B.nsd_column(1.5) == "nsd_1.5mm"
    assert B.boundary_columns(["nsd", "hd95"], (1.0, 2.0)) == ["hd95_mm", "nsd_1mm", "nsd_2mm"]
    table = B.conventions_table((1.0, 2.0))
    assert list(table.columns) == ["metric", "convention", "parameter", "value"]
    rows = table.set_index("parameter")["value"]
    assert rows["nsd_tolerance_mm"] == "1, 2" and rows["hd_mode"] == "max_directed" and rows["hd_percentile"] == "95"
    with pytest.raises(ValueError, match="hd_mode"):
        B.metrics_from_distances(np.ones(2), np.ones(2), hd_mode="mean")
