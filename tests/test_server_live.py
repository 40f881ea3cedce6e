"""The real server: `engram serve` processes (uvicorn, the real model) on a free local port,
driven over TCP with httpx. Two processes share one SQLite file: what one writes the other
finds, and the same memory posted to both at once is stored once."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

KEY_RE = re.compile(r"\beng_live_[0-9A-Za-z]{43}\b")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def engram_bin() -> str:
    exe = Path(sys.executable).parent / "engram"
    if exe.exists():
        return str(exe)
    found = shutil.which("engram")
    if found is None:
        pytest.skip("the engram console script is not installed")
    return found


class Proc:
    """One `engram serve` process; stdout and stderr collected by reader threads."""

    def __init__(self, db: Path | str, data_dir: Path) -> None:
        """`db`: a SQLite file, or a postgresql:// URL."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENGRAM_")}
        env["ENGRAM_DATA_DIR"] = str(data_dir)
        env["PYTHONUNBUFFERED"] = "1"
        where = ["--db", str(db)]
        if isinstance(db, str) and db.startswith("postgresql://"):
            env["ENGRAM_DATABASE_URL"] = db
            where = []
        self.proc = subprocess.Popen(
            [engram_bin(), "serve", "--host", "127.0.0.1", "--port", str(self.port),
             *where, "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._drain, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _drain(stream: object, sink: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink.append(line)

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.logs()}")
            try:
                r = httpx.get(self.url + "/readyz", timeout=2.0)
                if r.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready within {timeout} s: {self.logs()}")

    def admin_key(self) -> str | None:
        keys = KEY_RE.findall("".join(self.out))
        assert len(keys) <= 1, "the bootstrap key is printed at most once"
        return keys[0] if keys else None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def logs(self) -> str:
        return "".join(self.out) + "".join(self.err)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


def test_two_server_processes_share_one_database(tmp_path: Path, servers: list[Proc]) -> None:
    db = tmp_path / "shared.db"
    first = Proc(db, tmp_path / "data")
    servers.append(first)
    first.wait_ready()
    # the second process starts on a database that already has keys: it prints none
    second = Proc(db, tmp_path / "data")
    servers.append(second)
    second.wait_ready()
    key = first.admin_key()
    assert key is not None, first.logs()
    assert second.admin_key() is None
    h = {"Authorization": f"Bearer {key}"}

    with httpx.Client(base_url=first.url, headers=h, timeout=10) as a, \
            httpx.Client(base_url=second.url, headers=h, timeout=10) as b:
        # a few calls over TCP
        assert a.get("/healthz").json() == {"status": "ok"}
        assert a.get("/v1/memories").json()["meta"]["total"] == 0
        r = a.post("/v1/memories", json={"content": "User is vegetarian", "user_id": "u1"},
                   headers={"X-Request-ID": "live-1"})
        assert r.status_code == 201 and r.headers["x-request-id"] == "live-1"
        mid = r.json()["data"]["id"]
        assert a.get("/v1/memories", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert a.get("/v1/memories/not-a-uuid").status_code == 422
        big = b'{"content": "' + b"x" * (11 * 1024 * 1024) + b'"}'
        r = a.post("/v1/memories", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413

        # written through one process, found through the other (search, get, list)
        r = b.post("/v1/search", json={"query": "does the user eat meat?", "user_id": "u1"})
        assert r.status_code == 200
        assert [hit["memory"]["id"] for hit in r.json()["data"]] == [mid]
        assert b.get(f"/v1/memories/{mid}").json()["data"]["content"] == "User is vegetarian"
        # and changes travel back: a patch on the second is seen by the first's search
        r = b.patch(f"/v1/memories/{mid}", json={"content": "User is vegan"})
        assert r.status_code == 200
        r = a.post("/v1/search", json={"query": "vegan", "user_id": "u1"})
        assert r.json()["data"][0]["memory"]["content"] == "User is vegan"

        # the same memories posted to both processes at once are stored once each (one
        # user per fact, so that only the race decides, not supersession between facts)
        facts = ["Sister lives in Nairobi", "Plays the cello on weekends",
                 "Is allergic to penicillin", "Drives a red Volvo",
                 "Favourite film is Spirited Away", "Works night shifts at the hospital"]

        def post(args: tuple[httpx.Client, str]) -> tuple[int, str]:
            client, fact = args
            r = client.post("/v1/memories", json={"content": fact, "agent_id": "race",
                                                  "user_id": f"u-{facts.index(fact)}"})
            return r.status_code, r.json()["data"]["id"]

        jobs = [(c, f) for f in facts for c in (a, b)]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            results = list(pool.map(post, jobs))
        for i in range(len(facts)):
            (s1, id1), (s2, id2) = results[2 * i], results[2 * i + 1]
            assert id1 == id2, (facts[i], results)
            assert sorted((s1, s2)) == [200, 201]
        listed = a.get("/v1/memories", params={"agent_id": "race", "limit": 100}).json()
        assert listed["meta"]["total"] == len(facts)
        assert sorted(m["content"] for m in listed["data"]) == sorted(facts)

        # the second process sees every row through its export, with vectors
        lines = [json.loads(line) for line in b.get("/v1/export").text.splitlines()]
        assert len(lines) == len(facts) + 1 and all(m["vector"] for m in lines)
        assert "engram_http_requests_total" in b.get("/metrics").text

    # clean shutdown on SIGINT
    for p in servers:
        assert p.stop() == 0, p.logs()
    assert "Traceback" not in first.logs() + second.logs()


BOOTSTRAP = """
import os, sys, time
from pathlib import Path
from engramdb.engine.admin import AdminService
from engramdb.storage.sqlite import SQLiteStore
store = SQLiteStore(Path(sys.argv[1]))
store.migrate()
admin = AdminService(store)
gate = Path(sys.argv[2])
(gate / f"ready-{os.getpid()}").touch()
while not (gate / "go").exists():
    time.sleep(0.001)
created = admin.bootstrap()
print(created.key if created else "none")
store.close()
"""


def test_processes_starting_on_a_new_database_create_one_admin_key(tmp_path: Path) -> None:
    """`engram serve --workers N` on a new database: every worker runs the bootstrap at
    once, and exactly one of them creates (and prints) the admin key."""
    from engramdb.storage.sqlite import SQLiteStore

    db = tmp_path / "new.db"
    SQLiteStore(db).migrate()
    gate = tmp_path / "gate"
    gate.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", BOOTSTRAP, str(db), str(gate)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    deadline = time.monotonic() + 20
    while len(list(gate.glob("ready-*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.01)
    (gate / "go").touch()  # all four bootstrap at the same moment
    outs = [p.communicate(timeout=30) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    printed = [out.strip() for out, _ in outs]
    keys = [p for p in printed if KEY_RE.fullmatch(p)]
    assert len(keys) == 1 and printed.count("none") == 3, printed
    store = SQLiteStore(db)
    try:
        assert len(store.list_keys()) == 1 and store.get_tenant("default") is not None
    finally:
        store.close()


def test_two_server_processes_on_one_postgres(tmp_path: Path, servers: list[Proc],
                                              pg_cluster: Any) -> None:
    """Scale-out: two stateless API processes on one PostgreSQL. What one writes the other
    finds, and the same memory posted to both at once is stored once (an advisory lock per
    user scope, not luck)."""
    url = pg_cluster.new_url()
    first = Proc(url, tmp_path / "data")
    servers.append(first)
    first.wait_ready(timeout=40)
    second = Proc(url, tmp_path / "data")
    servers.append(second)
    second.wait_ready(timeout=40)
    key = first.admin_key()
    assert key is not None and second.admin_key() is None, first.logs() + second.logs()
    h = {"X-API-Key": key}
    facts = ["Sister lives in Nairobi", "Plays the cello on weekends",
             "Is allergic to penicillin", "Drives a red Volvo"]
    with httpx.Client(base_url=first.url, headers=h, timeout=20) as a, \
            httpx.Client(base_url=second.url, headers=h, timeout=20) as b:

        def post(args: tuple[httpx.Client, str]) -> tuple[int, str]:
            client, fact = args
            r = client.post("/v1/memories", json={"content": fact, "user_id": "pg-user",
                                                  "agent_id": f"race-{facts.index(fact)}"})
            return r.status_code, r.json()["data"]["id"]

        jobs = [(c, f) for f in facts for c in (a, b)]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            results = list(pool.map(post, jobs))
        for i in range(len(facts)):
            (s1, id1), (s2, id2) = results[2 * i], results[2 * i + 1]
            assert id1 == id2 and sorted((s1, s2)) == [200, 201], (facts[i], results)
        listed = b.get("/v1/memories", params={"user_id": "pg-user", "limit": 100}).json()
        assert listed["meta"]["total"] == len(facts)
        hits = b.post("/v1/search", json={"query": "which instrument does the user play?",
                                          "user_id": "pg-user"}).json()["data"]
        assert hits[0]["memory"]["content"] == "Plays the cello on weekends"
    for p in servers:
        assert p.stop() == 0, p.logs()
    assert "Traceback" not in first.logs() + second.logs()
