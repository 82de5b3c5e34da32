"""Remote backends: a Replicate model (``predict.py`` pushed with cog) and a RunPod endpoint (``runpod_worker/``)."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any, Iterable, Iterator, Mapping

from ..errors import Cancelled, ConfigError, RagError
from ..pipeline import Delta, Final
from ..request import AskRequest
from ..types import Answer, Citation
from .backends import (DEFAULT_TIMEOUT_S, BackendError, RemoteFailure, _check_failed, _pump, _quietly, _Stopped,
                       _timeout_message, answer_from_text, describe_error)

_CITATION_FIELDS = ("document", "source", "page", "chapter", "article", "article_title", "clause", "point")
_MODEL_REF = re.compile(r"^[\w.-]+/[\w.-]+(?::[0-9a-f]{6,})?$")
_ENDPOINT_ID = re.compile(r"^[A-Za-z0-9_-]{4,64}$")


# -- Replicate ------------------------------------------------------------------------------------


def replicate_input(req: AskRequest) -> dict[str, Any]:
    """The Cog model's inputs (``predict.py``, docs/deploy-replicate.md): ``history`` travels as a JSON string."""
    data: dict[str, Any] = {
        "prompt": req.question,
        "num_passages": req.top_k,
        "max_tokens": req.max_new_tokens,
        "temperature": req.temperature,
    }
    if req.history:
        data["history"] = json.dumps(req.history, ensure_ascii=False)
    return data


class ReplicateBackend:
    """A Replicate model ``owner/name`` (its latest version) or ``owner/name:version``."""

    service = "Replicate"
    token_env = "REPLICATE_API_TOKEN"

    def __init__(self, model: str, client, *, timeout_s: float = DEFAULT_TIMEOUT_S):
        if not _MODEL_REF.match(model or ""):
            raise ConfigError(f"--replicate {model!r} is not a model name: use owner/model or owner/model:version.")
        self.model = model
        self.client = client
        self.timeout_s = timeout_s
        self.label = f"Replicate — {model}"
        self.kind = "replicate"

    @classmethod
    def from_env(cls, model: str, env: Mapping[str, str]) -> "ReplicateBackend":
        token = (env.get(cls.token_env) or "").strip()
        if not token:
            raise ConfigError(
                f"{cls.token_env} is not set: export your Replicate API token (replicate.com/account/api-tokens) "
                "before `rag ui --replicate`."
            )
        try:
            import httpx
            import replicate
        except ImportError as e:
            raise ConfigError("the Replicate backend needs the official client: `pip install replicate`.") from e
        # A long read timeout: the first event can wait for a cold start.
        client = replicate.Client(api_token=token, timeout=httpx.Timeout(10.0, read=DEFAULT_TIMEOUT_S))
        return cls(model, client)

    def check(self) -> None:
        """At start: the token is accepted and the model exists (a GET that runs nothing)."""
        try:
            self.client.models.get(self.model.partition(":")[0])
        except Exception as e:  # noqa: BLE001
            _check_failed(self.service, self.token_env, e, what="model")

    def _create(self, inputs: dict):
        name, _, version = self.model.partition(":")
        if version:
            return self.client.predictions.create(version=version, input=inputs, stream=True)
        return self.client.models.predictions.create(model=name, input=inputs, stream=True)

    def stream(self, request: AskRequest, cancel: threading.Event) -> Iterator[Delta | Final]:
        pieces: list[str] = []
        prediction = None
        running = False  # a prediction that is still running when we leave is cancelled: it costs money
        try:
            prediction = self._create(replicate_input(request))
            running = True
            for event in _pump(lambda: _model_errors(prediction.stream()), cancel, self.timeout_s):
                kind = _event_kind(event)
                if kind == "output":
                    data = event.data if isinstance(event.data, str) else str(event.data)
                    pieces.append(data)
                    yield Delta(data)
                elif kind == "error":  # the client raises for these; an older or other client may not
                    running = False
                    raise RemoteFailure(str(event.data))
                elif kind == "done":
                    running = False
                    _check_done(event)
                    break
            running = False
        except _Stopped as stop:
            if stop.cancelled:
                raise Cancelled("the question was cancelled.") from None
            raise BackendError(_timeout_message(self.service, self.timeout_s)) from None
        except RagError:
            raise
        except Exception as e:  # noqa: BLE001 - every client failure becomes one plain message
            if isinstance(e, RemoteFailure):
                running = False
            raise BackendError(describe_error(self.service, self.token_env, e, what="model")) from e
        finally:  # also when the consumer closes this generator early
            if running:
                _quietly(prediction.cancel)
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
    data: dict[str, Any] = {
        "prompt": req.question,
        "num_passages": req.top_k,
        "max_tokens": req.max_new_tokens,
        "temperature": req.temperature,
        "stream": True,
    }
    if req.history:
        data["history"] = req.history
    return data


