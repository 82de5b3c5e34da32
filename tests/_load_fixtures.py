"""Builders of small source files for tests/test_load.py: PDFs (via pypdfium2, no extra dependency) and cp1258 bytes."""

from __future__ import annotations

import ctypes
import unicodedata
from pathlib import Path

FONT_CANDIDATES = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/TTF/DejaVuSans.ttf"),
)


def unicode_font() -> Path | None:
    """A TrueType font with Vietnamese glyphs, or None."""
    return next((p for p in FONT_CANDIDATES if p.is_file()), None)


def make_pdf(path: Path, pages: list[str | None], font: Path | None = None) -> Path:
    """Write a PDF with one page per item: text lines drawn with an embedded Unicode font, or
    (for ``None``) a page holding only a filled rectangle, like a scan without a text layer."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as c

    pdf = pdfium.PdfDocument.new()
    font_handle = None
    if any(pages):
        data = (font or unicode_font()).read_bytes()
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        font_handle = c.FPDFText_LoadFont(pdf.raw, buf, len(data), c.FPDF_FONT_TRUETYPE, True)
    for text in pages:
        page = pdf.new_page(595, 842)
        if text:
            y = 800.0
            for line in text.split("\n"):
                obj = c.FPDFPageObj_CreateTextObj(pdf.raw, font_handle, 12.0)
                wide = ctypes.create_string_buffer((line + "\0").encode("utf-16-le"))
                c.FPDFText_SetText(obj, ctypes.cast(wide, c.FPDF_WIDESTRING))
                c.FPDFPageObj_Transform(obj, 1, 0, 0, 1, 50, y)
                c.FPDFPage_InsertObject(page.raw, obj)
                y -= 16
        else:
            rect = c.FPDFPageObj_CreateNewRect(50, 50, 400, 600)
            c.FPDFPageObj_SetFillColor(rect, 90, 90, 90, 255)
            c.FPDFPath_SetDrawMode(rect, c.FPDF_FILLMODE_ALTERNATE, False)
            c.FPDFPage_InsertObject(page.raw, rect)
        c.FPDFPage_GenerateContent(page.raw)
        page.close()
    pdf.save(str(path))
    if font_handle is not None:
        c.FPDFFont_Close(font_handle)
    pdf.close()
    return path


_TONES = "\u0300\u0301\u0303\u0309\u0323"


def to_cp1258(text: str) -> bytes:
    """Encode as Windows-1258 the way Vietnamese software did: base letter (â, ơ, ư…) plus a combining tone mark.

    Python's 'cp1258' codec has no precomposed toned letters such as 'ề', so each
    letter is split into its base (recomposed) and its tone before encoding.
    """
    out = []
    for ch in text:
        d = unicodedata.normalize("NFD", ch)
        tones = "".join(c for c in d if c in _TONES)
        base = unicodedata.normalize("NFC", "".join(c for c in d if c not in _TONES))
        out.append(base + tones)
    return "".join(out).encode("cp1258")
