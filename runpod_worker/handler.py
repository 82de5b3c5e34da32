"""RunPod serverless worker: translates RunPod jobs to rag's one request type and back.

Start it with ``python runpod_worker/handler.py`` (the image's CMD). ``main()``
reads the settings from the environment, loads the pipeline (embedder, index,
LLM, adapter) and warms it up once, before the first job, then hands
``Worker.handler`` to ``runpod.serverless.start``. Importing this module loads
nothing.

Job input, one of:

- native: Replicate's LLM input names, as the Cog model takes them (``prompt``,
  ``system_prompt``, ``max_tokens``, ``temperature``, ``top_p``, ``top_k`` — the
  sampler's —, ``stop_sequences`` (a list), ``seed``, ``num_passages``, ``history``
  (a list of turns)), plus ``lora_weights`` (an adapter tarball URL for this job)
  and ``stream`` (default false). ``rag.request.from_inputs`` maps them onto the one
  validated request. Output: with ``stream`` the text in pieces ``{"text": "..."}``,
  then always one final object ``{"answer", "refused", "citations", "usage",
  "timings", …}`` (``rag.render.answer_dict``).
  Deprecated, for one release: the old names (``question``, ``top_k`` meaning passages,
  ``max_new_tokens``, ``stop``, and the other ``AskRequest`` fields). A job whose input
  has ``question`` is read the old way, and its final object carries ``warnings``
  naming the new inputs.
- OpenAI, as the platform sends its ``/openai/v1`` routes:
  ``{"openai_route": "/v1/chat/completions" | "/v1/models", "openai_input": {...}}``.
  Output: one ``chat.completion`` object, or server-sent-event strings of
  ``chat.completion.chunk`` objects ending with ``data: [DONE]`` (see
  ``rag.openai_compat`` for the ``sources`` field and the sources block).

Errors, whatever their cause, are one object ``{"error": "..."}`` yielded as the last output (the SDK
turns it into a failed job whose error is that string); the handler never raises. A native job's string
is ``"<code>: <message>"``; a job on the OpenAI routes gets the JSON text of OpenAI's error body,
``{"error": {"message", "type", "param", "code"}}`` (``rag.openai_compat.error_response``). A string,
because the SDK's job loop (``rp_job.handle_job``) passes an error on as ``str(error)``: a dict would
arrive as its Python repr, which no client can parse. A fatal CUDA error also sets ``refresh_worker``
so RunPod replaces this worker after the job.

Start-up: ``main()`` loads and warms up everything before the SDK takes a job; when that
fails it prints the cause and exits non-zero, in every mode (serverless, ``--rp_serve_api``,
``--test_input``), so RunPod marks the worker unhealthy instead of draining the queue into
errors.

Environment (besides rag's ``RAG_*`` settings): ``RUNPOD_MAX_CONCURRENCY``,
jobs one worker runs at once (default 1 with an LLM, whose generation
``rag.generate`` serialises per model; 4 in extractive mode). ``HF_HOME``
is the image's baked cache when there is one, else ``/runpod-volume/huggingface`` when a
network volume is mounted; the image is used offline only when everything the settings
name (RAG_LLM, RAG_ADAPTER, RAG_EMBED_MODEL, RAG_RERANKER) was baked into it; the image
bakes no reranker, so a deployment with one stays online.

Out of scope: prompt building, retrieval, citation formatting (all in rag/),
batching requests into one forward pass (use a vLLM worker for that).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from rag.config import Settings, log_level
from rag.errors import ConfigError, InputError
from rag.render import answer_dict
from rag.request import AskRequest, from_inputs

log = logging.getLogger("rag.runpod")

MAX_CONCURRENCY_ENV = "RUNPOD_MAX_CONCURRENCY"
VOLUME = "/runpod-volume"
BAKED_HF_HOME = "/opt/hf"  # where .runpod/Dockerfile puts baked weights
OPENAI_KEYS = ("openai_route", "openai_input")


def max_concurrency_from_env(env: Mapping[str, str], settings: Settings | None = None) -> int:
    raw = (env.get(MAX_CONCURRENCY_ENV) or "").strip()
    if not raw:
        return 1 if settings is not None and settings.llm else 4
    try:
        value = int(raw)
    except ValueError as e:
        raise ConfigError(f"{MAX_CONCURRENCY_ENV}={raw!r} is not an integer: set it to the jobs one worker runs at once.") from e
    if not 1 <= value <= 256:
        raise ConfigError(f"{MAX_CONCURRENCY_ENV}={raw!r} is out of range: allowed 1 to 256.")
    return value


def cache_on_volume(settings: Settings, volume: str = VOLUME) -> Settings:
    """The settings with their downloads (RAG_ADAPTER, RAG_INDEX_URL, requests' lora_weights) cached on
    the network volume when there is one, so they survive the worker; RAG_WEIGHTS_CACHE wins."""
    from pathlib import Path

    if settings.weights_cache_dir is None and os.path.isdir(volume) and os.access(volume, os.W_OK):
        settings = settings.with_(weights_cache_dir=Path(volume) / "rag" / "weights")
    return settings


def is_openai_job(job: Any) -> bool:
    """Whether ``job`` came in on the platform's ``/openai/v1`` routes (its errors then take OpenAI's shape)."""
    data = job.get("input") if isinstance(job, Mapping) else None
    return isinstance(data, Mapping) and any(k in data for k in OPENAI_KEYS)


def parse_job(job: Any, settings: Settings):
    """Return ("models", None), ("chat", ChatRequest) or ("ask", NativeJob); InputError otherwise."""
    from rag.openai_compat import ROUTE_CHAT, ROUTE_MODELS, ROUTES, parse_chat

    if not isinstance(job, Mapping):
        raise InputError("the job must be a JSON object with an 'input' object.")
    data = job.get("input")
    if data is None:
        raise InputError("missing 'input': send {\"input\": {\"prompt\": \"...\"}}.")
    if not isinstance(data, Mapping):
        raise InputError(f"'input' must be a JSON object, got {type(data).__name__}.")
    if any(k in data for k in OPENAI_KEYS):
        extra = sorted(set(data) - set(OPENAI_KEYS))
        if extra:
            raise InputError(f"unknown field(s) next to openai_route: {', '.join(extra)}. Allowed: openai_route, openai_input.")
        route = data.get("openai_route")
        if route is None:
            raise InputError(f"'openai_route' is missing next to openai_input: give one of {', '.join(ROUTES)}.")
        if route not in ROUTES:
            raise InputError(f"unsupported openai_route {route!r}: this worker serves {', '.join(ROUTES)}.")
        if route == ROUTE_MODELS:
            return "models", None
        assert route == ROUTE_CHAT
        return "chat", parse_chat(data.get("openai_input"), settings)
    fields = dict(data)
    stream = fields.pop("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InputError("'stream' must be true or false.")
    lora = fields.pop("lora_weights", None) or None  # "" is no adapter, as Cog reads an empty input
    if fields.get("question") is not None:  # the old names, for one release
        unknown = sorted(set(fields) - set(AskRequest.fields_()))
        if unknown:
            raise InputError(f"unknown field(s): {', '.join(unknown)}. Allowed: {', '.join(AskRequest.fields_())}, "
                             "stream, lora_weights (or the new names: prompt, max_tokens, num_passages, …).")
        return "ask", NativeJob(AskRequest.from_dict(fields, settings), stream, lora, [LEGACY_NOTE])
    return "ask", NativeJob(from_inputs(fields, settings, also=("stream", "lora_weights")), stream, lora)


LEGACY_NOTE = ("deprecated input names: question → prompt, top_k (passages) → num_passages, max_new_tokens → "
               "max_tokens, stop → stop_sequences, sampling_top_k → top_k; the old names go in the next release.")


@dataclass
class NativeJob:
    request: AskRequest
    stream: bool = False
    lora_weights: str | None = None
    warnings: list[str] = field(default_factory=list)


class Worker:
    """One per process: the loaded pipeline, and the config dict given to ``runpod.serverless.start``."""

    def __init__(self, pipeline=None, *, max_concurrency: int = 1, startup_error: BaseException | None = None,
                 settings: Settings | None = None):
        self.pipeline = pipeline
        # Requests are validated against these (limits); the served model name comes from them too.
        self.settings = settings or (pipeline.settings if pipeline is not None else Settings())
        self.max_concurrency = max_concurrency
        self.startup_error = startup_error
        self._adapters = None  # rag.deployment.RequestAdapters for per-job lora_weights, made on first use
        # The SDK reads "refresh_worker" from this same dict after each job (rp_job.handle_job,
        # rp_scale.JobScaler.handle_job): setting it asks RunPod for a fresh worker.
        self.config: dict[str, Any] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Worker":
        """Load and warm up everything now; a failure is kept and reported to every job instead of crashing."""
        from rag.deployment import load_deployment
        from rag.errors import is_fatal_device_error

        env = os.environ if env is None else env
        settings = None
        try:
            settings = Settings.from_env(env)
            concurrency = max_concurrency_from_env(env, settings)
            pipeline = load_deployment(cache_on_volume(settings), announce=lambda line: log.info(
                "loaded: %s; up to %d jobs at once", line, concurrency))
        except Exception as e:  # noqa: BLE001 - every job will say what failed
            log.exception("the worker could not start")
            worker = cls(None, startup_error=e, settings=settings)
            if is_fatal_device_error(e):
                worker.config["refresh_worker"] = True
            return worker
        # named after the adapter/model as configured, not the cache directory a URL was unpacked into
        return cls(pipeline, max_concurrency=concurrency, settings=settings)

    @property
    def adapters(self):
        """Requests' lora_weights, cached as the deployment's settings say (``rag.deployment.RequestAdapters``)."""
        if self._adapters is None:
            from rag.deployment import RequestAdapters

            self._adapters = RequestAdapters(self.pipeline)
        return self._adapters

    @property
    def model_name(self) -> str:
        from rag.openai_compat import served_model_name

        return served_model_name(self.settings)

    # -- what runpod.serverless.start gets ------------------------------------------------------------
    def start_config(self, *, local_test: bool = False) -> dict:
        self.config.update(
            handler=self.run_to_completion if local_test else self.handler,
            concurrency_modifier=self.concurrency_modifier,
            return_aggregate_stream=True,
        )
        return self.config

    def concurrency_modifier(self, current: int) -> int:
        return self.max_concurrency

    async def handler(self, job: Any) -> AsyncIterator[Any]:
        """The RunPod handler: yields outputs; ends with ``{"error": ...}`` instead of raising."""
        from rag.errors import is_fatal_device_error, public_message

        cancel = threading.Event()
        openai = is_openai_job(job)
        try:
            if self.startup_error is not None:
                raise _NotReady(self.startup_error)
            kind, payload = parse_job(job, self.settings)
            if kind == "models":
                from rag.openai_compat import models_list

                yield models_list(self.model_name)
            elif kind == "chat":
                async for out in self._chat(payload, cancel):
                    yield out
            else:
                async for out in self._ask(payload, cancel):
                    yield out
        except Exception as e:  # noqa: BLE001 - the one error shape
            cause = e.error if isinstance(e, _NotReady) else e
            fatal = is_fatal_device_error(cause)
            if fatal:
                self.config["refresh_worker"] = True
            if not isinstance(cause, InputError):
                log.error("job %s failed", _job_id(job), exc_info=cause)
            elif getattr(cause, "detail", None):  # the reason the client is not told (rag.errors.RagError.detail)
                log.warning("job %s: %s", _job_id(job), cause.detail)
            not_ready = isinstance(e, _NotReady) and not fatal
            if openai:
                import json

                from rag.openai_compat import error_response

                # the SDK passes a job's error on as str(): JSON text keeps the object readable
                body = error_response(cause, code="worker_not_ready" if not_ready else None)[1]
                yield {"error": json.dumps(body, ensure_ascii=False)}
            else:
                message = public_message(cause)
                yield {"error": f"worker_not_ready: {message}" if not_ready else message}
        finally:
            cancel.set()  # the client left or the job was stopped: stop generating

    async def run_to_completion(self, job: Any):
        """The same job, not as a generator: what the SDK's local ``--test_input`` runner can judge.

        runpod's local runner (rp_local.run_local → rp_job.run_job) awaits a handler but never
        iterates a generator, so it would report success for any input. This returns the list the
        platform's aggregated stream would hold, or ``{"error": ...}`` (a failed local run).
        """
        outputs = [out async for out in self.handler(job)]
        if outputs and isinstance(outputs[-1], dict) and "error" in outputs[-1]:
            return outputs[-1]
        return outputs

    # -- the two input formats ---------------------------------------------------------------------------
    def _events(self, request: AskRequest, cancel: threading.Event, adapter: str | None = None):
        """The pipeline's events, off the event loop; text that piles up while a post is in flight is merged."""
        from rag.streaming import astream

        return astream(self.pipeline, request, cancel, adapter=adapter, coalesce=True)

    async def _ask(self, job: NativeJob, cancel: threading.Event):
        import asyncio

        from rag.pipeline import Delta

        adapter = None
        if job.lora_weights is not None:
            # off the event loop: other jobs keep streaming while this one's adapter downloads
            adapter = await asyncio.to_thread(self.adapters.get, job.lora_weights)
        async for event in self._events(job.request, cancel, adapter):
            if isinstance(event, Delta):
                if job.stream:
                    yield {"text": event.text}
            else:
                final = answer_dict(event.answer)
                if job.warnings:
                    final["warnings"] = job.warnings
                yield final

    async def _chat(self, chat, cancel: threading.Event):
        from rag.openai_compat import chat_outputs

        async for out in chat_outputs(chat, self._events(chat.ask, cancel), self.model_name):
            yield out


