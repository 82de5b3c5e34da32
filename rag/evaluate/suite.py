"""`rag eval --corpora`: one table for the demo corpus, the HUST regulations and ALQAC, on held-out questions.

- **demo**: the bundled regulations and ``rag/demo/eval.jsonl`` (answerable questions and
  written off-topic ones), split into dev and test halves (``splits.halves``).
- **HUST**: the 9 PDFs of ``<data>/hust-regulations/pdf`` (OCR included) and the labelled
  SFT rows (``splits.hust_rows``), dev and test halves; plus ``benchmarks/hust_walk.jsonl``
  (18 questions a student asks, some naming a programme level) when present.
- **ALQAC**: the 16 laws and 100 train questions of ``<data>/alqac2023``, retrieval only,
  5-fold cross-validated: on each fold the field weight of the Điều title and the dense
  weight are chosen (``CV_GRID``, best MRR@10 on the other four folds) and the held-out
  fold is ranked with them; the figures pool the five held-out folds, so no question is
  ranked with settings chosen on itself.

Indexes are built once into ``work`` (default ``~/.cache/rag/eval``) and reused
(ingest is incremental). A corpus whose data is missing is reported as skipped. The
settings are the deployment's (``RAG_*``), one set for every corpus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import Settings
from .datasets import load_dataset
from .metrics import mrr_at, recall_at
from .runner import evaluate
from .splits import folds, halves, hust_rows

CV_GRID = [{"title_weight": t, "dense_weight": w} for t in (0.0, 0.3, 0.6) for w in (0.1, 0.3, 0.5, 0.8)]
K_FOLDS = 5


class _MemoEmbedder:
    """Query vectors computed once per question across the cross-validation grid."""

    def __init__(self, inner):
        self.inner, self.spec, self._memo = inner, inner.spec, {}

    def embed_query(self, text):
        if text not in self._memo:
            self._memo[text] = self.inner.embed_query(text)
        return self._memo[text]

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _pipeline(settings: Settings, index_dir: Path, paths, embedder, progress: bool):
    from ..ingest import ingest
    from ..pipeline import Pipeline

    ingest(paths, settings, directory=index_dir, embedder=embedder, progress=progress)
    return Pipeline.from_settings(settings.with_(index_dir=index_dir), embedder=embedder)


def run(data: Path, work: Path, settings: Settings, *, progress: bool = False,
        walk: Path | None = None) -> dict[str, Any]:
    """Every corpus's reports: {"columns": {name: report}, "skipped": {corpus: why}, "notes": {…}}."""
    from importlib import resources

    from ..embed import Embedder
    from ..ingest import demo_paths

    embedder = Embedder.load(settings)
    out: dict[str, Any] = {"columns": {}, "skipped": {}, "notes": {}}
    demo = _pipeline(settings, work / "demo", demo_paths(), embedder, progress)
    rows = _rows_from_text(resources.files("rag.demo").joinpath("eval.jsonl").read_text(encoding="utf-8"), work)
    for half, part in halves(rows).items():
        out["columns"][f"demo {half}"] = evaluate(demo, part, dataset=f"demo {half}")
    pdfs, sft = data / "hust-regulations" / "pdf", data / "hust-regulations" / "sft" / "sft_dataset.jsonl"
    if pdfs.is_dir() and sft.is_file():
        hust = _pipeline(settings, work / "hust", [pdfs], embedder, progress)
        rows, skipped = hust_rows(sft)
        out["notes"]["hust_left_out"] = dict(skipped)
        for half, part in halves(rows).items():
            out["columns"][f"HUST {half}"] = evaluate(hust, part, dataset=f"HUST {half}")
        if walk is not None and walk.is_file():
            out["columns"]["HUST walk"] = evaluate(hust, load_dataset(walk), dataset="HUST walk")
    else:
        out["skipped"]["HUST"] = f"no {pdfs} or {sft}"
    alqac = data / "alqac2023"
    if (alqac / "train.json").is_file() and (alqac / "law.json").is_file():
        out["columns"]["ALQAC 5-fold"] = alqac_cv(alqac, work / "alqac", settings, embedder, progress)
    else:
        out["skipped"]["ALQAC"] = f"no {alqac}/train.json and law.json"
    return out


