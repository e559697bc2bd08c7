"""The Discord stand-in drives the real, unmodified discord.py client end to end."""

from __future__ import annotations

import asyncio
import io
import json
import time
import zlib
from collections.abc import AsyncIterator

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands
from standin_fixtures import running_bot

from sandbox import DiscordStandIn, payloads
from sandbox.rest import NONCE_WINDOW_S

EYES = "\N{EYES}"


class ConfirmView(discord.ui.View):
    """A confirmation prompt with one button."""

    def __init__(self, channel: discord.abc.GuildChannel) -> None:
        super().__init__(timeout=30)
        self.channel = channel

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.danger, custom_id="moodring:confirm")
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button[ConfirmView]) -> None:
        await interaction.response.edit_message(content=f"Enabled in {self.channel.mention}.", view=None)
        self.stop()


class MoodCog(commands.Cog):
    """A small cog exercising the paths a real bot uses."""

    moodring = app_commands.Group(name="moodring", description="Configure MoodRing.")
    channel = app_commands.Group(name="channel", description="Per-channel settings.", parent=moodring)

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        self.read_mood_menu = app_commands.ContextMenu(name="Read mood", callback=self.read_mood)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.read_mood_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.read_mood_menu.name, type=self.read_mood_menu.type)

    @app_commands.command(name="ping", description="Check that the bot is alive.")
    async def ping(self, interaction: discord.Interaction) -> None:
        embed = discord.Embed(title="Pong", description=f"Hello {interaction.user.mention}")
        await interaction.response.send_message(embed=embed, allowed_mentions=discord.AllowedMentions.none())

    @app_commands.command(name="slow", description="Think first, answer later.")
    async def slow(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        await asyncio.sleep(0.05)
        await interaction.edit_original_response(content="Thought about it.")

    @channel.command(name="enable", description="Read emotions in a channel.")
    async def enable(self, interaction: discord.Interaction, target: discord.TextChannel) -> None:
        await interaction.response.send_message(f"Enable MoodRing in {target.mention}?", view=ConfirmView(target))

    async def read_mood(self, interaction: discord.Interaction, message: discord.Message) -> None:
        await interaction.response.send_message(f"Mood of {message.id}: {message.content!r}", ephemeral=True)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot:
            return
        if message.attachments:
            data = await message.attachments[0].read()
            await message.reply(
                f"Got {len(data)} bytes.",
                file=discord.File(io.BytesIO(data[::-1]), filename="reversed.txt"),
                mention_author=False,
            )
            return
        await message.add_reaction(EYES)


def make_bot(*, sharded: bool = False) -> commands.Bot:
    intents = discord.Intents.default()
    intents.message_content = True
    cls = commands.AutoShardedBot if sharded else commands.Bot
    # guild_ready_timeout: don't wait discord.py's default 2 s for more GUILD_CREATEs after READY.
    return cls(command_prefix="!", intents=intents, guild_ready_timeout=0.05)


@pytest.fixture
async def bot(discord_standin: DiscordStandIn) -> AsyncIterator[commands.Bot]:
    bot = make_bot()
    await bot.add_cog(MoodCog(bot))
    async with running_bot(bot, discord_standin):
        yield bot


async def sync_guild(bot: commands.Bot, standin: DiscordStandIn) -> list[app_commands.AppCommand]:
    guild = discord.Object(standin.guild_id)
    bot.tree.copy_global_to(guild=guild)
    return await bot.tree.sync(guild=guild)


async def test_bot_logs_in_and_caches_the_guild(bot: commands.Bot, discord_standin: DiscordStandIn) -> None:
    standin = discord_standin
    assert bot.user is not None and bot.user.id == standin.bot_user_id
    assert bot.application_id == standin.application_id
    guild = bot.get_guild(standin.guild_id)
    assert guild is not None and guild.name == "Stand-in Guild"
    channel = guild.get_channel(standin.channel_id)
    assert isinstance(channel, discord.TextChannel)
    assert guild.me is not None and any(r.managed for r in guild.me.roles)
    perms = channel.permissions_for(guild.me)
    assert perms.send_messages and perms.add_reactions and not perms.administrator
    assert guild.get_member(standin.user_id) is None  # no members intent: only the bot itself is cached
    # discord.py connected with the transport compression it asked for, and IDENTIFYed with our intents.
    # zstd-stream when zstandard is importable, else zlib-stream: whichever discord.py picked here.
    expected = discord.utils._ActiveDecompressionContext.COMPRESSION_TYPE
    assert f"compress={expected}" in standin.gateway.connect_urls[0]
    identify = next(f.payload["d"] for f in standin.gateway_frames if f.direction == "recv" and f.op == 2)
    assert identify["intents"] & payloads.INTENT_MESSAGE_CONTENT
    assert standin.heartbeat_count >= 1  # discord.py beats right after HELLO, and gets an ACK
    assert [r.path for r in standin.requests[:2]] == ["/users/@me", "/oauth2/applications/@me"]
    assert standin.unknown_requests == []


async def test_tree_sync_records_the_put(bot: commands.Bot, discord_standin: DiscordStandIn) -> None:
    synced = await sync_guild(bot, discord_standin)
    put = discord_standin.requests_to("PUT", f"/guilds/{discord_standin.guild_id}/commands")
    assert len(put) == 1 and put[0].status == 200
    assert {c["name"] for c in put[0].json} == {"ping", "slow", "moodring", "Read mood"}
    assert all(c.id and c.guild_id == discord_standin.guild_id for c in synced)
    fetched = await bot.tree.fetch_commands(guild=discord.Object(discord_standin.guild_id))
    assert {c.id for c in fetched} == {c.id for c in synced}


async def test_slash_command_round_trip(bot: commands.Bot, discord_standin: DiscordStandIn) -> None:
    await sync_guild(bot, discord_standin)
    interaction = await discord_standin.dispatch_slash_command("ping")
    callback = await discord_standin.wait_for_interaction_response(interaction)
    assert callback.status == 200
    assert callback.json["type"] == 4
    assert callback.json["data"]["embeds"][0]["title"] == "Pong"
    assert callback.json["data"]["allowed_mentions"]["parse"] == []
    record = discord_standin.interaction(interaction)
    message = discord_standin.message(record.original_message_id or 0)
    assert message is not None and message["interaction_metadata"]["name"] == "ping"


async def test_deferred_response_then_edit_original(bot: commands.Bot, discord_standin: DiscordStandIn) -> None:
    await sync_guild(bot, discord_standin)
    interaction = await discord_standin.dispatch_slash_command("slow")
    callback = await discord_standin.wait_for_interaction_response(interaction)
    assert callback.json["type"] == 5
    edit = await discord_standin.wait_for_request(method="PATCH", path="/messages/@original")
    assert edit.status == 200 and edit.json["content"] == "Thought about it."
    message = discord_standin.message(discord_standin.interaction(interaction).original_message_id or 0)
    assert message is not None and message["content"] == "Thought about it."
    assert not message["flags"] & payloads.MESSAGE_FLAG_LOADING


async def test_message_context_menu(bot: commands.Bot, discord_standin: DiscordStandIn) -> None:
    await sync_guild(bot, discord_standin)
    target = await discord_standin.dispatch_message(content="what a day")
    interaction = await discord_standin.dispatch_context_menu("Read mood", target)
    callback = await discord_standin.wait_for_interaction_response(interaction)
    assert callback.json["type"] == 4
    assert callback.json["data"]["content"] == f"Mood of {target['id']}: 'what a day'"
    assert callback.json["data"]["flags"] & payloads.MESSAGE_FLAG_EPHEMERAL


async def test_subcommand_group_and_confirmation_button(bot: commands.Bot, discord_standin: DiscordStandIn) -> None:
    standin = discord_standin
    await sync_guild(bot, standin)
    other = await standin.add_text_channel("feelings")
    interaction = await standin.dispatch_slash_command("moodring channel enable", {"target": other})
    assert interaction["data"]["options"][0]["type"] == payloads.OPTION_SUB_COMMAND_GROUP
    prompt = await standin.wait_for_interaction_response(interaction)
    assert prompt.status == 200 and prompt.json["data"]["content"] == f"Enable MoodRing in <#{other}>?"
    prompt_id = prompt.response["interaction"]["response_message_id"]

    click = await standin.dispatch_component("moodring:confirm", int(prompt_id))
    answer = await standin.wait_for_interaction_response(click)
    assert answer.json["type"] == 7
    assert answer.json["data"]["content"] == f"Enabled in <#{other}>."
    stored = standin.message(prompt_id)
    assert stored is not None and stored["components"] == []


async def test_on_message_adds_a_reaction(bot: commands.Bot, discord_standin: DiscordStandIn) -> None:
    message = await discord_standin.dispatch_message(content="I am so happy today")
    put = await discord_standin.wait_for_request(method="PUT", path=f"/messages/{message['id']}/reactions/")
    assert put.status == 204 and put.params["emoji"] == EYES
    assert discord_standin.reactions(message["id"]) == {EYES: [discord_standin.bot_user_id]}


async def test_attachment_is_read_and_a_file_is_sent_back(bot: commands.Bot, discord_standin: DiscordStandIn) -> None:
    message = await discord_standin.dispatch_message(
        content="see file", attachments=[("note.txt", b"abc", "text/plain")]
    )
    post = await discord_standin.wait_for_request(method="POST", route="/channels/{channel_id}/messages")
    assert post.status == 200
    assert post.json["content"] == "Got 3 bytes."
    assert post.json["message_reference"]["message_id"] == int(message["id"])
    assert post.filenames == ["reversed.txt"] and post.files[0].data == b"cba"
    assert post.response["referenced_message"]["id"] == message["id"]
    assert post.response["attachments"][0]["filename"] == "reversed.txt"


async def test_rate_limited_reaction_is_retried(bot: commands.Bot, discord_standin: DiscordStandIn) -> None:
    rule = discord_standin.fail_next("PUT", "/reactions/", status=429, retry_after=0.3)
    message = await discord_standin.dispatch_message(content="rate limit me")
    await discord_standin.wait_for_request(method="PUT", path="/reactions/", status=204)
    attempts = discord_standin.requests_to("PUT", f"/messages/{message['id']}/reactions/")
    assert [r.status for r in attempts] == [429, 204]
    assert attempts[0].response == {"message": "You are being rate limited.", "retry_after": 0.3, "global": False}
    assert attempts[1].at - attempts[0].at >= 0.25
    assert rule.hits == 1
    assert discord_standin.reactions(message["id"]) == {EYES: [discord_standin.bot_user_id]}


async def test_missing_permissions_is_a_403(bot: commands.Bot, discord_standin: DiscordStandIn) -> None:
    standin = discord_standin
    await standin.set_permission_overwrite(
        standin.channel_id, standin.bot_user_id, deny=payloads.PERM_ADD_REACTIONS, member=True
    )
    await standin.dispatch_message(content="react please")
    put = await standin.wait_for_request(method="PUT", path="/reactions/")
    assert put.status == 403 and put.response == {"message": "Missing Permissions", "code": 50013}
    channel = bot.get_channel(standin.channel_id)
    assert isinstance(channel, discord.TextChannel)
    assert not channel.permissions_for(channel.guild.me).add_reactions  # CHANNEL_UPDATE reached the cache


@pytest.mark.parametrize("close_code", [None, 4000], ids=["abrupt", "close-4000"])
async def test_gateway_drop_resumes_and_replays(
    bot: commands.Bot, discord_standin: DiscordStandIn, close_code: int | None
) -> None:
    standin = discord_standin
    await sync_guild(bot, standin)
    resumed = asyncio.Event()

    async def on_resumed() -> None:
        resumed.set()

    bot.add_listener(on_resumed)
    await standin.drop_gateway(close_code)
    missed = await standin.dispatch_message(content="sent while disconnected")  # buffered, replayed on RESUME
    await standin.wait_until_resumed()
    await asyncio.wait_for(resumed.wait(), 5)
    assert (standin.identify_count, standin.resume_count) == (1, 1)
    assert standin.gateway.connect_urls[-1].startswith("/resume?")
    await standin.wait_for_request(method="PUT", path=f"/messages/{missed['id']}/reactions/", status=204)
    interaction = await standin.dispatch_slash_command("ping")
    callback = await standin.wait_for_interaction_response(interaction)
    assert callback.status == 200 and callback.json["type"] == 4


async def test_invalid_session_makes_the_bot_identify_again(
    bot: commands.Bot, discord_standin: DiscordStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_identify_delay(shard_id: int | None, *, initial: bool = False) -> None:
        return None  # discord.py otherwise sleeps 5 s before every non-initial IDENTIFY

    monkeypatch.setattr(bot, "before_identify_hook", no_identify_delay)
    await discord_standin.invalidate_session(resumable=False)
    await discord_standin.wait_until_identified(2)
    message = await discord_standin.dispatch_message(content="back again")
    await discord_standin.wait_for_request(method="PUT", path=f"/messages/{message['id']}/reactions/", status=204)
    assert discord_standin.resume_count == 0


async def test_without_message_content_intent_content_is_blank(discord_standin: DiscordStandIn) -> None:
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def on_message(message: discord.Message) -> None:
        await seen.put(message.content)

    bot.add_listener(on_message)
    mention = f"<@{discord_standin.bot_user_id}> hi"
    async with running_bot(bot, discord_standin):
        await discord_standin.dispatch_message(content="private thoughts")
        await discord_standin.dispatch_message(content=mention, mentions=[discord_standin.bot_user_id])
        assert await asyncio.wait_for(seen.get(), 5) == ""  # like Discord: no intent, no content...
        assert await asyncio.wait_for(seen.get(), 5) == mention  # ...unless the bot is mentioned


async def test_bad_token_raises_login_failure(discord_standin: DiscordStandIn) -> None:
    bot = make_bot()
    try:
        with pytest.raises(discord.LoginFailure):
            await bot.start("not-the-token")
    finally:
        await bot.close()
    (attempt,) = discord_standin.requests_to("GET", "/users/@me")
    assert attempt.status == 401 and attempt.response == {"message": "401: Unauthorized", "code": 0}
    assert "Authorization" not in attempt.headers


async def test_auto_sharded_bot_connects(discord_standin: DiscordStandIn) -> None:
    bot = make_bot(sharded=True)
    async with running_bot(bot, discord_standin):
        assert bot.shard_count == 1
        assert bot.get_guild(discord_standin.guild_id) is not None
    assert discord_standin.requests_to("GET", "/gateway/bot")
    identify = next(f.payload["d"] for f in discord_standin.gateway_frames if f.op == 2)
    assert identify["shard"] == [0, 1]


@pytest.mark.discord_standin(heartbeat_interval=1000)
async def test_raw_gateway_zlib_stream(discord_standin: DiscordStandIn) -> None:
    """The transport compression discord.py falls back to without zstd: a zlib stream with sync flushes."""
    inflater = zlib.decompressobj()
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(discord_standin.gateway_url + "?v=10&encoding=json&compress=zlib-stream") as ws,
    ):

        async def receive() -> dict[str, object]:
            frame = await ws.receive_bytes(timeout=5)
            assert frame.endswith(b"\x00\x00\xff\xff")
            return json.loads(inflater.decompress(frame))

        hello = await receive()
        assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] == 1000  # type: ignore[index]
        await ws.send_json({"op": 1, "d": None})
        assert (await receive())["op"] == 11
        await ws.send_json({"op": 2, "d": {"token": discord_standin.token, "intents": 513, "properties": {}}})
        ready = await receive()
        assert ready["t"] == "READY" and ready["s"] == 1
        guild_create = await receive()
        assert guild_create["t"] == "GUILD_CREATE" and guild_create["s"] == 2


