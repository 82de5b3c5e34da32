"""The OpenAI chat-completions format over rag's one request type.

``parse_chat(body, settings)`` turns a ``/v1/chat/completions`` body into an
``AskRequest`` (the last user message is the question, earlier user/assistant
turns the history, system/developer messages the system prompt), with the same
limits as every other entry point. ``ChatFormatter`` turns a pipeline's
``Delta``/``Final`` events into ``chat.completion`` or ``chat.completion.chunk``
objects; ``models_list`` answers ``/v1/models``.

Sources travel two ways, so both plain and rag-aware clients get them:

- ``sources``: an extra field on the response (non-streaming) or on the chunk
  that carries ``finish_reason`` (streaming): one object per citation, with its
  house-style ``label`` and the fields of ``Citation`` (document, source, page,
  chapter, article, article_title, clause, point). ``refused`` rides along, and
  ``query``: what was searched (a follow-up rewritten from the conversation).
- a sources block appended to the message text (``rag.render.message_block``),
  listing the citations whose label the answer does not already quote (an
  extractive answer quotes them all, so it gets no block).

``chat_outputs`` turns a pipeline's events into the outputs of one completion and
``error_response`` an exception into OpenAI's error object with its HTTP status: RunPod's
``/openai/v1`` route (runpod_worker/handler.py) and ``rag serve`` (rag/server.py) both use
them, so the two speak the same API.

Accepted and ignored at the values that change nothing: ``n`` = 1, ``logprobs`` = false,
``user``, ``response_format`` ``{"type": "text"}``, ``stream_options``, the penalties at 0;
any other field, or another value, is refused with a message naming it.

Deliberately different from OpenAI: ``temperature`` defaults to 0 (greedy, the
rag default) rather than 1; ``model`` is echoed, not used to pick a model (an
endpoint serves one); history longer than the request limit keeps the most
recent turns. Out of scope: tools and function calls, ``n`` > 1, logprobs,
images, the legacy ``/v1/completions`` route.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Mapping

from .config import Settings
from .errors import InputError
from .render import message_block, message_text, sources
from .request import MAX_HISTORY_TURNS, AskRequest
from .types import Answer

ROUTE_CHAT = "/v1/chat/completions"
ROUTE_MODELS = "/v1/models"
ROUTES = (ROUTE_CHAT, ROUTE_MODELS)
SSE_DONE = "data: [DONE]\n\n"

# OpenAI field -> AskRequest field
_MAPPED = {
    "max_tokens": "max_new_tokens",
    "max_completion_tokens": "max_new_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "stop": "stop",
    "seed": "seed",
    "top_k": "sampling_top_k",  # vLLM-style extension
    "repetition_penalty": "repetition_penalty",  # vLLM-style extension
}
# Accepted; those that change nothing at their default are ignored there and refused otherwise (parse_chat).
_ACCEPTED = {"model", "messages", "stream", "stream_options", "n", "user", "presence_penalty", "frequency_penalty",
             "logprobs", "response_format"}
CHAT_FIELDS = tuple(sorted(_ACCEPTED | set(_MAPPED)))
_SYSTEM_ROLES = ("system", "developer")


@dataclass
class ChatRequest:
    ask: AskRequest
    stream: bool = False
    include_usage: bool = False
    model: str | None = None


def parse_chat(body: Any, settings: Settings) -> ChatRequest:
    """Validate a chat-completions body; every problem is an ``InputError`` naming the field."""
    if not isinstance(body, Mapping):
        raise InputError("the chat-completions request body ('openai_input' on RunPod) must be a JSON object.")
    unknown = sorted(set(body) - set(CHAT_FIELDS))
    if unknown:
        raise InputError(f"unsupported field(s): {', '.join(unknown)}. Supported: {', '.join(CHAT_FIELDS)}.")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InputError("'stream' must be true or false.")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, Mapping) or set(options) - {"include_usage"} or \
                not isinstance(options.get("include_usage", False), bool):
            raise InputError("'stream_options' may only be {\"include_usage\": true|false}.")
        if not stream:
            raise InputError("'stream_options' is only allowed when 'stream' is true.")
        include_usage = options.get("include_usage", False)
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise InputError("'n' must be 1: one answer per request.")
    for name in ("presence_penalty", "frequency_penalty"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or value not in (0, 0.0)):
            raise InputError(f"'{name}' is not supported: leave it out or set it to 0 (use repetition_penalty).")
    if body.get("logprobs") is not None and body.get("logprobs") is not False:
        raise InputError("'logprobs' is not supported: leave it out or set it to false.")
    if body.get("user") is not None and not isinstance(body.get("user"), str):
        raise InputError("'user' must be a string.")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, Mapping) or fmt.get("type") != "text" or set(fmt) != {"type"}):
        raise InputError("'response_format' may only be {\"type\": \"text\"}: answers are text with their sources.")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InputError("'model' must be a string.")

    system, turns, at = _split_messages(body.get("messages"))
    fields: dict[str, Any] = {"question": turns[-1]["content"], "history": turns[:-1][-MAX_HISTORY_TURNS:]}
    history_at = at[:-1][-MAX_HISTORY_TURNS:]  # history[i] is messages[history_at[i]]
    if system:
        fields["system_prompt"] = system
    for name, target in _MAPPED.items():
        if body.get(name) is not None:
            if target in fields and name != target:
                raise InputError("give either 'max_tokens' or 'max_completion_tokens', not both.")
            fields[target] = body[name]
    try:
        ask = AskRequest.from_dict(fields, settings)
    except InputError as e:
        # The limits are rag's; the names the client used are OpenAI's.
        msg = str(e).replace("'max_new_tokens'", "'max_tokens'").replace("'sampling_top_k'", "'top_k'")
        msg = msg.replace("'question'", f"'messages[{at[-1]}].content' (the question)")
        msg = msg.replace("'system_prompt'", "'messages' of role 'system', together,")
        msg = re.sub(r"'history\[(\d+)\]", lambda m: f"'messages[{history_at[int(m.group(1))]}]"
                     if int(m.group(1)) < len(history_at) else m.group(0), msg)
        raise InputError(msg) from e
    return ChatRequest(ask=ask, stream=stream, include_usage=include_usage, model=model)


def _split_messages(messages: Any) -> tuple[str | None, list[dict[str, str]], list[int]]:
    """The system text, the user and assistant turns, and each turn's position in ``messages``."""
    if not isinstance(messages, list) or not messages:
        raise InputError("'messages' must be a non-empty list of {\"role\": ..., \"content\": ...} objects.")
    system: list[str] = []
    turns: list[dict[str, str]] = []
    at: list[int] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            raise InputError(f"'{where}' must be an object with 'role' and 'content'.")
        extra = sorted(set(m) - {"role", "content", "name"})
        if extra:
            raise InputError(f"'{where}' has unsupported field(s) {', '.join(extra)} (tools are not supported).")
        if m.get("name") is not None and not isinstance(m.get("name"), str):
            raise InputError(f"'{where}.name' must be a string.")
        role = m.get("role")
        if role not in ("user", "assistant", *_SYSTEM_ROLES):
            shown = repr(role) if role is None or isinstance(role, str) else f"a JSON {_json_type(role)}"
            raise InputError(f"'{where}.role' is {shown}; use 'system', 'user' or 'assistant' (tools are not "
                             "supported).")
        if "content" not in m:
            raise InputError(f"'{where}' has no 'content'.")
        text = _text(m["content"], where)
        if role in _SYSTEM_ROLES:
            if text.strip():
                system.append(text.strip())
        else:
            turns.append({"role": role, "content": text})
            at.append(i)
    if not turns or turns[-1]["role"] != "user":
        raise InputError("the last message must have role 'user': it is the question to answer.")
    if not turns[-1]["content"].strip():
        raise InputError(f"the question (messages[{len(messages) - 1}], the last user message) is empty.")
    return ("\n\n".join(system) or None), turns, at


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", bool: "boolean", int: "number", float: "number"}.get(type(value), "value")


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InputError(f"'{where}.content[{j}]' must be {{\"type\": \"text\", \"text\": \"...\"}}: only text is supported.")
            parts.append(part["text"])
        return "\n".join(parts)
    raise InputError(f"'{where}.content' must be a string or a list of text parts.")


