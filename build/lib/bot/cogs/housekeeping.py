"""Housekeeping: the daily retention prune, and deleting a server's data when the bot is removed from it (retried
until the store takes it)."""

from __future__ import annotations

import logging

import discord
from discord.ext import commands, tasks

from bot.app import MoodringBot
from bot.backoff import Backoff
from bot.cluster.sharding import runs_cluster_work
from bot.store import StoreError

log = logging.getLogger(__name__)

#: Ticks of the removal loop (minutes): a removed server's data is deleted at most that late after an outage ends.
REMOVAL_BACKOFF_CAP = 8


class Housekeeping(commands.Cog):
    def __init__(self, bot: MoodringBot) -> None:
        self.bot = bot
        # Daily: the next day's run is the back-off; the Backoff keeps a long outage to one warning.
        self.retention_backoff = Backoff("the retention prune", log, cap=1, expected=(StoreError,))
        self.removal_backoff = Backoff(
            "deleting the data of servers that removed the bot", log, cap=REMOVAL_BACKOFF_CAP, expected=(StoreError,)
        )
        self.removals_due: set[int] = set()  # servers that removed the bot while the store was failing
        self.retention.start()
        self.removals.start()

    async def cog_unload(self) -> None:
        self.retention.cancel()
        self.removals.cancel()

    # ------------------------------------------------------------------ retention

    @tasks.loop(hours=24)
    async def retention(self) -> None:
        """Never raises: a failed prune is logged (once per outage) and the next run prunes what it missed.
        In a cluster only the process that runs shard 0 prunes (the prune covers every guild)."""
        if not runs_cluster_work(self.bot.shard_ids):
            return
        try:
            deleted = await self.bot.store.prune(self.bot.clock())
        except Exception as error:
            self.retention_backoff.failed(error)
            return
        self.retention_backoff.succeeded()
        log.info("retention prune removed %d statistics rows; since start: %s", deleted, dict(self.bot.counters))

    # ------------------------------------------------------------------ the bot leaves a server

    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        """The bot was removed from a server (an outage is not a removal: discord.py reports it as
        `on_guild_unavailable`): delete its statistics, corrections, settings and schedules. Discord sends the removal
        only to the guild's shard, so in a cluster exactly one process deletes. If the store fails, the removal is
        noted and `removals` retries it."""
        try:
            deleted = await self.bot.store.remove_guild(guild.id)
        except StoreError as error:
            log.warning("removed from guild %s, but could not delete its data yet (%s); will retry", guild.id, error)
            self.removals_due.add(guild.id)
            return
        log.info("removed from guild %s: deleted its statistics, settings and schedules (%d rows)", guild.id, deleted)

    @tasks.loop(minutes=1)
    async def removals(self) -> None:
        """Never raises, so the loop never ends: while removals are due, a failed tick is logged (once per outage)
        and retried after 1, 2, 4... up to ``REMOVAL_BACKOFF_CAP`` ticks."""
        if not self.removals_due or self.removal_backoff.skip():
            return
        try:
            await self.retry_removals()
        except Exception as error:
            self.removal_backoff.failed(error)
        else:
            self.removal_backoff.succeeded()

    @removals.before_loop
    async def _before_removals(self) -> None:
        await self.bot.wait_until_ready()

    async def retry_removals(self) -> None:
        """Delete the data of servers whose removal failed; raises the store's error (the loop backs off)."""
        for guild_id in sorted(self.removals_due):
            if self.bot.get_guild(guild_id) is None:  # not added back meanwhile
                deleted = await self.bot.store.remove_guild(guild_id)
                log.info("deleted the data of guild %s, which removed the bot (%d rows)", guild_id, deleted)
            self.removals_due.discard(guild_id)


async def setup(bot: MoodringBot) -> None:
    await bot.add_cog(Housekeeping(bot))
