"""Validation of everything a caller can send. Each failure raises ValidationError naming the
field and the limit; nothing is written before validation has passed."""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from ..errors import ValidationError
from ..models import ContentType, MemoryNature, MemoryType, Scope, Tier
from .normalize import canonical_json, content_from_value, normalize_content, normalize_value

MAX_CONTENT_CHARS = 10_000
MAX_ID_CHARS = 255
MAX_METADATA_BYTES = 4096
MAX_METADATA_KEYS = 20
MAX_METADATA_DEPTH = 3
MAX_VALUE_JSON_BYTES = 16_384
MAX_VALUE_JSON_DEPTH = 6
MAX_TAGS = 50
MAX_TAG_CHARS = 100
MAX_SOURCE_CHARS = 100
MIN_TTL_DAYS, MAX_TTL_DAYS = 1, 3650

E = TypeVar("E", bound=StrEnum)


@dataclass(slots=True)
class NewMemory:
    """What a caller may send to create a memory (all faces map onto this)."""

    content: str | None = None
    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    namespace: str | None = None
    scope: str | None = None
    domain: str | None = None
    value_json: Any = None
    content_type: str | None = None
    memory_type: str | None = None
    memory_nature: str | None = None
    tier: str | None = None
    source: str | None = None
    source_id: str | None = None
    external_id: str | None = None
    parent_memory_id: str | None = None
    metadata: Any = None
    tags: Any = None
    importance: Any = None
    confidence: Any = None
    pinned: Any = None
    immutable: Any = None
    ttl_days: Any = None
    expires_at: Any = None


@dataclass(slots=True)
class Draft:
    """A validated, normalised NewMemory: safe to hash, embed and store."""

    content: str
    user_id: str | None
    agent_id: str | None
    session_id: str | None
    namespace: str
    scope: Scope | None
    domain: str | None
    value_json: Any
    content_type: ContentType
    memory_type: MemoryType
    memory_nature: MemoryNature | None
    tier: Tier
    source: str
    source_id: str | None
    external_id: str | None
    parent_memory_id: str | None
    metadata: dict[str, Any]
    tags: list[str]
    importance: float
    confidence: float
    pinned: bool
    immutable: bool
    expires_at: datetime | None
    #: set by the core only: a historical time (conversation turns) instead of now
    created_at: datetime | None = None
    #: set by the core only: False for conversation turns, where a repeated "thanks!" in
    #: another session is another event, not a duplicate
    near_dedup: bool = True
    #: set by the core's PII step
    pii_fields: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def fail(name: str, message: str) -> ValidationError:
    return ValidationError(f"{name}: {message}", field=name)


def enum_value(cls: type[E], value: Any, name: str) -> E:
    if isinstance(value, cls):
        return value
    if not isinstance(value, str):
        raise fail(name, f"must be a string, one of {', '.join(m.value for m in cls)}")
    try:
        return cls(value.strip().lower())
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise fail(name, f"must be one of {allowed} (got {value[:50]!r})") from None


def optional_enum(cls: type[E], value: Any, name: str) -> E | None:
    return None if value is None else enum_value(cls, value, name)


