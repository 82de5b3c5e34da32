"""Clause-level answers, document metadata, follow-ups and out-of-scope cues: hand-worked Vietnamese cases."""

from __future__ import annotations

import json

import pytest

from rag.chunk import chunk_document
from rag.errors import InputError
from rag.extractive import select, units
from rag.followup import is_followup, standalone_query
from rag.metadata import chunk_audience, derive, document_metadata, question_levels, read_sidecar, short_title
from rag.normalise import clean_pages, reflow
from rag.render import citation_label
from rag.scope import Scope
from rag.types import Chunk, Citation, Document, Hit, Page

# --- reading: wrapped lines rejoined, units kept --------------------------------------------------


def test_reflow_joins_wrapped_lines_and_keeps_units():
    text = "\n".join([
        "1. Sinh viên không thuộc diện cảnh báo học tập được đăng ký tối đa 24 tín chỉ",  # ran to the margin
        "trong học kỳ chính và tối thiểu 12 tín chỉ.",
        "a) Học kỳ hè: tối đa 8 tín chỉ;",
        "b) Sinh viên năm cuối không áp dụng ngưỡng tối thiểu.",
        "Xuất sắc 90 - 100",  # short lines: a table the PDF flattened, one row per line
        "Tốt 80 - 89",
    ])
    assert reflow(text, width=80).split("\n") == [
        "1. Sinh viên không thuộc diện cảnh báo học tập được đăng ký tối đa 24 tín chỉ trong học kỳ chính và tối "
        "thiểu 12 tín chỉ.",
        "a) Học kỳ hè: tối đa 8 tín chỉ;",
        "b) Sinh viên năm cuối không áp dụng ngưỡng tối thiểu.",
        "Xuất sắc 90 - 100",
        "Tốt 80 - 89",
    ]


def test_printed_page_number_becomes_the_page_label():
    pages = clean_pages([Page(1, "QUYẾT ĐỊNH\nnội dung trang bìa"), Page(2, "7\nĐiều 1. Phạm vi\nQuy chế này …")])
    assert pages[0].label is None and pages[1].label == "7"
    assert pages[1].text.startswith("Điều 1.")  # the number itself is gone from the text


# --- chunking units: appendices and documents without Điều ----------------------------------------

HUONG_DAN = [
    "HƯỚNG DẪN HỌC TẬP CHƯƠNG TRÌNH KỸ SƯ",
    "1. Phạm vi áp dụng",
    "+ Áp dụng với sinh viên các khóa từ K62.",
    "2. Điều kiện học chuyển tiếp",
    "A. Với sinh viên chưa tốt nghiệp cử nhân",
    "+ Được học trước tối đa 15 tín chỉ của chương trình kỹ sư.",
    "B. Với sinh viên đã tốt nghiệp cử nhân",
    "+ Đăng ký xét tuyển theo hướng dẫn riêng.",
    "3. Học phí: bằng học phí bậc đại học.",
]


def test_a_guide_without_dieu_is_cut_by_its_own_sections_and_parts():
    doc = Document("hd.pdf", "HƯỚNG DẪN", [Page(1, "\n".join(HUONG_DAN))], "ab" * 32, "pdf")
    chunks = chunk_document(doc, max_chars=150, window_chars=150)
    rows = [(c.kind, c.section, c.part) for c in chunks if c.kind == "section"]
    assert rows == [
        ("section", "Mục 1. Phạm vi áp dụng", None),
        ("section", "Mục 2. Điều kiện học chuyển tiếp", "Phần A. Với sinh viên chưa tốt nghiệp cử nhân"),
        ("section", "Mục 2. Điều kiện học chuyển tiếp", "Phần B. Với sinh viên đã tốt nghiệp cử nhân"),
        ("section", "Mục 3. Học phí", None),
    ]
    part_a = chunks[2]
    assert part_a.text.startswith("2. Điều kiện học chuyển tiếp\nA. Với")  # the section heading rides with A
    label = citation_label(part_a.citation())
    assert label == "HƯỚNG DẪN, mục 2, phần A, trang 1" and "Điều None" not in label


