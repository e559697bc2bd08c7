"""`moodring sandbox`: a local Discord with a web page, and the real bot connected to it as a child `moodring run`.

The local Discord is the stand-in (sandbox/, which imports nothing of moodring); this command puts the two
together. The bot child is started exactly as on a server, with `MOODRING_DISCORD_API` / `MOODRING_DISCORD_GATEWAY`
pointing it here instead of at Discord, the stand-in's guild, a token made for this run, a database of its own and
the sandbox's model directory (`--model`, by default the checkout's models/moodring-goemotions, where `make demo`
trains one when there is none). Of this process's environment it gets only what a Python program needs
(`PASSED_TO_BOT`), never the operator's settings for their real bot, and it does not read .env. The world is
kept in memory and the database in a temporary directory, both gone when the sandbox stops, unless `--state FILE`
keeps them (sandbox/state.py). The child is started and stopped as moodring runs every child
(model/child_process.py): on Ctrl-C or SIGTERM its process group gets SIGTERM (it flushes its statistics and stops
a running training), SIGKILL if it has not exited within `BOT_STOP_TIMEOUT`, and is waited for; if the sandbox dies
without warning, the child stops itself (its lifeline closes), so it never outlives the sandbox.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import itertools
import os
import secrets
import signal
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from model.child_process import Lifeline, start_child, stop_child
from model.metadata import METADATA_FILE
from model.storage import DEFAULT_MODEL_DIR
from sandbox import DiscordStandIn, state
from sandbox import payloads as p
from sandbox.guard import is_loopback

DEFAULT_PORT = 8765
#: Seconds the bot child gets to shut down cleanly after SIGTERM (it flushes statistics, stops a training child).
BOT_STOP_TIMEOUT = 30.0
#: Seconds to wait for the bot to connect and register its commands before seeding history.
BOT_READY_TIMEOUT = 300.0
#: The model the sandbox's bot uses unless --model says otherwise: this checkout's, wherever the sandbox is started
#: (`make demo` trains it there, where `moodring classify` finds it); installed from a wheel, not in a checkout, the
#: working directory's.
_CHECKOUT = Path(__file__).resolve().parents[1]
CHECKOUT_MODEL_DIR = (_CHECKOUT if (_CHECKOUT / "pyproject.toml").is_file() else Path.cwd()) / DEFAULT_MODEL_DIR

#: All the bot child takes from this process's environment (and every `LC_*`); the sandbox sets the rest itself
#: (`bot_environment`). Settings an operator keeps for their real bot (its MOODRING_MODEL_DIR, MOODRING_DATABASE,
#: MOODRING_RETRAIN_ARGS, DISCORD_TOKEN, ...) and anything else (other programs' secrets) never reach it.
PASSED_TO_BOT = frozenset(
    {
        # to run Python and its libraries at all
        "PATH",
        "LD_LIBRARY_PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "TZ",
        "PYTHONPATH",
        "PYTHONUNBUFFERED",
        # how many threads inference uses (model/threads.py), and OpenMP's own settings
        "MOODRING_THREADS",
        "OMP_NUM_THREADS",
        "OMP_WAIT_POLICY",
        "MKL_NUM_THREADS",
        # to train the first model when the model directory has none: the data, and Hugging Face's cache and switches
        "GOEMOTIONS_DIR",
        "HF_HOME",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        # tests/process_guard.py's mark on every process a test run starts (to find any left behind)
        "MOODRING_TEST_RUN",
    }
)
PASSED_PREFIXES = ("LC_",)


@dataclass(frozen=True)
class Cast:
    """Who and what is in the sandbox's server (ids)."""

    owner: int  # the server's owner and the bot's owner (the application owner)
    admin: int  # has Manage Server through the "Admins" role
    member: int  # an ordinary member
    channels: tuple[int, ...]


def furnish(standin: DiscordStandIn) -> Cast:
    """Add an admin (with an "Admins" role that has Manage Server) and two more channels to the stand-in's guild.

    Call it before the bot connects: the bot then learns all of it from GUILD_CREATE.
    """
    world, guild = standin.world, standin.guild_id
    admin_permissions = p.DEFAULT_EVERYONE_PERMISSIONS | p.PERM_MANAGE_GUILD
    admins = int(world.add_role(guild, "Admins", permissions=admin_permissions)["id"])
    admin = world.add_user("alex", global_name="Alex")
    world.add_member(guild, admin, roles=[admins])
    channels = [standin.channel_id]
    for name, topic in (("feelings", "Talk about your day"), ("random", None)):
        channels.append(int(world.add_text_channel(guild, name, topic=topic)["id"]))
    return Cast(owner=standin.owner_id, admin=admin, member=standin.user_id, channels=tuple(channels))


