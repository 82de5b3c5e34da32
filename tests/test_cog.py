"""The Cog model (cog.yaml + predict.py) tested through the real Cog HTTP server.

Four servers (``python -m cog.server.http``, coglet 0.23) start in parallel, once per module,
all running cog.yaml's ``predict.py:Runner``:

* ``plain``: extractive (no RAG_LLM), the demo index via RAG_INDEX_DIR, no OpenAPI schema —
  so every input reaches the runner and is validated by rag's AskRequest;
* ``llm``: the tiny random Llama from tests/_models.py with its LoRA adapter passed as
  COG_WEIGHTS (a tarball URL on a local file server), the demo index built on first boot
  (RAG_INDEX_DIR unset), and ``.cog/openapi_schema.json`` as `cog build` writes it (read
  statically, tests/_cog_static.py) — so Cog validates against the schema first and SSE is on;
* ``llm_base``: the tiny LLM without an adapter, for per-request ``lora_weights``;
* ``bad_adapter`` and ``bad_index``: setups that must fail (a missing RAG_ADAPTER; an index
  whose manifest names another embedding model).

Plus fast unit tests of the weights cache (rag/weights/) and rag/render.py, no server.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import tarfile
import uuid
from pathlib import Path

import pytest
import requests

from _cog_schema import write_schema
from _cog_server import REPO, CogServer, FileServer
from _models import (  # noqa: F401 - fixtures
    tiny_adapter,
    tiny_adapter_b,
    tiny_chat_model,
    tiny_mismatched_adapter,
    tiny_models,
)

from rag.render import citation_dict, citation_label

QUESTION = "Sinh viên bị cảnh báo học tập trong những trường hợp nào?"
QUESTIONS = [
    QUESTION,
    "Điều kiện để được công nhận tốt nghiệp là gì?",
    "Học bổng khuyến khích học tập được xét như thế nào?",
    "Sinh viên được nghỉ học tạm thời khi nào?",
]
OFF_TOPIC = "Ngày mai Hà Nội có mưa không ạ?"
REFUSAL = "Không tìm thấy quy định liên quan trong tài liệu."

slow = pytest.mark.slow  # each server costs a Python + torch start; the module shares four


# --------------------------------------------------------------------------------------- fixtures
def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def weights_server(tmp_path_factory, tiny_adapter, tiny_adapter_b, tiny_mismatched_adapter):  # noqa: F811
    """Tarballs served on 127.0.0.1: real adapters, one nested in a folder, and broken ones."""
    d = tmp_path_factory.mktemp("weights_http")
    # adapter.tar.gz is the llm server's COG_WEIGHTS; the lora-* ones are for per-request lora_weights
    for name, adapter in (("adapter", tiny_adapter), ("lora-a", tiny_adapter), ("lora-b", tiny_adapter_b),
                          ("lora-mismatched", tiny_mismatched_adapter)):
        with tarfile.open(d / f"{name}.tar.gz", "w:gz") as tar:
            for f in sorted(Path(adapter).iterdir()):
                tar.add(f, arcname=f.name)
    with tarfile.open(d / "adapter-copy.tar.gz", "w:gz") as tar:  # same content, another URL
        tar.add(tiny_adapter, arcname="my-adapter")
    (d / "not-a-tarball.tar.gz").write_text("<html>404 Not Found</html>")
    _tar(d / "no-adapter.tar.gz", {"README.md": b"# just a readme\n"})
    server = FileServer(d)
    yield server
    server.close()


@pytest.fixture(scope="module")
def other_model_index(demo_index_dir, tmp_path_factory) -> Path:
    """A copy of the demo index whose manifest says it was built with another embedding model."""
    copy = tmp_path_factory.mktemp("other_model") / "index"
    shutil.copytree(demo_index_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    manifest["embed_model"] = "bkai-foundation-models/vietnamese-bi-encoder"
    (copy / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    return copy


def _project_copy(root: Path, schema: bool) -> Path:
    """The model as `cog build` lays it out: predict.py (+ .cog/openapi_schema.json); rag comes installed."""
    root.mkdir(parents=True)
    shutil.copy(REPO / "predict.py", root / "predict.py")
    shutil.copy(REPO / "cog.yaml", root / "cog.yaml")
    if schema:
        write_schema(root)
    return root


@pytest.fixture(scope="module")
def cog_servers(tmp_path_factory, demo_index_dir, tiny_chat_model, weights_server, other_model_index):  # noqa: F811
    tmp = tmp_path_factory.mktemp("cog")
    plain_dir = _project_copy(tmp / "plain", schema=False)
    schema_dir = _project_copy(tmp / "with_schema", schema=True)
    servers = {
        "plain": CogServer("plain", plain_dir, {
            "RAG_INDEX_DIR": demo_index_dir, "XDG_CACHE_HOME": tmp / "plain-cache",
        }, tmp / "plain.log"),
        "llm": CogServer("llm", schema_dir, {  # per-request lora_weights come from a loopback file server
            "RAG_LLM": tiny_chat_model, "COG_WEIGHTS": weights_server.url("adapter.tar.gz"),
            "XDG_CACHE_HOME": tmp / "llm-cache", "RAG_WEIGHTS_ALLOW_PRIVATE": "1",
        }, tmp / "llm.log"),
        "llm_base": CogServer("llm_base", plain_dir, {
            "RAG_INDEX_DIR": demo_index_dir, "RAG_LLM": tiny_chat_model, "XDG_CACHE_HOME": tmp / "llm-base-cache",
            "RAG_WEIGHTS_ALLOW_PRIVATE": "1",
        }, tmp / "llm_base.log"),
        "bad_adapter": CogServer("bad_adapter", plain_dir, {
            "RAG_INDEX_DIR": demo_index_dir, "RAG_LLM": tiny_chat_model, "RAG_ADAPTER": "/nonexistent/adapter",
            "XDG_CACHE_HOME": tmp / "bad-adapter-cache",
        }, tmp / "bad_adapter.log"),
        "bad_index": CogServer("bad_index", plain_dir, {
            "RAG_INDEX_DIR": other_model_index, "XDG_CACHE_HOME": tmp / "bad-index-cache",
        }, tmp / "bad_index.log"),
    }
    for s in servers.values():
        s.start()
    yield servers
    for s in servers.values():
        s.stop()


@pytest.fixture(scope="module")
def plain(cog_servers) -> CogServer:
    cog_servers["plain"].wait()
    return cog_servers["plain"]


@pytest.fixture(scope="module")
def llm(cog_servers) -> CogServer:
    cog_servers["llm"].wait()
    return cog_servers["llm"]


@pytest.fixture(scope="module")
def llm_base(cog_servers) -> CogServer:
    cog_servers["llm_base"].wait()
    return cog_servers["llm_base"]


@pytest.fixture(scope="module")
def llm_index(llm) -> Path:
    """Where the llm server built the demo index on first boot (RAG_INDEX_DIR unset)."""
    return Path(llm.env["XDG_CACHE_HOME"]) / "rag" / "index"


def _ok(r: requests.Response) -> dict:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "succeeded", body
    return body


def _text(body: dict) -> str:
    return "".join(body["output"])


# ----------------------------------------------------------------------------------- lifecycle
@slow
def test_health_goes_from_starting_to_ready(plain):
    assert plain.statuses[0] == "STARTING" and plain.statuses[-1] == "READY", plain.statuses
    assert "SETUP_FAILED" not in plain.statuses
    assert plain.health_body["setup"]["status"] == "succeeded"
    logs = plain.setup_logs("loaded: ")
    assert f"loaded: extractive (no RAG_LLM); index {plain.env['RAG_INDEX_DIR']} (" in logs and " chunks, " in logs
    # a prebuilt index (cog.yaml: RAG_INDEX_DIR=/src/index) is only opened: nothing is indexed at boot
    assert not (Path(plain.env["XDG_CACHE_HOME"]) / "rag" / "index").exists()


@slow
def test_weights_url_becomes_the_adapter_and_demo_index_is_built_on_first_boot(llm, llm_index, weights_server):
    assert llm.statuses[-1] == "READY", llm.statuses
    logs = llm.setup_logs("loaded: ")
    assert f"loaded: llm {llm.env['RAG_LLM']} + adapter {Path(llm.env['XDG_CACHE_HOME']) / 'rag' / 'weights'}" in logs
    assert weights_server.hits.get("/adapter.tar.gz") == 1
    assert (llm_index / "manifest.json").exists() and str(llm_index) in logs


@slow
def test_missing_adapter_fails_setup_with_the_reason_in_the_logs(cog_servers):
    server = cog_servers["bad_adapter"]
    body = server.wait()
    assert body["status"] == "SETUP_FAILED", body
    assert body["setup"]["status"] == "failed"
    logs = body["setup"]["logs"]
    assert "RAG_ADAPTER='/nonexistent/adapter': no such file or directory" in logs
    assert "adapter_not_found: " in logs
    assert server.predict({"prompt": QUESTION}).status_code != 200  # never serves


@slow
def test_index_built_with_another_embedding_model_fails_setup(cog_servers):
    body = cog_servers["bad_index"].wait()
    assert body["status"] == "SETUP_FAILED", body
    logs = body["setup"]["logs"]
    assert "reindex_required: " in logs
    assert "built with bkai-foundation-models/vietnamese-bi-encoder but RAG_EMBED_MODEL is all-MiniLM-L6-v2" in logs


# ------------------------------------------------------------------------------------- answers
@slow
def test_json_answer_cites_exactly_the_retrieved_passages(plain, demo_pipeline):
    body = _ok(plain.predict({"prompt": QUESTION, "num_passages": 4, "output_format": "json"}))
    answer = json.loads(_text(body))
    expected = demo_pipeline.search(QUESTION, 4)
    assert [(p["rank"], p["id"]) for p in answer["passages"]] == [(h.rank, h.chunk.id) for h in expected.hits]
    assert [p["citation"] for p in answer["passages"]] == [citation_dict(h.chunk.citation()) for h in expected.hits]
    assert answer["mode"] == "extractive" and not answer["refused"]
    # The extractive answer quotes the best passage first, then maybe a second from another Điều.
    hit_citations = [citation_dict(h.chunk.citation()) for h in expected.hits]
    assert answer["citations"][0] == hit_citations[0]
    assert all(c in hit_citations[:2] for c in answer["citations"])
    assert answer["timings"]["retrieve_ms"] > 0
    assert body["metrics"]["retrieval_ms"] == pytest.approx(answer["timings"]["retrieve_ms"], abs=0.01)
    assert body["metrics"]["time_to_first_token_ms"] > 0


@slow
def test_text_answer_ends_with_the_sources_of_its_citations(plain, demo_pipeline):
    body = _ok(plain.predict({"prompt": QUESTION}))
    reference = demo_pipeline.answer({"question": QUESTION})
    answer_text, sources = body["output"][0], body["output"][-1]
    assert answer_text == reference.text
    labels = [citation_label(c) for c in reference.citations]
    assert sources == "\n\nNguồn:\n" + "\n".join(f"[{i}] {label}" for i, label in enumerate(labels, 1))
    assert "Điều" in sources
    assert "input_token_count" not in body["metrics"]  # extractive: no LLM tokens


@slow
def test_off_topic_question_is_refused_without_sources(plain):
    body = _ok(plain.predict({"prompt": OFF_TOPIC}))
    assert _text(body).startswith(REFUSAL)
    answer = json.loads(_text(_ok(plain.predict({"prompt": OFF_TOPIC, "output_format": "json"}))))
    assert answer["refused"] is True and answer["citations"] == []


@slow
def test_llm_answer_json_has_usage_citations_and_metrics(llm, llm_index, demo_pipeline):
    body = _ok(llm.predict({"prompt": QUESTION, "max_tokens": 48, "output_format": "json"}))
    answer = json.loads(_text(body))
    assert answer["mode"] == "llm"
    assert answer["usage"]["completion_tokens"] > 0 and answer["usage"]["prompt_tokens"] > 0
    retrieved = [citation_dict(h.chunk.citation()) for h in demo_pipeline.search(QUESTION, 5).hits]
    assert [p["citation"] for p in answer["passages"]] == retrieved  # same corpus, same embedder → same ranking
    assert all(c in retrieved for c in answer["citations"])  # an LLM answer only cites what it was given
    m = body["metrics"]
    assert m["input_token_count"] == answer["usage"]["prompt_tokens"]
    assert m["output_token_count"] == answer["usage"]["completion_tokens"]
    assert m["time_to_first_token_ms"] >= m["retrieval_ms"] > 0


@slow
def test_sse_streams_the_answer_token_by_token_then_its_sources(llm):
    inputs = {"prompt": QUESTIONS[2], "max_tokens": 48}  # its best passage fits the tiny model's context
    reference = json.loads(_text(_ok(llm.predict({**inputs, "output_format": "json"}))))  # greedy: same answer
    r, events = llm.stream(inputs)
    with r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        seen = list(events)
    kinds = [k for k, _ in seen]
    assert kinds[0] == "start" and kinds[-1] == "completed", kinds
    # Live: text arrives while the answer is generated, before the metrics recorded at its end
    # (an output collected first, as coglet 0.23 does for async generators, comes after them).
    assert kinds.index("output") < kinds.index("metric"), kinds
    chunks = [d["chunk"] for k, d in seen if k == "output"]
    final = seen[-1][1]
    assert final["status"] == "succeeded", final
    assert len(chunks) >= 3  # streamed piece by piece, not one blob
    assert "".join(chunks) == "".join(final["output"])
    block = _sources_block(reference)
    assert block, reference  # the tiny model is given passages, so its answer has sources
    assert chunks[-1] == block
    assert "".join(chunks[:-1]).strip() == reference["answer"]


def _sources_block(answer: dict) -> str:
    from rag.render import sources_block
    from rag.types import Answer, Citation

    return sources_block(Answer(answer["answer"], answer["refused"], [Citation(**c) for c in answer["citations"]],
                                unsupported_citations=answer["unsupported_citations"]))


@slow
def test_cancel_a_running_prediction(llm):
    """The default Runner: Cog injects CancelationException into the generating thread."""
    inputs = {"prompt": QUESTION, "max_tokens": 650}
    full = _ok(llm.predict(inputs))["metrics"]["predict_time"]  # how long it runs uncancelled
    pid = f"cancel-{uuid.uuid4().hex[:12]}"
    r, events = llm.stream(inputs, prediction_id=pid, timeout=120)
    with r:
        assert r.status_code == 200, r.text
        for kind, data in events:
            if kind == "output":  # generation is under way
                break
        cancel = requests.post(f"{llm.url}/predictions/{pid}/cancel", timeout=10)
        assert cancel.status_code == 200
        final = next(d for k, d in events if k == "completed")
    assert final["status"] == "canceled", final
    assert requests.post(f"{llm.url}/predictions/{pid}/cancel", timeout=10).status_code == 404  # gone
    _assert_generation_stopped(llm, full)


def _assert_generation_stopped(server: CogServer, full: float) -> None:
    """One generation at a time per model: had the cancelled one gone on in the background, this
    short request would wait for it to finish (most of ``full`` seconds)."""
    after = _ok(server.predict({"prompt": QUESTION, "max_tokens": 8, "output_format": "json"}, timeout=60))
    assert json.loads(_text(after))["usage"]["completion_tokens"] <= 8
    assert after["metrics"]["predict_time"] < full / 2, (after["metrics"], full)


# ---------------------------------------------------------------------------------- bad inputs
LONG = "a" * 2010  # > RAG_MAX_QUESTION_CHARS (2000)

# (id, input, runner message, schema rejection: (field, message) or None when the schema lets it through)
BAD_INPUTS = [
    ("empty_prompt", {"prompt": ""}, "invalid_input: 'prompt' is empty", None),
    ("blank_prompt", {"prompt": "   "}, "invalid_input: 'prompt' is empty", None),
    ("missing_prompt", {}, "invalid_input: missing field 'prompt'", ("prompt", "Field required")),
    ("long_prompt", {"prompt": LONG}, "'prompt' is 2010 characters; the limit is 2000", None),
    ("huge_prompt", {"prompt": "a" * 6001}, "'prompt' is 6001 characters", ("prompt", "is longer than 6000 characters")),
    ("num_passages_high", {"prompt": QUESTION, "num_passages": 50}, "'num_passages'=50 is out of range: allowed 1 to 20",
     ("num_passages", "50 is greater than the maximum of 20")),
    ("num_passages_zero", {"prompt": QUESTION, "num_passages": 0}, "'num_passages'=0 is out of range",
     ("num_passages", "less than the minimum")),
    ("num_passages_type", {"prompt": QUESTION, "num_passages": "five"}, "'num_passages' must be an integer",
     ("num_passages", '"five" is not of type "integer"')),
    ("max_tokens", {"prompt": QUESTION, "max_tokens": 100000}, "'max_tokens'=100000 is out of range",
     ("max_tokens", "greater than the maximum of 2048")),
    ("top_k_high", {"prompt": QUESTION, "top_k": 5000}, "'top_k'=5000 is out of range: allowed 0 to 1000",
     ("top_k", "5000 is greater than the maximum of 1000")),
    ("temperature_high", {"prompt": QUESTION, "temperature": 2.5}, "'temperature'=2.5 is out of range",
     ("temperature", "greater than the maximum of 2")),
    ("top_p_negative", {"prompt": QUESTION, "top_p": -0.5}, "'top_p'=-0.5 is out of range",
     ("top_p", "-0.5 is less than the minimum of 0")),
    ("temperature_nan", {"prompt": QUESTION, "temperature": "NaN"}, "'temperature' must be a number",
     ("temperature", '"NaN" is not of type "number"')),
    ("history_malformed", {"prompt": QUESTION, "history": '[{"role": "user", "content": '},
     "'history' is not valid JSON", None),
    ("history_bad_role", {"prompt": QUESTION, "history": '[{"role": "system", "content": "x"}]'},
     "'history[0].role' is 'system'; use 'user' or 'assistant'", None),
    ("five_stops", {"prompt": QUESTION, "stop_sequences": "a,b,c,d,e"}, "'stop_sequences' has 5 sequences; at most 4",
     None),
    ("output_format", {"prompt": QUESTION, "output_format": "xml"}, "'output_format' is 'xml'",
     ("output_format", "xml")),
    ("no_word_prompt", {"prompt": "?"}, "invalid_input: 'prompt' has no words", None),
    ("emoji_prompt", {"prompt": "😀🎓"}, "invalid_input: 'prompt' has no words", None),
]
UNREACHABLE = "weights_unreachable: lora_weights: could not download"  # the same words for every fetch failure
LORA_CASES = [  # the URL is filled in from the local file server
    ("lora_unreachable", "closed-port", UNREACHABLE),
    ("lora_404", "missing.tar.gz", UNREACHABLE),
    ("lora_not_tarball", "not-a-tarball.tar.gz", "weights_not_tarball: lora_weights:"),
    ("lora_no_adapter_config", "no-adapter.tar.gz", "weights_invalid: lora_weights:"),
]


def _rejection(r: requests.Response) -> tuple[str, str]:
    """('schema', 'field: msg; …') for Cog's own 422, or ('runner', error) for a failed prediction."""
    if r.status_code == 422:
        return "schema", "; ".join(f"{d['loc'][-1]}: {d['msg']}" for d in r.json()["detail"])
    body = r.json()
    assert r.status_code == 200 and body["status"] == "failed", (r.status_code, body)
    error = body["error"]
    assert "Traceback" not in error and "/work/" not in error  # nothing internal leaks
    # coglet prefixes the runner's message ("Prediction failed: Generator iteration error: RunnerError: …")
    return "runner", error.split("RunnerError: ", 1)[-1]


