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
    tiny_adapter_b,
    tiny_chat_model,
    tiny_hidden32_model,
    tiny_mismatched_adapter,
    tiny_models,
    tiny_pickle_model,
    tiny_plain_model,
)

from rag.config import Settings
from rag.errors import ConfigError, InputError, ModelError
from rag.decoding import held_back as _held_back
from rag.generate import Generator
from rag.prompt import PROMPT_FORMAT_VERSION, PROMPT_META_FILE, Passage, build_prompt, encode_prompt
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


# --------------------------------------------------------------------------- per-request adapters


@pytest.fixture(scope="module")
def swap_gen(tiny_chat_model) -> Generator:
    """A bare base (no RAG_ADAPTER): the first per-request adapter wraps it in PEFT."""
    return Generator.load(Settings(llm=str(tiny_chat_model), max_adapters=2))


def _with_meta(src, dst, **meta):
    shutil.copytree(src, dst)
    (dst / PROMPT_META_FILE).write_text(json.dumps({"prompt_format_version": PROMPT_FORMAT_VERSION, **meta}))
    return dst


def test_each_request_gets_its_own_adapter_and_no_leakage(swap_gen, chat_gen, adapter_gen, tiny_adapter,
                                                          tiny_adapter_b):
    text, r = prompt_for(chat_gen), req(max_new_tokens=20)
    base = chat_gen.stream(text, r).read()
    a = swap_gen.stream(text, r, adapter=str(tiny_adapter)).read()
    b = swap_gen.stream(text, r, adapter=str(tiny_adapter_b)).read()
    assert a == adapter_gen.stream(text, r).read()  # exactly what the same adapter gives at startup
    assert len({base, a, b}) == 3
    assert swap_gen.stream(text, r, adapter=str(tiny_adapter)).read() == a  # the same adapter again
    assert swap_gen.stream(text, r).read() == base  # no adapter: the bare base, nothing left switched on
    assert swap_gen.loaded_adapters == [str(tiny_adapter_b.resolve()), str(tiny_adapter.resolve())]


def test_startup_adapter_comes_back_after_a_request_adapter(tiny_chat_model, tiny_adapter, tiny_adapter_b):
    gen = Generator.load(Settings(llm=str(tiny_chat_model), adapter=str(tiny_adapter)))
    text, r = prompt_for(gen), req(max_new_tokens=20)
    startup = gen.stream(text, r).read()
    other = gen.stream(text, r, adapter=str(tiny_adapter_b)).read()
    # adapter B replaces the startup adapter for that request; it is not stacked on top of it
    b_at_startup = Generator.load(Settings(llm=str(tiny_chat_model), adapter=str(tiny_adapter_b)))
    assert other == b_at_startup.stream(text, r).read()
    assert other != startup
    assert gen.stream(text, r).read() == startup
    # naming the startup adapter's own directory uses it, without loading a second copy
    assert gen.stream(text, r, adapter=str(tiny_adapter)).read() == startup
    assert gen.loaded_adapters == [str(tiny_adapter_b.resolve())]


def test_least_recently_used_adapter_is_unloaded(tiny_chat_model, tiny_adapter, tiny_adapter_b, tmp_path):
    gen = Generator.load(Settings(llm=str(tiny_chat_model), max_adapters=2))
    a, b = str(tiny_adapter.resolve()), str(tiny_adapter_b.resolve())
    c = str(shutil.copytree(tiny_adapter, tmp_path / "copy_of_a").resolve())  # another path: another adapter
    text, r = prompt_for(gen), req(max_new_tokens=12)
    out_a = gen.stream(text, r, adapter=a).read()
    gen.stream(text, r, adapter=b).read()
    gen.stream(text, r, adapter=a).read()  # a is now more recent than b
    assert gen.stream(text, r, adapter=c).read() == out_a  # same weights, other directory
    assert gen.loaded_adapters == [a, c]  # b was least recently used
    assert len(gen.model.peft_config) == 2  # and its weights are gone from the model
    assert gen.stream(text, r, adapter=b).read() != out_a  # reloaded on demand, evicting a
    assert gen.loaded_adapters == [c, b] and len(gen.model.peft_config) == 2


def test_concurrent_requests_with_different_adapters_do_not_mix(swap_gen, tiny_adapter, tiny_adapter_b):
    text = prompt_for(swap_gen)
    jobs = [None, str(tiny_adapter), str(tiny_adapter_b), str(tiny_adapter), None, str(tiny_adapter_b)]
    alone = [swap_gen.stream(text, req(max_new_tokens=16), adapter=a).read() for a in jobs]
    together: list = [None] * len(jobs)

    def run(i):
        together[i] = swap_gen.stream(text, req(max_new_tokens=16), adapter=jobs[i]).read()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone


