"""How every ``amt`` command's ``--help`` reads (ground layer; imports nothing from amtlib).

One formatter for all parsers: a description paragraph is wrapped to the terminal, a paragraph with
indented lines (an example, a list of definitions) is kept as written, and an option whose default
means something shows it as ``(default: X)`` unless its help already names its default.
"""

from __future__ import annotations

import argparse
import textwrap


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Wrapped prose, verbatim indented blocks, and the defaults shown (not None, False or empty)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for para in text.strip("\n").split("\n\n"):
            lines = para.splitlines()
            if any(line.startswith(" ") for line in lines[1:]):
                paragraphs.append("\n".join(indent + line for line in lines))
            else:
                paragraphs.append(textwrap.fill(" ".join(line.strip() for line in lines), width,
                                                initial_indent=indent, subsequent_indent=indent))
        return "\n\n".join(paragraphs)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text.lower() or not action.option_strings or action.default in (None, False, "", [])
                or action.default is argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


def examples(*lines: str) -> str:
    """An epilog of example command lines: ``examples(\"amt run\", ...)`` -> ``example:\\n  amt run``."""
    return ("examples:" if len(lines) > 1 else "example:") + "".join(f"\n  {line}" for line in lines)
