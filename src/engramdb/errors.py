"""The one error hierarchy of Engram. Every face maps it to its own wire format.

    EngramError
     ├── ValidationError     bad input; names the field and the limit      (400/422)
     ├── NotFound            no such memory in this tenant                 (404)
     ├── Duplicate           the write would store a duplicate             (409)
     ├── Conflict            the memory is immutable / state conflict      (409)
     ├── QuotaExceeded       plan limit reached                            (402)
     ├── Forbidden           suspended tenant or missing scope             (403)
     ├── Unauthorized        missing or bad credentials                    (401)
     ├── RateLimited         too many requests; carries retry_after        (429)
     └── StoreError          the storage layer failed or refused           (500)
          └── EmbeddingMismatch  vectors of another model/dimension        (500)
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "Duplicate",
    "EmbeddingMismatch",
    "EngramError",
    "Forbidden",
    "NotFound",
    "QuotaExceeded",
    "RateLimited",
    "StoreError",
    "Unauthorized",
    "ValidationError",
]


class EngramError(Exception):
    """Base of every error Engram raises on purpose."""

    code = "ERROR"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class ValidationError(EngramError):
    code = "VALIDATION_ERROR"


class NotFound(EngramError):
    code = "NOT_FOUND"


class Duplicate(EngramError):
    code = "DUPLICATE"

    def __init__(self, message: str, *, existing_id: str, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.existing_id = existing_id


class Conflict(EngramError):
    code = "CONFLICT"


class QuotaExceeded(EngramError):
    code = "QUOTA_EXCEEDED"


class Forbidden(EngramError):
    code = "FORBIDDEN"


class Unauthorized(EngramError):
    code = "UNAUTHORIZED"


class RateLimited(EngramError):
    code = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreError(EngramError):
    code = "STORE_ERROR"


class EmbeddingMismatch(StoreError):
    code = "EMBEDDING_MISMATCH"
