"""Evaluation metrics: matching retrieved or cited passages against gold citations, and the figures.

All fractions in [0, 1]:

- retrieval, at the Điều level (a hit counts when its document and Điều match a
  gold citation) and at the document level: R@k is the share of questions with a
  gold item among the first k distinct items (Điều, or documents) retrieved — the
  convention of the ALQAC reference figures — plus MRR@10 and nDCG@10 (each gold
  item counted once, binary gain);
- citation precision / recall of the Answer's citations against the gold ones,
  at the Điều level, and clause recall (a gold Khoản is found when a citation of
  its Điều covers it: whole-Điều citations and Khoản ranges such as "1-3" do);
- answer token-F1 against the reference (SQuAD-style bag of tokens; tokens are
  ``rag.normalise.syllables``: NFC, one tone placement, lower case, no punctuation);
- latency p50 / p95 per stage.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .datasets import GoldCitation

CURVE_K = 10
ARTICLE, DOCUMENT = "article", "document"


# -- matching ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ref:
    """A retrieved or cited passage, reduced to what is compared with gold citations."""

    document: str
    source: str = ""
    article: str | None = None
    clause: str | None = None

    @classmethod
    def of(cls, obj) -> "Ref":
        """From a Chunk or a Citation; outside any Điều, an appendix ("Phụ lục 2") is the unit."""
        unit = obj.article or getattr(obj, "appendix", None)
        return cls(document=obj.document or "", source=obj.source or "", article=unit, clause=obj.clause)


def _norm(s: str | None) -> str:
    from ..normalise import normalise_text

    return re.sub(r"\s+", " ", normalise_text(s or "")).strip().casefold()


def _norm_article(s: str | None) -> str:
    return re.sub(r"^điều\s*", "", _norm(s))


def document_matches(gold: str, document: str, source: str = "") -> bool:
    """A gold document names a chunk's document by its title or its file name (with or without extension)."""
    g = _norm(gold)
    if not g:
        return False
    names = {_norm(document)}
    if source:
        p = Path(source)
        names |= {_norm(source), _norm(p.name), _norm(p.stem)}
    if g in names:
        return True
    doc = _norm(document)
    return doc.endswith("…") and len(doc) > 20 and g.startswith(doc[:-1])  # a clipped long title


def article_match(ref: Ref, gold: GoldCitation) -> bool:
    if gold.article is None or ref.article is None or _norm_article(ref.article) != _norm_article(gold.article):
        return False
    return gold.document is None or document_matches(gold.document, ref.document, ref.source)


def document_match(ref: Ref, gold: GoldCitation) -> bool:
    return gold.document is not None and document_matches(gold.document, ref.document, ref.source)


def cite_match(ref: Ref, gold: GoldCitation) -> bool:
    """Citation matching at the Điều level; a gold citation without an article matches on its document."""
    return article_match(ref, gold) if gold.article is not None else document_match(ref, gold)


def clause_covers(cited: str | None, gold: str) -> bool:
    """A whole-Điều citation covers every Khoản; "1-3" covers 2; "2, 4" covers 4."""
    if cited is None or not cited.strip():
        return True
    g = re.sub(r"^khoản\s*", "", _norm(gold))
    for part in re.split(r"[,;]|\svà\s", _norm(cited)):
        part = re.sub(r"^khoản\s*", "", part.strip())
        m = re.fullmatch(r"(\d+)\s*[-–]\s*(\d+)", part)
        if m and g.isdigit():
            if int(m.group(1)) <= int(g) <= int(m.group(2)):
                return True
        elif part == g:
            return True
    return False


def gold_units(golds: Sequence[GoldCitation], level: str) -> list[GoldCitation]:
    """The distinct relevant items at a level: Điều (document + article) or documents."""
    out, seen = [], set()
    for g in golds:
        if level == ARTICLE:
            if g.article is None:
                continue
            key, unit = (_norm(g.document), _norm_article(g.article)), GoldCitation(g.document, g.article)
        else:
            if g.document is None:
                continue
            key, unit = _norm(g.document), GoldCitation(g.document)
        if key not in seen:
            seen.add(key)
            out.append(unit)
    return out


