"""Cold start: process start → first answer, on CPU with the demo index, for the three ways rag is served.

    python benchmarks/run_all.py --only coldstart

Each is a fresh Python process (the clock starts just before it is spawned and
stops when it prints its first answer):

- the CLI: ``rag ask QUESTION --index DEMO --json``;
- the Cog runner: ``predict.py``'s runner class, ``setup()`` then its predict
  method, called directly (no Cog HTTP server);
- the Cog HTTP server: ``python -m cog.server.http`` with the runner cog.yaml names,
  polled until ready, then its first prediction (what a cold Replicate container does);
- the RunPod worker: ``runpod_worker/handler.py``'s handler with one job (no SDK loop);
- the RunPod worker as deployed: ``python runpod_worker/handler.py --test_input JOB``
  (the SDK included: its import starts py-cpuinfo in a child process), until the
  SDK logs the job's result.

Reference: a process that only imports the heavy libraries every one of them
loads (torch, sentence-transformers, chromadb, bm25s, pyvi) — the floor no
serving code can go under. Runs are repeated and the median is reported. The
environment is cleaned of RAG_* settings (extractive answers, no LLM) and CUDA
is hidden.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, Ctx, Row, main_alone, median, verdict  # noqa: E402

RUNS = 3
TIMEOUT_S = 240
QUESTION = "Điều kiện để được xét học bổng khuyến khích học tập là gì?"
MARK = "FIRST_ANSWER"

IMPORTS = f"""
import torch, sentence_transformers, chromadb, bm25s, pyvi.ViTokenizer
print({MARK!r}, flush=True)
"""

COG = f"""
import asyncio, inspect, os, sys
import predict
cls = getattr(predict, "Runner", None) or getattr(predict, "Predictor")
runner = cls()
runner.setup()
fn = getattr(runner, "run", None) or getattr(runner, "predict")
kwargs = {{}}
for name, p in inspect.signature(fn).parameters.items():
    if p.default is not inspect.Parameter.empty:
        kwargs[name] = getattr(p.default, "default", p.default)  # cog.Input(...) → its default value
kwargs["prompt" if "prompt" in kwargs else "question"] = sys.argv[1]  # Replicate's input name, or the older one
out = fn(**kwargs)
async def first(agen):
    async for x in agen:
        return x
if inspect.isasyncgen(out):
    got = asyncio.run(first(out))
elif inspect.iscoroutine(out):
    got = asyncio.run(out)
elif inspect.isgenerator(out):
    got = next(out)
else:
    got = out
assert got and "error" not in str(got)[:40].lower(), got
print({MARK!r}, flush=True)
os._exit(0)
"""

RUNPOD = f"""
import asyncio, os, sys
from runpod_worker import handler as h
async def first():
    async for out in h.handler({{"id": "bench", "input": {{"prompt": sys.argv[1]}}}}):
        return out
