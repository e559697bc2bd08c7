"""Helpers for the cogs: replies that never ping, the permission checks and the flood limits."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from bot.inference import InferenceBusy, InferenceFailed, NoModel
from model import Prediction

log = logging.getLogger(__name__)

T = TypeVar("T")

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


def admin_only() -> Callable[[T], T]:
    """Manage Server, twice (RoboDanny's checks.py): `default_permissions` so Discord hides the command from
    members, and a check when it runs, because a server can show it to anyone and Discord ignores
    `default_permissions` on subcommands (put `app_commands.default_permissions` on their group as well)."""
    hide = app_commands.default_permissions(manage_guild=True)
    check = app_commands.checks.has_permissions(manage_guild=True)

    def decorator(command: T) -> T:
        return hide(check(command))

    return decorator


def owner_only() -> Callable[[T], T]:
    """Retraining changes the model for every server, so only the bot's owners may start it."""

    async def predicate(interaction: discord.Interaction) -> bool:
        if await interaction.client.is_owner(interaction.user):
            return True
        raise app_commands.CheckFailure("Only the bot's owners can retrain the model: it is shared by every server.")

    return app_commands.check(predicate)


@dataclass(frozen=True)
class Asker:
    """Who asks for a reading, and where: the key of the flood limits' buckets."""

    user_id: int
    channel_id: int


@dataclass(frozen=True)
class Refusal:
    """A reading refused by a flood limit: `warn` is true for the first refusal of the limit's window."""

    scope: str  # "user" or "channel"
    retry_after: float
    warn: bool


class FloodLimits:
    """Per-member and per-channel limits on on-demand readings (discord.py cooldown buckets, fixed windows).

    `check` takes one token from both buckets, or none: a reading refused by the channel's limit does not
    use up the member's. Each window of a limit gets at most one `warn`, so a flood gets one "slow down".
    """

    def __init__(self, per_user: int, per_channel: int, window: float, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.users = commands.CooldownMapping.from_cooldown(per_user, window, lambda asker: asker.user_id)
        self.channels = commands.CooldownMapping.from_cooldown(per_channel, window, lambda asker: asker.channel_id)
        self._warned: dict[tuple[str, int], float] = {}  # (scope, id) -> end of the window already warned

    def check(self, user_id: int, channel_id: int) -> Refusal | None:
        """None when the reading may go ahead (and is counted), else why not."""
        now = self.clock()
        asker = Asker(user_id, channel_id)
        buckets = {"user": self.users.get_bucket(asker, now), "channel": self.channels.get_bucket(asker, now)}
        for scope, bucket in buckets.items():
            if bucket.get_tokens(now) == 0:
                return self._refuse(scope, user_id if scope == "user" else channel_id, bucket.get_retry_after(now), now)
        for bucket in buckets.values():
            bucket.update_rate_limit(now)
        return None

    def _refuse(self, scope: str, key: int, retry_after: float, now: float) -> Refusal:
        self._warned = {k: until for k, until in self._warned.items() if until > now}  # forget ended windows
        if (scope, key) in self._warned:
            return Refusal(scope, retry_after, warn=False)
        self._warned[(scope, key)] = now + retry_after
        return Refusal(scope, retry_after, warn=True)


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
