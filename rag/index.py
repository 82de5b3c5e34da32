"""The index: chunks, their vectors and BM25 tokens, stored in ChromaDB, searched exactly in memory.

Layout of an index directory (embedded mode)::

    manifest.json   the pointer: embedding model, dimension, prefixes, precision, normaliser/chunker versions,
                    corpus hash, counts, times, the data directory it describes (``data_dir``) and
                    the size and sha256 of every file in it (``checksums``)
    v-000042/       one complete build (a "version"):
      chroma/       a Chroma PersistentClient: documents, metadata, embeddings (the store of record)
      bm25/         the bm25s index over word-segmented text, with the chunk ids in its row order
    v-000041/       the previous build, kept until the next writer starts (a reader may still be copying it)

Every state on disk is the old index or the new one. A writer (holding ``index_lock``) builds a
new ``v-N/`` beside the current one, fsyncs it, and then publishes it by replacing
``manifest.json`` atomically (temporary file, fsync, ``os.replace``, fsync of the directory).
A crash before the replace leaves the old manifest pointing at the old, untouched data; after it,
the new one. Only the lock holder removes anything: on taking the lock it deletes every version
the manifest does not name (the previous one, builds of crashed writers) and temporary pointers.
Readers never take the lock, never repair and never write: they read the manifest, then the data
it names; if that data vanished because a writer published (and a later writer cleaned up) in
between, the manifest has changed and they start again.

Reading never writes into the index: Chroma opens its store read-write and changes it, so the
Chroma files are copied into a private temporary directory (checking their size and sha256 on the
way) and opened there; the BM25 files are verified in place, once per process per file version.
Any mismatch is "re-index required", never an answer. This is what lets an index be served from
a read-only volume or image layer. Cost: the Chroma store is read once and written once to
``$TMPDIR`` per open (a process opens its index once).

An index in the layout before versions (format 1: ``chroma/`` and ``bm25/`` beside a manifest
without ``data_dir`` or checksums) still opens; the next ingest rewrites it as a version (format 2)
and the writer after that removes the old files.

With ``RAG_CHROMA_URL`` the chunks live in a Chroma server instead (several
workers share one index): each build writes a new collection
``<name>-<build id>`` and then moves the pointer collection ``<name>-current``
to it, so readers never see a half-written index; the manifest travels in the
collection's metadata.

Dense search is exact (a matrix product over all stored vectors, loaded at open)
rather than Chroma's HNSW query: measured here, Chroma's default HNSW returned
only 77% (10k chunks) and 59% (50k chunks) of the exact top-5. 100k chunks of
dimension 384 are 150 MB of float32, and a query is one matrix-vector product.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np

from .config import Settings
from .embed import EmbedSpec
from .errors import IndexBusy, IndexError_, ReindexRequired
from .types import Chunk

INDEX_FORMAT = 2  # what this version writes: manifest.json names a checksummed data directory
READABLE_FORMATS = (1, 2)  # 1: chroma/ and bm25/ beside manifest.json, no checksums (converted by the next ingest)
MANIFEST = "manifest.json"
CHUNK_FIELDS = [f.name for f in fields(Chunk)]
_ADD_BATCH = 4000
_DATA_DIR = re.compile(r"v-(\d{6,})")
_OLD_LAYOUT = ("chroma", "bm25")
_OPEN_ATTEMPTS = 8  # a reader starts again when a writer published while it read; more than this: busy
_BLOCK = 1 << 20


@dataclass
class Manifest:
    format: int
    embed_model: str
    embed_dimension: int
    query_prefix: str
    passage_prefix: str
    segmented: bool
    normaliser_version: str
    chunker_version: str
    corpus_hash: str
    chunk_count: int
    document_count: int
    page_count: int
    created_at: str
    updated_at: str
    collection: str
    files: dict  # source -> {"sha256", "title", "kind", "pages", "chunks", "ocr_pages"}
    data_dir: str | None = None  # "v-000042": the build this manifest describes; None: format 1 / a Chroma server
    checksums: dict | None = None  # path inside data_dir -> {"size", "sha256"}, every file
    embed_dtype: str | None = None  # precision of the build's embedder; informative only (vectors are float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        """A manifest from its JSON; ValueError naming the first field that is missing or of the wrong type."""
        if not isinstance(data, dict):
            raise ValueError(f"it is a JSON {type(data).__name__}, not an object")
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data and n not in _OPTIONAL]
        if missing:
            raise ValueError(f"manifest lacks {', '.join(sorted(missing))}")
        for name in names:
            value = data.get(name)
            want = _SCHEMA[name]
            if value is None and name in _OPTIONAL:
                continue
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise ValueError(f'"{name}" is {json.dumps(value)[:40]}, not {_TYPE_NAMES[want]}')
        if not all(isinstance(k, str) and isinstance(v, dict) for k, v in data["files"].items()):
            raise ValueError('"files" must map each source file to an object')
        if data.get("data_dir") is not None and not _DATA_DIR.fullmatch(data["data_dir"]):
            raise ValueError(f'"data_dir" is {data["data_dir"]!r}, not a version directory name (v-NNNNNN)')
        for path, entry in (data.get("checksums") or {}).items():
            p = Path(path)
            if (p.is_absolute() or ".." in p.parts or not isinstance(entry, dict)
                    or not isinstance(entry.get("size"), int) or not isinstance(entry.get("sha256"), str)):
                raise ValueError(f'"checksums" has a bad entry for {path!r}')
        return cls(**{k: data.get(k) for k in names})


_SCHEMA = {
    "format": int, "embed_model": str, "embed_dimension": int, "query_prefix": str, "passage_prefix": str,
    "segmented": bool, "normaliser_version": str, "chunker_version": str, "corpus_hash": str, "chunk_count": int,
    "document_count": int, "page_count": int, "created_at": str, "updated_at": str, "collection": str,
    "files": dict, "data_dir": str, "checksums": dict, "embed_dtype": str,
}
_OPTIONAL = {"data_dir", "checksums", "embed_dtype"}
_TYPE_NAMES = {int: "an integer", str: "a string", bool: "true/false", dict: "an object"}


def _versions() -> tuple[str, str]:
    from . import chunk
    from .normalise import NORMALISER_VERSION

    return NORMALISER_VERSION, getattr(chunk, "CHUNKER_VERSION", "1")


def corpus_hash(chunk_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(chunk_ids)).encode()).hexdigest()[:32]


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def index_exists(directory: Path) -> bool:
    """Whether ``directory`` holds a published index (it may still fail its checks when opened)."""
    return (Path(directory) / MANIFEST).is_file()


def _rebuild_hint(directory: Path | str) -> str:
    return f"re-index required — run `rag ingest PATH… --index {directory} --rebuild`"


class Index:
    """An opened index, fully in memory: chunks, unit vectors, BM25 and document frequencies."""

    def __init__(self, manifest: Manifest, chunks: list[Chunk], vectors: np.ndarray, tokens: list[list[str]],
                 bm25=None, location: str = ""):
        self.manifest = manifest
        self.chunks = chunks
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.tokens = tokens
        self.location = location
        self.by_id = {c.id: i for i, c in enumerate(chunks)}
        self._bm25 = bm25
        self._df: dict[str, int] | None = None

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, settings: Settings, spec: EmbedSpec | None = None, *, directory: Path | None = None) -> "Index":
        """Open the index named by settings; check it against the embedder settings."""
        directory = Path(directory or settings.resolved_index_dir())
        spec = spec or EmbedSpec.from_settings(settings)
        index = _open_server(settings) if settings.chroma_url else _open_local(directory)
        index.check_compatible(spec)
        return index

    def check_compatible(self, spec: EmbedSpec) -> None:
        m = self.manifest
        if m.format not in READABLE_FORMATS:
            raise ReindexRequired(
                f"the index at {self.location} has format {m.format}, this version reads "
                f"{', '.join(map(str, READABLE_FORMATS))}: re-index required — run `rag ingest` again into a new "
                "directory."
            )
        if m.embed_model != spec.model:
            raise ReindexRequired(
                f"the index at {self.location} was built with {m.embed_model} but RAG_EMBED_MODEL is "
                f"{spec.model}: re-index required — run `rag ingest` again, or set RAG_EMBED_MODEL={m.embed_model}."
            )
        if (m.query_prefix, m.passage_prefix, m.segmented) != (spec.query_prefix, spec.passage_prefix, spec.segmented):
            raise ReindexRequired(
                f"the index at {self.location} was built with other embedding input settings "
                f"(prefixes {m.query_prefix!r}/{m.passage_prefix!r}, segmented={m.segmented}); "
                "re-index required, or restore RAG_EMBED_QUERY_PREFIX / RAG_EMBED_PASSAGE_PREFIX / RAG_EMBED_SEGMENTED."
            )
        norm_v, _ = _versions()
        if m.normaliser_version != norm_v:
            raise ReindexRequired(
                f"the index at {self.location} was built with normaliser version {m.normaliser_version}, "
                f"this version is {norm_v}: re-index required — run `rag ingest` again."
            )

    # -- search primitives --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.chunks)

    def dense_scores(self, query_vec: np.ndarray) -> np.ndarray:
        if query_vec.shape[-1] != self.vectors.shape[1] and len(self.chunks):
            raise ReindexRequired(
                f"query vectors have dimension {query_vec.shape[-1]} but the index has {self.vectors.shape[1]}: "
                "re-index required with the current RAG_EMBED_MODEL."
            )
        return self.vectors @ query_vec.astype(np.float32)

    def lexical_scores(self, query_tokens: list[str]) -> np.ndarray:
        if not self.chunks or not query_tokens:  # bm25s fails on a query with no token
            return np.zeros(len(self.chunks), dtype=np.float32)
        if self._bm25 is None:
            self._bm25 = build_bm25(self.tokens)
        return np.asarray(self._bm25.get_scores(query_tokens), dtype=np.float32)

    @property
    def document_frequency(self) -> dict[str, int]:
        if self._df is None:
            df: dict[str, int] = {}
            for toks in self.tokens:
                for t in set(toks):
                    df[t] = df.get(t, 0) + 1
            self._df = df
        return self._df

    def documents(self) -> list[dict]:
        """One row per source file: title, source, sha256, chunk count (for `rag info` and the UI)."""
        seen: dict[str, dict] = {}
        for c in self.chunks:
            row = seen.setdefault(c.source, {"source": c.source, "document": c.document, "sha256": c.doc_sha256,
                                             "chunks": 0})
            row["chunks"] += 1
        return list(seen.values())


# -- BM25 -------------------------------------------------------------------------------------
def build_bm25(tokens: list[list[str]]):
    import bm25s

    if not tokens:
        return None
    bm25 = bm25s.BM25()
    # bm25s cannot index an all-empty corpus; an empty token list gets a placeholder that no query contains.
    bm25.index([t if t else ["\u2400"] for t in tokens], show_progress=False)
    return bm25


# -- reading ----------------------------------------------------------------------------------
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


class _Moved(Exception):
    """The data a manifest named is gone or changed while it was read (a writer published meanwhile)."""


def _open_local(directory: Path) -> Index:
    if directory.exists() and not directory.is_dir():
        raise IndexError_(f"{directory} is a file, not an index directory: point --index / RAG_INDEX_DIR at the "
                          "directory `rag ingest` wrote.", code="not_an_index")
    for _ in range(_OPEN_ATTEMPTS):
        raw = _read_pointer(directory)
        manifest = _parse_manifest(raw, directory)
        try:
            return _open_version(directory, manifest)
        except (_Moved, ReindexRequired, OSError) as e:
            if _read_pointer(directory, missing_ok=True) != raw:
                continue  # a writer published a new version while we read the old one: read the new one
            if isinstance(e, ReindexRequired):
                raise
            raise ReindexRequired(f"the index at {directory} is damaged ({e}): {_rebuild_hint(directory)}.") from e
    raise IndexBusy(f"the index at {directory} changed {_OPEN_ATTEMPTS} times while it was being opened "
                    "(ingests running back to back); try again.")


def _read_pointer(directory: Path, missing_ok: bool = False) -> bytes | None:
    try:
        return (directory / MANIFEST).read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return None
    except IsADirectoryError as e:
        raise ReindexRequired(f"{directory / MANIFEST} is a directory: {_rebuild_hint(directory)}.") from e
    if not directory.is_dir() or not any(directory.iterdir()):
        raise IndexError_(
            f"no index at {directory}: run `rag ingest PATH --index {directory}` first "
            "(or leave RAG_INDEX_DIR unset to use the demo regulations).",
            code="index_missing",
        )
    raise ReindexRequired(f"{directory} has no {MANIFEST}: it is not an index, it is damaged, or the ingest that "
                          f"was building it was killed — {_rebuild_hint(directory)} (an ingest removes what an "
                          "interrupted one left).")


def _parse_manifest(raw: bytes, directory: Path) -> Manifest:
    try:
        return Manifest.from_dict(json.loads(raw.decode("utf-8")))
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise ReindexRequired(f"{directory / MANIFEST} is malformed ({e}): {_rebuild_hint(directory)}.") from e


def _open_version(directory: Path, manifest: Manifest) -> Index:
    if manifest.format >= 2 and (manifest.data_dir is None or manifest.checksums is None):
        raise ReindexRequired(f"{directory / MANIFEST} (format {manifest.format}) names no data directory or "
                              f"checksums: {_rebuild_hint(directory)}.")
    root = directory / manifest.data_dir if manifest.data_dir else directory
    if not root.is_dir():
        raise _Moved(f"{root.name} is missing")
    checksums = manifest.checksums
    _clean_stale_copies()
    with tempfile.TemporaryDirectory(prefix=f"{_COPY_PREFIX}{os.getpid()}-") as tmp:
        _copy_verified(root / "chroma", Path(tmp) / "chroma", checksums, directory)
        try:
            client = _persistent_client(Path(tmp) / "chroma")
            try:
                chunks, vectors, tokens = _read_collection(client.get_collection(manifest.collection))
            finally:
                _release(client)
        except Exception as e:  # noqa: BLE001 - Chroma raises many types for a damaged store
            raise ReindexRequired(f"the Chroma store in {directory} cannot be read ({e}): "
                                  f"{_rebuild_hint(directory)}.") from e
    if len(chunks) != manifest.chunk_count or (len(chunks) and vectors.shape[1] != manifest.embed_dimension):
        raise ReindexRequired(
            f"the index at {directory} is inconsistent: manifest says {manifest.chunk_count} chunks of dimension "
            f"{manifest.embed_dimension}, the store has {len(chunks)}: {_rebuild_hint(directory)}."
        )
    if corpus_hash([c.id for c in chunks]) != manifest.corpus_hash:
        raise ReindexRequired(f"the index at {directory} does not match its manifest's corpus hash: "
                              f"{_rebuild_hint(directory)}.")
    ids = [c.id for c in chunks]
    if checksums is None:
        bm25 = _load_bm25_unchecked(root / "bm25", ids)
    else:
        for rel, entry in checksums.items():
            if not rel.startswith("chroma/"):
                _verify_in_place(root, rel, entry, directory)
        bm25 = _load_bm25(root / "bm25", ids, directory) if any(r.startswith("bm25/") for r in checksums) else None
    return Index(manifest, chunks, vectors, tokens, bm25, location=str(directory))


_COPY_PREFIX = "rag-index-"  # + the reader's pid: a copy whose process is gone can be removed by the next reader
_STALE_COPY_S = 3600


def _clean_stale_copies() -> None:
    """Remove private copies of Chroma stores (``$TMPDIR/rag-index-<pid>-*``) left by readers that were
    killed while opening an index: owned by this user, untouched for ``_STALE_COPY_S`` and whose process is
    gone. Best effort; a copy of a live process (or of another user) is never touched."""
    now = time.time()
    for path in Path(tempfile.gettempdir()).glob(f"{_COPY_PREFIX}*-*"):
        m = re.fullmatch(rf"{_COPY_PREFIX}(\d+)-\w+", path.name)
        try:
            st = path.lstat()
            if (not m or not path.is_dir() or st.st_uid != os.getuid() or now - st.st_mtime < _STALE_COPY_S
                    or _alive(int(m.group(1)))):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _damaged(directory: Path, rel: str, why: str) -> ReindexRequired:
    return ReindexRequired(f"the index at {directory} is damaged: {rel} {why} (its size and sha256 are recorded in "
                           f"{MANIFEST}): {_rebuild_hint(directory)}.")


def _copy_verified(src: Path, dest: Path, checksums: dict | None, directory: Path) -> None:
    """Copy the Chroma store to ``dest``, hashing each file on the way; every file must match ``checksums``
    (a format-1 index has none: everything under ``src`` is copied as it is)."""
    if checksums is None:
        if not src.is_dir():
            raise _Moved("chroma/ is missing")
        names = [str(p.relative_to(src.parent)) for p in sorted(src.rglob("*")) if p.is_file()]
    else:
        names = [rel for rel in checksums if rel.startswith("chroma/")]
        if not names:
            raise ReindexRequired(f"{directory / MANIFEST} lists no Chroma files: {_rebuild_hint(directory)}.")
    for rel in names:
        target = dest.parent / rel
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            out = open(target, "wb")
        except OSError as e:
            raise IndexError_(f"cannot copy the index into a temporary directory to read it ({e.strerror}): "
                              f"set TMPDIR to a writable directory with room for the index.",
                              code="index_unreadable") from e
        h, size = hashlib.sha256(), 0
        with out:
            try:
                src_fh = open(src.parent / rel, "rb")
            except FileNotFoundError as e:
                raise _Moved(f"{rel} is missing") from e
            with src_fh:
                while block := src_fh.read(_BLOCK):
                    h.update(block)
                    size += len(block)
                    out.write(block)
        if checksums is not None:
            _check(directory, rel, checksums[rel], size, h.hexdigest())


def _check(directory: Path, rel: str, entry: dict, size: int, digest: str) -> None:
    if size != entry["size"]:
        raise _damaged(directory, rel, f"has {size} bytes, not {entry['size']}")
    if digest != entry["sha256"]:
        raise _damaged(directory, rel, "has other contents than when it was written")


_VERIFIED: dict[tuple, str] = {}  # (path, device, inode, size, mtime, ctime) -> sha256: hash each file version once


def _verify_in_place(root: Path, rel: str, entry: dict, directory: Path) -> None:
    path = root / rel
    try:
        st = path.stat()
    except FileNotFoundError as e:
        raise _Moved(f"{rel} is missing") from e
    key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    digest = _VERIFIED.get(key)
    if digest is None:
        digest = _hash_file(path)
        _VERIFIED[key] = digest
    _check(directory, rel, entry, st.st_size, digest)


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def _load_bm25(path: Path, ids: list[str], directory: Path):
    """The saved BM25 index (its files already verified against the manifest)."""
    import bm25s

    try:
        saved_ids = json.loads((path / "ids.json").read_text(encoding="utf-8"))
        bm25 = bm25s.BM25.load(str(path), show_progress=False)
    except FileNotFoundError as e:
        raise _Moved(f"bm25/{e.filename} is missing") from e
    except Exception as e:  # noqa: BLE001 - checksums matched, so this is a writer's bug rather than damage
        raise ReindexRequired(f"the BM25 index in {directory} cannot be read ({e}): {_rebuild_hint(directory)}.") from e
    if saved_ids != ids:
        raise ReindexRequired(f"the BM25 index in {directory} lists other chunks than the store: "
                              f"{_rebuild_hint(directory)}.")
    return bm25


def _load_bm25_unchecked(path: Path, ids: list[str]):
    """Format 1 (no checksums): a missing or stale BM25 cache is rebuilt from the stored tokens."""
    try:
        import bm25s

        if json.loads((path / "ids.json").read_text()) != ids:
            return None
        return bm25s.BM25.load(str(path), show_progress=False)
    except Exception:  # noqa: BLE001
        return None


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


# -- writing ----------------------------------------------------------------------------------
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


def make_manifest(spec: EmbedSpec, dimension: int, chunks: list[Chunk], files: dict,
                  created_at: str | None, collection: str, embed_dtype: str | None = None) -> Manifest:
    norm_v, chunk_v = _versions()
    return Manifest(
        format=INDEX_FORMAT, embed_model=spec.model, embed_dimension=dimension, query_prefix=spec.query_prefix,
        passage_prefix=spec.passage_prefix, segmented=spec.segmented, normaliser_version=norm_v,
        chunker_version=chunk_v, corpus_hash=corpus_hash([c.id for c in chunks]), chunk_count=len(chunks),
        document_count=len(files), page_count=sum(int(f.get("pages") or 0) for f in files.values()),
        created_at=created_at or now_iso(), updated_at=now_iso(), collection=collection, files=files,
        embed_dtype=embed_dtype,
    )


def write_index(settings: Settings, manifest: Manifest, chunks: list[Chunk], vectors: np.ndarray,
                tokens: list[list[str]], *, directory: Path | None = None) -> Index:
    """Write a complete new version and publish it atomically; return it opened.

    The caller holds ``index_lock``. On any failure the new version's directory is removed and the
    published index is untouched; a full disk raises ``IndexError_`` with code ``disk_full``.
    """
    directory = Path(directory or settings.resolved_index_dir())
    if settings.chroma_url:
        return _write_server(settings, manifest, chunks, vectors, tokens)
    published = False
    root = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        root = _new_data_dir(directory)
        client = _persistent_client(root / "chroma")
        try:
            col = client.create_collection(manifest.collection, metadata={"hnsw:space": "cosine"},
                                           embedding_function=None)
            _fill_collection(col, chunks, vectors, tokens)
        finally:
            _release(client)
        bm25 = build_bm25(tokens)
        if bm25 is not None:
            bm25.save(str(root / "bm25"), show_progress=False)
            (root / "bm25" / "ids.json").write_text(json.dumps([c.id for c in chunks]), encoding="utf-8")
        manifest = replace(manifest, format=INDEX_FORMAT, data_dir=root.name, checksums=_checksum_and_sync(root))
        _publish(directory, manifest)
        published = True
        _fsync_dir(directory)
    except BaseException as e:
        # measured before the partial build is removed (which frees what it took)
        full = isinstance(e, Exception) and (_is_disk_full(e) or _low_space(directory, _build_bytes(vectors, chunks)))
        if root is not None and not published:
            shutil.rmtree(root, ignore_errors=True)
        if isinstance(e, Exception) and _is_read_only(e):
            raise _read_only(directory, _is_read_only(e)) from e
        if full:
            raise IndexError_(
                f"the disk holding {directory} is full: the new index was not written and the previous one is "
                f"kept. Free some space (the index needs about twice its size while it is rebuilt) and run "
                "`rag ingest` again.", code="disk_full") from e
        raise
    return Index(manifest, chunks, vectors, tokens, bm25, location=str(directory))


def _new_data_dir(directory: Path) -> Path:
    """A fresh version directory numbered after every existing one (the lock holder is the only writer)."""
    numbers = [int(m.group(1)) for p in directory.iterdir() if (m := _DATA_DIR.fullmatch(p.name))]
    root = directory / f"v-{max(numbers, default=0) + 1:06d}"
    root.mkdir()
    return root


def _checksum_and_sync(root: Path) -> dict:
    """Size and sha256 of every file under ``root``, each fsynced, then the directories themselves."""
    sums = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h, size = hashlib.sha256(), 0
        with open(path, "rb") as fh:
            while block := fh.read(_BLOCK):
                h.update(block)
                size += len(block)
            os.fsync(fh.fileno())
        sums[path.relative_to(root).as_posix()] = {"size": size, "sha256": h.hexdigest()}
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        _fsync_dir(d)
    _fsync_dir(root)
    return sums


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(directory: Path, manifest: Manifest) -> None:
    """Replace the pointer (manifest.json) atomically: temporary file, fsync, rename over (the caller then
    fsyncs the directory, so the rename itself is durable)."""
    tmp = directory / f"{MANIFEST}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(manifest.to_dict(), ensure_ascii=False, indent=2))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / MANIFEST)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_READ_ONLY_ERRNOS = (errno.EACCES, errno.EROFS, errno.EPERM)


def _is_read_only(e: BaseException) -> OSError | None:
    """The permission error (EACCES, EROFS, EPERM) in ``e``'s chain, if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _READ_ONLY_ERRNOS:
            return e
        e = e.__cause__ or e.__context__
    return None