def _lora_url(weights_server, target: str) -> str:
    if target == "closed-port":
        from _cog_server import free_port

        return f"http://127.0.0.1:{free_port()}/adapter.tar.gz"
    return weights_server.url(target)


@slow
@pytest.mark.parametrize("server_name", ["plain", "llm"])
@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_rejected_with_a_message(case, server_name, cog_servers):
    _id, inputs, runner_msg, schema_rule = case
    server = cog_servers[server_name]
    server.wait()
    where, message = _rejection(server.predict(inputs))
    with_schema = server_name == "llm"
    if with_schema and schema_rule is not None:
        field, msg = schema_rule
        assert where == "schema" and f"{field}: " in message and msg in message, message
    else:
        assert where == "runner" and runner_msg in message, message


@slow
@pytest.mark.parametrize("server_name", ["llm", "llm_base"])
@pytest.mark.parametrize("case", LORA_CASES, ids=[c[0] for c in LORA_CASES])
def test_bad_lora_weights_url_is_rejected(case, server_name, cog_servers, weights_server):
    _id, target, expected = case
    server = cog_servers[server_name]
    server.wait()
    url = _lora_url(weights_server, target)
    r = server.predict({"prompt": QUESTION, "lora_weights": url})
    where, message = _rejection(r)
    assert where == "runner" and expected in message and url.split("?")[0] in message, message
    logs = server.prediction_logs(r.json())  # the client reads these: no reason there either
    assert "refused" not in logs and "404" not in logs and "Traceback" not in logs, logs


