"""MemoryService: the write path and the read path. Every face calls these; no rule about
duplicates, scores or visibility lives anywhere else."""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np

from ..clock import Clock, SystemClock
from ..embeddings.base import Embedder, EmbedResult
from ..errors import Conflict, Duplicate, NotFound, QuotaExceeded, ValidationError
from ..ids import new_id
from ..models import (
    ContentType,
    HistoryEvent,
    MemoryNature,
    MemoryRecord,
    MemoryType,
    Page,
    Relation,
    SaveResult,
    SaveStatus,
    Scope,
    SearchHit,
    Status,
    Tier,
)
from ..settings import Settings
from ..storage.base import Filters, Store, Vector
from . import lifecycle, pii, supersession
from . import validation as v
from .access import AccessTracker
from .normalize import integrity_hash
from .overlap import Overlap
from .query import (
    TimeWindow,
    sub_queries,
    time_match,
    time_windows,
    without_scaffolding,
    without_time_expressions,
)
from .scoring import Weights, combine, keyword_scores, timed, weighted_many, with_time
from .transfer import ImportedRow
from .validation import Draft, NewMemory, validate_new

MAX_QUERY_CHARS = 10_000
MAX_BATCH = 1000
MAX_PAGE = 1000
# What a ranked candidate's score was made of: semantic, keyword, importance, relevance
# and the time match (None when the query names no period); `_explain` turns it into the
# result's explain, for returned candidates only.
_Why = tuple[float, float, float, float, float | None]


@dataclass(frozen=True, slots=True)
class DuplicateCheck:
    is_duplicate: bool
    similarity: float
    existing_id: str | None
    existing_content: str | None
    exact: bool = False


@dataclass(frozen=True, slots=True)
class SessionHit:
    session_id: str
    score: float
    hits: list[SearchHit]


@dataclass(frozen=True, slots=True)
class Context:
    """Memories assembled into a prompt-ready block within a token budget."""

    text: str
    memories: list[SearchHit]
    tokens: int
    budget: int


