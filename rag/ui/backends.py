"""Where the web chat's answers come from: this machine's pipeline, a Replicate model or a RunPod endpoint.

One small interface: ``backend.stream(request, cancel)`` takes a validated
``AskRequest`` and yields the same events as ``Pipeline.stream`` — ``Delta``
pieces of text, then one ``Final(Answer)``. The UI never knows which backend
it talks to.

- ``LocalBackend`` wraps a loaded ``Pipeline``.
- ``ReplicateBackend`` calls a model pushed from this repository's ``predict.py``
  with the official ``replicate`` client (token from ``REPLICATE_API_TOKEN``).
  Its output is streamed text that ends with the "Nguồn:" block; the citations
  are read back from that block.
- ``RunPodBackend`` calls an endpoint running ``runpod_worker/`` with the
  official ``runpod`` client (key from ``RUNPOD_API_KEY``), native input with
  ``stream: true``: text pieces, then the final ``Answer.to_dict()`` object.

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

import json
import logging
import queue
import re
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Mapping

from ..errors import ConfigError, RagError
from ..pipeline import Delta, Final
from ..render import SOURCES_HEADING, UNSUPPORTED_NOTE
from ..request import AskRequest
from ..retrieve import REFUSAL
from ..types import Answer, Citation

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
        mode = f"LLM {pipeline.settings.llm}" if gen is not None and pipeline.settings.llm else "trích dẫn (extractive)"
        self.label = f"Máy này — {mode}"
        self.kind = "local"

    def stream(self, request: AskRequest, cancel: threading.Event) -> Iterator[Delta | Final]:
        yield from self.pipeline.stream(request, cancel=cancel)


_LABEL = re.compile(
    r"^(?:Điều (?P<article>\S+?)(?: \((?P<title>.*)\))?(?:, Khoản (?P<clause>[^,]+?))?(?:, Điểm (?P<point>[^,]+?))?"
    r" — )?(?P<document>.+?)(?:, tr\. (?P<page>\d+))?$"
)


def citation_from_label(label: str) -> Citation:
    """Read a house-style label back into a ``Citation``; one that does not parse keeps the label as its document."""
    label = label.strip()
    m = _LABEL.match(label)
    if m:
        c = Citation(document=m["document"], source="", page=int(m["page"]) if m["page"] else None,
                     article=m["article"], article_title=m["title"], clause=m["clause"], point=m["point"])
        if c.label() == label:
            return c
    return Citation(document=label, source="")


def answer_from_text(text: str) -> Answer:
    """Split a streamed answer into its text, the citations of its trailing "Nguồn:" block and the
    note on Điều the model named that were not retrieved (``rag.render.sources_block`` in reverse)."""
    unsupported: list[str] = []
    note = re.escape(UNSUPPORTED_NOTE).replace(re.escape("{}"), "(.+)")
    m = re.search(r"\n" + note + r"\s*$", text)
    if m:
        unsupported = [a.strip() for a in m.group(1).split(",") if a.strip()]
        text = text[:m.start()]
    marker = f"\n{SOURCES_HEADING}\n"
    body, citations = text, []
    cut = text.rfind(marker)
    if cut >= 0:
        body = text[:cut]
        for line in text[cut + len(marker):].splitlines():
            m = re.match(r"^\s*\[\d+\]\s+(.+)$", line)
            if m:
                citations.append(citation_from_label(m.group(1)))
    body = body.strip()
    refused = body.startswith(REFUSAL.rstrip(".")) or not body
    return Answer(text=body, refused=refused, citations=[] if refused else citations,
                  unsupported_citations=unsupported, mode="remote")


# -- shared -----------------------------------------------------------------------------------------


class _Stopped(Exception):
    def __init__(self, cancelled: bool):
        super().__init__("cancelled" if cancelled else "timed out")
        self.cancelled = cancelled


_END = object()


def _pump(start: Callable[[], Iterable], cancel: threading.Event, timeout_s: float) -> Iterator:
    """Iterate a blocking remote stream in a thread, so Stop and the time limit act at once, not at the next event."""
    q: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            for item in start():
                q.put(item)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(_Raised(e))
        finally:
            q.put(_END)

    threading.Thread(target=run, name="rag-remote-stream", daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while True:
        if cancel.is_set():
            raise _Stopped(cancelled=True)
        if time.monotonic() > deadline:
            raise _Stopped(cancelled=False)
        try:
            item = q.get(timeout=0.1)
        except queue.Empty:
            continue
        if item is _END:
            return
        if isinstance(item, _Raised):
            raise item.error
        yield item


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


def _quietly(fn) -> None:
    if fn is None:
        return
    try:
        fn()
    except Exception:  # noqa: BLE001 - best effort: the question is already over for the user
        pass


def _check_failed(service: str, token_env: str, exc: BaseException, *, what: str) -> None:
    """A start-up check failed: a rejected key or an unknown name stops `rag ui`; an outage only warns."""
    message = describe_error(service, token_env, exc, what=what)
    status = _status_of(exc)
    if status in (401, 403, 404) or "api_key" in str(exc):
        raise ConfigError(message) from exc
    log.warning("could not check %s at start (the page starts anyway): %s", service, message)


def _timeout_message(service: str, timeout_s: float) -> str:
    return (f"{service} không trả lời trong {timeout_s:g} giây; hãy thử lại sau. / "
            f"{service} did not answer within {timeout_s:g} s; try again later.")


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
    from ..serving import scrub

    text = str(text or "").strip()
    try:  # remote errors are often JSON objects: keep their message
        data = json.loads(text)
        if isinstance(data, Mapping):
            text = str(data.get("detail") or data.get("error") or data.get("message") or text)
    except (TypeError, ValueError):
        pass
    text = scrub(" ".join(text.split()))
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "…"


_NETWORK = {"ConnectError", "ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "TimeoutException",
            "TransportError", "NetworkError", "RemoteProtocolError", "ProxyError", "SSLError", "TimeoutError",
            "gaierror", "ConnectionRefusedError"}


def describe_error(service: str, token_env: str, exc: BaseException, *, what: str) -> str:
    """One plain message, Vietnamese then English, for any failure of a remote call."""
    thing_vi = "mô hình" if what == "model" else "endpoint"
    if isinstance(exc, RemoteFailure):
        d = _detail(exc.detail)
        return f"{service} báo lỗi khi trả lời: {d} / {service} reported an error while answering: {d}"
    status = _status_of(exc)
    names = {c.__name__ for c in type(exc).__mro__}
    api_key_missing = "api_key" in str(exc) and "initialized" in str(exc)
    if status in (401, 403) or api_key_missing:
        return (f"{service} từ chối khóa truy cập (HTTP {status or 401}): kiểm tra biến {token_env}. / "
                f"{service} rejected the API key (HTTP {status or 401}): check {token_env}.")
    if status == 404:
        return (f"{service} không tìm thấy {thing_vi} này (HTTP 404): kiểm tra tên {thing_vi}. / "
                f"{service} does not know this {what} (HTTP 404): check its name.")
    if status in (400, 422):
        d = _detail(getattr(exc, "detail", None) or "")
        return (f"{service} từ chối dữ liệu gửi đi (HTTP {status}){': ' + d if d else ''}. / "
                f"{service} rejected the request (HTTP {status}){': ' + d if d else ''}.")
    if status == 402:
        return (f"Tài khoản {service} cần nạp thêm tiền (HTTP 402). / The {service} account needs billing (HTTP 402).")
    if status == 429:
        return (f"{service} đang giới hạn số yêu cầu (HTTP 429); hãy thử lại sau ít phút. / "
                f"{service} is rate-limiting requests (HTTP 429); try again in a few minutes.")
    if status is not None and status >= 500:
        return (f"{service} đang gặp sự cố (HTTP {status}); hãy thử lại sau. / "
                f"{service} had a server error (HTTP {status}); try again later.")
    if names & _NETWORK or isinstance(exc, (OSError, TimeoutError)):
        return (f"Không kết nối được tới {service}: kiểm tra mạng của máy chạy giao diện. / "
                f"Could not reach {service}: check this machine's network connection.")
    if status is not None:
        return f"{service} trả về lỗi HTTP {status}. / {service} returned HTTP {status}."
    return (f"Lỗi không mong đợi khi gọi {service} ({type(exc).__name__}). / "
            f"Unexpected error calling {service} ({type(exc).__name__}).")


def make_backend(settings, *, pipeline=None, replicate: str | None = None, runpod: str | None = None,
                 env: Mapping[str, str] | None = None):
    """The backend the flags ask for; a missing token or client fails here, at start, not at the first question."""
    import os

    env = os.environ if env is None else env
    if replicate and runpod:
        raise ConfigError("give either --replicate or --runpod, not both.")
    from .remote import ReplicateBackend, RunPodBackend

    if replicate:
        return ReplicateBackend.from_env(replicate, env)
    if runpod:
        return RunPodBackend.from_env(runpod, env)
    if pipeline is None:
        from ..pipeline import Pipeline

        pipeline = Pipeline.from_settings(settings)
    return LocalBackend(pipeline)
