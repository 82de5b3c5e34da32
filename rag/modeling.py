"""The one loader of a base model, its tokenizer, a LoRA adapter and quantisation.

Serving (``rag.generate.Generator.load``), training (``training/train_qlora.py``) and
merging (``training/merge_adapter.py``) all load through here, so a model is trained
with exactly the dtype, quantisation, tokenizer and chat template it is served with.
Every choice comes from ``Settings``:

- device: ``RAG_DEVICE`` (``auto`` is CUDA when present);
- dtype: bf16 on a GPU that has it, fp16 on other GPUs, fp32 on a CPU (``compute_dtype``);
- quantisation: ``RAG_QUANTIZATION`` ``4bit`` is NF4 with double quantisation and the
  compute dtype above (QLoRA), ``8bit`` is LLM.int8 (``LoadOptions.quantization_config``);
- ``RAG_TRUST_REMOTE_CODE`` and ``HF_TOKEN`` go with every ``from_pretrained``;
- pickle weights (``.bin``/``.pt``) are refused unless ``RAG_ALLOW_PICKLE``;
- the tokenizer comes from the adapter's folder when training saved one there (it carries
  the chat template the adapter was trained with), else from the base; a tokenizer without
  a pad token pads with its end-of-sequence token; one with more tokens than the model
  has embedding rows is refused;
- an adapter gets every check of ``rag.adapters`` (PEFT files, pickle, prompt format, base
  model, LoRA shapes) before PEFT loads it.

``var`` arguments name the setting or flag an error message tells the user to change
(``RAG_LLM`` when serving, ``--base-model`` when training).

Out of scope: generation (rag/generate.py), per-request adapter switching
(``Generator``), downloading tarballs (rag/weights/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .adapters import (
    HUB_ID,
    check_adapter_dir,
    check_adapter_files,
    check_prompt_format,
    has_pickle,
    has_safetensors,
    linear_shapes,
    read_json,
    refuse_pickle,
)
from .config import Settings
from .errors import ConfigError, ModelError, redact

DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def short(e: BaseException, limit: int = 300) -> str:
    """A library's error inside one of ours: one line, no URL credentials, capped (``rag.errors.redact``)."""
    return redact(str(e), client=False, limit=limit)


# --------------------------------------------------------------------------- choices


def resolve_device(name: str, var: str = "RAG_DEVICE") -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; a named CUDA device must exist."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{var}={name!r} but no CUDA GPU is visible: use cpu or auto.")
    if name != "cpu" and not name.startswith(("cuda", "mps", "xpu")):
        raise ConfigError(f"{var}={name!r}: use auto, cpu or cuda[:N].")
    return name


def compute_dtype(device: str):
    """bf16 on a GPU that has it, fp16 on other GPUs (T4), fp32 on a CPU."""
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


@dataclass(frozen=True)
class LoadOptions:
    """How a base model is loaded; built from Settings by ``load_options``."""

    device: str
    dtype: Any  # a torch.dtype
    quantization: str  # none | 8bit | 4bit
    trust_remote_code: bool = False
    allow_pickle: bool = False
    token: str | None = field(default=None, repr=False)

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).split(".")[-1]

    def quantization_config(self):
        """The BitsAndBytesConfig of ``quantization`` (None for ``none``)."""
        if self.quantization == "none":
            return None
        from transformers import BitsAndBytesConfig

        if self.quantization == "4bit":
            return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=self.dtype)
        return BitsAndBytesConfig(load_in_8bit=True)

    def hub_kwargs(self) -> dict:
        """For every from_pretrained: remote code only when allowed, the token only when there is one."""
        return {"trust_remote_code": self.trust_remote_code, **({"token": self.token} if self.token else {})}

    def model_kwargs(self) -> dict:
        kwargs: dict[str, Any] = dict(dtype=self.dtype, device_map={"": self.device},
                                      use_safetensors=None if self.allow_pickle else True, **self.hub_kwargs())
        quant = self.quantization_config()
        if quant is not None:
            kwargs["quantization_config"] = quant
        return kwargs


