"""The real `MoodringBot` (bot/app.py) against the Discord stand-in: `/emotion`, the "Analyze emotions" menu,
reply-mentions, auto-reactions and their settings, and how the bot behaves under load, faults and missing
permissions. Expected answers are computed with the same tiny model the bot serves."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from bot_fixtures import (
    ADMIN_PERMISSIONS,
    MEMBER_PERMISSIONS,
    BotFactory,
    message_body,
    store_message,
    wait_until,
)

from bot.app import NO_MODEL, MoodringBot
from bot.cogs.emotions import NOTHING_TO_READ, UNREADABLE
from bot.inference import DEFAULT_TIMEOUT
from bot.render import EMOJI
from bot.replies import SOMETHING_WENT_WRONG
from bot.store import ChannelSettings
from model import EmotionClassifier, Prediction
from model.text_preparation import clean_markup
from sandbox import DiscordStandIn, RecordedRequest, payloads

EPHEMERAL = payloads.MESSAGE_FLAG_EPHEMERAL
CALLBACK = "/interactions/{interaction_id}/{interaction_token}/callback"
CHANNEL_MESSAGES = "/channels/{channel_id}/messages"
#: Every way `on_message` can end for a human message in a server; together they account for all of them.
OUTCOMES = (
    "analyzed",
    "reply_mentions",
    "skipped_analysis_off",
    "skipped_opted_out",
    "skipped_empty",
    "skipped_unreadable",
    "skipped_no_model",
    "skipped_busy",
    "analysis_failed",
    "analysis_timed_out",
)
CANDIDATES = (
    "Thank you so much, this is the best gift ever! I love it!",
    "I can't believe you remembered my birthday, that's so sweet.",
    "This is awful, I'm so angry and disappointed right now.",
    "Wow, I did not expect that at all. What happened?",
    "I'm scared and nervous about the exam tomorrow.",
    "Haha that is hilarious, you made my day!",
    "I'm so sorry for your loss, my thoughts are with you.",
    "Congratulations, I'm so proud of you!",
    "Ugh, this is so annoying and I hate it.",
    "I hope everything works out for you, good luck!",
)


# ----------------------------------------------------------------------------------------------- helpers


def predict(classifier: EmotionClassifier, raw: str) -> Prediction:
    """What the bot computes for a message: the prepared text through the same model, top 5."""
    return classifier.predict([clean_markup(raw)], top_k=5)[0]


def reacting_text(classifier: EmotionClassifier) -> tuple[str, list[str]]:
    """A text and the emoji the bot reacts to it with (its first three labels above their thresholds), chosen so
    that no score is so close to its threshold, or the first four labels to each other, that the float rounding
    of another batch size could change the answer."""
    for text in CANDIDATES:
        ranked = classifier.predict([clean_markup(text)], top_k=len(classifier.labels))[0].top
        margins = [abs(s.score - classifier.thresholds[classifier.labels.index(s.label)]) for s in ranked]
        above = [s.probability for s in ranked if s.above_threshold][:4]  # the first four labels, as ranked
        gaps = [a - b for a, b in itertools.pairwise(above)]
        if above and min(margins) > 1e-4 and min(gaps, default=1.0) > 1e-5:
            return text, [EMOJI[label] for label in predict(classifier, text).labels[:3]]
    pytest.fail("no candidate text has a clear label above its threshold with the tiny model")


def fields(embed: Mapping[str, Any]) -> dict[str, str]:
    return {field["name"]: field["value"] for field in embed.get("fields", [])}


def assert_embed_shows(embed: Mapping[str, Any], prediction: Prediction) -> None:
    """Five ranked emotions (as the model ranks them: ✅ first, each group by descending probability, the
    percentage being the calibrated probability), the Ekman group and the sentiment."""
    values = fields(embed)
    lines = values["Top emotions"].splitlines()
    assert len(lines) == 5
    shown = [re.search(r"\*\*(\w+)\*\*", line).group(1) for line in lines]  # type: ignore[union-attr]
    assert shown == [s.label for s in prediction.top]
    percents = [re.search(r"(\d+)%$", line).group(1) for line in lines]  # type: ignore[union-attr]
    marked = [line.startswith("✅") for line in lines]
    assert marked == sorted(marked, reverse=True)
    for group in (True, False):
        within = [int(p) for p, mark in zip(percents, marked, strict=True) if mark is group]
        assert within == sorted(within, reverse=True)
    assert [f"{p}%" for p in percents] == [f"{s.probability:.0%}" for s in prediction.top]
    assert [line.startswith("✅") for line in lines] == [s.above_threshold for s in prediction.top]
    assert values["Ekman group"] == ", ".join(prediction.ekman)
    assert values["Sentiment"] == ", ".join(prediction.sentiment)


def assert_within_discord_limits(embed: Mapping[str, Any]) -> None:
    total = len(embed.get("title", "")) + len(embed.get("description", ""))
    assert len(embed.get("title", "")) <= 256
    assert len(embed.get("description", "")) <= 4096
    assert len(embed.get("fields", [])) <= 25
    for field in embed.get("fields", []):
        assert 0 < len(field["name"]) <= 256 and 0 < len(field["value"]) <= 1024
        total += len(field["name"]) + len(field["value"])
    footer = embed.get("footer", {}).get("text", "")
    assert len(footer) <= 2048
    assert total + len(footer) <= 6000


def mention_of_bot(standin: DiscordStandIn) -> str:
    return f"<@{standin.bot_user_id}>"


def reply_reference(standin: DiscordStandIn, message: Mapping[str, Any], channel_id: int | None = None) -> dict:
    return payloads.message_reference(int(message["id"]), channel_id or standin.channel_id, standin.guild_id)


def puts_for(standin: DiscordStandIn, message: Mapping[str, Any]) -> list[str]:
    """The emoji of the reaction PUTs that succeeded for a message, in order."""
    attempts = standin.requests_to("PUT", f"/messages/{message['id']}/reactions/")
    return [r.params["emoji"] for r in attempts if r.status == 204]


def outcomes(bot: MoodringBot) -> int:
    return sum(bot.counters[name] for name in OUTCOMES)


def is_reply_to(request: RecordedRequest, questions: list[Mapping[str, Any]]) -> bool:
    """`request` is the bot's reply to one of `questions` (messages that mention it)."""
    if request.method != "POST" or request.route != CHANNEL_MESSAGES or not isinstance(request.json, dict):
        return False
    return (request.json.get("message_reference") or {}).get("message_id") in {int(q["id"]) for q in questions}


