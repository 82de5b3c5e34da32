"""Generation on tiny random models: loading rules, adapters, quantization, streaming, stops, seeds, cancel."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest
import torch
from _models import (  # noqa: F401 - fixtures
    adapter_base,
    tiny_adapter,
    tiny_chat_model,
    tiny_mismatched_adapter,
    tiny_models,
    tiny_pickle_model,
    tiny_plain_model,
)

from rag.config import Settings
from rag.errors import InputError, ModelError
from rag.generate import Generator, _held_back
from rag.prompt import PROMPT_META_FILE, Passage, build_prompt, encode_prompt
from rag.request import AskRequest

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

PASSAGES = [
    Passage("c1", "Điều 10 (Cảnh báo học tập), Khoản 2 — Quy chế đào tạo",
            "Khoản 2. Sinh viên bị buộc thôi học nếu bị cảnh báo học tập hai lần liên tiếp."),
    Passage("c2", "Điều 4 — Quy chế đào tạo", "Tín chỉ là đơn vị dùng để đo lường khối lượng học tập."),
]


def req(**kw) -> AskRequest:
    return AskRequest(question="Khi nào sinh viên bị buộc thôi học?", **kw).validate(Settings())


@pytest.fixture(scope="module")
def chat_gen(tiny_chat_model) -> Generator:
    return Generator.load(Settings(llm=str(tiny_chat_model)))


@pytest.fixture(scope="module")
def plain_gen(tiny_plain_model) -> Generator:
    return Generator.load(Settings(llm=str(tiny_plain_model)))


@pytest.fixture(scope="module")
def adapter_gen(tiny_chat_model, tiny_adapter) -> Generator:
    return Generator.load(Settings(llm=str(tiny_chat_model), adapter=str(tiny_adapter)))


def prompt_for(gen: Generator, max_new_tokens: int = 64) -> str:
    return build_prompt(gen.tokenizer, question="Khi nào sinh viên bị buộc thôi học?", passages=PASSAGES,
                        context_tokens=gen.context_tokens, max_new_tokens=max_new_tokens).text


def last_logits(gen: Generator, text: str) -> torch.Tensor:
    ids = torch.tensor([encode_prompt(gen.tokenizer, text)])
    with torch.no_grad():
        return gen.model(input_ids=ids).logits[0, -1].float()


# --------------------------------------------------------------------------- loading


def test_load_sets_attributes(chat_gen, tiny_chat_model):
    assert chat_gen.model_id == str(tiny_chat_model)
    assert chat_gen.context_tokens == 1024  # max_position_embeddings of the tiny Llama
    assert not chat_gen.model.training
    assert chat_gen.tokenizer.convert_tokens_to_ids("<|im_end|>") in chat_gen.eos_token_ids


def test_context_tokens_setting_is_capped_by_the_model(tiny_chat_model):
    assert Generator.load(Settings(llm=str(tiny_chat_model), context_tokens=512)).context_tokens == 512
    assert Generator.load(Settings(llm=str(tiny_chat_model), context_tokens=100_000)).context_tokens == 1024


def test_missing_model_path_names_the_path(tmp_path):
    missing = tmp_path / "no" / "such-model"
    with pytest.raises(ModelError, match="no such directory") as e:
        Generator.load(Settings(llm=str(missing)))
    assert str(missing) in str(e.value) and e.value.code == "model_not_found"


def test_adapter_for_another_base_names_both(tiny_chat_model, tiny_mismatched_adapter):
    with pytest.raises(ModelError, match="does not fit") as e:
        Generator.load(Settings(llm=str(tiny_chat_model), adapter=str(tiny_mismatched_adapter)))
    msg = str(e.value)
    assert adapter_base(tiny_mismatched_adapter) in msg and str(tiny_chat_model) in msg
    assert e.value.code == "adapter_mismatch"


def test_adapter_dir_given_as_model_is_explained(tiny_adapter):
    with pytest.raises(ModelError, match="RAG_ADAPTER"):
        Generator.load(Settings(llm=str(tiny_adapter)))


def test_pickle_only_weights_need_the_switch(tiny_pickle_model, chat_gen):
    assert not list(tiny_pickle_model.glob("*.safetensors"))
    with pytest.raises(ModelError, match="RAG_ALLOW_PICKLE=1") as e:
        Generator.load(Settings(llm=str(tiny_pickle_model)))
    assert e.value.code == "pickle_weights"
    gen = Generator.load(Settings(llm=str(tiny_pickle_model), allow_pickle=True))
    text = prompt_for(gen)
    assert torch.allclose(last_logits(gen, text), last_logits(chat_gen, text), atol=1e-5)


def test_adapter_with_another_prompt_format_is_refused(tiny_chat_model, tiny_adapter, tmp_path):
    old = tmp_path / "old_adapter"
    shutil.copytree(tiny_adapter, old)
    (old / PROMPT_META_FILE).write_text(json.dumps({"prompt_format_version": "vnreg-0"}))
    with pytest.raises(ModelError, match="vnreg-0"):
        Generator.load(Settings(llm=str(tiny_chat_model), adapter=str(old)))


# --------------------------------------------------------------------------- adapters


def test_lora_adapter_changes_logits_and_greedy_output(chat_gen, adapter_gen):
    text = prompt_for(chat_gen)
    base, tuned = last_logits(chat_gen, text), last_logits(adapter_gen, text)
    assert (base - tuned).abs().max() > 1e-2
    r = req(max_new_tokens=20)
    assert chat_gen.stream(text, r).read() != adapter_gen.stream(text, r).read()


def test_merged_model_matches_unmerged_adapter(tiny_chat_model, tiny_adapter, adapter_gen, tmp_path):
    to_merge = Generator.load(Settings(llm=str(tiny_chat_model), adapter=str(tiny_adapter)))
    merged = to_merge.model.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    to_merge.tokenizer.save_pretrained(tmp_path / "merged")
    merged_gen = Generator.load(Settings(llm=str(tmp_path / "merged")))  # a merged dir just works as a base
    text = prompt_for(adapter_gen)
    assert torch.allclose(last_logits(merged_gen, text), last_logits(adapter_gen, text), atol=1e-4)


def test_4bit_loads_and_generates_on_cpu(tiny_chat_model, tiny_adapter):
    try:
        import bitsandbytes as bnb
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"bitsandbytes cannot load here: {e}")
    gen = Generator.load(Settings(llm=str(tiny_chat_model), adapter=str(tiny_adapter), quantization="4bit"))
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in gen.model.modules())
    g = gen.stream(prompt_for(gen), req(max_new_tokens=8))
    g.read()
    assert g.usage["completion_tokens"] >= 1 and g.finish_reason in ("length", "stop")


# --------------------------------------------------------------------------- streaming


def test_greedy_stream_matches_plain_generate_and_concatenates(chat_gen):
    text = prompt_for(chat_gen)
    g = chat_gen.stream(text, req(max_new_tokens=40))
    deltas = list(g)
    assert len(deltas) > 1 and "".join(deltas) == g.text and g.text

    ids = torch.tensor([encode_prompt(chat_gen.tokenizer, text)])
    with torch.no_grad():
        out = chat_gen.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=40, eos_token_id=chat_gen.eos_token_ids,
                                      pad_token_id=chat_gen.pad_token_id)
    new = out[0, ids.shape[1]:]
    assert g.text == chat_gen.tokenizer.decode(new, skip_special_tokens=True)
    assert g.usage == {"prompt_tokens": ids.shape[1], "completion_tokens": len(new)}
    assert g.finish_reason == ("length" if len(new) == 40 else "stop")
    assert set(g.timings) == {"first_token_ms", "total_ms", "tokens_per_s"}
    assert 0 < g.timings["first_token_ms"] <= g.timings["total_ms"] and g.timings["tokens_per_s"] > 0


def test_phogpt_model_streams(plain_gen):
    g = plain_gen.stream(prompt_for(plain_gen), req(max_new_tokens=10))
    assert "".join(g) == g.text and g.usage["completion_tokens"] >= 1


def _pick_stop(text: str) -> str:
    for start in range(len(text) // 3, len(text) - 3):
        cand = text[start:start + 3]
        if "\ufffd" not in cand and cand.strip() == cand and text.find(cand) > 0:
            return cand
    pytest.fail(f"no usable stop string in {text!r}")


def test_stop_sequence_ends_generation_and_is_trimmed(chat_gen):
    text = prompt_for(chat_gen)
    free = chat_gen.stream(text, req(max_new_tokens=60))
    full = free.read()
    stop = _pick_stop(full)
    expected = full[: full.find(stop)]

    g = chat_gen.stream(text, req(max_new_tokens=60, stop=[stop, "zzz-not-there"]))
    deltas = list(g)
    assert g.text == expected == "".join(deltas)
    assert stop not in g.text
    assert g.finish_reason == "stop"
    assert g.usage["completion_tokens"] < free.usage["completion_tokens"]


def test_stop_prefix_is_held_back_then_released():
    assert _held_back("abc Điề", ["Điều"]) == 3
    assert _held_back("abc", ["xyz"]) == 0


def test_absent_stop_does_not_change_the_text(chat_gen):
    text = prompt_for(chat_gen)
    ref = chat_gen.stream(text, req(max_new_tokens=30)).read()
    for stop in (ref[-1:] + "§never", "§"):  # the first one's start is a real suffix: held back, then released
        g = chat_gen.stream(text, req(max_new_tokens=30, stop=[stop]))
        assert "".join(g) == ref == g.text


def test_same_seed_same_text_even_with_other_threads(chat_gen, plain_gen):
    text = prompt_for(chat_gen)
    r7 = req(max_new_tokens=30, temperature=1.0, seed=7)
    first = chat_gen.stream(text, r7).read()

    # Meanwhile another generator samples without a seed and the global RNG is churned.
    stop = threading.Event()

    def noise():
        while not stop.is_set():
            plain_gen.stream(prompt_for(plain_gen), req(max_new_tokens=5, temperature=1.0)).read()
            torch.rand(1000)

    t = threading.Thread(target=noise)
    t.start()
    try:
        again = chat_gen.stream(text, r7).read()
    finally:
        stop.set()
        t.join()
    other = chat_gen.stream(text, req(max_new_tokens=30, temperature=1.0, seed=8)).read()
    assert first == again
    assert first != other
    greedy = chat_gen.stream(text, req(max_new_tokens=30)).read()
    assert first != greedy


def test_sampling_without_seed_records_one(chat_gen):
    g = chat_gen.stream(prompt_for(chat_gen), req(max_new_tokens=5, temperature=0.7, top_p=0.9, sampling_top_k=20))
    g.read()
    assert isinstance(g.seed, int)


def test_cancel_from_another_thread_stops_promptly(chat_gen):
    cancel = threading.Event()
    g = chat_gen.stream(prompt_for(chat_gen), req(max_new_tokens=2000), cancel=cancel)
    assert g._plan.max_new_tokens > 500  # capped by the 1024-token context, still long
    t_cancel = None
    for _ in g:
        if t_cancel is None:
            t_cancel = time.perf_counter()
            threading.Thread(target=cancel.set).start()
    elapsed = time.perf_counter() - t_cancel
    assert elapsed < 2.0
    assert g.finish_reason == "cancelled"
    assert not g.thread.is_alive()
    assert g.usage["completion_tokens"] < g._plan.max_new_tokens


def test_consumer_leaving_early_ends_the_thread(chat_gen):
    g = chat_gen.stream(prompt_for(chat_gen), req(max_new_tokens=600))
    for _ in g:
        break
    assert not g.thread.is_alive()
    assert g.finish_reason == "cancelled"
    # the model is free again
    assert chat_gen.stream(prompt_for(chat_gen), req(max_new_tokens=3)).read() is not None


def test_waiting_stream_is_cancellable_while_another_generates(chat_gen):
    text = prompt_for(chat_gen)
    busy = chat_gen.stream(text, req(max_new_tokens=600))
    it = iter(busy)
    next(it)  # the first stream now holds the model
    waiting = chat_gen.stream(text, req(max_new_tokens=50))
    waiting.cancel()
    t0 = time.perf_counter()
    assert waiting.read() == ""
    assert time.perf_counter() - t0 < 1.0
    assert waiting.finish_reason == "cancelled" and waiting.usage["completion_tokens"] == 0
    it.close()
    assert not busy.thread.is_alive()


def test_prompt_longer_than_context_is_refused(chat_gen):
    with pytest.raises(InputError, match="context"):
        chat_gen.stream("Sinh viên " * 2000, req(max_new_tokens=10))


def test_max_new_tokens_capped_by_remaining_context(chat_gen):
    text = prompt_for(chat_gen)
    g = chat_gen.stream(text, req(max_new_tokens=2000))
    assert g._plan.max_new_tokens == chat_gen.context_tokens - len(encode_prompt(chat_gen.tokenizer, text))


def test_warmup_generates_one_token(chat_gen, plain_gen):
    for gen in (chat_gen, plain_gen):
        g = gen.warmup()
        assert g.usage["completion_tokens"] == 1 and g.finish_reason in ("length", "stop")


def test_sampling_knobs_reach_the_sampler(chat_gen):
    text = prompt_for(chat_gen)
    greedy = chat_gen.stream(text, req(max_new_tokens=20)).read()
    # top-k 1 or a tiny nucleus leaves only the argmax: sampling must then equal greedy, whatever the seed
    assert chat_gen.stream(text, req(max_new_tokens=20, temperature=1.0, sampling_top_k=1, seed=3)).read() == greedy
    assert chat_gen.stream(text, req(max_new_tokens=20, temperature=1.5, top_p=1e-6, seed=4)).read() == greedy
    assert chat_gen.stream(text, req(max_new_tokens=20, repetition_penalty=1.8)).read() != greedy


def test_generation_failure_is_a_model_error_and_frees_the_model(chat_gen, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(chat_gen.model, "generate", boom)
    g = chat_gen.stream(prompt_for(chat_gen), req(max_new_tokens=5))
    with pytest.raises(ModelError, match="out of memory") as e:
        g.read()
    assert e.value.code == "generation_failed" and g.finish_reason == "error"
    assert not g.thread.is_alive()
    monkeypatch.undo()
    assert chat_gen.stream(prompt_for(chat_gen), req(max_new_tokens=3)).read() is not None
