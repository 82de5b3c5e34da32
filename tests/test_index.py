"""Index storage: exact search, manifest checks, locking (publishing versions: test_index_swap.py)."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest

from rag.embed import EmbedSpec
from rag.errors import IndexBusy, IndexError_, ReindexRequired
from rag.index import Index, index_lock, make_manifest, write_index
from rag.retrieve import _top
from rag.types import Chunk


def _chunks(n: int) -> list[Chunk]:
    return [
        Chunk(id=f"c{i:05d}", text=f"Điều {i}. Nội dung số {i}", header=f"Quy chế › Điều {i}", document="Quy chế",
              source="qc.md", article=str(i), doc_sha256="ab")
        for i in range(n)
    ]


def _write(settings, directory, n=20, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    chunks = _chunks(n)
    tokens = [[f"điều", f"t{i}"] for i in range(n)]
    spec = EmbedSpec.from_settings(settings)
    files = {"qc.md": {"sha256": "ab", "title": "Quy chế", "kind": "md", "pages": 1, "chunks": n, "ocr_pages": 0}}
    manifest = make_manifest(spec, dim, chunks, files, None, "rag-chunks")
    return write_index(settings, manifest, chunks, vecs, tokens, directory=directory), vecs


def test_roundtrip_preserves_chunks_vectors_and_order(tmp_path, settings_factory):
    s = settings_factory(tmp_path / "idx")
    written, vecs = _write(s, tmp_path / "idx", n=30)
    opened = Index.open(s)
    assert [c.id for c in opened.chunks] == [c.id for c in written.chunks]
    assert opened.chunks[7].article == "7" and opened.chunks[7].header == "Quy chế › Điều 7"
    np.testing.assert_allclose(opened.vectors, vecs, rtol=1e-6)
    assert opened.tokens[3] == ["điều", "t3"]
    assert opened.lexical_scores(["t3"]).argmax() == 3
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["chunk_count"] == 30 and manifest["embed_model"] == "all-MiniLM-L6-v2"


def test_dense_search_is_exact_at_100k():
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(100_000, 64)).astype(np.float32)
    q = rng.normal(size=64).astype(np.float32)
    scores = vecs @ q
    exact = list(np.argsort(-scores)[:10])
    assert _top(scores, 10) == exact


def test_missing_index_says_how_to_build(tmp_path, settings_factory):
    with pytest.raises(IndexError_, match="rag ingest") as e:
        Index.open(settings_factory(tmp_path / "nowhere"))
    assert e.value.code == "index_missing"


def test_other_embedding_model_requires_reindex(tmp_path, settings_factory):
    s = settings_factory(tmp_path / "idx")
    _write(s, tmp_path / "idx")
    other = s.with_(embed_model="intfloat/multilingual-e5-small")
    with pytest.raises(ReindexRequired, match="re-index required") as e:
        Index.open(other)
    assert "all-MiniLM-L6-v2" in str(e.value) and "multilingual-e5-small" in str(e.value)


@pytest.mark.parametrize("damage", ["manifest_garbage", "manifest_missing", "chroma_missing", "count_mismatch"])
def test_corrupted_index_requires_reindex(tmp_path, settings_factory, damage):
    d = tmp_path / "idx"
    s = settings_factory(d)
    _write(s, d)
    m = d / "manifest.json"
    if damage == "manifest_garbage":
        m.write_text("{not json")
    elif damage == "manifest_missing":
        m.unlink()
    elif damage == "chroma_missing":
        shutil.rmtree(d / json.loads(m.read_text())["data_dir"] / "chroma")
    else:
        data = json.loads(m.read_text())
        data["chunk_count"] += 1
        m.write_text(json.dumps(data))
    with pytest.raises(ReindexRequired, match="re-index required"):
        Index.open(s)


def test_second_writer_waits_then_refuses(tmp_path, settings_factory):
    s = settings_factory(tmp_path / "idx", lock_timeout_s=0.3)
    entered = threading.Event()
    release = threading.Event()

    def hold():
        with index_lock(s):
            entered.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    entered.wait(5)
    t0 = time.monotonic()
    with pytest.raises(IndexBusy, match="another ingest"):
        with index_lock(s):
            pass
    assert time.monotonic() - t0 >= 0.25  # it waited before refusing
    release.set()
    t.join()
    with index_lock(s):  # free again
        pass


def test_writers_reaching_one_index_by_two_paths_exclude_each_other(tmp_path, settings_factory):
    """The lock is inside the index directory, so a writer that reaches it by another path waits too (a link
    here; a container's /index and the host's volume directory behind it). Before, each path had its own lock
    beside it, and both wrote. A directory holding only the lock has no index."""
    s = settings_factory(tmp_path / "idx", lock_timeout_s=0.3)
    (tmp_path / "idx").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "idx")
    entered, release = threading.Event(), threading.Event()

    def hold():
        with index_lock(s, tmp_path / "alias"):
            entered.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    entered.wait(5)
    try:
        with pytest.raises(IndexBusy, match="another ingest"):
            with index_lock(s, tmp_path / "idx"):
                pass
    finally:
        release.set()
        t.join()
    assert [p.name for p in (tmp_path / "idx").iterdir()] == [".ingest.lock"]
    with pytest.raises(IndexError_) as info:
        Index.open(s)
    assert info.value.code == "index_missing", info.value
