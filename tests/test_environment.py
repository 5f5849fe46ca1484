"""environment.yml (conda-forge) and pyproject.toml must list the same dependencies."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
#: conda-forge name -> PyPI name where they differ
CONDA_TO_PYPI = {"pytorch": "torch", "simpleitk": "SimpleITK", "pyradiomics": "pyradiomics-bhklab"}


def _name(spec: str) -> str:
    return re.split(r"[<>=!~ \[]", spec.strip(), maxsplit=1)[0].lower()


def test_conda_and_pip_dependency_lists_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_deps = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    pip_names = {_name(d) for d in pip_deps}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            conda_names |= {_name(d) for d in dep.get("pip", [])}
        elif _name(dep) not in {"python", "pip"}:
            conda_names.add(_name(CONDA_TO_PYPI.get(_name(dep), _name(dep))))
    assert conda_names == pip_names, (
        f"only in environment.yml: {sorted(conda_names - pip_names)}; only in pyproject.toml: {sorted(pip_names - conda_names)}"
    )
