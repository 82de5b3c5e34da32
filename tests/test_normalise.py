"""Normaliser, page cleaning and tokenisation: hand-worked Vietnamese cases, plus real data when present."""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from rag.normalise import NORMALISER_VERSION, clean_pages, normalise_text, segment, syllables
from rag.types import Page

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# --- normalise_text ---------------------------------------------------------------


def test_version_is_a_string():
    assert isinstance(NORMALISER_VERSION, str) and NORMALISER_VERSION


def test_decomposed_text_is_composed():
    decomposed = unicodedata.normalize("NFD", "Điều 10. Cảnh báo học tập")
    assert decomposed != "Điều 10. Cảnh báo học tập"
    assert normalise_text(decomposed) == "Điều 10. Cảnh báo học tập"


def test_cp1258_style_base_letter_plus_tone_mark():
    # cp1258 decodes "ế" as "ê" + U+0301 and "ọ" as "o" + U+0323
    assert normalise_text("Quy chê\u0301 ho\u0323c tập") == "Quy chế học tập"


# every tone on each of the three syllable-final diphthongs, new style → traditional style
TONE_PAIRS = [
    # oa
    ("hoà", "hòa"), ("hoá", "hóa"), ("hoả", "hỏa"), ("hoã", "hõa"), ("hoạ", "họa"),
    # oe
    ("loè", "lòe"), ("khoé", "khóe"), ("khoẻ", "khỏe"), ("choẽ", "chõe"), ("xoẹ", "xọe"),
    # uy
    ("tuỳ", "tùy"), ("quỹ", "quỹ"), ("thuỷ", "thủy"), ("luỹ", "lũy"), ("nguỵ", "ngụy"), ("huý", "húy"),
    # upper case and title case
    ("HOÀ", "HÒA"), ("Hoà", "Hòa"), ("THUỶ", "THỦY"), ("Uỷ ban", "Ủy ban"), ("KHOẺ", "KHỎE"),
    # the diphthong alone, without an onset
    ("oà", "òa"), ("uỷ viên", "ủy viên"),
]


@pytest.mark.parametrize("new, old", TONE_PAIRS)
def test_tone_placement_maps_to_the_traditional_style(new, old):
    assert normalise_text(new) == old
    assert normalise_text(old) == old  # the chosen style is left alone


@pytest.mark.parametrize(
    "word",
    [
        "hoàn", "hoàng", "thuyền", "quyển", "khuya", "khuỷu", "ngoài", "quý", "Quý", "quỳ", "QUÝ",
        "quà", "gì", "gìn", "giữ gìn", "giữa", "toán", "oản", "huỳnh", "Huỳnh",
    ],
)
def test_words_that_must_stay_untouched(word):
    assert normalise_text(word) == word


@pytest.mark.parametrize(
    "wrong, right",
    [("qùy", "quỳ"), ("Qùy", "Quỳ"), ("QÙY", "QUỲ"), ("qủa", "quả"), ("qúan", "quán"), ("gìa", "già")],
)
def test_tone_on_the_qu_gi_onset_moves_to_the_nucleus(wrong, right):
    assert normalise_text(wrong) == right


def test_sentence_with_mixed_styles():
    assert normalise_text("Hội đồng hoà giải; sức khoẻ; uỷ quyền; khoá học; hoàn thành") == (
        "Hội đồng hòa giải; sức khỏe; ủy quyền; khóa học; hoàn thành"
    )


def test_d_lookalikes():
    assert normalise_text("\u00d0iều 5") == "Điều 5"  # Icelandic eth
    assert normalise_text("\u0189ại học") == "Đại học"  # African D
    assert normalise_text("\u00f0ào tạo") == "đào tạo"


def test_soft_hyphen_and_zero_width_characters_are_removed():
    assert normalise_text("ng\u00adười") == "người"
    assert normalise_text("ng\u00ad\nười học") == "người học"  # a soft hyphen at a line end joins the word
    assert normalise_text("sinh\u200b viên\u200c\u200d\ufeff") == "sinh viên"


