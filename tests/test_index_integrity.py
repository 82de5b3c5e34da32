"""A damaged or malformed index is "re-index required", never an answer and never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rag.index.checksums as index_checksums
from rag.errors import IndexError_, ReindexRequired
from rag.index import Index

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def index_copy(demo_index_dir, tmp_path) -> Path:
    copy = tmp_path / "index"
    shutil.copytree(demo_index_dir, copy)
    return copy


def _data(directory: Path) -> tuple[Path, dict]:
    m = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    return directory / m["data_dir"], m


def _file(directory: Path, kind: str) -> Path:
    root, m = _data(directory)
    names = {"vectors": "data_level0.bin", "chroma sqlite": "chroma.sqlite3"}
    name = names.get(kind, kind)
    found = [rel for rel in m["checksums"] if rel == name or rel.endswith("/" + name)]
    assert len(found) == 1, (kind, sorted(m["checksums"]))
    return root / found[0]


def _rag(*args, env=None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO), e.get("PYTHONPATH", "")])
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "rag.cli", *args], capture_output=True, text=True, env=e,
                          timeout=300)


KINDS = ["bm25/data.csc.index.npy", "bm25/indices.csc.index.npy", "bm25/vocab.index.json", "bm25/params.index.json",
         "bm25/ids.json", "chroma sqlite", "vectors"]


@pytest.mark.parametrize("damage", ["flip", "truncate"])
@pytest.mark.parametrize("kind", KINDS)
def test_each_damaged_index_file_requires_reindex(index_copy, settings_factory, kind, damage):
    path = _file(index_copy, kind)
    data = bytearray(path.read_bytes())
    if damage == "flip":  # same size, one byte changed: only the hash can tell
        data[len(data) // 2] ^= 0x01
    else:
        del data[len(data) // 2:]
    path.write_bytes(bytes(data))
    with pytest.raises(ReindexRequired, match="--rebuild") as e:
        Index.open(settings_factory(index_copy))
    assert e.value.code == "reindex_required"


def test_cli_on_a_damaged_index_says_rebuild_without_traceback(index_copy):
    path = _file(index_copy, "bm25/data.csc.index.npy")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(bytes(data))
    for args in (["search", "học bổng"], ["ask", "học bổng", "--json"], ["info"]):
        proc = _rag(*args, "--index", str(index_copy))
        assert proc.returncode == 3, (args, proc.stdout, proc.stderr)
        assert "error [reindex_required]" in proc.stderr and "--rebuild" in proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout and not proc.stdout.strip()


def test_checksums_are_verified_once_per_process_per_file_version(index_copy, settings_factory, monkeypatch):
    hashed: list[str] = []
    real = index_checksums._hash_file
    monkeypatch.setattr(index_checksums, "_hash_file", lambda p: hashed.append(Path(p).name) or real(p))
    s = settings_factory(index_copy)
    Index.open(s)
    first = len(hashed)
    assert first >= 5  # the BM25 files and ids.json (the Chroma files are hashed while they are copied)
    Index.open(s)
    assert len(hashed) == first, "an unchanged file is not hashed again"
    ids = _file(index_copy, "bm25/ids.json")
    ids.write_text(ids.read_text(encoding="utf-8").replace('"', "'", 2), encoding="utf-8")  # a new version of it
    with pytest.raises(ReindexRequired):
        Index.open(s)
    assert hashed[first:] == ["ids.json"]


MALFORMED = {
    "files null": lambda m: m.update(files=None),
    "files a list": lambda m: m.update(files=["a.md"]),
    "count a string": lambda m: m.update(chunk_count="12"),
    "a JSON list": lambda m: m.clear(),
    "data_dir outside": lambda m: m.update(data_dir="../../etc"),
    "data_dir null": lambda m: m.update(data_dir=None),
    "checksums null": lambda m: m.update(checksums=None),
    "no chroma checksums": lambda m: m.update(checksums={k: v for k, v in m["checksums"].items()
                                                         if not k.startswith("chroma/")}),
    "a bad checksum entry": lambda m: m["checksums"].update({"bm25/ids.json": {"size": "x"}}),
    "missing field": lambda m: m.pop("embed_model"),
    "a file's meta a string": lambda m: next(iter(m["files"].values())).update(meta="x"),
    "a file's meta a list": lambda m: next(iter(m["files"].values())).update(meta=[1]),
}


@pytest.mark.parametrize("what", sorted(MALFORMED))
def test_malformed_manifest_requires_reindex(index_copy, settings_factory, what):
    path = index_copy / "manifest.json"
    m = json.loads(path.read_text(encoding="utf-8"))
    MALFORMED[what](m)
    path.write_text(json.dumps([] if not m else m), encoding="utf-8")
    with pytest.raises(ReindexRequired, match="--rebuild"):
        Index.open(settings_factory(index_copy))


def test_malformed_manifest_in_cli_and_ingest_is_a_clear_error(index_copy, tmp_path):
    path = index_copy / "manifest.json"
    m = json.loads(path.read_text(encoding="utf-8"))
    m["files"] = None
    path.write_text(json.dumps(m), encoding="utf-8")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\nĐiều 1. Học phí\nHọc phí đóng theo kỳ.\n", encoding="utf-8")
    for args in (["info"], ["search", "học phí"], ["ingest", str(tmp_path / "docs"), "--quiet"]):
        proc = _rag(*args, "--index", str(index_copy))
        assert proc.returncode == 3, (args, proc.stderr)
        assert '"files" is null' in proc.stderr and "--rebuild" in proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout
    proc = _rag("ingest", str(tmp_path / "docs"), "--quiet", "--rebuild", "--index", str(index_copy))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(_rag("info", "--index", str(index_copy)).stdout)["document_count"] == 1


def test_index_pointing_at_a_file_is_a_clear_error(tmp_path, settings_factory):
    f = tmp_path / "not-a-dir"
    f.write_text("x")
    with pytest.raises(IndexError_, match="is a file, not an index directory") as e:
        Index.open(settings_factory(f))
    assert e.value.code == "not_an_index"
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\nĐiều 1. Học phí\nHọc phí đóng theo kỳ.\n", encoding="utf-8")
    for args in (["search", "học phí"], ["info"], ["ingest", str(tmp_path / "docs"), "--quiet"]):
        proc = _rag(*args, "--index", str(f))
        assert proc.returncode == 3 and "is a file, not an index directory" in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout
    assert f.read_text() == "x"
