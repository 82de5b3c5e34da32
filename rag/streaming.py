"""The one bridge from a blocking producer, run in a thread of its own, to its consumer.

The pipeline is synchronous (the model is), and so are the remote clients of the
web chat. Their consumers come in two kinds, and both must stop the producer
promptly when they stop:

* ``iterate_in_thread`` — a plain iterator for sync consumers (the Cog
  ``Runner``, a remote backend reading its client's stream or polling its job): the consumer's
  thread only waits on a queue, in ``POLL_S`` slices, so an exception the
  platform injects into it (Cog's ``CancelationException``), a set ``cancel``
  event (``Cancelled``) and a time limit (``StreamTimeout``) all act within
  ~0.1 s instead of whenever the next item arrives.
* ``aiterate_in_thread`` — an async iterator for async consumers (the Cog
  ``ConcurrentRunner``, the RunPod worker, the web chat): many streams at once
  without blocking the event loop; cancellation arrives as
  ``asyncio.CancelledError``. With ``coalesce=True``, the text ``Delta``s that
  piled up while the consumer was busy come out as one, so a consumer that posts
  each piece over the network (a RunPod worker sends one HTTP request per
  output) keeps pace with generation instead of falling ever further behind.

``stream_in_thread`` and ``astream`` are the two over ``Pipeline.stream``.
Either way, when the consumer stops — done, failed, cancelled or gone — the
``cancel`` event is set, and generation stops at the next token. An error of
the producer is raised in the consumer after the items that came before it.
Out of scope: running the model itself asynchronously.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import AsyncIterator, Callable, Iterable, Iterator

from .errors import Cancelled
from .pipeline import Delta, Event, Pipeline
from .request import AskRequest

POLL_S = 0.1
_END = object()


class StreamTimeout(Exception):
    """``iterate_in_thread``'s time limit passed before the producer finished."""


def _start(produce: Callable[[], Iterable], put: Callable, name: str) -> None:
    """Run ``produce()`` in a daemon thread, handing each item (then the end, or the error) to ``put``."""

    def run() -> None:
        try:
            for item in produce():
                put((item, None))
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            put((None, e))
        finally:
            put((_END, None))

    threading.Thread(target=run, name=name, daemon=True).start()


def _item(entry: tuple):
    item, error = entry
    if error is not None:
        raise error
    return item


def iterate_in_thread(produce: Callable[[], Iterable], *, cancel: threading.Event | None = None,
                      timeout_s: float | None = None, name: str = "rag-stream") -> Iterator:
    """Iterate ``produce()`` in a thread; raises ``Cancelled`` once ``cancel`` is set and ``StreamTimeout``
    after ``timeout_s``, each within ``POLL_S``. ``cancel`` is set when the consumer stops."""
    cancel = cancel if cancel is not None else threading.Event()
    q: queue.Queue = queue.Queue()
    _start(produce, q.put, name)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while not cancel.is_set():
            if deadline is not None and time.monotonic() > deadline:
                raise StreamTimeout(f"no end within {timeout_s:g} s")
            try:
                item = _item(q.get(timeout=POLL_S))
            except queue.Empty:
                continue
            if item is _END:
                if cancel.is_set():  # the producer stopped because it was cancelled: it did not finish
                    break
                return
            yield item
        raise Cancelled("the question was cancelled.")
    finally:
        cancel.set()


async def aiterate_in_thread(produce: Callable[[], Iterable], *, cancel: threading.Event | None = None,
                             coalesce: bool = False, name: str = "rag-stream") -> AsyncIterator:
    """Iterate ``produce()`` in a thread, for a coroutine; with ``coalesce``, ``Delta``s that arrived while the
    consumer was busy come out merged into one. ``cancel`` is set when the consumer stops."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue = asyncio.Queue()
    cancel = cancel if cancel is not None else threading.Event()

    def put(entry) -> None:
        try:
            loop.call_soon_threadsafe(q.put_nowait, entry)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            cancel.set()

    _start(produce, put, name)
    try:
        while True:
            batch = [await q.get()]
            while coalesce and not q.empty():
                batch.append(q.get_nowait())
            pending: list[str] = []
            for entry in batch:
                if coalesce and isinstance(entry[0], Delta):
                    pending.append(entry[0].text)
                    continue
                if pending:
                    yield Delta("".join(pending))
                    pending = []
                item = _item(entry)
                if item is _END:
                    return
                yield item
            if pending:
                yield Delta("".join(pending))
    finally:
        cancel.set()


def _pipeline_stream(pipeline: Pipeline, request, cancel: threading.Event, adapter: str | None) -> Callable:
    # adapter= only when given: anything with the pipeline's stream(request, cancel) can be streamed
    extra = {"adapter": adapter} if adapter is not None else {}
    return lambda: pipeline.stream(request, cancel=cancel, **extra)


def stream_in_thread(pipeline: Pipeline, request: AskRequest | dict, cancel: threading.Event | None = None,
                     adapter: str | None = None) -> Iterator[Event]:
    """``Pipeline.stream`` for a sync consumer; ``adapter``: a local LoRA adapter directory for this request."""
    cancel = cancel if cancel is not None else threading.Event()
    return iterate_in_thread(_pipeline_stream(pipeline, request, cancel, adapter), cancel=cancel)


def astream(pipeline: Pipeline, request: AskRequest | dict, cancel: threading.Event | None = None,
            adapter: str | None = None, *, coalesce: bool = False) -> AsyncIterator[Event]:
    """``Pipeline.stream`` (or any object with ``stream(request, cancel=)``) for a coroutine."""
    cancel = cancel if cancel is not None else threading.Event()
    return aiterate_in_thread(_pipeline_stream(pipeline, request, cancel, adapter), cancel=cancel, coalesce=coalesce)


__all__ = ["iterate_in_thread", "aiterate_in_thread", "stream_in_thread", "astream", "StreamTimeout", "POLL_S"]
