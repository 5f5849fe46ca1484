"""Issue 24: every error a user can meet is an AmtError (file, problem, remedy) and prints as one line.

The domain errors of the modules (MaskError, NiftiError, ...) are AmtError subclasses that keep their
reason codes and cross a process pool whole. The CLI table (below) runs real ``amt`` invocations with
bad input and checks the one line the guard prints (amtlib.errors.run_guarded). The guard itself is
tested in test_errors.py; fault scenarios with real runs in test_faults.py.
"""

from __future__ import annotations

import pickle

import pytest

from amtlib import fetch, io, manifest, masks, split
from amtlib.dicom import annotations, dicomio, export
from amtlib.errors import AmtError, DomainError

#: (class, its default reason code, a reason code it is raised with)
DOMAIN_ERRORS = [
    (masks.MaskError, masks.INVALID, masks.OFF_GRID),
    (io.NiftiError, "unreadable", "not_3d"),
    (dicomio.DicomSeriesError, "inconsistent_series", "not_found"),
    (annotations.AnnotationError, annotations.INVALID, annotations.OFF_GRID),
    (export.ExportError, "", ""),
    (split.LeakageError, "", ""),
    (fetch.FetchError, "", ""),
    (manifest.ManifestError, "", ""),
]


@pytest.mark.parametrize("cls, default, other", DOMAIN_ERRORS)
def test_each_domain_error_is_an_amt_error_with_its_reason_that_survives_pickling(cls, default, other) -> None:
    assert issubclass(cls, AmtError) and issubclass(cls, ValueError)  # `except ValueError` callers still catch it
    err = cls("/data/C1.nii.gz", "truncated", "copy it again", reason=other)
    assert (err.file, err.problem, err.remedy, err.reason) == ("/data/C1.nii.gz", "truncated", "copy it again", other)
    assert str(err) == "/data/C1.nii.gz: truncated; copy it again"
    assert cls("x", "bad").reason == default  # the code a caller gets when the raise site names none
    back = pickle.loads(pickle.dumps(err))  # raised in a worker (cohort, evaluate, export pools), it comes back whole
    assert type(back) is cls
    assert (back.file, back.problem, back.remedy, back.reason, str(back)) == (err.file, err.problem, err.remedy, other, str(err))
    with pytest.raises(TypeError):
        cls("C1: file, problem and remedy run together")  # the form this type replaces


def test_fetch_error_is_still_a_runtime_error() -> None:
    assert issubclass(fetch.FetchError, RuntimeError)  # what it was before it became an AmtError


def test_a_domain_error_raised_by_its_module_names_the_file_and_keeps_its_code(tmp_path) -> None:
    bad = tmp_path / "C1.nii.gz"
    bad.write_bytes(b"not a nifti file" * 4)
    raised = []
    for call in (lambda: io.load_nifti(tmp_path / "absent.nii.gz"), lambda: io.load_nifti(bad),
                 lambda: masks.read_mask_file(bad), lambda: dicomio.read_series(tmp_path / "no_series"),
                 lambda: annotations.read_annotation(bad, {})):
        with pytest.raises(DomainError) as info:
            call()
        raised.append(info.value)
    codes = [(type(e).__name__, e.reason) for e in raised]
    assert codes == [("NiftiError", "not_found"), ("NiftiError", "unreadable"), ("MaskError", masks.INVALID),
                     ("DicomSeriesError", "not_found"), ("AnnotationError", annotations.INVALID)]
    for e in raised:
        back = pickle.loads(pickle.dumps(e))
        assert e.file.startswith(str(tmp_path)) and e.problem and e.remedy, e
        assert (type(back), back.reason, str(back)) == (type(e), e.reason, str(e))
        assert str(e) == f"{e.file}: {e.problem}; {e.remedy}"


