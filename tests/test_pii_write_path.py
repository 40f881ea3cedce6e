"""PII on the write path: every memory is scanned; `pii_mode=redact` stores no PII."""

from __future__ import annotations

from pathlib import Path

from engramdb import Engram, FrozenClock, Settings
from engramdb.embeddings import Embedder


def test_memories_carry_their_pii_types(engram: Engram) -> None:
    rec = engram.add("Reach the user at jane.doe@example.com or +44 20 7946 0958").memory
    assert rec.pii_detected and rec.pii_fields == ["email", "phone"]
    clean = engram.add("User deployed v2.3.1 to production").memory
    assert not clean.pii_detected and clean.pii_fields == []
    changed = engram.update(clean.id, content="User's SSN is 123-45-6789")
    assert changed.pii_fields == ["ssn"]
    assert engram.get(clean.id, track=False).pii_fields == ["ssn"]


def test_redact_mode_stores_no_pii(tmp_path: Path, embedder: Embedder,
                                   clock: FrozenClock) -> None:
    settings = Settings(pii_mode="redact")
    with Engram(path=tmp_path / "r.db", settings=settings, embedder=embedder,
                clock=clock) as mem:
        rec = mem.add("Card 4111 1111 1111 1111, mail jane.doe@example.com").memory
        assert "4111" not in rec.content and "jane.doe" not in rec.content
        assert "[REDACTED:credit_card]" in rec.content and "[REDACTED:email]" in rec.content
        assert rec.pii_fields == ["credit_card", "email"]
        hits = mem.search("jane.doe@example.com")
        assert all("jane.doe" not in h.memory.content for h in hits)
        history = str([e.changes for e in mem.history(rec.id)])
        assert "4111" not in history and "jane.doe" not in history
        structured = mem.add(user_id="u", scope="communication",
                             value_json={"email": "jane.doe@example.com"}).memory
        assert "jane.doe" not in str(structured.value_json)


def test_off_mode_does_not_scan(tmp_path: Path, embedder: Embedder) -> None:
    with Engram(path=tmp_path / "o.db", settings=Settings(pii_mode="off"),
                embedder=embedder) as mem:
        rec = mem.add("mail jane.doe@example.com").memory
        assert not rec.pii_detected and "jane.doe" in rec.content
