"""The HTML of the chat page's panels: sources of an answer, errors, index contents. All dynamic text escaped.

Everything shown comes from documents, models or people, so it is rendered as
text: a ``<script>`` in a regulation shows as those characters.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

from ..retrieve import REFUSAL
from ..types import Answer, Citation, Hit

PLACEHOLDER_SOURCES = '<div class="rag-note">Nguồn của câu trả lời sẽ hiện ở đây.</div>'
PENDING_SOURCES = '<div class="rag-note">Đang tìm trong tài liệu…</div>'


def e(value: Any) -> str:
    """Escape anything for HTML text or attribute context."""
    return html.escape("" if value is None else str(value), quote=True)


def text_html(text: str) -> str:
    """Plain text as HTML that shows exactly these characters (line breaks are kept by the page's CSS).

    Only ``& < >`` are escaped, the minimum for text content, so the Chatbot's copy
    buttons (which copy the raw value) give back clean text in the common case.
    """
    return html.escape("" if text is None else str(text), quote=False)


def _key(c: Citation) -> tuple:
    return tuple(c.to_dict().values())


def _meta(c: Citation, hit: Hit | None) -> str:
    parts = [f"Tài liệu: {e(c.document)}"]
    if c.source:
        parts.append(f"Tệp: {e(c.source)}")
    if c.page:
        parts.append(f"Trang: {e(c.page)}")
    if c.chapter:
        parts.append(f"{e(c.chapter)}")
    if hit is not None:
        parts.append(f"Điểm truy xuất: {hit.score:.4f}")
    return '<div class="rag-meta">' + " · ".join(parts) + "</div>"


def _source_block(n: int | None, c: Citation, hit: Hit | None, *, open_: bool) -> str:
    label = (f"[{n}] " if n else "") + c.label()
    passage = (f'<div class="rag-passage">{e(hit.chunk.full_text)}</div>' if hit is not None
               else '<div class="rag-meta">(Máy chủ không gửi kèm đoạn trích.)</div>')
    return (f'<details class="rag-source"{" open" if open_ else ""}><summary>{e(label)}</summary>'
            f"{_meta(c, hit)}{passage}</details>")


def _footer(answer: Answer) -> str:
    bits = []
    t = answer.timings or {}
    if "retrieve_ms" in t:
        bits.append(f"truy xuất {t['retrieve_ms']:.0f} ms")
    if "first_token_ms" in t:
        bits.append(f"token đầu {t['first_token_ms']:.0f} ms")
    if "total_ms" in t:
        bits.append(f"tổng {t['total_ms']:.0f} ms")
    u = answer.usage or {}
    if u.get("prompt_tokens") or u.get("completion_tokens"):
        bits.append(f"token vào/ra {u.get('prompt_tokens', 0)}/{u.get('completion_tokens', 0)}")
    modes = {"extractive": "chế độ trích dẫn", "llm": "chế độ LLM", "remote": "trả lời từ máy chủ từ xa"}
    bits.append(modes.get(answer.mode, f"chế độ {answer.mode}"))
    return '<div class="rag-footer">' + e(" · ".join(bits)) + "</div>"


def sources_html(answer: Answer) -> str:
    """The sources panel for one answer: cited passages open, other retrieved passages folded."""
    hits = {}
    for h in answer.hits:
        hits.setdefault(_key(h.chunk.citation()), h)
    out = ['<div class="rag-sources">']
    if answer.refused:
        out.append(f'<div class="rag-refusal"><strong>{e(REFUSAL)}</strong><br>'
                   "Không có đoạn nào trong tài liệu đủ liên quan để trả lời. Hãy hỏi cụ thể hơn (tên quy chế, "
                   "học kỳ, loại học bổng…) hoặc kiểm tra ở thẻ «Chỉ mục» xem tài liệu đã được nạp chưa.</div>")
        if answer.hits:
            out.append(f"<details><summary>Các đoạn gần nhất, không đủ liên quan ({len(answer.hits)})</summary>")
            out += [_source_block(None, h.chunk.citation(), h, open_=False) for h in answer.hits]
            out.append("</details>")
    else:
        out.append(f"<h4>Nguồn ({len(answer.citations)})</h4>")
        used = set()
        for i, c in enumerate(answer.citations, 1):
            hit = hits.get(_key(c))
            used.add(_key(c))
            out.append(_source_block(i, c, hit, open_=i == 1))
        if answer.unsupported_citations:
            out.append('<div class="rag-warn">Câu trả lời nhắc tới ' + e(", ".join(answer.unsupported_citations))
                       + " nhưng không có trong các đoạn được truy xuất — hãy đối chiếu với văn bản gốc.</div>")
        others = [h for h in answer.hits if _key(h.chunk.citation()) not in used]
        if others:
            out.append(f"<details><summary>Các đoạn khác được truy xuất ({len(others)})</summary>")
            out += [_source_block(None, h.chunk.citation(), h, open_=False) for h in others]
            out.append("</details>")
    out.append(_footer(answer))
    out.append("</div>")
    return "".join(out)


def error_html(message: str) -> str:
    return f'<div class="rag-error"><strong>Không trả lời được.</strong><br>{text_html(message)}</div>'


def chat_text(answer: Answer) -> str:
    """What the chat bubble says: the answer, plus its sources when the text does not already name them."""
    missing = [c for c in answer.citations if c.label() not in answer.text]
    if answer.refused or not missing:
        return answer.text
    return answer.text + "\n\nNguồn:\n" + "\n".join(f"[{i}] {c.label()}" for i, c in enumerate(answer.citations, 1))


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
    return (
        f'<div class="rag-index rag-index-box"><h4>{e(heading)}</h4>'
        f"<p><b>{e(m.document_count)}</b> tài liệu · <b>{e(m.page_count)}</b> trang · <b>{e(m.chunk_count)}</b> đoạn"
        f" · mô hình nhúng <code>{e(m.embed_model)}</code> ({e(m.embed_dimension)} chiều)<br>"
        f"Xây dựng: {e(_when(m.created_at))} · cập nhật: {e(_when(m.updated_at))}"
        f" · vị trí: <code>{e(index.location)}</code></p>"
        "<table><thead><tr><th>Tài liệu</th><th>Tệp</th><th>Loại</th><th>Trang</th><th>Đoạn</th><th>Trang OCR</th>"
        f"</tr></thead><tbody>{rows}</tbody></table></div>"
    )


def note_html(text: str) -> str:
    return f'<div class="rag-note rag-index-box">{text_html(text)}</div>'
