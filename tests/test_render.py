"""rag.render: every text form of an Answer, and that what it writes it reads back the same."""

from __future__ import annotations

import pytest

from rag.render import (answer_dict, answer_from_dict, answer_from_text, answer_json, citation_dict, citation_from_label,
                        citation_label, hit_dict, message_block, message_text, retrieval_dict, sources, sources_block,
                        sources_panel, terminal_sources)
from rag.texts import REFUSAL, SOURCES_HEADING
from rag.types import Answer, Chunk, Citation, Hit

QCDT = "Quy chế đào tạo"
# Labels carry no source file, so a citation read back from one has source="".
SHAPES = [
    Citation(QCDT, "", 4, None, "10", None, "2", "b"),  # everything
    Citation(QCDT, "", 4, None, "10", None, "2", None),  # no point
    Citation(QCDT, "", None, None, "10", None, None, None),  # no clause, no page
    Citation(QCDT, "", 12, None, "10", None, "1-3", None),  # no title, a clause range
    Citation(QCDT, "", None, None, "3", None, None, "a-c"),  # a point range without a clause
    Citation(QCDT, "", 7, None, "5a", None, "2", "đ"),  # đ point
    Citation("Quy định quản lý và xét, cấp học bổng", "", 3, None, "5", None, "2 và 4", None),  # commas, two Khoản
    Citation("Quy định học bổng", "", 2),  # a document and a page only
    Citation("Quy định học bổng — bản sửa đổi, 2024", ""),  # a dash and a comma in the title, no page
]


@pytest.mark.parametrize("c", SHAPES, ids=lambda c: citation_label(c))
def test_every_citation_shape_reads_back_from_its_label(c):
    assert citation_from_label(citation_label(c)) == c


def test_the_house_label():
    assert citation_label(SHAPES[0]) == f"{QCDT}, Điều 10, Khoản 2, Điểm b, trang 4"
    assert citation_label(Citation("Quy định học bổng", "x.pdf", 2)) == "Quy định học bổng, trang 2"
    short = Citation("QUYẾT ĐỊNH Về việc ban hành Quy chế đào tạo", "q.pdf", 14, None, "10", clause="2",
                     page_label="10", title="Quy chế đào tạo 2025")
    assert citation_label(short) == "Quy chế đào tạo 2025, Điều 10, Khoản 2, trang 10"  # short title, printed page


def test_a_label_the_writer_would_not_write_is_kept_whole():
    odd = citation_from_label("Phụ lục I, bảng 2")
    assert odd == Citation("Phụ lục I, bảng 2", "") and citation_label(odd) == "Phụ lục I, bảng 2"


def test_a_streamed_answer_and_its_sources_block_read_back():
    cited = Answer(text="Theo Điều 10 và Điều 99 …", refused=False, citations=SHAPES[:4],
                   unsupported_citations=["Điều 99"])
    block = sources_block(cited)
    assert block.startswith(f"\n\n{SOURCES_HEADING}\n[1] ")
    back = answer_from_text(cited.text + block)
    assert (back.text, back.citations, back.unsupported_citations, back.refused) == \
        (cited.text, cited.citations, ["Điều 99"], False)
    only_note = Answer("Theo Điều 99 …", False, [], unsupported_citations=["Điều 99", "Điều 100"])
    back = answer_from_text(only_note.text + sources_block(only_note))
    assert (back.text, back.citations, back.unsupported_citations) == (only_note.text, [], ["Điều 99", "Điều 100"])
    plain = answer_from_text("Tối đa 24 tín chỉ.")
    assert (plain.text, plain.citations, plain.refused) == ("Tối đa 24 tín chỉ.", [], False)


def test_a_refusal_has_no_block_and_reads_back_refused():
    refusal = Answer(text=REFUSAL, refused=True, citations=[])
    assert sources_block(refusal) == "" and message_block(refusal) == "" and terminal_sources(refusal) == ""
    for text in (REFUSAL, REFUSAL.rstrip("."), ""):  # a model may drop the full stop
        back = answer_from_text(text + sources_block(refusal))
        assert back.refused and back.citations == []


def test_chat_messages_list_only_the_sources_the_text_does_not_quote():
    c1, c2 = SHAPES[1], SHAPES[6]
    llm = Answer(text="Tối đa 24 tín chỉ.", refused=False, citations=[c1], mode="llm")
    assert message_text(llm) == f"Tối đa 24 tín chỉ.\n\n{SOURCES_HEADING}\n[1] {citation_label(c1)}"
    quoting = Answer(text=f"[1] {citation_label(c1)}: «…»", refused=False, citations=[c1, c2])
    assert message_text(quoting) == quoting.text + f"\n\n{SOURCES_HEADING}\n[2] {citation_label(c2)}"
    assert message_block(Answer(text=f"{citation_label(c1)} …", refused=False, citations=[c1])) == ""
    assert message_text(Answer(text=REFUSAL, refused=True, citations=[])) == REFUSAL
    assert [s["label"] for s in sources(quoting)] == [citation_label(c1), citation_label(c2)]
    assert sources(quoting)[1] | {"index": 0, "label": ""} == {"index": 0, "label": "", **citation_dict(c2)}


