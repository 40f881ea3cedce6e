"""What only the SQLite store promises: WAL mode, coherent vector caches across store instances
and processes on one file, the swap-remove vector partition, and the migration registry.

The shared behaviour of every backend is in test_store_contract.py."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engramdb.errors import StoreError
from engramdb.models import AccessUpdate, HistoryEvent, MemoryRecord, MemoryType, Status, Tier
from engramdb.storage import keyword_index, keyword_stats
from engramdb.storage import sqlite as sqlite_mod
from engramdb.storage import text as text_mod
from engramdb.storage.base import Filters
from engramdb.storage.migrations import Migrations
from engramdb.storage.sqlite import SQLiteStore
from engramdb.storage.text import keyword_terms
from engramdb.storage.vector_index import ANY, HeldFilters, Partition

DIM = 8
T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=30)

Vec = np.ndarray[Any, np.dtype[np.float32]]


def unit(seed: int) -> Vec:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


def F(**kw: Any) -> Filters:
    kw.setdefault("tenant_id", "t1")
    kw.setdefault("now", NOW)
    return Filters(**kw)


def ids(hits: list[tuple[str, float]]) -> list[str]:
    return [h[0] for h in hits]


_n = iter(range(1, 10**9))


def record(**kw: Any) -> MemoryRecord:
    n = next(_n)
    base: dict[str, Any] = {
        "id": f"rec-{n:06d}", "tenant_id": "t1", "user_id": "u1", "content": f"note w{n}",
        "integrity_hash": f"hash-{n}", "created_at": T0 + timedelta(seconds=n),
        "updated_at": T0 + timedelta(seconds=n),
    }
    base.update(kw)
    return MemoryRecord(**base)


def event(rec: MemoryRecord, kind: str = "create") -> HistoryEvent:
    return HistoryEvent(id=f"ev-{next(_n)}", memory_id=rec.id, tenant_id=rec.tenant_id,
                        event=kind, at=T0, actor=None, changes={})


def open_store(path: Path) -> SQLiteStore:
    s = SQLiteStore(path)
    s.migrate()
    s.bind_embedding("test-model", DIM)
    return s


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "x.db"


@pytest.fixture
def two(db: Path) -> Iterator[tuple[SQLiteStore, SQLiteStore]]:
    """Two stores on one file: what two processes would have."""
    a, b = open_store(db), open_store(db)
    yield a, b
    a.close()
    b.close()


def brute(model: dict[str, tuple[MemoryRecord, Vec]], f: Filters,
          q: Vec) -> list[str]:
    hits = [(mid, float(v @ q)) for mid, (r, v) in model.items()
            if r.tenant_id == f.tenant_id and r.status is Status.ACTIVE
            and (f.user_id is None or r.user_id == f.user_id)]
    return [mid for mid, _ in sorted(hits, key=lambda h: -h[1])]


# -- WAL ------------------------------------------------------------------------------------


def test_wal_mode(db: Path) -> None:
    s = open_store(db)
    s.insert(r := record(), unit(1), event(r))
    assert s._writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent
    finally:
        raw.close()
    assert Path(str(db) + "-wal").exists()
    s.close()


# -- cache coherence across instances -------------------------------------------------------


def test_two_instances_see_each_others_writes(two: tuple[SQLiteStore, SQLiteStore]) -> None:
    a, b = two
    r1 = record()
    a.insert(r1, unit(1), event(r1))
    assert ids(a.nearest(F(), unit(1), 5)) == [r1.id]  # a caches the partition
    assert ids(b.nearest(F(), unit(1), 5)) == [r1.id]  # and so does b

    r2 = record()
    b.insert(r2, unit(2), event(r2))
    assert ids(a.nearest(F(user_id="u1"), unit(2), 1)) == [r2.id]
    assert set(ids(a.nearest(F(), unit(3), 5))) == {r1.id, r2.id}

    b.update(replace(r1, content="moved"), unit(3), event(r1, "update"))
    best = a.nearest(F(), unit(3), 1)
    assert ids(best) == [r1.id] and best[0][1] == pytest.approx(1.0, abs=1e-5)

    b.update(replace(r1, content="moved", status=Status.SUPERSEDED), None, event(r1))
    assert ids(a.nearest(F(), unit(3), 5)) == [r2.id]

    b.delete("t1", r2.id, event(r2, "delete"))
    assert a.nearest(F(), unit(2), 5) == []
    assert a.get("t1", r2.id) is None

    # a writes after b did: a's cache must not be patched from a stale base
    r3 = record()
    a.insert(r3, unit(4), event(r3))
    assert ids(a.nearest(F(), unit(4), 5)) == [r3.id]
    assert ids(b.nearest(F(), unit(4), 5)) == [r3.id]

    # a new user created by b shows up in a's tenant-wide search
    r4 = record(user_id="u-new")
    b.insert(r4, unit(5), event(r4))
    assert ids(a.nearest(F(), unit(5), 1)) == [r4.id]
    assert ids(a.nearest(F(user_id="u-new", exact_scope=True), unit(5), 1)) == [r4.id]


def test_interleaved_writers_match_brute_force(two: tuple[SQLiteStore, SQLiteStore]) -> None:
    """Random inserts, vector updates, status changes and deletes through either of two
    stores; after each, both stores' nearest() equal a brute-force ranking."""
    rng = random.Random(1234)
    stores = two
    model: dict[str, tuple[MemoryRecord, Vec]] = {}
    seed = 100
    for step in range(220):
        s = rng.choice(stores)
        kind = rng.random()
        seed += 1
        if kind < 0.55 or len(model) < 3:
            r = record(user_id=rng.choice(["u1", "u2"]))
            s.insert(r, unit(seed), event(r))
            model[r.id] = (r, unit(seed))
        elif kind < 0.7:
            mid = rng.choice(sorted(model))
            r, _ = model[mid]
            s.update(r, unit(seed), event(r, "update"))
            model[mid] = (r, unit(seed))
        elif kind < 0.8:
            mid = rng.choice(sorted(model))
            r, v = model[mid]
            r = replace(r, status=Status.SUPERSEDED if r.status is Status.ACTIVE
                        else Status.ACTIVE)
            s.update(r, None, event(r, "update"))
            model[mid] = (r, v)
        else:
            mid = rng.choice(sorted(model))
            assert s.delete("t1", mid, event(model[mid][0], "delete"))
            del model[mid]
        q = unit(rng.randrange(10**6))
        f = F(user_id=rng.choice([None, "u1", "u2"]))
        want = brute(model, f, q)
        for reader in stores:
            assert ids(reader.nearest(f, q, 7)) == want[:7], step
    for reader in stores:
        assert ids(reader.nearest(F(), unit(1), 1000)) == brute(model, F(), unit(1))


def test_rolled_back_section_leaves_no_phantom(two: tuple[SQLiteStore, SQLiteStore]) -> None:
    """A search inside a section that is rolled back must not leave its uncommitted rows in
    the cache, where another writer's commit (with the same version number) would make them
    look current."""
    a, b = two
    existing = record()
    a.insert(existing, unit(1), event(existing))
    a.nearest(F(user_id="u1"), unit(1), 5)
    ghost = record()

    class Boom(Exception):
        pass

    with pytest.raises(Boom), a.atomic("t1", "u1"):
        a.insert(ghost, unit(2), event(ghost))
        assert ghost.id in ids(a.nearest(F(user_id="u1"), unit(2), 5))
        raise Boom
    real = record()
    b.insert(real, unit(3), event(real))
    for s in (a, b):
        assert set(ids(s.nearest(F(user_id="u1"), unit(2), 10))) == {existing.id, real.id}
        assert set(ids(s.nearest(F(), unit(2), 10))) == {existing.id, real.id}


CHILD = textwrap.dedent(
    """
    import json, sys
    from datetime import datetime, timezone
    import numpy as np
    from engramdb.models import HistoryEvent, MemoryRecord
    from engramdb.storage.sqlite import SQLiteStore

    path, plan = sys.argv[1], json.loads(sys.argv[2])
    s = SQLiteStore(path)
    s.migrate()
    s.bind_embedding("test-model", 8)
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for mid, user, vec in plan["insert"]:
        r = MemoryRecord(id=mid, tenant_id="t1", user_id=user, content="from the child " + mid,
                         integrity_hash="h-" + mid, created_at=at, updated_at=at)
        e = HistoryEvent(id="e-" + mid, memory_id=mid, tenant_id="t1", event="create", at=at,
                         actor=None, changes={})
        s.insert(r, np.array(vec, dtype=np.float32), e)
    for mid in plan["delete"]:
        e = HistoryEvent(id="d-" + mid, memory_id=mid, tenant_id="t1", event="delete", at=at,
                         actor=None, changes={})
        assert s.delete("t1", mid, e)
    s.close()
    """
)


def run_child(db: Path, plan: dict[str, Any]) -> None:
    subprocess.run([sys.executable, "-c", CHILD, str(db), json.dumps(plan)], check=True,
                   timeout=120, capture_output=True)


def test_another_process_writes_are_seen(db: Path) -> None:
    s = open_store(db)
    mine = [record() for _ in range(5)]
    vecs = {r.id: unit(i) for i, r in enumerate(mine)}
    for r in mine:
        s.insert(r, vecs[r.id], event(r))
    q = unit(50)
    assert set(ids(s.nearest(F(user_id="u1"), q, 10))) == set(vecs)  # cached now
    assert set(ids(s.nearest(F(), q, 10))) == set(vecs)

    plan = {"insert": [["child-1", "u1", unit(60).tolist()], ["child-2", "u1", unit(61).tolist()],
                       ["child-3", "u9", unit(62).tolist()]],
            "delete": [mine[0].id]}
    run_child(db, plan)
    vecs.pop(mine[0].id)
    vecs.update({"child-1": unit(60), "child-2": unit(61)})
    want = [mid for mid, _ in sorted(vecs.items(), key=lambda kv: -float(kv[1] @ q))]
    assert ids(s.nearest(F(user_id="u1"), q, 10)) == want
    assert ids(s.nearest(F(user_id="u1"), unit(61), 1)) == ["child-2"]
    assert ids(s.nearest(F(), unit(62), 1)) == ["child-3"]
    assert "child-3" in ids(s.nearest(F(), q, 10))
    assert s.get("t1", mine[0].id) is None
    assert ids(s.keyword_search(F(), "child", 10)) != []
    s.close()


