"""Core benchmark of engramdb: ingest throughput, search latency, memory and disk.

    .venv/bin/python bench/bench_core.py                          # 10k and 100k, ~20-30 min
    .venv/bin/python bench/bench_core.py --sizes 2000 --users 100  # quick mode, ~1 min

Sizes are reached incrementally on one database (ingest up to 10k, measure, ingest the rest
up to 100k, measure). See bench/README.md for what every figure means and the targets.
Progress goes to stderr; the final table to stdout; everything to the JSON file --out.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import random
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import Corpus

from engramdb import Engram, Settings
from engramdb.embeddings import (
    Embedder,
    MiniLMEmbedder,
    load_default_embedder,
    minilm_from_settings,
)
from engramdb.engine.overlap import Overlap

TARGET_INGEST_PCT = 80.0
TARGET_P50_MS = 8.0
TARGET_P99_MS = 25.0
ONE_THREAD_SAMPLE = 2048  # texts for the one-thread raw reference
TARGET_AT = 100_000
# timed searches, then the bare model on the same queries, block after block
BARE_BLOCK = 25
RAW_CHUNK = 32  # the default embed_max_batch: how the batcher feeds the model


# -- small utilities ---------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt_secs(s: float) -> str:
    s = max(0, int(s))
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class Progress:
    """Prints done/total, the phase's rate, the recent rate and an ETA every `every` units."""

    def __init__(self, label: str, total: int, every: int, unit: str = "items") -> None:
        self.label, self.total, self.every, self.unit = label, total, max(1, every), unit
        self.start = self.last_t = time.perf_counter()
        self.done = self.last_done = self.next_report = 0
        self.next_report = self.every

    def update(self, done: int, extra: str = "") -> None:
        self.done = done
        if done < self.next_report and done < self.total:
            return
        now = time.perf_counter()
        rate = done / max(now - self.start, 1e-9)
        recent = (done - self.last_done) / max(now - self.last_t, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        log(f"  [{self.label}] {done:,}/{self.total:,} {self.unit} ({100 * done / self.total:.0f}%)"
            f"  {rate:,.1f}/s (recent {recent:,.1f}/s)  elapsed {fmt_secs(now - self.start)}"
            f"  ETA {fmt_secs(eta)}{extra}")
        self.last_t, self.last_done = now, done
        while self.next_report <= done:
            self.next_report += self.every


class CpuMonitor:
    """How busy the rest of the machine was during a phase: machine-wide busy CPU time from
    /proc/stat minus this process's own CPU time, as an average number of cores. Anything
    well above 0 means other work competed with the benchmark for the CPUs. The hypervisor's
    share of it (steal: time this VM's CPUs were runnable but given to another guest) is
    also reported on its own."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.steal0, self.self0 = self._snap()

    @staticmethod
    def _snap() -> tuple[float, float, float, float]:
        busy = steal = float("nan")
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
            vals = [int(x) for x in fields]
            hz = os.sysconf("SC_CLK_TCK")
            # user nice system idle iowait irq softirq steal [guest guest_nice: in user]
            busy = (sum(vals[:8]) - vals[3] - vals[4]) / hz
            steal = vals[7] / hz
        except (OSError, ValueError, IndexError):
            pass
        t = os.times()
        return time.perf_counter(), busy, steal, t.user + t.system

    def others_cores(self) -> float | None:
        t1, busy1, _, self1 = self._snap()
        wall = t1 - self.t0
        if wall <= 0 or busy1 != busy1:  # nan: no /proc/stat
            return None
        return round(max(0.0, (busy1 - self.busy0) - (self1 - self.self0)) / wall, 2)

    def steal_cores(self) -> float | None:
        """The hypervisor's part of `others_cores`."""
        t1, _, steal1, _ = self._snap()
        wall = t1 - self.t0
        if wall <= 0 or steal1 != steal1:
            return None
        return round(max(0.0, steal1 - self.steal0) / wall, 2)


class ThreadCpu:
    """CPU time of this process's own background threads during a phase, by thread name, as
    an average number of cores: engramdb's upkeep threads (index merges, word counts, access
    flushes, postings builds) compete with the timed searches for the same two cores, and
    "other processes" does not see them. Threads without a Python name (ONNX Runtime's) and
    the searches' own helpers are left out."""

    SEARCH_THREADS = ("MainThread", "engram-overlap")

    def __init__(self) -> None:
        self.t0, self.ticks0 = time.perf_counter(), self._ticks()

    @staticmethod
    def _ticks() -> dict[int, int]:
        out: dict[int, int] = {}
        try:
            for tid in os.listdir("/proc/self/task"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    stat = Path(f"/proc/self/task/{tid}/stat").read_text()
                    fields = stat.rsplit(")", 1)[1].split()
                    out[int(tid)] = int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
        return out

    def busy(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        ticks = self._ticks()
        if wall <= 0 or not ticks:
            return {}
        names = {t.native_id: t.name for t in threading.enumerate()}
        hz = os.sysconf("SC_CLK_TCK")
        out: dict[str, float] = {}
        for tid, n in ticks.items():
            name = names.get(tid)
            if name is None or name.startswith(self.SEARCH_THREADS):
                continue
            base = name.rsplit("_", 1)[0] if name[-1:].isdigit() else name
            out[base] = out.get(base, 0.0) + (n - self.ticks0.get(tid, 0)) / hz / wall
        return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1])
                if round(v, 2) > 0}


