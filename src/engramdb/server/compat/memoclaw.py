"""MemoClaw compatibility: `POST /v1/store`, `POST /v1/recall`, and update/delete.

MemoClaw itself updates and deletes at `/v1/memories/{id}`, which is Engram's native API;
here they are `PATCH /v1/store/{id}` and `DELETE /v1/store/{id}`. An immutable memory
refuses both with 409. MemoClaw bills per call and its examples carry no auth header;
Engram still needs a key (`Authorization: Bearer` or `X-API-Key`).

MemoClaw keeps tags in `metadata.tags`; they are also given to the core as the memory's
tags, so that recall can filter on them. Errors are
`{"error": {"code", "message", "details"?}}`."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ConfigDict, Field

from ...engine.service import SearchQuery
from ...engine.validation import NewMemory
from ...errors import ValidationError
from ...models import MemoryRecord, SearchHit
from ...serialize import iso
from ..deps import engine_of, idempotent
from ._wire import Reader, Strict, Writer, rounded, wire_field, wire_message

router = APIRouter(prefix="/v1", tags=["compat: MemoClaw"])
PREFIXES = ("/v1/store", "/v1/recall")

MAX_CONTENT_CHARS = 8192
MemoClawType = Literal["correction", "preference", "decision", "project", "observation",
                       "general"]

CODES = {400: "VALIDATION_ERROR", 401: "UNAUTHORIZED", 402: "PAYMENT_REQUIRED",
         403: "FORBIDDEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 409: "CONFLICT",
         422: "VALIDATION_ERROR", 429: "RATE_LIMIT_EXCEEDED"}


class StoreMemory(Strict):
    content: str = Field(..., max_length=MAX_CONTENT_CHARS, description="Max 8,192 characters")
    metadata: dict[str, Any] | None = Field(None, description="Max 4 KB, 20 keys, 3 levels")
    importance: float | None = Field(None, description="0..1, default 0.5")
    namespace: str | None = Field(None, description='Default "default"; max 255 characters')
    memory_type: MemoClawType | None = Field(None, description='Default "general"')
    session_id: str | None = None
    agent_id: str | None = None
    expires_at: str | None = Field(None, description="ISO 8601, in the future")
    pinned: bool | None = Field(None, description="Exempt from decay")
    immutable: bool | None = Field(None, description="Refuse later updates and deletes")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "content": "User prefers dark mode and vim keybindings",
        "metadata": {"tags": ["preferences", "ui"]}, "importance": 0.8,
    }]})


class UpdateMemory(Strict):
    content: str | None = Field(None, max_length=MAX_CONTENT_CHARS)
    metadata: dict[str, Any] | None = Field(None, description="Replaces the metadata")
    importance: float | None = None
    memory_type: MemoClawType | None = None
    namespace: str | None = None
    pinned: bool | None = None
    expires_at: str | None = Field(None, description="null clears the expiry")
    immutable: bool | None = Field(None, description="true locks the memory for good")


class RecallFilters(Strict):
    tags: list[str] | None = Field(None, max_length=10)
    after: str | None = Field(None, description="ISO 8601: created after")


class Recall(Strict):
    query: str = Field(..., max_length=MAX_CONTENT_CHARS)
    limit: int = Field(5, ge=1, le=100)
    min_similarity: float = Field(0.0, description="0..1")
    namespace: str | None = None
    session_id: str | None = None
    agent_id: str | None = None
    memory_type: MemoClawType | None = None
    include_relations: bool = Field(False, description="Accepted; not supported yet")
    filters: RecallFilters | None = None

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "query": "What are the user editor preferences?", "limit": 5,
        "filters": {"tags": ["preferences"]},
    }]})


def _with_tags(fields: dict[str, Any]) -> dict[str, Any]:
    """metadata.tags are MemoClaw's tags."""
    metadata = fields.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("tags"), list):
        return {**fields, "tags": metadata["tags"]}
    if "metadata" in fields:
        return {**fields, "tags": []}
    return fields


