"""The web chat's callbacks, rendering and backends, without a browser (tests/test_ui_browser.py has one).

Local answers come from the demo index in extractive mode. Replicate and RunPod
cannot be reached from here, so their backends get honest fakes of the official
clients (same methods, same outputs, same exceptions; every call recorded); where
the real client library is installed, it is also run against a fake transport
on its HTTP layer.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from rag.errors import Cancelled, ConfigError, InputError
from rag.pipeline import Delta, Final
from rag.request import AskRequest
from rag.render import message_text
from rag.texts import REFUSAL
from rag.types import Answer, Chunk, Hit
from rag.ui import (WORK_CHOICE, BackendError, ChatApp, LocalBackend, ReplicateBackend, RunPodBackend,
                    example_questions, index_html, make_backend, request_limits, sources_html, text_html)

ARTICLE8 = "Điều 8. Đăng ký khối lượng học tập"
PLANTED = '<script>window.__pwned=1</script> và <img src=x onerror="window.__pwned=2">'


class Recording:
    """Wraps a backend and keeps every request it was given."""

    def __init__(self, inner):
        self.inner, self.requests = inner, []
        self.label, self.kind = inner.label, inner.kind
        self.pipeline = getattr(inner, "pipeline", None)

    def stream(self, request, cancel):
        self.requests.append(request)
        yield from self.inner.stream(request, cancel)


@pytest.fixture()
def app(demo_pipeline, tmp_path):
    backend = Recording(LocalBackend(demo_pipeline))
    p = demo_pipeline
    return ChatApp(p.settings, backend, index=p.index, embedder=p.embedder, work_dir=tmp_path / "work",
                   examples=["Học bổng loại giỏi bao nhiêu tiền?"])  # example_questions has its own test


def ask(app, question, state=None, **controls) -> list:
    """Every output ``respond`` yields, in order (Gradio runs it as an async generator)."""

    async def collect():
        return [out async for out in app.respond(question, state, **controls)]

    return asyncio.run(collect())


# -- chat --------------------------------------------------------------------------------------------


def test_answer_streams_then_shows_sources_and_keeps_history(app):
    outs = ask(app, "Một kỳ em được đăng ký tối đa bao nhiêu tín chỉ?")
    assert len(outs) >= 3  # pending, at least one streamed piece, final
    first_messages, _, first_sources, box = outs[0]
    assert first_messages[-1] == {"role": "assistant", "content": "…"} and "Đang tìm" in first_sources and box == ""
    messages, state, sources, _ = outs[-1]
    assert messages[0] == {"role": "user", "content": "Một kỳ em được đăng ký tối đa bao nhiêu tín chỉ?"}
    assert ARTICLE8 in messages[-1]["content"] and "24 tín chỉ" in messages[-1]["content"]
    assert "[1] Quy chế đào tạo trình độ đại học, Điều 8" in sources
    assert "<details class=\"rag-source\" open>" in sources and "quy-che-dao-tao.md" in sources
    assert [t["role"] for t in state["history"]] == ["user", "assistant"]
    assert state["history"][1]["content"].startswith("Theo tài liệu")


def test_follow_up_question_carries_the_conversation(app):
    state = ask(app, "Một kỳ em được đăng ký tối đa bao nhiêu tín chỉ?")[-1][1]
    messages, state, _, _ = ask(app, "Còn học kỳ hè thì sao?", state)[-1]
    second = app.backend.requests[-1]
    assert second.history[0] == {"role": "user", "content": "Một kỳ em được đăng ký tối đa bao nhiêu tín chỉ?"}
    assert second.history[1]["role"] == "assistant" and len(second.history) == 2
    assert len(messages) == 4 and "Điều 8" in messages[-1]["content"]  # the summer-term clause is in Điều 8
    assert len(state["history"]) == 4


def test_refusal_is_a_clear_state(app):
    messages, state, sources, _ = ask(app, "Tỉ giá đô la hôm nay là bao nhiêu?")[-1]
    assert messages[-1]["content"].startswith(REFUSAL)
    assert "rag-refusal" in sources and "Nguồn (" not in sources and "không đủ liên quan" in sources
    assert state["history"][-1]["content"].startswith(REFUSAL)


def test_controls_reach_the_request_with_the_request_limits(app):
    ask(app, "Học bổng loại giỏi bao nhiêu tiền?", None, top_k=3, temperature=0.7, max_new_tokens=64)
    req = app.backend.requests[-1]
    assert (req.top_k, req.temperature, req.max_new_tokens) == (3, 0.7, 64)
    # Sliders send floats; the defaults apply when a control sends nothing.
    ask(app, "Học bổng loại giỏi bao nhiêu tiền?", None, top_k=4.0, temperature=None, max_new_tokens=None)
    req = app.backend.requests[-1]
    assert (req.top_k, req.temperature, req.max_new_tokens) == (4, 0.0, 512)


@pytest.mark.parametrize("max_top_k, limit", [(20, 2048), (7, 100)])
def test_slider_limits_are_the_request_type_limits(settings_factory, max_top_k, limit):
    settings = settings_factory(max_top_k=max_top_k, top_k=5, max_new_tokens_limit=limit)
    lim = request_limits(settings)
    assert lim["top_k"][:2] == (1, max_top_k) and lim["max_new_tokens"][:2] == (1, limit)
    assert lim["temperature"][:2] == (0.0, 2.0)
    defaults = {name: default for name, (_, _, default) in lim.items()}
    AskRequest.from_dict({"question": "q", **defaults}, settings)
    for name, (lo, hi, default) in lim.items():
        assert lo <= default <= hi
        AskRequest.from_dict({"question": "q", **defaults, name: hi}, settings)  # the maximum is accepted…
        AskRequest.from_dict({"question": "q", **defaults, name: lo}, settings)
        with pytest.raises(InputError, match=name):  # …and one step past it is not
            AskRequest.from_dict({"question": "q", **defaults, name: hi + 1}, settings)


def test_bad_input_is_told_in_the_chat_not_raised(app):
    messages, state, sources, _ = ask(app, "x" * 2001)[-1]
    assert messages[-1]["content"].startswith("⚠️") and "limit is 2000" in messages[-1]["content"]
    assert "Câu hỏi hoặc thiết lập chưa hợp lệ" in messages[-1]["content"]  # Vietnamese first, for a student
    assert "the question is 2001 characters" in messages[-1]["content"]  # not the internal field name
    assert "rag-error" in sources and state["history"] == []
    messages, _, _, _ = ask(app, "Học bổng?", None, top_k=999)[-1]
    assert "'top_k'=999 is out of range: allowed 1 to 20" in messages[-1]["content"]
    assert ask(app, "   ")[-1][0] == []  # an empty box does nothing
    assert app.backend.requests == []  # none of these reached the pipeline


def test_unexpected_failure_shows_no_internals(app, monkeypatch):
    def boom(request, cancel):
        raise ValueError("secret /home/someone/.cache/x.bin")
        yield  # pragma: no cover

    monkeypatch.setattr(app.backend, "stream", boom)
    messages, _, sources, _ = ask(app, "Học bổng loại giỏi bao nhiêu tiền?")[-1]
    text = messages[-1]["content"]
    assert "internal_error" in text and "ValueError" in text and "/home" not in text and "secret" not in text


def test_clear_starts_a_new_conversation(app):
    ask(app, "Một kỳ em được đăng ký tối đa bao nhiêu tín chỉ?")
    messages, state, sources, box = app.clear()
    assert messages == [] and state["history"] == [] and "sẽ hiện ở đây" in sources and box == ""


# -- rendering is text, never markup ---------------------------------------------------------------


def _planted_answer() -> Answer:
    chunk = Chunk(id="c1", text=f"1. Nhà xe khu B {PLANTED}.", header=f"Quy định nhà xe › Điều 1. Nhà xe {PLANTED}",
                  document=f"Quy định {PLANTED}", source="nha<xe>.md", page=2, article="1",
                  article_title=f"Nhà xe {PLANTED}")
    hit = Hit(chunk=chunk, score=0.5, rank=1)
    return Answer(text=f"Theo tài liệu: {PLANTED}", refused=False, citations=[chunk.citation()], hits=[hit],
                  unsupported_citations=["Điều 9<b>"], timings={"total_ms": 3.0})


def test_documents_and_answers_are_escaped_everywhere(app):
    answer = _planted_answer()
    panel = sources_html(answer)
    for html_out in (panel, text_html(message_text(answer))):
        assert "<script" not in html_out and "<img" not in html_out and "<b>" not in html_out
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in panel
    assert "onerror=&quot;window.__pwned=2&quot;" in panel and "nha&lt;xe&gt;.md" in panel

    class FakeIndex:
        location = "/tmp/<i>"
        manifest = SimpleNamespace(files={"a<b>.md": {"title": PLANTED, "kind": "md", "pages": 1, "chunks": 1}},
                                   document_count=1, page_count=1, chunk_count=1, embed_model="m<x>",
                                   embed_dimension=3, created_at="2025-01-01T00:00:00+00:00", updated_at="bad<date>")

    page = index_html(FakeIndex(), "Chỉ mục <u>")
    assert "<script" not in page and "<img" not in page and "<u>" not in page and "<i>" not in page
    assert "&lt;script&gt;" in page and "a&lt;b&gt;.md" in page


def test_planted_markup_in_a_real_document_comes_back_as_text(tmp_path, embedder, settings_factory):
    from rag.ingest import ingest
    from rag.pipeline import Pipeline

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "nha-xe.md").write_text(
        f"# Quy định về nhà xe\n\nĐiều 1. Nhà xe\n1. Sinh viên gửi xe máy tại nhà xe khu B {PLANTED}.\n",
        encoding="utf-8")
    settings = settings_factory(tmp_path / "idx")
    assert ingest([docs], settings, embedder=embedder, progress=False).ok
    app = ChatApp.create(settings, LocalBackend(Pipeline.from_settings(settings, embedder=embedder)),
                         work_dir=tmp_path / "work")
    messages, _, sources, _ = ask(app, "Sinh viên gửi xe máy ở đâu?")[-1]
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in messages[-1]["content"]
    assert "<script" not in messages[-1]["content"] + sources and "<img" not in messages[-1]["content"] + sources
    assert "&lt;img src=x onerror=&quot;window.__pwned=2&quot;&gt;" in sources


# -- example questions and the index page ----------------------------------------------------------


def test_examples_come_from_the_corpus_and_each_is_answered_by_its_article(demo_pipeline):
    examples = example_questions(demo_pipeline.index, demo_pipeline.retriever)
    assert 3 <= len(examples) <= 6
    titles = {c.article_title.lower(): c for c in demo_pipeline.index.chunks if c.article_title}
    documents = set()
    for q in examples:
        title = q.removeprefix("Quy định về ").removesuffix(" như thế nào?").lower()
        assert title in titles, q
        answer = demo_pipeline.answer({"question": q})
        assert not answer.refused and answer.citations[0].article == titles[title].article, q
        documents.add(titles[title].document)
    assert len(documents) >= 2  # spread over the corpus, not all from one document
    assert example_questions(None) and example_questions(None)[0].endswith("?")


def test_index_page_describes_the_loaded_index(app, demo_pipeline):
    page = app.index_page()
    m = demo_pipeline.index.manifest
    assert f"<b>{m.document_count}</b> tài liệu" in page and f"<b>{m.chunk_count}</b> đoạn" in page
    assert "all-MiniLM-L6-v2" in page and "(384 chiều)" in page and m.created_at[:10] in page
    assert "quy-dinh-hoc-bong.md" in page and "Quy định về học bổng khuyến khích học tập" in page
    assert "còn trống" in app.work_index_page()


# -- uploads into the working index -----------------------------------------------------------------


def test_upload_ingests_into_a_separate_working_index_that_the_chat_can_use(app, demo_pipeline, tmp_path):
    main_before = demo_pipeline.index.manifest.to_dict()
    messages, _, _, _ = ask(app, "Sinh viên gửi xe máy ở đâu?", None, choice=WORK_CHOICE)[-1]
    assert "Chỉ mục làm việc còn trống" in messages[-1]["content"]

    new = tmp_path / "Quy định nhà xe.md"
    new.write_text("# Quy định về nhà xe\n\nĐiều 1. Giờ mở cửa nhà xe\nNhà xe khu B mở cửa từ 6 giờ đến 22 giờ.\n\n"
                   "Điều 2. Phí gửi xe\nPhí gửi xe máy là 3.000 đồng mỗi lượt.\n", encoding="utf-8")
    progress = []
    outs = list(app.upload([str(new)], progress=lambda f, desc: progress.append((f, desc))))
    assert "đang đọc" in outs[0][0]  # progress is shown while the file is processed
    status, page = outs[-1]
    assert re.search(r"✓ \(1/1\) Quy định nhà xe.md: đã thêm — 1 trang, \d+ đoạn\.", status), status
    assert "Chỉ mục làm việc" in page and "Quy định nhà xe.md" in page
    assert progress[0][0] == 0.0 and progress[-1][0] == 1.0
    assert (app.work_dir / "uploads" / "Quy định nhà xe.md").exists()

    messages, _, sources, _ = ask(app, "Phí gửi xe máy là bao nhiêu?", None, choice=WORK_CHOICE)[-1]
    assert "Điều 2. Phí gửi xe" in messages[-1]["content"] and "Quy định về nhà xe" in sources
    # The deployment's index is untouched, and still answers the main choice.
    assert demo_pipeline.index.manifest.to_dict() == main_before
    assert "Điều 8" in ask(app, "Một kỳ em được đăng ký tối đa bao nhiêu tín chỉ?")[-1][0][-1]["content"]
    # Uploading the same file again changes nothing.
    assert "không đổi" in list(app.upload([str(new)]))[-1][0]


def test_upload_refuses_wrong_types_and_oversized_files(demo_pipeline, tmp_path, settings_factory):
    settings = settings_factory(demo_pipeline.settings.index_dir, max_file_mb=0.001)  # about 1 KB
    app = ChatApp(settings, LocalBackend(demo_pipeline), index=demo_pipeline.index, embedder=demo_pipeline.embedder,
                  work_dir=tmp_path / "work")
    exe = tmp_path / "virus.exe"
    exe.write_bytes(b"MZ")
    big = tmp_path / "big.txt"
    big.write_text("Điều 1. A\n" + "x" * 5000, encoding="utf-8")
    status, page = list(app.upload([str(exe), str(big)]))[-1]
    assert "✗ virus.exe: loại tệp không được hỗ trợ" in status
    assert "✗ big.txt: 0.0 MB, vượt giới hạn 0.001 MB" in status and "RAG_MAX_FILE_MB" in status
    assert not (tmp_path / "work" / "index").exists() and "còn trống" in page
    assert list(app.upload([]))[-1][0] == "Chưa chọn tệp nào."


def test_upload_applies_the_loaders_checks_before_copying(demo_pipeline, tmp_path, settings_factory):
    """A DOCX that is small on disk but expands past RAG_MAX_UNZIPPED_MB, and a JSON over RAG_MAX_JSON_MB, are
    refused with the loader's reasons before they are copied or ingested (the same checks as `rag ingest`)."""
    import zipfile

    settings = settings_factory(demo_pipeline.settings.index_dir, max_unzipped_mb=1, max_json_mb=0.001)
    app = ChatApp(settings, LocalBackend(demo_pipeline), index=demo_pipeline.index, embedder=demo_pipeline.embedder,
                  work_dir=tmp_path / "work")
    bomb = tmp_path / "bomb.docx"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", "<w:document/>")
        z.writestr("word/media/zeros.bin", b"\0" * (3 * 1024 * 1024))
    assert bomb.stat().st_size < 100_000
    big = tmp_path / "big.json"
    big.write_text('{"text": "' + "x" * 5000 + '"}', encoding="utf-8")
    status, page = list(app.upload([str(bomb), str(big)]))[-1]
    assert "✗ bomb.docx: bomb.docx expands to 3 MB, over the 1 MB limit" in status, status
    assert "RAG_MAX_UNZIPPED_MB" in status
    assert "✗ big.json:" in status and "RAG_MAX_JSON_MB" in status, status
    assert not (tmp_path / "work" / "uploads" / "bomb.docx").exists()
    assert not (tmp_path / "work" / "index").exists() and "còn trống" in page