def register(commands: argparse._SubParsersAction) -> None:
    sandbox = commands.add_parser(
        "sandbox",
        help="try the bot in a browser: a local Discord with a web page, and the real bot connected to it",
        description="Serve a local Discord-compatible server with a web page, and run the bot (`moodring run`) "
        "against it. No Discord account or token needed. Stop with Ctrl-C.",
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sandbox.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    sandbox.add_argument(
        "--seed-history",
        type=int,
        default=0,
        metavar="N",
        help="post N GoEmotions dev texts in #general once the bot is up, for it to analyse (needs GOEMOTIONS_DIR)",
    )
    sandbox.add_argument(
        "--model",
        type=Path,
        default=CHECKOUT_MODEL_DIR,
        metavar="DIR",
        help=f"the model directory of the sandbox's bot (default: this checkout's {DEFAULT_MODEL_DIR}; the bot trains "
        "one there first when there is none); MOODRING_MODEL_DIR is not used",
    )
    sandbox.add_argument(
        "--state",
        type=Path,
        metavar="FILE",
        help="keep the sandbox between runs: its world is saved to FILE on exit and loaded on start, and the bot's "
        "database is kept beside it (default: everything in memory, gone on exit)",
    )
    sandbox.set_defaults(handler=run_sandbox)


def run_sandbox(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        print(f"moodring: --port must be 1-65535, got {args.port}", file=sys.stderr)
        return 2
    if args.seed_history < 0:
        print("moodring: --seed-history must be at least 0", file=sys.stderr)
        return 2
    texts: list[str] = []
    if args.seed_history:
        try:
            texts = dev_texts(os.environ.get("GOEMOTIONS_DIR"), args.seed_history)
        except OSError as error:
            print(f"moodring: --seed-history needs GoEmotions' dev.tsv ({error}); set GOEMOTIONS_DIR", file=sys.stderr)
            return 2
    if not is_loopback(args.host):
        print(
            f"moodring: warning: --host {args.host} is not a loopback address. The sandbox has no login: anyone who "
            "can reach it can post as any member and drive the bot.",
            file=sys.stderr,
        )
    return asyncio.run(serve(args.host, args.port, texts, args.model.absolute(), args.state))


def dev_texts(data_dir: str | None, count: int) -> list[str]:
    """The first `count` texts of GoEmotions' dev split (dev.tsv: text, labels, id)."""
    if not data_dir:
        raise FileNotFoundError("GOEMOTIONS_DIR is not set")
    with open(Path(data_dir) / "dev.tsv", encoding="utf-8", newline="") as file:
        rows = csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [row[0] for row in itertools.islice(rows, count) if row and row[0].strip()]


def bot_environment(standin: DiscordStandIn, database: Path, model_dir: Path) -> dict[str, str]:
    """The bot child's whole environment: `PASSED_TO_BOT` of this process's, and the sandbox's own settings.

    The token is the stand-in's (made for this run: it travels only here, never in argv or a log).
    """
    passed = {
        name: value for name, value in os.environ.items() if name in PASSED_TO_BOT or name.startswith(PASSED_PREFIXES)
    }
    return {
        **passed,
        "PYTHON_DOTENV_DISABLED": "1",  # the child's `moodring` would read .env: the operator's settings
        "DISCORD_TOKEN": standin.token,
        "MOODRING_DISCORD_API": standin.api_base,
        "MOODRING_DISCORD_GATEWAY": standin.gateway_url,
        "MOODRING_DEV_GUILD_ID": str(standin.guild_id),
        "MOODRING_OWNER_IDS": "",  # the application's owner: the sandbox's owner member
        "MOODRING_DATABASE": str(database),
        "MOODRING_MODEL_DIR": str(model_dir),
    }


async def serve(host: str, port: int, seed: list[str], model_dir: Path, state_file: Path | None = None) -> int:
    """Run the sandbox until a signal or the bot's exit; returns 0, or the bot's exit status if it ended first.

    With `state_file`, the world is loaded from it (if it exists) and saved to it once the bot has stopped. The bot
    uses the model in `model_dir`. The stand-in's token is made for this run: the public `DEFAULT_TOKEN` opens nothing.
    """
    standin = DiscordStandIn(
        token=secrets.token_urlsafe(32),
        guild_name="moodring sandbox",
        owner_name=("olivia", "Olivia"),
        user_name=("sam", "Sam"),
        host=host,
        port=port,
    )
    try:
        cast = open_world(standin, state_file, f"http://{host}:{port}")
    except state.StateError as error:
        print(f"moodring: {error}; move it away to start afresh", file=sys.stderr)
        return 2
    try:
        await standin.start()
    except OSError as error:
        print(f"moodring: cannot serve on {host}:{port} ({error.strerror or error}); try --port", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    lifeline = Lifeline()  # the bot stops itself when this closes, even if we are SIGKILLed
    try:
        with tempfile.TemporaryDirectory(prefix="moodring-sandbox-") as scratch:
            database = Path(scratch) / "moodring.sqlite3"
            if state_file is not None:
                database = state_file.with_name(state_file.name + ".bot.sqlite3")
            bot = await start_child(
                [sys.executable, "-m", "moodring", "run"],
                lifeline=lifeline,
                env=bot_environment(standin, database, model_dir),
            )
            print(f"Sandbox at http://{host}:{standin.port}", flush=True)
            print(f"Bot: moodring run (pid {bot.pid}), connecting to it. Stop both with Ctrl-C.", flush=True)
            if not (model_dir / METADATA_FILE).is_file():
                print(
                    "No model yet: the bot trains a starter model first (minutes) and serves it, then the full one "
                    "behind it. Its progress shows below and under the bot's name in the page's sidebar; stopped, the "
                    "training goes on from its last finished epoch at the next start.",
                    flush=True,
                )
            seeding = asyncio.create_task(seed_history(standin, cast, seed)) if seed else None
            exited = asyncio.create_task(bot.wait())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if seeding is not None:
                seeding.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await seeding
            if exited.done():
                print(f"moodring: the bot exited (status {bot.returncode}); stopping the sandbox", file=sys.stderr)
                return bot.returncode if bot.returncode > 0 else 1
            await stop_bot(bot)
            return 0
    finally:
        if state_file is not None:
            try:
                state.save(standin, state_file, asdict(cast))
                print(f"Sandbox saved in {state_file}.", flush=True)
            except OSError as error:
                print(f"moodring: could not save the sandbox in {state_file}: {error}", file=sys.stderr)
        lifeline.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await standin.stop()


async def stop_bot(bot: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL after `BOT_STOP_TIMEOUT`; returns once the child has exited and its group is empty."""
    await stop_child(bot, BOT_STOP_TIMEOUT, on_kill=_say_killing)
    print(f"Bot stopped (exit status {bot.returncode}).", flush=True)


def _say_killing() -> None:
    print(f"moodring: the bot did not stop within {BOT_STOP_TIMEOUT:.0f} s; killing it", file=sys.stderr)


async def seed_history(standin: DiscordStandIn, cast: Cast, texts: list[str]) -> None:
    """Once the bot is connected with its commands registered, post `texts` in #general as the members, in turn.

    They go through the normal path: MESSAGE_CREATE, analysed by the bot like any message. The bot records
    statistics at the time it analyses a message, so the seeded history is "now", not spread over past days.
    """
    world = standin.world
    deadline = asyncio.get_running_loop().time() + BOT_READY_TIMEOUT
    while not (standin.gateway.connected_sessions() and world.guild_commands.get(standin.guild_id)):
        if asyncio.get_running_loop().time() > deadline:
            print(f"moodring: the bot did not connect within {BOT_READY_TIMEOUT:.0f} s; no history seeded")
            return
        await asyncio.sleep(0.2)
    authors = itertools.cycle((cast.member, cast.admin, cast.owner))
    for posted, text in enumerate(texts):
        try:
            await standin.dispatch_message(standin.channel_id, text, author=next(authors))
        except RuntimeError:  # the bot disconnected
            print(f"moodring: the bot disconnected; seeded {posted} of {len(texts)} messages", file=sys.stderr)
            return
        standin.page.changed()
        await asyncio.sleep(0.05)  # a steady trickle, not a flood the bot would answer "busy" to
    print(f"Seeded #general with {len(texts)} GoEmotions dev messages (analysed now, not back-dated).", flush=True)


def open_world(standin: DiscordStandIn, state_file: Path | None, base_url: str) -> Cast:
    """The sandbox's world and cast: the saved ones when `state_file` exists (``state.StateError`` when it cannot be
    read), else a fresh world, furnished (`furnish`) and welcomed (`post_welcome`). `base_url` is where the
    sandbox is served (the saved attachments' addresses are repointed there)."""
    if state_file is not None and state_file.exists():
        saved = state.load(standin, state_file, base_url)
        return Cast(saved["owner"], saved["admin"], saved["member"], tuple(saved["channels"]))
    cast = furnish(standin)
    post_welcome(standin, cast)
    return cast


def post_welcome(standin: DiscordStandIn, cast: Cast) -> None:
    """Post the sandbox's own welcome in #general (its author is the "Sandbox" system user, not the bot): what to
    try, in which channel, as which of the cast. Only stored, never dispatched: the bot does not read or analyse it.

    Call it once, on a fresh world (a world loaded from --state has its welcome already).
    """
    world = standin.world
    general, feelings = cast.channels[0], cast.channels[1]

    def name(user_id: int) -> str:
        user = world.users[user_id]
        return user.get("global_name") or user["username"]

    text = "\n".join(
        (
            "**Welcome to the moodring sandbox!** A local Discord: nothing here leaves this machine. "
            "Choose who you are under **You are**, on the left.",
            f"> **{name(cast.member)}**, a member, in <#{general}>: say how your day went, run `/emotion`, or hover "
            "a message and choose **Analyze emotions**. Reply to a message and mention "
            f"<@{world.bot_user_id}> to ask what it makes of it.",
            f"> **{name(cast.admin)}**, an admin (Manage Server), in <#{feelings}>: `/moodring channel` with "
            "reactions true has the bot react to messages there; `/moodring corrections` with action enable lets "
            "members answer **Not quite?** under a reading; `/moodring settings` shows it all.",
            f"> **{name(cast.owner)}**, the owner: all an admin can. And anyone: `/mood` charts a channel's moods.",
        )
    )
    author = world.add_user("sandbox", global_name="Sandbox", system=True)
    world.store_message(p.message(p.snowflake(), general, world.user(author), text, guild_id=standin.guild_id))
