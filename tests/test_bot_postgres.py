"""The real bot on PostgreSQL through the stand-in: a message is analysed, its statistics reach the database and a
scheduled summary counts it; and `moodring run` with credentials PostgreSQL refuses exits with one line. Outages of a
real server that the tests stop and start: a removal from a server during one is retried and deletes every row of
that server once PostgreSQL is back; the summary, alert and retention loops log one line per outage; `moodring run`
exits 75 (try again later) while the server is down, and 2 for a database it must not use."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from bot_fixtures import BotFactory, moodring_config, wait_until
from postgres_fixtures import PASSWORD, PostgresServer

from bot.app import MoodringBot
from bot.cli import _serve
from bot.store import Correction, open_store
from bot.store.postgres import PostgresStore
from sandbox import DiscordStandIn


async def test_the_bot_keeps_its_statistics_and_schedules_in_postgresql(
    discord_standin: DiscordStandIn, make_moodring_bot: BotFactory, postgres_url: str
) -> None:
    guild, channel = discord_standin.guild_id, discord_standin.channel_id
    async with make_moodring_bot(database=postgres_url) as bot:
        assert isinstance(bot.store, PostgresStore)
        await discord_standin.dispatch_message(content="I am so happy and grateful for this, thank you!")
        await wait_until(lambda: bot.counters["analyzed"] == 1, what="the message analysed")
        await bot.store.flush()
        await bot.store.upsert_schedule(guild, channel, "every", every_hours=1)
        assert await bot.get_cog("Mood").post_due_summaries(bot.clock()) == 1
        summary = await discord_standin.wait_for_request(route="/channels/{channel_id}/messages", method="POST")
        assert "1 messages analysed" in summary.json["embeds"][0]["description"]
    connection = await asyncpg.connect(postgres_url)
    try:
        assert await connection.fetchval("SELECT SUM(messages) FROM channel_buckets WHERE guild_id = $1", guild) == 1
        assert await connection.fetchval("SELECT COUNT(*) FROM summary_schedules WHERE last_posted_at IS NOT NULL") == 1
    finally:
        await connection.close()


async def test_moodring_run_with_refused_credentials_exits_with_one_line(
    discord_standin: DiscordStandIn,
    tiny_model_dir: Path,
    tmp_path: Path,
    postgres_server: PostgresServer,
    capsys: pytest.CaptureFixture,
) -> None:
    url = postgres_server.url("postgres", password="wrong-pw")
    config = moodring_config(discord_standin, tiny_model_dir, tmp_path, database=url)
    assert await asyncio.wait_for(_serve(MoodringBot(config)), 60) == 2
    err = capsys.readouterr().err
    assert err.startswith("moodring: ") and err.count("\n") == 1, err
    assert "refused the user or password" in err and "wrong-pw" not in err and "Traceback" not in err


# ---------------------------------------------------------------- PostgreSQL outages


@contextlib.contextmanager
def postgres_down(server: PostgresServer) -> Iterator[None]:
    """The session's server stopped for the block (as `pg_ctl stop` does), and started again after it."""
    server.stop()
    try:
        yield
    finally:
        server.start()


#: Every table that holds rows of a guild.
GUILD_TABLES = ("channel_settings", "guild_settings", "summary_schedules", "channel_buckets", "emotion_buckets",
                "corrections")  # fmt: skip


async def rows_of_guild(url: str, guild_id: int) -> dict[str, int]:
    """How many rows each table holds for the guild, read over a connection of the test's own."""
    connection = await asyncpg.connect(url)
    try:
        return {
            t: await connection.fetchval(f"SELECT COUNT(*) FROM {t} WHERE guild_id = $1", guild_id)
            for t in GUILD_TABLES
        }
    finally:
        await connection.close()


