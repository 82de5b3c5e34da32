"""QLoRA training on a tiny random model: data preparation, masking, learning, resume, merge, serving, bad input.

One short training run (module fixture) feeds most tests; the resume, NaN, 4-bit and
Replicate runs are separate and marked ``slow``. Everything runs on the CPU in fp32.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from _models import (  # noqa: F401 - fixtures
    CHATML,
    make_model,
    make_tokenizer,
    save_model,
    tiny_adapter,
    tiny_chat_model,
    tiny_models,
    tiny_pickle_model,
    tiny_plain_model,
)
from conftest import shared_data

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `pytest` (not `python -m pytest`) does not put the repo root on sys.path
    sys.path.insert(0, str(REPO))

from rag.config import Settings  # noqa: E402
from rag.errors import ConfigError, ModelError  # noqa: E402
from rag.prompt import PROMPT_FORMAT_VERSION, PROMPT_META_FILE, build_prompt, encode_prompt  # noqa: E402
from rag.texts import REFUSAL  # noqa: E402
from training import merge_adapter, train_qlora  # noqa: E402
from training.data import DatasetError, parse_context, prepare, read_dataset  # noqa: E402
from training.train_qlora import TrainArgs, TrainingError, main, nan_callback, validate_args  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

SYSTEM = "Trả lời theo tài liệu."  # short, so the tiny runs stay fast

HUST_ROW = {
    "instruction": "Sinh viên bị cảnh báo học tập khi nào?",
    "input": (
        "Bạn là chatbot hỏi đáp quy chế sinh viên.\nChỉ sử dụng thông tin trong CONTEXT bên dưới.\n\n"
        "CONTEXT:\n---\nVăn bản: Quy chế đào tạo năm 2025\nChương: CHƯƠNG II TỔ CHỨC ĐÀO TẠO\n"
        "Điều: Điều 10. Cảnh báo học tập\nKhoản: 1\nNgày hiệu lực: 2025-05-28\n\nNội dung:\n"
        "Sinh viên bị cảnh báo học tập nếu điểm trung bình học kỳ dưới 1,0.\n---\n\n"
        "Thông tin sinh viên:\nKhóa sinh viên: K68\n---"
    ),
    "output": "Theo Điều 10, Khoản 1: khi điểm trung bình học kỳ dưới 1,0.",
    "doc_type": "Quy chế đào tạo năm 2025",
}
ROWS = [
    HUST_ROW,
    {"question": "Một tín chỉ bằng bao nhiêu tiết?", "answer": "Theo Điều 4: 15 tiết lý thuyết.",
     "passages": [{"label": "Điều 4 — Quy chế đào tạo", "text": "Một tín chỉ bằng 15 tiết học lý thuyết."}]},
    {"messages": [{"role": "system", "content": "Bạn là trợ lý."},
                  {"role": "user", "content": "Điều kiện tốt nghiệp là gì?"},
                  {"role": "assistant", "content": "Theo Điều 15: đủ tín chỉ và chuẩn ngoại ngữ."}],
     "context": "Sinh viên tích lũy đủ số tín chỉ và đạt chuẩn đầu ra ngoại ngữ."},
    {"instruction": "Học phí học lại là bao nhiêu?",
     "input": "CONTEXT:\n---\nKhông có tài liệu quy chế nào trong hệ thống phù hợp với câu hỏi.\n---",
     "output": "Xin lỗi, hiện tại mình chưa có thông tin về câu hỏi mà bạn đưa ra."},
    {"instruction": "Khiếu nại điểm thi trong bao lâu?", "input": "Khiếu nại gửi trong 10 ngày kể từ ngày công bố điểm.",
     "output": "Theo Điều 20: trong vòng 10 ngày."},
    {"question": "Học bổng xét khi nào?", "answer": "Theo Điều 6: xét mỗi học kỳ.",
     "context": "Học bổng khuyến khích học tập được xét mỗi học kỳ."},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def args_for(base, data, out, **kw) -> TrainArgs:
    defaults = dict(system_prompt=SYSTEM, max_length=384, learning_rate=5e-3, max_steps=10,
                    per_device_train_batch_size=8, gradient_accumulation_steps=1, logging_steps=1, eval_steps=5,
                    eval_fraction=0.2, warmup_ratio=0.0, lr_scheduler_type="constant", lora_r=8, lora_alpha=16,
                    lora_dropout=0.0, device="cpu")
    defaults.update(kw)
    return TrainArgs(base_model=str(base), dataset=[str(data)], output_dir=str(out), **defaults)


@pytest.fixture(scope="module")
def dataset_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", ROWS)


@pytest.fixture(scope="module")
def trained(tiny_chat_model, dataset_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "adapter"
    torch.manual_seed(0)
    return main(args_for(tiny_chat_model, dataset_file, out))


@pytest.fixture
def no_model_loads(monkeypatch):
    """Fail the test if anything tries to load a model, tokenizer or config."""
    import transformers

    def boom(*a, **k):
        raise AssertionError("a model/tokenizer was loaded before the bad input was reported")

    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer, transformers.AutoConfig):
        monkeypatch.setattr(cls, "from_pretrained", boom)


# --------------------------------------------------------------------------- data preparation


def test_hust_style_context_becomes_labelled_passages_and_refusals_are_rewritten(tmp_path):
    examples, report = read_dataset(write_jsonl(tmp_path / "d.jsonl", ROWS))
    by_q = {e.question.split("\n")[0]: e for e in examples}
    hust = by_q["Sinh viên bị cảnh báo học tập khi nào?"]
    assert hust.question.endswith("\nKhóa sinh viên: K68")  # the student-info block travels with the question
    [p] = hust.passages
    assert p.label == "Quy chế đào tạo năm 2025, Điều 10, Khoản 1"
    assert p.text.splitlines()[0] == ("Quy chế đào tạo năm 2025 › CHƯƠNG II TỔ CHỨC ĐÀO TẠO › "
                                      "Điều 10. Cảnh báo học tập › Khoản 1")
    assert "điểm trung bình học kỳ dưới 1,0" in p.text and "chatbot" not in p.text
    refusal = by_q["Học phí học lại là bao nhiêu?"]
    assert refusal.answer == REFUSAL and refusal.passages == [] and refusal.refusal
    chat = by_q["Điều kiện tốt nghiệp là gì?"]
    assert chat.kind == "chat" and chat.passages[0].text.startswith("Sinh viên tích lũy")
    assert report.kinds == {"alpaca": 3, "qa": 2, "chat": 1}
    assert report.refusals == 1 and report.refusals_mapped == 1 and report.system_ignored == 2


def test_multi_document_context_and_duplicates(tmp_path):
    ctx = ("---\nVăn bản 1: Quy định ngoại ngữ từ K65\nNội dung: FL1129 - Tiếng Anh cơ sở 1.\n"
           "Văn bản 2: Quyết định ngoại ngữ từ K68\nNội dung: FL1131 - Tiếng Anh cơ sở 1.\n---\n")
    passages, no_docs, student = parse_context(ctx)
    assert [p.label for p in passages] == ["Quy định ngoại ngữ từ K65", "Quyết định ngoại ngữ từ K68"]
    assert passages[1].text == "Quyết định ngoại ngữ từ K68\nFL1131 - Tiếng Anh cơ sở 1." and not no_docs
    row = {"instruction": "Mã học phần?", "input": "CONTEXT:\n" + ctx, "output": "FL1129 và FL1131."}
    same_but_spaced = dict(row, instruction="  Mã   học phần?")
    examples, report = read_dataset(write_jsonl(tmp_path / "d.jsonl", [row, same_but_spaced, row]))
    assert len(examples) == 1 and report.duplicates == 2 and report.rows == 3


@pytest.mark.parametrize("model", ["tiny_chat_model", "tiny_plain_model"])
def test_records_are_serving_prompts_with_prompt_tokens_masked(model, request, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(request.getfixturevalue(model))
    examples, read = read_dataset(write_jsonl(tmp_path / "d.jsonl", ROWS))
    prepared = prepare(examples, read, tok, max_length=384, system_prompt=SYSTEM, eval_fraction=0.2, seed=1)
    assert len(prepared.train) + len(prepared.eval) == 6 and len(prepared.eval) == 1
    ex = next(e for e in examples if e.kind == "qa" and e.passages)
    rec = next(r for r in prepared.train + prepared.eval if r["source"] == ex.source)
    served = build_prompt(tok, question=ex.question, passages=ex.passages, system_prompt=SYSTEM,
                          context_tokens=4096, max_new_tokens=64)
    assert rec["prompt"] == served.text  # exactly what serving renders
    n = len(encode_prompt(tok, served.text))
    assert rec["input_ids"][:n] == encode_prompt(tok, served.text)
    assert rec["labels"][:n] == [-100] * n and all(x != -100 for x in rec["labels"][n:])
    answer = tok.decode(rec["labels"][n:], skip_special_tokens=False)
    assert answer.strip().startswith(ex.answer) and tok.eos_token in answer
    # same seed, same split; other seed, (here) another split
    again = prepare(examples, read, tok, max_length=384, system_prompt=SYSTEM, eval_fraction=0.2, seed=1)
    assert [r["source"] for r in again.eval] == [r["source"] for r in prepared.eval]
    assert prepared.lengths["total"]["max"] <= 384 and prepared.counts["truncated"] == 0


def test_length_limits_are_counted(tiny_chat_model, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    long_passage = {"question": "Câu hỏi?", "answer": "Ngắn.",
                    "passages": [{"label": "A", "text": "Điều 1. " + "tín chỉ " * 40},
                                 {"label": "B", "text": "Điều 2. " + "học phần " * 200}]}
    long_answer = {"question": "Câu hỏi dài?", "answer": "Trả lời " * 300, "context": "Một đoạn."}
    examples, read = read_dataset(write_jsonl(tmp_path / "d.jsonl", [long_passage, long_answer, ROWS[1]]))
    prepared = prepare(examples, read, tok, max_length=256, system_prompt=SYSTEM, eval_fraction=0)
    assert prepared.counts["dropped_answer_too_long"] == 1
    assert prepared.counts["rows_with_passages_dropped"] == 1 and prepared.counts["passages_dropped"] == 1
    assert len(prepared.train) == 2 and "dropped (answer too long)" in prepared.describe()


def test_hust_file_converts_without_errors(tiny_chat_model):
    from transformers import AutoTokenizer

    path = shared_data("hust-regulations", "sft", "sft_dataset.jsonl")
    examples, read = read_dataset(path)
    assert read.rows == 1000 and read.kinds == {"alpaca": 1000}
    assert read.refusals >= 85  # the "N/A" rows, now the project's refusal sentence
    assert all(e.answer == REFUSAL for e in examples if e.refusal)
    assert all(e.passages for e in examples if not e.refusal)  # every answered row kept its context
    labels = [p.label for e in examples for p in e.passages]
    assert "Quy chế đào tạo năm 2025, Điều 2, Khoản 6" in labels
    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    prepared = prepare(examples[:200], read, tok, max_length=8192, eval_fraction=0.1, seed=3)
    assert len(prepared.train) + len(prepared.eval) == 200 and len(prepared.eval) == 20
    assert prepared.counts["truncated"] == 0


@pytest.mark.slow
def test_qa_pairs_without_context_get_the_passages_serving_retrieves(demo_index_dir, tiny_chat_model, tmp_path):
    from transformers import AutoTokenizer

    from rag.pipeline import Pipeline
    from rag.prompt import passages_from_hits
    from training.data import retriever_from_index

    q = "Sinh viên bị cảnh báo học tập khi nào?"
    examples, read = read_dataset(write_jsonl(tmp_path / "qa.jsonl", [{"question": q, "answer": "Theo Điều …"}]))
    assert read.without_context == 1
    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    with pytest.raises(DatasetError, match="--index"):
        prepare(examples, read, tok, max_length=1024)
    prepared = prepare(examples, read, tok, max_length=1024, retriever=retriever_from_index(demo_index_dir),
                       eval_fraction=0)
    pipe = Pipeline.from_settings(Settings.from_env({}).with_(index_dir=demo_index_dir), load_llm=False)
    served = build_prompt(tok, question=q, passages=passages_from_hits(pipe.search(q).hits),
                          context_tokens=1024, max_new_tokens=64)
    assert prepared.train[0]["prompt"] == served.text and "Điều" in served.text


# --------------------------------------------------------------------------- training


def test_loss_falls_on_a_small_repeated_set(trained):
    losses = [e["loss"] for e in trained.trainer.state.log_history if "loss" in e]
    assert len(losses) == 10
    assert losses[-1] < losses[0] - 0.3, losses


def test_base_weights_unchanged_and_lora_weights_changed(trained, tiny_chat_model):
    from safetensors.torch import load_file

    base = load_file(str(tiny_chat_model / "model.safetensors"))
    model = trained.trainer.model
    checked = 0
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert p.requires_grad
            continue
        assert not p.requires_grad, name
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        if key in base:
            assert torch.equal(p.detach().cpu(), base[key]), key
            checked += 1
    assert checked == len(base)
    saved = load_file(str(trained.output_dir / "adapter_model.safetensors"))
    lora_b = [v for k, v in saved.items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)  # B starts at zero: non-zero means it learned


def test_collated_batch_masks_prompt_tokens(trained):
    trainer, prepared = trained.trainer, trained.prepared
    batch = next(iter(trainer.get_train_dataloader()))
    by_ids = {tuple(r["input_ids"]): r for r in prepared.train}
    seen = 0
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        n_real = int(mask.sum())
        rec = by_ids[tuple(ids[:n_real].tolist())]
        n_prompt = rec["prompt_tokens"]
        assert (labels[:n_prompt] == -100).all()  # prompt and passages: no loss
        assert (labels[n_prompt:n_real] == ids[n_prompt:n_real]).all()  # the answer: loss
        assert (labels[n_real:] == -100).all()  # padding: no loss
        seen += 1
    assert seen == len(prepared.train)


def test_output_dir_has_adapter_tokenizer_prompt_meta_and_card(trained, tiny_chat_model):
    out = trained.output_dir
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
            PROMPT_META_FILE, "training_card.json", "README.md"} <= names
    assert not any(n.endswith((".bin", ".pt")) for n in names)
    meta = json.loads((out / PROMPT_META_FILE).read_text())
    assert meta["prompt_format_version"] == PROMPT_FORMAT_VERSION and meta["base_model"] == str(tiny_chat_model)
    card = json.loads((out / "training_card.json").read_text())
    assert card["base_model"] == str(tiny_chat_model) and card["prompt_format_version"] == PROMPT_FORMAT_VERSION
    assert len(card["dataset"]["sha256"]) == 64 and card["dataset"]["train"] == 5 and card["dataset"]["eval"] == 1
    assert card["hyperparameters"]["lora_r"] == 8 and card["hyperparameters"]["effective_batch"] == 8
    assert card["results"]["global_step"] == 10
    assert card["results"]["train_loss"] > 0 and card["results"]["eval_loss"] > 0
    readme = (out / "README.md").read_text()
    assert str(tiny_chat_model) in readme and PROMPT_FORMAT_VERSION in readme
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_chat_model)


def test_adapter_loads_in_serving_and_changes_the_answer(trained, tiny_chat_model):
    from rag.generate import Generator
    from rag.request import AskRequest

    env = {"RAG_LLM": str(tiny_chat_model), "RAG_DEVICE": "cpu"}
    base = Generator.load(Settings.from_env(env))
    tuned = Generator.load(Settings.from_env({**env, "RAG_ADAPTER": str(trained.output_dir)}))
    prompt = trained.prepared.train[0]["prompt"]
    req = AskRequest(question="x", max_new_tokens=8).validate(Settings())
    assert tuned.stream(prompt, req).read() != base.stream(prompt, req).read()


def test_serving_loads_the_base_and_tokenizer_exactly_as_training_did(trained, tiny_chat_model):
    from rag.generate import Generator
    from rag.modeling import tokenizer_settings

    settings = Settings(llm=str(tiny_chat_model), device="cpu")
    bare = Generator.load(settings)
    tuned = Generator.load(settings.with_(adapter=str(trained.output_dir)))  # its tokenizer: the one training saved
    trained_tok = trained.trainer.processing_class
    assert tokenizer_settings(trained_tok) == tokenizer_settings(bare.tokenizer) == tokenizer_settings(tuned.tokenizer)
    base_params = [p for n, p in trained.trainer.model.named_parameters() if "lora_" not in n]
    assert {p.dtype for p in base_params} == {bare.model.dtype} == {torch.float32}
    assert trained.card["hyperparameters"]["compute_dtype"] == "float32"


def test_training_refuses_pickle_weights_as_serving_does(tiny_pickle_model, dataset_file, tmp_path, no_model_loads):
    with pytest.raises(ModelError, match="--base-model=.*pickle weights") as e:
        main(args_for(tiny_pickle_model, dataset_file, tmp_path / "o"), settings=Settings())
    assert e.value.code == "pickle_weights"


def test_serving_refuses_a_prompt_format_or_base_mismatch(trained, tmp_path):
    from rag.generate import Generator

    old = tmp_path / "old_format"
    shutil.copytree(trained.output_dir, old, ignore=shutil.ignore_patterns("checkpoints"))
    meta = json.loads((old / PROMPT_META_FILE).read_text())
    (old / PROMPT_META_FILE).write_text(json.dumps({**meta, "prompt_format_version": "vnreg-0"}))
    base = meta["base_model"]
    with pytest.raises(ModelError, match="vnreg-0") as e:
        Generator.load(Settings(llm=base, adapter=str(old), device="cpu"))
    assert e.value.code == "prompt_format_mismatch"

    other_tok = make_tokenizer(CHATML)
    other = save_model(tmp_path / "other_base", other_tok, make_model(other_tok, hidden=32))
    with pytest.raises(ModelError, match="trained for base") as e:
        Generator.load(Settings(llm=str(other), adapter=str(trained.output_dir), device="cpu"))
    assert e.value.code == "adapter_mismatch" and base in str(e.value)


def test_merged_model_equals_base_plus_adapter(trained, tiny_chat_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # A base with a custom code file, as trust_remote_code models (PhoGPT) have.
    base = tmp_path / "base"
    shutil.copytree(tiny_chat_model, base)
    (base / "modeling_custom.py").write_text("# custom modelling code\n")
    out = tmp_path / "merged"
    res = merge_adapter.main(merge_adapter.MergeArgs(adapter=str(trained.output_dir), output=str(out),
                                                     base=str(base), trust_remote_code=True, device="cpu"))
    assert res.dtype == "fp32" and res.max_abs_diff < 1e-4 and res.argmax_agreement == 1.0
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "tokenizer.json", PROMPT_META_FILE, "modeling_custom.py"} <= names
    assert not any(n.endswith(".bin") for n in names)

    ids = torch.tensor([trained.prepared.train[0]["input_ids"]])
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_chat_model), str(trained.output_dir))
    merged = AutoModelForCausalLM.from_pretrained(out)
    plain = AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    with torch.no_grad():
        a, b, c = peft(input_ids=ids).logits, merged(input_ids=ids).logits, plain(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert (a - c).abs().max() > 1e-3  # and the adapter did change something


def test_merge_refuses_bad_options_before_loading(trained, tmp_path, monkeypatch, no_model_loads):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "x").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        merge_adapter.main(merge_adapter.MergeArgs(adapter=str(trained.output_dir), output=str(occupied)))
    with pytest.raises(ConfigError, match="4-bit"):
        merge_adapter.main(merge_adapter.MergeArgs(adapter=str(trained.output_dir), output=str(tmp_path / "m"),
                                                   dtype="int4"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="HF_TOKEN"):
        merge_adapter.main(merge_adapter.MergeArgs(adapter=str(trained.output_dir), output=str(tmp_path / "m"),
                                                   push_to_hub="me/model"))


@pytest.fixture
def merge_inputs(tiny_adapter, tiny_chat_model, tmp_path):
    """(adapter, base): copies in tmp_path, laid out as people keep them (proj/adapter, models/base); the
    adapter names the copied base and carries a rag_prompt.json, which the merged model must get."""
    base = shutil.copytree(tiny_chat_model, tmp_path / "models" / "base")
    adapter = shutil.copytree(tiny_adapter, tmp_path / "proj" / "adapter")
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": str(base)}))
    (adapter / PROMPT_META_FILE).write_text(json.dumps({"prompt_format_version": PROMPT_FORMAT_VERSION,
                                                        "base_model": str(base)}))
    return adapter, base


def tree(d: Path) -> dict[str, bytes]:
    return {str(f.relative_to(d)): f.read_bytes() for f in sorted(d.rglob("*")) if f.is_file()}


@pytest.mark.parametrize("output, base, said", [
    ("proj/adapter", None, "is --adapter"),
    ("proj", None, "contains --adapter"),
    (".", None, "contains --adapter"),
    ("models/base", "models/base", "is --base"),
    ("models", None, "contains the adapter's base model"),
])
def test_merge_refuses_an_output_that_is_or_holds_its_adapter_or_base(output, base, said, merge_inputs, tmp_path,
                                                                      no_model_loads):
    """--overwrite replaces --output as a whole: an adapter or base inside it would be deleted before the merge."""
    adapter, base_dir = merge_inputs
    before = {d: tree(d) for d in (adapter, base_dir)}
    args = merge_adapter.MergeArgs(adapter=str(adapter), output=str(tmp_path / output),
                                   base=str(tmp_path / base) if base else None, overwrite=True, device="cpu")
    with pytest.raises(ConfigError, match=f"--output .* {said} .*Choose an --output outside it") as e:
        merge_adapter.main(args, settings=Settings())
    assert e.value.code == "output_overlaps_input"
    assert {d: tree(d) for d in (adapter, base_dir)} == before


def test_a_failed_merge_leaves_the_output_as_it_was(merge_inputs, tmp_path):
    """The merge is written beside --output and moved there only once checked: a failure leaves no model to serve."""
    adapter, base = merge_inputs
    out = tmp_path / "merged"
    args = merge_adapter.MergeArgs(adapter=str(adapter), output=str(out), tolerance=0.0, overwrite=True, device="cpu")
    with pytest.raises(merge_adapter.MergeError, match="not written to") as e:
        merge_adapter.main(args, settings=Settings())
    assert e.value.code == "merge_failed" and not out.exists()
    # The merge ran in fp32 (a CPU): the hint is not "merge in fp32" but the tolerance, which was below rounding.
    assert "--dtype fp32" not in str(e.value) and "within fp32 rounding" in str(e.value)

    out.mkdir()
    (out / "model.safetensors").write_bytes(b"an earlier merged model")
    with pytest.raises(merge_adapter.MergeError):
        merge_adapter.main(args, settings=Settings())
    assert tree(out) == {"model.safetensors": b"an earlier merged model"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "models", "proj"]  # no staging left behind

    # A merge that passes its check replaces the earlier one, with nothing of it or of the staging left over.
    res = merge_adapter.main(merge_adapter.MergeArgs(adapter=str(adapter), output=str(out), overwrite=True,
                                                     device="cpu"), settings=Settings())
    assert res.output == out and res.max_abs_diff < 1e-4
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "tokenizer.json", PROMPT_META_FILE, "merge_info.json"} <= names
    assert (out / "model.safetensors").read_bytes() != b"an earlier merged model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "models", "proj"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # as mkdir makes it: a server's user can read it


def test_a_merge_that_breaks_midway_leaves_the_output_as_it_was(merge_inputs, tmp_path, monkeypatch):
    adapter, base = merge_inputs
    out = tmp_path / "merged"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"an earlier merged model")
    real = merge_adapter.modeling.load_base

    def reload_fails(ref, options, var="RAG_LLM"):
        if var == "--output":  # the check's reload of what was written: the disk filled up, say
            raise ModelError("could not load --output", code="model_load_failed")
        return real(ref, options, var)

    monkeypatch.setattr(merge_adapter.modeling, "load_base", reload_fails)
    with pytest.raises(ModelError, match="could not load --output"):
        merge_adapter.main(merge_adapter.MergeArgs(adapter=str(adapter), output=str(out), overwrite=True,
                                                   device="cpu"), settings=Settings())
    assert tree(out) == {"model.safetensors": b"an earlier merged model"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "models", "proj"]


@pytest.mark.parametrize("dtype, diff, tolerance, hint", [
    ("bf16", 3.0, None, "Merge in fp32 (--dtype fp32)"),
    ("fp16", 0.2, 0.1, "within fp16 rounding"),
    ("fp32", 0.5, None, "fp32 rounding does not explain it"),
    ("fp32", 1e-6, 0.0, "within fp32 rounding"),
])
def test_a_failed_check_suggests_what_fits_the_dtype_used(dtype, diff, tolerance, hint):
    text = merge_adapter.failed_check_hint(diff, dtype, tolerance)
    assert hint in text
    assert ("--dtype fp32" in text) == (hint == "Merge in fp32 (--dtype fp32)")


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint_step(tiny_chat_model, dataset_file, tmp_path):
    from transformers import TrainerCallback

    class Crash(Exception):
        pass

    class CrashAt3(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise Crash

    class Steps(TrainerCallback):
        def __init__(self):
            self.steps = []

        def on_step_end(self, args, state, control, **kw):
            self.steps.append(state.global_step)

    out = tmp_path / "adapter"
    kw = dict(max_steps=4, eval_steps=2, eval_fraction=0.0, gradient_checkpointing=False)
    with pytest.raises(Crash):
        main(args_for(tiny_chat_model, dataset_file, out, **kw), callbacks=[CrashAt3()])
    assert (out / "checkpoints" / "checkpoint-2").is_dir() and not (out / "adapter_config.json").exists()
    with pytest.raises(ConfigError, match="--resume"):  # a restart must say resume or overwrite
        validate_args(args_for(tiny_chat_model, dataset_file, out, **kw))
    # a checkpoint the run was killed while saving (no trainer_state.json, written last) is passed over
    (out / "checkpoints" / "checkpoint-3").mkdir()
    (out / "checkpoints" / "checkpoint-3" / "adapter_config.json").write_text("{}")
    # a checkpoint continues only the LoRA shape that made it (torch's size mismatch otherwise)
    with pytest.raises(ConfigError, match=r"--lora-r 8 \(now 4\)") as e:
        main(args_for(tiny_chat_model, dataset_file, out, resume="last", **{**kw, "lora_r": 4}))
    assert e.value.code == "resume_mismatch"
    steps = Steps()
    res = main(args_for(tiny_chat_model, dataset_file, out, resume="last", **kw), callbacks=[steps])
    assert steps.steps == [3, 4]
    assert res.card["results"]["resumed_from"] == "checkpoint-2" and res.card["results"]["global_step"] == 4
    assert (out / "adapter_config.json").exists()


def test_overwrite_keeps_the_earlier_adapter_until_the_new_one_is_written(trained, tiny_chat_model, dataset_file,
                                                                          tmp_path, capsys):
    """--overwrite replaces an adapter only once the new one is written: a bad option found after loading, a crash,
    a NaN loss give the earlier adapter, card and checkpoints back; Ctrl-C keeps them aside in OUT/previous."""
    import shutil

    from transformers import TrainerCallback

    class Crash(Exception):
        pass

    class CrashAt1(TrainerCallback):
        def __init__(self, exc):
            self.exc = exc

        def on_step_end(self, args, state, control, **kw):
            raise self.exc

    out = tmp_path / "adapter"
    shutil.copytree(trained.output_dir, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert Path("adapter_model.safetensors") in before and any(p.parts[0] == "checkpoints" for p in before)

    def unchanged():
        now = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        return {k: v for k, v in now.items() if k in before or k.parts[0] == "previous"} == before

    kw = dict(overwrite=True, max_steps=2, eval_fraction=0.0, gradient_checkpointing=False)
    with pytest.raises(ConfigError, match="--target-modules nope: no such layer.*q_proj"):
        main(args_for(tiny_chat_model, dataset_file, out, target_modules="q_proj,nope", **kw))
    assert unchanged()
    with pytest.raises(Crash):
        main(args_for(tiny_chat_model, dataset_file, out, **kw), callbacks=[CrashAt1(Crash())])
    assert unchanged() and not (out / "previous").exists()
    with pytest.raises(TrainingError, match="became nan"):
        main(args_for(tiny_chat_model, dataset_file, out, learning_rate=1e30, **kw))
    assert unchanged() and not (out / "previous").exists()

    with pytest.raises(KeyboardInterrupt):  # Ctrl-C before the first checkpoint
        main(args_for(tiny_chat_model, dataset_file, out, **kw), callbacks=[CrashAt1(KeyboardInterrupt())])
    err = capsys.readouterr().err
    assert "no checkpoint was saved yet" in err and f"kept in {out / 'previous'}" in err
    assert (out / "previous" / "adapter_model.safetensors").read_bytes() == before[Path("adapter_model.safetensors")]
    with pytest.raises(ConfigError, match="previous' holds the adapter an earlier --overwrite run set aside") as e:
        main(args_for(tiny_chat_model, dataset_file, out, **kw))  # a second --overwrite would set aside nothing
    assert e.value.code == "output_exists"
    shutil.rmtree(out / "previous")

    res = main(args_for(tiny_chat_model, dataset_file, out, **kw))
    assert res.card["results"]["global_step"] == 2 and not (out / "previous").exists()
    assert (out / "adapter_model.safetensors").read_bytes() != before[Path("adapter_model.safetensors")]


def test_interrupted_cli_exits_130_without_a_traceback(capsys):
    from training import run_cli

    def interrupted():
        raise KeyboardInterrupt

    assert run_cli(interrupted) == 130 and "Traceback" not in capsys.readouterr().err


@pytest.mark.slow
def test_nan_loss_stops_the_run_with_a_message(tiny_chat_model, dataset_file, tmp_path):
    out = tmp_path / "adapter"
    with pytest.raises(TrainingError, match="became nan") as e:
        main(args_for(tiny_chat_model, dataset_file, out, learning_rate=1e30, max_steps=4, eval_fraction=0.0,
                      gradient_checkpointing=False))
    assert e.value.code == "loss_nan" and "--learning-rate" in str(e.value)
    assert not (out / "adapter_config.json").exists()


def test_nan_callback_stops_on_a_nan_log():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    cb = nan_callback()
    state, control = TrainerState(), TrainerControl()
    state.global_step = 7
    args = TrainingArguments(output_dir="unused", learning_rate=3e-4, report_to="none", use_cpu=True)
    cb.on_log(args, state, control, logs={"loss": 1.5, "grad_norm": 0.4})
    assert not control.should_training_stop and cb.message is None
    cb.on_log(args, state, control, logs={"loss": float("nan")})
    assert control.should_training_stop and not control.should_save
    assert "step 7" in cb.message and "--learning-rate" in cb.message


@pytest.mark.slow
def test_4bit_training_on_cpu_with_bitsandbytes(tiny_chat_model, dataset_file, tmp_path):
    ok, why = train_qlora.bitsandbytes_status()
    if not ok:
        pytest.skip(f"bitsandbytes cannot load here: {why}")
    res = main(args_for(tiny_chat_model, dataset_file, tmp_path / "a", load_in_4bit=True, max_steps=2,
                        eval_fraction=0.0, gradient_checkpointing=False))
    assert res.card["hyperparameters"]["quantization"].startswith("4-bit NF4")
    assert (tmp_path / "a" / "adapter_model.safetensors").exists()


# --------------------------------------------------------------------------- bad input, before any model loads


def test_missing_and_empty_dataset(tiny_chat_model, tmp_path, no_model_loads):
    with pytest.raises(DatasetError, match="does not exist") as e:
        main(args_for(tiny_chat_model, tmp_path / "nope.jsonl", tmp_path / "o"))
    assert "nope.jsonl" in str(e.value) and e.value.code == "dataset_missing"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(DatasetError, match="is empty") as e:
        main(args_for(tiny_chat_model, empty, tmp_path / "o"))
    assert e.value.code == "dataset_empty"


def test_malformed_json_line_names_file_and_line(tiny_chat_model, tmp_path, no_model_loads):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[1], ensure_ascii=False) + '\n{"question": "a", "answer": \n')
    with pytest.raises(DatasetError) as e:
        main(args_for(tiny_chat_model, bad, tmp_path / "o"))
    assert f"{bad}:2: not valid JSON" in str(e.value)


def test_rows_missing_fields_are_all_reported(tiny_chat_model, tmp_path, no_model_loads):
    rows = [{"instruction": "Hỏi?", "input": ""}, ROWS[1], {"question": "Hỏi?", "answer": ""},
            {"messages": [{"role": "user", "content": "Hỏi?"}]}, {"text": "?"}, [1, 2]]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    with pytest.raises(DatasetError) as e:
        main(args_for(tiny_chat_model, data, tmp_path / "o"))
    msg = str(e.value)
    assert msg.startswith("5 problem(s)")
    assert f"{data}:1: field 'output' is missing" in msg
    assert f"{data}:3: field 'answer' is empty" in msg
    assert f"{data}:4: the last message must be the assistant's answer" in msg
    assert f"{data}:5: unknown row shape" in msg and f"{data}:6: expected a JSON object" in msg


def test_a_list_row_and_a_row_of_two_shapes_are_named_by_line(tiny_chat_model, tmp_path, no_model_loads):
    data = tmp_path / "mixed.jsonl"
    data.write_text('["a", "b"]\n' + json.dumps(ROWS[1], ensure_ascii=False) + "\n" + json.dumps(
        {**next(r for r in ROWS if "messages" in r), "instruction": "Hỏi?", "input": "Ngữ cảnh bị bỏ qua",
         "output": "Đáp."}, ensure_ascii=False) + "\n",
        encoding="utf-8")
    with pytest.raises(DatasetError) as e:
        read_dataset([data])
    msg = str(e.value)
    assert f"{data}:1: expected a JSON object, got list" in msg and "JSON array" not in msg
    assert f"{data}:3: the row mixes two shapes: chat (messages) and Alpaca (instruction, output)" in msg
    array = tmp_path / "array.json"  # a JSON array written over several lines is still told to become JSONL
    array.write_text(json.dumps(ROWS[:2], ensure_ascii=False, indent=2), encoding="utf-8")
    with pytest.raises(DatasetError, match="looks like a JSON array"):
        read_dataset([array])


def test_data_report_checks_its_options_and_caps_the_length_as_training_does(tiny_chat_model, dataset_file, tmp_path,
                                                                            capsys):
    from training.data import main as data_main

    (tmp_path / "afile").write_text("x")
    for bad, text in ((["--eval-fraction", "5"], "--eval-fraction must be between 0 and 0.5"),
                      (["--eval-fraction", "-0.1"], "--eval-fraction must be between 0 and 0.5"),
                      (["--out", str(tmp_path / "afile")], "afile' is a file")):
        argv = [str(dataset_file), "--tokenizer", str(tiny_chat_model), "--out", str(tmp_path / "p"), *bad]
        assert data_main(argv) == 2
        err = capsys.readouterr().err
        assert text in err and "Traceback" not in err
    assert data_main([str(dataset_file), "--tokenizer", str(tiny_chat_model), "--out", str(tmp_path / "p"),
                      "--max-length", "1000000000"]) == 0
    limit = json.loads((Path(tiny_chat_model) / "config.json").read_text())["max_position_embeddings"]
    assert f"using {limit}" in capsys.readouterr().out
    assert json.loads((tmp_path / "p" / "stats.json").read_text())["max_length"] == limit


def test_rows_without_context_need_an_index(tiny_chat_model, tmp_path, no_model_loads):
    data = write_jsonl(tmp_path / "qa.jsonl", [ROWS[1], {"question": "Hỏi?", "answer": "Đáp."}])
    with pytest.raises(DatasetError, match="--index-dir") as e:
        main(args_for(tiny_chat_model, data, tmp_path / "o"))
    assert f"{data}:2" in str(e.value) and e.value.code == "index_required"


def test_output_dir_with_an_adapter_needs_overwrite(trained, tiny_chat_model, dataset_file, no_model_loads):
    with pytest.raises(ConfigError, match="--overwrite") as e:
        main(args_for(tiny_chat_model, dataset_file, trained.output_dir))
    assert e.value.code == "output_exists"
    validate_args(args_for(tiny_chat_model, dataset_file, trained.output_dir, overwrite=True))  # accepted
    with pytest.raises(ConfigError, match="--overwrite") as e:  # the dry run is the pre-flight: it says so too
        main(args_for(tiny_chat_model, dataset_file, trained.output_dir, dry_run=True))
    with pytest.raises(ConfigError, match="pass --overwrite as well to continue training"):
        main(args_for(tiny_chat_model, dataset_file, trained.output_dir, resume="last"))


@pytest.mark.parametrize("change, code, text", [
    (dict(load_in_4bit=True, load_in_8bit=True), "conflicting_options", "choose one"),
    (dict(lora_r=0), "bad_config", "--lora-r must be a positive integer"),
    (dict(lora_r=-4), "bad_config", "got -4"),
    (dict(learning_rate=float("nan")), "bad_config", "--learning-rate"),
    (dict(optim="bogus"), "bad_config", "--optim 'bogus' is not an optimizer transformers knows"),
    (dict(lr_scheduler_type="bogus"), "bad_config", "--lr-scheduler-type 'bogus'.*cosine"),
    (dict(num_train_epochs=float("inf"), max_steps=-1), "bad_config", "--num-train-epochs must be a finite"),
    (dict(max_grad_norm=float("nan")), "bad_config", "--max-grad-norm"),
    (dict(max_grad_norm=-1.0), "bad_config", "--max-grad-norm"),
    (dict(weight_decay=float("nan")), "bad_config", "--weight-decay"),
])
def test_conflicting_or_invalid_options(change, code, text, tiny_chat_model, dataset_file, tmp_path,
                                        no_model_loads):
    with pytest.raises(ConfigError, match=text) as e:
        main(args_for(tiny_chat_model, dataset_file, tmp_path / "o", **change))
    assert e.value.code == code


def test_4bit_where_bitsandbytes_cannot_load(tiny_chat_model, dataset_file, tmp_path, monkeypatch, no_model_loads):
    monkeypatch.setattr(train_qlora, "bitsandbytes_status", lambda: (False, "simulated: no CUDA libraries"))
    with pytest.raises(ConfigError, match="bitsandbytes, which cannot load here") as e:
        main(args_for(tiny_chat_model, dataset_file, tmp_path / "o", load_in_4bit=True))
    assert e.value.code == "bitsandbytes_unavailable" and "--no-load-in-4bit" in str(e.value)
    validate_args(args_for(tiny_chat_model, dataset_file, tmp_path / "o"))  # CPU default: no 4-bit, no error


def test_output_dir_under_a_file_is_refused_before_loading(tiny_chat_model, dataset_file, tmp_path, no_model_loads):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="afile' is a file"):
        main(args_for(tiny_chat_model, dataset_file, tmp_path / "afile" / "sub", dry_run=True))


def test_cli_lists_every_dataset_problem_one_per_line(tiny_chat_model, tmp_path, capsys, no_model_loads):
    folder = tmp_path / ("a-rather-long-folder-name-" * 4)  # each line names it: the old 1000-character cut hid most
    folder.mkdir()
    data = write_jsonl(folder / "rows.jsonl", [{"question": f"q{i}?"} for i in range(30)])
    code = train_qlora.cli(["--base-model", str(tiny_chat_model), "--dataset", str(data), "--output-dir",
                            str(tmp_path / "o"), "--device", "cpu", "--dry-run"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and lines[0].startswith("error [") and "30 problem(s)" in lines[0]
    assert sum(f"{data}:" in line for line in lines) >= 20 and "more" in lines[-1]


def test_cli_prints_the_error_and_exits_2(tmp_path, capsys, no_model_loads):
    code = train_qlora.cli(["--base-model", "x/y", "--dataset", str(tmp_path / "none.jsonl"),
                            "--output-dir", str(tmp_path / "o"), "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error [dataset_missing]") and "none.jsonl" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- Replicate trainings


def test_cog_sees_the_train_signature():
    pytest.importorskip("cog")
    from cog._inspector import create_predictor

    info = create_predictor("training.replicate_train", "train")
    assert {"train_data", "base_model", "num_train_epochs", "learning_rate", "lora_r", "hf_token"} <= set(info.inputs)
    assert info.output.json_type()["properties"] == {"weights": {"type": "string", "format": "uri",
                                                                 "title": "Weights"}}


def test_replicate_train_refuses_a_base_other_than_rag_llm(tmp_path, monkeypatch, no_model_loads, dataset_file):
    from training.replicate_train import TrainingFailed, train

    monkeypatch.setenv("RAG_LLM", "Qwen/Qwen2.5-7B-Instruct")
    with pytest.raises(TrainingFailed, match=r"^\[adapter_mismatch\] base_model='vinai/PhoGPT-4B-Chat'"):
        train(train_data=dataset_file, base_model="vinai/PhoGPT-4B-Chat")


def test_replicate_train_refuses_before_training_when_the_image_serves_no_llm(monkeypatch, no_model_loads,
                                                                           dataset_file):
    """A trained version serves with the same cog.yaml: without RAG_LLM its setup would fail after a paid training."""
    from training.replicate_train import TrainingFailed, train

    monkeypatch.delenv("RAG_LLM", raising=False)
    with pytest.raises(TrainingFailed, match=r"^\[bad_config\] RAG_LLM is not set .*RAG_LLM: vinai/PhoGPT-4B-Chat"):
        train(train_data=dataset_file, base_model="vinai/PhoGPT-4B-Chat")


def test_replicate_train_error_shows_the_caller_no_server_path(tmp_path, monkeypatch, no_model_loads):
    """Replicate shows a training's error to whoever called it: the reason and the line, not where the file lay."""
    from training.replicate_train import TrainingFailed, train

    monkeypatch.setenv("RAG_LLM", "vinai/PhoGPT-4B-Chat")
    bad = tmp_path / "uploads" / "train.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"instruction": "Học phí?", "output": "Theo Điều 9."}\n{not json\n', encoding="utf-8")
    with pytest.raises(TrainingFailed) as err:
        train(train_data=bad, base_model="vinai/PhoGPT-4B-Chat")
    assert str(err.value).startswith("[") and "2" in str(err.value)
    assert str(tmp_path) not in str(err.value) and "/uploads/" not in str(err.value)


