"""The weights cache: each URL (or local tarball) downloaded and unpacked once per machine, under a per-key
file lock, within one byte budget with least recently used entries removed (see ``rag.weights``)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Settings, cache_home
from ..errors import ModelError, RagError, redact
from . import download
from .common import _human, is_url
from .download import DEFAULT_DEADLINE_S
from .tarball import find_marker, unpack_tarball

DEFAULT_CACHE_BYTES = 20 * 1024**3  # adapters are MBs; a handful of merged-index tarballs fit too
_DONE = ".complete"


def default_cache_dir() -> Path:
    return cache_home() / "rag" / "weights"


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
        token_part = hashlib.sha256(token.encode()).hexdigest() if token and download._is_hf_host(url) else ""
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
                download._download(url, part, self.max_bytes, what, error, token, deadline_s=self.deadline_s,
                          allow_private=self.allow_private or not client, reserve=lambda n: reserve(2 * n))
            except download._FetchFailed as e:
                raise download._unreachable(e, url, what, error, client, self.deadline_s) from None
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


def _tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total
