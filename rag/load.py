"""Load: turn a source file into a ``Document`` (raw text per page, 1-based page numbers).

Formats: PDF (text layer, pypdfium2 with pypdf as fallback), DOCX (paragraphs and
tables in document order, list numbering rendered), HTML, TXT, MD and JSON.
Tables from DOCX and HTML become one block of pipe rows (``| a | b |``) with a
blank line before and after, so the chunker can keep them whole.

JSON files hold one document, in one of two shapes (other keys are ignored)::

    {"title": "Quy chế đào tạo", "pages": ["text of page 1", "text of page 2"]}
    {"title": "Quy chế đào tạo", "text": "the whole text"}

``title`` is optional; a list of documents is not accepted.

Out of scope: Vietnamese normalisation (NFC, tone placement, headers/footers;
see ``rag.normalise``) — text is only decoded to ``str`` and line endings made
``\\n``; OCR itself (``rag.ocr``) — without an ``ocr`` hook, PDF pages without a
text layer are left out of the returned document (``load_pdf_pages`` and
``pdf_pages_without_text`` list them); DOCX headers, footers, footnotes and comments.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import logging
import os
import re
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .config import Settings
from .errors import InputError, LoadError, NeedsOCRError
from .types import Document, Page

log = logging.getLogger(__name__)

SUPPORTED = frozenset({".pdf", ".docx", ".html", ".htm", ".txt", ".md", ".json"})
_SUPPORTED_LIST = ", ".join((".pdf", ".docx", ".html", ".htm", ".txt", ".md", ".json"))
_KIND = {".htm": "html"}

MIN_PAGE_CHARS = 20  # a PDF page with fewer non-space characters has no usable text layer
TITLE_MAX_CHARS = 150
_MB = 1024 * 1024


# ---------------------------------------------------------------------------
# Listing files


@dataclass
class FileList:
    """Files to load, as (resolved path, source label), and what was left out, as (path, reason).

    Iterating a ``FileList`` iterates ``files``.
    """

    files: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __iter__(self) -> Iterator[tuple[Path, str]]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


def _unsupported_reason(path: Path) -> str:
    ext = path.suffix.lower()
    what = f"type {ext}" if ext else "type (no extension)"
    return f"unsupported {what}: supported are {_SUPPORTED_LIST}"


def iter_files(paths: list[str | Path]) -> FileList:
    """Expand files and folders (recursively, sorted, hidden ones skipped) into a ``FileList``.

    A folder's files are labelled by their path relative to that folder; a file
    given by name is labelled by its name. Symlinks inside a folder are followed
    only when their target stays inside it. A missing path, or a folder with no
    supported file, raises ``InputError``.
    """
    out = FileList()
    seen: set[Path] = set()
    labels: set[str] = set()

    def add(resolved: Path, label: str, given: str) -> None:
        if resolved in seen:
            return
        seen.add(resolved)
        if label in labels:  # two files with one name: fall back to the path as given
            label = given
        labels.add(label)
        out.files.append((resolved, label))

    for raw in paths:
        given = Path(raw).expanduser()
        if not given.exists():
            raise InputError(f"no such file or folder: {raw}")
        if given.is_dir():
            found = _walk(given, out.skipped)
            if not found:
                raise InputError(f"{raw} contains no supported files ({_SUPPORTED_LIST})")
            for resolved, rel in found:
                add(resolved, rel, str(given / rel))
        elif given.suffix.lower() in SUPPORTED:
            add(given.resolve(), given.name, str(given))
        else:
            out.skipped.append((given, _unsupported_reason(given)))
    return out


def _walk(root: Path, skipped: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """Supported files under ``root`` as (resolved path, label relative to root), sorted."""
    root_resolved = root.resolve()
    found: list[tuple[Path, str]] = []
    visited: set[Path] = {root_resolved}

    def inside(p: Path) -> bool:
        return p == root_resolved or root_resolved in p.parents

    def visit(folder: Path, rel: Path) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            skipped.append((folder, f"cannot read folder: {e.strerror or e}"))
            return
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                target = path.resolve()
                if not target.exists():
                    skipped.append((path, "broken symlink"))
                    continue
                if not inside(target):
                    skipped.append((path, f"symlink to {target}, outside {root}: not followed"))
                    continue
            if entry.is_dir():
                target = path.resolve()
                if target in visited:  # a symlink loop or a second way to the same folder
                    continue
                visited.add(target)
                visit(path, rel / name)
            elif not entry.is_file():
                skipped.append((path, "not a regular file"))
            elif name.startswith("~$"):
                skipped.append((path, "temporary Office lock file"))
            elif path.suffix.lower() in SUPPORTED:
                found.append((path.resolve(), (rel / name).as_posix()))
            else:
                skipped.append((path, _unsupported_reason(path)))

    visit(root, Path())
    return found


# ---------------------------------------------------------------------------
# Entry point


# (PDF bytes, every page in order, source name) -> the pages, those it OCR'd with ocr=True
OcrHook = Callable[[bytes, list[Page], str], list[Page]]


def load_file(
    path: str | Path, settings: Settings, *, source: str | None = None, ocr: OcrHook | None = None
) -> Document:
    """Load one file into a ``Document``; ``source`` (default: the path as given) names it in errors.

    ``ocr`` (PDF only; ``rag.ingest.read_document`` passes ``rag.ocr.ocr_pdf_pages``) gets
    every page of a PDF and returns them with the scanned ones OCR'd; without it, pages
    without a text layer are left out.

    Raises ``LoadError`` (too large, empty, unreadable, undecodable; OCR unavailable or
    failing, from the hook), ``NeedsOCRError`` (a PDF with no text layer on any page and
    no OCR; its ``pages`` lists them) or ``InputError`` (no such file).
    """
    p = Path(path)
    name = source if source is not None else str(path)
    ext = p.suffix.lower()
    if ext not in SUPPORTED:
        raise LoadError(f"{name}: {_unsupported_reason(p)}")
    if p.is_dir():
        raise InputError(f"{name} is a folder, not a file: use iter_files to expand it")
    try:
        size = p.stat().st_size
    except FileNotFoundError as e:
        raise InputError(f"no such file or folder: {path}") from e
    limit = settings.max_file_mb * _MB
    if size > limit:
        raise LoadError(
            f"{name} is {size / _MB:.3g} MB, over the {settings.max_file_mb:g} MB limit: "
            "split the file or raise RAG_MAX_FILE_MB."
        )
    if size == 0:
        raise LoadError(f"{name} is empty")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise LoadError(f"cannot read {name}: {e.strerror or e}") from e

    kind = _KIND.get(ext, ext[1:])
    if kind == "pdf":
        title, pages = _load_pdf(data, name, ocr)
    elif kind == "docx":
        title, pages = _load_docx(data, name, settings)
    elif kind == "html":
        title, pages = _load_html(data, name)
    elif kind == "json":
        title, pages = _load_json(data, name)
    else:
        text = decode_text(data, name)
        title = _md_title(text) if kind == "md" else None
        pages = _split_pages(text)

    pages = [pg for pg in pages if pg.text.strip()]
    if not pages:
        raise LoadError(f"{name} is empty: no text could be extracted from it")
    title = _clip(title) if title and _meaningful_title(title) else None
    title = title or _title_from_text(pages[0].text + "\n" + (pages[1].text if len(pages) > 1 else "")) or p.stem
    return Document(source=name, title=title, pages=pages, sha256=hashlib.sha256(data).hexdigest(), kind=kind)


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _split_pages(text: str) -> list[Page]:
    """Form feeds separate pages; numbering follows the position even when a page is blank."""
    return [Page(number=i, text=t) for i, t in enumerate(_newlines(text).split("\f"), start=1)]


# ---------------------------------------------------------------------------
# PDF


def has_text_layer(text: str) -> bool:
    """Whether a PDF page's extracted text is enough to use (``MIN_PAGE_CHARS`` non-space chars)."""
    return sum(1 for c in text if not c.isspace()) >= MIN_PAGE_CHARS


