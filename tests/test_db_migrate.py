"""`moodring db migrate-to` (the URL in MOODRING_TARGET_DATABASE) for real: a SQLite database filled through the
store is copied into a fresh PostgreSQL database by the command line, which checks counts and totals; the bot then
sees the same settings, statistics, schedules and corrections there (a member still can't correct a message twice);
a second run is refused unless forced, and forced doubles nothing. Errors are one line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
from postgres_fixtures import PostgresServer

from bot.store import ChannelSettings, Correction, Store, open_store
from bot.store.interface import bucket_start
from bot.store.postgres import PostgresStore

REPO = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
H = 3600
T0 = bucket_start(1_700_000_000.0)
MEMBER = 123456789012345678
MEMBER_KEY = bytes(range(32))  # the deployment key of member hashes (bot/store/member_key.py)


def migrate(url: str, database: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """`moodring db migrate-to` with the URL, password and all, in the environment (never on argv)."""
    return subprocess.run(
        [sys.executable, "-m", "moodring", "db", "migrate-to", "--database", str(database), *options],
        cwd=REPO,
        env={**CHILD_ENV, "MOODRING_TARGET_DATABASE": url},
        capture_output=True,
        text=True,
        timeout=120,
    )


def correction(guild: int, text: str) -> Correction:
    return Correction(guild, 20, text, ("joy",), ("neutral", "joy"), "v1", T0 + 5)


async def fill(path: Path) -> None:
    async with await open_store(path, flush_interval=3600, member_key=MEMBER_KEY) as store:
        await store.set_channel_settings(1, 10, analysis=False)
        await store.set_channel_settings(1, 11, reactions=True)
        await store.set_retention_days(1, 30)
        await store.set_corrections_enabled(1, True)
        for i in range(40):
            store.record(1, 10 + i % 3, [("joy", 0.5), ("anger", 0.125)][: 1 + i % 2], at=T0 + (i % 5) * H)
        store.record(2, 5, [("fear", 0.75)], at=T0)
        await store.flush()
        daily = await store.upsert_schedule(1, 30, "daily", hour=9)
        await store.claim_slot(daily.id, T0, T0 + 60)
        await store.upsert_schedule(2, 31, "every", every_hours=6, source_channel_id=5)
        assert await store.add_correction(correction(1, "so skibbly"), message_key="m1", member_id=MEMBER) == "stored"


async def snapshot(store: Store) -> dict:
    return {
        "mood": [await store.mood(g, None, 0, T0 + 10 * H) for g in (1, 2)],
        "timeline": await store.timeline(1, None, 0, T0 + 10 * H),
        "settings": [await store.guild_channel_settings(g) for g in (1, 2)],
        "retention": await store.retention_days(1),
        "corrections_enabled": await store.corrections_enabled(1),
        "schedules": await store.schedules(1) + await store.schedules(2),
        "corrections": await store.corrections(),
    }


async def test_migrate_to_copies_everything_checks_it_and_can_run_again(tmp_path: Path, postgres_url: str) -> None:
    path = tmp_path / "bot.db"
    await fill(path)
    async with await open_store(path) as store:
        expected = await snapshot(store)

    first = await asyncio.to_thread(migrate, postgres_url, path)
    assert first.returncode == 0, first.stderr
    assert "Every row count and total matches." in first.stdout
    assert "channel_buckets: 16 rows in SQLite, 16 in PostgreSQL; messages 41 / 41" in first.stdout, first.stdout
    assert "moodring-tests" not in first.stdout + first.stderr  # the password is not printed

    second = await asyncio.to_thread(migrate, postgres_url, path, "--force")  # re-run: overwrites, does not add
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout

    # The bot on PostgreSQL hashes members with the key the SQLite bot had (MOODRING_MEMBER_KEY_FILE names it).
    async with await open_store(postgres_url, member_key=MEMBER_KEY) as store:
        assert isinstance(store, PostgresStore)
        assert await snapshot(store) == expected
        assert expected["mood"][0].messages == 40 and expected["schedules"][0].last_posted_at == T0 + 60
        assert await store.channel_settings(1, 10) == ChannelSettings(analysis=False, reactions=False)
        # The hashes came along, and with the same key the member's earlier correction is still recognised.
        assert await store.has_corrected(1, "m1", MEMBER)
        duplicate = await store.add_correction(correction(1, "again"), message_key="m1", member_id=MEMBER)
        assert duplicate == "duplicate"
        # New rows get new ids (the sequences moved past the copied ones).
        assert await store.add_correction(correction(1, "new"), message_key="m2", member_id=MEMBER) == "stored"
        schedule = await store.upsert_schedule(3, 40, "daily", hour=1)
        assert schedule.id > max(s.id for s in expected["schedules"])


async def test_migrate_to_reports_rows_that_are_not_in_the_source(tmp_path: Path, postgres_url: str) -> None:
    path = tmp_path / "bot.db"
    await fill(path)
    async with await open_store(postgres_url) as store:  # a bot already wrote into PostgreSQL
        store.record(9, 9, [("joy", 1.0)], at=T0)
    result = await asyncio.to_thread(migrate, postgres_url, path, "--force")
    assert result.returncode == 1
    assert "MISMATCH" in result.stdout and "Some counts differ" in result.stderr


async def postgres_rows(url: str) -> dict[str, int]:
    """Rows per table of the bot's data in the PostgreSQL database at `url`."""
    connection = await asyncpg.connect(url)
    try:
        return {
            t: await connection.fetchval(f"SELECT COUNT(*) FROM {t}") for t in ("channel_buckets", "summary_schedules")
        }
    finally:
        await connection.close()


