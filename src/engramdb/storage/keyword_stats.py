"""Tenant-wide word statistics for keyword idf, shared by both stores.

Both stores score keyword hits by BM25 with term frequencies from the rows of the scope (a
user) and idf from the whole tenant: idf = ln(1 + (n − df + 0.5) / (df + 0.5)), n the
tenant's rows and df those with the word. A user's few hundred memories estimate how telling
a word is worse than the tenant does (docs/architecture.md, the keyword index).

Counting a word's rows walks its postings across the tenant: ~1 ms for a common word at
100k rows on SQLite, up to a second at 1M on PostgreSQL. So small tenants (below
EXACT_ROWS) are counted on every query, exactly; up to INLINE_ROWS a word is counted when a
query first needs it (cheap there) and kept for TTL seconds. Above that a query never waits
for a count: a word not counted yet gets `None` (the store then falls back to the idf it
can compute from the scope alone) and is counted by a background thread, and counts older
than TTL are served while they are counted again. Idf moves slowly; a stale count shifts scores a
little, never which rows match.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("engram.storage")

#: Tenants with fewer rows are counted on every query.
EXACT_ROWS = 1_000
#: Tenants with fewer rows count a word when a query first needs it; larger ones count it in
#: the background (~1 ms per common word at 100k rows on SQLite, more on PostgreSQL).
INLINE_ROWS = 50_000
#: How long a larger tenant's counts are used before they are counted again, in seconds.
TTL = 60.0
#: At most this many words' counts are kept per tenant.
MAX_WORDS = 50_000


def idf(n: int, df: int) -> float:
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


@dataclass
class _Tenant:
    rows: int
    counted_at: float
    refreshing: bool = False
    # word -> (rows with it, when counted)
    words: dict[str, tuple[int, float]] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)


class TenantWordStats:
    """Per-process counts of each tenant's rows and rows per word.

    `count_rows(tenant)` and `count_word(tenant, word)` are the store's; they must get their
    own connection, as they also run on the background thread.
    """

    def __init__(self, count_rows: Callable[[str], int],
                 count_word: Callable[[str, str], int]) -> None:
        self._count_rows = count_rows
        self._count_word = count_word
        self._lock = threading.Lock()
        self._tenants: dict[str, _Tenant] = {}
        self._queue: queue.Queue[tuple[str, str | None] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def idf(self, tenant_id: str, words: Sequence[str]) -> dict[str, float | None]:
        """Each word's tenant idf, or None for a word of a large tenant not counted yet."""
        now = time.monotonic()
        with self._lock:
            t = self._tenants.get(tenant_id)
        if t is None:
            rows = self._count_rows(tenant_id)
            if rows < EXACT_ROWS:
                return {w: idf(rows, self._count_word(tenant_id, w)) for w in words}
            with self._lock:
                t = self._tenants.setdefault(tenant_id, _Tenant(rows, now))
        if t.rows < INLINE_ROWS:
            return self._inline(tenant_id, t, words, now)
        out: dict[str, float | None] = {}
        with self._lock:
            if now - t.counted_at > TTL and not t.refreshing:
                t.refreshing = True
                self._submit(tenant_id, None)
            for w in words:
                known = t.words.get(w)
                stale = known is None or now - known[1] > TTL
                if stale and w not in t.pending and len(t.words) < MAX_WORDS:
                    t.pending.add(w)
                    self._submit(tenant_id, w)
                out[w] = None if known is None else idf(t.rows, known[0])
        return out

    def _inline(self, tenant_id: str, t: _Tenant, words: Sequence[str],
                now: float) -> dict[str, float | None]:
        """A mid-sized tenant: count what is missing or stale now, in the caller's thread."""
        if now - t.counted_at > TTL:
            rows = self._count_rows(tenant_id)
            with self._lock:
                t.rows, t.counted_at = rows, now
        out: dict[str, float | None] = {}
        for w in words:
            with self._lock:
                known = t.words.get(w)
            if known is None or now - known[1] > TTL:
                known = (self._count_word(tenant_id, w), now)
                with self._lock:
                    if len(t.words) < MAX_WORDS:
                        t.words[w] = known
            out[w] = idf(t.rows, known[0])
        return out

    def _submit(self, tenant_id: str, word: str | None) -> None:
        """Queue a count (lock held); word None = the tenant's rows."""
        if self._closed:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="engram-word-stats",
                                            daemon=True)
            self._thread.start()
        self._queue.put((tenant_id, word))

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            tenant_id, word = job
            try:
                count = (self._count_rows(tenant_id) if word is None
                         else self._count_word(tenant_id, word))
            except Exception as exc:  # a closed store, a dropped connection: try later
                log.debug("word statistics: counting failed: %s", exc)
                count = None
            with self._lock:
                t = self._tenants.get(tenant_id)
                if t is not None:
                    if word is None:
                        t.refreshing = False
                        if count is not None:
                            t.rows, t.counted_at = count, time.monotonic()
                    else:
                        t.pending.discard(word)
                        if count is not None:
                            t.words[word] = (count, time.monotonic())
            self._queue.task_done()
        self._queue.task_done()

    def wait(self) -> None:
        """Until every queued count is done (for tests and benchmarks)."""
        if self._thread is not None:
            self._queue.join()

    def close(self) -> None:
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
