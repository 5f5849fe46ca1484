"""amtlib in layers: every import follows the layer table of docs/architecture.md, no import cycle anywhere
(function-level imports included), the per-case geometry and the subgroup vocabulary import nothing from
amtlib, and the evaluation stack never needs torch."""

from __future__ import annotations

import ast
import re
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


@pytest.mark.parametrize("module", ["amtlib.evaluation.lesions", "amtlib.subgroups", "amtlib.evaluation.metrics", "amtlib.io",
                                    "amtlib.errors", "amtlib.geometry"])
def test_ground_and_geometry_modules_import_nothing_above_them(module):
    allowed = {"amtlib.evaluation.lesions": {"amtlib.geometry"}, "amtlib.subgroups": set(), "amtlib.evaluation.metrics": set(),
               "amtlib.io": {"amtlib.errors"}, "amtlib.errors": set(), "amtlib.geometry": set()}[module]
    assert import_graph()[module] <= allowed


# ---------------------------------------------------------------------------------------- layers

DOC = ROOT.parent / "docs" / "architecture.md"


def layer_table(text: str) -> list[tuple[str, list[str]]]:
    """``[(layer, [module or subpackage names])]`` from the table of the "## Layers" section, top row first."""
    section = text.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and cells[0] != "layer" and set(cells[0]) - set("-: "):
            rows.append((cells[0], [n.rstrip("/") for n in re.findall(r"`([\w/]+)`", cells[1])]))
    return rows


def _unit(module: str) -> str:
    """``amtlib.dicom.export`` -> ``dicom``, ``amtlib.io`` -> ``io``: what a row of the table names."""
    return module.split(".")[1]


def wrong_way_imports(graph: dict[str, set[str]], table: list[tuple[str, list[str]]]) -> list[str]:
    """Every import from a layer below the importing module's (a lower row of the table)."""
    rank = {name: i for i, (_, names) in enumerate(table) for name in names}
    layer = [name for name, _ in table]
    return sorted(f"{a} ({layer[rank[_unit(a)]]}) imports {b} ({layer[rank[_unit(b)]]})"
                  for a, deps in graph.items() if a != "amtlib" for b in deps
                  if _unit(a) in rank and _unit(b) in rank and rank[_unit(b)] > rank[_unit(a)])


def test_the_layer_table_names_every_module_once():
    table = layer_table(DOC.read_text())
    assert [name for name, _ in table] == ["ground", "data", "evaluation", "model", "classify", "figures", "report", "runner"]
    names = [n for _, row in table for n in row]
    assert len(names) == len(set(names)), "a module in two layers"
    units = {_unit(m) for m in import_graph() if m != "amtlib" and not m.endswith("__main__")}
    assert units == set(names), f"not in the table: {sorted(units - set(names))}; in the table, not in amtlib: {sorted(set(names) - units)}"


def test_no_import_goes_the_wrong_way():
    assert wrong_way_imports(import_graph(), layer_table(DOC.read_text())) == []


def test_a_planted_wrong_way_import_is_caught():
    table = layer_table(DOC.read_text())
    graph = {m: set(d) for m, d in import_graph().items()}
    graph["amtlib.dicom.export"].add("amtlib.evaluation.metrics")  # the one issue 24 found (data -> evaluation)
    assert wrong_way_imports(graph, table) == [
        "amtlib.dicom.export (data) imports amtlib.evaluation.metrics (evaluation)"]


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
