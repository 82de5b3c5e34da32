"""Retrieval quality against the RAG a student builds from the common tutorials, on ALQAC and the HUST PDFs.

    python benchmarks/run_all.py --only quality

The baseline: fixed 1,000-character chunks with 100 characters of overlap, the
same embedder (dense only, the question embedded as typed), a default Chroma
collection (``create_collection(name)``: HNSW, L2) queried for the nearest
chunks. It reads the same text the project's loader produced (loaded and
cleaned), so what differs is chunking, retrieval and question handling.

This project: the real ``rag ingest`` index and ``rag eval --retrieval-only``
(``rag.evaluate.evaluate``) with its default settings.

Both are scored at the Điều level by the same functions (rag.evaluate). A
baseline chunk maps back to the Điều it overlaps, by character offsets: the
document text is partitioned at the start of each of the project's chunks
(found in the text in order), and a window counts for every Điều it overlaps,
largest overlap first.

Data: ALQAC 2023 (100 questions over 16 laws, converted by
``rag eval --convert-alqac``); the HUST regulation PDFs with a text layer (the
three scanned ones need OCR and are left out) with the questions in
``benchmarks/hust_questions.jsonl``. The ALQAC reference of
../shared/data/README.md (rank_bm25 over whole articles) is measured too.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import HUST_PDF, Ctx, Row, Skip, chroma_add, chroma_client, main_alone, verdict  # noqa: E402

CHUNK_CHARS = 1000
OVERLAP = 100
QUERY_CHUNKS = 30  # chunks fetched from Chroma: enough for 10 distinct Điều
HUST_QUESTIONS = Path(__file__).resolve().parent / "hust_questions.jsonl"
BASELINE = "tutorial baseline: 1,000/100-char chunks, dense only, Chroma defaults"
PROJECT = "this project: Điều chunks, hybrid dense + BM25 (RRF)"


def windows(text: str, size: int = CHUNK_CHARS, overlap: int = OVERLAP) -> list[tuple[int, int]]:
    step = size - overlap
    out, start = [], 0
    while start < len(text):
        out.append((start, min(len(text), start + size)))
        if start + size >= len(text):
            break
        start += step
    return out


def partition(text: str, chunks) -> list[tuple[int, object]]:
    """(start offset, Ref) for each of the project's chunks of this document, found in order in the text."""
    from rag.evaluate import Ref

    out, pos = [], 0
    for c in chunks:
        probe = next((ln.strip() for ln in c.text.splitlines() if ln.strip()), "")[:50]
        i = text.find(probe, pos) if probe else -1
        if i < 0:
            continue  # its text stays with the previous chunk's Điều
        out.append((i, Ref.of(c)))
        pos = i
    return out


def window_refs(start: int, end: int, parts: list[tuple[int, object]], doc_ref) -> list:
    """The Điều a window overlaps, largest overlap first; text before the first chunk belongs to the document."""
    spans = [(0, parts[0][0] if parts else 10**12, doc_ref)] if not parts or parts[0][0] > 0 else []
    spans += [(s, parts[i + 1][0] if i + 1 < len(parts) else 10**12, r) for i, (s, r) in enumerate(parts)]
    overlap: dict = {}
    for s, e, r in spans:
        o = min(end, e) - max(start, s)
        if o > 0:
            key = (r.document, r.article) if r.article else ("", id(r))
            if key not in overlap or overlap[key][0] < o:
                overlap[key] = (o, r)
    return [r for _, r in sorted(overlap.values(), key=lambda x: -x[0])]


def baseline_curve(ctx: Ctx, name: str, docs, chunks_by_source, rows) -> dict:
    """Chunk, embed, index in default Chroma, query; score with rag.evaluate."""
    from rag.evaluate import ARTICLE, Ref, article_match, distinct_refs, gold_units, retrieval_metrics

    texts, refs = [], []
    for doc in docs:
        text = doc.text
        parts = partition(text, chunks_by_source[doc.source])
        doc_ref = Ref(document=doc.title, source=doc.source)
        for s, e in windows(text):
            texts.append(text[s:e])
            refs.append(window_refs(s, e, parts, doc_ref))
    vectors = ctx.embed(texts)
    client = chroma_client(ctx.tmp / f"chroma-baseline-{name}")
    col = client.create_collection("baseline")
    chroma_add(col, client, [f"w{i}" for i in range(len(texts))], vectors, texts)
    ranked = []
    for row in rows:
        got = col.query(query_embeddings=[ctx.embedder.embed_query(row.question)],
                        n_results=min(QUERY_CHUNKS, len(texts)), include=[])
        flat = [r for cid in got["ids"][0] for r in refs[int(cid[1:])]]
        ranked.append(distinct_refs(flat, ARTICLE))
    m = retrieval_metrics(ranked, [gold_units(r.citations, ARTICLE) for r in rows], article_match)
    m["chunks"] = len(texts)
    return m


