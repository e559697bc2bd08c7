"""Who may run a command (RoboDanny's checks.py): server admins for the settings, the bot's owners for retraining."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import discord
from discord import app_commands

T = TypeVar("T")


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
