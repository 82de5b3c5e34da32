"""The RunPod worker: the handler alone, through the SDK's job runner, its local API, --test_input,
the real worker loop against a fake job queue, concurrency, the OpenAI route with the official
client, bad input and the error shape; the Dockerfile and the Hub files, read statically.

Traps of the runpod SDK (pinned in pyproject.toml) these tests are built not to fall for: ``--test_input`` never iterates a
generator handler (so it reports success for anything), the local API returns a generator's
error object as ordinary COMPLETED output (and a 500 if the generator raises), and its validator
skips constraints when a value has the default's type. Every test therefore checks content.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _models import CHATML, make_tokenizer, tiny_adapter, tiny_chat_model, tiny_models  # noqa: F401 - fixtures
from _runpod_helpers import (
    CUDA_FAULT,
    FailingGenerator,
    FakeRunPod,
    PacedGenerator,
    ThreadServer,
    openai_shim,
)

from rag.config import Settings
from rag.errors import ConfigError, IndexError_, ModelError
from rag.pipeline import Pipeline
from rag.texts import REFUSAL
from runpod_worker.handler import (Worker, choose_hf_cache, max_concurrency_from_env, parse_job, runs_local_test,
                                    startup_failure)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::FutureWarning")

REPO = Path(__file__).resolve().parents[1]
HANDLER = REPO / "runpod_worker" / "handler.py"
GRADUATION = "Điều kiện tốt nghiệp là gì?"  # answered from Điều 21 of the demo Quy chế đào tạo
SCHOLARSHIP = "Học bổng khuyến khích học tập xét thế nào?"
OFF_TOPIC = "Cách nấu phở bò ngon nhất?"
HOST = socket.gethostname()


def sdk():
    """The runpod SDK (the dev extra); tests of the worker's own logic do not need it."""
    return pytest.importorskip("runpod.serverless")


def run(worker: Worker, job_input, **job) -> list:
    """Call the handler as the SDK does and collect everything it yields."""
    job = {"id": "test-job", **job}
    if job_input is not ...:
        job["input"] = job_input

    async def go():
        return [out async for out in worker.handler(job)]

    return asyncio.run(go())


def assert_error_shape(out, code: str = "invalid_input") -> str:
    """One object, one key, one string: '<code>: message', nothing internal."""
    assert isinstance(out, dict) and set(out) == {"error"}, out
    message = out["error"]
    assert isinstance(message, str) and message.startswith(f"{code}: "), message
    assert "Traceback" not in message and 'File "' not in message
    assert "/work/" not in message and str(REPO) not in message and "/tmp/" not in message
    if len(HOST) >= 3:
        assert HOST not in message
    return message


def assert_openai_error(out, code: str = "invalid_input") -> str:
    """The JSON text of OpenAI's error body, as the OpenAI routes answer: {"error": {"message", "type", "param",
    "code"}} (a string: the SDK passes a job's error on as str())."""
    assert isinstance(out, dict) and set(out) == {"error"}, out
    assert isinstance(out["error"], str), out
    body = json.loads(out["error"])
    assert set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err, dict) and set(err) == {"message", "type", "param", "code"}, err
    assert err["code"] == code, err
    assert err["type"] == ("invalid_request_error" if code == "invalid_input" else "server_error"), err
    # the same clean message the native route gives; a worker that is not ready gives its setup's error
    cause = err["message"].split(":", 1)[0] if code == "worker_not_ready" else code
    assert_error_shape({"error": err["message"]}, cause)
    return err["message"]


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def worker(demo_pipeline) -> Worker:
    return Worker(demo_pipeline, max_concurrency=4)


@pytest.fixture(scope="module")
def chat_tokenizer():
    return make_tokenizer(CHATML)


def worker_with(demo_pipeline, generator, name="paced-test") -> Worker:
    settings = demo_pipeline.settings.with_(llm=name)
    return Worker(Pipeline(settings, demo_pipeline.index, demo_pipeline.embedder, generator=generator),
                  max_concurrency=4)


@pytest.fixture(scope="module")
def paced(demo_pipeline, chat_tokenizer):
    gen = PacedGenerator(chat_tokenizer, delay=0.03)
    return worker_with(demo_pipeline, gen), gen


@pytest.fixture(scope="module")
def llm_worker(demo_index_dir, embedder, settings_factory, tiny_chat_model) -> Worker:
    settings = settings_factory(demo_index_dir, llm=str(tiny_chat_model))
    return Worker(Pipeline.from_settings(settings, embedder=embedder), max_concurrency=4)


def subprocess_env(demo_index_dir, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "RAG_"))}
    env.update(
        PYTHONPATH=str(REPO), RAG_INDEX_DIR=str(demo_index_dir), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
        ANONYMIZED_TELEMETRY="False", RUNPOD_LOG_LEVEL="INFO", PYTHONUNBUFFERED="1",
        # never let the SDK's production fitness checks reach outside (it dials 8.8.8.8 to test the network)
        RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true", RUNPOD_SKIP_GPU_CHECK="true",
    )
    env.update(extra)
    return env


# ------------------------------------------------------------------------------ the handler, native
def test_native_answer_is_one_final_object_with_citations(worker):
    outs = run(worker, {"prompt": GRADUATION, "num_passages": 3})
    assert len(outs) == 1
    final = outs[0]
    assert {"answer", "refused", "citations", "usage", "timings", "mode"} <= set(final)
    assert final["refused"] is False and final["mode"] == "extractive"
    assert "Điều 21" in final["answer"]
    assert final["citations"][0]["article"] == "21"
    assert final["citations"][0]["document"] == "Quy chế đào tạo trình độ đại học"
    assert final["timings"]["total_ms"] > 0


