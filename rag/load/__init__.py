"""Load: turn a source file into a ``Document`` (raw text per page, 1-based page numbers).

One module per format — ``pdf`` (text layer, pypdfium2 with pypdf as fallback),
``docx`` (paragraphs and tables in document order, list numbering rendered),
``html``, ``text`` (TXT, MD) and ``json`` — plus ``common`` (what they share:
size units, line endings, table cells, titles), ``registry`` (extension →
loader, and ``load_file``) and ``listing`` (files and folders → ``FileList``).
Tables from DOCX and HTML become one block of pipe rows (``| a | b |``) with a
blank line before and after, so the chunker can keep them whole.

Out of scope: Vietnamese normalisation (NFC, tone placement, headers/footers;
see ``rag.normalise``) — text is only decoded to ``str`` and line endings made
``\\n``; OCR itself (``rag.ocr``) — without an ``ocr`` hook, PDF pages without a
text layer are left out of the returned document (``load_pdf_pages`` and
``pdf_pages_without_text`` list them); DOCX headers, footers, footnotes and comments.
Importing this package imports no parser: each format imports its library when it reads.
"""

from __future__ import annotations

from .common import TITLE_MAX_CHARS
from .listing import FileList, iter_files
from .pdf import MIN_PAGE_CHARS, OcrHook, has_text_layer, load_pdf_pages, pdf_pages_without_text
from .registry import LOADERS, SUPPORTED, Format, load_file
from .text import decode_text

__all__ = ["SUPPORTED", "LOADERS", "Format", "FileList", "iter_files", "load_file", "OcrHook", "load_pdf_pages",
           "pdf_pages_without_text", "has_text_layer", "decode_text", "MIN_PAGE_CHARS", "TITLE_MAX_CHARS"]
