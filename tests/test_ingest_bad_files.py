"""One bad file never ends an ingest: it is named with its reason, the rest is indexed, the exit code says so.

Bad files: JSON nested past the parser's recursion limit, a name that is not valid UTF-8,
a file deleted after listing, a FIFO, a socket, a link to /dev/zero, a file over the size
cap (checked while reading, not only by stat). Nothing may hang or print a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rag.cli import EXIT_PARTIAL, main
from rag.errors import InputError
from rag.index import Index
from rag.ingest import ingest
from rag.load import iter_files
from rag.load.safe import read_regular
from rag.reader import read_chunks

GOOD = "# Quy định học phí\n\nĐiều 1. Học phí\nHọc phí được đóng theo từng học kỳ trước ngày 15.\n"
DEEP_JSON = b'{"title": "x", "pages": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
BAD_NAME = os.fsdecode(b"quy-ch\xe9.md")  # Latin-1 bytes: not UTF-8


def _bad_folder(root: Path) -> Path:
    docs = root / "docs"
    docs.mkdir()
    (docs / "good.md").write_text(GOOD, encoding="utf-8")
    (docs / "deep.json").write_bytes(DEEP_JSON)
    (docs / BAD_NAME).write_text(GOOD.replace("15", "20"), encoding="utf-8")
    os.mkfifo(docs / "pipe.md")
    (docs / "zero.txt").symlink_to("/dev/zero")
    return docs


def test_ingest_skips_each_bad_file_and_indexes_the_rest(tmp_path, embedder, settings_factory):
    docs = _bad_folder(tmp_path)
    s = settings_factory(tmp_path / "idx")
    report = ingest([str(docs)], s, embedder=embedder, progress=False)
    by = {f.source: f for f in report.files}
    assert by["good.md"].status == "added"
    assert by["deep.json"].status == "failed" and "nested too deeply" in by["deep.json"].reason
    pipe = next(f for f in report.files if f.source.endswith("pipe.md"))
    assert pipe.status == "failed" and pipe.code == "not_regular_file"
    bad = next(f for f in report.files if "quy-ch" in f.source)
    assert bad.status == "failed" and "not valid UTF-8" in bad.reason and "\\xe9" in bad.source
    assert not report.ok
    assert {c.source for c in Index.open(s).chunks} == {"good.md"}
    summary = report.summary()
    assert "deep.json" in summary and "not valid UTF-8" in summary
    summary.encode("utf-8")  # printable as is
    json.dumps(report.to_dict(), ensure_ascii=False).encode("utf-8")


def test_file_deleted_after_listing_is_named(tmp_path, embedder, settings_factory, monkeypatch):
    import rag.load

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text(GOOD, encoding="utf-8")
    (docs / "gone.md").write_text(GOOD.replace("15", "25"), encoding="utf-8")
    real = rag.load.iter_files

    def list_then_delete(paths, **kw):
        listing = real(paths, **kw)
        (docs / "gone.md").unlink()
        return listing

    monkeypatch.setattr(rag.load, "iter_files", list_then_delete)
    report = ingest([str(docs)], settings_factory(tmp_path / "idx"), embedder=embedder, progress=False)
    by = {f.source: f for f in report.files}
    assert by["good.md"].status == "added" and not report.ok
    assert by["gone.md"].status == "failed" and by["gone.md"].code == "file_gone"
    assert "deleted or moved" in by["gone.md"].reason
    # deleted after it was hashed, before it was parsed: the reader names it too
    status, _, reason = read_chunks(docs / "gone.md", "gone.md", None, settings_factory(tmp_path / "idx"), None)
    assert status == "error" and "gone.md" in reason


def test_pipe_in_a_folder_fails_like_a_pipe_named_directly(tmp_path, embedder, settings_factory):
    """A FIFO under a document's name is a file that could not be read (exit 1), in a folder as on the
    command line; under another name it is skipped like any unsupported file."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text(GOOD, encoding="utf-8")
    os.mkfifo(docs / "pipe.md")
    os.mkfifo(docs / "pipe.bin")
    listing = iter_files([docs])
    assert [s for _, s in listing.files] == ["good.md"]
    assert [(p.name, code) for p, _, code in listing.failed] == [("pipe.md", "not_regular_file")]
    assert "pipe.md is not a regular file" in listing.failed[0][1]
    assert [p.name for p, _ in listing.skipped] == ["pipe.bin"]
    for paths in ([str(docs)], [str(docs / "good.md"), str(docs / "pipe.md")]):
        report = ingest(paths, settings_factory(tmp_path / "idx"), embedder=embedder, progress=False)
        pipe = next(f for f in report.files if f.source.endswith("pipe.md"))
        assert (pipe.status, pipe.code) == ("failed", "not_regular_file") and not report.ok, report.summary()
        assert next(f for f in report.files if f.source == "good.md").status in ("added", "unchanged")
    # a folder holding only such a file is a failed ingest, not "no supported files"
    (docs / "good.md").unlink()
    (docs / "pipe.bin").unlink()
    assert [p.name for p, _, _ in iter_files([docs]).failed] == ["pipe.md"]


