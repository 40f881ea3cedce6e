"""The Python SDK against a real server: uvicorn on a free local port (in a thread) serving the
app over the real engine (the session's model, a SQLite file), driven with `engramdb.Client`,
`AsyncClient` and `MemoryScopeClient` over TCP."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest
import uvicorn

from engramdb import (
    AsyncClient,
    Client,
    Conflict,
    Duplicate,
    EngramError,
    Forbidden,
    MemoryRecord,
    MemoryScopeClient,
    MemoryType,
    NotFound,
    Page,
    QuotaExceeded,
    RateLimited,
    SaveStatus,
    SearchHit,
    Settings,
    Tier,
    Unauthorized,
    ValidationError,
)
from engramdb.embeddings import Embedder
from engramdb.engine.service import Context, DuplicateCheck, SessionHit
from engramdb.sdk import APIConnectionError, APIError, HistoryEvent, SaveResult
from engramdb.server import Engine, build_engine, create_app

UNKNOWN_ID = "01a1f000-0000-7000-8000-000000000000"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Live:
    url: str
    engine: Engine
    admin_key: str

    def key(self, tenant: str = "default", **kw: Any) -> str:
        if self.engine.store.get_tenant(tenant) is None:
            self.engine.admin.create_tenant(tenant, memory_limit=kw.pop("memory_limit", None))
        return self.engine.admin.create_key(tenant, "sdk-test", **kw).key

    def client(self, key: str | None = None, **kw: Any) -> Client:
        return Client(self.url, api_key=key or self.key(), **kw)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Live]:
    db = tmp_path_factory.mktemp("sdk") / "engram.db"
    settings = Settings(database_url=f"sqlite:///{db}", rate_limit_per_minute=0)
    engine = build_engine(settings, embedder=embedder)
    created = engine.admin.bootstrap()
    assert created is not None
    app = create_app(engine=engine, print_bootstrap_key=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="sdk-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield Live(f"http://127.0.0.1:{port}", engine, created.key)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.store.close()


@pytest.fixture
def mem(live: Live) -> Iterator[Client]:
    """A client on a tenant of its own (tests do not see each other's memories)."""
    tenant = f"t{time.monotonic_ns()}"
    with live.client(live.key(tenant)) as c:
        yield c


# -- typed round trip -----------------------------------------------------------------


def test_crud_round_trip_returns_typed_values(mem: Client) -> None:
    res = mem.add("User prefers concise bullet points over long paragraphs", user_id="u1",
                  memory_type="semantic", importance=0.8, tags=["style"],
                  metadata={"source": "chat"}, ttl_days=30)
    assert isinstance(res, SaveResult)
    assert res.status is SaveStatus.SAVED and not res.duplicate
    assert isinstance(res.memory, MemoryRecord) and res.memory.id == res.id
    rec = res.memory
    assert rec.memory_type is MemoryType.SEMANTIC and isinstance(rec.tier, Tier)
    assert isinstance(rec.created_at, datetime) and rec.created_at.tzinfo is not None
    assert rec.expires_at is not None
    assert timedelta(days=29) < rec.expires_at - rec.created_at <= timedelta(days=30, seconds=1)
    assert rec.tags == ["style"] and rec.metadata == {"source": "chat"}

    got = mem.get(res.id)
    assert isinstance(got, MemoryRecord)
    assert got.content == rec.content and got.created_at == rec.created_at

    again = mem.add("User prefers concise bullet points over long paragraphs", user_id="u1")
    assert again.status is SaveStatus.DUPLICATE and again.duplicate
    assert again.existing_id == res.id and again.similarity is not None

    changed = mem.update(res.id, importance=0.9, tags=["style", "format"])
    assert changed.importance == 0.9 and changed.tags == ["style", "format"]

    other = mem.add("User lives in Lisbon", user_id="u1")
    page = mem.list(user_id="u1", limit=1)
    assert isinstance(page, Page)
    assert page.total == 2 and page.has_more and len(page.items) == 1
    assert page.items[0].id == other.id  # newest first
    assert mem.list(user_id="u1", limit=1, offset=1).items[0].id == res.id
    assert mem.list(tags=["format"]).total == 1

    hits = mem.search("how should answers be formatted?", user_id="u1")
    assert hits and isinstance(hits[0], SearchHit)
    assert hits[0].memory.id == res.id and 0 < hits[0].score <= 1
    assert {"semantic", "keyword", "importance", "relevance"} <= set(hits[0].explain)

    ctx = mem.context("answer formatting", user_id="u1", budget_tokens=200)
    assert isinstance(ctx, Context) and "bullet points" in ctx.text
    assert ctx.budget == 200 and 0 < ctx.tokens <= 200

    check = mem.duplicate_check("User prefers concise bullet points over long paragraphs",
                                user_id="u1")
    assert isinstance(check, DuplicateCheck)
    assert check.is_duplicate and check.existing_id == res.id

    history = mem.history(res.id)
    assert [e.event for e in history] == ["create", "update"]
    assert all(isinstance(e, HistoryEvent) and isinstance(e.at, datetime) for e in history)
    assert history[1].changes["importance"] == {"before": 0.8, "after": 0.9}

    assert mem.delete(other.id) is None
    with pytest.raises(NotFound):
        mem.get(other.id)


def test_batch_conversation_and_session_search(mem: Client) -> None:
    results = mem.add_many([{"content": "Likes hiking", "user_id": "u2"},
                            {"content": "Dislikes crowds", "user_id": "u2"},
                            {"content": "Likes hiking", "user_id": "u2"}])
    assert [r.status for r in results] == [SaveStatus.SAVED, SaveStatus.SAVED,
                                           SaveStatus.DUPLICATE]
    assert results[2].existing_id == results[0].id and results[0].memory is None

    turns = mem.add_conversation("chat-1", [
        {"role": "user", "content": "I'm vegetarian, by the way."},
        {"role": "assistant", "content": "Noted, no meat in the recipes then."},
    ], user_id="u2")
    assert len(turns) == 2 and all(t.status is SaveStatus.SAVED for t in turns)
    sessions = mem.search_sessions("dietary restrictions", user_id="u2")
    assert sessions and isinstance(sessions[0], SessionHit)
    assert sessions[0].session_id == "chat-1" and sessions[0].hits
    assert mem.get(turns[0].id).session_id == "chat-1"


def test_export_then_import_into_another_tenant(live: Live, mem: Client) -> None:
    mem.add("Favourite colour is teal", user_id="u3")
    mem.add("Owns a border collie", user_id="u3")
    lines = list(mem.export())
    assert len(lines) == 2 and all(isinstance(line, dict) for line in lines)
    with live.client(live.key(f"copy{time.monotonic_ns()}")) as other:
        assert other.import_(lines) == {"imported": 2, "existing": 0, "duplicates": 0}
        assert other.list(user_id="u3").total == 2
        assert other.import_(lines)["existing"] == 2  # ids kept: nothing twice


# -- errors ---------------------------------------------------------------------------


def test_errors_map_to_the_engram_error_classes(live: Live, mem: Client) -> None:
    with Client(live.url, api_key="eng_live_" + "0" * 43) as bad, \
            pytest.raises(Unauthorized) as unauth:
        bad.list()
    assert isinstance(unauth.value, APIError)
    assert unauth.value.status_code == 401 and unauth.value.message == "invalid API key"
    assert unauth.value.request_id and unauth.value.request_id.startswith("req_")

    with pytest.raises(NotFound) as nf:
        mem.get(UNKNOWN_ID)
    assert isinstance(nf.value, APIError) and nf.value.status_code == 404
    assert UNKNOWN_ID in nf.value.message

    with pytest.raises(ValidationError) as bad_input:
        mem.add("Likes jazz", importance=5)
    assert bad_input.value.field == "importance"
    assert bad_input.value.message.startswith("importance")
    with pytest.raises(ValidationError) as unknown:
        mem.add("Likes jazz", colour="blue")
    assert unknown.value.field == "colour"
    with pytest.raises(ValidationError) as local:
        mem.list(colour="blue")  # refused before any request
    assert local.value.field == "colour"

    first = mem.add("Works as a nurse in Porto")
    second = mem.add("Plays the cello on weekends")
    with pytest.raises(Duplicate) as dup:
        mem.update(second.id, content="Works as a nurse in Porto")
    assert dup.value.existing_id == first.id and dup.value.field == "content"
    assert isinstance(dup.value, APIError) and dup.value.status_code == 409

    locked = mem.add("Signed the contract on 2024-03-01", immutable=True)
    with pytest.raises(Conflict) as conflict:
        mem.update(locked.id, importance=0.1)
    assert conflict.value.field == "immutable"

    reader = live.key(scopes=["memories:read"])
    with live.client(reader) as ro, pytest.raises(Forbidden) as forbidden:
        ro.add("Read-only keys cannot write")
    assert "memories:write" in forbidden.value.message

    small = live.key(f"small{time.monotonic_ns()}", memory_limit=1)
    with live.client(small) as c:
        c.add("The only memory allowed")
        with pytest.raises(QuotaExceeded):
            c.add("One too many")


# -- retries and idempotency ----------------------------------------------------------


class Recorder(httpx.BaseTransport):
    """Passes requests to the real server; can lose the first answer to a request."""

    def __init__(self, lose: str | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.lose = lose
        self.sent: list[tuple[httpx.Request, httpx.Response]] = []
        self.at: list[float] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        self.sent.append((request, response))
        self.at.append(time.monotonic())
        if self.lose is not None and request.url.path == self.lose:
            self.lose = None  # the server did the work; the client never hears of it
            raise httpx.ReadError("connection reset by peer", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_retry_after_a_lost_response_stores_once(live: Live, mem: Client) -> None:
    rec = Recorder(lose="/v1/memories")
    with Client(live.url, api_key=mem.api_key, transport=rec, backoff_factor=0.05) as c:
        res = c.add("Booked a flight to Kyoto for May", user_id="u4")
    assert len(rec.sent) == 2
    (req1, resp1), (req2, resp2) = rec.sent
    assert resp1.status_code == 201 and "idempotent-replayed" not in resp1.headers
    key = req1.headers["idempotency-key"]
    assert req2.headers["idempotency-key"] == key and len(key) == 36
    assert resp2.headers["idempotent-replayed"] == "true"
    # the first answer, replayed: saved (not "duplicate"), one memory, one history event
    assert res.status is SaveStatus.SAVED and res.id == resp1.json()["data"]["id"]
    assert mem.list(user_id="u4").total == 1
    assert len(mem.history(res.id)) == 1

    # each call has a key of its own
    with Client(live.url, api_key=mem.api_key, transport=(rec := Recorder())) as c:
        c.add("Has a season ticket for the opera", user_id="u4")
        c.add_many([{"content": "Runs 5 km every morning", "user_id": "u4"}])
    keys = [r.headers["idempotency-key"] for r, _ in rec.sent]
    assert len(set(keys)) == 2


def test_delete_whose_answer_was_lost_still_succeeds(live: Live, mem: Client) -> None:
    mid = mem.add("Temporary note").id
    rec = Recorder(lose=f"/v1/memories/{mid}")
    with Client(live.url, api_key=mem.api_key, transport=rec, backoff_factor=0.05) as c:
        c.delete(mid)  # the retry finds it gone: that is what was asked
    assert [r.status_code for _, r in rec.sent] == [200, 404]
    with pytest.raises(NotFound):
        mem.get(mid)


def test_rate_limited_request_waits_retry_after_then_succeeds(live: Live) -> None:
    key = live.key(rate_limit=60)  # a bucket of 60, refilled at one a second
    rec = Recorder()
    with Client(live.url, api_key=key, transport=rec) as c:
        with httpx.Client(base_url=live.url, headers={"X-API-Key": key}) as raw:
            for _ in range(200):  # drain the bucket
                if raw.get("/v1/memories", params={"limit": 1}).status_code == 429:
                    break
            else:
                pytest.fail("the rate limit never answered 429")
        start = time.monotonic()
        page = c.list(limit=1)
        waited = time.monotonic() - start
    assert isinstance(page, Page)
    statuses = [r.status_code for _, r in rec.sent]
    assert statuses[0] == 429 and statuses[-1] == 200
    retry_after = float(rec.sent[0][1].headers["retry-after"])
    assert retry_after == 1.0
    gap = rec.at[1] - rec.at[0]
    assert retry_after <= gap + 0.05 and gap < retry_after + 1.0, gap
    assert waited < 5


def test_rate_limit_beyond_the_retries_raises_rate_limited(live: Live) -> None:
    key = live.key(rate_limit=1)  # one request a minute: the second waits ~60 s
    with live.client(key, max_retries=3, max_retry_after=5) as c:
        c.list(limit=1)
        start = time.monotonic()
        with pytest.raises(RateLimited) as exc:
            c.list(limit=1)
    assert time.monotonic() - start < 2  # not worth waiting for: reported at once
    assert exc.value.retry_after >= 30
    assert isinstance(exc.value, APIError) and exc.value.status_code == 429


def test_5xx_and_connection_errors_are_retried_with_backoff() -> None:
    answers = iter([503, 502, 200])
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = next(answers)
        if status != 200:
            return httpx.Response(status, json={"error": {"code": "INTERNAL", "message": "x"},
                                                "meta": {"request_id": "req_1"}})
        return httpx.Response(200, json={"data": {"deleted": True, "id": UNKNOWN_ID},
                                         "meta": {"request_id": "req_2"}})

    with Client("http://engram.test", api_key="k", transport=httpx.MockTransport(handler),
                backoff_factor=0.01) as c:
        c.delete(UNKNOWN_ID)
    assert len(seen) == 3
    assert all(r.headers["authorization"] == "Bearer k" for r in seen)

    # out of retries: the last error is raised, with the server's message and request id
    with Client("http://engram.test", api_key="k", max_retries=1, backoff_factor=0.01,
                transport=httpx.MockTransport(lambda r: httpx.Response(
                    500, json={"error": {"code": "INTERNAL", "message": "boom"},
                               "meta": {"request_id": "req_9"}}))) as c, \
            pytest.raises(APIError) as err:
        c.get(UNKNOWN_ID)
    assert err.value.status_code == 500 and err.value.message == "boom"
    assert err.value.request_id == "req_9" and isinstance(err.value, EngramError)

    # nothing listening
    start = time.monotonic()
    with Client(f"http://127.0.0.1:{free_port()}", api_key="k", max_retries=2,
                backoff_factor=0.01) as c, pytest.raises(APIConnectionError):
        c.list()
    assert time.monotonic() - start < 3


# -- async ----------------------------------------------------------------------------


def test_async_client_flow(live: Live) -> None:
    key = live.key(f"async{time.monotonic_ns()}")

    async def main() -> None:
        async with AsyncClient(live.url, api_key=key) as c:
            res = await c.add("Speaks Portuguese and Japanese", user_id="ua")
            assert res.status is SaveStatus.SAVED and isinstance(res.memory, MemoryRecord)
            got = await c.get(res.id)
            assert got.content == "Speaks Portuguese and Japanese"
            updated = await c.update(res.id, importance=0.7)
            assert updated.importance == 0.7
            hits = await c.search("which languages does the user speak?", user_id="ua")
            assert hits[0].memory.id == res.id
            page = await c.list(user_id="ua")
            assert page.total == 1 and not page.has_more
            ctx = await c.context("languages", user_id="ua")
            assert "Japanese" in ctx.text
            assert len(await c.history(res.id)) == 2
            lines = [line async for line in c.export()]
            assert [line["id"] for line in lines] == [res.id]
            await c.delete(res.id)
            with pytest.raises(NotFound):
                await c.get(res.id)
            with pytest.raises(ValidationError) as err:
                await c.add("")
            assert err.value.field == "content"

    anyio.run(main)


# -- MemoryScope drop-in --------------------------------------------------------------


def test_memoryscope_client_create_memory(live: Live) -> None:
    key = live.key(f"ms{time.monotonic_ns()}")
    client = MemoryScopeClient(api_key=key, base_url=live.url)
    memory = client.create_memory(
        user_id="user123",
        scope="preferences",
        domain="food",
        source="explicit_user_input",
        ttl_days=30,
        value_json={"likes": ["pizza", "sushi"], "dislikes": ["broccoli"]},
    )
    assert memory.id
    assert memory.user_id == "user123" and memory.scope == "preferences"
    assert memory.domain == "food"
    assert isinstance(memory.created_at, datetime) and isinstance(memory.expires_at, datetime)
    ttl = memory.expires_at - memory.created_at
    assert timedelta(days=29) < ttl <= timedelta(days=30, seconds=1)

    forever = client.create_memory(user_id="user123", scope="constraints",
                                   source="system", value_json={"no": ["peanuts"]})
    assert forever.expires_at is None and forever.domain is None

    with pytest.raises(ValidationError) as bad:
        client.create_memory(user_id="user123", scope="hobbies", source="system",
                             value_json={"x": 1})
    assert bad.value.message.startswith("Field 'scope'")  # the server's `detail`
    assert bad.value.field == "scope"
    with pytest.raises(ValidationError, match=r"^Field 'user_id' is required$"):
        client.create_memory(user_id=None, scope="preferences",  # type: ignore[arg-type]
                             source="system", value_json={"a": 1})
    with MemoryScopeClient(api_key="wrong", base_url=live.url) as wrong, \
            pytest.raises(Unauthorized) as unauth:
        wrong.create_memory(user_id="u", scope="preferences", source="system",
                            value_json={"a": 1})
    assert unauth.value.message == "Invalid API key"
    client.close()


def test_memoryscope_client_sends_the_seed_request() -> None:
    """The wire request of the seed example, whatever the server: POST /memory with
    X-API-Key, and the answer read into .id / .expires_at; errors carry `detail`."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("x-api-key") != "your-api-key":
            return httpx.Response(401, json={"detail": "Invalid API key"})
        return httpx.Response(201, json={
            "id": "mem_abc123", "user_id": "user123", "scope": "preferences",
            "domain": "food", "created_at": "2026-01-27T10:15:23Z",
            "expires_at": "2026-02-26T10:15:23Z"})

    client = MemoryScopeClient(api_key="your-api-key", base_url="http://ms.test",
                               transport=httpx.MockTransport(handler))
    memory = client.create_memory(user_id="user123", scope="preferences", domain="food",
                                  source="explicit_user_input", ttl_days=30,
                                  value_json={"likes": ["pizza", "sushi"],
                                              "dislikes": ["broccoli"]})
    assert memory.id == "mem_abc123"
    assert memory.expires_at == datetime.fromisoformat("2026-02-26T10:15:23+00:00")
    req = seen[0]
    assert req.method == "POST" and req.url.path == "/memory"
    assert "authorization" not in req.headers
    assert json.loads(req.content) == {
        "user_id": "user123", "scope": "preferences", "domain": "food",
        "source": "explicit_user_input", "ttl_days": 30,
        "value_json": {"likes": ["pizza", "sushi"], "dislikes": ["broccoli"]}}
    wrong = MemoryScopeClient(api_key="nope", base_url="http://ms.test",
                              transport=httpx.MockTransport(handler))
    with pytest.raises(Unauthorized, match=r"^Invalid API key$"):
        wrong.create_memory(user_id="u", scope="preferences", value_json={})
