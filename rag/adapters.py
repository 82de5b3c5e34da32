"""LoRA adapter directories: the checks each one gets before PEFT loads it.

``check_adapter_dir`` is called by ``rag.generate`` for the startup adapter
(RAG_ADAPTER) and for every per-request adapter, so both are refused the same
way: no adapter_config.json (not a PEFT adapter), no adapter_model.safetensors /
adapter_model.bin (weights missing), pickle-only weights without
RAG_ALLOW_PICKLE, another prompt format (rag_prompt.json), another base model,
or LoRA matrices whose shapes do not fit this base's layers (read from the
safetensors header; nothing is loaded).

Base-model check (``check_base``), for every adapter: the base it declares
(``rag_prompt.json``'s ``base_model``, written by training/train_qlora.py; else
``adapter_config.json``'s ``base_model_name_or_path``) is compared with RAG_LLM.
The same model (the same Hugging Face id, ignoring case, or the same resolved
directory) passes. Otherwise a name alone proves nothing (a local copy, a
mirror, a pre-quantized variant of the same model are all fine), so the adapter
is refused only when the declared base's config.json can be read here (a local
directory, or a Hub id already in the HF cache) and its architecture (model
type, hidden size, layers, heads, intermediate size, vocabulary) differs from
RAG_LLM's. The weight shapes are checked against this base's layers in any case.

Out of scope: downloading or unpacking adapters (rag/weights/), loading them
(rag/modeling.py), non-LoRA shape checks.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

from .errors import ModelError
from .prompt import PROMPT_FORMAT_VERSION, PROMPT_META_FILE

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
ADAPTER_CONFIG = "adapter_config.json"
# The names PEFT loads an adapter's weights from (safetensors first).
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# What makes two bases interchangeable for a LoRA adapter (see check_base).
ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "intermediate_size", "vocab_size")

log = logging.getLogger("rag.adapters")


def has_safetensors(d: Path) -> bool:
    return any(d.glob("*.safetensors")) or any(d.glob("*.safetensors.index.json"))


def has_pickle(d: Path) -> bool:
    return any(d.glob("*.bin")) or any(d.glob("*.bin.index.json")) or any(d.glob("*.pt")) or any(d.glob("*.pth"))


def refuse_pickle(d: Path, var: str) -> None:
    raise ModelError(
        f"{var}={str(d)!r} has only pickle weights (.bin/.pt), which can run code when loaded. "
        "Convert them to safetensors, or set RAG_ALLOW_PICKLE=1 only if you trust where the files came from.",
        code="pickle_weights",
    )


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def check_prompt_format(d: Path | None, var: str) -> None:
    if d is None or not (d / PROMPT_META_FILE).exists():
        return
    version = read_json(d / PROMPT_META_FILE).get("prompt_format_version")
    if version and version != PROMPT_FORMAT_VERSION:
        raise ModelError(
            f"{var}={str(d)!r} was trained on prompt format {version!r}, but this code builds "
            f"{PROMPT_FORMAT_VERSION!r}: retrain the adapter, or serve it with the matching release of rag.",
            code="prompt_format_mismatch",
        )


def is_peft(model: Any) -> bool:
    if "peft" not in sys.modules:  # nothing imported peft, so this cannot be a PeftModel
        return False
    from peft import PeftModel

    return isinstance(model, PeftModel)


def architecture(config: Any) -> dict:
    """The ARCH_KEYS of a config (a transformers config or a config.json dict); a multimodal one's text part."""
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
    if "hidden_size" not in d and isinstance(d.get("text_config"), dict):
        d = {**d["text_config"], "model_type": d.get("model_type")}
    return {k: d[k] for k in ARCH_KEYS if d.get(k) is not None}


def linear_shapes(model: Any) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of the base model's linear layers, by module name (PEFT's wrappers included)."""
    base = model.get_base_model() if is_peft(model) else model
    shapes = {}
    for name, module in getattr(base, "named_modules", lambda: [])():
        i, o = getattr(module, "in_features", None), getattr(module, "out_features", None)
        if isinstance(i, int) and isinstance(o, int) and not name.endswith(".base_layer"):
            shapes[name] = (i, o)
    return shapes


def same_model(a: str, b: str) -> bool:
    """The same Hub id (ignoring case) or the same directory."""
    if a.strip().rstrip("/").lower() == b.strip().rstrip("/").lower():
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def cached_config(ref: str) -> dict | None:
    """A declared base's config.json when it can be read here without the network, else None."""
    path = Path(ref).expanduser() / "config.json"
    if path.is_file():
        return read_json(path)
    if HUB_ID.fullmatch(ref) and "/" in ref:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(ref, "config.json")
        except Exception:  # noqa: BLE001 - no cache, no answer
            return None
        if isinstance(cached, str):
            return read_json(Path(cached))
    return None


