"""`rag eval`: metric functions against hand-worked values, dataset validation, and an end-to-end run on the demo."""

from __future__ import annotations

import json
import math

import pytest

from rag.cli import main
from rag.errors import InputError
from rag.evaluate import (
    GoldCitation,
    Ref,
    article_match,
    citation_scores,
    clause_covers,
    convert_alqac,
    distinct_refs,
    document_match,
    document_matches,
    gold_positions,
    latency_summary,
    load_dataset,
    mrr_at,
    ndcg_at,
    percentile,
    recall_at,
    retrieval_metrics,
    token_f1,
)

QCDT = "Quy chế đào tạo trình độ đại học"


# -- rank metrics ---------------------------------------------------------------------------------
def test_gold_at_rank_three():
    positions = gold_positions(["a", "b", "g", "c"], ["g"], lambda r, g: r == g)
    assert positions == [3]
    assert mrr_at(positions) == pytest.approx(1 / 3)
    assert (recall_at(positions, 1), recall_at(positions, 3), recall_at(positions, 5)) == (0.0, 1.0, 1.0)
    assert ndcg_at(positions, 1) == pytest.approx(1 / math.log2(4))  # = 0.5
    assert mrr_at([11]) == 0.0 and recall_at([], 10) == 0.0


def test_ndcg_with_two_golds():
    # Golds at ranks 1 and 3: DCG = 1 + 1/log2(4) = 1.5; ideal = 1 + 1/log2(3) = 1.6309 → 0.9197.
    assert ndcg_at([1, 3], 2) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    assert ndcg_at([1, 3], 2) == pytest.approx(0.91972, abs=1e-5)
    # One of the two found, at rank 2: 0.6309 / 1.6309.
    assert ndcg_at([2], 2) == pytest.approx(0.38685, abs=1e-5)
    assert ndcg_at([1, 2], 2) == pytest.approx(1.0)


def test_each_gold_and_each_ranked_item_count_once():
    # A gold without a document matches Điều 8 of any document, but is credited once.
    ranked = [Ref("A", article="8"), Ref("B", article="8"), Ref("A", article="9")]
    golds = [GoldCitation(article="8"), GoldCitation(document="A", article="9")]
    assert gold_positions(ranked, golds, article_match) == [1, 3]


