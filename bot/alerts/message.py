"""What a mood alert looks like: its embed (counts and shares, the top emotions, a link to the channel; never a
message's text) and its buttons, and the lines the moderators' actions add to it.

The buttons are one persistent view (`AlertView`, registered once by bot/cogs/alerts.py) with fixed custom ids: a
press finds its channel from the link in the alert's embed, so the buttons keep working after a restart and in
every process of a cluster. The copies attached to alerts (`alert_view`) only carry the components to Discord.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal

import discord

from bot.alerts.detector import Finding
from bot.render import emoji_for
from bot.replies import SOMETHING_WENT_WRONG, send_ephemeral
from bot.store import AlertSettings

log = logging.getLogger(__name__)

AlertAction = Literal["acknowledge", "snooze-1", "snooze-24", "less-sensitive"]
#: The custom id of each button: "moodring:alert:<action>".
BUTTON_PREFIX = "moodring:alert:"
SNOOZE_HOURS: dict[AlertAction, int] = {"snooze-1": 1, "snooze-24": 24}
CHANNEL_URL = re.compile(r"/channels/(\d+)/(\d+)$")
MODERATORS_FIELD = "Moderators"
NOT_ALLOWED = "Only members with the **Manage Server** permission can act on mood alerts."
COLOUR = 0xED4245
TOP_EMOTIONS = 3


def channel_link(guild_id: int, channel_id: int) -> str:
    return f"https://discord.com/channels/{guild_id}/{channel_id}"


def alert_channel(message: discord.Message | None) -> tuple[int, int] | None:
    """(guild id, channel id) of the channel an alert message is about, from its embed's link."""
    embed = message.embeds[0] if message is not None and message.embeds else None
    found = CHANNEL_URL.search(embed.url or "") if embed is not None else None
    return (int(found[1]), int(found[2])) if found else None


def alert_nonce(channel_id: int, at: float) -> str:
    """The message nonce of a channel's alert claimed at `at`: at most Discord's 25 characters (hexadecimal)."""
    return f"a{channel_id:x}{int(at):x}"[:25]


def percent(share: float) -> str:
    return f"{share:.0%}" if share >= 0.01 or share == 0 else f"{share:.1%}"


def alert_embed(
    settings: AlertSettings,
    channel_id: int,
    finding: Finding,
    top: list[tuple[str, int]],
    *,
    since: float,
    baseline_days: int,
    steps: int,
    now: float,
) -> discord.Embed:
    """The alert for `channel_id`: what rose (the window's share against the baseline's, with the counts), the
    window's `top` emotions as (label, messages), and how the test decided. No message text."""
    window, baseline = finding.window, finding.baseline
    watched = ", ".join(settings.labels)
    start = datetime.fromtimestamp(since, UTC).strftime("%H:00 UTC")
    embed = discord.Embed(
        title="Mood alert: a channel is more heated than usual",
        url=channel_link(settings.guild_id, channel_id),
        description=(
            f"<#{channel_id}>: **{percent(finding.share)}** of the messages analysed since {start} carried {watched} "
            f"({window.watched} of {window.messages}), against **{percent(baseline.watched / baseline.messages)}** "
            f"over the {baseline_days} days before ({baseline.watched} of {baseline.messages})."
        ),
        colour=COLOUR,
        timestamp=datetime.fromtimestamp(now, UTC),
    )
    lines = [f"{emoji_for(label)} **{label}** {percent(count / window.messages)}" for label, count in top]
    embed.add_field(name="Top emotions since then", value="\n".join(lines) or "none above threshold", inline=False)
    stricter = f", {steps} × less sensitive" if steps else ""
    embed.add_field(
        name="Why",
        value=f"one-sided binomial test: p = {finding.p_value:.1e} ≤ {finding.level:.0e} "
        f"(sensitivity {settings.sensitivity}{stricter})",
        inline=False,
    )
    embed.set_footer(text="Counts only: no message text is stored or quoted. The buttons need Manage Server.")
    return embed


def with_action(embed: discord.Embed, line: str) -> discord.Embed:
    """The alert's embed with one more line in its moderators' field (who did what, and when)."""
    fields = [(field.name, field.value) for field in embed.fields]
    done = next((value for name, value in fields if name == MODERATORS_FIELD), None)
    value = f"{done}\n{line}" if done else line
    updated = embed.copy()
    updated.clear_fields()
    for name, old in fields:
        if name != MODERATORS_FIELD:
            updated.add_field(name=name, value=old, inline=False)
    updated.add_field(name=MODERATORS_FIELD, value=value[-1024:], inline=False)
    return updated


class AlertView(discord.ui.View):
    """Acknowledge, Snooze 1 h, Snooze 24 h, Less sensitive. Every press is checked for Manage Server (the member's
    permissions now, as Discord sends them with the press) before `on_action` runs; others are told politely."""

    def __init__(
        self,
        on_action: Callable[[discord.Interaction, AlertAction], Awaitable[None]] | None = None,
        *,
        acknowledged: bool = False,
    ) -> None:
        super().__init__(timeout=None)
        self.on_action = on_action
        self.acknowledge.disabled = acknowledged
        if acknowledged:
            self.acknowledge.label = "Acknowledged"

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if not interaction.permissions.manage_guild:
            await send_ephemeral(interaction, NOT_ALLOWED)
            return False
        return True

    async def act(self, interaction: discord.Interaction, action: AlertAction) -> None:
        if self.on_action is not None:
            await self.on_action(interaction, action)

    @discord.ui.button(label="Acknowledge", style=discord.ButtonStyle.success, custom_id=BUTTON_PREFIX + "acknowledge")
    async def acknowledge(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self.act(interaction, "acknowledge")

    @discord.ui.button(label="Snooze 1 h", style=discord.ButtonStyle.secondary, custom_id=BUTTON_PREFIX + "snooze-1")
    async def snooze_hour(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self.act(interaction, "snooze-1")

    @discord.ui.button(label="Snooze 24 h", style=discord.ButtonStyle.secondary, custom_id=BUTTON_PREFIX + "snooze-24")
    async def snooze_day(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self.act(interaction, "snooze-24")

    @discord.ui.button(
        label="Less sensitive", style=discord.ButtonStyle.secondary, custom_id=BUTTON_PREFIX + "less-sensitive"
    )
    async def less_sensitive(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self.act(interaction, "less-sensitive")

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item) -> None:
        log.error("a mood alert's button failed", exc_info=error)
        await send_ephemeral(interaction, SOMETHING_WENT_WRONG)


def alert_view(*, acknowledged: bool = False) -> discord.ui.View:
    """The buttons to attach to an alert, stopped before they are sent (presses reach the persistent view)."""
    view = AlertView(acknowledged=acknowledged)
    view.stop()
    return view
