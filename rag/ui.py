"""The web chat: a Gradio page over a backend (this machine's pipeline, a Replicate model or a RunPod endpoint).

``rag ui`` calls ``serve()``. The page has two tabs:

- **Hỏi đáp**: streamed answers; the sources of the latest answer beside them
  (document, Điều/Khoản, page, the quoted passage, expandable); a clear "không
  tìm thấy" state; follow-up questions (the conversation travels as history);
  top_k, temperature and max tokens with the limits of ``AskRequest``; example
  questions drawn from the loaded corpus.
- **Chỉ mục**: what the index holds (documents, pages, chunks, embedding model,
  when it was built), and an upload box that ingests files into a separate
  working index — never the deployment's — which the chat can then answer from.

Everything shown comes from documents, models or people, so it is rendered as
text: chat messages are HTML-escaped before the Chatbot (Markdown off) sees
them, and the sources and index panels are built here from escaped strings. A
``<script>`` in a regulation shows as those characters. Gradio's analytics are
off and the page loads nothing from outside the server.

``ChatApp`` holds the callbacks as plain methods (tested without a browser);
``build_blocks`` wires them to Gradio components. Gradio is imported inside
functions only.

Out of scope: authentication (keep the page on 127.0.0.1 or behind your own
proxy; ``--share`` makes it, upload box included, public to anyone with the
link), one working index per visitor, deleting documents from the UI.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import re
import shutil
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

from .config import Settings, default_index_dir
from .errors import Cancelled, InputError, RagError
from .pipeline import Delta, Final
from .request import DEFAULT_MAX_NEW_TOKENS, MAX_TURN_CHARS, TEMPERATURE_RANGE, AskRequest
from .retrieve import REFUSAL
from .types import Answer, Citation, Hit

log = logging.getLogger("rag.ui")

TITLE = "Hỏi đáp quy chế"
WORK_CHOICE = "Chỉ mục làm việc (tệp tải lên, trên máy này)"
HISTORY_TURNS = 8  # earlier messages sent with a follow-up (as `rag chat` does)
MAX_EXAMPLES = 6
GENERIC_TITLES = ("phạm vi điều chỉnh", "giải thích từ ngữ", "hiệu lực", "tổ chức thực hiện", "điều khoản thi hành",
                  "trách nhiệm của", "mục tiêu")
FALLBACK_EXAMPLES = [
    "Điều kiện để được công nhận tốt nghiệp là gì?",
    "Sinh viên bị cảnh báo học tập trong trường hợp nào?",
    "Học bổng khuyến khích học tập được xét như thế nào?",
]
PLACEHOLDER_SOURCES = '<div class="rag-note">Nguồn của câu trả lời sẽ hiện ở đây.</div>'
PENDING_SOURCES = '<div class="rag-note">Đang tìm trong tài liệu…</div>'
CSS = """
#rag-chat span.md, .rag-error, .rag-note { white-space: pre-wrap; }
#rag-sources .rag-source, .rag-index-box { border: 1px solid var(--border-color-primary); border-radius: 8px;
  padding: 8px 10px; margin-bottom: 8px; }
#rag-sources summary { cursor: pointer; font-weight: 600; }
.rag-passage { white-space: pre-wrap; font-size: 0.92em; margin-top: 6px; padding: 6px 8px;
  background: var(--background-fill-secondary); border-radius: 6px; max-height: 320px; overflow: auto; }
.rag-meta, .rag-footer { font-size: 0.85em; color: var(--body-text-color-subdued); }
.rag-refusal, .rag-error { border-left: 4px solid #d97706; padding: 8px 12px; border-radius: 6px;
  background: rgba(217,119,6,0.08); }
