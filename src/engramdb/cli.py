"""The `engram` command line."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from .errors import EngramError

app = typer.Typer(
    help="Engram: long-term memory for AI agents (embedded SQLite by default).",
    no_args_is_help=True,
    add_completion=False,
)

DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="SQLite database file (default: ENGRAM_DATABASE_URL or the "
                 "user data directory)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts")]
UserOption = Annotated[str | None, typer.Option("--user-id", "-u", help="User scope")]
AgentOption = Annotated[str | None, typer.Option("--agent-id", "-a", help="Agent scope")]
NamespaceOption = Annotated[str | None, typer.Option("--namespace", "-n", help="Namespace")]


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def _engram(db: Path | None) -> Any:
    from .api import Engram

    return Engram(path=db)


def _fail(exc: EngramError) -> None:
    typer.secho(f"error: {exc.message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=2)


@app.command()
def add(
    content: Annotated[str, typer.Argument(help="The memory text")],
    user_id: UserOption = None,
    agent_id: AgentOption = None,
    namespace: NamespaceOption = None,
    memory_type: Annotated[str | None, typer.Option(help="episodic, semantic, fact, …")] = None,
    importance: Annotated[float | None, typer.Option(help="0..1, default 0.5")] = None,
    ttl_days: Annotated[int | None, typer.Option(help="Expire after N days (1..3650)")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Store a memory (duplicates are detected and reported, not stored)."""
    with _engram(db) as mem:
        try:
            res = mem.add(content, user_id=user_id, agent_id=agent_id, namespace=namespace,
                          memory_type=memory_type, importance=importance, ttl_days=ttl_days)
        except EngramError as exc:
            _fail(exc)
        if as_json:
            typer.echo(json.dumps({"status": res.status.value, "id": res.id,
                                   "existing_id": res.existing_id,
                                   "tokens_used": res.tokens_used}))
        else:
            typer.echo(f"{res.status.value} {res.id}")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for")],
    user_id: UserOption = None,
    agent_id: AgentOption = None,
    namespace: NamespaceOption = None,
    limit: Annotated[int, typer.Option(help="How many results")] = 10,
    explain: Annotated[bool, typer.Option(help="Show the score breakdown")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Hybrid search (meaning + keywords + importance) over stored memories."""
    with _engram(db) as mem:
        try:
            hits = mem.search(query, limit=limit, user_id=user_id, agent_id=agent_id,
                              namespace=namespace)
        except EngramError as exc:
            _fail(exc)
        if as_json:
            typer.echo(json.dumps([
                {"id": h.memory.id, "score": h.score, "content": h.memory.content,
                 "explain": h.explain} for h in hits
            ]))
            return
        if not hits:
            typer.echo("no memories found")
        for h in hits:
            typer.echo(f"{h.score:.3f}  {h.memory.id}  {h.memory.content}")
            if explain:
                parts = ", ".join(f"{k}={h.explain[k]:.3f}"
                                  for k in ("semantic", "keyword", "importance", "relevance"))
                typer.echo(f"       {parts}")


@app.command("list")
def list_(
    user_id: UserOption = None,
    agent_id: AgentOption = None,
    namespace: NamespaceOption = None,
    limit: Annotated[int, typer.Option(help="Page size")] = 20,
    offset: Annotated[int, typer.Option(help="Skip this many")] = 0,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List memories, newest first."""
    with _engram(db) as mem:
        try:
            page = mem.list(limit=limit, offset=offset, user_id=user_id, agent_id=agent_id,
                            namespace=namespace)
        except EngramError as exc:
            _fail(exc)
        if as_json:
            typer.echo(json.dumps({"items": _jsonable(page.items), "total": page.total,
                                   "has_more": page.has_more}))
            return
        for m in page.items:
            typer.echo(f"{m.created_at:%Y-%m-%d %H:%M}  {m.id}  {m.content}")
        typer.echo(f"({len(page.items)} of {page.total})", err=True)


@app.command()
def get(memory_id: str, db: DbOption = None) -> None:
    """Show one memory as JSON."""
    with _engram(db) as mem:
        try:
            typer.echo(json.dumps(_jsonable(mem.get(memory_id)), indent=2, ensure_ascii=False))
        except EngramError as exc:
            _fail(exc)


@app.command()
def delete(memory_id: str, db: DbOption = None) -> None:
    """Delete a memory (its history keeps a content-free tombstone)."""
    with _engram(db) as mem:
        try:
            mem.delete(memory_id)
        except EngramError as exc:
            _fail(exc)
        typer.echo(f"deleted {memory_id}")


@app.command()
def stats(db: DbOption = None) -> None:
    """Counts, database size and embedding model."""
    with _engram(db) as mem:
        typer.echo(json.dumps(mem.stats(), indent=2))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
