"""One file read for the index: its bytes → a Document (scanned pages OCR'd, pages cleaned) → chunks.

``read_chunks`` never raises for a bad file: whatever goes wrong (a parser's
``RecursionError``, a file deleted after it was listed, a pipe or device put in
its place, an undecodable file) comes back as ``("error", code, reason)`` with a
reason a person can act on (``rag.load.safe.skip_reason``). It is a top-level
function of picklable arguments and result, so it can run in a process pool:
it is what ``rag.ingest``'s reader workers run.

Out of scope: reading the bytes safely (``rag.load.safe``), the formats (``rag.load``),
the index (``rag.ingest`` decides what is kept, added or removed).
"""

from __future__ import annotations

from pathlib import Path

from .config import Settings
from .errors import LoadError
from .load.safe import skip_reason
from .types import Document


def read_document(path: Path, settings: Settings, *, source: str, index_dir: Path | None = None,
                  progress: bool = False, data: bytes | None = None, ocr_deadline: float | None = None,
                  notes: list[str] | None = None) -> Document:
    """Load one file and clean its pages (the same steps for every format, OCR'd pages included).

    Scanned PDF pages are OCR'd unless ``settings.ocr`` is "never" (see ``rag.ocr``); with
    ``index_dir``, OCR results are cached beside it (``rag.ocr.ocr_cache_dir``). Pages over the OCR
    limits (``RAG_OCR_MAX_PAGES``, ``ocr_deadline``) are left out and described in ``notes``.
    """
    from functools import partial

    from .normalise import clean_pages
    from .load.registry import load_file

    ocr = None
    if settings.ocr != "never" and Path(path).suffix.lower() == ".pdf":
        from .ocr import ocr_cache_dir, ocr_pdf_pages

        cache = ocr_cache_dir(index_dir) if index_dir is not None else None
        ocr = partial(ocr_pdf_pages, settings=settings, cache_dir=cache, progress=progress, deadline=ocr_deadline,
                      notes=notes)
    doc = load_file(path, settings, source=source, ocr=ocr, data=data)
    doc.pages = clean_pages(doc.pages)
    return doc


def read_chunks(path: Path, source: str, sidecar, settings: Settings, index_dir: Path | None, *,
                ocr_deadline: float | None = None, progress: bool = False, with_tokens: bool = True):
    """One file → (file info, metadata dict, chunks, BM25 tokens of each chunk, None unless ``with_tokens``),
    or ("error", code, reason).

    What a reader worker of ``rag.ingest`` runs: everything per file that does not need the embedder.
    It never raises for a bad file: every failure (``skip_reason``) comes back as a value, which also
    pickles cleanly out of a process pool. ``info["notes"]`` lists what was left out of the file
    (scanned pages over the OCR limits); ``progress`` shows OCR pages done/total on stderr.
    """
    from .chunk import chunk_document
    from .metadata import apply as apply_metadata
    from .metadata import document_metadata
    from .normalise import segment

    notes: list[str] = []
    try:
        doc = read_document(path, settings, source=source, index_dir=index_dir, ocr_deadline=ocr_deadline,
                            notes=notes, progress=progress)
        meta = document_metadata(doc, sidecar)
        chunks = chunk_document(doc, max_chars=settings.chunk_max_chars, title=meta.title)
        apply_metadata(chunks, meta)
        if not chunks:
            raise LoadError(f"{source}: no text to index after cleaning (is it a cover page only?)",
                            code="empty_document")
        tokens = [segment(c.full_text) for c in chunks] if with_tokens else None
    except Exception as e:  # noqa: BLE001 - one bad file must never end the ingest
        reason, code = skip_reason(e, source)
        return ("error", code, " ".join([reason, *(f"({n})" for n in notes)]))
    info = {"sha256": doc.sha256, "title": doc.title, "kind": doc.kind, "pages": len(doc.pages),
            "chunks": len(chunks), "ocr_pages": sum(1 for p in doc.pages if p.ocr), "notes": notes}
    return info, meta.to_dict(), chunks, tokens
