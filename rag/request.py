"""The one request type, validated once, for the CLI, the Cog runner and the RunPod worker.

``AskRequest.from_dict(data, settings)`` rejects unknown fields and values out of
range with a message naming the field and the allowed range. The Cog runner and the
RunPod worker take Replicate's LLM input names (``INPUT_NAMES``, declared here once):
``from_inputs`` maps them onto these fields, ``from_text_inputs`` also reads the list
inputs Cog sends as text.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from .config import Settings
from .errors import InputError

MAX_STOPS = 4
MAX_STOP_CHARS = 100
MAX_SYSTEM_PROMPT_CHARS = 8000
MAX_HISTORY_TURNS = 20
MAX_TURN_CHARS = 8000
ROLES = ("user", "assistant")
DEFAULT_MAX_NEW_TOKENS = 512
TEMPERATURE_RANGE = (0.0, 2.0)  # 0 = greedy


@dataclass
class AskRequest:
    question: str
    top_k: int | None = None  # passages retrieved; None: the deployment's RAG_TOP_K (set by validate)
    max_new_tokens: int | None = None  # None: min(512, RAG_MAX_NEW_TOKENS_LIMIT)
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    sampling_top_k: int = 0  # 0 = off
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    system_prompt: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def fields_(cls) -> tuple[str, ...]:
        return tuple(cls.__dataclass_fields__)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], settings: Settings | None = None) -> "AskRequest":
        if not isinstance(data, Mapping):
            raise InputError(f"the request must be a JSON object, got {type(data).__name__}.")
        unknown = sorted(set(data) - set(cls.fields_()))
        if unknown:
            raise InputError(
                f"unknown field(s): {', '.join(unknown)}. Allowed: {', '.join(cls.fields_())}."
            )
        if data.get("question") is None:  # absent, or JSON null
            raise InputError("missing field 'question': send the student's question as text.")
        kwargs = {k: v for k, v in data.items() if v is not None or k in ("seed", "system_prompt")}
        return cls(**kwargs).validate(settings or Settings())

    def validate(self, settings: Settings) -> "AskRequest":
        self.question = validate_question(self.question, settings.max_question_chars)
        if self.top_k is None:
            self.top_k = settings.top_k
        self.top_k = _int("top_k", self.top_k, 1, settings.max_top_k)
        if self.max_new_tokens is None:
            self.max_new_tokens = min(DEFAULT_MAX_NEW_TOKENS, settings.max_new_tokens_limit)
        self.max_new_tokens = _int("max_new_tokens", self.max_new_tokens, 1, settings.max_new_tokens_limit)
        self.temperature = _float("temperature", self.temperature, *TEMPERATURE_RANGE)
        self.top_p = _float("top_p", self.top_p, 0.0, 1.0)  # 0 keeps only the most likely token
        self.sampling_top_k = _int("sampling_top_k", self.sampling_top_k, 0, 1000)
        self.repetition_penalty = _float("repetition_penalty", self.repetition_penalty, 0.5, 2.0)
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if not isinstance(self.stop, (list, tuple)):
            raise InputError("'stop' must be a list of strings.")
        if len(self.stop) > MAX_STOPS:
            raise InputError(f"'stop' has {len(self.stop)} sequences; at most {MAX_STOPS} are allowed.")
        for s in self.stop:
            if not isinstance(s, str) or s == "":
                raise InputError("'stop' sequences must be non-empty strings.")
            if len(s) > MAX_STOP_CHARS:
                raise InputError(f"a 'stop' sequence is longer than {MAX_STOP_CHARS} characters.")
            _valid_text("stop", s)
        self.stop = list(self.stop)
        if self.seed is not None:
            self.seed = _int("seed", self.seed, 0, 2**32 - 1)
        if self.system_prompt is not None:
            if not isinstance(self.system_prompt, str):
                raise InputError("'system_prompt' must be a string.")
            if len(self.system_prompt) > MAX_SYSTEM_PROMPT_CHARS:
                raise InputError(f"'system_prompt' is longer than {MAX_SYSTEM_PROMPT_CHARS} characters.")
            _valid_text("system_prompt", self.system_prompt)
            if not self.system_prompt.strip():
                self.system_prompt = None
        self.history = validate_history(self.history)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Replicate's LLM input names, used by the Cog model and the RunPod worker, → AskRequest fields.
# ``top_k`` is the sampler's (as in every LLM API); the number of passages is ``num_passages``.
INPUT_NAMES = {
    "prompt": "question", "system_prompt": "system_prompt", "max_tokens": "max_new_tokens",
    "temperature": "temperature", "top_p": "top_p", "top_k": "sampling_top_k", "stop_sequences": "stop",
    "seed": "seed", "num_passages": "top_k", "history": "history",
}


def from_inputs(inputs: Mapping[str, Any], settings: Settings | None = None,
                names: Mapping[str, str] = INPUT_NAMES, also: tuple[str, ...] = ()) -> AskRequest:
    """An ``AskRequest`` from inputs named by a platform (``names``: input name → field; ``also``: the inputs the
    wrapper itself took out before, named in the message about unknown ones).

    Wrappers only map names; the values are validated by ``AskRequest`` as everywhere else, and
    its messages are given back in the caller's names ("'max_tokens'=9999 is out of range…").
    """
    if not isinstance(inputs, Mapping):
        raise InputError(f"the input must be a JSON object, got {type(inputs).__name__}.")
    unknown = sorted(set(inputs) - set(names))
    if unknown:
        raise InputError(f"unknown input(s): {', '.join(unknown)}. Allowed: {', '.join([*names, *also])}.")
    try:
        return AskRequest.from_dict({names[k]: v for k, v in inputs.items()}, settings)
    except InputError as e:
        back = {field_: name for name, field_ in names.items()}
        message = re.sub(r"'([a-z_]+)(?=['\[.])", lambda m: "'" + back.get(m.group(1), m.group(1)), str(e))
        raise InputError(message, code=e.code) from e


def from_text_inputs(inputs: Mapping[str, Any], settings: Settings | None = None) -> AskRequest:
    """``from_inputs`` for a platform whose schema has no list type (Cog): ``stop_sequences`` comma-separated
    or a JSON array, ``history`` a JSON array, an empty ``system_prompt`` the default. A list sent as a
    list (no schema in front) goes through as it is, and ``AskRequest`` checks it."""
    inputs = dict(inputs)
    if "system_prompt" in inputs:
        inputs["system_prompt"] = inputs["system_prompt"] or None
    if "stop_sequences" in inputs:
        inputs["stop_sequences"] = _stops(inputs["stop_sequences"])
    if "history" in inputs:
        inputs["history"] = _history(inputs["history"])
    return from_inputs(inputs, settings)


def _stops(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    value = value.strip()
    if not value:
        return []
    if value.startswith("["):
        return parse_json("'stop_sequences' (it starts with '[')", value,
                          expected='a JSON array of strings such as ["###", "Câu hỏi:"], or comma-separated text')
    return [s.strip() for s in value.split(",") if s.strip()]


def _history(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if not isinstance(value, str):
        return value
    return parse_json("'history'", value, expected='a JSON array such as '
                      '[{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]')


def parse_json(name: str, text: str | bytes, *, expected: str) -> Any:
    """``text`` (an input sent as a JSON string: Cog's ``history`` and ``stop_sequences``, a request body) as JSON.

    Invalid JSON and JSON nested past what the parser allows (a RecursionError, not a ValueError) are both
    input errors naming ``name``; ``expected`` says what to send instead.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise InputError(f"{name} is nested too deeply to be read: send {expected}.") from None
    except ValueError as e:
        if isinstance(e, json.JSONDecodeError):
            where = f"{e.msg} at position {e.pos}"
        elif "digits" in str(e):  # Python reads integers of at most 4300 digits (sys.int_info)
            where = "a number with more digits than can be read"
        else:
            where = "undecodable text"
        raise InputError(f"{name} is not valid JSON ({where}): send {expected}.") from None


def validate_history(history: Any) -> list[dict[str, str]]:
    if history is None:
        return []
    if not isinstance(history, (list, tuple)):
        raise InputError("'history' must be a list of {\"role\": \"user\"|\"assistant\", \"content\": \"...\"}.")
    if len(history) > MAX_HISTORY_TURNS:
        raise InputError(f"'history' has {len(history)} turns; at most {MAX_HISTORY_TURNS} are allowed.")
    out = []
    for i, turn in enumerate(history):
        if not isinstance(turn, Mapping) or set(turn) - {"role", "content"} or "role" not in turn or "content" not in turn:
            raise InputError(f"'history[{i}]' must be an object with exactly 'role' and 'content'.")
        role, content = turn["role"], turn["content"]
        if not isinstance(role, str):  # not echoed: it may be any JSON, nested or huge
            raise InputError(f"'history[{i}].role' must be 'user' or 'assistant'.")
        if role not in ROLES:
            raise InputError(f"'history[{i}].role' is {role!r}; use 'user' or 'assistant'.")
        if not isinstance(content, str):
            raise InputError(f"'history[{i}].content' must be a string.")
        if len(content) > _NFC_MAX_SHRINK * MAX_TURN_CHARS:  # cannot fit once composed
            raise InputError(f"'history[{i}].content' is longer than {MAX_TURN_CHARS} characters.")
        _valid_text(f"history[{i}].content", content)
        content = unicodedata.normalize("NFC", content)  # as the question: "Học" typed on macOS (NFD) is "Học"
        if len(content) > MAX_TURN_CHARS:
            raise InputError(f"'history[{i}].content' is longer than {MAX_TURN_CHARS} characters.")
        out.append({"role": role, "content": content})
    return out


def validate_question(q: Any, limit: int) -> str:
    """The question as the pipeline sees it: NFC, stripped, within ``limit`` characters *after* NFC (which
    can compose three code points into one, or expand one into three), holding at least one letter or
    digit, and no unpaired surrogate (what undecodable bytes become in argv or stdin) or control character
    (NUL, escape …; tab and line breaks are text)."""
    if not isinstance(q, str):
        raise InputError("'question' must be a string.")
    if len(q) > _NFC_MAX_SHRINK * limit:  # cannot fit once composed: refused before normalising megabytes
        raise InputError(f"'question' is {len(q)} characters; the limit is {limit}. Shorten it.")
    _valid_text("question", q)
    q = unicodedata.normalize("NFC", q).strip()
    if not q:
        raise InputError("'question' is empty: type a question about the regulations.")
    if len(q) > limit:
        raise InputError(f"'question' is {len(q)} characters; the limit is {limit}. Shorten it.")
    if not any(ch.isalnum() for ch in q):
        raise InputError("'question' has no words in it (only punctuation, symbols or emoji): type a question "
                         "about the regulations.")
    return q


_NFC_MAX_SHRINK = 4  # NFC composes at most a few code points into one (Hangul LVT: 3; "ệ" from e+◌̂+◌̣: 3)
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # C0 controls and DEL, except tab and line breaks


def _valid_text(name: str, text: str) -> None:
    if _SURROGATE.search(text):
        raise InputError(f"'{name}' contains invalid characters (unpaired surrogates U+D800–U+DFFF, which is what "
                         "bytes that are not UTF-8 turn into): send the text as valid UTF-8.")
    control = _CONTROL.search(text)
    if control:
        raise InputError(f"'{name}' contains a control character (U+{ord(control.group()):04X}): send plain text.")


def _shown(value: int | float) -> str:
    """A number as a message echoes it: a huge one is cut, not printed in its hundreds of digits."""
    text = str(value)
    return text if len(text) <= 16 else text[:12] + "…"


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        raise InputError(f"'{name}' must be an integer between {lo} and {hi}.")
    value = int(value)
    if not lo <= value <= hi:
        raise InputError(f"'{name}'={_shown(value)} is out of range: allowed {lo} to {hi}.")
    return value


def _float(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"'{name}' must be a number between {lo} and {hi}.")
    try:
        value = float(value)
    except OverflowError:  # an integer too large for a float (10**400)
        raise InputError(f"'{name}'={_shown(value)} is out of range: allowed {lo} to {hi}.") from None
    if not math.isfinite(value):
        raise InputError(f"'{name}' must be a finite number (got {value}).")
    if not lo <= value <= hi:
        raise InputError(f"'{name}'={_shown(value)} is out of range: allowed {lo} to {hi}.")
    return value
