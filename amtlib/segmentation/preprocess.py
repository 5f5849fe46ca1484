"""Volumes for training and inference: resampling, min-max normalisation, an on-disk cache.

Paper: "Data pre-processing" (intensities rescaled to [0, 1] with the dataset's minimum and maximum).
Here the minimum and maximum are taken over the voxels of the *training* split only (so tuning and test
data never inform the model) and stored with the model; values outside that range are clipped to
[0, 1]. Volumes are optionally resampled to a training spacing (z, y, x) in mm: the paper works on the
native grid (``spacing_mm=None``), the CPU demo on a coarser one. Resampling is trilinear in voxel-index
space onto the grid of ``round(extent / spacing)`` voxels per axis (so the realised spacing is
``extent / n``, within half a voxel of the target), and :func:`resample_to_shape` maps a probability map
back onto each case's original grid exactly.

Each case is read once; its resampled HU image and mask are cached as ``.npy`` files (memory-mapped on
later reads, so full-scale cohorts need not fit in RAM) keyed by the image file's size, mtime and the
target spacing.
"""

from __future__ import annotations

import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from amtlib.errors import AmtError
from amtlib.io import atomic_path, load_nifti, write_json


Spacing = tuple[float, float, float]
Shape = tuple[int, int, int]

#: At most this many foreground voxel indices are kept per case for foreground-centred crops.
MAX_FG_INDICES = 20000
#: HU of air; crops and sliding windows are padded with its normalised value.
AIR_HU = -1024.0


@dataclass(frozen=True)
class Normalisation:
    """Min-max intensity rescaling constants (HU) from the training split; maps [hu_min, hu_max] -> [0, 1]."""

    hu_min: float
    hu_max: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.hu_min) or not np.isfinite(self.hu_max) or self.hu_max <= self.hu_min:
            raise ValueError(f"invalid intensity range [{self.hu_min}, {self.hu_max}]; the training images look constant or empty")

    def apply(self, hu: np.ndarray) -> np.ndarray:
        """Rescale HU to [0, 1] (float32), clipping values outside the training range."""
        out = (np.asarray(hu, dtype=np.float32) - np.float32(self.hu_min)) / np.float32(self.hu_max - self.hu_min)
        return np.clip(out, 0.0, 1.0, out=out)

    @property
    def pad_value(self) -> float:
        """Normalised value of air, used to pad crops and sliding windows."""
        return float(self.apply(np.array([AIR_HU]))[0])

    def to_dict(self) -> dict[str, float]:
        return {"hu_min": float(self.hu_min), "hu_max": float(self.hu_max)}

    @classmethod
    def from_dict(cls, d: dict[str, float]) -> "Normalisation":
        return cls(float(d["hu_min"]), float(d["hu_max"]))


@dataclass
class CaseVolume:
    """One case on the training grid: HU image, 0/1 mask (or None), and its original geometry."""

    case_id: str
    image_hu: np.ndarray
    mask: np.ndarray | None
    original_shape: Shape
    original_spacing: Spacing
    affine: np.ndarray
    hu_min: float
    hu_max: float
    fg_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def shape(self) -> Shape:
        return tuple(int(s) for s in self.image_hu.shape)  # type: ignore[return-value]

    @property
    def has_foreground(self) -> bool:
        return self.fg_indices.size > 0


def grid_shape(shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float] | None) -> Shape:
    """Voxels per axis after resampling ``shape`` at ``spacing`` (mm) to ``target_spacing``; None keeps it."""
    if target_spacing is None:
        return tuple(int(s) for s in shape)  # type: ignore[return-value]
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target_spacing))  # type: ignore[return-value]


def resample_to_shape(volume: np.ndarray, shape: Sequence[int], mode: str = "trilinear") -> np.ndarray:
    """Resample a (z, y, x) array onto ``shape`` voxels covering the same extent (float32 output).

    ``mode``: ``"trilinear"`` or ``"nearest"`` (torch ``interpolate``, ``align_corners=False``: voxel
    centres of both grids sit at the same physical extent). Returns the input as float32 when the shape
    is unchanged.
    """
    arr = np.asarray(volume, dtype=np.float32)
    if tuple(arr.shape) == tuple(shape):
        return arr
    t = torch.from_numpy(np.ascontiguousarray(arr))[None, None]
    kw = {"align_corners": False} if mode == "trilinear" else {}
    return F.interpolate(t, size=tuple(int(s) for s in shape), mode=mode, **kw)[0, 0].numpy()


def foreground_indices(mask: np.ndarray, limit: int = MAX_FG_INDICES) -> np.ndarray:
    """Flat indices of mask voxels > 0, evenly thinned to at most ``limit`` (deterministic)."""
    idx = np.flatnonzero(np.asarray(mask).ravel() > 0)
    if idx.size > limit:
        idx = idx[np.linspace(0, idx.size - 1, limit).round().astype(np.int64)]
    return idx.astype(np.int64)


def _cache_key(image_path: Path, mask_path: Path | None, target_spacing: Sequence[float] | None) -> dict:
    st = image_path.stat()
    key = {"image": str(image_path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
           "spacing": None if target_spacing is None else [float(s) for s in target_spacing]}
    if mask_path is not None:
        mst = mask_path.stat()
        key.update({"mask": str(mask_path), "mask_size": mst.st_size, "mask_mtime_ns": mst.st_mtime_ns})
    return key


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, arr)


