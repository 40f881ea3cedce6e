"""The Engram HTTP server: a FastAPI app over the core. Routers translate; rules stay in the
core. `create_app()` builds it; `engram serve` runs it under uvicorn."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..clock import Clock
from ..embeddings.base import Embedder
from ..engine.admin import AdminService
from ..engine.service import MemoryService
from ..errors import (
    Conflict,
    Duplicate,
    EngramError,
    Forbidden,
    NotFound,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
    ValidationError,
)
from ..settings import Settings
from ..storage.base import Store
from . import metrics

log = logging.getLogger("engram.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATUS = {
    ValidationError: 422, NotFound: 404, Duplicate: 409, Conflict: 409, QuotaExceeded: 402,
    Forbidden: 403, Unauthorized: 401, RateLimited: 429,
}


def status_of(exc: EngramError) -> int:
    for cls, code in STATUS.items():
        if isinstance(exc, cls):
            return code
    return 500


@dataclass
class Engine:
    """What the routers use: the core services, built once per process."""

    settings: Settings
    service: MemoryService
    admin: AdminService

    @property
    def store(self) -> Store:
        return self.service.store

    @property
    def embedder(self) -> Embedder:
        return self.service.embedder


def build_engine(settings: Settings, *, store: Store | None = None,
                 embedder: Embedder | None = None, clock: Clock | None = None) -> Engine:
    from ..api import open_store

    if store is None:
        store = open_store(settings.resolved_database_url())
    if embedder is None:
        from ..embeddings import load_default_embedder

        embedder = load_default_embedder(settings)
    service = MemoryService(store, embedder, settings, clock)
    admin = AdminService(store, clock, default_rate_limit=settings.rate_limit_per_minute)
    return Engine(settings, service, admin)


class ExpirySweeper:
    """Deletes expired memories physically every `interval` seconds. Correctness does not
    depend on it (expired memories are invisible at once); it reclaims space."""

    def __init__(self, service: MemoryService, interval: float) -> None:
        import threading

        self.service = service
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engram-expiry", daemon=True)

    def start(self) -> None:
        if self.interval > 0:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                n = self.service.purge_expired()
                if n:
                    log.info("purged %d expired memories", n)
            except Exception:
                log.exception("expiry sweep failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


class RequestContext:
    """Pure ASGI middleware: request id (echoing a sane client X-Request-ID), start time,
    the body-size limit (413 before anything parses the body) and request metrics."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1").strip()
        rid = given if 0 < len(given) <= 128 and given.isprintable() else new_request_id()
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        state["start"] = start
        status_holder = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                hdrs = list(message.get("headers") or [])
                hdrs.append((b"x-request-id", rid.encode("latin-1")))
                message["headers"] = hdrs
            await send(message)

        length = headers.get(b"content-length")
        too_big = False
        if length is not None:
            try:
                too_big = int(length) > self.max_body
            except ValueError:
                too_big = True
        if too_big:
            await _send_json(send_wrapper, 413, _error_body(
                "PAYLOAD_TOO_LARGE",
                f"request body exceeds the limit of {self.max_body} bytes", None, rid))
            metrics.observe(scope, 413, time.perf_counter() - start)
            return

        seen = 0
        exceeded = False  # a body without Content-Length grew past the limit
        started = False
        answered = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def too_large() -> None:
            nonlocal answered
            if answered or started:
                return
            answered = True
            await _send_json(send_wrapper, 413, _error_body(
                "PAYLOAD_TOO_LARGE",
                f"request body exceeds the limit of {self.max_body} bytes", None, rid))

        async def guarded_send(message: Message) -> None:
            nonlocal started
            # FastAPI turns any error while reading a JSON body into its own 400 ("error
            # parsing the body"): once the limit was hit, answer 413 instead of whatever
            # the app makes of the interrupted body.
            if exceeded:
                await too_large()
                return
            if message["type"] == "http.response.start":
                started = True
            await send_wrapper(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            await too_large()
        finally:
            metrics.observe(scope, status_holder[0], time.perf_counter() - start)


class _BodyTooLarge(Exception):
    pass


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    import json

    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})


def _error_body(code: str, message: str, field: str | None, rid: str) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if field:
        err["field"] = field
    return {"error": err, "meta": {"request_id": rid}}


def request_id(request: Request) -> str:
    rid = request.scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else new_request_id()


