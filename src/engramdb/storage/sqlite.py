"""The embedded store: one SQLite file in WAL mode.

Rows, vectors (float32 blobs), FTS5 full-text and history live in SQLite; vector search runs
exactly with numpy over an in-memory matrix per (tenant, user), kept coherent with writes:
every write transaction bumps the user's row in `partitions`, and a cached matrix whose
version differs from the database's is reloaded, so several processes on one file stay correct.

Writes go through one writer connection per store and `BEGIN IMMEDIATE`, which SQLite
serialises across processes; reads use one connection per thread (WAL readers never block).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import re
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmbeddingMismatch, StoreError
from ..models import (
    AccessUpdate,
    ApiKey,
    ContentType,
    HistoryEvent,
    IdempotentResponse,
    MemoryNature,
    MemoryRecord,
    MemoryType,
    Relation,
    Scope,
    Status,
    Tenant,
    TenantStatus,
    Tier,
)
from .base import (
    MEMORY_COLUMNS,
    AccessFields,
    Candidates,
    Filters,
    RankColumns,
    RankFields,
    StoredMemory,
    Vector,
    compose_candidates,
)
from .keyword_index import TOKENIZE, IndexTerms, ScopeKeywords, kw_averages, words_of
from .keyword_stats import TenantWordStats
from .migrations import Migrations
from .text import fold, keyword_terms
from .vector_index import ANY, HeldFilters, Partition, RankRow
from .where import where

migrations = Migrations("sqlite")
log = logging.getLogger("engram.storage")


@migrations.step("0001_initial")
def _initial(conn: sqlite3.Connection) -> None:
    conn.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

        CREATE TABLE memories (
            rowid INTEGER PRIMARY KEY,
            tenant_id TEXT NOT NULL,
            id TEXT NOT NULL,
            user_id TEXT,
            user_key TEXT NOT NULL,
            agent_id TEXT,
            agent_key TEXT NOT NULL,
            session_id TEXT,
            namespace TEXT NOT NULL,
            scope TEXT,
            domain TEXT,
            value_json TEXT,
            content TEXT NOT NULL,
            content_type TEXT NOT NULL,
            memory_type TEXT NOT NULL,
            memory_nature TEXT,
            tier TEXT NOT NULL,
            source TEXT NOT NULL,
            source_id TEXT,
            external_id TEXT,
            parent_memory_id TEXT,
            metadata TEXT NOT NULL,
            tags TEXT NOT NULL,
            importance REAL NOT NULL,
            confidence REAL NOT NULL,
            relevance REAL NOT NULL,
            decay_rate REAL NOT NULL,
            access_count INTEGER NOT NULL,
            last_accessed_at REAL,
            pinned INTEGER NOT NULL,
            immutable INTEGER NOT NULL,
            status TEXT NOT NULL,
            superseded_by TEXT,
            expires_at REAL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            pii_detected INTEGER NOT NULL,
            pii_fields TEXT NOT NULL,
            integrity_hash TEXT NOT NULL,
            embedding_model TEXT,
            tokens_used INTEGER NOT NULL
        );
        CREATE UNIQUE INDEX ux_memories_tenant_id ON memories(tenant_id, id);
        CREATE INDEX ix_memories_user ON memories(tenant_id, user_key, created_at);
        CREATE INDEX ix_memories_created ON memories(tenant_id, created_at);
        -- exact duplicates cannot be stored twice, whatever the callers do
        CREATE UNIQUE INDEX ux_memories_hash
            ON memories(tenant_id, user_key, agent_key, namespace, integrity_hash)
            WHERE status = 'active';
        CREATE INDEX ix_memories_expires ON memories(expires_at) WHERE expires_at IS NOT NULL;

        CREATE TABLE memory_vectors (
            memory_rowid INTEGER PRIMARY KEY REFERENCES memories(rowid) ON DELETE CASCADE,
            model TEXT NOT NULL,
            vector BLOB NOT NULL
        );

        -- the scope column holds hashed tenant and user tokens, indexed like words,
        -- so that a user's full-text search touches only that user's postings
        CREATE VIRTUAL TABLE memories_fts USING fts5(
            scope, content, tokenize = 'porter unicode61 remove_diacritics 2'
        );

        CREATE TABLE partitions (
            tenant_id TEXT NOT NULL,
            user_key TEXT NOT NULL,
            version INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, user_key)
        );

        CREATE TABLE history (
            seq INTEGER PRIMARY KEY,
            tenant_id TEXT NOT NULL,
            id TEXT NOT NULL,
            memory_id TEXT NOT NULL,
            event TEXT NOT NULL,
            at REAL NOT NULL,
            actor TEXT,
            changes TEXT NOT NULL
        );
        CREATE INDEX ix_history_memory ON history(tenant_id, memory_id, seq);
        """
    )


@migrations.step("0002_tenants_keys_idempotency")
def _tenants_keys(conn: sqlite3.Connection) -> None:
    conn.executescript(
        """
        CREATE TABLE tenants (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            memory_limit INTEGER,
            created_at REAL NOT NULL
        );
        CREATE TABLE api_keys (
            tenant_id TEXT NOT NULL,
            id TEXT NOT NULL,
            name TEXT NOT NULL,
            prefix TEXT NOT NULL,
            key_hash TEXT NOT NULL,
            scopes TEXT NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL,
            last_used_at REAL,
            rate_limit INTEGER,
            PRIMARY KEY (tenant_id, id)
        );
        CREATE UNIQUE INDEX ux_api_keys_hash ON api_keys(key_hash);
        CREATE TABLE idempotency (
            tenant_id TEXT NOT NULL,
            key TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            status_code INTEGER NOT NULL,
            body BLOB NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (tenant_id, key)
        );
        CREATE INDEX ix_idempotency_created ON idempotency(created_at);
        """
    )


@migrations.step("0003_relations")
def _relations(conn: sqlite3.Connection) -> None:
    conn.executescript(
        """
        CREATE TABLE relations (
            tenant_id TEXT NOT NULL,
            from_id TEXT NOT NULL,
            to_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (tenant_id, from_id, to_id, kind)
        );
        CREATE INDEX ix_relations_to ON relations(tenant_id, to_id);
        """
    )


@migrations.step("0004_keyword_index_per_user")
def _keyword_index(conn: Any) -> None:
    """The keyword index becomes `memories_kw`: every word is indexed twice, prefixed with a
    hash of its tenant (column t) and of its tenant + user (column u), so a user's query
    reads only that user's postings and BM25 counts document frequencies within the scope
    (as the PostgreSQL store does). Contentless: the text stays in `memories` alone."""
    conn.execute(
        f"CREATE VIRTUAL TABLE memories_kw USING fts5(t, u, content = '', tokenize = '{TOKENIZE}')"
    )
    total = int(conn.execute("SELECT count(*) FROM memories").fetchone()[0])
    if total:
        log.warning("rebuilding the keyword index of %s memories (once, ~8 s per 100k)",
                    f"{total:,}")
    rows = conn.execute("SELECT rowid, tenant_id, user_key, content FROM memories")
    conn.executemany(
        "INSERT INTO memories_kw (rowid, t, u) VALUES (?, ?, ?)",
        ((rowid, *_kw_values(tenant, user, content)) for rowid, tenant, user, content in rows),
    )
    conn.execute("DROP TABLE memories_fts")


@migrations.step("0005_live_memories_index")
def _live_index(conn: sqlite3.Connection) -> None:
    """A partial index of the active memories that covers the scope filters, so that
    counting a tenant's visible memories (the `total` of every list page) reads the index
    alone: at 100k memories a tenant-wide list total took 237 ms, now 16 ms (by session
    236 -> 12 ms)."""
    conn.execute(
        "CREATE INDEX ix_memories_live ON memories "
        "(tenant_id, expires_at, user_key, agent_key, session_id, namespace) "
        "WHERE status = 'active'")


@migrations.step("0006_partition_access_version")
def _access_version(conn: sqlite3.Connection) -> None:
    """A second version per (tenant, user) that access flushes bump: they change only rank
    fields, so a process holding the user's partition reloads those, not the vectors."""
    conn.execute("ALTER TABLE partitions ADD COLUMN access_version INTEGER NOT NULL DEFAULT 0")


#: What a read changes of a memory (access flushes, lifecycle.py): kept in `memory_access`.
ACCESS_COLUMNS = ("tier", "relevance", "decay_rate", "access_count", "last_accessed_at")


@migrations.step("0007_memory_access")
def _memory_access(conn: Any) -> None:
    """The fields an access flush writes move to a narrow table clustered by (tenant, user).
    In `memories` each flushed row rewrote its 4 KB page (~5 rows of ~800 bytes, of every
    user, in insertion order): 650 rows of one user dirtied ~420 pages, ~1.7 MB into the WAL
    each second of a busy user's searches. Here a user's rows are ~100 to a page, next to
    each other: the same flush dirties ~45 pages and costs a quarter of the time
    (docs/architecture.md, "What an access flush costs a search")."""
    total = int(conn.execute("SELECT count(*) FROM memories").fetchone()[0])
    if total > 10_000:
        log.warning("moving the access fields of %s memories to their own table "
                    "(once, ~2-3 s per 100k)", f"{total:,}")
    conn.execute(
        "CREATE TABLE memory_access ("
        "tenant_id TEXT NOT NULL, user_key TEXT NOT NULL, memory_rowid INTEGER NOT NULL, "
        "tier TEXT NOT NULL, relevance REAL NOT NULL, decay_rate REAL NOT NULL, "
        "access_count INTEGER NOT NULL, last_accessed_at REAL, "
        "PRIMARY KEY (tenant_id, user_key, memory_rowid)) WITHOUT ROWID")
    conn.execute(
        f"INSERT INTO memory_access SELECT tenant_id, user_key, rowid, "
        f"{', '.join(ACCESS_COLUMNS)} FROM memories ORDER BY tenant_id, user_key, rowid")
    for column in ACCESS_COLUMNS:
        conn.execute(f"ALTER TABLE memories DROP COLUMN {column}")


_COLUMNS = MEMORY_COLUMNS
_ROW_COLUMNS = tuple(c for c in _COLUMNS if c not in ACCESS_COLUMNS)
# Positions in a record's values (_row_values) of the row's columns and of its access fields
_ROW_AT = tuple(_COLUMNS.index(c) for c in _ROW_COLUMNS)
_ACCESS_AT = tuple(_COLUMNS.index(c) for c in ACCESS_COLUMNS)
#: A memory's row with its access fields (`a`). LEFT: a query that reads none of them
#: leaves the table alone (SQLite drops such a join), though a count reads it: see _from.
_ACCESS_JOIN = (" LEFT JOIN memory_access a ON a.tenant_id = m.tenant_id "
                "AND a.user_key = m.user_key AND a.memory_rowid = m.rowid")
