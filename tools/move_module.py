"""Move flat amtlib modules into a subpackage and rewrite every reference (issue 24's small steps).

    python tools/move_module.py dicom dicomio annotations export dicom_predictions=predictions

moves ``amtlib/<old>.py`` to ``amtlib/<package>/<new>.py`` with ``git mv`` (history kept) and rewrites,
in every tracked text file: dotted names (``amtlib.old`` -> ``amtlib.package.new``), paths
(``amtlib/old.py``) and ``from amtlib import a, old as x`` lines (split into one line per package, the
old name kept as the alias so the code below it reads as before). The package's ``__init__.py`` must
exist. Run the tests after; the script prints the files it changed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = {".py", ".ipynb", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".sh", ".json"}


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return [ROOT / p for p in out.splitlines() if Path(p).suffix in TEXT or Path(p).name in {"Makefile", "run"}]


def _rewrite_from_import(line: str, package: str, moves: dict[str, str]) -> str:
    """``from amtlib import a, old as x`` -> the moved names on their own ``from amtlib.package`` line."""
    m = re.match(r'^(\s*(?:"\s*)?)from amtlib import (.+?)(\s*(?:\\n)?"?,?\s*)$', line)
    if not m or "(" in m.group(2):
        return line
    lead, names, tail = m.groups()
    stay, moved = [], []
    for part in (p.strip() for p in names.split(",")):
        name, _, alias = part.partition(" as ")
        name, alias = name.strip(), alias.strip()
        if name in moves:
            new = moves[name]
            alias = alias or (name if new != name else "")
            moved.append(f"{new} as {alias}" if alias and alias != new else new)
        else:
            stay.append(part)
    if not moved:
        return line
    lines = [f"from amtlib import {', '.join(stay)}"] if stay else []
    lines.append(f"from amtlib.{package} import {', '.join(moved)}")
    if '"' not in lead:  # Python source
        return "\n".join(lead + l + tail for l in lines)
    # a notebook's JSON source line: every line but the last ends in a newline inside its own string
    indent = lead[:lead.index('"')]
    return (",\n".join(f'{lead}{l}\\n"' for l in lines[:-1]) + (",\n" if len(lines) > 1 else "")
            + (indent if len(lines) > 1 else "") + ('"' if len(lines) > 1 else lead) + lines[-1] + tail)


def main(argv: list[str]) -> int:
    package, specs = argv[0], argv[1:]
    moves = dict((s.split("=") + [s])[:2] if "=" in s else (s, s) for s in specs)
    pkg_dir = ROOT / "amtlib" / package
    if not (pkg_dir / "__init__.py").is_file():
        sys.exit(f"{pkg_dir}/__init__.py is missing: create the package first")
    for old, new in moves.items():
        subprocess.run(["git", "mv", f"amtlib/{old}.py", f"amtlib/{package}/{new}.py"], cwd=ROOT, check=True)
    changed = []
    for path in _tracked():
        if not path.is_file():
            continue
        text = path.read_text()
        new_text = text
        for old, new in moves.items():
            new_text = re.sub(rf"\bamtlib\.{old}\b(?!\.py)", f"amtlib.{package}.{new}", new_text)
            new_text = re.sub(rf"\bamtlib/{old}\.py\b", f"amtlib/{package}/{new}.py", new_text)
        new_text = "\n".join(_rewrite_from_import(l, package, moves) for l in new_text.split("\n"))
        if new_text != text:
            path.write_text(new_text)
            changed.append(str(path.relative_to(ROOT)))
    print("\n".join(changed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