# --------------------------------------------------------------------------------------------------
# the CLI table: real invocations with bad input, each one line from an AmtError


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    """Tiny files for the table: masks, a damaged NIfTI, a tiny model, a run folder, a broken YAML."""
    import nibabel as nib
    import numpy as np

    from amtlib.segmentation.infer import MODEL_FORMAT, write_torch_file
    from amtlib.segmentation.model import ModelConfig, UNet3D

    t = tmp_path_factory.mktemp("bad")
    f = {"t": t}
    mask = np.zeros((4, 8, 8), np.uint8)
    mask[1:3, 2:5, 2:5] = 1
    for name, data in (("ref", mask), ("pred", mask), ("two", mask * 2), ("shape", np.zeros((5, 8, 8), np.uint8))):
        (t / name).mkdir()
        io.save_nifti(data, np.eye(4), t / name / "C1.nii.gz")
    (t / "damaged").mkdir()
    (t / "damaged" / "C1.nii.gz").write_bytes(b"not a nifti file" * 4)
    (t / "ref4d").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 2), np.uint8), np.eye(4)), str(t / "ref4d" / "C1.nii.gz"))
    io.save_nifti(np.zeros((4, 8, 8), np.float32), np.eye(4), t / "ct.nii.gz")
    (t / "a_file").write_text("a file where a folder belongs\n")
    (t / "binary.csv").write_bytes(b"\xff\xfe\x00\x81 not text \x00")
    (t / "broken.yaml").write_text("train_iterations: [1, 2\n")
    (t / "damaged.pt").write_bytes(b"\x80garbage")
    config = ModelConfig(base_width=1, blocks_per_level=1, levels=2)
    write_torch_file(t / "model.pt", {
        "format": MODEL_FORMAT, "model_config": config.to_dict(), "model": UNet3D(config).state_dict(),
        "norm": {"hu_min": -1000.0, "hu_max": 1000.0}, "spacing_mm": None, "patch": [4, 8, 8], "sw_overlap": 0.25,
        "threshold": 0.5, "iteration": 1, "tuning_dice": 0.5})
    run = t / "run"  # steps 01-03 as files only: the manifest names an image that is not there
    for sub in ("01_cohort", "02_split", "03_train/predictions"):
        (run / sub).mkdir(parents=True)
    (run / "01_cohort" / "manifest.csv").write_text(
        "case_id,patient_id,image_path,mask_path,series_uid,institution\nC1,P1,images/C1.nii.gz,masks/C1.nii.gz,1.2.3,A\n")
    (run / "02_split" / "split.csv").write_text("case_id,patient_id,institution,split\nC1,P1,A,external_test\n")
    io.save_nifti(mask, np.eye(4), run / "03_train" / "predictions" / "C1.nii.gz")
    (run / "run.json").write_text('{"config": {}, "steps": {}}')
    (t / "run_bad_json").mkdir()
    (t / "run_bad_json" / "run.json").write_text("{not json")
    (t / "run_bad_csv" / "01_cohort").mkdir(parents=True)
    (t / "run_bad_csv" / "run.json").write_text('{"config": {}, "steps": {}}')
    (t / "run_bad_csv" / "01_cohort" / "manifest.csv").write_bytes(b"\xff\xfe\x00\x81 not text \x00")
    return f


def _ev(*extra: str):
    return lambda t: ["evaluate", "--pred", str(t / "pred"), "--ref", str(t / "ref"), "--out", str(t / "o_ev"), *extra]


def _pr(*extra: str, model: str = "model.pt", input: str = "ct.nii.gz"):
    return lambda t: ["predict", "--model", str(t / model), "--input", str(t / input), "--out", str(t / "o_pr"), *extra]


def _no_cuda() -> bool:
    import torch

    return not torch.cuda.is_available()



