"""Writer and reader processes for the index fault-injection tests (run as scripts, killed with SIGKILL).

    python tests/_index_faults.py writer DIR START   rebuild DIR over and over (builds START, START+1, …)
    python tests/_index_faults.py reader DIR OUT     open DIR over and over; one JSON line per open into OUT

Every build is self-describing, so a reader can tell a complete index from a torn one: build ``k``
has ``8 + k % 5`` chunks whose texts carry the tag ``bK``, the manifest's file title is that tag,
and its vectors are drawn from a generator seeded with ``k``. A reader checks all three.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

DIM = 8


def build(k: int):
    from rag.types import Chunk

    n = 8 + k % 5
    tag = f"b{k}"
    chunks = [Chunk(id=f"{tag}-{i:03d}", text=f"Điều {i}. {tag} nội dung {i}", header=f"Quy chế › Điều {i}",
                    document="Quy chế", source="qc.md", article=str(i), doc_sha256=tag) for i in range(n)]
    return tag, chunks, vectors(k, n), [["điều", tag, f"t{i}"] for i in range(n)]


def vectors(k: int, n: int) -> np.ndarray:
    v = np.random.default_rng(k).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def settings(directory: Path):
    from rag.config import Settings

    return Settings.from_env({}).with_(index_dir=directory, lock_timeout_s=60.0)


def write_one(directory: Path, k: int) -> None:
    from rag.embed import EmbedSpec
    from rag.index import index_lock, make_manifest, write_index

    s = settings(directory)
    tag, chunks, vecs, tokens = build(k)
    files = {"qc.md": {"sha256": tag, "title": tag, "kind": "md", "pages": 1, "chunks": len(chunks), "ocr_pages": 0}}
    with index_lock(s, directory):
        manifest = make_manifest(EmbedSpec.from_settings(s), DIM, chunks, files, None, "rag-chunks")
        write_index(s, manifest, chunks, vecs, tokens, directory=directory)


def check(index) -> int:
    """The build number of a complete index; AssertionError if it mixes builds."""
    files = index.manifest.files
    tag = files["qc.md"]["title"]
    k = int(tag[1:])
    n = 8 + k % 5
    assert len(index.chunks) == n == index.manifest.chunk_count, (tag, len(index.chunks), index.manifest.chunk_count)
    assert all(c.text.endswith(f"{tag} nội dung {i}") for i, c in enumerate(index.chunks)), tag
    assert np.allclose(index.vectors, vectors(k, n), atol=1e-6), f"{tag}: vectors of another build"
    assert index.lexical_scores([tag]).min() > 0, f"{tag}: BM25 of another build"
    return k


def writer(directory: Path, start: int) -> None:
    import rag.index  # noqa: F401 - imported before "ready" so the kill lands in the work, not the imports
    import chromadb  # noqa: F401

    print("ready", flush=True)
    k = start
    while True:
        write_one(directory, k)
        print(f"built {k}", flush=True)
        k += 1


def reader(directory: Path, out: Path) -> None:
    from rag.index import Index

    s = settings(directory)
    print("ready", flush=True)
    with open(out, "a", encoding="utf-8") as fh:
        while True:
            t = time.time()
            try:
                row = {"build": check(Index.open(s)), "t": t}
            except BaseException as e:  # noqa: BLE001 - every failure is recorded for the test to show
                row = {"error": f"{type(e).__name__}: {e}", "t": t}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()


if __name__ == "__main__":
    role, directory = sys.argv[1], Path(sys.argv[2])
    if role == "writer":
        writer(directory, int(sys.argv[3]))
    elif role == "reader":
        reader(directory, Path(sys.argv[3]))
    elif role == "once":
        write_one(directory, int(sys.argv[3]))
    else:
        raise SystemExit(f"unknown role {role}")
