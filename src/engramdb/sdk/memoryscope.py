"""A drop-in for MemoryScope's Python client, talking to Engram's MemoryScope-compatible
endpoint (`POST /memory`, authenticated with `X-API-Key`).

    >>> from engramdb import MemoryScopeClient
    >>> client = MemoryScopeClient(api_key="eng_live_…")
    >>> memory = client.create_memory(
    ...     user_id="user123", scope="preferences", domain="food",
    ...     source="explicit_user_input", ttl_days=30,
    ...     value_json={"likes": ["pizza", "sushi"], "dislikes": ["broccoli"]})
    >>> memory.id, memory.expires_at

Errors raise the classes of `engramdb.errors` (ValidationError for 400/422, Unauthorized
for 401, …) with the server's `detail` as the message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from .client import Call, Client, parse_time

__all__ = ["MemoryScopeClient", "MemoryScopeMemory"]


@dataclass(slots=True, frozen=True)
class MemoryScopeMemory:
    """A created memory, as `POST /memory` answers it (201)."""

    id: str
    user_id: str
    scope: str
    domain: str | None
    created_at: datetime | None
    expires_at: datetime | None
    #: the whole JSON answer, for fields this class does not name
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MemoryScopeMemory:
        return cls(id=str(data["id"]), user_id=str(data.get("user_id", "")),
                   scope=str(data.get("scope", "")), domain=data.get("domain"),
                   created_at=parse_time(data.get("created_at")),
                   expires_at=parse_time(data.get("expires_at")), raw=dict(data))


class MemoryScopeClient:
    """`MemoryScopeClient(api_key=..., base_url=...)`: the API key defaults to
    MEMORYSCOPE_API_KEY, then ENGRAM_API_KEY; the URL to ENGRAM_BASE_URL, then
    http://127.0.0.1:8420. Retries and idempotency keys work as in `engramdb.Client`."""

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *,
                 timeout: float = 30.0, max_retries: int = 3,
                 transport: httpx.BaseTransport | None = None) -> None:
        key = api_key if api_key is not None else (
            os.environ.get("MEMORYSCOPE_API_KEY") or os.environ.get("ENGRAM_API_KEY"))
        self._client = Client(base_url, api_key="", timeout=timeout, max_retries=max_retries,
                              headers={"X-API-Key": key} if key else None,
                              transport=transport)
        self.api_key = key
        self.base_url = self._client.base_url

    def create_memory(self, user_id: str, scope: str, domain: str | None = None,
                      source: str = "explicit_user_input", ttl_days: int | float | None = None,
                      value_json: Any = None) -> MemoryScopeMemory:
        """Create a memory; returns it with `.id` and `.expires_at` (None without a TTL)."""
        sent = {"user_id": user_id, "scope": scope, "domain": domain, "source": source,
                "ttl_days": ttl_days, "value_json": value_json}
        # unset (None) is left out: the server names a missing required field
        body = {k: v for k, v in sent.items() if v is not None}
        result: MemoryScopeMemory = self._client._send(
            Call("POST", "/memory", MemoryScopeMemory.from_json, json=body))
        return result

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> MemoryScopeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