_MEMORIES = "memories m" + _ACCESS_JOIN
_SELECT = ("SELECT m.rowid, "
           + ", ".join(f"a.{c}" if c in ACCESS_COLUMNS else f"m.{c}" for c in _COLUMNS)
           + " FROM " + _MEMORIES)
_INSERT = (
    f"INSERT INTO memories ({', '.join(_ROW_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _ROW_COLUMNS)})"
)
_ACCESS_INSERT = (
    f"INSERT INTO memory_access (tenant_id, user_key, memory_rowid, {', '.join(ACCESS_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in range(3 + len(ACCESS_COLUMNS)))})"
)
_ACCESS_DELETE = ("DELETE FROM memory_access "
                  "WHERE tenant_id = ? AND user_key = ? AND memory_rowid = ?")
_COLUMN_REF = re.compile(r"\b([am])\.(\w+)")
# The columns of ix_memories_live (partial: active rows) that a filter may name for the
# index to answer it alone (user_key, after expires_at, is better sought by the user's).
_LIVE_INDEX_COLUMNS = frozenset(
    {"tenant_id", "expires_at", "status", "agent_key", "session_id", "namespace"})


def _from(where: str, index: str = "") -> str:
    """The FROM of a query filtered by `where` (`index`: an index clause for `m`): with the
    access fields only if it reads them (SQLite reads the joined table for a count even
    when nothing of it is used). A filter of active rows that the live index covers reads
    that index alone: SQLite chose it by itself while `memories` held the access fields (a
    tenant's count of visible rows at 100k: 17 ms), then ix_memories_created and the rows
    (66 ms)."""
    refs = _COLUMN_REF.findall(where)
    if (not index and "m.status = 'active'" in where
            and all(t == "m" and c in _LIVE_INDEX_COLUMNS for t, c in refs)):
        index = "INDEXED BY ix_memories_live"
    table = f"memories m {index}".rstrip()
    return table + _ACCESS_JOIN if any(t == "a" for t, _ in refs) else table


_KW_INSERT = "INSERT INTO memories_kw (rowid, t, u) VALUES (?, ?, ?)"
_KW_DELETE = "INSERT INTO memories_kw (memories_kw, rowid, t, u) VALUES ('delete', ?, ?, ?)"
# Every write transaction leaves FTS5 a new segment, and FTS5's own merging keeps ~3 per
# level of a log-4 hierarchy: at 100k memories a word was looked up in ~20 segments, half
# of a typical keyword search's time. After KW_MERGE_AFTER such transactions a background
# thread merges the index back into one segment, KW_MERGE_PAGES pages per transaction so
# that writers wait for one step at most (docs/architecture.md, "Keyword index upkeep").
KW_MERGE_AFTER = 1000
KW_MERGE_PAGES = 1000
# A user's keyword postings are held in memory (storage/keyword_index.py), built in the
# background when the user is searched a second time, up to KW_CACHE_POSTINGS postings
# (term, row) over all users, the least recently searched dropped first: ~100 bytes each.
KW_CACHE_POSTINGS = 500_000
#: Users remembered as searched once (a second search caches their postings).
KW_SEEN_SCOPES = 10_000
#: A user whose first search matches this many postings through FTS5 has its postings built
#: by that search, after its FTS5 query: FTS5 costs such a user milliseconds a search
#: (1,800 memories: ~400 matches a query, 10-40 ms beside the model), the build ~0.15 s
#: once. Built in the background instead, the next ~20 searches waited on FTS5 and on
#: the builder's hold of the GIL (20-90 ms each).
KW_BUILD_AT_MATCHES = 200
# The whole rows of search hits are held next to their user's partition, up to ROW_CACHE_ROWS
# over all users (the least recently returned dropped first; ~1-2 KB each): reading ten
# rows back after the model had evicted the caches took ~0.3 ms of a search.
ROW_CACHE_ROWS = 10_000
# A user's first hits read from the database have all the user's active rows read with them,
# once per partition, when there are at most ROW_FILL_ROWS: a search of a large user found
# ~4 of its 10 hits held after 300 searches, and read the rest back at ~50 µs a row after the
# model (1,828 active rows: ~40 ms once, then get_many 350 -> 130 µs a search).
ROW_FILL_ROWS = ROW_CACHE_ROWS // 4
_UPDATE = (
    "UPDATE memories SET "
    + ", ".join(f"{c} = ?" for c in _ROW_COLUMNS if c not in ("tenant_id", "id"))
    + " WHERE tenant_id = ? AND id = ?"
)



def _ts(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


# The prefix alphabet has no vowels (nor y): the porter stemmer measures a word by its
# vowel-consonant runs, and a prefix of consonants and digits merges with the word's first
# consonants, so a prefixed word is stemmed as the bare word would be.
_KW_ALPHABET = "0123456789bcdfghjklmnpqrstvwxz"


@functools.lru_cache(maxsize=4096)  # ~20 µs to compute, on every search and write
def _kw_prefix(tenant_id: str, user_key: str | None = None) -> str:
    """The prefix of a scope's words in the keyword index: t + hash(tenant) for column t,
    p + hash(tenant, user) for column u (64 bits in 13 characters of _KW_ALPHABET), so the
    tokenizer keeps prefix and word as one token."""
    parts = (tenant_id,) if user_key is None else (tenant_id, user_key)
    n = int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest())
    digits = []
    for _ in range(13):
        n, d = divmod(n, len(_KW_ALPHABET))
        digits.append(_KW_ALPHABET[d])
    return ("t" if user_key is None else "p") + "".join(digits)


def _kw_values(tenant_id: str, user_key: str, content: str) -> tuple[str, str]:
    """A memory's two keyword-index columns. A delete must give the index these same values
    (the table is contentless), so they depend only on the row's tenant, user and content."""
    words = fold(content).split()
    t, u = _kw_prefix(tenant_id), _kw_prefix(tenant_id, user_key)
    return " ".join(t + w for w in words), " ".join(u + w for w in words)


def _partition_filters(f: Filters) -> HeldFilters:
    """The filters a partition checks by itself (the rest need the rows)."""
    return HeldFilters(
        now=-math.inf if f.include_expired else f.now.timestamp(),
        agent=f.agent_id if f.exact_scope or f.agent_id is not None else ANY,
        session=ANY if f.session_id is None else f.session_id,
        namespace=ANY if f.namespace is None else f.namespace,
        include_inactive=f.include_superseded,
    )


class _SQLiteDialect:
    """How SQLite spells the filters (storage/where.py): times as epoch seconds, tags and
    metadata as JSON text."""

    mark = "?"
    relevance = (
        "(CASE WHEN m.pinned THEN a.relevance ELSE a.relevance * exp(-a.decay_rate * "
        "(? - coalesce(a.last_accessed_at, m.created_at)) / 3600.0) END)"
    )
    tier = "a.tier"

    def time(self, dt: datetime) -> float:
        return dt.timestamp()

    def any_of(self, column: str, values: Sequence[str]) -> tuple[str, builtins.list[Any]]:
        return f"{column} IN ({','.join('?' for _ in values)})", builtins.list(values)

    def tags(self, tags: Sequence[str]) -> builtins.list[tuple[str, builtins.list[Any]]]:
        return [("EXISTS (SELECT 1 FROM json_each(m.tags) WHERE value = ?)", [tag])
                for tag in tags]

    def metadata(self, key: str, value: Any) -> tuple[str, builtins.list[Any]]:
        # json_extract gives objects and arrays back as minified JSON text
        return "json_extract(m.metadata, ?) IS ?", [
            '$."' + key.replace('"', "") + '"',
            json.dumps(value, separators=(",", ":"), ensure_ascii=False)
            if isinstance(value, dict | list) else value]


_SQLITE = _SQLiteDialect()


def _kw_averages(conn: sqlite3.Connection) -> tuple[int, int]:
    """Rows in memories_kw and tokens in all its columns, as FTS5's bm25() counts them."""
    row = conn.execute("SELECT block FROM memories_kw_data WHERE id = 1").fetchone()
    return kw_averages(None if row is None else row[0])


def _versions(conn: sqlite3.Connection, key: tuple[str, str]) -> tuple[int, int] | None:
    """The version and access version of a (tenant, user) partition, None if nothing was
    ever written to it."""
    row = conn.execute("SELECT version, access_version FROM partitions "
                       "WHERE tenant_id = ? AND user_key = ?", key).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def _version(conn: sqlite3.Connection, key: tuple[str, str]) -> int:
    """The version of a (tenant, user) partition, 0 if nothing was ever written to it."""
    versions = _versions(conn, key)
    return 0 if versions is None else versions[0]


def _scope_key(f: Filters) -> tuple[str, str] | None:
    """The one (tenant, user) partition a query's memories are in, None for several."""
    if f.user_id is not None or f.exact_scope:
        return (f.tenant_id, f.user_id or "")
    return None


_RANK_SELECT = ("m.importance, a.relevance, a.decay_rate, m.pinned, m.created_at, "
                "a.last_accessed_at")


def _rank_of(columns: Sequence[Any]) -> RankRow:
    """A RankRow from the _RANK_SELECT columns of a row."""
    importance, relevance, decay, pinned, created, accessed = columns
    return (importance, relevance, decay, bool(pinned), created, accessed)


def _rank_row(rec: MemoryRecord) -> RankRow:
    return (rec.importance, rec.relevance, rec.decay_rate, rec.pinned,
            rec.created_at.timestamp(), _ts(rec.last_accessed_at))


class SQLiteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = self._connect()
        self._write_lock = threading.RLock()
        self._local = threading.local()
        self._readers: builtins.list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._cache: dict[tuple[str, str], Partition] = {}
        self._cache_lock = threading.Lock()
        self._kw_stats = TenantWordStats(self._count_tenant_rows, self._count_tenant_word)
        self._kw_terms = IndexTerms()
        # (tenant, user) -> its keyword postings, least recently searched first; and the
        # scopes searched once. Both under _cache_lock.
        self._kw_scopes: OrderedDict[tuple[str, str], ScopeKeywords] = OrderedDict()
        self._kw_seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._kw_building: set[tuple[str, str]] = set()
        # Users found larger than the whole postings budget: FTS5 answers for them, and
        # they are not built again on every search (a 50k-memory user's build takes seconds).
        self._kw_oversized: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._kw_builder = ThreadPoolExecutor(max_workers=1,
                                              thread_name_prefix="engram-kw-postings")
        self._kw_segments = 0  # write transactions that changed the keyword index since
        self._kw_upkeep: threading.Thread | None = None  # the last merge (under _write_lock)
        self._kw_wake = threading.Event()
        self.kw_merges = 0  # completed merges of the keyword index (for tests and stats)
        self.kw_in_memory = 0  # keyword searches answered from postings in memory (same)
        self.rank_in_memory = 0  # candidates whose rank fields a partition held (same)
        self.rows_in_memory = 0  # rows get_many found held (same)
        self.access_in_memory = 0  # access fields read from held rows (same)
        # (scope, memory id) of the rows held in partitions, least recently read first
        self._row_lru: OrderedDict[tuple[tuple[str, str], str], None] = OrderedDict()
        self._dim: int | None = None
        self._model: str | None = None
        self._closed = False

    # -- connections -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    def _conn(self) -> sqlite3.Connection:
        """The writer inside a write section of this thread, else this thread's reader."""
        if getattr(self._local, "depth", 0):
            return self._writer
        conn: sqlite3.Connection | None = getattr(self._local, "reader", None)
        if conn is None:
            if self._closed:
                raise StoreError("the store is closed")
            conn = self._connect()
            self._local.reader = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def close(self) -> None:
        self._closed = True
        self._kw_stats.close()
        self._kw_builder.shutdown(wait=True, cancel_futures=True)
        self._kw_terms.close()
        self._kw_wake.set()
        if self._kw_upkeep is not None:
            self._kw_upkeep.join()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._write_lock:
            self._writer.close()

    # -- schema ------------------------------------------------------------------------

    def migrate(self) -> None:
        with self._write_lock:
            conn = self._writer
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            applied = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
            for name, step in migrations.pending(applied):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    # a step may have been applied by another process meanwhile
                    if conn.execute(
                        "SELECT 1 FROM schema_migrations WHERE name = ?", (name,)
                    ).fetchone():
                        conn.execute("COMMIT")
                        continue
                    step(_InTransaction(conn))
                    conn.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?)",
                        (name, datetime.now(UTC).isoformat()),
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise

    def bind_embedding(self, model: str, dimension: int) -> None:
        with self.atomic("", None):
            conn = self._writer
            rows = dict(conn.execute(
                "SELECT key, value FROM meta WHERE key IN ('embedding_model', 'embedding_dim')"
            ).fetchall())
            if rows:
                if rows.get("embedding_model") != model or int(rows["embedding_dim"]) != dimension:
                    raise EmbeddingMismatch(
                        f"this database holds vectors of {rows.get('embedding_model')} "
                        f"({rows.get('embedding_dim')} dimensions); the configured embedder is "
                        f"{model} ({dimension}). Re-embed with `engram reembed` or use the "
                        "original model."
                    )
            else:
                conn.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("embedding_model", model), ("embedding_dim", str(dimension))],
                )
        self._model, self._dim = model, dimension

    def embedding_binding(self) -> tuple[str, int] | None:
        rows = dict(self._conn().execute(
            "SELECT key, value FROM meta WHERE key IN ('embedding_model', 'embedding_dim')"
        ).fetchall())
        if "embedding_model" not in rows:
            return None
        return rows["embedding_model"], int(rows["embedding_dim"])

    # -- read sections -----------------------------------------------------------------

    @contextmanager
    def reading(self, filters: Filters) -> Iterator[None]:
        """This thread's reads of the scope inside (nearest, similarities, rank_columns,
        get_many) take its versions as they were at entry, read once, instead of reading
        them for each call. A search enters before the model runs, where the read costs
        ~15 µs; after the model the first statement cost ~150 µs (docs/architecture.md,
        "A search's reads after the model"). A write of this process committed meanwhile
        moves the cached partition past the versions held: reads then go to the rows."""
        key = _scope_key(filters)
        local = self._local
        in_section = bool(getattr(local, "depth", 0))
        if key is None or in_section or getattr(local, "pinned", None) is not None:
            yield
            return
        local.pinned = (key, _versions(self._conn(), key))
        try:
            yield
        finally:
            local.pinned = None

    def _scope_versions(self, conn: sqlite3.Connection,
                        key: tuple[str, str]) -> tuple[int, int] | None:
        """The scope's versions as this thread's read section holds them, else read now."""
        pinned = getattr(self._local, "pinned", None)
        if pinned is not None and pinned[0] == key and not getattr(self._local, "depth", 0):
            held: tuple[int, int] | None = pinned[1]
            return held
        return _versions(conn, key)

    # -- write sections ----------------------------------------------------------------

    @contextmanager
    def atomic(self, tenant_id: str, *user_ids: str | None) -> Iterator[None]:
        # One writer per database file whatever the scopes: the write lock and BEGIN
        # IMMEDIATE cover them all.
        with self._write_lock:
            depth = getattr(self._local, "depth", 0)
            if depth:  # nested: part of the enclosing transaction
                self._local.depth = depth + 1
                try:
                    yield
                finally:
                    self._local.depth = depth
                return
            self._local.depth = 1
            self._local.touched = {}
            self._local.ops = []
            self._local.kw_ops = []
            self._local.kw_changed = False
            self._local.accessed = {}
            self._local.access_ops = []
            try:
                self._writer.execute("BEGIN IMMEDIATE")
                try:
                    yield
                    self._writer.execute("COMMIT")
                except BaseException:
                    self._writer.execute("ROLLBACK")
                    raise
                self._apply_cache_ops()
                if self._local.kw_changed:
                    self._kw_committed()
            finally:
                self._local.depth = 0
                self._local.touched = {}
                self._local.ops = []
                self._local.kw_ops = []
                self._local.kw_changed = False
                self._local.accessed = {}
                self._local.access_ops = []

    def _kw_committed(self) -> None:
        """A write transaction changed the keyword index (under _write_lock)."""
        self._kw_segments += 1
        if self._kw_segments < KW_MERGE_AFTER or self._closed:
            return
        if self._kw_upkeep is None:
            self._kw_upkeep = threading.Thread(target=self._kw_upkeep_loop,
                                               name="engram-fts-merge", daemon=True)
            self._kw_upkeep.start()
        self._kw_wake.set()

    def _kw_upkeep_loop(self) -> None:
        while True:
            self._kw_wake.wait()
            self._kw_wake.clear()
            if self._closed:
                return
            try:
                self.merge_keyword_index()
            except Exception:  # upkeep only: searches stay correct, just slower
                log.exception("merging the keyword index failed; retried later")

    def merge_keyword_index(self) -> int:
        """Merge the keyword index's segments into one; returns the merge steps taken.

        Each step is one short write transaction of at most KW_MERGE_PAGES pages of FTS5
        merge work ('merge' with a negative count first, which puts every segment on one
        level, then positive counts that carry the started merge on), until a step finds
        nothing left to do. Writers of this and other processes queue for one step at most.
        """
        steps = 0
        pages = -KW_MERGE_PAGES
        while not self._closed:
            with self._write_lock:
                self._kw_segments = 0
                conn = self._writer
                before = conn.total_changes
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(
                        "INSERT INTO memories_kw (memories_kw, rank) VALUES ('merge', ?)",
                        (pages,))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                steps += 1
                # FTS5: fewer than two changed rows means the step found nothing to merge
                if conn.total_changes - before < 2:
                    self.kw_merges += 1
                    return steps
            pages = KW_MERGE_PAGES
        return steps

    def _bump(self, tenant_id: str, user_key: str) -> None:
        touched: dict[tuple[str, str], int] = self._local.touched
        key = (tenant_id, user_key)
        if key in touched:
            return
        row = self._writer.execute(
            "INSERT INTO partitions (tenant_id, user_key, version) VALUES (?, ?, 1) "
            "ON CONFLICT (tenant_id, user_key) "
            "DO UPDATE SET version = version + 1 RETURNING version",
            key,
        ).fetchone()
        touched[key] = int(row[0])

    def _apply_cache_ops(self) -> None:
        touched: dict[tuple[str, str], int] = self._local.touched
        ops: builtins.list[tuple[Any, ...]] = self._local.ops
        kw_ops: builtins.list[tuple[Any, ...]] = self._local.kw_ops
        with self._cache_lock:
            for key, new_version in touched.items():
                part = self._cache.get(key)
                if part is not None and part.version != new_version - 1:
                    del self._cache[key]  # another writer got in between: reload lazily
                elif part is not None:
                    for op in ops:
                        if op[0] != key:
                            continue
                        if op[1] == "remove":
                            part.remove(op[2])
                            part.rows.pop(op[2], None)
                        else:
                            part.upsert(*op[2:])
                            part.rows.pop(op[3], None)
                    part.version = new_version
                scope = self._kw_scopes.get(key)
                if scope is not None and scope.version != new_version - 1:
                    del self._kw_scopes[key]
                elif scope is not None:
                    for op in kw_ops:
                        if op[0] != key:
                            continue
                        if op[1] is None:
                            scope.remove(op[2])
                        else:
                            rowid, mid, content, *attrs = op[2:]
                            scope.put(rowid, mid, self._kw_terms.of(words_of(content)), *attrs)
                    scope.version = new_version
            self._apply_access_ops(touched)

    def _apply_access_ops(self, touched: dict[tuple[str, str], int]) -> None:
        """Patch the cached partitions with this transaction's access flush (under
        _cache_lock). A partition at another access version is left as it is: a newer one
        needs nothing, an older one is reloaded by the next `rank_fields`."""
        accessed: dict[tuple[str, str], tuple[int, int]] = self._local.accessed
        for key, (before, after) in accessed.items():
            part = self._cache.get(key)
            if part is None:
                continue
            if key in touched:
                # rows written and accessed in one transaction: the order is not known
                # here, so the partition's access version stays behind and the next
                # rank_fields reads the rank fields again
                continue
            if part.access_version == before:
                for tenant_id, mid, relevance, decay, at, count, tier in self._local.access_ops:
                    if tenant_id == key[0]:
                        part.touch(mid, relevance, decay, at)
                        row = part.rows.get(mid)
                        if row is not None:
                            part.rows[mid] = _accessed(row, count, at, relevance, decay, tier)
                part.access_version = after

    def _queue_keywords(self, rowid: int, rec: MemoryRecord) -> None:
        """A row's keyword postings for the cache, once the transaction commits."""
        self._local.kw_ops.append((
            (rec.tenant_id, rec.user_id or ""), "put", rowid, rec.id, rec.content,
            rec.agent_id, rec.session_id, rec.namespace, rec.status is Status.ACTIVE,
            _ts(rec.expires_at),
        ))

    def _queue_partition(self, rowid: int, rec: MemoryRecord, vector: Vector | None) -> None:
        key = (rec.tenant_id, rec.user_id or "")
        self._bump(*key)
        self._local.ops.append((
            key, "upsert", rowid, rec.id, vector, rec.agent_id, rec.session_id, rec.namespace,
            rec.status is Status.ACTIVE, _ts(rec.expires_at), _rank_row(rec),
        ))

    @contextmanager
    def _write(self, rec_tenant: str, user_id: str | None) -> Iterator[sqlite3.Connection]:
        with self.atomic(rec_tenant, user_id):
            yield self._writer

    # -- writes ------------------------------------------------------------------------

    def _check_vector(self, vector: Vector) -> bytes:
        if self._dim is None:
            raise StoreError("bind_embedding() must be called before vectors are written")
        if vector.shape != (self._dim,):
            raise EmbeddingMismatch(
                f"vector has shape {vector.shape}; this store holds {self._dim}-d vectors"
            )
        return np.ascontiguousarray(vector, dtype=np.float32).tobytes()

    def insert(self, record: MemoryRecord, vector: Vector, event: HistoryEvent) -> None:
        blob = self._check_vector(vector)
        with self._write(record.tenant_id, record.user_id) as conn:
            try:
                rowid = _insert_row(conn, record)
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"could not insert memory {record.id}: {exc}") from exc
            conn.execute(
                "INSERT INTO memory_vectors VALUES (?, ?, ?)",
                (rowid, record.embedding_model or self._model, blob),
            )
            conn.execute(_KW_INSERT, (rowid, *_kw_values(
                record.tenant_id, record.user_id or "", record.content)))
            self._local.kw_changed = True
            self._insert_event(conn, event)
            self._queue_partition(rowid, record, vector)
            self._queue_keywords(rowid, record)

    def update(self, record: MemoryRecord, vector: Vector | None, event: HistoryEvent) -> None:
        blob = None if vector is None else self._check_vector(vector)
        with self._write(record.tenant_id, record.user_id) as conn:
            row = conn.execute(
                "SELECT rowid, user_key, content FROM memories WHERE tenant_id = ? AND id = ?",
                (record.tenant_id, record.id),
            ).fetchone()
            if row is None:
                raise StoreError(f"memory {record.id} vanished during update")
            rowid, old_user, old_content = int(row[0]), row[1], row[2]
            values = _row_values(record)
            try:
                conn.execute(_UPDATE, (*(values[i] for i in _ROW_AT[2:]), record.tenant_id,
                                       record.id))
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"could not update memory {record.id}: {exc}") from exc
            # the access fields, under the row's user (which may have changed)
            conn.execute(_ACCESS_DELETE, (record.tenant_id, old_user, rowid))
            conn.execute(_ACCESS_INSERT, _access_values(values, rowid))
            if blob is not None:
                conn.execute(
                    "UPDATE memory_vectors SET vector = ?, model = ? WHERE memory_rowid = ?",
                    (blob, record.embedding_model or self._model, rowid),
                )
            new_user = record.user_id or ""
            if old_content != record.content or old_user != new_user:
                conn.execute(_KW_DELETE, (rowid, *_kw_values(
                    record.tenant_id, old_user, old_content)))
                conn.execute(_KW_INSERT, (rowid, *_kw_values(
                    record.tenant_id, new_user, record.content)))
                self._local.kw_changed = True
            if old_user != new_user:  # the row leaves its former user's scope
                old_key = (record.tenant_id, old_user)
                self._bump(*old_key)
                self._local.ops.append((old_key, "remove", record.id))
                self._local.kw_ops.append((old_key, None, rowid))
            self._insert_event(conn, event)
            self._queue_partition(rowid, record, vector)
            self._queue_keywords(rowid, record)

    def delete(self, tenant_id: str, memory_id: str, event: HistoryEvent) -> bool:
        with self._write(tenant_id, None) as conn:
            row = conn.execute(
                "SELECT rowid, user_key, content FROM memories WHERE tenant_id = ? AND id = ?",
                (tenant_id, memory_id),
            ).fetchone()
            if row is None:
                return False
            rowid, user_key = int(row[0]), row[1]
            conn.execute(_KW_DELETE, (rowid, *_kw_values(tenant_id, user_key, row[2])))
            self._local.kw_changed = True
            conn.execute("DELETE FROM memory_vectors WHERE memory_rowid = ?", (rowid,))
            conn.execute("DELETE FROM memories WHERE rowid = ?", (rowid,))
            conn.execute(_ACCESS_DELETE, (tenant_id, user_key, rowid))
            conn.execute(
                "DELETE FROM relations WHERE tenant_id = ? AND (from_id = ? OR to_id = ?)",
                (tenant_id, memory_id, memory_id),
            )
            # earlier events may quote the content; a deleted memory leaves none behind
            conn.execute(
                "UPDATE history SET changes = '{\"redacted\": true}' "
                "WHERE tenant_id = ? AND memory_id = ?",
                (tenant_id, memory_id),
            )
            self._insert_event(conn, event)
            key = (tenant_id, user_key)
            self._bump(*key)
            self._local.ops.append((key, "remove", memory_id))
            self._local.kw_ops.append((key, None, rowid))
            return True

    def insert_raw(self, memories: Sequence[StoredMemory],
                   events: Sequence[HistoryEvent]) -> None:
        with self.atomic("", None):
            conn = self._writer
            for m in memories:
                rec = m.record
                blob = None if m.vector is None else self._check_vector(m.vector)
                try:
                    rowid = _insert_row(conn, rec)
                except sqlite3.IntegrityError as exc:
                    raise StoreError(f"could not insert memory {rec.id}: {exc}") from exc
                conn.execute(_KW_INSERT, (rowid, *_kw_values(
                    rec.tenant_id, rec.user_id or "", rec.content)))
                self._local.kw_changed = True
                self._queue_keywords(rowid, rec)
                if blob is None:
                    self._bump(rec.tenant_id, rec.user_id or "")
                    continue
                conn.execute(
                    "INSERT INTO memory_vectors VALUES (?, ?, ?)",
                    (rowid, rec.embedding_model or self._model, blob),
                )
                self._queue_partition(rowid, rec, m.vector)
            for event in events:
                self._insert_event(conn, event)

    def _insert_event(self, conn: sqlite3.Connection, event: HistoryEvent) -> None:
        conn.execute(
            "INSERT INTO history (tenant_id, id, memory_id, event, at, actor, changes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event.tenant_id, event.id, event.memory_id, event.event, event.at.timestamp(),
             event.actor, json.dumps(event.changes, ensure_ascii=False, default=str)),
        )

    # -- reads -------------------------------------------------------------------------

    def get(self, tenant_id: str, memory_id: str) -> MemoryRecord | None:
        row = self._conn().execute(
            _SELECT + " WHERE m.tenant_id = ? AND m.id = ?", (tenant_id, memory_id)
        ).fetchone()
        return None if row is None else _record(row)

    def _rows_by_id(self, select: str, tenant_id: str,
                    memory_ids: Sequence[str]) -> Iterator[Any]:
        """Rows of `select` (ending in a FROM clause on `memories m`) for the given ids of
        a tenant, each id once, 500 ids to a query."""
        conn = self._conn()
        ids = list(dict.fromkeys(memory_ids))
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" for _ in chunk)
            yield from conn.execute(f"{select} WHERE m.tenant_id = ? AND m.id IN ({marks})",
                                    (tenant_id, *chunk))

    def _current(self, tenant_id: str, scope: Filters | None
                 ) -> tuple[tuple[str, str], Partition, tuple[int, int]] | None:
        """The cached partition a search's reads may answer from: the one partition of
        `scope`, in this tenant, outside a write section, at the database's versions (its
        rank fields read again first when only another process's access flush is newer).
        With the key and the versions the partition held when checked; else None."""
        key = None if scope is None else _scope_key(scope)
        in_section = bool(getattr(self._local, "depth", 0))
        if key is None or key[0] != tenant_id or in_section:
            return None
        conn = self._conn()
        versions = self._scope_versions(conn, key)
        if versions is None:
            return None
        for attempt in range(2):
            with self._cache_lock:
                part = self._cache.get(key)
                if part is None or part.version != versions[0]:
                    return None
                if part.access_version >= versions[1]:
                    return key, part, (part.version, part.access_version)
            if attempt == 0:
                self._reload_rank(conn, key)
        return None

    def get_many(self, tenant_id: str, memory_ids: Sequence[str],
                 scope: Filters | None = None) -> dict[str, MemoryRecord]:
        """Rows of the scope's current partition (`_current`) held there are not read
        again; rows read are held there if it is still at the versions seen before."""
        rows: dict[str, tuple[Any, ...]] = {}
        current = self._current(tenant_id, scope)
        if current is not None:
            key, part, _ = current
            with self._cache_lock:
                for mid in memory_ids:
                    row = part.rows.get(mid)
                    if row is not None:
                        rows[mid] = row
                        self._row_lru.move_to_end((key, mid))
            self.rows_in_memory += len(rows)
        missing = [mid for mid in memory_ids if mid not in rows]
        if missing:
            read: builtins.list[tuple[Any, ...]] = []
            if current is not None and self._claim_fill(current[1]):
                read = self._conn().execute(
                    f"{_SELECT} WHERE m.tenant_id = ? AND m.user_key = ? "
                    "AND m.status = 'active'", current[0]).fetchall()
                found = {row[_ID] for row in read}
                missing = [mid for mid in missing if mid not in found]
            if missing:
                read.extend(self._rows_by_id(_SELECT, tenant_id, missing))
            wanted = set(memory_ids)
            for row in read:
                if row[_ID] in wanted:
                    rows[row[_ID]] = row
            if current is not None:
                self._hold_rows(*current, read)
        return {mid: _record(row) for mid, row in rows.items()}

    def _claim_fill(self, part: Partition) -> bool:
        """Whether this caller reads all of the partition's active rows now (ROW_FILL_ROWS):
        true once a partition, for the first caller that misses rows of it."""
        with self._cache_lock:
            if part.rows_filled or part.n_active > ROW_FILL_ROWS:
                return False
            part.rows_filled = True
            return True

    def _hold_rows(self, key: tuple[str, str], part: Partition, versions: tuple[int, int],
                   read: builtins.list[tuple[Any, ...]]) -> None:
        """Hold rows read after the partition was seen at `versions`, if it is still at
        exactly those versions (a change applied meanwhile may be older than the rows'
        read, and would then leave them stale)."""
        with self._cache_lock:
            if (self._cache.get(key) is not part or part.version != versions[0]
                    or part.access_version != versions[1]):
                return
            lru = self._row_lru
            for row in read:
                mid = row[_ID]
                if mid in part.pos:
                    part.rows[mid] = row
                    lru[(key, mid)] = None
                    lru.move_to_end((key, mid))
            while len(lru) > ROW_CACHE_ROWS:
                (old_key, old_mid), _ = lru.popitem(last=False)
                old = self._cache.get(old_key)
                if old is not None:
                    old.rows.pop(old_mid, None)

    def rank_fields(self, tenant_id: str, memory_ids: Sequence[str],
                    scope: Filters | None = None) -> dict[str, RankFields]:
        cols = self.rank_columns(tenant_id, memory_ids, scope)
        return {mid: rank for i, mid in enumerate(memory_ids)
                if (rank := cols.fields(i)) is not None}

    def rank_columns(self, tenant_id: str, memory_ids: Sequence[str],
                     scope: Filters | None = None) -> RankColumns:
        """From the scope's current partition (`_current`): ~0.1 ms for a search's ~80
        candidates after the model, where reading their rows took ~1 ms. Those it does not
        hold from the rows."""
        current = self._current(tenant_id, scope)
        if current is None:
            return RankColumns.of(memory_ids, self._rank_rows(tenant_id, memory_ids))
        with self._cache_lock:
            cols = current[1].rank_columns(memory_ids)
        held = int(np.count_nonzero(cols.found))
        self.rank_in_memory += held
        if held == len(memory_ids):
            return cols
        fields = {mid: rank for i, mid in enumerate(memory_ids)
                  if (rank := cols.fields(i)) is not None}
        fields.update(self._rank_rows(
            tenant_id, [mid for mid, ok in zip(memory_ids, cols.found, strict=True) if not ok]))
        return RankColumns.of(memory_ids, fields)

    def _rank_rows(self, tenant_id: str, memory_ids: Sequence[str]) -> dict[str, RankFields]:
        """Rank fields read from the rows."""
        return {mid: RankFields(*_rank_of(rank), session)
                for mid, *rank, session in self._rows_by_id(
                    f"SELECT m.id, {_RANK_SELECT}, m.session_id FROM {_MEMORIES}",
                    tenant_id, memory_ids)}

    def access_fields(self, tenant_id: str,
                      memory_ids: Sequence[str]) -> dict[str, AccessFields]:
        """From the rows held by partitions at the database's versions (the hits of
        searches, as a rule: a flush reads what searches returned), the others read. An
        access flush of ~650 rows spent 28-49 ms reading them, beside the searches."""
        out = {mid: _access_of(row[_AT_TYPE], row[_AT_TIER], row[_AT_COUNT],
                               row[_AT_SESSION], [row[i] for i in _AT_RANK])
               for mid, row in self._held_rows(tenant_id, memory_ids).items()}
        self.access_in_memory += len(out)
        rest = [mid for mid in memory_ids if mid not in out]
        if rest:
            out.update({mid: _access_of(mtype, tier, count, session, rank)
                        for mid, mtype, tier, count, session, *rank in self._rows_by_id(
                            "SELECT m.id, m.memory_type, a.tier, a.access_count, "
                            f"m.session_id, {_RANK_SELECT} FROM {_MEMORIES}",
                            tenant_id, rest)})
        return out

    def _held_rows(self, tenant_id: str, memory_ids: Sequence[str]
                   ) -> dict[str, tuple[Any, ...]]:
        """The rows of the given memories that partitions of the tenant hold, from those
        at the database's versions now (outside a write section)."""
        if getattr(self._local, "depth", 0):
            return {}
        wanted = set(memory_ids)
        with self._cache_lock:
            holding = [(key, part, part.version, part.access_version)
                       for key, part in self._cache.items()
                       if key[0] == tenant_id and part.rows
                       and not part.rows.keys().isdisjoint(wanted)]
        if not holding:
            return {}
        conn = self._conn()
        current = [(key, part, seen) for key, part, *seen in holding
                   if _versions(conn, key) == tuple(seen)]
        rows: dict[str, tuple[Any, ...]] = {}
        with self._cache_lock:
            for key, part, (version, access_version) in current:
                # not changed since: a write or flush applied meanwhile moves the versions
                if (self._cache.get(key) is part and part.version == version
                        and part.access_version == access_version):
                    held = part.rows
                    rows.update((mid, held[mid]) for mid in wanted.intersection(held))
        return rows

    def _reload_rank(self, conn: sqlite3.Connection, key: tuple[str, str]) -> None:
        """Read the rank fields of a scope's rows from one snapshot into its cached
        partition, if that holds the snapshot's version and older rank fields."""
        conn.execute("BEGIN")
        try:
            versions = _versions(conn, key)
            rows = conn.execute(
                f"SELECT m.id, {_RANK_SELECT} FROM {_MEMORIES} "
                "WHERE m.tenant_id = ? AND m.user_key = ?", key).fetchall()
        finally:
            conn.execute("COMMIT")
        if versions is None:
            return
        with self._cache_lock:
            part = self._cache.get(key)
            if (part is None or part.version != versions[0]
                    or part.access_version >= versions[1]):
                return
            for mid, *rank in rows:
                part.set_rank(mid, _rank_of(rank))
            part.rows.clear()  # read before this access flush
            part.access_version = versions[1]

    def get_vector(self, tenant_id: str, memory_id: str) -> Vector | None:
        row = self._conn().execute(
            "SELECT v.vector FROM memories m JOIN memory_vectors v ON v.memory_rowid = m.rowid "
            "WHERE m.tenant_id = ? AND m.id = ?",
            (tenant_id, memory_id),
        ).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype=np.float32).copy()

    def find_by_hash(self, tenant_id: str, user_id: str | None, agent_id: str | None,
                     namespace: str, integrity_hash: str) -> MemoryRecord | None:
        row = self._conn().execute(
            _SELECT + " WHERE m.tenant_id = ? AND m.user_key = ? AND m.agent_key = ? "
            "AND m.namespace = ? AND m.integrity_hash = ? AND m.status = 'active'",
            (tenant_id, user_id or "", agent_id or "", namespace, integrity_hash),
        ).fetchone()
        return None if row is None else _record(row)

    def _where(self, f: Filters) -> tuple[str, builtins.list[Any]]:
        return where(f, _SQLITE)

    def list(
        self, filters: Filters, limit: int, offset: int
    ) -> tuple[builtins.list[MemoryRecord], int]:
        where, params = self._where(filters)
        conn = self._conn()
        total = int(conn.execute(
            f"SELECT COUNT(*) FROM {_from(where)} WHERE {where}", params
        ).fetchone()[0])
        rows = conn.execute(
            f"{_SELECT} WHERE {where} ORDER BY m.created_at DESC, m.rowid DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        ).fetchall()
        return [_record(r) for r in rows], total

    def keyword_search(
        self, filters: Filters, query: str, k: int
    ) -> builtins.list[tuple[str, float]]:
        """BM25 over the scope's postings, with idf from the whole tenant.

        One FTS5 query per word reads only the scope's postings (column u for a user, t for
        the whole tenant). FTS5's bm25() of a one-word query is idf_fts × tf-part, where
        idf_fts counts the word's rows in the scope against the whole table; dividing it out
        leaves the tf-part (term frequency, length normalisation: k1 = 1.2, b = 0.75), which
        is weighted by the word's idf over the tenant (storage/keyword_stats.py). Per-scope
        idf ranked worse on LongMemEval (docs/architecture.md).

        A user searched before is scored from postings held in memory instead
        (storage/keyword_index.py): the same formula on the same terms, without FTS5.
        """
        words = keyword_terms(query)
        if not words or k <= 0:
            return []
        user_scope = filters.user_id is not None or filters.exact_scope
        if user_scope:
            column, weights = "u", "0.0, 1.0"
            prefix = _kw_prefix(filters.tenant_id, filters.user_id or "")
        else:
            column, weights, prefix = "t", "1.0, 0.0", _kw_prefix(filters.tenant_id)
        conn = self._conn()
        # one snapshot: the postings, or bm25()'s counts, and the table's figures agree
        own = not conn.in_transaction
        if own:
            conn.execute("BEGIN")
        large: tuple[str, str] | None = None
        try:
            idfs = self._kw_stats.idf(filters.tenant_id, words)
            top = None if filters.needs_row_filter() else k
            held = (self._keyword_in_memory(conn, filters, words, idfs, top) if user_scope
                    else None)
            if held is not None and top is not None:
                return [(mid, score) for _, score, mid in held]
            if held is not None:
                scores = {rowid: score for rowid, score, _ in held}
            else:
                scores = self._keyword_fts5(conn, words, idfs, column, weights, prefix)
                key = _scope_key(filters)
                if key is not None and len(scores) >= KW_BUILD_AT_MATCHES:
                    large = key
            return self._keyword_top(conn, filters, scores, k)
        finally:
            if own:
                conn.execute("COMMIT")
            if large is not None:  # a large user's first search: build its postings
                # here, or in the background when called inside a caller's transaction
                (self._kw_build_here if own else self._kw_request)(large)

    def _kw_build_here(self, key: tuple[str, str]) -> None:
        """Build a user's postings on this thread, unless they are held already or
        `_kw_claim` refuses (after the search's own snapshot: the build reads its own)."""
        with self._cache_lock:
            if key in self._kw_scopes or not self._kw_claim(key):
                return
        self._kw_build(key)

    def _kw_claim(self, key: tuple[str, str]) -> bool:
        """Mark a user's postings as being built, unless they are being built, were found
        too large for the budget (such a user stays with FTS5 in this process) or the
        store is closing (under _cache_lock)."""
        if key in self._kw_building or key in self._kw_oversized or self._closed:
            return False
        self._kw_building.add(key)
        return True

    def _keyword_fts5(self, conn: sqlite3.Connection, words: builtins.list[str],
                      idfs: dict[str, float | None], column: str, weights: str,
                      prefix: str) -> dict[int, float]:
        table_rows = _kw_averages(conn)[0]
        # Each word's rows in the scope, rescaled from FTS5's idf to the tenant's and summed
        # per row here: a user's few hundred postings add up in Python in a fraction of
        # what the same sum, grouped and joined in one SQL statement, cost (4.9 -> 3.0 ms
        # for a 1,800-memory user, docs/architecture.md).
        scores: dict[int, float] = {}
        for word in words:
            try:
                rows = conn.execute(
                    f"SELECT rowid, -bm25(memories_kw, {weights}) FROM memories_kw "
                    "WHERE memories_kw MATCH ?", (f'{column} : "{prefix}{word}"',),
                ).fetchall()
            except sqlite3.OperationalError as exc:  # should not happen: words are quoted
                raise StoreError(f"full-text query failed: {exc}") from exc
            if not rows:
                continue
            scale = 1.0  # a word whose tenant count is not known yet keeps FTS5's idf
            if (idf := idfs[word]) is not None:
                n = len(rows)  # FTS5's idf of the word: its rows here against the table's
                scale = idf / max(1e-6, math.log(max(1e-9, (table_rows - n + 0.5) / (n + 0.5))))
            for rowid, x in rows:
                scores[rowid] = scores.get(rowid, 0.0) + x * scale
        return scores

    def _keyword_in_memory(self, conn: sqlite3.Connection, filters: Filters,
                           words: builtins.list[str], idfs: dict[str, float | None],
                           k: int | None = None
                           ) -> builtins.list[tuple[int, float, str]] | None:
        """(rowid, score, memory id) of the user's rows that match and pass the filters a
        partition holds, best first, from the postings held in memory (with `k`, only the k
        best); or None where FTS5 must answer: the user is searched for the first time (or
        not cached), a write section of this thread has changed the user, or the tokenizer
        splits a query word."""
        key = (filters.tenant_id, filters.user_id or "")
        if key in getattr(self._local, "touched", {}):
            return None
        terms = self._kw_terms.of(words)
        if any(t.term is None or t.tokens != 1 for t in terms):
            return None  # FTS5 reads such a word as a phrase of several tokens
        scope = self._kw_scope(conn, key)
        if scope is None:
            return None
        table_rows, tokens = _kw_averages(conn)
        avgdl = tokens / table_rows if table_rows else 1.0
        held = _partition_filters(filters)
        self.kw_in_memory += 1
        with self._cache_lock:
            return scope.ranked([t.term or "" for t in terms], [idfs[w] for w in words],
                                table_rows, avgdl, held, k)

    def _kw_scope(self, conn: sqlite3.Connection, key: tuple[str, str]) -> ScopeKeywords | None:
        """The user's postings held at the version `conn` sees, or None. A user searched
        for the second time (or whose postings went stale) has them built in the
        background meanwhile: ~5 ms for 80 memories, ~0.2 s for 2,900, which no search waits
        for."""
        version = _version(conn, key)
        with self._cache_lock:
            scope = self._kw_scopes.get(key)
            if scope is not None and scope.version == version:
                self._kw_scopes.move_to_end(key)
                return scope
            if scope is None and key not in self._kw_seen:
                self._kw_seen[key] = None
                if len(self._kw_seen) > KW_SEEN_SCOPES:
                    self._kw_seen.popitem(last=False)
                return None
        self._kw_request(key)
        return None

    def _kw_request(self, key: tuple[str, str]) -> None:
        """Have the user's postings built in the background, unless `_kw_claim` refuses."""
        with self._cache_lock:
            if not self._kw_claim(key):
                return
        try:
            self._kw_builder.submit(self._kw_build, key)
        except RuntimeError:  # closing
            with self._cache_lock:
                self._kw_building.discard(key)

    def _kw_build(self, key: tuple[str, str]) -> None:
        """Build a user's postings from one snapshot of its rows and hold them (on the
        builder thread, or on a large user's first search: the thread's reader connection,
        outside any transaction)."""
        try:
            if self._closed:
                return
            conn = self._conn()
            conn.execute("BEGIN")
            try:
                version = _version(conn, key)
                rows = conn.execute(
                    "SELECT rowid, id, content, agent_id, session_id, namespace, status, "
                    "expires_at FROM memories WHERE tenant_id = ? AND user_key = ?", key,
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            scope = ScopeKeywords(version)
            terms = self._kw_terms
            for rowid, mid, content, agent, session, ns, status, expires in rows:
                scope.put(rowid, mid, terms.of(words_of(content)), agent, session, ns,
                          status == "active", expires)
            if scope.size > KW_CACHE_POSTINGS:  # larger than the whole budget
                with self._cache_lock:
                    self._kw_oversized[key] = None
                    if len(self._kw_oversized) > KW_SEEN_SCOPES:
                        self._kw_oversized.popitem(last=False)
                return
            with self._cache_lock:
                cached = self._kw_scopes.get(key)
                if cached is None or cached.version < version:
                    self._kw_scopes[key] = scope
                    self._kw_scopes.move_to_end(key)
                    held = sum(s.size for s in self._kw_scopes.values())
                    while held > KW_CACHE_POSTINGS:
                        _, dropped = self._kw_scopes.popitem(last=False)
                        held -= dropped.size
        except Exception:  # a cache only: searches go on through FTS5
            log.exception("building the keyword postings of a user failed")
        finally:
            with self._cache_lock:
                self._kw_building.discard(key)

    def settle_keyword_postings(self) -> None:
        """Wait until the postings being built in the background are held (tests, benches)."""
        with contextlib.suppress(RuntimeError):  # closed: nothing is being built
            self._kw_builder.submit(lambda: None).result()

    def _keyword_top(self, conn: sqlite3.Connection, filters: Filters,
                     scores: dict[int, float], k: int) -> builtins.list[tuple[str, float]]:
        """The k best of the scored rows that pass the filters (read from the rows)."""
        if not scores:
            return []
        ranked = sorted(scores, key=lambda r: (-scores[r], r))
        out: builtins.list[tuple[str, float]] = []
        where, params = self._where(filters)
        step = min(500, max(2 * k, 64))
        for i in range(0, len(ranked), step):
            chunk = ranked[i : i + step]
            marks = ",".join("?" for _ in chunk)
            # NOT INDEXED: by rowid, not through the user's index (0.8 -> 0.4 ms a chunk)
            passed = dict(conn.execute(
                f"SELECT m.rowid, m.id FROM {_from(where, 'NOT INDEXED')} "
                f"WHERE m.rowid IN ({marks}) AND {where}", (*chunk, *params)))
            out.extend((passed[r], scores[r]) for r in chunk if r in passed)
            if len(out) >= k:
                break
        return out[:k]

    def _count_tenant_rows(self, tenant_id: str) -> int:
        return int(self._conn().execute(
            "SELECT count(*) FROM memories WHERE tenant_id = ?", (tenant_id,)).fetchone()[0])

    def _count_tenant_word(self, tenant_id: str, word: str) -> int:
        return int(self._conn().execute(
            "SELECT count(*) FROM memories_kw WHERE memories_kw MATCH ?",
            (f't : "{_kw_prefix(tenant_id)}{word}"',)).fetchone()[0])

    # -- vectors -----------------------------------------------------------------------

    def _partition(self, conn: sqlite3.Connection, tenant_id: str, user_key: str,
                   versions: tuple[int, int]) -> Partition:
        """The shared cached partition at `versions[0]` (or newer), (re)loaded from the
        database if needed (its rank fields may be older: `rank_fields` checks the access
        version)."""
        key = (tenant_id, user_key)
        with self._cache_lock:
            part = self._cache.get(key)
            # newer: this process wrote since a read section took its versions
            if part is not None and part.version >= versions[0]:
                return part
        part = self._load_partition(conn, key, versions)
        with self._cache_lock:
            self._cache[key] = part
        return part

    def _load_partition(self, conn: sqlite3.Connection, key: tuple[str, str],
                        versions: tuple[int, int]) -> Partition:
        """The scope's rows as a partition labelled with `versions` (read before: the rows
        are as new or newer, and a newer database version makes the next read reload)."""
        assert self._dim is not None
        rows = conn.execute(
            "SELECT m.rowid, m.id, v.vector, m.agent_id, m.session_id, m.namespace, m.status, "
            f"m.expires_at, {_RANK_SELECT} FROM {_MEMORIES} "
            "JOIN memory_vectors v ON v.memory_rowid = m.rowid "
            "WHERE m.tenant_id = ? AND m.user_key = ?",
            key,
        ).fetchall()
        part = Partition(self._dim, capacity=len(rows) * 5 // 4 + 16, version=versions[0],
                         access_version=versions[1])
        for rowid, mid, blob, agent, session, ns, status, exp, *rank in rows:
            part.upsert(rowid, mid, np.frombuffer(blob, dtype=np.float32), agent, session, ns,
                        status == "active", exp, _rank_of(rank))
        return part

    def _section_views(self, conn: sqlite3.Connection, key: tuple[str, str],
                       versions: tuple[int, int]
                       ) -> builtins.list[tuple[Partition, frozenset[str]]]:
        """What a read inside a write section sees of a scope the section has changed: the
        committed partition minus the memories changed here, plus a small overlay of this
        section's uncommitted writes. Nothing uncommitted enters the shared cache (a rollback
        would leave it there)."""
        before = self._local.touched[key] - 1
        with self._cache_lock:
            base = self._cache.get(key)
        if base is None or base.version != before:
            # another writer got in between (or nothing was cached): read this section's
            # view straight from the database, for this read only
            return [(self._load_partition(conn, key, versions), frozenset())]
        assert self._dim is not None
        latest: dict[str, tuple[Any, ...] | None] = {}
        for op in self._local.ops:
            if op[0] != key:
                continue
            if op[1] == "remove":
                latest[op[2]] = None
            else:
                latest[op[3]] = op[2:]
        overlay = Partition(self._dim, capacity=len(latest) + 1, version=versions[0])
        with self._cache_lock:
            for mid, args in latest.items():
                if args is None:
                    continue
                rowid, _, vector, *rest = args
                if vector is None:  # a row-only update: the vector is the committed one
                    i = base.pos.get(mid)
                    if i is None:
                        continue
                    vector = base.mat[i].copy()
                overlay.upsert(rowid, mid, vector, *rest)
        return [(base, frozenset(latest)), (overlay, frozenset())]

    def _partitions(
        self, conn: sqlite3.Connection, filters: Filters
    ) -> builtins.list[tuple[Partition, frozenset[str]]]:
        """The partitions a query must search, each with the ids to leave out of it."""
        if self._dim is None:
            raise StoreError("bind_embedding() must be called before searching")
        one = _scope_key(filters)
        if one is not None:
            found = self._scope_versions(conn, one)
            scopes = [] if found is None else [(one[1], found)]
        else:
            scopes = [(r[0], (int(r[1]), int(r[2]))) for r in conn.execute(
                "SELECT user_key, version, access_version FROM partitions WHERE tenant_id = ?",
                (filters.tenant_id,),
            )]
        touched = getattr(self._local, "touched", {})
        views: builtins.list[tuple[Partition, frozenset[str]]] = []
        for user_key, versions in scopes:
            key = (filters.tenant_id, user_key)
            if key in touched:
                views.extend(self._section_views(conn, key, versions))
            else:
                views.append((self._partition(conn, *key, versions), frozenset()))
        return views

    def nearest(self, filters: Filters, vector: Vector, k: int,
                include: Collection[str] = (), ordered: bool = True
                ) -> builtins.list[tuple[str, float]]:
        conn = self._conn()
        parts = self._partitions(conn, filters)
        if not parts:
            return []
        allowed: set[int] | None = None
        if filters.needs_row_filter():
            where, params = self._where(filters)
            allowed = {r[0] for r in conn.execute(
                f"SELECT m.rowid FROM {_from(where)} WHERE {where}", params
            )}
            if not allowed:
                return []
        query = np.ascontiguousarray(vector, dtype=np.float32)
        held = _partition_filters(filters)
        hits: builtins.list[tuple[str, float]] = []
        extra: builtins.list[tuple[str, float]] = []
        for part, exclude in parts:
            with self._cache_lock:
                top, more = part.search_with(query, k, held, allowed=allowed,
                                             exclude=exclude, include=include,
                                             ordered=ordered or len(parts) > 1)
            hits.extend(top)
            extra.extend(more)
        if len(parts) > 1:
            hits.sort(key=lambda h: -h[1])
            # included memories in a partition's top k but not in the whole top k
            extra.extend(h for h in hits[k:] if h[0] in include)
        return hits[:k] + extra

    def candidates(self, filters: Filters, vectors: Sequence[Vector], wanted: Sequence[int],
                   include: Collection[str]) -> Candidates:
        """In one pass over the scope's current partition (`_current`, `Partition.
        candidates`) when it can answer: one user, no filter that needs the rows, the
        included ids among its rows; else composed from nearest, similarities and
        rank_columns."""
        if not filters.needs_row_filter():
            current = self._current(filters.tenant_id, filters)
            if current is not None:
                queries = [np.ascontiguousarray(v, dtype=np.float32) for v in vectors]
                held = _partition_filters(filters)
                with self._cache_lock:
                    got = current[1].candidates(queries, wanted, held, include)
                if got is not None:
                    self.rank_in_memory += len(got.ids)
                    return got
        return compose_candidates(self, filters, vectors, wanted, include)

    def similarities(self, filters: Filters, vector: Vector,
                     memory_ids: Sequence[str]) -> dict[str, float]:
        conn = self._conn()
        query = np.ascontiguousarray(vector, dtype=np.float32)
        out: dict[str, float] = {}
        parts = self._partitions(conn, filters)
        wanted: Sequence[str] = builtins.list(dict.fromkeys(memory_ids))
        if filters.needs_row_filter():
            # filters the partitions do not hold: ask the rows which memories pass
            where, params = self._where(filters)
            visible: builtins.list[str] = []
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                marks = ",".join("?" for _ in chunk)
                visible.extend(r[0] for r in conn.execute(
                    # by id: left alone, the planner scans the user's rows through the hash
                    # index (4.2 ms for a 1,800-memory user instead of 0.12 ms)
                    f"SELECT m.id FROM {_from(where, 'INDEXED BY ux_memories_tenant_id')} "
                    f"WHERE {where} AND m.id IN ({marks})",
                    (*params, *chunk),
                ))
            wanted = visible
        # expiry, status, agent, session, namespace: checked on the partitions, as nearest
        held = _partition_filters(filters)
        for part, exclude in parts:
            with self._cache_lock:
                out.update(part.similarities(
                    query, [m for m in wanted if m not in exclude], held))
        return out

    # -- history, export, stats --------------------------------------------------------

    def history(self, tenant_id: str, memory_id: str) -> builtins.list[HistoryEvent]:
        rows = self._conn().execute(
            "SELECT id, memory_id, tenant_id, event, at, actor, changes FROM history "
            "WHERE tenant_id = ? AND memory_id = ? ORDER BY seq",
            (tenant_id, memory_id),
        ).fetchall()
        return [
            HistoryEvent(id=r[0], memory_id=r[1], tenant_id=r[2], event=r[3],
                         at=datetime.fromtimestamp(r[4], tz=UTC), actor=r[5],
                         changes=json.loads(r[6]))
            for r in rows
        ]

    def iter_all(self, tenant_id: str | None = None) -> Iterator[StoredMemory]:
        conn = self._connect()  # its own connection: a long export must not hold a reader
        try:
            select, joined = _SELECT.split(" FROM ", 1)
            sql = (f"{select}, v.vector FROM {joined} "
                   "LEFT JOIN memory_vectors v ON v.memory_rowid = m.rowid")
            params: tuple[Any, ...] = ()
            if tenant_id is not None:
                sql += " WHERE m.tenant_id = ?"
                params = (tenant_id,)
            for row in conn.execute(sql + " ORDER BY m.rowid", params):
                blob = row[-1]
                vec = None if blob is None else np.frombuffer(blob, dtype=np.float32).copy()
                yield StoredMemory(_record(row[:-1]), vec)
        finally:
            conn.close()

    def iter_history(self, tenant_id: str | None = None) -> Iterator[HistoryEvent]:
        conn = self._connect()  # its own connection, as iter_all
        try:
            sql = "SELECT id, memory_id, tenant_id, event, at, actor, changes FROM history"
            params: tuple[Any, ...] = ()
            if tenant_id is not None:
                sql += " WHERE tenant_id = ?"
                params = (tenant_id,)
            for r in conn.execute(sql + " ORDER BY seq", params):
                yield HistoryEvent(id=r[0], memory_id=r[1], tenant_id=r[2], event=r[3],
                                   at=datetime.fromtimestamp(r[4], tz=UTC), actor=r[5],
                                   changes=json.loads(r[6]))
        finally:
            conn.close()

    def stats(self) -> dict[str, Any]:
        conn = self._conn()
        counts = dict(conn.execute(
            "SELECT status, COUNT(*) FROM memories GROUP BY status"
        ).fetchall())
        events = conn.execute("SELECT COUNT(*) FROM history").fetchone()[0]
        page_count = conn.execute("PRAGMA page_count").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        with self._cache_lock:
            cached = sum(p.n for p in self._cache.values())
        return {
            "backend": "sqlite",
            "path": str(self.path),
            "memories": sum(counts.values()),
            "by_status": counts,
            "history_events": int(events),
            "database_bytes": int(page_count) * int(page_size),
            "cached_vectors": cached,
            "embedding_model": self._model,
            "embedding_dim": self._dim,
        }

    def count_active(self, tenant_id: str, now: datetime) -> int:
        row = self._conn().execute(
            "SELECT COUNT(*) FROM memories WHERE tenant_id = ? AND status = 'active' "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (tenant_id, now.timestamp()),
        ).fetchone()
        return int(row[0])

    # -- lifecycle ---------------------------------------------------------------------

    def apply_access(self, tenant_id: str, updates: Sequence[AccessUpdate],
                     events: Sequence[HistoryEvent] = ()) -> None:
        if not updates and not events:
            return
        with self._write_lock:
            if not getattr(self._local, "depth", 0):
                # The WAL's checkpoint runs here, before the flush, not inside its COMMIT
                # (SQLite checkpoints in the COMMIT that takes the WAL past 1,000 pages):
                # a search that reads the versions between that COMMIT and the patch of
                # this process's partitions reads the user's rank fields again (15-23 ms
                # for 2,900 rows), and a checkpoint there kept the window open 20-260 ms.
                with contextlib.suppress(sqlite3.OperationalError):  # then in the COMMIT
                    self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._apply_access(tenant_id, updates, events)

    def _apply_access(self, tenant_id: str, updates: Sequence[AccessUpdate],
                      events: Sequence[HistoryEvent]) -> None:
        with self.atomic(tenant_id, None):
            conn = self._writer
            # Where each memory's access fields are (its user and rowid: the key of
            # memory_access). Not SELECT DISTINCT user_key: that makes SQLite walk the
            # tenant's whole user index instead of looking each id up, ~300 ms at 100k.
            keys = {mid: (user_key, rowid) for mid, user_key, rowid in self._rows_by_id(
                "SELECT m.id, m.user_key, m.rowid FROM memories m", tenant_id,
                [u.id for u in updates])}  # the writer: inside the section
            conn.executemany(
                "UPDATE memory_access SET access_count = access_count + ?, "
                "last_accessed_at = max(coalesce(last_accessed_at, 0), ?), relevance = ?, "
                "decay_rate = ?, tier = ? "
                "WHERE tenant_id = ? AND user_key = ? AND memory_rowid = ?",
                [(u.count, u.last_accessed_at.timestamp(), u.relevance, u.decay_rate,
                  u.tier.value, tenant_id, *key) for u in updates
                 if (key := keys.get(u.id)) is not None],
            )
            # Rank fields changed: bump the access versions of the users concerned, and
            # patch this process's partitions once the transaction commits.
            user_keys = {user_key for user_key, _ in keys.values()}
            accessed: dict[tuple[str, str], tuple[int, int]] = self._local.accessed
            for user_key in sorted(user_keys):
                key = (tenant_id, user_key)
                bumped = conn.execute(
                    "UPDATE partitions SET access_version = access_version + 1 "
                    "WHERE tenant_id = ? AND user_key = ? RETURNING access_version", key,
                ).fetchone()
                if bumped is not None:
                    now = int(bumped[0])
                    accessed[key] = (accessed.get(key, (now - 1, now))[0], now)
            self._local.access_ops.extend(
                (tenant_id, u.id, float(u.relevance), float(u.decay_rate),
                 u.last_accessed_at.timestamp(), u.count, u.tier.value) for u in updates)
            for event in events:
                self._insert_event(conn, event)

    def expired_ids(self, now: datetime, limit: int) -> builtins.list[tuple[str, str]]:
        rows = self._conn().execute(
            "SELECT tenant_id, id FROM memories WHERE expires_at IS NOT NULL "
            "AND expires_at <= ? ORDER BY expires_at LIMIT ?",
            (now.timestamp(), limit),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def add_relation(self, relation: Relation) -> None:
        with self.atomic(relation.tenant_id, None):
            self._writer.execute(
                "INSERT INTO relations VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (relation.tenant_id, relation.from_id, relation.to_id, relation.kind,
                 relation.created_at.timestamp()),
            )

    def relations(self, tenant_id: str, memory_id: str) -> builtins.list[Relation]:
        rows = self._conn().execute(
            "SELECT tenant_id, from_id, to_id, kind, created_at FROM relations "
            "WHERE tenant_id = ? AND (from_id = ? OR to_id = ?) ORDER BY created_at, rowid",
            (tenant_id, memory_id, memory_id),
        ).fetchall()
        return [Relation(r[0], r[1], r[2], r[3], datetime.fromtimestamp(r[4], tz=UTC))
                for r in rows]

    # -- tenants, keys, idempotency ----------------------------------------------------

    def put_tenant(self, tenant: Tenant) -> None:
        with self.atomic(tenant.id, None):
            self._writer.execute(
                "INSERT INTO tenants VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "name = excluded.name, status = excluded.status, "
                "memory_limit = excluded.memory_limit",
                (tenant.id, tenant.name, tenant.status.value, tenant.memory_limit,
                 tenant.created_at.timestamp()),
            )

    def get_tenant(self, tenant_id: str) -> Tenant | None:
        row = self._conn().execute(
            "SELECT id, name, status, memory_limit, created_at FROM tenants WHERE id = ?",
            (tenant_id,),
        ).fetchone()
        return None if row is None else _tenant(row)

    def list_tenants(self) -> builtins.list[Tenant]:
        rows = self._conn().execute(
            "SELECT id, name, status, memory_limit, created_at FROM tenants ORDER BY created_at"
        ).fetchall()
        return [_tenant(r) for r in rows]

    def put_key(self, key: ApiKey) -> None:
        with self.atomic(key.tenant_id, None):
            self._writer.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant_id, id) DO UPDATE SET name = excluded.name, "
                "scopes = excluded.scopes, revoked_at = excluded.revoked_at, "
                "last_used_at = excluded.last_used_at, rate_limit = excluded.rate_limit",
                (key.tenant_id, key.id, key.name, key.prefix, key.key_hash,
                 json.dumps(key.scopes), key.created_at.timestamp(), _ts(key.revoked_at),
                 _ts(key.last_used_at), key.rate_limit),
            )

    def get_key_by_hash(self, key_hash: str) -> ApiKey | None:
        row = self._conn().execute(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_hash = ?", (key_hash,)
        ).fetchone()
        return None if row is None else _api_key(row)

    def list_keys(self, tenant_id: str | None = None) -> builtins.list[ApiKey]:
        sql = f"SELECT {_KEY_COLUMNS} FROM api_keys"
        params: tuple[Any, ...] = ()
        if tenant_id is not None:
            sql += " WHERE tenant_id = ?"
            params = (tenant_id,)
        return [_api_key(r) for r in self._conn().execute(sql + " ORDER BY created_at", params)]

    def get_idempotent(self, tenant_id: str, key: str) -> IdempotentResponse | None:
        row = self._conn().execute(
            "SELECT tenant_id, key, request_hash, status_code, body, created_at "
            "FROM idempotency WHERE tenant_id = ? AND key = ?",
            (tenant_id, key),
        ).fetchone()
        if row is None:
            return None
        return IdempotentResponse(row[0], row[1], row[2], int(row[3]), bytes(row[4]),
                                  datetime.fromtimestamp(row[5], tz=UTC))

    def put_idempotent(self, response: IdempotentResponse) -> bool:
        with self.atomic(response.tenant_id, None):
            cur = self._writer.execute(
                "INSERT INTO idempotency VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant_id, key) DO NOTHING",
                (response.tenant_id, response.key, response.request_hash,
                 response.status_code, response.body, response.created_at.timestamp()),
            )
            return cur.rowcount == 1

    def purge_idempotent(self, before: datetime) -> int:
        with self.atomic("", None):
            cur = self._writer.execute(
                "DELETE FROM idempotency WHERE created_at < ?", (before.timestamp(),)
            )
            return cur.rowcount


