"""Memory: an HTML file over RAG_MAX_HTML_MB is refused after reading at most the cap + 1 byte, never parsed.

Peak RSS is measured in a fresh subprocess (ru_maxrss); the bound is a behaviour check (the file is
neither held whole nor parsed into a tree, which took 6.2 GB for 49 MB), not a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys
from pathlib import Path
from rag.config import Settings
from rag.load.safe import read_chunks
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
p = Path(sys.argv[1])
got = read_chunks(p, p.name, None, Settings(), None)
print(json.dumps({"got": list(got) if got[0] == "error" else "indexed", "base_kb": base,
                  "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def test_large_html_is_refused_with_bounded_memory(tmp_path):
    path = tmp_path / "big.html"
    block = ("<div><p><span>Điều {}. Quy định</span> <b>sinh viên</b> phải <i>đóng học phí</i> đúng hạn."
             "</p></div>\n" * 64)
    with open(path, "w", encoding="utf-8") as f:  # about 30 MB of nested tags
        f.write("<html><body>")
        for i in range(5000):
            f.write(block)
        f.write("</body></html>")
    size_mb = path.stat().st_size / 2**20
    assert size_mb > 25
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env = {k: v for k, v in env.items() if not k.startswith("RAG_")}  # the default limits
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    out = json.loads(proc.stdout)
    status, code, reason = out["got"]
    assert status == "error" and code == "file_too_large" and "RAG_MAX_HTML_MB" in reason
    grew_mb = (out["peak_kb"] - out["base_kb"]) / 1024
    assert grew_mb < 60, f"reading a {size_mb:.0f} MB HTML file grew RSS by {grew_mb:.0f} MB"
