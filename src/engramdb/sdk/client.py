"""HTTP clients for the native Engram API (/v1): `Client` (blocking) and `AsyncClient`.

    >>> from engramdb import Client
    >>> with Client("http://127.0.0.1:8420", api_key="eng_live_…") as mem:
    ...     res = mem.add("User prefers dark mode", user_id="u1")
    ...     hits = mem.search("theme preference", user_id="u1")

Both mirror the in-process `engramdb.Engram` API and return the same typed values
(`MemoryRecord`, `SearchHit`, `Page`, `DuplicateCheck`, `SessionHit`, `Context`); a write
returns the SDK's `SaveResult`. Errors are the classes of `engramdb.errors`, carrying the
server's message, the field, the HTTP status and the request id (see `APIError`).

Requests that fail with 429, a 5xx or a connection error are retried up to `max_retries`
times with exponential backoff and jitter, waiting as long as the server's `Retry-After`
asks. Every POST carries an `Idempotency-Key` (a uuid4 per call, the same on each retry of
that call), so a write retried after a lost response is stored once.
"""

from __future__ import annotations

import builtins
import email.utils
import json
import os
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

import anyio
import httpx

from ..engine.service import Context, DuplicateCheck, SessionHit
from ..errors import (
    Conflict,
    Duplicate,
    EmbeddingMismatch,
    EngramError,
    Forbidden,
    NotFound,
    QuotaExceeded,
    RateLimited,
    StoreError,
    Unauthorized,
    ValidationError,
)
from ..models import (
    ContentType,
    MemoryNature,
    MemoryRecord,
    MemoryType,
    Page,
    SaveStatus,
    Scope,
    SearchHit,
    Status,
    Tier,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "APIConnectionError",
    "APIError",
    "AsyncClient",
    "Client",
    "HistoryEvent",
    "SaveResult",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8420"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: failures that prove the request never reached the server
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)

T = TypeVar("T")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("engramdb")
    except Exception:  # not installed (a source checkout)
        return "0"


USER_AGENT = f"engramdb-python/{_version()}"


# -- errors ---------------------------------------------------------------------------


class APIError(EngramError):
    """An error answered by (or on the way to) an Engram server. Every error the clients
    raise is one of these *and* the matching class of `engramdb.errors`, so
    `except NotFound` works as with the in-process API and `except APIError as e` gives
    `e.status_code` and `e.request_id` (quote it when reporting a problem)."""

    status_code: int | None = None
    request_id: str | None = None
    code = "ERROR"


class APIValidationError(ValidationError, APIError):
    pass


class APINotFound(NotFound, APIError):
    pass


class APIDuplicate(Duplicate, APIError):
    pass


class APIConflict(Conflict, APIError):
    pass


class APIQuotaExceeded(QuotaExceeded, APIError):
    pass


class APIForbidden(Forbidden, APIError):
    pass


class APIUnauthorized(Unauthorized, APIError):
    pass


class APIRateLimited(RateLimited, APIError):
    pass


class APIStoreError(StoreError, APIError):
    pass


class APIEmbeddingMismatch(EmbeddingMismatch, APIError):
    pass


class APIConnectionError(APIError):
    """The server could not be reached (or the connection broke) on every attempt."""

    code = "CONNECTION_ERROR"


_BY_CODE: dict[str, type[APIError]] = {
    "VALIDATION_ERROR": APIValidationError, "BAD_REQUEST": APIValidationError,
    "PAYLOAD_TOO_LARGE": APIValidationError, "NOT_FOUND": APINotFound,
    "CONFLICT": APIConflict, "QUOTA_EXCEEDED": APIQuotaExceeded, "FORBIDDEN": APIForbidden,
    "UNAUTHORIZED": APIUnauthorized, "STORE_ERROR": APIStoreError,
    "EMBEDDING_MISMATCH": APIEmbeddingMismatch,
}
_BY_STATUS: dict[int, type[APIError]] = {
    400: APIValidationError, 413: APIValidationError, 422: APIValidationError,
    401: APIUnauthorized, 402: APIQuotaExceeded, 403: APIForbidden, 404: APINotFound,
    409: APIConflict,
}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _existing_id(message: str) -> str:
    # servers before error.existing_id: the core says "content: memory <id> already says this"
    for word, nxt in zip(message.split(), message.split()[1:], strict=False):
        if word == "memory":
            return nxt
    return ""


