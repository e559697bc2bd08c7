"""The PostgreSQL engine's own guarantees, against a real server (tests/postgres_fixtures.py) and real processes:
increments from two processes on the same bucket are never lost, two processes migrating a fresh database apply
each migration once, a server that goes away mid-run costs nothing (the flusher keeps the analyses and retries), a
flush whose COMMIT's answer is lost is counted once (a fault-injecting proxy between the store and the server), and
a wrong URL, a refused connection, bad credentials or a missing database are one clear `StoreError`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from postgres_fixtures import PostgresServer

import bot.store.postgres as store_postgres
from bot.store import ChannelSettings, StoreError, TransientStoreError, open_store
from bot.store.interface import bucket_start
from bot.store.postgres import MIGRATIONS, PostgresStore
from bot.store.sqlite import MIGRATIONS as SQLITE_MIGRATIONS

REPO = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
H = 3600
T0 = bucket_start(1_700_000_000.0)

# Records `n` analyses into ONE bucket once the parent says go, flushing every 2 ms: many small transactions that
# add to the same rows as the other process's.
HAMMER = """
import asyncio, sys
from bot.store import open_store

async def main(url, n, at):
    store = await open_store(url, flush_interval=0.002)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for i in range(n):
        store.record(1, 2, [("joy", 0.5), ("fear", 0.25)], at=at)
        if i % 20 == 0:
            await asyncio.sleep(0.001)
    await store.close()
    print("done", store.flushed_total, store.dropped, store.failed_flushes, flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
"""

# Opens (and so migrates) the database once the parent says go; prints how many migrations it applied.
MIGRATE = """
import asyncio, sys
from bot.store.postgres import PostgresStore

async def main(url):
    print("ready", flush=True)
    sys.stdin.readline()
    store = await PostgresStore.open(url)
    print("applied", store.migrations_applied, flush=True)
    await store.close()

asyncio.run(main(sys.argv[1]))
"""


@contextlib.contextmanager
def children(script: str, *argvs: list[str]) -> Iterator[list[subprocess.Popen[str]]]:
    """Start one child per argv, wait until each says "ready", then release them all at once (a barrier, not a
    sleep); stopped and checked to be gone at the end."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *argv],
            cwd=REPO,
            env=CHILD_ENV,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=60)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.poll() is not None


def outputs(procs: list[subprocess.Popen[str]]) -> list[str]:
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "Traceback" not in err, err
        results.append(out.strip())
    return results


async def fetch(url: str, sql: str) -> list[tuple]:
    connection = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await connection.fetch(sql)]
    finally:
        await connection.close()


def test_both_engines_have_the_same_numbered_migrations() -> None:
    assert len(MIGRATIONS) == len(SQLITE_MIGRATIONS)


def test_two_processes_hammering_one_bucket_lose_no_increment(postgres_url: str) -> None:
    per_process = 3000
    with children(
        HAMMER, [postgres_url, str(per_process), str(T0 + 5)], [postgres_url, str(per_process), str(T0 + 9)]
    ) as procs:
        reports = [line.splitlines()[-1].split() for line in outputs(procs)]
    assert [(int(flushed), int(dropped)) for _, flushed, dropped, _ in reports] == [(per_process, 0)] * 2
    total = 2 * per_process
    rows = asyncio.run(fetch(postgres_url, "SELECT guild_id, channel_id, bucket_start, messages FROM channel_buckets"))
    assert rows == [(1, 2, T0, total)]  # one row, every increment in it
    labels = asyncio.run(fetch(postgres_url, "SELECT label, count, score_sum FROM emotion_buckets ORDER BY label"))
    assert labels == [("fear", total, pytest.approx(0.25 * total)), ("joy", total, pytest.approx(0.5 * total))]


def test_two_processes_migrating_a_fresh_database_apply_each_migration_once(postgres_url: str) -> None:
    with children(MIGRATE, [postgres_url], [postgres_url]) as procs:
        applied = [int(line.split()[-1]) for line in outputs(procs)]
    assert sorted(applied) == [0, len(MIGRATIONS)]  # one did all the work, the other waited and found none to do
    assert asyncio.run(fetch(postgres_url, "SELECT version FROM moodring_schema")) == [(len(MIGRATIONS),)]
    # The salt migration ran once, and its salt, unused, was dropped by the next (member hashes are keyed with the
    # deployment key now, kept outside the database: bot/store/member_key.py).
    assert asyncio.run(fetch(postgres_url, "SELECT COUNT(*) FROM store_secrets")) == [(0,)]


