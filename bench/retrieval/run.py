"""Session-level retrieval on LongMemEval_S, measured through the engine's public API.

    .venv/bin/python bench/retrieval/run.py                 # the dev set, ~2 min when cached
    .venv/bin/python bench/retrieval/run.py --limit 20      # a subset
    .venv/bin/python bench/retrieval/run.py --http http://127.0.0.1:8420 --key KEY

Each question's haystack goes into a fresh user scope through `Engram.add_conversation`
(user turns only by default: the paper's keys are built from the user side), with each
session's id and date; the question is then asked through `Engram.search_sessions` with the
clock set to the question's date. Configurations (BM25 alone, dense alone, the engine's
default) are scored on the same stored data. See docs/retrieval.md for the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engramdb import Engram, FrozenClock, Settings
from engramdb.embeddings import Embedder, load_default_embedder
from engramdb.engine.validation import MAX_CONTENT_CHARS, normalize_content
from retrieval.cache import CachingEmbedder
from retrieval.data import DATA_FILE, DEFAULT_DATA_DIR, Question, load
from retrieval.metrics import KS, METRICS, average, percentile, question_metrics

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "retrieval"
CACHE = ROOT / "bench" / "results" / "cache"

#: Settings overrides of each configuration, scored on the same stored data. "default" is
#: the engine as shipped; "bm25" and "dense" are one retriever alone; "fused-v0" is the
#: engine before issue 7 (weighted fusion, no query reading, 10 candidates per session);
#: "no-time" and "no-rewrite" leave out one of the changes (docs/retrieval.md).
_ALONE = {"weight_importance": 0.0, "weight_relevance": 0.0, "weight_time": 0.0,
          "search_query_rewriting": False}
CONFIGS: dict[str, dict[str, Any]] = {
    "bm25": {**_ALONE, "weight_semantic": 0.0, "weight_keyword": 1.0},
    "dense": {**_ALONE, "weight_semantic": 1.0, "weight_keyword": 0.0},
    "fused-v0": {"weight_time": 0.0, "search_query_rewriting": False,
                 "search_candidates": 100},
    "no-time": {"weight_time": 0.0},
    "no-rewrite": {"search_query_rewriting": False},
    "default": {},
}
DEFAULT_CONFIGS = ("bm25", "dense", "fused-v0", "default")
SPLITS = ("all", "tune", "holdout")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def user_of(q: Question, prefix: str) -> str:
    return f"{prefix}{q.id}"


def messages_of(turns: Sequence[dict[str, Any]], when: datetime,
                roles: frozenset[str]) -> list[dict[str, Any]]:
    return [{"role": t["role"], "content": t["content"], "created_at": when.isoformat()}
            for t in turns if t.get("role") in roles and str(t.get("content", "")).strip()]


# -- in-process --------------------------------------------------------------------------


@dataclass
class Ranked:
    """One question's answer from one configuration."""

    sessions: list[str]
    ms: float
    embed_ms: float | None = None


@dataclass
class Run:
    name: str
    ranked: dict[str, Ranked] = field(default_factory=dict)