# ------------------------------------------------------------------------------------------ output


def served_model_name(settings: Settings) -> str:
    """The id shown in /v1/models and echoed in responses: the adapter, else the LLM, else the extractive mode.

    A local path is reduced to its last part, so no directory layout reaches a client.
    """
    name = settings.adapter or settings.llm
    if not name:
        return "rag-extractive"
    if name.startswith(("http://", "https://")):
        from .errors import redact

        name = redact(name, client=False)  # no signed-URL query string or credentials
        return PurePath(name.rstrip("/")).name or "rag-model"
    if name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1:
        return PurePath(name.rstrip("/")).name or "rag-model"
    return name


def models_list(model: str, created: int | None = None) -> dict:
    return {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": int(created or time.time()), "owned_by": "rag"}],
    }


def usage(answer: Answer) -> dict:
    p = int(answer.usage.get("prompt_tokens", 0))
    c = int(answer.usage.get("completion_tokens", 0))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def finish_reason(answer: Answer) -> str:
    return "length" if answer.finish_reason == "length" else "stop"


def sse(obj: Any) -> str:
    """One server-sent event in the form OpenAI clients parse."""
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


class ChatFormatter:
    """Builds the response objects of one chat completion (one id, one timestamp)."""

    def __init__(self, model: str, include_usage: bool = False):
        self.model = model
        self.include_usage = include_usage
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def completion(self, answer: Answer) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": message_text(answer)},
                    "finish_reason": finish_reason(answer),
                }
            ],
            "usage": usage(answer),
            "sources": sources(answer),
            "refused": answer.refused,
            "query": answer.query,
        }

    def _chunk(self, delta: dict, finish: str | None = None, **extra) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **({"usage": None} if self.include_usage else {}),  # as OpenAI: null on every chunk but the last
            **extra,
        }

    def role_chunk(self) -> dict:
        return self._chunk({"role": "assistant", "content": ""})

    def delta_chunk(self, text: str) -> dict:
        return self._chunk({"content": text})

    def final_chunks(self, answer: Answer) -> list[dict]:
        """The citation block (if any), the chunk with finish_reason + sources, and the usage chunk if asked for."""
        out = []
        block = message_block(answer)
        if block:
            out.append(self.delta_chunk(block))
        out.append(self._chunk({}, finish_reason(answer), sources=sources(answer), refused=answer.refused,
                               query=answer.query))
        if self.include_usage:
            out.append({**self._chunk({}), "choices": [], "usage": usage(answer)})
        return out


