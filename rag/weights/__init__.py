"""Weights named by a URL: download once, verify, unpack into a bounded cache.

A deployment names its adapter (and optionally its index) by a local path, a
Hugging Face id or the URL of a tarball — what a Replicate training returns and
what the Cog runner's ``weights`` / ``lora_weights`` and the RunPod worker
receive. ``resolve_adapter`` turns any of those into something
``Generator.load`` / PEFT can open: a URL or a local tarball becomes an
unpacked directory; a directory or a Hugging Face id is passed through
unchanged (the generator checks and downloads those itself, with HF_TOKEN).
``resolve_deployment`` is the one entry point for the wrappers' setup: it
resolves the adapter (RAG_ADAPTER, or Cog's ``weights``) and the index
(RAG_INDEX_URL) and returns Settings naming local directories.

The cache (``WeightsCache``) keys entries by a hash of the URL, so a URL is
downloaded once per machine; a per-key file lock makes concurrent requests for
the same URL wait for one download. The cache is bounded in total: every byte a
download or an unpack is about to write is first reserved from one budget
(``max_bytes``, shared by the downloads under way in this process, under a lock),
least recently used entries are removed to make room, and a download that cannot
get room is refused while it streams. Tarballs are checked before anything is
unpacked: members must stay inside the target (no absolute paths, ``..`` or links
out) and the marker file (``adapter_config.json`` for an adapter, ``manifest.json``
for an index) must be present.

Downloads follow their redirects here, not in a library: each hop's host is
resolved and every address checked, and the connection goes to a checked address.
A request's ``lora_weights`` (``request_adapter``) may reach only public (global)
addresses unless RAG_WEIGHTS_ALLOW_PRIVATE is set, and every failure to fetch it
is one opaque ``weights_unreachable`` error (its ``detail``, for the owner's log,
has the reason), so
the endpoint cannot be used to probe a private network. The deployment's own URLs
(RAG_ADAPTER, COG_WEIGHTS, RAG_INDEX_URL) may point anywhere and fail with their
reason. Every download ends at RAG_WEIGHTS_DOWNLOAD_TIMEOUT seconds in all.

The package: ``cache`` (``WeightsCache``: the budget, the locks, least recently used removal),
``download`` (HTTP with checked addresses and redirects, the deadline), ``tarball`` (checks and
unpacking), ``common`` (markers, sizes); the resolvers below are what the rest of rag calls.

Out of scope: resuming partial downloads, checksums supplied by the caller,
zip archives, HTTP proxies (downloads connect directly), one budget shared by
several processes on one cache directory (each keeps its own downloads within it).
"""

from __future__ import annotations

from pathlib import Path

from ..config import Settings
from ..errors import ConfigError, ModelError, RagError
from .cache import DEFAULT_CACHE_BYTES, WeightsCache, _fetch_local, default_cache_dir
from .common import ADAPTER_MARKER, INDEX_MARKER, is_url
from .download import DEFAULT_DEADLINE_S, MAX_REDIRECTS, READ_TIMEOUT_S
from .tarball import find_marker, unpack_tarball


def resolve_adapter(ref: str, *, what: str, cache: WeightsCache | None = None, token: str | None = None,
                    error: type[RagError] = ModelError, client: bool = False) -> str:
    """A URL or a local tarball → an unpacked adapter directory; a directory or Hugging Face id → unchanged.
    ``client``: a URL sent with a request (``WeightsCache.fetch``)."""
    ref = str(ref).strip()
    if is_url(ref):
        return str((cache or WeightsCache.default()).fetch(ref, marker=ADAPTER_MARKER, what=what, error=error,
                                                           token=token, client=client))
    path = Path(ref).expanduser()
    if ref.startswith(("/", "./", "../", "~")) and not path.exists():
        # Checked here, first thing in setup, so a typo fails in a second rather than after the models load.
        raise error(f"{what}={ref!r}: no such file or directory. Point it at a PEFT adapter directory "
                    "(with adapter_config.json), a tarball of one, its URL, or a Hugging Face id.",
                    code="adapter_not_found")
    if path.is_file():
        cache = cache or WeightsCache.default()
        st = path.stat()
        key = f"file://{path.resolve()}?size={st.st_size}&mtime={st.st_mtime_ns}"
        return str(_fetch_local(cache, key, path, ADAPTER_MARKER, what, error))
    return ref