def load_options(settings: Settings, *, dtype: Any = None, device_var: str = "RAG_DEVICE") -> LoadOptions:
    """The device, dtype and quantisation Settings ask for (``dtype`` overrides the compute dtype)."""
    device = resolve_device(settings.device, device_var)
    return LoadOptions(device=device, dtype=dtype if dtype is not None else compute_dtype(device),
                       quantization=settings.quantization, trust_remote_code=settings.trust_remote_code,
                       allow_pickle=settings.allow_pickle, token=settings.hf_token)


# --------------------------------------------------------------------------- sources


def locate(ref: str, var: str) -> Path | None:
    """A local directory, or None for a Hugging Face id; a missing path is an error."""
    p = Path(ref).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelError(f"{var}={ref!r} is a file; point it at the model's directory.", code="model_not_found")
        return p
    if HUB_ID.fullmatch(ref) and ".." not in ref:
        return None
    raise ModelError(
        f"{var}={ref!r}: no such directory, and it is not a Hugging Face id (owner/name). "
        "Check the path (is the volume mounted, the model baked into the image?).",
        code="model_not_found",
    )


def check_base_dir(ref: str, base_dir: Path | None, var: str, allow_pickle: bool,
                   adapter_var: str = "RAG_ADAPTER") -> None:
    """Before anything loads: a base that is really an adapter, pickle-only weights, another prompt format."""
    if base_dir is None:
        return
    if not (base_dir / "config.json").exists() and (base_dir / "adapter_config.json").exists():
        raise ModelError(
            f"{var}={ref!r} is a LoRA adapter, not a model: set {adapter_var} to it and {var} to its base "
            f"({read_json(base_dir / 'adapter_config.json').get('base_model_name_or_path')!r}).",
            code="model_not_found",
        )
    if not allow_pickle and not has_safetensors(base_dir) and has_pickle(base_dir):
        refuse_pickle(base_dir, var)
    check_prompt_format(base_dir, var)


def check_adapter_source(adapter_dir: Path | None, var: str, allow_pickle: bool) -> None:
    """The checks an adapter directory gets before the base model loads (the rest need the model)."""
    if adapter_dir is None:
        return
    check_adapter_files(adapter_dir, var)  # a missing file is named before a 7B base spends minutes loading
    if not allow_pickle and not has_safetensors(adapter_dir) and has_pickle(adapter_dir):
        refuse_pickle(adapter_dir, var)
    check_prompt_format(adapter_dir, var)


def tokenizer_source(base: str, adapter_dir: Path | None) -> str:
    """The adapter's folder when training saved the tokenizer there (its chat template), else the base."""
    if adapter_dir is not None and (adapter_dir / "tokenizer_config.json").exists():
        return str(adapter_dir)
    return base


# --------------------------------------------------------------------------- loading


def load_config(ref: str, options: LoadOptions, var: str = "RAG_LLM"):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(ref, **options.hub_kwargs())
    except Exception as e:  # noqa: BLE001
        raise ModelError(
            f"could not load the config of {var}={ref!r}: {short(e)} — check the path or id, the network and "
            "HF_TOKEN (models with their own code, such as PhoGPT, also need trust_remote_code).",
            code="model_load_failed",
        ) from e


def load_tokenizer(source: str, options: LoadOptions):
    """The tokenizer, ready for serving and training alike: it always has a pad token."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **options.hub_kwargs())
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"could not load the tokenizer from {source!r}: {short(e)}", code="model_load_failed") from e
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # generation pads nothing; training pads batches with it
    return tokenizer


def tokenizer_settings(tokenizer) -> dict:
    """What serving and training must agree on about a tokenizer (compared by the tests)."""
    return {"chat_template": getattr(tokenizer, "chat_template", None), "pad_token": tokenizer.pad_token,
            "eos_token": tokenizer.eos_token, "bos_token": tokenizer.bos_token, "vocab": len(tokenizer)}


def load_base(ref: str, options: LoadOptions, var: str = "RAG_LLM"):
    """The base causal LM on ``options.device``, in ``options.dtype``, quantised as asked."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(ref, **options.model_kwargs())
    except ImportError as e:
        raise ModelError(
            f"{options.quantization} loading needs a working bitsandbytes ({short(e)}): install it, or load "
            "without quantisation (RAG_QUANTIZATION=none; for training --no-load-in-4bit).",
            code="model_load_failed",
        ) from e
    except Exception as e:  # noqa: BLE001
        hint = (
            " The model has no safetensors weights: set RAG_ALLOW_PICKLE=1 only if you trust its files."
            if "safetensors" in str(e) and not options.allow_pickle
            else " If it is a local path, check it exists; if a Hugging Face id, check the name, the network and "
                 "HF_TOKEN."
        )
        raise ModelError(f"could not load {var}={ref!r}: {short(e)}.{hint}", code="model_load_failed") from e