# -- remote backends with honest fakes of the official clients ----------------------------------------


def ev(kind, data=""):
    return SimpleNamespace(event=kind, data=data, id="1", retry=None)


class FakeReplicate:
    """The slice of ``replicate.Client`` the backend uses: predictions created, streamed (SSE), cancelled.

    Like the real client, an ``error`` event raises RuntimeError(data) while iterating
    the stream, and the stream ends after ``done``.
    """

    def __init__(self, events=(), create_error=None, block=None):
        self.calls, self.events, self.create_error, self.block = [], list(events), create_error, block
        self.models = SimpleNamespace(predictions=SimpleNamespace(create=self._create_for_model), get=self._get_model)
        self.predictions = SimpleNamespace(create=self._create_for_version)

    def _create(self, call):
        self.calls.append(call)
        if self.create_error:
            raise self.create_error
        return SimpleNamespace(id="p1", stream=self._stream, cancel=lambda: self.calls.append(("cancel", "p1")))

    def _get_model(self, key):
        self.calls.append(("get_model", key))
        if self.create_error:
            raise self.create_error
        return SimpleNamespace(owner=key.split("/")[0], name=key.split("/")[1])

    def _create_for_model(self, model, input, **params):
        return self._create(("create", model, input, params))

    def _create_for_version(self, version, input, **params):
        return self._create(("create_version", version, input, params))

    def _stream(self):
        self.calls.append(("stream", "p1"))
        if self.block is not None:
            self.block.wait(5)
        for e in self.events:
            if e.event == "error":
                raise RuntimeError(e.data)
            yield e
            if e.event == "done":
                return


