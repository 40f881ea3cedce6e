"""MemoryScope contract (../shared/seeds/memoryscope-create-memory.txt): `POST /memory` with
X-API-Key; 201 {id, user_id, scope, domain, created_at, expires_at}; errors {"detail"}:
400 `Field 'user_id' is required`, 401 `Invalid API key`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_compat_routing import Compat, start

from engramdb.embeddings import Embedder

CREATED = {"id", "user_id", "scope", "domain", "created_at", "expires_at"}

# The seed's example (its Python SDK call), as the JSON body the SDK sends.
SEED_EXAMPLE: dict[str, Any] = {
    "user_id": "user123",
    "scope": "preferences",
    "domain": "food",
    "source": "explicit_user_input",
    "ttl_days": 30,
    "value_json": {"likes": ["pizza", "sushi"], "dislikes": ["broccoli"]},
}


@pytest.fixture
def srv(tmp_path: Path, embedder: Embedder) -> Iterator[Compat]:
    yield from start(tmp_path / "engram.db", embedder)


def xkey(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def when(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def post(srv: Compat, body: Any, key: str | None = None) -> Any:
    return srv.client.post("/memory", json=body, headers=xkey(key or srv.admin_key))


def detail(r: Any, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"detail"}, body
    assert isinstance(body["detail"], str) and body["detail"]
    d: str = body["detail"]
    return d


# -- the seed's example ------------------------------------------------------------------


def test_seed_example_is_created_with_201(srv: Compat) -> None:
    r = post(srv, SEED_EXAMPLE)
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == CREATED
    assert body["user_id"] == "user123"
    assert body["scope"] == "preferences"
    assert body["domain"] == "food"
    lifetime = when(body["expires_at"]) - when(body["created_at"])
    assert abs(lifetime - timedelta(days=30)) < timedelta(seconds=2)
    stored = srv.native(body["id"])
    assert stored["value_json"] == SEED_EXAMPLE["value_json"]
    assert stored["source"] == "explicit_user_input"
    assert stored["content"]  # a readable text derived from the value, for search


def test_without_ttl_and_domain_it_never_expires(srv: Compat) -> None:
    body = {k: v for k, v in SEED_EXAMPLE.items() if k not in ("ttl_days", "domain")}
    r = post(srv, body)
    assert r.status_code == 201, r.text
    assert r.json()["expires_at"] is None and r.json()["domain"] is None
    r = post(srv, {**SEED_EXAMPLE, "ttl_days": None, "value_json": {"likes": ["tea"]}})
    assert r.status_code == 201 and r.json()["expires_at"] is None


def test_value_json_is_normalised_and_deduplicated(srv: Compat) -> None:
    r = post(srv, {**SEED_EXAMPLE, "value_json": {
        "Likes": ["Pizza", "pizza", " sushi ", "PIZZA"], "dislikes": ["broccoli", "broccoli"]}})
    assert r.status_code == 201, r.text
    assert srv.native(r.json()["id"])["value_json"] == {"likes": ["pizza", "sushi"],
                                                        "dislikes": ["broccoli"]}
    # the same value written differently is the same memory (the core's dedup)
    again = post(srv, {**SEED_EXAMPLE, "value_json": {
        "likes": ["pizza", "Sushi"], "dislikes": ["Broccoli"]}})
    assert again.status_code == 201
    assert again.json()["id"] == r.json()["id"]
    assert srv.total(user_id="user123") == 1


def test_the_same_value_for_another_user_or_scope_is_another_memory(srv: Compat) -> None:
    first = post(srv, SEED_EXAMPLE).json()["id"]
    other_user = post(srv, {**SEED_EXAMPLE, "user_id": "user456"}).json()["id"]
    other_scope = post(srv, {**SEED_EXAMPLE, "scope": "constraints"}).json()["id"]
    assert len({first, other_user, other_scope}) == 3


def test_bearer_is_accepted_too(srv: Compat) -> None:
    r = srv.client.post("/memory", json=SEED_EXAMPLE,
                        headers={"Authorization": f"Bearer {srv.admin_key}"})
    assert r.status_code == 201, r.text


# -- 400: missing or invalid fields --------------------------------------------------------


@pytest.mark.parametrize("name", ["user_id", "scope", "source", "value_json"])
def test_a_missing_required_field_is_400_naming_it(srv: Compat, name: str) -> None:
    body = {k: v for k, v in SEED_EXAMPLE.items() if k != name}
    assert detail(post(srv, body), 400) == f"Field '{name}' is required"


def test_the_first_missing_field_is_reported_in_schema_order(srv: Compat) -> None:
    assert detail(post(srv, {}), 400) == "Field 'user_id' is required"


@pytest.mark.parametrize(("name", "value"), [
    ("scope", "hobbies"),
    ("scope", 3),
    ("user_id", ""),
    ("user_id", "u" * 256),
    ("user_id", 123),
    ("domain", " "),
    ("source", ""),
    ("ttl_days", 0),
    ("ttl_days", 3651),
    ("ttl_days", 1.5),
    ("value_json", ["pizza"]),
    ("value_json", "pizza"),
])
def test_an_invalid_field_is_400_naming_it(srv: Compat, name: str, value: Any) -> None:
    d = detail(post(srv, {**SEED_EXAMPLE, name: value}), 400)
    assert d.startswith(f"Field '{name}' "), d


def test_an_invalid_scope_lists_the_six_scopes(srv: Compat) -> None:
    d = detail(post(srv, {**SEED_EXAMPLE, "scope": "hobbies"}), 400)
    for scope in ("preferences", "constraints", "communication", "accessibility",
                  "schedule", "attention"):
        assert scope in d


def test_an_unknown_field_is_400(srv: Compat) -> None:
    d = detail(post(srv, {**SEED_EXAMPLE, "purpose": "ads"}), 400)
    assert d == "Field 'purpose' is not allowed"


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b""])
def test_a_malformed_body_is_400(srv: Compat, raw: bytes) -> None:
    r = srv.client.post("/memory", content=raw, headers={
        **xkey(srv.admin_key), "Content-Type": "application/json"})
    detail(r, 400)


def test_a_value_too_big_or_too_deep_is_400(srv: Compat) -> None:
    deep: Any = "x"
    for _ in range(8):
        deep = {"a": deep}
    assert detail(post(srv, {**SEED_EXAMPLE, "value_json": deep}), 400).startswith(
        "Field 'value_json' ")
    big = {"likes": [f"item {i} " + "x" * 50 for i in range(400)]}
    assert detail(post(srv, {**SEED_EXAMPLE, "value_json": big}), 400).startswith(
        "Field 'value_json' ")


# -- 401, 403, 402, 429 -------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "ms_live_wrong"},
                                     {"X-API-Key": ""}, {"Authorization": "Bearer nope"}],
                         ids=["missing", "unknown", "empty", "bad-bearer"])
def test_a_missing_or_invalid_key_is_401_invalid_api_key(srv: Compat,
                                                         headers: dict[str, str]) -> None:
    r = srv.client.post("/memory", json=SEED_EXAMPLE, headers=headers)
    assert detail(r, 401) == "Invalid API key"


def test_auth_is_checked_before_the_body(srv: Compat) -> None:
    r = srv.client.post("/memory", json={}, headers={"X-API-Key": "wrong"})
    assert detail(r, 401) == "Invalid API key"


def test_a_read_only_key_is_403(srv: Compat) -> None:
    key = srv.key("default", scopes=["memories:read"])
    assert "memories:write" in detail(post(srv, SEED_EXAMPLE, key), 403)


def test_a_suspended_tenant_is_403(srv: Compat) -> None:
    key = srv.tenant("acme")
    srv.suspend("acme")
    assert "suspended" in detail(post(srv, SEED_EXAMPLE, key), 403)


def test_the_plan_limit_is_402(srv: Compat) -> None:
    key = srv.tenant("small", memory_limit=1)
    assert post(srv, SEED_EXAMPLE, key).status_code == 201
    d = detail(post(srv, {**SEED_EXAMPLE, "value_json": {"likes": ["ramen"]}}, key), 402)
    assert "limit" in d


def test_the_rate_limit_is_429_with_retry_after(srv: Compat) -> None:
    key = srv.key("default", rate_limit=1)
    assert post(srv, SEED_EXAMPLE, key).status_code == 201
    r = post(srv, SEED_EXAMPLE, key)
    assert detail(r, 429) == "Rate limit exceeded. Please try again later."
    assert int(r.headers["Retry-After"]) >= 1


def test_tenants_are_isolated(srv: Compat) -> None:
    a, b = srv.tenant("a"), srv.tenant("b")
    first = post(srv, SEED_EXAMPLE, a).json()["id"]
    second = post(srv, SEED_EXAMPLE, b).json()["id"]
    assert first != second


def test_a_changed_value_is_not_dropped_as_a_near_duplicate(srv: Compat) -> None:
    first = post(srv, SEED_EXAMPLE).json()["id"]
    changed = {**SEED_EXAMPLE, "value_json": {"likes": ["pizza"],
                                              "dislikes": ["broccoli", "sushi"]}}
    r = post(srv, changed)
    assert r.status_code == 201
    assert r.json()["id"] != first
    assert srv.native(r.json()["id"])["value_json"] == changed["value_json"]
