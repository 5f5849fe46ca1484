"""Open a tracked notebook in JupyterLab in headless Chromium, save it (Ctrl+S), and check `git status`.

    python benchmarks/lab_open_save.py [notebooks/02_split.ipynb] [--out DIR]

Starts `jupyter lab` as `make lab` does (the project's kernels from tools/jupyter, --allow-root as
root), drives Chromium over its DevTools protocol (no extra package: tornado's websocket client),
waits for the kernel, says whether Lab marked the notebook modified on opening (``lab_opened.png``),
presses Ctrl+S, takes a screenshot (``lab_saved.png`` in ``--out``, default ``/tmp/lab_open_save``) and prints ``git status --porcelain`` of the notebook: empty means opening and
saving left git clean. Exits 77 when no Chromium is installed, 1 when the save changed the file.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float = 90) -> str:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            return urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url}: no answer in {timeout:.0f} s")


class CDP:
    """The few DevTools calls this check needs."""

    def __init__(self, ws) -> None:
        self.ws, self.n = ws, 0

    async def call(self, method: str, **params) -> dict:
        self.n += 1
        await self.ws.write_message(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.read_message())
            if msg.get("id") == self.n:
                return msg.get("result", {})

    async def js(self, expr: str):
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r.get("result", {}).get("value")

    async def key(self, key: str, code: str, vk: int, modifiers: int = 0) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.call("Input.dispatchKeyEvent", type=kind, key=key, code=code, windowsVirtualKeyCode=vk,
                            nativeVirtualKeyCode=vk, modifiers=modifiers)


async def drive(debug_port: int, url: str, png: Path) -> None:
    from tornado.websocket import websocket_connect

    targets = json.loads(_wait_http(f"http://127.0.0.1:{debug_port}/json"))
    page = next(t for t in targets if t.get("type") == "page")
    cdp = CDP(await websocket_connect(page["webSocketDebuggerUrl"], max_message_size=64 << 20))
    await cdp.call("Page.enable")
    await cdp.call("Page.navigate", url=url)
    # wait for the notebook panel and an idle kernel (Lab fills in language_info from the kernel then)
    for _ in range(240):
        state = await cdp.js("(document.querySelector('.jp-Notebook') ? 'nb' : '') + "
                             "(document.querySelector('.jp-Notebook-ExecutionIndicator[data-status=\"idle\"]') ? ' idle' : '')")
        if state == "nb idle":
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.0)  # Lab fills in the kernel's language_info once the kernel is idle
    dirty = await cdp.js("!!document.querySelector('.lm-TabBar-tab.jp-mod-dirty, .jp-mod-dirty')")
    print(f"lab state before save: {state!r}; notebook marked modified on open: {dirty}", flush=True)
    shot = await cdp.call("Page.captureScreenshot", format="png")
    png.with_name("lab_opened.png").write_bytes(base64.b64decode(shot["data"]))
    await cdp.js("document.querySelector('.jp-Notebook').focus()")
    await asyncio.sleep(1.0)
    await cdp.key("s", "KeyS", 83, modifiers=2)  # Ctrl+S
    await asyncio.sleep(4.0)
    shot = await cdp.call("Page.captureScreenshot", format="png")
    png.write_bytes(base64.b64decode(shot["data"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebook", nargs="?", default="notebooks/02_split.ipynb")
    ap.add_argument("--out", default="/tmp/lab_open_save")
    args = ap.parse_args(argv)
    browser = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if browser is None:
        print("skipped: no chromium installed", file=sys.stderr)
        return 77
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port, debug_port = _free_port(), _free_port()
    env = {**os.environ, "JUPYTER_PATH": str(ROOT / "tools" / "jupyter")}
    lab_cmd = [str(ROOT / ".venv" / "bin" / "jupyter"), "lab", "--no-browser", f"--port={port}", "--ServerApp.token=",
               "--ServerApp.password=", f"--ServerApp.root_dir={ROOT}", "--ServerApp.disable_check_xsrf=True"]
    if os.geteuid() == 0:
        lab_cmd.append("--allow-root")
    before = subprocess.run(["git", "status", "--porcelain", args.notebook], cwd=ROOT, capture_output=True, text=True).stdout
    lab = subprocess.Popen(lab_cmd, env=env, stdout=open(out / "lab.log", "w"), stderr=subprocess.STDOUT)
    profile = tempfile.mkdtemp()
    chrome = None
    try:
        _wait_http(f"http://127.0.0.1:{port}/api")
        chrome = subprocess.Popen([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--remote-debugging-port={debug_port}",
                                   f"--user-data-dir={profile}", "--window-size=1400,900", "about:blank"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/lab/tree/{args.notebook}"
        asyncio.run(drive(debug_port, url, out / "lab_saved.png"))
    finally:
        for proc in (chrome, lab):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
    after = subprocess.run(["git", "status", "--porcelain", args.notebook], cwd=ROOT, capture_output=True, text=True).stdout
    saved = json.loads((ROOT / args.notebook).read_text())["metadata"]
    print(f"screenshot: {out / 'lab_saved.png'}")
    print(f"metadata after save: {json.dumps(saved, sort_keys=True)}")
    print(f"git status --porcelain {args.notebook}: before {before.strip()!r}, after {after.strip()!r}")
    return 0 if after == before else 1


if __name__ == "__main__":
    raise SystemExit(main())
