"""Mood alerts through the stand-in, with a controlled clock, on both engines: `/moodring alerts` sets them up and
`/moodring settings` shows them; a channel whose share of watched messages rises above its own baseline gets one
alert (with its counts, top emotions, link, buttons and the role mention alone), an ordinary one none; one per
cooldown, one after downtime, one of two ticks racing; the buttons (Acknowledge, Snooze, Less sensitive) work for
Manage Server only, checked at each press; a deleted or forbidden moderators' channel switches alerts off and tells
the admins once."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import pytest
from bot_fixtures import ADMIN_PERMISSIONS, BotFactory, wait_until

from bot.alerts.message import BUTTON_PREFIX, NOT_ALLOWED
from bot.app import MoodringBot
from sandbox import DiscordStandIn, payloads

CHANNEL_MESSAGES = "/channels/{channel_id}/messages"
NOW = datetime(2026, 11, 30, 12, 30, tzinfo=UTC).timestamp()  # half past an hour
HOUR = 3600
BUTTONS = ["acknowledge", "snooze-1", "snooze-24", "less-sensitive"]


def seed_baseline(bot: MoodringBot, guild: int, channel: int, *, until: float = NOW) -> None:
    """400 messages over the ten days before `until`'s hour, 10% of them angry."""
    for day in range(1, 11):
        for i in range(40):
            labels = [("anger", 0.9)] if i % 10 == 0 else [("joy", 0.8)]
            bot.store.record(guild, channel, labels, at=until - day * 86400 - HOUR + i)


def seed_window(bot: MoodringBot, guild: int, channel: int, angry: int, *, at: float = NOW, total: int = 30) -> None:
    """`total` messages in the hour of `at` (before it), `angry` of them angry (and annoyed)."""
    start = at - at % HOUR
    for i in range(total):
        labels = [("anger", 0.9), ("annoyance", 0.7)] if i < angry else [("joy", 0.8), ("neutral", 0.5)]
        bot.store.record(guild, channel, labels, at=start + i * (at - start) / total)


async def set_up_alerts(standin: DiscordStandIn, options: dict) -> str:
    asked = await standin.dispatch_slash_command("moodring alerts", options, member_permissions=ADMIN_PERMISSIONS)
    return (await standin.wait_for_interaction_response(asked)).json["data"]["content"]


def alerts_posted(standin: DiscordStandIn, channel_id: int) -> list:
    return [
        r
        for r in standin.requests_to("POST", f"/channels/{channel_id}/messages")
        if r.json and r.json.get("embeds") and r.json["embeds"][0]["title"].startswith("Mood alert")
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path) -> str:
    return str(tmp_path / "alerts.sqlite3") if request.param == "sqlite" else request.getfixturevalue("postgres_url")