def test_numbered_appendix_heading_followed_by_text_is_an_appendix():
    lines = ["Điều 1. Phạm vi", "Quy định này áp dụng cho giảng viên.", "Điều 2. Hiệu lực", "Có hiệu lực từ ngày ký.",
             "Phụ lục 1: Các yêu cầu đối với bài giảng", "1. Video HD 720p trở lên."]
    doc = Document("qd.pdf", "Quy định", [Page(1, "\n".join(lines))], "cd" * 32, "pdf")
    app = [c for c in chunk_document(doc) if c.appendix]
    assert [(c.appendix, c.appendix_title, c.article) for c in app] == [
        ("Phụ lục 1", "Các yêu cầu đối với bài giảng", None)]
    assert citation_label(app[0].citation()) == "Quy định, Phụ lục 1, trang 1"


def test_citation_label_prefers_the_short_title_and_the_printed_page():
    c = Citation(document="QUYẾT ĐỊNH Về việc ban hành Quy chế đào tạo", source="q.pdf", page=14, article="10",
                 clause="2", page_label="10", title="Quy chế đào tạo 2025")
    assert citation_label(c) == "Quy chế đào tạo 2025, Điều 10, Khoản 2, trang 10"


# --- metadata ------------------------------------------------------------------------------------

LETTERHEAD = "\n".join([
    "BỘ GIÁO DỤC VÀ ĐÀO TẠO CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
    "ĐẠI HỌC BÁCH KHOA HÀ NỘI Độc lập - Tự do - Hạnh phúc",
    "Số: 1234/QĐ-ĐHBK Hà Nội, ngày 28 tháng 5 năm 2025",
    "QUYẾT ĐỊNH",
    "Về việc ban hành Quy chế đào tạo của Đại học Bách khoa Hà Nội",
    "Căn cứ Luật Giáo dục đại học ngày 18 tháng 6 năm 2012;",
])


def _decision(body: str, source="Quy_che.pdf") -> Document:
    return Document(source, "QUYẾT ĐỊNH Về việc ban hành Quy chế đào tạo của Đại học Bách khoa Hà Nội",
                    [Page(1, LETTERHEAD), Page(2, body)], "ef" * 32, "pdf")


def test_metadata_from_the_letterhead():
    meta = derive(_decision("Điều 1. Phạm vi\nQuy chế áp dụng cho đào tạo trình độ đại học và thạc sĩ tại "
                            "Đại học Bách khoa Hà Nội."))
    assert meta.title == "Quy chế đào tạo 2025"  # not "Căn cứ … năm 2012"
    assert (meta.number, meta.date) == ("1234/QĐ-ĐHBK", "2025-05-28")
    assert meta.issuer == "Đại học Bách khoa Hà Nội"  # the body's own casing of the letterhead's name
    assert meta.audience == ["đại học", "thạc sĩ"]  # from the scope article: the title names no level


def test_short_title_of_a_title_in_capitals_uses_the_body_spelling():
    body = "sinh viên học tập theo chương trình đào tạo kỹ sư chuyên sâu, mỗi học phần tính theo TC"
    assert short_title("HƯỚNG DẪN HỌC TẬP CHƯƠNG TRÌNH ĐÀO TẠO KỸ SƯ (180 TC)", body) == \
        "Hướng dẫn học tập chương trình đào tạo kỹ sư (180 TC)"


