"""OCR: text for PDF pages that have no text layer, with Tesseract's Vietnamese model.

``ocr_pdf_pages`` is the hook ``rag.load.load_file`` calls for a PDF (``rag.reader.read_document``
passes it when ``RAG_OCR`` / ``rag ingest --ocr`` is not ``never``):

- which pages: in ``auto`` mode a page with fewer than ``MIN_PAGE_CHARS`` non-space characters in
  its text layer, or a page mostly covered by images (≥ ``IMAGE_COVER`` of its area) whose text
  layer is sparse for its size (fewer than ``SPARSE_CHARS_PER_SQIN`` per square inch — a scan
  with a stamped page number or a scanner's caption); in ``always`` mode every page (the OCR text
  replaces the text layer). A PDF whose pages all have text never needs Tesseract.
- how: each page is rendered with pdfium in the calling thread (pdfium is not thread-safe) at
  ``RAG_OCR_DPI``, greyscale, and piped to ``tesseract stdin stdout -l vie --psm 3`` in a pool of
  ``RAG_OCR_WORKERS`` threads (0: one per core), one process per page with
  ``OMP_THREAD_LIMIT=1`` — measured on 2 cores, Tesseract's own OpenMP threads made one page take
  twice as long, while one process per core gives the cores to different pages. A tqdm bar per
  document counts pages.
- the result: ``Page``s with the same numbers, ``ocr=True``, text repaired by ``repair_ocr_text``;
  the caller then cleans them with ``normalise.clean_pages`` and chunks them like any PDF.
- cache: raw Tesseract output per page, in ``ocr_cache_dir(index_dir)`` — a folder *beside* the
  index (``<parent>/.<index name>.ocr-cache/``), so the index directory, which deployments copy, holds
  only the index; inside it (``<index>/.ocr-cache/``) where the parent cannot be written; keyed
  by the file's sha256 and a hash of dpi, language, page segmentation mode, the Tesseract
  version, the size of the language's traineddata and ``OCR_VERSION``. Pages are written as they
  finish, so an interrupted run resumes. The cache is never pruned: delete the folder to reclaim
  space (it is rebuilt on demand).

Out of scope: layout analysis beyond Tesseract's own (two-column headers come out line by line,
tables as plain lines), rotated or upside-down scans (``--psm 3`` does not detect orientation),
deskewing and denoising, handwriting, and OCR of images in DOCX or HTML files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import threading
import time
import unicodedata
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .config import Settings
from .errors import LoadError
from .load.pdf import has_text_layer, non_space_chars
from .types import Page

log = logging.getLogger(__name__)

LANG = "vie"
PSM = 3  # fully automatic page segmentation: keeps the two columns of a decision's header apart
OCR_VERSION = "1"  # bump when rendering or the Tesseract call changes what is cached
IMAGE_COVER = 0.5
SPARSE_CHARS_PER_SQIN = 1.0  # ~97 characters on an A4 page; a typed A4 page has 2,000 or more
MAX_PIXELS = 60_000_000  # a huge page (A0 poster) is rendered at a lower dpi to stay under this
PAGE_TIMEOUT_S = 600
INSTALL_HINT = "apt-get install tesseract-ocr tesseract-ocr-vie"


# ---------------------------------------------------------------------------
# Tesseract


@dataclass(frozen=True)
class Tesseract:
    """A checked Tesseract: the command, its version line and what identifies its language data."""

    cmd: str
    version: str
    lang: str
    traineddata: str  # "<file name>:<size>" where found, for the cache key

    def key(self, dpi: int, psm: int = PSM) -> dict:
        return {"ocr": OCR_VERSION, "dpi": dpi, "lang": self.lang, "psm": psm,
                "tesseract": self.version, "traineddata": self.traineddata}


def unavailable(name: str, detail: str, *, packages: str = INSTALL_HINT) -> LoadError:
    return LoadError(
        f"{name}, but {detail}: install it with `{packages}` (Debian/Ubuntu), or set "
        "RAG_TESSERACT_CMD to the tesseract binary; or ingest with --ocr never to skip such files.",
        code="ocr_unavailable",
    )


def _probe(cmd: str, *args: str) -> str:
    r = subprocess.run([cmd, *args], capture_output=True, timeout=60, check=False)
    if r.returncode != 0:
        raise OSError(f"`{cmd} {' '.join(args)}` exited with {r.returncode}: "
                      f"{r.stderr.decode('utf-8', 'replace').strip()[-300:]}")
    # Tesseract 3 printed its version on stderr
    return (r.stdout or r.stderr).decode("utf-8", "replace")


def find_tesseract(cmd: str, lang: str = LANG, *, name: str = "OCR needed") -> Tesseract:
    """Check that ``cmd`` runs and has ``lang``; otherwise a ``LoadError`` naming the packages to install.

    ``name`` starts the message: "scan.pdf: OCR needed for 7 pages without a text layer, but …".
    """
    try:
        version = _probe(cmd, "--version").strip().splitlines()[0].strip()
        listing = _probe(cmd, "--list-langs")
    except (OSError, subprocess.SubprocessError, IndexError) as e:
        detail = f"Tesseract was not found or does not run (RAG_TESSERACT_CMD={cmd!r}: {e})"
        raise unavailable(name, detail) from e
    lines = listing.strip().splitlines()
    langs = {ln.strip() for ln in lines[1:] if ln.strip()}
    if lang not in langs:
        have = ", ".join(sorted(langs)) or "none"
        raise unavailable(
            name, f"Tesseract at {cmd!r} has no Vietnamese model ('{lang}' is not among its languages: {have})",
            packages="apt-get install tesseract-ocr-vie",
        )
    traineddata = ""
    m = re.search(r'"([^"]+)"', lines[0]) if lines else None
    if m:
        f = Path(m.group(1)) / f"{lang}.traineddata"
        traineddata = f"{f.name}:{f.stat().st_size}" if f.is_file() else ""
    return Tesseract(cmd=cmd, version=version, lang=lang, traineddata=traineddata)


def run_tesseract(tess: Tesseract, image: bytes, dpi: int, *, psm: int = PSM, timeout: float = PAGE_TIMEOUT_S) -> str:
    """OCR one image (any format leptonica reads; PGM here) → text. ``OSError`` when Tesseract fails."""
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    cmd = [tess.cmd, "stdin", "stdout", "-l", tess.lang, "--psm", str(psm), "--dpi", str(dpi)]
    try:
        r = subprocess.run(cmd, input=image, capture_output=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired as e:
        raise OSError(f"tesseract took more than {timeout:g} s") from e
    if r.returncode != 0:
        err = r.stderr.decode("utf-8", "replace").strip()
        raise OSError(f"tesseract exited with {r.returncode}: {err[-300:] or 'no message'}")
    return r.stdout.decode("utf-8", "replace").replace("\f", "")


# ---------------------------------------------------------------------------
# Cache


def ocr_cache_dir(index_dir: Path) -> Path:
    """Where OCR results for ``index_dir`` are kept: beside it, so the index directory (what a deployment copies
    into its image) holds only the index; inside it when that place cannot be written (an index on a writable
    volume mounted in a read-only root), so an ingest there still remembers what it OCR'd."""
    index_dir = Path(index_dir)
    beside = index_dir.parent / f".{index_dir.name}.ocr-cache"
    where = beside if beside.is_dir() else index_dir.parent
    # a parent still to be made, or no index directory yet (reading outside an ingest): beside, made on demand
    if os.access(where, os.W_OK) or not where.is_dir() or not index_dir.is_dir():
        return beside
    return index_dir / ".ocr-cache"


