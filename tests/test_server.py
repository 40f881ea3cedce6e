"""The HTTP server end to end: the FastAPI app with the real engine (real model, SQLite file)
behind it, driven through Starlette's TestClient. Every status code of the native API, auth,
scopes, tenant isolation, idempotency, pagination and export/import."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from engramdb import FrozenClock, Settings
from engramdb.clock import Clock
from engramdb.embeddings import Embedder
from engramdb.errors import Unauthorized
from engramdb.server import Engine, build_engine, create_app

UNKNOWN_ID = "01a1f000-0000-7000-8000-000000000000"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Server:
    client: TestClient
    engine: Engine
    admin_key: str

    @property
    def h(self) -> dict[str, str]:
        return auth(self.admin_key)

    def tenant(self, tenant_id: str, scopes: list[str] | None = None, **kw: Any) -> str:
        """A new tenant (through the admin API) and a key for it."""
        r = self.client.post("/v1/admin/tenants", json={"id": tenant_id, **kw}, headers=self.h)
        assert r.status_code == 201, r.text
        return self.key(tenant_id, scopes)

    def key(self, tenant_id: str = "default", scopes: list[str] | None = None,
            **kw: Any) -> str:
        body: dict[str, Any] = {"tenant_id": tenant_id, "name": "test", **kw}
        if scopes is not None:
            body["scopes"] = scopes
        r = self.client.post("/v1/admin/keys", json=body, headers=self.h)
        assert r.status_code == 201, r.text
        key: str = r.json()["data"]["key"]
        return key

    def add(self, content: str, key: str | None = None, **fields: Any) -> dict[str, Any]:
        r = self.client.post("/v1/memories", json={"content": content, **fields},
                             headers=auth(key or self.admin_key))
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()["data"]
        return data

    def total(self, key: str | None = None, **params: Any) -> int:
        r = self.client.get("/v1/memories", params=params, headers=auth(key or self.admin_key))
        assert r.status_code == 200, r.text
        n: int = r.json()["meta"]["total"]
        return n


def start(db: Path, embedder: Embedder, clock: Clock | None = None,
          **overrides: Any) -> Iterator[Server]:
    settings = Settings(database_url=f"sqlite:///{db}", rate_limit_per_minute=0, **overrides)
    engine = build_engine(settings, embedder=embedder, clock=clock)
    created = engine.admin.bootstrap()
    assert created is not None
    app = create_app(engine=engine)
    try:
        with TestClient(app) as client:
            yield Server(client, engine, created.key)
    finally:
        engine.store.close()


@pytest.fixture
def srv(tmp_path: Path, embedder: Embedder) -> Iterator[Server]:
    yield from start(tmp_path / "engram.db", embedder)


@pytest.fixture
def clocked(tmp_path: Path, embedder: Embedder, clock: FrozenClock) -> Iterator[Server]:
    yield from start(tmp_path / "engram.db", embedder, clock)


def assert_error(r: Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    """The native error envelope, with the request id of the response header."""
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == {"error", "meta"}
    err = body["error"]
    assert err["code"] == code
    assert isinstance(err["message"], str) and err["message"]
    assert set(err) <= {"code", "message", "field", "existing_id"}
    assert ("existing_id" in err) == (code == "DUPLICATE")
    if field is not None:
        assert err.get("field") == field, err
        if status in (400, 422):  # validation messages start with the field's name
            message = re.sub(r"^line \d+: ", "", err["message"])
            assert message.startswith(field) or field.startswith("line"), err
    assert body["meta"]["request_id"] == r.headers["x-request-id"]
    return err


# -- auth -----------------------------------------------------------------------------


def test_bearer_and_x_api_key_are_both_accepted(srv: Server) -> None:
    for headers in ({"Authorization": f"Bearer {srv.admin_key}"},
                    {"Authorization": f"bearer   {srv.admin_key}  "},
                    {"X-API-Key": srv.admin_key}):
        r = srv.client.get("/v1/memories", headers=headers)
        assert r.status_code == 200, (headers, r.text)


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer eng_live_000000000000000000000000000000000000000000000"},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"X-API-Key": "not-a-key"},
    {"X-API-Key": "eng_live_" + "x" * 500},
], ids=["missing", "empty-bearer", "unknown", "basic", "garbage", "too-long"])
def test_missing_or_invalid_key_is_401(srv: Server, headers: dict[str, str]) -> None:
    for method, path in (("GET", "/v1/memories"), ("POST", "/v1/memories"),
                         ("POST", "/v1/search"), ("GET", "/v1/export"),
                         ("GET", "/v1/admin/tenants")):
        r = srv.client.request(method, path, headers=headers,
                               json={"content": "x", "query": "x"} if method == "POST" else None)
        assert_error(r, 401, "UNAUTHORIZED")
    assert srv.total() == 0


def test_revoked_key_is_401_at_once(srv: Server) -> None:
    r = srv.client.post("/v1/admin/keys", json={"name": "short-lived"}, headers=srv.h)
    assert r.status_code == 201
    key, key_id = r.json()["data"]["key"], r.json()["data"]["id"]
    assert srv.client.get("/v1/memories", headers=auth(key)).status_code == 200
    listed = srv.client.get("/v1/admin/keys", headers=srv.h).json()["data"]
    assert key_id in {k["id"] for k in listed}
    assert all("key" not in k and "key_hash" not in k for k in listed)
    r = srv.client.delete(f"/v1/admin/keys/{key_id}", headers=srv.h)
    assert r.status_code == 200 and r.json()["data"]["revoked_at"] is not None
    err = assert_error(srv.client.get("/v1/memories", headers=auth(key)), 401, "UNAUTHORIZED")
    assert "invalid" in err["message"]
    assert_error(srv.client.delete(f"/v1/admin/keys/{UNKNOWN_ID}", headers=srv.h),
                 404, "NOT_FOUND", "key_id")


def test_key_checks_use_the_store_only_when_not_cached(
        srv: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key seen in the last 5 s is checked from memory on the event loop; an unknown or
    stale one goes to the store (in the thread pool), and a key the store does not know
    is refused either way."""
    admin = srv.engine.admin
    lookups: list[str] = []
    real = admin.store.get_key_by_hash

    def counted(digest: str) -> Any:
        lookups.append(digest)
        return real(digest)

    monkeypatch.setattr(admin.store, "get_key_by_hash", counted)
    key = srv.key()
    admin._forget_cache()
    lookups.clear()
    assert admin.cached_principal(key) is None
    for _ in range(3):
        assert srv.client.get("/v1/memories", headers=auth(key)).status_code == 200
    assert len(lookups) == 1  # the first request asked the store, the others the cache
    assert admin.cached_principal(key) is not None
    later = time.monotonic() + 6.0
    monkeypatch.setattr("engramdb.engine.admin.time.monotonic", lambda: later)
    assert admin.cached_principal(key) is None  # stale: asked again
    assert srv.client.get("/v1/memories", headers=auth(key)).status_code == 200
    assert len(lookups) == 2
    for bad in ("eng_live_" + "x" * 43, "y" * 10_000):
        assert_error(srv.client.get("/v1/memories", headers=auth(bad)), 401, "UNAUTHORIZED")
    with pytest.raises(Unauthorized):
        admin.cached_principal(None)
    with pytest.raises(Unauthorized):
        admin.cached_principal("z" * 10_000)


