"""A download over HTTP(S) that follows its redirects itself: each hop's host resolved and every address
checked (public addresses only for a request's URL), the connection made to a checked address, the
whole download bounded in time and in size (see ``rag.weights``)."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urljoin, urlsplit

from ..errors import RagError, redact
from .common import _human

READ_TIMEOUT_S = 60.0  # one connect or one read
DEFAULT_DEADLINE_S = 600.0  # a whole download (RAG_WEIGHTS_DOWNLOAD_TIMEOUT)
MAX_REDIRECTS = 5
_BLOCK = 1 << 20
_RESERVE_STEP = 8 << 20  # a download of unknown length reserves room this much at a time


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
