"""Shared helpers for the benchmark scripts: data paths, ALQAC loading, metrics, timing, tables, the run context."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
ALQAC = SHARED / "alqac2023"
HUST_PDF = SHARED / "hust-regulations" / "pdf"


class Skip(Exception):
    """A benchmark cannot run here (data absent, optional file missing); the message says why."""


def need(path: Path) -> Path:
    if not path.exists():
        sys.exit(f"skipped: {path} is absent (the shared real-data folder is only in the development checkout)")
    return path


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def load_average() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def git_revision() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return f"{sha}{' + uncommitted changes' if dirty else ''}" if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def alqac_documents():
    """ALQAC 2023 laws as rag Documents: one per law, each article written as 'Điều N. title' + body."""
    from rag.evaluate import alqac_law_text
    from rag.types import Document, Page

    laws = json.loads(need(ALQAC / "law.json").read_text(encoding="utf-8"))
    docs = [Document(source=law["id"], title=law["id"], pages=[Page(1, alqac_law_text(law))],
                     sha256=str(hash(law["id"])), kind="json") for law in laws]
    return laws, docs


def alqac_questions():
    rows = json.loads(need(ALQAC / "train.json").read_text(encoding="utf-8"))
    return [(r["text"], {(a["law_id"], a["article_id"]) for a in r["relevant_articles"]}) for r in rows]


def dedupe(keys):
    seen, out = set(), []
    for k in keys:
        if k not in seen:
            seen.add(k)
            out.append(k)
    return out


def rank_metrics(ranked_lists, golds, ks=(1, 5, 10)):
    """Recall@k (share of questions with a gold item in the first k), MRR@10, nDCG@10 — in percent.

    The same functions as `rag eval` (rag.evaluate), over plain keys compared with ==.
    """
    from rag.evaluate import retrieval_metrics

    m = retrieval_metrics(ranked_lists, [list(g) for g in golds], lambda item, gold: item == gold, ks)
    return {k: 100 * m[k] for k in (*(f"R@{k}" for k in ks), "MRR@10", "nDCG@10")}


def table(rows, headers):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = " | ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def markdown_table(rows, headers) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


class Timer:
    def __enter__(self):
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t


def p50_p95(values_ms) -> tuple[float, float]:
    from rag.evaluate import percentile

    return percentile(values_ms, 50), percentile(values_ms, 95)


def ms(v: float) -> str:
    return f"{v:.1f}" if v < 10 else f"{v:.0f}"


# -- one row of the results table -----------------------------------------------------------------
@dataclass
class Row:
    bench: str
    measure: str
    project: str  # this project's figure
    reference: str  # the reference figure, measured in the same run
    reference_is: str  # what the reference is
    target: str = ""  # the target and whether it is met, where there is one

    def cells(self) -> list[str]:
        return [self.bench, self.measure, self.project, self.reference, self.reference_is, self.target]


HEADERS = ["benchmark", "measure", "this project", "reference", "reference is", "target"]


def verdict(ok: bool, text: str) -> str:
    return f"{text}: {'met' if ok else 'NOT met'}"


# -- the shared context of one run ----------------------------------------------------------------
@dataclass
class Ctx:
    """What several benchmarks share in one run: settings, the loaded embedder, temp indexes, chart data.

    Everything is written under a temporary directory removed at the end; nothing is cached in the repo.
    """

    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rag-bench-")))
    notes: list[str] = field(default_factory=list)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    sections: dict[str, str] = field(default_factory=dict)  # benchmark → Markdown detail for RESULTS.md
    _settings: object = None
    _embedder: object = None
    _alqac: dict | None = None
    _demo: Path | None = None
    _vectors: dict = field(default_factory=dict)  # text → vector, shared by indexes whose chunks are identical
    reused_vectors: int = 0

    @property
    def settings(self):
        if self._settings is None:
            from rag.config import Settings

            # The user's RAG_* settings (embedder, reranker…) are honoured; the index is always a temp one.
            self._settings = Settings.from_env(os.environ).with_(index_dir=self.tmp / "unused")
        return self._settings

    @property
    def embedder(self):
        if self._embedder is None:
            from rag.embed import Embedder

            self._embedder = Embedder.load(self.settings)
            self._embedder.embed_passages(["khởi động"] * 4)  # first-call overheads are not anyone's throughput
        return self._embedder

    def remember_vectors(self, texts, vectors) -> None:
        for t, v in zip(texts, vectors):
            self._vectors[t] = v

    def embed(self, texts):
        """Embed passages, reusing any vector already computed this run for the identical text."""
        import numpy as np

        todo = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        self.reused_vectors += len(texts) - len(todo)
        if todo:
            self.remember_vectors(todo, self.embedder.embed_passages(todo))
        dim = self.embedder.dimension
        return np.stack([self._vectors[t] for t in texts]) if texts else np.zeros((0, dim), dtype=np.float32)

    def alqac(self) -> dict:
        """ALQAC converted by `rag eval --convert-alqac` (questions + laws as JSON documents) and ingested once.

        Returns {"rows", "laws_dir", "index_dir", "ingest": IngestReport}; the ingest is the one the ingest
        benchmark times (run alone, the quality benchmark builds it the same way).
        """
        if self._alqac is None:
            if not (ALQAC / "law.json").exists():
                raise Skip(f"{ALQAC} is absent (the shared real-data folder is only in the development checkout)")
            from rag.evaluate import convert_alqac, load_dataset
            from rag.ingest import ingest

            conv = convert_alqac(ALQAC, self.tmp / "alqac" / "alqac.jsonl")
            embedder = self.embedder
            index_dir = self.tmp / "alqac" / "index"
            report = ingest([conv["laws_dir"]], self.settings, embedder=embedder, directory=index_dir,
                            progress=False)
            if not report.ok:
                raise RuntimeError(report.summary())
            self._alqac = {"rows": load_dataset(conv["dataset"]), "laws_dir": conv["laws_dir"],
                           "index_dir": index_dir, "ingest": report}
        return self._alqac

    def index(self, directory: Path):
        from rag.index import Index

        return Index.open(self.settings.with_(index_dir=directory), self.embedder.spec)

    def demo_index(self) -> Path:
        if self._demo is None:
            from rag.ingest import demo_paths, ingest

            self._demo = self.tmp / "demo" / "index"
            ingest(demo_paths(), self.settings, embedder=self.embedder, directory=self._demo, progress=False)
        return self._demo

    def demo_questions(self) -> list[str]:
        from importlib import resources

        text = resources.files("rag.demo").joinpath("eval.jsonl").read_text(encoding="utf-8")
        return [json.loads(l)["question"] for l in text.splitlines() if l.strip()]

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)


# -- running benchmarks ---------------------------------------------------------------------------
def offline() -> None:
    """Models come from the local cache only; Chroma sends nothing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def run_benchmarks(runs, ctx: Ctx, t0: float) -> tuple[list[Row], dict[str, float]]:
    """Each ``name → run(ctx)`` in order: their rows and durations; a Skip or a failure becomes a note and
    the others still run."""
    import traceback

    rows: list[Row] = []
    durations = {}
    for name, run in runs.items():
        print(f"[{time.perf_counter() - t0:6.0f} s] {name} …", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            rows += run(ctx)
        except Skip as e:
            ctx.notes.append(f"{name}: skipped ({e})")
        except Exception as e:  # noqa: BLE001 - report and carry on with the other benchmarks
            traceback.print_exc()
            ctx.notes.append(f"{name}: FAILED ({type(e).__name__}: {e})")
        durations[name] = time.perf_counter() - t
    return rows, durations


def report(rows: list[Row], ctx: Ctx, load_start: str, load_end: str, total_s: float) -> None:
    """The results table, the notes, the machine and the load average, on stdout."""
    print()
    table([r.cells() for r in rows], HEADERS)
    for n in ctx.notes:
        print(f"note: {n}")
    print(f"\n{machine()}; load average (1/5/15 min) at start {load_start}, at end {load_end}; {total_s / 60:.1f} min")


def main_alone(runs) -> int:
    """``python benchmarks/bench_X.py``: what ``run_all.py --only X`` prints, without writing RESULTS.md."""
    if str(REPO) not in sys.path:
        sys.path.insert(1, str(REPO))  # rag, predict.py and runpod_worker from this checkout, as run_all.py does
    offline()
    load_start, t0, ctx = load_average(), time.perf_counter(), Ctx()
    try:
        rows, _ = run_benchmarks(runs, ctx, t0)
    finally:
        ctx.close()
    report(rows, ctx, load_start, load_average(), time.perf_counter() - t0)
    return 0


def chroma_client(path: Path):
    """A default Chroma client (what a tutorial creates), telemetry off."""
    import chromadb

    return chromadb.PersistentClient(path=str(path), settings=chromadb.config.Settings(anonymized_telemetry=False))


def chroma_add(col, client, ids, vectors, documents=None) -> None:
    step = max(1, min(5000, client.get_max_batch_size()))
    for s in range(0, len(ids), step):
        col.add(ids=ids[s:s + step], embeddings=vectors[s:s + step],
                documents=None if documents is None else documents[s:s + step])


def median(values) -> float:
    return statistics.median(values)