class _NotReady(Exception):
    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


def _job_id(job: Any) -> str:
    return str(job.get("id", "?")) if isinstance(job, Mapping) else "?"


# -- process entry point ----------------------------------------------------------------------------------
_worker: Worker | None = None


def get_worker() -> Worker:
    """The process's Worker, loaded on first use (``main`` calls it before the first job)."""
    global _worker
    if _worker is None:
        _worker = Worker.from_env()
    return _worker


async def handler(job: Any) -> AsyncIterator[Any]:
    """Module-level handler for tools that want a function: delegates to the process's Worker."""
    async for out in get_worker().handler(job):
        yield out


def runs_local_test(argv: list[str], env: Mapping[str, str]) -> bool:
    """True when the SDK will run one job locally (``--test_input`` or test_input.json) rather than serve."""
    if "--rp_serve_api" in argv or env.get("RUNPOD_REALTIME_PORT"):
        return False
    given = any(a == "--test_input" or a.startswith("--test_input=") for a in argv)
    return given or not env.get("RUNPOD_WEBHOOK_GET_JOB")


BAKED_LIST = "baked.txt"  # the Hugging Face ids .runpod/Dockerfile baked (safetensors weights), one a line


def choose_hf_cache(env, baked: str = BAKED_HF_HOME, volume: str = VOLUME) -> None:
    """Point HF_HOME at the weights baked into the image, else at the network volume.

    Offline (HF_HUB_OFFLINE=1) only when every Hugging Face id the settings name (RAG_LLM,
    RAG_ADAPTER, RAG_EMBED_MODEL, RAG_RERANKER) was baked: a partly baked image still downloads
    what it lacks. Without baked weights, downloads go to the network volume when one is
    mounted, so they survive the worker. An HF_HOME or HF_HUB_OFFLINE set on the endpoint wins.
    """
    from rag.config import DEFAULT_EMBED_MODEL

    listing = os.path.join(baked, BAKED_LIST)
    have: set[str] = set()
    if os.path.exists(listing):
        with open(listing, encoding="utf-8") as f:
            have = {line.strip() for line in f if line.strip()}
    if not have:  # nothing baked (the image always writes the list, empty when no model was baked)
        if not env.get("HF_HOME") and os.path.isdir(volume) and os.access(volume, os.W_OK):
            env["HF_HOME"] = os.path.join(volume, "huggingface")
        return
    try:
        settings = Settings.from_env(env)
    except ConfigError:
        return  # the worker's setup reports the bad setting and exits before anything downloads
    named = (settings.llm, settings.adapter, settings.embed_model, settings.reranker)
    hub_ids = {n for n in named if n and n != DEFAULT_EMBED_MODEL and _is_hub_id(n)}
    env.setdefault("HF_HOME", baked)
    if hub_ids <= have:
        env.setdefault("HF_HUB_OFFLINE", "1")
    else:
        # what was baked is used; what was not downloads into the image's cache at this cold start
        log.info("not baked into the image, downloaded at start-up: %s", ", ".join(sorted(hub_ids - have)))


