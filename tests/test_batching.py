"""Query micro-batching (rag.batching): each caller gets its own vector or its own error, and nobody hangs.

The encoders here are honest fakes that record their calls; the order of events is forced with
threading.Event, never with sleeps or timed assertions. The last tests use the real embedder.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from rag.batching import QueryBatcher, query_embedder

LONG = 600_000  # ms: "wait as long as it takes"; every test below ends its waits with a full batch or an event


def vector(text: str) -> np.ndarray:
    """A deterministic vector per text (what a real encoder is, up to rounding)."""
    rng = np.random.default_rng(abs(hash(text)) % 2**32)
    return rng.standard_normal(8).astype(np.float32)


class Encoder:
    """encode(texts) → one row per text; records each call; "block" waits for ``release``; "bad" fails."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.release = threading.Event()
        self.blocked = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, texts):
        with self.lock:
            self.calls.append(list(texts))
        if "block" in texts:
            self.blocked.set()
            assert self.release.wait(30), "the test never released the blocking call"
        if "bad" in texts:
            raise ValueError("cannot embed 'bad'")
        return np.stack([vector(t) for t in texts])


def wait_until(condition, what: str) -> None:
    """Poll a state the test cannot be told about (no timing is asserted: the bound only ends a broken run)."""
    for _ in range(3000):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def start_blocking_call(batcher: QueryBatcher, enc: Encoder, pool: ThreadPoolExecutor):
    """A call that holds the embedder until ``enc.release`` is set, so the next questions queue behind it."""
    fut = pool.submit(batcher.embed, "block")
    assert enc.blocked.wait(30)
    return fut


def test_questions_that_arrive_during_a_call_go_together_and_each_caller_gets_its_own_vector():
    enc = Encoder()
    batcher = QueryBatcher(enc, wait_ms=LONG, max_batch=5)
    texts = [f"câu hỏi {i}" for i in range(5)]
    with ThreadPoolExecutor(8) as pool:
        first = start_blocking_call(batcher, enc, pool)
        futures = {t: pool.submit(batcher.embed, t) for t in texts}
        # The five wait behind the running call until the batch is full (max_batch), then go in one call.
        results = {t: f.result(timeout=30) for t, f in futures.items()}
        enc.release.set()
        np.testing.assert_array_equal(first.result(timeout=30), vector("block"))
    for t in texts:
        np.testing.assert_array_equal(results[t], vector(t))
    assert sorted(enc.calls[1]) == sorted(texts) and len(enc.calls) == 2
    assert list(batcher.calls) == [1, 5]


def test_a_lone_question_is_encoded_at_once_even_with_a_long_wait():
    enc = Encoder()
    batcher = QueryBatcher(enc, wait_ms=LONG)
    # Nothing else is running, so nothing is waited for (a wait here would block the test for 10 minutes).
    np.testing.assert_array_equal(batcher.embed("một mình"), vector("một mình"))
    assert enc.calls == [["một mình"]]


def test_many_concurrent_callers_get_their_own_vectors():
    enc = Encoder()
    batcher = QueryBatcher(enc, wait_ms=5, max_batch=4)
    texts = [f"q{i}" for i in range(64)]
    with ThreadPoolExecutor(16) as pool:
        out = list(pool.map(batcher.embed, texts))
    for t, v in zip(texts, out):
        np.testing.assert_array_equal(v, vector(t))
    assert sorted(t for call in enc.calls for t in call) == sorted(texts)  # each once
    assert max(len(c) for c in enc.calls) <= 4


def test_an_error_reaches_only_the_caller_whose_question_caused_it():
    enc = Encoder()
    batcher = QueryBatcher(enc, wait_ms=LONG, max_batch=3)
    with ThreadPoolExecutor(4) as pool:
        blocker = start_blocking_call(batcher, enc, pool)
        good1, bad, good2 = (pool.submit(batcher.embed, t) for t in ("tốt 1", "bad", "tốt 2"))
        with pytest.raises(ValueError, match="cannot embed 'bad'"):
            bad.result(timeout=30)
        np.testing.assert_array_equal(good1.result(timeout=30), vector("tốt 1"))
        np.testing.assert_array_equal(good2.result(timeout=30), vector("tốt 2"))
        enc.release.set()
        blocker.result(timeout=30)
    # the batch of three failed, then each question was encoded on its own
    assert sorted(enc.calls[1]) == ["bad", "tốt 1", "tốt 2"]
    assert sorted(map(tuple, enc.calls[2:])) == [("bad",), ("tốt 1",), ("tốt 2",)]


