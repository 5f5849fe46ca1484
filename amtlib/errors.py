"""One error type for bad input, and the guard every ``amt`` command runs under.

Ground layer: imports nothing from amtlib. A user error (a bad argument, a missing or damaged file, a
folder in use) is raised as :class:`AmtError` naming the file, the problem and the remedy; the guard
(:func:`run_guarded`, used by ``amtlib.cli.main`` for every subcommand) prints it as one line on
stderr, without a traceback, and returns exit code 2. ``--debug`` (or ``AMT_DEBUG=1``) shows the
traceback instead. Ctrl-C prints one line and returns 130.

A new subcommand hooks in by adding ``"name": ("amtlib.module", "help")`` to ``amtlib.cli.DELEGATED``
and defining ``cli_main(argv) -> int`` in that module that raises :class:`AmtError` (a module's own
:class:`DomainError` subclass, with a reason code) for bad input; it needs no ``try``/``except`` of its
own. A stray ``ValueError``/``OSError`` still prints as one line, marked "(--debug shows the traceback)".
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Callable, Sequence


class AmtError(ValueError):
    """Bad input or state a user can fix: ``file`` (or folder, or option), ``problem``, ``remedy``.

    A ``ValueError`` so that callers catching ``ValueError`` keep working. ``str()`` reads
    ``"<file>: <problem>; <remedy>"`` (parts that are empty are left out).
    """

    def __init__(self, file: "str | Path | None", problem: str, remedy: str = "") -> None:
        self.file = "" if file is None else str(file)
        self.problem = problem
        self.remedy = remedy
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.file}: {self.problem}" if self.file else self.problem
        return f"{text}; {self.remedy}" if self.remedy else text

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:
        # raised in a worker process, it crosses back pickled: rebuild it from its three parts
        return (type(self), (self.file, self.problem, self.remedy))


class DomainError(AmtError):
    """Base of the modules' own error types (``MaskError``, ``NiftiError``, ``DicomSeriesError`` ...).

    An :class:`AmtError` with a ``reason`` code that callers decide by (never by the message text):
    ``Cls(file, problem, remedy, reason=...)``; a subclass sets :attr:`DEFAULT_REASON`. The problem
    is required: one text with the file, problem and remedy run together is what this type replaces.
    """

    DEFAULT_REASON = ""

    def __init__(self, file: "str | Path | None", problem: str, remedy: str = "", reason: "str | None" = None) -> None:
        self.reason = self.DEFAULT_REASON if reason is None else reason
        super().__init__(file, problem, remedy)

    def __reduce__(self) -> tuple[type, tuple[str, str, str, str]]:  # type: ignore[override]
        # crosses a process pool with its reason code (cohort workers decide exclusions by it)
        return (type(self), (self.file, self.problem, self.remedy, self.reason))


#: Exit codes of the guard: usage or input error, interrupted by Ctrl-C (128 + SIGINT).
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


#: Set by ``amt --debug`` for the whole process (see :func:`debug_requested`).
DEBUG = False


def debug_requested(argv: Sequence[str] | None = None) -> bool:
    """True after ``amt --debug``, when ``--debug`` is among ``argv``, or when ``AMT_DEBUG`` is set (not 0)."""
    return DEBUG or "--debug" in (argv or ()) or os.environ.get("AMT_DEBUG", "") not in ("", "0")


def run_guarded(prog: str, fn: Callable[[list[str]], "int | None"], argv: Sequence[str], debug: bool = False) -> int:
    """Call ``fn(argv)``; print user errors and Ctrl-C as one line on stderr instead of a traceback.

    :class:`AmtError`, ``ValueError`` and ``OSError`` (missing file, permission, disk full) give exit
    code 2; ``KeyboardInterrupt`` 130. Any other exception is a bug and propagates with its traceback.
    With ``debug`` the traceback of a user error is printed too.
    """
    try:
        return int(fn(list(argv)) or 0)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"{prog}: interrupted\n")
        return EXIT_INTERRUPTED
    except (ValueError, OSError) as exc:
        if debug:
            traceback.print_exc()
        hint = "" if debug or isinstance(exc, AmtError) else " (--debug shows the traceback)"
        sys.stderr.write(f"{prog}: error: {' | '.join(_lines(describe(exc)))}{hint}\n")  # one line, always
        return EXIT_ERROR


def _lines(text: str) -> list[str]:
    """The non-blank lines of ``text``, stripped (the guard joins a message's lines into its one line)."""
    return [line.strip() for line in text.splitlines() if line.strip()] or [text]


def one_line(exc: BaseException) -> str:
    """A parser's exception as one line: a YAML error's ``line L, column C: problem`` (its source excerpt
    left out), anything else its message with the line breaks joined."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " | ".join(_lines(str(exc)))


def describe(exc: BaseException) -> str:
    """One line for a user error: the AmtError text, or an OSError's file and reason."""
    if isinstance(exc, OSError) and not isinstance(exc, AmtError):
        where = exc.filename if exc.filename is not None else ""
        reason = exc.strerror or str(exc)
        remedy = {28: "free disk space and run again", 13: "choose a folder you can write to",
                  30: "choose a folder you can write to"}.get(exc.errno or 0, "")
        return str(AmtError(where, reason, remedy))
    return str(exc)


def type_problem(value: object, default: object) -> str | None:
    """Why ``value`` cannot stand in for a parameter whose default is ``default``, or None when it can.

    The rule the pipeline and ``amt train`` check before any work starts: a default of None accepts
    anything; a bool wants a bool; an int an int (not 2.5, not "abc", not True); a float any number;
    a str a str or None; a list a list whose items have the default's item type (int or number or
    str); a dict a dict.
    """

    def number(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def kind(v: object) -> str:
        return {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list",
                tuple: "a list", dict: "a mapping"}.get(type(v), type(v).__name__)

    if default is None:
        return None
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = number(value)
    elif isinstance(default, str):
        ok = value is None or isinstance(value, str)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        if ok and default and all(isinstance(d, int) and not isinstance(d, bool) for d in default):
            bad = [v for v in value if not (isinstance(v, int) and not isinstance(v, bool))]  # type: ignore[union-attr]
            if bad:
                return f"{value!r} has items {bad!r} that are not integers (default {default!r})"
        elif ok and default and all(number(d) for d in default):
            bad = [v for v in value if not number(v)]  # type: ignore[union-attr]
            if bad:
                return f"{value!r} has items {bad!r} that are not numbers (default {default!r})"
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:
        return None
    return None if ok else f"{value!r} is {kind(value)}, expected {kind(default)} like the default {default!r}"