def test_retrieval_metrics_over_questions():
    ranked = [["x", "g1"], ["g2", "y"], ["y", "z"], ["q"]]
    golds = [["g1"], ["g2"], ["g3"], []]  # the last has no gold: not counted
    m = retrieval_metrics(ranked, golds, lambda r, g: r == g, ks=(1, 2), curve_k=3)
    assert m["n"] == 3
    assert m["R@1"] == pytest.approx(1 / 3) and m["R@2"] == pytest.approx(2 / 3)
    assert m["MRR@10"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["curve"] == pytest.approx([1 / 3, 2 / 3, 2 / 3])


def test_distinct_refs_keep_passages_outside_any_article():
    refs = [Ref("A", article="8", clause="1-3"), Ref("A", article="8", clause="4"), Ref("A"), Ref("A"),
            Ref("B", article="8")]
    assert [(r.document, r.article) for r in distinct_refs(refs, "article")] == [
        ("A", "8"), ("A", None), ("A", None), ("B", "8")]
    assert [r.document for r in distinct_refs(refs, "document")] == ["A", "B"]


# -- matching -------------------------------------------------------------------------------------
def test_documents_match_by_title_or_file_name_in_either_tone_style():
    assert document_matches("Quy_che_25.pdf", "QUYẾT ĐỊNH Về việc ban hành Quy chế đào tạo", "Quy_che_25.pdf")
    assert document_matches("quy_che_25", "whatever", "pdf/Quy_che_25.pdf")
    assert document_matches("Luật Phòng, chống ma tuý", "Luật Phòng, chống ma túy", "x.json")
    assert not document_matches("Quy chế công tác sinh viên", QCDT, "quy-che-dao-tao.md")
    assert article_match(Ref(QCDT, article="8"), GoldCitation(QCDT, "Điều 8"))
    assert not article_match(Ref(QCDT, article="8"), GoldCitation("Quy định về học bổng", "8"))
    assert document_match(Ref(QCDT, article="3"), GoldCitation(QCDT, "8"))


def test_clause_ranges_and_whole_articles_cover_a_khoan():
    assert clause_covers("1-3", "2") and clause_covers("2", "2") and clause_covers(None, "4")
    assert clause_covers("1, 4", "Khoản 4")
    assert not clause_covers("4-6", "2") and not clause_covers("3", "2")


def test_citation_precision_recall_by_hand():
    gold = [GoldCitation(QCDT, "8", "2")]
    cited = [Ref(QCDT, article="8", clause="1-3"), Ref(QCDT, article="9")]
    assert citation_scores(cited, gold) == {"precision": 0.5, "recall": 1.0, "clause_recall": 1.0}
    assert citation_scores([Ref(QCDT, article="8", clause="4-6")], gold) == {
        "precision": 1.0, "recall": 1.0, "clause_recall": 0.0}
    # A refusal cites nothing: recall 0, precision undefined.
    assert citation_scores([], gold) == {"precision": None, "recall": 0.0, "clause_recall": 0.0}


# -- answers and latency --------------------------------------------------------------------------
def test_token_f1_by_hand():
    # prediction: sinh viên được đăng ký tối đa 24 tín chỉ (10 tokens)
    # reference:  sinh viên đăng ký tối đa 24 tín chỉ mỗi học kỳ (12 tokens); 9 shared.
    f1 = token_f1("Sinh viên được đăng ký tối đa 24 tín chỉ.", "sinh viên đăng ký tối đa 24 tín chỉ mỗi học kỳ")
    p, r = 9 / 10, 9 / 12
    assert f1 == pytest.approx(2 * p * r / (p + r))  # 0.8182
    # Case, punctuation, decomposed Unicode and tone placement do not count as differences.
    import unicodedata

    assert token_f1(unicodedata.normalize("NFD", "Hoà giải, KHOẺ mạnh!"), "hòa giải khỏe mạnh") == 1.0
    assert token_f1("học bổng", "tín chỉ") == 0.0


def test_percentiles_of_a_known_list():
    xs = list(range(1, 11))  # 1..10
    assert percentile(xs, 50) == pytest.approx(5.5)
    assert percentile(xs, 95) == pytest.approx(9.55)
    assert percentile([7.0], 95) == 7.0
    lat = latency_summary([{"retrieve_ms": v, "total_ms": 2 * v} for v in xs])
    assert lat["retrieve_ms"]["p50"] == pytest.approx(5.5) and lat["total_ms"]["p95"] == pytest.approx(19.1)
    assert lat["total_ms"]["n"] == 10


# -- dataset --------------------------------------------------------------------------------------
def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"question": "Một kỳ em được đăng ký tối đa bao nhiêu tín chỉ?",
                   "citations": [{"document": QCDT, "article": 8, "clause": "2"}], "expected": "answer"},
                  ensure_ascii=False)


@pytest.mark.parametrize("bad, needle", [
    ('{"question": "Học phí đóng khi nào?", "citations": [', "not valid JSON"),
    ('{"question": "   "}', "'question' is missing or empty"),
    ('{"question": "Học phí?", "citations": [{"clause": "2"}]}', "needs a 'document' or an 'article'"),
    ('{"question": "Học phí?", "expected": "maybe"}', "'expected'"),
    ('{"question": "Học phí?", "citation": []}', "unknown field(s) citation"),
    ('{"question": "Phở?", "expected": "refuse", "citations": [{"article": "1"}]}', "cannot have gold"),
    ('["Học phí?"]', "expected a JSON object"),
])
def test_malformed_line_is_reported_with_its_number(tmp_path, bad, needle):
    path = _write(tmp_path / "bad.jsonl", ["# header: written by the team", GOOD, "", bad])
    with pytest.raises(InputError) as e:
        load_dataset(path)
    assert f"bad.jsonl:4:" in str(e.value) and needle in str(e.value)


def test_dataset_shape_and_comments(tmp_path):
    path = _write(tmp_path / "ok.jsonl", ["# written by the team", GOOD,
                                          '{"question": "Công thức nấu phở?", "expected": "refuse", "id": 7}'])
    rows = load_dataset(path)
    assert [r.line for r in rows] == [2, 3]
    assert rows[0].citations == [GoldCitation(QCDT, "8", "2")] and rows[0].expected == "answer"
    assert rows[1].citations == [] and rows[1].id == "7"
    with pytest.raises(InputError, match="no questions"):
        load_dataset(_write(tmp_path / "empty.jsonl", ["# nothing"]))


