"""Small I/O helpers shared by all modules: atomic writes, a folder lock, NIfTI reading with clear errors.

Every artifact is written to a temporary file in the destination folder and renamed into place, so an
interrupted run never leaves a half-written file behind, never overwrites an input, and never writes
through a hard link into another folder (a ``cp -al`` copy of a run folder keeps its own files).
Files get the usual permissions of a new file (``0666`` less the umask, e.g. ``0644``), so colleagues
sharing a results folder can read them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from amtlib.errors import AmtError, DomainError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read without changing it where ``/proc`` allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


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
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; a new file is normally 0644
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def refuse_link(path: str | Path, what: str = "output folder") -> Path:
    """``path`` unless it is a symbolic link (an output is never written where a planted link points)."""
    path = Path(path)
    if path.is_symlink():
        raise AmtError(path, f"{what} is a symbolic link (to {os.readlink(path)}); outputs never follow links",
                       "remove the link, or give a real folder")
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def check_writable(folder: str | Path) -> None:
    """Create and remove a temporary file in ``folder``; the ``OSError`` of a folder that cannot be written."""
    fd, tmp = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
    os.close(fd)
    os.unlink(tmp)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def append_line(path: str | Path, line: str) -> Path:
    """Add one line to a text file (a log) by rewriting it atomically, never in place."""
    path = Path(path)
    old = path.read_text() if path.is_file() else ""
    return write_text(path, old + line.rstrip("\n") + "\n")


def copy_file(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src`` to ``dst`` atomically (a new file; never writes through a link at ``dst``)."""
    return write_bytes(dst, Path(src).read_bytes())


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


