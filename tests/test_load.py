"""rag.load: files to Documents (PDF, DOCX, HTML, TXT/MD, JSON), limits, and folder listing."""

from __future__ import annotations

import hashlib
import io
import json
import os
import unicodedata
import zipfile
from pathlib import Path

import pytest

from _load_fixtures import make_pdf, to_cp1258, unicode_font
from rag.config import Settings
from rag.errors import InputError, LoadError, NeedsOCRError
from rag.load import SUPPORTED, FileList, iter_files, load_file, load_pdf_pages, pdf_pages_without_text

S = Settings()

ARTICLE_1 = "Điều 1. Phạm vi điều chỉnh và đối tượng áp dụng\nQuy chế này áp dụng đối với sinh viên đại học hệ chính quy."
ARTICLE_2 = "Điều 2. Cảnh báo học tập\nSinh viên bị cảnh báo nếu điểm trung bình tích lũy thấp hơn 1,0."
ARTICLE_3 = "Điều 3. Xử lý học vụ\nSinh viên bị buộc thôi học khi bị cảnh báo mức 3 lần thứ hai."

needs_font = pytest.mark.skipif(unicode_font() is None, reason="no DejaVuSans.ttf found to draw Vietnamese text in a test PDF")


# ---------------------------------------------------------------------------
# PDF


@needs_font
def test_pdf_text_per_page_with_page_numbers_and_vietnamese(tmp_path):
    path = make_pdf(tmp_path / "quy-che.pdf", ["QUYẾT ĐỊNH\nVề việc ban hành Quy chế đào tạo\n" + ARTICLE_1, ARTICLE_2, ARTICLE_3])
    doc = load_file(path, S)
    assert doc.kind == "pdf"
    assert [p.number for p in doc.pages] == [1, 2, 3]
    assert ARTICLE_1 in doc.pages[0].text  # diacritics survive, lines end in \n (not \r\n)
    assert doc.pages[1].text.strip() == ARTICLE_2
    assert doc.pages[2].text.strip() == ARTICLE_3
    assert not any(p.ocr for p in doc.pages)
    assert doc.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert doc.source == str(path)
    assert doc.title == "QUYẾT ĐỊNH Về việc ban hành Quy chế đào tạo"


@needs_font
def test_pdf_title_from_metadata_unless_meaningless(tmp_path):
    import pypdf

    src = make_pdf(tmp_path / "src.pdf", [ARTICLE_1])
    for meta, expected in [("Quy chế đào tạo 2025", "Quy chế đào tạo 2025"), ("Microsoft Word - qc.docx", "with-meta")]:
        writer = pypdf.PdfWriter(clone_from=str(src))
        writer.add_metadata({"/Title": meta})
        out = tmp_path / "with-meta.pdf"
        with open(out, "wb") as f:
            writer.write(f)
        # the text starts with "Điều 1": no title in the text either, so the file stem is used
        assert load_file(out, S).title == expected


@needs_font
def test_pdf_with_some_scanned_pages_keeps_the_others_and_lists_the_empty_ones(tmp_path):
    path = make_pdf(tmp_path / "mixed.pdf", [ARTICLE_1, None, ARTICLE_3, None])
    doc = load_file(path, S)
    assert [p.number for p in doc.pages] == [1, 3]
    assert pdf_pages_without_text(path) == [2, 4]
    all_pages = load_pdf_pages(path)
    assert [p.number for p in all_pages] == [1, 2, 3, 4]
    assert all_pages[1].text.strip() == "" and ARTICLE_3 in all_pages[2].text


def test_pdf_of_only_image_pages_needs_ocr(tmp_path):
    path = make_pdf(tmp_path / "scan.pdf", [None, None, None])
    with pytest.raises(NeedsOCRError) as e:
        load_file(path, S, source="scans/scan.pdf")
    msg = str(e.value)
    assert "no text layer (needs OCR)" in msg
    assert msg.startswith("scans/scan.pdf:") and "3 scanned pages" in msg
    assert e.value.code == "needs_ocr" and isinstance(e.value, LoadError)
    assert e.value.pages == [1, 2, 3]


@needs_font
def test_pdf_with_too_little_text_counts_as_scanned(tmp_path):
    path = make_pdf(tmp_path / "stamp.pdf", ["Trang 1", "  2  "])  # a stamp or a page number only
    with pytest.raises(NeedsOCRError, match="no text layer"):
        load_file(path, S)


