"""Errors a user can act on, and what of an error a client or a log may see.

Every error names the problem and the fix, and carries a stable ``code`` that
wrappers (CLI exit messages, the Cog runner, the RunPod handler) pass through
unchanged. Causes are chained with ``raise ... from e``; tracebacks never reach
a wrapper's output.

- ``redact(text)``: the one redaction policy (tracebacks, URL credentials,
  server paths, the host name, length), for every message that leaves.
- ``public_message(exc)``: ``"<code>: <message>"``, the one string a wrapper's
  client sees for any error (``client_message`` without the code).
- ``trace_line(exc)``: an unexpected error as one line for a log that a client can
  read too (a Cog prediction's logs): its type, its redacted message and where it was
  raised as ``module:line`` frames, never a traceback or a file path.
- ``is_fatal_device_error(exc)``: the GPU is in a state no later request can
  recover from (an illegal memory access, a device-side assert), so the wrapper
  should ask its platform for a fresh machine; ``is_out_of_memory(exc)``.
"""

from __future__ import annotations

import functools
import os
import re


class RagError(Exception):
    """Base class. ``code`` is stable and machine-readable; ``str(e)`` is for people.

    ``detail``: what the deployment's owner may read and the client may not (why a client's URL could not
    be fetched, say); wrappers write it only to a log the client cannot see, never into a reply.
    """

    code = "rag_error"

    def __init__(self, message: str, *, code: str | None = None, detail: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.detail = redact(detail, client=False) if detail else None

    @property
    def message(self) -> str:
        return str(self)


class InputError(RagError):
    """A request or file the user gave is not acceptable (fix the input)."""

    code = "invalid_input"


class LoadError(RagError):
    """A source file could not be read into text."""

    code = "load_failed"


class NeedsOCRError(LoadError):
    """A PDF (or some of its pages) has no text layer."""

    code = "needs_ocr"


class ConfigError(RagError):
    """A setting or combination of settings is wrong (fix the environment / flags)."""

    code = "bad_config"


class IndexError_(RagError):
    """The index is missing, corrupted or built with other settings."""

    code = "index_error"


class ReindexRequired(IndexError_):
    """The index was built by another version or with other settings: `rag ingest --rebuild` makes it anew."""

    code = "reindex_required"


class IndexBusy(IndexError_):
    """Another process is writing the index, past the time allowed to wait for it (try again later)."""

    code = "index_busy"


class ModelError(RagError):
    """A model, adapter or tokenizer could not be loaded or does not match."""

    code = "model_error"


class Cancelled(RagError):
    """The asker stopped the question (Stop in the web chat, a cancelled job): not a failure."""

    code = "cancelled"


# -- what a client or a log may see ------------------------------------------------------------------

# Messages of CUDA failures after which the context is unusable (torch raises them as RuntimeError,
# or torch.AcceleratorError since 2.8). Out-of-memory is deliberately absent: the next request may fit.
_FATAL_DEVICE = re.compile(
    r"CUDA error|CUDA driver|CUBLAS_STATUS_(?!ALLOC_FAILED)|CUDNN_STATUS|cuDNN error|device-side assert|"
    r"illegal memory access|unspecified launch failure|misaligned address|NCCL error|uncorrectable ECC",
    re.IGNORECASE,
)
_OOM = re.compile(r"out of memory|CUBLAS_STATUS_ALLOC_FAILED", re.IGNORECASE)
# Absolute POSIX paths under a directory that file systems use, or under any directory at this machine's
# root (a checkout in /check, /build, ...), so "1/0", "true/false", URLs and API routes
# ("/v1/chat/completions") are left alone; a "/" after a letter, digit, ":" or "/" is no path start.
_ROOTS = (
    "home|root|work|workspace|tmp|var|opt|usr|etc|mnt|srv|media|data|models|app|src|runpod-volume|proc|sys|dev"
    "|lib|lib64|bin|sbin|snap|nix|private|Users|Volumes|content|kaggle|cache"
)


@functools.lru_cache(maxsize=1)
def _abs_path() -> re.Pattern:
    roots = set(_ROOTS.split("|"))
    try:
        roots.update(name for name in os.listdir("/") if re.fullmatch(r"[\w.@+-]+", name))
    except OSError:  # pragma: no cover - no readable root: the usual directories still count
        pass
    alternatives = "|".join(re.escape(name) for name in sorted(roots, key=len, reverse=True))
    return re.compile(r"(?<![\w.:/~\\-])/(?:" + alternatives + r")(?:/[\w.@+-]*)+")
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_TRACEBACK = "Traceback (most recent call last)"
MAX_MESSAGE = 1000


def _url_without_secrets(url: str) -> str:
    # Signed URLs carry their tokens in the query string; user:password@ is a credential too.
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:  # e.g. a malformed IPv6 host: keep the scheme, drop what could be a secret
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{rest.split('?', 1)[0].split('#', 1)[0].rsplit('@', 1)[-1]}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def redact(text: str, *, client: bool = True, limit: int = MAX_MESSAGE) -> str:
    """The one policy for what a message may show, applied where a message leaves for a client or a log.

    Always: a formatted traceback is cut off (what came before it stays); URLs lose their
    ``user:password@`` part, query string and fragment (signed URLs carry tokens there);
    runs of whitespace become one space; the text is cut at ``limit`` characters ("…").
    For a client (``client=True``, the default) also: absolute server paths (``file://`` URLs too) become
    ``<path>`` and this machine's host name ``<host>``; a log or the deployment's owner
    (``client=False``) keeps them, as they say what to fix. Anything else is kept as written.
    """
    text = str(text)
    cut = text.find(_TRACEBACK)
    if cut >= 0:
        text = text[:cut].rstrip() or "(details in the worker log)"
    text = _URL.sub(lambda m: _url_without_secrets(m.group(0)), text)
    if client:
        text = _abs_path().sub("<path>", re.sub(r"\bfile://(?=/)", "", text))
        host = _host_name()
        if len(host) >= 3:
            text = text.replace(host, "<host>")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def redact_lines(text: str, *, client: bool = True, limit: int = 2000, max_lines: int = 40) -> str:
    """``redact`` line by line, for a message that lists problems one per line (a dataset's ``file:line: …``):
    each line is redacted and cut at ``limit``; after ``max_lines`` lines, how many more there were."""
    lines = [redact(line, client=client, limit=limit) for line in str(text).splitlines() if line.strip()]
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], f"… {len(lines) - max_lines} more line(s)"]
    return "\n".join(lines)


