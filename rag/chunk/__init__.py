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

The package: ``headings`` finds the structure's headings and keeps the article numbering that
makes sense (pass 1), ``walk`` walks the structure and cuts the pieces (pass 2); this module
turns the pieces into ``Chunk``s with their ids.

Out of scope: tables that a PDF's text layer flattened into plain lines
(they stay as text in their Điều); nested Khoản numbering such as "1.1";
Điều headings that extraction glued to the end of a previous line.
"""

from __future__ import annotations

import hashlib
from collections import Counter

from ..types import Chunk, Document
from .headings import POINT_LETTERS, SEP
from .walk import _Chunker

CHUNKER_VERSION = "2"  # recorded in the index manifest next to NORMALISER_VERSION; bump when output changes


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


__all__ = ["chunk_document", "CHUNKER_VERSION", "SEP", "POINT_LETTERS"]
