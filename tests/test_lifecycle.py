"""Lifecycle on the real engine with an injected clock: decay, access, tiers, expiry,
purge, forget_user, history, context."""

from __future__ import annotations

import math

import pytest

from engramdb import Engram, FrozenClock, NotFound, Tier
from engramdb.engine import lifecycle
from engramdb.models import MemoryType


def test_half_life_table() -> None:
    assert lifecycle.half_life_days(MemoryType.GENERAL, Tier.LONG) == pytest.approx(69.31, 0.01)
    assert lifecycle.decay_rate(MemoryType.GENERAL, Tier.SHORT) == pytest.approx(0.01)
    assert lifecycle.half_life_days(MemoryType.OBSERVATION, Tier.SHORT) == pytest.approx(
        69.31 / 24 / 2, 0.001)
    assert lifecycle.half_life_days(MemoryType.CORRECTION, Tier.LONG) == pytest.approx(277.3,
                                                                                     0.01)
    # every MemoClaw type has its own half-life, ordered as documented
    claw = ["correction", "preference", "decision", "project", "observation"]
    lives = [lifecycle.half_life_days(MemoryType(t), Tier.MEDIUM) for t in claw]
    assert lives == sorted(lives, reverse=True) and len(set(lives)) == len(lives)


def test_relevance_decays_by_half_life(engram: Engram, clock: FrozenClock) -> None:
    rec = engram.add("Observed: user seemed tired today", memory_type="observation").memory
    assert rec.relevance == lifecycle.INITIAL_RELEVANCE and rec.tier is Tier.SHORT
    clock.advance(days=lifecycle.half_life_days(MemoryType.OBSERVATION, Tier.SHORT))
    now = engram.get(rec.id, ).relevance  # a get refreshes after reading the decayed value
    assert now == pytest.approx(lifecycle.refreshed(0.25, 1))
    fresh = engram.add("User's favourite colour is teal", memory_type="preference",
                       tier="long").memory
    clock.advance(days=lifecycle.half_life_days(MemoryType.PREFERENCE, Tier.LONG))
    hits = engram.search("favourite colour", limit=1, track_access=False)
    assert hits[0].memory.id == fresh.id
    assert hits[0].explain["relevance"] == pytest.approx(0.25, rel=1e-6)


def test_pinned_memories_do_not_decay(engram: Engram, clock: FrozenClock) -> None:
    pinned = engram.add("User's blood type is O negative", pinned=True).memory
    loose = engram.add("User's gym locker is number 12").memory
    clock.advance(days=400)
    assert engram.get(pinned.id, track=False).relevance == lifecycle.INITIAL_RELEVANCE
    assert engram.get(loose.id, track=False).relevance < 1e-10


def test_access_refreshes_and_is_batched(engram: Engram, clock: FrozenClock) -> None:
    rec = engram.add("User's cat is called Miso").memory
    store = engram.service.store
    for _ in range(3):
        seen = engram.get(rec.id)
    assert seen.access_count == 3 and seen.last_accessed_at == clock.now()
    engram.search("cat name", limit=1)
    engram.flush()
    stored = store.get("default", rec.id)
    assert stored is not None and stored.access_count == 4
    assert stored.last_accessed_at == clock.now()
    assert stored.relevance == pytest.approx(lifecycle.refreshed(0.5, 4))
    assert engram.service.access.flush() == 0  # nothing left pending


def test_a_second_flush_decays_from_the_last_access(engram: Engram,
                                                   clock: FrozenClock) -> None:
    rec = engram.add("User's bike is a green road bike", memory_type="fact").memory
    half = lifecycle.half_life_days(MemoryType.FACT, Tier.SHORT)
    clock.advance(days=2 * half)
    engram.get(rec.id)
    engram.flush()
    first = lifecycle.refreshed(0.125, 1)  # two half-lives since creation, then one read
    stored = engram.service.store.get("default", rec.id)
    assert stored is not None and stored.relevance == pytest.approx(first)
    clock.advance(days=half)
    engram.get(rec.id)
    engram.flush()
    # one half-life since that read, not three since creation
    stored = engram.service.store.get("default", rec.id)
    assert stored is not None
    assert stored.relevance == pytest.approx(lifecycle.refreshed(first / 2, 1))
    assert stored.access_count == 2


def test_min_relevance_filters(engram: Engram, clock: FrozenClock) -> None:
    old = engram.add("Observation from long ago", memory_type="observation").id
    clock.advance(days=3)
    new = engram.add("Fresh project note about the launch", memory_type="project").id
    ids = {m.id for m in engram.list(min_relevance=0.4).items}
    assert ids == {new}
    assert {m.id for m in engram.list(min_relevance=0.0).items} == {old, new}
    assert [h.memory.id for h in engram.search("note", min_relevance=0.4)] == [new]
    with pytest.raises(Exception, match="min_relevance"):
        engram.list(min_relevance=2)


