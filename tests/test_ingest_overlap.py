"""The overlapped ingest (readers in a pool, embedding in a thread) writes what one file after the other would."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rag.embed import EmbedSpec
from rag.index import Index
from rag.ingest import demo_paths, ingest, read_document


def _sequential(settings, embedder):
    """The reference: each file read, chunked and segmented in turn, then every chunk embedded at once."""
    from rag.chunk import chunk_document
    from rag.metadata import apply, document_metadata, read_sidecar
    from rag.normalise import segment

    chunks = []
    for path in sorted(demo_paths(), key=lambda p: p.name):
        doc = read_document(path, settings, source=path.name)
        meta = document_metadata(doc, read_sidecar(path, path.parent)[0])
        cs = chunk_document(doc, max_chars=settings.chunk_max_chars, title=meta.title)
        apply(cs, meta)
        chunks += cs
    return chunks, [segment(c.full_text) for c in chunks], embedder.embed_passages([c.full_text for c in chunks])


def _open(settings, directory):
    return Index.open(settings, EmbedSpec.from_settings(settings), directory=directory)


@pytest.mark.parametrize("workers,threads", [(0, 0), (2, 0), (2, 1)],
                         ids=["reader-thread", "reader-processes", "reader-processes-one-embed-thread"])
def test_overlapped_ingest_equals_sequential(tmp_path, embedder, settings_factory, workers, threads):
    # a small batch size: several embedding calls, each spanning files, while files are still being read;
    # with a reader thread the embedding thread segments for BM25, reader processes segment themselves
    settings = settings_factory(tmp_path / "index", embed_batch_size=4, embed_ingest_threads=threads)
    report = ingest(demo_paths(), settings, embedder=embedder, progress=False, read_workers=workers)
    assert report.ok and report.embedded == report.chunk_count
    assert [f.source for f in report.files] == sorted(p.name for p in demo_paths())
    chunks, tokens, vectors = _sequential(settings, embedder)
    index = _open(settings, tmp_path / "index")
    assert [c.id for c in index.chunks] == [c.id for c in chunks]
    assert [c.text for c in index.chunks] == [c.text for c in chunks]
    assert index.tokens == tokens
    # the overlapped ingest batches chunks as they arrive, so which chunks share a batch (and its padding) depends
    # on timing: a vector can differ from the sequential one by float rounding in other kernels, up to ~1e-3 in
    # one component under load (measured), never by pointing elsewhere (another chunk's cosine is far below)
    cosines = np.sum(index.vectors * vectors, axis=1)
    assert cosines.min() > 0.9999, cosines.min()
    files = json.loads((tmp_path / "index" / "manifest.json").read_text())["files"]
    assert list(files) == sorted(p.name for p in demo_paths())


def test_reingest_of_one_changed_file_reuses_the_rest(tmp_path, embedder, settings_factory):
    src = tmp_path / "src"
    src.mkdir()
    for p in demo_paths():
        (src / p.name).write_text(p.read_text(encoding="utf-8"), encoding="utf-8")
    settings = settings_factory(tmp_path / "index")
    first = ingest([src], settings, embedder=embedder, progress=False)
    before = _open(settings, tmp_path / "index")
    changed = src / "quy-dinh-hoc-bong.md"
    changed.write_text(changed.read_text(encoding="utf-8") + "\n\nĐiều 99. Điều khoản thi hành\n\nQuy định này có "
                       "hiệu lực kể từ ngày ký.\n", encoding="utf-8")
    second = ingest([src], settings, embedder=embedder, progress=False, read_workers=2)
    after = _open(settings, tmp_path / "index")
    assert [f.status for f in second.files] == ["unchanged", "unchanged", "updated"]
    assert 0 < second.embedded < first.embedded
    old = {c.id: i for i, c in enumerate(before.chunks)}
    assert sum(c.id in old for c in after.chunks) == len(after.chunks) - second.embedded
    for i, c in enumerate(after.chunks):
        if c.id in old:  # reused, not re-embedded (the store's cosine space renormalises: last-bit differences)
            assert np.allclose(after.vectors[i], before.vectors[old[c.id]], atol=1e-6)


def test_large_inputs_are_read_and_segmented_by_lowest_priority_processes(tmp_path, settings_factory):
    """Reading, chunking and word segmentation of 1 MB of files or more run in reader processes at nice 19, which
    take only the CPU time the embedder's threads leave idle; a few small files are read in a thread (no process
    start) and the embedding thread segments their chunks."""
    import os
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    from rag.ingest import _BIG_INPUT, _Stages

    settings = settings_factory(tmp_path / "index")
    small = _Stages(settings, None, None, 3, demo_paths())
    try:
        assert isinstance(small._readers, ThreadPoolExecutor) and not small.readers_segment
    finally:
        small.close()
    big = tmp_path / "law.txt"
    big.write_text("Điều 1. Phạm vi điều chỉnh\n" + "Sinh viên đăng ký học phần. " * (_BIG_INPUT // 28 + 1),
                   encoding="utf-8")
    large = _Stages(settings, None, None, 1, [big])
    try:
        assert isinstance(large._readers, ProcessPoolExecutor) and large.readers_segment
        assert large._readers.submit(os.nice, 0).result(timeout=120) == 19
    finally:
        large.close()


class _Recording:
    """The real embedder, recording each call's size; its first call signals ``started`` and then waits
    until ``release`` is set."""

    def __init__(self, embedder, started, release):
        self.inner, self.started, self.release, self.calls = embedder, started, release, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed_passages(self, texts):
        if not self.calls:
            self.started.set()
            assert self.release.wait(60)
        self.calls.append(len(texts))
        return self.inner.embed_passages(texts)


@pytest.mark.parametrize("batch_size", [None, 1])
def test_the_embedder_takes_every_chunk_read_since_its_last_call(tmp_path, embedder, settings_factory, monkeypatch,
                                                                batch_size):
    """The first call starts with the first file read; while it runs the other files are read, and the next
    call takes all of them at once (a big call pads less) instead of one fixed-size call after another."""
    import threading

    import rag.ingest as ing

    started, release = threading.Event(), threading.Event()
    reading = ing.read_chunks
    read = []

    def read_chunks(path, source, *a, **k):
        if read:
            assert started.wait(60)  # the first file's chunks are being embedded
        out = reading(path, source, *a, **k)
        read.append(source)
        if len(read) == len(demo_paths()):
            release.set()  # every file read: the first call may finish
        return out

    monkeypatch.setattr(ing, "read_chunks", read_chunks)
    recording = _Recording(embedder, started, release)
    if batch_size is not None:
        recording.batch_size = batch_size
        monkeypatch.setattr(ing, "_CALL_BATCHES", 10)
    settings = settings_factory(tmp_path / "index", embed_batch_size=4)
    report = ingest(demo_paths(), settings, embedder=recording, progress=False, read_workers=0)
    assert report.ok and sum(recording.calls) == report.embedded == report.chunk_count
    sizes = [f.chunks for f in report.files]
    if batch_size is None:
        assert recording.calls == [sizes[0], sizes[1] + sizes[2]]
    else:  # a call stops taking files once it holds _CALL_BATCHES batches: here one file each
        assert ing._CALL_BATCHES * batch_size < min(sizes[1:]) and recording.calls == sizes


def test_a_file_whose_segmentation_fails_is_named_and_the_rest_indexed(tmp_path, embedder, settings_factory,
                                                                       monkeypatch):
    import rag.ingest as ing

    segmenting = ing.segment_all

    def segment_all(texts):
        if sum("khuyến khích học tập" in t for t in texts) > 3:  # the scholarship rules, not a passing mention
            raise SystemError("<built-in method> returned a result with an exception set")
        return segmenting(texts)

    monkeypatch.setattr(ing, "segment_all", segment_all)
    settings = settings_factory(tmp_path / "index")
    report = ingest(demo_paths(), settings, embedder=embedder, progress=False, read_workers=0)
    assert [(f.source, f.status) for f in report.files] == [
        ("quy-che-cong-tac-sinh-vien.md", "added"), ("quy-che-dao-tao.md", "added"), ("quy-dinh-hoc-bong.md", "failed")]
    assert "SystemError" in report.files[2].reason, report.files[2].reason
    index = _open(settings, tmp_path / "index")
    assert {c.source for c in index.chunks} == {"quy-che-cong-tac-sinh-vien.md", "quy-che-dao-tao.md"}


def _law(title: str, n: int) -> str:
    return "\n\n".join(f"Điều {i}. {title} {i}\n\nSinh viên thực hiện quy định {title.lower()} số {i} của trường."
                       for i in range(1, n + 1))


@pytest.mark.parametrize("killer", ["dies-once", "always-dies"])
def test_a_reader_process_that_dies_costs_no_other_file(tmp_path, embedder, settings_factory, monkeypatch, killer):
    """A reader killed mid-ingest (kill -9, out of memory) breaks the pool and every file it held: those are read
    again one at a time in a new pool; a file whose reader dies once more, alone, is reported (reader_died)."""
    import _reader_faults

    import rag.ingest as ing

    monkeypatch.setattr(ing, "read_chunks", _reader_faults.read_or_die)
    src = tmp_path / "src"
    src.mkdir()
    names = ["a-hoc-phi.md", "b-ky-luat.md", f"c-{killer}.md", "d-hoc-bong.md"]
    for k, name in enumerate(names):
        (src / name).write_text(_law(f"Quy định {name[2:-3]}", 6 + k), encoding="utf-8")
    settings = settings_factory(tmp_path / "index")
    report = ingest([src], settings, embedder=embedder, progress=False, read_workers=2)
    status = {f.source: (f.status, f.code) for f in report.files}
    others = {n: ("added", "") for n in names if killer not in n}
    if killer == "dies-once":
        assert status == {**others, f"c-{killer}.md": ("added", "")}, report.summary()
    else:
        assert status == {**others, f"c-{killer}.md": ("failed", "reader_died")}, report.summary()
        assert "ended abruptly, twice" in report.files[2].reason
    index = _open(settings, tmp_path / "index")
    assert {c.source for c in index.chunks} == {n for n, (s, _) in status.items() if s == "added"}
    assert index.tokens and all(index.tokens)  # segmented, whether by the pool or after it broke
