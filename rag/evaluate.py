"""Evaluation: questions with gold citations in, retrieval / refusal / citation / answer / latency metrics out.

The dataset is JSON Lines (UTF-8), one question per line; blank lines and lines
starting with ``#`` are skipped (use them for a header)::

    {"question": "Một kỳ em được đăng ký tối đa bao nhiêu tín chỉ?",
     "citations": [{"document": "Quy chế đào tạo trình độ đại học", "article": "8", "clause": "2"}],
     "answer": "Theo Điều 8, Khoản 2 …",
     "expected": "answer"}

- ``question`` (required): the question as a student would type it.
- ``citations``: the gold passages. Each has ``document`` (its title, or its file
  name with or without the extension), ``article`` (the Điều number) and
  ``clause`` (the Khoản), all optional, but each needs a document or an article.
- ``answer``: a reference answer, for token-F1.
- ``expected``: ``"answer"`` or ``"refuse"``; a row without it is not counted in
  refusal accuracy. A row expected to be refused has no gold citations.
- ``id`` and ``meta`` (anything) are carried into the report untouched.

Metrics (all fractions in [0, 1] in the JSON report):

- retrieval, at the Điều level (a hit counts when its document and Điều match a
  gold citation) and at the document level: R@k is the share of questions with a
  gold item among the first k distinct items (Điều, or documents) retrieved — the
  convention of the ALQAC reference figures — plus MRR@10 and nDCG@10 (each gold
  item counted once, binary gain);
- refusal accuracy: the answer (or, with ``retrieval_only``, the relevance gate)
  refuses exactly the rows expected to be refused;
- citation precision / recall of the Answer's citations against the gold ones,
  at the Điều level, and clause recall (a gold Khoản is found when a citation of
  its Điều covers it: whole-Điều citations and Khoản ranges such as "1-3" do);
- answer token-F1 against the reference (SQuAD-style bag of tokens; tokens are
  ``rag.normalise.syllables``: NFC, one tone placement, lower case, no punctuation);
- latency p50 / p95 per stage, from ``Answer.timings`` (or ``Retrieval.timings``).

Out of scope: LLM-as-judge answer grading, statistical significance tests.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .errors import InputError

RANK_DEPTH = 30  # chunks retrieved for the rank metrics: enough for 10 distinct Điều when long ones are split
CURVE_K = 10
ALLOWED_KEYS = ("question", "citations", "answer", "expected", "id", "meta")
CITATION_KEYS = ("document", "article", "clause")
EXPECTED = ("answer", "refuse")
ARTICLE, DOCUMENT = "article", "document"


# -- dataset -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GoldCitation:
    document: str | None = None
    article: str | None = None
    clause: str | None = None


@dataclass
class EvalRow:
    question: str
    citations: list[GoldCitation] = field(default_factory=list)
    answer: str | None = None
    expected: str | None = None  # "answer" | "refuse" | None (not counted in refusal accuracy)
    id: str | None = None
    meta: Any = None
    line: int = 0

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"question": self.question,
                               "citations": [{k: v for k, v in asdict(c).items() if v is not None} for c in self.citations]}
        for k in ("answer", "expected", "id", "meta"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out


def load_dataset(path: str | Path) -> list[EvalRow]:
    """Read and validate a dataset; a bad line raises InputError naming the file and the line number."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such dataset file (JSON Lines, one question per line).")
    rows = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").strip()
            except UnicodeDecodeError as e:
                raise InputError(f"{path}:{lineno}: not UTF-8 text ({e.reason}); save the file as UTF-8.") from e
            if not line or line.startswith("#"):
                continue
            try:
                data = json.loads(line)
            except ValueError as e:
                raise InputError(f"{path}:{lineno}: not valid JSON ({e}); each line must be one JSON object.") from e
            try:
                rows.append(parse_row(data, lineno))
            except InputError as e:
                raise InputError(f"{path}:{lineno}: {e}") from e
    if not rows:
        raise InputError(f"{path}: no questions in the file (blank lines and '#' lines are skipped).")
    return rows


