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
the same URL wait for one download. The cache is bounded: after each new entry
the least recently used entries (by last use) are removed until the total size
fits ``max_bytes``. A download larger than ``max_bytes`` is refused while it
streams. Tarballs are checked before anything is unpacked: members must stay
inside the target (no absolute paths, ``..`` or links out) and the marker file
(``adapter_config.json`` for an adapter, ``manifest.json`` for an index) must
be present.

Out of scope: resuming partial downloads, checksums supplied by the caller,
zip archives.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .config import Settings, cache_home
from .errors import ConfigError, ModelError, RagError, redact

ADAPTER_MARKER = "adapter_config.json"
INDEX_MARKER = "manifest.json"
DEFAULT_CACHE_BYTES = 20 * 1024**3  # adapters are MBs; a handful of merged-index tarballs fit too
READ_TIMEOUT_S = 60.0
_BLOCK = 1 << 20
_DONE = ".complete"


def default_cache_dir() -> Path:
    return cache_home() / "rag" / "weights"


def is_url(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


@dataclass
class WeightsCache:
    directory: Path
    max_bytes: int = DEFAULT_CACHE_BYTES
    lock_timeout_s: float = 1800.0

    @classmethod
    def default(cls) -> "WeightsCache":
        return cls(default_cache_dir())

    @classmethod
    def from_settings(cls, settings: Settings) -> "WeightsCache":
        """RAG_WEIGHTS_CACHE (default: $XDG_CACHE_HOME/rag/weights), bounded by RAG_WEIGHTS_CACHE_GB."""
        return cls(settings.weights_cache_dir or default_cache_dir(),
                   max_bytes=int(settings.weights_cache_gb * 1024**3))

    # -- public ---------------------------------------------------------------------------------
    def fetch(self, url: str, *, marker: str, what: str, error: type[RagError] = ModelError,
              token: str | None = None) -> Path:
        """Download ``url`` (a tarball) once, unpack it, and return the directory holding ``marker``."""
        from filelock import FileLock, Timeout

        if not is_url(url):
            raise error(f"{what}: {redact(url, client=False)!r} is not an http(s) URL.", code="weights_unreachable")
        # A private download is cached per token: a caller without the token must not get it from the cache.
        token_part = hashlib.sha256(token.encode()).hexdigest() if token and _is_hf_host(url) else ""
        key = hashlib.sha256(f"{url}\n{token_part}".encode()).hexdigest()[:32]
        entry = self.directory / key
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(self.directory / f".{key}.lock"), timeout=self.lock_timeout_s):
                if (entry / _DONE).exists():
                    self.touch(entry)
                    return self._root(entry, marker, what, url, error)
                self._download_and_unpack(url, entry, marker, what, error, token)
                self.touch(entry)
        except Timeout as e:
            raise error(f"{what}: another download of {redact(url, client=False)} is still running; try again later.",
                        code="weights_busy") from e
        self.evict(keep=entry)
        return self._root(entry, marker, what, url, error)

    def entries(self) -> list[Path]:
        if not self.directory.exists():
            return []
        return [p for p in self.directory.iterdir() if p.is_dir() and (p / _DONE).exists()]

    def size(self) -> int:
        return sum(_tree_size(p) for p in self.entries())

    def touch(self, entry: Path) -> None:
        """Mark ``entry`` as the most recently used: its marker's mtime, strictly after every other entry's
        (file timestamps can be coarser than the time between two requests)."""
        newest = max((p.joinpath(_DONE).stat().st_mtime_ns for p in self.entries() if p != entry), default=0)
        t = max(time.time_ns(), newest + 1000)
        os.utime(entry / _DONE, ns=(t, t))

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Remove least recently used entries until the cache fits ``max_bytes``; never ``keep``."""
        entries = sorted(self.entries(), key=lambda p: (p / _DONE).stat().st_mtime_ns)
        sizes = {p: _tree_size(p) for p in entries}
        total = sum(sizes.values())
        removed = []
        for p in entries:
            if total <= self.max_bytes:
                break
            if keep is not None and p.resolve() == Path(keep).resolve():
                continue
            shutil.rmtree(p, ignore_errors=True)
            total -= sizes[p]
            removed.append(p)
        return removed

    # -- internals ------------------------------------------------------------------------------
    def _download_and_unpack(self, url, entry, marker, what, error, token) -> None:
        tag = uuid.uuid4().hex[:8]
        part = self.directory / f".{entry.name}.{tag}.download"
        staging = self.directory / f".{entry.name}.{tag}.unpack"
        try:
            _download(url, part, self.max_bytes, what, error, token)
            unpack_tarball(part, staging, marker=marker, what=what, source=redact(url, client=False), error=error,
                           max_bytes=self.max_bytes)
            (staging / _DONE).write_text(json.dumps({"url": redact(url, client=False), "fetched_at": time.time()}))
            shutil.rmtree(entry, ignore_errors=True)  # an incomplete leftover from a crash
            os.rename(staging, entry)
        finally:
            part.unlink(missing_ok=True)
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _root(entry: Path, marker: str, what: str, url: str, error) -> Path:
        root = find_marker(entry, marker)
        if root is None:  # cannot happen for entries we wrote; a hand-edited cache
            raise error(f"{what}: the cached copy of {redact(url, client=False)} has no {marker}; delete {entry} and retry.",
                        code="weights_invalid")
        return root


def _is_hf_host(url: str) -> bool:
    from urllib.parse import urlparse

    host = (urlparse(url).hostname or "").lower()
    return host == "huggingface.co" or host.endswith(".huggingface.co") or host == "hf.co"


def _download(url: str, dest: Path, limit: int, what: str, error, token: str | None) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "rag-weights/1"})
    if token and _is_hf_host(url):
        # The Hugging Face token goes to Hugging Face only, never to an arbitrary tarball host; an
        # unredirected header is not copied onto a redirect (Hugging Face's LFS redirects are signed).
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    shown = redact(url, client=False)
    try:
        # http(s) only: fetch() refuses other schemes (file://, ftp://) before we get here.
        with urllib.request.urlopen(request, timeout=READ_TIMEOUT_S) as resp, open(dest, "wb") as out:  # noqa: S310
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                raise error(f"{what}: {shown} is {_human(int(length))}, above the weights cache limit of "
                            f"{_human(limit)}.", code="weights_too_large")
            got = 0
            while block := resp.read(_BLOCK):
                got += len(block)
                if got > limit:
                    raise error(f"{what}: {shown} is larger than the weights cache limit of {_human(limit)}.",
                                code="weights_too_large")
                out.write(block)
    except urllib.error.HTTPError as e:
        raise error(f"{what}: downloading {shown} failed with HTTP {e.code} ({e.reason}); check the URL "
                    "(signed URLs expire).", code="weights_unreachable") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise error(f"{what}: cannot download {shown} ({reason}); check the URL and that the server is reachable.",
                    code="weights_unreachable") from e


def unpack_tarball(archive: Path, dest: Path, *, marker: str, what: str, source: str | None = None,
                   error: type[RagError] = ModelError, max_bytes: int | None = None) -> Path:
    """Check and unpack a (possibly compressed) tarball into ``dest``; return the directory holding ``marker``."""
    shown = source or str(archive)
    if not tarfile.is_tarfile(archive):
        raise error(f"{what}: {shown} is not a tarball (.tar, .tar.gz, .tgz); package the directory with "
                    f"`tar czf weights.tar.gz -C DIR .`.", code="weights_not_tarball")
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                p = PurePosixPath(m.name)
                if p.is_absolute() or ".." in p.parts or not (m.isfile() or m.isdir()):
                    raise error(f"{what}: {shown} contains {m.name!r} (an absolute path, '..' or a link); refusing to "
                                "unpack it.", code="weights_unsafe")
            unpacked = sum(m.size for m in members if m.isfile())
            if max_bytes is not None and unpacked > max_bytes:
                raise error(f"{what}: {shown} would unpack to {_human(unpacked)}, above the limit of "
                            f"{_human(max_bytes)} (RAG_WEIGHTS_CACHE_GB).", code="weights_too_large")
            names = {PurePosixPath(m.name) for m in members if m.isfile()}
            if not any(n.name == marker and len(n.parts) <= 3 for n in names):
                raise error(f"{what}: {shown} is a tarball but has no {marker}"
                            + (" — it is not a PEFT LoRA adapter (save one with model.save_pretrained(DIR))."
                               if marker == ADAPTER_MARKER else "."),
                            code="weights_invalid")
            dest.mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise error(f"{what}: {shown} is a damaged tarball ({e}).", code="weights_not_tarball") from e
    root = find_marker(dest, marker)
    assert root is not None
    return root


def find_marker(directory: Path, marker: str) -> Path | None:
    """The shallowest directory (at most two levels down) that holds ``marker``."""
    for depth in range(3):
        pattern = "/".join(["*"] * depth + [marker])
        found = sorted(directory.glob(pattern))
        if found:
            return found[0].parent
    return None


def resolve_adapter(ref: str, *, what: str, cache: WeightsCache | None = None, token: str | None = None,
                    error: type[RagError] = ModelError) -> str:
    """A URL or a local tarball → an unpacked adapter directory; a directory or Hugging Face id → unchanged."""
    ref = str(ref).strip()
    if is_url(ref):
        return str((cache or WeightsCache.default()).fetch(ref, marker=ADAPTER_MARKER, what=what, error=error,
                                                           token=token))
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


def request_adapter(url: object, *, has_llm: bool, cache: WeightsCache, token: str | None = None) -> str:
    """A request's ``lora_weights`` URL → its unpacked adapter directory (Cog and RunPod alike).

    Refused before anything is downloaded when the deployment has no LLM to put it on, or when it
    is not an http(s) URL (a request may not name files on the server). Downloads are cached, and
    bounded, by ``cache``; ``rag.generate`` checks the adapter fits the base and keeps at most
    RAG_MAX_ADAPTERS of them loaded.
    """
    from .errors import ConfigError, InputError

    if not has_llm:
        raise ConfigError("lora_weights needs an LLM, but this deployment answers extractively: set RAG_LLM.")
    if not isinstance(url, str) or not is_url(url.strip()):
        raise InputError("'lora_weights' must be an http(s) URL of an adapter tarball (.tar or .tar.gz).")
    return resolve_adapter(url, what="lora_weights", cache=cache, token=token, error=InputError)


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


def _fetch_local(cache: WeightsCache, key: str, archive: Path, marker: str, what: str, error) -> Path:
    from filelock import FileLock

    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    entry = cache.directory / digest
    cache.directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache.directory / f".{digest}.lock"), timeout=cache.lock_timeout_s):
        if not (entry / _DONE).exists():
            staging = cache.directory / f".{digest}.{uuid.uuid4().hex[:8]}.unpack"
            try:
                unpack_tarball(archive, staging, marker=marker, what=what, error=error)
                (staging / _DONE).write_text(json.dumps({"file": str(archive)}))
                shutil.rmtree(entry, ignore_errors=True)
                os.rename(staging, entry)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        cache.touch(entry)
    cache.evict(keep=entry)
    return WeightsCache._root(entry, marker, what, str(archive), error)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total
