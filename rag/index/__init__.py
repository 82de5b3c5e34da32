"""The index: chunks, their vectors and BM25 tokens, stored in ChromaDB, searched exactly in memory.

Layout of an index directory (embedded mode)::

    manifest.json   the pointer: embedding model, dimension, prefixes, precision, normaliser/chunker versions,
                    corpus hash, counts, times, the data directory it describes (``data_dir``) and
                    the size and sha256 of every file in it (``checksums``)
    v-000042/       one complete build (a "version"):
      chroma/       a Chroma PersistentClient: documents, metadata, embeddings (the store of record)
      bm25/         the bm25s index over word-segmented text, with the chunk ids in its row order
    v-000041/       the previous build, kept until the next writer starts (a reader may still be copying it)
    .ingest.lock    the writers' lock (inside, so only this directory need be writable and every path to it
                    finds the same lock); hidden entries are never index data

Every state on disk is the old index or the new one. A writer (holding ``index_lock``) builds a
new ``v-N/`` beside the current one, fsyncs it, and then publishes it by replacing
``manifest.json`` atomically (temporary file, fsync, ``os.replace``, fsync of the directory).
A crash before the replace leaves the old manifest pointing at the old, untouched data; after it,
the new one. Only the lock holder removes anything: on taking the lock it deletes every version
the manifest does not name (the previous one, builds of crashed writers) and temporary pointers.
Readers never take the lock, never repair and never write: they read the manifest, then the data
it names; if that data vanished because a writer published (and a later writer cleaned up) in
between, the manifest has changed and they start again.

Reading never writes into the index: Chroma opens its store read-write and changes it, so the
Chroma files are copied into a private temporary directory (checking their size and sha256 on the
way) and opened there; the BM25 files are verified in place, once per process per file version.
Any mismatch is "re-index required", never an answer. This is what lets an index be served from
a read-only volume or image layer. Cost: the Chroma store is read once and written once to
``$TMPDIR`` per open (a process opens its index once).

An index in the layout before versions (format 1: ``chroma/`` and ``bm25/`` beside a manifest
without ``data_dir`` or checksums) still opens; the next ingest rewrites it as a version (format 2)
and the writer after that removes the old files.

With ``RAG_CHROMA_URL`` the chunks live in a Chroma server instead (several
workers share one index): each build writes a new collection
``<name>-<build id>`` and then moves the pointer collection ``<name>-current``
to it, so readers never see a half-written index; the manifest travels in the
collection's metadata.

Dense search is exact (a matrix product over all stored vectors, loaded at open)
rather than Chroma's HNSW query: measured here, Chroma's default HNSW returned
only 77% (10k chunks) and 59% (50k chunks) of the exact top-5. 100k chunks of
dimension 384 are 150 MB of float32, and a query is one matrix-vector product.

Modules: ``manifest`` (the manifest and format constants), ``search`` (``Index``, in memory), ``read``
(opening a local index), ``write`` (a build, its publication, the lock, clean-up, disk-full and read-only
errors), ``checksums`` (hashing, fsync, verification), ``chroma`` (clients, collections, the server layout).
"""

from __future__ import annotations

from .chroma import CHUNK_FIELDS
from .manifest import (INDEX_FORMAT, MANIFEST, READABLE_FORMATS, Manifest, corpus_hash, index_exists, make_manifest,
                       now_iso)
from .search import Index, build_bm25
from .write import index_lock, new_collection_name, write_index

__all__ = ["CHUNK_FIELDS", "INDEX_FORMAT", "MANIFEST", "READABLE_FORMATS", "Index", "Manifest", "build_bm25",
           "corpus_hash", "index_exists", "index_lock", "make_manifest", "new_collection_name", "now_iso",
           "write_index"]
