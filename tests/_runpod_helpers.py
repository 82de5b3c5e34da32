"""Small real things for the RunPod worker tests.

- ``PacedGenerator``: stands in for a serving engine that decodes several requests at
  once (a GPU kernel releases the GIL while it runs; ``time.sleep`` does the same), so a
  concurrency test measures the handler, not the per-model lock of ``rag.generate``.
  It records every prompt it was given, its cancel event, and when and after how many tokens
  each run ended.
- ``FailingGenerator``: yields one piece, then fails the way ``rag.generate`` reports a
  CUDA fault (a ModelError chained from the torch RuntimeError).
- ``openai_shim(handler)``: a FastAPI app that forwards ``/openai/v1/...`` to the
  handler through the SDK's own ``run_job_generator`` and answers like the platform's
  OpenAI-compatible route (JSON, or server-sent events while the job streams).
- ``FakeRunPod``: the job queue of a RunPod endpoint on 127.0.0.1 (job-take, job-done,
  job-stream, job-stop), so the real worker loop (JobScaler) runs against it.
- ``ThreadServer``: uvicorn serving an ASGI app on 127.0.0.1 in a daemon thread.
"""

import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

CUDA_FAULT = "CUDA error: an illegal memory access was encountered"


# ------------------------------------------------------------------------------------- generators
class PacedGeneration:
    def __init__(self, n: int, delay: float, cancel, record: dict):
        self._n, self._delay, self._cancel, self._record = n, delay, cancel, record
        self.usage = {"prompt_tokens": 7, "completion_tokens": 0}
        self.timings: dict[str, float] = {}
        self.finish_reason: str | None = None

    def __iter__(self):
        t0 = self._record["started_at"] = time.perf_counter()
        try:
            for i in range(self._n):
                if self._cancel is not None and self._cancel.is_set():
                    self.finish_reason = "cancelled"
                    return
                time.sleep(self._delay)
                self.usage["completion_tokens"] += 1
                if i == 0:
                    self.timings["first_token_ms"] = (time.perf_counter() - t0) * 1000
                yield f"tok{i} "
            self.finish_reason = "length"
            self.timings["total_ms"] = (time.perf_counter() - t0) * 1000
        finally:  # also when the consumer closes the stream early
            self._record["ended_at"] = time.perf_counter()
            self._record["tokens"] = self.usage["completion_tokens"]


class PacedGenerator:
    def __init__(self, tokenizer, delay: float = 0.03, context_tokens: int = 1024):
        self.tokenizer = tokenizer
        self.delay = delay
        self.context_tokens = context_tokens
        self.calls: list[dict] = []
        self._lock = threading.Lock()

    def stream(self, prompt_text, request, cancel=None):
        record = {"prompt": prompt_text, "max_new_tokens": request.max_new_tokens, "cancel": cancel}
        with self._lock:
            self.calls.append(record)
        return PacedGeneration(request.max_new_tokens, self.delay, cancel, record)

    def warmup(self):
        return None


class FailingGenerator(PacedGenerator):
    def stream(self, prompt_text, request, cancel=None):
        from rag.errors import ModelError

        def run():
            yield "Theo "
            try:
                raise RuntimeError(CUDA_FAULT)
            except RuntimeError as e:  # how rag.generate reports a failure in its worker thread
                raise ModelError(f"generation failed: {e}", code="generation_failed") from e

        g = run()

        class _Gen:
            usage, timings, finish_reason = {}, {}, None

            def __iter__(self):
                return g

        return _Gen()


# ----------------------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """uvicorn serving an ASGI app on 127.0.0.1 in a daemon thread."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ThreadServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def openai_shim(handler):
    """What the platform's /openai/v1 route does with a queue worker, reduced to one process."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from runpod.serverless.modules.rp_job import run_job_generator

    from rag.openai_compat import ROUTE_CHAT, ROUTE_MODELS

    app = FastAPI()

    async def outputs(route: str, body):
        job_input = {"openai_route": route}
        if body is not None:
            job_input["openai_input"] = body
        async for part in run_job_generator(handler, {"id": f"shim-{uuid.uuid4().hex}", "input": job_input}):
            # "error" at this level would mean the handler raised: a bug the tests must see.
            yield {"error": part["error"]} if "error" in part else part["output"]

    def is_error(out) -> bool:
        return isinstance(out, dict) and "error" in out

    def error_response(out) -> JSONResponse:
        # the worker's OpenAI error body (JSON text), as it is; a handler that raised gives no JSON (a bug)
        body = json.loads(out["error"])
        return JSONResponse(body, status_code=400 if body["error"]["type"] == "invalid_request_error" else 500)

    @app.get("/openai/v1/models")
    async def models():
        outs = [o async for o in outputs(ROUTE_MODELS, None)]
        return error_response(outs[-1]) if is_error(outs[-1]) else JSONResponse(outs[0])

    @app.post("/openai/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        gen = outputs(ROUTE_CHAT, body)
        if isinstance(body, dict) and body.get("stream") is True:
            first = await gen.__anext__()
            if is_error(first):
                return error_response(first)

            async def events():
                yield first
                async for out in gen:
                    if is_error(out):
                        yield f"data: {out['error']}\n\n"
                        return
                    yield out

            return StreamingResponse(events(), media_type="text/event-stream")
        outs = [o async for o in gen]
        if is_error(outs[-1]):
            return error_response(outs[-1])
        assert len(outs) == 1, outs  # a non-streaming request is answered by exactly one output
        return JSONResponse(outs[0])

    return app


# ------------------------------------------------------------------------------ a fake job queue
@dataclass
class FakeRunPod:
    """The endpoint side of RunPod's worker protocol (as the runpod SDK calls it), on 127.0.0.1."""

    jobs: list[dict]
    taken: list[tuple[float, list[str], int]] = field(default_factory=list)  # (time, ids, batch size asked)
    done: dict[str, dict] = field(default_factory=dict)
    streamed: dict[str, list] = field(default_factory=list)

    def __post_init__(self):
        self.streamed = {}
        self.lock = threading.Lock()
        self.all_done = threading.Event()
        self.expected = {j["id"] for j in self.jobs}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, body=None):
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlparse(self.path)
                query = parse_qs(url.query)
                if url.path.startswith("/job-stop/"):
                    time.sleep(0.5)
                    return self._reply(204)
                batch = url.path.startswith("/job-take-batch/")
                if not (batch or url.path.startswith("/job-take/")):
                    return self._reply(404, {"error": "unknown path"})
                size = int(query.get("batch_size", ["1"])[0]) if batch else 1
                with fake.lock:
                    given, fake.jobs = fake.jobs[:size], fake.jobs[size:]
                    if given:
                        fake.taken.append((time.perf_counter(), [j["id"] for j in given], size))
                if not given:
                    time.sleep(0.2)
                    return self._reply(204)
                return self._reply(200, given if batch else given[0])

            def do_POST(self):
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length).decode("utf-8"))
                job_id = url.path.rstrip("/").rsplit("/", 1)[-1]
                with fake.lock:
                    if url.path.startswith("/job-stream/"):
                        fake.streamed.setdefault(job_id, []).append(body)
                    elif url.path.startswith("/job-done/"):
                        fake.done[job_id] = body
                        if fake.expected <= set(fake.done):
                            fake.all_done.set()
                self._reply(200, {})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def env(self) -> dict[str, str]:
        base = f"http://127.0.0.1:{self.port}"
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?token=test",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?token=test",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID?token=test",
            "RUNPOD_POD_ID": "test-pod",
        }

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
