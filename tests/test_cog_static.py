"""`cog build` / `cog push` read predict.py and the training entry statically; so does this test.

tests/_cog_static.py applies the rules of cog's tree-sitter schema parser (replicate/cog
``pkg/schema/python/``; each rule is listed there with the source file it comes from) with
``ast``. These tests fail on what `cog build` would stop on (an unresolvable default, choices
it cannot read) and on what it would build but lose or mangle (a dropped bound or
description, a garbled string), check that the schema built from that reading equals the one
cog's runtime introspection gives (tests/_cog_schema.py), and that the Cog inputs' bounds and
defaults are the ones rag's validator enforces.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest
import yaml

from _cog_schema import openapi_schema
from _cog_static import CogBuildError, input_schema, read_entry

REPO = Path(__file__).resolve().parents[1]
COG = yaml.safe_load((REPO / "cog.yaml").read_text(encoding="utf-8"))
ENTRIES = [("predict", COG["predict"]), ("train", COG["train"])]


def _split(ref: str) -> tuple[Path, str]:
    file, target = ref.split(":")
    return REPO / file, target


# ------------------------------------------------------------------- the project's entry points
@pytest.mark.parametrize("mode,ref", ENTRIES, ids=[m for m, _ in ENTRIES])
def test_entry_is_read_by_cog_without_losing_anything(mode, ref):
    path, target = _split(ref)
    reading = read_entry(path, target, mode)  # CogBuildError: `cog build` would stop here
    assert reading.problems == [], "\n".join(reading.problems)
    assert reading.fields, "no inputs read"
    for f in reading.fields:
        assert f.description, f"{ref}: input '{f.name}' has no description cog can read"


@pytest.mark.parametrize("mode,ref", ENTRIES, ids=[m for m, _ in ENTRIES])
def test_static_schema_equals_the_runtime_schema(mode, ref):
    """What `cog build` bakes (static) and what cog's Python introspection makes of the same code."""
    runtime = openapi_schema(ref, REPO)["components"]["schemas"]
    static = openapi_schema(ref, REPO, static=True, mode=mode)["components"]["schemas"]
    assert static["Input"] == runtime["Input"]
    assert {k: v for k, v in static.items() if k not in ("Input", "Output")} == \
        {k: v for k, v in runtime.items() if k not in ("Input", "Output")}


def test_the_predictor_streams_and_is_the_one_runner():
    path, target = _split(COG["predict"])
    reading = read_entry(path, target)
    assert reading.streaming and not reading.is_async  # coglet 0.23 streams tokens only from a sync generator
    runs = [n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "run"]
    assert len(runs) == 1, "the input list is written once: one run() in predict.py"


def test_predict_inputs_follow_replicates_llm_names():
    fields = read_entry(*_split(COG["predict"])).by_name()
    assert list(fields)[:8] == ["prompt", "system_prompt", "max_tokens", "temperature", "top_p", "top_k",
                                "stop_sequences", "seed"]
    assert {"num_passages", "history", "output_format", "lora_weights"} <= set(fields)
    assert fields["output_format"].choices == ["text", "json"]


def test_the_request_inputs_are_rags_input_names_and_passed_by_name():
    """run()'s request inputs are rag.request.INPUT_NAMES, in order (the mapping the RunPod worker uses
    too), the rest are Cog's own; run() hands them on by name, not as locals()."""
    from rag.request import INPUT_NAMES

    fields = list(read_entry(*_split(COG["predict"])).by_name())
    assert fields == [*INPUT_NAMES, "output_format", "lora_weights", "hf_token"]
    tree = ast.parse((REPO / "predict.py").read_text(encoding="utf-8"))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "locals"]


