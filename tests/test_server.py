"""`rag serve`: the local OpenAI-compatible server, driven by the official `openai` client over HTTP.

The app runs under uvicorn on 127.0.0.1 (tests/_runpod_helpers.ThreadServer) over the demo
index, extractive and with the tiny random LLM (tests/_models.py); one test starts the real
`rag serve` command. RunPod's /openai/v1 route runs the same rag.openai_compat code
(tests/test_runpod.py drives it with the same client).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from _models import tiny_chat_model, tiny_models  # noqa: F401 - fixtures
from _runpod_helpers import ThreadServer, free_port

from rag.pipeline import Pipeline
from rag.server import create_app

openai = pytest.importorskip("openai")

REPO = Path(__file__).resolve().parents[1]
GRADUATION = "Điều kiện tốt nghiệp là gì?"


@pytest.fixture(scope="module")
def extractive(demo_pipeline):
    with ThreadServer(create_app(demo_pipeline)) as server:
        yield server


@pytest.fixture(scope="module")
def llm(demo_index_dir, embedder, settings_factory, tiny_chat_model):  # noqa: F811
    pipeline = Pipeline.from_settings(settings_factory(demo_index_dir, llm=str(tiny_chat_model)), embedder=embedder)
    with ThreadServer(create_app(pipeline)) as server:
        yield server


def client(server) -> "openai.OpenAI":
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def assert_openai_error(r: httpx.Response, status: int, code: str, param=None) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    e = body["error"]
    assert e["code"] == code and e["param"] == param, e
    assert e["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert "Traceback" not in e["message"] and str(REPO) not in e["message"] and "/tmp/" not in e["message"]
    return e["message"]


def test_models_health_and_a_completion_with_its_sources(extractive, demo_pipeline):
    c = client(extractive)
    assert [m.id for m in c.models.list().data] == ["rag-extractive"]
    health = httpx.get(f"{extractive.url}/health").json()
    assert health == {"status": "ok", "model": "rag-extractive", "chunks": len(demo_pipeline.index)}
    resp = c.chat.completions.create(model="rag-extractive", messages=[{"role": "user", "content": GRADUATION}])
    reference = demo_pipeline.answer({"question": GRADUATION})
    assert resp.choices[0].message.content.startswith(reference.text)
    assert resp.choices[0].finish_reason == "stop" and resp.model == "rag-extractive"
    sources = resp.model_extra["sources"]  # rag's extra field, as on RunPod
    assert [s["article"] for s in sources] == [c.article for c in reference.citations]


def test_streaming_gives_the_same_answer_piece_by_piece(llm):
    c = client(llm)
    kwargs = dict(model="x", messages=[{"role": "user", "content": GRADUATION}], max_tokens=16)
    whole = c.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(c.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole  # greedy: the same answer, sources block included
    assert sum(1 for ch in chunks if ch.choices and ch.choices[0].delta.content) >= 3  # streamed, not one blob
    assert chunks[-1].usage.completion_tokens > 0 and chunks[-1].choices == []
    assert all("usage" in ch.model_fields_set and ch.usage is None for ch in chunks[:-1])  # null, as OpenAI's
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finish in (["stop"], ["length"])


def test_defaults_that_change_nothing_are_accepted_and_others_refused(extractive):
    c = client(extractive)
    ok = c.chat.completions.create(model="m", messages=[{"role": "user", "content": GRADUATION}], n=1,
                                   logprobs=False, user="student-42", response_format={"type": "text"})
    assert "Điều 21" in ok.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": GRADUATION}], n=2)
    assert e.value.status_code == 400 and "'n' must be 1" in str(e.value)
    with pytest.raises(openai.BadRequestError, match="'logprobs' is not supported"):
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": GRADUATION}], logprobs=True)
    with pytest.raises(openai.BadRequestError, match="'response_format' may only be"):
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": GRADUATION}],
                                  response_format={"type": "json_object"})
    with pytest.raises(openai.BadRequestError, match="unsupported field.s.: tools"):
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": GRADUATION}],
                                  tools=[{"type": "function", "function": {"name": "f"}}])


def test_models_retrieve_and_strict_openai_fields(extractive):
    c = client(extractive)
    model = c.models.list().data[0].id
    assert c.models.retrieve(model).id == model
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("gpt-4o")
    ask = {"model": "m", "messages": [{"role": "user", "content": GRADUATION}]}
    for extra, param in (({"stream_options": {"include_usage": "no"}, "stream": True}, "stream_options"),
                         ({"stream_options": {"include_usage": True}}, "stream_options"),
                         ({"n": True}, "n"), ({"logprobs": 0}, "logprobs"), ({"user": 5}, "user"),
                         ({"presence_penalty": False}, "presence_penalty")):
        r = httpx.post(f"{extractive.url}/v1/chat/completions", json={**ask, **extra})
        assert_openai_error(r, 400, "invalid_input", param)
    r = httpx.post(f"{extractive.url}/v1/chat/completions",
                   json={"messages": [{"role": "user", "content": GRADUATION, "name": 5}]})
    assert "'messages[0].name' must be a string" in assert_openai_error(r, 400, "invalid_input", "messages")


def test_errors_have_openais_shape_and_status(extractive):
    url = extractive.url
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": "m", "max_tokens": 0,
                                                       "messages": [{"role": "user", "content": GRADUATION}]})
    assert "'max_tokens'=0 is out of range" in assert_openai_error(r, 400, "invalid_input", "max_tokens")
    r = httpx.post(f"{url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert "not valid JSON" in assert_openai_error(r, 400, "invalid_input")
    r = httpx.post(f"{url}/v1/chat/completions", content=b'{"n": ' + b"9" * 5000 + b"}")
    assert "a number with more digits than can be read" in assert_openai_error(r, 400, "invalid_input")
    r = httpx.post(f"{url}/v1/chat/completions", json={"messages": []})
    assert_openai_error(r, 400, "invalid_input", "messages")
    # a message's problem names it by its place in the client's 'messages', system messages counted
    messages = [{"role": "system", "content": "Trả lời ngắn."}, {"role": "user", "content": "a" * 9000},
                {"role": "assistant", "content": "…"}, {"role": "user", "content": GRADUATION}]
    r = httpx.post(f"{url}/v1/chat/completions", json={"messages": messages})
    assert "'messages[1].content' is longer than 8000" in assert_openai_error(r, 400, "invalid_input", "messages")
    r = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "system", "content": "s" * 9000},
                                                                    {"role": "user", "content": GRADUATION}]})
    assert "'messages' of role 'system', together, is longer" in assert_openai_error(r, 400, "invalid_input",
                                                                                         "messages")
    r = httpx.post(f"{url}/v1/chat/completions", json={"messages": messages[:3] + [{"role": "user", "content": "?!"}]})
    assert "'messages[3].content' (the question)" in assert_openai_error(r, 400, "invalid_input", "messages")
    r = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": GRADUATION}],
                                                       "temperature": 10 ** 400})
    assert_openai_error(r, 400, "invalid_input", "temperature")
    r = httpx.post(f"{url}/v1/completions", json={"prompt": "x"})
    assert "no such route: POST /v1/completions" in assert_openai_error(r, 404, "unknown_route")
    r = httpx.get(f"{url}/v1/chat/completions")
    assert_openai_error(r, 405, "method_not_allowed")
    r = httpx.post(f"{url}/v1/chat/completions", content=b"x" * 1_000_001)
    assert "the limit is 1000000" in assert_openai_error(r, 413, "invalid_input")


def _raw_post(url: str, head: str, body_parts=()) -> tuple[int, dict]:
    """POST with hand-written headers over a socket; the status and JSON body of the answer."""
    import socket
    from urllib.parse import urlparse

    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as sock:  # no answer: a timeout, not a hang
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"{head}\r\n".encode())
        try:
            for part in body_parts:
                sock.sendall(part)
        except OSError:  # the server answered and closed while the body was still coming
            pass
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            got = sock.recv(65536)
            if not got:
                break
            data += got
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1][:_length(data)])


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 1 << 30


def test_a_huge_content_length_is_refused_before_the_body_is_read(extractive):
    """10 GB announced, nothing sent: the answer comes at once (the body is never awaited)."""
    status, body = _raw_post(extractive.url, "Content-Length: 10000000000\r\n")
    assert status == 413 and body["error"]["code"] == "invalid_input", body
    assert "10000000000 bytes; the limit is 1000000" in body["error"]["message"]


def test_a_chunked_body_is_read_no_further_than_the_limit(extractive):
    sent = []

    def chunks():
        for _ in range(64):  # 4 MB offered, 64 KB a chunk
            sent.append(1)
            yield b"10000\r\n" + b"x" * 0x10000 + b"\r\n"

    status, body = _raw_post(extractive.url, "Transfer-Encoding: chunked\r\n", chunks())
    assert status == 413 and "the limit is 1000000" in body["error"]["message"], body
    small = json.dumps({"model": "m", "messages": [{"role": "user", "content": GRADUATION}]}).encode()
    status, body = _raw_post(extractive.url, "Transfer-Encoding: chunked\r\n",
                             [f"{len(small):x}\r\n".encode() + small + b"\r\n0\r\n\r\n"])
    assert status == 200 and "Điều 21" in body["choices"][0]["message"]["content"], body


def test_a_body_that_does_not_arrive_in_time_is_refused(extractive, monkeypatch):
    """Slow-loris: 100 bytes announced, 1 sent, the connection held open: answered 408, connection freed."""
    import rag.server

    monkeypatch.setattr(rag.server, "BODY_TIMEOUT_S", 1.0)
    status, body = _raw_post(extractive.url, "Content-Length: 100\r\n", [b"{"])
    assert status == 408 and body["error"]["code"] == "invalid_input", body
    assert "did not arrive within 1 s" in body["error"]["message"]


def test_a_failure_while_answering_is_a_500_without_internals(demo_pipeline):
    class Broken:
        settings = demo_pipeline.settings
        index = demo_pipeline.index

        def stream(self, request, cancel=None):
            raise RuntimeError(f"boom in {REPO}/rag/secret.py")

    with ThreadServer(create_app(Broken())) as server:
        r = httpx.post(f"{server.url}/v1/chat/completions",
                       json={"model": "m", "messages": [{"role": "user", "content": GRADUATION}]})
        message = assert_openai_error(r, 500, "internal_error")
        assert "RuntimeError" in message and "boom" not in message
        with pytest.raises(openai.InternalServerError):
            client(server).chat.completions.create(model="m", messages=[{"role": "user", "content": GRADUATION}])


@pytest.mark.slow
def test_rag_serve_command_serves_the_index_it_is_given(demo_index_dir):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "rag.cli", "serve", "--index", str(demo_index_dir),
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "rag serve did not start"
                time.sleep(0.5)
        assert health["status"] == "ok" and health["chunks"] > 0
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        resp = c.chat.completions.create(model="rag-extractive", messages=[{"role": "user", "content": GRADUATION}])
        assert "Điều 21" in resp.choices[0].message.content
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"over index {demo_index_dir} ({health['chunks']} chunks) at http://127.0.0.1:{port}/v1" in out


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_stops_its_generation(demo_pipeline, stream):
    """A client that times out (and would retry) must not leave its answer generating, holding the model."""
    import threading

    from rag.pipeline import Delta

    stopped, finished = threading.Event(), threading.Event()

    class Slow:
        settings = demo_pipeline.settings
        index = demo_pipeline.index

        def stream(self, request, cancel=None):
            for i in range(100):  # 20 s unless cancelled
                if cancel is not None and cancel.is_set():
                    stopped.set()
                    return
                time.sleep(0.2)
                yield Delta(f"t{i} ")
            finished.set()

    body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": GRADUATION}]}
    with ThreadServer(create_app(Slow())) as server:
        with httpx.Client(timeout=httpx.Timeout(1.0)) as c:
            if stream:  # reads a few events, then closes the connection
                with c.stream("POST", f"{server.url}/v1/chat/completions", json=body) as r:
                    t0 = time.monotonic()
                    for _ in r.iter_bytes():
                        if time.monotonic() - t0 > 1:
                            break
            else:  # waits 1 s for the whole answer, then gives up
                with pytest.raises(httpx.ReadTimeout):
                    c.post(f"{server.url}/v1/chat/completions", json=body)
        assert stopped.wait(5), "generation went on after the client left"
    assert not finished.is_set()
