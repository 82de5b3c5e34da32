"""Dataset preparation: JSONL rows → prompt/completion records rendered exactly as serving renders them.

Rows are read and validated by ``training.dataset`` (Alpaca, chat and QA shapes, HUST
``CONTEXT:`` blocks, refusals, duplicates); this module renders each ``Example`` with
``rag.prompt.build_prompt`` — the serving prompt builder — retrieving passages with rag's own
``Retriever`` (``--index``) for rows without context, so the training prompt is the prompt the
model will see at serving. Records are tokenised with ``rag.prompt.encode_prompt`` (prompt)
and without special tokens (completion), labels are -100 on every prompt token, and the
split into train/eval is a seeded shuffle. The report counts rows per shape, refusals,
duplicates, passages left out for length, completions truncated and rows dropped for
length, with token-length statistics.

The exact command (look at what a model will be trained on before spending GPU time):

```bash
python -m training.data ../shared/data/hust-regulations/sft/sft_dataset.jsonl \
    --tokenizer Qwen/Qwen2.5-7B-Instruct --out prepared/ --max-length 2048
```

Out of scope: multi-turn targets (only the last assistant turn is learned), packing several
examples into one sequence.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rag.errors import InputError
from rag.prompt import PROMPT_FORMAT_VERSION, Passage, build_prompt, encode_prompt
from rag.texts import REFUSAL as REFUSAL_TEXT
from training import run_cli
from training.dataset import (  # noqa: F401 - the public names of training.data
    DatasetError,
    Example,
    ReadReport,
    file_sha256,
    is_refusal,
    parse_context,
    read_dataset,
)


# --------------------------------------------------------------------------- rendering


@dataclass
class Prepared:
    train: list[dict]
    eval: list[dict]
    read: ReadReport
    counts: dict[str, int]
    lengths: dict[str, dict[str, float]]
    max_length: int
    prompt_format_version: str = PROMPT_FORMAT_VERSION

    @property
    def records_sha256(self) -> str:
        h = hashlib.sha256()
        for r in self.train + [{"eval": True}] + self.eval:
            h.update(json.dumps([r.get("prompt"), r.get("completion")], ensure_ascii=False).encode())
        return h.hexdigest()

    def hf_datasets(self):
        """(train, eval or None) as ``datasets.Dataset`` with ``input_ids`` and ``labels`` only."""
        from datasets import Dataset

        def make(rows):
            return Dataset.from_dict({"input_ids": [r["input_ids"] for r in rows],
                                      "labels": [r["labels"] for r in rows]})

        return make(self.train), (make(self.eval) if self.eval else None)

    def summary(self) -> dict:
        return {
            "files": self.read.files,
            "dataset_sha256": self.read.sha256,
            "records_sha256": self.records_sha256,
            "prompt_format_version": self.prompt_format_version,
            "max_length": self.max_length,
            "read": self.read.to_dict(),
            "counts": dict(self.counts),
            "token_lengths": self.lengths,
        }

    def describe(self) -> str:
        c, r = self.counts, self.read
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(r.kinds.items()))
        lines = [
            f"dataset: {r.rows} rows ({kinds}) from {len(r.files)} file(s), sha256 {r.sha256[:12]}",
            f"  {r.duplicates} duplicates removed; {r.refusals} refusals ({r.refusals_mapped} rewritten to "
            f"{REFUSAL_TEXT!r}); {r.without_context} retrieved from the index",
            f"  {c['dropped_prompt_too_long']} dropped (prompt too long), {c['dropped_answer_too_long']} dropped "
            f"(answer too long), {c['truncated']} completions truncated to max_length={self.max_length}; "
            f"{c['rows_with_passages_dropped']} rows lost {c['passages_dropped']} passages to the length budget",
            f"  split: {len(self.train)} train / {len(self.eval)} eval",
        ]
        for name, s in self.lengths.items():
            if s:
                lines.append(f"  {name} tokens: min {s['min']:.0f}  mean {s['mean']:.0f}  p50 {s['p50']:.0f}  "
                             f"p95 {s['p95']:.0f}  max {s['max']:.0f}")
        return "\n".join(lines)


def _stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)

    def pct(q: float) -> float:
        return float(v[min(len(v) - 1, int(round(q * (len(v) - 1))))])

    return {"min": float(v[0]), "mean": sum(v) / len(v), "p50": pct(0.5), "p95": pct(0.95), "max": float(v[-1])}


def retriever_from_index(index_dir: str | Path, settings=None):
    """rag's own Retriever over ``index_dir``, with the embedding settings serving uses (RAG_EMBED_*).

    ``settings``: the run's Settings (default: ``Settings.from_env()``); only its retrieval fields are used.
    """
    from rag.config import Settings
    from rag.pipeline import Pipeline

    settings = (Settings.from_env() if settings is None else settings).with_(
        index_dir=Path(index_dir), llm=None, adapter=None, quantization="none")
    return Pipeline.from_settings(settings, load_llm=False).retriever


def _retrieve(retriever, ex: Example, top_k: int) -> list[Passage]:
    from rag.prompt import passages_from_hits

    # The serving rule for follow-up questions, so training prompts carry what serving would retrieve.
    return passages_from_hits(retriever.search_in_conversation(ex.question, ex.history, top_k).hits)


def _completion_ids(tokenizer: Any, prompt: str, completion: str, prompt_ids: list[int]) -> list[int]:
    """The answer's tokens as they follow the prompt.

    Tokenising prompt + answer together gives the tokens a model produces after the prompt
    (SentencePiece tokenizers would otherwise add a second word-boundary marker to " Theo…");
    the prompt part must stay exactly the serving encoding, so when the joint tokenisation
    does not start with it (a merge across the boundary), the answer is tokenised alone.
    """
    joint = encode_prompt(tokenizer, prompt + completion)
    if joint[: len(prompt_ids)] == prompt_ids and len(joint) > len(prompt_ids):
        return joint[len(prompt_ids):]
    return list(tokenizer(completion, add_special_tokens=False)["input_ids"])


def prepare(
    examples: Sequence[Example],
    read: ReadReport,
    tokenizer: Any,
    *,
    max_length: int = 2048,
    system_prompt: str | None = None,
    retriever: Any = None,
    top_k: int = 5,
    eval_fraction: float = 0.1,
    seed: int = 42,
    drop_long: bool = False,
) -> Prepared:
    """Render, tokenise, filter for length and split. ``retriever`` is needed only for rows without context."""
    if any(ex.passages is None for ex in examples) and retriever is None:
        first = next(ex.source for ex in examples if ex.passages is None)
        raise DatasetError(
            f"{first}: this row has no context (no 'input'/'passages'/'context'), so passages must be retrieved: "
            "pass --index DIR (an index built with `rag ingest`)."
        )
    counts = Counter(dropped_prompt_too_long=0, dropped_answer_too_long=0, truncated=0,
                     rows_with_passages_dropped=0, passages_dropped=0)
    records: list[dict] = []
    for ex in examples:
        passages = ex.passages if ex.passages is not None else _retrieve(retriever, ex, top_k)
        # Room for the answer: its own tokens plus the end-of-turn markers the template adds.
        answer_tokens = len(tokenizer(ex.answer, add_special_tokens=False)["input_ids"]) + 8
        if answer_tokens >= max_length - 16:
            counts["dropped_answer_too_long"] += 1
            continue
        try:
            bp = build_prompt(tokenizer, question=ex.question, passages=passages, history=ex.history,
                              system_prompt=system_prompt, context_tokens=max_length,
                              max_new_tokens=answer_tokens, answer=ex.answer)
        except InputError:
            counts["dropped_prompt_too_long"] += 1
            continue
        prompt_ids = encode_prompt(tokenizer, bp.text)
        completion_ids = _completion_ids(tokenizer, bp.text, bp.completion, prompt_ids)
        if len(prompt_ids) + len(completion_ids) > max_length:
            if drop_long:
                counts["dropped_answer_too_long"] += 1
                continue
            completion_ids = completion_ids[: max_length - len(prompt_ids)]
            counts["truncated"] += 1
        if bp.dropped:
            counts["rows_with_passages_dropped"] += 1
            counts["passages_dropped"] += len(bp.dropped)
        records.append({
            "input_ids": prompt_ids + completion_ids,
            "labels": [-100] * len(prompt_ids) + completion_ids,
            "prompt": bp.text,
            "completion": bp.completion,
            "source": ex.source,
            "refusal": ex.refusal,
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": len(completion_ids),
            "passages_used": [p.id for p in bp.used],
        })
    if not records:
        raise DatasetError(
            f"no example fits max_length={max_length} tokens ({counts['dropped_prompt_too_long']} prompts and "
            f"{counts['dropped_answer_too_long']} answers too long): raise --max-length or shorten the data."
        )
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = 0
    if eval_fraction > 0 and len(records) >= 2:
        n_eval = min(len(records) - 1, max(1, round(len(records) * eval_fraction)))
    eval_rows = [records[i] for i in sorted(order[:n_eval])]
    train_rows = [records[i] for i in sorted(order[n_eval:])]
    lengths = {
        "prompt": _stats([r["prompt_tokens"] for r in records]),
        "completion": _stats([r["completion_tokens"] for r in records]),
        "total": _stats([len(r["input_ids"]) for r in records]),
    }
    return Prepared(train=train_rows, eval=eval_rows, read=read, counts=dict(counts), lengths=lengths,
                    max_length=max_length)


def check_options(*, eval_fraction: float, max_length: int, top_k: int) -> None:
    """The data options ``python -m training.data`` and ``train_qlora`` share, checked before any model loads."""
    from rag.errors import ConfigError

    if not 0.0 <= eval_fraction <= 0.5:
        raise ConfigError(f"--eval-fraction must be between 0 and 0.5, got {eval_fraction}.")
    if max_length < 64:
        raise ConfigError(f"--max-length {max_length} is too small for a prompt with passages; use 1024 or more.")
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}.")


def check_directory(path: str | Path, flag: str) -> None:
    """``path`` can be a directory: it is one, or the first part of it that exists is one (not a file)."""
    from rag.errors import ConfigError

    out = Path(path)
    for part in [out, *out.parents]:
        if part.exists():
            if not part.is_dir():
                raise ConfigError(f"{flag} {str(out)!r}: {str(part)!r} is a file: name a directory.")
            return


def usable_length(max_length: int, config) -> int:
    """``max_length`` capped at the model's positions (said when it is)."""
    from rag import modeling

    limit = modeling.max_positions(config)
    if limit and max_length > limit:
        print(f"note: --max-length {max_length} is above the model's {limit} positions; using {limit}.")
        return limit
    return max_length


