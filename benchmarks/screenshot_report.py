"""Open a run's report/index.html in headless Chromium and save screenshots (a check a person looks at).

    python benchmarks/screenshot_report.py runs/demo [--out DIR] [--width 1280] [--height 2400]

Writes ``report_top.png`` (the Summary and the start of the comparison) and ``report_full.png`` (a
tall page) into ``--out`` (default ``RUN/report/screenshots``). Needs Debian's ``chromium``
(``apt-get install chromium``); exits 77 (skip) with a message when no browser is installed. The
browser runs offline with a throwaway profile: a page that needed the network would show broken images.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars")


def find_browser() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


def screenshot(browser: str, page: Path, png: Path, width: int, height: int) -> float:
    """One screenshot of ``page`` at ``width`` x ``height``; returns seconds taken."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={width},{height}",
               page.resolve().as_uri()]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or not png.is_file():
        raise RuntimeError(f"{browser} failed ({r.returncode}) on {page}: {r.stderr.strip()[-500:]}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="run folder holding report/index.html (amt report --run RUN writes it)")
    p.add_argument("--out", default=None)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=2400)
    args = p.parse_args(argv)
    page = Path(args.run) / "report" / "index.html"
    if not page.is_file():
        print(f"{page}: not found; run `amt report --run {args.run}` first", file=sys.stderr)
        return 2
    browser = find_browser()
    if browser is None:
        print("skipped: no chromium installed (apt-get install chromium)", file=sys.stderr)
        return 77
    out = Path(args.out) if args.out else page.parent / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    for name, h in (("report_top.png", 1000), ("report_full.png", args.height)):
        s = screenshot(browser, page, out / name, args.width, h)
        print(f"{out / name}: {args.width}x{h}, {(out / name).stat().st_size / 1024:.0f} KiB, {s:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
