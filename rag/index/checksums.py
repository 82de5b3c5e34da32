"""Checksums of a build's files: computed and fsynced when a build is written, verified while the Chroma
files are copied and in place for the others (each file version hashed once per process).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import IndexError_, ReindexRequired
from .manifest import MANIFEST, _rebuild_hint


_BLOCK = 1 << 20


class _Moved(Exception):
    """The data a manifest named is gone or changed while it was read (a writer published meanwhile)."""


def _damaged(directory: Path, rel: str, why: str) -> ReindexRequired:
    return ReindexRequired(f"the index at {directory} is damaged: {rel} {why} (its size and sha256 are recorded in "
                           f"{MANIFEST}): {_rebuild_hint(directory)}.")


def _copy_verified(src: Path, dest: Path, checksums: dict | None, directory: Path) -> None:
    """Copy the Chroma store to ``dest``, hashing each file on the way; every file must match ``checksums``
    (a format-1 index has none: everything under ``src`` is copied as it is)."""
    if checksums is None:
        if not src.is_dir():
            raise _Moved("chroma/ is missing")
        names = [str(p.relative_to(src.parent)) for p in sorted(src.rglob("*")) if p.is_file()]
    else:
        names = [rel for rel in checksums if rel.startswith("chroma/")]
        if not names:
            raise ReindexRequired(f"{directory / MANIFEST} lists no Chroma files: {_rebuild_hint(directory)}.")
    for rel in names:
        target = dest.parent / rel
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            out = open(target, "wb")
        except OSError as e:
            raise IndexError_(f"cannot copy the index into a temporary directory to read it ({e.strerror}): "
                              f"set TMPDIR to a writable directory with room for the index.",
                              code="index_unreadable") from e
        h, size = hashlib.sha256(), 0
        with out:
            try:
                src_fh = open(src.parent / rel, "rb")
            except FileNotFoundError as e:
                raise _Moved(f"{rel} is missing") from e
            with src_fh:
                while block := src_fh.read(_BLOCK):
                    h.update(block)
                    size += len(block)
                    out.write(block)
        if checksums is not None:
            _check(directory, rel, checksums[rel], size, h.hexdigest())


def _check(directory: Path, rel: str, entry: dict, size: int, digest: str) -> None:
    if size != entry["size"]:
        raise _damaged(directory, rel, f"has {size} bytes, not {entry['size']}")
    if digest != entry["sha256"]:
        raise _damaged(directory, rel, "has other contents than when it was written")


_VERIFIED: dict[tuple, str] = {}  # (path, device, inode, size, mtime, ctime) -> sha256: hash each file version once


def _verify_in_place(root: Path, rel: str, entry: dict, directory: Path) -> None:
    path = root / rel
    try:
        st = path.stat()
    except FileNotFoundError as e:
        raise _Moved(f"{rel} is missing") from e
    key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    digest = _VERIFIED.get(key)
    if digest is None:
        digest = _hash_file(path)
        _VERIFIED[key] = digest
    _check(directory, rel, entry, st.st_size, digest)


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def _checksum_and_sync(root: Path) -> dict:
    """Size and sha256 of every file under ``root``, each fsynced, then the directories themselves."""
    sums = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h, size = hashlib.sha256(), 0
        with open(path, "rb") as fh:
            while block := fh.read(_BLOCK):
                h.update(block)
                size += len(block)
            os.fsync(fh.fileno())
        sums[path.relative_to(root).as_posix()] = {"size": size, "sha256": h.hexdigest()}
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        _fsync_dir(d)
    _fsync_dir(root)
    return sums


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
