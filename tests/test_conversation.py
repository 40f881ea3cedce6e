"""Conversation ingestion: transcripts become turn memories; search can group by session."""

from __future__ import annotations

import pytest

from engramdb import Engram, SaveStatus, ValidationError

TRIP = [
    {"role": "user", "content": "I'm planning a trip to Lisbon in May.",
     "created_at": "2026-03-01T10:00:00Z"},
    {"role": "assistant", "content": "Lovely! Do you want tips on neighbourhoods?"},
    {"role": "user", "content": "Yes, and I'm vegetarian, so food tips too.",
     "created_at": "2026-03-01T10:01:00Z"},
    {"role": "user", "content": "thanks!"},
]
CAR = [
    {"role": "user", "content": "My car needs new winter tyres."},
    {"role": "assistant", "content": "What size are they?"},
    {"role": "user", "content": "thanks!"},
]


def test_transcript_becomes_turn_memories(engram: Engram) -> None:
    results = engram.add_conversation("s-trip", TRIP, user_id="u1")
    assert [r.status for r in results] == [SaveStatus.SAVED] * 4
    turns = sorted(engram.list(session_id="s-trip").items, key=lambda m: m.metadata["position"])
    assert [t.metadata["role"] for t in turns] == ["user", "assistant", "user", "user"]
    assert [t.metadata["position"] for t in turns] == [0, 1, 2, 3]
    first = turns[0]
    assert first.content_type.value == "conversation" and first.memory_type.value == "episodic"
    assert first.session_id == "s-trip" and first.user_id == "u1"
    assert first.created_at.isoformat().startswith("2026-03-01T10:00:00")


def test_same_words_in_another_session_are_kept(engram: Engram) -> None:
    engram.add_conversation("s-trip", TRIP, user_id="u1")
    car = engram.add_conversation("s-car", CAR, user_id="u1")
    assert car[2].status is SaveStatus.SAVED  # "thanks!" again, but another event


def test_resending_a_transcript_stores_nothing_new(engram: Engram) -> None:
    first = engram.add_conversation("s-trip", TRIP, user_id="u1")
    again = engram.add_conversation("s-trip", TRIP, user_id="u1")
    assert [r.status for r in again] == [SaveStatus.DUPLICATE] * 4
    assert [r.existing_id for r in again] == [r.id for r in first]
    assert engram.list(session_id="s-trip").total == 4


def test_long_messages_are_split(engram: Engram) -> None:
    long = " ".join(f"word{i}" for i in range(3000))  # ~ 26k characters
    res = engram.add_conversation("s-long", [{"role": "assistant", "content": long}])
    assert len(res) == 3
    parts = engram.list(session_id="s-long").items
    assert all(len(p.content) <= 10_000 for p in parts)
    assert sorted(p.metadata["part"] for p in parts) == [0, 1, 2]


def test_search_grouped_by_session(engram: Engram) -> None:
    engram.add_conversation("s-trip", TRIP, user_id="u1")
    engram.add_conversation("s-car", CAR, user_id="u1")
    sessions = engram.search_sessions("what diet does the user follow?", user_id="u1")
    assert sessions[0].session_id == "s-trip"
    assert len({s.session_id for s in sessions}) == len(sessions) == 2
    assert all(len(s.hits) <= 3 for s in sessions)
    assert all(h.memory.session_id == s.session_id for s in sessions for h in s.hits)
    assert sessions[0].score == sessions[0].hits[0].score >= sessions[1].score
    tyres = engram.search_sessions("car maintenance", user_id="u1", limit=1)
    assert [s.session_id for s in tyres] == ["s-car"]


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([], "messages"),
        ([{"role": "robot", "content": "hi"}], "messages[0].role"),
        ([{"role": "user", "content": "  "}], "messages[0].content"),
        ([{"role": "user", "content": "hi", "mood": "happy"}], "messages[0].mood"),
        ([{"role": "user", "content": "hi", "created_at": "yesterday"}],
         "messages[0].created_at"),
        (["just a string"], "messages[0]"),
    ],
)
def test_bad_transcripts_are_refused(engram: Engram, messages: list, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        engram.add_conversation("s", messages)
    assert info.value.field == field
    assert engram.list().total == 0


def test_session_id_is_required(engram: Engram) -> None:
    with pytest.raises(ValidationError) as info:
        engram.add_conversation("  ", TRIP)
    assert info.value.field == "session_id"


def test_the_same_opening_in_two_sessions_is_two_turns(engram: Engram) -> None:
    hello = [{"role": "user", "content": "Hi, can you help me plan my week?"}]
    a = engram.add_conversation("monday", hello, user_id="u1")
    b = engram.add_conversation("tuesday", hello, user_id="u1")
    assert a[0].status is b[0].status is SaveStatus.SAVED and a[0].id != b[0].id
