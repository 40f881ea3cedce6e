"""Storage benchmark: the Store backends (SQLite, PostgreSQL + pgvector) without the model.

    .venv/bin/python bench/bench_storage.py                          # 100k rows, both backends
    .venv/bin/python bench/bench_storage.py --sizes 5000 --users 100 # quick, ~1 min
    .venv/bin/python bench/bench_storage.py --sizes 100000 1000000   # long run, not for CI

Random unit vectors (384-d by default) stand in for embeddings and synthetic agent memories
(bench/corpus.py) for texts; `--users` users (1,000) own them Zipf-skewed as in
bench_core.py (the largest user ~3 % of all rows). Sizes are cumulative on one database per
backend. For each size:

* ingest: rows/s through the store as the core writes them: batches of `--batch` items,
  grouped by user, one `atomic` section per user group, and in it per item find_by_hash +
  nearest(k=1, the user's exact scope: the near-duplicate check) + insert.
  `--no-checks` leaves the two reads out.
* nearest(k=10) and keyword_search(k=10) latency (p50/p99 over `--queries` queries) for the
  typical (median) user and the largest user, warm.
* tenant-wide nearest(k=10) over every row (exact numpy on SQLite; on PostgreSQL the HNSW
  index once the tenant holds ann_min_rows = 50k rows), with its recall@10 against brute
  force.
* database size.

PostgreSQL comes from `pgserver` (PostgreSQL 16, pgvector 0.6, default configuration:
shared_buffers 128 MB) in a temporary directory, or `--pg-url` for a server of your own (the
benchmark creates and drops a schema there). Progress on stderr, a table on stdout, every
figure in the JSON file `--out`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import CpuMonitor, Progress, latency_summary, log, user_weights
from corpus import Corpus

from engramdb.models import HistoryEvent, MemoryRecord
from engramdb.storage.base import Filters, Store

TENANT = "bench"
MODEL = "bench-random"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


# -- data ----------------------------------------------------------------------------------


class Data:
    """Owners, texts and vectors for up to max(sizes) rows, deterministic from the seed."""

    def __init__(self, n: int, users: int, top_share: float, dim: int, seed: int) -> None:
        rng = random.Random(f"assign:{seed}")
        weights = user_weights(users, top_share)
        ids = [f"user-{i:04d}" for i in range(users)]
        random.Random(f"ids:{seed}").shuffle(ids)
        self.owner = [ids[i] for i in rng.choices(range(users), weights=weights, k=n)]
        corpus = Corpus(seed)
        texts = corpus.memories()
        prog = Progress("texts", n, max(1, n // 5))
        self.text: list[str] = []
        for i in range(n):
            self.text.append(next(texts))
            prog.update(i + 1)
        self.queries = corpus.queries(2000)
        vrng = np.random.default_rng(seed)
        self.vec = vrng.standard_normal((n, dim), dtype=np.float32)
        self.vec /= np.linalg.norm(self.vec, axis=1, keepdims=True)
        self.qvec = vrng.standard_normal((2000, dim), dtype=np.float32)
        self.qvec /= np.linalg.norm(self.qvec, axis=1, keepdims=True)

    def record(self, i: int) -> MemoryRecord:
        at = T0 + timedelta(seconds=i)
        text = self.text[i]
        return MemoryRecord(
            id=f"{i:08x}-0000-7000-8000-000000000000", tenant_id=TENANT, user_id=self.owner[i],
            content=text, integrity_hash=hashlib.sha256(text.encode()).hexdigest(),
            created_at=at, updated_at=at, importance=0.5, embedding_model=MODEL,
        )


def event(rec: MemoryRecord) -> HistoryEvent:
    return HistoryEvent(id=f"ev-{rec.id}", memory_id=rec.id, tenant_id=rec.tenant_id,
                        event="create", at=rec.created_at, actor="bench",
                        changes={"content": rec.content})


# -- backends --------------------------------------------------------------------------------


class Backend:
    def __init__(self, name: str, args: argparse.Namespace, workdir: Path) -> None:
        self.name = name
        self.args = args
        self.workdir = workdir
        self.server: Any = None
        self.schema: str | None = None
        self.url: str | None = None
        self.store: Store = self._open()

    def _open(self) -> Store:
        if self.name == "sqlite":
            from engramdb.storage.sqlite import SQLiteStore

            return SQLiteStore(self.workdir / "bench.db")
        import psycopg

        from engramdb.storage.postgres import PostgresStore

        if self.args.pg_url:
            base = self.args.pg_url
        else:
            import pgserver

            self.server = pgserver.get_server(self.workdir / "pgdata", cleanup_mode="delete")
            base = self.server.get_uri()
        self.schema = f"engram_bench_{os.getpid()}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(f"CREATE SCHEMA {self.schema}")
        parts = urlsplit(base)
        query = (parts.query + "&" if parts.query else "") + "options=" + quote(
            f"-csearch_path={self.schema},public")
        self.url = urlunsplit(parts._replace(query=query))
        self.base_url = base
        return PostgresStore(self.url, pool_max=4)

    def size_bytes(self) -> int:
        if self.name == "sqlite":
            return sum(p.stat().st_size for p in self.workdir.glob("bench.db*"))
        store: Any = self.store
        with store._conn() as conn:
            row = conn.execute(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind = 'r'").fetchone()
        return int(row[0] or 0)

    def analyze(self) -> None:
        if self.name != "postgres":
            return
        store: Any = self.store
        with store._conn() as conn:
            conn.execute("ANALYZE memories")

    def versions(self) -> dict[str, Any]:
        if self.name == "sqlite":
            import sqlite3

            return {"sqlite": sqlite3.sqlite_version}
        store: Any = self.store
        with store._conn() as conn:
            pg = conn.execute("SHOW server_version").fetchone()
            vec = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
            sb = conn.execute("SHOW shared_buffers").fetchone()
        return {"postgres": pg[0] if pg else None, "pgvector": vec[0] if vec else None,
                "shared_buffers": sb[0] if sb else None}

    def close(self) -> None:
        self.store.close()
        if self.schema and self.args.pg_url and not self.args.keep:
            import psycopg

            with psycopg.connect(self.base_url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {self.schema} CASCADE")
        if self.server is not None and not self.args.keep:
            self.server.cleanup()


# -- measurements ----------------------------------------------------------------------------


def ingest(b: Backend, data: Data, lo: int, hi: int, args: argparse.Namespace) -> dict[str, Any]:
    store = b.store
    cpu = CpuMonitor()
    prog = Progress(f"{b.name} ingest", hi - lo, max(1000, (hi - lo) // 20), "rows")
    skipped = 0
    started = time.perf_counter()
    bulk = getattr(store, "bulk_load", None)
    deferred = args.pg_hnsw == "deferred" and callable(bulk)
    with bulk() if deferred else nullcontext():
        _ingest_rows(store, data, lo, hi, args, prog, skipped_box := [0])
    skipped = skipped_box[0]
    secs = time.perf_counter() - started
    return {"rows": hi - lo, "seconds": round(secs, 2), "rows_per_s": round((hi - lo) / secs, 1),
            "hnsw": "deferred (built after the load, included)" if deferred else "maintained",
            "skipped_as_duplicates": skipped, "other_cores": cpu.others_cores()}


def _ingest_rows(store: Store, data: Data, lo: int, hi: int, args: argparse.Namespace,
                 prog: Progress, skipped: list[int]) -> None:
    for start in range(lo, hi, args.batch):
        groups: dict[str, list[int]] = defaultdict(list)
        for i in range(start, min(hi, start + args.batch)):
            groups[data.owner[i]].append(i)
        for user, idxs in groups.items():
            with store.atomic(TENANT, user):
                for i in idxs:
                    rec = data.record(i)
                    vec = data.vec[i]
                    if not args.no_checks:
                        if store.find_by_hash(TENANT, user, None, "default", rec.integrity_hash):
                            skipped[0] += 1
                            continue
                        f = Filters(tenant_id=TENANT, now=rec.created_at, user_id=user,
                                    exact_scope=True, namespace="default")
                        near = store.nearest(f, vec, 1)
                        if near and near[0][1] >= 0.95:
                            skipped[0] += 1
                            continue
                    store.insert(rec, vec, event(rec))
        prog.update(min(hi, start + args.batch) - lo)


def timed(fn: Any, *a: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn(*a)
    return (time.perf_counter() - t) * 1000, out


def measure_user(b: Backend, data: Data, user: str, n_rows: int, qoff: int,
                 args: argparse.Namespace) -> dict[str, Any]:
    store = b.store
    f = Filters(tenant_id=TENANT, now=T0 + timedelta(days=3650), user_id=user)
    for j in range(5):  # warm: caches, prepared statements
        store.nearest(f, data.qvec[j], 10)
        store.keyword_search(f, data.queries[j], 10)
    near_ms, kw_ms, kw_hits = [], [], []
    for j in range(args.queries):
        q = (qoff + j) % len(data.queries)
        ms, _ = timed(store.nearest, f, data.qvec[q], 10)
        near_ms.append(ms)
        ms, hits = timed(store.keyword_search, f, data.queries[q], 10)
        kw_ms.append(ms)
        kw_hits.append(len(hits))
    return {"user": user, "memories": n_rows, "nearest": latency_summary(near_ms),
            "keyword_search": latency_summary(kw_ms),
            "keyword_hits_mean": round(statistics.fmean(kw_hits), 1)}


def measure_tenant(b: Backend, data: Data, n: int, args: argparse.Namespace) -> dict[str, Any]:
    store = b.store
    f = Filters(tenant_id=TENANT, now=T0 + timedelta(days=3650))
    ms_all, recalls = [], []
    store.nearest(f, data.qvec[0], 10)
    for j in range(args.tenant_queries):
        q = data.qvec[1000 + j]
        ms, hits = timed(store.nearest, f, q, 10)
        ms_all.append(ms)
        truth = np.argsort(-(data.vec[:n] @ q))[:10]
        want = {data.record(int(i)).id for i in truth}
        recalls.append(len(want & {h[0] for h in hits}) / 10)
    return {"nearest": latency_summary(ms_all), "recall_at_10": round(statistics.fmean(recalls), 3)}


def measure(b: Backend, data: Data, n: int, args: argparse.Namespace) -> dict[str, Any]:
    b.analyze()
    counts: dict[str, int] = defaultdict(int)
    for i in range(n):
        counts[data.owner[i]] += 1
    by_size = sorted(counts, key=lambda u: (counts[u], u))
    typical, largest = by_size[len(by_size) // 2], by_size[-1]
    cpu = CpuMonitor()
    out = {
        "typical": measure_user(b, data, typical, counts[typical], 0, args),
        "largest": measure_user(b, data, largest, counts[largest], 700, args),
        "tenant_wide": measure_tenant(b, data, n, args),
        "database_bytes": b.size_bytes(),
        "other_cores": cpu.others_cores(),
    }
    return out


# -- the run ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--top-share", type=float, default=0.03)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--queries", type=int, default=300,
                   help="timed nearest + keyword_search queries per user class and size")
    p.add_argument("--tenant-queries", type=int, default=30)
    p.add_argument("--backends", nargs="+", default=["sqlite", "postgres"],
                   choices=["sqlite", "postgres"])
    p.add_argument("--pg-url", default=None, help="a PostgreSQL server of your own "
                   "(default: a temporary one from pgserver)")
    p.add_argument("--pg-hnsw", choices=["maintained", "deferred"], default="maintained",
                   help="PostgreSQL: keep the HNSW index up to date on every insert, or drop "
                   "it for each ingest segment and build it at the end (PostgresStore."
                   "bulk_load, as storage/copy.py does)")
    p.add_argument("--no-checks", action="store_true",
                   help="ingest without find_by_hash + nearest before each insert")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--db-dir", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the databases")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "storage.json")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = sorted(set(args.sizes))
    log(f"generating {sizes[-1]:,} rows for {args.users:,} users ...")
    data = Data(sizes[-1], args.users, args.top_share, args.dim, args.seed)
    results: dict[str, Any] = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                 if k != "pg_url"},
        "environment": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(), "numpy": np.__version__},
        "backends": {},
    }
    for name in args.backends:
        workdir = Path(tempfile.mkdtemp(prefix=f"engram-bench-{name}-", dir=args.db_dir))
        b = Backend(name, args, workdir)
        try:
            b.store.migrate()
            b.store.bind_embedding(MODEL, args.dim)
            res: dict[str, Any] = {"versions": b.versions(), "sizes": {}}
            results["backends"][name] = res
            done = 0
            for size in sizes:
                log(f"[{name}] ingest {done:,} -> {size:,}")
                ing = ingest(b, data, done, size, args)
                done = size
                log(f"[{name}] {ing['rows_per_s']:,.0f} rows/s; measuring at {size:,}")
                res["sizes"][str(size)] = {"ingest": ing, **measure(b, data, size, args)}
                write_json(args.out, results)
        finally:
            b.close()
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
    return results


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(path)


def table(results: dict[str, Any]) -> str:
    names = list(results["backends"])
    sizes = sorted({s for r in results["backends"].values() for s in r["sizes"]}, key=int)
    cols = [(n, s) for s in sizes for n in names]
    lines = []

    def row(label: str, values: Sequence[str]) -> None:
        lines.append(f"{label:<34}" + "".join(f"{v:>20}" for v in values))

    row("", [f"{n} @ {int(s):,}" for n, s in cols])

    def get(n: str, s: str) -> dict[str, Any]:
        out: dict[str, Any] = results["backends"][n]["sizes"].get(s, {})
        return out

    def lat(d: dict[str, Any]) -> str:
        return f"{d['p50_ms']:.2f} / {d['p99_ms']:.2f}"

    row("ingest rows/s", [f"{get(n, s)['ingest']['rows_per_s']:,.0f}" for n, s in cols])
    for who in ("typical", "largest"):
        row(f"{who} user: memories", [str(get(n, s)[who]["memories"]) for n, s in cols])
        row("  nearest p50 / p99 ms", [lat(get(n, s)[who]["nearest"]) for n, s in cols])
        row("  keyword_search p50 / p99 ms",
            [lat(get(n, s)[who]["keyword_search"]) for n, s in cols])
    row("tenant-wide nearest p50 / p99 ms",
        [lat(get(n, s)["tenant_wide"]["nearest"]) for n, s in cols])
    row("  recall@10", [f"{get(n, s)['tenant_wide']['recall_at_10']:.3f}" for n, s in cols])
    row("database MB", [f"{get(n, s)['database_bytes'] / 2**20:,.0f}" for n, s in cols])
    row("other processes (cores)",
        [f"{get(n, s)['ingest']['other_cores']} / {get(n, s)['other_cores']}"
         for n, s in cols])
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    print(table(results))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