def _rows_from_text(text: str, work: Path):
    work.mkdir(parents=True, exist_ok=True)
    tmp = work / "demo-eval.jsonl"
    tmp.write_text(text, encoding="utf-8")
    return load_dataset(tmp)


def alqac_cv(src: Path, work: Path, settings: Settings, embedder, progress: bool) -> dict[str, Any]:
    from .datasets import convert_alqac

    res = convert_alqac(src, work / "alqac.jsonl")
    pipe = _pipeline(settings, work / "index", [res["laws_dir"]], embedder, progress)
    pipe.retriever.embedder = _MemoEmbedder(pipe.retriever.embedder)
    rows = load_dataset(res["dataset"])
    positions: list[dict[str, list[int] | None]] = []  # per grid point: question id → Điều positions
    for point in CV_GRID:
        s = settings.with_(**point)
        pipe.settings = pipe.retriever.settings = s
        rep = evaluate(pipe, rows, retrieval_only=True)
        positions.append({d["id"]: d["article_positions"] for d in rep["rows"]})
    held: list[list[int]] = []
    chosen = []
    for k, fold in enumerate(folds(rows, K_FOLDS)):
        test_ids = {r.id for r in fold}
        train_ids = [r.id for r in rows if r.id not in test_ids]

        def mrr(j: int) -> float:
            return sum(mrr_at(positions[j][i] or [], 10) for i in train_ids) / len(train_ids)

        best = max(range(len(CV_GRID)), key=lambda j: (mrr(j), -j))
        chosen.append(CV_GRID[best])
        held += [positions[best][i] or [] for i in test_ids]
    n = len(held)
    article = {"n": n, **{f"R@{k}": sum(recall_at(p, k) for p in held) / n for k in (1, 5, 10)},
               "MRR@10": sum(mrr_at(p, 10) for p in held) / n}
    return {"dataset": {"name": "ALQAC 5-fold", "rows": n}, "retrieval": {"article": article, "document": {}},
            "refusal": {}, "answer": {}, "cv": {"chosen": chosen, "grid": CV_GRID}}


TABLE = [
    ("questions (answer / refuse)", lambda r: f"{r['dataset'].get('expected_answer', r['dataset']['rows'])} / "
                                              f"{r['dataset'].get('expected_refuse', 0)}"),
    ("document hit@1", lambda r: r["retrieval"].get("document", {}).get("R@1")),
    ("document hit@5", lambda r: r["retrieval"].get("document", {}).get("R@5")),
    ("Điều R@1", lambda r: r["retrieval"]["article"].get("R@1")),
    ("Điều R@5", lambda r: r["retrieval"]["article"].get("R@5")),
    ("Điều R@10", lambda r: r["retrieval"]["article"].get("R@10")),
    ("Điều MRR@10", lambda r: r["retrieval"]["article"].get("MRR@10")),
    ("fact-in-answer", lambda r: r.get("answer", {}).get("fact_in_answer")),
    ("answer length p50 (chars)", lambda r: r.get("answer", {}).get("chars_p50")),
    ("off-topic refused (refusal recall)", lambda r: r.get("refusal", {}).get("recall")),
    ("refusal precision", lambda r: r.get("refusal", {}).get("precision")),
    ("answerable refused", lambda r: r.get("refusal", {}).get("false_refusal")),
]


def table(result: dict[str, Any]) -> str:
    cols = result["columns"]
    lines = ["| metric | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for title, get in TABLE:
        cells = []
        for rep in cols.values():
            v = get(rep)
            cells.append("–" if v is None else (f"{100 * v:.1f}" if isinstance(v, float) else str(v)))
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    for corpus, why in result.get("skipped", {}).items():
        lines.append(f"\n{corpus}: skipped ({why})")
    if "ALQAC 5-fold" in cols:
        lines.append("\nALQAC settings chosen per fold: " + json.dumps(cols["ALQAC 5-fold"]["cv"]["chosen"]))
    return "\n".join(lines) + "\n"
