#!/usr/bin/env python3
"""Build a clean .ipynb from a percent-format script (the notebooks' editable source).

    # %% [markdown]
    # # Title
    # %% tags=["parameters"]
    run_dir = "runs/demo"
    # %%
    from amtlib import ...

Usage: python tools/py2nb.py SOURCE.py notebooks/NN_step.ipynb
The output has no outputs or execution counts, the metadata JupyterLab writes (tools/nbclean.py
LAB_METADATA), and exactly the tags given.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat

HEADER = re.compile(r"^# %%(?P<md> \[markdown\])?(?:\s+tags=\[(?P<tags>[^\]]*)\])?\s*$")


def convert(text: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from nbclean import LAB_METADATA  # the metadata Lab writes: opening and saving changes nothing

    nb.metadata.update(json.loads(json.dumps(LAB_METADATA)))
    cells: list[tuple[bool, list[str], list[str]]] = []
    for line in text.splitlines():
        m = HEADER.match(line)
        if m:
            tags = [t.strip().strip("\"'") for t in (m["tags"] or "").split(",") if t.strip()]
            cells.append((bool(m["md"]), tags, []))
        elif cells:
            cells[-1][2].append(line)
    for is_md, tags, lines in cells:
        while lines and not lines[-1].strip():
            lines.pop()
        if is_md:
            src = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in lines)
            cell = nbformat.v4.new_markdown_cell(src)
        else:
            cell = nbformat.v4.new_code_cell("\n".join(lines))
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):  # stable ids keep diffs small
        cell["id"] = f"cell-{i:02d}"
    return nb


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = argv
    nb = convert(open(src).read())
    nbformat.validate(nb)
    nbformat.write(nb, dst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
