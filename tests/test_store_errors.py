"""The store's one error taxonomy (bot/store/errors.py), on real databases: every public method of both engines
raises only `StoreError`s, of the right kind. PostgreSQL stopped: every call that needs the database is a
`TransientStoreError` (and the store works again once the server is back). The tables dropped behind the store's
back: every call is a `PermanentStoreError`, on both engines. A SQLite file locked by another program: every write is
a `TransientStoreError`, and reads still work. And the start-up failures are of the kind `moodring run` needs to
choose its exit status (75: try again later; 2: fix a setting)."""

from __future__ import annotations

import inspect
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from postgres_fixtures import PostgresServer

from bot.store import (
    Correction,
    PermanentStoreError,
    Store,
    StoreError,
    TransientStoreError,
    is_postgres_url,
    open_store,
)
from bot.store.postgres import PostgresStore
from bot.store.schema import TABLES
from bot.store.sqlite import MIGRATIONS, SqliteStore

NOW = time.time()
CORRECTION = Correction(1, 2, "so happy", ("joy",), ("joy",), "tiny", NOW)
MEMBER_KEY = bytes(range(32))  # the deployment key of member hashes (bot/store/member_key.py)


async def _flush(store: Store) -> int:
    store.record(5, 6, [("joy", 0.5)], at=NOW)  # another guild than the one forgotten and removed below
    return await store.flush()


#: One call of every public method that uses the database.
CALLS: dict[str, Callable[[Store], Awaitable[object]]] = {
    "add_correction": lambda s: s.add_correction(CORRECTION, message_key="m", member_id=3),
    "alert_channels": lambda s: s.alert_channels(1),
    "alert_counts": lambda s: s.alert_counts(1, NOW - 86400, NOW - 3600, NOW),
    "alert_settings": lambda s: s.alert_settings(1),
    "claim_alert": lambda s: s.claim_alert(1, 2, NOW - 3600, NOW),
    "disable_alerts": lambda s: s.disable_alerts(1, "a test"),
    "enabled_alert_settings": lambda s: s.enabled_alert_settings(),
    "claim_slot": lambda s: s.claim_slot(1, NOW - 60, NOW),
    "clear_corrections": lambda s: s.clear_corrections(1),
    "confirm_slot": lambda s: s.confirm_slot(1, NOW),
    "corrections": lambda s: s.corrections(contributing=True),
    "corrections_enabled": lambda s: s.corrections_enabled(1),
    "counted_corrections": lambda s: s.counted_corrections(),
    "delete_schedule": lambda s: s.delete_schedule(1),
    "disable_schedule": lambda s: s.disable_schedule(1, "a test"),
    "flush": _flush,
    "forget_guild": lambda s: s.forget_guild(1),
    "guild_channel_settings": lambda s: s.guild_channel_settings(1),
    "has_corrected": lambda s: s.has_corrected(1, "m", 3),
    "mark_posted": lambda s: s.mark_posted(1, NOW),
    "mood": lambda s: s.mood(1, None, 0, NOW),
    "prune": lambda s: s.prune(NOW),
    "refresh_opt_outs": lambda s: s.refresh_opt_outs(),
    "release_alert": lambda s: s.release_alert(1, 2, NOW, None),
    "release_slot": lambda s: s.release_slot(1, NOW, None),
    "remove_guild": lambda s: s.remove_guild(1),
    "retention_days": lambda s: s.retention_days(1),
    "schedules": lambda s: s.schedules(),
    "set_alert_settings": lambda s: s.set_alert_settings(
        1, mod_channel_id=9, labels=("anger",), sensitivity="medium", role_id=None, enabled=True
    ),
    "set_channel_settings": lambda s: s.set_channel_settings(1, 2, reactions=True),
    "set_corrections_enabled": lambda s: s.set_corrections_enabled(1, True),
    "set_opted_out": lambda s: s.set_opted_out(3, True),
    "set_retention_days": lambda s: s.set_retention_days(1, 30),
    "timeline": lambda s: s.timeline(1, 2, 0, NOW),
    "update_alert_channel": lambda s: s.update_alert_channel(1, 2, more_steps=1),
    "upsert_schedule": lambda s: s.upsert_schedule(1, 2, "daily", hour=9),
}
#: The rest: `open` (tested below), `close` (with a failed flush pending, below), and `channel_settings` and
#: `is_opted_out` (both from memory).
NOT_CALLED = {"open", "close", "channel_settings", "is_opted_out"}
READS = {"alert_channels", "alert_counts", "alert_settings", "corrections", "corrections_enabled",
         "counted_corrections", "enabled_alert_settings", "guild_channel_settings", "has_corrected", "mood",
         "refresh_opt_outs", "retention_days", "schedules", "timeline"}  # fmt: skip


