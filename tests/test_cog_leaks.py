"""What a Cog client sees of a failure: no traceback, no server path, in the prediction's ``error`` or ``logs``.

One real Cog HTTP server (tests/_cog_server.py), extractive over the demo index, running a runner that
subclasses predict.py's and injects an internal fault into the pipeline when the prompt asks for it.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from _cog_server import REPO, CogServer

pytestmark = pytest.mark.slow

QUESTION = "Sinh viên bị cảnh báo học tập trong những trường hợp nào?"
FAULT = "lỗi nội bộ thử nghiệm"  # this prompt makes the injected pipeline fail

FAULTY_RUNNER = '''
from predict import Runner as _Runner


class Runner(_Runner):
    def setup(self, weights=None):
        super().setup(weights)
        retrieve = self.pipeline._retrieve

        def faulty(request):
            if request.question == %r:
                raise FileNotFoundError(2, "No such file or directory", "/work/secret/index/bm25/scores.npy")
            return retrieve(request)

        self.pipeline._retrieve = faulty
''' % FAULT

# Internals a client must never see: a traceback, a path on the server, where packages live.
LEAKS = re.compile(r"Traceback|/work/|/home/|/tmp/|/usr/|site-packages|\.py\", line|File \"/")

NESTED = "[" * 10_000 + "]" * 10_000

BAD = [
    ("empty_prompt", {"prompt": ""}),
    ("no_word_prompt", {"prompt": "?"}),
    ("history_not_json", {"prompt": QUESTION, "history": "[{"}),
    ("history_content_object", {"prompt": QUESTION, "history": json.dumps([{"role": "user", "content": {"a": 1}}])}),
    ("history_content_list", {"prompt": QUESTION, "history": json.dumps([{"role": "user", "content": ["x", ["y"]]}])}),
    ("history_role_object", {"prompt": QUESTION, "history": json.dumps([{"role": {"x": [1]}, "content": "x"}])}),
    ("history_deeply_nested", {"prompt": QUESTION, "history": NESTED}),
    ("history_object", {"prompt": QUESTION, "history": json.dumps({"role": "user", "content": "x"})}),
    ("stop_nested", {"prompt": QUESTION, "stop_sequences": "[[[\"x\"]]]"}),
    ("lora_path", {"prompt": QUESTION, "lora_weights": "/etc/passwd"}),
    ("unknown_input", {"prompt": QUESTION, "nope": 1}),
    ("internal_fault", {"prompt": FAULT}),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_index_dir):
    root = tmp_path_factory.mktemp("cog_leaks")
    project = root / "project"
    project.mkdir()
    shutil.copy(REPO / "predict.py", project / "predict.py")
    shutil.copy(REPO / "cog.yaml", project / "cog.yaml")
    (project / "faulty.py").write_text(FAULTY_RUNNER, encoding="utf-8")
    s = CogServer("faulty", project, {"RAG_INDEX_DIR": demo_index_dir, "XDG_CACHE_HOME": root / "cache"},
                  root / "faulty.log", ref="faulty.py:Runner").start()
    try:
        body = s.wait()
        assert body["status"] == "READY", (body, s.tail())
        yield s
    finally:
        s.stop()


def _failed(server: CogServer, inputs: dict) -> dict:
    r = server.predict(inputs)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "failed", body
    return body


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_a_failed_prediction_shows_no_traceback_or_path(server, case):
    _id, inputs = case
    body = _failed(server, inputs)
    assert not LEAKS.search(body["error"]), body["error"]
    logs = server.prediction_logs(body)
    assert not LEAKS.search(logs), logs


def test_an_internal_fault_says_internal_error_and_the_log_keeps_where_it_happened(server):
    body = _failed(server, {"prompt": FAULT})
    assert "internal_error: the worker failed to answer (FileNotFoundError)" in body["error"], body["error"]
    logs = server.prediction_logs(body)  # the owner can still find the fault: its type and where it happened
    assert "internal_error: FileNotFoundError: " in logs and "<path>" in logs, logs
    assert "faulty:12 in faulty" in logs and "rag.streaming:" in logs, logs


@pytest.mark.parametrize("inputs, message", [
    ({"history": json.dumps([{"role": "user", "content": {"a": 1}}])}, "'history[0].content' must be a string"),
    ({"history": json.dumps([{"role": "user", "content": [1, [2]]}])}, "'history[0].content' must be a string"),
    ({"history": NESTED}, "'history' is nested too deeply"),
])
def test_nested_history_is_an_input_error(server, inputs, message):
    body = _failed(server, {"prompt": QUESTION, **inputs})
    assert "invalid_input: " in body["error"] and message in body["error"], body["error"]


def test_the_server_still_answers_after_the_faults(server):
    r = server.predict({"prompt": QUESTION})
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
