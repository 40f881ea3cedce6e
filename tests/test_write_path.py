"""The write path with the real model and real SQLite: save, duplicates, updates, deletes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engramdb import (
    Conflict,
    Duplicate,
    Engram,
    FrozenClock,
    NotFound,
    SaveStatus,
    Settings,
    Status,
)
from engramdb.embeddings import Embedder
from engramdb.engine.normalize import integrity_hash

TOPICS = ["bird", "train", "space", "flower", "castle", "ship", "map"]


def _cos(embedder: Embedder, a: str, b: str) -> float:
    v = embedder.embed([a, b]).vectors
    return float(np.dot(v[0], v[1]))


def test_save_stores_every_field(engram: Engram, clock: FrozenClock) -> None:
    res = engram.add(
        "User prefers concise bullet points", user_id="user_123", agent_id="support_bot",
        session_id="s1", namespace="proj", memory_type="semantic", content_type="fact",
        memory_nature="semantic", tier="long", importance=0.8, confidence=0.9,
        metadata={"source": "chat"}, tags=["style"], external_id="ext-1", source_id="crm",
        source="explicit_user_input", pinned=True,
    )
    assert res.status is SaveStatus.SAVED and res.existing_id is None
    assert res.tokens_used > 0
    rec = engram.get(res.id)
    assert rec.content == "User prefers concise bullet points"
    assert (rec.user_id, rec.agent_id, rec.session_id, rec.namespace) == (
        "user_123", "support_bot", "s1", "proj")
    assert rec.memory_type.value == "semantic" and rec.tier.value == "long"
    assert rec.importance == 0.8 and rec.confidence == 0.9 and rec.pinned
    assert rec.metadata == {"source": "chat"} and rec.tags == ["style"]
    assert rec.integrity_hash == integrity_hash(rec.content)
    assert rec.created_at == clock.now() and rec.embedding_model == "all-MiniLM-L6-v2"
    assert rec.status is Status.ACTIVE


def test_content_is_normalised_before_hashing(engram: Engram) -> None:
    a = engram.add("  User likes   tea \r\n")
    b = engram.add("User likes tea")
    assert a.memory.content == "User likes tea"
    assert b.status is SaveStatus.DUPLICATE and b.existing_id == a.id and b.similarity == 1.0


def test_exact_duplicate_is_scoped(engram: Engram) -> None:
    first = engram.add("Lives in Lagos", user_id="u1", agent_id="bot")
    assert engram.add("Lives in Lagos", user_id="u1", agent_id="bot").existing_id == first.id
    for other in ({"user_id": "u2", "agent_id": "bot"}, {"user_id": "u1", "agent_id": "b2"},
                  {"user_id": "u1"}, {"user_id": "u1", "agent_id": "bot", "namespace": "x"}):
        assert engram.add("Lives in Lagos", **other).status is SaveStatus.SAVED, other
    assert engram.list().total == 5


def test_near_duplicate_uses_the_threshold(tmp_path, embedder: Embedder,
                                           clock: FrozenClock) -> None:
    a, b = "User prefers dark mode.", "The user prefers dark mode"
    sim = _cos(embedder, a, b)
    assert 0.9 < sim < 0.9999, sim  # a paraphrase, not the same text
    for threshold, expected in ((max(0.5, sim - 0.002), SaveStatus.DUPLICATE),
                                (min(1.0, sim + 0.002), SaveStatus.SAVED)):
        # the threshold alone: supersession may call a close paraphrase "extended"
        settings = Settings(near_duplicate_threshold=threshold, supersession_enabled=False)
        path = tmp_path / f"t{threshold}.db"
        with Engram(path=path, settings=settings, embedder=embedder, clock=clock) as e:
            first = e.add(a, user_id="u")
            second = e.add(b, user_id="u")
            assert second.status is expected, (threshold, sim)
            if expected is SaveStatus.DUPLICATE:
                assert second.existing_id == first.id
                assert second.similarity == pytest.approx(sim, abs=1e-4)
                assert e.list().total == 1


def test_case_variants_are_near_duplicates(engram: Engram) -> None:
    first = engram.add("User is allergic to peanuts", user_id="u")
    again = engram.add("USER IS ALLERGIC TO PEANUTS", user_id="u")
    assert again.status is SaveStatus.DUPLICATE and again.existing_id == first.id
    assert again.similarity is not None and again.similarity >= 0.95


def test_unrelated_memories_are_both_saved(engram: Engram) -> None:
    assert engram.add("User is allergic to peanuts", user_id="u").status is SaveStatus.SAVED
    assert engram.add("User works at Acme Corp", user_id="u").status is SaveStatus.SAVED


def test_expired_duplicate_does_not_block_a_new_memory(engram: Engram,
                                                       clock: FrozenClock) -> None:
    old = engram.add("Session note: user is on a train", ttl_days=1)
    clock.advance(days=2)
    new = engram.add("Session note: user is on a train")
    assert new.status is SaveStatus.SAVED and new.id != old.id
    with pytest.raises(NotFound):
        engram.get(old.id)
    assert [e.event for e in engram.history(old.id)] == ["create", "expire"]


def test_value_json_memories(engram: Engram) -> None:
    a = engram.add(user_id="user123", scope="preferences", domain="food",
                   source="explicit_user_input",
                   value_json={"likes": ["pizza", "Sushi", "pizza"], "dislikes": ["broccoli"]})
    assert a.memory.value_json == {"likes": ["pizza", "sushi"], "dislikes": ["broccoli"]}
    assert a.memory.content == "preferences / food: dislikes: broccoli; likes: pizza, sushi"
    b = engram.add(user_id="user123", scope="preferences", domain="food", source="inferred",
                   value_json={"dislikes": ["Broccoli"], "likes": ["sushi", "pizza", "Pizza"]})
    # same set, other order: still a new memory unless the readable text collides
    assert b.status in (SaveStatus.SAVED, SaveStatus.DUPLICATE)
    c = engram.add(user_id="user123", scope="preferences", domain="food", source="inferred",
                   value_json={"dislikes": ["BROCCOLI"], "likes": ["Pizza", "Sushi"]})
    assert c.status is SaveStatus.DUPLICATE and c.existing_id == a.id


def test_add_many_reports_each_item_in_order(engram: Engram) -> None:
    engram.add("Already stored fact", user_id="u")
    results = engram.add_many([
        {"content": "Likes hiking in the Alps", "user_id": "u"},
        {"content": "Already stored fact", "user_id": "u"},
        {"content": "likes hiking in the alps", "user_id": "u"},  # near twin of item 0
        {"content": "Likes hiking in the Alps", "user_id": "u"},  # exact twin of item 0
        {"content": "Likes hiking in the Alps", "user_id": "other"},
        {"content": "Owns a grey cat named Miso", "user_id": "u"},
    ])
    statuses = [r.status.value for r in results]
    assert statuses == ["saved", "duplicate", "duplicate", "duplicate", "saved", "saved"]
    assert results[2].existing_id == results[0].id == results[3].existing_id
    assert results[1].existing_id is not None
    assert engram.list(user_id="u").total == 3
    assert engram.list(user_id="other").total == 1
    assert engram.add_many([]) == []


def test_add_many_saves_each_chunk_of_users_in_one_section(
    tmp_path: Path, embedder: Embedder, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One write transaction per model chunk, not one per user (architecture.md)."""
    with Engram(path=tmp_path / "e.db", embedder=embedder, clock=clock,
                settings=Settings(embed_max_batch=8)) as engram:
        store = engram.service.store
        sections: list[tuple[str | None, ...]] = []
        real_atomic = store.atomic

        def counting(tenant_id: str, *user_ids: str | None) -> Any:
            if not getattr(store._local, "depth", 0):
                sections.append(user_ids)
            return real_atomic(tenant_id, *user_ids)

        monkeypatch.setattr(store, "atomic", counting)
        items = [{"content": f"Person {n} collects {TOPICS[n % len(TOPICS)]} stamps",
                  "user_id": f"user{n}"} for n in range(20)]
        items.append({"content": "Person 3 collects tram tickets too", "user_id": "user3"})
        results = engram.add_many(items)
        assert [r.status for r in results] == [SaveStatus.SAVED] * len(items)
        assert len(sections) <= 3  # 21 texts in chunks of 8
        assert sorted(u for s in sections for u in s) == sorted({i["user_id"] for i in items})
        for item, res in zip(items, results, strict=True):
            assert engram.get(res.id).user_id == item["user_id"]
            hits = engram.search(item["content"], user_id=item["user_id"])
            assert res.id in [h.memory.id for h in hits]