def test_spaces_are_normalised_and_newlines_kept():
    raw = "Điều\u00a010.\t\tCảnh  báo \u202f học tập   \r\n1. Khoản\u2003một  \r\n\r\n\r\n\r\na) Điểm a"
    assert normalise_text(raw) == "Điều 10. Cảnh báo học tập\n1. Khoản một\n\na) Điểm a"


def test_quotes_and_dashes_are_left_alone():
    assert normalise_text("“Sinh viên” – ‘học’ - \"x\"") == "“Sinh viên” – ‘học’ - \"x\""


def test_pdfium_hyphen_marker():
    assert normalise_text("quốc phòng\ufffean ninh") == "quốc phòng-an ninh"


def test_empty():
    assert normalise_text("") == ""
    assert normalise_text(" \n\t ") == ""


_ALPHABET = (
    list("aăâeêioôơuưyqgdhkntcp ") + list("oauy") * 4
    + ["\u0300", "\u0301", "\u0309", "\u0303", "\u0323", "\u0302", "\u031b", "\u0306"]
    + ["\u00ad", "\u00a0", "\u200b", "\n", "\r", "\t", "Ð", "ð", "Q", "O", "U", "Y", "-", ".", "1"]
    + list("òóỏõọàáảãạùúủũụỳýỷỹỵèéẻẽẹìíỉĩị")
)


def test_idempotent_on_random_vietnamese_like_strings():
    rng = random.Random(1258)
    for _ in range(5000):
        s = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 24)))
        once = normalise_text(s)
        assert normalise_text(once) == once, repr(s)
        assert unicodedata.is_normalized("NFC", once)


# --- clean_pages --------------------------------------------------------------------


def _pages(*texts: str) -> list[Page]:
    return [Page(i + 1, t) for i, t in enumerate(texts)]


def test_repeated_header_and_footer_with_varying_page_numbers_are_removed():
    pages = _pages(
        "BỘ GIÁO DỤC VÀ ĐÀO TẠO\nQuy chế đào tạo năm 2025\nĐiều 1. Phạm vi\nNội dung một.\n"
        "Quy chế đào tạo – trang 1/4",
        "BỘ GIÁO DỤC VÀ ĐÀO TẠO\nQuy chế đào tạo năm 2025\nĐiều 2. Đối tượng\nNội dung hai.\n"
        "Quy chế đào tạo – trang 2/4",
        "Quy chế đào tạo năm 2025\nĐiều 3. Thời gian\nNội dung ba.\nQuy chế đào tạo – trang 3/4",
        "Quy chế đào tạo năm 2025\nĐiều 4. Hiệu lực\nNội dung bốn.\nQuy chế đào tạo – trang 4/4",
    )
    out = clean_pages(pages)
    assert [p.number for p in out] == [1, 2, 3, 4]
    # the running header and the footer (digits differ page to page) are gone; the letterhead that
    # appears on only two pages stays
    assert out[0].text == "BỘ GIÁO DỤC VÀ ĐÀO TẠO\nĐiều 1. Phạm vi\nNội dung một."
    assert out[1].text == "BỘ GIÁO DỤC VÀ ĐÀO TẠO\nĐiều 2. Đối tượng\nNội dung hai."
    assert out[3].text == "Điều 4. Hiệu lực\nNội dung bốn."


def test_headers_need_three_pages():
    pages = _pages("Tiêu đề chung\nNội dung một.", "Tiêu đề chung\nNội dung hai.")
    assert [p.text for p in clean_pages(pages)] == ["Tiêu đề chung\nNội dung một.", "Tiêu đề chung\nNội dung hai."]


@pytest.mark.parametrize("number_line", ["12", "- 12 -", "– 12 –", "Trang 12", "trang 12/45", "12/45", "Page 3"])
def test_bare_page_number_lines_are_removed(number_line):
    out = clean_pages(_pages(f"{number_line}\nĐiều 5. Học phí\nNội dung.", f"Nội dung tiếp.\n{number_line}"))
    assert out[0].text == "Điều 5. Học phí\nNội dung."
    assert out[1].text == "Nội dung tiếp."