def declared_base(d: Path) -> str | None:
    """The base an adapter says it was trained on: rag_prompt.json's (our training script) wins over PEFT's."""
    for base in (read_json(d / PROMPT_META_FILE).get("base_model"),
                 read_json(d / ADAPTER_CONFIG).get("base_model_name_or_path")):
        if isinstance(base, str) and base.strip():
            return base.strip()
    return None


def check_base(d: Path, var: str, llm: str, base_config: Any, base_var: str = "RAG_LLM") -> None:
    """Refuse an adapter whose declared base is, provably, another architecture (see the module docstring)."""
    base = declared_base(d)
    if base is None or same_model(base, llm):
        return
    theirs = cached_config(base)
    if theirs is None:
        log.info("adapter %s names base %s, not %s=%s, whose config is not readable here; its weight "
                 "shapes are checked instead", d, base, base_var, llm)
        return
    theirs, ours = architecture(theirs), architecture(base_config)
    differ = [f"{k} {theirs[k]} vs {ours[k]}" for k in ARCH_KEYS if k in theirs and k in ours and theirs[k] != ours[k]]
    if differ:
        raise ModelError(
            f"{var}={str(d)!r} was trained for base {base!r}, but {base_var} is {llm!r}, a different model "
            f"({', '.join(differ)}). Set {base_var} to the adapter's base model, or use an adapter trained on this "
            "base.",
            code="adapter_mismatch",
        )


def check_shapes(d: Path, var: str, llm: str, shapes: dict[str, tuple[int, int]], base_var: str = "RAG_LLM") -> None:
    """Compare the LoRA matrices' shapes (read from the safetensors header, nothing loaded) with the base's layers."""
    weights = d / "adapter_model.safetensors"
    if not weights.is_file() or not shapes:
        return  # pickle weights (allowed by RAG_ALLOW_PICKLE) or an injected fake model: PEFT checks when loading
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            keys = {k: f.get_slice(k).get_shape() for k in f.keys()}
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"{var}={str(d)!r} has an unreadable adapter_model.safetensors "
                         f"({' '.join(str(e).split())[:200]}): copy or download the adapter again.",
                         code="model_load_failed") from e
    found, problems = 0, []
    for key, shape in keys.items():
        m = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", key)
        if not m or len(shape) != 2:
            continue
        module, which = m.group(1), m.group(2)
        if module not in shapes:
            continue
        found += 1
        n_in, n_out = shapes[module]
        if which == "A" and shape[1] != n_in:
            problems.append(f"{module} takes {n_in} inputs here, the adapter expects {shape[1]}")
        elif which == "B" and shape[0] != n_out:
            problems.append(f"{module} gives {n_out} outputs here, the adapter expects {shape[0]}")
    if not found and any(".lora_" in k for k in keys):
        problems.append("none of the layers it adapts exist in this model")
    if problems:
        trained_for = declared_base(d) or "unknown"
        raise ModelError(
            f"{var}={str(d)!r} does not fit the base model: it was trained for base {trained_for!r}, "
            f"but {base_var} is {llm!r} ({problems[0]}{f'; {len(problems) - 1} more' if len(problems) > 1 else ''}). "
            f"Set {base_var} to the adapter's base model, or use an adapter trained on this base.",
            code="adapter_mismatch",
        )


def check_adapter_files(d: Path, var: str) -> None:
    """The files PEFT needs are there: adapter_config.json and the weights (needs no model)."""
    if not (d / ADAPTER_CONFIG).exists():
        raise ModelError(
            f"{var}={str(d)!r} has no adapter_config.json: it is not a PEFT adapter "
            "(a merged model goes in RAG_LLM instead).",
            code="adapter_mismatch",
        )
    # Without this, PEFT takes the directory for a Hub id and fails with a message about repo names.
    if not any((d / name).is_file() for name in ADAPTER_WEIGHTS):
        raise ModelError(
            f"{var}={str(d)!r} has adapter_config.json but no {ADAPTER_WEIGHTS[0]} (or {ADAPTER_WEIGHTS[1]}): "
            "the adapter's weights are missing. Copy the whole directory train_qlora wrote, or download the "
            "adapter again.",
            code="adapter_not_found",
        )


def check_adapter_dir(d: Path, var: str, *, llm: str, base_config: Any, shapes: dict,
                      allow_pickle: bool, base_var: str = "RAG_LLM") -> None:
    """Every check an adapter directory gets before PEFT loads it, at startup and per request."""
    check_adapter_files(d, var)
    if not allow_pickle and not has_safetensors(d) and has_pickle(d):
        refuse_pickle(d, var)
    check_prompt_format(d, var)
    check_base(d, var, llm, base_config, base_var)
    check_shapes(d, var, llm, shapes, base_var)


def local_dir(ref: str) -> Path | None:
    p = Path(str(ref)).expanduser()
    return p.resolve() if p.is_dir() else None
