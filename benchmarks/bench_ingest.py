"""Ingest throughput: `rag ingest` of the ALQAC laws against the embedder alone on the same chunks.

    python benchmarks/run_all.py --only ingest
    python benchmarks/bench_ingest.py --hust      # the 9 HUST PDFs (OCR included): sequential vs overlapped

The second form times, in one run and alternating, the 9 HUST regulation PDFs (3 scanned: OCR in every run,
each run has a fresh index directory and so no OCR cache) ingested stage after stage — every file read,
OCR'd, chunked and word-segmented in turn, then all chunks embedded, then written — and by `rag.ingest.ingest`,
which reads in a process pool while a thread embeds; for RAG_EMBED_DTYPE=float32 and for the default (auto),
with the embedder alone on the same chunks as the reference for chunks/s. It prints the load average.

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

from common import Ctx, Row, Timer, main_alone, verdict  # noqa: E402


ROUNDS = 3  # (ingest, reference) pairs; the figure is their median ratio


def run(ctx: Ctx) -> list[Row]:
    """Rounds of one ingest then the reference (the embedder alone on the chunks that ingest produced, one
    call), each ingest into a fresh index; the ratio is taken within each round and the median of the rounds
    is reported. On a shared machine the same embedding calls vary by ±10% from one minute to the next, so one
    pair decides nothing: what drifts weighs on both sides of a round, and the median drops an outlier."""
    from rag.ingest import ingest

    data = ctx.alqac()  # the first round's ingest (or the one the quality benchmark already ran)
    report = data["ingest"]
    index = ctx.index(data["index_dir"])
    texts = [c.full_text for c in index.chunks]
    ingests, refs = [report.seconds], []
    for r in range(ROUNDS):
        if r:
            again = ingest([data["laws_dir"]], ctx.settings, embedder=ctx.embedder,
                           directory=ctx.tmp / "alqac" / f"again-{r}", progress=False)
            if not again.ok or again.chunk_count != report.chunk_count:
                raise RuntimeError(again.summary())
            ingests.append(again.seconds)
        with Timer() as t:
            vectors = ctx.embedder.embed_passages(texts)
        refs.append(t.s)
    ctx.remember_vectors(texts, vectors)
    ratios = sorted(ref / ing for ing, ref in zip(ingests, refs))
    ratio = ratios[len(ratios) // 2]
    k = [ref / ing for ing, ref in zip(ingests, refs)].index(ratio)
    n = report.chunk_count
    pairs = ", ".join(f"{i:.0f}/{e:.0f} s" for i, e in zip(ingests, refs))
    return [
        Row("ingest", f"ALQAC: {report.document_count} laws → {n} chunks, chunks/s (the median of {ROUNDS} rounds "
            f"of one ingest then the reference, ingest/reference: {pairs}; ratios "
            f"{' '.join(f'{x:.2f}' for x in ratios)})",
            f"{n / ingests[k]:.1f} ({ingests[k]:.0f} s)", f"{n / refs[k]:.1f} ({refs[k]:.0f} s)",
            "embedder alone, same chunks, one call", verdict(ratio >= 0.9, f"≥ 0.9× (is {ratio:.2f}×)")),
    ]


HUST_PDF = Path(__file__).resolve().parents[2] / "shared" / "data" / "hust-regulations" / "pdf"


def _sequential(paths, settings, embedder, directory: Path) -> int:
    """One stage after the other, one file after the other: what ingest did before its stages overlapped."""
    from rag.embed import EmbedSpec
    from rag.index import index_lock, make_manifest, new_collection_name, write_index
    from rag.ingest import read_chunks

    chunks, tokens, files = [], [], {}
    for path in paths:
        got = read_chunks(path, path.name, None, settings, directory)
        if got[0] == "error":
            print(f"  {path.name}: {got[2]}")
            continue
        info, meta, cs, toks = got
        chunks += cs
        tokens += toks
        files[path.name] = {**info, "meta": meta, "sidecar_sha256": ""}
    vectors = embedder.embed_passages([c.full_text for c in chunks])
    spec = EmbedSpec.from_settings(settings)
    manifest = make_manifest(spec, embedder.dimension, chunks, files, None, new_collection_name(settings),
                             embed_dtype=embedder.dtype)
    with index_lock(settings, directory):
        write_index(settings, manifest, chunks, vectors, tokens, directory=directory)
    return len(chunks)


def hust(rounds: int = 1) -> int:
    import os
    import tempfile

    from common import load_average

    from rag.config import Settings
    from rag.embed import Embedder
    from rag.ingest import ingest

    if not HUST_PDF.is_dir():
        print(f"{HUST_PDF} is absent: nothing to time")
        return 0
    paths = sorted(HUST_PDF.glob("*.pdf"))
    print(f"load average at start: {load_average()}; {len(paths)} PDFs, cores: {os.cpu_count()}")
    embedders = {}
    for name in ("float32", "auto"):
        e = Embedder.load(Settings.from_env({"RAG_EMBED_DTYPE": name}))
        if name == "auto" and e.dtype == "float32":
            print("auto is float32 on this machine (no native bf16): timed once")
            continue
        embedders[name] = e
    times: dict[tuple[str, str], list[float]] = {}
    chunk_texts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name, emb in embedders.items():
                settings = Settings.from_env({"RAG_EMBED_DTYPE": name})
                for mode in ("sequential", "overlapped"):
                    d = Path(tmp) / f"{name}-{mode}-{r}"
                    with Timer() as t:
                        if mode == "sequential":
                            n = _sequential(paths, settings, emb, d)
                        else:
                            n = ingest(paths, settings, embedder=emb, directory=d, progress=False).chunk_count
                    times.setdefault((name, mode), []).append(t.s)
                    print(f"  {name:>8} {mode:>10}: {t.s:6.1f} s, {n} chunks")
                    if mode == "overlapped":
                        chunk_texts[name] = [c.full_text for c in _open(settings, d).chunks]
            for name, emb in embedders.items():
                with Timer() as t:
                    emb.embed_passages(chunk_texts[name])
                times.setdefault((name, "embedder alone"), []).append(t.s)
    print(f"\nwall time, best of {rounds} (s); chunks/s against the embedder alone on the same chunks")
    for name in embedders:
        n = len(chunk_texts[name])
        seq, ovl, alone = (min(times[(name, m)]) for m in ("sequential", "overlapped", "embedder alone"))
        print(f"{name:>8}: sequential {seq:6.1f}  overlapped {ovl:6.1f} ({seq / ovl:.2f}× faster)  "
              f"embedder alone {alone:6.1f}; chunks/s overlapped {n / ovl:.1f} = {alone / ovl:.2f}× embedder alone")
    if "auto" in embedders:
        print(f"default vs float32, overlapped: {min(times[('float32', 'overlapped')]) / min(times[('auto', 'overlapped')]):.2f}×")
    print(f"load average at end: {load_average()}")
    return 0


def _open(settings, directory):
    from rag.embed import EmbedSpec
    from rag.index import Index

    return Index.open(settings, EmbedSpec.from_settings(settings), directory=directory)


if __name__ == "__main__":
    if "--hust" in sys.argv[1:]:
        sys.exit(hust(int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 1))
    sys.exit(main_alone({"ingest": run}))
