"""Settings: validated whenever built, the only reader of rag's environment, documented from its own fields."""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rag import config
from rag.config import PLATFORM_VARIABLES, Settings, env_names, log_level, settings_markdown
from rag.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [*sorted((ROOT / "rag").rglob("*.py")), *sorted((ROOT / "training").rglob("*.py")), ROOT / "predict.py",
           *sorted((ROOT / "runpod_worker").rglob("*.py"))]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_RAG_NAME = re.compile(r"\bRAG_[A-Z0-9_]*[A-Z0-9]\b")
# A literal variable name looked up in an environment mapping: env.get("X"), os.environ["X"], os.getenv("X").
# Assignments (os.environ["X"] = …, setdefault) configure a library for this process; they read nothing.
_ENV_READ = re.compile(r"""(?:environ|\benv)\s*(?:\.get\(\s*["']([A-Z][A-Z0-9_]+)["']|\[\s*["']([A-Z][A-Z0-9_]+)["']\s*\](?!\s*=[^=]))"""
                       r"""|getenv\(\s*["']([A-Z][A-Z0-9_]+)["']""")


# --------------------------------------------------------------------------- validation on construction


@pytest.mark.parametrize("build", [
    lambda: Settings(top_k=0),
    lambda: Settings(quantization="3bit", llm="x"),
    lambda: Settings(adapter="a"),  # an adapter needs its base
    lambda: Settings(top_k=30),  # above max_top_k
    lambda: dataclasses.replace(Settings(), min_relevance=1.5),
    lambda: dataclasses.replace(Settings(), fusion="max"),
    lambda: Settings().with_(weights_cache_gb=0.0),
    lambda: Settings().with_(chroma_url="chroma:8000"),
    lambda: Settings(max_adapters=65),
    lambda: Settings(top_k="5"),  # a number must be a number, not text that looks like one
    lambda: Settings(trust_remote_code="yes"),
    lambda: Settings(dense_weight=float("nan")),
    lambda: Settings(embed_model=None),  # a setting with a default cannot be unset
    lambda: Settings(device="tpu"),  # checked even when no LLM is configured
    lambda: Settings(embed_device="tpu"),
    lambda: Settings(device="cuda:x"),
])
def test_every_way_of_building_settings_validates(build):
    with pytest.raises(ConfigError) as e:
        build()
    assert e.value.code == "bad_config"
    assert re.search(r"\b(RAG_[A-Z_]+|HF_TOKEN)\b", str(e.value)), "the message names the variable to change"


def test_device_forms():
    for device in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert Settings(device=device).device == device
    assert Settings(embed_device="cuda:0").embed_device == "cuda:0"


def test_values_are_normalised_on_construction():
    s = Settings(index_dir="~/idx", quantization="4BIT", llm="m", fusion="RRF", log_level="debug")
    assert isinstance(s.index_dir, Path) and s.quantization == "4bit" and s.fusion == "rrf"
    assert s.log_level == "DEBUG"
    assert Settings(max_file_mb=1).max_file_mb == 1.0 and isinstance(Settings(max_file_mb=1).max_file_mb, float)


def test_from_env_parses_by_each_fields_metadata():
    s = Settings.from_env({"RAG_TOP_K": " 7 ", "RAG_TRUST_REMOTE_CODE": "yes", "RAG_EMBED_QUERY_PREFIX": "query: ",
                           "RAG_EMBED_PASSAGE_PREFIX": "", "RAG_INDEX_DIR": "/tmp/x", "RAG_OCR": "",
                           "HUGGING_FACE_HUB_TOKEN": "hf_alias"})
    assert s.top_k == 7 and s.trust_remote_code is True
    assert s.embed_query_prefix == "query: " and s.embed_passage_prefix == ""  # prefixes are kept as given
    assert s.index_dir == Path("/tmp/x") and s.ocr == "auto"  # empty counts as unset
    assert s.hf_token == "hf_alias"
    assert Settings.from_env({"HF_TOKEN": "hf_a", "HUGGING_FACE_HUB_TOKEN": "hf_b"}).hf_token == "hf_a"
    with pytest.raises(ConfigError, match=r"RAG_TOP_K='many' is not an integer"):
        Settings.from_env({"RAG_TOP_K": "many"})
    with pytest.raises(ConfigError, match=r"RAG_OCR_DPI=5000 is out of range: allowed 72 to 1200"):
        Settings.from_env({"RAG_OCR_DPI": "5000"})
    with pytest.raises(ConfigError, match="RAG_ALLOW_PICKLE='maybe' is not a boolean"):
        Settings.from_env({"RAG_ALLOW_PICKLE": "maybe"})