async def test_a_rising_channel_gets_one_alert_and_an_ordinary_one_none(
    discord_standin: DiscordStandIn, make_moodring_bot: BotFactory, database: str
) -> None:
    guild, watched = discord_standin.guild_id, discord_standin.channel_id
    mods = await discord_standin.add_text_channel("mods")
    calm = await discord_standin.add_text_channel("calm")
    role = await discord_standin.add_role("Moderators")
    async with make_moodring_bot(database=database) as bot:
        clock = {"now": NOW}
        bot.clock = lambda: clock["now"]
        answer = await set_up_alerts(discord_standin, {"channel": mods, "role": role, "sensitivity": "medium"})
        assert "**on**" in answer and "anger, annoyance, disapproval, disgust" in answer and f"<@&{role}>" in answer
        for channel in (watched, calm):
            seed_baseline(bot, guild, channel)
        seed_window(bot, guild, watched, angry=12)  # 40% against 10%: p = 1.9e-5
        seed_window(bot, guild, calm, angry=4)
        await discord_standin.dispatch_message(content="xyzzy plugh, the words no alert may quote")
        await asyncio.wait_for(_analysed(bot), 10)
        await bot.store.flush()
        alerts = bot.get_cog("Alerts")

        assert await alerts.check_alerts(NOW) == 1
        (posted,) = alerts_posted(discord_standin, mods)
        body = posted.json
        embed = body["embeds"][0]
        assert embed["url"] == f"https://discord.com/channels/{guild}/{watched}"
        assert f"<#{watched}>" in embed["description"] and re.search(r"\(1[23] of 31\)", embed["description"])
        assert "(40 of 400)" in embed["description"] and "**10%**" in embed["description"]
        assert [f["name"] for f in embed["fields"]] == ["Top emotions since then", "Why"]
        top = embed["fields"][0]["value"].splitlines()
        assert len(top) == 3 and any("**anger** 4" in line for line in top)  # 12 or 13 of 31
        assert "xyzzy" not in str(body)  # the analysed message's text is nowhere in the alert
        assert body["content"] == f"<@&{role}>"  # the role alone may be pinged
        allowed = body["allowed_mentions"]
        assert allowed["parse"] == [] and [str(r) for r in allowed["roles"]] == [str(role)]
        stored = discord_standin.message(posted.response["id"])
        assert stored["mention_roles"] == [str(role)] and not stored["mention_everyone"]
        ids = [c["custom_id"] for row in body["components"] for c in row["components"]]
        assert ids == [BUTTON_PREFIX + b for b in BUTTONS]

        assert await alerts.check_alerts(NOW + 60) == 0  # cooldown
        answer = await _settings(discord_standin)
        assert "Mood alerts" in answer and f"<#{mods}>" in answer and "medium" in answer

        # Downtime: the bot missed five angry hours; back, it tests the window it finds, and alerts once.
        later = NOW + 7 * HOUR
        for hour in range(5):
            seed_window(bot, guild, watched, angry=20, at=later - hour * HOUR)
            seed_window(bot, guild, calm, angry=20, at=later - hour * HOUR)
        await bot.store.flush()
        assert sum(await asyncio.gather(alerts.check_alerts(later), alerts.check_alerts(later))) == 2  # two racing
        assert await alerts.check_alerts(later + 60) == 0
        assert len(alerts_posted(discord_standin, mods)) == 3  # the first, then one each: never a flood


async def _analysed(bot: MoodringBot) -> None:
    while bot.counters["analyzed"] < 1:
        await asyncio.sleep(0.01)


async def _settings(standin: DiscordStandIn) -> str:
    asked = await standin.dispatch_slash_command("moodring settings", {}, member_permissions=ADMIN_PERMISSIONS)
    embed = (await standin.wait_for_interaction_response(asked)).json["data"]["embeds"][0]
    return str(embed["fields"])


