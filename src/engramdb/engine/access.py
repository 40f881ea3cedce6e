"""Access tracking off the hot path: reads are counted in memory and written in batches."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from ..ids import new_id
from ..models import AccessUpdate, HistoryEvent
from . import lifecycle

if TYPE_CHECKING:
    from ..storage.base import Store

log = logging.getLogger("engram.access")


class AccessTracker:
    """Counts reads per memory and flushes them every `interval` seconds (or when `max_pending`
    memories wait), in one transaction per tenant. Losing a second of counts in a crash is the
    price of never writing on a read."""

    def __init__(self, store: Store, interval: float = 1.0, max_pending: int = 2000) -> None:
        self.store = store
        self.interval = interval
        self.max_pending = max_pending
        self._pending: dict[tuple[str, str], tuple[int, datetime]] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and self.interval > 0:
            self._thread = threading.Thread(target=self._run, name="engram-access",
                                            daemon=True)
            self._thread.start()

    def touch(self, tenant_id: str, memory_ids: Iterable[str], at: datetime) -> None:
        with self._lock:
            for mid in memory_ids:
                prev = self._pending.get((tenant_id, mid))
                self._pending[(tenant_id, mid)] = (
                    (1, at) if prev is None else (prev[0] + 1, max(prev[1], at)))
            full = len(self._pending) >= self.max_pending
        if full:
            self._wake.set()

    def pending(self, tenant_id: str, memory_id: str) -> int:
        with self._lock:
            entry = self._pending.get((tenant_id, memory_id))
            return 0 if entry is None else entry[0]

    def flush(self) -> int:
        """Write what is pending; returns how many memories were updated."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return 0
            by_tenant: dict[str, dict[str, tuple[int, datetime]]] = {}
            for (tenant, mid), (count, at) in batch.items():
                by_tenant.setdefault(tenant, {})[mid] = (count, at)
            done = 0
            for tenant, reads in by_tenant.items():
                fields = self.store.access_fields(tenant, list(reads))
                updates: list[AccessUpdate] = []
                events: list[HistoryEvent] = []
                for mid, (count, at) in reads.items():
                    rec = fields.get(mid)
                    if rec is None:
                        continue
                    r = rec.rank
                    now_rel = lifecycle.relevance_at(r.relevance, r.decay_rate, r.pinned,
                                                     r.created, r.last_accessed,
                                                     at.timestamp())
                    tier = lifecycle.promoted_tier(rec.tier, rec.access_count + count,
                                                   r.importance)
                    updates.append(AccessUpdate(
                        id=mid, count=count, last_accessed_at=at,
                        relevance=lifecycle.refreshed(now_rel, count),
                        decay_rate=lifecycle.decay_rate(rec.memory_type, tier), tier=tier,
                    ))
                    if tier is not rec.tier:
                        events.append(HistoryEvent(
                            id=new_id(), memory_id=mid, tenant_id=tenant, event="access_tier",
                            at=at, actor=None,
                            changes={"tier": {"before": rec.tier.value, "after": tier.value},
                                     "access_count": rec.access_count + count}))
                self.store.apply_access(tenant, updates, events)
                done += len(updates)
            return done

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # a failed flush must not kill the thread
                log.exception("access flush failed")

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            self.flush()
        except Exception:
            log.exception("final access flush failed")