def memory_object(m: MemoryRecord) -> dict[str, Any]:
    return {
        "id": m.id,
        "content": m.content,
        "metadata": m.metadata,
        "importance": m.importance,
        "memory_type": m.memory_type.value,
        "namespace": m.namespace,
        "session_id": m.session_id,
        "agent_id": m.agent_id,
        "pinned": m.pinned,
        "immutable": m.immutable,
        "access_count": m.access_count,
        "expires_at": iso(m.expires_at),
        "created_at": iso(m.created_at),
        "updated_at": iso(m.updated_at),
    }


def recalled(h: SearchHit) -> dict[str, Any]:
    m = h.memory
    return {
        "id": m.id,
        "content": m.content,
        "similarity": rounded(h.score),
        "metadata": m.metadata,
        "importance": m.importance,
        "namespace": m.namespace,
        "memory_type": m.memory_type.value,
        "session_id": m.session_id,
        "agent_id": m.agent_id,
        "created_at": iso(m.created_at),
        "access_count": m.access_count,
        "pinned": m.pinned,
        "_signals": {k: round(v, 6) for k, v in h.explain.items()},
    }


@router.post("/store", status_code=201, summary="Store memory (MemoClaw)")
def store(body: StoreMemory, request: Request, p: Writer) -> Response:
    fields = body.model_dump(exclude_none=True)

    def run() -> Response:
        res = engine_of(request).service.add(p.tenant.id, NewMemory(**_with_tags(fields)),
                                             actor=p.key.id)
        return JSONResponse({"id": res.id, "stored": True, "deduplicated": res.duplicate,
                             "tokens_used": res.tokens_used}, status_code=201)

    return idempotent(request, p, fields, run)


@router.patch("/store/{memory_id}", summary="Update memory (MemoClaw: PATCH /v1/memories/{id})")
def update(memory_id: str, body: UpdateMemory, request: Request, p: Writer) -> Response:
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise ValidationError("body: give at least one field to change", field="body")
    rec = engine_of(request).service.update(p.tenant.id, memory_id, _with_tags(changes),
                                            actor=p.key.id)
    return JSONResponse(memory_object(rec))


@router.delete("/store/{memory_id}",
               summary="Delete memory (MemoClaw: DELETE /v1/memories/{id})")
def delete(memory_id: str, request: Request, p: Writer) -> Response:
    engine_of(request).service.delete(p.tenant.id, memory_id, actor=p.key.id)
    return JSONResponse({"deleted": True, "id": memory_id})


@router.post("/recall", summary="Recall memories (MemoClaw), best first")
def recall(body: Recall, request: Request, p: Reader) -> Response:
    f = body.filters
    q = SearchQuery(query=body.query, limit=body.limit, min_score=body.min_similarity,
                    namespace=body.namespace, session_id=body.session_id,
                    agent_id=body.agent_id,
                    memory_types=() if body.memory_type is None else (body.memory_type,),
                    tags=tuple(f.tags or ()) if f else (), created_after=f.after if f else None)
    hits = engine_of(request).service.search(p.tenant.id, q)
    # the core does not report the query's embedding tokens yet
    return JSONResponse({"memories": [recalled(h) for h in hits], "query_tokens": None})


#: core name → MemoClaw name, for error messages
STORE_NAMES = {"tags": "metadata.tags"}
RECALL_NAMES = {"tags": "filters.tags", "created_after": "filters.after",
                "min_score": "min_similarity", "memory_types": "memory_type"}


def render_error(request: Request, status: int, code: str, message: str,
                 field: str | None) -> Response:
    if status == 400:
        status = 422  # MemoClaw: every invalid request body is VALIDATION_ERROR (422)
    names = RECALL_NAMES if request.url.path.startswith("/v1/recall") else STORE_NAMES
    err: dict[str, Any] = {
        "code": CODES.get(status, "INTERNAL_ERROR" if status >= 500 else f"HTTP_{status}"),
        "message": wire_message(message, field, names),
    }
    if field:
        err["details"] = {"field": wire_field(field, names)}
    return JSONResponse({"error": err}, status_code=status)
