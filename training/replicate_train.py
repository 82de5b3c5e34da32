"""Cog's ``train`` entry (cog.yaml: ``train: "training/replicate_train.py:train"``): QLoRA on Replicate.

A training takes a JSONL dataset, the base model and hyperparameters, runs
``training.train_qlora.main`` and returns the adapter directory as a tarball
(``TrainingOutput.weights``). Replicate makes that tarball the weights of a new model
version; the Cog runner receives its URL as ``setup(weights)`` / ``COG_WEIGHTS`` and
loads it with ``rag.weights.resolve_adapter`` on top of ``RAG_LLM``. So the base model of
a training must be the image's ``RAG_LLM`` (set it in cog.yaml's ``environment`` before
``cog push``); a different one, or none (``RAG_LLM`` unset), is refused before training,
since the new version would load the adapter onto the wrong base or fail at setup.

Locally: ``cog train -i train_data=@data.jsonl -i num_train_epochs=2``; through the API:
``replicate.trainings.create(version="owner/model:VERSION", input={"train_data": "https://…"},
destination="owner/model-hust")``.

cog is imported when present; without it the module still imports (``train`` can be called
directly, as the tests do).

Out of scope: multi-GPU trainings, resuming a Replicate training.
"""

from __future__ import annotations

import shutil
import sys
import tarfile
import tempfile
from pathlib import Path as _PathlibPath
from typing import Any, Optional

try:
    from cog import BaseModel, Input, Path, Secret
except ImportError:  # training/ must import without cog; the Cog runtime always has it
    from dataclasses import dataclass as _dataclass

    Path = _PathlibPath  # type: ignore[misc,assignment]
    Secret = str  # type: ignore[misc,assignment]

    class BaseModel:  # type: ignore[no-redef]
        """Stand-in for cog.BaseModel: subclasses become dataclasses."""

        def __init_subclass__(cls, **kwargs):
            super().__init_subclass__()
            _dataclass(cls)

    def Input(default=None, **_kwargs):  # type: ignore[no-redef]  # noqa: N802 - cog's name
        return default


