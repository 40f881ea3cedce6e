"""`engram mcp` driven by a real MCP client session (the official `mcp` package): over stdio
(the client spawns the server) and over streamable HTTP (a server process on a free port)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, TextContent

from engramdb import Engram
from engramdb.embeddings import Embedder

TOOLS = {"save_memory", "search_memories", "list_memories", "get_memory", "delete_memory",
         "add_conversation", "get_context"}


def engram_bin() -> str:
    exe = Path(sys.executable).parent / "engram"
    if exe.exists():
        return str(exe)
    found = shutil.which("engram")
    if found is None:
        pytest.skip("the engram console script is not installed")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    data = result.structured_content
    assert isinstance(data, dict)
    # the text content carries the same JSON, for clients that read only text
    text = result.content[0]
    assert isinstance(text, TextContent) and json.loads(text.text) == data
    return data


def error_text(result: CallToolResult) -> str:
    assert result.is_error
    text = result.content[0]
    assert isinstance(text, TextContent)
    return text.text


def test_stdio_session_saves_searches_and_reports_bad_input(tmp_path: Path,
                                                            embedder: Embedder) -> None:
    db = tmp_path / "mcp.db"
    params = StdioServerParameters(
        command=engram_bin(), args=["mcp", "--db", str(db), "--user-id", "alice"],
        env={"ENGRAM_DATA_DIR": str(tmp_path / "data")})

    async def session() -> str:
        # the initialize handshake, as the MCP clients in the field do it
        async with Client(params, mode="legacy", read_timeout_seconds=30) as client:
            assert client.server_info is not None and client.server_info.name == "engram"
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == TOOLS
            assert tools["save_memory"].input_schema["required"] == ["content"]
            assert tools["save_memory"].description

            saved = structured(await client.call_tool("save_memory", {
                "content": "Alice is allergic to peanuts", "tags": ["health"],
                "importance": 0.9}))
            assert saved["status"] == "saved"
            assert saved["memory"]["user_id"] == "alice"  # the --user-id default
            structured(await client.call_tool("save_memory", {
                "content": "Alice's favourite city is Lisbon"}))
            structured(await client.call_tool("save_memory", {
                "content": "Bob prefers window seats", "user_id": "bob"}))
            dup = structured(await client.call_tool("save_memory", {
                "content": "Alice is allergic to peanuts"}))
            assert dup["status"] == "duplicate" and dup["existing_id"] == saved["id"]

            found = structured(await client.call_tool("search_memories", {
                "query": "food allergies", "limit": 5}))
            assert found["count"] == 2  # alice's only
            top = found["results"][0]
            assert top["id"] == saved["id"] and top["content"] == "Alice is allergic to peanuts"
            assert 0 < top["score"] <= 1 and "semantic" in top["explain"]

            page = structured(await client.call_tool("list_memories", {"user_id": "bob"}))
            assert page["total"] == 1 and page["items"][0]["content"] == "Bob prefers window seats"

            got = structured(await client.call_tool("get_memory", {"memory_id": saved["id"]}))
            assert got["tags"] == ["health"] and got["importance"] == 0.9

            # bad input: clear tool errors naming the field, not crashes
            assert "content" in error_text(await client.call_tool("save_memory",
                                                                  {"content": "   "}))
            assert "importance" in error_text(await client.call_tool(
                "save_memory", {"content": "x", "importance": 7}))
            assert "importance" in error_text(await client.call_tool(
                "save_memory", {"content": "x", "importance": "very"}))
            assert "not found" in error_text(await client.call_tool(
                "get_memory", {"memory_id": "01a1f000-0000-7000-8000-000000000000"}))
            assert "id" in error_text(await client.call_tool("get_memory",
                                                             {"memory_id": "nope"}))

            turns = structured(await client.call_tool("add_conversation", {
                "session_id": "s1", "messages": [
                    {"role": "user", "content": "I'm training for a marathon."},
                    {"role": "assistant", "content": "Great, I'll plan long runs."}]}))
            assert turns["saved"] == 2
            ctx = structured(await client.call_tool("get_context", {"query": "exercise"}))
            assert "marathon" in ctx["context"]

            gone = structured(await client.call_tool("delete_memory",
                                                     {"memory_id": turns["results"][1]["id"]}))
            assert gone == {"deleted": True, "id": turns["results"][1]["id"]}
            return str(saved["id"])

    saved_id = anyio.run(session)
    # it wrote to the --db file
    with Engram(path=db, embedder=embedder) as mem:
        assert mem.get(saved_id, track=False).content == "Alice is allergic to peanuts"
        assert mem.list().total == 4


def test_streamable_http_session(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGRAM_")}
    env["ENGRAM_DATA_DIR"] = str(tmp_path / "data")
    log = tmp_path / "mcp-http.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [engram_bin(), "mcp", "--transport", "http", "--host", "127.0.0.1", "--port",
             str(port), "--db", str(tmp_path / "http.db")],
            stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the MCP HTTP server did not start"
                time.sleep(0.1)

        async def session() -> None:
            async with Client(f"http://127.0.0.1:{port}/mcp", read_timeout_seconds=30) as client:
                names = {t.name for t in (await client.list_tools()).tools}
                assert names == TOOLS
                saved = structured(await client.call_tool("save_memory", {
                    "content": "The deploy window is Tuesday 14:00 UTC", "user_id": "ops"}))
                assert saved["status"] == "saved"
                found = structured(await client.call_tool("search_memories", {
                    "query": "when can we deploy?", "user_id": "ops"}))
                assert found["results"][0]["id"] == saved["id"]
                assert error_text(await client.call_tool(
                    "search_memories", {"query": "x", "limit": 0})).endswith(
                    "limit: must be between 1 and 100 (got 0)")

        anyio.run(session)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_bad_transport_is_refused() -> None:
    from typer.testing import CliRunner

    from engramdb.cli import app

    r = CliRunner().invoke(app, ["mcp", "--transport", "carrier-pigeon"])
    assert r.exit_code == 2 and "--transport" in r.output
