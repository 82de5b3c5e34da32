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


def _check_cog(words: list[str]) -> None:
    """cog's own flags for the subcommands the guides use; `-i name=value` names an input of the entry."""
    sub, rest = words[1], words[2:]
    flags = {"login": set(), "build": {"-t"}, "push": set(), "predict": {"-i"}, "train": {"-i"}}
    assert sub in flags, words
    positional = [w for i, w in enumerate(rest) if not w.startswith("-") and (i == 0 or rest[i - 1] not in flags[sub])]
    assert {w for w in rest if w.startswith("-")} <= flags[sub], words
    if sub == "push":  # Replicate's registry: r8.im/<owner>/<model>
        assert len(positional) == 1 and re.fullmatch(r"r8\.im/[^/\s]+/[^/\s]+", positional[0]), words
    else:
        assert not positional, words
    if sub in ("predict", "train"):
        file, target = COG["predict" if sub == "predict" else "train"].split(":")
        names = set(read_entry(REPO / file, target).by_name())
        given = {rest[i + 1].split("=", 1)[0] for i, w in enumerate(rest) if w == "-i"}
        assert given and given <= names, given - names


def _check_pip(words: list[str]) -> None:
    """`pip install` of this project, with extras that pyproject.toml declares."""
    import tomllib

    assert words[1] == "install", words
    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    targets = [w for w in words[2:] if not w.startswith("-")]
    assert targets, words
    for target in targets:
        m = re.fullmatch(r"\.(?:\[([\w,]+)\])?", target)
        assert m, f"pip installs something other than this project: {target}"
        assert set(filter(None, (m.group(1) or "").split(","))) <= set(extras), target


def test_the_cog_and_pip_checks_refuse_what_the_tools_would():
    for bad in (["cog", "push", "myimage"], ["cog", "build", "--tag-typo", "x"], ["cog", "predict", "-i", "question=x"],
                ["cog", "train", "-i", "dataset=@x"], ["cog", "deploy"]):
        with pytest.raises(AssertionError):
            _check_cog(bad)
    for bad in (["pip", "install", ".[gpu]"], ["pip", "install", "torch"], ["pip", "uninstall", "x"]):
        with pytest.raises(AssertionError):
            _check_pip(bad)
    _check_cog(["cog", "predict", "-i", "prompt=Học bổng?", "-i", "num_passages=3"])
    _check_cog(["cog", "train", "-i", "train_data=@my_qa.jsonl"])
    _check_pip(["pip", "install", "-e", ".[ui,eval]"])


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
            elif tool == "cog":
                _check_cog(words)
            elif tool == "pip":
                _check_pip(words)
            elif tool in ("mkdir", "export", "docker"):
                assert tool != "docker" or words[1] == "push", words
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
