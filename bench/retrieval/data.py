"""LongMemEval_S questions: loading, which ones are scorable, gold sessions, the fixed split."""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DATA_FILE = "longmemeval_s_dev.json.gz"
#: ../shared/bench-data next to the repository (this file is bench/retrieval/data.py)
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "bench-data"
HOLDOUT_SHARE = 3  # one question in three, by hash of its id


def parse_date(text: str) -> datetime:
    """LongMemEval's "2023/04/30 (Sun) 13:59" as an aware UTC datetime."""
    parts = text.split()
    clock = parts[2] if len(parts) > 2 else "00:00"
    return datetime.strptime(f"{parts[0]} {clock}", "%Y/%m/%d %H:%M").replace(tzinfo=UTC)


def split_of(question_id: str) -> str:
    """"holdout" for a fixed third of the questions (sha256 of the id), else "tune"."""
    h = int.from_bytes(hashlib.sha256(question_id.encode()).digest()[:8], "big")
    return "holdout" if h % HOLDOUT_SHARE == 0 else "tune"


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    type: str
    text: str
    date: datetime
    answer: str
    sessions: list[tuple[str, datetime, list[dict[str, Any]]]]
    answer_session_ids: list[str]

    @property
    def gold(self) -> list[str]:
        """Answer sessions with a user turn marked has_answer (keys from the user side)."""
        wanted = set(self.answer_session_ids)
        return [sid for sid, _, turns in self.sessions if sid in wanted and any(
            t.get("role") == "user" and t.get("has_answer") for t in turns)]

    @property
    def scorable(self) -> bool:
        return not self.id.endswith("_abs") and bool(self.gold)

    @property
    def split(self) -> str:
        return split_of(self.id)


def load(path: Path) -> list[Question]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        raw = json.load(fh)
    out = []
    for q in raw:
        sessions = [(str(sid), parse_date(date), turns) for sid, date, turns in zip(
            q["haystack_session_ids"], q["haystack_dates"], q["haystack_sessions"],
            strict=True)]
        out.append(Question(
            id=q["question_id"], type=q["question_type"], text=q["question"],
            date=parse_date(q["question_date"]), answer=str(q["answer"]), sessions=sessions,
            answer_session_ids=[str(s) for s in q["answer_session_ids"]],
        ))
    return out