def meta(request: Request, **extra: Any) -> dict[str, Any]:
    start = request.scope.get("state", {}).get("start", time.perf_counter())
    return {"request_id": request_id(request),
            "latency_ms": round((time.perf_counter() - start) * 1000, 2), **extra}


# Compat routers (mounted elsewhere) register their own error renderers by path prefix, so each
# API answers errors in its own wire format; the native format is the default.
ErrorRenderer = Callable[[Request, int, str, str, "str | None"], Response]
_renderers: list[tuple[str, ErrorRenderer]] = []


def register_error_renderer(prefix: str, renderer: ErrorRenderer) -> None:
    _renderers.append((prefix, renderer))
    _renderers.sort(key=lambda r: -len(r[0]))


def render_error(request: Request, status: int, code: str, message: str,
                 field: str | None = None, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None) -> Response:
    path = request.url.path
    for prefix, renderer in _renderers:
        # a whole path segment: "/memory" is not a prefix of "/memories"
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            resp = renderer(request, status, code, message, field)
            break
    else:
        body = _error_body(code, message, field, request_id(request))
        body["error"].update(extra or {})
        resp = JSONResponse(body, status_code=status)
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(EngramError)
    async def engram_error(request: Request, exc: EngramError) -> Response:
        status = status_of(exc)
        headers = {}
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
        if status == 500:
            log.error("internal error: %s", exc)
        extra = {"existing_id": exc.existing_id} if isinstance(exc, Duplicate) else None
        return render_error(request, status, exc.code, exc.message, exc.field, headers, extra)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = list(first.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
            loc = loc[1:]  # where it was, not a field (a body field may be named "query")
        # items[1].content, as the core names fields of batch items
        joined = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
        field = joined.lstrip(".") or None
        kind = str(first.get("type", ""))
        msg = str(first.get("msg", "invalid request"))
        if kind == "json_invalid":
            return render_error(request, 400, "BAD_REQUEST",
                                f"request body is not valid JSON: {msg}", None)
        if kind == "model_attributes_type" and not loc:
            return render_error(request, 400, "BAD_REQUEST",
                                "request body must be a JSON object "
                                "(Content-Type: application/json)", None)
        if kind == "missing":
            msg = "is required" if field else "request body is required"
        elif kind == "extra_forbidden":
            msg = "unknown field"
        return render_error(request, 422, "VALIDATION_ERROR",
                            f"{field}: {msg}" if field else msg, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 400: "BAD_REQUEST"}
        return render_error(request, exc.status_code, codes.get(exc.status_code, "ERROR"),
                            str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return render_error(request, 500, "INTERNAL", "internal server error")


DESCRIPTION = """
Engram: long-term memory for AI agents. Every request needs an API key
(`Authorization: Bearer eng_live_…` or `X-API-Key: eng_live_…`); keys belong to one tenant and
carry scopes (`memories:read`, `memories:write`, `admin`).

Errors always look like `{"error": {"code", "message", "field"?}, "meta": {"request_id"}}`.
POST requests accept an `Idempotency-Key` header: a retry with the same key and body returns
the first response and stores nothing twice.
"""


def create_app(settings: Settings | None = None, *, engine: Engine | None = None,
               print_bootstrap_key: bool = True) -> FastAPI:
    settings = settings or (engine.settings if engine else Settings())
    holder: dict[str, Engine] = {}
    if engine is not None:
        holder["engine"] = engine

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        if "engine" not in holder:
            holder["engine"] = build_engine(settings)
        eng = holder["engine"]
        app.state.engine = eng
        created = eng.admin.bootstrap()
        if created is not None and print_bootstrap_key:
            print(
                "\nEngram created tenant 'default' and an admin API key. It is shown only "
                f"this once; store it now:\n\n    {created.key}\n", flush=True,
            )
        metrics.bind(eng)
        sweeper = ExpirySweeper(eng.service, settings.purge_interval_minutes * 60)
        sweeper.start()
        yield
        sweeper.stop()
        if engine is None:  # built here, closed here
            eng.service.close()
            eng.store.close()
            eng.embedder.close()
        else:
            eng.service.access.flush()

    app = FastAPI(title="Engram", version="0.1.0", description=DESCRIPTION,
                  lifespan=lifespan)
    if engine is not None:
        app.state.engine = engine
    install_error_handlers(app)

    from .compat import include_compat
    from .routes_v1 import router as v1_router
    from .routes_v1 import system_router

    app.include_router(system_router)
    app.include_router(v1_router)
    include_compat(app)
    app.add_middleware(RequestContext, max_body=settings.max_body_bytes)
    return app