@slow
def test_lora_weights_without_an_llm_is_refused_before_any_download(plain, weights_server):
    url = weights_server.url("lora-b.tar.gz")
    where, message = _rejection(plain.predict({"prompt": QUESTION, "lora_weights": url}))
    assert where == "runner" and message.startswith("invalid_input: lora_weights needs an LLM"), message
    assert weights_server.hits.get("/lora-b.tar.gz") is None


@slow
def test_a_decomposed_question_within_the_limit_passes_the_schema(llm):
    """Text typed on macOS arrives decomposed (NFD): more code points than the 2000 characters the question
    holds once composed. The schema's bound must not refuse what the model's own limit accepts."""
    import unicodedata

    question = ((QUESTION + " ") * 100)[:1900]
    decomposed = unicodedata.normalize("NFD", question)
    assert len(decomposed) > 2000
    r = llm.predict({"prompt": decomposed, "max_tokens": 4})
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text[:500]


@slow
def test_lora_weights_must_be_a_url(llm):
    where, message = _rejection(llm.predict({"prompt": QUESTION, "lora_weights": "/etc/passwd"}))
    assert where == "runner" and "'lora_weights' must be an http(s) URL" in message, message


@slow
def test_an_unknown_input_name_is_refused_without_a_schema_and_stripped_with_one(plain, llm):
    """coglet 0.23 strips inputs the schema does not name ("Stripped unknown input fields") rather than
    answering 422, so a misspelt optional input is ignored on Replicate; without a schema run() refuses it.
    The renamed required input cannot slip through: an old client's 'question' has no 'prompt'."""
    where, message = _rejection(plain.predict({"prompt": QUESTION, "question": QUESTION}))
    assert where == "runner" and "unexpected keyword argument 'question'" in message, message
    body = _ok(llm.predict({"prompt": QUESTION, "question": QUESTION, "max_tokens": 4, "output_format": "json"}))
    assert json.loads(_text(body))["usage"]["completion_tokens"] <= 4
    assert "Stripped unknown input fields" in llm.tail(200_000)
    where, message = _rejection(llm.predict({"question": QUESTION}))
    assert where == "schema" and "prompt: Field required" in message, message


