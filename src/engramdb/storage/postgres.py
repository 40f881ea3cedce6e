"""The scale-out store: PostgreSQL with pgvector.

One table `memories` holds the row, its vector (`vector(D)`, HNSW index for cosine) and its
full-text (`tsvector`, GIN index), next to `history`, `tenants`, `api_keys`, `idempotency`,
`meta` and `schema_migrations`. The API processes keep no state of their own, so any number
of them can share one database (docs/scaling.md).

Decisions worth knowing:

* **The vector column gets its dimension at bind_embedding**, not at migrate: the migration
  creates `embedding vector` (no dimension); the first bind records model and dimension in
  `meta`, turns the column into `vector(D)` and builds the HNSW index, under the same
  advisory lock as the migrations. Later binds only compare.
* **Exact search for a user.** DESIGN §5: a global ANN index under a user filter loses most
  of a typical user's neighbours. Every query narrowed to a user (or an exact scope) runs as
  a fenced sub-select (`OFFSET 0`): the planner finds the user's rows through the btree on
  (tenant_id, user_key, ...) and sorts them by `<=>`; the HNSW index cannot be used there.
  Tenant-wide queries are exact too, unless the tenant holds at least `ann_min_rows`
  memories and the HNSW index can answer well: with pgvector >= 0.8 through iterative scans
  (`hnsw.iterative_scan = relaxed_order`), before that only when nothing narrows the query
  but the tenant and the tenant is most of the table. A short ANN answer falls back to exact.
* **Keyword search** is BM25 over the matching rows, computed in SQL from the tsvector
  (term frequency from the lexeme's positions, document length = distinct lexemes, idf over
  the rows of the filtered scope that match any query word; k1 = 1.2, b = 0.75). Text is
  folded in Python before Postgres sees it (NFKD without combining marks, lower case, every
  run of non-letters/digits a space), and the text search configuration `engram` stems with
  Snowball English and keeps stop words, as the SQLite store's porter/unicode61 index does.
  Each row's tsvector also holds two scope words (hashed tenant, hashed tenant + user), and
  the query ANDs the scope word with the OR of the query words: the GIN index then intersects
  the user's postings with the words' (as FTS5 does with the SQLite store's scope column)
  instead of collecting the words' rows across the whole tenant. Every query word goes
  through `plainto_tsquery` alone: no user text is parsed as tsquery syntax.
* **Row layout.** `toast_tuple_target = 8160` and `STORAGE MAIN` for the vector keep a row
  whole up to 8 kB: a 384-d vector plus text and tsvector is just over the default 2 kB, and
  a vector moved out of line costs every exact search a TOAST lookup per row (measured: 8x
  slower for a user with 900 memories).
* **Write sections** (`atomic`) hold one pooled connection for the thread, in a transaction
  that starts with `pg_advisory_xact_lock(hash(tenant, user))`: two processes checking and
  inserting the same memory are serialised, and reads made inside the section (on that
  thread) run on the section's connection and see its writes. A write outside a section is
  a single statement (row, vector, full-text and history event in one data-modifying CTE),
  atomic by itself.
* JSON (value_json, metadata, history changes) is stored as `json`, which keeps the text as
  written (key order, every number as it was); metadata filters compare the extracted value
  as `jsonb`. Tags and PII fields are `text[]`. Times are `timestamptz`.
* Every primary and unique key leads with tenant_id, so the tenant tables can be
  distributed by tenant with Citus (docs/scaling.md).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
import struct
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
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
from .keyword_stats import TenantWordStats
from .migrations import Migrations
from .text import fold, keyword_terms
from .where import where

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.adapt import Dumper, Loader
    from psycopg.pq import Format, TransactionStatus
    from psycopg.types import TypeInfo
    from psycopg_pool import ConnectionPool
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the PostgreSQL store needs psycopg and psycopg-pool: pip install 'engramdb[postgres]'"
    ) from exc

migrations = Migrations("postgres")

Conn = psycopg.Connection[Any]

# Advisory lock keys: one for schema changes, one per (tenant, user) write section.
_MIGRATION_LOCK = int.from_bytes(hashlib.blake2b(b"engram:migrate", digest_size=8).digest(),
                                 "big", signed=True)


def _section_lock(tenant_id: str, user_key: str) -> int:
    h = hashlib.blake2b(f"{tenant_id}\x1f{user_key}".encode(), digest_size=8,
                        person=b"engram-atomic")
    return int.from_bytes(h.digest(), "big", signed=True)


@migrations.step("0001_initial")
def _initial(conn: Conn) -> None:
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    # Snowball English without a stop word list: stop words stay searchable (a query made
    # only of them still matches), as in the SQLite store.
    conn.execute(
        "CREATE TEXT SEARCH DICTIONARY engram_stem (TEMPLATE = snowball, Language = english)"
    )
    conn.execute("CREATE TEXT SEARCH CONFIGURATION engram (COPY = pg_catalog.english)")
    conn.execute(
        "ALTER TEXT SEARCH CONFIGURATION engram ALTER MAPPING REPLACE english_stem "
        "WITH engram_stem"
    )
    conn.execute("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

        CREATE TABLE memories (
            tenant_id TEXT NOT NULL,
            id TEXT NOT NULL,
            seq BIGSERIAL NOT NULL,
            user_id TEXT,
            user_key TEXT NOT NULL,
            agent_id TEXT,
            agent_key TEXT NOT NULL,
            session_id TEXT,
            namespace TEXT NOT NULL,
            scope TEXT,
            domain TEXT,
            value_json JSON,
            content TEXT NOT NULL,
            content_type TEXT NOT NULL,
            memory_type TEXT NOT NULL,
            memory_nature TEXT,
            tier TEXT NOT NULL,
            source TEXT NOT NULL,
            source_id TEXT,
            external_id TEXT,
            parent_memory_id TEXT,
            metadata JSON NOT NULL,
            tags TEXT[] NOT NULL,
            importance DOUBLE PRECISION NOT NULL,
            confidence DOUBLE PRECISION NOT NULL,
            relevance DOUBLE PRECISION NOT NULL,
            decay_rate DOUBLE PRECISION NOT NULL,
            access_count BIGINT NOT NULL,
            last_accessed_at TIMESTAMPTZ,
            pinned BOOLEAN NOT NULL,
            immutable BOOLEAN NOT NULL,
            status TEXT NOT NULL,
            superseded_by TEXT,
            expires_at TIMESTAMPTZ,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            pii_detected BOOLEAN NOT NULL,
            pii_fields TEXT[] NOT NULL,
            integrity_hash TEXT NOT NULL,
            embedding_model TEXT,
            tokens_used BIGINT NOT NULL,
            -- typed vector(D) and indexed (HNSW) by the first bind_embedding
            embedding vector,
            tsv TSVECTOR NOT NULL,
            PRIMARY KEY (tenant_id, id)
        -- rows stay whole up to 8 kB: a 384-d vector plus a tsvector and a short text pass
        -- the default 2 kB, and TOAST would cost every search a lookup per row
        ) WITH (toast_tuple_target = 8160);
        -- the scope btree: a user's rows are found here, then sorted by distance exactly
        CREATE INDEX ix_memories_user ON memories (tenant_id, user_key, created_at);
        CREATE INDEX ix_memories_created ON memories (tenant_id, created_at);
        CREATE INDEX ix_memories_seq ON memories (tenant_id, seq);
        -- exact duplicates cannot be stored twice, whatever the callers do
        CREATE UNIQUE INDEX ux_memories_hash
            ON memories (tenant_id, user_key, agent_key, namespace, integrity_hash)
            WHERE status = 'active';
        CREATE INDEX ix_memories_tsv ON memories USING gin (tsv);
        CREATE INDEX ix_memories_expires ON memories (expires_at) WHERE expires_at IS NOT NULL;

        CREATE TABLE history (
            tenant_id TEXT NOT NULL,
            seq BIGSERIAL NOT NULL,
            id TEXT NOT NULL,
            memory_id TEXT NOT NULL,
            event TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL,
            actor TEXT,
            changes JSON NOT NULL,
            PRIMARY KEY (tenant_id, seq)
        );
        CREATE INDEX ix_history_memory ON history (tenant_id, memory_id, seq);
    """)