def test_convert_alqac_shape(tmp_path):
    src = tmp_path / "alqac"
    src.mkdir()
    (src / "train.json").write_text(json.dumps([
        {"question_id": "DS-1", "question_type": "Đúng/Sai", "text": "Người nghiện ma túy phải cai nghiện, đúng hay sai?",
         "relevant_articles": [{"law_id": "Luật Phòng, chống ma túy", "article_id": "32"}], "answer": "Đúng"},
    ], ensure_ascii=False), encoding="utf-8")
    (src / "law.json").write_text(json.dumps([
        {"id": "Luật Phòng, chống ma túy", "articles": [
            {"id": "31", "text": "Cai nghiện tự nguyện\n\nNgười nghiện được cai nghiện tự nguyện."},
            {"id": "32", "text": "Cai nghiện bắt buộc\n\nNgười nghiện từ đủ 18 tuổi bị đưa vào cơ sở."}]},
    ], ensure_ascii=False), encoding="utf-8")
    res = convert_alqac(src, tmp_path / "out" / "alqac.jsonl")
    rows = load_dataset(res["dataset"])
    assert res["questions"] == 1 and res["laws"] == 1
    assert rows[0].citations == [GoldCitation("Luật Phòng, chống ma túy", "32")] and rows[0].answer is None
    assert rows[0].id == "DS-1" and rows[0].meta["answer"] == "Đúng"
    law = json.loads((res["laws_dir"] / "Luật Phòng, chống ma túy.json").read_text(encoding="utf-8"))
    assert law["title"] == "Luật Phòng, chống ma túy"
    assert law["text"].startswith("Điều 31. Cai nghiện tự nguyện\nNgười nghiện được")
    assert "\n\nĐiều 32. Cai nghiện bắt buộc\n" in law["text"]