@slow
def test_a_prompt_with_a_lone_surrogate_is_refused_without_a_traceback(plain):
    r = plain.predict({"prompt": "học bổng \udcff"})  # JSON "\udcff": not text, whoever parses it
    if r.status_code == 200:
        assert r.json()["status"] == "failed" and "'prompt' contains invalid characters" in r.json()["error"], r.text
    else:
        assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert "Traceback" not in r.text and "/work/" not in r.text


@slow
def test_runner_messages_are_the_same_with_and_without_a_schema(plain, llm):
    for _id, inputs, _msg, schema_rule in BAD_INPUTS:
        if schema_rule is None:
            a, b = _rejection(plain.predict(inputs)), _rejection(llm.predict(inputs))
            assert a == b, (_id, a, b)


@slow
def test_raw_nan_is_not_json_and_is_refused_by_the_server(plain, llm):
    body = '{"input": {"prompt": "x", "temperature": NaN}}'
    for server in (plain, llm):
        r = requests.post(f"{server.url}/predictions", data=body, headers={"Content-Type": "application/json"},
                          timeout=30)
        assert r.status_code == 400 and "temperature" in r.text


@slow
def test_stop_sequences_as_json_array_and_good_history_are_accepted(plain):
    history = json.dumps([{"role": "user", "content": "Cảnh báo học tập là gì?"},
                          {"role": "assistant", "content": "Theo Điều 10 …"}], ensure_ascii=False)
    body = _ok(plain.predict({"prompt": "Còn buộc thôi học thì sao?", "history": history,
                              "stop_sequences": '["###", "a,b"]', "output_format": "json"}))
    answer = json.loads(_text(body))
    assert not answer["refused"]
    query = answer["query"].lower()  # the follow-up was searched with the earlier question's words
    assert "buộc thôi học" in query and "cảnh báo học tập" in query