@migrations.step("0002_tenants_keys_idempotency")
def _tenants_keys(conn: Conn) -> None:
    conn.execute("""
        CREATE TABLE tenants (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            memory_limit BIGINT,
            created_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE api_keys (
            tenant_id TEXT NOT NULL,
            id TEXT NOT NULL,
            name TEXT NOT NULL,
            prefix TEXT NOT NULL,
            key_hash TEXT NOT NULL,
            scopes TEXT[] NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            revoked_at TIMESTAMPTZ,
            last_used_at TIMESTAMPTZ,
            rate_limit BIGINT,
            PRIMARY KEY (tenant_id, id),
            UNIQUE (tenant_id, key_hash)
        );
        -- a request names its key, not its tenant: the lookup goes by hash alone
        CREATE INDEX ix_api_keys_hash ON api_keys (key_hash);
        CREATE TABLE idempotency (
            tenant_id TEXT NOT NULL,
            key TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            status_code INTEGER NOT NULL,
            body BYTEA NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (tenant_id, key)
        );
        CREATE INDEX ix_idempotency_created ON idempotency (created_at);
    """)


@migrations.step("0003_relations")
def _relations(conn: Conn) -> None:
    conn.execute("""
        CREATE TABLE relations (
            tenant_id TEXT NOT NULL,
            from_id TEXT NOT NULL,
            to_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            seq BIGSERIAL NOT NULL,
            PRIMARY KEY (tenant_id, from_id, to_id, kind)
        );
        CREATE INDEX ix_relations_to ON relations (tenant_id, to_id);
    """)


# -- columns ---------------------------------------------------------------------------------

_COLUMNS = MEMORY_COLUMNS
_CASTS = {"value_json": "::json", "metadata": "::json", "tags": "::text[]",
          "pii_fields": "::text[]"}
_PLACEHOLDERS = [f"%s{_CASTS.get(c, '')}" for c in _COLUMNS]
_SELECT = "SELECT " + ", ".join(f"m.{c}" for c in _COLUMNS) + " FROM memories m"
_INSERT_ROW = (
    f"INSERT INTO memories ({', '.join(_COLUMNS)}, embedding, tsv) "
    f"VALUES ({', '.join(_PLACEHOLDERS)}, %b, "
    "to_tsvector('engram', %s) || array_to_tsvector(%s::text[]))"
)
_HISTORY_COLUMNS = "tenant_id, id, memory_id, event, at, actor, changes"
_INSERT_EVENT = (
    f"INSERT INTO history ({_HISTORY_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s::json)"
)
# row, vector, full-text and event in one statement; nothing is written on a unique conflict
_INSERT = (
    f"WITH ins AS ({_INSERT_ROW} ON CONFLICT DO NOTHING RETURNING tenant_id) "
    f"INSERT INTO history ({_HISTORY_COLUMNS}) "
    "SELECT %s, %s, %s, %s, %s, %s, %s::json FROM ins RETURNING 1"
)
_UPDATABLE = [c for c in _COLUMNS if c not in ("tenant_id", "id")]
_SET = ", ".join(f"{c} = {p}" for c, p in zip(_COLUMNS, _PLACEHOLDERS, strict=True)
                 if c in _UPDATABLE)
# the tsvector is rebuilt only when the content or the user changed (access tracking updates
# rows often)
_UPDATE_TEMPLATE = (
    "WITH upd AS (UPDATE memories SET " + _SET + "{vector}, "
    "tsv = CASE WHEN memories.content = %s AND memories.user_key = %s THEN memories.tsv "
    "ELSE to_tsvector('engram', %s) || array_to_tsvector(%s::text[]) END "
    "WHERE tenant_id = %s AND id = %s RETURNING tenant_id) "
    f"INSERT INTO history ({_HISTORY_COLUMNS}) "
    "SELECT %s, %s, %s, %s, %s, %s, %s::json FROM upd RETURNING 1"
)
_UPDATE_WITH_VECTOR = _UPDATE_TEMPLATE.format(vector=", embedding = %b")
_UPDATE_ROW_ONLY = _UPDATE_TEMPLATE.format(vector="")
_DELETE = (
    "WITH del AS (DELETE FROM memories WHERE tenant_id = %s AND id = %s "
    "RETURNING tenant_id, id), "
    # earlier events may quote the content; a deleted memory leaves none behind
    "redact AS (UPDATE history SET changes = '{\"redacted\": true}'::json "
    "WHERE tenant_id = %s AND memory_id = %s AND EXISTS (SELECT 1 FROM del)), "
    "rel AS (DELETE FROM relations WHERE tenant_id = %s AND (from_id = %s OR to_id = %s) "
    "AND EXISTS (SELECT 1 FROM del)), "
    f"ev AS (INSERT INTO history ({_HISTORY_COLUMNS}) "
    "SELECT %s, %s, %s, %s, %s, %s, %s::json FROM del) "
    "SELECT count(*) FROM del"
)

