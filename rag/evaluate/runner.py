"""Running an evaluation: every question through a pipeline, the per-row details and the report."""

from __future__ import annotations

import time
from typing import Any, Sequence

from ..errors import InputError
from .datasets import EXPECTED, EvalRow
from .facts import fact_score
from .metrics import (ARTICLE, CURVE_K, DOCUMENT, Ref, article_match, citation_scores, distinct_refs, document_match, document_matches,
                      gold_positions, gold_units, latency_summary, retrieval_metrics, token_f1)

RANK_DEPTH = 30  # chunks retrieved for the rank metrics: enough for 10 distinct Điều when long ones are split


def _mean(values: Sequence[float | None]) -> tuple[float | None, int]:
    vals = [v for v in values if v is not None]
    return (sum(vals) / len(vals) if vals else None), len(vals)


# -- evaluate a pipeline -------------------------------------------------------------------------
def config_of(pipeline, retrieval_only: bool, top_k: int) -> dict:
    s = pipeline.settings
    llm = None if retrieval_only or pipeline.generator is None else s.llm
    mode = "retrieval only" if retrieval_only else (f"LLM {llm}" if llm else "extractive")
    name = f"{s.embed_model} + BM25 (RRF){' + ' + s.reranker if s.reranker else ''} · {mode}"
    return {
        "name": name, "mode": mode, "index": pipeline.index.location, "chunks": len(pipeline.index),
        "embed_model": s.embed_model, "reranker": s.reranker, "llm": llm, "adapter": s.adapter if llm else None,
        "top_k": top_k, "rank_depth": max(RANK_DEPTH, top_k), "min_relevance": s.min_relevance,
        "retrieval_only": retrieval_only,
    }


def check_rows(rows: Sequence[EvalRow], settings, top_k: int | None, where: str = "dataset") -> int:
    """The passages to give each answer (``top_k``, else RAG_TOP_K), after checking it and every question as
    the pipeline would: a question it would reject fails now, named by its file and line, before any model is
    loaded and not half-way through the run."""
    from ..request import AskRequest

    top_k = AskRequest(question="q", top_k=settings.top_k if top_k is None else top_k).validate(settings).top_k
    for row in rows:
        try:
            AskRequest(question=row.question).validate(settings)
        except InputError as e:
            raise InputError(f"{where}:{row.line}: {e}") from e
    return top_k


