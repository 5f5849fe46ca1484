"""DICOM test helpers: dciodvfy (Debian dicom3tools) found or skipped clearly, and an oblique test series."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from amtlib import dicomio

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