_NUL_ESCAPE, _NUL_STANDIN = "\\u0000", "\\ufffd"
_HNSW_MAX_DIM = 2000  # pgvector's limit for an HNSW index on `vector`


def _token(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=10).hexdigest()


def _scope_tokens(r: MemoryRecord) -> builtins.list[str]:
    """Words for the row's tenant and user, indexed with its text: a keyword query for one
    user then reads that user's postings from the GIN index (as the SQLite store's FTS5
    scope column does), instead of the query words' postings of the whole tenant."""
    return [f"t{_token(r.tenant_id)}", f"u{_token(r.tenant_id, r.user_id or '')}"]


def _event_values(e: HistoryEvent) -> tuple[Any, ...]:
    return (e.tenant_id, e.id, e.memory_id, e.event, e.at, e.actor,
            json.dumps(e.changes, ensure_ascii=False, default=str))


class _PostgresDialect:
    """How PostgreSQL spells the filters (storage/where.py)."""

    mark = "%s"
    # clamped: Postgres raises on exp() underflow where SQLite returns 0
    relevance = (
        "(CASE WHEN m.pinned THEN m.relevance ELSE m.relevance * exp(greatest(-700, "
        "least(700, -m.decay_rate * extract(epoch FROM (%s - coalesce("
        "m.last_accessed_at, m.created_at)))::float8 / 3600.0))) END)"
    )
    tier = "m.tier"

    def time(self, dt: datetime) -> datetime:
        return dt

    def any_of(self, column: str, values: Sequence[str]) -> tuple[str, builtins.list[Any]]:
        return f"{column} = ANY(%s::text[])", [builtins.list(values)]

    def tags(self, tags: Sequence[str]) -> builtins.list[tuple[str, builtins.list[Any]]]:
        return [("m.tags @> %s::text[]", [builtins.list(tags)])]

    def metadata(self, key: str, value: Any) -> tuple[str, builtins.list[Any]]:
        # `json` keeps what was written, but neither it nor jsonb can take a NUL (\u0000)
        # apart: such escapes compare as U+FFFD, in the rows and in the filter value
        return "(replace(m.metadata::text, %s, %s)::json -> %s)::jsonb = %s::jsonb", [
            _NUL_ESCAPE, _NUL_STANDIN, key,
            _json_text(value).replace(_NUL_ESCAPE, _NUL_STANDIN)]


_POSTGRES = _PostgresDialect()


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _row_values(r: MemoryRecord) -> tuple[Any, ...]:
    return (
        r.tenant_id, r.id, r.user_id, r.user_id or "", r.agent_id, r.agent_id or "",
        r.session_id, r.namespace, r.scope.value if r.scope else None, r.domain,
        None if r.value_json is None else _json_text(r.value_json),
        r.content, r.content_type.value, r.memory_type.value,
        r.memory_nature.value if r.memory_nature else None, r.tier.value, r.source,
        r.source_id, r.external_id, r.parent_memory_id, _json_text(r.metadata),
        builtins.list(r.tags), r.importance, r.confidence, r.relevance, r.decay_rate,
        r.access_count, r.last_accessed_at, r.pinned, r.immutable, r.status.value,
        r.superseded_by, r.expires_at, r.created_at, r.updated_at, r.pii_detected,
        builtins.list(r.pii_fields), r.integrity_hash, r.embedding_model, r.tokens_used,
    )


def _utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else dt.astimezone(UTC)


_RANK_SELECT = ("m.importance, m.relevance, m.decay_rate, m.pinned, m.created_at, "
                "m.last_accessed_at, m.session_id")


def _rank_fields(columns: Sequence[Any]) -> RankFields:
    """RankFields from the _RANK_SELECT columns of a row."""
    importance, relevance, decay, pinned, created, accessed, session = columns
    return RankFields(importance, relevance, decay, bool(pinned), created.timestamp(),
                      None if accessed is None else accessed.timestamp(), session)


def _record(row: Sequence[Any]) -> MemoryRecord:
    v = dict(zip(_COLUMNS, row, strict=True))
    created, updated = _utc(v["created_at"]), _utc(v["updated_at"])
    assert created is not None and updated is not None
    return MemoryRecord(
        id=v["id"], tenant_id=v["tenant_id"], content=v["content"],
        integrity_hash=v["integrity_hash"], created_at=created, updated_at=updated,
        user_id=v["user_id"], agent_id=v["agent_id"], session_id=v["session_id"],
        namespace=v["namespace"], scope=Scope(v["scope"]) if v["scope"] else None,
        domain=v["domain"], value_json=v["value_json"],
        content_type=ContentType(v["content_type"]), memory_type=MemoryType(v["memory_type"]),
        memory_nature=MemoryNature(v["memory_nature"]) if v["memory_nature"] else None,
        tier=Tier(v["tier"]), source=v["source"], source_id=v["source_id"],
        external_id=v["external_id"], parent_memory_id=v["parent_memory_id"],
        metadata=v["metadata"], tags=builtins.list(v["tags"]),
        importance=v["importance"], confidence=v["confidence"], relevance=v["relevance"],
        decay_rate=v["decay_rate"], access_count=v["access_count"],
        last_accessed_at=_utc(v["last_accessed_at"]), pinned=v["pinned"],
        immutable=v["immutable"], status=Status(v["status"]),
        superseded_by=v["superseded_by"], expires_at=_utc(v["expires_at"]),
        pii_detected=v["pii_detected"], pii_fields=builtins.list(v["pii_fields"]),
        embedding_model=v["embedding_model"], tokens_used=v["tokens_used"],
    )


def _event(row: Sequence[Any]) -> HistoryEvent:
    at = _utc(row[4])
    assert at is not None
    return HistoryEvent(id=row[1], memory_id=row[2], tenant_id=row[0], event=row[3], at=at,
                        actor=row[5], changes=row[6])


# -- the vector type on the wire: pgvector's binary format, straight from/to numpy -----------


class _VectorDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: Any) -> bytes:
        a = np.asarray(obj, dtype=">f4")
        return struct.pack(">HH", a.shape[0], 0) + a.tobytes()


class _VectorBinaryLoader(Loader):
    format = Format.BINARY

    def load(self, data: Any) -> Vector:
        return np.frombuffer(bytes(data), dtype=">f4", offset=4).astype(np.float32)


class _VectorTextLoader(Loader):
    format = Format.TEXT

    def load(self, data: Any) -> Vector:
        text = bytes(data).decode()
        return np.array(text[1:-1].split(","), dtype=np.float32)


