"""The store port: what the core needs from any storage backend.

A store keeps rows, vectors, full-text and history, and answers filtered queries. It never
decides what a duplicate is, how results are scored or when a memory expires: the core does,
and passes `now` in. Every backend passes the shared contract suite (tests/test_store_contract.py).
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from ..models import (
    AccessUpdate,
    ApiKey,
    HistoryEvent,
    IdempotentResponse,
    MemoryRecord,
    MemoryType,
    Relation,
    Tenant,
    Tier,
)

Vector = npt.NDArray[np.float32]


class RankFields(NamedTuple):
    """What ranking needs of a candidate: a narrow read, so that a search builds full
    records only for the memories it returns (docs/architecture.md). Times are epoch
    seconds (a record's `created_at.timestamp()`): ranking does arithmetic on them, and
    building two datetimes per candidate cost more than the rest of the read."""

    importance: float
    relevance: float
    decay_rate: float
    pinned: bool
    created: float
    last_accessed: float | None
    session_id: str | None


F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class RankColumns:
    """The RankFields of some memories as columns, aligned with the ids asked for: what a
    search scores its candidates from, with numpy over all of them at once (a loop over
    RankFields tuples cost ~4 µs a candidate after the model). Where `found` is False the
    memory is missing and its other entries mean nothing; `last_accessed` is NaN for a
    memory never read."""

    found: npt.NDArray[np.bool_]
    importance: F64
    relevance: F64
    decay_rate: F64
    pinned: npt.NDArray[np.bool_]
    created: F64
    last_accessed: F64
    session_id: builtins.list[str | None]

    @classmethod
    def of(cls, memory_ids: Sequence[str], fields: dict[str, RankFields]) -> RankColumns:
        """Columns of `memory_ids` from fields by id (ids without fields: missing)."""
        rows = [fields.get(mid) for mid in memory_ids]
        blank = RankFields(0.0, 0.0, 0.0, False, 0.0, None, None)
        full = [blank if r is None else r for r in rows]
        n = len(full)
        return cls(
            found=np.fromiter((r is not None for r in rows), dtype=bool, count=n),
            importance=np.fromiter((r.importance for r in full), dtype=np.float64, count=n),
            relevance=np.fromiter((r.relevance for r in full), dtype=np.float64, count=n),
            decay_rate=np.fromiter((r.decay_rate for r in full), dtype=np.float64, count=n),
            pinned=np.fromiter((r.pinned for r in full), dtype=bool, count=n),
            created=np.fromiter((r.created for r in full), dtype=np.float64, count=n),
            last_accessed=np.fromiter(
                (np.nan if r.last_accessed is None else r.last_accessed for r in full),
                dtype=np.float64, count=n),
            session_id=[r.session_id for r in full],
        )

    def fields(self, i: int) -> RankFields | None:
        """The RankFields of the i-th memory, or None if it is missing."""
        if not self.found[i]:
            return None
        accessed = float(self.last_accessed[i])
        return RankFields(float(self.importance[i]), float(self.relevance[i]),
                          float(self.decay_rate[i]), bool(self.pinned[i]),
                          float(self.created[i]), None if accessed != accessed else accessed,
                          self.session_id[i])


@dataclass(frozen=True, slots=True)
class Candidates:
    """A search's vector candidates, with what scoring reads of them (`Store.candidates`):
    `ids` in no particular order; `similarities[v]` the cosine of each to the v-th query
    vector (0.0 where that memory is not visible to the vector search); `columns` their rank
    fields, aligned with `ids`."""

    ids: builtins.list[str]
    similarities: builtins.list[F64]
    columns: RankColumns


class AccessFields(NamedTuple):
    """What an access flush needs of a memory (engine/access.py): what tier promotion
    reads, and the decay inputs as ranking reads them. A narrow read: building the whole
    records of a flush's few hundred memories held the GIL for ~10 ms a second under a
    search load."""

    memory_type: MemoryType
    tier: Tier
    access_count: int
    rank: RankFields


#: The columns of a memory row, in the order both adapters read and write them (user_key and
#: agent_key are the non-null scope keys of user_id and agent_id).
MEMORY_COLUMNS = (
    "tenant_id", "id", "user_id", "user_key", "agent_id", "agent_key", "session_id",
    "namespace", "scope", "domain", "value_json", "content", "content_type", "memory_type",
    "memory_nature", "tier", "source", "source_id", "external_id", "parent_memory_id",
    "metadata", "tags", "importance", "confidence", "relevance", "decay_rate", "access_count",
    "last_accessed_at", "pinned", "immutable", "status", "superseded_by", "expires_at",
    "created_at", "updated_at", "pii_detected", "pii_fields", "integrity_hash",
    "embedding_model", "tokens_used",
)


@dataclass(frozen=True, slots=True)
class Filters:
    """Which memories a query may see. `tenant_id` and `now` are always set; the rest narrow.

    Expired memories (expires_at <= now) are never visible; superseded ones only with
    include_superseded."""

    tenant_id: str
    now: datetime
    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    namespace: str | None = None
    memory_types: tuple[str, ...] = ()
    content_types: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    memory_nature: str | None = None
    scope: str | None = None
    domain: str | None = None
    tags: tuple[str, ...] = ()  # every tag must be present
    metadata: tuple[tuple[str, Any], ...] = ()  # top-level key == value
    created_after: datetime | None = None
    created_before: datetime | None = None
    include_superseded: bool = False
    #: maintenance only: also rows past their expiry
    include_expired: bool = False
    #: relevance at `now` ≥ this: relevance × e^(−decay_rate × hours since the last access, or
    #: since creation), not decayed while pinned. The core chose each memory's decay_rate.
    min_relevance: float | None = None
    #: user/agent/namespace as an exact scope: None then means "not set" rather than "any"
    #: (used by duplicate checks: a memory without agent is another scope than one with).
    exact_scope: bool = False

    def needs_row_filter(self) -> bool:
        """True when some filter needs the full row (not kept next to the vectors)."""
        return bool(
            self.memory_types or self.content_types or self.tiers or self.memory_nature
            or self.scope or self.domain or self.tags or self.metadata
            or self.created_after or self.created_before or self.min_relevance is not None
        )


@dataclass(frozen=True, slots=True)
class StoredMemory:
    record: MemoryRecord
    vector: Vector | None


@runtime_checkable
class Store(Protocol):
    def migrate(self) -> None:
        """Create or upgrade the schema; idempotent."""
        ...

    def bind_embedding(self, model: str, dimension: int) -> None:
        """Record which model makes this store's vectors; raise EmbeddingMismatch if the
        store already holds vectors of another model or dimension."""
        ...

    def embedding_binding(self) -> tuple[str, int] | None:
        """The model and dimension recorded by bind_embedding (by any process), or None."""
        ...

    def atomic(self, tenant_id: str, *user_ids: str | None) -> AbstractContextManager[None]:
        """A write section for the given user scopes (one, usually; None is the scope of
        memories without a user): the checks made inside it (find_by_hash, nearest) and
        the writes that follow are atomic with respect to every other writer of those
        scopes, in this process and in others, and all commit in one transaction or none
        does. Sections name their scopes up front, so a store may lock them all at once,
        in an order of its own that cannot deadlock."""
        ...

    def insert(self, record: MemoryRecord, vector: Vector, event: HistoryEvent) -> None:
        """Row + vector + full-text + history event, together or not at all."""
        ...

    def update(
        self, record: MemoryRecord, vector: Vector | None, event: HistoryEvent
    ) -> None: ...

    def delete(self, tenant_id: str, memory_id: str, event: HistoryEvent) -> bool:
        """Remove row, vector and full-text; keep only the (content-free) event."""
        ...

    def get(self, tenant_id: str, memory_id: str) -> MemoryRecord | None:
        """The row, whatever its status or expiry (the core decides what is visible)."""
        ...

    def get_many(self, tenant_id: str, memory_ids: Sequence[str],
                 scope: Filters | None = None) -> dict[str, MemoryRecord]:
        """The rows of the given memories (missing ids left out); `scope` is a hint, as
        for rank_fields."""
        ...

    def rank_fields(self, tenant_id: str, memory_ids: Sequence[str],
                    scope: Filters | None = None) -> dict[str, RankFields]:
        """The ranking fields of the given memories (missing ids left out), whatever their
        status: the same values get_many would give, without building whole records.
        `scope` is a hint: the filters of the search the candidates come from (a store may
        answer from what it holds of that scope; ids outside it are answered all the same)."""
        ...

    def reading(self, filters: Filters) -> AbstractContextManager[None]:
        """A read section of the calling thread for one query's reads of `filters`' scope:
        they see at least every write committed before it began, and a store may answer
        them all from the state it found then (a search does not have to see a write
        committed while it runs)."""
        ...

    def rank_columns(self, tenant_id: str, memory_ids: Sequence[str],
                     scope: Filters | None = None) -> RankColumns:
        """`rank_fields` of the given memories as columns in the order given (a missing id:
        not found; an id given twice: twice). `scope` is the same hint."""
        ...

    def access_fields(self, tenant_id: str,
                      memory_ids: Sequence[str]) -> dict[str, AccessFields]:
        """What an access flush reads of the given memories (missing ids left out): the
        same values get_many would give."""
        ...

    def get_vector(self, tenant_id: str, memory_id: str) -> Vector | None: ...

    def find_by_hash(
        self,
        tenant_id: str,
        user_id: str | None,
        agent_id: str | None,
        namespace: str,
        integrity_hash: str,
    ) -> MemoryRecord | None:
        """The active memory with this hash in this exact scope, expired or not."""
        ...

    def nearest(self, filters: Filters, vector: Vector, k: int,
                include: Collection[str] = (), ordered: bool = True
                ) -> builtins.list[tuple[str, float]]:
        """Up to k visible memories by cosine similarity, best first; then the similarity
        of each memory of `include` that is visible but not among them (what
        `similarities` would give: a search's keyword hits, scored in the same pass).
        With `ordered` false, the same k memories may come in any order (for a caller
        that scores them all anyway: sorting them cost a search ~60-80 µs)."""
        ...

    def similarities(
        self, filters: Filters, vector: Vector, memory_ids: Sequence[str]
    ) -> dict[str, float]:
        """Cosine of `vector` to each of the given memories (those visible under filters)."""
        ...

    def candidates(self, filters: Filters, vectors: Sequence[Vector], wanted: Sequence[int],
                   include: Collection[str]) -> Candidates:
        """What a search scores: the union of each vector's `nearest` (`wanted[v]` of the
        v-th) and every id of `include` (a search's keyword hits, visible or not), each
        with its similarity to every vector and its rank fields (as `rank_columns`, with
        `filters` as the scope hint). `compose_candidates` builds it from those methods; a
        store may answer in one pass over what it holds."""
        ...

    def keyword_search(
        self, filters: Filters, query: str, k: int
    ) -> builtins.list[tuple[str, float]]:
        """Up to k visible memories by BM25 (higher is better), best first."""
        ...

    def list(
        self, filters: Filters, limit: int, offset: int
    ) -> tuple[builtins.list[MemoryRecord], int]:
        """Visible memories, newest first, and how many there are in all."""
        ...

    def history(self, tenant_id: str, memory_id: str) -> builtins.list[HistoryEvent]: ...

    def iter_all(self, tenant_id: str | None = None) -> Iterator[StoredMemory]: ...

    def iter_history(self, tenant_id: str | None = None) -> Iterator[HistoryEvent]:
        """Every history event (deleted memories' too), in write order within a tenant."""
        ...

    def insert_raw(
        self, memories: Sequence[StoredMemory], events: Sequence[HistoryEvent]
    ) -> None:
        """Write memories exactly as given (row, vector, full-text; no event of their own)
        and append the given history events, in one transaction. For copying a store
        (storage/copy.py): no checks beyond the store's own constraints."""
        ...

    def stats(self) -> dict[str, Any]: ...

    def apply_access(self, tenant_id: str, updates: Sequence[AccessUpdate],
                     events: Sequence[HistoryEvent] = ()) -> None:
        """Add read counts and set the lifecycle values the core computed, in one
        transaction, touching no other column (a concurrent update keeps its changes)."""
        ...

    def expired_ids(self, now: datetime, limit: int) -> builtins.list[tuple[str, str]]:
        """(tenant_id, id) of rows whose expires_at <= now, oldest expiry first."""
        ...

    def add_relation(self, relation: Relation) -> None: ...

    def relations(self, tenant_id: str, memory_id: str) -> builtins.list[Relation]:
        """Relations from or to a memory, oldest first."""
        ...

    def count_active(self, tenant_id: str, now: datetime) -> int:
        """Active, unexpired memories of a tenant (for plan limits)."""
        ...

    # -- tenants, API keys, idempotency (the server's; no rules here either) ---------

    def put_tenant(self, tenant: Tenant) -> None:
        """Create or replace a tenant."""
        ...

    def get_tenant(self, tenant_id: str) -> Tenant | None: ...

    def list_tenants(self) -> builtins.list[Tenant]: ...

    def put_key(self, key: ApiKey) -> None:
        """Create or replace an API key record."""
        ...

    def get_key_by_hash(self, key_hash: str) -> ApiKey | None: ...

    def list_keys(self, tenant_id: str | None = None) -> builtins.list[ApiKey]: ...

    def get_idempotent(self, tenant_id: str, key: str) -> IdempotentResponse | None: ...

    def put_idempotent(self, response: IdempotentResponse) -> bool:
        """Store the first response for an idempotency key; False if one is already there."""
        ...

    def purge_idempotent(self, before: datetime) -> int: ...

    def close(self) -> None: ...


def compose_candidates(store: Store, filters: Filters, vectors: Sequence[Vector],
                       wanted: Sequence[int], include: Collection[str]) -> Candidates:
    """`Store.candidates` from `nearest`, `similarities` and `rank_columns` (ids sorted)."""
    # the included ids are scored in the same pass as the nearest
    dense = [dict(store.nearest(filters, vector, n, include=include, ordered=False))
             for vector, n in zip(vectors, wanted, strict=True)]
    pool = set(include).union(*dense)
    for vector, sims in zip(vectors, dense, strict=True):
        missing = [mid for mid in pool if mid not in sims]
        if missing:
            sims.update(store.similarities(filters, vector, missing))
    ids = sorted(pool)
    n = len(ids)
    return Candidates(
        ids,
        [np.fromiter((sims.get(mid, 0.0) for mid in ids), np.float64, n) for sims in dense],
        store.rank_columns(filters.tenant_id, ids, scope=filters))