def _host_name() -> str:
    import socket

    try:
        return socket.gethostname()
    except OSError:  # pragma: no cover
        return ""


def _chain(exc: BaseException, limit: int = 10):
    seen = 0
    while exc is not None and seen < limit:
        yield exc
        exc = exc.__cause__ or exc.__context__
        seen += 1


def is_out_of_memory(exc: BaseException) -> bool:
    return any(type(e).__name__ == "OutOfMemoryError" or _OOM.search(str(e)) for e in _chain(exc))


def is_fatal_device_error(exc: BaseException) -> bool:
    """True when the GPU context is broken for good: the process must be replaced (ask the platform for a new one)."""
    if is_out_of_memory(exc):
        return False
    for e in _chain(exc):
        if type(e).__name__ in ("AcceleratorError", "CudaError") or _FATAL_DEVICE.search(str(e)):
            return True
    return False


def error_code(exc: BaseException) -> str:
    # GPU faults first: rag.generate wraps them in a ModelError, but what the client can do differs.
    if is_out_of_memory(exc):
        return "out_of_memory"
    if is_fatal_device_error(exc):
        return "device_error"
    if isinstance(exc, RagError):
        return exc.code
    return "internal_error"


def client_message(exc: BaseException) -> str:
    """What happened and what to do, as a client may read it (``redact``ed); an unexpected error shows only its type."""
    code = error_code(exc)
    if code == "out_of_memory":
        text = "the GPU ran out of memory for this request: lower max_new_tokens or top_k, or send it again later."
    elif code == "device_error":
        text = "the GPU failed while answering; this worker is being replaced. Send the request again."
    elif isinstance(exc, RagError):
        text = str(exc)
    else:
        # Unexpected errors may carry internals in their text; only the type is shown, the log has the rest.
        text = f"the worker failed to answer ({type(exc).__name__}); the worker log has the details."
    return redact(text)


def trace_line(exc: BaseException, *, frames: int = 6) -> str:
    """``"<code>: <Type>: <message> (at pkg.module:line in func ← …)"``: enough for the owner to find the fault,
    nothing a client may not see (``redact``ed, frames named by module, not by file path; innermost first)."""
    import traceback

    where = []
    for frame, lineno in reversed(list(traceback.walk_tb(exc.__traceback__))):
        # The module's own name (right however the package was installed: an editable install's
        # finder puts no checkout on sys.path); a script run as __main__ is named by its file.
        module = frame.f_globals.get("__name__")
        if not isinstance(module, str) or not module or module == "__main__":
            module = _module_of(frame.f_code.co_filename)
        where.append(f"{module}:{lineno} in {frame.f_code.co_name}")
        if len(where) == frames:
            break
    at = f" (at {' ← '.join(where)})" if where else ""
    return redact(f"{error_code(exc)}: {type(exc).__name__}: {exc}{at}")


def _module_of(filename: str) -> str:
    # The dotted module for a file under sys.path (rag/streaming.py → rag.streaming); else only its name.
    import sys
    from pathlib import PurePath

    path = PurePath(filename)
    best = None
    for entry in sys.path:
        try:
            rel = path.relative_to(entry or ".")
        except ValueError:
            continue
        if best is None or len(rel.parts) < len(best.parts):
            best = rel
    rel = best if best is not None and not best.is_absolute() else PurePath(path.name)
    return ".".join(rel.with_suffix("").parts)


def public_message(exc: BaseException) -> str:
    """The one string a client of a wrapper sees for ``exc``: ``"<code>: <client_message>"``."""
    return f"{error_code(exc)}: {client_message(exc)}"