def evaluate(pipeline, rows: Sequence[EvalRow], retrieval_only: bool = False, *, top_k: int | None = None,
             name: str | None = None, dataset: str | None = None, progress: bool = False) -> dict:
    """Run every question through ``pipeline`` and return the report (see the module docstring).

    The rank metrics come from a retrieval ``RANK_DEPTH`` chunks deep; the answer (unless
    ``retrieval_only``) from ``pipeline.answer`` with ``top_k`` passages, as a user gets it.
    """
    from ..request import AskRequest

    settings = pipeline.settings
    top_k = check_rows(rows, settings, top_k, dataset or "dataset")
    indexed = {(c.document, c.source) for c in pipeline.index.chunks}
    unknown_docs = sorted({g.document for r in rows for g in r.citations if g.document and not any(
        document_matches(g.document, doc, src) for doc, src in indexed)})
    depth = max(RANK_DEPTH, top_k)
    pipeline.warmup()  # lazy loads (pyvi, BM25 statistics) are not the first question's latency
    t0 = time.perf_counter()
    details, timings = [], []
    it = rows
    if progress:
        from tqdm import tqdm

        it = tqdm(rows, desc="eval", unit="q", leave=False)
    for row in it:
        retrieval = pipeline.retriever.search(row.question, depth)
        refs = [Ref.of(h.chunk) for h in retrieval.hits]
        d: dict[str, Any] = {"question": row.question, "line": row.line, "expected": row.expected}
        if row.id is not None:
            d["id"] = row.id
        for level in (ARTICLE, DOCUMENT):
            ranked = distinct_refs(refs, level)
            golds = gold_units(row.citations, level)
            match = article_match if level == ARTICLE else document_match
            d[f"{level}_positions"] = gold_positions(ranked[:CURVE_K], golds, match) if golds else None
            d[f"_{level}"] = (ranked, golds)
        d["retrieved"] = [_label(r) for r in distinct_refs(refs, ARTICLE)[:5]]
        if retrieval_only:
            d["refused"] = retrieval.refused
            timings.append(dict(retrieval.timings))
        else:
            answer = pipeline.answer(AskRequest(question=row.question, top_k=top_k))
            d["refused"] = answer.refused
            timings.append(dict(answer.timings))
            cited = [Ref.of(c) for c in answer.citations]
            d["cited"] = [_label(r) for r in cited]
            if row.expected != "refuse":
                d["citation"] = citation_scores(cited, row.citations)
            if row.answer is not None:
                d["token_f1"] = token_f1(answer.text, row.answer)
                if not answer.refused or row.expected == "answer":
                    meta = row.meta if isinstance(row.meta, dict) else {}
                    names = [g.document for g in row.citations if g.document] + [meta.get("source_document") or ""]
                    d["facts"] = fact_score("" if answer.refused else answer.text, row.answer, row.question, names,
                                            meta.get("context"))
            if not answer.refused:
                d["answer_chars"] = len(answer.text)
        details.append(d)

    report: dict[str, Any] = {
        "dataset": {"name": dataset, "rows": len(rows),
                    "expected_answer": sum(r.expected == "answer" for r in rows),
                    "expected_refuse": sum(r.expected == "refuse" for r in rows),
                    "with_article_gold": sum(bool(gold_units(r.citations, ARTICLE)) for r in rows),
                    "with_document_gold": sum(bool(gold_units(r.citations, DOCUMENT)) for r in rows),
                    "with_reference_answer": sum(r.answer is not None for r in rows),
                    # gold documents no indexed document is named by: a typo, or a file not ingested
                    "unknown_gold_documents": unknown_docs},
        "config": {**config_of(pipeline, retrieval_only, top_k), **({"name": name} if name else {})},
        "retrieval": {},
    }
    for level in (ARTICLE, DOCUMENT):
        pairs = [d.pop(f"_{level}") for d in details]
        match = article_match if level == ARTICLE else document_match
        report["retrieval"][level] = retrieval_metrics([p[0] for p in pairs], [p[1] for p in pairs], match)
    judged = [(d["expected"], d["refused"]) for d in details if d["expected"] in EXPECTED]
    refused = [e for e, r in judged if r]
    to_refuse = [r for e, r in judged if e == "refuse"]
    to_answer = [r for e, r in judged if e == "answer"]
    report["refusal"] = {
        "accuracy": (sum((e == "refuse") == r for e, r in judged) / len(judged)) if judged else None,
        "precision": (sum(e == "refuse" for e in refused) / len(refused)) if refused else None,
        "recall": (sum(to_refuse) / len(to_refuse)) if to_refuse else None,  # off-topic questions refused
        "false_refusal": (sum(to_answer) / len(to_answer)) if to_answer else None,  # answerable ones refused
        "n": len(judged),
        "wrongly_answered": [d["question"] for d in details if d["expected"] == "refuse" and not d["refused"]],
        "wrongly_refused": [d["question"] for d in details if d["expected"] == "answer" and d["refused"]],
    }
    if not retrieval_only:
        scored = [d["citation"] for d in details if "citation" in d]
        p, n_p = _mean([c["precision"] for c in scored])
        r, n_r = _mean([c["recall"] for c in scored])
        cr, n_cr = _mean([c["clause_recall"] for c in scored])
        report["citations"] = {"precision": p, "recall": r, "clause_recall": cr, "n_precision": n_p,
                               "n_recall": n_r, "n_clause": n_cr}
        f1, n_f1 = _mean([d.get("token_f1") for d in details])
        facts = [d["facts"] for d in details if d.get("facts")]
        chars = sorted(d["answer_chars"] for d in details if "answer_chars" in d)
        report["answer"] = {"token_f1": f1, "n": n_f1,
                            "fact_in_answer": (sum(f["ok"] for f in facts) / len(facts)) if facts else None,
                            "n_facts": len(facts), "chars_p50": chars[len(chars) // 2] if chars else None}
    report["latency_ms"] = latency_summary(timings)
    report["seconds"] = time.perf_counter() - t0
    report["rows"] = details
    return report


def _label(r: Ref) -> str:
    parts = [f"Điều {r.article}" if r.article else "(ngoài Điều)"]
    if r.clause:
        parts.append(f"Khoản {r.clause}")
    return f"{', '.join(parts)} — {r.document}"
