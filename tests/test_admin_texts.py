"""The small texts admins read: plurals, a readable training time, and whether the server collects corrections."""

from __future__ import annotations

from bot_fixtures import ADMIN_PERMISSIONS

from bot.app import MoodringBot
from bot.render import count_of, readable_time
from sandbox import DiscordStandIn


def test_counts_and_times_read_as_words() -> None:
    assert count_of(1, "day") == "1 day"
    assert count_of(30, "day") == "30 days"
    assert readable_time("2026-12-04T18:33:43.512+00:00") == "4 Dec 2026, 18:33 UTC"
    assert readable_time("2026-12-04T19:33:43+01:00") == "4 Dec 2026, 18:33 UTC"
    assert readable_time("the second tiny model") == "the second tiny model"  # not a time: shown as it is


async def test_one_day_of_retention_and_the_corrections_state_read_right(
    moodring_bot: MoodringBot, discord_standin: DiscordStandIn
) -> None:
    standin = discord_standin
    answer = await standin.dispatch_slash_command(
        "moodring retention", {"days": 1}, member_permissions=ADMIN_PERMISSIONS
    )
    content = (await standin.wait_for_interaction_response(answer)).json["data"]["content"]
    assert "older than 1 day are deleted" in content

    async def settings() -> dict[str, str]:
        interaction = await standin.dispatch_slash_command("moodring settings", member_permissions=ADMIN_PERMISSIONS)
        embed = (await standin.wait_for_interaction_response(interaction)).json["data"]["embeds"][0]
        return {field["name"]: field["value"] for field in embed["fields"]}

    shown = await settings()
    assert shown["Statistics kept for"] == "1 day"
    privacy = await standin.dispatch_slash_command("privacy")
    assert (
        "older than 1 day are deleted" in (await standin.wait_for_interaction_response(privacy)).json["data"]["content"]
    )
    assert shown["Corrections"].startswith("off")
    await moodring_bot.store.set_corrections_enabled(standin.guild_id, True)
    assert (await settings())["Corrections"].startswith("on")
    metadata = moodring_bot.inference.classifier.metadata
    assert shown["Model"].startswith(f"trained {readable_time(metadata.created_at)} · ")
