"""Reference masks in: NIfTI and NRRD files placed on a CT series' voxel grid by world coordinates.

Paper section: Data collection (reference tumour masks drawn by radiologists). Segmentation tools
store the same voxel grid in different ways: the plain LPS->RAS NIfTI of this package, dcm2niix's row
flip (affine diag(-dx, +dy, dz)), an axis permutation, or a 3D Slicer NRRD/``.seg.nrrd`` in LPS. A mask
is accepted when its voxel centres coincide with the image's (within ``tolerance_mm``) after a
permutation and flips of its axes; it is then reoriented onto the image's (z, y, x) array. A mask on
a grid padded in-plane around the image's (the same spacing, directions and slices, the image's voxel
centres a block of the mask's: dcm2niix pads a tilt-corrected series with rows) is cropped to the image,
when no tumour voxel lies outside it, with a note. It is never resampled: a mask on another grid is refused with
the largest distance in mm between its voxel centres and the image's. DICOM SEG and RTSTRUCT are read by :mod:`amtlib.dicom.annotations`.

Labels: a mask must hold only 0 and 1 unless ``label`` names the tumour label (an integer value, or
the segment name of a ``.seg.nrrd``); other values are never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from amtlib.errors import DomainError

#: Mask file suffixes read here, in the order tried when several files match a series.
MASK_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd")
#: Default tolerance (mm) between a mask's voxel centres and the image's.
TOLERANCE_MM = 0.1
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Remedy for a damaged mask file.
_REEXPORT = "copy the file again or re-export it from the segmentation tool"


#: Reason codes of :class:`MaskError` (the cohort maps them to its exclusion reasons; messages may change).
OFF_GRID = "off_grid"
INVALID = "invalid"


class MaskError(DomainError):
    """A mask that cannot be used for its image: ``MaskError(file, problem, remedy, reason=...)``.

    ``reason``: :data:`OFF_GRID` for a mask on another voxel grid, else :data:`INVALID`.
    """

    DEFAULT_REASON = INVALID


@dataclass
class LoadedMask:
    """A mask as stored: ``data`` indexed (i, j, k) as the file's axes, ``affine`` (i, j, k) -> RAS mm,
    ``segments`` segment name -> label value (``.seg.nrrd`` only)."""

    data: np.ndarray
    affine: np.ndarray
    segments: dict[str, int]


def mask_suffix(path: str | Path) -> str:
    """The mask suffix of ``path`` ("" when it is not a mask file read here)."""
    name = Path(path).name.lower()
    for suffix in MASK_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


def _read_nifti(path: Path) -> LoadedMask:
    import nibabel as nib

    from amtlib.io import nifti_size_problem

    problem = nifti_size_problem(path)  # before allocating what the header claims (a tiny file can claim gigabytes)
    if problem:
        raise MaskError(path, problem, _REEXPORT)
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    return LoadedMask(np.asarray(data), np.asarray(img.affine, dtype=float), {})


def _read_nrrd(path: Path) -> LoadedMask:
    """NRRD through SimpleITK (LPS origin/direction), with Slicer's segment names and label values."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOn()
    img = reader.Execute()
    if img.GetDimension() != 3:
        raise MaskError(path, f"a {img.GetDimension()}D NRRD", "a tumour mask is one 3D volume: export it as one")
    segments: dict[str, int] = {}
    keys = set(img.GetMetaDataKeys())
    for key in sorted(keys):
        if key.startswith("Segment") and key.endswith("_Name"):
            stem = key[: -len("_Name")]
            if f"{stem}_Layer" in keys and img.GetMetaData(f"{stem}_Layer").strip() not in ("", "0"):
                continue  # other layers are separate components: not supported here
            value = img.GetMetaData(f"{stem}_LabelValue") if f"{stem}_LabelValue" in keys else ""
            if value.strip().lstrip("-").isdigit():
                segments[img.GetMetaData(key).strip()] = int(value)
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise MaskError(path, f"{img.GetNumberOfComponentsPerPixel()} layers (overlapping segments)",
                        "export the tumour segment alone as a labelmap (.nrrd or .nii.gz)")
    arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0)  # (x, y, z) like the file's index order
    direction = np.array(img.GetDirection(), dtype=float).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(img.GetSpacing(), dtype=float)[None, :]
    lps[:3, 3] = img.GetOrigin()
    return LoadedMask(arr, _LPS_TO_RAS @ lps, segments)


