"""Micro-batching: concurrent ``embed`` calls share model runs.

Every model run pays a fixed cost (about 2-3 ms on one thread for MiniLM, the price of
some ten token positions) besides its per-token work, and concurrent runs would compete
for the same cores anyway. So one worker thread drains whatever is queued, runs it as a
single batch and hands every caller its own rows.

A lone caller is served at once, in its own thread when the model is idle and nothing is
queued (the hop to the worker and back cost 0.4-1.1 ms of a ~5 ms query). Only when the
previous batch served several callers, who are likely to be back any moment, does the
worker wait up to ``max_wait_ms`` for them: without that, the first of them to return
would always run alone.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from engramdb.embeddings.base import Embedder, EmbedResult, Vectors

__all__ = ["BatcherStats", "MicroBatcher"]

#: How many recent batch sizes stats() reports, for a cheap view of current load.
RECENT_BATCHES = 256


@dataclass(eq=False)
class _Request:
    texts: list[str]
    vectors: Vectors
    tokens: list[int]
    #: Index of the first text not yet handed to the worker.
    next: int = 0
    #: Texts not yet embedded; the request is complete at 0.
    remaining: int = 0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


# (request, start, stop): the slice texts[start:stop] of a request within one batch.
_Piece = tuple[_Request, int, int]


@dataclass(frozen=True, slots=True)
class BatcherStats:
    """A consistent snapshot of the batcher's counters since it started."""

    batches: int
    texts: int
    requests: int
    failed_requests: int
    queued_requests: int
    #: Exact batch size → number of batches of that size (sizes are <= max_batch).
    batch_sizes: dict[int, int]
    #: The sizes of the last RECENT_BATCHES batches, oldest first.
    recent_batch_sizes: tuple[int, ...]
    #: Batches run in the caller's own thread (a lone caller, model idle).
    inline_batches: int = 0

    @property
    def mean_batch_size(self) -> float:
        return self.texts / self.batches if self.batches else 0.0