def distinct_refs(refs: Iterable[Ref], level: str) -> list[Ref]:
    """Ranked refs with repeats of the same Điều (or document) removed; a passage outside any Điều keeps its rank."""
    out, seen = [], set()
    for i, r in enumerate(refs):
        if level == ARTICLE:
            key = (_norm(r.document), _norm(r.source), _norm_article(r.article)) if r.article else ("", "", i)
        else:
            key = (_norm(r.document), _norm(r.source))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


# -- metric functions ----------------------------------------------------------------------------
def gold_positions(ranked: Sequence, golds: Sequence, match: Callable[[Any, Any], bool]) -> list[int]:
    """1-based ranks at which gold items are found; each gold item and each ranked item is counted once."""
    found: set[int] = set()
    positions = []
    for rank, item in enumerate(ranked, start=1):
        for j, g in enumerate(golds):
            if j not in found and match(item, g):
                found.add(j)
                positions.append(rank)
                break
    return positions


def recall_at(positions: Sequence[int], k: int) -> float:
    """1 when a gold item is within the first k, else 0 (averaged over questions: the share found)."""
    return 1.0 if any(p <= k for p in positions) else 0.0


def mrr_at(positions: Sequence[int], k: int = 10) -> float:
    first = min(positions, default=None)
    return 1.0 / first if first is not None and first <= k else 0.0


def ndcg_at(positions: Sequence[int], n_relevant: int, k: int = 10) -> float:
    """Binary-gain nDCG: DCG of the found golds over the DCG of all golds ranked first."""
    if n_relevant <= 0:
        return 0.0
    dcg = sum(1.0 / math.log2(p + 1) for p in positions if p <= k)
    idcg = sum(1.0 / math.log2(i + 1) for i in range(1, min(n_relevant, k) + 1))
    return dcg / idcg


def retrieval_metrics(ranked_lists: Sequence[Sequence], gold_lists: Sequence[Sequence],
                      match: Callable[[Any, Any], bool], ks: Sequence[int] = (1, 5, 10),
                      curve_k: int = CURVE_K) -> dict:
    """R@k, MRR@10, nDCG@10 and the recall curve R@1..R@curve_k, as fractions; questions without gold are skipped."""
    per_q = []
    for ranked, golds in zip(ranked_lists, gold_lists):
        if golds:
            per_q.append((gold_positions(ranked, golds, match), len(golds)))
    n = len(per_q)
    out: dict[str, Any] = {"n": n}
    if not n:
        return out
    for k in ks:
        out[f"R@{k}"] = sum(recall_at(p, k) for p, _ in per_q) / n
    out["MRR@10"] = sum(mrr_at(p, 10) for p, _ in per_q) / n
    out["nDCG@10"] = sum(ndcg_at(p, g, 10) for p, g in per_q) / n
    out["curve"] = [sum(recall_at(p, k) for p, _ in per_q) / n for k in range(1, curve_k + 1)]
    return out


def answer_tokens(text: str) -> list[str]:
    from ..normalise import syllables

    return syllables(text)


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style F1 over bags of normalised Vietnamese tokens (syllables and numbers)."""
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def citation_scores(cited: Sequence[Ref], golds: Sequence[GoldCitation]) -> dict:
    """Precision (None when nothing was cited), recall, and clause recall (None without gold Khoản)."""
    out: dict[str, float | None] = {"precision": None, "recall": None, "clause_recall": None}
    if not golds:
        return out
    if cited:
        out["precision"] = sum(any(cite_match(c, g) for g in golds) for c in cited) / len(cited)
    out["recall"] = sum(any(cite_match(c, g) for c in cited) for g in golds) / len(golds)
    with_clause = [g for g in golds if g.clause and g.article]
    if with_clause:
        out["clause_recall"] = sum(
            any(article_match(c, g) and clause_covers(c.clause, g.clause) for c in cited) for g in with_clause
        ) / len(with_clause)
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_summary(timings: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    stages: dict[str, list[float]] = {}
    for t in timings:
        for k, v in t.items():
            stages.setdefault(k, []).append(float(v))
    return {k: {"p50": percentile(v, 50), "p95": percentile(v, 95), "mean": sum(v) / len(v), "n": len(v)}
            for k, v in stages.items()}
