"""The pipeline with a (tiny, random) LLM: streaming, the relevance gate, citation checking, budgets."""

from __future__ import annotations

import threading

import pytest
from _models import tiny_adapter, tiny_chat_model, tiny_models  # noqa: F401 - fixtures

from rag.errors import ConfigError
from rag.pipeline import Delta, Final, Pipeline, cite
from rag.request import AskRequest
from rag.texts import REFUSAL


class RecordingGenerator:
    """Wraps the real Generator and records every prompt it is given."""

    def __init__(self, inner):
        self.inner = inner
        self.prompts: list[str] = []
        self.adapters: list = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def stream(self, prompt_text, request, cancel=None, adapter=None):
        self.prompts.append(prompt_text)
        self.adapters.append(adapter)
        return self.inner.stream(prompt_text, request, cancel=cancel, adapter=adapter)


@pytest.fixture(scope="module")
def llm_pipeline(demo_index_dir, embedder, settings_factory, tiny_chat_model):
    from rag.generate import Generator

    s = settings_factory(demo_index_dir, llm=str(tiny_chat_model), context_tokens=1024)
    gen = RecordingGenerator(Generator.load(s))
    return Pipeline.from_settings(s, embedder=embedder, generator=gen)


def test_stream_deltas_concatenate_to_final_answer(llm_pipeline):
    events = list(llm_pipeline.stream({"question": "Điều kiện xét học bổng khuyến khích là gì?",
                                       "max_new_tokens": 24, "seed": 3}))
    deltas = [e.text for e in events if isinstance(e, Delta)]
    assert isinstance(events[-1], Final) and len(deltas) >= 2
    final = events[-1].answer
    assert "".join(deltas).strip() == final.text
    assert final.mode == "llm" and final.usage["completion_tokens"] > 0 and final.usage["prompt_tokens"] > 50
    assert {"retrieve_ms", "first_token_ms", "total_ms"} <= set(final.timings)
    prompt = llm_pipeline.generator.prompts[-1]
    assert "Quy định về học bổng khuyến khích học tập" in prompt  # the retrieved passages are in the prompt


def test_relevance_gate_refuses_without_calling_the_llm(llm_pipeline):
    before = len(llm_pipeline.generator.prompts)
    ans = llm_pipeline.answer({"question": "Công thức nấu phở bò ngon nhất là gì?"})
    assert ans.refused and ans.text.startswith(REFUSAL) and ans.citations == []
    assert len(llm_pipeline.generator.prompts) == before


def test_citations_only_of_retrieved_passages(llm_pipeline):
    retrieval = llm_pipeline.retriever.search("Sinh viên bị cảnh báo học tập khi nào?", 3)
    used = retrieval.hits
    named = used[0].chunk.article
    text = f"Theo Điều {named} thì có. Ngoài ra Điều 99 cũng quy định như vậy."
    citations, unsupported = cite(text, used)
    assert citations and all(c.article == named for c in citations)
    assert unsupported == ["Điều 99"]
    # No Điều named: the passages the model was given are the sources.
    citations, unsupported = cite("Có, theo quy chế.", used)
    assert [c.article for c in citations] == [h.chunk.article for h in used] and unsupported == []


def test_small_context_drops_lowest_ranked_passages_and_reports_them(demo_index_dir, embedder, settings_factory,
                                                                     tiny_chat_model):
    from rag.generate import Generator

    s = settings_factory(demo_index_dir, llm=str(tiny_chat_model), context_tokens=900)
    pipe = Pipeline.from_settings(s, embedder=embedder, generator=Generator.load(s))
    ans = pipe.answer({"question": "Sinh viên bị cảnh báo học tập khi nào?", "top_k": 8, "max_new_tokens": 8})
    assert ans.dropped_passages, "an 900-token context cannot hold eight passages"
    ranked = [h.chunk.id for h in ans.hits]
    # What was dropped is the tail of the ranking, never the best passage.
    assert ranked[0] not in ans.dropped_passages
    assert set(ans.dropped_passages) == set(ranked[len(ranked) - len(ans.dropped_passages):])