def _read_only(directory: Path, e: OSError) -> IndexError_:
    return IndexError_(f"cannot write the index at {directory} ({e.strerror or e}): `rag ingest` needs a writable "
                       f"directory — make it writable or choose another --index / RAG_INDEX_DIR; the previous index "
                       "is kept, and serving can read a read-only one.", code="index_read_only")


def _probe_writable(directory: Path) -> None:
    """Fail before any work when the index directory cannot be written (a read-only mount, no permission)."""
    if not directory.is_dir():
        return
    probe = directory / f".write-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        if e.errno in _READ_ONLY_ERRNOS:
            raise _read_only(directory, e) from e
        raise


_MIN_FREE = 16 << 20


def _build_bytes(vectors: np.ndarray, chunks: list[Chunk]) -> int:
    """Roughly what a build writes: its vectors and texts, twice (Chroma's log and segments hold both)."""
    return 2 * (int(vectors.nbytes) + sum(len(c.text) for c in chunks) * 2)


def _low_space(directory: Path, need: int) -> bool:
    """Whether the filesystem holding ``directory`` has less room than a build needs (or than ``_MIN_FREE``).

    Chroma reports a full disk during its writes as its own errors ("Error in compaction: Failed to apply
    logs …") without the errno, so a failed write is also judged by the room left where it was writing.
    """
    try:
        return shutil.disk_usage(directory).free < max(_MIN_FREE, need)
    except OSError:
        return False


