"""Shared fixtures. The embedding model is real and loaded once per test session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engramdb import Engram, FrozenClock, Settings
from engramdb.embeddings import Embedder, load_default_embedder


class _SharedEmbedder:
    """The session's embedder, shared by many Engram instances: closing one of them must
    not close the model for the others."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self.dimension = inner.dimension

    def embed(self, texts):  # type: ignore[no-untyped-def]
        return self.inner.embed(texts)

    def close(self) -> None:
        pass


@pytest.fixture(scope="session")
def embedder() -> Iterator[Embedder]:
    inner = load_default_embedder(Settings())
    yield _SharedEmbedder(inner)
    inner.close()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def engram(tmp_path: Path, embedder: Embedder, clock: FrozenClock) -> Iterator[Engram]:
    with Engram(path=tmp_path / "engram.db", embedder=embedder, clock=clock) as e:
        yield e


# -- store backends --------------------------------------------------------------------
# Every Store backend passes tests/test_store_contract.py. To add one (e.g. "postgres"),
# add a factory here: it gets a fresh temporary directory and returns an unmigrated store
# (call pytest.skip() inside it when the backend is not available).


def _sqlite_store(tmp_path: Path) -> Any:
    from engramdb.storage.sqlite import SQLiteStore

    return SQLiteStore(tmp_path / "x.db")


STORE_FACTORIES: dict[str, Callable[[Path], Any]] = {
    "sqlite": _sqlite_store,
}

STORE_TEST_MODEL = "test-model"
STORE_TEST_DIM = 8


@pytest.fixture(params=sorted(STORE_FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A migrated store of each backend, bound to 8-dimensional "test-model" vectors."""
    s = STORE_FACTORIES[request.param](tmp_path)
    s.migrate()
    s.bind_embedding(STORE_TEST_MODEL, STORE_TEST_DIM)
    yield s
    s.close()
