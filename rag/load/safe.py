"""One file, safely: its bytes (regular files only, size capped while reading), its sha256, and a reason a
person can act on for whatever went wrong reading it (``skip_reason``).

Out of scope: turning the bytes into a Document (``rag.load.registry``), and a file's whole way to
chunks (``rag.reader``); the index (``rag.ingest`` decides what is kept, added or removed).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from ..config import Settings
from ..errors import LoadError, RagError
from .common import MB

_READ_BLOCK = 1 << 20


def printable(path: str | Path) -> str:
    """A path as text that can always be printed and written as UTF-8 on one line: undecodable bytes as ``\\xNN``,
    control characters (a newline, ESC) as ``\\n``, ``\\x1b``, so a file name cannot forge a line of a report or
    send escape sequences to the terminal."""
    text = os.fsencode(str(path)).decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# formats whose parsing costs many times the file's size in memory have their own, tighter cap
_FORMAT_CAPS = {".html": ("max_html_mb", "RAG_MAX_HTML_MB"), ".htm": ("max_html_mb", "RAG_MAX_HTML_MB"),
                ".json": ("max_json_mb", "RAG_MAX_JSON_MB")}


def size_limit(settings: Settings, ext: str) -> tuple[float, str]:
    """The size cap, in MB, for a file of this extension, and the setting that sets it."""
    field, setting = _FORMAT_CAPS.get(ext.lower(), ("max_file_mb", "RAG_MAX_FILE_MB"))
    if getattr(settings, field) < settings.max_file_mb:
        return getattr(settings, field), setting
    return settings.max_file_mb, "RAG_MAX_FILE_MB"


def size_limit_mb(settings: Settings, ext: str) -> float:
    return size_limit(settings, ext)[0]


def too_large(name: str, size: str, limit_mb: float, setting: str) -> LoadError:
    return LoadError(f"{name} is {size}, over the {limit_mb:g} MB limit: split the file or raise {setting}.",
                     code="file_too_large")


def check_size(size: int, ext: str, settings: Settings, name: str) -> None:
    """``file_too_large`` when ``size`` bytes are over the cap for this extension."""
    limit_mb, setting = size_limit(settings, ext)
    if size > limit_mb * MB:
        raise too_large(name, f"{size / MB:.3g} MB", limit_mb, setting)


def not_regular(name: str) -> LoadError:
    return LoadError(f"{name} is not a regular file (a pipe, socket or device): only regular files are read.",
                     code="not_regular_file")


def read_regular(path: str | Path, settings: Settings, name: str) -> bytes:
    """The bytes of a regular file, refusing pipes, sockets and devices, reading at most the cap + 1 byte.

    Opening with ``O_NONBLOCK`` means a FIFO with no writer cannot block the open; the type is
    checked on the opened descriptor (after symlinks are resolved), so a file swapped for a
    FIFO or a link to /dev/zero after listing is refused too.
    """
    limit_mb, setting = size_limit(settings, Path(path).suffix)
    limit = int(limit_mb * MB)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as e:
        raise LoadError(f"{name} is gone: it was deleted or moved after it was listed.", code="file_gone") from e
    except OSError as e:
        raise LoadError(f"cannot read {name}: {e.strerror or e}", code="unreadable") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise not_regular(name)
        check_size(st.st_size, Path(path).suffix, settings, name)
        parts: list[bytes] = []
        total = 0
        while True:  # the cap holds even when the file grows while it is read
            block = os.read(fd, min(_READ_BLOCK, limit + 1 - total))
            if not block:
                break
            parts.append(block)
            total += len(block)
            if total > limit:
                raise too_large(name, "larger than that", limit_mb, setting)
        return b"".join(parts)
    except OSError as e:
        raise LoadError(f"cannot read {name}: {e.strerror or e}", code="unreadable") from e
    finally:
        os.close(fd)


def file_sha256(path: str | Path, settings: Settings, name: str) -> str:
    """The sha256 of a regular file's bytes, with the checks and the cap of ``read_regular``."""
    return hashlib.sha256(read_regular(path, settings, name)).hexdigest()


def skip_reason(exc: BaseException, name: str) -> tuple[str, str]:
    """(reason, code) for a file that could not be loaded; a ``RagError`` keeps its own message."""
    if isinstance(exc, RagError):
        return str(exc), exc.code
    if isinstance(exc, RecursionError):
        return f"{name} is nested too deeply to read: simplify it or save it as .txt.", "too_deep"
    if isinstance(exc, MemoryError):
        return f"{name} needs more memory to read than this machine has: split the file.", "file_too_large"
    if isinstance(exc, FileNotFoundError):
        return f"{name} is gone: it was deleted or moved after it was listed.", "file_gone"
    if isinstance(exc, OSError):
        return f"cannot read {name}: {exc.strerror or exc}", "unreadable"
    if isinstance(exc, UnicodeError):
        return f"{name} could not be decoded as text: save it as UTF-8.", "load_failed"
    detail = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{name} could not be read ({type(exc).__name__}{': ' + detail if detail else ''}).", "load_failed"


def root_of(path: Path, source: str) -> Path:
    """The ingest root a file was found under (its source is relative to it); where corpus.yaml may sit."""
    depth = len(Path(source).parts)
    return path.parents[depth - 1] if 0 < depth <= len(path.parents) else path.parent
