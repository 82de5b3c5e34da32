"""Query latency: `search` at 1k / 10k / 50k chunks, and BM25 query time.

    python benchmarks/run_all.py --only search
    python benchmarks/run_all.py --only bm25

search: synthetic chunks (random unit vectors; bags of real Vietnamese words
drawn from the demo regulations, Zipf-weighted) loaded into the real ``Index``
and queried through the real ``Retriever.search`` (normalise, segment, embed
the question, dense + BM25, fusion, relevance gate) with the demo questions.
References, timed on the same question in the same loop iteration so that load
from other processes hits all three alike:

- numpy exact search: the query embedding, then one matrix-vector product and a top-5;
- a default Chroma collection (``create_collection(name)``: HNSW, L2, default
  parameters) holding the same vectors, queried for 5 results after the same
  query embedding; its recall@5 is measured against the exact top-5.

bm25: ``Index.lexical_scores`` (bm25s) against rank-bm25's ``BM25Okapi.get_scores``
on the same tokens: the ALQAC chunks (real text, real questions) and 50k synthetic chunks.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import Ctx, Row, Skip, Timer, chroma_add, chroma_client, main_alone, ms, p50_p95, verdict  # noqa: E402

SIZES = (1_000, 10_000, 50_000)
REPEATS = 2  # passes over the 36 demo questions per size
WORDS_PER_CHUNK = 80


def _vocab(ctx: Ctx) -> list[str]:
    from rag.ingest import demo_paths
    from rag.normalise import segment

    words: dict[str, int] = {}
    for p in demo_paths():
        for t in segment(p.read_text(encoding="utf-8")):
            words[t] = words.get(t, 0) + 1
    return sorted(words, key=lambda w: -words[w])


def synthetic_index(ctx: Ctx, n: int, seed: int = 0):
    """n chunks: Zipf-weighted bags of real words, random unit vectors of the embedder's dimension."""
    from rag.index import Index, make_manifest
    from rag.types import Chunk

    rng = np.random.default_rng(seed)
    vocab = _vocab(ctx)
    p = 1.0 / np.arange(1, len(vocab) + 1)
    p /= p.sum()
    draws = rng.choice(len(vocab), size=(n, WORDS_PER_CHUNK), p=p)
    tokens = [[vocab[j] for j in row] for row in draws]
    chunks = [Chunk(id=f"syn{i:06d}", text=" ".join(t).replace("_", " "), header=f"Văn bản {i // 40} › Điều {i % 40 + 1}",
                    document=f"Văn bản {i // 40}", source=f"doc{i // 40}.md", article=str(i % 40 + 1))
              for i, t in enumerate(tokens)]
    dim = ctx.embedder.dimension
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    manifest = make_manifest(ctx.embedder.spec, dim, chunks, {}, None, "bench")
    return Index(manifest, chunks, vectors, tokens, None, location=f"synthetic {n}")


