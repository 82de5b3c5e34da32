"""OCR of scanned regulations (issue 3): character error rate and speed by resolution, then the real scans.

    python benchmarks/bench_ocr.py                      # everything (a few minutes on 2 cores)
    python benchmarks/bench_ocr.py --dpis 200,300 --skip-real

1. Rendered pages. Điều 1–6 of the demo Quy chế đào tạo (rag/demo/quy-che-dao-tao.md) drawn as
   page images in two conditions, wrapped as image-only PDFs and read through the same path as
   `rag ingest` (``read_document``: render → Tesseract vie → repairs → normaliser):
   - "clean": DejaVu Sans 12 pt drawn at 600 dpi (a born-digital page printed to image);
   - "photocopy": DejaVu Serif 10 pt drawn at 300 dpi — the resolution of the real HUST scans —
     with a 0.4° skew, a blur and dark specks;
   - real typography: seven body pages of three text-layer HUST PDFs (Times New Roman 13 pt)
     rendered at 300 dpi with the same photocopy damage; the reference is each page's text layer.
   Printed per OCR resolution: CER against the drawn text (edit distance / reference length,
   whitespace runs as one space), the Điều headings recovered, seconds per page (wall clock
   with the default pool of one Tesseract per core: throughput on this machine, and sensitive to
   whatever else runs on it) and Tesseract CPU seconds per page (the load-independent cost).
2. The three real scans ("QD ban hanh …" in ../shared/data/hust-regulations/pdf, no text layer):
   pages, seconds, Điều headings found, and the unknown-syllable rate (share of OCR'd syllables
   that never occur in the six text-layer HUST PDFs: a proxy for misreads, since there is no
   ground truth; some are legitimate rare words), per resolution.
3. Retrieval: all nine HUST PDFs ingested (the scans OCR'd at the default RAG_OCR_DPI, from the
   cache of step 2) and `rag search`-style questions whose answers are only in the scans: the
   rank of the first passage from the expected file and its citation.

Skips part 2–3 with a message when ../shared/data is absent; needs tesseract-ocr and
tesseract-ocr-vie, DejaVu fonts and Pillow (to draw the pages).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # the page drawing helpers shared with tests/test_ocr.py

from common import SHARED, machine, table  # noqa: E402

HUST = SHARED / "hust-regulations" / "pdf"
SERIF = Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf")
QUESTIONS = [  # (question, file the answer is in, what the answer says)
    ("Mỗi sinh viên được xét công nhận, chuyển đổi tối đa bao nhiêu tín chỉ?",
     "QD ban hanh QD chuyen doi hoc phan tuong duong.pdf", "tối đa 30 tín chỉ"),
    ("Thời lượng video bài giảng B-Learning là bao nhiêu phút?",
     "QD ban hanh QD to chuc day hoc tren nen tang CN ket noi - truc tuyen.pdf", "15-30 phút"),
    ("Thời gian thi trắc nghiệm trực tuyến là bao nhiêu phút?",
     "QD ban hanh QD to chuc thi Truc tuyen.pdf", "40 phút đến 70 phút"),
]


def child_cpu() -> float:
    """CPU seconds used so far by finished child processes (the Tesseract runs): a cost per page that,
    unlike wall time, does not depend on what else the machine is doing."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def articles(text: str) -> list[str]:
    return re.findall(r"^(?:Điều|ĐIỀU) (\d+)\.", text, flags=re.M)


def _ocr_rows(label, pdf, references, dpis, expected) -> list[list]:
    from rag.config import Settings
    from rag.ingest import read_document
    from rag.ocr import _cer_form, edit_distance

    rows = []
    ref_chars = sum(len(_cer_form(r)) for r in references)
    for dpi in dpis:
        t0, cpu0 = time.perf_counter(), child_cpu()
        doc = read_document(pdf, Settings(ocr_dpi=dpi), source=pdf.name)  # no index dir: no cache
        seconds, cpu = time.perf_counter() - t0, child_cpu() - cpu0
        by_number = {p.number: p.text for p in doc.pages}
        edits = sum(edit_distance(_cer_form(by_number.get(i, "")), _cer_form(r))
                    for i, r in enumerate(references, 1))
        found = articles(doc.text)
        rows.append([label, dpi, len(references), ref_chars, f"{100 * edits / ref_chars:.2f}%",
                     f"{sum((Counter(found) & Counter(expected)).values())}/{len(expected)}",
                     f"{seconds / len(references):.1f}", f"{cpu / len(references):.1f}"])
        print(f"  {label} @ {dpi} dpi: done", file=sys.stderr, flush=True)
    return rows