def test_a_lone_number_inside_a_page_is_kept():
    # a table row number in the middle of a page, as in the HUST discipline table
    page = "23\nviên\n9\nSử dụng phần mềm khi không được phép\nLần 1 Lần 2"
    others = [f"{n}\nNội dung trang {n}." for n in range(1, 5)]
    out = clean_pages(_pages(*others, page))
    assert out[-1].text == "viên\n9\nSử dụng phần mềm khi không được phép\nLần 1 Lần 2"


def test_table_of_contents_lines_are_removed():
    page = "\n".join(
        [
            "MỤC LỤC",
            "CHƯƠNG I NHỮNG QUY ĐỊNH CHUNG...............................1",
            "Điều 1. Phạm vi điều chỉnh ........................ 1",
            "Điều 13. Đăng ký học tập …… 10",
            "Chương II …… 5",
            "Mục 1. Học vụ ____________ 7",
            "Điều 17. Tổ chức các hoạt động giao lưu văn hóa và trao đổi học thuật cho",
            "sinh viên ............................................... 9",
            "Điều 20. Xử lý vi phạm . . . . . . . . 15",
        ]
    )
    out = clean_pages(_pages(page, "Điều 1. Phạm vi điều chỉnh\n1. Quy chế này áp dụng cho sinh viên."))
    assert out[0].text == ""  # the page stays, empty: page numbers never shift
    assert out[1].text == "Điều 1. Phạm vi điều chỉnh\n1. Quy chế này áp dụng cho sinh viên."


def test_text_with_an_ellipsis_is_not_a_toc_line():
    text = "thí nghiệm, bài tập lớn, tiểu luận, chuyên cần…); hình thức 2\nđi xe tốc độ cao..."
    assert clean_pages(_pages(text))[0].text == text


def test_line_end_hyphen_joins_and_keeps_the_hyphen():
    text = "chương trình tích hợp cử nhân-\nkỹ sư và Covid-\n19 trong năm học 2025-\n2026.\nĐộc lập -\nTự do"
    out = clean_pages(_pages(text))[0].text
    assert out == "chương trình tích hợp cử nhân-kỹ sư và Covid-19 trong năm học 2025-2026.\nĐộc lập -\nTự do"


def test_line_end_hyphen_never_swallows_a_clause_or_point_start():
    text = "học phần A-\n2. Sinh viên\nhọc phần B-\na) Điểm a"
    assert clean_pages(_pages(text))[0].text == text


def test_clean_pages_normalises_text_and_keeps_ocr_flag():
    pages = [Page(1, "Hoà\u00a0giải\r\n", ocr=True)]
    out = clean_pages(pages)
    assert out[0].text == "Hòa giải" and out[0].ocr is True
    assert pages[0].text == "Hoà\u00a0giải\r\n"  # input untouched


# --- segment / syllables ---------------------------------------------------------------


def test_segment_joins_words_lowercases_and_drops_punctuation():
    tokens = segment("Sinh viên được đăng ký tối đa 24 tín chỉ; điểm trung bình ≥ 2,5.")
    assert "sinh_viên" in tokens and "đăng_ký" in tokens
    assert "24" in tokens and "2,5" in tokens
    assert all(t == t.lower() for t in tokens)
    assert not any(re.fullmatch(r"[\W_]+", t) for t in tokens)


def test_segment_normalises_queries_like_documents():
    assert segment("Hoà giải khoẻ") == segment("Hòa giải khỏe")
    assert segment("") == []


def test_segment_long_text_in_pieces():
    tokens = segment("Sinh viên đăng ký học phần.\n" * 1500)  # 42,000 chars
    assert Counter(tokens) == {"sinh_viên": 1500, "đăng_ký": 1500, "học_phần": 1500}