def load_case(
    case_id: str,
    image_path: str | Path,
    mask_path: str | Path | None,
    target_spacing: Sequence[float] | None = None,
    cache_dir: str | Path | None = None,
) -> CaseVolume:
    """Read one case (NIfTI HU image, optional 0/1 mask), resample to ``target_spacing``, cache it.

    Raises ``ValueError`` naming the case when the mask's geometry differs from the image's. The mask is
    resampled trilinearly and thresholded at 0.5. With ``cache_dir``, a previous result with the same
    key is memory-mapped instead of re-reading the NIfTI files.
    """
    image_path = Path(image_path)
    mask_path = Path(mask_path) if mask_path not in (None, "") and not pd.isna(mask_path) else None
    key = _cache_key(image_path, mask_path, target_spacing)
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        meta_path = cache / f"{case_id}.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if meta.get("key") == key:
                img = np.load(cache / f"{case_id}.image.npy", mmap_mode="r")
                msk = np.load(cache / f"{case_id}.mask.npy", mmap_mode="r") if meta["has_mask"] else None
                return CaseVolume(case_id, img, msk, tuple(meta["original_shape"]), tuple(meta["original_spacing"]),
                                  np.asarray(meta["affine"]), meta["hu_min"], meta["hu_max"],
                                  foreground_indices(msk) if msk is not None else np.zeros(0, np.int64))
    image, spacing, affine = load_nifti(image_path)
    shape = grid_shape(image.shape, spacing, target_spacing)
    image_hu = resample_to_shape(image, shape)
    mask = None
    if mask_path is not None:
        m, _, m_aff = load_nifti(mask_path)
        if m.shape != image.shape or not np.allclose(m_aff, affine, atol=1e-3):
            raise AmtError(f"case {case_id}", f"mask {mask_path} geometry {m.shape} differs from image {image.shape}",
                           "re-run the cohort step so masks match their images")
        mask = (resample_to_shape((m > 0).astype(np.float32), shape) >= 0.5).astype(np.uint8)
    case = CaseVolume(case_id, image_hu, mask, tuple(int(s) for s in image.shape), spacing, affine,
                      float(np.nanmin(image)), float(np.nanmax(image)),
                      foreground_indices(mask) if mask is not None else np.zeros(0, np.int64))
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        _save_npy(cache / f"{case_id}.image.npy", image_hu)
        if mask is not None:
            _save_npy(cache / f"{case_id}.mask.npy", mask)
        write_json(cache / f"{case_id}.json", {"key": key, "has_mask": mask is not None, "original_shape": case.original_shape,
                                               "original_spacing": spacing, "affine": affine, "hu_min": case.hu_min,
                                               "hu_max": case.hu_max})
    return case


def case_from_array(case_id: str, image: np.ndarray, spacing: Sequence[float], affine: np.ndarray,
                    target_spacing: Sequence[float] | None = None) -> CaseVolume:
    """One image without a mask on the training grid, as :func:`load_case` makes it from a NIfTI file.

    ``image``: (z, y, x) HU on its own grid; ``spacing`` (z, y, x) mm; ``affine`` its voxel -> RAS
    matrix (kept to write predictions back). The same resampling as :func:`load_case`, so a series
    read from DICOM and the NIfTI file the cohort step wrote of it give the same training-grid volume.
    """
    image = np.asarray(image)
    spacing = tuple(float(s) for s in spacing)
    image_hu = resample_to_shape(image, grid_shape(image.shape, spacing, target_spacing))
    return CaseVolume(case_id, image_hu, None, tuple(int(s) for s in image.shape), spacing,  # type: ignore[arg-type]
                      np.asarray(affine, dtype=np.float64), float(np.nanmin(image)), float(np.nanmax(image)))


def load_cases(
    manifest: pd.DataFrame,
    case_ids: Sequence[str],
    root: str | Path,
    target_spacing: Sequence[float] | None = None,
    cache_dir: str | Path | None = None,
    workers: int = 1,
    with_masks: bool = True,
) -> list[CaseVolume]:
    """Load ``case_ids`` (in that order) from a manifest whose paths are relative to ``root``.

    ``workers`` threads read in parallel (NIfTI decompression releases the GIL). Raises ``ValueError``
    naming the missing case ids when some are not in the manifest.
    """
    rows = manifest.set_index(manifest["case_id"].astype(str))
    missing = [c for c in case_ids if c not in rows.index]
    if missing:
        raise AmtError(None, f"cases {missing[:5]} (of {len(missing)}) are in the split but not in the manifest", "re-run 02_split")
    root = Path(root)

    def one(cid: str) -> CaseVolume:
        r = rows.loc[cid]
        mp = r.get("mask_path") if with_masks else None
        mp = root / str(mp) if mp is not None and not pd.isna(mp) and str(mp) else None
        return load_case(cid, root / str(r["image_path"]), mp, target_spacing, cache_dir)

    if workers > 1 and len(case_ids) > 1:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            return list(ex.map(one, case_ids))
    return [one(c) for c in case_ids]


def training_normalisation(cases: Sequence[CaseVolume]) -> Normalisation:
    """Min-max constants over the original voxels of the training cases (paper: "Data pre-processing")."""
    if not cases:
        raise AmtError(None, "no training cases", "the split has an empty 'train' set: run 02_split again")
    return Normalisation(min(c.hu_min for c in cases), max(c.hu_max for c in cases))


def warn_empty_masks(cases: Sequence[CaseVolume]) -> list[str]:
    """Warn about (and return) training cases without foreground; raise if none has any."""
    empty = [c.case_id for c in cases if not c.has_foreground]
    if empty:
        warnings.warn(f"{len(empty)} training case(s) have an empty tumour mask ({', '.join(empty[:5])}); "
                      "their crops hold background only", stacklevel=2)
    if cases and len(empty) == len(cases):
        raise AmtError(None, "no training case has any foreground voxel", "check the masks in the manifest")
    return empty