def test_cancel_stops_a_stream(llm_pipeline):
    cancel = threading.Event()
    stream = llm_pipeline.stream({"question": "Điều kiện tốt nghiệp là gì?", "max_new_tokens": 400,
                                  "temperature": 1.0, "seed": 1}, cancel=cancel)
    first = next(e for e in stream if isinstance(e, Delta))
    cancel.set()
    rest = list(stream)
    final = rest[-1].answer
    assert first.text and final.finish_reason == "cancelled"
    assert final.usage["completion_tokens"] < 400


def test_a_request_adapter_reaches_the_generator_and_changes_the_answer(llm_pipeline, tiny_adapter):
    q = {"question": "Điều kiện xét học bổng khuyến khích là gì?", "max_new_tokens": 16}
    base = llm_pipeline.answer(q)
    tuned = llm_pipeline.answer(q, adapter=str(tiny_adapter))
    assert llm_pipeline.generator.adapters[-1] == str(tiny_adapter)
    assert tuned.mode == "llm" and tuned.text != base.text
    assert llm_pipeline.answer(q).text == base.text  # the next request without one gets the base again
    assert llm_pipeline.generator.adapters[-1] is None


def test_a_request_adapter_needs_an_llm(demo_pipeline, tiny_adapter):
    with pytest.raises(ConfigError, match="needs an LLM"):
        demo_pipeline.answer({"question": "Điều kiện tốt nghiệp là gì?"}, adapter=str(tiny_adapter))


def test_follow_up_borrows_the_previous_question_but_off_topic_is_refused(demo_pipeline):
    history = [{"role": "user", "content": "Một học kỳ chính được đăng ký tối đa bao nhiêu tín chỉ?"},
               {"role": "assistant", "content": "Theo Điều 8, tối đa 24 tín chỉ."}]
    follow = demo_pipeline.answer({"question": "Còn học kỳ hè thì sao?", "history": history})
    assert not follow.refused
    assert "Điều 8" in follow.text or "Điều 9" in follow.text  # the registration articles, found via the history
    off = demo_pipeline.answer({"question": "Tỉ giá đô la hôm nay?", "history": history})
    assert off.refused and off.citations == []
    # The bug this guards against: an off-topic follow-up used to pass the gate on the previous question's words.
    retrieval = demo_pipeline._retrieve(AskRequest.from_dict({"question": "Tỉ giá đô la hôm nay?", "history": history},
                                                             demo_pipeline.settings))
    assert retrieval.refused and demo_pipeline.retriever.unknown_words("Tỉ giá đô la hôm nay?")


def test_follow_up_is_rewritten_by_the_llm_then_searched(llm_pipeline):
    """With an LLM, a follow-up is first rewritten by it (the rewrite prompt, no passages); whatever it writes,
    the answer records the query that was searched, and an unusable rewrite falls back to the rule."""
    from rag.prompt import REWRITE_SYSTEM_PROMPT

    history = [{"role": "user", "content": "Học kỳ chính em được đăng ký tối đa bao nhiêu tín chỉ?"},
               {"role": "assistant", "content": "Tối đa 24 tín chỉ."}]
    before = len(llm_pipeline.generator.prompts)
    ans = llm_pipeline.answer({"question": "Còn học kỳ hè thì sao?", "history": history, "max_new_tokens": 8,
                               "seed": 1})
    prompts = llm_pipeline.generator.prompts[before:]
    assert REWRITE_SYSTEM_PROMPT[:40] in prompts[0] and "<tài_liệu" not in prompts[0]
    assert ans.query and ans.query != "Còn học kỳ hè thì sao?"


def test_a_question_typed_without_marks_is_told_to_type_them(demo_pipeline):
    from rag.texts import REFUSAL_REASONS

    bare = demo_pipeline.answer({"question": "Hoc phi hoc lai tinh the nao?"})
    assert bare.refused and REFUSAL_REASONS["no_diacritics"] in bare.text
    english = demo_pipeline.answer({"question": "What is the exchange rate of the dollar today?"})
    assert english.refused and REFUSAL_REASONS["no_diacritics"] not in english.text
    assert not demo_pipeline.answer({"question": "Học phí học lại tính thế nào?"}).refused
