"""``rag serve``: a local OpenAI-compatible HTTP server over one pipeline.

For a campus machine, Open WebUI, LangChain or any ``openai`` client:

- ``POST /v1/chat/completions``: a chat completion, whole or streamed as server-sent
  events (``"stream": true``), with the answer's sources (``sources`` field and a
  sources block; see ``rag.openai_compat``);
- ``GET /v1/models`` (and ``/v1/models/{id}``): the one model this server answers with;
- ``GET /health``: ``{"status": "ok", "model", "chunks"}``.

The request and response formats are ``rag.openai_compat``'s, the same code RunPod's
``/openai/v1`` route runs. Errors are OpenAI's ``{"error": {"message", "type", "param",
"code"}}`` with the matching HTTP status (400 bad request, 404 unknown route, 405 wrong
method, 413 body over ``MAX_BODY_BYTES``, refused from its Content-Length before it is read,
422 not servable here, 500 server fault, 503 not ready), never a traceback or a
path. A client that disconnects stops its generation.

Out of scope: authentication and TLS (put a reverse proxy in front for either), batching
requests into one forward pass (generation is serialised per model; use vLLM for volume).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

from .errors import InputError, RagError

log = logging.getLogger("rag.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MAX_BODY_BYTES = 1_000_000  # a chat body: 20 turns of 8000 characters fit with room to spare
BODY_TIMEOUT_S = 30.0  # a request body still arriving after this is refused (408): no slow body holds a connection


class _HTTPError(RagError):
    def __init__(self, message: str, code: str, status: int):
        super().__init__(message, code=code)
        self.status = status


def _too_large(size: str) -> _HTTPError:
    return _HTTPError(f"the request body is {size}; the limit is {MAX_BODY_BYTES} bytes.", "invalid_input", 413)


async def _read_body(request) -> bytes:
    """The request body, refused before it is read when its Content-Length is over the limit, and read
    no further than the limit + 1 byte otherwise (a chunked body, a body longer than announced)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise _HTTPError(f"Content-Length {declared[:40]!r} is not a number of bytes.", "invalid_input", 400)
        if int(declared) > MAX_BODY_BYTES:
            raise _too_large(f"{int(declared)} bytes")
    import asyncio

    from starlette.requests import ClientDisconnect

    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            async for part in request.stream():
                size += len(part)
                if size > MAX_BODY_BYTES:
                    raise _too_large(f"over {MAX_BODY_BYTES} bytes")
                parts.append(part)
    except TimeoutError:
        raise _HTTPError(f"the request body did not arrive within {BODY_TIMEOUT_S:g} s.", "invalid_input", 408) from None
    except ClientDisconnect:
        raise _HTTPError("the client closed the connection before its request body arrived.", "invalid_input",
                         400) from None
    return b"".join(parts)


def create_app(pipeline) -> Any:
    """The ASGI app (Starlette) serving ``pipeline``; uvicorn or any ASGI server runs it."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    from .openai_compat import chat_outputs, error_response, models_list, parse_chat, served_model_name
    from .request import parse_json
    from .streaming import astream

    model = served_model_name(pipeline.settings)

    def error(exc: BaseException, status: int | None = None) -> JSONResponse:
        if not isinstance(exc, (RagError, HTTPException)):
            log.exception("request failed", exc_info=exc)
        status, body = error_response(exc, getattr(exc, "status", status))
        return JSONResponse(body, status_code=status)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": model, "chunks": len(pipeline.index)})

    async def models(request: Request) -> JSONResponse:
        return JSONResponse(models_list(model))

    async def one_model(request: Request) -> JSONResponse:
        """GET /v1/models/{id}: the openai client's ``models.retrieve``."""
        wanted = request.path_params["model_id"]
        if wanted != model:
            return JSONResponse({"error": {"message": f"no model {wanted[:100]!r}: this server serves {model!r}.",
                                           "type": "invalid_request_error", "param": "model",
                                           "code": "model_not_found"}}, status_code=404)
        return JSONResponse(models_list(model)["data"][0])

    async def chat(request: Request):
        try:
            raw = await _read_body(request)
            body = parse_json("the request body", raw,
                              expected="a chat-completions JSON object")
            chat = parse_chat(body, pipeline.settings)
        except Exception as e:  # noqa: BLE001 - one error shape
            return error(e)
        cancel = threading.Event()
        outputs = chat_outputs(chat, astream(pipeline, chat.ask, cancel), model)
        if not chat.stream:
            watcher = asyncio.create_task(_stop_on_disconnect(request, cancel))
            try:
                completion = [out async for out in outputs][-1]
            except Exception as e:  # noqa: BLE001
                return error(e)
            finally:
                cancel.set()
                watcher.cancel()
            return JSONResponse(completion)

        async def events():
            try:
                async for out in outputs:
                    yield out
            except Exception as e:  # noqa: BLE001 - headers are gone: the error travels as an event
                _, body = error_response(e)
                yield f"data: {json.dumps(body, ensure_ascii=False)}\n\n"
            finally:
                cancel.set()  # also when the client went away: stop generating

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _stop_on_disconnect(request: Request, cancel: threading.Event) -> None:
        """Set ``cancel`` when the client of a non-streaming request hangs up (a client timing out and retrying
        would otherwise hold the model until an answer nobody reads is finished)."""
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                cancel.set()
                return

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "unknown_route", 405: "method_not_allowed"}.get(exc.status_code, "invalid_input")
        what = f"{request.method} {request.url.path}"
        text = {404: f"no such route: {what}. This server answers /v1/chat/completions, /v1/models[/{id}] and /health.",
                405: f"{what} is not allowed here."}.get(exc.status_code, str(exc.detail))
        return error(_HTTPError(text, code, exc.status_code))

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        return error(exc)

    return Starlette(
        routes=[Route("/health", health), Route("/v1/models", models), Route("/v1/models/{model_id:path}", one_model),
                Route("/v1/chat/completions", chat, methods=["POST"])],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )


def serve(pipeline, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Run the server until interrupted (uvicorn, one process: the pipeline is loaded once)."""
    import uvicorn

    from .openai_compat import served_model_name

    s = pipeline.settings
    print(f"serving {served_model_name(s)} ({'LLM ' + s.llm if pipeline.generator else 'extractive answers'}) "
          f"over index {pipeline.index.location} ({len(pipeline.index)} chunks) at http://{host}:{port}/v1",
          flush=True)
    uvicorn.run(create_app(pipeline), host=host, port=port, log_level="warning")
