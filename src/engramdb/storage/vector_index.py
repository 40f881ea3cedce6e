"""Exact vector search over an in-memory matrix per user scope.

One Partition holds the vectors of one (tenant, user) and the few attributes that filters
need most (agent, session, namespace, status, expiry), so a filtered search is one matrix-vector
product and a boolean mask: for a typical user well under a millisecond. It also holds what
ranking reads of each memory (importance, relevance, decay, pinned, times: `RankRow`), so
that a search scores its candidates without reading their rows again."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .base import Candidates, RankColumns

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

#: What ranking reads of a memory, as a partition holds it: importance, relevance,
#: decay_rate, pinned, created_at and last_accessed_at (epoch seconds; None: never read).
RankRow = tuple[float, float, float, bool, float, float | None]

#: A partition's per-row arrays.
_COLUMNS = ("mat", "rowids", "ids", "agent", "session", "namespace", "active", "expires",
            "importance", "relevance", "decay", "pinned", "created", "accessed")


class Partition:
    """The vectors, filter attributes and rank fields of one (tenant, user).

    `version` and `access_version` are the versions of the scope's rows that the partition
    holds (the store's `partitions` table): a write bumps the first, an access flush (which
    changes only rank fields) the second."""

    __slots__ = ("access_version", "accessed", "active", "agent", "created", "decay", "dim",
                 "expires", "ids", "importance", "mat", "n", "n_active", "n_expiring", "n_unranked",
                 "namespace", "pinned", "pos", "relevance", "rowids", "rows", "rows_filled",
                 "session", "version")

    def __init__(self, dim: int, capacity: int = 16, version: int = 0,
                 access_version: int = 0) -> None:
        self.dim = dim
        self.n = 0
        # Rows [0, n_active) are the active ones, the rest inactive (superseded...): a
        # search without them multiplies only that block. Superseded rows were 37 % of the
        # largest bench user's, and the product reads its rows from memory after the model.
        self.n_active = 0
        # rows with an expiry: with none (as a rule) and no agent, session or namespace
        # filter, every row of a block passes and a search builds no mask (~50 µs cold)
        self.n_expiring = 0
        # rows held without their rank fields (importance NaN): with none, as a rule, a
        # search need not look for them
        self.n_unranked = 0
        self.version = version
        self.access_version = access_version
        cap = max(capacity, 16)
        self.mat = np.empty((cap, dim), dtype=np.float32)
        self.rowids = np.empty(cap, dtype=np.int64)
        self.ids = np.empty(cap, dtype=object)
        self.agent = np.empty(cap, dtype=object)
        self.session = np.empty(cap, dtype=object)
        self.namespace = np.empty(cap, dtype=object)
        self.active = np.empty(cap, dtype=bool)
        self.expires = np.empty(cap, dtype=np.float64)
        # rank fields; importance NaN: not known here (the store reads the row instead)
        self.importance = np.empty(cap, dtype=np.float64)
        self.relevance = np.empty(cap, dtype=np.float64)
        self.decay = np.empty(cap, dtype=np.float64)
        self.pinned = np.empty(cap, dtype=bool)
        self.created = np.empty(cap, dtype=np.float64)
        self.accessed = np.empty(cap, dtype=np.float64)  # NaN: never accessed
        self.pos: dict[str, int] = {}  # memory id -> row
        # whole database rows of some memories held here (search hits), which the store
        # reads and keeps coherent itself
        self.rows: dict[str, tuple[Any, ...]] = {}
        # whether the store has read all the active rows into `rows` once (it does that at
        # most once a partition: rows dropped later are read again one by one)
        self.rows_filled = False

    def _grow(self) -> None:
        cap = self.mat.shape[0] * 2
        for name in _COLUMNS:
            old = getattr(self, name)
            new = np.empty((cap, *old.shape[1:]), dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def upsert(self, rowid: int, memory_id: str, vector: F32 | None, agent: str | None,
               session: str | None, namespace: str, active: bool,
               expires_at: float | None, rank: RankRow | None = None) -> None:
        """Add or change a row; without `vector` only a row held already changes. Without
        `rank` the row's rank fields are unknown here."""
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
            was_active = False
        else:
            was_active = bool(self.active[i])
            self.n_expiring -= int(self.expires[i] != math.inf)
            self.n_unranked -= int(math.isnan(self.importance[i]))
        if vector is not None:
            self.mat[i] = vector
        self.ids[i] = memory_id
        self.agent[i] = agent
        self.session[i] = session
        self.namespace[i] = namespace
        self.active[i] = active
        self.expires[i] = math.inf if expires_at is None else expires_at
        self.n_expiring += int(self.expires[i] != math.inf)
        if rank is None:
            self.importance[i] = math.nan
            self.n_unranked += 1
        else:
            self._set_rank(i, rank)
        if active and not was_active:  # into the active block
            self._swap(i, self.n_active)
            self.n_active += 1
        elif was_active and not active:  # out of it
            self.n_active -= 1
            self._swap(i, self.n_active)

    def _swap(self, i: int, j: int) -> None:
        """Exchange two rows (all columns and their positions)."""
        if i == j:
            return
        for name in _COLUMNS:
            arr = getattr(self, name)
            arr[[i, j]] = arr[[j, i]]
        self.pos[self.ids[i]] = i
        self.pos[self.ids[j]] = j

    def _set_rank(self, i: int, rank: RankRow) -> None:
        importance, relevance, decay, pinned, created, accessed = rank
        self.importance[i] = importance
        self.relevance[i] = relevance
        self.decay[i] = decay
        self.pinned[i] = pinned
        self.created[i] = created
        self.accessed[i] = math.nan if accessed is None else accessed

    def set_rank(self, memory_id: str, rank: RankRow) -> None:
        """New rank fields for a row held here (others are ignored)."""
        i = self.pos.get(memory_id)
        if i is not None:
            self.n_unranked -= int(math.isnan(self.importance[i]))
            self._set_rank(i, rank)

    def touch(self, memory_id: str, relevance: float, decay: float, accessed: float) -> None:
        """An access flush's change to a row held here, as the store's UPDATE makes it:
        relevance and decay replaced, the last access the later of the two."""
        i = self.pos.get(memory_id)
        if i is None or math.isnan(self.importance[i]):
            return
        self.relevance[i] = relevance
        self.decay[i] = decay
        last = self.accessed[i]
        self.accessed[i] = accessed if math.isnan(last) else max(float(last), accessed)

    def rank_columns(self, memory_ids: Sequence[str]) -> RankColumns:
        """The rank fields of the given memories held here, as columns in the order given
        (one not held here, or held without its rank fields: not found)."""
        n = len(memory_ids)
        pos = self.pos
        rows = np.fromiter((pos.get(mid, -1) for mid in memory_ids), dtype=np.intp, count=n)
        found = rows >= 0
        rows[~found] = 0  # a row of the arrays (capacity >= 16), masked below
        importance = self.importance[rows]
        found &= importance == importance  # NaN: not known here
        every = bool(found.all())  # as a rule: then no blanking (each step costs, cold)

        def held(column: npt.NDArray[Any], blank: Any) -> npt.NDArray[Any]:
            return column[rows] if every else np.where(found, column[rows], blank)

        session = self.session[rows]
        if not every:
            session[~found] = None
            importance = np.where(found, importance, 0.0)
        return RankColumns(found, importance, held(self.relevance, 0.0),
                           held(self.decay, 0.0), held(self.pinned, False),
                           held(self.created, 0.0), held(self.accessed, math.nan),
                           session.tolist())

    def rank_rows(self, memory_ids: Iterable[str]
                  ) -> list[tuple[str, RankRow, str | None]]:
        """(id, rank fields, session) of the given memories whose rank fields are held
        here, in the order given."""
        ids = list(memory_ids)
        cols = self.rank_columns(ids)
        return [(mid, rank[:6], rank.session_id) for i, mid in enumerate(ids)
                if (rank := cols.fields(i)) is not None]

    def remove(self, memory_id: str) -> None:
        i = self.pos.get(memory_id)
        if i is None:
            return
        if self.active[i]:  # to the start of the inactive rows first
            self.n_active -= 1
            self._swap(i, self.n_active)
            i = self.n_active
        del self.pos[memory_id]
        self.n_expiring -= int(self.expires[i] != math.inf)
        self.n_unranked -= int(math.isnan(self.importance[i]))
        last = self.n - 1
        if i != last:  # move the last row into the hole
            for name in _COLUMNS:
                arr = getattr(self, name)
                arr[i] = arr[last]
            self.pos[self.ids[i]] = i
        self.n = last

    def _visible(self, rows: slice | npt.NDArray[np.intp], count: int, held: HeldFilters,
                 active_block: bool = False) -> npt.NDArray[np.bool_]:
        """Which of the given rows pass the filters held here (`active_block`: the rows
        are known to be active)."""
        mask = self.expires[rows] > held.now
        if not held.include_inactive and not active_block:
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
        """The k rows most similar to the query that pass the filters, best first."""
        return self.search_with(query, k, held, allowed=allowed, exclude=exclude)[0]

    def search_with(self, query: F32, k: int, held: HeldFilters = NO_FILTERS, *,
                    allowed: Iterable[int] | None = None, exclude: Iterable[str] = (),
                    include: Iterable[str] = (), ordered: bool = True
                    ) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """`search`, and the similarity of the rows of `include` that pass the filters but
        are not in the top k (from the same product: no second pass over the rows). With
        `ordered` false, the same top k in no particular order: right after the model, a
        sort cost ~60-80 µs even of 80 rows."""
        # only the active block, unless inactive rows may be found
        n = self.n if held.include_inactive else self.n_active
        if n == 0:
            return [], []
        plain = (self.n_expiring == 0 and held.agent is ANY and held.session is ANY
                 and held.namespace is ANY and allowed is None and not exclude)
        mask = np.ones(n, dtype=bool) if plain else self._visible(slice(0, n), n, held,
                                                                  active_block=True)
        if allowed is not None:
            mask &= np.isin(self.rowids[:n], np.fromiter(allowed, dtype=np.int64))
        for mid in exclude:
            if (i := self.pos.get(mid)) is not None and i < n:
                mask[i] = False
        # One product over the block beats gathering the masked rows first; when every
        # row passes (as a rule: expiry is rare), the product is the candidates' scores
        # (right after the model, each numpy step saved is ~5-10 µs).
        every = plain or bool(mask.all())
        idx = None if every else np.flatnonzero(mask)
        if idx is not None and idx.size == 0:
            return [], []
        full = self.mat[:n] @ query
        sims = full if idx is None else full[idx]
        if k <= 0:
            top: npt.NDArray[np.intp] | None = np.empty(0, dtype=np.intp)
        elif sims.size > k:
            top = np.argpartition(sims, sims.size - k)[sims.size - k:]
            if ordered:
                top = top[np.argsort(-sims[top], kind="stable")]
        elif ordered:
            top = np.argsort(-sims, kind="stable")
        else:
            top = None  # every row passing, as they are
        # whole arrays to Python at once (a numpy scalar per hit cost ~0.1 µs each)
        if top is None:
            ids = self.ids[:n] if idx is None else self.ids[idx]
            hits = list(zip(ids.tolist(), sims.tolist(), strict=True))
        else:
            rows_of_top = top if idx is None else idx[top]
            hits = list(zip(self.ids[rows_of_top].tolist(), sims[top].tolist(), strict=True))
        extra: list[tuple[str, float]] = []
        if include:
            chosen = {mid for mid, _ in hits}
            pos = self.pos
            rows = [(mid, i) for mid in include
                    if mid not in chosen and (i := pos.get(mid)) is not None and i < n
                    and (every or mask[i])]
            if rows:
                picked = full[[i for _, i in rows]].tolist()
                extra = [(mid, x) for (mid, _), x in zip(rows, picked, strict=True)]
        return hits, extra

    def candidates(self, queries: Sequence[F32], wanted: Sequence[int],
                   held: HeldFilters = NO_FILTERS, include: Iterable[str] = ()
                   ) -> Candidates | None:
        """`Store.candidates` from this partition alone, in one pass: the union of each
        query's top `wanted[v]` rows that pass the filters and the rows of `include`, with
        every query's similarity to each (from the same products) and their rank fields,
        in row order. None where the store must compose it: an id of `include` not held
        here or not passing the filters, a row without its rank fields, nothing passing.

        Right after the model every numpy step costs 2-3x its warm time, and composing it
        (a top k per query as a dict, the union, the ids sorted, the rank fields looked up
        by id) took ~40 of them (docs/architecture.md)."""
        n = self.n if held.include_inactive else self.n_active
        plain = (self.n_expiring == 0 and held.agent is ANY and held.session is ANY
                 and held.namespace is ANY)
        mask = None if plain else self._visible(slice(0, n), n, held, active_block=True)
        idx = None if mask is None or mask.all() else np.flatnonzero(mask)
        m = n if idx is None else idx.size
        if m == 0:
            return None
        pos = self.pos
        extra: list[int] = []
        for mid in include:
            i = pos.get(mid, n)
            if i >= n or (idx is not None and not mask[i]):  # type: ignore[index]
                return None
            extra.append(i)
        if self.n_unranked and np.isnan(self.importance[:n]).any():
            return None  # rank fields not known here
        block = self.mat[:n]
        full = [block @ query for query in queries]
        rows: slice | npt.NDArray[np.intp]
        if all(m > k for k in wanted):
            # the rows of each top k (argpartition: in no order) and the included ones,
            # marked (np.unique's sort cost ~40 µs more, cold)
            chosen = np.zeros(n, dtype=bool)
            for s, k in zip(full, wanted, strict=True):
                if k > 0:
                    top = np.argpartition(s if idx is None else s[idx], m - k)[m - k:]
                    chosen[top if idx is None else idx[top]] = True
            if extra:
                chosen[extra] = True
            rows = np.flatnonzero(chosen)
        else:  # some query takes every row that passes
            rows = slice(0, n) if idx is None else idx
        columns = [self.importance, self.relevance, self.decay, self.pinned, self.created,
                   self.accessed]
        if isinstance(rows, slice):  # views, which later writes to the partition would change
            taken = [c[rows].copy() for c in columns]
        else:
            taken = [c[rows] for c in columns]
        importance, relevance, decay, pinned, created, accessed = taken
        cols = RankColumns(np.ones(importance.size, dtype=bool), importance, relevance,
                           decay, pinned, created, accessed, self.session[rows].tolist())
        return Candidates(self.ids[rows].tolist(),
                          [s[rows].astype(np.float64) for s in full], cols)
