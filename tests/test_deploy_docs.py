"""The deployment guides' commands, inputs and files are real: every fenced block of
docs/deploy-replicate.md, docs/deploy-runpod.md and docs/deploy-local.md is checked against
what it names — `rag` commands parse with rag's own CLI, Docker build arguments exist in the
Dockerfile, Cog inputs exist in the schema `cog build` reads (tests/_cog_static.py), RunPod
jobs and OpenAI bodies pass the worker's and server's own validation, and referenced files exist.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from _cog_static import read_entry
from _dockerfile import parse

REPO = Path(__file__).resolve().parents[1]
GUIDES = {name: REPO / "docs" / f"deploy-{name}.md" for name in ("replicate", "runpod", "local")}
COG = yaml.safe_load((REPO / "cog.yaml").read_text(encoding="utf-8"))
REPO_PREFIXES = ("runpod_worker/", ".runpod/", "rag/", "training/", "tests/", "docs/")
REPO_FILES = ("cog.yaml", "predict.py", "requirements.txt", ".dockerignore", "pyproject.toml")


def blocks(path: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```", path.read_text(encoding="utf-8"),
                                                            re.S | re.M)]


def commands(script: str) -> list[list[str]]:
    """Shell commands of a bash block: continuations joined, comments dropped, placeholders filled."""
    joined = re.sub(r"\\\n\s*", " ", script)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"<[^>]+>", "x", line).strip()
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"^[A-Z]+=\$\((.*)\)$", r"\1", line)  # VAR=$(cmd …) → cmd …
        words = shlex.split(line, comments=True)
        while words and re.match(r"^[A-Z_]+=", words[0]):
            words = words[1:]  # leading VAR=value assignments
        if "|" in words:
            words = words[:words.index("|")]
        if words:
            out.append(words)
    return out


def cog_inputs() -> set[str]:
    file, target = COG["predict"].split(":")
    return set(read_entry(REPO / file, target).by_name())


def _check_input(guide: str, body: dict) -> None:
    from rag.config import Settings

    if guide == "replicate":
        assert set(body["input"]) <= cog_inputs(), set(body["input"]) - cog_inputs()
    elif guide == "runpod":
        from runpod_worker.handler import parse_job

        kind, job = parse_job(body, Settings())
        assert kind != "ask" or not job.warnings  # the guides use the current names only
    else:
        from rag.openai_compat import parse_chat

        parse_chat(body, Settings())


@pytest.mark.parametrize("guide", list(GUIDES))
def test_every_command_in_the_guide_is_one_the_project_accepts(guide):
    from rag.cli import build_parser

    checked = 0
    for lang, text in blocks(GUIDES[guide]):
        if lang != "bash":
            continue
        for words in commands(text):
            tool = words[0]
            if tool == "rag":
                build_parser().parse_args(words[1:])  # SystemExit: the CLI would refuse it
            elif tool == "docker" and words[1] == "build":
                dockerfile = REPO / words[words.index("-f") + 1]
                args = {a.split("=", 1)[0] for w, a in parse(dockerfile.read_text(encoding="utf-8")) if w == "ARG"}
                given = [words[i + 1].split("=", 1)[0] for i, w in enumerate(words) if w == "--build-arg"]
                assert given and set(given) <= args, set(given) - args
                for i, w in enumerate(words):
                    if w == "--secret":
                        secret_id = dict(kv.split("=", 1) for kv in words[i + 1].split(","))["id"]
                        assert f"--mount=type=secret,id={secret_id}" in dockerfile.read_text(encoding="utf-8")
                assert words[-1] == "."  # the build context is the repository root
            elif tool == "curl":
                for i, w in enumerate(words):
                    if w == "-d":
                        _check_input(guide, json.loads(words[i + 1]))
            elif tool == "python":
                script = words[1] if words[1] != "-m" else None
                if script:
                    assert (REPO / script).is_file(), script
                if "--test_input" in words:
                    _check_input("runpod", json.loads(words[words.index("--test_input") + 1]))
                if words[1:3] == ["-m", "cog.server.http"]:
                    stub = re.search(r"COG_PREDICT_TYPE_STUB=(\S+)", text).group(1)
                    assert stub == COG["predict"]
            elif tool in ("cog", "pip", "mkdir", "export", "docker"):
                if tool == "cog":
                    assert words[1] in ("login", "build", "push", "train", "predict"), words
            else:
                pytest.fail(f"{guide}: a command the checks do not know: {' '.join(words)}")
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("guide", list(GUIDES))
def test_inputs_and_snippets_in_the_guide_are_real(guide):
    from rag.config import Settings
    from rag.openai_compat import CHAT_FIELDS

    for lang, text in blocks(GUIDES[guide]):
        if lang == "json":
            _check_input(guide, json.loads(text))
        elif lang == "yaml":
            data = yaml.safe_load(text)
            assert set(data) <= set(COG) | {"environment"}
            env = dict(e.split("=", 1) for e in data["environment"])
            Settings.from_env(env)  # a valid configuration
            assert env["RAG_INDEX_DIR"] == dict(e.split("=", 1) for e in COG["environment"])["RAG_INDEX_DIR"]
        elif lang == "python":
            tree = ast.parse(re.sub(r"<[^>]+>", "x", text))
            for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
                for kw in call.keywords:
                    if kw.arg == "input" and isinstance(kw.value, ast.Dict):
                        _check_input(guide, {"input": ast.literal_eval(kw.value)})
                if ast.unparse(call.func).endswith("chat.completions.create"):
                    names = {kw.arg for kw in call.keywords}
                    assert names <= set(CHAT_FIELDS), names - set(CHAT_FIELDS)
                    body = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
                    _check_input("local", body)


@pytest.mark.parametrize("guide", list(GUIDES))
def test_files_and_guides_the_guide_names_exist(guide):
    text = GUIDES[guide].read_text(encoding="utf-8")
    for name in re.findall(r"`([^`\s]+)`", text):
        path = name.split(":")[0]
        if path.startswith(REPO_PREFIXES) or path in REPO_FILES:
            assert (REPO / path.rstrip("/")).exists(), f"{guide}: `{name}` does not exist"
    for link in re.findall(r"\]\(([^)#]+\.md)\)", text):
        assert (GUIDES[guide].parent / link).is_file(), f"{guide}: link to {link}"