.rag-error { border-left-color: #dc2626; background: rgba(220,38,38,0.08); }
.rag-warn { color: #b45309; font-size: 0.9em; }
.rag-index table { border-collapse: collapse; width: 100%; font-size: 0.92em; }
.rag-index th, .rag-index td { border-bottom: 1px solid var(--border-color-primary); padding: 4px 6px;
  text-align: left; }
"""


def e(value: Any) -> str:
    """Escape anything for HTML text or attribute context."""
    return html.escape("" if value is None else str(value), quote=True)


def text_html(text: str) -> str:
    """Plain text as HTML that shows exactly these characters (line breaks are kept by the page's CSS).

    Only ``& < >`` are escaped, the minimum for text content, so the Chatbot's copy
    buttons (which copy the raw value) give back clean text in the common case.
    """
    return html.escape("" if text is None else str(text), quote=False)


def request_limits(settings: Settings) -> dict[str, tuple]:
    """(minimum, maximum, default) of each control — the bounds ``AskRequest.validate`` enforces."""
    d = AskRequest(question="?")
    return {
        "top_k": (1, settings.max_top_k, min(settings.top_k, settings.max_top_k)),
        "max_new_tokens": (1, settings.max_new_tokens_limit, min(DEFAULT_MAX_NEW_TOKENS, settings.max_new_tokens_limit)),
        "temperature": (TEMPERATURE_RANGE[0], TEMPERATURE_RANGE[1], d.temperature),
    }


def default_work_dir() -> Path:
    return default_index_dir().parent / "ui-work"


def new_state() -> dict:
    return {"history": [], "messages": [], "sources": PLACEHOLDER_SOURCES}


# -- rendering (all dynamic text escaped) ------------------------------------------------------------------


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


# -- example questions ------------------------------------------------------------------------------------


def _lower_first(title: str) -> str:
    return title[0].lower() + title[1:] if len(title) > 1 and title[1].islower() else title


def example_questions(index, retriever=None, limit: int = MAX_EXAMPLES) -> list[str]:
    """Questions about articles of the loaded corpus, spread over its documents.

    With a retriever, a question is kept only when it is answered (not refused) and
    its top passage is the article it was made from, so every example works.
    """
    if index is None or not getattr(index, "chunks", None):
        return list(FALLBACK_EXAMPLES)
    per_doc: dict[str, list[tuple[str, str]]] = {}
    for c in index.chunks:
        title = (c.article_title or "").strip()
        if not c.article or not title or any(g in title.lower() for g in GENERIC_TITLES):
            continue
        items = per_doc.setdefault(c.document, [])
        if all(t != title for _, t in items):
            items.append((c.article, title))
    # Spread: articles from a tenth, a quarter, half, three quarters and nine tenths into each
    # document, the documents taken in turn.
    picks: list[list[tuple[str, str]]] = []
    for items in per_doc.values():
        n = len(items)
        order = sorted(set(min(n - 1, int(n * f)) for f in (0.25, 0.5, 0.75, 0.1, 0.9))) if n else []
        picks.append([items[i] for i in order])
    out: list[str] = []
    for rnd in range(max((len(p) for p in picks), default=0)):
        for p in picks:
            if rnd >= len(p) or len(out) >= limit:
                continue
            article, title = p[rnd]
            q = f"Quy định về {_lower_first(title)} như thế nào?"
            if retriever is not None:
                try:
                    r = retriever.search(q, 3)
                except RagError:
                    continue
                if r.refused or not r.hits or r.hits[0].chunk.article != article:
                    continue
            out.append(q)
    return out or list(FALLBACK_EXAMPLES)


# -- the app ----------------------------------------------------------------------------------------------


def _safe_name(name: str) -> str:
    name = Path(name).name
    name = re.sub(r"[\x00-\x1f/\\:*?\"<>|]", "_", name).lstrip(".").strip() or "upload"
    stem, dot, ext = name.rpartition(".")
    return (stem[:100] + dot + ext) if dot else name[:100]


class ChatApp:
    """The page's state and callbacks. One per server; per-visitor state lives in a ``gr.State`` dict."""

    def __init__(self, settings: Settings, backend, *, index=None, embedder=None, retriever=None,
                 work_dir: Path | str | None = None, examples: list[str] | None = None):
        self.settings = settings
        self.backend = backend
        self.index = index
        self._embedder = embedder
        self.work_dir = Path(work_dir) if work_dir else default_work_dir()
        self.limits = request_limits(settings)
        self.examples = examples if examples is not None else example_questions(index, retriever)
        self._lock = threading.Lock()
        self._work_index = None
        self._work_backend = None

    @classmethod
    def create(cls, settings: Settings, backend, *, work_dir=None) -> "ChatApp":
        """Index, embedder and examples from a local backend's pipeline; a remote one may name a local index copy."""
        from .backends import LocalBackend
        from .index import Index

        if isinstance(backend, LocalBackend):
            p = backend.pipeline
            return cls(settings, backend, index=p.index, embedder=p.embedder, retriever=p.retriever, work_dir=work_dir)
        index = None
        if settings.index_dir is not None or settings.chroma_url:
            try:
                index = Index.open(settings)
            except RagError as err:
                log.warning("no local index for the index page: %s", err)
        return cls(settings, backend, index=index, work_dir=work_dir)

    # -- chat -----------------------------------------------------------------------------------------
    def choices(self) -> list[str]:
        return [self.backend.label, WORK_CHOICE]

    def _backend_for(self, choice: str | None):
        if choice != WORK_CHOICE:
            return self.backend
        with self._lock:
            if self._work_backend is None:
                self._work_backend = self._open_work_backend()
            return self._work_backend

    async def respond(self, question: str, state: dict | None, top_k=None, temperature=None, max_new_tokens=None,
                      choice: str | None = None) -> AsyncIterator[tuple[list, dict, str, str]]:
        """Yields (chat messages, state, sources panel, question box) as the answer streams in.

        An async generator on purpose: the backend runs in a thread of its own
        (``streaming.astream``), so Stop — Gradio cancelling this task — acts at once,
        even while a remote backend waits for a cold start, and sets ``cancel``,
        which stops local generation or cancels the remote job. Pieces of text that
        arrive while the page is busy are shown together (``serving.coalesce``).
        """
        from .serving import coalesce
        from .streaming import astream

        state = {**new_state(), **(state or {})}
        state["history"], state["messages"] = list(state["history"]), list(state["messages"])
        question = (question or "").strip()
        if not question:
            yield state["messages"], state, state["sources"], ""
            return
        shown = state["messages"] + [{"role": "user", "content": text_html(question)}]
        lim = self.limits
        data = {"question": question, "history": state["history"][-HISTORY_TURNS:]}
        for name, value in (("top_k", top_k), ("temperature", temperature), ("max_new_tokens", max_new_tokens)):
            value = lim[name][2] if value is None else value
            data[name] = float(value) if name == "temperature" else int(round(float(value)))
        cancel = threading.Event()
        text = ""
        answer = None
        try:
            request = AskRequest.from_dict(data, self.settings)
            yield shown + [{"role": "assistant", "content": "…"}], state, PENDING_SOURCES, ""
            backend = await asyncio.to_thread(self._backend_for, choice)  # may open the working index
            async for event in coalesce(astream(backend, request, cancel)):
                if isinstance(event, Delta):
                    text += event.text
                    yield shown + [{"role": "assistant", "content": text_html(text)}], state, PENDING_SOURCES, ""
                elif isinstance(event, Final):
                    answer = event.answer
            if answer is None:
                raise RagError("the backend ended without an answer.", code="no_answer")
        except Cancelled:
            message = (text + "\n\n" if text else "") + "(Đã dừng. / Stopped.)"
            state["messages"] = shown + [{"role": "assistant", "content": text_html(message)}]
            state["sources"] = PLACEHOLDER_SOURCES
            yield state["messages"], state, state["sources"], ""
            return
        except Exception as err:  # noqa: BLE001 - shown in the chat in plain words, never a traceback
            message = user_message(err)
            state["messages"] = shown + [{"role": "assistant", "content": text_html("⚠️ " + message)}]
            state["sources"] = error_html(message)
            yield state["messages"], state, state["sources"], ""
            return
        finally:
            cancel.set()  # the visitor pressed Stop or left: stop generating, cancel the remote job
        state["messages"] = shown + [{"role": "assistant", "content": text_html(chat_text(answer))}]
        state["history"] = (state["history"] + [
            {"role": "user", "content": question[:MAX_TURN_CHARS]},
            {"role": "assistant", "content": answer.text[:MAX_TURN_CHARS]},
        ])[-2 * HISTORY_TURNS:]
        state["sources"] = sources_html(answer)
        yield state["messages"], state, state["sources"], ""

    def clear(self) -> tuple[list, dict, str, str]:
        state = new_state()
        return [], state, state["sources"], ""

    # -- index page and uploads -----------------------------------------------------------------------
    def index_page(self) -> str:
        if self.index is not None:
            head = "Chỉ mục đang dùng để trả lời" if self.backend.kind == "local" else "Bản sao chỉ mục trên máy này"
            page = index_html(self.index, head)
        else:
            page = note_html("Không có chỉ mục trên máy này.")
        if self.backend.kind != "local":
            page = note_html(f"Câu trả lời đến từ {self.backend.label}; chỉ mục của nó nằm trên máy chủ đó.") + page
        return page

    def work_dirs(self) -> tuple[Path, Path]:
        return self.work_dir / "uploads", self.work_dir / "index"

    def _work_settings(self) -> Settings:
        return self.settings.with_(index_dir=self.work_dirs()[1], chroma_url=None)

    def work_index(self):
        from .index import Index

        with self._lock:
            if self._work_index is None and (self.work_dirs()[1] / "manifest.json").exists():
                self._work_index = Index.open(self._work_settings())
            return self._work_index

    def work_index_page(self) -> str:
        try:
            index = self.work_index()
        except RagError as err:
            return error_html(str(err))
        if index is None:
            return note_html("Chỉ mục làm việc còn trống: tải tệp lên để thử hỏi đáp trên tài liệu mới "
                             "mà không đụng tới chỉ mục chính.")
        return index_html(index, "Chỉ mục làm việc (tệp tải lên)")

    def embedder(self):
        if self._embedder is None:
            from .embed import Embedder

            self._embedder = Embedder.load(self.settings)
        return self._embedder

    def _open_work_backend(self):
        from .backends import LocalBackend
        from .index import Index
        from .pipeline import Pipeline

        if not (self.work_dirs()[1] / "manifest.json").exists():
            raise InputError("Chỉ mục làm việc còn trống: hãy tải tệp lên ở thẻ «Chỉ mục» trước. / "
                             "The working index is empty: upload a file in the «Chỉ mục» tab first.")
        ws = self._work_settings()
        emb = self.embedder()
        main = getattr(self.backend, "pipeline", None)
        pipe = Pipeline(ws, Index.open(ws, emb.spec), emb, generator=getattr(main, "generator", None),
                        reranker=getattr(getattr(main, "retriever", None), "reranker", None))
        backend = LocalBackend(pipe)
        backend.label = WORK_CHOICE
        return backend

    def upload(self, files, progress: Callable[[float, str], None] | None = None) -> Iterator[tuple[str, str]]:
        """Ingest uploaded files into the working index, one at a time; yields (progress log, working index page)."""
        from .ingest import ingest
        from .load import SUPPORTED

        paths = [Path(getattr(f, "name", f)) for f in (files or [])]
        if not paths:
            yield "Chưa chọn tệp nào.", self.work_index_page()
            return
        uploads, index_dir = self.work_dirs()
        uploads.mkdir(parents=True, exist_ok=True)
        limit = self.settings.max_file_mb
        lines: list[str] = []
        accepted: list[Path] = []
        for p in paths:
            name = _safe_name(p.name)
            if p.suffix.lower() not in SUPPORTED:
                lines.append(f"✗ {name}: loại tệp không được hỗ trợ (chỉ nhận {', '.join(sorted(SUPPORTED))}).")
                continue
            size_mb = p.stat().st_size / (1024 * 1024) if p.exists() else 0.0
            if size_mb > limit:
                lines.append(f"✗ {name}: {size_mb:.1f} MB, vượt giới hạn {limit:g} MB mỗi tệp (RAG_MAX_FILE_MB).")
                continue
            dest = uploads / name
            shutil.copyfile(p, dest)
            accepted.append(dest)
        work_settings = self._work_settings()
        for i, dest in enumerate(accepted, 1):
            step = f"({i}/{len(accepted)}) {dest.name}"
            if progress is not None:
                progress((i - 1) / len(accepted), f"Đang nạp {step}")
            yield "\n".join(lines + [f"… đang đọc, chia đoạn và nhúng {step}"]), self.work_index_page()
            try:
                report = ingest([dest], work_settings, directory=index_dir, embedder=self.embedder(), progress=False)
            except RagError as err:
                lines.append(f"✗ {step}: {err}")
                continue
            for f in report.files:
                if f.status in ("failed", "skipped"):
                    lines.append(f"✗ {step}: {f.reason}")
                else:
                    verbs = {"added": "đã thêm", "updated": "đã cập nhật", "unchanged": "không đổi"}
                    verb = verbs.get(f.status, f.status)
                    lines.append(f"✓ {step}: {verb} — {f.pages} trang, {f.chunks} đoạn.")
            with self._lock:  # the next question and the page see the new index
                self._work_index = None
                self._work_backend = None
        if progress is not None:
            progress(1.0, "Xong")
        if accepted:
            lines.append(f"Xong. Chọn «{WORK_CHOICE}» trong «Tùy chọn» của thẻ Hỏi đáp để hỏi trên các tệp này.")
        yield "\n".join(lines), self.work_index_page()


def user_message(err: BaseException) -> str:
    """Plain words for any failure; unexpected ones are logged here and shown without internals."""
    from .serving import public_message

    if isinstance(err, RagError):
        return str(err)
    log.exception("the chat failed to answer", exc_info=err)
    return public_message(err)


# -- Gradio wiring ----------------------------------------------------------------------------------------


def _quiet_gradio() -> None:
    # No telemetry or version checks: the page may serve a university's internal documents.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


def build_blocks(app: ChatApp):
    """The Gradio page for ``app``."""
    _quiet_gradio()
    import gradio as gr

    from .load import SUPPORTED

    lim = app.limits
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        state = gr.State(new_state())
        gr.Markdown(f"## {TITLE}\nCâu trả lời trích dẫn Điều/Khoản của quy chế; nếu tài liệu không nói tới, "
                    "bot trả lời «không tìm thấy».")
        with gr.Tab("Hỏi đáp"):
            with gr.Row():
                with gr.Column(scale=3):
                    chatbot = gr.Chatbot(label="Trò chuyện", elem_id="rag-chat", height=480, render_markdown=False,
                                         sanitize_html=True, latex_delimiters=[], allow_tags=False,
                                         feedback_options=None, group_consecutive_messages=False,
                                         buttons=["copy", "copy_all"])  # no "share": it posts to Hugging Face
                    question = gr.Textbox(placeholder="Nhập câu hỏi về quy chế rồi nhấn Enter…", show_label=False,
                                          elem_id="rag-question", max_length=app.settings.max_question_chars,
                                          autofocus=True)
                    with gr.Row():
                        send = gr.Button("Gửi", variant="primary", elem_id="rag-send")
                        stop = gr.Button("Dừng", elem_id="rag-stop")
                        clear = gr.Button("Cuộc trò chuyện mới", elem_id="rag-clear")
                    gr.Examples(examples=[[q] for q in app.examples], inputs=[question], label="Câu hỏi mẫu")
                with gr.Column(scale=2):
                    sources = gr.HTML(PLACEHOLDER_SOURCES, elem_id="rag-sources", js_on_load=None, padding=True)
            with gr.Accordion("Tùy chọn", open=False):
                choice = gr.Radio(app.choices(), value=app.backend.label, label="Trả lời từ", elem_id="rag-choice")
                top_k = gr.Slider(lim["top_k"][0], lim["top_k"][1], value=lim["top_k"][2], step=1,
                                  label="Số đoạn truy xuất (top_k)", elem_id="rag-top-k")
                temperature = gr.Slider(lim["temperature"][0], lim["temperature"][1], value=lim["temperature"][2],
                                        step=0.05, label="Nhiệt độ (temperature)", elem_id="rag-temperature",
                                        info="0 = ổn định nhất; chỉ có tác dụng khi trả lời bằng LLM.")
                max_new = gr.Slider(lim["max_new_tokens"][0], lim["max_new_tokens"][1],
                                    value=lim["max_new_tokens"][2], step=1, label="Số token tối đa (max_new_tokens)",
                                    elem_id="rag-max-new-tokens", info="Chỉ có tác dụng khi trả lời bằng LLM.")
        with gr.Tab("Chỉ mục"):
            gr.HTML(app.index_page(), elem_id="rag-index", js_on_load=None)
            files = gr.File(label=f"Tải tệp lên ({', '.join(sorted(SUPPORTED))}; tối đa "
                                  f"{app.settings.max_file_mb:g} MB mỗi tệp)",
                            file_count="multiple", file_types=sorted(SUPPORTED), elem_id="rag-upload")
            ingest_btn = gr.Button("Nạp vào chỉ mục làm việc", variant="primary", elem_id="rag-ingest")
            status = gr.Textbox(label="Tiến trình", lines=5, interactive=False, elem_id="rag-ingest-status")
            work = gr.HTML(app.work_index_page(), elem_id="rag-work-index", js_on_load=None)

        def upload(files, progress=gr.Progress()):
            yield from app.upload(files, progress=lambda f, desc: progress(f, desc=desc))

        ins = [question, state, top_k, temperature, max_new, choice]
        outs = [chatbot, state, sources, question]
        ask1 = question.submit(app.respond, ins, outs)
        ask2 = send.click(app.respond, ins, outs)
        stop.click(None, None, None, cancels=[ask1, ask2])
        clear.click(app.clear, None, outs, cancels=[ask1, ask2])
        chatbot.clear(app.clear, None, outs, cancels=[ask1, ask2])  # its trash icon must reset the history too
        ingest_btn.click(upload, [files], [status, work], concurrency_limit=1)
    return demo


def concurrency(backend) -> int:
    """Questions answered at once: one with a local LLM (generation is serialised), more otherwise."""
    if backend.kind == "local":
        return 1 if getattr(backend.pipeline, "generator", None) is not None else 4
    return 8


def launch(app: ChatApp, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           block: bool = True):
    """Start the server; with ``block=False`` return at once (tests) — call ``.close()`` on the result."""
    demo = build_blocks(app)
    demo.queue(default_concurrency_limit=concurrency(app.backend))
    import gradio as gr

    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block, quiet=not block,
                max_file_size=int(app.settings.max_file_mb * 1024 * 1024), ssr_mode=False, mcp_server=False,
                enable_monitoring=False, show_error=False, theme=theme, css=CSS)
    return demo


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
          replicate: str | None = None, runpod: str | None = None, work_dir: str | Path | None = None,
          env=None) -> int:
    """``rag ui``: build the backend (failing now, not at the first question), then serve until interrupted."""
    from .backends import make_backend

    backend = make_backend(settings, replicate=replicate, runpod=runpod, env=env)
    if hasattr(backend, "check"):
        backend.check()
    app = ChatApp.create(settings, backend, work_dir=work_dir)
    launch(app, host=host, port=port, share=share, block=True)
    return 0


__all__ = ["ChatApp", "build_blocks", "launch", "serve", "sources_html", "index_html", "example_questions",
           "request_limits", "chat_text", "text_html", "WORK_CHOICE"]