# -- end to end -----------------------------------------------------------------------------------
def test_rag_eval_end_to_end_on_the_demo(demo_index_dir, tmp_path, capsys):
    ds = _write(tmp_path / "mini.jsonl", [
        "# a small dataset written by the team for this test",
        json.dumps({"question": "Sinh viên bị cảnh báo học tập khi nào?",
                    "citations": [{"document": QCDT, "article": "10"}],
                    "answer": "Sinh viên bị cảnh báo học tập khi điểm trung bình học kỳ thấp hoặc nợ quá nhiều tín chỉ.",
                    "expected": "answer"}, ensure_ascii=False),
        json.dumps({"question": "Một học kỳ em được đăng ký tối đa bao nhiêu tín chỉ?",
                    "citations": [{"document": "quy-che-dao-tao.md", "article": "8", "clause": "2"}],
                    "answer": "Mỗi học kỳ chính sinh viên được đăng ký tối đa 24 tín chỉ.", "expected": "answer"},
                   ensure_ascii=False),
        json.dumps({"question": "Công thức nấu phở bò ngon nhất là gì?", "expected": "refuse"}, ensure_ascii=False),
    ])
    out = tmp_path / "out"
    code = main(["eval", str(ds), "--index", str(demo_index_dir), "--out", str(out), "--top-k", "3"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["dataset"]["rows"] == 3 and report["dataset"]["with_article_gold"] == 2
    assert report["dataset"]["unknown_gold_documents"] == [] and "warning:" not in stderr
    assert report["config"]["top_k"] == 3 and report["config"]["retrieval_only"] is False
    art = report["retrieval"]["article"]
    assert art["n"] == 2 and art["R@10"] == 1.0 and len(art["curve"]) == 10
    assert report["retrieval"]["document"]["R@1"] == 1.0  # both golds name the training regulation
    # The per-question ranks agree with the aggregates (exact ranks depend on the retriever's tuning).
    ranks = [r["article_positions"] for r in report["rows"][:2]]
    assert all(p and p[0] <= 10 for p in ranks)
    assert art["R@1"] == sum(p[0] == 1 for p in ranks) / 2
    assert art["MRR@10"] == pytest.approx(sum(1 / p[0] for p in ranks) / 2)
    assert report["rows"][2]["article_positions"] is None and report["rows"][2]["refused"] is True
    assert all(r["cited"] for r in report["rows"][:2]) and report["rows"][2]["cited"] == []
    assert report["refusal"] == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "false_refusal": 0.0, "n": 3,
                                 "wrongly_answered": [], "wrongly_refused": []}
    assert report["citations"]["n_recall"] == 2 and 0 < report["citations"]["recall"] <= 1
    assert report["answer"]["n"] == 2 and 0 < report["answer"]["token_f1"] < 1
    assert report["latency_ms"]["total_ms"]["n"] == 3 and report["latency_ms"]["retrieve_ms"]["p50"] > 0

    md = (out / "summary.md").read_text(encoding="utf-8")
    assert md.startswith("# Evaluation: mini.jsonl") and "| Điều R@10 | 100.0 |" in md
    assert "| refusal accuracy | 100.0 |" in md and md in stdout
    png = (out / "recall.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_retrieval_only_evaluate_and_compare(demo_pipeline, tmp_path):
    from rag.evaluate import EvalRow, evaluate, load_report, markdown_summary, write_outputs

    rows = [EvalRow("Điểm rèn luyện loại tốt là bao nhiêu điểm?", [GoldCitation("Quy chế công tác sinh viên")],
                    expected="answer", line=1)]
    report = evaluate(demo_pipeline, rows, retrieval_only=True, dataset="one")
    assert "citations" not in report and "answer" not in report
    assert report["retrieval"]["article"]["n"] == 0 and report["retrieval"]["document"]["R@1"] == 1.0
    assert set(report["latency_ms"]) >= {"embed_ms", "retrieve_ms"}
    paths = write_outputs(report, tmp_path / "a")
    again = write_outputs(report, tmp_path / "b", compare=[load_report(paths["json"])])
    md = again["markdown"].read_text(encoding="utf-8")
    assert md.count("retrieval only") == 2 and md == markdown_summary([report, report])


def test_cli_reports_the_bad_line_before_loading_anything(tmp_path, capsys):
    ds = _write(tmp_path / "d.jsonl", [GOOD, '{"question": "Học phí?", "citations": {"article": "9"}}'])
    code = main(["eval", str(ds), "--index", str(tmp_path / "no-index")])
    _, err = capsys.readouterr()
    assert code == 2 and "d.jsonl:2:" in err and "'citations' must be a list" in err and "Traceback" not in err
    code = main(["eval"])
    assert code == 2 and "give a dataset" in capsys.readouterr().err



def test_eval_refuses_a_bad_compare_or_out_before_the_run(tmp_path, capsys):
    ds = _write(tmp_path / "d.jsonl", [GOOD])
    (tmp_path / "partial.json").write_text('{"retrieval": {"article": {}}}', encoding="utf-8")
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    for extra, needle in ((["--compare", str(tmp_path / "partial.json")], "not a report written by `rag eval`"),
                          (["--compare", str(tmp_path)], "no such report file"),
                          (["--out", str(tmp_path / "afile")], "is a file: give a folder")):
        code = main(["eval", str(ds), "--index", str(tmp_path / "no-index"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and "Traceback" not in err, err


def test_deeply_nested_dataset_line_and_bad_alqac_laws_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="deep.jsonl:1: not valid JSON"):
        load_dataset(_write(tmp_path / "deep.jsonl", ["[" * 100_000 + "]" * 100_000]))
    src = tmp_path / "alqac"
    src.mkdir()
    (src / "train.json").write_text('[{"question_id": "q1", "text": "Câu?", "relevant_articles": '
                                    '[{"law_id": "L1", "article_id": "1"}]}]', encoding="utf-8")
    for law, needle in (("{bad", "not valid JSON"), ('[{"id": 5, "articles": []}]', "not the ALQAC law.json shape"),
                        ('[{"id": "L1", "articles": [{"id": "1", "text": 5}]}]', "not the ALQAC law.json shape")):
        (src / "law.json").write_text(law, encoding="utf-8")
        with pytest.raises(InputError, match=needle):
            convert_alqac(src, tmp_path / "out" / "x.jsonl")
    with pytest.raises(InputError, match="is a folder"):
        convert_alqac(src, tmp_path)


def test_eval_warns_of_a_gold_document_nothing_is_named_and_checks_questions_first(demo_index_dir, tmp_path,
                                                                                   capsys, monkeypatch):
    typo = QCDT[:-1] + "x"
    ds = _write(tmp_path / "typo.jsonl", [json.dumps({"question": "Sinh viên bị cảnh báo học tập khi nào?",
                                                      "citations": [{"document": typo, "article": "10"}]},
                                                     ensure_ascii=False)])
    code = main(["eval", str(ds), "--index", str(demo_index_dir), "--out", str(tmp_path / "o"), "--retrieval-only"])
    _, err = capsys.readouterr()
    assert code == 0 and "1 gold document(s) name no indexed document" in err and typo in err, err
    import rag.cli

    def no_models(*a, **k):
        raise AssertionError("a model was loaded before the questions were checked")

    monkeypatch.setattr(rag.cli, "_pipeline", no_models)
    bad = _write(tmp_path / "esc.jsonl", [GOOD, json.dumps({"question": "Học phí\u001b?"})])
    assert main(["eval", str(bad), "--index", str(demo_index_dir)]) == 2
    assert "esc.jsonl:2: " in capsys.readouterr().err
    assert main(["eval", str(ds), "--index", str(demo_index_dir), "--top-k", "0"]) == 2
    assert "'top_k'=0 is out of range" in capsys.readouterr().err