def _register_vector(conn: Conn) -> bool:
    """Teach this connection the `vector` type (its oid differs per database); False while
    the extension is not installed yet."""
    if conn.adapters.types.get("vector") is not None:
        return True
    info = TypeInfo.fetch(conn, "vector")
    if info is None:
        return False
    info.register(conn)
    dumper = type("VectorDumper", (_VectorDumper,), {"oid": info.oid})
    conn.adapters.register_dumper(np.ndarray, dumper)
    conn.adapters.register_loader(info.oid, _VectorBinaryLoader)
    conn.adapters.register_loader(info.oid, _VectorTextLoader)
    return True


def _redact(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


class PostgresStore:
    """The Store on PostgreSQL + pgvector. `url` is a libpq URL or conninfo string.

    `ann_min_rows`: tenant-wide vector queries use the HNSW index once a tenant holds this
    many memories (None: always exact). User-scoped queries are always exact."""

    def __init__(self, url: str, *, pool_min: int = 1, pool_max: int = 8,
                 ann_min_rows: int | None = 50_000, connect_timeout: float = 30.0) -> None:
        self.url = url
        self.ann_min_rows = ann_min_rows
        self._local = threading.local()
        self._dim: int | None = None
        self._model: str | None = None
        self._pgvector: tuple[int, ...] | None = None
        self._tenant_rows: dict[str, tuple[float, int]] = {}
        self._closed = False
        self._kw_stats = TenantWordStats(self._count_tenant_rows, self._count_tenant_word)
        self._pool = ConnectionPool(
            url, min_size=pool_min, max_size=max(pool_min, pool_max),
            kwargs={"autocommit": True}, configure=self._configure, open=False,
            name="engram",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except Exception as exc:
            self._pool.close()
            raise StoreError(f"cannot connect to PostgreSQL at {_redact(url)}: {exc}") from exc

    # -- connections -------------------------------------------------------------------

    @staticmethod
    def _configure(conn: Conn) -> None:
        conn.execute("SET TIME ZONE 'UTC'")
        _register_vector(conn)

    def _section(self) -> Conn | None:
        conn: Conn | None = getattr(self._local, "conn", None)
        return conn

    @contextmanager
    def _conn(self) -> Iterator[Conn]:
        """The section's connection inside a write section of this thread, else a pooled
        one for this call. Database errors come out as StoreError."""
        section = self._section()
        try:
            if section is not None:
                yield section
                return
            if self._closed:
                raise StoreError("the store is closed")
            with self._pool.connection() as conn:
                _register_vector(conn)
                yield conn
        except psycopg.Error as exc:
            raise _store_error(exc) from exc

    @contextmanager
    def _write(self) -> Iterator[Conn]:
        """A connection for one write statement: inside a section, under a savepoint (so a
        refused write leaves the section usable); outside, the statement is its own
        transaction."""
        with self._conn() as conn:
            if self._section() is conn:
                with conn.transaction():
                    yield conn
            else:
                yield conn

    def close(self) -> None:
        self._closed = True
        self._kw_stats.close()
        self._pool.close()

    # -- schema ------------------------------------------------------------------------

    def migrate(self) -> None:
        with self._conn() as conn, conn.transaction():
            # one process at a time; the others then find every step applied
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
            )
            applied = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
            for name, step in migrations.pending(applied):
                try:
                    step(conn)
                except pg_errors.InsufficientPrivilege as exc:
                    raise StoreError(
                        f"migration {name} needs more privileges ({exc}); a superuser can "
                        "run `CREATE EXTENSION vector` in this database first"
                    ) from exc
                conn.execute("INSERT INTO schema_migrations VALUES (%s, now())", (name,))

    def bind_embedding(self, model: str, dimension: int) -> None:
        if dimension < 1 or dimension > 16000:
            raise EmbeddingMismatch(f"pgvector cannot store {dimension}-d vectors")
        with self._conn() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
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
                conn.execute(
                    "INSERT INTO meta VALUES ('embedding_model', %s), ('embedding_dim', %s)",
                    (model, str(dimension)),
                )
                # MAIN: the vector stays in the row; when a row is too long (long content), the
                # text and tsvector go out of line first
                conn.execute(
                    f"ALTER TABLE memories ALTER COLUMN embedding TYPE vector({int(dimension)}), "
                    "ALTER COLUMN embedding SET STORAGE MAIN"
                )
                if dimension <= _HNSW_MAX_DIM:
                    conn.execute(
                        "CREATE INDEX IF NOT EXISTS ix_memories_embedding ON memories "
                        "USING hnsw (embedding vector_cosine_ops)"
                    )
        self._model, self._dim = model, dimension

    def embedding_binding(self) -> tuple[str, int] | None:
        with self._conn() as conn:
            rows = dict(conn.execute(
                "SELECT key, value FROM meta WHERE key IN ('embedding_model', 'embedding_dim')"
            ).fetchall())
        if "embedding_model" not in rows:
            return None
        return rows["embedding_model"], int(rows["embedding_dim"])

    # -- write sections ----------------------------------------------------------------

    @contextmanager
    def atomic(self, tenant_id: str, *user_ids: str | None) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        if depth:  # nested: part of the enclosing transaction
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth = depth
            return
        if self._closed:
            raise StoreError("the store is closed")
        # One advisory lock per scope, taken in ascending order: two sections sharing
        # scopes wait for each other instead of each holding what the other needs.
        locks = sorted({_section_lock(tenant_id, user_id or "") for user_id in user_ids or (None,)})
        try:
            with self._pool.connection() as conn:
                try:
                    _register_vector(conn)
                    self._local.conn = conn
                    self._local.depth = 1
                    with conn.transaction():
                        for lock in locks:
                            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
                        yield
                        if conn.info.transaction_status == TransactionStatus.INERROR:
                            # a failed statement whose error the caller swallowed: COMMIT
                            # would silently roll back, so say so
                            raise StoreError("a statement of this write section failed; "
                                             "the whole section was rolled back")
                finally:
                    self._local.conn = None
                    self._local.depth = 0
        except psycopg.Error as exc:
            raise _store_error(exc) from exc

    # -- writes ------------------------------------------------------------------------

    def _check_vector(self, vector: Vector) -> Vector:
        if self._dim is None:
            raise StoreError("bind_embedding() must be called before vectors are written")
        if vector.shape != (self._dim,):
            raise EmbeddingMismatch(
                f"vector has shape {vector.shape}; this store holds {self._dim}-d vectors"
            )
        return np.ascontiguousarray(vector, dtype=np.float32)

    def insert(self, record: MemoryRecord, vector: Vector, event: HistoryEvent) -> None:
        vec = self._check_vector(vector)
        # no savepoint even inside a section: a conflict inserts nothing and raises nothing
        with self._conn() as conn:
            row = conn.execute(
                _INSERT,
                (*_row_values(record), vec, fold(record.content), _scope_tokens(record),
                 *_event_values(event)),
            ).fetchone()
        if row is None:
            raise StoreError(
                f"could not insert memory {record.id}: its id, or an active memory with the "
                "same hash in the same scope, is already stored"
            )

    def update(self, record: MemoryRecord, vector: Vector | None, event: HistoryEvent) -> None:
        vec = None if vector is None else self._check_vector(vector)
        values = _row_values(record)[2:]
        text = (record.content, record.user_id or "", fold(record.content),
                _scope_tokens(record), record.tenant_id, record.id)
        with self._write() as conn:
            if vec is None:
                row = conn.execute(_UPDATE_ROW_ONLY,
                                   (*values, *text, *_event_values(event))).fetchone()
            else:
                row = conn.execute(_UPDATE_WITH_VECTOR,
                                   (*values, vec, *text, *_event_values(event))).fetchone()
        if row is None:
            raise StoreError(f"memory {record.id} vanished during update")

    def delete(self, tenant_id: str, memory_id: str, event: HistoryEvent) -> bool:
        with self._write() as conn:
            row = conn.execute(
                _DELETE, (tenant_id, memory_id, tenant_id, memory_id, tenant_id, memory_id,
                          memory_id, *_event_values(event))
            ).fetchone()
        return bool(row and row[0])

    def insert_raw(self, memories: Sequence[StoredMemory],
                   events: Sequence[HistoryEvent]) -> None:
        rows = []
        for m in memories:
            vec = None if m.vector is None else self._check_vector(m.vector)
            rows.append((*_row_values(m.record), vec, fold(m.record.content),
                         _scope_tokens(m.record)))
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            if rows:
                cur.executemany(_INSERT_ROW, rows)
            if events:
                cur.executemany(_INSERT_EVENT, [_event_values(e) for e in events])

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """For loading many rows at once (storage/copy.py uses it when the destination has
        it): the HNSW index is dropped for the load and built once at the end, which is an
        order of magnitude faster than maintaining it row by row. Searches stay correct
        meanwhile (exact); other writers may go on."""
        with self._conn() as conn:
            had = _scalar(conn, "SELECT to_regclass('ix_memories_embedding') IS NOT NULL")
            if had:
                conn.execute("DROP INDEX IF EXISTS ix_memories_embedding")
        try:
            yield
        finally:
            if had:
                with self._conn() as conn, conn.transaction():
                    mb = _hnsw_build_mb(conn, self._dim or 384)
                    conn.execute(f"SET LOCAL maintenance_work_mem = '{mb}MB'")
                    conn.execute(
                        "CREATE INDEX IF NOT EXISTS ix_memories_embedding ON memories "
                        "USING hnsw (embedding vector_cosine_ops)"
                    )

    # -- reads -------------------------------------------------------------------------

    def get(self, tenant_id: str, memory_id: str) -> MemoryRecord | None:
        with self._conn() as conn:
            row = conn.execute(_SELECT + " WHERE m.tenant_id = %s AND m.id = %s",
                               (tenant_id, memory_id), binary=True).fetchone()
        return None if row is None else _record(row)

    def _rows_by_id(self, select: str, tenant_id: str,
                    memory_ids: Sequence[str]) -> builtins.list[Any]:
        """Rows of `select` (ending in a FROM clause on `memories m`) for the given ids of
        a tenant."""
        if not memory_ids:
            return []
        with self._conn() as conn:
            return conn.execute(f"{select} WHERE m.tenant_id = %s AND m.id = ANY(%s)",
                                (tenant_id, builtins.list(dict.fromkeys(memory_ids))),
                                binary=True).fetchall()

    def get_many(self, tenant_id: str, memory_ids: Sequence[str],
                 scope: Filters | None = None) -> dict[str, MemoryRecord]:
        out = {}
        for row in self._rows_by_id(_SELECT, tenant_id, memory_ids):
            rec = _record(row)
            out[rec.id] = rec
        return out

    def rank_fields(self, tenant_id: str, memory_ids: Sequence[str],
                    scope: Filters | None = None) -> dict[str, RankFields]:
        return {mid: _rank_fields(rank) for mid, *rank in self._rows_by_id(
            f"SELECT m.id, {_RANK_SELECT} FROM memories m", tenant_id, memory_ids)}

    def reading(self, filters: Filters) -> AbstractContextManager[None]:
        return nullcontext()  # every read is its own statement anyway

    def rank_columns(self, tenant_id: str, memory_ids: Sequence[str],
                     scope: Filters | None = None) -> RankColumns:
        return RankColumns.of(memory_ids, self.rank_fields(tenant_id, memory_ids))

    def access_fields(self, tenant_id: str,
                      memory_ids: Sequence[str]) -> dict[str, AccessFields]:
        return {mid: AccessFields(MemoryType(mtype), Tier(tier), count, _rank_fields(rank))
                for mid, mtype, tier, count, *rank in self._rows_by_id(
                    f"SELECT m.id, m.memory_type, m.tier, m.access_count, {_RANK_SELECT} "
                    "FROM memories m", tenant_id, memory_ids)}

    def get_vector(self, tenant_id: str, memory_id: str) -> Vector | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT embedding FROM memories WHERE tenant_id = %s AND id = %s",
                (tenant_id, memory_id), binary=True,
            ).fetchone()
        return None if row is None or row[0] is None else np.asarray(row[0], dtype=np.float32)

    def find_by_hash(self, tenant_id: str, user_id: str | None, agent_id: str | None,
                     namespace: str, integrity_hash: str) -> MemoryRecord | None:
        with self._conn() as conn:
            row = conn.execute(
                _SELECT + " WHERE m.tenant_id = %s AND m.user_key = %s AND m.agent_key = %s "
                "AND m.namespace = %s AND m.integrity_hash = %s AND m.status = 'active'",
                (tenant_id, user_id or "", agent_id or "", namespace, integrity_hash),
                binary=True,
            ).fetchone()
        return None if row is None else _record(row)

    @staticmethod
    def _where(f: Filters) -> tuple[str, builtins.list[Any]]:
        return where(f, _POSTGRES)

    def list(
        self, filters: Filters, limit: int, offset: int
    ) -> tuple[builtins.list[MemoryRecord], int]:
        where, params = self._where(filters)
        with self._conn() as conn:
            total = _scalar(conn, f"SELECT count(*) FROM memories m WHERE {where}", params)
            if offset >= total or limit <= 0:
                return [], total
            rows = conn.execute(
                f"{_SELECT} WHERE {where} ORDER BY m.created_at DESC, m.seq DESC "
                "LIMIT %s OFFSET %s",
                (*params, limit, offset), binary=True,
            ).fetchall()
        return [_record(r) for r in rows], total

    def keyword_search(
        self, filters: Filters, query: str, k: int
    ) -> builtins.list[tuple[str, float]]:
        terms = keyword_terms(query)
        if not terms or k <= 0:
            return []
        where, params = self._where(filters)
        tsquery = " || ".join("plainto_tsquery('engram', %s)" for _ in terms)
        if filters.user_id is not None or filters.exact_scope:
            token = f"u{_token(filters.tenant_id, filters.user_id or '')}"
        else:
            token = f"t{_token(filters.tenant_id)}"
        # the scope word is ours (hex), the query words go through plainto_tsquery one by one
        match = f"{where} AND m.tsv @@ (plainto_tsquery('simple', %s) && ({tsquery}))"
        # BM25 from the tsvector: tf from a lexeme's positions, dl = distinct lexemes and
        # avgdl over the matching rows of the scope, idf over the whole tenant (as the SQLite
        # store: storage/keyword_stats.py), passed in per word; a word whose tenant count is
        # not known yet takes its idf from the matching rows (n, df). setweight + ts_filter
        # keep only the query's lexemes of each row before unnest (cheaper than unnesting).
        sql = f"""
            WITH terms AS (SELECT tsvector_to_array(to_tsvector('engram', %s)) AS lexemes),
            idf AS (
                SELECT l.lexeme, max(x.idf) AS idf
                FROM unnest(%s::text[], %s::float8[]) AS x(word, idf),
                     unnest(tsvector_to_array(to_tsvector('engram', x.word))) AS l(lexeme)
                GROUP BY l.lexeme
            ),
            cand AS MATERIALIZED (
                SELECT m.id, m.seq, length(m.tsv)::float8 AS dl,
                       ts_filter(setweight(m.tsv, 'A', q.lexemes), '{{a}}') AS hits
                FROM memories m CROSS JOIN terms q WHERE {match}
            ),
            stats AS (SELECT count(*)::float8 AS n, avg(dl) AS avgdl FROM cand),
            tf AS (
                SELECT c.id, c.seq, c.dl, t.lexeme, cardinality(t.positions)::float8 AS tf
                FROM cand c, unnest(c.hits) AS t(lexeme, positions, weights)
                WHERE cardinality(t.positions) > 0
            ),
            df AS (SELECT lexeme, count(*)::float8 AS df FROM tf GROUP BY lexeme)
            SELECT tf.id, sum(
                coalesce(idf.idf, ln(1 + (s.n - df.df + 0.5) / (df.df + 0.5)))
                * tf.tf * 2.2 / (tf.tf + 1.2 * (0.25 + 0.75 * tf.dl / greatest(s.avgdl, 1)))
            ) AS score
            FROM tf JOIN df USING (lexeme) LEFT JOIN idf USING (lexeme) CROSS JOIN stats s
            GROUP BY tf.id, tf.seq ORDER BY score DESC, tf.seq DESC LIMIT %s
        """
        idfs = self._kw_stats.idf(filters.tenant_id, terms)
        with self._conn() as conn:
            rows = conn.execute(sql, (" ".join(terms), terms, [idfs[t] for t in terms],
                                      *params, token, *terms, k)).fetchall()
        return [(r[0], float(r[1])) for r in rows]

    def _count_tenant_rows(self, tenant_id: str) -> int:
        with self._conn() as conn:
            return int(_scalar(conn, "SELECT count(*) FROM memories WHERE tenant_id = %s",
                               [tenant_id]))

    def _count_tenant_word(self, tenant_id: str, word: str) -> int:
        with self._conn() as conn:
            return int(_scalar(
                conn, "SELECT count(*) FROM memories WHERE tenant_id = %s AND tsv @@ "
                "(plainto_tsquery('simple', %s) && plainto_tsquery('engram', %s))",
                [tenant_id, f"t{_token(tenant_id)}", word]))

    # -- vectors -----------------------------------------------------------------------

    def _query_vector(self, vector: Vector) -> Vector:
        if self._dim is None:
            raise StoreError("bind_embedding() must be called before searching")
        return np.ascontiguousarray(vector, dtype=np.float32)

    def _exact_sql(self, filters: Filters) -> tuple[str, builtins.list[Any]]:
        """Exact search: the sub-select (fenced by OFFSET 0, so the ORDER BY cannot be
        pushed into the HNSW index) selects the visible rows through the btrees, the outer
        query sorts them by cosine distance."""
        where, params = self._where(filters)
        sql = (
            "SELECT c.id, 1 - (c.embedding <=> %b) AS s FROM ("
            f"SELECT m.id, m.seq, m.embedding FROM memories m WHERE {where} "
            "AND m.embedding IS NOT NULL OFFSET 0) c "
            "ORDER BY c.embedding <=> %b, c.seq LIMIT %s"
        )
        return sql, params

    def nearest(self, filters: Filters, vector: Vector, k: int,
                include: Collection[str] = (), ordered: bool = True
                ) -> builtins.list[tuple[str, float]]:
        # the index returns the hits best first at no extra cost, so they come ordered
        # whatever `ordered` asks
        hits = self._nearest(filters, vector, k)
        if include:
            chosen = {mid for mid, _ in hits}
            rest = [mid for mid in include if mid not in chosen]
            if rest:
                hits.extend(self.similarities(filters, vector, rest).items())
        return hits

    def _nearest(self, filters: Filters, vector: Vector, k: int
                 ) -> builtins.list[tuple[str, float]]:
        query = self._query_vector(vector)
        if k <= 0:
            return []
        with self._conn() as conn:
            if self._use_ann(conn, filters):
                hits = self._nearest_ann(conn, filters, query, k)
                if len(hits) == k:
                    return hits
            sql, params = self._exact_sql(filters)
            rows = conn.execute(sql, (query, *params, query, k)).fetchall()
        return [(r[0], float(r[1])) for r in rows]

    def _use_ann(self, conn: Conn, f: Filters) -> bool:
        if self.ann_min_rows is None or f.user_id is not None or f.exact_scope:
            return False
        n = self._tenant_size(conn, f.tenant_id)
        if n < self.ann_min_rows:
            return False
        if self._iterative_scan(conn):
            return True
        if (f.agent_id is not None or f.session_id is not None or f.namespace is not None
                or f.needs_row_filter()):
            return False
        total = conn.execute(
            "SELECT greatest(reltuples, 0) FROM pg_class WHERE relname = 'memories' "
            "AND relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
        ).fetchone()
        return total is not None and n >= float(total[0]) / 2

    def _tenant_size(self, conn: Conn, tenant_id: str) -> int:
        """How many memories a tenant holds, counted at most once a minute per process."""
        now = time.monotonic()
        cached = self._tenant_rows.get(tenant_id)
        if cached is not None and now - cached[0] < 60:
            return cached[1]
        row = conn.execute("SELECT count(*) FROM memories WHERE tenant_id = %s",
                           (tenant_id,)).fetchone()
        n = int(row[0]) if row else 0
        self._tenant_rows[tenant_id] = (now, n)
        return n

    def _iterative_scan(self, conn: Conn) -> bool:
        if self._pgvector is None:
            row = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            ).fetchone()
            self._pgvector = _version(row[0]) if row else ()
        return self._pgvector >= (0, 8)

    def _nearest_ann(self, conn: Conn, filters: Filters, query: Vector,
                     k: int) -> builtins.list[tuple[str, float]]:
        where, params = self._where(filters)
        sql = (
            "SELECT a.id, 1 - a.d FROM ("
            f"SELECT m.id, m.seq, m.embedding <=> %b AS d FROM memories m WHERE {where} "
            "ORDER BY m.embedding <=> %b LIMIT %s) a ORDER BY a.d, a.seq"
        )
        with conn.transaction():
            conn.execute("SELECT set_config('hnsw.ef_search', %s, true)",
                         (str(min(1000, max(100, 4 * k))),))
            if self._iterative_scan(conn):
                conn.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
            rows = conn.execute(sql, (query, *params, query, k)).fetchall()
        return [(r[0], float(r[1])) for r in rows]

    def explain_nearest(self, filters: Filters, vector: Vector, k: int) -> str:
        """EXPLAIN of the exact query nearest() runs for these filters (for operators and
        tests: a user's query should read the scope btree, never the HNSW index)."""
        query = self._query_vector(vector)
        sql, params = self._exact_sql(filters)
        with self._conn() as conn:
            rows = conn.execute("EXPLAIN " + sql, (query, *params, query, k)).fetchall()
        return "\n".join(r[0] for r in rows)

    def similarities(self, filters: Filters, vector: Vector,
                     memory_ids: Sequence[str]) -> dict[str, float]:
        query = self._query_vector(vector)
        wanted = builtins.list(dict.fromkeys(memory_ids))
        if not wanted:
            return {}
        where, params = self._where(filters)
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT m.id, 1 - (m.embedding <=> %b) FROM memories m WHERE {where} "
                "AND m.id = ANY(%s) AND m.embedding IS NOT NULL",
                (query, *params, wanted),
            ).fetchall()
        return {r[0]: float(r[1]) for r in rows}

    def candidates(self, filters: Filters, vectors: Sequence[Vector], wanted: Sequence[int],
                   include: Collection[str]) -> Candidates:
        return compose_candidates(self, filters, vectors, wanted, include)

    # -- history, export, stats --------------------------------------------------------

    def history(self, tenant_id: str, memory_id: str) -> builtins.list[HistoryEvent]:
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {_HISTORY_COLUMNS} FROM history "
                "WHERE tenant_id = %s AND memory_id = %s ORDER BY seq",
                (tenant_id, memory_id), binary=True,
            ).fetchall()
        return [_event(r) for r in rows]

    def _stream(self, sql: str, params: Sequence[Any]) -> Iterator[Sequence[Any]]:
        """Rows of a long query through a server-side cursor on a connection of its own, so
        that a long export holds neither a pooled connection nor a write section."""
        conn = psycopg.connect(self.url)
        try:
            conn.execute("SET TIME ZONE 'UTC'")
            _register_vector(conn)
            with conn.transaction(), conn.cursor(name="engram_stream", binary=True) as cur:
                cur.itersize = 500
                cur.execute(sql, params)
                yield from cur
        finally:
            conn.close()

    def iter_all(self, tenant_id: str | None = None) -> Iterator[StoredMemory]:
        sql = _SELECT.replace(" FROM memories m", ", m.embedding FROM memories m")
        params: tuple[Any, ...] = ()
        if tenant_id is not None:
            sql += " WHERE m.tenant_id = %s"
            params = (tenant_id,)
        for row in self._stream(sql + " ORDER BY m.tenant_id, m.seq", params):
            vec = None if row[-1] is None else np.asarray(row[-1], dtype=np.float32)
            yield StoredMemory(_record(row[:-1]), vec)

    def iter_history(self, tenant_id: str | None = None) -> Iterator[HistoryEvent]:
        sql = f"SELECT {_HISTORY_COLUMNS} FROM history"
        params: tuple[Any, ...] = ()
        if tenant_id is not None:
            sql += " WHERE tenant_id = %s"
            params = (tenant_id,)
        for row in self._stream(sql + " ORDER BY tenant_id, seq", params):
            yield _event(row)

    def stats(self) -> dict[str, Any]:
        with self._conn() as conn:
            counts = {r[0]: int(r[1]) for r in conn.execute(
                "SELECT status, count(*) FROM memories GROUP BY status")}
            events = conn.execute("SELECT count(*) FROM history").fetchone()
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            ext = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        binding = self.embedding_binding()
        pool = self._pool.get_stats()
        return {
            "backend": "postgres",
            "url": _redact(self.url),
            "memories": sum(counts.values()),
            "by_status": counts,
            "history_events": int(events[0]) if events else 0,
            "database_bytes": int(size[0]) if size else 0,
            "embedding_model": binding[0] if binding else None,
            "embedding_dim": binding[1] if binding else None,
            "pgvector": ext[0] if ext else None,
            "pool_size": pool.get("pool_size", 0),
        }

    def count_active(self, tenant_id: str, now: datetime) -> int:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT count(*) FROM memories WHERE tenant_id = %s AND status = 'active' "
                "AND (expires_at IS NULL OR expires_at > %s)",
                (tenant_id, now),
            ).fetchone()
        return int(row[0]) if row else 0

    # -- lifecycle ---------------------------------------------------------------------

    def apply_access(self, tenant_id: str, updates: Sequence[AccessUpdate],
                     events: Sequence[HistoryEvent] = ()) -> None:
        if not updates and not events:
            return
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            if updates:
                cur.executemany(
                    "UPDATE memories SET access_count = access_count + %s, "
                    "last_accessed_at = greatest(last_accessed_at, %s), relevance = %s, "
                    "decay_rate = %s, tier = %s WHERE tenant_id = %s AND id = %s",
                    [(u.count, u.last_accessed_at, u.relevance, u.decay_rate, u.tier.value,
                      tenant_id, u.id) for u in updates],
                )
            if events:
                cur.executemany(_INSERT_EVENT, [_event_values(e) for e in events])

    def expired_ids(self, now: datetime, limit: int) -> builtins.list[tuple[str, str]]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT tenant_id, id FROM memories WHERE expires_at IS NOT NULL "
                "AND expires_at <= %s ORDER BY expires_at LIMIT %s",
                (now, limit),
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def add_relation(self, relation: Relation) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO relations (tenant_id, from_id, to_id, kind, created_at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (relation.tenant_id, relation.from_id, relation.to_id, relation.kind,
                 relation.created_at),
            )

    def relations(self, tenant_id: str, memory_id: str) -> builtins.list[Relation]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT tenant_id, from_id, to_id, kind, created_at FROM relations "
                "WHERE tenant_id = %s AND (from_id = %s OR to_id = %s) ORDER BY created_at, seq",
                (tenant_id, memory_id, memory_id),
            ).fetchall()
        out = []
        for r in rows:
            created = _utc(r[4])
            assert created is not None
            out.append(Relation(r[0], r[1], r[2], r[3], created))
        return out

    # -- tenants, keys, idempotency ----------------------------------------------------

    def put_tenant(self, tenant: Tenant) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO tenants VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE "
                "SET name = excluded.name, status = excluded.status, "
                "memory_limit = excluded.memory_limit",
                (tenant.id, tenant.name, tenant.status.value, tenant.memory_limit,
                 tenant.created_at),
            )

    def get_tenant(self, tenant_id: str) -> Tenant | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT id, name, status, memory_limit, created_at FROM tenants WHERE id = %s",
                (tenant_id,),
            ).fetchone()
        return None if row is None else _tenant(row)

    def list_tenants(self) -> builtins.list[Tenant]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT id, name, status, memory_limit, created_at FROM tenants "
                "ORDER BY created_at, id"
            ).fetchall()
        return [_tenant(r) for r in rows]

    def put_key(self, key: ApiKey) -> None:
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO api_keys ({_KEY_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s::text[], %s, %s, %s, %s) "
                "ON CONFLICT (tenant_id, id) DO UPDATE SET name = excluded.name, "
                "scopes = excluded.scopes, revoked_at = excluded.revoked_at, "
                "last_used_at = excluded.last_used_at, rate_limit = excluded.rate_limit",
                (key.tenant_id, key.id, key.name, key.prefix, key.key_hash,
                 builtins.list(key.scopes), key.created_at, key.revoked_at, key.last_used_at,
                 key.rate_limit),
            )

    def get_key_by_hash(self, key_hash: str) -> ApiKey | None:
        with self._conn() as conn:
            row = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_hash = %s", (key_hash,)
            ).fetchone()
        return None if row is None else _api_key(row)

    def list_keys(self, tenant_id: str | None = None) -> builtins.list[ApiKey]:
        sql = f"SELECT {_KEY_COLUMNS} FROM api_keys"
        params: tuple[Any, ...] = ()
        if tenant_id is not None:
            sql += " WHERE tenant_id = %s"
            params = (tenant_id,)
        with self._conn() as conn:
            rows = conn.execute(sql + " ORDER BY created_at, tenant_id, id", params).fetchall()
        return [_api_key(r) for r in rows]

    def get_idempotent(self, tenant_id: str, key: str) -> IdempotentResponse | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT tenant_id, key, request_hash, status_code, body, created_at "
                "FROM idempotency WHERE tenant_id = %s AND key = %s",
                (tenant_id, key),
            ).fetchone()
        if row is None:
            return None
        created = _utc(row[5])
        assert created is not None
        return IdempotentResponse(row[0], row[1], row[2], int(row[3]), bytes(row[4]), created)

    def put_idempotent(self, response: IdempotentResponse) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO idempotency VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (tenant_id, key) DO NOTHING",
                (response.tenant_id, response.key, response.request_hash,
                 response.status_code, response.body, response.created_at),
            )
            return cur.rowcount == 1

    def purge_idempotent(self, before: datetime) -> int:
        with self._write() as conn:
            cur = conn.execute("DELETE FROM idempotency WHERE created_at < %s", (before,))
            return cur.rowcount