def load_pdf_pages(path: str | Path, *, data: bytes | None = None, name: str | None = None) -> list[Page]:
    """Every page of a PDF, in order, pages without a text layer included (with what little text they have).

    Uses pypdfium2; falls back to pypdf when pdfium cannot open the file. Not
    thread-safe (pdfium is not): use processes to load PDFs in parallel.
    """
    name = name or Path(path).name
    if data is None:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise LoadError(f"cannot read {name}: {e.strerror or e}") from e
    return _pdf_pages(data, name)[1]


def pdf_pages_without_text(path: str | Path) -> list[int]:
    """1-based numbers of the pages of a PDF that have no usable text layer (OCR candidates)."""
    return [pg.number for pg in load_pdf_pages(path) if not has_text_layer(pg.text)]


def _encrypted(name: str) -> LoadError:
    return LoadError(
        f"{name} is password-protected: supply a decrypted copy "
        "(e.g. `qpdf --decrypt --password=PASSWORD in.pdf out.pdf`)."
    )


def _corrupt(name: str, detail: str) -> LoadError:
    return LoadError(
        f"{name} is not a readable PDF (corrupt or truncated): {detail}. "
        "Open it in a PDF viewer and save or export a new copy."
    )


def _pdf_text(text: str) -> str:
    # pdfium writes U+0002 where a line ended in a hyphen and joins the lines; the glyph was a hyphen
    return _newlines(text).replace("\x02", "-")


