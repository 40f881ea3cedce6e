"""MemContext compatibility: `POST /api/memories`.

`category` is the memory type (preference, fact, decision, context), `project` the
namespace, `validUntil` the expiry. The answer says what the core did: `saved`, `updated`
(the new memory supersedes `superseded`), `extended` (it extends `superseded`) or
`duplicate` (nothing stored; `existingId` is the memory that already says it). All four
answer 200: MemContext documents one response for all of them, told apart by `status`.
Errors are `{"error": "...", "code": "HTTP_<status>", "requestId": "..."}`."""

from __future__ import annotations

import secrets
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ConfigDict, Field

from ...engine.validation import NewMemory
from ...errors import ValidationError
from ...models import SaveResult, SaveStatus
from ..app import request_id
from ..deps import engine_of, idempotent
from ._wire import Strict, Writer, rename_fields, wire_message

router = APIRouter(prefix="/api/memories", tags=["compat: MemContext"])
PREFIXES = ("/api/memories",)

#: MemContext name → core name
FIELDS = {"category": "memory_type", "project": "namespace", "validUntil": "expires_at",
          "scope": "user_id"}
WIRE_NAMES = {core: wire for wire, core in FIELDS.items()}
MAX_PROJECT_CHARS = 100


class SaveMemory(Strict):
    content: str = Field(..., description="A clear, complete, searchable statement; "
                                          "max 10,000 characters")
    category: Literal["preference", "fact", "decision", "context"] | None = None
    project: str | None = Field(None, description="Lowercase, no spaces; max 100 characters")
    source: Literal["mcp", "web", "api", "openclaw"] = "api"
    validUntil: str | None = Field(None, description="ISO 8601; omit for permanent memories")
    scope: str | None = Field(None, description="End user the memory belongs to "
                                                "(isolation boundary; Engram: user_id)")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "content": "User prefers TypeScript over JavaScript for type safety",
        "category": "preference", "project": "memcontext",
    }]})


def save_response(res: SaveResult) -> dict[str, Any]:
    body: dict[str, Any] = {"id": res.id, "status": res.status.value}
    if res.status in (SaveStatus.UPDATED, SaveStatus.EXTENDED) and res.related_id:
        body["superseded"] = res.related_id
    if res.status is SaveStatus.DUPLICATE:
        body["existingId"] = res.existing_id or res.id
    return body


@router.post("", summary="Save a memory (MemContext)",
             response_description="Memory saved, updated, extended, or deduplicated")
def save_memory(body: SaveMemory, request: Request, p: Writer) -> Response:
    project = body.project
    if project is not None and (len(project) > MAX_PROJECT_CHARS or project != project.lower()
                                or any(c.isspace() for c in project) or not project):
        raise ValidationError(f"project: must be lowercase without spaces, 1..{MAX_PROJECT_CHARS}"
                              " characters (e.g. memcontext)", field="project")
    fields = rename_fields(body.model_dump(exclude_none=True), FIELDS)

    def run() -> Response:
        res = engine_of(request).service.add(p.tenant.id, NewMemory(**fields),
                                             actor=p.key.id)
        return JSONResponse(save_response(res))

    return idempotent(request, p, fields, run)


def render_error(request: Request, status: int, code: str, message: str,
                 field: str | None) -> Response:
    if status == 422:
        status = 400
    elif status == 402:
        status = 403  # MemContext: "403 Memory limit exceeded for current plan"
    body: dict[str, Any] = {"error": wire_message(message, field, WIRE_NAMES),
                            "code": f"HTTP_{status}", "requestId": request_id(request)}
    if status >= 500:
        body["code"] = "INTERNAL_ERROR"
        body["errorId"] = "ERR_" + secrets.token_hex(4).upper()
    return JSONResponse(body, status_code=status)