class OcrCache:
    """Raw OCR text per page in ``<root>/<file sha256>/<key hash>/<page>.txt`` (``key.json`` says what the hash covers)."""

    def __init__(self, root: Path, sha256: str, key: dict):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = Path(root) / sha256 / digest
        self.key = key
        self._ok = True

    def get(self, page: int) -> str | None:
        try:
            return (self.dir / f"{page}.txt").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def put(self, page: int, text: str) -> None:
        if not self._ok:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            meta = self.dir / "key.json"
            if not meta.exists():
                meta.write_text(json.dumps(self.key, indent=1), encoding="utf-8")
            tmp = self.dir / f".{page}.{os.getpid()}.{threading.get_ident()}.tmp"
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.dir / f"{page}.txt")  # atomic: a reader never sees half a page
        except OSError as e:
            self._ok = False  # a read-only location: OCR still works, it is just not remembered
            log.warning("OCR cache at %s is not writable (%s): results will not be cached", self.dir, e)


# ---------------------------------------------------------------------------
# Which pages


def pages_to_ocr(pdf, pages: list[Page], mode: str) -> list[int]:
    """Numbers of the pages to OCR (see the module docstring); ``pdf`` is an open pypdfium2 document."""
    if mode == "never":
        return []
    if mode == "always":
        return [pg.number for pg in pages]
    out = []
    for pg in pages:
        if not has_text_layer(pg.text):
            out.append(pg.number)
            continue
        chars = non_space_chars(pg.text)
        page = pdf[pg.number - 1]
        try:
            w, h = page.get_size()
            area = max(w * h, 1.0)
            if chars < SPARSE_CHARS_PER_SQIN * area / (72 * 72) and _image_cover(page, area) >= IMAGE_COVER:
                out.append(pg.number)
        finally:
            page.close()
    return out


