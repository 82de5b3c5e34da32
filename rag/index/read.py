"""Opening a local index: read the pointer (manifest.json), then the build it names, verifying every file;
start again when a writer published meanwhile. Readers never take the lock, never repair, never write into
the index; the Chroma store is opened from a private copy under ``$TMPDIR``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from ..errors import IndexBusy, IndexError_, ReindexRequired
from .checksums import _copy_verified, _Moved, _verify_in_place
from .chroma import _persistent_client, _read_collection, _release
from .manifest import corpus_hash, MANIFEST, Manifest, _rebuild_hint
from .search import Index


_OPEN_ATTEMPTS = 8  # a reader starts again when a writer published while it read; more than this: busy


def _open_local(directory: Path) -> Index:
    if directory.exists() and not directory.is_dir():
        raise IndexError_(f"{directory} is a file, not an index directory: point --index / RAG_INDEX_DIR at the "
                          "directory `rag ingest` wrote.", code="not_an_index")
    for _ in range(_OPEN_ATTEMPTS):
        raw = _read_pointer(directory)
        manifest = _parse_manifest(raw, directory)
        try:
            return _open_version(directory, manifest)
        except (_Moved, ReindexRequired, OSError) as e:
            if _read_pointer(directory, missing_ok=True) != raw:
                continue  # a writer published a new version while we read the old one: read the new one
            if isinstance(e, ReindexRequired):
                raise
            raise ReindexRequired(f"the index at {directory} is damaged ({e}): {_rebuild_hint(directory)}.") from e
    raise IndexBusy(f"the index at {directory} changed {_OPEN_ATTEMPTS} times while it was being opened "
                    "(ingests running back to back); try again.")


def _read_pointer(directory: Path, missing_ok: bool = False) -> bytes | None:
    try:
        return (directory / MANIFEST).read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return None
    except IsADirectoryError as e:
        raise ReindexRequired(f"{directory / MANIFEST} is a directory: {_rebuild_hint(directory)}.") from e
    # hidden entries are a writer's (its lock, the OCR cache), never index data: a directory of only those has no index
    if not directory.is_dir() or all(p.name.startswith(".") for p in directory.iterdir()):
        raise IndexError_(
            f"no index at {directory}: run `rag ingest PATH --index {directory}` first "
            "(or leave RAG_INDEX_DIR unset to use the demo regulations).",
            code="index_missing",
        )
    raise ReindexRequired(f"{directory} has no {MANIFEST}: it is not an index, it is damaged, or the ingest that "
                          f"was building it was killed — {_rebuild_hint(directory)} (an ingest removes what an "
                          "interrupted one left).")


def _parse_manifest(raw: bytes, directory: Path) -> Manifest:
    try:
        return Manifest.from_dict(json.loads(raw.decode("utf-8")))
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise ReindexRequired(f"{directory / MANIFEST} is malformed ({e}): {_rebuild_hint(directory)}.") from e


def _open_version(directory: Path, manifest: Manifest) -> Index:
    if manifest.format >= 2 and (manifest.data_dir is None or manifest.checksums is None):
        raise ReindexRequired(f"{directory / MANIFEST} (format {manifest.format}) names no data directory or "
                              f"checksums: {_rebuild_hint(directory)}.")
    root = directory / manifest.data_dir if manifest.data_dir else directory
    if not root.is_dir():
        raise _Moved(f"{root.name} is missing")
    checksums = manifest.checksums
    _clean_stale_copies()
    with tempfile.TemporaryDirectory(prefix=f"{_COPY_PREFIX}{os.getpid()}-") as tmp:
        _copy_verified(root / "chroma", Path(tmp) / "chroma", checksums, directory)
        try:
            client = _persistent_client(Path(tmp) / "chroma")
            try:
                chunks, vectors, tokens = _read_collection(client.get_collection(manifest.collection))
            finally:
                _release(client)
        except Exception as e:  # noqa: BLE001 - Chroma raises many types for a damaged store
            raise ReindexRequired(f"the Chroma store in {directory} cannot be read ({e}): "
                                  f"{_rebuild_hint(directory)}.") from e
    if len(chunks) != manifest.chunk_count or (len(chunks) and vectors.shape[1] != manifest.embed_dimension):
        raise ReindexRequired(
            f"the index at {directory} is inconsistent: manifest says {manifest.chunk_count} chunks of dimension "
            f"{manifest.embed_dimension}, the store has {len(chunks)}: {_rebuild_hint(directory)}."
        )
    if corpus_hash([c.id for c in chunks]) != manifest.corpus_hash:
        raise ReindexRequired(f"the index at {directory} does not match its manifest's corpus hash: "
                              f"{_rebuild_hint(directory)}.")
    ids = [c.id for c in chunks]
    if checksums is None:
        bm25 = _load_bm25_unchecked(root / "bm25", ids)
    else:
        for rel, entry in checksums.items():
            if not rel.startswith("chroma/"):
                _verify_in_place(root, rel, entry, directory)
        bm25 = _load_bm25(root / "bm25", ids, directory) if any(r.startswith("bm25/") for r in checksums) else None
    return Index(manifest, chunks, vectors, tokens, bm25, location=str(directory))


_COPY_PREFIX = "rag-index-"  # + the reader's pid: a copy whose process is gone can be removed by the next reader


_STALE_COPY_S = 3600


def _clean_stale_copies() -> None:
    """Remove private copies of Chroma stores (``$TMPDIR/rag-index-<pid>-*``) left by readers that were
    killed while opening an index: owned by this user, untouched for ``_STALE_COPY_S`` and whose process is
    gone. Best effort; a copy of a live process (or of another user) is never touched."""
    now = time.time()
    for path in Path(tempfile.gettempdir()).glob(f"{_COPY_PREFIX}*-*"):
        m = re.fullmatch(rf"{_COPY_PREFIX}(\d+)-\w+", path.name)
        try:
            st = path.lstat()
            if (not m or not path.is_dir() or st.st_uid != os.getuid() or now - st.st_mtime < _STALE_COPY_S
                    or _alive(int(m.group(1)))):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _load_bm25(path: Path, ids: list[str], directory: Path):
    """The saved BM25 index (its files already verified against the manifest)."""
    import bm25s

    try:
        saved_ids = json.loads((path / "ids.json").read_text(encoding="utf-8"))
        bm25 = bm25s.BM25.load(str(path), show_progress=False)
    except FileNotFoundError as e:
        raise _Moved(f"bm25/{e.filename} is missing") from e
    except Exception as e:  # noqa: BLE001 - checksums matched, so this is a writer's bug rather than damage
        raise ReindexRequired(f"the BM25 index in {directory} cannot be read ({e}): {_rebuild_hint(directory)}.") from e
    if saved_ids != ids:
        raise ReindexRequired(f"the BM25 index in {directory} lists other chunks than the store: "
                              f"{_rebuild_hint(directory)}.")
    return bm25


def _load_bm25_unchecked(path: Path, ids: list[str]):
    """Format 1 (no checksums): a missing or stale BM25 cache is rebuilt from the stored tokens."""
    try:
        import bm25s

        if json.loads((path / "ids.json").read_text()) != ids:
            return None
        return bm25s.BM25.load(str(path), show_progress=False)
    except Exception:  # noqa: BLE001
        return None