async def test_enforce_nonce_returns_the_first_message_within_the_window(discord_standin: DiscordStandIn) -> None:
    """Discord's `enforce_nonce`: a second create with the same author and nonce within the window returns the first
    message and creates none; without `enforce_nonce`, with another nonce or after the window, a new one; a nonce
    longer than 25 characters is refused. And a 500 `after_handling` creates the message and still answers 500."""
    standin = discord_standin
    url = f"{standin.api_base}/channels/{standin.channel_id}/messages"
    headers = {"Authorization": f"Bot {standin.token}"}
    async with aiohttp.ClientSession(headers=headers) as http:

        async def create(**body: object) -> tuple[int, dict]:
            async with http.post(url, json={"content": "hi", **body}) as response:
                return response.status, await response.json()

        first = (await create(nonce="n-1", enforce_nonce=True))[1]
        assert (await create(nonce="n-1", enforce_nonce=True))[1]["id"] == first["id"]
        assert (await create(nonce="n-1"))[1]["id"] != first["id"]  # not enforced: a new message
        assert (await create(nonce="n-2", enforce_nonce=True))[1]["id"] != first["id"]
        assert (await create(nonce="x" * 26, enforce_nonce=True))[0] == 400
        standin.rest.clock = lambda: time.monotonic() + NONCE_WINDOW_S  # the window has passed
        assert (await create(nonce="n-1", enforce_nonce=True))[1]["id"] != first["id"]
        standin.fail_next("POST", "/channels/{channel_id}/messages", status=500, after_handling=True)
        status, _ = await create(nonce="n-3", enforce_nonce=True)
        assert status == 500
        posted = standin.bot_messages(standin.channel_id)[-1]
        assert (await create(nonce="n-3", enforce_nonce=True))[1]["id"] == posted["id"]  # the one the 500 hid
    assert len(standin.bot_messages(standin.channel_id)) == 5
