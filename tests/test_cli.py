"""amtlib.cli: dispatch of each subcommand to its module's ``cli_main``, the guard around it, ``--debug``,
``amt run --list`` and exit codes (help text is in tests/test_cli_help.py, bad input in tests/test_user_errors.py)."""

from __future__ import annotations

import importlib
import sys
import types

import pytest

from amtlib import cli, errors, pipeline


@pytest.fixture()
def fake(monkeypatch):
    """A subcommand ``fake`` whose cli_main records its argv and the debug flag it ran under."""
    module = types.ModuleType("amtlib_test_fake_cli")
    module.calls = []

    def cli_main(argv):
        module.calls.append((list(argv), errors.DEBUG))
        if argv and argv[0] == "fail":
            raise errors.AmtError("x.csv", "broken", "fix it")
        if argv and argv[0] == "bug":
            raise KeyError("a bug, not bad input")
        return 7 if argv else None

    module.cli_main = cli_main
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.DELEGATED, "fake", (module.__name__, "a test command"))
    monkeypatch.delenv("AMT_DEBUG", raising=False)
    return module


def test_every_listed_module_has_a_cli_main():
    for name, (module, helptext) in cli.DELEGATED.items():
        assert callable(getattr(importlib.import_module(module), "cli_main", None)), name
        assert helptext and not helptext.endswith("."), name


def test_a_subcommand_gets_the_rest_of_argv_and_its_return_code(fake):
    assert cli.main(["fake", "--x", "1"]) == 7
    assert cli.main(["fake"]) == 0  # cli_main returning None is success
    assert fake.calls == [(["--x", "1"], False), ([], False)]


def test_debug_is_taken_out_of_argv_set_for_the_call_and_restored(fake, capsys):
    assert cli.main(["--debug", "fake", "a"]) == 7
    assert cli.main(["fake", "a", "--debug"]) == 7
    assert fake.calls == [(["a"], True), (["a"], True)] and errors.DEBUG is False
    assert cli.main(["--debug", "fake", "fail"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("amt fake: error: x.csv: broken; fix it\n")


def test_bad_input_is_one_line_and_a_bug_keeps_its_traceback(fake, capsys):
    assert cli.main(["fake", "fail"]) == 2
    assert capsys.readouterr().err == "amt fake: error: x.csv: broken; fix it\n"
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["fake", "bug"])


def test_no_command_prints_the_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: amt") and all(name in out for name in ("run", *cli.DELEGATED))


def test_run_list_names_each_step_and_its_parameters_without_running(tmp_path, capsys):
    import nbformat

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    for name, params in (("00_make", 'run_dir = "x"\nvalue = 1'), ("01_use", 'run_dir = "x"\noffset = 0\nscale = 2')):
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell(params)
        cell.metadata["tags"] = ["parameters"]
        nb.cells = [cell]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, nbs / f"{name}.ipynb")
    assert cli.main(["run", "--list", "--notebooks", str(nbs), "--out", str(tmp_path / "run")]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{'00_make':14s} value", f"{'01_use':14s} offset, scale"]
    assert not (tmp_path / "run").exists()
    del nb.metadata["kernelspec"]  # as a notebook written by a script may come: named, not papermill's bare error
    nbformat.write(nb, nbs / "01_use.ipynb")
    assert cli.main(["run", "--list", "--notebooks", str(nbs)]) == 2
    assert capsys.readouterr().err == (f"amt run: error: {nbs / '01_use.ipynb'}: no kernel named in its metadata "
                                       "(metadata.kernelspec.name); open and save it in JupyterLab with the Python 3 "
                                       "kernel, or add the kernelspec\n")


def test_a_failed_step_is_exit_1_without_a_second_message(monkeypatch, capsys):
    def failing(**kwargs):
        raise pipeline.StepFailed("03_train failed (the runner printed why)")

    monkeypatch.setattr(pipeline, "run_pipeline", failing)
    assert cli.main(["run", "--config", "configs/smoke.yaml"]) == 1
    assert capsys.readouterr().err == ""
