"""Evaluation reports: report.json, the Markdown summary table and the recall@k chart (matplotlib, optional)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from ..errors import InputError
from .metrics import ARTICLE, CURVE_K, DOCUMENT


def write_json(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def load_report(path: str | Path) -> dict:
    path = Path(path)
    try:
        if not path.is_file():
            raise FileNotFoundError(path)
        report = json.loads(path.read_text(encoding="utf-8"))
        missing = [k for k in ("config", "retrieval", "refusal") if k not in report]
        if missing:
            raise KeyError(", ".join(missing))
        report["retrieval"]["article"]  # noqa: B018 - shape check
        markdown_summary([report])  # every figure the table reads is there and is a number
        return report
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such report file (a report.json written by `rag eval`).") from e
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError, OSError) as e:
        raise InputError(f"{path}: not a report written by `rag eval` ({type(e).__name__}: {e}).") from e


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