def parse_row(data: Any, line: int = 0) -> EvalRow:
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(ALLOWED_KEYS))
    if unknown:
        raise InputError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(ALLOWED_KEYS)}")
    q = data.get("question")
    if not isinstance(q, str) or not q.strip():
        raise InputError("'question' is missing or empty: give the question as a non-empty string")
    cites = data.get("citations") or []
    if not isinstance(cites, list):
        raise InputError("'citations' must be a list of {\"document\", \"article\", \"clause\"} objects")
    golds = [_parse_citation(c, i) for i, c in enumerate(cites)]
    answer = data.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise InputError("'answer' must be a string (the reference answer)")
    expected = data.get("expected")
    if expected is not None and expected not in EXPECTED:
        raise InputError(f"'expected' is {expected!r}; use \"answer\" or \"refuse\"")
    if expected == "refuse" and golds:
        raise InputError("a row expected to be refused cannot have gold citations; drop them or use \"answer\"")
    rid = data.get("id")
    return EvalRow(question=q.strip(), citations=golds, answer=answer, expected=expected,
                   id=None if rid is None else str(rid), meta=data.get("meta"), line=line)


def _parse_citation(c: Any, i: int) -> GoldCitation:
    if not isinstance(c, dict):
        raise InputError(f"'citations[{i}]' must be an object with document / article / clause")
    unknown = sorted(set(c) - set(CITATION_KEYS))
    if unknown:
        raise InputError(f"'citations[{i}]' has unknown field(s) {', '.join(unknown)}; allowed: {', '.join(CITATION_KEYS)}")
    vals = {}
    for k in CITATION_KEYS:
        v = c.get(k)
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise InputError(f"'citations[{i}].{k}' must be a string or a number")
        vals[k] = str(v).strip()
    if "document" not in vals and "article" not in vals:
        raise InputError(f"'citations[{i}]' needs a 'document' or an 'article'")
    return GoldCitation(**vals)


# -- matching ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ref:
    """A retrieved or cited passage, reduced to what is compared with gold citations."""

    document: str
    source: str = ""
    article: str | None = None
    clause: str | None = None

    @classmethod
    def of(cls, obj) -> "Ref":
        """From a Chunk or a Citation."""
        return cls(document=obj.document or "", source=obj.source or "", article=obj.article, clause=obj.clause)


def _norm(s: str | None) -> str:
    from .normalise import normalise_text

    return re.sub(r"\s+", " ", normalise_text(s or "")).strip().casefold()


def _norm_article(s: str | None) -> str:
    return re.sub(r"^điều\s*", "", _norm(s))


def document_matches(gold: str, document: str, source: str = "") -> bool:
    """A gold document names a chunk's document by its title or its file name (with or without extension)."""
    g = _norm(gold)
    if not g:
        return False
    names = {_norm(document)}
    if source:
        p = Path(source)
        names |= {_norm(source), _norm(p.name), _norm(p.stem)}
    if g in names:
        return True
    doc = _norm(document)
    return doc.endswith("…") and len(doc) > 20 and g.startswith(doc[:-1])  # a clipped long title


def article_match(ref: Ref, gold: GoldCitation) -> bool:
    if gold.article is None or ref.article is None or _norm_article(ref.article) != _norm_article(gold.article):
        return False
    return gold.document is None or document_matches(gold.document, ref.document, ref.source)


def document_match(ref: Ref, gold: GoldCitation) -> bool:
    return gold.document is not None and document_matches(gold.document, ref.document, ref.source)


def cite_match(ref: Ref, gold: GoldCitation) -> bool:
    """Citation matching at the Điều level; a gold citation without an article matches on its document."""
    return article_match(ref, gold) if gold.article is not None else document_match(ref, gold)


