"""A member's opt-out in the store (issue 21), on a real SQLite file and a real PostgreSQL database: what is kept is
the keyed hash of the member id (per user, across all servers) until they opt in again; the choice survives a
restart, guild deletions (`forget_guild`, `remove_guild`) leave it, the SQLite-to-PostgreSQL transfer carries it, and
a second store on the same database honours it within its refresh interval, from memory."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from postgres_fixtures import raw_rows as rows

from bot.store import PermanentStoreError, is_postgres_url, open_store
from bot.store.transfer import copy_sqlite_to_postgres

MEMBER = 123456789012345678
OTHER = 223456789012345678
KEY = bytes(range(32))
#: Within what every process must honour an opt-out (docs/privacy.md).
PROMISED_S = 10.0


def opt_out_hash(key: bytes, member: int) -> str:
    return hmac.new(key, f"opt-out:{member}".encode(), hashlib.sha256).hexdigest()


def shared(database: str) -> dict[str, object]:
    """Options to open a second store on the same database (SQLite's one-bot lock is for bots, not tests)."""
    return {} if is_postgres_url(database) else {"exclusive": False}


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `predicate` every 5 ms until it holds; the seconds it took. `TimeoutError` naming `what` otherwise."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def test_an_opt_out_keeps_the_keyed_hash_of_the_member_until_they_opt_in(store_database: str) -> None:
    async with await open_store(store_database, member_key=KEY) as store:
        assert not store.is_opted_out(MEMBER)
        assert await store.set_opted_out(MEMBER, True)  # changed
        assert not await store.set_opted_out(MEMBER, True)  # already
        assert store.is_opted_out(MEMBER) and not store.is_opted_out(OTHER)
        stored = await rows(store_database, "SELECT digest FROM opt_outs")
        assert stored == [(opt_out_hash(KEY, MEMBER),)]  # no member id: the hash with the deployment key
        assert await store.set_opted_out(MEMBER, False)
        assert not await store.set_opted_out(MEMBER, False)
        assert not store.is_opted_out(MEMBER)
    assert await rows(store_database, "SELECT digest FROM opt_outs") == []  # nothing kept after opting in


async def test_a_store_without_the_member_key_cannot_tell_or_record_an_opt_out(store_database: str) -> None:
    async with await open_store(store_database) as store:
        with pytest.raises(PermanentStoreError, match="member key"):
            store.is_opted_out(MEMBER)
        with pytest.raises(PermanentStoreError, match="member key"):
            await store.set_opted_out(MEMBER, True)


async def test_the_choice_survives_a_restart_and_every_guild_deletion(store_database: str) -> None:
    async with await open_store(store_database, member_key=KEY) as store:
        await store.set_opted_out(MEMBER, True)
    async with await open_store(store_database, member_key=KEY) as store:
        assert store.is_opted_out(MEMBER)  # loaded at open
        await store.set_corrections_enabled(1, True)
        store.record(1, 2, [("joy", 0.5)])
        await store.flush()
        await store.forget_guild(1)
        await store.remove_guild(1)
        assert store.is_opted_out(MEMBER)
    async with await open_store(store_database, member_key=KEY) as store:
        assert store.is_opted_out(MEMBER) and not store.is_opted_out(OTHER)


async def test_a_second_store_on_the_database_honours_an_opt_out_within_its_refresh_interval(
    store_database: str,
) -> None:
    """Two stores on one database stand for two processes of a cluster: the second learns of the first's opt-out
    (and opt-in) from its poll of the change counter, within its interval, and answers from memory meanwhile."""
    options = {"member_key": KEY, "opt_out_refresh_s": 0.2}
    async with (
        await open_store(store_database, **options) as first,
        await open_store(store_database, **options, **shared(store_database)) as second,
    ):
        assert not second.is_opted_out(MEMBER)
        await first.set_opted_out(MEMBER, True)
        took = await wait_until(lambda: second.is_opted_out(MEMBER), PROMISED_S, "the opt-out seen by the second")
        assert took < PROMISED_S
        await first.set_opted_out(OTHER, True)
        await first.set_opted_out(MEMBER, False)
        await wait_until(
            lambda: not second.is_opted_out(MEMBER) and second.is_opted_out(OTHER), PROMISED_S, "both changes seen"
        )
        reloads = second.opt_out_reloads
        # Nothing changed: the polls go on, but none reloads the opt-outs.
        polls = second.opt_out_polls
        await wait_until(lambda: second.opt_out_polls >= polls + 3, PROMISED_S, "three more polls")
        assert second.opt_out_reloads == reloads


async def test_a_failing_poll_keeps_the_known_opt_outs_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bot.db"
    async with await open_store(path, member_key=KEY, opt_out_refresh_s=0.05) as store:
        await store.set_opted_out(MEMBER, True)
        with sqlite3.connect(path) as con:
            con.execute("ALTER TABLE opt_out_changes RENAME TO moved_away")
        with caplog.at_level(logging.WARNING, logger="bot.store"):
            failures = store.opt_out_poll_failures
            await wait_until(lambda: store.opt_out_poll_failures >= failures + 3, PROMISED_S, "three failed polls")
        assert sum("reading the opt-outs failed" in r.getMessage() for r in caplog.records) == 1
        assert store.is_opted_out(MEMBER)
        with sqlite3.connect(path) as con:
            con.execute("ALTER TABLE moved_away RENAME TO opt_out_changes")
        polls = store.opt_out_polls
        await wait_until(lambda: store.opt_out_polls > polls, PROMISED_S, "a poll that works again")
        assert store.is_opted_out(MEMBER)


async def test_the_transfer_to_postgresql_carries_the_opt_outs(tmp_path: Path, postgres_url: str) -> None:
    path = tmp_path / "bot.db"
    async with await open_store(path, member_key=KEY) as store:
        await store.set_opted_out(MEMBER, True)
    checks = await copy_sqlite_to_postgres(path, postgres_url)
    assert all(check.matches for check in checks)
    assert {check.table: check.postgres_rows for check in checks}["opt_outs"] == 1
    async with await open_store(postgres_url, member_key=KEY) as store:
        assert store.is_opted_out(MEMBER) and not store.is_opted_out(OTHER)
        assert await store.set_opted_out(MEMBER, False)
