"""Ingest: files → documents → clean pages → chunks → vectors + BM25 tokens → index.

Incremental: a file whose bytes (sha256) are unchanged since the last build keeps
its chunks and vectors without being read again; a changed file replaces its
chunks; ``prune`` drops files that are no longer under the given paths. A file
that fails to load is reported and, if an earlier version was indexed, that
version is kept: nothing already indexed is lost to a bad file.

Out of scope: watching folders, deleting single chunks by hand.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .config import Settings
from .embed import Embedder, EmbedSpec
from .errors import IndexError_, ReindexRequired
from .index import INDEX_FORMAT, Index, index_lock, make_manifest, new_collection_name, write_index
from .load.safe import file_sha256, printable, root_of, skip_reason  # noqa: F401
from .normalise import segment_all
from .reader import read_chunks, read_document  # noqa: F401
from .types import Chunk


@dataclass
class FileResult:
    source: str
    status: str  # added | updated | unchanged | failed | skipped | removed
    pages: int = 0
    chunks: int = 0
    reason: str = ""
    code: str = ""
    ocr_pages: int = 0  # pages read by OCR in this run
    notes: list[str] = field(default_factory=list)  # what was left out of an indexed file (OCR limits)


@dataclass
class IngestReport:
    index_dir: str
    files: list[FileResult] = field(default_factory=list)
    chunk_count: int = 0
    page_count: int = 0
    document_count: int = 0
    changed: bool = False
    seconds: float = 0.0
    embedded: int = 0  # chunks embedded in this run (the rest were reused)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    def summary(self) -> str:
        lines = [
            f"index: {self.index_dir}",
            f"files: {self.count('added')} added, {self.count('updated')} updated, {self.count('unchanged')} unchanged, "
            f"{self.count('removed')} removed, {self.count('skipped')} skipped, {self.count('failed')} failed",
            f"index now holds {self.document_count} documents, {self.page_count} pages, {self.chunk_count} chunks"
            f" ({self.embedded} embedded in {self.seconds:.1f} s)" + ("" if self.changed else " — nothing changed"),
        ]
        ocr = sum(f.ocr_pages for f in self.files)
        if ocr:
            lines.append(f"OCR: {ocr} scanned pages read by Tesseract in this run")
        for f in self.files:  # names and reasons with control characters print escaped, on one line each
            if f.status in ("failed", "skipped"):
                lines.append(f"  {f.status}: {printable(f.source)}: {printable(f.reason or '')}")
            lines.extend(f"  partly read: {printable(note)}" for note in f.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "index": self.index_dir, "changed": self.changed, "documents": self.document_count,
            "pages": self.page_count, "chunks": self.chunk_count, "embedded": self.embedded,
            "seconds": round(self.seconds, 2),
            "files": [f.__dict__ for f in self.files],
        }


def ingest(
    paths: Sequence[str | Path],
    settings: Settings,
    *,
    prune: bool = False,
    rebuild: bool = False,
    embedder: Embedder | None = None,
    directory: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    read_workers: int | None = None,
) -> IngestReport:
    """Index the files under ``paths`` into the index of ``settings`` (or ``directory``).

    ``read_workers``: processes that read, OCR, chunk and segment files at the lowest CPU priority (None: one
    per core when at least two PDF or DOCX files, or 1 MB of files, are to be read, else a thread beside the
    embedder; 0: that thread).
    """
    from .load import iter_files
    from .metadata import read_sidecar

    t0 = time.perf_counter()
    directory = Path(directory or settings.resolved_index_dir())
    # raises InputError for a missing path or a folder with nothing to read; a source folder may hold the index
    # itself and `rag eval`'s reports beside it ("rag ingest . --index ./index"): those are not documents
    listing = iter_files(paths, exclude=[directory, directory.parent / "rag-eval"])
    report = IngestReport(index_dir=settings.chroma_url or str(directory))
    for path, reason in listing.skipped:
        report.files.append(FileResult(source=printable(path), status="skipped", reason=reason))
    for path, reason, code in listing.failed:
        report.files.append(FileResult(source=printable(path), status="failed", reason=reason, code=code))

    spec = EmbedSpec.from_settings(settings)
    with index_lock(settings, directory):
        existing = None if rebuild else _open_existing(settings, spec, directory)
        old_files: dict = dict(existing.manifest.files) if existing else {}
        kept: dict[str, list[int]] = {}  # source -> rows in existing index
        if existing:
            for row, c in enumerate(existing.chunks):
                kept.setdefault(c.source, []).append(row)

        new_chunks: dict[str, list[Chunk]] = {}
        files_meta: dict[str, dict] = {}
        seen_sources: set[str] = set()
        to_read = []  # (path, source, sidecar, sidecar_sha), in listing order
        for path, source in listing.files:
            seen_sources.add(source)
            try:
                sha = file_sha256(path, settings, source)
                sidecar, sidecar_sha = read_sidecar(path, root_of(path, source))
            except Exception as e:  # noqa: BLE001 - one bad file must never end the ingest
                report.files.append(_failed(files_meta, old_files, kept, source, *reversed(skip_reason(e, source))))
                continue
            prev = old_files.get(source)
            if prev and prev.get("sha256") == sha and prev.get("sidecar_sha256", "") == sidecar_sha \
                    and source in kept:
                files_meta[source] = prev
                report.files.append(FileResult(source, "unchanged", prev.get("pages", 0), prev.get("chunks", 0)))
                continue
            to_read.append((path, source, sidecar, sidecar_sha))
            report.files.append(None)  # its place in the report, filled once it is read

        # Overlap: files are read, OCR'd and chunked in a pool while one thread embeds the new chunks of the
        # files read so far (word segmentation: see _Stages). Files are taken as they are read, whatever their
        # listing order; the report keeps the listing order and the index is sorted by source (``_build``), so
        # both are the same as one file after the other.
        known = existing.by_id if existing else {}
        stages = _Stages(settings, embedder, read_workers, len(to_read), [p for p, *_ in to_read])
        ocr_deadline = time.time() + settings.ocr_budget_s  # RAG_OCR_BUDGET_S: no OCR page starts after it
        rows_of: dict[str, list[int]] = {}  # source -> positions of its chunks that are embedded in this run
        places = [i for i, f in enumerate(report.files) if f is None]
        jobs = {source: (place, path, sidecar, sidecar_sha)
                for place, (path, source, sidecar, sidecar_sha) in zip(places, to_read)}

        def read(source: str):
            _, path, sidecar, _ = jobs[source]
            return stages.read(path, source, sidecar, settings, directory, ocr_deadline=ocr_deadline,
                               progress=progress)

        bar = _progress_bar(progress, "reading", len(jobs))
        try:
            from concurrent.futures import FIRST_COMPLETED, wait
            from concurrent.futures.process import BrokenProcessPool

            pending = {read(source): source for source in jobs}
            # A reader process that dies (killed, out of memory) breaks the pool, and every file it held fails
            # with it. Those files are read again one at a time in a new pool, so a death then is the file's
            # own: one that ends its reader twice that way is reported, and the others are indexed.
            again: list[str] = []  # to read again, alone
            deaths: dict[str, int] = {}  # source -> deaths while it was read alone
            while pending or again:
                if not pending:
                    alone = again.pop(0)
                    deaths.setdefault(alone, 0)
                    pending[read(alone)] = alone
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                fut = next(iter(finished))
                source = pending.pop(fut)
                place, _, _, sidecar_sha = jobs[source]
                try:
                    got = fut.result()
                except BrokenProcessPool:
                    if source not in deaths:
                        again.append(source)
                        continue
                    deaths[source] += 1
                    if deaths[source] < 2:
                        again.insert(0, source)
                        continue
                    got = ("error", "reader_died", f"{source}: the process reading it ended abruptly, twice "
                           "(killed, or out of memory?): split the file, or give the machine more memory.")
                except Exception as e:  # noqa: BLE001 - one bad file must never end the ingest
                    got = ("error", *reversed(skip_reason(e, source)))
                if bar is not None:
                    bar.update()
                if isinstance(got, tuple) and got[0] == "error":
                    report.files[place] = _failed(files_meta, old_files, kept, source, got[1], got[2])
                    continue
                info, meta, chunks, _ = got
                rows_of[source] = [i for i, c in enumerate(chunks) if c.id not in known]
                stages.add(source, [chunks[i].full_text for i in rows_of[source]], [c.full_text for c in chunks])
                new_chunks[source] = chunks
                notes = info.pop("notes", [])
                files_meta[source] = {**info, "meta": meta, "sidecar_sha256": sidecar_sha}
                status = "updated" if source in kept else "added"
                report.files[place] = FileResult(source, status, info["pages"], len(chunks),
                                                 ocr_pages=info["ocr_pages"], notes=notes)
            done = stages.finish()  # source -> (vectors of its new chunks, tokens of all its chunks) or an error
        finally:
            if bar is not None:
                bar.close()
            stages.close()
        for source, got in done.items():
            if isinstance(got, Exception):  # its word segmentation failed: the file is reported, not indexed
                del new_chunks[source], files_meta[source]
                report.files[jobs[source][0]] = _failed(files_meta, old_files, kept, source,
                                                        *reversed(skip_reason(got, source)))
        fresh = {source: (rows_of[source], *done[source]) for source in new_chunks}
        embedder = stages.embedder
        listed = [source for _, source in listing.files]
        files_meta = {s: files_meta[s] for s in listed if s in files_meta} | files_meta  # listing order

        # Files indexed before but not listed now: kept, unless pruning.
        for source in kept:
            if source in seen_sources:
                continue
            if prune:
                report.files.append(FileResult(source, "removed", old_files.get(source, {}).get("pages", 0)))
            else:
                files_meta[source] = old_files[source]

        changed = bool(new_chunks) or any(f.status == "removed" for f in report.files)
        # An index in an older layout is rewritten in the current one even when nothing changed (no embedding).
        upgrade = existing is not None and existing.manifest.format != INDEX_FORMAT
        if existing is None and not new_chunks:
            index, changed = None, False  # nothing readable: do not create an empty index
        elif not changed and not upgrade:
            index = existing
        else:
            index = _build(settings, spec, directory, existing, kept, new_chunks, files_meta, embedder, fresh, report)
        report.changed = changed
        report.chunk_count = len(index.chunks) if index else 0
        report.document_count = len(index.manifest.files) if index else 0
        report.page_count = index.manifest.page_count if index else 0
    report.seconds = time.perf_counter() - t0
    if log:
        log(report.summary())
    return report


def _open_existing(settings: Settings, spec: EmbedSpec, directory: Path) -> Index | None:
    try:
        return Index.open(settings, spec, directory=directory)
    except ReindexRequired as e:
        raise ReindexRequired(f"{e} (`rag ingest --rebuild` replaces it)") from e
    except IndexError_ as e:
        if e.code == "index_missing":
            return None
        raise


def _build(settings, spec, directory, existing, kept, new_chunks, files_meta, embedder, fresh, report):
    # Order: sources sorted, chunks in document order; reuse vectors/tokens of unchanged chunks.
    ordered: list[Chunk] = []
    where: list[tuple] = []  # ("old", row) or ("new", source, position in its file)
    for source in sorted(files_meta):
        if source in new_chunks:
            for pos, c in enumerate(new_chunks[source]):
                row = existing.by_id.get(c.id) if existing else None
                ordered.append(c)
                where.append(("old", row) if row is not None else ("new", source, pos))
        else:
            for row in kept.get(source, []):
                ordered.append(existing.chunks[row])
                where.append(("old", row))
    dim = embedder.dimension if embedder else existing.vectors.shape[1]
    vectors = np.zeros((len(ordered), dim), dtype=np.float32)
    tokens: list[list[str]] = [[] for _ in ordered]
    new_row = {src: {pos: k for k, pos in enumerate(rows)} for src, (rows, _, _) in fresh.items()}
    for i, w in enumerate(where):
        if w[0] == "old":
            vectors[i] = existing.vectors[w[1]]
            tokens[i] = existing.tokens[w[1]]
        else:
            _, source, pos = w
            _, vecs, toks = fresh[source]
            vectors[i] = vecs[new_row[source][pos]]
            tokens[i] = toks[pos]
    embedded = sum(1 for w in where if w[0] == "new")
    report.embedded = embedded
    dtype = embedder.dtype if embedded else (existing.manifest.embed_dtype if existing else None)
    manifest = make_manifest(spec, dim, ordered, files_meta,
                             existing.manifest.created_at if existing else None, new_collection_name(settings),
                             embed_dtype=dtype)
    return write_index(settings, manifest, ordered, vectors, tokens, directory=directory)


def _failed(files_meta, old_files, kept, source, code, message) -> FileResult:
    """A file that could not be read: its report line; its earlier version, if any, stays indexed."""
    kept_note = " (the previously indexed version is kept)" if source in kept else ""
    if source in kept:
        files_meta[source] = old_files[source]
    return FileResult(source, "failed", reason=message + kept_note, code=code)


class _Stages:
    """The reader pool and the one embedding thread of an ingest.

    PDF and DOCX files (parsing, OCR) are read in processes: they hold the GIL for long stretches; so is a
    large input of any kind (``_BIG_INPUT`` bytes or more), whose word segmentation would otherwise add to the
    embedding time. The reader processes run at the lowest CPU priority (``_background``); each file's chunks
    go to the embedder as soon as it is chunked, and its word segmentation follows as a task of its own in the
    same pool: the embedder's threads never use both cores fully (they wait on each other between
    operations), and a lowest-priority process gets that idle time without slowing them (measured: 500
    passages embed 1.02× slower beside a process segmenting at the lowest priority, 1.18× beside one at the
    normal priority, and the segmentation finishes within the embedding). A few light files are read in a
    thread, which costs no process start, and the embedding thread segments their chunks after each call.

    The embedding thread takes, each time it is free, every chunk read since its last call (``add``), so the
    first call starts as soon as any file is chunked and later calls are large: the embedder sorts a call's
    texts by length, and a bigger call pads less. The embedder is loaded by that thread on its first call,
    while the first files are still being read.
    """

    def __init__(self, settings: Settings, embedder: Embedder | None, read_workers: int | None, n_files: int,
                 paths: list[Path]):
        import threading
        from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

        heavy = sum(1 for p in paths if Path(p).suffix.lower() in (".pdf", ".docx"))
        if read_workers is None:
            read_workers = _cores() if heavy >= 2 or _size(paths) >= _BIG_INPUT else 0
        read_workers = min(read_workers, n_files)
        self._workers = read_workers
        if read_workers > 0:
            self._readers = self._process_pool()
        else:
            self._readers = ThreadPoolExecutor(1, thread_name_prefix="ingest-read")
        self._settings = settings
        self.embedder = embedder
        # Word segmentation (pyvi, CPU-bound) runs in the reader processes, at the lowest priority; a reader
        # thread at the normal priority would slow every multi-threaded embedding step it shares a core with,
        # so with a thread the embedding thread segments each call's chunks after embedding them.
        self.readers_segment = read_workers > 0
        self._pending: list[tuple[str, list[str], list[str] | None]] = []  # read, not yet embedded
        self._done: dict[str, tuple] = {}  # source -> (vectors or None, tokens or their future)
        self._texts: dict[str, list[str]] = {}  # source -> the texts its future segments
        self._closed = False
        self._error: BaseException | None = None
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._embed_loop, name="ingest-embed", daemon=True)
        self._thread.start()

    def _process_pool(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: the parent holds torch's and Chroma's threads, which a forked child must not inherit
        return ProcessPoolExecutor(self._workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_background)

    def _submit(self, fn, *args, **kwargs):
        """Submit to the reader pool; a pool that a dead reader broke is replaced by a new one first."""
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self._readers.submit(fn, *args, **kwargs)
        except BrokenProcessPool:
            self._readers.shutdown(wait=False, cancel_futures=True)
            self._readers = self._process_pool()
            return self._readers.submit(fn, *args, **kwargs)

    def read(self, path, source, sidecar, settings, index_dir, **options):
        return self._submit(read_chunks, path, source, sidecar, settings, index_dir, with_tokens=False, **options)

    def add(self, source: str, texts: list[str], all_texts: list[str]) -> None:
        """Queue one file's new chunks (``texts``) for embedding, and all its chunks for segmentation."""
        segment = None
        if self.readers_segment:
            self._done[source] = (None, self._submit(segment_all, all_texts))
            self._texts[source] = all_texts  # segmented here if the pool breaks before it is done
        else:
            segment = all_texts
        with self._wake:
            self._pending.append((source, texts, segment))
            self._wake.notify()

    def finish(self) -> dict[str, tuple | Exception]:
        """Wait for every queued chunk: source → (vectors of its new chunks or None, tokens of all its chunks),
        or the exception that segmenting that file raised (it is then reported as a file that failed)."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join()
        if self._error is not None:
            raise self._error
        from concurrent.futures.process import BrokenProcessPool

        out: dict[str, tuple | Exception] = {}
        for source, (vectors, tokens) in self._done.items():
            try:
                try:
                    tokens = tokens.result() if hasattr(tokens, "result") else _raise_if_error(tokens)
                except BrokenProcessPool:  # a reader died with this task queued: segment it here
                    tokens = segment_all(self._texts[source])
                out[source] = (vectors, tokens)
            except Exception as e:  # noqa: BLE001 - one bad file must never end the ingest
                out[source] = e
        return out

    def _embed_loop(self) -> None:
        _import_store()  # the store's client library (about 1.5 s of imports) loads while the first files are read
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if not self._pending or self._error is not None:
                    return
                # at most about _CALL_BATCHES batches per call: an interrupted ingest waits for one call only
                n, size = 0, 0
                while n < len(self._pending) and size < _CALL_BATCHES * self.batch_size:
                    size += len(self._pending[n][1])
                    n += 1
                batch, self._pending = self._pending[:n], self._pending[n:]
            try:
                self._embed_now(batch)
            except BaseException as e:  # noqa: BLE001 - finish() raises it in the ingest's thread
                self._error = e
                return

    def _embed_now(self, batch: list[tuple[str, list[str], list[str] | None]]) -> None:
        texts = [t for _, ts, _ in batch for t in ts]
        if self.embedder is None and texts:
            self.embedder = Embedder.load(self._settings)
        vectors = self.embedder.embed_passages(texts) if texts else None
        start = 0
        for source, ts, segment in batch:
            if segment is None:
                tokens = self._done[source][1]  # the reader pool's future
            else:
                try:
                    tokens = segment_all(segment)
                except Exception as e:  # noqa: BLE001 - reported for this file by finish()
                    tokens = e
            self._done[source] = (vectors[start:start + len(ts)] if ts else None, tokens)
            start += len(ts)

    def close(self) -> None:
        """Stop reading and embedding. After ``finish`` nothing is running; after a failure (or Ctrl-C) the
        call in progress ends on its own in the background, writing nothing, and is not waited for."""
        with self._wake:
            self._closed = True
            self._pending.clear()  # an ingest that failed does not embed what is left
            self._wake.notify()
        self._readers.shutdown(wait=True, cancel_futures=True)

    @property
    def batch_size(self) -> int:
        return self.embedder.batch_size if self.embedder is not None else self._settings.embed_batch_size


def _raise_if_error(value):
    if isinstance(value, Exception):
        raise value
    return value


_CALL_BATCHES = 32  # embedding batches per call at most (ALQAC laws: 1.2% more padding than one sorted call)
_BIG_INPUT = 1 << 20  # bytes of files to read from which reading, chunking and segmenting go to processes


def _size(paths) -> int:
    total = 0
    for p in paths:
        try:
            total += os.stat(p).st_size
        except OSError:
            pass  # the reader reports it
    return total


def _import_store() -> None:
    try:
        import chromadb  # noqa: F401
    except Exception:  # noqa: BLE001 - the write reports it
        pass


def _background() -> None:
    """A reader process takes the CPU only when the embedder leaves it idle (nice 19; OCR's tesseract inherits it),
    and leaves Ctrl-C to the main process: a terminal sends SIGINT to every process of the job, and each reader
    would print its own KeyboardInterrupt traceback; the main process stops them."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.nice(19 - os.nice(0))
    except (AttributeError, OSError):  # no nice on this platform: readers keep the normal priority
        pass


def _cores() -> int:
    from .embed import _cores as cores

    return cores()


def _progress_bar(enabled: bool, desc: str, total: int):
    """A progress bar the caller updates, or None."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(desc=desc, unit="file", leave=False, total=total)


def demo_paths() -> list[Path]:
    """The bundled demo regulations (a fictional university), shipped as package data."""
    from importlib import resources

    root = resources.files("rag.demo")
    return sorted(Path(str(p)) for p in root.iterdir() if str(p).endswith(".md"))


def demo_sources() -> set[str]:
    """The source names the demo regulations are indexed under."""
    return {p.name for p in demo_paths()}


def ensure_demo_index(settings: Settings, embedder: Embedder | None = None, progress: bool = False) -> Path:
    """Build the demo index in the default location if it is missing; return its directory."""
    directory = settings.resolved_index_dir()
    if not (directory / "manifest.json").exists():
        ingest(demo_paths(), settings, embedder=embedder, directory=directory, progress=progress)
    return directory