_KEY_COLUMNS = (
    "tenant_id, id, name, prefix, key_hash, scopes, created_at, revoked_at, last_used_at, "
    "rate_limit"
)


def _tenant(row: Sequence[Any]) -> Tenant:
    return Tenant(id=row[0], name=row[1], status=TenantStatus(row[2]), memory_limit=row[3],
                  created_at=datetime.fromtimestamp(row[4], tz=UTC))


def _api_key(row: Sequence[Any]) -> ApiKey:
    created = _dt(row[6])
    assert created is not None
    return ApiKey(tenant_id=row[0], id=row[1], name=row[2], prefix=row[3], key_hash=row[4],
                  scopes=json.loads(row[5]), created_at=created, revoked_at=_dt(row[7]),
                  last_used_at=_dt(row[8]), rate_limit=row[9])


class _InTransaction:
    """The connection as a migration step sees it: `executescript` runs statement by
    statement, so the step stays inside the runner's transaction (sqlite3's own
    executescript would commit first)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        return self.conn.executemany(sql, rows)

    def executescript(self, script: str) -> None:
        buf = ""
        for line in script.splitlines(keepends=True):
            if line.strip().startswith("--"):
                continue
            buf += line
            if sqlite3.complete_statement(buf):
                self.conn.execute(buf.strip())
                buf = ""
        if buf.strip():
            self.conn.execute(buf.strip())


def _row_values(r: MemoryRecord) -> tuple[Any, ...]:
    return (
        r.tenant_id, r.id, r.user_id, r.user_id or "", r.agent_id, r.agent_id or "",
        r.session_id, r.namespace, r.scope.value if r.scope else None, r.domain,
        None if r.value_json is None else json.dumps(r.value_json, ensure_ascii=False),
        r.content, r.content_type.value, r.memory_type.value,
        r.memory_nature.value if r.memory_nature else None, r.tier.value, r.source,
        r.source_id, r.external_id, r.parent_memory_id,
        json.dumps(r.metadata, ensure_ascii=False), json.dumps(r.tags, ensure_ascii=False),
        r.importance, r.confidence, r.relevance, r.decay_rate, r.access_count,
        _ts(r.last_accessed_at), int(r.pinned), int(r.immutable), r.status.value,
        r.superseded_by, _ts(r.expires_at), _ts(r.created_at), _ts(r.updated_at),
        int(r.pii_detected), json.dumps(r.pii_fields), r.integrity_hash, r.embedding_model,
        r.tokens_used,
    )


def _access_values(values: Sequence[Any], rowid: int) -> tuple[Any, ...]:
    """A memory_access row from a record's _row_values and its rowid."""
    return (values[0], values[_USER_KEY], rowid, *(values[i] for i in _ACCESS_AT))