@needs_font
def test_encrypted_pdf_asks_for_a_decrypted_copy(tmp_path):
    import pypdf

    writer = pypdf.PdfWriter(clone_from=str(make_pdf(tmp_path / "plain.pdf", [ARTICLE_1])))
    writer.encrypt(user_password="secret", algorithm="RC4-128")
    path = tmp_path / "locked.pdf"
    with open(path, "wb") as f:
        writer.write(f)
    with pytest.raises(LoadError) as e:
        load_file(path, S)
    assert "password-protected" in str(e.value) and "decrypted copy" in str(e.value)
    assert e.value.__cause__ is not None


@needs_font
def test_corrupt_and_truncated_pdfs(tmp_path):
    garbage = tmp_path / "garbage.pdf"
    garbage.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 8)
    good = make_pdf(tmp_path / "good.pdf", [ARTICLE_1]).read_bytes()
    truncated = tmp_path / "truncated.pdf"
    truncated.write_bytes(good[:300])
    for path in (garbage, truncated):
        with pytest.raises(LoadError, match=r"not a readable PDF \(corrupt or truncated: ") as e:
            load_file(path, S)
        assert not isinstance(e.value, NeedsOCRError)
        assert e.value.__cause__ is not None
    assert "EOF marker not found" in str(e.value)  # pypdf's warning is in the reason ...


def test_pypdf_warnings_go_into_the_reason_not_bare_on_stderr(tmp_path, capfd):
    """... and is not printed bare on stderr by logging's last-resort handler, as it was."""
    import logging

    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ngarbage")
    with pytest.raises(LoadError) as e:
        load_file(bad, S, source="bad.pdf")
    assert str(e.value).startswith("bad.pdf is not a readable PDF (corrupt or truncated: ")
    assert "EOF marker not found" in str(e.value)
    assert "EOF marker" not in capfd.readouterr().err


# ---------------------------------------------------------------------------
# DOCX


def _docx(path: Path, build) -> Path:
    import docx

    d = docx.Document()
    build(d)
    d.save(str(path))
    return path


def test_docx_paragraphs_and_tables_in_document_order(tmp_path):
    def build(d):
        d.core_properties.title = "Quy định học bổng 2023"
        d.add_paragraph("Điều 4. Mức học bổng")
        t = d.add_table(rows=3, cols=2)
        for r, (a, b) in enumerate([("Xếp loại", "Mức (đồng/tháng)"), ("Xuất sắc", "4.000.000"), ("Giỏi | Khá", "3.000.000")]):
            t.cell(r, 0).text, t.cell(r, 1).text = a, b
        d.add_paragraph("Điều 5. Điều kiện xét")
        d.add_paragraph("Sinh viên có điểm rèn luyện từ loại Tốt trở lên.")

    doc = load_file(_docx(tmp_path / "hb.docx", build), S)
    assert doc.kind == "docx" and [p.number for p in doc.pages] == [1]
    assert doc.title == "Quy định học bổng 2023"
    assert doc.text == (
        "Điều 4. Mức học bổng\n"
        "\n"
        "| Xếp loại | Mức (đồng/tháng) |\n"
        "| Xuất sắc | 4.000.000 |\n"
        "| Giỏi \\| Khá | 3.000.000 |\n"
        "\n"
        "Điều 5. Điều kiện xét\n"
        "Sinh viên có điểm rèn luyện từ loại Tốt trở lên."
    )


def test_docx_merged_cells_keep_the_column_count(tmp_path):
    def build(d):
        t = d.add_table(rows=2, cols=3)
        t.cell(0, 0).merge(t.cell(0, 1)).text = "Học kỳ"
        t.cell(0, 2).text = "Tín chỉ"
        t.cell(1, 0).text, t.cell(1, 1).text, t.cell(1, 2).text = "1", "2", "18"

    doc = load_file(_docx(tmp_path / "merged.docx", build), S)
    assert doc.pages[0].text == "| Học kỳ |  | Tín chỉ |\n| 1 | 2 | 18 |"


def test_docx_automatic_list_numbers_are_rendered(tmp_path):
    def build(d):
        d.add_paragraph("Điều 7. Đánh giá học phần")
        d.add_paragraph("Điểm quá trình.", style="List Number")
        d.add_paragraph("Điểm cuối kỳ.", style="List Number")
        d.add_paragraph("Ghi chú", style="List Bullet")

    doc = load_file(_docx(tmp_path / "list.docx", build), S)
    assert doc.text.split("\n") == ["Điều 7. Đánh giá học phần", "1. Điểm quá trình.", "2. Điểm cuối kỳ.", "- Ghi chú"]
    assert doc.title == "list"  # no core title, text starts with an article: the file stem