class HTTPStatusError(Exception):
    """The shape of ``replicate.exceptions.ReplicateError``: a status and a detail."""

    def __init__(self, status, detail=""):
        super().__init__(f"status {status}")
        self.status, self.detail = status, detail


REPLICATE_TEXT = ("Theo Điều 8, Khoản 2, mỗi học kỳ chính được đăng ký tối đa 24 tín chỉ.\n\nNguồn:\n"
                  "[1] Quy chế đào tạo trình độ đại học, Điều 8, Khoản 2, trang 1")


def remote_app(backend, tmp_path, settings_factory):
    return ChatApp(settings_factory(), backend, work_dir=tmp_path / "work")


def test_replicate_backend_streams_and_reads_the_sources_block(tmp_path, settings_factory):
    pieces = [REPLICATE_TEXT[:30], REPLICATE_TEXT[30:90], REPLICATE_TEXT[90:]]
    client = FakeReplicate([ev("output", p) for p in pieces] + [ev("done", "{}")])
    app = remote_app(ReplicateBackend("uni/quy-che-bot", client), tmp_path, settings_factory)
    outs = ask(app, "Một kỳ em được đăng ký tối đa bao nhiêu tín chỉ?", None, top_k=3)
    streamed = [o[0][-1]["content"] for o in outs[1:-1]]  # pieces that arrive together are shown together
    assert streamed[-1] == REPLICATE_TEXT and all(REPLICATE_TEXT.startswith(t) for t in streamed)
    messages, state, sources, _ = outs[-1]
    assert "[1] Quy chế đào tạo trình độ đại học, Điều 8, Khoản 2, trang 1" in sources
    assert "Máy chủ không gửi kèm đoạn trích" in sources
    assert state["history"][1]["content"] == REPLICATE_TEXT.split("\n\nNguồn:")[0]
    kind, model, inputs, params = client.calls[0]
    assert (kind, model, params) == ("create", "uni/quy-che-bot", {"stream": True})
    assert inputs == {"prompt": "Một kỳ em được đăng ký tối đa bao nhiêu tín chỉ?", "num_passages": 3,
                      "max_tokens": 512, "temperature": 0.0}
    ask(app, "Còn học kỳ hè?", state)
    follow = client.calls[-2][2]
    assert json.loads(follow["history"])[0]["content"].startswith("Một kỳ em")