def _is_disk_full(e: BaseException) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e).lower()
        if "no space left" in text or "disk is full" in text or "quota exceeded" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


def _clean_stale(directory: Path) -> None:
    """Remove what no reader can reach: every version the manifest does not name, temporary pointers, the
    old layout's files once a version replaced them, and build directories of the layout before versions.
    Only the lock holder calls this."""
    if directory.parent.is_dir():
        for stale in directory.parent.glob(f".{glob.escape(directory.name)}.building-*"):
            shutil.rmtree(stale, ignore_errors=True)
    if not directory.is_dir():
        return
    try:
        raw = (directory / MANIFEST).read_bytes()
    except FileNotFoundError:
        raw = None
    if raw is not None:
        try:
            current = Manifest.from_dict(json.loads(raw.decode("utf-8")))
        except (ValueError, TypeError, UnicodeDecodeError):
            return  # a damaged pointer: leave everything for the user to inspect (`--rebuild` replaces it)
    for p in directory.iterdir():
        if ".tmp-" in p.name and p.name.startswith(MANIFEST):
            p.unlink(missing_ok=True)
        elif _DATA_DIR.fullmatch(p.name) and (raw is None or p.name != current.data_dir):
            shutil.rmtree(p, ignore_errors=True)
        elif p.name in _OLD_LAYOUT and raw is not None and current.data_dir is not None:
            shutil.rmtree(p, ignore_errors=True)
    if raw is not None and directory.parent.is_dir():
        for stale in directory.parent.glob(f".{glob.escape(directory.name)}.old-*"):
            shutil.rmtree(stale, ignore_errors=True)  # swaps of the layout before versions


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


