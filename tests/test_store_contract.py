"""The contract every Store backend passes.

The `store` fixture (tests/conftest.py, STORE_FACTORIES) runs this module once per backend.
The inputs are small deterministic random unit vectors, not embeddings: these tests are about
the store, and the embedding model is never loaded here. Expected results come from a plain
Python reference (`visible`, `ranked`) over the records the test wrote.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from engramdb.errors import EmbeddingMismatch, StoreError
from engramdb.models import (
    AccessUpdate,
    ContentType,
    HistoryEvent,
    MemoryNature,
    MemoryRecord,
    MemoryType,
    Scope,
    Status,
    Tier,
)
from engramdb.storage.base import Filters, Store, StoredMemory

DIM = 8
T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=30)

Vec = np.ndarray[Any, np.dtype[np.float32]]


def unit(seed: int) -> Vec:
    """A deterministic random unit vector of dimension 8."""
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


def F(**kw: Any) -> Filters:
    kw.setdefault("tenant_id", "t1")
    kw.setdefault("now", NOW)
    return Filters(**kw)


def ids(hits: Iterable[tuple[str, float]]) -> list[str]:
    return [h[0] for h in hits]


class Maker:
    """Builds records and events and writes them, remembering what the store should hold."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.n = 0
        self.records: dict[str, MemoryRecord] = {}
        self.vectors: dict[str, Vec] = {}

    def record(self, **kw: Any) -> MemoryRecord:
        self.n += 1
        n = self.n
        at = T0 + timedelta(minutes=n)
        base: dict[str, Any] = {
            "id": f"00000000-0000-7000-8000-{n:012d}",
            "tenant_id": "t1",
            "user_id": "u1",
            "content": f"note number{n}",
            "integrity_hash": f"hash-{n}",
            "created_at": at,
            "updated_at": at,
            "embedding_model": "test-model",
        }
        base.update(kw)
        return MemoryRecord(**base)

    def event(self, rec: MemoryRecord, kind: str = "create",
              changes: dict[str, Any] | None = None) -> HistoryEvent:
        self.n += 1
        return HistoryEvent(
            id=f"00000000-0000-7000-9000-{self.n:012d}", memory_id=rec.id,
            tenant_id=rec.tenant_id, event=kind, at=T0 + timedelta(minutes=self.n),
            actor="tester",
            changes={"content": rec.content} if changes is None else changes,
        )

    def add(self, vector: Vec | None = None, **kw: Any) -> MemoryRecord:
        rec = self.record(**kw)
        vec = unit(10_000 + self.n) if vector is None else vector
        self.store.insert(rec, vec, self.event(rec))
        self.records[rec.id] = rec
        self.vectors[rec.id] = vec
        return rec

    def update(self, rec: MemoryRecord, vector: Vec | None = None,
               **changes: Any) -> MemoryRecord:
        new = replace(rec, **changes)
        diff = {k: "changed" for k in changes}
        self.store.update(new, vector, self.event(new, "update", diff))
        self.records[new.id] = new
        if vector is not None:
            self.vectors[new.id] = vector
        return new

    def delete(self, rec: MemoryRecord) -> bool:
        ok = self.store.delete(rec.tenant_id, rec.id, self.event(rec, "delete", {}))
        self.records.pop(rec.id, None)
        self.vectors.pop(rec.id, None)
        return ok

    def ranked(self, f: Filters, query: Vec) -> list[tuple[str, float]]:
        """Brute force: every visible memory by cosine, best first."""
        hits = [(mid, float(self.vectors[mid] @ query))
                for mid, r in self.records.items() if visible(r, f)]
        return sorted(hits, key=lambda h: -h[1])


_MISSING = object()


def visible(r: MemoryRecord, f: Filters) -> bool:
    """The reference semantics of Filters."""
    if r.tenant_id != f.tenant_id:
        return False
    if r.expires_at is not None and r.expires_at <= f.now:
        return False
    if not f.include_superseded and r.status is not Status.ACTIVE:
        return False
    if f.exact_scope:
        if r.user_id != f.user_id or r.agent_id != f.agent_id:
            return False
    else:
        if f.user_id is not None and r.user_id != f.user_id:
            return False
        if f.agent_id is not None and r.agent_id != f.agent_id:
            return False
    for want, have in ((f.session_id, r.session_id), (f.namespace, r.namespace),
                       (f.memory_nature, r.memory_nature), (f.scope, r.scope),
                       (f.domain, r.domain)):
        if want is not None and have != want:
            return False
    for wants, have in ((f.memory_types, r.memory_type), (f.content_types, r.content_type),
                        (f.tiers, r.tier)):
        if wants and have not in wants:
            return False
    if not all(t in r.tags for t in f.tags):
        return False
    if not all(r.metadata.get(k, _MISSING) == v for k, v in f.metadata):
        return False
    if f.created_after is not None and r.created_at < f.created_after:
        return False
    return not (f.created_before is not None and r.created_at >= f.created_before)


@pytest.fixture
def mk(store: Store) -> Maker:
    return Maker(store)


def test_is_a_store(store: Store) -> None:
    assert isinstance(store, Store)


# -- round trips ---------------------------------------------------------------------------


def full_record(mk: Maker) -> MemoryRecord:
    plus2 = timezone(timedelta(hours=2))
    return mk.record(
        user_id="user-ü", agent_id="agent-1", session_id="sess-1", namespace="work",
        scope=Scope.SCHEDULE, domain="calendar",
        value_json={"days": ["mon", "tue"], "nested": {"n": 1.5, "none": None}, "é": "ß"},
        content="Meetings only on Monday and Tuesday mornings ☕",
        content_type=ContentType.DOCUMENT, memory_type=MemoryType.DECISION,
        memory_nature=MemoryNature.SEMANTIC, tier=Tier.LONG, source="web",
        source_id="src-9", external_id="ext-9", parent_memory_id="parent-1",
        metadata={"k": "v", "n": 3, "f": 0.25, "b": True, "nil": None,
                  "deep": {"list": [1, "two", {"three": 3}]}, "ünï": "cödé"},
        tags=["calendar", "work life", "ü"], importance=0.7, confidence=0.8, relevance=0.9,
        decay_rate=0.02, access_count=5,
        last_accessed_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        pinned=True, immutable=True, status=Status.ACTIVE, superseded_by=None,
        created_at=datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC),
        updated_at=datetime(2026, 1, 1, 14, 30, 0, 654321, tzinfo=plus2),
        expires_at=datetime(2027, 6, 1, 0, 0, 0, 1, tzinfo=UTC),
        pii_detected=True, pii_fields=["email", "phone"], embedding_model="test-model",
        tokens_used=17, integrity_hash="sha256:abc",
    )


def assert_utc(rec: MemoryRecord) -> None:
    for name in ("created_at", "updated_at", "last_accessed_at", "expires_at"):
        value = getattr(rec, name)
        if value is not None:
            assert value.tzinfo is not None, name
            assert value.utcoffset() == timedelta(0), name


def assert_enums(rec: MemoryRecord) -> None:
    assert type(rec.content_type) is ContentType
    assert type(rec.memory_type) is MemoryType
    assert type(rec.tier) is Tier
    assert type(rec.status) is Status
    assert rec.scope is None or type(rec.scope) is Scope
    assert rec.memory_nature is None or type(rec.memory_nature) is MemoryNature


def test_insert_get_round_trips_every_field(store: Store, mk: Maker) -> None:
    rec = full_record(mk)
    vec = unit(1)
    store.insert(rec, vec, mk.event(rec))
    got = store.get("t1", rec.id)
    assert got == rec  # dataclass equality: every field (datetimes by instant)
    assert got is not rec
    assert_utc(got)
    assert_enums(got)
    assert got.value_json == rec.value_json and got.metadata == rec.metadata
    assert got.tags == ["calendar", "work life", "ü"]
    assert got.pii_fields == ["email", "phone"]
    many = store.get_many("t1", [rec.id])
    assert many == {rec.id: rec}
    assert_utc(many[rec.id])
    v = store.get_vector("t1", rec.id)
    assert v is not None and v.dtype == np.float32
    np.testing.assert_array_equal(v, vec)


def test_minimal_record_round_trips(store: Store, mk: Maker) -> None:
    rec = mk.record(user_id=None, agent_id=None, value_json=None, metadata={}, tags=[],
                    embedding_model=None)
    store.insert(rec, unit(2), mk.event(rec))
    got = store.get("t1", rec.id)
    assert got == rec
    assert got is not None
    assert got.scope is None and got.memory_nature is None and got.expires_at is None
    assert got.last_accessed_at is None and got.value_json is None
    assert_enums(got)


