"""An on-disk embedding cache for the harness: vectors keyed by sha256 of the text, in one
SQLite file per model fingerprint, so that repeated experiments skip the model."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engramdb.embeddings import Embedder, EmbedResult

_PROBE = "Engram embedding cache probe: the quick brown fox jumps over the lazy dog."


class CachingEmbedder:
    """Wraps an Embedder; `enabled = False` passes every call through (e.g. for queries,
    whose latency the harness measures)."""

    def __init__(self, inner: Embedder, directory: Path) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self.dimension = inner.dimension
        self.enabled = True
        self.last_ms = 0.0  # the last pass-through call
        self.hits = 0
        self.misses = 0
        # The same name can hide another precision or truncation: key the file by what the
        # model actually returns for a probe text.
        probe = np.round(inner.embed([_PROBE]).vectors[0].astype(np.float64), 4)
        tag = hashlib.sha256(probe.tobytes()).hexdigest()[:12]
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{self.model_name}-{self.dimension}-{tag}.sqlite"
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors "
                         "(key BLOB PRIMARY KEY, tokens INTEGER, vec BLOB)")

    def embed(self, texts: Sequence[str]) -> EmbedResult:
        if not self.enabled or not texts:
            t0 = time.perf_counter()
            res = self.inner.embed(texts)
            self.last_ms = (time.perf_counter() - t0) * 1000
            return res
        keys = [hashlib.sha256(t.encode()).digest() for t in texts]
        found: dict[bytes, tuple[int, bytes]] = {}
        uniq = list(dict.fromkeys(keys))
        for i in range(0, len(uniq), 500):
            chunk = uniq[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for key, tokens, vec in self._db.execute(
                    f"SELECT key, tokens, vec FROM vectors WHERE key IN ({marks})", chunk):
                found[key] = (tokens, vec)
        todo = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(texts) - len(todo)
        self.misses += len(todo)
        if todo:
            res = self.inner.embed([texts[i] for i in todo])
            rows = []
            for j, i in enumerate(todo):
                vec = np.ascontiguousarray(res.vectors[j], dtype=np.float32).tobytes()
                found[keys[i]] = (res.tokens[j], vec)
                rows.append((keys[i], res.tokens[j], vec))
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)
        vectors = np.stack([np.frombuffer(found[k][1], dtype=np.float32) for k in keys])
        return EmbedResult(vectors=vectors, tokens=[found[k][0] for k in keys])

    def close(self) -> None:
        self._db.close()
        self.inner.close()
