"""Every entry point, given bad input or hit by an internal fault, answers with a clear error and nothing else:
no Python traceback, no server path, no host name (rag.errors' one policy).

Entry points run here in-process: the CLI (`rag ask`, `rag search`), the Cog runner (predict.py's Runner and its
error mapping; tests/test_cog_leaks.py runs the real Cog server), the RunPod handler (native and OpenAI inputs,
and the SDK's local API), and the OpenAI route of `rag serve` (rag/server.py over HTTP).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
from pathlib import Path

import httpx
import pytest

from _runpod_helpers import ThreadServer

REPO = Path(__file__).resolve().parents[1]
HOST = socket.gethostname()
QUESTION = "Điều kiện tốt nghiệp là gì?"
LEAKS = re.compile(r"Traceback|File \"|\.py\", line|/work/|/home/|/tmp/|/usr/|/opt/|site-packages|"
                   + re.escape(str(REPO)))
DEEP_LEVELS = 100_000  # past any JSON parser's nesting limit


class Deep:
    """A JSON array nested DEEP_LEVELS deep as text; as a Python object, nested past the recursion limit."""


DEEP = Deep()


def deep_object(levels: int = 5_000):
    x: list = []
    for _ in range(levels):
        x = [x]
    return x


def to_object(x):
    if x is DEEP:
        return deep_object()
    if isinstance(x, list):
        return [to_object(v) for v in x]
    if isinstance(x, dict):
        return {k: to_object(v) for k, v in x.items()}
    return x


def to_json(x) -> str:
    marker = "\u0000deep\u0000"
    text = json.dumps(x, ensure_ascii=False, default=lambda v: marker)
    return text.replace(json.dumps(marker), "[" * DEEP_LEVELS + "]" * DEEP_LEVELS)


# (id, question, history): every one is the client's fault, so the answer is an invalid_input error
BAD = [
    ("no_word", "?", []),
    ("emoji_only", "😀🎓", []),
    ("empty", "", []),
    ("lone_surrogate", "học bổng \udcff", []),
    ("too_long", "a" * 2500, []),
    ("history_content_object", QUESTION, [{"role": "user", "content": {"a": 1}}]),
    ("history_content_nested_list", QUESTION, [{"role": "user", "content": ["x", ["y", ["z"]]]}]),
    ("history_role_object", QUESTION, [{"role": {"x": [1]}, "content": "x"}]),
    ("history_role_deep", QUESTION, [{"role": DEEP, "content": "x"}]),
    ("history_turn_deep", QUESTION, [DEEP]),
    ("history_deep", QUESTION, DEEP),
    ("history_object", QUESTION, {"role": "user", "content": "x"}),
]
IDS = [c[0] for c in BAD]


def assert_clean(text: str) -> None:
    assert not LEAKS.search(text), text[:2000]
    if len(HOST) >= 3:
        assert HOST not in text, text[:2000]


class Broken:
    """A pipeline that fails inside, the way a bug or a damaged file would: with a path in its message."""

    def __init__(self, pipeline):
        self.settings, self.index, self.generator = pipeline.settings, pipeline.index, None

    def stream(self, request, cancel=None, **kw):
        raise FileNotFoundError(2, "No such file or directory", f"{REPO}/index/bm25/scores.npy")


# ------------------------------------------------------------------------------------------------ RunPod
def _runpod(worker, job_input) -> list:
    async def go():
        return [out async for out in worker.handler({"id": "leak-test", "input": job_input})]

    return asyncio.run(go())


def _messages(question, history):
    # a history that is no list stands for the whole 'messages' value
    return [*history, {"role": "user", "content": question}] if isinstance(history, list) else history


@pytest.mark.parametrize("case", BAD, ids=IDS)
def test_runpod_handler(case, demo_pipeline):
    from runpod_worker.handler import Worker

    _id, question, history = case
    worker = Worker(demo_pipeline, max_concurrency=1)
    for job_input in ({"prompt": question, "history": to_object(history)},
                      {"openai_route": "/v1/chat/completions",
                       "openai_input": {"model": "m", "messages": to_object(_messages(question, history))}}):
        outs = _runpod(worker, job_input)
        assert len(outs) == 1 and set(outs[0]) == {"error"}, str(outs)[:500]
        error = outs[0]["error"]
        if "openai_route" in job_input:  # OpenAI's error body (JSON text) on the OpenAI route
            error = json.loads(error)["error"]
            assert error["code"] == "invalid_input" and error["type"] == "invalid_request_error", error
            error = error["message"]
        assert error.startswith("invalid_input: "), outs[0]
        assert_clean(error)


def test_runpod_handler_internal_fault(demo_pipeline, caplog):
    from runpod_worker.handler import Worker

    (out,) = _runpod(Worker(Broken(demo_pipeline), max_concurrency=1), {"prompt": QUESTION})
    assert out["error"].startswith("internal_error: ") and "FileNotFoundError" in out["error"]
    assert_clean(out["error"])


@pytest.fixture(scope="module")
def local_api(demo_pipeline):
    """The SDK's development API (what --rp_serve_api starts) on 127.0.0.1."""
    from runpod.serverless.modules.rp_fastapi import WorkerAPI

    from runpod_worker.handler import Worker

    config = Worker(demo_pipeline, max_concurrency=2).start_config()
    with ThreadServer(WorkerAPI(config).rp_app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.mark.parametrize("case", BAD, ids=IDS)
def test_runpod_local_api(case, local_api):
    _id, question, history = case
    body = '{"input": {"prompt": %s, "history": %s}}' % (json.dumps(question), to_json(history))
    r = local_api.post("/runsync", content=body.encode("utf-8", "surrogatepass"),
                       headers={"content-type": "application/json"})
    assert_clean(r.text)
    if r.status_code == 200:  # reached the handler: its error object
        (out,) = r.json()["output"]
        assert out["error"].startswith("invalid_input: "), out
    else:  # refused by the SDK's own parser before any handler runs
        assert 400 <= r.status_code < 500, (r.status_code, r.text[:500])


# ------------------------------------------------------------------------------------ OpenAI (rag serve)
@pytest.fixture(scope="module")
def openai_server(demo_pipeline):
    from rag.server import create_app

    with ThreadServer(create_app(demo_pipeline)) as server:
        yield server


@pytest.mark.parametrize("case", BAD, ids=IDS)
def test_openai_route(case, openai_server):
    _id, question, history = case
    body = '{"model": "m", "messages": %s}' % to_json(_messages(question, history))
    r = httpx.post(f"{openai_server.url}/v1/chat/completions", content=body.encode("utf-8", "surrogatepass"),
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 400, (r.status_code, r.text[:500])
    assert r.json()["error"]["code"] == "invalid_input", r.text[:500]
    assert_clean(r.text)


def test_openai_route_internal_fault(demo_pipeline):
    from rag.server import create_app

    with ThreadServer(create_app(Broken(demo_pipeline))) as server:
        r = httpx.post(f"{server.url}/v1/chat/completions", timeout=60,
                       json={"model": "m", "messages": [{"role": "user", "content": QUESTION}]})
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error", r.text
    assert_clean(r.text)


# ---------------------------------------------------------------------------------- Cog (in-process)
COG_DEFAULTS = dict(system_prompt="", max_tokens=512, temperature=0.0, top_p=1.0, top_k=0, stop_sequences="",
                    seed=None, num_passages=None, history="", output_format="text", lora_weights=None, hf_token=None)


def _cog(pipeline, capsys, **inputs) -> tuple[str, str]:
    from predict import Runner, RunnerError

    runner = Runner()
    runner.pipeline, runner.cache = pipeline, None
    with pytest.raises(RunnerError) as e:
        list(runner.run(**{**COG_DEFAULTS, **inputs}))
    out, err = capsys.readouterr()
    return str(e.value), out + err


@pytest.mark.parametrize("case", BAD, ids=IDS)
def test_cog_runner(case, demo_pipeline, capsys):
    _id, question, history = case
    error, printed = _cog(demo_pipeline, capsys, prompt=question, history=to_json(history) if history else "")
    assert error.startswith("invalid_input: "), error
    assert_clean(error)
    assert_clean(printed)


def test_cog_runner_internal_fault(demo_pipeline, capsys):
    error, printed = _cog(Broken(demo_pipeline), capsys, prompt=QUESTION)
    assert error.startswith("internal_error: ") and "FileNotFoundError" in error, error
    assert "FileNotFoundError" in printed and "test_no_leaks:" in printed, printed  # the owner's clue
    assert_clean(error)
    assert_clean(printed)


# ------------------------------------------------------------------------------------------------ CLI
def _cli(capsys, *argv) -> tuple[int, str]:
    from rag.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


@pytest.mark.parametrize("question", ["?", "😀🎓", "", "học bổng \udcff", "a" * 2500])
@pytest.mark.parametrize("command", ["ask", "search"])
def test_cli_bad_question(command, question, demo_index_dir, capsys):
    code, printed = _cli(capsys, command, question, "--index", str(demo_index_dir))
    assert code == 2 and "error [invalid_input]" in printed, printed
    assert_clean(printed)


def test_cli_bad_index_and_queries(demo_index_dir, tmp_path, capsys):
    a_file = tmp_path / "index.txt"
    a_file.write_text("not an index")
    broken = tmp_path / "broken"
    shutil.copytree(demo_index_dir, broken)
    manifest = json.loads((broken / "manifest.json").read_text(encoding="utf-8"))
    (broken / "manifest.json").write_text(json.dumps({**manifest, "files": None}), encoding="utf-8")
    queries = tmp_path / "q.txt"
    queries.write_bytes(b"h\xe1\xbb\x8dc b\xff\xfeng\n")
    for argv, code_ in ((["ask", QUESTION, "--index", str(a_file)], 3),
                        (["search", QUESTION, "--index", str(broken)], 3),
                        (["search", "--queries", str(queries), "--index", str(demo_index_dir)], 2)):
        code, printed = _cli(capsys, *argv)
        assert code == code_ and "error [" in printed, (argv, printed)
        assert "Traceback" not in printed and "File \"" not in printed, printed


def test_cli_internal_fault_is_one_line(demo_index_dir, capsys, monkeypatch):
    from rag.pipeline import Pipeline

    def broken(self, request, cancel=None, **kw):
        raise FileNotFoundError(2, "No such file or directory", f"{REPO}/index/bm25/scores.npy")

    monkeypatch.setattr(Pipeline, "stream", broken)
    code, printed = _cli(capsys, "ask", QUESTION, "--index", str(demo_index_dir))
    assert code == 4 and "error [internal_error]: FileNotFoundError" in printed, printed
    assert "test_no_leaks:" in printed and "RAG_LOG_LEVEL=DEBUG" in printed, printed
    assert_clean(printed)