def test_an_embedder_that_returns_too_few_rows_is_an_error_for_its_caller():
    batcher = QueryBatcher(lambda texts: np.zeros((0, 8), dtype=np.float32), wait_ms=0)
    with pytest.raises(RuntimeError, match="0 vectors for 1 questions"):
        batcher.embed("x")


class Cancelled(BaseException):
    """What an asynchronous cancel raises in a thread (a BaseException, like Cog's)."""


def test_a_leader_cancelled_mid_call_leaves_the_other_questions_to_be_encoded():
    enc = Encoder()
    cancelled_once = []

    def encode(texts):
        if len(texts) == 3 and not cancelled_once:
            cancelled_once.append(list(texts))
            raise Cancelled()
        return enc(texts)

    batcher = QueryBatcher(encode, wait_ms=LONG, max_batch=3)
    with ThreadPoolExecutor(4) as pool:
        blocker = start_blocking_call(batcher, enc, pool)
        futures = {t: pool.submit(batcher.embed, t) for t in ("a", "b", "c")}
        wait_until(lambda: cancelled_once, "the batch of three was tried")
        enc.release.set()  # the two left over wait for no running call and go at once
        outcomes = {}
        for t, f in futures.items():
            try:
                outcomes[t] = f.result(timeout=30)
            except Cancelled:
                outcomes[t] = "cancelled"
        blocker.result(timeout=30)
    assert sorted(cancelled_once[0]) == ["a", "b", "c"]
    assert [isinstance(o, str) for o in outcomes.values()].count(True) == 1  # the leader's own call only
    for t, out in outcomes.items():
        if not isinstance(out, str):
            np.testing.assert_array_equal(out, vector(t))
    assert not batcher._pending


def test_a_caller_that_times_out_leaves_the_queue_and_others_carry_on():
    enc = Encoder()
    batcher = QueryBatcher(enc, wait_ms=LONG, max_batch=8)
    with ThreadPoolExecutor(4) as pool:
        blocker = start_blocking_call(batcher, enc, pool)
        leader = pool.submit(batcher.embed, "đầu tiên")  # gathers behind the running call (batch not full)
        wait_until(lambda: batcher._gathering, "a caller leads the next batch")
        with pytest.raises(TimeoutError):
            batcher.embed("bỏ cuộc", timeout=0.05)  # queued behind that leader
        assert [s.text for s in batcher._pending] == ["đầu tiên"]
        enc.release.set()
        blocker.result(timeout=30)
        np.testing.assert_array_equal(leader.result(timeout=30), vector("đầu tiên"))
    np.testing.assert_array_equal(batcher.embed("sau đó"), vector("sau đó"))
    assert ["bỏ cuộc"] not in enc.calls and all("bỏ cuộc" not in c for c in enc.calls)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        QueryBatcher(lambda t: t, wait_ms=-1)
    with pytest.raises(ValueError):
        QueryBatcher(lambda t: t, wait_ms=1, max_batch=0)


# -- the real embedder and retriever ------------------------------------------------------------------
QUESTIONS = [
    "Điều kiện để được xét học bổng khuyến khích học tập là gì?",
    "Sinh viên bị buộc thôi học khi nào?",
    "Chuẩn đầu ra ngoại ngữ là bậc mấy?",
    "Điều kiện tốt nghiệp",
    "học phí",
    "Thời gian học tối đa của khóa học là bao lâu?",
]


def test_one_call_for_several_questions_gives_the_vectors_of_one_call_each(embedder):
    together = embedder.embed_queries(QUESTIONS)
    alone = np.stack([embedder.embed_query(q) for q in QUESTIONS])
    assert together.shape == alone.shape and together.dtype == np.float32
    np.testing.assert_allclose(together, alone, atol=2e-3 if embedder.dtype != "float32" else 1e-5)


def test_which_embedder_the_retriever_calls(embedder, settings_factory):
    assert isinstance(query_embedder(embedder, settings_factory()), QueryBatcher)  # on by default
    assert query_embedder(embedder, settings_factory(embed_batch_wait_ms=0.0)) == embedder.embed_query

    class Memo:  # a wrapper that delegates what it does not define keeps its own embed_query
        def __init__(self, inner):
            self.inner = inner

        def embed_query(self, text):
            return self.inner.embed_query(text)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    memo = Memo(embedder)
    assert query_embedder(memo, settings_factory()) == memo.embed_query


def test_concurrent_searches_rank_as_searches_one_at_a_time(demo_pipeline):
    serial = [[h.chunk.id for h in demo_pipeline.search(q).hits] for q in QUESTIONS]
    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        together = list(pool.map(lambda q: [h.chunk.id for h in demo_pipeline.search(q).hits], QUESTIONS * 2))
    assert together == serial * 2
