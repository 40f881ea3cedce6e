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


TenantOption = Annotated[str, typer.Option("--tenant", "-t", help="Tenant id")]


def _engram(db: Path | None, tenant: str = "default") -> Any:
    from .api import Engram

    return Engram(path=db, tenant_id=tenant)


def _settings(db: Path | None) -> Any:
    from .settings import Settings

    settings = Settings()
    if db is not None:
        settings.database_url = f"sqlite:///{db.expanduser().resolve()}"
    return settings


def _admin(db: Path | None) -> Any:
    from .api import open_store
    from .engine.admin import AdminService

    store = open_store(_settings(db).resolved_database_url())
    store.migrate()
    return AdminService(store)


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


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8420)")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default 1)")] = None,
    db: DbOption = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Run the HTTP server (native API under /v1, docs at /docs)."""
    import os

    import uvicorn

    from .settings import default_embed_threads

    settings = _settings(db)
    # Worker processes read their settings from the environment.
    os.environ["ENGRAM_DATABASE_URL"] = settings.resolved_database_url()
    host = host or settings.host
    port = port or settings.port
    workers = workers or settings.workers
    if workers > 1 and "ENGRAM_EMBED_THREADS" not in os.environ:
        # each worker runs its own model: share the cores rather than oversubscribe them
        os.environ["ENGRAM_EMBED_THREADS"] = str(default_embed_threads(workers))
    typer.echo(f"Engram serving {settings.resolved_database_url()} on http://{host}:{port} "
               f"(docs: http://{host}:{port}/docs)", err=True)
    uvicorn.run("engramdb.server.app:create_app", factory=True, host=host, port=port,
                workers=workers, log_level=log_level, access_log=False)


keys_app = typer.Typer(help="Manage API keys (on the local database).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    tenant: TenantOption = "default",
    name: Annotated[str, typer.Option(help="A label for the key")] = "default",
    scope: Annotated[list[str] | None, typer.Option(
        "--scope", help="memories:read, memories:write, admin (repeatable)")] = None,
    rate_limit: Annotated[int | None, typer.Option(help="Requests per minute")] = None,
    create_tenant: Annotated[bool, typer.Option(help="Create the tenant if missing")] = True,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    admin = _admin(db)
    try:
        if create_tenant and admin.store.get_tenant(tenant) is None:
            admin.create_tenant(tenant)
        created = admin.create_key(tenant, name, scope or None, rate_limit)
    except EngramError as exc:
        _fail(exc)
    finally:
        admin.store.close()
    if as_json:
        typer.echo(json.dumps({"key": created.key, "id": created.record.id,
                               "tenant_id": tenant, "scopes": created.record.scopes}))
    else:
        typer.echo(created.key)
        typer.echo(f"(id {created.record.id}, tenant {tenant}, scopes "
                   f"{' '.join(created.record.scopes)}; shown only once)", err=True)


@keys_app.command("list")
def keys_list(tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None,
              db: DbOption = None, as_json: JsonOption = False) -> None:
    """List keys (prefix, scopes, state): never the keys themselves."""
    from .serialize import key_dict

    admin = _admin(db)
    try:
        keys = [key_dict(k) for k in admin.list_keys(tenant)]
    finally:
        admin.store.close()
    if as_json:
        typer.echo(json.dumps(keys))
        return
    for k in keys:
        state = "revoked" if k["revoked_at"] else "active"
        typer.echo(f"{k['id']}  {k['prefix']}…  {k['tenant_id']}  {','.join(k['scopes'])}  "
                   f"{state}  {k['name']}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id or prefix")],
                db: DbOption = None) -> None:
    """Revoke a key at once."""
    admin = _admin(db)
    try:
        key = admin.revoke_key(key_id)
    except EngramError as exc:
        _fail(exc)
    finally:
        admin.store.close()
    typer.echo(f"revoked {key.id} ({key.prefix}…)")


@app.command("export")
def export_(
    file: Annotated[Path | None, typer.Argument(help="Output file (default: stdout)")] = None,
    tenant: TenantOption = "default",
    db: DbOption = None,
) -> None:
    """Write a tenant's memories with their vectors as JSON lines."""
    from .engine.transfer import export_line

    with _engram(db, tenant) as mem:
        total = mem.service.store.count_active(tenant, mem.service.clock.now())
        out = sys.stdout if file is None else file.open("w", encoding="utf-8")
        n = 0
        try:
            with typer.progressbar(length=total, label="exporting", file=sys.stderr) as bar:
                for item in mem.service.store.iter_all(tenant):
                    out.write(json.dumps(export_line(item), ensure_ascii=False) + "\n")
                    n += 1
                    bar.update(1)
        finally:
            if file is not None:
                out.close()
        typer.echo(f"exported {n} memories", err=True)


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="JSON lines from `engram export`")],
    tenant: TenantOption = "default",
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import memories (ids, times and vectors kept; existing ids skipped)."""
    from .engine.transfer import parse_line

    with _engram(db, tenant) as mem:
        svc = mem.service
        lines = file.read_text(encoding="utf-8").splitlines()
        counts = {"imported": 0, "existing": 0, "duplicates": 0}
        chunk: list[Any] = []
        try:
            with typer.progressbar(length=len(lines), label="importing", file=sys.stderr) as bar:
                for n, line in enumerate(lines, start=1):
                    if line.strip():
                        try:
                            chunk.append(parse_line(json.loads(line), tenant,
                                                    svc.embedder.dimension,
                                                    svc.embedder.model_name))
                        except ValueError as exc:
                            raise EngramError(f"line {n}: {exc}") from None
                        except EngramError as exc:
                            raise EngramError(f"line {n}: {exc.message}",
                                              field=exc.field) from None
                    if len(chunk) >= 500 or (n == len(lines) and chunk):
                        for k, v in svc.import_rows(tenant, chunk).items():
                            counts[k] += v
                        chunk = []
                    bar.update(1)
        except EngramError as exc:
            _fail(exc)
        typer.echo(json.dumps(counts) if as_json else
                   f"imported {counts['imported']}, already there {counts['existing']}, "
                   f"duplicates {counts['duplicates']}")


@app.command()
def migrate(
    source: Annotated[str, typer.Option("--from", help="sqlite:///path or postgresql://…")],
    target: Annotated[str, typer.Option("--to", help="An empty database: postgresql://… "
                                        "or sqlite:///path")],
    batch_size: Annotated[int, typer.Option(help="Memories per transaction")] = 500,
    as_json: JsonOption = False,
) -> None:
    """Copy everything (tenants, keys, memories with vectors, relations, history) into an
    empty database, then verify counts and integrity hashes per tenant."""
    from .api import open_store
    from .errors import StoreError
    from .storage.copy import CopyMismatch, copy_store

    try:
        src, dst = open_store(source), open_store(target)
    except ValueError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2) from None
    bars: dict[str, Any] = {}

    def progress(done: int, total: int, phase: str) -> None:
        bar = bars.get(phase)
        if bar is None:
            for other in bars.values():
                other.render_finish()
            bar = bars[phase] = typer.progressbar(length=max(total, 1), label=phase,
                                                  file=sys.stderr)
            bar.render_progress()
        bar.update(done - bar.pos)

    try:
        report = copy_store(src, dst, progress=progress, batch_size=batch_size)
    except (CopyMismatch, StoreError) as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1) from None
    finally:
        for bar in bars.values():
            bar.render_finish()
        src.close()
        dst.close()
    summary = {"tenants": report.tenants, "keys": report.keys, "memories": report.memories,
               "relations": report.relations, "history_events": report.history_events,
               "seconds": round(report.seconds, 2), "verified": True}
    typer.echo(json.dumps(summary) if as_json else
               "copied and verified: " + ", ".join(f"{k} {v}" for k, v in summary.items()
                                                   if k not in ("verified",)))


@app.command()
def purge(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Delete expired memories physically (they are already invisible); tombstones stay."""
    with _engram(db) as mem:
        n = mem.purge_expired()
    typer.echo(json.dumps({"purged": n}) if as_json else f"purged {n} expired memories")


