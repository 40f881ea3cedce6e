"""What every router needs: the engine, the caller, idempotent replays, envelopes."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..engine.admin import Principal
from ..errors import ValidationError
from ..models import IdempotentResponse, KeyScope

if TYPE_CHECKING:
    from .app import Engine


def engine_of(request: Request) -> Engine:
    eng: Engine = request.app.state.engine
    return eng


def presented_key(request: Request, *extra_headers: str) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() in ("bearer", "token") and token.strip():
            return token.strip()
    for name in ("x-api-key", *extra_headers):
        value = request.headers.get(name)
        if value:
            return value.strip()
    return None


async def authorize(request: Request, scope: KeyScope, *extra_headers: str) -> Principal:
    """Authenticate the caller, check the scope and the rate limit.

    Async, so that a request does not take a thread-pool hop for its key on top of the
    one its (sync) endpoint takes: a key seen in the last seconds is checked on the event
    loop from the cache; only a store lookup goes to the thread pool."""
    admin = engine_of(request).admin
    presented = presented_key(request, *extra_headers)
    principal = admin.cached_principal(presented)
    if principal is None:
        principal = await run_in_threadpool(admin.authenticate, presented)
    principal.require(scope)
    admin.throttle(principal)
    request.state.principal = principal
    return principal


async def reader(request: Request) -> Principal:
    return await authorize(request, KeyScope.READ)


async def writer(request: Request) -> Principal:
    return await authorize(request, KeyScope.WRITE)


async def administrator(request: Request) -> Principal:
    return await authorize(request, KeyScope.ADMIN)


_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()
_puts = 0


def _lock_for(tenant_id: str, key: str) -> threading.Lock:
    with _locks_guard:
        lock = _locks.get((tenant_id, key))
        if lock is None:
            if len(_locks) > 10_000:
                _locks.clear()  # only ever contended by a client's own concurrent retries
            lock = _locks[(tenant_id, key)] = threading.Lock()
        return lock


def idempotent(request: Request, principal: Principal, payload: Any,
               run: Callable[[], Response]) -> Response:
    """Run a POST once per Idempotency-Key: a retry with the same key and the same request
    gets the first response back (marked `Idempotent-Replayed: true`) and changes nothing."""
    global _puts
    key = request.headers.get("idempotency-key")
    if key is None:
        return run()
    key = key.strip()
    if not key or len(key) > 255:
        raise ValidationError("Idempotency-Key: must be 1..255 characters",
                              field="Idempotency-Key")
    eng = engine_of(request)
    tenant_id = principal.tenant.id
    digest = hashlib.sha256(
        json.dumps([request.method, request.url.path, str(request.url.query), payload],
                   sort_keys=True, default=str).encode()
    ).hexdigest()
    with _lock_for(tenant_id, key):
        prev = eng.store.get_idempotent(tenant_id, key)
        if prev is not None:
            if prev.request_hash != digest:
                raise ValidationError(
                    "Idempotency-Key: already used with a different request",
                    field="Idempotency-Key")
            return Response(prev.body, status_code=prev.status_code,
                            media_type="application/json",
                            headers={"Idempotent-Replayed": "true"})
        response = run()
        if response.status_code < 500:
            now = eng.service.clock.now()
            eng.store.put_idempotent(IdempotentResponse(
                tenant_id, key, digest, response.status_code, bytes(response.body), now))
            _puts += 1
            if _puts % 1000 == 0:
                eng.store.purge_idempotent(
                    now - timedelta(hours=eng.settings.idempotency_hours))
        return response


def envelope(data: Any, meta: dict[str, Any], status_code: int = 200) -> JSONResponse:
    return JSONResponse({"data": data, "meta": meta}, status_code=status_code)
