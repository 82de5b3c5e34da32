"""Shared fixtures: the real packaged embedder (loaded once) and small real indexes in temp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach a model hub; anything that tries fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with a message when it is absent (a fresh clone)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared real-data folder is only present in the development checkout")
    return path


@pytest.fixture(scope="session")
def settings_factory():
    from rag.config import Settings

    def make(index_dir=None, **changes):
        s = Settings.from_env({})
        return s.with_(index_dir=Path(index_dir) if index_dir else None, **changes)

    return make


@pytest.fixture(scope="session")
def embedder():
    from rag.config import Settings
    from rag.embed import Embedder

    return Embedder.load(Settings.from_env({}))


@pytest.fixture(scope="session")
def demo_index_dir(tmp_path_factory, embedder, settings_factory):
    """The bundled demo regulations, indexed once per test session (read-only for tests)."""
    from rag.ingest import demo_paths, ingest

    directory = tmp_path_factory.mktemp("demo") / "index"
    report = ingest(demo_paths(), settings_factory(directory), embedder=embedder, progress=False)
    assert report.ok, report.summary()
    return directory


@pytest.fixture(scope="session")
def demo_pipeline(demo_index_dir, embedder, settings_factory):
    from rag.pipeline import Pipeline

    return Pipeline.from_settings(settings_factory(demo_index_dir), embedder=embedder)
