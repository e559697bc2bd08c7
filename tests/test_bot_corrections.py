"""Community corrections through the stand-in with the real discord.py client: the **Not quite?** button under every
reading, the picker, opt-in per server, a restart, one correction per member per message, the per-member limit,
`/moodring corrections`, and where the corrected text ends up in the database file (only there, only when on)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from bot_fixtures import ADMIN_PERMISSIONS, BotFactory, store_message, wait_until
from test_bot_store import database_files, rows_mentioning, traces

from bot.app import MoodringBot
from bot.cogs.corrections import GONE
from bot.learning.corrections import (
    ALREADY_CORRECTED,
    CORRECTIONS_OFF,
    EXPIRED,
    NOT_QUITE_ID,
    PICK,
    PICK_CLOSEST_ID,
    PICK_ONE_TO_THREE,
    PICK_OTHERS_ID,
    SEND_ID,
    model_version,
)
from bot.store import DEFAULT_RETENTION_DAYS
from model import EmotionClassifier
from model.text_preparation import clean_markup
from sandbox import DiscordStandIn, payloads

EPHEMERAL = payloads.MESSAGE_FLAG_EPHEMERAL
FOLLOWUP = "/webhooks/{application_id}/{interaction_token}"
TEXT = "that new skin is so skibbly, I can't wait to try it"
SENTINEL = "Wombatcloud4412"  # one token nobody else writes


# ----------------------------------------------------------------------------------------------- helpers


async def answer_of(standin: DiscordStandIn, interaction: Mapping[str, Any]) -> dict[str, Any]:
    """The message the bot answered `interaction` with: its reply, or the follow-up that replaced "thinking"."""
    callback = await standin.wait_for_interaction_response(interaction, timeout=10)
    if callback.json["type"] == 5:
        await standin.wait_for_request(
            lambda r: r.route == FOLLOWUP and r.params.get("interaction_token") == interaction["token"],
            method="POST",
            timeout=10,
        )
    message = standin.message(standin.interaction(interaction).original_message_id)
    assert message is not None
    return message


def custom_ids(message: Mapping[str, Any]) -> list[str]:
    return [c["custom_id"] for row in message.get("components") or [] for c in row["components"]]


def component(message: Mapping[str, Any], custom_id: str) -> dict[str, Any]:
    return next(c for row in message["components"] for c in row["components"] if c["custom_id"] == custom_id)


async def emotion_answer(standin: DiscordStandIn, text: str = TEXT, **kwargs: Any) -> dict[str, Any]:
    """`/emotion text` and the answer with its button."""
    interaction = await standin.dispatch_slash_command("emotion", {"text": text}, **kwargs)
    answer = await answer_of(standin, interaction)
    assert custom_ids(answer) == [NOT_QUITE_ID]
    return answer


async def press(standin: DiscordStandIn, answer: Mapping[str, Any], user: int | None = None) -> dict[str, Any]:
    """Press **Not quite?** under `answer`; what the member is shown."""
    return await answer_of(standin, await standin.dispatch_component(NOT_QUITE_ID, answer, user=user))


async def choose(
    standin: DiscordStandIn,
    picker: Mapping[str, Any],
    closest: Sequence[str],
    others: Sequence[str] = (),
    user: int | None = None,
) -> dict[str, Any]:
    """Set both selects (an empty list clears one), press Send; the Send interaction's callback body."""
    for custom_id, values in ((PICK_CLOSEST_ID, closest), (PICK_OTHERS_ID, others)):
        picked = await standin.dispatch_component(custom_id, picker, values=list(values), user=user)
        assert (await standin.wait_for_interaction_response(picked)).json["type"] == 6  # nothing to show
    sent = await standin.dispatch_component(SEND_ID, picker, user=user)
    return (await standin.wait_for_interaction_response(sent, timeout=10)).json


async def enable(standin: DiscordStandIn, action: str = "enable") -> str:
    interaction = await standin.dispatch_slash_command(
        "moodring corrections", {"action": action}, member_permissions=ADMIN_PERMISSIONS
    )
    return (await standin.wait_for_interaction_response(interaction)).json["data"]["content"]