async def chat_outputs(chat: ChatRequest, events, model: str):
    """The outputs of one chat completion, from ``Pipeline.stream`` events (an async iterator): one
    ``chat.completion`` object, or server-sent-event strings of ``chat.completion.chunk`` objects ending
    with ``data: [DONE]`` (the role chunk travels with the first text, not as a write of its own)."""
    from .pipeline import Delta

    fmt = ChatFormatter(model, include_usage=chat.include_usage)
    head = sse(fmt.role_chunk())
    async for event in events:
        if not chat.stream:
            if not isinstance(event, Delta):
                yield fmt.completion(event.answer)
        elif isinstance(event, Delta):
            yield head + sse(fmt.delta_chunk(event.text))
            head = ""
        else:
            yield head + "".join(sse(c) for c in fmt.final_chunks(event.answer)) + SSE_DONE


# HTTP status by error code: the request is wrong (400), cannot be served by this deployment (422),
# the server is not ready (503); anything else is the server's fault (500).
_STATUS = {"invalid_input": 400, "bad_config": 422, "adapter_mismatch": 422, "weights_unreachable": 422,
           "weights_not_tarball": 422, "weights_invalid": 422, "not_found": 404, "unknown_route": 404,
           "worker_not_ready": 503, "out_of_memory": 503}


def error_response(exc: BaseException, status: int | None = None, code: str | None = None) -> tuple[int, dict]:
    """(HTTP status, ``{"error": {"message", "type", "param", "code"}}``) for ``exc``, as OpenAI answers.

    The message is ``rag.errors.public_message``'s: no traceback, path or host name. ``param`` is the
    request field the message names first (``'max_tokens'=0 is out of range`` → ``max_tokens``).
    ``code`` replaces the error's own (``worker_not_ready`` for a request to a worker whose setup failed)."""
    import re

    from .errors import error_code, public_message

    code = code or error_code(exc)
    status = status or _STATUS.get(code, 500)
    message = public_message(exc)
    m = re.search(r"(?:^|: )'([A-Za-z_]+)(?=['\[.])", message) if status < 500 else None
    kind = "invalid_request_error" if status < 500 else "server_error"
    return status, {"error": {"message": message, "type": kind, "param": m.group(1) if m else None, "code": code}}


__all__ = [
    "ROUTES", "ROUTE_CHAT", "ROUTE_MODELS", "SSE_DONE", "CHAT_FIELDS", "ChatRequest", "ChatFormatter",
    "parse_chat", "served_model_name", "models_list", "sources", "sse", "chat_outputs",
    "error_response",
]
