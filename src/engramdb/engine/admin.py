"""Tenants, API keys, plan limits and rate limits: the rules every face shares.

Keys are 32 random bytes, shown once as `eng_live_<base62>`, stored only as their sha256 (a key
has 190 bits of entropy, so a plain hash is as strong as a slow one and costs microseconds per
request). A key belongs to one tenant and carries scopes.
"""

from __future__ import annotations

import builtins
import hashlib
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass, replace

from ..clock import Clock, SystemClock
from ..errors import Forbidden, NotFound, RateLimited, Unauthorized, ValidationError
from ..ids import new_id
from ..models import ApiKey, KeyScope, Tenant, TenantStatus
from ..storage.base import Store

KEY_PREFIX = "eng_live_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_KEY_CHARS = 200


def generate_key() -> str:
    n = int.from_bytes(secrets.token_bytes(32), "big")
    chars = []
    while n:
        n, r = divmod(n, 62)
        chars.append(_ALPHABET[r])
    return KEY_PREFIX + "".join(reversed(chars)).rjust(43, "0")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant and the key (with its scopes)."""

    tenant: Tenant
    key: ApiKey

    def require(self, scope: KeyScope) -> None:
        scopes = set(self.key.scopes)
        if KeyScope.ADMIN.value in scopes:
            return
        if scope is KeyScope.READ and KeyScope.WRITE.value in scopes:
            return  # write implies read
        if scope.value not in scopes:
            raise Forbidden(f"this API key lacks the scope {scope.value}", field="scope")


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: str  # shown once
    record: ApiKey


class TokenBucket:
    """Per-key request budget: `rate` per minute, bursts up to `rate`."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key_id: str, per_minute: int) -> None:
        if per_minute <= 0:
            return
        now = time.monotonic()
        refill = per_minute / 60.0
        with self._lock:
            tokens, last = self._state.get(key_id, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - last) * refill)
            if tokens < 1.0:
                self._state[key_id] = (tokens, now)
                wait = (1.0 - tokens) / refill
                raise RateLimited(
                    f"rate limit of {per_minute} requests per minute exceeded; "
                    f"retry after {math.ceil(wait)} s",
                    retry_after=wait,
                )
            self._state[key_id] = (tokens - 1.0, now)


