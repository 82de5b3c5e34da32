"""Embedding speed: query latency by thread count, alone and beside a busy process; batch throughput by precision.

    python benchmarks/bench_embed.py [--queries 40] [--passages 48]

Prints, in one run (so every figure has its reference measured under the same machine load):
  * one-question embedding p50/p95 for 1 and 2 torch threads, with no competing process and with one
    busy-loop subprocess; the settings in play are RAG_EMBED_QUERY_THREADS (default 1);
  * one-question embedding right after a dense product over 50k chunks (what retrieval does), with numpy's
    BLAS threads left alone and limited to 1 (threadpoolctl);
  * batch encoding of ALQAC law articles in passages/s for float32 and bfloat16 at 1 thread and at all
    cores (RAG_EMBED_INGEST_THREADS, default all), and the cosine between the two precisions' vectors.
Measurements of different configurations are interleaved round by round. The load average is printed
at the start and the end. Needs ../shared/data/alqac2023 for the passages (falls back to the demo).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ALQAC = ROOT.parent / "shared" / "data" / "alqac2023"


def _texts(n_queries: int, n_passages: int) -> tuple[list[str], list[str]]:
    if (ALQAC / "law.json").exists():
        laws = json.loads((ALQAC / "law.json").read_text())
        qs = [q["text"] for q in json.loads((ALQAC / "train.json").read_text())]
        arts = [a["text"] for law in laws for a in law["articles"]]
        step = max(1, len(arts) // n_passages)
        arts = arts[::step][:n_passages]
    else:
        from rag.ingest import demo_paths

        print("(../shared/data/alqac2023 absent: demo regulations instead)")
        arts = [p for path in demo_paths() for p in path.read_text().split("\n\n") if len(p) > 80][:n_passages]
        qs = [a[:120] for a in arts]
    norm = lambda t: unicodedata.normalize("NFC", t)  # noqa: E731
    return [norm(q) for q in qs[:n_queries]], [norm(a) for a in arts]


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def _busy() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=40, help="questions timed per configuration")
    ap.add_argument("--passages", type=int, default=48, help="articles encoded per batch measurement")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the batch measurement")
    args = ap.parse_args(argv)

    import numpy as np

    from rag.config import Settings
    from rag.embed import Embedder, cpu_has_native_bf16, _cores

    cores = _cores()
    print(f"load average at start: {_load()}  cores: {cores}  native bf16: {cpu_has_native_bf16()}")
    queries, passages = _texts(args.queries, args.passages)
    f32 = Embedder.load(Settings.from_env({"RAG_EMBED_DTYPE": "float32"}))
    bf16 = Embedder.load(Settings.from_env({"RAG_EMBED_DTYPE": "bfloat16"}))
    for e in (f32, bf16):
        e.embed_query("khởi động")  # warm-up outside every clock

    # ---- one question: threads 1 vs 2, alone vs beside a busy process (interleaved per question)
    times: dict[tuple[int, str], list[float]] = {}
    for competing in ("alone", "busy process"):
        proc = _busy() if competing != "alone" else None
        try:
            time.sleep(0.3 if proc else 0)
            for q in queries:
                for threads in (1, 2):
                    f32.query_threads = threads
                    t = time.perf_counter()
                    f32.embed_query(q)
                    times.setdefault((threads, competing), []).append((time.perf_counter() - t) * 1000)
        finally:
            if proc:
                proc.kill()
                proc.wait()
    f32.query_threads = 1
    print(f"\none question, float32, {len(queries)} ALQAC questions (ms)")
    print(f"{'threads':>8} {'competing':>14} {'p50':>7} {'p95':>7}  p50 vs 1 thread alone")
    ref = statistics.median(times[(1, "alone")])
    for (threads, competing), xs in times.items():
        print(f"{threads:>8} {competing:>14} {statistics.median(xs):7.1f} {_pct(xs, 95):7.1f}  "
              f"{statistics.median(xs) / ref:.2f}×")

    # ---- one question after a dense product over 50k chunks (numpy BLAS threads), BLAS limited or not
    matrix = np.random.default_rng(0).standard_normal((50_000, 384), dtype=np.float32)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    after: dict[str, list[float]] = {"idle before": [], "after product": [], "after product, BLAS 1 thread": []}
    for q in queries:
        t = time.perf_counter()
        f32.embed_query(q)
        after["idle before"].append((time.perf_counter() - t) * 1000)
        matrix @ matrix[0]
        t = time.perf_counter()
        f32.embed_query(q)
        after["after product"].append((time.perf_counter() - t) * 1000)
        if threadpool_limits:
            with threadpool_limits(limits=1, user_api="blas"):
                matrix @ matrix[0]
            t = time.perf_counter()
            f32.embed_query(q)
            after["after product, BLAS 1 thread"].append((time.perf_counter() - t) * 1000)
    print("\none question right after retrieval's dense product (50k × 384), 1 thread (ms)")
    ref = statistics.median(after["idle before"])
    for name, xs in after.items():
        if xs:
            print(f"{name:>30}: p50 {statistics.median(xs):6.1f}  p95 {_pct(xs, 95):6.1f}  "
                  f"{statistics.median(xs) / ref:.2f}× idle")

    # ---- batches: float32 vs bfloat16, 1 thread vs all cores, rounds interleaved
    rates: dict[tuple[str, int], list[float]] = {}
    vecs = {}
    for _ in range(args.rounds):
        for e in (f32, bf16):
            for threads in sorted({1, cores}):
                e.ingest_threads = threads
                t = time.perf_counter()
                vecs[e.dtype] = e.embed_passages(passages)
                rates.setdefault((e.dtype, threads), []).append(len(passages) / (time.perf_counter() - t))
    print(f"\nbatch encoding, {len(passages)} ALQAC articles, batch {f32.batch_size} (passages/s, best of "
          f"{args.rounds})")
    ref = max(rates[("float32", cores)])
    for (dtype, threads), xs in rates.items():
        print(f"{dtype:>9} threads {threads}: {max(xs):6.1f}  {max(xs) / ref:.2f}× float32 at {cores} threads")
    cos = (vecs["float32"] * vecs["bfloat16"]).sum(axis=1)
    print(f"cosine bfloat16 vs float32 vectors: min {cos.min():.4f}, mean {cos.mean():.4f}")
    print(f"RAG_EMBED_DTYPE=auto picks on this machine's CPU: {_auto_dtype()}")
    print(f"load average at end: {_load()}")
    return 0


def _auto_dtype() -> str:
    from rag.embed import resolve_dtype

    return resolve_dtype("auto", "cpu")


if __name__ == "__main__":
    sys.exit(main())
