"""Merge a LoRA adapter into its base model, save it, and check the merge reproduces base + adapter.

The exact command:

```bash
python -m training.merge_adapter \
    --adapter adapters/qwen2.5-7b-hust \
    --output merged/qwen2.5-7b-hust
# optional: --base Qwen/Qwen2.5-7B-Instruct (default: the adapter's base_model_name_or_path)
#           --dtype bf16|fp16|fp32 (default: bf16 on a GPU that has it, fp16 on other GPUs, fp32 on a CPU)
#           --push-to-hub owner/name [--no-private]   (needs HF_TOKEN)
# then serve it: RAG_LLM=merged/qwen2.5-7b-hust rag ask "…"
```

The base is reloaded in fp16/bf16 (fp32 on a CPU) — never in 4-bit: merging LoRA deltas
into 4-bit weights would re-quantize them and lose most of what was learned; quantize the
merged model at serving time instead (``RAG_QUANTIZATION=4bit``). A base that is itself a
quantized checkpoint is refused. The merged model is saved as safetensors with the
tokenizer (the adapter's, which carries the chat template used in training), the adapter's
``rag_prompt.json`` and training card, and — for ``trust_remote_code`` models such as
PhoGPT — the base's custom code files. Verification: logits of base + adapter on a few
probe prompts (rendered by ``rag.prompt.build_prompt``, as serving renders them) are
compared with those of the merged model reloaded from disk; the maximum absolute
difference is printed and must stay within ``--tolerance`` (defaults by dtype).

Everything is written to a staging directory beside ``--output`` (``.<name>.merging-*``) and
moved to ``--output`` only once the check passes, so a failed or interrupted merge leaves
``--output`` as it was (an earlier model there is replaced only by a checked one, with
``--overwrite``). ``--output`` may not be, or contain, the adapter or a local base directory.

Out of scope: merging several adapters, DARE/TIES merges, GGUF/AWQ export.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rag import modeling
from rag.adapters import check_adapter_files
from training import run_cli
from rag.config import Settings
from rag.errors import ConfigError, ModelError

DTYPES = ("auto", "bf16", "fp16", "fp32")
DEFAULT_TOLERANCE = {"fp32": 1e-3, "fp16": 0.5, "bf16": 1.0}  # max |Δlogit|; half precision rounds W + BA
PROBE_QUESTIONS = (
    "Sinh viên bị cảnh báo học tập khi nào?",
    "Điều kiện để được xét tốt nghiệp là gì?",
    "Một tín chỉ tương đương bao nhiêu giờ học tập?",
)
PROBE_PASSAGE = (
    "Quy chế đào tạo › Điều 10. Cảnh báo học tập › Khoản 1\n"
    "Cuối mỗi học kỳ chính, sinh viên bị cảnh báo học tập nếu điểm trung bình học kỳ dưới 1,0."
)
COPIED_FILES = ("rag_prompt.json", "training_card.json")


class MergeError(ModelError):
    code = "merge_failed"


@dataclass
class MergeArgs:
    adapter: str
    output: str
    base: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    probes: int = 3
    tolerance: float | None = None
    overwrite: bool = False
    push_to_hub: str | None = None
    private: bool = True


@dataclass
class MergeResult:
    output: Path
    max_abs_diff: float
    argmax_agreement: float
    dtype: str
    pushed_to: str | None = None


def holds(outer: Path, inner: Path) -> bool:
    """``inner`` is ``outer`` or lies somewhere inside it (links resolved)."""
    outer, inner = outer.resolve(), inner.resolve()
    return inner == outer or outer in inner.parents


def validate(args: MergeArgs, token: str | None = None) -> tuple[Path, Path, str]:
    """Checks that need no model: (adapter dir, output dir, base id/path). ``token``: the Hugging Face token."""
    adapter = Path(args.adapter).expanduser()
    if not (adapter / "adapter_config.json").exists():
        raise ConfigError(f"--adapter {args.adapter!r} has no adapter_config.json: point it at the directory "
                          "train_qlora wrote (download a Hub adapter first with `huggingface-cli download`).")
    check_adapter_files(adapter, "--adapter")
    cfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    base = args.base or cfg.get("base_model_name_or_path")
    if not base:
        raise ConfigError("the adapter does not name its base model: pass --base.")
    out = Path(os.path.abspath(Path(args.output).expanduser()))  # "." has a parent to stage in, like any other
    # The merged model replaces --output as a whole (--overwrite): an input inside it would be deleted with it.
    base_dir = Path(base).expanduser()
    inputs = [("--adapter", args.adapter, adapter)]
    if base_dir.is_dir():
        inputs.append(("--base" if args.base else "the adapter's base model", base, base_dir))
    for what, name, path in inputs:
        if holds(out, path):
            where = "is" if out.resolve() == path.resolve() else "contains"
            raise ConfigError(f"--output {args.output!r} {where} {what} ({name!r}): the merged model replaces "
                              "that directory, and the model it is made from would be lost. Choose an --output "
                              "outside it, such as a sibling directory.", code="output_overlaps_input")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {args.output!r} is a file: name a directory for the merged model.",
                          code="output_exists")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise ConfigError(f"--output {args.output!r} exists and is not empty: pass --overwrite or choose another "
                          "directory.", code="output_exists")
    if args.dtype not in DTYPES:
        raise ConfigError(f"--dtype {args.dtype!r}: use one of {', '.join(DTYPES)} (merging into 4-bit is not "
                          "supported: quantize the merged model when serving, RAG_QUANTIZATION=4bit).")
    if args.probes < 1:
        raise ConfigError("--probes must be at least 1.")
    if args.push_to_hub and not token:
        raise ConfigError("--push-to-hub needs a Hugging Face token with write access: set HF_TOKEN.",
                          code="missing_token")
    return adapter, out, base


def probe_ids(tokenizer: Any, n: int, context_tokens: int) -> list[list[int]]:
    from rag.prompt import Passage, build_prompt, encode_prompt

    passage = Passage(id="probe", label="Điều 10 (Cảnh báo học tập), Khoản 1 — Quy chế đào tạo", text=PROBE_PASSAGE)
    out = []
    for i in range(n):
        q = PROBE_QUESTIONS[i % len(PROBE_QUESTIONS)]
        bp = build_prompt(tokenizer, question=q, passages=[passage] if i % 2 == 0 else [],
                          context_tokens=context_tokens, max_new_tokens=16)
        out.append(encode_prompt(tokenizer, bp.text))
    return out


def logits_for(model: Any, ids: list[list[int]]):
    import torch

    device = model.get_input_embeddings().weight.device
    with torch.no_grad():
        return [model(input_ids=torch.tensor([x], device=device)).logits[0].float().cpu() for x in ids]


def copy_custom_code(base: str, out: Path, token: str | None) -> list[str]:
    """The base's *.py files (modeling/configuration code of trust_remote_code models)."""
    src = Path(base).expanduser()
    if not src.is_dir():
        from huggingface_hub import snapshot_download

        src = Path(snapshot_download(base, allow_patterns=["*.py"], token=token))
    copied = []
    for f in sorted(src.glob("*.py")):
        shutil.copy2(f, out / f.name)
        copied.append(f.name)
    return copied