WRITER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timezone
    import numpy as np
    from engramdb.models import HistoryEvent, MemoryRecord
    from engramdb.storage.sqlite import SQLiteStore

    path, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    s = SQLiteStore(path)
    s.migrate()
    s.bind_embedding("test-model", 8)
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    saved = 0
    for i in range(n):
        h = f"shared-{i}"
        mid = f"{who}-{i}"
        with s.atomic("t1", "u1"):
            if s.find_by_hash("t1", "u1", None, "default", h) is not None:
                continue
            r = MemoryRecord(id=mid, tenant_id="t1", user_id="u1", content=f"shared {i}",
                             integrity_hash=h, created_at=at, updated_at=at)
            e = HistoryEvent(id="e-" + mid, memory_id=mid, tenant_id="t1", event="create",
                             at=at, actor=None, changes={})
            v = np.random.default_rng(i).standard_normal(8).astype(np.float32)
            s.insert(r, v / np.linalg.norm(v), e)
            saved += 1
    s.close()
    print(saved)
    """
)


def test_write_sections_are_atomic_across_processes(db: Path) -> None:
    """Two processes race to save the same 40 hashes, each checking find_by_hash inside its
    write section: every hash is stored exactly once and no insert fails."""
    s = open_store(db)
    s.nearest(F(), unit(1), 1)
    n = 40
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), who, str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for who in ("p1", "p2")]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    assert sum(int(out) for out, _ in outs) == n
    items, total = s.list(F(), 100, 0)
    assert total == n
    assert sorted(r.integrity_hash for r in items) == sorted(f"shared-{i}" for i in range(n))
    hits = s.nearest(F(user_id="u1"), unit(1), 100)
    assert len(hits) == n
    s.close()


def test_threads_share_one_store(db: Path) -> None:
    s = open_store(db)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(15):
                r = record(user_id=f"u{i % 3}", integrity_hash=f"th-{i}")
                with s.atomic("t1", r.user_id):
                    if s.find_by_hash("t1", r.user_id, None, "default", r.integrity_hash):
                        continue
                    s.insert(r, unit(1000 * t + i), event(r))
                s.nearest(F(user_id=r.user_id), unit(i), 3)
                s.keyword_search(F(), "note", 3)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert s.list(F(), 100, 0)[1] == 15
    assert len(s.nearest(F(), unit(1), 100)) == 15
    s.close()


# -- the vector partition -------------------------------------------------------------------


def test_store_churn_matches_brute_force(db: Path) -> None:
    """Many inserts and deletes in random order on a warm cache (swap-remove, growth past the
    initial capacity); nearest stays equal to brute force."""
    s = open_store(db)
    rng = random.Random(7)
    model: dict[str, tuple[MemoryRecord, Vec]] = {}
    for step in range(300):
        if rng.random() < 0.6 or not model:
            r = record()
            v = unit(5000 + step)
            s.insert(r, v, event(r))
            model[r.id] = (r, v)
        else:
            mid = rng.choice(sorted(model))
            s.delete("t1", mid, event(model.pop(mid)[0], "delete"))
        if step % 5 == 0:
            q = unit(rng.randrange(10**6))
            assert ids(s.nearest(F(user_id="u1"), q, 10)) == brute(model, F(), q)[:10]
    q = unit(3)
    assert ids(s.nearest(F(), q, 1000)) == brute(model, F(), q)
    assert s.stats()["cached_vectors"] == len(model)
    s.close()


_ops = st.lists(
    st.tuples(
        st.sampled_from(["upsert", "upsert", "update-meta", "remove"]),
        st.integers(0, 30),                          # which memory
        st.sampled_from([None, "a1", "a2"]),         # agent
        st.sampled_from([None, "s1"]),               # session
        st.sampled_from(["default", "ns"]),          # namespace
        st.booleans(),                               # active
        st.sampled_from([None, 10.0, 20.0]),         # expires_at
    ),
    max_size=80,
)


@settings(max_examples=60, deadline=None)
@given(ops=_ops, qseed=st.integers(0, 10**6), k=st.integers(1, 12),
       now=st.sampled_from([5.0, 15.0, 25.0]),
       agent=st.sampled_from([ANY, None, "a1"]), session=st.sampled_from([ANY, None, "s1"]),
       namespace=st.sampled_from([ANY, "default"]), inactive=st.booleans(),
       use_allowed=st.booleans())
def test_partition_matches_brute_force(ops: list[tuple[Any, ...]], qseed: int, k: int,
                                       now: float, agent: Any, session: Any, namespace: Any,
                                       inactive: bool, use_allowed: bool) -> None:
    part = Partition(DIM, capacity=4)
    model: dict[str, dict[str, Any]] = {}
    for step, (op, key, ag, se, ns, active, exp) in enumerate(ops):
        mid = f"m{key}"
        if op == "remove":
            part.remove(mid)
            model.pop(mid, None)
            continue
        vec = unit(step * 100 + key) if op == "upsert" else None
        part.upsert(key + 1000, mid, vec, ag, se, ns, active, exp)
        if mid in model:
            row = model[mid]
            if vec is not None:
                row["vec"] = vec
        elif vec is None:
            continue  # a partition never holds a memory without a vector
        else:
            row = model[mid] = {"vec": vec, "rowid": key + 1000}
        row.update(agent=ag, session=se, namespace=ns, active=active,
                   expires=np.inf if exp is None else exp)

    # the bookkeeping: the active rows first
    assert part.n == len(model) == len(part.pos)
    assert part.n_active == sum(r["active"] for r in model.values())
    assert part.n_expiring == sum(r["expires"] != np.inf for r in model.values())
    assert part.active[: part.n_active].all() and not part.active[part.n_active : part.n].any()
    for mid, i in part.pos.items():
        assert 0 <= i < part.n and part.ids[i] == mid
        row = model[mid]
        np.testing.assert_array_equal(part.mat[i], row["vec"])
        assert part.rowids[i] == row["rowid"]
        assert (part.agent[i], part.session[i], part.namespace[i], bool(part.active[i]),
                float(part.expires[i])) == (row["agent"], row["session"], row["namespace"],
                                            row["active"], row["expires"])

    # the search
    q = unit(qseed)
    allowed = {r["rowid"] for mid, r in model.items() if int(mid[1:]) % 2} if use_allowed \
        else None
    want = []
    for mid, r in model.items():
        if r["expires"] <= now or not (inactive or r["active"]):
            continue
        if any(v is not ANY and r[name] != v for name, v in
               (("agent", agent), ("session", session), ("namespace", namespace))):
            continue
        if allowed is not None and r["rowid"] not in allowed:
            continue
        want.append((mid, float(r["vec"] @ q)))
    want.sort(key=lambda h: -h[1])
    held = HeldFilters(now=now, agent=agent, session=session, namespace=namespace,
                       include_inactive=inactive)
    got = part.search(q, k, held, allowed=allowed)
    assert ids(got) == ids(want)[:k]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want[:k]], atol=1e-5)
    sims = part.similarities(q, [*model, "absent"])
    assert set(sims) == set(model)
    # the same filters, asked of given memories (allowed is the rows' business)
    if allowed is None:
        filtered = part.similarities(q, [*model, "absent"], held)
        assert set(filtered) == {mid for mid, _ in want}
        for mid, score in want:
            assert abs(filtered[mid] - score) < 1e-5


def test_partition_searches_inactive_rows_only_when_asked() -> None:
    """Active rows are kept first so that a search without the others multiplies only
    them: the others must still be found when asked for, wherever a change moved them."""
    part = Partition(DIM)
    for i in range(6):
        part.upsert(i, f"m{i}", unit(i), None, None, "default", i % 2 == 0, None)
    part.upsert(2, "m2", None, None, None, "default", False, None)  # superseded
    part.upsert(1, "m1", None, None, None, "default", True, None)  # restored
    part.remove("m0")
    assert part.n_active == 2
    for i in range(6):
        if i == 0:
            continue
        hits = part.search(unit(i), 1, HeldFilters(include_inactive=True))
        assert ids(hits) == [f"m{i}"]
        active_only = part.search(unit(i), 5, HeldFilters(include_inactive=False))
        assert sorted(ids(active_only)) == ["m1", "m4"]
    _, extra = part.search_with(unit(1), 1, HeldFilters(include_inactive=False),
                                include=["m3", "m4", "m5"])
    assert ids(extra) == ["m4"]  # the inactive ones are not scored for a search without them


def test_partition_swap_remove_keeps_positions() -> None:
    part = Partition(DIM, capacity=1)

    def rank(i: int) -> tuple[float, float, float, bool, float, float | None]:
        return (i / 40, 1 - i / 80, i / 1000, i % 3 == 0, 1.7e9 + i,
                None if i % 2 else 1.8e9 + i)

    for i in range(40):  # grows past the initial capacity twice
        part.upsert(i, f"m{i}", unit(i), None, f"s{i}", "default", True, None,
                    None if i == 7 else rank(i))
    for mid in ("m0", "m39", "m20", "m1", "missing", "m20"):
        part.remove(mid)
    assert part.n == 36 and len(part.pos) == 36
    for mid, i in part.pos.items():
        np.testing.assert_array_equal(part.mat[i], unit(int(mid[1:])))
        assert part.rowids[i] == int(mid[1:])
    # rank fields move with their rows; a row upserted without them is not answered
    held = list(part.pos)
    assert part.rank_rows([*held, "missing"]) == [
        (mid, rank(int(mid[1:])), mid.replace("m", "s")) for mid in held if mid != "m7"]
    part.touch("m2", 0.25, 0.5, 1.0)  # an earlier access time than the one held
    part.touch("m3", 0.35, 0.5, 1.9e9)  # a first access
    part.touch("m7", 0.45, 0.5, 1.9e9)  # rank fields unknown: stays unknown
    assert [r[1][1:] for r in part.rank_rows(["m2", "m3", "m7"])] == [
        (0.25, 0.5, rank(2)[3], rank(2)[4], rank(2)[5]),
        (0.35, 0.5, rank(3)[3], rank(3)[4], 1.9e9)]
    # as columns: one not held, or held without rank fields, is blank (not another row's)
    cols = part.rank_columns(["m7", "missing", "m3"])
    assert cols.found.tolist() == [False, False, True]
    assert cols.fields(2) == (rank(3)[0], 0.35, 0.5, rank(3)[3], rank(3)[4], 1.9e9, "s3")
    for column in (cols.importance, cols.relevance, cols.decay_rate, cols.pinned,
                   cols.created):
        assert column[:2].tolist() == [0, 0]
    assert np.isnan(cols.last_accessed[:2]).all() and cols.session_id[:2] == [None, None]
    hits = part.search(unit(5), 1, HeldFilters(now=0.0))
    assert ids(hits) == ["m5"]
    part.upsert(99, "m99", None, None, None, "default", True, None)  # no vector: not held
    assert "m99" not in part.pos


# -- migrations -----------------------------------------------------------------------------


def test_migration_registry() -> None:
    m = Migrations("test")

    def first(conn: Any) -> None:
        pass

    assert m.step("0001_first")(first) is first
    m.step("0003_third")(lambda conn: None)
    m.step("0002_second")(lambda conn: None)
    with pytest.raises(ValueError, match="0001_first"):
        m.step("0001_first")(lambda conn: None)
    # applied in registration order, not by name
    assert [n for n, _ in m.pending(set())] == ["0001_first", "0003_third", "0002_second"]
    assert [n for n, _ in m.pending({"0003_third"})] == ["0001_first", "0002_second"]
    assert m.pending({"0001_first", "0002_second", "0003_third", "unknown"}) == []
    assert m.pending(set())[0][1] is first
    assert sqlite_mod.migrations.steps[0][0] == "0001_initial"


def applied(db: Path) -> list[str]:
    raw = sqlite3.connect(db)
    try:
        return [r[0] for r in raw.execute("SELECT name FROM schema_migrations ORDER BY rowid")]
    finally:
        raw.close()


def test_migrate_applies_only_new_steps(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = open_store(db)
    s.insert(r := record(), unit(1), event(r))
    assert applied(db) == [n for n, _ in sqlite_mod.migrations.steps]

    extended = Migrations("sqlite", steps=list(sqlite_mod.migrations.steps))
    runs: list[int] = []

    @extended.step("9001_test_extra")
    def _extra(conn: Any) -> None:
        runs.append(1)
        conn.executescript(
            """
            -- a comment line
            CREATE TABLE extra (x INTEGER);
            INSERT INTO extra VALUES (1);
            """
        )

    monkeypatch.setattr(sqlite_mod, "migrations", extended)
    s.migrate()
    s.migrate()
    other = SQLiteStore(db)
    other.migrate()
    assert runs == [1]
    assert applied(db)[-1] == "9001_test_extra"
    assert s._writer.execute("SELECT x FROM extra").fetchall() == [(1,)]
    assert s.get("t1", r.id) == r
    other.close()
    s.close()


def test_failed_migration_rolls_back(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = open_store(db)
    extended = Migrations("sqlite", steps=list(sqlite_mod.migrations.steps))

    @extended.step("9002_broken")
    def _broken(conn: Any) -> None:
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        conn.execute("CREATE TABLE memories (x INTEGER)")  # exists: fails

    monkeypatch.setattr(sqlite_mod, "migrations", extended)
    with pytest.raises(sqlite3.OperationalError):
        s.migrate()
    assert "9002_broken" not in applied(db)
    raw = sqlite3.connect(db)
    try:
        assert raw.execute(
            "SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchall() == []
    finally:
        raw.close()
    s.insert(r := record(), unit(1), event(r))  # still usable
    assert s.get("t1", r.id) == r
    s.close()


def test_second_store_on_a_migrated_file(db: Path) -> None:
    a = open_store(db)
    a.insert(r := record(), unit(1), event(r))
    b = open_store(db)
    assert b.get("t1", r.id) == r
    assert ids(b.nearest(F(), unit(1), 1)) == [r.id]
    a.close()
    b.close()


def test_unbound_store_refuses_vectors(db: Path) -> None:
    s = SQLiteStore(db)
    s.migrate()
    with pytest.raises(StoreError):
        s.insert(r := record(), unit(1), event(r))
    with pytest.raises(StoreError):
        s.nearest(F(), unit(1), 1)
    s.close()


# -- full-text details ----------------------------------------------------------------------


def test_keyword_search_folds_case_and_diacritics(db: Path) -> None:
    s = open_store(db)
    r = record(content="Le café de Zürich est CRÈME")
    s.insert(r, unit(1), event(r))
    for q in ("cafe", "CAFÉ", "zurich", "crème", "creme"):
        assert ids(s.keyword_search(F(), q, 5)) == [r.id], q
    s.close()


def kw_terms(store: SQLiteStore) -> list[str]:
    """Every term of the keyword index, read through an fts5vocab table."""
    conn = store._writer
    conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.kw_vocab "
                 "USING fts5vocab(main, memories_kw, 'row')")
    return [r[0] for r in conn.execute("SELECT term FROM temp.kw_vocab")]


TRICKY = [
    "snake_case_word and kebab-case-word", "don't won’t l'été", "naïve café Zürich",
    "e\u0301te\u0301 (combining accents)", "日本語のテキスト 中文", "emoji 🍎🍏 mixed👍word",
    "x²+y³=z½ №5 ⅷ", "tab\tnew\nline\u00a0nbsp\u200bzwsp", "İstanbul ǅungla ß",
    "a" * 80 + " verylongword" * 3, "123 4.5 6,7 0x1F",
]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=4))
def test_every_indexed_word_carries_its_scope_prefix(texts: list[str]) -> None:
    """Python splits words and prefixes them; FTS5 tokenizes the result. If the two split
    differently, an unprefixed term would leak into the index and match across users."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        s = open_store(Path(d) / "x.db")
        for i, text in enumerate([*TRICKY, *texts]):
            r = record(content=text, user_id=f"u{i % 3}")
            s.insert(r, unit(i), event(r))
        terms = kw_terms(s)
        assert terms
        bad = [t for t in terms
               if not (t[0] in "tp" and len(t) >= 14
                       and all(c in sqlite_mod._KW_ALPHABET for c in t[1:14]))]
        assert bad == []
        s.close()