def error_from_response(response: httpx.Response) -> APIError:
    """The `engramdb.errors` class for an error response of the native API."""
    status = response.status_code
    code = ""
    message = ""
    field_name: str | None = None
    existing: str | None = None
    request_id = response.headers.get("x-request-id")
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = str(err.get("code") or "")
            message = str(err.get("message") or "")
            raw_field = err.get("field")
            field_name = raw_field if isinstance(raw_field, str) else None
            if isinstance(err.get("existing_id"), str):
                existing = err["existing_id"]
        elif "detail" in body:  # a compat router's shape: {"detail": "Field 'x' is ..."}
            message = _detail_text(body["detail"])
            named = re.match(r"Field '([^']+)'", message)
            field_name = named.group(1) if named else None
        meta = body.get("meta")
        if isinstance(meta, dict) and isinstance(meta.get("request_id"), str):
            request_id = meta["request_id"]
    if not message:
        text = response.text.strip()
        message = text[:500] if text else f"HTTP {status} {response.reason_phrase}".strip()
    exc: APIError
    if status == 429 or code == "RATE_LIMITED":
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        exc = APIRateLimited(message, retry_after=retry_after if retry_after is not None else 0)
    elif code == "DUPLICATE" or (status == 409 and "already says this" in message):
        exc = APIDuplicate(message, existing_id=existing or _existing_id(message),
                           field=field_name)
    else:
        cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or APIError
        exc = cls(message, field=field_name)
    exc.status_code = status
    exc.request_id = request_id
    if code:
        exc.code = code
    return exc


def _detail_text(detail: Any) -> str:
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):  # FastAPI's default validation detail
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return json.dumps(detail)


# -- typed results --------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class SaveResult:
    """What a write did: `status` saved, duplicate, updated or extended. `id` is the stored
    memory, or the existing one for a duplicate. `memory` is the record for `add()`; the
    batch and conversation endpoints answer without it (None)."""

    status: SaveStatus | str
    id: str
    existing_id: str | None = None
    similarity: float | None = None
    tokens_used: int = 0
    memory: MemoryRecord | None = None
    related_id: str | None = None
    reason: str | None = None

    @property
    def duplicate(self) -> bool:
        return self.status == SaveStatus.DUPLICATE


@dataclass(slots=True, frozen=True)
class HistoryEvent:
    """One change of a memory: create, update, delete, supersede, access_tier, expire."""

    id: str
    memory_id: str
    event: str
    at: datetime
    actor: str | None
    changes: dict[str, Any] = field(default_factory=dict)


def parse_time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _enum(cls: type[Enum], value: Any) -> Any:
    if value is None:
        return None
    try:
        return cls(value)
    except ValueError:  # a newer server's value: keep the string
        return value


_MEMORY_FIELDS = frozenset(f.name for f in fields(MemoryRecord))
_TIMES = ("created_at", "updated_at", "last_accessed_at", "expires_at")
_ENUMS: dict[str, type[Enum]] = {
    "scope": Scope, "content_type": ContentType, "memory_type": MemoryType,
    "memory_nature": MemoryNature, "tier": Tier, "status": Status,
}


def memory_from(data: Mapping[str, Any]) -> MemoryRecord:
    """A `MemoryRecord` from the JSON of a memory (unknown keys are ignored)."""
    kw = {k: v for k, v in data.items() if k in _MEMORY_FIELDS}
    for name in _TIMES:
        if name in kw:
            kw[name] = parse_time(kw[name])
    for name, cls in _ENUMS.items():
        if name in kw:
            kw[name] = _enum(cls, kw[name])
    for name, empty in (("metadata", dict), ("tags", list), ("pii_fields", list)):
        if kw.get(name) is None and name in kw:
            kw[name] = empty()
    return MemoryRecord(**kw)


