"""`/moodring retrain` shows the owner what the corrections hold (rows, rows per server, the largest contributors'
shares; never a member) and trains only once the owner presses **Train** (issue 21), through the real bot and the
Discord stand-in. The runs these tests start are held in their export step (the real export, wrapped) and
cancelled, so no training runs."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from bot_fixtures import confirm_retrain, wait_until

from bot.app import MoodringBot
from bot.cogs import admin as admin_cog
from bot.learning.community_data import ExportSummary
from bot.store import Correction
from bot.store.member_key import member_hash
from sandbox import DiscordStandIn

MEMBERS = [10**17 + i for i in range(6)]  # Discord-sized ids, so that none could pass for a count in the summary


async def seed(bot: MoodringBot, guild_id: int, corrections: list[tuple[str, list[int]]]) -> None:
    """Each (text, members): every one of those members corrects the text to excitement in `guild_id`."""
    store = bot.store
    await store.set_corrections_enabled(guild_id, True)
    for i, (text, members) in enumerate(corrections):
        for member in members:
            correction = Correction(guild_id, 2, text, ("excitement",), ("neutral",), "v1", bot.clock())
            assert await store.add_correction(correction, message_key=f"m{i}", member_id=member) == "stored"


async def two_servers(bot: MoodringBot, standin: DiscordStandIn) -> None:
    """6 texts backed by two members in the stand-in's guild, 2 in a second server, and one member's text alone."""
    second, _ = await standin.add_guild("Second Server")
    await wait_until(lambda: bot.get_guild(second) is not None, what="the second server known to the bot")
    here = [(f"this patch is so skibbly {i}", MEMBERS[:2]) for i in range(6)] + [("all mine", [MEMBERS[2]])]
    await seed(bot, standin.guild_id, here)
    await seed(bot, second, [(f"the raid was skibbly {i}", MEMBERS[3:5]) for i in range(2)])


def hold_the_export(bot: MoodringBot) -> asyncio.Queue[ExportSummary | None]:
    """Wrap the bot's real export: each run puts what it exported in the queue, then waits there until cancelled."""
    exported: asyncio.Queue[ExportSummary | None] = asyncio.Queue()
    real = bot.retrainer.export_corrections

    async def export_then_wait(out: Path) -> ExportSummary | None:
        await exported.put(await real(out))
        await asyncio.Event().wait()

    bot.retrainer.export_corrections = export_then_wait
    return exported


async def ask(standin: DiscordStandIn, user: int) -> tuple[dict, dict]:
    """Run `/moodring retrain` as `user`: the interaction and the prompt message it was answered with."""
    asked = await standin.dispatch_slash_command("moodring retrain", user=user)
    await standin.wait_for_interaction_response(asked)
    return asked, standin.message(standin.interaction(asked).original_message_id)


def buttons(prompt: dict) -> list[dict]:
    return [component for row in prompt.get("components") or [] for component in row["components"]]


async def test_the_owner_sees_rows_servers_and_shares_and_cancel_trains_nothing(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    standin, bot = discord_standin, moodring_bot
    await two_servers(bot, standin)
    _, prompt = await ask(standin, standin.owner_id)
    summary = prompt["content"]
    assert "**8 rows**" in summary and "17 corrections counted by members" in summary
    assert "**Stand-in Guild** 6, **Second Server** 2" in summary
    assert "back 75%, 75%, 25% of the rows" in summary
    assert "1 text without a label two members chose" in summary
    hashes = [member_hash(bot.store.member_key, member) for member in MEMBERS]
    assert not any(str(member) in summary for member in MEMBERS) and not any(h[:8] in summary for h in hashes)
    train, cancel = buttons(prompt)
    assert (train["label"], cancel["label"]) == ("Train", "Cancel")

    # Someone else (here a server admin who is no owner) cannot press them.
    stranger = await standin.dispatch_component(train["custom_id"], prompt, user=standin.user_id)
    refused = (await standin.wait_for_interaction_response(stranger)).json["data"]
    assert "Only the owner who asked" in refused["content"]
    assert not bot.retrainer.running and bot.retrainer.status is None

    cancelled = await standin.dispatch_component(cancel["custom_id"], prompt, user=standin.owner_id)
    answer = (await standin.wait_for_interaction_response(cancelled)).json["data"]
    assert answer["content"] == admin_cog.NOTHING_TRAINED and not answer["components"]
    assert not bot.retrainer.running and bot.retrainer.status is None


async def test_train_starts_a_retrain_whose_export_holds_what_the_owner_saw(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    standin, bot = discord_standin, moodring_bot
    await two_servers(bot, standin)
    exported = hold_the_export(bot)
    asked = await standin.dispatch_slash_command("moodring retrain", user=standin.owner_id)
    assert "Starting a retrain" in await confirm_retrain(standin, asked)
    summary = await asyncio.wait_for(exported.get(), 30)
    assert summary is not None and (summary.rows, summary.corrections, summary.dropped) == (8, 17, 1)
    again = await standin.dispatch_slash_command("moodring retrain", user=standin.owner_id)
    assert "already running" in await confirm_retrain(standin, again)  # refused at once, without a summary
    assert (await bot.retrainer.cancel()).outcome == "cancelled"


async def test_without_usable_corrections_the_owner_is_offered_goemotions_alone(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    standin, bot = discord_standin, moodring_bot
    await seed(bot, standin.guild_id, [(f"only I say so {i}", [MEMBERS[0]]) for i in range(3)])
    exported = hold_the_export(bot)
    _, prompt = await ask(standin, standin.owner_id)
    assert prompt["content"].startswith("**No usable corrections** (of 3 corrections, no text has a label")
    assert [button["label"] for button in buttons(prompt)] == ["Train on GoEmotions alone", "Cancel"]
    pressed = await standin.dispatch_component(buttons(prompt)[0]["custom_id"], prompt, user=standin.owner_id)
    assert "Starting a retrain" in (await standin.wait_for_interaction_response(pressed)).json["data"]["content"]
    assert await asyncio.wait_for(exported.get(), 30) is None  # no `--extra-data`: GoEmotions alone
    assert (await bot.retrainer.cancel()).outcome == "cancelled"


async def test_a_confirmation_nobody_presses_trains_nothing(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    standin, bot = discord_standin, moodring_bot
    # The module the bot loaded its cog from (discord.py's `load_extension` executes a module object of its own).
    monkeypatch.setattr(sys.modules[type(bot.get_cog("Admin")).__module__], "RETRAIN_CONFIRM_TIMEOUT_S", 0.2)
    asked, _ = await ask(standin, standin.owner_id)
    token = standin.interaction(asked).token
    edit = await standin.wait_for_request(method="PATCH", path=f"/{token}/messages/@original", timeout=10)
    assert edit.json["content"] == admin_cog.RETRAIN_TIMED_OUT and edit.json["components"] == []
    assert not bot.retrainer.running and bot.retrainer.status is None