# -- scopes ---------------------------------------------------------------------------


def test_read_only_key_cannot_write(srv: Server) -> None:
    mid = srv.add("The user's favourite colour is green")["id"]
    ro = srv.key(scopes=["memories:read"])
    h = auth(ro)
    assert srv.client.get("/v1/memories", headers=h).status_code == 200
    assert srv.client.get(f"/v1/memories/{mid}", headers=h).status_code == 200
    assert srv.client.get(f"/v1/memories/{mid}/history", headers=h).status_code == 200
    assert srv.client.post("/v1/search", json={"query": "colour"}, headers=h).status_code == 200
    assert srv.client.post("/v1/context", json={"query": "colour"}, headers=h).status_code == 200
    assert srv.client.post("/v1/memories/duplicate-check", json={"content": "x"},
                           headers=h).status_code == 200
    assert srv.client.get("/v1/export", headers=h).status_code == 200
    for method, path, body in (
        ("POST", "/v1/memories", {"content": "a new fact"}),
        ("POST", "/v1/memories/batch", {"items": [{"content": "a new fact"}]}),
        ("PATCH", f"/v1/memories/{mid}", {"importance": 0.9}),
        ("DELETE", f"/v1/memories/{mid}", None),
        ("POST", "/v1/admin/keys", {"name": "x"}),
        ("GET", "/v1/admin/tenants", None),
    ):
        r = srv.client.request(method, path, json=body, headers=h)
        err = assert_error(r, 403, "FORBIDDEN")
        assert "scope" in err["message"]
    r = srv.client.post("/v1/import", content=b"", headers=h)
    assert_error(r, 403, "FORBIDDEN")
    assert srv.total() == 1
    assert srv.client.get(f"/v1/memories/{mid}", headers=h).json()["data"]["importance"] == 0.5


def test_write_key_reads_but_is_no_admin(srv: Server) -> None:
    rw = srv.key()  # default scopes: read + write
    h = auth(rw)
    mid = srv.add("Allergic to peanuts", key=rw)["id"]
    assert srv.client.get(f"/v1/memories/{mid}", headers=h).status_code == 200
    assert srv.client.post("/v1/search", json={"query": "allergy"}, headers=h).status_code == 200
    assert srv.client.patch(f"/v1/memories/{mid}", json={"tier": "long"},
                            headers=h).status_code == 200
    for method, path, body in (
        ("GET", "/v1/admin/tenants", None),
        ("POST", "/v1/admin/tenants", {"id": "evil"}),
        ("PATCH", "/v1/admin/tenants/default", {"status": "suspended"}),
        ("GET", "/v1/admin/keys", None),
        ("POST", "/v1/admin/keys", {"scopes": ["admin"]}),
        ("DELETE", f"/v1/admin/keys/{UNKNOWN_ID}", None),
    ):
        assert_error(srv.client.request(method, path, json=body, headers=h), 403, "FORBIDDEN",
                     "scope")
    tenants = srv.client.get("/v1/admin/tenants", headers=srv.h).json()["data"]
    assert [t["id"] for t in tenants] == ["default"]
    assert tenants[0]["status"] == "active"


def test_admin_endpoints_validate(srv: Server) -> None:
    assert_error(srv.client.post("/v1/admin/keys", json={"scopes": ["root"]}, headers=srv.h),
                 422, "VALIDATION_ERROR", "scopes")
    assert_error(srv.client.post("/v1/admin/keys", json={"tenant_id": "nope"}, headers=srv.h),
                 404, "NOT_FOUND", "tenant_id")
    assert_error(srv.client.post("/v1/admin/tenants", json={"id": "bad id!"}, headers=srv.h),
                 422, "VALIDATION_ERROR", "tenant_id")
    assert_error(srv.client.post("/v1/admin/tenants", json={"id": "default"}, headers=srv.h),
                 422, "VALIDATION_ERROR", "tenant_id")
    assert_error(srv.client.patch("/v1/admin/tenants/default", json={"status": "paused"},
                                  headers=srv.h), 422, "VALIDATION_ERROR", "status")
    assert_error(srv.client.patch("/v1/admin/tenants/nope", json={"status": "active"},
                                  headers=srv.h), 404, "NOT_FOUND", "tenant_id")


# -- tenants --------------------------------------------------------------------------


