"""What serving wrappers need around ``Pipeline.stream``: paced streaming and client-safe error messages.

- ``coalesce(events)`` re-yields the events of ``rag.streaming.astream`` (which
  runs ``Pipeline.stream`` off the event loop) with the text deltas that piled up
  while the consumer was busy merged into one, so a slow client gets fewer, larger
  pieces instead of a backlog.
- ``public_message(exc)`` is the one string shown to a client for any error:
  ``"<code>: <message>"``, never a traceback, an absolute path or the host name.
- ``is_fatal_device_error(exc)`` says whether the GPU is in a state no later
  request can recover from (an illegal memory access, a device-side assert), so
  the wrapper should ask its platform for a fresh machine.

Out of scope: batching requests into one forward pass (that is a serving
engine's job, e.g. vLLM), retries.
"""

from __future__ import annotations

import asyncio
import re
import socket
from typing import AsyncIterator

from .errors import RagError

# Messages of CUDA failures after which the context is unusable (torch raises them as RuntimeError,
# or torch.AcceleratorError since 2.8). Out-of-memory is deliberately absent: the next request may fit.
_FATAL_DEVICE = re.compile(
    r"CUDA error|CUDA driver|CUBLAS_STATUS_(?!ALLOC_FAILED)|CUDNN_STATUS|cuDNN error|device-side assert|"
    r"illegal memory access|unspecified launch failure|misaligned address|NCCL error|uncorrectable ECC",
    re.IGNORECASE,
)
_OOM = re.compile(r"out of memory|CUBLAS_STATUS_ALLOC_FAILED", re.IGNORECASE)
# Absolute POSIX paths under a directory that file systems use, so "1/0", "true/false", URLs and API
# routes ("/v1/chat/completions") are left alone; a "/" after a letter, digit, ":" or "/" is no path start.
_ROOTS = (
    "home|root|work|workspace|tmp|var|opt|usr|etc|mnt|srv|media|data|models|app|src|runpod-volume|proc|sys|dev"
    "|lib|lib64|bin|sbin|snap|nix|private|Users|Volumes|content|kaggle|cache"
)
_ABS_PATH = re.compile(r"(?<![\w.:/~\\-])/(?:" + _ROOTS + r")(?:/[\w.@+-]*)+")
_MAX_MESSAGE = 1000


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


_DONE = object()


async def coalesce(events: AsyncIterator) -> AsyncIterator:
    """Re-yield ``events`` (from ``rag.streaming.astream``), merging the text deltas that piled up.

    The events are read ahead by a task of their own; whenever the consumer asks, every ``Delta``
    that arrived meanwhile comes out as one. A consumer that posts each piece over the network
    (a RunPod worker sends one HTTP request per output) thus keeps pace with generation instead
    of falling ever further behind it. An error is raised after the events that came before it.
    Closing or cancelling the consumer cancels the reader, so ``astream`` sets its cancel event.
    """
    from .pipeline import Delta

    queue: asyncio.Queue = asyncio.Queue()

    async def read() -> None:
        try:
            async for event in events:
                queue.put_nowait(event)
        except Exception as e:  # noqa: BLE001 - handed to the consumer
            queue.put_nowait(_Failure(e))
        queue.put_nowait(_DONE)

    reader = asyncio.create_task(read())
    try:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            pending: list[str] = []
            for item in batch:
                if isinstance(item, Delta):
                    pending.append(item.text)
                    continue
                if pending:
                    yield Delta("".join(pending))
                    pending = []
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
            if pending:
                yield Delta("".join(pending))
    finally:
        if not reader.done():
            reader.cancel()
            try:
                await reader
            except asyncio.CancelledError:
                pass


def _chain(exc: BaseException, limit: int = 10):
    seen = 0
    while exc is not None and seen < limit:
        yield exc
        exc = exc.__cause__ or exc.__context__
        seen += 1


def is_out_of_memory(exc: BaseException) -> bool:
    return any(type(e).__name__ == "OutOfMemoryError" or _OOM.search(str(e)) for e in _chain(exc))


def is_fatal_device_error(exc: BaseException) -> bool:
    """True when the GPU context is broken for good: the process must be replaced."""
    if is_out_of_memory(exc):
        return False
    for e in _chain(exc):
        if type(e).__name__ in ("AcceleratorError", "CudaError") or _FATAL_DEVICE.search(str(e)):
            return True
    return False


def scrub(text: str) -> str:
    """Remove what a client must not see: absolute paths and this machine's host name."""
    text = _ABS_PATH.sub("<path>", text)
    try:
        host = socket.gethostname()
    except OSError:  # pragma: no cover
        host = ""
    if len(host) >= 3:
        text = text.replace(host, "<host>")
    cut = text.find("Traceback (most recent call last)")
    if cut >= 0:  # a message that embeds a formatted traceback keeps only what came before it
        text = text[:cut].rstrip() or "(details in the worker log)"
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "…"


def error_code(exc: BaseException) -> str:
    # GPU faults first: rag.generate wraps them in a ModelError, but what the client can do differs.
    if is_out_of_memory(exc):
        return "out_of_memory"
    if is_fatal_device_error(exc):
        return "device_error"
    if isinstance(exc, RagError):
        return exc.code
    return "internal_error"


def public_message(exc: BaseException) -> str:
    """The one string a client sees for ``exc``: ``"<code>: <what happened and what to do>"``."""
    code = error_code(exc)
    if code == "out_of_memory":
        text = "the GPU ran out of memory for this request: lower max_new_tokens or top_k, or send it again later."
    elif code == "device_error":
        text = "the GPU failed while answering; this worker is being replaced. Send the request again."
    elif isinstance(exc, RagError):
        text = str(exc)
    else:
        # Unexpected errors may carry internals in their text; only the type is shown, the log has the rest.
        text = f"the worker failed to answer ({type(exc).__name__}); the worker log has the details."
    return f"{code}: {scrub(text)}"


__all__ = ["coalesce", "public_message", "error_code", "is_fatal_device_error", "is_out_of_memory", "scrub"]
