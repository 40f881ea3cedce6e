"""What only the PostgreSQL store promises: write sections that serialise separate processes,
exact search for a user through the scope btree, the HNSW index, concurrent migrations,
text folding for full-text search, and the same lifecycle answers as the SQLite store.

The shared behaviour of every backend is in test_store_contract.py (run against both)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg  # noqa: F401  (the test extra installs it)
import pytest

from engramdb.api import open_store
from engramdb.errors import EmbeddingMismatch, StoreError
from engramdb.models import (
    AccessUpdate,
    HistoryEvent,
    MemoryRecord,
    Relation,
    Status,
    Tier,
)
from engramdb.storage.base import Filters
from engramdb.storage.postgres import PostgresStore, fold, keyword_terms
from engramdb.storage.sqlite import SQLiteStore

DIM = 8
T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=30)


def unit(seed: int, dim: int = DIM) -> np.ndarray[Any, np.dtype[np.float32]]:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


def F(**kw: Any) -> Filters:
    kw.setdefault("tenant_id", "t1")
    kw.setdefault("now", NOW)
    return Filters(**kw)


def record(n: int, **kw: Any) -> MemoryRecord:
    base: dict[str, Any] = {
        "id": f"rec-{n:06d}", "tenant_id": "t1", "user_id": "u1", "content": f"note w{n}",
        "integrity_hash": f"hash-{n}", "created_at": T0 + timedelta(seconds=n),
        "updated_at": T0 + timedelta(seconds=n),
    }
    base.update(kw)
    return MemoryRecord(**base)


def event(rec: MemoryRecord, kind: str = "create", n: int = 0) -> HistoryEvent:
    return HistoryEvent(id=f"ev-{rec.id}-{kind}-{n}", memory_id=rec.id, tenant_id=rec.tenant_id,
                        event=kind, at=T0, actor=None, changes={})


@pytest.fixture
def pg_url(pg_cluster: Any) -> str:
    url: str = pg_cluster.new_url()
    return url


@pytest.fixture
def pg(pg_url: str) -> Any:
    s = PostgresStore(pg_url, pool_min=1, pool_max=4)
    s.migrate()
    s.bind_embedding("test-model", DIM)
    yield s
    s.close()


# -- write sections across processes ---------------------------------------------------------

RACER = textwrap.dedent("""
    import random, sys, time
    from datetime import UTC, datetime, timedelta
    import numpy as np
    from engramdb.models import HistoryEvent, MemoryRecord
    from engramdb.storage.base import Filters
    from engramdb.storage.postgres import PostgresStore

    url, me = sys.argv[1], sys.argv[2]
    store = PostgresStore(url)
    store.migrate()
    store.bind_embedding("test-model", 8)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    order = list(range(40))
    random.Random(me).shuffle(order)
    print("ready", flush=True)
    sys.stdin.readline()  # go
    saved = []
    for i in order:
        user = f"u{i % 4}"
        vec = np.random.default_rng(i).standard_normal(8).astype(np.float32)
        vec /= np.linalg.norm(vec)
        # a different hash per process: only the section's checks can catch the duplicate
        rec = MemoryRecord(id=f"m{i}-{me}", tenant_id="t1", user_id=user,
                           content=f"memory {i}", integrity_hash=f"h{i}-{me}",
                           created_at=t0, updated_at=t0)
        with store.atomic("t1", user):
            if store.find_by_hash("t1", user, None, "default", rec.integrity_hash):
                continue
            f = Filters(tenant_id="t1", now=t0, user_id=user, exact_scope=True)
            near = store.nearest(f, vec, 1)
            if near and near[0][1] >= 0.99:
                continue
            time.sleep(0.003)  # widen the window between the check and the write
            store.insert(rec, vec, HistoryEvent(id=f"e{i}-{me}", memory_id=rec.id,
                                                tenant_id="t1", event="create", at=t0,
                                                actor=me, changes={}))
            saved.append(i)
    store.close()
    print(" ".join(map(str, saved)), flush=True)
