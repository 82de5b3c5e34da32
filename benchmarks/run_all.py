"""Every benchmark in one command, one table; each figure next to its reference measured in the same run.

    python benchmarks/run_all.py                          # all: about 20-30 min on 2 CPU cores
    python benchmarks/run_all.py --only search            # one benchmark (or several: --only search,bm25)
    python benchmarks/run_all.py --only quality --write   # also rewrite RESULTS.md / recall.png from this run
    python benchmarks/run_all.py --only load,coldstart --write   # replaces those sections of RESULTS.md only

Benchmarks (each module's docstring says exactly what is measured):

- ``ingest``    bench_ingest.py    `rag ingest` of ALQAC vs the embedder alone on the same chunks
- ``quality``   bench_baseline.py  the tutorial RAG baseline vs this project on ALQAC and the HUST PDFs
- ``search``    bench_search.py    search p50/p95 at 1k/10k/50k chunks vs numpy exact and default Chroma
- ``bm25``      bench_search.py    bm25s (Index.lexical_scores) vs rank-bm25 on the same tokens
- ``coldstart`` bench_coldstart.py process start → first answer: CLI, Cog runner, RunPod worker
- ``load``      bench_load.py      requests/s and p50/p95 at 1-16 concurrent requests: Cog, RunPod, `rag serve`
- ``embed``     bench_embed.py     query embedding by thread count and load, batch encoding by precision

A full run (no ``--only``) writes ``benchmarks/RESULTS.md`` (the table, the
machine, the load average) and ``benchmarks/recall.png`` (recall@k curves of
the quality benchmark). RESULTS.md has one section per run: a run with
``--only … --write`` replaces the figures of the benchmarks it ran and keeps the
others, under the date they were measured. Everything else lives in a temp
directory removed at the end. Parts that need ../shared/data skip with a note when it is absent.
The user's RAG_* settings apply (embedder, reranker); the cold starts run
without them.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import (HEADERS, Ctx, Row, git_revision, load_average, machine, markdown_table, offline,  # noqa: E402
                    report, run_benchmarks)

ORDER = ("ingest", "quality", "search", "bm25", "coldstart", "load", "embed")  # quality reuses ingest's index
# The first cell of a benchmark's rows in the results table.
LABELS = {"coldstart": "cold start"}


def _bench(name: str):
    if name == "ingest":
        from bench_ingest import run
    elif name == "quality":
        from bench_baseline import run
    elif name == "search":
        from bench_search import run_search as run
    elif name == "bm25":
        from bench_search import run_bm25 as run
    elif name == "coldstart":
        from bench_coldstart import run
    elif name == "load":
        from bench_load import run
    elif name == "embed":
        return _run_embed
    else:
        raise ValueError(name)
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help=f"comma-separated subset of: {', '.join(ORDER)}")
    ap.add_argument("--write", action="store_true", help="write RESULTS.md and recall.png even with --only")
    ap.add_argument("--results", default=str(HERE / "RESULTS.md"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    names = list(ORDER)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        bad = [n for n in names if n not in ORDER]
        if bad:
            ap.error(f"unknown benchmark(s) {', '.join(bad)}; choose from {', '.join(ORDER)}")
        names = [n for n in ORDER if n in names]
    write = args.write or not args.only

    offline()
    started = datetime.now(timezone.utc)
    load_start = load_average()
    t0 = time.perf_counter()
    ctx = Ctx()
    try:
        # each module is imported as its turn comes: one that fails to import is a FAILED note, not the end
        runs = {name: (lambda c, n=name: _bench(n)(c)) for name in names}
        rows, durations = run_benchmarks(runs, ctx, t0)
    finally:
        ctx.close()
    total = time.perf_counter() - t0
    load_end = load_average()
    report(rows, ctx, load_start, load_end, total)
    if write:
        chart = None
        if ctx.curves:
            from rag.evaluate import write_chart

            chart = write_chart(HERE / "recall.png", ctx.curves, title="recall@k at the Điều level: tutorial "
                                                                       "baseline vs this project")
        _write_results(Path(args.results), rows, ctx, chart, names, durations, started, total, load_start, load_end)
        print(f"wrote {args.results}" + (f" and {chart}" if chart else ""), file=sys.stderr)
    return 0


def _run_embed(ctx: Ctx) -> list[Row]:
    """bench_embed.py's printout, kept whole in RESULTS.md (it has no reference rows of its own)."""
    import contextlib
    import io

    from bench_embed import main as embed_main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        embed_main([])
    print(out.getvalue())
    ctx.sections["embed"] = "```\n" + out.getvalue().strip() + "\n```\n"
    return []