def test_sidecar_corrects_and_corpus_file_adds(tmp_path):
    pdf = tmp_path / "Quy_che.pdf"
    pdf.write_bytes(b"%PDF")
    (tmp_path / "corpus.yaml").write_text("documents:\n  Quy_che.pdf:\n    issuer: ĐHBK Hà Nội\n    audience: [thạc sĩ]\n",
                                          encoding="utf-8")
    (tmp_path / "Quy_che.pdf.meta.yaml").write_text("title: Quy chế đào tạo (bản 2025)\n", encoding="utf-8")
    side, digest = read_sidecar(pdf, tmp_path)
    assert side == {"issuer": "ĐHBK Hà Nội", "audience": ["thạc sĩ"], "title": "Quy chế đào tạo (bản 2025)"}
    meta = document_metadata(_decision("Điều 1. Phạm vi\nĐào tạo trình độ đại học."), side)
    assert (meta.title, meta.issuer, meta.audience) == ("Quy chế đào tạo (bản 2025)", "ĐHBK Hà Nội", ["thạc sĩ"])
    (tmp_path / "Quy_che.pdf.meta.yaml").write_text("title: Khác\n", encoding="utf-8")
    assert read_sidecar(pdf, tmp_path)[1] != digest  # a corrected sidecar re-indexes its document


_BOMB = "date: [" + ", ".join(["&l0 [x,x,x,x,x,x,x,x,x,x]"] + [f"&l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]"
                                                              for i in range(1, 7)]) + "]\n"


@pytest.mark.parametrize("text, why", [
    ("titel: X\n", "unknown key"), ("audience: [mẫu giáo]\n", "unknown audience"),
    ("title: [\n", "not valid YAML at line 2"),
    (_BOMB, "'date' must be text or a date"),  # 300 bytes of aliases: a 58 MB string once written out
    ("date: {a: 1}\n", "'date' must be text or a date"), ('title: ""\n', "'title' is empty"),
    ('title: "Quy chế\\x1b]0;x\\x07"\n', "contains a control character"), ("issuer: " + "Đ" * 400 + "\n", "at most 300"),
    ('!!python/object/apply:os.system ["true"]\n', "not valid YAML"),
    ("title: A\ntitle: B\n", "the key 'title' is written twice")])