def _is_hub_id(name: str) -> bool:
    return not name.startswith(("/", ".", "~", "http://", "https://")) and name.count("/") == 1


def startup_failure(error: BaseException) -> str:
    """The line a worker prints before it exits: for the endpoint's owner, in the worker's logs (paths kept)."""
    from rag.errors import RagError, redact

    code = error.code if isinstance(error, RagError) else type(error).__name__
    return redact(f"the worker could not start: {code}: {error}", client=False)


def _import_sdk() -> None:
    try:
        import runpod  # noqa: F401
    except BaseException:  # noqa: BLE001 - main() imports it again and reports the error there
        pass


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    logging.basicConfig(level=log_level(os.environ), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    choose_hf_cache(os.environ)  # before anything imports huggingface_hub
    # Importing the SDK runs py-cpuinfo in a child process (about 1 s); imported in a thread, that wait
    # overlaps the pipeline's load instead of adding to the cold start. A failure there is raised by the
    # import below.
    sdk = threading.Thread(target=_import_sdk, name="import-runpod", daemon=True)
    sdk.start()
    worker = get_worker()
    if worker.startup_error is not None:
        # Fail fast, as worker-vllm does: a worker that cannot answer must not take jobs (serverless,
        # --rp_serve_api and --test_input alike); RunPod sees the exit and does not route to it.
        print(startup_failure(worker.startup_error), file=sys.stderr, flush=True)
        sys.exit(1)
    sdk.join()
    import runpod

    runpod.serverless.start(worker.start_config(local_test=runs_local_test(argv, os.environ)))


if __name__ == "__main__":
    main()
