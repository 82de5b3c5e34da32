"""The extractive answerer: the default when no LLM is configured.

It never paraphrases, so it cannot invent: it quotes, from the best passage, the
Khoản (or Điểm, or sentences) that answer the question, under the structure they
sit in ("Quy chế đào tạo 2025 › Điều 10. Đăng ký học tập › Khoản 2"), and cites
exactly that Khoản. How the part is chosen:

1. ``units`` cuts a passage into its Khoản ("1.", "2." … counted in order from
   the passage's first Khoản), each with its Điểm ("a)", "b)" …); text before the
   first Khoản is the lead-in. A passage without Khoản is cut into sentences.
2. Each unit is scored by the question's content words it contains, weighted by
   how rare they are in the index (``Retrieval.terms``), with a bonus for a unit
   that states a number when the question asks for one ("bao nhiêu", "tối đa",
   "mấy" …).
3. A short passage (``WHOLE_CHARS``) is quoted whole. Otherwise the best Khoản
   is quoted whole when it fits (``QUOTE_CHARS``); a longer one is quoted as its
   first line and its best Điểm. A second Khoản nearly as good (``CLOSE``) is
   added when there is room.

A second passage, from another Điều, is quoted the same way when it is nearly as
good as the first (``SECOND_PASSAGE``).

Out of scope: answers stitched from several documents into one sentence, and
reading comprehension (a trained reader) — the quote is the answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from .normalise import SENTENCE_END
from .render import structure_path
from .retrieve import Retrieval
from .texts import ANSWER_LEAD
from .types import Answer, Citation, Hit

# Chosen on the HUST dev half (fact-in-answer against answer length, docs/evaluation.md).
WHOLE_CHARS = 400  # a passage up to this long is quoted whole
QUOTE_CHARS = 1000  # a Khoản up to this long is quoted whole
MAX_QUOTE_CHARS = 1300  # the most one passage contributes to the answer
CLOSE = 0.6  # a second Khoản (or Điểm) scoring at least this share of the best is quoted too
SECOND_PASSAGE = 0.6  # a second passage scoring at least this share of the first is quoted too
MAX_PASSAGES = 2

_CLAUSE = re.compile(r"^(\d{1,2})[.)]\s+\S")
_POINT = re.compile(r"^([a-zđ])[).]\s+\S")
# The question asks for a quantity: a unit stating a number answers it.
_ASKS_NUMBER = re.compile(r"bao nhiêu|mấy|tối đa|tối thiểu|bao lâu|ít nhất|nhiều nhất|thời hạn|mức|"
                          r"tỷ lệ|tỉ lệ|phần trăm|điểm|số tín chỉ", re.I)
_NUMBER = re.compile(r"\d")
POINT_LETTERS = "abcdđeghiklmnopqrstuvxy"


@dataclass
class Unit:
    """A quotable part of a passage: the lead-in, a Khoản, a Điểm of a Khoản, or a sentence."""

    text: str
    clause: str | None = None
    point: str | None = None
    lead: str | None = None  # a Điểm's Khoản first line ("2. Sinh viên bị cảnh báo nếu:")
    points: list["Unit"] = field(default_factory=list)
    order: int = 0


@dataclass
class Quote:
    """One quoted part of a passage, as the answer shows it."""

    citation: Citation
    path: str  # "Quy chế đào tạo 2025 › Điều 10. Cảnh báo học tập › Khoản 2"
    text: str
    chunk_id: str


def _first_clause(clause: str | None) -> int:
    m = re.match(r"\d+", clause or "")
    return int(m.group()) if m else 1


def units(text: str, first_clause: int = 1) -> list[Unit]:
    """The lead-in and the Khoản (numbered in order from ``first_clause``) of a passage, with their Điểm."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    out: list[Unit] = []
    expect = first_clause
    cur: list[str] = []
    cur_clause: str | None = None
    for ln in lines:
        m = _CLAUSE.match(ln)
        if m and int(m.group(1)) == expect:
            if cur:
                out.append(_clause_unit(cur, cur_clause))
            cur, cur_clause, expect = [ln], m.group(1), expect + 1
        else:
            cur.append(ln)
    if cur:
        out.append(_clause_unit(cur, cur_clause))
    if len(out) == 1 and out[0].clause is None and not out[0].points:
        sentences = [s for s in SENTENCE_END.split(out[0].text) if s.strip()]
        if len(sentences) > 1 and len(out[0].text) > QUOTE_CHARS:
            out = [Unit(text=s.strip()) for s in sentences]
    for i, u in enumerate(out):
        u.order = i
    return out


def _clause_unit(lines: list[str], clause: str | None) -> Unit:
    unit = Unit(text="\n".join(lines), clause=clause)
    expect = 0
    cur: list[str] = []
    letter = None
    head: list[str] = []
    for ln in lines:
        m = _POINT.match(ln)
        if m and expect < len(POINT_LETTERS) and m.group(1) == POINT_LETTERS[expect]:
            if letter is not None:
                unit.points.append(Unit(text="\n".join(cur), clause=clause, point=letter))
            letter, cur, expect = m.group(1), [ln], expect + 1
        elif letter is None:
            head.append(ln)
        else:
            cur.append(ln)
    if letter is not None:
        unit.points.append(Unit(text="\n".join(cur), clause=clause, point=letter))
    lead = "\n".join(head)
    for p in unit.points:
        p.lead = lead
    return unit