def _pdf_pages(data: bytes, name: str) -> tuple[str | None, list[Page]]:
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    try:
        doc = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        if getattr(e, "err_code", None) in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
            raise _encrypted(name) from e
        return _pdf_pages_pypdf(data, name, e)
    try:
        title = doc.get_metadata_dict().get("Title")
        pages = []
        for i in range(len(doc)):
            page = doc[i]
            textpage = page.get_textpage()
            pages.append(Page(number=i + 1, text=_pdf_text(textpage.get_text_bounded())))
            textpage.close()
            page.close()
        return title, pages
    except pdfium.PdfiumError as e:
        return _pdf_pages_pypdf(data, name, e)
    finally:
        doc.close()


def _pdf_pages_pypdf(data: bytes, name: str, first: Exception) -> tuple[str | None, list[Page]]:
    """pypdf as a second opinion when pdfium fails: it recovers some damaged cross-reference tables."""
    import pypdf
    from pypdf.errors import FileNotDecryptedError, PyPdfError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise _encrypted(name) from first
        title = reader.metadata.title if reader.metadata else None
        pages = [Page(number=i + 1, text=_newlines(pg.extract_text() or "")) for i, pg in enumerate(reader.pages)]
    except LoadError:
        raise
    except FileNotDecryptedError as e:
        raise _encrypted(name) from e
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as e:
        raise _corrupt(name, str(first)) from e
    if not pages:
        raise _corrupt(name, "it has no pages")
    return title, pages


def _usable(pg: Page) -> bool:
    return bool(pg.text.strip()) if pg.ocr else has_text_layer(pg.text)


def _load_pdf(data: bytes, name: str, ocr: OcrHook | None = None) -> tuple[str | None, list[Page]]:
    title, pages = _pdf_pages(data, name)
    if ocr is not None:
        pages = ocr(data, pages, name)
    blank = [pg.number for pg in pages if pg.ocr and not pg.text.strip()]
    empty = [pg.number for pg in pages if not pg.ocr and not has_text_layer(pg.text)]
    if pages and not any(_usable(pg) for pg in pages) and blank:
        raise LoadError(
            f"{name}: no text found: OCR read nothing on pages {blank} (blank, faint or not text). "
            "If the scan is small or faint, raise RAG_OCR_DPI and ingest again."
        )
    if pages and len(empty) == len(pages):
        n = len(pages)
        err = NeedsOCRError(
            f"{name}: no text layer (needs OCR) — {n} scanned page{'s' if n != 1 else ''}. "
            "Ingest it with OCR on (`rag ingest --ocr auto`, the default; RAG_OCR=auto), run OCR on it first "
            "(e.g. `ocrmypdf -l vie in.pdf out.pdf`) or supply a copy with a text layer."
        )
        err.pages = empty  # type: ignore[attr-defined]
        raise err
    if blank:
        log.warning("%s: OCR found no text on pages %s; they are left out", name, blank)
    if empty:
        log.warning("%s: pages %s have no text layer and are left out (they need OCR)", name, empty)
    return title, [pg for pg in pages if _usable(pg)]


# ---------------------------------------------------------------------------
# DOCX

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"


