"""2D CNN classifiers on tumour crops: the TET paper's CNN arm and the fusion paper's networks.

Related papers (notebooks 07-08):

- Inputs (TET paper): a square crop around the ROI on the axial slice of largest ROI area and on
  planes ``offsets_mm`` away from it (linear interpolation between slices), window W400/L40 HU, each
  crop z-scored, resized to ``size_px``. Training uses offsets (0, +1) mm, testing the 0 mm plane only.
- Network: MONAI's ``ResNet`` with ``spatial_dims=2`` (basic blocks). Pretrained ImageNet weights cannot
  be downloaded here (and torchvision would pull a newer torch), so it is trained from scratch by
  default; ``weights`` loads a user's state dict (matching tensors only) before training.
- Fusion (fusion paper, Fig. 2): image features of the same backbone and an MLP of the tabular inputs
  (CTC level, age, sex), concatenated before one linear classifier; without tabular inputs the same
  network is the CT-only CNN.
- Training: Adam, class-weighted cross-entropy (inverse class frequency), random rotation ±15°,
  translation ±8 %, scaling 0.9-1.1 (the TET paper's augmentation families), a fixed number of epochs;
  every random choice from ``seed`` (same AUCs on a re-run, single-threaded BLAS determinism aside).
- Grad-CAM (MONAI ``GradCAM``) on the last residual stage.

Arrays are (z, y, x); spacing in mm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from amtlib.classify.arms import TET_WINDOW_HU, largest_component
from amtlib.io import load_nifti


# ---------------------------------------------------------------------------------------------------
# crops


def crop_planes(
    image: np.ndarray, mask: np.ndarray, spacing: Sequence[float], offsets_mm: Sequence[float] = (0.0,),
    size_px: int = 64, margin_mm: float = 10.0, window_hu: tuple[float, float] = TET_WINDOW_HU,
) -> np.ndarray:
    """Square crops (len(offsets), size_px, size_px) around the ROI on the slice of largest ROI area.

    The crop is the ROI's in-plane bounding box on that slice, grown by ``margin_mm`` and made square
    (mm); planes ``offsets_mm`` away are linearly interpolated between slices (clamped to the volume).
    Each crop is windowed to ``window_hu``, resized (bilinear) and z-scored. Raises ``ValueError`` on an
    empty mask.
    """
    roi = largest_component(mask)
    if not roi.any():
        raise ValueError("empty ROI")
    area = roi.sum(axis=(1, 2))
    k = int(np.argmax(area))
    ys, xs = np.nonzero(roi[k])
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    half_mm = max((ys.max() - ys.min() + 1) * spacing[1], (xs.max() - xs.min() + 1) * spacing[2]) / 2 + margin_mm
    grid = (np.arange(size_px) + 0.5) / size_px * 2 - 1  # -1..1 across the crop
    yy = cy + grid[:, None] * half_mm / spacing[1]
    xx = cx + grid[None, :] * half_mm / spacing[2]
    out = np.empty((len(offsets_mm), size_px, size_px), np.float32)
    img = np.clip(np.asarray(image, np.float32), *window_hu)
    for i, off in enumerate(offsets_mm):
        z = float(np.clip(k + off / spacing[0], 0, image.shape[0] - 1))
        coords = np.stack([np.full((size_px, size_px), z), np.broadcast_to(yy, (size_px, size_px)), np.broadcast_to(xx, (size_px, size_px))])
        plane = ndi.map_coordinates(img, coords, order=1, mode="nearest")
        sd = plane.std()
        out[i] = (plane - plane.mean()) / (sd if sd > 0 else 1.0)
    return out


def load_crops(rois: pd.DataFrame, offsets_train_mm: Sequence[float] = (0.0, 1.0), size_px: int = 64,
               margin_mm: float = 10.0) -> dict[str, np.ndarray]:
    """Crops of every ROI row (``case_id, split, image_path, mask_path``): training rows get
    ``offsets_train_mm`` planes, other rows the 0 mm plane. Returns ``{case_id: (planes, H, W)}``;
    rows without a ROI (empty ``mask_path`` or empty mask) are absent."""
    out: dict[str, np.ndarray] = {}
    for r in rois.itertuples(index=False):
        if not r.mask_path:
            continue
        image, spacing, _ = load_nifti(r.image_path, np.float32)
        mask, _, _ = load_nifti(r.mask_path, np.uint8)
        offsets = tuple(offsets_train_mm) if r.split == "train" else (0.0,)
        try:
            out[str(r.case_id)] = crop_planes(image, mask, spacing, offsets, size_px, margin_mm)
        except ValueError:
            continue
    return out


# ---------------------------------------------------------------------------------------------------
# networks


def _torch():
    import torch

    return torch


def make_network(n_classes: int, n_tabular: int = 0, widths: Sequence[int] = (8, 16, 32, 64), blocks: Sequence[int] = (1, 1, 1, 1),
                 tabular_hidden: int = 16) -> Any:
    """MONAI 2D ResNet image branch (+ tabular MLP when ``n_tabular`` > 0) and a linear classifier."""
    torch = _torch()
    from monai.networks.nets import ResNet

    class FusionNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.image = ResNet(block="basic", layers=list(blocks), block_inplanes=list(widths), spatial_dims=2, n_input_channels=1,
                                conv1_t_size=5, conv1_t_stride=1, no_max_pool=False, feed_forward=False)
            n_img = widths[-1]
            self.tabular = (torch.nn.Sequential(torch.nn.Linear(n_tabular, tabular_hidden), torch.nn.ReLU(),
                                                torch.nn.Linear(tabular_hidden, tabular_hidden), torch.nn.ReLU())
                            if n_tabular else None)
            self.classifier = torch.nn.Linear(n_img + (tabular_hidden if n_tabular else 0), n_classes)

        def forward(self, x, tab=None):
            f = self.image(x)
            if self.tabular is not None:
                f = torch.cat([f, self.tabular(tab)], dim=1)
            return self.classifier(f)

    return FusionNet()


@dataclass
class CNNConfig:
    """Training settings of the 2D CNNs (one source: the notebooks' parameters)."""

    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    widths: tuple[int, ...] = (8, 16, 32, 64)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    rotate_deg: float = 15.0
    translate: float = 0.08
    scale_range: tuple[float, float] = (0.9, 1.1)
    weights: str = ""
    threads: int = 0


def _augment(x, gen, cfg: CNNConfig):
    torch = _torch()
    import torch.nn.functional as F

    n = x.shape[0]
    ang = (torch.rand(n, generator=gen) * 2 - 1) * np.deg2rad(cfg.rotate_deg)
    sc = cfg.scale_range[0] + torch.rand(n, generator=gen) * (cfg.scale_range[1] - cfg.scale_range[0])
    t = (torch.rand(n, 2, generator=gen) * 2 - 1) * cfg.translate * 2
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(ang) / sc
    theta[:, 0, 1] = -torch.sin(ang) / sc
    theta[:, 1, 0] = torch.sin(ang) / sc
    theta[:, 1, 1] = torch.cos(ang) / sc
    theta[:, :, 2] = t
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _load_weights(model, path: str) -> int:
    """Copy the tensors of a user's state dict whose names and shapes match; returns how many."""
    torch = _torch()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: CNN weights file not found; give a torch state_dict (.pt) or leave cnn_weights empty to train from scratch")
    state = torch.load(p, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    match = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not match:
        raise ValueError(f"{p}: no tensor matches the network's names and shapes (e.g. {next(iter(own))}); "
                         "export the weights of amtlib.classify.cnn2d.make_network with the same widths")
    own.update(match)
    model.load_state_dict(own)
    return len(match)


def train_network(images: np.ndarray, labels: np.ndarray, n_classes: int, cfg: CNNConfig, seed: int = 0,
                  tabular: np.ndarray | None = None) -> tuple[Any, pd.DataFrame]:
    """Train a CT-only (``tabular`` None) or fusion network on (N, H, W) crops and 0..K-1 labels.

    ``tabular`` (N, T) must already be standardised with training statistics. Returns the model (eval
    mode) and a log of the mean training loss per epoch.
    """
    torch = _torch()
    torch.manual_seed(seed)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    model = make_network(n_classes, 0 if tabular is None else tabular.shape[1], cfg.widths, cfg.blocks)
    if cfg.weights:
        _load_weights(model, cfg.weights)
    x = torch.from_numpy(np.asarray(images, np.float32)[:, None])
    y = torch.from_numpy(np.asarray(labels).astype(np.int64))
    tab = None if tabular is None else torch.from_numpy(np.asarray(tabular, np.float32))
    counts = np.bincount(labels.astype(int), minlength=n_classes).astype(float)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(w, dtype=torch.float32))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    model.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(y), generator=gen)
        total = 0.0
        for start in range(0, len(y), cfg.batch_size):
            idx = order[start: start + cfg.batch_size]
            if len(idx) < 2:
                continue  # batch norm needs two samples
            xb = _augment(x[idx], gen, cfg)
            out = model(xb, None if tab is None else tab[idx])
            loss = loss_fn(out, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        rows.append({"epoch": epoch + 1, "train_loss": total / len(y)})
    model.eval()
    return model, pd.DataFrame(rows)


def predict_proba(model, images: np.ndarray, tabular: np.ndarray | None = None, batch: int = 64) -> np.ndarray:
    """Softmax class probabilities (N, K) of (N, H, W) crops."""
    torch = _torch()
    outs = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            xb = torch.from_numpy(np.asarray(images[s: s + batch], np.float32)[:, None])
            tb = None if tabular is None else torch.from_numpy(np.asarray(tabular[s: s + batch], np.float32))
            outs.append(torch.softmax(model(xb, tb), dim=1).numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0))


def grad_cam(model, images: np.ndarray, class_index: int = 1) -> np.ndarray:
    """Grad-CAM maps (N, H, W), 0-1, of ``class_index`` on the last residual stage (MONAI ``GradCAM``)."""
    torch = _torch()
    from monai.visualize import GradCAM

    cam = GradCAM(nn_module=model, target_layers="image.layer4")
    x = torch.from_numpy(np.asarray(images, np.float32)[:, None])
    return cam(x, class_idx=class_index)[:, 0].detach().numpy()


def stack(crops: dict[str, np.ndarray], case_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Planes of ``case_ids`` as one (N, H, W) array and the row -> case index (N,)."""
    planes, owner = [], []
    for i, cid in enumerate(case_ids):
        arr = crops[cid]
        planes.append(arr)
        owner += [i] * len(arr)
    if not planes:
        return np.zeros((0, 1, 1), np.float32), np.zeros(0, int)
    return np.concatenate(planes), np.asarray(owner)