def clause_covers(cited: str | None, gold: str) -> bool:
    """A whole-Điều citation covers every Khoản; "1-3" covers 2; "2, 4" covers 4."""
    if cited is None or not cited.strip():
        return True
    g = re.sub(r"^khoản\s*", "", _norm(gold))
    for part in re.split(r"[,;]", _norm(cited)):
        part = re.sub(r"^khoản\s*", "", part.strip())
        m = re.fullmatch(r"(\d+)\s*[-–]\s*(\d+)", part)
        if m and g.isdigit():
            if int(m.group(1)) <= int(g) <= int(m.group(2)):
                return True
        elif part == g:
            return True
    return False


def gold_units(golds: Sequence[GoldCitation], level: str) -> list[GoldCitation]:
    """The distinct relevant items at a level: Điều (document + article) or documents."""
    out, seen = [], set()
    for g in golds:
        if level == ARTICLE:
            if g.article is None:
                continue
            key, unit = (_norm(g.document), _norm_article(g.article)), GoldCitation(g.document, g.article)
        else:
            if g.document is None:
                continue
            key, unit = _norm(g.document), GoldCitation(g.document)
        if key not in seen:
            seen.add(key)
            out.append(unit)
    return out


def distinct_refs(refs: Iterable[Ref], level: str) -> list[Ref]:
    """Ranked refs with repeats of the same Điều (or document) removed; a passage outside any Điều keeps its rank."""
    out, seen = [], set()
    for i, r in enumerate(refs):
        if level == ARTICLE:
            key = (_norm(r.document), _norm(r.source), _norm_article(r.article)) if r.article else ("", "", i)
        else:
            key = (_norm(r.document), _norm(r.source))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


# -- metric functions ----------------------------------------------------------------------------
def gold_positions(ranked: Sequence, golds: Sequence, match: Callable[[Any, Any], bool]) -> list[int]:
    """1-based ranks at which gold items are found; each gold item and each ranked item is counted once."""
    found: set[int] = set()
    positions = []
    for rank, item in enumerate(ranked, start=1):
        for j, g in enumerate(golds):
            if j not in found and match(item, g):
                found.add(j)
                positions.append(rank)
                break
    return positions


def recall_at(positions: Sequence[int], k: int) -> float:
    """1 when a gold item is within the first k, else 0 (averaged over questions: the share found)."""
    return 1.0 if any(p <= k for p in positions) else 0.0


def mrr_at(positions: Sequence[int], k: int = 10) -> float:
    first = min(positions, default=None)
    return 1.0 / first if first is not None and first <= k else 0.0


def ndcg_at(positions: Sequence[int], n_relevant: int, k: int = 10) -> float:
    """Binary-gain nDCG: DCG of the found golds over the DCG of all golds ranked first."""
    if n_relevant <= 0:
        return 0.0
    dcg = sum(1.0 / math.log2(p + 1) for p in positions if p <= k)
    idcg = sum(1.0 / math.log2(i + 1) for i in range(1, min(n_relevant, k) + 1))
    return dcg / idcg


def retrieval_metrics(ranked_lists: Sequence[Sequence], gold_lists: Sequence[Sequence],
                      match: Callable[[Any, Any], bool], ks: Sequence[int] = (1, 5, 10),
                      curve_k: int = CURVE_K) -> dict:
    """R@k, MRR@10, nDCG@10 and the recall curve R@1..R@curve_k, as fractions; questions without gold are skipped."""
    per_q = []
    for ranked, golds in zip(ranked_lists, gold_lists):
        if golds:
            per_q.append((gold_positions(ranked, golds, match), len(golds)))
    n = len(per_q)
    out: dict[str, Any] = {"n": n}
    if not n:
        return out
    for k in ks:
        out[f"R@{k}"] = sum(recall_at(p, k) for p, _ in per_q) / n
    out["MRR@10"] = sum(mrr_at(p, 10) for p, _ in per_q) / n
    out["nDCG@10"] = sum(ndcg_at(p, g, 10) for p, g in per_q) / n
    out["curve"] = [sum(recall_at(p, k) for p, _ in per_q) / n for k in range(1, curve_k + 1)]
    return out


