"""The Replicate / Cog model: a thin translation layer over ``rag``.

``setup()`` reads the settings from the environment (``Settings.from_env``) and
loads the deployment with ``rag.deployment.load_deployment``, as the RunPod worker
does: the trained adapter passed as ``weights`` (COG_WEIGHTS: a tarball URL or path)
and RAG_INDEX_URL resolved, the index opened (the one `cog build` baked at
RAG_INDEX_DIR, see cog.yaml), the model loaded once and warmed up. A request's
``lora_weights`` (a tarball URL) is downloaded once into the weights cache
(``rag.deployment.RequestAdapters``) and served by ``rag.generate`` next to the
model's own adapter.

``run()`` takes Replicate's LLM input names (``prompt``, ``system_prompt``,
``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``stop_sequences``, ``seed``)
plus ``num_passages``, ``history`` (``rag.request.INPUT_NAMES``), ``output_format``
and ``lora_weights``, and maps them onto ``rag.request.AskRequest`` with
``rag.request.from_text_inputs`` — the one validator, with the same limits and
messages as the CLI and the RunPod worker.

The inputs are written once, as inline literal ``Input(...)`` calls: `cog build`
reads this file statically (a tree-sitter parser, nothing imported) and keeps only
literal defaults, bounds and descriptions (tests/test_cog_static.py applies its
rules). Their bounds are the defaults of ``rag.config.Settings`` and
``AskRequest``; a test checks that they are equal, and every request is validated
again with the deployment's own settings.

One runner, a sync generator (cog.yaml's ``predict``): cog 0.23's server (coglet)
streams tokens as they are generated only from a sync generator — it collects an
async generator's output before sending it — and cancellation interrupts the
generating thread. Replicate scales out by adding containers, one prediction each.
An async runner for concurrency would need a second ``run`` signature (the static
parser reads one method of one class), so there is none.

Output (``output_format``): ``text`` streams the answer and ends with the sources
block (``rag.render.sources_block``); ``json`` yields one JSON document (``rag.render.answer_json``: answer,
citations, usage, timings, retrieved passages). Metrics per prediction:
``retrieval_ms``, ``time_to_first_token_ms``, ``input_token_count`` and
``output_token_count`` (the token counts only when an LLM answered).

Out of scope here: prompts, retrieval, citation formatting — all in ``rag/``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Optional

from cog import BaseRunner, ConcatenateIterator, Input, Secret, streaming

from rag.config import Settings
from rag.errors import InputError, RagError
from rag.request import from_text_inputs

class RunnerError(Exception):
    """A failed setup or prediction as the caller sees it: ``code: message``."""


class Runner(BaseRunner):
    def setup(self, weights: Optional[str] = None) -> None:
        from rag.deployment import RequestAdapters, load_deployment
        from rag.errors import redact

        try:
            settings = Settings.from_env(os.environ)
            if weights and settings.adapter:
                print(f"note: the weights (COG_WEIGHTS) replace RAG_ADAPTER={redact(settings.adapter, client=False)!r}", flush=True)
            # stdout reaches Cog's setup logs through a pipe: the line is printed before the warm-up
            self.pipeline = load_deployment(settings, weights=str(weights) if weights else None,
                                            announce=lambda line: print(f"loaded: {line}", flush=True))
            self.adapters = RequestAdapters(self.pipeline)
        except RagError as e:
            # Setup logs are read by the model's owner, so paths stay in: they say what to fix.
            message = redact(f"{e.code}: {e}", client=False)
            print(f"setup failed: {message}", flush=True)
            raise RunnerError(message) from None

    @streaming
    def run(  # each Input(...) is one literal call, as `cog build` needs (see the module docstring)
        self,
        prompt: str = Input(description="The student's question, in Vietnamese: at most 2000 characters (RAG_MAX_QUESTION_CHARS) once composed (NFC).", max_length=6000),
        system_prompt: str = Input(description="Replaces the default system prompt; empty: the default.", default="", max_length=8000),
        max_tokens: int = Input(description="Most tokens the LLM may generate.", default=512, ge=1, le=2048),
        temperature: float = Input(description="Sampling temperature; 0 = greedy (deterministic).", default=0.0, ge=0.0, le=2.0),
        top_p: float = Input(description="Nucleus sampling: the probability mass kept; 1 = off, 0 = the most likely token only.", default=1.0, ge=0.0, le=1.0),
        top_k: int = Input(description="Sampling: keep only the k most likely tokens; 0 = off.", default=0, ge=0, le=1000),
        stop_sequences: str = Input(description="Up to 4 stop sequences of at most 100 characters, comma-separated (or a JSON array).", default="", max_length=2500),
        seed: Optional[int] = Input(description="Sampling seed; empty = random.", default=None, ge=0, le=4294967295),
        num_passages: Optional[int] = Input(description="Passages retrieved from the regulations; empty = the deployment's RAG_TOP_K.", default=None, ge=1, le=20),
        history: str = Input(description='Earlier turns as a JSON array of {"role": "user" or "assistant", "content": "..."}: at most 20 turns of 8000 characters.', default="", max_length=700000),
        output_format: str = Input(description="text: the answer, then its sources; json: one JSON document with structured citations.", default="text", choices=["text", "json"]),
        lora_weights: Optional[str] = Input(description="URL of a LoRA adapter tarball (.tar.gz with adapter_config.json) trained on this model's base, for this request; downloaded once and cached. Needs an LLM.", default=None, max_length=4096),
        hf_token: Optional[Secret] = Input(description="Bearer token for a private lora_weights URL.", default=None),
    ) -> ConcatenateIterator[str]:
        from rag.streaming import stream_in_thread

        with _errors():
            # translation only: inputs → AskRequest (rag.request.INPUT_NAMES), events → output chunks and metrics
            request = from_text_inputs({
                "prompt": prompt, "system_prompt": system_prompt, "max_tokens": max_tokens,
                "temperature": temperature, "top_p": top_p, "top_k": top_k, "stop_sequences": stop_sequences,
                "seed": seed, "num_passages": num_passages, "history": history,
            }, self.pipeline.settings)
            if output_format not in ("text", "json"):
                raise InputError(f"'output_format' is {output_format!r}; use 'text' or 'json'.")
            adapter = None
            if lora_weights:
                token = hf_token.get_secret_value() if isinstance(hf_token, Secret) else hf_token
                adapter = self.adapters.get(lora_weights, token=token)
            for event in stream_in_thread(self.pipeline, request, adapter=adapter):
                yield from self._chunks(event, output_format)

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


class _errors:
    """Any failure → ``RunnerError(rag.errors.public_message(e))``: "<code>: <message>", the same string the
    RunPod worker returns, with no traceback, path or host name. A bug is logged as one line
    (``rag.errors.trace_line``: type, message, module:line frames): coglet shows what a prediction prints in
    that prediction's logs, which its client reads, so no traceback or path is printed there.
    Cancellation (Cog's CancelationException, asyncio.CancelledError) is a BaseException and passes through."""

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        from rag.errors import public_message, trace_line

        if e is None or not isinstance(e, Exception) or isinstance(e, RunnerError):
            return False
        if not isinstance(e, RagError):
            print(trace_line(e), file=sys.stderr, flush=True)
        raise RunnerError(public_message(e)) from None