def _insert_row(conn: sqlite3.Connection, record: MemoryRecord) -> int:
    """Insert a memory's row and its access fields; its rowid."""
    values = _row_values(record)
    rowid = int(conn.execute(_INSERT, [values[i] for i in _ROW_AT]).lastrowid or 0)
    conn.execute(_ACCESS_INSERT, _access_values(values, rowid))
    return rowid


# Positions in a _SELECT row (rowid first), and the closed vocabularies by stored value:
# a dict lookup costs a tenth of calling the Enum, and reads build thousands of records.
_AT = {c: i + 1 for i, c in enumerate(_COLUMNS)}
_AT_TYPE, _AT_TIER, _AT_COUNT, _AT_SESSION = (
    _AT["memory_type"], _AT["tier"], _AT["access_count"], _AT["session_id"])
_AT_RANK = tuple(_AT[c] for c in ("importance", "relevance", "decay_rate", "pinned",
                                  "created_at", "last_accessed_at"))
_SCOPES = {e.value: e for e in Scope}
_CONTENT_TYPES = {e.value: e for e in ContentType}
_MEMORY_TYPES = {e.value: e for e in MemoryType}
_NATURES = {e.value: e for e in MemoryNature}
_TIERS = {e.value: e for e in Tier}
_STATUSES = {e.value: e for e in Status}