def estimate_tokens(text: str) -> int:
    """About four characters a token, as LLM tokenizers average on English text; the model
    that reads the block is not known here, so this is an estimate on purpose."""
    return max(1, -(-len(text) // 4))


@dataclass(frozen=True, slots=True)
class SearchQuery:
    query: str
    limit: int = 10
    min_score: float = 0.0
    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    namespace: str | None = None
    memory_types: Sequence[str] = ()
    content_types: Sequence[str] = ()
    tiers: Sequence[str] = ()
    memory_nature: str | None = None
    scope: str | None = None
    domain: str | None = None
    tags: Sequence[str] = ()
    metadata: dict[str, Any] | None = None
    created_after: Any = None
    created_before: Any = None
    include_superseded: bool = False
    min_relevance: float | None = None
    #: count the returned memories as accessed (refreshes their relevance)
    track_access: bool = True


class MemoryService:
    def __init__(self, store: Store, embedder: Embedder, settings: Settings | None = None,
                 clock: Clock | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.settings = settings or Settings()
        self.clock: Clock = clock or SystemClock()
        self.weights = Weights(
            self.settings.weight_semantic, self.settings.weight_keyword,
            self.settings.weight_importance, self.settings.weight_relevance,
        ).normalised()
        # The store makes a write section atomic across processes; this lock per user scope
        # keeps threads of this process from even racing to the store's lock.
        self._scope_locks: dict[tuple[str, str], threading.Lock] = {}
        self._scope_locks_guard = threading.Lock()
        store.migrate()
        store.bind_embedding(embedder.model_name, embedder.dimension)
        self.access = AccessTracker(store, interval=self.settings.access_flush_seconds)
        self.access.start()
        # the spare threads the read path overlaps with the query embedding
        self.overlap = Overlap()
        st = self.settings
        self._thresholds = supersession.Thresholds(
            candidate_floor=st.supersession_floor,
            same_subject_cosine=st.supersession_same_subject_cosine)
        self._judge = (supersession.LLMJudge(st.llm_base_url, st.llm_model, st.llm_api_key,
                                             st.llm_timeout) if st.llm_base_url else None)

    def close(self) -> None:
        """Flush pending access counts and stop the background flusher."""
        self.access.close()
        self.overlap.close()
        if self._judge is not None:
            self._judge.close()

    # -- helpers -----------------------------------------------------------------------

    def _scope_lock(self, tenant_id: str, user_id: str | None) -> threading.Lock:
        key = (tenant_id, user_id or "")
        with self._scope_locks_guard:
            lock = self._scope_locks.get(key)
            if lock is None:
                lock = self._scope_locks[key] = threading.Lock()
            return lock

    def _visible(self, rec: MemoryRecord, now: datetime) -> bool:
        return rec.expires_at is None or rec.expires_at > now

    def _event(self, rec: MemoryRecord, kind: str, now: datetime, actor: str | None,
               changes: dict[str, Any]) -> HistoryEvent:
        return HistoryEvent(id=new_id(), memory_id=rec.id, tenant_id=rec.tenant_id,
                            event=kind, at=now, actor=actor, changes=changes)

    def _dedup_filters(self, tenant_id: str, d: Draft | MemoryRecord, now: datetime) -> Filters:
        return Filters(tenant_id=tenant_id, now=now, user_id=d.user_id, agent_id=d.agent_id,
                       namespace=d.namespace, exact_scope=True)

    def _embed_one(self, text: str) -> tuple[Vector, int]:
        res = self.embedder.embed([text])
        return res.vectors[0], res.tokens[0]

    def _scan_pii(self, content: str) -> tuple[str, builtins.list[str]]:
        """The content to store and the PII types found in it (the `pii_mode` setting)."""
        mode = self.settings.pii_mode
        if mode == "off":
            return content, []
        found = pii.detect(content)
        if mode == "redact" and found.fields:
            content = pii.redact(content, found)
        return content, list(found.fields)

    def _pii(self, d: Draft) -> None:
        d.content, d.pii_fields = self._scan_pii(d.content)
        if self.settings.pii_mode == "redact" and d.value_json is not None and d.pii_fields:
            # a structured value may hold the same PII: redact its strings one by one
            d.value_json = _redact_tree(d.value_json)

    def _record(self, tenant_id: str, d: Draft, h: str, now: datetime,
                tokens: int) -> MemoryRecord:
        return MemoryRecord(
            id=new_id(), tenant_id=tenant_id, content=d.content, integrity_hash=h,
            created_at=d.created_at or now, updated_at=d.created_at or now,
            user_id=d.user_id, agent_id=d.agent_id,
            session_id=d.session_id, namespace=d.namespace, scope=d.scope, domain=d.domain,
            value_json=d.value_json, content_type=d.content_type, memory_type=d.memory_type,
            memory_nature=d.memory_nature, source=d.source,
            source_id=d.source_id, external_id=d.external_id,
            parent_memory_id=d.parent_memory_id, metadata=d.metadata, tags=d.tags,
            importance=d.importance, confidence=d.confidence, pinned=d.pinned,
            immutable=d.immutable, expires_at=d.expires_at,
            relevance=lifecycle.INITIAL_RELEVANCE,
            pii_detected=bool(d.pii_fields), pii_fields=list(d.pii_fields),
            tier=(tier := lifecycle.promoted_tier(d.tier, 0, d.importance)),
            decay_rate=lifecycle.decay_rate(d.memory_type, tier),
            embedding_model=self.embedder.model_name, tokens_used=tokens,
        )

    def _check_parent(self, tenant_id: str, d: Draft, now: datetime) -> None:
        if d.parent_memory_id is None:
            return
        parent = self.store.get(tenant_id, d.parent_memory_id)
        if parent is None or not self._visible(parent, now):
            raise ValidationError(
                f"parent_memory_id: no memory {d.parent_memory_id} in this tenant",
                field="parent_memory_id",
            )

    def _check_quota(self, tenant_id: str, adding: int) -> None:
        """A tenant's plan limit on active memories. Concurrent writers may overshoot it by
        the writes in flight; the limit is a plan, not a safety bound."""
        tenant = self.store.get_tenant(tenant_id)
        if tenant is None or tenant.memory_limit is None:
            return
        used = self.store.count_active(tenant_id, self.clock.now())
        if used + adding > tenant.memory_limit:
            raise QuotaExceeded(
                f"plan limit reached: tenant {tenant_id} may store {tenant.memory_limit} "
                f"memories and has {used}; delete memories or raise the limit"
            )

    def _exact_duplicate(self, tenant_id: str, d: Draft, h: str,
                         now: datetime) -> MemoryRecord | None:
        """The visible memory with the same hash in the same scope. An expired one is retired
        (status expired) so the new memory can take its place."""
        rec = self.store.find_by_hash(tenant_id, d.user_id, d.agent_id, d.namespace, h)
        if rec is None:
            return None
        if self._visible(rec, now):
            return rec
        retired = replace(rec, status=Status.EXPIRED, updated_at=now)
        self.store.update(retired, None,
                          self._event(retired, "expire", now, None, {"status": "expired"}))
        return None

    def _save(self, tenant_id: str, d: Draft, h: str, vec: Vector, tokens: int,
              actor: str | None) -> SaveResult:
        """Inside the scope's write section: re-check duplicates, then insert."""
        now = self.clock.now()
        existing = self._exact_duplicate(tenant_id, d, h, now)
        if existing is not None:
            return SaveResult(SaveStatus.DUPLICATE, existing.id, existing,
                              existing_id=existing.id, similarity=1.0, tokens_used=tokens)
        st = self.settings
        k = max(1, st.supersession_candidates) if st.supersession_enabled else 1
        near = (self.store.nearest(self._dedup_filters(tenant_id, d, now), vec, k)
                if d.near_dedup else [])
        # Whole records only of the neighbours a rule may look at: a near duplicate, or a
        # supersession candidate (decide_against drops those below candidate_floor).
        floor = st.near_duplicate_threshold
        if st.supersession_enabled:
            floor = min(floor, self._thresholds.candidate_floor)
        close = [mid for mid, sim in near if sim >= floor]
        neighbours = self.store.get_many(tenant_id, close) if close else {}
        if near and near[0][1] >= st.near_duplicate_threshold:
            match = neighbours.get(near[0][0])
            # Near-identical text can still be a new value ("is 34" -> "is 35 years old"):
            # the supersession rules get the last word before it is dropped as a duplicate.
            if match is not None and not (
                    st.supersession_enabled and supersession.overrides_near_duplicate(
                        self._decide(d.content, match.content, near[0][1]))):
                return SaveResult(SaveStatus.DUPLICATE, match.id, match, existing_id=match.id,
                                  similarity=near[0][1], tokens_used=tokens,
                                  reason=f"cosine {near[0][1]:.3f} >= "
                                         f"{st.near_duplicate_threshold}")
        outcome = None
        if st.supersession_enabled and near:
            outcome = supersession.decide_against(
                d.content,
                [(mid, neighbours[mid].content, sim) for mid, sim in near if mid in neighbours],
                self._thresholds, self._judge, max_candidates=k)
        rec = self._record(tenant_id, d, h, now, tokens)
        self.store.insert(rec, vec, self._event(rec, "create", now, actor, _snapshot(rec)))
        if outcome is None or outcome.relation == "saved":
            return SaveResult(SaveStatus.SAVED, rec.id, rec, tokens_used=tokens)
        reasons = dict(outcome.decisions)
        for old_id in outcome.superseded:
            old = neighbours[old_id]
            why = reasons[old_id]
            self.store.update(
                replace(old, status=Status.SUPERSEDED, superseded_by=rec.id, updated_at=now),
                None, self._event(old, "supersede", now, actor, {
                    "superseded_by": rec.id, "rule": why.rule, "reason": why.reason}))
            self.store.add_relation(Relation(tenant_id, rec.id, old_id, "supersedes", now))
        for old_id in outcome.extended:
            self.store.add_relation(Relation(tenant_id, rec.id, old_id, "extends", now))
        related = (outcome.superseded or outcome.extended)[0]
        status = SaveStatus.UPDATED if outcome.superseded else SaveStatus.EXTENDED
        return SaveResult(status, rec.id, rec, tokens_used=tokens, related_id=related,
                          similarity=dict(near).get(related), reason=reasons[related].reason)

    def _decide(self, new: str, old: str, similarity: float) -> supersession.Decision:
        return supersession.decide(new, old, similarity, self._thresholds, self._judge)

    # -- write path --------------------------------------------------------------------

    def add(self, tenant_id: str, new: NewMemory, actor: str | None = None) -> SaveResult:
        now = self.clock.now()
        d = validate_new(new, now)
        self._pii(d)
        h = integrity_hash(d.content, d.value_json)
        self._check_parent(tenant_id, d, now)
        # Cheap exact check first: a duplicate costs no embedding.
        found = self.store.find_by_hash(tenant_id, d.user_id, d.agent_id, d.namespace, h)
        if found is not None and self._visible(found, now):
            return SaveResult(SaveStatus.DUPLICATE, found.id, found, existing_id=found.id,
                              similarity=1.0)
        self._check_quota(tenant_id, 1)
        vec, tokens = self._embed_one(d.content)
        with self._scope_lock(tenant_id, d.user_id), self.store.atomic(tenant_id, d.user_id):
            return self._save(tenant_id, d, h, vec, tokens, actor)

    def add_many(self, tenant_id: str, items: Sequence[NewMemory],
                 actor: str | None = None) -> builtins.list[SaveResult]:
        """Validate all (nothing is written if any item is invalid), embed all in one batched
        call, then save per user scope; duplicates inside the batch are caught too."""
        if len(items) > MAX_BATCH:
            raise ValidationError(f"items: at most {MAX_BATCH} per batch (got {len(items)})",
                                  field="items")
        now = self.clock.now()
        drafts: builtins.list[Draft] = []
        for i, item in enumerate(items):
            try:
                drafts.append(validate_new(item, now))
            except ValidationError as exc:
                name = f"items[{i}].{exc.field}" if exc.field else f"items[{i}]"
                raise ValidationError(f"items[{i}].{exc.message}", field=name) from None
        return self._add_drafts(tenant_id, drafts, actor)

    def _add_drafts(self, tenant_id: str, drafts: builtins.list[Draft],
                    actor: str | None) -> builtins.list[SaveResult]:
        now = self.clock.now()
        for d in drafts:
            self._pii(d)
        for d in drafts:
            self._check_parent(tenant_id, d, now)
        hashes = [integrity_hash(d.content, d.value_json) for d in drafts]
        results: builtins.list[SaveResult | None] = [None] * len(drafts)

        # exact duplicates of stored memories, and of earlier items of this batch
        first_of: dict[tuple[Any, ...], int] = {}
        todo: builtins.list[int] = []
        for i, (d, h) in enumerate(zip(drafts, hashes, strict=True)):
            key = (d.user_id, d.agent_id, d.namespace, h)
            found = self.store.find_by_hash(tenant_id, d.user_id, d.agent_id, d.namespace, h)
            if found is not None and self._visible(found, now):
                results[i] = SaveResult(SaveStatus.DUPLICATE, found.id, found,
                                        existing_id=found.id, similarity=1.0)
            elif key in first_of:
                results[i] = None  # resolved after the first copy is saved
            else:
                first_of[key] = i
                todo.append(i)

        if todo:
            self._check_quota(tenant_id, len(todo))
        by_user: dict[str | None, builtins.list[int]] = {}
        for i in todo:
            by_user.setdefault(drafts[i].user_id, []).append(i)
        # Embedded shortest first (little padding in each model run), a chunk ahead of the
        # saving; a user's section is saved once all of its items are embedded.
        order = sorted(todo, key=lambda i: len(drafts[i].content))
        vectors: dict[int, Vector] = {}
        tokens: dict[int, int] = {}
        missing = {user_id: len(idxs) for user_id, idxs in by_user.items()}
        for start, emb in self._embedded_ahead([drafts[i].content for i in order]):
            ready: builtins.list[str | None] = []
            for i, vec, n in zip(order[start:], emb.vectors, emb.tokens, strict=False):
                vectors[i], tokens[i] = vec, n
                user_id = drafts[i].user_id
                missing[user_id] -= 1
                if not missing[user_id]:
                    ready.append(user_id)
            if ready:
                self._save_sections(tenant_id, ready, by_user, drafts, hashes, vectors, tokens,
                                    results, actor)
        # copies of an item that appeared earlier in the batch
        for i, (d, h) in enumerate(zip(drafts, hashes, strict=True)):
            if results[i] is None:
                first = results[first_of[(d.user_id, d.agent_id, d.namespace, h)]]
                assert first is not None
                results[i] = SaveResult(SaveStatus.DUPLICATE, first.id, first.memory,
                                        existing_id=first.id, similarity=1.0)
        return [r for r in results if r is not None]

    def _save_sections(self, tenant_id: str, user_ids: builtins.list[str | None],
                       by_user: dict[str | None, builtins.list[int]],
                       drafts: builtins.list[Draft], hashes: builtins.list[str],
                       vectors: dict[int, Vector], tokens: dict[int, int],
                       results: builtins.list[SaveResult | None], actor: str | None) -> None:
        """Save the batch items of these users, each user's in order, in one write section
        over all their scopes: one transaction per model chunk rather than one per user.

        A commit writes every page the transaction dirtied to the WAL (the row's table and
        index leaves, the vector, the keyword index's new segment, history), so at 100k
        memories over 1,000 users, where nearly every user of a batch has one item,
        grouping cut the engine's own cost of an add_many from 3.7 to 2.7 ms a memory
        (docs/architecture.md, write path). The scope locks are taken in sorted order, as
        the store takes its own, so concurrent writers cannot deadlock."""
        scopes = sorted({user_id or "" for user_id in user_ids})
        with ExitStack() as held:
            for scope in scopes:
                held.enter_context(self._scope_lock(tenant_id, scope))
            with self.store.atomic(tenant_id, *user_ids):
                for user_id in user_ids:
                    self._save_user_items(tenant_id, by_user[user_id], drafts, hashes, vectors,
                                          tokens, results, actor)

    def _save_user_items(self, tenant_id: str, idxs: builtins.list[int],
                         drafts: builtins.list[Draft], hashes: builtins.list[str],
                         vectors: dict[int, Vector], tokens: dict[int, int],
                         results: builtins.list[SaveResult | None], actor: str | None) -> None:
        """Save the batch items `idxs` of one user, in order (inside its write section)."""
        saved: builtins.list[tuple[int, Vector]] = []
        for i in idxs:
            d = drafts[i]
            # near duplicates of items saved earlier in this batch (not yet visible
            # to the store's index until the section commits)
            twin = self._batch_twin(d, vectors[i], saved, drafts)
            if twin is not None:
                j, sim = twin
                first = results[j]
                assert first is not None
                results[i] = SaveResult(SaveStatus.DUPLICATE, first.id, first.memory,
                                        existing_id=first.id, similarity=sim,
                                        tokens_used=tokens[i])
                continue
            res = self._save(tenant_id, d, hashes[i], vectors[i], tokens[i], actor)
            results[i] = res
            if res.status is SaveStatus.SAVED:
                saved.append((i, vectors[i]))

    def _embedded_ahead(self, texts: Sequence[str]) -> Iterator[tuple[int, EmbedResult]]:
        """(offset, result) for chunks of `texts`: each chunk after the first is embedded on
        a spare thread while the caller saves the one before, so that writing a batch
        overlaps embedding it instead of following it (docs/architecture.md, write path,
        "Ingest"). One model run at a time, so the model keeps its threads to itself; a
        batch of one chunk never leaves the caller's thread."""
        size = max(1, self.settings.embed_max_batch)
        if not texts:
            return
        result = self.embedder.embed(texts[:size])
        for start in range(0, len(texts), size):
            nxt = start + size
            pending = (self.overlap.start(partial(self.embedder.embed, texts[nxt:nxt + size]))
                       if nxt < len(texts) else None)
            yield start, result
            if pending is not None:
                result = pending()

    def add_conversation(self, tenant_id: str, session_id: str, messages: Sequence[Any], *,
                         user_id: str | None = None, agent_id: str | None = None,
                         namespace: str | None = None, importance: float | None = None,
                         metadata: dict[str, Any] | None = None,
                         actor: str | None = None) -> builtins.list[SaveResult]:
        """A transcript as turn memories (content_type conversation, episodic), one per
        message, keeping session, role, position and time. Sending the same transcript again
        stores nothing new: a turn's identity is its content, role and position in the
        session. Messages over 10,000 characters are split into parts."""
        sid = v.identifier(session_id, "session_id")
        if sid is None:
            raise ValidationError("session_id: is required", field="session_id")
        if not isinstance(messages, list | tuple) or not messages:
            raise ValidationError("messages: must be a non-empty list", field="messages")
        if len(messages) > MAX_BATCH:
            raise ValidationError(f"messages: at most {MAX_BATCH} per call "
                                  f"(got {len(messages)})", field="messages")
        base_meta = v.metadata_object(metadata)
        now = self.clock.now()
        drafts: builtins.list[Draft] = []
        for i, msg in enumerate(messages):
            where = f"messages[{i}]"
            if not isinstance(msg, dict):
                raise ValidationError(f"{where}: must be an object with role and content",
                                      field=where)
            unknown = set(msg) - {"role", "content", "created_at"}
            if unknown:
                name = sorted(unknown)[0]
                raise ValidationError(f"{where}.{name}: unknown field", field=f"{where}.{name}")
            role = msg.get("role")
            if role not in _ROLES:
                raise ValidationError(f"{where}.role: must be one of {', '.join(_ROLES)}",
                                      field=f"{where}.role")
            text = msg.get("content")
            if not isinstance(text, str) or not text.strip():
                raise ValidationError(f"{where}.content: must be a non-empty string",
                                      field=f"{where}.content")
            at = (v.timestamp(msg["created_at"], f"{where}.created_at")
                  if msg.get("created_at") is not None else None)
            parts = _split(v.normalize_content(text), v.MAX_CONTENT_CHARS)
            for j, part in enumerate(parts):
                ident: dict[str, Any] = {"role": role, "position": i}
                if len(parts) > 1:
                    ident["part"] = j
                d = validate_new(NewMemory(
                    content=part, user_id=user_id, agent_id=agent_id, session_id=sid,
                    namespace=namespace, content_type="conversation", memory_type="episodic",
                    memory_nature="episodic", source="conversation", importance=importance,
                    # the session is part of the identity: "hi" opening two sessions is two
                    # events (the dedup scope itself is user, agent and namespace)
                    metadata={**base_meta, **ident}, value_json={"session_id": sid, **ident},
                ), now)
                d.created_at = at
                d.near_dedup = False
                drafts.append(d)
        return self._add_drafts(tenant_id, drafts, actor)

    def _batch_twin(self, d: Draft, vec: Vector, saved: builtins.list[tuple[int, Vector]],
                    drafts: builtins.list[Draft]) -> tuple[int, float] | None:
        if not d.near_dedup:
            return None
        best: tuple[int, float] | None = None
        for j, other in saved:
            o = drafts[j]
            if (o.agent_id, o.namespace) != (d.agent_id, d.namespace):
                continue
            sim = float(np.dot(vec, other))
            if sim >= self.settings.near_duplicate_threshold and (best is None or sim > best[1]):
                best = (j, sim)
        if best is not None and self.settings.supersession_enabled and \
                supersession.overrides_near_duplicate(
                    self._decide(d.content, drafts[best[0]].content, best[1])):
            return None  # a new value, not a copy: _save supersedes the earlier item
        return best

    def duplicate_check(self, tenant_id: str, new: NewMemory) -> DuplicateCheck:
        """What `add` would decide about duplicates, without writing anything."""
        now = self.clock.now()
        d = validate_new(new, now)
        self._pii(d)
        h = integrity_hash(d.content, d.value_json)
        found = self.store.find_by_hash(tenant_id, d.user_id, d.agent_id, d.namespace, h)
        if found is not None and self._visible(found, now):
            return DuplicateCheck(True, 1.0, found.id, found.content, exact=True)
        vec, _ = self._embed_one(d.content)
        near = self.store.nearest(self._dedup_filters(tenant_id, d, now), vec, 1)
        if not near:
            return DuplicateCheck(False, 0.0, None, None)
        mid, sim = near[0]
        rec = self.store.get(tenant_id, mid)
        return DuplicateCheck(sim >= self.settings.near_duplicate_threshold, sim, mid,
                              rec.content if rec else None)

    def _fetch(self, tenant_id: str, memory_id: str) -> MemoryRecord:
        mid = v.uuid_string(memory_id, "id")
        assert mid is not None
        rec = self.store.get(tenant_id, mid)
        if rec is None or not self._visible(rec, self.clock.now()):
            raise NotFound(f"memory {memory_id} not found", field="id")
        return rec

    def get(self, tenant_id: str, memory_id: str, *, track: bool = True) -> MemoryRecord:
        """A visible memory. A get is an access: the returned record shows the access (count,
        time, current relevance) that is written in the next batch."""
        rec = self._fetch(tenant_id, memory_id)
        now = self.clock.now()
        if not track:
            return replace(rec, relevance=lifecycle.current_relevance(rec, now))
        self.access.touch(tenant_id, [rec.id], now)
        count = self.access.pending(tenant_id, rec.id)
        return replace(rec, access_count=rec.access_count + count, last_accessed_at=now,
                       relevance=lifecycle.refreshed(lifecycle.current_relevance(rec, now),
                                                     count))

    def update(self, tenant_id: str, memory_id: str, changes: dict[str, Any],
               actor: str | None = None) -> MemoryRecord:
        """Change some fields. Content changes re-embed and re-hash; metadata replaces."""
        unknown = set(changes) - _UPDATABLE
        if unknown:
            name = sorted(unknown)[0]
            raise ValidationError(f"{name}: cannot be changed (updatable: "
                                  f"{', '.join(sorted(_UPDATABLE))})", field=name)
        current = self._fetch(tenant_id, memory_id)
        if current.immutable:
            raise Conflict(f"memory {current.id} is immutable", field="immutable")
        now = self.clock.now()
        fields = _validate_changes(changes, now)
        vec: Vector | None = None
        with self._scope_lock(tenant_id, current.user_id), \
                self.store.atomic(tenant_id, current.user_id):
            current = self._fetch(tenant_id, memory_id)  # fresh, inside the section
            if current.immutable:
                raise Conflict(f"memory {current.id} is immutable", field="immutable")
            updated = replace(current, updated_at=now, **fields)
            if "tier" not in fields:  # an explicit tier stands; otherwise promote as due
                updated.tier = lifecycle.promoted_tier(updated.tier, updated.access_count,
                                                       updated.importance)
            updated.decay_rate = lifecycle.decay_rate(updated.memory_type, updated.tier)
            if updated.namespace != current.namespace and "content" not in fields:
                # another scope: the same content may already live there
                other = self.store.find_by_hash(tenant_id, updated.user_id, updated.agent_id,
                                                updated.namespace, updated.integrity_hash)
                if other is not None:
                    raise Duplicate(f"namespace: memory {other.id} already says this there",
                                    existing_id=other.id, field="namespace")
            if "content" in fields and fields["content"] != current.content:
                content, pii_fields = self._scan_pii(updated.content)
                updated.content = content
                updated.pii_fields = pii_fields
                updated.pii_detected = bool(pii_fields)
                updated.integrity_hash = integrity_hash(updated.content, updated.value_json)
                other = self.store.find_by_hash(tenant_id, updated.user_id, updated.agent_id,
                                                updated.namespace, updated.integrity_hash)
                if other is not None and other.id != updated.id:
                    raise Duplicate(f"content: memory {other.id} already says this",
                                    existing_id=other.id, field="content")
                vec, updated.tokens_used = self._embed_one(updated.content)
            diff = {k: {"before": _jsonable(getattr(current, k)),
                        "after": _jsonable(getattr(updated, k))}
                    for k in (*fields, "tier", "decay_rate")
                    if getattr(current, k) != getattr(updated, k)}
            if not diff:
                return current
            self.store.update(updated, vec, self._event(updated, "update", now, actor, diff))
        return updated

    def delete(self, tenant_id: str, memory_id: str, actor: str | None = None) -> None:
        mid = v.uuid_string(memory_id, "id")
        assert mid is not None
        rec = self.store.get(tenant_id, mid)
        if rec is None:
            raise NotFound(f"memory {memory_id} not found", field="id")
        if rec.immutable:
            raise Conflict(f"memory {rec.id} is immutable and cannot be deleted",
                           field="immutable")
        now = self.clock.now()
        with self._scope_lock(tenant_id, rec.user_id), self.store.atomic(tenant_id, rec.user_id):
            self.store.delete(tenant_id, mid, self._event(rec, "delete", now, actor, {}))

    def purge_expired(self, limit: int = 10_000) -> int:
        """Physically delete memories past their expiry (rows, vectors, full-text), leaving a
        content-free `expire` tombstone each. They were invisible already; this frees space."""
        now = self.clock.now()
        done = 0
        while done < limit:
            batch = self.store.expired_ids(now, min(500, limit - done))
            if not batch:
                break
            for tenant_id, mid in batch:
                rec = self.store.get(tenant_id, mid)
                if rec is None:
                    continue
                with self._scope_lock(tenant_id, rec.user_id), \
                        self.store.atomic(tenant_id, rec.user_id):
                    if self.store.delete(tenant_id, mid, self._event(
                            rec, "expire", now, "system", {"reason": "expired"})):
                        done += 1
        return done

    def forget_user(self, tenant_id: str, user_id: str, actor: str | None = None) -> int:
        """Remove every memory of a user (any status, expired or not, immutable too: this is
        the right to be forgotten), with their vectors; tombstones keep no content."""
        uid = v.identifier(user_id, "user_id")
        now = self.clock.now()
        f = Filters(tenant_id=tenant_id, now=now, user_id=uid, include_superseded=True,
                    include_expired=True)
        removed = 0
        while True:
            items, _ = self.store.list(f, 500, 0)
            if not items:
                return removed
            with self._scope_lock(tenant_id, uid), self.store.atomic(tenant_id, uid):
                for rec in items:
                    if self.store.delete(tenant_id, rec.id, self._event(
                            rec, "delete", now, actor, {"reason": "forget_user"})):
                        removed += 1

    def relations(self, tenant_id: str, memory_id: str) -> builtins.list[Relation]:
        mid = v.uuid_string(memory_id, "id")
        assert mid is not None
        return self.store.relations(tenant_id, mid)

    def history(self, tenant_id: str, memory_id: str) -> builtins.list[HistoryEvent]:
        mid = v.uuid_string(memory_id, "id")
        assert mid is not None
        events = self.store.history(tenant_id, mid)
        if not events:
            raise NotFound(f"memory {memory_id} not found", field="id")
        return events

    # -- read path ---------------------------------------------------------------------

    def _filters(self, tenant_id: str, q: SearchQuery | dict[str, Any]) -> Filters:
        get = q.get if isinstance(q, dict) else lambda k, default=None: getattr(q, k, default)
        metadata = get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise ValidationError("metadata: filter must be an object of key: value",
                                  field="metadata")
        created_after = get("created_after")
        created_before = get("created_before")

        def enum_list(cls: Any, name: str) -> tuple[str, ...]:
            vals = get(name) or ()
            if isinstance(vals, str):
                vals = (vals,)
            return tuple(v.enum_value(cls, x, name).value for x in vals)

        nature = get("memory_nature")
        scope = get("scope")
        return Filters(
            tenant_id=tenant_id, now=self.clock.now(),
            user_id=v.identifier(get("user_id"), "user_id"),
            agent_id=v.identifier(get("agent_id"), "agent_id"),
            session_id=v.identifier(get("session_id"), "session_id"),
            namespace=v.identifier(get("namespace"), "namespace"),
            memory_types=enum_list(MemoryType, "memory_types"),
            content_types=enum_list(ContentType, "content_types"),
            tiers=enum_list(Tier, "tiers"),
            memory_nature=None if nature is None
            else v.enum_value(MemoryNature, nature, "memory_nature").value,
            scope=None if scope is None else v.enum_value(Scope, scope, "scope").value,
            domain=v.identifier(get("domain"), "domain"),
            tags=tuple(v.tag_list(get("tags"))),
            metadata=tuple(sorted(v.metadata_object(metadata, "metadata").items())),
            created_after=None if created_after is None
            else v.timestamp(created_after, "created_after"),
            created_before=None if created_before is None
            else v.timestamp(created_before, "created_before"),
            include_superseded=bool(get("include_superseded", False)),
            min_relevance=None if get("min_relevance") is None
            else v.unit_float(get("min_relevance"), "min_relevance", 0.0),
        )

    def list(self, tenant_id: str, filters: dict[str, Any] | None = None, limit: int = 50,
             offset: int = 0) -> Page:
        _check_int(limit, "limit", 1, MAX_PAGE)
        _check_int(offset, "offset", 0, 10**9)
        f = self._filters(tenant_id, filters or {})
        items, total = self.store.list(f, limit, offset)
        # relevance as of now, as get and search report it (the store's records are fresh)
        for m in items:
            m.relevance = lifecycle.current_relevance(m, f.now)
        return Page(items, total, limit, offset)

    def _validated_query(self, q: SearchQuery) -> str:
        if not isinstance(q.query, str):
            raise ValidationError("query: must be a string", field="query")
        text = v.content_text(q.query, "query", max_chars=MAX_QUERY_CHARS)
        _check_int(q.limit, "limit", 1, self.settings.search_max_limit)
        if isinstance(q.min_score, bool) or not isinstance(q.min_score, int | float) \
                or not 0.0 <= q.min_score <= 1.0:
            raise ValidationError(f"min_score: must be between 0 and 1 (got {q.min_score})",
                                  field="min_score")
        return text

    def read_query(self, text: str, now: datetime
                   ) -> tuple[builtins.list[TimeWindow], builtins.list[str], builtins.list[str]]:
        """How a search reads its (validated) query text: the time windows it names, the
        variants that are searched (the text without its time words, then, with
        `search_query_rewriting`, the items of a coordinated question), and the texts the
        model embeds for them (each variant without its question scaffolding)."""
        st = self.settings
        windows = time_windows(text, now) if st.weight_time > 0 else []
        if windows:
            text = without_time_expressions(text, windows)
        variants = [text]
        if st.search_query_rewriting:
            variants += sub_queries(text)
            return windows, variants, [without_scaffolding(v) for v in variants]
        return windows, variants, variants

    def _rank(self, f: Filters, q: SearchQuery, text: str, k: int
              ) -> tuple[dict[str, str | None], builtins.list[tuple[float, str, _Why]]]:
        """Every candidate of the query (top k of each retriever), scored, best first.

        The query is read first (engine/query.py, docs/retrieval.md): a time expression
        ("a week ago") becomes a window that memories from then are favoured by
        (`weight_time`), and its words leave the query; with `search_query_rewriting`, the
        dense query loses its question words, and a coordinated question ("X or Y") also runs
        as one query per item, each memory scored by its best variant. Candidates are scored
        from their narrow rank fields (with the session of each candidate, returned);
        callers build whole records (`_hits`) only for what they return. Callers read inside
        the store's read section of `f` (`Store.reading`), entered before the model runs.
        """
        st = self.settings
        windows, variants, dense_texts = self.read_query(text, f.now)
        # The items' queries need fewer candidates.
        wanted = [k if i == 0 else max(1, k // 2) for i in range(len(variants))]
        # The keyword search needs no vector: it runs while the model embeds the query.
        keyword = self.overlap.start(lambda: [
            keyword_scores(dict(self.store.keyword_search(f, variant, n)))
            for variant, n in zip(variants, wanted, strict=True)])
        vectors = self.embedder.embed(dense_texts).vectors
        sparse = keyword()  # done by now, as a rule: it runs while the model embeds
        # the keyword hits are scored semantically in the same pass as the nearest, and
        # every candidate's rank fields come with it (one pass over a partition, in SQLite)
        found = self.store.candidates(f, list(vectors), wanted, set().union(*sparse))
        candidates, sem, cols = found.ids, found.similarities, found.columns
        n = len(candidates)
        # Every candidate at once (numpy, the same floats as relevance_at and weighted of
        # each): a loop over the candidates cost ~4 µs each after the model.
        rel = lifecycle.relevance_at_many(cols.relevance, cols.decay_rate, cols.pinned,
                                          cols.created, cols.last_accessed,
                                          f.now.timestamp())
        key = [np.fromiter((kw.get(mid, 0.0) for mid in candidates), np.float64, n)
               if kw else np.zeros(n) for kw in sparse]
        per_variant = [weighted_many(self.weights, sem_v, key_v, cols.importance, rel)
                       for sem_v, key_v in zip(sem, key, strict=True)]
        # the best variant of each memory (the first of equals)
        best_of = None
        score = per_variant[0]
        if len(per_variant) > 1:
            stacked = np.vstack(per_variant)
            best_of = np.argmax(stacked, axis=0)
            score = stacked[best_of, np.arange(n)]
        matches: builtins.list[float | None] = [None] * n
        if windows:
            score = score.copy()
            for i in np.flatnonzero(cols.found).tolist():
                created = datetime.fromtimestamp(float(cols.created[i]), tz=UTC)
                matches[i] = match = time_match(created, windows)
                score[i] = timed(float(score[i]), st.weight_time, match)
        # found (not deleted between the index and this read), good enough, best first,
        # equals by id (the candidates come in no particular order)
        kept = np.flatnonzero(cols.found & (score >= q.min_score))
        ranked = kept[np.argsort(-score[kept])]
        order = ranked.tolist()
        sem_l = [x.tolist() for x in sem]
        key_l = [x.tolist() for x in key]
        imp_l, rel_l, score_l = cols.importance.tolist(), rel.tolist(), score.tolist()
        best = score[ranked]
        if (best[1:] == best[:-1]).any():
            order.sort(key=lambda i: (-score_l[i], candidates[i]))
        pick = [0] * n if best_of is None else best_of.tolist()
        scored: builtins.list[tuple[float, str, _Why]] = [
            (score_l[i], candidates[i],
             (sem_l[pick[i]][i], key_l[pick[i]][i], imp_l[i], rel_l[i], matches[i]))
            for i in order]
        return dict(zip(candidates, cols.session_id, strict=True)), scored

    def _explain(self, why: _Why) -> dict[str, float]:
        """The breakdown of a score `_rank` computed (scoring.py makes both)."""
        semantic, keyword, importance, relevance, match = why
        score, explain = combine(self.weights, semantic, keyword, importance, relevance)
        if match is not None:
            score, explain = with_time(score, explain, self.settings.weight_time, match)
        return explain

    def _hits(self, tenant_id: str, f: Filters,
              chosen: Sequence[tuple[float, str, _Why]]) -> builtins.list[SearchHit]:
        """Whole records for the chosen (score, id, why) triples of `_rank`, each carrying
        the relevance it was scored with and its explain; one deleted since ranking is
        left out."""
        records = self.store.get_many(tenant_id, [mid for _, mid, _ in chosen], scope=f)
        hits = []
        for score, mid, why in chosen:
            rec = records.get(mid)
            if rec is not None:
                # get_many builds fresh records, so setting the field in place is safe
                # (and dataclasses.replace of 40 fields cost ~10 µs a hit).
                explain = self._explain(why)
                rec.relevance = explain["relevance"]
                hits.append(SearchHit(rec, score, explain))
        return hits

    def search(self, tenant_id: str, q: SearchQuery) -> builtins.list[SearchHit]:
        text = self._validated_query(q)
        k = max(self.settings.search_candidates, q.limit)
        f = self._filters(tenant_id, q)
        with self.store.reading(f):
            _, scored = self._rank(f, q, text, k)
            hits = self._hits(tenant_id, f, scored[: q.limit])
        if q.track_access and hits:
            self.access.touch(tenant_id, [h.memory.id for h in hits], f.now)
        return hits

    def search_sessions(self, tenant_id: str, q: SearchQuery,
                        hits_per_session: int = 3) -> builtins.list[SessionHit]:
        """Search grouped by session: `q.limit` sessions, each scored by its best memory,
        with up to `hits_per_session` of its memories, best first. Memories without a session
        are left out."""
        text = self._validated_query(q)
        # Three candidates per wanted session are plenty (measured: the same sessions as
        # ten, docs/retrieval.md), and every candidate is a row read.
        k = max(self.settings.search_candidates, q.limit * 3)
        f = self._filters(tenant_id, q)
        with self.store.reading(f):
            session_of, scored = self._rank(f, q, text, k)
            ranked, hits = self._session_hits(f, session_of, scored, q.limit,
                                              hits_per_session)
        by_session: dict[str, builtins.list[SearchHit]] = {}
        for hit in hits:
            by_session.setdefault(session_of[hit.memory.id] or "", []).append(hit)
        out = [SessionHit(sid, by_session[sid][0].score, by_session[sid])
               for sid in ranked if sid in by_session]
        if q.track_access and hits:
            self.access.touch(tenant_id, [h.memory.id for h in hits], f.now)
        return out

    def _session_hits(self, f: Filters, session_of: dict[str, str | None],
                      scored: builtins.list[tuple[float, str, _Why]], limit: int,
                      per_session: int) -> tuple[builtins.list[str], builtins.list[SearchHit]]:
        """The `limit` best sessions of the scored candidates, and the hits of their
        `per_session` best memories."""
        groups: dict[str, builtins.list[tuple[float, str, _Why]]] = {}
        for score, mid, why in scored:
            sid = session_of[mid]
            if sid is None:
                continue
            members = groups.setdefault(sid, [])
            if len(members) < per_session:
                members.append((score, mid, why))
        ranked = sorted(groups.items(), key=lambda g: (-g[1][0][0], g[0]))[:limit]
        hits = self._hits(f.tenant_id, f, [m for _, members in ranked for m in members])
        return [sid for sid, _ in ranked], hits

    def context(self, tenant_id: str, q: SearchQuery, budget_tokens: int = 1000) -> Context:
        """The best memories for a query as a bulleted block that fits `budget_tokens`
        (estimated): best first; a memory that does not fit is skipped for a shorter one."""
        _check_int(budget_tokens, "budget_tokens", 16, 100_000)
        hits = self.search(tenant_id, replace(q, limit=self.settings.search_max_limit))
        header = "Relevant memories:"
        used = estimate_tokens(header)
        lines: list[str] = []
        chosen: list[SearchHit] = []
        for hit in hits[: max(q.limit, 1) * 5]:
            line = f"- {hit.memory.content}"
            cost = estimate_tokens(line) + 1
            if used + cost > budget_tokens:
                continue
            used += cost
            lines.append(line)
            chosen.append(hit)
            if len(chosen) >= q.limit:
                break
        text = "\n".join([header, *lines]) if lines else ""
        return Context(text=text, memories=chosen, tokens=used if lines else 0,
                       budget=budget_tokens)


    def import_rows(self, tenant_id: str, rows: Sequence[ImportedRow],
                    actor: str | None = None) -> dict[str, int]:
        """Store exported memories as they were (ids, times, statuses, vectors). A memory
        whose id exists is skipped; one whose content an active memory in its scope already
        has is a duplicate; missing vectors are embedded."""
        counts = {"imported": 0, "existing": 0, "duplicates": 0}
        fresh = [r for r in rows if self.store.get(tenant_id, r.record.id) is None]
        counts["existing"] = len(rows) - len(fresh)
        need = [r for r in fresh if r.vector is None]
        vectors: dict[str, tuple[Vector, int]] = {}
        if need:
            emb = self.embedder.embed([r.record.content for r in need])
            vectors = {r.record.id: (emb.vectors[i], emb.tokens[i]) for i, r in enumerate(need)}
        self._check_quota(tenant_id, sum(r.record.status is Status.ACTIVE for r in fresh))
        now = self.clock.now()
        by_user: dict[str | None, list[ImportedRow]] = {}
        for r in fresh:
            by_user.setdefault(r.record.user_id, []).append(r)
        for user_id, group in by_user.items():
            with self._scope_lock(tenant_id, user_id), self.store.atomic(tenant_id, user_id):
                for r in group:
                    rec = replace(r.record, embedding_model=self.embedder.model_name)
                    if rec.status is Status.ACTIVE and self.store.find_by_hash(
                            tenant_id, rec.user_id, rec.agent_id, rec.namespace,
                            rec.integrity_hash) is not None:
                        counts["duplicates"] += 1
                        continue
                    if r.vector is not None:
                        vec = r.vector
                    else:
                        vec, rec.tokens_used = vectors[rec.id]
                    self.store.insert(rec, vec, self._event(
                        rec, "import", now, actor, _snapshot(rec)))
                    counts["imported"] += 1
        return counts


_ROLES = ("user", "assistant", "system", "tool")


def _redact_tree(value: Any) -> Any:
    if isinstance(value, str):
        return pii.redact(value)
    if isinstance(value, list):
        return [_redact_tree(x) for x in value]
    if isinstance(value, dict):
        return {k: _redact_tree(x) for k, x in value.items()}
    return value


def _split(text: str, size: int) -> builtins.list[str]:
    """Cut text into pieces of at most `size` characters, at a paragraph, line or word
    boundary where one is near."""
    parts: builtins.list[str] = []
    while len(text) > size:
        cut = max(text.rfind("\n\n", 0, size), text.rfind("\n", 0, size),
                  text.rfind(" ", 0, size))
        if cut < size // 2:
            cut = size
        parts.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        parts.append(text)
    return [p for p in parts if p]


_UPDATABLE = frozenset({
    "namespace",
    "content", "importance", "confidence", "metadata", "tags", "tier", "memory_type",
    "memory_nature", "content_type", "pinned", "immutable", "expires_at", "ttl_days",
    "external_id", "source_id", "domain",
})


def _validate_changes(changes: dict[str, Any], now: datetime) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if name == "content":
            out["content"] = v.content_text(value)
        elif name in ("importance", "confidence"):
            if value is None:
                raise ValidationError(f"{name}: must be a number between 0 and 1", field=name)
            out[name] = v.unit_float(value, name, 0.0)
        elif name == "metadata":
            out["metadata"] = v.metadata_object(value)
        elif name == "tags":
            out["tags"] = v.tag_list(value)
        elif name == "tier":
            out["tier"] = v.enum_value(Tier, value, name)
        elif name == "memory_type":
            out["memory_type"] = v.enum_value(MemoryType, value, name)
        elif name == "content_type":
            out["content_type"] = v.enum_value(ContentType, value, name)
        elif name == "memory_nature":
            out["memory_nature"] = v.optional_enum(MemoryNature, value, name)
        elif name in ("pinned", "immutable"):
            out[name] = v.boolean(value, name)
        elif name in ("expires_at", "ttl_days"):
            if value is None and name == "expires_at":
                out["expires_at"] = None  # make permanent
            else:
                out["expires_at"] = v.expiry(value if name == "ttl_days" else None,
                                             value if name == "expires_at" else None, now)
        elif name == "namespace":
            out[name] = v.identifier(value, name) or "default"
        else:  # external_id, source_id, domain
            out[name] = v.identifier(value, name)
    return out


def _check_int(value: Any, name: str, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name}: must be an integer {lo}..{hi}", field=name)
    if not lo <= value <= hi:
        raise ValidationError(f"{name}: must be between {lo} and {hi} (got {value})", field=name)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "value"):
        return value.value
    return value


def _snapshot(rec: MemoryRecord) -> dict[str, Any]:
    keys = ("content", "user_id", "agent_id", "session_id", "namespace", "memory_type",
            "content_type", "tier", "importance", "metadata", "expires_at", "integrity_hash")
    return {k: _jsonable(getattr(rec, k)) for k in keys}
