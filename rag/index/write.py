"""Writing: a new build in a new ``v-N/``, fsynced, published by replacing manifest.json atomically, under
the writer's lock; the lock holder removes what no reader can reach. A full disk and an unwritable
directory are clear errors that keep the previous index.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from ..config import Settings
from ..errors import IndexBusy, IndexError_
from ..types import Chunk
from .checksums import _checksum_and_sync, _fsync_dir
from .chroma import _fill_collection, _persistent_client, _release, _write_server
from .manifest import _DATA_DIR, INDEX_FORMAT, MANIFEST, Manifest, _OLD_LAYOUT
from .search import build_bm25, Index


def write_index(settings: Settings, manifest: Manifest, chunks: list[Chunk], vectors: np.ndarray,
                tokens: list[list[str]], *, directory: Path | None = None) -> Index:
    """Write a complete new version and publish it atomically; return it opened.

    The caller holds ``index_lock``. On any failure the new version's directory is removed and the
    published index is untouched; a full disk raises ``IndexError_`` with code ``disk_full``.
    """
    directory = Path(directory or settings.resolved_index_dir())
    if settings.chroma_url:
        return _write_server(settings, manifest, chunks, vectors, tokens)
    published = False
    root = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        root = _new_data_dir(directory)
        client = _persistent_client(root / "chroma")
        try:
            col = client.create_collection(manifest.collection, metadata={"hnsw:space": "cosine"},
                                           embedding_function=None)
            _fill_collection(col, chunks, vectors, tokens)
        finally:
            _release(client)
        bm25 = build_bm25(tokens)
        if bm25 is not None:
            bm25.save(str(root / "bm25"), show_progress=False)
            (root / "bm25" / "ids.json").write_text(json.dumps([c.id for c in chunks]), encoding="utf-8")
        manifest = replace(manifest, format=INDEX_FORMAT, data_dir=root.name, checksums=_checksum_and_sync(root))
        _publish(directory, manifest)
        published = True
        _fsync_dir(directory)
    except BaseException as e:
        # measured before the partial build is removed (which frees what it took)
        full = isinstance(e, Exception) and (_is_disk_full(e) or _low_space(directory, _build_bytes(vectors, chunks)))
        if root is not None and not published:
            shutil.rmtree(root, ignore_errors=True)
        if isinstance(e, Exception) and _is_read_only(e):
            raise _read_only(directory, _is_read_only(e)) from e
        if full:
            raise IndexError_(
                f"the disk holding {directory} is full: the new index was not written and the previous one is "
                f"kept. Free some space (the index needs about twice its size while it is rebuilt) and run "
                "`rag ingest` again.", code="disk_full") from e
        raise
    return Index(manifest, chunks, vectors, tokens, bm25, location=str(directory))


def _new_data_dir(directory: Path) -> Path:
    """A fresh version directory numbered after every existing one (the lock holder is the only writer)."""
    numbers = [int(m.group(1)) for p in directory.iterdir() if (m := _DATA_DIR.fullmatch(p.name))]
    root = directory / f"v-{max(numbers, default=0) + 1:06d}"
    root.mkdir()
    return root


def _publish(directory: Path, manifest: Manifest) -> None:
    """Replace the pointer (manifest.json) atomically: temporary file, fsync, rename over (the caller then
    fsyncs the directory, so the rename itself is durable)."""
    tmp = directory / f"{MANIFEST}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(manifest.to_dict(), ensure_ascii=False, indent=2))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / MANIFEST)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_READ_ONLY_ERRNOS = (errno.EACCES, errno.EROFS, errno.EPERM)


def _is_read_only(e: BaseException) -> OSError | None:
    """The permission error (EACCES, EROFS, EPERM) in ``e``'s chain, if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _READ_ONLY_ERRNOS:
            return e
        e = e.__cause__ or e.__context__
    return None


def _read_only(directory: Path, e: OSError) -> IndexError_:
    return IndexError_(f"cannot write the index at {directory} ({e.strerror or e}): `rag ingest` needs a writable "
                       f"directory — make it writable (its parent may stay read-only) or choose another --index / "
                       "RAG_INDEX_DIR; the previous index is kept, and serving can read a read-only one.",
                       code="index_read_only")


def _cannot_create(directory: Path, e: OSError) -> IndexError_:
    """The index directory is missing and cannot be made: name the folder that refused and what to do."""
    refused = Path(e.filename).parent if e.filename else directory.parent
    if e.errno in _READ_ONLY_ERRNOS:
        return IndexError_(f"cannot create the index directory {directory}: {refused} is not writable "
                           f"({e.strerror or e}). Create {directory} yourself (only it needs to be writable, e.g. a "
                           "volume mounted there) or choose another --index / RAG_INDEX_DIR.", code="index_read_only")
    return IndexError_(f"cannot create the index directory {directory} ({e.strerror or e}): choose another --index / "
                       "RAG_INDEX_DIR.", code="index_error")