#: id -> (argv from the tmp folder, what the line must name). One row at least per subcommand.
TABLE = [
    ("evaluate: prediction folder missing", lambda t: ["evaluate", "--pred", str(t / "absent"), "--ref", str(t / "ref"),
                                                      "--out", str(t / "o_ev")], "absent"),
    ("evaluate: damaged prediction", lambda t: ["evaluate", "--pred", str(t / "damaged"), "--ref", str(t / "ref"),
                                               "--out", str(t / "o_ev")], "damaged/C1.nii.gz"),
    ("evaluate: prediction not 0/1", lambda t: ["evaluate", "--pred", str(t / "two"), "--ref", str(t / "ref"),
                                               "--out", str(t / "o_ev")], "two/C1.nii.gz"),
    ("evaluate: prediction on another grid", lambda t: ["evaluate", "--pred", str(t / "shape"), "--ref", str(t / "ref"),
                                                       "--out", str(t / "o_ev")], "case C1"),
    ("evaluate: reference not 3D", lambda t: ["evaluate", "--pred", str(t / "pred"), "--ref", str(t / "ref4d"),
                                             "--out", str(t / "o_ev")], "ref4d/C1.nii.gz"),
    ("evaluate: unknown metric", _ev("--metrics", "foo"), "--metrics"),
    ("evaluate: negative --min-lesion-voxels", _ev("--min-lesion-voxels", "-3"), "--min-lesion-voxels"),
    ("evaluate: negative --seed", _ev("--seed", "-1"), "--seed"),
    ("evaluate: --out is a file", lambda t: ["evaluate", "--pred", str(t / "pred"), "--ref", str(t / "ref"),
                                            "--out", str(t / "a_file")], "a_file"),
    ("evaluate: --clinical missing", _ev("--clinical", "absent.csv"), "absent.csv"),
    ("evaluate: --clinical not CSV", lambda t: _ev("--clinical", str(t / "binary.csv"))(t), "binary.csv"),
    ("predict: model missing", _pr(model="absent.pt"), "absent.pt"),
    ("predict: model damaged", _pr(model="damaged.pt"), "damaged.pt"),
    ("predict: input missing", _pr(input="absent.nii.gz"), "absent.nii.gz"),
    ("predict: --threshold out of range", _pr("--threshold", "2"), "--threshold"),
    ("predict: --out is a file", lambda t: ["predict", "--model", str(t / "model.pt"), "--input", str(t / "ct.nii.gz"),
                                           "--out", str(t / "a_file")], "a_file"),
    ("predict: PACS port not a number", lambda t: ["predict", "--model", str(t / "model.pt"), "--input", "dimse://PACS@pacs:abc",
                                                  "--out", str(t / "o_pr")], "dimse://pacs"),
    pytest.param("predict: --device cuda without CUDA", _pr("--device", "cuda"), "device 'cuda'",
                 marks=pytest.mark.skipif(not _no_cuda(), reason="this machine has CUDA")),
    ("export: run folder missing", lambda t: ["export", "--run", str(t / "absent"), "--out", str(t / "o_ex")], "absent"),
    ("export: --algorithm without --pred", lambda t: ["export", "--run", str(t / "run"), "--algorithm", "X",
                                                     "--out", str(t / "o_ex")], "--algorithm"),
    ("export: --algorithm not a DICOM LO", lambda t: ["export", "--run", str(t / "run"), "--pred", str(t / "pred"),
                                                     "--algorithm", "a\\b", "--out", str(t / "o_ex")], "algorithm name"),
    ("export: unknown --split", lambda t: ["export", "--run", str(t / "run"), "--split", "nosuch", "--out", str(t / "o_ex")],
     "'nosuch'"),
    ("export: --out is a file", lambda t: ["export", "--run", str(t / "run"), "--out", str(t / "a_file")], "a_file"),
    ("export-nnunet: run folder missing", lambda t: ["export-nnunet", "--run", str(t / "absent"), "--out", str(t / "o_nn")],
     "absent/01_cohort/manifest.csv"),
    ("export-nnunet: --dataset-id out of range", lambda t: ["export-nnunet", "--run", str(t / "run"), "--out", str(t / "o_nn"),
                                                           "--dataset-id", "0"], "--dataset-id"),
    ("export-nnunet: image of the manifest missing", lambda t: ["export-nnunet", "--run", str(t / "run"),
                                                               "--out", str(t / "o_nn")], "images/C1.nii.gz"),
    ("report: not a run folder", lambda t: ["report", "--run", str(t / "ref")], "ref/run.json"),
    ("report: run.json not JSON", lambda t: ["report", "--run", str(t / "run_bad_json")], "run_bad_json/run.json"),
    ("report: manifest not CSV", lambda t: ["report", "--run", str(t / "run_bad_csv"), "--out", str(t / "o_re")],
     "run_bad_csv/01_cohort/manifest.csv"),
    ("report: --out is a file", lambda t: ["report", "--run", str(t / "run"), "--out", str(t / "a_file")], "a_file"),
    ("train: run folder missing", lambda t: ["train", "--run-dir", str(t / "absent")], "absent"),
    ("train: --config missing", lambda t: ["train", "--run-dir", str(t / "run"), "--config", str(t / "absent.yaml")],
     "absent.yaml"),
    ("train: --config not YAML", lambda t: ["train", "--run-dir", str(t / "run"), "--config", str(t / "broken.yaml")],
     "broken.yaml"),
    ("train: --set of the wrong type", lambda t: ["train", "--run-dir", str(t / "run"), "--set", "train_iterations=abc"],
     "train_iterations"),
    ("train: split without training cases", lambda t: ["train", "--run-dir", str(t / "run")], "02_split/split.csv"),
    ("model-card: model missing", lambda t: ["model-card", str(t / "absent.pt")], "absent.pt"),
    ("model-card: model damaged", lambda t: ["model-card", str(t / "damaged.pt")], "damaged.pt"),
    ("fetch: --cache-dir is a file", lambda t: ["fetch", "--cache-dir", str(t / "a_file")], "a_file"),
    ("run: --config missing", lambda t: ["run", "--config", str(t / "absent.yaml"), "--out", str(t / "o_run")], "absent.yaml"),
    ("run: --config not YAML", lambda t: ["run", "--config", str(t / "broken.yaml"), "--out", str(t / "o_run")], "broken.yaml"),
    ("run: -p key no notebook declares", lambda t: ["run", "-p", "train_iterationz=3", "--out", str(t / "o_run")],
     "train_iterationz"),
    ("run: -p value of the wrong type", lambda t: ["run", "-p", "train_iterations=abc", "--out", str(t / "o_run")],
     "train_iterations"),
    ("run: unknown --only step", lambda t: ["run", "--only", "99", "--out", str(t / "o_run")], "'99'"),
    ("run: --out is a file", lambda t: ["run", "--out", str(t / "a_file")], "a_file"),
    ("run: --notebooks without notebooks", lambda t: ["run", "--notebooks", str(t / "ref"), "--out", str(t / "o_run")], "/ref: "),
    ("synth: --scale out of range", lambda t: ["synth", "--out", str(t / "o_sy"), "--scale", "2",
                                              "--backgrounds", "procedural"], "--scale"),
    ("synth: --out is a file", lambda t: ["synth", "--out", str(t / "a_file"), "--backgrounds", "procedural"], "a_file"),
    ("manifest: file missing", lambda t: ["manifest", "validate", str(t / "absent.csv")], "absent.csv"),
    ("manifest: not CSV", lambda t: ["manifest", "validate", str(t / "binary.csv")], "binary.csv"),
]