async def test_buttons_check_manage_server_at_each_press_and_act(
    discord_standin: DiscordStandIn, make_moodring_bot: BotFactory
) -> None:
    guild, watched = discord_standin.guild_id, discord_standin.channel_id
    mods = await discord_standin.add_text_channel("mods")
    async with make_moodring_bot(alert_cooldown_s=600.0) as bot:
        clock = {"now": NOW}
        bot.clock = lambda: clock["now"]
        assert "**on**" in await set_up_alerts(discord_standin, {"channel": mods})
        seed_baseline(bot, guild, watched)
        seed_window(bot, guild, watched, angry=12, at=NOW + 1200)
        await bot.store.flush()
        alerts = bot.get_cog("Alerts")
        assert await alerts.check_alerts(NOW) == 1
        (posted,) = alerts_posted(discord_standin, mods)
        alert = discord_standin.message(posted.response["id"])
        assert posted.json["allowed_mentions"]["parse"] == [] and not posted.json.get("content")  # no one pinged
        assert alert["mention_roles"] == []

        async def press(button: str, user: int) -> dict:
            message = discord_standin.message(alert["id"])
            pressed = await discord_standin.dispatch_component(BUTTON_PREFIX + button, message, user=user)
            return (await discord_standin.wait_for_interaction_response(pressed)).json

        for button in BUTTONS:  # a member without Manage Server: refused, nothing changes
            refused = await press(button, discord_standin.user_id)
            assert refused["type"] == 4 and refused["data"]["content"] == NOT_ALLOWED
            assert refused["data"]["flags"] & payloads.MESSAGE_FLAG_EPHEMERAL
        state = (await bot.store.alert_channels(guild))[watched]
        assert (state.acknowledged_at, state.snoozed_until, state.steps) == (None, None, 0)

        owner = discord_standin.owner_id  # the server's owner: Manage Server
        acknowledged = await press("acknowledge", owner)
        assert acknowledged["type"] == 7  # the alert is edited
        moderators = acknowledged["data"]["embeds"][0]["fields"][-1]
        assert moderators["name"] == "Moderators" and f"Acknowledged by <@{owner}>" in moderators["value"]
        ack = acknowledged["data"]["components"][0]["components"][0]
        assert ack["disabled"] and ack["label"] == "Acknowledged"
        assert (await bot.store.alert_channels(guild))[watched].acknowledged_at == NOW

        # Snoozed for an hour: nothing past the cooldown either, until the hour is over.
        clock["now"] = NOW + 60
        snoozed = await press("snooze-1", owner)
        assert "Snoozed for 1 h" in snoozed["data"]["embeds"][0]["fields"][-1]["value"]
        assert "Acknowledged by" in snoozed["data"]["embeds"][0]["fields"][-1]["value"]
        assert await alerts.check_alerts(NOW + 1500) == 0  # past the cooldown, still snoozed
        assert await alerts.check_alerts(NOW + 60 + HOUR + 1) == 0  # next hour: an ordinary window

        # Less sensitive: the same rise (p = 1.9e-5) no longer alerts; a stronger one does.
        less = await press("less-sensitive", owner)
        assert "needs p ≤ 1e-05" in less["data"]["embeds"][0]["fields"][-1]["value"]
        assert (await bot.store.alert_channels(guild))[watched].steps == 1
        next_hour = NOW + 2 * HOUR
        seed_window(bot, guild, watched, angry=12, at=next_hour)
        await bot.store.flush()
        assert await alerts.check_alerts(next_hour) == 0
        seed_window(bot, guild, watched, angry=12, at=next_hour + 600, total=10)  # 22 of 40
        await bot.store.flush()
        assert await alerts.check_alerts(next_hour + 600) == 1


@pytest.mark.parametrize("how", ["deleted", "forbidden"])
async def test_a_lost_moderators_channel_switches_alerts_off_and_tells_the_admins_once(
    discord_standin: DiscordStandIn, make_moodring_bot: BotFactory, how: str
) -> None:
    guild, watched = discord_standin.guild_id, discord_standin.channel_id
    async with make_moodring_bot() as bot:
        mods = 999_999  # no such channel
        if how == "forbidden":
            mods = await discord_standin.add_text_channel("mods")
            await discord_standin.set_permission_overwrite(
                mods, discord_standin.bot_user_id, deny=payloads.PERM_SEND_MESSAGES, member=True
            )
            guild_object = bot.get_guild(guild)
            await wait_until(
                lambda: (
                    (found := guild_object.get_channel(mods)) is not None
                    and not found.permissions_for(guild_object.me).send_messages
                ),
                what="the bot seeing its lost permission",
            )
        await bot.store.set_alert_settings(
            guild, mod_channel_id=mods, labels=["anger"], sensitivity="high", role_id=None, enabled=True
        )
        seed_baseline(bot, guild, watched)
        seed_window(bot, guild, watched, angry=20)
        await bot.store.flush()
        alerts = bot.get_cog("Alerts")
        assert await alerts.check_alerts(NOW) == 0
        settings = await bot.store.alert_settings(guild)
        assert not settings.enabled and ("deleted" in settings.disabled_reason if how == "deleted" else True)
        notice = await discord_standin.wait_for_request(
            lambda r: (
                r.route == CHANNEL_MESSAGES and r.method == "POST" and "stopped posting mood alerts" in str(r.json)
            )
        )
        assert notice.json["allowed_mentions"]["parse"] == [] and "/moodring alerts" in notice.json["content"]
        assert await alerts.check_alerts(NOW + 60) == 0
        told = [r for r in discord_standin.requests_to("POST", "/messages") if "stopped posting mood" in str(r.json)]
        assert len(told) == 1
        assert "off" in await _settings(discord_standin)