@slow
def test_lora_weights_url_is_downloaded_once_and_cached(llm_base, weights_server):
    url = weights_server.url("adapter-copy.tar.gz")
    answers = {_answer(llm_base, {"prompt": QUESTION, "max_tokens": 8, "lora_weights": url}) for _ in range(2)}
    assert len(answers) == 1
    assert weights_server.hits["/adapter-copy.tar.gz"] == 1
    cache = Path(llm_base.env["XDG_CACHE_HOME"]) / "rag" / "weights"
    assert len(list(cache.glob("*/my-adapter/adapter_config.json"))) == 1


def _answer(server: CogServer, inputs: dict) -> str:
    return json.loads(_text(_ok(server.predict({**inputs, "output_format": "json"}))))["answer"]


@slow
def test_lora_weights_url_changes_the_answer_for_that_request_only(llm_base, weights_server):
    """A base without an adapter: lora_weights is loaded and used for its request alone."""
    inputs = {"prompt": QUESTION, "max_tokens": 24}
    base = _answer(llm_base, inputs)
    lora = {**inputs, "lora_weights": weights_server.url("lora-a.tar.gz")}
    tuned = _answer(llm_base, lora)
    assert tuned != base
    assert _answer(llm_base, lora) == tuned  # greedy, same adapter: same answer
    assert _answer(llm_base, inputs) == base  # no adapter: the base again, nothing left switched on
    assert weights_server.hits["/lora-a.tar.gz"] == 1


