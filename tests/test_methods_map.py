"""The methods map resolves (function, tests, notebook cell), covers every function citing the paper, and is rendered."""

from __future__ import annotations

from pathlib import Path

from amtlib import methods_map as mm

ROOT = Path(__file__).resolve().parent.parent


def test_every_entry_resolves():
    assert mm.unresolved() == []


def test_every_function_citing_the_paper_has_an_entry():
    cited = mm.cited_functions()
    assert "amtlib.evaluation.lesions:match_lesions" in cited and "amtlib.evaluation.stats:table3" in cited
    assert mm.uncovered() == []


def test_a_broken_entry_is_reported():
    bad = (mm.Entry("s", "x", "amtlib.evaluation.lesions:no_such_function", ("tests/test_lesions.py::test_gone",), "05_froc", "no such cell("),
           mm.Entry("s", "x", "amtlib.nope:f", (), "", ""))
    problems = mm.unresolved(bad)
    assert any("has no no_such_function" in p for p in problems)
    assert any("test tests/test_lesions.py::test_gone not found" in p for p in problems)
    assert any("no code cell of notebooks/05_froc.ipynb" in p for p in problems)
    assert any("module amtlib.nope does not import" in p for p in problems)


def test_uncovered_names_a_cited_function_without_entry():
    entries = tuple(e for e in mm.ENTRIES if e.function != "amtlib.evaluation.lesions:match_lesions")
    assert mm.uncovered(entries) == ["amtlib.evaluation.lesions:match_lesions"]


def test_docs_methods_map_is_up_to_date():
    assert (ROOT / "docs" / "methods_map.md").read_text() == mm.markdown(), \
        "regenerate with: python -m amtlib.methods_map > docs/methods_map.md"


def test_table_points_at_the_notebook_cell():
    t = mm.table().set_index("function")
    assert t.loc["amtlib.evaluation.stats:froc_curve", "notebook"] == "05_froc"
    assert t.loc["amtlib.evaluation.stats:froc_curve", "cell"].startswith("cell ")
    assert list(mm.table().columns) == list(mm.COLUMNS)