def test_tenants_are_isolated(srv: Server) -> None:
    key_a = srv.tenant("acme")
    key_b = srv.tenant("globex")
    ha, hb = auth(key_a), auth(key_b)
    mem = srv.add("Prefers window seats on long flights", key=key_a, user_id="u1",
                  metadata={"k": "v"})
    mid = mem["id"]
    assert mem["memory"]["tenant_id"] == "acme"

    for method, path, body in (
        ("GET", f"/v1/memories/{mid}", None),
        ("PATCH", f"/v1/memories/{mid}", {"content": "hijacked"}),
        ("PATCH", f"/v1/memories/{mid}", {"importance": 0.1}),
        ("DELETE", f"/v1/memories/{mid}", None),
        ("GET", f"/v1/memories/{mid}/history", None),
    ):
        assert_error(srv.client.request(method, path, json=body, headers=hb), 404, "NOT_FOUND",
                     "id")
    # the admin of another tenant is no exception: admin scope is not cross-tenant data access
    assert_error(srv.client.get(f"/v1/memories/{mid}", headers=srv.h), 404, "NOT_FOUND", "id")

    r = srv.client.get("/v1/memories", headers=hb)
    assert r.json()["data"] == [] and r.json()["meta"]["total"] == 0
    r = srv.client.get("/v1/memories", params={"user_id": "u1"}, headers=hb)
    assert r.json()["data"] == []
    r = srv.client.post("/v1/search", json={"query": "window seat flights"}, headers=hb)
    assert r.status_code == 200 and r.json()["data"] == []
    r = srv.client.post("/v1/context", json={"query": "window seat flights"}, headers=hb)
    assert r.json()["data"]["memories"] == [] and r.json()["data"]["context"] == ""
    r = srv.client.post("/v1/memories/duplicate-check",
                        json={"content": "Prefers window seats on long flights",
                              "user_id": "u1"}, headers=hb)
    assert r.json()["data"]["is_duplicate"] is False
    assert r.json()["data"]["existing_id"] is None
    r = srv.client.get("/v1/export", headers=hb)
    assert r.status_code == 200 and r.text == ""

    # the same content is a new memory in the other tenant, not a duplicate
    r = srv.client.post("/v1/memories", json={"content": "Prefers window seats on long flights",
                                              "user_id": "u1"}, headers=hb)
    assert r.status_code == 201 and r.json()["data"]["id"] != mid

    # A's memory is untouched
    r = srv.client.get(f"/v1/memories/{mid}", headers=ha)
    assert r.status_code == 200
    assert r.json()["data"]["content"] == "Prefers window seats on long flights"
    assert r.json()["data"]["importance"] == 0.5
    events = srv.client.get(f"/v1/memories/{mid}/history", headers=ha).json()["data"]
    assert [e["event"] for e in events] == ["create"]
    hits = srv.client.post("/v1/search", json={"query": "window seat"}, headers=ha).json()
    assert [h["memory"]["id"] for h in hits["data"]] == [mid]
    lines = srv.client.get("/v1/export", headers=ha).text.splitlines()
    assert [json.loads(line)["id"] for line in lines] == [mid]


def test_suspended_tenant_is_403(srv: Server) -> None:
    key = srv.tenant("acme")
    mid = srv.add("Works night shifts", key=key)["id"]
    r = srv.client.patch("/v1/admin/tenants/acme", json={"status": "suspended"}, headers=srv.h)
    assert r.status_code == 200 and r.json()["data"]["status"] == "suspended"
    for method, path, body in (("GET", "/v1/memories", None),
                               ("GET", f"/v1/memories/{mid}", None),
                               ("POST", "/v1/memories", {"content": "more"}),
                               ("POST", "/v1/search", {"query": "shifts"})):
        err = assert_error(srv.client.request(method, path, json=body, headers=auth(key)),
                           403, "FORBIDDEN")
        assert "suspended" in err["message"]
    r = srv.client.patch("/v1/admin/tenants/acme", json={"status": "active"}, headers=srv.h)
    assert r.status_code == 200
    assert srv.client.get(f"/v1/memories/{mid}", headers=auth(key)).status_code == 200
    assert srv.total(key) == 1


def test_plan_limit_is_402_and_stores_nothing(srv: Server) -> None:
    key = srv.tenant("small", memory_limit=2)
    h = auth(key)
    first = srv.add("Likes jazz", key=key)["id"]
    srv.add("Lives in Porto", key=key)
    r = srv.client.post("/v1/memories", json={"content": "Owns a cat called Miso"}, headers=h)
    err = assert_error(r, 402, "QUOTA_EXCEEDED")
    assert err["message"].startswith("plan limit reached: tenant small may store 2 memories")
    r = srv.client.post("/v1/memories/batch", json={"items": [
        {"content": "Speaks Portuguese"}, {"content": "Runs marathons"}]}, headers=h)
    assert_error(r, 402, "QUOTA_EXCEEDED")
    srv.add("Grows tomatoes")  # in the default tenant, exported and imported into "small"
    r = srv.client.post("/v1/import", content=srv.client.get("/v1/export", headers=srv.h).content,
                        headers=h)
    assert_error(r, 402, "QUOTA_EXCEEDED")
    assert srv.total(key) == 2
    # a duplicate stores nothing, so it is answered even at the limit
    r = srv.client.post("/v1/memories", json={"content": "Likes jazz"}, headers=h)
    assert r.status_code == 200 and r.json()["data"]["existing_id"] == first
    # raising the limit (null removes it) lets writes through again
    r = srv.client.patch("/v1/admin/tenants/small", json={"memory_limit": None}, headers=srv.h)
    assert r.status_code == 200 and r.json()["data"]["memory_limit"] is None
    assert srv.client.post("/v1/memories", json={"content": "Owns a cat called Miso"},
                           headers=h).status_code == 201
    assert srv.total(key) == 3


def test_rate_limit_per_key_is_429_with_retry_after(srv: Server) -> None:
    r = srv.client.post("/v1/admin/keys", json={"name": "slow", "rate_limit": 2}, headers=srv.h)
    assert r.status_code == 201 and r.json()["data"]["rate_limit"] == 2
    slow = auth(r.json()["data"]["key"])
    assert srv.client.get("/v1/memories", headers=slow).status_code == 200
    assert srv.client.post("/v1/memories", json={"content": "one"}, headers=slow).status_code == 201
    r = srv.client.post("/v1/memories", json={"content": "two"}, headers=slow)
    err = assert_error(r, 429, "RATE_LIMITED")
    assert "2 requests per minute" in err["message"]
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= 30
    assert_error(srv.client.get("/v1/memories", headers=slow), 429, "RATE_LIMITED")
    # other keys have their own budget
    assert srv.client.get("/v1/memories", headers=srv.h).status_code == 200
    assert srv.total() == 1
    assert_error(srv.client.post("/v1/admin/keys", json={"rate_limit": -1}, headers=srv.h),
                 422, "VALIDATION_ERROR", "rate_limit")