@slow
def test_lora_weights_url_replaces_the_models_own_adapter_for_one_request(llm, weights_server):
    """The sync Runner, whose model already has an adapter (COG_WEIGHTS): another one per request, then back."""
    inputs = {"prompt": QUESTION, "max_tokens": 24}
    own = _answer(llm, inputs)
    other = _answer(llm, {**inputs, "lora_weights": weights_server.url("lora-b.tar.gz")})
    assert other != own
    assert _answer(llm, {**inputs, "lora_weights": weights_server.url("lora-a.tar.gz")}) == own  # same weights
    assert _answer(llm, inputs) == own


@slow
def test_lora_weights_for_another_base_is_refused_naming_both(llm, weights_server):
    url = weights_server.url("lora-mismatched.tar.gz")
    where, message = _rejection(llm.predict({"prompt": QUESTION, "lora_weights": url}))
    assert where == "runner" and message.startswith("adapter_mismatch: "), message
    # both models are named (paths are scrubbed for the client: the setup log has them)
    assert "does not fit the base model: it was trained for base '<path>', but RAG_LLM is '<path>'" in message, message
    assert _answer(llm, {"prompt": QUESTION, "max_tokens": 4}) is not None  # the model still answers


# ------------------------------------------------------------------- the weights cache, no server
def test_resolve_deployment_turns_weights_adapter_and_index_url_into_directories(tmp_path, tiny_adapter,  # noqa: F811
                                                                                 demo_index_dir):
    from rag import weights
    from rag.config import Settings
    from rag.errors import ConfigError

    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "index.tar.gz", "w:gz") as tar:
        tar.add(demo_index_dir, arcname="index")
    adapter_tar = tmp_path / "adapter.tar.gz"
    with tarfile.open(adapter_tar, "w:gz") as tar:
        tar.add(tiny_adapter, arcname="adapter")
    server = FileServer(served)
    try:
        s = Settings.from_env({"RAG_LLM": "some/base", "RAG_ADAPTER": str(adapter_tar),
                               "RAG_INDEX_URL": server.url("index.tar.gz"),
                               "RAG_WEIGHTS_CACHE": str(tmp_path / "cache"), "RAG_WEIGHTS_CACHE_GB": "0.5"})
        assert weights.WeightsCache.from_settings(s).max_bytes == 512 * 1024**2
        out = weights.resolve_deployment(s)
        assert Path(out.adapter).is_relative_to(tmp_path / "cache")
        assert (Path(out.adapter) / "adapter_config.json").exists()
        assert out.index_dir.is_relative_to(tmp_path / "cache") and (out.index_dir / "manifest.json").exists()
        # Cog's weights replace RAG_ADAPTER; a directory or a Hub id passes through unchanged
        assert weights.resolve_deployment(s, weights=str(tiny_adapter)).adapter == str(tiny_adapter)
        assert weights.resolve_deployment(s.with_(adapter="owner/adapter")).adapter == "owner/adapter"
        # an explicit RAG_INDEX_DIR wins over RAG_INDEX_URL: nothing is downloaded for it
        assert weights.resolve_deployment(s.with_(adapter=None, index_dir=demo_index_dir)).index_dir == demo_index_dir
        assert server.hits == {"/index.tar.gz": 1}
        with pytest.raises(ConfigError, match="RAG_LLM is not set"):
            weights.resolve_deployment(Settings(), weights=str(tiny_adapter))
        unchanged = Settings()
        assert weights.resolve_deployment(unchanged) is unchanged
    finally:
        server.close()


