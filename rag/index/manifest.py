"""The manifest: what a build was made with (embedder, prefixes, normaliser and chunker versions), what it
holds (files, counts, corpus hash) and, for a versioned build, its data directory and the size and sha256 of
every file in it. Parsing checks every field's type, so a damaged manifest is "re-index required".
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path

from ..embed import EmbedSpec
from ..types import Chunk


INDEX_FORMAT = 2  # what this version writes: manifest.json names a checksummed data directory


READABLE_FORMATS = (1, 2)  # 1: chroma/ and bm25/ beside manifest.json, no checksums (converted by the next ingest)


MANIFEST = "manifest.json"


_DATA_DIR = re.compile(r"v-(\d{6,})")


_OLD_LAYOUT = ("chroma", "bm25")


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
        for k, v in data["files"].items():
            if not isinstance(v.get("meta") or {}, dict):
                raise ValueError(f'"files"[{k!r}]["meta"] is not an object')
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
    from .. import chunk
    from ..normalise import NORMALISER_VERSION

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
