"""The one request type: every entry point relies on these limits and messages."""

import math

import pytest

from rag.config import Settings
from rag.errors import ConfigError, InputError
from rag.request import AskRequest

S = Settings()


def make(**kw):
    return AskRequest.from_dict({"question": "Điều kiện tốt nghiệp là gì?", **kw}, S)


def test_defaults_and_trimming():
    r = AskRequest.from_dict({"question": "  Học bổng  "}, S)
    assert r.question == "Học bổng" and r.top_k == 5 and r.temperature == 0.0 and r.stop == []


@pytest.mark.parametrize(
    "fields, needle",
    [
        ({"question": ""}, "empty"),
        ({"question": "   \n\t"}, "empty"),
        ({"question": "x" * 2001}, "limit is 2000"),
        ({"question": 42}, "must be a string"),
        ({"top_k": 0}, "'top_k'=0 is out of range"),
        ({"top_k": 21}, "allowed 1 to 20"),
        ({"top_k": 2.5}, "integer"),
        ({"top_k": True}, "integer"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 5000}, "allowed 1 to 2048"),
        ({"temperature": math.nan}, "finite"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": -0.1}, "'top_p'=-0.1 is out of range"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4"),
        ({"stop": [""]}, "non-empty"),
        ({"stop": 3}, "list of strings"),
        ({"seed": -1}, "seed"),
        ({"question": "Học bổng\x00?"}, "'question' contains a control character (U+0000)"),
        ({"question": "\x1b[31mHọc bổng"}, "control character (U+001B)"),
        ({"history": [{"role": "user", "content": "a\x07b"}]}, "'history[0].content' contains a control character"),
        ({"history": "hi"}, "'history' must be a list"),
        ({"history": [{"role": "system", "content": "x"}]}, "'user' or 'assistant'"),
        ({"history": [{"role": "user"}]}, "exactly 'role' and 'content'"),
        ({"colour": "red"}, "unknown field(s): colour"),
    ],
)
def test_bad_requests_name_the_field(fields, needle):
    with pytest.raises(InputError) as e:
        if "question" in fields:
            AskRequest.from_dict(fields, S)
        else:
            make(**fields)
    assert needle in str(e.value)


@pytest.mark.parametrize("field, value", [("top_k", 10**400), ("top_k", 1e300), ("temperature", -1e300),
                                          ("temperature", 10**400), ("top_p", -10**400), ("repetition_penalty", 10**400)])
def test_a_huge_number_is_echoed_cut_short(field, value):
    with pytest.raises(InputError) as e:
        make(**{field: value})
    message = str(e.value)
    assert f"'{field}'=" in message and "is out of range" in message and len(message) < 100, message


def test_missing_question_and_not_an_object():
    with pytest.raises(InputError, match="missing field 'question'"):
        AskRequest.from_dict({"top_k": 3}, S)
    with pytest.raises(InputError, match="JSON object"):
        AskRequest.from_dict(["q"], S)


def test_limits_follow_settings():
    s = Settings().with_(max_question_chars=20, max_new_tokens_limit=64)
    with pytest.raises(InputError, match="limit is 20"):
        AskRequest.from_dict({"question": "x" * 21}, s)
    assert AskRequest.from_dict({"question": "ok", "max_new_tokens": 64}, s).max_new_tokens == 64


def test_settings_from_env_validates_and_masks_secrets():
    s = Settings.from_env({"RAG_TOP_K": "7", "HF_TOKEN": "hf_secret", "RAG_TRUST_REMOTE_CODE": "yes"})
    assert s.top_k == 7 and s.trust_remote_code is True
    assert "hf_secret" not in repr(s) and s.public_dict()["hf_token"] == "***"
    with pytest.raises(ConfigError, match="RAG_QUANTIZATION"):
        Settings.from_env({"RAG_QUANTIZATION": "3bit", "RAG_LLM": "x"})
    with pytest.raises(ConfigError, match="RAG_LLM"):
        Settings.from_env({"RAG_ADAPTER": "a"})
    with pytest.raises(ConfigError, match="not an integer"):
        Settings.from_env({"RAG_TOP_K": "many"})
    with pytest.raises(ConfigError, match="boolean"):
        Settings.from_env({"RAG_ALLOW_PICKLE": "maybe"})


@pytest.mark.parametrize("data", [{"question": None}, {"question": None, "top_k": 3}])
def test_null_question_is_a_missing_field_not_a_crash(data):
    with pytest.raises(InputError, match="missing field 'question'"):
        AskRequest.from_dict(data, S)


