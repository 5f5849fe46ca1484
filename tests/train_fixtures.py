"""Tiny synthetic run folders for the training tests (and notebook 03 checks) until the phantom exists.

A case is a (z, y, x) CT crop around the mediastinum: fat at -100 HU, two lungs at -850 HU, heart and
aorta at 40 HU, spine and sternum at 400 HU, plus a soft-tissue ellipsoid "tumour" (30-60 HU, axial
diameter ``diam_mm``) in the anterior mediastinum (low y), with Gaussian noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from amtlib.io import affine_from_spacing, save_nifti


def _ellipsoid(shape, spacing, centre_mm, radii_mm):
    zz, yy, xx = [np.arange(n) * s for n, s in zip(shape, spacing)]
    z, y, x = np.meshgrid(zz, yy, xx, indexing="ij", sparse=True)
    return ((z - centre_mm[0]) / radii_mm[0]) ** 2 + ((y - centre_mm[1]) / radii_mm[1]) ** 2 + ((x - centre_mm[2]) / radii_mm[2]) ** 2 <= 1


def synthetic_case(rng: np.random.Generator, shape=(50, 130, 130), spacing=(5.0, 1.5, 1.5), diam_mm: float | None = None,
                   tumour: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One (image_hu int16, mask uint8) pair; ``diam_mm`` defaults to a uniform 20-120 mm."""
    ext = [n * s for n, s in zip(shape, spacing)]
    cz, cy, cx = ext[0] / 2, ext[1] / 2, ext[2] / 2
    img = np.full(shape, -100.0, np.float32)
    for side in (-1, 1):
        img[_ellipsoid(shape, spacing, (cz, cy + 10, cx + side * 0.36 * ext[2]), (ext[0], 0.42 * ext[1], 0.2 * ext[2]))] = -850
    img[_ellipsoid(shape, spacing, (cz - 0.25 * ext[0], cy + 0.12 * ext[1], cx), (0.3 * ext[0], 0.2 * ext[1], 0.22 * ext[2]))] = 40
    img[_ellipsoid(shape, spacing, (cz, cy + 0.05 * ext[1], cx + 0.1 * ext[2]), (ext[0], 12, 12))] = 40
    img[_ellipsoid(shape, spacing, (cz, ext[1] - 15, cx), (ext[0], 14, 14))] = 400
    img[_ellipsoid(shape, spacing, (cz, 6, cx), (ext[0], 5, 18))] = 400
    mask = np.zeros(shape, np.uint8)
    if tumour:
        d = float(rng.uniform(20, 120)) if diam_mm is None else float(diam_mm)
        r = d / 2
        centre = (cz + rng.uniform(-0.15, 0.15) * ext[0], 14 + r * 0.8 + rng.uniform(0, 8), cx + rng.uniform(-10, 10))
        m = _ellipsoid(shape, spacing, centre, (max(r * 0.8, spacing[0]), r * 0.8, r))
        img[m] = rng.uniform(30, 60)
        mask[m] = 1
    img += rng.normal(0, 15, shape).astype(np.float32)
    return np.round(img).astype(np.int16), mask


def make_run(root: str | Path, n_train: int = 6, n_tuning: int = 2, n_test: int = 2, shape=(20, 40, 40),
             spacing=(5.0, 4.0, 4.0), seed: int = 0, empty_train: int = 0) -> Path:
    """A run folder with ``01_cohort/manifest.csv`` (+ images, masks) and ``02_split/split.csv``.

    The first ``empty_train`` training cases have no tumour (empty mask). Affines carry a non-trivial
    origin so geometry checks cannot pass by accident.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows, split_rows = [], []
    splits = ["train"] * n_train + ["tuning"] * n_tuning + ["external_test"] * n_test
    for i, split in enumerate(splits):
        cid = f"case{i:03d}"
        img, mask = synthetic_case(rng, shape, spacing, tumour=not (split == "train" and i < empty_train))
        aff = affine_from_spacing(spacing, origin_xyz=(-80.0 + i, -120.0, 300.0 - 2 * i))
        save_nifti(img, aff, root / "01_cohort" / "images" / f"{cid}.nii.gz")
        save_nifti(mask, aff, root / "01_cohort" / "masks" / f"{cid}.nii.gz")
        rows.append({"case_id": cid, "patient_id": f"P{i:03d}", "institution": "CENTRAL" if split != "external_test" else f"INST-{i:03d}",
                     "image_path": f"images/{cid}.nii.gz", "mask_path": f"masks/{cid}.nii.gz", "spacing_z": spacing[0],
                     "spacing_y": spacing[1], "spacing_x": spacing[2], "shape_z": shape[0], "shape_y": shape[1], "shape_x": shape[2]})
        split_rows.append({"case_id": cid, "patient_id": f"P{i:03d}", "institution": rows[-1]["institution"], "split": split})
    (root / "02_split").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "01_cohort" / "manifest.csv", index=False)
    pd.DataFrame(split_rows).to_csv(root / "02_split" / "split.csv", index=False)
    return root