def _image_cover(page, area: float) -> float:
    import pypdfium2.raw as pdfium_c

    covered = 0.0
    for obj in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,)):
        left, bottom, right, top = obj.get_bounds()
        covered += max(right - left, 0) * max(top - bottom, 0)
    return min(covered / area, 1.0)


# ---------------------------------------------------------------------------
# The hook


def ocr_pdf_pages(
    data: bytes,
    pages: list[Page],
    name: str,
    *,
    settings: Settings,
    cache_dir: Path | None = None,
    progress: bool = False,
    lang: str = LANG,
    ocr_page: Callable[[Tesseract, bytes, int], str] | None = None,
    deadline: float | None = None,
    notes: list[str] | None = None,
) -> list[Page]:
    """``pages`` (every page of the PDF in ``data``, in order) with the pages that need OCR replaced by OCR text.

    Limits: at most ``RAG_OCR_MAX_PAGES`` pages of the file are OCR'd, and no page is started after
    ``deadline`` (a ``time.time()`` value: the ingest's ``RAG_OCR_BUDGET_S``). Pages left out for
    either reason keep no text; a sentence saying which and why is appended to ``notes`` and logged.

    Raises ``LoadError`` (code ``ocr_unavailable``) when pages need OCR and Tesseract or its
    Vietnamese model is missing, and ``LoadError`` when Tesseract fails on a page.
    A PDF that pdfium cannot open (its text came from pypdf) cannot be rendered: ``LoadError``
    if it has pages to OCR, else it is returned unchanged.
    """
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        scanned = [pg.number for pg in pages if settings.ocr == "always" or not has_text_layer(pg.text)]
        if scanned:
            raise LoadError(
                f"{name}: pages {scanned} need OCR but pdfium cannot render this damaged PDF ({e}): "
                "repair it (e.g. `qpdf in.pdf out.pdf`, or print it to a new PDF) and ingest again."
            ) from e
        return pages
    try:
        todo = pages_to_ocr(pdf, pages, settings.ocr)
        if not todo:
            return pages
        if len(todo) > settings.ocr_max_pages:
            over, todo = todo[settings.ocr_max_pages:], todo[: settings.ocr_max_pages]
            _note(notes, f"{name}: {len(over)} of {len(over) + len(todo)} scanned pages not OCR'd ({_span(over)}): "
                  f"over the limit of {settings.ocr_max_pages} per file (RAG_OCR_MAX_PAGES)")
        what = f"{len(todo)} page{'s' if len(todo) != 1 else ''}"
        what += " (--ocr always)" if settings.ocr == "always" else " without a text layer"
        tess = find_tesseract(settings.tesseract_cmd, lang, name=f"{name}: OCR needed for {what}")
        cache = OcrCache(cache_dir, hashlib.sha256(data).hexdigest(), tess.key(settings.ocr_dpi)) if cache_dir else None
        raw: dict[int, str] = {}
        for n in todo:
            hit = cache.get(n) if cache else None
            if hit is not None:
                raw[n] = hit
        missing = [n for n in todo if n not in raw]
        if missing:
            log.info("%s: OCR of %d page(s) at %d dpi (%d cached)", name, len(missing), settings.ocr_dpi, len(raw))
            raw.update(_ocr_pages(pdf, missing, tess, settings, name=name, cache=cache, progress=progress,
                                  done=len(raw), total=len(todo), ocr_page=ocr_page or run_tesseract,
                                  deadline=deadline))
            late = [n for n in missing if n not in raw]
            if late:
                _note(notes, f"{name}: {len(late)} of {len(todo)} scanned pages not OCR'd ({_span(late)}): the OCR "
                      f"time of this ingest ({settings.ocr_budget_s:g} s, RAG_OCR_BUDGET_S) was spent; ingest again "
                      "to continue (OCR'd pages are cached)")
    finally:
        pdf.close()
    return [Page(pg.number, repair_ocr_text(raw[pg.number]), ocr=True) if pg.number in raw else pg for pg in pages]


