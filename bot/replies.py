"""How the bot answers: replies that never ping anyone, and the apologies for a reading it could not give."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import discord
from discord import app_commands

from bot.inference import InferenceBusy, InferenceFailed, NoModel
from model import Prediction

log = logging.getLogger(__name__)

# Every message the bot sends can quote user text, so none of them may ping anyone.
NO_MENTIONS = discord.AllowedMentions.none()
SOMETHING_WENT_WRONG = "Sorry, something went wrong on my side. It has been logged."
BUSY = "I'm reading a lot of messages right now. Please try again in a few seconds."


class InvalidArgument(app_commands.AppCommandError):
    """A member typed an option the bot cannot use; the message says how to fix it (answered privately)."""


async def send_ephemeral(interaction: discord.Interaction, content: str) -> None:
    """Answer an interaction privately, whether or not it has been answered yet."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(content, ephemeral=True, allowed_mentions=NO_MENTIONS)
        else:
            await interaction.response.send_message(content, ephemeral=True, allowed_mentions=NO_MENTIONS)
    except discord.HTTPException:
        log.warning("could not send an error reply for interaction %s", interaction.id)
    except RuntimeError:  # aiohttp's "Session is closed": the bot shut down while this answer was on its way
        if not interaction.client.is_closed():
            raise
        log.info("shutting down: no reply for interaction %s", interaction.id)


async def tell_admins(client: discord.Client, guild: discord.Guild, notice: str, what: str) -> None:
    """Tell a server's admins something the bot stopped doing: in its system channel when the bot may post there,
    else in a direct message to its owner. A failure is logged (as "could not tell ... that `what`"), not raised."""
    target = guild.system_channel
    try:
        if target is not None and target.permissions_for(guild.me).send_messages:
            await target.send(notice, allowed_mentions=NO_MENTIONS)
        elif guild.owner_id is not None:
            owner = client.get_user(guild.owner_id) or await client.fetch_user(guild.owner_id)
            await owner.send(f"[{guild.name}] {notice}", allowed_mentions=NO_MENTIONS)
    except discord.HTTPException:
        log.warning("could not tell guild %s that %s", guild.id, what)


async def reading_or_apology(
    interaction: discord.Interaction, reading: Awaitable[Prediction], no_model: Callable[[], str]
) -> Prediction | None:
    """Await `reading`; if there is no model, the reader is busy or slow, or it failed, tell the member privately
    (`no_model()` says what to say when there is no model) and return None."""
    try:
        return await reading
    except NoModel:
        await send_ephemeral(interaction, no_model())
    except (InferenceBusy, TimeoutError):
        await send_ephemeral(interaction, BUSY)
    except InferenceFailed:
        await send_ephemeral(interaction, SOMETHING_WENT_WRONG)
    return None
