"""Throughput under concurrent requests: the Cog HTTP server, the RunPod local API and `rag serve`.

    python benchmarks/bench_load.py --quick     # about 2-3 min on 2 CPU cores
    python benchmarks/bench_load.py             # 3 rounds, more requests, about 5 min
    python benchmarks/run_all.py --only load    # the full run, as a row group of RESULTS.md

Three real servers over the demo index, extractive answers (no LLM), CUDA hidden:

- Cog: ``python -m cog.server.http`` with the runner cog.yaml names (``COG_PREDICT_TYPE_STUB``),
  ``POST /predictions`` with ``output_format=json``. The runner takes one prediction at a time
  (cog.yaml; Replicate queues the rest and adds containers), so the clients queue for its one slot
  here and a request's latency includes its wait in that queue; coglet frees the slot a moment
  after it answers, so a 409 "At capacity" then is sent again after 5 ms (counted);
- RunPod: ``runpod_worker/handler.py --rp_serve_api`` (the SDK's local API), ``POST /runsync``;
- ``rag serve``: ``POST /v1/chat/completions``.

Each server runs twice, with query micro-batching on (RAG_EMBED_BATCH_WAIT_MS default) and off
(RAG_EMBED_BATCH_WAIT_MS=0). All six are started before any is measured, then for each
concurrency level (1, 4, 8, 16 clients in a closed loop, each sending its next request when the
previous one is answered) the servers are measured one after another, batching on and off back
to back, so load from other work hits both alike; a full run repeats that in 3 rounds, on first
then off first in turn, and pools the rounds (--quick: 1 round, fewer requests). The demo questions are sent in turn.
Reported per server, mode and level: requests/s, p50 and p95 latency, and their ratios to the
same server's one-request-at-a-time figures (level 1, same mode, same run); and the requests/s
of batching on over off. The clients run in this process, on the same cores as the servers:
the load average is printed per level.

Out of scope: generation by an LLM (rag.generate serialises it per model; volume belongs to a
serving engine such as vLLM), several worker processes per machine.
"""

from __future__ import annotations

import argparse
import itertools
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import REPO, Ctx, Row, load_average, machine, ms, p50_p95, table  # noqa: E402

LEVELS = (1, 4, 8, 16)
START_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 120
MODES = (("on", None), ("off", "0"))  # RAG_EMBED_BATCH_WAIT_MS: unset (the default) or 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cog_runner_ref() -> str:
    """What cog.yaml's ``predict:`` names (predict.py:Runner), read the way `cog` reads it."""
    import yaml

    return yaml.safe_load((REPO / "cog.yaml").read_text(encoding="utf-8"))["predict"]