def _span(numbers: list[int]) -> str:
    return f"page {numbers[0]}" if len(numbers) == 1 else f"pages {numbers[0]}–{numbers[-1]}"


def _note(notes: list[str] | None, text: str) -> None:
    log.warning("%s", text)
    if notes is not None:
        notes.append(text)


def workers(settings: Settings) -> int:
    if settings.ocr_workers:
        return settings.ocr_workers
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def render_page(pdf, number: int, dpi: int) -> tuple[bytes, int]:
    """Page ``number`` (1-based) as a greyscale PGM image, and the dpi it was rendered at.

    PGM is written here from pdfium's buffer (no Pillow at run time); it is uncompressed, so
    writing it costs nothing next to OCR, and Tesseract reads it from stdin.
    """
    import numpy as np

    page = pdf[number - 1]
    try:
        w, h = page.get_size()
        scale = dpi / 72
        if w * h * scale * scale > MAX_PIXELS:
            scale = (MAX_PIXELS / (w * h)) ** 0.5
        bitmap = page.render(scale=scale, grayscale=True)
        width, height, stride, channels = bitmap.width, bitmap.height, bitmap.stride, bitmap.n_channels
        rows = np.frombuffer(bitmap.buffer, dtype=np.uint8, count=stride * height).reshape(height, stride)
        pixels = rows[:, : width * channels].reshape(height, width, channels)
        gray = pixels[:, :, 0] if channels == 1 else pixels[:, :, :3].mean(axis=2).astype(np.uint8)
        image = b"P5\n%d %d\n255\n" % (width, height) + np.ascontiguousarray(gray).tobytes()
    finally:
        page.close()
    return image, round(scale * 72)


def _ocr_pages(pdf, numbers, tess, settings, *, name, cache, progress, done, total, ocr_page,
               deadline=None) -> dict[int, str]:
    """Render in this thread, OCR in a pool; at most two images per worker are held in memory.

    No page is started after ``deadline`` (``time.time()``); the pages left have no entry in the result.
    """
    from tqdm import tqdm

    n_workers = max(1, min(workers(settings), len(numbers)))
    out: dict[int, str] = {}
    bar = tqdm(total=total, initial=done, desc=f"OCR {Path(name).name}"[:60], unit="page",
               leave=False, disable=not progress)
    pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="ocr")
    running: dict[Future, int] = {}

    def collect(futures) -> None:
        for fut in futures:
            n = running.pop(fut)
            try:
                text = fut.result()
            except OSError as e:
                raise LoadError(f"{name}: OCR failed on page {n}: {e}") from e
            out[n] = text
            if cache:
                cache.put(n, text)
            bar.update(1)

    try:
        for n in numbers:
            while len(running) >= 2 * n_workers:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                collect(finished)
            if deadline is not None and time.time() >= deadline:
                break
            image, dpi = render_page(pdf, n, settings.ocr_dpi)
            running[pool.submit(ocr_page, tess, image, dpi)] = n
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            collect(finished)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return out