def test_keyword_index_follows_updates_and_deletes(db: Path) -> None:
    s = open_store(db)
    a = record(content="apricot jam recipe", user_id="u1")
    b = record(content="apricot tree in the garden", user_id="u2")
    for i, r in enumerate((a, b)):
        s.insert(r, unit(i), event(r))
    assert ids(s.keyword_search(F(user_id="u1"), "apricot", 5)) == [a.id]
    assert ids(s.keyword_search(F(user_id="u2"), "apricot", 5)) == [b.id]
    assert sorted(ids(s.keyword_search(F(), "apricot", 5))) == sorted([a.id, b.id])

    a2 = replace(a, content="quince jelly recipe")
    s.update(a2, None, event(a2, "update"))
    assert ids(s.keyword_search(F(user_id="u1"), "apricot", 5)) == []
    assert ids(s.keyword_search(F(user_id="u1"), "quince", 5)) == [a.id]
    # moving a memory to another user moves its words to that user's postings
    a3 = replace(a2, user_id="u2")
    s.update(a3, None, event(a3, "update"))
    assert ids(s.keyword_search(F(user_id="u1"), "quince", 5)) == []
    assert ids(s.keyword_search(F(user_id="u2"), "quince", 5)) == [a.id]

    assert s.delete("t1", a.id, event(a3, "delete"))
    assert ids(s.keyword_search(F(user_id="u2"), "quince recipe", 5)) == []
    assert ids(s.keyword_search(F(), "quince", 5)) == []
    # the contentless index was given back exactly what it was given: nothing dangles
    terms = kw_terms(s)
    assert not any(t.endswith(("quinc", "jelli", "recip", "jam")) for t in terms)
    assert any(t.endswith("apricot") for t in terms)
    s._writer.execute("INSERT INTO memories_kw (memories_kw) VALUES ('integrity-check')")
    s.close()


def test_keyword_idf_comes_from_the_whole_tenant(db: Path) -> None:
    """Within u1 both words occur once; across the tenant "coffee" is common, so the
    memory with the rare word ranks first (per-user idf would tie them)."""
    s = open_store(db)
    common = record(content="coffee meeting notes", user_id="u1")
    rare = record(content="zanzibar meeting notes", user_id="u1")
    others = [record(content=f"coffee order {i}", user_id="u2") for i in range(30)]
    for i, r in enumerate([common, rare, *others]):
        s.insert(r, unit(i), event(r))
    hits = s.keyword_search(F(user_id="u1"), "coffee zanzibar", 5)
    assert ids(hits) == [rare.id, common.id]
    assert hits[0][1] > hits[1][1] * 2
    # the other tenant's words do not count
    t2 = [record(tenant_id="t2", content=f"zanzibar trip {i}", user_id="u1") for i in range(30)]
    for i, r in enumerate(t2):
        s.insert(r, unit(100 + i), event(r))
    assert ids(s.keyword_search(F(user_id="u1"), "coffee zanzibar", 5)) == [rare.id, common.id]
    # a small tenant's counts are exact on every query: zanzibar turning common shows at once
    for i in range(60):
        r = record(content=f"zanzibar again {i}", user_id="u3")
        s.insert(r, unit(200 + i), event(r))
    assert ids(s.keyword_search(F(user_id="u1"), "coffee zanzibar", 5)) == [common.id, rare.id]
    s.close()


def coffee_and_zanzibar(db: Path) -> tuple[SQLiteStore, MemoryRecord, MemoryRecord]:
    """u1 has "coffee meeting" (a) and "zanzibar meeting" (b); u2 has 20 more coffees."""
    s = open_store(db)
    a = record(content="coffee meeting", user_id="u1")
    b = record(content="zanzibar meeting", user_id="u1")
    for i, r in enumerate([a, b, *[record(content=f"coffee {i}", user_id="u2")
                                   for i in range(20)]]):
        s.insert(r, unit(i), event(r))
    return s, a, b