def _check_zip(data: bytes, name: str, settings: Settings) -> None:
    """Refuse what is not a zip, and zips that would expand past RAG_MAX_UNZIPPED_MB (zip bombs)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as e:
        raise LoadError(
            f"{name} is not a DOCX file (not a zip archive): if it is an old .doc, "
            "open it in Word or LibreOffice and save it as .docx."
        ) from e
    total = sum(i.file_size for i in infos)
    if total > settings.max_unzipped_mb * _MB:
        raise LoadError(
            f"{name} expands to {total / _MB:.3g} MB, over the {settings.max_unzipped_mb:g} MB limit "
            "for unzipped DOCX content: remove large embedded media or raise RAG_MAX_UNZIPPED_MB."
        )
    if not any(i.filename == "word/document.xml" for i in infos):
        raise LoadError(f"{name} is a zip archive but not a Word document (no word/document.xml): save it as .docx.")


def _load_docx(data: bytes, name: str, settings: Settings) -> tuple[str | None, list[Page]]:
    import docx
    from docx.opc.exceptions import OpcError
    from lxml.etree import LxmlError

    _check_zip(data, name, settings)
    try:
        d = docx.Document(io.BytesIO(data))
        numbering = _Numbering(d)
        blocks: list[str] = []
        title = None
        for el in _body_blocks(d.element.body):
            if el.tag == _W + "tbl":
                rows = _docx_table(el)
                if rows:
                    blocks.append("\n" + rows + "\n")
                continue
            text = _para_text(el)
            label = numbering.label(el)
            if label and text.strip():
                text = f"{label} {text}"
            if title is None and text.strip() and _style_id(el).lower() == "title":
                title = text.strip()
            blocks.append(text)
        core = d.core_properties.title
    except (OpcError, LxmlError, KeyError, ValueError, AttributeError, zipfile.BadZipFile) as e:
        raise LoadError(
            f"{name} is not a readable DOCX (corrupt or not a Word document): {e}. "
            "Open it in Word or LibreOffice and save a new copy."
        ) from e
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(blocks))
    return (core if core and _meaningful_title(core) else title), [Page(number=1, text=text.strip("\n"))]


def _body_blocks(body) -> Iterator:
    """Paragraphs and tables of the body in document order, looking inside content controls."""
    for child in body.iterchildren():
        if child.tag in (_W + "p", _W + "tbl"):
            yield child
        elif child.tag in (_W + "sdt", _W + "customXml"):
            content = child.find(_W + "sdtContent") if child.tag == _W + "sdt" else child
            if content is not None:
                yield from _body_blocks(content)


_TEXT_TAGS = {_W + "t": None, _W + "tab": "\t", _W + "br": "\n", _W + "cr": "\n", _W + "p": "\n",
              _W + "noBreakHyphen": "-", _W + "softHyphen": "\u00ad"}
_NOT_TEXT = {_W + "pPr", _W + "rPr", _W + "del", _W + "moveFrom", _MC_FALLBACK}  # tab stops, deletions, duplicates


def _para_text(p) -> str:
    """Visible text of a paragraph: runs, hyperlinks, fields' results, inserted (tracked) text, text boxes."""
    parts: list[str] = []
    for el in p.iter(*_TEXT_TAGS):
        if el is p:
            continue
        if any(a.tag in _NOT_TEXT for a in _ancestors_within(el, p)):
            continue
        parts.append((el.text or "") if el.tag == _W + "t" else _TEXT_TAGS[el.tag])
    return "".join(parts)


def _ancestors_within(el, top) -> Iterator:
    for a in el.iterancestors():
        if a is top:
            return
        yield a


def _docx_table(tbl) -> str:
    rows = []
    for tr in tbl.iterchildren(_W + "tr"):
        cells: list[str] = []
        for tc in tr.iterchildren(_W + "tc"):
            text = " ".join(_para_text(p).strip() for p in tc.iter(_W + "p"))
            cells.append(_cell(text))
            span = tc.find(f"{_W}tcPr/{_W}gridSpan")
            extra = int(span.get(_W + "val", "1")) - 1 if span is not None else 0
            cells.extend([""] * max(extra, 0))
        if any(cells):
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().replace("|", "\\|")


def _style_id(p) -> str:
    el = p.find(f"{_W}pPr/{_W}pStyle")
    return el.get(_W + "val", "") if el is not None else ""


