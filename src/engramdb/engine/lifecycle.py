"""How memories age: relevance that decays, access that refreshes it, tiers that promote.

Relevance is computed at read time from stored parameters, so no background job is needed
for correctness:

    relevance(now) = base × e^(−decay_rate × hours since the last access, or since creation)

with `decay_rate = ln 2 / half-life in hours`, and no decay at all while the memory is pinned.
(Per hour, so that a default memory — tier short, type general — has decay_rate 0.01, the
default Memory OS reports.)

Half-life = the tier's base half-life × the memory type's factor:

| tier   | base half-life | meaning                        |
|--------|----------------|--------------------------------|
| short  | 69.3 hours (2.9 days) | hours to days (decay_rate 0.01 per hour) |
| medium | 14 days        | days to weeks                  |
| long   | 69.3 days      | weeks to months; pinned = permanent |

| memory_type                         | factor | why |
|-------------------------------------|--------|-----|
| correction                          | 4      | a correction must outlive what it corrects |
| preference                          | 3      | tastes change slowly |
| decision                            | 2.5    | decisions stay binding until revisited |
| semantic, fact                      | 2      | stable facts |
| project, general, summary           | 1      | |
| context                             | 0.75   | background that goes stale |
| observation, episodic               | 0.5    | events fade fastest |

So an `observation` in the short tier halves in 35 hours, a `correction` in the long tier in
277 days.

Access (a get, or being returned by search/context) refreshes a memory: its base moves a fifth
of the way to 1 (`base + 0.2 × (1 − base)`, from the relevance it had decayed to) and the decay
clock restarts. A new memory starts at base 0.5.

Promotion (never demotion): short → medium after 3 accesses or with importance ≥ 0.8;
medium → long after 10 accesses or with importance ≥ 0.9. A promotion recomputes the decay rate
and is a history event (`access_tier`).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ..models import MemoryType, Tier

F64 = npt.NDArray[np.float64]

INITIAL_RELEVANCE = 0.5
ACCESS_BOOST = 0.2
LN2 = math.log(2.0)

TIER_HALF_LIFE_DAYS: dict[Tier, float] = {
    Tier.SHORT: LN2 / 0.01 / 24,  # 69.3 hours: decay_rate 0.01 per hour
    Tier.MEDIUM: 14.0,
    Tier.LONG: LN2 / 0.01,  # 69.3 days
}

TYPE_FACTOR: dict[MemoryType, float] = {
    MemoryType.CORRECTION: 4.0,
    MemoryType.PREFERENCE: 3.0,
    MemoryType.DECISION: 2.5,
    MemoryType.SEMANTIC: 2.0,
    MemoryType.FACT: 2.0,
    MemoryType.PROJECT: 1.0,
    MemoryType.GENERAL: 1.0,
    MemoryType.SUMMARY: 1.0,
    MemoryType.CONTEXT: 0.75,
    MemoryType.OBSERVATION: 0.5,
    MemoryType.EPISODIC: 0.5,
}

#: (accesses, importance) that promote out of a tier
PROMOTE: dict[Tier, tuple[Tier, int, float]] = {
    Tier.SHORT: (Tier.MEDIUM, 3, 0.8),
    Tier.MEDIUM: (Tier.LONG, 10, 0.9),
}


def half_life_days(memory_type: MemoryType, tier: Tier) -> float:
    return TIER_HALF_LIFE_DAYS[tier] * TYPE_FACTOR.get(memory_type, 1.0)


def decay_rate(memory_type: MemoryType, tier: Tier) -> float:
    """Per hour."""
    return LN2 / (half_life_days(memory_type, tier) * 24.0)


class Decaying(Protocol):
    """What decay reads of a memory record."""

    @property
    def pinned(self) -> bool: ...
    @property
    def relevance(self) -> float: ...
    @property
    def decay_rate(self) -> float: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def last_accessed_at(self) -> datetime | None: ...


def current_relevance(rec: Decaying, now: datetime) -> float:
    last = rec.last_accessed_at
    return relevance_at(rec.relevance, rec.decay_rate, rec.pinned, rec.created_at.timestamp(),
                        None if last is None else last.timestamp(), now.timestamp())


def relevance_at(relevance: float, decay_rate: float, pinned: bool, created: float,
                 last_accessed: float | None, now: float) -> float:
    """The relevance at `now` of a memory decaying since its last read (or, never read,
    its creation), all epoch seconds: what `current_relevance` computes of a record, and a
    search or an access flush of RankFields."""
    if pinned:
        return relevance
    since = created if last_accessed is None else last_accessed
    hours = max(0.0, (now - since) / 3600.0)
    return relevance * math.exp(-decay_rate * hours)


def relevance_at_many(relevance: F64, decay_rate: F64, pinned: npt.NDArray[np.bool_],
                      created: F64, last_accessed: F64, now: float) -> F64:
    """`relevance_at` of many memories at once (`last_accessed` NaN: never read), the same
    floats element for element: the same operations in the same order, and `math.exp`
    itself (numpy's exp may differ from it in the last bit on some CPUs)."""
    since = np.where(np.isnan(last_accessed), created, last_accessed)
    hours = np.maximum(0.0, (now - since) / 3600.0)
    decayed = relevance * np.array([math.exp(x) for x in (-decay_rate * hours).tolist()],
                                   dtype=np.float64)
    return np.where(pinned, relevance, decayed)


def promoted_tier(tier: Tier, access_count: int, importance: float) -> Tier:
    """The tier a memory belongs in, given its accesses and importance (never lower)."""
    while tier in PROMOTE:
        nxt, accesses, importance_floor = PROMOTE[tier]
        if access_count >= accesses or importance >= importance_floor:
            tier = nxt
        else:
            break
    return tier


def refreshed(relevance_now: float, accesses: int) -> float:
    """The base after `accesses` reads, starting from the relevance decayed to now."""
    base = relevance_now
    for _ in range(accesses):
        base += ACCESS_BOOST * (1.0 - base)
    return min(1.0, base)