def save_from(data: Mapping[str, Any]) -> SaveResult:
    mem = data.get("memory")
    return SaveResult(
        status=_enum(SaveStatus, data["status"]), id=data["id"],
        existing_id=data.get("existing_id"), similarity=data.get("similarity"),
        tokens_used=int(data.get("tokens_used") or 0),
        memory=memory_from(mem) if isinstance(mem, Mapping) else None,
        related_id=data.get("related_id"), reason=data.get("reason"),
    )


def hit_from(data: Mapping[str, Any]) -> SearchHit:
    return SearchHit(memory_from(data["memory"]), float(data["score"]),
                     {k: float(v) for k, v in (data.get("explain") or {}).items()})


def event_from(data: Mapping[str, Any]) -> HistoryEvent:
    at = parse_time(data["at"])
    assert at is not None
    return HistoryEvent(id=data["id"], memory_id=data["memory_id"], event=data["event"],
                        at=at, actor=data.get("actor"), changes=data.get("changes") or {})


# -- requests -------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return value


def _item(data: Any, where: str) -> dict[str, Any]:
    """A memory to send: a mapping, or a dataclass such as `engramdb.NewMemory`."""
    if is_dataclass(data) and not isinstance(data, type):
        return {k: _jsonable(v) for k, v in asdict(data).items() if v is not None}
    if not isinstance(data, Mapping):
        raise ValidationError(f"{where or 'memory'}: must be an object", field=where or None)
    return {k: _jsonable(v) for k, v in data.items() if v is not None}


@dataclass(slots=True)
class Call:
    """One API call: what to send and how to read the answer."""

    method: str
    path: str
    parse: Callable[[dict[str, Any]], Any]
    json: Any = None
    params: dict[str, Any] | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: DELETE: a 404 after an attempt whose answer was lost means it is gone
    gone_ok: bool = False


# list(): the query parameters of GET /v1/memories; the plural forms of the in-process API
# (memory_types=[...], tags=[...]) are accepted with one value.
_LIST_PARAMS = frozenset({
    "user_id", "agent_id", "session_id", "namespace", "memory_type", "content_type", "tier",
    "memory_nature", "tag", "created_after", "created_before",
})
_LIST_PLURALS = {"memory_types": "memory_type", "content_types": "content_type",
                 "tiers": "tier", "tags": "tag"}


def _list_params(filters: Mapping[str, Any], limit: int, offset: int) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    for name, value in filters.items():
        if value is None:
            continue
        if name in _LIST_PLURALS:
            values = [value] if isinstance(value, str) else list(value)
            if len(values) > 1:
                raise ValidationError(
                    f"{name}: the HTTP list endpoint filters on one value "
                    f"(use search() for several)", field=name)
            if not values:
                continue
            name, value = _LIST_PLURALS[name], values[0]
        if name not in _LIST_PARAMS:
            raise ValidationError(f"{name}: unknown list filter", field=name)
        params[name] = _jsonable(value)
    return params


