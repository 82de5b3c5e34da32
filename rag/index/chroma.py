"""The Chroma side: clients (embedded ``PersistentClient``, ``HttpClient`` for a server), reading a collection
into memory, filling one, and the server layout (a collection per build, a pointer collection moved to it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from ..config import Settings
from ..errors import IndexError_, ReindexRequired
from ..types import Chunk
from .manifest import Manifest
from .search import Index


CHUNK_FIELDS = [f.name for f in fields(Chunk)]


_ADD_BATCH = 4000


def _chroma_settings():
    import chromadb

    return chromadb.config.Settings(anonymized_telemetry=False, allow_reset=False)


def _persistent_client(path: Path):
    import chromadb

    return chromadb.PersistentClient(path=str(path), settings=_chroma_settings())


def _http_client(url: str):
    import chromadb
    from urllib.parse import urlparse

    u = urlparse(url)
    return chromadb.HttpClient(host=u.hostname or "localhost", port=u.port or (443 if u.scheme == "https" else 8000),
                               ssl=u.scheme == "https", settings=_chroma_settings())


def _release(client) -> None:
    """Drop Chroma's per-path client cache so the directory can be removed or reopened cleanly."""
    try:
        client.clear_system_cache()
    except Exception:  # noqa: BLE001 - best effort; older/newer clients differ
        pass


def _read_collection(col) -> tuple[list[Chunk], np.ndarray, list[list[str]]]:
    total = col.count()
    ids: list[str] = []
    docs: list[str] = []
    metas: list[dict] = []
    embs: list[np.ndarray] = []
    step = 5000
    for offset in range(0, total, step):
        got = col.get(include=["documents", "metadatas", "embeddings"], limit=step, offset=offset)
        ids += got["ids"]
        docs += got["documents"]
        metas += got["metadatas"]
        embs.append(np.asarray(got["embeddings"], dtype=np.float32))
    rows = sorted(range(len(ids)), key=lambda i: metas[i].get("pos", 0))
    chunks, tokens = [], []
    for i in rows:
        m = metas[i]
        kw = {k: m[k] for k in CHUNK_FIELDS if k in m and k not in ("id", "text")}
        chunks.append(Chunk(id=ids[i], text=docs[i], **kw))
        tokens.append(m.get("tokens", "").split())
    dim = embs[0].shape[1] if embs and embs[0].ndim == 2 else 0
    vectors = np.concatenate(embs)[rows] if embs else np.zeros((0, dim), dtype=np.float32)
    return chunks, vectors, tokens


def _chunk_metadata(chunk: Chunk, pos: int, tokens: list[str]) -> dict:
    meta = {k: v for k, v in asdict(chunk).items() if k not in ("id", "text") and v is not None}
    meta["pos"] = pos
    meta["tokens"] = " ".join(tokens)
    return meta


def _fill_collection(col, chunks: list[Chunk], vectors: np.ndarray, tokens: list[list[str]]) -> None:
    for start in range(0, len(chunks), _ADD_BATCH):
        end = min(start + _ADD_BATCH, len(chunks))
        col.add(
            ids=[c.id for c in chunks[start:end]],
            embeddings=vectors[start:end],
            documents=[c.text for c in chunks[start:end]],
            metadatas=[_chunk_metadata(chunks[i], i, tokens[i]) for i in range(start, end)],
        )


def _pointer_name(settings: Settings) -> str:
    return f"{settings.chroma_collection}-current"


def _open_server(settings: Settings) -> Index:
    try:
        client = _http_client(settings.chroma_url)
        pointer = client.get_collection(_pointer_name(settings))
        meta = pointer.metadata or {}
        manifest = Manifest.from_dict(json.loads(meta["manifest"]))
        col = client.get_collection(meta["target"])
        chunks, vectors, tokens = _read_collection(col)
    except (KeyError, ValueError, TypeError) as e:
        raise ReindexRequired(f"the Chroma server at {settings.chroma_url} has no complete index ({e}): "
                              "run `rag ingest`.") from e
    except Exception as e:  # noqa: BLE001
        raise IndexError_(
            f"cannot read the index from the Chroma server at {settings.chroma_url} ({e}): check RAG_CHROMA_URL "
            f"and that `rag ingest` was run against it.",
            code="index_missing",
        ) from e
    if len(chunks) != manifest.chunk_count:
        raise ReindexRequired(f"the Chroma collection {manifest.collection} is incomplete: re-index required.")
    return Index(manifest, chunks, vectors, tokens, None, location=settings.chroma_url)


def _write_server(settings, manifest, chunks, vectors, tokens) -> Index:
    client = _http_client(settings.chroma_url)
    name = manifest.collection
    col = client.create_collection(name, metadata={"hnsw:space": "cosine"}, embedding_function=None)
    try:
        _fill_collection(col, chunks, vectors, tokens)
    except BaseException:
        client.delete_collection(name)
        raise
    pointer = client.get_or_create_collection(_pointer_name(settings), embedding_function=None)
    previous = (pointer.metadata or {}).get("target")
    pointer.modify(metadata={"target": name, "manifest": json.dumps(manifest.to_dict(), ensure_ascii=False)})
    if previous and previous != name:
        try:
            client.delete_collection(previous)
        except Exception:  # noqa: BLE001 - a reader may still hold it; it is only garbage now
            pass
    return Index(manifest, chunks, vectors, tokens, None, location=settings.chroma_url)
