"""Retrieval: dense + BM25 fused (score fusion by default, reciprocal rank fusion on request),
an optional cross-encoder, a relevance gate.

The gate decides "không tìm thấy" before any LLM is called. Its score, in [0, 1]:

- with a reranker: the sigmoid of the best cross-encoder score;
- without: how much of the question one passage states (``Retriever.relevance``):
  the IDF-weighted share of the question's content words (word-segmented; question
  words such as "bao nhiêu", "em", "được không", "làm thế nào" and cohorts such as
  "K68" removed) found together in one sentence of the first three passages, plus
  a bonus for its word pairs found side by side, minus a penalty for the share of
  words the index never uses. Weights are relative to *this* index (a word it lacks
  weighs most), so "thủ tục làm hộ chiếu" finds nothing to cover it.

Fused scores are relative to the query (RRF's are rank-based), so they are not
used for the gate.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

import numpy as np

from .batching import query_embedder
from .config import Settings
from .embed import Embedder
from .index import Index
from .render import heading
from .texts import FACT_KINDS, REFUSAL
from .texts import REFUSAL_REASONS as REASONS
from .texts import REFUSAL_SUGGEST as SUGGEST
from .types import Hit

RRF_K = 60
# The relevance's weights, chosen with RAG_MIN_RELEVANCE on the dev halves of the demo and HUST sets
# (docs/evaluation.md): the word-pair bonus and the penalty for words the index never uses.
PAIRS = 0.5
UNKNOWN = 0.2
# Words that carry the question's form, not its topic (word-segmented forms, lower case).
QUESTION_WORDS = frozenset("""
em anh chị mình tôi tớ bạn cho hỏi xin ạ à ạ_ơi vậy thế nhỉ nhé không có được là thì mà bị và hay hoặc
của các những một này đó kia gì nào sao bao_nhiêu bao_lâu bao_giờ khi_nào ở_đâu đâu như_thế_nào thế_nào
làm_sao tại_sao vì_sao có_phải phải muốn cần nếu thì sẽ đã đang rồi nữa luôn với cho_em cho_mình
trường quy_định quy_chế theo về trong ra vào lên để thế_nào_là ai mấy như những_ai khi
""".split())
# Question syllables the segmenter glues onto a content word ("học_phần_nào", "cổng_vậy"): cut off at its edges.
_EDGE_SYLLABLES = frozenset("nào gì vậy ai mấy sao không nhỉ ạ nhé thế à".split())
# A cohort ("K68") qualifies who asks, as a year does (rag.scope), and names no topic.
_HOW = frozenset(("thế_nào", "sao", "cách_nào", "như_thế_nào"))
_COHORT = re.compile(r"^k\d{2}$")
# Abbreviations students type that regulations mostly write out ("GPA bao nhiêu thì được bằng giỏi?" over a text
# that says "điểm trung bình"). Three letters or more match in any case ("ktx"); two-letter ones only in capitals
# ("SV", not "sv"). An abbreviation the index itself uses is kept beside its long form; one it never uses is replaced.
ABBREVIATIONS = {
    "GPA": "điểm trung bình", "CPA": "điểm trung bình tích lũy", "ĐTB": "điểm trung bình", "KTX": "ký túc xá",
    "BHYT": "bảo hiểm y tế", "BHXH": "bảo hiểm xã hội", "CTĐT": "chương trình đào tạo", "ĐATN": "đồ án tốt nghiệp",
    "KLTN": "khóa luận tốt nghiệp", "ĐKHP": "đăng ký học phần", "THPT": "trung học phổ thông",
    "NCS": "nghiên cứu sinh", "SV": "sinh viên", "GV": "giảng viên", "TC": "tín chỉ", "HK": "học kỳ",
}  # not "HP": students write it for both "học phần" and "học phí"
_ABBR = re.compile(r"(?<![^\W_])(" + "|".join(sorted(ABBREVIATIONS, key=len, reverse=True)) + r")(?![^\W_])", re.I)


def content_words(tokens: list[str]) -> list[str]:
    """The question's content words, in order: question words dropped, question syllables cut off a word's edges
    ("học_phần_nào" → "học_phần"), cohorts ("k68") dropped."""
    out = []
    for i, t in enumerate(tokens):
        if t == "làm" and i + 1 < len(tokens) and tokens[i + 1] in _HOW:  # "làm thế nào", "làm sao"
            continue
        parts = t.split("_")
        while len(parts) > 1 and parts[-1] in _EDGE_SYLLABLES:
            parts.pop()
        while len(parts) > 1 and parts[0] in _EDGE_SYLLABLES:
            parts.pop(0)
        t = "_".join(parts)
        if t not in QUESTION_WORDS and t not in _EDGE_SYLLABLES and not _COHORT.match(t) \
                and any(ch.isalnum() for ch in t):
            out.append(t)
    return out


@dataclass
class Retrieval:
    question: str
    hits: list[Hit]
    relevance: float
    refused: bool
    timings: dict[str, float] = field(default_factory=dict)
    query: str | None = None  # what was searched: the question, or a follow-up rewritten as a standalone query
    terms: dict[str, float] = field(default_factory=dict)  # the query's content words → weight (rarity)
    reason: str | None = None  # why it was refused (a REASONS key)
    why: str | None = None  # that reason as a sentence for the user
    suggestions: list[str] = field(default_factory=list)  # what the corpus covers nearest the question
    levels: list[str] = field(default_factory=list)  # the programme levels the ranking favoured
    features: dict[str, float] = field(default_factory=dict)  # the answerability decision's inputs

    def refusal_text(self) -> str:
        """The refusal sentence, why, and what the documents do cover nearest the question."""
        out = REFUSAL
        if self.why or self.reason in REASONS:
            out += " " + (self.why or REASONS[self.reason])
        if self.suggestions:
            out += "\n" + SUGGEST + "\n" + "\n".join(f"- {s}" for s in self.suggestions)
        return out


class Retriever:
    def __init__(self, index: Index, embedder: Embedder, settings: Settings, reranker=None):
        self.index = index
        self.embedder = embedder
        self.settings = settings
        self.reranker = reranker
        self.embed_query = query_embedder(embedder, settings)  # concurrent questions in one call (rag.batching)
        self._syllables: set[str] | None = None
        self._plain: set[str] | None = None  # the documents' marked syllables without their marks
        self._titles: dict[int, set[str]] | None = None
        self._scope = None

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

    # -- ranking ----------------------------------------------------------------------------------
    def search(self, question: str, top_k: int | None = None, *, query: str | None = None) -> Retrieval:
        """Rank passages for ``query`` (default: the question) and decide whether the documents answer it."""
        from .normalise import normalise_text, segment

        top_k = top_k or self.settings.top_k
        t0 = time.perf_counter()
        q = normalise_text(question).strip()
        text = self.expand(normalise_text(query).strip() if query else q)
        n = len(self.index)
        if n == 0:
            return Retrieval(q, [], 0.0, True, {"retrieve_ms": 0.0}, query=text, reason="no_match",
                             why=REASONS["no_match"])
        q_tokens = segment(text)
        terms = self.term_weights(q_tokens)
        if not q_tokens:  # only punctuation or symbols: nothing to search (BM25 cannot score an empty query)
            return Retrieval(q, [], 0.0, True, {"retrieve_ms": (time.perf_counter() - t0) * 1000}, query=text,
                             reason="no_words", why=REASONS["no_words"])
        q_vec = self.embed_query(text)
        t_embed = time.perf_counter()
        dense = self.index.dense_scores(q_vec)
        lexical = self.index.lexical_scores(q_tokens)
        pool = min(n, max(50, top_k * 10))
        fused = self.fuse(dense, lexical, pool)
        fused = self.fields(fused, terms)
        levels, stated = self.target_levels(text)
        fused = self.scope(fused, levels, stated)
        order = sorted(fused, key=lambda i: (-fused[i], i))
        hits = [Hit(chunk=self.index.chunks[i], score=fused[i], dense=float(dense[i]), lexical=float(lexical[i]))
                for i in order]
        t_fuse = time.perf_counter()
        timings = {"embed_ms": (t_embed - t0) * 1000, "search_ms": (t_fuse - t_embed) * 1000}
        if self.reranker is not None and hits:
            hits = hits[: max(20, top_k * 3)]
            scores = self.reranker.predict([(text, h.chunk.full_text) for h in hits], show_progress_bar=False)
            for h, sc in zip(hits, scores):
                h.rerank = float(sc)
                h.score = float(sc)
            hits.sort(key=lambda h: -h.rerank)
            timings["rerank_ms"] = (time.perf_counter() - t_fuse) * 1000
        features = self.features(q_tokens, terms, hits, dense, lexical)
        hits = hits[:top_k]
        for r, h in enumerate(hits, 1):
            h.rank = r
        relevance = self.relevance(features, hits)
        timings["retrieve_ms"] = (time.perf_counter() - t0) * 1000
        out = Retrieval(q, hits, relevance, False, timings, query=text, terms=terms, levels=levels,
                        features=features)
        self.decide(out, q)
        return out

    def expand(self, text: str) -> str:
        """``text`` with the abbreviations of ``ABBREVIATIONS`` written out: "GPA bao nhiêu" → "điểm trung bình bao
        nhiêu" over documents that never write "GPA", "GPA (điểm trung bình) bao nhiêu" over documents that do."""
        def write_out(m: re.Match) -> str:
            abbr = m.group(1)
            if len(abbr) < 3 and not abbr.isupper():
                return abbr
            long = ABBREVIATIONS[abbr.upper()]
            return f"{abbr} ({long})" if self._known(abbr.lower()) else long

        return _ABBR.sub(write_out, text)

    def decide(self, out: Retrieval, question: str) -> None:
        """Answer or refuse, and why: no searchable word; a question the documents cannot be about (rag.scope:
        another institution, year or cohort, a request to cheat); words the documents never use; too little of
        the question found together in one passage; or a question for an amount, a time or a month that the best
        passages never state (``rag.scope.unstated_fact``)."""
        if not out.terms:
            out.refused, out.reason = True, "no_words"
            return
        if self._scope is None:
            from .scope import Scope

            self._scope = Scope.from_index(self.index)
        cue = self._scope.check(question)
        if cue is not None:
            out.refused, out.reason = True, cue[0]
            out.why = REASONS[cue[0]].format(**cue[1])
        elif out.relevance < self.settings.min_relevance:
            out.refused = True
            unknown = [t.replace("_", " ") for t in out.terms if not self._known(t)]
            total = sum(out.terms.values())
            if self.without_diacritics(question):
                out.reason = "no_diacritics"
                out.why = REASONS["no_diacritics"]
            elif unknown and sum(out.terms[t.replace(" ", "_")] for t in unknown) >= 0.5 * total:
                out.reason = "unknown_words"
                out.why = REASONS["unknown_words"].format(words=", ".join(f"«{w}»" for w in unknown[:4]))
            else:
                out.reason = "no_match"
        else:
            from .scope import unstated_fact

            kind = unstated_fact(out.query or question, [h.chunk.text for h in out.hits[:3]], out.terms)
            if kind is not None:  # asks for an amount, a time or a month that the best passages never state
                out.refused, out.reason = True, "unstated_fact"
                out.why = REASONS["unstated_fact"].format(what=FACT_KINDS[kind])
        if out.refused:
            out.suggestions = self.suggest(out.hits)

    def target_levels(self, text: str) -> tuple[list[str], bool]:
        """The programme levels to favour: those the question states, else the deployment's default audience."""
        from .metadata import question_levels

        stated = question_levels(text)
        if stated:
            return stated, True
        audience = self.settings.audience
        return ([audience] if audience and audience != "none" else []), False

    def scope(self, fused: dict[int, float], levels: list[str], stated: bool) -> dict[int, float]:
        """Lower passages written for another programme level than the one asked about (or the default audience).

        A passage for every level (no audience) is untouched; one for the asked level is untouched; one for
        another level loses a share of its score — more when the question names its level than when the
        default audience applies, so an undergraduate question is answered from the undergraduate rules while
        a question that clearly matches the master's rules still finds them.
        """
        if not levels:
            return fused
        penalty = self.settings.scope_penalty if stated else self.settings.audience_penalty
        if penalty <= 0:
            return fused
        want = set(levels)
        out = {}
        for i, sc in fused.items():
            aud = self.index.chunks[i].audience
            if aud and not want & set(aud.split(",")):
                sc *= 1.0 - penalty
            out[i] = sc
        return out

    def fields(self, fused: dict[int, float], terms: dict[str, float]) -> dict[int, float]:
        """Field weighting: a passage whose heading (Điều title, section, appendix name) holds the query's words
        gains RAG_TITLE_WEIGHT × the weighted share of them; loose text outside any Điều, section or appendix
        (an issuing decision's preamble) keeps (1 − RAG_LOOSE_PENALTY) of its score."""
        total = sum(terms.values())
        w_title, loose = self.settings.title_weight, self.settings.loose_penalty
        out = {}
        for i, sc in fused.items():
            c = self.index.chunks[i]
            if w_title and total:
                title = self._title_tokens(i)
                sc += w_title * sum(w for t, w in terms.items() if t in title) / total
            if loose and c.kind == "paragraph" and not c.appendix and not c.article:
                sc *= 1.0 - loose
            out[i] = sc
        return out

    def _title_tokens(self, i: int) -> set[str]:
        if self._titles is None:
            self._titles = {}
        if i not in self._titles:
            from .normalise import segment

            c = self.index.chunks[i]
            self._titles[i] = set(segment(" ".join(x for x in (c.article_title, c.section, c.part, c.appendix_title)
                                                   if x)))
        return self._titles[i]

    def search_in_conversation(self, question: str, history: list[dict], top_k: int | None = None) -> Retrieval:
        """Retrieve for a question in a conversation (serving and training use this same rule).

        A follow-up ("Còn học kỳ hè thì sao?") is rewritten into a standalone query from the
        earlier user turns (``rag.followup``); the retrieval records the query it searched.
        """
        from .followup import standalone_query

        query = standalone_query(question, history)
        return self.search(question, top_k, query=query if query != question else None)

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

    # -- answerability ----------------------------------------------------------------------------
    def term_weights(self, q_tokens: list[str]) -> dict[str, float]:
        """The query's content words, each weighted by its rarity in the index (a word it lacks weighs most)."""
        df = self.index.document_frequency
        n = len(self.index)
        return {t: math.log((n + 1) / (df.get(t, 0) + 0.5)) for t in dict.fromkeys(content_words(q_tokens))}

    def features(self, q_tokens, terms, hits, dense, lexical) -> dict[str, float]:
        total = sum(terms.values())
        unknown = sum(w for t, w in terms.items() if not self._known(t))
        covs = [self.coverage(q_tokens, self.index.tokens[self.index.by_id[h.chunk.id]]) for h in hits[:3]]
        d_top = [int(i) for i in np.argsort(-dense)[:5]]
        l_top = [int(i) for i in np.argsort(-lexical)[:5]]
        art = lambda i: (self.index.chunks[i].source, self.index.chunks[i].article)  # noqa: E731
        best_doc = set(self.index.tokens[self.index.by_id[hits[0].chunk.id]]) if hits else set()
        syl = {x for t in best_doc for x in t.split("_")}
        missing = [w for t, w in terms.items() if t not in best_doc and not all(x in syl for x in t.split("_"))]
        content = [t for t in content_words(q_tokens) if t in terms]
        pairs = list(zip(content, content[1:]))
        best_seq = self.index.tokens[self.index.by_id[hits[0].chunk.id]] if hits else []
        best_pairs = set(zip(best_seq, best_seq[1:]))
        ucov = 0.0
        if hits and total:
            from .normalise import sentences, syllables

            for h in hits[:3]:
                for unit in sentences(h.chunk.text):
                    sy = " " + " ".join(syllables(unit)) + " "
                    ucov = max(ucov, sum(w for t, w in terms.items() if f" {t.replace('_', ' ')} " in sy) / total)
        return {
            "ucov": ucov,
            "z_dense": float((dense.max() - dense.mean()) / (dense.std() + 1e-9)) if len(dense) else 0.0,
            "z_lex": float((lexical.max() - lexical.mean()) / (lexical.std() + 1e-9)) if len(lexical) else 0.0,
            "miss_max": max(missing, default=0.0) / total if total else 1.0,
            "miss_share": sum(missing) / total if total else 1.0,
            "pairs": (sum(p in best_pairs for p in pairs) / len(pairs)) if pairs else 0.0,
            "cov1": covs[0] if covs else 0.0,
            "cov3": max(covs) if covs else 0.0,
            "dense1": float(dense.max()) if len(dense) else 0.0,
            "dense_hit": max((h.dense or 0.0) for h in hits[:3]) if hits else 0.0,
            "unknown": unknown / total if total else 1.0,
            "n_terms": float(len(terms)),
            "agree": float(art(d_top[0]) in {art(i) for i in l_top}) if d_top and l_top else 0.0,
            "bm25_1": float(lexical.max()) if len(lexical) else 0.0,
        }

    def relevance(self, features: dict[str, float], hits: list[Hit]) -> float:
        """How much of the question one passage states, in [0, 1] (the gate compares it with RAG_MIN_RELEVANCE).

        Without a reranker: the weighted share of the question's content words found together in one
        sentence of the first three passages (``ucov``; rare words weigh more, a word the index lacks
        weighs most), plus ``PAIRS`` × the share of its adjacent word pairs found adjacent in the best passage
        (``pairs``: "giờ mở cửa" is more than "giờ", "mở", "cửa" scattered), minus ``UNKNOWN`` × the weighted
        share of its words the index never uses ("cà phê", "Windows", "ChatGPT"). With a reranker: the sigmoid
        of its best score.
        """
        if not hits:
            return 0.0
        if self.reranker is not None:
            return max(h.rerank or 0.0 for h in hits)
        return max(0.0, min(1.0, features.get("ucov", 0.0) + PAIRS * features.get("pairs", 0.0))
                   - UNKNOWN * features.get("unknown", 0.0))

    def suggest(self, hits: list[Hit], n: int = 3) -> list[str]:
        """The headings nearest the question ("Điều 9. Học phí — Quy chế đào tạo 2025"): what the corpus does cover."""
        out: list[str] = []
        for h in hits:
            c = h.chunk
            head = heading(c.citation())
            if head:
                label = f"{head} — {c.title or c.document}"
                if label not in out:
                    out.append(label)
            if len(out) >= n:
                break
        return out

    def _known(self, t: str) -> bool:
        df = self.index.document_frequency
        if t in df:
            return True
        if self._syllables is None:
            self._syllables = {s for w in df for s in w.split("_")}
        return all(s in self._syllables for s in t.split("_"))

    def without_diacritics(self, question: str) -> bool:
        """Vietnamese typed without its marks ("hoc phi hoc lai tinh the nao"): no letter carries a mark, while
        the documents do, and most words are a syllable of theirs once its marks are taken off. An English
        question ("what is the fee") is not: most of its words are no such syllable."""
        import unicodedata

        words = re.findall(r"[^\W\d_]+", question.lower())
        if len(words) < 2 or not all(w.isascii() for w in words):
            return False
        if self._plain is None:
            if self._syllables is None:
                self._syllables = {s for w in self.index.document_frequency for s in w.split("_")}
            bare = {s for s in self._syllables if not s.isascii()}
            self._plain = {"".join(c for c in unicodedata.normalize("NFD", s.replace("đ", "d"))
                                   if not unicodedata.combining(c)) for s in bare}
        return sum(w in self._plain for w in words) >= 0.7 * len(words)

    def unknown_words(self, question: str) -> list[str]:
        """Content words of the question that no indexed passage contains."""
        from .normalise import normalise_text, segment

        return [t for t in content_words(segment(normalise_text(question))) if not self._known(t)]

    def coverage(self, q_tokens: list[str], doc_tokens: list[str]) -> float:
        content = set(content_words(q_tokens))
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
