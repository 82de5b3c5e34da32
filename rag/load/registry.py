"""The formats this package reads (extension → loader) and ``load_file``, which picks one by extension.

A loader is ``read(data, name, settings, ocr) -> (title or None, pages)``: the
file's bytes, its name for messages, the settings (limits) and the OCR hook
(used by PDF only). To add a format, write its module and add it to ``LOADERS``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, NamedTuple

from ..config import Settings
from ..errors import InputError, LoadError
from ..types import Document, Page
from . import docx, html, json, pdf, text
from .common import clip_title, meaningful_title, title_from_text
from .pdf import OcrHook


class Format(NamedTuple):
    kind: str  # Document.kind
    read: Callable[[bytes, str, Settings, OcrHook | None], tuple[str | None, list[Page]]]
    # what can be refused before reading: (the file's bytes, or its path; name; settings) -> raise LoadError
    check: Callable[[bytes | str | Path, str, Settings], None] | None = None


# Extension (lower case) → format, in the order messages list them.
LOADERS: dict[str, Format] = {
    ".pdf": Format("pdf", pdf.read),
    ".docx": Format("docx", docx.read, docx.check),
    ".html": Format("html", html.read),
    ".htm": Format("html", html.read),
    ".txt": Format("txt", text.read_plain),
    ".md": Format("md", text.read_markdown),
    ".json": Format("json", json.read),
}
SUPPORTED = frozenset(LOADERS)
SUPPORTED_LIST = ", ".join(LOADERS)


def unsupported_reason(path: Path) -> str:
    ext = path.suffix.lower()
    what = f"type {ext}" if ext else "type (no extension)"
    return f"unsupported {what}: supported are {SUPPORTED_LIST}"



def check_file(path: str | Path, settings: Settings, name: str) -> None:
    """Refuse, before a file is copied or read, what ``load_file`` would refuse from its size and layout alone:
    an unsupported type, over the size cap of its format, a DOCX whose content expands past its limits.
    The one policy for every way in (ingest reads through ``load_file``; the web chat's upload calls this)."""
    import stat

    from .safe import check_size, not_regular

    p = Path(path)
    ext = p.suffix.lower()
    if ext not in SUPPORTED:
        raise LoadError(f"{name}: {unsupported_reason(p)}")
    try:
        st = p.stat()
    except OSError as e:
        raise LoadError(f"cannot read {name}: {e.strerror or e}", code="unreadable") from e
    if not stat.S_ISREG(st.st_mode):
        raise not_regular(name)
    check_size(st.st_size, ext, settings, name)
    if LOADERS[ext].check is not None:
        LOADERS[ext].check(p, name, settings)


def load_file(
    path: str | Path, settings: Settings, *, source: str | None = None, ocr: OcrHook | None = None,
    data: bytes | None = None,
) -> Document:
    """Load one file into a ``Document``; ``source`` (default: the path as given) names it in errors.

    ``ocr`` (PDF only; ``rag.reader.read_document`` passes ``rag.ocr.ocr_pdf_pages``) gets
    every page of a PDF and returns them with the scanned ones OCR'd; without it, pages
    without a text layer are left out. ``data``: the file's bytes, when already read
    (``rag.load.safe.read_regular``); otherwise they are read here the same way: regular
    files only, at most the size cap.

    Raises ``LoadError`` (too large, empty, not a regular file, unreadable, undecodable; OCR
    unavailable or failing, from the hook), ``NeedsOCRError`` (a PDF with no text layer on any
    page and no OCR; its ``pages`` lists them) or ``InputError`` (no such file).
    """
    from .safe import check_size, read_regular

    p = Path(path)
    name = source if source is not None else str(path)
    ext = p.suffix.lower()
    if ext not in SUPPORTED:
        raise LoadError(f"{name}: {unsupported_reason(p)}")
    if p.is_dir():
        raise InputError(f"{name} is a folder, not a file: use iter_files to expand it")
    if data is None:
        if not p.exists():
            raise InputError(f"no such file or folder: {path}")
        data = read_regular(p, settings, name)
    check_size(len(data), ext, settings, name)
    if not data:
        raise LoadError(f"{name} is empty")

    fmt = LOADERS[ext]
    title, pages = fmt.read(data, name, settings, ocr)

    pages = [pg for pg in pages if pg.text.strip()]
    if not pages:
        raise LoadError(f"{name} is empty: no text could be extracted from it")
    title = clip_title(title) if title and meaningful_title(title) else None
    title = title or title_from_text(pages[0].text + "\n" + (pages[1].text if len(pages) > 1 else "")) or p.stem
    return Document(source=name, title=title, pages=pages, sha256=hashlib.sha256(data).hexdigest(), kind=fmt.kind)
