"""Admin commands and privacy through the stand-in: what Discord is told to hide from members (and the run-time
checks that stay), the one privacy statement, and `/mood` never showing a channel's mood to the wrong people."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot_fixtures import ADMIN_PERMISSIONS, MEMBER_PERMISSIONS
from discord import app_commands

from bot.app import MoodringBot
from bot.privacy import privacy_statement
from bot.render import model_description, readable_time
from bot.store import DEFAULT_RETENTION_DAYS
from sandbox import DiscordStandIn, payloads

PRIVACY_PAGE = Path(__file__).resolve().parents[1] / "docs" / "privacy.md"
EPHEMERAL = payloads.MESSAGE_FLAG_EPHEMERAL
SYNC = "/applications/{application_id}/guilds/{guild_id}/commands"
FOLLOWUP = "/webhooks/{application_id}/{interaction_token}"
MANAGE_GUILD = payloads.PERM_MANAGE_GUILD


def synced_commands(standin: DiscordStandIn) -> dict[str, dict[str, Any]]:
    """The commands in the bot's last sync request, by name, as Discord received them."""
    syncs = [r for r in standin.requests if r.route == SYNC and r.method == "PUT"]
    assert syncs, "the bot never synced its commands"
    return {command["name"]: command for command in syncs[-1].json}


def flags(callback_json: dict[str, Any]) -> int:
    return int((callback_json.get("data") or {}).get("flags") or 0)


async def test_discord_hides_admin_commands_from_members_but_not_the_rest(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    commands = synced_commands(discord_standin)
    assert set(commands) == {"emotion", "mood", "privacy", "moodring", "Analyze emotions"}
    assert int(commands["moodring"]["default_member_permissions"]) == MANAGE_GUILD
    for name in ("emotion", "mood", "privacy", "Analyze emotions"):
        assert commands[name]["default_member_permissions"] is None, name
    subcommands = {option["name"] for option in commands["moodring"]["options"]}
    assert "privacy" not in subcommands and {"channel", "forget", "retrain"} <= subcommands


async def test_every_admin_subcommand_still_checks_when_it_runs(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    """A server can show `/moodring` to anyone (Server Settings -> Integrations), so each subcommand checks Manage
    Server itself; the retrain commands check for the bot's owners instead."""
    standin = discord_standin
    group = moodring_bot.tree.get_command("moodring")
    assert isinstance(group, app_commands.Group)
    channel = standin.channel_id
    options = {
        "channel": {"reactions": True},
        "summary": {"channel": channel, "schedule": "daily"},
        "summary-off": {"channel": channel},
        "retention": {"days": 1},
    }
    for command in group.commands:
        interaction = await standin.dispatch_slash_command(
            f"moodring {command.name}", options.get(command.name, {}), member_permissions=MEMBER_PERMISSIONS
        )
        answer = (await standin.wait_for_interaction_response(interaction)).json
        assert flags(answer) & EPHEMERAL, command.name
        refusal = "owners" if command.name.startswith("retrain") else "Manage Server"
        assert refusal in answer["data"]["content"], command.name
    assert await moodring_bot.store.guild_channel_settings(standin.guild_id) == {}
    assert await moodring_bot.store.schedules(standin.guild_id) == []
    assert await moodring_bot.store.retention_days(standin.guild_id) == DEFAULT_RETENTION_DAYS
    assert not moodring_bot.retrainer.running


async def test_privacy_is_one_statement_for_every_member_and_the_privacy_page(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    standin = discord_standin
    statement = privacy_statement(DEFAULT_RETENTION_DAYS)
    assert statement in PRIVACY_PAGE.read_text(encoding="utf-8")
    assert "removed from a server" in statement and "never stores" in statement
    assert len(privacy_statement(3650)) <= 2000  # one Discord message, whatever the retention

    interaction = await standin.dispatch_slash_command("privacy", member_permissions=MEMBER_PERMISSIONS)
    answer = (await standin.wait_for_interaction_response(interaction)).json
    assert answer["data"]["content"] == statement
    assert flags(answer) & EPHEMERAL and answer["data"]["allowed_mentions"]["parse"] == []

    admin = await standin.dispatch_slash_command(
        "moodring retention", {"days": 30}, member_permissions=ADMIN_PERMISSIONS
    )
    await standin.wait_for_interaction_response(admin)
    interaction = await standin.dispatch_slash_command("privacy", member_permissions=MEMBER_PERMISSIONS)
    answer = (await standin.wait_for_interaction_response(interaction)).json
    assert answer["data"]["content"] == privacy_statement(30) != statement


async def test_mood_of_another_channel_is_shown_only_to_the_member_who_asked(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    """A staff-only channel's name and emotion shares must not be posted where everyone can read them."""
    standin = discord_standin
    bot = moodring_bot
    private = await standin.add_text_channel(
        "staff-only",
        overwrites=[
            payloads.overwrite(standin.guild_id, type=payloads.OVERWRITE_ROLE, deny=payloads.PERM_VIEW_CHANNEL),
            payloads.overwrite(
                standin.user_id,
                type=payloads.OVERWRITE_MEMBER,
                allow=payloads.PERM_VIEW_CHANNEL | payloads.PERM_READ_MESSAGE_HISTORY,
            ),
        ],
    )
    for _ in range(3):
        bot.store.record(standin.guild_id, private, [("disgust", 0.9)], at=bot.clock() - 60)
    await bot.store.flush()

    asked = await standin.dispatch_slash_command("mood", {"channel": private, "period": "24h"})
    deferred = (await standin.wait_for_interaction_response(asked)).json
    assert deferred["type"] == 5 and flags(deferred) & EPHEMERAL
    followup = await standin.wait_for_request(route=FOLLOWUP, method="POST", timeout=20)
    assert followup.params["interaction_token"] == asked["token"]
    shown = standin.message(standin.interaction(asked).original_message_id)
    assert shown is not None and int(shown["flags"]) & EPHEMERAL
    assert "staff-only" in shown["embeds"][0]["title"] and "disgust" in str(shown["embeds"])

    # About this channel (named or by default), the answer is for everyone here, as before.
    for options in ({"channel": standin.channel_id}, {}):
        since = len(standin.requests)
        here = await standin.dispatch_slash_command("mood", options)
        assert not flags((await standin.wait_for_interaction_response(here)).json) & EPHEMERAL
        await standin.wait_for_request(route=FOLLOWUP, method="POST", since=since, timeout=20)
        answer = standin.message(standin.interaction(here).original_message_id)
        assert answer is not None and not int(answer["flags"]) & EPHEMERAL

    public = [m for m in standin.bot_messages(standin.channel_id) if not int(m["flags"]) & EPHEMERAL]
    assert len(public) == 2 and not any("staff-only" in str(m) or "disgust" in str(m) for m in public)


async def test_settings_name_the_model_that_serves(moodring_bot: MoodringBot, discord_standin: DiscordStandIn) -> None:
    """When it was trained, its dev macro-F1 and the backend: an admin can tell a retrained model from the last."""
    interaction = await discord_standin.dispatch_slash_command(
        "moodring settings", member_permissions=ADMIN_PERMISSIONS
    )
    embed = (await discord_standin.wait_for_interaction_response(interaction)).json["data"]["embeds"][0]
    shown = next(field["value"] for field in embed["fields"] if field["name"] == "Model")
    metadata = moodring_bot.inference.classifier.metadata
    assert (
        shown
        == f"trained {readable_time(metadata.created_at)} · dev macro-F1 {metadata.dev_metrics['macro_f1']:.3f} · "
        "served with torch"
    )
    assert model_description(None) == "not trained yet"
