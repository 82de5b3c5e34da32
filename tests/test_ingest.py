"""Ingest end to end on small real files: incremental updates, bad files, nothing lost."""

from __future__ import annotations

import pytest

from rag.errors import InputError
from rag.index import Index
from rag.ingest import demo_paths, ingest

REG_A = """# Quy định thử nghiệm A

Chương I
QUY ĐỊNH CHUNG

Điều 1. Phạm vi điều chỉnh
Quy định này áp dụng cho sinh viên hệ chính quy của trường.

Điều 2. Thời gian học tập
1. Thời gian học tập tối đa là 6 năm đối với chương trình cử nhân.
2. Sinh viên được nghỉ học tạm thời tối đa 2 học kỳ.
"""

REG_B = """# Quy định thử nghiệm B

Điều 1. Học bổng
Sinh viên có điểm trung bình học kỳ từ 3,2 trở lên được xét học bổng khuyến khích.
"""


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "a.md").write_text(REG_A, encoding="utf-8")
    (d / "b.md").write_text(REG_B, encoding="utf-8")
    return d


def _run(paths, settings, embedder, **kw):
    return ingest([str(p) for p in paths], settings, embedder=embedder, progress=False, **kw)


def test_ingest_is_incremental(corpus, tmp_path, embedder, settings_factory):
    s = settings_factory(tmp_path / "idx")
    first = _run([corpus], s, embedder)
    assert first.ok and first.changed and first.count("added") == 2
    ids_before = {c.id for c in Index.open(s).chunks}
    assert len(ids_before) == first.chunk_count >= 3

    again = _run([corpus], s, embedder)
    assert not again.changed and again.count("unchanged") == 2 and again.embedded == 0
    assert {c.id for c in Index.open(s).chunks} == ids_before

    (corpus / "b.md").write_text(REG_B.replace("3,2", "3,5"), encoding="utf-8")
    changed = _run([corpus], s, embedder)
    assert changed.count("updated") == 1 and changed.count("unchanged") == 1
    assert changed.embedded == 1  # only the changed chunk is embedded again
    texts = " ".join(c.text for c in Index.open(s).chunks)
    assert "3,5" in texts and "3,2" not in texts

    (corpus / "a.md").unlink()
    kept = _run([corpus], s, embedder)
    assert any(c.source.endswith("a.md") for c in Index.open(s).chunks), "without --prune old files stay"
    pruned = _run([corpus], s, embedder, prune=True)
    assert pruned.count("removed") == 1
    assert not any(c.source.endswith("a.md") for c in Index.open(s).chunks)
    assert kept.ok and pruned.ok


def test_bad_file_is_reported_and_others_indexed(corpus, tmp_path, embedder, settings_factory):
    s = settings_factory(tmp_path / "idx")
    _run([corpus], s, embedder)
    before = {c.id for c in Index.open(s).chunks if c.source.endswith("b.md")}
    (corpus / "b.md").write_bytes(b"")  # b.md becomes empty: it fails, its old version stays
    (corpus / "c.pdf").write_bytes(b"%PDF-1.4 garbage")
    (corpus / "notes.xyz").write_text("x")
    report = _run([corpus], s, embedder)
    assert not report.ok
    failed = {f.source.split("/")[-1]: f for f in report.failed}
    assert set(failed) == {"b.md", "c.pdf"}
    assert "empty" in failed["b.md"].reason and "previously indexed version is kept" in failed["b.md"].reason
    assert "PDF" in failed["c.pdf"].reason
    assert any(f.status == "skipped" and f.source.endswith("notes.xyz") for f in report.files)
    after = {c.id for c in Index.open(s).chunks if c.source.endswith("b.md")}
    assert after == before


def test_size_limit_names_the_setting(corpus, tmp_path, embedder, settings_factory):
    s = settings_factory(tmp_path / "idx", max_file_mb=0.0001)
    report = _run([corpus / "a.md"], s, embedder)
    assert not report.ok and "RAG_MAX_FILE_MB" in report.failed[0].reason


def test_missing_path_and_empty_folder(tmp_path, embedder, settings_factory):
    s = settings_factory(tmp_path / "idx")
    with pytest.raises(InputError, match="no such file or folder"):
        _run([tmp_path / "missing"], s, embedder)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(InputError, match="no supported files"):
        _run([tmp_path / "empty"], s, embedder)
    assert not (tmp_path / "idx").exists()


