"""Channel mood: `/mood` and the scheduled summaries. (The retention prune and deleting a removed server's data are
housekeeping: bot/cogs/housekeeping.py.)"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from datetime import UTC, datetime, timedelta
from functools import partial

import discord
from discord import app_commands
from discord.ext import commands, tasks

from bot.app import MoodringBot
from bot.backoff import Backoff
from bot.charts import mood_chart
from bot.cluster.sharding import owns_guild
from bot.render import emoji_for
from bot.replies import NO_MENTIONS, InvalidArgument, send_ephemeral, tell_admins
from bot.store import Schedule, StoreError

log = logging.getLogger(__name__)

MAX_PERIOD = 90 * 86400
PERIOD_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400}
_PERIOD = re.compile(r"^\s*(\d+)\s*(h|hours?|d|days?|w|weeks?)\s*$", re.IGNORECASE)
SUMMARY_PERIODS = {"daily": 86400, "weekly": 7 * 86400}
TOP_EMOTIONS = 5
SUMMARY_BACKOFF_CAP = 8  # ticks of the summary loop (minutes): a summary is at most that late after an outage


def parse_period(text: str) -> int:
    """'24h', '3 days', '2w' -> seconds; at most 90 days."""
    match = _PERIOD.match(text)
    if not match:
        raise ValueError("Use a period like `12h`, `3d` or `2w`.")
    seconds = int(match.group(1)) * PERIOD_UNITS[match.group(2)[0].lower()]
    if not 3600 <= seconds <= MAX_PERIOD:
        raise ValueError("The period must be between 1 hour and 90 days.")
    return seconds


class Period(app_commands.Transformer):
    """A period typed by a member ('24h', '3d', '2w') as seconds; a bad one is answered privately with the fix."""

    async def transform(self, interaction: discord.Interaction, value: str) -> int:
        try:
            return parse_period(value)
        except ValueError as error:
            raise InvalidArgument(str(error)) from None


def describe_period(seconds: int) -> str:
    for size, name in ((7 * 86400, "week"), (86400, "day"), (3600, "hour")):
        if seconds % size == 0:
            count = seconds // size
            return f"{name}" if count == 1 else f"{count} {name}s"
    return f"{seconds // 3600} hours"


def summary_nonce(schedule: Schedule, slot: float) -> str:
    """The message nonce of a slot's summary: the same for every try, at most Discord's 25 characters."""
    return f"s{schedule.id}-{int(slot)}"


def latest_slot(schedule: Schedule, now: float) -> float:
    """The most recent time at or before `now` when `schedule` should have posted (UTC)."""
    if schedule.kind == "every":
        step = 3600 * (schedule.every_hours or 1)
        return now - now % step
    moment = datetime.fromtimestamp(now, UTC)
    slot = moment.replace(hour=schedule.hour or 0, minute=0, second=0, microsecond=0)
    if schedule.kind == "weekly":
        slot -= timedelta(days=(slot.weekday() - (schedule.weekday or 0)) % 7)
        if slot > moment:
            slot -= timedelta(days=7)
    elif slot > moment:
        slot -= timedelta(days=1)
    return slot.timestamp()


def summary_period(schedule: Schedule) -> int:
    return SUMMARY_PERIODS.get(schedule.kind) or 3600 * (schedule.every_hours or 1)


class Mood(commands.Cog):
    def __init__(self, bot: MoodringBot) -> None:
        self.bot = bot
        self.summary_backoff = Backoff(
            "posting scheduled summaries", log, cap=SUMMARY_BACKOFF_CAP, expected=(StoreError,)
        )
        self.summaries.start()

    async def cog_unload(self) -> None:
        self.summaries.cancel()

    # ------------------------------------------------------------------ /mood

    @app_commands.command(name="mood", description="How has a channel been feeling?")
    @app_commands.describe(channel="Which channel (default: this one)", period="How far back: 24h, 3d, 2w…")
    @app_commands.guild_only()
    async def mood(
        self,
        interaction: discord.Interaction,
        channel: discord.TextChannel | None = None,
        period: app_commands.Transform[int, Period] = 86400,
    ) -> None:
        target = channel or interaction.channel
        if not target.permissions_for(interaction.user).read_message_history:
            await send_ephemeral(interaction, "You can only see the mood of channels whose history you can read.")
            return
        private = target.id != interaction.channel_id  # another channel's mood is only for the member who asked
        await interaction.response.defer(thinking=True, ephemeral=private)
        embed, chart = await self.report(interaction.guild.id, target.id, f"#{target.name}", period, self.bot.clock())
        files = [chart] if chart else []
        await interaction.followup.send(embed=embed, files=files, ephemeral=private, allowed_mentions=NO_MENTIONS)

    async def report(
        self, guild_id: int, channel_id: int | None, place: str, seconds: int, now: float
    ) -> tuple[discord.Embed, discord.File | None]:
        """The mood embed for `place` over the `seconds` before `now`, with its chart as an attachment."""
        store = self.bot.store
        span = describe_period(seconds)
        current = await store.mood(guild_id, channel_id, now - seconds, now)
        if current.messages == 0:
            embed = discord.Embed(
                title=f"Mood in {place}",
                description=f"Not enough messages yet: nothing analysed in the last {span}.",
                colour=0x99AAB5,
            )
            return embed, None
        previous = await store.mood(guild_id, channel_id, now - 2 * seconds, now - seconds)
        ranked = sorted(current.label_counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_EMOTIONS]
        lines = []
        for label, count in ranked:
            share = count / current.messages
            if previous.messages:
                delta = 100 * (share - previous.label_counts.get(label, 0) / previous.messages)
                change = "±0" if abs(delta) < 0.5 else f"{'▲' if delta > 0 else '▼'} {abs(delta):.0f} pts"
            else:
                change = "new"
            lines.append(f"{emoji_for(label)} **{label}** {share:.0%} ({change})")
        embed = discord.Embed(
            title=f"Mood in {place}, last {span}",
            description=f"{current.messages} messages analysed ({previous.messages} in the {span} before).",
            colour=0x5865F2,
            timestamp=datetime.fromtimestamp(now, UTC),
        )
        embed.add_field(name="Dominant emotions (share of messages, change)", value="\n".join(lines), inline=False)
        timeline = await store.timeline(guild_id, channel_id, now - seconds, now)
        bin_hours = 1 if seconds <= 2 * 86400 else 24
        png = await asyncio.to_thread(
            partial(mood_chart, since=now - seconds, until=now),
            timeline,
            [label for label, _ in ranked],
            f"{place}: last {span}",
            bin_hours,
        )
        embed.set_image(url="attachment://mood.png")
        embed.set_footer(text="Counts of emotions above threshold; no message text is stored.")
        return embed, discord.File(fp=io.BytesIO(png), filename="mood.png")

    # ------------------------------------------------------------------ scheduled summaries

    @tasks.loop(minutes=1)
    async def summaries(self) -> None:
        """Never raises, so the loop never ends: a failed tick is logged (once per outage) and retried after
        1, 2, 4... up to ``SUMMARY_BACKOFF_CAP`` ticks."""
        await self.summary_backoff.tick(lambda: self.post_due_summaries(self.bot.clock()))

    @summaries.before_loop
    async def _before_summaries(self) -> None:
        await self.bot.wait_until_ready()

    async def post_due_summaries(self, now: float) -> int:
        """Post every summary whose latest slot has passed since it last posted; one each, even after downtime.

        Exactly once: a slot is claimed before its summary is sent, with a nonce of its own (`summary_nonce`:
        Discord then returns the first message for that nonce instead of posting another). A claimed slot whose send
        is not known to have gone through (`send_pending`: a crash after the claim, a 5xx, a dropped connection) is
        sent again with the same nonce while that is safe, `summary_retry_window_s` after the claim; after that it
        is given up, with one line: at most once, rather than twice.

        A broken schedule does not stop the others; an error of the store itself ends the tick (it raises).
        """
        posted = 0
        window = self.bot.config.summary_retry_window_s
        for schedule in await self.bot.store.schedules():
            if not owns_guild(schedule.guild_id, self.bot.shard_ids, self.bot.shard_count):
                continue  # another process of the cluster runs that guild's shard, and posts its summaries
            if schedule.send_pending and now - schedule.last_posted_at >= window:
                await self.bot.store.confirm_slot(schedule.id, schedule.last_posted_at)
                log.warning(
                    "summary schedule %s: the post claimed %.0f s ago may not have been sent, and it is too late to "
                    "send it again safely (Discord keeps a nonce for a few minutes): not posting that slot",
                    schedule.id,
                    now - schedule.last_posted_at,
                )
                continue
            due = schedule.last_posted_at is None or latest_slot(schedule, now) > schedule.last_posted_at
            if not (due or schedule.send_pending):
                continue
            try:
                posted += await self.post_summary(schedule, now)
            except StoreError:  # the database itself: it ends the whole tick (the loop backs off)
                raise
            except Exception:
                log.exception("summary schedule %s failed; will retry", schedule.id)
        return posted

    async def post_summary(self, schedule: Schedule, now: float) -> bool:
        guild = self.bot.get_guild(schedule.guild_id)
        if guild is None or guild.unavailable:
            return False  # an outage or a guild still loading: try again on the next tick
        channel = guild.get_channel(schedule.channel_id)
        if channel is None:
            try:
                channel = await self.bot.fetch_channel(schedule.channel_id)
            except (discord.NotFound, discord.Forbidden):
                await self.disable(schedule, "its channel was deleted or I can no longer see it")
                return False
        me = channel.guild.me
        permissions = channel.permissions_for(me)
        if not (permissions.send_messages and permissions.embed_links and permissions.attach_files):
            await self.disable(schedule, f"I lost Send Messages, Embed Links or Attach Files in {channel.mention}")
            return False
        source = schedule.source_channel_id
        source_channel = self.bot.get_channel(source) if source else None
        place = f"#{source_channel.name}" if source_channel else (channel.guild.name if source is None else "a channel")
        embed, chart = await self.report(schedule.guild_id, source, place, summary_period(schedule), now)
        # Claimed before it is sent: a post whose record fails is never sent twice. At most one post per slot; a
        # pending one is sent again for the slot it claimed, with the same nonce.
        claimed_at = schedule.last_posted_at if schedule.send_pending else now
        slot = latest_slot(schedule, claimed_at)
        if not schedule.send_pending and not await self.bot.store.claim_slot(schedule.id, slot, now):
            return False  # already posted for this slot
        try:
            await channel.send(
                embed=embed,
                files=[chart] if chart else [],
                allowed_mentions=NO_MENTIONS,
                nonce=summary_nonce(schedule, slot),  # discord.py then sets enforce_nonce
            )
        except discord.Forbidden:
            await self.disable(schedule, f"I am not allowed to post in {channel.mention}")
            return False
        except discord.NotFound:
            await self.disable(schedule, "its channel was deleted")
            return False
        except discord.DiscordServerError as error:  # a 5xx (after discord.py's own retries): it may have posted
            log.warning("summary %s may not have been posted (%s): sending it again with its nonce", schedule.id, error)
            return False
        except discord.HTTPException as error:  # Discord refused it: nothing was posted, so the next tick retries
            log.warning("could not post summary %s (will retry): %s", schedule.id, error)
            # The slot as it was before its claim; for a pending one that is unknown: as if never posted (the
            # latest slot is then due).
            previous = None if schedule.send_pending else schedule.last_posted_at
            await self.bot.store.release_slot(schedule.id, claimed_at, previous)
            return False
        # Any other error (the connection dropped mid-send, say) may or may not have posted: the slot stays pending.
        await self.bot.store.confirm_slot(schedule.id, claimed_at)
        return True

    async def disable(self, schedule: Schedule, reason: str) -> None:
        """Stop a schedule that cannot post, and tell the server's admins once."""
        await self.bot.store.disable_schedule(schedule.id, reason)
        log.info("disabled summary schedule %s in guild %s: %s", schedule.id, schedule.guild_id, reason)
        guild = self.bot.get_guild(schedule.guild_id)
        if guild is None:
            return
        notice = (
            f"I stopped posting the scheduled mood summary to <#{schedule.channel_id}>: {reason}. "
            "An admin can set it up again with `/moodring summary`."
        )
        await tell_admins(self.bot, guild, notice, "a summary schedule was disabled")


async def setup(bot: MoodringBot) -> None:
    await bot.add_cog(Mood(bot))