def write_prepared(prepared: Prepared, out_dir: str | Path) -> Path:
    """train.jsonl / eval.jsonl (prompt, completion, source) and stats.json, for inspection or other trainers."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keep = ("prompt", "completion", "source", "refusal", "prompt_tokens", "completion_tokens")
    for name, rows in (("train", prepared.train), ("eval", prepared.eval)):
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps({k: r[k] for k in keep}, ensure_ascii=False) + "\n")
    (out / "stats.json").write_text(json.dumps(prepared.summary(), ensure_ascii=False, indent=2), encoding="utf-8")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """python -m training.data DATA.jsonl --tokenizer MODEL --out prepared/ [--index DIR]"""
    ap = argparse.ArgumentParser(prog="python -m training.data", description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", nargs="+", help="JSONL file(s): Alpaca, chat or QA rows")
    ap.add_argument("--tokenizer", required=True, help="the base model (local dir or Hugging Face id)")
    ap.add_argument("--out", required=True, help="directory for train.jsonl, eval.jsonl, stats.json")
    ap.add_argument("--index", help="index directory (rag ingest) for rows without context")
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--eval-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--trust-remote-code", action="store_true")
    a = ap.parse_args(argv)

    def run() -> None:
        from rag import modeling
        from rag.config import Settings

        settings = Settings.from_env()
        check_options(eval_fraction=a.eval_fraction, max_length=a.max_length, top_k=a.top_k)
        check_directory(a.out, "--out")
        examples, read = read_dataset(a.dataset)
        options = modeling.load_options(settings.with_(llm=a.tokenizer, adapter=None, quantization="none",
                                                       device="cpu", trust_remote_code=a.trust_remote_code))
        tok = modeling.load_tokenizer(a.tokenizer, options)
        # the length training will use: capped at the model's positions, as train_qlora caps it
        max_length = usable_length(a.max_length, modeling.load_config(a.tokenizer, options, "--tokenizer"))
        retriever = retriever_from_index(a.index, settings) if a.index and read.without_context else None
        prepared = prepare(examples, read, tok, max_length=max_length, retriever=retriever, top_k=a.top_k,
                           eval_fraction=a.eval_fraction, seed=a.seed)
        write_prepared(prepared, a.out)
        print(prepared.describe())

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
