"""The `run` and `sync-commands` subcommands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run the Discord bot (settings from the environment / .env)")
    run.set_defaults(handler=run_bot)
    sync = commands.add_parser("sync-commands", help="publish the slash commands globally, then exit")
    sync.set_defaults(handler=sync_commands)


def _bot(**overrides):
    from dataclasses import replace

    from bot.app import MoodringBot
    from bot.config import BotConfig, ConfigError

    try:
        return MoodringBot(replace(BotConfig.from_env(), **overrides))
    except ConfigError as error:
        print(f"moodring: {error}", file=sys.stderr)
        return None


def run_bot(args: argparse.Namespace) -> int:
    bot = _bot()
    if bot is None:
        return 2
    return asyncio.run(_serve(bot))


async def _serve(bot, sync_and_exit: bool = False) -> int:
    import discord

    loop = asyncio.get_running_loop()
    closing: set[asyncio.Future] = set()  # a signal's close; `bot.start` returns before it has finished
    for sig in (signal.SIGTERM, signal.SIGINT):  # close cleanly: flush statistics, stop a retrain, log out
        loop.add_signal_handler(sig, lambda: closing.add(asyncio.ensure_future(bot.close())))
    try:
        async with bot:
            if sync_and_exit:
                await bot.login(bot.config.token)  # runs setup_hook, which loads the cogs and their commands
                synced = await bot.tree.sync()
                print(f"Synced {len(synced)} global commands (Discord may take up to an hour to show them).")
                return 0
            await bot.start(bot.config.token)
    except discord.LoginFailure:
        print(
            "moodring: Discord rejected DISCORD_TOKEN. Reset the token in the developer portal "
            "(Bot -> Reset Token) and update .env.",
            file=sys.stderr,
        )
        return 2
    except discord.PrivilegedIntentsRequired:
        print(
            "moodring: the Message Content intent is not enabled for this bot. Enable it in the developer portal "
            "(Bot -> Privileged Gateway Intents), or set MOODRING_MESSAGE_CONTENT=false.",
            file=sys.stderr,
        )
        return 2
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if closing:  # else asyncio.run would cancel it half-way: statistics unflushed, the database left open
            await asyncio.wait(closing)
    log.info("shut down cleanly")
    return 0


def sync_commands(args: argparse.Namespace) -> int:
    bot = _bot(train_on_start=False)  # publishing commands must not start a first training
    if bot is None:
        return 2
    return asyncio.run(_serve(bot, sync_and_exit=True))
