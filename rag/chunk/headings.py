"""Pass 1 of the chunker: the document as lines, and the headings found at their starts.

``_find_headings`` reads Phần / Chương / Mục / Điều / Phụ lục headings (with a name on the next
line where there is one); ``_accept_articles`` keeps the Điều whose numbering makes sense (see
``rag.chunk``). Also the separator and the Điểm letters the header paths are written with.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from ..types import Document

SEP = " › "
POINT_LETTERS = "abcdđeghiklmnopqrstuvxy"  # Vietnamese order: no f, j, w, z; đ after d

_MD_PREFIX = re.compile(r"^(?:#{1,6}\s+)?(?:\*\*|__)?(.*?)(?:\*\*|__)?$")
_ROMAN = r"[IVXLC]+"
_NAME_SEP = r"\s*([.:\-–—])?\s*(.*)$"
_RE_PART = re.compile(rf"^(?:Phần|PHẦN)\s+((?:thứ|THỨ|Thứ)\s+\w+|{_ROMAN}|\d+)(?=$|[\s.:\-–—]){_NAME_SEP}")
_RE_CHAPTER = re.compile(rf"^(?:Chương|CHƯƠNG)\s+({_ROMAN}|\d+)(?=$|[\s.:\-–—]){_NAME_SEP}")
_RE_SECTION = re.compile(rf"^(?:Mục|MỤC)\s+(\d+|{_ROMAN})(?=$|[\s.:\-–—]){_NAME_SEP}")
_RE_APPENDIX = re.compile(rf"^(?:PHỤ LỤC|Phụ lục)(?:\s+(\d+|{_ROMAN}|[A-Z]))?(?=$|[\s.:\-–—]){_NAME_SEP}")
_RE_ARTICLE = re.compile(r"^(?:Điều|ĐIỀU)\s+(\d+[a-zđ]?)\s*[.:]\s*(.*)$")  # not "-": "Điều 5-7 của ..."
_RE_CLAUSE = re.compile(r"^(\d{1,3})[.)]\s+\S")
_RE_POINT = re.compile(r"^([a-zđ])[).]\s+\S")
# A line ending like this is mid-sentence: a "Điều N." right after it is a cross-reference.
# (Lower-case words only: a chapter name such as "KHEN THƯỞNG VÀ" wrapping is not a sentence.)
_RE_XREF_TAIL = re.compile(r"(?:\b(?:tại|theo|của|và|hoặc|với|như|ở|trong|quy định|[Kk]hoản \d+|[Đđ]iểm [a-zđ])|,)$")
_RE_SENTENCE_END = re.compile(r"[.!?;:…][\"”’')\]]*(?=\s)")


# --- lines ------------------------------------------------------------------


@dataclass
class _Line:
    text: str  # stripped, markdown heading marks removed for matching
    raw: str
    page: int
    start: int  # offsets of the raw line in the flat text
    end: int


def _flatten(doc: Document) -> tuple[str, list[_Line]]:
    parts, lines, pos = [], [], 0
    for page in doc.pages:
        if not page.text.strip():
            continue
        for raw in page.text.split("\n"):
            m = _MD_PREFIX.match(raw.strip())
            lines.append(_Line(m.group(1).strip(), raw, page.number, pos, pos + len(raw)))
            parts.append(raw)
            pos += len(raw) + 1
    return "\n".join(parts), lines


def _upperish(s: str) -> bool:
    letters = [c for c in s if c.isalpha()]
    return len(letters) >= 2 and sum(c.isupper() for c in letters) >= 0.8 * len(letters)


def _starts_lower(s: str) -> bool:
    return bool(s) and s[0].islower()


# --- pass 1: candidate headings ---------------------------------------------------------


@dataclass
class _Heading:
    kind: str  # part | chapter | section | article | appendix
    line: int
    num: str
    name: str = ""
    consumed: list[int] = field(default_factory=list)  # name/title lines on the next lines


def _next_nonempty(lines: list[_Line], i: int) -> int | None:
    for j in range(i + 1, len(lines)):
        if lines[j].text:
            return j
    return None


def _prev_nonempty(lines: list[_Line], i: int) -> int | None:
    for j in range(i - 1, -1, -1):
        if lines[j].text:
            return j
    return None


def _is_heading_line(text: str) -> bool:
    return any(r.match(text) for r in (_RE_PART, _RE_CHAPTER, _RE_SECTION, _RE_ARTICLE, _RE_APPENDIX))


def _named_heading(kind: str, m: re.Match, lines: list[_Line], i: int) -> _Heading | None:
    """Phần / Chương / Mục / Phụ lục: the name is on the same line or on the next upper-case line(s)."""
    num, sep, rest = m.group(1) or "", m.group(2), m.group(3).strip()
    h = _Heading(kind, i, num)
    j = _next_nonempty(lines, i)
    if rest:
        if _upperish(rest):
            h.name = rest
        elif sep or kind == "appendix":
            # "Chương I. Những quy định chung" is a heading only if a heading or an upper-case line follows;
            # "Mục 3: Sinh viên được ..." inside an article is not.
            nxt = lines[j].text if j is not None else ""
            if not rest[0].isupper() or len(rest) > 120 or rest[-1] in ".;,":
                return None
            numbered_appendix = kind == "appendix" and num and sep
            p = _prev_nonempty(lines, i)
            if numbered_appendix and p is not None and _RE_XREF_TAIL.search(lines[p].text):
                return None  # "… quy định tại" / "Phụ lục 1. …": a wrapped cross-reference
            # "Phụ lục 1: Các yêu cầu …" names itself with its number; other headings need a heading after them
            if not numbered_appendix and not (j is not None and (_is_heading_line(nxt) or _upperish(nxt))):
                return None
            h.name = rest
        else:
            return None
        return h
    # name on the following upper-case line(s), at most two
    names = []
    while j is not None and len(names) < 2 and _upperish(lines[j].text) and not _is_heading_line(lines[j].text):
        names.append(lines[j].text)
        h.consumed.append(j)
        j = _next_nonempty(lines, j)
    h.name = " ".join(names)
    return h


def _article_heading(m: re.Match, lines: list[_Line], i: int) -> _Heading | None:
    num, rest = m.group(1), m.group(2).strip()
    if rest and _starts_lower(rest):
        return None  # "Điều 5. của ..." is a wrapped cross-reference
    p = _prev_nonempty(lines, i)
    if p is not None and _RE_XREF_TAIL.search(lines[p].text):
        return None
    h = _Heading("article", i, num)
    j = _next_nonempty(lines, i)
    if not rest:
        if j is not None and not _is_heading_line(lines[j].text) and not _RE_CLAUSE.match(lines[j].text) \
                and not _RE_POINT.match(lines[j].text) and len(lines[j].text) <= 200:
            h.name = lines[j].text.rstrip(".")
            h.consumed.append(j)
        return h
    if len(rest) > 200 or re.search(r"[.;]\s+\S", rest):
        return h  # no title: the line holds body text (kept in the body)
    title = rest
    if j is not None and title[-1] not in ".;:" and _starts_lower(lines[j].text) \
            and not _RE_POINT.match(lines[j].text) and len(title) + len(lines[j].text) <= 250:
        title += " " + lines[j].text  # a title that wrapped onto the next line
        h.consumed.append(j)
    h.name = title.rstrip(".").strip()
    return h


def _find_headings(lines: list[_Line]) -> list[_Heading]:
    out: list[_Heading] = []
    consumed: set[int] = set()
    for i, ln in enumerate(lines):
        if i in consumed or not ln.text:
            continue
        t = ln.text
        h = None
        if m := _RE_ARTICLE.match(t):
            h = _article_heading(m, lines, i)
        elif m := _RE_CHAPTER.match(t):
            h = _named_heading("chapter", m, lines, i)
        elif m := _RE_SECTION.match(t):
            h = _named_heading("section", m, lines, i)
        elif m := _RE_PART.match(t):
            h = _named_heading("part", m, lines, i)
        elif m := _RE_APPENDIX.match(t):
            h = _named_heading("appendix", m, lines, i)
        if h is not None:
            out.append(h)
            consumed.update(h.consumed)
    return out


_RE_DIGITS = re.compile(r"\d+")


def _int(num: str) -> int:
    return int(_RE_DIGITS.match(num).group())


def _accept_articles(heads: list[_Heading]) -> tuple[list[_Heading], int]:
    """Keep article headings whose numbers make sense; return (kept, line of the last demoted article or -1)."""
    arts = [h for h in heads if h.kind == "article"]
    nums = [_int(h.num) for h in arts]
    later = sorted(nums)  # the numbers of the articles after the current one, sorted (searched, not scanned)
    kept: list[_Heading] = []
    demoted_until = -1
    last: int | None = None
    for h, n in zip(arts, nums):
        del later[bisect_left(later, n)]
        if last is None or n == last + 1:
            ok = True
        elif n > last + 1:
            # skipping ahead while the gap is filled later: a stray line
            i = bisect_right(later, last)
            ok = not (i < len(later) and later[i] < n)
        elif n == 1 and _contains(later, 2):
            demoted_until = kept[-1].line  # numbering restarts: a new act begins here
            kept = []
            ok = True
        else:
            ok = False
        if ok:
            kept.append(h)
            last = n
    return kept, demoted_until


def _contains(sorted_values: list[int], x: int) -> bool:
    i = bisect_left(sorted_values, x)
    return i < len(sorted_values) and sorted_values[i] == x
