"""What the serving wrappers share: the pipeline a deployment loads at setup, and a request's own adapter.

The Cog runner (``predict.py``) and the RunPod worker (``runpod_worker/handler.py``) do the same
two things around their platform's input and output:

- ``load_deployment(settings, weights=…)``: the adapter (Cog's ``weights``, else RAG_ADAPTER) and
  RAG_INDEX_URL resolved to local directories (``rag.weights.resolve_deployment``), the pipeline
  loaded once (``Pipeline.from_settings``), what is served announced in one line (``describe``),
  then one warm-up pass, so a broken setup fails before the first request;
- ``RequestAdapters.get(url)``: a request's ``lora_weights`` URL → the local directory of that
  adapter, refused before any download when the deployment cannot use it, downloaded once into
  the deployment's weights cache (``rag.weights.request_adapter``).

Out of scope: the platforms' inputs and outputs (the wrappers), where the weights cache lives
(RAG_WEIGHTS_CACHE; the RunPod worker points it at the network volume), the downloads themselves
(``rag.weights``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .config import Settings

if TYPE_CHECKING:
    from .pipeline import Pipeline


def load_deployment(settings: Settings, *, weights: str | None = None,
                    announce: Callable[[str], None] | None = None) -> "Pipeline":
    """The deployment's pipeline, loaded and warmed up; ``announce`` gets ``describe``'s line before the
    warm-up (Cog's setup logs can miss a line printed as setup returns)."""
    from .pipeline import Pipeline
    from .weights import WeightsCache, resolve_deployment

    settings = resolve_deployment(settings, weights=weights, cache=WeightsCache.from_settings(settings))
    pipeline = Pipeline.from_settings(settings)
    if announce is not None:
        announce(describe(pipeline))
    pipeline.warmup()
    return pipeline


def describe(pipeline: "Pipeline") -> str:
    """What is served: "llm <model> + adapter <adapter>; index <where> (<n> chunks, <embedder>)"."""
    s = pipeline.settings
    model = (f"llm {s.llm}" + (f" + adapter {s.adapter}" if s.adapter else "") if pipeline.generator is not None
             else "extractive (no RAG_LLM)")
    return f"{model}; index {pipeline.index.location} ({len(pipeline.index)} chunks, {s.embed_model})"


class RequestAdapters:
    """Requests' ``lora_weights``: each URL downloaded once into the deployment's weights cache (made from
    its settings, RAG_WEIGHTS_CACHE / RAG_WEIGHTS_CACHE_GB), at most RAG_MAX_ADAPTERS kept loaded."""

    def __init__(self, pipeline: "Pipeline"):
        from .weights import WeightsCache

        self.pipeline = pipeline
        self.cache = WeightsCache.from_settings(pipeline.settings)

    def get(self, url: object, *, token: str | None = None) -> str:
        """The adapter directory for ``url``; InputError without an LLM, with RAG_MAX_ADAPTERS=0
        or for anything but an http(s) URL; a download error that names no server path."""
        from .weights import request_adapter

        return request_adapter(url, has_llm=self.pipeline.generator is not None, cache=self.cache,
                               max_adapters=self.pipeline.settings.max_adapters, token=token)