def replies_to(standin: DiscordStandIn, questions: list[Mapping[str, Any]], since: int = 0) -> list[RecordedRequest]:
    return [r for r in standin.requests[since:] if is_reply_to(r, questions)]


async def mention_barrier(
    standin: DiscordStandIn, about: Mapping[str, Any], *, channel_id: int | None = None, author: int | None = None
) -> RecordedRequest:
    """Ask the bot to read `about` (fetching it, like any uncached message) and wait for its reply.

    Messages are handled in the order they arrive and readings are answered in order, so once this marker is
    answered, whatever the bot was going to send for the messages before it has been sent."""
    channel = channel_id or standin.channel_id
    marker = await standin.dispatch_message(
        channel,
        content=f"{mention_of_bot(standin)} marker",
        author=author,
        mentions=[standin.bot_user_id],
        message_reference=reply_reference(standin, about, channel),
    )
    return await standin.wait_for_request(lambda r: is_reply_to(r, [marker]), timeout=10)


async def reaction_barrier(
    bot: MoodringBot, standin: DiscordStandIn, channel_id: int, text: str, expected: list[str]
) -> Mapping[str, Any]:
    """Switch reactions on in `channel_id` and wait for a marker message's reactions there.

    Each channel's reactions are added in order, so once the marker's are in, any reaction queued before it
    has been added."""
    await enable_reactions(bot, standin, channel_id)
    marker = await standin.dispatch_message(channel_id, content=text)
    await wait_until(lambda: puts_for(standin, marker) == expected, what="the marker's reactions")
    return marker


async def slash(standin: DiscordStandIn, name: str, options: Mapping[str, Any] | None = None, **kwargs: Any):
    """Run a slash command; the interaction callback the bot answered with."""
    interaction = await standin.dispatch_slash_command(name, options, **kwargs)
    return await standin.wait_for_interaction_response(interaction)


async def enable_reactions(bot: MoodringBot, standin: DiscordStandIn, channel_id: int | None = None) -> None:
    assert bot.store is not None
    await bot.store.set_channel_settings(standin.guild_id, channel_id or standin.channel_id, reactions=True)


# ----------------------------------------------------------------------------------------------- commands


async def test_emotion_command_answers_with_ranked_emotions(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn, tiny_classifier: EmotionClassifier
) -> None:
    standin = discord_standin
    text = "I can't believe you remembered my birthday! Thank you <@123456789012345678> <:party_blob:1234567890>"
    callback = await slash(standin, "emotion", {"text": text})
    assert callback.status in (200, 204) and callback.json["type"] == 4
    data = callback.json["data"]
    assert not (data.get("flags") or 0) & EPHEMERAL
    (embed,) = data["embeds"]
    assert embed["title"] == "Emotions"
    assert embed["description"] == "> I can't believe you remembered my birthday! Thank you [NAME] party blob"
    assert_embed_shows(embed, predict(tiny_classifier, text))
    assert data["allowed_mentions"]["parse"] == []

    private = await slash(standin, "emotion", {"text": text, "ephemeral": True})
    assert private.json["type"] == 4 and private.json["data"]["flags"] & EPHEMERAL
    assert fields(private.json["data"]["embeds"][0]) == fields(embed)
    assert standin.unknown_requests == []


async def test_analyze_emotions_context_menu(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn, tiny_classifier: EmotionClassifier
) -> None:
    standin = discord_standin
    target = await standin.dispatch_message(content="This is the worst day ever, I'm so angry at everyone.")
    await wait_until(lambda: moodring_bot.counters["analyzed"] == 1, what="the message analysed")  # batches of one
    interaction = await standin.dispatch_context_menu("Analyze emotions", target)
    callback = await standin.wait_for_interaction_response(interaction)
    assert callback.json["type"] == 4
    data = callback.json["data"]
    assert data["flags"] & EPHEMERAL
    (embed,) = data["embeds"]
    assert embed["title"] == "Emotions in Test User's message"
    assert embed["description"] == "> This is the worst day ever, I'm so angry at everyone."
    assert embed["url"] == f"https://discord.com/channels/{standin.guild_id}/{standin.channel_id}/{target['id']}"
    assert_embed_shows(embed, predict(tiny_classifier, target["content"]))


async def test_reply_mention_fetches_an_uncached_message_and_replies_without_pinging(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn, tiny_classifier: EmotionClassifier
) -> None:
    standin = discord_standin
    target = store_message(standin, "I'm really nervous about tomorrow, what if it all goes wrong?")
    since = len(standin.requests)
    question = await standin.dispatch_message(
        content=f"{mention_of_bot(standin)} how does this sound?",
        mentions=[standin.bot_user_id],
        message_reference=reply_reference(standin, target),
    )
    assert "referenced_message" not in question  # discord.py has to fetch it
    post = await standin.wait_for_request(method="POST", route=CHANNEL_MESSAGES, since=since)
    fetches = standin.requests_to("GET", f"/channels/{standin.channel_id}/messages/{target['id']}")
    assert [r.status for r in fetches] == [200] and fetches[0].at <= post.at
    assert post.status == 200
    body = post.json
    assert body["message_reference"]["message_id"] == int(question["id"])
    assert body["allowed_mentions"] == {"parse": [], "replied_user": False}
    (embed,) = body["embeds"]
    assert embed["title"] == "Emotions in Test User's message"
    assert embed["url"].endswith(f"/{standin.channel_id}/{target['id']}")
    assert_embed_shows(embed, predict(tiny_classifier, target["content"]))
    sent = standin.message(post.response["id"])
    assert sent is not None and sent["mentions"] == [] and not sent["mention_everyone"]
    assert moodring_bot.counters["reply_mentions"] == 1


