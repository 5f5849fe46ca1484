"""The ``amt`` command: ``run`` (the notebook pipeline) and the commands of each module.

Each subcommand other than ``run`` is the ``cli_main(argv)`` of the module that owns it (see
:data:`DELEGATED`). Every subcommand runs under one guard (amtlib.errors.run_guarded): bad input is one
line naming the file, the problem and the remedy, without a traceback (exit 2); Ctrl-C is one line (exit
130). ``amt --debug COMMAND ...`` (or AMT_DEBUG=1) shows the traceback too.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from amtlib import __version__, errors
from amtlib.clihelp import HelpFormatter, examples
from amtlib.errors import debug_requested, run_guarded

#: What ``amt --help`` says first (plain words: the commands are listed once, by argparse).
DESCRIPTION = (
    "Regenerate the analyses of Takemura et al., Sci Rep 2026 (3D U-Net segmentation of anterior mediastinal "
    "tumours in chest CT) and the two related papers, from a cohort to the reviewer's report. The run command executes "
    "the numbered notebooks into a run folder; the other commands are single steps you can use on their own. "
    "Bad input gives one line naming the file, the problem and what to do (exit 2); --debug adds the traceback.")
EXAMPLES = examples(
    "amt run --config configs/demo.yaml --out runs/demo   # the whole demo (what make demo runs)",
    "amt report --run runs/demo                          # then open runs/demo/report/index.html",
    "amt COMMAND --help                                  # the options and an example of one command")

#: subcommand -> (module owning it, one-line help). A new subcommand is one entry here plus
#: ``cli_main(argv) -> int`` in its module, raising ``amtlib.errors.AmtError`` for bad input.
DELEGATED: dict[str, tuple[str, str]] = {
    "fetch": ("amtlib.fetch", "download and checksum the public chest CTs of the demo cohort"),
    "synth": ("amtlib.phantom", "generate the synthetic demo cohort"),
    "manifest": ("amtlib.manifest", "validate a cohort manifest"),
    "evaluate": ("amtlib.evaluation.evaluate", "score predicted masks against reference masks"),
    "train": ("amtlib.segmentation.train", "train the 3D U-Net on a run folder's training split (as notebook 03 does)"),
    "export": ("amtlib.dicom.export", "export a run's predictions as DICOM SEG and/or RTSTRUCT"),
    "export-nnunet": ("amtlib.evaluation.nnunet", "write a run's cohort and split as an nnU-Net v2 raw dataset (splits_final.json = the paper's split)"),
    "predict": ("amtlib.segmentation.predict", "segment new CTs (NIfTI, DICOM folder or PACS) with a trained model"),
    "model-card": ("amtlib.segmentation.model_card", "print the model card of a run folder or a model.pt"),
    "report": ("amtlib.report", "write the reviewer's report of a run folder (paper vs regenerated, audit, methods map)"),
}


def _run_parser(sub: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run",
        help="execute the pipeline notebooks into a run folder",
        formatter_class=HelpFormatter,
        epilog=examples("amt run                                         # configs/demo.yaml into runs/demo",
                        "amt run --config configs/demo.yaml --only 04    # re-run one step from the earlier ones",
                        "amt run -p train_iterations=500 --out runs/quick --from 03"),
        description=(
            "Execute the numbered notebooks in notebooks/ in order with papermill. Parameters come from "
            "the YAML config plus -p overrides; each notebook receives the keys its parameters cell "
            "declares and run_dir. Executed notebooks, artifacts, config.yaml, run.log and run.json "
            "(provenance and per-step durations) go to the run folder. A step whose notebook, parameters, "
            "library code and upstream steps are unchanged since its last successful run is skipped."
        ),
    )
    p.add_argument("--config", default=None, help="YAML file of parameters (default: configs/demo.yaml)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    p.add_argument("--only", action="append", default=[], metavar="STEP",
                   help="run just this step (repeatable); STEP is 03_train, 03, 3 or train")
    p.add_argument("--from", dest="start", default=None, metavar="STEP", help="first step to run")
    p.add_argument("--to", dest="stop", default=None, metavar="STEP", help="last step to run")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config parameter (value parsed as YAML; repeatable)")
    p.add_argument("--force", action="store_true", help="re-run selected steps even if unchanged")
    p.add_argument("--allow-unknown", action="store_true",
                   help="pass -p keys that no notebook declares (otherwise an error naming the nearest key)")
    p.add_argument("--list", action="store_true", help="list the steps and their parameters, run nothing")
    p.add_argument("--notebooks", default=None, metavar="DIR",
                   help="folder of numbered notebooks NN_name.ipynb (default: the package's notebooks/)")
    return p


def _cmd_run(args: argparse.Namespace) -> int:
    from amtlib import pipeline

    config = args.config or pipeline.DEFAULT_CONFIG
    notebooks = args.notebooks or pipeline.NOTEBOOKS_DIR
    if args.list:
        for step in pipeline.discover_steps(notebooks):
            params = ", ".join(k for k in pipeline.notebook_parameters(step.notebook) if k != "run_dir")
            print(f"{step.name:14s} {params}")
        return 0
    try:
        pipeline.run_pipeline(
            config_path=config,
            out=args.out,
            only=args.only,
            start=args.start,
            stop=args.stop,
            overrides=pipeline.parse_overrides(args.param),
            force=args.force,
            notebooks_dir=notebooks,
            allow_unknown=args.allow_unknown,
        )
    except pipeline.StepFailed:
        return 1  # message already printed by the runner
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    previous, errors.DEBUG = errors.DEBUG, errors.DEBUG or debug
    try:
        return _dispatch(argv, debug)
    finally:
        errors.DEBUG = previous


def _dispatch(argv: list[str], debug: bool) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("papermill").setLevel(logging.WARNING)  # the runner prints its own progress
    logging.getLogger("torch").setLevel(logging.WARNING)  # its INFO lines (e.g. cache stats at exit) are noise
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # one INFO line per module copied into each SEG
    # the PACS libraries log every request (and a refused connection as ERROR): amt predict's own line names it
    logging.getLogger("dicomweb_client").setLevel(logging.WARNING)
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(prog="amt", description=DESCRIPTION, formatter_class=HelpFormatter, epilog=EXAMPLES)
    parser.add_argument("--version", action="version", version=f"amt (amtlib) {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    _run_parser(sub)
    for name, (_, helptext) in DELEGATED.items():
        sub.add_parser(name, help=helptext, add_help=False)
    if argv and argv[0] in DELEGATED:
        # imported under the guard too: Ctrl-C while a command's libraries load (seconds) is one line, not a traceback
        name = DELEGATED[argv[0]][0]
        return run_guarded(f"amt {argv[0]}", lambda rest: importlib.import_module(name).cli_main(rest), argv[1:], debug)
    args = parser.parse_args(argv)
    if args.command == "run":
        return run_guarded("amt run", lambda _: _cmd_run(args), [], debug)
    parser.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
