"""Structure-aware chunking: Phần › Chương › Mục › Điều › Khoản › Điểm.

``chunk_document`` takes a ``Document`` whose pages were cleaned by
``normalise.clean_pages`` and returns ``Chunk``s in document order:

- one chunk per Điều (kind "article") holding its whole body;
- a Điều longer than ``max_chars`` is split at Khoản: consecutive Khoản are
  packed greedily (kind "clause", clause "2" or "2-3"); the lead-in before
  Khoản 1 goes with the first piece; a Khoản that alone is too long is split
  at Điểm (point "a-c"), and a Điểm (or a Khoản without Điểm) that is still
  too long at sentence ends;
- a pipe table (consecutive lines starting with "|") is never cut: it stays
  in its Điều's chunk when the whole Điều fits, and otherwise becomes a chunk
  of its own (kind "table") with the Điều's header path (plus "Khoản N" when
  it sits inside one); what is left of the Điều is then one "article" chunk if
  it fits, or is split as above;
- text outside any Điều — the preamble, a chapter's introduction, appendices
  ("PHỤ LỤC"), or a whole document with no legal structure — becomes
  paragraph windows of about ``window_chars`` (kind "paragraph"), cut at blank
  lines, then sentence ends, then spaces, never inside a word. Windows do not
  overlap: every sentence is in exactly one chunk, so BM25 counts and
  citations are not doubled.

Structure is read only at line starts. A Điều heading is "Điều N." / "Điều
N:" / "Điều N ." at the start of a line; a mid-sentence cross-reference
("theo quy định tại Điều 5 của Quy chế này") never starts an article, and a
wrapped line that starts with one is caught by numbering: article numbers
must increase, a number that skips ahead is refused when a later heading
fills the gap, and a line right after "tại", "theo", "khoản 2" … is a
continuation. Numbering that restarts at Điều 1 (a Quyết định ban hành
followed by the Quy chế it issues, or a table of contents that survived
cleaning) starts a new act: the earlier articles become preamble paragraphs
and only the last act keeps article citations. Khoản must count 1, 2, 3 … and
Điểm a, b, c, d, đ, e, g … within their parent; an out-of-sequence "3." or
"b)" is ordinary text.

Out of scope: tables that a PDF's text layer flattened into plain lines
(they stay as text in their Điều); nested Khoản numbering such as "1.1";
Điều headings that extraction glued to the end of a previous line.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field

from .normalise import line_width, reflow
from .types import Chunk, Document

CHUNKER_VERSION = "2"  # recorded in the index manifest next to NORMALISER_VERSION; bump when output changes
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


# --- pass 2: walk the structure -------------------------------------------------


@dataclass
class _Ctx:
    part: str | None = None
    chapter: str | None = None
    section: str | None = None
    appendix: str | None = None  # the header label "Phụ lục 2. MẪU ĐƠN …"
    appendix_no: str | None = None  # "Phụ lục 2"
    appendix_name: str | None = None


def _label(h: _Heading) -> str:
    word = {"part": "Phần", "chapter": "Chương", "section": "Mục", "appendix": "Phụ lục"}[h.kind]
    head = f"{word} {h.num}".strip()
    return f"{head}. {h.name}" if h.name else head


class _Chunker:
    def __init__(self, doc: Document, max_chars: int, window_chars: int, title: str | None = None):
        self.doc = doc
        self.title = title or doc.title
        self.max = max_chars
        self.window = window_chars
        self.flat, self.lines = _flatten(doc)
        self.starts = [ln.start for ln in self.lines]
        self.width = line_width([ln.text for ln in self.lines])
        self.page_labels = {p.number: p.label for p in doc.pages if p.label}
        self.out: list[dict] = []

    # -- helpers on offsets ---------------------------------------------------------

    def page_at(self, offset: int) -> int | None:
        i = bisect_right(self.starts, offset) - 1
        return self.lines[max(i, 0)].page if self.lines else None

    def text_of(self, spans: list[tuple[int, int]]) -> str:
        """Text of spans; spans separated only by whitespace are read as one (blank lines survive)."""
        merged: list[list[int]] = []
        for s, e in sorted(spans):
            if merged and not self.flat[merged[-1][1]:s].strip():
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        return "\n".join(self.flat[s:e].strip() for s, e in merged).strip()

    def spans_of(self, idxs: list[int]) -> list[tuple[int, int]]:
        return [(self.lines[i].start, self.lines[i].end) for i in sorted(idxs)]

    def emit(self, spans, *, header_path, kind, page=None, **fields):
        text = self.text_of(spans)
        if not text:
            return
        if page is None:
            first = min(s for s, e in spans if self.flat[s:e].strip())
            while self.flat[first].isspace():
                first += 1
            page = self.page_at(first)
        self.out.append(dict(text=reflow(text, self.width), header=SEP.join(p for p in header_path if p), kind=kind,
                             page=page, page_label=self.page_labels.get(page), **fields))

    # -- driver --------------------------------------------------------------------

    def run(self) -> list[dict]:
        heads = _find_headings(self.lines)
        # numbering inside appendices (a sample decision's "Điều 1.") must not restart the act
        first_art = next((h.line for h in heads if h.kind == "article"), None)
        appendix = next(
            (h.line for h in heads if h.kind == "appendix" and first_art is not None and h.line > first_art), None
        )
        if appendix is not None:
            heads = [h for h in heads if h.kind != "article" or h.line < appendix]
        articles, demoted_until = _accept_articles(heads)
        if not articles:
            if not self.outline():
                self.paragraphs(list(range(len(self.lines))), [self.title], {})
            return self.out
        first = articles[0].line
        # the structured region starts at the first Phần/Chương/Mục after the last demoted act
        region = first
        for h in heads:
            if h.kind in ("part", "chapter", "section") and demoted_until < h.line < first:
                region = h.line
                break
        self.paragraphs(list(range(region)), [self.title], {})

        accepted = {h.line: h for h in articles}
        accepted.update({h.line: h for h in heads if h.kind != "article" and h.line >= region})
        skip = {j for h in accepted.values() for j in h.consumed}
        ctx = _Ctx()
        loose: list[int] = []  # lines outside any article
        art: _Heading | None = None
        body: list[int] = []

        def flush():
            nonlocal art, body, loose
            if art is not None:
                self.article(art, body, ctx)
            elif loose:
                self.paragraphs(loose, self.path(ctx), self.ctx_fields(ctx))
            art, body, loose = None, [], []

        for i in range(region, len(self.lines)):
            h = accepted.get(i)
            if h is None or (h.kind == "article" and ctx.appendix is not None):
                if i not in skip:  # (an article heading inside an appendix is text)
                    (body if art is not None else loose).append(i)
                continue
            flush()
            if h.kind == "article":
                art = h
            elif h.kind == "part":
                ctx = _Ctx(part=_label(h))
            elif h.kind == "chapter":
                ctx = _Ctx(part=ctx.part, chapter=_label(h))
            elif h.kind == "section":
                ctx = _Ctx(part=ctx.part, chapter=ctx.chapter, section=_label(h))
            else:
                ctx = _Ctx(appendix=_label(h), appendix_no=f"Phụ lục {h.num}".strip(), appendix_name=h.name or None)
        flush()
        return self.out

    # -- documents without Điều: numbered sections (1., 2.) with lettered parts (A., B.) ------------

    def outline(self) -> bool:
        """Chunk a document built from numbered sections ("1. Phạm vi áp dụng") and lettered parts
        ("A. Với các sinh viên …"), as a Hướng dẫn is; False when it has no such outline (at least two
        sections numbered 1, 2, … with capitalised titles)."""
        all_idx = list(range(len(self.lines)))
        secs = _outline_marks(self.lines, all_idx, _RE_OUTLINE_SECTION, lambda n: str(int(n) + 1), "1")
        if len(secs) < 2:
            return False
        self.paragraphs([i for i in all_idx if i < secs[0][1]], [self.title], {})
        for k, (num, start) in enumerate(secs):
            end = secs[k + 1][1] if k + 1 < len(secs) else len(self.lines)
            idxs = list(range(start, end))
            label = f"Mục {num}. {_unit_title(self.lines[start].text)}"
            path = [self.title, label]
            if len(self.text_of(self.spans_of(idxs))) <= self.max:
                self.emit(self.spans_of(idxs), header_path=path, kind="section", section=label)
                continue
            parts = _outline_marks(self.lines, idxs[1:], _RE_OUTLINE_PART, _next_capital, "A")
            units = [(None, idxs)] if not parts else [
                # the section's title line (and any lead-in) rides with part A
                (letter, idxs[: (parts[j + 1][1] if j + 1 < len(parts) else end) - start] if j == 0 else
                 list(range(pstart, parts[j + 1][1] if j + 1 < len(parts) else end)))
                for j, (letter, pstart) in enumerate(parts)
            ]
            for letter, uidx in units:
                plabel = f"Phần {letter}. {_unit_title(self.lines[dict(parts)[letter]].text)}" if letter else None
                spans = self.spans_of(uidx)
                pieces = [spans] if len(self.text_of(spans)) <= self.max else \
                    [[sp] for sp in self.split_span(spans[0][0], spans[-1][1], self.max)]
                for piece in pieces:
                    self.emit(piece, header_path=path + [plabel], kind="section", section=label, part=plabel)
        return True

    def path(self, ctx: _Ctx) -> list[str | None]:
        return [self.title, ctx.part, ctx.chapter, ctx.section, ctx.appendix]

    @staticmethod
    def ctx_fields(ctx: _Ctx) -> dict:
        return dict(part=ctx.part, chapter=ctx.chapter, section=ctx.section, appendix=ctx.appendix_no,
                    appendix_title=ctx.appendix_name)

    # -- articles --------------------------------------------------------------------

    def article(self, h: _Heading, body: list[int], ctx: _Ctx):
        ln = self.lines[h.line]
        heading = f"Điều {h.num}. {h.name}" if h.name else f"Điều {h.num}"
        rest = _RE_ARTICLE.match(ln.text).group(2).strip()
        if not h.name and rest:
            # an untitled "Điều 2. Quyết định này có hiệu lực ...": the heading line's text is body
            k = max(ln.raw.find(rest), 0)
            self.lines[h.line] = _Line(rest, rest, ln.page, ln.start + k, ln.start + k + len(rest))
            body = [h.line] + body
        base = self.path(ctx)[:-1] + [heading]
        fields = dict(self.ctx_fields(ctx), article=h.num, article_title=h.name or None)
        text = self.text_of(self.spans_of(body))
        if len(text) <= self.max:
            spans = self.spans_of(body) if text else [(ln.start, ln.end)]
            self.emit(spans, header_path=base, kind="article", page=ln.page, **fields)
            return
        # Too long. Tables leave first (each whole, in a chunk of its own); then, if the rest
        # still does not fit, it is cut at Khoản, Điểm and sentences.
        tables = [blk for is_table, blk in _blocks(self.lines, body) if is_table]
        in_table = {i for blk in tables for i in blk}
        rest = [i for i in body if i not in in_table]
        clause_starts = _sequence(self.lines, rest, _RE_CLAUSE, lambda prev: str(int(prev) + 1), "1")
        if len(self.text_of(self.spans_of(rest))) <= self.max:
            pieces = [dict(spans=self.spans_of(rest), clause=None, point=None, kind="article")]
        else:
            pieces = self.pack(self.article_units(rest))
        clause_lines = [start for _, start in clause_starts]
        for blk in tables:
            k = bisect_left(clause_lines, blk[0])  # the last Khoản that starts before the table
            clause = clause_starts[k - 1][0] if k else None
            pieces.append(dict(spans=self.spans_of(blk), clause=clause, point=None, kind="table"))
        pieces = [p for p in pieces if self.text_of(p["spans"])]
        pieces.sort(key=lambda p: min(s for s, e in p["spans"]))
        for n, piece in enumerate(pieces):
            clause, point = piece["clause"], piece["point"]
            path = base + ([f"Khoản {clause}"] if clause else []) + ([f"Điểm {point}"] if point else [])
            self.emit(
                piece["spans"], header_path=path, kind=piece["kind"], page=ln.page if n == 0 else None,
                **dict(fields, clause=clause, point=point),
            )

    def article_units(self, body: list[int]) -> list[dict]:
        """Cut an over-long article into units: the lead-in, whole Khoản, or parts of a Khoản.

        ``body``: line indices in increasing order (each Khoản's lines are a slice of it)."""
        clauses = _sequence(self.lines, body, _RE_CLAUSE, lambda prev: str(int(prev) + 1), "1")
        if not clauses:
            return self.expand(body, None)
        units = []
        lead = body[:bisect_left(body, clauses[0][1])]
        if lead:
            units += self.whole_or_expand(lead, None, level="lead")
        for k, (num, start) in enumerate(clauses):
            end = clauses[k + 1][1] if k + 1 < len(clauses) else len(self.lines)
            units += self.whole_or_expand(body[bisect_left(body, start):bisect_left(body, end)], num, level="clause")
        return units

    def whole_or_expand(self, idxs: list[int], clause: str | None, *, level: str) -> list[dict]:
        if len(self.text_of(self.spans_of(idxs))) <= self.max:
            return [_unit(self.spans_of(idxs), clause, None, level)]
        units = self.expand(idxs, clause)
        if level == "lead":
            for u in units:
                u["level"] = "lead"
        return units

    def expand(self, idxs: list[int], clause: str | None) -> list[dict]:
        """Parts of one Khoản (or of an article without Khoản): its lead-in and each Điểm."""
        points = _sequence(self.lines, idxs, _RE_POINT, _next_letter, "a")
        bounds = [(None, idxs[0])] + points if idxs else []
        units: list[dict] = []
        for k, (letter, start) in enumerate(bounds):
            end = bounds[k + 1][1] if k + 1 < len(bounds) else len(self.lines)
            units += self.atoms([i for i in idxs if start <= i < end], clause, letter)
        return units

    def atoms(self, idxs: list[int], clause, point) -> list[dict]:
        """One Điểm (or lead-in): whole if it fits, else cut at sentence ends."""
        spans = self.spans_of(idxs)
        if len(self.text_of(spans)) <= self.max:
            return [_unit(spans, clause, point, "point")]
        return [
            _unit([(a, b)], clause, point, "point", frag=True)
            for a, b in self.split_span(spans[0][0], spans[-1][1], self.max)
        ]

    def pack(self, units: list[dict]) -> list[dict]:
        """Greedy packing of consecutive units into pieces of at most max_chars."""
        pieces: list[dict] = []
        cur: list[dict] = []
        for u in units:
            if cur and _mergeable(cur, u) and self.fits(cur + [u]):
                cur.append(u)
                continue
            if cur:
                pieces.append(_piece(cur))
            cur = [u]
        if cur:
            pieces.append(_piece(cur))
        return pieces

    def fits(self, units: list[dict]) -> bool:
        return len(self.text_of([s for u in units for s in u["spans"]])) <= self.max

    # -- paragraph windows -------------------------------------------------------------

    def paragraphs(self, idxs: list[int], path: list[str | None], fields: dict):
        idxs = [i for i in idxs if i < len(self.lines)]
        if not any(self.lines[i].text for i in idxs):
            return
        atoms: list[tuple[list[tuple[int, int]], bool]] = []  # (spans, is_table)
        for is_table, block in _blocks(self.lines, idxs, split_blank=True):
            spans = self.spans_of(block)
            if is_table or len(self.text_of(spans)) <= self.window:
                atoms.append((spans, is_table))
            else:
                atoms += [([(a, b)], False) for a, b in self.split_span(spans[0][0], spans[-1][1], self.window)]
        cur: list[tuple[int, int]] = []
        for spans, is_table in atoms:
            if is_table and len(self.text_of(spans)) > self.window:
                if cur:
                    self.emit(cur, header_path=path, kind="paragraph", **fields)
                    cur = []
                self.emit(spans, header_path=path, kind="table", **fields)
                continue
            if cur and len(self.text_of(cur + spans)) > self.window:
                self.emit(cur, header_path=path, kind="paragraph", **fields)
                cur = []
            cur = cur + spans
        if cur:
            self.emit(cur, header_path=path, kind="paragraph", **fields)

    def split_span(self, s: int, e: int, limit: int) -> list[tuple[int, int]]:
        """Cut flat[s:e] into pieces of at most ``limit`` chars at sentence ends, else line breaks, else spaces."""
        out = []
        while True:
            while s < e and self.flat[s].isspace():
                s += 1
            while e > s and self.flat[e - 1].isspace():
                e -= 1
            if e - s <= limit:
                if e > s:
                    out.append((s, e))
                return out
            window = self.flat[s:s + limit + 1]
            floor = int(limit * 0.3)
            cut = None
            ends = [m.end() for m in _RE_SENTENCE_END.finditer(window) if floor <= m.end() <= limit]
            if ends:
                cut = ends[-1]
            else:
                for sep in ("\n", " "):
                    k = window.rfind(sep, floor, limit + 1)
                    if k > 0:
                        cut = k
                        break
            if cut is None:
                cut = limit  # one "word" longer than a window (a URL): nothing better to do
            out.append((s, s + cut))
            s += cut


# --- small pure helpers -------------------------------------------------------------


def _next_letter(prev: str) -> str | None:
    k = POINT_LETTERS.find(prev)
    return POINT_LETTERS[k + 1] if 0 <= k < len(POINT_LETTERS) - 1 else None


def _sequence(lines: list[_Line], idxs: list[int], rx: re.Pattern, nxt, first: str) -> list[tuple[str, int]]:
    """Line-start markers that count in order (1, 2, 3 … or a, b, c …); others are ordinary text."""
    found: list[tuple[str, int]] = []
    expect = first
    for i in idxs:
        m = rx.match(lines[i].text)
        if m and m.group(1) == expect:
            found.append((expect, i))
            expect = nxt(expect)
    return found


def _blocks(lines: list[_Line], idxs: list[int], split_blank: bool = False) -> list[tuple[bool, list[int]]]:
    """Split line indices into runs: pipe-table blocks and text (text also split at blank lines if asked)."""
    out: list[tuple[bool, list[int]]] = []
    for i in idxs:
        t = lines[i].raw.strip()
        is_table = t.startswith("|")
        if split_blank and not t:
            if out and out[-1][1]:
                out.append((False, []))
            continue
        if out and out[-1][0] == is_table and (out[-1][1] or not is_table):
            out[-1][1].append(i)
        else:
            out.append((is_table, [i]))
    return [(t, b) for t, b in out if b]


_RE_OUTLINE_SECTION = re.compile(r"^(\d{1,2})\.\s+(\S.*)$")
_RE_OUTLINE_PART = re.compile(r"^([A-Z])\.\s+(\S.*)$")


def _next_capital(prev: str) -> str | None:
    return chr(ord(prev) + 1) if prev < "Z" else None


def _outline_marks(lines: list[_Line], idxs: list[int], rx: re.Pattern, nxt, first: str) -> list[tuple[str, int]]:
    """Like ``_sequence``, for outline headings: the text after the number must start with a capital."""
    found: list[tuple[str, int]] = []
    expect = first
    for i in idxs:
        m = rx.match(lines[i].text)
        if m and m.group(1) == expect and m.group(2)[0].isupper() and len(lines[i].text) <= 200:
            found.append((expect, i))
            expect = nxt(expect)
    return found


def _unit_title(line: str) -> str:
    """"2. Điều kiện học chuyển tiếp" → "Điều kiện học chuyển tiếp"; "7. Học phí: Mức thu …" → "Học phí"."""
    rest = re.sub(r"^(?:\d{1,2}|[A-Z])\.\s+", "", line).strip()
    head = rest.split(":", 1)[0].strip()
    return (head if len(head) <= 120 else head[:117].rsplit(" ", 1)[0] + "…").rstrip(".")


def _unit(spans, clause, point, level, *, frag=False) -> dict:
    """level: "lead" (the article's lead-in), "clause" (a whole Khoản), "point" (a part of one Khoản)."""
    return dict(spans=spans, clause=clause, point=point, level=level, frag=frag)


def _mergeable(cur: list[dict], u: dict) -> bool:
    if u["frag"] or any(c["frag"] for c in cur):
        return False  # a sentence-cut fragment stands alone
    body = [c for c in cur if c["level"] != "lead"]
    if not body:
        return True  # the article's lead-in rides with whatever comes first
    if u["level"] == "clause":
        return all(c["level"] == "clause" for c in body)
    if u["level"] == "point":
        return all(c["level"] == "point" and c["clause"] == u["clause"] for c in body)
    return False


def _range(values: list[str | None]) -> str | None:
    vals = [v for v in values if v]
    if not vals:
        return None
    return vals[0] if vals[0] == vals[-1] else f"{vals[0]}-{vals[-1]}"


def _piece(units: list[dict]) -> dict:
    body = [u for u in units if u["level"] != "lead"]
    clause = _range([u["clause"] for u in body])
    point = _range([u["point"] for u in body]) if body and all(u["level"] == "point" for u in body) else None
    return dict(spans=[s for u in units for s in u["spans"]], clause=clause, point=point, kind="clause")


def _chunk_id(source: str, header: str, text: str, occurrence: int) -> str:
    h = hashlib.sha1(f"{source}\x1f{header}\x1f{text}\x1f{occurrence}".encode("utf-8"))
    return h.hexdigest()[:20]


def chunk_document(doc: Document, *, max_chars: int = 2400, window_chars: int = 1200,
                   title: str | None = None) -> list[Chunk]:
    """Chunks of one cleaned document, in document order, with deterministic content-hash ids.

    ``title`` (the short title from rag.metadata) starts every header path; default: ``doc.title``.
    """
    if max_chars < 100 or window_chars < 100:
        raise ValueError("max_chars and window_chars must be at least 100")
    raw = _Chunker(doc, max_chars, window_chars, title).run()
    seen: Counter[tuple[str, str]] = Counter()
    chunks = []
    for r in raw:
        key = (r["header"], r["text"])
        occurrence = seen[key]
        seen[key] += 1
        chunks.append(
            Chunk(
                id=_chunk_id(doc.source, r["header"], r["text"], occurrence),
                document=doc.title,
                source=doc.source,
                doc_sha256=doc.sha256,
                **r,
            )
        )
    return chunks
