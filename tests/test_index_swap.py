"""Publishing a new index version: one atomic pointer, readers that never repair, kill -9 at any point."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.errors import ReindexRequired
from rag.index import Index, index_lock

from _index_faults import build, check, write_one

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("_index_faults.py")


def _settings(directory):
    from _index_faults import settings

    return settings(directory)


def _manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text(encoding="utf-8"))


def _data_dirs(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and p.name.startswith("v-"))


def test_a_build_is_a_version_directory_named_by_the_manifest(tmp_path):
    d = tmp_path / "idx"
    write_one(d, 1)
    m = _manifest(d)
    assert m["format"] == 2 and m["data_dir"] == _data_dirs(d)[0]
    files = sorted(str(p.relative_to(d / m["data_dir"])) for p in (d / m["data_dir"]).rglob("*") if p.is_file())
    assert sorted(m["checksums"]) == files, "every data file is checksummed"
    assert any(f.startswith("chroma/") for f in files) and "bm25/ids.json" in files
    assert check(Index.open(_settings(d))) == 1


def test_the_previous_version_stays_until_the_next_writer(tmp_path):
    d = tmp_path / "idx"
    for k in (1, 2):
        write_one(d, k)
    first, second = _data_dirs(d)
    assert _manifest(d)["data_dir"] == second  # a reader that read the old pointer can still finish
    write_one(d, 3)
    assert first not in _data_dirs(d) and len(_data_dirs(d)) == 2
    assert check(Index.open(_settings(d))) == 3


def test_readers_never_repair_or_remove_anything(tmp_path):
    d = tmp_path / "idx"
    write_one(d, 1)
    # what crashed writers leave: an unpublished version, a half-written pointer, an old-style build dir
    (d / "v-999999" / "chroma").mkdir(parents=True)
    (d / "manifest.json.tmp-dead").write_text("{")
    (tmp_path / ".idx.building-dead").mkdir()
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    for _ in range(2):
        assert check(Index.open(_settings(d))) == 1
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    with index_lock(_settings(d), d):  # the lock holder cleans up
        pass
    assert not (d / "v-999999").exists() and not (d / "manifest.json.tmp-dead").exists()
    assert not (tmp_path / ".idx.building-dead").exists()
    assert check(Index.open(_settings(d))) == 1


def test_an_unpublished_first_build_is_removed_by_the_next_ingest(tmp_path, embedder, settings_factory):
    from rag.ingest import ingest

    d = tmp_path / "idx"
    (d / "v-000001" / "chroma").mkdir(parents=True)  # the first build was killed before its pointer
    with pytest.raises(ReindexRequired, match="--rebuild"):
        Index.open(_settings(d))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Quy định A\n\nĐiều 1. Học phí\nHọc phí đóng theo học kỳ.\n", encoding="utf-8")
    assert ingest([docs], settings_factory(d), embedder=embedder, progress=False).ok
    assert _data_dirs(d) == ["v-000001"] and len(Index.open(settings_factory(d))) >= 1


def test_failed_write_keeps_previous_index_and_removes_its_data(tmp_path, monkeypatch):
    d = tmp_path / "idx"
    write_one(d, 1)
    import rag.index.write as index_write

    def boom(*a, **k):
        raise RuntimeError("simulated failure while filling the store")

    monkeypatch.setattr(index_write, "_fill_collection", boom)
    with pytest.raises(RuntimeError):
        write_one(d, 2)
    monkeypatch.undo()
    assert check(Index.open(_settings(d))) == 1
    assert _data_dirs(d) == [_manifest(d)["data_dir"]], "the failed build's directory is removed"


def _flatten_to_old_layout(d: Path) -> None:
    """Rewrite a current index as the layout before versions: chroma/ and bm25/ beside manifest.json, format 1."""
    m = _manifest(d)
    data = d / m.pop("data_dir")
    m.pop("checksums")
    m["format"] = 1
    for name in ("chroma", "bm25"):
        shutil.move(str(data / name), str(d / name))
    data.rmdir()
    (d / "manifest.json").write_text(json.dumps(m, ensure_ascii=False), encoding="utf-8")


def test_old_layout_index_opens_and_the_next_ingest_converts_it(tmp_path, embedder, settings_factory):
    from rag.ingest import ingest

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Quy định A\n\nĐiều 1. Học phí\nHọc phí đóng theo học kỳ.\n", encoding="utf-8")
    d = tmp_path / "idx"
    s = settings_factory(d)
    assert ingest([docs], s, embedder=embedder, progress=False).ok
    ids = [c.id for c in Index.open(s).chunks]
    _flatten_to_old_layout(d)
    assert [c.id for c in Index.open(s).chunks] == ids, "an index in the old layout still opens"

    report = ingest([docs], s, embedder=embedder, progress=False)  # nothing changed, but the layout is converted
    assert report.ok and report.embedded == 0
    m = _manifest(d)
    assert m["format"] == 2 and (d / m["data_dir"] / "chroma").is_dir()
    assert [c.id for c in Index.open(s).chunks] == ids
    (docs / "b.md").write_text("# Quy định B\n\nĐiều 1. Học bổng\nHọc bổng xét theo học kỳ.\n", encoding="utf-8")
    assert ingest([docs], s, embedder=embedder, progress=False).ok
    assert not (d / "chroma").exists() and not (d / "bm25").exists(), "the next writer removes the old layout"
    assert len(Index.open(s).chunks) > len(ids)


# -- kill -9 -------------------------------------------------------------------------------------
def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.setdefault("ANONYMIZED_TELEMETRY", "False")
    return env


class _Proc:
    """A helper process whose stdout lines are collected by a thread (so waiting for one can time out)."""

    def __init__(self, *args):
        import queue
        import threading

        self.proc = subprocess.Popen([sys.executable, str(SCRIPT), *map(str, args)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=_env())
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=lambda: [self.lines.put(line.strip()) for line in self.proc.stdout],
                         daemon=True).start()
        self.wait_for("ready")

    def wait_for(self, word: str, timeout: float = 120.0) -> None:
        import queue

        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise AssertionError(f"no {word!r} from {self.proc.args[2]}: {self.proc.stderr.read()[-2000:]}")
            self.seen.append(line)
            if line.startswith(word):
                return

    def kill(self) -> list[str]:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)
        time.sleep(0.05)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.seen


@pytest.mark.slow
def test_kill_9_during_rebuilds_never_loses_or_tears_the_index(tmp_path):
    """Writers are killed at random points, twice in a row each round, while two readers open the index
    in a loop: every open sees one complete build (old or new, never a mix), never an error."""
    d = tmp_path / "idx"
    write_one(d, 0)
    seed = int(os.environ.get("RAG_FAULT_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    outs = [tmp_path / f"reader{i}.jsonl" for i in range(2)]
    readers = [_Proc("reader", d, out) for out in outs]
    built: list[str] = []
    try:
        for rnd in range(6):
            # twice in a row: the first writer is killed at a random point after it published at least
            # once; the next one early, in its clean-up of what the first left or in its first build
            first = _Proc("writer", d, (2 * rnd + 1) * 1000)
            first.wait_for("built")
            time.sleep(rng.uniform(0.0, 1.5))
            built += first.kill()
            assert check(Index.open(_settings(d))) >= 0  # never lost
            second = _Proc("writer", d, (2 * rnd + 2) * 1000)
            time.sleep(rng.uniform(0.0, 0.8))
            built += second.kill()
            assert check(Index.open(_settings(d))) >= 0
        final = subprocess.run([sys.executable, str(SCRIPT), "once", str(d), "99999"], env=_env(), capture_output=True,
                               text=True, timeout=120)
        assert final.returncode == 0, final.stderr[-2000:]
        assert check(Index.open(_settings(d))) == 99_999
        time.sleep(1.0)  # the readers see the last build too
    finally:
        for r in readers:
            r.kill()
    assert len(_data_dirs(d)) <= 2, f"stale versions are cleaned: {_data_dirs(d)}"
    assert not [p for p in d.iterdir() if ".tmp-" in p.name]
    publishes = sum(1 for line in built if line.startswith("built"))
    for out in outs:
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        errors = [r["error"] for r in rows if "error" in r]
        assert not errors, f"seed {seed}: a reader failed {len(errors)}/{len(rows)} times, first: {errors[0]}"
        seen = [r["build"] for r in rows]
        assert seen == sorted(seen), f"seed {seed}: a reader went back to an older build"
        assert len(rows) >= 20 and len(set(seen)) >= 3, (len(rows), sorted(set(seen)))
    assert publishes >= 6, f"seed {seed}: the writers published only {publishes} builds before being killed"


def test_build_helper_is_self_checking():
    """The fault test's consistency check rejects a mixed index (so the test above can fail)."""
    from rag.config import Settings
    from rag.embed import EmbedSpec
    from rag.index import make_manifest

    tag, chunks, vecs, tokens = build(3)
    _, _, other_vecs, _ = build(8)  # same chunk count (8 + k % 5), other vectors
    files = {"qc.md": {"sha256": tag, "title": tag, "kind": "md", "pages": 1, "chunks": len(chunks), "ocr_pages": 0}}
    m = make_manifest(EmbedSpec.from_settings(Settings()), 8, chunks, files, None, "rag-chunks")
    assert check(Index(m, chunks, vecs, tokens)) == 3
    with pytest.raises(AssertionError, match="vectors of another build"):
        check(Index(m, chunks, other_vecs, tokens))
