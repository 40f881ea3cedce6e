"""Tenant-wide word statistics for keyword idf, shared by both stores.

Both stores score keyword hits by BM25 with term frequencies from the rows of the scope (a
user) and idf from the whole tenant: idf = ln(1 + (n − df + 0.5) / (df + 0.5)), n the
tenant's rows and df those with the word. A tenant's few hundred memories of one user
estimate how telling a word is worse than the tenant does (docs/architecture.md, the
keyword index). Counting a common word's rows walks its postings across the tenant (~1 ms
per word at 100k rows), so above EXACT_ROWS rows the counts are kept for TTL seconds: idf
moves slowly, and a stale count shifts scores a little, never which rows match. Small
tenants are counted afresh on every query, so their scores are exact.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence

#: Tenants with fewer rows are counted on every query.
EXACT_ROWS = 1_000
#: How long a larger tenant's counts are reused, in seconds.
TTL = 60.0
#: At most this many words' counts are kept per tenant.
MAX_WORDS = 50_000


class TenantWordStats:
    """Per-process cache of (rows, rows per word) of each tenant."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # tenant -> (when counted, rows, {word: rows with the word})
        self._tenants: dict[str, tuple[float, int, dict[str, int]]] = {}

    def idf(self, tenant_id: str, words: Sequence[str], count_rows: Callable[[], int],
            count_word: Callable[[str], int]) -> dict[str, float]:
        now = time.monotonic()
        with self._lock:
            entry = self._tenants.get(tenant_id)
        if entry is None or now - entry[0] > TTL or entry[1] < EXACT_ROWS:
            entry = (now, count_rows(), {})
            if entry[1] >= EXACT_ROWS:
                with self._lock:
                    self._tenants[tenant_id] = entry
        _, n, counts = entry
        out = {}
        for word in words:
            df = counts.get(word)
            if df is None:
                df = count_word(word)
                if n >= EXACT_ROWS and len(counts) < MAX_WORDS:
                    counts[word] = df
            out[word] = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
        return out
