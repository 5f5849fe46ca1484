"""Background prefetching of training batches: the next batches are cropped and augmented while the
model trains on the current one (issue 13: on 2 CPU cores about 40% of the loop was batch making).

Each training batch is a pure function of (seed, iteration, rank) (:class:`amtlib.segmentation.augment.BatchSampler`),
so computing ``fn(i)`` ahead of time in another thread, strictly in order and by one thread only (the
sampler's MONAI transform is not thread-safe), gives exactly the batches, in exactly the order, of the
plain loop: a run with a fixed seed is bitwise the same with or without prefetching.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")

_DONE = object()


def _produce(fn: Callable[[int], object], start: int, end: int, stop: threading.Event, q: queue.Queue) -> None:
    """The thread's loop: ``(True, fn(i))`` in order, or ``(False, exception)`` once, then ``_DONE``;
    ends early when ``stop`` is set (waiting on a full queue included)."""

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    for i in range(start, end):
        if stop.is_set():
            return
        try:
            item: object = (True, fn(i))
        except BaseException as exc:  # handed to the consumer, raised there
            put((False, exc))
            return
        if not put(item):
            return
    put(_DONE)


class Prefetcher(Generic[T]):
    """Iterate ``fn(i)`` for ``i`` in ``range(start, end)``, computed ``depth`` items ahead in one thread.

    An exception raised by ``fn`` is re-raised by the iteration that would have returned that item.
    ``close()`` (also on ``with`` exit and when the object is collected) stops the thread; items not
    yet taken are dropped. ``depth=0`` computes each item on demand in the caller's thread.
    """

    def __init__(self, fn: Callable[[int], T], start: int, end: int, depth: int = 2) -> None:
        self.fn, self.start, self.end, self.depth = fn, int(start), int(end), int(depth)
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(self.depth, 1))
        self._thread: threading.Thread | None = None
        if self.depth > 0 and self.end > self.start:
            # the thread holds what it needs, not this object, so an abandoned Prefetcher is collected
            # (and its __del__ stops the thread)
            self._thread = threading.Thread(target=_produce, args=(fn, self.start, self.end, self._stop, self._queue),
                                            name="amt-batch-prefetch", daemon=True)
            self._thread.start()

    def __iter__(self) -> Iterator[T]:
        if self._thread is None:
            for i in range(self.start, self.end):
                yield self.fn(i)
            return
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _DONE or self._stop.is_set():  # closed while waiting: the item is dropped
                return
            ok, value = item
            if not ok:
                self.close()
                raise value
            yield value

    def close(self) -> None:
        """Stop the background thread and drop items not yet taken; a later iteration yields nothing."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> "Prefetcher[T]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self._stop.set()