""")


def test_two_processes_racing_store_each_memory_once(pg: PostgresStore, pg_url: str,
                                                      tmp_path: Path) -> None:
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    procs = [subprocess.Popen([sys.executable, str(script), pg_url, name],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for name in ("a", "b")]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", p.stderr and p.stderr.read()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    saved = [[int(x) for x in out.split()] for out, _ in outputs]
    assert sorted(saved[0] + saved[1]) == list(range(40))  # each exactly once, by someone
    assert pg.stats()["memories"] == 40
    rows, total = pg.list(F(), 100, 0)
    assert total == 40
    assert sorted(int(r.content.split()[1]) for r in rows) == list(range(40))


def test_reads_of_other_threads_do_not_see_an_open_section(pg: PostgresStore) -> None:
    rec = record(1)
    inside, done = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def other() -> None:
        inside.wait(10)
        seen["during"] = pg.get("t1", rec.id)
        seen["near"] = pg.nearest(F(user_id="u1"), unit(1), 5)
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with pg.atomic("t1", "u1"):
        pg.insert(rec, unit(1), event(rec))
        assert pg.get("t1", rec.id) == rec  # this thread sees its own write
        inside.set()
        assert done.wait(10)
    t.join()
    assert seen == {"during": None, "near": []}
    assert pg.get("t1", rec.id) == rec


def test_a_failed_statement_inside_a_section_surfaces_as_store_error(pg: PostgresStore) -> None:
    a = record(1)
    with pg.atomic("t1", "u1"):
        pg.insert(a, unit(1), event(a))
        with pytest.raises(StoreError):
            # reactivating into a unique conflict: refused under a savepoint
            b = record(2, integrity_hash=a.integrity_hash, status=Status.SUPERSEDED)
            pg.insert(b, unit(2), event(b))
            pg.update(replace(b, status=Status.ACTIVE), None, event(b, "update"))
    assert pg.get("t1", a.id) == a
    assert pg.get("t1", "rec-000002") is not None  # the insert before the refusal committed
    assert pg.get("t1", "rec-000002").status is Status.SUPERSEDED  # type: ignore[union-attr]


def test_a_swallowed_database_error_fails_the_whole_section(pg: PostgresStore) -> None:
    a, bad = record(1), record(2, access_count=10**20)  # out of bigint range: server-side
    with pytest.raises(StoreError, match="rolled back"), pg.atomic("t1", "u1"):
        pg.insert(a, unit(1), event(a))
        with pytest.raises(StoreError):
            pg.insert(bad, unit(2), event(bad))
    assert pg.get("t1", a.id) is None
    pg.insert(a, unit(1), event(a))  # the store is not wedged
    assert pg.get("t1", a.id) == a


# -- exact search for a user, HNSW for the rest ------------------------------------------------


def _populate(store: PostgresStore, n: int, users: int, dim: int = DIM) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    weights = 1 / np.arange(1, users + 1)
    owners = rng.choice(users, size=n, p=weights / weights.sum())
    from engramdb.storage.base import StoredMemory

    vectors = {}
    batch = []
    for i in range(n):
        rec = record(i, user_id=f"u{owners[i]}", content=f"memory {i} about topic{i % 50}")
        vec = unit(100_000 + i, dim)
        vectors[rec.id] = (rec.user_id, vec)
        batch.append(StoredMemory(rec, vec))
    # as a bulk load does: build the HNSW index once at the end, not row by row
    with store._conn() as conn:
        conn.execute("DROP INDEX ix_memories_embedding")
    for i in range(0, n, 1000):
        store.insert_raw(batch[i : i + 1000], [])
    with store._conn() as conn:
        conn.execute("CREATE INDEX ix_memories_embedding ON memories "
                     "USING hnsw (embedding vector_cosine_ops)")
        conn.execute("ANALYZE memories")  # the planner needs statistics
    return vectors


def test_a_users_query_reads_the_scope_btree_and_is_exact(pg: PostgresStore) -> None:
    vectors = _populate(pg, 2000, 100)
    counts: dict[str, int] = {}
    for user, _ in vectors.values():
        counts[user] = counts.get(user, 0) + 1
    typical = sorted(counts, key=lambda u: counts[u])[len(counts) // 2]
    largest = max(counts, key=lambda u: counts[u])
    for user in (typical, largest):
        f = F(user_id=user)
        plan = pg.explain_nearest(f, unit(1), 10)
        assert "ix_memories_user" in plan or "ux_memories_hash" in plan, plan
        assert "ix_memories_embedding" not in plan, plan
        assert "Seq Scan" not in plan, plan
        q = unit(5)
        brute = sorted(((mid, float(v @ q)) for mid, (u, v) in vectors.items() if u == user),
                       key=lambda h: -h[1])[:10]
        got = pg.nearest(f, q, 10)
        assert [h[0] for h in got] == [h[0] for h in brute]  # recall 1.0
        np.testing.assert_allclose([s for _, s in got], [s for _, s in brute], atol=1e-5)


def test_hnsw_index_exists_and_serves_unfiltered_order_by(pg: PostgresStore) -> None:
    with pg._conn() as conn:
        defs = [r[0] for r in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'memories' "
            "AND schemaname = current_schema()")]
        coltype = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'memories'::regclass AND attname = 'embedding'").fetchone()
    assert any("USING hnsw (embedding vector_cosine_ops)" in d for d in defs), defs
    assert any("USING gin (tsv)" in d for d in defs), defs
    assert any("UNIQUE" in d and "WHERE (status = 'active'::text)" in d for d in defs), defs
    assert coltype == ("vector(8)",)
    _populate(pg, 500, 5)
    with pg._conn() as conn, conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT id FROM memories ORDER BY embedding <=> %b LIMIT 5", (unit(3),)))
    assert "ix_memories_embedding" in plan, plan


def test_a_large_tenant_goes_through_the_ann_index_with_good_recall(pg_url: str) -> None:
    store = PostgresStore(pg_url, ann_min_rows=100)
    store.migrate()
    store.bind_embedding("test-model", 32)
    try:
        vectors = _populate(store, 1000, 10, dim=32)
        with store._conn() as conn:
            assert store._use_ann(conn, F())
            assert not store._use_ann(conn, F(user_id="u1"))
        recalls = []
        for seed in range(10):
            q = unit(seed, 32)
            brute = sorted(vectors, key=lambda mid: -float(vectors[mid][1] @ q))[:10]
            got = store.nearest(F(), q, 10)
            assert len(got) == 10
            assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
            recalls.append(len({h[0] for h in got} & set(brute)) / 10)
        assert sum(recalls) / len(recalls) >= 0.9, recalls
        # a user's query stays exact
        q = unit(99, 32)
        brute_u = sorted((mid for mid, (u, _) in vectors.items() if u == "u3"),
                         key=lambda mid: -float(vectors[mid][1] @ q))[:5]
        assert [h[0] for h in store.nearest(F(user_id="u3"), q, 5)] == brute_u
    finally:
        store.close()


# -- schema -------------------------------------------------------------------------------------


def test_concurrent_migrations_apply_each_step_once(pg_url: str) -> None:
    stores = [PostgresStore(pg_url, pool_min=1, pool_max=2) for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def run(s: PostgresStore) -> None:
        try:
            start.wait(10)
            s.migrate()
            s.bind_embedding("test-model", DIM)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    try:
        from engramdb.storage.postgres import migrations

        with stores[0]._conn() as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM schema_migrations")]
        assert sorted(names) == sorted(n for n, _ in migrations.steps)
        stores[0].migrate()  # and again: nothing to do
        rec = record(1)
        stores[1].insert(rec, unit(1), event(rec))
        assert stores[2].get("t1", rec.id) == rec
        assert stores[3].embedding_binding() == ("test-model", DIM)
        with pytest.raises(EmbeddingMismatch):
            stores[3].bind_embedding("test-model", 16)
    finally:
        for s in stores:
            s.close()


def test_stats_and_open_store(pg: PostgresStore, pg_url: str) -> None:
    rec = record(1)
    pg.insert(rec, unit(1), event(rec))
    st = pg.stats()
    assert st["backend"] == "postgres" and st["memories"] == 1 and st["history_events"] == 1
    assert st["embedding_model"] == "test-model" and st["embedding_dim"] == DIM
    other = open_store(pg_url)
    try:
        assert isinstance(other, PostgresStore)
        other.bind_embedding("test-model", DIM)
        assert other.get("t1", rec.id) == rec
    finally:
        other.close()


def test_bad_url_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot connect"):
        PostgresStore("postgresql://nobody@/nodb?host=/nonexistent-socket-dir",
                      connect_timeout=0.5)


# -- full-text ----------------------------------------------------------------------------------


def test_fold_and_keyword_terms() -> None:
    assert fold("Naïve café in Zürich — bob@example.com, x_y 3.5!") == (
        "naive cafe in zurich bob example com x y 3 5")
    assert keyword_terms("What is the best café? the best!") == ["best", "cafe"]
    assert keyword_terms("what is it") == ["what", "is", "it"]
    assert keyword_terms("' OR 1=1; --") == ["1"]
    assert keyword_terms("") == []
    assert len(keyword_terms(" ".join(f"w{i}" for i in range(100)))) == 32


def test_keyword_search_folds_and_stems(pg: PostgresStore) -> None:
    texts = ["A naïve approach in Zürich", "Mail bob@example.com about the running shoes",
             "Café au lait every morning"]
    recs = [record(i, content=t) for i, t in enumerate(texts)]
    for i, r in enumerate(recs):
        pg.insert(r, unit(i), event(r))

    def hits(q: str) -> list[str]:
        return [h[0] for h in pg.keyword_search(F(), q, 10)]

    assert hits("naive zurich") == [recs[0].id]
    assert hits("example") == [recs[1].id]
    assert hits("run shoe") == [recs[1].id]  # stemmed on both sides
    assert hits("CAFE") == [recs[2].id]
    assert hits("the") == [recs[1].id]  # stop words are kept in the index
    assert hits("zebra") == []
    # the user's scope word moves with the row
    moved = replace(recs[2], user_id="u2", updated_at=T0 + timedelta(days=1))
    pg.update(moved, None, event(moved, "update"))
    assert [h[0] for h in pg.keyword_search(F(user_id="u2"), "cafe", 5)] == [recs[2].id]
    assert pg.keyword_search(F(user_id="u1"), "cafe", 5) == []
    assert [h[0] for h in pg.keyword_search(F(user_id="u1"), "naive", 5)] == [recs[0].id]
    assert pg.keyword_search(F(tenant_id="t2"), "naive", 5) == []


# -- lifecycle: the same answers as the SQLite store ---------------------------------------------


def test_lifecycle_methods_match_sqlite(pg: PostgresStore, tmp_path: Path) -> None:
    lite = SQLiteStore(tmp_path / "ref.db")
    lite.migrate()
    lite.bind_embedding("test-model", DIM)
    try:
        for s in (pg, lite):
            a = record(1, relevance=1.0, decay_rate=0.1, created_at=T0, updated_at=T0)
            b = record(2, relevance=1.0, decay_rate=0.1, pinned=True, created_at=T0,
                       updated_at=T0)
            c = record(3, expires_at=NOW - timedelta(days=1))
            d = record(4, expires_at=NOW - timedelta(days=2), content="old apple")
            e = record(5, relevance=0.9, decay_rate=50.0, created_at=T0, updated_at=T0)
            for i, r in enumerate((a, b, c, d, e)):
                s.insert(r, unit(i), event(r))
            s.apply_access("t1", [AccessUpdate(a.id, 3, NOW - timedelta(days=1), 0.8, 0.05,
                                               Tier.MEDIUM)],
                           [event(a, "access_tier")])
            s.apply_access("t1", [AccessUpdate(a.id, 2, NOW - timedelta(days=5), 0.7, 0.05,
                                               Tier.LONG)])
            s.add_relation(Relation("t1", a.id, b.id, "extends", T0))
            s.add_relation(Relation("t1", e.id, a.id, "supersedes", T0 + timedelta(hours=1)))
            s.add_relation(Relation("t1", e.id, a.id, "supersedes", T0))  # a no-op
        for what in (
            lambda s: s.get("t1", "rec-000001"),
            lambda s: [x.event for x in s.history("t1", "rec-000001")],
            lambda s: s.expired_ids(NOW, 10),
            lambda s: s.expired_ids(NOW, 1),
            lambda s: s.relations("t1", "rec-000001"),
            lambda s: s.relations("t1", "rec-000002"),
            lambda s: sorted(r.id for r in s.list(F(include_expired=True), 10, 0)[0]),
            lambda s: sorted(r.id for r in s.list(F(min_relevance=0.5), 10, 0)[0]),
            lambda s: sorted(r.id for r in s.list(F(min_relevance=0.5, now=T0), 10, 0)[0]),
            lambda s: sorted(h[0] for h in s.nearest(F(include_expired=True), unit(3), 10)),
            lambda s: [h[0] for h in s.keyword_search(F(include_expired=True), "apple", 5)],
            lambda s: [h[0] for h in s.keyword_search(F(), "apple", 5)],
        ):
            assert what(pg) == what(lite)
        got = pg.get("t1", "rec-000001")
        assert got is not None and got.access_count == 5 and got.tier is Tier.LONG
        assert got.last_accessed_at == NOW - timedelta(days=1)
        pg.delete("t1", "rec-000001", event(record(1), "delete"))
        lite.delete("t1", "rec-000001", event(record(1), "delete"))
        assert pg.relations("t1", "rec-000002") == lite.relations("t1", "rec-000002") == []
    finally:
        lite.close()


def test_json_is_kept_as_written(pg: PostgresStore) -> None:
    meta = {"z": 1, "a": 1e300, "b": -0.0, "nul": "a\x00b", "big": 10**30, "f": 2.50}
    rec = record(1, metadata=meta, value_json={"y": [3, 2, 1], "x": None})
    pg.insert(rec, unit(1), event(rec))
    got = pg.get("t1", rec.id)
    assert got is not None
    assert json.dumps(got.metadata) == json.dumps(meta)  # same keys, order and numbers
    assert json.dumps(got.value_json) == json.dumps(rec.value_json)
    assert [r.id for r in pg.list(F(metadata=(("z", 1.0),)), 5, 0)[0]] == [rec.id]


def test_hnsw_build_memory_fits_the_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bulk load's index build asks for the whole graph's memory, within bounds."""
    from engramdb.storage import postgres as pg

    def build_mb(rows: int, dim: int = 384) -> int:
        monkeypatch.setattr(pg, "_scalar", lambda *a, **k: rows)
        return pg._hnsw_build_mb(None, dim)  # type: ignore[arg-type]

    low, high = pg.HNSW_BUILD_MB
    assert build_mb(0) == low and build_mb(100_000) == low  # 232 MB: the floor
    assert 2_200 < build_mb(1_000_000) < 2_400  # ~2 KB a row x 1.25
    assert build_mb(1_000_000, dim=768) > build_mb(1_000_000)
    assert build_mb(10_000_000) == high
