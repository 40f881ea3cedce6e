"""Clients of an Engram server: `Client` / `AsyncClient` for the native API (/v1) and the
drop-in `MemoryScopeClient` for the MemoryScope-compatible endpoint."""

from .client import (
    DEFAULT_BASE_URL,
    APIConnectionError,
    APIError,
    AsyncClient,
    Client,
    HistoryEvent,
    SaveResult,
)
from .memoryscope import MemoryScopeClient, MemoryScopeMemory

__all__ = [
    "DEFAULT_BASE_URL",
    "APIConnectionError",
    "APIError",
    "AsyncClient",
    "Client",
    "HistoryEvent",
    "MemoryScopeClient",
    "MemoryScopeMemory",
    "SaveResult",
]
