"""The real bot with several shards in one process (discord.py's AutoShardedBot) against the sharding stand-in."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from bot_fixtures import BotFactory, wait_until

from bot.app import MoodringBot
from bot.cluster.sharding import shard_of
from sandbox import DiscordStandIn

pytestmark = pytest.mark.discord_standin(shard_count=2, identify_window_s=0.2)


@pytest.fixture(autouse=True)
def identify_in_turn(monkeypatch: pytest.MonkeyPatch, discord_standin: DiscordStandIn) -> None:
    """discord.py waits 5 s before each further shard's IDENTIFY; wait the stand-in's (short) window instead."""

    async def hook(self: MoodringBot, shard_id: int | None, *, initial: bool = False) -> None:
        if not initial:
            await asyncio.sleep(discord_standin.gateway.identify_window_s)

    monkeypatch.setattr(MoodringBot, "before_identify_hook", hook)


async def add_guilds(standin: DiscordStandIn, shards: tuple[int, ...]) -> dict[int, int]:
    """The stand-in's guild and one more per entry of `shards` (on that shard of 2): {guild id: channel id}."""
    channels = {standin.guild_id: standin.channel_id}
    for shard in shards:
        guild_id, channel_id = await standin.add_guild(f"guild on shard {shard}", shard=(shard, 2))
        channels[guild_id] = channel_id
    return channels


async def test_two_shards_in_one_process_answer_in_every_guild_exactly_once(
    make_moodring_bot: BotFactory, discord_standin: DiscordStandIn
) -> None:
    standin = discord_standin
    channels = await add_guilds(standin, (0, 1, 0, 1))
    async with make_moodring_bot(shard_count=2) as bot:
        assert bot.shard_count == 2 and sorted(bot.shards) == [0, 1]
        assert {guild.id: guild.shard_id for guild in bot.guilds} == {g: shard_of(g, 2) for g in channels}
        for guild_id, channel_id in channels.items():
            await standin.dispatch_message(channel_id, f"What a lovely day in {guild_id}!")
        asked = [
            await standin.dispatch_slash_command("emotion", {"text": "thank you!"}, channel_id=c, guild_id=g)
            for g, c in channels.items()
        ]
        for interaction in asked:
            await standin.wait_for_interaction_response(interaction, timeout=30)
        await wait_until(lambda: bot.counters["analyzed"] == len(channels), 30, "every message analysed")
        # Barrier: a marker analysed after everything above, then nothing may have been analysed twice.
        await standin.dispatch_message(standin.channel_id, "marker")
        await wait_until(lambda: bot.counters["analyzed"] == len(channels) + 1, 30, "the marker analysed")
    assert bot.counters["messages_seen"] == len(channels) + 1
    callbacks = Counter(r.params["interaction_id"] for r in standin.requests_to("POST", "/callback"))
    assert callbacks == {str(interaction["id"]): 1 for interaction in asked}
    for request in standin.requests_to("POST", "/callback"):
        assert request.status in (200, 204) and request.json["type"] == 4
    created = [f for f in standin.gateway_frames if f.direction == "send" and f.payload.get("t") == "MESSAGE_CREATE"]
    from_members = [f for f in created if f.payload["d"]["author"]["id"] != str(standin.bot_user_id)]
    assert len(from_members) == len(channels) + 1  # and the bot's own answers, echoed like Discord does
    assert all(f.shard_id == shard_of(int(f.payload["d"]["guild_id"]), 2) for f in created)
    assert standin.gateway.identify_refused == 0


async def test_summaries_are_posted_only_for_the_guilds_of_this_process(
    make_moodring_bot: BotFactory, discord_standin: DiscordStandIn
) -> None:
    standin = discord_standin
    channels = await add_guilds(standin, (0, 1))
    mine, theirs = (next(g for g in channels if shard_of(g, 2) == shard) for shard in (0, 1))
    async with make_moodring_bot(shard_count=2, shard_ids=(0,)) as bot:
        assert {guild.id for guild in bot.guilds} == {g for g in channels if shard_of(g, 2) == 0}
        for guild_id in (mine, theirs):
            await bot.store.upsert_schedule(guild_id, channels[guild_id], "every", every_hours=1)
        assert await bot.get_cog("Mood").post_due_summaries(bot.clock()) == 1
        by_guild = {s.guild_id: s for s in await bot.store.schedules()}
    assert by_guild[mine].last_posted_at is not None
    assert by_guild[theirs].last_posted_at is None and by_guild[theirs].enabled  # left to its own process
    assert len(standin.requests_to("POST", f"/channels/{channels[mine]}/messages")) == 1
    assert standin.requests_to("POST", f"/channels/{channels[theirs]}/messages") == []


@pytest.mark.parametrize(("shard_ids", "prunes"), [((0,), 1), ((1,), 0), (None, 1)])
async def test_the_daily_prune_runs_only_where_shard_zero_runs(
    make_moodring_bot: BotFactory, shard_ids: tuple[int, ...] | None, prunes: int
) -> None:
    async with make_moodring_bot(shard_count=2, shard_ids=shard_ids) as bot:
        real_prune, calls = bot.store.prune, []

        async def prune(now: float | None = None) -> int:
            calls.append(now)
            return await real_prune(now)

        bot.store.prune = prune
        await bot.get_cog("Housekeeping").retention()
    assert len(calls) == prunes
