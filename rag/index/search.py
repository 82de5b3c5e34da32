"""``Index``: an opened index, fully in memory (chunks, unit vectors, BM25), and its search primitives.

Opening and writing live in ``rag.index.read`` and ``rag.index.write``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import Settings
from ..embed import EmbedSpec
from ..errors import ReindexRequired
from ..types import Chunk
from .manifest import READABLE_FORMATS, Manifest, _versions


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
        from .chroma import _open_server  # they build an Index
        from .read import _open_local

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


def build_bm25(tokens: list[list[str]]):
    import bm25s

    if not tokens:
        return None
    bm25 = bm25s.BM25()
    # bm25s cannot index an all-empty corpus; an empty token list gets a placeholder that no query contains.
    bm25.index([t if t else ["\u2400"] for t in tokens], show_progress=False)
    return bm25