# ---------------------------------------------------------------------------
# Repairs

# What repair_ocr_text changes (only on OCR'd pages; text layers are never touched):
#  1. stray marks at line edges: a run of | ~ _ ` ^ ¦ (optionally with a dot or comma, as in
#     "._ Căn cứ"), or a lone "." / "," / "‘", before the first word of a line; a dash or dot
#     before an article heading ("- Điều 1. Ban hành": headings are never list items); a run of
#     | ~ _ ` ^ ¦ after a space at the end of a line; lines made only of such marks; a dash glued
#     to a lowercase word at a line start ("-tuyến": list dashes are followed by a space). Table
#     rules read as "|" are the usual source; OCR text has no pipe tables to protect.
#  2. headings at a line start, when a number follows: "Điểu", "Điêu", "Diều", "Ðiều", "Điếu" …
#     (any D/Đ + i + e-with-any-mark + u) → "Điều" ("ĐIỀU" when written in capitals);
#     "Chuong", "Chưong", "Chuơng" → "Chương" ("CHƯƠNG"); "Muc" → "Mục" ("MỤC"); in the number
#     after "Điều", l / I / | → 1 and O / o → 0 ("Điều l." → "Điều 1."); in a Roman chapter
#     number mixed with them, l / 1 / | → I ("Chương Il" → "Chương II"); "Điều 3, Ban hành …"
#     (a comma read for the period, then a capital) → "Điều 3. Ban hành …"; likewise a clause
#     number "5, Đối với …" → "5. Đối với …" (1–2 digits, then a capital; the chunker still
#     requires clause numbers to run 1, 2, 3 …, so a stray match stays ordinary text).
#  3. whole words that are not Vietnamese and have one reading: "QUYÉT"/"QUYÊT" → "QUYẾT".
#  4. hyphenation: a line-end ¬ or U+2010/U+2011 after a letter becomes "-", so
#     normalise.clean_pages joins the line as it does for text layers (Vietnamese breaks lines
#     between syllables, so a line-end hyphen is a real one and is kept).
# Not repaired (no safe rule): wrong tone or vowel marks inside words ("Đảo tạo", "kết quá"),
# which are valid syllables elsewhere; a misread clause number ("°." for "5."); a point letter
# "đ)" read as "d)"; "Điều 5 Tổ chức" with its period lost (indistinguishable from a wrapped
# cross-reference "Điều 5 Quy chế này"); stamps, signatures and handwriting, which come out as
# noise lines; table layout.