class _Numbering:
    """Renders Word's automatic list numbers ("1.", "a)", "Điều 3.") that are not in the text itself."""

    _MAX_LEVELS = 9

    def __init__(self, d) -> None:
        # numId -> ilvl -> (numFmt, lvlText, start, lvlRestart); lvlRestart None: after any higher level, 0: never
        self.levels: dict[str, dict[int, tuple[str, str, int, int | None]]] = {}
        self.counters: dict[str, list[int | None]] = {}
        self.styles = d.styles.element
        self._style_cache: dict[str, tuple[str | None, int | None]] = {}
        try:
            root = d.part.numbering_part.element
        except (NotImplementedError, KeyError):
            return
        abstract = {}
        for an in root.iterchildren(_W + "abstractNum"):
            abstract[an.get(_W + "abstractNumId")] = self._lvls(an)
        for num in root.iterchildren(_W + "num"):
            ref = num.find(_W + "abstractNumId")
            lvls = dict(abstract.get(ref.get(_W + "val") if ref is not None else None, {}))
            for ov in num.iterchildren(_W + "lvlOverride"):
                ilvl = int(ov.get(_W + "ilvl", "0"))
                lvl = ov.find(_W + "lvl")
                if lvl is not None:
                    lvls.update(self._lvls(ov))
                start = ov.find(_W + "startOverride")
                if start is not None and ilvl in lvls:
                    fmt, text, _, restart = lvls[ilvl]
                    lvls[ilvl] = (fmt, text, int(start.get(_W + "val", "1")), restart)
            self.levels[num.get(_W + "numId")] = lvls

    @staticmethod
    def _lvls(parent) -> dict[int, tuple[str, str, int, int | None]]:
        out = {}
        for lvl in parent.iterchildren(_W + "lvl"):
            def val(tag: str, default: str | None) -> str | None:
                el = lvl.find(_W + tag)
                return el.get(_W + "val", default) if el is not None else default

            restart = val("lvlRestart", None)
            out[int(lvl.get(_W + "ilvl", "0"))] = (
                val("numFmt", "decimal"), val("lvlText", ""), int(val("start", "1")), None if restart is None else int(restart)
            )
        return out

    def _style_numpr(self, style_id: str) -> tuple[str | None, int | None]:
        if style_id in self._style_cache:
            return self._style_cache[style_id]
        num_id: str | None = None
        ilvl: int | None = None
        seen = set()
        sid: str | None = style_id
        while sid and sid not in seen and num_id is None:
            seen.add(sid)
            style = self.styles.get_by_id(sid)
            if style is None:
                break
            numpr = style.find(f"{_W}pPr/{_W}numPr")
            if numpr is not None:
                n, i = numpr.find(_W + "numId"), numpr.find(_W + "ilvl")
                num_id = n.get(_W + "val") if n is not None else None
                ilvl = int(i.get(_W + "val", "0")) if i is not None else ilvl
            based = style.find(_W + "basedOn")
            sid = based.get(_W + "val") if based is not None else None
        self._style_cache[style_id] = (num_id, ilvl)
        return num_id, ilvl

    def label(self, p) -> str:
        num_id, ilvl = self._style_numpr(_style_id(p)) if _style_id(p) else (None, None)
        numpr = p.find(f"{_W}pPr/{_W}numPr")
        if numpr is not None:
            n, i = numpr.find(_W + "numId"), numpr.find(_W + "ilvl")
            num_id = n.get(_W + "val") if n is not None else num_id
            ilvl = int(i.get(_W + "val", "0")) if i is not None else ilvl
        ilvl = min(max(ilvl or 0, 0), self._MAX_LEVELS - 1)
        lvls = self.levels.get(num_id or "0")
        if not lvls or ilvl not in lvls:
            return ""
        counters = self.counters.setdefault(num_id, [None] * self._MAX_LEVELS)
        fmt, text, start, _ = lvls[ilvl]
        counters[ilvl] = start if counters[ilvl] is None else counters[ilvl] + 1
        for deeper, (_, _, _, restart) in lvls.items():
            if deeper > ilvl and (restart is None or ilvl < restart):
                counters[deeper] = None
        if fmt == "bullet":
            return "-"
        if fmt == "none":
            return re.sub(r"%\d", "", text).strip()

        def number(m: re.Match) -> str:
            k = int(m.group(1)) - 1
            f, _, s, _ = lvls.get(k, ("decimal", "", 1, None))
            return _format_number(s if counters[k] is None else counters[k], f)

        return re.sub(r"%([1-9])", number, text).strip()


