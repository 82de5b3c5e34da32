"""Builders for OCR tests and benchmarks/bench_ocr.py: demo regulation text drawn as page images
(DejaVu Sans, Pillow), image-only and mixed PDFs, and honest fake Tesseract commands that record
their calls.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import sys
from pathlib import Path

from _load_fixtures import make_pdf, unicode_font

DEMO = Path(__file__).resolve().parents[1] / "rag" / "demo" / "quy-che-dao-tao.md"


def tesseract_with_vie() -> str | None:
    """Why OCR tests must skip (None when a real Tesseract with the Vietnamese model is installed)."""
    import subprocess

    exe = shutil.which("tesseract")
    if exe is None:
        return "tesseract is not installed (apt-get install tesseract-ocr tesseract-ocr-vie)"
    out = subprocess.run([exe, "--list-langs"], capture_output=True, text=True).stdout.split()
    if "vie" not in out:
        return "tesseract has no Vietnamese model (apt-get install tesseract-ocr-vie)"
    return drawing_unavailable()


def drawing_unavailable() -> str | None:
    """Why page images cannot be drawn here (None when Pillow and a DejaVu font are present)."""
    import importlib.util

    if importlib.util.find_spec("PIL") is None:
        return "Pillow is not installed (pip install pillow: the test extra draws page images with it)"
    if unicode_font() is None:
        return "no DejaVuSans.ttf to draw Vietnamese text (apt-get install fonts-dejavu-core)"
    return None


def demo_lines(first: int, last: int, *, chapter: bool = True) -> list[str]:
    """Lines of the demo Quy chế đào tạo from Điều ``first`` to Điều ``last`` (with the Chương heading
    just before ``first`` when ``chapter``); blank lines between articles are kept as ''."""
    lines = DEMO.read_text(encoding="utf-8").split("\n")
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"Điều {first}."))
    end = next((i for i, ln in enumerate(lines) if ln.startswith(f"Điều {last + 1}.")), len(lines))
    if chapter:
        j = start - 1
        while j > 0 and not lines[j].startswith("Chương"):
            j -= 1
        if start - j <= 4:
            start = j
    out = [ln.strip() for ln in lines[start:end]]
    out = [ln for ln in out if not ln.startswith("#")]
    while out and not out[-1]:
        out.pop()
    return out


def render_pages(
    lines: list[str],
    *,
    dpi: int = 300,
    page_in: tuple[float, float] = (8.27, 11.69),
    margin_in: float = 0.8,
    font_pt: float = 12.0,
    scan_like: bool = False,
    seed: int = 0,
    font_path: Path | None = None,
):
    """Draw ``lines`` (each a paragraph, '' a gap) on white pages; returns (images, text of each page as laid out).

    ``scan_like`` adds what a photocopier does: a 0.4° skew, a slight blur and dark specks.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_path or unicode_font()), size=round(font_pt * dpi / 72))
    width, height = round(page_in[0] * dpi), round(page_in[1] * dpi)
    margin = round(margin_in * dpi)
    step = round(font_pt * 1.45 * dpi / 72)
    wrapped: list[str] = []
    for para in lines:
        if not para:
            wrapped.append("")
            continue
        line = ""
        for word in para.split():
            trial = f"{line} {word}" if line else word
            if font.getlength(trial) <= width - 2 * margin or not line:
                line = trial
            else:
                wrapped.append(line)
                line = word
        wrapped.append(line)

    pages: list[list[str]] = [[]]
    y = margin
    for ln in wrapped:
        if y + step > height - margin:
            pages.append([])
            y = margin
        if ln or pages[-1]:
            pages[-1].append(ln)
            y += step if ln else step // 2
    images, texts = [], []
    rng = random.Random(seed)
    for page in pages:
        img = Image.new("L", (width, height), 255)
        draw = ImageDraw.Draw(img)
        y = margin
        for ln in page:
            if ln:
                draw.text((margin, y), ln, font=font, fill=0)
            y += step if ln else step // 2
        images.append(photocopy(img, dpi, rng) if scan_like else img)
        texts.append("\n".join(ln for ln in page if ln))
    return images, texts


