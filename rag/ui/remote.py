"""Remote backends: a Replicate model (``predict.py`` pushed with cog) and a RunPod endpoint (``runpod_worker/``);
``make_backend``: the one the flags of ``rag ui`` ask for, or the local pipeline."""

from __future__ import annotations

import json
import re
import threading
from typing import Any, Iterable, Iterator, Mapping

from ..errors import ConfigError
from ..pipeline import Delta, Final
from ..render import answer_from_dict, answer_from_text
from ..request import AskRequest
from ..streaming import iterate_in_thread
from ..types import Answer
from .backends import DEFAULT_TIMEOUT_S, LocalBackend, RemoteBackend, RemoteFailure, quietly, remote_input

_MODEL_REF = re.compile(r"^[\w.-]+/[\w.-]+(?::[0-9a-f]{6,})?$")
_ENDPOINT_ID = re.compile(r"^[A-Za-z0-9_-]{4,64}$")


# -- Replicate ------------------------------------------------------------------------------------


def replicate_input(req: AskRequest) -> dict[str, Any]:
    """The Cog model's inputs (``predict.py``, docs/deploy-replicate.md): ``history`` travels as a JSON string."""
    data = remote_input(req)
    if "history" in data:
        data["history"] = json.dumps(data["history"], ensure_ascii=False)
    return data


class ReplicateBackend(RemoteBackend):
    """A Replicate model ``owner/name`` (its latest version) or ``owner/name:version``."""

    service = "Replicate"
    kind = "replicate"
    token_env = "REPLICATE_API_TOKEN"
    token_hint = "your Replicate API token (replicate.com/account/api-tokens)"

    def __init__(self, model: str, client, *, timeout_s: float = DEFAULT_TIMEOUT_S):
        if not _MODEL_REF.match(model or ""):
            raise ConfigError(f"--replicate {model!r} is not a model name: use owner/model or owner/model:version.")
        super().__init__(f"Replicate — {model}", timeout_s)
        self.model = model
        self.client = client

    @classmethod
    def from_env(cls, model: str, env: Mapping[str, str]) -> "ReplicateBackend":
        token = cls.token(env)
        replicate = cls.client_library("replicate")
        import httpx  # replicate's own HTTP client

        # A long read timeout: the first event can wait for a cold start.
        return cls(model, replicate.Client(api_token=token, timeout=httpx.Timeout(10.0, read=DEFAULT_TIMEOUT_S)))

    def probe(self) -> None:
        self.client.models.get(self.model.partition(":")[0])  # a GET that runs nothing

    def _create(self, inputs: dict):
        name, _, version = self.model.partition(":")
        if version:
            return self.client.predictions.create(version=version, input=inputs, stream=True)
        return self.client.models.predictions.create(model=name, input=inputs, stream=True)

    def stream(self, request: AskRequest, cancel: threading.Event) -> Iterator[Delta | Final]:
        pieces: list[str] = []
        prediction = None
        running = False  # a prediction that is still running when we leave is cancelled: it costs money
        with self.failures():
            try:
                prediction = self._create(replicate_input(request))
                running = True
                # In a thread of its own, so Stop and the time limit act at once, not at the next event.
                for event in iterate_in_thread(lambda: _model_errors(prediction.stream()), cancel=cancel,
                                               timeout_s=self.timeout_s, name="rag-remote-stream"):
                    kind = _event_kind(event)
                    if kind == "output":
                        data = event.data if isinstance(event.data, str) else str(event.data)
                        pieces.append(data)
                        yield Delta(data)
                    elif kind == "error":  # the client raises for these; an older or other client may not
                        raise RemoteFailure(str(event.data))
                    elif kind == "done":
                        _check_done(event)
                        break
                running = False
            except RemoteFailure:
                running = False  # the prediction ended with an error of its own
                raise
            finally:  # also when the consumer closes this generator early
                if running:
                    quietly(prediction.cancel)
        yield Final(answer_from_text("".join(pieces)))


def _model_errors(events: Iterable) -> Iterator:
    # The client raises a plain RuntimeError(data) for an "error" event: the model's own failure.
    try:
        yield from events
    except RuntimeError as e:
        if type(e) is RuntimeError:
            raise RemoteFailure(str(e)) from e
        raise


def _event_kind(event) -> str:
    kind = getattr(event, "event", "output")
    return str(getattr(kind, "value", kind)).lower()


def _check_done(event) -> None:
    # Replicate ends a failed or cancelled prediction's stream with a "done" event whose data says so.
    try:
        data = json.loads(event.data or "{}")
    except (TypeError, ValueError):
        return
    if isinstance(data, dict) and data.get("reason") in ("error", "canceled"):
        raise RemoteFailure(data.get("error") or f"the prediction ended: {data['reason']}")


# -- RunPod ---------------------------------------------------------------------------------------

_RUNPOD_FINAL = ("COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED")


def runpod_input(req: AskRequest) -> dict[str, Any]:
    """The worker's native input (``runpod_worker/handler.py``), streamed."""
    return remote_input(req, stream=True)


