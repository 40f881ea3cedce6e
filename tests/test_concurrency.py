"""Several threads adding and searching at once: nothing lost, no duplicate let through."""

from __future__ import annotations

import random
import threading

from engramdb import Engram, SaveStatus

TOPICS = ["hiking", "chess", "jazz", "sourdough", "kayaking", "astronomy", "pottery",
          "cycling", "origami", "gardening", "birdwatching", "climbing"]


def test_threads_add_and_search(engram: Engram) -> None:
    contents = [f"User {u} is passionate about {t}" for u in range(4) for t in TOPICS]
    errors: list[BaseException] = []
    results: list[tuple[str, SaveStatus, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        # every writer sends every memory, in its own order, half of them as batches
        order = contents[:]
        rng.shuffle(order)
        start.wait()
        try:
            for i in range(0, len(order), 6):
                chunk = order[i : i + 6]
                if rng.random() < 0.5:
                    res = engram.add_many([{"content": c, "user_id": c.split()[1]}
                                           for c in chunk])
                else:
                    res = [engram.add(c, user_id=c.split()[1]) for c in chunk]
                with lock:
                    results.extend((c, r.status, r.id) for c, r in zip(chunk, res, strict=True))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        start.wait()
        try:
            for i in range(30):
                for hit in engram.search(f"likes {TOPICS[i % len(TOPICS)]}", user_id="1"):
                    assert hit.memory.user_id == "1"
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    stored = engram.list(limit=1000)
    assert stored.total == len(contents)  # nothing lost, nothing twice
    assert sorted(m.content for m in stored.items) == sorted(contents)
    # every report names the one stored memory for its content
    by_content = {m.content: m.id for m in stored.items}
    assert all(by_content[c] == mid for c, _, mid in results)
    saved = [c for c, status, _ in results if status is SaveStatus.SAVED]
    assert sorted(saved) == sorted(contents)
