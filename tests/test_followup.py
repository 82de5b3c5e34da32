"""A follow-up is searched as a standalone query in every entry point, and each one shows the query it used.

The same two turns everywhere, over the demo index (extractive): "Học kỳ chính em được
đăng ký tối đa bao nhiêu tín chỉ?" then "Còn học kỳ hè thì sao?", which is searched as
"Học kỳ hè em được đăng ký tối đa bao nhiêu tín chỉ?" (rag/followup.py). Each test would
fail if its entry point dropped the history or the rewriting: the query would be the
follow-up itself. The rule itself is tested in tests/test_answers.py; the Cog HTTP server
with a history input in tests/test_cog.py (slow).
"""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from rag.texts import CHAT_QUERY_USED, CHAT_RESET

FIRST = "Học kỳ chính em được đăng ký tối đa bao nhiêu tín chỉ?"
FOLLOW = "Còn học kỳ hè thì sao?"
STANDALONE = "Học kỳ hè em được đăng ký tối đa bao nhiêu tín chỉ?"
HISTORY = [{"role": "user", "content": FIRST}, {"role": "assistant", "content": "Theo tài liệu: … tối đa 24 tín chỉ …"}]


def test_rag_chat_json_shows_the_query_and_reset_confirms(demo_index_dir, capsys, monkeypatch):
    from rag.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO(f"{FIRST}\n{FOLLOW}\n/reset\n{FOLLOW}\n/exit\n"))
    assert main(["chat", "--json", "--index", str(demo_index_dir)]) == 0
    captured = capsys.readouterr()
    first, follow, after_reset = [json.loads(line) for line in captured.out.splitlines()]  # stdout: answers only
    assert first["query"] == FIRST
    assert follow["query"] == STANDALONE and not follow["refused"] and "12 tín chỉ" in follow["answer"]
    assert after_reset["query"] == FOLLOW  # the conversation was cleared: nothing to lean on
    assert CHAT_RESET in captured.err


def test_web_chat_searches_the_follow_up_as_a_standalone_query(demo_pipeline, tmp_path):
    from rag.pipeline import Final
    from rag.ui import ChatApp, LocalBackend

    answers = []

    class Recording(LocalBackend):
        def stream(self, request, cancel):
            for event in super().stream(request, cancel):
                if isinstance(event, Final):
                    answers.append(event.answer)
                yield event

    p = demo_pipeline
    app = ChatApp(p.settings, Recording(p), index=p.index, embedder=p.embedder, work_dir=tmp_path / "work",
                  examples=[])

    def ask(question, state=None):
        async def collect():
            return [out async for out in app.respond(question, state)]

        return asyncio.run(collect())[-1]

    _, state, sources, _ = ask(FIRST)
    assert "rag-query" not in sources  # a question that stands alone is searched as it is
    messages, state, sources, _ = ask(FOLLOW, state)
    assert answers[-1].query == STANDALONE and "12 tín chỉ" in messages[-1]["content"]
    assert CHAT_QUERY_USED.format(STANDALONE) in sources


def test_cog_runner_reads_history_and_its_json_shows_the_query(demo_pipeline):
    pytest.importorskip("cog")
    from predict import Runner

    runner = Runner()
    runner.pipeline = demo_pipeline
    runner.record_metric = lambda *a, **k: None
    inputs = {"prompt": FOLLOW, "system_prompt": "", "max_tokens": 512, "temperature": 0.0, "top_p": 1.0,
              "top_k": 0, "stop_sequences": "", "seed": None, "num_passages": None,
              "history": json.dumps(HISTORY, ensure_ascii=False), "output_format": "json", "lora_weights": None,
              "hf_token": None}
    body = json.loads("".join(runner.run(**inputs)))
    assert body["query"] == STANDALONE and not body["refused"] and "12 tín chỉ" in body["answer"]


def _run(worker, job_input) -> list:
    async def go():
        return [out async for out in worker.handler({"id": "followup", "input": job_input})]

    return asyncio.run(go())


def test_runpod_native_history_and_openai_messages(demo_pipeline):
    from runpod_worker.handler import Worker

    worker = Worker(demo_pipeline, max_concurrency=1)
    (final,) = _run(worker, {"prompt": FOLLOW, "history": HISTORY})
    assert final["query"] == STANDALONE and "12 tín chỉ" in final["answer"]
    (resp,) = _run(worker, {"openai_route": "/v1/chat/completions",
                            "openai_input": {"model": "m", "messages": HISTORY + [{"role": "user", "content": FOLLOW}]}})
    assert resp["query"] == STANDALONE and "12 tín chỉ" in resp["choices"][0]["message"]["content"]


def test_rag_serve_openai_route_searches_the_follow_up_as_a_standalone_query(demo_pipeline):
    openai = pytest.importorskip("openai")
    from _runpod_helpers import ThreadServer

    from rag.server import create_app

    with ThreadServer(create_app(demo_pipeline)) as server:
        c = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
        messages = HISTORY + [{"role": "user", "content": FOLLOW}]
        resp = c.chat.completions.create(model="rag-extractive", messages=messages)
        assert resp.model_extra["query"] == STANDALONE and "12 tín chỉ" in resp.choices[0].message.content
        chunks = list(c.chat.completions.create(model="rag-extractive", messages=messages, stream=True))
        assert [ch.model_extra.get("query") for ch in chunks if ch.choices and ch.choices[0].finish_reason] \
            == [STANDALONE]