def test_tier_promotion_by_access_and_importance(engram: Engram, clock: FrozenClock) -> None:
    important = engram.add("User is diabetic", importance=0.95).memory
    assert important.tier is Tier.LONG  # importance >= 0.9 goes straight to long
    assert important.decay_rate == pytest.approx(lifecycle.decay_rate(MemoryType.GENERAL,
                                                                      Tier.LONG))
    rec = engram.add("User plays the cello on Sundays").memory
    assert rec.tier is Tier.SHORT
    for _ in range(3):
        engram.get(rec.id)
    engram.flush()
    after = engram.get(rec.id, track=False)
    assert after.tier is Tier.MEDIUM
    assert after.decay_rate == pytest.approx(lifecycle.decay_rate(MemoryType.GENERAL,
                                                                  Tier.MEDIUM))
    for _ in range(7):
        engram.get(rec.id)
    engram.flush()
    assert engram.get(rec.id, track=False).tier is Tier.LONG
    events = [e for e in engram.history(rec.id) if e.event == "access_tier"]
    assert [e.changes["tier"]["after"] for e in events] == ["medium", "long"]


def test_explicit_tier_is_kept_on_update(engram: Engram) -> None:
    rec = engram.add("Temporary parking spot B4", tier="long").memory
    assert engram.update(rec.id, tier="short").tier is Tier.SHORT


def test_purge_removes_expired_rows_physically(engram: Engram, clock: FrozenClock) -> None:
    gone = engram.add("One-day session note", user_id="u", ttl_days=1).memory
    kept = engram.add("Permanent fact about the user", user_id="u").memory
    clock.advance(days=2)
    assert engram.purge_expired() == 1
    store = engram.service.store
    assert store.get("default", gone.id) is None and store.get_vector("default", gone.id) is None
    assert store.keyword_search(
        engram.service._filters("default", {"include_superseded": True}), "session", 10) == []
    assert store.get("default", kept.id) is not None
    events = engram.history(gone.id)
    assert [e.event for e in events] == ["create", "expire"]
    assert all("session note" not in str(e.changes) for e in events)
    assert engram.purge_expired() == 0


def test_forget_user_removes_everything_of_that_user(engram: Engram) -> None:
    a = engram.add("Alice likes rowing", user_id="alice", immutable=True).id
    engram.add("Alice lives in Oslo", user_id="alice", ttl_days=1)
    bob = engram.add("Bob likes chess", user_id="bob").id
    assert engram.forget_user("alice") == 2
    assert engram.list(user_id="alice").total == 0
    assert engram.search("rowing", user_id="alice") == []
    with pytest.raises(NotFound):
        engram.get(a)
    assert engram.service.store.get_vector("default", a) is None
    assert engram.get(bob).content == "Bob likes chess"
    assert all("rowing" not in str(e.changes) for e in engram.history(a))


def test_history_records_every_change(engram: Engram, clock: FrozenClock) -> None:
    rec = engram.add("User's shoe size is 42").memory
    clock.advance(minutes=5)
    engram.update(rec.id, content="User's shoe size is 43", importance=0.7)
    engram.delete(rec.id)
    events = engram.history(rec.id)
    assert [e.event for e in events] == ["create", "update", "delete"]
    assert events[1].at > events[0].at
    assert all("shoe size" not in str(e.changes) for e in events)


def test_context_fits_the_budget(engram: Engram) -> None:
    for fact in ["User is vegetarian", "User is allergic to cashews",
                 "User cooks Indian food on weekends", "User hates coriander",
                 "User's kitchen has a gas stove"]:
        engram.add(fact, user_id="u")
    ctx = engram.context("what should I cook for the user?", user_id="u", budget_tokens=30)
    assert ctx.tokens <= 30 and ctx.text.startswith("Relevant memories:")
    assert 1 <= len(ctx.memories) < 5
    big = engram.context("what should I cook for the user?", user_id="u", budget_tokens=500)
    assert len(big.memories) == 5 and big.tokens <= 500
    assert all(f"- {h.memory.content}" in big.text for h in big.memories)
    with pytest.raises(Exception, match="budget_tokens"):
        engram.context("x", budget_tokens=5)


def test_decay_is_monotone() -> None:
    from datetime import timedelta

    from hypothesis import given
    from hypothesis import strategies as st

    @given(st.floats(0, 1), st.floats(0, 3650), st.floats(0.001, 10))
    def check(base: float, days: float, rate: float) -> None:
        from engramdb.clock import FrozenClock as C
        from engramdb.models import MemoryRecord

        c = C()
        rec = MemoryRecord(id="x", tenant_id="t", content="c", integrity_hash="h",
                           created_at=c.now(), updated_at=c.now(), relevance=base,
                           decay_rate=rate)
        later = lifecycle.current_relevance(rec, c.now() + timedelta(days=days))
        assert 0.0 <= later <= base + 1e-12
        assert later == pytest.approx(base * math.exp(-rate * days * 24), abs=1e-9)

    check()
