"""amtlib.progress: durations and lines by hand, when a plain line is emitted, the tqdm/plain choice, the
progress file and the relay's edge cases.

tests/test_newcomer.py already checks two format_line cases, the throttle with a resumed ``initial``,
track's stdout/file lines and a relay from a child process; this file tests the rest of the contract.
"""

from __future__ import annotations

import io
import os
import random

import numpy as np
import pytest

from amtlib import progress
from amtlib.progress import PROGRESS_FILE_ENV, Progress, format_duration, format_line, relay, track


class _Clock:
    """A hand-driven clock for :class:`Progress`."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (59.4, "59s"), (59.6, "1m00s"), (75, "1m15s"), (3599.4, "59m59s"),
                                           (3600, "1h00m"), (3725, "1h02m"), (90061, "25h01m")])
def test_format_duration_by_hand(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_format_duration_of_an_unknown_time_is_a_question_mark(bad):
    assert format_duration(bad) == "?"


def test_format_line_rate_precision_eta_and_postfix():
    # rate under 10/s has two decimals, from 10/s one; ETA = (100 - 40) / 12.5 = 4.8 s -> 5s
    assert format_line("t", 40, 100, 3.2, 12.5, "case", "loss 0.5") == "t: 40/100 (40%), 12.5 case/s, ETA 5s, loss 0.5"
    assert format_line("t", 1, 3, 1.0, 9.999) == "t: 1/3 (33%), 10.00 it/s, ETA 0s"
    assert format_line("t", 10, 100, 1.0, 10.0) == "t: 10/100 (10%), 10.0 it/s, ETA 9s"
    # no rate yet: neither rate nor ETA; unknown total: count and rate, no percentage or ETA
    assert format_line("t", 0, 8, 0.0, 0.0) == "t: 0/8 (0%)"
    assert format_line("t", 5, None, 2.0, 2.5, postfix="dice 0.4") == "t: 5, 2.50 it/s, dice 0.4"
    # finished (or over): elapsed time instead of an ETA
    assert format_line("t", 9, 8, 125.0, 2.0) == "t: 9/8 (112%), 2.00 it/s, done in 2m05s"


def test_no_intermediate_line_at_completion_only_the_final_one():
    clock, lines = _Clock(), []
    p = Progress(3, "x", every_s=0.0, emit=lines.append, clock=clock)
    for _ in range(3):
        clock.t += 2.0
        p.update()
    assert lines == ["x: 0/3 (0%)", "x: 1/3 (33%), 0.50 it/s, ETA 4s", "x: 2/3 (67%), 0.50 it/s, ETA 2s"]
    p.close()
    assert lines[-1] == "x: 3/3 (100%), 0.50 it/s, done in 6s" and len(lines) == 4


def test_unknown_total_prints_every_interval():
    clock, lines = _Clock(), []
    p = Progress(None, "scan", unit="file", every_s=5.0, emit=lines.append, clock=clock)
    for _ in range(12):  # one item a second: lines at t = +5 and +10
        clock.t += 1.0
        p.update()
    p.close()
    assert lines == ["scan: 0", "scan: 5, 1.00 file/s", "scan: 10, 1.00 file/s", "scan: 12, 1.00 file/s"]


def test_postfix_names_use_spaces_and_update_after_close_is_ignored():
    clock, lines = _Clock(), []
    p = Progress(10, "train", every_s=1.0, emit=lines.append, clock=clock)
    clock.t += 1.0
    p.update(4, train_loss="0.612", tuning_dice="0.412")
    assert lines[-1] == "train: 4/10 (40%), 4.00 it/s, ETA 2s, train loss 0.612, tuning dice 0.412"
    p.close()
    clock.t += 5.0
    p.update(3)
    p.close()
    assert p.done == 4 and len(lines) == 3


def test_disabled_progress_emits_nothing_and_counts_nothing():
    lines = []
    p = Progress(5, "x", enabled=False, every_s=0.0, emit=lines.append)
    p.update(2)
    p.close()
    assert lines == [] and p.done == 0


def test_rate_is_unknown_before_any_item_or_time():
    clock = _Clock()
    p = Progress(10, "x", initial=3, emit=lambda s: None, clock=clock)
    assert p.rate is None
    clock.t += 2.0
    assert p.rate is None  # time passed, nothing done here
    p.update(1)
    assert p.rate == pytest.approx(0.5)


class _Stderr(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_bar_only_in_a_terminal_without_a_progress_file(monkeypatch, tmp_path):
    monkeypatch.delenv(PROGRESS_FILE_ENV, raising=False)
    monkeypatch.setattr(progress.sys, "stderr", _Stderr(True))
    assert progress._use_bar()
    monkeypatch.setattr(progress.sys, "stderr", _Stderr(False))
    assert not progress._use_bar()
    monkeypatch.setattr(progress.sys, "stderr", _Stderr(True))
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(tmp_path / "p.log"))
    assert not progress._use_bar()  # a notebook run by ``amt run``: plain lines to the file
    monkeypatch.setattr(progress.sys, "stderr", object())  # no isatty at all
    assert not progress._use_bar()


def test_tqdm_bar_still_appends_the_final_line_to_the_progress_file(monkeypatch, tmp_path, capsys):
    log = tmp_path / "p.log"
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(log))
    clock = _Clock()
    p = Progress(4, "predict", unit="case", bar=True, clock=clock)
    clock.t += 2.0
    p.update(4)
    p.close()
    out = capsys.readouterr()
    assert out.out == ""  # the bar writes to stderr, not plain lines to stdout
    assert log.read_text() == "predict: 4/4 (100%), 2.00 case/s, done in 2s\n"


def test_an_unwritable_progress_file_never_fails_the_run(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(tmp_path))  # a folder: open() raises IsADirectoryError
    assert list(track(range(2), desc="x")) == [0, 1]
    assert capsys.readouterr().out.splitlines()[0] == "x: 0/2 (0%)"


def test_track_without_a_length_has_an_unknown_total_and_closes_on_break():
    lines = []
    gen = track((i for i in range(10)), desc="g", every_s=1e9, emit=lines.append)
    assert next(gen) == 0 and next(gen) == 1
    gen.close()  # the consumer stopped early: the final line still comes
    assert lines == ["g: 0", lines[1]] and lines[1].startswith("g: 1")
    lines.clear()
    list(track([1, 2, 3], total=6, desc="t", emit=lines.append))
    assert lines[0] == "t: 0/6 (0%)"


def test_progress_touches_no_random_generator(monkeypatch):
    monkeypatch.delenv(PROGRESS_FILE_ENV, raising=False)
    py_state, np_state = random.getstate(), np.random.get_state()
    for bar in (True, False):
        with Progress(3, "x", bar=bar, every_s=0.0, emit=None if bar else (lambda s: None)) as p:
            for _ in range(3):
                p.update(1, loss=1)
    assert random.getstate() == py_state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state))


def test_relay_truncates_skips_blank_and_partial_lines_and_restores_the_variable(monkeypatch, tmp_path):
    path = tmp_path / "sub" / "p.log"
    path.parent.mkdir()
    path.write_text("stale line from a previous run\n")
    monkeypatch.setenv(PROGRESS_FILE_ENV, "outer.log")
    said: list[str] = []
    with relay(path, said.append, prefix="> ", poll_s=60.0) as p:
        assert os.environ[PROGRESS_FILE_ENV] == str(p) == str(path)
        with open(path, "a") as f:
            f.write("one\n\n   \ntwo\nthree without newline")
    assert said == ["> one", "> two"]
    assert os.environ[PROGRESS_FILE_ENV] == "outer.log"


def test_relay_passes_the_last_lines_on_error_and_unsets_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(PROGRESS_FILE_ENV, raising=False)
    said: list[str] = []
    with pytest.raises(RuntimeError, match="cell failed"):
        with relay(tmp_path / "p.log", said.append, poll_s=60.0):
            progress._append_to_file("step: 1/2 (50%)")
            raise RuntimeError("cell failed")
    assert said == ["    step: 1/2 (50%)"]
    assert PROGRESS_FILE_ENV not in os.environ
