"""amtlib.errors: the one error type and the guard every amt command runs under (hand-written cases)."""

from __future__ import annotations

import errno
import pickle

import pytest

from amtlib.errors import EXIT_ERROR, EXIT_INTERRUPTED, AmtError, describe, run_guarded, type_problem


def test_an_amt_error_reads_file_problem_remedy_and_survives_a_worker() -> None:
    err = AmtError("/data/a.nii.gz", "truncated", "re-export it")
    assert str(err) == "/data/a.nii.gz: truncated; re-export it"
    assert str(AmtError(None, "no cases")) == "no cases" and str(AmtError("x", "bad")) == "x: bad"
    back = pickle.loads(pickle.dumps(err))  # raised in a worker process, it crosses back pickled
    assert type(back) is AmtError and (back.file, back.problem, back.remedy) == (err.file, err.problem, err.remedy)
    assert isinstance(err, ValueError)


def test_the_guard_turns_user_errors_into_one_line_and_an_exit_code(capsys) -> None:
    def fail(exc: BaseException):
        def fn(argv):
            raise exc
        return fn

    assert run_guarded("amt x", lambda argv: 0, []) == 0
    assert run_guarded("amt x", fail(AmtError("f.csv", "no column case_id", "add it")), []) == EXIT_ERROR
    assert capsys.readouterr().err == "amt x: error: f.csv: no column case_id; add it\n"
    full = OSError(errno.ENOSPC, "No space left on device", "/out/seg.dcm")
    assert run_guarded("amt x", fail(full), []) == EXIT_ERROR
    assert capsys.readouterr().err == ("amt x: error: /out/seg.dcm: No space left on device; free disk space and run again "
                                       "(--debug shows the traceback)\n")
    assert run_guarded("amt x", fail(KeyboardInterrupt()), []) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "amt x: interrupted\n"
    with pytest.raises(ZeroDivisionError):  # a bug is not a user error: it keeps its traceback
        run_guarded("amt x", fail(ZeroDivisionError()), [])
    assert run_guarded("amt x", fail(ValueError("x: bad")), [], debug=True) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.endswith("amt x: error: x: bad\n")


def test_describe_names_the_file_and_the_remedy_of_an_os_error() -> None:
    assert describe(PermissionError(errno.EACCES, "Permission denied", "/ro")) == \
        "/ro: Permission denied; choose a folder you can write to"
    assert describe(FileNotFoundError(errno.ENOENT, "No such file or directory", "/x")) == "/x: No such file or directory"


@pytest.mark.parametrize("value, default, ok", [
    (True, False, True), (1, False, False), (3, 2, True), (2.5, 2, False), (True, 2, False), ("a", 2, False),
    (2, 1.5, True), (None, "s", True), ([1, 2], [3], True), ([1, 2.5], [3], False), ([1.5], [0.5], True),
    (["a"], [0.5], False), ({"a": 1}, {}, True), ("x", None, True),
])
def test_type_problem_accepts_what_the_default_is(value, default, ok) -> None:
    problem = type_problem(value, default)
    assert (problem is None) == ok, problem
    if not ok:
        assert repr(value) in problem