got = asyncio.run(first())
assert isinstance(got, dict) and "error" not in got, got
print({MARK!r}, flush=True)
os._exit(0)
"""


def _env(index_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_INDEX_DIR=str(index_dir), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", ANONYMIZED_TELEMETRY="False",
               CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


SDK_RESULT = "Job result:"  # what the RunPod SDK logs (stdout) when a --test_input job has finished


def time_to_first_answer(argv: list[str], env: dict, marker: str | None = MARK) -> float:
    """Seconds from spawning the process to its first answer line (marker, or any stdout line for the CLI)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if (marker is None and line.strip()) or (marker is not None and line.strip() == marker) or (
                    marker == SDK_RESULT and marker in line):
                elapsed = time.perf_counter() - t0
                if marker is None and '"answer"' not in line:
                    raise RuntimeError(f"unexpected output: {line[:200]}")
                return elapsed
        proc.wait(timeout=TIMEOUT_S)
        tail = (proc.stderr.read() or "").strip().splitlines()[-3:]
        raise RuntimeError(f"exit {proc.returncode} without an answer: {' | '.join(tail)}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def time_cog_server(env: dict) -> float:
    """Seconds from spawning ``python -m cog.server.http`` to the answer of its first prediction."""
    import signal

    import requests

    from bench_load import _free_port, cog_runner_ref

    port = _free_port()
    env = {**env, "PORT": str(port), "COG_PREDICT_TYPE_STUB": cog_runner_ref()}
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the Cog server exited with {proc.returncode}")
            if time.perf_counter() - t0 > TIMEOUT_S:
                raise RuntimeError(f"the Cog server was not ready after {TIMEOUT_S} s")
            try:
                status = requests.get(f"{url}/health-check", timeout=2).json().get("status")
            except (requests.ConnectionError, requests.Timeout, ValueError):
                status = None
            if status == "SETUP_FAILED":
                raise RuntimeError("the Cog server's setup failed")
            if status == "READY":
                break
            time.sleep(0.05)
        r = requests.post(f"{url}/predictions", json={"input": {"prompt": QUESTION}}, timeout=TIMEOUT_S)
        elapsed = time.perf_counter() - t0
        if r.status_code != 200 or r.json().get("status") != "succeeded":
            raise RuntimeError(f"the first prediction failed: {r.status_code} {r.text[:200]}")
        return elapsed
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own group: the server and its worker
        except ProcessLookupError:
            pass
        proc.wait()


def run(ctx: Ctx) -> list[Row]:
    index_dir = ctx.demo_index()
    env = _env(index_dir)
    py = sys.executable
    rag_exe = Path(py).with_name("rag")
    cli = [str(rag_exe)] if rag_exe.exists() else [py, "-m", "rag.cli"]
    runners = [("imports only", [py, "-c", IMPORTS], MARK, None),
               ("CLI: rag ask --index DEMO --json", cli + ["ask", QUESTION, "--index", str(index_dir), "--json"], None,
                None)]
    if (REPO / "predict.py").exists():
        runners.append(("Cog runner: predict.py setup() + first prediction", [py, "-c", COG, QUESTION], MARK, None))
    else:
        runners.append(("Cog runner", None, None, "predict.py is absent"))
    runners.append(("Cog HTTP server: start → ready → first prediction", "cog-http", None, None))
    if (REPO / "runpod_worker" / "handler.py").exists():
        runners.append(("RunPod worker: handler.py, first job", [py, "-c", RUNPOD, QUESTION], MARK, None))
        job = json.dumps({"input": {"prompt": QUESTION}}, ensure_ascii=False)
        runners.append(("RunPod worker as deployed: handler.py --test_input (SDK included)",
                        [py, str(REPO / "runpod_worker" / "handler.py"), "--test_input", job], SDK_RESULT, None))
    else:
        runners.append(("RunPod worker", None, None, "runpod_worker/handler.py is absent"))
    # Rounds rather than one runner at a time: a burst of load from other work then hits every runner alike.
    times: dict[str, list[float]] = {label: [] for label, *_ in runners}
    errors: dict[str, str] = {}
    for _ in range(RUNS):
        for label, argv, marker, absent in runners:
            if absent or label in errors:
                continue
            try:
                times[label].append(time_cog_server(env) if argv == "cog-http" else
                                    time_to_first_answer(argv, env, marker))
            except Exception as e:  # noqa: BLE001 - a broken runner is a result, not a crash of the whole run
                errors[label] = str(e)
    floor = times.pop("imports only")
    if not floor:
        raise RuntimeError(f"the reference process failed: {errors.get('imports only')}")
    ref = f"{median(floor):.1f}"
    what = "a process importing torch, sentence-transformers, chromadb, bm25s, pyvi"
    rows = []
    for label, argv, marker, absent in runners[1:]:
        if absent or label in errors:
            why = absent or errors[label][:160]
            rows.append(Row("cold start", label, "skipped" if absent else "failed", ref, what, why))
            ctx.notes.append(f"cold start: {label} {'skipped' if absent else 'failed'}: {absent or errors[label]}")
            continue
        t = times[label]
        ratio = median(t) / median(floor)
        rows.append(Row("cold start", f"{label}, s (median of {len(t)})", f"{median(t):.1f} ({ratio:.2f}×)",
                        f"{ref} (min {min(floor):.1f})", what,
                        f"{verdict(ratio <= 1.2, f'≤ 1.2× (is {ratio:.2f}×)')}; min {min(t):.1f}, max {max(t):.1f}"))
    return rows


if __name__ == "__main__":
    sys.exit(main_alone({"coldstart": run}))
