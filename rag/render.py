"""The one writer (and reader) of an Answer's text forms; every wrapper, the CLI and the web chat use it.

- ``citation_label``: the house citation style, "Quy chế đào tạo 2025, Điều 10, Khoản 2,
  trang 12"; ``citation_from_label`` reads one back.
- ``sources_block``: what a text client shows after the streamed answer (the
  Cog runner's text output): the sources heading, "[1] <label>" lines and a note on the Điều
  the answer named that were not retrieved; ``answer_from_text`` reads an answer
  with that block back into an ``Answer``.
- ``answer_dict``: an Answer as a JSON object (what ``rag ask --json``, ``rag chat --json`` and the
  RunPod worker send); ``answer_json``: that plus the retrieved passages (the Cog runner's JSON
  output); ``answer_from_dict`` reads either back. ``hit_dict`` / ``retrieval_dict``: a retrieved
  passage and a search result (``rag search --json``). The JSON forms are written here only.
- ``message_text`` / ``message_block``: a chat message (OpenAI route, web chat
  bubble): the answer, then the sources its text does not already quote;
  ``sources``: the ``sources`` field of an OpenAI response.
- ``terminal_sources``: what ``rag ask`` and ``rag chat`` print after the answer.
- ``sources_panel``: the web chat's sources panel as plain data (``rag.ui.panels``
  escapes it into HTML).
- ``heading`` / ``structure_path``: the unit a passage sits in ("Điều 10. Cảnh báo học tập") and the
  path an extractive quote is shown under ("Quy chế đào tạo 2025 › Điều 10. … › Khoản 2").

The sentences come from ``rag.texts``. Out of scope: HTML (``rag.ui.panels``).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from .chunk import SEP
from .texts import (FOOTER_MODE, FOOTER_MODES, FOOTER_TIMINGS, FOOTER_TOKENS, SOURCES_HEADING, UNSUPPORTED_NOTE,
                    is_refusal)
from .types import Answer, Citation, Hit

CITATION_FIELDS = ("document", "source", "page", "chapter", "article", "article_title", "clause", "point")

# -- the citation label ------------------------------------------------------------------------------


def citation_label(c: Citation) -> str:
    """The house citation label: "Quy chế đào tạo 2025, Điều 10, Khoản 2, trang 12".

    The document's short title (its full title when it has none); the Điều — or, outside any Điều,
    the appendix ("Phụ lục 2") or the section and part of a document without Điều ("mục 2, phần A");
    the Khoản and Điểm; the page number printed on the page when it has one, else the file's page.
    """
    parts = [c.title or c.document]
    if c.article:
        parts.append(f"Điều {c.article}")
    elif c.appendix:
        parts.append(c.appendix)
    elif c.section:
        parts.append("mục " + c.section.removeprefix("Mục ").split(".")[0])
        if c.part:
            parts.append("phần " + c.part.removeprefix("Phần ").split(".")[0])
    if c.clause:
        parts.append(f"Khoản {c.clause}")
    if c.point:
        parts.append(f"Điểm {c.point}")
    page = c.page_label or (str(c.page) if c.page else None)
    if page:
        parts.append(f"trang {page}")
    return ", ".join(parts)


def heading(c: Citation) -> str | None:
    """The unit a passage sits in, as its heading reads: "Điều 10. Cảnh báo học tập", "Phụ lục 2. …",
    "Mục 2 › Phần A" (a document without Điều); None for loose text."""
    if c.article:
        return f"Điều {c.article}. {c.article_title}" if c.article_title else f"Điều {c.article}"
    if c.appendix:
        return f"{c.appendix}. {c.appendix_title}" if c.appendix_title else c.appendix
    if c.section:
        return f"{c.section}{SEP}{c.part}" if c.part else c.section
    return None


def structure_path(c: Citation) -> str:
    """Where a quote sits: "Quy chế đào tạo 2025 › Điều 10. Cảnh báo học tập › Khoản 2 › Điểm a"."""
    parts = [c.title or c.document, heading(c)]
    if c.clause:
        parts.append(f"Khoản {c.clause}")
    if c.point:
        parts.append(f"Điểm {c.point}")
    return SEP.join(p for p in parts if p)


# ``citation_label`` read backwards; a label it does not produce is not parsed (see citation_from_label).
_LABEL = re.compile(
    r"^(?P<document>.+?)(?:, Điều (?P<article>[^,]+?))?(?:, Khoản (?P<clause>[^,]+?))?(?:, Điểm (?P<point>[^,]+?))?"
    r"(?:, trang (?P<page>\d+))?$"
)


def citation_from_label(label: str) -> Citation:
    """A label back into a ``Citation`` (no source file: labels do not carry it); one that
    ``citation_label`` would not write the same way is kept whole as the document."""
    label = label.strip()
    m = _LABEL.match(label)
    if m:
        c = Citation(document=m["document"], source="", page=int(m["page"]) if m["page"] else None,
                     article=m["article"], clause=m["clause"], point=m["point"])
        if citation_label(c) == label:
            return c
    return Citation(document=label, source="")


# -- the sources block -------------------------------------------------------------------------------


def _source_lines(numbered: list[tuple[int, str]], unsupported: list[str], indent: str = "") -> list[str]:
    lines = [SOURCES_HEADING, *(f"{indent}[{i}] {label}" for i, label in numbered)] if numbered else []
    if unsupported:
        lines.append(indent + UNSUPPORTED_NOTE.format(", ".join(unsupported)))
    return lines


def _numbered(answer: Answer, *, unquoted_only: bool = False) -> list[tuple[int, str]]:
    out = [(i, citation_label(c)) for i, c in enumerate(answer.citations, 1)]
    return [(i, label) for i, label in out if label not in answer.text] if unquoted_only else out


def sources_block(answer: Answer) -> str:
    """A blank line, the sources heading, then "[1] <citation label>" lines (and a note on Điều the answer named
    that were not retrieved); "" for an answer with neither, such as a refusal."""
    lines = _source_lines(_numbered(answer), answer.unsupported_citations)
    return "\n\n" + "\n".join(lines) if lines else ""


def answer_from_text(text: str) -> Answer:
    """An answer streamed as text with its trailing ``sources_block``, back into an ``Answer`` (mode "remote")."""
    unsupported: list[str] = []
    note = re.escape(UNSUPPORTED_NOTE).replace(re.escape("{}"), "(.+)")
    m = re.search(r"\n" + note + r"\s*$", text)
    if m:
        unsupported = [a.strip() for a in m.group(1).split(",") if a.strip()]
        text = text[:m.start()]
    marker = f"\n{SOURCES_HEADING}\n"
    body, citations = text, []
    cut = text.rfind(marker)
    if cut >= 0:
        body = text[:cut]
        for line in text[cut + len(marker):].splitlines():
            m = re.match(r"^\s*\[\d+\]\s+(.+)$", line)
            if m:
                citations.append(citation_from_label(m.group(1)))
    body = body.strip()
    refused = is_refusal(body)
    return Answer(text=body, refused=refused, citations=[] if refused else citations,
                  unsupported_citations=unsupported, mode="remote")


def terminal_sources(answer: Answer) -> str:
    """What ``rag ask`` and ``rag chat`` print after the answer: a blank line, the sources heading and indented
    "[1] <label>" lines, then the note on Điều not retrieved; "" when there is nothing to list."""
    lines = _source_lines(_numbered(answer), answer.unsupported_citations, indent="  ")
    return ("\n" if answer.citations else "") + "\n".join(lines)


# -- chat messages (OpenAI route, web chat) -------------------------------------------------------------


def message_block(answer: Answer) -> str:
    """The sources heading and "[n] <label>" lines for the citations the answer's text does not already
    quote (an extractive answer quotes them all); "" for a refusal or when nothing is missing. Numbers
    stay those of ``citations``."""
    if answer.refused:
        return ""
    lines = _source_lines(_numbered(answer, unquoted_only=True), [])
    return "\n\n" + "\n".join(lines) if lines else ""


def message_text(answer: Answer) -> str:
    """The whole chat message: the answer, then ``message_block``."""
    return answer.text + message_block(answer)


def citation_dict(citation: Citation) -> dict[str, Any]:
    """A citation's JSON form: every field, None included (the fields of ``rag.types.Citation``)."""
    return asdict(citation)


