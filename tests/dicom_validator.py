"""dciodvfy (Debian package dicom3tools) for the DICOM conformance tests: find it or skip clearly."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

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
