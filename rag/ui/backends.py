"""Where the web chat's answers come from: this machine's pipeline, a Replicate model or a RunPod endpoint.

One small interface: ``backend.stream(request, cancel)`` takes a validated
``AskRequest`` and yields the same events as ``Pipeline.stream`` — ``Delta``
pieces of text, then one ``Final(Answer)``. The UI never knows which backend
it talks to.

- ``LocalBackend`` wraps a loaded ``Pipeline``.
- ``ReplicateBackend`` calls a model pushed from this repository's ``predict.py``
  with the official ``replicate`` client (token from ``REPLICATE_API_TOKEN``).
  Its output is streamed text that ends with the sources block; the citations
  are read back from it (``rag.render.answer_from_text``).
- ``RunPodBackend`` calls an endpoint running ``runpod_worker/`` with the
  official ``runpod`` client (key from ``RUNPOD_API_KEY``), native input with
  ``stream: true``: text pieces, then the final ``rag.render.answer_dict`` object.

The client libraries are imported when a remote backend is built, never at
import; tests hand the backend their own client object. Any failure of a remote
call — no token, a rejected token, an unknown model, the network, the remote
model's own error — becomes a ``BackendError`` whose message says in plain
Vietnamese and English what happened and what to do, without a traceback or
the token.

Out of scope: retries and fail-over between backends; the remote's own limits
(requests are validated with this machine's ``Settings``, which should match
the deployment's).
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from ..errors import ConfigError, RagError, redact
from ..pipeline import Delta, Final
from ..request import AskRequest
from ..streaming import StreamTimeout
from ..texts import LOCAL_BACKEND, LOCAL_EXTRACTIVE, REMOTE_ERRORS, REMOTE_THING

log = logging.getLogger("rag.ui")

DEFAULT_TIMEOUT_S = 600.0  # a cold start on either platform can take minutes
_MAX_DETAIL = 300


class BackendError(RagError):
    """A remote backend failed; ``str(e)`` is safe to show to the person who asked."""

    code = "backend_error"


class RemoteFailure(Exception):
    """The remote model ran and reported an error of its own (its message is in ``detail``)."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class LocalBackend:
    """The pipeline loaded in this process."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        gen = getattr(pipeline, "generator", None)
        mode = f"LLM {pipeline.settings.llm}" if gen is not None and pipeline.settings.llm else LOCAL_EXTRACTIVE
        self.label = LOCAL_BACKEND.format(mode=mode)
        self.kind = "local"

    def stream(self, request: AskRequest, cancel: threading.Event) -> Iterator[Delta | Final]:
        yield from self.pipeline.stream(request, cancel=cancel)


# -- what remote backends share ----------------------------------------------------------------------


def remote_input(req: AskRequest, **extra: Any) -> dict[str, Any]:
    """The fields both deployments take from a request (history only when there is one), plus ``extra``."""
    data: dict[str, Any] = {"prompt": req.question, "num_passages": req.top_k, "max_tokens": req.max_new_tokens,
                            "temperature": req.temperature, **extra}
    if req.history:
        data["history"] = req.history
    return data


class RemoteBackend:
    """What the Replicate and RunPod backends share: their token, time limit, start-up check and failures."""

    service = ""  # the platform's name, in messages
    kind = ""  # "replicate" | "runpod": also the flag of `rag ui` that picks it
    token_env = ""  # the environment variable that holds the API token
    token_hint = ""  # what to export, and where to get it
    what = "model"  # what the flag names: "model" or "endpoint"

    def __init__(self, label: str, timeout_s: float):
        self.label, self.timeout_s = label, timeout_s

    @classmethod
    def token(cls, env: Mapping[str, str]) -> str:
        token = (env.get(cls.token_env) or "").strip()
        if not token:
            raise ConfigError(f"{cls.token_env} is not set: export {cls.token_hint} before `rag ui --{cls.kind}`.")
        return token

    @classmethod
    def client_library(cls, name: str):
        """The official client, imported when a backend is built (never at import)."""
        try:
            return importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"the {cls.service} backend needs the official client: `pip install {name}`.") from e

    def probe(self) -> None:
        """A request that runs nothing but needs a valid token and an existing model or endpoint."""
        raise NotImplementedError

    def check(self) -> None:
        """At start: a rejected key or an unknown name stops `rag ui`; an outage only warns."""
        try:
            self.probe()
        except Exception as e:  # noqa: BLE001
            message = describe_error(self.service, self.token_env, e, what=self.what)
            if _status_of(e) in (401, 403, 404) or "api_key" in str(e):
                raise ConfigError(message) from e
            log.warning("could not check %s at start (the page starts anyway): %s", self.service, message)

    @contextmanager
    def failures(self):
        """Every failure of a remote call as one plain ``BackendError``; ``Cancelled`` and other ``RagError``s pass."""
        try:
            yield
        except StreamTimeout:
            raise BackendError(REMOTE_ERRORS["timeout"].format(service=self.service, seconds=self.timeout_s)) from None
        except RagError:
            raise
        except Exception as e:  # noqa: BLE001 - every client failure becomes one plain message
            raise BackendError(describe_error(self.service, self.token_env, e, what=self.what)) from e


def quietly(fn) -> None:
    if fn is None:
        return
    try:
        fn()
    except Exception:  # noqa: BLE001 - best effort: the question is already over for the user
        pass


def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    if status is None and response is not None:
        status = getattr(response, "status_code", None)
    if status is None:
        m = re.match(r"^\s*(\d{3})\b", str(exc))  # runpod: "401 Unauthorized | Make sure ..."
        status = int(m.group(1)) if m else None
    try:
        return int(status) if status is not None else None
    except (TypeError, ValueError):
        return None


def _detail(text: Any) -> str:
    text = str(text or "").strip()
    try:  # remote errors are often JSON objects: keep their message
        data = json.loads(text)
        if isinstance(data, Mapping):
            text = str(data.get("detail") or data.get("error") or data.get("message") or text)
    except (TypeError, ValueError):
        pass
    return redact(text, limit=_MAX_DETAIL)


_NETWORK = {"ConnectError", "ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "TimeoutException",
            "TransportError", "NetworkError", "RemoteProtocolError", "ProxyError", "SSLError", "TimeoutError",
            "gaierror", "ConnectionRefusedError"}


def _error_kind(exc: BaseException, status: int | None) -> str:
    if status in (401, 403) or ("api_key" in str(exc) and "initialized" in str(exc)):
        return "key"
    kind = {404: "not_found", 400: "rejected", 422: "rejected", 402: "billing", 429: "rate_limited"}.get(status)
    if kind:
        return kind
    if status is not None and status >= 500:
        return "server"
    if {c.__name__ for c in type(exc).__mro__} & _NETWORK or isinstance(exc, (OSError, TimeoutError)):
        return "network"
    return "http" if status is not None else "unexpected"


def describe_error(service: str, token_env: str, exc: BaseException, *, what: str) -> str:
    """One plain message, Vietnamese then English (``rag.texts.REMOTE_ERRORS``), for any failure of a remote call."""
    if isinstance(exc, RemoteFailure):
        return REMOTE_ERRORS["remote"].format(service=service, detail=_detail(exc.detail))
    status = _status_of(exc)
    kind = _error_kind(exc, status)
    detail = _detail(getattr(exc, "detail", None) or "") if kind == "rejected" else ""
    return REMOTE_ERRORS[kind].format(service=service, token_env=token_env, status=status or 401, what=what,
                                      thing=what, thing_vi=REMOTE_THING.get(what, what),
                                      detail=": " + detail if detail else "", error=type(exc).__name__)