def test_duplicate_check_writes_nothing(engram: Engram) -> None:
    first = engram.add("User is based in Lagos, Nigeria", user_id="u", agent_id="a")
    check = engram.duplicate_check("user is based in lagos, nigeria", user_id="u", agent_id="a")
    assert check.is_duplicate and check.existing_id == first.id and check.similarity >= 0.95
    other = engram.duplicate_check("User enjoys jazz music", user_id="u", agent_id="a")
    assert not other.is_duplicate and other.similarity < 0.95
    assert engram.duplicate_check("anything", user_id="nobody").similarity == 0.0
    assert engram.list().total == 1


def test_update_reembeds_and_records_history(engram: Engram, clock: FrozenClock) -> None:
    rec = engram.add("User drives a red bicycle", user_id="u", metadata={"a": 1}).memory
    clock.advance(hours=1)
    updated = engram.update(rec.id, content="User drives a blue electric car",
                            metadata={"b": 2}, importance=0.9)
    assert updated.metadata == {"b": 2}  # replaced, not merged
    assert updated.integrity_hash != rec.integrity_hash and updated.updated_at > rec.updated_at
    hits = engram.search("electric car", user_id="u", limit=1)
    assert hits[0].memory.id == rec.id and hits[0].explain["semantic"] > 0.5
    assert not engram.search("bicycle", user_id="u", limit=1)[0].explain["keyword"]
    events = engram.history(rec.id)
    assert [e.event for e in events] == ["create", "update"]
    assert events[1].changes["content"]["before"] == "User drives a red bicycle"
    assert events[1].changes["importance"] == {"before": 0.5, "after": 0.9}


