"""``python -m amtlib.phantom``: same as ``amt synth``."""

from amtlib.phantom import cli_main

raise SystemExit(cli_main())
