"""Community corrections in bot.store against a real SQLite file and a real PostgreSQL database: opt-in per
guild, one correction per member per message through a keyed hash (no user id stored), and forget, clear, prune
and guild removal."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest

from bot.config import BotConfig
from bot.store import Correction, is_postgres_url, open_store
from bot.store.sqlite import MIGRATIONS

DAY = 86400
T0 = 1_700_000_000.0
MEMBER = 123456789012345678
TEXT = "that new skin is so skibbly"
MEMBER_KEY = bytes(range(32))  # the deployment key of member hashes (bot/store/member_key.py)


def correction(guild: int = 1, text: str = TEXT, labels: tuple[str, ...] = ("excitement",), at: float = T0):
    return Correction(
        guild_id=guild,
        channel_id=2,
        text=text,
        labels=labels,
        model_labels=("neutral", "approval", "joy"),
        model_version="2026-11-30T08:00:00",
        created_at=at,
    )


def file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")) if p.is_file())


async def stored_bytes(database: str) -> bytes:
    """Everything the database holds: the SQLite files' bytes, or every PostgreSQL table's rows as text."""
    if not is_postgres_url(database):
        return file_bytes(Path(database))
    connection = await asyncpg.connect(database)
    try:
        tables = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        rows = [await connection.fetch(f"SELECT row_to_json(t)::text FROM {name} AS t") for (name,) in tables]
    finally:
        await connection.close()
    return "\n".join(row[0] for table in rows for row in table).encode()


async def salts(database: str) -> list[bytes]:
    sql = "SELECT value FROM store_secrets WHERE name = 'corrections_salt'"
    if not is_postgres_url(database):
        with sqlite3.connect(database) as con:
            return [bytes(row[0]) for row in con.execute(sql)]
    connection = await asyncpg.connect(database)
    try:
        return [bytes(row[0]) for row in await connection.fetch(sql)]
    finally:
        await connection.close()


async def count(database: str, sql: str) -> int:
    if not is_postgres_url(database):
        with sqlite3.connect(database) as con:
            return con.execute(sql).fetchone()[0]
    connection = await asyncpg.connect(database)
    try:
        return await connection.fetchval(sql)
    finally:
        await connection.close()


async def test_corrections_are_off_by_default_and_nothing_is_kept_while_off(store_database: str) -> None:
    path = store_database
    async with await open_store(path, member_key=MEMBER_KEY) as store:
        assert await store.corrections_enabled(1) is False
        assert await store.add_correction(correction(), message_key="m1", member_id=MEMBER) == "disabled"
        assert await store.corrections(1) == []
        await store.set_corrections_enabled(1, True)
        await store.set_retention_days(1, 30)  # the two guild settings do not overwrite each other
        assert await store.corrections_enabled(1) is True and await store.retention_days(1) == 30
        assert await store.corrections_enabled(2) is False
        await store.set_corrections_enabled(1, False)
        assert await store.add_correction(correction(), message_key="m1", member_id=MEMBER) == "disabled"
        assert await store.retention_days(1) == 30
    assert TEXT.encode() not in await stored_bytes(path)


async def test_one_correction_per_member_per_message_without_storing_the_member(store_database: str) -> None:
    path = store_database
    async with await open_store(path, member_key=MEMBER_KEY) as store:
        await store.set_corrections_enabled(1, True)
        assert not await store.has_corrected(1, "m1", MEMBER)
        assert await store.add_correction(correction(), message_key="m1", member_id=MEMBER) == "stored"
        assert await store.has_corrected(1, "m1", MEMBER)
        assert await store.add_correction(correction(labels=("joy",)), message_key="m1", member_id=MEMBER) == (
            "duplicate"
        )
        # Another member, or another message, is a new correction.
        assert await store.add_correction(correction(), message_key="m1", member_id=MEMBER + 1) == "stored"
        assert await store.add_correction(correction(), message_key="m2", member_id=MEMBER) == "stored"
        kept = await store.corrections(1)
        assert [c.labels for c in kept] == [("excitement",)] * 3 and kept[0] == correction()
        with pytest.raises(ValueError):
            await store.add_correction(correction(labels=()), message_key="m3", member_id=MEMBER)
        with pytest.raises(ValueError):
            await store.add_correction(correction(labels=("a", "b", "c", "d")), message_key="m3", member_id=MEMBER)
    data = await stored_bytes(path)
    assert str(MEMBER).encode() not in data and MEMBER.to_bytes(8, "big") not in data
    assert await salts(path) == []  # no salt in the database: the hashes are keyed outside it (issue 21)


async def test_each_file_has_its_own_key(tmp_path: Path) -> None:
    """The same member and message give different hashes in two files (each SQLite bot's own key, made beside its
    file): a hash cannot be looked up elsewhere."""
    hashes = []
    for name in ("a.db", "b.db"):
        member_key = BotConfig(token="t", database=tmp_path / name).member_key()
        async with await open_store(tmp_path / name, member_key=member_key) as store:
            await store.set_corrections_enabled(1, True)
            await store.add_correction(correction(), message_key="m1", member_id=MEMBER)
        with sqlite3.connect(tmp_path / name) as con:
            hashes.append(con.execute("SELECT dedup_hash FROM corrections").fetchone()[0])
    assert hashes[0] != hashes[1]


async def test_prune_erases_the_hashes_after_retention_and_keeps_the_corrections(store_database: str) -> None:
    now = T0 + 100 * DAY
    path = store_database
    async with await open_store(path, member_key=MEMBER_KEY) as store:
        for guild in (1, 2):
            await store.set_corrections_enabled(guild, True)
        await store.set_retention_days(1, 7)
        await store.add_correction(correction(1, at=now - 8 * DAY), message_key="old", member_id=MEMBER)
        await store.add_correction(correction(1, at=now - 2 * DAY), message_key="new", member_id=MEMBER)
        await store.add_correction(correction(2, at=now - 30 * DAY), message_key="old", member_id=MEMBER)  # 90 days
        assert await store.prune(now) == 1
        assert await store.prune(now) == 0
        assert not await store.has_corrected(1, "old", MEMBER)
        assert await store.has_corrected(1, "new", MEMBER) and await store.has_corrected(2, "old", MEMBER)
        assert len(await store.corrections(1)) == 2  # the corrections stay until an admin deletes them
    assert await count(path, "SELECT COUNT(*) FROM corrections WHERE dedup_hash IS NULL") == 1


async def test_forget_clear_and_guild_removal_delete_only_that_guilds_corrections(store_database: str) -> None:
    async with await open_store(store_database, member_key=MEMBER_KEY) as store:
        for guild in (1, 7):
            await store.set_corrections_enabled(guild, True)
        for key in ("a", "b"):
            await store.add_correction(correction(1), message_key=key, member_id=MEMBER)
        await store.add_correction(correction(7), message_key="a", member_id=MEMBER)

        assert await store.clear_corrections(1) == 2
        assert await store.corrections(1) == [] and len(await store.corrections(7)) == 1
        assert await store.corrections_enabled(1)  # clearing keeps the setting

        await store.add_correction(correction(1), message_key="c", member_id=MEMBER)
        assert await store.forget_guild(1) == 1
        assert await store.corrections(1) == []

        await store.add_correction(correction(1), message_key="d", member_id=MEMBER)
        assert await store.remove_guild(1) >= 2  # the correction and the guild's settings row
        assert await store.corrections(1) == [] and not await store.corrections_enabled(1)
        assert [c.guild_id for c in await store.corrections()] == [7]


async def test_a_version_2_file_gets_the_corrections_table_and_keeps_its_settings(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    with sqlite3.connect(path, isolation_level=None) as con:
        for script in MIGRATIONS[:2]:
            con.executescript(script)
        con.execute("PRAGMA user_version = 2")
        con.execute("INSERT INTO guild_settings (guild_id, retention_days) VALUES (5, 14)")
    async with await open_store(path, member_key=MEMBER_KEY) as store:
        assert await store.retention_days(5) == 14 and not await store.corrections_enabled(5)
        await store.set_corrections_enabled(5, True)
        assert await store.add_correction(correction(5), message_key="m", member_id=MEMBER) == "stored"
