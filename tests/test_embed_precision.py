"""Embedding precision (RAG_EMBED_DTYPE) and threads: the choice of "auto", unit float32 vectors at every
precision, indexes searchable across precisions, retrieval quality of bfloat16 against float32 on ALQAC."""

from __future__ import annotations

import json
import threading
import unicodedata

import numpy as np
import pytest

from conftest import shared_data
from rag.config import Settings
from rag.embed import Embedder, _ThreadGate, cpu_has_native_bf16, resolve_dtype
from rag.errors import ConfigError

CPU_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n"
CPU_AMX = "flags\t\t: fpu avx2 amx_bf16 amx_tile\n"
CPU_PLAIN = "flags\t\t: fpu sse2 avx avx2 fma\n"


def test_auto_dtype_follows_the_hardware():
    assert cpu_has_native_bf16(CPU_BF16) and cpu_has_native_bf16(CPU_AMX)
    assert not cpu_has_native_bf16(CPU_PLAIN) and not cpu_has_native_bf16("")
    assert resolve_dtype("auto", "cpu", CPU_BF16) == "bfloat16"
    assert resolve_dtype("auto", "cpu", CPU_PLAIN) == "float32"
    assert resolve_dtype("auto", "cuda:0", CPU_PLAIN) == "float16"
    assert resolve_dtype("float32", "cpu", CPU_BF16) == "float32"  # an explicit choice wins
    assert resolve_dtype("bfloat16", "cpu", CPU_PLAIN) == "bfloat16"


def test_dtype_and_thread_settings_are_validated():
    s = Settings.from_env({"RAG_EMBED_DTYPE": "BFloat16", "RAG_EMBED_QUERY_THREADS": "2"})
    assert s.embed_dtype == "bfloat16" and s.embed_query_threads == 2
    d = Settings.from_env({})
    assert (d.embed_dtype, d.embed_query_threads, d.embed_ingest_threads) == ("auto", 1, 0)
    with pytest.raises(ConfigError, match="RAG_EMBED_DTYPE"):
        Settings.from_env({"RAG_EMBED_DTYPE": "int8"})
    with pytest.raises(ConfigError, match="RAG_EMBED_INGEST_THREADS"):
        Settings.from_env({"RAG_EMBED_INGEST_THREADS": "-1"})


def test_thread_gate_runs_same_count_together_and_restores():
    import torch

    gate, before = _ThreadGate(), torch.get_num_threads()
    inside, order = threading.Event(), []

    def query():
        with gate.use(1):
            order.append(("query", torch.get_num_threads()))
            inside.set()
            release.wait(5)

    release = threading.Event()
    t = threading.Thread(target=query)
    t.start()
    inside.wait(5)
    with gate.use(1):  # same count: enters while the other call is inside
        order.append(("second", torch.get_num_threads()))
    got = []

    def ingest():
        with gate.use(3):
            got.append(torch.get_num_threads())

    w = threading.Thread(target=ingest)
    w.start()
    w.join(0.3)
    assert not got, "a call wanting another thread count must wait for the running ones"
    release.set()
    t.join(5)
    w.join(5)
    assert order == [("query", 1), ("second", 1)] and got == [3]
    assert torch.get_num_threads() == before


@pytest.fixture(scope="module")
def bf16_embedder():
    return Embedder.load(Settings.from_env({"RAG_EMBED_DTYPE": "bfloat16"}))


@pytest.fixture(scope="module")
def f32_embedder():
    return Embedder.load(Settings.from_env({"RAG_EMBED_DTYPE": "float32"}))


def test_vectors_are_unit_float32_at_every_precision(bf16_embedder, f32_embedder):
    assert bf16_embedder.dtype == "bfloat16" and f32_embedder.dtype == "float32"
    texts = ["Sinh viên bị cảnh báo học tập khi điểm trung bình học kỳ dưới 1,00.", "Học bổng khuyến khích học tập"]
    a, b = f32_embedder.embed_passages(texts), bf16_embedder.embed_passages(texts)
    q = bf16_embedder.embed_query(texts[0])
    assert a.dtype == b.dtype == q.dtype == np.float32 and q.shape == (a.shape[1],)
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5) and abs(np.linalg.norm(q) - 1) < 1e-5
    assert (a * b).sum(axis=1).min() > 0.99  # same space: cosine between precisions


