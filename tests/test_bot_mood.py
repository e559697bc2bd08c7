"""Channel mood through the stand-in: `/mood`, scheduled summaries with a controlled clock, admin and
owner checks, `/moodring forget`, and retraining from Discord."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bot_fixtures import ADMIN_PERMISSIONS, MEMBER_PERMISSIONS, BotFactory, confirm_retrain, wait_until
from test_retrain import TINY_ARGS

from bot.app import MoodringBot
from bot.cogs.mood import latest_slot, parse_period
from bot.store import ChannelSettings, Schedule, StoreError, TransientStoreError, open_store
from sandbox import DiscordStandIn, payloads

CALLBACK = "/interactions/{interaction_id}/{interaction_token}/callback"
FOLLOWUP = "/webhooks/{application_id}/{interaction_token}"
CHANNEL_MESSAGES = "/channels/{channel_id}/messages"
PNG = b"\x89PNG\r\n\x1a\n"
NOW = datetime(2026, 11, 30, 12, 30, tzinfo=UTC).timestamp()  # a Monday
OTHER_GUILD = 4242


def seed(bot: MoodringBot, guild_id: int, channel_id: int, at: float, labels: list[str], times: int = 1) -> None:
    for _ in range(times):
        bot.store.record(guild_id, channel_id, [(label, 0.8) for label in labels], at=at)


def schedule(kind: str, **fields) -> Schedule:
    values = {"hour": None, "weekday": None, "every_hours": None} | fields
    return Schedule(1, 1, 1, kind, values["hour"], values["weekday"], values["every_hours"], None, None, True, None)


def test_periods_and_slots() -> None:
    assert parse_period("24h") == 86400 and parse_period("3 days") == 3 * 86400 and parse_period("2w") == 14 * 86400
    for bad in ("", "soon", "0h", "91d"):
        with pytest.raises(ValueError):
            parse_period(bad)
    assert latest_slot(schedule("daily", hour=18), NOW) == datetime(2026, 11, 29, 18, tzinfo=UTC).timestamp()
    assert latest_slot(schedule("daily", hour=9), NOW) == datetime(2026, 11, 30, 9, tzinfo=UTC).timestamp()
    assert latest_slot(schedule("weekly", hour=9, weekday=4), NOW) == datetime(2026, 11, 27, 9, tzinfo=UTC).timestamp()
    assert latest_slot(schedule("every", every_hours=6), NOW) == datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp()


async def test_mood_embed_with_chart(discord_standin: DiscordStandIn, moodring_bot: MoodringBot) -> None:
    moodring_bot.clock = lambda: NOW
    channel = discord_standin.channel_id
    seed(moodring_bot, discord_standin.guild_id, channel, NOW - 3 * 3600, ["joy", "love"], times=3)
    seed(moodring_bot, discord_standin.guild_id, channel, NOW - 2 * 3600, ["anger"], times=1)
    seed(moodring_bot, discord_standin.guild_id, channel, NOW - 30 * 3600, ["sadness"], times=2)  # previous day
    seed(moodring_bot, OTHER_GUILD, channel, NOW - 3600, ["fear"], times=5)  # another server: never shown
    await moodring_bot.store.flush()

    interaction = await discord_standin.dispatch_slash_command("mood", {"period": "24h"})
    response = await discord_standin.wait_for_interaction_response(interaction)
    assert response.json["type"] == 5  # deferred while the chart renders off the loop
    followup = await discord_standin.wait_for_request(route=FOLLOWUP, method="POST", timeout=20)
    (embed,) = followup.json["embeds"]
    assert "4 messages analysed" in embed["description"] and "2 in the day before" in embed["description"]
    lines = embed["fields"][0]["value"].splitlines()
    assert [line.split("**")[1] for line in lines] == ["joy", "love", "anger"]
    assert "75%" in lines[0] and "new" not in lines[0]
    assert "fear" not in embed["fields"][0]["value"]
    assert followup.filenames == ["mood.png"]
    assert followup.files[0].data.startswith(PNG) and len(followup.files[0].data) > 2000
    assert embed["image"]["url"] == "attachment://mood.png"


async def test_mood_on_an_empty_period(discord_standin: DiscordStandIn, moodring_bot: MoodringBot) -> None:
    interaction = await discord_standin.dispatch_slash_command("mood", {"period": "3d"})
    await discord_standin.wait_for_interaction_response(interaction)
    followup = await discord_standin.wait_for_request(route=FOLLOWUP, method="POST", timeout=20)
    assert "Not enough messages yet" in followup.json["embeds"][0]["description"]
    assert followup.filenames == []
    bad = await discord_standin.dispatch_slash_command("mood", {"period": "forever"})
    answer = await discord_standin.wait_for_interaction_response(bad)
    assert answer.json["data"]["flags"] & payloads.MESSAGE_FLAG_EPHEMERAL and "12h" in answer.json["data"]["content"]


async def test_summary_schedule_due_not_due_catch_up(
    discord_standin: DiscordStandIn, moodring_bot: MoodringBot
) -> None:
    guild, channel = discord_standin.guild_id, discord_standin.channel_id
    clock = {"now": NOW}
    moodring_bot.clock = lambda: clock["now"]
    seed(moodring_bot, guild, channel, NOW - 3600, ["gratitude"], times=2)
    await moodring_bot.store.flush()
    interaction = await discord_standin.dispatch_slash_command(
        "moodring summary",
        {"channel": channel, "schedule": "daily", "hour": 18},
        member_permissions=ADMIN_PERMISSIONS,
    )
    answer = await discord_standin.wait_for_interaction_response(interaction)
    assert "daily at 18:00 UTC" in answer.json["data"]["content"]
    mood = moodring_bot.get_cog("Mood")

    assert await mood.post_due_summaries(NOW + 3600) == 0  # 13:30: the 18:00 slot has not come yet
    assert await mood.post_due_summaries(datetime(2026, 11, 30, 18, 1, tzinfo=UTC).timestamp()) == 1
    posted = await discord_standin.wait_for_request(route=CHANNEL_MESSAGES, method="POST")
    assert "gratitude" in posted.json["embeds"][0]["fields"][0]["value"]
    assert posted.filenames == ["mood.png"] and posted.json["allowed_mentions"]["parse"] == []
    assert await mood.post_due_summaries(datetime(2026, 11, 30, 23, 0, tzinfo=UTC).timestamp()) == 0

    three_days_later = datetime(2026, 12, 3, 20, 0, tzinfo=UTC).timestamp()  # the bot was down for 3 slots
    assert await mood.post_due_summaries(three_days_later) == 1  # one catch-up, not three
    assert await mood.post_due_summaries(three_days_later + 60) == 0
    (saved,) = await moodring_bot.store.schedules(guild)
    assert saved.last_posted_at == three_days_later


async def test_schedule_for_a_deleted_channel_is_disabled_once(
    discord_standin: DiscordStandIn, moodring_bot: MoodringBot
) -> None:
    gone = await moodring_bot.store.upsert_schedule(discord_standin.guild_id, 999_999, "every", every_hours=1)
    mood = moodring_bot.get_cog("Mood")
    assert await mood.post_due_summaries(NOW) == 0
    (saved,) = await moodring_bot.store.schedules(discord_standin.guild_id)
    assert saved.id == gone.id and not saved.enabled and "deleted" in saved.disabled_reason
    notice = await discord_standin.wait_for_request(
        lambda r: r.route == CHANNEL_MESSAGES and r.method == "POST" and "stopped posting" in str(r.json)
    )
    assert notice.json["allowed_mentions"]["parse"] == []
    assert await mood.post_due_summaries(NOW + 7200) == 0
    notices = [r for r in discord_standin.requests_to("POST", "/messages") if "stopped posting" in str(r.json)]
    assert len(notices) == 1  # told once


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("moodring channel", {"reactions": True}),
        ("moodring settings", {}),
        ("moodring forget", {}),
        ("moodring retention", {"days": 1}),
        ("moodring summary", {"channel": None, "schedule": "daily"}),
    ],
)
async def test_non_admins_are_refused_without_side_effects(
    discord_standin: DiscordStandIn, moodring_bot: MoodringBot, command: str, options: dict
) -> None:
    options = {k: (discord_standin.channel_id if v is None else v) for k, v in options.items()}
    before = await moodring_bot.store.guild_channel_settings(discord_standin.guild_id)
    interaction = await discord_standin.dispatch_slash_command(command, options, member_permissions=MEMBER_PERMISSIONS)
    answer = await discord_standin.wait_for_interaction_response(interaction)
    data = answer.json["data"]
    assert data["flags"] & payloads.MESSAGE_FLAG_EPHEMERAL and "Manage Server" in data["content"]
    assert "components" not in data or not data["components"]
    assert await moodring_bot.store.guild_channel_settings(discord_standin.guild_id) == before
    assert await moodring_bot.store.schedules(discord_standin.guild_id) == []
    assert await moodring_bot.store.retention_days(discord_standin.guild_id) == 90


async def test_forget_deletes_this_guild_only_after_confirmation(
    discord_standin: DiscordStandIn, moodring_bot: MoodringBot
) -> None:
    guild, channel = discord_standin.guild_id, discord_standin.channel_id
    seed(moodring_bot, guild, channel, NOW, ["joy"], times=3)
    seed(moodring_bot, OTHER_GUILD, channel, NOW, ["joy"], times=2)
    await moodring_bot.store.flush()
    admins = await discord_standin.add_role("Admins", permissions=ADMIN_PERMISSIONS)
    admin = await discord_standin.add_user("admin", roles=[admins])
    interaction = await discord_standin.dispatch_slash_command("moodring forget", user=admin)
    await discord_standin.wait_for_interaction_response(interaction)
    assert (await moodring_bot.store.mood(guild, None, 0, NOW + 1)).messages == 3  # nothing yet: needs the button
    prompt = discord_standin.message(discord_standin.interaction(interaction).original_message_id)
    confirm = prompt["components"][0]["components"][0]
    assert confirm["label"] == "Delete all statistics"
    stranger = await discord_standin.dispatch_component(confirm["custom_id"], prompt, user=discord_standin.user_id)
    refused = await discord_standin.wait_for_interaction_response(stranger)
    assert "Only the admin who asked" in refused.json["data"]["content"]
    assert (await moodring_bot.store.mood(guild, None, 0, NOW + 1)).messages == 3
    click = await discord_standin.dispatch_component(confirm["custom_id"], prompt, user=admin)
    done = await discord_standin.wait_for_interaction_response(click)
    assert "Deleted all of this server's mood statistics" in done.json["data"]["content"]
    assert (await moodring_bot.store.mood(guild, None, 0, NOW + 1)).messages == 0
    assert (await moodring_bot.store.mood(OTHER_GUILD, None, 0, NOW + 1)).messages == 2


async def test_only_owners_retrain(discord_standin: DiscordStandIn, moodring_bot: MoodringBot) -> None:
    interaction = await discord_standin.dispatch_slash_command(
        "moodring retrain", member_permissions=ADMIN_PERMISSIONS, user=discord_standin.user_id
    )
    data = (await discord_standin.wait_for_interaction_response(interaction)).json["data"]
    assert data["flags"] & payloads.MESSAGE_FLAG_EPHEMERAL and "owners" in data["content"]
    assert not moodring_bot.retrainer.running and moodring_bot.retrainer.status is None


async def test_retrain_from_discord_edits_one_progress_message(
    discord_standin: DiscordStandIn,
    make_moodring_bot: BotFactory,
    tiny_model_dir,
    tiny_backbone_dir,
    goemotions_dir,
    tmp_path,
) -> None:
    serving = Path(shutil.copytree(tiny_model_dir, tmp_path / "serving"))
    async with make_moodring_bot(
        model_dir=serving,
        backbone=str(tiny_backbone_dir),
        data_dir=str(goemotions_dir),
        retrain_args=TINY_ARGS,
        retrain_tolerance=1.0,  # accept the candidate: this checks the Discord side, test_retrain the decision
        progress_interval=0.2,
    ) as bot:
        interaction = await discord_standin.dispatch_slash_command("moodring retrain", user=discord_standin.owner_id)
        assert "Starting a retrain" in await confirm_retrain(discord_standin, interaction)  # Train, under the summary
        again = await discord_standin.dispatch_slash_command("moodring retrain", user=discord_standin.owner_id)
        assert "already running" in (await discord_standin.wait_for_interaction_response(again)).json["data"]["content"]
        status = await asyncio.wait_for(bot.retrainer.wait(), 300)
        assert status.outcome == "swapped", status.detail
        await wait_until(
            lambda: any("New model is now serving" in str(r.json) for r in progress_edits(discord_standin)),
            timeout=30,
            what="last edit",
        )
    posts = [r for r in discord_standin.requests_to("POST", "/messages") if "Retraining" in str(r.json)]
    edits = progress_edits(discord_standin)
    assert len(posts) == 1 and edits  # one message, edited in place
    assert {r.path for r in edits} == {f"{posts[0].path}/{posts[0].response['id']}"}
    assert any("Epoch 1/1" in str(r.json) or "Scoring" in str(r.json) for r in edits)


def progress_edits(standin: DiscordStandIn) -> list:
    return [r for r in standin.requests_to("PATCH", "/messages/") if "Retraining" in str(r.json)]


async def test_first_start_without_a_model_trains_one(
    discord_standin: DiscordStandIn, make_moodring_bot: BotFactory, tiny_backbone_dir, goemotions_dir, tmp_path
) -> None:
    async with make_moodring_bot(
        model_dir=tmp_path / "first-model",
        train_on_start=True,
        backbone=str(tiny_backbone_dir),
        data_dir=str(goemotions_dir),
        retrain_args=TINY_ARGS,
        progress_interval=0.2,
    ) as bot:
        assert bot.retrainer.running and not bot.inference.ready
        early = await discord_standin.dispatch_slash_command("emotion", {"text": "hello there"})
        content = (await discord_standin.wait_for_interaction_response(early)).json["data"]["content"]
        assert "still learning" in content and "%" in content
        status = await asyncio.wait_for(bot.retrainer.wait(), 300)
        assert status.outcome == "swapped" and bot.inference.ready
        assert (tmp_path / "first-model" / "moodring.json").is_file()
        later = await discord_standin.dispatch_slash_command("emotion", {"text": "hello there"})
        data = (await discord_standin.wait_for_interaction_response(later)).json["data"]
        assert data["embeds"][0]["fields"][0]["name"] == "Top emotions"


# ---------------------------------------------------------------- faults of the summaries and the loops


def summary_posts(standin: DiscordStandIn, channel_id: int) -> list:
    return [r for r in standin.requests_to("POST", f"/channels/{channel_id}/messages") if (r.json or {}).get("embeds")]


def summary_messages(standin: DiscordStandIn, channel_id: int) -> list:
    """The summaries in the channel, as the stand-in holds them (not the requests: one may return an earlier one)."""
    return [m for m in standin.bot_messages(channel_id) if m.get("embeds")]


async def test_a_slot_claimed_by_a_process_that_crashed_before_sending_is_sent_once_and_only_inside_the_window(
    discord_standin: DiscordStandIn, make_moodring_bot: BotFactory, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A process claims a slot and dies before it sends: the next tick (here, another process's) sends it with the
    slot's nonce while Discord still enforces it; a claim older than the window is given up with one line, and the
    next slot is posted as usual."""
    guild, channel = discord_standin.guild_id, discord_standin.channel_id
    async with make_moodring_bot(database=postgres_url) as bot:
        window = bot.config.summary_retry_window_s
        schedule = await bot.store.upsert_schedule(guild, channel, "every", every_hours=1)
        mood = bot.get_cog("Mood")

        async def claimed_by_a_crashed_process(slot: float, at: float) -> None:
            crashed = await open_store(postgres_url)  # what the crashed process left: the claim, and no post
            try:
                assert await crashed.claim_slot(schedule.id, slot, at)
            finally:
                await crashed.close()

        slot = latest_slot(schedule, NOW)
        await claimed_by_a_crashed_process(slot, NOW)
        assert await mood.post_due_summaries(NOW + 60) == 1  # inside the window: sent
        assert await mood.post_due_summaries(NOW + 120) == 0
        (sent,) = summary_posts(discord_standin, channel)
        assert sent.json["nonce"] == f"s{schedule.id}-{int(slot)}" and sent.json["enforce_nonce"] is True
        assert len(summary_messages(discord_standin, channel)) == 1

        next_slot = slot + 3600
        await claimed_by_a_crashed_process(next_slot, next_slot + 5)
        assert await mood.post_due_summaries(next_slot + 5 + window) == 0  # too late to send it safely
        assert "too late to send it again safely" in caplog.text
        assert await mood.post_due_summaries(next_slot + 3600 + 10) == 1  # the slot after: as usual
        assert len(summary_messages(discord_standin, channel)) == 2


