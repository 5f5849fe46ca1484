"""Run the numbered notebooks in order with papermill and record provenance (``amt run``).

A run folder (``runs/<name>/``) receives each executed notebook, every artifact the notebooks write,
``config.yaml`` (the resolved parameters), ``run.log`` and ``run.json``: git commit and dirty flag,
config, package versions, platform, device, seeds, start/end times and per-step durations.

Each notebook gets only the parameters its ``parameters`` cell declares, plus ``run_dir``. A step is
skipped when its fingerprint (notebook source, injected parameters, amtlib source, fingerprints of the
steps before it, size and modification time of the files it reads from earlier steps) equals that of
its last successful run, unless ``force``.

Before any step starts, and before the run folder is created: the steps named exist, every ``-p`` key
is declared by some notebook (else an error naming the nearest known key, unless ``allow_unknown``)
and every value has the type of that parameter's default in the notebook (:func:`check_types`). The
run folder is then locked (:func:`amtlib.io.folder_lock`) for the whole run; ``run.log``, ``run.json``
and the executed notebooks are replaced atomically, never written in place. An interrupted run (Ctrl-C,
SIGTERM) is marked ``interrupted`` in ``run.json`` and ``run.log``; one killed outright is marked so by
the next run into the folder. Lines a step leaves in ``<step>/notices.txt`` (e.g. that training
resumed from a checkpoint) are shown after the step and kept in ``run.json``.

Figures: a config's ``figures_dir`` (the repository's ``figures/`` in ``configs/demo.yaml``) is used
only by a run into that config's default folder ``runs/<config name>``; a run elsewhere (a scratch
``--out``) keeps its figures in the run folder, unless ``-p figures_dir=DIR`` asks for a copy.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import hashlib
import json
import logging
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import yaml

from amtlib.errors import AmtError, one_line, type_problem
from amtlib.io import append_line, folder_lock, library_hash, write_json, write_text
from amtlib.paths import NOTICES, SKIPPED

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
DEFAULT_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
KERNEL_NAME = "python3"
#: Packages whose versions go into run.json.
VERSIONED_PACKAGES = (
    "amtlib", "torch", "monai", "numpy", "scipy", "pandas", "pydicom", "nibabel", "SimpleITK",
    "connected-components-3d", "pyradiomics-bhklab", "statsmodels", "matplotlib", "seaborn", "papermill",
    "highdicom", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "scikit-image",
    "scikit-learn", "imbalanced-learn",
)
_STEP_RE = re.compile(r"^(\d\d)_([A-Za-z0-9_]+)\.ipynb$")


class StepFailed(RuntimeError):
    """A notebook raised; the message names the step, the cell, the error and the executed copy."""


class StepInterrupted(KeyboardInterrupt):
    """The run was stopped by SIGTERM (handled like Ctrl-C: the run is marked interrupted)."""


@dataclass(frozen=True)
class Step:
    """One numbered notebook, e.g. ``03_train`` from ``notebooks/03_train.ipynb``."""

    name: str
    notebook: Path

    @property
    def number(self) -> str:
        return self.name[:2]

    @property
    def short(self) -> str:
        return self.name[3:]


@dataclass
class RunResult:
    """What :func:`run_pipeline` did: the run folder, per-step status and the run.json record."""

    run_dir: Path
    executed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------- config


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a flat YAML mapping of notebook parameters; error names the file on bad content."""
    path = Path(path)
    if not path.is_file():
        raise AmtError(path, "config file not found", "give an existing YAML file, e.g. --config configs/demo.yaml")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise AmtError(path, f"not valid YAML ({one_line(exc)})", "fix the file") from None
    if not isinstance(cfg, dict):
        raise AmtError(path, f"expected a mapping of parameter: value, got {type(cfg).__name__}", "see configs/demo.yaml")
    nested = [k for k, v in cfg.items() if isinstance(v, dict)]
    if nested:
        raise AmtError(path, f"parameters must be flat; nested mappings under {nested}", "see configs/demo.yaml")
    return cfg


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["train_iterations=50", "device=cpu"]`` -> typed dict (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise AmtError(f"-p {item!r}", "expected key=value", "e.g. -p train_iterations=100")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise AmtError(f"-p {item!r}", f"value is not YAML ({one_line(exc)})", "quote strings, write lists as [a, b]") from None
    return out


def parameter_defaults(notebook: str | Path) -> dict[str, Any]:
    """Default value of each parameter of a notebook's ``parameters`` cell (None when not a literal)."""
    import ast

    out: dict[str, Any] = {}
    for name, info in notebook_parameters(notebook).items():
        try:
            out[name] = ast.literal_eval(str(info.get("default", "None")))
        except (ValueError, SyntaxError):
            out[name] = None
    return out


def check_overrides(overrides: Mapping[str, Any], declared: set[str], allow_unknown: bool = False) -> list[str]:
    """Refuse a ``-p`` key no notebook declares, naming the nearest known key; return such keys when allowed."""
    unknown = sorted(set(overrides) - declared)
    if unknown and not allow_unknown:
        key = unknown[0]
        near = difflib.get_close_matches(key, sorted(declared), n=1)
        hint = f"did you mean {near[0]}?" if near else "amt run --list shows the parameters"
        raise AmtError(f"-p {key}", "no notebook declares this parameter", f"{hint} (--allow-unknown passes it anyway)")
    return unknown


def check_types(config: Mapping[str, Any], defaults: Mapping[str, Mapping[str, Any]], source: str) -> None:
    """Check every value of ``config`` against the default of each step that declares it.

    ``defaults`` maps step name -> :func:`parameter_defaults`. Raises :class:`AmtError` naming the key,
    the value, the expected type and the step, before anything runs (see :func:`amtlib.errors.type_problem`).
    """
    for key, value in config.items():
        for step, params in defaults.items():
            if key in params and key != "run_dir":
                problem = type_problem(value, params[key])
                if problem:
                    raise AmtError(f"parameter {key}", f"{problem} (declared by {step})", f"fix it in {source}")


# ---------------------------------------------------------------------------------------- steps


def discover_steps(notebooks_dir: str | Path = NOTEBOOKS_DIR) -> list[Step]:
    """The ``NN_name.ipynb`` notebooks of ``notebooks_dir`` in numeric order."""
    nb_dir = Path(notebooks_dir)
    steps = [Step(p.stem, p) for p in sorted(nb_dir.glob("*.ipynb")) if _STEP_RE.match(p.name)]
    if not steps:
        raise AmtError(nb_dir, "no numbered notebooks (NN_name.ipynb) found",
                       "give the folder of the pipeline's notebooks as --notebooks (default: the package's notebooks/)")
    return steps


def resolve_step(steps: Sequence[Step], key: str) -> Step:
    """Find a step by full name (``03_train``), number (``03``/``3``) or short name (``train``)."""
    key = key.strip()
    for s in steps:
        if key in (s.name, s.short) or (key.isdigit() and int(key) == int(s.number)):
            return s
    raise AmtError(f"step {key!r}", "unknown step", f"steps are {', '.join(s.name for s in steps)}")


def select_steps(
    steps: Sequence[Step], only: Sequence[str] = (), start: str | None = None, stop: str | None = None
) -> list[Step]:
    """Steps chosen by ``--only`` (any number) or the inclusive range ``--from``/``--to``."""
    if only and (start or stop):
        raise AmtError("--only", "cannot be combined with --from/--to", "use one or the other")
    if only:
        chosen = {resolve_step(steps, k).name for k in only}
        return [s for s in steps if s.name in chosen]
    names = [s.name for s in steps]
    i = names.index(resolve_step(steps, start).name) if start else 0
    j = names.index(resolve_step(steps, stop).name) if stop else len(steps) - 1
    if i > j:
        raise AmtError(f"--from {start}", f"comes after --to {stop}", "swap them")
    return list(steps[i : j + 1])


def notebook_parameters(notebook: str | Path) -> dict[str, Any]:
    """Names and defaults declared in a notebook's ``parameters`` cell (via papermill)."""
    import ast

    import papermill as pm

    nb = json.loads(Path(notebook).read_text())
    if not nb.get("metadata", {}).get("kernelspec", {}).get("name"):
        # papermill's own ValueError says neither which notebook nor what to do
        raise AmtError(notebook, "no kernel named in its metadata (metadata.kernelspec.name)",
                       "open and save it in JupyterLab with the Python 3 kernel, or add the kernelspec")
    cells = [c for c in nb.get("cells", []) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise AmtError(notebook, f"{len(cells)} cells tagged 'parameters'", "papermill needs exactly one: tag one cell")
    source = "".join(cells[0].get("source", []))
    try:
        assigned = [t.id for node in ast.parse(source).body if isinstance(node, (ast.Assign, ast.AnnAssign))
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                    if isinstance(t, ast.Name)]
    except SyntaxError as exc:
        raise AmtError(notebook, f"parameters cell is not valid Python ({one_line(exc)})", "fix the cell") from None
    params = pm.inspect_notebook(str(notebook))
    missed = [name for name in assigned if name not in params]
    if missed:
        # papermill silently drops lines it cannot parse (e.g. an '=' inside a comment); such a
        # parameter would never receive its configured value.
        raise AmtError(notebook, f"papermill cannot parse the parameter line(s) of {missed}",
                       "keep one 'name = value  # comment' per line, with no '=' in the comment")
    return params


def step_parameters(step: Step, config: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """The subset of ``config`` that ``step`` declares, plus the absolute ``run_dir``."""
    declared = notebook_parameters(step.notebook)
    params = {k: v for k, v in config.items() if k in declared}
    params["run_dir"] = str(run_dir)
    return params


# ---------------------------------------------------------------------------------- fingerprints


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def notebook_source_hash(notebook: str | Path) -> str:
    """Hash of a notebook's cell types and sources only (outputs and metadata ignored)."""
    nb = json.loads(Path(notebook).read_text())
    cells = [(c.get("cell_type"), "".join(c.get("source", []))) for c in nb.get("cells", [])]
    return _sha(json.dumps(cells).encode())


def input_files_state(run_dir: Path, step: Step) -> list[tuple[str, int, int]]:
    """``(path in the run folder, size, mtime_ns)`` of every file the step reads from earlier steps
    (:data:`amtlib.paths.STEP_READS`; folders file by file, sorted); missing paths are left out."""
    from amtlib.paths import STEP_READS, RunPaths

    paths = RunPaths(run_dir)
    state = []
    for key in STEP_READS.get(step.name, ()):
        top = getattr(paths, key)
        files = sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top] if top.is_file() else []
        for f in files:
            st = f.stat()
            state.append((str(f.relative_to(run_dir)), st.st_size, st.st_mtime_ns))
    return state


def fingerprint(step: Step, params: Mapping[str, Any], upstream: Sequence[str], lib_hash: str,
                inputs: Sequence[tuple[str, int, int]] = ()) -> str:
    """Identity of one step's execution: notebook, parameters, library, upstream fingerprints and the
    state of the files it reads (:func:`input_files_state`)."""
    payload = {
        "notebook": notebook_source_hash(step.notebook),
        "params": {k: v for k, v in sorted(params.items())},
        "library": lib_hash,
        "upstream": list(upstream),
        "inputs": [list(item) for item in inputs],
    }
    return _sha(json.dumps(payload, sort_keys=True, default=str).encode())


# ------------------------------------------------------------------------------------ provenance


def git_state(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit hash and dirty flag of ``repo`` (``None`` values outside a git checkout)."""

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_versions(names: Iterable[str] = VERSIONED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (``None`` when absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info() -> dict[str, Any]:
    """The compute device a run sees: CUDA GPU name and memory when present, else CPU threads."""
    import os

    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "type": "cpu"}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(
                type="cuda",
                name=props.name,
                count=torch.cuda.device_count(),
                memory_gib=round(props.total_memory / 2**30, 1),
                cuda=torch.version.cuda,
                bf16=bool(torch.cuda.is_bf16_supported()),
            )
    except ImportError:
        info["torch"] = None
    return info


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _read_record(run_dir: Path) -> dict[str, Any]:
    p = run_dir / "run.json"
    if p.is_file():
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            log.warning("%s: unreadable, starting a fresh record", p)
    return {}


# ------------------------------------------------------------------------------------- execution


def rerun_command(step: Step, config_path: Path, run_dir: Path, overrides: Mapping[str, Any]) -> str:
    """The ``amt run`` command line that re-runs ``step`` alone with the same config, folder and ``-p``."""
    parts = ["amt", "run", "--config", str(config_path), "--out", str(run_dir), "--only", step.name]
    for key, value in overrides.items():
        parts += ["-p", f"{key}={json.dumps(value)}"]
    return " ".join(shlex.quote(p) for p in parts)


def _failure_message(step: Step, executed: Path, exc: BaseException, rerun: str) -> str:
    """One paragraph: which notebook, which cell, what error, where the traceback is, how to re-run."""
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    cell = getattr(exc, "cell_index", None)
    source = getattr(exc, "source", "") or ""
    first = next((ln for ln in source.splitlines() if ln.strip() and not ln.startswith("#")), "")
    where = f"cell {cell}" if cell is not None else "a cell"
    if first:
        where += f" (`{first.strip()[:80]}`)"
    return (
        f"step {step.name} failed in {where}: {ename}: {evalue}. "
        f"The executed copy with the full traceback is {executed}. "
        f"Fix the cause, then re-run this step alone with `{rerun}`."
    )


def execute_step(step: Step, params: Mapping[str, Any], run_dir: Path, kernel_name: str = KERNEL_NAME,
                 rerun: str = "") -> float:
    """Execute one notebook into ``run_dir/notebooks/``; return its duration in seconds.

    papermill writes the executed copy as it goes, so it writes a fresh hidden file that replaces
    ``notebooks/<step>.ipynb`` when the step ends, whether it succeeded or not (an earlier copy, possibly
    hard-linked into another run folder, is never written through).
    """
    import papermill as pm

    from amtlib.kernel import IPCKernelManager

    out_nb = run_dir / "notebooks" / step.notebook.name
    out_nb.parent.mkdir(parents=True, exist_ok=True)
    partial = out_nb.with_name(f".{step.name}.running.ipynb")
    partial.unlink(missing_ok=True)
    rerun = rerun or f"amt run --out {run_dir} --only {step.name}"
    t0 = time.perf_counter()
    try:
        with _stderr_to(out_nb.with_name(f"{step.name}.kernel.log")):
            pm.execute_notebook(
                str(step.notebook),
                str(partial),
                parameters=dict(params),
                kernel_name=kernel_name,
                cwd=str(REPO_ROOT),
                progress_bar=False,
                report_mode=False,
                kernel_manager_class=IPCKernelManager,  # local sockets: no "TCP without encryption" warning
            )
    except pm.PapermillExecutionError as exc:
        if exc.ename == "KeyboardInterrupt":
            raise KeyboardInterrupt from None
        raise StepFailed(_failure_message(step, out_nb, exc, rerun)) from None
    except (KeyboardInterrupt, StepInterrupted):
        raise
    except Exception as exc:  # kernel death, timeouts, missing kernel
        raise StepFailed(_failure_message(step, out_nb, exc, rerun)) from None
    finally:
        if partial.is_file():
            os.replace(partial, out_nb)
    return time.perf_counter() - t0


@contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send file descriptor 2 (the kernel's stderr, papermill's log) to ``path`` for the block.

    The kernel writes start-up warnings and, when it dies, library tracebacks there; they belong in
    the run folder beside the executed notebook, not between the runner's progress lines. The file is
    removed when the block wrote nothing into it.
    """
    path.unlink(missing_ok=True)
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to redirect
        yield
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
        if path.is_file() and path.stat().st_size == 0:
            path.unlink()


def _papermill_duration(executed: Path) -> float | None:
    try:
        nb = json.loads(executed.read_text())
        return float(nb["metadata"]["papermill"]["duration"])
    except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError):
        return None


def default_run_dir(config_path: str | Path) -> Path:
    """``runs/<config stem>`` in the repository: where ``amt run`` writes when ``--out`` is not given."""
    return (REPO_ROOT / "runs" / Path(config_path).stem).resolve()


def figures_rule(config: Mapping[str, Any], overrides: Mapping[str, Any], run_dir: Path, config_path: Path,
                 declared_default: Any) -> tuple[Any, str]:
    """The ``figures_dir`` a run uses, and a line saying why when the config's is not used.

    ``-p figures_dir=...`` is always used. Otherwise the config's value (or the notebooks' default)
    is used only when ``run_dir`` is the config's default run folder; any other run folder gets ``""``
    (figures stay in the run folder), so a scratch run never overwrites the repository's ``figures/``.
    """
    if "figures_dir" in overrides:
        return overrides["figures_dir"], ""
    wanted = config.get("figures_dir", declared_default)
    if not wanted or run_dir == default_run_dir(config_path):
        return wanted, ""
    return "", (f"figures stay in the run folder: figures_dir {wanted!r} is used only by the default run folder "
                f"{default_run_dir(config_path)} (-p figures_dir=DIR copies them)")


def _sigterm_as_interrupt() -> Any:
    """Turn SIGTERM into :class:`StepInterrupted` (main thread only); return the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise StepInterrupted("terminated (SIGTERM)")

    return signal.signal(signal.SIGTERM, handler)


def run_pipeline(
    config_path: str | Path = DEFAULT_CONFIG,
    out: str | Path | None = None,
    only: Sequence[str] = (),
    start: str | None = None,
    stop: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    force: bool = False,
    notebooks_dir: str | Path = NOTEBOOKS_DIR,
    kernel_name: str = KERNEL_NAME,
    echo: Any = print,
    allow_unknown: bool = False,
) -> RunResult:
    """Execute the selected notebooks in order; raise :class:`StepFailed` on the first failure.

    ``out`` defaults to ``runs/<config stem>``. ``echo`` receives one progress line per event.
    ``overrides`` are the ``-p`` values: a key no notebook declares is an error unless ``allow_unknown``.
    Everything is checked before the run folder is created or locked (see the module docstring).
    Ctrl-C or SIGTERM marks the run interrupted and re-raises ``KeyboardInterrupt``.
    """
    config_path = Path(config_path)
    overrides = dict(overrides or {})
    file_config = load_config(config_path)
    config = {**file_config, **overrides}
    run_dir = (Path(out) if out else default_run_dir(config_path)).resolve()
    if run_dir.exists() and not run_dir.is_dir():
        raise AmtError(run_dir, "exists and is not a folder", "choose another --out")

    steps = discover_steps(notebooks_dir)
    chosen = select_steps(steps, only, start, stop)
    defaults = {s.name: parameter_defaults(s.notebook) for s in steps}
    declared_all = set().union(*(set(d) for d in defaults.values())) - {"run_dir"}
    check_overrides(overrides, declared_all, allow_unknown)
    check_types(overrides, defaults, "the -p value")
    check_types(file_config, defaults, str(config_path))
    unknown = sorted(set(file_config) - declared_all)
    if unknown:
        log.warning("%s: keys not declared by any notebook (typo?): %s", config_path, ", ".join(unknown))
    notes: list[str] = []
    if "figures_dir" in declared_all:
        fig_default = next(d["figures_dir"] for d in defaults.values() if "figures_dir" in d)
        config["figures_dir"], why = figures_rule(file_config, overrides, run_dir, config_path, fig_default)
        if why:
            notes.append(why)

    previous_handler = _sigterm_as_interrupt()
    try:
        with folder_lock(run_dir):
            return _run_locked(config_path, config, overrides, run_dir, steps, chosen, force, kernel_name, echo, notes)
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


def _recover_previous(run_dir: Path, say: Any) -> dict[str, Any]:
    """The step records of the last run into ``run_dir``; a run that died without a word (kill -9,
    power loss) is said and its running step marked interrupted; stale partial notebooks removed."""
    previous = _read_record(run_dir)
    prev_steps: dict[str, Any] = {k: dict(v) for k, v in previous.get("steps", {}).items()}
    if previous.get("status") == "running":
        killed = [name for name, e in prev_steps.items() if e.get("status") == "running"]
        for name in killed:
            prev_steps[name].update(status="interrupted")
        say(f"the previous run into this folder (started {previous.get('started')}) was killed"
            + (f" during {', '.join(killed)}; marked interrupted" if killed else ""))
    for stale in (run_dir / "notebooks").glob(".*.running.ipynb"):
        stale.unlink()
    return prev_steps


def _start_record(config_path: Path, config: dict[str, Any], run_dir: Path, prev_steps: dict[str, Any]) -> dict[str, Any]:
    """The provenance record of this run (run.json), written with the resolved config.yaml."""
    record: dict[str, Any] = {
        "run_dir": str(run_dir),
        "config_file": str(config_path.resolve()),
        "config": config,
        "git": git_state(),
        "versions": package_versions(),
        "platform": {"system": platform.platform(), "machine": platform.machine(), "python": sys.version.split()[0]},
        "device": device_info(),
        "seeds": {k: v for k, v in config.items() if "seed" in k},
        "started": _now(),
        "ended": None,
        "status": "running",
        "pid": os.getpid(),
        "steps": prev_steps,
    }
    write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=True))
    write_json(run_dir / "run.json", record)
    return record


def _execute_recorded(step: Step, params: Mapping[str, Any], run_dir: Path, kernel_name: str, rerun: str,
                      entry: dict[str, Any], say_step: Any, say: Any) -> float:
    """Execute one step with its progress relayed live, show its notices after it (also on failure),
    and complete its run.json entry; the wall time in seconds."""
    from amtlib.progress import relay  # the notebook's progress lines, live on the terminal and in run.log

    notices = run_dir / step.name / NOTICES
    notices.unlink(missing_ok=True)
    skipped = run_dir / step.name / SKIPPED
    skipped.unlink(missing_ok=True)  # an earlier run's; the notebook writes its own when it skips its work
    try:
        with relay(run_dir / "progress.log", say):
            wall = execute_step(step, params, run_dir, kernel_name, rerun)
    finally:
        _show_notices(notices, entry, say_step)
    executed_nb = run_dir / "notebooks" / step.notebook.name
    entry.update(status="ok", ended=_now(), wall_s=round(wall, 2),
                 duration_s=round(_papermill_duration(executed_nb) or wall, 2))
    if skipped.is_file():
        try:
            entry["skipped_reason"] = str(json.loads(skipped.read_text()).get("reason", "")) or "no reason given"
        except (ValueError, AttributeError):
            entry["skipped_reason"] = f"see {skipped}"
    return wall


def _run_locked(config_path: Path, config: dict[str, Any], overrides: Mapping[str, Any], run_dir: Path,
                steps: Sequence[Step], chosen: Sequence[Step], force: bool, kernel_name: str, echo: Any,
                notes: Sequence[str]) -> RunResult:
    """The body of :func:`run_pipeline`, under the run folder's lock."""
    logfile = run_dir / "run.log"

    def say(msg: str) -> None:
        echo(msg)
        append_line(logfile, f"{_now()} {msg}")

    prev_steps = _recover_previous(run_dir, say)
    record = _start_record(config_path, config, run_dir, prev_steps)

    lib = library_hash()
    result = RunResult(run_dir=run_dir, record=record)
    t_run = time.perf_counter()
    upstream: list[str] = []
    chosen_names = {s.name for s in chosen}
    entry: dict[str, Any] = {}
    say(f"run {run_dir} ({len(chosen)} of {len(steps)} steps, config {config_path.name})")
    for note in notes:
        say(note)
    try:
        for step in steps:
            params = step_parameters(step, config, run_dir)
            fp = fingerprint(step, params, upstream, lib, input_files_state(run_dir, step))
            if step.name not in chosen_names:
                # Not run now: keep the chain from its last record so later steps stay comparable.
                upstream.append(prev_steps.get(step.name, {}).get("fingerprint", "absent"))
                continue
            k = len(result.executed) + len(result.skipped) + 1
            prev = prev_steps.get(step.name, {})
            executed_nb = run_dir / "notebooks" / step.notebook.name
            if not force and prev.get("status") == "ok" and prev.get("fingerprint") == fp and executed_nb.is_file():
                say(f"[{k}/{len(chosen)}] {step.name}: unchanged since {prev.get('ended')}, skipped (--force re-runs)")
                record["steps"][step.name] = {**prev, "skipped_at": _now()}
                result.skipped.append(step.name)
                upstream.append(fp)
                continue
            say(f"[{k}/{len(chosen)}] {step.name}: running ...")
            entry = {"status": "running", "fingerprint": fp, "parameters": params, "started": _now(),
                     "notebook": str(executed_nb.relative_to(run_dir))}
            record["steps"][step.name] = entry
            write_json(run_dir / "run.json", record)
            wall = _execute_recorded(step, params, run_dir, kernel_name, rerun_command(step, config_path, run_dir, overrides),
                                     entry, lambda m: say(f"[{k}/{len(chosen)}] {step.name}: {m}"), say)
            result.executed.append(step.name)
            upstream.append(fp)
            write_json(run_dir / "run.json", record)
            outcome = "done" if "skipped_reason" not in entry else f"SKIPPED by the notebook ({entry['skipped_reason']})"
            say(f"[{k}/{len(chosen)}] {step.name}: {outcome} in {wall:.1f} s (total {time.perf_counter() - t_run:.1f} s)")
        record["status"] = "ok"
    except StepFailed as exc:
        entry.update(status="failed", ended=_now())
        record["status"] = "failed"
        record["error"] = str(exc)
        say(f"FAILED: {exc}")
        raise
    except KeyboardInterrupt as exc:
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # the killed kernel's pending reply is no news
        if entry.get("status") == "running":
            entry.update(status="interrupted", ended=_now())
        record["status"] = "interrupted"
        what = str(exc) or "Ctrl-C"
        say(f"INTERRUPTED ({what})" + (f" during {step.name}; re-run to continue" if entry.get("status") == "interrupted" else ""))
        raise
    finally:
        record["ended"] = _now()
        record["duration_s"] = round(time.perf_counter() - t_run, 2)
        write_json(run_dir / "run.json", record)
    say(f"finished in {record['duration_s']:.1f} s: {len(result.executed)} run, {len(result.skipped)} skipped")
    report = run_dir / "report" / "index.html"
    if report.is_file():  # where a newcomer looks next
        say(f"reviewer's report: {report} (open in a browser); executed notebooks: {run_dir / 'notebooks'}")
    return result


def _show_notices(path: Path, entry: dict[str, Any], say: Any) -> None:
    """Echo the lines a step left in ``<step>/notices.txt`` and keep them in its run.json entry."""
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        entry["notices"] = lines
        for line in lines:
            say(line)


# ------------------------------------------------------------------------- notebooks run in JupyterLab
#
# `make lab` starts kernels with this module as an IPython extension (tools/jupyter/kernels/python3):
# after each cell, a notebook NN_step.ipynb that has written into its run folder's step folder records
# that execution in run.json, so the report and a later `amt run` know the step's files are not those
# of the recorded `amt run`.

#: The fingerprint of a step last executed in JupyterLab: never equal to a computed one, so the next
#: ``amt run`` executes that step (and the steps after it) again with the config's parameters.
LAB_FINGERPRINT = "jupyterlab"


def _newest_mtime(folder: Path, depth: int = 2) -> float:
    """Newest modification time of the files under ``folder`` (``depth`` levels; 0.0 when none)."""
    newest = 0.0
    stack = [(folder, 0)]
    while stack:
        d, level = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if e.is_file(follow_symlinks=False):
                newest = max(newest, e.stat(follow_symlinks=False).st_mtime)
            elif e.is_dir(follow_symlinks=False) and level < depth:
                stack.append((Path(e.path), level + 1))
    return newest


def record_interactive_run(run_dir: str | Path, step: str, parameters: Mapping[str, Any], notebook: str = "",
                           started: str | None = None) -> bool:
    """Record in ``run_dir/run.json`` that ``step`` was just executed outside ``amt run`` (JupyterLab).

    The step's entry becomes ``status: ok``, ``executed_in: jupyterlab``, the notebook's path, its
    parameters (JSON values only), ``started``/``ended`` and :data:`LAB_FINGERPRINT`. Returns False and
    writes nothing when ``run_dir`` has no run.json or an ``amt run`` is running on it.
    """
    run_dir = Path(run_dir)
    record = _read_record(run_dir)
    if not record or record.get("status") == "running":
        return False
    params = {}
    for k, v in parameters.items():
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        params[k] = v
    now = _now()
    record.setdefault("steps", {})[step] = {"status": "ok", "executed_in": "jupyterlab", "notebook": notebook,
                                            "fingerprint": LAB_FINGERPRINT, "parameters": params,
                                            "started": started or now, "ended": now}
    record["changed_in_jupyterlab"] = now
    write_json(run_dir / "run.json", record)
    return True


def load_ipython_extension(ip: Any) -> None:
    """IPython extension (``--ext=amtlib.pipeline``, as ``make lab`` starts kernels): record each step a
    notebook of ``notebooks/`` writes into, after the cell that wrote it (:func:`record_interactive_run`)."""
    from amtlib.paths import STEPS, project_path

    notebook = os.environ.get("JPY_SESSION_NAME", "")  # the notebook's path, set by jupyter_server per kernel
    step = Path(notebook).stem
    if step not in STEPS or "PAPERMILL_INPUT_PATH" in os.environ:
        return
    t0, started = time.time(), _now()
    keys = [k for k in notebook_parameters(NOTEBOOKS_DIR / f"{step}.ipynb")] if (NOTEBOOKS_DIR / f"{step}.ipynb").is_file() else []
    seen = {"mtime": 0.0}

    def after_cell(*_: Any) -> None:
        run_dir = ip.user_ns.get("run_dir")
        if not isinstance(run_dir, (str, Path)):
            return
        root = project_path(run_dir)
        newest = _newest_mtime(root / step)
        if newest > max(t0, seen["mtime"]):
            seen["mtime"] = newest
            params = {k: ip.user_ns[k] for k in keys if k in ip.user_ns}
            if not record_interactive_run(root, step, params, notebook, started):
                log.warning("%s: not recorded in %s (no run.json, or an amt run holds it)", step, root / "run.json")

    ip.events.register("post_run_cell", after_cell)
