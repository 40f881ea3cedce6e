"""MemContext contract (../shared/seeds/memcontext-save-memory.txt): `POST /api/memories`
with X-API-Key; `{id, status: saved|updated|extended|duplicate, superseded?, existingId?}`
(200 for all four); errors `{"error", "code": "HTTP_<status>", "requestId"}`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from httpx import Response
from test_compat_routing import Compat, start

from engramdb.embeddings import Embedder
from engramdb.models import SaveResult, SaveStatus

URL = "/api/memories"
ERROR = {"error", "code", "requestId"}


@pytest.fixture
def srv(tmp_path: Path, embedder: Embedder) -> Iterator[Compat]:
    yield from start(tmp_path / "engram.db", embedder)


def xkey(key: str) -> dict[str, str]:
    return {"X-API-Key": key, "Content-Type": "application/json"}


def save(srv: Compat, body: dict[str, Any], key: str | None = None) -> Response:
    return srv.client.post(URL, json=body, headers=xkey(key or srv.admin_key))


def saved(srv: Compat, body: dict[str, Any], key: str | None = None) -> str:
    r = save(srv, body, key)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "saved", r.json()
    mid: str = r.json()["id"]
    return mid


def error(r: Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == ERROR, body
    assert body["code"] == f"HTTP_{status}"
    assert body["requestId"] == r.headers["x-request-id"]
    message: str = body["error"]
    assert message
    return message


# -- the seed's example ----------------------------------------------------------------------


def test_seed_example_as_written(srv: Compat) -> None:
    r = save(srv, {"content": "<string>"})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"id", "status"}
    assert r.json()["status"] == "saved"
    m = srv.native(r.json()["id"])
    assert (m["content"], m["source"], m["namespace"], m["user_id"]) == (
        "<string>", "api", "default", None)


def test_every_field_is_mapped(srv: Compat) -> None:
    until = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    mid = saved(srv, {"content": "Chose PostgreSQL for the database", "category": "decision",
                      "project": "memcontext", "source": "mcp",
                      "validUntil": until.isoformat().replace("+00:00", "Z")})
    m = srv.native(mid)
    assert m["memory_type"] == "decision"
    assert m["namespace"] == "memcontext"
    assert m["source"] == "mcp"
    assert datetime.fromisoformat(m["expires_at"].replace("Z", "+00:00")) == until


@pytest.mark.parametrize("category", ["preference", "fact", "decision", "context"])
def test_each_category_is_a_memory_type(srv: Compat, category: str) -> None:
    mid = saved(srv, {"content": f"A {category} worth keeping about the e-commerce app",
                      "category": category})
    assert srv.native(mid)["memory_type"] == category


@pytest.mark.parametrize("source", ["mcp", "web", "api", "openclaw"])
def test_each_source_is_kept(srv: Compat, source: str) -> None:
    mid = saved(srv, {"content": "User prefers TypeScript over JavaScript", "source": source})
    assert srv.native(mid)["source"] == source


def test_scope_isolates_end_users(srv: Compat) -> None:
    body = {"content": "User prefers concise release notes", "category": "fact"}
    a = saved(srv, {**body, "scope": "user_123"})
    b = saved(srv, {**body, "scope": "user_456"})
    assert a != b
    assert srv.native(a)["user_id"] == "user_123"


# -- statuses ---------------------------------------------------------------------------------


def test_duplicate_returns_the_existing_id(srv: Compat) -> None:
    first = saved(srv, {"content": "User prefers dark mode", "category": "preference"})
    r = save(srv, {"content": "User prefers dark mode", "category": "preference"})
    assert r.status_code == 200
    assert r.json() == {"id": first, "status": "duplicate", "existingId": first}
    assert srv.total() == 1


def test_a_duplicate_is_per_project(srv: Compat) -> None:
    a = saved(srv, {"content": "Uses macOS", "project": "alpha"})
    b = saved(srv, {"content": "Uses macOS", "project": "beta"})
    assert a != b


@pytest.mark.parametrize("status", [SaveStatus.UPDATED, SaveStatus.EXTENDED])
def test_updated_and_extended_name_the_superseded_memory(
        srv: Compat, monkeypatch: pytest.MonkeyPatch, status: SaveStatus) -> None:
    """What the core decides is passed through: the router maps the core's status and
    related_id (the supersession decision is the core's, tested there)."""
    old = saved(srv, {"content": "User lives in Berlin", "category": "fact"})
    service = srv.engine.service
    real_add = service.add

    def add(*args: Any, **kwargs: Any) -> SaveResult:
        res = real_add(*args, **kwargs)
        return replace(res, status=status, related_id=old)

    monkeypatch.setattr(service, "add", add)
    r = save(srv, {"content": "User moved to Munich", "category": "fact"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "status", "superseded"}
    assert body["status"] == status.value
    assert body["superseded"] == old
    assert body["id"] != old


def test_a_changed_fact_is_updated_by_the_core(srv: Compat) -> None:
    old = saved(srv, {"content": "User lives in Berlin", "category": "fact"})
    r = save(srv, {"content": "User moved to Munich", "category": "fact"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body == {"id": body["id"], "status": "updated", "superseded": old}


def test_a_detail_is_extended_by_the_core(srv: Compat) -> None:
    old = saved(srv, {"content": "User has a dog", "category": "fact"})
    body = save(srv, {"content": "User's dog is a beagle named Rex", "category": "fact"}).json()
    assert body == {"id": body["id"], "status": "extended", "superseded": old}


def test_an_unrelated_fact_is_saved(srv: Compat) -> None:
    saved(srv, {"content": "User likes hiking", "category": "preference"})
    body = save(srv, {"content": "User likes jazz", "category": "preference"}).json()
    assert set(body) == {"id", "status"} and body["status"] == "saved"


# -- 400: invalid input ----------------------------------------------------------------------


@pytest.mark.parametrize(("body", "field"), [
    ({}, "content"),
    ({"content": ""}, "content"),
    ({"content": "x" * 10_001}, "content"),
    ({"content": 42}, "content"),
    ({"content": "x", "category": "opinion"}, "category"),
    ({"content": "x", "source": "email"}, "source"),
    ({"content": "x", "project": "My Project"}, "project"),
    ({"content": "x", "project": "MemContext"}, "project"),
    ({"content": "x", "project": "my project"}, "project"),
    ({"content": "x", "project": ""}, "project"),
    ({"content": "x", "project": "p" * 101}, "project"),
    ({"content": "x", "validUntil": "next week"}, "validUntil"),
    ({"content": "x", "validUntil": "2001-01-01T00:00:00Z"}, "validUntil"),
    ({"content": "x", "tags": ["a"]}, "tags"),
])
def test_invalid_input_is_400_naming_the_field(srv: Compat, body: dict[str, Any],
                                               field: str) -> None:
    message = error(save(srv, body), 400)
    assert message.startswith(field), message


def test_a_project_of_100_characters_is_fine(srv: Compat) -> None:
    saved(srv, {"content": "Project with a long name", "project": "p" * 100})


def test_malformed_json_is_400(srv: Compat) -> None:
    error(srv.client.post(URL, content=b"{", headers=xkey(srv.admin_key)), 400)


# -- 401, 403 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "mc_wrong"}], ids=["missing", "invalid"])
def test_a_missing_or_invalid_key_is_401(srv: Compat, headers: dict[str, str]) -> None:
    error(srv.client.post(URL, json={"content": "x"}, headers=headers), 401)


def test_the_plan_limit_is_403_as_memcontext_documents(srv: Compat) -> None:
    key = srv.tenant("small", memory_limit=1)
    saved(srv, {"content": "User prefers dark mode"}, key)
    assert "limit" in error(save(srv, {"content": "User is based in Pune"}, key), 403)


def test_a_suspended_tenant_is_403(srv: Compat) -> None:
    key = srv.tenant("acme")
    srv.suspend("acme")
    assert "suspended" in error(save(srv, {"content": "x"}, key), 403)


def test_the_rate_limit_is_429(srv: Compat) -> None:
    key = srv.key("default", rate_limit=1)
    saved(srv, {"content": "User prefers dark mode"}, key)
    r = save(srv, {"content": "User prefers light mode"}, key)
    error(r, 429)
    assert int(r.headers["Retry-After"]) >= 1
