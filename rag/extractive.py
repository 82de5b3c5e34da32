"""The extractive answerer: the default when no LLM is configured.

It quotes the best passage(s) with their citations; it never paraphrases, so it
cannot invent. Out of scope: sentence-level answer extraction (a trained reader).
"""

from __future__ import annotations

import re

from .retrieve import Retrieval
from .render import citation_label
from .texts import REFUSAL
from .types import Answer, Hit

MAX_QUOTE_CHARS = 1200
MAX_PASSAGES = 2


def _trim(text: str, limit: int = MAX_QUOTE_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    m = max(cut.rfind(". "), cut.rfind(".\n"), cut.rfind(";\n"), cut.rfind("\n"))
    return (cut[: m + 1] if m > limit // 2 else cut.rsplit(" ", 1)[0]).rstrip() + " …"


def _strip_header(hit: Hit) -> str:
    # The body repeats its own heading line ("Điều 10. …"); the citation label already says it.
    body = hit.chunk.text.strip()
    return re.sub(r"^Điều\s+\d+[a-zđ]?\s*[.:]\s*[^\n]*\n", "", body, count=1).strip() or body


def extractive_answer(retrieval: Retrieval) -> Answer:
    if retrieval.refused or not retrieval.hits:
        return Answer(text=REFUSAL, refused=True, citations=[], hits=retrieval.hits, mode="extractive")
    best = retrieval.hits[0]
    chosen = [best]
    for h in retrieval.hits[1:MAX_PASSAGES]:
        # A second passage only when it is nearly as good and from another article.
        if h.chunk.article != best.chunk.article and h.score >= 0.8 * best.score:
            chosen.append(h)
    parts = ["Theo tài liệu, các quy định liên quan là:"]
    for i, h in enumerate(chosen, 1):
        parts.append(f"[{i}] {citation_label(h.chunk.citation())}:\n«{_trim(_strip_header(h))}»")
    return Answer(
        text="\n\n".join(parts),
        refused=False,
        citations=[h.chunk.citation() for h in chosen],
        hits=retrieval.hits,
        mode="extractive",
    )