def test_symlink_loops_are_named_and_the_rest_indexed(tmp_path, embedder, settings_factory):
    """A link to itself, two links to each other and a link to the folder itself: no crash, no hang;
    each loop is a file that could not be read (exit 1), the folder link is followed once."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text(GOOD, encoding="utf-8")
    (docs / "a.md").symlink_to("a.md")
    (docs / "b").symlink_to("c")
    (docs / "c").symlink_to("b")
    (docs / "loop").symlink_to(".")
    listing = iter_files([docs])
    assert [s for _, s in listing.files] == ["good.md"]
    assert sorted((p.name, code) for p, _, code in listing.failed) == [
        ("a.md", "unreadable"), ("b", "unreadable"), ("c", "unreadable")]
    assert all("symlink loop" in reason for _, reason, _ in listing.failed)
    report = ingest([str(docs)], settings_factory(tmp_path / "idx"), embedder=embedder, progress=False)
    assert not report.ok and "a.md is a symlink loop" in report.summary()
    assert {c.source for c in Index.open(settings_factory(tmp_path / "idx")).chunks} == {"good.md"}
    code = main(["ingest", str(docs), "--index", str(tmp_path / "idx2"), "--quiet"])
    assert code == EXIT_PARTIAL
    with pytest.raises(InputError, match="symlink loop"):
        iter_files([docs / "a.md"])


@pytest.mark.parametrize("kind", ["fifo", "socket", "dev_zero"])
def test_only_regular_files_are_read(tmp_path, settings_factory, kind):
    path = tmp_path / "x.txt"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
    else:
        path.symlink_to("/dev/zero")
    got = read_chunks(path, "x.txt", None, settings_factory(tmp_path / "idx"), None)  # returns at once: no hang
    assert got[0] == "error" and got[1] in ("not_regular_file", "unreadable"), got


def test_size_cap_holds_while_reading(tmp_path, settings_factory, monkeypatch):
    """A file that grows after stat (here: stat lies) is still cut at cap + 1 byte."""
    path = tmp_path / "big.txt"
    path.write_bytes(b"a" * 3 * 1024 * 1024)
    s = settings_factory(tmp_path / "idx", max_file_mb=1.0)
    real_fstat = os.fstat

    class Small:
        def __init__(self, st):
            self.st_mode, self.st_size = st.st_mode, 10

    monkeypatch.setattr(os, "fstat", lambda fd: Small(real_fstat(fd)))
    reads: list[int] = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: reads.append(n) or real_read(fd, n))
    with pytest.raises(Exception, match="over the 1 MB limit"):
        read_regular(path, s, "big.txt")
    assert sum(reads) <= 1024 * 1024 + 1


def _cli_ingest(docs: Path, index: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "rag.cli", "ingest", str(docs), "--index", str(index), "--quiet",
                           *extra], env=env, capture_output=True, timeout=300)


def test_cli_ingest_names_bad_files_without_traceback(tmp_path):
    docs = _bad_folder(tmp_path)
    proc = _cli_ingest(docs, tmp_path / "idx", "--json")
    out, err = proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == EXIT_PARTIAL, err
    assert "Traceback" not in out + err
    files = {f["source"]: f for f in json.loads(out)["files"]}
    assert files["good.md"]["status"] == "added"
    assert files["deep.json"]["status"] == "failed" and files["deep.json"]["code"] == "too_deep"
    assert any(f["code"] == "bad_file_name" for f in files.values())

    proc = _cli_ingest(docs, tmp_path / "idx")
    out, err = proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == EXIT_PARTIAL and "Traceback" not in out + err
    assert "failed: deep.json: deep.json is nested too deeply" in out and "not valid UTF-8" in out


def test_cli_ingest_of_a_bad_name_given_directly(tmp_path, capsys):
    path = tmp_path / BAD_NAME
    path.write_text(GOOD, encoding="utf-8")
    code = main(["ingest", str(path), "--index", str(tmp_path / "idx"), "--quiet"])
    out, err = capsys.readouterr()
    assert code == EXIT_PARTIAL and "not valid UTF-8" in out and "Traceback" not in out + err


def test_web_chat_upload_shows_the_reason_of_a_bad_file(demo_pipeline, tmp_path, settings_factory):
    """The handler the upload button calls: each file's own sentence, not a bare "Error"."""
    from _load_fixtures import make_pdf
    from _ocr_fixtures import fake_tesseract

    from rag.ui import ChatApp, LocalBackend

    exe = fake_tesseract(tmp_path / "bin")
    settings = settings_factory(demo_pipeline.settings.index_dir, tesseract_cmd=str(exe), ocr_max_pages=1,
                                max_html_mb=0.001)
    app = ChatApp(settings, LocalBackend(demo_pipeline), index=demo_pipeline.index, embedder=demo_pipeline.embedder,
                  work_dir=tmp_path / "work")
    (tmp_path / "deep.json").write_bytes(DEEP_JSON)
    (tmp_path / "good.md").write_text(GOOD, encoding="utf-8")
    (tmp_path / "page.html").write_text("<p>" + "x" * 5000 + "</p>", encoding="utf-8")
    scan = make_pdf(tmp_path / "scan.pdf", [None] * 4)
    status, _ = list(app.upload([str(tmp_path / n) for n in ("deep.json", "good.md", "page.html")] + [str(scan)]))[-1]
    assert "✗ (1/3) deep.json: deep.json is nested too deeply to read" in status
    assert "✓ (2/3) good.md" in status
    assert "✗ page.html: 0.0 MB, vượt giới hạn 0.001 MB" in status and "RAG_MAX_HTML_MB" in status
    assert "⚠ (3/3) scan.pdf: chỉ đọc được một phần: scan.pdf: 3 of 4 scanned pages not OCR'd" in status
    assert "Traceback" not in status


