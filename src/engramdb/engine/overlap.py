"""Running a short piece of the read path beside the query embedding.

A search waits ~5–8 ms for the model to embed its query, and the model releases the GIL
while it runs. The keyword search needs no vector, so it can run on a spare thread in that
time instead of after it (docs/architecture.md, "Search latency").
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Overlap:
    """A few spare threads that run a task while the caller does something else.

    `start(fn)` hands `fn` to an idle spare thread and returns a function that waits for
    its result (re-raising what it raised). When every spare thread is busy, as under a
    load of concurrent searches, or after `close`, `fn` is not queued behind them: the
    returned function runs it in the caller's own thread, so a caller never waits longer
    than it would without the overlap. `Overlap(0)` runs everything that way.
    """

    def __init__(self, workers: int = 2, name: str = "engram-overlap") -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=name)
        self._idle = threading.Semaphore(workers)
        # counts for tests and stats (unlocked: approximate when callers race)
        self.started = 0  # tasks that ran on a spare thread
        self.inline = 0  # tasks left to the caller because no spare thread was idle

    def start(self, fn: Callable[[], T]) -> Callable[[], T]:
        if not self._idle.acquire(blocking=False):
            self.inline += 1
            return fn
        try:
            future = self._pool.submit(self._run, fn)
        except RuntimeError:  # shut down
            self._idle.release()
            self.inline += 1
            return fn
        self.started += 1
        return future.result

    def _run(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        finally:
            self._idle.release()

    def close(self) -> None:
        """Let running tasks finish; later `start` calls run inline."""
        self._pool.shutdown(wait=True)
