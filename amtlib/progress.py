"""Progress of long loops a person can watch: a tqdm bar in a terminal, plain text lines elsewhere.

Used by every long loop of the pipeline (synthesis, cohort conversion, training, prediction, evaluation,
radiomics). Where it goes:

* in a terminal (stderr is a TTY): a tqdm bar, as before;
* elsewhere (a notebook run by papermill or opened in JupyterLab, a log file): one plain line on stdout
  at the start, then at most one every ``every_s`` seconds, and one at the end -- e.g.
  ``train: 400/2400 (17%), 6.1 it/s, ETA 5m28s, loss 0.612, tuning Dice 0.412``. Widgets would
  show frozen text in an executed notebook and tqdm's stderr output pink error-like boxes;
* also, when the environment variable :data:`PROGRESS_FILE_ENV` names a file (``amt run`` sets it for
  each notebook), every line is appended there, and the runner relays them to the terminal and
  ``run.log`` while the notebook runs (:func:`relay`).

Progress is output only: nothing here touches a random generator or the computed values.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")

#: Environment variable naming the file that progress lines are appended to (set by ``amt run``).
PROGRESS_FILE_ENV = "AMT_PROGRESS_FILE"
#: Seconds between two plain-text progress lines.
DEFAULT_EVERY_S = 15.0


def format_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3725`` -> ``1h02m``; NaN/inf/negative -> ``?``."""
    if not seconds == seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def format_line(desc: str, done: int, total: int | None, elapsed_s: float, rate: float | None,
                unit: str = "it", postfix: str = "") -> str:
    """One progress line: count, percentage, rate and ETA (unknown total: count and rate only).

    ``rate`` is ``unit`` per second over the items done in this call (``None`` or 0: no rate yet).
    """
    parts = [f"{desc}: {done}/{total}" if total else f"{desc}: {done}"]
    if total:
        parts[0] += f" ({100.0 * done / total:.0f}%)"
    if rate:
        parts.append(f"{rate:.2f} {unit}/s" if rate < 10 else f"{rate:.1f} {unit}/s")
        if total and done < total:
            parts.append(f"ETA {format_duration((total - done) / rate)}")
    if total and done >= total:
        parts.append(f"done in {format_duration(elapsed_s)}")
    if postfix:
        parts.append(postfix)
    return ", ".join(parts)


def _use_bar() -> bool:
    try:
        return sys.stderr.isatty() and os.environ.get(PROGRESS_FILE_ENV) is None
    except (AttributeError, ValueError):
        return False


class Progress:
    """Progress of ``total`` items: ``update(n, **postfix)`` after each, ``close()`` at the end.

    ``initial`` items count as done before this call (e.g. a resumed training); the rate and ETA use
    only the items done here. ``enabled=False`` prints nothing. ``bar``: ``None`` chooses tqdm in a
    terminal, plain lines elsewhere. ``clock`` and ``emit`` are injectable for tests.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", initial: int = 0, enabled: bool = True,
                 every_s: float = DEFAULT_EVERY_S, bar: bool | None = None,
                 emit: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.unit, self.initial = total, desc, unit, int(initial)
        self.done, self.enabled, self.every_s, self.clock = int(initial), enabled, float(every_s), clock
        self.postfix = ""
        self._t0 = clock()
        self._last = self._t0
        self._closed = False
        self._emit = emit or _emit_line
        self._bar = None
        if enabled and (bar if bar is not None else (emit is None and _use_bar())):
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
        elif enabled:
            self._emit(self.line())

    @property
    def rate(self) -> float | None:
        dt = self.clock() - self._t0
        n = self.done - self.initial
        return n / dt if dt > 0 and n > 0 else None

    def line(self) -> str:
        """The current progress line."""
        return format_line(self.desc, self.done, self.total, self.clock() - self._t0, self.rate, self.unit, self.postfix)

    def set_postfix(self, **values: Any) -> None:
        """Extra ``name value`` fields shown after the ETA (e.g. loss, tuning Dice)."""
        self.postfix = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in values.items())
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def update(self, n: int = 1, **postfix: Any) -> None:
        """``n`` more items done; a line is printed when ``every_s`` has passed since the last."""
        if not self.enabled or self._closed:
            return
        self.done += n
        if postfix:
            self.set_postfix(**postfix)
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self.clock()
        if now - self._last >= self.every_s and (self.total is None or self.done < self.total):
            self._last = now
            self._emit(self.line())

    def close(self) -> None:
        """Print the final line (once)."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
            line = self.line()
            _append_to_file(line)
        else:
            self._emit(self.line())

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True,
          **kwargs: Any) -> Iterator[T]:
    """Iterate ``iterable`` with a :class:`Progress` (``total`` defaults to ``len(iterable)``)."""
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with Progress(total, desc, unit, enabled=enabled, **kwargs) as p:
        for item in iterable:
            yield item
            p.update(1)


def _append_to_file(line: str) -> None:
    path = os.environ.get(PROGRESS_FILE_ENV)
    if path:
        try:
            with open(path, "a") as f:
                f.write(line + "\n")
        except OSError:
            pass  # progress is never worth failing a run


def _emit_line(line: str) -> None:
    print(line, flush=True)
    _append_to_file(line)


@contextmanager
def relay(path: str | Path, say: Callable[[str], None], prefix: str = "    ", poll_s: float = 0.5) -> Iterator[Path]:
    """While the block runs, child processes append progress lines to ``path``; pass each to ``say``.

    Sets :data:`PROGRESS_FILE_ENV` for the block (kernels started inside inherit it), truncates the
    file first, and relays the last lines when the block ends, also on error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    old = os.environ.get(PROGRESS_FILE_ENV)
    os.environ[PROGRESS_FILE_ENV] = str(path)
    stop = threading.Event()
    pos = 0

    def drain() -> None:
        nonlocal pos
        try:
            with open(path, "rb") as f:
                f.seek(pos)
                chunk = f.read()
        except OSError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]
        pos += len(complete)
        for ln in complete.decode("utf-8", "replace").splitlines():
            if ln.strip():
                say(prefix + ln)

    def loop() -> None:
        while not stop.wait(poll_s):
            drain()

    thread = threading.Thread(target=loop, name="amt-progress-relay", daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join()
        drain()
        if old is None:
            os.environ.pop(PROGRESS_FILE_ENV, None)
        else:
            os.environ[PROGRESS_FILE_ENV] = old
