"""QLoRA fine-tuning with TRL's SFTTrainer: a LoRA adapter that serving loads with RAG_ADAPTER.

The exact command (a 7B base on one 24 GB GPU, the HUST data from ../shared):

```bash
python -m training.train_qlora \
    --base-model Qwen/Qwen2.5-7B-Instruct \
    --dataset ../shared/data/hust-regulations/sft/sft_dataset.jsonl \
    --output-dir adapters/qwen2.5-7b-hust
# then serve it:
RAG_LLM=Qwen/Qwen2.5-7B-Instruct RAG_ADAPTER=adapters/qwen2.5-7b-hust RAG_QUANTIZATION=4bit rag ask "…"
```

PhoGPT needs ``--trust-remote-code``; QA pairs without context need ``--index DIR`` (an
index built with ``rag ingest``) so their passages are retrieved as serving retrieves them.
``--dry-run`` validates and renders the data and prints its statistics without loading the model.

What it does: validates the options and the dataset (all before any model loads), renders
every example with ``rag.prompt`` (``training.data``), loads the base in 4-bit NF4 with double
quantization and bf16 compute on a GPU (QLoRA, Dettmers et al. 2023; fp16 compute on GPUs
without bf16; full precision fp32 on a CPU unless ``--load-in-4bit`` is given), puts LoRA on
every linear layer, and trains on the answer tokens only (labels are -100 on the prompt and
passages). It evaluates on a held-out split, stops early when the eval loss stops improving,
keeps the best checkpoint, saves checkpoints for ``--resume``, and stops with a message when
the loss becomes NaN/inf. The output directory receives the adapter (safetensors), the
tokenizer, ``rag_prompt.json`` (the prompt-format version serving checks) and a training
card (``training_card.json`` and ``README.md``).

Defaults, and why: r=16, alpha=32 (scale 2), dropout 0.05 — the QLoRA paper found the rank
matters little once every linear layer is adapted; learning rate 2e-4 (the paper's for 7B/13B);
3 epochs; effective batch 16 (4 per device × 4 accumulation, the paper's batch size); max grad
norm 0.3 (the paper's); cosine schedule with 3 % warm-up; paged AdamW (32-bit states) on a GPU.

Out of scope: multi-GPU/DeepSpeed (use ``accelerate launch`` with TRL's own scripts),
full fine-tuning, packing, DPO.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

from rag import modeling
from training import run_cli
from training.data import check_directory, check_options, usable_length
from training.card import build_card, write_card
from rag.config import Settings
from rag.errors import ConfigError, ModelError

CHECKPOINTS = "checkpoints"
PREVIOUS = "previous"  # where --overwrite sets the earlier adapter aside until the new one is written
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
# TrainArgs fields that SFTConfig takes under the same name.
SFT_PASSTHROUGH = ("num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                   "learning_rate", "lr_scheduler_type", "weight_decay", "max_grad_norm", "logging_steps",
                   "gradient_checkpointing", "seed")


class TrainingError(ModelError):
    """Training ran but did not produce a usable adapter (NaN loss, nothing to train on…)."""

    code = "training_failed"


@dataclass
class TrainArgs:
    base_model: str = field(metadata={"help": "base model: local directory or Hugging Face id"})
    dataset: list[str] = field(metadata={"help": "JSONL file(s): Alpaca, chat or QA rows"})
    output_dir: str = field(metadata={"help": "where the adapter, tokenizer, card and checkpoints go"})
    index_dir: str | None = field(default=None, metadata={"help": "index (rag ingest) for rows without context"})
    top_k: int = field(default=5, metadata={"help": "passages retrieved for rows without context (RAG_TOP_K)"})
    system_prompt: str | None = field(default=None, metadata={"help": "as RAG_SYSTEM_PROMPT at serving"})
    eval_fraction: float = field(default=0.1, metadata={"help": "share of rows held out for evaluation (0: none)"})
    max_length: int = field(default=2048, metadata={"help": "tokens per example (prompt + answer)"})
    # LoRA
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    target_modules: str = field(default="all-linear", metadata={"help": "'all-linear' or comma-separated names"})
    # optimisation
    learning_rate: float = field(default=2e-4, metadata={"help": "peak learning rate"})
    num_train_epochs: float = field(default=3.0, metadata={"help": "epochs over the train split"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer steps (-1: epochs decide)"})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "examples per forward pass"})
    gradient_accumulation_steps: int = field(default=4, metadata={"help": "effective batch = batch × this"})
    warmup_ratio: float = field(default=0.03, metadata={"help": "share of steps spent warming up"})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "transformers scheduler name"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=0.3, metadata={"help": "gradient clipping"})
    optim: str = field(default="auto", metadata={"help": "'auto': paged_adamw_32bit with bitsandbytes on a GPU, "
                                                         "else adamw_torch"})
    # precision and memory
    load_in_4bit: bool | None = field(default=None, metadata={"help": "QLoRA 4-bit NF4 base (default: on a GPU)"})
    load_in_8bit: bool = field(default=False, metadata={"help": "8-bit base instead of 4-bit"})
    gradient_checkpointing: bool = field(default=True, metadata={"help": "recompute activations to save memory"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda[:N]"})
    trust_remote_code: bool = field(default=False, metadata={"help": "needed for PhoGPT"})
    # evaluation and checkpoints
    eval_steps: int = field(default=50, metadata={"help": "evaluate (and checkpoint) every N steps"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept (the best is always kept)"})
    early_stopping_patience: int = field(default=3, metadata={"help": "evaluations without improvement (0: off)"})
    logging_steps: int = field(default=10, metadata={"help": "log the loss every N steps"})
    seed: int = field(default=42, metadata={"help": "seed for the split, LoRA init and data order"})
    resume: str | None = field(default=None, metadata={"help": "continue from the last checkpoint in "
                                                                 "OUTPUT_DIR/checkpoints, or from the one given"})
    overwrite: bool = field(default=False, metadata={"help": "replace an adapter already in --output-dir"})
    dry_run: bool = field(default=False, metadata={"help": "validate and render the data, then stop"})

    @property
    def effective_batch(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps


@dataclass
class TrainResult:
    output_dir: Path
    card: dict
    trainer: Any = None  # the SFTTrainer (model at trainer.model), for callers that keep working in-process
    prepared: Any = None


# --------------------------------------------------------------------------- checks before anything loads


def bitsandbytes_status() -> tuple[bool, str]:
    """(usable, why not). Tests monkeypatch this to simulate a machine where bitsandbytes cannot load."""
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        return False, "bitsandbytes is not installed"
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # noqa: BLE001 - missing CUDA libraries show up as several exception types
        return False, f"importing bitsandbytes failed: {' '.join(str(e).split())[:200]}"
    return True, ""


def quantization_of(args: TrainArgs, device: str) -> str:
    """'4bit', '8bit' or 'none' (after the conflict check)."""
    if args.load_in_8bit:
        return "8bit"
    if args.load_in_4bit is None:
        return "4bit" if device.startswith("cuda") else "none"
    return "4bit" if args.load_in_4bit else "none"


def validate_args(args: TrainArgs) -> tuple[str, str]:
    """Every option check that needs no model; returns (device, quantization). Raises ConfigError."""
    if not args.base_model:
        raise ConfigError("--base-model is required: a local model directory or a Hugging Face id.")
    if not args.dataset:
        raise ConfigError("--dataset is required: one or more JSONL files.")
    if not args.output_dir:
        raise ConfigError("--output-dir is required.")
    if args.load_in_8bit and args.load_in_4bit:
        raise ConfigError("--load-in-4bit and --load-in-8bit were both given: choose one (4-bit is QLoRA).",
                          code="conflicting_options")
    if args.lora_r <= 0:
        raise ConfigError(f"--lora-r must be a positive integer (the LoRA rank; 8–64 are usual), got {args.lora_r}.")
    if args.lora_alpha <= 0:
        raise ConfigError(f"--lora-alpha must be positive (usually 2 × r), got {args.lora_alpha}.")
    if not 0.0 <= args.lora_dropout < 1.0:
        raise ConfigError(f"--lora-dropout must be in [0, 1), got {args.lora_dropout}.")
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise ConfigError(f"--learning-rate must be a positive number, got {args.learning_rate}.")
    if args.max_steps <= 0 and not args.num_train_epochs > 0:
        raise ConfigError("--num-train-epochs must be positive (or set --max-steps).")
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "eval_steps", "logging_steps",
                 "save_total_limit"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    if args.early_stopping_patience < 0:
        raise ConfigError("--early-stopping-patience must be 0 (off) or more.")
    if not 0.0 <= args.warmup_ratio < 1.0:
        raise ConfigError(f"--warmup-ratio must be in [0, 1), got {args.warmup_ratio}.")
    check_options(eval_fraction=args.eval_fraction, max_length=args.max_length, top_k=args.top_k)
    if not math.isfinite(args.num_train_epochs):
        raise ConfigError(f"--num-train-epochs must be a finite number, got {args.num_train_epochs}.")
    if not (math.isfinite(args.max_grad_norm) and args.max_grad_norm >= 0):
        raise ConfigError(f"--max-grad-norm must be 0 (no clipping) or a positive number, got {args.max_grad_norm}.")
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        raise ConfigError(f"--weight-decay must be 0 or a positive number, got {args.weight_decay}.")
    check_names(args)
    device = modeling.resolve_device(args.device, "--device")
    quant = quantization_of(args, device)
    if quant != "none":
        ok, why = bitsandbytes_status()
        if not ok:
            flag = "--load-in-4bit" if quant == "4bit" else "--load-in-8bit"
            raise ConfigError(
                f"{quant} loading ({flag}{', the default on a GPU' if args.load_in_4bit is None else ''}) needs "
                f"bitsandbytes, which cannot load here ({why}). Install it (pip install bitsandbytes) on a machine "
                "it supports, or pass --no-load-in-4bit to train a plain LoRA on a full-precision base "
                "(about 4× the GPU memory for the weights).",
                code="bitsandbytes_unavailable",
            )
    # a dry run is the pre-flight check: it reports what the real run would refuse, and writes nothing
    check_output_dir(Path(args.output_dir), overwrite=args.overwrite, resume=args.resume)
    return device, quant


def check_names(args: TrainArgs) -> None:
    """--optim and --lr-scheduler-type are transformers names: checked here, not after the model has loaded."""
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    optims = [o.value for o in OptimizerNames]
    if args.optim != "auto" and args.optim not in optims:
        raise ConfigError(f"--optim {args.optim!r} is not an optimizer transformers knows: use auto, adamw_torch, "
                          f"paged_adamw_32bit, adafactor … (all: {', '.join(optims)}).")
    schedulers = [s.value for s in SchedulerType]
    if args.lr_scheduler_type not in schedulers:
        raise ConfigError(f"--lr-scheduler-type {args.lr_scheduler_type!r} is not a scheduler transformers knows: "
                          f"use one of {', '.join(schedulers)}.")


def check_targets(targets: Any, model) -> None:
    """--target-modules must name layers of this model ("q_proj,v_proj" on Llama/Qwen); peft's own error comes
    as a traceback after loading, without the names it could have used."""
    if targets == "all-linear":
        return
    import torch

    linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
                    - {"lm_head"})
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing or not targets:
        raise ConfigError(f"--target-modules {', '.join(missing) or '(empty)'}: no such layer in this model. Its "
                          f"linear layers are {', '.join(linear)}; or use all-linear.")


def has_adapter(directory: Path) -> bool:
    return any((directory / f).exists() for f in ADAPTER_FILES)


def check_output_dir(out: Path, *, overwrite: bool, resume: str | None) -> None:
    check_directory(out, "--output-dir")
    if (out / PREVIOUS).exists() and not resume:
        raise ConfigError(
            f"{str(out / PREVIOUS)!r} holds the adapter an earlier --overwrite run set aside and did not replace (it "
            "was interrupted): move that folder elsewhere (or delete it once you no longer need that adapter), then "
            "run again.", code="output_exists")
    if has_adapter(out) and not overwrite:
        then = ("pass --overwrite as well to continue training from its last checkpoint and replace the adapter"
                if resume else "pass --overwrite to replace it (it is kept until the new one is written)")
        raise ConfigError(
            f"--output-dir {str(out)!r} already holds an adapter (adapter_config.json): {then}, or choose another "
            "directory.",
            code="output_exists",
        )
    ckpt_dir = out / CHECKPOINTS
    has_ckpt = last_checkpoint(ckpt_dir) is not None
    if resume:
        if resume == "last" and not has_ckpt:
            raise ConfigError(f"--resume: no complete checkpoint in {str(ckpt_dir)!r} to continue from.",
                              code="no_checkpoint")
        if resume != "last" and not (Path(resume) / "trainer_state.json").exists():
            raise ConfigError(f"--resume {resume!r} is not a checkpoint directory (no trainer_state.json).",
                              code="no_checkpoint")
    elif has_ckpt and not overwrite:
        raise ConfigError(
            f"{str(ckpt_dir)!r} holds checkpoints of an earlier run: pass --resume to continue it, or --overwrite "
            "to start over.",
            code="output_exists",
        )


def last_checkpoint(ckpt_dir: Path, *, say: bool = False) -> Path | None:
    """The newest complete checkpoint (one with trainer_state.json, which the Trainer writes last); a newer one cut
    off mid-save (the run was killed) is passed over, and named when ``say``."""
    if not ckpt_dir.is_dir():
        return None
    found = sorted((p for p in ckpt_dir.glob("checkpoint-*") if p.is_dir() and p.name[11:].isdigit()),
                   key=lambda p: int(p.name[11:]), reverse=True)
    for p in found:
        if (p / "trainer_state.json").exists():
            return p
        if say:
            print(f"note: {p} is incomplete (the run stopped while saving it): passed over.", flush=True)
    return None


def check_resume(checkpoint: Path, args: TrainArgs) -> None:
    """A checkpoint continues only the run that made it: the same base and LoRA shape (a mismatch is otherwise a
    size-mismatch traceback from torch)."""
    from rag.adapters import read_json

    cfg = read_json(checkpoint / "adapter_config.json")
    if not cfg:
        return
    targets = args.target_modules if args.target_modules == "all-linear" else sorted(
        t.strip() for t in args.target_modules.split(",") if t.strip())
    theirs = cfg.get("target_modules")
    theirs = sorted(theirs) if isinstance(theirs, list) else theirs
    wanted = {"--lora-r": (cfg.get("r"), args.lora_r), "--lora-alpha": (cfg.get("lora_alpha"), args.lora_alpha)}
    if targets != "all-linear" and theirs != "all-linear" and theirs is not None:
        wanted["--target-modules"] = (",".join(theirs), ",".join(targets))
    base = cfg.get("base_model_name_or_path")
    if base and base != args.base_model and Path(base).resolve() != Path(args.base_model).resolve():
        wanted["--base-model"] = (base, args.base_model)
    differ = [f"{flag} {then} (now {now})" for flag, (then, now) in wanted.items() if then is not None and then != now]
    if differ:
        raise ConfigError(f"--resume: {checkpoint} was trained with {'; '.join(differ)}: resume with the same "
                          "settings, or start over with --overwrite.", code="resume_mismatch")


def set_aside(out: Path) -> Path | None:
    """--overwrite: move the earlier adapter, its card and checkpoints into OUT/previous, so a run that fails
    gives them back (``restore``) and one that succeeds removes them (nothing trained is lost before then)."""
    from rag.prompt import PROMPT_META_FILE
    from training.card import CARD_JSON, CARD_MD

    names = [*ADAPTER_FILES, CARD_JSON, CARD_MD, PROMPT_META_FILE, CHECKPOINTS]
    present = [n for n in names if (out / n).exists()]
    if not present:
        return None
    prev = out / PREVIOUS
    prev.mkdir(parents=True)
    for n in present:
        (out / n).rename(prev / n)
    return prev


def restore(out: Path, prev: Path | None) -> None:
    if prev is None:
        return
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # the failed run's own
    for p in prev.iterdir():
        target = out / p.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        p.rename(target)
    prev.rmdir()


# --------------------------------------------------------------------------- callbacks


def nan_callback():
    """A TrainerCallback that stops the run when a logged loss or gradient norm is NaN or infinite."""
    from transformers import TrainerCallback

    class StopOnNaN(TrainerCallback):
        def __init__(self):
            self.message: str | None = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            for key in ("loss", "grad_norm", "eval_loss"):
                v = (logs or {}).get(key)
                if isinstance(v, (int, float)) and not math.isfinite(v):
                    self.message = (
                        f"the {key.replace('_', ' ')} became {v} at step {state.global_step}: training stopped and "
                        f"no adapter was written. Lower --learning-rate (now {args.learning_rate:g}), keep "
                        "--max-grad-norm on, or check the data."
                    )
                    control.should_training_stop = True
                    control.should_save = False
                    break
            return control

    return StopOnNaN()


# --------------------------------------------------------------------------- main


def settings_for(args: TrainArgs, settings: Settings, device: str, quant: str) -> Settings:
    """The Settings the base model is loaded with: the environment's, with this run's model, device,
    quantisation and trust; serving loads the same model with the same Settings the same way."""
    return settings.with_(llm=args.base_model, adapter=None, device=device, quantization=quant,
                          trust_remote_code=args.trust_remote_code)


def main(args: TrainArgs, callbacks: Sequence[Any] = (), settings: Settings | None = None) -> TrainResult:
    """Validate, prepare the data, train, save. Raises a RagError with what to change on bad input.

    ``settings``: the environment's Settings (default ``Settings.from_env()``): the Hugging Face token and the
    embedding settings of the index for rows without context come from there, as at serving time.
    """
    from training.data import DatasetError, prepare, read_dataset, retriever_from_index

    settings = Settings.from_env() if settings is None else settings

    t0 = time.time()
    device, quant = validate_args(args)
    examples, read = read_dataset(args.dataset)
    if read.without_context and not args.index_dir:
        first = next(ex.source for ex in examples if ex.passages is None)
        raise DatasetError(f"{first} and {read.without_context - 1} other row(s) have no context, so their passages "
                           "must be retrieved as serving retrieves them: pass --index-dir DIR (built with "
                           "`rag ingest`).", code="index_required")
    out = Path(args.output_dir)

    model_settings = settings_for(args, settings, device, quant)
    base_dir = modeling.locate(args.base_model, "--base-model")
    modeling.check_base_dir(args.base_model, base_dir, "--base-model", model_settings.allow_pickle)
    options = modeling.load_options(model_settings, device_var="--device")
    config = modeling.load_config(args.base_model, options, "--base-model")
    tokenizer = modeling.load_tokenizer(args.base_model, options)
    max_length = usable_length(args.max_length, config)
    retriever = None
    if read.without_context and args.index_dir:
        retriever = retriever_from_index(args.index_dir, settings)
    prepared = prepare(examples, read, tokenizer, max_length=max_length, system_prompt=args.system_prompt,
                       retriever=retriever, top_k=args.top_k, eval_fraction=args.eval_fraction, seed=args.seed)
    print(prepared.describe(), flush=True)
    if args.dry_run:
        return TrainResult(output_dir=out, card={"dataset": prepared.summary()}, prepared=prepared)

    import torch
    from peft import LoraConfig
    from transformers import EarlyStoppingCallback
    from trl import SFTConfig, SFTTrainer

    dtype = options.dtype
    bf16 = dtype == torch.bfloat16
    ckpt_dir = out / CHECKPOINTS
    resume_from = None
    if args.resume:
        found = last_checkpoint(ckpt_dir, say=True) if args.resume == "last" else Path(args.resume)
        check_resume(found, args)
        resume_from = str(found)

    model = modeling.load_base(args.base_model, options, "--base-model")
    modeling.check_vocabulary(tokenizer, model, args.base_model)
    model.config.use_cache = False  # the KV cache is useless in training and conflicts with checkpointing

    targets: Any = args.target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    check_targets(targets, model)
    peft_config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                             target_modules=targets, bias="none", task_type="CAUSAL_LM")
    train_ds, eval_ds = prepared.hf_datasets()
    has_eval = eval_ds is not None
    optim = args.optim
    if optim == "auto":
        optim = "paged_adamw_32bit" if quant != "none" and device.startswith("cuda") else "adamw_torch"
    sft_args = SFTConfig(
        output_dir=str(ckpt_dir),
        **{name: getattr(args, name) for name in SFT_PASSTHROUGH},
        per_device_eval_batch_size=args.per_device_train_batch_size,
        warmup_steps=args.warmup_ratio,  # a float < 1 is a ratio of the total steps
        optim=optim,
        logging_nan_inf_filter=False,  # a NaN must reach the NaN callback, not be averaged away
        eval_strategy="steps" if has_eval else "no",
        eval_steps=args.eval_steps,
        save_strategy="steps",
        save_steps=args.eval_steps,
        save_total_limit=args.save_total_limit,
        load_best_model_at_end=has_eval,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        bf16=bf16,
        fp16=device.startswith("cuda") and not bf16,
        use_cpu=device == "cpu",
        max_length=max_length,
        data_seed=args.seed,
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=not sys.stderr.isatty(),
    )
    nan_cb = nan_callback()
    cbs = [nan_cb, *callbacks]
    if has_eval and args.early_stopping_patience > 0:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience))
    trainer = SFTTrainer(model=model, args=sft_args, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=tokenizer, peft_config=peft_config, callbacks=cbs)
    if not bf16:
        # TRL keeps LoRA weights of a quantized model in bf16; without bf16 hardware (CPU, T4) they
        # train in fp32 under fp16 autocast instead.
        for p in trainer.model.parameters():
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    print(f"model: {args.base_model} on {device}, base {quant if quant != 'none' else str(dtype).split('.')[-1]}; "
          f"LoRA r={args.lora_r} alpha={args.lora_alpha} on {args.target_modules}: {trainable:,} trainable "
          f"of {total:,} parameters" + (f"; resuming from {resume_from}" if resume_from else ""), flush=True)

    # --overwrite: the earlier adapter is set aside only now, once everything that can be checked was, and comes
    # back if this run fails; a resumed run keeps its checkpoints in place
    out.mkdir(parents=True, exist_ok=True)
    prev = set_aside(out) if args.overwrite and not args.resume else None
    try:
        train_out = trainer.train(resume_from_checkpoint=resume_from)
        if nan_cb.message:
            raise TrainingError(nan_cb.message, code="loss_nan")
        final_eval = trainer.evaluate() if has_eval else {}
        if has_eval and not math.isfinite(final_eval.get("eval_loss", 0.0)):
            raise TrainingError(f"the final eval loss is {final_eval['eval_loss']}: no adapter was written. "
                                "Lower --learning-rate.", code="loss_nan")
        trainer.save_model(str(out))  # the PEFT adapter only: adapter_config.json + adapter_model.safetensors
        (out / "training_args.bin").unlink(missing_ok=True)  # a pickle; the card records the arguments instead
        tokenizer.save_pretrained(str(out))
        card = build_card(args, prepared, trainer, train_out, final_eval, device=device, quant=quant, dtype=dtype,
                          max_length=max_length, resume_from=resume_from, seconds=time.time() - t0)
        write_card(out, card)
    except KeyboardInterrupt:
        done = last_checkpoint(ckpt_dir)
        hint = (f"run the same command with --resume to continue from {done}" if done is not None else
                f"no checkpoint was saved yet (one every {args.eval_steps} steps, --eval-steps): run again to start "
                "over")
        kept = f"; the adapter it was replacing is kept in {prev}" if prev is not None else ""
        print(f"\ninterrupted: {hint}{kept}.", file=sys.stderr)
        raise
    except BaseException:
        restore(out, prev)  # a failed run gives back what --overwrite set aside
        raise

    if prev is not None:
        shutil.rmtree(prev)  # replaced: the new adapter is written
    elif (out / PREVIOUS).exists():  # resumed after an interrupted --overwrite run
        print(f"note: {out / PREVIOUS} still holds the adapter that run set aside: delete it when you no longer "
              "need it.", flush=True)
    print(f"adapter written to {out} (train loss {card['results']['train_loss']}, eval loss "
          f"{card['results']['eval_loss']}).\nserve it: RAG_LLM={args.base_model} RAG_ADAPTER={out}", flush=True)
    return TrainResult(output_dir=out, card=card, trainer=trainer, prepared=prepared)


# --------------------------------------------------------------------------- CLI


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m training.train_qlora",
                                 description="QLoRA fine-tuning that produces an adapter for rag's serving.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(TrainArgs):
        kw: dict[str, Any] = {"help": f.metadata.get("help", ""), "dest": f.name}
        required = f.default is MISSING and f.default_factory is MISSING
        t = str(f.type)
        if f.name == "resume":
            ap.add_argument(_flag(f.name), nargs="?", const="last", default=None, **kw)
        elif t.startswith("bool"):
            ap.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, default=f.default, **kw)
        elif t.startswith("list"):
            ap.add_argument(_flag(f.name), nargs="+", required=required, **kw)
        else:
            cast = int if t.startswith("int") else float if t.startswith("float") else str
            ap.add_argument(_flag(f.name), type=cast, required=required,
                            default=None if required else f.default, **kw)
    return ap


def parse_args(argv: Sequence[str] | None = None) -> TrainArgs:
    ns = build_parser().parse_args(argv)
    return TrainArgs(**vars(ns))


def cli(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: main(args))


if __name__ == "__main__":
    sys.exit(cli())
