"""Small I/O helpers shared by all modules: atomic writes and NIfTI reading with clear errors.

Every artifact is written to a temporary file in the destination folder and renamed into place, so an
interrupted run never leaves a half-written file behind and never overwrites an input.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    ``suffix`` defaults to the full suffix of ``path`` (e.g. ``.nii.gz``) so libraries that infer the
    format from the extension keep working.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (numpy scalars and paths are converted)."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"cannot serialise {type(o).__name__} to JSON")

    return write_text(path, json.dumps(obj, indent=2, default=default) + "\n")


def write_csv(path: str | Path, df: "Any", **kwargs: Any) -> Path:
    """Write a pandas frame as CSV atomically (``index=False`` unless given)."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)
    return Path(path)


def prune_folder(folder: str | Path, keep: "set[str] | Any", suffix: str = ".nii.gz") -> list[Path]:
    """Delete the ``<name><suffix>`` files of ``folder`` whose name is not in ``keep``; return them.

    For a step's own output folders when it re-runs (cases no longer in the cohort leave no stale
    files behind). Other files and subfolders are left alone; a missing folder is no error.
    """
    folder = Path(folder)
    keep = {str(k) for k in keep}
    gone = []
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.name.endswith(suffix) and path.name[: -len(suffix)] not in keep:
                path.unlink()
                gone.append(path)
    return gone


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def load_nifti(path: str | Path, dtype: "np.typing.DTypeLike | None" = None) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """Read a NIfTI file as ``(array_zyx, spacing_zyx_mm, affine)``.

    The file stores voxels in nibabel's (i, j, k) = (x, y, z) order; the array returned is transposed to
    amtlib's (z, y, x). ``affine`` is the file's 4x4 voxel (i, j, k) -> RAS mm matrix, unchanged, so that
    :func:`save_nifti` writes the same geometry back. Raises ``ValueError`` naming the file when it is
    missing, not NIfTI, or not 3D.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises several types for non-NIfTI input
        raise ValueError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {data.shape}")
    arr = np.ascontiguousarray(data.transpose(2, 1, 0))
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    zooms = img.header.get_zooms()[:3]
    spacing = (float(zooms[2]), float(zooms[1]), float(zooms[0]))
    return arr, spacing, np.asarray(img.affine, dtype=np.float64)


def save_nifti(array_zyx: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
    """Write a (z, y, x) array with a voxel (i, j, k) -> RAS mm ``affine`` as NIfTI, atomically."""
    import nibabel as nib

    arr = np.asarray(array_zyx)
    if arr.ndim != 3:
        raise ValueError(f"{path}: expected a 3D array, got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    img = nib.Nifti1Image(np.ascontiguousarray(arr.transpose(2, 1, 0)), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def affine_from_spacing(spacing_zyx: tuple[float, float, float], origin_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Diagonal voxel -> mm affine for an axis-aligned grid with (z, y, x) ``spacing``."""
    aff = np.eye(4)
    aff[0, 0], aff[1, 1], aff[2, 2] = spacing_zyx[2], spacing_zyx[1], spacing_zyx[0]
    aff[:3, 3] = origin_xyz
    return aff


def same_geometry(
    shape_a: tuple[int, ...], affine_a: np.ndarray, shape_b: tuple[int, ...], affine_b: np.ndarray, atol_mm: float = 1e-3
) -> bool:
    """True when two volumes share shape and (within ``atol_mm``) affine."""
    return tuple(shape_a) == tuple(shape_b) and bool(np.allclose(affine_a, affine_b, atol=atol_mm))
