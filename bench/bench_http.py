"""HTTP benchmark of the Engram server: batch adds, single adds under 8 concurrent clients,
searches (latency with one client, throughput with 8), against the raw embedder.

    .venv/bin/python bench/bench_http.py --n 2000                 # quick mode, ~2-3 min
    .venv/bin/python bench/bench_http.py                          # 100k memories, ~25-30 min
    .venv/bin/python bench/bench_http.py --url http://127.0.0.1:8420 --key eng_live_…

Without --url it starts `engram serve` (one worker, the default settings) on a fresh
temporary database. All HTTP load comes from a load generator in a separate process
(multiprocessing, spawn): N threads, each with its own keep-alive http.client connection, pulling
requests from a shared queue; latencies are client-side wall times per request. The
benchmark's own process only orchestrates, and measures the raw embedder while the server is
idle. See bench/README.md ("bench_http.py") for every figure and the targets.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import environment, generate_items, latency_summary, log
from corpus import Corpus

TARGET_SINGLE_ADD_PCT = 70.0  # of the raw embedder's batch-32 throughput
TARGET_P50_MS = 10.0
TARGET_P99_MS = 30.0
TARGET_AT = 100_000
KEY_RE = re.compile(r"\beng_live_[0-9A-Za-z]{43}\b")

Job = tuple[str, str, Any]  # method, path, JSON body


# -- the load generator (runs in its own process) -----------------------------------------


class _Client:
    """One keep-alive HTTP/1.1 connection on the standard library's http.client.

    The load generator shares the 2-core machine with the server, so what it spends per
    request lands in the measured latency twice: as its own time and as CPU taken from
    the server. http.client spends a fraction of httpx's time per request
    (bench/README.md, "bench_http.py")."""

    def __init__(self, url: str, key: str) -> None:
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self._new = lambda: http.client.HTTPConnection(parts.hostname or "127.0.0.1",
                                                       parts.port or 80, timeout=600.0)
        self._conn = self._new()
        self._headers = {"Authorization": f"Bearer {key}",
                         "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: Any) -> tuple[int, bytes]:
        import http.client

        data = None if body is None else json.dumps(body).encode()
        for attempt in (1, 2):
            try:
                self._conn.request(method, path, body=data, headers=self._headers)
                r = self._conn.getresponse()
                return r.status, r.read()
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError, http.client.CannotSendRequest):
                # the server closed the kept-alive connection: reconnect once
                self._conn.close()
                self._conn = self._new()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._conn.close()


def _load_worker(url: str, key: str, jobs: list[Job], clients: int, label: str,
                 conn: Any) -> None:
    q: queue.SimpleQueue[tuple[int, Job] | None] = queue.SimpleQueue()
    for i, job in enumerate(jobs):
        q.put((i, job))
    for _ in range(clients):
        q.put(None)
    lat = [0.0] * len(jobs)
    codes: list[int] = [0] * len(jobs)
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    done = [0]
    every = max(1, len(jobs) // 20)
    conn.send("ready")
    conn.recv()  # "go": the parent's CPU accounting starts after this process's start-up
    t_start = time.perf_counter()

    def client() -> None:
        c = _Client(url, key)
        try:
            while (item := q.get()) is not None:
                i, (method, path, body) = item
                t0 = time.perf_counter()
                status, raw = c.request(method, path, body)
                lat[i] = (time.perf_counter() - t0) * 1000
                codes[i] = status
                local: Counter[str] = Counter()
                if status < 300 and path.startswith("/v1/memories"):
                    data = json.loads(raw)["data"]
                    for res in data if isinstance(data, list) else [data]:
                        local[res["status"]] += 1
                with lock:
                    statuses.update(local)
                    done[0] += 1
                    n = done[0]
                if n % every == 0 or n == len(jobs):
                    el = time.perf_counter() - t_start
                    eta = (len(jobs) - n) * el / n
                    print(f"  [{label}] {n:,}/{len(jobs):,} requests  {n / el:,.1f}/s  "
                          f"elapsed {el:,.0f} s  ETA {eta:,.0f} s", file=sys.stderr, flush=True)
        finally:
            c.close()

    cpu0 = os.times()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    cpu1 = os.times()
    conn.send({"latencies_ms": lat, "codes": Counter(codes), "statuses": statuses,
               "wall_s": wall, "cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)})
    conn.close()


def run_load(url: str, key: str, jobs: list[Job], clients: int, label: str,
             server_pid: int | None) -> dict[str, Any]:
    """Runs jobs from a separate process with `clients` concurrent clients."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_load_worker, args=(url, key, jobs, clients, label, child),
                       daemon=True)
    proc.start()
    child.close()
    assert parent.recv() == "ready"
    cpu = Cpu(server_pid)
    t0 = time.perf_counter()
    parent.send("go")
    res: dict[str, Any] = parent.recv()
    wall = time.perf_counter() - t0
    proc.join()
    res["cpu"] = cpu.cores(wall, res["cpu_s"])
    bad = {c: n for c, n in res["codes"].items() if not 200 <= c < 300}
    if bad:
        raise SystemExit(f"{label}: unexpected HTTP statuses {bad}")
    return res


