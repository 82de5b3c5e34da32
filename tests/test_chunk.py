"""Structure-aware chunking: a short hand-worked regulation with its expected chunks, edge cases, real data."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from rag.chunk import chunk_document
from rag.normalise import clean_pages
from rag.render import citation_label
from rag.types import Document, Page

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TITLE = "Quy chế thử nghiệm"
MAX = 280  # small limits so that a short regulation exercises every split

# --- the reference regulation: 3 pages, 2 chapters, 1 Mục, 5 Điều -----------------------

PREAMBLE = ["TRƯỜNG ĐẠI HỌC SÔNG LAM", "QUY CHẾ ĐÀO TẠO THỬ NGHIỆM"]
CH1 = ["Chương I", "NHỮNG QUY ĐỊNH CHUNG"]
D1 = ["Điều 1. Phạm vi điều chỉnh", "Quy chế này quy định về đào tạo trình độ đại học theo tín chỉ."]
D2 = [
    "Điều 2. Thang điểm chữ",
    "Điểm học phần được quy đổi sang điểm chữ như sau:",
    "| Điểm chữ | Thang 10 |",
    "| --- | --- |",
    "| A | Từ 8,5 đến 10 |",
    "| B | Từ 7,0 đến 8,4 |",
]
CH2 = ["Chương II", "TỔ CHỨC ĐÀO TẠO", "Mục 1. HỌC VỤ"]
D3_LEAD = ["Điều 3. Cảnh báo học tập", "Việc cảnh báo học tập được thực hiện sau mỗi học kỳ chính."]
D3_K1 = ["1. Sinh viên bị cảnh báo nếu điểm trung bình học kỳ dưới 1,0 hoặc điểm trung bình tích lũy dưới 1,2."]
D3_K2 = ["2. Sinh viên bị cảnh báo nếu tổng số tín chỉ nợ từ đầu khóa vượt quá 24 tín chỉ."]
# page 2
D3_K3 = [
    "3. Cảnh báo học tập có các mức sau:",
    "a) Mức 1 áp dụng đối với sinh viên bị cảnh báo lần đầu trong khóa học;",
    "b) Mức 2 áp dụng đối với sinh viên bị cảnh báo hai học kỳ chính liên tiếp;",
    "c) Mức 3 áp dụng đối với sinh viên bị cảnh báo ba học kỳ chính liên tiếp;",
    "d) Sinh viên ở mức 3 phải gặp cố vấn học tập trong vòng hai tuần đầu học kỳ;",
    "đ) Sinh viên có hoàn cảnh đặc biệt được Hiệu trưởng xem xét giảm một mức.",
]
D3_K4 = [
    "4. Cảnh báo được xóa khi sinh viên không còn thuộc trường hợp quy định tại khoản 1",
    "Điều 3. Kết quả xóa cảnh báo được thông báo trên cổng thông tin đào tạo.",  # a wrapped cross-reference
]
# page 3
D4 = [
    "Điều 4. Học phí và các khoản thu khác đối với",
    "sinh viên",  # the title wrapped onto a second line
    "Sinh viên nộp học phí theo quy định tại Điều 3 của Quy chế này và thông báo của Trường.",
]
D5 = [
    "Điều 5. Thời hạn giải quyết thủ tục",
    "1. Thời hạn giải quyết các thủ tục học vụ như sau:",
    "| Thủ tục | Thời hạn |",
    "| --- | --- |",
    "| Cấp bảng điểm | 3 ngày làm việc |",
    "| Cấp giấy xác nhận sinh viên | 2 ngày làm việc |",
    "| Phúc khảo bài thi | 10 ngày làm việc |",
    "| Cấp lại thẻ sinh viên | 5 ngày làm việc |",
    "2. Sinh viên nộp hồ sơ trực tuyến trên cổng thông tin của Trường.",
]

PAGE1 = PREAMBLE + CH1 + D1 + D2 + CH2 + D3_LEAD + D3_K1 + D3_K2
PAGE2 = D3_K3 + D3_K4
PAGE3 = D4 + D5


def _doc(pages: list[str], title: str = TITLE, source: str = "quy-che-thu-nghiem.pdf") -> Document:
    return Document(
        source=source, title=title, pages=[Page(i + 1, t) for i, t in enumerate(pages)], sha256="ab" * 32, kind="pdf"
    )


def _reference_doc() -> Document:
    return _doc(["\n".join(PAGE1), "\n".join(PAGE2), "\n".join(PAGE3)])


def _j(*lines: str) -> str:
    return "\n".join(lines)


C1 = "Chương I. NHỮNG QUY ĐỊNH CHUNG"
C2 = "Chương II. TỔ CHỨC ĐÀO TẠO"
M1 = "Mục 1. HỌC VỤ"
H3 = f"{TITLE} › {C2} › {M1} › Điều 3. Cảnh báo học tập"
H5 = f"{TITLE} › {C2} › {M1} › Điều 5. Thời hạn giải quyết thủ tục"

# Worked out by hand from the rules in rag/chunk/ (its docstring) with max_chars=280:
# - Điều 2 (with its table) is 177 chars: one article chunk, table inside.
# - Điều 3 is 803 chars: lead-in + Khoản 1 + Khoản 2 = 240 chars fit together; Khoản 3 alone is 406
#   chars, so it is split at Điểm: lead-in + a + b + c = 255 fit, adding d would be 332; then d + đ;
#   Khoản 4 cannot join Điểm pieces and stands alone. Its second line "Điều 3. Kết quả ..." follows
#   "tại khoản 1" and repeats number 3: a cross-reference, not a new article.
# - Điều 4's title wrapped; the "Điều 3" in its body is mid-sentence.
# - Điều 5 is 324 chars: the table leaves as its own chunk (inside Khoản 1); the rest (116 chars) fits
#   in one article chunk.
EXPECTED = [
    # kind, header, chapter, section, article, article_title, clause, point, page, text
    ("paragraph", TITLE, None, None, None, None, None, None, 1, _j(*PREAMBLE)),
    ("article", f"{TITLE} › {C1} › Điều 1. Phạm vi điều chỉnh", C1, None, "1", "Phạm vi điều chỉnh", None, None, 1,
     D1[1]),
    ("article", f"{TITLE} › {C1} › Điều 2. Thang điểm chữ", C1, None, "2", "Thang điểm chữ", None, None, 1,
     _j(*D2[1:])),
    ("clause", f"{H3} › Khoản 1-2", C2, M1, "3", "Cảnh báo học tập", "1-2", None, 1,
     _j(D3_LEAD[1], *D3_K1, *D3_K2)),
    ("clause", f"{H3} › Khoản 3 › Điểm a-c", C2, M1, "3", "Cảnh báo học tập", "3", "a-c", 2, _j(*D3_K3[:4])),
    ("clause", f"{H3} › Khoản 3 › Điểm d-đ", C2, M1, "3", "Cảnh báo học tập", "3", "d-đ", 2, _j(*D3_K3[4:])),
    ("clause", f"{H3} › Khoản 4", C2, M1, "3", "Cảnh báo học tập", "4", None, 2, _j(*D3_K4)),
    ("article", f"{TITLE} › {C2} › {M1} › Điều 4. Học phí và các khoản thu khác đối với sinh viên", C2, M1, "4",
     "Học phí và các khoản thu khác đối với sinh viên", None, None, 3, D4[2]),
    ("article", H5, C2, M1, "5", "Thời hạn giải quyết thủ tục", None, None, 3, _j(D5[1], D5[8])),
    ("table", f"{H5} › Khoản 1", C2, M1, "5", "Thời hạn giải quyết thủ tục", "1", None, 3, _j(*D5[2:8])),
]


def _rows(chunks):
    return [
        (c.kind, c.header, c.chapter, c.section, c.article, c.article_title, c.clause, c.point, c.page, c.text)
        for c in chunks
    ]


def test_reference_regulation_gives_the_hand_worked_chunks():
    chunks = chunk_document(_reference_doc(), max_chars=MAX, window_chars=MAX)
    assert _rows(chunks) == EXPECTED


def test_reference_chunks_carry_document_fields_and_fit():
    doc = _reference_doc()
    chunks = chunk_document(doc, max_chars=MAX, window_chars=MAX)
    for c in chunks:
        assert (c.document, c.source, c.doc_sha256) == (TITLE, doc.source, doc.sha256)
        assert c.part is None
        assert len(c.text) <= MAX
        assert c.full_text == f"{c.header}\n{c.text}"
    cite = chunks[4].citation()
    assert citation_label(cite) == "Quy chế thử nghiệm, Điều 3, Khoản 3, Điểm a-c, trang 2"


def test_a_long_article_fits_whole_with_the_default_limit():
    chunks = chunk_document(_reference_doc())
    arts = [c for c in chunks if c.article == "3"]
    assert len(arts) == 1 and arts[0].kind == "article" and arts[0].clause is None
    assert arts[0].text == _j(D3_LEAD[1], *D3_K1, *D3_K2, *D3_K3, *D3_K4)
    assert arts[0].page == 1
    assert [c.kind for c in chunks].count("table") == 0  # tables stay inside their Điều when it fits


def test_raw_pages_cleaned_give_the_same_chunks():
    """Headers, footers, page numbers, a TOC, NBSP, decomposed text and new-style tones are all undone."""
    header = "TRƯỜNG ĐẠI HỌC SÔNG LAM – QUY CHẾ ĐÀO TẠO 2025"
    toc = ["MỤC LỤC", "Điều 1. Phạm vi điều chỉnh ........ 1", "Điều 3. Cảnh báo học tập …… 2"]
    page1 = [header] + toc + PAGE1 + ["Trang 1/3"]
    page2 = [header, "- 2 -"] + [ln.replace("khóa", "khoá") for ln in PAGE2] + ["Trang 2/3"]
    page3 = [header] + [ln.replace(" ", "\u00a0", 1) for ln in PAGE3] + ["Trang 3/3"]
    raw = _doc(["\n".join(page1), unicodedata.normalize("NFD", "\r\n".join(page2)), "\n".join(page3)])
    cleaned = Document(raw.source, raw.title, clean_pages(raw.pages), raw.sha256, raw.kind)
    got = chunk_document(cleaned, max_chars=MAX, window_chars=MAX)
    want = chunk_document(_reference_doc(), max_chars=MAX, window_chars=MAX)
    assert _rows(got) == EXPECTED
    assert [c.id for c in got] == [c.id for c in want]


# --- ids ------------------------------------------------------------------------------


def test_ids_are_stable_and_change_only_where_text_changes():
    a = chunk_document(_reference_doc(), max_chars=MAX, window_chars=MAX)
    b = chunk_document(_reference_doc(), max_chars=MAX, window_chars=MAX)
    assert [c.id for c in a] == [c.id for c in b]
    assert len({c.id for c in a}) == len(a)
    assert all(re.fullmatch(r"[0-9a-f]{20}", c.id) for c in a)

    edited = _reference_doc()
    edited.pages[0].text = edited.pages[0].text.replace("theo tín chỉ", "theo niên chế")
    c = chunk_document(edited, max_chars=MAX, window_chars=MAX)
    changed = [i for i, (x, y) in enumerate(zip(a, c)) if x.id != y.id]
    assert changed == [1]  # only Điều 1

    other_source = _doc([p.text for p in _reference_doc().pages], source="khac.pdf")
    assert not {x.id for x in a} & {x.id for x in chunk_document(other_source, max_chars=MAX, window_chars=MAX)}


def test_identical_chunks_in_one_document_get_distinct_ids():
    para = "Sinh viên thực hiện nghĩa vụ học tập theo kế hoạch của Trường. " * 10
    doc = _doc([f"{para.strip()}\n\n{para.strip()}"], title="Thông báo")
    chunks = chunk_document(doc, window_chars=800)
    assert len(chunks) == 2 and chunks[0].text == chunks[1].text and chunks[0].header == chunks[1].header
    assert chunks[0].id != chunks[1].id


# --- recognising structure, and what must not be recognised ---------------------------------------


def test_heading_variants():
    text = _j(
        "Phần thứ nhất",
        "QUY ĐỊNH CHUNG",
        "CHƯƠNG 1",
        "TỔ CHỨC ĐÀO TẠO",
        "Mục 2. Đăng ký học tập",
        "Điều 10: Cảnh báo học tập",
        "Nội dung điều mười.",
        "Điều 11 . Buộc thôi học",
        "Nội dung điều mười một.",
        "## Điều 12. Học lại",
        "Nội dung điều mười hai.",
    )
    chunks = chunk_document(_doc([text], title="QC"))
    assert [(c.part, c.chapter, c.section, c.article, c.article_title) for c in chunks] == [
        ("Phần thứ nhất. QUY ĐỊNH CHUNG", "Chương 1. TỔ CHỨC ĐÀO TẠO", "Mục 2. Đăng ký học tập", n, t)
        for n, t in [("10", "Cảnh báo học tập"), ("11", "Buộc thôi học"), ("12", "Học lại")]
    ]
    assert chunks[0].header == (
        "QC › Phần thứ nhất. QUY ĐỊNH CHUNG › Chương 1. TỔ CHỨC ĐÀO TẠO › Mục 2. Đăng ký học tập"
        " › Điều 10. Cảnh báo học tập"
    )


def test_lines_that_look_like_structure_but_are_not():
    text = _j(
        "Chương I",
        "QUY ĐỊNH CHUNG",
        "Điều 1. Chương trình đào tạo",
        "Chương trình đào tạo được xây dựng theo tín chỉ, áp dụng từ năm",
        "2025. Sinh viên học theo chương trình của khóa tuyển sinh.",
        "3. Dòng này không phải khoản vì chưa có khoản 1 và 2.",
        "Mục 3: Sinh viên được đăng ký theo kế hoạch.",
        "b) Dòng này không phải điểm vì chưa có điểm a.",
        "Phụ lục 2 kèm theo Quy chế này quy định mẫu đơn.",
        "Việc chuyển chương trình thực hiện theo",
        "Điều 2. Chuyển chương trình",  # follows "theo": a wrapped cross-reference
        "Điều 2. Thời gian học tập",
        "Thời gian học tập tối đa là 8 năm.",
    )
    chunks = chunk_document(_doc([text], title="QC"))
    assert [(c.article, c.kind) for c in chunks] == [("1", "article"), ("2", "article")]
    assert chunks[0].chapter == "Chương I. QUY ĐỊNH CHUNG" and chunks[0].section is None
    assert "Điều 2. Chuyển chương trình" in chunks[0].text and "Mục 3:" in chunks[0].text
    assert chunks[1].article_title == "Thời gian học tập"


def test_numbering_restart_makes_the_issuing_decision_preamble():
    decision = _j(
        "QUYẾT ĐỊNH",
        "Điều 1. Ban hành kèm theo Quyết định này Quy chế đào tạo.",
        "Điều 2. Quyết định này có hiệu lực kể từ ngày ký.",
    )
    toc = _j("MỤC LỤC", "Điều 1. Phạm vi", "Điều 2. Đối tượng")  # a TOC without dotted leaders
    body = _j("Chương I", "QUY ĐỊNH CHUNG", "Điều 1. Phạm vi", "Nội dung một.", "Điều 2. Đối tượng", "Nội dung hai.")
    chunks = chunk_document(_doc([decision, toc, body], title="QC"))
    assert [(c.kind, c.article, c.page) for c in chunks] == [
        ("paragraph", None, 1), ("article", "1", 3), ("article", "2", 3)
    ]
    assert "Ban hành kèm theo" in chunks[0].text and "MỤC LỤC" in chunks[0].text
    assert chunks[1].chapter == "Chương I. QUY ĐỊNH CHUNG"


def test_untitled_articles_keep_their_text():
    text = _j("Điều 1. Quy chế này có hiệu lực từ ngày ký. Các đơn vị chịu trách nhiệm thi hành.", "Điều 2. Hiệu lực")
    chunks = chunk_document(_doc([text], title="QĐ"))
    assert chunks[0].article == "1" and chunks[0].article_title is None
    assert chunks[0].header == "QĐ › Điều 1"
    assert chunks[0].text == "Quy chế này có hiệu lực từ ngày ký. Các đơn vị chịu trách nhiệm thi hành."
    assert chunks[1].text == "Điều 2. Hiệu lực"  # a heading with no body still yields a chunk


def test_appendix_becomes_paragraphs_with_its_own_header():
    text = _j(
        "Điều 1. Hiệu lực", "Quy chế có hiệu lực từ ngày ký.",
        "PHỤ LỤC", "KHUNG XỬ LÝ KỶ LUẬT", "1 Vô lễ với giảng viên Khiển trách", "Điều 1. Mẫu quyết định kỷ luật",
    )
    chunks = chunk_document(_doc([text], title="QC"))
    assert [(c.kind, c.article, c.header) for c in chunks] == [
        ("article", "1", "QC › Điều 1. Hiệu lực"),
        ("paragraph", None, "QC › Phụ lục. KHUNG XỬ LÝ KỶ LUẬT"),
    ]
    assert chunks[1].text == "1 Vô lễ với giảng viên Khiển trách\nĐiều 1. Mẫu quyết định kỷ luật"


def test_khoan_too_long_without_points_is_cut_at_sentences():
    sentence = "Sinh viên phải hoàn thành nghĩa vụ học phí đúng hạn theo thông báo của Phòng Tài chính."
    text = _j("Điều 9. Học phí", "1. " + " ".join([sentence] * 8), "2. Học phí được công bố đầu năm học.")
    chunks = chunk_document(_doc([text], title="QC"), max_chars=300)
    assert [(c.kind, c.clause) for c in chunks] == [("clause", "1")] * 3 + [("clause", "2")]
    assert all(len(c.text) <= 300 for c in chunks)
    assert all(c.text.endswith(".") for c in chunks)
    assert " ".join(c.text for c in chunks[:3]) == "1. " + " ".join([sentence] * 8)


def test_document_without_structure_becomes_paragraph_windows():
    paragraphs = [
        " ".join(f"Câu số {p}.{k} nói về việc học tập của sinh viên trong trường." for k in range(n))
        for p, n in [(1, 3), (2, 12), (3, 9)]
    ]
    doc = _doc(["\n\n".join(paragraphs[:2]), paragraphs[2]], title="Hướng dẫn")
    chunks = chunk_document(doc, window_chars=300)
    assert {c.kind for c in chunks} == {"paragraph"} and all(c.header == "Hướng dẫn" for c in chunks)
    assert all(len(c.text) <= 300 for c in chunks)
    assert all(c.text.endswith(".") for c in chunks)  # cut at sentence ends, never mid-word
    assert " ".join(c.text for c in chunks).split() == " ".join(paragraphs).split()  # nothing lost, no overlap
    assert chunks[0].text == paragraphs[0]  # the blank line after paragraph 1 is the preferred cut
    # a window's page is where its first sentence is: paragraph 3 is on page 2
    assert [c.page for c in chunks] == [2 if c.text.startswith("Câu số 3.") else 1 for c in chunks]
    assert chunks[-1].page == 2


def test_big_table_outside_articles_is_a_table_chunk():
    table = [f"| {i} | Học phần số {i} | 3 tín chỉ |" for i in range(30)]
    doc = _doc([_j("Danh mục học phần như sau:", *table, "Hết danh mục.")], title="Danh mục")
    chunks = chunk_document(doc, window_chars=300)
    assert [c.kind for c in chunks] == ["paragraph", "table", "paragraph"]
    assert chunks[1].text == _j(*table)


def test_empty_document():
    assert chunk_document(_doc(["", "  "])) == []


# --- real data -----------------------------------------------------------------------------


def _pdf_document(name: str, title: str) -> Document:
    path = DATA / "hust-regulations" / "pdf" / name
    if not path.exists():
        pytest.skip(f"real data not found at {path} (only present next to the team's checkout)")
    pdfium = pytest.importorskip("pypdfium2")
    pdf = pdfium.PdfDocument(str(path))
    pages = [Page(i + 1, pdf[i].get_textpage().get_text_range()) for i in range(len(pdf))]
    return Document(source=name, title=title, pages=clean_pages(pages), sha256="0" * 64, kind="pdf")


_TOC = re.compile(r"(?:\.{4,}|…{2,})\s*\d+\s*$", re.M)


def test_real_training_regulation_quy_che_25():
    chunks = chunk_document(_pdf_document("Quy_che_25.pdf", "Quy chế đào tạo ĐHBK Hà Nội 2025"))
    kinds = Counter(c.kind for c in chunks)
    assert kinds["paragraph"] >= 1 and kinds["article"] >= 40
    numbers = [int(c.article) for c in chunks if c.article]
    assert numbers == sorted(numbers) and set(numbers) == set(range(1, 49))  # the decision's own Điều 1-2 are preamble
    assert not any(_TOC.search(c.header) or _TOC.search(c.text) for c in chunks)
    assert all(len(c.text) <= 2400 for c in chunks if c.kind != "table")
    d19 = [c for c in chunks if c.article == "19"]
    assert len(d19) == 1 and d19[0].kind == "article" and d19[0].page == 18
    assert d19[0].header == (
        "Quy chế đào tạo ĐHBK Hà Nội 2025 › Chương II. ĐÀO TẠO ĐẠI HỌC › Điều 19. Cảnh báo học tập và buộc thôi học"
    )
    assert "đ) Sinh viên đang bị cảnh báo học tập mức 3" in d19[0].text
    split = [c for c in chunks if c.article == "2"]
    assert [c.clause for c in split] == ["1-3", "4-7", "8-9"] and {c.kind for c in split} == {"clause"}
    assert {c.chapter for c in chunks if c.article and int(c.article) >= 47} == {"Chương VI. TỔ CHỨC THỰC HIỆN"}
    assert "QUYẾT ĐỊNH" in chunks[0].text and chunks[0].page == 1


def test_real_student_affairs_regulation():
    chunks = chunk_document(
        _pdf_document("Quy chế CTSV ĐHBK Hà Nội 2025.3.10_final.pdf", "Quy chế công tác sinh viên ĐHBK Hà Nội")
    )
    numbers = [int(c.article) for c in chunks if c.article]
    assert numbers == sorted(numbers) and set(numbers) == set(range(1, 55))
    d17 = next(c for c in chunks if c.article == "17")
    assert d17.article_title == "Tổ chức các hoạt động giao lưu văn hóa và trao đổi học thuật cho sinh viên"
    appendix = [c for c in chunks if "Phụ lục" in c.header]
    assert appendix and all(c.kind == "paragraph" and c.article is None for c in appendix)
    assert appendix[0].header.endswith("Phụ lục. MỘT SỐ NỘI DUNG VI PHẠM VÀ KHUNG XỬ LÝ KỶ LUẬT SINH VIÊN")


def test_large_document_keeps_its_structure():
    """3,000 articles in 3 chapters after a Quyết định that restarts the numbering; wrapped cross-references
    that look like headings; one long article cut at its 60 Khoản with tables of its own. The output
    is what the structure says, article by article (the chunker reads big documents in linear time:
    the numbering checks search sorted numbers instead of rescanning the later articles)."""
    n, long_no, per_chapter = 3000, 1500, 1000
    lines = ["QUYẾT ĐỊNH", "Về việc ban hành Quy chế đào tạo",
             "Điều 1. Ban hành kèm theo Quyết định này Quy chế đào tạo.", "Điều 2. Quyết định có hiệu lực từ ngày ký.",
             "Điều 3. Các đơn vị chịu trách nhiệm thi hành.", "QUY CHẾ ĐÀO TẠO"]
    for i in range(1, n + 1):
        if i % per_chapter == 1:
            lines += [f"Chương {i // per_chapter + 1}", "QUY ĐỊNH VỀ ĐÀO TẠO"]
        lines += [f"Điều {i}. Quy định số {i}", f"Sinh viên thực hiện theo quy định tại",
                  f"Điều {i + 7}. của Quy chế này và các văn bản khác."]  # a wrapped cross-reference, not a heading
        if i == long_no:
            for k in range(1, 61):
                lines.append(f"{k}. Khoản {k} của điều dài: sinh viên phải hoàn thành nghĩa vụ học tập đúng hạn.")
                if k % 20 == 0:
                    lines += ["", "| Mức | Điểm |", f"| Khoản {k} | 3,2 |", ""]
    doc = Document(source="large.txt", title=TITLE, kind="txt", pages=[Page(number=1, text="\n".join(lines))],
                   sha256="0" * 64)
    chunks = chunk_document(doc, max_chars=1500, title=TITLE)

    # the Quyết định's articles are preamble text; only the Quy chế's articles are cited
    head = [c for c in chunks if c.kind == "paragraph"]
    assert head and all(c.article is None for c in head) and "Ban hành kèm theo" in head[0].text
    articles = [c for c in chunks if c.article is not None]
    assert [c.article for c in articles if c.kind == "article"] == [str(i) for i in range(1, n + 1) if i != long_no]
    for c in articles:
        i = int(c.article)
        chapter = f"Chương {(i - 1) // per_chapter + 1}. QUY ĐỊNH VỀ ĐÀO TẠO"
        assert c.chapter == chapter
        if c.kind == "article":
            assert c.header == f"{TITLE} › {chapter} › Điều {i}. Quy định số {i}"
            assert c.text.endswith(f"Điều {i + 7}. của Quy chế này và các văn bản khác.")
    # the long article: its Khoản packed in order, each exactly once, its tables on their own with their Khoản
    long = [c for c in articles if c.article == str(long_no)]
    clauses = [c for c in long if c.kind == "clause"]
    covered = [k for c in clauses for k in range(int(c.clause.split("-")[0]), int(c.clause.split("-")[-1]) + 1)]
    assert covered == list(range(1, 61)) and len(clauses) > 1
    assert all(len(c.text) <= 1500 for c in clauses)
    assert [(c.kind, c.clause) for c in long if c.kind == "table"] == [("table", "20"), ("table", "40"), ("table", "60")]
    assert len({c.id for c in chunks}) == len(chunks)