def test_a_failed_replicate_training_leaves_nothing_in_tmp(tmp_path, monkeypatch, no_model_loads):
    """The work directory (here with an unpacked index in it) is removed when the training fails."""
    import tempfile

    from training.replicate_train import TrainingFailed, train

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("RAG_LLM", "vinai/PhoGPT-4B-Chat")
    index = tmp_path / "index"
    index.mkdir()
    (index / "manifest.json").write_text("{}")
    with tarfile.open(tmp_path / "index.tar.gz", "w:gz") as tar:
        tar.add(index / "manifest.json", arcname="manifest.json")
    bad = write_jsonl(tmp_path / "train.jsonl", [{"instruction": "Học phí?"}])  # no output: refused
    with pytest.raises(TrainingFailed):
        train(train_data=bad, base_model="vinai/PhoGPT-4B-Chat", index=tmp_path / "index.tar.gz")
    assert list(scratch.iterdir()) == []


@pytest.mark.slow
def test_replicate_train_returns_an_adapter_tarball(tiny_chat_model, dataset_file, tmp_path, monkeypatch):
    from rag.weights import ADAPTER_MARKER, unpack_tarball
    from training.replicate_train import train

    monkeypatch.setenv("RAG_LLM", str(tiny_chat_model))
    monkeypatch.delenv("RAG_INDEX_DIR", raising=False)
    out = train(train_data=dataset_file, max_steps=2, max_length=1024, per_device_train_batch_size=8,
                gradient_accumulation_steps=1, eval_fraction=0.0, load_in_4bit=False)
    assert Path(out.weights).name.endswith(".tar.gz")
    with tarfile.open(out.weights) as tar:
        names = set(tar.getnames())
    assert {"adapter_config.json", "adapter_model.safetensors", PROMPT_META_FILE, "training_card.json"} <= names
    assert not any("checkpoint" in n for n in names)
    root = unpack_tarball(Path(out.weights), tmp_path / "unpacked", marker=ADAPTER_MARKER, what="weights")
    assert (root / "adapter_config.json").exists()
    # Only the tarball, which Cog uploads once train returns, is left of the training's work directory.
    work = Path(out.weights).parent
    assert work.name.startswith("rag-train-") and list(work.iterdir()) == [Path(out.weights)]
    shutil.rmtree(work)