def test_the_terminal_form():
    a = Answer("x", False, SHAPES[:2], unsupported_citations=["Điều 99"])
    assert terminal_sources(a) == (f"\n{SOURCES_HEADING}\n  [1] {citation_label(SHAPES[0])}\n"
                                   f"  [2] {citation_label(SHAPES[1])}\n  (không có trong tài liệu được truy xuất: Điều 99)")


def _hit(c: Citation, rank: int, score: float) -> Hit:
    chunk = Chunk(id=f"c{rank}", text=f"nội dung {rank}", header=f"{c.document} › Điều {c.article}",
                  document=c.document, source=c.source, page=c.page, chapter=c.chapter, article=c.article,
                  article_title=c.article_title, clause=c.clause, point=c.point)
    return Hit(chunk=chunk, score=score, rank=rank)


def test_the_json_answer_reads_back():
    c = Citation(QCDT, "qcdt.pdf", 4, "Chương II", "10", "Cảnh báo học tập", "2", None)
    a = Answer("Theo Điều 10 …", False, [c], hits=[_hit(c, 1, 0.9)], usage={"prompt_tokens": 5},
               timings={"total_ms": 1.5}, unsupported_citations=["Điều 99"], mode="llm", finish_reason="stop")
    data = answer_json(a)
    assert data["passages"] == [{"rank": 1, "score": 0.9, "id": "c1", "citation": citation_dict(c)}]
    back = answer_from_dict(data)
    assert (back.text, back.refused, back.citations, back.usage, back.timings, back.unsupported_citations,
            back.mode, back.finish_reason) == (a.text, False, [c], a.usage, a.timings, ["Điều 99"], "llm", "stop")


def test_the_json_forms_have_one_writer():
    """answer_json is answer_dict plus the passages, a passage is hit_dict without its text, and a search
    result lists hit_dict: one writer for the CLI, Cog and RunPod forms; the dataclasses write none."""
    from rag.extractive import Quote
    from rag.retrieve import Retrieval

    c = Citation(QCDT, "qcdt.pdf", 4, "Chương II", "10", "Cảnh báo học tập", "2", None)
    hits = [_hit(c, 1, 0.9123456789), _hit(c, 2, 0.5)]
    quote = Quote(citation=c, path="Quy chế đào tạo › Điều 10 › Khoản 2", text="nội dung 1", chunk_id="c1")
    a = Answer("Theo Điều 10 …", False, [c], hits=hits, timings={"total_ms": 1.23456}, quotes=[quote], query="q")
    plain = answer_dict(a)
    assert list(plain) == ["answer", "refused", "citations", "unsupported_citations", "mode", "finish_reason",
                           "query", "quotes", "usage", "timings"]
    assert plain["quotes"] == [{"path": quote.path, "text": "nội dung 1",
                                "chunk_id": "c1", "citation": citation_dict(c)}]
    assert plain["timings"] == {"total_ms": 1.23}
    full = answer_json(a)
    assert {k: v for k, v in full.items() if k != "passages"} == plain
    assert full["passages"] == [{k: v for k, v in hit_dict(h).items() if k != "text"} for h in hits]
    assert hit_dict(hits[0]) == {"rank": 1, "score": 0.912346, "text": hits[0].chunk.full_text, "id": "c1",
                                 "citation": citation_dict(c)}
    result = Retrieval(question="câu hỏi", hits=hits, relevance=0.9, refused=False)
    assert retrieval_dict(result) == {"question": "câu hỏi", "query": "câu hỏi", "hits": [hit_dict(h) for h in hits]}
    for kind in (Answer, Hit, Quote, Retrieval):
        assert not hasattr(kind, "to_dict"), kind


def test_the_sources_panel_data():
    c1, c2, c3 = (Citation(QCDT, "qcdt.pdf", p, None, art, None, None, None) for p, art in ((4, "10"), (5, "11"), (6, "12")))
    hits = [_hit(c1, 1, 0.9), _hit(c2, 2, 0.8), _hit(c3, 3, 0.7)]
    a = Answer("…", False, [c2, Citation("Khác", "", 1)], hits=hits, unsupported_citations=["Điều 99"],
               timings={"retrieve_ms": 12.3, "total_ms": 40.0}, usage={"prompt_tokens": 10, "completion_tokens": 3},
               mode="llm")
    panel = sources_panel(a)
    assert [(s.number, s.label, s.score) for s in panel.cited] == [(1, citation_label(c2), 0.8),
                                                                   (2, "Khác, trang 1", None)]
    assert panel.cited[0].passage == hits[1].chunk.full_text and panel.cited[1].passage is None
    assert [s.citation for s in panel.others] == [c1, c3] and all(s.number is None for s in panel.others)
    assert panel.unsupported == ["Điều 99"] and not panel.refused
    assert panel.footer == "truy xuất 12 ms · tổng 40 ms · token vào/ra 10/3 · chế độ LLM"
    refused = sources_panel(Answer(REFUSAL, True, [], hits=hits[:2], unsupported_citations=["Điều 99"]))
    assert refused.refused and refused.cited == [] and refused.unsupported == []
    assert [s.citation for s in refused.others] == [c1, c2]