def _demo_questions() -> list[str]:
    from importlib import resources

    rows = [json.loads(x) for x in resources.files("rag.demo").joinpath("eval.jsonl").read_text().splitlines() if x]
    return [r["question"] for r in rows if r["expected"] == "answer"][:12]


def _top1(pipeline, questions):
    return [[h.chunk.id for h in pipeline.search(q, 3).hits][:1] for q in questions]


def test_manifest_records_dtype_and_old_manifests_open(demo_index_dir, embedder):
    from rag.index import Manifest

    data = json.loads((demo_index_dir / "manifest.json").read_text())
    assert data["embed_dtype"] == embedder.dtype
    old = dict(data)
    del old["embed_dtype"]  # an index built before the field existed
    assert Manifest.from_dict(old).embed_dtype is None


def test_float32_index_searched_at_bfloat16(demo_index_dir, demo_pipeline, bf16_embedder, settings_factory):
    from rag.pipeline import Pipeline

    if demo_pipeline.retriever.embedder.dtype != "float32":
        pytest.skip("the demo index is built at this machine's auto precision, not float32")
    other = Pipeline.from_settings(settings_factory(demo_index_dir), embedder=bf16_embedder)
    questions = _demo_questions()
    assert _top1(other, questions) == _top1(demo_pipeline, questions)


@pytest.mark.slow  # builds the demo index in bfloat16, emulated (slow) on CPUs without native bf16
def test_bfloat16_index_searched_at_float32(tmp_path, bf16_embedder, f32_embedder, settings_factory):
    from rag.ingest import demo_paths, ingest
    from rag.pipeline import Pipeline

    directory = tmp_path / "index"
    assert ingest(demo_paths(), settings_factory(directory), embedder=bf16_embedder, progress=False).ok
    assert json.loads((directory / "manifest.json").read_text())["embed_dtype"] == "bfloat16"
    at16 = Pipeline.from_settings(settings_factory(directory), embedder=bf16_embedder)
    at32 = Pipeline.from_settings(settings_factory(directory), embedder=f32_embedder)
    questions = _demo_questions()
    assert _top1(at32, questions) == _top1(at16, questions)


def _alqac_sample(n: int = 20):
    """The first n ALQAC questions with their relevant articles and each one's neighbours (±1) as distractors."""
    root = shared_data("alqac2023")
    laws = {law["id"]: {a["id"]: a["text"] for a in law["articles"]} for law in json.loads((root / "law.json").read_text())}
    questions = json.loads((root / "train.json").read_text())[:n]
    keys: list[tuple[str, str]] = []
    for q in questions:
        for rel in q["relevant_articles"]:
            law, art = rel["law_id"], rel["article_id"]
            for k in (art, str(int(art) - 1), str(int(art) + 1)) if art.isdigit() else (art,):
                if k in laws.get(law, {}) and (law, k) not in keys:
                    keys.append((law, k))
    texts = [unicodedata.normalize("NFC", laws[law][art]) for law, art in keys]
    gold = [{keys.index((r["law_id"], r["article_id"])) for r in q["relevant_articles"]} for q in questions]
    return [unicodedata.normalize("NFC", q["text"]) for q in questions], texts, gold


def _dense_metrics(embedder, questions, texts, gold):
    P = embedder.embed_passages(texts)
    r1 = r10 = mrr = 0.0
    for q, g in zip(questions, gold):
        order = list(np.argsort(-(P @ embedder.embed_query(q)), kind="stable")[:10])
        ranks = [i for i, row in enumerate(order) if row in g]
        r1 += bool(ranks and ranks[0] == 0)
        r10 += bool(ranks)
        mrr += 1 / (ranks[0] + 1) if ranks else 0.0
    n = len(questions) / 100
    return r1 / n, r10 / n, mrr / n


@pytest.mark.slow  # ~60 articles embedded in bfloat16: emulated, ~5x slower than float32, on CPUs without native bf16
def test_bfloat16_keeps_alqac_dense_retrieval_quality(bf16_embedder, f32_embedder):
    """20 fixed questions against their articles and the neighbouring ones, dense ranking only (the part the
    precision can move): R@1, R@10 and MRR@10 within 0.5 points of float32."""
    questions, texts, gold = _alqac_sample()
    ref = _dense_metrics(f32_embedder, questions, texts, gold)
    got = _dense_metrics(bf16_embedder, questions, texts, gold)
    assert all(abs(a - b) <= 0.5 for a, b in zip(ref, got)), (ref, got)
