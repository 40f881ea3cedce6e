"""The native REST API, /v1. Parse, call the core, shape the answer: nothing else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ..api import new_memory
from ..engine.admin import Principal
from ..engine.service import SearchQuery
from ..engine.transfer import export_line, parse_line
from ..errors import ValidationError
from ..models import SaveResult, SaveStatus
from ..serialize import event_dict, hit_dict, key_dict, memory_dict, tenant_dict
from . import metrics
from .app import meta
from .deps import administrator, engine_of, envelope, idempotent, reader, writer

router = APIRouter(prefix="/v1")
system_router = APIRouter()

Reader = Annotated[Principal, Depends(reader)]
Writer = Annotated[Principal, Depends(writer)]
Admin = Annotated[Principal, Depends(administrator)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemoryCreate(Strict):
    content: str | None = Field(None, description="1..10,000 characters after stripping")
    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    namespace: str | None = Field(None, description='Default "default"')
    scope: str | None = Field(None, description="MemoryScope scope, with value_json")
    domain: str | None = None
    value_json: Any = None
    content_type: str | None = Field(None, description="text, conversation, document, event, fact")
    memory_type: str | None = None
    memory_nature: str | None = Field(None, description="episodic or semantic")
    tier: str | None = Field(None, description="short, medium or long")
    source: str | None = None
    source_id: str | None = None
    external_id: str | None = None
    parent_memory_id: str | None = None
    metadata: dict[str, Any] | None = Field(None, description="≤ 4 KB, ≤ 20 keys, ≤ 3 levels")
    tags: list[str] | None = None
    importance: float | None = Field(None, description="0..1, default 0.5")
    confidence: float | None = None
    pinned: bool | None = None
    immutable: bool | None = None
    ttl_days: int | None = Field(None, description="1..3650")
    expires_at: str | None = Field(None, description="ISO 8601, in the future")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "content": "User prefers concise bullet points over long paragraphs",
        "user_id": "user_123", "agent_id": "support_bot", "memory_type": "semantic",
        "importance": 0.8, "metadata": {"source": "chat"},
    }]})

    def fields(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class MemoryPatch(Strict):
    content: str | None = None
    importance: float | None = None
    confidence: float | None = None
    metadata: dict[str, Any] | None = Field(None, description="Replaces the metadata")
    tags: list[str] | None = None
    tier: str | None = None
    memory_type: str | None = None
    memory_nature: str | None = None
    content_type: str | None = None
    pinned: bool | None = None
    immutable: bool | None = None
    expires_at: str | None = None
    ttl_days: int | None = None
    external_id: str | None = None
    source_id: str | None = None
    domain: str | None = None

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "importance": 0.9, "tier": "long", "metadata": {"verified": True},
    }]})


class BatchCreate(Strict):
    items: list[MemoryCreate] = Field(..., description="At most 1,000 memories")


class Filters(Strict):
    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    namespace: str | None = None
    memory_types: list[str] | None = None
    content_types: list[str] | None = None
    tiers: list[str] | None = None
    memory_nature: str | None = None
    scope: str | None = None
    domain: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = Field(None, description="Top-level key = value")
    created_after: str | None = None
    created_before: str | None = None
    include_superseded: bool = False


class SearchRequest(Filters):
    query: str = Field(..., description="Free text, 1..10,000 characters")
    limit: int = Field(10, description="1..100")
    min_score: float = 0.0
    explain: bool = Field(True, description="Include the per-result score breakdown")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "query": "how does the user like answers formatted?", "user_id": "user_123",
        "limit": 5,
    }]})

    def to_query(self) -> SearchQuery:
        data = self.model_dump(exclude={"explain"}, exclude_none=True)
        return SearchQuery(**data)


class ContextRequest(SearchRequest):
    budget_tokens: int = Field(1000, description="16..100,000 (estimated tokens)")

    def to_query(self) -> SearchQuery:
        data = self.model_dump(exclude={"explain", "budget_tokens"}, exclude_none=True)
        return SearchQuery(**data)


class Message(Strict):
    role: str = Field(..., description="user, assistant, system or tool")
    content: str
    created_at: str | None = Field(None, description="ISO 8601; default: now")


class ConversationCreate(Strict):
    session_id: str
    messages: list[Message] = Field(..., description="1..1,000 messages, in order")
    user_id: str | None = None
    agent_id: str | None = None
    namespace: str | None = None
    importance: float | None = None
    metadata: dict[str, Any] | None = None

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "session_id": "chat-2026-03-01", "user_id": "user_123",
        "messages": [{"role": "user", "content": "I'm vegetarian, by the way."},
                     {"role": "assistant", "content": "Noted!"}],
    }]})


class SessionSearchRequest(SearchRequest):
    hits_per_session: int = Field(3, description="1..20 memories shown per session")

    def to_query(self) -> SearchQuery:
        data = self.model_dump(exclude={"explain", "hits_per_session"}, exclude_none=True)
        return SearchQuery(**data)


class DuplicateCheckRequest(Strict):
    content: str
    user_id: str | None = None
    agent_id: str | None = None
    namespace: str | None = None


class TenantCreate(Strict):
    id: str
    name: str | None = None
    memory_limit: int | None = None


class TenantPatch(Strict):
    name: str | None = None
    status: str | None = Field(None, description="active or suspended")
    memory_limit: int | None = Field(None, description="null removes the limit")


class KeyCreate(Strict):
    tenant_id: str | None = Field(None, description="Default: the caller's tenant")
    name: str = "default"
    scopes: list[str] = Field(default_factory=lambda: ["memories:read", "memories:write"])
    rate_limit: int | None = Field(None, description="Requests per minute for this key")


def _save_dict(r: SaveResult) -> dict[str, Any]:
    return {"status": r.status.value, "id": r.id, "existing_id": r.existing_id,
            "similarity": None if r.similarity is None else round(r.similarity, 6),
            "tokens_used": r.tokens_used}


# -- system ---------------------------------------------------------------------------


@system_router.get("/healthz", tags=["system"], summary="Liveness")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@system_router.get("/readyz", tags=["system"], summary="Readiness: database and model loaded")
def readyz(request: Request) -> JSONResponse:
    eng = getattr(request.app.state, "engine", None)
    if eng is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    try:
        eng.store.get_tenant("default")
        vec = eng.embedder.embed(["ready"]).vectors
        ok = vec.shape == (1, eng.embedder.dimension)
    except Exception as exc:  # readiness reports, it does not raise
        return JSONResponse({"status": "error", "detail": str(exc)}, status_code=503)
    return JSONResponse({"status": "ready" if ok else "error",
                         "model": eng.embedder.model_name}, status_code=200 if ok else 503)


@system_router.get("/metrics", tags=["system"], summary="Prometheus metrics",
                   response_class=PlainTextResponse)
def prometheus_metrics() -> Response:
    return Response(metrics.render(), media_type="text/plain; version=0.0.4")


# -- memories -------------------------------------------------------------------------


@router.post("/memories", status_code=201, tags=["memories"],
             summary="Store a memory (201 saved, 200 duplicate with the existing id)")
def create_memory(body: MemoryCreate, request: Request, p: Writer) -> Response:
    def run() -> Response:
        res = engine_of(request).service.add(p.tenant.id, new_memory(body.fields()),
                                             actor=p.key.id)
        data = _save_dict(res) | {"memory": memory_dict(res.memory)}
        code = 201 if res.status is not SaveStatus.DUPLICATE else 200
        return envelope(data, meta(request), code)

    return idempotent(request, p, body.fields(), run)


@router.post("/memories/batch", status_code=201, tags=["memories"],
             summary="Store up to 1,000 memories; one status per item, in order")
def create_batch(body: BatchCreate, request: Request, p: Writer) -> Response:
    items = [i.fields() for i in body.items]

    def run() -> Response:
        batch = [new_memory(item, f"items[{n}].") for n, item in enumerate(items)]
        results = engine_of(request).service.add_many(p.tenant.id, batch, actor=p.key.id)
        saved = sum(r.status is SaveStatus.SAVED for r in results)
        return envelope([_save_dict(r) for r in results],
                        meta(request, saved=saved, duplicates=len(results) - saved), 201)

    return idempotent(request, p, items, run)


@router.get("/memories", tags=["memories"], summary="List memories, newest first")
def list_memories(
    request: Request, p: Reader,
    limit: Annotated[int, Query(description="1..1000")] = 50,
    offset: Annotated[int, Query(description="≥ 0")] = 0,
    user_id: str | None = None, agent_id: str | None = None, session_id: str | None = None,
    namespace: str | None = None, memory_type: str | None = None,
    content_type: str | None = None, tier: str | None = None,
    memory_nature: str | None = None, tag: str | None = None,
    created_after: str | None = None, created_before: str | None = None,
) -> Response:
    filters: dict[str, Any] = {
        "user_id": user_id, "agent_id": agent_id, "session_id": session_id,
        "namespace": namespace, "memory_nature": memory_nature,
        "created_after": created_after, "created_before": created_before,
    }
    if memory_type:
        filters["memory_types"] = [memory_type]
    if content_type:
        filters["content_types"] = [content_type]
    if tier:
        filters["tiers"] = [tier]
    if tag:
        filters["tags"] = [tag]
    page = engine_of(request).service.list(
        p.tenant.id, {k: v for k, v in filters.items() if v is not None}, limit, offset)
    return envelope([memory_dict(m) for m in page.items],
                    meta(request, total=page.total, limit=page.limit, offset=page.offset,
                         has_more=page.has_more))


@router.get("/memories/{memory_id}", tags=["memories"], summary="Get one memory")
def get_memory(memory_id: str, request: Request, p: Reader) -> Response:
    rec = engine_of(request).service.get(p.tenant.id, memory_id)
    return envelope(memory_dict(rec), meta(request))


@router.patch("/memories/{memory_id}", tags=["memories"],
              summary="Change fields (content re-embeds; metadata replaces)")
def patch_memory(memory_id: str, body: MemoryPatch, request: Request, p: Writer) -> Response:
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise ValidationError("body: give at least one field to change", field="body")
    rec = engine_of(request).service.update(p.tenant.id, memory_id, changes, actor=p.key.id)
    return envelope(memory_dict(rec), meta(request))


@router.delete("/memories/{memory_id}", tags=["memories"], summary="Delete a memory")
def delete_memory(memory_id: str, request: Request, p: Writer) -> Response:
    engine_of(request).service.delete(p.tenant.id, memory_id, actor=p.key.id)
    return envelope({"deleted": True, "id": memory_id}, meta(request))


@router.get("/memories/{memory_id}/history", tags=["memories"],
            summary="Every change of a memory, oldest first")
def memory_history(memory_id: str, request: Request, p: Reader) -> Response:
    events = engine_of(request).service.history(p.tenant.id, memory_id)
    return envelope([event_dict(e) for e in events], meta(request))


@router.post("/memories/duplicate-check", tags=["memories"],
             summary="Would this be a duplicate? Writes nothing")
def duplicate_check(body: DuplicateCheckRequest, request: Request, p: Reader) -> Response:
    check = engine_of(request).service.duplicate_check(
        p.tenant.id, new_memory(body.model_dump(exclude_none=True)))
    return envelope({"is_duplicate": check.is_duplicate,
                     "similarity": round(check.similarity, 6),
                     "existing_id": check.existing_id,
                     "existing_content": check.existing_content}, meta(request))


@router.post("/search", tags=["search"], summary="Hybrid search with a score breakdown")
def search(body: SearchRequest, request: Request, p: Reader) -> Response:
    hits = engine_of(request).service.search(p.tenant.id, body.to_query())
    return envelope([hit_dict(h, body.explain) for h in hits], meta(request, count=len(hits)))


@router.post("/conversations", status_code=201, tags=["memories"],
             summary="Store a transcript as turn memories (session, role, position, time)")
def create_conversation(body: ConversationCreate, request: Request, p: Writer) -> Response:
    payload = body.model_dump(exclude_none=True)

    def run() -> Response:
        fields = {k: v for k, v in payload.items() if k not in ("session_id", "messages")}
        results = engine_of(request).service.add_conversation(
            p.tenant.id, body.session_id, payload["messages"], actor=p.key.id, **fields)
        saved = sum(r.status is SaveStatus.SAVED for r in results)
        return envelope([_save_dict(r) for r in results],
                        meta(request, saved=saved, duplicates=len(results) - saved), 201)

    return idempotent(request, p, payload, run)


@router.post("/search/sessions", tags=["search"],
             summary="Search grouped by conversation session")
def search_sessions(body: SessionSearchRequest, request: Request, p: Reader) -> Response:
    if not 1 <= body.hits_per_session <= 20:
        raise ValidationError("hits_per_session: must be between 1 and 20",
                              field="hits_per_session")
    sessions = engine_of(request).service.search_sessions(p.tenant.id, body.to_query(),
                                                          body.hits_per_session)
    return envelope([{"session_id": s.session_id, "score": round(s.score, 6),
                      "hits": [hit_dict(h, body.explain) for h in s.hits]} for s in sessions],
                    meta(request, count=len(sessions)))


@router.post("/context", tags=["search"],
             summary="The best memories as a prompt-ready block within a token budget")
def context(body: ContextRequest, request: Request, p: Reader) -> Response:
    ctx = engine_of(request).service.context(p.tenant.id, body.to_query(), body.budget_tokens)
    return envelope({"context": ctx.text, "tokens": ctx.tokens, "budget_tokens": ctx.budget,
                     "memories": [hit_dict(h, body.explain) for h in ctx.memories]},
                    meta(request))


# -- export / import ------------------------------------------------------------------


@router.get("/export", tags=["transfer"],
            summary="All of the tenant's memories with vectors, as JSON lines")
def export(request: Request, p: Reader) -> StreamingResponse:
    store = engine_of(request).store

    def lines() -> Iterator[bytes]:
        for item in store.iter_all(p.tenant.id):
            yield (json.dumps(export_line(item), ensure_ascii=False) + "\n").encode()

    return StreamingResponse(lines(), media_type="application/x-ndjson",
                             headers={"Content-Disposition": "attachment; "
                                      "filename=engram-export.jsonl"})


@router.post("/import", tags=["transfer"],
             summary="Import JSON lines from /v1/export (ids, times and vectors kept)")
async def import_memories(request: Request, p: Writer) -> Response:
    raw = await request.body()
    eng = engine_of(request)
    rows = []
    for n, line in enumerate(raw.decode("utf-8", errors="strict").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            raise ValidationError(f"line {n}: not valid JSON", field=f"line {n}") from None
        try:
            rows.append(parse_line(data, p.tenant.id, eng.embedder.dimension,
                                   eng.embedder.model_name))
        except ValidationError as exc:
            raise ValidationError(f"line {n}: {exc.message}", field=exc.field) from None

    def run() -> Response:
        counts = eng.service.import_rows(p.tenant.id, rows, actor=p.key.id)
        return envelope(counts, meta(request), 200)

    payload = raw.decode("utf-8", errors="replace")
    return await run_in_threadpool(idempotent, request, p, payload, run)


# -- admin ----------------------------------------------------------------------------


@router.post("/admin/tenants", status_code=201, tags=["admin"], summary="Create a tenant")
def create_tenant(body: TenantCreate, request: Request, p: Admin) -> Response:
    t = engine_of(request).admin.create_tenant(body.id, body.name, body.memory_limit)
    return envelope(tenant_dict(t), meta(request), 201)


@router.get("/admin/tenants", tags=["admin"], summary="List tenants")
def list_tenants(request: Request, p: Admin) -> Response:
    return envelope([tenant_dict(t) for t in engine_of(request).admin.list_tenants()],
                    meta(request))


@router.patch("/admin/tenants/{tenant_id}", tags=["admin"],
              summary="Suspend/reactivate a tenant or change its memory limit")
def patch_tenant(tenant_id: str, body: TenantPatch, request: Request, p: Admin) -> Response:
    sent = body.model_dump(exclude_unset=True)
    t = engine_of(request).admin.update_tenant(
        tenant_id, status=sent.get("status"), name=sent.get("name"),
        memory_limit=sent.get("memory_limit", False))
    return envelope(tenant_dict(t), meta(request))


@router.post("/admin/keys", status_code=201, tags=["admin"],
             summary="Create an API key (the key is shown only in this response)")
def create_key(body: KeyCreate, request: Request, p: Admin) -> Response:
    created = engine_of(request).admin.create_key(
        body.tenant_id or p.tenant.id, body.name, body.scopes, body.rate_limit)
    return envelope(key_dict(created.record) | {"key": created.key}, meta(request), 201)


@router.get("/admin/keys", tags=["admin"], summary="List API keys (never the keys themselves)")
def list_keys(request: Request, p: Admin, tenant_id: str | None = None) -> Response:
    return envelope([key_dict(k) for k in engine_of(request).admin.list_keys(tenant_id)],
                    meta(request))


@router.delete("/admin/keys/{key_id}", tags=["admin"], summary="Revoke an API key")
def revoke_key(key_id: str, request: Request, p: Admin) -> Response:
    k = engine_of(request).admin.revoke_key(key_id)
    return envelope(key_dict(k), meta(request))
