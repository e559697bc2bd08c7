"""The real bot's use of its database through the stand-in: what reaches the file (a sentinel message scanned
for in every table and in the raw bytes of the file, its WAL and its shared memory), and a message path that
never reads SQLite, so it does not queue behind a prune."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

from bot_fixtures import BotFactory, wait_until
from test_bot_emotions import OUTCOMES

from bot.app import MoodringBot
from sandbox import DiscordStandIn

SENTINEL = "Quokkaberry7731"  # one token nobody else writes


def outcomes(bot: MoodringBot) -> int:
    return sum(bot.counters[name] for name in OUTCOMES)


def database_files(database: Path) -> dict[str, bytes]:
    """The file and everything SQLite (or the bot) keeps beside it: -wal, -shm, -journal, the lock file."""
    return {p.name: p.read_bytes() for p in sorted(database.parent.glob(database.name + "*")) if p.is_file()}


def traces(needles: dict[str, bytes], files: dict[str, bytes]) -> list[str]:
    """Which needle appears in which file's raw bytes, case-insensitively for text."""
    found = []
    for name, data in files.items():
        lowered = data.lower()
        for what, needle in needles.items():
            if needle in data or needle.lower() in lowered:
                found.append(f"{what} in {name}")
    return found


def rows_mentioning(database: Path, values: dict[str, object]) -> list[str]:
    """Every value of every row of every table, compared to each of `values` (text: as a substring)."""
    found = []
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as con:
        tables = [row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in con.execute(f"SELECT * FROM {table}"):
                for cell in row:
                    for what, value in values.items():
                        text = cell.decode("utf-8", "replace") if isinstance(cell, bytes) else str(cell)
                        if cell == value or str(value).lower() in text.lower():
                            found.append(f"{what} in {table}: {row}")
    return found


async def test_a_sentinel_message_leaves_no_trace_in_the_database(
    discord_standin: DiscordStandIn, make_moodring_bot: BotFactory, caplog
) -> None:
    """A message goes through auto-analysis, the statistics flush and a scheduled summary; then neither its
    text nor its author's or its own id is anywhere in the tables or in the bytes of the database files."""
    guild, channel = discord_standin.guild_id, discord_standin.channel_id
    caplog.set_level(logging.INFO)  # what `moodring run` logs (discord.py's DEBUG log has gateway payloads)
    caplog.set_level(logging.DEBUG, logger="bot")
    async with make_moodring_bot() as bot:
        database = bot.config.database
        message = await discord_standin.dispatch_message(
            content=f"{SENTINEL} I am so happy and grateful for this, thank you!"
        )
        await wait_until(lambda: bot.counters["analyzed"] == 1, what="the sentinel message analysed")
        await bot.store.flush()
        await bot.store.upsert_schedule(guild, channel, "every", every_hours=1)
        assert await bot.get_cog("Mood").post_due_summaries(bot.clock()) == 1
        summary = await discord_standin.wait_for_request(route="/channels/{channel_id}/messages", method="POST")
        assert "1 messages analysed" in summary.json["embeds"][0]["description"]  # the message did go through

        author_id, message_id = discord_standin.user_id, int(message["id"])
        needles = {
            "text": SENTINEL.encode(),
            "text (UTF-16)": SENTINEL.encode("utf-16-le"),
            "author id": str(author_id).encode(),
            "author id (integer)": author_id.to_bytes(8, "big"),
            "message id": str(message_id).encode(),
            "message id (integer)": message_id.to_bytes(8, "big"),
        }
        running = database_files(database)
        assert f"{database.name}-wal" in running and len(running[f"{database.name}-wal"]) > 0  # it was scanned
        assert traces(needles, running) == []
        values = {"text": SENTINEL, "author id": author_id, "message id": message_id}
        assert rows_mentioning(database, values) == []
    closed = database_files(database)  # after the last checkpoint into the main file
    assert closed and traces(needles, closed) == []
    assert rows_mentioning(database, values) == []
    assert SENTINEL.lower() not in caplog.text.lower()


async def test_the_message_path_reads_no_settings_from_sqlite_while_a_prune_waits(
    discord_standin: DiscordStandIn, moodring_bot: MoodringBot
) -> None:
    """200 messages arrive while a prune holds the store's connection (it waits for another program's write
    lock): every one is analysed before the prune ends, and not one SQL statement runs for them."""
    bot, store = moodring_bot, moodring_bot.store
    statements: list[str] = []
    await store._db.set_trace_callback(statements.append)
    await store._db.execute("PRAGMA busy_timeout = 120000")  # the prune waits as long as the test holds the lock
    blocker = sqlite3.connect(bot.config.database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    statements.clear()
    prune = asyncio.create_task(store.prune(bot.clock()))
    try:
        await wait_until(lambda: "BEGIN IMMEDIATE" in statements, what="the prune waiting for the write lock")
        during_prune = len(statements)
        for i in range(200):
            await discord_standin.dispatch_message(content=f"message {i}: I love this, thank you so much!")
            await asyncio.sleep(0)  # let the loop turn between frames, as between frames from Discord
        await wait_until(lambda: outcomes(bot) == 200, timeout=60, what="all 200 messages handled")
        assert not prune.done()
        assert bot.counters["analyzed"] + bot.counters["skipped_busy"] == 200, dict(bot.counters)
        assert statements[during_prune:] == []
        assert store.pending == bot.counters["analyzed"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        await prune
    await store.flush()
    assert (await store.mood(discord_standin.guild_id, None, 0, bot.clock() + 3600)).messages == bot.counters[
        "analyzed"
    ]
