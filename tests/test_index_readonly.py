"""Serving from a read-only index: a read-only mount, a Docker layer, a volume; opening writes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rag.index import Index

REPO = Path(__file__).resolve().parents[1]
QUESTION = "Điểm rèn luyện loại tốt là bao nhiêu điểm?"


def _snapshot(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns,
                                         hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "")
    return out


def test_opening_an_index_writes_nothing_into_it(demo_index_dir, tmp_path, settings_factory):
    copy = tmp_path / "index"
    shutil.copytree(demo_index_dir, copy)
    before = _snapshot(copy)
    for _ in range(2):
        assert len(Index.open(settings_factory(copy))) > 40
    assert _snapshot(copy) == before


def _userns_ok() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt 2>/dev/null || exit 1"],
                           capture_output=True)
    return probe.returncode == 0


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.skipif(not _userns_ok(), reason="needs `unshare -rm` (user and mount namespaces) for a read-only bind "
                                             "mount; test_non_root_read_only_copy covers a non-root run")
def test_serving_from_a_read_only_bind_mount(demo_index_dir, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(demo_index_dir, copy)
    mnt = tmp_path / "ro"
    mnt.mkdir()
    py = sys.executable
    script = f"""
set -e
mount --bind '{copy}' '{mnt}'
mount -o remount,ro,bind '{mnt}'
if touch '{mnt}/probe' 2>/dev/null; then echo "the mount is writable"; exit 99; fi
'{py}' -m rag.cli search '{QUESTION}' --index '{mnt}' --json --top-k 3
'{py}' -m rag.cli ask '{QUESTION}' --index '{mnt}' --json
"""
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=_env(),
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    search, answer = (json.loads(line) for line in proc.stdout.strip().splitlines())
    assert search["hits"][0]["citation"]["document"] == "Quy chế công tác sinh viên"
    assert answer["refused"] is False and answer["citations"]
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions (the bind-mount test covers root)")
def test_non_root_read_only_copy(demo_index_dir, tmp_path, settings_factory):
    copy = tmp_path / "index"
    shutil.copytree(demo_index_dir, copy)
    for p in [copy, *copy.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        assert len(Index.open(settings_factory(copy))) > 40
    finally:
        for p in [copy, *copy.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


DOC_A = "# Quy định A\n\nĐiều 1. Học phí\nHọc phí đóng theo học kỳ.\n"
DOC_B = "# Quy định B\n\nĐiều 1. Học bổng\nHọc bổng xét theo điểm trung bình.\n"


def test_ingest_into_an_unwritable_index_is_index_read_only(tmp_path, embedder, settings_factory, monkeypatch):
    """A permission error while the new build is written (EACCES, EROFS, EPERM) is the clear error, the
    previous index is kept; before, it was internal_error."""
    import errno

    import rag.index.write
    from rag.errors import IndexError_
    from rag.ingest import ingest

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text(DOC_A, encoding="utf-8")
    s = settings_factory(tmp_path / "idx")
    assert ingest([str(docs)], s, embedder=embedder, progress=False).ok
    (docs / "b.md").write_text(DOC_B, encoding="utf-8")
    for err in (errno.EACCES, errno.EROFS, errno.EPERM):
        def refuse(directory, err=err):
            raise OSError(err, os.strerror(err), str(directory / "v-000002"))

        monkeypatch.setattr(rag.index.write, "_new_data_dir", refuse)
        with pytest.raises(IndexError_) as info:
            ingest([str(docs)], s, embedder=embedder, progress=False)
        assert info.value.code == "index_read_only", info.value
        assert "needs a writable directory" in str(info.value) and "previous index is kept" in str(info.value)
    assert {c.source for c in Index.open(s).chunks} == {"a.md"}
    assert not (tmp_path / "idx" / ".write-probe").exists()
    monkeypatch.undo()
    probe = tmp_path / "idx" / ".write-probe"
    outside = tmp_path / "outside"
    outside.mkdir()
    # whatever a killed writer (or anyone) left under the probe's name is removed, never a reason to fail
    for leave in (probe.mkdir, lambda: (probe / "x").mkdir(parents=True), probe.touch,
                  lambda: probe.symlink_to(outside)):
        leave()
        assert ingest([str(docs)], s, embedder=embedder, progress=False).ok
        assert not probe.exists() and not probe.is_symlink() and outside.is_dir()


@pytest.mark.skipif(not _userns_ok(), reason="needs `unshare -rm` (user and mount namespaces) for a read-only bind "
                                             "mount")
def test_cli_ingest_into_a_read_only_mount_whose_parent_is_writable(tmp_path):
    docs, idx = tmp_path / "docs", tmp_path / "idx"
    docs.mkdir()
    (docs / "a.md").write_text(DOC_A, encoding="utf-8")
    py = sys.executable
    script = f"""
