"""Open a run's report/index.html in headless Chromium, save screenshots and measure the page's width.

    python benchmarks/screenshot_report.py runs/demo [--out DIR] [--widths 1280 1400]

For each window width: ``report_<width>_top.png`` (the headline and the summary), and shots of the
sections a reviewer reads first: ``report_<width>_differences.png``, ``report_<width>_related.png``
and ``report_<width>_related2.png`` (the two related papers), ``report_<width>_checklist.png``, plus ``report_<width>_lightbox.png`` (a
figure clicked open). Prints the page's scroll width: wider than the window means horizontal overflow
(exit 1). Default out: ``RUN/report/screenshots``. Needs Debian's ``chromium``; exits 77 (skip) with a
message when no browser is installed. The browser runs offline with a throwaway profile, driven over
its DevTools protocol (tornado's websocket client, no extra package).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars")
#: Element (CSS selector) -> screenshot name: what a reviewer reads first.
SHOTS: dict[str, str] = {"h3.differences": "differences", "h3.related": "related", "#checklist": "checklist",
                         "h3.conventions": "conventions"}


def find_browser() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _shoot(port: int, page: Path, out: Path, width: int, height: int) -> dict:
    from tornado.websocket import websocket_connect

    t0 = time.time()
    while True:
        try:
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2).read())
            break
        except OSError:
            if time.time() - t0 > 60:
                raise
            await asyncio.sleep(0.3)
    tab = next(t for t in targets if t.get("type") == "page")
    ws = await websocket_connect(tab["webSocketDebuggerUrl"], max_message_size=256 << 20)
    n = 0

    async def call(method: str, **params) -> dict:
        nonlocal n
        n += 1
        await ws.write_message(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(await ws.read_message())
            if msg.get("id") == n:
                return msg.get("result", {})

    async def js(expr: str):
        return (await call("Runtime.evaluate", expression=expr, returnByValue=True)).get("result", {}).get("value")

    await call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
    await call("Page.enable")
    t_load = time.perf_counter()
    await call("Page.navigate", url=page.resolve().as_uri())
    for _ in range(200):
        if await js("document.readyState") == "complete":
            break
        await asyncio.sleep(0.1)
    load_s = time.perf_counter() - t_load
    info = {"width": width, "scroll_width": await js("document.documentElement.scrollWidth"), "load_s": round(load_s, 2),
            "wide_elements": await js(f"Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > {width} + 1)"
                                      ".slice(0, 5).map(e => e.tagName + '.' + e.className)")}

    async def save(name: str, y: float = 0.0, h: float | None = None) -> None:
        shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                          clip={"x": 0, "y": y, "width": width, "height": h or height, "scale": 1})
        (out / f"report_{width}_{name}.png").write_bytes(base64.b64decode(shot["data"]))

    await save("top")
    for selector, name in SHOTS.items():
        ys = await js(f"Array.from(document.querySelectorAll('{selector}')).map(e => e.getBoundingClientRect().top + window.scrollY)")
        for k, y in enumerate(ys or []):
            await save(name if k == 0 else f"{name}{k + 1}", max(0.0, y - 10), height)
    opened = await js("(function(){var i=document.querySelector('figure img'); if(!i) return false; i.click();"
                      " return document.getElementById('lightbox').classList.contains('open')})()")
    info["lightbox_opens"] = bool(opened)
    if opened:
        await save("lightbox", await js("window.scrollY"), height)
    ws.close()
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="run folder holding report/index.html (amt report --run RUN writes it)")
    p.add_argument("--out", default=None)
    p.add_argument("--widths", type=int, nargs="+", default=[1280, 1400])
    p.add_argument("--height", type=int, default=1000)
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
    overflow = False
    for width in args.widths:
        port = _free_port()
        with tempfile.TemporaryDirectory() as profile:
            proc = subprocess.Popen([browser, *FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
                                     f"--window-size={width},{args.height}", "about:blank"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                info = asyncio.run(_shoot(port, page, out, width, args.height))
            finally:
                proc.terminate()
                proc.wait(timeout=20)
        overflow |= info["scroll_width"] > width
        print(json.dumps(info))
    print(f"screenshots in {out}")
    return 1 if overflow else 0


if __name__ == "__main__":
    raise SystemExit(main())
