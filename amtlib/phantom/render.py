"""Render one synthetic case: a deformed background, an anterior mediastinal tumour, acquisition effects.

Paper sections: Image acquisition protocol (vendor noise and kernel, field of view 320-450 mm, slice
thickness 5-10 mm), Expert annotation (a tumour of the anterior mediastinum, ITMIG prevascular
compartment), Quantitative analysis of failure modes (look-alikes: tumours abutting the aorta,
pericardial effusion near cyst attenuation, small low-contrast tumours). A low-contrast tumour keeps
its histology's attenuation and lies in a bed of residual thymic soft tissue of nearly the same HU,
with an ill-defined margin: the contrast is low against its surroundings, not its mean HU.

Grid: (z, y, x) in LPS index order; in-plane pixel size = FOV / :data:`DEMO_MATRIX`, z step = slice
thickness; the stored field of view is a mediastinal crop of ``crop_yx`` pixels and
:data:`Z_EXTENT_MM` along z. The tumour is placed between the posterior sternum and the most anterior
great-vessel voxel, 0-40 mm above the heart top, clipped out of bone, vessels, heart, airway,
oesophagus and the chest wall, and scaled until its maximum axial diameter falls in its size bin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from amtlib.geometry import bounding_box
from amtlib.geometry import max_axial_diameter_mm as lesion_max_axial_diameter_mm
from amtlib.subgroups import size_class
from amtlib.phantom.backgrounds import (
    AORTA, CAVITY, HEART, LUNG_CODES, SOFT_TISSUE, STERNUM, TUMOUR_ALLOWED, VESSEL_CODES, Background,
)

DEMO_MATRIX = 256
_AXIAL_OPENING = np.ones((1, 3, 3), bool)
Z_EXTENT_MM = 190.0
#: Target max axial diameter ranges (mm) per size bin, kept 3 mm inside the paper's 50/80 mm edges.
SIZE_RANGES_MM: dict[str, tuple[float, float]] = {"small": (22.0, 46.0), "medium": (54.0, 76.0), "large": (84.0, 105.0)}
TUMOUR_LABEL = 200
#: Backgrounds whose heart label is a real organ map (effusions are drawn around it).
HEART_MAPPED = ("lidc", "procedural")
EFFUSION_LABEL = 201
#: Residual thymic soft tissue around a low-contrast tumour (outside the reference mask).
THYMIC_BED_LABEL = 202


@dataclass
class CaseImage:
    """A rendered series: HU (float32, z y x), reference mask, anatomy labels, spacing and audit facts."""

    hu: np.ndarray
    mask: np.ndarray
    anatomy: np.ndarray
    spacing: tuple[float, float, float]
    facts: dict
    organs: np.ndarray | None = None  # sampled organ map before the tumour (internal codes kept)


def size_bin(diameter_mm: float) -> str:
    """Size class of a max axial diameter (``small``/``medium``/``large``): :func:`amtlib.subgroups.size_class`,
    the bins the evaluation's ``size_<class>`` subgroups use."""
    return str(size_class(diameter_mm))