async def test_a_database_from_the_previous_version_is_upgraded_and_keeps_its_rows(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute("CREATE TABLE moodring_schema (version INTEGER NOT NULL)")
        await connection.execute("INSERT INTO moodring_schema VALUES (2)")
        for script in MIGRATIONS[:2]:
            await connection.execute(script)
        await connection.execute("INSERT INTO guild_settings (guild_id, retention_days) VALUES (5, 14)")
        await connection.execute("INSERT INTO channel_settings VALUES (5, 6, FALSE, TRUE)")
    finally:
        await connection.close()
    async with await open_store(postgres_url) as store:
        assert isinstance(store, PostgresStore) and store.migrations_applied == len(MIGRATIONS) - 2
        assert await store.retention_days(5) == 14 and not await store.corrections_enabled(5)
        assert await store.channel_settings(5, 6) == ChannelSettings(analysis=False, reactions=True)
    assert await fetch(postgres_url, "SELECT version FROM moodring_schema") == [(len(MIGRATIONS),)]


async def test_a_failing_migration_is_rolled_back_whole(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = "CREATE TABLE extra (x INTEGER);\nINSERT INTO missing_table VALUES (1);"
    monkeypatch.setattr(store_postgres, "MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(StoreError, match="missing_table"):
        await open_store(postgres_url)
    # The earlier migrations committed; the broken one left nothing behind, and the lock was given back.
    assert await fetch(postgres_url, "SELECT version FROM moodring_schema") == [(len(MIGRATIONS),)]
    assert await fetch(postgres_url, "SELECT to_regclass('extra') IS NULL") == [(True,)]
    assert await fetch(postgres_url, "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory'") == [(0,)]


async def test_a_database_from_a_newer_version_is_refused(postgres_url: str) -> None:
    await (await open_store(postgres_url)).close()
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute("UPDATE moodring_schema SET version = version + 1")
    finally:
        await connection.close()
    with pytest.raises(StoreError, match="newer than this bot supports"):
        await open_store(postgres_url)


async def test_a_new_database_holds_nothing_to_hash_members_with(postgres_server: PostgresServer) -> None:
    """Each database once had its own salt; now no database holds what its member hashes are made with (the
    deployment key is kept outside it: tests/test_member_key.py)."""
    first, second = postgres_server.create_database(), postgres_server.create_database()
    for url in (first, second):
        await (await open_store(url)).close()
    assert [await fetch(url, "SELECT value FROM store_secrets") for url in (first, second)] == [[], []]


# ---------------------------------------------------------------- faults


async def _wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.01)


async def test_a_server_that_stops_mid_run_costs_no_analysis(
    postgres_server: PostgresServer, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server is killed (`pg_ctl stop -m immediate`, as a crash) while the bot records: flushes fail, the
    analyses stay pending with one warning (no traceback), and all of them are written once it is back."""
    async with await open_store(postgres_url, flush_interval=0.01) as store:
        store.record(1, 2, [("joy", 0.5)], at=T0)
        await _wait_for(lambda: store.flushed_total == 1, what="the first flush")
        with caplog.at_level(logging.DEBUG, logger="bot.store"):
            postgres_server.stop("immediate")
            try:
                for i in range(1, 6):
                    store.record(1, 2, [("joy", 0.5)], at=T0 + i)
                await _wait_for(lambda: store.failed_flushes >= 2, what="failed flushes")
                assert (store.pending, store.flushed_total, store.dropped) == (5, 1, 0)
                with pytest.raises(Exception) as failure:  # an explicit flush says why, and keeps the entries
                    await store.flush()
                assert isinstance(failure.value, TransientStoreError)
                assert store.pending == 5
                assert (await store.channel_settings(1, 2)) == ChannelSettings()  # from memory: still answers
            finally:
                postgres_server.start()
            await _wait_for(lambda: store.flushed_total == 6, what="the flush after the restart")
            await _wait_for(lambda: any("works again" in r.getMessage() for r in caplog.records), what="recovery")
        mood = await store.mood(1, 2, T0, T0 + H)
        assert (mood.messages, mood.label_counts) == (6, {"joy": 6})
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is None, [r.getMessage() for r in warnings]
    assert "writing statistics failed" in warnings[0].getMessage()


async def test_a_store_closed_while_the_server_is_down_says_what_was_lost(
    postgres_server: PostgresServer, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = await open_store(postgres_url, flush_interval=3600)
    store.record(1, 2, [("joy", 0.5)], at=T0)
    postgres_server.stop("immediate")
    try:
        with caplog.at_level(logging.ERROR, logger="bot.store"), pytest.raises(TransientStoreError):
            await asyncio.wait_for(store.close(), 60)  # returns: the pool does not hang on a dead server
        (lost,) = [r for r in caplog.records if "1 analyses lost" in r.getMessage()]
        assert lost.exc_info is None  # an outage is a line, not a traceback
    finally:
        postgres_server.start()


async def test_connection_problems_are_one_clear_store_error(postgres_server: PostgresServer) -> None:
    good = postgres_server.create_database()
    database = good.rsplit("/", 1)[1]
    with socket_bound() as free_port:
        cases = {
            f"postgresql://moodring:secret-pw@127.0.0.1:{free_port}/x": "cannot connect to PostgreSQL",
            postgres_server.url(database, password="secret-pw"): "refused the user or password",
            postgres_server.url(database, user="nobody_here", password="secret-pw"): "refused the user or password",
            postgres_server.url("no_such_database"): "does not exist",
            "postgresql://moodring:secret-pw@127.0.0.1:notaport/x": "not a valid PostgreSQL URL",
        }
        for url, expected in cases.items():
            with pytest.raises(StoreError, match=expected) as raised:
                await open_store(url, connect_timeout=10)
            message = str(raised.value)
            assert "secret-pw" not in message and "\n" not in message and "Traceback" not in message, message
            assert raised.value.__cause__ is None or "secret-pw" not in str(raised.value.__cause__)


@contextlib.contextmanager
def socket_bound() -> Iterator[int]:
    """A port on 127.0.0.1 that is bound but not listening: a connection to it is refused."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


class CommitAnswerDropper:
    """A TCP proxy in front of the PostgreSQL server. Once `armed`, it passes the next COMMIT to the server, waits
    for the server's answer (the transaction is committed by then), and drops the client's connection instead of
    passing the answer on: a COMMIT whose outcome the client cannot know, as in a failover."""

    def __init__(self, server_port: int) -> None:
        self.server_port = server_port
        self.armed = False
        self.dropped = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> CommitAnswerDropper:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, url: str) -> str:
        port = self._server.sockets[0].getsockname()[1]
        return url.replace(f":{self.server_port}/", f":{port}/")

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        server_in, server_out = await asyncio.open_connection("127.0.0.1", self.server_port)
        committing = asyncio.Event()

        async def upstream() -> None:
            while data := await client_in.read(65536):
                if self.armed and b"COMMIT" in data:
                    self.armed = False
                    committing.set()
                server_out.write(data)
                await server_out.drain()

        async def downstream() -> None:
            while data := await server_in.read(65536):
                if committing.is_set():  # the server's answer to COMMIT: it committed; the client never hears
                    client_out.transport.abort()
                    server_out.close()
                    self.dropped.set()
                    return
                client_out.write(data)
                await client_out.drain()

        tasks = {asyncio.create_task(upstream()), asyncio.create_task(downstream())}
        self._tasks |= tasks
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        client_out.transport.abort()
        server_out.close()


async def test_a_flush_whose_commit_answer_is_lost_is_counted_once(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    """The connection drops after COMMIT reached the server and before its answer came back: the flush fails with a
    transient error, and the next flush finds the batch's flush id in the database and adds nothing again."""
    async with CommitAnswerDropper(postgres_server.port) as proxy:
        store = await open_store(proxy.url(postgres_url), flush_interval=3600)
        try:
            for _ in range(3):
                store.record(1, 2, [("joy", 0.5)], at=T0)
            proxy.armed = True
            with pytest.raises(TransientStoreError):
                await store.flush()
            assert proxy.dropped.is_set() and store.pending == 3
            assert await store.flush() == 3  # settled: committed before, so counted and not written again
            store.record(1, 2, [("joy", 0.5)], at=T0)
            assert await store.flush() == 1
            assert store.pending == 0 and store.flushed_total == store.recorded_total == 4
        finally:
            await store.close()
    connection = await asyncpg.connect(postgres_url)
    try:
        messages = await connection.fetchval("SELECT SUM(messages) FROM channel_buckets")
        flushes = await connection.fetchval("SELECT COUNT(*) FROM statistics_flushes")
    finally:
        await connection.close()
    assert messages == 4 and flushes == 2
