"""Peak memory of loading one large file per format, at and past its size cap.

    python benchmarks/bench_file_memory.py          # about 1 min on 2 CPU cores

Each case runs ``rag.load.load_file`` in a fresh process and prints how far its peak RSS rose
above its RSS just before the call (Linux: the peak is reset through ``/proc/self/clear_refs``), the time, and what came back (characters read, or the refusal). Files are
generated in a temporary directory: a DOCX of one long ``word/document.xml`` of paragraphs, JSON
with one long ``text``, and two adversarial JSON shapes (millions of one-character pages; millions
of empty objects under an ignored key), which cost the most memory per byte.

Out of scope: chunking and segmenting what was read (the same for every format).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 2**20
CHILD = r"""
import sys, time
from rag.config import Settings
from rag.load import load_file
def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":"))
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) restarts from the RSS now: imports do not count
base = status("VmRSS")
t = time.perf_counter()
try:
    what = f"{len(load_file(sys.argv[1], Settings.from_env({})).text) / 2**20:.1f} M chars"
except Exception as e:
    what = f"refused: {str(e)[len(sys.argv[1]) + 1:][:90]}"
grew = (status("VmHWM") - base) / 1024
print(f"{grew:7.0f} MB  {time.perf_counter() - t:5.1f} s  {what}")
"""
PARA = ('<w:p><w:r><w:t xml:space="preserve">Điều {i}. Sinh viên được xét công nhận tốt nghiệp khi tích lũy đủ số '
        'tín chỉ của chương trình, điểm trung bình tích lũy đạt từ 2,00 trở lên.</w:t></w:r></w:p>')
LINE = ("Điều {i}. Sinh viên được xét công nhận tốt nghiệp khi tích lũy đủ số tín chỉ của chương trình, điểm trung "
        "bình tích lũy đạt từ 2,00 trở lên.\n")
W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def docx(path: Path, mb: float) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                   'package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxml'
                   'formats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
                   '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
                   'officedocument.wordprocessingml.document.main+xml"/></Types>')
        z.writestr("_rels/.rels", '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/'
                   'package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
                   'officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>')
        with z.open("word/document.xml", "w") as f:
            f.write(f'<?xml version="1.0"?><w:document {W}><w:body>'.encode())
            for i in range(int(mb * MB / len(PARA.encode()))):
                f.write(PARA.format(i=i).encode())
            f.write(b"</w:body></w:document>")


def json_text(path: Path, mb: float) -> None:
    text = "".join(LINE.format(i=i) for i in range(int(mb * MB / len(LINE.encode()))))
    path.write_text(json.dumps({"title": "Quy chế", "text": text}, ensure_ascii=False), encoding="utf-8")


def json_tiny_pages(path: Path, mb: float) -> None:
    path.write_text('{"pages": [' + ",".join(['"a"'] * int(mb * MB / 4)) + "]}")


def json_empty_objects(path: Path, mb: float) -> None:
    path.write_text('{"text": "x", "other": [' + ",".join(["{}"] * int(mb * MB / 3)) + "]}")


CASES = [("docx", docx, [19.5, 40, 190]), ("json", json_text, [9.5, 45]),
         ("json", json_tiny_pages, [9.5, 45]), ("json", json_empty_objects, [9.5, 45])]


def main() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}  # the default limits
    env["PYTHONPATH"] = str(ROOT)
    print(f"load average {os.getloadavg()[0]:.2f}; peak RSS growth, time, result (default limits)")
    with tempfile.TemporaryDirectory() as tmp:
        for ext, make, sizes in CASES:
            for mb in sizes:
                path = Path(tmp) / f"{make.__name__}-{mb}.{ext}"
                make(path, mb)
                out = subprocess.run([sys.executable, "-c", CHILD, str(path)], env=env, cwd='/tmp', capture_output=True,
                                     text=True, timeout=600)
                print(f"{make.__name__:18} {mb:6.1f} MB of {'XML' if ext == 'docx' else 'JSON'}: "
                      f"{(out.stdout or out.stderr[-300:]).strip()}")
                path.unlink()


if __name__ == "__main__":
    main()
