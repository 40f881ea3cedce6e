"""MemLayer compatibility: `POST /memories` and the calls around it.

Memories belong to a user and an agent and have a `memory_type` of episodic (default),
semantic or summary. A store that the core finds to be a duplicate (the same content, or
cosine ≥ 0.95, for the same user, agent and namespace) answers 409 and writes nothing.
Errors are `{"detail": "..."}` (401, 402, 403, 404, 409, 422, 429).

Besides the documented store call: `POST /memories/duplicate-check`, search and context
(`GET` with query parameters as in MemLayer's reference, or `POST` with the same fields as
JSON), list (`GET /memories`), and get/update/delete by id."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ConfigDict, Field

from ...engine.service import SearchQuery
from ...engine.validation import NewMemory
from ...errors import ValidationError
from ...models import MemoryRecord, SearchHit
from ...serialize import iso
from ..deps import engine_of, idempotent
from ._wire import Reader, Strict, Writer, rounded

router = APIRouter(prefix="/memories", tags=["compat: MemLayer"])
PREFIXES = ("/memories",)

MemLayerType = Literal["episodic", "semantic", "summary"]

STORED = "Memory stored successfully"
DUPLICATE = "Duplicate memory detected — skipped."
DELETED = "Memory deleted successfully"


class StoreMemory(Strict):
    content: str = Field(..., description="1..10,000 characters after stripping")
    user_id: str = Field(..., description="The end user; max 255 characters")
    agent_id: str = Field(..., description="The agent; max 255 characters")
    memory_type: MemLayerType = "episodic"
    importance: float | None = Field(None, description="0..1, default 0.5")
    metadata: dict[str, Any] | None = Field(None, description="Returned in every response")
    ttl_days: int | None = Field(None, description="1..3650; null: permanent")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "content": "User prefers concise bullet points over long paragraphs",
        "user_id": "user_123", "agent_id": "support_bot", "memory_type": "semantic",
        "importance": 0.8,
    }]})


class DuplicateProbe(Strict):
    content: str
    user_id: str
    agent_id: str


class SearchBody(Strict):
    query: str
    user_id: str | None = None
    agent_id: str | None = None
    top_k: int = Field(5, ge=1, le=20)
    min_score: float = Field(0.0, description="0..1")
    memory_type: MemLayerType | None = None


class ContextBody(Strict):
    user_id: str | None = None
    agent_id: str | None = None
    top_k: int = Field(10, ge=1, le=50)
    current_message: str | None = None
    memory_type: MemLayerType | None = None


class PatchMemory(Strict):
    content: str | None = None
    importance: float | None = None
    memory_type: MemLayerType | None = None
    metadata: dict[str, Any] | None = Field(None, description="Replaces the metadata")
    ttl_days: int | None = None


def memory_out(m: MemoryRecord, hit: SearchHit | None = None) -> dict[str, Any]:
    """MemLayer's MemoryOut; `score` and `score_detail` only in search results."""
    return {
        "id": m.id,
        "user_id": m.user_id,
        "agent_id": m.agent_id,
        "content": m.content,
        "memory_type": m.memory_type.value,
        "importance": m.importance,
        "metadata": m.metadata,
        "access_count": m.access_count,
        "created_at": iso(m.created_at),
        "last_accessed_at": iso(m.last_accessed_at),
        "expires_at": iso(m.expires_at),
        "score": None if hit is None else rounded(hit.score),
        "score_detail": None if hit is None else {
            k: round(hit.explain.get(k, 0.0), 6)
            for k in ("semantic", "keyword", "importance", "relevance")},
    }


def _scope(user_id: str | None, agent_id: str | None,
           memory_type: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"user_id": user_id, "agent_id": agent_id}
    if memory_type is not None:
        out["memory_types"] = [memory_type]
    return {k: v for k, v in out.items() if v is not None}


@router.post("", status_code=201, summary="Store memory (MemLayer)",
             responses={409: {"description": "Duplicate: nothing was stored"}})
def store_memory(body: StoreMemory, request: Request, p: Writer) -> Response:
    fields = body.model_dump(exclude_none=True)

    def run() -> Response:
        res = engine_of(request).service.add(p.tenant.id, NewMemory(**fields),
                                             actor=p.key.id)
        if res.duplicate:
            return JSONResponse({"detail": DUPLICATE}, status_code=409)
        return JSONResponse({"id": res.id, "message": STORED}, status_code=201)

    return idempotent(request, p, fields, run)


