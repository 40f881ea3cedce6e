"""Overlap: the spare threads a search runs its keyword part on while the query embeds."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engramdb import Engram, Settings
from engramdb.embeddings import Embedder
from engramdb.engine.overlap import Overlap


def test_runs_on_a_spare_thread_and_returns_the_result() -> None:
    ov = Overlap(workers=2)
    try:
        wait = ov.start(lambda: (threading.current_thread().name, 42))
        name, value = wait()
        assert value == 42
        assert name.startswith("engram-overlap") and name != threading.current_thread().name
        assert (ov.started, ov.inline) == (1, 0)
    finally:
        ov.close()


def test_errors_reach_the_caller() -> None:
    ov = Overlap(workers=1)
    try:
        def boom() -> int:
            raise KeyError("nope")

        wait = ov.start(boom)
        with pytest.raises(KeyError, match="nope"):
            wait()
        assert ov.start(lambda: 5)() == 5  # the thread is free again after an error
    finally:
        ov.close()


def test_busy_threads_leave_the_task_to_the_caller() -> None:
    """Under load a task is not queued behind others: it runs in the caller, when asked."""
    ov = Overlap(workers=1)
    release = threading.Event()
    try:
        first = ov.start(lambda: release.wait(10))
        ran_in: list[str] = []
        second = ov.start(lambda: ran_in.append(threading.current_thread().name) or 7)
        assert ran_in == []  # not run yet: the caller runs it when it wants the result
        assert second() == 7
        assert ran_in == [threading.current_thread().name]
        assert (ov.started, ov.inline) == (1, 1)
        release.set()
        assert first() is True
    finally:
        release.set()
        ov.close()


def test_zero_workers_and_closed_run_inline() -> None:
    closed = Overlap(2)
    closed.close()
    for ov in (Overlap(0), closed):
        assert ov.start(threading.current_thread)() is threading.current_thread()
        assert (ov.started, ov.inline) == (0, 1)
    with pytest.raises(ValueError, match="workers must be >= 0"):
        Overlap(-1)


def test_search_results_do_not_depend_on_the_overlap(engram: Engram) -> None:
    engram.add_many([{"content": c, "user_id": "u1"} for c in (
        "User's VPN gateway is vpn-xj9000.corp.example",
        "User prefers tea over coffee in the morning",
        "User's sister lives in Lisbon and works as an architect",
        "User is training for a half marathon in April",
    )])
    queries = ["xj9000 gateway", "what does the user drink in the morning",
               "family in Portugal", "running goals"]
    service = engram.service
    with_overlap = [engram.search(q, user_id="u1", limit=4) for q in queries]
    assert service.overlap.started >= len(queries)
    service.overlap.close()
    service.overlap = Overlap(0)
    serial = [engram.search(q, user_id="u1", limit=4) for q in queries]
    for a, b in zip(with_overlap, serial, strict=True):
        assert [(h.memory.id, round(h.score, 9)) for h in a] == \
            [(h.memory.id, round(h.score, 9)) for h in b]
        assert a and a[0].explain == b[0].explain


def test_add_many_embeds_ahead_with_the_same_results(
        tmp_path: Path, embedder: Embedder) -> None:
    """add_many embeds chunk by chunk on a spare thread while it saves the users whose items
    are all embedded; the statuses are those of embedding everything first."""
    items = [
        {"content": "User likes green tea", "user_id": "u1"},
        {"content": "User's sister Ana lives in Porto and teaches mathematics at a school "
                    "near the river", "user_id": "u2"},
        {"content": "User likes green tea.", "user_id": "u1"},  # near twin in the batch
        {"content": "User drives an old blue Volvo estate", "user_id": "u3"},
        {"content": "User likes green tea", "user_id": "u1"},  # exact copy in the batch
        {"content": "User is allergic to cats", "user_id": "u2"},
        {"content": "User plays chess online most evenings after work", "user_id": "u3"},
        {"content": "Stored before", "user_id": "u3"},
        {"content": "User's favourite film is Spirited Away", "user_id": None},
    ] + [{"content": f"Note number {i} about project {i * 7}", "user_id": f"u{i % 4}"}
         for i in range(12)]
    outcomes = []
    for name, workers in (("ahead", 2), ("serial", 0)):
        settings = Settings(embed_max_batch=3)
        with Engram(path=tmp_path / f"{name}.db", embedder=embedder,
                    settings=settings) as mem:
            mem.service.overlap.close()
            mem.service.overlap = Overlap(workers)
            mem.add("Stored before", user_id="u3")
            results = mem.add_many(items)
            if workers:
                assert mem.service.overlap.started >= len(items) // 3 - 1
            outcomes.append([(r.status.value, r.memory.content, r.memory.user_id,
                              r.existing_id is not None, r.tokens_used) for r in results])
            assert mem.list(limit=100).total == sum(
                r.status.value != "duplicate" for r in results) + 1
    assert outcomes[0] == outcomes[1]
    statuses = [o[0] for o in outcomes[0]]
    assert statuses.count("duplicate") == 3 and statuses[2] == "duplicate"