'{py}' -m rag.cli ingest '{docs}' --index '{idx}' --quiet > /dev/null || exit 90
printf '{DOC_B}' > '{docs}/b.md'
mount --bind '{idx}' '{idx}' && mount -o remount,ro,bind '{idx}' || exit 91
'{py}' -m rag.cli ingest '{docs}' --index '{idx}' --quiet
echo "exit=$?"
'{py}' -m rag.cli search 'học phí' --index '{idx}' --json --top-k 5
"""
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=_env(),
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "exit=3", proc.stdout + proc.stderr
    assert "error [index_read_only]" in proc.stderr and "needs a writable directory" in proc.stderr
    assert "Traceback" not in proc.stderr
    hits = json.loads(lines[-1])["hits"]
    assert {h["citation"]["source"] for h in hits} == {"a.md"}


def test_copies_left_by_killed_readers_are_removed_by_the_next_one(demo_index_dir, settings_factory, tmp_path,
                                                                   monkeypatch):
    """A reader killed while it copied the Chroma store leaves $TMPDIR/rag-index-<pid>-*; the next reader removes
    those of processes that are gone, untouched for an hour, and nothing else."""
    import tempfile
    import time

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    old = time.time() - 2 * 3600
    made = {}
    for name, pid, age in [("killed", dead, old), ("recent", dead, time.time()), ("alive", os.getpid(), old),
                           ("other", None, old)]:
        path = tmp_path / "tmp" / (f"rag-index-{pid}-{name}" if pid else f"rag-index-{name}")
        (path / "chroma").mkdir(parents=True)
        os.utime(path, (age, age))
        made[name] = path
    assert len(Index.open(settings_factory(demo_index_dir))) > 40
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == sorted(
        made[n].name for n in ("recent", "alive", "other"))  # and the reader's own copy is gone


@pytest.mark.skipif(not _userns_ok(), reason="needs `unshare -rm` (user and mount namespaces) for a read-only bind "
                                             "mount")
def test_cli_ingest_into_a_writable_index_whose_parent_is_read_only(tmp_path):
    """A writable volume mounted at /index on a read-only root: only the index directory can be written. Ingest
    works there (the lock, the OCR cache and the new version live inside it), two writers still exclude each
    other whichever path they see, and a missing index directory is an error naming its read-only parent.
    Before, the lock was <parent>/.idx.lock: index_read_only."""
    docs, parent = tmp_path / "docs", tmp_path / "ro"
    idx = parent / "idx"
    docs.mkdir()
    (docs / "a.md").write_text(DOC_A, encoding="utf-8")
    py = sys.executable
    # a writer that took the lock while the parent was writable, holding it until told to stop (or 120 s pass)
    hold = (f"import os, time; from pathlib import Path; from rag.config import Settings; from rag.index import "
            f"index_lock\nwith index_lock(Settings.from_env({{}}), Path('{idx}')):\n    print('held', flush=True)\n"
            f"    end = time.time() + 120\n    while not os.path.exists('{tmp_path}/release') and time.time() < end: "
            f"time.sleep(0.05)")
    script = f"""
'{py}' -m rag.cli ingest '{docs}' --index '{idx}' --quiet > /dev/null || exit 90
printf '{DOC_B}' > '{docs}/b.md'
'{py}' -c "{hold}" > '{tmp_path}/held' &
for i in $(seq 600); do grep -q held '{tmp_path}/held' && break; sleep 0.1; done
grep -q held '{tmp_path}/held' || exit 95
mount --bind '{parent}' '{parent}' && mount -o remount,ro,bind '{parent}' || exit 91
mount --bind '{idx}' '{idx}' && mount -o remount,rw,bind '{idx}' || exit 92
if touch '{parent}/probe' 2>/dev/null; then echo "the parent is writable"; exit 93; fi
touch '{idx}/probe' && rm '{idx}/probe' || exit 94
RAG_LOCK_TIMEOUT=1 '{py}' -m rag.cli ingest '{docs}' --index '{idx}' --quiet > /dev/null
echo "busy=$?"
touch '{tmp_path}/release'; wait
'{py}' -c "from rag.ocr import ocr_cache_dir; print(ocr_cache_dir('{idx}'))"
'{py}' -m rag.cli ingest '{docs}' --index '{idx}' --quiet > /dev/null
echo "exit=$?"
'{py}' -m rag.cli search 'học bổng' --index '{idx}' --json --top-k 5
'{py}' -m rag.cli ingest '{docs}' --index '{parent}/new' --quiet
echo "new=$?"
"""
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=_env(),
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    busy, cache, done, search, new = proc.stdout.strip().splitlines()
    assert done == "exit=0", proc.stderr
    assert {h["citation"]["source"] for h in json.loads(search)["hits"]} == {"a.md", "b.md"}
    assert busy == "busy=3" and "error [index_busy]" in proc.stderr, proc.stderr
    assert cache == f"{idx}/.ocr-cache", "the OCR cache moves inside when beside the index cannot be written"
    assert new == "new=3" and "error [index_read_only]: cannot create the index directory" in proc.stderr
    assert f"{parent} is not writable" in proc.stderr and f"Create {parent}/new yourself" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (parent / ".idx.lock").exists() and (idx / ".ingest.lock").is_file()