# -- ids: 404 and 422 -----------------------------------------------------------------


def test_unknown_id_is_404_malformed_id_is_422(srv: Server) -> None:
    """A well-formed id that is not in the tenant is 404; a string that is no UUID at all is
    invalid input like any other field: 422 naming `id`, on every route that takes one."""
    routes = (("GET", "/v1/memories/{}", None), ("PATCH", "/v1/memories/{}", {"tier": "long"}),
              ("DELETE", "/v1/memories/{}", None), ("GET", "/v1/memories/{}/history", None))
    for method, path, body in routes:
        r = srv.client.request(method, path.format(UNKNOWN_ID), json=body, headers=srv.h)
        assert_error(r, 404, "NOT_FOUND", "id")
        for bad in ("not-a-uuid", "123", "01a1f000-0000-7000-8000-00000000000g"):
            r = srv.client.request(method, path.format(bad), json=body, headers=srv.h)
            err = assert_error(r, 422, "VALIDATION_ERROR", "id")
            assert "UUID" in err["message"]
    # unknown routes and methods keep the envelope
    assert_error(srv.client.get("/v1/nothing", headers=srv.h), 404, "NOT_FOUND")
    assert_error(srv.client.put("/v1/memories", headers=srv.h), 405, "METHOD_NOT_ALLOWED")


# -- 409 ------------------------------------------------------------------------------


def test_immutable_memory_is_409_on_update_and_delete(srv: Server) -> None:
    mid = srv.add("Signed the contract on 2024-03-01", immutable=True)["id"]
    r = srv.client.patch(f"/v1/memories/{mid}", json={"content": "Never signed"}, headers=srv.h)
    assert_error(r, 409, "CONFLICT", "immutable")
    assert_error(srv.client.delete(f"/v1/memories/{mid}", headers=srv.h), 409, "CONFLICT",
                 "immutable")
    got = srv.client.get(f"/v1/memories/{mid}", headers=srv.h).json()["data"]
    assert got["content"] == "Signed the contract on 2024-03-01" and got["immutable"] is True


def test_patch_to_duplicate_content_is_409(srv: Server) -> None:
    a = srv.add("Prefers tea over coffee", user_id="u1")["id"]
    b = srv.add("Has two children", user_id="u1")["id"]
    r = srv.client.patch(f"/v1/memories/{b}", json={"content": "Prefers tea over coffee"},
                         headers=srv.h)
    err = assert_error(r, 409, "DUPLICATE", "content")
    assert err["existing_id"] == a and a in err["message"]
    got = srv.client.get(f"/v1/memories/{b}", headers=srv.h).json()["data"]
    assert got["content"] == "Has two children"
    # the same content in another user scope is no duplicate
    c = srv.add("Has a dog", user_id="u2")["id"]
    r = srv.client.patch(f"/v1/memories/{c}", json={"content": "Prefers tea over coffee"},
                         headers=srv.h)
    assert r.status_code == 200 and r.json()["data"]["content"] == "Prefers tea over coffee"


# -- 413, 400, 422 --------------------------------------------------------------------


@pytest.fixture
def small(tmp_path: Path, embedder: Embedder) -> Iterator[Server]:
    yield from start(tmp_path / "engram.db", embedder, max_body_bytes=2048)


def test_body_over_limit_is_413_with_content_length(small: Server) -> None:
    body = json.dumps({"content": "word " * 1000}).encode()
    assert len(body) > 2048
    for path in ("/v1/memories", "/v1/memories/batch", "/v1/import", "/v1/search"):
        r = small.client.post(path, content=body, headers=small.h | {
            "Content-Type": "application/json"})
        err = assert_error(r, 413, "PAYLOAD_TOO_LARGE")
        assert "2048 bytes" in err["message"]
    assert small.total() == 0


