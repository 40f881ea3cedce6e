"""One typed settings object, read once: environment variables `ENGRAM_*`, or an
optional env-style file named by `ENGRAM_CONFIG`/passed as `_env_file`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("engram", appauthor=False))


def default_embed_threads(processes: int = 1) -> int:
    """Two ONNX Runtime threads per process where the processes may use two cores each,
    else fewer, at least one.

    Two threads embed a lone query in ~5 ms instead of ~8 on this project's 2-core
    reference machine; more add little for a 10–30-token input (docs/architecture.md,
    "Embedding threads"). `processes` > 1 (server workers) share the cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(2, cores // max(1, processes)))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENGRAM_", extra="ignore")

    # storage
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = Field(
        default=None,
        description="sqlite:///path/to/file.db (default: <data_dir>/engram.db) "
        "or postgresql://… (scale-out store)",
    )

    # embeddings
    embed_threads: int = Field(
        default_factory=default_embed_threads, ge=1, le=64,
        description="ONNX Runtime threads per model run (default: 2, or 1 on one core)")
    embed_spin_us: int = Field(
        default=20, ge=0, le=1_000_000,
        description="With embed_threads > 1: how long ORT's workers busy-wait between "
        "operators before sleeping (0 = never spin)")
    embed_max_batch: int = Field(default=32, ge=1, le=1024)
    embed_max_tokens: int = Field(default=256, ge=8, le=512)
    model_path: Path | None = Field(
        default=None, description="Use this ONNX file instead of the packaged model"
    )
    model_sha256: str | None = Field(
        default=None, description="Expected sha256 of model_path (required with it)"
    )

    # write path
    near_duplicate_threshold: float = Field(default=0.95, ge=0.5, le=1.0)
    supersession_enabled: bool = Field(
        default=True, description="Decide updated/extended for close memories of a scope")
    supersession_candidates: int = Field(default=5, ge=1, le=50,
                                         description="Nearest memories judged per write")
    supersession_floor: float = Field(default=0.40, ge=0.0, le=1.0,
                                      description="Cosine below which a pair is not judged")
    supersession_same_subject_cosine: float = Field(default=0.80, ge=0.0, le=1.0)
    llm_base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint for the supersession judge "
        "(e.g. http://127.0.0.1:11434/v1); unset: rules only")
    llm_model: str = "gpt-4o-mini"
    llm_api_key: str | None = None
    llm_timeout: float = Field(default=10.0, gt=0.0, le=120.0)
    pii_mode: Literal["detect", "redact", "off"] = Field(
        default="detect",
        description="detect: flag PII on every memory; redact: also replace it in the stored "
        "content by [REDACTED:<type>]; off: no scan")

    # read path: final score = Σ weight × component (see docs/retrieval.md)
    weight_semantic: float = Field(default=0.6, ge=0.0, le=1.0)
    weight_keyword: float = Field(default=0.2, ge=0.0, le=1.0)
    weight_importance: float = Field(default=0.1, ge=0.0, le=1.0)
    weight_relevance: float = Field(default=0.1, ge=0.0, le=1.0)
    search_candidates: int = Field(default=50, ge=1, le=1000)
    search_max_limit: int = Field(default=100, ge=1, le=1000)
    weight_time: float = Field(
        default=0.1, ge=0.0, le=1.0,
        description="Share of the score for matching a time expression of the query "
        "('a week ago', 'last month', 'in March') by creation time; 0: ignore them")
    search_query_rewriting: bool = Field(
        default=True,
        description="Drop question words from the dense query and run coordinated questions "
        "('X or Y') as one query per item (docs/retrieval.md)")

    # lifecycle
    access_flush_seconds: float = Field(
        default=1.0, ge=0.0, le=3600.0,
        description="How often read counts are written (0: only on flush/close)")
    purge_interval_minutes: float = Field(
        default=10.0, ge=0.0, description="Server sweep of expired memories (0: off)")

    # server
    host: str = Field(default="127.0.0.1", description="Address `engram serve` binds to")
    port: int = Field(default=8420, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024,
                                description="Larger request bodies get 413 before parsing")
    rate_limit_per_minute: int = Field(default=1200, ge=0,
                                       description="Per API key; 0 = unlimited")
    idempotency_hours: int = Field(default=24, ge=1, le=24 * 30)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.model_path is not None and not self.model_sha256:
            raise ValueError("ENGRAM_MODEL_SHA256 is required when ENGRAM_MODEL_PATH is set")
        return self

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'engram.db'}"
