"""amtlib in layers: no import cycle anywhere (function-level imports included), the per-case geometry and
the subgroup vocabulary import nothing from amtlib, and the evaluation stack never needs torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "amtlib"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the amtlib modules it imports (anywhere in the file), from the source (AST)."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("amtlib"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    deps.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("amtlib")}
        # a package's own __init__ and the bare package are not edges
        graph[name] = {d for d in deps if d in modules and d != name and d != "amtlib" and not name.startswith(d + ".")}
    return graph


def third_party(module: str) -> set[str]:
    path = ROOT.parent / (module.replace(".", "/") + ".py")
    if not path.is_file():
        path = ROOT.parent / module.replace(".", "/") / "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
    return found


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle reachable by depth-first search (each reported once, rotated to its minimum)."""
    cycles: set[tuple[str, ...]] = set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cyc = path[path.index(nxt):]
                i = cyc.index(min(cyc))
                cycles.add(tuple(cyc[i:] + cyc[:i]))
            elif len(path) < 25:
                walk(nxt, path + [nxt])

    for start in sorted(graph):
        walk(start, [start])
    return [list(c) for c in sorted(cycles)]


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_amtlib():
    cycles = find_cycles(import_graph())
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c + [c[0]]) for c in cycles)


@pytest.mark.parametrize("module", ["amtlib.evaluation.lesions", "amtlib.subgroups", "amtlib.evaluation.metrics", "amtlib.io", "amtlib.errors"])
def test_ground_and_geometry_modules_import_nothing_above_them(module):
    allowed = {"amtlib.evaluation.lesions": set(), "amtlib.subgroups": set(), "amtlib.evaluation.metrics": set(),
               "amtlib.io": {"amtlib.errors"}, "amtlib.errors": set()}[module]
    assert import_graph()[module] <= allowed


def test_evaluation_never_needs_torch():
    """Bring-your-own-predictions works without the model stack (DESIGN: evaluation never needs torch)."""
    graph = import_graph()
    seen, todo = set(), ["amtlib.evaluation.evaluate"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph[m])
    heavy = {m for m in seen if {"torch", "monai"} & third_party(m)}
    assert heavy == set(), f"amt evaluate pulls torch through {sorted(heavy)}"
