"""Every DICOM file the package writes passes dciodvfy with no errors (issue 16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom

from amtlib.dicom import dicomio
from amtlib.phantom import synthesize_cohort
from dicom_fixtures import dciodvfy_errors, require_dciodvfy


def test_validator_reports_errors_of_a_nonconformant_file(tmp_path: Path) -> None:
    require_dciodvfy()
    dicomio.write_ct_series(np.zeros((2, 4, 5), np.float32), (2.0, 1.0, 1.0), tmp_path / "s", {}, 0)
    ds = pydicom.dcmread(tmp_path / "s" / "IM00001.dcm")
    del ds.PatientBirthDate
    ds.save_as(tmp_path / "bad.dcm")
    assert any("PatientBirthDate" in e for e in dciodvfy_errors(tmp_path / "bad.dcm"))


def test_written_ct_series_is_conformant(tmp_path: Path) -> None:
    require_dciodvfy()
    files = dicomio.write_ct_series(np.zeros((2, 4, 5), np.float32), (2.0, 0.7, 0.8), tmp_path / "s", {"PatientID": "P1"}, 0)
    for f in files:
        assert dciodvfy_errors(f) == [], f


def test_demo_cohort_files_are_conformant(tmp_path: Path) -> None:
    require_dciodvfy()
    synthesize_cohort(tmp_path, scale=0.02, seed=0, backgrounds="procedural", images=False)
    syn = pd.read_csv(tmp_path / "synthesis.csv", keep_default_na=False)
    intact = syn[syn["defect"] == ""]  # the deliberately damaged series are broken by design
    assert len(intact) >= 10
    for folder in intact["series_folder"]:
        for f in sorted((tmp_path / folder).iterdir())[:2]:
            assert dciodvfy_errors(f) == [], f