def test_every_field_is_read_from_the_environment():
    """Each field has a variable, and setting that variable changes the field."""
    samples = {"path": "/tmp/x", "text": "p: ", "bool": "1", "str": "https://h:1/v",
               "int": None, "float": None, "choice": None}
    base = Settings()
    for f in dataclasses.fields(Settings):
        meta = f.metadata
        raw = samples[meta["kind"]]
        if meta["kind"] in ("int", "float"):
            raw = str(meta["lo"] if getattr(base, f.name) != meta["lo"] else meta["hi"])
            if f.name in ("top_k", "max_top_k"):
                raw = {"top_k": "7", "max_top_k": "50"}[f.name]
        if meta["kind"] == "choice":
            raw = next(c for c in meta["choices"] if c != f.default)
        env = {meta["env"]: raw}
        if f.name in ("adapter", "quantization"):
            env["RAG_LLM"] = "base"
        if f.name == "index_url":
            env[meta["env"]] = "https://h/i.tgz"
        if f.name in ("device", "embed_device"):
            env[meta["env"]] = "cuda:1"
        assert getattr(Settings.from_env(env), f.name) != getattr(base, f.name), meta["env"]


def test_log_level_for_a_worker_before_its_settings():
    assert log_level({"RAG_LOG_LEVEL": "debug"}) == "DEBUG"
    assert log_level({}) == "INFO"
    assert log_level({"RAG_LOG_LEVEL": "chatty"}) == "INFO"  # and Settings.from_env reports it:
    with pytest.raises(ConfigError, match="RAG_LOG_LEVEL='chatty' is not one of DEBUG, INFO"):
        Settings.from_env({"RAG_LOG_LEVEL": "chatty"})


# --------------------------------------------------------------------------- secrets


def test_the_token_stays_out_of_repr_logs_and_public_dict(caplog):
    s = Settings.from_env({"HF_TOKEN": "hf_SECRETVALUE", "RAG_LLM": "m"})
    assert s.hf_token == "hf_SECRETVALUE"
    assert "hf_SECRETVALUE" not in repr(s) and "hf_SECRETVALUE" not in str(s)
    assert s.public_dict()["hf_token"] == "***"
    with caplog.at_level(logging.INFO):
        logging.getLogger("rag.test").info("settings: %s %s", s, s.public_dict())
    assert "hf_SECRETVALUE" not in caplog.text
    secret_fields = [f.name for f in dataclasses.fields(Settings) if f.metadata["secret"]]
    assert secret_fields == ["hf_token"]


# --------------------------------------------------------------------------- the generated reference


def test_docs_settings_md_is_generated_from_settings():
    committed = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert committed == settings_markdown(), (
        "docs/settings.md is out of date: run `python -m rag.config --markdown > docs/settings.md`")


def test_the_reference_lists_every_variable_with_a_description():
    text = settings_markdown()
    for f in dataclasses.fields(Settings):
        meta = f.metadata
        assert meta["doc"] and meta["group"] in config.GROUPS, f.name
        assert f"| `{meta['env']}`" in text
    for name, _, _ in PLATFORM_VARIABLES:
        assert f"| `{name}` |" in text
    assert len(env_names()) == len({n for f in dataclasses.fields(Settings)
                                    for n in (f.metadata["env"], *f.metadata["aliases"])})


def test_the_markdown_command_prints_the_reference():
    out = subprocess.run([sys.executable, "-m", "rag.config", "--markdown"], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out == settings_markdown()


# --------------------------------------------------------------------------- one reader of the environment


def test_every_rag_variable_named_in_code_and_docs_is_a_settings_field():
    known = set(env_names())
    unknown = {}
    for path in [*SOURCES, *DOCS]:
        for name in _RAG_NAME.findall(path.read_text(encoding="utf-8")):
            if name not in known:
                unknown.setdefault(name, path.relative_to(ROOT).as_posix())
    assert not unknown, f"RAG_* names that are not Settings fields (add a field or fix the name): {unknown}"


def test_only_settings_reads_rag_variables_and_training_leaves_the_environment_alone():
    platform = {name for name, _, _ in PLATFORM_VARIABLES}
    offenders, undocumented = [], []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT).as_posix()
        for m in _ENV_READ.finditer(text):
            name = next(g for g in m.groups() if g)
            if name in env_names() and rel != "rag/config.py":
                offenders.append(f"{rel}: {name}")
            elif name not in env_names() and name not in platform:
                undocumented.append(f"{rel}: {name}")
        if rel.startswith("training/"):
            assert "os.environ" not in text and "getenv" not in text, f"{rel} reads or writes the environment"
    assert not offenders, f"read these through Settings instead: {offenders}"
    assert not undocumented, f"list these in rag.config.PLATFORM_VARIABLES: {undocumented}"


def test_the_environment_scan_sees_reads_and_ignores_other_text():
    sample = ('x = os.environ.get("RAG_TOP_K")\ny = env["HF_HOME"]\nz = os.getenv("COG_WEIGHTS")\n'
              'if env["A_B"] == "1": pass\n'
              'w = environ.setdefault("HF_HUB_OFFLINE", "1")\nos.environ["GRADIO_X"] = "0"\nprint("RAG_LLM is not set")\n')
    assert [next(g for g in m.groups() if g) for m in _ENV_READ.finditer(sample)] == [
        "RAG_TOP_K", "HF_HOME", "COG_WEIGHTS", "A_B"]
