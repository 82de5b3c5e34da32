"""Shared helpers for the benchmark scripts: data paths, ALQAC loading, metrics, table printing."""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def need(path: Path) -> Path:
    if not path.exists():
        sys.exit(f"skipped: {path} is absent (the shared real-data folder is only in the development checkout)")
    return path


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def alqac_documents():
    """ALQAC 2023 laws as rag Documents: one per law, each article written as 'Điều N. title' + body."""
    from rag.types import Document, Page

    laws = json.loads(need(SHARED / "alqac2023" / "law.json").read_text(encoding="utf-8"))
    docs = []
    for law in laws:
        parts = []
        for art in law["articles"]:
            title, _, body = art["text"].partition("\n\n")
            parts.append(f"Điều {art['id']}. {title.strip()}\n{body.strip()}")
        docs.append(Document(source=law["id"], title=law["id"], pages=[Page(1, "\n\n".join(parts))],
                             sha256=str(hash(law["id"])), kind="json"))
    return laws, docs


def alqac_questions():
    rows = json.loads(need(SHARED / "alqac2023" / "train.json").read_text(encoding="utf-8"))
    return [(r["text"], {(a["law_id"], a["article_id"]) for a in r["relevant_articles"]}) for r in rows]


def dedupe(keys):
    seen, out = set(), []
    for k in keys:
        if k not in seen:
            seen.add(k)
            out.append(k)
    return out


def rank_metrics(ranked_lists, golds, ks=(1, 5, 10)):
    """Recall@k (share of questions with a gold item in the first k), MRR@10, nDCG@10 — in percent."""
    n = len(golds)
    out = {f"R@{k}": 0.0 for k in ks}
    mrr = ndcg = 0.0
    for ranked, gold in zip(ranked_lists, golds):
        for k in ks:
            out[f"R@{k}"] += any(r in gold for r in ranked[:k])
        for i, r in enumerate(ranked[:10]):
            if r in gold:
                mrr += 1 / (i + 1)
                break
        dcg = sum(1 / math.log2(i + 2) for i, r in enumerate(ranked[:10]) if r in gold)
        idcg = sum(1 / math.log2(i + 2) for i in range(min(len(gold), 10)))
        ndcg += dcg / idcg if idcg else 0.0
    out = {k: 100 * v / n for k, v in out.items()}
    out["MRR@10"] = 100 * mrr / n
    out["nDCG@10"] = 100 * ndcg / n
    return out


def table(rows, headers):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = " | ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))


class Timer:
    def __enter__(self):
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t