def test_native_stream_sends_text_then_the_final_object(llm_worker):
    outs = run(llm_worker, {"prompt": GRADUATION, "max_tokens": 12, "stream": True})
    *pieces, final = outs
    assert pieces and all(set(p) == {"text"} and isinstance(p["text"], str) for p in pieces)
    assert "".join(p["text"] for p in pieces).strip() == final["answer"]
    assert final["mode"] == "llm"
    assert 0 < final["usage"]["completion_tokens"] <= 12
    assert final["finish_reason"] in ("stop", "length")


def test_off_topic_question_is_refused_without_sources(worker):
    (final,) = run(worker, {"prompt": OFF_TOPIC})
    assert final["refused"] is True and final["answer"].startswith(REFUSAL) and final["citations"] == []


def test_history_and_system_prompt_reach_the_model(paced):
    w, gen = paced
    history = [{"role": "user", "content": "Em hỏi về tốt nghiệp."}, {"role": "assistant", "content": "Dạ, em hỏi đi."}]
    (final,) = run(w, {"prompt": GRADUATION, "history": history, "system_prompt": "Trả lời thật ngắn gọn.",
                       "max_tokens": 2})
    prompt = gen.calls[-1]["prompt"]
    assert "Em hỏi về tốt nghiệp." in prompt and "Dạ, em hỏi đi." in prompt and "Trả lời thật ngắn gọn." in prompt
    assert gen.calls[-1]["max_new_tokens"] == 2 and final["usage"]["completion_tokens"] == 2


# ------------------------------------------------------------------------------ bad input, one shape
BAD_NATIVE = [
    (..., "missing 'input': send {\"input\": {\"prompt\""),
    (None, "missing 'input'"),
    ([{"prompt": "x"}], "'input' must be a JSON object, got list"),
    ("Điều kiện tốt nghiệp?", "'input' must be a JSON object, got str"),
    ({"prompt": GRADUATION, "colour": "red"}, "unknown input(s): colour. Allowed: prompt, "),
    ({"prompt": GRADUATION, "colour": "red"}, "history, stream, lora_weights."),  # what the worker takes itself
    ({"prompt": GRADUATION, "max_new_tokens": 5}, "unknown input(s): max_new_tokens"),  # old names: with 'question'
    ({"num_passages": 3}, "missing field 'prompt'"),
    ({"prompt": ""}, "'prompt' is empty"),
    ({"prompt": "  \n\t "}, "'prompt' is empty"),
    ({"prompt": "x" * 2001}, "the limit is 2000"),
    ({"prompt": 42}, "'prompt' must be a string"),
    ({"prompt": GRADUATION, "num_passages": 0}, "'num_passages'=0 is out of range"),
    ({"prompt": GRADUATION, "num_passages": 21}, "allowed 1 to 20"),
    ({"prompt": GRADUATION, "num_passages": 2.5}, "'num_passages' must be an integer"),
    ({"prompt": GRADUATION, "num_passages": True}, "'num_passages' must be an integer"),
    ({"prompt": GRADUATION, "top_k": 1001}, "'top_k'=1001 is out of range: allowed 0 to 1000"),
    # the SDK's rp_validator would let this one through (a value of the default's type skips constraints)
    ({"prompt": GRADUATION, "max_tokens": 5000}, "'max_tokens'=5000 is out of range"),
    ({"prompt": GRADUATION, "temperature": -0.5}, "'temperature'=-0.5 is out of range"),
    ({"prompt": GRADUATION, "top_p": -0.5}, "'top_p'=-0.5 is out of range: allowed 0.0 to 1.0"),
    ({"prompt": GRADUATION, "seed": -1}, "'seed'=-1 is out of range"),
    ({"prompt": GRADUATION, "stop_sequences": ["a", "b", "c", "d", "e"]}, "'stop_sequences' has 5 sequences"),
    ({"prompt": GRADUATION, "stream": "yes"}, "'stream' must be true or false"),
    ({"prompt": GRADUATION, "history": [{"role": "system", "content": "x"}]}, "'user' or 'assistant'"),
    ({"prompt": GRADUATION, "history": "hi"}, "'history' must be a list"),
    # the old names, still read for one release: their messages use them
    ({"question": GRADUATION, "top_k": 0}, "'top_k'=0 is out of range: allowed 1 to 20"),
    ({"question": GRADUATION, "max_tokens": 5}, "unknown field(s): max_tokens"),
]


@pytest.mark.parametrize("job_input, needle", BAD_NATIVE)
def test_bad_native_input_is_one_error_object(worker, job_input, needle):
    outs = run(worker, job_input)
    assert len(outs) == 1
    assert needle in assert_error_shape(outs[0])


def chat(messages=None, **body):
    return {"openai_route": "/v1/chat/completions",
            "openai_input": {"model": "m", "messages": messages or [{"role": "user", "content": GRADUATION}], **body}}


