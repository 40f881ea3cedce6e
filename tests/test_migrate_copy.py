"""copy_store: a populated SQLite database goes to PostgreSQL and back, and nothing changes.

384-d random unit vectors stand in for embeddings (the model is not needed here)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg  # noqa: F401  (the test extra installs it)
import pytest

from engramdb.errors import EmbeddingMismatch, StoreError
from engramdb.models import (
    AccessUpdate,
    ApiKey,
    ContentType,
    HistoryEvent,
    MemoryNature,
    MemoryRecord,
    MemoryType,
    Relation,
    Scope,
    Status,
    Tenant,
    TenantStatus,
    Tier,
)
from engramdb.storage.base import Filters, Store
from engramdb.storage.copy import CopyMismatch, copy_store, fingerprints
from engramdb.storage.postgres import PostgresStore
from engramdb.storage.sqlite import SQLiteStore

DIM = 384
MODEL = "fake-minilm"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=40)


def unit(seed: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


class Writer:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.n = 0

    def _next(self) -> int:
        self.n += 1
        return self.n

    def event(self, rec: MemoryRecord, kind: str, changes: dict[str, Any]) -> HistoryEvent:
        n = self._next()
        return HistoryEvent(id=f"ev-{n:05d}", memory_id=rec.id, tenant_id=rec.tenant_id,
                            event=kind, at=T0 + timedelta(minutes=n), actor=f"actor-{n % 3}",
                            changes=changes)

    def add(self, **kw: Any) -> MemoryRecord:
        n = self._next()
        at = T0 + timedelta(hours=n, microseconds=n * 7)
        base: dict[str, Any] = {
            "id": f"0190a000-0000-7000-8000-{n:012d}", "tenant_id": "acme",
            "user_id": f"user-{n % 5}", "content": f"memory {n} about apples and topic{n % 7}",
            "integrity_hash": f"sha-{n}", "created_at": at, "updated_at": at,
            "embedding_model": MODEL,
        }
        base.update(kw)
        rec = MemoryRecord(**base)
        self.store.insert(rec, unit(n), self.event(rec, "create", {"content": rec.content}))
        return rec


def populate(store: Store) -> None:
    w = Writer(store)
    store.put_tenant(Tenant(id="acme", name="Acme Ltd", created_at=T0, memory_limit=1000))
    store.put_tenant(Tenant(id="beta", name="Beta ☕", created_at=T0 + timedelta(days=1),
                            status=TenantStatus.SUSPENDED))
    store.put_key(ApiKey(id="k1", tenant_id="acme", name="ci", prefix="eng_live_ab",
                         key_hash="a" * 64, scopes=["memories:read", "memories:write"],
                         created_at=T0, last_used_at=T0 + timedelta(days=2), rate_limit=60))
    store.put_key(ApiKey(id="k2", tenant_id="beta", name="old", prefix="eng_live_cd",
                         key_hash="b" * 64, scopes=["admin"], created_at=T0,
                         revoked_at=T0 + timedelta(days=3)))
    recs = [w.add() for _ in range(40)]
    recs += [w.add(tenant_id="beta", user_id=None) for _ in range(5)]
    recs += [w.add(tenant_id="default", user_id="u", agent_id="a", session_id="s",
                   namespace="ns")]
    # every field set, unicode and JSON everywhere
    full = w.add(
        user_id="user-ü", agent_id="agent-1", session_id="sess-1", namespace="work",
        scope=Scope.SCHEDULE, domain="calendar",
        value_json={"days": ["mon", "tue"], "nested": {"n": 1.5, "none": None}},
        content="Meetings only on Monday mornings ☕ naïve", content_type=ContentType.EVENT,
        memory_type=MemoryType.DECISION, memory_nature=MemoryNature.SEMANTIC, tier=Tier.LONG,
        source="web", source_id="src-9", external_id="ext-9", parent_memory_id=recs[0].id,
        metadata={"z": 1, "a": [1, "two", {"three": 3.25}], "ünï": "cödé", "nil": None,
                  "big": 12345678901234567890, "f": 1e-7},
        tags=["calendar", "work life", "ü"], importance=0.7, confidence=0.8, relevance=0.9,
        decay_rate=0.02, access_count=5, last_accessed_at=T0 + timedelta(days=3),
        pinned=True, immutable=True, pii_detected=True, pii_fields=["email", "phone"],
        expires_at=NOW + timedelta(days=365), tokens_used=17,
    )
    # equal timestamps: the order of a page must survive the copy too
    ties = [w.add(created_at=T0, updated_at=T0, user_id="tie") for _ in range(4)]
    # lifecycle: updates, supersession, expiry, relations, access, deletes
    old = recs[1]
    new = w.add(user_id=old.user_id, content="a newer version of memory two")
    sup = replace(old, status=Status.SUPERSEDED, superseded_by=new.id,
                  updated_at=T0 + timedelta(days=5))
    store.update(sup, None, w.event(sup, "supersede", {"status": "superseded"}))
    store.add_relation(Relation("acme", new.id, old.id, "supersedes", T0 + timedelta(days=5)))
    store.add_relation(Relation("acme", recs[2].id, recs[3].id, "extends", T0))
    edited = replace(recs[4], content="edited content with pears", tags=["x"],
                     updated_at=T0 + timedelta(days=6))
    store.update(edited, unit(9999), w.event(edited, "update", {"content": "edited"}))
    gone = replace(recs[5], expires_at=T0 + timedelta(days=1))
    store.update(gone, None, w.event(gone, "update", {"expires_at": "set"}))
    store.update(replace(recs[6], status=Status.EXPIRED), None,
                 w.event(recs[6], "expire", {"status": "expired"}))
    store.apply_access("acme", [AccessUpdate(recs[7].id, 3, T0 + timedelta(days=7), 0.95,
                                             0.01, Tier.MEDIUM)],
                       [w.event(recs[7], "access_tier", {"tier": "medium"})])
    for doomed in (recs[8], ties[0]):
        store.delete(doomed.tenant_id, doomed.id, w.event(doomed, "delete", {}))
    assert full.id


def open_sqlite(path: Path) -> SQLiteStore:
    s = SQLiteStore(path)
    s.migrate()
    return s


def snapshot(store: Store) -> dict[str, Any]:
    """Everything a caller can read back, in a comparable form."""
    out: dict[str, Any] = {}
    out["tenants"] = store.list_tenants()
    out["keys"] = sorted(store.list_keys(), key=lambda k: (k.tenant_id, k.id))
    out["key_lookup"] = store.get_key_by_hash("a" * 64)
    mems = sorted(store.iter_all(), key=lambda m: (m.record.tenant_id, m.record.id))
    out["records"] = [m.record for m in mems]
    out["vectors"] = [m.vector.tobytes() if m.vector is not None else None for m in mems]
    by_id = {m.record.id: m for m in mems}
    out["history"] = {}
    out["relations"] = {}
    for tenant in ("acme", "beta", "default"):
        for mid in sorted({e.memory_id for e in store.iter_history(tenant)}):
            out["history"][(tenant, mid)] = store.history(tenant, mid)
            out["relations"][(tenant, mid)] = store.relations(tenant, mid)
        for f in (Filters(tenant_id=tenant, now=NOW),
                  Filters(tenant_id=tenant, now=NOW, include_superseded=True),
                  Filters(tenant_id=tenant, now=NOW, user_id="tie"),
                  Filters(tenant_id=tenant, now=NOW, user_id="user-1", include_expired=True)):
            out[("list", tenant, f)] = store.list(f, 100, 0)
            out[("list-page", tenant, f)] = store.list(f, 2, 1)
            q = unit(4242)
            out[("nearest", tenant, f)] = [h[0] for h in store.nearest(f, q, 10)]
            out[("keyword", tenant, f)] = [h[0] for h in store.keyword_search(f, "apples", 50)]
            out[("count", tenant)] = store.count_active(tenant, NOW)
    out["find_by_hash"] = store.find_by_hash("acme", "user-ü", "agent-1", "work",
                                             by_id[out["records"][0].id].record.integrity_hash)
    st = store.stats()
    out["stats"] = (st["memories"], st["by_status"], st["history_events"],
                    st["embedding_model"], st["embedding_dim"])
    return out


def test_sqlite_to_postgres_and_back(tmp_path: Path, pg_cluster: Any) -> None:
    src = open_sqlite(tmp_path / "src.db")
    src.bind_embedding(MODEL, DIM)
    populate(src)
    expected = snapshot(src)
    assert expected["stats"][0] == 50 and len(expected["history"]) == 52

    pg = PostgresStore(pg_cluster.new_url())
    back = open_sqlite(tmp_path / "back.db")
    try:
        calls: list[tuple[int, int, str]] = []
        report = copy_store(src, pg, progress=lambda d, t, p: calls.append((d, t, p)),
                            batch_size=7)
        assert (report.tenants, report.keys, report.memories, report.relations,
                report.history_events) == (2, 2, 50, 2, expected["stats"][2])
        assert set(report.fingerprints) == {"acme", "beta", "default"}
        assert report.fingerprints["acme"].memories == 44
        phases = [p for _, _, p in calls]
        assert [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p] == [
            "tenants", "keys", "memories", "relations", "history", "verify"]
        assert all(d <= t for d, t, _ in calls)
        assert calls[-1][0] == calls[-1][2] or calls[-1][0] == calls[-1][1]
        with pg._conn() as conn:  # bulk_load dropped the HNSW index for the load and rebuilt it
            assert conn.execute("SELECT to_regclass('ix_memories_embedding')").fetchone() == (
                "ix_memories_embedding",)
        got = snapshot(pg)
        for key in expected:
            if key[0] == "keyword":  # the same hits; each backend ranks by its own BM25
                assert sorted(got[key]) == sorted(expected[key]), key
            else:
                assert got[key] == expected[key], key

        # and back into a new SQLite file
        report2 = copy_store(pg, back)
        assert report2.fingerprints == report.fingerprints
        again = snapshot(back)
        for key in expected:
            assert again[key] == expected[key], key
    finally:
        for s in (src, pg, back):
            s.close()


def test_copy_refuses_a_destination_with_memories(tmp_path: Path, pg_cluster: Any) -> None:
    src = open_sqlite(tmp_path / "a.db")
    src.bind_embedding(MODEL, DIM)
    Writer(src).add()
    dst = PostgresStore(pg_cluster.new_url())
    try:
        copy_store(src, dst)
        with pytest.raises(StoreError, match="empty database"):
            copy_store(src, dst)
    finally:
        src.close()
        dst.close()


def test_copy_refuses_another_embedding_model(tmp_path: Path) -> None:
    src = open_sqlite(tmp_path / "a.db")
    src.bind_embedding(MODEL, DIM)
    dst = open_sqlite(tmp_path / "b.db")
    dst.bind_embedding("other-model", 768)
    try:
        with pytest.raises(EmbeddingMismatch):
            copy_store(src, dst)
    finally:
        src.close()
        dst.close()


def test_an_empty_store_copies_to_an_empty_store(tmp_path: Path) -> None:
    src, dst = open_sqlite(tmp_path / "a.db"), open_sqlite(tmp_path / "b.db")
    try:
        report = copy_store(src, dst)
        assert (report.memories, report.history_events, report.fingerprints) == (0, 0, {})
        assert dst.embedding_binding() is None
    finally:
        src.close()
        dst.close()


def test_fingerprints_see_a_changed_field_or_vector(tmp_path: Path) -> None:
    src = open_sqlite(tmp_path / "a.db")
    src.bind_embedding(MODEL, DIM)
    dst = open_sqlite(tmp_path / "b.db")
    try:
        populate(src)
        copy_store(src, dst)
        rec = next(m.record for m in dst.iter_all("acme") if m.record.status is Status.ACTIVE)
        changed = replace(rec, importance=rec.importance + 0.01)
        dst.update(changed, None, Writer(dst).event(changed, "update", {}))
        before, after = fingerprints(src), fingerprints(dst)
        assert before["beta"] == after["beta"]
        assert before["acme"].memories_digest != after["acme"].memories_digest
        assert before["acme"].history_events + 1 == after["acme"].history_events
        dst.update(rec, unit(77777), Writer(dst).event(rec, "update", {}))
        assert fingerprints(dst)["acme"].memories_digest != before["acme"].memories_digest
    finally:
        src.close()
        dst.close()


def test_copy_mismatch_is_a_store_error() -> None:
    assert issubclass(CopyMismatch, StoreError)


def test_engram_migrate_command_copies_and_verifies(tmp_path: Path, pg_cluster: Any) -> None:
    """`engram migrate --from sqlite:///… --to postgresql://…` on a populated database."""
    from typer.testing import CliRunner

    from engramdb.cli import app

    src_path = tmp_path / "src.db"
    src = SQLiteStore(src_path)
    src.migrate()
    src.bind_embedding(MODEL, DIM)
    populate(src)
    expected = src.stats()["memories"]
    src.close()
    url = pg_cluster.new_url()
    result = CliRunner().invoke(app, ["migrate", "--from", f"sqlite:///{src_path}",
                                      "--to", url, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["memories"] == expected and summary["verified"] is True
    dst = PostgresStore(url)
    try:
        assert dst.stats()["memories"] == expected
    finally:
        dst.close()
    again = CliRunner().invoke(app, ["migrate", "--from", f"sqlite:///{src_path}", "--to", url])
    assert again.exit_code == 1 and "error" in again.output  # the target is not empty
