"""A Docker build, dry: parse a Dockerfile, apply .dockerignore, and lay out what its COPY lines take.

No Docker daemon is needed. The rules are Docker's own (BuildKit's dockerfile frontend and
moby/patternmatcher), restricted to what this project's Dockerfiles use:

* ``parse(text)``: instructions with ``\\`` continuations joined, comments and parser
  directives dropped, heredocs not supported (none are used).
* ``ignore_file(dockerfile, context)``: BuildKit reads ``<Dockerfile>.dockerignore`` beside the
  Dockerfile when it exists, else ``.dockerignore`` at the root of the build context.
* ``Ignore(patterns).excluded(path)``: each pattern is cleaned (``/`` at the start dropped), ``*``
  and ``?`` stay inside one path element, ``**`` spans any number of them, a pattern that
  matches a parent directory excludes everything below it, a ``!`` pattern re-includes, and
  the last matching pattern wins.
* ``Build(dockerfile, context, files).layout(root)``: substitutes ``ARG``/``ENV`` values
  (``$X``, ``${X}``, ``${X:-default}``), follows ``WORKDIR``, and copies what each ``COPY``
  names from the build context into ``root`` as the image would hold it (a directory source
  copies its contents); a source with nothing left after .dockerignore is an error, as it is
  for ``docker build`` ("failed to compute cache key: not found").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath


class BuildError(Exception):
    """What `docker build` would stop on."""


def parse(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order."""
    out, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue  # a comment or parser directive (# syntax=…) between instructions
        if buf and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    if buf:
        raise BuildError(f"the Dockerfile ends inside a continued instruction: {buf[:60]}")
    return out


def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif c == "*":
            out, i = out + "[^/]*", i + 1
        elif c == "?":
            out, i = out + "[^/]", i + 1
        elif c == "[":
            j = pattern.index("]", i)
            cls = pattern[i + 1:j]
            out, i = out + "[" + ("^" + cls[1:] if cls.startswith("^") else cls) + "]", j + 1
        else:
            out, i = out + re.escape(c), i + 1
    return re.compile(out + r"\Z")


@dataclass
class Ignore:
    patterns: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path | None) -> "Ignore":
        if path is None or not path.exists():
            return cls([])
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        return cls([ln for ln in lines if ln and not ln.startswith("#")])

    def excluded(self, path: str) -> bool:
        parts = PurePosixPath(path).parts
        candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]  # the path and its parents
        result = False
        for raw in self.patterns:
            negate = raw.startswith("!")
            p = os.path.normpath(raw[1:] if negate else raw).lstrip("/")
            rx = _pattern_regex(p)
            if any(rx.match(c) for c in candidates):
                result = not negate
        return result


def ignore_file(dockerfile: Path, context: Path) -> Path | None:
    beside = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if beside.exists():
        return beside
    root = context / ".dockerignore"
    return root if root.exists() else None


def context_files(context: Path) -> list[str]:
    """The files a fresh clone has: tracked, and untracked ones git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=context, capture_output=True,
                         check=True)
    return sorted(f for f in out.stdout.decode("utf-8").split("\0") if f and (context / f).is_file())


def substitute(text: str, values: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        name, default = m.group(1) or m.group(3), m.group(2)
        value = values.get(name, "")
        return value if value or default is None else default
    return re.sub(r"\$\{([A-Za-z_]\w*)(?::-([^}]*))?\}|\$([A-Za-z_]\w*)", one, text)


@dataclass
class Build:
    dockerfile: Path
    context: Path
    build_args: dict[str, str] = field(default_factory=dict)
    files: list[str] | None = None  # the build context's files; default: what a clone of ``context`` has

    def __post_init__(self):
        self.instructions = parse(self.dockerfile.read_text(encoding="utf-8"))
        self.ignore = Ignore.read(ignore_file(self.dockerfile, self.context))
        files = self.files if self.files is not None else context_files(self.context)
        self.sent = [f for f in files if not self.ignore.excluded(f)]  # what the daemon receives

    def layout(self, root: Path) -> dict:
        """Copy what the COPY lines take into ``root``; returns the final WORKDIR, ENV, CMD and RUN lines."""
        values: dict[str, str] = {}
        env: dict[str, str] = {}
        workdir, runs, cmd = "/", [], None
        for word, args in self.instructions:
            if word == "ARG":
                name, _, default = args.partition("=")
                values[name] = self.build_args.get(name, json.loads(default) if default.startswith('"') else default)
            elif word == "ENV":
                for name, value in re.findall(r'([A-Za-z_]\w*)=("(?:[^"\\]|\\.)*"|\S+)', args):
                    value = substitute(json.loads(value) if value.startswith('"') else value, {**values, **env})
                    env[name] = value
            elif word == "WORKDIR":
                workdir = str(PurePosixPath(workdir) / substitute(args, {**values, **env}))
                (root / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
            elif word == "COPY":
                parts = [substitute(p, {**values, **env}) for p in args.split() if not p.startswith("--")]
                if any(p.startswith("--from") for p in args.split()):
                    raise BuildError("COPY --from is not handled by this dry run")
                *sources, dest = parts
                self._copy(root, sources, dest, workdir)
            elif word == "RUN":
                runs.append((workdir, substitute(args, {**values, **env})))
            elif word == "CMD":
                cmd = json.loads(args) if args.startswith("[") else args
        return {"workdir": workdir, "env": env, "runs": runs, "cmd": cmd, "args": values}

    def _copy(self, root: Path, sources: list[str], dest: str, workdir: str) -> None:
        target = PurePosixPath(dest if dest.startswith("/") else f"{workdir}/{dest}")
        into_dir = dest.endswith("/") or len(sources) > 1
        for src in sources:
            src = os.path.normpath(src).lstrip("/")
            if src.startswith(".."):
                raise BuildError(f"COPY {src}: outside the build context")
            if src == ".":
                matched = list(self.sent)
            else:
                matched = [f for f in self.sent if f == src or f.startswith(src + "/") or
                           ("*" in src or "?" in src) and fnmatchcase(f, src)]
            if not matched:
                raise BuildError(f"COPY {src}: not found in the build context "
                                 f"({'excluded by .dockerignore' if (self.context / src).exists() else 'no such path'})")
            for f in matched:
                is_dir_src = f != src and not ("*" in src or "?" in src)
                if is_dir_src:  # a directory: its contents go into dest
                    rel = f[len(src.rstrip('/')) + 1:] if src != "." else f
                    out = target / rel
                elif into_dir or (root / str(target).lstrip("/")).is_dir():
                    out = target / PurePosixPath(f).name
                else:
                    out = target
                path = root / str(out).lstrip("/")
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.context / f, path)
