"""PDF: the text layer of each page, with pypdfium2 (pypdf as a fallback for damaged files).

Out of scope: OCR itself (``rag.ocr``): without an ``ocr`` hook, pages without a
text layer are left out of the document (``load_pdf_pages`` and
``pdf_pages_without_text`` list them).
"""

from __future__ import annotations

import io
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..config import Settings
from ..errors import LoadError, NeedsOCRError
from ..types import Page
from .common import newlines

log = logging.getLogger(__name__)

MIN_PAGE_CHARS = 20  # a PDF page with fewer non-space characters has no usable text layer

# (PDF bytes, every page in order, source name) -> the pages, those it OCR'd with ocr=True
OcrHook = Callable[[bytes, list[Page], str], list[Page]]


def non_space_chars(text: str) -> int:
    return sum(1 for c in text if not c.isspace())


def has_text_layer(text: str) -> bool:
    """Whether a PDF page's extracted text is enough to use (``MIN_PAGE_CHARS`` non-space chars); the one
    rule, for loading and for choosing the pages to OCR (``rag.ocr.pages_to_ocr``)."""
    return non_space_chars(text) >= MIN_PAGE_CHARS


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
        f"{name} is not a readable PDF (corrupt or truncated: {detail}). "
        "Open it in a PDF viewer and save or export a new copy."
    )


def _pdf_text(text: str) -> str:
    # pdfium writes U+0002 where a line ended in a hyphen and joins the lines; the glyph was a hyphen
    return newlines(text).replace("\x02", "-")


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

    with _pypdf_warnings() as warnings:
        try:
            reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
            if reader.is_encrypted and not reader.decrypt(""):
                raise _encrypted(name) from first
            title = reader.metadata.title if reader.metadata else None
            pages = [Page(number=i + 1, text=newlines(pg.extract_text() or "")) for i, pg in enumerate(reader.pages)]
        except LoadError:
            raise
        except FileNotDecryptedError as e:
            raise _encrypted(name) from e
        except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as e:
            raise _corrupt(name, "; ".join(dict.fromkeys([str(first).rstrip("."), str(e), *warnings]))) from e
    if not pages:
        raise _corrupt(name, "; ".join(["it has no pages", *warnings]))
    return title, pages


@contextmanager
def _pypdf_warnings() -> Iterator[list[str]]:
    """pypdf's warnings while it reads ("EOF marker not found" …), kept for the file's reason instead of
    printed bare on stderr by logging's last-resort handler."""
    logger = logging.getLogger("pypdf")
    got: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record.getMessage()[:200])

    handler, propagate = Keep(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield got
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        for message in got:
            log.debug("pypdf: %s", message)


def _usable(pg: Page) -> bool:
    return bool(pg.text.strip()) if pg.ocr else has_text_layer(pg.text)


def read(data: bytes, name: str, settings: Settings | None = None,
         ocr: OcrHook | None = None) -> tuple[str | None, list[Page]]:
    """Title and pages of a PDF; with ``ocr``, scanned pages are OCR'd, without it they are left out."""
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