async def test_a_summary_that_discord_posted_but_answered_5xx_for_is_not_posted_twice(
    discord_standin: DiscordStandIn, make_moodring_bot: BotFactory, postgres_url: str
) -> None:
    """Discord posts the summary but answers 503: the next tick sends it again with the same nonce, and Discord
    returns the first message instead of posting a second."""
    guild, channel = discord_standin.guild_id, discord_standin.channel_id
    async with make_moodring_bot(database=postgres_url) as bot:
        await bot.store.upsert_schedule(guild, channel, "every", every_hours=1)
        mood = bot.get_cog("Mood")
        discord_standin.fail_next("POST", CHANNEL_MESSAGES, status=503, after_handling=True)
        assert await mood.post_due_summaries(NOW) == 0  # a 503: whether it was posted is unknown here
        assert len(summary_messages(discord_standin, channel)) == 1  # it was
        assert await mood.post_due_summaries(NOW + 60) == 1  # sent again, with the same nonce
        assert await mood.post_due_summaries(NOW + 120) == 0
        first, again = summary_posts(discord_standin, channel)
        assert first.json["nonce"] == again.json["nonce"]
        assert len(summary_messages(discord_standin, channel)) == 1
        (saved,) = await bot.store.schedules(guild)
        assert not saved.send_pending and saved.last_posted_at == NOW