@router.post("/duplicate-check", summary="Would this store be a duplicate? Writes nothing")
def duplicate_check(body: DuplicateProbe, request: Request, p: Reader) -> Response:
    check = engine_of(request).service.duplicate_check(
        p.tenant.id, NewMemory(**body.model_dump()))
    return JSONResponse({"is_duplicate": check.is_duplicate,
                         "similarity": rounded(check.similarity),
                         "existing_id": check.existing_id,
                         "existing_content": check.existing_content})


def _search(request: Request, p: Reader, body: SearchBody) -> Response:
    hits = engine_of(request).service.search(p.tenant.id, SearchQuery(
        query=body.query, limit=body.top_k, min_score=body.min_score,
        **_scope(body.user_id, body.agent_id, body.memory_type)))
    return JSONResponse({"memories": [memory_out(h.memory, h) for h in hits],
                         "query": body.query, "total": len(hits)})


@router.get("/search", summary="Search memories (MemLayer), best first")
def search_get(
    request: Request, p: Reader, query: str,
    user_id: str | None = None, agent_id: str | None = None,
    top_k: Annotated[int, Query(ge=1, le=20)] = 5,
    min_score: Annotated[float, Query(description="0..1")] = 0.0,
    memory_type: MemLayerType | None = None,
) -> Response:
    return _search(request, p, SearchBody(query=query, user_id=user_id, agent_id=agent_id,
                                          top_k=top_k, min_score=min_score,
                                          memory_type=memory_type))


@router.post("/search", summary="Search memories (MemLayer), JSON body")
def search_post(body: SearchBody, request: Request, p: Reader) -> Response:
    return _search(request, p, body)


def _context(request: Request, p: Reader, body: ContextBody) -> Response:
    service = engine_of(request).service
    scope = _scope(body.user_id, body.agent_id, body.memory_type)
    if body.current_message is not None:
        hits = service.search(p.tenant.id, SearchQuery(
            query=body.current_message, limit=body.top_k, **scope))
        memories = [memory_out(h.memory, h) for h in hits]
    else:
        # The core has no ranking without a query yet (MemLayer: importance + recency);
        # the newest memories stand in for it.
        page = service.list(p.tenant.id, scope, body.top_k, 0)
        memories = [memory_out(m) for m in page.items]
    return JSONResponse({"memories": memories, "total": len(memories),
                         "limit": body.top_k, "offset": 0})


@router.get("/context", summary="Memories for the start of a conversation (MemLayer)")
def context_get(
    request: Request, p: Reader,
    user_id: str | None = None, agent_id: str | None = None,
    top_k: Annotated[int, Query(ge=1, le=50)] = 10,
    current_message: str | None = None,
    memory_type: MemLayerType | None = None,
) -> Response:
    return _context(request, p, ContextBody(user_id=user_id, agent_id=agent_id, top_k=top_k,
                                            current_message=current_message,
                                            memory_type=memory_type))


@router.post("/context", summary="Memories for the start of a conversation, JSON body")
def context_post(body: ContextBody, request: Request, p: Reader) -> Response:
    return _context(request, p, body)


@router.get("", summary="List memories (MemLayer), newest first")
def list_memories(
    request: Request, p: Reader,
    user_id: str | None = None, agent_id: str | None = None,
    memory_type: MemLayerType | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    page = engine_of(request).service.list(p.tenant.id, _scope(user_id, agent_id, memory_type),
                                           limit, offset)
    return JSONResponse({"memories": [memory_out(m) for m in page.items],
                         "total": page.total, "limit": page.limit, "offset": page.offset})


@router.get("/{memory_id}", summary="Get a memory (MemLayer)")
def get_memory(memory_id: str, request: Request, p: Reader) -> Response:
    return JSONResponse(memory_out(engine_of(request).service.get(p.tenant.id, memory_id)))


@router.patch("/{memory_id}", summary="Update a memory (MemLayer); content re-embeds")
def patch_memory(memory_id: str, body: PatchMemory, request: Request, p: Writer) -> Response:
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise ValidationError("body: give at least one field to change", field="body")
    rec = engine_of(request).service.update(p.tenant.id, memory_id, changes, actor=p.key.id)
    return JSONResponse(memory_out(rec))


@router.delete("/{memory_id}", summary="Delete a memory (MemLayer)")
def delete_memory(memory_id: str, request: Request, p: Writer) -> Response:
    engine_of(request).service.delete(p.tenant.id, memory_id, actor=p.key.id)
    return JSONResponse({"id": memory_id, "message": DELETED})


def render_error(request: Request, status: int, code: str, message: str,
                 field: str | None) -> Response:
    # MemLayer documents 422 for every bad input (malformed JSON included)
    return JSONResponse({"detail": message}, status_code=422 if status == 400 else status)
