"""Profiling helpers for a database kept by `bench_core.py --keep`.

    # where search time goes, for the largest or the median-sized user (cProfile)
    .venv/bin/python bench/profile_core.py search DB --user largest --queries 300
    # the same under py-spy (native frames show ONNX Runtime):
    .venv/bin/py-spy record --native -r 1000 -f raw -o search.txt -- \\
        .venv/bin/python bench/profile_core.py search DB --user largest --no-cprofile

    # where add_many time goes on top of the kept data (runs on a copy of DB)
    .venv/bin/python bench/profile_core.py ingest DB --batches 20

    # the model alone: one query vs threads, and batching choices
    .venv/bin/python bench/profile_core.py model
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import chunks, generate_items, latency_summary
from corpus import Corpus

from engramdb import Engram, Settings
from engramdb.embeddings import MiniLMEmbedder, load_default_embedder


def pick_user(db: Path, which: str) -> tuple[str, int]:
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT user_key, COUNT(*) FROM memories WHERE status = 'active' "
        "GROUP BY user_key ORDER BY COUNT(*), user_key"
    ).fetchall()
    conn.close()
    if which == "largest":
        return rows[-1][0], rows[-1][1]
    if which == "typical":
        return rows[len(rows) // 2][0], rows[len(rows) // 2][1]
    return which, dict(rows).get(which, 0)


def print_stats(prof: cProfile.Profile, n: int, top: int) -> None:
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        st = pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(key)
        st.print_stats(top)
        print(f"--- cProfile by {key} ({n} calls) ---")
        print("\n".join(buf.getvalue().splitlines()[6:]))


def cmd_search(args: argparse.Namespace) -> None:
    user, count = pick_user(args.db, args.user)
    print(f"user {user}: {count} memories")
    mem = Engram(path=args.db)
    queries = Corpus(args.seed).queries(args.queries + 1)
    mem.search(queries[0], user_id=user)  # load the partition
    prof = cProfile.Profile() if args.cprofile else None
    lat = []
    if prof:
        prof.enable()
    for q in queries[1:]:
        t0 = time.perf_counter()
        mem.search(q, user_id=user, limit=args.limit)
        lat.append((time.perf_counter() - t0) * 1000)
    if prof:
        prof.disable()
    s = latency_summary(lat)
    print(f"latency{' (under cProfile)' if prof else ''}: p50 {s['p50_ms']:.2f} ms, "
          f"p99 {s['p99_ms']:.2f} ms, mean {s['mean_ms']:.2f} ms")
    if prof:
        print_stats(prof, len(lat), args.top)
    mem.close()


class LoadCounter:
    """Counts full reloads of vector partitions (Partition objects built by _partition)."""

    def __init__(self) -> None:
        self.loads = 0
        self.stale = 0  # reloads of a partition that was cached at another version
        self.rows = 0
        self.seconds = 0.0

    def install(self, store: Any) -> None:
        orig: Callable[..., Any] = store._partition

        def counted(conn: Any, tenant_id: str, user_key: str, version: int) -> Any:
            cached = store._cache.get((tenant_id, user_key))
            hit = cached is not None and cached.version == version
            t0 = time.perf_counter()
            part = orig(conn, tenant_id, user_key, version)
            if not hit:
                self.loads += 1
                self.stale += cached is not None
                self.rows += part.n
                self.seconds += time.perf_counter() - t0
            return part

        store._partition = counted


def cmd_ingest(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="engram-prof-"))
    try:
        db = work / "copy.db"
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{args.db}{suffix}")
            if src.exists():
                shutil.copy(src, f"{db}{suffix}")
        n = args.batches * args.batch
        # the same users in the same proportions as the benchmark, new texts
        items = generate_items(n, args.users, args.top_share, Corpus(args.seed + 1000),
                               1, 10**9)
        mem = Engram(path=db)
        counter = LoadCounter()
        counter.install(mem.service.store)
        raw = getattr(mem.service.embedder, "_inner", None)
        prof = cProfile.Profile() if args.cprofile else None
        t_add = t_raw = 0.0
        for batch in chunks(items, args.batch):
            if raw is not None:
                t0 = time.perf_counter()
                for c in chunks([it.content for it in batch], 32):
                    raw.embed(list(c))
                t_raw += time.perf_counter() - t0
            if prof:
                prof.enable()
            t0 = time.perf_counter()
            mem.add_many([it.as_dict() for it in batch])
            t_add += time.perf_counter() - t0
            if prof:
                prof.disable()
        print(f"add_many: {n / t_add:.1f} texts/s; raw embedder on the same texts "
              f"{n / t_raw if t_raw else float('nan'):.1f} texts/s "
              f"({100 * t_raw / t_add if t_add else 0:.0f}%)")
        print(f"partition loads: {counter.loads}, of which {counter.stale} reloads of a cached "
              f"partition at another version ({counter.rows:,} rows, "
              f"{counter.seconds:.2f} s = {100 * counter.seconds / t_add:.1f}% of add_many time)"
              f" over {args.batches} batches")
        if prof:
            print_stats(prof, args.batches, args.top)
        mem.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cmd_model(args: argparse.Namespace) -> None:
    s = Settings()
    corpus = Corpus(args.seed + 2000)
    queries = corpus.queries(args.queries)
    texts_iter = corpus.memories()
    texts = [next(texts_iter) for _ in range(args.texts)]
    for threads in (1, 2):
        e = MiniLMEmbedder(threads=threads, max_batch=s.embed_max_batch)
        lat = []
        for q in queries:
            t0 = time.perf_counter()
            e.embed([q])
            lat.append((time.perf_counter() - t0) * 1000)
        sm = latency_summary(lat)
        print(f"bare model, threads={threads}: one query p50 {sm['p50_ms']:.2f} ms, "
              f"p99 {sm['p99_ms']:.2f} ms")
        if threads == 1:
            t0 = time.perf_counter()
            for c in chunks(texts, 32):
                e.embed(list(c))
            r32 = len(texts) / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            for c in chunks(texts, 256):
                e.embed(list(c))  # sorted by length across 256, run 32 at a time
            r256 = len(texts) / (time.perf_counter() - t0)
            print(f"bare model, {len(texts)} memories: chunks of 32 in arrival order "
                  f"{r32:.1f} texts/s; calls of 256 (length-sorted, run 32 at a time) "
                  f"{r256:.1f} texts/s")
        e.close()
    batcher = load_default_embedder(s)
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        batcher.embed([q])
        lat.append((time.perf_counter() - t0) * 1000)
    print(f"MicroBatcher (default): one query p50 {statistics.median(lat):.2f} ms")
    batcher.close()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    ps = sub.add_parser("search", help="profile Engram.search for one user")
    ps.add_argument("db", type=Path)
    ps.add_argument("--user", default="largest", help="largest, typical or a user id")
    ps.add_argument("--queries", type=int, default=300)
    ps.add_argument("--limit", type=int, default=10)
    pi = sub.add_parser("ingest", help="profile add_many on a copy of the database")
    pi.add_argument("db", type=Path)
    pi.add_argument("--batches", type=int, default=20)
    pi.add_argument("--batch", type=int, default=256)
    pi.add_argument("--users", type=int, default=1000)
    pi.add_argument("--top-share", type=float, default=0.03)
    pm = sub.add_parser("model", help="the bare model: latency and batching")
    pm.add_argument("--queries", type=int, default=200)
    pm.add_argument("--texts", type=int, default=1024)
    for q in (ps, pi, pm):
        q.add_argument("--seed", type=int, default=77)
        q.add_argument("--top", type=int, default=25, help="rows of cProfile output")
        q.add_argument("--no-cprofile", dest="cprofile", action="store_false")
    args = p.parse_args(argv)
    {"search": cmd_search, "ingest": cmd_ingest, "model": cmd_model}[args.cmd](args)


if __name__ == "__main__":
    main()
