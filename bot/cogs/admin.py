"""`/moodring ...`: server settings (Manage Server: hidden from members by Discord, and checked when the
command runs) and retraining (the bot's owners only, since the model serves every server); `/privacy`, for
every member: the privacy statement, and their opt-out (in every server at once)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import MoodringBot
from bot.checks import admin_only, owner_only
from bot.learning.community_data import plan_store
from bot.learning.corrections import corrections_report, retrain_summary
from bot.learning.progress_text import format_status
from bot.learning.retrain import RUNNING_HERE, RetrainStatus
from bot.privacy import privacy_statement
from bot.render import EMOJI, count_of, model_description
from bot.replies import NO_MENTIONS, send_ephemeral
from bot.store import AlertSensitivity, AlertSettings, ChannelSettings, Schedule

log = logging.getLogger(__name__)

CORRECTIONS_ON = (
    "Corrections are **on**: when members answer **Not quite?** under a reading, the text the model read and the "
    "emotions they chose are kept (no user ids) and used to retrain the model. `/privacy` says so to members."
)
CORRECTIONS_OFF_KEPT = (
    "Corrections are **off**: **Not quite?** tells members so, and retraining no longer uses this server's. The "
    "corrections kept so far stay until you delete them with `/moodring corrections action:clear`."
)
NOTHING_TRAINED = "Nothing was trained."
RETRAIN_TIMED_OUT = "Nothing was trained: no one pressed **Train** in time."
RETRAIN_CONFIRM_TIMEOUT_S = 120.0  # seconds the owner has to press Train or Cancel
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
OPTED_OUT = (
    "Done: I no longer read your messages, in any server: no automatic analysis, no reactions, no statistics, and "
    "nobody can have them read or correct a reading of them. `/emotion` still reads what you type into it. I keep "
    "only a keyed hash of your user id, until you opt in again with `/privacy choice:opt-in`."
)
ALREADY_OPTED_OUT = "You have opted out already: I don't read your messages. `/privacy choice:opt-in` undoes it."
OPTED_IN = "Done: I read your messages again, in every server, and the hash that recorded your opt-out is deleted."
NOT_OPTED_OUT = "You haven't opted out: I read your messages like everyone's. `/privacy` says what that keeps."


def describe_channel(channel_id: int, settings: ChannelSettings) -> str:
    on_off = {True: "on", False: "off"}
    return f"<#{channel_id}>: analysis **{on_off[settings.analysis]}**, auto-reactions **{on_off[settings.reactions]}**"


def describe_schedule(schedule: Schedule) -> str:
    if schedule.kind == "daily":
        when = f"daily at {schedule.hour:02d}:00 UTC"
    elif schedule.kind == "weekly":
        when = f"weekly on {WEEKDAYS[schedule.weekday or 0]} at {schedule.hour:02d}:00 UTC"
    else:
        when = f"every {schedule.every_hours} h"
    source = f"<#{schedule.source_channel_id}>" if schedule.source_channel_id else "the whole server"
    state = "" if schedule.enabled else f" — **disabled**: {schedule.disabled_reason}"
    return f"<#{schedule.channel_id}>: {when}, about {source}{state}"


def describe_alerts(settings: AlertSettings | None) -> str:
    if settings is None:
        return "None. Set them up with `/moodring alerts`."
    ping = f"mentioning <@&{settings.role_id}>" if settings.role_id else "mentioning no one"
    state = "on" if settings.enabled else "off" + (f" — {settings.disabled_reason}" if settings.disabled_reason else "")
    return (
        f"**{state}**: to <#{settings.mod_channel_id}>, watching {', '.join(settings.labels)}, "
        f"sensitivity **{settings.sensitivity}**, {ping}"
    )


def parse_emotions(text: str) -> tuple[str, ...]:
    """'anger, disgust' -> ('anger', 'disgust'); ValueError naming what is not one of the model's emotions."""
    labels = tuple(dict.fromkeys(part.strip().lower() for part in text.replace(" ", ",").split(",") if part.strip()))
    unknown = [label for label in labels if label not in EMOJI]
    if unknown or not labels:
        raise ValueError(
            f"{', '.join(unknown) or 'Nothing'} is not an emotion I read. Choose from: {', '.join(sorted(EMOJI))}."
        )
    return labels