def read_mask_file(path: str | Path) -> LoadedMask:
    """Read a NIfTI or NRRD mask as stored; :class:`MaskError` names the file when it cannot be read."""
    path = Path(path)
    suffix = mask_suffix(path)
    if not suffix:
        raise MaskError(path, f"not a mask format read here ({', '.join(MASK_SUFFIXES)}; DICOM SEG/RTSTRUCT via "
                        "amtlib.dicom.annotations)", "convert it to NIfTI (.nii.gz) or NRRD")
    try:
        loaded = _read_nifti(path) if suffix.startswith(".nii") else _read_nrrd(path)
    except MaskError:
        raise
    except Exception as exc:  # nibabel/SimpleITK raise many types for truncated or foreign files
        raise MaskError(path, f"not a readable {suffix} file, truncated or corrupt? ({type(exc).__name__}: {str(exc)[:120]})",
                        _REEXPORT) from None
    if loaded.data.ndim != 3:
        raise MaskError(path, f"mask has {loaded.data.ndim} dimensions {loaded.data.shape}", "expected one 3D volume")
    return loaded


def grid_mapping(mask_affine: np.ndarray, mask_shape: Sequence[int], image_affine: np.ndarray,
                 image_shape_xyz: Sequence[int]) -> tuple[np.ndarray | None, float]:
    """How a mask's voxel axes map onto an image's, by world coordinates.

    Returns ``(ornt, max_distance_mm)``: ``ornt`` is a nibabel orientation array (mask axis -> image
    axis and flip) when the mask's voxel centres coincide with the image's after a permutation and
    flips (None otherwise), and ``max_distance_mm`` the largest distance between a mask voxel centre
    (the 8 corners of its grid; the grids are affine, so corners bound every voxel) and the image voxel
    centre it is mapped onto. Both affines map (i, j, k) -> RAS mm.
    """
    mask_shape = np.asarray(mask_shape[:3], dtype=float)
    image_shape = np.asarray(image_shape_xyz[:3], dtype=float)
    to_image = np.linalg.inv(image_affine) @ mask_affine  # mask index -> image index (fractional)
    rot = to_image[:3, :3]
    ornt = np.zeros((3, 2))
    used: set[int] = set()
    for i in range(3):
        j = int(np.argmax(np.abs(rot[:, i])))
        sign = 1.0 if rot[j, i] > 0 else -1.0
        ornt[i] = (j, sign)
        used.add(j)
    corners = np.array([[a, b, c] for a in (0, mask_shape[0] - 1) for b in (0, mask_shape[1] - 1) for c in (0, mask_shape[2] - 1)])
    world = (mask_affine[:3, :3] @ corners.T).T + mask_affine[:3, 3]
    mapped_shape = np.zeros(3)
    for i in range(3):
        mapped_shape[int(ornt[i, 0])] = mask_shape[i]
    if len(used) == 3 and np.array_equal(mapped_shape, image_shape):
        # the image voxel each mask corner must land on: the permuted and flipped corner index
        target = np.empty_like(corners)
        for i in range(3):
            j, sign = int(ornt[i, 0]), ornt[i, 1]
            target[:, j] = corners[:, i] if sign > 0 else image_shape[j] - 1 - corners[:, i]
        expected = (image_affine[:3, :3] @ target.T).T + image_affine[:3, 3]
        return ornt, float(np.linalg.norm(world - expected, axis=1).max())
    # another grid (oblique, cropped, resampled): distance of each corner to its nearest image voxel centre
    idx = (np.linalg.inv(image_affine) @ np.c_[world, np.ones(len(world))].T).T[:, :3]
    nearest = (image_affine[:3, :3] @ np.round(idx).T).T + image_affine[:3, 3]
    return None, float(np.linalg.norm(world - nearest, axis=1).max())