def ranked_labels(classifier: EmotionClassifier, text: str) -> list[str]:
    return [s.label for s in classifier.predict([clean_markup(text)], top_k=None)[0].top]


def split_choice(picker: Mapping[str, Any], label: str) -> tuple[list[str], list[str]]:
    """`label` in whichever of the picker's two selects holds it."""
    closest = [o["value"] for o in component(picker, PICK_CLOSEST_ID)["options"]]
    return ([label], []) if label in closest else ([], [label])


# ----------------------------------------------------------------------------------------------- the flow


async def test_button_picker_send_stores_the_correction(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn, tiny_classifier: EmotionClassifier
) -> None:
    standin, store = discord_standin, moodring_bot.store
    assert "**on**" in await enable(standin)
    answer = await emotion_answer(standin)
    picker = await press(standin, answer)
    assert picker["content"] == PICK and int(picker["flags"]) & EPHEMERAL
    closest, others = component(picker, PICK_CLOSEST_ID), component(picker, PICK_OTHERS_ID)
    shown = [o["value"] for o in closest["options"]] + [o["value"] for o in others["options"]]
    ranked = ranked_labels(tiny_classifier, TEXT)
    assert shown == ranked and len(shown) == 28 and "neutral" in shown  # ordered by the model's scores
    assert closest["max_values"] == others["max_values"] == 3 and closest["min_values"] == 0
    assert await store.corrections(standin.guild_id) == []  # nothing before Send

    # Nothing chosen, or four: asked again, nothing stored.
    assert PICK_ONE_TO_THREE in str(await choose(standin, picker, []))
    assert PICK_ONE_TO_THREE in str(await choose(standin, picker, ranked[:3], ranked[-1:]))
    assert await store.corrections(standin.guild_id) == []

    done = await choose(standin, picker, *split_choice(picker, "excitement"))
    assert done["type"] == 7 and "Thank you" in done["data"]["content"] and done["data"]["components"] == []
    (kept,) = await store.corrections(standin.guild_id)
    expected = tiny_classifier.predict([clean_markup(TEXT)], top_k=None)[0]
    assert kept.text == clean_markup(TEXT) and kept.labels == ("excitement",)
    assert kept.model_labels == (tuple(expected.labels[:3]) or (expected.top[0].label,))
    assert kept.model_version == model_version(moodring_bot.inference.classifier) != "unknown"
    assert (kept.guild_id, kept.channel_id) == (standin.guild_id, standin.channel_id)
    assert moodring_bot.counters["corrections_stored"] == 1


async def test_menu_and_reply_readings_are_corrected_with_the_message_they_read(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn, tiny_classifier: EmotionClassifier
) -> None:
    standin, store = discord_standin, moodring_bot.store
    await enable(standin)
    target = store_message(standin, "omg <@123456789012345678> the raid was so skibbly!!")
    menu = await answer_of(standin, await standin.dispatch_context_menu("Analyze emotions", target))
    assert custom_ids(menu) == [NOT_QUITE_ID] and int(menu["flags"]) & EPHEMERAL
    picker = await press(standin, menu)
    assert "Thank you" in str(
        await choose(standin, picker, [component(picker, PICK_CLOSEST_ID)["options"][0]["value"]])
    )

    other = store_message(standin, "we lost again, this is so skibbly")
    since = len(standin.requests)
    await standin.dispatch_message(
        content=f"<@{standin.bot_user_id}> what's this?",
        mentions=[standin.bot_user_id],
        message_reference=payloads.message_reference(int(other["id"]), standin.channel_id, standin.guild_id),
    )
    post = await standin.wait_for_request(method="POST", route="/channels/{channel_id}/messages", since=since)
    reply = standin.message(post.response["id"])
    assert custom_ids(reply) == [NOT_QUITE_ID]
    picker = await press(standin, reply)
    assert "Thank you" in str(
        await choose(standin, picker, [], [component(picker, PICK_OTHERS_ID)["options"][0]["value"]])
    )
    texts = [c.text for c in await store.corrections(standin.guild_id)]
    assert texts == ["omg [NAME] the raid was so skibbly!!", "we lost again, this is so skibbly"]