def test_cache_evicts_least_recently_used_entries(tmp_path, monkeypatch):
    from rag import weights

    d = tmp_path / "srv"
    d.mkdir()
    blob = bytes(range(256)) * 400  # ~100 KB, incompressible enough
    for name in "abc":
        _tar(d / f"{name}.tar", {"adapter_config.json": b"{}", "weights.bin": blob + name.encode()})
    server = FileServer(d)
    try:
        cache = weights.WeightsCache(tmp_path / "cache", max_bytes=250_000)
        a = cache.fetch(server.url("a.tar"), marker="adapter_config.json", what="t")
        b = cache.fetch(server.url("b.tar"), marker="adapter_config.json", what="t")
        assert cache.fetch(server.url("a.tar"), marker="adapter_config.json", what="t") == a  # a used again
        c = cache.fetch(server.url("c.tar"), marker="adapter_config.json", what="t")
        assert a.exists() and c.exists() and not b.exists()  # b was least recently used
        assert cache.size() <= 250_000
        assert server.hits == {"/a.tar": 1, "/b.tar": 1, "/c.tar": 1}
        with pytest.raises(weights.RagError, match=r"above the weights cache limit of 100 B") as e:
            weights.WeightsCache(tmp_path / "small", max_bytes=100).fetch(
                server.url("a.tar"), marker="adapter_config.json", what="t")
        assert e.value.code == "weights_too_large"
    finally:
        server.close()