# -- keyword postings held in memory --------------------------------------------------------


def fts5_only(s: SQLiteStore, f: Filters, q: str, k: int) -> list[tuple[str, float]]:
    """The same keyword search answered by FTS5 alone."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(s, "_keyword_in_memory", lambda *a: None)
        return s.keyword_search(f, q, k)


def hold_postings(s: SQLiteStore, *users: str) -> None:
    """Search each user twice, so that their postings are built, and wait for them."""
    for _ in range(2):
        for user in users:
            s.keyword_search(F(user_id=user), "warm", 1)
    s.settle_keyword_postings()


def same_hits(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert ids(got) == ids(want)
    assert [h[1] for h in got] == pytest.approx([h[1] for h in want], rel=1e-12)


# Words that stem alike, diacritics, a word the tokenizer splits (a New Tai Lue vowel sign is
# a letter to Python, a separator to FTS5's unicode61), short vowel-initial words.
KW_VOCAB = [
    "apricot", "apricots", "running", "runner", "runs", "jam", "jelly", "quince", "garden",
    "gardening", "café", "naive", "Zürich", "meeting", "notes", "coffee", "trip", "ab\u19b0cd",
    "is", "at", "op", "oping", "yes", "sky", "skies",
]


def test_keyword_postings_in_memory_score_as_fts5(db: Path) -> None:
    s = open_store(db)
    rng = random.Random(7)
    for i in range(150):
        words = [rng.choice(KW_VOCAB) for _ in range(rng.randint(1, 14))]
        r = record(content=" ".join(words), user_id=f"u{i % 3}",
                   agent_id=rng.choice([None, "a1"]), session_id=rng.choice([None, "s1", "s2"]),
                   namespace=rng.choice(["default", "work"]),
                   status=Status.SUPERSEDED if i % 11 == 0 else Status.ACTIVE,
                   expires_at=T0 + timedelta(days=1) if i % 13 == 0 else None,
                   memory_type=rng.choice([MemoryType.FACT, MemoryType.PREFERENCE]))
        s.insert(r, unit(i), event(r))
    queries = ["apricot jam", "runs", "gardening garden", "cafe zurich naïve", "ab", "cd",
               "is at", "oping skies yes", "coffee apricots running trip notes", "nothing here"]
    filters = [F(user_id="u0"), F(user_id="u1", agent_id="a1"), F(user_id="u2", session_id="s1"),
               F(user_id="u0", namespace="work"), F(user_id="u1", include_superseded=True),
               F(user_id="u2", memory_types=("fact",)), F(user_id="u0", exact_scope=True),
               F(user_id="u1", include_expired=True)]
    hold_postings(s, "u0", "u1", "u2")
    for f in filters:
        for q in queries:
            before = s.kw_in_memory
            got = s.keyword_search(f, q, 8)
            assert s.kw_in_memory == before + 1
            same_hits(got, fts5_only(s, f, q, 8))
            # queries of few postings are added up in Python, others with numpy: the very
            # same floats and order
            results = []
            for small in (-1, 10**9):  # numpy always, Python always
                with pytest.MonkeyPatch.context() as mp:
                    mp.setattr(keyword_index, "SMALL_QUERY_POSTINGS", small)
                    results.append((s.keyword_search(f, q, 8), s.keyword_search(f, q, 100)))
            assert results[0] == results[1] and results[0][0] == got
    assert s.keyword_search(F(user_id="u0"), "garden", 3)  # something matched at all
    s.close()


def test_a_large_user_has_its_postings_built_by_its_first_search(
        db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user whose first search matches many postings has them built by that search (not
    in the background, where the next searches would go to FTS5 meanwhile); a small user
    is left to FTS5 until its second search (one search alone builds nothing)."""
    monkeypatch.setattr(sqlite_mod, "KW_BUILD_AT_MATCHES", 5)
    s = open_store(db)
    for i in range(12):
        r = record(content=f"coffee note {i}", user_id="big" if i < 8 else "small")
        s.insert(r, unit(i + 1), event(r))
    first = {u: s.keyword_search(F(user_id=u), "coffee", 3) for u in ("big", "small")}
    assert ("t1", "big") in s._kw_scopes and ("t1", "small") not in s._kw_scopes
    before = s.kw_in_memory
    same_hits(s.keyword_search(F(user_id="big"), "coffee", 3), first["big"])
    assert s.kw_in_memory == before + 1  # 8 matches: built after the first search
    same_hits(s.keyword_search(F(user_id="small"), "coffee", 3), first["small"])
    assert s.kw_in_memory == before + 1  # 4 matches: its second search asks for them
    s.settle_keyword_postings()
    s.keyword_search(F(user_id="small"), "coffee", 3)
    assert s.kw_in_memory == before + 2
    s.close()


def test_a_user_too_large_for_the_postings_budget_is_built_once(
        db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_mod, "KW_CACHE_POSTINGS", 5)
    s = open_store(db)
    for i in range(4):
        r = record(content=f"coffee beans {i}", user_id="big")
        s.insert(r, unit(i + 1), event(r))
    builds = 0
    build = s._kw_build

    def counted(key: tuple[str, str]) -> None:
        nonlocal builds
        builds += 1
        build(key)

    monkeypatch.setattr(s, "_kw_build", counted)
    want = fts5_only(s, F(user_id="big"), "coffee", 3)
    for _ in range(5):
        same_hits(s.keyword_search(F(user_id="big"), "coffee", 3), want)
        s.settle_keyword_postings()
    assert builds == 1 and s.kw_in_memory == 0
    s.close()


def test_a_word_the_tokenizer_splits_is_left_to_fts5(db: Path) -> None:
    s = open_store(db)
    r = record(content="ab\u19b0cd apricot", user_id="u1")
    s.insert(r, unit(1), event(r))
    hold_postings(s, "u1")
    before = s.kw_in_memory
    # FTS5 reads it as the phrase "<prefix>ab cd"; the postings cannot answer that
    assert ids(s.keyword_search(F(user_id="u1"), "ab\u19b0cd", 5)) == [r.id]
    assert s.kw_in_memory == before
    same_hits(s.keyword_search(F(user_id="u1"), "ab apricot", 5),
              fts5_only(s, F(user_id="u1"), "ab apricot", 5))
    assert s.kw_in_memory == before + 1
    s.close()


def test_index_terms_are_the_index_terms_under_any_prefix(db: Path) -> None:
    """One tokenization of a word behind REFERENCE_PREFIX stands for every scope's prefix:
    checked against the index's own terms for prefixes of several users."""
    s = open_store(db)
    text = " ".join([*TRICKY, *KW_VOCAB, "y ying agreed feed hopping hoping a an sses ies"])
    words = keyword_index.words_of(text)
    terms = s._kw_terms.of(words)
    conn = s._writer
    conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.kw_inst "
                 "USING fts5vocab(main, memories_kw, instance)")
    for i, user in enumerate(["u1", "someone else", "ü", "x" * 200, "7"]):
        r = record(content=text, user_id=user)
        s.insert(r, unit(i), event(r))
        rowid = conn.execute("SELECT rowid FROM memories WHERE id = ?", (r.id,)).fetchone()[0]
        prefix = sqlite_mod._kw_prefix("t1", user)
        index = [term for _, term in sorted(
            (off, term) for term, off in conn.execute(
                "SELECT term, offset FROM temp.kw_inst WHERE doc = ? AND col = 'u'", (rowid,)))]
        assert len(index) == sum(t.tokens for t in terms)
        assert [t[len(prefix):] for t in index if t.startswith(prefix)] == [
            t.term for t in terms if t.term is not None]
    s.close()


def test_keyword_postings_follow_writes_here_and_in_other_stores(db: Path) -> None:
    a, b = open_store(db), open_store(db)

    def search(q: str, **kw: Any) -> list[str]:
        return ids(a.keyword_search(F(user_id="u1", **kw), q, 5))

    r1 = record(content="apricot jam", user_id="u1")
    a.insert(r1, unit(1), event(r1))
    assert search("apricot") == [r1.id]  # FTS5: the first search of the user
    assert search("apricot") == [r1.id]  # FTS5, while the postings are built
    assert a.kw_in_memory == 0
    a.settle_keyword_postings()
    assert search("apricot") == [r1.id]
    counted = a.kw_in_memory
    assert counted == 1
    # this store's own writes change the held postings in place
    r2 = record(content="apricot tree apricot", user_id="u1")
    a.insert(r2, unit(2), event(r2))
    assert search("apricot") == [r2.id, r1.id]
    r1b = replace(r1, content="quince jelly")
    a.update(r1b, None, event(r1b, "update"))
    assert search("apricot") == [r2.id]
    assert search("quince") == [r1.id]
    r2b = replace(r2, status=Status.SUPERSEDED)
    a.update(r2b, None, event(r2b, "update"))
    assert search("apricot") == []
    assert search("apricot", include_superseded=True) == [r2.id]
    r1c = replace(r1b, expires_at=NOW - timedelta(hours=1))
    a.update(r1c, None, event(r1c, "update"))
    assert search("quince") == []
    assert a.delete("t1", r2.id, event(r2b, "delete"))
    assert search("apricot", include_superseded=True) == []
    assert a.kw_in_memory == counted + 7
    # another store's write makes the held postings stale: they are read again
    r3 = record(content="apricot again", user_id="u1")
    b.insert(r3, unit(3), event(r3))
    assert search("apricot") == [r3.id]  # FTS5, while they are built again
    assert a.kw_in_memory == counted + 7
    a.settle_keyword_postings()
    assert search("apricot") == [r3.id]
    assert a.kw_in_memory == counted + 8
    # a memory moved to another user leaves this user's postings and vectors
    r3b = replace(r3, user_id="u2")
    a.update(r3b, None, event(r3b, "update"))
    assert search("apricot") == []
    assert r3.id not in ids(a.nearest(F(user_id="u1"), unit(3), 5))
    assert ids(a.keyword_search(F(user_id="u2"), "apricot", 5)) == [r3.id]
    for s in (a, b):
        s.close()


