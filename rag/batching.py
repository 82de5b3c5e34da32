"""Query micro-batching: the questions of concurrent requests embedded in one call.

On a CPU, one forward pass over 8 short questions costs less than 8 passes
over one question each (about 0.65x with all-MiniLM-L6-v2 on 2 cores), and
concurrent requests of one server otherwise each make their own pass;
benchmarks/bench_load.py measures the effect on whole requests.
``QueryBatcher(encode, wait_ms)`` stands in for ``Embedder.embed_query``:
a caller's question joins the batch being gathered; the first caller of a
batch (its leader) collects the questions that arrive while another batch is
being encoded, for at most ``wait_ms`` (RAG_EMBED_BATCH_WAIT_MS), then encodes
them with one ``encode(texts)`` call (``Embedder.embed_queries``) and hands
every caller its own vector. A question that arrives while the embedder is
idle is encoded at once: batching adds no latency to a lone request.

Failures land on the caller they belong to: when a batch fails, its questions
are encoded one by one, so each caller gets its own vector or its own error.
A caller interrupted while it leads (an asynchronous cancel) puts the other
callers' questions back at the head of the queue, where the next caller takes
them; a caller that gives up (``timeout``) leaves the queue. No thread is
started: callers do the work on their own threads.

Out of scope: batching LLM generation (a serving engine such as vLLM does that),
passage batches at ingest (``Embedder.embed_passages`` batches already).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Sequence

import numpy as np

_PENDING, _RUNNING, _DONE = "pending", "running", "done"


class _Slot:
    __slots__ = ("text", "state", "vector", "error")

    def __init__(self, text: str):
        self.text = text
        self.state = _PENDING
        self.vector: np.ndarray | None = None
        self.error: BaseException | None = None


class QueryBatcher:
    """Gathers concurrent callers' questions for up to ``wait_ms`` and encodes them in one call.

    ``encode(texts)`` returns one row per text, in order. ``max_batch`` caps one call.
    """

    def __init__(self, encode: Callable[[Sequence[str]], np.ndarray], wait_ms: float, max_batch: int = 32):
        if wait_ms < 0 or max_batch < 1:
            raise ValueError("wait_ms must be ≥ 0 and max_batch ≥ 1")
        self._encode = encode
        self.wait_s = wait_ms / 1000
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: list[_Slot] = []
        self._gathering = False  # a leader is collecting the next batch
        self._running = 0  # batches being encoded now
        self.calls: deque[int] = deque(maxlen=1024)  # sizes of the latest encode calls, oldest first

    def embed(self, text: str, timeout: float | None = None) -> np.ndarray:
        """The vector of ``text``, encoded together with whatever other callers sent meanwhile.

        ``timeout`` (seconds): the longest this caller waits for others: queued behind another caller's
        batch, it gives up with TimeoutError and its question leaves the queue; leading a batch, it stops
        gathering and encodes what it has.
        """
        slot = _Slot(text)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._pending.append(slot)
            self._cond.notify_all()
        try:
            while True:
                with self._cond:
                    while slot.state != _DONE and (self._gathering or slot.state == _RUNNING):
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            raise TimeoutError(f"the question was not embedded within {timeout} s")
                        self._cond.wait(left)
                    if slot.state == _DONE:
                        break
                    # This caller leads the next batch: its own question is in it, unless more than
                    # max_batch are queued; then it encodes the oldest and loops.
                    self._gathering = True
                batch = self._gather(deadline)
                self._run(batch)
        finally:
            if slot.state == _PENDING:  # gave up or interrupted while queued: nobody will read it
                with self._cond:
                    if slot in self._pending:
                        self._pending.remove(slot)
        if slot.error is not None:
            raise slot.error
        return slot.vector

    __call__ = embed

    def _gather(self, caller_deadline: float | None) -> list[_Slot]:
        with self._cond:
            try:
                deadline = time.monotonic() + self.wait_s
                if caller_deadline is not None:
                    deadline = min(deadline, caller_deadline)
                # Wait only while another batch is being encoded: what arrives meanwhile joins this one.
                while self._running and len(self._pending) < self.max_batch:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = self._pending[: self.max_batch]
                del self._pending[: len(batch)]
                for s in batch:
                    s.state = _RUNNING
                self._running += 1
                return batch
            finally:
                self._gathering = False
                self._cond.notify_all()  # questions left over (more than max_batch) elect the next leader

    def _run(self, batch: list[_Slot]) -> None:
        results = None
        try:
            results = self._encode_each([s.text for s in batch])
        finally:
            with self._cond:
                self._running -= 1
                if results is None:
                    # Interrupted (a BaseException such as a cancel): the others' questions go back to the
                    # head of the queue, to be taken by the next caller; this caller's own slot is dropped
                    # by embed().
                    for s in batch:
                        s.state = _PENDING
                    self._pending[:0] = batch
                else:
                    for s, r in zip(batch, results):
                        if isinstance(r, BaseException):
                            s.error = r
                        else:
                            s.vector = r
                        s.state = _DONE
                self._cond.notify_all()

    def _encode_each(self, texts: list[str]) -> list:
        """One vector (or one exception) per text; a failed batch is retried text by text."""
        self.calls.append(len(texts))
        try:
            vectors = self._encode(texts)
            if len(vectors) != len(texts):
                raise RuntimeError(f"the embedder returned {len(vectors)} vectors for {len(texts)} questions")
            return list(vectors)
        except Exception as e:  # noqa: BLE001 - each caller gets its own outcome below
            if len(texts) == 1:
                return [e]
        out = []
        for t in texts:
            self.calls.append(1)
            try:
                out.append(self._encode([t])[0])
            except Exception as e:  # noqa: BLE001
                out.append(e)
        return out


def query_embedder(embedder, settings) -> Callable[[str], np.ndarray]:
    """What the retriever calls to embed one question: a QueryBatcher over ``embedder.embed_queries`` when
    RAG_EMBED_BATCH_WAIT_MS > 0 and the embedder can encode several questions at once, else ``embed_query``."""
    wait_ms = getattr(settings, "embed_batch_wait_ms", 0)
    # Asked of the class: a wrapper that delegates unknown attributes (a memo of query vectors) keeps its
    # own embed_query.
    if not wait_ms or getattr(type(embedder), "embed_queries", None) is None:
        return embedder.embed_query
    return QueryBatcher(embedder.embed_queries, wait_ms, max_batch=settings.embed_batch_size)