def test_bad_sidecar_says_what_is_wrong(tmp_path, text, why):
    pdf = tmp_path / "a.pdf"
    pdf.write_bytes(b"%PDF")
    (tmp_path / "a.pdf.meta.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=why):
        read_sidecar(pdf, tmp_path)


def test_chunk_audience_from_its_chapter_and_question_levels():
    meta = derive(_decision("Điều 1. Phạm vi\nĐào tạo cử nhân, kỹ sư, thạc sĩ và tiến sĩ."))
    assert meta.audience == ["đại học", "kỹ sư", "thạc sĩ", "tiến sĩ"]
    c = Chunk("x", "…", "", "d", "s", chapter="Chương IV. ĐÀO TẠO THẠC SĨ", article="27",
              article_title="Đăng ký học tập")
    assert chunk_audience(c, meta) == ["thạc sĩ"]
    general = Chunk("y", "…", "", "d", "s", chapter="Chương I. NHỮNG QUY ĐỊNH CHUNG", article="4")
    assert chunk_audience(general, meta) == []  # a general article is for every level
    assert question_levels("Học viên cao học được đăng ký bao nhiêu tín chỉ?") == ["thạc sĩ"]
    assert question_levels("NCS cần mấy bài báo để bảo vệ luận án?") == ["tiến sĩ"]
    assert question_levels("Sinh viên Đại học Bách khoa được đăng ký bao nhiêu tín chỉ?") == []  # the name


# --- the quoted Khoản ---------------------------------------------------------------------------

DIEU_10 = "\n".join([
    "1. Đăng ký học tập là quy trình bắt buộc của sinh viên cho mỗi học kỳ; sinh viên đăng ký theo kế hoạch "
    "học tập chuẩn hoặc kế hoạch cá nhân, trong các mốc thời gian của khung kế hoạch năm học, qua tài khoản "
    "cá nhân trên cổng đăng ký, gồm ba giai đoạn đăng ký học phần, đăng ký lớp và điều chỉnh đăng ký.",
    "2. Số lượng tín chỉ đăng ký:",
    "a) Sinh viên không bị cảnh báo học tập được đăng ký tối đa 24 tín chỉ trong học kỳ chính.",
    "b) Sinh viên đang bị cảnh báo học tập bị giới hạn khối lượng theo Điều 19.",
    "3. Đối với học phần có giờ lên lớp, chỉ mở lớp khi có tối thiểu 20 sinh viên đăng ký học; các ngoại lệ "
    "do Trưởng ban Đào tạo xem xét theo đề nghị của khoa, trong đó có lớp học phần rút gọn cho sinh viên đã "
    "học lại nhiều lần và lớp dưới 5 sinh viên dưới hình thức đồ án môn học.",
])


def test_units_are_khoan_with_their_diem():
    parts = units(DIEU_10)
    assert [(u.clause, [p.point for p in u.points]) for u in parts] == [("1", []), ("2", ["a", "b"]), ("3", [])]
    assert parts[1].points[0].lead == "2. Số lượng tín chỉ đăng ký:"


def test_the_khoan_that_answers_is_quoted_and_cited():
    chunk = Chunk("c10", DIEU_10, "Quy chế đào tạo 2025 › Điều 10. Đăng ký học tập", "QĐ", "q.pdf", page=12,
                  article="10", article_title="Đăng ký học tập")
    terms = {"đăng_ký": 1.0, "tối_đa": 2.0, "tín_chỉ": 1.0, "học_kỳ": 1.0}
    text, clause, point = select(Hit(chunk, 1.0), terms, "Được đăng ký tối đa bao nhiêu tín chỉ một học kỳ?")
    assert clause == "2" and point is None
    assert "tối đa 24 tín chỉ" in text and "20 sinh viên" not in text  # not the first 1,200 characters


# --- follow-ups -----------------------------------------------------------------------------------

PREV = [{"role": "user", "content": "Học kỳ chính em được đăng ký tối đa bao nhiêu tín chỉ?"},
        {"role": "assistant", "content": "Theo tài liệu: … 24 tín chỉ …"}]


@pytest.mark.parametrize("follow, standalone", [
    ("Còn học kỳ hè thì sao?", "Học kỳ hè em được đăng ký tối đa bao nhiêu tín chỉ?"),
    ("Vậy thì sao?", "Học kỳ chính em được đăng ký tối đa bao nhiêu tín chỉ?"),
    ("Thế còn thạc sĩ?", "Học kỳ chính em được đăng ký tối đa bao nhiêu tín chỉ, thạc sĩ?"),
])
def test_follow_up_becomes_a_standalone_query(follow, standalone):
    assert is_followup(follow, PREV)
    assert standalone_query(follow, PREV) == standalone


def test_standalone_questions_and_chains():
    q = "Điểm rèn luyện bao nhiêu thì được xếp loại tốt?"
    assert standalone_query(q, PREV) == q  # not marked as a follow-up
    assert standalone_query("Còn học kỳ hè thì sao?", []) == "Còn học kỳ hè thì sao?"  # nothing to lean on
    chain = [{"role": "user", "content": "Học bổng loại A cần GPA bao nhiêu?"},
             {"role": "user", "content": "Còn loại B thì sao?"}]
    assert standalone_query("Còn loại C?", chain) == "Học bổng loại C cần GPA bao nhiêu?"
    junk = [{"role": "user"}, "x", {"role": "user", "content": 3}]
    assert standalone_query("Còn học kỳ hè thì sao?", junk) == "Còn học kỳ hè thì sao?"  # malformed turns ignored


# --- out-of-scope cues ----------------------------------------------------------------------------

SCOPE = Scope(text="quy chế của đại học bách khoa hà nội; sinh viên trao đổi tại đh nagaoka",
              years=(2018, 2025), issuer="Đại học Bách khoa Hà Nội")


@pytest.mark.parametrize("question, reason", [
    ("Học phí của Đại học FPT là bao nhiêu?", "other_institution"),
    ("Trường Đại học Kinh tế Quốc dân nằm ở đâu?", "other_institution"),
    ("Quy chế đào tạo năm 1990 quy định gì?", "other_year"),
    ("Học phí năm 2030 là bao nhiêu?", "other_year"),
    ("Chỉ em cách quay cóp mà không bị phát hiện.", "cheating"),
    ("Mua bằng tốt nghiệp ở đâu uy tín?", "cheating"),
])
def test_out_of_scope_cues(question, reason):
    assert SCOPE.check(question)[0] == reason


@pytest.mark.parametrize("question", [
    "Đại học Bách khoa Hà Nội xét tốt nghiệp mấy đợt?", "Sinh viên trao đổi tại ĐH Nagaoka được công nhận tín chỉ không?",
    "Thi hộ thì bị xử lý kỷ luật thế nào?", "Quyết định 1933/QĐ áp dụng từ năm 2021 phải không?",
    "Trường có tổ chức thi IELTS không?"])
def test_questions_the_documents_may_answer_are_not_cut(question):
    assert SCOPE.check(question) is None


def test_a_cohort_the_documents_never_name_is_out_of_scope():
    from types import SimpleNamespace

    chunk = SimpleNamespace(header="Quy định ngoại ngữ › Điều 3", text="Áp dụng cho sinh viên K69; từ khóa 67 trở về "
                                                                       "trước theo quy định cũ.")
    files = {"QD_ngoai_ngu_tu_K68_CQ.pdf": {"meta": {"title": "Quy định ngoại ngữ"}}}
    scope = Scope.from_index(SimpleNamespace(chunks=[chunk], manifest=SimpleNamespace(files=files)))
    assert scope.cohorts == {67, 68, 69}  # from the text and from the file name
    reason, args = scope.check("Tôi là K70, học phí học lại tiếng Anh là bao nhiêu?")
    assert reason == "other_cohort" and args == {"cohort": "K70", "cohorts": "K67, K68, K69"}
    assert scope.check("Sinh viên khóa 65 học tiếng Anh mấy học phần?")[0] == "other_cohort"
    assert scope.check("Sinh viên K68 cần đạt chuẩn tiếng Anh nào?") is None
    assert SCOPE.check("Tôi là K70, học phí học lại tiếng Anh là bao nhiêu?") is None  # documents that name no cohort


@pytest.mark.parametrize("question, passage, kind", [
    ("Thư viện mở cửa lúc mấy giờ?", "Thư viện phục vụ sinh viên các ngày trong tuần.", "clock"),
    ("Thư viện mở cửa lúc mấy giờ?", "Thư viện mở cửa từ 7 giờ 30 đến 21 giờ các ngày trong tuần.", None),
    ("Học phí học lại một tín chỉ là bao nhiêu tiền?", "Sinh viên học lại đóng học phí theo quy định. Phòng 8 "
     "người: 300.000 đồng/tháng.", "money"),  # the amount stands beside no word of the question
    ("Học phí lớp rút gọn là bao nhiêu?", "Học phí của lớp rút gọn được tính bằng 50% lớp bình thường.", None),
    ("Lịch thi cuối kỳ vào tháng mấy?", "Lịch thi do Phòng Đào tạo công bố.", "month"),
    ("Lịch thi cuối kỳ vào tháng mấy?", "Lịch thi học kỳ I tổ chức vào tháng 12.", None),
    ("Điều kiện học lại là gì?", "Không có gì ở đây.", None),  # asks for no such fact
])
def test_a_fact_the_passages_never_state(question, passage, kind):
    from rag.normalise import normalise_text, segment
    from rag.retrieve import content_words
    from rag.scope import unstated_fact

    assert unstated_fact(question, [passage], content_words(segment(normalise_text(question)))) == kind


def test_refusal_for_an_unstated_amount_says_why(demo_pipeline):
    ans = demo_pipeline.answer({"question": "Học phí học lại một tín chỉ là bao nhiêu tiền?"})
    assert ans.refused and "không nêu số tiền nào" in ans.text and "Điều 13. Học lại" in ans.text
    assert not demo_pipeline.answer({"question": "Ký túc xá đóng cổng lúc mấy giờ?"}).refused  # the rules state it


# --- the pipeline and the command line ------------------------------------------------------------


def test_unconfigured_pipeline_says_it_answers_from_the_demo(monkeypatch, tmp_path, embedder):
    from rag.config import Settings
    from rag.errors import IndexError_
    from rag.pipeline import DEMO_NOTICE, Pipeline

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    pipe = Pipeline.from_settings(Settings(), embedder=embedder, load_llm=False)
    assert pipe.demo
    ans = pipe.answer({"question": "Một học kỳ em được đăng ký tối đa bao nhiêu tín chỉ?"})
    assert ans.text.endswith(DEMO_NOTICE) and not ans.refused
    # a configured index that is missing is an error saying how to build it, never the demo
    with pytest.raises(IndexError_, match="rag ingest"):
        Pipeline.from_settings(Settings(index_dir=tmp_path / "nothing-here"), embedder=embedder, load_llm=False)


def test_follow_up_in_a_conversation_is_searched_as_a_standalone_query(demo_pipeline):
    history = [{"role": "user", "content": "Học kỳ chính em được đăng ký tối đa bao nhiêu tín chỉ?"},
               {"role": "assistant", "content": "…"}]
    ans = demo_pipeline.answer({"question": "Còn học kỳ hè thì sao?", "history": history})
    assert ans.query == "Học kỳ hè em được đăng ký tối đa bao nhiêu tín chỉ?"
    assert not ans.refused and ans.citations[0].article == "8" and "12 tín chỉ" in ans.text
    from rag.render import answer_dict

    assert answer_dict(ans)["query"] == ans.query


@pytest.mark.parametrize("question", ["What is the maximum number of credits per semester?", "1234 5678"])
def test_odd_questions_get_a_clear_refusal(demo_pipeline, question):
    ans = demo_pipeline.answer({"question": question})
    assert ans.refused and ans.text.startswith("Không tìm thấy") and ans.citations == []


def test_a_question_with_no_word_is_an_input_error_not_a_search(demo_pipeline):
    from rag.errors import InputError

    with pytest.raises(InputError, match="no words"):
        demo_pipeline.answer({"question": "??? !!!"})


def test_cli_full_and_chat_reset(demo_index_dir, capsys, monkeypatch):
    from rag.cli import CHAT_RESET, main

    assert main(["ask", "Một học kỳ em được đăng ký tối đa bao nhiêu tín chỉ?", "--index", str(demo_index_dir),
                 "--full"]) == 0
    out = capsys.readouterr().out
    assert "── Toàn văn: Quy chế đào tạo trình độ đại học › Điều 8. Đăng ký khối lượng học tập ──" in out
    assert "6. Sinh viên chỉ được đăng ký học phần khi đã học các học phần tiên quyết" in out  # the whole Điều
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("Học kỳ chính em được đăng ký tối đa bao nhiêu tín chỉ?\n"
                                                 "Còn học kỳ hè thì sao?\n/reset\n/exit\n"))
    assert main(["chat", "--index", str(demo_index_dir)]) == 0
    out = capsys.readouterr().out
    assert "(đã tìm với câu hỏi: Học kỳ hè em được đăng ký tối đa bao nhiêu tín chỉ?)" in out
    assert CHAT_RESET in out


