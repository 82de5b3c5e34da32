"""OCR limits: pages per file (RAG_OCR_MAX_PAGES) and time per ingest (RAG_OCR_BUDGET_S); what was left out
is reported per file, and OCR progress (pages done/total) is shown on stderr."""

from __future__ import annotations

import time

from _load_fixtures import make_pdf
from _ocr_fixtures import calls, fake_tesseract

from rag.ingest import ingest
from rag.reader import read_chunks


def _blank_scans(path, n):
    return make_pdf(path, [None] * n)  # image-only pages: every one needs OCR


def test_pages_over_the_per_file_limit_are_skipped_and_reported(tmp_path, embedder, settings_factory):
    exe = fake_tesseract(tmp_path / "bin")
    docs = tmp_path / "docs"
    docs.mkdir()
    _blank_scans(docs / "scan.pdf", 30)
    # one page: the fake's text, the same on every page, would be cleaned away as a running header
    s = settings_factory(tmp_path / "idx", tesseract_cmd=str(exe), ocr_max_pages=1, ocr_workers=1)
    report = ingest([str(docs)], s, embedder=embedder, progress=False, read_workers=0)
    (f,) = report.files
    assert f.status == "added" and f.ocr_pages == 1 and len(calls(exe)) == 1
    assert f.notes == ["scan.pdf: 29 of 30 scanned pages not OCR'd (pages 2–30): over the limit of 1 per file "
                       "(RAG_OCR_MAX_PAGES)"]
    assert "partly read: scan.pdf: 29 of 30" in report.summary()
    assert report.to_dict()["files"][0]["notes"] == f.notes


def test_pages_after_the_ocr_time_budget_are_skipped_and_reported(tmp_path, embedder, settings_factory):
    exe = fake_tesseract(tmp_path / "bin", sleep=0.3)
    docs = tmp_path / "docs"
    docs.mkdir()
    _blank_scans(docs / "scan.pdf", 40)
    s = settings_factory(tmp_path / "idx", tesseract_cmd=str(exe), ocr_budget_s=1.0, ocr_workers=1)
    t0 = time.monotonic()
    report = ingest([str(docs)], s, embedder=embedder, progress=False, read_workers=0)
    (f,) = report.files
    done = len(calls(exe))
    told = " ".join([f.reason, *f.notes])  # the fake's one text on every page may be cleaned away as a header
    assert 1 <= done < 40
    assert f"{40 - done} of 40 scanned pages not OCR'd" in told and "RAG_OCR_BUDGET_S" in told
    assert time.monotonic() - t0 < 40 * 0.3  # it stopped: all 40 pages would take 12 s


def test_a_file_with_nothing_read_before_the_budget_names_the_budget(tmp_path, settings_factory):
    exe = fake_tesseract(tmp_path / "bin")
    path = _blank_scans(tmp_path / "scan.pdf", 5)
    s = settings_factory(tmp_path / "idx", tesseract_cmd=str(exe))
    status, _, reason = read_chunks(path, "scan.pdf", None, s, None, ocr_deadline=time.time() - 1)
    assert status == "error" and "RAG_OCR_BUDGET_S" in reason and not calls(exe)


def test_ingest_shows_ocr_progress_per_file(tmp_path, embedder, settings_factory, capsys):
    exe = fake_tesseract(tmp_path / "bin")
    docs = tmp_path / "docs"
    docs.mkdir()
    _blank_scans(docs / "scan.pdf", 3)
    s = settings_factory(tmp_path / "idx", tesseract_cmd=str(exe))
    ingest([str(docs)], s, embedder=embedder, progress=True, read_workers=0)
    err = capsys.readouterr().err
    assert "OCR scan.pdf" in err and "/3 [" in err
