"""MemoryScope compatibility: `POST /memory`.

Structured memories: a `value_json` object under one of six scopes (and an optional domain)
for a user. The core normalises and de-duplicates the value and derives a readable text
from it for search. Errors are `{"detail": "..."}`: 400 for a missing or invalid field
(`Field 'user_id' is required`), 401 `Invalid API key`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ConfigDict, Field

from ...engine.validation import NewMemory
from ...serialize import iso
from ..deps import engine_of, idempotent
from ._wire import Strict, Writer, without_field

router = APIRouter(tags=["compat: MemoryScope"])

#: exact paths only ("/memory" and "/memory/..."): /memories is MemLayer's
PREFIXES = ("/memory",)

SCOPES = "preferences, constraints, communication, accessibility, schedule, attention"


class CreateMemory(Strict):
    user_id: str = Field(..., description="The user the memory belongs to")
    scope: str = Field(..., description=f"One of: {SCOPES}")
    domain: str | None = Field(None, description='Sub-category within the scope ("food")')
    source: str = Field(..., description="explicit_user_input, inferred, system, ...")
    ttl_days: int | float | None = Field(None, description="1..3650; null: no expiry")
    value_json: dict[str, Any] = Field(..., description="The memory data; normalised and "
                                                         "de-duplicated per scope")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "user_id": "user123", "scope": "preferences", "domain": "food",
        "source": "explicit_user_input", "ttl_days": 30,
        "value_json": {"likes": ["pizza", "sushi"], "dislikes": ["broccoli"]},
    }]})


@router.post("/memory", status_code=201, summary="Create a memory (MemoryScope)",
             response_description="The memory; a value already stored for the user and "
                                  "scope returns the stored memory (also 201)")
def create_memory(body: CreateMemory, request: Request, p: Writer) -> Response:
    fields = body.model_dump(exclude_none=True)

    def run() -> Response:
        res = engine_of(request).service.add(p.tenant.id, NewMemory(**fields),
                                             actor=p.key.id)
        m = res.memory
        return JSONResponse({
            "id": m.id,
            "user_id": m.user_id,
            "scope": None if m.scope is None else m.scope.value,
            "domain": m.domain,
            "created_at": iso(m.created_at),
            "expires_at": iso(m.expires_at),
        }, status_code=201)

    return idempotent(request, p, fields, run)


def render_error(request: Request, status: int, code: str, message: str,
                 field: str | None) -> Response:
    if status == 401:
        detail = "Invalid API key"
    elif status == 429:
        detail = "Rate limit exceeded. Please try again later."
    elif status in (400, 422):
        status = 400
        detail = _field_detail(message, field)
    else:
        detail = message
    return JSONResponse({"detail": detail}, status_code=status)


def _field_detail(message: str, field: str | None) -> str:
    """`Field 'user_id' is required`, as MemoryScope words it."""
    if not field:
        return message
    rest = without_field(message, field)
    if rest == "unknown field":
        return f"Field '{field}' is not allowed"
    if rest.startswith(("is ", "must ")):
        return f"Field '{field}' {rest}"
    return f"Field '{field}' is invalid: {rest}"