def test_mismatched_request_adapter_is_refused_naming_both(swap_gen, tiny_chat_model, tiny_mismatched_adapter):
    with pytest.raises(ModelError, match="does not fit") as e:
        swap_gen.stream(prompt_for(swap_gen), req(max_new_tokens=5), adapter=str(tiny_mismatched_adapter))
    msg = str(e.value)
    assert e.value.code == "adapter_mismatch"
    assert adapter_base(tiny_mismatched_adapter) in msg and str(tiny_chat_model) in msg and "the adapter expects" in msg
    assert str(tiny_mismatched_adapter.resolve()) not in swap_gen.loaded_adapters  # refused before loading


def test_request_adapter_with_another_prompt_format_or_not_an_adapter_is_refused(swap_gen, tiny_adapter,
                                                                                 tiny_chat_model, tmp_path):
    old = _with_meta(tiny_adapter, tmp_path / "old", prompt_format_version="vnreg-0")
    with pytest.raises(ModelError, match="vnreg-0") as e:
        swap_gen.stream(prompt_for(swap_gen), req(max_new_tokens=5), adapter=str(old))
    assert e.value.code == "prompt_format_mismatch"
    with pytest.raises(ModelError, match="not a PEFT adapter"):
        swap_gen.stream(prompt_for(swap_gen), req(max_new_tokens=5), adapter=str(tiny_chat_model))
    ia3 = shutil.copytree(tiny_adapter, tmp_path / "ia3")
    (ia3 / "adapter_config.json").write_text(json.dumps({**json.loads((ia3 / "adapter_config.json").read_text()),
                                                         "peft_type": "IA3"}))
    with pytest.raises(ModelError, match="only LoRA adapters"):
        swap_gen.stream(prompt_for(swap_gen), req(max_new_tokens=5), adapter=str(ia3))
    with pytest.raises(ModelError, match="not a local directory") as e:
        swap_gen.stream(prompt_for(swap_gen), req(max_new_tokens=5), adapter="owner/some-adapter")
    assert e.value.code == "adapter_not_found"


def test_per_request_adapters_can_be_switched_off(tiny_chat_model, tiny_adapter):
    gen = Generator.load(Settings(llm=str(tiny_chat_model), max_adapters=0))
    with pytest.raises(ConfigError, match="RAG_MAX_ADAPTERS=0"):
        gen.stream(prompt_for(gen), req(max_new_tokens=5), adapter=str(tiny_adapter))


def test_declared_base_of_another_architecture_is_refused(swap_gen, tiny_chat_model, tiny_adapter,
                                                         tiny_hidden32_model, tmp_path):
    # The weights would fit; rag_prompt.json says they were trained on a hidden-32 model, readable here.
    wrong = _with_meta(tiny_adapter, tmp_path / "wrong", base_model=str(tiny_hidden32_model))
    for load in (lambda: Generator.load(Settings(llm=str(tiny_chat_model), adapter=str(wrong))),
                 lambda: swap_gen.stream(prompt_for(swap_gen), req(max_new_tokens=5), adapter=str(wrong))):
        with pytest.raises(ModelError, match="hidden_size 32 vs 64") as e:
            load()
        assert e.value.code == "adapter_mismatch"
        assert str(tiny_hidden32_model) in str(e.value) and str(tiny_chat_model) in str(e.value)


def test_declared_base_that_is_a_copy_or_unknown_here_is_accepted(swap_gen, adapter_gen, tiny_chat_model,
                                                                  tiny_adapter, tmp_path):
    copy = shutil.copytree(tiny_chat_model, tmp_path / "models" / "chat-copy")  # same model, another path
    on_copy = _with_meta(tiny_adapter, tmp_path / "on_copy", base_model=str(copy))
    cfg = json.loads((on_copy / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "/training-box/models/chat"  # a path on the machine it was trained on
    (on_copy / "adapter_config.json").write_text(json.dumps(cfg))
    elsewhere = _with_meta(tiny_adapter, tmp_path / "elsewhere", base_model="some-org/never-downloaded")
    text, r = prompt_for(swap_gen), req(max_new_tokens=12)
    expected = adapter_gen.stream(text, r).read()
    assert swap_gen.stream(text, r, adapter=str(on_copy)).read() == expected
    assert swap_gen.stream(text, r, adapter=str(elsewhere)).read() == expected
    gen = Generator.load(Settings(llm=str(tiny_chat_model), adapter=str(on_copy)))
    assert gen.stream(text, r).read() == expected


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
    assert chat_gen.stream(text, req(max_new_tokens=20, temperature=1.5, top_p=0.0, seed=5)).read() == greedy
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
