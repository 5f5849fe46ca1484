#!/usr/bin/env python3
"""Strip what running a notebook adds to a tracked one: outputs, execution counts, cell metadata other
than ``tags``, and notebook metadata other than ``kernelspec`` and ``language_info`` (``make test``
checks they are clean).

The tracked notebooks carry the ``kernelspec`` and ``language_info`` JupyterLab writes when it opens
them, so opening and saving one leaves ``git status`` clean; another Python's ``language_info`` (its
version) is accepted too, and kept as it is.

Usage: python tools/nbclean.py notebooks/*.ipynb        (rewrites only notebooks that changed)
       python tools/nbclean.py --check notebooks/*.ipynb (exit 1 and name the dirty ones)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEEP_NOTEBOOK_METADATA = ("kernelspec", "language_info")
#: What JupyterLab writes into a notebook it opens with the project's kernel (python3 of the venv, as
#: `make lab` starts it); tracked notebooks carry it so that opening and saving one changes nothing.
LAB_METADATA = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                      "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                      "pygments_lexer": "ipython3", "version": "3.11.7"},
}


def clean(nb: dict) -> dict:
    """A copy of ``nb`` (nbformat 4 JSON) with only sources, ids and tags left."""
    out = {**nb, "metadata": {k: v for k, v in nb.get("metadata", {}).items() if k in KEEP_NOTEBOOK_METADATA}}
    cells = []
    for cell in nb.get("cells", []):
        c = {**cell, "metadata": {k: v for k, v in cell.get("metadata", {}).items() if k == "tags"}}
        if c.get("cell_type") == "code":
            c["outputs"], c["execution_count"] = [], None
        c.pop("attachments", None) if not c.get("attachments") else None
        cells.append(c)
    out["cells"] = cells
    return out


def dirty(path: Path) -> bool:
    nb = json.loads(path.read_text())
    return clean(nb) != nb


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [Path(a) for a in argv if a != "--check"]
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    bad = [p for p in paths if dirty(p)]
    if check:
        for p in bad:
            print(f"{p}: has outputs or Lab metadata; run `python tools/nbclean.py {p}`", file=sys.stderr)
        return 1 if bad else 0
    for p in bad:
        p.write_text(json.dumps(clean(json.loads(p.read_text())), indent=1, sort_keys=True, ensure_ascii=False) + "\n")
        print(f"cleaned {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
