"""Crops and axial-plane affine augmentation of the training batches."""

import math

import numpy as np
import pytest
import torch

from amtlib.segmentation.augment import AugmentConfig, BatchSampler, cases_for_iteration, crop, make_affine
from amtlib.segmentation.preprocess import CaseVolume, Normalisation, foreground_indices

PATCH = (8, 24, 24)


def _case(cid, image, mask):
    return CaseVolume(cid, image.astype(np.float32), mask, image.shape, (1.0, 1.0, 1.0), np.eye(4),
                      float(image.min()), float(image.max()), foreground_indices(mask) if mask is not None else np.zeros(0, np.int64))


def _estimated_map(seed, cfg, patch=PATCH):
    """Jacobian d(input coordinate)/d(output coordinate) at the patch centre, from three ramp images."""
    region = cfg.margin_patch(patch)
    t = make_affine(cfg, patch)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in region], indexing="ij")
    rows = []
    for g in grids:
        t.set_random_state(seed=seed)
        out = t({"image": torch.from_numpy(g)[None], "mask": torch.zeros((1, *region))})["image"][0].numpy()
        c = tuple(n // 2 for n in patch)
        rows.append([(out[tuple(c[i] + (1 if i == a else 0) for i in range(3))] - out[tuple(c[i] - (1 if i == a else 0) for i in range(3))]) / 2
                     for a in range(3)])
    return np.array(rows)


@pytest.mark.parametrize("seed", range(6))
def test_affine_is_axial_only_and_bounded(seed):
    cfg = AugmentConfig(rotate_deg=10.0, scale_min=0.8, scale_max=1.2)
    J = _estimated_map(seed, cfg)
    # z row and z column are the identity: no tilt out of the axial plane, no scaling along z
    np.testing.assert_allclose(J[0], [1, 0, 0], atol=1e-4)
    np.testing.assert_allclose(J[1:, 0], [0, 0], atol=1e-4)
    inplane = J[1:, 1:]
    sv = np.linalg.svd(inplane, compute_uv=False)
    assert np.all(sv >= 0.8 - 1e-3) and np.all(sv <= 1.2 + 1e-3)  # MONAI scales the sampling grid by the factor
    u, _, vt = np.linalg.svd(inplane)
    rot = u @ vt
    assert abs(math.degrees(math.atan2(rot[1, 0], rot[0, 0]))) <= 10.0 + 0.5


def test_axial_scales_are_independent_and_z_profile_untouched():
    cfg = AugmentConfig(rotate_deg=0.0, scale_min=0.8, scale_max=1.2)
    ratios = []
    for seed in range(8):
        J = _estimated_map(seed, cfg)
        np.testing.assert_allclose([J[1, 2], J[2, 1]], [0, 0], atol=1e-4)  # no rotation asked: diagonal map
        ratios.append(J[1, 1] / J[2, 2])
    assert np.ptp(ratios) > 0.1  # y and x scale factors drawn separately, not one isotropic zoom
    # a volume constant in each axial slice comes out with the same slice values in the same order
    vol = np.broadcast_to(np.arange(PATCH[0], dtype=np.float32)[:, None, None] * 10, cfg.margin_patch(PATCH)).copy()
    t = make_affine(AugmentConfig(), PATCH)
    t.set_random_state(seed=3)
    out = t({"image": torch.from_numpy(vol)[None], "mask": torch.zeros((1, *vol.shape))})["image"][0].numpy()
    np.testing.assert_allclose(out, np.arange(PATCH[0])[:, None, None] * 10 * np.ones(PATCH), atol=1e-3)


def test_crop_pads_small_volume_with_pad_value():
    vol = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    out = crop(vol, (1, 1, 2), (4, 5, 6), pad_value=-1.0)
    assert out.shape == (4, 5, 6)
    np.testing.assert_array_equal(out[1:3, 1:4, 1:5], vol)  # box starts at (1-2, 1-2, 2-3) = (-1, -1, -1)
    assert (out == -1).sum() == out.size - vol.size


def test_cases_for_iteration_cover_each_case_once_per_epoch():
    seen = [i for it in range(4) for i in cases_for_iteration(it, 6, 3, seed=1)]
    assert sorted(seen[:6]) == list(range(6)) and sorted(seen[6:12]) == list(range(6))
    ranks = [cases_for_iteration(0, 12, 3, seed=1, rank=r, world=2) for r in range(2)]
    assert set(ranks[0]).isdisjoint(ranks[1])


def test_every_batch_holds_foreground_and_background_even_with_empty_case():
    rng = np.random.default_rng(0)
    small = np.zeros((10, 40, 40), np.uint8)
    small[4:6, 18:21, 30:33] = 1  # a tiny tumour that uniform crops almost always miss
    cases = [_case(f"e{i}", rng.normal(0, 1, (10, 40, 40)), np.zeros((10, 40, 40), np.uint8)) for i in range(4)]
    cases.append(_case("fg", rng.normal(0, 1, (10, 40, 40)), small))
    s = BatchSampler(cases, Normalisation(-5, 5), PATCH, 3, AugmentConfig(fg_probability=1.0), seed=0)
    for it in range(25):
        x, y, ids = s.batch(it)
        assert x.shape == (3, 1, *PATCH) and y.shape == (3, 1, *PATCH)
        assert (y > 0).any() and (y == 0).any(), (it, ids)


def test_volume_smaller_than_patch_is_padded_and_batches_are_reproducible():
    mask = np.zeros((4, 10, 10), np.uint8)
    mask[1:3, 3:7, 3:7] = 1
    case = _case("tiny", np.full((4, 10, 10), 40.0), mask)
    s = BatchSampler([case], Normalisation(-1024, 976), PATCH, 3, AugmentConfig(), seed=5)
    x, y, _ = s.batch(7)
    assert x.shape == (3, 1, *PATCH)
    assert torch.isclose(x.min(), torch.tensor(0.0), atol=1e-6)  # air padding is normalised to 0 here
    x2, y2, _ = BatchSampler([case], Normalisation(-1024, 976), PATCH, 3, AugmentConfig(), seed=5).batch(7)
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_sampler_refuses_cases_without_any_foreground():
    case = _case("none", np.zeros((8, 24, 24)), np.zeros((8, 24, 24), np.uint8))
    with pytest.raises(ValueError, match="foreground"):
        BatchSampler([case], Normalisation(-1, 1), PATCH, 3, AugmentConfig(), seed=0)


def test_batches_without_monai_metadata_equal_those_with_it(monkeypatch):
    """The sampler turns MONAI's MetaTensor tracking off around its affine (issue 13: a third of the
    transform's time). Batches must equal, voxel for voxel, those made with tracking left on, and
    the global flag must be restored afterwards."""
    from monai.data import get_track_meta

    import amtlib.segmentation.augment as aug

    rng = np.random.default_rng(0)
    image = rng.normal(40, 30, (12, 40, 40))
    mask = np.zeros((12, 40, 40), np.uint8)
    mask[4:8, 15:25, 12:22] = 1
    make = lambda: BatchSampler([_case("a", image, mask), _case("b", image[::-1].copy(), mask[::-1].copy())],  # noqa: E731
                                Normalisation(-1024, 976), PATCH, 3, AugmentConfig(), seed=2)
    fast = [make().batch(it) for it in range(4)]
    assert get_track_meta() is True
    monkeypatch.setattr(aug, "set_track_meta", lambda flag: None)  # tracking stays on
    slow = [make().batch(it) for it in range(4)]
    for (x1, y1, _), (x2, y2, _) in zip(fast, slow):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert any(float(y.sum()) > 0 for _, y, _ in fast)
