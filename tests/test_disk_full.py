"""A full disk during ingest: a clear message, a non-zero exit, and the previous index still served.

The disk is real in the slow tests: a small tmpfs mounted in a user and mount namespace
(`unshare -rm`), filled up after the first build so the second one runs out of space. Chroma reports
some full-disk writes as its own error ("Error in compaction …", no errno); the fast tests fake that
error on a filesystem reported full.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


DOC_A = "# Quy định A\n\nĐiều 1. Học phí\nHọc phí đóng theo học kỳ.\n"
DOC_B = "# Quy định B\n\nĐiều 1. Học bổng\nHọc bổng xét theo điểm trung bình.\n"
COMPACTION = "Error in compaction: Failed to apply logs to the metadata segment"


class InternalError(Exception):
    """What chromadb raises (chromadb.errors.InternalError) when its log cannot be applied."""


def _two_builds(tmp_path, embedder, settings_factory, monkeypatch, free: int):
    import rag.index.write
    from rag.ingest import ingest

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text(DOC_A, encoding="utf-8")
    s = settings_factory(tmp_path / "idx")
    assert ingest([str(docs)], s, embedder=embedder, progress=False).ok
    (docs / "b.md").write_text(DOC_B, encoding="utf-8")
    real_fill = rag.index.write._fill_collection

    def fill_then_fail(col, *args):
        real_fill(col, *args)
        raise InternalError(COMPACTION)

    real_usage = shutil.disk_usage
    monkeypatch.setattr(rag.index.write, "_fill_collection", fill_then_fail)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=free))
    return docs, s


def test_chroma_compaction_error_on_a_full_disk_is_disk_full(tmp_path, embedder, settings_factory, monkeypatch):
    from rag.errors import IndexError_
    from rag.index import Index
    from rag.ingest import ingest

    docs, s = _two_builds(tmp_path, embedder, settings_factory, monkeypatch, free=8192)
    with pytest.raises(IndexError_) as info:
        ingest([str(docs)], s, embedder=embedder, progress=False)
    assert info.value.code == "disk_full" and "previous one is kept" in str(info.value)
    assert COMPACTION in str(info.value.__cause__)
    assert sorted(p.name for p in (tmp_path / "idx").iterdir() if p.name.startswith("v-")) == ["v-000001"]
    assert {c.source for c in Index.open(s).chunks} == {"a.md"}


def test_chroma_error_with_room_left_is_not_called_disk_full(tmp_path, embedder, settings_factory, monkeypatch):
    from rag.ingest import ingest

    docs, s = _two_builds(tmp_path, embedder, settings_factory, monkeypatch, free=50 << 30)
    with pytest.raises(InternalError, match="compaction"):
        ingest([str(docs)], s, embedder=embedder, progress=False)


def _userns_ok() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _userns_ok(), reason="needs `unshare -rm` to mount a small tmpfs")
def test_disk_full_during_ingest_keeps_the_previous_index(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    docs, more = tmp_path / "docs", tmp_path / "more"
    docs.mkdir()
    more.mkdir()
    (docs / "a.md").write_text("# Quy định A\n\nĐiều 1. Học phí\nHọc phí đóng theo học kỳ.\n", encoding="utf-8")
    for i in range(3):
        (more / f"b{i}.md").write_text(f"# Quy định B{i}\n\n" + "".join(
            f"Điều {j}. Học bổng {i}-{j}\nSinh viên có điểm trung bình từ 3,{j} được xét học bổng loại {i}.\n\n"
            for j in range(1, 9)), encoding="utf-8")
    idx = disk / "idx"
    py = sys.executable
    script = f"""
mount -t tmpfs -o size=8m tmpfs '{disk}' || exit 90
'{py}' -m rag.cli ingest '{docs}' --index '{idx}' --quiet || exit 91
'{py}' -c "import shutil; f = shutil.disk_usage('{disk}').free; open('{disk}/filler', 'wb').write(bytes(f - 96 * 1024))"
'{py}' -m rag.cli ingest '{more}' --index '{idx}' --quiet > '{tmp_path}/out.txt' 2> '{tmp_path}/err.txt'
echo "exit=$?"
ls -a '{idx}'
'{py}' -m rag.cli search 'học phí' --index '{idx}' --json
"""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    err = (tmp_path / "err.txt").read_text()
    assert lines[0] != "exit=0", "the second ingest cannot have succeeded on a full disk"
    assert "error [disk_full]" in err and "is full" in err and "previous one is kept" in err, err
    assert "Traceback" not in err + (tmp_path / "out.txt").read_text()
    listing = lines[1:-1]
    assert sorted(n for n in listing if n.startswith("v-")) == ["v-000001"], listing  # the failed build is gone
    hits = json.loads(lines[-1])["hits"]
    assert hits and all(h["citation"]["source"].endswith("a.md") for h in hits), hits


@pytest.mark.slow
@pytest.mark.skipif(not _userns_ok(), reason="needs `unshare -rm` to mount a small tmpfs")
@pytest.mark.parametrize("free_kb", [400, 1500])
def test_disk_full_inside_chroma_is_disk_full(tmp_path, free_kb):
    """With about 1.5 MB left, Chroma 1.5 fails in its own code ("Error in compaction …", no errno)."""
    disk, docs, more = tmp_path / "disk", tmp_path / "docs", tmp_path / "more"
    for d in (disk, docs, more):
        d.mkdir()
    (docs / "a.md").write_text(DOC_A, encoding="utf-8")
    for i in range(6):
        (more / f"b{i}.md").write_text(f"# Quy định B{i}\n\n" + "".join(
            f"Điều {j}. Học bổng {i}-{j}\n" + f"Sinh viên có điểm trung bình từ 3,{j} được xét học bổng loại {i}. " * 3
            + "\n\n" for j in range(1, 40)), encoding="utf-8")
    idx = disk / "idx"
    py = sys.executable
    script = f"""
mount -t tmpfs -o size=24m tmpfs '{disk}' || exit 90
'{py}' -m rag.cli ingest '{docs}' --index '{idx}' --quiet > /dev/null || exit 91
'{py}' -c "import shutil; f = shutil.disk_usage('{disk}').free; open('{disk}/filler', 'wb').write(bytes(f - {free_kb} * 1024))"
'{py}' -m rag.cli ingest '{more}' --index '{idx}' --quiet 2> '{tmp_path}/err.txt'
echo "exit=$?"
'{py}' -m rag.cli search 'học phí' --index '{idx}' --json
"""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    err = (tmp_path / "err.txt").read_text()
    lines = proc.stdout.strip().splitlines()
    assert "exit=3" in lines, proc.stdout + err
    assert "error [disk_full]" in err and "internal_error" not in err and "Traceback" not in err, err
    hits = json.loads(lines[-1])["hits"]
    assert hits and all(h["citation"]["source"] == "a.md" for h in hits), hits
