"""The read path: hybrid search, filters, expiry, explain, list and pagination."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engramdb import Engram, FrozenClock

FACTS = [
    "User is allergic to peanuts and shellfish",
    "User works as a nurse at the city hospital",
    "User's daughter Mia starts school in September",
    "User prefers replies in short bullet points",
    "User drives a 2019 Toyota Corolla",
    "User's VPN gateway is vpn-xj9000.corp.example",
    "User is learning Portuguese for a trip to Lisbon",
    "User goes running every morning before work",
]


@pytest.fixture
def stocked(engram: Engram) -> Engram:
    engram.add_many([{"content": f, "user_id": "u1"} for f in FACTS])
    engram.add_many([{"content": f, "user_id": "u2"} for f in FACTS[:3]])
    return engram


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("what food can't the user eat?", 0),
        ("where does the user work", 1),
        ("how should I format my answers", 3),
        ("what car does the user have", 4),
        ("language the user studies", 6),
        ("exercise habits", 7),
    ],
)
def test_semantic_queries_find_the_right_memory(stocked: Engram, query: str,
                                                expected: int) -> None:
    hits = stocked.search(query, user_id="u1", limit=3)
    assert hits[0].memory.content == FACTS[expected], [h.memory.content for h in hits]


def test_rare_keyword_is_found(stocked: Engram) -> None:
    hits = stocked.search("xj9000", user_id="u1", limit=3)
    assert hits[0].memory.content == FACTS[5]
    assert hits[0].explain["keyword"] == 1.0


def test_explain_adds_up(stocked: Engram) -> None:
    for hit in stocked.search("user's child school", user_id="u1", limit=5):
        e = hit.explain
        total = sum(e[f"w_{k}"] * e[k] for k in ("semantic", "keyword", "importance",
                                                  "relevance"))
        assert total == pytest.approx(hit.score)
        assert e["w_importance"] == pytest.approx(0.1)
    scores = [h.score for h in stocked.search("user's child school", user_id="u1", limit=8)]
    assert scores == sorted(scores, reverse=True)


def test_importance_breaks_ties(engram: Engram) -> None:
    low = engram.add("User likes green tea", user_id="a", importance=0.0)
    high = engram.add("User likes green tea", user_id="b", importance=1.0)
    hits = engram.search("green tea", limit=2)
    assert [h.memory.id for h in hits] == [high.id, low.id]
    assert hits[0].score - hits[1].score == pytest.approx(0.1, abs=1e-6)


def test_equal_scores_come_in_id_order(engram: Engram) -> None:
    # the same text for three users, at one frozen time: the very same score
    ids_ = [engram.add("User likes green tea", user_id=u).id for u in ("c", "a", "b")]
    hits = engram.search("green tea", limit=3)
    assert len({h.score for h in hits}) == 1
    assert [h.memory.id for h in hits] == sorted(ids_)


def test_users_never_see_each_other(stocked: Engram) -> None:
    hits = stocked.search("car", user_id="u2", limit=10)
    assert {h.memory.user_id for h in hits} == {"u2"}
    assert all("Toyota" not in h.memory.content for h in hits)
    assert len(stocked.search("car", limit=20)) == len(FACTS) + 3


def test_filters(engram: Engram, clock: FrozenClock) -> None:
    a = engram.add("Deploys on Fridays", user_id="u", agent_id="ops", namespace="infra",
                   session_id="s1", memory_type="decision", tier="long", tags=["deploy"],
                   metadata={"team": "sre"}).id
    clock.advance(days=1)
    b = engram.add("Deploys with blue-green rollouts", user_id="u", agent_id="dev",
                   namespace="infra", session_id="s2", memory_type="fact",
                   metadata={"team": "web"}).id
    q = "how do we deploy"

    def ids(**f: object) -> set[str]:
        return {h.memory.id for h in engram.search(q, user_id="u", **f)}

    assert ids() == {a, b}
    assert ids(agent_id="ops") == {a}
    assert ids(session_id="s2") == {b}
    assert ids(namespace="infra") == {a, b} and ids(namespace="other") == set()
    assert ids(memory_types=["decision"]) == {a}
    assert ids(tiers=["long"]) == {a}
    assert ids(tags=["deploy"]) == {a}
    assert ids(metadata={"team": "web"}) == {b}
    assert ids(created_after=clock.now() - timedelta(hours=1)) == {b}
    assert ids(created_before=clock.now() - timedelta(hours=1)) == {a}
    page = engram.list(user_id="u", memory_types=["fact"])
    assert [m.id for m in page.items] == [b]


def test_expired_memories_are_never_returned(engram: Engram, clock: FrozenClock) -> None:
    gone = engram.add("Temporary door code 1234", user_id="u", ttl_days=1).id
    kept = engram.add("Permanent door code 9876", user_id="u").id
    assert {h.memory.id for h in engram.search("door code", user_id="u")} == {gone, kept}
    clock.advance(days=1, seconds=1)
    assert [h.memory.id for h in engram.search("door code", user_id="u")] == [kept]
    assert [m.id for m in engram.list(user_id="u").items] == [kept]
    with pytest.raises(Exception, match="not found"):
        engram.get(gone)


def test_min_score_and_limit(stocked: Engram) -> None:
    hits = stocked.search("peanut allergy", user_id="u1", limit=8)
    assert len(hits) == 8
    cut = hits[2].score
    assert all(h.score >= cut for h in stocked.search("peanut allergy", user_id="u1", limit=8,
                                                      min_score=cut))
    assert len(stocked.search("peanut allergy", user_id="u1", limit=2)) == 2


def test_fts_syntax_in_queries_is_plain_text(stocked: Engram) -> None:
    for q in ['"unbalanced', "NEAR(user work)", "content:nurse", "-peanuts OR *", "🙂 ü ß",
              "AND", "user's", "a\"b\"c"]:
        stocked.search(q, user_id="u1")  # must not raise


def test_list_pagination(engram: Engram, clock: FrozenClock) -> None:
    ids = []
    for fact in FACTS[:7]:
        ids.append(engram.add(fact, user_id="u").id)
        clock.advance(seconds=1)
    first = engram.list(user_id="u", limit=3)
    assert first.total == 7 and first.has_more
    assert [m.id for m in first.items] == ids[::-1][:3]  # newest first
    last = engram.list(user_id="u", limit=3, offset=6)
    assert [m.id for m in last.items] == [ids[0]] and not last.has_more
    assert engram.list(user_id="u", limit=3, offset=50).items == []