@dataclass
class Server:
    kind: str  # "Cog", "RunPod", "rag serve"
    mode: str  # micro-batching "on" or "off"
    argv: list[str]
    env: dict
    url: str
    log_path: Path
    proc: subprocess.Popen | None = None
    retries: int = 0  # Cog's 409 "At capacity" answers, sent again
    _queue: queue.Queue | None = None  # Cog: the clients' requests in arrival order, for the runner's one slot
    _local: threading.local = field(default_factory=threading.local)

    @property
    def name(self) -> str:
        return f"{self.kind}, batching {self.mode}"

    def _predict(self, question: str) -> bool:
        while True:
            r = self.session.post(f"{self.url}/predictions", timeout=REQUEST_TIMEOUT_S,
                                  json={"input": {"prompt": question, "output_format": "json"}})
            if r.status_code != 409:
                return r.status_code == 200 and r.json().get("status") == "succeeded"
            self.retries += 1  # the slot of the previous answer is not free yet
            time.sleep(0.005)

    def _dispatch(self) -> None:
        """Cog: one request at a time, first come first served (what a queue in front of the runner does)."""
        while (job := self._queue.get()) is not None:
            question, done = job
            try:
                done.set_result(self._predict(question))
            except Exception as e:  # noqa: BLE001 - the client counts it as failed
                done.set_exception(e)

    def start(self) -> None:
        if self.kind == "Cog":
            self._queue = queue.Queue()
            threading.Thread(target=self._dispatch, daemon=True).start()
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def stop(self) -> None:
        if self._queue is not None:
            self._queue.put(None)
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # its own group: Cog's server and its worker
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if getattr(self, "_log", None):
            self._log.close()

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    @property
    def session(self):
        import requests

        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def ready(self) -> bool:
        import requests

        try:
            if self.kind == "Cog":
                return self.session.get(f"{self.url}/health-check", timeout=5).json().get("status") == "READY"
            if self.kind == "rag serve":
                return self.session.get(f"{self.url}/health", timeout=5).status_code == 200
            return self.send("Điều kiện tốt nghiệp")  # the SDK's local API has no health route
        except (requests.ConnectionError, requests.Timeout, ValueError):
            return False

    def wait_ready(self, deadline: float) -> None:
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: exited with {self.proc.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: not ready after {START_TIMEOUT_S} s: {self.tail()}")
            time.sleep(0.5)

    def send(self, question: str) -> bool:
        """One request; True when the server answered it (an answer or a refusal, not an error)."""
        if self.kind == "Cog":
            if self._queue is None:
                return self._predict(question)
            done = Future()
            self._queue.put((question, done))
            return done.result()
        if self.kind == "RunPod":
            r = self.session.post(f"{self.url}/runsync", json={"input": {"prompt": question}},
                                  timeout=REQUEST_TIMEOUT_S)
            body = r.json() if r.status_code == 200 else {}
            out = body.get("output") or [{}]
            return body.get("status") == "COMPLETED" and isinstance(out[-1], dict) and "error" not in out[-1]
        r = self.session.post(f"{self.url}/v1/chat/completions", timeout=REQUEST_TIMEOUT_S,
                              json={"model": "rag", "messages": [{"role": "user", "content": question}]})
        return r.status_code == 200 and bool(r.json().get("choices"))


def _env(index_dir: Path, wait_ms: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "COG_", "RUNPOD_"))}
    env.update(RAG_INDEX_DIR=str(index_dir), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               ANONYMIZED_TELEMETRY="False", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1",
               UVICORN_LOG_LEVEL="warning", PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    if wait_ms is not None:
        env["RAG_EMBED_BATCH_WAIT_MS"] = wait_ms
    return env


def servers(index_dir: Path, logs: Path, kinds=("Cog", "RunPod", "rag serve")) -> list[Server]:
    py = sys.executable
    out = []
    for kind in kinds:
        for mode, wait_ms in MODES:
            port = _free_port()
            env = _env(index_dir, wait_ms)
            if kind == "Cog":
                argv = [py, "-m", "cog.server.http", "--host", "127.0.0.1"]
                env.update(PORT=str(port), COG_PREDICT_TYPE_STUB=cog_runner_ref())
            elif kind == "RunPod":
                argv = [py, str(REPO / "runpod_worker" / "handler.py"), "--rp_serve_api", "--rp_api_host",
                        "127.0.0.1", "--rp_api_port", str(port)]
            else:
                argv = [py, "-m", "rag.cli", "serve", "--index", str(index_dir), "--port", str(port)]
            slug = re.sub(r"\W+", "-", f"{kind}-{mode}").lower()
            out.append(Server(kind, mode, argv, env, f"http://127.0.0.1:{port}", logs / f"{slug}.log"))
    return out


ROUNDS = 3


@dataclass
class Level:
    requests: int
    wall_s: float
    latencies_ms: list[float]
    failed: int
    retries: int
    load: str

    def plus(self, other: "Level") -> "Level":
        """Two rounds pooled: requests over the summed time, every latency; the later load average."""
        return Level(self.requests + other.requests, self.wall_s + other.wall_s,
                     self.latencies_ms + other.latencies_ms, self.failed + other.failed,
                     self.retries + other.retries, other.load)

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s

    @property
    def p50_p95(self) -> tuple[float, float]:
        return p50_p95(self.latencies_ms)


def measure(server: Server, questions: list[str], clients: int, n: int) -> Level:
    """``n`` requests from ``clients`` threads in a closed loop; the demo questions in turn."""
    counter = itertools.count()
    latencies: list[float] = []
    failed = [0]
    lock = threading.Lock()
    retries0 = server.retries

    def client() -> None:
        while (i := next(counter)) < n:
            t = time.perf_counter()
            try:
                ok = server.send(questions[i % len(questions)])
            except Exception:  # noqa: BLE001 - a failed request is counted, not fatal
                ok = False
            elapsed = (time.perf_counter() - t) * 1000
            with lock:
                latencies.append(elapsed)
                failed[0] += not ok

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return Level(n, time.perf_counter() - t0, latencies, failed[0], server.retries - retries0, load_average())


def run_load(index_dir: Path, questions: list[str], logs: Path, *, quick: bool = False, levels=LEVELS,
             kinds=("Cog", "RunPod", "rag serve"), log=print) -> dict:
    """{(kind, mode): {clients: Level}} plus the start-up note; servers are stopped on return."""
    group = servers(index_dir, logs, kinds)
    results: dict[tuple[str, str], dict[int, Level]] = {(s.kind, s.mode): {} for s in group}
    try:
        t = time.perf_counter()
        for s in group:  # all at once: their imports overlap
            s.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        for s in group:
            s.wait_ready(deadline)
        log(f"{len(group)} servers ready in {time.perf_counter() - t:.0f} s; load {load_average()}")
        for s in group:  # warm-up outside every clock: first requests, then a small burst
            for q in questions[:3]:
                s.send(q)
            measure(s, questions, 4, 8)
        rounds = 1 if quick else ROUNDS
        for clients in levels:
            n = max(12, 2 * clients) if quick else max(24, 4 * clients)
            for r in range(rounds):
                for kind in kinds:
                    for mode, _ in (MODES if r % 2 == 0 else MODES[::-1]):
                        s = next(x for x in group if (x.kind, x.mode) == (kind, mode))
                        lv = measure(s, questions, clients, n)
                        p50, p95 = lv.p50_p95
                        log(f"  {s.name:<28} {clients:>2} clients: {lv.rps:6.1f} req/s  p50 {ms(p50):>5} ms  "
                            f"p95 {ms(p95):>5} ms  failed {lv.failed}  load {lv.load}")
                        before = results[(kind, mode)].get(clients)
                        results[(kind, mode)][clients] = lv if before is None else before.plus(lv)
    finally:
        for s in group:
            s.stop()
    return results


def rows_and_table(results: dict, levels=LEVELS) -> tuple[list[Row], list[list[str]]]:
    """RESULTS.md rows (batching on, the default, vs one request at a time) and the full printed table."""
    rows, lines = [], []
    for (kind, mode), by_level in results.items():
        if 1 not in by_level:
            continue
        single = by_level[1]
        s50, _ = single.p50_p95
        for clients in levels:
            lv = by_level.get(clients)
            if lv is None:
                continue
            p50, p95 = lv.p50_p95
            other = results.get((kind, "off" if mode == "on" else "on"), {}).get(clients)
            gain = f"{lv.rps / other.rps:.2f}×" if other and mode == "on" else ""
            lines.append([kind, mode, str(clients), str(lv.requests), f"{lv.rps:.1f}", f"{lv.rps / single.rps:.2f}×",
                          ms(p50), ms(p95), f"{p50 / s50:.2f}×", f"{p95 / s50:.2f}×", gain,
                          f"{lv.failed}" + (f" ({lv.retries} × 409)" if lv.retries else ""), lv.load])
            if mode == "on" and clients > 1:
                off = f"; batching off: {other.rps:.1f} req/s, p50 {ms(other.p50_p95[0])} ms ({gain} on/off)" \
                    if other else ""
                rows.append(Row("load", f"{kind}, {clients} concurrent: req/s, p50 / p95 ms",
                                f"{lv.rps:.1f} ({lv.rps / single.rps:.2f}×), {ms(p50)} / {ms(p95)}",
                                f"{single.rps:.1f}, {ms(s50)} / {ms(single.p50_p95[1])}",
                                "one request at a time, same server, same run",
                                f"load {lv.load}{off}" + (f"; {lv.failed} failed" if lv.failed else "")))
    return rows, lines


HEADERS = ["server", "batching", "clients", "requests", "req/s", "× single", "p50 ms", "p95 ms", "p50 ÷ single p50",
           "p95 ÷ single p50", "req/s on ÷ off", "failed", "load 1/5/15"]


def run(ctx: Ctx, quick: bool = False) -> list[Row]:
    """The run_all entry: rows for RESULTS.md; the full table goes to ctx.sections["load"]."""
    from common import markdown_table

    index_dir = ctx.demo_index()
    logs = ctx.tmp / "load-logs"
    logs.mkdir(parents=True, exist_ok=True)
    results = run_load(index_dir, ctx.demo_questions(), logs, quick=quick,
                       log=lambda m: print(m, file=sys.stderr, flush=True))
    rows, lines = rows_and_table(results)
    ctx.sections["load"] = (
        "Every level, batching on (the default) and off; ratios against the same server's one-request-at-a-time "
        "figures (1 client) in this run. Extractive answers on the demo index; the clients run on the same cores as "
        "the servers. The Cog runner takes one prediction at a time (cog.yaml), so its clients queue for it and "
        "micro-batching cannot change its figures; the RunPod local API and `rag serve` answer concurrent "
        "requests.\n\n" + markdown_table(lines, HEADERS))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests per level (about 2-3 min)")
    ap.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrent clients, comma-separated")
    ap.add_argument("--servers", default="Cog,RunPod,rag serve", help="which servers, comma-separated")
    args = ap.parse_args(argv)
    levels = tuple(sorted({1, *(int(x) for x in args.levels.split(","))}))
    kinds = tuple(k.strip() for k in args.servers.split(",") if k.strip())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"{machine()}\nload average at start: {load_average()}", flush=True)
    ctx = Ctx()
    try:
        index_dir = ctx.demo_index()
        ctx._embedder = None  # the servers load their own; this process only sends requests
        logs = ctx.tmp / "logs"
        logs.mkdir()
        results = run_load(index_dir, ctx.demo_questions(), logs, quick=args.quick, levels=levels, kinds=kinds,
                           log=lambda m: print(m, flush=True))
    finally:
        ctx.close()
    _, lines = rows_and_table(results, levels)
    print()
    table(lines, HEADERS)
    print(f"\nload average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
