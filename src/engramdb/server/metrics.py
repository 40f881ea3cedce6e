"""Prometheus metrics: requests, latencies, embedding batch sizes, memory counts."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .app import Engine

REGISTRY = CollectorRegistry()
REQUESTS = Counter("engram_http_requests", "HTTP requests", ["method", "route", "status"],
                   registry=REGISTRY)
LATENCY = Histogram(
    "engram_http_request_seconds", "HTTP request latency", ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)


def observe(scope: MutableMapping[str, Any], status: int, seconds: float) -> None:
    route = scope.get("route")
    path = getattr(route, "path", None) or "unmatched"
    method = scope.get("method", "?")
    REQUESTS.labels(method, path, str(status)).inc()
    LATENCY.labels(method, path).observe(seconds)


class EngineCollector(Collector):
    def __init__(self) -> None:
        self.engine: Engine | None = None

    def collect(self) -> Iterator[Metric]:
        eng = self.engine
        if eng is None:
            return
        stats = eng.store.stats()
        g = GaugeMetricFamily("engram_memories", "Stored memories by status", labels=["status"])
        for status, n in sorted(stats.get("by_status", {}).items()):
            g.add_metric([status], n)
        yield g
        if "database_bytes" in stats:
            yield GaugeMetricFamily("engram_database_bytes", "Database size",
                                    value=stats["database_bytes"])
        batch_stats = getattr(eng.embedder, "stats", None)
        if callable(batch_stats):
            s = batch_stats()
            yield CounterMetricFamily("engram_embed_batches", "Embedding batches run",
                                      value=s.batches)
            yield CounterMetricFamily("engram_embed_texts", "Texts embedded", value=s.texts)
            sizes = GaugeMetricFamily("engram_embed_batch_size_count",
                                      "Embedding batches by size", labels=["size"])
            for size, n in sorted(s.batch_sizes.items()):
                sizes.add_metric([str(size)], n)
            yield sizes


_collector = EngineCollector()
REGISTRY.register(_collector)


def bind(engine: Engine) -> None:
    _collector.engine = engine


def render() -> bytes:
    return generate_latest(REGISTRY)