_KEY_COLUMNS = (
    "tenant_id, id, name, prefix, key_hash, scopes, created_at, revoked_at, last_used_at, "
    "rate_limit"
)


def _tenant(row: Sequence[Any]) -> Tenant:
    created = _utc(row[4])
    assert created is not None
    return Tenant(id=row[0], name=row[1], status=TenantStatus(row[2]), memory_limit=row[3],
                  created_at=created)


def _api_key(row: Sequence[Any]) -> ApiKey:
    created = _utc(row[6])
    assert created is not None
    return ApiKey(tenant_id=row[0], id=row[1], name=row[2], prefix=row[3], key_hash=row[4],
                  scopes=builtins.list(row[5]), created_at=created, revoked_at=_utc(row[7]),
                  last_used_at=_utc(row[8]), rate_limit=row[9])


#: Bounds of the memory an HNSW build may take (maintenance_work_mem, in MB).
HNSW_BUILD_MB = (512, 4096)


def _hnsw_build_mb(conn: Conn, dim: int) -> int:
    """Memory for building the HNSW index in one go: the graph (a vector and ~32 neighbours
    per row) must fit, or pgvector goes on building on disk, many times slower (a 1M-row,
    384-d build: ~400k rows in 23 minutes, then about 9k rows a minute, with 512 MB)."""
    rows = _scalar(conn, "SELECT count(*) FROM memories WHERE embedding IS NOT NULL") or 0
    need = rows * (dim * 4 + 8 + 400) * 1.25 / 2**20
    return int(min(max(need, HNSW_BUILD_MB[0]), HNSW_BUILD_MB[1]))


def _scalar(conn: Conn, sql: str, params: Sequence[Any] = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


def _store_error(exc: psycopg.Error) -> StoreError:
    if isinstance(exc, pg_errors.UniqueViolation):
        return StoreError(f"refused by a unique index: {exc}")
    return StoreError(f"PostgreSQL: {exc}")