def identifier(value: Any, name: str, *, max_chars: int = MAX_ID_CHARS) -> str | None:
    """An id-like string (user_id, agent_id, …): trimmed, 1..max_chars, no control chars."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise fail(name, "must be a string")
    value = value.strip()
    if not value:
        raise fail(name, "must not be empty")
    if len(value) > max_chars:
        raise fail(name, f"must be at most {max_chars} characters (got {len(value)})")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise fail(name, "must not contain control characters")
    return value


def content_text(value: Any, name: str = "content", *, max_chars: int = MAX_CONTENT_CHARS) -> str:
    if not isinstance(value, str):
        raise fail(name, "must be a string")
    text = normalize_content(value)
    if not text:
        raise fail(name, f"must be 1..{max_chars} characters after stripping (got 0)")
    if len(text) > max_chars:
        raise fail(
            name, f"must be 1..{max_chars} characters after stripping (got {len(text)})"
        )
    return text


def unit_float(value: Any, name: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(name, "must be a number between 0 and 1")
    f = float(value)
    if not math.isfinite(f) or not 0.0 <= f <= 1.0:
        raise fail(name, f"must be between 0 and 1 (got {value})")
    return f


def boolean(value: Any, name: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise fail(name, "must be true or false")
    return value


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _json_size(value: Any, name: str) -> int:
    try:
        return len(canonical_json(value).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise fail(name, f"must be JSON ({exc})") from None


def metadata_object(value: Any, name: str = "metadata") -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(name, "must be a JSON object")
    if len(value) > MAX_METADATA_KEYS:
        raise fail(name, f"must have at most {MAX_METADATA_KEYS} keys (got {len(value)})")
    if any(not isinstance(k, str) for k in value):
        raise fail(name, "keys must be strings")
    depth = _depth(value)
    if depth > MAX_METADATA_DEPTH:
        raise fail(name, f"must be at most {MAX_METADATA_DEPTH} levels deep (got {depth})")
    size = _json_size(value, name)
    if size > MAX_METADATA_BYTES:
        raise fail(name, f"must be at most {MAX_METADATA_BYTES} bytes as JSON (got {size})")
    # A round trip drops non-JSON floats (NaN, inf), which JSON cannot carry.
    try:
        clean: dict[str, Any] = json.loads(json.dumps(value, allow_nan=False))
    except ValueError:
        raise fail(name, "must not contain NaN or Infinity") from None
    return clean


def tag_list(value: Any, name: str = "tags") -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise fail(name, "must be a list of strings")
    if len(value) > MAX_TAGS:
        raise fail(name, f"must have at most {MAX_TAGS} tags (got {len(value)})")
    out: list[str] = []
    for i, t in enumerate(value):
        tag = identifier(t, f"{name}[{i}]", max_chars=MAX_TAG_CHARS)
        if tag is not None and tag not in out:
            out.append(tag)
    return out


def uuid_string(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise fail(name, "must be a UUID string")
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise fail(name, f"must be a UUID (got {value[:50]!r})") from None


def timestamp(value: Any, name: str) -> datetime:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise fail(name, f"must be an ISO 8601 date-time (got {value[:50]!r})") from None
    else:
        raise fail(name, "must be an ISO 8601 date-time string")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # naive times are taken as UTC
    return dt.astimezone(UTC)


def expiry(ttl_days: Any, expires_at: Any, now: datetime) -> datetime | None:
    if ttl_days is not None and expires_at is not None:
        raise fail("ttl_days", "give either ttl_days or expires_at, not both")
    if ttl_days is not None:
        if isinstance(ttl_days, bool) or not isinstance(ttl_days, int | float):
            raise fail("ttl_days", f"must be an integer {MIN_TTL_DAYS}..{MAX_TTL_DAYS}")
        if isinstance(ttl_days, float) and not ttl_days.is_integer():
            raise fail("ttl_days", f"must be an integer {MIN_TTL_DAYS}..{MAX_TTL_DAYS}")
        if not MIN_TTL_DAYS <= ttl_days <= MAX_TTL_DAYS:
            raise fail(
                "ttl_days", f"must be between {MIN_TTL_DAYS} and {MAX_TTL_DAYS} (got {ttl_days})"
            )
        return now + timedelta(days=int(ttl_days))
    if expires_at is not None:
        when = timestamp(expires_at, "expires_at")
        if when <= now:
            raise fail("expires_at", "must lie in the future")
        return when
    return None


def validate_new(m: NewMemory, now: datetime) -> Draft:
    """Validate and normalise a NewMemory. Field by field, in a fixed order, so the first
    problem reported is predictable."""
    scope = optional_enum(Scope, m.scope, "scope")
    domain = identifier(m.domain, "domain")
    value: Any = None
    if m.value_json is not None:
        size = _json_size(m.value_json, "value_json")
        if size > MAX_VALUE_JSON_BYTES:
            raise fail(
                "value_json", f"must be at most {MAX_VALUE_JSON_BYTES} bytes as JSON (got {size})"
            )
        depth = _depth(m.value_json)
        if depth > MAX_VALUE_JSON_DEPTH:
            raise fail(
                "value_json", f"must be at most {MAX_VALUE_JSON_DEPTH} levels deep (got {depth})"
            )
        try:
            value = normalize_value(m.value_json, scope)
        except TypeError as exc:
            raise fail("value_json", str(exc)) from None
    if m.content is None:
        if value is None:
            raise fail("content", "is required (or give value_json)")
        content = content_text(content_from_value(value, scope, domain))
    else:
        content = content_text(m.content)
    namespace = identifier(m.namespace, "namespace") or "default"
    source = identifier(m.source, "source", max_chars=MAX_SOURCE_CHARS) or "api"
    return Draft(
        content=content,
        user_id=identifier(m.user_id, "user_id"),
        agent_id=identifier(m.agent_id, "agent_id"),
        session_id=identifier(m.session_id, "session_id"),
        namespace=namespace,
        scope=scope,
        domain=domain,
        value_json=value,
        content_type=optional_enum(ContentType, m.content_type, "content_type")
        or ContentType.TEXT,
        memory_type=optional_enum(MemoryType, m.memory_type, "memory_type") or MemoryType.GENERAL,
        memory_nature=optional_enum(MemoryNature, m.memory_nature, "memory_nature"),
        tier=optional_enum(Tier, m.tier, "tier") or Tier.SHORT,
        source=source,
        source_id=identifier(m.source_id, "source_id"),
        external_id=identifier(m.external_id, "external_id"),
        parent_memory_id=uuid_string(m.parent_memory_id, "parent_memory_id"),
        metadata=metadata_object(m.metadata),
        tags=tag_list(m.tags),
        importance=unit_float(m.importance, "importance", 0.5),
        confidence=unit_float(m.confidence, "confidence", 1.0),
        pinned=boolean(m.pinned, "pinned"),
        immutable=boolean(m.immutable, "immutable"),
        expires_at=expiry(m.ttl_days, m.expires_at, now),
        # one clock reading per write: ttl_days=30 lives exactly 30 days from created_at
        created_at=now,
        # a structured value differs from its neighbour by a value, which the readable
        # text hides from the embedding ("likes pizza, sushi" vs "likes pizza"): only an
        # exact duplicate of the value is a duplicate
        near_dedup=value is None,
    )