class MicroBatcher:
    """An Embedder that coalesces concurrent calls to ``inner`` through one worker thread.

    Batches hold at most ``max_batch`` texts. A request larger than that is embedded a
    slice at a time and goes to the back of the queue after each slice, so a bulk import
    cannot hold a waiting search query for longer than one batch.

    If a shared batch fails, its requests are retried one by one, so an error reaches
    only the caller whose texts caused it, and the batcher carries on.
    """

    def __init__(
        self,
        inner: Embedder,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 1.0,
        close_inner: bool = True,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.model_name: str = inner.model_name
        self.dimension: int = inner.dimension
        self.max_batch = max_batch
        self._inner = inner
        self._max_wait = max_wait_ms / 1000.0
        self._close_inner = close_inner
        self._inner_closed = False
        # How many requests the last batch finished; the worker lingers for that many.
        self._last_callers = 0
        # True while the worker or a caller (inline) runs the model: one run at a time.
        self._busy = False
        self._inline = 0
        self.idle_wakeups = 0  # times the idle worker was woken for nothing (for tests)

        self._cond = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._closed = False
        self._broken: BaseException | None = None

        self._batches = 0
        self._texts = 0
        self._requests = 0
        self._failed = 0
        self._sizes: Counter[int] = Counter()
        self._recent: deque[int] = deque(maxlen=RECENT_BATCHES)

        # Daemon, so a process that forgets close() still exits; close() drains first.
        self._thread = threading.Thread(target=self._work, name="engram-embed-batcher", daemon=True)
        self._thread.start()

    # -- callers' side -------------------------------------------------------------

    def embed(self, texts: Sequence[str]) -> EmbedResult:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single str")
        # Checked here, in the caller's thread, so a bad argument never enters a batch.
        batch = list(texts)
        for i, text in enumerate(batch):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
        if not batch:
            return EmbedResult(vectors=np.empty((0, self.dimension), np.float32), tokens=[])
        if threading.current_thread() is self._thread:
            # The worker would wait for itself forever.
            raise RuntimeError("MicroBatcher.embed called from its own worker thread")

        if len(batch) <= self.max_batch and self._claim_inline():
            return self._run_inline(batch)
        # A request larger than a batch is cut into slices in order: sort it by length
        # first (characters stand in for tokens), so each slice pads little. On mixed
        # memories this halves the padded work of an add_many (2.18x -> 1.16x real tokens).
        order: list[int] | None = None
        if len(batch) > self.max_batch:
            order = sorted(range(len(batch)), key=lambda i: len(batch[i]))
            batch = [batch[i] for i in order]
        request = _Request(
            texts=batch,
            vectors=np.empty((len(batch), self.dimension), dtype=np.float32),
            tokens=[0] * len(batch),
            remaining=len(batch),
        )
        with self._cond:
            if self._closed:
                raise RuntimeError("embedder is closed")
            if self._broken is not None:
                raise RuntimeError("embedding worker died") from self._broken
            self._queue.append(request)
            self._cond.notify()
        request.done.wait()
        if request.error is not None:
            raise request.error
        if order is None:
            return EmbedResult(vectors=request.vectors, tokens=request.tokens)
        vectors = np.empty_like(request.vectors)
        vectors[order] = request.vectors
        tokens = [0] * len(order)
        for pos, i in enumerate(order):
            tokens[i] = request.tokens[pos]
        return EmbedResult(vectors=vectors, tokens=tokens)

    def _claim_inline(self) -> bool:
        """Take the idle model for this caller's thread: nothing queued, nothing running,
        and no callers of a shared batch about to come back."""
        with self._cond:
            if self._closed or self._broken is not None or self._queue or self._busy \
                    or self._last_callers > 1:
                return False
            self._busy = True
            return True

    def _run_inline(self, batch: list[str]) -> EmbedResult:
        ok = False
        try:
            result = self._embed_checked(batch)
            ok = True
            return result
        finally:
            with self._cond:
                self._busy = False
                if ok:
                    # _last_callers stays: if a shared batch ran just before, its callers
                    # are still due back and the worker must go on waiting for them
                    self._count_batch(len(batch), 1)
                    self._inline += 1
                else:
                    self._failed += 1
                # Only a worker holding queued requests waits for the model (`_busy`); an
                # idle one waits for the queue and would wake for nothing after every lone
                # query (a core's wake-up each time; no latency change measured).
                if self._queue:
                    self._cond.notify_all()

    def _embed_checked(self, texts: list[str]) -> EmbedResult:
        result = self._inner.embed(texts)
        # Rows are matched to callers by position alone, so a short or misshapen answer
        # must fail loudly rather than hand someone another caller's vector.
        if result.vectors.shape != (len(texts), self.dimension) \
                or len(result.tokens) != len(texts):
            raise RuntimeError(
                f"inner embedder returned {result.vectors.shape} vectors and "
                f"{len(result.tokens)} token counts for {len(texts)} texts"
            )
        return result

    def _count_batch(self, texts: int, finished: int) -> None:
        """Stats of one model run (lock held)."""
        self._batches += 1
        self._texts += texts
        self._requests += finished
        self._sizes[texts] += 1
        self._recent.append(texts)

    def close(self, timeout: float | None = None) -> None:
        """Stop taking requests, finish the queued ones, stop the worker, close inner."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if self._close_inner and not self._inner_closed and not self._thread.is_alive():
            self._inner_closed = True
            self._inner.close()

    def stats(self) -> BatcherStats:
        with self._cond:
            return BatcherStats(
                batches=self._batches,
                texts=self._texts,
                requests=self._requests,
                failed_requests=self._failed,
                queued_requests=len(self._queue),
                batch_sizes=dict(self._sizes),
                recent_batch_sizes=tuple(self._recent),
                inline_batches=self._inline,
            )

    @property
    def closed(self) -> bool:
        return self._closed

    # -- worker's side -------------------------------------------------------------

    def _work(self) -> None:
        pieces: list[_Piece] = []
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closed:
                        self._cond.wait()
                        if not self._queue and not self._closed:
                            self.idle_wakeups += 1
                    if not self._queue:
                        return  # closed and drained
                    self._linger()
                    while self._busy:  # a caller runs the model inline
                        self._cond.wait()
                    pieces = self._take()
                    self._busy = bool(pieces)
                if pieces:
                    try:
                        self._run(pieces)
                    finally:
                        with self._cond:
                            self._busy = False
                            self._cond.notify_all()
                pieces = []
        except BaseException as exc:
            # A bug here must not leave callers blocked forever: fail everyone in flight
            # or waiting, and refuse new work.
            with self._cond:
                self._broken = exc
                pending = [request for request, _, _ in pieces]
                pending.extend(self._queue)
                self._queue.clear()
            for request in pending:
                died = RuntimeError("embedding worker died")
                died.__cause__ = exc
                self._fail(request, died)
            raise

    def _linger(self) -> None:
        """Give the callers of the previous batch up to max_wait_ms to come back and
        share this one. Called with the lock held; wait() releases it meanwhile."""
        if self._max_wait <= 0:
            return
        deadline = time.monotonic() + self._max_wait
        while (
            not self._closed
            and len(self._queue) < self._last_callers
            and self._queued_texts() < self.max_batch
        ):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _queued_texts(self) -> int:
        return sum(len(r.texts) - r.next for r in self._queue if not r.done.is_set())

    def _take(self) -> list[_Piece]:
        """Pop up to max_batch texts off the queue, oldest request first (lock held)."""
        pieces: list[_Piece] = []
        budget = self.max_batch
        while self._queue and budget > 0:
            request = self._queue.popleft()
            if request.done.is_set():
                continue  # an earlier slice failed; the caller already has its error
            start = request.next
            stop = min(len(request.texts), start + budget)
            pieces.append((request, start, stop))
            request.next = stop
            budget -= stop - start
            if stop < len(request.texts):
                self._queue.append(request)  # round robin: the rest waits its turn
        return pieces

    def _run(self, pieces: list[_Piece]) -> None:
        texts = [t for request, start, stop in pieces for t in request.texts[start:stop]]
        try:
            result = self._embed_checked(texts)
        except Exception as exc:
            if len(pieces) == 1:
                self._fail(pieces[0][0], exc)
            else:
                for piece in pieces:
                    self._run([piece])
            return

        row = 0
        finished = 0
        for request, start, stop in pieces:
            n = stop - start
            request.vectors[start:stop] = result.vectors[row : row + n]
            request.tokens[start:stop] = result.tokens[row : row + n]
            row += n
            request.remaining -= n
            if request.remaining == 0:
                finished += 1
                request.done.set()
        with self._cond:
            self._count_batch(len(texts), finished)
            self._last_callers = finished

    def _fail(self, request: _Request, exc: BaseException) -> None:
        if request.done.is_set():
            return
        request.error = exc
        request.done.set()
        with self._cond:
            self._failed += 1

    def __repr__(self) -> str:
        return f"MicroBatcher({self._inner!r}, max_batch={self.max_batch})"