class _Calls:
    """The calls of the native API, shared by `Client` and `AsyncClient`."""

    @staticmethod
    def add(content: str | None, fields: Mapping[str, Any]) -> Call:
        body = _item({"content": content, **fields}, "")
        return Call("POST", "/v1/memories", lambda b: save_from(b["data"]), json=body)

    @staticmethod
    def add_many(items: Iterable[Any]) -> Call:
        batch = [_item(it, f"items[{n}]") for n, it in enumerate(items)]
        return Call("POST", "/v1/memories/batch",
                    lambda b: [save_from(r) for r in b["data"]], json={"items": batch})

    @staticmethod
    def add_conversation(session_id: str, messages: Iterable[Mapping[str, Any]],
                         fields: Mapping[str, Any]) -> Call:
        body = {"session_id": session_id, "messages": [_item(m, f"messages[{n}]")
                                                       for n, m in enumerate(messages)],
                **_item(fields, "")}
        return Call("POST", "/v1/conversations",
                    lambda b: [save_from(r) for r in b["data"]], json=body)

    @staticmethod
    def get(memory_id: str) -> Call:
        return Call("GET", f"/v1/memories/{_seg(memory_id)}", lambda b: memory_from(b["data"]))

    @staticmethod
    def update(memory_id: str, changes: Mapping[str, Any]) -> Call:
        # None is a value here (e.g. expires_at=None clears it): sent as given
        body = {k: _jsonable(v) for k, v in changes.items()}
        return Call("PATCH", f"/v1/memories/{_seg(memory_id)}",
                    lambda b: memory_from(b["data"]), json=body)

    @staticmethod
    def delete(memory_id: str) -> Call:
        return Call("DELETE", f"/v1/memories/{_seg(memory_id)}", lambda b: None, gone_ok=True)

    @staticmethod
    def list(limit: int, offset: int, filters: Mapping[str, Any]) -> Call:
        def parse(b: dict[str, Any]) -> Page:
            meta = b.get("meta") or {}
            return Page([memory_from(m) for m in b["data"]], int(meta.get("total", 0)),
                        int(meta.get("limit", limit)), int(meta.get("offset", offset)))

        return Call("GET", "/v1/memories", parse, params=_list_params(filters, limit, offset))

    @staticmethod
    def search(query: str, limit: int, filters: Mapping[str, Any]) -> Call:
        body = {"query": query, "limit": limit, **_item(filters, "")}
        return Call("POST", "/v1/search", lambda b: [hit_from(h) for h in b["data"]],
                    json=body)

    @staticmethod
    def search_sessions(query: str, limit: int, hits_per_session: int,
                        filters: Mapping[str, Any]) -> Call:
        body = {"query": query, "limit": limit, "hits_per_session": hits_per_session,
                **_item(filters, "")}

        def parse(b: dict[str, Any]) -> builtins.list[SessionHit]:
            return [SessionHit(s["session_id"], float(s["score"]),
                               [hit_from(h) for h in s["hits"]]) for s in b["data"]]

        return Call("POST", "/v1/search/sessions", parse, json=body)

    @staticmethod
    def context(query: str, budget_tokens: int, limit: int, filters: Mapping[str, Any]) -> Call:
        body = {"query": query, "budget_tokens": budget_tokens, "limit": limit,
                **_item(filters, "")}

        def parse(b: dict[str, Any]) -> Context:
            d = b["data"]
            return Context(d["context"], [hit_from(h) for h in d["memories"]],
                           int(d["tokens"]), int(d["budget_tokens"]))

        return Call("POST", "/v1/context", parse, json=body)

    @staticmethod
    def duplicate_check(content: str, fields: Mapping[str, Any]) -> Call:
        def parse(b: dict[str, Any]) -> DuplicateCheck:
            d = b["data"]
            return DuplicateCheck(bool(d["is_duplicate"]), float(d["similarity"]),
                                  d.get("existing_id"), d.get("existing_content"))

        return Call("POST", "/v1/memories/duplicate-check", parse,
                    json={"content": content, **_item(fields, "")})

    @staticmethod
    def history(memory_id: str) -> Call:
        return Call("GET", f"/v1/memories/{_seg(memory_id)}/history",
                    lambda b: [event_from(e) for e in b["data"]])

    @staticmethod
    def import_(lines: Iterable[Mapping[str, Any] | str | bytes]) -> Call:
        out = []
        for line in lines:
            if isinstance(line, bytes):
                line = line.decode("utf-8")
            if isinstance(line, str):
                line = line.strip()
                if line:
                    out.append(line)
            else:
                out.append(json.dumps(_jsonable(line), ensure_ascii=False))
        raw = ("\n".join(out) + "\n").encode("utf-8") if out else b""
        return Call("POST", "/v1/import", lambda b: {k: int(v) for k, v in b["data"].items()},
                    content=raw, headers={"Content-Type": "application/x-ndjson"})


def _seg(memory_id: str) -> str:
    from urllib.parse import quote

    if not isinstance(memory_id, str) or not memory_id:
        raise ValidationError("memory_id: must be a non-empty string", field="memory_id")
    return quote(memory_id, safe="")


# -- the shared engine of both clients ------------------------------------------------


