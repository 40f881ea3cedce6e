"""Supersession on the real write path: updated, extended, saved, with history and relations."""

from __future__ import annotations

from engramdb import Engram, FrozenClock, SaveStatus, Status


def test_a_changed_fact_supersedes_the_old_one(engram: Engram, clock: FrozenClock) -> None:
    old = engram.add("User lives in Berlin", user_id="u").memory
    clock.advance(days=30)
    new = engram.add("User moved to Munich", user_id="u")
    assert new.status is SaveStatus.UPDATED and new.related_id == old.id
    assert new.reason and "moved to" in new.reason
    before = engram.get(old.id, track=False)
    assert before.status is Status.SUPERSEDED and before.superseded_by == new.id
    hits = engram.search("where does the user live?", user_id="u")
    assert [h.memory.id for h in hits] == [new.id]  # the old one left search results
    kept = engram.search("where does the user live?", user_id="u", include_superseded=True)
    assert {h.memory.id for h in kept} == {old.id, new.id}
    assert engram.list(user_id="u").total == 1
    assert [e.event for e in engram.history(old.id)] == ["create", "supersede"]
    rel = engram.relations(new.id)
    assert [(r.from_id, r.to_id, r.kind) for r in rel] == [(new.id, old.id, "supersedes")]


def test_a_detail_extends_and_both_stay(engram: Engram) -> None:
    dog = engram.add("User has a dog", user_id="u").memory
    more = engram.add("User's dog is a beagle named Rex", user_id="u")
    assert more.status is SaveStatus.EXTENDED and more.related_id == dog.id
    assert engram.get(dog.id, track=False).status is Status.ACTIVE
    assert engram.list(user_id="u").total == 2
    assert [r.kind for r in engram.relations(dog.id)] == ["extends"]


def test_unrelated_memories_are_just_saved(engram: Engram) -> None:
    engram.add("User likes hiking", user_id="u")
    res = engram.add("User likes jazz", user_id="u")
    assert res.status is SaveStatus.SAVED and res.related_id is None


def test_a_new_value_is_not_dropped_as_a_near_duplicate(engram: Engram) -> None:
    old = engram.add("User is 34 years old", user_id="u").memory
    new = engram.add("User is 35 years old", user_id="u")
    assert new.status is SaveStatus.UPDATED and new.related_id == old.id
    assert engram.get(old.id, track=False).status is Status.SUPERSEDED


def test_supersession_inside_one_batch(engram: Engram) -> None:
    res = engram.add_many([{"content": "User works at Acme", "user_id": "u"},
                           {"content": "User now works at Globex", "user_id": "u"}])
    assert [r.status for r in res] == [SaveStatus.SAVED, SaveStatus.UPDATED]
    assert res[1].related_id == res[0].id
    assert [m.content for m in engram.list(user_id="u").items] == ["User now works at Globex"]


def test_scopes_do_not_supersede_each_other(engram: Engram) -> None:
    engram.add("User lives in Berlin", user_id="a")
    res = engram.add("User moved to Munich", user_id="b")
    assert res.status is SaveStatus.SAVED
