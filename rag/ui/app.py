"""The chat page's state and callbacks (``ChatApp``), as plain methods that tests call without a browser."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import threading
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

from ..config import Settings, default_index_dir
from .. import texts as t
from ..errors import Cancelled, InputError, LoadError, RagError, public_message, redact
from ..pipeline import Delta, Final
from ..render import message_text
from ..request import DEFAULT_MAX_NEW_TOKENS, MAX_TURN_CHARS, TEMPERATURE_RANGE, AskRequest
from ..texts import WORK_CHOICE
from .panels import PENDING_SOURCES, PLACEHOLDER_SOURCES, error_html, index_html, note_html, sources_html, text_html

log = logging.getLogger("rag.ui")

HISTORY_TURNS = 8  # earlier messages sent with a follow-up (as `rag chat` does)
MAX_EXAMPLES = 6
GENERIC_TITLES = ("phạm vi điều chỉnh", "giải thích từ ngữ", "hiệu lực", "tổ chức thực hiện", "điều khoản thi hành",
                  "trách nhiệm của", "mục tiêu")


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


# -- example questions ------------------------------------------------------------------------------------


def _lower_first(title: str) -> str:
    return title[0].lower() + title[1:] if len(title) > 1 and title[1].islower() else title


def example_questions(index, retriever=None, limit: int = MAX_EXAMPLES) -> list[str]:
    """Questions about articles of the loaded corpus, spread over its documents.

    With a retriever, a question is kept only when it is answered (not refused) and
    its top passage is the article it was made from, so every example works.
    """
    if index is None or not getattr(index, "chunks", None):
        return list(t.FALLBACK_EXAMPLES)
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
            q = t.EXAMPLE_QUESTION.format(topic=_lower_first(title))
            if retriever is not None:
                try:
                    r = retriever.search(q, 3)
                except RagError:
                    continue
                if r.refused or not r.hits or r.hits[0].chunk.article != article:
                    continue
            out.append(q)
    return out or list(t.FALLBACK_EXAMPLES)


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
        from ..index import Index

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
        (``rag.streaming.astream``), so Stop — Gradio cancelling this task — acts at once,
        even while a remote backend waits for a cold start, and sets ``cancel``,
        which stops local generation or cancels the remote job. Pieces of text that
        arrive while the page is busy are shown together (``coalesce=True``).
        """
        from ..streaming import astream

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
            async for event in astream(backend, request, cancel, coalesce=True):
                if isinstance(event, Delta):
                    text += event.text
                    yield shown + [{"role": "assistant", "content": text_html(text)}], state, PENDING_SOURCES, ""
                elif isinstance(event, Final):
                    answer = event.answer
            if answer is None:
                raise RagError("the backend ended without an answer.", code="no_answer")
        except Cancelled:
            message = (text + "\n\n" if text else "") + t.STOPPED
            state["messages"] = shown + [{"role": "assistant", "content": text_html(message)}]
            state["sources"] = PLACEHOLDER_SOURCES
            yield state["messages"], state, state["sources"], ""
            return
        except Exception as err:  # noqa: BLE001 - shown in the chat in plain words, never a traceback
            message = user_message(err)
            state["messages"] = shown + [{"role": "assistant", "content": text_html(t.ERROR_MARK + message)}]
            state["sources"] = error_html(message)
            yield state["messages"], state, state["sources"], ""
            return
        finally:
            cancel.set()  # the visitor pressed Stop or left: stop generating, cancel the remote job
        state["messages"] = shown + [{"role": "assistant", "content": text_html(message_text(answer))}]
        state["history"] = (state["history"] + [
            {"role": "user", "content": question[:MAX_TURN_CHARS]},
            {"role": "assistant", "content": answer.text[:MAX_TURN_CHARS]},
        ])[-2 * HISTORY_TURNS:]
        state["sources"] = sources_html(answer, question)
        yield state["messages"], state, state["sources"], ""

    def clear(self) -> tuple[list, dict, str, str]:
        state = new_state()
        return [], state, state["sources"], ""

    # -- index page and uploads -----------------------------------------------------------------------
    def index_page(self) -> str:
        if self.index is not None:
            head = t.INDEX_IN_USE if self.backend.kind == "local" else t.INDEX_LOCAL_COPY
            page = index_html(self.index, head)
        else:
            page = note_html(t.INDEX_NONE)
        if self.backend.kind != "local":
            page = note_html(t.INDEX_REMOTE.format(self.backend.label)) + page
        return page

    def work_dirs(self) -> tuple[Path, Path]:
        return self.work_dir / "uploads", self.work_dir / "index"

    def _work_settings(self) -> Settings:
        return self.settings.with_(index_dir=self.work_dirs()[1], chroma_url=None)

    def work_index(self):
        from ..index import Index

        with self._lock:
            if self._work_index is None and (self.work_dirs()[1] / "manifest.json").exists():
                self._work_index = Index.open(self._work_settings())
            return self._work_index

    def work_index_page(self) -> str:
        try:
            index = self.work_index()
        except RagError as err:
            return error_html(user_message(err))
        if index is None:
            return note_html(t.WORK_INDEX_EMPTY)
        return index_html(index, t.WORK_INDEX)

    def embedder(self):
        if self._embedder is None:
            from ..embed import Embedder

            self._embedder = Embedder.load(self.settings)
        return self._embedder

    def _open_work_backend(self):
        from .backends import LocalBackend
        from ..index import Index
        from ..pipeline import Pipeline

        if not (self.work_dirs()[1] / "manifest.json").exists():
            raise InputError(t.WORK_INDEX_EMPTY_ERROR)
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
        from ..ingest import ingest
        from ..load import SUPPORTED
        from ..load.registry import check_file
        from ..load.safe import size_limit

        paths = [Path(getattr(f, "name", f)) for f in (files or [])]
        if not paths:
            yield t.UPLOAD_NONE, self.work_index_page()
            return
        uploads, index_dir = self.work_dirs()
        uploads.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        accepted: list[Path] = []
        for p in paths:
            name = _safe_name(p.name)
            if p.suffix.lower() not in SUPPORTED:
                lines.append(t.UPLOAD_BAD_TYPE.format(name=name, types=", ".join(sorted(SUPPORTED))))
                continue
            try:  # the loader's own checks (size per format, a DOCX's expanded size), before anything is copied
                check_file(p, self.settings, name)
            except LoadError as err:
                limit, setting = size_limit(self.settings, p.suffix)
                size_mb = p.stat().st_size / (1024 * 1024) if p.exists() else 0.0
                lines.append(t.UPLOAD_TOO_LARGE.format(name=name, size_mb=size_mb, limit=limit, setting=setting)
                             if err.code == "file_too_large" and size_mb > limit
                             else t.UPLOAD_FAILED.format(step=name, reason=redact(str(err))))
                continue
            dest = uploads / name
            shutil.copyfile(p, dest)
            accepted.append(dest)
        work_settings = self._work_settings()
        for i, dest in enumerate(accepted, 1):
            step = f"({i}/{len(accepted)}) {dest.name}"
            if progress is not None:
                progress((i - 1) / len(accepted), t.UPLOAD_LOADING.format(step))
            yield "\n".join(lines + [t.UPLOAD_READING.format(step)]), self.work_index_page()
            try:
                report = ingest([dest], work_settings, directory=index_dir, embedder=self.embedder(), progress=False)
            except Exception as err:  # noqa: BLE001 - the reason is shown, never a bare "Error"
                lines.append(t.UPLOAD_FAILED.format(step=step, reason=user_message(err)))
                continue
            for f in report.files:
                if f.status in ("failed", "skipped"):
                    lines.append(t.UPLOAD_FAILED.format(step=step, reason=redact(f.reason)))
                else:
                    status = t.UPLOAD_STATUS.get(f.status, f.status)
                    lines.append(t.UPLOAD_DONE_FILE.format(step=step, status=status, pages=f.pages, chunks=f.chunks))
                lines.extend(t.UPLOAD_PARTLY.format(step=step, note=redact(note)) for note in f.notes)
            with self._lock:  # the next question and the page see the new index
                self._work_index = None
                self._work_backend = None
        if progress is not None:
            progress(1.0, t.UPLOAD_FINISHED)
        if accepted:
            lines.append(t.UPLOAD_DONE.format(WORK_CHOICE))
        yield "\n".join(lines), self.work_index_page()


def user_message(err: BaseException) -> str:
    """Plain words for any failure (``rag.errors``' policy); unexpected ones are logged here, shown without internals."""
    if isinstance(err, InputError) and err.code == "invalid_input":  # the student's own question or setting
        reason = redact(str(err)).replace("'question'", "the question")
        return f"{t.INPUT_ERROR}. / {reason}"
    if isinstance(err, RagError):  # said by this program, or by a remote backend in plain words
        return redact(str(err))
    log.exception("the chat failed to answer", exc_info=err)
    return public_message(err)
