"""Evaluation: questions with gold citations in, retrieval / refusal / citation / answer / latency metrics out.

- ``datasets``: the JSON Lines dataset format (read and validated) and the ALQAC converter;
- ``metrics``: matching passages against gold citations, R@k / MRR / nDCG, citation
  scores, token-F1, latency percentiles;
- ``runner``: ``evaluate(pipeline, rows)``, every question through a pipeline into one report
  (refusal accuracy: the answer, or with ``retrieval_only`` the relevance gate, refuses
  exactly the rows expected to be refused; latency from ``Answer.timings`` or
  ``Retrieval.timings``);
- ``report``: report.json, the Markdown summary and the recall@k chart;
- ``facts``: fact-in-answer (the reference answer's numbers and key terms in the answer text);
- ``splits``: the HUST SFT rows as a labelled set, dev/test halves by groups, k folds;
- ``suite``: `rag eval --corpora`, the table for the demo, HUST and ALQAC corpora.

Out of scope: LLM-as-judge answer grading, statistical significance tests.
"""

from __future__ import annotations

from .datasets import (ALLOWED_KEYS, CITATION_KEYS, EXPECTED, EvalRow, GoldCitation, alqac_law_text, alqac_rows,
                       convert_alqac, load_dataset, parse_row)
from .metrics import (ARTICLE, CURVE_K, DOCUMENT, Ref, answer_tokens, article_match, citation_scores, cite_match,
                      clause_covers, distinct_refs, document_match, document_matches, gold_positions, gold_units,
                      latency_summary, mrr_at, ndcg_at, percentile, recall_at, retrieval_metrics, token_f1)
from .report import (chart_panels, load_report, markdown_summary, write_chart, write_json, write_markdown,
                     write_outputs)
from .facts import fact_score, reference_facts
from .runner import RANK_DEPTH, config_of, evaluate
from .splits import folds, halves, hust_rows

__all__ = [
    "ALLOWED_KEYS", "CITATION_KEYS", "EXPECTED", "EvalRow", "GoldCitation", "alqac_law_text", "alqac_rows",
    "convert_alqac", "load_dataset", "parse_row",
    "ARTICLE", "CURVE_K", "DOCUMENT", "Ref", "answer_tokens", "article_match", "citation_scores", "cite_match",
    "clause_covers", "distinct_refs", "document_match", "document_matches", "gold_positions", "gold_units",
    "latency_summary", "mrr_at", "ndcg_at", "percentile", "recall_at", "retrieval_metrics", "token_f1",
    "chart_panels", "load_report", "markdown_summary", "write_chart", "write_json", "write_markdown", "write_outputs",
    "RANK_DEPTH", "config_of", "evaluate", "fact_score", "reference_facts", "folds", "halves", "hust_rows",
]
