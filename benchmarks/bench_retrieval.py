"""Retrieval quality on ALQAC 2023 (100 labelled questions over 2,131 law articles).

    python benchmarks/bench_retrieval.py

Prints R@1 / R@10 / MRR@10 at article level for: the reference BM25 baselines
(rank_bm25 defaults over whole articles, syllable tokens and pyvi words — the
same setup as the reference figures in ../shared/data/README.md, measured here
in the same run), this project's BM25 alone, dense alone, and the hybrid with
reciprocal rank fusion and with score fusion (the default).
Skips with a message when ../shared/data is absent.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import Timer, alqac_documents, alqac_questions, dedupe, machine, rank_metrics, table  # noqa: E402


def bm25_reference(tokenizers=("syllables", "pyvi words")) -> dict[str, dict]:
    """The reference of ../shared/data/README.md: rank_bm25 defaults over whole ALQAC articles (metrics in percent)."""
    from rank_bm25 import BM25Okapi

    from rag.normalise import normalise_text, segment, syllables

    laws, _ = alqac_documents()
    questions = alqac_questions()
    golds = [g for _, g in questions]
    keys = [(law["id"], a["id"]) for law in laws for a in law["articles"]]
    texts = [normalise_text(a["text"]) for law in laws for a in law["articles"]]
    out = {}
    for name in tokenizers:
        tok = {"syllables": syllables, "pyvi words": segment}[name]
        bm = BM25Okapi([tok(t) for t in texts])
        ranked = []
        for q, _ in questions:
            s = bm.get_scores(tok(normalise_text(q)))
            ranked.append([keys[i] for i in np.argsort(-s)[:10]])
        out[name] = rank_metrics(ranked, golds)
    return out


def main() -> None:
    from rag.chunk import chunk_document
    from rag.config import Settings
    from rag.embed import Embedder
    from rag.index import make_manifest, write_index
    from rag.normalise import clean_pages, normalise_text, segment
    from rag.retrieve import Retriever

    laws, docs = alqac_documents()
    questions = alqac_questions()
    golds = [g for _, g in questions]
    keys = [(law["id"], a["id"]) for law in laws for a in law["articles"]]

    # Reference: rank_bm25 defaults over whole articles.
    rows = [[f"reference: rank_bm25 over articles, {name}", *(f"{m[k]:.0f}" for k in ("R@1", "R@10", "MRR@10"))]
            for name, m in bm25_reference().items()]

    settings = Settings.from_env({})
    embedder = Embedder.load(settings)
    chunks = []
    for d in docs:
        d.pages = clean_pages(d.pages)
        chunks += chunk_document(d, max_chars=settings.chunk_max_chars)
    with Timer() as t_embed:
        vecs = embedder.embed_passages([c.full_text for c in chunks])
    tokens = [segment(c.full_text) for c in chunks]
    with tempfile.TemporaryDirectory() as tmp:
        s = settings.with_(index_dir=Path(tmp) / "idx")
        files = {d.source: {"sha256": d.sha256, "title": d.title, "kind": "json", "pages": 1, "chunks": 0, "ocr_pages": 0}
                 for d in docs}
        index = write_index(s, make_manifest(embedder.spec, vecs.shape[1], chunks, files, None, "rag-chunks"),
                            chunks, vecs, tokens)
        retriever = Retriever(index, embedder, s)
        rrf = Retriever(index, embedder, s.with_(fusion="rrf", dense_weight=1.0))

        def art(i):
            c = index.chunks[i]
            return (c.document, c.article)

        modes = {"this project: BM25 (pyvi, bm25s) alone": [], "this project: dense alone (all-MiniLM-L6-v2)": [],
                 "this project: hybrid, RRF (equal weights)": [],
                 "this project: hybrid, score fusion (default)": []}
        for q, _ in questions:
            qn = normalise_text(q)
            lex = index.lexical_scores(segment(qn))
            dense = index.dense_scores(embedder.embed_query(qn))
            modes["this project: BM25 (pyvi, bm25s) alone"].append(dedupe(art(i) for i in np.argsort(-lex)[:50])[:10])
            modes["this project: dense alone (all-MiniLM-L6-v2)"].append(dedupe(art(i) for i in np.argsort(-dense)[:50])[:10])
            for name, r in (("this project: hybrid, RRF (equal weights)", rrf),
                            ("this project: hybrid, score fusion (default)", retriever)):
                hits = r.search(q, 30).hits
                modes[name].append(dedupe((h.chunk.document, h.chunk.article) for h in hits)[:10])
        for name, ranked in modes.items():
            m = rank_metrics(ranked, golds)
            rows.append([name, *(f"{m[k]:.0f}" for k in ("R@1", "R@10", "MRR@10"))])
    print(f"ALQAC 2023: {len(questions)} questions, {len(keys)} articles, {len(chunks)} chunks; {machine()}")
    print(f"(embedding {len(chunks)} chunks took {t_embed.s:.0f} s)")
    table(rows, ["retriever", "R@1", "R@10", "MRR@10"])


if __name__ == "__main__":
    main()
