"""The compat APIs together: every path is mounted, each API's errors come out in its own
format and nobody else's (MemoryScope's /memory is not a prefix of MemLayer's /memories;
MemoClaw's /v1/store and /v1/recall leave the native /v1 alone).

The other tests/test_compat_*.py files build their servers with `start` from here."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from engramdb import Settings
from engramdb.clock import Clock
from engramdb.embeddings import Embedder
from engramdb.server import Engine, build_engine, create_app

UNKNOWN_ID = "01a1f000-0000-7000-8000-000000000000"


@dataclass
class Compat:
    """A server with the real engine, an admin key and helpers to make tenants and keys."""

    client: TestClient
    engine: Engine
    admin_key: str

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    def tenant(self, tenant_id: str, **kw: Any) -> str:
        """A new tenant and a read/write key for it."""
        r = self.client.post("/v1/admin/tenants", json={"id": tenant_id, **kw},
                             headers=self.admin)
        assert r.status_code == 201, r.text
        return self.key(tenant_id)

    def key(self, tenant_id: str = "default", scopes: list[str] | None = None,
            **kw: Any) -> str:
        body: dict[str, Any] = {"tenant_id": tenant_id, "name": "compat test", **kw}
        if scopes is not None:
            body["scopes"] = scopes
        r = self.client.post("/v1/admin/keys", json=body, headers=self.admin)
        assert r.status_code == 201, r.text
        key: str = r.json()["data"]["key"]
        return key

    def suspend(self, tenant_id: str) -> None:
        r = self.client.patch(f"/v1/admin/tenants/{tenant_id}", json={"status": "suspended"},
                              headers=self.admin)
        assert r.status_code == 200, r.text

    def native(self, memory_id: str, key: str | None = None) -> dict[str, Any]:
        """A memory as the native API shows it (every field of the record)."""
        headers = {"Authorization": f"Bearer {key}"} if key else self.admin
        r = self.client.get(f"/v1/memories/{memory_id}", headers=headers)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()["data"]
        return data

    def total(self, key: str | None = None, **params: Any) -> int:
        headers = {"Authorization": f"Bearer {key}"} if key else self.admin
        r = self.client.get("/v1/memories", params=params, headers=headers)
        assert r.status_code == 200, r.text
        n: int = r.json()["meta"]["total"]
        return n


def start(db: Path, embedder: Embedder, clock: Clock | None = None) -> Iterator[Compat]:
    settings = Settings(database_url=f"sqlite:///{db}", rate_limit_per_minute=0)
    engine = build_engine(settings, embedder=embedder, clock=clock)
    created = engine.admin.bootstrap()
    assert created is not None
    app = create_app(engine=engine)
    try:
        with TestClient(app) as client:
            yield Compat(client, engine, created.key)
    finally:
        engine.store.close()


@pytest.fixture
def srv(tmp_path: Path, embedder: Embedder) -> Iterator[Compat]:
    yield from start(tmp_path / "engram.db", embedder)


def is_native_error(r: Response) -> bool:
    body = r.json()
    return set(body) == {"error", "meta"} and "request_id" in body["meta"]


# -- every API is mounted --------------------------------------------------------------


def test_every_compat_path_is_in_the_openapi_schema(srv: Compat) -> None:
    paths = srv.client.get("/openapi.json").json()["paths"]
    expected = {
        "/memory": {"post"},
        "/api/v1/memories": {"get", "post"},
        "/api/v1/memories/{memory_id}": {"get", "patch", "delete"},
        "/memories": {"get", "post"},
        "/memories/duplicate-check": {"post"},
        "/memories/search": {"get", "post"},
        "/memories/context": {"get", "post"},
        "/memories/{memory_id}": {"get", "patch", "delete"},
        "/api/memories": {"post"},
        "/v1/store": {"post"},
        "/v1/store/{memory_id}": {"patch", "delete"},
        "/v1/recall": {"post"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert set(paths[path]) == methods, (path, set(paths[path]))
    # the native API is still all there
    assert {"post", "get"} <= set(paths["/v1/memories"])
    assert "/v1/memories/{memory_id}" in paths


def test_a_second_app_does_not_register_the_renderers_twice(
        srv: Compat, tmp_path: Path, embedder: Embedder) -> None:
    from engramdb.server import app as app_module

    before = list(app_module._renderers)
    for _ in start(tmp_path / "second.db", embedder):
        pass
    assert app_module._renderers == before
    prefixes = [p for p, _ in app_module._renderers]
    assert len(prefixes) == len(set(prefixes))


# -- each API's errors in its own format, and only there --------------------------------


@pytest.mark.parametrize(("method", "path", "shape"), [
    ("POST", "/memory", "detail"),                     # MemoryScope
    ("POST", "/memories", "detail"),                   # MemLayer
    ("GET", "/memories/search?query=x", "detail"),
    ("POST", "/api/v1/memories", "memoryos"),          # Memory OS
    ("GET", f"/api/v1/memories/{UNKNOWN_ID}", "memoryos"),
    ("POST", "/api/memories", "memcontext"),           # MemContext
    ("POST", "/v1/store", "memoclaw"),                 # MemoClaw
    ("DELETE", f"/v1/store/{UNKNOWN_ID}", "memoclaw"),
    ("POST", "/v1/recall", "memoclaw"),
    ("POST", "/v1/memories", "native"),                # native, untouched
    ("GET", "/v1/memories", "native"),
    ("POST", "/v1/search", "native"),
])
def test_401_comes_in_the_format_of_the_api_called(srv: Compat, method: str, path: str,
                                                    shape: str) -> None:
    r = srv.client.request(method, path, json={"content": "x", "query": "x"},
                           headers={"X-API-Key": "not-a-key"})
    assert r.status_code == 401, r.text
    body = r.json()
    if shape == "detail":
        assert set(body) == {"detail"} and isinstance(body["detail"], str)
    elif shape == "memoryos" or shape == "native":
        assert is_native_error(r)
        assert body["error"]["code"] == "UNAUTHORIZED"
        if shape == "memoryos":
            assert set(body["error"]) == {"code", "message"}
    elif shape == "memcontext":
        assert set(body) == {"error", "code", "requestId"}
        assert body["code"] == "HTTP_401"
    else:
        assert set(body) == {"error"}
        assert body["error"]["code"] == "UNAUTHORIZED"


@pytest.mark.parametrize("path", ["/memoryx", "/memorie", "/memoriesx", "/v1/storex",
                                  "/v1/recalls", "/api/memoriesx", "/api/v1/memoriesx"])
def test_lookalike_paths_are_not_captured_by_a_compat_format(srv: Compat, path: str) -> None:
    r = srv.client.post(path, json={}, headers=srv.admin)
    assert r.status_code == 404
    assert is_native_error(r), r.text


def test_memory_scope_format_covers_only_memory_itself(srv: Compat) -> None:
    # /memory/... is MemoryScope's (no such route: 404 in its format) ...
    r = srv.client.get("/memory/anything", headers=srv.admin)
    assert r.status_code == 404 and set(r.json()) == {"detail"}
    # ... /memories/... is MemLayer's (its 404 for an unknown memory)
    r = srv.client.get(f"/memories/{UNKNOWN_ID}", headers=srv.admin)
    assert r.status_code == 404 and set(r.json()) == {"detail"}
    assert "not found" in r.json()["detail"]


@pytest.mark.parametrize(("method", "path", "shape"), [
    ("GET", "/memory", "detail"),
    ("PUT", "/memories", "detail"),
    ("PUT", "/api/v1/memories", "memoryos"),
    ("GET", "/api/memories", "memcontext"),
    ("GET", "/v1/store", "memoclaw"),
    ("GET", "/v1/recall", "memoclaw"),
])
def test_405_comes_in_the_format_of_the_api_called(srv: Compat, method: str, path: str,
                                                    shape: str) -> None:
    r = srv.client.request(method, path, headers=srv.admin)
    assert r.status_code == 405, r.text
    body = r.json()
    if shape == "detail":
        assert set(body) == {"detail"}
    elif shape == "memoryos":
        assert body["error"]["code"] == "METHOD_NOT_ALLOWED"
    elif shape == "memcontext":
        assert body["code"] == "HTTP_405"
    else:
        assert body["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_one_memory_is_visible_through_every_face(srv: Compat) -> None:
    """The faces are views of one store: a memory stored through one API is the same
    record through the others (by id, in the tenant of the key)."""
    h = {"X-API-Key": srv.admin_key}
    r = srv.client.post("/v1/store", json={"content": "User is based in Lagos, Nigeria"},
                        headers=h)
    assert r.status_code == 201, r.text
    mid = r.json()["id"]
    assert srv.client.get(f"/api/v1/memories/{mid}", headers=h).json()["data"]["id"] == mid
    assert srv.client.get(f"/memories/{mid}", headers=h).json()["id"] == mid
    assert srv.native(mid)["content"] == "User is based in Lagos, Nigeria"


@pytest.mark.parametrize(("path", "body", "status"), [
    ("/memory", {"user_id": "u1", "scope": "preferences", "source": "system",
                 "value_json": {"likes": ["tea"]}}, 201),
    ("/api/v1/memories", {"content": "User drinks tea"}, 201),
    ("/memories", {"content": "User drinks tea", "user_id": "u1", "agent_id": "a1"}, 201),
    ("/api/memories", {"content": "User drinks tea"}, 200),
    ("/v1/store", {"content": "User drinks tea"}, 201),
])
def test_creates_honour_idempotency_keys(srv: Compat, path: str, body: dict[str, Any],
                                         status: int) -> None:
    h = {**srv.admin, "Idempotency-Key": "retry-1"}
    first = srv.client.post(path, json=body, headers=h)
    assert first.status_code == status, first.text
    again = srv.client.post(path, json=body, headers=h)
    assert again.status_code == status  # MemLayer would say 409 without the replay
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    assert srv.total() == 1