def score(text: str, terms: dict[str, float], asks_number: bool) -> float:
    """Share of the question's term weight found in ``text`` (+0.15 for a number when one is asked for)."""
    from .normalise import syllables

    if not terms:
        return 0.0
    sylls = " " + " ".join(syllables(text)) + " "
    total = sum(terms.values())
    found = sum(w for t, w in terms.items() if f" {t.replace('_', ' ')} " in sylls)
    s = found / total if total else 0.0
    if asks_number and _NUMBER.search(text):
        s += 0.15
    return s


def select(hit: Hit, terms: dict[str, float], question: str) -> tuple[str, str | None, str | None]:
    """The part of ``hit`` to quote: (text, Khoản, Điểm) — Khoản "2" or "2, 4", Điểm "a" or "a, c"."""
    text = hit.chunk.text.strip()
    text = re.sub(r"^Điều\s+\d+[a-zđ]?\s*[.:][^\n]*\n", "", text, count=1).strip() or text
    parts = units(text, _first_clause(hit.chunk.clause))
    if len(text) <= WHOLE_CHARS or (len(parts) == 1 and not parts[0].points):
        only = parts[0] if len(parts) == 1 and parts[0].clause else None
        return _clip(text), (only.clause if only else hit.chunk.clause), (None if only else hit.chunk.point)
    asks = bool(_ASKS_NUMBER.search(question))

    def s(u: Unit) -> float:
        return score(u.text, terms, asks)

    ranked = sorted(parts, key=lambda u: (-s(u), u.order))
    best = ranked[0]
    chosen = [best]
    for u in ranked[1:3]:
        if s(best) > 0 and s(u) >= CLOSE * s(best) and sum(len(c.text) for c in chosen) + len(u.text) <= QUOTE_CHARS:
            chosen.append(u)
    chosen.sort(key=lambda u: u.order)
    if len(chosen) == 1 and len(best.text) > QUOTE_CHARS and best.points:
        pts = sorted(best.points, key=lambda p: (-s(p), POINT_LETTERS.find(p.point or "a")))
        picked = [pts[0]]
        for p in pts[1:3]:
            if s(pts[0]) > 0 and s(p) >= CLOSE * s(pts[0]) \
                    and sum(len(c.text) for c in picked) + len(p.text) <= QUOTE_CHARS:
                picked.append(p)
        picked.sort(key=lambda p: POINT_LETTERS.find(p.point or "a"))
        lead = _clip(best.points[0].lead or "", 300)
        body = "\n".join(p.text for p in picked)
        return _clip(f"{lead}\n…\n{body}" if lead else body), best.clause, " và ".join(p.point for p in picked)
    clauses = [u.clause for u in chosen if u.clause]
    if not clauses:  # the lead-in or sentences: cite the passage as it is
        return _clip("\n".join(u.text for u in chosen)), hit.chunk.clause, hit.chunk.point
    return _clip("\n".join(u.text for u in chosen)), _join_numbers(clauses), None


def _join_numbers(nums: list[str]) -> str:
    """["2", "3", "4"] → "2-4" (the range form citations use); ["2", "4"] → "2 và 4"."""
    if len(nums) > 1 and all(n.isdigit() for n in nums) and \
            [int(n) for n in nums] == list(range(int(nums[0]), int(nums[0]) + len(nums))):
        return f"{nums[0]}-{nums[-1]}"
    return " và ".join(nums)


def _clip(text: str, limit: int = MAX_QUOTE_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    m = max(cut.rfind(". "), cut.rfind(".\n"), cut.rfind(";\n"), cut.rfind("\n"))
    return (cut[: m + 1] if m > limit // 2 else cut.rsplit(" ", 1)[0]).rstrip() + " …"


def quote_hit(hit: Hit, retrieval: Retrieval) -> Quote:
    text, clause, point = select(hit, retrieval.terms, retrieval.query or retrieval.question)
    cite = replace(hit.chunk.citation(), clause=clause, point=point)
    return Quote(citation=cite, path=structure_path(cite), text=text, chunk_id=hit.chunk.id)


def extractive_answer(retrieval: Retrieval) -> Answer:
    if retrieval.refused or not retrieval.hits:
        return Answer(text=retrieval.refusal_text(), refused=True, citations=[], hits=retrieval.hits,
                      mode="extractive", query=retrieval.query)
    best = retrieval.hits[0]
    chosen = [best]
    for h in retrieval.hits[1:]:
        if len(chosen) >= MAX_PASSAGES:
            break
        # a second passage only when it is nearly as good and from another Điều
        if (h.chunk.source, h.chunk.article) != (best.chunk.source, best.chunk.article) \
                and h.score >= SECOND_PASSAGE * best.score and (h.chunk.article or h.chunk.section):
            chosen.append(h)
    quotes = [quote_hit(h, retrieval) for h in chosen]
    parts = [ANSWER_LEAD]
    for i, q in enumerate(quotes, 1):
        parts.append(f"[{i}] {q.path}:\n«{q.text}»")
    return Answer(
        text="\n\n".join(parts),
        refused=False,
        citations=[q.citation for q in quotes],
        hits=retrieval.hits,
        mode="extractive",
        quotes=quotes,
        query=retrieval.query,
    )
