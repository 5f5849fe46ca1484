"""DICOM test helpers: dciodvfy (Debian dicom3tools) found or skipped clearly, and an oblique test series."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from amtlib.dicom import dicomio

INSTALL_HINT = ("dciodvfy not found: install the Debian/Ubuntu package dicom3tools "
                "(`apt-get install dicom3tools`; .ci/run does this) to run the DICOM conformance checks")


def require_dciodvfy() -> str:
    """Path of dciodvfy, or skip the calling test saying how to install it."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip(INSTALL_HINT)
    return exe


def dciodvfy_errors(path: str | Path) -> list[str]:
    """The ``Error`` lines dciodvfy reports for one file (warnings are not counted)."""
    exe = require_dciodvfy()
    r = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    lines = (r.stdout + r.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


#: The test series' geometry: 30 degree in-plane rotation with the row direction flipped (so the slice
#: normal points to the feet), anisotropic spacing (z, y, x) in mm.
ROTATION_DEG = 30.0
SPACING = (3.0, 0.7, 0.9)
ORIGIN = (10.0, 20.0, 30.0)
SHAPE = (6, 20, 24)


def oblique_axes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row direction, column direction and slice normal (LPS) of the test series."""
    th = np.deg2rad(ROTATION_DEG)
    rot = np.array([[np.cos(th), -np.sin(th), 0.0], [np.sin(th), np.cos(th), 0.0], [0.0, 0.0, 1.0]])
    row, col = rot @ [-1.0, 0.0, 0.0], rot @ [0.0, 1.0, 0.0]
    return row, col, np.cross(row, col)


def pixel_to_lps(x: float, y: float, k: float) -> np.ndarray:
    """World (LPS mm) of pixel coordinates (column x, row y) on slice k, straight from the test design."""
    row, col, normal = oblique_axes()
    dz, dy, dx = SPACING
    return np.asarray(ORIGIN) + x * dx * row + y * dy * col + k * dz * normal


def write_oblique_series(folder: Path, seed: int = 1, patient_id: str = "P1") -> Path:
    """A small CT series on the oblique, flipped, anisotropic grid above (written, then re-oriented)."""
    dicomio.write_ct_series(np.zeros(SHAPE, np.float32), SPACING, folder, {"PatientID": patient_id, "PatientSex": "F"}, seed)
    row, col, _ = oblique_axes()
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        k = int(ds.InstanceNumber) - 1
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in np.r_[row, col]]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pixel_to_lps(0, 0, k)]
        ds.save_as(f)
    return folder


def tilted_ball_series(folder: Path, shear_yx_per_slice: tuple[float, float], seed: str) -> tuple[np.ndarray, np.ndarray]:
    """A series of a ball at world (10, -20, z0 + 10) mm drawn on sheared slices (a GE/Philips tilted
    gantry: axial orientation, positions drift in y). Returns the ball centre (LPS) and volume."""
    nz, ny, nx, dz, d = 9, 40, 40, 2.5, 1.0
    centre = np.array([10.0, -20.0, 10.0])
    origin0 = np.array([-20.0, -40.0, 0.0])
    hu = np.full((nz, ny, nx), -1000.0)
    for k in range(nz):
        pos = origin0 + np.array([shear_yx_per_slice[1] * k, shear_yx_per_slice[0] * k, dz * k])
        x = pos[0] + np.arange(nx) * d
        y = pos[1] + np.arange(ny) * d
        r2 = (x[None, :] - centre[0]) ** 2 + (y[:, None] - centre[1]) ** 2 + (pos[2] - centre[2]) ** 2
        hu[k][r2 <= 6.0 ** 2] = 100.0
    paths = dicomio.write_ct_series(hu, (dz, d, d), folder, {"PatientID": "T", "GantryDetectorTilt": 15}, seed,
                                    origin=tuple(origin0))
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        pos = origin0 + np.array([shear_yx_per_slice[1] * k, shear_yx_per_slice[0] * k, dz * k])
        ds.ImagePositionPatient = [f"{v:.4f}" for v in pos]
        ds.save_as(path)
    return centre, hu