def run_search(ctx: Ctx) -> list[Row]:
    from rag.normalise import normalise_text
    from rag.retrieve import Retriever

    questions = ctx.demo_questions()
    rows = []
    for n in SIZES:
        index = synthetic_index(ctx, n)
        retriever = Retriever(index, ctx.embedder, ctx.settings)
        client = chroma_client(ctx.tmp / f"chroma-search-{n}")
        col = client.create_collection(f"bench{n}")
        with Timer() as t_add:
            chroma_add(col, client, [c.id for c in index.chunks], index.vectors)
        for q in questions[:3]:  # warm-up: bm25s index, document frequencies, pyvi, Chroma's HNSW load
            retriever.search(q, 5)
            col.query(query_embeddings=[ctx.embedder.embed_query(q)], n_results=5)
        ours, exact, chroma, embed, recall = [], [], [], [], []

        def project(q):
            with Timer() as t:
                retriever.search(q, 5)
            ours.append(t.s * 1000)

        def references(q):
            with Timer() as te:
                qv = ctx.embedder.embed_query(normalise_text(q))
            with Timer() as tx:
                s = index.vectors @ qv
                top = np.argpartition(-s, 5)[:5]
                top = top[np.argsort(-s[top])]
            exact.append((te.s + tx.s) * 1000)
            embed.append(te.s * 1000)
            with Timer() as tc:
                got = col.query(query_embeddings=[qv], n_results=5, include=[])
            chroma.append((te.s + tc.s) * 1000)
            truth = {index.chunks[i].id for i in top}
            recall.append(len(truth & set(got["ids"][0])) / 5)

        for rep in range(REPEATS):
            for j, q in enumerate(questions):
                # Alternate who goes first, so neither side always gets the warmer thread pool.
                for step in ((project, references) if (rep + j) % 2 == 0 else (references, project)):
                    step(q)
        client.delete_collection(f"bench{n}")
        o50, o95 = p50_p95(ours)
        e50, e95 = p50_p95(exact)
        c50, c95 = p50_p95(chroma)
        q50, _ = p50_p95(embed)
        label = f"search p50 / p95 ms, {n // 1000}k chunks"
        rows.append(Row("search", label, f"{ms(o50)} / {ms(o95)}", f"{ms(e50)} / {ms(e95)}",
                        f"numpy exact top-5 + query embedding (embedding alone p50 {ms(q50)})",
                        verdict(o50 <= 2 * e50, f"p50 ≤ 2× reference (is {o50 / e50:.2f}×)")))
        rows.append(Row("search", label, f"{ms(o50)} / {ms(o95)}", f"{ms(c50)} / {ms(c95)}",
                        f"default Chroma query + query embedding; Chroma recall@5 vs exact "
                        f"{100 * np.mean(recall):.0f}% (adding {n} vectors took {t_add.s:.0f} s)",
                        "this project searches exactly (recall 100%)"))
        del index, retriever
    ctx.notes.append(f"search: {len(questions)} demo questions × {REPEATS} per size; the project's figure covers "
                     "normalising, pyvi segmentation, query embedding, dense + BM25 scoring, fusion and the relevance "
                     "gate; vectors are random, so Chroma's recall is a worst case for HNSW.")
    return rows


def run_bm25(ctx: Ctx) -> list[Row]:
    from rank_bm25 import BM25Okapi

    from rag.index import Index, build_bm25
    from rag.normalise import segment

    corpora = []
    try:
        data = ctx.alqac()
        index = ctx.index(data["index_dir"])
        corpora.append((f"ALQAC, {len(index)} real chunks", index, [segment(r.question) for r in data["rows"]]))
    except Skip as e:
        ctx.notes.append(f"bm25: ALQAC part skipped ({e})")
    syn = synthetic_index(ctx, 50_000, seed=1)
    corpora.append(("50k synthetic chunks", syn, [segment(q) for q in ctx.demo_questions()]))
    rows = []
    for label, index, queries in corpora:
        with Timer() as tb:
            bm = build_bm25(index.tokens)
        with Timer() as tr:
            okapi = BM25Okapi(index.tokens)
        fresh = Index(index.manifest, index.chunks, index.vectors, index.tokens, bm)
        fresh.lexical_scores(queries[0])
        ours, ref, agree = [], [], []
        for q in queries:
            with Timer() as t:
                a = fresh.lexical_scores(q)
            ours.append(t.s * 1000)
            with Timer() as t:
                b = okapi.get_scores(q)
            ref.append(t.s * 1000)
            agree.append(int(np.argmax(a)) == int(np.argmax(b)) or not a.any())
        o50, o95 = p50_p95(ours)
        r50, r95 = p50_p95(ref)
        rows.append(Row("bm25", f"query p50 / p95 ms, {label}", f"{ms(o50)} / {ms(o95)}", f"{ms(r50)} / {ms(r95)}",
                        f"rank-bm25 BM25Okapi.get_scores, same tokens ({len(queries)} queries; same top-1 "
                        f"{100 * np.mean(agree):.0f}%)", f"{r50 / o50:.0f}× faster at p50"))
        rows.append(Row("bm25", f"index build s, {label}", f"{tb.s:.1f}", f"{tr.s:.1f}", "rank-bm25 BM25Okapi(...)", ""))
    return rows


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "search,bm25"
    runs = {"search": run_search, "bm25": run_bm25}
    if not set(which.split(",")) <= set(runs):
        sys.exit(f"usage: python benchmarks/bench_search.py [search|bm25|search,bm25], not {which!r}")
    sys.exit(main_alone({name: runs[name] for name in runs if name in which.split(",")}))
