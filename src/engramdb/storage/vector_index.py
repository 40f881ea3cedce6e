"""Exact vector search over an in-memory matrix per user scope.

One Partition holds the vectors of one (tenant, user) and the few attributes that filters
need most (agent, session, namespace, status, expiry), so a filtered search is one matrix-vector
product and a boolean mask: for a typical user well under a millisecond."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

#: "no filter on this attribute" (None is a real value: a memory without agent or session).
ANY: Any = object()


@dataclass(frozen=True, slots=True)
class HeldFilters:
    """The filters a partition can check by itself (the store derives them from Filters):
    rows expiring at or before `now` are out, inactive rows unless `include_inactive`, and
    agent, session and namespace must equal the value unless it is ANY."""

    now: float = -math.inf
    agent: Any = ANY
    session: Any = ANY
    namespace: Any = ANY
    include_inactive: bool = True

    def admits(self, expires: float, active: bool, agent: str | None, session: str | None,
               namespace: str) -> bool:
        """Whether one row passes (Partition checks whole columns the same way)."""
        return (expires > self.now and (self.include_inactive or active)
                and (self.agent is ANY or agent == self.agent)
                and (self.session is ANY or session == self.session)
                and (self.namespace is ANY or namespace == self.namespace))


#: No filter at all.
NO_FILTERS = HeldFilters()


class Partition:
    __slots__ = ("active", "agent", "dim", "expires", "ids", "mat", "n", "namespace",
                 "pos", "rowids", "session", "version")

    def __init__(self, dim: int, capacity: int = 16, version: int = 0) -> None:
        self.dim = dim
        self.n = 0
        self.version = version
        cap = max(capacity, 16)
        self.mat = np.empty((cap, dim), dtype=np.float32)
        self.rowids = np.empty(cap, dtype=np.int64)
        self.ids = np.empty(cap, dtype=object)
        self.agent = np.empty(cap, dtype=object)
        self.session = np.empty(cap, dtype=object)
        self.namespace = np.empty(cap, dtype=object)
        self.active = np.empty(cap, dtype=bool)
        self.expires = np.empty(cap, dtype=np.float64)
        self.pos: dict[str, int] = {}  # memory id -> row

    def _grow(self) -> None:
        cap = self.mat.shape[0] * 2
        for name in ("mat", "rowids", "ids", "agent", "session", "namespace", "active",
                     "expires"):
            old = getattr(self, name)
            new = np.empty((cap, *old.shape[1:]), dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def upsert(self, rowid: int, memory_id: str, vector: F32 | None, agent: str | None,
               session: str | None, namespace: str, active: bool,
               expires_at: float | None) -> None:
        i = self.pos.get(memory_id)
        if i is None:
            if vector is None:
                return  # nothing to search by
            if self.n == self.mat.shape[0]:
                self._grow()
            i = self.n
            self.n += 1
            self.pos[memory_id] = i
            self.rowids[i] = rowid
        if vector is not None:
            self.mat[i] = vector
        self.ids[i] = memory_id
        self.agent[i] = agent
        self.session[i] = session
        self.namespace[i] = namespace
        self.active[i] = active
        self.expires[i] = math.inf if expires_at is None else expires_at

    def remove(self, memory_id: str) -> None:
        i = self.pos.pop(memory_id, None)
        if i is None:
            return
        last = self.n - 1
        if i != last:  # move the last row into the hole
            for arr in (self.mat, self.rowids, self.ids, self.agent, self.session,
                        self.namespace, self.active, self.expires):
                arr[i] = arr[last]
            self.pos[self.ids[i]] = i
        self.n = last

    def _visible(self, rows: slice | npt.NDArray[np.intp], count: int,
                 held: HeldFilters) -> npt.NDArray[np.bool_]:
        """Which of the given rows pass the filters held here."""
        mask = self.expires[rows] > held.now
        if not held.include_inactive:
            mask &= self.active[rows]
        for value, column in ((held.agent, self.agent), (held.session, self.session),
                              (held.namespace, self.namespace)):
            if value is not ANY:
                mask &= np.fromiter((v == value for v in column[rows]), dtype=bool,
                                    count=count)
        return mask

    def similarities(self, query: F32, memory_ids: Iterable[str],
                     held: HeldFilters = NO_FILTERS) -> dict[str, float]:
        """Cosine of the query to the given memories, for those held here that pass the
        filters."""
        found = [(mid, i) for mid in memory_ids if (i := self.pos.get(mid)) is not None]
        if not found:
            return {}
        rows = np.fromiter((i for _, i in found), dtype=np.intp, count=len(found))
        mask = self._visible(rows, len(found), held)
        sims = self.mat[rows[mask]] @ query
        kept = [mid for (mid, _), ok in zip(found, mask, strict=True) if ok]
        return {mid: float(s) for mid, s in zip(kept, sims, strict=True)}

    def search(self, query: F32, k: int, held: HeldFilters = NO_FILTERS, *,
               allowed: Iterable[int] | None = None,
               exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        n = self.n
        if n == 0 or k <= 0:
            return []
        mask = self._visible(slice(0, n), n, held)
        if allowed is not None:
            mask &= np.isin(self.rowids[:n], np.fromiter(allowed, dtype=np.int64))
        for mid in exclude:
            if (i := self.pos.get(mid)) is not None:
                mask[i] = False
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return []
        # One product over the whole partition beats gathering the masked rows first.
        sims = (self.mat[:n] @ query)[idx]
        cand = idx
        if sims.size > k:
            top = np.argpartition(-sims, k - 1)[:k]
            top = top[np.argsort(-sims[top], kind="stable")]
        else:
            top = np.argsort(-sims, kind="stable")
        return [(self.ids[cand[j]], float(sims[j])) for j in top]
