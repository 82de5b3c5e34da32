"""rag.streaming, the one thread bridge: items and errors in order, cancel, time limit, coalescing.

The producers are small real generators run in the bridge's thread; the slow
ones block on an event, so a result that arrives in time cannot have waited for them.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
import time

import pytest

from rag.errors import Cancelled
from rag.pipeline import Delta, Final
from rag.streaming import POLL_S, StreamTimeout, aiterate_in_thread, astream, iterate_in_thread, stream_in_thread
from rag.types import Answer

ANSWER = Answer(text="abc", refused=False, citations=[])
BLOCK_S = 30.0  # a producer "blocked on the network"; every test ends long before it would give up


class Tokens:
    """A generator like ``Pipeline.stream``: one token per ``every_s`` until ``cancel`` is set; records what it made."""

    def __init__(self, n: int = 1000, every_s: float = 0.01):
        self.n, self.every_s = n, every_s
        self.made = 0
        self.done = threading.Event()

    def stream(self, request=None, cancel: threading.Event | None = None, **extra):
        self.request, self.extra = request, extra
        try:
            for i in range(self.n):
                if cancel is not None and cancel.is_set():
                    return
                time.sleep(self.every_s)
                self.made += 1
                yield Delta(str(i))
            yield Final(ANSWER)
        finally:
            self.done.set()


def _blocked(first, release: threading.Event):
    yield first
    release.wait(BLOCK_S)
    yield "late"


# -- the sync consumer -----------------------------------------------------------------------------------


def test_items_in_order_then_the_error():
    def produce():
        yield 1
        yield 2
        raise ValueError("remote failed")

    got = []
    with pytest.raises(ValueError, match="remote failed"):
        for item in iterate_in_thread(produce):
            got.append(item)
    assert got == [1, 2]


def test_cancel_and_the_time_limit_act_while_the_producer_is_blocked():
    release, cancel = threading.Event(), threading.Event()
    it = iterate_in_thread(lambda: _blocked("first", release), cancel=cancel)
    assert next(it) == "first"
    threading.Timer(0.2, cancel.set).start()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        next(it)
    assert time.monotonic() - t0 < BLOCK_S / 3  # did not wait for the producer's next item

    it = iterate_in_thread(lambda: _blocked("first", release), timeout_s=0.3)
    assert next(it) == "first"
    with pytest.raises(StreamTimeout):
        next(it)
    release.set()


def test_a_producer_that_ends_because_it_was_cancelled_is_not_a_finished_stream():
    """A producer that checks ``cancel`` itself (the RunPod poller) may end while the consumer waits for its
    next item: that end is still a cancellation, not a stream that finished."""
    cancel = threading.Event()

    def poll():
        yield "IN_QUEUE"
        time.sleep(POLL_S / 2)  # the consumer is waiting on the queue now
        cancel.set()  # Stop, seen by the producer first

    got = []
    with pytest.raises(Cancelled):
        for item in iterate_in_thread(poll, cancel=cancel):
            got.append(item)
    assert got == ["IN_QUEUE"]


def test_a_consumer_that_stops_stops_the_producer_at_the_next_token():
    pipe = Tokens()
    events = stream_in_thread(pipe, "q", adapter="/tmp/adapter")
    taken = [next(events) for _ in range(3)]
    events.close()  # the client went away
    assert pipe.done.wait(5) and taken == [Delta("0"), Delta("1"), Delta("2")]
    assert pipe.made <= 6  # stopped within a token or so, not after 1000
    assert pipe.request == "q" and pipe.extra == {"adapter": "/tmp/adapter"}


class Injected(BaseException):
    """Stands in for Cog's CancelationException, which coglet raises inside the predicting thread."""


def test_an_exception_injected_into_the_consumer_thread_lands_without_waiting_for_the_producer():
    release, cancel = threading.Event(), threading.Event()
    landed: list[float] = []
    started = threading.Event()

    def consume():
        try:
            for _ in iterate_in_thread(lambda: _blocked("first", release), cancel=cancel):
                started.set()
        except Injected:
            landed.append(time.monotonic())

    worker = threading.Thread(target=consume)
    worker.start()
    assert started.wait(5)
    t0 = time.monotonic()
    # What coglet does to cancel a sync prediction: raise an exception asynchronously in its thread.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident), ctypes.py_object(Injected))
    worker.join(BLOCK_S / 3)
    assert landed and landed[0] - t0 < BLOCK_S / 3  # the wait is sliced (POLL_S), not one long block
    assert cancel.is_set()  # and the producer is told to stop
    release.set()


# -- the async consumer -----------------------------------------------------------------------------------


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, BLOCK_S / 3))


def _piling(go: threading.Event, fail: bool = False):
    yield Delta("a")
    go.wait(BLOCK_S)  # the rest comes while the consumer is busy
    yield Delta("b")
    yield Delta("c")
    if fail:
        raise RuntimeError("model failed")
    yield Delta("d")
    yield Final(ANSWER)


async def _consume_slowly(coalesce: bool, fail: bool = False) -> list:
    go, got = threading.Event(), []
    try:
        async for event in aiterate_in_thread(lambda: _piling(go, fail), coalesce=coalesce):
            got.append(event)
            if len(got) == 1:
                go.set()
                await asyncio.sleep(0.3)  # busy posting the first piece
    except RuntimeError as e:
        got.append(e)
    return got


def test_deltas_that_piled_up_come_out_as_one():
    assert _run(_consume_slowly(coalesce=True)) == [Delta("a"), Delta("bcd"), Final(ANSWER)]
    assert _run(_consume_slowly(coalesce=False)) == [Delta("a"), Delta("b"), Delta("c"), Delta("d"), Final(ANSWER)]


def test_an_error_comes_after_the_text_before_it():
    got = _run(_consume_slowly(coalesce=True, fail=True))
    assert got[:2] == [Delta("a"), Delta("bc")] and isinstance(got[2], RuntimeError) and len(got) == 3


def test_cancelling_the_consumer_task_sets_cancel():
    release, cancel = threading.Event(), threading.Event()

    async def main():
        async def consume():
            async for _ in aiterate_in_thread(lambda: _blocked("first", release), cancel=cancel):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.2)
        task.cancel()  # what Gradio's Stop and a disconnected client do
        with pytest.raises(asyncio.CancelledError):
            await task

    _run(main())
    assert cancel.is_set()
    release.set()


def test_astream_streams_a_pipeline_and_stops_it_with_the_consumer():
    pipe = Tokens(n=5, every_s=0.0)

    async def all_events():
        return [e async for e in astream(pipe, "q", coalesce=False)]

    assert _run(all_events()) == [*(Delta(str(i)) for i in range(5)), Final(ANSWER)]
    assert pipe.extra == {}

    slow = Tokens(every_s=0.01)

    async def first_two():
        events = astream(slow, "q")
        got = [await events.__anext__(), await events.__anext__()]
        await events.aclose()
        return got

    assert _run(first_two()) == [Delta("0"), Delta("1")]
    assert slow.done.wait(5) and slow.made <= 5