def test_unsafe_or_nested_tarballs(tmp_path):
    from rag import weights

    evil = _tar(tmp_path / "evil.tar.gz", {"adapter_config.json": b"{}", "../escape.txt": b"x"})
    with pytest.raises(weights.RagError, match="refusing to unpack") as e:
        weights.unpack_tarball(evil, tmp_path / "out", marker="adapter_config.json", what="t")
    assert e.value.code == "weights_unsafe" and not (tmp_path / "escape.txt").exists()
    nested = _tar(tmp_path / "nested.tar.gz", {"run-1/adapter/adapter_config.json": b"{}"})
    root = weights.unpack_tarball(nested, tmp_path / "n", marker="adapter_config.json", what="t")
    assert root == tmp_path / "n" / "run-1" / "adapter"


def test_resolve_adapter_passes_dirs_and_hub_ids_and_unpacks_local_tarballs(tmp_path, tiny_adapter):  # noqa: F811
    from rag import weights

    cache = weights.WeightsCache(tmp_path / "cache")
    assert weights.resolve_adapter(str(tiny_adapter), what="RAG_ADAPTER", cache=cache) == str(tiny_adapter)
    assert weights.resolve_adapter("owner/my-adapter", what="RAG_ADAPTER", cache=cache) == "owner/my-adapter"
    tgz = tmp_path / "a.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(tiny_adapter, arcname="adapter")
    out = Path(weights.resolve_adapter(str(tgz), what="weights", cache=cache))
    assert (out / "adapter_config.json").exists() and out.is_relative_to(cache.directory)
    with pytest.raises(weights.RagError, match="no such file or directory") as e:
        weights.resolve_adapter("/no/such/adapter", what="RAG_ADAPTER", cache=cache)
    assert e.value.code == "adapter_not_found"


def test_render_sources_block_and_json():
    from rag.render import answer_json, sources_block
    from rag.types import Answer, Chunk, Citation, Hit

    c = Citation(document="Quy chế đào tạo", source="qc.md", page=4, article="10",
                 article_title="Cảnh báo học tập", clause="2")
    assert sources_block(Answer("…", False, [c], unsupported_citations=["Điều 99"])) == (
        "\n\nNguồn:\n[1] Quy chế đào tạo, Điều 10, Khoản 2, trang 4\n"
        "(không có trong tài liệu được truy xuất: Điều 99)"
    )
    assert sources_block(Answer(REFUSAL, True, [])) == ""
    hit = Hit(Chunk(id="abc", text="t", header="h", document="Quy chế đào tạo", source="qc.md", article="10"),
              score=0.5, rank=1)
    d = answer_json(Answer("x", False, [c], hits=[hit]))
    assert d["passages"] == [{"rank": 1, "score": 0.5, "id": "abc", "citation": citation_dict(hit.chunk.citation())}]
    assert not math.isnan(d["passages"][0]["score"])