# -- measurements helpers -------------------------------------------------------------------


def _proc_cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _machine_busy_s() -> float:
    try:
        vals = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(vals[:8]) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


class Cpu:
    """Average cores used during a phase by the server, the load generator and everything
    else on the machine (machine busy time minus those two and this process)."""

    def __init__(self, server_pid: int | None) -> None:
        self.pid = server_pid
        self.server0 = _proc_cpu_s(server_pid)
        self.busy0 = _machine_busy_s()
        t = os.times()
        self.self0 = t.user + t.system

    def cores(self, wall: float, loadgen_cpu_s: float) -> dict[str, float | None]:
        server = _proc_cpu_s(self.pid) - self.server0
        busy = _machine_busy_s() - self.busy0
        t = os.times()
        mine = t.user + t.system - self.self0
        others = None if busy != busy else max(0.0, busy - server - loadgen_cpu_s - mine)
        return {"server": round(server / wall, 2) if self.pid else None,
                "load_generator": round(loadgen_cpu_s / wall, 2),
                "others": None if others is None else round(others / wall, 2)}


def summary(res: dict[str, Any], items: int) -> dict[str, Any]:
    lat = latency_summary(res["latencies_ms"])
    return {"requests": len(res["latencies_ms"]), "items": items,
            "wall_s": round(res["wall_s"], 2),
            "items_per_s": round(items / res["wall_s"], 2),
            "requests_per_s": round(len(res["latencies_ms"]) / res["wall_s"], 2),
            "latency_ms": {k: round(v, 3) for k, v in lat.items()},
            "statuses": dict(res["statuses"]), "cpu_cores": res["cpu"]}


def embed_counters(client: Any) -> tuple[float, float]:
    """(batches, texts) run by the server's micro-batcher so far, from /metrics."""
    text = client.get("/metrics").text
    found = {}
    for name in ("engram_embed_batches_total", "engram_embed_texts_total"):
        m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
        found[name] = float(m.group(1)) if m else float("nan")
    return found["engram_embed_batches_total"], found["engram_embed_texts_total"]


def raw_throughput(texts: Sequence[str], batch: int) -> dict[str, Any]:
    """Texts/s of the bare MiniLMEmbedder as the ENGRAM_* settings configure it (no
    batcher, no server)."""
    from engramdb import Settings
    from engramdb.embeddings import minilm_from_settings

    s = Settings()
    model = minilm_from_settings(s)
    try:
        model.embed(list(texts[:batch]))  # warm
        t0 = time.perf_counter()
        for i in range(0, len(texts), batch):
            model.embed(list(texts[i:i + batch]))
        dt = time.perf_counter() - t0
    finally:
        model.close()
    return {"texts": len(texts), "batch": batch, "seconds": round(dt, 3),
            "texts_per_s": round(len(texts) / dt, 2), "precision": model.precision}