BAD_OPENAI = [
    ({"openai_route": "/v1/embeddings", "openai_input": {}}, "unsupported openai_route '/v1/embeddings'"),
    ({"openai_route": "/v1/completions", "openai_input": {"prompt": "x"}}, "unsupported openai_route"),
    ({"openai_input": {"messages": []}}, "'openai_route' is missing next to openai_input"),
    ({**chat(), "question": "x"}, "unknown field(s) next to openai_route: question"),
    ({"openai_route": "/v1/chat/completions", "openai_input": "hello"}, "('openai_input' on RunPod) must be a JSON object"),
    ({"openai_route": "/v1/chat/completions"}, "('openai_input' on RunPod) must be a JSON object"),
    (chat(messages="hello"), "'messages' must be a non-empty list"),
    ({"openai_route": "/v1/chat/completions", "openai_input": {"messages": []}}, "'messages' must be a non-empty list"),
    (chat(messages=["hello"]), "'messages[0]' must be an object"),
    (chat(messages=[{"content": "x"}]), "'messages[0].role' is None"),
    (chat(messages=[{"role": "tool", "content": "x"}]), "'messages[0].role' is 'tool'"),
    (chat(messages=[{"role": "user"}]), "'messages[0]' has no 'content'"),
    (chat(messages=[{"role": "user", "content": 3}]), "'messages[0].content' must be a string"),
    (chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), "only text"),
    (chat(messages=[{"role": "user", "content": "x", "tool_calls": []}]), "unsupported field(s) tool_calls"),
    (chat(messages=[{"role": "user", "content": GRADUATION}, {"role": "assistant", "content": "Dạ"}]),
     "the last message must have role 'user'"),
    (chat(messages=[{"role": "system", "content": "Ngắn gọn."}]), "the last message must have role 'user'"),
    (chat(messages=[{"role": "user", "content": "   "}]), "is empty"),
    (chat(messages=[{"role": "user", "content": "x" * 2001}]), "'messages[0].content' (the question) is 2001"),
    (chat(tools=[{"type": "function"}]), "unsupported field(s): tools"),
    (chat(n=2), "'n' must be 1"),
    (chat(max_tokens=0), "'max_tokens'=0 is out of range"),
    (chat(max_tokens=10, max_completion_tokens=10), "not both"),
    (chat(temperature=3), "'temperature'=3.0 is out of range"),
    (chat(stream="yes"), "'stream' must be true or false"),
    (chat(stream_options={"include_usage": True, "x": 1}), "'stream_options'"),
    (chat(presence_penalty=0.5), "'presence_penalty' is not supported"),
]


@pytest.mark.parametrize("job_input, needle", BAD_OPENAI)
def test_bad_openai_input_is_one_openai_error_object(worker, job_input, needle):
    outs = run(worker, job_input)
    assert len(outs) == 1
    assert needle in assert_openai_error(outs[0])


def test_unexpected_failure_hides_its_text(demo_pipeline):
    class Leaky:
        settings = demo_pipeline.settings

        def stream(self, request, cancel=None):
            raise RuntimeError(f"boom in /work/main/rag/secret.py on {HOST}\nTraceback (most recent call last): ...")

    w = Worker(Leaky(), max_concurrency=1)
    (out,) = run(w, {"prompt": GRADUATION})
    message = assert_error_shape(out, "internal_error")
    assert "RuntimeError" in message and "boom" not in message
    assert "refresh_worker" not in w.config  # not a GPU fault: the worker stays


def test_rag_error_message_keeps_the_advice_but_not_the_path(demo_pipeline):
    class Broken:
        settings = demo_pipeline.settings

        def stream(self, request, cancel=None):
            raise ModelError("could not load RAG_LLM='/work/models/qwen': no config.json. Check the path.",
                             code="model_load_failed")

    (out,) = run(Worker(Broken()), {"prompt": GRADUATION})
    message = assert_error_shape(out, "model_load_failed")
    assert message.endswith("RAG_LLM='<path>': no config.json. Check the path.")


def test_fatal_cuda_error_asks_for_a_new_worker(demo_pipeline, chat_tokenizer):
    w = worker_with(demo_pipeline, FailingGenerator(chat_tokenizer))
    *pieces, last = run(w, {"prompt": GRADUATION, "stream": True})
    assert pieces == [{"text": "Theo "}]  # what was generated before the fault still went out
    assert_error_shape(last, "device_error")
    assert "being replaced" in last["error"] and CUDA_FAULT not in last["error"]
    assert w.config.get("refresh_worker") is True


def test_a_worker_object_whose_setup_failed_answers_every_job_with_the_cause(tmp_path):
    """The module-level handler (for tools that import it): main() itself exits instead, see below."""
    missing = tmp_path / "no-index-here"
    w = Worker.from_env({"RAG_INDEX_DIR": str(missing), "HF_HUB_OFFLINE": "1"})
    assert w.pipeline is None and isinstance(w.startup_error, IndexError_)
    for job_input in ({"prompt": GRADUATION}, chat(), {"openai_route": "/v1/models"}):
        (out,) = run(w, job_input)
        check = assert_error_shape if "prompt" in job_input else assert_openai_error
        message = check(out, "worker_not_ready")
        assert "index" in message and "<path>" in message and str(tmp_path) not in message


def test_bad_concurrency_setting_is_a_startup_error_naming_the_variable():
    w = Worker.from_env({"RUNPOD_MAX_CONCURRENCY": "lots"})
    assert isinstance(w.startup_error, ConfigError)
    (out,) = run(w, {"prompt": GRADUATION})
    assert "RUNPOD_MAX_CONCURRENCY='lots' is not an integer" in assert_error_shape(out, "worker_not_ready")