def sources(answer: Answer) -> list[dict]:
    """One object per citation: its number, its label and the fields of ``Citation``."""
    return [{"index": i, "label": citation_label(c), **citation_dict(c)} for i, c in enumerate(answer.citations, 1)]


# -- JSON ------------------------------------------------------------------------------------------------


def hit_dict(hit: Hit, *, text: bool = True) -> dict[str, Any]:
    """A retrieved passage: rank, score, its text (the header path, then the body) unless ``text`` is
    False, id and citation."""
    out: dict[str, Any] = {"rank": hit.rank, "score": round(hit.score, 6)}
    if text:
        out["text"] = hit.chunk.full_text
    return out | {"id": hit.chunk.id, "citation": citation_dict(hit.chunk.citation())}


def retrieval_dict(result: Any) -> dict[str, Any]:
    """A search result (``rag.retrieve.Retrieval``, a stage above this module): the question, what was
    searched, and the passages with their text."""
    return {"question": result.question, "query": result.query or result.question,
            "hits": [hit_dict(h) for h in result.hits]}


def quote_dict(quote: Any) -> dict[str, Any]:
    """One quoted part of an extractive answer (``rag.extractive.Quote``): where it stands, its text, its
    passage and citation."""
    return {"path": quote.path, "text": quote.text, "chunk_id": quote.chunk_id, "citation": citation_dict(quote.citation)}