def test_names_that_forge_lines_or_send_escapes_print_escaped_and_long_names_are_read(tmp_path, embedder,
                                                                                       settings_factory):
    """An empty file named 'empty\\nfailed: fake.md: all good\\x1b[2K.md' must not print a forged report line or an
    escape sequence; a 250-byte Vietnamese name (its '.meta.yaml' sidecar name would pass 255 bytes) is read."""
    docs = tmp_path / "docs"
    docs.mkdir()
    forged = "empty\nfailed: fake.md: all good\x1b[2K.md"
    (docs / forged).write_bytes(b"")
    long_name = ("Quyết định ban hành Quy chế đào tạo trình độ đại học theo hệ thống tín chỉ của Trường Đại học "
                 "Bách khoa Hà Nội năm học 2023-2024 (sửa đổi, bổ sung lần thứ hai, bản cuối cùng đã ký).md")
    assert 240 < len(long_name.encode()) <= 255
    (docs / long_name).write_text("# Quy chế\n\nĐiều 1. Phạm vi\n\nSinh viên đóng học phí đúng hạn.\n",
                                  encoding="utf-8")
    report = ingest([str(docs)], settings_factory(tmp_path / "idx"), embedder=embedder, progress=False)
    by = {f.source: f for f in report.files}
    assert by[long_name].status == "added", by[long_name]
    summary = report.summary()
    assert "\x1b" not in summary and "\\x1b[2K" in summary
    assert not any(line.startswith("failed: fake.md") for line in summary.splitlines())
    assert "empty\\nfailed: fake.md" in summary


def test_reader_processes_leave_ctrl_c_to_the_main_process():
    """A terminal's Ctrl-C reaches every process of the job: readers ignore it (no traceback from each), the main
    process stops them."""
    code = ("import signal; from rag.ingest import _background; _background(); "
            "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.stdout.strip() == "True", out.stderr[-2000:]


def test_a_json_number_past_pythons_digit_limit_is_a_load_error(tmp_path, settings_factory):
    from rag.errors import LoadError
    from rag.load import load_file

    path = tmp_path / "quy-che.json"
    path.write_text('{"title": "Quy chế", "ignored": ' + "9" * 5000 + ', "articles": []}', encoding="utf-8")
    with pytest.raises(LoadError, match="holds a number too long to read"):
        load_file(path, settings_factory())


def test_info_piped_into_a_reader_that_stops_ends_quietly(demo_index_dir):
    """`rag info | head -1`: the reader goes away before the output is written (here: at once, with `true`)."""
    out = subprocess.run(["bash", "-o", "pipefail", "-c", f"{sys.executable} -m rag.cli info --index {demo_index_dir} "
                          "| true"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.returncode == 0 and out.stderr == "", out.stderr[-2000:]
