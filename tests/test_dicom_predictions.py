"""``amt evaluate`` on another model's DICOM SEG / RTSTRUCT predictions (amtlib.dicom.predictions): the
scores equal those of the same masks given as NIfTI; files are paired by the series they reference,
whatever their names; a DICOM folder with the manifest works like sources.json; bad input is named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from amtlib.dicom import predictions as dp
from amtlib.dicom import dicomio, export
from amtlib.cli import main as amt_main
from amtlib.io import load_nifti, save_nifti
from test_export import _fake_run


@pytest.fixture(scope="module")
def dicom_preds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run's three predictions as NIfTI and as SEG + RTSTRUCT (exported, then renamed and flattened the
    way a vendor's tool might leave them), references that differ from them, and the cohort's sources.json."""
    base = tmp_path_factory.mktemp("dp")
    run, preds = _fake_run(base)
    export.export_run(run, split=None)
    flat = base / "vendor"
    flat.mkdir()
    for case in preds:
        shutil.copy(run / "09_export" / case / "seg.dcm", flat / f"AI_{case.lower()}_SEG")
        shutil.copy(run / "09_export" / case / "rtstruct.dcm", flat / f"RS.{case}.dcm")
    (flat / "notes.txt").write_text("exported by the AI box")
    refs = base / "refs"
    sources = {}
    for i, case in enumerate(preds):
        folder = run / "00_data" / "raw" / "dicom" / case / "s1"
        _, geometry = dicomio.read_series(folder)
        ref = np.roll(preds[case], 1 + i, axis=1)  # the reference differs from the prediction: Dice < 1
        ref[0] = 0
        save_nifti(ref, geometry["affine"], refs / f"{case}.nii.gz")
        sources[case] = {"series_uid": geometry["series_uid"], "files": list(geometry["files"]), "sop_uids": list(geometry["sop_uids"])}
    (base / "sources.json").write_text(json.dumps(sources))
    return {"run": run, "flat": flat, "refs": refs, "sources": base / "sources.json", "base": base}


def _per_case(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "per_case.csv")