def _format_number(n: int, fmt: str) -> str:
    if fmt in ("lowerLetter", "upperLetter"):
        s = ""
        while n > 0:
            n, r = divmod(n - 1, 26)
            s = chr(ord("a") + r) + s
        return s.upper() if fmt == "upperLetter" else s
    if fmt in ("lowerRoman", "upperRoman"):
        s = ""
        for v, r in ((1000, "m"), (900, "cm"), (500, "d"), (400, "cd"), (100, "c"), (90, "xc"),
                     (50, "l"), (40, "xl"), (10, "x"), (9, "ix"), (5, "v"), (4, "iv"), (1, "i")):
            while n >= v:
                s, n = s + r, n - v
        return s.upper() if fmt == "upperRoman" else s
    if fmt == "decimalZero":
        return f"{n:02d}"
    return str(n)


# ---------------------------------------------------------------------------
# HTML

_HTML_DROP = {"script", "style", "noscript", "template", "head", "iframe", "object", "svg", "canvas", "button"}
_HTML_BLOCKS = {
    "address", "article", "aside", "blockquote", "dd", "details", "dialog", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
    "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "ul", "caption", "tr",
}
_TABLE_GAP = "\ue000"  # private-use marker for a blank line that must survive whitespace folding
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)


def _hidden(tag) -> bool:
    attrs = tag.attrs or {}
    if "hidden" in attrs:
        return True
    if str(attrs.get("aria-hidden", "")).strip().lower() == "true":
        return True
    return bool(_HIDDEN_STYLE.search(str(attrs.get("style", ""))))


def _load_html(data: bytes, name: str) -> tuple[str | None, list[Page]]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "lxml")  # bytes: bs4 honours <meta charset> and BOMs
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    if not title:
        h1 = soup.find("h1")
        title = h1.get_text(" ", strip=True) if h1 else None
    out: list[str] = []
    try:
        _html_render(soup, out, pre=False)
    except RecursionError as e:
        raise LoadError(f"{name} is nested too deeply to read as HTML: simplify it or save it as .txt.") from e
    # one newline between blocks; the blank lines around a table are kept (marked with _TABLE_GAP)
    lines = [ln.strip() for ln in "".join(out).split("\n")]
    text = "\n".join(ln for ln in lines if ln).replace(_TABLE_GAP, "")
    return title, [Page(number=1, text=re.sub(r"\n{3,}", "\n\n", text).strip("\n"))]


def _html_render(node, out: list[str], pre: bool) -> None:
    from bs4 import NavigableString, Tag
    from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction

    for child in node.children:
        if isinstance(child, (Comment, Doctype, Declaration, ProcessingInstruction)):
            continue
        if isinstance(child, NavigableString):
            s = str(child)
            out.append(s if pre else re.sub(r"\s+", " ", s))
            continue
        if not isinstance(child, Tag) or child.name in _HTML_DROP or _hidden(child):
            continue
        if child.name == "br":
            out.append("\n")
        elif child.name == "table":
            rows = _html_table(child)
            if rows:
                out.append(f"\n{_TABLE_GAP}\n{rows}\n{_TABLE_GAP}\n")
        else:
            block = child.name in _HTML_BLOCKS
            if block:
                out.append("\n")
            if child.name == "li":
                parent = child.find_parent(["ol", "ul"])
                if parent is not None and parent.name == "ol":
                    items = parent.find_all("li", recursive=False)
                    start = str(parent.get("start", "1"))
                    index = next((k for k, li in enumerate(items) if li is child), 0)
                    out.append(f"{(int(start) if start.isdigit() else 1) + index}. ")
                else:
                    out.append("- ")
            _html_render(child, out, pre or child.name == "pre")
            if block:
                out.append("\n")


