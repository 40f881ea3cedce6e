"""Engram as an MCP server: `engram mcp` (stdio, or streamable HTTP with `--transport http`).

The tools work on the local database through the in-process `Engram`, so an MCP client
(Claude Desktop, Cursor, an agent framework…) gets long-term memory without running the HTTP
API. Results are JSON objects; bad input and unknown ids come back as tool errors whose text
names the field, as the core's messages do.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field

from .api import Engram
from .errors import EngramError
from .models import MemoryRecord, SaveResult
from .serialize import hit_dict, iso, memory_dict

__all__ = ["TRANSPORTS", "build_server", "run"]

log = logging.getLogger("engram.mcp")

TRANSPORTS = ("stdio", "http")
T = TypeVar("T")

INSTRUCTIONS = """\
Engram is a long-term memory. Save facts, preferences and decisions worth remembering with
save_memory (one self-contained statement per memory; duplicates are detected and not stored
twice). Before answering, look up what is known with search_memories (or get_context for a
prompt-ready block). list_memories pages through memories newest first; get_memory and
delete_memory act on one memory by id. add_conversation stores a whole transcript as turns.
"""


# (module level: the tools' annotations are strings, resolved in this module's namespace)
User = Annotated[str | None, Field(
    description="Whose memory (default: the server's --user-id; \"\" for none)")]
Agent = Annotated[str | None, Field(description="Agent scope")]
Namespace = Annotated[str | None, Field(description='Namespace (default "default")')]


class ConversationMessage(BaseModel):
    role: Annotated[str, Field(description="user, assistant, system or tool")]
    content: Annotated[str, Field(description="What was said")]
    created_at: Annotated[str | None, Field(description="ISO 8601; default: now")] = None


def brief(m: MemoryRecord) -> dict[str, Any]:
    """A memory as a model needs it: the content and what scopes and ranks it."""
    return {
        "id": m.id, "content": m.content, "user_id": m.user_id, "agent_id": m.agent_id,
        "session_id": m.session_id, "namespace": m.namespace,
        "memory_type": m.memory_type.value, "tags": m.tags, "metadata": m.metadata,
        "importance": m.importance, "created_at": iso(m.created_at),
        "expires_at": iso(m.expires_at),
    }


def _saved(r: SaveResult) -> dict[str, Any]:
    return {"status": r.status.value, "id": r.id, "existing_id": r.existing_id,
            "similarity": None if r.similarity is None else round(r.similarity, 6),
            "related_id": r.related_id, "memory": brief(r.memory)}


def build_server(engram: Engram, *, default_user_id: str | None = None,
                 name: str = "engram") -> Any:
    """An `MCPServer` with Engram's tools bound to `engram`. `default_user_id` scopes every
    call that names no user (an empty string means "no user")."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    from . import __version__

    server: Any = MCPServer(name, version=__version__, instructions=INSTRUCTIONS,
                            log_level="WARNING")

    def user(given: str | None) -> str | None:
        if given is None:
            return default_user_id
        return given or None

    def call(fn: Callable[[], T]) -> T:
        try:
            return fn()
        except EngramError as exc:
            raise ToolError(exc.message) from None

    def drop_none(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if v is not None}

    @server.tool()
    def save_memory(
        content: Annotated[str, Field(description="The memory: one self-contained statement")],
        user_id: User = None,
        agent_id: Agent = None,
        namespace: Namespace = None,
        memory_type: Annotated[str | None, Field(
            description="e.g. fact, preference, decision, episodic, semantic")] = None,
        importance: Annotated[float | None, Field(description="0..1, default 0.5")] = None,
        tags: Annotated[list[str] | None, Field(description="Labels to filter on")] = None,
        metadata: Annotated[dict[str, Any] | None, Field(
            description="Small JSON object (≤ 4 KB)")] = None,
        ttl_days: Annotated[int | None, Field(description="Forget after N days")] = None,
    ) -> dict[str, Any]:
        """Store a memory. Returns status saved, duplicate (with existing_id: nothing new
        stored), updated (it supersedes an older memory: related_id) or extended."""
        fields = drop_none({"user_id": user(user_id), "agent_id": agent_id,
                            "namespace": namespace, "memory_type": memory_type,
                            "importance": importance, "tags": tags, "metadata": metadata,
                            "ttl_days": ttl_days, "source": "mcp"})
        return call(lambda: _saved(engram.add(content, **fields)))

    @server.tool()
    def search_memories(
        query: Annotated[str, Field(description="What to look for, in plain words")],
        user_id: User = None,
        agent_id: Agent = None,
        namespace: Namespace = None,
        limit: Annotated[int, Field(description="1..100 results")] = 10,
        min_score: Annotated[float, Field(description="0..1; drop weaker matches")] = 0.0,
        tags: Annotated[list[str] | None, Field(
            description="Only memories with all these tags")] = None,
    ) -> dict[str, Any]:
        """Hybrid search (meaning + keywords + importance + recency), best first, with each
        result's score."""
        filters = drop_none({"user_id": user(user_id), "agent_id": agent_id,
                             "namespace": namespace, "tags": tags})
        hits = call(lambda: engram.search(query, limit=limit, min_score=min_score, **filters))
        return {"results": [{**brief(h.memory), "score": round(h.score, 6),
                             "explain": hit_dict(h)["explain"]} for h in hits],
                "count": len(hits)}

    @server.tool()
    def get_context(
        query: Annotated[str, Field(description="What the answer is about")],
        user_id: User = None,
        agent_id: Agent = None,
        namespace: Namespace = None,
        budget_tokens: Annotated[int, Field(description="16..100000 estimated tokens")] = 1000,
    ) -> dict[str, Any]:
        """The memories most relevant to `query` as one prompt-ready text block that fits
        the token budget."""
        filters = drop_none({"user_id": user(user_id), "agent_id": agent_id,
                             "namespace": namespace})
        ctx = call(lambda: engram.context(query, budget_tokens=budget_tokens, **filters))
        return {"context": ctx.text, "tokens": ctx.tokens, "budget_tokens": ctx.budget,
                "ids": [h.memory.id for h in ctx.memories]}

    @server.tool()
    def list_memories(
        user_id: User = None,
        agent_id: Agent = None,
        namespace: Namespace = None,
        limit: Annotated[int, Field(description="Page size, 1..1000")] = 20,
        offset: Annotated[int, Field(description="Skip this many")] = 0,
    ) -> dict[str, Any]:
        """Memories newest first, a page at a time."""
        filters = drop_none({"user_id": user(user_id), "agent_id": agent_id,
                             "namespace": namespace})
        page = call(lambda: engram.list(limit=limit, offset=offset, **filters))
        return {"items": [brief(m) for m in page.items], "total": page.total,
                "limit": page.limit, "offset": page.offset, "has_more": page.has_more}

    @server.tool()
    def get_memory(memory_id: Annotated[str, Field(description="The memory's id")]
                   ) -> dict[str, Any]:
        """One memory with every field."""
        return call(lambda: memory_dict(engram.get(memory_id)))

    @server.tool()
    def delete_memory(memory_id: Annotated[str, Field(description="The memory's id")]
                      ) -> dict[str, Any]:
        """Delete a memory for good (its history keeps a content-free tombstone)."""
        call(lambda: engram.delete(memory_id))
        return {"deleted": True, "id": memory_id}

    @server.tool()
    def add_conversation(
        session_id: Annotated[str, Field(description="The conversation's id")],
        messages: Annotated[list[ConversationMessage], Field(
            description="The turns, in order")],
        user_id: User = None,
        agent_id: Agent = None,
        namespace: Namespace = None,
    ) -> dict[str, Any]:
        """Store a transcript: each message becomes a memory with its session, role and
        position, searchable by meaning and groupable by session."""
        msgs = [m.model_dump(exclude_none=True) for m in messages]
        fields = drop_none({"user_id": user(user_id), "agent_id": agent_id,
                            "namespace": namespace})
        results = call(lambda: engram.add_conversation(session_id, msgs, **fields))
        return {"results": [{"status": r.status.value, "id": r.id,
                             "existing_id": r.existing_id} for r in results],
                "saved": sum(r.status.value == "saved" for r in results)}

    return server


def run(db: Path | str | None = None, *, transport: Literal["stdio", "http"] = "stdio",
        host: str = "127.0.0.1", port: int = 8421, user_id: str | None = None,
        tenant: str = "default") -> None:
    """Serve until the client disconnects (stdio) or the process is stopped (http)."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport: must be one of {', '.join(TRANSPORTS)}")
    # stdout is the protocol channel on stdio: everything else goes to stderr
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    with Engram(path=db, tenant_id=tenant) as engram:
        server = build_server(engram, default_user_id=user_id)
        if transport == "stdio":
            server.run("stdio")
        else:
            print(f"Engram MCP (streamable HTTP) on http://{host}:{port}/mcp", file=sys.stderr,
                  flush=True)
            server.run("streamable-http", host=host, port=port)