def _probe_writable(directory: Path) -> None:
    """Fail before any work when the index directory cannot be written (a read-only mount, no permission)."""
    if not directory.is_dir():
        return
    probe = directory / ".write-probe"  # one name: only the lock holder writes it, and a crash leaves no pile
    try:
        if probe.is_symlink() or (probe.exists() and not probe.is_dir()):
            probe.unlink()  # whatever sits under the name (a file, a link) is a leftover: the lock is ours
        elif probe.is_dir():
            shutil.rmtree(probe)
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        if e.errno in _READ_ONLY_ERRNOS:
            raise _read_only(directory, e) from e
        raise IndexError_(f"cannot write the index at {directory} ({e.strerror or e}): check that the directory "
                          "is writable and has room.", code="index_error") from e


_MIN_FREE = 16 << 20


def _build_bytes(vectors: np.ndarray, chunks: list[Chunk]) -> int:
    """Roughly what a build writes: its vectors and texts, twice (Chroma's log and segments hold both)."""
    return 2 * (int(vectors.nbytes) + sum(len(c.text) for c in chunks) * 2)


def _low_space(directory: Path, need: int) -> bool:
    """Whether the filesystem holding ``directory`` has less room than a build needs (or than ``_MIN_FREE``).

    Chroma reports a full disk during its writes as its own errors ("Error in compaction: Failed to apply
    logs …") without the errno, so a failed write is also judged by the room left where it was writing.
    """
    try:
        return shutil.disk_usage(directory).free < max(_MIN_FREE, need)
    except OSError:
        return False


def _is_disk_full(e: BaseException) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e).lower()
        if "no space left" in text or "disk is full" in text or "quota exceeded" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


def _clean_stale(directory: Path) -> None:
    """Remove what no reader can reach: every version the manifest does not name, temporary pointers, the
    old layout's files once a version replaced them, and build directories of the layout before versions.
    Only the lock holder calls this."""
    if directory.parent.is_dir():
        for stale in directory.parent.glob(f".{glob.escape(directory.name)}.building-*"):
            shutil.rmtree(stale, ignore_errors=True)
    if not directory.is_dir():
        return
    try:
        raw = (directory / MANIFEST).read_bytes()
    except FileNotFoundError:
        raw = None
    if raw is not None:
        try:
            current = Manifest.from_dict(json.loads(raw.decode("utf-8")))
        except (ValueError, TypeError, UnicodeDecodeError):
            return  # a damaged pointer: leave everything for the user to inspect (`--rebuild` replaces it)
    for p in directory.iterdir():
        if ".tmp-" in p.name and p.name.startswith(MANIFEST):
            p.unlink(missing_ok=True)
        elif _DATA_DIR.fullmatch(p.name) and (raw is None or p.name != current.data_dir):
            shutil.rmtree(p, ignore_errors=True)
        elif p.name in _OLD_LAYOUT and raw is not None and current.data_dir is not None:
            shutil.rmtree(p, ignore_errors=True)
    if raw is not None and directory.parent.is_dir():
        for stale in directory.parent.glob(f".{glob.escape(directory.name)}.old-*"):
            shutil.rmtree(stale, ignore_errors=True)  # swaps of the layout before versions


def new_collection_name(settings: Settings) -> str:
    if settings.chroma_url:
        return f"{settings.chroma_collection}-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
    return settings.chroma_collection if len(settings.chroma_collection) >= 3 else "rag-chunks"


LOCK_FILE = ".ingest.lock"


@contextmanager
def index_lock(settings: Settings, directory: Path | None = None) -> Iterator[None]:
    """Exclusive lock for writers; a second ingest waits up to RAG_LOCK_TIMEOUT seconds, then refuses.

    The lock holder is the only process that removes anything from the index directory (see
    ``_clean_stale``); readers never take this lock.

    The lock file is ``<index>/.ingest.lock``, inside the directory it guards: a writer needs only the index
    directory to be writable (a volume mounted at /index on a read-only root), and every writer finds the same
    lock whatever path leads it there (a container's /index and the host's directory behind it). The directory
    is never replaced (builds are versions inside it), so creating it first and locking inside is safe; its
    parent is written only to create it. Earlier versions locked ``<parent>/.<name>.lock`` instead: do not run
    one of those on the same index at the same time.
    """
    from filelock import FileLock, Timeout

    directory = Path(directory or settings.resolved_index_dir())
    if directory.exists() and not directory.is_dir():
        raise IndexError_(f"{directory} is a file, not an index directory: choose a directory for --index / "
                          "RAG_INDEX_DIR.", code="not_an_index")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _cannot_create(directory, e) from e
    try:
        lock = FileLock(str(directory / LOCK_FILE))
        lock.acquire(timeout=settings.lock_timeout_s)
    except Timeout as e:
        raise IndexBusy(
            f"another ingest is writing the index at {directory}; waited {settings.lock_timeout_s:g} s. "
            "Try again when it finishes (or raise RAG_LOCK_TIMEOUT)."
        ) from e
    except OSError as e:
        raise _read_only(directory, e) from e
    try:
        _probe_writable(directory)
        _clean_stale(directory)
        yield
    finally:
        lock.release()