def _html_table(table) -> str:
    rows = []
    for tr in table.find_all("tr"):
        if tr.find_parent("table") is not table or _hidden(tr):
            continue
        cells: list[str] = []
        for td in tr.find_all(["td", "th"], recursive=False):
            if _hidden(td):
                continue
            parts: list[str] = []
            _html_render(td, parts, pre=False)
            cells.append(_cell("".join(parts).replace(_TABLE_GAP, "")))
            span = str(td.get("colspan", "1"))
            cells.extend([""] * (int(span) - 1 if span.isdigit() and 1 < int(span) < 100 else 0))
        if any(cells):
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------
# TXT / MD / JSON

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_TONES = "\u0300\u0301\u0303\u0309\u0323"
_VI_LETTERS = frozenset(
    unicodedata.normalize("NFC", base + tone)
    for base in "aăâeêioôơuưyAĂÂEÊIOÔƠUƯY"
    for tone in ("",) + tuple(_TONES)
) - frozenset("aeiouyAEIOUY") | frozenset("đĐ")
_UTF8_SEQ = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def _utf16_without_bom(data: bytes) -> str | None:
    """'utf-16-le' or 'utf-16-be' when NULs fall on one side of most byte pairs, as in UTF-16 text."""
    if len(data) < 4 or len(data) % 2:
        return None
    half = len(data) // 2
    even, odd = data[0::2].count(0), data[1::2].count(0)
    if odd >= 0.25 * half and even <= 0.02 * half:
        return "utf-16-le"
    if even >= 0.25 * half and odd <= 0.02 * half:
        return "utf-16-be"
    return None


def _looks_vietnamese(text: str) -> bool:
    """Vietnamese letters are common and other non-ASCII letters rare (rules out mojibake and other languages)."""
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r\f" for c in text):
        return False
    nfc = unicodedata.normalize("NFC", text)
    vi = sum(1 for c in nfc if c in _VI_LETTERS)
    letters = sum(1 for c in nfc if c.isalpha())
    foreign = sum(1 for c in nfc if (c.isalpha() or unicodedata.combining(c)) and not c.isascii() and c not in _VI_LETTERS)
    return vi > 0 and vi >= 0.03 * letters and foreign * 10 <= vi


def decode_text(data: bytes, name: str = "text") -> str:
    """Bytes of a text file to ``str``: BOM, UTF-8, UTF-16 without BOM, then Windows-1258 if it reads as Vietnamese.

    Windows-1258 text keeps its combining tone marks (NFD-like); NFC is the normaliser's job.
    """
    text = _decode(data, name)
    if _binary(text):
        raise _undecodable(name, "it has control characters, like a binary file")
    return _newlines(text)


def _decode(data: bytes, name: str) -> str:
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError as e:
                raise _undecodable(name, f"it starts with a {codec.upper()} byte-order mark but {e.reason}") from e
    utf16 = _utf16_without_bom(data)
    if utf16:
        try:
            return data.decode(utf16)
        except UnicodeDecodeError:
            pass  # not UTF-16 after all: try the rest
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        utf8_error = e
    high = sum(1 for b in data if b >= 0x80)
    in_utf8 = sum(len(m.group()) for m in _UTF8_SEQ.finditer(data))
    if high and in_utf8 >= 0.5 * high:  # mostly valid UTF-8: a damaged UTF-8 file, not a legacy code page
        raise _undecodable(name, f"it is mostly UTF-8 but has an invalid byte at offset {utf8_error.start}") from utf8_error
    try:
        text = data.decode("cp1258")
    except UnicodeDecodeError as e:
        raise _undecodable(name, f"byte 0x{data[e.start]:02x} at offset {e.start} is not valid in any of them") from e
    if _looks_vietnamese(text):
        return text
    raise _undecodable(name, "it does not read as Vietnamese in Windows-1258 either") from utf8_error


def _binary(text: str) -> bool:
    """NULs or many other control characters: a binary file, whatever it decoded as."""
    controls = sum(1 for c in text if unicodedata.category(c) == "Cc" and c not in "\t\n\r\f\v")
    return "\x00" in text or controls > 0.01 * len(text)


def _undecodable(name: str, detail: str) -> LoadError:
    return LoadError(
        f"cannot decode {name} as UTF-8, UTF-16 or Windows-1258 ({detail}): save it as UTF-8. "
        "Text typed with TCVN3 (.VnTime) or VNI fonts must first be converted to Unicode (e.g. with Unikey's converter)."
    )


def _md_title(text: str) -> str | None:
    in_fence = False
    for line in text.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not in_fence and re.match(r"# +\S", line):
            return line[1:].strip().rstrip("#").strip() or None
    return None


_JSON_SHAPE = (
    'one object: {"title": "...", "pages": ["page 1 text", ...]} or {"title": "...", "text": "..."} '
    "(title optional)"
)


