"""Overlap: the spare threads a search runs its keyword part on while the query embeds."""

from __future__ import annotations

import threading

import pytest

from engramdb import Engram
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