def main(args: MergeArgs, settings: Settings | None = None) -> MergeResult:
    """Merge, save, verify (and push). ``settings``: the environment's (default ``Settings.from_env()``), for HF_TOKEN."""
    settings = Settings.from_env() if settings is None else settings
    token = settings.hf_token
    adapter, out, base = validate(args, token)

    import torch

    # Never quantised: LoRA deltas merged into 4-bit weights would be re-quantised away.
    merge_settings = settings.with_(llm=base, adapter=str(adapter), quantization="none", device=args.device,
                                    trust_remote_code=args.trust_remote_code)
    dtype = None if args.dtype == "auto" else getattr(torch, modeling.DTYPE_NAMES[args.dtype])
    options = modeling.load_options(merge_settings, dtype=dtype, device_var="--device")
    dtype_name = {v: k for k, v in modeling.DTYPE_NAMES.items()}[options.dtype_name]
    device = options.device
    config = modeling.load_config(base, options, "--base")
    if getattr(config, "quantization_config", None):
        raise ConfigError(f"base {base!r} is a quantized checkpoint: merge into its fp16/bf16 original instead "
                          "(a LoRA merged into quantized weights loses its update).", code="quantized_base")
    print(f"loading {base} in {dtype_name} on {device} with adapter {adapter}", flush=True)
    loaded = modeling.load(merge_settings, var="--base", adapter_var="--adapter", dtype=options.dtype)
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    ctx = getattr(config.get_text_config() if hasattr(config, "get_text_config") else config,
                  "max_position_embeddings", None) or 2048
    ids = probe_ids(tokenizer, args.probes, min(int(ctx), 4096))
    reference = logits_for(model, ids)

    merged = model.merge_and_unload()
    # Everything is written to a staging directory beside --output and swapped in only once checked:
    # a merge that fails or is interrupted leaves an earlier model at --output as it was.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.merging-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the model from a server running as another user
    try:
        merged.save_pretrained(str(staging))  # safetensors (transformers 5 writes nothing else)
        tokenizer.save_pretrained(str(staging))
        for name in COPIED_FILES:
            if (adapter / name).exists():
                shutil.copy2(adapter / name, staging / name)
        code_files = (copy_custom_code(base, staging, token)
                      if (args.trust_remote_code or getattr(config, "auto_map", None)) else [])
        del model, merged
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()

        # Verify what was written, not what is in memory.
        reloaded = modeling.load_base(str(staging), options, "--output").eval()
        fresh = logits_for(reloaded, ids)
        diff = max(float((a - b).abs().max()) for a, b in zip(reference, fresh))
        agree = sum(float((a.argmax(-1) == b.argmax(-1)).float().mean())
                    for a, b in zip(reference, fresh)) / len(ids)
        del reloaded
        tolerance = args.tolerance if args.tolerance is not None else DEFAULT_TOLERANCE[dtype_name]
        print(f"max |logit(base+adapter) - logit(merged)| over {len(ids)} probe prompts = {diff:.3g} "
              f"(tolerance {tolerance:g}), top-1 agreement {agree:.1%}", flush=True)
        if not diff <= tolerance:
            raise MergeError(f"the merged model differs from base + adapter by up to {diff:.3g} in the logits "
                             f"(tolerance {tolerance:g} for {dtype_name}), so it was not written to {str(out)!r}. "
                             + failed_check_hint(diff, dtype_name, args.tolerance))
        info = {"base_model": base, "adapter": str(adapter), "dtype": dtype_name, "probes": len(ids),
                "max_abs_logit_diff": diff, "argmax_agreement": agree, "tolerance": tolerance,
                "custom_code_files": code_files}
        (staging / "merge_info.json").write_text(json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")
        swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when swapped in
    print(f"merged model written to {out}", flush=True)
    pushed = push(out, args.push_to_hub, token, args.private) if args.push_to_hub else None
    return MergeResult(output=out, max_abs_diff=diff, argmax_agreement=agree, dtype=dtype_name, pushed_to=pushed)


def failed_check_hint(diff: float, dtype_name: str, tolerance: float | None) -> str:
    """What to try after a failed check, given the dtype the merge ran in and the tolerance asked for."""
    default = DEFAULT_TOLERANCE[dtype_name]
    if tolerance is not None and tolerance < default and diff <= default:
        return (f"That is within {dtype_name} rounding (default tolerance {default:g}): leave out --tolerance, or "
                "raise it.")
    if dtype_name != "fp32":
        return "Merge in fp32 (--dtype fp32) to check whether rounding is the cause."
    return ("fp32 rounding does not explain it: check that the base is the model the adapter was trained on, "
            "and that peft is the version it was trained with.")


def swap_in(staging: Path, out: Path) -> None:
    """Put the complete ``staging`` directory at ``out``; an earlier ``out`` is deleted only after that."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(old / out.name)
    try:
        staging.rename(out)
    except OSError:
        if old is not None:
            (old / out.name).rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def push(folder: Path, repo_id: str, token: str | None, private: bool) -> str:
    """Upload the merged folder to the Hub. The token is passed to the client, never printed."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                          commit_message="Merged LoRA adapter (training/merge_adapter.py)")
    except Exception as e:  # noqa: BLE001
        msg = " ".join(str(e).split()).replace(token or "\0", "***")[:300]
        raise MergeError(f"upload to the Hub repo {repo_id!r} failed: {msg}. Check HF_TOKEN has write access.",
                         code="push_failed") from None
    url = f"https://huggingface.co/{repo_id}"
    print(f"pushed to {url}", flush=True)
    return url


def parse_args(argv: Sequence[str] | None = None) -> MergeArgs:
    ap = argparse.ArgumentParser(prog="python -m training.merge_adapter", description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapter", required=True, help="adapter directory (train_qlora's --output-dir)")
    ap.add_argument("--output", required=True, help="directory for the merged model")
    ap.add_argument("--base", help="base model (default: the adapter's base_model_name_or_path)")
    ap.add_argument("--dtype", default="auto", choices=DTYPES)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--trust-remote-code", action="store_true", help="needed for PhoGPT")
    ap.add_argument("--probes", type=int, default=3, help="probe prompts for the verification")
    ap.add_argument("--tolerance", type=float, help="max |Δlogit| accepted (default by dtype)")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--push-to-hub", metavar="REPO", help="upload to this Hub repo (needs HF_TOKEN)")
    ap.add_argument("--private", action=argparse.BooleanOptionalAction, default=True)
    return MergeArgs(**vars(ap.parse_args(argv)))


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: main(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(cli())
