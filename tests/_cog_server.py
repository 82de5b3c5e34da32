"""A real Cog HTTP server (``python -m cog.server.http``, coglet) in a subprocess, for tests/test_cog.py.

``CogServer(cwd, env).start()`` launches it on a free port of 127.0.0.1 in its own
process group (coglet spawns a worker subprocess; ``stop()`` ends the whole group);
``wait()`` polls /health-check and records every status it saw. Also: a tiny local
file server for weights URLs, and an SSE reader.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class CogServer:
    name: str
    cwd: Path
    env: dict
    log_path: Path
    ref: str = "predict.py:Runner"
    port: int = 0
    proc: subprocess.Popen | None = None
    statuses: list = field(default_factory=list)
    health_body: dict = field(default_factory=dict)
    started_at: float = 0.0
    ready_after_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "CogServer":
        self.port = free_port()
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "COG_", "HF_TOKEN"))}
        env = {**inherited, **{k: str(v) for k, v in self.env.items()}, "PORT": str(self.port),
               "COG_PREDICT_TYPE_STUB": self.ref, "PYTHONUNBUFFERED": "1"}
        env = {k: v for k, v in env.items() if v != ""}  # "" in self.env means: unset it
        self.log = open(self.log_path, "wb")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"],
            cwd=self.cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    def health(self) -> dict:
        return requests.get(f"{self.url}/health-check", timeout=5).json()

    def wait(self, until=("READY", "SETUP_FAILED"), timeout: float = 240.0) -> dict:
        """Poll /health-check until a status in ``until``; every distinct status seen is kept in order."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name}: the server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                body = self.health()
            except (requests.ConnectionError, requests.Timeout, ValueError):
                time.sleep(0.2)
                continue
            status = body.get("status")
            if not self.statuses or self.statuses[-1] != status:
                self.statuses.append(status)
            if status in until:
                self.health_body = body
                if self.ready_after_s is None:
                    self.ready_after_s = time.monotonic() - self.started_at
                return body
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: not {until} after {timeout:.0f} s (seen {self.statuses}):\n{self.tail()}")

    def setup_logs(self, expect: str, timeout: float = 15.0) -> str:
        """/health-check's setup logs once they contain ``expect`` (the worker's last lines can land
        a moment after the status flips)."""
        deadline = time.monotonic() + timeout
        while True:
            logs = self.health().get("setup", {}).get("logs", "")
            if expect in logs or time.monotonic() > deadline:
                return logs
            time.sleep(0.2)

    def wait_idle(self, timeout: float = 15.0) -> None:
        """Wait while /health-check says BUSY (every slot taken).

        coglet 0.23 gives a prediction's slot back a moment after it has sent the response ("delayed
        IdleToken consumption"), so a request sent right after the previous one's response can get
        409 "At capacity" from the one-slot sync runner. Tests send one request after another, so
        ``predict`` and ``stream`` wait here first.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.health().get("status") != "BUSY":
                    return
            except (requests.ConnectionError, requests.Timeout, ValueError):
                return  # the request itself will fail and say why
            time.sleep(0.05)

    def predict(self, input: dict, *, timeout: float = 120.0, **kw) -> requests.Response:
        self.wait_idle()
        return requests.post(f"{self.url}/predictions", json={"input": input}, timeout=timeout, **kw)

    def stream(self, input: dict, *, prediction_id: str | None = None, timeout: float = 120.0):
        """Open an SSE prediction (PUT with an id, or POST); yields (event, data) pairs."""
        headers = {"Accept": "text/event-stream"}
        self.wait_idle()
        if prediction_id:
            r = requests.put(f"{self.url}/predictions/{prediction_id}", json={"input": input}, headers=headers,
                             stream=True, timeout=timeout)
        else:
            r = requests.post(f"{self.url}/predictions", json={"input": input}, headers=headers, stream=True,
                              timeout=timeout)
        return r, sse_events(r)

    def prediction_logs(self, body: dict) -> str:
        """What the runner printed during one prediction, as coglet attributes it to the prediction (its logs on
        Replicate, which its client reads): the prediction's ``logs`` plus the server log's lines tagged with its
        id and an output stream."""
        lines = [body.get("logs") or ""]
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                fields = json.loads(raw).get("fields", {})
            except (ValueError, AttributeError):
                continue
            if fields.get("prediction_id") == body.get("id") and fields.get("source") in ("Stdout", "Stderr"):
                lines.append(fields.get("message", ""))
        return "\n".join(lines)

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own process group: the server and its worker
            self.proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


def sse_events(response: requests.Response):
    """Parse a text/event-stream body into (event, data-as-JSON) pairs."""
    response.encoding = "utf-8"  # SSE is UTF-8 by definition; requests would guess ISO-8859-1
    event, data = None, []
    for raw in response.iter_lines(chunk_size=None, decode_unicode=True):  # lines as they arrive
        if raw is None:
            continue
        if raw == "":
            if event or data:
                text = "\n".join(data)
                try:
                    payload = json.loads(text) if text else None
                except ValueError:
                    payload = text
                yield event or "message", payload
            event, data = None, []
        elif raw.startswith("event:"):
            event = raw[6:].strip()
        elif raw.startswith("data:"):
            data.append(raw[5:].lstrip())


class FileServer:
    """Serves a directory on 127.0.0.1 (plain http.server in a thread) and counts GETs per path."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.hits: dict[str, int] = {}
        hits = self.hits
        root = str(self.directory)

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=root, **kw)

            def do_GET(self):  # noqa: N802
                hits[self.path] = hits.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *a):
                pass

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that hangs up early (a refused download) is not a test failure

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