def test_top_k_defaults_to_the_deployments_rag_top_k():
    s = Settings.from_env({"RAG_TOP_K": "8"})
    assert AskRequest.from_dict({"question": "Học bổng?"}, s).top_k == 8
    assert AskRequest.from_dict({"question": "Học bổng?", "top_k": None}, s).top_k == 8  # JSON null: not given
    assert AskRequest.from_dict({"question": "Học bổng?", "top_k": 2}, s).top_k == 2  # the request wins
    assert AskRequest(question="Học bổng?").validate(s).top_k == 8
    assert AskRequest(question="Học bổng?").validate(Settings()).top_k == 5


def test_deployment_source_settings_are_validated():
    s = Settings.from_env({"RAG_INDEX_URL": "https://example.org/index.tar.gz?X-Amz-Signature=secret",
                           "RAG_WEIGHTS_CACHE": "/tmp/w", "RAG_WEIGHTS_CACHE_GB": "0.5", "RAG_MAX_ADAPTERS": "2"})
    assert s.index_url.startswith("https://") and str(s.weights_cache_dir) == "/tmp/w"
    assert s.weights_cache_gb == 0.5 and s.max_adapters == 2
    assert s.public_dict()["index_url"] == "https://example.org/index.tar.gz"  # no signature in logs
    assert Settings.from_env({}).weights_cache_gb == 20.0 and Settings.from_env({}).index_url is None
    with pytest.raises(ConfigError, match="RAG_INDEX_URL='/data/index' is not an http"):
        Settings.from_env({"RAG_INDEX_URL": "/data/index"})
    with pytest.raises(ConfigError, match="RAG_INDEX_URL and RAG_CHROMA_URL"):
        Settings.from_env({"RAG_INDEX_URL": "https://x/i.tgz", "RAG_CHROMA_URL": "http://chroma:8000"})
    with pytest.raises(ConfigError, match="RAG_WEIGHTS_CACHE_GB"):
        Settings.from_env({"RAG_WEIGHTS_CACHE_GB": "0"})
    with pytest.raises(ConfigError, match="RAG_WEIGHTS_CACHE_GB"):
        Settings().with_(weights_cache_gb=-1.0)
    with pytest.raises(ConfigError, match="RAG_MAX_ADAPTERS"):
        Settings.from_env({"RAG_MAX_ADAPTERS": "65"})


def test_default_max_new_tokens_respects_a_lower_limit():
    s = Settings().with_(max_new_tokens_limit=128)
    assert AskRequest.from_dict({"question": "q"}, s).max_new_tokens == 128
    assert AskRequest.from_dict({"question": "q"}, Settings()).max_new_tokens == 512


def test_text_inputs_read_the_lists_cog_sends_as_text():
    from rag.request import from_text_inputs

    r = from_text_inputs({"prompt": "Điều kiện tốt nghiệp?", "system_prompt": "", "stop_sequences": " ###, Câu hỏi: ,",
                          "history": '[{"role": "user", "content": "Chào"}]'}, S)
    assert r.system_prompt is None and r.stop == ["###", "Câu hỏi:"]
    assert r.history == [{"role": "user", "content": "Chào"}]
    r = from_text_inputs({"prompt": "q?", "stop_sequences": '["a,b"]', "history": "  "}, S)
    assert r.stop == ["a,b"] and r.history == []  # a JSON array keeps its commas
    r = from_text_inputs({"prompt": "q?", "stop_sequences": ["x"], "history": [{"role": "user", "content": "c"}]}, S)
    assert r.stop == ["x"] and r.history == [{"role": "user", "content": "c"}]  # lists pass as they are
    with pytest.raises(InputError, match="'history' is not valid JSON"):
        from_text_inputs({"prompt": "q?", "history": "[{"}, S)
    with pytest.raises(InputError, match="'stop_sequences' has 5 sequences"):
        from_text_inputs({"prompt": "q?", "stop_sequences": "a,b,c,d,e"}, S)


def test_history_is_read_in_nfc_as_the_question_is():
    """Text pasted from macOS/iOS arrives decomposed (NFD); follow-up rewriting must see the same words."""
    import unicodedata

    turn = "Học phí học lại tính thế nào?"
    nfd = make(history=[{"role": "user", "content": unicodedata.normalize("NFD", turn)}]).history
    assert nfd == [{"role": "user", "content": turn}] and unicodedata.is_normalized("NFC", nfd[0]["content"])