class RunPodBackend(RemoteBackend):
    """A RunPod serverless endpoint running ``runpod_worker/``.

    The job is started with ``Endpoint.run`` and its stream is polled here with the
    SDK's own HTTP client rather than ``Job.stream()``: that generator cannot be
    interrupted while the job waits in the queue, and never ends for a cancelled
    job (runpod's local runner), so Stop and the time limit would not work.
    """

    service = "RunPod"
    kind = "runpod"
    token_env = "RUNPOD_API_KEY"
    token_hint = "a RunPod API key (console.runpod.io → Settings → API Keys)"
    what = "endpoint"

    def __init__(self, endpoint, *, poll_s: float = 0.5, timeout_s: float = DEFAULT_TIMEOUT_S):
        super().__init__(f"RunPod — endpoint {endpoint.endpoint_id}", timeout_s)
        self.endpoint = endpoint
        self.endpoint_id = endpoint.endpoint_id
        self.poll_s = poll_s

    @classmethod
    def from_env(cls, endpoint_id: str, env: Mapping[str, str]) -> "RunPodBackend":
        if not _ENDPOINT_ID.match(endpoint_id or ""):
            raise ConfigError(f"--runpod {endpoint_id!r} is not an endpoint id (letters, digits, - and _).")
        key = cls.token(env)
        return cls(cls.client_library("runpod").Endpoint(endpoint_id, api_key=key))

    def probe(self) -> None:
        self.endpoint.health()  # its health route runs nothing

    def _get(self, route: str, job_id: str) -> dict:
        return self.endpoint.rp_client.get(f"{self.endpoint_id}/{route}/{job_id}")

    def stream(self, request: AskRequest, cancel: threading.Event) -> Iterator[Delta | Final]:
        job = None
        running = False  # a job still queued or running when we leave is cancelled: it costs money
        pieces: list[str] = []
        with self.failures():
            try:
                job = self.endpoint.run({"input": runpod_input(request)})
                running = True
                final, status = None, ""
                # Polled in a thread of its own, so Stop and the time limit act at once, not after a slow poll.
                for event in iterate_in_thread(lambda: self._poll(job.job_id, cancel), cancel=cancel,
                                               timeout_s=self.timeout_s, name="rag-remote-poll"):
                    if isinstance(event, str):
                        status = event
                        running = status not in _RUNPOD_FINAL
                    elif isinstance(event, Delta):
                        pieces.append(event.text)
                        yield event
                    else:
                        final = event
                if final is None and status == "COMPLETED":
                    # Outputs that came after the last poll are in the aggregated result.
                    outputs = (self._get("status", job.job_id) or {}).get("output")
                    for out in outputs if isinstance(outputs, list) else [outputs]:
                        for event in _runpod_events(out):
                            if isinstance(event, Answer):
                                final = event
                            elif not pieces:
                                pieces.append(event.text)
                                yield event
                if final is None:
                    final = self._ended_without_answer(job.job_id, status, pieces)
            finally:  # also when the consumer closes this generator early
                if running:
                    quietly(job.cancel)
        yield Final(final)

    def _poll(self, job_id: str, cancel: threading.Event) -> Iterator[str | Delta | Answer]:
        """The job's stream until it ends or ``cancel`` is set: its status (a str) after each poll, then the
        outputs that came."""
        while not cancel.is_set():
            state = self._get("stream", job_id)
            status = str(state.get("status", ""))
            yield status
            for chunk in state.get("stream") or []:
                yield from _runpod_events(chunk.get("output") if isinstance(chunk, Mapping) else chunk)
            if status in _RUNPOD_FINAL:
                return
            cancel.wait(self.poll_s)

    def _ended_without_answer(self, job_id: str, status: str, pieces: list[str]) -> Answer:
        if status == "COMPLETED":
            return answer_from_text("".join(pieces))
        detail = str((self._get("status", job_id) or {}).get("error") or "") if status == "FAILED" else ""
        raise RemoteFailure(detail or f"the job ended with status {status or 'unknown'}")


def _runpod_events(out) -> Iterator[Delta | Answer]:
    """One output of the worker: a text piece, the final answer object, or its error object."""
    if out is None:
        return
    if isinstance(out, str):
        yield Delta(out)
    elif isinstance(out, list):  # an aggregated stream
        for item in out:
            yield from _runpod_events(item)
    elif isinstance(out, Mapping):
        if "error" in out:
            raise RemoteFailure(str(out["error"]))
        if "answer" in out:
            yield answer_from_dict(out)
        elif "text" in out:
            yield Delta(str(out["text"]))


def make_backend(settings, *, pipeline=None, replicate: str | None = None, runpod: str | None = None,
                 env: Mapping[str, str] | None = None):
    """The backend the flags ask for; a missing token or client fails here, at start, not at the first question."""
    import os

    env = os.environ if env is None else env
    if replicate and runpod:
        raise ConfigError("give either --replicate or --runpod, not both.")
    if replicate:
        return ReplicateBackend.from_env(replicate, env)
    if runpod:
        return RunPodBackend.from_env(runpod, env)
    if pipeline is None:
        from ..pipeline import Pipeline

        pipeline = Pipeline.from_settings(settings)
    return LocalBackend(pipeline)