class _Base:
    def __init__(self, base_url: str | None, api_key: str | None, *, timeout: float,
                 max_retries: int, backoff_factor: float, max_backoff: float,
                 max_retry_after: float, headers: Mapping[str, str] | None,
                 auth_header: str = "authorization") -> None:
        if max_retries < 0:
            raise ValueError("max_retries: must be >= 0")
        url = (base_url or os.environ.get("ENGRAM_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if url.endswith("/v1"):
            url = url[:-3]
        self.base_url = url
        self.api_key = api_key if api_key is not None else os.environ.get("ENGRAM_API_KEY")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_factor = backoff_factor
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.api_key:
            if auth_header == "authorization":
                self._headers["Authorization"] = f"Bearer {self.api_key}"
            else:
                self._headers[auth_header] = self.api_key
        self._headers.update(headers or {})

    def _prepare(self, call: Call) -> dict[str, str]:
        headers = dict(call.headers)
        if call.method == "POST" and not any(k.lower() == "idempotency-key" for k in headers):
            headers["Idempotency-Key"] = str(uuid.uuid4())  # one per call, kept on retries
        return headers

    def _delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds before retry number `attempt + 1`, or None: do not retry."""
        if attempt >= self.max_retries:
            return None
        if response is not None:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is not None:
                if retry_after > self.max_retry_after:
                    return None  # longer than we are willing to wait: report it
                return retry_after + random.uniform(0, min(0.1 * retry_after, 1.0))
        cap = min(self.max_backoff, self.backoff_factor * (2 ** attempt))
        return random.uniform(cap / 2, cap)  # "equal jitter"

    @staticmethod
    def _retryable(exc: httpx.HTTPError) -> bool:
        return isinstance(exc, httpx.TimeoutException | httpx.NetworkError
                          | httpx.RemoteProtocolError)

    @staticmethod
    def _finish(call: Call, response: httpx.Response, uncertain: bool) -> Any:
        if response.status_code >= 400:
            if call.gone_ok and uncertain and response.status_code == 404:
                return call.parse({})  # the lost attempt did it
            raise error_from_response(response)
        try:
            body = response.json()
        except ValueError:
            raise APIError(f"the server answered {response.status_code} with a body that is "
                           "not JSON") from None
        return call.parse(body)

    @staticmethod
    def _connection_error(call: Call, exc: httpx.HTTPError) -> APIConnectionError:
        return APIConnectionError(f"{call.method} {call.path}: {type(exc).__name__}: {exc}")


class Client(_Base):
    """A blocking client of the native API. Thread-safe (one connection pool)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 30.0, max_retries: int = 3, backoff_factor: float = 0.5,
                 max_backoff: float = 8.0, max_retry_after: float = 60.0,
                 headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout=timeout, max_retries=max_retries,
                         backoff_factor=backoff_factor, max_backoff=max_backoff,
                         max_retry_after=max_retry_after, headers=headers)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers,
                                  timeout=timeout, transport=transport)

    # -- plumbing ----------------------------------------------------------------------

    def _send(self, call: Call) -> Any:
        headers = self._prepare(call)
        uncertain = False  # an earlier attempt may have reached the server
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, json=call.json,
                                              params=call.params, content=call.content,
                                              headers=headers)
            except httpx.HTTPError as exc:
                if not self._retryable(exc):
                    raise self._connection_error(call, exc) from exc
                delay = self._delay(attempt, None)
                if delay is None:
                    raise self._connection_error(call, exc) from exc
                uncertain = uncertain or not isinstance(exc, _NOT_SENT)
            else:
                delay = (self._delay(attempt, response)
                         if response.status_code in RETRY_STATUSES else None)
                if delay is None:
                    return self._finish(call, response, uncertain)
                response.close()
                uncertain = uncertain or response.status_code >= 500
            time.sleep(delay)
            attempt += 1

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- memories ----------------------------------------------------------------------

    def add(self, content: str | None = None, **fields: Any) -> SaveResult:
        """Store a memory; status saved, duplicate (with `existing_id`), updated or extended."""
        result: SaveResult = self._send(_Calls.add(content, fields))
        return result

    def add_many(self, items: Iterable[Mapping[str, Any] | Any]) -> builtins.list[SaveResult]:
        """Store up to 1,000 memories in one request; one result per item, in order."""
        result: builtins.list[SaveResult] = self._send(_Calls.add_many(items))
        return result

    def add_conversation(self, session_id: str, messages: Iterable[Mapping[str, Any]],
                         **fields: Any) -> builtins.list[SaveResult]:
        """Store a transcript ({role, content, created_at?} messages) as turn memories."""
        result: builtins.list[SaveResult] = self._send(
            _Calls.add_conversation(session_id, messages, fields))
        return result

    def get(self, memory_id: str) -> MemoryRecord:
        result: MemoryRecord = self._send(_Calls.get(memory_id))
        return result

    def update(self, memory_id: str, **changes: Any) -> MemoryRecord:
        result: MemoryRecord = self._send(_Calls.update(memory_id, changes))
        return result

    def delete(self, memory_id: str) -> None:
        self._send(_Calls.delete(memory_id))

    def list(self, *, limit: int = 50, offset: int = 0, **filters: Any) -> Page:
        """Memories, newest first; `Page.items`, `.total`, `.has_more`."""
        result: Page = self._send(_Calls.list(limit, offset, filters))
        return result

    def search(self, query: str, *, limit: int = 10, **filters: Any) -> builtins.list[SearchHit]:
        """Hybrid search; each hit has `.memory`, `.score` and the `.explain` breakdown."""
        result: builtins.list[SearchHit] = self._send(_Calls.search(query, limit, filters))
        return result

    def search_sessions(self, query: str, *, limit: int = 10, hits_per_session: int = 3,
                        **filters: Any) -> builtins.list[SessionHit]:
        result: builtins.list[SessionHit] = self._send(
            _Calls.search_sessions(query, limit, hits_per_session, filters))
        return result

    def context(self, query: str, *, budget_tokens: int = 1000, limit: int = 10,
                **filters: Any) -> Context:
        """The best memories for `query` as a prompt-ready block within the token budget."""
        result: Context = self._send(_Calls.context(query, budget_tokens, limit, filters))
        return result

    def duplicate_check(self, content: str, **fields: Any) -> DuplicateCheck:
        result: DuplicateCheck = self._send(_Calls.duplicate_check(content, fields))
        return result

    def history(self, memory_id: str) -> builtins.list[HistoryEvent]:
        result: builtins.list[HistoryEvent] = self._send(_Calls.history(memory_id))
        return result

    # -- export / import ---------------------------------------------------------------

    def export(self) -> Iterator[dict[str, Any]]:
        """The tenant's memories with their vectors, one dict per memory (streamed)."""
        call = Call("GET", "/v1/export", lambda b: None)
        attempt = 0
        started = False  # once lines were handed out, a broken stream is not retried
        while True:
            try:
                with self._http.stream("GET", call.path) as response:
                    if response.status_code < 400:
                        for line in response.iter_lines():
                            if line.strip():
                                started = True
                                yield json.loads(line)
                        return
                    response.read()
                    delay = (self._delay(attempt, response)
                             if response.status_code in RETRY_STATUSES else None)
                    if delay is None:
                        raise error_from_response(response)
            except httpx.HTTPError as exc:
                retry = self._retryable(exc) and not started
                delay = self._delay(attempt, None) if retry else None
                if delay is None:
                    raise self._connection_error(call, exc) from exc
            time.sleep(delay)
            attempt += 1

    def import_(self, lines: Iterable[Mapping[str, Any] | str | bytes]) -> dict[str, int]:
        """Import export lines (dicts or JSON strings); returns counts imported, existing
        and duplicates."""
        result: dict[str, int] = self._send(_Calls.import_(lines))
        return result