def _row_id(row) -> str:
    return (row.values if hasattr(row, "values") else row)[0]


@pytest.mark.parametrize("name, argv, names", TABLE, ids=[_row_id(r) for r in TABLE])
def test_bad_input_is_one_line_from_an_amt_error(bad_inputs, capsys, monkeypatch, name, argv, names) -> None:
    from amtlib import cli

    t = bad_inputs["t"]
    monkeypatch.chdir(t)  # relative names (absent.csv) resolve in the tmp folder; nothing lands in the checkout
    monkeypatch.delenv("AMT_DEBUG", raising=False)
    command = name.split(":")[0]
    rc = cli.main(argv(t))
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and err.endswith("\n"), err  # exactly one line
    line = lines[0]
    assert line.startswith(f"amt {command}: "), line
    assert names in line, line  # it names the file or the option
    where = line.index(names)
    assert "; " in line[where:] and line.rsplit("; ", 1)[1].strip(), line  # then the problem, then a remedy
    assert "Traceback" not in err
    assert "(--debug shows the traceback)" not in line  # an AmtError, not a stray ValueError/OSError


def test_the_guard_prints_a_multi_line_message_as_one_line(capsys) -> None:
    import yaml

    from amtlib.errors import one_line, run_guarded

    def fail(_argv):
        raise AmtError("m.csv", "3 problem(s)\n  line 2: no case_id\n  line 3: bad sha256", "fix the rows")

    assert run_guarded("amt x", fail, []) == 2
    assert capsys.readouterr().err == "amt x: error: m.csv: 3 problem(s) | line 2: no case_id | line 3: bad sha256; fix the rows\n"
    with pytest.raises(yaml.YAMLError) as info:
        yaml.safe_load("a: [1, 2\n")
    assert "\n" in str(info.value)
    assert one_line(info.value) == "line 2, column 1: expected ',' or ']', but got '<stream end>'"