_ID = _AT["id"]
_USER_KEY = _COLUMNS.index("user_key")


def _access_of(memory_type: str, tier: str, count: int, session: str | None,
               rank: Sequence[Any]) -> AccessFields:
    """AccessFields from stored values (the _RANK_SELECT columns as `rank`)."""
    return AccessFields(_MEMORY_TYPES[memory_type], _TIERS[tier], count,
                        RankFields(*_rank_of(rank), session))


def _accessed(row: tuple[Any, ...], count: int, at: float, relevance: float, decay: float,
              tier: str) -> tuple[Any, ...]:
    """A _SELECT row as apply_access's UPDATE leaves it."""
    new = builtins.list(row)
    new[_AT["access_count"]] += count
    last = new[_AT["last_accessed_at"]]
    new[_AT["last_accessed_at"]] = at if last is None else max(last, at)
    new[_AT["relevance"]] = relevance
    new[_AT["decay_rate"]] = decay
    new[_AT["tier"]] = tier
    return tuple(new)


# Short JSON lists of strings ('["name", "email"]': PII types, tags) recur from row to
# row: parsed once, each record gets its own copy (json.loads cost ~2.5 µs a field).
_FLAT_LISTS: dict[str, tuple[str, ...]] = {}
_FLAT_LISTS_MAX = 4096


