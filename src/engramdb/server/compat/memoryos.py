"""Memory OS compatibility: `/api/v1/memories` create, list, get, update, delete.

Responses are `{"data": ..., "meta": {"request_id", "latency_ms", ...}}`; errors
`{"error": {"code", "message"}, "meta": {"request_id"}}`. Keys need `memories:read` to read
and `memories:write` to write. Memory OS calls importance, confidence and relevance
`importance_score`, `confidence_score` and `relevance_score`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ConfigDict, Field

from ...engine.validation import NewMemory
from ...errors import ValidationError
from ...models import MemoryRecord
from ...serialize import iso
from ..app import meta, request_id
from ..deps import engine_of, envelope, idempotent
from ._wire import Reader, Strict, Writer, rename_fields, wire_message

router = APIRouter(prefix="/api/v1/memories", tags=["compat: Memory OS"])
PREFIXES = ("/api/v1/memories",)

#: Memory OS name → core name
FIELDS = {"importance_score": "importance", "confidence_score": "confidence",
          "relevance_score": "relevance"}
#: core name → Memory OS name (for error messages)
WIRE_NAMES = {core: wire for wire, core in FIELDS.items()}


class CreateMemory(Strict):
    content: str = Field(..., description="The memory content (min 1 character)")
    content_type: str | None = Field(None, description="text (default), conversation, "
                                                       "document, event, fact")
    tier: str | None = Field(None, description="short (default), medium, long")
    memory_nature: str | None = Field(None, description="episodic or semantic")
    parent_memory_id: str | None = Field(None, description="UUID of the parent memory")
    metadata: dict[str, Any] | None = Field(None, description="Custom key-value pairs")
    external_id: str | None = None
    source_id: str | None = None
    importance_score: float | None = Field(None, description="0..1, default 0.5 "
                                                             "(Engram extension)")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "content": "User prefers dark mode interfaces and minimal UI designs",
        "content_type": "fact", "tier": "long", "memory_nature": "semantic",
        "metadata": {"category": "preferences", "source": "user_settings"},
    }]})


class PatchMemory(Strict):
    content: str | None = Field(None, description="New content (re-embeds)")
    tier: str | None = None
    importance_score: float | None = None
    memory_nature: str | None = None
    metadata: dict[str, Any] | None = Field(None, description="Replaces the metadata")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "tier": "long", "importance_score": 0.9,
        "metadata": {"category": "preferences", "verified": True},
    }]})


def memory_object(m: MemoryRecord) -> dict[str, Any]:
    """The Memory OS memory object (without the embedding)."""
    return {
        "id": m.id,
        "tenant_id": m.tenant_id,
        "content": m.content,
        "content_type": m.content_type.value,
        "tier": m.tier.value,
        "memory_nature": None if m.memory_nature is None else m.memory_nature.value,
        "relevance_score": m.relevance,
        "importance_score": m.importance,
        "confidence_score": m.confidence,
        "decay_rate": m.decay_rate,
        "access_count": m.access_count,
        "last_accessed_at": iso(m.last_accessed_at),
        "parent_memory_id": m.parent_memory_id,
        "external_id": m.external_id,
        "source_id": m.source_id,
        "metadata": m.metadata,
        "pii_detected": m.pii_detected,
        "pii_fields": m.pii_fields,
        "integrity_hash": m.integrity_hash,
        "created_at": iso(m.created_at),
        "updated_at": iso(m.updated_at),
        "expires_at": iso(m.expires_at),
    }


@router.post("", status_code=201, summary="Create memory (Memory OS)",
             response_description="201 with the new memory; 200 with the stored memory "
                                  "when the content is a duplicate")
def create_memory(body: CreateMemory, request: Request, p: Writer) -> Response:
    fields = rename_fields(body.model_dump(exclude_none=True), FIELDS)

    def run() -> Response:
        res = engine_of(request).service.add(p.tenant.id, NewMemory(**fields),
                                             actor=p.key.id)
        return envelope(memory_object(res.memory), meta(request),
                        200 if res.duplicate else 201)

    return idempotent(request, p, fields, run)


@router.get("", summary="List memories (Memory OS), newest first")
def list_memories(
    request: Request, p: Reader,
    limit: Annotated[int, Query(ge=1, le=100, description="1..100")] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    tier: Annotated[str | None, Query(description="short, medium, long")] = None,
    content_type: Annotated[str | None, Query(description="text, conversation, document, "
                                                          "event, fact")] = None,
    memory_nature: Annotated[str | None, Query(description="episodic, semantic")] = None,
    min_relevance: Annotated[float | None, Query(description="0..1, default 0")] = None,
) -> Response:
    filters: dict[str, Any] = {"memory_nature": memory_nature, "min_relevance": min_relevance}
    if tier is not None:
        filters["tiers"] = [tier]
    if content_type is not None:
        filters["content_types"] = [content_type]
    page = engine_of(request).service.list(
        p.tenant.id, {k: v for k, v in filters.items() if v is not None}, limit, offset)
    return envelope([memory_object(m) for m in page.items],
                    meta(request, total=page.total, limit=page.limit, offset=page.offset,
                         has_more=page.has_more))


@router.get("/{memory_id}", summary="Get memory (Memory OS); counts as an access")
def get_memory(memory_id: str, request: Request, p: Reader) -> Response:
    rec = engine_of(request).service.get(p.tenant.id, memory_id)
    return envelope(memory_object(rec), meta(request))


@router.patch("/{memory_id}", summary="Update memory (Memory OS)")
def patch_memory(memory_id: str, body: PatchMemory, request: Request, p: Writer) -> Response:
    changes = rename_fields(body.model_dump(exclude_unset=True), FIELDS)
    if not changes:
        raise ValidationError("body: give at least one field to change", field="body")
    rec = engine_of(request).service.update(p.tenant.id, memory_id, changes, actor=p.key.id)
    return envelope(memory_object(rec), meta(request))


@router.delete("/{memory_id}", summary="Delete memory (Memory OS)")
def delete_memory(memory_id: str, request: Request, p: Writer) -> Response:
    engine_of(request).service.delete(p.tenant.id, memory_id, actor=p.key.id)
    return envelope({"deleted": True}, meta(request))


def render_error(request: Request, status: int, code: str, message: str,
                 field: str | None) -> Response:
    if code == "NOT_FOUND" and field == "id":
        message = "Memory not found"
    return JSONResponse({"error": {"code": code,
                                   "message": wire_message(message, field, WIRE_NAMES)},
                         "meta": {"request_id": request_id(request)}}, status_code=status)
