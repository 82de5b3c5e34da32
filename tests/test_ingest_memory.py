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
from rag.reader import read_chunks
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


PAGE_CHILD = r"""
import json, resource, sys
from rag.config import Settings
from rag.load import load_file
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
doc = load_file(sys.argv[1], Settings())
print(json.dumps({"chars": len(doc.text), "base_kb": base,
                  "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _regulation_page(path: Path, size: int) -> None:
    """A regulation as a web page: chapters, articles in nested sections, long paragraphs, lists, tables."""
    para = ("<p>{k}. Sinh viên được <b>xét công nhận tốt nghiệp</b> khi tích lũy đủ số tín chỉ của chương trình, "
            "điểm trung bình tích lũy đạt từ 2,00 trở lên, không bị truy cứu trách nhiệm hình sự và có "
            "<a href='#'>chứng chỉ ngoại ngữ</a> theo quy định của Trường. " * 3 + "</p>\n")
    table = "<table><tr><th>Xếp loại</th><th>Điểm</th></tr><tr><td>Giỏi</td><td>3,2 – 3,59</td></tr></table>\n"
    with open(path, "w", encoding="utf-8") as f:
        written = f.write("<!doctype html><html><head><meta charset='utf-8'><title>Quy chế đào tạo</title></head><body>")
        i = 0
        while written < size - 5000:
            i += 1
            part = f"<div class='article'><section><h3>Điều {i}. Điều kiện tốt nghiệp</h3>"
            part += "".join(para.format(k=k) for k in range(1, 4))
            part += "<ul><li>a) Không nợ học phí;</li><li>b) Hoàn thành thực tập.</li></ul>"
            part += (table if i % 10 == 0 else "") + "</section></div>\n"
            written += len(part.encode("utf-8"))
            f.write(part)
        f.write("</body></html>")


def test_html_page_at_the_cap_is_read_with_bounded_memory(tmp_path):
    """A page just under RAG_MAX_HTML_MB is streamed: RSS grows by a few times its size, not ~30 times."""
    from rag.config import Settings
    from rag.load.common import MB

    path = tmp_path / "quy-che.html"
    _regulation_page(path, int(Settings().max_html_mb * MB) - 1)
    size_mb = path.stat().st_size / MB
    assert size_mb > 0.99 * Settings().max_html_mb
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env = {k: v for k, v in env.items() if not k.startswith("RAG_")}
    proc = subprocess.run([sys.executable, "-c", PAGE_CHILD, str(path)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    out = json.loads(proc.stdout)
    assert out["chars"] > 0.5 * size_mb * MB  # the page was read, not refused
    grew_mb = (out["peak_kb"] - out["base_kb"]) / 1024
    assert grew_mb < 150, f"reading a {size_mb:.1f} MB HTML page grew RSS by {grew_mb:.0f} MB"
