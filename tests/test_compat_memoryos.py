"""Memory OS contract (../shared/seeds/memoryos-memories-api.txt): `/api/v1/memories` CRUD
with `Authorization: Bearer`; `{"data", "meta": {request_id, latency_ms}}`; errors
`{"error": {"code", "message"}, "meta": {"request_id"}}`; scopes memories:read/write."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from httpx import Response
from test_compat_routing import UNKNOWN_ID, Compat, start

from engramdb.embeddings import Embedder

BASE = "/api/v1/memories"

MEMORY = {
    "id", "tenant_id", "content", "content_type", "tier", "memory_nature", "relevance_score",
    "importance_score", "confidence_score", "decay_rate", "access_count", "last_accessed_at",
    "parent_memory_id", "external_id", "source_id", "metadata", "pii_detected", "pii_fields",
    "integrity_hash", "created_at", "updated_at", "expires_at",
}
META = {"request_id", "latency_ms"}
LIST_META = META | {"total", "limit", "offset", "has_more"}

# The seed's create example (cURL, JavaScript and Python send the same body).
SEED_CREATE: dict[str, Any] = {
    "content": "User prefers dark mode interfaces and minimal UI designs",
    "content_type": "fact",
    "tier": "long",
    "memory_nature": "semantic",
    "metadata": {"category": "preferences", "source": "user_settings"},
}
# The seed's update example.
SEED_PATCH: dict[str, Any] = {
    "tier": "long",
    "importance_score": 0.9,
    "metadata": {"category": "preferences", "verified": True},
}


# distinct enough that none is a near-duplicate of another
FACTS = [
    "User prefers dark mode interfaces",
    "User's daughter is called Mia",
    "The quarterly report is due on Friday",
    "User is allergic to peanuts",
    "User drives a blue Volvo estate",
]


@pytest.fixture
def srv(tmp_path: Path, embedder: Embedder) -> Iterator[Compat]:
    yield from start(tmp_path / "engram.db", embedder)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def ok(r: Response, status: int = 200, meta: set[str] = META) -> Any:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"data", "meta"}
    assert set(body["meta"]) == meta
    assert body["meta"]["request_id"] == r.headers["x-request-id"]
    assert body["meta"]["request_id"].startswith("req_")
    assert isinstance(body["meta"]["latency_ms"], int | float)
    return body["data"]


def error(r: Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "meta"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert set(body["meta"]) == {"request_id"}
    assert body["meta"]["request_id"] == r.headers["x-request-id"]
    message: str = body["error"]["message"]
    assert message
    return message


def create(srv: Compat, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = ok(srv.client.post(BASE, json=body,
                                              headers=bearer(key or srv.admin_key)), 201)
    return data


# -- create ---------------------------------------------------------------------------------


def test_seed_create_example(srv: Compat) -> None:
    data = create(srv, SEED_CREATE)
    assert set(data) == MEMORY
    assert data["tenant_id"] == "default"
    assert data["content"] == SEED_CREATE["content"]
    assert (data["content_type"], data["tier"], data["memory_nature"]) == (
        "fact", "long", "semantic")
    assert data["metadata"] == SEED_CREATE["metadata"]
    # the seed's defaults
    assert data["relevance_score"] == 0.5
    assert data["importance_score"] == 0.5
    assert data["confidence_score"] == 1.0
    assert data["access_count"] == 0
    assert data["last_accessed_at"] is None
    assert data["parent_memory_id"] is None
    assert data["external_id"] is None and data["source_id"] is None
    assert data["pii_detected"] is False and data["pii_fields"] == []
    assert len(data["integrity_hash"]) == 64
    assert data["created_at"] == data["updated_at"]
    assert data["created_at"].endswith("Z")
    assert data["expires_at"] is None
    # a long-tier memory decays slower than the default one (see the default test)
    assert 0 < data["decay_rate"] < 0.01


def test_defaults_of_a_plain_memory(srv: Compat) -> None:
    data = create(srv, {"content": "Met John at the conference on Tuesday"})
    assert data["content_type"] == "text"
    assert data["tier"] == "short"
    assert data["memory_nature"] is None
    assert data["metadata"] == {}
    assert data["decay_rate"] == pytest.approx(0.01, abs=1e-12)
    assert data["relevance_score"] == 0.5 and data["importance_score"] == 0.5


def test_every_optional_create_field_is_stored(srv: Compat) -> None:
    parent = create(srv, {"content": "Project Apollo kickoff"})
    data = create(srv, {"content": "Apollo milestone 1 done", "content_type": "event",
                        "tier": "medium", "memory_nature": "episodic",
                        "parent_memory_id": parent["id"], "external_id": "ext-1",
                        "source_id": "jira", "importance_score": 0.7})
    assert data["parent_memory_id"] == parent["id"]
    assert (data["external_id"], data["source_id"]) == ("ext-1", "jira")
    assert data["importance_score"] == 0.7
    assert (data["tier"], data["content_type"], data["memory_nature"]) == (
        "medium", "event", "episodic")


def test_a_duplicate_returns_the_stored_memory_with_200(srv: Compat) -> None:
    first = create(srv, SEED_CREATE)
    r = srv.client.post(BASE, json=SEED_CREATE, headers=bearer(srv.admin_key))
    again = ok(r, 200)
    assert again["id"] == first["id"]
    assert srv.total() == 1


@pytest.mark.parametrize(("body", "field"), [
    ({}, "content"),
    ({"content": ""}, "content"),
    ({"content": "   "}, "content"),
    ({"content": "x" * 10_001}, "content"),
    ({"content": "x", "content_type": "video"}, "content_type"),
    ({"content": "x", "tier": "forever"}, "tier"),
    ({"content": "x", "memory_nature": "procedural"}, "memory_nature"),
    ({"content": "x", "parent_memory_id": "nope"}, "parent_memory_id"),
    ({"content": "x", "parent_memory_id": UNKNOWN_ID}, "parent_memory_id"),
    ({"content": "x", "metadata": [1]}, "metadata"),
    ({"content": "x", "importance_score": 2}, "importance_score"),
    ({"content": "x", "user_id": "u1"}, "user_id"),
])
def test_invalid_create_is_a_validation_error(srv: Compat, body: dict[str, Any],
                                              field: str) -> None:
    r = srv.client.post(BASE, json=body, headers=bearer(srv.admin_key))
    message = error(r, 422, "VALIDATION_ERROR")
    assert message.startswith(field), message


def test_malformed_json_is_400(srv: Compat) -> None:
    r = srv.client.post(BASE, content=b"{oops", headers=bearer(srv.admin_key))
    error(r, 400, "BAD_REQUEST")


# -- list ---------------------------------------------------------------------------------


def test_seed_list_example(srv: Compat) -> None:
    long_ids = {create(srv, {"content": text, "tier": "long"})["id"]
                for text in FACTS[:3]}
    create(srv, {"content": "a short one"})
    r = srv.client.get(f"{BASE}?tier=long&limit=20", headers=bearer(srv.admin_key))
    data = ok(r, 200, LIST_META)
    meta = r.json()["meta"]
    assert {m["id"] for m in data} == long_ids
    assert all(set(m) == MEMORY for m in data)
    assert (meta["total"], meta["limit"], meta["offset"], meta["has_more"]) == (3, 20, 0, False)


def test_list_pages_with_total_and_has_more(srv: Compat) -> None:
    for text in FACTS:
        create(srv, {"content": text})
    r = srv.client.get(BASE, params={"limit": 2, "offset": 2}, headers=bearer(srv.admin_key))
    data = ok(r, 200, LIST_META)
    meta = r.json()["meta"]
    assert len(data) == 2
    assert (meta["total"], meta["limit"], meta["offset"], meta["has_more"]) == (5, 2, 2, True)
    last = srv.client.get(BASE, params={"limit": 2, "offset": 4},
                          headers=bearer(srv.admin_key)).json()["meta"]
    assert last["has_more"] is False
    default = srv.client.get(BASE, headers=bearer(srv.admin_key)).json()["meta"]
    assert default["limit"] == 50


def test_list_filters(srv: Compat) -> None:
    fact = create(srv, {"content": "John works at Acme Corp", "content_type": "fact",
                        "memory_nature": "semantic"})
    event = create(srv, {"content": "Met John on Tuesday", "content_type": "event",
                         "memory_nature": "episodic"})
    h = bearer(srv.admin_key)

    def ids(**params: Any) -> set[str]:
        return {m["id"] for m in srv.client.get(BASE, params=params, headers=h).json()["data"]}

    assert ids(content_type="fact") == {fact["id"]}
    assert ids(memory_nature="episodic") == {event["id"]}
    assert ids(min_relevance=0) == {fact["id"], event["id"]}
    assert ids(min_relevance=0.4) == {fact["id"], event["id"]}  # new memories start at 0.5
    assert ids(min_relevance=0.9) == set()


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": 101}, "limit"), ({"limit": 0}, "limit"), ({"offset": -1}, "offset"),
    ({"limit": "many"}, "limit"), ({"tier": "forever"}, "tiers"),
    ({"min_relevance": 1.5}, "min_relevance"), ({"content_type": "video"}, "content_types"),
])
def test_list_rejects_bad_parameters(srv: Compat, params: dict[str, Any], field: str) -> None:
    r = srv.client.get(BASE, params=params, headers=bearer(srv.admin_key))
    assert error(r, 422, "VALIDATION_ERROR").startswith(field)


# -- get ----------------------------------------------------------------------------------


def test_get_counts_accesses(srv: Compat) -> None:
    mid = create(srv, SEED_CREATE)["id"]
    first = ok(srv.client.get(f"{BASE}/{mid}", headers=bearer(srv.admin_key)))
    assert set(first) == MEMORY
    assert first["access_count"] == 1
    assert first["last_accessed_at"] is not None
    second = ok(srv.client.get(f"{BASE}/{mid}", headers=bearer(srv.admin_key)))
    assert second["access_count"] == 2
    assert second["relevance_score"] > 0.5  # an access refreshes relevance


def test_get_unknown_is_the_seed_not_found_error(srv: Compat) -> None:
    r = srv.client.get(f"{BASE}/{UNKNOWN_ID}", headers=bearer(srv.admin_key))
    assert error(r, 404, "NOT_FOUND") == "Memory not found"


def test_get_with_a_malformed_id_is_a_validation_error(srv: Compat) -> None:
    r = srv.client.get(f"{BASE}/not-a-uuid", headers=bearer(srv.admin_key))
    error(r, 422, "VALIDATION_ERROR")


# -- update -------------------------------------------------------------------------------


def test_seed_update_example(srv: Compat) -> None:
    mid = create(srv, {**SEED_CREATE, "tier": "short"})["id"]
    r = srv.client.patch(f"{BASE}/{mid}", json=SEED_PATCH, headers=bearer(srv.admin_key))
    data = ok(r)
    assert set(data) == MEMORY
    assert data["tier"] == "long"
    assert data["importance_score"] == 0.9
    assert data["metadata"] == {"category": "preferences", "verified": True}  # replaced
    assert data["updated_at"] >= data["created_at"]
    assert data["content"] == SEED_CREATE["content"]


def test_update_content_re_embeds(srv: Compat) -> None:
    mid = create(srv, {"content": "User lives in Berlin"})["id"]
    before = srv.native(mid)["integrity_hash"]
    data = ok(srv.client.patch(f"{BASE}/{mid}", json={"content": "User enjoys sailing"},
                               headers=bearer(srv.admin_key)))
    assert data["content"] == "User enjoys sailing"
    assert data["integrity_hash"] != before
    hits = srv.client.post("/v1/search", json={"query": "sailing hobby", "limit": 1},
                           headers=srv.admin).json()["data"]
    assert hits[0]["memory"]["id"] == mid
    assert hits[0]["explain"]["semantic"] > 0.4


def test_update_memory_nature_and_clear_it(srv: Compat) -> None:
    mid = create(srv, {"content": "Met John on Tuesday"})["id"]
    h = bearer(srv.admin_key)
    data = ok(srv.client.patch(f"{BASE}/{mid}", json={"memory_nature": "episodic"}, headers=h))
    assert data["memory_nature"] == "episodic"
    data = ok(srv.client.patch(f"{BASE}/{mid}", json={"memory_nature": None}, headers=h))
    assert data["memory_nature"] is None


@pytest.mark.parametrize(("body", "field"), [
    ({}, "body"),
    ({"importance_score": 1.5}, "importance_score"),
    ({"importance_score": None}, "importance_score"),
    ({"tier": "forever"}, "tier"),
    ({"content": ""}, "content"),
    ({"content_type": "fact"}, "content_type"),  # not updatable through Memory OS
    ({"metadata": "x"}, "metadata"),
])
def test_invalid_update_is_a_validation_error(srv: Compat, body: dict[str, Any],
                                              field: str) -> None:
    mid = create(srv, SEED_CREATE)["id"]
    r = srv.client.patch(f"{BASE}/{mid}", json=body, headers=bearer(srv.admin_key))
    assert error(r, 422, "VALIDATION_ERROR").startswith(field)


def test_update_unknown_is_404(srv: Compat) -> None:
    r = srv.client.patch(f"{BASE}/{UNKNOWN_ID}", json=SEED_PATCH,
                         headers=bearer(srv.admin_key))
    assert error(r, 404, "NOT_FOUND") == "Memory not found"


def test_update_of_an_immutable_memory_is_409(srv: Compat) -> None:
    # immutable memories come from the other faces (MemoClaw, native)
    mid = srv.client.post("/v1/memories", json={"content": "locked", "immutable": True},
                          headers=srv.admin).json()["data"]["id"]
    r = srv.client.patch(f"{BASE}/{mid}", json=SEED_PATCH, headers=bearer(srv.admin_key))
    error(r, 409, "CONFLICT")


# -- delete -------------------------------------------------------------------------------


def test_seed_delete_example(srv: Compat) -> None:
    mid = create(srv, SEED_CREATE)["id"]
    r = srv.client.delete(f"{BASE}/{mid}", headers=bearer(srv.admin_key))
    assert ok(r) == {"deleted": True}
    r = srv.client.get(f"{BASE}/{mid}", headers=bearer(srv.admin_key))
    assert error(r, 404, "NOT_FOUND") == "Memory not found"
    r = srv.client.delete(f"{BASE}/{mid}", headers=bearer(srv.admin_key))
    error(r, 404, "NOT_FOUND")


# -- auth, scopes, plan ---------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer mos_live_wrong"},
                                     {"Authorization": "Basic dXNlcjpwYXNz"}],
                         ids=["missing", "unknown", "basic"])
def test_a_missing_or_invalid_key_is_401(srv: Compat, headers: dict[str, str]) -> None:
    for method, path in (("POST", BASE), ("GET", BASE), ("GET", f"{BASE}/{UNKNOWN_ID}"),
                         ("PATCH", f"{BASE}/{UNKNOWN_ID}"), ("DELETE", f"{BASE}/{UNKNOWN_ID}")):
        r = srv.client.request(method, path, headers=headers,
                               json=SEED_CREATE if method in ("POST", "PATCH") else None)
        error(r, 401, "UNAUTHORIZED")


def test_x_api_key_is_accepted_too(srv: Compat) -> None:
    r = srv.client.post(BASE, json=SEED_CREATE, headers={"X-API-Key": srv.admin_key})
    ok(r, 201)


def test_scopes_are_enforced(srv: Compat) -> None:
    mid = create(srv, SEED_CREATE)["id"]
    read_only = bearer(srv.key("default", scopes=["memories:read"]))
    ok(srv.client.get(BASE, headers=read_only), 200, LIST_META)
    ok(srv.client.get(f"{BASE}/{mid}", headers=read_only))
    for method, path in (("POST", BASE), ("PATCH", f"{BASE}/{mid}"),
                         ("DELETE", f"{BASE}/{mid}")):
        r = srv.client.request(method, path, headers=read_only,
                               json=SEED_PATCH if method == "PATCH" else SEED_CREATE)
        assert "memories:write" in error(r, 403, "FORBIDDEN")
    write = bearer(srv.key("default", scopes=["memories:write"]))  # write implies read
    ok(srv.client.get(f"{BASE}/{mid}", headers=write))


def test_a_suspended_tenant_is_403(srv: Compat) -> None:
    key = srv.tenant("acme")
    srv.suspend("acme")
    r = srv.client.get(BASE, headers=bearer(key))
    assert "suspended" in error(r, 403, "FORBIDDEN")


def test_the_plan_limit_is_402(srv: Compat) -> None:
    key = srv.tenant("small", memory_limit=1)
    create(srv, SEED_CREATE, key)
    r = srv.client.post(BASE, json={"content": "one more"}, headers=bearer(key))
    error(r, 402, "QUOTA_EXCEEDED")


def test_tenants_do_not_see_each_other(srv: Compat) -> None:
    a, b = srv.tenant("a"), srv.tenant("b")
    mid = create(srv, SEED_CREATE, a)["id"]
    error(srv.client.get(f"{BASE}/{mid}", headers=bearer(b)), 404, "NOT_FOUND")
    assert ok(srv.client.get(BASE, headers=bearer(b)), 200, LIST_META) == []
    data = ok(srv.client.get(f"{BASE}/{mid}", headers=bearer(a)))
    assert data["tenant_id"] == "a"


def test_pii_is_detected_on_create(srv: Compat) -> None:
    data = create(srv, {"content": "Reach Jane at jane.doe@example.com or +1 415 555 0100"})
    assert data["pii_detected"] is True
    assert {"email", "phone"} <= set(data["pii_fields"])