def attach_adapter(model, adapter: str, adapter_dir: Path | None, options: LoadOptions, *, llm: str,
                   var: str = "RAG_ADAPTER", base_var: str = "RAG_LLM", trainable: bool = False):
    """``model`` with the LoRA adapter on top (a PeftModel), after every check of rag.adapters."""
    from peft import PeftModel

    adapter_cfg = read_json(adapter_dir / "adapter_config.json") if adapter_dir else {}
    trained_for = adapter_cfg.get("base_model_name_or_path", "unknown (no adapter_config.json)")
    if adapter_dir is not None:
        check_adapter_dir(adapter_dir, var, llm=llm, base_config=model.config, shapes=linear_shapes(model),
                          allow_pickle=options.allow_pickle, base_var=base_var)
    hub = {"token": options.token} if options.token else {}
    try:
        return PeftModel.from_pretrained(model, adapter, is_trainable=trainable, **hub)
    except Exception as e:  # noqa: BLE001
        if "size mismatch" in str(e) or "shape" in str(e).lower():
            raise ModelError(
                f"the adapter {var}={adapter!r} does not fit the base model: it was trained for base {trained_for!r}, "
                f"but {base_var} is {llm!r} ({short(e, 200)}). Set {base_var} to the adapter's base model, or use an "
                "adapter trained on this base.",
                code="adapter_mismatch",
            ) from e
        # Anything else (a broken file, an unreachable Hub id) says nothing about the base: no advice to change it.
        raise ModelError(
            f"the adapter {var}={adapter!r} could not be loaded ({short(e, 200)}). Check that it is a complete PEFT "
            "adapter directory (adapter_config.json and adapter_model.safetensors, as train_qlora writes them) or "
            "a Hugging Face id that exists (HF_TOKEN for a private one).",
            code="model_load_failed",
        ) from e


def check_vocabulary(tokenizer, model, source: str) -> None:
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ModelError(
            f"the tokenizer from {source!r} has {len(tokenizer)} tokens but the model's embeddings have {rows} rows: "
            "tokenizer and model do not belong together.",
            code="model_mismatch",
        )


def max_positions(config: Any, tokenizer: Any = None) -> int | None:
    """The model's context length from its config (a multimodal one's text part), else the tokenizer's."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("max_position_embeddings", "max_seq_len", "n_positions", "seq_length", "max_sequence_length"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    v = getattr(tokenizer, "model_max_length", None)
    return v if isinstance(v, int) and 0 < v < 10_000_000 else None


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    tokenizer_source: str
    options: LoadOptions


def load(settings: Settings, *, var: str = "RAG_LLM", adapter_var: str = "RAG_ADAPTER", dtype: Any = None,
         trainable_adapter: bool = False) -> Loaded:
    """Base model + tokenizer (+ ``settings.adapter``), every check done, as serving and merging use them."""
    if not settings.llm:
        raise ConfigError(f"{var} is not set: name a local model directory or a Hugging Face id.")
    base_dir = locate(settings.llm, var)
    adapter_dir = locate(settings.adapter, adapter_var) if settings.adapter else None
    check_base_dir(settings.llm, base_dir, var, settings.allow_pickle, adapter_var)
    check_adapter_source(adapter_dir, adapter_var, settings.allow_pickle)
    options = load_options(settings, dtype=dtype)
    source = tokenizer_source(settings.llm, adapter_dir)
    tokenizer = load_tokenizer(source, options)
    model = load_base(settings.llm, options, var)
    if settings.adapter:
        model = attach_adapter(model, settings.adapter, adapter_dir, options, llm=settings.llm, var=adapter_var,
                               base_var=var, trainable=trainable_adapter)
    check_vocabulary(tokenizer, model, source)
    return Loaded(model=model, tokenizer=tokenizer, tokenizer_source=source, options=options)
