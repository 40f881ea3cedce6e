"""MemoClaw contract (../shared/seeds/memoclaw-store-memory.txt): `POST /v1/store`;
201 {id, stored: true, deduplicated, tokens_used}; immutable memories refuse update and
delete with 409; recall at `POST /v1/recall`. MemoClaw's examples carry no auth header;
Engram needs a key (Bearer or X-API-Key). Errors `{"error": {"code", "message", "details"?}}`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from httpx import Response
from test_compat_routing import UNKNOWN_ID, Compat, start

from engramdb.embeddings import Embedder

STORED = {"id", "stored", "deduplicated", "tokens_used"}
MEMORY = {"id", "content", "metadata", "importance", "memory_type", "namespace", "session_id",
          "agent_id", "pinned", "immutable", "access_count", "expires_at", "created_at",
          "updated_at"}
RECALLED = {"id", "content", "similarity", "metadata", "importance", "namespace",
            "memory_type", "session_id", "agent_id", "created_at", "access_count", "pinned",
            "_signals"}

# The seed's example.
SEED_EXAMPLE: dict[str, Any] = {
    "content": "User prefers dark mode and vim keybindings",
    "metadata": {"tags": ["preferences", "ui"]},
    "importance": 0.8,
}
# The seed's request template, placeholders and all.
SEED_TEMPLATE: dict[str, Any] = {
    "content": "<string>",
    "metadata": {"metadata.tags": ["<string>"]},
    "importance": 123,
    "namespace": "<string>",
    "memory_type": "<string>",
    "session_id": "<string>",
    "agent_id": "<string>",
    "expires_at": "<string>",
    "pinned": True,
    "immutable": True,
}


@pytest.fixture
def srv(tmp_path: Path, embedder: Embedder) -> Iterator[Compat]:
    yield from start(tmp_path / "engram.db", embedder)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def future(days: int = 1) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat().replace("+00:00", "Z")


def store(srv: Compat, body: dict[str, Any], key: str | None = None) -> Response:
    return srv.client.post("/v1/store", json=body, headers=bearer(key or srv.admin_key))


def stored(srv: Compat, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    r = store(srv, body, key)
    assert r.status_code == 201, r.text
    assert set(r.json()) == STORED
    data: dict[str, Any] = r.json()
    return data


def error(r: Response, status: int, code: str, field: str | None = None) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) <= {"code", "message", "details"}
    assert err["code"] == code
    if field is not None:
        assert err["details"] == {"field": field}, err
        assert err["message"].startswith(field), err
    message: str = err["message"]
    assert message
    return message


def recall(srv: Compat, body: dict[str, Any], key: str | None = None) -> list[dict[str, Any]]:
    r = srv.client.post("/v1/recall", json=body, headers=bearer(key or srv.admin_key))
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"memories", "query_tokens"}
    memories: list[dict[str, Any]] = r.json()["memories"]
    assert all(set(m) == RECALLED for m in memories)
    return memories


# -- store ----------------------------------------------------------------------------------


def test_seed_example_is_stored_with_201(srv: Compat) -> None:
    data = stored(srv, SEED_EXAMPLE)
    assert data["stored"] is True
    assert data["deduplicated"] is False
    assert isinstance(data["tokens_used"], int) and data["tokens_used"] > 0
    m = srv.native(data["id"])
    assert m["metadata"] == {"tags": ["preferences", "ui"]}
    assert m["tags"] == ["preferences", "ui"]  # metadata.tags are the memory's tags
    assert (m["importance"], m["namespace"], m["memory_type"]) == (0.8, "default", "general")
    assert m["pinned"] is False and m["immutable"] is False


def test_seed_template_with_placeholders_is_a_validation_error(srv: Compat) -> None:
    # importance 123 is out of range; memory_type "<string>" is no type
    error(store(srv, SEED_TEMPLATE), 422, "VALIDATION_ERROR")
    fixed = {**SEED_TEMPLATE, "importance": 0.5, "memory_type": "general",
             "expires_at": future()}
    data = stored(srv, fixed)
    m = srv.native(data["id"])
    assert (m["namespace"], m["session_id"], m["agent_id"]) == ("<string>",) * 3
    assert m["pinned"] is True and m["immutable"] is True
    assert m["metadata"] == {"metadata.tags": ["<string>"]}


def test_every_field_is_stored(srv: Compat) -> None:
    until = future(3)
    data = stored(srv, {"content": "Always run the linter before committing",
                        "memory_type": "correction", "namespace": "repo-x",
                        "session_id": "s-9", "agent_id": "coder", "expires_at": until,
                        "pinned": True, "importance": 0.95})
    m = srv.native(data["id"])
    assert (m["memory_type"], m["namespace"], m["session_id"], m["agent_id"]) == (
        "correction", "repo-x", "s-9", "coder")
    assert m["pinned"] is True and m["importance"] == 0.95
    assert m["expires_at"][:19] == until[:19]


def test_the_same_memory_again_is_deduplicated(srv: Compat) -> None:
    first = stored(srv, SEED_EXAMPLE)
    again = stored(srv, SEED_EXAMPLE)
    assert again == {"id": first["id"], "stored": True, "deduplicated": True,
                     "tokens_used": 0}  # an exact duplicate needs no embedding
    near = stored(srv, {**SEED_EXAMPLE, "content": "User prefers dark-mode and vim "
                                                   "keybindings"})
    assert near["deduplicated"] is True and near["id"] == first["id"]
    assert near["tokens_used"] > 0
    assert srv.total() == 1


def test_namespaces_isolate_duplicates(srv: Compat) -> None:
    a = stored(srv, SEED_EXAMPLE)
    b = stored(srv, {**SEED_EXAMPLE, "namespace": "work"})
    assert b["deduplicated"] is False and b["id"] != a["id"]


@pytest.mark.parametrize(("patch", "field"), [
    ({"content": "x" * 8193}, "content"),
    ({"content": ""}, "content"),
    ({"metadata": {str(i): i for i in range(21)}}, "metadata"),
    ({"metadata": {"a": {"b": {"c": {"d": 1}}}}}, "metadata"),
    ({"metadata": {"blob": "x" * 5000}}, "metadata"),
    ({"metadata": {"tags": [1, 2]}}, "metadata.tags[0]"),
    ({"importance": 1.5}, "importance"),
    ({"importance": 123}, "importance"),
    ({"namespace": "n" * 256}, "namespace"),
    ({"memory_type": "episodic"}, "memory_type"),  # a MemLayer type, not a MemoClaw one
    ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"expires_at": "tomorrow"}, "expires_at"),
    ({"pinned": "maybe"}, "pinned"),
    ({"session_id": "s" * 256}, "session_id"),
    ({"user_id": "u1"}, "user_id"),
])
def test_invalid_store_is_422_naming_the_field(srv: Compat, patch: dict[str, Any],
                                               field: str) -> None:
    error(store(srv, {**SEED_EXAMPLE, **patch}), 422, "VALIDATION_ERROR", field)


def test_content_of_8192_characters_is_stored(srv: Compat) -> None:
    stored(srv, {"content": "note " * 1637 + "the end"})


def test_a_missing_content_or_malformed_body_is_422(srv: Compat) -> None:
    error(store(srv, {"importance": 0.5}), 422, "VALIDATION_ERROR", "content")
    r = srv.client.post("/v1/store", content=b"{x", headers=bearer(srv.admin_key))
    error(r, 422, "VALIDATION_ERROR")


# -- auth and plan ------------------------------------------------------------------------------


def test_the_seed_example_without_a_key_is_401(srv: Compat) -> None:
    r = srv.client.post("/v1/store", json=SEED_EXAMPLE,
                        headers={"Content-Type": "application/json"})
    error(r, 401, "UNAUTHORIZED")
    r = srv.client.post("/v1/recall", json={"query": "x"}, headers={"X-API-Key": "wrong"})
    error(r, 401, "UNAUTHORIZED")


def test_x_api_key_is_accepted(srv: Compat) -> None:
    r = srv.client.post("/v1/store", json=SEED_EXAMPLE, headers={"X-API-Key": srv.admin_key})
    assert r.status_code == 201, r.text


def test_the_plan_limit_is_402_payment_required(srv: Compat) -> None:
    key = srv.tenant("small", memory_limit=1)
    stored(srv, SEED_EXAMPLE, key)
    r = store(srv, {"content": "User lives in Porto"}, key)
    assert "limit" in error(r, 402, "PAYMENT_REQUIRED")


def test_a_suspended_tenant_is_403(srv: Compat) -> None:
    key = srv.tenant("acme")
    srv.suspend("acme")
    error(store(srv, SEED_EXAMPLE, key), 403, "FORBIDDEN")


def test_the_rate_limit_is_429(srv: Compat) -> None:
    key = srv.key("default", rate_limit=1)
    stored(srv, SEED_EXAMPLE, key)
    r = store(srv, SEED_EXAMPLE, key)
    error(r, 429, "RATE_LIMIT_EXCEEDED")
    assert int(r.headers["Retry-After"]) >= 1


# -- update and delete ---------------------------------------------------------------------


def test_update_changes_fields_and_re_embeds(srv: Compat) -> None:
    mid = stored(srv, SEED_EXAMPLE)["id"]
    r = srv.client.patch(f"/v1/store/{mid}", headers=bearer(srv.admin_key), json={
        "content": "User prefers light mode and emacs keybindings", "importance": 0.6,
        "memory_type": "preference", "pinned": True, "expires_at": future(2),
        "metadata": {"tags": ["ui"], "source": "chat"}})
    assert r.status_code == 200, r.text
    m = r.json()
    assert set(m) == MEMORY
    assert m["content"] == "User prefers light mode and emacs keybindings"
    assert (m["importance"], m["memory_type"], m["pinned"]) == (0.6, "preference", True)
    assert m["metadata"] == {"tags": ["ui"], "source": "chat"}
    assert srv.native(mid)["tags"] == ["ui"]
    hits = recall(srv, {"query": "emacs", "limit": 1})
    assert hits[0]["id"] == mid
    r = srv.client.patch(f"/v1/store/{mid}", headers=bearer(srv.admin_key),
                         json={"expires_at": None})
    assert r.status_code == 200 and r.json()["expires_at"] is None


@pytest.mark.parametrize(("body", "field"), [
    ({}, "body"), ({"content": "x" * 8193}, "content"), ({"importance": 2}, "importance"),
    ({"memory_type": "semantic"}, "memory_type"), ({"expires_at": "2001-01-01"}, "expires_at"),
])
def test_invalid_update_is_422(srv: Compat, body: dict[str, Any], field: str) -> None:
    mid = stored(srv, SEED_EXAMPLE)["id"]
    r = srv.client.patch(f"/v1/store/{mid}", json=body, headers=bearer(srv.admin_key))
    error(r, 422, "VALIDATION_ERROR", field)


def test_delete_then_404(srv: Compat) -> None:
    mid = stored(srv, SEED_EXAMPLE)["id"]
    r = srv.client.delete(f"/v1/store/{mid}", headers=bearer(srv.admin_key))
    assert r.status_code == 200
    assert r.json() == {"deleted": True, "id": mid}
    r = srv.client.delete(f"/v1/store/{mid}", headers=bearer(srv.admin_key))
    error(r, 404, "NOT_FOUND")
    r = srv.client.patch(f"/v1/store/{UNKNOWN_ID}", json={"importance": 0.1},
                         headers=bearer(srv.admin_key))
    error(r, 404, "NOT_FOUND")
    r = srv.client.delete("/v1/store/not-a-uuid", headers=bearer(srv.admin_key))
    error(r, 422, "VALIDATION_ERROR")


def test_an_immutable_memory_refuses_update_and_delete_with_409(srv: Compat) -> None:
    mid = stored(srv, {**SEED_EXAMPLE, "pinned": True, "immutable": True})["id"]
    h = bearer(srv.admin_key)
    r = srv.client.patch(f"/v1/store/{mid}", json={"content": "changed"}, headers=h)
    assert "immutable" in error(r, 409, "CONFLICT")
    r = srv.client.delete(f"/v1/store/{mid}", headers=h)
    assert "immutable" in error(r, 409, "CONFLICT")
    assert srv.native(mid)["content"] == SEED_EXAMPLE["content"]


def test_setting_immutable_locks_the_memory_for_good(srv: Compat) -> None:
    mid = stored(srv, SEED_EXAMPLE)["id"]
    h = bearer(srv.admin_key)
    r = srv.client.patch(f"/v1/store/{mid}", json={"immutable": True}, headers=h)
    assert r.status_code == 200 and r.json()["immutable"] is True
    r = srv.client.patch(f"/v1/store/{mid}", json={"immutable": False}, headers=h)
    error(r, 409, "CONFLICT")


def test_a_read_only_key_cannot_change_memories(srv: Compat) -> None:
    mid = stored(srv, SEED_EXAMPLE)["id"]
    key = srv.key("default", scopes=["memories:read"])
    error(store(srv, SEED_EXAMPLE, key), 403, "FORBIDDEN")
    error(srv.client.delete(f"/v1/store/{mid}", headers=bearer(key)), 403, "FORBIDDEN")
    assert recall(srv, {"query": "dark mode"}, key)[0]["id"] == mid


# -- recall ---------------------------------------------------------------------------------


def seed_memories(srv: Compat) -> dict[str, str]:
    return {
        "ui": stored(srv, SEED_EXAMPLE)["id"],
        "editor": stored(srv, {"content": "User writes Rust in Neovim", "memory_type":
                               "preference", "metadata": {"tags": ["preferences", "tools"]},
                               "agent_id": "coder", "session_id": "s-1"})["id"],
        "deploy": stored(srv, {"content": "Deploys go out on Tuesdays", "memory_type":
                               "decision", "namespace": "ops"})["id"],
    }


def test_recall_the_memoclaw_reference_example(srv: Compat) -> None:
    ids = seed_memories(srv)
    memories = recall(srv, {"query": "What are the user editor preferences?", "limit": 5,
                            "filters": {"tags": ["preferences"]}})
    assert {m["id"] for m in memories} == {ids["ui"], ids["editor"]}
    top = memories[0]
    assert 0 < top["similarity"] <= 1
    assert top["namespace"] == "default"
    assert {"semantic", "keyword", "importance", "relevance"} <= set(top["_signals"])
    sims = [m["similarity"] for m in memories]
    assert sims == sorted(sims, reverse=True)


def test_recall_filters(srv: Compat) -> None:
    ids = seed_memories(srv)

    def found(**body: Any) -> set[str]:
        return {m["id"] for m in recall(srv, {"query": "user preferences and decisions",
                                             **body})}

    assert found(namespace="ops") == {ids["deploy"]}
    assert found(memory_type="preference") == {ids["editor"]}
    assert found(agent_id="coder") == {ids["editor"]}
    assert found(session_id="s-1") == {ids["editor"]}
    assert found(filters={"tags": ["tools"]}) == {ids["editor"]}
    assert found(filters={"after": "2001-01-01T00:00:00Z"}) == set(ids.values())
    assert found(filters={"after": future()}) == set()
    assert len(found(limit=1)) == 1
    assert found(min_similarity=0.99) == set()
    assert found(include_relations=True) == set(ids.values())


@pytest.mark.parametrize(("body", "field"), [
    ({}, "query"), ({"query": ""}, "query"), ({"query": "x" * 8193}, "query"),
    ({"query": "x", "limit": 0}, "limit"), ({"query": "x", "limit": 101}, "limit"),
    ({"query": "x", "min_similarity": 1.5}, "min_similarity"),
    ({"query": "x", "memory_type": "fact"}, "memory_type"),
    ({"query": "x", "filters": {"after": "soon"}}, "filters.after"),
    ({"query": "x", "filters": {"tags": [str(i) for i in range(11)]}}, "filters.tags"),
    ({"query": "x", "filters": {"colour": "red"}}, "filters.colour"),
])
def test_recall_rejects_bad_input(srv: Compat, body: dict[str, Any], field: str) -> None:
    r = srv.client.post("/v1/recall", json=body, headers=bearer(srv.admin_key))
    error(r, 422, "VALIDATION_ERROR", field)


def test_update_moves_a_memory_to_another_namespace(srv: Compat) -> None:
    mid = stored(srv, SEED_EXAMPLE)["id"]
    r = srv.client.patch(f"/v1/store/{mid}", json={"namespace": "work"},
                         headers=bearer(srv.admin_key))
    assert r.status_code == 200, r.text
    assert r.json()["namespace"] == "work"