def test_chat_help_and_a_mistyped_command_are_not_questions(demo_index_dir, capsys, monkeypatch):
    import io

    from rag.cli import main
    from rag.texts import CHAT_HELP, CHAT_UNKNOWN_COMMAND, REFUSAL

    monkeypatch.setattr("sys.stdin", io.StringIO("/help\n/rest\n/exit\n"))
    assert main(["chat", "--index", str(demo_index_dir)]) == 0
    out = capsys.readouterr().out
    assert CHAT_HELP in out and CHAT_UNKNOWN_COMMAND.format("/rest", CHAT_HELP) in out
    assert REFUSAL not in out  # neither was searched as a question


def test_info_lists_document_metadata(demo_index_dir, capsys):
    import json

    from rag.cli import main

    assert main(["info", "--index", str(demo_index_dir)]) == 0
    docs = json.loads(capsys.readouterr().out)["documents"]
    assert {d["source"] for d in docs} == {"quy-che-cong-tac-sinh-vien.md", "quy-che-dao-tao.md",
                                          "quy-dinh-hoc-bong.md"}
    assert all({"title", "number", "date", "issuer", "audience"} <= set(d) for d in docs)


# --- evaluation: fact-in-answer, the HUST labelled set, held-out splits ------------------------------


def test_fact_in_answer_counts_numbers_and_regulation_terms():
    from rag.evaluate import fact_score, reference_facts

    ref = "Theo Điều 10, Khoản 2, từ Quy chế đào tạo năm 2025, mình trả lời bạn như sau: Sinh viên được đăng ký " \
          "tối đa 24 TC và tối thiểu 12 TC trong học kỳ chính, nghĩa là bạn nên lập kế hoạch sớm."
    context = "2. a) Sinh viên không bị cảnh báo được đăng ký tối đa 24 TC và tối thiểu 12 TC trong học kỳ chính."
    q = "Học kỳ chính đăng ký tối đa bao nhiêu tín chỉ?"
    nums, terms = reference_facts(ref, q, ["Quy chế đào tạo năm 2025"], context)
    assert nums == {"24", "12"}  # not 10 and 2 (its citation), not 2025 (the document's name)
    assert "tối_thiểu" in terms and "kế_hoạch" not in terms  # "lập kế hoạch sớm" is the writer's, not the rule's
    good = fact_score("«a) … được đăng ký tối đa 24 TC và tối thiểu 12 TC trong học kỳ chính»", ref, q, [], context)
    assert good["ok"] and good["numbers_ok"]
    assert not fact_score("«… tối đa 24 TC …»", ref, q, [], context)["ok"]  # 12 is missing


