"""The stand-in shards like Discord: IDENTIFY's `shard`, per-shard READY and routing, and the identify rate limit."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp
import discord
import pytest
from discord.ext import commands
from standin_fixtures import running_bot

from bot.cluster.sharding import shard_of
from sandbox import DiscordStandIn
from sandbox.gateway import CLOSE_INVALID_SHARD


async def raw_identify(http: aiohttp.ClientSession, standin: DiscordStandIn, shard: Any) -> aiohttp.WSMessage:
    """Connect, IDENTIFY with `shard`, and return the first message after HELLO (a payload or the close)."""
    ws = await http.ws_connect(standin.gateway_url + "?v=10&encoding=json")
    hello = await ws.receive_json(timeout=5)
    assert hello["op"] == 10
    await ws.send_json({"op": 2, "d": {"token": standin.token, "intents": 513, "properties": {}, "shard": shard}})
    return await ws.receive(timeout=5)


@pytest.mark.parametrize("shard", [[2, 2], [-1, 2], [0, 0], ["0", 2], [0], [True, 2], "0,2"])
async def test_a_bad_shard_identify_is_closed_with_4010(discord_standin: DiscordStandIn, shard: Any) -> None:
    async with aiohttp.ClientSession() as http:
        answer = await raw_identify(http, discord_standin, shard)
    assert answer.type is aiohttp.WSMsgType.CLOSE and answer.data == CLOSE_INVALID_SHARD
    assert discord_standin.identify_count == 0 and discord_standin.errors == []


@pytest.mark.discord_standin(shard_count=4, max_concurrency=2, identify_window_s=60)
async def test_identifies_are_limited_per_max_concurrency_bucket(discord_standin: DiscordStandIn) -> None:
    standin = discord_standin
    now = [1000.0]
    standin.gateway.clock = lambda: now[0]
    async with aiohttp.ClientSession() as http:
        async with http.get(standin.api_base + "/gateway/bot", headers={"Authorization": f"Bot {standin.token}"}) as r:
            recommended = await r.json()
        assert recommended["shards"] == 4 and recommended["session_start_limit"]["max_concurrency"] == 2
        # Shards 0 and 1 are in different buckets (shard_id % 2): both start at once.
        assert (await raw_identify(http, standin, [0, 4])).json()["t"] == "READY"
        assert (await raw_identify(http, standin, [1, 4])).json()["t"] == "READY"
        # Shard 2 shares shard 0's bucket: too soon, answered with a non-resumable INVALID_SESSION.
        refused = (await raw_identify(http, standin, [2, 4])).json()
        assert (refused["op"], refused["d"]) == (9, False)
        assert (standin.identify_count, standin.gateway.identify_refused) == (2, 1)
        now[0] += 60  # the window has passed
        assert (await raw_identify(http, standin, [2, 4])).json()["t"] == "READY"
    assert standin.identify_count == 3


@pytest.mark.discord_standin(shard_count=2, identify_window_s=0.2)
async def test_each_shard_gets_only_its_own_guilds(discord_standin: DiscordStandIn) -> None:
    standin = discord_standin
    channels = {standin.guild_id: standin.channel_id}
    for shard in (0, 1, 0, 1):
        guild_id, channel_id = await standin.add_guild(f"guild on shard {shard}", shard=(shard, 2))
        channels[guild_id] = channel_id
    intents = discord.Intents.default()
    intents.message_content = True
    bot = commands.AutoShardedBot(command_prefix="!", intents=intents, guild_ready_timeout=0.05)

    async def identify_in_turn(shard_id: int | None, *, initial: bool = False) -> None:
        if not initial:  # wait out the stand-in's identify window (discord.py's default waits 5 s)
            await asyncio.sleep(standin.gateway.identify_window_s)

    bot.before_identify_hook = identify_in_turn  # type: ignore[method-assign]
    seen: Counter[tuple[int, int]] = Counter()  # (guild, shard) of each message the bot received

    async def on_message(message: discord.Message) -> None:
        assert message.guild is not None
        seen[(message.guild.id, message.guild.shard_id)] += 1

    bot.add_listener(on_message)
    async with running_bot(bot, standin, timeout=20):
        assert bot.shard_count == 2 and sorted(bot.shards) == [0, 1]
        assert {g.id for g in bot.guilds} == set(channels)
        for frame in standin.gateway_frames:
            if frame.direction == "send" and frame.payload.get("t") == "READY":
                listed = {int(g["id"]) for g in frame.payload["d"]["guilds"]}
                assert listed == {g for g in channels if shard_of(g, 2) == frame.shard_id}
        for guild_id, channel_id in channels.items():
            await standin.dispatch_message(channel_id, f"hello {guild_id}")
        await _until(lambda: sum(seen.values()) >= len(channels))
        marker = await standin.dispatch_message(standin.channel_id, "marker")  # then nothing more may arrive
        await _until(lambda: sum(seen.values()) == len(channels) + 1)
    seen[(standin.guild_id, shard_of(standin.guild_id, 2))] -= 1  # the marker
    assert seen == {(guild_id, shard_of(guild_id, 2)): 1 for guild_id in channels}
    sent = [f for f in standin.gateway_frames if f.direction == "send" and f.payload.get("t") == "MESSAGE_CREATE"]
    assert len(sent) == len(channels) + 1 and marker["id"] in {f.payload["d"]["id"] for f in sent}
    for frame in sent:
        assert frame.shard_id == shard_of(int(frame.payload["d"]["guild_id"]), 2)
    assert standin.gateway.identify_refused == 0 and standin.identify_count == 2


async def _until(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.discord_standin(shard_count=2, identify_window_s=0.3)
async def test_discord_py_identifies_again_after_a_rate_limited_identify(discord_standin: DiscordStandIn) -> None:
    """The rule as discord.py meets it: a shard that identifies too soon gets INVALID_SESSION, then identifies
    again (discord.py's hook, shortened here from 5 s) and gets its guilds' events."""
    standin = discord_standin
    _, channel_id = await standin.add_guild("on shard 1", shard=(1, 2))
    intents = discord.Intents.default()
    intents.message_content = True
    bot = commands.AutoShardedBot(command_prefix="!", intents=intents, guild_ready_timeout=0.05)

    async def impatient(shard_id: int | None, *, initial: bool = False) -> None:
        if not initial:
            await asyncio.sleep(0.1)  # shorter than the stand-in's window

    bot.before_identify_hook = impatient  # type: ignore[method-assign]
    seen: list[int] = []

    async def on_message(message: discord.Message) -> None:
        seen.append(message.guild.shard_id)

    bot.add_listener(on_message)
    async with running_bot(bot, standin, timeout=20):
        assert standin.gateway.identify_refused >= 1 and standin.identify_count == 2
        assert sorted(s.shard for s in standin.sessions) == [(0, 2), (1, 2)]
        await standin.dispatch_message(channel_id, "hello shard 1")
        await _until(lambda: seen == [1])