def test_held_postings_score_as_fts5_through_writes_and_other_users_rows(db: Path) -> None:
    """The held postings keep each term's scores between searches: a write to the user
    (rows removed, their slots reused) and rows of other users (the table's average row
    length, which every score depends on) must both make them score as FTS5 again."""
    s = open_store(db)
    rng = random.Random(11)
    mine: list[MemoryRecord] = []

    def add(user: str, length: int) -> MemoryRecord:
        r = record(content=" ".join(rng.choice(KW_VOCAB) for _ in range(length)), user_id=user)
        s.insert(r, unit(len(mine) + 1), event(r))
        return r

    mine.extend(add("u1", rng.randint(1, 8)) for _ in range(30))
    hold_postings(s, "u1")
    queries = ["apricot jam", "runs garden", "coffee coffee notes", "sky"]

    def check() -> None:
        for q in queries:
            before = s.kw_in_memory
            f = F(user_id="u1")
            same_hits(s.keyword_search(f, q, 12), fts5_only(s, f, q, 12))
            assert s.kw_in_memory == before + 1

    check()
    for _ in range(5):  # other users' long rows: the average row length grows
        add("u2", 40)
    check()
    for r in mine[:10]:  # slots freed, then taken by new rows
        assert s.delete("t1", r.id, event(r, "delete"))
    mine.extend(add("u1", rng.randint(1, 8)) for _ in range(12))
    changed = replace(mine[12], content="apricot apricot garden")
    s.update(changed, None, event(changed, "update"))
    check()
    s.close()


# -- rank fields held in the partitions ----------------------------------------------------


def held_and_rows(store: SQLiteStore, f: Filters, memory_ids: list[str]
                  ) -> tuple[dict[str, Any], dict[str, Any], int]:
    """The rank fields as a search reads them (the scope's partition loaded by `nearest`
    first), as the rows give them, and how many came from the partition."""
    store.nearest(f, unit(0), 5)
    before = store.rank_in_memory
    held = store.rank_fields(f.tenant_id, memory_ids, scope=f)
    return held, store.rank_fields(f.tenant_id, memory_ids), store.rank_in_memory - before


def test_rank_fields_held_in_partitions_follow_every_change(db: Path) -> None:
    a, b = open_store(db), open_store(db)
    f = F(user_id="u1")
    r1 = record(importance=0.3, relevance=0.6, decay_rate=0.01)
    r2 = record(pinned=True, session_id="s1",
                last_accessed_at=T0 + timedelta(hours=3, microseconds=17))
    for n, r in enumerate((r1, r2)):
        a.insert(r, unit(n + 1), event(r))
    every = [r1.id, r2.id, "missing"]

    def check(served: int) -> dict[str, Any]:
        held, rows, counted = held_and_rows(a, f, every)
        assert held == rows
        assert counted == served
        # whole rows: the first read holds them, the second finds them held
        records = a.get_many("t1", every)
        assert a.get_many("t1", every, scope=f) == records
        before = a.rows_in_memory
        assert a.get_many("t1", every, scope=f) == records
        assert a.rows_in_memory - before == served
        return held

    got = check(2)
    assert got[r2.id].pinned is True and got[r2.id].session_id == "s1"
    assert got[r2.id].last_accessed == r2.last_accessed_at.timestamp()  # type: ignore[union-attr]
    # this store's write: the partition is patched
    r1b = replace(r1, importance=0.9, relevance=0.2, decay_rate=0.05)
    a.update(r1b, None, event(r1b, "update"))
    assert check(2)[r1.id].importance == 0.9
    # this store's access flush: patched in place, the vectors are not reloaded
    part = a._cache[("t1", "u1")]
    later = T0 + timedelta(days=3)
    a.apply_access("t1", [AccessUpdate(r1.id, 2, later, 0.8, 0.03, Tier.MEDIUM)])
    before = a.rows_in_memory
    patched = a.get_many("t1", every, scope=f)[r1.id]
    assert a.rows_in_memory - before == 2  # the held row was patched, not dropped
    assert patched == a.get_many("t1", [r1.id])[r1.id]
    assert (patched.access_count, patched.tier, patched.relevance) == (2, Tier.MEDIUM, 0.8)
    got = check(2)
    assert (got[r1.id].relevance, got[r1.id].decay_rate, got[r1.id].last_accessed) == (
        0.8, 0.03, later.timestamp())
    assert a._cache[("t1", "u1")] is part
    # an older access time does not move the last access back (as the UPDATE's max)
    a.apply_access("t1", [AccessUpdate(r1.id, 1, later - timedelta(days=1), 0.7, 0.03,
                                       Tier.MEDIUM)])
    assert check(2)[r1.id].last_accessed == later.timestamp()
    # another store's access flush: the rank fields are read again, the vectors are not
    b.apply_access("t1", [AccessUpdate(r2.id, 1, later, 0.55, 0.02, Tier.SHORT)])
    got = check(2)
    assert got[r2.id].relevance == 0.55 and got[r2.id].last_accessed == later.timestamp()
    assert a._cache[("t1", "u1")] is part
    # another store's write: the partition is reloaded
    r3 = record(importance=0.45)
    b.insert(r3, unit(3), event(r3))
    every.append(r3.id)
    assert check(3)[r3.id].importance == 0.45
    # a write and an access flush in one transaction
    part = a._cache[("t1", "u1")]
    r3b = replace(r3, importance=0.1)
    with a.atomic("t1", "u1"):
        a.apply_access("t1", [AccessUpdate(r3.id, 1, later, 0.99, 0.02, Tier.SHORT)])
        a.update(r3b, None, event(r3b, "update"))  # writes the record's relevance back
    got = check(3)
    assert (got[r3.id].importance, got[r3.id].relevance) == (0.1, r3b.relevance)
    assert r3b.relevance != 0.99
    # deleted and moved memories are answered by the rows (or not at all)
    assert a.delete("t1", r2.id, event(r2, "delete"))
    r1c = replace(r1b, user_id="u2")
    a.update(r1c, None, event(r1c, "update"))
    held, rows, counted = held_and_rows(a, f, every)
    assert held == rows and set(held) == {r1.id, r3.id} and counted == 1
    before = a.rows_in_memory
    records = a.get_many("t1", every, scope=f)
    assert records == a.get_many("t1", every) and set(records) == {r1.id, r3.id}
    assert a.rows_in_memory - before == 1  # r3 (r1's row went with it to u2)
    for s in (a, b):
        s.close()


def test_access_fields_come_from_held_rows_only_while_they_are_current(db: Path) -> None:
    a, b = open_store(db), open_store(db)
    f = F(user_id="u1")
    mine = [record(user_id="u1", importance=0.1 * i, memory_type=MemoryType.FACT)
            for i in range(4)]
    other = record(user_id="u2")
    for n, r in enumerate([*mine, other]):
        a.insert(r, unit(n + 1), event(r))
    every = [r.id for r in [*mine, other]] + ["missing"]

    def check(from_memory: int) -> None:
        before = a.access_in_memory
        got = a.access_fields("t1", every)
        assert a.access_in_memory - before == from_memory
        assert got == b.access_fields("t1", every)  # b holds nothing: from the rows
        assert set(got) == set(every) - {"missing"}

    check(0)  # nothing held yet
    a.nearest(f, unit(0), 5)
    a.get_many("t1", [mine[0].id], scope=f)  # holds every active row of u1
    check(4)
    # this store's flush patches the held rows: still current, still equal
    a.apply_access("t1", [AccessUpdate(mine[1].id, 3, T0 + timedelta(days=2), 0.9, 0.05,
                                       Tier.MEDIUM)])
    check(4)
    assert a.access_fields("t1", [mine[1].id])[mine[1].id].tier is Tier.MEDIUM
    # another store's flush or write: the held rows are behind, the rows answer
    b.apply_access("t1", [AccessUpdate(mine[2].id, 1, T0 + timedelta(days=3), 0.4, 0.02,
                                       Tier.SHORT)])
    check(0)
    a.nearest(f, unit(0), 5)
    a.get_many("t1", [mine[2].id], scope=f)  # rank fields read again, that row held again
    check(1)
    changed = replace(mine[3], importance=0.95)
    b.update(changed, None, event(changed, "update"))
    check(0)
    # reloaded after b's write, the partition holds every active row again; inside a
    # write section, the rows answer
    a.nearest(f, unit(0), 5)
    a.get_many("t1", [mine[3].id], scope=f)
    with a.atomic("t1", "u1"):
        check(0)
    check(4)
    for s_ in (a, b):
        s_.close()


def test_an_access_flush_checkpoints_the_wal_before_its_transaction(db: Path) -> None:
    """Not in its COMMIT, where the checkpoint would delay the patch of the partitions."""
    a = open_store(db)
    r = record()
    a.insert(r, unit(1), event(r))
    statements: list[str] = []
    a._writer.set_trace_callback(statements.append)
    a.apply_access("t1", [AccessUpdate(r.id, 1, T0 + timedelta(days=1), 0.7, 0.03,
                                       Tier.SHORT)])
    begin = statements.index("BEGIN IMMEDIATE")
    assert "PRAGMA wal_checkpoint(PASSIVE)" in statements[:begin]
    # nested in a write section, the flush is part of it: no checkpoint inside
    statements.clear()
    with a.atomic("t1", None):
        a.apply_access("t1", [AccessUpdate(r.id, 1, T0 + timedelta(days=2), 0.7, 0.03,
                                           Tier.SHORT)])
    assert not any("checkpoint" in x for x in statements)
    assert a.get("t1", r.id).access_count == r.access_count + 2  # type: ignore[union-attr]
    a.close()