def test_docx_multilevel_numbering_with_articles_numbered_across_chapters(tmp_path):
    from docx.oxml import parse_xml

    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    levels = (
        '<w:lvl w:ilvl="0"><w:start w:val="1"/><w:numFmt w:val="upperRoman"/><w:lvlText w:val="Chương %1."/></w:lvl>'
        '<w:lvl w:ilvl="1"><w:start w:val="1"/><w:numFmt w:val="decimal"/><w:lvlRestart w:val="0"/><w:lvlText w:val="Điều %2."/></w:lvl>'
        '<w:lvl w:ilvl="2"><w:start w:val="1"/><w:numFmt w:val="decimal"/><w:lvlText w:val="%3."/></w:lvl>'
        '<w:lvl w:ilvl="3"><w:start w:val="1"/><w:numFmt w:val="lowerLetter"/><w:lvlText w:val="%4)"/></w:lvl>'
    )

    def build(d):
        numbering = d.part.numbering_part.element
        numbering.append(parse_xml(f'<w:abstractNum {w} w:abstractNumId="90">{levels}</w:abstractNum>'))
        numbering.append(parse_xml(f'<w:num {w} w:numId="90"><w:abstractNumId w:val="90"/></w:num>'))
        for level, text in [(0, "QUY ĐỊNH CHUNG"), (1, "Phạm vi"), (2, "Khoản một"), (3, "điểm một"), (3, "điểm hai"),
                            (2, "Khoản hai"), (1, "Đối tượng"), (2, "Khoản một"), (0, "TỔ CHỨC ĐÀO TẠO"), (1, "Học kỳ")]:
            p = d.add_paragraph(text)
            p._p.get_or_add_pPr().append(parse_xml(f'<w:numPr {w}><w:ilvl w:val="{level}"/><w:numId w:val="90"/></w:numPr>'))

    doc = load_file(_docx(tmp_path / "qc.docx", build), S)
    assert doc.text.split("\n") == [
        "Chương I. QUY ĐỊNH CHUNG", "Điều 1. Phạm vi", "1. Khoản một", "a) điểm một", "b) điểm hai", "2. Khoản hai",
        "Điều 2. Đối tượng", "1. Khoản một", "Chương II. TỔ CHỨC ĐÀO TẠO", "Điều 3. Học kỳ",
    ]


def test_docx_text_skips_tab_stops_deleted_text_and_field_codes(tmp_path):
    from docx.oxml import parse_xml
    from docx.shared import Inches

    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'

    def build(d):
        p = d.add_paragraph()
        p.paragraph_format.tab_stops.add_tab_stop(Inches(1))  # a w:tab inside w:pPr: not a character
        p.add_run("Điều 9.\tHọc phí")
        p._p.append(parse_xml(f'<w:del {w} w:id="1" w:author="a" w:date="2025-01-01T00:00:00Z"><w:r><w:delText> cũ</w:delText></w:r></w:del>'))
        p._p.append(parse_xml(f'<w:ins {w} w:id="2" w:author="a" w:date="2025-01-01T00:00:00Z"><w:r><w:t xml:space="preserve"> mới</w:t></w:r></w:ins>'))
        p._p.append(parse_xml(f'<w:r {w}><w:instrText> PAGE </w:instrText></w:r>'))

    doc = load_file(_docx(tmp_path / "tracked.docx", build), S)
    assert doc.text == "Điều 9.\tHọc phí mới"


def test_docx_corrupt_xml(tmp_path):
    path = _docx(tmp_path / "ok.docx", lambda d: d.add_paragraph("Điều 1"))
    broken = tmp_path / "broken.docx"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, b"<w:document><unclosed" if item.filename == "word/document.xml" else src.read(item))
    with pytest.raises(LoadError, match="not a readable DOCX") as e:
        load_file(broken, S)
    assert e.value.__cause__ is not None


