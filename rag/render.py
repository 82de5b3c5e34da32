"""Answer rendering shared by the wrappers: the human "Nguồn:" block and the machine-readable JSON.

``sources_block`` is what a text client shows after the streamed answer (the Cog
runner appends it to its output); ``answer_json`` is ``Answer.to_dict()`` plus the
retrieved passages with their ranks and scores, for API clients that want
structured citations. Out of scope: HTML/Markdown rendering for a web UI.
"""

from __future__ import annotations

from typing import Any

from .types import Answer

SOURCES_HEADING = "Nguồn:"
UNSUPPORTED_NOTE = "(không có trong tài liệu được truy xuất: {})"


def sources_block(answer: Answer) -> str:
    """The block appended after a cited answer: a blank line, "Nguồn:", then "[1] <citation label>" lines
    (and a note on Điều the answer named that were not retrieved); "" for a refusal."""
    lines = []
    if answer.citations:
        lines.append(SOURCES_HEADING)
        lines += [f"[{i}] {c.label()}" for i, c in enumerate(answer.citations, 1)]
    if answer.unsupported_citations:
        lines.append(UNSUPPORTED_NOTE.format(", ".join(answer.unsupported_citations)))
    return "\n\n" + "\n".join(lines) if lines else ""


def answer_json(answer: Answer) -> dict[str, Any]:
    """``Answer.to_dict()`` plus ``passages``: every retrieved passage with rank, score, id and citation."""
    out = answer.to_dict()
    out["passages"] = [
        {"rank": h.rank, "score": round(h.score, 6), "id": h.chunk.id, "citation": h.chunk.citation().to_dict()}
        for h in answer.hits
    ]
    return out