def warm_cache(embedder: CachingEmbedder, questions: Sequence[Question],
               roles: frozenset[str]) -> None:
    """Embed every text to be ingested in length-sorted batches (much faster than the
    engine's per-session calls), so that ingestion reads the cache."""
    texts = sorted({normalize_content(t["content"]) for q in questions
                    for _, _, turns in q.sessions for t in turns
                    if t.get("role") in roles and str(t.get("content", "")).strip()
                    and len(normalize_content(t["content"])) <= MAX_CONTENT_CHARS}, key=len)
    t0 = time.perf_counter()
    before = embedder.misses
    for i in range(0, len(texts), 256):
        embedder.embed(texts[i:i + 256])
        if (i // 256) % 20 == 19:
            done = embedder.misses - before
            log(f"  warm cache: {i + 256}/{len(texts)} texts ({done} embedded, "
                f"{time.perf_counter() - t0:.0f} s)")
    log(f"warm cache: {len(texts)} texts, {embedder.misses - before} embedded in "
        f"{time.perf_counter() - t0:.1f} s")


def ingest_local(engram: Engram, clock: FrozenClock, questions: Sequence[Question],
                 roles: frozenset[str], prefix: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    turns = saved = 0
    for n, q in enumerate(questions, 1):
        clock.set(q.date)
        uid = user_of(q, prefix)
        for sid, when, session in q.sessions:
            msgs = messages_of(session, when, roles)
            if not msgs:
                continue
            res = engram.add_conversation(sid, msgs, user_id=uid)
            turns += len(res)
            saved += sum(r.status.value == "saved" for r in res)
        if n % 10 == 0:
            log(f"  ingest: {n}/{len(questions)} questions, {turns} turns, "
                f"{time.perf_counter() - t0:.0f} s")
    secs = time.perf_counter() - t0
    return {"seconds": round(secs, 2), "turns": turns, "saved": saved,
            "duplicates": turns - saved, "turns_per_s": round(turns / max(secs, 1e-9), 1)}


def query_local(name: str, engram: Engram, clock: FrozenClock, questions: Sequence[Question],
                prefix: str, timer: CachingEmbedder | None) -> Run:
    run = Run(name)
    for q in questions:
        clock.set(q.date)
        t0 = time.perf_counter()
        hits = engram.search_sessions(q.text, limit=max(KS), hits_per_session=1,
                                      user_id=user_of(q, prefix), track_access=False)
        ms = (time.perf_counter() - t0) * 1000
        run.ranked[q.id] = Ranked([h.session_id for h in hits], ms,
                                  timer.last_ms if timer is not None else None)
    return run


def variant(base: Engram, overrides: dict[str, Any], embedder: Embedder,
            clock: FrozenClock) -> Engram:
    """Another Engram on the same store with other read-path settings."""
    settings = base.settings.model_copy(update=overrides)
    return Engram(store=base.service.store, embedder=embedder, settings=settings, clock=clock,
                  tenant_id=base.tenant_id)


# -- over HTTP ---------------------------------------------------------------------------


def ingest_http(client: Any, questions: Sequence[Question], roles: frozenset[str],
                prefix: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    turns = saved = 0
    for n, q in enumerate(questions, 1):
        uid = user_of(q, prefix)
        for sid, when, session in q.sessions:
            msgs = messages_of(session, when, roles)
            if not msgs:
                continue
            r = client.post("/v1/conversations",
                            json={"session_id": sid, "user_id": uid, "messages": msgs})
            r.raise_for_status()
            body = r.json()
            turns += len(body["data"])
            saved += int(body["meta"].get("saved", 0))
        if n % 10 == 0:
            log(f"  ingest: {n}/{len(questions)} questions, {turns} turns, "
                f"{time.perf_counter() - t0:.0f} s")
    secs = time.perf_counter() - t0
    return {"seconds": round(secs, 2), "turns": turns, "saved": saved,
            "duplicates": turns - saved, "turns_per_s": round(turns / max(secs, 1e-9), 1)}


def query_http(client: Any, questions: Sequence[Question], prefix: str) -> Run:
    run = Run("server")
    for q in questions:
        t0 = time.perf_counter()
        r = client.post("/v1/search/sessions", json={
            "query": q.text, "user_id": user_of(q, prefix), "limit": max(KS),
            "hits_per_session": 1, "explain": False})
        ms = (time.perf_counter() - t0) * 1000
        r.raise_for_status()
        run.ranked[q.id] = Ranked([s["session_id"] for s in r.json()["data"]], ms)
    return run


# -- scoring and reporting ---------------------------------------------------------------


def score(run: Run, questions: Sequence[Question]) -> dict[str, Any]:
    per_q: dict[str, dict[str, float]] = {}
    for q in questions:
        if q.scorable and q.id in run.ranked:
            per_q[q.id] = question_metrics(run.ranked[q.id].sessions, q.gold)
    by_id = {q.id: q for q in questions}
    out: dict[str, Any] = {}
    for split in SPLITS:
        ids = [i for i in per_q if split == "all" or by_id[i].split == split]
        types: dict[str, list[str]] = defaultdict(list)
        for i in ids:
            types[by_id[i].type].append(i)
        out[split] = {
            "n": len(ids),
            "overall": average([per_q[i] for i in ids]),
            "by_type": {t: {"n": len(v), **average([per_q[i] for i in v])}
                        for t, v in sorted(types.items())},
        }
    lat = [r.ms for r in run.ranked.values()]
    out["latency_ms"] = {"p50": round(percentile(lat, 50), 2),
                         "p95": round(percentile(lat, 95), 2),
                         "mean": round(statistics.fmean(lat), 2) if lat else None}
    emb = [r.embed_ms for r in run.ranked.values() if r.embed_ms is not None]
    if emb:
        rest = [r.ms - r.embed_ms for r in run.ranked.values() if r.embed_ms is not None]
        out["latency_ms"]["embed_p50"] = round(percentile(emb, 50), 2)
        out["latency_ms"]["without_embed_p50"] = round(percentile(rest, 50), 2)
        out["latency_ms"]["without_embed_p95"] = round(percentile(rest, 95), 2)
    out["questions"] = {
        q.id: {"type": q.type, "split": q.split, "gold": q.gold,
               "gold_ranks": [run.ranked[q.id].sessions.index(g) + 1
                              if g in run.ranked[q.id].sessions else None for g in q.gold],
               **per_q[q.id]}
        for q in questions if q.id in per_q
    }
    return out


def _cols() -> list[str]:
    return [f"{m}@{k}" for k in KS for m in METRICS]


def table(results: dict[str, dict[str, Any]], split: str) -> str:
    cols = _cols()
    lines = [f"| config | split | n | {' | '.join(cols)} | p50 ms | p50 ms w/o embedding |",
             "|" + "---|" * (len(cols) + 5)]
    for name, res in results.items():
        s = res[split]
        lat = res["latency_ms"]
        vals = " | ".join(f"{s['overall'].get(c, float('nan')):.3f}" for c in cols)
        lines.append(f"| {name} | {split} | {s['n']} | {vals} | {lat['p50']} | "
                     f"{lat.get('without_embed_p50', '')} |")
    return "\n".join(lines)


def type_table(results: dict[str, dict[str, Any]], split: str) -> str:
    cols = ["recall_all@5", "recall_any@5", "ndcg_any@5", "recall_all@10"]
    lines = [f"| config | type | n | {' | '.join(cols)} |", "|" + "---|" * (len(cols) + 3)]
    for name, res in results.items():
        for t, s in res[split]["by_type"].items():
            vals = " | ".join(f"{s[c]:.3f}" for c in cols)
            lines.append(f"| {name} | {t} | {s['n']} | {vals} |")
    return "\n".join(lines)


def report(results: dict[str, dict[str, Any]], ingest: dict[str, Any]) -> str:
    parts = [f"Ingest: {ingest['turns']} turns in {ingest['seconds']} s "
             f"({ingest['turns_per_s']} turns/s, {ingest['duplicates']} reported duplicate)",
             ""]
    for split in SPLITS:
        parts += [table(results, split), ""]
    parts += ["Per question type (all scorable questions):", "", type_table(results, "all"), ""]
    return "\n".join(parts)


# -- main --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR / DATA_FILE,
                    help="the LongMemEval_S file (default: ../shared/bench-data/%(default)s)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N questions")
    ap.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS),
                    help=f"configurations to score, of {', '.join(CONFIGS)}")
    ap.add_argument("--set", action="append", default=[], metavar="NAME:KEY=VALUE",
                    help="an extra configuration NAME (default settings plus KEY=VALUE; "
                    "repeat to add keys); e.g. --set rrf:search_fusion=rrf")
    ap.add_argument("--turns", choices=("user", "all"), default="user",
                    help="which turns to store (the paper's keys: user)")
    ap.add_argument("--no-cache", action="store_true", help="do not use the embedding cache")
    ap.add_argument("--cache-dir", type=Path, default=CACHE)
    ap.add_argument("--db-dir", type=Path, default=None,
                    help="where the temporary database goes (deleted at the end)")
    ap.add_argument("--db", type=Path, default=None,
                    help="keep the database in this file and reuse it on the next run "
                    "(questions already stored are not ingested again; give --user-prefix)")
    ap.add_argument("--database-url", default=None, metavar="URL",
                    help="store the haystacks in this database instead of a temporary SQLite "
                    "file, e.g. postgresql://... (the store's own tables; users are prefixed "
                    "per run)")
    ap.add_argument("--http", metavar="URL", help="measure a running server instead")
    ap.add_argument("--key", help="API key for --http (memories:read and memories:write)")
    ap.add_argument("--user-prefix", default=None,
                    help="user_id prefix (default: lme-<time>- so runs never collide)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON output (default: bench/results/retrieval/<time>.json)")
    ap.add_argument("--quiet", action="store_true", help="no per-type table on stdout")
    args = ap.parse_args(argv)

    if not args.data.exists():
        print(f"LongMemEval data not found at {args.data}; nothing to measure. "
              "Pass --data PATH (see ../shared/bench-data/README.md).")
        return 0
    questions = load(args.data)
    if args.limit:
        questions = questions[: args.limit]
    roles = frozenset({"user"} if args.turns == "user" else {"user", "assistant"})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    prefix = args.user_prefix or (f"lme-{args.turns}-" if args.db else f"lme-{stamp}-")
    scorable = [q for q in questions if q.scorable]
    log(f"{len(questions)} questions, {len(scorable)} scorable "
        f"({sum(q.split == 'tune' for q in scorable)} tune, "
        f"{sum(q.split == 'holdout' for q in scorable)} holdout)")

    configs: dict[str, dict[str, Any]] = {}
    for name in args.configs:
        if name not in CONFIGS:
            ap.error(f"--configs: unknown {name!r} (known: {', '.join(CONFIGS)})")
        configs[name] = CONFIGS[name]
    for spec in args.set:
        name, _, kv = spec.partition(":")
        key, _, value = kv.partition("=")
        if not name or not key:
            ap.error(f"--set {spec!r}: expected NAME:KEY=VALUE")
        try:
            parsed: Any = json.loads(value)
        except ValueError:
            parsed = value
        configs.setdefault(name, {})[key] = parsed

    results: dict[str, dict[str, Any]] = {}
    info: dict[str, Any] = {"python": platform.python_version(), "turns": args.turns,
                            "questions": len(questions), "scorable": len(scorable),
                            "data": str(args.data)}
    if args.http:
        import httpx

        headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
        with httpx.Client(base_url=args.http, headers=headers, timeout=120.0) as client:
            ingest = ingest_http(client, questions, roles, prefix)
            log(f"ingest: {ingest}")
            run = query_http(client, scorable, prefix)
        results["server"] = score(run, questions)
        info["http"] = args.http
        info["note"] = "over HTTP the server's clock is 'now', not the question date"
    else:
        inner = load_default_embedder(Settings())
        embedder: Embedder = inner
        caching: CachingEmbedder | None = None
        if not args.no_cache:
            caching = CachingEmbedder(inner, args.cache_dir)
            embedder = caching
            warm_cache(caching, questions, roles)
        clock = FrozenClock()
        with tempfile.TemporaryDirectory(dir=args.db_dir, prefix="lme-") as tmp:
            base = Engram(path=args.database_url or args.db or Path(tmp) / "lme.db",
                          embedder=embedder, clock=clock,
                          settings=Settings(access_flush_seconds=0))
            todo = [q for q in questions
                    if base.list(user_id=user_of(q, prefix), limit=1).total == 0]
            if len(todo) < len(questions):
                log(f"{len(questions) - len(todo)} questions already stored in {args.db}")
            ingest = ingest_local(base, clock, todo, roles, prefix)
            log(f"ingest: {ingest}")
            if caching is not None:
                caching.enabled = False  # queries are embedded for real: latency counts it
                info["cache"] = {"path": str(caching.path), "hits": caching.hits,
                                 "misses": caching.misses}
            for name, overrides in configs.items():
                eng = variant(base, overrides, embedder, clock)
                query_local(name, eng, clock, scorable[:5], prefix, caching)  # warm-up
                run = query_local(name, eng, clock, scorable, prefix, caching)
                eng.service.close()
                results[name] = score(run, questions)
                o = results[name]["all"]["overall"]
                log(f"{name}: recall_all@5 {o.get('recall_all@5', 0):.3f} "
                    f"recall_any@5 {o.get('recall_any@5', 0):.3f} "
                    f"ndcg_any@5 {o.get('ndcg_any@5', 0):.3f} "
                    f"p50 {results[name]['latency_ms']['p50']} ms")
            base.service.close()
            base.service.store.close()
        inner.close()
        info["configs"] = configs
        info["store"] = type(base.service.store).__name__

    text = report(results, ingest)
    print(text if not args.quiet else text.split("Per question type")[0])
    out = args.out or RESULTS / f"{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"info": info, "ingest": ingest, "results": results}, indent=1))
    out.with_suffix(".md").write_text(text)
    log(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