def rendered(dpis: list[int], workdir: Path) -> None:
    from _ocr_fixtures import demo_lines, image_pdf, printed_pages, render_pages

    from rag.load import load_pdf_pages
    from rag.normalise import clean_pages

    lines = demo_lines(1, 6)
    expected = articles("\n".join(lines))
    conditions = [
        ("demo, clean (Sans 12 pt, 600 dpi image)", dict(dpi=600, font_pt=12)),
        ("demo, photocopy (Serif 10 pt, 300 dpi image)", dict(dpi=300, font_pt=10, scan_like=True, font_path=SERIF)),
    ]
    rows = []
    for i, (label, kw) in enumerate(conditions):
        images, texts = render_pages(lines, **kw)
        pdf = image_pdf(workdir / f"demo{i}.pdf", images, kw["dpi"])
        rows += _ocr_rows(label, pdf, texts, dpis, expected)
    # Real typography with known text: body pages of text-layer HUST PDFs (Times New Roman 13 pt)
    # printed to photocopy-like 300 dpi images; the reference is each page's own text layer, cleaned
    # the same way. Pages with the two-column letterhead are left out: reading order differs there.
    sources = [("Quy chế CTSV ĐHBK Hà Nội 2025.3.10_final.pdf", [4, 5, 6]), ("Quy_che_25.pdf", [7, 8, 9]),
               ("QĐ Học bổng KKHT 2023.pdf", [3])]
    if all((HUST / f).exists() for f, _ in sources):
        import pypdfium2 as pdfium

        references, out = [], pdfium.PdfDocument.new()
        for f, numbers in sources:
            layer = {p.number: p for p in load_pdf_pages(HUST / f)}
            references += [clean_pages([layer[n]])[0].text for n in numbers]
            part = image_pdf(workdir / "part.pdf", printed_pages(HUST / f, numbers, 300), 300)
            src = pdfium.PdfDocument(str(part))
            out.import_pages(src)
            src.close()
        out.save(str(workdir / "printed.pdf"))
        out.close()
        rows += _ocr_rows("HUST text pages, photocopy (300 dpi image)", workdir / "printed.pdf", references,
                          dpis, articles("\n".join(references)))
    print("\n## Rendered pages with known text\n")
    table(rows, ["condition", "OCR dpi", "pages", "characters", "CER", "Điều found", "s/page", "CPU s/page"])


def real(dpis: list[int], default_dpi: int, workdir: Path) -> None:
    """Real scans at each dpi (the OCR cache in ``workdir`` is reused, so timings need a fresh workdir)."""
    from rag.config import Settings
    from rag.ingest import ingest, read_document
    from rag.load import load_file
    from rag.normalise import syllables

    if not HUST.is_dir():
        print(f"\nskipped the real scans: {HUST} is absent (the shared data folder is only in the development checkout)")
        return
    scans = sorted(HUST.glob("QD ban hanh*.pdf"))
    vocab: set[str] = set()
    for path in sorted(set(HUST.glob("*.pdf")) - set(scans)):
        vocab.update(s for s in syllables(load_file(path, Settings()).text) if s.isalpha())

    rows = []
    for dpi in dpis:
        settings = Settings(ocr_dpi=dpi, index_dir=workdir / f"idx{dpi}" / "index")
        for path in scans:
            t0, cpu0 = time.perf_counter(), child_cpu()
            doc = read_document(path, settings, source=path.name, index_dir=settings.index_dir)
            seconds, cpu = time.perf_counter() - t0, child_cpu() - cpu0
            words = [s for s in syllables(doc.text) if s.isalpha()]
            unknown = sum(1 for w in words if w not in vocab) / max(len(words), 1)
            found = articles(doc.text)
            rows.append([path.name[:48], dpi, len(doc.pages), f"{seconds:.0f}", f"{seconds / len(doc.pages):.1f}",
                         f"{cpu / len(doc.pages):.1f}",
                         len(found), ",".join(found), f"{100 * unknown:.1f}%"])
            print(f"  {path.name} @ {dpi} dpi: done", file=sys.stderr, flush=True)
    print(f"\n## The three real scans (vocabulary: {len(vocab)} syllables of the six text-layer PDFs)\n")
    table(rows, ["file", "dpi", "pages", "seconds", "s/page", "CPU s/page", "Điều", "numbers (decision, then regulation)",
                 "unknown syllables"])

    # Retrieval over all nine PDFs; the scans come from the OCR cache filled above at default_dpi.
    from rag.embed import Embedder
    from rag.pipeline import Pipeline

    settings = Settings(ocr_dpi=default_dpi, index_dir=workdir / f"idx{default_dpi}" / "index")
    embedder = Embedder.load(settings)
    t0 = time.perf_counter()
    report = ingest([HUST], settings, embedder=embedder, progress=False)
    print(f"\n## Retrieval: all nine HUST PDFs, {report.chunk_count} chunks, ingest {time.perf_counter() - t0:.0f} s "
          f"({'ok' if report.ok else report.summary()})\n")
    pipe = Pipeline.from_settings(settings, embedder=embedder, load_llm=False)
    rows = []
    for question, source, answer in QUESTIONS:
        hits = pipe.search(question, 5).hits
        rank = next((h for h in hits if h.chunk.source == source), None)
        c = rank.chunk if rank else None
        rows.append([question, rank.rank if rank else "not in top 5",
                     (f"Điều {c.article}" if c.article else f"({c.kind}: no Điều)") + f", page {c.page}" if c else "",
                     "yes" if rank and answer in rank.chunk.text else "no"])
    table(rows, ["question", "rank of the scan", "citation", "answer text in passage"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dpis", default="150,200,300,400", help="OCR resolutions for the rendered pages")
    ap.add_argument("--real-dpis", default="200,300", help="OCR resolutions for the real scans")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--workdir", help="keep indexes and the OCR cache here (default: a temp dir, removed)")
    args = ap.parse_args(argv)

    from _ocr_fixtures import tesseract_with_vie

    from rag.config import Settings
    from rag.ocr import find_tesseract

    why = tesseract_with_vie()
    if why:
        sys.exit(f"skipped: {why}")
    default_dpi = Settings().ocr_dpi
    print(f"# OCR benchmark — {machine()}")
    print(f"{find_tesseract('tesseract').version}, language vie, --psm 3, default RAG_OCR_DPI={default_dpi}")
    with tempfile.TemporaryDirectory(prefix="rag-bench-ocr-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.dpis:
            rendered([int(d) for d in args.dpis.split(",")], work)
        if not args.skip_real:
            real_dpis = [int(d) for d in args.real_dpis.split(",") if d]
            real(sorted(set(real_dpis) | {default_dpi}), default_dpi, work)


if __name__ == "__main__":
    main()