def request_adapter(url: object, *, has_llm: bool, cache: WeightsCache, token: str | None = None,
                    max_adapters: int = 1) -> str:
    """A request's ``lora_weights`` URL → its unpacked adapter directory (Cog and RunPod alike).

    Refused before anything is downloaded when the deployment cannot use it (no LLM to put it on, or
    RAG_MAX_ADAPTERS=0), or when it is not an http(s) URL (a request may not name files on the server).
    The download is a client's (``WeightsCache.fetch(client=True)``): public addresses only unless
    RAG_WEIGHTS_ALLOW_PRIVATE, one opaque error for any failure to fetch. Downloads are cached, and
    bounded, by ``cache``; ``rag.generate`` checks the adapter fits the base and keeps at most
    RAG_MAX_ADAPTERS of them loaded.
    """
    from ..errors import InputError

    # the client's request asks for what this deployment does not offer: an input error, not a server fault
    if not has_llm:
        raise InputError("lora_weights needs an LLM, but this deployment answers extractively: send the request "
                         "without lora_weights (its owner can set RAG_LLM).")
    if max_adapters == 0:
        raise InputError("per-request adapters are turned off on this deployment (RAG_MAX_ADAPTERS=0): "
                         "send the request without lora_weights (its owner can set RAG_MAX_ADAPTERS to 1 or more).")
    if not isinstance(url, str) or not is_url(url.strip()):
        raise InputError("'lora_weights' must be an http(s) URL of an adapter tarball (.tar or .tar.gz).")
    return resolve_adapter(url, what="lora_weights", cache=cache, token=token, error=InputError, client=True)


def resolve_index(ref: str, *, what: str, cache: WeightsCache | None = None, token: str | None = None) -> Path:
    """An index tarball URL (a packed index directory, manifest.json inside) → its unpacked directory."""
    if not is_url(ref):
        return Path(ref).expanduser()
    return (cache or WeightsCache.default()).fetch(ref, marker=INDEX_MARKER, what=what, token=token)


def resolve_deployment(settings: Settings, *, weights: str | None = None,
                       cache: WeightsCache | None = None) -> Settings:
    """The adapter and index a deployment names, as local directories: the one resolver the Cog
    runner's ``setup`` and the RunPod worker call before ``Pipeline.from_settings``.

    * the adapter: Cog's ``weights`` (COG_WEIGHTS, what a Replicate training returns) when given,
      replacing RAG_ADAPTER; else RAG_ADAPTER. A URL or a tarball is downloaded/unpacked into the
      cache; a directory or a Hugging Face id is kept as it is (see ``resolve_adapter``).
    * the index: RAG_INDEX_URL, only when RAG_INDEX_DIR is unset (an explicit directory wins).

    ``cache`` defaults to ``WeightsCache.from_settings(settings)``. Nothing is loaded here, only
    downloaded and unpacked, so a bad URL fails setup before any model loads.
    """
    if weights and not settings.llm:
        raise ConfigError("weights were given (a trained adapter) but RAG_LLM is not set: set RAG_LLM to the base "
                          "model the adapter was trained on.")
    adapter = str(weights).strip() if weights else settings.adapter
    wants_index = settings.index_url and settings.index_dir is None and not settings.chroma_url
    if not adapter and not wants_index:
        return settings
    cache = cache or WeightsCache.from_settings(settings)
    if adapter:
        what = "weights (COG_WEIGHTS)" if weights else "RAG_ADAPTER"
        settings = settings.with_(adapter=resolve_adapter(adapter, what=what, cache=cache, token=settings.hf_token))
    if wants_index:
        settings = settings.with_(index_dir=resolve_index(settings.index_url, what="RAG_INDEX_URL", cache=cache,
                                                          token=settings.hf_token))
    return settings


__all__ = ["WeightsCache", "ADAPTER_MARKER", "INDEX_MARKER", "DEFAULT_CACHE_BYTES", "DEFAULT_DEADLINE_S",
           "MAX_REDIRECTS", "READ_TIMEOUT_S", "default_cache_dir", "is_url", "unpack_tarball", "find_marker",
           "resolve_adapter", "request_adapter", "resolve_index", "resolve_deployment", "RagError"]
