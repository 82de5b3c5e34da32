"""Running ``Pipeline.stream`` in a worker thread, for the platform wrappers.

The pipeline is synchronous (the model is). Wrappers consume its events in one of
two ways, and both must stop generation promptly when the platform cancels:

* ``astream`` — an async iterator for async wrappers (the Cog ``ConcurrentRunner``,
  an async RunPod handler): many requests stream at once without blocking the
  event loop; cancellation arrives as ``asyncio.CancelledError``.
* ``stream_in_thread`` — a plain iterator for sync wrappers (the Cog ``Runner``):
  the caller's thread only waits on a queue, in short slices, so an exception the
  platform injects into it (Cog's ``CancelationException``) lands within ~0.1 s
  instead of whenever the next token arrives.

Either way, when the consumer stops early — cancelled, disconnected, failed or
done — the pipeline's cancel event is set and generation stops at the next token.
Out of scope: running the model itself asynchronously.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import AsyncIterator, Callable, Iterator

from .pipeline import Event, Pipeline
from .request import AskRequest

_END = object()
POLL_S = 0.1


def _produce(pipeline: Pipeline, request, cancel: threading.Event, put: Callable,
             adapter: str | None = None) -> threading.Thread:
    def run() -> None:
        try:
            # adapter= only when given: anything with the pipeline's stream(request, cancel) can be streamed
            extra = {"adapter": adapter} if adapter is not None else {}
            for event in pipeline.stream(request, cancel=cancel, **extra):
                put((event, None))
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            put((None, e))
        finally:
            put((_END, None))

    thread = threading.Thread(target=run, name="rag-stream", daemon=True)
    thread.start()
    return thread


def stream_in_thread(pipeline: Pipeline, request: AskRequest | dict, cancel: threading.Event | None = None,
                     adapter: str | None = None) -> Iterator[Event]:
    """``adapter``: a local LoRA adapter directory for this request (see ``Pipeline.stream``)."""
    cancel = cancel if cancel is not None else threading.Event()
    q: queue.Queue = queue.Queue()
    _produce(pipeline, request, cancel, q.put, adapter)
    try:
        while True:
            try:
                event, error = q.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if error is not None:
                raise error
            if event is _END:
                return
            yield event
    finally:
        cancel.set()


async def astream(pipeline: Pipeline, request: AskRequest | dict, cancel: threading.Event | None = None,
                  adapter: str | None = None) -> AsyncIterator[Event]:
    loop = asyncio.get_running_loop()
    q: asyncio.Queue = asyncio.Queue()
    cancel = cancel if cancel is not None else threading.Event()

    def put(item) -> None:
        try:
            loop.call_soon_threadsafe(q.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            cancel.set()

    _produce(pipeline, request, cancel, put, adapter)
    try:
        while True:
            event, error = await q.get()
            if error is not None:
                raise error
            if event is _END:
                return
            yield event
    finally:
        cancel.set()