def test_hust_rows_from_sft_lines(tmp_path):
    from rag.evaluate import halves, hust_rows

    def row(q, ctx, out, doc_type="Quy chế đào tạo năm 2025"):
        return json.dumps({"instruction": q, "input": "Hệ thống…\nCONTEXT:\n---\n" + ctx + "\n---", "output": out,
                           "doc_type": doc_type}, ensure_ascii=False)

    lines = [
        row("Q1", "Văn bản: Quy chế đào tạo năm 2025\nĐiều: Điều 10. Đăng ký\nKhoản: 2\nNội dung: …", "Theo Điều 10 …"),
        row("Q2", "Văn bản: Quyết định ngoại ngữ từ K68\nĐiều: Phụ lục 2, Bảng 1\nNội dung: …", "Theo Phụ lục 2 …",
            "Quyết định ngoại ngữ từ K68"),
        row("Q3", "Văn bản: Quyết định ngoại ngữ từ K70\nĐiều: 3", "…", "Quyết định ngoại ngữ từ K70"),
        row("Nhà xe ở đâu?", "Không có tài liệu", "Xin lỗi, hiện tại mình chưa có thông tin …", "N/A"),
        row("Quy định về điểm rèn luyện?", "Không có tài liệu", "Xin lỗi, hiện tại mình chưa có …", "N/A"),
        row("Q6", "Văn bản: Quy chế công tác sinh viên\nĐiều: Điều 31\nKhoản: 2", "…", "Quy chế công tác sinh viên"),
    ]
    path = tmp_path / "sft.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows, skipped = hust_rows(path)
    by_q = {r.question: r for r in rows}
    assert [(g.document, g.article, g.clause) for g in by_q["Q1"].citations] == [("Quy_che_25.pdf", "10", "2")]
    assert by_q["Q2"].citations[0].article == "Phụ lục 2"
    assert {g.article for g in by_q["Q6"].citations} == {"31", "Phụ lục"}  # Điều 31 hands over to its appendix
    assert by_q["Nhà xe ở đâu?"].expected == "refuse" and "Q3" not in by_q
    assert skipped["refusal that the PDFs answer"] == 1 and sum(skipped.values()) == 2
    h = halves(rows)
    assert sorted(r.question for r in h["dev"] + h["test"]) == sorted(by_q)
    assert halves(rows) == h  # deterministic


