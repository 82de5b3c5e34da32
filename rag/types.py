"""Small dataclasses passed between stages: Page, Document, Chunk, Citation, Hit, Answer.

Out of scope: their text and JSON forms (rag/render.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Page:
    """One page of extracted text. ``number`` is 1-based; non-paged formats use 1."""

    number: int
    text: str
    ocr: bool = False  # text came from OCR, not from a text layer
    label: str | None = None  # the page number printed on the page, when it has one (set by clean_pages)


@dataclass
class Document:
    """A loaded source file: text per page, before chunking."""

    source: str  # path as given (relative to the ingest root when ingesting a folder)
    title: str
    pages: list[Page]
    sha256: str  # of the file bytes; drives incremental ingest and the OCR cache
    kind: str  # "pdf", "docx", "html", "txt", "md", "json"

    @property
    def text(self) -> str:
        return "\n\n".join(p.text for p in self.pages)


@dataclass
class Chunk:
    """A retrievable unit: one Điều, one Khoản of a long Điều, a table, or a paragraph window.

    ``header`` is the path repeated on every piece ("Quy chế đào tạo › Chương II ›
    Điều 10. Cảnh báo học tập › Khoản 2"); ``text`` is the body without it.
    ``id`` is a content hash: the same text at the same place gives the same id.
    """

    id: str
    text: str
    header: str
    document: str
    source: str
    page: int | None = None
    part: str | None = None  # Phần
    chapter: str | None = None  # "Chương II. Tổ chức đào tạo"
    section: str | None = None  # Mục
    article: str | None = None  # "10" (the Điều number as written)
    article_title: str | None = None
    clause: str | None = None  # Khoản number(s), e.g. "2" or "2-3"
    point: str | None = None  # Điểm letter(s)
    kind: str = "article"  # article | clause | table | paragraph | section
    doc_sha256: str = ""
    page_label: str | None = None  # the page number printed on that page ("12"); None: use ``page``
    appendix: str | None = None  # "Phụ lục 2" when the chunk sits in an appendix
    appendix_title: str | None = None
    title: str | None = None  # the document's short title ("Quy chế đào tạo 2025"), from rag.metadata
    audience: str | None = None  # programme levels this passage is for, comma-separated ("thạc sĩ"); None: all

    def citation(self) -> "Citation":
        return Citation(
            document=self.document,
            source=self.source,
            page=self.page,
            chapter=self.chapter,
            article=self.article,
            article_title=self.article_title,
            clause=self.clause,
            point=self.point,
            page_label=self.page_label,
            appendix=self.appendix,
            appendix_title=self.appendix_title,
            title=self.title,
            section=self.section if self.kind == "section" else None,
            part=self.part if self.kind == "section" else None,
        )

    @property
    def full_text(self) -> str:
        """What is embedded and shown: the header path, then the body."""
        return f"{self.header}\n{self.text}" if self.header else self.text


@dataclass
class Citation:
    document: str
    source: str
    page: int | None = None
    chapter: str | None = None
    article: str | None = None
    article_title: str | None = None
    clause: str | None = None
    point: str | None = None
    page_label: str | None = None  # printed page number; ``page`` is the file's page index
    appendix: str | None = None  # "Phụ lục 2"
    appendix_title: str | None = None
    title: str | None = None  # short document title ("Quy chế đào tạo 2025"); None: ``document``
    section: str | None = None  # a document without Điều: its numbered unit ("Mục 2. …")
    part: str | None = None  # … and its lettered part ("Phần A. …")


@dataclass
class Hit:
    chunk: Chunk
    score: float  # fused score used for ranking
    rank: int = 0  # 1-based
    dense: float | None = None  # cosine similarity of the query and the chunk
    lexical: float | None = None  # BM25 score
    rerank: float | None = None  # cross-encoder score when a reranker is configured


@dataclass
class Answer:
    text: str
    refused: bool
    citations: list[Citation]
    hits: list[Hit] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds
    unsupported_citations: list[str] = field(default_factory=list)  # Điều named by the model but not retrieved
    dropped_passages: list[str] = field(default_factory=list)  # chunk ids left out of the prompt for budget
    mode: str = "extractive"  # extractive | llm
    finish_reason: str | None = None  # stop | length | cancelled (LLM answers)
    query: str | None = None  # what was searched: the question, or a follow-up rewritten as a standalone query
    quotes: list[Any] = field(default_factory=list)  # extractive answers: rag.extractive.Quote, in answer order
