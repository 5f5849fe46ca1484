"""Run the numbered notebooks in order with papermill and record provenance (``amt run``).

A run folder (``runs/<name>/``) receives each executed notebook, every artifact the notebooks write,
``config.yaml`` (the resolved parameters), ``run.log`` and ``run.json``: git commit and dirty flag,
config, package versions, platform, device, seeds, start/end times and per-step durations.

Each notebook gets only the parameters its ``parameters`` cell declares, plus ``run_dir``. A step is
skipped when its fingerprint (notebook source, injected parameters, amtlib source, fingerprints of the
steps before it) equals that of its last successful run, unless ``force``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from amtlib.io import write_json, write_text

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
DEFAULT_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
KERNEL_NAME = "python3"
#: Packages whose versions go into run.json.
VERSIONED_PACKAGES = (
    "amtlib", "torch", "monai", "numpy", "scipy", "pandas", "pydicom", "nibabel", "SimpleITK",
    "connected-components-3d", "pyradiomics-bhklab", "statsmodels", "matplotlib", "seaborn", "papermill",
)
_STEP_RE = re.compile(r"^(\d\d)_([A-Za-z0-9_]+)\.ipynb$")


class StepFailed(RuntimeError):
    """A notebook raised; the message names the step, the cell, the error and the executed copy."""


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
        raise ValueError(f"{path}: config file not found")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a mapping of parameter: value, got {type(cfg).__name__}")
    nested = [k for k, v in cfg.items() if isinstance(v, dict)]
    if nested:
        raise ValueError(f"{path}: parameters must be flat; nested mappings under {nested}")
    return cfg


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["train_iterations=50", "device=cpu"]`` -> typed dict (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"-p {item!r}: expected key=value")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


# ---------------------------------------------------------------------------------------- steps


def discover_steps(notebooks_dir: str | Path = NOTEBOOKS_DIR) -> list[Step]:
    """The ``NN_name.ipynb`` notebooks of ``notebooks_dir`` in numeric order."""
    nb_dir = Path(notebooks_dir)
    steps = [Step(p.stem, p) for p in sorted(nb_dir.glob("*.ipynb")) if _STEP_RE.match(p.name)]
    if not steps:
        raise ValueError(f"{nb_dir}: no numbered notebooks (NN_name.ipynb) found")
    return steps


def resolve_step(steps: Sequence[Step], key: str) -> Step:
    """Find a step by full name (``03_train``), number (``03``/``3``) or short name (``train``)."""
    key = key.strip()
    for s in steps:
        if key in (s.name, s.short) or (key.isdigit() and int(key) == int(s.number)):
            return s
    raise ValueError(f"unknown step {key!r}; steps are {', '.join(s.name for s in steps)}")


def select_steps(
    steps: Sequence[Step], only: Sequence[str] = (), start: str | None = None, stop: str | None = None
) -> list[Step]:
    """Steps chosen by ``--only`` (any number) or the inclusive range ``--from``/``--to``."""
    if only and (start or stop):
        raise ValueError("--only cannot be combined with --from/--to")
    if only:
        chosen = {resolve_step(steps, k).name for k in only}
        return [s for s in steps if s.name in chosen]
    names = [s.name for s in steps]
    i = names.index(resolve_step(steps, start).name) if start else 0
    j = names.index(resolve_step(steps, stop).name) if stop else len(steps) - 1
    if i > j:
        raise ValueError(f"--from {start} comes after --to {stop}")
    return list(steps[i : j + 1])


def notebook_parameters(notebook: str | Path) -> dict[str, Any]:
    """Names and defaults declared in a notebook's ``parameters`` cell (via papermill)."""
    import ast

    import papermill as pm

    nb = json.loads(Path(notebook).read_text())
    cells = [c for c in nb.get("cells", []) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{notebook}: {len(cells)} cells tagged 'parameters'; papermill needs exactly one")
    source = "".join(cells[0].get("source", []))
    try:
        assigned = [t.id for node in ast.parse(source).body if isinstance(node, (ast.Assign, ast.AnnAssign))
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                    if isinstance(t, ast.Name)]
    except SyntaxError as exc:
        raise ValueError(f"{notebook}: parameters cell is not valid Python ({exc})") from None
    params = pm.inspect_notebook(str(notebook))
    missed = [name for name in assigned if name not in params]
    if missed:
        # papermill silently drops lines it cannot parse (e.g. an '=' inside a comment); such a
        # parameter would never receive its configured value.
        raise ValueError(f"{notebook}: papermill cannot parse the parameter line(s) of {missed}; "
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


def library_hash() -> str:
    """Hash of every ``amtlib`` source and data file, so a code change re-runs the steps."""
    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parent
    for p in sorted(pkg.rglob("*")):
        if p.is_file() and p.suffix in {".py", ".yaml", ".json"} and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(pkg)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def fingerprint(step: Step, params: Mapping[str, Any], upstream: Sequence[str], lib_hash: str) -> str:
    """Identity of one step's execution: notebook, parameters, library and upstream fingerprints."""
    payload = {
        "notebook": notebook_source_hash(step.notebook),
        "params": {k: v for k, v in sorted(params.items())},
        "library": lib_hash,
        "upstream": list(upstream),
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


def _failure_message(step: Step, executed: Path, exc: BaseException) -> str:
    """One paragraph: which notebook, which cell, what error, where the traceback is."""
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
        f"Fix the cause, then re-run this step alone with `amt run --only {step.name}`."
    )


def execute_step(step: Step, params: Mapping[str, Any], run_dir: Path, kernel_name: str = KERNEL_NAME) -> float:
    """Execute one notebook into ``run_dir/notebooks/``; return its duration in seconds."""
    import papermill as pm

    from amtlib.kernel import IPCKernelManager

    out_nb = run_dir / "notebooks" / step.notebook.name
    out_nb.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            str(step.notebook),
            str(out_nb),
            parameters=dict(params),
            kernel_name=kernel_name,
            cwd=str(REPO_ROOT),
            progress_bar=False,
            report_mode=False,
            kernel_manager_class=IPCKernelManager,  # local sockets: no "TCP without encryption" warning
        )
    except pm.PapermillExecutionError as exc:
        raise StepFailed(_failure_message(step, out_nb, exc)) from None
    except Exception as exc:  # kernel death, timeouts, missing kernel
        raise StepFailed(_failure_message(step, out_nb, exc)) from None
    return time.perf_counter() - t0


def _papermill_duration(executed: Path) -> float | None:
    try:
        nb = json.loads(executed.read_text())
        return float(nb["metadata"]["papermill"]["duration"])
    except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError):
        return None


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
) -> RunResult:
    """Execute the selected notebooks in order; raise :class:`StepFailed` on the first failure.

    ``out`` defaults to ``runs/<config stem>``. ``echo`` receives one progress line per event.
    """
    config_path = Path(config_path)
    config = {**load_config(config_path), **(overrides or {})}
    run_dir = Path(out) if out else REPO_ROOT / "runs" / config_path.stem
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)

    steps = discover_steps(notebooks_dir)
    chosen = select_steps(steps, only, start, stop)
    declared_all = set().union(*(notebook_parameters(s.notebook) for s in steps))
    unknown = sorted(set(config) - declared_all)
    if unknown:
        log.warning("config keys not declared by any notebook (typo?): %s", ", ".join(unknown))

    previous = _read_record(run_dir)
    prev_steps: dict[str, Any] = previous.get("steps", {})
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
        "steps": dict(prev_steps),
    }
    write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=True))
    write_json(run_dir / "run.json", record)
    logfile = run_dir / "run.log"

    def say(msg: str) -> None:
        echo(msg)
        with open(logfile, "a") as f:
            f.write(f"{_now()} {msg}\n")

    lib = library_hash()
    result = RunResult(run_dir=run_dir, record=record)
    t_run = time.perf_counter()
    upstream: list[str] = []
    chosen_names = {s.name for s in chosen}
    say(f"run {run_dir} ({len(chosen)} of {len(steps)} steps, config {config_path.name})")
    try:
        for step in steps:
            params = step_parameters(step, config, run_dir)
            fp = fingerprint(step, params, upstream, lib)
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
            try:
                from amtlib.progress import relay  # the notebook's progress lines, live on the terminal and in run.log

                with relay(run_dir / "progress.log", say):
                    wall = execute_step(step, params, run_dir, kernel_name)
            except StepFailed:
                entry.update(status="failed", ended=_now())
                raise
            entry.update(status="ok", ended=_now(), wall_s=round(wall, 2),
                         duration_s=round(_papermill_duration(executed_nb) or wall, 2))
            result.executed.append(step.name)
            upstream.append(fp)
            write_json(run_dir / "run.json", record)
            say(f"[{k}/{len(chosen)}] {step.name}: done in {wall:.1f} s (total {time.perf_counter() - t_run:.1f} s)")
        record["status"] = "ok"
    except StepFailed as exc:
        record["status"] = "failed"
        record["error"] = str(exc)
        say(f"FAILED: {exc}")
        raise
    finally:
        record["ended"] = _now()
        record["duration_s"] = round(time.perf_counter() - t_run, 2)
        write_json(run_dir / "run.json", record)
    say(f"finished in {record['duration_s']:.1f} s: {len(result.executed)} run, {len(result.skipped)} skipped")
    return result