def _load_json(data: bytes, name: str) -> tuple[str | None, list[Page]]:
    try:
        obj = json.loads(data)  # bytes: UTF-8/16/32 detected by json itself
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LoadError(f"{name} is not valid JSON ({e}): fix it; the accepted shape is {_JSON_SHAPE}.") from e

    def bad(why: str) -> LoadError:
        return LoadError(f"{name}: {why}. The accepted shape is {_JSON_SHAPE}.")

    if not isinstance(obj, dict):
        raise bad(f"the top level is a {type(obj).__name__}, not an object (one document per file)")
    title = obj.get("title")
    if title is not None and not isinstance(title, str):
        raise bad('"title" must be a string')
    if ("pages" in obj) == ("text" in obj):
        raise bad('it must have exactly one of "pages" and "text"')
    if "text" in obj:
        if not isinstance(obj["text"], str):
            raise bad('"text" must be a string')
        return title, [Page(number=1, text=_newlines(obj["text"]))]
    pages = obj["pages"]
    if not isinstance(pages, list):
        raise bad('"pages" must be a list of strings')
    for i, t in enumerate(pages):
        if not isinstance(t, str):
            raise bad(f'"pages"[{i}] is a {type(t).__name__}, not a string')
    return title, [Page(number=i, text=_newlines(t)) for i, t in enumerate(pages, start=1)]


# ---------------------------------------------------------------------------
# Titles

# Lines of a Vietnamese administrative header that are not the document's title.
_ISSUER = re.compile(r"(BỘ|ĐẠI HỌC|TRƯỜNG|HỌC VIỆN|VIỆN|SỞ|UBND|ỦY BAN|UỶ BAN|BAN|PHÒNG|KHOA)\s")
_BOILERPLATE = re.compile(
    r"CỘNG H(?:ÒA|OÀ) XÃ HỘI"
    r"|Độc lập\s*[-–—]\s*Tự do"
    r"|^Số\s*:"
    r"|,\s*ngày\b.*\btháng\b"
    r"|^microsoft (word|excel|powerpoint)\s*-"
    r"|^(untitled|document\d*|title|tài liệu\d*)$"
    r"|\.(docx?|pdf|rtf|odt|txt)$",
    re.I,
)
_STRUCTURE = re.compile(r"^(Chương|Điều|Mục|Phần)\s+[0-9IVXLC]+\b", re.I)
_DOC_TYPES = {"QUYẾT ĐỊNH", "QUY ĐỊNH", "QUY CHẾ", "HƯỚNG DẪN", "THÔNG BÁO", "KẾ HOẠCH", "NGHỊ QUYẾT",
              "THÔNG TƯ", "NGHỊ ĐỊNH", "CÔNG VĂN", "LUẬT"}


def _boilerplate(line: str) -> bool:
    return bool(_BOILERPLATE.search(line) or (_is_caps(line) and _ISSUER.match(line)))


def _meaningful_title(title: str) -> bool:
    t = title.strip()
    return sum(c.isalpha() for c in t) >= 3 and not _boilerplate(t)


def _clip(title: str) -> str:
    title = re.sub(r"\s+", " ", title).strip()
    if len(title) <= TITLE_MAX_CHARS:
        return title
    return title[: TITLE_MAX_CHARS - 1].rsplit(" ", 1)[0] + "…"


def _is_caps(line: str) -> bool:
    letters = [c for c in line if c.isalpha()]
    return bool(letters) and all(c.isupper() for c in letters)


def _title_from_text(text: str) -> str | None:
    """The first substantial line, skipping the national motto, issuing body, number and date lines.

    A bare document type ("QUYẾT ĐỊNH") is joined with its subject line(s)
    ("Về việc ban hành Quy chế …"); consecutive capitalised lines are joined.
    """
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()][:40]
    for i, line in enumerate(lines):
        if sum(c.isalpha() for c in line) < 4 or _boilerplate(line):
            continue
        if _STRUCTURE.match(line):
            return None  # the text starts with an article or chapter: the file name says more
        title, j = line, i + 1
        if _is_caps(line):
            while j < len(lines) and _is_caps(lines[j]) and not _boilerplate(lines[j]) and len(title) < TITLE_MAX_CHARS:
                title, j = f"{title} {lines[j]}", j + 1
        if title.upper() in _DOC_TYPES and j < len(lines) and not _is_caps(lines[j]):
            title, j = f"{title} {lines[j]}", j + 1
            while j < len(lines) and lines[j][:1].islower() and len(title) < TITLE_MAX_CHARS:
                title, j = f"{title} {lines[j]}", j + 1
        return _clip(title)
    return None