def test_replicate_version_pinned_model_and_bad_names(settings_factory):
    client = FakeReplicate([ev("output", REFUSAL), ev("done", "{}")])
    backend = ReplicateBackend("uni/bot:5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa", client)
    events = list(backend.stream(AskRequest(question="Tỉ giá đô la?").validate(settings_factory()),
                                 threading.Event()))
    assert client.calls[0][0:2] == ("create_version",
                                    "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa")
    assert events[-1].answer.refused and events[-1].answer.citations == []
    for bad in ("bot", "a/b/c", "a b/c"):
        with pytest.raises(ConfigError, match="owner/model"):
            ReplicateBackend(bad, client)


@pytest.mark.parametrize("error, expected", [
    (HTTPStatusError(401, "Invalid token"), ["REPLICATE_API_TOKEN", "HTTP 401", "từ chối khóa"]),
    (HTTPStatusError(404, "not found"), ["HTTP 404", "không tìm thấy mô hình"]),
    (HTTPStatusError(422, "top_k: must be at most 10"), ["HTTP 422", "top_k: must be at most 10"]),
    (HTTPStatusError(503), ["HTTP 503", "thử lại sau"]),
    (ConnectionError("Name or service not known"), ["Không kết nối được tới Replicate", "network"]),
])
def test_replicate_errors_become_plain_messages(tmp_path, settings_factory, error, expected):
    client = FakeReplicate(create_error=error)
    app = remote_app(ReplicateBackend("uni/bot", client), tmp_path, settings_factory)
    messages, state, sources, _ = ask(app, "Học bổng?", None)[-1]
    text = messages[-1]["content"]
    assert text.startswith("⚠️") and all(x in text for x in expected), text
    assert "Traceback" not in text and "r8_" not in text and state["history"] == []


