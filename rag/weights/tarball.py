"""A weights tarball checked (no absolute paths, ``..`` or links; its marker file present; its unpacked size
within the budget) and unpacked."""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath
from typing import Callable

from ..errors import ModelError, RagError
from .common import ADAPTER_MARKER, _human


def unpack_tarball(archive: Path, dest: Path, *, marker: str, what: str, source: str | None = None,
                   error: type[RagError] = ModelError, max_bytes: int | None = None,
                   reserve: Callable[[int], None] | None = None) -> Path:
    """Check and unpack a (possibly compressed) tarball into ``dest``; return the directory holding ``marker``.

    ``reserve(n)`` is called with the unpacked size once the members are checked, before anything is written.
    """
    shown = source or str(archive)
    if not tarfile.is_tarfile(archive):
        raise error(f"{what}: {shown} is not a tarball (.tar, .tar.gz, .tgz); package the directory with "
                    f"`tar czf weights.tar.gz -C DIR .`.", code="weights_not_tarball")
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                p = PurePosixPath(m.name)
                if p.is_absolute() or ".." in p.parts or not (m.isfile() or m.isdir()):
                    raise error(f"{what}: {shown} contains {m.name!r} (an absolute path, '..' or a link); refusing to "
                                "unpack it.", code="weights_unsafe")
            unpacked = sum(m.size for m in members if m.isfile())
            if max_bytes is not None and unpacked > max_bytes:
                raise error(f"{what}: {shown} would unpack to {_human(unpacked)}, above the limit of "
                            f"{_human(max_bytes)} (RAG_WEIGHTS_CACHE_GB).", code="weights_too_large")
            names = {PurePosixPath(m.name) for m in members if m.isfile()}
            if not any(n.name == marker and len(n.parts) <= 3 for n in names):
                raise error(f"{what}: {shown} is a tarball but has no {marker}"
                            + (" — it is not a PEFT LoRA adapter (save one with model.save_pretrained(DIR))."
                               if marker == ADAPTER_MARKER else "."),
                            code="weights_invalid")
            if reserve is not None:
                reserve(unpacked)
            dest.mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise error(f"{what}: {shown} is a damaged tarball ({e}).", code="weights_not_tarball") from e
    root = find_marker(dest, marker)
    assert root is not None
    return root


def find_marker(directory: Path, marker: str) -> Path | None:
    """The shallowest directory (at most two levels down) that holds ``marker``."""
    for depth in range(3):
        pattern = "/".join(["*"] * depth + [marker])
        found = sorted(directory.glob(pattern))
        if found:
            return found[0].parent
    return None
