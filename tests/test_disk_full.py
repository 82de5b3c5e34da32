"""A full disk during ingest: a clear message, a non-zero exit, and the previous index still served.

The disk is real: a small tmpfs mounted in a user and mount namespace (`unshare -rm`), filled up
after the first build so the second one runs out of space.
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
