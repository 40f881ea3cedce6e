"""The memory record (a superset of the five seed APIs) and the values around it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "ContentType",
    "HistoryEvent",
    "MemoryNature",
    "MemoryRecord",
    "MemoryType",
    "Page",
    "SaveResult",
    "SaveStatus",
    "Scope",
    "SearchHit",
    "Source",
    "Status",
    "Tier",
]


class Scope(StrEnum):
    """MemoryScope's six scopes."""

    PREFERENCES = "preferences"
    CONSTRAINTS = "constraints"
    COMMUNICATION = "communication"
    ACCESSIBILITY = "accessibility"
    SCHEDULE = "schedule"
    ATTENTION = "attention"


class ContentType(StrEnum):
    TEXT = "text"
    CONVERSATION = "conversation"
    DOCUMENT = "document"
    EVENT = "event"
    FACT = "fact"


class MemoryType(StrEnum):
    # MemLayer
    EPISODIC = "episodic"
    SEMANTIC = "semantic"
    SUMMARY = "summary"
    # MemContext categories
    PREFERENCE = "preference"
    FACT = "fact"
    DECISION = "decision"
    CONTEXT = "context"
    # MemoClaw
    CORRECTION = "correction"
    PROJECT = "project"
    OBSERVATION = "observation"
    GENERAL = "general"


class MemoryNature(StrEnum):
    EPISODIC = "episodic"
    SEMANTIC = "semantic"


class Tier(StrEnum):
    SHORT = "short"
    MEDIUM = "medium"
    LONG = "long"


class Status(StrEnum):
    ACTIVE = "active"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"


class Source(StrEnum):
    """Known sources; `source` itself is an open string (MemoryScope allows any)."""

    EXPLICIT_USER_INPUT = "explicit_user_input"
    INFERRED = "inferred"
    SYSTEM = "system"
    API = "api"
    MCP = "mcp"
    WEB = "web"
    OPENCLAW = "openclaw"


class SaveStatus(StrEnum):
    SAVED = "saved"
    DUPLICATE = "duplicate"
    UPDATED = "updated"
    EXTENDED = "extended"


@dataclass(slots=True)
class MemoryRecord:
    id: str
    tenant_id: str
    content: str
    integrity_hash: str
    created_at: datetime
    updated_at: datetime
    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    namespace: str = "default"
    scope: Scope | None = None
    domain: str | None = None
    value_json: Any = None
    content_type: ContentType = ContentType.TEXT
    memory_type: MemoryType = MemoryType.GENERAL
    memory_nature: MemoryNature | None = None
    tier: Tier = Tier.SHORT
    source: str = "api"
    source_id: str | None = None
    external_id: str | None = None
    parent_memory_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    importance: float = 0.5
    confidence: float = 1.0
    relevance: float = 1.0
    decay_rate: float = 0.01
    access_count: int = 0
    last_accessed_at: datetime | None = None
    pinned: bool = False
    immutable: bool = False
    status: Status = Status.ACTIVE
    superseded_by: str | None = None
    expires_at: datetime | None = None
    pii_detected: bool = False
    pii_fields: list[str] = field(default_factory=list)
    embedding_model: str | None = None
    tokens_used: int = 0

    def scope_key(self) -> tuple[str, str | None, str | None, str]:
        """The dedup scope: tenant, user, agent and namespace."""
        return (self.tenant_id, self.user_id, self.agent_id, self.namespace)


@dataclass(slots=True, frozen=True)
class SaveResult:
    """What a write did. `id` is the stored memory, or the existing one for a duplicate."""

    status: SaveStatus
    id: str
    memory: MemoryRecord
    existing_id: str | None = None
    similarity: float | None = None
    tokens_used: int = 0
    #: the memory this one superseded (status updated) or extends (status extended)
    related_id: str | None = None
    #: why the write path decided so (supersession rule or duplicate threshold)
    reason: str | None = None
    #: PII types found in the content (also on the record)
    pii_fields: tuple[str, ...] = ()

    @property
    def duplicate(self) -> bool:
        return self.status is SaveStatus.DUPLICATE


@dataclass(slots=True, frozen=True)
class SearchHit:
    memory: MemoryRecord
    score: float
    explain: dict[str, float]


@dataclass(slots=True, frozen=True)
class Page:
    items: list[MemoryRecord]
    total: int
    limit: int
    offset: int

    @property
    def has_more(self) -> bool:
        return self.offset + len(self.items) < self.total


@dataclass(slots=True, frozen=True)
class HistoryEvent:
    id: str
    memory_id: str
    tenant_id: str
    event: str  # create | update | delete | supersede | access_tier | expire
    at: datetime
    actor: str | None
    changes: dict[str, Any]


class TenantStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class KeyScope(StrEnum):
    READ = "memories:read"
    WRITE = "memories:write"
    ADMIN = "admin"


@dataclass(slots=True)
class Tenant:
    id: str
    name: str
    created_at: datetime
    status: TenantStatus = TenantStatus.ACTIVE
    #: most active memories this tenant may hold; None = unlimited
    memory_limit: int | None = None


@dataclass(slots=True)
class ApiKey:
    """A stored key: never the key itself, only its sha256 and a short prefix to recognise it."""

    id: str
    tenant_id: str
    name: str
    prefix: str
    key_hash: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    #: requests per minute; None = the server default
    rate_limit: int | None = None


@dataclass(slots=True, frozen=True)
class IdempotentResponse:
    tenant_id: str
    key: str
    request_hash: str
    status_code: int
    body: bytes
    created_at: datetime


@dataclass(slots=True, frozen=True)
class Relation:
    """`from_id` supersedes or extends `to_id`."""

    tenant_id: str
    from_id: str
    to_id: str
    kind: str  # supersedes | extends
    created_at: datetime


@dataclass(slots=True, frozen=True)
class AccessUpdate:
    """Reads of one memory since the last flush, and the lifecycle values they led to."""

    id: str
    count: int
    last_accessed_at: datetime
    relevance: float
    decay_rate: float
    tier: Tier