def test_replicate_model_error_mid_stream(tmp_path, settings_factory):
    client = FakeReplicate([ev("output", "Theo "), ev("error", '{"detail": "CUDA out of memory"}')])
    app = remote_app(ReplicateBackend("uni/bot", client), tmp_path, settings_factory)
    text = ask(app, "Học bổng?", None)[-1][0][-1]["content"]
    assert "Replicate báo lỗi khi trả lời: CUDA out of memory" in text


def test_replicate_stop_cancels_the_prediction(settings_factory):
    gate = threading.Event()
    client = FakeReplicate([ev("output", "x")], block=gate)  # the stream waits, as for a cold start
    backend = ReplicateBackend("uni/bot", client)
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        list(backend.stream(AskRequest(question="Học bổng?").validate(settings_factory()), cancel))
    gate.set()
    assert time.monotonic() - t0 < 3 and ("cancel", "p1") in client.calls


def test_start_up_check_stops_on_a_bad_key_or_name_and_warns_on_an_outage(caplog):
    with pytest.raises(ConfigError, match="REPLICATE_API_TOKEN"):
        ReplicateBackend("uni/bot", FakeReplicate(create_error=HTTPStatusError(401))).check()
    with pytest.raises(ConfigError, match="HTTP 404"):
        RunPodBackend(FakeRunPod([], run_error=HTTPStatusError(404))).check()
    client = FakeReplicate(create_error=ConnectionError("no route to host"))
    ReplicateBackend("uni/bot:5c7d5dc6dd8b", client).check()  # the page still starts…
    assert client.calls == [("get_model", "uni/bot")] and "Could not reach Replicate" in caplog.text  # …and says why
    endpoint = FakeRunPod([])
    RunPodBackend(endpoint).check()
    assert endpoint.calls == [("health",)]