def _json(text: str) -> Any:
    # Most rows carry empty metadata, tags and PII lists.
    if text == "{}":
        return {}
    if text == "[]":
        return []
    known = _FLAT_LISTS.get(text)
    if known is not None:
        return list(known)
    value = json.loads(text)
    if (len(text) <= 200 and type(value) is list
            and all(type(x) is str for x in value)):
        if len(_FLAT_LISTS) >= _FLAT_LISTS_MAX:
            _FLAT_LISTS.clear()
        _FLAT_LISTS[text] = tuple(value)
    return value


def _record(row: Sequence[Any]) -> MemoryRecord:
    # One unpack in MEMORY_COLUMNS order (rowid first) instead of 40 lookups by name: a
    # quarter faster, and every read builds records (the contract suite's round trips
    # fail if the order ever differs).
    (_, tenant_id, mid, user_id, _, agent_id, _, session_id, namespace, scope, domain,
     value_json, content, content_type, memory_type, nature, tier, source, source_id,
     external_id, parent_memory_id, metadata, tags, importance, confidence, relevance,
     decay_rate, access_count, last_accessed_at, pinned, immutable, status, superseded_by,
     expires_at, created_at, updated_at, pii_detected, pii_fields, integrity_hash,
     embedding_model, tokens_used) = row
    # positional, in the field order checked below (keywords cost ~1 µs more a record)
    return MemoryRecord(
        mid, tenant_id, content, integrity_hash,
        datetime.fromtimestamp(created_at, tz=UTC), datetime.fromtimestamp(updated_at, tz=UTC),
        user_id, agent_id, session_id, namespace, _SCOPES[scope] if scope else None, domain,
        None if value_json is None else json.loads(value_json),
        _CONTENT_TYPES[content_type], _MEMORY_TYPES[memory_type],
        _NATURES[nature] if nature else None, _TIERS[tier],
        source, source_id, external_id, parent_memory_id, _json(metadata), _json(tags),
        importance, confidence, relevance, decay_rate, access_count,
        _dt(last_accessed_at), bool(pinned), bool(immutable), _STATUSES[status],
        superseded_by, _dt(expires_at), bool(pii_detected), _json(pii_fields),
        embedding_model, tokens_used,
    )


# the order `_record` passes MemoryRecord's fields in
_RECORD_FIELDS = (
    "id", "tenant_id", "content", "integrity_hash", "created_at", "updated_at", "user_id",
    "agent_id", "session_id", "namespace", "scope", "domain", "value_json", "content_type",
    "memory_type", "memory_nature", "tier", "source", "source_id", "external_id",
    "parent_memory_id", "metadata", "tags", "importance", "confidence", "relevance",
    "decay_rate", "access_count", "last_accessed_at", "pinned", "immutable", "status",
    "superseded_by", "expires_at", "pii_detected", "pii_fields", "embedding_model",
    "tokens_used",
)
if tuple(f.name for f in dataclasses.fields(MemoryRecord)) != _RECORD_FIELDS:
    raise RuntimeError("MemoryRecord's fields changed: update _record and _RECORD_FIELDS")
