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
from .common import MB, clip_title, meaningful_title, title_from_text
from .pdf import OcrHook


class Format(NamedTuple):
    kind: str  # Document.kind
    read: Callable[[bytes, str, Settings, OcrHook | None], tuple[str | None, list[Page]]]


# Extension (lower case) → format, in the order messages list them.
LOADERS: dict[str, Format] = {
    ".pdf": Format("pdf", pdf.read),
    ".docx": Format("docx", docx.read),
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
    from .safe import read_regular, size_limit_mb, too_large

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
    limit_mb = size_limit_mb(settings, ext)
    if len(data) > limit_mb * MB:
        setting = "RAG_MAX_HTML_MB" if limit_mb < settings.max_file_mb else "RAG_MAX_FILE_MB"
        raise too_large(name, f"{len(data) / MB:.3g} MB", limit_mb, setting)
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