def test_docx_nested_past_libxml2s_limit_is_too_deep(tmp_path):
    path = _docx(tmp_path / "ok.docx", lambda d: d.add_paragraph("Điều 1"))
    deep = tmp_path / "deep.docx"
    body = "<w:sdt><w:sdtContent>" * 300 + "<w:p/>" + "</w:sdtContent></w:sdt>" * 300
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(deep, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "word/document.xml":
                data = data.replace(b"<w:body>", b"<w:body>" + body.encode(), 1)
            dst.writestr(item, data)
    with pytest.raises(LoadError, match="nested too deeply") as e:
        load_file(deep, S)
    assert e.value.code == "too_deep"


def test_docx_zip_bomb_is_refused_before_opening(tmp_path):
    path = _docx(tmp_path / "bomb.docx", lambda d: d.add_paragraph("Điều 1. Phạm vi"))
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/media/zeros.bin", b"\0" * (3 * 1024 * 1024))
    assert path.stat().st_size < 200_000  # small on disk, 3 MB expanded
    with pytest.raises(LoadError) as e:
        load_file(path, S.with_(max_unzipped_mb=1))
    assert "RAG_MAX_UNZIPPED_MB" in str(e.value) and "1 MB limit" in str(e.value)
    assert load_file(path, S).pages[0].text == "Điều 1. Phạm vi"  # under the default limit it loads


def _state_size(path: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size ``member`` states in the zip's central directory and local header."""
    import struct

    data = bytearray(path.read_bytes())
    name = member.encode()
    for sig, offset, name_at in ((b"PK\x01\x02", 24, 46), (b"PK\x03\x04", 22, 30)):
        at = data.find(sig)
        while at >= 0:
            if data[at + name_at: at + name_at + len(name)] == name:
                data[at + offset: at + offset + 4] = struct.pack("<I", size)
            at = data.find(sig, at + 1)
    path.write_bytes(bytes(data))


def test_docx_that_lies_about_its_expanded_size_is_refused_in_bounded_memory(tmp_path):
    """A part stating 100 bytes that inflates to 64 MB: the directory check passes, the stream stops at the
    stated size (the CRC then fails) instead of python-docx inflating 64 MB in one call."""
    import tracemalloc

    path = _docx(tmp_path / "liar.docx", lambda d: d.add_paragraph("Điều 1. Phạm vi"))
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/media/zeros.bin", b"\0" * (64 * 1024 * 1024))
    _state_size(path, "word/media/zeros.bin", 100)
    tracemalloc.start()
    try:
        with pytest.raises(LoadError, match="damaged DOCX"):
            load_file(path, S)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, peak


def test_docx_numbers_and_spans_past_sense_are_bounded(tmp_path):
    """A list starting at 10^15 in Roman numerals (10^12 "M"s: the loader hung) and a cell spanning 5 million
    columns (5 million empty cells) load at once, as a decimal number and a capped span."""
    from docx.oxml import parse_xml

    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'

    def build(d):
        numbering = d.part.numbering_part.element
        numbering.append(parse_xml(f'<w:abstractNum {w} w:abstractNumId="91"><w:lvl w:ilvl="0">'
                                   '<w:start w:val="999999999999999"/><w:numFmt w:val="upperRoman"/>'
                                   '<w:lvlText w:val="%1."/></w:lvl></w:abstractNum>'))
        numbering.append(parse_xml(f'<w:num {w} w:numId="91"><w:abstractNumId w:val="91"/></w:num>'))
        p = d.add_paragraph("Khoản một")
        p._p.get_or_add_pPr().append(parse_xml(f'<w:numPr {w}><w:ilvl w:val="0"/><w:numId w:val="91"/></w:numPr>'))
        t = d.add_table(rows=1, cols=2)
        t.cell(0, 0).text, t.cell(0, 1).text = "Học kỳ", "Tín chỉ"
        t.cell(0, 0)._tc.get_or_add_tcPr().append(parse_xml(f'<w:gridSpan {w} w:val="5000000"/>'))

    doc = load_file(_docx(tmp_path / "huge-numbers.docx", build), S)
    lines = doc.pages[0].text.split("\n")
    assert lines[0] == "100000. Khoản một"
    row = next(line for line in lines if "Học kỳ" in line)
    assert row.count("|") <= 102 and "Tín chỉ" in row


def test_docx_xml_over_its_limit_is_refused_before_parsing(tmp_path, monkeypatch):
    """RAG_MAX_DOCX_XML_MB counts the XML python-docx would parse into a tree (media do not count)."""
    import docx

    path = _docx(tmp_path / "long.docx", lambda d: [d.add_paragraph(f"Điều {i}. Sinh viên đóng học phí đúng hạn.")
                                                    for i in range(1, 400)])
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/media/photo.bin", b"\0" * (2 * 1024 * 1024))  # 2 MB of media: not XML
    parsed = []
    monkeypatch.setattr(docx, "Document", lambda *a: parsed.append(a) or pytest.fail("parsed"))
    with pytest.raises(LoadError) as e:
        load_file(path, S.with_(max_docx_xml_mb=0.02))
    assert e.value.code == "file_too_large" and "RAG_MAX_DOCX_XML_MB" in str(e.value) and "0.02 MB limit" in str(e.value)
    assert not parsed
    monkeypatch.undo()
    doc = load_file(path, S.with_(max_docx_xml_mb=1))  # 2 MB of media, under 1 MB of XML: read
    assert "Điều 399. Sinh viên đóng học phí đúng hạn." in doc.pages[0].text


def test_json_has_its_own_size_cap_and_page_limit(tmp_path, monkeypatch):
    import rag.load.json as json_loader

    path = tmp_path / "big.json"
    path.write_text(json.dumps({"title": "Quy chế", "text": "Điều 1. Học phí\n" + "Sinh viên đóng học phí. " * 2000},
                               ensure_ascii=False), encoding="utf-8")
    with pytest.raises(LoadError) as e:
        load_file(path, S.with_(max_json_mb=0.01))
    assert e.value.code == "file_too_large" and "RAG_MAX_JSON_MB" in str(e.value)
    assert load_file(path, S.with_(max_json_mb=0.1)).pages[0].text.startswith("Điều 1. Học phí")
    with pytest.raises(LoadError) as e:  # RAG_MAX_FILE_MB still applies, and is named when it is the lower
        load_file(path, S.with_(max_file_mb=0.01))
    assert "RAG_MAX_FILE_MB" in str(e.value)
    monkeypatch.setattr(json_loader, "MAX_PAGES", 3)
    pages = tmp_path / "pages.json"
    pages.write_text(json.dumps({"pages": ["Điều 1. A", "b", "c", "d"]}), encoding="utf-8")
    with pytest.raises(LoadError, match="4 pages, over the 3") as e:
        load_file(pages, S)
    assert e.value.code == "file_too_large"


def test_docx_that_is_not_a_zip_or_not_word(tmp_path):
    fake = tmp_path / "old.docx"
    fake.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 512)  # an old binary .doc renamed
    with pytest.raises(LoadError, match="not a zip archive") as e:
        load_file(fake, S)
    assert "save it as .docx" in str(e.value)
    other = tmp_path / "other.docx"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("hello.txt", "xin chào")
    with pytest.raises(LoadError, match="not a Word document"):
        load_file(other, S)


# ---------------------------------------------------------------------------
# HTML

HTML = """<!doctype html>
<html><head><title>Quy chế công tác sinh viên</title><style>p { color: red }</style>
<script>var hidden = "mã độc";</script></head>
<body>
<nav hidden>Menu ẩn</nav>
<h1>Chương I.   Quy định chung</h1>
<p>Điều 1. Phạm vi<br>áp dụng cho   sinh viên.</p>
<div aria-hidden="true">Không đọc</div>
<p style="display: none">Ẩn bằng CSS</p>
<span style="VISIBILITY:hidden">Ẩn nữa</span>
<noscript>Bật JavaScript</noscript><template><p>Mẫu</p></template>
<!-- ghi chú -->
<table><tr><th>Mức</th><th>Điểm</th></tr><tr><td>Giỏi</td><td>3,2 – 3,59</td></tr></table>
<ol><li>Khoản một</li><li>Khoản hai</li></ol>
<ul><li>Gạch đầu dòng</li></ul>
</body></html>"""


def test_html_drops_scripts_styles_and_hidden_elements(tmp_path):
    path = tmp_path / "ctsv.html"
    path.write_text(HTML, encoding="utf-8")
    doc = load_file(path, S)
    assert doc.kind == "html" and doc.title == "Quy chế công tác sinh viên"
    assert doc.text == (
        "Chương I. Quy định chung\n"
        "Điều 1. Phạm vi\n"
        "áp dụng cho sinh viên.\n"
        "\n"
        "| Mức | Điểm |\n"
        "| Giỏi | 3,2 – 3,59 |\n"
        "\n"
        "1. Khoản một\n"
        "2. Khoản hai\n"
        "- Gạch đầu dòng"
    )


def test_html_legacy_charset_and_h1_title(tmp_path):
    path = tmp_path / "old.htm"
    body = "<html><head><meta charset='windows-1258'></head><body><h1>Quy chế đào tạo</h1><p>Điều 5</p></body></html>"
    path.write_bytes(to_cp1258(body))
    doc = load_file(path, S)
    assert doc.kind == "html"
    assert unicodedata.normalize("NFC", doc.title) == "Quy chế đào tạo"
    assert unicodedata.normalize("NFC", doc.text) == "Quy chế đào tạo\nĐiều 5"


# ---------------------------------------------------------------------------
# TXT / MD

VI = "Điều 10. Cảnh báo học tập\nSinh viên bị cảnh báo học tập nếu điểm trung bình tích lũy thấp hơn quy định."


@pytest.mark.parametrize(
    "encode",
    [
        lambda s: s.encode("utf-8"),
        lambda s: s.encode("utf-8-sig"),
        lambda s: s.encode("utf-16"),  # with BOM
        lambda s: b"\xfe\xff" + s.encode("utf-16-be"),
        lambda s: s.encode("utf-16-le"),  # without BOM
        lambda s: s.encode("utf-16-be"),
    ],
    ids=["utf8", "utf8-bom", "utf16-bom", "utf16be-bom", "utf16le-nobom", "utf16be-nobom"],
)
def test_txt_unicode_encodings(tmp_path, encode):
    path = tmp_path / "a.txt"
    path.write_bytes(encode(VI))
    doc = load_file(path, S)
    assert doc.text == VI and doc.kind == "txt"


@pytest.mark.parametrize("text", [VI, "Điều 5", "Quy chế đào tạo"])
def test_txt_windows_1258(tmp_path, text):
    raw = to_cp1258(text)
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    path = tmp_path / "cu.txt"
    path.write_bytes(raw)
    got = load_file(path, S).text
    assert got != text or text.isascii()  # decoded as written: combining tone marks, not yet NFC
    assert unicodedata.normalize("NFC", got) == text


@pytest.mark.parametrize(
    "raw, detail",
    [
        (bytes([0x81, 0x8D, 0x8E, 0x90]) * 20, "not valid in any of them"),  # bytes undefined in cp1258
        ("Prüfungsordnung für Studierende, Universität Ünterwald".encode("cp1252"), "does not read as Vietnamese"),
        ("Sinh viên được học bổng".encode("utf-8") + b"\xff" + "khuyến khích".encode("utf-8"), "invalid byte at offset 32"),
    ],
    ids=["undefined-bytes", "german-cp1252", "damaged-utf8"],
)
def test_txt_undecodable(tmp_path, raw, detail):
    path = tmp_path / "bad.txt"
    path.write_bytes(raw)
    with pytest.raises(LoadError) as e:
        load_file(path, S, source="docs/bad.txt")
    msg = str(e.value)
    assert msg.startswith("cannot decode docs/bad.txt as UTF-8, UTF-16 or Windows-1258") and "save it as UTF-8" in msg
    assert detail in msg


def test_txt_binary_is_named_as_such_and_a_stray_nul_is_text(tmp_path):
    binary = tmp_path / "bad.txt"
    binary.write_bytes(b"\x00\x01\x02\x03\x04\x05" * 11)
    with pytest.raises(LoadError, match="looks like a binary file, not text: .*control characters make up over 1%"):
        load_file(binary, S, source="docs/bad.txt")
    stray = tmp_path / "stray.md"  # a UTF-8 file with one NUL: the advice "save it as UTF-8" could not help
    stray.write_bytes(("Điều 1.\x00 Phạm vi" + " điều chỉnh" * 20).encode("utf-8"))
    from rag.normalise import normalise_text

    text = normalise_text(load_file(stray, S).text)  # read; the NUL goes with the other control characters
    assert "\x00" not in text and text.startswith("Điều 1. Phạm vi")


def test_txt_form_feeds_split_pages_and_crlf_becomes_lf(tmp_path):
    path = tmp_path / "pages.txt"
    path.write_bytes("Trang một\r\ndòng hai\fTrang hai\f \f\fTrang năm\f".encode("utf-8"))
    doc = load_file(path, S)
    assert [(p.number, p.text) for p in doc.pages] == [(1, "Trang một\ndòng hai"), (2, "Trang hai"), (5, "Trang năm")]


def test_md_title_is_the_first_level_one_heading(tmp_path):
    path = tmp_path / "readme.md"
    path.write_text("Lời nói đầu\n```\n# không phải tiêu đề\n```\n## Mục phụ\n# Quy chế đào tạo 2025 #\nNội dung", encoding="utf-8")
    doc = load_file(path, S)
    assert doc.kind == "md" and doc.title == "Quy chế đào tạo 2025"
    assert doc.text.startswith("Lời nói đầu\n```")  # Markdown is kept as written


def test_txt_title_skips_the_administrative_header(tmp_path):
    path = tmp_path / "qd.txt"
    path.write_text(
        "BỘ GIÁO DỤC VÀ ĐÀO TẠO\nĐẠI HỌC BÁCH KHOA HÀ NỘI\nCỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM\n"
        "Độc lập - Tự do - Hạnh phúc\nSố: 123/QĐ-ĐHBK    Hà Nội, ngày 5 tháng 6 năm 2025\n"
        "QUYẾT ĐỊNH\nVề việc ban hành Quy định xét cấp học bổng\ntại Đại học Bách khoa Hà Nội\n"
        "GIÁM ĐỐC ĐẠI HỌC BÁCH KHOA HÀ NỘI\n",
        encoding="utf-8",
    )
    assert load_file(path, S).title == "QUYẾT ĐỊNH Về việc ban hành Quy định xét cấp học bổng tại Đại học Bách khoa Hà Nội"


# ---------------------------------------------------------------------------
# JSON


def test_json_pages_and_text_shapes(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"title": "Quy chế", "pages": ["Điều 1. Một", "", "Điều 2. Hai"], "url": "x"}), encoding="utf-8")
    doc = load_file(a, S)
    assert doc.kind == "json" and doc.title == "Quy chế"
    assert [(p.number, p.text) for p in doc.pages] == [(1, "Điều 1. Một"), (3, "Điều 2. Hai")]
    b = tmp_path / "b.json"
    b.write_bytes(json.dumps({"text": "Điều 1. Phạm vi\r\nNội dung"}, ensure_ascii=False).encode("utf-16"))
    doc = load_file(b, S)
    assert doc.title == "b" and doc.pages[0].text == "Điều 1. Phạm vi\nNội dung"


