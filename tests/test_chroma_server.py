"""A shared index in a real Chroma server (`chroma run` on 127.0.0.1), as several workers would use it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rag.index import Index
from rag.ingest import ingest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory):
    exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    if not Path(exe).exists():
        pytest.skip("the `chroma` server command (from the chromadb package) is not installed")
    port = _free_port()
    proc = subprocess.Popen([exe, "run", "--path", str(tmp_path_factory.mktemp("chroma")), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("chroma server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_server_index_is_shared_and_swapped_atomically(chroma_url, tmp_path, embedder, settings_factory):
    import chromadb

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Quy định A\n\nĐiều 1. Học phí\nHọc phí được đóng theo từng học kỳ chính.\n",
                               encoding="utf-8")
    s = settings_factory(tmp_path / "builder", chroma_url=chroma_url)
    first = ingest([docs], s, embedder=embedder, progress=False)
    assert first.ok and first.chunk_count >= 1

    # A worker with no local index directory reads everything from the server.
    worker = settings_factory(tmp_path / "elsewhere-never-created", chroma_url=chroma_url)
    index = Index.open(worker)
    assert len(index) == first.chunk_count and index.manifest.embed_model == "all-MiniLM-L6-v2"
    assert [c.article for c in index.chunks if c.article] == ["1"]
    assert not (tmp_path / "elsewhere-never-created").exists()

    (docs / "b.md").write_text("# Quy định B\n\nĐiều 1. Ký túc xá\nKý túc xá đóng cửa lúc 23 giờ.\n", encoding="utf-8")
    second = ingest([docs], s, embedder=embedder, progress=False)
    assert second.count("added") == 1 and second.count("unchanged") == 1
    assert {c.document for c in Index.open(worker).chunks} == {"Quy định A", "Quy định B"}

    client = chromadb.HttpClient(host="127.0.0.1", port=int(chroma_url.rsplit(":", 1)[1]))
    names = sorted(c.name if hasattr(c, "name") else c for c in client.list_collections())
    data_collections = [n for n in names if n != "chunks-current"]
    assert len(data_collections) == 1, f"the previous build's collection is dropped after the swap: {names}"

    other = worker.with_(embed_model="intfloat/multilingual-e5-small")
    from rag.errors import ReindexRequired

    with pytest.raises(ReindexRequired):
        Index.open(other)
