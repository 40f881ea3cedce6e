"""The WHERE clause of a filtered read, once for both stores.

Which filters exist and what they mean (exact scope, expiry, status, decayed relevance, tags,
metadata, time range) is decided here; a `Dialect` only says how its SQL spells a
placeholder, a time, a list, a tag and a metadata comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from .base import Filters


class Dialect(Protocol):
    #: The parameter placeholder ("?" or "%s").
    mark: str
    #: The decayed relevance of row `m` at a time given as one parameter (lifecycle.py's
    #: formula, pinned memories excepted).
    relevance: str
    #: The column of row `m`'s tier (SQLite keeps it apart, with the other fields that
    #: reads change: `a`, joined when the clause names it).
    tier: str

    def time(self, dt: datetime) -> Any:
        """A time as the memories table stores it."""
        ...

    def any_of(self, column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
        """`column` is one of the values."""
        ...

    def tags(self, tags: Sequence[str]) -> list[tuple[str, list[Any]]]:
        """The row carries every one of the tags."""
        ...

    def metadata(self, key: str, value: Any) -> tuple[str, list[Any]]:
        """The row's metadata has `key` equal to `value` (any JSON value)."""
        ...


def where(f: Filters, d: Dialect) -> tuple[str, list[Any]]:
    """SQL (over `memories m`, and the dialect's tier and relevance) and its parameters
    for the filters."""
    p = d.mark
    sql = [f"m.tenant_id = {p}"]
    params: list[Any] = [f.tenant_id]
    if not f.include_expired:
        sql.append(f"(m.expires_at IS NULL OR m.expires_at > {p})")
        params.append(d.time(f.now))
    if f.min_relevance is not None:
        sql.append(f"{d.relevance} >= {p}")
        params.extend([d.time(f.now), f.min_relevance])
    if not f.include_superseded:
        sql.append("m.status = 'active'")
    if f.exact_scope:
        sql.append(f"m.user_key = {p} AND m.agent_key = {p}")
        params.extend([f.user_id or "", f.agent_id or ""])
    for col, val in (("user_key", None if f.exact_scope else f.user_id),
                     ("agent_id", None if f.exact_scope else f.agent_id),
                     ("session_id", f.session_id), ("namespace", f.namespace),
                     ("memory_nature", f.memory_nature), ("scope", f.scope),
                     ("domain", f.domain)):
        if val is not None:
            sql.append(f"m.{col} = {p}")
            params.append(val)
    parts: list[tuple[str, list[Any]]] = []
    for col, vals in (("m.memory_type", f.memory_types), ("m.content_type", f.content_types),
                      (d.tier, f.tiers)):
        if vals:
            parts.append(d.any_of(col, vals))
    if f.tags:
        parts += d.tags(f.tags)
    parts += [d.metadata(key, val) for key, val in f.metadata]
    for clause, values in parts:
        sql.append(clause)
        params.extend(values)
    if f.created_after is not None:
        sql.append(f"m.created_at >= {p}")
        params.append(d.time(f.created_after))
    if f.created_before is not None:
        sql.append(f"m.created_at < {p}")
        params.append(d.time(f.created_before))
    return " AND ".join(sql), params
