"""Issue 26, CLI: `amt --version`, `--help` in plain words with each command listed once, one example
per command, and the defaults shown."""

from __future__ import annotations

import argparse
import re

import pytest

from amtlib import __version__, cli
from amtlib.clihelp import HelpFormatter, examples


def _help(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_version(capsys):
    assert _help(capsys, ["--version"]).strip() == f"amt (amtlib) {__version__}"


def test_top_level_help_is_plain_and_lists_each_command_once(capsys):
    text = _help(capsys, ["--help"])
    assert "``" not in text and "cli_main" not in text and "`" not in text
    for name in ["run", *cli.DELEGATED]:
        assert len(re.findall(rf"^\s+{re.escape(name)}(\s|$)", text, re.M)) == 1, name
    assert "examples:\n  amt run --config configs/demo.yaml --out runs/demo" in text


@pytest.mark.parametrize("command", ["run", *cli.DELEGATED])
def test_every_command_has_an_example(capsys, command):
    text = _help(capsys, [command, "--help"])
    assert re.search(r"^examples?:\n  (amt|torchrun) ", text, re.M), text[-400:]
    assert "``" not in text


def test_defaults_are_shown_once():
    p = argparse.ArgumentParser(prog="x", formatter_class=HelpFormatter, epilog=examples("x --n 3", "x --flag"))
    p.add_argument("--n", type=int, default=2, help="how many")
    p.add_argument("--out", default=None, help="where")
    p.add_argument("--flag", action="store_true", help="switch")
    p.add_argument("--cache", default="~/.c", help="cache folder (default ~/.c)")
    text = p.format_help()
    assert "how many (default: 2)" in text and "where\n" in text and "switch\n" in text
    assert "(default ~/.c)" in text and "(default: ~/.c)" not in text
    assert text.endswith("examples:\n  x --n 3\n  x --flag\n")


def test_run_help_shows_its_defaults(capsys):
    text = _help(capsys, ["run", "--help"])
    assert "(default: configs/demo.yaml)" in text
