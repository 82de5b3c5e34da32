"""A newcomer's first commands: clear errors for a missing extra, nothing written into the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Installed first on sys.path, this makes `import gradio` fail as it does where the ui extra is not installed.
BLOCK_GRADIO = '''
import sys

class _NoGradio:
    def find_spec(self, name, path=None, target=None):
        if name == "gradio" or name.startswith("gradio."):
            raise ModuleNotFoundError("No module named 'gradio'", name="gradio")
        return None

sys.meta_path.insert(0, _NoGradio())
'''


def _without_gradio(tmp_path: Path) -> dict:
    site = tmp_path / "no-gradio"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_GRADIO, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    return env


def test_rag_ui_without_gradio_says_how_to_install_it(tmp_path):
    env = _without_gradio(tmp_path)
    blocked = subprocess.run([sys.executable, "-c", "import gradio"], env=env, capture_output=True, text=True)
    assert blocked.returncode != 0 and "No module named 'gradio'" in blocked.stderr  # the block is real

    run = subprocess.run([sys.executable, "-m", "rag.cli", "ui", "--index", str(tmp_path / "index")], env=env,
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert run.stderr == "error [missing_dependency]: the web chat needs gradio: pip install '.[ui]'\n"
    assert "Traceback" not in run.stdout + run.stderr
    assert not (tmp_path / "index").exists()  # refused before anything was built


def test_rag_eval_writes_its_report_beside_the_index_not_into_the_working_directory(tmp_path, monkeypatch, capsys,
                                                                                   demo_index_dir):
    from rag.cli import main

    ds = tmp_path / "mini.jsonl"
    ds.write_text(json.dumps({"question": "Sinh viên bị cảnh báo học tập khi nào?", "expected": "answer"},
                             ensure_ascii=False) + "\n", encoding="utf-8")
    work = tmp_path / "checkout"
    work.mkdir()
    monkeypatch.chdir(work)
    for k in [k for k in os.environ if k.startswith("RAG_")]:
        monkeypatch.delenv(k)
    assert main(["eval", str(ds), "--index", str(demo_index_dir), "--retrieval-only"]) == 0
    err = capsys.readouterr().err
    out = demo_index_dir.parent / "rag-eval" / "mini"
    assert (out / "report.json").is_file() and (out / "summary.md").is_file()
    assert str(out / "report.json") in err  # the paths are printed
    assert list(work.iterdir()) == []
    assert not (demo_index_dir / "rag-eval").exists()  # beside the index, never inside it


@pytest.mark.slow  # indexes and evaluates the demo corpus (about a minute on 2 cores)
def test_rag_eval_corpora_writes_into_the_cache_not_into_the_working_directory(tmp_path, monkeypatch, capsys):
    from rag.cli import main

    work = tmp_path / "checkout"
    work.mkdir()
    monkeypatch.chdir(work)
    for k in [k for k in os.environ if k.startswith("RAG_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["eval", "--corpora", "--data", str(tmp_path / "no-data")]) == 0
    reports = tmp_path / "cache" / "rag" / "rag-eval" / "corpora"
    assert sorted(p.name for p in reports.iterdir()) == ["demo-dev.json", "demo-test.json"]
    assert (tmp_path / "cache" / "rag" / "eval" / "demo").is_dir()  # the indexes: --work's default
    assert f"reports: {reports}/" in capsys.readouterr().err
    assert list(work.iterdir()) == []  # nothing in the working directory


def test_the_eval_folder_is_ignored_by_git():
    ignored = subprocess.run(["git", "check-ignore", "-q", "rag-eval/demo/report.json"], cwd=ROOT)
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.returncode == 0
