"""Generation overhead and throughput.

    python benchmarks/bench_generate.py [--new-tokens 128] [--repeats 3]

1. CPU, always: a small random Llama (made here, nothing downloaded) — time to
   first token and tokens/s through rag's ``Generator.stream`` (the path
   ``Pipeline.stream`` uses: background thread, streamer, stop/cancel criteria)
   against a bare ``model.generate`` on the same prompt tokens, greedy, so both
   produce the same tokens. Target: overhead ≤ 10%.
2. CUDA only (skipped with a note otherwise): a randomly initialised model with
   Llama-3-8B's shape in bf16 and in 4-bit NF4 — batch-1 decode tokens/s against
   the memory-bandwidth limit (weight bytes ÷ measured device-to-device copy
   bandwidth), since batch-1 decoding reads every weight once per token.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import machine, table  # noqa: E402


def small_model(directory: Path) -> Path:
    from _models import make_tokenizer  # the tests' tokenizer builder: byte-level BPE on Vietnamese text
    from transformers import LlamaConfig, LlamaForCausalLM

    from _models import CHATML

    tok = make_tokenizer(CHATML)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    import torch

    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def cpu_overhead(new_tokens: int, repeats: int) -> list[list]:
    import torch

    from rag.config import Settings
    from rag.generate import Generator
    from rag.prompt import Passage, build_prompt, encode_prompt
    from rag.request import AskRequest

    with tempfile.TemporaryDirectory() as tmp:
        path = small_model(Path(tmp) / "m")
        settings = Settings().with_(llm=str(path), context_tokens=2048)
        gen = Generator.load(settings)
        passages = [Passage(id=str(i), label=f"Điều {i}", text="Sinh viên được đăng ký tối đa 24 tín chỉ. " * 8)
                    for i in range(4)]
        built = build_prompt(gen.tokenizer, question="Một học kỳ được đăng ký tối đa bao nhiêu tín chỉ?",
                             passages=passages, context_tokens=2048, max_new_tokens=new_tokens)
        ids = torch.tensor([encode_prompt(gen.tokenizer, built.text)])
        model = gen.model
        req = AskRequest(question="q", max_new_tokens=new_tokens)

        def bare(n):
            # In a worker thread, like rag's generation thread: on a loaded CPU the main thread and a
            # worker thread can differ several-fold in speed, which would swamp what is measured here.
            result = {}

            def work():
                t0 = time.perf_counter()
                with torch.inference_mode():
                    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                         do_sample=False, pad_token_id=gen.pad_token_id)
                result["t"], result["n"] = time.perf_counter() - t0, out.shape[1] - ids.shape[1]

            t = threading.Thread(target=work)
            t.start()
            t.join()
            return result["t"], result["n"]

        def ours():
            run = gen.stream(built.text, req)
            t0 = time.perf_counter()
            first = None
            for _ in run:
                if first is None:
                    first = time.perf_counter() - t0
            return first, time.perf_counter() - t0, run.usage["completion_tokens"]

        bare(4), ours()  # warm-up
        b_ttft = statistics.median(bare(1)[0] for _ in range(repeats))
        b_runs = [bare(new_tokens) for _ in range(repeats)]
        b_total = statistics.median(t for t, _ in b_runs)
        n_bare = b_runs[0][1]
        o_runs = [ours() for _ in range(repeats)]
        o_ttft = statistics.median(r[0] for r in o_runs)
        o_total = statistics.median(r[1] for r in o_runs)
        n_ours = o_runs[0][2]
        b_tps = n_bare / b_total
        o_tps = n_ours / o_total
        return [
            ["CPU small Llama (4×256), time to first token, ms", f"{o_ttft * 1000:.1f}",
             f"{b_ttft * 1000:.1f} (generate, 1 token)", f"{(o_ttft / b_ttft - 1) * 100:+.0f}%"],
            [f"CPU small Llama, tokens/s ({n_ours} vs {n_bare} tokens)", f"{o_tps:.1f}", f"{b_tps:.1f} (generate)",
             f"{(b_tps / o_tps - 1) * 100:+.0f}%"],
        ]


def gpu_throughput(new_tokens: int) -> list[list]:
    import torch

    if not torch.cuda.is_available():
        return [["GPU Llama-3-8B shape (bf16, 4-bit)", "skipped", "no CUDA device here", ""]]
    from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

    dev = torch.device("cuda")
    # Measured bandwidth: a large device-to-device copy reads and writes each byte once.
    x = torch.empty(2 * 1024**3 // 2, dtype=torch.bfloat16, device=dev)
    y = torch.empty_like(x)
    y.copy_(x)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    torch.cuda.synchronize()
    bandwidth = 2 * x.numel() * x.element_size() * 10 / (time.perf_counter() - t0)
    del x, y
    cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                      rope_theta=500000.0, tie_word_embeddings=False)
    rows = []

    def decode_rate(model):
        ids = torch.randint(0, cfg.vocab_size, (1, 256), device=dev)
        with torch.no_grad():
            model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.generate(ids, max_new_tokens=1, min_new_tokens=1, do_sample=False)
            torch.cuda.synchronize()
            prefill = time.perf_counter() - t0
            t0 = time.perf_counter()
            model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
            torch.cuda.synchronize()
            total = time.perf_counter() - t0
        return (new_tokens - 1) / (total - prefill)

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        with torch.device(dev):
            model = LlamaForCausalLM(cfg).to(torch.bfloat16)
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        rate = decode_rate(model)
        limit = bandwidth / weight_bytes
        rows.append(["GPU Llama-3-8B shape, bf16, batch 1, tokens/s", f"{rate:.1f}",
                     f"{limit:.1f} (bandwidth {bandwidth / 1e9:.0f} GB/s ÷ {weight_bytes / 1e9:.1f} GB)",
                     f"{rate / limit * 100:.0f}% of limit"])
        model.save_pretrained(tmp)
        del model
        torch.cuda.empty_cache()
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
        model = LlamaForCausalLM.from_pretrained(tmp, quantization_config=q, device_map={"": 0}, dtype=torch.bfloat16)
        weight_bytes = model.get_memory_footprint()
        rate = decode_rate(model)
        limit = bandwidth / weight_bytes
        rows.append(["GPU Llama-3-8B shape, 4-bit NF4, batch 1, tokens/s", f"{rate:.1f}",
                     f"{limit:.1f} (÷ {weight_bytes / 1e9:.1f} GB footprint)", f"{rate / limit * 100:.0f}% of limit"])
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-gpu", action="store_true")
    args = p.parse_args(argv)
    rows = cpu_overhead(args.new_tokens, args.repeats)
    if not args.skip_gpu:
        rows += gpu_throughput(args.new_tokens)
    print(f"generation benchmark; {machine()}")
    table(rows, ["measure", "rag", "reference", "difference"])


if __name__ == "__main__":
    main()
