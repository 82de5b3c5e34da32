"""Pass 2 of the chunker: walk the accepted headings and cut each Điều, table and stretch of text
outside any Điều into pieces of at most ``max_chars`` (the rules are ``rag.chunk``'s docstring)."""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from ..normalise import line_width, reflow
from ..types import Document
from .headings import (
    POINT_LETTERS,
    SEP,
    _RE_ARTICLE,
    _RE_CLAUSE,
    _RE_POINT,
    _RE_SENTENCE_END,
    _accept_articles,
    _find_headings,
    _flatten,
    _Heading,
    _Line,
)


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