def test_update_rejects_bad_and_unknown_fields(engram: Engram) -> None:
    rec = engram.add("x marks the spot").memory
    with pytest.raises(Exception) as info:
        engram.update(rec.id, user_id="someone-else")
    assert getattr(info.value, "field", None) == "user_id"
    with pytest.raises(Exception) as info:
        engram.update(rec.id, importance=2)
    assert getattr(info.value, "field", None) == "importance"
    assert engram.get(rec.id).importance == 0.5


def test_update_to_another_memorys_content_is_a_duplicate(engram: Engram) -> None:
    a = engram.add("Fact one about cheese").memory
    b = engram.add("Fact two about trains").memory
    with pytest.raises(Duplicate) as info:
        engram.update(b.id, content="Fact one about cheese")
    assert info.value.existing_id == a.id
    assert engram.get(b.id).content == "Fact two about trains"


def test_immutable_refuses_update_and_delete(engram: Engram) -> None:
    rec = engram.add("Contract signed on 3 May", immutable=True).memory
    with pytest.raises(Conflict):
        engram.update(rec.id, content="Contract never signed")
    with pytest.raises(Conflict):
        engram.delete(rec.id)
    assert engram.get(rec.id).content == "Contract signed on 3 May"
    assert [e.event for e in engram.history(rec.id)] == ["create"]


def test_delete_removes_everywhere_and_leaves_a_tombstone(engram: Engram) -> None:
    rec = engram.add("User's locker code is 4711", user_id="u").memory
    engram.update(rec.id, content="User's locker code is 4712")
    engram.delete(rec.id)
    with pytest.raises(NotFound):
        engram.get(rec.id)
    assert engram.list().total == 0
    assert engram.search("locker code", user_id="u") == []
    events = engram.history(rec.id)
    assert [e.event for e in events] == ["create", "update", "delete"]
    assert all("4711" not in str(e.changes) and "4712" not in str(e.changes) for e in events)
    with pytest.raises(NotFound):
        engram.delete(rec.id)


def test_a_failed_write_leaves_nothing_behind(engram: Engram,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store = engram.service.store

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "_insert_event", broken)
    with pytest.raises(RuntimeError):
        engram.add("This must not half-land", user_id="u")
    monkeypatch.undo()
    assert engram.list().total == 0
    assert engram.search("half-land", user_id="u") == []
    again = engram.add("This must not half-land", user_id="u")
    assert again.status is SaveStatus.SAVED
    assert [h.memory.id for h in engram.search("half-land", user_id="u")] == [again.id]


def test_get_unknown_or_malformed_id(engram: Engram) -> None:
    with pytest.raises(NotFound):
        engram.get("01890000-0000-7000-8000-000000000000")
    with pytest.raises(Exception) as info:
        engram.get("../../etc/passwd")
    assert getattr(info.value, "field", None) == "id"
