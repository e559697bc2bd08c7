"""A member's opt-out (issue 21) with the real `MoodringBot` against the Discord stand-in: `/privacy choice:opt-out`
answers privately; then the member's messages are not analysed (the store's totals do not move), get no reactions,
and nobody can have them read through the "Analyze emotions" menu or a reply-mention (both say politely that this
member opted out) or correct a reading of them; `/emotion` still reads what they type. Opting in restores it all; the
choice survives a restart; and a bot on PostgreSQL honours an opt-out another process of the cluster recorded within
the 10 s the privacy statement promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bot_fixtures import MEMBER_PERMISSIONS, BotFactory, store_message, wait_until
from test_bot_admin import synced_commands
from test_bot_corrections import answer_of, custom_ids, enable, press
from test_bot_emotions import (
    enable_reactions,
    is_reply_to,
    mention_of_bot,
    puts_for,
    reacting_text,
    reply_reference,
    slash,
)

from bot.app import MoodringBot
from bot.cogs.admin import ALREADY_OPTED_OUT, OPTED_IN, OPTED_OUT
from bot.cogs.emotions import MEMBER_OPTED_OUT
from bot.config import BotConfig, ConfigError
from bot.learning.corrections import NOT_QUITE_ID
from bot.store import open_store
from model import EmotionClassifier
from sandbox import DiscordStandIn, payloads

EPHEMERAL = payloads.MESSAGE_FLAG_EPHEMERAL
#: Within what every process of a cluster must honour an opt-out (docs/privacy.md).
PROMISED_S = 10.0


async def privacy(standin: DiscordStandIn, choice: str, user: int | None = None) -> dict[str, Any]:
    """`/privacy choice:<choice>` as a plain member; the callback's body, checked to be private."""
    interaction = await standin.dispatch_slash_command(
        "privacy", {"choice": choice}, user=user, member_permissions=MEMBER_PERMISSIONS
    )
    answer = (await standin.wait_for_interaction_response(interaction)).json
    assert answer["type"] == 4 and int(answer["data"].get("flags") or 0) & EPHEMERAL, answer
    return answer["data"]


async def menu_answer(standin: DiscordStandIn, message: dict[str, Any], user: int) -> dict[str, Any]:
    """What the "Analyze emotions" menu on `message`, run by `user`, answers."""
    interaction = await standin.dispatch_context_menu("Analyze emotions", message, user=user)
    return (await standin.wait_for_interaction_response(interaction, timeout=10)).json


async def mention_reply(standin: DiscordStandIn, about: dict[str, Any], user: int) -> dict[str, Any]:
    """`user` replies to `about` and mentions the bot; the bot's reply."""
    question = await standin.dispatch_message(
        content=f"{mention_of_bot(standin)} what do you make of this?",
        author=user,
        mentions=[standin.bot_user_id],
        message_reference=reply_reference(standin, about),
    )
    return (await standin.wait_for_request(lambda r: is_reply_to(r, [question]), timeout=10)).json


async def test_an_opted_out_member_is_not_read_until_they_opt_in(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn, tiny_classifier: EmotionClassifier
) -> None:
    standin, bot, store = discord_standin, moodring_bot, moodring_bot.store
    text, emojis = reacting_text(tiny_classifier)
    bystander = await standin.add_user("bystander")
    await enable_reactions(bot, standin)

    assert (await privacy(standin, "opt-out"))["content"] == OPTED_OUT
    assert (await privacy(standin, "opt-out"))["content"] == ALREADY_OPTED_OUT
    await store.flush()
    totals, recorded = await store.mood(standin.guild_id, None, 0, bot.clock() + 3600), store.recorded_total

    # Their messages: not analysed, nothing recorded, no reaction.
    mine = [await standin.dispatch_message(content=text) for _ in range(3)]
    await wait_until(lambda: bot.counters["skipped_opted_out"] == 3, what="the member's three messages skipped")
    await store.flush()
    assert await store.mood(standin.guild_id, None, 0, bot.clock() + 3600) == totals
    assert store.recorded_total == recorded and bot.counters["analyzed"] == 0
    marker = await standin.dispatch_message(content=text, author=bystander)  # reactions are added in order
    await wait_until(lambda: puts_for(standin, marker) == emojis, what="the bystander's reactions")
    assert [puts_for(standin, message) for message in mine] == [[], [], []]

    # Nobody can have them read: the menu and a reply-mention say so, politely, and read nothing.
    menu = await menu_answer(standin, mine[0], bystander)
    assert menu["type"] == 4 and menu["data"]["content"] == MEMBER_OPTED_OUT and not menu["data"].get("embeds")
    assert int(menu["data"]["flags"]) & EPHEMERAL
    reply = await mention_reply(standin, mine[1], bystander)
    assert reply["content"] == MEMBER_OPTED_OUT and not reply.get("embeds") and not reply.get("components")

    # What they type into /emotion themselves is read: they asked for it.
    asked = await slash(standin, "emotion", {"text": text})
    assert asked.json["type"] == 4 and asked.json["data"]["embeds"]

    # Opting in restores every reading.
    assert (await privacy(standin, "opt-in"))["content"] == OPTED_IN
    again = await standin.dispatch_message(content=text)
    await wait_until(lambda: puts_for(standin, again) == emojis, what="the member's reactions again")
    assert bot.counters["analyzed"] == 2  # the bystander's marker, and this one
    assert (await menu_answer(standin, again, bystander))["data"]["embeds"]
    assert (await mention_reply(standin, again, bystander))["embeds"]


