"""rag.ocr: scanned PDF pages → Tesseract (vie) → the same normaliser and chunker as text layers.

Three kinds of test: pure functions (repairs, CER) with hand-worked Vietnamese cases; the page
selection, modes, cache, pool and error paths with a fake ``tesseract`` that records its calls
(fast, no Tesseract needed); and real Tesseract on demo regulation text drawn as page images
(skipped with the reason when Tesseract or its Vietnamese model is not installed).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_data

from _load_fixtures import make_pdf, unicode_font
from _ocr_fixtures import (
    articles_in,
    calls,
    demo_lines,
    drawing_unavailable,
    fake_tesseract,
    image_pdf,
    logging_tesseract,
    mixed_pdf,
    render_pages,
    stamp_text,
    tesseract_with_vie,
)
from rag.chunk import chunk_document
from rag.config import Settings
from rag.errors import LoadError, NeedsOCRError
from rag.index import Index
from rag.ingest import ingest, read_document
from rag.normalise import clean_pages
from rag.ocr import cer, edit_distance, ocr_cache_dir, repair_ocr_text
from rag.types import Document, Page

NO_TESSERACT = tesseract_with_vie()
needs_tesseract = pytest.mark.skipif(NO_TESSERACT is not None, reason=f"real OCR test: {NO_TESSERACT}")
needs_font = pytest.mark.skipif(unicode_font() is None, reason="no DejaVuSans.ttf to draw Vietnamese text")
needs_drawing = pytest.mark.skipif(drawing_unavailable() is not None, reason=str(drawing_unavailable()))

ARTICLE_1 = "Điều 1. Phạm vi điều chỉnh\nQuy chế này áp dụng đối với sinh viên đại học hệ chính quy."
ARTICLE_3 = "Điều 3. Xử lý học vụ\nSinh viên bị buộc thôi học khi bị cảnh báo mức 3 lần thứ hai."


def blank_scans(path: Path, n: int) -> Path:
    """Image-only pages with a grey block (no text layer), cheap to make."""
    return make_pdf(path, [None] * n)


def _settings(tmp_path, **kw) -> Settings:
    return Settings(index_dir=tmp_path / "idx", **kw)


def _read(path: Path, settings: Settings, **kw):
    return read_document(path, settings, source=path.name, index_dir=settings.index_dir, **kw)


# ---------------------------------------------------------------------------
# Pure functions


def test_edit_distance_and_cer_hand_cases():
    assert edit_distance("Điều", "Điểu") == 1  # one substituted letter (ề → ể)
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "abc") == 0
    # whitespace runs count as one space; NFC and NFD spellings are the same text
    assert cer("Điều 1.\n\nPhạm  vi", "Điều 1. Phạm vi") == 0.0
    assert cer("Tie\u0302\u0301ng Vie\u0323\u0302t", "Tiếng Việt") == 0.0
    assert cer("Điểu 1", "Điều 1") == pytest.approx(1 / 6)
    assert cer("", "") == 0.0 and cer("x", "") == 1.0


def test_repairs_of_typical_tesseract_misreads():
    raw = (
        "._ Điều 1, Ban hành kèm theo Quyết định này Quy định\n"
        "QUYÉT ĐỊNH:\n"
        "Chuong Il |\n"
        "CHUONG IV\n"
        "Muc 1. KẾ HOẠCH HỌC TẬP\n"
        "Điểu 2. Giải thích từ ngữ\n"
        "| Diều l. Phạm vi ~\n"
        "ĐIÊU 10: HIỆU LỰC\n"
        "Ðiều 1O. Trách nhiệm\n"
        "~ _ |\n"
        "5, Đối với các học phần đặc thù\n"
        "- Điều 3. Quyết định này có hiệu lực\n"
        "theo phương thức trực\n"
        "-tuyến của Trường\n"
        "chương trình cử nhân\u2010\n"
        "kỹ sư"
    )
    assert repair_ocr_text(raw) == (
        "Điều 1. Ban hành kèm theo Quyết định này Quy định\n"
        "QUYẾT ĐỊNH:\n"
        "Chương II\n"
        "CHƯƠNG IV\n"
        "Mục 1. KẾ HOẠCH HỌC TẬP\n"
        "Điều 2. Giải thích từ ngữ\n"
        "Điều 1. Phạm vi\n"
        "ĐIỀU 10: HIỆU LỰC\n"
        "Điều 10. Trách nhiệm\n"
        "\n"
        "5. Đối với các học phần đặc thù\n"
        "Điều 3. Quyết định này có hiệu lực\n"
        "theo phương thức trực\n"
        "tuyến của Trường\n"
        "chương trình cử nhân-\n"
        "kỹ sư"
    )


@pytest.mark.parametrize("text", [
    "Điều lệ trường đại học",  # a real word after "Điều": not an article number
    "Điều 5, khoản 2 của Quy chế này",  # a wrapped cross-reference: comma kept
    "theo quy định tại điễu 5",  # mid-line misreads are not touched
    "Phòng Đảo tạo trình Hiệu trưởng",  # a wrong tone that is a real syllable elsewhere
    "°. sinh viên sau khi hoàn thành",  # a misread clause number
    "- Như Điều 3;",  # a list dash is not a stray mark
    "- Điều 3. của Quy chế",  # nor before a cross-reference
    "d) Sinh viên thuộc diện",  # đ) read as d) cannot be told from a real d)
    "Điều 5 Tổ chức thực hiện",  # lost period: could be a cross-reference, left alone
    "5, 6 và 7 của Điều này",  # a wrapped list of clause numbers
    "-5 độ",  # a dash before a digit
    "-Đào tạo",  # or before a capital
])
def test_repairs_leave_what_cannot_be_fixed_safely(text):
    assert repair_ocr_text(text) == text


def test_repaired_ocr_text_chunks_like_a_text_layer():
    """Raw OCR with misread headings gives the same Điều/Khoản structure as the clean text."""
    clean = ("Chương I\nQUY ĐỊNH CHUNG\nĐiều 1. Phạm vi điều chỉnh\n1. Quy chế này quy định về đào tạo.\n"
             "2. Quy chế này áp dụng đối với sinh viên.\nĐiều 2. Giải thích từ ngữ\nTín chỉ là đơn vị học tập.")
    ocr = ("Chuong I |\nQUY ĐỊNH CHUNG\n._ Điểu 1, Phạm vi điều chỉnh\n1. Quy chế này quy định về đào tạo.\n"
           "2. Quy chế này áp dụng đối với sinh viên. ~\nDiều 2. Giải thích từ ngữ\nTín chỉ là đơn vị học tập.")

    def structure(text, flag):
        pages = clean_pages([Page(1, repair_ocr_text(text) if flag else text, ocr=flag)])
        doc = Document(source="qc.pdf", title="Quy chế", pages=pages, sha256="x", kind="pdf")
        return [(c.header, c.text) for c in chunk_document(doc)]

    assert structure(ocr, True) == structure(clean, False)
    assert [h for h, _ in structure(ocr, True)] == [
        "Quy chế › Chương I. QUY ĐỊNH CHUNG › Điều 1. Phạm vi điều chỉnh",
        "Quy chế › Chương I. QUY ĐỊNH CHUNG › Điều 2. Giải thích từ ngữ",
    ]


def test_cache_lives_beside_the_index_so_a_copied_index_leaves_it(tmp_path):
    assert ocr_cache_dir(tmp_path / "rag" / "index") == tmp_path / "rag" / ".index.ocr-cache"
    # inside only where the parent is read-only: test_index_readonly.py, with a bind mount


# ---------------------------------------------------------------------------
# Modes, page selection, cache, pool and errors — with a fake tesseract


@needs_font
def test_auto_ocrs_only_pages_without_text_and_keeps_numbers(tmp_path):
    exe = fake_tesseract(tmp_path / "bin")
    path = make_pdf(tmp_path / "mixed.pdf", [ARTICLE_3, None])
    doc = _read(path, _settings(tmp_path, tesseract_cmd=str(exe)))
    assert [(p.number, p.ocr) for p in doc.pages] == [(1, False), (2, True)]
    assert len(calls(exe)) == 1
    # the fake's "Điểu 1. …  |" comes back repaired and normalised
    assert doc.pages[1].text.startswith("Điều 1. Phạm vi điều chỉnh\n") and "|" not in doc.pages[1].text
    assert doc.pages[0].text.startswith("Điều 3. Xử lý học vụ")
    call = calls(exe)[0]
    assert call["args"][:2] == ["stdin", "stdout"] and call["args"][2:4] == ["-l", "vie"]
    assert call["omp"] == "1" and call["bytes"] > 0


@needs_font
def test_always_ocrs_pages_with_text_and_never_ocrs_nothing(tmp_path):
    exe = fake_tesseract(tmp_path / "bin")
    path = make_pdf(tmp_path / "text.pdf", [ARTICLE_1, ARTICLE_3])
    doc = _read(path, _settings(tmp_path, tesseract_cmd=str(exe), ocr="always"))
    assert [(p.number, p.ocr) for p in doc.pages] == [(1, True), (2, True)] and len(calls(exe)) == 2
    doc = _read(path, _settings(tmp_path, tesseract_cmd=str(exe), ocr="auto"))
    assert not any(p.ocr for p in doc.pages) and len(calls(exe)) == 2  # a text PDF needs no OCR
    scan = blank_scans(tmp_path / "scan.pdf", 2)
    with pytest.raises(NeedsOCRError, match=r"no text layer \(needs OCR\)"):
        _read(scan, _settings(tmp_path, tesseract_cmd=str(exe), ocr="never"))
    assert len(calls(exe)) == 2


@needs_font
@needs_drawing
def test_scan_with_a_stamped_line_of_text_is_ocrd(tmp_path):
    """A full-page image whose text layer is one short line (a stamp, a scanner caption) counts as scanned."""
    from PIL import Image

    exe = fake_tesseract(tmp_path / "bin")
    path = image_pdf(tmp_path / "stamped.pdf", [Image.new("L", (1240, 1754), 200)], 150)
    stamp_text(path, 0, "Bản sao y bản chính — Trường Đại học Bách khoa Hà Nội")
    doc = _read(path, _settings(tmp_path, tesseract_cmd=str(exe)))
    assert doc.pages[0].ocr and doc.pages[0].text.startswith("Điều 1.") and len(calls(exe)) == 1
    # the same short line on a page without a big image is a text layer, used as it is
    plain = make_pdf(tmp_path / "plain.pdf", ["Bản sao y bản chính — Trường Đại học Bách khoa Hà Nội"])
    assert not _read(plain, _settings(tmp_path, tesseract_cmd=str(exe))).pages[0].ocr


@needs_font
def test_cache_second_read_runs_no_ocr_and_key_covers_dpi(tmp_path):
    exe = fake_tesseract(tmp_path / "bin")
    path = blank_scans(tmp_path / "scan.pdf", 3)
    s = _settings(tmp_path, tesseract_cmd=str(exe))
    first = _read(path, s)
    assert len(calls(exe)) == 3
    again = _read(path, s)
    assert len(calls(exe)) == 3, "a second read of the same file must come from the cache"
    assert [p.text for p in again.pages] == [p.text for p in first.pages]
    cache = ocr_cache_dir(s.index_dir)
    (entry,) = list(cache.glob("*/*/key.json"))
    key = json.loads(entry.read_text())
    assert key["dpi"] == s.ocr_dpi and key["lang"] == "vie" and key["tesseract"] == "tesseract 5.3.0-fake"
    assert entry.parent.parent.name == first.sha256
    _read(path, s.with_(ocr_dpi=s.ocr_dpi + 100))  # another resolution is another result
    assert len(calls(exe)) == 6
    _read(path, s.with_(index_dir=None))  # no index dir: no cache
    assert len(calls(exe)) == 9


@needs_font
def test_pages_are_ocrd_in_parallel_and_come_back_in_order(tmp_path):
    exe = fake_tesseract(tmp_path / "bin", sleep=0.4)
    path = blank_scans(tmp_path / "scan.pdf", 4)
    doc = _read(path, _settings(tmp_path, tesseract_cmd=str(exe), ocr_workers=2))
    assert [p.number for p in doc.pages] == [1, 2, 3, 4] and all(p.ocr for p in doc.pages)
    spans = [(c["start"], c["end"]) for c in calls(exe)]
    overlap = max(sum(1 for s, e in spans if s < t < e) for t in [s + 0.2 for s, _ in spans])
    assert overlap == 2, f"2 workers should OCR 2 pages at a time, saw {overlap}"


@needs_font
def test_progress_bar_per_document(tmp_path, capsys):
    exe = fake_tesseract(tmp_path / "bin")
    _read(blank_scans(tmp_path / "scan.pdf", 2), _settings(tmp_path, tesseract_cmd=str(exe)), progress=True)
    err = capsys.readouterr().err
    assert "OCR scan.pdf" in err and "0/2 [" in err  # leave=False: the bar is cleared at the end


@pytest.mark.parametrize("env, packages", [
    ({"RAG_TESSERACT_CMD": "/nonexistent/tesseract"}, "apt-get install tesseract-ocr tesseract-ocr-vie"),
    (None, "apt-get install tesseract-ocr-vie"),  # a Tesseract without the Vietnamese model
])
@needs_font
def test_missing_tesseract_or_model_fails_that_file_only(tmp_path, embedder, env, packages):
    if env is None:
        env = {"RAG_TESSERACT_CMD": str(fake_tesseract(tmp_path / "bin", langs=("eng", "osd")))}
    settings = Settings.from_env({**env, "RAG_INDEX_DIR": str(tmp_path / "idx")})
    docs = tmp_path / "docs"
    docs.mkdir()
    blank_scans(docs / "scan.pdf", 2)
    make_pdf(docs / "text.pdf", [ARTICLE_1])  # has a text layer: needs no Tesseract
    (docs / "b.md").write_text("# Quy định\n\nĐiều 1. Học phí\nHọc phí đóng theo học kỳ.\n", encoding="utf-8")
    report = ingest([docs], settings, embedder=embedder, progress=False)
    assert not report.ok and report.count("added") == 2
    (failed,) = report.failed
    assert failed.source == "scan.pdf" and failed.code == "ocr_unavailable"
    assert packages in failed.reason and "RAG_TESSERACT_CMD" in failed.reason
    assert failed.reason.startswith("scan.pdf: OCR needed for 2 pages without a text layer, but ")
    assert {c.source for c in Index.open(settings).chunks} == {"text.pdf", "b.md"}


@needs_font
def test_cli_exit_code_is_nonzero_when_tesseract_is_missing(tmp_path, capsys, monkeypatch):
    from rag.cli import main

    monkeypatch.setenv("RAG_TESSERACT_CMD", "/nonexistent/tesseract")
    docs = tmp_path / "docs"
    docs.mkdir()
    blank_scans(docs / "scan.pdf", 1)
    (docs / "b.md").write_text("# Quy định\n\nĐiều 1. Học phí\nHọc phí đóng theo học kỳ.\n", encoding="utf-8")
    code = main(["ingest", str(docs), "--index", str(tmp_path / "idx"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 1 and "1 added" in out and "apt-get install tesseract-ocr tesseract-ocr-vie" in out
    code = main(["ingest", str(docs), "--index", str(tmp_path / "idx2"), "--quiet", "--ocr", "never"])
    out = capsys.readouterr().out
    assert code == 1 and "no text layer (needs OCR)" in out


@needs_font
def test_tesseract_failing_on_a_page_names_the_page(tmp_path):
    exe = fake_tesseract(tmp_path / "bin", fail=True)
    with pytest.raises(LoadError, match=r"scan\.pdf: OCR failed on page [12]: tesseract exited with 1: .*pixReadMem"):
        _read(blank_scans(tmp_path / "scan.pdf", 2), _settings(tmp_path, tesseract_cmd=str(exe)))


@needs_font
def test_blank_scan_says_ocr_found_nothing(tmp_path):
    exe = fake_tesseract(tmp_path / "bin", text="  \n")
    with pytest.raises(LoadError, match=r"no text found: OCR read nothing on pages \[1, 2\].*RAG_OCR_DPI"):
        _read(blank_scans(tmp_path / "scan.pdf", 2), _settings(tmp_path, tesseract_cmd=str(exe)))


# ---------------------------------------------------------------------------
# Real Tesseract on demo regulation text drawn as images


@pytest.mark.slow
@needs_tesseract
def test_scanned_demo_regulation_ingests_with_its_articles(tmp_path, embedder):
    """Điều 1–3 of the demo Quy chế đào tạo as an image-only PDF: same structure as the source, CER ≤ 2%."""
    lines = demo_lines(1, 3)
    images, page_texts = render_pages(lines, page_in=(8.27, 7.5))
    docs = tmp_path / "docs"
    docs.mkdir()
    image_pdf(docs / "quy-che-scan.pdf", images, 300)
    (docs / "source.md").write_text("# Quy chế đào tạo\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
    exe = logging_tesseract(tmp_path / "bin", "tesseract")
    settings = Settings(index_dir=tmp_path / "idx", tesseract_cmd=str(exe))

    report = ingest([docs], settings, embedder=embedder, progress=False)
    assert report.ok, report.summary()
    assert len(calls(exe)) == len(images) >= 2
    index = Index.open(settings)
    assert index.manifest.files["quy-che-scan.pdf"]["ocr_pages"] == len(images)
    assert f"OCR: {len(images)} scanned pages" in report.summary()

    def structure(source):
        return [(c.chapter, c.article, c.article_title, c.clause, c.kind)
                for c in index.chunks if c.source == source and c.article]

    scanned = structure("quy-che-scan.pdf")
    assert [a for _, a, *_ in scanned] == ["1", "2", "3"]
    assert scanned == structure("source.md")
    assert scanned[0][:3] == ("Chương I. QUY ĐỊNH CHUNG", "1", "Phạm vi điều chỉnh và đối tượng áp dụng")

    doc = read_document(docs / "quy-che-scan.pdf", settings, source="x", index_dir=settings.index_dir)
    for page, reference in zip(doc.pages, page_texts):
        assert cer(page.text, reference) <= 0.02, (page.number, page.text)
    assert articles_in(doc.text) == ["1", "2", "3"]

    # rebuilding the index reads the scan from the OCR cache: no new Tesseract run, same chunks
    ids = {c.id for c in index.chunks}
    again = ingest([docs], settings, embedder=embedder, progress=False, rebuild=True)
    assert again.ok and len(calls(exe)) == len(images)
    assert {c.id for c in Index.open(settings).chunks} == ids


@needs_tesseract
def test_mixed_pdf_keeps_page_order_and_numbers(tmp_path):
    """Text, scan, text, scan: every page keeps its number and place; each article cites its page."""
    def scan(n):  # the heading and first line of Điều n, on a small page (OCR time grows with the text)
        images, _ = render_pages(demo_lines(n, n, chapter=False)[:2], page_in=(8.27, 2.5), margin_in=0.5)
        assert len(images) == 1
        return images[0]

    text = {n: "\n".join(demo_lines(n, n, chapter=False)) for n in (1, 3)}
    path = mixed_pdf(tmp_path / "mixed.pdf", [text[1], scan(2), text[3], scan(4)])
    doc = read_document(path, Settings(), source="mixed.pdf")
    assert [(p.number, p.ocr) for p in doc.pages] == [(1, False), (2, True), (3, False), (4, True)]
    assert [articles_in(p.text) for p in doc.pages] == [["1"], ["2"], ["3"], ["4"]]
    chunks = chunk_document(doc)
    assert [(c.article, c.page) for c in chunks] == [("1", 1), ("2", 2), ("3", 3), ("4", 4)]
    assert chunks[3].article_title == "Hình thức đào tạo và ngôn ngữ giảng dạy"


@pytest.mark.slow
@needs_tesseract
def test_real_scanned_hust_decision_page(tmp_path):
    """Page 3 of a photocopied HUST decision (no text layer): its Điều 3–5 come out as articles."""
    import pypdfium2 as pdfium

    src = shared_data("hust-regulations", "pdf", "QD ban hanh QD chuyen doi hoc phan tuong duong.pdf")
    pdf, one = pdfium.PdfDocument(str(src)), pdfium.PdfDocument.new()
    one.import_pages(pdf, [2])
    one.save(str(tmp_path / "page3.pdf"))
    doc = read_document(tmp_path / "page3.pdf", Settings(), source="page3.pdf")
    assert doc.pages[0].ocr and articles_in(doc.text) == ["3", "4", "5"]
    assert "Quy trình xét công nhận tín chỉ" in doc.text and "Trách nhiệm của người học" in doc.text