def memory_usage() -> dict[str, float]:
    """Resident set size now and at its peak (MiB), from /proc/self/status when available."""
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out["rss_mb" if line.startswith("VmRSS") else "peak_rss_mb"] = (
                    int(line.split()[1]) / 1024
                )
    except OSError:
        pass
    if "peak_rss_mb" not in out:  # ru_maxrss is KiB on Linux
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def disk_usage(db: Path) -> dict[str, int]:
    def size(p: Path) -> int:
        return p.stat().st_size if p.exists() else 0

    return {"db_bytes": size(db), "wal_bytes": size(Path(f"{db}-wal")),
            "shm_bytes": size(Path(f"{db}-shm"))}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank-with-interpolation percentile (as numpy's default 'linear')."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_summary(ms: Sequence[float]) -> dict[str, float]:
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90),
            "p99_ms": percentile(ms, 99), "mean_ms": statistics.fmean(ms) if ms else 0.0,
            "max_ms": max(ms, default=0.0), "min_ms": min(ms, default=0.0)}


# -- the data set ------------------------------------------------------------------------


def user_weights(users: int, top_share: float) -> list[float]:
    """A Zipf(1) head on a uniform base: w_k = a/N + (1-a) * (1/k)/H_N, with `a` chosen so the
    largest user holds `top_share` of all memories. The median user then holds a bit less
    than the mean (size/users), as in any skewed population."""
    harmonic = sum(1 / k for k in range(1, users + 1))
    zipf_top = 1 / harmonic
    if users == 1:
        return [1.0]
    a = (zipf_top - top_share) / (zipf_top - 1 / users)
    a = min(1.0, max(0.0, a))
    return [a / users + (1 - a) * (1 / k) / harmonic for k in range(1, users + 1)]


@dataclass
class Item:
    user_id: str
    content: str
    importance: float

    def as_dict(self) -> dict[str, Any]:
        return {"content": self.content, "user_id": self.user_id, "importance": self.importance}


def generate_items(n: int, users: int, top_share: float, corpus: Corpus, seed: int,
                   every: int) -> list[Item]:
    rng = random.Random(f"assign:{seed}")
    weights = user_weights(users, top_share)
    cum: list[float] = []
    total = 0.0
    for w in weights:
        total += w
        cum.append(total)
    # user ids are shuffled so that "u0001" is not always the biggest
    ids = [f"user-{i:04d}" for i in range(users)]
    random.Random(f"ids:{seed}").shuffle(ids)
    texts = corpus.memories()
    out: list[Item] = []
    prog = Progress("generate", n, every)
    for i in range(n):
        uid = ids[rng.choices(range(users), cum_weights=cum)[0]]
        out.append(Item(uid, next(texts), round(rng.uniform(0.1, 0.9), 2)))
        prog.update(i + 1)
    return out


