"""What every format loader shares: size units, line endings, form-feed pages, table cells and titles.

A title is the document's own (PDF metadata, DOCX core properties or Title
style, HTML ``<title>``/``<h1>``, Markdown ``#``, JSON ``title``) when it means
something, else the first substantial line of the text (skipping the national
motto, issuing body, number and date lines), else the file name.
"""

from __future__ import annotations

import re

from ..types import Page

TITLE_MAX_CHARS = 150
MB = 1024 * 1024


def newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_pages(text: str) -> list[Page]:
    """Form feeds separate pages; numbering follows the position even when a page is blank."""
    return [Page(number=i, text=t) for i, t in enumerate(newlines(text).split("\f"), start=1)]


def table_cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().replace("|", "\\|")


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


def meaningful_title(title: str) -> bool:
    t = title.strip()
    return sum(c.isalpha() for c in t) >= 3 and not _boilerplate(t)


def clip_title(title: str) -> str:
    title = re.sub(r"\s+", " ", title).strip()
    if len(title) <= TITLE_MAX_CHARS:
        return title
    return title[: TITLE_MAX_CHARS - 1].rsplit(" ", 1)[0] + "…"


def _is_caps(line: str) -> bool:
    letters = [c for c in line if c.isalpha()]
    return bool(letters) and all(c.isupper() for c in letters)


def title_from_text(text: str) -> str | None:
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
        return clip_title(title)
    return None