@app.command("forget-user")
def forget_user(
    user_id: Annotated[str, typer.Argument(help="The user whose memories go")],
    tenant: TenantOption = "default",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask")] = False,
    db: DbOption = None,
) -> None:
    """Delete every memory of a user (immutable ones too), with vectors."""
    if not yes:
        typer.confirm(f"Delete every memory of user {user_id!r} in tenant {tenant!r}?",
                      abort=True)
    with _engram(db, tenant) as mem:
        try:
            n = mem.forget_user(user_id)
        except EngramError as exc:
            _fail(exc)
    typer.echo(f"deleted {n} memories of {user_id}")


@app.command()
def mcp(
    transport: Annotated[str, typer.Option(help="stdio, or http (streamable HTTP at /mcp)")]
    = "stdio",
    host: Annotated[str, typer.Option(help="Bind address for http")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for http")] = 8421,
    user_id: Annotated[str | None, typer.Option(
        "--user-id", "-u", help="Default user scope of the tools")] = None,
    tenant: TenantOption = "default",
    db: DbOption = None,
) -> None:
    """Run an MCP server (tools: save/search/list/get/delete memories) on the local database."""
    from .mcp_server import TRANSPORTS, run

    if transport not in TRANSPORTS:
        raise typer.BadParameter(f"must be one of {', '.join(TRANSPORTS)}",
                                 param_hint="--transport")
    run(db, transport="http" if transport == "http" else "stdio", host=host, port=port,
        user_id=user_id, tenant=tenant)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
