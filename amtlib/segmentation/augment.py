"""Training batches: random crops holding foreground and background, axial-plane affine augmentation.

Paper: "Training settings" -- (1) rotation by -10..+10 degrees in the axial plane, (2) scaling of the two
axial axes independently by 0.8..1.2, (3) random crops such that every batch holds foreground and
background; the centre of the first crop of a batch is uniform over the whole image. The paper does not
say how the other crops are centred: here each is centred on a random foreground voxel with probability
``fg_probability`` (else uniform), and a batch that still lacks foreground or background has its last
crop redrawn (from another case with foreground when needed).

The affine is MONAI's :class:`~monai.transforms.RandAffined` on the (z, y, x) patch: ``rotate_range``
and ``scale_range`` are non-zero only for the in-plane axes, so the z axis is never touched. It runs on
the training device (GPU when there is one), on a crop with an in-plane margin large enough that the
rotated, scaled patch never samples outside it. Each batch is a pure function of (seed, iteration,
rank), so an interrupted run resumes with exactly the batches it would have drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import RandAffined

from amtlib.errors import AmtError
from amtlib.segmentation.preprocess import AIR_HU, CaseVolume, Normalisation

Patch = tuple[int, int, int]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges: in-plane rotation (degrees, symmetric) and per-axis in-plane scale range."""

    rotate_deg: float = 10.0
    scale_min: float = 0.8
    scale_max: float = 1.2
    fg_probability: float = 0.5

    def margin_patch(self, patch: Patch) -> Patch:
        """Crop size whose centre region covers every rotated/scaled ``patch`` (z unchanged)."""
        theta = math.radians(abs(self.rotate_deg))
        reach = (math.cos(theta) + math.sin(theta)) * max(1.0 / self.scale_min, self.scale_max)
        return (patch[0], *(int(math.ceil(p * reach)) + 2 for p in patch[1:]))  # type: ignore[return-value]


def make_affine(cfg: AugmentConfig, patch: Patch, device: torch.device | str = "cpu") -> RandAffined:
    """MONAI random affine for keys ``image`` (bilinear) and ``mask`` (nearest), axial plane only."""
    half = (cfg.scale_max - cfg.scale_min) / 2
    centre = (cfg.scale_max + cfg.scale_min) / 2 - 1.0
    if abs(centre) > 1e-9:
        raise ValueError(f"scale range [{cfg.scale_min}, {cfg.scale_max}] must be symmetric about 1 (MONAI draws 1 + U(-a, a))")
    return RandAffined(
        keys=("image", "mask"),
        prob=1.0,
        rotate_range=(math.radians(cfg.rotate_deg), 0.0, 0.0),
        scale_range=(0.0, half, half),
        spatial_size=patch,
        mode=("bilinear", "nearest"),
        padding_mode="zeros",
        device=torch.device(device),
    )


def crop(volume: np.ndarray, centre: Sequence[int], size: Sequence[int], pad_value: float) -> np.ndarray:
    """The ``size`` box of a (z, y, x) array centred on ``centre``, padded with ``pad_value`` outside."""
    out = np.full(tuple(size), pad_value, dtype=np.float32)
    src, dst = [], []
    for c, s, n in zip(centre, size, volume.shape):
        lo = int(c) - s // 2
        a, b = max(lo, 0), min(lo + s, n)
        src.append(slice(a, max(a, b)))
        dst.append(slice(a - lo, a - lo + max(0, b - a)))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def _centre(case: CaseVolume, on_foreground: bool, rng: np.random.Generator) -> tuple[int, int, int]:
    if on_foreground and case.has_foreground:
        flat = int(case.fg_indices[rng.integers(case.fg_indices.size)])
        return tuple(int(v) for v in np.unravel_index(flat, case.shape))  # type: ignore[return-value]
    return tuple(int(rng.integers(n)) for n in case.shape)  # type: ignore[return-value]


def cases_for_iteration(iteration: int, n_cases: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> list[int]:
    """Case indices of one batch: consecutive draws from per-epoch permutations (no state carried)."""
    out = []
    for j in range(batch_size):
        k = (iteration * world + rank) * batch_size + j
        epoch, pos = divmod(k, n_cases)
        out.append(int(np.random.default_rng([seed, 7919, epoch]).permutation(n_cases)[pos]))
    return out


class BatchSampler:
    """Draws augmented training batches ``(images, masks, case_ids)`` of shape (B, 1, z, y, x)."""

    def __init__(self, cases: Sequence[CaseVolume], norm: Normalisation, patch: Patch, batch_size: int,
                 augment: AugmentConfig, seed: int, device: torch.device | str = "cpu", rank: int = 0, world: int = 1) -> None:
        if not cases:
            raise ValueError("no training cases to sample from")
        if not any(c.has_foreground for c in cases):
            raise ValueError("no training case has foreground; cannot build batches with tumour voxels")
        self.cases, self.norm, self.patch, self.batch_size = list(cases), norm, tuple(patch), batch_size
        self.augment, self.seed, self.device, self.rank, self.world = augment, seed, torch.device(device), rank, world
        self.region = augment.margin_patch(self.patch)
        self.affine = make_affine(augment, self.patch, self.device)
        self.fg_cases = [i for i, c in enumerate(self.cases) if c.has_foreground]

    def _one(self, idx: int, on_fg: bool, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        case = self.cases[idx]
        centre = _centre(case, on_fg, rng)
        img = self.norm.apply(crop(case.image_hu, centre, self.region, AIR_HU))
        msk = crop(case.mask, centre, self.region, 0.0) if case.mask is not None else np.zeros(self.region, np.float32)
        self.affine.set_random_state(seed=int(rng.integers(2**31 - 1)))
        # MONAI's MetaTensor bookkeeping (affine history, applied operations) is a third of the
        # transform's time and never read here: off for this call, the same voxels (tested)
        track = get_track_meta()
        set_track_meta(False)
        try:
            out = self.affine({"image": torch.from_numpy(img)[None].to(self.device),
                               "mask": torch.from_numpy(msk)[None].to(self.device)})
        finally:
            set_track_meta(track)
        return torch.as_tensor(out["image"]).as_subclass(torch.Tensor), torch.as_tensor(out["mask"]).as_subclass(torch.Tensor)

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """The batch of ``iteration``; a pure function of (seed, iteration, rank)."""
        rng = np.random.default_rng([self.seed, iteration, self.rank])
        idx = cases_for_iteration(iteration, len(self.cases), self.batch_size, self.seed, self.rank, self.world)
        items = [self._one(i, j > 0 and rng.random() < self.augment.fg_probability, rng) for j, i in enumerate(idx)]
        for _ in range(20):
            masks = torch.stack([m for _, m in items])
            has_fg, has_bg = bool((masks > 0).any()), bool((masks == 0).any())
            if has_fg and has_bg:
                break
            if not has_fg:
                idx[-1] = self.fg_cases[int(rng.integers(len(self.fg_cases)))]
                items[-1] = self._one(idx[-1], True, rng)
            else:
                idx[-1] = int(rng.integers(len(self.cases)))
                items[-1] = self._one(idx[-1], False, rng)
        else:
            raise AmtError(f"iteration {iteration}", f"could not draw a batch with foreground and background "
                           f"from cases {[self.cases[i].case_id for i in idx]}", "check the masks")
        return (torch.stack([i for i, _ in items]), torch.stack([m for _, m in items]),
                [self.cases[i].case_id for i in idx])