def grid_embedding(mask_affine: np.ndarray, mask_shape: Sequence[int], image_affine: np.ndarray,
                   image_shape_xyz: Sequence[int], tolerance_mm: float = TOLERANCE_MM) -> tuple[np.ndarray, np.ndarray] | None:
    """``(ornt, start)`` when the image's grid is a block of the mask's, else None.

    The mask's axes, permuted and flipped by the nibabel orientation ``ornt``, run along the image's
    with the same spacing, and image voxel (0, 0, 0) is the reoriented mask's voxel ``start`` (x, y, z;
    integers), the image's whole extent inside the mask's; every mask voxel centre within
    ``tolerance_mm`` of that grid (checked at the 8 corners: both grids are affine). Only in-plane
    padding counts: the slices must be the image's own (a mask with more slices than its series marks a
    series that lost slices, which must stay a mismatch).
    """
    import nibabel as nib

    to_image = np.linalg.inv(image_affine) @ mask_affine
    ornt = nib.orientations.io_orientation(to_image)
    if np.isnan(ornt).any():
        return None
    shape = np.asarray(mask_shape[:3], dtype=int)
    reoriented_affine = mask_affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    shape_r = np.empty(3, dtype=int)
    shape_r[ornt[:, 0].astype(int)] = shape
    offset = (np.linalg.inv(image_affine) @ reoriented_affine)[:3, 3]  # mask voxel 0 in image indices
    start = -np.round(offset).astype(int)
    corners = np.array([[a, b, c] for a in (0, shape_r[0] - 1) for b in (0, shape_r[1] - 1) for c in (0, shape_r[2] - 1)])
    world = (reoriented_affine[:3, :3] @ corners.T).T + reoriented_affine[:3, 3]
    expected = (image_affine[:3, :3] @ (corners - start).T).T + image_affine[:3, 3]
    if np.linalg.norm(world - expected, axis=1).max() > tolerance_mm:
        return None
    if (start < 0).any() or (start + np.asarray(image_shape_xyz[:3]) > shape_r).any():
        return None
    if start[2] != 0 or shape_r[2] != int(image_shape_xyz[2]):
        return None  # more slices than the image: the series may have lost some, never cropped away
    return ornt, start


def grid_placement(affine: np.ndarray, shape: Sequence[int], image_affine: np.ndarray, image_shape_zyx: Sequence[int],
                   tolerance_mm: float = TOLERANCE_MM, path: str | Path = "mask") -> tuple[np.ndarray, np.ndarray | None]:
    """How a mask grid (``shape`` (i, j, k), ``affine``) lies on an image's: ``(ornt, start)``, ``start`` None
    for the same grid (in any axis order or flip), else the image's voxel 0 in a grid padded in-plane around
    it (:func:`grid_embedding`). :class:`MaskError` with :data:`OFF_GRID` names ``path`` and the largest
    distance between voxel centres for anything else."""
    nz, ny, nx = (int(v) for v in image_shape_zyx)
    image_affine = np.asarray(image_affine, dtype=float)
    shape = tuple(int(v) for v in shape[:3])
    ornt, distance = grid_mapping(affine, shape, image_affine, (nx, ny, nz))
    if ornt is not None and distance <= tolerance_mm:
        return ornt, None
    block = grid_embedding(affine, shape, image_affine, (nx, ny, nz), tolerance_mm)
    if block is not None:
        return block
    shape_note = f"mask shape (i, j, k) {shape} vs image (x, y, z) {(nx, ny, nz)}"
    if distance <= tolerance_mm:  # centres on the image's lattice, but the extents differ
        what = (f"its voxel centres lie on the image's lattice (within {distance:.3g} mm) but its extent is "
                f"not the image's ({shape_note}; only a mask padded in-plane around the image is cropped)")
    else:
        what = f"largest distance between voxel centres {distance:.3g} mm (tolerance {tolerance_mm:g} mm; {shape_note})"
    raise MaskError(path, f"voxel grid does not coincide with the image's: {what}",
                    "export the mask on the image's own grid (same series, no resampling or cropping) or resample "
                    "it to the image before use", reason=OFF_GRID)


def _apply_placement(binary_ijk: np.ndarray, placement: tuple[np.ndarray, np.ndarray | None],
                     image_shape_zyx: Sequence[int], path: str | Path,
                     notes: list[tuple[str, str]] | None) -> tuple[np.ndarray, bool]:
    """A 0/1 mask moved by :func:`grid_placement`'s ``placement``: ``(mask uint8 zyx, reoriented)``."""
    import nibabel as nib

    nz, ny, nx = (int(v) for v in image_shape_zyx)
    ornt, start = placement
    shape = tuple(binary_ijk.shape)
    on_image = nib.orientations.apply_orientation(np.asarray(binary_ijk).astype(np.uint8), ornt)  # image (x, y, z)
    reoriented = not np.array_equal(ornt, np.array([[0, 1], [1, 1], [2, 1]], dtype=float))
    if start is not None:
        (x0, y0, z0), total = start, int(on_image.sum())
        on_image = on_image[x0:x0 + nx, y0:y0 + ny, z0:z0 + nz]
        if int(on_image.sum()) != total:
            raise MaskError(path, f"on a grid larger than the image's ({shape} vs (x, y, z) {(nx, ny, nz)}), "
                            f"{total - int(on_image.sum())} tumour voxel(s) lie outside the image",
                            "export the mask on the image's own grid", reason=OFF_GRID)
        if notes is not None:
            notes.append(("mask_cropped", f"{path}: on a larger grid {shape} containing the image's (x, y, z) "
                          f"{(nx, ny, nz)} at voxel {(int(x0), int(y0), int(z0))} (e.g. dcm2niix's padded tilt "
                          "correction); cropped to the image, no tumour voxel outside"))
    return np.ascontiguousarray(on_image.transpose(2, 1, 0)), reoriented