def answer_tokens(text: str) -> list[str]:
    from .normalise import syllables

    return syllables(text)


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style F1 over bags of normalised Vietnamese tokens (syllables and numbers)."""
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def citation_scores(cited: Sequence[Ref], golds: Sequence[GoldCitation]) -> dict:
    """Precision (None when nothing was cited), recall, and clause recall (None without gold Khoản)."""
    out: dict[str, float | None] = {"precision": None, "recall": None, "clause_recall": None}
    if not golds:
        return out
    if cited:
        out["precision"] = sum(any(cite_match(c, g) for g in golds) for c in cited) / len(cited)
    out["recall"] = sum(any(cite_match(c, g) for c in cited) for g in golds) / len(golds)
    with_clause = [g for g in golds if g.clause and g.article]
    if with_clause:
        out["clause_recall"] = sum(
            any(article_match(c, g) and clause_covers(c.clause, g.clause) for c in cited) for g in with_clause
        ) / len(with_clause)
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_summary(timings: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    stages: dict[str, list[float]] = {}
    for t in timings:
        for k, v in t.items():
            stages.setdefault(k, []).append(float(v))
    return {k: {"p50": percentile(v, 50), "p95": percentile(v, 95), "mean": sum(v) / len(v), "n": len(v)}
            for k, v in stages.items()}


def _mean(values: Sequence[float | None]) -> tuple[float | None, int]:
    vals = [v for v in values if v is not None]
    return (sum(vals) / len(vals) if vals else None), len(vals)


# -- evaluate a pipeline -------------------------------------------------------------------------
def config_of(pipeline, retrieval_only: bool, top_k: int) -> dict:
    s = pipeline.settings
    llm = None if retrieval_only or pipeline.generator is None else s.llm
    mode = "retrieval only" if retrieval_only else (f"LLM {llm}" if llm else "extractive")
    name = f"{s.embed_model} + BM25 (RRF){' + ' + s.reranker if s.reranker else ''} · {mode}"
    return {
        "name": name, "mode": mode, "index": pipeline.index.location, "chunks": len(pipeline.index),
        "embed_model": s.embed_model, "reranker": s.reranker, "llm": llm, "adapter": s.adapter if llm else None,
        "top_k": top_k, "rank_depth": max(RANK_DEPTH, top_k), "min_relevance": s.min_relevance,
        "retrieval_only": retrieval_only,
    }


def evaluate(pipeline, rows: Sequence[EvalRow], retrieval_only: bool = False, *, top_k: int | None = None,
             name: str | None = None, dataset: str | None = None, progress: bool = False) -> dict:
    """Run every question through ``pipeline`` and return the report (see the module docstring).

    The rank metrics come from a retrieval ``RANK_DEPTH`` chunks deep; the answer (unless
    ``retrieval_only``) from ``pipeline.answer`` with ``top_k`` passages, as a user gets it.
    """
    from .request import AskRequest

    settings = pipeline.settings
    top_k = AskRequest(question="?", top_k=top_k or settings.top_k).validate(settings).top_k
    for row in rows:  # a question the pipeline would reject fails now, with its line, not half-way through
        try:
            AskRequest(question=row.question).validate(settings)
        except InputError as e:
            raise InputError(f"dataset line {row.line}: {e}") from e
    depth = max(RANK_DEPTH, top_k)
    pipeline.warmup()  # lazy loads (pyvi, BM25 statistics) are not the first question's latency
    t0 = time.perf_counter()
    details, timings = [], []
    it = rows
    if progress:
        from tqdm import tqdm

        it = tqdm(rows, desc="eval", unit="q", leave=False)
    for row in it:
        retrieval = pipeline.retriever.search(row.question, depth)
        refs = [Ref.of(h.chunk) for h in retrieval.hits]
        d: dict[str, Any] = {"question": row.question, "line": row.line, "expected": row.expected}
        if row.id is not None:
            d["id"] = row.id
        for level in (ARTICLE, DOCUMENT):
            ranked = distinct_refs(refs, level)
            golds = gold_units(row.citations, level)
            match = article_match if level == ARTICLE else document_match
            d[f"{level}_positions"] = gold_positions(ranked[:CURVE_K], golds, match) if golds else None
            d[f"_{level}"] = (ranked, golds)
        d["retrieved"] = [_label(r) for r in distinct_refs(refs, ARTICLE)[:5]]
        if retrieval_only:
            d["refused"] = retrieval.refused
            timings.append(dict(retrieval.timings))
        else:
            answer = pipeline.answer(AskRequest(question=row.question, top_k=top_k))
            d["refused"] = answer.refused
            timings.append(dict(answer.timings))
            cited = [Ref.of(c) for c in answer.citations]
            d["cited"] = [_label(r) for r in cited]
            if row.expected != "refuse":
                d["citation"] = citation_scores(cited, row.citations)
            if row.answer is not None:
                d["token_f1"] = token_f1(answer.text, row.answer)
        details.append(d)

    report: dict[str, Any] = {
        "dataset": {"name": dataset, "rows": len(rows),
                    "expected_answer": sum(r.expected == "answer" for r in rows),
                    "expected_refuse": sum(r.expected == "refuse" for r in rows),
                    "with_article_gold": sum(bool(gold_units(r.citations, ARTICLE)) for r in rows),
                    "with_document_gold": sum(bool(gold_units(r.citations, DOCUMENT)) for r in rows),
                    "with_reference_answer": sum(r.answer is not None for r in rows)},
        "config": {**config_of(pipeline, retrieval_only, top_k), **({"name": name} if name else {})},
        "retrieval": {},
    }
    for level in (ARTICLE, DOCUMENT):
        pairs = [d.pop(f"_{level}") for d in details]
        match = article_match if level == ARTICLE else document_match
        report["retrieval"][level] = retrieval_metrics([p[0] for p in pairs], [p[1] for p in pairs], match)
    judged = [(d["expected"], d["refused"]) for d in details if d["expected"] in EXPECTED]
    report["refusal"] = {
        "accuracy": (sum((e == "refuse") == r for e, r in judged) / len(judged)) if judged else None,
        "n": len(judged),
        "wrongly_answered": [d["question"] for d in details if d["expected"] == "refuse" and not d["refused"]],
        "wrongly_refused": [d["question"] for d in details if d["expected"] == "answer" and d["refused"]],
    }
    if not retrieval_only:
        scored = [d["citation"] for d in details if "citation" in d]
        p, n_p = _mean([c["precision"] for c in scored])
        r, n_r = _mean([c["recall"] for c in scored])
        cr, n_cr = _mean([c["clause_recall"] for c in scored])
        report["citations"] = {"precision": p, "recall": r, "clause_recall": cr, "n_precision": n_p,
                               "n_recall": n_r, "n_clause": n_cr}
        f1, n_f1 = _mean([d.get("token_f1") for d in details])
        report["answer"] = {"token_f1": f1, "n": n_f1}
    report["latency_ms"] = latency_summary(timings)
    report["seconds"] = time.perf_counter() - t0
    report["rows"] = details
    return report


def _label(r: Ref) -> str:
    parts = [f"Điều {r.article}" if r.article else "(ngoài Điều)"]
    if r.clause:
        parts.append(f"Khoản {r.clause}")
    return f"{', '.join(parts)} — {r.document}"


# -- writers -------------------------------------------------------------------------------------
def write_json(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def load_report(path: str | Path) -> dict:
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        report["retrieval"]["article"]  # noqa: B018 - shape check
        return report
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such report (a report.json written by `rag eval`).") from e
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not a report written by `rag eval` ({e}).") from e


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _ms(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0f}"


def markdown_summary(reports: Sequence[dict]) -> str:
    """One table, one column per configuration (the first report is the current run)."""
    first = reports[0]
    ds = first["dataset"]
    lines = [f"# Evaluation: {ds.get('name') or 'dataset'}", "",
             f"{ds['rows']} questions ({ds['expected_answer']} to answer, {ds['expected_refuse']} to refuse, "
             f"{ds['with_article_gold']} with a gold Điều, {ds['with_reference_answer']} with a reference answer). "
             "Figures in percent; latency in ms.", ""]
    heads = [r["config"]["name"] for r in reports]
    rows: list[list[str]] = []
    for level, title in ((ARTICLE, "Điều"), (DOCUMENT, "document")):
        for m in ("R@1", "R@5", "R@10", "MRR@10", "nDCG@10"):
            rows.append([f"{title} {m}", *(_pct(r["retrieval"][level].get(m)) for r in reports)])
    rows.append(["refusal accuracy", *(_pct(r["refusal"]["accuracy"]) for r in reports)])
    for key, title in (("precision", "citation precision"), ("recall", "citation recall"),
                       ("clause_recall", "Khoản recall")):
        rows.append([title, *(_pct(r.get("citations", {}).get(key)) for r in reports)])
    rows.append(["answer token-F1", *(_pct(r.get("answer", {}).get("token_f1")) for r in reports)])
    stages = list(dict.fromkeys(k for r in reports for k in r.get("latency_ms", {})))
    for st in stages:
        for q in ("p50", "p95"):
            rows.append([f"{st.removesuffix('_ms')} {q} (ms)",
                         *(_ms(r.get("latency_ms", {}).get(st, {}).get(q)) for r in reports)])
    lines.append("| metric | " + " | ".join(heads) + " |")
    lines.append("|---|" + "---:|" * len(heads))
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    wrong = first["refusal"]
    if wrong["wrongly_answered"] or wrong["wrongly_refused"]:
        lines += ["", "Refusal errors (this run):"]
        lines += [f"- answered, should refuse: {q}" for q in wrong["wrongly_answered"]]
        lines += [f"- refused, should answer: {q}" for q in wrong["wrongly_refused"]]
    return "\n".join(lines) + "\n"


def write_markdown(reports: Sequence[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown_summary(reports), encoding="utf-8")
    return path


def chart_panels(reports: Sequence[dict]) -> dict[str, dict[str, list[float]]]:
    panels: dict[str, dict[str, list[float]]] = {"Điều level (document + article)": {}, "document level": {}}
    for r in reports:
        for level, title in ((ARTICLE, "Điều level (document + article)"), (DOCUMENT, "document level")):
            curve = r["retrieval"][level].get("curve")
            if curve:
                label, n = r["config"]["name"], 2
                while label in panels[title]:  # two runs of one configuration: keep both lines
                    label, n = f"{r['config']['name']} ({n})", n + 1
                panels[title][label] = curve
    return {t: p for t, p in panels.items() if p}


def write_chart(path: str | Path, panels: dict[str, dict[str, list[float]]], title: str | None = None) -> Path:
    """A PNG of recall@k curves: one panel per title, one line per configuration.

    Needs matplotlib (imported here, with the Agg canvas: no display, no global backend switch).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise InputError("the recall chart needs matplotlib: `pip install matplotlib`.", code="missing_dependency") from e
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = max(1, len(panels))
    fig = Figure(figsize=(5.2 * n, 4.0), dpi=110, layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (ptitle, series) in zip(axes, panels.items()):
        for label, curve in series.items():
            ks = list(range(1, len(curve) + 1))
            ax.plot(ks, [100 * v for v in curve], marker="o", markersize=3, label=label)
        ax.set_title(ptitle, fontsize=10)
        ax.set_xlabel("k (distinct items retrieved)")
        ax.set_ylabel("recall@k (% of questions)")
        ax.set_ylim(0, 100)
        ax.set_xticks(range(1, CURVE_K + 1))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(path, format="png")
    return path


def write_outputs(report: dict, out_dir: str | Path, compare: Sequence[dict] = ()) -> dict[str, Path | None]:
    """report.json, summary.md and recall.png in ``out_dir``; the chart is skipped (None) without matplotlib."""
    out = Path(out_dir)
    reports = [report, *compare]
    paths: dict[str, Path | None] = {"json": write_json(report, out / "report.json"),
                                     "markdown": write_markdown(reports, out / "summary.md")}
    try:
        paths["chart"] = write_chart(out / "recall.png", chart_panels(reports),
                                     title=f"recall@k — {report['dataset'].get('name') or ''}")
    except InputError as e:
        if e.code != "missing_dependency":
            raise
        paths["chart"] = None
    return paths


# -- ALQAC ---------------------------------------------------------------------------------------
def alqac_law_text(law: dict) -> str:
    """One ALQAC law as text: each article written 'Điều N. title' then its body (the benchmark's layout too)."""
    parts = []
    for art in law["articles"]:
        title, _, body = art["text"].partition("\n\n")
        parts.append(f"Điều {art['id']}. {title.strip()}\n{body.strip()}")
    return "\n\n".join(parts)


def alqac_rows(train: list[dict]) -> list[EvalRow]:
    rows = []
    for r in train:
        golds = [GoldCitation(document=a["law_id"], article=str(a["article_id"])) for a in r["relevant_articles"]]
        rows.append(EvalRow(question=r["text"].strip(), citations=golds, expected="answer", id=r.get("question_id"),
                            meta={"question_type": r.get("question_type"), "answer": r.get("answer")}))
    return rows


def _safe_name(name: str) -> str:
    return re.sub(r"[\\/:*?\"<>|\x00-\x1f]", "_", name).strip() or "law"


def convert_alqac(src: str | Path, out: str | Path) -> dict:
    """ALQAC 2023 (a folder with train.json and law.json, or train.json itself) → this module's dataset shape.

    Writes ``out`` (JSON Lines; document = law id, article = article id) and, when law.json
    is there, the laws as rag JSON documents in ``<out without .jsonl>-laws/`` (title = law
    id), ready for ``rag ingest``. The ALQAC answer (Đúng/Sai or a choice) is kept in
    ``meta``, not as a reference answer: token-F1 against it would mean nothing.
    """
    src, out = Path(src), Path(out)
    train_path = src / "train.json" if src.is_dir() else src
    try:
        train = json.loads(train_path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise InputError(f"{train_path}: not found; give the alqac2023 folder or its train.json.") from e
    except ValueError as e:
        raise InputError(f"{train_path}: not valid JSON ({e}).") from e
    try:
        rows = alqac_rows(train)
    except (KeyError, TypeError) as e:
        raise InputError(f"{train_path}: not the ALQAC train.json shape (missing {e}).") from e
    out.parent.mkdir(parents=True, exist_ok=True)
    header = f"# ALQAC 2023 questions converted from {train_path.name} by `rag eval --convert-alqac`\n"
    out.write_text(header + "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in rows),
                   encoding="utf-8")
    result: dict[str, Any] = {"dataset": out, "questions": len(rows), "laws_dir": None, "laws": 0}
    law_path = train_path.parent / "law.json"
    if law_path.is_file():
        laws = json.loads(law_path.read_text(encoding="utf-8"))
        laws_dir = out.with_name(out.name.removesuffix(".jsonl") + "-laws")
        laws_dir.mkdir(parents=True, exist_ok=True)
        for law in laws:
            doc = {"title": law["id"], "text": alqac_law_text(law)}
            (laws_dir / f"{_safe_name(law['id'])}.json").write_text(json.dumps(doc, ensure_ascii=False),
                                                                   encoding="utf-8")
        result.update(laws_dir=laws_dir, laws=len(laws))
    return result