def test_body_over_limit_is_413_when_chunked(small: Server) -> None:
    big = json.dumps({"content": "word " * 1000}).encode()

    def chunks(data: bytes) -> Iterator[bytes]:
        for i in range(0, len(data), 256):
            yield data[i:i + 256]

    for path in ("/v1/memories", "/v1/import"):
        r = small.client.post(path, content=chunks(big), headers=small.h | {
            "Content-Type": "application/json"})
        assert "content-length" not in r.request.headers
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert small.total() == 0
    # a chunked body under the limit goes through
    ok = json.dumps({"content": "A small chunked memory"}).encode()
    r = small.client.post("/v1/memories", content=chunks(ok), headers=small.h | {
        "Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    assert small.total() == 1


@pytest.mark.parametrize("body", [b"{bad json", b'{"content": "x",}', b"[1, 2]", b'"text"'])
def test_malformed_json_is_400(srv: Server, body: bytes) -> None:
    r = srv.client.post("/v1/memories", content=body,
                        headers=srv.h | {"Content-Type": "application/json"})
    err = assert_error(r, 400, "BAD_REQUEST")
    assert "JSON" in err["message"]
    assert srv.total() == 0


@pytest.mark.parametrize(("body", "field"), [
    ({"content": ""}, "content"),
    ({"content": "   \n "}, "content"),
    ({"content": "x" * 10_001}, "content"),
    ({}, "content"),
    ({"content": "x", "importance": 2}, "importance"),
    ({"content": "x", "importance": "high"}, "importance"),
    ({"content": "x", "metadata": {f"k{i}": i for i in range(21)}}, "metadata"),
    ({"content": "x", "metadata": {"a": {"b": {"c": {"d": 1}}}}}, "metadata"),
    ({"content": "x", "bogus": 1}, "bogus"),
    ({"content": "x", "ttl_days": 0}, "ttl_days"),
    ({"content": "x", "memory_type": "dream"}, "memory_type"),
    ({"content": "x", "tags": "not-a-list"}, "tags"),
    ({"content": "x", "user_id": ""}, "user_id"),
    ({"content": "x", "parent_memory_id": UNKNOWN_ID}, "parent_memory_id"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_invalid_memory_is_422_naming_the_field(srv: Server, body: dict[str, Any],
                                                field: str) -> None:
    r = srv.client.post("/v1/memories", json=body, headers=srv.h)
    assert_error(r, 422, "VALIDATION_ERROR", field)
    assert srv.total() == 0


def test_other_validation_errors_name_the_field(srv: Server) -> None:
    mid = srv.add("Drives an electric car")["id"]
    cases = [
        ("PATCH", f"/v1/memories/{mid}", {}, "body"),
        ("PATCH", f"/v1/memories/{mid}", {"importance": -0.1}, "importance"),
        ("PATCH", f"/v1/memories/{mid}", {"user_id": "u9"}, "user_id"),
        ("POST", "/v1/search", {"query": ""}, "query"),
        ("POST", "/v1/search", {"query": "x", "limit": 0}, "limit"),
        ("POST", "/v1/search", {"query": "x", "limit": 101}, "limit"),
        ("POST", "/v1/search", {"query": "x", "min_score": 2}, "min_score"),
        ("POST", "/v1/search", {"query": "x", "tiers": ["huge"]}, "tiers"),
        ("POST", "/v1/search", {"query": "x", "created_after": "yesterday"}, "created_after"),
        ("POST", "/v1/search", {"limit": 5}, "query"),
        ("POST", "/v1/context", {"query": "x", "budget_tokens": 1}, "budget_tokens"),
        ("POST", "/v1/memories/batch", {"items": [{"content": "ok"}, {"content": "x",
                                                                      "importance": 5}]},
         "items[1].importance"),
        ("POST", "/v1/memories/batch", {"items": [{"content": "ok"}, {"content": 5}]},
         "items[1].content"),
        ("POST", "/v1/memories/batch", {"items": [{"content": f"m{i}"} for i in range(1001)]},
         "items"),
    ]
    for method, path, body, field in cases:
        r = srv.client.request(method, path, json=body, headers=srv.h)
        assert_error(r, 422, "VALIDATION_ERROR", field)
    assert srv.total() == 1


# -- 201 / 200, batch -----------------------------------------------------------------


def test_save_is_201_duplicate_is_200(srv: Server) -> None:
    r = srv.client.post("/v1/memories", json={"content": "User prefers dark mode",
                                              "user_id": "u1", "importance": 0.8,
                                              "metadata": {"src": "chat"}, "tags": ["ui"]},
                        headers=srv.h)
    assert r.status_code == 201
    data = r.json()["data"]
    assert data["status"] == "saved" and data["existing_id"] is None
    assert data["tokens_used"] > 0
    mem = data["memory"]
    assert mem["id"] == data["id"] and mem["content"] == "User prefers dark mode"
    assert mem["user_id"] == "u1" and mem["importance"] == 0.8
    assert mem["metadata"] == {"src": "chat"} and mem["tags"] == ["ui"]
    assert mem["created_at"].endswith("Z") and mem["embedding_model"] == "all-MiniLM-L6-v2"

    r = srv.client.post("/v1/memories", json={"content": "  User prefers dark mode ",
                                              "user_id": "u1"}, headers=srv.h)
    assert r.status_code == 200
    dup = r.json()["data"]
    assert dup["status"] == "duplicate" and dup["existing_id"] == data["id"]
    assert dup["id"] == data["id"] and dup["similarity"] == 1.0
    assert srv.total() == 1


def test_batch_reports_a_status_per_item(srv: Server) -> None:
    existing = srv.add("Lives in Lisbon", user_id="u1")["id"]
    items = [{"content": "Works as a nurse", "user_id": "u1"},
             {"content": "Lives in Lisbon", "user_id": "u1"},
             {"content": "Plays the cello", "user_id": "u2"},
             {"content": "Works as a nurse", "user_id": "u1"},
             {"content": "Works as a nurse", "user_id": "u2"}]
    r = srv.client.post("/v1/memories/batch", json={"items": items}, headers=srv.h)
    assert r.status_code == 201, r.text
    body = r.json()
    res = body["data"]
    assert [x["status"] for x in res] == ["saved", "duplicate", "saved", "duplicate", "saved"]
    assert res[1]["existing_id"] == existing
    assert res[3]["existing_id"] == res[0]["id"]
    assert len({res[0]["id"], res[2]["id"], res[4]["id"], existing}) == 4
    assert body["meta"]["saved"] == 3 and body["meta"]["duplicates"] == 2
    assert srv.total() == 4
    r = srv.client.post("/v1/memories/batch", json={"items": []}, headers=srv.h)
    assert r.status_code == 201 and r.json()["data"] == []


# -- request ids and meta -------------------------------------------------------------


def test_request_id_is_echoed_and_meta_is_everywhere(srv: Server) -> None:
    rid = "client-req-42"
    r = srv.client.post("/v1/memories", json={"content": "Has a sister in Oslo"},
                        headers=srv.h | {"X-Request-ID": rid})
    assert r.headers["x-request-id"] == rid
    assert r.json()["meta"]["request_id"] == rid
    assert isinstance(r.json()["meta"]["latency_ms"], float | int)
    mid = r.json()["data"]["id"]
    r = srv.client.get("/v1/memories/nope", headers=srv.h | {"X-Request-ID": rid})
    assert r.headers["x-request-id"] == rid and r.json()["meta"]["request_id"] == rid
    r = srv.client.get("/v1/memories", headers={"X-Request-ID": rid})
    assert r.status_code == 401 and r.json()["meta"]["request_id"] == rid
    # an unusable client id is replaced, never echoed
    r = srv.client.get("/v1/memories", headers=srv.h | {"X-Request-ID": "x" * 200})
    assert r.headers["x-request-id"].startswith("req_")
    assert r.json()["meta"]["request_id"] == r.headers["x-request-id"]

    seen = set()
    for method, path, body in (
        ("GET", "/v1/memories", None), ("GET", f"/v1/memories/{mid}", None),
        ("PATCH", f"/v1/memories/{mid}", {"importance": 0.7}),
        ("GET", f"/v1/memories/{mid}/history", None),
        ("POST", "/v1/search", {"query": "sister"}),
        ("POST", "/v1/context", {"query": "sister"}),
        ("POST", "/v1/memories/duplicate-check", {"content": "Has a brother"}),
        ("POST", "/v1/memories/batch", {"items": [{"content": "Has a brother"}]}),
        ("GET", "/v1/admin/tenants", None), ("GET", "/v1/admin/keys", None),
        ("DELETE", f"/v1/memories/{mid}", None),
    ):
        r = srv.client.request(method, path, json=body, headers=srv.h)
        assert r.status_code in (200, 201), (path, r.text)
        meta = r.json()["meta"]
        assert meta["request_id"] == r.headers["x-request-id"]
        assert meta["request_id"].startswith("req_") and meta["request_id"] not in seen
        seen.add(meta["request_id"])
        assert meta["latency_ms"] >= 0
    for path in ("/healthz", "/readyz", "/metrics", "/v1/export"):
        r = srv.client.get(path, headers=srv.h)
        assert r.headers["x-request-id"].startswith("req_")


# -- idempotency ----------------------------------------------------------------------


def test_idempotency_key_replays_the_first_response(srv: Server) -> None:
    h = srv.h | {"Idempotency-Key": "op-1"}
    body = {"content": "Booked a flight to Kyoto for May", "user_id": "u1"}
    first = srv.client.post("/v1/memories", json=body, headers=h)
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    again = srv.client.post("/v1/memories", json=body, headers=h)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content  # byte for byte, request id included
    assert srv.total() == 1
    events = srv.client.get(f"/v1/memories/{first.json()['data']['id']}/history",
                            headers=srv.h).json()["data"]
    assert len(events) == 1

    # same key, another request: refused, nothing stored
    r = srv.client.post("/v1/memories", json={"content": "Something else entirely"},
                        headers=h)
    assert_error(r, 422, "VALIDATION_ERROR", "Idempotency-Key")
    assert srv.total() == 1
    # another key with the same body runs again: an ordinary duplicate
    r = srv.client.post("/v1/memories", json=body, headers=srv.h | {"Idempotency-Key": "op-2"})
    assert r.status_code == 200 and r.json()["data"]["status"] == "duplicate"
    assert "idempotent-replayed" not in r.headers

    # batches too
    hb = srv.h | {"Idempotency-Key": "batch-1"}
    items = {"items": [{"content": "Likes hiking"}, {"content": "Dislikes crowds"}]}
    b1 = srv.client.post("/v1/memories/batch", json=items, headers=hb)
    b2 = srv.client.post("/v1/memories/batch", json=items, headers=hb)
    assert b1.status_code == b2.status_code == 201
    assert b2.content == b1.content and b2.headers["idempotent-replayed"] == "true"
    assert srv.total() == 3

    # keys are per tenant: another tenant may use "op-1" for its own request
    other = srv.tenant("acme")
    r = srv.client.post("/v1/memories", json={"content": "Other tenant's fact"},
                        headers=auth(other) | {"Idempotency-Key": "op-1"})
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers

    assert_error(srv.client.post("/v1/memories", json=body,
                                 headers=srv.h | {"Idempotency-Key": "k" * 256}),
                 422, "VALIDATION_ERROR", "Idempotency-Key")


def test_failed_request_is_not_remembered_by_idempotency_key(srv: Server) -> None:
    h = srv.h | {"Idempotency-Key": "retry-me"}
    r = srv.client.post("/v1/memories", json={"content": "x", "importance": 3}, headers=h)
    assert r.status_code == 422
    r = srv.client.post("/v1/memories", json={"content": "x", "importance": 0.3}, headers=h)
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers


# -- pagination and filters -----------------------------------------------------------


def test_pagination_newest_first(clocked: Server, clock: FrozenClock) -> None:
    facts = ["Lives in Lisbon", "Allergic to peanuts", "Plays the cello", "Drives a red van",
             "Works as a nurse", "Has two cats", "Prefers tea at breakfast"]
    ids = []
    for fact in facts:
        ids.append(clocked.add(fact)["id"])
        clock.advance(seconds=1)
    newest_first = ids[::-1]
    seen = []
    for offset in (0, 3, 6):
        r = clocked.client.get("/v1/memories", params={"limit": 3, "offset": offset},
                               headers=clocked.h)
        assert r.status_code == 200
        meta = r.json()["meta"]
        assert meta["total"] == 7 and meta["limit"] == 3 and meta["offset"] == offset
        assert meta["has_more"] is (offset + 3 < 7)
        seen += [m["id"] for m in r.json()["data"]]
    assert seen == newest_first
    r = clocked.client.get("/v1/memories", params={"offset": 50}, headers=clocked.h)
    assert r.json()["data"] == [] and r.json()["meta"]["has_more"] is False
    assert r.json()["meta"]["limit"] == 50  # the default page size
    r = clocked.client.get("/v1/memories", params={"limit": 1000}, headers=clocked.h)
    assert r.status_code == 200 and len(r.json()["data"]) == 7
    for params, field in (({"limit": 1001}, "limit"), ({"limit": 0}, "limit"),
                          ({"offset": -1}, "offset"), ({"limit": "ten"}, "limit")):
        assert_error(clocked.client.get("/v1/memories", params=params, headers=clocked.h),
                     422, "VALIDATION_ERROR", field)


def test_list_filters(clocked: Server, clock: FrozenClock) -> None:
    start = clock.now()
    a = clocked.add("Alpha fact", user_id="u1", agent_id="bot", memory_type="fact",
                    tier="long", tags=["x"])["id"]
    clock.advance(hours=1)
    b = clocked.add("Beta preference", user_id="u1", memory_type="preference",
                    namespace="work")["id"]
    clock.advance(hours=1)
    c = clocked.add("Gamma note", user_id="u2", tags=["x", "y"], content_type="event",
                    memory_nature="episodic")["id"]

    def ids(**params: Any) -> list[str]:
        r = clocked.client.get("/v1/memories", params=params, headers=clocked.h)
        assert r.status_code == 200, r.text
        assert r.json()["meta"]["total"] == len(r.json()["data"])
        return [m["id"] for m in r.json()["data"]]

    assert ids() == [c, b, a]
    assert ids(user_id="u1") == [b, a]
    assert ids(agent_id="bot") == [a]
    assert ids(namespace="work") == [b]
    assert ids(namespace="default") == [c, a]
    assert ids(memory_type="preference") == [b]
    assert ids(tier="long") == [a]
    assert ids(tag="x") == [c, a]
    assert ids(content_type="event") == [c]
    assert ids(memory_nature="episodic") == [c]
    after = (start.replace(microsecond=0)).isoformat().replace("+00:00", "Z")
    assert ids(created_after=after, user_id="u1") == [b, a]
    mid = (clock.now() - timedelta(minutes=30)).isoformat()
    assert ids(created_after=mid) == [c]
    assert ids(created_before=mid) == [b, a]
    assert ids(user_id="nobody") == []
    assert_error(clocked.client.get("/v1/memories", params={"tier": "huge"},
                                    headers=clocked.h), 422, "VALIDATION_ERROR", "tiers")
    assert_error(clocked.client.get("/v1/memories", params={"created_after": "soon"},
                                    headers=clocked.h), 422, "VALIDATION_ERROR",
                 "created_after")


# -- read shapes ----------------------------------------------------------------------


def test_search_context_duplicate_check_and_history(srv: Server) -> None:
    facts = ["User is allergic to shellfish", "User's daughter is called Maya",
             "User prefers answers as bullet points", "User works at Helios Energy"]
    ids = {f: srv.add(f, user_id="u1", importance=0.6)["id"] for f in facts}
    srv.add("User is allergic to cats", user_id="u2")

    r = srv.client.post("/v1/search", json={"query": "food allergies", "user_id": "u1",
                                            "limit": 3}, headers=srv.h)
    assert r.status_code == 200
    body = r.json()
    assert body["meta"]["count"] == len(body["data"]) == 3
    top = body["data"][0]
    assert top["memory"]["id"] == ids["User is allergic to shellfish"]
    assert set(top["explain"]) >= {"semantic", "keyword", "importance", "relevance"}
    assert 0 < top["score"] <= 1
    scores = [h["score"] for h in body["data"]]
    assert scores == sorted(scores, reverse=True)
    assert all(h["memory"]["user_id"] == "u1" for h in body["data"])
    r = srv.client.post("/v1/search", json={"query": "allergic", "explain": False,
                                            "min_score": 0.99}, headers=srv.h)
    assert r.status_code == 200 and r.json()["data"] == []
    r = srv.client.post("/v1/search", json={"query": "allergic", "explain": False},
                        headers=srv.h)
    assert r.json()["data"] and all("explain" not in h for h in r.json()["data"])

    r = srv.client.post("/v1/context", json={"query": "what is the user allergic to?",
                                             "user_id": "u1", "budget_tokens": 40,
                                             "limit": 5}, headers=srv.h)
    assert r.status_code == 200
    ctx = r.json()["data"]
    assert ctx["context"].startswith("Relevant memories:\n- ")
    assert ctx["budget_tokens"] == 40 and 0 < ctx["tokens"] <= 40
    assert ctx["memories"] and ctx["memories"][0]["memory"]["content"] in ctx["context"]
    assert len(ctx["context"].splitlines()) == len(ctx["memories"]) + 1

    r = srv.client.post("/v1/memories/duplicate-check",
                        json={"content": "User works at Helios Energy", "user_id": "u1"},
                        headers=srv.h)
    d = r.json()["data"]
    assert d == {"is_duplicate": True, "similarity": 1.0,
                 "existing_id": ids["User works at Helios Energy"],
                 "existing_content": "User works at Helios Energy"}
    r = srv.client.post("/v1/memories/duplicate-check",
                        json={"content": "User's favourite sport is rowing", "user_id": "u1"},
                        headers=srv.h)
    d = r.json()["data"]
    assert d["is_duplicate"] is False and 0 <= d["similarity"] < 0.95
    assert srv.total() == 5  # the check wrote nothing

    mid = ids["User prefers answers as bullet points"]
    r = srv.client.patch(f"/v1/memories/{mid}", json={"content": "User prefers short answers",
                                                      "metadata": {"v": 2}}, headers=srv.h)
    assert r.status_code == 200
    patched = r.json()["data"]
    assert patched["content"] == "User prefers short answers" and patched["metadata"] == {"v": 2}
    assert patched["updated_at"] >= patched["created_at"]
    events = srv.client.get(f"/v1/memories/{mid}/history", headers=srv.h).json()["data"]
    assert [e["event"] for e in events] == ["create", "update"]
    assert set(events[0]) == {"id", "memory_id", "event", "at", "actor", "changes"}
    assert events[1]["changes"]["content"] == {"before": "User prefers answers as bullet points",
                                               "after": "User prefers short answers"}
    assert events[1]["actor"] is not None and events[1]["memory_id"] == mid
    hits = srv.client.post("/v1/search", json={"query": "short answers", "user_id": "u1",
                                               "limit": 1}, headers=srv.h).json()["data"]
    assert hits[0]["memory"]["id"] == mid

    r = srv.client.delete(f"/v1/memories/{mid}", headers=srv.h)
    assert r.status_code == 200 and r.json()["data"] == {"deleted": True, "id": mid}
    assert_error(srv.client.get(f"/v1/memories/{mid}", headers=srv.h), 404, "NOT_FOUND", "id")
    assert_error(srv.client.delete(f"/v1/memories/{mid}", headers=srv.h), 404, "NOT_FOUND",
                 "id")
    events = srv.client.get(f"/v1/memories/{mid}/history", headers=srv.h).json()["data"]
    assert [e["event"] for e in events] == ["create", "update", "delete"]
    assert "short answers" not in json.dumps(events)  # the tombstone keeps no content


# -- system ---------------------------------------------------------------------------


def test_health_ready_metrics_and_docs(srv: Server) -> None:
    srv.add("Counted in the metrics")
    assert srv.client.get("/healthz").json() == {"status": "ok"}
    r = srv.client.get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready", "model": "all-MiniLM-L6-v2"}
    r = srv.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "engram_http_requests_total{" in text
    assert 'route="/v1/memories"' in text and 'status="201"' in text
    assert 'engram_memories{status="active"} 1.0' in text
    assert "engram_http_request_seconds_bucket" in text

    spec = srv.client.get("/openapi.json").json()
    for path in ("/v1/memories", "/v1/memories/batch", "/v1/memories/{memory_id}",
                 "/v1/memories/{memory_id}/history", "/v1/memories/duplicate-check",
                 "/v1/search", "/v1/context", "/v1/export", "/v1/import",
                 "/v1/admin/tenants", "/v1/admin/keys", "/v1/admin/keys/{key_id}"):
        assert path in spec["paths"], path
    assert "post" in spec["paths"]["/v1/memories"]
    r = srv.client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "swagger" in r.text.lower()


# -- export / import ------------------------------------------------------------------


def _export(server: Server, key: str | None = None) -> list[dict[str, Any]]:
    r = server.client.get("/v1/export", headers=auth(key or server.admin_key))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in r.text.splitlines()]


def test_export_import_round_trip(srv: Server, tmp_path: Path, embedder: Embedder) -> None:
    srv.add("Prefers aisle seats", user_id="u1", agent_id="travel", importance=0.9,
            metadata={"src": "chat", "n": {"k": [1, 2]}}, tags=["travel", "seat"],
            memory_type="preference", tier="long")
    srv.add("Allergic to penicillin", user_id="u1", immutable=True, pinned=True,
            content_type="fact", confidence=0.8)
    srv.add("Meeting with Ana next Tuesday", user_id="u2", session_id="s1", ttl_days=30,
            namespace="work", external_id="cal-9")
    patched = srv.add("Lives in Berlin", user_id="u2")["id"]
    srv.client.patch(f"/v1/memories/{patched}", json={"content": "Lives in Hamburg"},
                     headers=srv.h)
    gone = srv.add("Temporary note", user_id="u3")["id"]
    srv.client.delete(f"/v1/memories/{gone}", headers=srv.h)
    srv.add("Favourite drink is " + "oat milk flat white", user_id="u3",
            scope="preferences", value_json={"drink": "flat white"})

    exported = _export(srv)
    assert len(exported) == 5 and gone not in {m["id"] for m in exported}
    assert all(m["format"] == "engram.memory.v1" and m["vector"] for m in exported)
    raw = srv.client.get("/v1/export", headers=srv.h).content

    for other in start(tmp_path / "fresh.db", embedder):
        assert other.total() == 0
        r = other.client.post("/v1/import", content=raw, headers=other.h)
        assert r.status_code == 200, r.text
        assert r.json()["data"] == {"imported": 5, "existing": 0, "duplicates": 0}
        again = _export(other)
        assert {m["id"]: m for m in again} == {m["id"]: m for m in exported}
        for m in exported:
            got = other.client.get(f"/v1/memories/{m['id']}", headers=other.h).json()["data"]
            for k in ("content", "metadata", "tags", "created_at", "updated_at", "expires_at",
                      "user_id", "agent_id", "namespace", "importance", "immutable",
                      "integrity_hash", "value_json"):
                assert got[k] == m[k], k
            v_old = srv.engine.store.get_vector("default", m["id"])
            v_new = other.engine.store.get_vector("default", m["id"])
            assert v_old is not None and v_new is not None
            assert v_new.dtype == np.float32 and np.array_equal(v_old, v_new)
        hits = other.client.post("/v1/search", json={"query": "where does the user live?",
                                                     "user_id": "u2", "limit": 1},
                                 headers=other.h).json()["data"]
        assert hits[0]["memory"]["id"] == patched
        # importing the same file again changes nothing
        r = other.client.post("/v1/import", content=raw, headers=other.h)
        assert r.json()["data"] == {"imported": 0, "existing": 5, "duplicates": 0}
        assert other.total() == 5
        # into another tenant: the memories become the importing tenant's
        key = other.tenant("acme")
        r = other.client.post("/v1/import", content=raw, headers=auth(key))
        assert r.json()["data"]["imported"] == 5
        assert {m["tenant_id"] for m in _export(other, key)} == {"acme"}


def test_import_refuses_tampered_or_broken_lines(srv: Server) -> None:
    srv.add("The user's bank is Lumen Bank")
    srv.add("The user's car is blue")
    lines = srv.client.get("/v1/export", headers=srv.h).text.splitlines()
    target = srv.tenant("restore")
    h = auth(target)

    def send(ls: list[str]) -> Response:
        return srv.client.post("/v1/import", content="\n".join(ls).encode(), headers=h)

    tampered = json.loads(lines[1])
    tampered["content"] = "The user's bank is Evil Bank"
    err = assert_error(send([lines[0], json.dumps(tampered)]), 422, "VALIDATION_ERROR",
                       "integrity_hash")
    assert err["message"].startswith("line 2: integrity_hash")
    wrong_vec = json.loads(lines[0]) | {"vector": "AAAA"}
    assert_error(send([json.dumps(wrong_vec)]), 422, "VALIDATION_ERROR", "vector")
    no_id = {k: v for k, v in json.loads(lines[0]).items() if k != "id"}
    assert_error(send([json.dumps(no_id)]), 422, "VALIDATION_ERROR", "id")
    assert_error(send([lines[0], "{not json"]), 422, "VALIDATION_ERROR", "line 2")
    assert_error(send(["[1, 2]"]), 422, "VALIDATION_ERROR", "line")
    assert srv.total(target) == 0  # all or nothing: the good first line was not imported
    # a line without a vector is embedded again on import
    bare = json.loads(lines[0])
    del bare["vector"]
    r = send([json.dumps(bare)])
    assert r.status_code == 200 and r.json()["data"]["imported"] == 1
    assert srv.engine.store.get_vector("restore", bare["id"]) is not None
