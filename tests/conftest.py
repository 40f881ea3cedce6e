"""Shared fixtures. The embedding model is real and loaded once per test session."""

from __future__ import annotations

import atexit
import itertools
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

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
# (raise when the backend is not available: a skipped backend is an untested one).


def _sqlite_store(tmp_path: Path) -> Any:
    from engramdb.storage.sqlite import SQLiteStore

    return SQLiteStore(tmp_path / "x.db")


# -- PostgreSQL: a real server (PostgreSQL 16 + pgvector from the `pgserver` package), started
# once per session on first use. Every test gets a schema of its own in one database (a
# schema costs a millisecond, a database copied from a template half a second); the store
# reaches it through `search_path` in the URL.


class PgCluster:
    """One throw-away PostgreSQL server for the test session."""

    DATABASE = "engram_tests"

    def __init__(self) -> None:
        import pgserver
        import psycopg

        self._psycopg = psycopg
        root = Path(tempfile.mkdtemp(prefix="engram-pg-"))
        # registered first, so it runs after pgserver's own exit handler stopped the server
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        self.server = pgserver.get_server(root / "pgdata", cleanup_mode="delete")
        self.admin_url = self.server.get_uri()
        self._n = itertools.count()
        self._drops: queue.Queue[str] = queue.Queue()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            # durability is worthless here; speed is not
            for name in ("fsync", "synchronous_commit", "full_page_writes"):
                conn.execute(f"ALTER SYSTEM SET {name} = off")
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(f"DROP DATABASE IF EXISTS {self.DATABASE}")
            conn.execute(f"CREATE DATABASE {self.DATABASE}")
        self.database_url = self.url(self.DATABASE)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        threading.Thread(target=self._dropper, daemon=True).start()

    def url(self, dbname: str, schema: str | None = None) -> str:
        parts = urlsplit(self.admin_url)
        query = parts.query
        if schema is not None:
            query += ("&" if query else "") + "options=" + quote(f"-csearch_path={schema},public")
        return urlunsplit(parts._replace(path="/" + dbname, query=query))

    def new_url(self) -> str:
        """A URL to an empty schema of its own (the vector extension is in `public`)."""
        schema = f"test_{os.getpid()}_{next(self._n)}"
        with self._psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return self.url(self.DATABASE, schema)

    def drop_later(self, url: str) -> None:
        options = unquote(parse_qs(urlsplit(url).query)["options"][0])
        self._drops.put(options.split("=", 1)[1].split(",")[0])

    def _dropper(self) -> None:
        while True:
            schema = self._drops.get()
            try:
                with self._psycopg.connect(self.database_url, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            except Exception:  # pragma: no cover - the whole cluster goes at exit anyway
                pass


_PG: list[PgCluster] = []
_PG_LOCK = threading.Lock()


def pg_cluster_or_skip() -> PgCluster:
    with _PG_LOCK:
        if not _PG:
            try:
                import pgserver  # noqa: F401
                import psycopg  # noqa: F401
            except ImportError as exc:
                # the test extra installs both: a missing one is a broken install, not a
                # reason to pass without testing PostgreSQL
                raise RuntimeError(f"PostgreSQL tests need pgserver and psycopg: {exc}") from exc
            _PG.append(PgCluster())
        return _PG[0]


@pytest.fixture(scope="session")
def pg_cluster() -> PgCluster:
    """The session's PostgreSQL server (started on first use, removed at exit)."""
    return pg_cluster_or_skip()


_LAST_PG_URL: list[str] = []


def _postgres_store(tmp_path: Path) -> Any:
    cluster = pg_cluster_or_skip()
    # the previous test's store is closed by now: its schema can go
    while _LAST_PG_URL:
        cluster.drop_later(_LAST_PG_URL.pop())
    url = cluster.new_url()
    _LAST_PG_URL.append(url)
    from engramdb.storage.postgres import PostgresStore

    return PostgresStore(url, pool_min=1, pool_max=4)


STORE_FACTORIES: dict[str, Callable[[Path], Any]] = {
    "postgres": _postgres_store,
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