async def test_migrate_to_refuses_a_database_in_use_unless_forced(tmp_path: Path, postgres_url: str) -> None:
    """A database a bot already wrote to: refused in one line, nothing written (the counts could not tell an
    overwrite); with --force the copy runs, and reports the rows that are not in the file."""
    path = tmp_path / "bot.db"
    await fill(path)
    async with await open_store(postgres_url, flush_interval=3600) as store:  # a bot already wrote into PostgreSQL
        store.record(1, 10, [("joy", 1.0)], at=T0)  # an hour the SQLite file has too: it would be overwritten
    before = await postgres_rows(postgres_url)
    refused = await asyncio.to_thread(migrate, postgres_url, path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert (
        "already holds the bot's data (channel_buckets: 1 row, emotion_buckets: 1 row)" in refused.stderr
        and "--force" in refused.stderr
    )
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stdout == "" and await postgres_rows(postgres_url) == before
    forced = await asyncio.to_thread(migrate, postgres_url, path, "--force")
    assert forced.returncode == 0, forced.stderr  # its one hour was overwritten by the file's: the counts match
    assert "Every row count and total matches." in forced.stdout


async def test_migrate_to_a_schedule_that_conflicts_is_one_line_and_copies_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    """Forced onto a database with a schedule for the same channel under another id: PostgreSQL refuses the row,
    and that is one line, with nothing copied."""
    path = tmp_path / "bot.db"
    await fill(path)
    async with await open_store(postgres_url) as store:
        await store.upsert_schedule(5, 90, "daily", hour=1)  # id 1, which the file gives to its (1, 30) schedule
        await store.upsert_schedule(1, 30, "daily", hour=2)  # the file's channel, under id 2
    before = await postgres_rows(postgres_url)
    result = await asyncio.to_thread(migrate, postgres_url, path, "--force")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refused the store" in result.stderr and "summary_schedules" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert await postgres_rows(postgres_url) == before


async def test_migrate_to_errors_are_one_line(tmp_path: Path, postgres_server: PostgresServer) -> None:
    path = tmp_path / "bot.db"
    await fill(path)
    cases = [
        (postgres_server.url("postgres", password="wrong-pw"), path, "refused the user or password"),
        (postgres_server.url("no_such_database"), path, "does not exist"),
        ("mysql://bot@db/x", path, "is not a postgresql://"),
        (postgres_server.create_database(), tmp_path / "missing.db", "no such SQLite file"),
    ]
    for url, database, expected in cases:
        result = await asyncio.to_thread(migrate, url, database)
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "wrong-pw" not in result.stderr
    assert not (tmp_path / "missing.db").exists()


async def test_migrate_to_refuses_a_file_a_bot_is_using(tmp_path: Path, postgres_url: str) -> None:
    path = tmp_path / "bot.db"
    await fill(path)
    async with await open_store(path):  # holds the one-bot lock, like a running bot
        result = await asyncio.to_thread(migrate, postgres_url, path)
    assert result.returncode == 2 and "in use by another moodring process" in result.stderr, result.stderr
    connection = await asyncpg.connect(postgres_url)
    try:
        tables = await connection.fetchval("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await connection.close()
    assert tables == 0  # nothing was copied
