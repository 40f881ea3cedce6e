"""Copy everything a store holds into another one (`engram migrate --from ... --to ...`).

    from engramdb.api import open_store
    from engramdb.storage.copy import copy_store

    report = copy_store(open_store("sqlite:///engram.db"),
                        open_store("postgresql://engram@db/engram"),
                        progress=lambda done, total, phase: print(phase, done, total))

What moves: tenants, API keys, memories (rows and vectors, with their ids, timestamps,
statuses and every other field), relations and history events (deleted memories' too).
Idempotency records do not: they are replies to recent retries and expire within a day.

Both stores are migrated first; the destination is bound to the source's embedding model and
must hold no memories and no history yet. After the copy, both stores are read again and
compared per tenant: counts and a fingerprint of every memory (all fields and the vector's
bytes), of the history (in order) and of tenants, keys and relations. Any difference raises
CopyMismatch; nothing is deleted either way.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np

from ..errors import StoreError
from ..models import HistoryEvent, MemoryRecord, Relation
from .base import Store, StoredMemory

__all__ = [
    "CopyMismatch",
    "CopyReport",
    "Progress",
    "TenantFingerprint",
    "copy_store",
    "fingerprints",
]

#: progress(done, total, phase); phase is one of PHASES
Progress = Callable[[int, int, str], None]
PHASES = ("tenants", "keys", "memories", "relations", "history", "verify")

T = TypeVar("T")


class CopyMismatch(StoreError):
    """The destination does not hold what the source holds."""


@dataclass(frozen=True, slots=True)
class TenantFingerprint:
    memories: int
    memories_digest: str
    history_events: int
    history_digest: str


@dataclass(frozen=True, slots=True)
class CopyReport:
    tenants: int
    keys: int
    memories: int
    relations: int
    history_events: int
    #: per tenant id: counts and digests, equal in both stores
    fingerprints: dict[str, TenantFingerprint]
    seconds: float


def copy_store(src: Store, dst: Store, *, progress: Progress | None = None,
               batch_size: int = 500, verify: bool = True) -> CopyReport:
    """Copy all of `src` into the empty `dst`, then check that both hold the same."""
    started = time.monotonic()
    report: Progress = progress or (lambda done, total, phase: None)
    src.migrate()
    dst.migrate()
    binding = src.embedding_binding()
    if binding is not None:
        dst.bind_embedding(*binding)
    held = dst.stats()
    if held.get("memories") or held.get("history_events"):
        raise StoreError(
            f"the destination already holds {held.get('memories', 0)} memories and "
            f"{held.get('history_events', 0)} history events: copy into an empty database"
        )
    src_stats = src.stats()

    tenants = src.list_tenants()
    for i, tenant in enumerate(tenants, 1):
        dst.put_tenant(tenant)
        report(i, len(tenants), "tenants")
    keys = src.list_keys()
    for i, key in enumerate(keys, 1):
        dst.put_key(key)
        report(i, len(keys), "keys")

    total = int(src_stats.get("memories", 0))
    relations: set[Relation] = set()
    copied = 0
    report(0, total, "memories")
    # a store that builds its vector index faster after a load than during it says so
    bulk = getattr(dst, "bulk_load", None)
    with bulk() if callable(bulk) else nullcontext():
        for batch in _batches(src.iter_all(), batch_size):
            dst.insert_raw(batch, [])
            for m in batch:
                relations.update(src.relations(m.record.tenant_id, m.record.id))
            copied += len(batch)
            report(copied, max(total, copied), "memories")

    ordered = sorted(relations, key=lambda r: (r.created_at, r.tenant_id, r.from_id, r.to_id,
                                               r.kind))
    for i, rel in enumerate(ordered, 1):
        dst.add_relation(rel)
        report(i, len(ordered), "relations")

    events_total = int(src_stats.get("history_events", 0))
    events = 0
    report(0, events_total, "history")
    for chunk in _batches(src.iter_history(), batch_size * 4):
        dst.insert_raw([], chunk)
        events += len(chunk)
        report(events, max(events_total, events), "history")

    prints: dict[str, TenantFingerprint] = {}
    if verify:
        prints = _verify(src, dst, relations=ordered, total=copied + events, report=report)
    return CopyReport(tenants=len(tenants), keys=len(keys), memories=copied,
                      relations=len(ordered), history_events=events, fingerprints=prints,
                      seconds=time.monotonic() - started)


def _batches(items: Iterable[T], n: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


# -- verification ---------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def memory_digest(m: StoredMemory) -> bytes:
    """sha256 over every field of the record (times in UTC) and the vector's float32 bytes."""
    rec = m.record
    doc = {f.name: _plain(getattr(rec, f.name)) for f in fields(MemoryRecord)}
    h = hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False,
                                  default=str).encode())
    h.update(b"\x00vector\x00")
    if m.vector is not None:
        h.update(np.ascontiguousarray(m.vector, dtype="<f4").tobytes())
    return h.digest()


def event_digest(e: HistoryEvent) -> bytes:
    doc = {"id": e.id, "memory_id": e.memory_id, "tenant_id": e.tenant_id, "event": e.event,
           "at": _plain(e.at), "actor": e.actor, "changes": e.changes}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False,
                                     default=str).encode()).digest()


def fingerprints(store: Store,
                 tick: Callable[[], None] | None = None) -> dict[str, TenantFingerprint]:
    """Per tenant: how many memories and events the store holds, a digest of the memories
    (independent of their order) and of the history (in write order)."""
    mem: dict[str, list[int]] = {}
    for m in store.iter_all():
        acc = mem.setdefault(m.record.tenant_id, [0, 0])
        acc[0] += 1
        acc[1] = (acc[1] + int.from_bytes(memory_digest(m), "big")) % (1 << 256)
        if tick:
            tick()
    hist: dict[str, tuple[int, Any]] = {}
    for e in store.iter_history():
        n, h = hist.get(e.tenant_id, (0, hashlib.sha256()))
        h.update(event_digest(e))
        hist[e.tenant_id] = (n + 1, h)
        if tick:
            tick()
    out = {}
    for tenant in sorted(set(mem) | set(hist)):
        count, total = mem.get(tenant, [0, 0])
        events, h = hist.get(tenant, (0, hashlib.sha256()))
        out[tenant] = TenantFingerprint(count, f"{total:064x}", events, h.hexdigest())
    return out


def _verify(src: Store, dst: Store, *, relations: list[Relation], total: int,
            report: Progress) -> dict[str, TenantFingerprint]:
    problems: list[str] = []
    if {t.id: t for t in src.list_tenants()} != {t.id: t for t in dst.list_tenants()}:
        problems.append("tenants differ")
    if ({(k.tenant_id, k.id): k for k in src.list_keys()}
            != {(k.tenant_id, k.id): k for k in dst.list_keys()}):
        problems.append("API keys differ")
    missing = [r for r in relations if r not in dst.relations(r.tenant_id, r.from_id)]
    if missing:
        problems.append(f"{len(missing)} relations missing")

    done = 0
    whole = 2 * total

    def tick() -> None:
        nonlocal done
        done += 1
        if done % 1000 == 0 or done == whole:
            report(done, max(whole, done), "verify")

    before = fingerprints(src, tick)
    after = fingerprints(dst, tick)
    report(whole, whole, "verify")
    for tenant in sorted(set(before) | set(after)):
        a, b = before.get(tenant), after.get(tenant)
        if a != b:
            problems.append(f"tenant {tenant!r}: source {a}, destination {b}")
    if problems:
        raise CopyMismatch("the copy does not match its source: " + "; ".join(problems))
    return before
