"""A user's keyword postings in memory: the SQLite store's BM25 without an FTS5 query per word.

FTS5 answers a one-word query of a user's scope in ~0.1 ms however few rows match (query
parsing, segment lookups, bm25()'s per-query statistics), so a typical query of seven words
cost ~1 ms for a user of 80 memories and ~2.6 ms for one of 1,800, on the cores that embed
the query meanwhile (docs/architecture.md, "Keyword search in memory"). The scores need
little: per query word, the scope's rows with its term and how often; per row, its length;
and two figures of the whole table (rows, tokens). `ScopeKeywords` holds the first two for
one (tenant, user), and `bm25_tf` is FTS5's own formula (fts5_aux.c), so the scores are the
index's. The store keeps a scope's postings coherent with writes exactly as it keeps the
vector partitions (same versions, same per-transaction operations).

The terms must be the index's to the letter (FTS5's porter stemmer, unicode61 folding and
splitting), so they come from FTS5 itself: `IndexTerms` tokenizes words in a private
in-memory FTS5 table with the same tokenizer and caches the result per word. Index words
carry a scope prefix of 14 consonants and digits; the stemmer measures a word by its
vowel-consonant runs, so any such prefix of that length stems alike, and a word is
tokenized once behind `REFERENCE_PREFIX` for every scope (tests check this against the
index).
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .text import fold
from .vector_index import ANY, NO_FILTERS, HeldFilters

#: The keyword index's tokenizer (storage/sqlite.py, migration 0004).
TOKENIZE = "porter unicode61 remove_diacritics 2"
#: Stands in for a scope's prefix (storage/sqlite.py `_kw_prefix`: a letter and 13 characters
#: without vowels), so one tokenization of a word serves every scope.
REFERENCE_PREFIX = "p" + "b" * 13
#: FTS5's bm25() constants.
K1 = 1.2
B = 0.75
#: A query matching at most this many postings of a scope is scored in Python
#: (`ScopeKeywords._ranked_few`), a larger one with numpy. Beside the model, Python cost
#: ~1.7 µs a posting and numpy ~160 µs for up to ~150 (100k bench database, p50): a typical
#: user's query, under 50 postings, 126 -> 56 µs.
SMALL_QUERY_POSTINGS = 48
#: Words whose terms IndexTerms keeps; past this the cache starts over.
MAX_CACHED_WORDS = 200_000


class WordTerms(NamedTuple):
    """What the index makes of one prefixed word."""

    #: The first token's term without the prefix, or None if the tokenizer split the prefix
    #: off (then no query of the scope can match it).
    term: str | None
    #: How many tokens the word makes (one, unless the tokenizer splits where `fold` did not).
    tokens: int


class IndexTerms:
    """The keyword index's terms of words, from FTS5's own tokenizer (thread-safe)."""

    def __init__(self, max_words: int = MAX_CACHED_WORDS) -> None:
        self.max_words = max_words
        self._cache: dict[str, WordTerms] = {}
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self._conn.execute(f"CREATE VIRTUAL TABLE words USING fts5(w, tokenize = '{TOKENIZE}')")
        self._conn.execute("CREATE VIRTUAL TABLE words_i USING fts5vocab(words, instance)")

    def of(self, words: Sequence[str]) -> list[WordTerms]:
        """The terms of each (folded) word, in order."""
        cache = self._cache
        missing = [w for w in dict.fromkeys(words) if w not in cache]
        if missing:
            self._tokenize(missing)
        return [cache[w] for w in words]

    def _tokenize(self, words: list[str]) -> None:
        prefix = REFERENCE_PREFIX
        found: dict[int, list[tuple[int, str]]] = {}
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN")
            try:
                conn.executemany("INSERT INTO words (rowid, w) VALUES (?, ?)",
                                 ((i, prefix + w) for i, w in enumerate(words)))
                for doc, offset, term in conn.execute("SELECT doc, offset, term FROM words_i"):
                    found.setdefault(doc, []).append((offset, term))
            finally:
                conn.execute("ROLLBACK")
            if len(self._cache) + len(words) > self.max_words:
                self._cache = {}
            for i, w in enumerate(words):
                tokens = sorted(found.get(i, ()))
                first = tokens[0][1] if tokens else ""
                term = first[len(prefix):] if tokens and first.startswith(prefix) else None
                self._cache[w] = WordTerms(term, len(tokens))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def bm25_tf(tf: npt.NDArray[np.float64], tokens: npt.NDArray[np.float64],
            avgdl: float) -> npt.NDArray[np.float64]:
    """FTS5 bm25()'s term part for rows: `tf` occurrences in rows of `tokens` tokens (each
    element as FTS5 computes it for one row)."""
    return (tf * (K1 + 1.0)) / (tf + K1 * (1.0 - B + B * tokens / avgdl))


def fts5_idf(table_rows: int, hits: int) -> float:
    """FTS5 bm25()'s idf of a phrase found in `hits` of `table_rows` rows."""
    value = math.log((table_rows - hits + 0.5) / (hits + 0.5)) if table_rows else 0.0
    return value if value > 0.0 else 1e-6


