"""The in-process Python API: `Engram(path=...)`.

    >>> from engramdb import Engram
    >>> with Engram(path="/tmp/demo.db") as mem:
    ...     mem.add("User prefers dark mode", user_id="u1").status
    <SaveStatus.SAVED: 'saved'>
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from .clock import Clock
from .embeddings.base import Embedder
from .engine.service import (
    Context,
    DuplicateCheck,
    MemoryService,
    SearchQuery,
    SessionHit,
)
from .engine.validation import NewMemory
from .errors import ValidationError
from .models import HistoryEvent, MemoryRecord, Page, Relation, SaveResult, SearchHit
from .settings import Settings
from .storage.base import Store

DEFAULT_TENANT = "default"
_NEW_FIELDS = frozenset(f.name for f in fields(NewMemory))
_QUERY_FIELDS = frozenset(f.name for f in fields(SearchQuery))


def open_store(url: str) -> Store:
    """The store for a database URL: sqlite:///path (or a bare path), or
    postgresql://user:password@host:port/dbname (PostgreSQL + pgvector; needs the
    `postgres` extra)."""
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from .storage.postgres import PostgresStore
        except ImportError as exc:
            raise ValueError(f"database_url: {exc}") from None
        return PostgresStore(url)
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
    elif "://" in url:
        scheme = url.split("://", 1)[0]
        raise ValueError(
            f"database_url: unsupported scheme {scheme!r} "
            "(use sqlite:///path or postgresql://...)"
        )
    else:
        path = url
    from .storage.sqlite import SQLiteStore

    return SQLiteStore(Path(path).expanduser())


def new_memory(data: Mapping[str, Any] | NewMemory, where: str = "") -> NewMemory:
    if isinstance(data, NewMemory):
        return data
    if not isinstance(data, Mapping):
        raise ValidationError(f"{where or 'memory'}: must be an object", field=where or None)
    unknown = set(data) - _NEW_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise ValidationError(f"{where}{name}: unknown field", field=f"{where}{name}")
    return NewMemory(**data)


class Engram:
    """An embedded memory engine on one database file (or a Store you pass)."""

    def __init__(self, path: str | Path | None = None, *, settings: Settings | None = None,
                 store: Store | None = None, embedder: Embedder | None = None,
                 clock: Clock | None = None, tenant_id: str = DEFAULT_TENANT) -> None:
        self.settings = settings or Settings()
        if store is None:
            url = str(path) if path is not None else self.settings.resolved_database_url()
            store = open_store(url)
        if embedder is None:
            from .embeddings import load_default_embedder

            embedder = load_default_embedder(self.settings)
        self._owns_embedder = True
        self.service = MemoryService(store, embedder, self.settings, clock)
        self.tenant_id = tenant_id

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        self.service.close()
        self.service.store.close()
        self.service.embedder.close()

    def __enter__(self) -> Engram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- memories ----------------------------------------------------------------------

    def add(self, content: str | None = None, **fields: Any) -> SaveResult:
        """Store a memory; returns status saved or duplicate (with the existing id)."""
        return self.service.add(self.tenant_id, new_memory({"content": content, **fields}))

    def add_many(self, items: Iterable[Mapping[str, Any] | NewMemory]) -> builtins.list[SaveResult]:
        batch = [new_memory(item, f"items[{i}].") for i, item in enumerate(items)]
        return self.service.add_many(self.tenant_id, batch)

    def get(self, memory_id: str, *, track: bool = True) -> MemoryRecord:
        """A memory by id; counts as an access unless `track=False`."""
        return self.service.get(self.tenant_id, memory_id, track=track)

    def update(self, memory_id: str, **changes: Any) -> MemoryRecord:
        return self.service.update(self.tenant_id, memory_id, changes)

    def delete(self, memory_id: str) -> None:
        self.service.delete(self.tenant_id, memory_id)

    def list(self, *, limit: int = 50, offset: int = 0, **filters: Any) -> Page:
        return self.service.list(self.tenant_id, filters, limit=limit, offset=offset)

    def search(self, query: str, *, limit: int = 10, **filters: Any) -> builtins.list[SearchHit]:
        unknown = set(filters) - _QUERY_FIELDS
        if unknown:
            name = sorted(unknown)[0]
            raise ValidationError(f"{name}: unknown search filter", field=name)
        return self.service.search(self.tenant_id,
                                   SearchQuery(query=query, limit=limit, **filters))

    def add_conversation(self, session_id: str, messages: builtins.list[dict[str, Any]],
                         **fields: Any) -> builtins.list[SaveResult]:
        """Store a transcript ({role, content, created_at?} messages) as turn memories."""
        return self.service.add_conversation(self.tenant_id, session_id, messages, **fields)

    def search_sessions(self, query: str, *, limit: int = 10, hits_per_session: int = 3,
                        **filters: Any) -> builtins.list[SessionHit]:
        """Search grouped by conversation session, best session first."""
        unknown = set(filters) - _QUERY_FIELDS
        if unknown:
            name = sorted(unknown)[0]
            raise ValidationError(f"{name}: unknown search filter", field=name)
        return self.service.search_sessions(
            self.tenant_id, SearchQuery(query=query, limit=limit, **filters), hits_per_session)

    def duplicate_check(self, content: str, **fields: Any) -> DuplicateCheck:
        return self.service.duplicate_check(
            self.tenant_id, new_memory({"content": content, **fields})
        )

    def history(self, memory_id: str) -> builtins.list[HistoryEvent]:
        return self.service.history(self.tenant_id, memory_id)

    def context(self, query: str, *, budget_tokens: int = 1000, limit: int = 10,
                **filters: Any) -> Context:
        """The best memories for `query` as a prompt-ready block within the token budget."""
        unknown = set(filters) - _QUERY_FIELDS
        if unknown:
            name = sorted(unknown)[0]
            raise ValidationError(f"{name}: unknown filter", field=name)
        return self.service.context(
            self.tenant_id, SearchQuery(query=query, limit=limit, **filters), budget_tokens)

    def forget_user(self, user_id: str) -> int:
        """Delete every memory of a user; returns how many."""
        return self.service.forget_user(self.tenant_id, user_id)

    def purge_expired(self) -> int:
        """Physically delete expired memories (they are already invisible)."""
        return self.service.purge_expired()

    def relations(self, memory_id: str) -> builtins.list[Relation]:
        return self.service.relations(self.tenant_id, memory_id)

    def flush(self) -> None:
        """Write pending access counts now (they are otherwise batched)."""
        self.service.access.flush()

    def stats(self) -> dict[str, Any]:
        return self.service.store.stats()