async def test_nobody_can_correct_a_reading_of_an_opted_out_members_message(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    """A reading made before the member opted out: its **Not quite?** no longer takes a correction."""
    standin, store = discord_standin, moodring_bot.store
    await enable(standin)
    bystander = await standin.add_user("bystander")
    target = store_message(standin, "that new skin is so skibbly, I can't wait to try it")
    interaction = await standin.dispatch_context_menu("Analyze emotions", target, user=bystander)
    reading = await answer_of(standin, interaction)
    assert custom_ids(reading) == [NOT_QUITE_ID]
    await privacy(standin, "opt-out")
    refused = await press(standin, reading, user=bystander)
    assert refused["content"] == MEMBER_OPTED_OUT and not refused.get("components")
    assert await store.corrections(standin.guild_id) == []


async def test_the_choice_survives_a_restart(discord_standin: DiscordStandIn, make_moodring_bot: BotFactory) -> None:
    standin = discord_standin
    async with make_moodring_bot():
        await privacy(standin, "opt-out")
    async with make_moodring_bot() as bot:
        await standin.dispatch_message(content="I am so happy and grateful for this, thank you!")
        await wait_until(lambda: bot.counters["skipped_opted_out"] == 1, what="the message skipped after a restart")
        assert bot.counters["analyzed"] == 0
        assert (await privacy(standin, "opt-in"))["content"] == OPTED_IN


async def test_a_bot_honours_an_opt_out_another_process_recorded_within_the_promise(
    discord_standin: DiscordStandIn, make_moodring_bot: BotFactory, postgres_url: str
) -> None:
    """Another process of the cluster (a store of its own on the same PostgreSQL database) records the member's
    opt-out and then their opt-in; the bot, polling at the default interval, honours each within 10 s."""
    standin, member = discord_standin, discord_standin.user_id
    assert BotConfig.opt_out_refresh_s < PROMISED_S
    async with make_moodring_bot(database=postgres_url) as bot:
        store = bot.store
        async with await open_store(postgres_url, member_key=store.member_key) as other_process:
            await other_process.set_opted_out(member, True)
            await wait_until(lambda: store.is_opted_out(member), timeout=PROMISED_S, what="the opt-out honoured")
            await standin.dispatch_message(content="I am so happy and grateful for this, thank you!")
            await wait_until(lambda: bot.counters["skipped_opted_out"] == 1, what="the message skipped")
            await other_process.set_opted_out(member, False)
            await wait_until(lambda: not store.is_opted_out(member), timeout=PROMISED_S, what="the opt-in honoured")
        await standin.dispatch_message(content="I am so happy and grateful for this, thank you!")
        await wait_until(lambda: bot.counters["analyzed"] == 1, what="the message analysed again")


async def test_privacy_registers_its_choices(moodring_bot: MoodringBot, discord_standin: DiscordStandIn) -> None:
    """Discord (and the sandbox page, which lists what the bot registered) shows `choice` with its three values."""
    (option,) = synced_commands(discord_standin)["privacy"]["options"]
    assert option["name"] == "choice" and not option.get("required")
    assert [choice["value"] for choice in option["choices"]] == ["show", "opt-out", "opt-in"]


def test_the_refresh_interval_keeps_the_promise() -> None:
    """A process honours an opt-out within its poll interval plus the poll: an interval over half the promise, or
    none, is refused."""
    for interval in (PROMISED_S / 2 + 0.5, 0.0, -1.0):
        with pytest.raises(ConfigError, match="opt_out_refresh_s"):
            BotConfig(token="t", model_dir=Path("model"), opt_out_refresh_s=interval)
    assert BotConfig(token="t", model_dir=Path("model"), opt_out_refresh_s=PROMISED_S / 2).opt_out_refresh_s == 5