def place_on_grid(binary_ijk: np.ndarray, affine: np.ndarray, image_affine: np.ndarray, image_shape_zyx: Sequence[int],
                  tolerance_mm: float = TOLERANCE_MM, path: str | Path = "mask",
                  notes: list[tuple[str, str]] | None = None) -> tuple[np.ndarray, bool]:
    """A 0/1 mask stored as (i, j, k) with its ``affine`` placed on an image's (z, y, x) grid by world
    coordinates: ``(mask uint8 zyx, reoriented)``. The one rule of this module for every reader (the
    cohort's reference masks, ``amt evaluate``'s predictions and references): the same grid in any axis
    order or flip is reoriented; a grid padded in-plane around the image's is cropped when no foreground
    voxel lies outside (``("mask_cropped", detail)`` in ``notes``); anything else is :class:`MaskError`
    with :data:`OFF_GRID` (:func:`grid_placement`).
    """
    placement = grid_placement(affine, binary_ijk.shape, image_affine, image_shape_zyx, tolerance_mm, path)
    return _apply_placement(binary_ijk, placement, image_shape_zyx, path, notes)


def mask_on_image_grid(path: str | Path, image_affine: np.ndarray, image_shape_zyx: Sequence[int],
                       label: int | str | None = None, tolerance_mm: float = TOLERANCE_MM,
                       notes: list[tuple[str, str]] | None = None) -> tuple[np.ndarray, bool]:
    """Read a NIfTI/NRRD mask and place it on the image's (z, y, x) grid; return ``(mask, reoriented)``.

    ``image_affine`` maps the image's voxel (x, y, z) to RAS mm (as :func:`amtlib.dicom.dicomio.read_series`
    gives). The mask is uint8 0/1: the file's voxels equal to ``label`` (an int, or a ``.seg.nrrd``
    segment name), or, with ``label=None``, the file must hold only 0 and 1. ``reoriented`` is True when
    the file's axes were permuted or flipped to match. Raises :class:`MaskError` naming the file: not
    readable; grid not the image's (:func:`place_on_grid`); values not 0/1 without a ``label``; label
    absent; no tumour voxel. A mask cropped from a larger grid adds ``("mask_cropped", detail)`` to ``notes``.
    """
    path = Path(path)
    loaded = read_mask_file(path)
    # the grid first: a mask on another grid is a geometry problem whatever its values
    placement = grid_placement(loaded.affine, loaded.data.shape, image_affine, image_shape_zyx, tolerance_mm, path)
    values = loaded.data
    if isinstance(label, str) and not label.strip().lstrip("-").isdigit():
        if label not in loaded.segments:
            names = ", ".join(repr(n) for n in loaded.segments) or "none recorded"
            raise MaskError(path, f"no segment named {label!r} (segments: {names})", "set the mask label to one of them")
        binary = values == loaded.segments[label]
    elif label is not None:
        wanted = int(label)
        present = np.unique(values)
        if wanted not in present:
            raise MaskError(path, f"label {wanted} not in the mask (values {present[:8].tolist()})", "set the tumour's label")
        binary = values == wanted
    else:
        present = np.unique(values)
        if np.setdiff1d(present, [0, 1]).size:
            segs = f"; segments {loaded.segments}" if loaded.segments else ""
            raise MaskError(path, f"values {present[:8].tolist()} are not 0/1{segs}",
                            "name the tumour label (parameter mask_label: a value or a .seg.nrrd segment name), "
                            "it is never guessed")
        binary = values == 1
    if not binary.any():
        raise MaskError(path, f"no tumour voxel (label {label if label is not None else 1})",
                        "give the mask that holds the tumour, or set its label")
    return _apply_placement(binary, placement, image_shape_zyx, path, notes)
