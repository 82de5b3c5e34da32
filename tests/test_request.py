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
        ({"top_p": 0.0}, "(0, 1]"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4"),
        ({"stop": [""]}, "non-empty"),
        ({"stop": 3}, "list of strings"),
        ({"seed": -1}, "seed"),
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