class AsyncClient(_Base):
    """The asyncio (anyio) twin of `Client`: the same methods, awaited."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 30.0, max_retries: int = 3, backoff_factor: float = 0.5,
                 max_backoff: float = 8.0, max_retry_after: float = 60.0,
                 headers: Mapping[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout=timeout, max_retries=max_retries,
                         backoff_factor=backoff_factor, max_backoff=max_backoff,
                         max_retry_after=max_retry_after, headers=headers)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers,
                                       timeout=timeout, transport=transport)

    async def _send(self, call: Call) -> Any:
        headers = self._prepare(call)
        uncertain = False
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, json=call.json,
                                                    params=call.params, content=call.content,
                                                    headers=headers)
            except httpx.HTTPError as exc:
                if not self._retryable(exc):
                    raise self._connection_error(call, exc) from exc
                delay = self._delay(attempt, None)
                if delay is None:
                    raise self._connection_error(call, exc) from exc
                uncertain = uncertain or not isinstance(exc, _NOT_SENT)
            else:
                delay = (self._delay(attempt, response)
                         if response.status_code in RETRY_STATUSES else None)
                if delay is None:
                    return self._finish(call, response, uncertain)
                await response.aclose()
                uncertain = uncertain or response.status_code >= 500
            await anyio.sleep(delay)
            attempt += 1

    async def aclose(self) -> None:
        await self._http.aclose()

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def add(self, content: str | None = None, **fields: Any) -> SaveResult:
        result: SaveResult = await self._send(_Calls.add(content, fields))
        return result

    async def add_many(self, items: Iterable[Mapping[str, Any] | Any]
                       ) -> builtins.list[SaveResult]:
        result: builtins.list[SaveResult] = await self._send(_Calls.add_many(items))
        return result

    async def add_conversation(self, session_id: str, messages: Iterable[Mapping[str, Any]],
                               **fields: Any) -> builtins.list[SaveResult]:
        result: builtins.list[SaveResult] = await self._send(
            _Calls.add_conversation(session_id, messages, fields))
        return result

    async def get(self, memory_id: str) -> MemoryRecord:
        result: MemoryRecord = await self._send(_Calls.get(memory_id))
        return result

    async def update(self, memory_id: str, **changes: Any) -> MemoryRecord:
        result: MemoryRecord = await self._send(_Calls.update(memory_id, changes))
        return result

    async def delete(self, memory_id: str) -> None:
        await self._send(_Calls.delete(memory_id))

    async def list(self, *, limit: int = 50, offset: int = 0, **filters: Any) -> Page:
        result: Page = await self._send(_Calls.list(limit, offset, filters))
        return result

    async def search(self, query: str, *, limit: int = 10,
                     **filters: Any) -> builtins.list[SearchHit]:
        result: builtins.list[SearchHit] = await self._send(
            _Calls.search(query, limit, filters))
        return result

    async def search_sessions(self, query: str, *, limit: int = 10, hits_per_session: int = 3,
                              **filters: Any) -> builtins.list[SessionHit]:
        result: builtins.list[SessionHit] = await self._send(
            _Calls.search_sessions(query, limit, hits_per_session, filters))
        return result

    async def context(self, query: str, *, budget_tokens: int = 1000, limit: int = 10,
                      **filters: Any) -> Context:
        result: Context = await self._send(_Calls.context(query, budget_tokens, limit, filters))
        return result

    async def duplicate_check(self, content: str, **fields: Any) -> DuplicateCheck:
        result: DuplicateCheck = await self._send(_Calls.duplicate_check(content, fields))
        return result

    async def history(self, memory_id: str) -> builtins.list[HistoryEvent]:
        result: builtins.list[HistoryEvent] = await self._send(_Calls.history(memory_id))
        return result

    async def export(self) -> AsyncIterator[dict[str, Any]]:
        call = Call("GET", "/v1/export", lambda b: None)
        attempt = 0
        started = False
        while True:
            try:
                async with self._http.stream("GET", call.path) as response:
                    if response.status_code < 400:
                        async for line in response.aiter_lines():
                            if line.strip():
                                started = True
                                yield json.loads(line)
                        return
                    await response.aread()
                    delay = (self._delay(attempt, response)
                             if response.status_code in RETRY_STATUSES else None)
                    if delay is None:
                        raise error_from_response(response)
            except httpx.HTTPError as exc:
                retry = self._retryable(exc) and not started
                delay = self._delay(attempt, None) if retry else None
                if delay is None:
                    raise self._connection_error(call, exc) from exc
            await anyio.sleep(delay)
            attempt += 1

    async def import_(self, lines: Iterable[Mapping[str, Any] | str | bytes]) -> dict[str, int]:
        result: dict[str, int] = await self._send(_Calls.import_(lines))
        return result