MARK = "<!-- benchmarks: {} -->"
MARK_RE = re.compile(r"<!-- benchmarks: ([\w,]+) -->")


def _write_results(path, rows, ctx, chart, names, durations, started, total, load_start, load_end) -> None:
    s = ctx.settings
    command = f"python benchmarks/run_all.py{'' if names == list(ORDER) else ' --only ' + ','.join(names)}"
    lines = [
        f"## {', '.join(names)}: {started:%Y-%m-%d %H:%M} UTC",
        "",
        MARK.format(",".join(names)),
        f"`{command}`, commit {git_revision()}.",
        "",
        f"- Machine: {machine()}; CPU only.",
        f"- Load average (1/5/15 min): {load_start} at start, {load_end} at end. The machine was shared with other "
        "work during the run, so absolute times are noisy; each reference was timed in the same run, interleaved "
        "where possible, so the ratios are the figures to read.",
        f"- Settings: embedder {s.embed_model}, reranker {s.reranker or 'none'}, "
        f"{'LLM ' + s.llm if s.llm else 'extractive answers (no LLM)'}, top_k {s.top_k}.",
        f"- Duration: {total / 60:.1f} min ("
        + ", ".join(f"{n} {durations[n] / 60:.1f}" for n in names if n in durations) + ").",
        "",
    ]
    if rows:
        lines += [markdown_table([r.cells() for r in rows], HEADERS)]
    if chart:
        lines += [f"![recall@k: tutorial baseline vs this project]({chart.name})", "",
                  f"`{chart.name}`: recall@k (share of questions with the gold Điều among the first k distinct Điều "
                  "retrieved), k = 1…10.", ""]
    for name in names:
        if name in ctx.sections:
            lines += [f"### {name}", "", ctx.sections[name], ""]
    if ctx.notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in ctx.notes] + [""]
    if ctx.reused_vectors:
        lines += [f"Embeddings reused between identical chunks in this run: {ctx.reused_vectors}.", ""]
    head = ["# Benchmark results", "",
            "One section per run of `benchmarks/run_all.py`, newest first; a section keeps the figures of the "
            "benchmarks no later run measured again, under the date they were measured. Every figure stands next "
            "to its reference, measured in the same run on the same machine.", ""]
    earlier = _earlier_sections(path.read_text(encoding="utf-8") if path.exists() else "", set(names))
    path.write_text("\n".join(head + lines) + "".join("\n" + e for e in earlier), encoding="utf-8")


def _earlier_sections(text: str, measured: set[str]) -> list[str]:
    """The sections of an earlier RESULTS.md, less the figures of the benchmarks in ``measured``."""
    body = text.split("\n", 1)[1] if text.startswith("# ") else text
    parts = re.split(r"(?m)^(?=## )", body)
    if len(parts) == 1 and "| benchmark |" in body:  # the one-table layout: one section, named after its rows
        legacy = re.search(r"Latest run of `([^`]*)`, ([\d-]+ [\d:]+ UTC), (commit .*)", body)
        found = [n for n in ORDER if f"\n| {LABELS.get(n, n)} |" in body]
        title = f"## {', '.join(found)}: {legacy.group(2)}" if legacy else f"## {', '.join(found)}"
        rest = body.split("\n- Machine", 1)[-1]
        intro = f"`{legacy.group(1)}`, {legacy.group(3)}" if legacy else ""
        parts = ["", f"{title}\n\n{MARK.format(','.join(found))}\n{intro}\n\n- Machine{rest}"]
    kept = []
    for part in parts:
        m = MARK_RE.search(part)
        if not part.startswith("## ") or not m:
            continue
        had = m.group(1).split(",")
        left = [n for n in had if n not in measured]
        if not left:
            continue
        if len(left) < len(had):
            gone = {f"| {LABELS.get(n, n)} |" for n in had if n in measured}
            out, skip = [], False
            for line in part.splitlines():
                if any(line.startswith(g) for g in gone):
                    continue
                if line.startswith("### "):  # a benchmark's detail section
                    skip = line[4:].strip() in measured
                elif line.startswith(("Notes:", "Embeddings reused")):
                    skip = False
                if not skip:
                    out.append(line)
            part = "\n".join(out) + "\n"
            part = part.replace(m.group(0), MARK.format(",".join(left)))
            date = part.splitlines()[0].split(": ", 1)[-1].removesuffix(" (not measured again since)")
            part = re.sub(r"^## [^\n]*", f"## {', '.join(left)}: {date} (not measured again since)", part, count=1)
        kept.append(part.rstrip("\n") + "\n")
    return kept


if __name__ == "__main__":
    sys.exit(main())