# Cog imports this file by path; the package it belongs to must be importable too.
_REPO = str(_PathlibPath(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)


class TrainingOutput(BaseModel):
    weights: Path


class TrainingFailed(Exception):
    """What a failed training shows on Replicate: ``[code] message``, nothing internal."""


def _plain(value: Any) -> Any:
    """Called directly (not by Cog), unfilled parameters are still cog FieldInfo objects."""
    return getattr(value, "default", value) if type(value).__name__ == "FieldInfo" else value


def train(  # each Input(...) is one literal call, as `cog build` reads it statically (see predict.py)
    train_data: Path = Input(description="JSONL dataset: Alpaca {instruction, input, output}, chat {messages} or QA {question, answer} rows (see docs/fine-tuning.md)"),
    base_model: Optional[str] = Input(description="Base model (Hugging Face id); must be this model's RAG_LLM (set in cog.yaml), the base the trained version serves with. Default: RAG_LLM", default=None),
    index: Optional[Path] = Input(description="Index tarball (rag ingest, packed with tar czf) for QA rows without context; default: RAG_INDEX_DIR of this model", default=None),
    num_train_epochs: float = Input(description="Epochs", default=3.0, ge=0.1, le=20.0),
    max_steps: int = Input(description="Stop after this many optimizer steps (-1: epochs decide)", default=-1, ge=-1),
    learning_rate: float = Input(description="Peak learning rate", default=2e-4, ge=1e-7, le=1e-2),
    lora_r: int = Input(description="LoRA rank", default=16, ge=1, le=256),
    lora_alpha: int = Input(description="LoRA alpha (scale = alpha / r)", default=32, ge=1, le=1024),
    lora_dropout: float = Input(description="LoRA dropout", default=0.05, ge=0.0, le=0.5),
    per_device_train_batch_size: int = Input(description="Examples per forward pass", default=4, ge=1, le=64),
    gradient_accumulation_steps: int = Input(description="Effective batch = batch × this", default=4, ge=1, le=256),
    max_length: int = Input(description="Tokens per example (prompt + answer)", default=2048, ge=256, le=32768),
    eval_fraction: float = Input(description="Share held out for evaluation and early stopping", default=0.1, ge=0.0, le=0.5),
    load_in_4bit: bool = Input(description="QLoRA: 4-bit NF4 base (off: plain LoRA on a bf16 base)", default=True),
    trust_remote_code: bool = Input(description="Needed for PhoGPT", default=False),
    system_prompt: Optional[str] = Input(description="System prompt (as RAG_SYSTEM_PROMPT at serving)", default=None),
    seed: int = Input(description="Random seed", default=42),
    hf_token: Optional[Secret] = Input(description="Hugging Face token for gated/private base models", default=None),
) -> TrainingOutput:
    p = {k: _plain(v) for k, v in locals().items()}
    return run_training(p)


def run_training(p: dict, settings=None) -> TrainingOutput:
    """``train``'s work, given its inputs as plain values; ``settings`` default: ``Settings.from_env()``."""
    from rag.config import Settings
    from rag.errors import ConfigError, RagError, redact_lines
    from training.train_qlora import TrainArgs, main

    token = p["hf_token"].get_secret_value() if hasattr(p["hf_token"], "get_secret_value") else p["hf_token"]
    work = _PathlibPath(tempfile.mkdtemp(prefix="rag-train-"))
    try:
        settings = Settings.from_env() if settings is None else settings
        if token:  # the input's token is for this training only; the environment is left as it was
            settings = settings.with_(hf_token=token)
        served = settings.llm
        base = p["base_model"] or served
        if not served:  # the trained version serves with this same cog.yaml: without RAG_LLM it could not start
            raise ConfigError("RAG_LLM is not set in cog.yaml's environment: the trained version loads its adapter "
                              f"on RAG_LLM and would fail at setup. Set RAG_LLM: {base or '<base model id>'} in "
                              "cog.yaml, `cog push` again, then train that version.")
        if base != served:
            raise ConfigError(f"base_model={base!r} but this model serves RAG_LLM={served!r}: the trained version "
                              "would load the adapter onto the wrong base. Train on RAG_LLM, or push a model whose "
                              "RAG_LLM is your base.", code="adapter_mismatch")
        index_dir = None
        if p["index"]:
            from rag.weights import INDEX_MARKER, unpack_tarball

            index_dir = str(unpack_tarball(_PathlibPath(p["index"]), work / "index", marker=INDEX_MARKER,
                                           what="index", error=ConfigError))
        elif settings.index_dir is not None:
            index_dir = str(settings.index_dir)
        args = TrainArgs(
            base_model=base, dataset=[str(p["train_data"])], output_dir=str(work / "adapter"), index_dir=index_dir,
            system_prompt=p["system_prompt"], eval_fraction=p["eval_fraction"], max_length=p["max_length"],
            lora_r=p["lora_r"], lora_alpha=p["lora_alpha"], lora_dropout=p["lora_dropout"],
            learning_rate=p["learning_rate"], num_train_epochs=p["num_train_epochs"], max_steps=p["max_steps"],
            per_device_train_batch_size=p["per_device_train_batch_size"],
            gradient_accumulation_steps=p["gradient_accumulation_steps"],
            load_in_4bit=bool(p["load_in_4bit"]), trust_remote_code=bool(p["trust_remote_code"]), seed=p["seed"],
        )
        result = main(args, settings=settings)
        tarball = pack_adapter(result.output_dir, work / "lora-adapter.tar.gz")
    except BaseException as e:
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(e, RagError):
            raise TrainingFailed(f"[{e.code}] {redact_lines(str(e))}") from None  # the caller sees no server path
        raise
    # Cog uploads the tarball after train returns, so it stays; the adapter with its checkpoints and
    # the unpacked index would otherwise be left in /tmp by every training.
    for entry in work.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry != tarball:
            entry.unlink(missing_ok=True)
    print(f"weights: {tarball} ({tarball.stat().st_size / 1e6:.1f} MB)", flush=True)
    return TrainingOutput(weights=Path(tarball))


def pack_adapter(adapter_dir: _PathlibPath, tarball: _PathlibPath) -> _PathlibPath:
    """tar.gz of the adapter files at the archive root (what rag.weights.unpack_tarball expects); no checkpoints."""
    with tarfile.open(tarball, "w:gz") as tar:
        for f in sorted(_PathlibPath(adapter_dir).iterdir()):
            if f.is_file():
                tar.add(f, arcname=f.name)
    return tarball