def project_report(ctx: Ctx, index_dir: Path, rows, dataset: str) -> dict:
    from rag.evaluate import evaluate
    from rag.pipeline import Pipeline

    settings = ctx.settings.with_(index_dir=index_dir)
    index = ctx.index(index_dir)
    ctx.remember_vectors([c.full_text for c in index.chunks], index.vectors)
    return evaluate(Pipeline(settings, index, ctx.embedder), rows, retrieval_only=True, dataset=dataset)


def _rows(corpus: str, ours: dict, base: dict, n_q: int, target_r1: bool) -> list[Row]:
    out = []
    for m in ("R@1", "R@10", "MRR@10"):
        target = ""
        if m == "R@1" and target_r1:
            gain = 100 * (ours[m] - base[m])
            target = verdict(gain >= 10, f"≥ baseline + 10 points (is {gain:+.0f})")
        out.append(Row("quality", f"{corpus} ({n_q} q), Điều {m}", f"{100 * ours[m]:.0f}", f"{100 * base[m]:.0f}",
                       f"{BASELINE} ({base['chunks']} chunks)", target))
    return out


def run(ctx: Ctx) -> list[Row]:
    rows: list[Row] = []
    try:
        rows += run_alqac(ctx)
    except Skip as e:
        ctx.notes.append(f"quality: ALQAC skipped ({e})")
    try:
        rows += run_hust(ctx)
    except Skip as e:
        ctx.notes.append(f"quality: HUST skipped ({e})")
    return rows


def run_alqac(ctx: Ctx) -> list[Row]:
    from bench_retrieval import bm25_reference

    from rag.ingest import read_document

    data = ctx.alqac()
    qrows = data["rows"]
    report = project_report(ctx, data["index_dir"], qrows, "ALQAC 2023 train")
    ours = report["retrieval"]["article"]
    index = ctx.index(data["index_dir"])
    by_source: dict = {}
    for c in index.chunks:
        by_source.setdefault(c.source, []).append(c)
    docs = [read_document(p, ctx.settings, source=p.name) for p in sorted(Path(data["laws_dir"]).glob("*.json"))]
    base = baseline_curve(ctx, "alqac", docs, by_source, qrows)
    ref = bm25_reference(("pyvi words",))["pyvi words"]
    ctx.curves["ALQAC 2023 (100 questions, 16 laws)"] = {BASELINE: base["curve"], PROJECT: ours["curve"]}
    rows = _rows("ALQAC", ours, base, len(qrows), True)
    rows.append(Row("quality", f"ALQAC ({len(qrows)} q), Điều R@1", f"{100 * ours['R@1']:.0f}", f"{ref['R@1']:.0f}",
                    "rank_bm25 over whole articles, pyvi words (data README reference; R@10 "
                    f"{ref['R@10']:.0f}, MRR@10 {ref['MRR@10']:.0f})",
                    verdict(100 * ours["R@1"] > ref["R@1"], "above it")))
    return rows


def run_hust(ctx: Ctx) -> list[Row]:
    from rag.evaluate import load_dataset
    from rag.ingest import ingest, read_document

    if not HUST_PDF.exists():
        raise Skip(f"{HUST_PDF} is absent")
    qrows = load_dataset(HUST_QUESTIONS)
    index_dir = ctx.tmp / "hust" / "index"
    settings = ctx.settings.with_(ocr="never")
    rep = ingest([HUST_PDF], settings, embedder=ctx.embedder, directory=index_dir, progress=False)
    added = [f.source for f in rep.files if f.status == "added"]
    failed = [f.source for f in rep.files if f.status == "failed"]
    if failed:
        ctx.notes.append(f"quality: HUST PDFs left out (no text layer, OCR off): {', '.join(failed)}")
    report = project_report(ctx, index_dir, qrows, "HUST regulations")
    ours = report["retrieval"]["article"]
    index = ctx.index(index_dir)
    by_source: dict = {}
    for c in index.chunks:
        by_source.setdefault(c.source, []).append(c)
    docs = [read_document(HUST_PDF / s, settings, source=s) for s in added]
    base = baseline_curve(ctx, "hust", docs, by_source, qrows)
    ctx.curves[f"HUST regulations ({len(qrows)} questions, {len(added)} PDFs)"] = {
        BASELINE: base["curve"], PROJECT: ours["curve"]}
    return _rows(f"HUST PDFs ({len(added)} with text)", ours, base, len(qrows), False)


if __name__ == "__main__":
    sys.exit(main_alone({"quality": run}))