def new_collection_name(settings: Settings) -> str:
    if settings.chroma_url:
        return f"{settings.chroma_collection}-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
    return settings.chroma_collection if len(settings.chroma_collection) >= 3 else "rag-chunks"


@contextmanager
def index_lock(settings: Settings, directory: Path | None = None) -> Iterator[None]:
    """Exclusive lock for writers; a second ingest waits up to RAG_LOCK_TIMEOUT seconds, then refuses.

    The lock holder is the only process that removes anything from the index directory (see
    ``_clean_stale``); readers never take this lock.
    """
    from filelock import FileLock, Timeout

    directory = Path(directory or settings.resolved_index_dir())
    if directory.exists() and not directory.is_dir():
        raise IndexError_(f"{directory} is a file, not an index directory: choose a directory for --index / "
                          "RAG_INDEX_DIR.", code="not_an_index")
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(directory.parent / f".{directory.name}.lock"))
        lock.acquire(timeout=settings.lock_timeout_s)
    except Timeout as e:
        raise IndexBusy(
            f"another ingest is writing the index at {directory}; waited {settings.lock_timeout_s:g} s. "
            "Try again when it finishes (or raise RAG_LOCK_TIMEOUT)."
        ) from e
    except OSError as e:
        raise _read_only(directory, e) from e
    try:
        _probe_writable(directory)
        _clean_stale(directory)
        yield
    finally:
        lock.release()
