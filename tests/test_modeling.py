"""rag.modeling: the one loader that serving, training and merging share, on tiny real models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from _models import CHATML, make_model, make_tokenizer, save_model  # noqa: F401 - fixtures below
from _models import tiny_adapter, tiny_chat_model, tiny_mismatched_adapter, tiny_models  # noqa: F401

from rag import modeling
from rag.config import Settings
from rag.errors import ConfigError, ModelError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

ROWS = [
    {"question": f"Câu hỏi số {i} về tín chỉ?", "answer": f"Theo Điều {i}: 15 tiết.",
     "passages": [{"label": f"Điều {i} — Quy chế đào tạo", "text": "Một tín chỉ bằng 15 tiết học lý thuyết."}]}
    for i in range(1, 5)
]


@pytest.fixture
def spy(monkeypatch):
    """Record every base model and tokenizer rag.modeling loads (the real functions still run)."""
    calls = []
    real_base, real_tok = modeling.load_base, modeling.load_tokenizer

    def load_base(ref, options, var="RAG_LLM"):
        calls.append(("base", var, options))
        return real_base(ref, options, var)

    def load_tokenizer(source, options):
        tok = real_tok(source, options)
        calls.append(("tokenizer", source, modeling.tokenizer_settings(tok)))
        return tok

    monkeypatch.setattr(modeling, "load_base", load_base)
    monkeypatch.setattr(modeling, "load_tokenizer", load_tokenizer)
    return calls


@pytest.mark.slow
def test_serving_training_and_merging_all_load_through_modeling(spy, tiny_chat_model, tiny_adapter, tmp_path):
    from rag.generate import Generator
    from training import merge_adapter, train_qlora

    Generator.load(Settings(llm=str(tiny_chat_model), adapter=str(tiny_adapter), device="cpu"))
    serving = [c for c in spy if c[0] == "base"]
    assert [c[1] for c in serving] == ["RAG_LLM"]

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    train_qlora.main(train_qlora.TrainArgs(base_model=str(tiny_chat_model), dataset=[str(data)],
                                           output_dir=str(tmp_path / "a"), max_steps=1, eval_fraction=0.0,
                                           max_length=384, system_prompt="Trả lời theo tài liệu.",
                                           per_device_train_batch_size=4,
                                           gradient_accumulation_steps=1, device="cpu"), settings=Settings())
    training = [c for c in spy if c[0] == "base" and c[1] == "--base-model"]
    assert len(training) == 1

    merge_adapter.main(merge_adapter.MergeArgs(adapter=str(tiny_adapter), output=str(tmp_path / "m"), device="cpu"),
                       settings=Settings())
    merging = [c for c in spy if c[0] == "base" and c[1] in ("--base", "--output")]
    assert [c[1] for c in merging] == ["--base", "--output"]

    # The same dtype, device, quantisation and trust for all three, and the same tokenizer settings.
    options = {c[2] for c in spy if c[0] == "base"}
    assert len(options) == 1 and next(iter(options)).dtype == torch.float32
    tokenizers = [c[2] for c in spy if c[0] == "tokenizer"]
    assert len(tokenizers) == 3 and all(t == tokenizers[0] for t in tokenizers)


@pytest.mark.parametrize("quantization", ["none", "8bit", "4bit"])
def test_training_and_serving_get_the_same_options_from_the_same_settings(quantization, tiny_chat_model):
    from training import train_qlora

    env = Settings(hf_token="hf_test", trust_remote_code=False)
    served = env.with_(llm=str(tiny_chat_model), quantization=quantization, device="cpu", trust_remote_code=True)
    args = train_qlora.TrainArgs(base_model=str(tiny_chat_model), dataset=["unused.jsonl"], output_dir="unused",
                                 device="cpu", trust_remote_code=True, dry_run=True,
                                 load_in_4bit=quantization == "4bit", load_in_8bit=quantization == "8bit")
    ok, why = train_qlora.bitsandbytes_status()
    if quantization != "none" and not ok:
        pytest.skip(f"bitsandbytes cannot load here: {why}")
    device, quant = train_qlora.validate_args(args)
    trained = modeling.load_options(train_qlora.settings_for(args, env, device, quant))
    serving = modeling.load_options(served)
    assert trained == serving
    assert (trained.device, trained.dtype, trained.quantization) == ("cpu", torch.float32, quantization)
    t_kwargs, s_kwargs = trained.model_kwargs(), serving.model_kwargs()
    t_quant, s_quant = t_kwargs.pop("quantization_config", None), s_kwargs.pop("quantization_config", None)
    assert t_kwargs == s_kwargs and t_kwargs["trust_remote_code"] is True and t_kwargs["token"] == "hf_test"
    if quantization == "none":
        assert t_quant is None and s_quant is None
    else:
        assert t_quant.to_dict() == s_quant.to_dict()
    if quantization == "4bit":
        q = s_quant.to_dict()
        assert q["bnb_4bit_quant_type"] == "nf4" and q["bnb_4bit_use_double_quant"] is True
        assert q["bnb_4bit_compute_dtype"] == "float32"  # the compute dtype is the device's dtype


def test_a_tokenizer_without_a_pad_token_pads_with_its_eos(tmp_path):
    tok = make_tokenizer(CHATML)
    tok.pad_token = None
    tok.save_pretrained(tmp_path / "tok")
    loaded = modeling.load_tokenizer(str(tmp_path / "tok"), modeling.load_options(Settings(device="cpu")))
    assert loaded.pad_token == loaded.eos_token == "<|im_end|>"
    assert modeling.tokenizer_settings(loaded)["chat_template"] == CHATML


def test_the_adapters_tokenizer_wins_when_training_saved_one(tmp_path, tiny_adapter):
    assert modeling.tokenizer_source("org/base", Path(tiny_adapter)) == "org/base"  # no tokenizer saved there
    saved = tmp_path / "adapter"
    saved.mkdir()
    make_tokenizer(CHATML).save_pretrained(saved)
    assert modeling.tokenizer_source("org/base", saved) == str(saved)


def test_a_tokenizer_larger_than_the_model_is_refused(tmp_path, tiny_chat_model):
    small = make_model(make_tokenizer(CHATML))
    big = make_tokenizer(CHATML)
    big.add_tokens([f"<extra_{i}>" for i in range(50)])
    with pytest.raises(ModelError, match="do not belong together") as e:
        modeling.check_vocabulary(big, small, "somewhere")
    assert e.value.code == "model_mismatch"


def test_merge_applies_the_same_adapter_checks_as_serving(tiny_chat_model, tiny_mismatched_adapter, tmp_path):
    from training import merge_adapter

    with pytest.raises(ModelError, match="does not fit the base model") as e:
        merge_adapter.main(merge_adapter.MergeArgs(adapter=str(tiny_mismatched_adapter), output=str(tmp_path / "m"),
                                                   base=str(tiny_chat_model), device="cpu"), settings=Settings())
    assert e.value.code == "adapter_mismatch" and "--base is" in str(e.value)
    assert not (tmp_path / "m").exists()


@pytest.fixture
def no_base_loads(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the base model was loaded before the adapter's missing file was named")

    monkeypatch.setattr(modeling, "load_base", boom)


def test_an_adapter_without_its_weights_is_named_before_the_base_loads(tiny_chat_model, tiny_adapter, tmp_path,
                                                                       no_base_loads):
    """adapter_config.json without adapter_model.safetensors: PEFT took the folder for a Hub id, and the message
    said the adapter was trained for another base while naming the same one twice."""
    from rag.generate import Generator
    from training import merge_adapter

    broken = shutil.copytree(tiny_adapter, tmp_path / "adapter")
    (broken / "adapter_model.safetensors").unlink()
    attempts = {
        "RAG_ADAPTER": lambda: Generator.load(Settings(llm=str(tiny_chat_model), adapter=str(broken), device="cpu")),
        "--adapter": lambda: merge_adapter.main(merge_adapter.MergeArgs(adapter=str(broken), output=str(tmp_path / "m"),
                                                                        device="cpu"), settings=Settings()),
    }
    for var, attempt in attempts.items():
        with pytest.raises(ModelError, match=f"{var}=.* has adapter_config.json but no adapter_model.safetensors") as e:
            attempt()
        assert e.value.code == "adapter_not_found" and "trained for base" not in str(e.value)
    assert not (tmp_path / "m").exists()


def test_a_per_request_adapter_without_its_weights_is_named(tiny_chat_model, tiny_adapter, tmp_path):
    from rag.generate import Generator

    broken = shutil.copytree(tiny_adapter, tmp_path / "adapter")
    (broken / "adapter_model.safetensors").unlink()
    gen = Generator.load(Settings(llm=str(tiny_chat_model), device="cpu"))
    with pytest.raises(ModelError, match="no adapter_model.safetensors") as e:
        gen.check_adapter(str(broken))
    assert e.value.code == "adapter_not_found"


@pytest.mark.parametrize("damaged, said", [
    ("adapter_config.json", "RAG_ADAPTER=.* could not be loaded .*complete PEFT adapter"),
    ("adapter_model.safetensors", "RAG_ADAPTER=.* unreadable adapter_model.safetensors .*download the adapter again"),
])
def test_an_adapter_peft_cannot_read_is_not_called_a_base_mismatch(damaged, said, tiny_chat_model, tiny_adapter,
                                                                   tmp_path):
    """Every file is there, one of them damaged (a copy cut short): nothing says the base is wrong."""
    from rag.generate import Generator

    broken = shutil.copytree(tiny_adapter, tmp_path / "adapter")
    (broken / damaged).write_bytes((broken / damaged).read_bytes()[:20])
    with pytest.raises(ModelError, match=said) as e:
        Generator.load(Settings(llm=str(tiny_chat_model), adapter=str(broken), device="cpu"))
    assert e.value.code == "model_load_failed"
    assert "trained for base" not in str(e.value) and "Set RAG_LLM" not in str(e.value)


def test_options_keep_the_token_out_of_repr_and_refuse_unknown_devices():
    options = modeling.load_options(Settings(device="cpu", hf_token="hf_SECRET"))
    assert "hf_SECRET" not in repr(options) and options.hub_kwargs()["token"] == "hf_SECRET"
    assert "token" not in modeling.load_options(Settings(device="cpu")).hub_kwargs()
    with pytest.raises(ConfigError, match="RAG_DEVICE='tpu'"):
        modeling.load_options(Settings(device="tpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device='cuda' but no CUDA GPU"):
            modeling.resolve_device("cuda", "--device")