def read_csv(path: str | Path, dtype: "dict[str, Any] | None" = None, what: str = "CSV",
             remedy: str = "give an existing CSV file") -> "Any":
    """A CSV as a pandas frame; :class:`~amtlib.errors.AmtError` naming ``path`` (``what`` it should be,
    and ``remedy``) when it is missing or does not parse as CSV."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise AmtError(path, f"{what} not found", remedy)
    try:
        return pd.read_csv(path, dtype=dtype)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise AmtError(path, f"not a readable {what} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})",
                       remedy) from None


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


#: Name of the lock file :func:`folder_lock` keeps in a folder.
LOCK_NAME = ".amt.lock"


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the duration of the block.

    ``fcntl.flock`` on ``<folder>/.amt.lock``, which records the holder's pid; the kernel releases the
    lock when the holder exits, even on ``kill -9``, so a lock is never stale. A second holder gets
    :class:`~amtlib.errors.AmtError` naming the folder and the pid at once (no waiting). A lock file
    shared with a hard-linked copy of the folder (``cp -al``) is first replaced by one of its own.
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lockfile = folder / LOCK_NAME
    if lockfile.is_file() and lockfile.stat().st_nlink > 1:
        write_text(lockfile, "")
    fd = os.open(lockfile, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        raise AmtError(folder, f"in use by another amt run or amt train (pid {holder}; lock {lockfile})",
                       "wait for it to finish, or write to another folder (--out)") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lockfile
    finally:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextmanager
def output_lock(folder: str | Path, command: str) -> Iterator[Path]:
    """Hold an exclusive lock on an output ``folder`` (created if missing) that leaves no file in it.

    ``fcntl.flock`` on the folder itself, so a folder handed on (an export uploaded to a PACS, an
    evaluation read by nnU-Net tools) holds only what the command wrote; released by the kernel when
    the holder exits, even on ``kill -9``. A second holder gets :class:`~amtlib.errors.AmtError` at
    once naming the folder and ``command``. Folders it created are removed again if they are still
    empty at the end. (:func:`folder_lock` is the run folder's, with the pid.)
    """
    import fcntl

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise AmtError(folder, "--out is a file, not a folder", "give a new or empty folder as --out")
    created = [p for p in [folder, *folder.parents] if not p.exists()]  # innermost first
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise AmtError(folder, f"in use by another {command} writing into it",
                           "wait for it to finish, or write to another folder (--out)") from None
        try:
            yield folder
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
        for path in created:  # a command that failed before writing leaves no folder it made
            try:
                path.rmdir()
            except OSError:
                break


def nifti_data_problem(path: str | Path) -> str | None:
    """Why the voxel data of a NIfTI file cannot be read in full, or None when it can.

    Reads the header, then every byte of the data (a ``.gz`` stream is decompressed to its end, which
    also checks its CRC) without keeping it, and compares the byte count with what the header needs:
    a truncated file, whose header alone still reads, is caught here.
    """
    import gzip
    import zlib

    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(str(path))
        proxy = img.dataobj
        need = int(proxy.offset) + int(np.prod(proxy.shape)) * np.dtype(proxy.dtype).itemsize
    except Exception as exc:  # nibabel raises several types for non-NIfTI input
        return f"not a readable NIfTI file ({type(exc).__name__}: {exc})"
    if path.name.endswith(".gz"):
        have = 0
        try:
            with gzip.open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    have += len(block)
        except (EOFError, OSError, zlib.error) as exc:
            return f"truncated or corrupt gzip stream after {have} bytes ({type(exc).__name__}: {exc})"
    else:
        have = path.stat().st_size
    if have < need:
        return f"truncated: {have} bytes, but its header needs {need} (shape {tuple(proxy.shape)}, {proxy.dtype})"
    return None


#: Largest expansion of a deflate stream (zlib's limit is about 1032:1): a .gz smaller than the voxel
#: bytes its header claims divided by this cannot hold them.
DEFLATE_MAX_RATIO = 1032


def nifti_size_problem(path: str | Path) -> str | None:
    """Why a NIfTI file cannot hold the voxels its header claims, from sizes alone (no decompression).

    The cheap guard before allocating an array: an uncompressed file must hold offset + voxel bytes;
    a ``.gz`` file's gzip trailer records the uncompressed size modulo 2**32, which must match when
    the claim is under 4 GiB, and no ``.gz`` can expand more than :data:`DEFLATE_MAX_RATIO` times.
    None when the sizes agree (a corrupt stream is still found when the data are read).
    """
    import nibabel as nib

    path = Path(path)
    try:
        proxy = nib.load(str(path)).dataobj
        need = int(proxy.offset) + int(np.prod(proxy.shape)) * np.dtype(proxy.dtype).itemsize
    except Exception as exc:  # nibabel raises several types for non-NIfTI input
        return f"not a readable NIfTI file ({type(exc).__name__}: {exc})"
    size = path.stat().st_size
    claim = f"its header claims {need} bytes (shape {tuple(proxy.shape)}, {proxy.dtype})"
    if not path.name.endswith(".gz"):
        return None if size >= need else f"truncated: {size} bytes, but {claim}"
    if size * DEFLATE_MAX_RATIO < need:
        return f"{size} compressed bytes cannot hold what {claim}"
    with open(path, "rb") as f:
        f.seek(max(size - 4, 0))
        isize = int.from_bytes(f.read(4), "little")
    if need < 2 ** 32 and isize < need:  # truncated, or several gzip members: read it all to tell
        return nifti_data_problem(path)
    return None


def library_hash(pkg: Path | None = None) -> str:
    """Hash of every ``amtlib`` source and data file and its path in the package (``pkg``, default
    amtlib's folder): the runner re-runs a step when it changes (a code change, or a module moved to
    another subpackage), and training resumes a checkpoint only under the code that wrote it."""
    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parent if pkg is None else Path(pkg)  # this file lies in amtlib/
    for p in sorted(pkg.rglob("*")):
        if p.is_file() and p.suffix in {".py", ".yaml", ".json"} and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(pkg)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


class NiftiError(DomainError):
    """A NIfTI file that cannot be read as one 3D volume: ``NiftiError(file, problem, remedy, reason=...)``.

    ``reason``: ``not_found``, ``unreadable`` (not NIfTI, truncated, or fewer bytes than its header
    claims) or ``not_3d``; callers decide by the code, never by the message.
    """

    DEFAULT_REASON = "unreadable"


def load_nifti(path: str | Path, dtype: "np.typing.DTypeLike | None" = None) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """Read a NIfTI file as ``(array_zyx, spacing_zyx_mm, affine)``.

    The file stores voxels in nibabel's (i, j, k) = (x, y, z) order; the array returned is transposed to
    amtlib's (z, y, x). ``affine`` is the file's 4x4 voxel (i, j, k) -> RAS mm matrix, unchanged, so that
    :func:`save_nifti` writes the same geometry back. Raises ``ValueError`` naming the file when it is
    missing, not NIfTI, too small for the voxels its header claims (:func:`nifti_size_problem`, checked
    before any allocation), or not 3D (:class:`NiftiError`, a ``ValueError``, with its ``reason``).
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise NiftiError(path, "file not found", "check the path (a NIfTI file .nii or .nii.gz)", reason="not_found")
    problem = nifti_size_problem(path)  # before allocating what the header claims (a 79-byte file can claim 16 GB)
    if problem:
        raise NiftiError(path, problem, "copy or convert the file again (it is damaged)")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises several types for non-NIfTI input
        raise NiftiError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})",
                         "give a NIfTI file (.nii or .nii.gz), or copy or convert it again") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise NiftiError(path, f"expected a 3D volume, got shape {data.shape}", "give one 3D volume per file",
                         reason="not_3d")
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
    # the transposed view of a C-ordered (z, y, x) array is the Fortran-ordered (x, y, z) data NIfTI stores:
    # nibabel writes it without a copy (the same bytes as a contiguous copy, a third of the time)
    img = nib.Nifti1Image(arr.transpose(2, 1, 0), np.asarray(affine, dtype=np.float64))
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