class ConfirmDeletion(discord.ui.View):
    """A delete button and Cancel; only the admin who asked can press them, and only while still an admin.
    `delete` deletes and returns what to tell them."""

    def __init__(self, admin_id: int, confirm_label: str, delete: Callable[[], Awaitable[str]]) -> None:
        super().__init__(timeout=120)
        self.admin_id = admin_id
        self.delete = delete
        self.confirm.label = confirm_label

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self.admin_id or not interaction.permissions.manage_guild:
            await send_ephemeral(interaction, "Only the admin who asked can confirm this.")
            return False
        return True

    @discord.ui.button(label="Delete", style=discord.ButtonStyle.danger)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.edit_message(content=await self.delete(), view=None)
        self.stop()

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.edit_message(content="Nothing was deleted.", view=None)
        self.stop()


class ConfirmRetrain(discord.ui.View):
    """Train and Cancel under what the corrections hold; only the owner who asked can press them, and only while
    still an owner of the bot (checked on every press). `train` starts the retrain and returns what to tell them;
    without a press within `timeout` seconds nothing is trained."""

    def __init__(self, owner_id: int, train_label: str, train: Callable[[], Awaitable[str]], timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.owner_id = owner_id
        self.train = train
        self.confirm.label = train_label
        self.asked: discord.Interaction | None = None  # the `/moodring retrain` whose answer this view sits under

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self.owner_id or not await interaction.client.is_owner(interaction.user):
            await send_ephemeral(interaction, "Only the owner who asked can confirm this.")
            return False
        return True

    @discord.ui.button(label="Train", style=discord.ButtonStyle.primary)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.stop()
        await interaction.response.edit_message(content=await self.train(), view=None)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.stop()
        await interaction.response.edit_message(content=NOTHING_TRAINED, view=None)

    async def on_timeout(self) -> None:
        if self.asked is None:
            return
        try:
            await self.asked.edit_original_response(content=RETRAIN_TIMED_OUT, view=None)
        except discord.HTTPException as error:
            log.warning("could not say that the retrain confirmation timed out: %s", error)


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)  # Discord reads it from the group only, for every subcommand
class Admin(commands.GroupCog, group_name="moodring", group_description="moodring settings for this server"):
    def __init__(self, bot: MoodringBot) -> None:
        self.bot = bot
        super().__init__()

    # ------------------------------------------------------------------ channel settings

    @app_commands.command(name="channel", description="Switch emotion analysis and auto-reactions for a channel")
    @app_commands.describe(
        channel="The channel to change (default: this one)",
        analysis="Read messages here for statistics and reactions",
        reactions="React to messages with their emotions",
    )
    @admin_only()
    async def channel(
        self,
        interaction: discord.Interaction,
        channel: discord.TextChannel | None = None,
        analysis: bool | None = None,
        reactions: bool | None = None,
    ) -> None:
        target = channel or interaction.channel
        if analysis is None and reactions is None:
            settings = await self.bot.store.channel_settings(interaction.guild.id, target.id)
            message = describe_channel(target.id, settings)
        else:
            settings = await self.bot.store.set_channel_settings(
                interaction.guild.id, target.id, analysis=analysis, reactions=reactions
            )
            message = "Updated. " + describe_channel(target.id, settings)
            log.info("guild %s channel %s settings: %s", interaction.guild.id, target.id, settings)
        await interaction.response.send_message(message, ephemeral=True, allowed_mentions=NO_MENTIONS)

    @app_commands.command(name="settings", description="Show moodring's configuration for this server")
    @admin_only()
    async def settings(self, interaction: discord.Interaction) -> None:
        guild_id = interaction.guild.id
        channels = await self.bot.store.guild_channel_settings(guild_id)
        schedules = await self.bot.store.schedules(guild_id)
        retention = await self.bot.store.retention_days(guild_id)
        default = ChannelSettings()
        embed = discord.Embed(title="moodring settings", colour=0x5865F2)
        embed.add_field(
            name="Channels",
            value="\n".join(describe_channel(c, s) for c, s in channels.items())[:1024]
            or "All channels use the defaults.",
            inline=False,
        )
        embed.add_field(
            name="Defaults",
            value=f"analysis **{'on' if default.analysis else 'off'}**, "
            f"auto-reactions **{'on' if default.reactions else 'off'}**",
            inline=False,
        )
        embed.add_field(
            name="Mood summaries",
            value="\n".join(describe_schedule(s) for s in schedules)[:1024]
            or "None. Add one with `/moodring summary`.",
            inline=False,
        )
        alerts = await self.bot.store.alert_settings(guild_id)
        embed.add_field(name="Mood alerts", value=describe_alerts(alerts)[:1024], inline=False)
        embed.add_field(name="Statistics kept for", value=count_of(retention, "day"), inline=True)
        corrections = await self.bot.store.corrections_enabled(guild_id)
        embed.add_field(
            name="Corrections",
            value="on: members may correct readings (`/moodring corrections`)"
            if corrections
            else "off: members' corrections are not collected (`/moodring corrections action:enable`)",
            inline=True,
        )
        embed.add_field(name="Model", value=model_description(self.bot.inference.classifier), inline=False)
        await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=NO_MENTIONS)

    # ------------------------------------------------------------------ summaries and retention

    @app_commands.command(name="summary", description="Post a mood summary on a schedule")
    @app_commands.describe(
        channel="Where to post the summaries",
        schedule="How often",
        hour="Hour of day, UTC (daily and weekly)",
        weekday="Day of the week (weekly)",
        every_hours="Hours between summaries (every N hours)",
        about="Summarise this channel only (default: the whole server)",
    )
    @app_commands.choices(weekday=[app_commands.Choice(name=d, value=i) for i, d in enumerate(WEEKDAYS)])
    @admin_only()
    async def summary(
        self,
        interaction: discord.Interaction,
        channel: discord.TextChannel,
        schedule: Literal["daily", "weekly", "every"],
        hour: app_commands.Range[int, 0, 23] = 18,
        weekday: int = 0,
        every_hours: app_commands.Range[int, 1, 168] = 24,
        about: discord.TextChannel | None = None,
    ) -> None:
        if about is not None and not about.permissions_for(interaction.user).read_message_history:
            await send_ephemeral(interaction, f"You can't read {about.mention}, so you can't publish its mood.")
            return
        permissions = channel.permissions_for(interaction.guild.me)
        if not (permissions.send_messages and permissions.embed_links and permissions.attach_files):
            await send_ephemeral(
                interaction, f"I need Send Messages, Embed Links and Attach Files in {channel.mention} first."
            )
            return
        saved = await self.bot.store.upsert_schedule(
            interaction.guild.id,
            channel.id,
            schedule,
            hour=hour if schedule != "every" else None,
            weekday=weekday if schedule == "weekly" else None,
            every_hours=every_hours if schedule == "every" else None,
            source_channel_id=about.id if about else None,
        )
        if saved.last_posted_at is None:  # a new schedule starts at its next slot, not with a catch-up post
            await self.bot.store.mark_posted(saved.id, self.bot.clock())
        await interaction.response.send_message(
            "Scheduled: " + describe_schedule(saved), ephemeral=True, allowed_mentions=NO_MENTIONS
        )

    @app_commands.command(name="summary-off", description="Stop the mood summaries posted in a channel")
    @admin_only()
    async def summary_off(self, interaction: discord.Interaction, channel: discord.TextChannel) -> None:
        removed = [s for s in await self.bot.store.schedules(interaction.guild.id) if s.channel_id == channel.id]
        for schedule in removed:
            await self.bot.store.delete_schedule(schedule.id)
        message = f"Stopped the summaries in {channel.mention}." if removed else f"{channel.mention} had none."
        await interaction.response.send_message(message, ephemeral=True, allowed_mentions=NO_MENTIONS)

    @app_commands.command(name="alerts", description="Private mood alerts for moderators, with buttons")
    @app_commands.describe(
        channel="The moderators' channel the alerts go to",
        emotions="The emotions to watch, comma-separated (default: anger, annoyance, disgust, disapproval)",
        sensitivity="How readily an alert fires (default: medium)",
        role="A role to mention in each alert (default: no one is pinged)",
        no_ping="Mention no one (drops the role)",
        enabled="Alerts on or off",
    )
    @admin_only()
    async def alerts(
        self,
        interaction: discord.Interaction,
        channel: discord.TextChannel | None = None,
        emotions: str | None = None,
        sensitivity: AlertSensitivity | None = None,
        role: discord.Role | None = None,
        no_ping: bool = False,
        enabled: bool | None = None,
    ) -> None:
        """Options left out keep their value (or, on first use, the defaults), and a change switches alerts on unless
        it says `enabled:false` (so that setting them up again after the bot switched them off works); without any
        option, the settings are shown."""
        store, config = self.bot.store, self.bot.config
        current = await store.alert_settings(interaction.guild.id)
        if channel is emotions is sensitivity is role is enabled is None and not no_ping:
            await send_ephemeral(interaction, "Mood alerts: " + describe_alerts(current))
            return
        target_id = channel.id if channel else current.mod_channel_id if current else None
        if target_id is None:
            await send_ephemeral(interaction, "Choose the moderators' `channel` the alerts go to.")
            return
        target = channel or interaction.guild.get_channel(target_id)
        if target is not None:
            permissions = target.permissions_for(interaction.guild.me)
            if not (permissions.send_messages and permissions.embed_links):
                await send_ephemeral(interaction, f"I need Send Messages and Embed Links in {target.mention} first.")
                return
        try:
            labels = parse_emotions(emotions) if emotions else current.labels if current else config.alert_labels
        except ValueError as error:
            await send_ephemeral(interaction, str(error))
            return
        saved = await store.set_alert_settings(
            interaction.guild.id,
            mod_channel_id=target_id,
            labels=labels,
            sensitivity=sensitivity or (current.sensitivity if current else config.alert_sensitivity),
            role_id=None if no_ping else role.id if role else current.role_id if current else None,
            enabled=enabled if enabled is not None else True,
        )
        log.info("guild %s mood alerts: %s", interaction.guild.id, saved)
        await send_ephemeral(interaction, "Updated. Mood alerts: " + describe_alerts(saved))

    @app_commands.command(name="retention", description="How many days of mood statistics to keep")
    @admin_only()
    async def retention(self, interaction: discord.Interaction, days: app_commands.Range[int, 1, 3650]) -> None:
        await self.bot.store.set_retention_days(interaction.guild.id, days)
        await interaction.response.send_message(
            f"Statistics older than {count_of(days, 'day')} are deleted by the daily prune.", ephemeral=True
        )

    # ------------------------------------------------------------------ forgetting

    @app_commands.command(name="forget", description="Delete all of this server's mood statistics and corrections")
    @admin_only()
    async def forget(self, interaction: discord.Interaction) -> None:
        guild_id = interaction.guild.id

        async def delete() -> str:
            deleted = await self.bot.store.forget_guild(guild_id)
            log.info("guild %s forgot its statistics and corrections (%d rows)", guild_id, deleted)
            return f"Deleted all of this server's mood statistics and corrections ({deleted} rows)."

        await interaction.response.send_message(
            "This deletes **all** of this server's mood statistics, for every channel, and its corrections. "
            "It cannot be undone.",
            view=ConfirmDeletion(interaction.user.id, "Delete all statistics", delete),
            ephemeral=True,
        )

    # ------------------------------------------------------------------ corrections

    @app_commands.command(name="corrections", description="Members' corrections of the model: show, enable, disable")
    @app_commands.describe(action="show (default), enable or disable collecting them, or clear them")
    @admin_only()
    async def corrections(
        self, interaction: discord.Interaction, action: Literal["show", "enable", "disable", "clear"] = "show"
    ) -> None:
        guild_id = interaction.guild.id
        store = self.bot.store
        if action == "show":
            kept = await store.corrections(guild_id)
            embed = corrections_report(kept, await store.corrections_enabled(guild_id))
            await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=NO_MENTIONS)
        elif action in ("enable", "disable"):
            enabled = await store.set_corrections_enabled(guild_id, action == "enable")
            log.info("guild %s turned corrections %s", guild_id, "on" if enabled else "off")
            message = CORRECTIONS_ON if enabled else CORRECTIONS_OFF_KEPT
            await interaction.response.send_message(message, ephemeral=True, allowed_mentions=NO_MENTIONS)
        else:

            async def delete() -> str:
                deleted = await store.clear_corrections(guild_id)
                log.info("guild %s cleared its corrections (%d)", guild_id, deleted)
                return f"Deleted this server's {deleted} corrections."

            await interaction.response.send_message(
                "This deletes **all** of this server's corrections. It cannot be undone.",
                view=ConfirmDeletion(interaction.user.id, "Delete all corrections", delete),
                ephemeral=True,
            )

    # ------------------------------------------------------------------ retraining (owners)

    @app_commands.command(name="retrain", description="Retrain the emotion model (bot owners only)")
    @owner_only()
    async def retrain(self, interaction: discord.Interaction) -> None:
        """Show what the corrections hold (bot/learning/community_data.py counts them) and train only once the
        owner presses Train; the run reads the corrections again then, so a deletion in between is honoured."""
        if not interaction.channel.permissions_for(interaction.guild.me).send_messages:
            await send_ephemeral(interaction, "I can't post progress here; run this in a channel where I can write.")
            return
        if self.bot.retrainer.running:
            await send_ephemeral(interaction, RUNNING_HERE)
            return
        config = self.bot.config
        plan = await plan_store(self.bot.store, config.model_dir, config.counting_rules)
        channel = interaction.channel

        async def train() -> str:
            progress = ProgressMessage(channel)
            if not await self.bot.retrainer.start(progress.update):
                return self.bot.retrainer.refusal
            log.info("a retrain confirmed by an owner has started")
            return "Starting a retrain; progress follows here."

        usable = plan is not None and bool(plan.rows)
        view = ConfirmRetrain(
            interaction.user.id, "Train" if usable else "Train on GoEmotions alone", train, RETRAIN_CONFIRM_TIMEOUT_S
        )
        await interaction.response.send_message(
            retrain_summary(plan, self.server_name), view=view, ephemeral=True, allowed_mentions=NO_MENTIONS
        )
        view.asked = interaction

    def server_name(self, guild_id: int) -> str:
        """A server as the bot knows it: its name (Markdown escaped), else its id."""
        guild = self.bot.get_guild(guild_id)
        return discord.utils.escape_markdown(guild.name) if guild is not None else f"server {guild_id}"

    @app_commands.command(name="retrain-cancel", description="Stop the running retrain (bot owners only)")
    @owner_only()
    async def retrain_cancel(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        status = await self.bot.retrainer.cancel()  # its final status says which model serves now
        message = format_status(status) if status is not None else "No retrain is running."
        await interaction.followup.send(message, ephemeral=True)


class ProgressMessage:
    """One channel message, edited as a retrain progresses (channel messages, unlike interaction
    responses, stay editable after 15 minutes)."""

    def __init__(self, channel: discord.abc.Messageable) -> None:
        self.channel = channel
        self.message: discord.Message | None = None
        self.last_text = ""
        self.lock = asyncio.Lock()  # one request at a time, so there is only ever one message

    async def update(self, status: RetrainStatus) -> None:
        async with self.lock:
            text = format_status(status)
            if text == self.last_text:
                return
            if self.message is None:
                self.message = await self.channel.send(text, allowed_mentions=NO_MENTIONS)
            else:
                await self.message.edit(content=text, allowed_mentions=NO_MENTIONS)
            self.last_text = text


class Privacy(commands.Cog):
    """`/privacy`, outside `/moodring` so that Discord shows it to every member."""

    def __init__(self, bot: MoodringBot) -> None:
        self.bot = bot

    @app_commands.command(name="privacy", description="What moodring stores, for how long, and how to delete it")
    @app_commands.describe(
        choice="show (default) the statement; opt-out: moodring stops reading your messages; opt-in: it reads them "
        "again"
    )
    @app_commands.guild_only()
    async def privacy(
        self, interaction: discord.Interaction, choice: Literal["show", "opt-out", "opt-in"] = "show"
    ) -> None:
        """Answered privately. An opt-out holds in every server (one keyed hash per user), so it is logged without
        the guild or the member."""
        if choice == "show":
            message = privacy_statement(await self.bot.store.retention_days(interaction.guild.id))
        elif choice == "opt-out":
            changed = await self.bot.store.set_opted_out(interaction.user.id, True)
            message = OPTED_OUT if changed else ALREADY_OPTED_OUT
            if changed:
                log.info("a member opted out")
        else:
            changed = await self.bot.store.set_opted_out(interaction.user.id, False)
            message = OPTED_IN if changed else NOT_OPTED_OUT
            if changed:
                log.info("a member opted in again")
        await interaction.response.send_message(message, ephemeral=True, allowed_mentions=NO_MENTIONS)


async def setup(bot: MoodringBot) -> None:
    await bot.add_cog(Admin(bot))
    await bot.add_cog(Privacy(bot))
