"""Retrieval: dense + BM25 fused (score fusion by default, reciprocal rank fusion on request),
an optional cross-encoder, a relevance gate.

The gate decides "không tìm thấy" before any LLM is called. Its score, in [0, 1]:

- with a reranker: the sigmoid of the best cross-encoder score;
- without: 0.7 × lexical coverage + 0.3 × dense cosine of the best of the first
  three hits, where lexical coverage is the IDF-weighted share of the question's
  content words (word-segmented, question words such as "bao nhiêu", "em",
  "được không" removed) that occur in the passage. A word the corpus has never
  seen weighs the most, so "thủ tục làm hộ chiếu" finds nothing to cover it.

Fused scores are relative to the query (RRF's are rank-based), so they are not
used for the gate.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .config import Settings
from .embed import Embedder
from .index import Index
from .types import Hit

RRF_K = 60
# Words that carry the question's form, not its topic (word-segmented forms, lower case).
QUESTION_WORDS = frozenset("""
em anh chị mình tôi tớ bạn cho hỏi xin ạ à ạ_ơi vậy thế nhỉ nhé không có được là thì mà bị và hay hoặc
của các những một này đó kia gì nào sao bao_nhiêu bao_lâu bao_giờ khi_nào ở_đâu đâu như_thế_nào thế_nào
làm_sao tại_sao vì_sao có_phải phải muốn cần nếu thì sẽ đã đang rồi nữa luôn với cho_em cho_mình
trường quy_định quy_chế theo về trong ra vào lên để thế_nào_là ai
""".split())


@dataclass
class Retrieval:
    question: str
    hits: list[Hit]
    relevance: float
    refused: bool
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"question": self.question, "hits": [h.to_dict() for h in self.hits]}


class Retriever:
    def __init__(self, index: Index, embedder: Embedder, settings: Settings, reranker=None):
        self.index = index
        self.embedder = embedder
        self.settings = settings
        self.reranker = reranker

    @staticmethod
    def load_reranker(settings: Settings):
        if not settings.reranker:
            return None
        from .errors import ModelError

        try:
            import torch
            from sentence_transformers import CrossEncoder

            return CrossEncoder(settings.reranker, activation_fn=torch.nn.Sigmoid(), token=settings.hf_token)
        except Exception as e:  # noqa: BLE001
            raise ModelError(
                f"could not load the reranker {settings.reranker!r}: {e}. Set RAG_RERANKER to a sentence-transformers "
                "CrossEncoder name or local directory, or unset it."
            ) from e

    def search(self, question: str, top_k: int | None = None) -> Retrieval:
        from .normalise import normalise_text, segment

        top_k = top_k or self.settings.top_k
        t0 = time.perf_counter()
        q = normalise_text(question).strip()
        n = len(self.index)
        if n == 0:
            return Retrieval(q, [], 0.0, True, {"retrieve_ms": 0.0})
        q_tokens = segment(q)
        q_vec = self.embedder.embed_query(q)
        t_embed = time.perf_counter()
        dense = self.index.dense_scores(q_vec)
        lexical = self.index.lexical_scores(q_tokens)
        pool = min(n, max(50, top_k * 10))
        fused = self.fuse(dense, lexical, pool)
        order = sorted(fused, key=lambda i: (-fused[i], i))
        hits = [Hit(chunk=self.index.chunks[i], score=fused[i], dense=float(dense[i]), lexical=float(lexical[i]))
                for i in order]
        t_fuse = time.perf_counter()
        timings = {"embed_ms": (t_embed - t0) * 1000, "search_ms": (t_fuse - t_embed) * 1000}
        if self.reranker is not None and hits:
            hits = hits[: max(20, top_k * 3)]
            scores = self.reranker.predict([(q, h.chunk.full_text) for h in hits], show_progress_bar=False)
            for h, s in zip(hits, scores):
                h.rerank = float(s)
                h.score = float(s)
            hits.sort(key=lambda h: -h.rerank)
            timings["rerank_ms"] = (time.perf_counter() - t_fuse) * 1000
        hits = hits[:top_k]
        for r, h in enumerate(hits, 1):
            h.rank = r
        relevance = self.relevance(q_tokens, hits)
        timings["retrieve_ms"] = (time.perf_counter() - t0) * 1000
        return Retrieval(q, hits, relevance, relevance < self.settings.min_relevance, timings)

    def search_in_conversation(self, question: str, history: list[dict], top_k: int | None = None) -> Retrieval:
        """Retrieve for a question in a conversation (serving and training use this same rule).

        The question is first searched alone. Only when that is refused, there is an
        earlier user turn, and every content word of the follow-up is known to the
        corpus, is it searched again together with the previous question — so "còn học
        kỳ hè thì sao?" can borrow context while "Tỉ giá đô la hôm nay?" after an
        in-scope question is still refused.
        """
        alone = self.search(question, top_k)
        previous = [t["content"] for t in history or [] if t.get("role") == "user"]
        if not alone.refused or not previous or len(question) > 120 or self.unknown_words(question):
            return alone
        joined = self.search(f"{previous[-1]}\n{question}", top_k)
        return joined if not joined.refused else alone

    def fuse(self, dense: np.ndarray, lexical: np.ndarray, pool: int) -> dict[int, float]:
        """Candidate scores from the two rankings.

        linear (default): BM25 divided by the query's best BM25 score, plus
        RAG_DENSE_WEIGHT × cosine. rrf: sum of w / (60 + rank) over the two
        rankings (dense weighted by RAG_DENSE_WEIGHT). Measured on ALQAC with the
        packaged all-MiniLM-L6-v2 (R@1): BM25 alone 78, linear w=0.3 79, RRF w=1
        47, RRF w=0.1 66 — rank fusion lets a weak dense ranker pull good lexical
        hits down, score fusion does not. With a strong Vietnamese embedder, raise
        the weight (or use rrf) and measure with `rag eval`.
        """
        w = self.settings.dense_weight
        if self.settings.fusion == "rrf":
            fused: dict[int, float] = {}
            lex_top = [i for i in _top(lexical, pool) if lexical[i] > 0]
            for weight, ranking in ((w, _top(dense, pool)), (1.0, lex_top)):
                for r, i in enumerate(ranking):
                    fused[i] = fused.get(i, 0.0) + weight / (RRF_K + r + 1)
            return fused
        best = float(lexical.max()) if len(lexical) else 0.0
        combined = (lexical / best if best > 0 else np.zeros_like(lexical)) + w * dense
        return {i: float(combined[i]) for i in _top(combined, pool)}

    def relevance(self, q_tokens: list[str], hits: list[Hit]) -> float:
        if not hits:
            return 0.0
        if self.reranker is not None:
            return max(h.rerank or 0.0 for h in hits)
        best = 0.0
        for h in hits[:3]:
            cov = self.coverage(q_tokens, self.index.tokens[self.index.by_id[h.chunk.id]])
            score = 0.7 * cov + 0.3 * max(0.0, h.dense or 0.0)
            best = max(best, score)
        return min(1.0, best)

    def unknown_words(self, question: str) -> list[str]:
        """Content words of the question that no indexed passage contains."""
        from .normalise import normalise_text, segment

        df = self.index.document_frequency
        if getattr(self, "_syllables", None) is None:
            self._syllables = {s for t in df for s in t.split("_")}
        out = []
        for t in segment(normalise_text(question)):
            if t in QUESTION_WORDS or not any(ch.isalnum() for ch in t) or t in df:
                continue
            if all(s in self._syllables for s in t.split("_")):
                continue  # segmented differently, but its syllables are all there
            out.append(t)
        return out

    def coverage(self, q_tokens: list[str], doc_tokens: list[str]) -> float:
        content = {t for t in q_tokens if t not in QUESTION_WORDS and any(ch.isalnum() for ch in t)}
        if not content:
            return 0.0
        df = self.index.document_frequency
        n = len(self.index)
        doc = set(doc_tokens)
        doc_syllables = {s for t in doc for s in t.split("_")}
        total = covered = 0.0
        for t in content:
            w = math.log((n + 1) / (df.get(t, 0) + 0.5))
            total += w
            if t in doc:
                covered += w
            elif all(s in doc_syllables for s in t.split("_")):
                covered += 0.5 * w  # the syllables are there, segmented differently
        return covered / total if total > 0 else 0.0


def _top(scores: np.ndarray, k: int) -> list[int]:
    if k >= len(scores):
        return [int(i) for i in np.argsort(-scores, kind="stable")]
    part = np.argpartition(-scores, k - 1)[:k]
    return [int(i) for i in part[np.argsort(-scores[part], kind="stable")]]