@pytest.mark.parametrize("value", [0, "text", [1, 2], False, {"a": []}])
def test_value_json_scalars_round_trip(store: Store, mk: Maker, value: Any) -> None:
    rec = mk.add(value_json=value)
    got = store.get("t1", rec.id)
    assert got is not None and got.value_json == value and type(got.value_json) is type(value)


def test_get_many(store: Store, mk: Maker) -> None:
    a, b, c = mk.add(), mk.add(), mk.add(user_id="u2")
    other = mk.add(tenant_id="t2")
    got = store.get_many("t1", [a.id, c.id, "missing", a.id, other.id])
    assert set(got) == {a.id, c.id}
    assert got[a.id] == a and got[c.id] == c
    assert store.get_many("t1", []) == {}
    assert set(store.get_many("t1", [b.id])) == {b.id}
    assert store.get("t1", "missing") is None


def test_rank_fields_match_the_records(store: Store, mk: Maker) -> None:
    a = mk.add(importance=0.9, relevance=0.7, decay_rate=0.02, pinned=True,
               session_id="s1", last_accessed_at=T0 + timedelta(hours=5, microseconds=250))
    b = mk.add(user_id="u2", session_id=None, last_accessed_at=None,
               status=Status.SUPERSEDED, superseded_by=a.id)
    other = mk.add(tenant_id="t2")
    got = store.rank_fields("t1", [a.id, b.id, "missing", a.id, other.id])
    assert set(got) == {a.id, b.id}
    for rec in (a, b):
        f = got[rec.id]
        assert (f.importance, f.relevance, f.decay_rate, f.pinned, f.created,
                f.last_accessed, f.session_id) == (
            rec.importance, rec.relevance, rec.decay_rate, rec.pinned,
            rec.created_at.timestamp(),
            None if rec.last_accessed_at is None else rec.last_accessed_at.timestamp(),
            rec.session_id)
    assert got[a.id].pinned is True and got[b.id].last_accessed is None
    assert store.rank_fields("t1", []) == {}
    # an access update is seen by the next ranking
    later = T0 + timedelta(days=2)
    store.apply_access("t1", [AccessUpdate(a.id, 3, later, 0.95, a.decay_rate, a.tier)])
    f = store.rank_fields("t1", [a.id])[a.id]
    assert f.last_accessed == later.timestamp() and f.relevance == 0.95


def test_rank_columns_are_the_rank_fields_in_order(store: Store, mk: Maker) -> None:
    a = mk.add(importance=0.9, relevance=0.7, decay_rate=0.02, pinned=True,
               session_id="s1", last_accessed_at=T0 + timedelta(hours=5, microseconds=250))
    b = mk.add(session_id=None, last_accessed_at=None, status=Status.SUPERSEDED,
               superseded_by=a.id)
    c = mk.add(user_id="u2", importance=0.3, session_id="s2")
    other = mk.add(tenant_id="t2")
    asked = [b.id, "missing", a.id, c.id, other.id, a.id]
    fields = store.rank_fields("t1", asked)
    store.nearest(F(user_id="u1"), unit(1), 5)  # a store may now hold the user's scope
    for scope in (None, F(user_id="u1"), F(user_id="u2")):
        cols = store.rank_columns("t1", asked, scope=scope)
        assert cols.found.tolist() == [True, False, True, True, False, True]
        for i, mid in enumerate(asked):
            assert cols.fields(i) == fields.get(mid)
        for i in (1, 4):  # missing: blank entries, whatever the arrays held there
            assert (cols.importance[i], cols.relevance[i], cols.decay_rate[i],
                    cols.pinned[i], cols.created[i], cols.session_id[i]) == (
                0.0, 0.0, 0.0, False, 0.0, None)
            assert np.isnan(cols.last_accessed[i])
        assert np.isnan(cols.last_accessed[0]) and cols.last_accessed[2] == (
            a.last_accessed_at.timestamp())  # type: ignore[union-attr]
    empty = store.rank_columns("t1", [], scope=F(user_id="u1"))
    assert empty.found.shape == (0,) and empty.session_id == []


def test_a_read_section_sees_what_was_committed_before_it(store: Store, mk: Maker) -> None:
    f = F(user_id="u1")
    a = mk.add(content="apricot jam")
    store.nearest(f, unit(0), 5)  # a store may now hold the scope
    b = mk.add(content="apricot tart")
    with store.reading(f):
        assert set(ids(store.nearest(f, unit(0), 5))) == {a.id, b.id}
        assert store.rank_columns("t1", [a.id, b.id], scope=f).found.all()
        assert set(store.get_many("t1", [a.id, b.id], scope=f)) == {a.id, b.id}
        assert set(ids(store.keyword_search(f, "apricot", 5))) == {a.id, b.id}
    with store.reading(F(user_id="nobody")):
        assert store.nearest(F(user_id="nobody"), unit(0), 5) == []


def test_access_fields_match_the_records(store: Store, mk: Maker) -> None:
    a = mk.add(memory_type=MemoryType.DECISION, tier=Tier.MEDIUM, access_count=4,
               importance=0.8, relevance=0.6, decay_rate=0.03, pinned=True,
               last_accessed_at=T0 + timedelta(hours=2, microseconds=125))
    b = mk.add(user_id="u2", last_accessed_at=None, status=Status.SUPERSEDED,
               superseded_by=a.id)
    other = mk.add(tenant_id="t2")
    got = store.access_fields("t1", [a.id, b.id, "missing", a.id, other.id])
    assert set(got) == {a.id, b.id}
    rank = store.rank_fields("t1", [a.id, b.id])
    for rec in (a, b):
        assert got[rec.id] == (rec.memory_type, rec.tier, rec.access_count, rank[rec.id])
    assert got[a.id].tier is Tier.MEDIUM and got[a.id].memory_type is MemoryType.DECISION
    assert got[a.id].rank.pinned is True and got[b.id].rank.last_accessed is None
    assert got[a.id].rank.last_accessed == a.last_accessed_at.timestamp()  # type: ignore[union-attr]
    assert store.access_fields("t1", []) == {}
    # what a flush writes is what the next flush reads
    later = T0 + timedelta(days=1)
    store.apply_access("t1", [AccessUpdate(a.id, 2, later, 0.9, 0.01, Tier.LONG)])
    f = store.access_fields("t1", [a.id])[a.id]
    assert (f.access_count, f.rank.last_accessed, f.rank.relevance, f.rank.decay_rate,
            f.tier) == (6, later.timestamp(), 0.9, 0.01, Tier.LONG)


def test_get_returns_rows_whatever_status_or_expiry(store: Store, mk: Maker) -> None:
    old = mk.add(expires_at=T0)
    sup = mk.add(status=Status.SUPERSEDED, superseded_by=old.id)
    assert store.get("t1", old.id) == old
    assert store.get("t1", sup.id) == sup


# -- tenant isolation ----------------------------------------------------------------------


def test_tenant_isolation(store: Store, mk: Maker) -> None:
    vec = unit(3)
    mine = mk.add(vector=vec, tenant_id="t1", user_id="u1", content="shared apple words",
                  integrity_hash="same")
    theirs = mk.add(vector=vec, tenant_id="t2", user_id="u1", content="shared apple words",
                    integrity_hash="same")
    assert store.get("t2", mine.id) is None
    assert store.get("t1", theirs.id) is None
    assert store.get_many("t2", [mine.id]) == {}
    assert store.get_vector("t2", mine.id) is None
    assert store.find_by_hash("t2", "u1", None, "default", "same") == theirs
    assert store.find_by_hash("t3", "u1", None, "default", "same") is None
    for tenant, rec in (("t1", mine), ("t2", theirs)):
        for f in (F(tenant_id=tenant), F(tenant_id=tenant, user_id="u1"),
                  F(tenant_id=tenant, user_id="u1", exact_scope=True),
                  F(tenant_id=tenant, include_superseded=True, tags=())):
            assert ids(store.nearest(f, vec, 10)) == [rec.id]
            assert ids(store.keyword_search(f, "apple", 10)) == [rec.id]
            assert [r.id for r in store.list(f, 10, 0)[0]] == [rec.id]
            assert set(store.similarities(f, vec, [mine.id, theirs.id])) == {rec.id}
    assert store.nearest(F(tenant_id="t3"), vec, 10) == []
    assert store.keyword_search(F(tenant_id="t3"), "apple", 10) == []
    assert store.list(F(tenant_id="t3"), 10, 0) == ([], 0)
    # another tenant can neither delete nor read the history of this tenant's memory
    assert store.history("t2", mine.id) == []
    assert not store.delete("t2", mine.id, mk.event(replace(mine, tenant_id="t2"), "delete", {}))
    assert store.get("t1", mine.id) == mine
    assert ids(store.nearest(F(), vec, 10)) == [mine.id]
    assert [m.record.id for m in store.iter_all("t1")] == [mine.id]