class AdminService:
    def __init__(self, store: Store, clock: Clock | None = None,
                 default_rate_limit: int = 600) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.default_rate_limit = default_rate_limit
        self.buckets = TokenBucket()
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._cache_lock = threading.Lock()

    # -- tenants -------------------------------------------------------------------------

    def create_tenant(self, tenant_id: str, name: str | None = None,
                      memory_limit: int | None = None) -> Tenant:
        if not isinstance(tenant_id, str) or not _TENANT_ID.match(tenant_id):
            raise ValidationError(
                "tenant_id: 1..64 characters of letters, digits, '_', '.', '-', "
                "starting with a letter or digit", field="tenant_id")
        _check_limit(memory_limit)
        if self.store.get_tenant(tenant_id) is not None:
            raise ValidationError(f"tenant_id: tenant {tenant_id} already exists",
                                  field="tenant_id")
        tenant = Tenant(id=tenant_id, name=(name or tenant_id)[:255],
                        created_at=self.clock.now(), memory_limit=memory_limit)
        self.store.put_tenant(tenant)
        return tenant

    def get_tenant(self, tenant_id: str) -> Tenant:
        tenant = self.store.get_tenant(tenant_id)
        if tenant is None:
            raise NotFound(f"tenant {tenant_id} not found", field="tenant_id")
        return tenant

    def update_tenant(self, tenant_id: str, *, status: str | None = None,
                      memory_limit: int | bool | None = False, name: str | None = None) -> Tenant:
        """Change a tenant; `memory_limit=None` removes the limit, False leaves it."""
        tenant = self.get_tenant(tenant_id)
        if status is not None:
            try:
                tenant.status = TenantStatus(status)
            except ValueError:
                raise ValidationError("status: must be active or suspended",
                                      field="status") from None
        if memory_limit is not False:
            limit = None if memory_limit is None else int(memory_limit)
            _check_limit(limit)
            tenant.memory_limit = limit
        if name is not None:
            tenant.name = name[:255]
        self.store.put_tenant(tenant)
        self._forget_cache()
        return tenant

    def list_tenants(self) -> builtins.list[Tenant]:
        return self.store.list_tenants()

    # -- keys ----------------------------------------------------------------------------

    def create_key(self, tenant_id: str, name: str = "default",
                   scopes: builtins.list[str] | None = None,
                   rate_limit: int | None = None) -> CreatedKey:
        self.get_tenant(tenant_id)
        chosen = scopes or [KeyScope.READ.value, KeyScope.WRITE.value]
        valid = {s.value for s in KeyScope}
        for s in chosen:
            if s not in valid:
                raise ValidationError(f"scopes: unknown scope {s!r} (use "
                                      f"{', '.join(sorted(valid))})", field="scopes")
        if rate_limit is not None and (not isinstance(rate_limit, int) or rate_limit < 0
                                       or rate_limit > 1_000_000):
            raise ValidationError("rate_limit: must be an integer 0..1000000 per minute",
                                  field="rate_limit")
        key = generate_key()
        record = ApiKey(id=new_id(), tenant_id=tenant_id, name=name[:100],
                        prefix=key[: len(KEY_PREFIX) + 6], key_hash=hash_key(key),
                        scopes=sorted(set(chosen)), created_at=self.clock.now(),
                        rate_limit=rate_limit)
        self.store.put_key(record)
        return CreatedKey(key, record)

    def list_keys(self, tenant_id: str | None = None) -> builtins.list[ApiKey]:
        return self.store.list_keys(tenant_id)

    def revoke_key(self, key_id: str, tenant_id: str | None = None) -> ApiKey:
        for key in self.store.list_keys(tenant_id):
            if key.id == key_id or key.prefix == key_id:
                if key.revoked_at is None:
                    key = replace(key, revoked_at=self.clock.now())
                    self.store.put_key(key)
                self._forget_cache()
                return key
        raise NotFound(f"API key {key_id} not found", field="key_id")

    def has_keys(self) -> bool:
        return any(k.revoked_at is None for k in self.store.list_keys())

    def bootstrap(self) -> CreatedKey | None:
        """On first start: a default tenant and an admin key, returned once to be shown.
        One write section, so that of several processes starting on a new database
        (`engram serve --workers N`) exactly one creates (and prints) the key."""
        with self.store.atomic("default", None):
            if self.has_keys():
                return None
            if self.store.get_tenant("default") is None:
                self.create_tenant("default", "Default tenant")
            return self.create_key("default", "bootstrap admin", [KeyScope.ADMIN.value])

    # -- requests ------------------------------------------------------------------------

    def cached_principal(self, presented: str | None) -> Principal | None:
        """The principal for a key seen in the last 5 s, without touching the store (so an
        async caller may call it on its event loop); None when the store must be asked.
        Raises Unauthorized / Forbidden as `authenticate` does."""
        digest = self._digest(presented)
        with self._cache_lock:
            hit = self._cache.get(digest)
        if hit is None or time.monotonic() - hit[0] >= 5.0:
            return None
        return self._admitted(hit[1])

    def authenticate(self, presented: str | None) -> Principal:
        """The principal for a presented key, or Unauthorized / Forbidden (suspended)."""
        principal = self.cached_principal(presented)
        if principal is not None:
            return principal
        digest = self._digest(presented)
        key = self.store.get_key_by_hash(digest)
        if key is None or key.revoked_at is not None:
            raise Unauthorized("invalid API key")
        tenant = self.store.get_tenant(key.tenant_id)
        if tenant is None:
            raise Unauthorized("invalid API key")
        principal = Principal(tenant, key)
        with self._cache_lock:
            self._cache[digest] = (time.monotonic(), principal)
        return self._admitted(principal)

    @staticmethod
    def _digest(presented: str | None) -> str:
        if not presented:
            raise Unauthorized("missing API key (Authorization: Bearer <key> or X-API-Key)")
        if len(presented) > MAX_KEY_CHARS:
            raise Unauthorized("invalid API key")
        return hash_key(presented)

    @staticmethod
    def _admitted(principal: Principal) -> Principal:
        if principal.tenant.status is TenantStatus.SUSPENDED:
            raise Forbidden(f"tenant {principal.tenant.id} is suspended")
        return principal

    def throttle(self, principal: Principal) -> None:
        limit = principal.key.rate_limit
        self.buckets.take(principal.key.id,
                          self.default_rate_limit if limit is None else limit)

    def _forget_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 0):
        raise ValidationError("memory_limit: must be a non-negative integer or null",
                              field="memory_limit")
