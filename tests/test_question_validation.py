"""Questions with no word, lone surrogates and the length limit after NFC, in every entry point:
the request type, the Python API, retrieval itself, the CLI (ask, search, chat), the RunPod worker's
native and OpenAI routes and `rag serve`. (The Cog runner's cases are in test_cog.py's BAD_INPUTS.)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from rag.config import Settings
from rag.errors import InputError
from rag.request import AskRequest

REPO = Path(__file__).resolve().parents[1]
QUESTION = "Điều kiện tốt nghiệp là gì?"
NO_WORD = ["?", "...", "😀🎓", "?!…", " — ", "\u200b\u200b?"]
SURROGATES = ["\ud800", "học bổng \udcff", "\udfff?"]


@pytest.mark.parametrize("q", NO_WORD)
def test_a_question_with_no_word_is_an_input_error(q):
    with pytest.raises(InputError, match="'question' has no words"):
        AskRequest.from_dict({"question": q})


@pytest.mark.parametrize("q", SURROGATES)
def test_lone_surrogates_are_an_input_error(q):
    with pytest.raises(InputError, match="'question' contains invalid characters"):
        AskRequest.from_dict({"question": q})


def test_surrogates_in_history_and_system_prompt_are_refused_too():
    with pytest.raises(InputError, match=r"'history\[0\].content' contains invalid characters"):
        AskRequest.from_dict({"question": QUESTION, "history": [{"role": "user", "content": "a\ud800"}]})
    with pytest.raises(InputError, match="'system_prompt' contains invalid characters"):
        AskRequest.from_dict({"question": QUESTION, "system_prompt": "\udc80"})


def test_length_limit_is_checked_after_nfc():
    s = Settings().with_(max_question_chars=100)
    decomposed = unicodedata.normalize("NFD", "Điều kiện tốt nghiệp ệ ộ ữ " * 3).strip()
    assert len(decomposed) > 100 >= len(unicodedata.normalize("NFC", decomposed))
    req = AskRequest.from_dict({"question": decomposed}, s)  # fits once composed
    assert req.question == unicodedata.normalize("NFC", decomposed)
    expanding = "\ufb2c" * 60  # one character that NFC turns into three
    assert len(expanding) <= 100 < len(unicodedata.normalize("NFC", expanding))
    with pytest.raises(InputError, match="'question' is 180 characters; the limit is 100"):
        AskRequest.from_dict({"question": expanding}, s)
    with pytest.raises(InputError, match="the limit is 100"):
        AskRequest.from_dict({"question": "a" * 10_000_000}, s)  # refused before any normalising


# -- the Python API and retrieval -------------------------------------------------------------
@pytest.mark.parametrize("q", NO_WORD[:3] + SURROGATES[:1])
def test_python_api_refuses_with_an_input_error(demo_pipeline, q):
    for call in (lambda: demo_pipeline.search(q), lambda: demo_pipeline.answer({"question": q}),
                 lambda: list(demo_pipeline.stream({"question": q}))):
        with pytest.raises(InputError):
            call()


def test_retrieval_refuses_a_question_with_no_searchable_word(demo_pipeline):
    for q in NO_WORD:
        result = demo_pipeline.retriever.search(q, 3)
        assert result.refused and result.relevance < demo_pipeline.settings.min_relevance
    scores = demo_pipeline.index.lexical_scores([])
    assert scores.shape == (len(demo_pipeline.index),) and not np.any(scores)


# -- the CLI ------------------------------------------------------------------------------------
def _rag(args: list, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "rag.cli", *args], input=stdin, capture_output=True, env=env,
                          timeout=300)


def test_cli_ask_and_search_refuse_without_traceback(demo_index_dir):
    for args in (["ask", "?", "--json"], ["search", "😀🎓"], ["ask", b"\xff\xfe"], ["search", "...", "--json"]):
        proc = _rag([*args, "--index", str(demo_index_dir)])
        err = proc.stderr.decode("utf-8", "replace")
        assert proc.returncode == 2, (args, err)
        assert "error [invalid_input]: 'question'" in err and "Traceback" not in err, err
        assert not proc.stdout.strip()


def test_cli_search_queries_file_with_bad_lines(demo_index_dir, tmp_path):
    qfile = tmp_path / "q.txt"
    qfile.write_bytes(QUESTION.encode() + b"\n\xff\xfe bad bytes\n")
    proc = _rag(["search", "--queries", str(qfile), "--index", str(demo_index_dir)])
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert "is not UTF-8 text (line 2)" in err and str(qfile) in err


def test_rag_chat_keeps_going_after_bad_questions(demo_index_dir):
    stdin = "?\n😀\n".encode() + b"\xff\n" + f"{QUESTION}\n".encode()
    proc = _rag(["chat", "--index", str(demo_index_dir)], stdin=stdin)
    out, err = proc.stdout.decode(), proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, err
    assert err.count("error [invalid_input]") == 3 and "Traceback" not in out + err
    assert "Nguồn:" in out  # the good question after them is answered


# -- RunPod (native and OpenAI routes) and `rag serve` --------------------------------------------
def _runpod(worker, job_input) -> list:
    async def go():
        return [out async for out in worker.handler({"id": "job", "input": job_input})]

    return asyncio.run(go())


@pytest.mark.parametrize("q", ["?", "😀🎓", "\ud800 học"])
def test_runpod_native_and_openai_routes(demo_pipeline, q):
    from runpod_worker.handler import Worker

    worker = Worker(demo_pipeline, max_concurrency=1)
    chat = {"openai_route": "/v1/chat/completions",
            "openai_input": {"model": "m", "messages": [{"role": "user", "content": q}]}}
    for job_input in ({"prompt": q}, chat):
        (out,) = _runpod(worker, job_input)
        assert set(out) == {"error"}, out
        message = json.loads(out["error"])["error"]["message"] if job_input is chat else out["error"]
        assert message.startswith("invalid_input: "), out
        assert "has no words" in message or "contains invalid characters" in message
        assert "Traceback" not in message


def test_rag_serve_answers_400(demo_pipeline):
    httpx = pytest.importorskip("httpx")
    from _runpod_helpers import ThreadServer

    from rag.server import create_app

    with ThreadServer(create_app(demo_pipeline)) as server:
        for q in ("?", "😀🎓"):
            r = httpx.post(f"{server.url}/v1/chat/completions", timeout=60,
                           json={"model": "m", "messages": [{"role": "user", "content": q}]})
            assert r.status_code == 400, r.text
            assert "has no words" in r.json()["error"]["message"] and "Traceback" not in r.text
        body = b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}'
        r = httpx.post(f"{server.url}/v1/chat/completions", content=body, timeout=60,
                       headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "Traceback" not in r.text, r.text