# -- filters: nearest, keyword_search, list and similarities against the reference --------

_WORDS = ("red", "blue", "green")


def populate(mk: Maker) -> None:
    """~30 memories spread over scopes, row attributes, expiry, status and two tenants.
    Every content contains the word "apple"."""
    i = 0
    for user in ("u1", "u2", None):
        for agent in ("a1", None):
            for session in ("s1", None):
                for namespace in ("default", "ns2"):
                    mk.add(
                        user_id=user, agent_id=agent, session_id=session, namespace=namespace,
                        content=f"apple {_WORDS[i % 3]} item{i}",
                        memory_type=(MemoryType.FACT, MemoryType.DECISION,
                                     MemoryType.GENERAL)[i % 3],
                        content_type=tuple(ContentType)[i % 5],
                        tier=tuple(Tier)[(i // 2) % 3],
                        memory_nature=(None, MemoryNature.EPISODIC,
                                       MemoryNature.SEMANTIC)[(i // 3) % 3],
                        scope=(None, Scope.PREFERENCES, Scope.SCHEDULE)[(i // 4) % 3],
                        domain=("work", "home", None)[(i // 5) % 3],
                        tags=[t for j, t in enumerate(("red", "blue", "x y")) if (i >> j) & 1],
                        metadata={"color": _WORDS[i % 2], "n": i % 4, "nested": [1, i % 2],
                                  "obj": {"k": i % 2}},
                        created_at=T0 + timedelta(hours=i),
                    )
                    i += 1
    # expiry: just before, exactly at and just after `now`
    mk.add(content="apple expired", expires_at=NOW - timedelta(seconds=1), agent_id="a1")
    mk.add(content="apple expiring now", expires_at=NOW)
    mk.add(content="apple still fresh", expires_at=NOW + timedelta(seconds=1),
           created_at=T0 + timedelta(hours=100))
    # statuses
    mk.add(content="apple superseded", status=Status.SUPERSEDED, superseded_by="x",
           tags=["red"])
    mk.add(content="apple retired", status=Status.EXPIRED, user_id="u2")
    mk.add(content="apple superseded and expired", status=Status.SUPERSEDED,
           expires_at=NOW - timedelta(days=1))
    # another tenant with the same user and agent names
    mk.add(tenant_id="t2", content="apple elsewhere", agent_id="a1")


VARIANTS: dict[str, dict[str, Any]] = {
    "tenant-only": {},
    "user-u1": {"user_id": "u1"},
    "user-u2": {"user_id": "u2"},
    "agent-a1": {"agent_id": "a1"},
    "user-u1-agent-a1": {"user_id": "u1", "agent_id": "a1"},
    "session": {"session_id": "s1"},
    "namespace": {"namespace": "ns2"},
    "user-session-namespace": {"user_id": "u2", "session_id": "s1", "namespace": "default"},
    "exact-u1-no-agent": {"user_id": "u1", "exact_scope": True},
    "exact-u1-a1": {"user_id": "u1", "agent_id": "a1", "exact_scope": True},
    "exact-no-user-no-agent": {"exact_scope": True},
    "exact-no-user-a1": {"agent_id": "a1", "exact_scope": True},
    "exact-u2-no-agent-ns2": {"user_id": "u2", "namespace": "ns2", "exact_scope": True},
    "include-superseded": {"include_superseded": True},
    "include-superseded-u2": {"include_superseded": True, "user_id": "u2"},
    "memory-types": {"memory_types": ("fact", "decision")},
    "content-types": {"content_types": ("text", "event")},
    "tiers": {"tiers": ("long",)},
    "memory-nature": {"memory_nature": "semantic"},
    "scope": {"scope": "schedule"},
    "domain": {"domain": "work"},
    "tag": {"tags": ("red",)},
    "tags-all": {"tags": ("red", "blue")},
    "tag-with-space": {"tags": ("x y",)},
    "metadata-str": {"metadata": (("color", "red"),)},
    "metadata-int": {"metadata": (("n", 2),)},
    "metadata-two-keys": {"metadata": (("color", "blue"), ("n", 1))},
    "metadata-list": {"metadata": (("nested", [1, 1]),)},
    "metadata-object": {"metadata": (("obj", {"k": 0}),)},
    "metadata-missing-key": {"metadata": (("nope", "x"),)},
    "created-after": {"created_after": T0 + timedelta(hours=10)},
    "created-before": {"created_before": T0 + timedelta(hours=10)},
    "created-window": {"created_after": T0 + timedelta(hours=3),
                       "created_before": T0 + timedelta(hours=9)},
    "combined": {"user_id": "u1", "tags": ("red",), "memory_types": ("fact", "general"),
                 "namespace": "default", "include_superseded": True},
    "no-such-user": {"user_id": "nobody"},
    "other-tenant": {"tenant_id": "t2", "agent_id": "a1"},
}
_EMPTY = {"no-such-user", "metadata-missing-key"}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_queries_respect_filters(store: Store, mk: Maker, variant: str) -> None:
    populate(mk)
    f = F(**VARIANTS[variant])
    expected = {mid for mid, r in mk.records.items() if visible(r, f)}
    assert bool(expected) != (variant in _EMPTY), "the data set should exercise this filter"
    for seed in (7, 8):
        q = unit(seed)
        brute = mk.ranked(f, q)
        near = store.nearest(f, q, 100)
        assert ids(near) == ids(brute)
        np.testing.assert_allclose([s for _, s in near], [s for _, s in brute], atol=1e-5)
        # the filter applies before the top-k cut, not after
        assert ids(store.nearest(f, q, 3)) == ids(brute)[:3]
        sims = store.similarities(f, q, [*mk.records, "no-such-id"])
        assert set(sims) == expected
        for mid, s in sims.items():
            assert s == pytest.approx(float(mk.vectors[mid] @ q), abs=1e-5)
        # with `include`: the top k, then the rest of `include` that the filters admit
        for k in (0, 3):
            both = store.nearest(f, q, k, include=[*mk.records, "no-such-id"])
            assert ids(both)[:k] == ids(brute)[:k]
            assert len(both) == len(expected) and dict(both) == pytest.approx(sims, abs=1e-5)
    assert set(ids(store.keyword_search(f, "apple", 100))) == expected
    items, total = store.list(f, 100, 0)
    assert {r.id for r in items} == expected
    assert total == len(expected)


def test_expiry_is_relative_to_now(store: Store, mk: Maker) -> None:
    exp = T0 + timedelta(days=1)
    rec = mk.add(content="apple short lived", expires_at=exp)
    q = mk.vectors[rec.id]
    for now, seen in ((exp - timedelta(microseconds=1), True), (exp, False),
                      (exp + timedelta(days=1), False)):
        f = F(now=now)
        assert (ids(store.nearest(f, q, 5)) == [rec.id]) is seen
        assert (ids(store.keyword_search(f, "apple", 5)) == [rec.id]) is seen
        assert (store.list(f, 5, 0)[1] == 1) is seen
        assert (rec.id in store.similarities(f, q, [rec.id])) is seen
        # expired memories stay invisible with include_superseded too
        f = F(now=now, include_superseded=True)
        assert (ids(store.nearest(f, q, 5)) == [rec.id]) is seen



def test_metadata_filter_values(store: Store, mk: Maker) -> None:
    a = mk.add(content="apple a", metadata={
        "place": {"city": "Zürich", "zip": 8001}, "a.b": "dotted", "list": ["ä", 1, None],
        "flag": False, "num": 1.5, "text": 'quote " and \\ backslash'})
    b = mk.add(content="apple b", metadata={"place": {"city": "Bern"}, "flag": True})
    cases: list[tuple[str, Any, set[str]]] = [
        ("place", {"city": "Zürich", "zip": 8001}, {a.id}), ("place", {"city": "Bern"}, {b.id}),
        ("place", {"city": "Genf"}, set()), ("a.b", "dotted", {a.id}),
        ("list", ["ä", 1, None], {a.id}), ("list", ["ä", 1], set()), ("flag", False, {a.id}),
        ("flag", True, {b.id}), ("num", 1.5, {a.id}), ("text", 'quote " and \\ backslash', {a.id}),
    ]
    for key, value, want in cases:
        f = F(metadata=((key, value),))
        assert {r.id for r in store.list(f, 10, 0)[0]} == want, key
        assert set(ids(store.nearest(f, unit(1), 10))) == want, key
        assert set(ids(store.keyword_search(f, "apple", 10))) == want, key


# -- nearest and similarities --------------------------------------------------------------


def test_nearest_is_best_first_cosine(store: Store, mk: Maker) -> None:
    for _ in range(40):
        mk.add()
    for seed in range(5):
        q = unit(seed)
        brute = mk.ranked(F(user_id="u1"), q)
        for k in (1, 5, 40, 100):
            got = store.nearest(F(user_id="u1"), q, k)
            assert ids(got) == ids(brute)[:k]
            scores = [s for _, s in got]
            assert scores == sorted(scores, reverse=True)
            np.testing.assert_allclose(scores, [s for _, s in brute[:k]], atol=1e-5)
            assert all(isinstance(mid, str) and isinstance(s, float) for mid, s in got)
    assert store.nearest(F(), unit(1), 0) == []
    # a stored vector is its own best match, with cosine 1
    some = next(iter(mk.vectors))
    best = store.nearest(F(), mk.vectors[some], 1)
    assert ids(best) == [some] and best[0][1] == pytest.approx(1.0, abs=1e-5)


def test_nearest_unordered_gives_the_same_memories(store: Store, mk: Maker) -> None:
    for i in range(40):
        mk.add(user_id=("u1", "u2")[i % 2], agent_id=("a1", "a2", None)[i % 3])
    outside = [r.id for r in mk.records.values() if r.user_id == "u2"][:3]
    for seed in range(4):
        q = unit(seed)
        for f in (F(user_id="u1"), F(user_id="u1", agent_id="a1"), F()):
            for k in (1, 5, 20, 100):
                for include in ((), outside, list(mk.records)):
                    want = store.nearest(f, q, k, include=include)
                    got = store.nearest(f, q, k, include=include, ordered=False)
                    assert sorted(got) == sorted(want), (f, k, len(include))
                    assert len(ids(got)) == len(set(ids(got)))


def test_nearest_merges_users_best_first(store: Store, mk: Maker) -> None:
    for i in range(30):
        mk.add(user_id=("u1", "u2", "u3", None)[i % 4])
    q = unit(99)
    assert ids(store.nearest(F(), q, 10)) == ids(mk.ranked(F(), q))[:10]
    # included memories outside the top 10 come after it, each once, wherever they rank
    # in their own user's partition
    both = store.nearest(F(), q, 10, include=list(mk.records))
    assert ids(both)[:10] == ids(mk.ranked(F(), q))[:10]
    assert sorted(ids(both)) == sorted(mk.records)


def test_candidates_are_each_vectors_nearest_and_the_included(store: Store, mk: Maker) -> None:
    """`candidates`: the union of each vector's top k and of `include` (visible or not),
    with every vector's cosine (0 where not visible) and the rank fields, under every
    filter variant; the same whether the scope is held yet or not."""
    populate(mk)
    for i in range(12):  # a user with more rows than the smaller k
        mk.add(user_id="u3", content=f"apple pie {i}", agent_id=("a1", None)[i % 2],
               importance=i / 12, session_id=f"s{i % 3}")
    others = [mid for mid, r in mk.records.items() if r.user_id == "u2"][:2]
    for variant in (*VARIANTS, "u3", "u3-agent"):
        kw = {"u3": {"user_id": "u3"},
              "u3-agent": {"user_id": "u3", "agent_id": "a1"}}.get(variant) \
            or VARIANTS[variant]
        f = F(**kw)
        seen = [mid for mid, r in mk.records.items() if visible(r, f)]
        for vectors, wanted in (([unit(1)], [3]), ([unit(2)], [100]),
                                ([unit(3), unit(4)], [4, 2]), ([unit(5)], [0])):
            brute = [mk.ranked(f, v) for v in vectors]
            for include in ([], seen[-3:], [*others, "no-such-id", *seen[:1]]):
                got = store.candidates(f, vectors, wanted, set(include))
                want = set(include).union(*(ids(b[:k]) for b, k in zip(brute, wanted, strict=True)))
                assert len(got.ids) == len(set(got.ids)) and set(got.ids) == want, variant
                for v, sims in enumerate(got.similarities):
                    assert sims.dtype == np.float64 and sims.shape == (len(got.ids),)
                    ref = dict(brute[v])
                    np.testing.assert_allclose(
                        sims, [ref.get(mid, 0.0) for mid in got.ids], atol=1e-5)
                cols = store.rank_columns(f.tenant_id, got.ids, scope=f)
                for name in ("found", "importance", "relevance", "decay_rate", "pinned",
                             "created", "last_accessed", "session_id"):
                    np.testing.assert_array_equal(getattr(got.columns, name),
                                                  getattr(cols, name), err_msg=name)
    assert store.candidates(F(user_id="nobody"), [unit(1)], [5], set()).ids == []


def test_nearest_on_empty_store(store: Store) -> None:
    assert store.nearest(F(), unit(1), 5) == []
    assert store.nearest(F(user_id="u1", exact_scope=True), unit(1), 5) == []
    assert store.similarities(F(), unit(1), ["x"]) == {}
    assert store.keyword_search(F(), "apple", 5) == []
    assert store.list(F(), 5, 0) == ([], 0)


def test_similarities(store: Store, mk: Maker) -> None:
    a, b = mk.add(), mk.add(user_id="u2")
    q = unit(5)
    sims = store.similarities(F(), q, [a.id, b.id, "unknown"])
    assert set(sims) == {a.id, b.id}
    assert sims[a.id] == pytest.approx(float(mk.vectors[a.id] @ q), abs=1e-5)
    assert sims[b.id] == pytest.approx(float(mk.vectors[b.id] @ q), abs=1e-5)
    assert set(store.similarities(F(user_id="u2"), q, [a.id, b.id])) == {b.id}
    assert store.similarities(F(), q, []) == {}


# -- keyword search -----------------------------------------------------------------------


def test_keyword_search_finds_words_and_ranks(store: Store, mk: Maker) -> None:
    many = mk.add(content="apple apple apple pie")
    one = mk.add(content="apple with pear and plum and fig and kiwi")
    none = mk.add(content="pear plum")
    assert ids(store.keyword_search(F(), "apple", 10)) == [many.id, one.id]
    assert ids(store.keyword_search(F(), "kiwi", 10)) == [one.id]
    assert set(ids(store.keyword_search(F(), "plum", 10))) == {one.id, none.id}
    assert ids(store.keyword_search(F(), "APPLE", 10)) == [many.id, one.id]
    assert ids(store.keyword_search(F(), "the apple", 10)) == [many.id, one.id]
    assert store.keyword_search(F(), "zebra", 10) == []
    hits = store.keyword_search(F(), "apple pear", 10)
    assert set(ids(hits)) == {many.id, one.id, none.id}
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(isinstance(s, float) for s in scores)
    # the best match on more of the query words ranks first
    assert ids(store.keyword_search(F(), "fig kiwi apple", 10))[0] == one.id
    assert ids(store.keyword_search(F(), "apple", 1)) == [many.id]
    assert store.keyword_search(F(), "apple", 0) == []


def test_keyword_filters_apply_before_the_top_k_cut(store: Store, mk: Maker) -> None:
    """Far more better-scoring memories are filtered out than k: the visible ones still come
    back, best first (a store that ranks first and filters in chunks must keep going)."""
    for i in range(150):
        mk.add(content=f"apple apple apple {i}", agent_id="a2")
    weak = mk.add(content="apple with many other words around it here", agent_id="a1")
    strong = mk.add(content="apple apple and a pear", agent_id="a1")
    mk.add(content="apple apple apple expired", agent_id="a1",
           expires_at=NOW - timedelta(seconds=1))
    f = F(user_id="u1", agent_id="a1")
    assert ids(store.keyword_search(f, "apple", 2)) == [strong.id, weak.id]
    assert ids(store.keyword_search(f, "apple", 1)) == [strong.id]
    assert len(store.keyword_search(F(user_id="u1"), "apple", 200)) == 152


def test_keyword_idf_is_the_tenants(store: Store, mk: Maker) -> None:
    """Within u1 each word occurs once; across the tenant "coffee" is common, so the memory
    with the rare word ranks first (idf counted within the user would tie them)."""
    common = mk.add(content="coffee meeting notes")
    rare = mk.add(content="zanzibar meeting notes")
    for i in range(30):
        mk.add(content=f"coffee order {i}", user_id="u2")
    for i in range(30):  # another tenant's words do not count
        mk.add(content=f"zanzibar trip {i}", tenant_id="t2")
    hits = store.keyword_search(F(user_id="u1"), "coffee zanzibar", 5)
    assert ids(hits) == [rare.id, common.id]
    assert hits[0][1] > 1.5 * hits[1][1]
    for i in range(60):  # zanzibar turns common in this (small) tenant: seen at once
        mk.add(content=f"zanzibar again {i}", user_id="u3")
    assert ids(store.keyword_search(F(user_id="u1"), "coffee zanzibar", 5)) == [
        common.id, rare.id]


def test_keyword_idf_of_a_large_tenant_comes_from_the_background(
        store: Store, mk: Maker, monkeypatch: pytest.MonkeyPatch) -> None:
    from engramdb.storage import keyword_stats

    monkeypatch.setattr(keyword_stats, "EXACT_ROWS", 1)
    monkeypatch.setattr(keyword_stats, "INLINE_ROWS", 1)
    common = mk.add(content="coffee meeting notes")
    rare = mk.add(content="zanzibar meeting notes")
    for i in range(30):
        mk.add(content=f"coffee order {i}", user_id="u2")
    # no count yet: every word falls back to the scope's own idf, and still matches
    first = store.keyword_search(F(user_id="u1"), "coffee zanzibar", 5)
    assert set(ids(first)) == {common.id, rare.id}
    stats = store._kw_stats  # type: ignore[attr-defined]
    stats.wait()
    hits = store.keyword_search(F(user_id="u1"), "coffee zanzibar", 5)
    assert ids(hits) == [rare.id, common.id] and hits[0][1] > 1.5 * hits[1][1]
    # one word counted, one not: both kinds in one query
    mixed = store.keyword_search(F(user_id="u1"), "coffee meeting", 5)
    assert set(ids(mixed)) == {common.id, rare.id}


def test_keyword_search_stopword_only_query(store: Store, mk: Maker) -> None:
    rec = mk.add(content="it is what it is")
    other = mk.add(content="entirely unrelated")
    got = ids(store.keyword_search(F(), "what is it", 10))
    assert rec.id in got and other.id not in got


FTS_SYNTAX = [
    '" OR *', "NEAR(apple pear)", "content:apple", "-apple", '"apple', 'apple"', '"""',
    "apple AND", "OR", "AND", "NOT", "NOT apple", "apple NOT pear", "*", "apple*", "^apple",
    "(", ")", "((apple)", "{content}: apple", "scope : apple", "content : (apple",
    "apple NEAR/2 pear", "'; DROP TABLE memories; --", "🍎", "🍎 apple 🍐", "", "   ",
    "\n\t", "\x00", "_", "__init__", "a" * 5000, "apple " * 200, "naïve 日本語 apple",
    "\\", "apple:pear:", "+apple", "~apple", "apple|pear", "[apple]", "$.content",
    "%", "?", "'", "`apple`",
]


@pytest.mark.parametrize("query", FTS_SYNTAX)
def test_keyword_search_treats_syntax_as_plain_words(
    store: Store, mk: Maker, query: str
) -> None:
    apple = mk.add(content="apple pear near content")
    mk.add(content="something else entirely")
    hits = store.keyword_search(F(), query, 10)
    assert isinstance(hits, list)
    assert all(isinstance(mid, str) and isinstance(s, float) for mid, s in hits)
    if "apple" in query.lower():
        assert apple.id in ids(hits)
    for f in (F(user_id="u1"), F(user_id="u1", agent_id="x"), F(tags=("t",))):
        assert isinstance(store.keyword_search(f, query, 10), list)
    # and the store still works afterwards
    assert ids(store.keyword_search(F(), "apple", 10)) == [apple.id]


# -- find_by_hash -------------------------------------------------------------------------


def test_find_by_hash_exact_scope(store: Store, mk: Maker) -> None:
    h = "the-hash"
    plain = mk.add(integrity_hash=h)
    with_agent = mk.add(integrity_hash=h, agent_id="a1")
    other_ns = mk.add(integrity_hash=h, namespace="ns2")
    no_user = mk.add(integrity_hash=h, user_id=None)
    expired_by_time = mk.add(integrity_hash=h, user_id="u2", expires_at=T0)
    mk.add(integrity_hash=h, user_id="u3", status=Status.SUPERSEDED)
    mk.add(integrity_hash=h, user_id="u4", status=Status.EXPIRED)
    assert store.find_by_hash("t1", "u1", None, "default", h) == plain
    assert store.find_by_hash("t1", "u1", "a1", "default", h) == with_agent
    assert store.find_by_hash("t1", "u1", None, "ns2", h) == other_ns
    assert store.find_by_hash("t1", None, None, "default", h) == no_user
    assert store.find_by_hash("t1", "u2", None, "default", h) == expired_by_time
    assert store.find_by_hash("t1", "u3", None, "default", h) is None
    assert store.find_by_hash("t1", "u4", None, "default", h) is None
    assert store.find_by_hash("t1", "u1", "a2", "default", h) is None
    assert store.find_by_hash("t1", "u1", None, "ns3", h) is None
    assert store.find_by_hash("t1", "u1", None, "default", "other") is None
    assert store.find_by_hash("t2", "u1", None, "default", h) is None


# -- update ---------------------------------------------------------------------------------


def test_update_changes_row_vector_and_fulltext(store: Store, mk: Maker) -> None:
    rec = mk.add(content="the original walrus text", tags=["a"], metadata={"v": 1})
    neighbours = [mk.add() for _ in range(5)]
    old_vec = mk.vectors[rec.id]
    assert ids(store.nearest(F(), old_vec, 1)) == [rec.id]  # warm any cache
    new_vec = unit(4242)
    later = rec.updated_at + timedelta(hours=1)
    new = mk.update(rec, vector=new_vec, content="a rewritten narwhal text", tags=["b", "c"],
                    metadata={"v": 2, "w": [1]}, integrity_hash="new-hash", updated_at=later,
                    importance=0.9, tier=Tier.MEDIUM, memory_type=MemoryType.FACT,
                    pinned=True, access_count=3, last_accessed_at=later, tokens_used=4)
    assert store.get("t1", rec.id) == new
    np.testing.assert_array_equal(store.get_vector("t1", rec.id), new_vec)
    best = store.nearest(F(), new_vec, 1)
    assert ids(best) == [rec.id] and best[0][1] == pytest.approx(1.0, abs=1e-5)
    assert ids(store.nearest(F(), new_vec, 10)) == ids(mk.ranked(F(), new_vec))
    assert ids(store.nearest(F(), old_vec, 10)) == ids(mk.ranked(F(), old_vec))
    assert store.similarities(F(), old_vec, [rec.id])[rec.id] == pytest.approx(
        float(new_vec @ old_vec), abs=1e-5)
    assert ids(store.keyword_search(F(), "narwhal", 10)) == [rec.id]
    assert store.keyword_search(F(), "walrus", 10) == []
    assert store.find_by_hash("t1", "u1", None, "default", "new-hash") == new
    assert store.find_by_hash("t1", "u1", None, "default", rec.integrity_hash) is None
    assert [r.id for r in store.list(F(tags=("c",)), 10, 0)[0]] == [rec.id]
    assert store.list(F(tags=("a",)), 10, 0)[1] == 0
    assert ids(store.nearest(F(metadata=(("v", 2),)), old_vec, 10)) == [rec.id]
    assert [e.event for e in store.history("t1", rec.id)] == ["create", "update"]
    for n in neighbours:
        assert store.get("t1", n.id) == n


def test_update_without_vector_keeps_vector(store: Store, mk: Maker) -> None:
    rec = mk.add(content="kept words here")
    vec = mk.vectors[rec.id]
    store.nearest(F(), vec, 1)
    new = mk.update(rec, vector=None, importance=0.1, tags=["x"], session_id="s9")
    assert store.get("t1", rec.id) == new
    np.testing.assert_array_equal(store.get_vector("t1", rec.id), vec)
    assert ids(store.nearest(F(session_id="s9"), vec, 1)) == [rec.id]
    assert store.nearest(F(session_id=None, tags=("y",)), vec, 1) == []
    assert ids(store.keyword_search(F(session_id="s9"), "kept", 5)) == [rec.id]


def test_update_status_and_expiry_hide_the_memory(store: Store, mk: Maker) -> None:
    rec = mk.add(content="soon superseded")
    vec = mk.vectors[rec.id]
    store.nearest(F(), vec, 1)
    sup = mk.update(rec, status=Status.SUPERSEDED, superseded_by="newer")
    assert store.nearest(F(), vec, 5) == []
    assert store.keyword_search(F(), "superseded", 5) == []
    assert store.list(F(), 5, 0) == ([], 0)
    assert ids(store.nearest(F(include_superseded=True), vec, 5)) == [rec.id]
    assert ids(store.keyword_search(F(include_superseded=True), "superseded", 5)) == [rec.id]
    active = mk.update(sup, status=Status.ACTIVE, superseded_by=None)
    assert ids(store.nearest(F(), vec, 5)) == [rec.id]
    mk.update(active, expires_at=NOW - timedelta(seconds=1))
    assert store.nearest(F(), vec, 5) == []
    assert store.nearest(F(include_superseded=True), vec, 5) == []
    assert store.keyword_search(F(), "superseded", 5) == []
    assert store.nearest(F(now=NOW - timedelta(days=1)), vec, 5)[0][0] == rec.id


def test_update_moves_between_agent_session_namespace(store: Store, mk: Maker) -> None:
    rec = mk.add(agent_id="a1", session_id="s1", namespace="ns1")
    vec = mk.vectors[rec.id]
    assert ids(store.nearest(F(agent_id="a1"), vec, 1)) == [rec.id]
    mk.update(rec, agent_id="a2", session_id=None, namespace="ns2")
    assert store.nearest(F(agent_id="a1"), vec, 1) == []
    assert store.nearest(F(session_id="s1"), vec, 1) == []
    assert store.nearest(F(namespace="ns1"), vec, 1) == []
    assert ids(store.nearest(F(agent_id="a2", namespace="ns2"), vec, 1)) == [rec.id]
    assert ids(store.nearest(F(user_id="u1", agent_id="a2", exact_scope=True), vec, 1)) == [
        rec.id]


def test_update_of_missing_memory_raises(store: Store, mk: Maker) -> None:
    ghost = mk.record()
    with pytest.raises(StoreError):
        store.update(ghost, unit(1), mk.event(ghost, "update", {}))
    assert store.get("t1", ghost.id) is None
    assert store.history("t1", ghost.id) == []


# -- delete ---------------------------------------------------------------------------------


def test_delete_removes_everything_but_a_contentless_history(store: Store, mk: Maker) -> None:
    secret = "my secret passphrase zanzibar"
    keep = [mk.add(content=f"kept apple {i}") for i in range(4)]
    rec = mk.add(content=secret, metadata={"note": secret}, integrity_hash="secret-hash")
    vec = mk.vectors[rec.id]
    store.nearest(F(), vec, 1)  # warm any cache
    rec2 = mk.update(rec, content=f"{secret} again", tags=["t"])
    assert ids(store.keyword_search(F(), "zanzibar", 5)) == [rec.id]
    assert any(secret in json.dumps(e.changes) for e in store.history("t1", rec.id))

    assert mk.delete(rec2) is True
    assert store.get("t1", rec.id) is None
    assert store.get_many("t1", [rec.id]) == {}
    assert store.get_vector("t1", rec.id) is None
    assert rec.id not in ids(store.nearest(F(), vec, 10))
    assert rec.id not in store.similarities(F(), vec, [rec.id])
    assert store.keyword_search(F(), "zanzibar", 5) == []
    assert store.keyword_search(F(include_superseded=True), "passphrase", 5) == []
    assert rec.id not in [r.id for r in store.list(F(include_superseded=True), 50, 0)[0]]
    assert store.find_by_hash("t1", "u1", None, "default", "secret-hash") is None
    assert rec.id not in [m.record.id for m in store.iter_all()]

    events = store.history("t1", rec.id)
    assert [e.event for e in events] == ["create", "update", "delete"]
    assert events[-1].changes == {}
    for e in events:
        text = json.dumps(e.changes) + (e.actor or "")
        assert "zanzibar" not in text and "passphrase" not in text
        assert e.memory_id == rec.id and e.tenant_id == "t1"

    # the others are untouched and still found by every index
    for k in keep:
        assert store.get("t1", k.id) == k
    assert ids(store.nearest(F(), unit(77), 10)) == ids(mk.ranked(F(), unit(77)))
    assert set(ids(store.keyword_search(F(), "apple", 10))) == {k.id for k in keep}

    assert store.delete("t1", rec.id, mk.event(rec, "delete", {})) is False
    assert store.delete("t1", "never-existed", mk.event(rec, "delete", {})) is False
    # the hash is free again
    again = mk.add(content=secret, integrity_hash="secret-hash")
    assert store.find_by_hash("t1", "u1", None, "default", "secret-hash") == again


# -- list -----------------------------------------------------------------------------------


def test_list_pagination_newest_first(store: Store, mk: Maker) -> None:
    recs = [mk.add(created_at=T0 + timedelta(hours=h)) for h in (3, 1, 4, 1.5, 5, 9, 2)]
    mk.add(user_id="u2", created_at=T0 + timedelta(hours=50))
    newest_first = [r.id for r in sorted(recs, key=lambda r: r.created_at, reverse=True)]
    f = F(user_id="u1")
    seen: list[str] = []
    for offset in range(0, 9, 3):
        items, total = store.list(f, 3, offset)
        assert total == 7
        assert len(items) == min(3, 7 - offset)
        seen += [r.id for r in items]
    assert seen == newest_first
    assert store.list(f, 3, 7) == ([], 7)
    assert store.list(f, 3, 100) == ([], 7)
    items, total = store.list(f, 100, 0)
    assert [r.id for r in items] == newest_first and total == 7
    assert items[0] == mk.records[newest_first[0]]
    items, total = store.list(F(), 2, 0)
    assert total == 8 and items[0].user_id == "u2"


def test_list_pages_through_equal_timestamps(store: Store, mk: Maker) -> None:
    recs = [mk.add(created_at=T0) for _ in range(7)]
    seen: list[str] = []
    for offset in range(0, 7, 2):
        items, total = store.list(F(), 2, offset)
        assert total == 7
        seen += [r.id for r in items]
    assert sorted(seen) == sorted(r.id for r in recs)
    assert len(set(seen)) == 7


# -- history --------------------------------------------------------------------------------


def test_history_in_write_order(store: Store, mk: Maker) -> None:
    rec = mk.add(content="v1")
    r = rec
    for i in range(2, 6):
        r = mk.update(r, content=f"v{i}")
    mk.update(r, vector=unit(3), status=Status.SUPERSEDED)
    other = mk.add()
    events = store.history("t1", rec.id)
    assert [e.event for e in events] == ["create"] + ["update"] * 5
    assert [e.changes for e in events[:2]] == [{"content": "v1"}, {"content": "changed"}]
    for e in events:
        assert isinstance(e, HistoryEvent)
        assert e.memory_id == rec.id and e.tenant_id == "t1" and e.actor == "tester"
        assert e.at.utcoffset() == timedelta(0)
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert len({e.id for e in events}) == 6
    assert [e.event for e in store.history("t1", other.id)] == ["create"]
    assert store.history("t1", "unknown") == []


def test_history_round_trips_event_fields(store: Store, mk: Maker) -> None:
    rec = mk.record()
    at = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    ev = HistoryEvent(id="ev-1", memory_id=rec.id, tenant_id="t1", event="create", at=at,
                      actor=None, changes={"content": "ü ☕", "n": [1, {"x": None}], "b": True})
    store.insert(rec, unit(1), ev)
    assert store.history("t1", rec.id) == [ev]


# -- iter_all -------------------------------------------------------------------------------


def test_iter_all_yields_every_memory_with_its_vector(store: Store, mk: Maker) -> None:
    populate(mk)
    doomed = mk.add()
    mk.delete(doomed)
    got = list(store.iter_all())
    assert all(isinstance(m, StoredMemory) for m in got)
    assert {m.record.id for m in got} == set(mk.records)
    assert len(got) == len(mk.records)
    for m in got:
        assert m.record == mk.records[m.record.id]
        assert m.vector is not None
        np.testing.assert_array_equal(m.vector, mk.vectors[m.record.id])
    t2 = [m.record.id for m in store.iter_all("t2")]
    assert t2 == [mid for mid, r in mk.records.items() if r.tenant_id == "t2"]
    assert {m.record.id for m in store.iter_all("t1")} == {
        mid for mid, r in mk.records.items() if r.tenant_id == "t1"}
    assert list(store.iter_all("nobody")) == []


# -- embedding binding and vector shapes ----------------------------------------------------


def test_bind_embedding(store: Store, mk: Maker) -> None:
    store.bind_embedding("test-model", 8)  # the same binding again is fine
    rec = mk.add()
    with pytest.raises(EmbeddingMismatch):
        store.bind_embedding("other-model", 8)
    with pytest.raises(EmbeddingMismatch):
        store.bind_embedding("test-model", 16)
    with pytest.raises(StoreError):  # EmbeddingMismatch is a StoreError
        store.bind_embedding("other-model", 384)
    # the store keeps its original binding
    store.bind_embedding("test-model", 8)
    second = mk.add()
    assert ids(store.nearest(F(), mk.vectors[rec.id], 1)) == [rec.id]
    assert ids(store.nearest(F(), mk.vectors[second.id], 1)) == [second.id]


@pytest.mark.parametrize("shape", [(7,), (9,), (16,), (1, 8), (8, 1), (2, 8), (), (0,)])
def test_wrong_shaped_vector_is_rejected(store: Store, mk: Maker, shape: tuple[int, ...]) -> None:
    rec = mk.record()
    bad = np.ones(shape, dtype=np.float32)
    with pytest.raises(EmbeddingMismatch):
        store.insert(rec, bad, mk.event(rec))
    assert store.get("t1", rec.id) is None
    assert store.history("t1", rec.id) == []
    assert store.list(F(), 5, 0) == ([], 0)
    good = mk.add()
    with pytest.raises(EmbeddingMismatch):
        store.update(replace(good, content="changed"), bad, mk.event(good, "update", {}))
    assert store.get("t1", good.id) == good
    np.testing.assert_array_equal(store.get_vector("t1", good.id), mk.vectors[good.id])


# -- atomic write sections ------------------------------------------------------------------


class Boom(Exception):
    pass


def test_atomic_rollback_leaves_nothing(store: Store, mk: Maker) -> None:
    a, b = mk.record(content="rolled back apple"), mk.record(content="another apple",
                                                             user_id="u1")
    with pytest.raises(Boom), store.atomic("t1", "u1"):
        store.insert(a, unit(1), mk.event(a))
        store.insert(b, unit(2), mk.event(b))
        raise Boom
    for rec, vec in ((a, unit(1)), (b, unit(2))):
        assert store.get("t1", rec.id) is None
        assert store.get_vector("t1", rec.id) is None
        assert store.history("t1", rec.id) == []
        assert store.nearest(F(), vec, 5) == []
        assert store.nearest(F(user_id="u1", exact_scope=True), vec, 5) == []
        assert store.similarities(F(), vec, [rec.id]) == {}
    assert store.keyword_search(F(), "apple", 5) == []
    assert store.list(F(), 5, 0) == ([], 0)
    assert store.find_by_hash("t1", "u1", None, "default", a.integrity_hash) is None
    assert list(store.iter_all()) == []
    # the store is not wedged: the same records can be written afterwards
    store.insert(a, unit(1), mk.event(a))
    assert store.get("t1", a.id) == a
    assert ids(store.nearest(F(), unit(1), 5)) == [a.id]


def test_atomic_rollback_after_reads_inside_the_section(store: Store, mk: Maker) -> None:
    """Reading inside a section that is then rolled back must not leave its uncommitted
    writes visible afterwards (in caches or otherwise)."""
    existing = mk.add()
    ghost = mk.record(content="ghost apple")
    with pytest.raises(Boom), store.atomic("t1", "u1"):
        store.insert(ghost, unit(1), mk.event(ghost))
        store.nearest(F(), unit(1), 5)
        store.nearest(F(user_id="u1"), unit(1), 5)
        store.keyword_search(F(), "ghost", 5)
        raise Boom
    assert ids(store.nearest(F(), unit(1), 5)) == [existing.id]
    assert ids(store.nearest(F(user_id="u1"), unit(1), 5)) == [existing.id]
    assert store.keyword_search(F(), "ghost", 5) == []
    later = mk.add()  # a committed write to the same scope after the rollback
    assert set(ids(store.nearest(F(user_id="u1"), unit(1), 5))) == {existing.id, later.id}


def test_atomic_rollback_of_update_and_delete(store: Store, mk: Maker) -> None:
    a = mk.add(content="original aardvark")
    b = mk.add(content="doomed badger")
    va, vb = mk.vectors[a.id], mk.vectors[b.id]
    store.nearest(F(), va, 1)
    with pytest.raises(Boom), store.atomic("t1", "u1"):
        store.update(replace(a, content="changed capybara"), unit(3), mk.event(a, "update"))
        store.delete("t1", b.id, mk.event(b, "delete", {}))
        raise Boom
    assert store.get("t1", a.id) == a and store.get("t1", b.id) == b
    np.testing.assert_array_equal(store.get_vector("t1", a.id), va)
    assert ids(store.nearest(F(), va, 1)) == [a.id]
    assert ids(store.nearest(F(), vb, 1)) == [b.id]
    assert ids(store.keyword_search(F(), "aardvark", 5)) == [a.id]
    assert ids(store.keyword_search(F(), "badger", 5)) == [b.id]
    assert store.keyword_search(F(), "capybara", 5) == []
    assert [e.event for e in store.history("t1", b.id)] == ["create"]
    assert store.history("t1", b.id)[0].changes == {"content": "doomed badger"}


def test_atomic_nested_sections_roll_back_together(store: Store, mk: Maker) -> None:
    a, b = mk.record(), mk.record()
    with pytest.raises(Boom), store.atomic("t1", "u1"):
        store.insert(a, unit(1), mk.event(a))
        with store.atomic("t1", "u1"):
            store.insert(b, unit(2), mk.event(b))
        raise Boom
    assert store.get("t1", a.id) is None and store.get("t1", b.id) is None
    assert store.nearest(F(), unit(1), 5) == []


def test_atomic_commits_everything(store: Store, mk: Maker) -> None:
    recs = [mk.record(user_id="u1"), mk.record(user_id="u1"), mk.record(user_id="u2")]
    with store.atomic("t1", "u1"):
        for i, r in enumerate(recs):
            store.insert(r, unit(i), mk.event(r))
    for i, r in enumerate(recs):
        assert store.get("t1", r.id) == r
        assert ids(store.nearest(F(), unit(i), 1)) == [r.id]


def test_atomic_section_over_several_scopes_rolls_back_and_commits_as_one(
    store: Store, mk: Maker
) -> None:
    """add_many saves a chunk's users in one section naming all their scopes."""
    doomed = [mk.record(user_id=u, content=f"doomed {u} walrus") for u in ("u1", "u2", None)]
    with pytest.raises(Boom), store.atomic("t1", "u1", "u2", None):
        for i, r in enumerate(doomed):
            store.insert(r, unit(i), mk.event(r))
            store.nearest(F(user_id=r.user_id, exact_scope=True), unit(i), 5)
        raise Boom
    for i, r in enumerate(doomed):
        assert store.get("t1", r.id) is None
        assert store.nearest(F(user_id=r.user_id, exact_scope=True), unit(i), 5) == []
    assert store.keyword_search(F(), "walrus", 5) == []
    kept = [mk.record(user_id=u, content=f"kept {u} walrus") for u in ("u2", "u1", None)]
    with store.atomic("t1", "u2", "u1", None, "u1"):
        for i, r in enumerate(kept):
            store.insert(r, unit(i), mk.event(r))
    for i, r in enumerate(kept):
        assert store.get("t1", r.id) == r
        assert ids(store.nearest(F(user_id=r.user_id, exact_scope=True), unit(i), 5)) == [r.id]
    assert sorted(ids(store.keyword_search(F(), "walrus", 5))) == sorted(r.id for r in kept)


def test_sections_over_overlapping_scopes_in_any_order_do_not_deadlock(
    store: Store, mk: Maker
) -> None:
    """Each thread names the same scopes in another order; all sections must finish."""
    orders = [("u1", "u2", "u3"), ("u3", "u2", "u1"), ("u2", "u3", "u1"), ("u3", "u1")]
    errors: list[BaseException] = []
    # Made up front: the Maker counts ids and is not thread-safe.
    work = {
        n: [[(r, mk.event(r)) for r in (mk.record(user_id=u) for u in
                                         orders[(n + j) % len(orders)])] for j in range(15)]
        for n in range(4)
    }

    def writer(n: int) -> None:
        try:
            for j, section in enumerate(work[n]):
                with store.atomic("t1", *(r.user_id for r, _ in section)):
                    for r, event in section:
                        store.insert(r, unit(n * 100 + j), event)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "sections deadlocked"
    assert errors == []
    expected = sum(len(orders[(n + j) % len(orders)]) for n in range(4) for j in range(15))
    assert len(list(store.iter_all())) == expected


def test_reads_inside_a_section_see_its_own_writes(store: Store, mk: Maker) -> None:
    """find_by_hash and nearest inside a write section see what the section wrote."""
    before = mk.add()
    store.nearest(F(user_id="u1"), unit(1), 5)
    a, b = mk.record(content="alpha words"), mk.record(content="beta words")
    with store.atomic("t1", "u1"):
        store.insert(a, unit(1), mk.event(a))
        assert store.find_by_hash("t1", "u1", None, "default", a.integrity_hash) == a
        assert ids(store.nearest(F(user_id="u1"), unit(1), 1)) == [a.id]
        store.insert(b, unit(2), mk.event(b))
        assert ids(store.nearest(F(user_id="u1", exact_scope=True), unit(2), 1)) == [b.id]
        assert ids(store.nearest(F(), unit(2), 1)) == [b.id]
        assert set(ids(store.nearest(F(), unit(3), 5))) == {before.id, a.id, b.id}
        store.delete("t1", before.id, mk.event(before, "delete", {}))
        assert set(ids(store.nearest(F(), unit(3), 5))) == {a.id, b.id}
    assert set(ids(store.nearest(F(), unit(3), 5))) == {a.id, b.id}
    assert ids(store.nearest(F(), unit(2), 1)) == [b.id]


# -- schema and the exact-duplicate index ---------------------------------------------------


def test_migrate_is_idempotent(store: Store, mk: Maker) -> None:
    rec = mk.add()
    store.migrate()
    store.migrate()
    store.bind_embedding("test-model", 8)
    assert store.get("t1", rec.id) == rec
    second = mk.add()
    assert set(ids(store.nearest(F(), unit(1), 5))) == {rec.id, second.id}


def test_unique_index_rejects_a_second_active_exact_duplicate(store: Store, mk: Maker) -> None:
    first = mk.add(integrity_hash="h", agent_id="a1", namespace="ns")
    dup = mk.record(integrity_hash="h", agent_id="a1", namespace="ns", content="dup apple")
    with pytest.raises(StoreError):
        store.insert(dup, unit(5), mk.event(dup))
    assert store.get("t1", dup.id) is None
    assert store.history("t1", dup.id) == []
    assert ids(store.nearest(F(), unit(5), 5)) == [first.id]
    assert store.keyword_search(F(), "dup", 5) == []
    # another scope or tenant is another duplicate space
    mk.add(integrity_hash="h", agent_id=None, namespace="ns")
    mk.add(integrity_hash="h", agent_id="a2", namespace="ns")
    mk.add(integrity_hash="h", agent_id="a1", namespace="other")
    mk.add(integrity_hash="h", agent_id="a1", namespace="ns", user_id="u2")
    mk.add(integrity_hash="h", agent_id="a1", namespace="ns", user_id=None)
    mk.add(integrity_hash="h", agent_id="a1", namespace="ns", tenant_id="t2")
    # once the first is superseded or expired, the hash may be stored again
    mk.update(first, status=Status.SUPERSEDED, superseded_by=dup.id)
    store.insert(dup, unit(5), mk.event(dup))
    assert store.find_by_hash("t1", "u1", "a1", "ns", "h") == dup
    third = mk.record(integrity_hash="h", agent_id="a1", namespace="ns")
    with pytest.raises(StoreError):
        store.insert(third, unit(6), mk.event(third))
    store.update(replace(dup, status=Status.EXPIRED), None, mk.event(dup, "expire", {}))
    store.insert(third, unit(6), mk.event(third))
    assert store.find_by_hash("t1", "u1", "a1", "ns", "h") == third
    # reactivating an older copy is refused too
    with pytest.raises(StoreError):
        store.update(replace(first, status=Status.ACTIVE), None, mk.event(first, "update", {}))
    assert store.get("t1", first.id) == mk.records[first.id]


def test_unique_index_inside_a_section(store: Store, mk: Maker) -> None:
    """A refused insert inside a section can be caught and the section still commits."""
    first = mk.add(integrity_hash="h")
    dup = mk.record(integrity_hash="h")
    other = mk.record()
    with store.atomic("t1", "u1"):
        with pytest.raises(StoreError):
            store.insert(dup, unit(5), mk.event(dup))
        store.insert(other, unit(6), mk.event(other))
    assert store.get("t1", dup.id) is None
    assert store.get("t1", other.id) == other
    assert store.history("t1", dup.id) == []
    assert set(ids(store.nearest(F(), unit(5), 5))) == {first.id, other.id}


# -- tenants, API keys, idempotency, counts ---------------------------------------------


def test_tenants_round_trip(store: Store) -> None:
    from engramdb.models import Tenant, TenantStatus

    t = Tenant(id="acme", name="Acme", created_at=datetime(2026, 1, 2, tzinfo=UTC),
               memory_limit=10)
    store.put_tenant(t)
    assert store.get_tenant("acme") == t
    t.status = TenantStatus.SUSPENDED
    t.memory_limit = None
    store.put_tenant(t)
    assert store.get_tenant("acme") == t
    assert [x.id for x in store.list_tenants()] == ["acme"]
    assert store.get_tenant("nobody") is None


def test_api_keys_round_trip(store: Store) -> None:
    from engramdb.models import ApiKey

    k = ApiKey(id="k1", tenant_id="acme", name="ci", prefix="eng_live_ab", key_hash="h" * 64,
               scopes=["memories:read"], created_at=datetime(2026, 1, 2, tzinfo=UTC))
    store.put_key(k)
    assert store.get_key_by_hash("h" * 64) == k
    k.revoked_at = datetime(2026, 1, 3, tzinfo=UTC)
    store.put_key(k)
    got = store.get_key_by_hash("h" * 64)
    assert got is not None and got.revoked_at == k.revoked_at
    other = ApiKey(id="k2", tenant_id="beta", name="x", prefix="eng_live_cd",
                   key_hash="g" * 64, scopes=["admin"], created_at=k.created_at)
    store.put_key(other)
    assert [x.id for x in store.list_keys("acme")] == ["k1"]
    assert {x.id for x in store.list_keys()} == {"k1", "k2"}
    assert store.get_key_by_hash("nope") is None


def test_idempotency_keeps_the_first_response(store: Store) -> None:
    from engramdb.models import IdempotentResponse

    at = datetime(2026, 1, 2, tzinfo=UTC)
    first = IdempotentResponse("acme", "req-1", "hash-a", 201, b'{"id": 1}', at)
    assert store.put_idempotent(first)
    assert not store.put_idempotent(IdempotentResponse("acme", "req-1", "hash-b", 500, b"x", at))
    assert store.get_idempotent("acme", "req-1") == first
    assert store.get_idempotent("beta", "req-1") is None
    assert store.purge_idempotent(at + timedelta(seconds=1)) == 1
    assert store.get_idempotent("acme", "req-1") is None


def test_count_active_skips_expired_and_superseded(store: Store) -> None:
    maker = Maker(store)
    maker.add(tenant_id="acme")
    maker.add(tenant_id="acme", expires_at=NOW + timedelta(hours=1))
    maker.add(tenant_id="acme", status=Status.SUPERSEDED)
    maker.add(tenant_id="other")
    assert store.count_active("acme", NOW) == 2
    assert store.count_active("acme", NOW + timedelta(hours=2)) == 1