def test_replicate_token_is_required_at_start(monkeypatch):
    with pytest.raises(ConfigError, match="REPLICATE_API_TOKEN is not set"):
        ReplicateBackend.from_env("uni/bot", {})
    with pytest.raises(ConfigError, match="RUNPOD_API_KEY is not set"):
        RunPodBackend.from_env("abc123", {})
    with pytest.raises(ConfigError, match="not both"):
        make_backend(None, replicate="a/b", runpod="x", env={})


class FakeRunPod:
    """The slice of ``runpod.Endpoint`` the backend uses: ``run`` (a Job with ``job_id``/``cancel``),
    and ``rp_client.get`` on the ``stream``/``status`` routes, answering as the serverless API does."""

    endpoint_id = "ep42"

    def __init__(self, stream_states, status=None, run_error=None):
        self.calls, self.states, self.status, self.run_error = [], list(stream_states), status or {}, run_error
        self.rp_client = self

    def run(self, request_input):
        self.calls.append(("run", request_input))
        if self.run_error:
            raise self.run_error
        return SimpleNamespace(job_id="job-1", cancel=lambda: self.calls.append(("cancel", "job-1")))

    def health(self, timeout=3):
        self.calls.append(("health",))
        if self.run_error:
            raise self.run_error
        return {"jobs": {"inQueue": 0}, "workers": {"idle": 1}}

    def get(self, endpoint, timeout=10):
        self.calls.append(("get", endpoint))
        if "/status/" in endpoint:
            return self.status
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


FINAL = {"answer": "Theo Điều 21, sinh viên cần tích lũy đủ 130 tín chỉ.", "refused": False,
         "citations": [{"document": "Quy chế đào tạo trình độ đại học", "source": "quy-che-dao-tao.md", "page": 1,
                        "chapter": None, "article": "21", "article_title": "Điều kiện xét và công nhận tốt nghiệp",
                        "clause": "1", "point": None}],
         "unsupported_citations": [], "mode": "llm", "finish_reason": "stop",
         "usage": {"prompt_tokens": 812, "completion_tokens": 40}, "timings": {"retrieve_ms": 21.0, "total_ms": 900.0}}


def test_runpod_backend_streams_text_then_the_final_answer(tmp_path, settings_factory):
    endpoint = FakeRunPod([
        {"status": "IN_QUEUE", "stream": []},
        {"status": "IN_PROGRESS", "stream": [{"output": {"text": "Theo Điều 21, "}}]},
        {"status": "COMPLETED", "stream": [{"output": {"text": "sinh viên cần tích lũy đủ 130 tín chỉ."}},
                                           {"output": FINAL}]},
    ])
    app = remote_app(RunPodBackend(endpoint, poll_s=0), tmp_path, settings_factory)
    outs = ask(app, "Điều kiện tốt nghiệp là gì?", None, max_new_tokens=200)
    streamed = [o[0][-1]["content"] for o in outs[1:-1]]  # pieces that arrive together are shown together
    assert streamed[-1] == FINAL["answer"] and all(FINAL["answer"].startswith(t) for t in streamed)
    messages, state, sources, _ = outs[-1]
    label = "Quy chế đào tạo trình độ đại học, Điều 21, Khoản 1, trang 1"
    assert messages[-1]["content"] == FINAL["answer"] + "\n\nNguồn:\n[1] " + label
    assert f"[1] {label}" in sources and "token vào/ra 812/40" in sources and "chế độ LLM" in sources
    run = endpoint.calls[0]
    assert run == ("run", {"input": {"prompt": "Điều kiện tốt nghiệp là gì?", "num_passages": 5, "max_tokens": 200,
                                     "temperature": 0.0, "stream": True}})
    assert ("get", "ep42/stream/job-1") in endpoint.calls