_STRAY = "|~_`^¦"
_LEAD_STRAY = re.compile(rf"^(?:[.,]?[{re.escape(_STRAY)}]+[.,]?|[.,‘])[ \t]+(?=\S)", re.M)
_TRAIL_STRAY = re.compile(rf"[ \t]+[{re.escape(_STRAY)}]+$", re.M)
_ONLY_STRAY = re.compile(rf"^[ \t.,{re.escape(_STRAY)}]*[{re.escape(_STRAY)}][ \t.,{re.escape(_STRAY)}]*$", re.M)
_LEAD_DASH = re.compile(r"^[-–—](?=(\w))", re.M)
_BEFORE_HEADING = re.compile(r"^[-–—•·.,]+[ \t]*(?=(?:Điều|ĐIỀU) \d{1,3}[.:][ \t]+(\w))", re.M)
_CLAUSE_COMMA = re.compile(r"^(\d{1,2}),(?=[ \t]+(\w))", re.M)
_E_FORMS = "eéèẻẽẹêếềểễệ"
_ARTICLE = re.compile(
    rf"^([DĐÐƉđ])([iIíìỉĩị])([{_E_FORMS}{_E_FORMS.upper()}])([uU])[ \t]*([\dlI|oO]{{1,3}})(?=([ \t]*[.:,\-–])?)",
    re.M,
)
_ARTICLE_COMMA = re.compile(r"^((?:Điều|ĐIỀU) \d{1,3}),(?=[ \t]+(\w))", re.M)
_CHAPTER = re.compile(r"^(Ch[uư][oơ]ng|CH[UƯ][OƠ]NG)(?=[ \t]+[IVXLC\dl|])", re.M)
_CHAPTER_NUMBER = re.compile(r"^(Chương|CHƯƠNG)([ \t]+)([IVXLC1l|]+)(?=$|[ \t.:\-–])", re.M)
_SECTION = re.compile(r"^(Muc|MUC)(?=[ \t]+\d)", re.M)
_WORDS = {"QUYÉT": "QUYẾT", "QUYÊT": "QUYẾT"}
_WORD_RE = re.compile(r"\b(" + "|".join(_WORDS) + r")\b")
_EOL_HYPHEN_LOOKALIKE = re.compile("(?<=[^\\W\\d_])[\u00ac\u2010\u2011][ \t]*$", re.M)


def _article(m: re.Match) -> str:
    number, separator = m.group(5), m.group(6)
    if not number.isdigit():
        # l/I/| for 1 and O/o for 0, only in a number that is followed by the heading's separator
        # and has a real digit or is a single stroke ("Điều l.", "Điều 1O.")
        if separator is None or not (any(c.isdigit() for c in number) or number in ("l", "I", "|")):
            return m.group(0)
        number = number.translate(str.maketrans("lI|oO", "11100"))
    caps = m.group(2).isupper() and m.group(3).isupper() and m.group(4).isupper()
    return f"{'ĐIỀU' if caps else 'Điều'} {number}"


def _chapter_number(m: re.Match) -> str:
    number = m.group(3)
    if re.search(r"[IVXLC]", number) or number in ("l", "|"):
        number = number.translate(str.maketrans("l1|", "III"))
    return m.group(1) + m.group(2) + number


def repair_ocr_text(text: str) -> str:
    """Undo typical Tesseract misreads in Vietnamese legal text (the list above); everything else is kept."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\f", ""))
    text = _ONLY_STRAY.sub("", text)
    text = _LEAD_STRAY.sub("", text)
    text = _TRAIL_STRAY.sub("", text)
    text = _LEAD_DASH.sub(lambda m: "" if m.group(1).islower() else m.group(0), text)
    text = _ARTICLE.sub(_article, text)
    text = _ARTICLE_COMMA.sub(lambda m: m.group(1) + ("." if m.group(2).isupper() else ","), text)
    text = _BEFORE_HEADING.sub(lambda m: "" if m.group(1).isupper() else m.group(0), text)
    text = _CLAUSE_COMMA.sub(lambda m: m.group(1) + ("." if m.group(2).isupper() else ","), text)
    text = _CHAPTER.sub(lambda m: "CHƯƠNG" if m.group(1).isupper() else "Chương", text)
    text = _CHAPTER_NUMBER.sub(_chapter_number, text)
    text = _SECTION.sub(lambda m: "MỤC" if m.group(1).isupper() else "Mục", text)
    text = _WORD_RE.sub(lambda m: _WORDS[m.group(1)], text)
    text = _EOL_HYPHEN_LOOKALIKE.sub("-", text)
    return text


# ---------------------------------------------------------------------------
# Measuring


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions, each costing 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _cer_form(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def cer(hypothesis: str, reference: str) -> float:
    """Character error rate: edit distance / reference length, after NFC and with every whitespace run as one space."""
    ref, hyp = _cer_form(reference), _cer_form(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(hyp, ref) / len(ref)