async def test_a_removal_during_an_outage_is_retried_and_deletes_the_servers_data(
    discord_standin: DiscordStandIn,
    make_moodring_bot: BotFactory,
    postgres_server: PostgresServer,
    postgres_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The bot is removed from a server while PostgreSQL is down: one warning, no traceback, and once the server is
    back the removal is retried and every row of that server is gone (its corrections opt-in with them), while
    another server's rows stay."""
    guild, channel, other = discord_standin.guild_id, discord_standin.channel_id, 4242
    async with make_moodring_bot(database=postgres_url) as bot:
        store = bot.store
        for g in (guild, other):
            await store.set_channel_settings(g, channel, reactions=True)
            await store.set_corrections_enabled(g, True)
            await store.upsert_schedule(g, channel, "daily", hour=9)
            store.record(g, channel, [("joy", 0.9)])
            correction = Correction(g, channel, "so happy", ("joy",), ("joy",), "tiny", time.time())
            assert await store.add_correction(correction, message_key="m1", member_id=7) == "stored"
        await store.flush()
        everything = dict.fromkeys(GUILD_TABLES, 1)
        assert await rows_of_guild(postgres_url, guild) == everything
        housekeeping = bot.get_cog("Housekeeping")
        with caplog.at_level(logging.INFO, logger="bot.cogs"):
            with postgres_down(postgres_server):
                await discord_standin.dispatch("GUILD_DELETE", {"id": str(guild)}, guild_id=guild)
                await wait_until(lambda: bot.get_guild(guild) is None, what="the guild removed")
                await wait_until(
                    lambda: guild in housekeeping.removals_due, timeout=30, what="the failed removal noted"
                )
            housekeeping.removals.change_interval(seconds=0.05)  # the next tick comes at once
            await wait_until(lambda: not housekeeping.removals_due, timeout=60, what="the removal retried")
        assert await rows_of_guild(postgres_url, guild) == dict.fromkeys(GUILD_TABLES, 0)
        assert not await store.corrections_enabled(guild) and await store.corrections(contributing=True) != []
        assert await rows_of_guild(postgres_url, other) == everything
    warnings = [r for r in caplog.records if r.name.startswith("bot.cogs") and r.levelno >= logging.WARNING]
    assert all(r.exc_info is None for r in warnings), [r.getMessage() for r in warnings]  # lines, no traceback
    noted = [r for r in warnings if f"removed from guild {guild}, but could not delete its data yet" in r.getMessage()]
    assert len(noted) == 1, [r.getMessage() for r in warnings]
    assert any(f"deleted the data of guild {guild}" in r.getMessage() for r in caplog.records)


async def test_the_summary_alert_and_retention_loops_log_one_line_per_outage(
    discord_standin: DiscordStandIn,
    make_moodring_bot: BotFactory,
    postgres_server: PostgresServer,
    postgres_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While PostgreSQL is down the loops fail tick after tick: one warning each (no traceback), and one line each
    when the server is back."""
    async with make_moodring_bot(database=postgres_url) as bot:
        summaries, housekeeping, alerts = bot.get_cog("Mood"), bot.get_cog("Housekeeping"), bot.get_cog("Alerts")
        backoffs = (summaries.summary_backoff, housekeeping.retention_backoff, alerts.backoff)
        with caplog.at_level(logging.DEBUG, logger="bot.cogs"):
            with postgres_down(postgres_server):
                summaries.summaries.change_interval(seconds=0.05)
                housekeeping.retention.change_interval(seconds=0.05)
                alerts.alerts.change_interval(seconds=0.05)
                await wait_until(
                    lambda: all(backoff.total_failures >= 3 for backoff in backoffs),
                    timeout=60,
                    what="three failed ticks of each loop",
                )
            await wait_until(
                lambda: not any(backoff.failing for backoff in backoffs), timeout=60, what="the loops working again"
            )
    records = [r for r in caplog.records if r.name.startswith("bot.cogs")]
    warnings = [r for r in records if r.levelno >= logging.WARNING]
    assert sorted(r.getMessage().split(" failed: ")[0] for r in warnings) == [
        "checking mood alerts",
        "posting scheduled summaries",
        "the retention prune",
    ], [r.getMessage() for r in warnings]
    assert all(r.exc_info is None for r in warnings), [r.getMessage() for r in warnings]
    assert sum("works again" in r.getMessage() for r in records) == 3


async def test_moodring_run_while_postgresql_is_down_exits_75_with_one_line(
    discord_standin: DiscordStandIn,
    tiny_model_dir: Path,
    tmp_path: Path,
    postgres_server: PostgresServer,
    postgres_url: str,
    capsys: pytest.CaptureFixture,
) -> None:
    """Cannot connect now is EX_TEMPFAIL (75: try again later), for a supervisor to restart it with back-off."""
    config = moodring_config(discord_standin, tiny_model_dir, tmp_path, database=postgres_url)
    with postgres_down(postgres_server):
        assert await asyncio.wait_for(_serve(MoodringBot(config)), 60) == 75
    err = capsys.readouterr().err
    assert err.startswith("moodring: ") and err.count("\n") == 1, err
    assert "cannot connect to PostgreSQL" in err and PASSWORD not in err and "Traceback" not in err


async def test_moodring_run_keeps_exit_2_for_a_database_it_must_not_use(
    discord_standin: DiscordStandIn,
    tiny_model_dir: Path,
    tmp_path: Path,
    postgres_server: PostgresServer,
    postgres_url: str,
    capsys: pytest.CaptureFixture,
) -> None:
    """A missing database, or one whose schema is newer than this bot: a setting to fix (2), not an outage."""
    async with await open_store(postgres_url):
        pass
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute("UPDATE moodring_schema SET version = version + 1")
    finally:
        await connection.close()
    cases = {postgres_server.url("no_such_database"): "does not exist", postgres_url: "newer than this bot supports"}
    for url, expected in cases.items():
        config = moodring_config(discord_standin, tiny_model_dir, tmp_path, database=url)
        assert await asyncio.wait_for(_serve(MoodringBot(config)), 60) == 2
        err = capsys.readouterr().err
        assert err.startswith("moodring: ") and err.count("\n") == 1 and expected in err, err


async def test_a_moodring_run_child_against_a_stopped_postgresql_exits_75_with_one_line(
    discord_standin: DiscordStandIn, tmp_path: Path, postgres_server: PostgresServer, postgres_url: str
) -> None:
    env = {
        **os.environ,
        "DISCORD_TOKEN": discord_standin.token,
        "MOODRING_DISCORD_API": discord_standin.api_base,
        "MOODRING_DISCORD_GATEWAY": discord_standin.gateway_url,
        "MOODRING_MODEL_DIR": str(tmp_path / "no-model"),
        "MOODRING_WORK_DIR": str(tmp_path / "runs"),
        "MOODRING_DATABASE": postgres_url,
        "MOODRING_TRAIN_ON_START": "false",
    }
    with postgres_down(postgres_server):
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "moodring", "run", env=env, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await asyncio.wait_for(child.communicate(), 300)
    err = stderr.decode()
    assert child.returncode == 75, err
    assert "Traceback" not in err and PASSWORD not in err, err
    (line,) = [line for line in err.splitlines() if line.startswith("moodring:")]
    assert line == err.splitlines()[-1] and "cannot connect to PostgreSQL" in line, err
