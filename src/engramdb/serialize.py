"""Core objects to JSON-ready dicts (one place, so every face prints a memory the same way)."""

from __future__ import annotations

import base64
from datetime import datetime
from enum import Enum
from typing import Any

import numpy as np

from .models import ApiKey, HistoryEvent, MemoryRecord, SearchHit, Tenant


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _v(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def memory_dict(m: MemoryRecord) -> dict[str, Any]:
    return {
        "id": m.id,
        "tenant_id": m.tenant_id,
        "content": m.content,
        "user_id": m.user_id,
        "agent_id": m.agent_id,
        "session_id": m.session_id,
        "namespace": m.namespace,
        "scope": _v(m.scope),
        "domain": m.domain,
        "value_json": m.value_json,
        "content_type": _v(m.content_type),
        "memory_type": _v(m.memory_type),
        "memory_nature": _v(m.memory_nature),
        "tier": _v(m.tier),
        "source": m.source,
        "source_id": m.source_id,
        "external_id": m.external_id,
        "parent_memory_id": m.parent_memory_id,
        "metadata": m.metadata,
        "tags": m.tags,
        "importance": m.importance,
        "confidence": m.confidence,
        "relevance": m.relevance,
        "decay_rate": m.decay_rate,
        "access_count": m.access_count,
        "last_accessed_at": iso(m.last_accessed_at),
        "pinned": m.pinned,
        "immutable": m.immutable,
        "status": _v(m.status),
        "superseded_by": m.superseded_by,
        "expires_at": iso(m.expires_at),
        "created_at": iso(m.created_at),
        "updated_at": iso(m.updated_at),
        "pii_detected": m.pii_detected,
        "pii_fields": m.pii_fields,
        "integrity_hash": m.integrity_hash,
        "embedding_model": m.embedding_model,
        "tokens_used": m.tokens_used,
    }


def hit_dict(h: SearchHit, explain: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"memory": memory_dict(h.memory), "score": round(h.score, 6)}
    if explain:
        out["explain"] = {k: round(v, 6) for k, v in h.explain.items()}
    return out


def event_dict(e: HistoryEvent) -> dict[str, Any]:
    return {"id": e.id, "memory_id": e.memory_id, "event": e.event, "at": iso(e.at),
            "actor": e.actor, "changes": e.changes}


def tenant_dict(t: Tenant) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "status": _v(t.status),
            "memory_limit": t.memory_limit, "created_at": iso(t.created_at)}


def key_dict(k: ApiKey) -> dict[str, Any]:
    return {"id": k.id, "tenant_id": k.tenant_id, "name": k.name, "prefix": k.prefix,
            "scopes": k.scopes, "rate_limit": k.rate_limit, "created_at": iso(k.created_at),
            "revoked_at": iso(k.revoked_at)}


def vector_b64(v: np.ndarray[Any, Any] | None) -> str | None:
    if v is None:
        return None
    return base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode("ascii")


def vector_from_b64(s: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.frombuffer(base64.b64decode(s, validate=True), dtype="<f4").astype(np.float32)
