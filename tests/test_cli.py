"""The `rag` command-line contract (used by scripts): output shapes, exit codes, messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rag.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_search_json_shape(demo_index_dir, capsys):
    code, out, _ = run(capsys, "search", "Điểm rèn luyện loại tốt là bao nhiêu điểm?", "--index", str(demo_index_dir),
                       "--json", "--top-k", "3")
    assert code == 0
    data = json.loads(out)
    assert data["question"].startswith("Điểm rèn luyện") and len(data["hits"]) == 3
    hit = data["hits"][0]
    assert set(hit) >= {"rank", "score", "text", "citation"}
    assert set(hit["citation"]) == {"document", "source", "page", "chapter", "article", "article_title", "clause",
                                    "point", "page_label", "appendix", "appendix_title", "title", "section", "part"}
    assert hit["citation"]["document"] == "Quy chế công tác sinh viên"


def test_search_queries_file_one_json_per_line(demo_index_dir, capsys, tmp_path):
    qfile = tmp_path / "q.txt"
    qfile.write_text("Học bổng loại giỏi bao nhiêu tiền?\n\nKý túc xá đóng cửa lúc mấy giờ?\n", encoding="utf-8")
    code, out, _ = run(capsys, "search", "--queries", str(qfile), "--index", str(demo_index_dir))
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 2
    assert [json.loads(l)["question"] for l in lines] == ["Học bổng loại giỏi bao nhiêu tiền?",
                                                           "Ký túc xá đóng cửa lúc mấy giờ?"]


def test_search_queries_a_directory_or_a_huge_file_is_a_clear_input_error(demo_index_dir, capsys, tmp_path):
    code, _, err = run(capsys, "search", "--queries", str(tmp_path), "--index", str(demo_index_dir))
    assert code == 2 and "is a directory" in err and "no such file" not in err, err
    huge = tmp_path / "q.txt"
    with open(huge, "wb") as fh:  # sparse: 20 GB announced, nothing on disk; reading it all would fill memory
        fh.truncate(20 << 30)
    code, _, err = run(capsys, "search", "--queries", str(huge), "--index", str(demo_index_dir))
    assert code == 2 and "over the 10 MB limit" in err and "Traceback" not in err, err
    fifo = tmp_path / "q.fifo"
    os.mkfifo(fifo)  # nobody writes to it: reading would wait forever
    code, _, err = run(capsys, "search", "--queries", str(fifo), "--index", str(demo_index_dir))
    assert code == 2 and "is not a regular file" in err and "no such file" not in err, err
    nul = tmp_path / "nul.txt"
    nul.write_text("Học bổng loại giỏi bao nhiêu tiền?\n\nHọc bổng\x00 xét thế nào?\n", encoding="utf-8")
    code, out, err = run(capsys, "search", "--queries", str(nul), "--index", str(demo_index_dir))
    assert code == 2 and f"{nul}:3: " in err and "control character (U+0000)" in err, err
    assert out == ""  # checked before any result: a failed file prints no half of its results


def test_ask_json(demo_index_dir, capsys):
    code, out, _ = run(capsys, "ask", "Thời gian học tối đa của chương trình cử nhân là bao lâu?", "--index",
                       str(demo_index_dir), "--json")
    data = json.loads(out)
    assert code == 0 and data["refused"] is False and data["citations"]
    assert {"answer", "refused", "citations", "timings"} <= set(data)
    assert data["timings"]["retrieve_ms"] > 0


def test_ask_refuses_out_of_scope(demo_index_dir, capsys):
    code, out, _ = run(capsys, "ask", "Tỉ giá đô la hôm nay là bao nhiêu?", "--index", str(demo_index_dir), "--json")
    data = json.loads(out)
    assert code == 0 and data["refused"] is True and data["answer"].startswith("Không tìm thấy")


def test_info_prints_manifest(demo_index_dir, capsys):
    code, out, _ = run(capsys, "info", "--index", str(demo_index_dir))
    data = json.loads(out)
    assert code == 0 and data["embed_model"] == "all-MiniLM-L6-v2" and data["document_count"] == 3
    assert data["chunk_count"] > 40 and "normaliser_version" in data and "corpus_hash" in data


@pytest.mark.parametrize("question, needle", [("   ", "empty"), ("x" * 2500, "limit is 2000")])
def test_bad_question_exit_code_and_message(demo_index_dir, capsys, question, needle):
    code, _, err = run(capsys, "search", question, "--index", str(demo_index_dir))
    assert code == 2 and needle in err and "Traceback" not in err


def test_missing_index_and_partial_ingest_exit_codes(tmp_path, capsys, monkeypatch):
    code, _, err = run(capsys, "search", "học bổng", "--index", str(tmp_path / "none"))
    assert code == 3 and "rag ingest" in err
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ok.md").write_text("# Quy định\n\nĐiều 1. Học phí\nHọc phí đóng theo học kỳ.\n", encoding="utf-8")
    (docs / "bad.pdf").write_bytes(b"not a pdf")
    code, out, _ = run(capsys, "ingest", str(docs), "--index", str(tmp_path / "idx"), "--quiet")
    assert code == 1 and "1 added" in out and "bad.pdf" in out
    code, out, _ = run(capsys, "search", "học phí", "--index", str(tmp_path / "idx"), "--json")
    assert code == 0 and json.loads(out)["hits"][0]["citation"]["source"].endswith("ok.md")


@pytest.mark.slow
def test_console_script_builds_demo_index_on_first_ask(tmp_path):
    """A fresh machine: no RAG_INDEX_DIR, no index — `rag ask` builds the demo index and answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    exe = os.path.join(os.path.dirname(sys.executable), "rag")
    proc = subprocess.run([exe, "ask", "Điều kiện xét học bổng khuyến khích là gì?", "--json"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["citations"][0]["document"].startswith("Quy định về học bổng")
    assert (tmp_path / "cache" / "rag" / "index" / "manifest.json").exists()
    proc2 = subprocess.run([exe, "info"], env=env, capture_output=True, text=True, timeout=300)
    assert json.loads(proc2.stdout)["document_count"] == 3