def test_segment_leaves_no_model_copy_in_the_temporary_folder(tmp_path):
    """pyvi unpickles its CRF into a model*.crfsuite temporary file that a process ending without the interpreter's
    shutdown (killed, os._exit) would leave behind, one per process; segment() deletes it once the model is open."""
    import os
    import subprocess
    import sys

    code = ("import os; from rag.normalise import segment\n"
            "print(segment('Sinh viên đăng ký ký túc xá'), segment('học bổng khuyến khích'), sorted(os.listdir('.')))\n"
            "os._exit(0)")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"),
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    (tmp_path / "tmp").mkdir()
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "tmp", env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    # the model still segments after its file is gone, and nothing is left where it was written
    assert out.stdout.strip() == "['sinh_viên', 'đăng_ký', 'ký_túc_xá'] ['học_bổng', 'khuyến_khích'] []"
    assert os.listdir(tmp_path / "tmp") == []


def test_syllables():
    assert syllables("Điều 10. Cảnh báo học tập (CPA < 1,2)") == [
        "điều", "10", "cảnh", "báo", "học", "tập", "cpa", "1", "2"
    ]
    assert syllables("hoà") == ["hòa"]


# --- real data ------------------------------------------------------------------------


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (only present next to the team's checkout)")
    return path


_NEW_STYLE = re.compile(r"(?<![aăâeêioôơuưyq])(?:o[àáảãạèéẻẽẹ]|u[ỳýỷỹỵ])(?![^\W\d_])", re.I)


def test_alqac_laws_normalise_to_one_tone_style_and_are_idempotent():
    law = json.loads(_need(DATA / "alqac2023" / "law.json").read_text(encoding="utf-8"))
    texts = [a["text"] for l in law for a in l["articles"]]
    before = sum(len(_NEW_STYLE.findall(unicodedata.normalize("NFC", t))) for t in texts)
    normalised = [normalise_text(t) for t in texts]
    assert before > 500  # the corpus really mixes styles (590 new-style syllables counted when written)
    assert sum(len(_NEW_STYLE.findall(t)) for t in normalised) == 0
    assert all(normalise_text(t) == t for t in normalised)
    assert not any(c in t for t in normalised for c in "\u00ad\u00d0")


def test_clean_pages_on_the_real_training_regulation():
    pdfium = pytest.importorskip("pypdfium2")
    pdf = pdfium.PdfDocument(str(_need(DATA / "hust-regulations" / "pdf" / "Quy_che_25.pdf")))
    pages = [Page(i + 1, pdf[i].get_textpage().get_text_range()) for i in range(len(pdf))]
    out = clean_pages(pages)
    assert [p.number for p in out] == list(range(1, 35))
    assert out[2].text == "" and out[3].text == ""  # the two table-of-contents pages
    assert out[5].text.startswith("ưu hóa thời gian đào tạo")  # page number "2" removed from the top
    assert out[4].text.startswith("BỘ GIÁO DỤC VÀ ĐÀO TẠO")  # letterhead on 3 of 34 pages is kept
    text = "\n".join(p.text for p in out)
    assert "\ufffe" not in text and "Giáo dục quốc phòng-an ninh đã được cấp chứng chỉ" in text  # pdfium's U+FFFE


def test_clean_pages_keeps_table_row_numbers_in_the_student_affairs_regulation():
    pdfium = pytest.importorskip("pypdfium2")
    path = _need(DATA / "hust-regulations" / "pdf" / "Quy chế CTSV ĐHBK Hà Nội 2025.3.10_final.pdf")
    pdf = pdfium.PdfDocument(str(path))
    pages = [Page(i + 1, pdf[i].get_textpage().get_text_range()) for i in range(len(pdf))]
    out = clean_pages(pages)
    for p in out[1:]:  # pages 2-25 start with their number; it is gone
        assert not re.match(rf"{p.number}\n", p.text)
    assert out[22].text.startswith("viên\n9\nSử dụng phần mềm")  # row 9 of the discipline table stays


def test_control_characters_of_a_document_are_removed():
    """A NUL or an escape sequence in a document (JSON, PDF text) would reach a terminal, or come back in a
    chat's history and be refused there; tab and line breaks stay text."""
    got = normalise_text("Phí\x00 gửi xe\x1b[2J là 3\x7f nghìn\x9b đồng\tmỗi lượt\nĐiều 2")
    assert got == "Phí gửi xe[2J là 3 nghìn đồng mỗi lượt\nĐiều 2"
    assert not any(unicodedata.category(c) == "Cc" and c != "\n" for c in got)
