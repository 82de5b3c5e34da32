"""Listing: files and folders to load, expanded into (path, source label) pairs, with what was left out and why."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import InputError
from .registry import SUPPORTED, SUPPORTED_LIST, unsupported_reason
from .safe import not_regular, printable

def symlink_loop(name: str) -> str:
    return f"{name} is a symlink loop (it leads back to itself): fix or remove the link."


BAD_NAME = "the file name is not valid UTF-8: rename the file (e.g. `convmv -f cp1258 -t utf8`) and ingest again"


@dataclass
class FileList:
    """Files to load, as (path, source label), and what was left out, as (path, reason).

    A file's path is the name it was listed under, made absolute but not resolved: a symlink stays the
    link, so its own name (not its target's) gives the format, the title's fallback and where its
    sidecar sits, while its bytes are read through it (content-addressed stores such as the Hugging Face
    cache or DVC name their blobs by hash, without an extension).

    ``failed`` holds files that should have been read but cannot be, as (path, reason, code): a
    name that is not valid UTF-8 (it could not be stored or shown), a pipe, socket or device under a
    document's name (``.md``, ``.pdf`` …) in a folder; one with any other name is skipped like any
    unsupported file. Iterating a ``FileList`` iterates ``files``.
    """

    files: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str, str]] = field(default_factory=list)

    def __iter__(self) -> Iterator[tuple[Path, str]]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


def iter_files(paths: list[str | Path], exclude: Iterable[str | Path] = ()) -> FileList:
    """Expand files and folders (recursively, sorted, hidden ones skipped) into a ``FileList``.

    Folders in ``exclude`` (the index being written, its evaluation reports) are not walked: a source
    folder that holds its own index would otherwise read the index's files as documents.

    A folder's files are labelled by their path relative to that folder; a file
    given by name is labelled by its name. Symlinks inside a folder are followed
    only when their target stays inside it. A missing path, or a folder with no
    supported file, raises ``InputError``.
    """
    out = FileList()
    seen: set[Path] = set()
    labels: set[str] = set()
    excluded = {Path(p).expanduser().resolve() for p in exclude}

    def add(path: Path, label: str, given: str) -> None:
        resolved = path.resolve()  # a second way to the same file (a link to it, a file in a folder given) is read once
        if resolved in seen:
            return
        seen.add(resolved)
        if label in labels:  # two files with one name: fall back to the path as given
            label = given
        labels.add(label)
        out.files.append((path, label))

    for raw in paths:
        given = Path(raw).expanduser()
        if given.is_symlink() and not given.exists():
            try:
                given.resolve()
            except (RuntimeError, OSError):
                raise InputError(symlink_loop(printable(raw))) from None
        if not given.exists():
            raise InputError(f"no such file or folder: {printable(raw)}")
        if given.is_dir():
            before = len(out.skipped)
            found = _walk(given, out.skipped, out.failed, excluded)
            if not found and not out.failed:
                raise InputError(f"{printable(raw)} contains no supported files ({SUPPORTED_LIST})"
                                 + _links_out(out.skipped[before:]))
            for path, rel in found:
                add(path, rel, str(given / rel))
        elif given.suffix.lower() in SUPPORTED:
            if _bad_name(str(given)):
                out.failed.append((given, BAD_NAME, "bad_file_name"))
            else:
                add(given.absolute(), given.name, str(given))
        else:
            out.skipped.append((given, unsupported_reason(given)))
    return out


def _links_out(skipped: list[tuple[Path, str]]) -> str:
    """What to do when a folder's documents are links to elsewhere (a Hugging Face snapshot's files point into
    ``../../blobs/``): those are not followed, so the folder looked empty."""
    n = sum(1 for _, why in skipped if why.startswith(_OUTSIDE))
    if not n:
        return ""
    return (f"; symlinks in it that lead outside it are not followed ({n} found): ingest the folder that holds "
            "their targets too, or name the files themselves (a file named on the command line is read wherever "
            "its link points)")


_OUTSIDE = "symlink to "


def _bad_name(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in the name, kept by Python as lone surrogates
        return True
    return False


def _walk(root: Path, skipped: list[tuple[Path, str]], failed: list[tuple[Path, str, str]],
          excluded: set[Path] = frozenset()) -> list[tuple[Path, str]]:
    """Supported files under ``root`` as (absolute path as listed, label relative to root), sorted; a link is
    listed when its target stays inside ``root``, under the link's own name."""
    root_resolved = root.resolve()
    found: list[tuple[Path, str]] = []
    visited: set[Path] = {root_resolved, *excluded}

    def inside(p: Path) -> bool:
        return p == root_resolved or root_resolved in p.parents

    def visit(folder: Path, rel: Path) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            skipped.append((folder, f"cannot read folder: {e.strerror or e}"))
            return
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                try:
                    target = path.resolve()
                except (RuntimeError, OSError):  # ELOOP: a link that leads back to itself
                    failed.append((path, symlink_loop(printable((rel / name).as_posix())), "unreadable"))
                    continue
                if not target.exists():
                    skipped.append((path, "broken symlink"))
                    continue
                if not inside(target):
                    skipped.append((path, f"{_OUTSIDE}{target}, outside {root}: not followed"))
                    continue
            if entry.is_dir():
                target = path.resolve()
                if target in visited:  # a symlink loop or a second way to the same folder
                    continue
                visited.add(target)
                visit(path, rel / name)
            elif name.startswith("~$"):
                skipped.append((path, "temporary Office lock file"))
            elif not entry.is_file() and path.suffix.lower() in SUPPORTED:
                # a document's name on a pipe, socket or device: a file that should have been read (exit 1),
                # as when it is named on the command line
                err = not_regular(printable((rel / name).as_posix()))
                failed.append((path, str(err), err.code))
            elif not entry.is_file():
                skipped.append((path, "not a regular file"))
            elif path.suffix.lower() in SUPPORTED and _bad_name(entry.path):
                failed.append((path, BAD_NAME, "bad_file_name"))
            elif path.suffix.lower() in SUPPORTED:
                found.append((path.absolute(), (rel / name).as_posix()))
            elif name == "corpus.yaml":
                continue  # document metadata (rag.metadata), read with the documents it describes
            elif name.endswith(".meta.yaml"):
                if not (folder / name[: -len(".meta.yaml")]).is_file():  # "Quy chế.meta.yaml" for "Quy chế.pdf"
                    skipped.append((path, f"metadata for {name[: -len('.meta.yaml')]}, which is not in this folder: "
                                          "a sidecar is named after its document's whole file name "
                                          "(Quy_che.pdf.meta.yaml)"))
            else:
                skipped.append((path, unsupported_reason(path)))

    visit(root, Path())
    return found