class RunPodBackend:
    """A RunPod serverless endpoint running ``runpod_worker/``.

    The job is started with ``Endpoint.run`` and its stream is polled here with the
    SDK's own HTTP client rather than ``Job.stream()``: that generator cannot be
    interrupted while the job waits in the queue, and never ends for a cancelled
    job (runpod 1.12), so Stop and the time limit would not work.
    """

    service = "RunPod"
    token_env = "RUNPOD_API_KEY"

    def __init__(self, endpoint, *, poll_s: float = 0.5, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.endpoint = endpoint
        self.endpoint_id = endpoint.endpoint_id
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.label = f"RunPod — endpoint {self.endpoint_id}"
        self.kind = "runpod"

    @classmethod
    def from_env(cls, endpoint_id: str, env: Mapping[str, str]) -> "RunPodBackend":
        if not _ENDPOINT_ID.match(endpoint_id or ""):
            raise ConfigError(f"--runpod {endpoint_id!r} is not an endpoint id (letters, digits, - and _).")
        key = (env.get(cls.token_env) or "").strip()
        if not key:
            raise ConfigError(
                f"{cls.token_env} is not set: export a RunPod API key (console.runpod.io → Settings → API Keys) "
                "before `rag ui --runpod`."
            )
        try:
            import runpod
        except ImportError as e:
            raise ConfigError("the RunPod backend needs the official client: `pip install runpod`.") from e
        return cls(runpod.Endpoint(endpoint_id, api_key=key))

    def check(self) -> None:
        """At start: the key is accepted and the endpoint exists (its health route runs nothing)."""
        try:
            self.endpoint.health()
        except Exception as e:  # noqa: BLE001
            _check_failed(self.service, self.token_env, e, what="endpoint")

    def _get(self, route: str, job_id: str) -> dict:
        return self.endpoint.rp_client.get(f"{self.endpoint_id}/{route}/{job_id}")

    def stream(self, request: AskRequest, cancel: threading.Event) -> Iterator[Delta | Final]:
        job = None
        running = False  # a job still queued or running when we leave is cancelled: it costs money
        final: Answer | None = None
        pieces: list[str] = []
        deadline = time.monotonic() + self.timeout_s
        try:
            job = self.endpoint.run({"input": runpod_input(request)})
            running = True
            status = ""
            while True:
                if cancel.is_set():
                    raise _Stopped(cancelled=True)
                if time.monotonic() > deadline:
                    raise _Stopped(cancelled=False)
                state = self._get("stream", job.job_id)
                status = str(state.get("status", ""))
                running = status not in _RUNPOD_FINAL
                for chunk in state.get("stream") or []:
                    out = chunk.get("output") if isinstance(chunk, Mapping) else chunk
                    for event in _runpod_events(out):
                        if isinstance(event, Delta):
                            pieces.append(event.text)
                            yield event
                        else:
                            final = event
                if not running:
                    break
                time.sleep(self.poll_s)
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
                if status == "COMPLETED":
                    final = answer_from_text("".join(pieces))
                else:
                    detail = ""
                    if status == "FAILED":
                        detail = str((self._get("status", job.job_id) or {}).get("error") or "")
                    raise RemoteFailure(detail or f"the job ended with status {status or 'unknown'}")
        except _Stopped as stop:
            if stop.cancelled:
                raise Cancelled("the question was cancelled.") from None
            raise BackendError(_timeout_message(self.service, self.timeout_s)) from None
        except RagError:
            raise
        except Exception as e:  # noqa: BLE001 - every client failure becomes one plain message
            raise BackendError(describe_error(self.service, self.token_env, e, what="endpoint")) from e
        finally:  # also when the consumer closes this generator early
            if running:
                _quietly(job.cancel)
        yield Final(final)


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


def answer_from_dict(data: Mapping[str, Any]) -> Answer:
    """``Answer.to_dict()`` as the worker sends it, back into an ``Answer`` (no passages: the worker sends none)."""
    citations = []
    for c in data.get("citations") or []:
        if isinstance(c, Mapping) and c.get("document"):
            fields = {k: c.get(k) for k in _CITATION_FIELDS}
            fields["source"] = fields["source"] or ""
            citations.append(Citation(**fields))
    return Answer(
        text=str(data.get("answer") or ""), refused=bool(data.get("refused")), citations=citations,
        usage=dict(data.get("usage") or {}), timings=dict(data.get("timings") or {}),
        unsupported_citations=list(data.get("unsupported_citations") or []),
        mode=str(data.get("mode") or "remote"), finish_reason=data.get("finish_reason"),
    )