@pytest.mark.parametrize("kind", ["seg", "rtstruct"])
def test_dicom_predictions_score_as_the_same_masks_in_nifti(dicom_preds, kind: str, capsys: pytest.CaptureFixture) -> None:
    d = dicom_preds
    nii_out, dcm_out = d["base"] / f"nii_{kind}", d["base"] / f"dcm_{kind}"
    assert amt_main(["evaluate", "--pred", str(d["run"] / "03_train" / "predictions"), "--ref", str(d["refs"]),
                     "--out", str(nii_out), "--bootstrap", "20", "--no-progress"]) == 0
    assert amt_main(["evaluate", "--pred", str(d["flat"]), "--ref", str(d["refs"]), "--sources", str(d["sources"]),
                     "--dicom-kind", kind, "--out", str(dcm_out), "--bootstrap", "20", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "1 file(s) under" in err and "notes.txt" in err  # the non-DICOM file is named, not silently read
    nii, dcm = _per_case(nii_out), _per_case(dcm_out)
    assert 0.2 < nii["dice"].min() and nii["dice"].max() < 1.0  # a real comparison, not identity
    pd.testing.assert_frame_equal(dcm, nii)
    pd.testing.assert_frame_equal(pd.read_csv(dcm_out / "lesion_counts.csv"), pd.read_csv(nii_out / "lesion_counts.csv"))
    summary = json.loads((dcm_out / "summary.json").read_text())
    assert summary["dicom_kind"] == kind and summary["sources"] == str(d["sources"].resolve())


def test_a_dicom_folder_with_the_manifest_works_like_sources_json(dicom_preds) -> None:
    d = dicom_preds
    manifest = d["run"] / "01_cohort" / "manifest.csv"
    by_folder = dp.load_sources(d["run"] / "00_data" / "raw" / "dicom", pd.read_csv(manifest, dtype=str))
    by_json = dp.load_sources(d["sources"])
    assert {c: (v["series_uid"], sorted(v["files"])) for c, v in by_folder.items()} == \
           {c: (v["series_uid"], sorted(v["files"])) for c, v in by_json.items()}
    table = pd.read_csv(manifest).assign(manufacturer="Siemens", histology="thymoma")  # as a cohort's manifest has
    table.to_csv(d["base"] / "manifest.csv", index=False)
    out = d["base"] / "by_folder"
    assert amt_main(["evaluate", "--pred", str(d["flat"]), "--ref", str(d["refs"]), "--sources",
                     str(d["run"] / "00_data" / "raw" / "dicom"), "--clinical", str(d["base"] / "manifest.csv"),
                     "--dicom-kind", "seg", "--out", str(out), "--bootstrap", "20", "--no-progress"]) == 0
    assert amt_main(["evaluate", "--pred", str(d["flat"]), "--ref", str(d["refs"]), "--sources", str(d["sources"]),
                     "--dicom-kind", "seg", "--out", str(d["base"] / "by_json"), "--bootstrap", "20", "--no-progress"]) == 0
    cols = ["case_id", "dice", "fp_voxels", "n_pred_lesions"]
    pd.testing.assert_frame_equal(_per_case(out)[cols], _per_case(d["base"] / "by_json")[cols])
    assert _per_case(out)["manufacturer"].eq("Siemens").all()


def test_read_prediction_is_the_exported_mask(dicom_preds) -> None:
    d = dicom_preds
    files = dp.load_sources(d["sources"])["P3"]["files"]
    mask, affine = dp.read_prediction(d["flat"] / "AI_p3_SEG", files)
    expected, _, ref_affine = load_nifti(d["run"] / "03_train" / "predictions" / "P3.nii.gz")
    np.testing.assert_array_equal(mask, expected.astype(bool))
    np.testing.assert_allclose(affine, ref_affine, atol=1e-6)
    named, _ = dp.read_prediction(d["flat"] / "RS.P3.dcm", files, export.SEGMENT_LABEL)
    np.testing.assert_array_equal(named, expected.astype(bool))


def test_bad_dicom_prediction_input_is_named(dicom_preds, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    d = dicom_preds
    common = ["--ref", str(d["refs"]), "--bootstrap", "20", "--no-progress"]
    # both kinds for one case: never guess which one is the prediction
    assert amt_main(["evaluate", "--pred", str(d["flat"]), "--sources", str(d["sources"]), "--out", str(tmp_path / "a"), *common]) == 2
    err = capsys.readouterr().err
    assert "case P1 has 2 predictions" in err and "RS.P1.dcm" in err and "--dicom-kind seg|rtstruct" in err
    # a folder of NIfTI files given as DICOM predictions
    assert amt_main(["evaluate", "--pred", str(d["run"] / "03_train" / "predictions"), "--sources", str(d["sources"]),
                     "--out", str(tmp_path / "b"), *common]) == 2
    assert "no DICOM SEG/RTSTRUCT file references the CT series of a reference case" in capsys.readouterr().err
    # DICOM options without --sources, and --label with DICOM predictions
    assert amt_main(["evaluate", "--pred", str(d["flat"]), "--segment", "x", "--out", str(tmp_path / "c"), *common]) == 2
    assert "apply to DICOM predictions only" in capsys.readouterr().err
    assert amt_main(["evaluate", "--pred", str(d["flat"]), "--sources", str(d["sources"]), "--label", "2",
                     "--out", str(tmp_path / "d"), *common]) == 2
    assert "use --segment NAME" in capsys.readouterr().err
    # a DICOM folder without the case table, a sources file that is not sources.json
    assert amt_main(["evaluate", "--pred", str(d["flat"]), "--sources", str(d["run"] / "00_data" / "raw" / "dicom"),
                     "--out", str(tmp_path / "e"), *common]) == 2
    assert "a DICOM folder needs the case of each series" in capsys.readouterr().err
    assert amt_main(["evaluate", "--pred", str(d["flat"]), "--sources", str(d["flat"] / "notes.txt"),
                     "--out", str(tmp_path / "f"), *common]) == 2
    assert "not a sources.json" in capsys.readouterr().err
    # a segment that is not there
    assert amt_main(["evaluate", "--pred", str(d["flat"]), "--sources", str(d["sources"]), "--dicom-kind", "seg",
                     "--segment", "liver", "--out", str(tmp_path / "g"), *common]) == 2
    assert "no segment matching 'liver'" in capsys.readouterr().err
    # a prediction of a series no reference case has is left out with a warning; the others are scored
    refs2 = tmp_path / "refs2"
    refs2.mkdir()
    for case in ("P1", "P2"):
        shutil.copy(d["refs"] / f"{case}.nii.gz", refs2 / f"{case}.nii.gz")
    assert amt_main(["evaluate", "--pred", str(d["flat"]), "--ref", str(refs2), "--sources", str(d["sources"]),
                     "--dicom-kind", "seg", "--out", str(tmp_path / "h"), "--bootstrap", "20", "--no-progress"]) == 0
    assert "1 prediction(s) reference a series of no reference case" in capsys.readouterr().err
    assert _per_case(tmp_path / "h")["case_id"].tolist() == ["P1", "P2"]


def test_a_bad_segment_in_worker_processes_is_one_line(dicom_preds, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    d = dicom_preds
    assert amt_main(["evaluate", "--pred", str(d["flat"]), "--ref", str(d["refs"]), "--sources", str(d["sources"]),
                     "--dicom-kind", "seg", "--segment", "liver", "--workers", "2", "--out", str(tmp_path / "w"),
                     "--bootstrap", "20", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no segment matching 'liver'" in err and "BrokenProcessPool" not in err and "Traceback" not in err