@pytest.mark.parametrize("fault", ["read-only", "locked"])
async def test_a_slot_whose_post_cannot_be_recorded_is_posted_once(
    discord_standin: DiscordStandIn, moodring_bot: MoodringBot, fault: str
) -> None:
    """Recording the post fails once (the file turned read-only, or another program held the write lock past
    busy_timeout), then the store recovers: the slot is posted once, not once a minute."""
    guild, channel = discord_standin.guild_id, discord_standin.channel_id
    store = moodring_bot.store
    seed(moodring_bot, guild, channel, NOW - 600, ["joy"], times=2)
    await store.flush()
    await store.upsert_schedule(guild, channel, "every", every_hours=1)
    mood = moodring_bot.get_cog("Mood")
    blocker = None
    if fault == "read-only":
        await store._db.execute("PRAGMA query_only = ON")  # every write fails with SQLITE_READONLY
    else:
        await store._db.execute("PRAGMA busy_timeout = 100")
        blocker = sqlite3.connect(moodring_bot.config.database, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
    try:
        with contextlib.suppress(StoreError):  # the tick may end in the store's error: the loop handles it
            await mood.post_due_summaries(NOW)
    finally:
        if blocker is not None:
            blocker.execute("ROLLBACK")
            blocker.close()
        else:
            await store._db.execute("PRAGMA query_only = OFF")
    for minute in (1, 2, 3):  # the next ticks, within the same hourly slot
        await mood.post_due_summaries(NOW + 60 * minute)
    posts = summary_posts(discord_standin, channel)
    assert len(posts) == 1, f"{len(posts)} posts for one slot"
    assert "joy" in posts[0].json["embeds"][0]["fields"][0]["value"]
    (saved,) = await store.schedules(guild)
    assert saved.last_posted_at is not None and saved.last_posted_at >= latest_slot(saved, NOW)


async def test_a_summary_that_discord_refused_is_sent_on_the_next_tick(
    discord_standin: DiscordStandIn, moodring_bot: MoodringBot
) -> None:
    guild, channel = discord_standin.guild_id, discord_standin.channel_id
    await moodring_bot.store.upsert_schedule(guild, channel, "every", every_hours=1)
    mood = moodring_bot.get_cog("Mood")
    discord_standin.fail_next("POST", CHANNEL_MESSAGES, status=400)
    assert await mood.post_due_summaries(NOW) == 0
    assert await mood.post_due_summaries(NOW + 60) == 1  # the slot was given back
    assert await mood.post_due_summaries(NOW + 120) == 0
    assert len(summary_posts(discord_standin, channel)) == 2  # the refused one and the one that went through
    (saved,) = await moodring_bot.store.schedules(guild)
    assert saved.last_posted_at == NOW + 60


async def test_the_summary_loop_survives_a_store_error(
    discord_standin: DiscordStandIn, moodring_bot: MoodringBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    guild, channel = discord_standin.guild_id, discord_standin.channel_id
    store = moodring_bot.store
    moodring_bot.clock = lambda: NOW
    await store.upsert_schedule(guild, channel, "every", every_hours=1)
    schedules = store.schedules
    calls: list[int] = []

    async def fail_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise TransientStoreError("disk I/O error")
        return await schedules(*args, **kwargs)

    monkeypatch.setattr(store, "schedules", fail_once)
    mood = moodring_bot.get_cog("Mood")
    mood.summaries.change_interval(seconds=0.05)  # the next ticks come at once instead of each minute
    posted = await discord_standin.wait_for_request(route=CHANNEL_MESSAGES, method="POST", timeout=20)
    assert posted.json["embeds"] and len(calls) >= 2 and mood.summaries.is_running()


async def test_the_retention_loop_survives_a_failed_prune(
    discord_standin: DiscordStandIn, moodring_bot: MoodringBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    guild, channel = discord_standin.guild_id, discord_standin.channel_id
    store = moodring_bot.store
    moodring_bot.clock = lambda: NOW
    seed(moodring_bot, guild, channel, NOW - 100 * 86400, ["joy"])  # older than the default 90 days
    await store.flush()
    prune = store.prune
    calls: list[int] = []

    async def fail_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise TransientStoreError("database or disk is full")
        return await prune(*args, **kwargs)

    monkeypatch.setattr(store, "prune", fail_once)
    housekeeping = moodring_bot.get_cog("Housekeeping")
    housekeeping.retention.change_interval(seconds=0.05)
    await wait_until(lambda: len(calls) >= 2, timeout=20, what="a prune after the failed one")
    await wait_until(lambda: len(calls) >= 3, timeout=20, what="the prune after it")  # the second one finished
    assert (await store.mood(guild, None, 0, NOW)).messages == 0 and housekeeping.retention.is_running()


# ---------------------------------------------------------------- the bot is removed from a server


async def test_removing_the_bot_from_a_server_deletes_its_data(
    discord_standin: DiscordStandIn, moodring_bot: MoodringBot
) -> None:
    guild, channel = discord_standin.guild_id, discord_standin.channel_id
    store = moodring_bot.store
    for g in (guild, OTHER_GUILD):
        seed(moodring_bot, g, channel, NOW, ["joy"], times=2)
        await store.set_channel_settings(g, channel, reactions=True)
        await store.upsert_schedule(g, channel, "daily", hour=9)
        await store.set_retention_days(g, 7)
    await store.flush()

    async def data_of(g: int) -> tuple:
        return (
            (await store.mood(g, None, 0, NOW + 1)).messages,
            await store.guild_channel_settings(g),
            len(await store.schedules(g)),
            await store.retention_days(g),
        )

    kept = (2, {channel: ChannelSettings(True, True)}, 1, 7)
    # An outage (GUILD_DELETE with unavailable) is not a removal.
    await discord_standin.dispatch("GUILD_DELETE", {"id": str(guild), "unavailable": True}, guild_id=guild)
    await wait_until(lambda: moodring_bot.get_guild(guild).unavailable, what="the guild marked unavailable")
    assert await data_of(guild) == kept  # queued on the store behind anything the event started

    await discord_standin.dispatch("GUILD_DELETE", {"id": str(guild)}, guild_id=guild)
    await wait_until(lambda: moodring_bot.get_guild(guild) is None, what="the guild removed")
    deadline = asyncio.get_running_loop().time() + 10
    while await data_of(guild) != (0, {}, 0, 90):
        assert asyncio.get_running_loop().time() < deadline, await data_of(guild)
        await asyncio.sleep(0.01)
    assert await store.channel_settings(guild, channel) == ChannelSettings()
    assert await data_of(OTHER_GUILD) == kept


async def test_a_removal_that_the_store_refused_is_retried_on_the_next_tick(
    discord_standin: DiscordStandIn, moodring_bot: MoodringBot
) -> None:
    guild, channel = discord_standin.guild_id, discord_standin.channel_id
    store = moodring_bot.store
    housekeeping = moodring_bot.get_cog("Housekeeping")
    await store.set_channel_settings(guild, channel, reactions=True)
    await store.upsert_schedule(guild, channel, "daily", hour=9)
    await store._db.execute("PRAGMA query_only = ON")  # the file turned read-only
    try:
        await discord_standin.dispatch("GUILD_DELETE", {"id": str(guild)}, guild_id=guild)
        await wait_until(lambda: guild in housekeeping.removals_due, what="the failed removal noted")
    finally:
        await store._db.execute("PRAGMA query_only = OFF")
    assert len(await store.schedules(guild)) == 1  # nothing was deleted yet
    housekeeping.removals.change_interval(seconds=0.05)  # the next tick comes at once
    await wait_until(lambda: not housekeeping.removals_due, timeout=20, what="the removal retried")
    assert await store.schedules(guild) == [] and await store.guild_channel_settings(guild) == {}