class KwRow(NamedTuple):
    """A row of a scope as keyword search sees it: what scores it and what filters it."""

    memory_id: str
    #: Tokens of the row in both index columns (FTS5's row length for bm25).
    tokens: int
    #: Its terms, each once (to take it out of the postings again).
    terms: tuple[str, ...]
    agent_id: str | None
    session_id: str | None
    namespace: str
    active: bool
    #: Expiry as epoch seconds, +inf for never.
    expires: float


class ScopeKeywords:
    """The keyword postings of one (tenant, user) at a version of it (not thread-safe: the
    store guards it).

    Scoring is numpy over per-term arrays (`ranked`): a query of a 1,800-memory user adds up
    ~500 postings, which in a Python loop took ~1 ms on the cores that embed the query
    meanwhile. Each row has a slot in the per-row arrays, and each term's postings are
    packed into arrays of slots and term parts when a query first needs them, again after
    a write changes them."""

    __slots__ = ("_active", "_expires", "_free", "_memory_id", "_packed", "_rowid", "_slot",
                 "_tokens", "postings", "rows", "size", "version")

    def __init__(self, version: int) -> None:
        self.version = version
        #: term -> {rowid: occurrences}
        self.postings: dict[str, dict[int, int]] = {}
        self.rows: dict[int, KwRow] = {}
        #: postings held, the measure of the cache's budget
        self.size = 0
        self._slot: dict[int, int] = {}  # rowid -> its slot in the per-row arrays
        self._free: list[int] = []
        # per slot: the row's tokens, rowid, and the filters checked on every search
        self._tokens = np.zeros(16, dtype=np.float64)
        self._rowid = np.zeros(16, dtype=np.int64)
        self._memory_id = np.zeros(16, dtype=object)
        self._active = np.zeros(16, dtype=bool)
        self._expires = np.zeros(16, dtype=np.float64)
        #: term -> (average row length, slots, bm25_tf at that length, occurrences) of its
        #: postings, built when first scored
        self._packed: dict[str, tuple[float, npt.NDArray[np.intp], npt.NDArray[np.float64],
                                      npt.NDArray[np.float64]]] = {}

    def put(self, rowid: int, memory_id: str, words: Sequence[WordTerms], agent: str | None,
            session: str | None, namespace: str, active: bool, expires: float | None) -> None:
        """Add a row, or replace it, given the terms of its folded words."""
        self.remove(rowid)
        counts: dict[str, int] = {}
        tokens = 0
        for word in words:
            tokens += word.tokens
            if word.term is not None:
                counts[word.term] = counts.get(word.term, 0) + 1
        packed = self._packed
        for term, n in counts.items():
            self.postings.setdefault(term, {})[rowid] = n
            packed.pop(term, None)
        self.size += len(counts)
        # both columns hold every word (behind the tenant's and the user's prefix)
        row = KwRow(memory_id, 2 * tokens, tuple(counts), agent, session, namespace, active,
                    math.inf if expires is None else expires)
        self.rows[rowid] = row
        if self._free:
            slot = self._free.pop()
        else:
            slot = len(self._slot)
            if slot == self._tokens.shape[0]:
                for name in ("_tokens", "_rowid", "_memory_id", "_active", "_expires"):
                    old = getattr(self, name)
                    setattr(self, name, np.concatenate([old, np.zeros_like(old)]))
        self._slot[rowid] = slot
        self._tokens[slot] = row.tokens
        self._rowid[slot] = rowid
        self._memory_id[slot] = memory_id
        self._active[slot] = active
        self._expires[slot] = row.expires

    def remove(self, rowid: int) -> None:
        row = self.rows.pop(rowid, None)
        if row is None:
            return
        for term in row.terms:
            rows = self.postings[term]
            del rows[rowid]
            if not rows:
                del self.postings[term]
            self._packed.pop(term, None)
        self.size -= len(row.terms)
        self._free.append(self._slot.pop(rowid))

    def _term(self, term: str, avgdl: float) -> tuple[npt.NDArray[np.intp],
                                                      npt.NDArray[np.float64]] | None:
        """The slots of a term's postings and their `bm25_tf` at `avgdl` (kept until a
        write changes the term or the table's average row length changes)."""
        found = self._packed.get(term)
        if found is not None and found[0] == avgdl:
            return found[1], found[2]
        rows = self.postings.get(term)
        if not rows:
            return None
        if found is None:
            slot = self._slot
            slots = np.fromiter((slot[r] for r in rows), dtype=np.intp, count=len(rows))
            tf = np.fromiter(rows.values(), dtype=np.float64, count=len(rows))
        else:
            _, slots, _, tf = found
        part = bm25_tf(tf, self._tokens[slots], avgdl)
        self._packed[term] = (avgdl, slots, part, tf)
        return slots, part

    def ranked(self, terms: Iterable[str], idfs: Iterable[float | None], table_rows: int,
               avgdl: float, held: HeldFilters = NO_FILTERS, k: int | None = None
               ) -> list[tuple[int, float, str]]:
        """(rowid, BM25 score, memory id) of the rows that match and pass the filters, best
        first (equals by rowid), the k best with `k`. The query has a term per query word
        (repeats count as FTS5's one query per word counts them); a term's idf is the given
        one, or FTS5's from the scope's rows with it against the table's when None. A row's
        score is `bm25_tf` times idf summed term by term in query order, as a loop over the
        postings would add it up."""
        matched: list[tuple[str, float, npt.NDArray[np.intp], npt.NDArray[np.float64]]] = []
        postings = 0
        for term, idf in zip(terms, idfs, strict=True):
            found = self._term(term, avgdl)
            if found is not None:
                weight = fts5_idf(table_rows, len(found[0])) if idf is None else idf
                matched.append((term, weight, *found))
                postings += len(found[0])
        if not matched:
            return []
        narrow = held.agent is not ANY or held.session is not ANY or held.namespace is not ANY
        if postings <= SMALL_QUERY_POSTINGS:
            return self._ranked_few(matched, held, k, narrow)
        every = np.concatenate([slots for _, _, slots, _ in matched])
        parts = [weight * part for _, weight, _, part in matched]
        size = self._tokens.shape[0]
        # bincount adds the weights in input order: term by term, as the query lists them
        total = np.bincount(every, weights=np.concatenate(parts), minlength=size)
        hit = np.flatnonzero(np.bincount(every, minlength=size))
        admitted = self._expires[hit] > held.now
        if not held.include_inactive:
            admitted &= self._active[hit]
        hit = hit[admitted]
        scores = total[hit]
        rowids = self._rowid[hit]
        order = np.lexsort((rowids, -scores))
        if k is not None and not narrow:
            # every row left passes: the k best, whole arrays to Python at once
            order = order[:k]
            return list(zip(rowids[order].tolist(), scores[order].tolist(),
                            self._memory_id[hit[order]].tolist(), strict=True))
        return self._admitted(zip(rowids[order].tolist(), scores[order].tolist(), strict=True),
                              held, k, narrow)

    def _ranked_few(self, matched: list[tuple[str, float, npt.NDArray[np.intp],
                                              npt.NDArray[np.float64]]],
                    held: HeldFilters, k: int | None, narrow: bool
                    ) -> list[tuple[int, float, str]]:
        """`ranked` of a query with few postings, in Python: each of numpy's ~20 steps
        cost 5-10 µs beside the model, where a typical user's query adds up ~20 postings.
        The same floats: each row's parts are added term by term from 0.0, as bincount does
        (a term's postings are in its slots' order)."""
        total: dict[int, float] = {}
        for term, weight, _, part in matched:
            for rowid, value in zip(self.postings[term], part.tolist(), strict=True):
                total[rowid] = total.get(rowid, 0.0) + weight * value
        rows, now, every = self.rows, held.now, held.include_inactive
        hits = [(rowid, score) for rowid, score in total.items()
                if (row := rows[rowid]).expires > now and (every or row.active)]
        hits.sort(key=lambda h: (-h[1], h[0]))
        return self._admitted(hits, held, k, narrow)

    def _admitted(self, hits: Iterable[tuple[int, float]], held: HeldFilters, k: int | None,
                  narrow: bool) -> list[tuple[int, float, str]]:
        """The rows of `hits` (best first) that pass the agent, session and namespace
        filters, with their memory ids; the first k with `k`."""
        rows = self.rows
        out: list[tuple[int, float, str]] = []
        for rowid, score in hits:
            row = rows[rowid]
            if narrow and not held.admits(row.expires, row.active, row.agent_id,
                                          row.session_id, row.namespace):
                continue
            out.append((rowid, score, row.memory_id))
            if len(out) == k:
                break
        return out


def kw_averages(block: bytes | None) -> tuple[int, int]:
    """(rows, tokens in all columns) from an FTS5 table's averages record (id 1 of its
    %_data table): a varint of the rows, then one of the tokens per column."""
    if not block:
        return 0, 0
    values: list[int] = []
    i = 0
    while i < len(block):
        value = 0
        for j in range(9):
            byte = block[i]
            i += 1
            if j == 8:
                value = (value << 8) | byte
                break
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        values.append(value)
    return (values[0], sum(values[1:])) if values else (0, 0)


def words_of(content: str) -> list[str]:
    """The words of a memory as the keyword index takes them (storage/sqlite.py)."""
    return fold(content).split()

