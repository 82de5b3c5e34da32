"""The Replicate / Cog model: a thin translation layer over ``rag``.

``setup()`` reads the settings from the environment (``Settings.from_env``),
resolves the trained adapter passed as ``weights`` (COG_WEIGHTS: a tarball URL
or path) and RAG_INDEX_URL with ``rag.weights.resolve_deployment``, loads
everything once with ``Pipeline.from_settings`` and warms up. A request's
``lora_weights`` (a tarball URL) is downloaded once into the same cache and
served by ``rag.generate`` next to the model's own adapter.
``run()`` maps Cog inputs onto the fields of ``rag.request.AskRequest`` — which
validates them with the same limits and messages as the CLI and the RunPod
worker, so a bad input is rejected the same way whether or not Cog's server has
an OpenAPI schema to check it against first — and streams the pipeline's events.

Two runners, because cog 0.23's server (coglet) cannot do all three of live
streaming, concurrency and cancellation with one kind of ``run``:

* ``Runner`` (cog.yaml's default): a sync generator. Tokens reach the client as
  they are generated (SSE, ``replicate.stream``); cancellation interrupts
  generation; one prediction at a time per container (Replicate scales out).
* ``ConcurrentRunner``: ``async def run``, up to ``COG_MAX_CONCURRENCY``
  predictions at once (``concurrency.max`` in cog.yaml); cancellation arrives as
  ``asyncio.CancelledError``. coglet 0.23 collects an async generator's output
  before sending it, so its answers arrive whole — fine for extractive answers.

Output (``output_format``): ``text`` streams the answer and ends with the
"Nguồn:" block; ``json`` yields one JSON document (``rag.render.answer_json``:
answer, citations, usage, timings, retrieved passages). Metrics per prediction:
``retrieval_ms``, ``time_to_first_token_ms``, ``input_token_count`` and
``output_token_count`` (the token counts only when an LLM answered).

Out of scope here: prompts, retrieval, citation formatting — all in ``rag/``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Optional

from cog import AsyncConcatenateIterator, BaseRunner, ConcatenateIterator, Input, Secret, streaming

from rag.config import Settings
from rag.errors import ConfigError, InputError, RagError
from rag.request import DEFAULT_MAX_NEW_TOKENS, MAX_STOPS, MAX_SYSTEM_PROMPT_CHARS, AskRequest

# Static bounds for the OpenAPI schema (Replicate's form and its API-side validation): the
# defaults of rag's Settings and AskRequest. Every request is validated again by AskRequest
# with the deployment's own settings, so a changed RAG_MAX_* limit is still enforced exactly.
_S = Settings()
_R = AskRequest(question="?")
QUESTION = Input(description="The student's question, in Vietnamese.", max_length=_S.max_question_chars)
TOP_K = Input(description=f"Passages retrieved; empty = the deployment's RAG_TOP_K (default {_S.top_k}).",
              default=None, ge=1, le=_S.max_top_k)
MAX_NEW_TOKENS = Input(description="Most tokens the LLM may generate.", default=DEFAULT_MAX_NEW_TOKENS, ge=1,
                       le=_S.max_new_tokens_limit)
TEMPERATURE = Input(description="0 = greedy (deterministic).", default=_R.temperature, ge=0.0, le=2.0)
TOP_P = Input(description="Nucleus sampling; 1 = off.", default=_R.top_p, ge=0.0, le=1.0)
STOP_SEQUENCES = Input(description=f"Up to {MAX_STOPS} stop sequences, comma-separated (or a JSON array).",
                       default="")
SEED = Input(description="Sampling seed; empty = random.", default=None, ge=0, le=2**32 - 1)
SYSTEM_PROMPT = Input(description="Replaces the default system prompt (empty = default).", default="",
                      max_length=MAX_SYSTEM_PROMPT_CHARS)
HISTORY = Input(description='Earlier turns as JSON: [{"role": "user", "content": "..."}, '
                '{"role": "assistant", "content": "..."}].', default="")
LORA_WEIGHTS = Input(description="URL of a LoRA adapter tarball (.tar.gz with adapter_config.json) for this "
                     "request, trained on this model's base; downloaded once and cached, and kept loaded next to "
                     "the model's own adapter (up to RAG_MAX_ADAPTERS of them).", default=None)
HF_TOKEN = Input(description="Bearer token for a private lora_weights URL.", default=None)
OUTPUT_FORMAT = Input(description="text: the answer, then its sources; json: one JSON document with "
                      "structured citations.", default="text", choices=["text", "json"])


class RunnerError(Exception):
    """A failed setup or prediction as the caller sees it: ``code: message``."""


class Runner(BaseRunner):
    def setup(self, weights: Optional[str] = None) -> None:
        from rag.pipeline import Pipeline
        from rag.weights import WeightsCache, _redact, resolve_deployment

        try:
            settings = Settings.from_env(os.environ)
            self.cache = WeightsCache.from_settings(settings)  # also holds per-request lora_weights
            if weights and settings.adapter:
                print(f"note: the weights (COG_WEIGHTS) replace RAG_ADAPTER={_redact(settings.adapter)!r}", flush=True)
            settings = resolve_deployment(settings, weights=str(weights) if weights else None, cache=self.cache)
            self.pipeline = Pipeline.from_settings(settings)
            s, p = self.pipeline.settings, self.pipeline
            # Printed before the warm-up: stdout reaches Cog's setup logs through a pipe, and a line
            # printed as setup returns can miss them.
            print(f"loaded: {'llm ' + s.llm if p.generator else 'extractive (no RAG_LLM)'}"
                  f"{' + adapter ' + s.adapter if s.adapter else ''}; index {p.index.location} "
                  f"({len(p.index)} chunks, {s.embed_model})", flush=True)
            self.pipeline.warmup()
        except RagError as e:
            # Setup logs are read by the model's owner, so paths stay in: they say what to fix.
            print(f"setup failed: {e.code}: {e}", flush=True)
            raise RunnerError(f"{e.code}: {e}") from None

    @streaming
    def run(
        self,
        question: str = QUESTION,
        top_k: Optional[int] = TOP_K,
        max_new_tokens: int = MAX_NEW_TOKENS,
        temperature: float = TEMPERATURE,
        top_p: float = TOP_P,
        stop_sequences: str = STOP_SEQUENCES,
        seed: Optional[int] = SEED,
        system_prompt: str = SYSTEM_PROMPT,
        history: str = HISTORY,
        lora_weights: Optional[str] = LORA_WEIGHTS,
        hf_token: Optional[Secret] = HF_TOKEN,
        output_format: str = OUTPUT_FORMAT,
    ) -> ConcatenateIterator[str]:
        from rag.streaming import stream_in_thread

        with _errors():
            request, adapter = self._request(locals())
            for event in stream_in_thread(self.pipeline, request, adapter=adapter):
                yield from self._chunks(event, output_format)

    # -- translation only: inputs → AskRequest, events → output chunks and metrics ----------------
    def _request(self, inputs: dict) -> tuple[AskRequest, Optional[str]]:
        """The validated request, and the local directory of its ``lora_weights`` adapter (or None)."""
        request = AskRequest.from_dict(_request_dict(inputs), self.pipeline.settings)
        if inputs["output_format"] not in ("text", "json"):
            raise InputError(f"'output_format' is {inputs['output_format']!r}; use 'text' or 'json'.")
        adapter = self._adapter_dir(inputs["lora_weights"], inputs["hf_token"]) if inputs["lora_weights"] else None
        return request, adapter

    def _chunks(self, event, output_format: str) -> list[str]:
        from rag.pipeline import Delta, Final
        from rag.render import answer_json, sources_block

        if isinstance(event, Delta):
            return [event.text] if event.text and output_format == "text" else []
        if isinstance(event, Final):
            self._record_metrics(event.answer)
            if output_format == "json":
                return [json.dumps(answer_json(event.answer), ensure_ascii=False)]
            block = sources_block(event.answer)
            return [block] if block else []
        return []

    def _adapter_dir(self, url, token) -> str:
        """Download (once) and unpack a ``lora_weights`` tarball; rag.generate checks and activates it."""
        from rag.weights import is_url, resolve_adapter

        if not isinstance(url, str) or not is_url(url.strip()):
            raise InputError("'lora_weights' must be an http(s) URL of an adapter tarball (.tar or .tar.gz).")
        secret = token.get_secret_value() if isinstance(token, Secret) else token
        adapter = resolve_adapter(url, what="lora_weights", cache=self.cache, token=secret, error=InputError)
        if self.pipeline.generator is None:
            raise ConfigError("lora_weights needs an LLM, but this model answers extractively: set RAG_LLM.")
        return adapter

    def _record_metrics(self, answer) -> None:
        t, u = answer.timings, answer.usage
        if "retrieve_ms" in t:
            self.record_metric("retrieval_ms", round(t["retrieve_ms"], 2))
        first = t.get("first_token_ms", t.get("total_ms"))
        if first is not None:
            self.record_metric("time_to_first_token_ms", round(first, 2))
        if "prompt_tokens" in u:
            self.record_metric("input_token_count", int(u["prompt_tokens"]))
        if "completion_tokens" in u:
            self.record_metric("output_token_count", int(u["completion_tokens"]))


class ConcurrentRunner(Runner):
    """Up to COG_MAX_CONCURRENCY predictions at once (cog.yaml ``concurrency.max``); answers arrive whole."""

    @streaming
    async def run(
        self,
        question: str = QUESTION,
        top_k: Optional[int] = TOP_K,
        max_new_tokens: int = MAX_NEW_TOKENS,
        temperature: float = TEMPERATURE,
        top_p: float = TOP_P,
        stop_sequences: str = STOP_SEQUENCES,
        seed: Optional[int] = SEED,
        system_prompt: str = SYSTEM_PROMPT,
        history: str = HISTORY,
        lora_weights: Optional[str] = LORA_WEIGHTS,
        hf_token: Optional[Secret] = HF_TOKEN,
        output_format: str = OUTPUT_FORMAT,
    ) -> AsyncConcatenateIterator[str]:
        import asyncio

        from rag.streaming import astream

        with _errors():
            # off the event loop: a lora_weights URL may be downloading while other predictions stream
            request, adapter = await asyncio.to_thread(self._request, locals())
            async for event in astream(self.pipeline, request, adapter=adapter):
                for chunk in self._chunks(event, output_format):
                    yield chunk


class _errors:
    """Any failure → ``RunnerError(rag.serving.public_message(e))``: "<code>: <message>", the same string the
    RunPod worker returns, with no traceback, path or host name; a bug's traceback goes to the logs only.
    Cancellation (Cog's CancelationException, asyncio.CancelledError) is a BaseException and passes through."""

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        from rag.serving import public_message

        if e is None or not isinstance(e, Exception) or isinstance(e, RunnerError):
            return False
        if not isinstance(e, RagError):
            traceback.print_exception(kind, e, tb, file=sys.stderr)
        raise RunnerError(public_message(e)) from None


def _request_dict(inputs: dict) -> dict:
    """Cog inputs → AskRequest fields. Without an OpenAPI schema Cog passes raw JSON values through,
    so anything may arrive here; AskRequest.from_dict is the one validator."""
    return {
        "question": inputs["question"], "top_k": inputs["top_k"], "max_new_tokens": inputs["max_new_tokens"],
        "temperature": inputs["temperature"], "top_p": inputs["top_p"], "stop": _stops(inputs["stop_sequences"]),
        "seed": inputs["seed"], "system_prompt": inputs["system_prompt"] or None,
        "history": _history(inputs["history"]),
    }


def _stops(value):
    if not isinstance(value, str):
        return value  # a JSON list sent without a schema: AskRequest checks it
    value = value.strip()
    if not value:
        return []
    if value.startswith("["):
        try:
            return json.loads(value)
        except ValueError as e:
            raise InputError(f"'stop_sequences' looks like a JSON array but is not valid JSON ({e}).") from e
    return [s.strip() for s in value.split(",") if s.strip()]


def _history(value):
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if not isinstance(value, str):
        return value  # a JSON list sent without a schema: AskRequest checks it
    try:
        return json.loads(value)
    except ValueError as e:
        raise InputError(
            f"'history' is not valid JSON ({e}): send a JSON array such as "
            '[{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}].'
        ) from e