def test_a_users_first_rows_read_bring_all_its_active_rows_once(
        db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = open_store(db)
    f = F(user_id="u1")
    mine = [record(user_id="u1", status=Status.SUPERSEDED if i == 0 else Status.ACTIVE)
            for i in range(6)]
    other = record(user_id="u2")
    for n, r in enumerate([*mine, other]):
        a.insert(r, unit(n + 1), event(r))
    active = {r.id for r in mine[1:]}
    a.nearest(f, unit(0), 5)  # the partition, loaded as a search loads it
    part = a._cache[("t1", "u1")]
    asked = [mine[1].id, other.id, "missing"]
    got = a.get_many("t1", asked, scope=f)
    # the answer is what was asked (and exists), as the rows give it
    assert got == a.get_many("t1", asked) and set(got) == {mine[1].id, other.id}
    # every active row of the user is held, not the superseded one
    assert set(part.rows) == active
    assert a.get_many("t1", [mine[0].id], scope=f) == a.get_many("t1", [mine[0].id])
    assert set(part.rows) == active | {mine[0].id}
    before = a.rows_in_memory
    rest = [r.id for r in mine[2:]]
    assert a.get_many("t1", rest, scope=f) == a.get_many("t1", rest)
    assert a.rows_in_memory - before == len(rest)
    # once a partition: a row dropped by a write is read back alone
    changed = replace(mine[2], content="changed since")
    a.update(changed, None, event(changed, "update"))
    assert a._cache[("t1", "u1")] is part and mine[2].id not in part.rows
    held = set(part.rows)
    reads: list[int] = []
    hold = a._hold_rows
    monkeypatch.setattr(a, "_hold_rows", lambda *args: reads.append(len(args[-1])) or hold(*args))
    assert a.get_many("t1", [mine[2].id], scope=f)[mine[2].id].content == "changed since"
    assert set(part.rows) == held | {mine[2].id} and reads == [1]
    a.close()
    # a user with more active rows than ROW_FILL_ROWS: only what is asked is read
    monkeypatch.setattr(sqlite_mod, "ROW_FILL_ROWS", 4)
    b = open_store(db)
    b.nearest(f, unit(0), 5)
    assert b.get_many("t1", [mine[1].id], scope=f) == b.get_many("t1", [mine[1].id])
    assert set(b._cache[("t1", "u1")].rows) == {mine[1].id}
    b.close()


def test_held_rank_fields_and_rows_settle_to_the_rows_under_concurrency(db: Path) -> None:
    """Writers, access flushes and readers of one store race; once they stop, what its
    partitions hold (patched in place all along) must be what the rows say. Then the same
    after a second store's flush and write."""
    a, b = open_store(db), open_store(db)
    users = ["u0", "u1", "u2"]
    recs = {r.id: r for r in (record(user_id=users[i % 3], importance=0.5)
                              for i in range(36))}
    for n, r in enumerate(recs.values()):
        a.insert(r, unit(n + 1), event(r))
    ids_ = list(recs)
    errors: list[BaseException] = []
    lock = threading.Lock()  # update() needs the record it changes: one writer of a row

    def writer(store: SQLiteStore, seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(40):
                mid = rnd.choice(ids_)
                with lock:
                    cur = store.get("t1", mid)
                    assert cur is not None
                    new = replace(cur, importance=round(rnd.random(), 3),
                                  relevance=round(rnd.random(), 3))
                    store.update(new, None, event(new, "update"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def flusher(store: SQLiteStore, seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(40):
                at = T0 + timedelta(minutes=rnd.randrange(10_000))
                store.apply_access("t1", [
                    AccessUpdate(mid, 1, at, round(rnd.random(), 3), 0.02, Tier.SHORT)
                    for mid in rnd.sample(ids_, 3)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for i in range(60):
                f = F(user_id=rnd.choice(users))
                a.nearest(f, unit(i), 5)
                picked = rnd.sample(ids_, 8)
                a.rank_fields("t1", picked, scope=f)
                a.get_many("t1", picked, scope=f)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def settled() -> None:
        served = 0
        for user in users:
            f = F(user_id=user)
            mine = [mid for mid, r in recs.items() if r.user_id == user]
            held, rows, counted = held_and_rows(a, f, mine)
            assert held == rows and counted == len(mine)
            records = a.get_many("t1", mine)
            assert a.get_many("t1", mine, scope=f) == records
            before = a.rows_in_memory
            assert a.get_many("t1", mine, scope=f) == records
            served += a.rows_in_memory - before
        assert served == len(recs)

    for u in users:  # every partition held before the race, so writes patch it in place
        a.nearest(F(user_id=u), unit(0), 5)
    threads = [threading.Thread(target=writer, args=(a, 1)),
               threading.Thread(target=writer, args=(a, 2)),
               threading.Thread(target=flusher, args=(a, 3)),
               threading.Thread(target=flusher, args=(a, 4)),
               threading.Thread(target=reader, args=(5,)),
               threading.Thread(target=reader, args=(6,))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    settled()
    flusher(b, 7)  # another process's flushes: rank fields read again, rows dropped
    assert errors == []
    settled()
    writer(b, 8)  # and its writes: partitions reloaded
    settled()
    for s in (a, b):
        s.close()


def test_rows_held_for_searches_are_bounded(db: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_mod, "ROW_CACHE_ROWS", 3)
    s = open_store(db)
    recs = [record(user_id=f"u{i % 2}") for i in range(6)]
    for n, r in enumerate(recs):
        s.insert(r, unit(n + 1), event(r))
    for user in ("u0", "u1"):
        f = F(user_id=user)
        s.nearest(f, unit(0), 5)
        mine = [r.id for r in recs if r.user_id == user]
        assert set(s.get_many("t1", mine, scope=f)) == set(mine)
    held = {mid for part in s._cache.values() for mid in part.rows}
    assert len(held) == 3 and held == {r.id for r in recs if r.user_id == "u1"}
    before = s.rows_in_memory  # the most recent ones are found, the rest read again
    assert set(s.get_many("t1", [r.id for r in recs], scope=F(user_id="u1"))) == {
        r.id for r in recs}
    assert s.rows_in_memory - before == 3
    s.close()


def vm_steps(store: SQLiteStore, work: Any) -> int:
    """SQLite virtual-machine steps (in hundreds) that `work` makes this thread's
    connections take: a measure of how many rows a statement visits, free of timing."""
    count = 0

    def tick() -> int:
        nonlocal count
        count += 1
        return 0

    conns = [store._writer, store._conn()]
    for c in conns:
        c.set_progress_handler(tick, 100)
    try:
        work()
    finally:
        for c in conns:
            c.set_progress_handler(None, 100)
    return count


def test_reads_and_access_flushes_by_id_do_not_scan_the_tenant(db: Path) -> None:
    """Work on a few memories costs the same however many others the tenant holds (a
    SELECT DISTINCT in apply_access once walked the whole tenant: 300 ms at 100k)."""
    s = open_store(db)
    mine = [record(user_id="u1") for _ in range(3)]
    for n, r in enumerate(mine):
        s.insert(r, unit(n + 1), event(r))
    wanted = [r.id for r in mine]

    def work() -> None:
        s.apply_access("t1", [AccessUpdate(mid, 1, NOW, 0.8, 0.03, Tier.SHORT)
                              for mid in wanted])
        assert set(s.get_many("t1", wanted)) == set(wanted)
        assert set(s.rank_fields("t1", wanted)) == set(wanted)

    few = vm_steps(s, work)
    with s.atomic("t1", None):
        for n in range(2000):
            other = record(user_id=f"o{n % 40}")
            s.insert(other, unit(100 + n), event(other))
    many = vm_steps(s, work)
    assert few > 0
    assert many <= few + 5, (few, many)
    s.close()


def test_a_read_section_reads_the_versions_once_and_sees_its_own_process_writes(
        two: tuple[SQLiteStore, SQLiteStore]) -> None:
    a, b = two
    f = F(user_id="u1")
    r1, r2 = record(content="apricot"), record(content="quince")
    a.insert(r1, unit(1), event(r1))
    a.nearest(f, unit(1), 5)
    statements: list[str] = []
    a._conn().set_trace_callback(statements.append)
    try:
        with a.reading(f):
            assert ids(a.nearest(f, unit(1), 5)) == [r1.id]
            assert a.rank_columns("t1", [r1.id], scope=f).found.tolist() == [True]
            assert set(a.get_many("t1", [r1.id], scope=f)) == {r1.id}
            a.similarities(f, unit(1), [r1.id])
            versions_read = sum("FROM partitions" in sql for sql in statements)
            # another process's write while the section is open: not seen inside it
            b.insert(r2, unit(2), event(r2))
            assert ids(a.nearest(f, unit(2), 5)) == [r1.id]
    finally:
        a._conn().set_trace_callback(None)
    assert versions_read == 1  # at entry, not once per call
    assert ids(a.nearest(f, unit(2), 5)) == [r2.id, r1.id]  # seen after it
    # this process's own write while a section is open: its reads see it
    r3 = record(content="fig")
    with a.reading(f):
        a.nearest(f, unit(1), 5)
        a.insert(r3, unit(3), event(r3))
        assert ids(a.nearest(f, unit(3), 1)) == [r3.id]
        assert a.rank_columns("t1", [r3.id], scope=f).found.tolist() == [True]
        assert set(a.get_many("t1", [r3.id], scope=f)) == {r3.id}
    # sections do not nest, nor hold anything after they end
    with a.reading(f), a.reading(f):
        pass
    assert getattr(a._local, "pinned", None) is None


def test_candidates_in_one_pass_are_the_composed_ones(db: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A held user's candidates come from its partition in one pass, and are exactly what
    nearest, similarities and rank_columns compose; where the partition cannot answer
    alone, they are composed."""
    s = open_store(db)
    composed: list[int] = []
    compose = sqlite_mod.compose_candidates

    def spy(*args: Any) -> Any:
        composed.append(1)
        return compose(*args)

    monkeypatch.setattr(sqlite_mod, "compose_candidates", spy)
    recs = [record(agent_id=("a1", "a2", None)[i % 3], session_id=f"s{i % 4}",
                   importance=i / 30, relevance=1 - i / 60, decay_rate=i / 1000,
                   pinned=i % 5 == 0, tags=["red"] if i % 2 else [],
                   last_accessed_at=None if i % 3 else T0 + timedelta(hours=i),
                   status=Status.SUPERSEDED if i % 7 == 6 else Status.ACTIVE,
                   expires_at=NOW - timedelta(hours=1) if i == 4
                   else NOW + timedelta(days=1) if i == 8 else None)
            for i in range(30)]
    for i, r in enumerate(recs):
        s.insert(r, unit(100 + i), event(r))
    other = record(user_id="u2")
    s.insert(other, unit(99), event(other))

    def check(f: Filters, vectors: list[Vec], wanted: list[int], include: set[str],
              one_pass: bool) -> None:
        composed.clear()
        got = s.candidates(f, vectors, wanted, include)
        assert bool(composed) is not one_pass, (f, wanted, include)
        want = compose(s, f, vectors, wanted, include)
        order = sorted(range(len(got.ids)), key=got.ids.__getitem__)
        assert [got.ids[i] for i in order] == want.ids  # composed: sorted by id
        for mine, theirs in zip(got.similarities, want.similarities, strict=True):
            np.testing.assert_allclose(mine[order], theirs, rtol=0, atol=1e-6)
        for name in ("found", "importance", "relevance", "decay_rate", "pinned", "created",
                     "last_accessed"):
            np.testing.assert_array_equal(getattr(got.columns, name)[order],
                                          getattr(want.columns, name), err_msg=name)
        assert [got.columns.session_id[i] for i in order] == want.columns.session_id

    f = F(user_id="u1")
    s.nearest(f, unit(0), 5)  # held from now on
    visible = [r.id for r in recs if r.status is Status.ACTIVE and r.id != recs[4].id]
    assert len(visible) == 25
    for vectors, wanted in (([unit(1)], [5]), ([unit(2)], [50]), ([unit(3), unit(4)], [6, 3]),
                            ([unit(5), unit(6)], [6, 40])):
        for include in (set(), set(visible[::4])):
            check(f, vectors, wanted, include, True)
            check(F(user_id="u1", agent_id="a1"), vectors, wanted,
                  {r.id for r in recs[:10] if r.agent_id == "a1" and r.status is Status.ACTIVE
                   and r.id != recs[4].id}, True)
            check(F(user_id="u1", include_superseded=True), vectors, wanted, include, True)
    # what the partition cannot answer alone: an included id of another user, expired, or
    # superseded; a filter the rows must check; a scope not held yet; no user
    check(f, [unit(1)], [5], {other.id}, False)
    check(f, [unit(1)], [5], {recs[4].id}, False)
    check(f, [unit(1)], [5], {recs[6].id, "no-such-id"}, False)
    check(F(user_id="u1", tags=("red",)), [unit(1)], [5], set(), False)
    check(F(user_id="u2"), [unit(1)], [5], set(), False)
    check(F(), [unit(1)], [5], set(), False)
    check(F(user_id="u2"), [unit(1)], [5], set(), True)  # held by the composing pass
    # rows held without their rank fields: composed (rank_columns reads those rows)
    part = s._cache[("t1", "u1")]
    part.upsert(int(part.rowids[0]), str(part.ids[0]), None, None, None, "default", True,
                None)
    assert part.n_unranked == 1
    check(f, [unit(1)], [50], set(), False)
    part.set_rank(str(part.ids[0]), (0.5, 0.5, 0.0, False, 1.7e9, None))
    assert part.n_unranked == 0
    part.remove(str(part.ids[1]))
    assert part.n_unranked == 0


def test_rank_fields_inside_a_write_section_are_the_sections(db: Path) -> None:
    s = open_store(db)
    f = F(user_id="u1")
    r1 = record(importance=0.3)
    s.insert(r1, unit(1), event(r1))
    s.nearest(f, unit(0), 5)
    with s.atomic("t1", "u1"):
        r1b = replace(r1, importance=0.7)
        s.update(r1b, None, event(r1b, "update"))
        before = s.rank_in_memory
        assert s.rank_fields("t1", [r1.id], scope=f)[r1.id].importance == 0.7
        assert s.rank_in_memory == before  # the uncommitted row, not the partition
    assert s.rank_fields("t1", [r1.id], scope=f)[r1.id].importance == 0.7
    s.nearest(f, unit(0), 5)
    before = s.rank_in_memory
    with s.atomic("t1", None):  # an access flush alone leaves the version as it was
        s.apply_access("t1", [AccessUpdate(r1.id, 1, NOW, 0.9, 0.02, Tier.SHORT)])
        assert s.rank_fields("t1", [r1.id], scope=f)[r1.id].relevance == 0.9
        assert s.rank_in_memory == before
    assert s.rank_fields("t1", [r1.id], scope=f)[r1.id].relevance == 0.9
    assert s.rank_in_memory == before + 1  # patched in place on commit
    s.close()


def test_keyword_postings_cache_is_bounded(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each user here holds 8 postings (4 words in 2 rows); 20 fit two users. The user
    searched least recently is dropped, and every answer stays FTS5's."""
    monkeypatch.setattr(sqlite_mod, "KW_CACHE_POSTINGS", 20)
    s = open_store(db)
    for i in range(3):
        for j in range(2):
            r = record(content=f"apricot jam number{j} user{i}", user_id=f"u{i}")
            s.insert(r, unit(10 * i + j), event(r))
    hold_postings(s, "u0", "u1")
    assert set(s._kw_scopes) == {("t1", "u0"), ("t1", "u1")}
    s.keyword_search(F(user_id="u0"), "jam", 5)  # u0 is now the more recently searched
    hold_postings(s, "u2")
    assert set(s._kw_scopes) == {("t1", "u0"), ("t1", "u2")}
    assert sum(scope.size for scope in s._kw_scopes.values()) == 16
    for i in range(3):
        hits = s.keyword_search(F(user_id=f"u{i}"), "apricot", 5)
        same_hits(hits, fts5_only(s, F(user_id=f"u{i}"), "apricot", 5))
        assert len(hits) == 2
    s.close()


def test_keyword_stats_of_a_large_tenant_are_counted_in_the_background(
        db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keyword_stats, "EXACT_ROWS", 1)
    monkeypatch.setattr(keyword_stats, "INLINE_ROWS", 1)
    s, a, b = coffee_and_zanzibar(db)
    # not counted yet: both words match, scored with the idf FTS5 computes from u1 alone
    assert set(ids(s.keyword_search(F(user_id="u1"), "coffee zanzibar", 5))) == {a.id, b.id}
    s._kw_stats.wait()
    assert ids(s.keyword_search(F(user_id="u1"), "coffee zanzibar", 5)) == [b.id, a.id]
    for i in range(60):
        r = record(content=f"zanzibar {i}", user_id="u3")
        s.insert(r, unit(100 + i), event(r))
    # counted a moment ago: the counts stand until they are TTL old
    s._kw_stats.wait()
    assert ids(s.keyword_search(F(user_id="u1"), "coffee zanzibar", 5)) == [b.id, a.id]
    monkeypatch.setattr(keyword_stats, "TTL", 0.0)
    s.keyword_search(F(user_id="u1"), "coffee zanzibar", 5)  # stale: recounted meanwhile
    s._kw_stats.wait()
    assert ids(s.keyword_search(F(user_id="u1"), "coffee zanzibar", 5)) == [a.id, b.id]
    s.close()
    assert not s._kw_stats._thread or not s._kw_stats._thread.is_alive()


def test_keyword_stats_of_a_mid_sized_tenant_are_counted_when_first_needed(
        db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keyword_stats, "EXACT_ROWS", 1)
    s, a, b = coffee_and_zanzibar(db)
    assert ids(s.keyword_search(F(user_id="u1"), "coffee zanzibar", 5)) == [b.id, a.id]
    assert s._kw_stats._thread is None  # nothing went to the background
    for i in range(60):
        r = record(content=f"zanzibar {i}", user_id="u3")
        s.insert(r, unit(100 + i), event(r))
    assert ids(s.keyword_search(F(user_id="u1"), "coffee zanzibar", 5)) == [b.id, a.id]
    monkeypatch.setattr(keyword_stats, "TTL", 0.0)
    assert ids(s.keyword_search(F(user_id="u1"), "coffee zanzibar", 5)) == [a.id, b.id]
    s.close()


def test_migration_0004_builds_the_keyword_index_from_rows(db: Path) -> None:
    s = open_store(db)
    rows = [record(content=f"kiwi number {i}", user_id=f"u{i % 2}") for i in range(5)]
    for i, r in enumerate(rows):
        s.insert(r, unit(i), event(r))
    s.close()
    # back to the state before 0004: the old index, no per-user words
    raw = sqlite3.connect(db)
    raw.executescript(
        """
        DROP TABLE memories_kw;
        CREATE VIRTUAL TABLE memories_fts USING fts5(scope, content);
        DELETE FROM schema_migrations WHERE name = '0004_keyword_index_per_user';
        """
    )
    raw.close()
    s = open_store(db)
    assert "0004_keyword_index_per_user" in applied(db)
    assert sorted(ids(s.keyword_search(F(user_id="u0"), "kiwi", 10))) == sorted(
        r.id for r in rows if r.user_id == "u0")
    assert len(s.keyword_search(F(), "kiwi", 10)) == 5
    raw = sqlite3.connect(db)
    assert raw.execute(
        "SELECT count(*) FROM sqlite_master WHERE name = 'memories_fts'").fetchone() == (0,)
    raw.close()
    s.delete("t1", rows[0].id, event(rows[0], "delete"))  # the rebuilt rows delete cleanly
    s._writer.execute("INSERT INTO memories_kw (memories_kw) VALUES ('integrity-check')")
    assert len(s.keyword_search(F(), "kiwi", 10)) == 4
    s.close()


def test_migration_0007_moves_the_access_fields_to_their_own_table(db: Path) -> None:
    s = open_store(db)
    rows = [record(content=f"fig {i}", user_id=f"u{i % 3}", tier=list(Tier)[i % 3],
                   relevance=0.5 + i / 100, decay_rate=0.01 * i, access_count=i,
                   last_accessed_at=None if i % 2 else T0 + timedelta(hours=i))
            for i in range(9)]
    for i, r in enumerate(rows):
        s.insert(r, unit(i), event(r))
    s.apply_access("t1", [AccessUpdate(rows[1].id, 2, T0 + timedelta(days=3), 0.9, 0.04,
                                       Tier.LONG)])
    before = {r.id: s.get("t1", r.id) for r in rows}
    s.close()
    # back to the state before 0007: the access fields in memories
    raw = sqlite3.connect(db)
    raw.executescript(
        """
        ALTER TABLE memories ADD COLUMN tier TEXT NOT NULL DEFAULT '';
        ALTER TABLE memories ADD COLUMN relevance REAL NOT NULL DEFAULT 0;
        ALTER TABLE memories ADD COLUMN decay_rate REAL NOT NULL DEFAULT 0;
        ALTER TABLE memories ADD COLUMN access_count INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE memories ADD COLUMN last_accessed_at REAL;
        UPDATE memories SET (tier, relevance, decay_rate, access_count, last_accessed_at) =
            (SELECT tier, relevance, decay_rate, access_count, last_accessed_at
             FROM memory_access a WHERE a.memory_rowid = memories.rowid);
        DROP TABLE memory_access;
        DELETE FROM schema_migrations WHERE name = '0007_memory_access';
        """
    )
    raw.close()
    s = open_store(db)
    assert "0007_memory_access" in applied(db)
    assert {r.id: s.get("t1", r.id) for r in rows} == before
    assert before[rows[1].id].access_count == 3 and before[rows[1].id].tier is Tier.LONG
    raw = sqlite3.connect(db)
    columns = {r[1] for r in raw.execute("PRAGMA table_info(memories)")}
    assert columns.isdisjoint(sqlite_mod.ACCESS_COLUMNS) and "importance" in columns
    assert raw.execute("SELECT count(*) FROM memory_access").fetchone() == (9,)
    raw.close()
    # the moved rows are written, listed by tier and deleted like new ones
    s.apply_access("t1", [AccessUpdate(rows[2].id, 1, T0 + timedelta(days=4), 0.7, 0.02,
                                       Tier.MEDIUM)])
    got = s.get("t1", rows[2].id)
    assert got is not None and got.access_count == 3 and got.tier is Tier.MEDIUM
    assert s.list(F(tiers=("medium",)), 20, 0)[1] == 3
    assert s.delete("t1", rows[2].id, event(rows[2], "delete"))
    assert s.list(F(tiers=("medium",)), 20, 0)[1] == 2
    s.close()


def test_an_access_flush_writes_few_pages_for_many_rows_of_one_user(db: Path) -> None:
    """An access flush writes the narrow memory_access table, where a user's rows sit side
    by side, not the memories rows (~5 to a 4 KB page, every user's in insertion order):
    200 rows of one user among others' dirty a handful of pages, not ~200."""
    s = open_store(db)
    mine = []
    for i in range(600):
        r = record(content=f"{'long words ' * 60} {i}", user_id="u1" if i % 3 == 0 else f"o{i}")
        s.insert(r, unit(i), event(r))
        if r.user_id == "u1":
            mine.append(r)
    conn = s._writer
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    s.apply_access("t1", [AccessUpdate(r.id, 1, NOW, 0.9, 0.02, Tier.SHORT) for r in mine])
    frames = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    assert 0 < frames <= 20, frames
    assert all((got := s.get("t1", r.id)) is not None and got.access_count == 1
               for r in mine)
    s.close()


def test_an_access_flush_in_a_write_section_sees_the_section_s_rows(db: Path) -> None:
    """Inside a caller's transaction, a flush finds where a memory written in it keeps its
    access fields (another connection would not see the row yet)."""
    s = open_store(db)
    r = record(content="quince", user_id="u1")
    with s.atomic("t1", "u1"):
        s.insert(r, unit(1), event(r))
        s.apply_access("t1", [AccessUpdate(r.id, 4, NOW, 0.8, 0.03, Tier.MEDIUM)])
    got = s.get("t1", r.id)
    assert got is not None and got.access_count == 4 and got.tier is Tier.MEDIUM
    s.close()


def test_keyword_terms_are_plain_folded_words() -> None:
    # nothing a caller sends can reach FTS5 as syntax: only runs of letters and digits
    assert keyword_terms('NEAR(a b) OR "x* -y') == ["near", "b", "x", "y"]
    assert keyword_terms("the cat and the hat") == ["cat", "hat"]
    assert keyword_terms("what is it") == ["what", "is", "it"]  # only stopwords: kept
    assert keyword_terms("Apple apple APPLE") == ["apple"]
    assert keyword_terms("Crème brûlée_Ünïcode") == ["creme", "brulee", "unicode"]
    assert keyword_terms("🍎 !!! ") == []
    assert keyword_terms("") == []
    assert len(keyword_terms(" ".join(f"w{i}" for i in range(100)))) == 32


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=60))
def test_fold_of_ascii_text_is_the_unicode_path(text: str) -> None:
    """fold() skips NFKD and the combining-mark pass for ASCII text: same words."""
    slow = " ".join(text_mod.WORD.findall("".join(
        ch for ch in unicodedata.normalize("NFKD", text)
        if not unicodedata.combining(ch)).lower()))
    assert text_mod.fold(text) == slow


def test_keyword_search_treats_fts_syntax_as_words(db: Path) -> None:
    s = open_store(db)
    r = record(content="near the x-ray of column t", user_id="u1")
    s.insert(r, unit(1), event(r))
    for q in ('NEAR(x ray)', '"x-ray', "t : x", "x* OR NOT ray", "u : near", "{t u} : ray"):
        assert ids(s.keyword_search(F(user_id="u1"), q, 5)) == [r.id], q
    assert s.keyword_search(F(user_id="u1"), "( ) * : ^", 5) == []
    s.close()


# -- keyword index upkeep ---------------------------------------------------------------------


def segment_lookups(store: SQLiteStore, query: str) -> int:
    """How many FTS5 segments one keyword search of a single word probes when FTS5 answers
    it (not postings held in memory, which a background build may have made ready)."""
    conn = store._conn()
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(store, "_keyword_in_memory", lambda *a: None)
            store.keyword_search(F(user_id="u1"), query, 50)
    finally:
        conn.set_trace_callback(None)
    return sum("memories_kw_idx" in sql for sql in seen)


def test_merging_the_keyword_index_keeps_results_and_cuts_lookups(db: Path) -> None:
    s = open_store(db)
    for i in range(120):  # one write transaction, so one FTS5 segment, each
        r = record(content=f"walnut note {i} " + "filler " * (i % 7), user_id=f"u{i % 2}")
        s.insert(r, unit(i), event(r))
    before = s.keyword_search(F(user_id="u1"), "walnut note", 50)
    many = segment_lookups(s, "walnut")
    assert s.merge_keyword_index() >= 2
    merged = segment_lookups(s, "walnut")
    s._writer.execute("INSERT INTO memories_kw (memories_kw) VALUES ('optimize')")
    assert merged == segment_lookups(s, "walnut") < many / 4  # as good as FTS5's optimize
    after = s.keyword_search(F(user_id="u1"), "walnut note", 50)
    assert ids(after) == ids(before) and len(after) == 50
    np.testing.assert_allclose([x for _, x in after], [x for _, x in before], rtol=1e-9)
    assert s.merge_keyword_index() == 1  # nothing left: one step finds no work
    s.close()


def test_keyword_index_is_merged_in_the_background(
        db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_mod, "KW_MERGE_AFTER", 25)
    s = open_store(db)

    def add(i: int) -> None:
        r = record(content=f"hazel branch {i}", user_id="u1")
        s.insert(r, unit(i), event(r))

    for i in range(24):
        add(i)
    assert s._kw_upkeep is None  # below the threshold: no thread yet
    many = segment_lookups(s, "hazel")
    add(24)  # the 25th write transaction wakes the merge
    deadline = time.monotonic() + 20
    while s.kw_merges < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert s.kw_merges >= 1 and s._kw_upkeep is not None
    assert s._kw_upkeep.name == "engram-fts-merge"
    merged = segment_lookups(s, "hazel")
    assert merged < many / 4
    assert s.merge_keyword_index() == 1 and segment_lookups(s, "hazel") == merged
    assert len(s.keyword_search(F(user_id="u1"), "hazel", 100)) == 25
    s.close()
    assert not s._kw_upkeep.is_alive()


def test_counting_visible_memories_reads_the_live_index(db: Path) -> None:
    """The total of a list page counts the tenant's visible memories; the partial index of
    active memories (migration 0005) answers that without reading the rows, and only what
    it covers goes to it."""
    s = open_store(db)
    for i in range(6):
        r = record(content=f"plum {i}", user_id=f"u{i % 2}", session_id="s1" if i < 2 else None,
                   tier=Tier.LONG if i == 5 else Tier.SHORT)
        s.insert(r, unit(i), event(r))
    conn = s._conn()
    for f, total, live in ((F(), 6, True), (F(session_id="s1"), 2, True),
                           (F(user_id="u1"), 3, False), (F(tiers=("long",)), 1, False),
                           (F(include_superseded=True), 6, False)):
        where, params = s._where(f)
        sql = f"SELECT COUNT(*) FROM {sqlite_mod._from(where)} WHERE {where}"
        plan = " ".join(str(r[-1]) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        assert ("ix_memories_live" in plan) is live, plan
        assert ("SEARCH a " in plan) is bool(f.tiers), plan  # joined only when read
        assert conn.execute(sql, params).fetchone()[0] == total
        assert s.list(f, 10, 0)[1] == total
    s.close()


@settings(max_examples=200, deadline=None)
@given(value=st.one_of(
    st.lists(st.text(max_size=12), max_size=5),
    st.dictionaries(st.text(max_size=6), st.one_of(st.integers(), st.text(max_size=6),
                                                  st.lists(st.integers(), max_size=3)),
                    max_size=4),
    st.lists(st.one_of(st.integers(), st.none()), max_size=4)))
def test_record_json_fields_parse_as_json_and_are_never_shared(value: Any) -> None:
    # short lists of strings are parsed once and copied: each record must get its own
    from engramdb.storage import sqlite as sqlite_mod

    text = json.dumps(value)
    first = sqlite_mod._json(text)
    assert first == value and type(first) is type(value)
    if isinstance(first, list):
        first.append("mutated")
    else:
        first["mutated"] = 1
    second = sqlite_mod._json(text)
    assert second == value and second is not first
    assert len(sqlite_mod._FLAT_LISTS) <= sqlite_mod._FLAT_LISTS_MAX