def test_runpod_aggregated_output_when_the_stream_missed_it(settings_factory):
    endpoint = FakeRunPod([{"status": "COMPLETED", "stream": []}],
                          status={"status": "COMPLETED", "output": [{"text": FINAL["answer"]}, FINAL]})
    events = list(RunPodBackend(endpoint, poll_s=0).stream(
        AskRequest(question="Tốt nghiệp?").validate(settings_factory()), threading.Event()))
    assert events[0] == Delta(FINAL["answer"]) and events[-1].answer.citations[0].article == "21"


@pytest.mark.parametrize("endpoint, expected", [
    (FakeRunPod([{"status": "COMPLETED", "stream": [{"output": {"error": "invalid_input: 'question' is empty"}}]}]),
     "RunPod báo lỗi khi trả lời: invalid_input: 'question' is empty"),
    (FakeRunPod([{"status": "FAILED", "stream": []}], status={"status": "FAILED", "error": "worker_not_ready: x"}),
     "RunPod reported an error while answering: worker_not_ready: x"),
    (FakeRunPod([], run_error=RuntimeError("401 Unauthorized | Make sure Runpod API key is set and valid.")),
     "RunPod rejected the API key (HTTP 401): check RUNPOD_API_KEY."),
    (FakeRunPod([], run_error=HTTPStatusError(404)), "RunPod does not know this endpoint (HTTP 404)"),
])
def test_runpod_errors_become_plain_messages(tmp_path, settings_factory, endpoint, expected):
    app = remote_app(RunPodBackend(endpoint, poll_s=0), tmp_path, settings_factory)
    text = ask(app, "Học bổng?", None)[-1][0][-1]["content"]
    assert text.startswith("⚠️") and expected in text, text


def test_runpod_stop_and_time_limit_cancel_the_job(settings_factory):
    req = AskRequest(question="Học bổng?").validate(settings_factory())
    endpoint = FakeRunPod([{"status": "IN_QUEUE", "stream": []}])  # never leaves the queue
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    with pytest.raises(Cancelled):
        list(RunPodBackend(endpoint, poll_s=0.01).stream(req, cancel))
    assert endpoint.calls[-1] == ("cancel", "job-1")
    endpoint = FakeRunPod([{"status": "IN_QUEUE", "stream": []}])
    with pytest.raises(BackendError, match="did not answer within 0.2 s"):
        list(RunPodBackend(endpoint, poll_s=0.01, timeout_s=0.2).stream(req, threading.Event()))
    assert endpoint.calls[-1] == ("cancel", "job-1")


def test_stop_in_the_page_cancels_the_remote_job(tmp_path, settings_factory):
    """Stop makes Gradio cancel the task running ``respond``; the queued RunPod job is cancelled at once."""
    endpoint = FakeRunPod([{"status": "IN_QUEUE", "stream": []}])  # a cold start that never ends
    app = remote_app(RunPodBackend(endpoint, poll_s=0.01), tmp_path, settings_factory)

    async def press_stop():
        answer = app.respond("Học bổng?", None)
        await answer.__anext__()  # the pending bubble
        task = asyncio.ensure_future(answer.__anext__())
        await asyncio.sleep(0.3)
        assert not task.done() and ("run", endpoint.calls[0][1]) == endpoint.calls[0]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await answer.aclose()

    asyncio.run(press_stop())
    deadline = time.monotonic() + 3
    while ("cancel", "job-1") not in endpoint.calls and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ("cancel", "job-1") in endpoint.calls
    polls = sum(1 for c in endpoint.calls if c[0] == "get")
    time.sleep(0.2)
    assert sum(1 for c in endpoint.calls if c[0] == "get") == polls  # and polling stopped


# -- the real client libraries against a fake HTTP layer -----------------------------------------------


