"""Export and import: memories as JSON lines with their vectors, so a database can be moved
or restored without re-embedding. Import trusts nothing: every field is validated again and
the integrity hash must match the content."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from ..errors import ValidationError
from ..models import ContentType, MemoryNature, MemoryRecord, MemoryType, Scope, Status, Tier
from ..serialize import memory_dict, vector_b64, vector_from_b64
from ..storage.base import StoredMemory, Vector
from . import validation as v
from .normalize import integrity_hash, normalize_value

FORMAT = "engram.memory.v1"


def export_line(item: StoredMemory) -> dict[str, Any]:
    data = memory_dict(item.record)
    data["format"] = FORMAT
    data["vector"] = vector_b64(item.vector)
    return data


@dataclass(frozen=True, slots=True)
class ImportedRow:
    record: MemoryRecord
    vector: Vector | None


def _time(data: dict[str, Any], name: str, required: bool = False) -> datetime | None:
    value = data.get(name)
    if value is None:
        if required:
            raise v.fail(name, "is required")
        return None
    return v.timestamp(value, name)


def parse_line(data: Any, tenant_id: str, dimension: int, model_name: str) -> ImportedRow:
    """One exported memory, validated, as a record for `tenant_id` (the tenant of the
    importing key, never the one in the file). A vector made by another model is dropped, so
    the memory is embedded again."""
    if not isinstance(data, dict):
        raise ValidationError("line: must be a JSON object", field="line")
    if data.get("format", FORMAT) != FORMAT:
        raise v.fail("format", f"must be {FORMAT}")
    mid = v.uuid_string(data.get("id"), "id")
    if mid is None:
        raise v.fail("id", "is required")
    content = v.content_text(data.get("content"))
    scope = v.optional_enum(Scope, data.get("scope"), "scope")
    value = data.get("value_json")
    if value is not None:
        value = normalize_value(value, scope)
    digest = integrity_hash(content, value)
    if data.get("integrity_hash") not in (None, digest):
        raise v.fail("integrity_hash", f"does not match the content of memory {mid}")
    created = _time(data, "created_at", required=True)
    assert created is not None
    vector: Vector | None = None
    if data.get("vector") is not None:
        try:
            vector = vector_from_b64(data["vector"])
        except (ValueError, TypeError):
            raise v.fail("vector", "must be base64 of little-endian float32") from None
        if vector.shape != (dimension,) or not np.all(np.isfinite(vector)):
            raise v.fail("vector", f"must hold {dimension} finite float32 values")
    if data.get("embedding_model") not in (None, model_name):
        vector = None
    status = v.enum_value(Status, data.get("status") or "active", "status")
    record = MemoryRecord(
        id=mid, tenant_id=tenant_id, content=content, integrity_hash=digest,
        created_at=created, updated_at=_time(data, "updated_at") or created,
        user_id=v.identifier(data.get("user_id"), "user_id"),
        agent_id=v.identifier(data.get("agent_id"), "agent_id"),
        session_id=v.identifier(data.get("session_id"), "session_id"),
        namespace=v.identifier(data.get("namespace"), "namespace") or "default",
        scope=scope, domain=v.identifier(data.get("domain"), "domain"), value_json=value,
        content_type=v.enum_value(ContentType, data.get("content_type") or "text",
                                  "content_type"),
        memory_type=v.enum_value(MemoryType, data.get("memory_type") or "general",
                                 "memory_type"),
        memory_nature=v.optional_enum(MemoryNature, data.get("memory_nature"),
                                      "memory_nature"),
        tier=v.enum_value(Tier, data.get("tier") or "short", "tier"),
        source=v.identifier(data.get("source"), "source", max_chars=v.MAX_SOURCE_CHARS)
        or "api",
        source_id=v.identifier(data.get("source_id"), "source_id"),
        external_id=v.identifier(data.get("external_id"), "external_id"),
        parent_memory_id=v.uuid_string(data.get("parent_memory_id"), "parent_memory_id"),
        metadata=v.metadata_object(data.get("metadata")),
        tags=v.tag_list(data.get("tags")),
        importance=v.unit_float(data.get("importance"), "importance", 0.5),
        confidence=v.unit_float(data.get("confidence"), "confidence", 1.0),
        relevance=v.unit_float(data.get("relevance"), "relevance", 1.0),
        decay_rate=v.unit_float(data.get("decay_rate"), "decay_rate", 0.01),
        access_count=_count(data.get("access_count")),
        last_accessed_at=_time(data, "last_accessed_at"),
        pinned=v.boolean(data.get("pinned"), "pinned"),
        immutable=v.boolean(data.get("immutable"), "immutable"),
        status=status,
        superseded_by=v.uuid_string(data.get("superseded_by"), "superseded_by"),
        expires_at=_time(data, "expires_at"),
        pii_detected=v.boolean(data.get("pii_detected"), "pii_detected"),
        pii_fields=[str(x) for x in (data.get("pii_fields") or [])][:16],
        embedding_model=None,
        tokens_used=_count(data.get("tokens_used")),
    )
    return ImportedRow(record, vector)


def _count(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError("count fields must be non-negative integers")
    return value
