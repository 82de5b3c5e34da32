"""The training card written next to an adapter: ``training_card.json`` and a ``README.md``.

The card records what serving and a reader need to trust an adapter: the base model, the
prompt-format version (also written to ``rag_prompt.json``, which serving checks), the
dataset's sha256 and counts, the hyperparameters, the final losses and the software versions.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

CARD_JSON = "training_card.json"
CARD_MD = "README.md"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes", "rag"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def build_card(args, prepared, trainer, train_out, final_eval, *, device, quant, dtype, max_length, resume_from,
               seconds) -> dict:
    from rag.prompt import PROMPT_FORMAT_VERSION

    state = trainer.state
    losses = [e["loss"] for e in state.log_history if "loss" in e]
    hyper = {k: v for k, v in asdict(args).items()
             if k not in ("dataset", "output_dir", "index_dir", "resume", "overwrite", "dry_run", "base_model")}
    hyper.update(max_length=max_length, effective_batch=args.effective_batch,
                 quantization={"4bit": "4-bit NF4, double quantization", "8bit": "8-bit (LLM.int8)"}.get(quant, "none"),
                 compute_dtype=str(dtype).split(".")[-1], device=device,
                 optim=trainer.args.optim.value if hasattr(trainer.args.optim, "value") else str(trainer.args.optim))
    max_steps = trainer.args.max_steps if trainer.args.max_steps > 0 else state.max_steps
    return {
        "card_version": 1,
        "base_model": args.base_model,
        "prompt_format_version": PROMPT_FORMAT_VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": {
            "files": [Path(f).name for f in prepared.read.files],
            "sha256": prepared.read.sha256,
            "records_sha256": prepared.records_sha256,
            "rows": prepared.read.rows,
            "kinds": dict(prepared.read.kinds),
            "duplicates_removed": prepared.read.duplicates,
            "refusals": prepared.read.refusals,
            "refusals_rewritten": prepared.read.refusals_mapped,
            "train": len(prepared.train),
            "eval": len(prepared.eval),
            **prepared.counts,
            "token_lengths": prepared.lengths,
            "system_prompt": args.system_prompt,
        },
        "hyperparameters": hyper,
        "results": {
            "train_loss": round(losses[-1], 6) if losses else None,
            "train_loss_mean": round(train_out.training_loss, 6) if train_out is not None else None,
            "eval_loss": round(final_eval["eval_loss"], 6) if "eval_loss" in final_eval else None,
            "best_eval_loss": state.best_metric,
            "global_step": state.global_step,
            "epochs": round(state.epoch or 0.0, 3),
            "stopped_early": bool(max_steps and state.global_step < max_steps),
            "resumed_from": Path(resume_from).name if resume_from else None,
            "seconds": round(seconds, 1),
        },
        "software": _versions(),
        "serving": {"RAG_LLM": args.base_model, "RAG_QUANTIZATION": "4bit" if quant == "4bit" else "none",
                    "RAG_SYSTEM_PROMPT": args.system_prompt,
                    "RAG_TRUST_REMOTE_CODE": "1" if args.trust_remote_code else None},
    }


def write_card(out: Path, card: dict) -> None:
    from rag.prompt import PROMPT_META_FILE

    (out / CARD_JSON).write_text(json.dumps(card, ensure_ascii=False, indent=2), encoding="utf-8")
    meta = {"prompt_format_version": card["prompt_format_version"], "base_model": card["base_model"],
            "system_prompt": card["dataset"].get("system_prompt"), "training_card": CARD_JSON}
    (out / PROMPT_META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
    d, h, r = card["dataset"], card["hyperparameters"], card["results"]
    lines = [
        f"# LoRA adapter for {card['base_model']}",
        "",
        "Trained with `training/train_qlora.py` on regulation Q&A; prompts rendered by `rag.prompt` "
        f"(format `{card['prompt_format_version']}`). Serve with:",
        "",
        "```bash",
        f"RAG_LLM={card['base_model']} RAG_ADAPTER=<this directory> RAG_QUANTIZATION={card['serving']['RAG_QUANTIZATION']} "
        "rag ask \"…\"",
        "```",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{card['base_model']}` |",
        f"| prompt format | `{card['prompt_format_version']}` |",
        f"| dataset | {', '.join(d['files'])} (sha256 `{d['sha256'][:16]}…`) |",
        f"| rows | {d['rows']} read, {d['duplicates_removed']} duplicates removed, {d['refusals']} refusals |",
        f"| split | {d['train']} train / {d['eval']} eval |",
        f"| length | max {h['max_length']} tokens; {d['truncated']} truncated, "
        f"{d['dropped_prompt_too_long'] + d['dropped_answer_too_long']} dropped |",
        f"| LoRA | r={h['lora_r']}, alpha={h['lora_alpha']}, dropout={h['lora_dropout']}, {h['target_modules']} |",
        f"| optimisation | lr {h['learning_rate']}, {h['num_train_epochs']} epochs (max_steps {h['max_steps']}), "
        f"effective batch {h['effective_batch']}, {h['lr_scheduler_type']}, {h['optim']} |",
        f"| base precision | {h['quantization']}, compute {h['compute_dtype']} on {h['device']} |",
        f"| final loss | train {r['train_loss']}, eval {r['eval_loss']} (best {r['best_eval_loss']}) |",
        f"| steps | {r['global_step']} ({r['epochs']} epochs){', stopped early' if r['stopped_early'] else ''} |",
        "",
        f"Full details: `{CARD_JSON}`.",
        "",
    ]
    (out / CARD_MD).write_text("\n".join(lines), encoding="utf-8")
