"""MemLayer contract (../shared/seeds/memlayer-store-memory.txt): `POST /memories` with
X-API-Key; 201 {"id", "message": "Memory stored successfully"}; 409 {"detail": "Duplicate
memory detected — skipped."} for a near-identical memory (cosine ≥ 0.95, same user and
agent); 401/402/403/422 as {"detail"}; plus duplicate-check, search, context, list, get,
update and delete."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from httpx import Response
from test_compat_routing import UNKNOWN_ID, Compat, start

from engramdb.embeddings import Embedder

STORED = {"id", "message"}
MEMORY_OUT = {"id", "user_id", "agent_id", "content", "memory_type", "importance", "metadata",
              "access_count", "created_at", "last_accessed_at", "expires_at", "score",
              "score_detail"}
DUPLICATE = {"detail": "Duplicate memory detected — skipped."}

# The seed's example request.
SEED_EXAMPLE: dict[str, Any] = {
    "content": "User prefers concise bullet points over long paragraphs",
    "user_id": "user_123",
    "agent_id": "support_bot",
    "memory_type": "semantic",
    "importance": 0.8,
}
SCOPE = {"user_id": "user_123", "agent_id": "support_bot"}


@pytest.fixture
def srv(tmp_path: Path, embedder: Embedder) -> Iterator[Compat]:
    yield from start(tmp_path / "engram.db", embedder)


def xkey(key: str) -> dict[str, str]:
    return {"X-API-Key": key, "Content-Type": "application/json"}


def store(srv: Compat, body: dict[str, Any], key: str | None = None) -> Response:
    return srv.client.post("/memories", json=body, headers=xkey(key or srv.admin_key))


def stored_id(srv: Compat, body: dict[str, Any], key: str | None = None) -> str:
    r = store(srv, body, key)
    assert r.status_code == 201, r.text
    assert r.json()["message"] == "Memory stored successfully"
    mid: str = r.json()["id"]
    return mid


def detail(r: Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"detail"}, body
    assert isinstance(body["detail"], str) and body["detail"]
    d: str = body["detail"]
    return d


# -- store ----------------------------------------------------------------------------------


def test_seed_example_is_stored_with_201(srv: Compat) -> None:
    r = store(srv, SEED_EXAMPLE)
    assert r.status_code == 201, r.text
    assert set(r.json()) == STORED
    assert r.json()["message"] == "Memory stored successfully"
    m = srv.native(r.json()["id"])
    assert (m["user_id"], m["agent_id"], m["memory_type"], m["importance"]) == (
        "user_123", "support_bot", "semantic", 0.8)
    assert m["metadata"] == {} and m["expires_at"] is None


def test_defaults_and_optional_fields(srv: Compat) -> None:
    mid = stored_id(srv, {"content": "  User complained about late delivery on 2 June  ",
                          **SCOPE, "metadata": {"session": "s-1", "tags": ["billing"]},
                          "ttl_days": 7})
    m = srv.native(mid)
    assert m["content"] == "User complained about late delivery on 2 June"  # stripped
    assert m["memory_type"] == "episodic"
    assert m["importance"] == 0.5
    assert m["metadata"] == {"session": "s-1", "tags": ["billing"]}
    assert m["expires_at"] is not None
    assert stored_id(srv, {"content": "A recap of the June sessions", **SCOPE,
                           "memory_type": "summary", "ttl_days": None})


def test_the_same_memory_again_is_409_and_nothing_is_written(srv: Compat) -> None:
    stored_id(srv, SEED_EXAMPLE)
    r = store(srv, SEED_EXAMPLE)
    assert r.status_code == 409
    assert r.json() == DUPLICATE
    # only whitespace differs: the same content after stripping
    r = store(srv, {**SEED_EXAMPLE, "content": "  " + SEED_EXAMPLE["content"] + "\n"})
    assert r.status_code == 409 and r.json() == DUPLICATE
    assert srv.total(**SCOPE) == 1


def test_a_near_identical_memory_is_409(srv: Compat) -> None:
    stored_id(srv, SEED_EXAMPLE)
    near = {**SEED_EXAMPLE, "content": "User prefers concise bullet points over lengthy "
                                       "paragraphs"}
    probe = srv.client.post("/memories/duplicate-check", headers=xkey(srv.admin_key),
                            json={k: near[k] for k in ("content", "user_id", "agent_id")})
    assert probe.json()["similarity"] >= 0.95
    r = store(srv, near)
    assert r.status_code == 409 and r.json() == DUPLICATE
    assert srv.total(**SCOPE) == 1


def test_duplicates_are_per_user_and_agent(srv: Compat) -> None:
    first = stored_id(srv, SEED_EXAMPLE)
    other_agent = stored_id(srv, {**SEED_EXAMPLE, "agent_id": "sales_agent"})
    other_user = stored_id(srv, {**SEED_EXAMPLE, "user_id": "user_456"})
    assert len({first, other_agent, other_user}) == 3


def test_a_different_fact_is_stored(srv: Compat) -> None:
    stored_id(srv, SEED_EXAMPLE)
    stored_id(srv, {**SEED_EXAMPLE, "content": "User is based in Lagos, Nigeria"})
    assert srv.total(**SCOPE) == 2


def test_content_of_exactly_10000_characters_is_stored(srv: Compat) -> None:
    stored_id(srv, {**SCOPE, "content": "word " * 1999 + "last!"})


@pytest.mark.parametrize(("patch", "field"), [
    ({"content": ""}, "content"),
    ({"content": "   "}, "content"),
    ({"content": "x" * 10_001}, "content"),
    ({"content": None}, "content"),
    ({"user_id": None}, "user_id"),
    ({"user_id": ""}, "user_id"),
    ({"user_id": "u" * 256}, "user_id"),
    ({"agent_id": "a" * 256}, "agent_id"),
    ({"memory_type": "preference"}, "memory_type"),  # an Engram type, not a MemLayer one
    ({"memory_type": "procedural"}, "memory_type"),
    ({"importance": 1.5}, "importance"),
    ({"importance": -0.1}, "importance"),
    ({"importance": "high"}, "importance"),
    ({"ttl_days": 0}, "ttl_days"),
    ({"ttl_days": 3651}, "ttl_days"),
    ({"ttl_days": 1.5}, "ttl_days"),
    ({"metadata": [1, 2]}, "metadata"),
    ({"metadata": {str(i): i for i in range(21)}}, "metadata"),
    ({"namespace": "x"}, "namespace"),  # not a MemLayer field
])
def test_invalid_store_is_422_naming_the_field(srv: Compat, patch: dict[str, Any],
                                               field: str) -> None:
    d = detail(store(srv, {**SEED_EXAMPLE, **patch}), 422)
    assert d.startswith(field), d


@pytest.mark.parametrize("name", ["content", "user_id", "agent_id"])
def test_a_missing_required_field_is_422(srv: Compat, name: str) -> None:
    body = {k: v for k, v in SEED_EXAMPLE.items() if k != name}
    assert detail(store(srv, body), 422) == f"{name}: is required"


def test_ttl_bounds_are_inclusive(srv: Compat) -> None:
    stored_id(srv, {**SCOPE, "content": "Promo code SUMMER10 valid today", "ttl_days": 1})
    stored_id(srv, {**SCOPE, "content": "User's account number ends in 42", "ttl_days": 3650})


def test_malformed_json_is_422(srv: Compat) -> None:
    r = srv.client.post("/memories", content=b"{nope", headers=xkey(srv.admin_key))
    detail(r, 422)


# -- 401, 402, 403 ---------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "ml_live_xxx"}],
                         ids=["missing", "invalid"])
def test_a_missing_or_invalid_key_is_401(srv: Compat, headers: dict[str, str]) -> None:
    detail(srv.client.post("/memories", json=SEED_EXAMPLE, headers=headers), 401)
    detail(srv.client.get("/memories", params=SCOPE, headers=headers), 401)


def test_the_plan_limit_is_402(srv: Compat) -> None:
    key = srv.tenant("small", memory_limit=1)
    stored_id(srv, SEED_EXAMPLE, key)
    d = detail(store(srv, {**SEED_EXAMPLE, "content": "User is based in Lagos"}, key), 402)
    assert "limit" in d


def test_a_suspended_account_is_403(srv: Compat) -> None:
    key = srv.tenant("acme")
    srv.suspend("acme")
    assert "suspended" in detail(store(srv, SEED_EXAMPLE, key), 403)


def test_a_read_only_key_cannot_store(srv: Compat) -> None:
    key = srv.key("default", scopes=["memories:read"])
    assert "memories:write" in detail(store(srv, SEED_EXAMPLE, key), 403)


# -- duplicate-check ------------------------------------------------------------------------


def test_duplicate_check_probes_without_writing(srv: Compat) -> None:
    mid = stored_id(srv, SEED_EXAMPLE)
    probe = {k: SEED_EXAMPLE[k] for k in ("content", "user_id", "agent_id")}
    r = srv.client.post("/memories/duplicate-check", json=probe, headers=xkey(srv.admin_key))
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"is_duplicate", "similarity", "existing_id", "existing_content"}
    assert r.json()["is_duplicate"] is True
    assert r.json()["existing_id"] == mid
    assert r.json()["similarity"] == 1.0
    fresh = {**probe, "content": "User is based in Lagos, Nigeria"}
    r = srv.client.post("/memories/duplicate-check", json=fresh, headers=xkey(srv.admin_key))
    assert r.json()["is_duplicate"] is False
    assert srv.total(**SCOPE) == 1  # nothing written
    other = {**probe, "agent_id": "sales_agent"}
    r = srv.client.post("/memories/duplicate-check", json=other, headers=xkey(srv.admin_key))
    assert r.json() == {"is_duplicate": False, "similarity": 0.0, "existing_id": None,
                        "existing_content": None}


def test_duplicate_check_validates_like_store(srv: Compat) -> None:
    r = srv.client.post("/memories/duplicate-check", json={"content": "x", "user_id": "u"},
                        headers=xkey(srv.admin_key))
    assert detail(r, 422) == "agent_id: is required"


# -- search, context, list ------------------------------------------------------------------


def seed_memories(srv: Compat) -> dict[str, str]:
    return {
        "lagos": stored_id(srv, {**SCOPE, "content": "User is based in Lagos, Nigeria",
                                 "memory_type": "semantic", "importance": 0.9}),
        "delivery": stored_id(srv, {**SCOPE, "content": "User complained about late "
                                    "delivery on 2 June", "memory_type": "episodic"}),
        "recap": stored_id(srv, {**SCOPE, "content": "Recap: order issues resolved with a "
                                 "refund", "memory_type": "summary"}),
        "other": stored_id(srv, {"user_id": "user_456", "agent_id": "support_bot",
                                 "content": "User lives in Lagos too"}),
    }


def test_search_get_as_in_memlayer_reference(srv: Compat) -> None:
    ids = seed_memories(srv)
    r = srv.client.get("/memories/search", headers=xkey(srv.admin_key), params={
        "query": "where does this user live?", **SCOPE, "top_k": 5, "min_score": 0.0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"memories", "query", "total"}
    assert body["query"] == "where does this user live?"
    assert body["total"] == len(body["memories"]) == 3  # user_456's memory is not searched
    assert body["memories"][0]["id"] == ids["lagos"]
    top = body["memories"][0]
    assert set(top) == MEMORY_OUT
    assert 0 < top["score"] <= 1
    assert set(top["score_detail"]) == {"semantic", "keyword", "importance", "relevance"}
    scores = [m["score"] for m in body["memories"]]
    assert scores == sorted(scores, reverse=True)


def test_search_post_filters_by_memory_type_and_limits(srv: Compat) -> None:
    ids = seed_memories(srv)
    r = srv.client.post("/memories/search", headers=xkey(srv.admin_key), json={
        "query": "what happened with the order?", **SCOPE, "memory_type": "episodic"})
    assert r.status_code == 200, r.text
    assert [m["id"] for m in r.json()["memories"]] == [ids["delivery"]]
    r = srv.client.post("/memories/search", headers=xkey(srv.admin_key),
                        json={"query": "user", **SCOPE, "top_k": 1})
    assert r.json()["total"] == 1
    r = srv.client.post("/memories/search", headers=xkey(srv.admin_key),
                        json={"query": "user", **SCOPE, "min_score": 0.99})
    assert r.json() == {"memories": [], "query": "user", "total": 0}


@pytest.mark.parametrize(("params", "field"), [
    ({}, "query"), ({"query": "x", "top_k": 21}, "top_k"), ({"query": "x", "top_k": 0}, "top_k"),
    ({"query": "x", "memory_type": "fact"}, "memory_type"),
    ({"query": "x", "min_score": 2}, "min_score"), ({"query": ""}, "query"),
])
def test_search_rejects_bad_parameters(srv: Compat, params: dict[str, Any], field: str) -> None:
    r = srv.client.get("/memories/search", params=params, headers=xkey(srv.admin_key))
    assert detail(r, 422).startswith(field)


def test_context_with_current_message_is_semantic(srv: Compat) -> None:
    ids = seed_memories(srv)
    r = srv.client.get("/memories/context", headers=xkey(srv.admin_key), params={
        **SCOPE, "current_message": "I need help with my order", "top_k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"memories", "total", "limit", "offset"}
    assert (body["total"], body["limit"], body["offset"]) == (2, 2, 0)
    assert ids["delivery"] in {m["id"] for m in body["memories"]}
    assert all(m["score"] is not None for m in body["memories"])


def test_context_without_a_message_lists_the_users_memories(srv: Compat) -> None:
    ids = seed_memories(srv)
    r = srv.client.post("/memories/context", headers=xkey(srv.admin_key), json=SCOPE)
    assert r.status_code == 200, r.text
    body = r.json()
    assert {m["id"] for m in body["memories"]} == {ids["lagos"], ids["delivery"], ids["recap"]}
    assert (body["total"], body["limit"], body["offset"]) == (3, 10, 0)
    assert all(m["score"] is None and set(m) == MEMORY_OUT for m in body["memories"])
    r = srv.client.get("/memories/context", params={**SCOPE, "top_k": 51},
                       headers=xkey(srv.admin_key))
    assert detail(r, 422).startswith("top_k")


def test_list_pages_newest_first_with_filters(srv: Compat) -> None:
    ids = seed_memories(srv)
    h = xkey(srv.admin_key)
    r = srv.client.get("/memories", params={**SCOPE, "limit": 2, "offset": 0}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"memories", "total", "limit", "offset"}
    assert (body["total"], body["limit"], body["offset"]) == (3, 2, 0)
    assert [m["id"] for m in body["memories"]] == [ids["recap"], ids["delivery"]]
    assert all(set(m) == MEMORY_OUT and m["score"] is None for m in body["memories"])
    r = srv.client.get("/memories", params={**SCOPE, "limit": 2, "offset": 2}, headers=h)
    assert [m["id"] for m in r.json()["memories"]] == [ids["lagos"]]
    r = srv.client.get("/memories", params={**SCOPE, "memory_type": "semantic"}, headers=h)
    assert [m["id"] for m in r.json()["memories"]] == [ids["lagos"]]
    r = srv.client.get("/memories", params={"agent_id": "support_bot"}, headers=h)
    assert r.json()["total"] == 4
    assert r.json()["limit"] == 20
    for bad in ({"limit": 101}, {"limit": 0}, {"offset": -1}, {"memory_type": "general"}):
        detail(srv.client.get("/memories", params=bad, headers=h), 422)


# -- get, update, delete --------------------------------------------------------------------


def test_get_update_delete(srv: Compat) -> None:
    mid = stored_id(srv, {**SEED_EXAMPLE, "metadata": {"source": "chat"}})
    h = xkey(srv.admin_key)
    r = srv.client.get(f"/memories/{mid}", headers=h)
    assert r.status_code == 200 and set(r.json()) == MEMORY_OUT
    assert r.json()["metadata"] == {"source": "chat"}
    assert r.json()["access_count"] == 1
    r = srv.client.patch(f"/memories/{mid}", json={"importance": 0.3,
                                                   "memory_type": "summary"}, headers=h)
    assert r.status_code == 200, r.text
    assert (r.json()["importance"], r.json()["memory_type"]) == (0.3, "summary")
    r = srv.client.patch(f"/memories/{mid}", json={"memory_type": "fact"}, headers=h)
    assert detail(r, 422).startswith("memory_type")
    detail(srv.client.patch(f"/memories/{mid}", json={}, headers=h), 422)
    r = srv.client.delete(f"/memories/{mid}", headers=h)
    assert r.status_code == 200
    assert r.json() == {"id": mid, "message": "Memory deleted successfully"}
    assert "not found" in detail(srv.client.get(f"/memories/{mid}", headers=h), 404)
    detail(srv.client.delete(f"/memories/{mid}", headers=h), 404)
    detail(srv.client.patch(f"/memories/{UNKNOWN_ID}", json={"importance": 1}, headers=h), 404)


def test_an_immutable_memory_refuses_update_and_delete_with_409(srv: Compat) -> None:
    mid = srv.client.post("/v1/memories", json={"content": "locked", "immutable": True},
                          headers=srv.admin).json()["data"]["id"]
    h = xkey(srv.admin_key)
    assert "immutable" in detail(srv.client.delete(f"/memories/{mid}", headers=h), 409)
    assert "immutable" in detail(
        srv.client.patch(f"/memories/{mid}", json={"importance": 1}, headers=h), 409)
