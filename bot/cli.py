"""The `run`, `cluster` (bot/cluster/supervisor.py) and `sync-commands` subcommands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator

from bot.cluster.options import EXIT_UNREACHABLE, add_shard_count_option
from bot.cluster.sharding import ShardSpecError, check_cluster_database, format_shard_ids, parse_shard_ids

log = logging.getLogger(__name__)
#: Where `db migrate-to` finds its PostgreSQL URL when none is given on the command line.
TARGET_DATABASE_SETTING = "MOODRING_TARGET_DATABASE"


def register(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run the Discord bot (settings from the environment / .env)")
    run.add_argument(
        "--shards",
        type=_shard_ids_argument,
        metavar="IDS",
        help="run only these shards, like 0-3 or 0,2,5 (MOODRING_SHARD_IDS; needs --shard-count)",
    )
    add_shard_count_option(run)
    run.set_defaults(handler=run_bot)
    from bot.cluster.supervisor import register as register_cluster

    register_cluster(commands)
    sync = commands.add_parser("sync-commands", help="publish the slash commands globally, then exit")
    sync.set_defaults(handler=sync_commands)
    corrections = commands.add_parser("corrections", help="community corrections kept by the bot")
    actions = corrections.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export", help="write the corrections in GoEmotions' layout (train.tsv, dev.tsv, emotions.txt, ...)"
    )
    export.add_argument(
        "--database",
        help="the bot's database file, or a postgresql:// URL without its password (default: MOODRING_DATABASE; "
        "a password goes in MOODRING_DATABASE or a PGPASSFILE, never on the command line)",
    )
    export.add_argument("--out", required=True, help="directory to write (for `moodring train --extra-data`)")
    export.add_argument(
        "--model", help="a trained model, for the label names (default: $MOODRING_MODEL_DIR or models/...)"
    )
    export.set_defaults(handler=export_corrections)
    database = commands.add_parser("db", help="the bot's database")
    db_actions = database.add_subparsers(dest="action", required=True, metavar="ACTION")
    migrate = db_actions.add_parser(
        "migrate-to",
        help="copy a SQLite database into an empty PostgreSQL one (or, with --force, one in use); stop the bot first",
    )
    migrate.add_argument(
        "url",
        nargs="?",
        help="the PostgreSQL database, postgresql://user@host:port/database, without its password (default: "
        f"{TARGET_DATABASE_SETTING}, from the environment or .env, which may hold one; or put it in a PGPASSFILE)",
    )
    migrate.add_argument(
        "--database", help="the SQLite file to copy (default: MOODRING_DATABASE, or data/moodring.sqlite3)"
    )
    migrate.add_argument(
        "--force",
        action="store_true",
        help="copy even into a database that already holds the bot's data, overwriting the rows the file also has",
    )
    migrate.set_defaults(handler=migrate_database)


def _shard_ids_argument(value: str) -> tuple[int, ...]:
    try:
        return parse_shard_ids(value)
    except ShardSpecError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def shard_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The BotConfig fields that `--shards` and `--shard-count` set (they win over the environment)."""
    overrides: dict[str, object] = {}
    if args.shard_count is not None:
        overrides["shard_count"] = args.shard_count
    if args.shards is not None:
        overrides["shard_ids"] = args.shards
    return overrides


def _bot(check_cluster: bool = False, **overrides):
    """The bot for the settings, or None after printing what to fix. `check_cluster`: refuse an SQLite database
    that other processes of a cluster would share (running the gateway; publishing commands needs no check)."""
    from dataclasses import replace

    from bot.config import BotConfig, ConfigError

    try:
        config = replace(BotConfig.from_env(), **overrides)
        if check_cluster:
            check_cluster_database(config.database, config.shard_ids, config.shard_count)
    except (ConfigError, ShardSpecError) as error:
        print(f"moodring: {error}", file=sys.stderr)
        return None
    if config.shard_ids is not None:
        log.info("running shards %s of %d", format_shard_ids(config.shard_ids), config.shard_count)
    from bot.app import MoodringBot  # torch, transformers and discord.py: only once the settings are good
    from bot.store import StoreError

    try:
        member_key = config.member_key()  # before connecting: a missing key is one line, not a failed start-up
    except StoreError as error:
        print(f"moodring: {error}", file=sys.stderr)
        return None
    return MoodringBot(config, member_key=member_key)