def answer_dict(answer: Answer) -> dict[str, Any]:
    """An Answer as a JSON object: the text, refusal, citations, quotes, usage and timings (ms)."""
    return {
        "answer": answer.text,
        "refused": answer.refused,
        "citations": [citation_dict(c) for c in answer.citations],
        "unsupported_citations": list(answer.unsupported_citations),
        "mode": answer.mode,
        "finish_reason": answer.finish_reason,
        "query": answer.query,
        "quotes": [quote_dict(q) for q in answer.quotes],
        "usage": dict(answer.usage),
        "timings": {k: round(v, 2) for k, v in answer.timings.items()},
    }


def answer_json(answer: Answer) -> dict[str, Any]:
    """``answer_dict`` plus ``passages``: every retrieved passage with rank, score, id and citation."""
    return answer_dict(answer) | {"passages": [hit_dict(h, text=False) for h in answer.hits]}


def answer_from_dict(data: Mapping[str, Any]) -> Answer:
    """``answer_dict`` (or ``answer_json``) back into an ``Answer``, without passages."""
    citations = []
    for c in data.get("citations") or []:
        if isinstance(c, Mapping) and c.get("document"):
            fields = {k: c.get(k) for k in CITATION_FIELDS}
            fields["source"] = fields["source"] or ""
            citations.append(Citation(**fields))
    return Answer(
        text=str(data.get("answer") or ""), refused=bool(data.get("refused")), citations=citations,
        usage=dict(data.get("usage") or {}), timings=dict(data.get("timings") or {}),
        unsupported_citations=list(data.get("unsupported_citations") or []),
        mode=str(data.get("mode") or "remote"), finish_reason=data.get("finish_reason"),
        query=data.get("query") if isinstance(data.get("query"), str) else None,
    )


# -- the web chat's sources panel ------------------------------------------------------------------------


@dataclass
class PanelSource:
    number: int | None  # the citation's [n]; None for a passage retrieved but not cited
    label: str
    citation: Citation
    passage: str | None  # the retrieved passage; None when the answer came without passages (a remote backend)
    score: float | None


@dataclass
class SourcesPanel:
    refused: bool
    cited: list[PanelSource]  # the answer's citations, in order (none for a refusal)
    others: list[PanelSource]  # retrieved but not cited; for a refusal, the nearest passages
    unsupported: list[str]  # Điều the answer named that were not retrieved
    footer: str  # timings, tokens and mode, one line


def _key(c: Citation) -> tuple:
    return tuple(citation_dict(c).values())


def _panel_source(n: int | None, c: Citation, hit: Hit | None) -> PanelSource:
    return PanelSource(number=n, label=citation_label(c), citation=c,
                       passage=hit.chunk.full_text if hit is not None else None,
                       score=hit.score if hit is not None else None)


def footer(answer: Answer) -> str:
    """Timings, token counts and the answering mode, as far as the answer has them."""
    bits = []
    t = answer.timings or {}
    for key, template in FOOTER_TIMINGS.items():
        if key in t:
            bits.append(template.format(t[key]))
    u = answer.usage or {}
    if u.get("prompt_tokens") or u.get("completion_tokens"):
        bits.append(FOOTER_TOKENS.format(u.get("prompt_tokens", 0), u.get("completion_tokens", 0)))
    bits.append(FOOTER_MODES.get(answer.mode) or FOOTER_MODE.format(answer.mode))
    return " · ".join(bits)


def sources_panel(answer: Answer) -> SourcesPanel:
    """The cited passages (matched to the retrieved ones by citation), the other retrieved passages, and the footer."""
    retrieved = [(h.chunk.citation(), h) for h in answer.hits]
    if answer.refused:
        return SourcesPanel(True, [], [_panel_source(None, c, h) for c, h in retrieved], [], footer(answer))
    hits: dict[tuple, Hit] = {}
    for c, h in retrieved:
        hits.setdefault(_key(c), h)
    # an extractive quote cites a narrower Khoản than its passage: match it by the quote's chunk id
    by_id = {h.chunk.id: h for h in answer.hits}
    quoted = [by_id.get(q.chunk_id) for q in answer.quotes]
    found = [hits.get(_key(c)) or (quoted[i] if i < len(quoted) else None) for i, c in enumerate(answer.citations)]
    cited = [_panel_source(i, c, h) for i, (c, h) in enumerate(zip(answer.citations, found), 1)]
    used = {_key(c) for c in answer.citations} | {_key(h.chunk.citation()) for h in found if h is not None}
    others = [_panel_source(None, c, h) for c, h in retrieved if _key(c) not in used]
    return SourcesPanel(False, cited, others, list(answer.unsupported_citations), footer(answer))


__all__ = ["citation_label", "citation_from_label", "sources_block", "answer_from_text", "terminal_sources",
           "message_block", "message_text", "sources", "answer_dict", "answer_json", "answer_from_dict", "hit_dict",
           "retrieval_dict", "quote_dict", "sources_panel",
           "SourcesPanel", "PanelSource", "footer"]