def test_halves_keep_questions_on_one_article_together():
    from rag.evaluate import EvalRow, GoldCitation, halves

    rows = [EvalRow(question=f"q{i}", citations=[GoldCitation("d", str(i % 7))], expected="answer") for i in range(70)]
    h = halves(rows)
    dev_articles = {r.citations[0].article for r in h["dev"]}
    assert not dev_articles & {r.citations[0].article for r in h["test"]}
    assert abs(len(h["dev"]) - len(h["test"])) <= 10


def test_real_hust_set_when_the_shared_data_is_there():
    from conftest import shared_data

    from rag.evaluate import hust_rows
    from rag.evaluate.splits import HUST_DOCUMENTS

    sft = shared_data("hust-regulations", "sft", "sft_dataset.jsonl")
    rows, skipped = hust_rows(sft)
    pdfs = {p.name for p in shared_data("hust-regulations", "pdf").iterdir()}
    assert set(HUST_DOCUMENTS.values()) <= pdfs
    assert len(rows) + sum(skipped.values()) == 1000
    assert sum(r.expected == "refuse" for r in rows) == 73 and len(rows) == 817


def test_sidecar_values_are_read_as_written(tmp_path):
    """YAML 1.1 would read 0123 as octal 83, 12:30 as 750 and "no" as false: a sidecar keeps the text."""
    pdf = tmp_path / "a.pdf"
    pdf.write_bytes(b"%PDF")
    (tmp_path / "a.pdf.meta.yaml").write_text("number: 0123\nissuer: 12:30\ndate: 2025-05-28\ntitle: |\n  Quy chế\n  2025\n",
                                             encoding="utf-8")
    assert read_sidecar(pdf, tmp_path)[0] == {"number": "0123", "issuer": "12:30", "date": "2025-05-28",
                                              "title": "Quy chế 2025"}
    (tmp_path / "a.pdf.meta.yaml").write_text("# " + "x" * (1 << 20) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="at most 1,048,576"):
        read_sidecar(pdf, tmp_path)


