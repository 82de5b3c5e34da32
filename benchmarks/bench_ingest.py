"""Ingest throughput: `rag ingest` of the ALQAC laws against the embedder alone on the same chunks.

    python benchmarks/run_all.py --only ingest

The ingest path is the real one (rag.ingest.ingest over the laws written as JSON
documents by `rag eval --convert-alqac`: read, clean, chunk, embed, segment for
BM25, write Chroma + bm25s, swap in). The reference embeds exactly the chunks
that ingest produced, with the same loaded model, batch size and thread count.
The model is loaded before either clock starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Ctx, Row, Timer, verdict  # noqa: E402


def run(ctx: Ctx) -> list[Row]:
    data = ctx.alqac()  # the timed ingest (or the one the quality benchmark already ran)
    report = data["ingest"]
    index = ctx.index(data["index_dir"])
    texts = [c.full_text for c in index.chunks]
    with Timer() as t:
        vectors = ctx.embedder.embed_passages(texts)
    ctx.remember_vectors(texts, vectors)
    ingest_rate = report.chunk_count / report.seconds
    embed_rate = len(texts) / t.s
    ratio = ingest_rate / embed_rate
    return [
        Row("ingest", f"ALQAC: {report.document_count} laws → {report.chunk_count} chunks, chunks/s",
            f"{ingest_rate:.1f} ({report.seconds:.0f} s)", f"{embed_rate:.1f} ({t.s:.0f} s)",
            "embedder alone, same chunks", verdict(ratio >= 0.9, f"≥ 0.9× (is {ratio:.2f}×)")),
    ]


if __name__ == "__main__":
    from run_all import main

    sys.exit(main(["--only", "ingest"]))
