"""Mood alerts: every minute, each watched channel's share of watched messages is tested against its own baseline
(bot/alerts/detector.py), and a channel that rose gets one private alert in the moderators' channel, with buttons
(bot/alerts/message.py). `/moodring alerts` (bot/cogs/admin.py) sets them up.

Limits, and how each is kept:

- **One alert per channel per cooldown** (`alert_cooldown_s`), exactly once across a cluster: the alert is claimed
  before it is sent (`Store.claim_alert`, a conditional write like the summaries' `claim_slot`: of any number of
  ticks and processes one wins), and sent with a nonce of its own, so discord.py's retries of one request never post
  it twice. A send Discord refused gives the claim back (the next tick tries again); one whose outcome is unknown (a
  5xx, a dropped connection) keeps it: at most one alert, never two.
- **Catch-up after downtime**: the loop tests only the window it finds (the last hours), never the hours it
  missed, so coming back sends at most one alert per channel.
- **Shards**: a process tests only the guilds of the shards it runs (`owns_guild`); their messages are counted by
  that same process.
- **Snooze and Less sensitive**, per channel, from the buttons: a snoozed channel is neither tested nor claimed.
- **A moderators' channel that is gone**, or where the bot lost Send Messages or Embed Links, switches the guild's
  alerts off and tells the admins once (`Store.disable_alerts` is true for one caller), as the summaries do.
"""

from __future__ import annotations

import logging

import discord
from discord.ext import commands, tasks

from bot.alerts.detector import Finding, Rules, detect, level_for
from bot.alerts.message import (
    SNOOZE_HOURS,
    TOP_EMOTIONS,
    AlertAction,
    AlertView,
    alert_channel,
    alert_embed,
    alert_nonce,
    alert_view,
    with_action,
)
from bot.app import MoodringBot
from bot.backoff import Backoff
from bot.cluster.sharding import owns_guild
from bot.replies import NO_MENTIONS, send_ephemeral, tell_admins
from bot.store import AlertChannel, AlertSettings, StoreError
from bot.store.interface import bucket_start

log = logging.getLogger(__name__)

ALERT_BACKOFF_CAP = 8  # ticks of the alert loop (minutes): alerts are at most that late after an outage
HOUR = 3600
NO_ALERTS = "This server has no mood alerts (`/moodring alerts`), so there is nothing to do."


def rules_of(bot: MoodringBot) -> Rules:
    config = bot.config
    return Rules(config.alert_min_messages, config.alert_min_baseline_messages, config.alert_min_ratio)


def window_start(now: float, hours: int) -> int:
    """The start of the window at `now`: the clock hour in progress and the `hours` - 1 before it."""
    return bucket_start(now) - (hours - 1) * HOUR


