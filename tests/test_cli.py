"""The `engram` command line on a temporary database: typer's CliRunner in process (with the
session's model), plus the installed console script in a subprocess for exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import Result
from typer.testing import CliRunner

from engramdb.cli import app
from engramdb.embeddings import Embedder
from engramdb.storage.sqlite import SQLiteStore


@pytest.fixture(autouse=True)
def shared_model(monkeypatch: pytest.MonkeyPatch, embedder: Embedder) -> None:
    """Every command builds an Engram, which loads the default embedder: use the session's."""
    monkeypatch.setattr("engramdb.embeddings.load_default_embedder", lambda settings: embedder)
    for name in [k for k in os.environ if k.startswith("ENGRAM_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


runner = CliRunner()


def run(*args: str | Path, code: int = 0) -> Result:
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == code, (args, result.output)
    return result


def run_json(*args: str | Path) -> Any:
    return json.loads(run(*args, "--json").stdout)


def test_add_search_list_get_delete_stats(db: Path) -> None:
    r = run("add", "User prefers dark mode", "--user-id", "u1", "--db", db)
    status, mid = r.stdout.split()
    assert status == "saved"
    added = run_json("add", "User is allergic to shellfish", "--user-id", "u1",
                     "--memory-type", "fact", "--importance", "0.9", "--db", db)
    assert added["status"] == "saved" and added["existing_id"] is None
    assert added["tokens_used"] > 0
    dup = run_json("add", "User prefers dark mode", "-u", "u1", "--db", db)
    assert dup == {"status": "duplicate", "id": mid, "existing_id": mid,
                   "tokens_used": 0}
    run("add", "Team standup is at 9:30", "--agent-id", "bot", "--namespace", "work",
        "--ttl-days", "7", "--db", db)

    hits = run_json("search", "seafood allergy", "--user-id", "u1", "--db", db)
    assert hits[0]["id"] == added["id"]
    assert hits[0]["content"] == "User is allergic to shellfish"
    assert set(hits[0]["explain"]) >= {"semantic", "keyword", "importance", "relevance"}
    assert {h["id"] for h in hits} <= {mid, added["id"]}
    text = run("search", "seafood allergy", "-u", "u1", "--explain", "--db", db).stdout
    assert added["id"] in text and "semantic=" in text
    assert run("search", "anything", "-u", "nobody", "--db", db).stdout.strip() == \
        "no memories found"

    page = run_json("list", "--db", db)
    assert page["total"] == 3 and page["has_more"] is False
    assert page["items"][0]["content"] == "Team standup is at 9:30"
    page = run_json("list", "--limit", "1", "--offset", "1", "--db", db)
    assert len(page["items"]) == 1 and page["has_more"] is True
    assert run_json("list", "-u", "u1", "--db", db)["total"] == 2
    assert run_json("list", "-a", "bot", "-n", "work", "--db", db)["total"] == 1
    listing = run("list", "--db", db)
    assert mid in listing.stdout and "(3 of 3)" in listing.stderr

    got = json.loads(run("get", mid, "--db", db).stdout)
    assert got["id"] == mid and got["content"] == "User prefers dark mode"
    assert got["user_id"] == "u1" and got["status"] == "active"

    stats = json.loads(run("stats", "--db", db).stdout)
    assert isinstance(stats, dict) and stats

    assert run("delete", mid, "--db", db).stdout.strip() == f"deleted {mid}"
    r = run("get", mid, "--db", db, code=2)
    assert "not found" in r.stderr
    assert run_json("list", "--db", db)["total"] == 2


@pytest.mark.parametrize(("args", "field"), [
    (["add", ""], "content"),
    (["add", "   "], "content"),
    (["add", "x", "--importance", "2"], "importance"),
    (["add", "x", "--ttl-days", "0"], "ttl_days"),
    (["add", "x", "--memory-type", "dream"], "memory_type"),
    (["add", "x", "--user-id", ""], "user_id"),
    (["search", ""], "query"),
    (["search", "x", "--limit", "0"], "limit"),
    (["list", "--limit", "5000"], "limit"),
    (["list", "--offset", "-1"], "offset"),
    (["get", "not-a-uuid"], "id"),
    (["delete", "not-a-uuid"], "id"),
    (["keys", "create", "--scope", "root"], "scopes"),
    (["keys", "create", "--tenant", "bad tenant!"], "tenant_id"),
    (["keys", "create", "--rate-limit", "-5"], "rate_limit"),
    (["keys", "revoke", "no-such-key"], "key_id"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_input_exits_2_naming_the_field(db: Path, args: list[str], field: str) -> None:
    r = run(*args, "--db", db, code=2)
    assert r.stderr.startswith("error: ")
    if field == "key_id":
        assert "no-such-key" in r.stderr and "not found" in r.stderr
    else:
        assert r.stderr.removeprefix("error: ").startswith(field), r.stderr
    assert r.stdout == ""


def test_usage_errors_exit_2(db: Path) -> None:
    r = run("add", "--db", db, code=2)
    assert "missing argument 'content'" in r.output.lower()
    r = run("add", "x", "--importance", "high", "--db", db, code=2)
    assert "--importance" in r.output
    r = run("frobnicate", code=2)
    assert "No such command" in r.output
    assert "serve" in run("--help").stdout


def test_keys_create_list_revoke(db: Path) -> None:
    from engramdb.engine.admin import AdminService

    created = run_json("keys", "create", "--tenant", "acme", "--name", "ci",
                       "--scope", "memories:read", "--rate-limit", "60", "--db", db)
    assert created["key"].startswith("eng_live_") and created["tenant_id"] == "acme"
    assert created["scopes"] == ["memories:read"]
    plain = run("keys", "create", "--db", db)
    key2 = plain.stdout.strip()
    assert key2.startswith("eng_live_") and "shown only once" in plain.stderr
    assert "memories:read memories:write" in plain.stderr

    listed = run_json("keys", "list", "--db", db)
    assert {k["id"] for k in listed} >= {created["id"]}
    assert len(listed) == 2
    assert all(created["key"] not in json.dumps(k) for k in listed)
    mine = next(k for k in listed if k["id"] == created["id"])
    assert mine["rate_limit"] == 60 and mine["revoked_at"] is None and mine["name"] == "ci"
    assert [k["id"] for k in run_json("keys", "list", "--tenant", "acme", "--db", db)] == \
        [created["id"]]
    text = run("keys", "list", "--db", db).stdout
    assert created["id"] in text and "active" in text

    # the key authenticates against the same database, for its tenant and scopes
    store = SQLiteStore(db)
    try:
        admin = AdminService(store)
        principal = admin.authenticate(created["key"])
        assert principal.tenant.id == "acme" and principal.key.scopes == ["memories:read"]
    finally:
        store.close()

    out = run("keys", "revoke", created["id"], "--db", db).stdout
    assert out.startswith(f"revoked {created['id']}")
    mine = next(k for k in run_json("keys", "list", "--db", db) if k["id"] == created["id"])
    assert mine["revoked_at"] is not None
    assert "revoked" in run("keys", "list", "--db", db).stdout
    store = SQLiteStore(db)
    try:
        from engramdb.errors import Unauthorized

        with pytest.raises(Unauthorized):
            AdminService(store).authenticate(created["key"])
    finally:
        store.close()
    # by prefix too
    prefix = next(k["prefix"] for k in listed if k["id"] != created["id"])
    assert run("keys", "revoke", prefix, "--db", db).stdout.startswith("revoked")
    run("keys", "create", "--tenant", "nope", "--no-create-tenant", "--db", db, code=2)


def test_export_import_round_trip_through_files(db: Path, tmp_path: Path) -> None:
    facts = ["Lives in Porto", "Works as a pharmacist", "Has a dog called Biscuit",
             "Prefers email over phone calls"]
    ids = [run_json("add", f, "--user-id", f"u{i % 2}", "--importance", "0.7",
                    "--db", db)["id"] for i, f in enumerate(facts)]
    out = tmp_path / "dump.jsonl"
    r = run("export", out, "--db", db)
    assert "exported 4 memories" in r.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(m["id"] for m in lines) == sorted(ids)
    assert all(m["vector"] and m["format"] == "engram.memory.v1" for m in lines)
    # to stdout as well
    streamed = run("export", "--db", db).stdout.splitlines()
    assert sorted(json.loads(s)["id"] for s in streamed) == sorted(ids)

    fresh = tmp_path / "fresh.db"
    assert run_json("import", out, "--db", fresh) == {"imported": 4, "existing": 0,
                                                       "duplicates": 0}
    assert run_json("import", out, "--db", fresh) == {"imported": 0, "existing": 4,
                                                       "duplicates": 0}
    assert "imported 0, already there 4" in run("import", out, "--db", fresh).stdout
    again = tmp_path / "again.jsonl"
    run("export", again, "--db", fresh)
    by_id = {m["id"]: m for m in lines}
    assert {json.loads(s)["id"]: json.loads(s) for s in again.read_text().splitlines()} == by_id

    a, b = SQLiteStore(db), SQLiteStore(fresh)
    try:
        for mid in ids:
            va, vb = a.get_vector("default", mid), b.get_vector("default", mid)
            assert va is not None and vb is not None and np.array_equal(va, vb)
    finally:
        a.close()
        b.close()
    hits = run_json("search", "which pet does the user have?", "-u", "u0", "--db", fresh)
    assert hits[0]["content"] == "Has a dog called Biscuit"

    # into another tenant of the same file: ids kept, tenant replaced
    assert run_json("import", out, "--tenant", "restore", "--db", fresh)["imported"] == 4
    dump = tmp_path / "restore.jsonl"
    run("export", dump, "--tenant", "restore", "--db", fresh)
    assert {json.loads(s)["tenant_id"] for s in dump.read_text().splitlines()} == {"restore"}


def test_import_refuses_tampered_and_broken_files(db: Path, tmp_path: Path) -> None:
    run("add", "The user's bank is Lumen Bank", "--db", db)
    out = tmp_path / "dump.jsonl"
    run("export", out, "--db", db)
    line = json.loads(out.read_text())
    fresh = tmp_path / "fresh.db"

    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text(json.dumps(line | {"content": "The user's bank is Evil Bank"}) + "\n")
    r = run("import", tampered, "--db", fresh, code=2)
    assert "line 1: integrity_hash" in r.stderr
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(line) + "\n{not json\n")
    r = run("import", broken, "--db", fresh, code=2)
    assert "line 2" in r.stderr
    bad_vector = tmp_path / "vector.jsonl"
    bad_vector.write_text(json.dumps(line | {"vector": "AAAA"}) + "\n")
    assert "line 1: vector" in run("import", bad_vector, "--db", fresh, code=2).stderr
    assert run_json("list", "--db", fresh)["total"] == 0


def test_console_script_exit_codes(db: Path) -> None:
    """The installed `engram` script in its own process (model loaded for real)."""
    exe = Path(sys.executable).parent / "engram"
    if not exe.exists():
        pytest.skip("the engram console script is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGRAM_")}
    ok = subprocess.run([str(exe), "add", "Speaks Portuguese", "--db", str(db), "--json"],
                        capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == "saved"
    bad = subprocess.run([str(exe), "add", "x", "--importance", "1.5", "--db", str(db)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "importance" in bad.stderr and bad.stdout == ""


@pytest.mark.parametrize(("workers", "env", "threads"),
                         [(1, None, None), (2, None, "1"), (2, "2", "2")])
def test_serve_shares_the_cores_between_workers(
    monkeypatch: pytest.MonkeyPatch, db: Path, workers: int, env: str | None,
    threads: str | None,
) -> None:
    """Each worker process runs its own model: two workers on two cores get one ORT thread
    each, unless ENGRAM_EMBED_THREADS says otherwise."""
    import uvicorn

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for name in ("ENGRAM_EMBED_THREADS", "ENGRAM_DATABASE_URL"):  # serve sets them:
        monkeypatch.setenv(name, "")  # registered here, so removed again after the test
        monkeypatch.delenv(name)
    if env is not None:
        monkeypatch.setenv("ENGRAM_EMBED_THREADS", env)
    seen: dict[str, Any] = {}

    def fake_run(app: str, **kw: Any) -> None:  # uvicorn itself runs in test_server_live
        seen.update(kw, threads=os.environ.get("ENGRAM_EMBED_THREADS"))

    monkeypatch.setattr(uvicorn, "run", fake_run)
    run("serve", "--workers", str(workers), "--port", "8999", "--db", db)
    assert seen["workers"] == workers and seen["port"] == 8999
    assert seen["threads"] == threads
    assert os.environ["ENGRAM_DATABASE_URL"] == f"sqlite:///{db}"
