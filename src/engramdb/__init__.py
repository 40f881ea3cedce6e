"""Engram: long-term memory for AI agents, embedded or served."""

import os as _os

# Exact vector search is one small matrix-vector product per query: BLAS threads only add
# contention with the embedding thread (largest-user search under load: 43-58 ms with the
# default threads, 29-34 ms with one). Must be set before numpy is first imported.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from .api import Engram
from .clock import Clock, FrozenClock, SystemClock
from .engine.service import DuplicateCheck, MemoryService, SearchQuery
from .engine.validation import NewMemory
from .errors import (
    Conflict,
    Duplicate,
    EngramError,
    Forbidden,
    NotFound,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
    ValidationError,
)
from .models import (
    ContentType,
    MemoryNature,
    MemoryRecord,
    MemoryType,
    Page,
    SaveResult,
    SaveStatus,
    Scope,
    SearchHit,
    Status,
    Tier,
)
from .sdk import AsyncClient, Client, MemoryScopeClient
from .settings import Settings

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "Clock",
    "Conflict",
    "ContentType",
    "Duplicate",
    "DuplicateCheck",
    "Engram",
    "EngramError",
    "Forbidden",
    "FrozenClock",
    "MemoryNature",
    "MemoryRecord",
    "MemoryScopeClient",
    "MemoryService",
    "MemoryType",
    "NewMemory",
    "NotFound",
    "Page",
    "QuotaExceeded",
    "RateLimited",
    "SaveResult",
    "SaveStatus",
    "Scope",
    "SearchHit",
    "SearchQuery",
    "Settings",
    "Status",
    "SystemClock",
    "Tier",
    "Unauthorized",
    "ValidationError",
    "__version__",
]
