"""rag.deployment: what the Cog runner and the RunPod worker share at setup and per request."""

from __future__ import annotations

import pytest

from rag.deployment import RequestAdapters, describe, load_deployment
from rag.errors import ConfigError, InputError


def test_load_deployment_announces_what_is_served_then_warms_up(demo_index_dir, settings_factory, monkeypatch):
    from rag.pipeline import Pipeline

    said, warmed = [], []
    monkeypatch.setattr(Pipeline, "warmup", lambda self: warmed.append(list(said)))
    pipeline = load_deployment(settings_factory(demo_index_dir), announce=said.append)
    assert said == [describe(pipeline)] and warmed == [said]  # announced before the warm-up
    assert said[0] == (f"extractive (no RAG_LLM); index {pipeline.index.location} ({len(pipeline.index)} chunks, "
                       f"{pipeline.settings.embed_model})")


def test_weights_without_an_llm_fail_before_anything_loads(demo_index_dir, settings_factory):
    with pytest.raises(ConfigError, match="RAG_LLM is not set"):
        load_deployment(settings_factory(demo_index_dir), weights="https://example.org/adapter.tar.gz")


def test_request_adapters_are_refused_before_any_download(demo_pipeline):
    adapters = RequestAdapters(demo_pipeline)
    with pytest.raises(InputError, match="lora_weights needs an LLM"):  # the client's input, not a server fault
        adapters.get("https://example.org/lora.tar.gz")

    class WithLLM:  # the same deployment as if it had a model: a local path is not a URL
        settings, generator = demo_pipeline.settings, object()

    with pytest.raises(InputError, match="'lora_weights' must be an http"):
        RequestAdapters(WithLLM()).get("/etc/passwd")
