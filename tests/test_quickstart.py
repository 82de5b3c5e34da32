"""The README's quick start, run as a newcomer runs it: a fresh clone, a fresh virtualenv, the exact commands.

The commands are read from README.md (the first ``bash`` block under "Quick start"), so the
README cannot drift from what works. Needs PyPI (skipped with the reason when it cannot be
reached); the pip cache makes later runs faster.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_TITLES = ("Quy chế đào tạo trình độ đại học", "Quy chế công tác sinh viên", "Quy định về học bổng")


def quickstart_commands(readme: str) -> list[str]:
    """The command lines of the first ```bash block of the README's "Quick start" section."""
    section = re.search(r"^## Quick start\n(.*?)(?=^## )", readme, flags=re.S | re.M)
    assert section, 'README.md has no "## Quick start" section'
    block = re.search(r"```bash\n(.*?)```", section.group(1), flags=re.S)
    assert block, "the quick start has no ```bash block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_quick_start_is_one_install_and_ask_command():
    [command] = quickstart_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert "pip install" in command and "rag ask" in command and "venv" in command


def _pypi_reachable() -> str | None:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=15) as r:
            r.read(1)
    except OSError as e:
        return f"PyPI cannot be reached ({e}): the quick start installs from it"
    return None


def _fresh_clone(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _need_git_checkout() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the test copies the files git tracks")


def _clone_needing_pypi(tmp_path: Path) -> Path:
    _need_git_checkout()
    reason = _pypi_reachable()
    if reason:
        pytest.skip(reason)
    return _fresh_clone(tmp_path / "clone")


def test_every_openapi_schema_command_in_the_docs_works_on_a_fresh_clone(tmp_path):
    pytest.importorskip("cog")
    _need_git_checkout()
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    commands = [line.strip() for doc in docs for line in doc.read_text(encoding="utf-8").splitlines()
                if "> .cog/openapi_schema.json" in line and not line.lstrip().startswith("#")]
    assert commands, "the docs show no command that writes .cog/openapi_schema.json"
    for command in commands:
        clone = _fresh_clone(tmp_path / f"clone{commands.index(command)}")
        assert not (clone / ".cog").exists()  # as in a fresh clone
        run = subprocess.run(["bash", "-c", command.split("#")[0]], cwd=clone, capture_output=True, text=True,
                             timeout=600, env={**os.environ, "PYTHONPATH": str(clone)})
        assert run.returncode == 0, f"{command}\n{run.stderr[-2000:]}"
        schema = json.loads((clone / ".cog" / "openapi_schema.json").read_text(encoding="utf-8"))
        assert "Input" in schema["components"]["schemas"]


@pytest.mark.slow
def test_the_pinned_extras_resolve_together_without_a_conflict(tmp_path):
    """One resolution of the runtime pins and every extra, as `.ci/run` installs them (no pip "ERROR")."""
    clone = _clone_needing_pypi(tmp_path)  # building the metadata writes rag.egg-info: not into this checkout
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                          "--report", str(tmp_path / "report.json"), "-r", str(clone / "requirements.txt"),
                          f"{clone}[dev,training,ui]"], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert run.returncode == 0 and not re.search(r"^ERROR:", run.stderr, flags=re.M), run.stderr[-3000:]
    chosen = {i["metadata"]["name"].lower(): i["metadata"]["version"]
              for i in json.loads((tmp_path / "report.json").read_text())["install"]}
    assert {"gradio", "runpod", "tomlkit"} <= set(chosen)


@pytest.mark.slow
def test_the_readme_quick_start_answers_from_the_demo_regulations(tmp_path):
    clone = _clone_needing_pypi(tmp_path)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAG_", "VIRTUAL_ENV", "PYTHON")) and k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    venv_bin = str(Path(os.environ["VIRTUAL_ENV"]) / "bin") if os.environ.get("VIRTUAL_ENV") else None
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env["PIP_CACHE_DIR"] = os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip")  # keep it warm
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # the demo index is built here, not in the user's cache
    env["HF_HUB_OFFLINE"] = "1"  # "nothing downloaded": a model download would fail the answer
    env["HOME"] = str(tmp_path / "home")
    # No byte-compiling of ~200 packages (CPU time the check does not need). pip reads its
    # store_false options inverted from the environment: PIP_NO_COMPILE=0 is what turns compiling off.
    env["PIP_NO_COMPILE"] = "0"
    t0 = time.monotonic()
    outputs = []
    for command in quickstart_commands((ROOT / "README.md").read_text(encoding="utf-8")):
        run = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True,
                             timeout=1500)
        outputs.append(run.stdout)
        assert run.returncode == 0, f"{command}\nfailed with {run.returncode}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        assert not re.search(r"^ERROR:", run.stderr, flags=re.M), f"pip reported an error:\n{run.stderr[-3000:]}"
    print(f"quick start: {time.monotonic() - t0:.0f} s")
    answer = outputs[-1]
    sources = answer.split("Nguồn:", 1)
    assert len(sources) == 2, f"no sources in the answer:\n{answer}"
    assert re.search(r"\[1\] [^\n]*Điều \d+", sources[1]) and any(t in sources[1] for t in DEMO_TITLES), answer
    assert (tmp_path / "cache" / "rag" / "index" / "manifest.json").is_file()  # the demo index was built