@pytest.mark.parametrize(
    "content, why",
    [
        ('[{"title": "a", "text": "b"}]', "top level is a list"),
        ('{"title": "a"}', 'exactly one of "pages" and "text"'),
        ('{"pages": ["a"], "text": "b"}', 'exactly one of "pages" and "text"'),
        ('{"pages": ["a", 3]}', '"pages"[1] is a int'),
        ('{"pages": "abc"}', '"pages" must be a list'),
        ('{"title": 5, "text": "b"}', '"title" must be a string'),
        ('{"text": "b",}', "not valid JSON"),
    ],
)
def test_json_bad_shapes_explain_the_accepted_one(tmp_path, content, why):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(LoadError) as e:
        load_file(path, S)
    assert why in str(e.value) and '{"title": "...", "pages": [' in str(e.value)


# ---------------------------------------------------------------------------
# Limits and general errors


@pytest.mark.parametrize("name, content", [("empty.txt", b""), ("empty.pdf", b""), ("blank.txt", b" \n\t\n"), ("blank.json", b'{"pages": ["", " "]}')])
def test_empty_files(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(LoadError, match=f"^{name} is empty"):
        load_file(path, S, source=name)


def test_file_size_limit_names_the_setting(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text(VI * 20, encoding="utf-8")
    with pytest.raises(LoadError) as e:
        load_file(path, S.with_(max_file_mb=0.001))
    msg = str(e.value)
    assert "RAG_MAX_FILE_MB" in msg and "0.001 MB limit" in msg and "0.00" in msg


def test_unsupported_extension_lists_supported_ones(tmp_path):
    path = tmp_path / "bang-diem.xlsx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(LoadError) as e:
        load_file(path, S)
    for ext in SUPPORTED:
        assert ext in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        load_file(tmp_path / "nope.pdf", S)


# ---------------------------------------------------------------------------
# iter_files


def _tree(root: Path, files: list[str]) -> None:
    for rel in files:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("Điều 1. Nội dung", encoding="utf-8")


def test_iter_files_folder_sorted_recursive_hidden_skipped(tmp_path):
    root = tmp_path / "corpus"
    _tree(root, ["b.txt", "a.PDF", "sub/c.md", "sub/z/d.json", ".hidden.txt", ".git/e.md", "sub/notes.xlsx", "sub/~$lock.docx", "README"])
    result = iter_files([root])
    assert isinstance(result, FileList)
    assert [label for _, label in result.files] == ["a.PDF", "b.txt", "sub/c.md", "sub/z/d.json"]
    assert all(p.is_absolute() and p.exists() for p, _ in result)
    assert len(result) == 4
    skipped = {p.name: why for p, why in result.skipped}
    assert set(skipped) == {"notes.xlsx", "~$lock.docx", "README"}
    assert skipped["notes.xlsx"].startswith("unsupported type .xlsx")
    assert "no extension" in skipped["README"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks on this platform")
def test_iter_files_symlinks_outside_the_folder_are_skipped(tmp_path):
    root, outside = tmp_path / "corpus", tmp_path / "private"
    _tree(root, ["a.txt", "sub/b.txt"])
    _tree(outside, ["secret.txt", "more/x.txt"])
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "escape-dir").symlink_to(outside)
    (root / "alias.txt").symlink_to(root / "sub" / "b.txt")  # inside: followed, but listed once
    (root / "sub" / "loop").symlink_to(root)  # a cycle must not hang
    (root / "broken.txt").symlink_to(tmp_path / "gone.txt")
    result = iter_files([str(root)])
    assert [label for _, label in result.files] == ["a.txt", "alias.txt"]
    assert [p for p, _ in result.files] == [root / "a.txt", root / "alias.txt"]  # the link, read through
    skipped = {p.name: why for p, why in result.skipped}
    assert "outside" in skipped["escape.txt"] and "outside" in skipped["escape-dir"]
    assert skipped["broken.txt"] == "broken symlink"
    assert not any("private" in str(p) for p, _ in result.files)


def test_iter_files_explicit_files(tmp_path):
    _tree(tmp_path, ["x/quy-che.pdf", "y/quy-che.pdf", "bang.xlsx"])
    result = iter_files([tmp_path / "x" / "quy-che.pdf", tmp_path / "bang.xlsx", tmp_path / "y" / "quy-che.pdf"])
    assert [label for _, label in result.files] == ["quy-che.pdf", str(tmp_path / "y" / "quy-che.pdf")]
    assert [(p.name, why.split(":")[0]) for p, why in result.skipped] == [("bang.xlsx", "unsupported type .xlsx")]


def test_iter_files_folder_without_supported_files(tmp_path):
    _tree(tmp_path / "empty", ["bang.xlsx", ".an.pdf"])
    with pytest.raises(InputError) as e:
        iter_files([tmp_path / "empty"])
    assert "contains no supported files (.pdf, .docx" in str(e.value)


def test_iter_files_missing_path(tmp_path):
    missing = tmp_path / "khong-co"
    with pytest.raises(InputError, match=f"no such file or folder: {missing}"):
        iter_files([missing])


# ---------------------------------------------------------------------------
# The real HUST regulations

REAL_PDFS = Path(__file__).resolve().parents[2] / "shared" / "data" / "hust-regulations" / "pdf"


@pytest.mark.skipif(not REAL_PDFS.is_dir(), reason=f"real regulation PDFs not found at {REAL_PDFS}")
def test_real_hust_pdfs():
    files = sorted(REAL_PDFS.glob("*.pdf"))
    assert len(files) == 9
    loaded = 0
    for path in files:
        if path.name.startswith("QD ban hanh"):  # scans from a photocopier, no text layer
            with pytest.raises(NeedsOCRError, match=r"no text layer \(needs OCR\)"):
                load_file(path, S, source=path.name)
            continue
        doc = load_file(path, S, source=path.name)
        loaded += 1
        assert doc.pages and all(p.text.strip() for p in doc.pages), path.name
        numbers = [p.number for p in doc.pages]
        assert numbers[0] == 1 and numbers == sorted(set(numbers)), path.name
        text = doc.text
        assert "Điều" in text and "sinh viên" in text.lower(), path.name
        assert "\r" not in text and "\x02" not in text, path.name
        assert doc.title != path.stem and len(doc.title) <= 150, path.name
    assert loaded == 6
    # pdfium marks a hyphen at a line end with U+0002; the loader restores the hyphen
    assert "quốc phòng-an ninh" in load_file(REAL_PDFS / "Quy_che_25.pdf", S).text