def test_corpus_entries_match_decomposed_names_and_only_a_documents_own_entry_reindexes_it(tmp_path):
    import unicodedata

    a, b = tmp_path / "Quy chế.pdf", tmp_path / "b.pdf"
    a.write_bytes(b"%PDF")
    b.write_bytes(b"%PDF")
    corpus = tmp_path / "corpus.yaml"
    nfd = unicodedata.normalize("NFD", "Quy chế.pdf")  # as typed on macOS
    corpus.write_text(f"documents:\n  {nfd}: {{title: Tên}}\n  b.pdf: {{title: B}}\n", encoding="utf-8")
    side, digest = read_sidecar(a, tmp_path)
    assert side == {"title": "Tên"}
    corpus.write_text(f"# edited\ndocuments:\n  {nfd}: {{title: Tên}}\n  b.pdf: {{title: B2}}\n", encoding="utf-8")
    assert read_sidecar(a, tmp_path)[1] == digest  # b's entry changed, not a's: a is not read again
    assert read_sidecar(b, tmp_path)[0] == {"title": "B2"}


def test_corpus_file_holds_documents_only(tmp_path):
    pdf = tmp_path / "a.pdf"
    pdf.write_bytes(b"%PDF")
    (tmp_path / "corpus.yaml").write_text("document:\n  a.pdf: {title: A}\ndocuments: {}\n", encoding="utf-8")
    with pytest.raises(InputError, match="unknown key.s. document; the file holds 'documents:' only"):
        read_sidecar(pdf, tmp_path)