def test_bounds_and_defaults_are_the_validators():
    """Each bound cog reads is where rag's AskRequest (default Settings) starts to refuse, and each
    default is the validator's own, so the schema and the validator cannot drift apart."""
    from rag.config import Settings
    from rag.errors import InputError
    from rag.request import AskRequest, from_inputs

    fields = read_entry(*_split(COG["predict"])).by_name()
    settings = Settings()
    mapped = ["prompt", "system_prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "num_passages"]

    def ok(name, value):
        inputs = {"prompt": "Điều kiện tốt nghiệp?", name: value}
        return from_inputs(inputs, settings)

    checked = 0
    for name in mapped:
        f = fields[name]
        step = 1 if f.type.kind == "integer" else 0.001
        for bound, outside in ((f.ge, -step), (f.le, step)):
            if bound is None:
                continue
            value = int(bound) if f.type.kind == "integer" else bound
            ok(name, value)
            with pytest.raises(InputError, match=f"'{name}'"):
                ok(name, value + outside)
            checked += 1
        if name == "prompt":  # counted once composed: the bound is that many letters typed decomposed (NFD)
            import unicodedata

            letter = unicodedata.normalize("NFD", "ệ")  # e + circumflex + dot below: Vietnamese's longest
            assert f.max_length == len(letter) * settings.max_question_chars
            ok(name, letter * settings.max_question_chars)
            with pytest.raises(InputError, match=f"'{name}'"):
                ok(name, letter * settings.max_question_chars + "x")
            checked += 1
        elif f.max_length is not None:
            ok(name, "x" * f.max_length)
            with pytest.raises(InputError, match=f"'{name}'"):
                ok(name, "x" * (f.max_length + 1))
            checked += 1
    assert checked >= 12
    # stop_sequences: 4 sequences of MAX_STOP_CHARS, written as a JSON array with every character escaped (\uXXXX),
    # fits; the bound keeps a 10 MB value from reaching the parser
    from rag.request import MAX_STOP_CHARS, MAX_STOPS, from_text_inputs

    longest = "[" + ",".join(['"' + "\\u1ec7" * MAX_STOP_CHARS + '"'] * MAX_STOPS) + "]"
    assert len(longest) <= fields["stop_sequences"].max_length <= 2 * len(longest)
    assert len(from_text_inputs({"prompt": "Điều kiện tốt nghiệp?", "stop_sequences": longest}, settings).stop) == 4
    assert fields["lora_weights"].max_length == 4096  # a signed URL fits; a 10 MB string does not reach the runner
    default = AskRequest.from_dict({"question": "q"}, settings)
    assert fields["max_tokens"].default == default.max_new_tokens
    assert fields["temperature"].default == default.temperature
    assert fields["top_p"].default == default.top_p
    assert fields["top_k"].default == default.sampling_top_k
    assert fields["num_passages"].default is None and fields["num_passages"].type.nullable  # RAG_TOP_K decides


# ------------------------------------------------------------- the reader applies cog's rules
def _read(tmp_path, body: str, target="Runner", mode="predict"):
    path = tmp_path / "predict.py"
    path.write_text("from typing import Optional\nfrom cog import BaseRunner, Input, Secret\n"
                    + textwrap.dedent(body), encoding="utf-8")
    return read_entry(path, target, mode)


def test_a_module_level_input_object_is_a_build_error(tmp_path):
    # cog's parser_test.go TestDefaultUndefinedVarPlainErrors; the project's predict.py used to do this
    with pytest.raises(CogBuildError, match="default `QUESTION` cannot be statically resolved"):
        _read(tmp_path, """
            QUESTION = Input(description="q")
            class Runner(BaseRunner):
                def run(self, question: str = QUESTION) -> str: ...
        """)


def test_literals_module_names_class_attributes_and_negative_numbers_resolve(tmp_path):
    reading = _read(tmp_path, """
        LIMIT = 7
        NAMES = ["a", "b"]
        HELP = "from a name"
        class Inputs:
            TEMP = Input(description="attr", default=0.5, ge=-1.5, le=2)
        class Runner(BaseRunner):
            def run(self, a: int = LIMIT, b: float = Inputs.TEMP, c: str = Input(description=HELP, choices=NAMES,
                    default="a"), d: int = Input(description="d", default=-1, ge=-1, le=1e3),
                    e: Optional[Secret] = Input(description="e", default=None)) -> str: ...
    """)
    f = reading.by_name()
    assert reading.problems == []
    assert f["a"].default == 7 and f["b"].default == 0.5 and (f["b"].ge, f["b"].le) == (-1.5, 2.0)
    assert f["c"].choices == ["a", "b"] and f["c"].description == "from a name"
    assert (f["d"].default, f["d"].ge, f["d"].le) == (-1, -1.0, 1000.0)
    assert f["e"].type.kind == "Secret" and f["e"].type.nullable


@pytest.mark.parametrize("expr,lost", [
    ("le=2**32 - 1", "le=`2**32 - 1` is not a number literal"),
    ("le=S.max_top_k", "le=`S.max_top_k` is not a number literal"),
    ("le=1_000", "le=`1_000` is not a number literal"),
    ("le=(5)", "le=`5` is not a number literal"),
    ("max_length=0x10", "max_length=`0x10` is not a number literal"),
    ('description=f"{N} passages"', "is not a plain string literal: cog drops it"),
    ('description="a " "b"', "garbled by cog (implicitly concatenated strings): cog reads 'a \" \"b'"),
    ('description="tab\\there"', "garbled by cog (escape sequences"),
    ("default=N + 1", "default=`N + 1` is not a literal: cog uses None instead"),
    ('regex=f"{N}"', "is not a plain string literal"),
])
def test_what_cog_drops_or_garbles_is_reported(tmp_path, expr, lost):
    reading = _read(tmp_path, f"""
        N = 3
        class Runner(BaseRunner):
            def run(self, x: int = Input({expr})) -> str: ...
    """)
    assert any(lost in p for p in reading.problems), reading.problems


@pytest.mark.parametrize("signature,error", [
    ("x = Input(default=1)", "has no type annotation"),
    ("x: int = Input(choices=[str(i) for i in range(3)])", "choices expression cannot be statically resolved"),
    ("x: int = Input(default_factory=list)", "default_factory is not supported"),
    ("x: int = max(1, 2)", "default `max(1, 2)` cannot be statically resolved"),
    ("x: int = TEMP", "default `TEMP` cannot be statically resolved"),  # a class attribute needs `Class.attr`
    ("x: int = cog.Input(default=1)", "default `cog.Input(default=1)` cannot be statically resolved"),
    ("x: list[Optional[str]] = Input(default=None)", "nested generics"),
    ("x: int | str = Input(default=1, ge=0)", "constraints and choices are not supported on union inputs"),
])
def test_what_cog_build_refuses_is_an_error(tmp_path, signature, error):
    with pytest.raises(CogBuildError, match=error.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        _read(tmp_path, f"""
            class Runner(BaseRunner):
                TEMP = Input(default=1)
                def run(self, {signature}) -> str: ...
        """)


def test_the_named_class_and_its_inherited_run_are_what_cog_reads(tmp_path):
    reading = _read(tmp_path, """
        class Base(BaseRunner):
            def run(self, a: str = Input(description="a")) -> str: ...
        class Runner(Base):
            pass
        class Other(BaseRunner):
            def run(self, b: str = Input(description="b")) -> str: ...
    """)
    assert [f.name for f in reading.fields] == ["a"]
    assert input_schema(reading)[0]["required"] == ["a"]


def test_a_none_default_on_a_non_optional_input_makes_it_required(tmp_path):
    # openapi_spec.go: `seed: int = Input(default=None)` is required, not optional
    reading = _read(tmp_path, """
        class Runner(BaseRunner):
            def run(self, seed: int = Input(description="s", default=None),
                    k: Optional[int] = Input(description="k", default=None)) -> str: ...
    """)
    schema, _ = input_schema(reading)
    assert schema["required"] == ["seed"]
    assert schema["properties"]["k"]["nullable"] is True and schema["properties"]["k"]["default"] is None