@pytest.mark.slow
def test_a_broken_setup_exits_non_zero_before_taking_a_job(tmp_path, demo_index_dir):
    """Fail fast in every mode: the production loop (against a queue that would hand out a job), the
    local API (--rp_serve_api) and --test_input; a broken RAG_LLM and a missing index."""
    sdk()
    fake = FakeRunPod([{"id": "never", "input": {"prompt": GRADUATION}}])
    bad_llm = {"RAG_LLM": str(tmp_path / "no-such-model")}
    bad_index = {"RAG_INDEX_DIR": str(tmp_path / "no-such-index")}
    runs = {
        "queue_llm": ([], {**bad_llm, **fake.env()}),
        "serve_api_index": (["--rp_serve_api", "--rp_api_port", str(_free_port())], bad_index),
        "test_input_llm": (["--test_input", json.dumps({"input": {"prompt": GRADUATION}})], bad_llm),
        "test_input_index": (["--test_input", json.dumps({"input": {"prompt": GRADUATION}})], bad_index),
    }
    procs = {name: subprocess.Popen([sys.executable, str(HANDLER), *args], cwd=REPO,
                                    env=subprocess_env(demo_index_dir, **env), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
             for name, (args, env) in runs.items()}
    try:
        outs = {name: p.communicate(timeout=240)[0] for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        fake.close()
    for name, p in procs.items():
        assert p.returncode == 1, (name, outs[name][-3000:])
        line = next((ln for ln in outs[name].splitlines() if ln.startswith("the worker could not start: ")), None)
        assert line, (name, outs[name][-3000:])
        if name.endswith("_llm"):
            assert "RAG_LLM" in line and "no-such-model" in line, line
        else:
            assert "no-such-index" in line and "index" in line, line
        assert "Job result" not in outs[name] and "Uvicorn running" not in outs[name]
    assert fake.taken == [] and fake.done == {}  # the queue's job was never taken


def test_the_start_up_line_keeps_paths_but_no_secrets(tmp_path):
    """The owner reads it in the worker's logs: the path says what to fix; URL credentials and signatures go."""
    error = ConfigError(f"RAG_INDEX_URL='https://student:hunter2@files.example.org/idx.tar.gz?X-Amz-Signature=abc' "
                        f"could not be unpacked into {tmp_path}/cache:\nTraceback (most recent call last):\n  x")
    line = startup_failure(error)
    assert line.startswith("the worker could not start: bad_config: ") and str(tmp_path) in line
    assert "hunter2" not in line and "Signature" not in line and "Traceback" not in line and "\n" not in line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_lora_weights_per_job_is_downloaded_once_and_used_for_that_job(llm_worker, worker, tmp_path, tiny_adapter,
                                                                      monkeypatch):
    import tarfile

    from rag.weights import WeightsCache

    from _cog_server import FileServer

    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "lora.tar.gz", "w:gz") as tar:
        for f in sorted(Path(tiny_adapter).iterdir()):
            tar.add(f, arcname=f.name)
    files = FileServer(served)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    try:
        url = files.url("lora.tar.gz")
        # a loopback URL is refused by default, before any request (RAG_WEIGHTS_ALLOW_PRIVATE unset) ...
        (out,) = run(llm_worker, {"prompt": GRADUATION, "lora_weights": url})
        assert "could not download" in assert_error_shape(out, "weights_unreachable") and not files.hits
        # ... and allowed on a deployment that says so (a campus file server)
        monkeypatch.setattr(llm_worker.adapters, "cache", WeightsCache.from_settings(
            llm_worker.pipeline.settings.with_(weights_allow_private=True, weights_cache_dir=tmp_path / "w")))
        job = {"prompt": GRADUATION, "max_tokens": 12}
        (base,) = run(llm_worker, job)
        (tuned,) = run(llm_worker, {**job, "lora_weights": url})
        (again,) = run(llm_worker, {**job, "lora_weights": url})
        (back,) = run(llm_worker, job)
        assert tuned["answer"] != base["answer"] and again["answer"] == tuned["answer"]
        assert back["answer"] == base["answer"]  # nothing left switched on
        assert files.hits == {"/lora.tar.gz": 1}
        (out,) = run(worker, {**job, "lora_weights": url})  # no LLM: refused before any download
        assert "lora_weights needs an LLM" in assert_error_shape(out, "invalid_input")
        assert files.hits == {"/lora.tar.gz": 1}
        (out,) = run(worker, {**job, "lora_weights": ""})  # empty is no adapter, as Cog reads it
        assert "error" not in out and out["answer"]
        (out,) = run(worker, {**job, "question": None})  # a null old name is not the old form: named, not 'prompt'
        assert "unknown input(s): question" in assert_error_shape(out, "invalid_input")
    finally:
        files.close()


# --------------------------------------------------------------------------- settings and start-up
def test_worker_loads_an_adapter_tarball_and_an_index_url(tmp_path, monkeypatch, demo_index_dir,
                                                          tiny_chat_model, tiny_adapter):
    """What a Replicate training returns (an adapter tarball) and a packed index served over HTTP."""
    import http.server
    import tarfile
    import threading
    from functools import partial

    adapter_tar = tmp_path / "adapter.tar.gz"
    with tarfile.open(adapter_tar, "w:gz") as tar:
        tar.add(tiny_adapter, arcname="adapter")
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "index.tar.gz", "w:gz") as tar:
        tar.add(demo_index_dir, arcname="index")
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(http.server.SimpleHTTPRequestHandler, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    try:
        w = Worker.from_env({"RAG_LLM": str(tiny_chat_model), "RAG_ADAPTER": str(adapter_tar),
                             "RAG_INDEX_URL": f"http://127.0.0.1:{httpd.server_address[1]}/index.tar.gz",
                             "RUNPOD_MAX_CONCURRENCY": "2", "HF_HUB_OFFLINE": "1"})
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert w.startup_error is None, w.startup_error
    assert w.max_concurrency == 2 and w.pipeline.generator.adapter_id != str(adapter_tar)  # unpacked
    assert str(tmp_path / "cache") in str(w.pipeline.settings.index_dir)
    (final,) = run(w, {"prompt": GRADUATION, "max_tokens": 3})
    assert final["mode"] == "llm" and final["citations"][0]["article"] == "21"
    (models,) = run(w, {"openai_route": "/v1/models"})
    assert [m["id"] for m in models["data"]] == ["adapter.tar.gz"]  # the name as configured, not a cache dir


def test_sources_are_cached_on_the_network_volume_unless_rag_weights_cache_says_otherwise(tmp_path, tiny_adapter):
    import tarfile

    from rag.weights import resolve_deployment
    from runpod_worker.handler import cache_on_volume

    def resolve_sources(settings, volume):  # what the worker's setup resolves (rag.deployment.load_deployment)
        return resolve_deployment(cache_on_volume(settings, volume=volume))

    adapter_tar = tmp_path / "adapter.tar.gz"
    with tarfile.open(adapter_tar, "w:gz") as tar:
        tar.add(tiny_adapter, arcname="adapter")
    volume = tmp_path / "volume"
    volume.mkdir()
    s = Settings(llm="some/base", adapter=str(adapter_tar))
    on_volume = resolve_sources(s, volume=str(volume))
    assert Path(on_volume.adapter).is_relative_to(volume / "rag" / "weights")
    mine = resolve_sources(s.with_(weights_cache_dir=tmp_path / "mine"), volume=str(volume))
    assert Path(mine.adapter).is_relative_to(tmp_path / "mine")
    nothing = resolve_sources(Settings(), volume=str(volume))
    assert nothing.adapter is None and nothing.index_dir is None  # nothing to resolve, nothing downloaded


def test_concurrency_comes_from_the_environment():
    assert max_concurrency_from_env({"RUNPOD_MAX_CONCURRENCY": "3"}) == 3
    assert max_concurrency_from_env({}, Settings()) == 4  # extractive: retrieval only
    assert max_concurrency_from_env({}, Settings(llm="some/model")) == 1  # generation is serialised per model
    with pytest.raises(ConfigError, match="allowed 1 to 256"):
        max_concurrency_from_env({"RUNPOD_MAX_CONCURRENCY": "0"})
    w = Worker(None, max_concurrency=6)
    config = w.start_config()
    assert config["concurrency_modifier"](1) == 6 and config["return_aggregate_stream"] is True
    assert config["handler"] == w.handler


def test_local_test_runs_get_a_handler_the_sdk_can_judge():
    assert runs_local_test(["handler.py", "--test_input", "{}"], {"RUNPOD_WEBHOOK_GET_JOB": "http://x"})
    assert runs_local_test(["handler.py"], {})  # the SDK reads test_input.json
    assert not runs_local_test(["handler.py", "--rp_serve_api"], {})
    assert not runs_local_test(["handler.py"], {"RUNPOD_WEBHOOK_GET_JOB": "http://x"})
    w = Worker(None)
    assert w.start_config(local_test=True)["handler"] == w.run_to_completion


def test_hf_cache_is_the_baked_one_else_the_network_volume(tmp_path):
    volume, baked = tmp_path / "volume", tmp_path / "baked"
    volume.mkdir()
    env: dict = {}
    choose_hf_cache(env, baked=str(baked), volume=str(volume))
    assert env == {"HF_HOME": str(volume / "huggingface")}
    baked.mkdir()
    (baked / "baked.txt").write_text("\n", encoding="utf-8")  # what the image writes when nothing was baked
    env = {"RAG_LLM": "Qwen/Qwen2.5-7B-Instruct"}
    choose_hf_cache(env, baked=str(baked), volume=str(volume))
    assert env == {"RAG_LLM": "Qwen/Qwen2.5-7B-Instruct", "HF_HOME": str(volume / "huggingface")}
    (baked / "baked.txt").write_text("Qwen/Qwen2.5-7B-Instruct\nme/adapter\n", encoding="utf-8")
    env = {"RAG_LLM": "Qwen/Qwen2.5-7B-Instruct", "RAG_ADAPTER": "me/adapter"}
    choose_hf_cache(env, baked=str(baked), volume=str(volume))
    assert env["HF_HOME"] == str(baked) and env["HF_HUB_OFFLINE"] == "1"
    # partly baked: the baked cache is used, but not offline, so the rest can download
    env = {"RAG_LLM": "Qwen/Qwen2.5-7B-Instruct", "RAG_EMBED_MODEL": "bkai-foundation-models/vietnamese-bi-encoder"}
    choose_hf_cache(env, baked=str(baked), volume=str(volume))
    assert env["HF_HOME"] == str(baked) and "HF_HUB_OFFLINE" not in env
    env = {"RAG_LLM": "/models/local-llm"}  # local paths are not downloads
    choose_hf_cache(env, baked=str(baked), volume=str(volume))
    assert env["HF_HUB_OFFLINE"] == "1"
    env = {"HF_HOME": "/data/hf", "HF_HUB_OFFLINE": "0"}
    choose_hf_cache(env, baked=str(baked), volume=str(volume))
    assert env == {"HF_HOME": "/data/hf", "HF_HUB_OFFLINE": "0"}
    env = {}
    choose_hf_cache(env, baked=str(tmp_path / "none"), volume=str(tmp_path / "absent"))
    assert env == {}
    # the names come from Settings: a bad combination changes nothing here (setup reports it and exits)
    env = {"RAG_ADAPTER": "me/adapter"}
    choose_hf_cache(env, baked=str(baked), volume=str(volume))
    assert env == {"RAG_ADAPTER": "me/adapter"}


def test_the_worker_reads_rag_settings_only_through_settings():
    import ast

    tree = ast.parse(HANDLER.read_text(encoding="utf-8"))
    named = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and re.fullmatch(r"RAG_[A-Z0-9_]+", n.value)]
    assert named == []  # rag.config.Settings is the only reader of RAG_* variables