def test_real_replicate_client_over_a_fake_transport(settings_factory):
    replicate = pytest.importorskip("replicate")
    import httpx

    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            if request.headers["authorization"] != "Bearer r8_good":
                return httpx.Response(401, json={"title": "Unauthenticated", "detail": "Invalid token."})
            return httpx.Response(201, json={
                "id": "p1", "model": "uni/bot", "version": "v1", "status": "starting", "input": {}, "output": None,
                "logs": "", "error": None, "metrics": {}, "created_at": None, "started_at": None,
                "completed_at": None, "urls": {"stream": "https://stream.replicate.com/v1/files/p1",
                                               "cancel": "https://api.replicate.com/v1/predictions/p1/cancel"}})
        body = "".join(f"event: output\nid: {i}\ndata: {line}\n\n" for i, line in enumerate(REPLICATE_TEXT.split("\n")))
        # Replicate sends a multi-line output as several data lines of one event; one line per event here.
        return httpx.Response(200, text=body + "event: done\nid: 99\ndata: {}\n\n",
                              headers={"content-type": "text/event-stream"})

    req = AskRequest(question="Đăng ký tối đa bao nhiêu tín chỉ?").validate(settings_factory())
    good = ReplicateBackend("uni/bot", replicate.Client(api_token="r8_good", transport=httpx.MockTransport(handler)))
    events = list(good.stream(req, threading.Event()))
    assert seen[0].url.path == "/v1/models/uni/bot/predictions"
    assert json.loads(seen[0].content) == {"input": {"prompt": "Đăng ký tối đa bao nhiêu tín chỉ?", "num_passages": 5,
                                                     "max_tokens": 512, "temperature": 0.0}, "stream": True}
    assert seen[1].url.host == "stream.replicate.com" and isinstance(events[-1], Final)
    assert len([e for e in events if isinstance(e, Delta)]) == len(REPLICATE_TEXT.split("\n"))

    bad = ReplicateBackend("uni/bot", replicate.Client(api_token="r8_bad", transport=httpx.MockTransport(handler)))
    with pytest.raises(BackendError, match="REPLICATE_API_TOKEN") as err:
        list(bad.stream(req, threading.Event()))
    assert "r8_bad" not in str(err.value)


def test_real_runpod_endpoint_over_a_fake_session(settings_factory):
    runpod = pytest.importorskip("runpod")
    import requests
    from requests.adapters import BaseAdapter

    seen = []

    class Adapter(BaseAdapter):
        def send(self, request, **kwargs):
            seen.append(request)
            path = request.path_url
            if path.endswith("/run"):
                data = {"id": "job-9", "status": "IN_QUEUE"}
            elif "/stream/" in path:
                data = {"status": "COMPLETED", "stream": [{"output": {"text": FINAL["answer"]}}, {"output": FINAL}]}
            else:
                data = {}
            r = requests.Response()
            r.status_code, r._content, r.url, r.request = 200, json.dumps(data).encode(), request.url, request
            r.headers["content-type"] = "application/json"
            return r

        def close(self):
            pass

    endpoint = runpod.Endpoint("ep42", api_key="rp_key")
    endpoint.rp_client.rp_session.mount("https://", Adapter())
    req = AskRequest(question="Tốt nghiệp?").validate(settings_factory())
    events = list(RunPodBackend(endpoint, poll_s=0).stream(req, threading.Event()))
    assert seen[0].url.endswith("/v2/ep42/run") and seen[0].headers["Authorization"] == "Bearer rp_key"
    assert json.loads(seen[0].body)["input"]["stream"] is True
    assert seen[1].url.endswith("/v2/ep42/stream/job-9")
    assert events[-1].answer.citations[0].article == "21"


# -- wiring ------------------------------------------------------------------------------------------


def test_page_renders_text_only_and_keeps_analytics_off(app):
    import gradio as gr

    from rag.ui import build_blocks

    demo = build_blocks(app)
    comps = list(demo.blocks.values())
    chat = next(c for c in comps if isinstance(c, gr.Chatbot))
    assert chat.render_markdown is False and chat.sanitize_html is True and chat.latex_delimiters == []
    assert "share" not in chat.buttons  # that button posts the conversation to Hugging Face
    sliders = {c.elem_id: c for c in comps if isinstance(c, gr.Slider)}
    lim = request_limits(app.settings)
    for elem_id, name in (("rag-top-k", "top_k"), ("rag-max-new-tokens", "max_new_tokens"),
                          ("rag-temperature", "temperature")):
        assert (sliders[elem_id].minimum, sliders[elem_id].maximum, sliders[elem_id].value) == lim[name]
    assert demo.analytics_enabled is False
    from gradio.analytics import analytics_enabled

    assert analytics_enabled() is False


def test_importing_the_ui_loads_no_heavy_library():
    code = ("import sys, rag.ui, rag.ui.remote, rag.cli; "
            "print(sorted(m for m in ('gradio', 'replicate', 'runpod', 'torch', 'chromadb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_cli_ui_fails_at_start_without_a_token(monkeypatch, capsys):
    from rag.cli import main

    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    assert main(["ui", "--replicate", "uni/bot"]) == 2
    assert "REPLICATE_API_TOKEN is not set" in capsys.readouterr().err
    assert main(["ui", "--runpod", "abc123"]) == 2
    assert "RUNPOD_API_KEY is not set" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ui", "--replicate", "a/b", "--runpod", "x"])