def chunks(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


# -- measurements ------------------------------------------------------------------------


@dataclass
class IngestSegment:
    """One stretch of ingest between two measured sizes."""

    start: int
    end: int
    add_many_s: float = 0.0
    raw_texts: int = 0
    raw_s: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    near_dup: int = 0
    exact_dup: int = 0
    batch_rates: list[float] = field(default_factory=list)
    cpu: CpuMonitor = field(default_factory=CpuMonitor)
    others_cores: float | None = None

    def report(self) -> dict[str, Any]:
        items = self.end - self.start
        rate = items / self.add_many_s if self.add_many_s else 0.0
        raw = self.raw_texts / self.raw_s if self.raw_s else 0.0
        return {
            "items": items, "from": self.start, "to": self.end,
            "add_many_seconds": round(self.add_many_s, 3),
            "add_many_texts_per_s": round(rate, 2),
            "raw_embedder_texts": self.raw_texts,
            "raw_embedder_seconds": round(self.raw_s, 3),
            "raw_embedder_texts_per_s": round(raw, 2),
            "add_many_pct_of_raw": round(100 * rate / raw, 1) if raw else None,
            "statuses": dict(self.statuses), "near_duplicates_dropped": self.near_dup,
            "exact_duplicates": self.exact_dup,
            "other_processes_cpu_cores": self.others_cores,
            "batch_texts_per_s": {
                "first": round(self.batch_rates[0], 1) if self.batch_rates else None,
                "last": round(self.batch_rates[-1], 1) if self.batch_rates else None,
                "min": round(min(self.batch_rates), 1) if self.batch_rates else None,
                "median": round(statistics.median(self.batch_rates), 1)
                if self.batch_rates else None,
            },
        }


def raw_embed(raw: Embedder, texts: Sequence[str]) -> float:
    """Seconds the bare model takes for texts, fed as the batcher does: 32 at a time."""
    t0 = time.perf_counter()
    for chunk in chunks(texts, RAW_CHUNK):
        raw.embed(list(chunk))
    return time.perf_counter() - t0


class Breakdown:
    """Times the parts of a search by wrapping the store's and embedder's methods on the
    instances (this process only; removed afterwards). The keyword search, which a search
    runs beside the query embedding, runs after it here so that the parts add up."""

    PARTS = (("embed", "embedder", "embed"), ("partitions", "store", "_partitions"),
             ("nearest", "store", "nearest"), ("keyword_search", "store", "keyword_search"),
             ("similarities", "store", "similarities"), ("rank_columns", "store", "rank_columns"),
             ("get_many", "store", "get_many"))

    def __init__(self, mem: Engram) -> None:
        self.service = mem.service
        self.overlap = mem.service.overlap
        self.targets = {"embedder": mem.service.embedder, "store": mem.service.store}
        self.ns: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def _wrap(self, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                self.ns[key] += time.perf_counter_ns() - t0
                self.calls[key] += 1

        return timed

    def __enter__(self) -> Breakdown:
        for key, target, name in self.PARTS:
            obj = self.targets[target]
            if hasattr(obj, name):
                setattr(obj, name, self._wrap(key, getattr(obj, name)))
        self.service.overlap = Overlap(0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.service.overlap = self.overlap
        for _, target, name in self.PARTS:
            obj = self.targets[target]
            if name in vars(obj):
                delattr(obj, name)


def measure_search(mem: Engram, raw: Embedder, user_id: str, queries: list[str],
                   breakdown_queries: list[str], limit: int, label: str,
                   every: int) -> dict[str, Any]:
    # The first search of a user loads its vectors into the in-memory index: report it
    # apart, then time the rest (each query is new: nothing is cached between them).
    t0 = time.perf_counter()
    mem.search(queries[0], user_id=user_id, limit=limit)
    cold_ms = (time.perf_counter() - t0) * 1000
    lat: list[float] = []
    bare: list[float] = []
    hits = 0
    timed = queries[1:]
    prog = Progress(f"search {label}", len(timed), every, "queries")
    cpu = CpuMonitor()
    own = ThreadCpu()
    for start in range(0, len(timed), BARE_BLOCK):
        block = timed[start:start + BARE_BLOCK]
        for i, q in enumerate(block, start):
            t0 = time.perf_counter()
            res = mem.search(q, user_id=user_id, limit=limit)
            lat.append((time.perf_counter() - t0) * 1000)
            hits += len(res)
            prog.update(i + 1)
        # The bare model on what those searches embedded, right after them: the host's
        # speed drifts by seconds, and the search's p50 less this one is the engine's own
        # part of a search (the model's share moves with the host, the rest hardly does).
        for q in block:
            texts = mem.service.read_query(q, mem.service.clock.now())[2]
            t0 = time.perf_counter()
            raw.embed(texts)
            bare.append((time.perf_counter() - t0) * 1000)
    p50_bare = statistics.median(bare)
    out: dict[str, Any] = {"user_id": user_id, "cold_first_search_ms": round(cold_ms, 2),
                           **{k: round(v, 3) for k, v in latency_summary(lat).items()},
                           "mean_hits": round(hits / max(1, len(lat)), 2),
                           "bare_model_p50_ms": round(p50_bare, 3),
                           "p50_less_bare_model_ms": round(statistics.median(lat) - p50_bare, 3),
                           "other_processes_cpu_cores": cpu.others_cores(),
                           "steal_cores": cpu.steal_cores(),
                           "own_background_threads_cores": own.busy()}

    if breakdown_queries:
        total_ns = 0
        raw_ns = 0
        with Breakdown(mem) as bd:
            for q in breakdown_queries:
                t0 = time.perf_counter_ns()
                mem.search(q, user_id=user_id, limit=limit)
                total_ns += time.perf_counter_ns() - t0
        for q in breakdown_queries:  # the bare model on the same queries, for comparison
            t0 = time.perf_counter_ns()
            raw.embed([q])
            raw_ns += time.perf_counter_ns() - t0
        n = len(breakdown_queries)
        parts = {k: round(bd.ns[k] / n / 1e6, 3) for k, _, _ in Breakdown.PARTS}
        # nearest() includes _partitions(); the other parts are disjoint
        accounted = sum(parts[k] for k in ("embed", "nearest", "keyword_search",
                                           "similarities", "rank_columns", "get_many"))
        mean_total = total_ns / n / 1e6
        parts["other"] = round(mean_total - accounted, 3)
        out["breakdown_mean_ms"] = {"queries": n, "total": round(mean_total, 3), **parts,
                                    "raw_model_embed": round(raw_ns / n / 1e6, 3)}
    return out


def measure_single_add(items: list[Item], embedder: Embedder, raw: Embedder, workdir: Path,
                       every: int) -> dict[str, Any]:
    path = workdir / "single-add.db"
    mem = Engram(path=path, embedder=embedder)
    lat: list[float] = []
    statuses: Counter[str] = Counter()
    prog = Progress("single add", len(items), every)
    cpu = CpuMonitor()
    t_start = time.perf_counter()
    for i, it in enumerate(items):
        t0 = time.perf_counter()
        res = mem.add(it.content, user_id=it.user_id, importance=it.importance)
        lat.append((time.perf_counter() - t0) * 1000)
        statuses[str(res.status.value)] += 1
        prog.update(i + 1)
    wall = time.perf_counter() - t_start
    others = cpu.others_cores()
    mem.service.store.close()  # not mem.close(): the embedder is shared with the main run
    raw_s = raw_embed(raw, [it.content for it in items])
    rate = len(items) / sum(lat) * 1000
    raw_rate = len(items) / raw_s
    return {
        "items": len(items), "database": "separate, empty at start",
        "adds_per_s": round(rate, 2), "wall_seconds": round(wall, 2),
        "raw_embedder_texts_per_s_same_texts": round(raw_rate, 2),
        "pct_of_raw": round(100 * rate / raw_rate, 1),
        "latency": {k: round(v, 3) for k, v in latency_summary(lat).items()},
        "statuses": dict(statuses), "other_processes_cpu_cores": others,
    }


# -- the run -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="engramdb core benchmark: ingest throughput (add_many and single add vs "
        "the raw embedder), search latency p50/p99 for a typical and the largest user, RSS "
        "and database size, at each size. Sizes are reached incrementally on one database.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000],
                   help="total memories at which to measure (ascending; built incrementally)")
    p.add_argument("--users", type=int, default=1000, help="number of users")
    p.add_argument("--queries", type=int, default=300,
                   help="timed searches per user class and size")
    p.add_argument("--breakdown-queries", type=int, default=100,
                   help="extra searches per user class and size, timed per component "
                   "(0 to skip)")
    p.add_argument("--out", type=Path, default=Path("bench/results/core.json"),
                   help="where to write the JSON results")
    p.add_argument("--batch", type=int, default=256, help="items per add_many call")
    p.add_argument("--single-adds", type=int, default=None,
                   help="single Engram.add calls, on a separate database "
                   "(default: min(2000, max(200, largest size / 5)))")
    p.add_argument("--raw-every", type=int, default=4,
                   help="also embed every Nth add_many batch with the bare MiniLMEmbedder "
                   "(same texts, 32 at a time) as the throughput reference; 1 = all texts")
    p.add_argument("--top-share", type=float, default=0.03,
                   help="share of all memories held by the largest user")
    p.add_argument("--limit", type=int, default=10, help="search result limit")
    p.add_argument("--seed", type=int, default=1, help="seed of the synthetic data")
    p.add_argument("--progress-every", type=int, default=None,
                   help="progress line every N items (default: ~2%% of the largest size, "
                   "at least 256)")
    p.add_argument("--settle", type=float, default=0.0, metavar="SECONDS",
                   help="rest this long before each size's searches (the hypervisor's steal "
                   "during them is reported either way)")
    p.add_argument("--db-dir", type=Path, default=None,
                   help="parent of the temporary database directory (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    p.add_argument("--search-only", type=Path, default=None, metavar="DB",
                   help="no ingest: measure search again on a database kept by --keep "
                   "(e.g. on a quiet machine), writing --out (default "
                   "bench/results/core-search.json)")
    args = p.parse_args(argv)
    if args.search_only is not None and args.out == Path("bench/results/core.json"):
        args.out = Path("bench/results/core-search.json")
    args.sizes = sorted(set(args.sizes))
    if args.sizes[0] <= 0 or args.users <= 0 or args.queries < 2 or args.batch < 1:
        p.error("sizes and users must be positive, --queries >= 2, --batch >= 1")
    if args.batch > 1000:
        p.error("--batch: add_many takes at most 1000 items")
    if args.single_adds is None:
        args.single_adds = min(2000, max(200, args.sizes[-1] // 5))
    if args.progress_every is None:
        args.progress_every = max(256, args.sizes[-1] // 50)
    return args


def environment() -> dict[str, Any]:
    import numpy
    import onnxruntime

    return {
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "machine": platform.machine(),
        "numpy": numpy.__version__, "onnxruntime": onnxruntime.__version__,
        "sqlite": __import__("sqlite3").sqlite_version,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.time()
    settings = Settings()
    workdir = Path(tempfile.mkdtemp(prefix="engram-bench-", dir=args.db_dir))
    db_path = workdir / "bench.db"
    log(f"engramdb core benchmark: sizes {args.sizes}, {args.users} users, "
        f"{args.queries} queries; database in {workdir}")
    results: dict[str, Any] = {
        "benchmark": "engramdb core", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": environment(),
        "settings": {"embed_threads": settings.embed_threads,
                     "embed_max_batch": settings.embed_max_batch,
                     "embed_max_tokens": settings.embed_max_tokens,
                     "near_duplicate_threshold": settings.near_duplicate_threshold,
                     "search_candidates": settings.search_candidates},
        "targets": {"add_many_pct_of_raw_min": TARGET_INGEST_PCT,
                    "search_p50_ms_max": TARGET_P50_MS, "search_p99_ms_max": TARGET_P99_MS,
                    "at_size": TARGET_AT},
        "sizes": [],
    }
    try:
        t0 = time.perf_counter()
        embedder = load_default_embedder(settings)
        raw: Embedder | None = getattr(embedder, "_inner", None)
        if not isinstance(raw, MiniLMEmbedder):  # not the usual MicroBatcher(MiniLM)
            raw = minilm_from_settings(settings)
        results["model_load_seconds"] = round(time.perf_counter() - t0, 2)
        results["rss_after_model_load"] = memory_usage()

        corpus = Corpus(args.seed)
        log(f"generating {args.sizes[-1]:,} memories ...")
        items = generate_items(args.sizes[-1], args.users, args.top_share, corpus, args.seed,
                               max(args.progress_every, args.sizes[-1] // 5))
        words = [len(it.content.split()) for it in items]
        results["data"] = {
            "memories": len(items), "users": args.users, "seed": args.seed,
            "words_min": min(words), "words_median": statistics.median(words),
            "words_mean": round(statistics.fmean(words), 1), "words_max": max(words),
            "example": items[0].content,
        }

        n_single = min(args.single_adds, len(items))
        log(f"single add: {n_single:,} Engram.add calls on a separate database ...")
        results["single_add"] = measure_single_add(items[:n_single], embedder, raw, workdir,
                                                   max(100, args.progress_every // 4))
        gc.collect()

        mem = Engram(path=db_path, embedder=embedder)
        done = 0
        batch_no = 0
        prog = Progress("ingest", args.sizes[-1], args.progress_every)
        all_add_s = all_raw_s = 0.0
        all_raw_n = 0
        for size in args.sizes:
            seg = IngestSegment(done, size)
            log(f"ingest {done:,} -> {size:,} with add_many({args.batch}) ...")
            for batch in chunks(items[done:size], args.batch):
                texts = [it.content for it in batch]
                if batch_no % args.raw_every == 0:
                    seg.raw_s += raw_embed(raw, texts)
                    seg.raw_texts += len(texts)
                batch_no += 1
                t0 = time.perf_counter()
                res = mem.add_many([it.as_dict() for it in batch])
                dt = time.perf_counter() - t0
                seg.add_many_s += dt
                seg.batch_rates.append(len(batch) / dt)
                for r in res:
                    status = str(r.status.value)
                    seg.statuses[status] += 1
                    if status == "duplicate":
                        if (r.similarity or 0.0) >= 1.0:
                            seg.exact_dup += 1
                        else:
                            seg.near_dup += 1
                done += len(batch)
                rate = (done - seg.start) / seg.add_many_s
                prog.update(done, f"  add_many {rate:,.1f}/s, dropped {seg.near_dup}")
            seg.others_cores = seg.cpu.others_cores()
            all_add_s += seg.add_many_s
            all_raw_s += seg.raw_s
            all_raw_n += seg.raw_texts
            entry = measure_size(args, mem, raw, corpus, size, db_path)
            entry["ingest_segment"] = seg.report()
            cum_rate = size / all_add_s
            cum_raw = all_raw_n / all_raw_s if all_raw_s else 0.0
            entry["ingest_cumulative"] = {
                "items": size, "add_many_texts_per_s": round(cum_rate, 2),
                "raw_embedder_texts_per_s": round(cum_raw, 2),
                "add_many_pct_of_raw": round(100 * cum_rate / cum_raw, 1) if cum_raw else None,
            }
            results["sizes"].append(entry)
            write_json(args.out, results)  # partial results survive an interrupted run
        mem.close()
        # The issue names the embedding throughput with one thread; measured last, so that
        # the second model session weighs on none of the figures above (RSS included).
        sample = [it.content for it in items[:: max(1, len(items) // ONE_THREAD_SAMPLE)]]
        log(f"raw reference with one ORT thread ({len(sample):,} texts) ...")
        one = minilm_from_settings(settings.model_copy(update={"embed_threads": 1}))
        one_s = raw_embed(one, sample)
        one.close()
        results["raw_one_thread"] = {"texts": len(sample), "seconds": round(one_s, 2),
                                     "texts_per_s": round(len(sample) / one_s, 2)}
    finally:
        if args.keep:
            log(f"kept the databases in {workdir}")
            results["kept_databases"] = str(workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["total_seconds"] = round(time.time() - started, 1)
    return results


def active_per_user(db_path: Path) -> list[tuple[str, int]]:
    """(user, searchable memories) from the database itself, fewest first: whatever the
    write path decided (duplicates dropped, older memories superseded)."""
    conn = sqlite3.connect(db_path)
    try:
        return [(u, int(n)) for u, n in conn.execute(
            "SELECT user_key, COUNT(*) FROM memories WHERE status = 'active' "
            "GROUP BY user_key ORDER BY COUNT(*), user_key")]
    finally:
        conn.close()


def measure_size(args: argparse.Namespace, mem: Engram, raw: Embedder, corpus: Corpus,
                 size: int, db_path: Path) -> dict[str, Any]:
    ranked = active_per_user(db_path)
    typical_user, typical_n = ranked[len(ranked) // 2]
    largest_user, largest_n = ranked[-1]
    per_user = [n for _, n in ranked]
    log(f"at {size:,}: {len(ranked)} users with memories, median {typical_n}, "
        f"largest {largest_n} ({100 * largest_n / sum(per_user):.1f}%); searching ...")
    entry: dict[str, Any] = {
        "size": size,
        "stored_memories": sum(per_user),
        "users_with_memories": len(ranked),
        "memories_per_user": {"mean": round(statistics.fmean(per_user), 1),
                              "median": statistics.median(per_user), "max": per_user[-1],
                              "min": per_user[0],
                              "largest_user_share_pct": round(
                                  100 * per_user[-1] / sum(per_user), 2)},
        "search": {},
    }
    if args.settle > 0:
        log(f"resting {args.settle:g} s before the searches (--settle) ...")
        cpu = CpuMonitor()
        time.sleep(args.settle)
        entry["settle"] = {"seconds": args.settle, "steal_cores": cpu.steal_cores(),
                           "other_processes_cpu_cores": cpu.others_cores()}
    every = max(50, args.queries // 4)
    for label, uid, n in (("typical", typical_user, typical_n),
                          ("largest", largest_user, largest_n)):
        qs = corpus.queries(args.queries + 1)
        bq = corpus.queries(args.breakdown_queries) if args.breakdown_queries else []
        gc.collect()
        r = measure_search(mem, raw, uid, qs, bq, args.limit, f"{label} user @{size:,}", every)
        entry["search"][label] = {"memories": n, **r}
    entry["memory"] = {k: round(v, 1) for k, v in memory_usage().items()}
    entry["disk"] = disk_usage(db_path)
    entry["store_stats"] = {k: v for k, v in mem.stats().items()
                            if k in ("memories", "database_bytes", "cached_vectors")}
    return entry


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    tmp.replace(path)


# -- the table ---------------------------------------------------------------------------


def cores(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}" + (" BUSY" if x >= 0.2 else "")


def upkeep(busy: dict[str, float] | None) -> str:
    """The upkeep threads' total and the busiest one, e.g. '0.31 fts-merge'."""
    if not busy:
        return "0.00"
    name = next(iter(busy)).removeprefix("engram-")[:13]
    return f"{sum(busy.values()):.2f} {name}"


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


def table(results: dict[str, Any]) -> str:
    sizes = results["sizes"]
    env = results["environment"]
    cfg = results["config"]
    head = [f"{s['size']:,}" for s in sizes]
    w0 = 44
    wc = max(18, *(len(h) for h in head))
    lines: list[str] = []

    def row(label: str, values: Sequence[str]) -> None:
        lines.append(f"{label:<{w0}}" + "".join(f"{v:>{wc}}" for v in values))

    def section(title: str) -> None:
        lines.append("")
        lines.append(title)

    mb = 1024 * 1024
    lines.append(f"engramdb core benchmark: {env['cpus']} CPUs, Python {env['python']}, "
                 f"onnxruntime {env['onnxruntime']}, SQLite {env['sqlite']}")
    d = results["data"]
    lines.append(f"data: {cfg['users']} users, seed {cfg['seed']}, memories of "
                 f"{d['words_min']}-{d['words_max']} words (median {d['words_median']}), "
                 f"add_many batches of {cfg['batch']}, search limit {cfg['limit']}")
    row("", ["size " + h for h in head])
    section(f"Ingest (texts/s, {results['settings']['embed_threads']} embedding thread(s))")
    row("  raw MiniLMEmbedder, batches of 32 (reference)",
        [f"{s['ingest_segment']['raw_embedder_texts_per_s']:,.1f}" for s in sizes])
    one = results.get("raw_one_thread")
    if one:
        row("  raw MiniLMEmbedder, one thread, batches of 32",
            [f"{one['texts_per_s']:,.1f}" for _ in sizes])
        row("  add_many % of one-thread raw, segment",
            [f"{100 * s['ingest_segment']['add_many_texts_per_s'] / one['texts_per_s']:.1f}%"
             for s in sizes])
    row("  Engram.add_many, this segment",
        [f"{s['ingest_segment']['add_many_texts_per_s']:,.1f}" for s in sizes])
    row(f"  add_many % of raw, segment (target >= {TARGET_INGEST_PCT:.0f}%)",
        [f"{s['ingest_segment']['add_many_pct_of_raw']:.1f}% "
         f"{verdict(s['ingest_segment']['add_many_pct_of_raw'] >= TARGET_INGEST_PCT)}"
         for s in sizes])
    row("  add_many, last batch of segment",
        [f"{s['ingest_segment']['batch_texts_per_s']['last']:,.1f}" for s in sizes])
    row("  Engram.add_many, cumulative 0 -> size",
        [f"{s['ingest_cumulative']['add_many_texts_per_s']:,.1f}" for s in sizes])
    row("  add_many % of raw, cumulative",
        [f"{s['ingest_cumulative']['add_many_pct_of_raw']:.1f}%" for s in sizes])
    row("  segment items (raw reference on)",
        [f"{s['ingest_segment']['items']:,} ({s['ingest_segment']['raw_embedder_texts']:,})"
         for s in sizes])
    row("  near-duplicates dropped (cos >= 0.95)",
        [f"{s['ingest_segment']['near_duplicates_dropped']:,}" for s in sizes])
    row("  saved as 'updated' (supersedes older one)",
        [f"{s['ingest_segment']['statuses'].get('updated', 0):,}" for s in sizes])
    row("  saved as 'extended'",
        [f"{s['ingest_segment']['statuses'].get('extended', 0):,}" for s in sizes])
    row("  active (searchable) memories", [f"{s['stored_memories']:,}" for s in sizes])
    row("  other processes' CPU during ingest (cores)",
        [cores(s["ingest_segment"]["other_processes_cpu_cores"]) for s in sizes])

    for label, title in (("typical", "typical (median-sized) user"),
                         ("largest", "largest user")):
        section(f"Search, {title}; query embedding included, ms")
        row("  memories of this user",
            [f"{s['search'][label]['memories']:,}" for s in sizes])
        row(f"  p50 (target <= {TARGET_P50_MS:g} ms at {TARGET_AT:,})",
            [f"{s['search'][label]['p50_ms']:.2f}"
             + (f" {verdict(s['search'][label]['p50_ms'] <= TARGET_P50_MS)}"
                if s["size"] >= TARGET_AT else "") for s in sizes])
        row(f"  p99 (target <= {TARGET_P99_MS:g} ms at {TARGET_AT:,})",
            [f"{s['search'][label]['p99_ms']:.2f}"
             + (f" {verdict(s['search'][label]['p99_ms'] <= TARGET_P99_MS)}"
                if s["size"] >= TARGET_AT else "") for s in sizes])
        row("  mean / max", [f"{s['search'][label]['mean_ms']:.2f} / "
                              f"{s['search'][label]['max_ms']:.1f}" for s in sizes])
        if all("bare_model_p50_ms" in s["search"][label] for s in sizes):
            row("  bare model p50, same queries, alternated",
                [f"{s['search'][label]['bare_model_p50_ms']:.2f}" for s in sizes])
            row("  p50 less the bare model's (engine's part)",
                [f"{s['search'][label]['p50_less_bare_model_ms']:.2f}" for s in sizes])
        row("  other processes' CPU meanwhile (cores)",
            [cores(s["search"][label]["other_processes_cpu_cores"]) for s in sizes])
        if all(s["search"][label].get("steal_cores") is not None for s in sizes):
            row("  hypervisor steal meanwhile (cores)",
                [f"{s['search'][label]['steal_cores']:.2f}" for s in sizes])
        row("  own upkeep threads meanwhile (cores)",
            [upkeep(s["search"][label].get("own_background_threads_cores")) for s in sizes])
        row("  first (cold) search of the user",
            [f"{s['search'][label]['cold_first_search_ms']:.1f}" for s in sizes])
        if all("breakdown_mean_ms" in s["search"][label] for s in sizes):
            parts = (("embed", "query embedding (via batcher)"),
                     ("raw_model_embed", "  same queries, bare model"),
                     ("nearest", "vector search (nearest, with the keyword hits)"),
                     ("partitions", "  partition version lookup (all calls)"),
                     ("keyword_search", "keyword search (postings in memory, or FTS5)"),
                     ("similarities", "similarities of other variants' hits"),
                     ("rank_columns", "ranking fields of candidates (rank_columns)"),
                     ("get_many", "rows of the hits returned (get_many)"),
                     ("other", "validation, scoring, rest"))
            lines.append("  breakdown, mean ms per search, run serially (in the timed searches "
                         "above the keyword search runs beside the query embedding):")
            for key, name in parts:
                row(f"    {name}",
                    [f"{s['search'][label]['breakdown_mean_ms'][key]:.2f}" for s in sizes])

    section("Memory and disk")
    row("  RSS current MiB", [f"{s['memory'].get('rss_mb', float('nan')):,.0f}" for s in sizes])
    row("  RSS peak MiB", [f"{s['memory']['peak_rss_mb']:,.0f}" for s in sizes])
    row("  database file MiB", [f"{s['disk']['db_bytes'] / mb:,.1f}" for s in sizes])
    row("  WAL (+shm) MiB", [f"{s['disk']['wal_bytes'] / mb:,.1f} "
                             f"(+{s['disk']['shm_bytes'] / mb:.2f})" for s in sizes])
    row("  bytes per memory (db + WAL)",
        [f"{(s['disk']['db_bytes'] + s['disk']['wal_bytes']) / s['stored_memories']:,.0f}"
         for s in sizes])

    sa = results["single_add"]
    section(f"Single Engram.add: a sample of {sa['items']:,} adds on a separate, initially "
            f"empty database")
    lines.append("  (only a sample: one model run per memory makes single add too slow to load "
                 "the full data set)")
    lines.append(f"  {sa['adds_per_s']:,.1f} adds/s = {sa['pct_of_raw']:.1f}% of the raw "
                 f"embedder's {sa['raw_embedder_texts_per_s_same_texts']:,.1f} texts/s on the "
                 f"same texts; latency p50 {sa['latency']['p50_ms']:.2f} ms, "
                 f"p99 {sa['latency']['p99_ms']:.2f} ms; "
                 f"statuses {sa['statuses']}; other processes' CPU "
                 f"{cores(sa['other_processes_cpu_cores'])} cores")
    busy = [s for s in sizes if (s["ingest_segment"]["other_processes_cpu_cores"] or 0) >= 0.2
            or any((s["search"][c]["other_processes_cpu_cores"] or 0) >= 0.2
                   for c in ("typical", "largest"))]
    if busy:
        lines.append("")
        lines.append("NOTE: other processes used >= 0.2 CPU cores during some phases (BUSY): on "
                     f"this {env['cpus']}-CPU machine those figures are pessimistic.")
    lines.append("")
    lines.append(f"model load {results['model_load_seconds']} s, total "
                 f"{fmt_secs(results['total_seconds'])}; "
                 + (f"databases kept in {results['kept_databases']}"
                    if "kept_databases" in results else "temporary databases deleted"))
    return "\n".join(lines)


def search_only(args: argparse.Namespace) -> dict[str, Any]:
    """Search latency (and its breakdown) on a kept database, nothing written but access
    counts."""
    db_path = args.search_only
    if not db_path.exists():
        raise SystemExit(f"--search-only: {db_path} does not exist")
    settings = Settings()
    mem = Engram(path=db_path, settings=settings)
    raw = minilm_from_settings(settings)
    try:
        size = sum(n for _, n in active_per_user(db_path))
        log(f"search only, on {db_path} ({size:,} searchable memories)")
        entry = measure_size(args, mem, raw, Corpus(args.seed + 500), size, db_path)
    finally:
        mem.close()
        raw.close()
    return {"benchmark": "engramdb core, search only", "database": str(db_path),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "environment": environment(),
            "targets": {"search_p50_ms_max": TARGET_P50_MS, "search_p99_ms_max": TARGET_P99_MS},
            "size": entry}


def search_table(results: dict[str, Any]) -> str:
    entry = results["size"]
    lines = [f"search at {entry['size']:,} memories (targets p50 <= {TARGET_P50_MS:g} ms, "
             f"p99 <= {TARGET_P99_MS:g} ms)"]
    for label, r in entry["search"].items():
        lines.append(f"  {label} user ({r['memories']} memories): p50 {r['p50_ms']:.2f} ms, "
                     f"p99 {r['p99_ms']:.2f} ms, mean {r['mean_ms']:.2f} ms; bare model p50 "
                     f"{r['bare_model_p50_ms']:.2f} ms (engine's part "
                     f"{r['p50_less_bare_model_ms']:.2f}); other processes "
                     f"{r['other_processes_cpu_cores']:.2f} cores (steal {r['steal_cores']:.2f}), "
                     f"upkeep threads "
                     f"{upkeep(r.get('own_background_threads_cores'))}")
        parts = r.get("breakdown_mean_ms", {})
        if parts:
            lines.append("    breakdown (mean ms): " + ", ".join(
                f"{k} {v:.2f}" for k, v in parts.items() if k != "queries"))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.search_only is not None:
        found = search_only(args)
        write_json(args.out, found)
        print(search_table(found))
        print(f"\nJSON: {args.out}")
        return 0
    results = run(args)
    write_json(args.out, results)
    print(table(results))
    print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
