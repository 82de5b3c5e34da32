"""The pipeline: one request in, one Answer (or a stream of events) out.

``Pipeline.from_settings(settings)`` does all heavy loading (embedder, index,
reranker, LLM and adapter) once; the CLI command, the Cog runner's ``setup()``
and the RunPod worker call it and then only translate I/O. ``answer()`` and
``stream()`` retrieve, gate on relevance (refusing before any LLM is called),
then answer extractively or with the LLM — with the startup adapter, or with a
per-request LoRA adapter (``adapter=``, a local directory; ``rag.generate``
loads, checks and activates it).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

from .config import Settings
from .embed import Embedder, EmbedSpec
from .errors import ConfigError, RagError
from .extractive import extractive_answer
from .index import Index
from .request import AskRequest
from .retrieve import Retrieval, Retriever
from .texts import DEMO_NOTICE, is_refusal
from .types import Answer, Citation, Hit


@dataclass
class Delta:
    """A piece of answer text, in order."""

    text: str


@dataclass
class Final:
    """The last event of a stream: the whole answer with citations, usage and timings."""

    answer: Answer


Event = Union[Delta, Final]

_ARTICLE_REF = re.compile(r"Điều\s+(\d+[a-zđ]?)", re.IGNORECASE)


class Pipeline:
    def __init__(self, settings: Settings, index: Index, embedder: Embedder, generator=None, reranker=None):
        self.settings = settings
        self.index = index
        self.embedder = embedder
        self.generator = generator
        self.retriever = Retriever(index, embedder, settings, reranker)
        self.demo = False  # answering from the bundled demo regulations (nothing configured)

    @classmethod
    def from_settings(cls, settings: Settings, *, index_dir: Path | None = None, embedder: Embedder | None = None,
                      generator=None, load_llm: bool = True, progress: bool = False) -> "Pipeline":
        """Load everything a deployment needs; a missing or mismatched piece raises a RagError saying what to set.

        With no index configured at all, the bundled demo regulations are indexed on first use, and every
        answer then says it comes from the demo university (``DEMO_NOTICE``). A configured index that is
        missing is an error saying how to build it (``Index.open``), never a silent fall back to the demo.
        """
        from .ingest import demo_sources, ensure_demo_index

        if index_dir is not None:
            settings = settings.with_(index_dir=Path(index_dir))
        unconfigured = settings.index_dir is None and not settings.chroma_url
        if unconfigured:
            if not (settings.resolved_index_dir() / "manifest.json").exists():
                embedder = embedder or Embedder.load(settings)
            ensure_demo_index(settings, embedder=embedder, progress=progress)
        # The index is opened (and checked against the embedder settings) before the embedding
        # model is loaded, so a mismatched or missing index fails setup in seconds, not after
        # the model loads.
        index = Index.open(settings, embedder.spec if embedder else EmbedSpec.from_settings(settings))
        embedder = embedder or Embedder.load(settings)
        reranker = Retriever.load_reranker(settings)
        if generator is None and load_llm and settings.llm:
            from .generate import Generator

            generator = Generator.load(settings)
        pipe = cls(settings, index, embedder, generator, reranker)
        pipe.demo = unconfigured and set(index.manifest.files) <= demo_sources()
        return pipe

    # -- retrieval only ---------------------------------------------------------------------------
    def search(self, question: str, top_k: int | None = None) -> Retrieval:
        req = AskRequest(question=question, top_k=top_k).validate(self.settings)
        return self.retriever.search(req.question, req.top_k)

    # -- answers ----------------------------------------------------------------------------------
    def answer(self, request: AskRequest | dict, cancel: threading.Event | None = None,
               adapter: str | None = None) -> Answer:
        final = None
        for event in self.stream(request, cancel=cancel, adapter=adapter):
            if isinstance(event, Final):
                final = event.answer
        assert final is not None
        return final

    def stream(self, request: AskRequest | dict, cancel: threading.Event | None = None,
               adapter: str | None = None) -> Iterator[Event]:
        """``adapter``: a local LoRA adapter directory to answer this request with (None: the startup
        adapter, or the bare base model when there is none)."""
        req = request if isinstance(request, AskRequest) else AskRequest.from_dict(request, self.settings)
        req.validate(self.settings)
        if adapter is not None:
            if self.generator is None:
                raise ConfigError("a per-request adapter needs an LLM, but this pipeline answers extractively: "
                                  "set RAG_LLM.")
            self.generator.check_adapter(adapter)  # a bad adapter fails every request, refused or not
        t0 = time.perf_counter()
        retrieval = self._retrieve(req)
        timings = dict(retrieval.timings)
        if retrieval.refused or self.generator is None:
            answer = extractive_answer(retrieval)
            if self.demo:
                answer.text += "\n\n" + DEMO_NOTICE
            answer.timings = {**timings, "total_ms": (time.perf_counter() - t0) * 1000}
            yield Delta(answer.text)
            yield Final(answer)
            return
        for event in self._generate(req, retrieval, timings, t0, cancel, adapter):
            if isinstance(event, Final) and self.demo:
                yield Delta("\n\n" + DEMO_NOTICE)
                event.answer.text += "\n\n" + DEMO_NOTICE
            yield event

    def _generate(self, req: AskRequest, retrieval: Retrieval, timings: dict, t0: float,
                  cancel: threading.Event | None, adapter: str | None = None) -> Iterator[Event]:
        from .prompt import build_prompt, passages_from_hits

        gen = self.generator
        built = build_prompt(
            gen.tokenizer, question=req.question, passages=passages_from_hits(retrieval.hits),
            history=req.history, system_prompt=req.system_prompt or self.settings.system_prompt,
            context_tokens=gen.context_tokens, max_new_tokens=req.max_new_tokens,
        )
        used_ids = {p.id for p in built.used}
        used_hits = [h for h in retrieval.hits if h.chunk.id in used_ids]
        # adapter= only when asked for, so an injected generator without per-request adapters still works
        run = gen.stream(built.text, req, cancel=cancel, **({"adapter": adapter} if adapter is not None else {}))
        pieces: list[str] = []
        for delta in run:
            pieces.append(delta)
            yield Delta(delta)
        text = "".join(pieces).strip()
        citations, unsupported = cite(text, used_hits)
        refused = is_refusal(text)
        usage = dict(getattr(run, "usage", {}) or {})
        gen_timings = dict(getattr(run, "timings", {}) or {})
        if "first_token_ms" in gen_timings:
            gen_timings["first_token_ms"] += timings.get("retrieve_ms", 0.0)
        answer = Answer(
            text=text, refused=refused, citations=[] if refused else citations, hits=retrieval.hits, usage=usage,
            query=retrieval.query,
            timings={**timings, **gen_timings, "total_ms": (time.perf_counter() - t0) * 1000},
            unsupported_citations=unsupported, dropped_passages=[p.id for p in built.dropped], mode="llm",
            finish_reason=getattr(run, "finish_reason", None),
        )
        yield Final(answer)

    def _retrieve(self, req: AskRequest) -> Retrieval:
        """Retrieve for the request; a follow-up is first made a standalone query — by the LLM when one is
        configured (falling back to the rule of ``rag.followup`` when its rewrite is unusable), else by the rule."""
        from .followup import is_followup

        if self.generator is not None and is_followup(req.question, req.history):
            query = self._llm_query(req)
            if query:
                return self.retriever.search(req.question, req.top_k, query=query)
        return self.retriever.search_in_conversation(req.question, req.history, req.top_k)

    def _llm_query(self, req: AskRequest) -> str | None:
        from .prompt import REWRITE_SYSTEM_PROMPT, build_prompt

        gen = self.generator
        try:
            built = build_prompt(gen.tokenizer, question=req.question, passages=[], history=req.history,
                                 system_prompt=REWRITE_SYSTEM_PROMPT, context_tokens=gen.context_tokens,
                                 max_new_tokens=64)
            rewrite_req = AskRequest(question=req.question, max_new_tokens=64, temperature=0.0).validate(
                self.settings)
            text = gen.stream(built.text, rewrite_req).read()
        except RagError:
            return None
        line = next((ln.strip(" \"'«»") for ln in text.splitlines() if ln.strip()), "")
        return line if 5 <= len(line) <= 300 else None

    def full_text(self, chunk_id: str) -> tuple[str, str]:
        """The whole Điều (or appendix, or section) a passage belongs to: its heading path and its text,
        every piece of a long Điều joined in order — what `rag ask --full` and the web chat's
        "toàn văn" block show."""
        from .render import structure_path

        i = self.index.by_id[chunk_id]
        c = self.index.chunks[i]
        key = (c.source, c.article, c.appendix, c.section if c.kind == "section" else None)
        parts = [x for x in self.index.chunks if x.source == c.source and
                 (x.source, x.article, x.appendix, x.section if x.kind == "section" else None) == key]
        if not (c.article or c.appendix or c.kind == "section"):
            parts = [c]
        text = "\n".join(dict.fromkeys(p.text for p in parts))
        cite = c.citation()
        cite.clause = cite.point = None
        cite.part = None
        return structure_path(cite), text

    def warmup(self) -> None:
        """A tiny end-to-end pass so the first real request is not the one that pays for lazy loading."""
        self.retriever.search("điều kiện tốt nghiệp", 1)
        if self.generator is not None:
            self.generator.warmup()


def cite(text: str, used: list[Hit]) -> tuple[list[Citation], list[str]]:
    """Citations are only ever of passages the model was given.

    The Điều the answer names are matched against those passages; one it names that
    was not retrieved is returned as unsupported, never as a source. An answer that
    names no Điều cites the passages it was given.
    """
    named = [m.group(1).lower() for m in _ARTICLE_REF.finditer(text)]
    by_article: dict[str, list[Hit]] = {}
    for h in used:
        if h.chunk.article:
            by_article.setdefault(h.chunk.article.lower(), []).append(h)
    cited: list[Hit] = []
    unsupported: list[str] = []
    for a in dict.fromkeys(named):
        if a in by_article:
            cited.extend(h for h in by_article[a] if h not in cited)
        else:
            unsupported.append(f"Điều {a}")
    if not named:
        cited = list(used)
    return [h.chunk.citation() for h in cited], unsupported


__all__ = ["Pipeline", "Delta", "Final", "Event", "cite", "RagError"]