def max_axial_diameter_mm(mask: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """The evaluation's maximum axial diameter (:func:`amtlib.evaluation.lesions.max_axial_diameter_mm`), 0 if empty."""
    return float(np.nan_to_num(lesion_max_axial_diameter_mm(mask, spacing)))


def tumour_bounding_region(organs: np.ndarray) -> np.ndarray:
    """Voxels where a tumour may lie, from an organ map without the tumour (``CaseImage.organs``,
    internal codes kept): thoracic-cavity fat or lung (never bone, vessels, heart, airway or
    oesophagus), anterior to the mean trachea position, or to the cavity's centre when no trachea is
    labelled (anterior mediastinal tumours may extend into, not lie behind, the middle mediastinum)."""
    allowed = np.isin(organs, TUMOUR_ALLOWED)
    trachea = organs == 16
    ys = np.nonzero(trachea)[1] if trachea.any() else np.nonzero(allowed)[1]
    y_limit = float(ys.mean()) if ys.size else organs.shape[1]
    return allowed & (np.arange(organs.shape[1])[None, :, None] < y_limit)


def _smooth_field(shape: tuple[int, ...], sigma_vox: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Zero-mean unit-SD Gaussian random field with the given correlation (voxels)."""
    f = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_vox, mode="wrap")
    sd = float(f.std())
    return f / sd if sd > 0 else f


def _deformation(n: int, axis_mm: np.ndarray, rng: np.random.Generator, amp_mm: float) -> list[tuple[np.ndarray, ...]]:
    """Separable low-frequency sinusoid terms, one list per output axis (cheap smooth displacement)."""
    terms = []
    for _ in range(n):
        parts = []
        for ax in axis_mm:
            wl = rng.uniform(150.0, 320.0)
            parts.append(np.sin(2 * np.pi * ax / wl + rng.uniform(0, 2 * np.pi)).astype(np.float32))
        terms.append((rng.uniform(-amp_mm, amp_mm), *parts))
    return terms


def sample_background(bg: Background, thickness_mm: float, pixel_mm: float, crop_yx: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], dict]:
    """Resample ``bg`` onto the case grid through a random body-size scaling, rotation and smooth warp.

    Returns (HU float32, labels uint8, spacing (z, y, x) mm, facts). Body size scales with the
    field of view (FOV adjusted to the patient, paper: 320-450 mm) so the crop holds similar anatomy.
    """
    nz = max(4, int(round(Z_EXTENT_MM / thickness_mm)))
    ny, nx = crop_yx
    spacing = (float(thickness_mm), float(pixel_mm), float(pixel_mm))
    s_xy = pixel_mm * DEMO_MATRIX / 370.0 * rng.uniform(0.96, 1.04)
    s_z = rng.uniform(0.93, 1.07)
    theta = np.deg2rad(rng.uniform(-4.0, 4.0))
    uz = (np.arange(nz) - (nz - 1) / 2) * spacing[0]
    uy = (np.arange(ny) - (ny - 1) / 2) * spacing[1]
    ux = (np.arange(nx) - (nx - 1) / 2) * spacing[2]
    az, ay, ax = bg.anchor_mm
    centre = np.array([az - 35.0 + rng.uniform(-8, 8), ay + rng.uniform(-6, 6) - 10.0, ax + rng.uniform(-6, 6)])
    # keep the stored z range inside the background (lung1 covers only 240 mm)
    half_z = (nz - 1) / 2 * spacing[0] / s_z
    bg_len = (bg.ct.shape[0] - 1) * bg.spacing[0]
    centre[0] = float(np.clip(centre[0], half_z, bg_len - half_z)) if bg_len > 2 * half_z else bg_len / 2
    zz = (uz / s_z)[:, None, None]
    yy = ((np.cos(theta) * uy[:, None] - np.sin(theta) * ux[None, :]) / s_xy)[None]
    xx = ((np.sin(theta) * uy[:, None] + np.cos(theta) * ux[None, :]) / s_xy)[None]
    coords = []
    for base, c in ((zz, centre[0]), (yy, centre[1]), (xx, centre[2])):
        arr = np.empty((nz, ny, nx), np.float32)
        arr[...] = base + c
        coords.append(arr)
    for axis in range(3):
        for amp, fz, fy, fx in _deformation(2, [uz, uy, ux], rng, 5.0):
            coords[axis] += amp * fz[:, None, None] * fy[None, :, None] * fx[None, None, :]
        coords[axis] /= bg.spacing[axis]
    src = bg.ct_for_thickness(thickness_mm)
    hu = ndi.map_coordinates(src, coords, order=1, mode="constant", cval=-1000.0, prefilter=False)
    labels = ndi.map_coordinates(bg.labels, coords, order=0, mode="constant", cval=0, prefilter=False)
    return hu.astype(np.float32), labels.astype(np.uint8), spacing, {"body_scale": s_xy, "z_scale": s_z, "rotation_deg": float(np.rad2deg(theta))}


def _place_centre(labels: np.ndarray, spacing: tuple[float, float, float], rng: np.random.Generator, abut_aorta: bool) -> tuple[np.ndarray, dict]:
    """Tumour centre (voxel, float) in the prevascular space 0-40 mm above the heart top."""
    nz = labels.shape[0]
    heart_k = np.flatnonzero((labels == HEART).any(axis=(1, 2)))
    top = int(heart_k.max()) if heart_k.size else nz // 2
    sternum_k = np.flatnonzero((labels == STERNUM).any(axis=(1, 2)))
    k = int(np.clip(round(top + rng.uniform(0, 40.0) / spacing[0]), 0, nz - 1))
    if sternum_k.size and k not in sternum_k:
        k = int(sternum_k[np.argmin(np.abs(sternum_k - k))])
    sl = labels[k]
    st_y, st_x = np.nonzero(sl == STERNUM)
    if st_y.size:
        x_mid = float(np.median(st_x))
        y_front = float(st_y.max())
    else:
        cav_y, cav_x = np.nonzero(np.isin(sl, TUMOUR_ALLOWED))
        x_mid = float(np.median(cav_x)) if cav_x.size else sl.shape[1] / 2
        y_front = float(cav_y.min()) if cav_y.size else sl.shape[0] * 0.3
    near = np.abs(np.arange(sl.shape[1]) - x_mid)[None, :] * spacing[2] < 40.0
    vessel = np.isin(sl, VESSEL_CODES + (HEART, SOFT_TISSUE)) & near & (np.arange(sl.shape[0])[:, None] > y_front)
    vy, vx = np.nonzero(vessel)
    y_back = float(vy.min()) if vy.size else y_front + 30.0 / spacing[1]
    facts = {"prevascular_depth_mm": (y_back - y_front) * spacing[1], "heart_top_slice": top}
    if abut_aorta:
        ay, ax = np.nonzero((sl == AORTA) & near)
        if ay.size:
            front = ay.min()
            xs = ax[ay <= front + 3]
            return np.array([k, front - 2.0, float(xs.mean())]), {**facts, "placed": "on_aorta"}
    centre = np.array([k, (y_front + y_back) / 2, x_mid + rng.normal(4.0, 6.0) / spacing[2]])
    return centre, {**facts, "placed": "prevascular"}


def _lobulation(lobes: list, nzv: np.ndarray, nyv: np.ndarray, nxv: np.ndarray, inv: np.ndarray,
                where: np.ndarray | None = None) -> np.ndarray | float:
    """``sum(a * sin((k . n) * inv + ph))`` over ``lobes``, evaluated in place (no temporaries).

    With ``where`` (a boolean array of the broadcast shape) only those voxels are computed, the others
    are 0. The same floating-point operations in the same order as the plain expression, so bitwise
    equal to it where computed (issue 13: this sum was a quarter of the demo's synthesis time).
    """
    if not lobes:
        return 0
    shape = np.broadcast_shapes(nzv.shape, nyv.shape, nxv.shape, inv.shape)
    dtype = np.result_type(nzv, nyv, nxv, inv)
    if where is not None:
        out = np.zeros(shape, dtype)
        parts = [np.broadcast_to(v, shape)[where] for v in (nzv, nyv, nxv, inv)]
        out[where] = _lobulation(lobes, *parts)
        return out
    lob = np.zeros(shape, dtype)
    term = np.empty_like(lob)
    for a, k, ph in lobes:
        np.add(k[0] * nzv, k[1] * nyv, out=term)
        term += k[2] * nxv
        term *= inv
        term += ph
        np.sin(term, out=term)
        term *= a
        lob += term
    return lob


def _tumour_fraction(shape: tuple[int, int, int], spacing, centre, radii_mm, angle, lobes: list, lobe_amp: float, edge_mm: float) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Partial-volume occupancy of a lobulated ellipsoid, averaged over 3 sub-slices per slice."""
    r_max = max(radii_mm) * (1 + lobe_amp) + 2 * edge_mm
    lo = [max(int(np.floor(centre[a] - r_max / spacing[a])) - 1, 0) for a in range(3)]
    hi = [min(int(np.ceil(centre[a] + r_max / spacing[a])) + 2, shape[a]) for a in range(3)]
    box = tuple(slice(l, h) for l, h in zip(lo, hi))
    if any(h <= l for l, h in zip(lo, hi)):
        return np.zeros((0, 0, 0), np.float32), box
    y = ((np.arange(lo[1], hi[1]) - centre[1]) * spacing[1])[None, :, None]
    x = ((np.arange(lo[2], hi[2]) - centre[2]) * spacing[2])[None, None, :]
    ca, sa = np.cos(angle), np.sin(angle)
    yr, xr = ca * y - sa * x, sa * y + ca * x
    bshape = (hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2])
    r_mean = float(np.mean(radii_mm))
    # Where |rho - 1| exceeds the largest lobulation plus the edge ramp, the clipped occupancy is 0 or 1
    # whatever the lobulation: it is computed only in the shell between (same values, less work).
    reach = lobe_amp * sum(abs(float(a)) for a, _, _ in lobes) + 0.5 * edge_mm / r_mean + 1e-6
    acc = np.zeros(bshape, np.float32)
    for dz in (-1 / 3, 0.0, 1 / 3):
        z = ((np.arange(lo[0], hi[0]) + dz - centre[0]) * spacing[0])[:, None, None]
        nzv, nyv, nxv = z / radii_mm[0], yr / radii_mm[1], xr / radii_mm[2]
        rho = np.sqrt(nzv**2 + nyv**2 + nxv**2)
        # lobulation depends on direction only (star-shaped outline): sinusoids of the unit vector
        inv = 1.0 / np.maximum(rho, 1e-6)
        lob = _lobulation(lobes, nzv, nyv, nxv, inv, where=np.abs(rho - 1.0) < reach)
        acc += np.clip(((1.0 + lobe_amp * lob) - rho) * r_mean / edge_mm + 0.5, 0.0, 1.0)
    return acc / 3.0, box


_HISTOLOGY: dict[str, dict] = {
    # mean HU unenhanced, enhancement on contrast CT, texture SD, lobulation amplitude; the ranges are
    # wide on purpose: between patients, attenuation varies with histology grade, protocol and timing
    "thymoma": {"mean": (25, 65), "enh": (10, 50), "tex": (5, 10), "lobe": (0.08, 0.18)},
    "thymic_carcinoma": {"mean": (25, 65), "enh": (10, 45), "tex": (9, 16), "lobe": (0.15, 0.3), "necrosis": (0.1, 0.3)},
    "lymphoma": {"mean": (30, 60), "enh": (5, 30), "tex": (2, 5), "lobe": (0.1, 0.22)},
    "thymic_cyst": {"mean": (0, 20), "enh": (0, 0), "tex": (1, 3), "lobe": (0.0, 0.05)},
    "teratoma": {"mean": (30, 45), "enh": (5, 15), "tex": (4, 8), "lobe": (0.08, 0.2), "mixed": True},
    "sarcomatous_transformation_of_teratoma": {"mean": (35, 50), "enh": (10, 25), "tex": (8, 14), "lobe": (0.15, 0.3), "mixed": True},
    "carcinoid": {"mean": (40, 60), "enh": (25, 45), "tex": (5, 10), "lobe": (0.05, 0.15), "calcium": 0.3},
}


def _noise_sd(hu: np.ndarray, labels: np.ndarray) -> float:
    """Robust noise SD (HU) of the sampled background in soft tissue (high-pass residual, MAD)."""
    resid = hu - ndi.uniform_filter(hu, (1, 3, 3))
    soft = (hu > -30) & (hu < 120) & ~np.isin(labels, (0,))
    vals = resid[soft] if soft.sum() > 500 else resid.ravel()
    # residual of a 3x3 box mean keeps 8/9 of white-noise variance
    return float(1.4826 * np.median(np.abs(vals - np.median(vals))) / np.sqrt(8 / 9))


def tumour_hu(hist: str, frac_shape: tuple[int, ...], spacing, rng: np.random.Generator, contrast: bool, noise_sd: float) -> tuple[np.ndarray, float]:
    """Tumour HU field: histology mean (+ enhancement), low-frequency texture, components, matched noise."""
    p = _HISTOLOGY.get(hist, _HISTOLOGY["thymoma"])
    mean = rng.uniform(*p["mean"]) + (rng.uniform(*p["enh"]) if contrast else 0.0)
    corr = tuple(max(0.5, 6.0 / s) for s in spacing)
    tex = _smooth_field(frac_shape, corr, rng) * rng.uniform(*p["tex"])
    field = mean + tex
    if "necrosis" in p:
        necro = _smooth_field(frac_shape, tuple(max(0.5, 9.0 / s) for s in spacing), rng)
        cut = np.quantile(necro, 1 - rng.uniform(*p["necrosis"]))
        field = np.where(necro > cut, rng.uniform(10, 25), field)
    if p.get("mixed"):
        comp = _smooth_field(frac_shape, tuple(max(0.5, 8.0 / s) for s in spacing), rng)
        fat_cut, fluid_cut = np.quantile(comp, [rng.uniform(0.2, 0.4), rng.uniform(0.5, 0.7)])
        field = np.where(comp < fat_cut, rng.normal(-90, 8), np.where(comp < fluid_cut, rng.uniform(5, 20), field))
    if p.get("mixed") or rng.random() < p.get("calcium", 0.0):
        spots = _smooth_field(frac_shape, tuple(max(0.5, 1.5 / s) for s in spacing), rng)
        field = np.where(spots > np.quantile(spots, 0.985), rng.uniform(250, 700), field)
    noise = _smooth_field(frac_shape, (0.1, 0.6, 0.6), rng) * noise_sd
    return (field + noise).astype(np.float32), float(mean)


def _flag(design: dict, key: str) -> bool:
    """A 0/1 design flag that may be empty (NaN/None/pd.NA: not applicable -> False)."""
    value = design.get(key)
    try:
        return bool(value) and value == value and int(value) == 1
    except (TypeError, ValueError):
        return False


def irregular_margin_lobes(rng: np.random.Generator, lobe_amp: float) -> list:
    """Extra outline terms of an irregular (ill-defined) margin, to append to a case's lobes.

    Related TET paper, Table 1 (margin unclear more often in high-risk thymomas): six direction
    sinusoids of about twice the base lobulation frequency whose summed amplitude is 6-12 % of the
    radius, on top of the case's own lobulation (``lobe_amp`` is the case's factor, which the outline
    formula multiplies every term by; it is divided out here so the base lobulation stays as it was).
    A gentle irregularity: the margin is rougher, the tumour keeps its size and place.
    """
    raw = [(rng.uniform(0.3, 0.6), rng.normal(0.0, 4.5, 3), rng.uniform(0, 2 * np.pi)) for _ in range(6)]
    total = float(rng.uniform(0.06, 0.12))
    norm = total / (sum(a for a, _, _ in raw) * max(lobe_amp, 1e-3))
    return [(a * norm, k, ph) for a, k, ph in raw]


def heterogeneous_enhancement(field: np.ndarray, spacing, rng: np.random.Generator) -> np.ndarray:
    """Patchy poorly enhancing regions: 20-40 % of the tumour, 10-25 HU lower, soft 5 mm patches.

    Related TET paper, Table 1 (heterogeneous enhancement more often in high-risk thymomas).
    """
    patches = _smooth_field(field.shape, tuple(max(0.5, 5.0 / s) for s in spacing), rng)
    cut = np.quantile(patches, 1 - rng.uniform(0.20, 0.40))
    weight = np.clip((patches - cut) / 0.4, 0.0, 1.0)
    return (field - rng.uniform(10.0, 25.0) * weight).astype(np.float32)


def render_case(bg: Background, design: dict, rng: np.random.Generator, crop_yx: tuple[int, int] = (160, 192),
                correlates_rng: np.random.Generator | None = None) -> CaseImage:
    """One series for one patient design row (see :func:`amtlib.phantom.clinical.design_cohort`).

    Uses ``design`` keys histology, size_bin, slice_thickness_mm, fov_mm, vendor, effusion,
    abut_aorta, low_contrast, and the optional 0/1 imaging correlates margin_irregular and
    heterogeneous_enhancement. Anatomy (deformation, tumour shape) draws from ``rng`` before the
    acquisition, so two series of one patient made from equal generators share the anatomy draws.
    The correlates draw only from ``correlates_rng`` (a stream of their own), so a case without
    them renders exactly as it did before they existed. The steps below draw from ``rng`` in the
    order they are called: reordering them changes every case of the demo cohort.
    """
    corr_rng = correlates_rng if correlates_rng is not None else np.random.default_rng(0)
    pixel_mm = float(design["fov_mm"]) / DEMO_MATRIX
    hu, labels, spacing, facts = sample_background(bg, float(design["slice_thickness_mm"]), pixel_mm, crop_yx, rng)
    noise_sd = _noise_sd(hu, labels)
    centre, place = _place_centre(labels, spacing, rng, bool(design.get("abut_aorta")))
    facts.update(place)
    hist = str(design.get("histology") or "thymoma")
    size = str(design.get("size_bin") or "medium")
    shape = _tumour_shape(hist, size, rng)
    if _flag(design, "margin_irregular"):
        shape["lobes"] = shape["lobes"] + irregular_margin_lobes(corr_rng, shape["lobe_amp"])
    edge_mm = spacing[1] * (2.5 if design.get("low_contrast") else 1.0)
    frac, box, mask_box, mask, diameter = _sized_tumour(labels, spacing, centre, shape, edge_mm, SIZE_RANGES_MM[size])
    # The reference mask is the >= 50 % tumour region; render its voxels as pure tumour and keep the
    # partial-volume blend outside it, so that mask statistics (mean HU) do not depend on tumour size
    # through the share of edge voxels (the scanner blur below still softens the boundary).
    frac = np.where(mask_box, 1.0, np.minimum(frac, 0.49))
    t_field, t_mean = tumour_hu(hist, frac.shape, spacing, rng, bg.contrast, noise_sd)
    if _flag(design, "heterogeneous_enhancement"):
        t_field = heterogeneous_enhancement(t_field, spacing, corr_rng)
    out = hu.copy()
    bed = np.zeros(labels.shape, bool)
    if design.get("low_contrast") and mask.any():
        bed = _add_thymic_bed(out, labels, mask, t_mean, spacing, noise_sd, rng)
    out[box] = out[box] * (1 - frac) + t_field * frac
    anatomy, effusion_ml = _anatomy(out, labels, mask, bed, spacing, noise_sd, rng,
                                    bool(design.get("effusion")) and bg.name in HEART_MAPPED)
    out, scanner = _scanner(out, str(design["vendor"]), spacing, rng)
    aorta_contact = float((ndi.binary_dilation(mask, iterations=1) & (labels == AORTA)).sum()) / max(float(mask.sum()), 1.0)
    facts.update({
        "max_axial_diameter_mm": round(diameter, 2), "size_bin_measured": size_bin(diameter) if diameter else "",
        "tumour_volume_ml": round(float(mask.sum() * np.prod(spacing) / 1000.0), 3), "tumour_mean_hu_design": round(t_mean, 1),
        "aorta_contact_ratio": round(aorta_contact, 4), "effusion_ml": round(effusion_ml, 3),
        "native_noise_sd": round(noise_sd, 2), **scanner,
        "thymic_bed_ml": round(float(bed.sum() * np.prod(spacing) / 1000.0), 3),
    })
    return CaseImage(out, mask.astype(np.uint8), anatomy, spacing, facts, labels)


def _tumour_shape(hist: str, size: str, rng: np.random.Generator) -> dict:
    """The tumour's design outline: a target diameter in the size bin's range (mm), ellipsoid radii
    (mm; a thymic cyst rounder), in-plane angle (rad), lobulation amplitude and four lobe terms."""
    p = _HISTOLOGY.get(hist, _HISTOLOGY["thymoma"])
    target = rng.uniform(*SIZE_RANGES_MM[size])
    radii = np.array([target / 2 * rng.uniform(1.1, 1.5), target / 2 * rng.uniform(0.55, 0.85), target / 2])
    if hist == "thymic_cyst":
        radii[1] = target / 2 * rng.uniform(0.75, 0.95)
        radii[0] = target / 2 * rng.uniform(1.0, 1.2)
    angle = rng.uniform(-0.4, 0.4)
    lobe_amp = rng.uniform(*p["lobe"])
    lobes = [(rng.uniform(0.3, 0.6), rng.normal(0.0, 2.2, 3), rng.uniform(0, 2 * np.pi)) for _ in range(4)]
    return {"target": target, "radii": radii, "angle": angle, "lobe_amp": lobe_amp, "lobes": lobes}


def _sized_tumour(labels: np.ndarray, spacing, centre, shape: dict, edge_mm: float, size_range: tuple[float, float]
                  ) -> tuple[np.ndarray, tuple[slice, ...], np.ndarray, np.ndarray, float]:
    """Scale the outline until the clipped mask's maximum axial diameter lies in ``size_range`` (mm,
    1 mm slack; at most 10 tries, scale at most 2.5). Returns the tumour fraction and mask on a box
    around it, the box, the mask on the whole grid, and the diameter reached (0 when nothing fits the
    allowed region)."""
    allowed = tumour_bounding_region(labels)
    lo, hi = size_range
    target = shape["target"]
    scale, s_lo, s_hi = 1.0, 0.0, np.inf
    for _ in range(10):
        frac, box = _tumour_fraction(labels.shape, spacing, centre, shape["radii"] * scale, shape["angle"],
                                     shape["lobes"], shape["lobe_amp"], edge_mm)
        frac = frac * allowed[box]
        # an in-plane opening drops the one-voxel slivers that clipping leaves between vessels, which
        # no reader would draw
        mask_box = _largest_components_keep(ndi.binary_opening(frac >= 0.5, structure=_AXIAL_OPENING))
        frac = np.where(ndi.binary_dilation(mask_box, iterations=1), frac, 0.0)
        mask = np.zeros(labels.shape, bool)
        mask[box] = mask_box
        diameter = max_axial_diameter_mm(mask, spacing)
        if lo - 1 <= diameter <= hi + 1:
            break
        if diameter == 0:
            # the ellipsoid fell wholly outside the allowed region (a narrow prevascular space):
            # grow it until part of it lies inside, then let the bisection size it
            s_lo = scale
            scale = min(scale * 1.6, 2.5)
            continue
        # organ clipping makes diameter(scale) flatter than linear: bracket the scale, then bisect
        if diameter < lo:
            s_lo = scale
            scale = min(scale * (target / max(diameter, 1.0)) ** 1.5, 2.5) if np.isinf(s_hi) else (scale + s_hi) / 2
        else:
            s_hi = scale
            scale = (s_lo + scale) / 2 if s_lo > 0 else scale * target / diameter
        if s_lo >= 2.5:
            break
    return frac, box, mask_box, mask, diameter


def _add_thymic_bed(out: np.ndarray, labels: np.ndarray, mask: np.ndarray, t_mean: float, spacing, noise_sd: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Blend residual thymic tissue, 5-20 HU below the tumour, into the fat around it (a low-contrast
    case; unlabelled thoracic-cavity tissue where the procedural background leaves it at 0), in place
    in ``out``; returns where the tissue is at least half (the thymic-bed label)."""
    cavity = labels == (CAVITY if (labels == CAVITY).any() else 0)
    weight, bed_box = _thymic_bed(mask, cavity & (out > -250.0), spacing, rng)
    bed_hu = t_mean - rng.uniform(5.0, 20.0) + _smooth_field(weight.shape, (0.1, 0.6, 0.6), rng) * noise_sd
    out[bed_box] = out[bed_box] * (1 - weight) + bed_hu * weight
    bed = np.zeros(labels.shape, bool)
    bed[bed_box] = weight >= 0.5
    return bed


def _anatomy(out: np.ndarray, labels: np.ndarray, mask: np.ndarray, bed: np.ndarray, spacing, noise_sd: float,
             rng: np.random.Generator, effusion: bool) -> tuple[np.ndarray, float]:
    """The anatomy label map (organs, a pericardial effusion drawn into ``out`` in place when asked,
    thymic bed, tumour) and the effusion's volume in ml. HU-rule maps (lung1/lung2) call all soft
    tissue below the carina "heart", so the caller asks for an effusion only on other backgrounds."""
    anatomy = labels.copy()
    anatomy[np.isin(anatomy, (CAVITY, SOFT_TISSUE))] = 0
    effusion_ml = 0.0
    if effusion:
        eff = _effusion(labels, spacing, rng) & ~mask
        if eff.any():
            out[eff] = rng.uniform(5.0, 20.0) + rng.standard_normal(int(eff.sum()), dtype=np.float32) * noise_sd
            anatomy[eff] = EFFUSION_LABEL
            effusion_ml = float(eff.sum() * np.prod(spacing) / 1000.0)
    anatomy[bed & ~mask & (anatomy == 0)] = THYMIC_BED_LABEL
    anatomy[mask] = TUMOUR_LABEL
    return anatomy, effusion_ml


def _scanner(out: np.ndarray, vendor: str, spacing, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """The vendor's in-plane blur, added correlated noise and HU offset, clipped to -1024..3071 HU;
    returns the image (float32) and the drawn blur (px) and noise SD (HU) for the case's facts."""
    from amtlib.phantom.clinical import VENDORS

    v = VENDORS[vendor]
    blur = rng.uniform(*v["blur_mm"]) / spacing[1]
    out = ndi.gaussian_filter(out, (0.0, blur, blur))
    add_sd = rng.uniform(*v["noise"])
    out += _smooth_field(out.shape, (0.0, 0.6, 0.6), rng) * add_sd + rng.uniform(*v["offset"])
    return np.clip(out, -1024.0, 3071.0).astype(np.float32), {"added_noise_sd": round(add_sd, 2), "blur_px": round(blur, 3)}


def _thymic_bed(mask: np.ndarray, fat: np.ndarray, spacing, rng: np.random.Generator) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Weight (0-1) of residual thymic tissue around ``mask``: an irregular 4-10 mm shell in ``fat``
    (unlabelled mediastinal tissue, never lung, vessels, heart or bone).

    Returns the weight on a box around the mask (and the box), 1 within the local shell width and
    falling to 0 over 2 mm; zero inside the mask and outside fat.
    """
    box = bounding_box(mask, [int(np.ceil(14.0 / s)) + 1 for s in spacing])
    sub = mask[box]
    dist = ndi.distance_transform_edt(~sub, sampling=spacing)
    width = rng.uniform(4.0, 8.0) * (1.0 + 0.35 * _smooth_field(sub.shape, tuple(max(0.5, 8.0 / s) for s in spacing), rng))
    weight = np.clip((width - dist) / 2.0 + 0.5, 0.0, 1.0) * fat[box] * ~sub
    return weight.astype(np.float32), box


def _largest_components_keep(mask: np.ndarray) -> np.ndarray:
    """The largest connected component (clipping can leave crumbs behind vessels)."""
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (int(np.argmax(sizes)) + 1)


def _effusion(labels: np.ndarray, spacing, rng: np.random.Generator) -> np.ndarray:
    """A pericardial effusion: a 4-14 mm shell over the anterior half of the heart, inside the cavity."""
    heart = labels == HEART
    if not heart.any():
        return np.zeros(labels.shape, bool)
    zs, ys, xs = np.nonzero(heart)
    pad = 12
    lo = [max(int(a.min()) - pad, 0) for a in (zs, ys, xs)]
    hi = [min(int(a.max()) + pad + 1, n) for a, n in zip((zs, ys, xs), labels.shape)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    dist = ndi.distance_transform_edt(~heart[box], sampling=spacing)
    thick = rng.uniform(4.0, 14.0)
    shell = (dist > 0) & (dist <= thick)
    y_cut = ys.mean() + 5.0 / spacing[1] - lo[1]
    shell &= (np.arange(shell.shape[1])[None, :, None] < y_cut)
    shell &= np.isin(labels[box], LUNG_CODES + (CAVITY,))
    out = np.zeros(labels.shape, bool)
    out[box] = shell
    return out