@pytest.mark.parametrize("engine", [SqliteStore, PostgresStore])
def test_every_public_method_is_called(engine: type[Store]) -> None:
    public = {name for name, value in inspect.getmembers(engine) if not name.startswith("_") and callable(value)}
    assert public - {"record"} == set(CALLS) | NOT_CALLED  # `record` only appends to the buffer


async def errors_of(store: Store) -> dict[str, type[BaseException] | None]:
    """What each call raised (None: it returned); anything but a `StoreError` fails the test at once."""
    raised: dict[str, type[BaseException] | None] = {}
    for name, call in CALLS.items():
        try:
            await call(store)
        except StoreError as error:
            raised[name] = type(error)
        else:
            raised[name] = None
    return raised


async def test_with_postgresql_down_every_call_is_a_transient_store_error(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    store = await open_store(postgres_url, flush_interval=3600, member_key=MEMBER_KEY)
    try:
        postgres_server.stop("immediate")
        try:
            assert await errors_of(store) == dict.fromkeys(CALLS, TransientStoreError)
            with pytest.raises(TransientStoreError, match="cannot connect to PostgreSQL"):
                await open_store(postgres_url)
        finally:
            postgres_server.start()
        await store.upsert_schedule(1, 2, "daily", hour=9)  # the same store works again
        assert len(await store.schedules()) == 1
    finally:
        await store.close()
    assert store.flushed_total == 1  # the analysis recorded during the outage


async def test_with_its_tables_gone_every_call_is_a_permanent_store_error(store_database: str) -> None:
    store = await open_store(store_database, flush_interval=3600, member_key=MEMBER_KEY)
    drops = [f"DROP TABLE {table.name}" for table in reversed(TABLES)]  # children first
    if is_postgres_url(store_database):
        connection = await asyncpg.connect(store_database)
        try:
            for drop in drops:
                await connection.execute(drop)
        finally:
            await connection.close()
    else:
        with sqlite3.connect(store_database, isolation_level=None) as con:
            for drop in drops:
                con.execute(drop)
    assert await errors_of(store) == dict.fromkeys(CALLS, PermanentStoreError)
    with pytest.raises(PermanentStoreError):
        await store.close()  # its final flush fails too: the analysis recorded above is lost, and it says so


async def test_a_sqlite_file_locked_by_another_program_fails_each_write_as_transient(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    store = await open_store(path, flush_interval=3600, busy_timeout_ms=50, member_key=MEMBER_KEY)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # e.g. a sqlite3 shell in the middle of a write
    try:
        raised = await errors_of(store)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        await store.close()
    assert raised == {name: None if name in READS else TransientStoreError for name in CALLS}


async def test_start_up_failures_say_whether_to_try_again(
    postgres_server: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    """Transient: the server refuses connections now, or another program holds the SQLite file. Permanent: the
    credentials, the database, the URL, a schema newer than this bot, a damaged file."""
    await (await open_store(postgres_url)).close()
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute("UPDATE moodring_schema SET version = version + 1")
    finally:
        await connection.close()
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as con:
        con.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"this is not a database\n" * 400)
    permanent = {
        postgres_server.url("postgres", password="wrong-pw"): "refused the user or password",
        postgres_server.url("no_such_database"): "does not exist",
        "postgresql://moodring:pw@127.0.0.1:notaport/x": "not a valid PostgreSQL URL",
        postgres_url: "newer than this bot supports",
        newer: "newer than this bot supports",
        damaged: "damaged",
    }
    for database, message in permanent.items():
        with pytest.raises(PermanentStoreError, match=message):
            await open_store(database)
    locked = tmp_path / "locked.db"
    await (await open_store(locked)).close()
    blocker = sqlite3.connect(locked, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(TransientStoreError, match="locked by another program"):
            await open_store(locked, busy_timeout_ms=50)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