class Alerts(commands.Cog):
    def __init__(self, bot: MoodringBot) -> None:
        self.bot = bot
        self.backoff = Backoff("checking mood alerts", log, cap=ALERT_BACKOFF_CAP, expected=(StoreError,))
        self.buttons = AlertView(self.on_action)
        self.alerts.start()

    async def cog_load(self) -> None:
        self.bot.add_view(self.buttons)  # persistent: alerts posted before a restart keep their buttons

    async def cog_unload(self) -> None:
        self.alerts.cancel()
        self.buttons.stop()

    @tasks.loop(minutes=1)
    async def alerts(self) -> None:
        """Never raises, so the loop never ends: a failed tick is logged (once per outage) and retried after 1, 2,
        4... up to ``ALERT_BACKOFF_CAP`` ticks."""
        await self.backoff.tick(lambda: self.check_alerts(self.bot.clock()))

    @alerts.before_loop
    async def _before_alerts(self) -> None:
        await self.bot.wait_until_ready()

    async def check_alerts(self, now: float) -> int:
        """Test every watched channel of the guilds this process runs and post the alerts due; how many were posted.
        A guild that fails does not stop the others; an error of the store itself ends the tick (it raises)."""
        posted = 0
        for settings in await self.bot.store.enabled_alert_settings():
            if not owns_guild(settings.guild_id, self.bot.shard_ids, self.bot.shard_count):
                continue
            try:
                posted += await self.check_guild(settings, now)
            except StoreError:
                raise
            except Exception:
                log.exception("mood alerts of guild %s failed; will retry", settings.guild_id)
        return posted

    async def check_guild(self, settings: AlertSettings, now: float) -> int:
        config, store = self.bot.config, self.bot.store
        since = window_start(now, config.alert_window_hours)
        counts = await store.alert_counts(settings.guild_id, since - config.alert_baseline_days * 86400, since, now + 1)
        states = await store.alert_channels(settings.guild_id)
        rules = rules_of(self.bot)
        due: list[tuple[int, Finding, AlertChannel]] = []
        for channel_id, (baseline, window) in counts.items():
            state = states.get(channel_id) or AlertChannel(settings.guild_id, channel_id)
            if state.snoozed_until is not None and state.snoozed_until > now:
                continue
            if state.last_alert_at is not None and now - state.last_alert_at < config.alert_cooldown_s:
                continue
            finding = detect(window, baseline, rules, settings.sensitivity, state.steps)
            if finding is not None:
                due.append((channel_id, finding, state))
        if not due:
            return 0
        guild = self.bot.get_guild(settings.guild_id)
        if guild is None or guild.unavailable:
            return 0  # an outage or a guild still loading: the next tick tests again
        target = await self.moderators_channel(settings, guild)
        if target is None:
            return 0
        posted = 0
        for channel_id, finding, state in due:
            sent = await self.post_alert(settings, target, channel_id, finding, state, since, now)
            if sent is None:
                break  # alerts were switched off
            posted += sent
        return posted

    async def moderators_channel(self, settings: AlertSettings, guild: discord.Guild) -> discord.TextChannel | None:
        """The moderators' channel if the bot can post alerts there; else alerts are switched off (None)."""
        channel = guild.get_channel(settings.mod_channel_id)
        if channel is None:
            try:
                channel = await self.bot.fetch_channel(settings.mod_channel_id)
            except (discord.NotFound, discord.Forbidden):
                await self.switch_off(settings, "the moderators' channel was deleted or I can no longer see it")
                return None
        permissions = channel.permissions_for(guild.me)
        if not (permissions.send_messages and permissions.embed_links):
            await self.switch_off(settings, f"I lost Send Messages or Embed Links in {channel.mention}")
            return None
        return channel

    async def post_alert(
        self,
        settings: AlertSettings,
        target: discord.TextChannel,
        channel_id: int,
        finding: Finding,
        state: AlertChannel,
        since: float,
        now: float,
    ) -> bool | None:
        """Claim the channel's alert and send it: True when sent, False when not (claimed elsewhere, or refused and
        given back), None when alerts were switched off."""
        store = self.bot.store
        mood = await store.mood(settings.guild_id, channel_id, since, now + 1)
        top = sorted(mood.label_counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_EMOTIONS]
        embed = alert_embed(
            settings,
            channel_id,
            finding,
            top,
            since=since,
            baseline_days=self.bot.config.alert_baseline_days,
            steps=state.steps,
            now=now,
        )
        role = settings.role_id
        if not await store.claim_alert(settings.guild_id, channel_id, now - self.bot.config.alert_cooldown_s, now):
            return False  # another tick or process alerted, or a moderator snoozed it meanwhile
        try:
            await target.send(
                content=f"<@&{role}>" if role else None,
                embed=embed,
                view=alert_view(),
                allowed_mentions=discord.AllowedMentions.none()
                if role is None
                else discord.AllowedMentions(everyone=False, users=False, roles=[discord.Object(role)]),
                nonce=alert_nonce(channel_id, now),
            )
        except discord.Forbidden:
            await self.switch_off(settings, f"I am not allowed to post in {target.mention}")
            return None
        except discord.NotFound:
            await self.switch_off(settings, "the moderators' channel was deleted")
            return None
        except discord.DiscordServerError as error:  # it may have posted: keep the claim (at most one alert)
            log.warning("the mood alert for channel %s may not have been posted: %s", channel_id, error)
            return False
        except discord.HTTPException as error:  # refused: nothing was posted, so the claim is given back
            log.warning("could not post the mood alert for channel %s (will retry): %s", channel_id, error)
            await store.release_alert(settings.guild_id, channel_id, now, state.last_alert_at)
            return False
        log.info("mood alert for channel %s of guild %s (p = %.1e)", channel_id, settings.guild_id, finding.p_value)
        return True

    async def switch_off(self, settings: AlertSettings, reason: str) -> None:
        """Switch the guild's alerts off and tell its admins, once across the cluster."""
        if not await self.bot.store.disable_alerts(settings.guild_id, reason):
            return  # another tick or process did, and told them
        log.info("switched off the mood alerts of guild %s: %s", settings.guild_id, reason)
        guild = self.bot.get_guild(settings.guild_id)
        if guild is None:
            return
        notice = (
            f"I stopped posting mood alerts to <#{settings.mod_channel_id}>: {reason}. "
            "An admin can set them up again with `/moodring alerts`."
        )
        await tell_admins(self.bot, guild, notice, "its mood alerts were switched off")

    # ------------------------------------------------------------------ the buttons

    async def on_action(self, interaction: discord.Interaction, action: AlertAction) -> None:
        """A moderator's press (Manage Server already checked by the view): the action is stored, and the alert gains
        a line saying who did what, and when (the database keeps no user id)."""
        found = alert_channel(interaction.message)
        store = self.bot.store
        if found is None or found[0] != interaction.guild_id or store is None:
            await send_ephemeral(interaction, "I can't tell which channel this alert is about any more.")
            return
        guild_id, channel_id = found
        settings = await store.alert_settings(guild_id)
        if settings is None:
            await send_ephemeral(interaction, NO_ALERTS)
            return
        now = self.bot.clock()
        who, when = interaction.user.mention, f"<t:{int(now)}:f>"
        if action == "acknowledge":
            await store.update_alert_channel(guild_id, channel_id, acknowledged_at=now)
            line = f"✅ Acknowledged by {who}, {when}"
        elif action in SNOOZE_HOURS:
            hours = SNOOZE_HOURS[action]
            until = now + hours * HOUR
            await store.update_alert_channel(guild_id, channel_id, snoozed_until=until)
            line = f"💤 Snoozed for {hours} h by {who}, {when} (until <t:{int(until)}:t>)"
        else:
            state = await store.update_alert_channel(guild_id, channel_id, more_steps=1)
            level = level_for(settings.sensitivity, state.steps)
            line = f"🔉 Made less sensitive by {who}, {when} (this channel now needs p ≤ {level:.0e})"
        log.info("a moderator pressed %s on the mood alert for channel %s", action, channel_id)
        embed = with_action(interaction.message.embeds[0], line)
        acknowledged = action == "acknowledge" or any(
            field.value and "Acknowledged by" in field.value for field in embed.fields
        )
        await interaction.response.edit_message(
            embed=embed, view=alert_view(acknowledged=acknowledged), allowed_mentions=NO_MENTIONS
        )


async def setup(bot: MoodringBot) -> None:
    await bot.add_cog(Alerts(bot))