# -- the server -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    def __init__(self, db: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # ENGRAM_* settings pass through (e.g. ENGRAM_EMBED_THREADS); the database is --db
        env = {k: v for k, v in os.environ.items()
               if k not in ("ENGRAM_DATABASE_URL", "ENGRAM_CONFIG")}
        env["ENGRAM_DATA_DIR"] = str(db.parent)
        env["ENGRAM_RATE_LIMIT_PER_MINUTE"] = "0"  # a benchmark is no abuse
        env["PYTHONUNBUFFERED"] = "1"
        code = "from engramdb.cli import main; main()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "serve", "--host", "127.0.0.1", "--port",
             str(self.port), "--db", str(db), "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.output: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def wait_key(self, timeout: float = 120.0, printed: bool = True) -> str:
        """Waits for /readyz; returns the bootstrap key it printed (if `printed`)."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("server exited:\n" + "".join(self.output))
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    keys = KEY_RE.findall("".join(self.output))
                    if keys or not printed:
                        return keys[0] if keys else ""
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit("server not ready:\n" + "".join(self.output))

    def rss_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def settings_used() -> dict[str, Any]:
    from engramdb import Settings

    s = Settings()
    return {k: getattr(s, k) for k in (
        "embed_threads", "embed_max_batch", "embed_max_tokens", "near_duplicate_threshold",
        "search_candidates", "workers")}


def admin_key(db: Path) -> str:
    """A new admin key, without rate limit, on an existing database."""
    from engramdb.engine.admin import AdminService
    from engramdb.errors import NotFound
    from engramdb.storage.sqlite import SQLiteStore

    store = SQLiteStore(db)
    try:
        admin = AdminService(store)
        try:
            admin.get_tenant("default")
        except NotFound:  # a database made in process (bench_core --keep) has no tenant row
            admin.create_tenant("default")
        return admin.create_key("default", "bench", ["admin"], 0).key
    finally:
        store.close()


# -- the run --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Engram HTTP benchmark: batch-add, single-add (8 clients) and search "
        "throughput and latency over HTTP, with the raw embedder as reference.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="memories pre-loaded (batch adds)")
    p.add_argument("--users", type=int, default=None,
                   help="users (default 1000; 100 when --n < 10000)")
    p.add_argument("--batch", type=int, default=256, help="items per batch request")
    p.add_argument("--batch-clients", type=int, default=2,
                   help="concurrent clients sending the batches")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients, single adds "
                   "and search throughput")
    p.add_argument("--single-adds", type=int, default=None,
                   help="single POST /v1/memories (default 2000; 400 when --n < 10000)")
    p.add_argument("--queries", type=int, default=300, help="searches timed with one client")
    p.add_argument("--throughput-queries", type=int, default=None,
                   help="searches by the 8 clients (default 3 x --queries)")
    p.add_argument("--tenant-queries", type=int, default=50,
                   help="searches without user_id over the whole tenant (0 to skip)")
    p.add_argument("--raw-batch1", type=int, default=300,
                   help="texts for the raw embedder at batch 1")
    p.add_argument("--top-share", type=float, default=0.03,
                   help="share of all memories held by the largest user")
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--url", default=None, help="benchmark this server instead of starting one")
    p.add_argument("--key", default=None, help="its API key (admin: a rate-limit-free key "
                   "for the run is created from it)")
    p.add_argument("--db-dir", type=Path, default=None,
                   help="parent of the temporary database directory")
    p.add_argument("--keep", action="store_true", help="keep the database afterwards")
    p.add_argument("--reuse-db", type=Path, default=None,
                   help="serve this database, pre-loaded by an earlier run kept with --keep "
                   "(same --n, --users, --seed), and skip the batch adds")
    p.add_argument("--round", type=int, default=0,
                   help="which set of single-add texts (use a new one for each run on a "
                   "--reuse-db database, or the adds are duplicates)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON results (default bench/results/http.json, "
                   "http-quick.json when --n < 10000)")
    a = p.parse_args(argv)
    quick = a.n < 10_000
    a.users = a.users or (100 if quick else 1000)
    a.single_adds = a.single_adds or (400 if quick else 2000)
    a.throughput_queries = a.throughput_queries or 3 * a.queries
    a.out = a.out or Path("bench/results") / ("http-quick.json" if quick else "http.json")
    if a.url and not a.key:
        p.error("--url needs --key")
    if a.url and a.reuse_db:
        p.error("--url or --reuse-db, not both")
    if not 1 <= a.batch <= 1000:
        p.error("--batch: 1..1000")
    return a


def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    started = time.time()
    results: dict[str, Any] = {
        "benchmark": "engram http", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if k != "key"},
        "environment": environment(),
        "settings": settings_used(),
        "targets": {"single_add_pct_of_raw_batch32_min": TARGET_SINGLE_ADD_PCT,
                    "search_p50_ms_max": TARGET_P50_MS, "search_p99_ms_max": TARGET_P99_MS,
                    "at_size": TARGET_AT},
    }
    corpus = Corpus(args.seed)
    log(f"generating {args.n:,} + {args.single_adds:,} memories for {args.users} users ...")
    preload = generate_items(args.n, args.users, args.top_share, corpus, args.seed,
                             max(1000, args.n // 4))
    # the single adds: texts of their own stream (one per --round), users as the pre-load's
    singles = generate_items(args.single_adds, args.users, args.top_share,
                             Corpus(f"{args.seed}:single:{args.round}"),  # type: ignore[arg-type]
                             args.seed, args.single_adds)
    per_user = Counter(it.user_id for it in preload)
    rng = random.Random(f"search:{args.seed}")
    users = sorted(per_user)

    workdir: Path | None = None
    server: Server | None = None
    try:
        if args.url:
            url, key = args.url.rstrip("/"), args.key
        elif args.reuse_db:
            db = args.reuse_db.resolve()
            key = admin_key(db)
            log(f"starting engram serve on {db} (pre-loaded) ...")
            t0 = time.perf_counter()
            server = Server(db)
            server.wait_key(printed=False)
            url = server.url
            results["server_start_s"] = round(time.perf_counter() - t0, 2)
        else:
            workdir = Path(tempfile.mkdtemp(prefix="engram-http-", dir=args.db_dir))
            db = workdir / "bench.db"
            log(f"starting engram serve on {db} ...")
            t0 = time.perf_counter()
            server = Server(db)
            key = server.wait_key()
            url = server.url
            results["server_start_s"] = round(time.perf_counter() - t0, 2)
        pid = server.proc.pid if server else None
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                            timeout=60)
        r = http.post("/v1/admin/keys", json={"name": "bench", "rate_limit": 0})
        if r.status_code == 201:
            key = r.json()["data"]["key"]
            http.headers["Authorization"] = f"Bearer {key}"
        else:
            log(f"could not create a rate-limit-free key ({r.status_code}); using --key")

        # 1. the raw embedder, while the server is idle, on the single-add texts
        log("raw embedder (MiniLMEmbedder, one thread) ...")
        texts = [it.content for it in singles]
        results["raw"] = {"batch32": raw_throughput(texts, 32),
                          "batch1": raw_throughput(texts[:args.raw_batch1], 1)}
        log(f"  batch 32: {results['raw']['batch32']['texts_per_s']:.1f} texts/s, "
            f"batch 1: {results['raw']['batch1']['texts_per_s']:.1f} texts/s")
        raw32 = results["raw"]["batch32"]["texts_per_s"]
        raw1 = results["raw"]["batch1"]["texts_per_s"]

        # 2. pre-load through the batch endpoint
        if args.reuse_db:
            jobs = []
            log("pre-loaded database: no batch adds")
        else:
            log(f"pre-loading {args.n:,} memories: POST /v1/memories/batch x {args.batch}, "
                f"{args.batch_clients} clients ...")
            jobs = [("POST", "/v1/memories/batch",
                     {"items": [it.as_dict() for it in preload[i:i + args.batch]]})
                    for i in range(0, len(preload), args.batch)]
        if jobs:
            res = run_load(url, key, jobs, args.batch_clients, "batch add", pid)
            results["batch_add"] = summary(res, len(preload)) | {
                "batch": args.batch, "clients": args.batch_clients,
                "pct_of_raw_batch32": round(100 * len(preload) / res["wall_s"] / raw32, 1)}
            log(f"  {results['batch_add']['items_per_s']:.1f} memories/s")

        # 3. single adds, 8 clients
        log(f"single adds: {len(singles):,} POST /v1/memories, {args.clients} clients ...")
        b0, t0 = embed_counters(http)
        jobs = [("POST", "/v1/memories", it.as_dict()) for it in singles]
        res = run_load(url, key, jobs, args.clients, "single add", pid)
        b1, t1 = embed_counters(http)
        # the raw reference again, so that a change in machine load between the two
        # measurements shows (the ratio uses the mean of both)
        after = raw_throughput(texts, 32)
        results["raw"]["batch32_after_single_adds"] = after
        raw32 = round((raw32 + after["texts_per_s"]) / 2, 2)
        results["raw"]["batch32_mean_texts_per_s"] = raw32
        sa = summary(res, len(singles))
        sa |= {"clients": args.clients,
               "pct_of_raw_batch32": round(100 * sa["items_per_s"] / raw32, 1),
               "pct_of_raw_batch1": round(100 * sa["items_per_s"] / raw1, 1),
               "mean_model_batch": round((t1 - t0) / (b1 - b0), 2) if b1 > b0 else None}
        results["single_add"] = sa
        log(f"  {sa['items_per_s']:.1f} adds/s = {sa['pct_of_raw_batch32']:.1f}% of raw "
            f"batch-32; mean model batch {sa['mean_model_batch']}")

        # 4. searches: warm the users' partitions, then one client (latency), then 8
        q_lat = corpus.queries(args.queries)
        q_thr = corpus.queries(args.throughput_queries)
        lat_users = [rng.choice(users) for _ in q_lat]
        thr_users = [rng.choice(lat_users) for _ in q_thr]

        def search(q: str, user: str | None) -> Job:
            body: dict[str, Any] = {"query": q, "limit": 10}
            if user is not None:
                body["user_id"] = user
            return ("POST", "/v1/search", body)

        log(f"warming {len(set(lat_users))} users' vectors ...")
        run_load(url, key, [search("warm up", u) for u in sorted(set(lat_users))],
                 args.clients, "warm", pid)
        log(f"search latency: {len(q_lat)} searches, 1 client ...")
        res = run_load(url, key, [search(q, u) for q, u in zip(q_lat, lat_users, strict=True)],
                       1, "search 1 client", pid)
        results["search_latency"] = summary(res, len(q_lat)) | {
            "memories_of_searched_users": _spread([per_user[u] for u in lat_users])}
        log(f"search throughput: {len(q_thr)} searches, {args.clients} clients ...")
        res = run_load(url, key, [search(q, u) for q, u in zip(q_thr, thr_users, strict=True)],
                       args.clients, f"search {args.clients} clients", pid)
        results["search_throughput"] = summary(res, len(q_thr)) | {"clients": args.clients}
        if args.tenant_queries:
            log(f"tenant-wide search (no user_id): {args.tenant_queries} searches ...")
            run_load(url, key, [search("warm up", None)], 1, "warm", pid)
            res = run_load(url, key, [search(q, None) for q in
                                      corpus.queries(args.tenant_queries)],
                           1, "tenant search", pid)
            results["search_tenant_wide"] = summary(res, args.tenant_queries)

        total = http.get("/v1/memories", params={"limit": 1}).json()["meta"]["total"]
        results["stored_memories"] = total
        results["memories_per_user"] = _spread(list(per_user.values()))
        if server is not None:
            results["server_rss_mb"] = server.rss_mb()
            results["disk_mb"] = {
                name: round(p.stat().st_size / 2**20, 1) for name, p in
                (("db", db), ("wal", Path(f"{db}-wal"))) if p.exists()}
        http.close()
    finally:
        if server is not None:
            results["server_exit_code"] = server.stop()
        if workdir is not None:
            if args.keep:
                results["kept_database"] = str(workdir)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    results["total_seconds"] = round(time.time() - started, 1)
    return results


def _spread(xs: list[int]) -> dict[str, float]:
    s = sorted(xs)
    return {"min": s[0], "median": s[len(s) // 2], "max": s[-1],
            "mean": round(sum(s) / len(s), 1)}


# -- the report -----------------------------------------------------------------------------


def table(r: dict[str, Any]) -> str:
    env, cfg = r["environment"], r["config"]
    raw32, raw1 = r["raw"]["batch32"], r["raw"]["batch1"]
    at_target = cfg["n"] >= TARGET_AT

    def ok(good: bool) -> str:
        return ("ok" if good else "MISS") if at_target else "(target at 100k)"

    def cores(c: dict[str, Any]) -> str:
        srv = "n/a" if c["server"] is None else f"{c['server']:.2f}"
        busy = " BUSY" if (c["others"] or 0) >= 0.2 else ""
        return f"server {srv}, loadgen {c['load_generator']:.2f}, other {c['others']}{busy}"

    lines = [
        f"Engram HTTP benchmark: {env['cpus']} CPUs, Python {env['python']}, "
        f"onnxruntime {env['onnxruntime']}, SQLite {env['sqlite']}; "
        f"{cfg['n']:,} pre-loaded memories ({r['stored_memories']:,} active), "
        f"{cfg['users']} users "
        f"(per user median {r['memories_per_user']['median']}, "
        f"max {r['memories_per_user']['max']})",
        "",
        f"{'phase':<44}{'throughput':>16}{'p50 ms':>10}{'p99 ms':>10}   notes",
    ]

    def row(name: str, thr: str, s: dict[str, Any] | None, note: str = "") -> None:
        p50 = f"{s['latency_ms']['p50_ms']:.2f}" if s else ""
        p99 = f"{s['latency_ms']['p99_ms']:.2f}" if s else ""
        lines.append(f"{name:<44}{thr:>16}{p50:>10}{p99:>10}   {note}")

    after = r["raw"]["batch32_after_single_adds"]["texts_per_s"]
    row("raw MiniLMEmbedder, batch 32 (reference)",
        f"{r['raw']['batch32_mean_texts_per_s']:,.1f}/s", None,
        f"{raw32['texts']} texts, {raw32['precision']}; mean of {raw32['texts_per_s']:,.1f} "
        f"before and {after:,.1f} after the single adds")
    row("raw MiniLMEmbedder, batch 1", f"{raw1['texts_per_s']:,.1f}/s", None,
        f"{raw1['texts']} texts")
    if "batch_add" in r:
        ba = r["batch_add"]
        row(f"batch add ({ba['batch']}/request, {ba['clients']} clients)",
            f"{ba['items_per_s']:,.1f}/s", ba,
            f"{ba['pct_of_raw_batch32']:.1f}% of raw b32 (latencies per request)")
    sa = r["single_add"]
    row(f"single add ({sa['clients']} clients)", f"{sa['items_per_s']:,.1f}/s", sa,
        f"{sa['pct_of_raw_batch32']:.1f}% of raw b32 (target >= {TARGET_SINGLE_ADD_PCT:.0f}%:"
        f" {'ok' if sa['pct_of_raw_batch32'] >= TARGET_SINGLE_ADD_PCT else 'MISS'}), "
        f"{sa['pct_of_raw_batch1']:.0f}% of raw b1; model batch {sa['mean_model_batch']}")
    sl = r["search_latency"]
    row("search, 1 client (user_id, limit 10)", f"{sl['items_per_s']:,.1f}/s", sl,
        f"p50 <= {TARGET_P50_MS:g}: {ok(sl['latency_ms']['p50_ms'] <= TARGET_P50_MS)}, "
        f"p99 <= {TARGET_P99_MS:g}: {ok(sl['latency_ms']['p99_ms'] <= TARGET_P99_MS)}")
    st = r["search_throughput"]
    row(f"search, {st['clients']} clients", f"{st['items_per_s']:,.1f}/s", st)
    if "search_tenant_wide" in r:
        tw = r["search_tenant_wide"]
        row("search, whole tenant (no user_id), 1 client", f"{tw['items_per_s']:,.1f}/s", tw)
    lines.append("")
    lines.append("write statuses: " + "; ".join(
        f"{name} {r[key]['statuses']}" for name, key in (("batch add", "batch_add"),
                                                         ("single add", "single_add"))
        if key in r))
    lines.append("CPU cores used during each phase:")
    for name, key in (("batch add", "batch_add"), ("single add", "single_add"),
                      ("search 1 client", "search_latency"),
                      ("search N clients", "search_throughput")):
        if key in r:
            lines.append(f"  {name:<18}{cores(r[key]['cpu_cores'])}")
    extra = []
    if r.get("server_rss_mb"):
        extra.append(f"server RSS {r['server_rss_mb']:,.0f} MiB")
    if r.get("disk_mb"):
        extra.append("disk " + ", ".join(f"{k} {v:,.1f} MiB" for k, v in r["disk_mb"].items()))
    extra.append(f"total {r['total_seconds']:,.0f} s")
    lines.append("; ".join(extra))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # `kill` of a long run still stops the server and removes the temporary database
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    log(f"results written to {args.out}")
    if "kept_database" in results:
        log(f"database kept in {results['kept_database']} (reuse: --reuse-db "
            f"{results['kept_database']}/bench.db --round 1)")


if __name__ == "__main__":
    main()

