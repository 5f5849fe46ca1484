"""``python -m amtlib.phantom``: same as ``amt synth`` (under the same guard: bad input is one line)."""

import sys

from amtlib.errors import run_guarded
from amtlib.phantom import cli_main

raise SystemExit(run_guarded("amt synth", cli_main, sys.argv[1:]))