def test_new_input_names_and_the_old_ones_for_one_release(worker):
    new = parse_job({"input": {"prompt": GRADUATION, "top_k": 40, "num_passages": 2, "max_tokens": 7,
                               "stop_sequences": ["###"]}}, Settings())[1]
    r = new.request
    assert (r.question, r.sampling_top_k, r.top_k, r.max_new_tokens, r.stop) == (GRADUATION, 40, 2, 7, ["###"])
    assert new.warnings == []
    old = parse_job({"input": {"question": GRADUATION, "top_k": 2, "max_new_tokens": 7, "stop": ["###"]}},
                    Settings())[1]
    r = old.request
    assert (r.question, r.sampling_top_k, r.top_k, r.max_new_tokens, r.stop) == (GRADUATION, 0, 2, 7, ["###"])
    (final,) = run(worker, {"question": GRADUATION, "top_k": 3})
    (current,) = run(worker, {"prompt": GRADUATION, "num_passages": 3})
    assert final["answer"] == current["answer"] and "warnings" not in current
    assert final["warnings"] and "question → prompt" in final["warnings"][0]
    assert "top_k (passages) → num_passages" in final["warnings"][0]


def test_importing_the_handler_loads_nothing():
    code = ("import sys; import runpod_worker.handler as h; "
            "heavy = [m for m in ('torch', 'sentence_transformers', 'transformers', 'chromadb', 'runpod') "
            "if m in sys.modules]; print(heavy, h._worker)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] None"


# ---------------------------------------------------------------------------------- the OpenAI route
def test_models_route_lists_the_served_model(worker, llm_worker, tiny_chat_model):
    (models,) = run(worker, {"openai_route": "/v1/models"})
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["rag-extractive"]
    (models,) = run(llm_worker, {"openai_route": "/v1/models", "openai_input": None})
    assert [m["id"] for m in models["data"]] == [tiny_chat_model.name]  # a local path shows only its name


def test_chat_completion_has_the_answer_and_its_sources(worker):
    (native,) = run(worker, {"prompt": SCHOLARSHIP})
    (resp,) = run(worker, chat([{"role": "system", "content": "Trả lời ngắn."},
                                {"role": "user", "content": SCHOLARSHIP}]))
    assert resp["object"] == "chat.completion" and resp["id"].startswith("chatcmpl-")
    choice = resp["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "stop"
    assert choice["message"]["content"].startswith(native["answer"])
    assert [s["article"] for s in resp["sources"]] == [c["article"] for c in native["citations"]]
    assert all(f", Điều {s['article']}" in s["label"] for s in resp["sources"])
    assert resp["refused"] is False and set(resp["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}


def test_llm_chat_completion_gets_a_sources_block(llm_worker):
    (resp,) = run(llm_worker, chat(max_tokens=6))
    content = resp["choices"][0]["message"]["content"]
    assert resp["sources"] and "\n\nNguồn:\n[1] " + resp["sources"][0]["label"] in content
    assert resp["usage"]["completion_tokens"] <= 6 and resp["usage"]["prompt_tokens"] > 0
    assert resp["choices"][0]["finish_reason"] in ("stop", "length")


def test_chat_stream_is_server_sent_events_in_openai_chunks(llm_worker):
    outs = run(llm_worker, chat(stream=True, max_tokens=8, stream_options={"include_usage": True}))
    assert all(isinstance(o, str) for o in outs)
    events = "".join(outs).split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    chunks = [json.loads(e[len("data: "):]) for e in events[:-2]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    finishing = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finishing) == 1 and finishing[0]["sources"] and finishing[0]["refused"] is False
    assert "Nguồn:\n[1] " + finishing[0]["sources"][0]["label"] in text
    assert chunks[-1]["choices"] == [] and 0 < chunks[-1]["usage"]["completion_tokens"] <= 8


def test_long_chat_history_keeps_the_latest_turns(paced):
    w, gen = paced
    turns = []
    for i in range(15):
        turns += [{"role": "user", "content": f"câu hỏi số {i}"}, {"role": "assistant", "content": f"trả lời số {i}"}]
    (resp,) = run(w, chat(turns + [{"role": "user", "content": GRADUATION}], max_tokens=1))
    assert resp["object"] == "chat.completion"
    prompt = gen.calls[-1]["prompt"]
    assert "câu hỏi số 14" in prompt and "trả lời số 5" in prompt and "câu hỏi số 4" not in prompt


# ------------------------------------------------------------------- concurrency and cancellation
def test_four_jobs_run_concurrently_not_one_after_another(paced):
    w, gen = paced
    job = {"prompt": GRADUATION, "max_tokens": 25}  # 25 paced tokens = 1 s of "GPU" per job

    async def one(i):
        return [out async for out in w.handler({"id": f"c{i}", "input": job})]

    async def four():
        return await asyncio.gather(*(one(i) for i in range(4)))

    singles = []
    for _ in range(2):  # the faster of two runs, so a load spike cannot make "one job" look slow
        t0 = time.perf_counter()
        asyncio.run(one(0))
        singles.append(time.perf_counter() - t0)
    single = min(singles)
    t0 = time.perf_counter()
    results = asyncio.run(four())
    together = time.perf_counter() - t0
    assert all(r[-1]["usage"]["completion_tokens"] == 25 for r in results)
    runs = gen.calls[-4:]
    # every generation was under way before any of them ended: they overlapped, whatever the load
    assert max(r["started_at"] for r in runs) < min(r["ended_at"] for r in runs)
    print(f"one job {single:.2f} s, four at once {together:.2f} s")
    assert together < 2.5 * single, (single, together)  # one after another would be about 4x


def test_real_model_jobs_interleave_without_blocking_the_event_loop(llm_worker):
    job = {"prompt": GRADUATION, "max_tokens": 24, "stream": True}

    async def main():
        ticks = 0
        stop = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        async def one(i):
            return [out async for out in llm_worker.handler({"id": f"r{i}", "input": job})]

        t = asyncio.create_task(ticker())
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(4)))
        elapsed = time.perf_counter() - t0
        stop.set()
        await t
        return results, ticks, elapsed

    results, ticks, elapsed = asyncio.run(main())
    for outs in results:
        assert outs[-1]["mode"] == "llm" and outs[-1]["usage"]["completion_tokens"] > 0
        assert "".join(o["text"] for o in outs[:-1]).strip() == outs[-1]["answer"]
    # a handler that ran the model on the event loop would leave the ticker starving
    assert ticks >= 0.3 * elapsed / 0.01, (ticks, elapsed)


def test_a_slow_consumer_gets_merged_pieces_not_a_backlog(paced):
    """Each output is one HTTP post on RunPod; text produced meanwhile must go out in the next one."""
    w, gen = paced

    async def main():
        outs = []
        async for out in w.handler({"id": "slow", "input": {"prompt": GRADUATION, "max_tokens": 20,
                                                           "stream": True}}):
            outs.append(out)
            await asyncio.sleep(0.2)  # a post to RunPod in flight
        return outs

    *pieces, final = asyncio.run(main())
    text = "".join(p["text"] for p in pieces)
    assert text == "".join(f"tok{i} " for i in range(20)) and final["answer"] == text.strip()
    assert len(pieces) <= 8  # 20 tokens, 30 ms apart, read every 200 ms


def test_stopping_a_job_cancels_its_generation(paced):
    w, gen = paced

    async def main():
        first = asyncio.Event()

        async def consume():
            async for out in w.handler({"id": "long", "input": {"prompt": GRADUATION, "max_tokens": 300,
                                                               "stream": True}}):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        t_stop = time.perf_counter()
        task.cancel()  # what the SDK's JobScaler.stop_job does when RunPod cancels a request
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            if "ended_at" in gen.calls[-1]:
                break
            await asyncio.sleep(0.02)
        return t_stop

    t_stop = asyncio.run(main())
    record = gen.calls[-1]
    assert record["max_new_tokens"] == 300 and record["cancel"].is_set()
    assert record["ended_at"] - t_stop < 1.0 and record["tokens"] < 50  # stopped now, not after 300 tokens


# ------------------------------------------------------------------------ through the SDK itself
def test_sdk_generator_runner_streams_every_output(worker):
    sdk()
    from runpod.serverless.modules.rp_job import run_job_generator

    async def main():
        return [part async for part in run_job_generator(worker.handler, {"id": "g", "input": {
            "prompt": GRADUATION, "stream": True}})]

    parts = asyncio.run(main())
    assert [set(p) for p in parts] == [{"output"}, {"output"}]
    assert "Điều 21" in parts[0]["output"]["text"] and parts[1]["output"]["citations"][0]["article"] == "21"


def test_sdk_handle_job_aggregates_fails_and_refreshes(worker, demo_pipeline, chat_tokenizer, monkeypatch):
    """rp_job.handle_job is what the production worker loop runs per job; only its HTTP transport is recorded."""
    sdk()
    from runpod.serverless.modules import rp_job

    sent, streamed = [], []

    async def send_result(session, job_data, job, is_stream=False):
        sent.append((job["id"], job_data, is_stream))

    async def stream_result(session, job_data, job):
        streamed.append((job["id"], job_data))

    monkeypatch.setattr(rp_job, "send_result", send_result)
    monkeypatch.setattr(rp_job, "stream_result", stream_result)

    ok_config = worker.start_config()
    asyncio.run(rp_job.handle_job(None, ok_config, {"id": "ok", "input": {"prompt": GRADUATION}}))
    asyncio.run(rp_job.handle_job(None, ok_config, {"id": "bad", "input": {"prompt": ""}}))
    asyncio.run(rp_job.handle_job(None, ok_config, {"id": "bad-openai", "input": chat(max_tokens=0)}))
    failing = worker_with(demo_pipeline, FailingGenerator(chat_tokenizer))
    asyncio.run(rp_job.handle_job(None, failing.start_config(), {"id": "gpu", "input": {"prompt": GRADUATION}}))

    done = {job_id: data for job_id, data, _ in sent}
    assert done["ok"]["output"][0]["citations"][0]["article"] == "21" and "stopPod" not in done["ok"]
    assert done["bad"] == {"error": "invalid_input: 'prompt' is empty: type a question about the regulations."}
    # what the platform records for a failed OpenAI-route job: OpenAI's error body, still parseable
    assert json.loads(done["bad-openai"]["error"])["error"] == {
        "message": "invalid_input: 'max_tokens'=0 is out of range: allowed 1 to 2048.", "type": "invalid_request_error",
        "param": "max_tokens", "code": "invalid_input"}
    assert done["gpu"]["error"].startswith("device_error: ") and done["gpu"]["stopPod"] is True
    assert [job_id for job_id, _ in streamed] == ["ok"]  # an error is not streamed as output


# ------------------------------------------------------- the SDK's local API, served on 127.0.0.1
@pytest.fixture(scope="module")
def local_api(worker):
    """The SDK's development API (what --rp_serve_api starts), served by uvicorn on 127.0.0.1 in a thread."""
    import httpx
    sdk()
    from runpod.serverless.modules.rp_fastapi import WorkerAPI

    config = Worker(worker.pipeline, max_concurrency=4).start_config()
    with ThreadServer(WorkerAPI(config).rp_app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def test_local_api_runsync(local_api):
    r = local_api.post("/runsync", json={"input": {"prompt": GRADUATION}})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "COMPLETED" and body["output"][0]["citations"][0]["article"] == "21"


def test_local_api_run_then_status(local_api):
    job_id = local_api.post("/run", json={"input": {"prompt": SCHOLARSHIP}}).json()["id"]
    body = local_api.post(f"/status/{job_id}").json()
    assert body["status"] == "COMPLETED" and "học bổng" in body["output"][0]["answer"].lower()


def test_local_api_run_then_stream(local_api):
    job_id = local_api.post("/run", json={"input": {"prompt": GRADUATION, "stream": True}}).json()["id"]
    body = local_api.post(f"/stream/{job_id}").json()
    assert body["status"] == "COMPLETED"
    pieces = [s["output"] for s in body["stream"]]
    assert "Điều 21" in pieces[0]["text"] and pieces[-1]["answer"].startswith(pieces[0]["text"].strip())


def test_local_api_bad_input_is_an_error_object_not_a_500(local_api):
    # The local API reports a generator's error object as COMPLETED output; the platform fails the job
    # (see test_sdk_handle_job_aggregates_fails_and_refreshes). Either way: no 500, no traceback.
    r = local_api.post("/runsync", json={"input": {"prompt": "x", "num_passages": 99}})
    assert r.status_code == 200
    (out,) = r.json()["output"]
    assert "'num_passages'=99 is out of range" in assert_error_shape(out)


# ------------------------------------------------------------------------------------ subprocesses
QUEUE_JOBS = [{"id": f"q{i}", "input": {"prompt": q, "stream": True}}
              for i, q in enumerate([GRADUATION, SCHOLARSHIP, GRADUATION, OFF_TOPIC])]
QUEUE_JOBS += [{"id": "bad", "input": {"prompt": ""}}, {"id": "oai", "input": chat()}]


@pytest.fixture(scope="module")
def processes(demo_index_dir):
    """Two real worker processes, started together so their (slow) imports overlap:
    a --test_input run, and the production loop against a fake queue."""
    sdk()
    good = (REPO / "runpod_worker" / "test_input.json").read_text(encoding="utf-8")
    fake = FakeRunPod([dict(j) for j in QUEUE_JOBS])
    common = dict(cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs = {
        "test_input": subprocess.Popen([sys.executable, str(HANDLER), "--test_input", good],
                                       env=subprocess_env(demo_index_dir), **common),
        "queue": subprocess.Popen([sys.executable, str(HANDLER)],
                                  env=subprocess_env(demo_index_dir, RUNPOD_MAX_CONCURRENCY="4", **fake.env()),
                                  **common),
    }
    try:
        yield {"procs": procs, "fake": fake}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        fake.close()


@pytest.mark.slow
def test_test_input_really_runs_the_job(processes):
    out, _ = processes["procs"]["test_input"].communicate(timeout=240)
    assert processes["procs"]["test_input"].returncode == 0, out[-4000:]
    assert "completed successfully" in out
    result = out.split("Job result:", 1)[1]
    assert "Điều 21" in result and "'article': '21'" in result  # the answer, not a generator object
    assert "async_generator" not in result


def test_local_test_runner_fails_a_bad_job(worker, capsys):
    """The SDK's own local runner (rp_local.run_local), given what main() gives it for --test_input."""
    sdk()
    from runpod.serverless.modules.rp_local import run_local

    config = Worker(worker.pipeline).start_config(local_test=True)
    config["rp_args"] = {"test_input": {"input": {"prompt": "", "num_passages": 3}}}
    with pytest.raises(SystemExit) as e:
        asyncio.run(run_local(config))
    out = capsys.readouterr().out
    assert e.value.code == 1 and "'prompt' is empty" in out and "Traceback" not in out
    config["rp_args"] = {"test_input": {"input": {"prompt": SCHOLARSHIP}}}
    with pytest.raises(SystemExit) as e:
        asyncio.run(run_local(config))
    out = capsys.readouterr().out
    assert e.value.code == 0 and "completed successfully" in out and "'refused': False" in out


@pytest.mark.slow
def test_worker_loop_against_a_fake_runpod_queue(processes):
    """The production path: main() → runpod.serverless.start → JobScaler, posting to a queue on 127.0.0.1."""
    fake, proc = processes["fake"], processes["procs"]["queue"]
    finished = fake.all_done.wait(240)
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    assert finished, out[-4000:]
    assert fake.taken[0][2] == 4  # concurrency_modifier: the first take asked for a batch of 4
    for job_id in ("q0", "q1", "q2"):
        aggregated = fake.done[job_id]["output"]  # return_aggregate_stream: every output, in order
        assert aggregated[-1]["refused"] is False and aggregated[-1]["citations"]
        assert [p["output"] for p in fake.streamed[job_id]] == aggregated
    assert fake.done["q3"]["output"][-1]["refused"] is True
    assert fake.done["bad"] == {"error": "invalid_input: 'prompt' is empty: type a question about the regulations."}
    assert fake.done["oai"]["output"][0]["object"] == "chat.completion"
    assert "Traceback" not in json.dumps(fake.done)
    assert re.search(r"loaded: extractive \(no RAG_LLM\); index \S+ \(\d+ chunks, all-MiniLM-L6-v2\); up to 4 jobs", out), \
        out[-3000:]


# ------------------------------------------------------------------ the official OpenAI client
@pytest.fixture(scope="module")
def openai_clients(worker, llm_worker):
    sdk()
    OpenAI = pytest.importorskip("openai").OpenAI

    with ThreadServer(openai_shim(worker.handler)) as ext, ThreadServer(openai_shim(llm_worker.handler)) as llm:
        yield (OpenAI(base_url=f"{ext.url}/openai/v1", api_key="test", max_retries=0, timeout=60),
               OpenAI(base_url=f"{llm.url}/openai/v1", api_key="test", max_retries=0, timeout=60))


def test_openai_client_models_and_completion(openai_clients, worker):
    client, _ = openai_clients
    assert [m.id for m in client.models.list()] == [worker.model_name]
    resp = client.chat.completions.create(model=worker.model_name, messages=[{"role": "user", "content": GRADUATION}])
    assert "Điều 21" in resp.choices[0].message.content and resp.choices[0].finish_reason == "stop"
    assert resp.model_extra["sources"][0]["article"] == "21" and resp.model_extra["refused"] is False


def test_openai_client_streams_the_same_answer(openai_clients, worker):
    client, _ = openai_clients
    whole = client.chat.completions.create(model="x", messages=[{"role": "user", "content": SCHOLARSHIP}])
    stream = client.chat.completions.create(model="x", messages=[{"role": "user", "content": SCHOLARSHIP}],
                                            stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    last = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert last.model_extra["sources"] == whole.model_extra["sources"]


def test_openai_client_with_the_model_streams_tokens_and_usage(openai_clients):
    _, client = openai_clients
    stream = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": GRADUATION}], max_tokens=10, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(contents) >= 2  # the model's text, then the sources block
    assert chunks[-1].usage is not None and 0 < chunks[-1].usage.completion_tokens <= 10


def test_openai_client_sees_a_bad_request(openai_clients):
    import openai

    client, _ = openai_clients
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": GRADUATION}], max_tokens=0)
    assert "'max_tokens'=0 is out of range" in str(e.value)
    # the worker's own OpenAI error object reaches the client: its code and the field it names
    assert (e.value.code, e.value.param, e.value.type) == ("invalid_input", "max_tokens", "invalid_request_error")
    with pytest.raises(openai.BadRequestError, match="the last message must have role 'user'"):
        client.chat.completions.create(model="x", messages=[{"role": "assistant", "content": "x"}], stream=True)
