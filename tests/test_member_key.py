"""One deployment key for member hashes (issue 21): a correction's member hash is an HMAC with a key kept outside the
database (MOODRING_MEMBER_KEY_FILE), so whoever holds the database alone cannot link a correction back to its member
by hashing member ids against message ids. SQLite creates the key on first run (mode 0600); PostgreSQL refuses to
start without one, with one line saying how to make it; existing rows migrate as HMAC(key, old hash) and the old
salt is deleted. On a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from postgres_fixtures import raw_rows as rows

from bot.config import BotConfig, ConfigError
from bot.store import Correction, PermanentStoreError, is_postgres_url, open_store
from bot.store.migrate import load_scripts

REPO = Path(__file__).resolve().parents[1]
MEMBER = 123456789012345678
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def correction(guild: int = 1) -> Correction:
    return Correction(guild, 2, "so skibbly", ("excitement",), ("neutral", "joy"), "v1", 1_700_000_000.0)


def keyed(key: bytes, guild: int, message_key: str, member: int) -> str:
    return hmac.new(key, f"{guild}:{message_key}:{member}".encode(), hashlib.sha256).hexdigest()


async def test_a_member_hash_is_an_hmac_with_the_deployment_key(store_database: str) -> None:
    async with await open_store(store_database, member_key=KEY) as store:
        await store.set_corrections_enabled(1, True)
        assert await store.add_correction(correction(), message_key="m1", member_id=MEMBER) == "stored"
        assert await store.has_corrected(1, "m1", MEMBER)
    assert await rows(store_database, "SELECT dedup_hash FROM corrections") == [(keyed(KEY, 1, "m1", MEMBER),)]
    assert await rows(store_database, "SELECT name FROM store_secrets") == []  # nothing to hash with in the database
    async with await open_store(store_database, member_key=OTHER_KEY) as store:  # the database alone links nothing
        assert not await store.has_corrected(1, "m1", MEMBER)


async def old_database(database: str) -> bytes:
    """A database as the bot left it before the deployment key: schema version 3, its salt in `store_secrets`, and
    two corrections hashed with it (one already pruned to NULL); the salt."""
    salt = bytes(range(100, 132))
    old = hashlib.sha256(salt + f"1:m1:{MEMBER}".encode()).hexdigest()
    insert = (
        "INSERT INTO corrections (guild_id, channel_id, text, labels, model_labels, model_version, created_at, "
        "dedup_hash) VALUES (1, 2, 'so skibbly', 'joy', 'neutral', 'v1', 1.0, {hash})"
    )
    if not is_postgres_url(database):
        with sqlite3.connect(database) as con:
            for version, script in enumerate(load_scripts("sqlite")[:3], start=1):
                con.executescript(script)
                con.execute(f"PRAGMA user_version = {version}")
            con.execute("UPDATE store_secrets SET value = ? WHERE name = 'corrections_salt'", (salt,))
            con.execute(insert.format(hash=f"'{old}'"))
            con.execute(insert.format(hash="NULL"))
        return salt
    connection = await asyncpg.connect(database)
    try:
        await connection.execute("CREATE TABLE moodring_schema (version INTEGER NOT NULL)")
        for script in load_scripts("postgres")[:3]:
            await connection.execute(script)
        await connection.execute("INSERT INTO moodring_schema (version) VALUES (3)")
        await connection.execute("UPDATE store_secrets SET value = $1 WHERE name = 'corrections_salt'", salt)
        await connection.execute(insert.format(hash=f"'{old}'"))
        await connection.execute(insert.format(hash="NULL"))
    finally:
        await connection.close()
    return salt


async def test_existing_hashes_migrate_as_an_hmac_of_the_old_hash_and_the_salt_is_deleted(
    store_database: str,
) -> None:
    salt = await old_database(store_database)
    old = hashlib.sha256(salt + f"1:m1:{MEMBER}".encode()).hexdigest()
    async with await open_store(store_database, member_key=KEY) as store:
        assert len(await store.corrections()) == 2
    migrated = hmac.new(KEY, old.encode(), hashlib.sha256).hexdigest()
    assert sorted(await rows(store_database, "SELECT dedup_hash FROM corrections"), key=str) == sorted(
        [(migrated,), (None,)], key=str
    )
    assert await rows(store_database, "SELECT name FROM store_secrets") == []
    async with await open_store(store_database, member_key=KEY) as store:  # done once: opening again changes nothing
        assert len(await store.corrections()) == 2
    assert (migrated,) in await rows(store_database, "SELECT dedup_hash FROM corrections")


async def test_sqlite_creates_its_key_on_first_run_with_mode_0600_and_keeps_it(tmp_path: Path) -> None:
    database = tmp_path / "bot.db"
    key_file = tmp_path / "bot.db.member-key"  # beside the database unless MOODRING_MEMBER_KEY_FILE names one
    config = BotConfig(token="t", database=database)
    assert config.member_key_path == key_file and not key_file.exists()
    async with await open_store(database, member_key=config.member_key()) as store:
        await store.set_corrections_enabled(1, True)
        await store.add_correction(correction(), message_key="m1", member_id=MEMBER)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_bytes()
    assert len(key.strip()) >= 32 and config.member_key() == key.strip()
    async with await open_store(database, member_key=config.member_key()) as store:  # the next start: the same key
        assert await store.has_corrected(1, "m1", MEMBER)
    assert key_file.read_bytes() == key
    named = tmp_path / "keys" / "member.key"  # MOODRING_MEMBER_KEY_FILE with SQLite: made there on first run
    config = BotConfig.from_env(
        {"MOODRING_DATABASE": str(database), "MOODRING_MEMBER_KEY_FILE": str(named)}, require_token=False
    )
    assert config.member_key() == named.read_bytes().strip() != key.strip()
    assert stat.S_IMODE(named.stat().st_mode) == 0o600


async def test_postgresql_without_a_key_refuses_to_start_with_one_line_that_says_how_to_make_it(
    postgres_url: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as error:
        BotConfig.from_env({"MOODRING_DATABASE": postgres_url}, require_token=False)
    assert "MOODRING_MEMBER_KEY_FILE" in str(error.value) and "openssl rand" in str(error.value)
    assert "\n" not in str(error.value)

    missing = tmp_path / "no-such.key"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "DISCORD_TOKEN": "not-a-token",
        "MOODRING_DATABASE": postgres_url,
        "MOODRING_MEMBER_KEY_FILE": str(missing),
        "MOODRING_TRAIN_ON_START": "false",
    }
    result = subprocess.run(
        [sys.executable, "-m", "moodring", "run"], env=env, capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("moodring:")]
    assert str(missing) in line and "openssl rand" in line and "Traceback" not in result.stderr
    assert not missing.exists()  # PostgreSQL never makes one: every process must use the same key

    with pytest.raises(PermanentStoreError):  # the store itself hashes nobody without a key
        async with await open_store(postgres_url) as store:
            await store.has_corrected(1, "m1", MEMBER)
