"""amtlib.segmentation.prefetch.Prefetcher: how far ahead it computes, one producer thread in order, what
reaches the consumer when ``fn`` raises, and stopping on ``with`` exit, ``close()`` and collection.

tests/test_newcomer.py already checks the values in order, the thread's name, ``depth=0``, an empty range,
the re-raise at the failing item and that ``close()`` ends a blocked thread; this file tests the rest.
Every consumer that could hang runs in a helper thread with a deadline, so a broken Prefetcher fails
the test instead of blocking the suite.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from typing import Callable

import pytest

from amtlib.segmentation.prefetch import Prefetcher


class _Recorder:
    """``fn`` for a Prefetcher: returns ``10 * i`` and records each call's index and thread."""

    def __init__(self, fail_at: int | None = None, exc: BaseException | None = None) -> None:
        self.calls: list[int] = []
        self.threads: set[str] = set()
        self.fail_at, self.exc = fail_at, exc

    def __call__(self, i: int) -> int:
        self.calls.append(i)
        self.threads.add(threading.current_thread().name)
        if i == self.fail_at:
            raise self.exc  # type: ignore[misc]
        return 10 * i


def _within(seconds: float, body: Callable[[], object]) -> tuple[bool, list]:
    """Run ``body`` in a daemon thread; (finished in time, [its result or the exception it raised])."""
    out: list = []

    def run() -> None:
        try:
            out.append(body())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive(), out


def _wait_for(cond: Callable[[], bool], seconds: float = 2.0) -> None:
    end = time.monotonic() + seconds
    while not cond() and time.monotonic() < end:
        time.sleep(0.005)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_producer_runs_at_most_depth_plus_one_items_ahead(depth):
    fn = _Recorder()
    p = Prefetcher(fn, 0, 100, depth=depth)
    try:
        _wait_for(lambda: len(fn.calls) >= depth + 1)
        time.sleep(0.3)  # would it go further?
        assert fn.calls == list(range(depth + 1))  # depth queued, one computed and waiting for a slot
        it = iter(p)
        assert [next(it), next(it)] == [0, 10]
        _wait_for(lambda: len(fn.calls) >= depth + 3)
        time.sleep(0.3)
        assert fn.calls == list(range(depth + 3))
    finally:
        p.close()


def test_one_producer_thread_calls_fn_strictly_in_order():
    fn = _Recorder()
    done, out = _within(10, lambda: list(Prefetcher(fn, 7, 57, depth=3)))
    assert done and out == [[10 * i for i in range(7, 57)]]
    assert fn.calls == list(range(7, 57)) and fn.threads == {"amt-batch-prefetch"}


def test_depth_zero_is_lazy_and_runs_in_the_callers_thread():
    fn = _Recorder()
    p = Prefetcher(fn, 2, 5, depth=0)
    time.sleep(0.05)
    assert fn.calls == [] and p._thread is None
    assert list(p) == [20, 30, 40] and fn.threads == {threading.current_thread().name}


class _Abort(BaseException):
    """Not an ``Exception``: like KeyboardInterrupt, it must still reach the consumer."""


@pytest.mark.parametrize("exc", [ValueError("crop outside the volume"), _Abort("stop")])
def test_the_producers_exception_object_reaches_the_consumer_and_nothing_after_it_runs(exc):
    fn = _Recorder(fail_at=3, exc=exc)
    p = Prefetcher(fn, 0, 50, depth=2)
    got: list[int] = []

    def consume() -> None:
        for v in p:
            got.append(v)

    done, out = _within(10, consume)
    assert done, "the consumer blocked instead of receiving the producer's exception"
    assert out and out[0] is exc  # the very object fn raised, with its type
    assert got == [0, 10, 20]
    assert fn.calls == [0, 1, 2, 3]  # the producer stopped at the failing item
    assert not p._thread.is_alive()


def test_with_exit_stops_the_thread_and_computes_nothing_more():
    fn = _Recorder()
    with Prefetcher(fn, 0, 1000, depth=2) as p:
        it = iter(p)
        assert next(it) == 0
        thread = p._thread
    assert not thread.is_alive()
    n = len(fn.calls)
    time.sleep(0.2)
    assert len(fn.calls) == n <= 4


def test_close_from_inside_fn_does_not_deadlock():
    holder: dict[str, Prefetcher] = {}
    ready = threading.Event()
    errors: list[BaseException] = []

    def fn(i: int) -> int:
        if i == 1:
            ready.wait(2)
            try:
                holder["p"].close()  # the worker closing itself must not join its own thread
            except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
                errors.append(exc)
        return i

    holder["p"] = p = Prefetcher(fn, 0, 10, depth=1)
    ready.set()
    p._thread.join(3)
    assert errors == [] and not p._thread.is_alive()


def test_an_abandoned_prefetcher_is_collected_and_its_thread_stops():
    p = Prefetcher(lambda i: i, 0, 1000, depth=2)
    it = iter(p)
    assert next(it) == 0
    thread, ref = p._thread, weakref.ref(p)
    del p, it
    gc.collect()
    thread.join(0.5)
    assert ref() is None and not thread.is_alive()


def test_iterating_after_close_ends_instead_of_blocking():
    p = Prefetcher(lambda i: i, 0, 1000, depth=2)
    it = iter(p)
    assert next(it) == 0
    p.close()
    done, out = _within(0.5, lambda: list(it))
    assert done and out == [[]]