async def test_with_corrections_off_the_button_explains_and_nothing_is_stored(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    standin = discord_standin
    answer = await emotion_answer(standin)
    shown = await press(standin, answer)
    assert shown["content"] == CORRECTIONS_OFF and int(shown["flags"]) & EPHEMERAL
    assert "components" not in shown or not shown["components"]

    # Turned off after a picker was opened: Send explains, and nothing is stored either.
    await enable(standin)
    picker = await press(standin, answer)
    assert "**off**" in await enable(standin, "disable")
    done = await choose(standin, picker, [component(picker, PICK_CLOSEST_ID)["options"][0]["value"]])
    assert done["data"]["content"] == CORRECTIONS_OFF
    assert await moodring_bot.store.corrections() == []


async def test_the_button_still_works_after_a_restart(
    make_moodring_bot: BotFactory, discord_standin: DiscordStandIn
) -> None:
    standin = discord_standin
    async with make_moodring_bot():
        await enable(standin)
        answer = await emotion_answer(standin)
    async with make_moodring_bot() as bot:  # the same database file, a new process state
        picker = await press(standin, answer)
        assert picker["content"] == PICK
        done = await choose(standin, picker, [component(picker, PICK_CLOSEST_ID)["options"][1]["value"]])
        assert "Thank you" in done["data"]["content"]
        assert len(await bot.store.corrections(standin.guild_id)) == 1


async def test_a_members_second_correction_of_a_message_is_refused(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    standin, store = discord_standin, moodring_bot.store
    await enable(standin)
    answer = await emotion_answer(standin)
    first, second = await press(standin, answer), await press(standin, answer)  # two pickers open at once
    label = component(first, PICK_CLOSEST_ID)["options"][0]["value"]
    assert "Thank you" in (await choose(standin, first, [label]))["data"]["content"]
    assert (await choose(standin, second, [label]))["data"]["content"] == ALREADY_CORRECTED
    assert (await press(standin, answer))["content"] == ALREADY_CORRECTED  # and the button says so at once
    assert len(await store.corrections()) == 1

    # Another member may correct the same reading.
    member = await standin.add_user("another member")
    picker = await press(standin, answer, user=member)
    assert "Thank you" in (await choose(standin, picker, [label], user=member))["data"]["content"]
    assert len(await store.corrections()) == 2


async def test_corrections_are_rate_limited_per_member(
    make_moodring_bot: BotFactory, discord_standin: DiscordStandIn
) -> None:
    standin = discord_standin
    async with make_moodring_bot(corrections_per_member=2, corrections_window_s=600.0) as bot:
        await enable(standin)
        answers = [await emotion_answer(standin, f"{TEXT} #{i}") for i in range(3)]
        assert (await press(standin, answers[0]))["content"] == PICK
        assert (await press(standin, answers[1]))["content"] == PICK
        refused = await press(standin, answers[2])
        assert refused["content"].startswith("Slow down") and int(refused["flags"]) & EPHEMERAL
        member = await standin.add_user("someone else")
        assert (await press(standin, answers[2], user=member))["content"] == PICK  # per member
        bot.clock = lambda: time.time() + 601  # the window has passed
        assert (await press(standin, answers[2]))["content"] == PICK
        assert bot.counters["corrections_refused"] == 1
        assert await bot.store.corrections() == []


async def test_a_reading_older_than_the_retention_cannot_be_corrected(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    standin = discord_standin
    await enable(standin)
    answer = await emotion_answer(standin)
    now = moodring_bot.clock()
    moodring_bot.clock = lambda: now + DEFAULT_RETENTION_DAYS * 86400 + 60
    assert (await press(standin, answer))["content"] == EXPIRED
    assert await moodring_bot.store.corrections() == []


async def test_a_deleted_message_cannot_be_corrected(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    """The button finds the text again from the message itself: once it is deleted, nothing of it is kept."""
    standin = discord_standin
    await enable(standin)
    target = store_message(standin, "gone soon, but so skibbly")
    menu = await answer_of(standin, await standin.dispatch_context_menu("Analyze emotions", target))
    standin.world.messages.pop(int(target["id"]))
    assert (await press(standin, menu))["content"] == GONE
    assert await moodring_bot.store.corrections() == []


# ----------------------------------------------------------------------------------------------- admins


async def test_admins_see_the_corrections_and_clear_them_after_confirming(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    standin, store = discord_standin, moodring_bot.store
    await enable(standin)
    for i in range(2):
        answer = await emotion_answer(standin, f"{TEXT} {i}")
        picker = await press(standin, answer)
        assert "Thank you" in str(await choose(standin, picker, *split_choice(picker, "excitement")))
    (kept, *_) = await store.corrections(standin.guild_id)

    shown = await standin.dispatch_slash_command(
        "moodring corrections", {"action": "show"}, member_permissions=ADMIN_PERMISSIONS
    )
    (embed,) = (await standin.wait_for_interaction_response(shown)).json["data"]["embeds"]
    assert "2 kept" in embed["description"] and "**on**" in embed["description"]
    values = {f["name"]: f["value"] for f in embed["fields"]}
    assert "**excitement**: 2" in values["Emotions members chose"]
    if kept.model_labels[0] != "excitement":
        assert f"model said **{kept.model_labels[0]}**, members said **excitement**" in values["Most corrected"]

    admin = standin.owner_id  # the confirmation checks the admin's own permissions, not the command's
    asked = await standin.dispatch_slash_command(
        "moodring corrections", {"action": "clear"}, user=admin, member_permissions=ADMIN_PERMISSIONS
    )
    prompt = await answer_of(standin, asked)
    assert len(await store.corrections()) == 2  # nothing yet: needs the button
    confirm = prompt["components"][0]["components"][0]
    assert confirm["label"] == "Delete all corrections"
    done = await standin.dispatch_component(confirm["custom_id"], prompt, user=admin)
    assert (
        "Deleted this server's 2 corrections"
        in (await standin.wait_for_interaction_response(done)).json["data"]["content"]
    )
    assert await store.corrections() == []
    assert await store.corrections_enabled(standin.guild_id)


# ----------------------------------------------------------------------------------------------- privacy


async def test_corrected_text_is_only_in_the_corrections_table_and_only_when_on(
    make_moodring_bot: BotFactory, discord_standin: DiscordStandIn
) -> None:
    """The sentinel scan of tests/test_bot_store.py, for a corrected message: with corrections off, a press
    leaves no trace; with them on, the text is in the corrections table and nowhere else, and the member's and
    the message's ids are nowhere. `/moodring forget` then removes it."""
    standin = discord_standin
    async with make_moodring_bot() as bot:
        database = bot.config.database
        target = store_message(standin, f"{SENTINEL} is so skibbly today, love it")
        menu = await answer_of(standin, await standin.dispatch_context_menu("Analyze emotions", target))
        assert (await press(standin, menu))["content"] == CORRECTIONS_OFF
        await bot.store.flush()
        needles = {
            "text": SENTINEL.encode(),
            "author id": str(standin.user_id).encode(),
            "author id (integer)": standin.user_id.to_bytes(8, "big"),
            "message id": str(target["id"]).encode(),
            "message id (integer)": int(target["id"]).to_bytes(8, "big"),
        }
        assert traces(needles, database_files(database)) == []

        await enable(standin)
        picker = await press(standin, menu)
        await choose(standin, picker, [component(picker, PICK_CLOSEST_ID)["options"][0]["value"]])
        await wait_until(lambda: bot.counters["corrections_stored"] == 1, what="the correction stored")
        values = {"text": SENTINEL, "author id": standin.user_id, "message id": int(target["id"])}
        found = rows_mentioning(database, values)
        assert len(found) == 1 and found[0].startswith("text in corrections:"), found
    closed = database_files(database)
    assert [t for t in traces(needles, closed) if not t.startswith("text in ")] == []

    async with make_moodring_bot() as bot:
        forget = await standin.dispatch_slash_command(
            "moodring forget", user=standin.owner_id, member_permissions=ADMIN_PERMISSIONS
        )
        prompt = await answer_of(standin, forget)
        confirm = prompt["components"][0]["components"][0]["custom_id"]
        click = await standin.dispatch_component(confirm, prompt, user=standin.owner_id)
        assert "corrections" in (await standin.wait_for_interaction_response(click)).json["data"]["content"]
        assert rows_mentioning(database, {"text": SENTINEL}) == []