def password_on_argv(value: str | None, instead: str) -> str | None:
    """The error for a URL given on the command line with a password in it (`ps` shows every process's arguments
    to every user), saying where the URL goes `instead`; None when there is none."""
    from bot.store.redact import has_secret, redact_url

    if value is None or "://" not in value or not has_secret(value):
        return None
    return (
        f"{redact_url(value)!r} holds a password, and a command line is visible to every user of this machine (ps): "
        f"put the URL in {instead} (the environment or .env) or the password in a PGPASSFILE, and leave it out here"
    )


def export_corrections(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bot.config import BotConfig, ConfigError, counting_rules_setting, database_setting
    from bot.learning.community_data import ExportError, export_database
    from bot.store import StoreError, is_postgres_url
    from model import default_model_dir

    def fail(message: str) -> int:
        print(f"moodring corrections export: {message}", file=sys.stderr)
        return 2

    if refused := password_on_argv(args.database, "MOODRING_DATABASE"):
        return fail(refused)
    model_dir = Path(args.model) if args.model else default_model_dir()
    try:
        database = database_setting(
            {**os.environ, "MOODRING_DATABASE": args.database} if args.database else os.environ, BotConfig.database
        )
        rules = counting_rules_setting(os.environ)
    except ConfigError as error:
        return fail(str(error))
    if not is_postgres_url(database):
        database = Path(database)
    try:
        summary = asyncio.run(export_database(database, Path(args.out), model_dir, rules))
    except (ExportError, StoreError) as error:
        return fail(str(error))
    print(
        f"Exported {summary.corrections} corrections as {summary.train_rows} train and {summary.dev_rows} dev rows "
        f"to {args.out} ({summary.dropped} texts without a label chosen by two members and a majority, and "
        f"{summary.capped} rows over a member's or a server's cap, left out)."
    )
    return 0


def migrate_database(args: argparse.Namespace) -> int:
    """`moodring db migrate-to [URL]`: 0 when every count and total matches, 1 on a mismatch, 2 when it cannot run."""
    from pathlib import Path

    from bot.config import BotConfig, ConfigError, database_setting
    from bot.store import StoreError, is_postgres_url, redact_url
    from bot.store.transfer import copy_sqlite_to_postgres

    def fail(message: str) -> int:
        print(f"moodring db migrate-to: {message}", file=sys.stderr)
        return 2

    if refused := password_on_argv(args.url, TARGET_DATABASE_SETTING):
        return fail(refused)
    url = args.url or os.environ.get(TARGET_DATABASE_SETTING, "").strip()
    if not url:
        return fail(f"name the PostgreSQL database: set {TARGET_DATABASE_SETTING}=postgresql://user:password@host/db")
    if not is_postgres_url(url):
        return fail(f"{redact_url(url)!r} is not a postgresql://user:password@host:port/database URL")
    try:
        source = args.database or database_setting(os.environ, BotConfig.database)
    except ConfigError as error:
        return fail(str(error))
    if is_postgres_url(str(source)) or not Path(source).is_file():
        return fail(f"{redact_url(str(source))}: no such SQLite file (pass the bot's database file with --database)")
    try:
        checks = asyncio.run(copy_sqlite_to_postgres(Path(source), url, force=args.force))
    except StoreError as error:
        return fail(str(error))
    print(f"Copied {source} into {redact_url(url)}:")
    for check in checks:
        print(f"  {check.describe()}")
    if all(check.matches for check in checks):
        print("Every row count and total matches.")
        return 0
    print(
        "Some counts differ: PostgreSQL holds rows that are not in the SQLite file (did a bot write to it?). "
        "Compare the tables above.",
        file=sys.stderr,
    )
    return 1


@contextlib.contextmanager
def point_discord_at(api_base: str, gateway_url: str) -> Iterator[None]:
    """Send discord.py's REST calls to `api_base` and its gateway connection to `gateway_url` within the block (a
    Discord-compatible server: `moodring sandbox`, the tests' stand-in, the load benchmark's); restored after it.

    discord.py builds every REST URL (interaction callbacks and webhooks too) from `Route.BASE` and connects to
    `DiscordWebSocket.DEFAULT_GATEWAY`; setting those two class attributes is all it takes.
    """
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    saved = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = api_base, yarl.URL(gateway_url)
    try:
        yield
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved


def _discord_of(config) -> contextlib.AbstractContextManager[None]:
    """Discord, or the server MOODRING_DISCORD_API / MOODRING_DISCORD_GATEWAY name (`point_discord_at`). Says so
    loudly: a bot that silently talks to something other than Discord would be a nasty surprise."""
    if config.discord_api is None:
        return contextlib.nullcontext()
    log.warning(
        "NOT CONNECTING TO DISCORD: MOODRING_DISCORD_API=%s and MOODRING_DISCORD_GATEWAY=%s are set "
        "(a Discord-compatible server such as `moodring sandbox`). Unset them to run on Discord.",
        config.discord_api,
        config.discord_gateway,
    )
    return point_discord_at(config.discord_api, config.discord_gateway)


def run_bot(args: argparse.Namespace) -> int:
    bot = _bot(check_cluster=True, **shard_overrides(args))
    if bot is None:
        return 2
    from model.parent_watch import watch_parent

    watch_parent()  # when `moodring sandbox` or `cluster` started it: a clean stop (SIGTERM) if that dies
    with _discord_of(bot.config):
        return asyncio.run(_serve(bot))


async def _serve(bot, sync_and_exit: bool = False) -> int:
    """Run `bot` (or publish its commands and exit); a fault that ends it is one line on stderr, not a traceback.

    Returns 0 after a clean shutdown, 2 for a setting to fix, `EXIT_UNREACHABLE` when Discord or the database can't
    be reached now (an outage: a supervisor restarts it with back-off).
    """
    import aiohttp
    import discord

    from bot.store import StoreError, TransientStoreError

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
    except (aiohttp.ClientError, discord.GatewayNotFound, discord.DiscordServerError) as error:
        print(
            f"moodring: can't reach Discord ({_unreachable_reason(error)}). "
            "Check the network connection and https://discordstatus.com, then start again.",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    except discord.HTTPException as error:
        print(
            f"moodring: Discord refused a request ({error.status} {error.response.reason}: {error.text or '-'}). "
            "If it was the command sync, check MOODRING_DEV_GUILD_ID and that the bot was invited to that "
            "server with the applications.commands scope.",
            file=sys.stderr,
        )
        return 2
    except StoreError as error:  # the database cannot be used: the message names it and says what to do
        print(f"moodring: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE if isinstance(error, TransientStoreError) else 2
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if closing:  # else asyncio.run would cancel it half-way: statistics unflushed, the database left open
            await asyncio.wait(closing)
    log.info("shut down cleanly")
    return 0


def _unreachable_reason(error: BaseException) -> str:
    """A few words on why Discord could not be reached: "discord.com:443: DNS lookup failed", "... refused"."""
    import socket

    import aiohttp
    import discord

    if isinstance(error, discord.HTTPException):
        return f"Discord answered {error.status} {error.response.reason}"
    if isinstance(error, discord.GatewayNotFound):
        return "Discord did not give a gateway address"
    cause = error.os_error if isinstance(error, aiohttp.ClientConnectorError) else error
    if isinstance(cause, socket.gaierror):
        words = f"DNS lookup failed: {cause.strerror}"
    elif isinstance(cause, OSError) and cause.errno and cause.errno > 0:
        words = os.strerror(cause.errno)
    else:
        words = str(cause) or type(cause).__name__
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"{error.host}:{error.port}: {words}"
    return words


def sync_commands(args: argparse.Namespace) -> int:
    bot = _bot(train_on_start=False)  # publishing commands must not start a first training
    if bot is None:
        return 2
    with _discord_of(bot.config):
        return asyncio.run(_serve(bot, sync_and_exit=True))
