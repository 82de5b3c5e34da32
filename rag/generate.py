"""Text generation with a transformers causal LM, optionally quantized, with LoRA adapters.

``Generator.load(settings)`` builds the model once (in a wrapper's ``setup()``)
through ``rag.modeling``, the loader training and merging use too;
``Generator.stream(prompt_text, request)`` returns a ``Generation``: iterate it
for text deltas, then read ``.text``, ``.usage``, ``.timings`` and
``.finish_reason``. Prompts come from ``rag.prompt.build_prompt``; this module
only encodes them (with ``rag.prompt.encode_prompt``) and decodes.

Adapters: the startup adapter (RAG_ADAPTER) is loaded with the model. A request
may name another LoRA adapter directory (``stream(..., adapter=DIR)``): it is
checked at once (``check_adapter``, with rag/adapters.py: PEFT LoRA files,
safetensors, prompt format, base model, and that its weights fit this base's
layers — the same checks as the startup adapter), then loaded into the
same PEFT model next to the others (``load_adapter``, named by a hash of its
resolved path) and activated with ``set_adapter`` inside the generation lock, so
a concurrent request never sees another's weights. At most RAG_MAX_ADAPTERS
per-request adapters stay loaded; the least recently used is unloaded with
``delete_adapter``. A request without ``adapter`` gets the startup adapter, or
the bare base model (PEFT's ``disable_adapter()``) when there is none.
Per-request adapters are LoRA only and share the startup tokenizer (its chat
template): one that needs its own tokenizer must be served as RAG_ADAPTER.

Concurrency: ``model.generate`` runs in a background thread, under one lock per
Generator, so one generation runs at a time per model (simple and memory-safe
on one GPU); a second stream waits for the lock in its own thread, still
cancellable, and never blocks the caller's thread, so retrieval for other
requests goes on. Sampling uses a private ``torch.Generator`` per request, so a
seed gives the same text whatever other threads do with the global RNG
(``rag.decoding``, with the stop sequences).

Out of scope: batching many requests into one forward pass (use vLLM for
that), beam search, batch size > 1.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterator

from .adapters import ADAPTER_CONFIG, check_adapter_dir, is_peft, linear_shapes, local_dir, read_json
from .config import Settings
from .decoding import first_stop, held_back, make_criteria, make_sampler
from .errors import ConfigError, InputError, ModelError, RagError
from .modeling import short as _short
from .prompt import build_prompt, encode_prompt
from .request import AskRequest

DEFAULT_CONTEXT_CAP = 8192  # when RAG_CONTEXT_TOKENS is unset: keeps KV memory sane on laptops
END_OF_TURN_MARKERS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")

log = logging.getLogger("rag.generate")


@dataclass
class _Plan:
    input_ids: list[int]
    max_new_tokens: int
    stops: list[str]
    sampling: bool
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    seed: int | None
    adapter: str | None = None  # a checked per-request adapter directory; None: the startup adapter / base


class Generation:
    """One streamed generation. Iterate once for text deltas; afterwards read
    ``text``, ``usage`` ({prompt_tokens, completion_tokens}), ``timings`` (first_token_ms,
    total_ms, tokens_per_s) and ``finish_reason`` ("stop", "length", "cancelled").

    The worker thread starts on the first ``next()`` and is always joined: when the
    stream ends, when the consumer stops early (``break`` out of a ``for`` loop,
    ``close()``, or leaving a ``with`` block), or after ``cancel()``, which may be called
    from any thread. ``close()`` belongs to the consuming thread.
    """

    def __init__(self, owner: "Generator", plan: _Plan, cancel: threading.Event | None):
        self._owner = owner
        self._plan = plan
        self._cancel = cancel if cancel is not None else threading.Event()
        self._abandon = threading.Event()  # set when the consumer leaves early
        self._iterator: weakref.ref | None = None
        self._thread: threading.Thread | None = None
        self._output_ids: list[int] = []
        self._error: BaseException | None = None
        self.text = ""
        self.seed = plan.seed
        self.usage = {"prompt_tokens": len(plan.input_ids), "completion_tokens": 0}
        self.timings: dict[str, float] = {}
        self.finish_reason: str | None = None

    # -- consumer side

    def __iter__(self) -> Iterator[str]:
        if self._iterator is not None:
            raise RuntimeError("a Generation can be iterated only once; read .text for the result")
        it = self._run()
        # Only a weak reference: a consumer that breaks out of its loop drops the last
        # reference, CPython closes the generator at once and its finally joins the thread.
        self._iterator = weakref.ref(it)
        return it

    def cancel(self) -> None:
        self._cancel.set()

    def close(self) -> None:
        """Stop generating (if still running) and wait for the worker thread."""
        it = self._iterator() if self._iterator is not None else None
        if it is not None:
            it.close()  # runs _run's finally: abandon + join
        if self._thread is not None:
            self._thread.join()
        if self.finish_reason is None:
            self.finish_reason = "cancelled"

    def read(self) -> str:
        """Consume the whole stream (if not iterated yet) and return the final text."""
        if self._iterator is None:
            for _ in self:
                pass
        else:
            self.close()
        return self.text

    def __enter__(self) -> "Generation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def _should_stop(self) -> bool:
        return self._cancel.is_set() or self._abandon.is_set()

    def _run(self) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        plan, tok = self._plan, self._owner.tokenizer
        t0 = time.perf_counter()
        marks: dict[str, float] = {}

        class Streamer(TextIteratorStreamer):
            def put(self, value):
                if not self.next_tokens_are_prompt:
                    now = time.perf_counter()
                    marks.setdefault("first", now)
                    marks["last"] = now
                super().put(value)

        streamer = Streamer(tok, skip_prompt=True, skip_special_tokens=True)
        criteria, stop_text = make_criteria(tok, len(plan.input_ids), plan.stops, self._should_stop)
        self._thread = threading.Thread(
            target=self._work, args=(streamer, criteria), name="rag-generate", daemon=True
        )
        self._thread.start()

        stops, longest = plan.stops, max((len(s) for s in plan.stops), default=0)
        buf, emitted, hit_stop, completed = "", 0, False, False
        try:
            for piece in streamer:
                if not piece:
                    continue
                buf += piece
                if stops:
                    cut = first_stop(buf, stops, max(0, emitted - longest))
                    if cut is not None:
                        hit_stop = True
                        if cut > emitted:
                            delta, emitted = buf[emitted:cut], cut
                            self.text = buf[:emitted]
                            yield delta
                        break
                safe = len(buf) - held_back(buf, stops) if stops else len(buf)
                if safe > emitted:
                    delta, emitted = buf[emitted:safe], safe
                    self.text = buf[:emitted]
                    yield delta
            else:
                if emitted < len(buf):  # the stream ended: a held-back tail is not a stop after all
                    delta, emitted = buf[emitted:], len(buf)
                    self.text = buf
                    yield delta
            completed = True
        finally:
            if not completed:
                self._abandon.set()
            self._thread.join()
            self._finish(t0, marks, hit_stop or (stop_text is not None and stop_text.hit))
        if self._error is not None:
            self.finish_reason = "error"
            if isinstance(self._error, RagError):  # e.g. a per-request adapter that failed to load
                raise self._error
            raise ModelError(f"generation failed: {_short(self._error)}", code="generation_failed") from self._error

    def _finish(self, t0: float, marks: dict[str, float], hit_stop: bool) -> None:
        plan, ids = self._plan, self._output_ids
        n = len(ids)
        self.usage = {"prompt_tokens": len(plan.input_ids), "completion_tokens": n}
        total = time.perf_counter() - t0
        first, last = marks.get("first"), marks.get("last")
        self.timings = {"total_ms": total * 1000.0}
        if first is not None:
            self.timings["first_token_ms"] = (first - t0) * 1000.0
        # decode speed after the first token (prefill excluded)
        self.timings["tokens_per_s"] = (n - 1) / (last - first) if n > 1 and last and first and last > first else 0.0
        if hit_stop or (ids and ids[-1] in self._owner.eos_token_ids):
            self.finish_reason = "stop"
        elif self._should_stop():
            self.finish_reason = "cancelled"
        elif n >= plan.max_new_tokens:
            self.finish_reason = "length"
        else:
            self.finish_reason = "stop"

    # -- worker side

    def _work(self, streamer, criteria) -> None:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        owner, plan = self._owner, self._plan
        try:
            # Wait for the model, staying cancellable while another request generates.
            while not owner._lock.acquire(timeout=0.05):
                if self._should_stop():
                    return
            try:
                if self._should_stop():
                    return
                processors = LogitsProcessorList()
                if plan.sampling:
                    processors.append(make_sampler(plan.temperature, plan.top_p, plan.top_k, plan.seed))
                # Sampling is done by our processor, so generate() always runs its greedy loop;
                # neutral values stop the model's own generation_config defaults from leaking in.
                config = GenerationConfig(
                    max_new_tokens=plan.max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    temperature=1.0,
                    top_p=1.0,
                    top_k=50,  # the library default: ignored by greedy, and not flagged as unused
                    repetition_penalty=plan.repetition_penalty,
                    eos_token_id=owner.eos_token_ids,
                    pad_token_id=owner.pad_token_id,
                )
                input_ids = torch.tensor([plan.input_ids], device=owner.input_device)
                with owner._using(plan.adapter), torch.inference_mode():
                    out = owner.model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        generation_config=config,
                        logits_processor=processors,
                        stopping_criteria=StoppingCriteriaList(criteria),
                        streamer=streamer,
                    )
                self._output_ids = out[0, len(plan.input_ids) :].tolist()
            finally:
                owner._lock.release()
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer's thread
            self._error = e
        finally:
            streamer.end()  # a second end() after generate's own only adds a stop signal nobody reads


# --------------------------------------------------------------------------- the generator


class Generator:
    """A loaded model + tokenizer. Build with ``load(settings)`` or inject a model directly."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        context_tokens: int,
        adapter_id: str | None = None,
        settings: Settings | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.adapter_id = adapter_id
        self.context_tokens = context_tokens
        self.settings = settings or Settings(llm=model_id)
        self._lock = threading.Lock()  # held while generating, and while adapters are loaded or switched
        # The startup adapter's PEFT name ("default" from Generator.load), and its directory when local.
        self._startup_adapter = model.active_adapter if is_peft(model) else None
        self._startup_dir = local_dir(adapter_id) if adapter_id else None
        # Per-request adapters loaded now: PEFT name -> directory, least recently used first.
        self._adapters: OrderedDict[str, str] = OrderedDict()
        # Read once, before any adapter is loaded: check_adapter runs in the callers' threads
        # while the generation thread may be changing the module tree.
        self._base_config = getattr(model, "config", None)
        self._shapes = linear_shapes(model)
        self.eos_token_ids = self._eos_ids()
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_token_id = pad if pad is not None else self.eos_token_ids[0] if self.eos_token_ids else 0

    @property
    def input_device(self):
        return self.model.get_input_embeddings().weight.device

    @property
    def loaded_adapters(self) -> list[str]:
        """Directories of the per-request adapters loaded now, least recently used first."""
        return list(self._adapters.values())

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for v in (gen_eos if isinstance(gen_eos, list) else [gen_eos]) + [self.tokenizer.eos_token_id]:
            if isinstance(v, int) and v not in ids:
                ids.append(v)
        # A chat model ends its turn with the template's end-of-turn marker even when
        # the tokenizer's eos is another token (Llama 3's <|eot_id|>, Gemma's <end_of_turn>).
        template = getattr(self.tokenizer, "chat_template", None) or ""
        vocab = self.tokenizer.get_vocab()
        for marker in END_OF_TURN_MARKERS:
            if marker in template and marker in vocab and vocab[marker] not in ids:
                ids.append(vocab[marker])
        return ids

    @classmethod
    def load(cls, settings: Settings) -> "Generator":
        """RAG_LLM (+ RAG_ADAPTER) loaded by rag.modeling, with the context the prompt is packed into."""
        from .modeling import load, max_positions

        loaded = load(settings)
        model = loaded.model
        model.eval()
        max_pos = max_positions(model.config, loaded.tokenizer)
        if settings.context_tokens:
            ctx = min(settings.context_tokens, max_pos) if max_pos else settings.context_tokens
        else:
            ctx = min(max_pos or 4096, DEFAULT_CONTEXT_CAP)
        return cls(model, loaded.tokenizer, model_id=settings.llm, context_tokens=ctx, adapter_id=settings.adapter,
                   settings=settings)

    # -- generation

    def plan(self, prompt_text: str, request: AskRequest, adapter: str | None = None) -> _Plan:
        ids = encode_prompt(self.tokenizer, prompt_text)
        room = self.context_tokens - len(ids)
        if room <= 0:
            raise InputError(
                f"the prompt has {len(ids)} tokens; the model's context is {self.context_tokens}. "
                "Shorten the question or send fewer passages."
            )
        sampling = request.temperature > 0.0
        seed = request.seed if request.seed is not None else (secrets.randbits(32) if sampling else None)
        return _Plan(
            input_ids=ids,
            max_new_tokens=min(request.max_new_tokens, room),
            stops=list(request.stop or []),
            sampling=sampling,
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.sampling_top_k,
            repetition_penalty=request.repetition_penalty,
            seed=seed,
            adapter=adapter,
        )

    def stream(self, prompt_text: str, request: AskRequest, cancel: threading.Event | None = None,
               adapter: str | None = None) -> Generation:
        """Start (lazily, on first iteration) a generation; see ``Generation``.

        ``max_new_tokens`` is also capped by what is left of the context after the prompt.
        ``adapter``: a local LoRA adapter directory for this request, checked now and loaded (once,
        then kept, up to RAG_MAX_ADAPTERS) when the generation gets the model; None: the startup
        adapter, or the bare base model when there is none.
        """
        checked = self.check_adapter(adapter) if adapter is not None else None
        return Generation(self, self.plan(prompt_text, request, checked), cancel)

    # -- per-request adapters

    def check_adapter(self, adapter: str) -> str | None:
        """Check a per-request adapter directory without loading it; return its resolved path, or None
        when it is the startup adapter itself. ModelError (adapter_not_found / adapter_mismatch /
        prompt_format_mismatch / pickle_weights) or ConfigError (RAG_MAX_ADAPTERS=0) otherwise."""
        d = local_dir(adapter)
        if d is None:
            raise ModelError(
                f"adapter {str(adapter)!r} is not a local directory: a per-request adapter must be an unpacked PEFT "
                "adapter (rag.weights.resolve_adapter turns a URL or a tarball into one).",
                code="adapter_not_found",
            )
        if d == self._startup_dir:
            return None
        if self.settings.max_adapters == 0:
            raise ConfigError("per-request adapters are turned off on this deployment (RAG_MAX_ADAPTERS=0): "
                              "send the request without an adapter, or set RAG_MAX_ADAPTERS to 1 or more.")
        check_adapter_dir(d, "adapter", llm=self.model_id, base_config=self._base_config, shapes=self._shapes,
                           allow_pickle=self.settings.allow_pickle)
        kind = read_json(d / ADAPTER_CONFIG).get("peft_type", "LORA")
        if str(kind).upper() != "LORA":
            raise ModelError(f"adapter={str(d)!r} is a {kind} adapter; only LoRA adapters can be switched per request "
                             "(serve it as RAG_ADAPTER instead).", code="adapter_mismatch")
        return str(d)

    @contextlib.contextmanager
    def _using(self, adapter: str | None):
        """Activate ``adapter`` (a checked directory) or the default weights; the caller holds ``_lock``."""
        if adapter is not None or self._startup_adapter is not None:
            name = self._load_request_adapter(adapter) if adapter is not None else self._startup_adapter
            if self.model.active_adapter != name:
                self.model.set_adapter(name, inference_mode=True)
            yield
        elif is_peft(self.model):  # per-request adapters were loaded onto a bare base: switch them off
            with self.model.disable_adapter():
                yield
        else:
            yield

    def _load_request_adapter(self, adapter: str) -> str:
        """Its PEFT name, loading it first if needed and unloading the least recently used beyond the limit."""
        name = "req_" + hashlib.sha256(adapter.encode()).hexdigest()[:16]
        if name in self._adapters:
            self._adapters.move_to_end(name)
            return name
        try:
            if is_peft(self.model):
                self.model.load_adapter(adapter, adapter_name=name, is_trainable=False)
            else:  # no startup adapter: the base becomes a PeftModel on the first per-request one
                from peft import PeftModel

                self.model = PeftModel.from_pretrained(self.model, adapter, adapter_name=name, is_trainable=False)
        except Exception as e:  # noqa: BLE001
            if is_peft(self.model) and name in self.model.peft_config:
                self.model.delete_adapter(name)  # a half-loaded adapter must not stay behind
            raise ModelError(
                f"the adapter {adapter!r} could not be loaded onto RAG_LLM={self.model_id!r} ({_short(e, 200)}). "
                "Use a PEFT LoRA adapter trained on this base model.",
                code="adapter_mismatch",
            ) from e
        self.model.eval()  # new LoRA dropout modules start in training mode
        self._adapters[name] = adapter
        while len(self._adapters) > max(1, self.settings.max_adapters):
            old, path = self._adapters.popitem(last=False)
            self.model.delete_adapter(old)
            log.info("unloaded adapter %s (least recently used; RAG_MAX_ADAPTERS=%d)", path, self.settings.max_adapters)
        return name

    def warmup(self) -> Generation:
        """Render a tiny prompt through the real template and generate one token (fail at boot)."""
        bp = build_prompt(
            self.tokenizer, question="Xin chào", passages=[], context_tokens=self.context_tokens, max_new_tokens=1
        )
        gen = self.stream(bp.text, AskRequest(question="Xin chào", max_new_tokens=1))
        gen.read()
        return gen