async def test_only_an_explicit_mention_asks_for_a_reading(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    """A reply that pings the bot's message (Discord lists the bot in `mentions`) or @everyone is not a request;
    @mentioning the bot, or its own role, is."""
    standin = discord_standin
    bot_role = standin.world.bot_role_id(standin.guild_id)
    await moodring_bot.store.set_channel_settings(standin.guild_id, standin.channel_id, analysis=False)
    bots_message = await standin.dispatch_message(content="earlier answer", author=standin.bot_user_id)
    since = len(standin.requests)
    await standin.dispatch_message(
        content="thanks!", mentions=[standin.bot_user_id], message_reference=reply_reference(standin, bots_message)
    )
    await standin.dispatch_message(
        content="@everyone look at this", mention_everyone=True, referenced_message=bots_message
    )
    target = await standin.dispatch_message(content="so happy for you all")
    questions = [
        await standin.dispatch_message(
            content=f"{mention_of_bot(standin)} this one", mentions=[standin.bot_user_id], referenced_message=target
        ),
        # Picking "@MoodRing" in Discord's autocomplete may give the bot's managed role instead of its user.
        await standin.dispatch_message(
            content=f"<@&{bot_role}> and this?", mention_roles=[bot_role], referenced_message=target
        ),
    ]
    await wait_until(lambda: outcomes(moodring_bot) == 5, what="five messages handled")
    marker = await mention_barrier(standin, target)
    answered = [r.json["message_reference"]["message_id"] for r in standin.requests[since:] if r.method == "POST"]
    assert answered == [int(q["id"]) for q in questions] + [marker.json["message_reference"]["message_id"]]
    assert sorted(r.method for r in standin.requests[since:]) == ["GET", "POST", "POST", "POST"]  # the marker fetches
    assert moodring_bot.counters["reply_mentions"] == 3
    assert moodring_bot.counters["skipped_analysis_off"] == 3


# ----------------------------------------------------------------------------------------------- reactions and settings


async def test_admin_enables_auto_reactions(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn, tiny_classifier: EmotionClassifier
) -> None:
    standin = discord_standin
    bot = moodring_bot
    callback = await slash(standin, "moodring channel", {"reactions": True}, member_permissions=ADMIN_PERMISSIONS)
    assert callback.json["type"] == 4
    data = callback.json["data"]
    assert data["flags"] & EPHEMERAL and data["content"].startswith("Updated.")
    assert "auto-reactions **on**" in data["content"]
    assert await bot.store.channel_settings(standin.guild_id, standin.channel_id) == ChannelSettings(True, True)

    text, expected = reacting_text(tiny_classifier)
    quiet = await standin.add_text_channel("quiet")  # reactions off by default
    unreacted = await standin.dispatch_message(quiet, content=text)
    reacted = await standin.dispatch_message(content=text)
    await wait_until(lambda: bot.counters["reactions_added"] == len(expected), what="reactions")
    await wait_until(lambda: bot.counters["analyzed"] == 2, what="both messages analysed")
    await reaction_barrier(bot, standin, quiet, text, expected)
    assert 1 <= len(expected) <= 3
    assert puts_for(standin, reacted) == expected
    assert standin.reactions(reacted["id"]) == {emoji: [standin.bot_user_id] for emoji in expected}
    assert standin.requests_to("PUT", f"/messages/{unreacted['id']}/") == []
    assert bot.counters["reactions_added"] == 2 * len(expected)  # the message here and the marker


async def test_non_admin_cannot_change_channel_settings(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    standin = discord_standin
    callback = await slash(standin, "moodring channel", {"reactions": True}, member_permissions=MEMBER_PERMISSIONS)
    assert callback.json["type"] == 4
    data = callback.json["data"]
    assert data["flags"] & EPHEMERAL
    assert "Manage Server" in data["content"]
    assert data["allowed_mentions"]["parse"] == []
    assert await moodring_bot.store.guild_channel_settings(standin.guild_id) == {}


async def test_messages_from_bots_and_webhooks_are_ignored(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn, tiny_classifier: EmotionClassifier
) -> None:
    standin = discord_standin
    bot = moodring_bot
    await enable_reactions(bot, standin)
    text, expected = reacting_text(tiny_classifier)
    target = store_message(standin, text)
    since = len(standin.requests)
    ask = f"{mention_of_bot(standin)} {text}"
    await standin.dispatch_message(
        content=ask, bot=True, mentions=[standin.bot_user_id], message_reference=reply_reference(standin, target)
    )
    await standin.dispatch_message(content=ask, webhook_id=payloads.snowflake())
    human = await standin.dispatch_message(content=text)  # processed after the two above
    await wait_until(lambda: bot.counters["reactions_added"] == len(expected), what="the human message's reactions")
    marker = await mention_barrier(standin, target)  # the same request as the ignored ones, from a human
    assert {k: v for k, v in bot.counters.items() if v} == {
        "messages_seen": 2,
        "analyzed": 1,
        "reactions_added": len(expected),
        "reply_mentions": 1,
    }
    sent = [r for r in standin.requests[since:] if r is not marker and f"/messages/{target['id']}" not in r.path]
    assert len(sent) == len(expected)
    assert all(r.method == "PUT" and f"/messages/{human['id']}/" in r.path for r in sent)


async def test_rate_limited_reaction_is_waited_out(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn, tiny_classifier: EmotionClassifier
) -> None:
    standin = discord_standin
    bot = moodring_bot
    await enable_reactions(bot, standin)
    text, expected = reacting_text(tiny_classifier)
    rule = standin.fail_next("PUT", "/reactions/", status=429, retry_after=0.3)
    message = await standin.dispatch_message(content=text)
    await wait_until(lambda: bot.counters["reactions_added"] == len(expected), what="reactions after the 429")
    attempts = standin.requests_to("PUT", f"/messages/{message['id']}/reactions/")
    assert [r.status for r in attempts] == [429] + [204] * len(expected)
    assert attempts[0].params["emoji"] == attempts[1].params["emoji"] == expected[0]
    assert attempts[1].at - attempts[0].at >= 0.25
    assert rule.hits == 1
    assert standin.reactions(message["id"]) == {emoji: [standin.bot_user_id] for emoji in expected}
    assert bot.counters["reactions_failed"] == 0


# ----------------------------------------------------------------------------------------------- mentions, faults, load


async def test_nothing_the_bot_sends_can_ping(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn, tiny_classifier: EmotionClassifier
) -> None:
    """Every path that answers with (or about) user text carries `allowed_mentions` with nothing to parse."""
    standin = discord_standin
    ping = f"@everyone @here <@{standin.user_id}> <@&{standin.guild_id}>"
    text = f"{ping} I love you all, this is wonderful news!"
    me = mention_of_bot(standin)
    no_embeds = await standin.add_text_channel(
        "no-embeds",
        overwrites=[
            payloads.overwrite(standin.bot_user_id, type=payloads.OVERWRITE_MEMBER, deny=payloads.PERM_EMBED_LINKS)
        ],
    )
    callbacks = [
        await slash(standin, "emotion", {"text": text}),
        await slash(standin, "emotion", {"text": ping}),  # nothing left to read
        await slash(standin, "moodring channel", {"reactions": False}, member_permissions=ADMIN_PERMISSIONS),
        await slash(standin, "moodring channel", {"reactions": True}, member_permissions=MEMBER_PERMISSIONS),
    ]
    target = await standin.dispatch_message(content=text, mentions=[standin.user_id], mention_everyone=True)
    menu = await standin.dispatch_context_menu("Analyze emotions", target)
    callbacks.append(await standin.wait_for_interaction_response(menu))
    assert callbacks[1].json["data"]["content"] == NOTHING_TO_READ
    assert callbacks[3].json["data"]["flags"] & EPHEMERAL

    for channel_id, content in ((standin.channel_id, text), (no_embeds, text), (standin.channel_id, ping)):
        since = len(standin.requests)
        replied_to = await standin.dispatch_message(channel_id, content=content)
        await standin.dispatch_message(
            channel_id, content=f"{me} {ping}", mentions=[standin.bot_user_id], referenced_message=replied_to
        )
        await standin.wait_for_request(method="POST", route=CHANNEL_MESSAGES, since=since)
    mood = await standin.dispatch_slash_command("mood", {"period": "24h"})
    await standin.wait_for_request(method="POST", route="/webhooks/{application_id}/{interaction_token}")
    assert standin.interaction(mood).response_type == 5

    checked: dict[str, int] = {}
    for request in standin.requests:
        body = message_body(request)
        if body is None:
            continue
        checked[request.route or ""] = checked.get(request.route or "", 0) + 1
        allowed = body.get("allowed_mentions")
        assert allowed is not None, f"{request.method} {request.path} has no allowed_mentions"
        assert allowed.get("parse") == [], request
        assert not allowed.get("users") and not allowed.get("roles"), request
        if "message_reference" in body:
            assert allowed.get("replied_user") is False, request
    assert checked[CALLBACK] == 5
    assert checked[CHANNEL_MESSAGES] == 3
    assert checked["/webhooks/{application_id}/{interaction_token}"] >= 1
    texts = [m["content"] for m in standin.bot_messages()]
    assert any("[NAME]" in t for t in texts)  # the plain-text reply quotes the text, mentions masked
    for sent in standin.bot_messages():
        assert sent["mentions"] == [] and sent["mention_roles"] == [] and not sent["mention_everyone"], sent


async def test_gateway_drop_resumes_and_keeps_answering(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    standin = discord_standin
    await standin.drop_gateway()
    missed = await standin.dispatch_message(content="sent while the bot was disconnected, so exciting!")
    await standin.wait_until_resumed()
    assert (standin.identify_count, standin.resume_count) == (1, 1)
    assert standin.gateway.connect_urls[-1].startswith("/resume?")
    await wait_until(lambda: moodring_bot.counters["analyzed"] == 1, what="the replayed message analysed")
    callback = await slash(standin, "emotion", {"text": missed["content"]})
    assert callback.status in (200, 204) and callback.json["type"] == 4
    assert fields(callback.json["data"]["embeds"][0])["Top emotions"]


@pytest.mark.timing
async def test_burst_of_messages_is_accounted_for_and_the_loop_stays_responsive(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn, tiny_classifier: EmotionClassifier
) -> None:
    standin = discord_standin
    bot = moodring_bot
    await enable_reactions(bot, standin)
    text, expected = reacting_text(tiny_classifier)
    # The first reaction waits out a 429, so messages pile up behind it: the backlog must stay bounded.
    standin.fail_next("PUT", "/reactions/", status=429, retry_after=1.0)
    loop = asyncio.get_running_loop()
    stalls: list[float] = []
    stop = asyncio.Event()

    async def probe() -> None:
        while not stop.is_set():
            started = loop.time()
            await asyncio.sleep(0.005)
            stalls.append(loop.time() - started - 0.005)

    prober = asyncio.create_task(probe())
    started = time.monotonic()
    burst = []
    for _ in range(200):
        burst.append(await standin.dispatch_message(content=text))
        # The stand-in runs on this loop too, and sending a frame does not always suspend: let the loop turn
        # between messages, as it would between frames arriving from Discord, so the probe measures the bot.
        await asyncio.sleep(0)
    await wait_until(lambda: outcomes(bot) >= 200, timeout=30, what="all 200 messages handled")

    def reacted() -> int:
        return sum(1 for message in burst if puts_for(standin, message))

    def added() -> int:
        return sum(len(puts_for(standin, message)) for message in burst)

    def drained() -> bool:
        accepted = bot.counters["analyzed"] - bot.counters["reactions_skipped_backlog"]
        return added() == accepted * len(expected) == bot.counters["reactions_added"]

    await wait_until(drained, timeout=30, what="every reaction added or counted as skipped")
    elapsed = time.monotonic() - started
    stop.set()
    await prober

    counters = bot.counters
    assert counters["messages_seen"] == 200
    assert outcomes(bot) == 200, dict(counters)
    assert counters["analyzed"] + counters["skipped_busy"] == 200, dict(counters)
    assert counters["reactions_skipped_backlog"] > 0
    assert reacted() == counters["analyzed"] - counters["reactions_skipped_backlog"]
    assert all(puts_for(standin, message) in ([], expected) for message in burst)
    assert bot.store is not None
    await bot.store.flush()
    totals = await bot.store.mood(standin.guild_id, standin.channel_id, 0, bot.clock() + 3600)
    assert totals.messages == counters["analyzed"] == bot.inference.served, dict(counters)
    assert len(stalls) > 10, f"probe ran {len(stalls)} times in {elapsed:.2f}s"
    assert max(stalls) < 0.1, f"event loop stalled {max(stalls) * 1000:.0f} ms (burst took {elapsed:.2f}s)"


async def test_without_a_model_the_bot_says_so(
    make_moodring_bot: BotFactory, discord_standin: DiscordStandIn, tmp_path: Path
) -> None:
    standin = discord_standin
    empty = tmp_path / "no-model"
    empty.mkdir()
    async with make_moodring_bot(model_dir=empty) as bot:
        assert not bot.inference.ready and not bot.retrainer.running
        callback = await slash(standin, "emotion", {"text": "hello there, friend"})
        assert callback.json["type"] == 4
        assert callback.json["data"]["content"] == NO_MODEL
        assert callback.json["data"]["flags"] & EPHEMERAL
        target = await standin.dispatch_message(content="so glad to see you")
        await standin.dispatch_message(
            content=f"{mention_of_bot(standin)} ?", mentions=[standin.bot_user_id], referenced_message=target
        )
        post = await standin.wait_for_request(method="POST", route=CHANNEL_MESSAGES)
        assert post.json["content"] == NO_MODEL
        await wait_until(lambda: outcomes(bot) == 2, what="both messages handled")
        assert bot.counters["skipped_no_model"] == 1
        assert not bot.is_closed()


async def test_empty_messages_are_skipped_and_huge_ones_fit_in_an_embed(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn, tiny_classifier: EmotionClassifier
) -> None:
    standin = discord_standin
    bot = moodring_bot
    await standin.dispatch_message(content="")
    await standin.dispatch_message(content="", attachments=[("cat.png", b"\x89PNG\r\n\x1a\n", "image/png")])
    await standin.dispatch_message(content="", sticker_items=[payloads.snowflake()])
    await standin.dispatch_message(content="https://example.com/cat.gif `code`")
    await wait_until(lambda: bot.counters["skipped_empty"] == 4, what="four empty messages skipped")

    line = "I am so incredibly happy and grateful for all of you, " + "x" * 900 + "\n"
    huge = (line * 11)[:10_000]
    assert len(huge) == 10_000
    target = await standin.dispatch_message(content=huge)
    await wait_until(lambda: bot.counters["analyzed"] == 1, what="the huge message analysed")
    assert outcomes(bot) == 5

    menu = await standin.dispatch_context_menu("Analyze emotions", target)
    callback = await standin.wait_for_interaction_response(menu)
    (from_menu,) = callback.json["data"]["embeds"]
    since = len(standin.requests)
    await standin.dispatch_message(
        content=f"{mention_of_bot(standin)} read this", mentions=[standin.bot_user_id], referenced_message=target
    )
    post = await standin.wait_for_request(method="POST", route=CHANNEL_MESSAGES, since=since)
    assert post.status == 200
    (from_reply,) = post.json["embeds"]
    prediction = predict(tiny_classifier, huge)
    for embed in (from_menu, from_reply):
        assert_within_discord_limits(embed)
        assert embed["description"].startswith("> I am so incredibly happy") and embed["description"].endswith("…")
        assert_embed_shows(embed, prediction)


async def test_a_message_the_model_cannot_read_gets_no_neutral_reading(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn, tiny_classifier: EmotionClassifier
) -> None:
    """Text that is only `[UNK]` and punctuation to the model: `/emotion`, the menu and a reply-mention say so,
    automatic analysis skips it (no statistics, no reactions). Emoji alone are read (text preparation 2)."""
    standin = discord_standin
    bot = moodring_bot
    unreadable = "𓀀𓀁 !!"  # Egyptian hieroglyphs: no emoji, and unknown to the MiniLM tokenizer
    assert tiny_classifier.predict([unreadable])[0].unreadable
    await enable_reactions(bot, standin)

    callback = await slash(standin, "emotion", {"text": unreadable})
    assert callback.json["data"]["content"] == UNREADABLE and callback.json["data"]["flags"] & EPHEMERAL
    assert not callback.json["data"].get("embeds")

    target = await standin.dispatch_message(content=unreadable)
    await wait_until(lambda: bot.counters["skipped_unreadable"] == 1, what="the message skipped")
    menu = await standin.dispatch_context_menu("Analyze emotions", target)
    callback = await standin.wait_for_interaction_response(menu)
    assert callback.json["data"]["content"] == UNREADABLE and callback.json["data"]["flags"] & EPHEMERAL
    assert not callback.json["data"].get("embeds")

    since = len(standin.requests)
    question = await standin.dispatch_message(
        content=f"{mention_of_bot(standin)} what's this?", mentions=[standin.bot_user_id], referenced_message=target
    )
    post = await standin.wait_for_request(lambda r: is_reply_to(r, [question]), since=since, timeout=10)
    assert post.json["content"] == UNREADABLE and not post.json.get("embeds") and not post.json.get("components")

    skulls = await standin.dispatch_message(content="💀💀")
    await wait_until(lambda: bot.counters["analyzed"] == 1, what="the emoji-only message analysed")
    assert not predict(tiny_classifier, skulls["content"]).unreadable
    assert outcomes(bot) == 3 and bot.counters["skipped_unreadable"] == 1
    assert bot.store is not None
    await bot.store.flush()
    assert (await bot.store.mood(standin.guild_id, standin.channel_id, 0, bot.clock() + 3600)).messages == 1
    assert puts_for(standin, target) == []


async def test_missing_permissions_fall_back_or_skip(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn, tiny_classifier: EmotionClassifier
) -> None:
    standin = discord_standin
    bot = moodring_bot
    text, expected = reacting_text(tiny_classifier)

    def denied(permission: int) -> list[dict]:
        return [payloads.overwrite(standin.bot_user_id, type=payloads.OVERWRITE_MEMBER, deny=permission)]

    no_embeds = await standin.add_text_channel("no-embeds", overwrites=denied(payloads.PERM_EMBED_LINKS))
    target = await standin.dispatch_message(no_embeds, content=text + " " + "so much joy " * 300)
    await wait_until(lambda: bot.counters["analyzed"] == 1, what="the message analysed")  # then a batch of one
    await standin.dispatch_message(
        no_embeds, content=f"{mention_of_bot(standin)} ?", mentions=[standin.bot_user_id], referenced_message=target
    )
    post = await standin.wait_for_request(method="POST", path=f"/channels/{no_embeds}/messages")
    assert post.status == 200
    assert not post.json.get("embeds")
    content = post.json["content"]
    assert 0 < len(content) <= 2000
    prediction = predict(tiny_classifier, target["content"])
    assert content.startswith("> " + text)
    for score in prediction.top:
        assert f"**{score.label}**" in content
    assert f"Sentiment: {', '.join(prediction.sentiment)}" in content

    no_reactions = await standin.add_text_channel("no-reactions", overwrites=denied(payloads.PERM_ADD_REACTIONS))
    await enable_reactions(bot, standin, no_reactions)
    message = await standin.dispatch_message(no_reactions, content=text)
    await wait_until(lambda: bot.counters["reactions_forbidden"] == 1, what="the skipped reaction counted")
    await standin.set_permission_overwrite(no_reactions, standin.bot_user_id, member=True)  # Add Reactions back
    await reaction_barrier(bot, standin, no_reactions, text, expected)
    assert standin.requests_to("PUT", f"/messages/{message['id']}/") == []
    assert bot.counters["reactions_added"] == len(expected)  # the marker's only


async def test_the_token_never_reaches_the_logs(
    make_moodring_bot: BotFactory,
    discord_standin: DiscordStandIn,
    tiny_classifier: EmotionClassifier,
    caplog: pytest.LogCaptureFixture,
) -> None:
    standin = discord_standin
    caplog.set_level(logging.DEBUG, logger="discord")
    caplog.set_level(logging.DEBUG, logger="bot")
    text, expected = reacting_text(tiny_classifier)
    async with make_moodring_bot() as bot:
        await enable_reactions(bot, standin)
        await slash(standin, "emotion", {"text": text})
        message = await standin.dispatch_message(content=text)
        await wait_until(lambda: len(puts_for(standin, message)) == len(expected), what="reactions")
        await standin.drop_gateway()
        await standin.wait_until_resumed()
        await slash(standin, "emotion", {"text": text})
        assert standin.token not in repr(bot.config)
    names = {record.name for record in caplog.records}
    assert {"discord.http", "discord.gateway", "bot.app"} <= names  # DEBUG logging really was on
    assert any(record.levelno == logging.DEBUG and "RESUME" in record.getMessage() for record in caplog.records)
    token_parts = [standin.token, standin.token.rsplit(".", 1)[-1]]  # the whole token and its secret part
    for record in caplog.records:
        rendered = record.getMessage() + repr(record.args) + (record.exc_text or "")
        for part in token_parts:
            assert part not in rendered, f"token in a {record.name} log record"


# ----------------------------------------------------------------------------------------------- flood limits


def is_slow_down(request: RecordedRequest) -> bool:
    body = message_body(request) or {}
    return "Slow down" in (body.get("content") or "") and not body.get("embeds")


def answered(answers: list[RecordedRequest]) -> dict[int, str]:
    """{id of the message replied to: "reading" or "slow down"} for the bot's replies."""
    kinds = {}
    for r in answers:
        kinds[r.json["message_reference"]["message_id"]] = "slow down" if is_slow_down(r) else "reading"
    assert len(kinds) == len(answers), "a message got two answers"
    return kinds


def expected_answers(flood: list[Mapping[str, Any]], limit: int) -> dict[int, str]:
    """The first `limit` messages of a flood are read, the next one gets the slow-down, the rest nothing."""
    return {int(m["id"]): "reading" for m in flood[:limit]} | {int(flood[limit]["id"]): "slow down"}


async def flood_of_mentions(
    standin: DiscordStandIn, about: Mapping[str, Any], authors: list[int], count: int = 50
) -> list[Mapping[str, Any]]:
    """`count` reply-mentions asking about `about` (not cached: each reading fetches it), round-robin over
    `authors`, sent within one second."""
    started = time.monotonic()
    flood = [
        await standin.dispatch_message(
            content=f"{mention_of_bot(standin)} what about this? ({i})",
            author=authors[i % len(authors)],
            mentions=[standin.bot_user_id],
            message_reference=reply_reference(standin, about),
        )
        for i in range(count)
    ]
    assert time.monotonic() - started < 1.0
    return flood


@pytest.mark.timing
async def test_a_member_flooding_mentions_gets_a_few_readings_and_one_slow_down(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    standin = discord_standin
    bot = moodring_bot
    limit = bot.config.readings_per_user
    assert 1 <= limit < bot.config.readings_per_channel
    await bot.store.set_channel_settings(standin.guild_id, standin.channel_id, analysis=False)
    target = store_message(standin, "I'm so happy for you, congratulations!")
    since = len(standin.requests)
    flood = await flood_of_mentions(standin, target, [standin.user_id])
    await wait_until(lambda: len(replies_to(standin, flood, since)) >= limit + 1, what="the readings and a slow-down")
    bystander = await standin.add_user("bystander")
    await mention_barrier(standin, target, author=bystander)  # another member in the same channel is not limited

    answers = replies_to(standin, flood, since)
    assert answered(answers) == expected_answers(flood, limit)
    assert all(r.json["allowed_mentions"] == {"parse": [], "replied_user": False} for r in answers)
    fetches = standin.requests_to("GET", f"/messages/{target['id']}")
    assert len(fetches) == limit + 1  # the readings and the marker: nothing for the refused mentions
    assert bot.inference.served == limit + 1
    assert bot.counters["reply_mentions"] == 51 and bot.counters["readings_refused"] == 50 - limit

    # The next window reads again, and warns again at most once.
    bot.clock = lambda: time.time() + bot.config.reading_window_s + 1
    since = len(standin.requests)
    again = await flood_of_mentions(standin, target, [standin.user_id], count=limit + 3)
    await wait_until(lambda: len(replies_to(standin, again, since)) >= limit + 1, what="the next window's answers")
    await mention_barrier(standin, target, author=bystander)
    assert answered(replies_to(standin, again, since)) == expected_answers(again, limit)


@pytest.mark.timing
async def test_a_channel_flooded_by_many_members_gets_one_slow_down(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    standin = discord_standin
    bot = moodring_bot
    limit = bot.config.readings_per_channel
    await bot.store.set_channel_settings(standin.guild_id, standin.channel_id, analysis=False)
    target = store_message(standin, "What a wonderful surprise, thank you all!")
    members = [await standin.add_user(f"member{i}") for i in range(10)]
    assert len(members) * bot.config.readings_per_user > limit  # the channel's limit is reached first
    since = len(standin.requests)
    flood = await flood_of_mentions(standin, target, members)
    await wait_until(lambda: len(replies_to(standin, flood, since)) >= limit + 1, what="the readings and a slow-down")
    elsewhere = await standin.add_text_channel("elsewhere")
    await mention_barrier(standin, store_message(standin, "so glad", channel_id=elsewhere), channel_id=elsewhere)

    answers = replies_to(standin, flood, since)
    assert answered(answers) == expected_answers(flood, limit)
    assert all("this channel" in r.json["content"] for r in answers if is_slow_down(r))
    assert bot.inference.served == limit + 1


@pytest.mark.timing
async def test_a_member_flooding_emotion_gets_a_few_readings_and_one_slow_down(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    standin = discord_standin
    bot = moodring_bot
    limit = bot.config.readings_per_user
    started = time.monotonic()
    flood = [await standin.dispatch_slash_command("emotion", {"text": f"so happy, day {i}"}) for i in range(50)]
    assert time.monotonic() - started < 1.0
    bystander = await standin.add_user("bystander")
    marker = await slash(standin, "emotion", {"text": "the marker"}, user=bystander)  # handled after the flood
    assert marker.json["data"]["embeds"]
    await wait_until(
        lambda: sum(standin.interaction(i).response_type is not None for i in flood) >= limit + 1,
        what="the readings and a slow-down",
    )
    await slash(standin, "emotion", {"text": "another marker"}, user=bystander)

    answers = {r.params["interaction_id"]: r.json for r in standin.requests if r.route == CALLBACK}
    kinds = {
        str(i["id"]): "reading" if answers[str(i["id"])]["data"].get("embeds") else "slow down"
        for i in flood
        if str(i["id"]) in answers
    }
    assert kinds == {str(i["id"]): kind for i, kind in zip(flood, ["reading"] * limit + ["slow down"], strict=False)}
    slow_down = answers[str(flood[limit]["id"])]["data"]
    assert "Slow down" in slow_down["content"] and slow_down["flags"] & EPHEMERAL
    assert bot.inference.served == limit + 2


# ----------------------------------------------------------------------------------------------- loops and supervision


class BatcherKilled(BaseException):
    """Not an `Exception`: it ends the inference batcher's task, as a stray cancel would."""


async def test_analysis_goes_on_after_the_batcher_dies_mid_burst(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn, tiny_classifier: EmotionClassifier
) -> None:
    standin = discord_standin
    bot = moodring_bot
    classifier = bot.inference.classifier
    assert classifier is not None
    original = classifier.predict
    killed: list[int] = []

    def predict(texts, top_k):
        if len(killed) == 0 and bot.inference.batches >= 2:  # the third batch
            killed.append(len(texts))
            raise BatcherKilled
        return original(texts, top_k)

    classifier.predict = predict
    text, _ = reacting_text(tiny_classifier)
    for _ in range(60):
        await standin.dispatch_message(content=text)
        await asyncio.sleep(0)
    await wait_until(lambda: outcomes(bot) >= 60, timeout=30, what="every message of the burst handled")
    assert killed, "the batcher was never killed"
    counters = bot.counters
    assert counters["analysis_failed"] == killed[0], dict(counters)
    assert counters["analyzed"] == 60 - killed[0] == bot.inference.served, dict(counters)
    assert bot.store is not None
    await bot.store.flush()
    totals = await bot.store.mood(standin.guild_id, standin.channel_id, 0, bot.clock() + 3600)
    assert totals.messages == counters["analyzed"]
    callback = await slash(standin, "emotion", {"text": text})
    assert callback.json["data"]["embeds"]


async def test_a_reading_the_model_fails_on_is_answered_politely(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    standin = discord_standin
    bot = moodring_bot
    await bot.store.set_channel_settings(standin.guild_id, standin.channel_id, analysis=False)
    classifier = bot.inference.classifier
    assert classifier is not None
    original = classifier.predict
    failures: list[list[str]] = []

    def predict(texts, top_k):
        if len(failures) < 2:
            failures.append(texts)
            raise RuntimeError("out of memory")
        return original(texts, top_k)

    classifier.predict = predict
    callback = await slash(standin, "emotion", {"text": "so happy today"})
    assert callback.json["data"]["content"] == SOMETHING_WENT_WRONG and callback.json["data"]["flags"] & EPHEMERAL
    target = await standin.dispatch_message(content="I love this")
    since = len(standin.requests)
    question = await standin.dispatch_message(
        content=f"{mention_of_bot(standin)} ?", mentions=[standin.bot_user_id], referenced_message=target
    )
    reply = await standin.wait_for_request(lambda r: is_reply_to(r, [question]), since=since)
    assert reply.json["content"] == SOMETHING_WENT_WRONG
    assert len(failures) == 2
    callback = await slash(standin, "emotion", {"text": "so happy today"})
    assert callback.json["data"]["embeds"]


async def test_a_hung_model_call_never_holds_a_message_forever(
    make_moodring_bot: BotFactory, discord_standin: DiscordStandIn
) -> None:
    import threading

    standin = discord_standin
    release = threading.Event()
    async with make_moodring_bot() as bot:
        assert bot.inference.timeout == DEFAULT_TIMEOUT  # what on_message waits, at most
        bot.inference.timeout = 0.3  # the same bound, shortened for the test
        classifier = bot.inference.classifier
        assert classifier is not None
        original = classifier.predict
        classifier.predict = lambda texts, top_k: release.wait(30) and original(texts, top_k)
        try:
            await standin.dispatch_message(content="this one hits a stuck model")
            await wait_until(lambda: bot.counters["analysis_timed_out"] == 1, timeout=5, what="the analysis timed out")
        finally:
            release.set()
        del classifier.predict
        await standin.dispatch_message(content="and this one is read")
        await wait_until(lambda: bot.counters["analyzed"] == 1, what="the next message analysed")
        assert outcomes(bot) == 2


async def test_the_reaction_worker_survives_an_unexpected_error(
    moodring_bot: MoodringBot,
    discord_standin: DiscordStandIn,
    tiny_classifier: EmotionClassifier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error that is not a Discord HTTP error (here a dropped connection) while reacting to one message costs
    that message its reactions; the channel's worker logs it, backs off and goes on with the next message."""
    import aiohttp
    import discord

    standin = discord_standin
    bot = moodring_bot
    text, expected = reacting_text(tiny_classifier)
    sent = [await standin.dispatch_message(content=text) for _ in range(2)]  # reactions are off: none added
    await wait_until(lambda: bot.counters["analyzed"] == 2, what="both messages analysed")
    channel = bot.get_channel(standin.channel_id)
    first, second = [await channel.fetch_message(int(m["id"])) for m in sent]
    real_add_reaction = discord.Message.add_reaction
    failures: list[str] = []

    async def add_reaction(self: discord.Message, emoji: str) -> None:
        if not failures:
            failures.append(emoji)
            raise aiohttp.ClientConnectionError("Connection reset by peer")
        await real_add_reaction(self, emoji)

    monkeypatch.setattr(discord.Message, "add_reaction", add_reaction)
    queue = bot.get_cog("Emotions").reactions
    assert queue.submit(first, expected) and queue.submit(second, expected)  # both queued before the worker runs
    await wait_until(lambda: puts_for(standin, sent[1]) == expected, what="the second message's reactions")
    assert failures == expected[:1]
    assert puts_for(standin, sent[0]) == []
    assert bot.counters["reactions_failed"] == 1
    # The stand-in records the last PUT before the bot has read its answer and counted it: wait for the count.
    await wait_until(lambda: bot.counters["reactions_added"] == len(expected), what="the reactions counted")


async def test_closing_while_emotion_waits_answers_it_without_an_error(
    make_moodring_bot: BotFactory, discord_standin: DiscordStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """A shutdown while `/emotion` waits on the model fails that reading at once; its answer goes out if Discord's
    session is still open, else it is dropped quietly: no traceback, no "Task exception was never retrieved"."""
    import threading

    standin = discord_standin
    release = threading.Event()
    try:
        async with make_moodring_bot() as bot:
            classifier = bot.inference.classifier
            original = classifier.predict
            started = threading.Event()

            def stuck(texts, top_k):
                started.set()
                release.wait(30)
                return original(texts, top_k)

            classifier.predict = stuck
            interaction = await standin.dispatch_slash_command("emotion", {"text": "waiting for a stuck model"})
            await asyncio.to_thread(started.wait, 10)
            await bot.close()
            assert bot.is_closed() and interaction is not None
    finally:
        release.set()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_a_broken_model_is_one_clear_log_line_and_the_bot_still_runs(
    make_moodring_bot: BotFactory, tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    broken = Path(shutil.copytree(tiny_model_dir, tmp_path / "broken"))
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short
    async with make_moodring_bot(model_dir=broken) as bot:
        assert not bot.inference.ready
    (record,) = [r for r in caplog.records if r.name == "bot.app" and r.levelno >= logging.WARNING]
    assert "truncated or corrupt" in record.getMessage() and record.exc_info is None