def test_demo_corpus_is_a_real_regulation_set(demo_index_dir, settings_factory):
    index = Index.open(settings_factory(demo_index_dir))
    titles = {f["title"] for f in index.manifest.files.values()}
    assert len(demo_paths()) == 3 and len(titles) == 3
    articles = {(c.document, c.article) for c in index.chunks if c.article}
    assert len(articles) >= 40
    warn = [c for c in index.chunks if c.article == "10" and c.document.startswith("Quy chế đào tạo")]
    assert len(warn) >= 2, "the long Điều 10 is split at Khoản"
    assert all("Điều 10. Cảnh báo học tập" in c.header and "Chương II" in c.header for c in warn)


def test_a_source_folder_holding_its_own_index_does_not_read_it(corpus, embedder, settings_factory):
    """`rag ingest . --index ./index`: the index's JSON and sqlite files are not documents (they were
    reported as failed files on every later ingest, exit 1), nor are `rag eval`'s reports beside it."""
    s = settings_factory(corpus / "index")
    (corpus / "rag-eval" / "d").mkdir(parents=True)
    (corpus / "rag-eval" / "d" / "report.json").write_text('{"retrieval": {}}', encoding="utf-8")
    assert _run([corpus], s, embedder).count("added") == 2
    again = _run([corpus], s, embedder)
    assert again.ok and [f.status for f in again.files] == ["unchanged", "unchanged"], again.summary()


def test_a_sidecar_named_without_its_documents_extension_is_reported(corpus, tmp_path, embedder, settings_factory):
    (corpus / "a.meta.yaml").write_text("title: Quy định A\n", encoding="utf-8")  # should be a.md.meta.yaml
    (corpus / "b.md.meta.yaml").write_text("title: Quy định B\n", encoding="utf-8")
    report = _run([corpus], settings_factory(tmp_path / "idx"), embedder)
    skipped = {f.source: f.reason for f in report.files if f.status == "skipped"}
    assert report.ok and list(skipped) == [str(corpus / "a.meta.yaml")], skipped
    assert "named after its document's whole file name" in skipped[str(corpus / "a.meta.yaml")]


def _blob_store(repo):
    """The Hugging Face cache's layout (DVC's is alike): snapshots/<rev>/<name> → ../../blobs/<sha256>, blobs
    named by their hash without an extension."""
    import hashlib

    snap = repo / "snapshots" / "main"
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name, text in (("a.md", REG_A), ("b.txt", REG_B)):
        blob = repo / "blobs" / hashlib.sha256(text.encode()).hexdigest()
        blob.write_text(text, encoding="utf-8")
        (snap / name).symlink_to(f"../../blobs/{blob.name}")
    (snap / "corpus.yaml").write_text("documents:\n  a.md:\n    number: 12/QĐ-ĐHBK\n", encoding="utf-8")
    (snap / "b.txt.meta.yaml").write_text("title: Quy định học bổng\n", encoding="utf-8")
    return snap


def test_a_symlink_is_read_by_its_own_name_not_its_targets(tmp_path, embedder, settings_factory):
    """The format, the document's name and its sidecars come from the link's name; the bytes from its target
    (a blob named by its hash). Before, the target's name was used: "unsupported type (no extension)"."""
    snap = _blob_store(tmp_path / "repo")
    for paths, names in (([tmp_path / "repo"], ["snapshots/main/a.md", "snapshots/main/b.txt"]),
                         ([snap / "a.md", snap / "b.txt"], ["a.md", "b.txt"])):  # named: followed wherever they lead
        s = settings_factory(tmp_path / f"idx-{len(names[0])}")
        report = _run(paths, s, embedder)
        assert report.ok and [f.source for f in report.files if f.status == "added"] == names, report.summary()
        files = Index.open(s).manifest.files
        assert [files[n]["kind"] for n in names] == ["md", "txt"]
        assert files[names[0]]["meta"]["number"] == "12/QĐ-ĐHBK"  # corpus.yaml keyed by the link's name
        assert files[names[1]]["meta"]["title"] == "Quy định học bổng"  # b.txt.meta.yaml beside the link
        assert {c.source for c in Index.open(s).chunks} == set(names)


def test_a_folder_of_links_leading_outside_it_says_what_to_do(tmp_path, embedder, settings_factory):
    """Links that leave the folder given are still not followed (a link in a shared folder must not pull in
    files from elsewhere); a folder that holds only those names them and the two ways to read them."""
    from rag.load import iter_files

    snap = _blob_store(tmp_path / "repo")
    with pytest.raises(InputError) as info:
        _run([snap], settings_factory(tmp_path / "idx"), embedder)
    assert "contains no supported files" in str(info.value) and "lead outside it are not followed (2 found)" in str(
        info.value) and "name the files themselves" in str(info.value)
    (snap / "c.md").write_text(REG_B, encoding="utf-8")
    listing = iter_files([snap])
    assert listing.files == [(snap / "c.md", "c.md")]
    assert sorted(p.name for p, why in listing.skipped if "outside" in why) == ["a.md", "b.txt"]
