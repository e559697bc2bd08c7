"""The real bot on PostgreSQL through the stand-in: a message is analysed, its statistics reach the database and a
scheduled summary counts it; and `moodring run` with credentials PostgreSQL refuses exits with one line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from bot_fixtures import BotFactory, moodring_config, wait_until
from postgres_fixtures import PostgresServer

from bot.app import MoodringBot
from bot.cli import _serve
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
