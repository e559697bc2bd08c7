"""Server settings (`/moodring ...`). Privileged subcommands check Manage Server when they run."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import MoodringBot
from bot.store import ChannelSettings

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()


def describe(channel: discord.abc.GuildChannel | discord.Thread, settings: ChannelSettings) -> str:
    on_off = {True: "on", False: "off"}
    return (
        f"{channel.mention}: analysis **{on_off[settings.analysis]}**, auto-reactions **{on_off[settings.reactions]}**"
    )


@app_commands.guild_only()
class Admin(commands.GroupCog, group_name="moodring", group_description="moodring settings for this server"):
    def __init__(self, bot: MoodringBot) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(name="channel", description="Switch emotion analysis and auto-reactions for a channel")
    @app_commands.describe(
        channel="The channel to change (default: this one)",
        analysis="Read messages here for statistics and reactions",
        reactions="React to messages with their emotions",
    )
    @app_commands.checks.has_permissions(manage_guild=True)
    async def channel(
        self,
        interaction: discord.Interaction,
        channel: discord.TextChannel | None = None,
        analysis: bool | None = None,
        reactions: bool | None = None,
    ) -> None:
        target = channel or interaction.channel
        if self.bot.store is None or interaction.guild is None or target is None:
            raise app_commands.CheckFailure("Settings are not available right now.")
        if analysis is None and reactions is None:
            settings = await self.bot.store.channel_settings(interaction.guild.id, target.id)
            message = describe(target, settings)
        else:
            settings = await self.bot.store.set_channel_settings(
                interaction.guild.id, target.id, analysis=analysis, reactions=reactions
            )
            message = "Updated. " + describe(target, settings)
            log.info("guild %s channel %s settings: %s", interaction.guild.id, target.id, settings)
        await interaction.response.send_message(message, ephemeral=True, allowed_mentions=NO_MENTIONS)


async def setup(bot: MoodringBot) -> None:
    await bot.add_cog(Admin(bot))
