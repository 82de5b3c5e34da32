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

Out of scope: resuming partial downloads, checksums supplied by the caller,
zip archives, HTTP proxies (downloads connect directly), one budget shared by
several processes on one cache directory (each keeps its own downloads within it).
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import os
import shutil
import socket
import ssl
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable
from urllib.parse import urljoin, urlsplit

from .config import Settings, cache_home
from .errors import ConfigError, ModelError, RagError, redact

ADAPTER_MARKER = "adapter_config.json"
INDEX_MARKER = "manifest.json"
DEFAULT_CACHE_BYTES = 20 * 1024**3  # adapters are MBs; a handful of merged-index tarballs fit too
READ_TIMEOUT_S = 60.0  # one connect or one read
DEFAULT_DEADLINE_S = 600.0  # a whole download (RAG_WEIGHTS_DOWNLOAD_TIMEOUT)
MAX_REDIRECTS = 5
_BLOCK = 1 << 20
_RESERVE_STEP = 8 << 20  # a download of unknown length reserves room this much at a time
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
    deadline_s: float = DEFAULT_DEADLINE_S  # one whole download, redirects included
    allow_private: bool = False  # may a request's URL reach private, loopback, link-local addresses?
    # bytes reserved by downloads and unpacks under way (see _reserve); one budget per cache object
    _reserved: int = field(default=0, init=False, repr=False, compare=False)
    _budget: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @classmethod
    def default(cls) -> "WeightsCache":
        return cls(default_cache_dir())

    @classmethod
    def from_settings(cls, settings: Settings) -> "WeightsCache":
        """RAG_WEIGHTS_CACHE (default: $XDG_CACHE_HOME/rag/weights), bounded by RAG_WEIGHTS_CACHE_GB; downloads
        end at RAG_WEIGHTS_DOWNLOAD_TIMEOUT; RAG_WEIGHTS_ALLOW_PRIVATE lets request URLs reach private addresses."""
        return cls(settings.weights_cache_dir or default_cache_dir(),
                   max_bytes=int(settings.weights_cache_gb * 1024**3),
                   deadline_s=settings.weights_download_timeout_s,
                   allow_private=settings.weights_allow_private)

    # -- public ---------------------------------------------------------------------------------
    def fetch(self, url: str, *, marker: str, what: str, error: type[RagError] = ModelError,
              token: str | None = None, client: bool = False) -> Path:
        """Download ``url`` (a tarball) once, unpack it, and return the directory holding ``marker``.

        ``client``: the URL came with a request, not from the deployment: its addresses must be public
        (unless ``allow_private``) and a failure to fetch it is one opaque error (see the module docstring).
        """
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
                self._download_and_unpack(url, entry, marker, what, error, token, client)
                self.touch(entry)
        except Timeout as e:
            raise error(f"{what}: another download of {redact(url, client=False)} is still running; try again later.",
                        code="weights_busy") from e
        self.evict(keep=entry)
        return self._root(entry, marker, what, url, error)

    def entries(self) -> list[Path]:
        if not self.directory.exists():
            return []
        # names starting with "." are downloads and unpacks under way (counted by their reservations)
        return [p for p in self.directory.iterdir()
                if not p.name.startswith(".") and p.is_dir() and (p / _DONE).exists()]

    def size(self) -> int:
        return sum(_tree_size(p) for p in self.entries())

    def touch(self, entry: Path) -> None:
        """Mark ``entry`` as the most recently used: its marker's mtime, strictly after every other entry's
        (file timestamps can be coarser than the time between two requests)."""
        newest = max((p.joinpath(_DONE).stat().st_mtime_ns for p in self.entries() if p != entry), default=0)
        t = max(time.time_ns(), newest + 1000)
        os.utime(entry / _DONE, ns=(t, t))

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Remove least recently used entries until the cache (with what is reserved) fits ``max_bytes``;
        never ``keep``."""
        with self._budget:
            return self._evict(self.max_bytes - self._reserved, keep)

    def _evict(self, room: int, keep: Path | None = None) -> list[Path]:
        # under self._budget: remove least recently used entries until they take at most ``room`` bytes
        entries = sorted(self.entries(), key=lambda p: (p / _DONE).stat().st_mtime_ns)
        sizes = {p: _tree_size(p) for p in entries}
        total = sum(sizes.values())
        removed = []
        for p in entries:
            if total <= room:
                break
            if keep is not None and p.resolve() == Path(keep).resolve():
                continue
            shutil.rmtree(p, ignore_errors=True)
            total -= sizes[p]
            removed.append(p)
        return removed

    def _reserve(self, n: int, *, what: str, shown: str, error) -> None:
        """Take ``n`` bytes of the budget before writing them, removing least recently used entries to make
        room; refused when the other downloads under way leave too little."""
        with self._budget:
            if self._reserved + n > self.max_bytes:
                if n > self.max_bytes:
                    raise error(f"{what}: {shown} needs {_human(n)} (the tarball and its unpacked files), above the "
                                f"weights cache limit of {_human(self.max_bytes)} (RAG_WEIGHTS_CACHE_GB).",
                                code="weights_too_large")
                raise error(f"{what}: the weights cache ({_human(self.max_bytes)}, RAG_WEIGHTS_CACHE_GB) is taken by "
                            "other downloads under way; try again in a while.", code="weights_busy")
            self._evict(self.max_bytes - self._reserved - n)
            self._reserved += n

    def _release(self, n: int) -> None:
        with self._budget:
            self._reserved -= n

    # -- internals ------------------------------------------------------------------------------
    def _download_and_unpack(self, url, entry, marker, what, error, token, client=False) -> None:
        tag = uuid.uuid4().hex[:8]
        part = self.directory / f".{entry.name}.{tag}.download"
        staging = self.directory / f".{entry.name}.{tag}.unpack"
        shown = redact(url, client=False)
        held = 0

        def reserve(total: int) -> None:  # the download and its unpacked files, as they grow
            nonlocal held
            if total > held:
                self._reserve(total - held, what=what, shown=shown, error=error)
                held = total

        try:
            try:
                # Room for the tarball and as much again for its unpacked files, taken as soon as the size is
                # known: two downloads that each got room for their tarball alone could then wait on each other
                # for the room to unpack, and both fail.
                _download(url, part, self.max_bytes, what, error, token, deadline_s=self.deadline_s,
                          allow_private=self.allow_private or not client, reserve=lambda n: reserve(2 * n))
            except _FetchFailed as e:
                raise _unreachable(e, url, what, error, client, self.deadline_s) from None
            size = part.stat().st_size
            unpack_tarball(part, staging, marker=marker, what=what, source=shown, error=error,
                           max_bytes=self.max_bytes, reserve=lambda unpacked: reserve(size + unpacked))
            part.unlink()
            (staging / _DONE).write_text(json.dumps({"url": shown, "fetched_at": time.time()}))
            shutil.rmtree(entry, ignore_errors=True)  # an incomplete leftover from a crash
            os.rename(staging, entry)
        finally:
            part.unlink(missing_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
            self._release(held)  # what was kept is an entry now, counted by its size on disk

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


class _FetchFailed(Exception):
    """Why a URL could not be fetched (for the owner's log; a client of ``lora_weights`` sees one opaque error)."""


@dataclass
class _Deadline:
    seconds: float
    end: float = 0.0
    expired: bool = False

    def __post_init__(self):
        self.end = time.monotonic() + self.seconds

    def left(self, at_most: float = READ_TIMEOUT_S) -> float:
        left = self.end - time.monotonic()
        if left <= 0 or self.expired:
            self.expired = True
            raise _FetchFailed(f"not finished within {self.seconds:g} s (RAG_WEIGHTS_DOWNLOAD_TIMEOUT)")
        return min(left, at_most)


def _download(url: str, dest: Path, limit: int, what: str, error, token: str | None, *,
              deadline_s: float = DEFAULT_DEADLINE_S, allow_private: bool = False,
              reserve: Callable[[int], None] | None = None) -> None:
    """GET ``url`` into ``dest``, following at most MAX_REDIRECTS redirects itself; ``_FetchFailed`` when it cannot.

    Each hop's host is resolved here and every one of its addresses checked (``allow_private`` off: global
    addresses only); the connection goes to an address that was checked, so a second lookup cannot swap in
    another (DNS rebinding). The whole download (lookups, connects, redirects, body) ends at ``deadline_s``: a
    watchdog shuts the socket then, so a server that sends one byte a second is cut off. ``reserve(n)`` is
    called before the file grows to ``n`` bytes (the cache's budget); a body past ``limit`` bytes is refused
    (``error``, weights_too_large).
    """
    deadline = _Deadline(deadline_s)
    current: dict = {}

    def expire() -> None:
        deadline.expired = True
        sock = getattr(current.get("conn"), "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    watchdog = threading.Timer(max(deadline_s, 0.0), expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        for hop in range(MAX_REDIRECTS + 1):
            # The Hugging Face token goes to Hugging Face only and is not carried across a redirect (its LFS
            # redirects are signed): a tarball host never sees it.
            auth = token if token and hop == 0 and _is_hf_host(url) else None
            conn = _connect(url, deadline, allow_private)
            current["conn"] = conn
            try:
                resp = _get(conn, url, auth)
                if resp.status in (301, 302, 303, 307, 308):
                    location = resp.getheader("Location")
                    if not location:
                        raise _FetchFailed(f"HTTP {resp.status} without a Location header")
                    url = urljoin(url, location.strip())
                    continue
                if resp.status != 200:
                    raise _FetchFailed(f"HTTP {resp.status} {resp.reason}")
                _body(resp, dest, limit, what, error, reserve, deadline, redact(url, client=False))
                return
            finally:
                conn.close()
        raise _FetchFailed(f"more than {MAX_REDIRECTS} redirects")
    except (OSError, http.client.HTTPException, ValueError) as e:
        if deadline.expired:
            raise _FetchFailed(f"not finished within {deadline_s:g} s (RAG_WEIGHTS_DOWNLOAD_TIMEOUT)") from e
        raise _FetchFailed(f"{type(e).__name__}: {e}") from e
    finally:
        watchdog.cancel()


def _connect(url: str, deadline: _Deadline, allow_private: bool) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _FetchFailed(f"{redact(url, client=False)} is not an http(s) URL")
    host, https = parts.hostname, parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    addresses = _resolve(host, port, deadline, allow_private)
    if https:
        conn = http.client.HTTPSConnection(host, port, timeout=deadline.left(), context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=deadline.left())

    def pinned(_address, timeout=None, source_address=None):  # connect to a checked address, not a new lookup
        last: OSError | None = None
        for address in addresses:
            try:
                return socket.create_connection((address, port), timeout=deadline.left(), source_address=source_address)
            except OSError as e:
                last = e
        raise last or OSError(f"no address for {host}")

    conn._create_connection = pinned  # http.client's own hook (the TLS handshake still checks ``host``)
    return conn


def _get(conn: http.client.HTTPConnection, url: str, token: str | None) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"User-Agent": "rag-weights/1", "Accept-Encoding": "identity"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request("GET", target, headers=headers)
    return conn.getresponse()


def _resolve(host: str, port: int, deadline: _Deadline, allow_private: bool) -> list[str]:
    """The host's addresses, each one checked; the lookup runs in a thread so the deadline bounds it too."""
    found: dict = {}

    def lookup() -> None:
        try:
            found["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            found["error"] = e

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(deadline.left(at_most=deadline.seconds))
    if worker.is_alive():
        deadline.left(at_most=0)  # raises: the deadline passed during the lookup
        raise _FetchFailed(f"looking up {host} took too long")
    if "error" in found:
        raise _FetchFailed(f"cannot resolve {host}: {found['error']}")
    addresses = list(dict.fromkeys(info[4][0] for info in found["infos"]))
    if not allow_private:
        for address in addresses:
            if not _is_public(address):
                raise _FetchFailed(f"{host} resolves to {address}, not a public address (RAG_WEIGHTS_ALLOW_PRIVATE "
                                   "allows private, loopback and link-local targets)")
    return addresses


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _body(resp, dest: Path, limit: int, what: str, error, reserve, deadline: _Deadline, shown: str) -> None:
    header = (resp.getheader("Content-Length") or "").strip()
    length = int(header) if header.isdigit() else None
    if length is not None and length > limit:
        raise error(f"{what}: {shown} is {_human(length)}, above the weights cache limit of {_human(limit)}.",
                    code="weights_too_large")
    if reserve is not None and length is not None:
        reserve(length)
    got = 0
    with open(dest, "wb") as out:
        while True:
            deadline.left()
            block = resp.read1(_BLOCK)
            if not block:
                break
            got += len(block)
            if got > limit:
                raise error(f"{what}: {shown} is larger than the weights cache limit of {_human(limit)}.",
                            code="weights_too_large")
            if reserve is not None:
                # a known length was reserved whole (a body longer than it is cut off below); else step by step
                reserve(max(got, length or 0) if length is not None else min(limit, got + _RESERVE_STEP))
            if length is not None and got > length:
                raise _FetchFailed(f"the body is longer than its Content-Length ({length} bytes)")
            out.write(block)
    deadline.left()  # a watchdog's shutdown reads as the end of the body
    if length is not None and got != length:
        raise _FetchFailed(f"the body ended after {got} of {length} bytes")


def _unreachable(e: _FetchFailed, url: str, what: str, error, client: bool, deadline_s: float) -> RagError:
    """The error for a URL that could not be fetched: its reason for the deployment's own URLs; for a client's,
    the same words whatever happened (refused, unknown host, 404, timeout, private address), the reason in
    ``detail`` (the owner's)."""
    shown = redact(url, client=False)
    if not client:
        return error(f"{what}: cannot download {shown} ({e}); check the URL and that the server is reachable "
                     "(signed URLs expire).", code="weights_unreachable")
    # The reason travels as ``detail``, for a log only the owner reads: the RunPod worker logs it; a Cog
    # prediction's logs are read by its client, so the Cog runner does not print it.
    return error(f"{what}: could not download {shown}. It must be an http(s) URL on a public address that "
                 f"serves the tarball within {deadline_s:g} s (signed URLs expire).", code="weights_unreachable",
                 detail=f"{what}: could not download {shown}: {e}")


def unpack_tarball(archive: Path, dest: Path, *, marker: str, what: str, source: str | None = None,
                   error: type[RagError] = ModelError, max_bytes: int | None = None,
                   reserve: Callable[[int], None] | None = None) -> Path:
    """Check and unpack a (possibly compressed) tarball into ``dest``; return the directory holding ``marker``.

    ``reserve(n)`` is called with the unpacked size once the members are checked, before anything is written.
    """
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
            if reserve is not None:
                reserve(unpacked)
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
    from .errors import ConfigError, InputError

    if not has_llm:
        raise ConfigError("lora_weights needs an LLM, but this deployment answers extractively: set RAG_LLM.")
    if max_adapters == 0:
        raise ConfigError("per-request adapters are turned off on this deployment (RAG_MAX_ADAPTERS=0): "
                          "send the request without lora_weights, or set RAG_MAX_ADAPTERS to 1 or more.")
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


def _fetch_local(cache: WeightsCache, key: str, archive: Path, marker: str, what: str, error) -> Path:
    from filelock import FileLock

    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    entry = cache.directory / digest
    cache.directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache.directory / f".{digest}.lock"), timeout=cache.lock_timeout_s):
        if not (entry / _DONE).exists():
            staging = cache.directory / f".{digest}.{uuid.uuid4().hex[:8]}.unpack"
            held = []

            def reserve(n: int) -> None:
                cache._reserve(n, what=what, shown=str(archive), error=error)
                held.append(n)

            try:
                unpack_tarball(archive, staging, marker=marker, what=what, error=error, max_bytes=cache.max_bytes,
                               reserve=reserve)
                (staging / _DONE).write_text(json.dumps({"file": str(archive)}))
                shutil.rmtree(entry, ignore_errors=True)
                os.rename(staging, entry)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
                cache._release(sum(held))
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