def photocopy(img, dpi: int, rng: random.Random):
    """What a photocopier does to a greyscale page image: a 0.4° skew, a slight blur, dark specks."""
    from PIL import Image, ImageFilter

    img = img.rotate(0.4, resample=Image.BICUBIC, fillcolor=255)
    img = img.filter(ImageFilter.GaussianBlur(radius=dpi / 400))
    px = img.load()
    for _ in range(img.width * img.height // 4000):
        px[rng.randrange(img.width), rng.randrange(img.height)] = rng.randrange(0, 120)
    return img


def printed_pages(path: Path, numbers: list[int], dpi: int = 300, seed: int = 0):
    """Pages of a text-layer PDF as photocopied images at ``dpi`` (real typography, known text)."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    rng = random.Random(seed)
    images = [photocopy(pdf[n - 1].render(scale=dpi / 72, grayscale=True).to_pil(), dpi, rng) for n in numbers]
    pdf.close()
    return images


def image_pdf(path: Path, images, dpi: int) -> Path:
    """An image-only PDF (no text layer), one page per image, page size = image size at ``dpi``."""
    images[0].save(path, "PDF", save_all=True, append_images=list(images[1:]), resolution=float(dpi))
    return path


def mixed_pdf(path: Path, items: list, dpi: int = 300) -> Path:
    """A PDF whose pages are text-layer pages (``str`` items) and scanned pages (PIL images), in order."""
    import pypdfium2 as pdfium

    parts = []
    for i, item in enumerate(items):
        part = path.with_name(f"{path.stem}.part{i}.pdf")
        if isinstance(item, str):
            make_pdf(part, [item])
        else:
            image_pdf(part, [item], dpi)
        parts.append(part)
    out = pdfium.PdfDocument.new()
    for part in parts:
        src = pdfium.PdfDocument(str(part))
        out.import_pages(src)
        src.close()
    out.save(str(path))
    out.close()
    for part in parts:
        part.unlink()
    return path


_FAKE = '''#!{python}
"""A fake tesseract for tests: answers --version and --list-langs; otherwise logs the call and prints TEXT."""
import json, os, sys, time
VERSION, LANGS, TEXT, LOG, SLEEP, FAIL = {version!r}, {langs!r}, {text!r}, {log!r}, {sleep!r}, {fail!r}
args = sys.argv[1:]
if args[:1] == ["--version"]:
    print(VERSION)
    print(" leptonica-1.82.0")
    sys.exit(0)
if args[:1] == ["--list-langs"]:
    print('List of available languages in "/nonexistent/tessdata/" (%d):' % len(LANGS))
    print("\\n".join(LANGS))
    sys.exit(0)
start = time.time()
image = sys.stdin.buffer.read()
time.sleep(SLEEP)
with open(LOG, "a") as f:
    f.write(json.dumps({{"args": args, "start": start, "end": time.time(), "bytes": len(image),
                        "omp": os.environ.get("OMP_THREAD_LIMIT")}}) + "\\n")
if FAIL:
    sys.stderr.write("Error in pixReadMem: Unknown format\\n")
    sys.exit(1)
sys.stdout.write(TEXT + "\\f")
'''


def fake_tesseract(
    folder: Path,
    *,
    text: str = "Điểu 1. Phạm vi điều chỉnh\nQuy chế này áp dụng đối với sinh viên. |",
    langs: tuple[str, ...] = ("eng", "osd", "vie"),
    version: str = "tesseract 5.3.0-fake",
    sleep: float = 0.0,
    fail: bool = False,
) -> Path:
    """Write an executable fake tesseract in ``folder``; its OCR calls go to ``folder/calls.jsonl`` (see ``calls``)."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "tesseract"
    log = folder / "calls.jsonl"
    exe.write_text(_FAKE.format(python=sys.executable, version=version, langs=list(langs), text=text,
                                log=str(log), sleep=sleep, fail=fail), encoding="utf-8")
    exe.chmod(0o755)
    return exe


def logging_tesseract(folder: Path, real: str) -> Path:
    """A wrapper that logs each OCR call (not --version / --list-langs) to ``folder/calls.jsonl``, then runs ``real``."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "tesseract"
    log = folder / "calls.jsonl"
    exe.write_text(
        "#!/bin/sh\n"
        'case "$1" in --*) ;; *) echo \'{"args": "ocr"}\' >> ' + f"'{log}'" + " ;; esac\n"
        f'exec \'{real}\' "$@"\n',
        encoding="utf-8",
    )
    exe.chmod(0o755)
    return exe


def calls(exe: Path) -> list[dict]:
    log = exe.parent / "calls.jsonl"
    if not log.exists():
        return []
    return [json.loads(ln) for ln in log.read_text(encoding="utf-8").splitlines() if ln.strip()]


def articles_in(text: str) -> list[str]:
    return re.findall(r"^Điều (\d+)\.", text, flags=re.M)


def stamp_text(path: Path, page_index: int, text: str) -> Path:
    """Add a small line of real text (a text layer) on top of page ``page_index`` of the PDF at ``path``."""
    import ctypes

    import pypdfium2 as pdfium
    import pypdfium2.raw as c

    pdf = pdfium.PdfDocument(str(path))
    data = unicode_font().read_bytes()
    buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    font = c.FPDFText_LoadFont(pdf.raw, buf, len(data), c.FPDF_FONT_TRUETYPE, True)
    page = pdf[page_index]
    obj = c.FPDFPageObj_CreateTextObj(pdf.raw, font, 9.0)
    wide = ctypes.create_string_buffer((text + "\0").encode("utf-16-le"))
    c.FPDFText_SetText(obj, ctypes.cast(wide, c.FPDF_WIDESTRING))
    c.FPDFPageObj_Transform(obj, 1, 0, 0, 1, 20, 20)
    c.FPDFPage_InsertObject(page.raw, obj)
    c.FPDFPage_GenerateContent(page.raw)
    page.close()
    out = path.with_name(path.stem + ".stamped.pdf")
    pdf.save(str(out))
    c.FPDFFont_Close(font)
    pdf.close()
    out.replace(path)
    return path
