"""benchmarks/run_all.py rewrites RESULTS.md one run at a time: the figures of the benchmarks a run did not
measure stay, under the date they were measured (no benchmark is run here)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from run_all import _earlier_sections  # noqa: E402

ONE_TABLE = """# Benchmark results

Latest run of `python benchmarks/run_all.py`, 2026-11-28 10:07 UTC, commit f037807.

- Machine: a 2-core CPU; CPU only.
- Load average (1/5/15 min): 5.5 / 5.1 / 6.4 at start, 3.9 / 4.5 / 5.3 at end.

| benchmark | measure | this project | reference | reference is | target |
|---|---|---|---|---|---|
| ingest | ALQAC chunks/s | 11.5 | 11.4 | embedder alone |  |
| search | search p50 / p95 ms, 1k chunks | 34 / 846 | 35 / 825 | numpy exact |  |
| cold start | CLI, s | 6.3 | 5.5 | imports only |  |

Notes:

- search: 36 demo questions.
"""


def test_the_one_table_layout_becomes_a_dated_section_without_the_figures_measured_again():
    (section,) = _earlier_sections(ONE_TABLE, {"coldstart", "load"})
    assert section.startswith("## ingest, search: 2026-11-28 10:07 UTC (not measured again since)")
    assert "<!-- benchmarks: ingest,search -->" in section
    assert "| ingest | ALQAC chunks/s |" in section and "| search |" in section
    assert "cold start" not in section and "5.5 / 5.1 / 6.4" in section and "- search: 36 demo questions." in section


def test_a_section_measured_again_entirely_is_dropped_and_the_others_kept_whole():
    text = ("# Benchmark results\n\nintro\n\n"
            "## coldstart, load: 2026-12-04 01:00 UTC\n\n<!-- benchmarks: coldstart,load -->\n\n"
            "| benchmark | measure |\n|---|---|\n| cold start | CLI |\n| load | Cog |\n\n### load\n\ndetail\n\n"
            "## ingest: 2026-11-28 10:07 UTC\n\n<!-- benchmarks: ingest -->\n\n| ingest | x |\n")
    kept = _earlier_sections(text, {"coldstart", "load", "embed"})
    assert kept == ["## ingest: 2026-11-28 10:07 UTC\n\n<!-- benchmarks: ingest -->\n\n| ingest | x |\n"]
    (partial,) = _earlier_sections(text, {"load", "ingest"})
    assert partial.startswith("## coldstart: 2026-12-04 01:00 UTC (not measured again since)")
    assert "| cold start | CLI |" in partial and "| load |" not in partial and "### load" not in partial
    assert "detail" not in partial


def test_no_earlier_file_keeps_nothing():
    assert _earlier_sections("", {"load"}) == []


def test_a_section_already_partly_replaced_keeps_one_note():
    text = ("## ingest, search: 2026-11-28 10:07 UTC (not measured again since)\n\n<!-- benchmarks: ingest,search -->\n\n"
            "| benchmark | measure |\n|---|---|\n| ingest | x |\n| search | y |\n")
    (partial,) = _earlier_sections(text, {"ingest"})
    assert partial.splitlines()[0] == "## search: 2026-11-28 10:07 UTC (not measured again since)"


def test_a_benchmark_run_alone_prints_the_table_and_notes_without_run_all(capsys):
    """``python benchmarks/bench_X.py`` goes through common.main_alone (no import of run_all, which imports
    every bench): rows in order, a skipped or failing benchmark as a note, the others still run."""
    import common

    def ok(ctx):
        return [common.Row("search", "p50 ms", "12", "10", "numpy exact")]

    def skipped(ctx):
        raise common.Skip("no data here")

    def broken(ctx):
        raise RuntimeError("boom")

    assert common.main_alone({"search": ok, "quality": skipped, "load": broken, "bm25": ok}) == 0
    out = capsys.readouterr().out
    assert out.count("| p50 ms") == 2 and "note: quality: skipped (no data here)" in out
    assert "note: load: FAILED (RuntimeError: boom)" in out and "load average" in out
    for bench in ("bench_baseline", "bench_coldstart", "bench_ingest", "bench_search"):
        text = (ROOT / "benchmarks" / f"{bench}.py").read_text(encoding="utf-8")
        assert "run_all" not in text.split('if __name__ == "__main__":')[1], bench
