"""The HTML of the chat page's panels: sources of an answer, errors, index contents. All dynamic text escaped.

Everything shown comes from documents, models or people, so it is rendered as
text: a ``<script>`` in a regulation shows as those characters.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

from .. import texts as t
from ..render import PanelSource, sources_panel
from ..types import Answer

PLACEHOLDER_SOURCES = f'<div class="rag-note">{html.escape(t.SOURCES_PLACEHOLDER)}</div>'
PENDING_SOURCES = f'<div class="rag-note">{html.escape(t.SOURCES_PENDING)}</div>'


def e(value: Any) -> str:
    """Escape anything for HTML text or attribute context."""
    return html.escape("" if value is None else str(value), quote=True)


def text_html(text: str) -> str:
    """Plain text as HTML that shows exactly these characters (line breaks are kept by the page's CSS).

    Only ``& < >`` are escaped, the minimum for text content, so the Chatbot's copy
    buttons (which copy the raw value) give back clean text in the common case.
    """
    return html.escape("" if text is None else str(text), quote=False)


def _meta(s: PanelSource) -> str:
    c = s.citation
    parts = [e(t.PANEL_DOCUMENT.format(c.document))]
    if c.source:
        parts.append(e(t.PANEL_FILE.format(c.source)))
    if c.page:
        parts.append(e(t.PANEL_PAGE.format(c.page)))
    if c.chapter:
        parts.append(e(c.chapter))
    if s.score is not None:
        parts.append(e(t.PANEL_SCORE.format(s.score)))
    return '<div class="rag-meta">' + " · ".join(parts) + "</div>"


def _source_html(s: PanelSource, *, open_: bool) -> str:
    label = (f"[{s.number}] " if s.number else "") + s.label
    passage = (f'<div class="rag-passage">{e(s.passage)}</div>' if s.passage is not None
               else f'<div class="rag-meta">{e(t.PANEL_NO_PASSAGE)}</div>')
    return (f'<details class="rag-source"{" open" if open_ else ""}><summary>{e(label)}</summary>'
            f"{_meta(s)}{passage}</details>")


def _folded(summary: str, sources: list[PanelSource]) -> list[str]:
    if not sources:
        return []
    return [f"<details><summary>{e(summary.format(len(sources)))}</summary>",
            *(_source_html(s, open_=False) for s in sources), "</details>"]


def sources_html(answer: Answer, question: str | None = None) -> str:
    """The sources panel for one answer (``rag.render.sources_panel``): cited passages open, others folded; with
    ``question``, the query searched when it differs (a follow-up rewritten from the conversation)."""
    from ..normalise import normalise_text

    panel = sources_panel(answer)
    out = ['<div class="rag-sources">']
    if question and answer.query and normalise_text(answer.query).strip() != normalise_text(question).strip():
        out.append(f'<div class="rag-query">{e(t.CHAT_QUERY_USED.format(answer.query))}</div>')
    if panel.refused:
        out.append(f'<div class="rag-refusal"><strong>{e(t.REFUSAL)}</strong><br>{e(t.PANEL_REFUSAL_HINT)}</div>')
        out += _folded(t.PANEL_NEAREST, panel.others)
    else:
        out.append(f"<h4>{e(t.PANEL_SOURCES.format(len(panel.cited)))}</h4>")
        out += [_source_html(s, open_=s.number == 1) for s in panel.cited]
        if panel.unsupported:
            out.append(f'<div class="rag-warn">{e(t.PANEL_UNSUPPORTED).format(e(", ".join(panel.unsupported)))}</div>')
        out += _folded(t.PANEL_OTHERS, panel.others)
    out.append(f'<div class="rag-footer">{e(panel.footer)}</div>')
    out.append("</div>")
    return "".join(out)


def error_html(message: str) -> str:
    return f'<div class="rag-error"><strong>{e(t.PANEL_ERROR)}</strong><br>{text_html(message)}</div>'


def _when(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M %Z").strip()
    except (TypeError, ValueError):
        return str(iso)


def index_html(index, heading: str) -> str:
    """What an index holds: counts, embedding model, build times and one row per document."""
    m = index.manifest
    rows = "".join(
        f"<tr><td>{e(meta.get('title') or '')}</td><td>{e(src)}</td><td>{e(meta.get('kind') or '')}</td>"
        f"<td>{e(meta.get('pages', ''))}</td><td>{e(meta.get('chunks', ''))}</td>"
        f"<td>{e(meta.get('ocr_pages', 0))}</td></tr>"
        for src, meta in sorted(m.files.items())
    )
    summary = e(t.INDEX_SUMMARY).format(
        documents=f"<b>{e(m.document_count)}</b>", pages=f"<b>{e(m.page_count)}</b>",
        chunks=f"<b>{e(m.chunk_count)}</b>", model=f"<code>{e(m.embed_model)}</code>", dimension=e(m.embed_dimension))
    built = e(t.INDEX_BUILT).format(created=e(_when(m.created_at)), updated=e(_when(m.updated_at)),
                                    location=f"<code>{e(index.location)}</code>")
    heads = "".join(f"<th>{e(h)}</th>" for h in t.INDEX_COLUMNS)
    return (f'<div class="rag-index rag-index-box"><h4>{e(heading)}</h4><p>{summary}<br>{built}</p>'
            f"<table><thead><tr>{heads}</tr></thead><tbody>{rows}</tbody></table></div>")


def note_html(text: str) -> str:
    return f'<div class="rag-note rag-index-box">{text_html(text)}</div>'
