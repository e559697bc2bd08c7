"""The product's own number: the real `MoodringBot` under a rising message rate, through the Discord stand-in.

    python benchmarks/bot_load.py [--model DIR] [--channels 4] [--rates 50,100,200,400,800] [--seconds-per-step 10]
                                  [--max-messages 5000] [--threads N] [--batch-size N] [--batch-wait-ms MS]
                                  [--queue-size N] [--emotion-every 0.1] [--data-dir DIR] [--json OUT]
                                  [--database postgresql://...] [--processes N]

What runs. The bot is built from `BotConfig.from_env` exactly as `moodring run` builds it (so MOODRING_* variables
in the environment apply; the command-line settings go through the same variables and parser, all in `bot_config`),
with a fresh SQLite file in a temporary directory (or the empty PostgreSQL database `--database` names), and
connects to a Discord stand-in (the `sandbox` package: gateway v10 and REST on 127.0.0.1, the unmodified
discord.py client). Automatic analysis is on in `--channels` text channels
(the store's default; checked, and switched on through the store if that default ever changes); auto-reactions stay
off (their default). Each step offers one message rate (real GoEmotions dev texts, round-robin over the channels)
for `--seconds-per-step` seconds or `--max-messages` messages, whichever ends first, and dispatches `/emotion`
every `--emotion-every` seconds meanwhile. The run stops after the first step at which the bot saturates (a message
skipped as busy, or fewer than 90% of the offered messages analysed per second), or after the last rate.

Where each part runs, and why. Two processes, so that what is measured is the bot's alone:
* this process runs the bot's event loop and nothing else but the measurement: a loop-lag probe (sleeps 10 ms,
  records the oversleep), a poll of the bot's counters every 10 ms while a step drains, and the JSON-lines link to
  the stand-in. Its RSS (/proc/self/status VmRSS, VmHWM) is the bot's RSS; it does not import the stand-in (which
  would bring pytest, about 10 MB), and points discord.py at it with the bot's own `point_discord_at` (bot/cli.py),
  as `moodring run` does with MOODRING_DISCORD_API and MOODRING_DISCORD_GATEWAY;
* a child process (this file with `--standin-child`) runs the stand-in and the load generator. In one process, the
  stand-in's work (building, compressing and sending gateway frames, answering REST) would be charged to the bot's
  loop lag and RSS; in a thread it would still hold the same GIL. The two processes share the machine's cores, as a
  bot shares them with other services; the table shows each process's CPU use, and the load generator's achieved
  rate next to the offered one, so a generator that fell behind is visible rather than mistaken for the bot.

With `--processes N` (N > 1; needs `--database postgresql://...`, as `moodring cluster` does: SQLite is for one
process) the bot runs as N processes on this one machine, and the stand-in in one more:
* the bot has N shards, and each process runs one of them, built by the same `bot_config`: this process runs
  shard 0 (and everything above), and N - 1 child processes (this file with `--bot-child I`) run shards 1 .. N-1,
  each with its own loop-lag probe. All of them use the one PostgreSQL database. A child gets the stand-in's
  address and the database URL on its stdin (not on its command line, where `ps` would show the password), and
  answers requests for its counters, CPU seconds, RSS and loop lag as JSON lines on its stdout; it is polled every
  10 ms while a step drains, as this process polls its own bot;
* the stand-in plays Discord with N shards: one guild per shard (the stand-in's own guild serves its shard), the
  `--channels` channels dealt to the guilds round-robin (so `--channels` must be at least N), and the messages
  and the `/emotion` calls alternate between the shards, so each process gets an equal share of the load. Each
  shard identifies in a gateway bucket of its own (`max_concurrency` N), so the processes connect at once.
The processes share the machine's cores: on a machine with fewer cores than processes they split the same cores. The
per-step accounting below adds up the counters of all N bots, and the store's totals are read from the one shared
database (its message total summed over the N guilds). The report names the process count and shows RSS, CPU and
loop lag per process (shard 0 / shard 1 / ...); the JSON has them per process, and in the single-process keys their
sums (RSS, CPU) or all the processes' loop-lag samples together. With N = 1 (the default) nothing of this applies
and the run is as above.

What is counted. Per step, from `bot.counters` (bot/cogs/emotions.py): every human message ends in exactly one
outcome, `analyzed`, `reply_mentions`, `analysis_failed`, `analysis_timed_out` or a `skipped_*` counter. The script
waits until the outcomes account for every message sent (bounded by `--drain-seconds`), then checks sent ==
`messages_seen` == analysed + counted skips, and analysed == what the store recorded == what it committed (after a
flush); at the end the store's own message total must equal every message analysed. Any difference is reported as a
MISMATCH and the exit status is 1. `/emotion` latency is the time from dispatching the interaction to the bot's
interaction callback arriving at the stand-in (both clocks are CLOCK_MONOTONIC on one machine); answers that say the
bot is busy are counted apart, and answers later than Discord's 3 s limit (the stand-in does not enforce it) are
counted too.

Bounds. Every step is bounded in messages and seconds, the drain and each `/emotion` wait have timeouts, and the
whole run has a deadline derived from them. The stand-in listens on 127.0.0.1 only. The child exits when told to,
or when this process goes away (its stdin closes); it is killed if it does not, and the script checks that no child
process is left. The same holds for the bot's child processes with `--processes N`, on error and Ctrl-C too. The
stand-in's process ignores Ctrl-C (SIGINT reaches the whole process group): it is told to quit once the bots have
closed, so that no bot sees Discord vanish under it. The stand-in lives in tests/, so running this needs the test
dependencies (`pip install -e '.[test]'`).

The Markdown report (machine, exact command line, per-step table, summary) goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import resource
import shlex
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping
    from types import ModuleType

    from bot.app import MoodringBot
    from bot.config import BotConfig

REPO = Path(__file__).resolve().parents[1]
LAG_PROBE_SECONDS = 0.010
DISCORD_ANSWER_LIMIT = 3.0  # seconds: Discord drops an interaction not answered within this
KEEP_UP_RATIO = 0.9  # a step at which fewer than this share of the offered messages/s is analysed saturates the bot
MB = 1024 * 1024
UNLIMITED = 10**9
STORE_DEFAULT = "the store's default"
SWITCHED_ON = "switched on through the store: its default is off"

# Bot settings the command line passes through, as (option, environment variable, type, help). They reach the bot
# through `BotConfig.from_env`, the parser `moodring run` uses, so they are validated the same way. A new setting is
# one row here.
BOT_SETTINGS: tuple[tuple[str, str, type, str], ...] = (
    ("--model", "MOODRING_MODEL_DIR", str, "exported model directory (default: the bot's default model directory)"),
    ("--backend", "MOODRING_BACKEND", str, "auto, torch, onnx or onnx-int8 (default: auto)"),
    ("--batch-size", "MOODRING_BATCH_SIZE", int, "texts per inference batch"),
    ("--batch-wait-ms", "MOODRING_BATCH_WAIT_MS", float, "how long a batch waits to fill"),
    ("--queue-size", "MOODRING_QUEUE_SIZE", int, "inference queue bound (beyond it messages are skipped as busy)"),
    (
        "--threads",
        "MOODRING_THREADS",
        int,
        "intra-op threads: OMP/MKL_NUM_THREADS, torch.set_num_threads and the bot's own setting",
    ),
)


# ----------------------------------------------------------------------------------------------- the stand-in side


def standin_package() -> ModuleType:
    """The Discord stand-in package (the top-level `sandbox`)."""
    import sandbox

    return sandbox


def dev_texts(data_dir: Path) -> list[str]:
    """The first column of GoEmotions' dev.tsv (the test split is only read by `moodring evaluate`)."""
    path = data_dir / "dev.tsv"
    if not path.is_file():
        raise SystemExit(f"bot_load: {path} not found; set GOEMOTIONS_DIR or pass --data-dir")
    texts = [line.split("\t", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [text for text in texts if text]


def cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LoadGenerator:
    """The child process: a stand-in with `channels` text channels on `shards` shards, driven by commands read from
    stdin. One guild per shard; channel j is in the guild of shard j % shards; message k goes to shard k % shards
    (to its channels in turn), and so does the k-th `/emotion`. With one shard: the stand-in's own guild, and
    message k in channel k % channels."""

    def __init__(self, channels: int, texts: list[str], out: Any, shards: int = 1) -> None:
        # Each shard identifies in its own bucket (max_concurrency): the processes connect at once, as on a large
        # bot's gateway; with one bucket they would queue 5 s apart. Start-up is not measured either way.
        self.standin = standin_package().DiscordStandIn(shard_count=shards, max_concurrency=shards)
        self.channel_count = channels
        self.shards = shards
        self.channel_ids: list[int] = []
        self.guild_ids: list[int] = []  # by shard
        self.by_shard: list[list[tuple[int, int]]] = [[] for _ in range(shards)]  # (guild id, channel id)
        self.texts = texts
        self.out = out
        self.next_text = 0
        self.next_emotion_shard = 0
        self.stepping: asyncio.Task[dict[str, Any]] | None = None

    def text(self) -> str:
        text = self.texts[self.next_text % len(self.texts)]
        self.next_text += 1
        return text

    def send(self, event: str, **data: Any) -> None:
        send_event(self.out, event, **data)

    async def serve(self) -> None:
        standin = self.standin
        async with standin:
            await self.add_channels()
            self.send(
                "ready",
                pid=os.getpid(),
                api_base=standin.api_base,
                gateway_url=standin.gateway_url,
                token=standin.token,
                guild_id=standin.guild_id,
                channel_ids=self.channel_ids,
                guild_ids=self.guild_ids,
                channels=[pair for group in self.by_shard for pair in group],
                texts=len(self.texts),
            )
            commands: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            reading = asyncio.create_task(self.read_commands(commands, asyncio.current_task()))
            try:
                while (command := await commands.get())["cmd"] != "quit":
                    self.stepping = asyncio.create_task(self.step(**command["args"]))
                    try:
                        self.send("step_done", **await self.stepping)
                    except asyncio.CancelledError:
                        if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                            raise
                        self.send("step_failed", error="stopped by the bot's process")
                    except Exception as error:  # the bot went away mid-step, say: tell the bot's process
                        self.send("step_failed", error=repr(error))
                self.send("bye", errors=standin.errors, unknown_requests=len(standin.unknown_requests))
            finally:
                reading.cancel()

    async def add_channels(self) -> None:
        """One guild per shard (the stand-in's own for its shard), and the channels dealt to them round-robin."""
        standin = self.standin
        own_shard = (standin.guild_id >> 22) % self.shards
        for shard in range(self.shards):
            if shard == own_shard:
                self.guild_ids.append(standin.guild_id)
                self.by_shard[shard].append((standin.guild_id, standin.channel_id))
            else:
                guild_id, channel_id = await standin.add_guild(f"load shard {shard}", shard=(shard, self.shards))
                self.guild_ids.append(guild_id)
                self.by_shard[shard].append((guild_id, channel_id))
        for number in range(1, self.channel_count + 1):
            group = self.by_shard[(number - 1) % self.shards]
            if len(group) < (number - 1) // self.shards + 1:  # the guild's first channel is its own
                group.append((group[0][0], await standin.add_text_channel(f"load-{number}", guild_id=group[0][0])))
            self.channel_ids.append(group[(number - 1) // self.shards][1])

    def channel_for(self, message: int) -> int:
        """The channel of the `message`-th message of a step: the shards in turn, and each shard's channels in turn."""
        group = self.by_shard[message % self.shards]
        return group[(message // self.shards) % len(group)][1]

    async def read_commands(self, commands: asyncio.Queue[dict[str, Any]], serving: asyncio.Task | None) -> None:
        """Commands from stdin into `commands`. `quit` stops a step in progress; EOF (the bot's process has gone)
        stops everything at once."""
        reader = await stdin_reader()
        while line := await reader.readline():
            command = json.loads(line)
            if command["cmd"] == "quit" and self.stepping is not None:
                self.stepping.cancel()
            await commands.put(command)
        if serving is not None:
            serving.cancel()

    async def step(
        self, rate: float, max_messages: int, seconds: float, emotion_every: float, emotion_timeout: float
    ) -> dict[str, Any]:
        """Offer `rate` messages/s until `max_messages` are sent or `seconds` pass; `/emotion` every `emotion_every`."""
        standin = self.standin
        cpu_before = cpu_seconds()
        started = time.monotonic()
        deadline = started + seconds
        next_emotion = started
        probes: list[asyncio.Task[dict[str, Any]]] = []
        sent = 0
        try:
            while sent < max_messages:
                now = time.monotonic()
                if now >= deadline:
                    break
                if now >= next_emotion:
                    probes.append(asyncio.create_task(self.emotion(emotion_timeout)))
                    next_emotion += emotion_every
                due = min(max_messages, int((now - started) * rate) + 1)
                while sent < due:  # behind schedule: catch up in a burst, as a busy server would
                    await standin.dispatch_message(self.channel_for(sent), content=self.text())
                    sent += 1
                wake = min(started + sent / rate, next_emotion, deadline)
                await asyncio.sleep(max(0.0, wake - time.monotonic()))
            stopped = time.monotonic()
            emotions = list(await asyncio.gather(*probes))
        finally:  # a step cut short (or failed) leaves no probe running and no exception unretrieved
            for probe in probes:
                probe.cancel()
            await asyncio.gather(*probes, return_exceptions=True)
        return {
            "sent": sent,
            "started": started,
            "stopped": stopped,
            "emotions": emotions,
            "cpu_seconds": cpu_seconds() - cpu_before,
            "wall_seconds": time.monotonic() - started,
        }

    async def emotion(self, timeout: float) -> dict[str, Any]:
        """Run `/emotion` as a member; how long until the bot's interaction callback arrived, and what it said."""
        guild_id, channel_id = self.by_shard[self.next_emotion_shard][0]
        self.next_emotion_shard = (self.next_emotion_shard + 1) % self.shards
        started = time.monotonic()
        interaction = await self.standin.dispatch_slash_command(
            "emotion", {"text": self.text()}, channel_id=channel_id, guild_id=guild_id
        )
        try:
            callback = await self.standin.wait_for_interaction_response(interaction, timeout=timeout)
        except TimeoutError:
            return {"latency": None, "embed": False, "content": None}
        data = (callback.json or {}).get("data") or {}
        return {"latency": callback.at - started, "embed": bool(data.get("embeds")), "content": data.get("content")}


def events_out() -> Any:
    """A child's link to this script's process: the original stdout, for JSON lines only; from here on anything
    else printed (by a library, say) goes to stderr."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return out


def send_event(out: Any, event: str, **data: Any) -> None:
    out.write(json.dumps({"event": event, **data}) + "\n")
    out.flush()


async def stdin_reader() -> asyncio.StreamReader:
    """A child's requests from this script's process: stdin, read on the event loop. End of file: it has gone."""
    reader = asyncio.StreamReader(limit=16 * MB)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def run_load_generator(args: argparse.Namespace) -> int:
    """`--standin-child`: JSON lines on the original stdout; anything else printed goes to stderr."""
    # Ctrl-C reaches the whole process group: the stand-in leaves when told to (or when the bot's process has gone),
    # after the bots have closed, instead of vanishing under connected bots that would log reconnect errors.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = events_out()
    generator = LoadGenerator(args.channels, dev_texts(args.data_dir), out, shards=args.processes)
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(generator.serve())
    return 0


# ----------------------------------------------------------------------------------------------- the bot side


class Child:
    """A child process of this script (this file with a hidden flag), seen from here: requests as JSON lines on its
    stdin, events as JSON lines from its stdout; stopped (and reaped) by `stop`."""

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.info: dict[str, Any] = {}

    @staticmethod
    async def spawn(*options: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            *options,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=16 * MB,
        )

    async def next_event(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} exited (status {await self.process.wait()})")
        return json.loads(line)

    async def receive(self, event: str) -> dict[str, Any]:
        message = await self.next_event()
        if message.get("event") == "step_failed":
            raise RuntimeError(f"the load generator failed: {message.get('error')}")
        if message.get("event") == "failed":
            raise RuntimeError(f"{self.name} failed: {message.get('error')}")
        if message.get("event") != event:
            raise RuntimeError(f"expected {event!r} from {self.name}, got {message.get('event')!r}")
        return message

    async def command(self, cmd: str, **args: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps({"cmd": cmd, "args": args}) + "\n").encode())
        await self.process.stdin.drain()

    async def stop(self, timeout: float = 10.0) -> dict[str, Any]:
        """Ask the process to quit (its `bye`), kill it if it does not; always reaped here."""
        bye: dict[str, Any] = {}
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await self.command("quit")
                async with asyncio.timeout(timeout):
                    while (event := await self.next_event()).get("event") != "bye":
                        pass  # the end of what `quit` cut short
                    bye = event
            with contextlib.suppress(Exception):
                self.process.stdin.close()  # type: ignore[union-attr]
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return bye


class StandIn(Child):
    """The load generator's process (`--standin-child`): its `bye` reports the stand-in's errors."""

    @classmethod
    async def start(cls, args: argparse.Namespace) -> StandIn:
        options = ["--standin-child", "--channels", str(args.channels), "--data-dir", str(args.data_dir)]
        standin = cls(await cls.spawn(*options, "--processes", str(args.processes)), "the stand-in process")
        try:
            standin.info = await asyncio.wait_for(standin.receive("ready"), 60)
        except BaseException:
            await standin.stop()
            raise
        return standin


class BotChild(Child):
    """The process that runs shard `shard` of the bot with `--processes N` (`--bot-child SHARD`): told the stand-in's
    address and the database on its stdin, it answers `snapshot` requests (see `snapshot`); its `bye` lists
    problems (the bot's start() failing)."""

    def __init__(self, process: asyncio.subprocess.Process, shard: int) -> None:
        super().__init__(process, f"the bot process for shard {shard}")
        self.shard = shard

    @classmethod
    async def start(cls, args: argparse.Namespace, shard: int, standin: dict[str, Any]) -> BotChild:
        options = ["--bot-child", str(shard), "--processes", str(args.processes), "--data-dir", str(args.data_dir)]
        settings = command_line_settings(args)
        for option, variable, _, _ in BOT_SETTINGS:
            if variable in settings:
                options += [option, settings[variable]]
        child = cls(await cls.spawn(*options, *(["--verbose"] if args.verbose else [])), shard)
        try:  # the URL (and its password) on the pipe, not on a command line that `ps` shows
            await child.command("start", database=args.database, standin=standin)
        except BaseException:
            await child.stop()
            raise
        return child

    async def ready(self, timeout: float = 90.0) -> dict[str, Any]:
        """Wait until its bot is connected and serving a model; what it said then (pid, start-up RSS, ...)."""
        self.info = await asyncio.wait_for(self.receive("ready"), timeout)
        return self.info

    async def snapshot(self, **request: Any) -> dict[str, Any]:
        await self.command("snapshot", **request)
        return await self.receive("snapshot")


def bot_config(args: argparse.Namespace, workdir: Path) -> BotConfig:
    """THE place the benchmarked bot's settings are made: `BotConfig.from_env` as `moodring run` calls it, with the
    command line's `BOT_SETTINGS` passed as their environment variables, a fresh database and work directory, and no
    first training. Only the token and development guild are left to fill in, from the stand-in (`benchmark`)."""
    from bot.config import BotConfig

    config = BotConfig.from_env({**os.environ, **command_line_settings(args)}, require_token=False)
    # The flood limits (a few readings per member and channel a minute) would answer most of the benchmark's
    # `/emotion` calls with silence: lifted, so that the latency measured is the bot's, not the limit's.
    return replace(
        config,
        database=args.database or workdir / "moodring.sqlite3",
        work_dir=workdir / "runs",
        train_on_start=False,
        readings_per_user=UNLIMITED,
        readings_per_channel=UNLIMITED,
    )


def connect_config(config: BotConfig, standin: dict[str, Any], shard: int, shards: int) -> BotConfig:
    """`config` (from `bot_config`) pointed at the stand-in: its token, its guild for the command sync; with several
    processes, running shard `shard` of `shards`. One process runs all the shards, as `moodring run` does."""
    config = replace(config, token=standin["token"], dev_guild_id=standin["guild_id"])
    return config if shards == 1 else replace(config, shard_count=shards, shard_ids=(shard,))


def shard_channels(standin: dict[str, Any], shard: int, shards: int) -> list[tuple[int, int]]:
    """The (guild id, channel id) of the load's channels whose events go to `shard`."""
    from bot.cluster.sharding import shard_of

    return [
        (guild_id, channel_id) for guild_id, channel_id in standin["channels"] if shard_of(guild_id, shards) == shard
    ]


async def ensure_analysis(bot: MoodringBot, channels: list[tuple[int, int]]) -> str:
    """Automatic analysis on in `channels`, through the bot's own store (whose settings cache then knows); how."""
    analysis = STORE_DEFAULT
    for guild_id, channel_id in channels:
        if not (await bot.store.channel_settings(guild_id, channel_id)).analysis:
            await bot.store.set_channel_settings(guild_id, channel_id, analysis=True)
            analysis = SWITCHED_ON
    return analysis


@contextlib.asynccontextmanager
async def running(bot: MoodringBot, config: BotConfig, problems: list[str]) -> AsyncIterator[None]:
    """The bot started, connected and serving a model for the body; closed afterwards, however the body ends. A
    start() that ended with an error is added to `problems`."""
    task = asyncio.create_task(bot.start(config.token), name="benchmarked-bot")
    try:
        if not await wait_for(lambda: bot.is_ready() or task.done(), 60):
            raise RuntimeError("the bot was not ready within 60 s")
        if task.done():
            task.result()
            raise RuntimeError("the bot stopped before it was ready")
        if not bot.inference.ready:
            raise SystemExit(f"bot_load: no model is serving from {config.model_dir}; train one or pass --model DIR")
        yield
    finally:
        if not bot.is_closed():
            await bot.close()
        done, _ = await asyncio.wait({task}, timeout=10)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=5)
    if task.done() and not task.cancelled() and task.exception() is not None:
        problems.append(f"the bot's start() ended with {task.exception()!r}")


async def snapshot(
    bot: MoodringBot,
    probe: LagProbe,
    *,
    full: bool = True,
    flush: bool = False,
    reset_peak: bool = False,
    lag_between: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """What the accounting needs of one bot process, the same in this process and in a `--bot-child`: its counters;
    with `full` also the inference and store totals, this process's CPU seconds and RSS. `flush` first commits the
    store's pending analyses; `reset_peak` starts a new peak-RSS measurement afterwards (`peak_reset`: whether it
    could); `lag_between` (monotonic start, end) adds the loop-lag samples taken then."""
    if flush:
        await bot.store.flush()
    state: dict[str, Any] = {"counters": dict(bot.counters)}
    if full:
        store, inference = bot.store, bot.inference
        state.update(
            pid=os.getpid(),
            served=inference.served,
            rejected=inference.rejected,
            recorded=store.recorded_total,
            committed=store.flushed_total,
            dropped=store.dropped,
            cpu_seconds=cpu_seconds(),
            rss_mb=proc_status_mb("VmRSS"),
            peak_rss_mb=proc_status_mb("VmHWM"),
        )
    if reset_peak:
        state["peak_reset"] = reset_peak_rss()
    if lag_between is not None:
        state["lag"] = probe.between(*lag_between)
    return state


class Bots:
    """The benchmarked bot's processes: this one's bot (shard 0, or all the shards), and the `BotChild`ren that run
    the other shards. `snapshots` asks all of them at once; shard order."""

    def __init__(self, bot: MoodringBot, probe: LagProbe, children: list[BotChild]) -> None:
        self.bot, self.probe, self.children = bot, probe, children

    async def snapshots(self, **request: Any) -> list[dict[str, Any]]:
        mine = snapshot(self.bot, self.probe, **request)
        if not self.children:  # one process: polled every 10 ms while a step drains, so as light as before
            return [await mine]
        return list(await asyncio.gather(mine, *(child.snapshot(**request) for child in self.children)))


def run_bot_child(args: argparse.Namespace) -> int:
    """`--bot-child SHARD`: one shard's bot (`serve_shard`); JSON lines on the original stdout, logs on stderr."""
    out = events_out()
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt, asyncio.CancelledError):
        return asyncio.run(serve_shard(args, out))
    return 0


async def serve_shard(args: argparse.Namespace, out: Any) -> int:
    """Read `start` (the stand-in's address, the database), run shard `args.bot_child` of `args.processes` built by
    `bot_config` like this script's own, say `ready`, answer `snapshot` requests until `quit` or end of file (this
    script's process has gone), then close the bot and say `bye`. A failure is one `failed` event, and status 1."""
    from bot.app import MoodringBot
    from bot.cli import point_discord_at

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)  # type: ignore[union-attr]
    requests = await stdin_reader()
    line = await requests.readline()
    if not line:
        return 0
    start = json.loads(line)["args"]
    standin, shard = start["standin"], args.bot_child
    args.database = start["database"]
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"moodring-load-shard{shard}-") as workdir:
        try:
            config = connect_config(bot_config(args, Path(workdir)), standin, shard, args.processes)
            with point_discord_at(standin["api_base"], standin["gateway_url"]):
                bot = MoodringBot(config)
                probe = LagProbe()
                async with running(bot, config, problems):
                    analysis = await ensure_analysis(bot, shard_channels(standin, shard, args.processes))
                    probe.start()
                    try:
                        send_event(
                            out,
                            "ready",
                            pid=os.getpid(),
                            shard=shard,
                            analysis=analysis,
                            startup_peak_rss_mb=proc_status_mb("VmHWM"),
                        )
                        while (line := await requests.readline()) and (request := json.loads(line))["cmd"] != "quit":
                            send_event(out, "snapshot", **await snapshot(bot, probe, **request["args"]))
                    finally:
                        await probe.stop()
        except (Exception, SystemExit) as error:  # SystemExit: no model is serving
            send_event(out, "failed", error=str(error) or repr(error))
            return 1
    send_event(out, "bye", problems=problems)
    return 0


def command_line_settings(args: argparse.Namespace) -> dict[str, str]:
    """The `BOT_SETTINGS` given on the command line, as the environment variables the bot reads."""
    settings = {}
    for option, variable, _, _ in BOT_SETTINGS:
        value = getattr(args, option.lstrip("-").replace("-", "_"))
        if value is not None:
            settings[variable] = str(value)
    return settings


def proc_status_mb(field_name: str) -> float:
    match = re.search(rf"^{field_name}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) / 1024 if match else float("nan")


def reset_peak_rss() -> bool:
    """Start a new VmHWM (peak RSS) measurement for this process (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def children_left() -> list[int]:
    """Processes whose parent is this one."""
    me = os.getpid()
    left = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == me:
                left.append(int(stat.parent.name))
    return left


def is_outcome(counter: str) -> bool:
    """One of the counters `on_message` ends a human message with (bot/cogs/emotions.py): analysed, or why not."""
    return counter.startswith("skipped_") or counter in (
        "analyzed",
        "reply_mentions",
        "analysis_failed",
        "analysis_timed_out",
    )


def outcome_total(counters: Counter[str]) -> int:
    """Messages that reached an end in `on_message`."""
    return sum(n for name, n in counters.items() if is_outcome(name))


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (`share` in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(share * len(ordered)))) - 1]


class LagProbe:
    """Sleeps `interval` on the bot's loop again and again and records each oversleep as (when, seconds)."""

    def __init__(self, interval: float = LAG_PROBE_SECONDS) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bot-load-lag-probe")

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            self.samples.append((now, now - started - self.interval))

    def between(self, start: float, end: float) -> list[float]:
        return [lag for at, lag in self.samples if start <= at <= end]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise  # this task was cancelled too (Ctrl-C): not the probe's cancellation, so not ours to swallow


@dataclass
class Step:
    rate: float
    sent: int = 0
    send_seconds: float = 0.0
    seconds: float = 0.0  # first message sent -> last one accounted for
    drained: bool = False
    outcomes: Counter[str] = field(default_factory=Counter)
    served: int = 0
    rejected: int = 0
    recorded: int = 0
    committed: int = 0
    store_dropped: int = 0
    emotion_latencies: list[float] = field(default_factory=list)
    emotion_busy: int = 0
    emotion_other: int = 0
    emotion_unanswered: int = 0
    emotion_late: int = 0
    # With several bot processes: every process's loop-lag samples together, and the sums of RSS and CPU.
    lag: list[float] = field(default_factory=list)
    rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    bot_cpu: float = 0.0
    standin_cpu: float = 0.0
    processes: list[dict[str, Any]] = field(default_factory=list)  # per bot process, shard order (`run_step`)
    problems: list[str] = field(default_factory=list)

    @property
    def analysed(self) -> int:
        return self.outcomes["analyzed"]

    @property
    def skipped(self) -> dict[str, int]:
        """The outcomes other than `analyzed`: every message the bot did not analyse, and why."""
        return {name: n for name, n in sorted(self.outcomes.items()) if is_outcome(name) and name != "analyzed"}

    @property
    def sent_per_second(self) -> float:
        return self.sent / self.send_seconds if self.send_seconds > 0 else 0.0

    @property
    def analysed_per_second(self) -> float:
        return self.analysed / self.seconds if self.seconds > 0 else 0.0

    @property
    def saturation(self) -> str | None:
        """Why this step saturated the bot, or None when the bot kept up."""
        if self.outcomes["skipped_busy"]:
            return f"{self.outcomes['skipped_busy']} messages skipped as busy"
        if self.analysed_per_second < KEEP_UP_RATIO * self.sent_per_second:
            return f"analysed {self.analysed_per_second / self.sent_per_second:.0%} of the rate sent"
        return None

    @property
    def saturated(self) -> bool:
        return self.saturation is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "sent": self.sent,
            "sent_per_second": self.sent_per_second,
            "analysed": self.analysed,
            "analysed_per_second": self.analysed_per_second,
            "seconds": self.seconds,
            "drained": self.drained,
            "saturated": self.saturated,
            "saturation": self.saturation,
            "outcomes": dict(self.outcomes),
            "skipped": self.skipped,
            "inference_served": self.served,
            "inference_rejected": self.rejected,
            "store_recorded": self.recorded,
            "store_committed": self.committed,
            "store_dropped": self.store_dropped,
            "emotion": {
                "answered": len(self.emotion_latencies),
                "busy": self.emotion_busy,
                "other": self.emotion_other,
                "unanswered": self.emotion_unanswered,
                "later_than_3s": self.emotion_late,
                "p50_ms": ms(percentile(self.emotion_latencies, 0.5)),
                "p99_ms": ms(percentile(self.emotion_latencies, 0.99)),
                "max_ms": ms(max(self.emotion_latencies, default=None)),
            },
            "loop_lag": {
                "samples": len(self.lag),
                "p50_ms": ms(percentile(self.lag, 0.5)),
                "p99_ms": ms(percentile(self.lag, 0.99)),
                "max_ms": ms(max(self.lag, default=None)),
            },
            "rss_mb": self.rss_mb,
            "peak_rss_mb": self.peak_rss_mb,
            "bot_cpu_share": self.bot_cpu,
            "standin_cpu_share": self.standin_cpu,
            "processes": self.processes,
            "problems": self.problems,
        }


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


async def wait_for(predicate: Callable[[], bool], timeout: float, poll: float = 0.01) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll)
    return True


async def run_step(bots: Bots, standin: StandIn, args: argparse.Namespace, rate: float) -> Step:
    """One rate: offer it, wait until every message sent is accounted for (by all the bot's processes together),
    flush the stores, measure."""
    from bot.replies import BUSY

    step = Step(rate)
    before = await bots.snapshots(reset_peak=True)
    wall_started = time.monotonic()
    await standin.command(
        "step",
        rate=rate,
        max_messages=args.max_messages,
        seconds=args.seconds_per_step,
        emotion_every=args.emotion_every,
        emotion_timeout=args.emotion_timeout,
    )
    report = await standin.receive("step_done")
    step.sent = report["sent"]
    step.send_seconds = report["stopped"] - report["started"]
    outcomes_before = sum(outcome_total(Counter(state["counters"])) for state in before)

    async def accounted() -> int:
        states = await bots.snapshots(full=False)
        return sum(outcome_total(Counter(state["counters"])) for state in states) - outcomes_before

    deadline = time.monotonic() + args.drain_seconds
    while not (drained := await accounted() >= step.sent) and time.monotonic() <= deadline:
        await asyncio.sleep(0.01)
    step.drained = drained
    finished = time.monotonic()
    step.seconds = finished - report["started"]
    after = await bots.snapshots(flush=True, lag_between=(report["started"], finished))
    wall = time.monotonic() - wall_started
    for shard, (was, now) in enumerate(zip(before, after, strict=True)):
        outcomes = Counter(now["counters"])
        outcomes.subtract(was["counters"])
        outcomes = +outcomes  # keep what happened in this step
        step.outcomes.update(outcomes)
        step.served += now["served"] - was["served"]
        step.rejected += now["rejected"] - was["rejected"]
        step.recorded += now["recorded"] - was["recorded"]
        step.committed += now["committed"] - was["committed"]
        step.store_dropped += now["dropped"] - was["dropped"]
        step.lag += now["lag"]
        step.processes.append(
            {
                "shard": shard,
                "pid": now["pid"],
                "messages_seen": outcomes["messages_seen"],
                "analysed": outcomes["analyzed"],
                "cpu_share": (now["cpu_seconds"] - was["cpu_seconds"]) / wall,
                "rss_mb": now["rss_mb"],
                "peak_rss_mb": now["peak_rss_mb"],
                "loop_lag": {
                    "samples": len(now["lag"]),
                    "p99_ms": ms(percentile(now["lag"], 0.99)),
                    "max_ms": ms(max(now["lag"], default=None)),
                },
            }
        )
    for answer in report["emotions"]:
        if answer["latency"] is None:
            step.emotion_unanswered += 1
            continue
        step.emotion_latencies.append(answer["latency"])
        step.emotion_late += answer["latency"] > DISCORD_ANSWER_LIMIT
        if not answer["embed"]:
            if answer["content"] == BUSY:
                step.emotion_busy += 1
            else:
                step.emotion_other += 1
    step.rss_mb = sum(share["rss_mb"] for share in step.processes)
    step.peak_rss_mb = sum(share["peak_rss_mb"] for share in step.processes)
    step.bot_cpu = sum(share["cpu_share"] for share in step.processes)
    step.standin_cpu = report["cpu_seconds"] / report["wall_seconds"] if report["wall_seconds"] > 0 else 0.0
    if not all(state["peak_reset"] for state in before):
        step.problems.append("peak RSS could not be reset per step: VmHWM is the peak since start")

    seen = step.outcomes["messages_seen"]
    outcomes = outcome_total(step.outcomes)
    if not step.drained:
        step.problems.append(
            f"MISMATCH: {step.sent - outcome_total(step.outcomes)} messages not accounted for after "
            f"{args.drain_seconds}s"
        )
    if seen != step.sent:
        step.problems.append(f"MISMATCH: sent {step.sent}, the bot saw {seen}")
    if outcomes != seen:
        step.problems.append(f"MISMATCH: saw {seen}, analysed + counted skips = {outcomes}")
    if not step.recorded == step.analysed == step.committed + step.store_dropped:
        step.problems.append(
            f"MISMATCH: analysed {step.analysed}, store recorded {step.recorded}, committed {step.committed}, "
            f"dropped {step.store_dropped}"
        )
    if step.store_dropped:
        step.problems.append(f"the store dropped {step.store_dropped} analyses (counted in Store.dropped)")
    if step.emotion_other:
        step.problems.append(f"{step.emotion_other} /emotion answers were neither emotions nor the busy message")
    if step.emotion_unanswered:
        step.problems.append(f"{step.emotion_unanswered} /emotion not answered within {args.emotion_timeout}s")
    if step.sent_per_second < KEEP_UP_RATIO * rate:
        step.problems.append(
            f"the load generator reached {step.sent_per_second:.0f} of {rate:g} msg/s: the offered rate was not met"
        )
    return step


# ----------------------------------------------------------------------------------------------- report


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def memory_total() -> str:
    with contextlib.suppress(OSError, AttributeError):
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
        return f"{kb / MB:.0f} GiB"
    return "?"


def machine() -> dict[str, Any]:
    import discord
    import torch

    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "memory": memory_total(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "discord_py": discord.__version__,
        "platform": platform.platform(),
    }


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def skipped_text(step: Step) -> str:
    skipped = {name.removeprefix("skipped_"): n for name, n in step.skipped.items()}
    return ", ".join(f"{name} {n}" for name, n in skipped.items()) or "0"


def markdown(report: dict[str, Any], steps: list[Step]) -> str:
    info, config, summary = report["machine"], report["config"], report["summary"]
    several = report["processes"] > 1

    def each(step: Step, total: str, value: Callable[[dict[str, Any]], str]) -> str:
        """`total` with one bot process; with several, `value` for each, in shard order."""
        return " / ".join(value(process) for process in step.processes) if several else total

    lines = [
        "## Bot under load (benchmarks/bot_load.py)",
        "",
        f"Machine: **{info['cpu']}**, {info['cpu_count']} CPUs ({info['usable_cpus']} usable by this process), "
        f"{info['memory']}, load average {', '.join(map(str, info['load_average']))} at start; Python "
        f"{info['python']}, torch {info['torch']} (intra-op threads: {info['torch_threads']}), discord.py "
        f"{info['discord_py']}.",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Bot: `MoodringBot` from `BotConfig.from_env` (as `moodring run`), model `{config['model_dir']}` served by "
        f"{config['backend']}, batch "
        f"{config['batch_size']}, batch wait {config['batch_wait_ms']:g} ms, queue {config['queue_size']}"
        + (f"; settings: {', '.join(report['environment'])}" if report["environment"] else "")
        + f". {config['channels']} channels with automatic analysis on ({config['analysis']}), reactions off; "
        f"`/emotion` every {config['emotion_every']:g} s. "
        + (processes_text(report) if several else "")
        + "The Discord stand-in and the load generator run in "
        f"a separate process (pid {report['standin_pid']}); RSS, CPU and loop lag below are "
        + (
            f"the bot's processes only, each shown as {per_shard(report['processes'])}"
            if several
            else "the bot's process only"
        )
        + ".",
        "",
        "| offered msg/s | sent | sent/s | analysed | **analysed/s** | skipped (counted) | accounted | "
        "/emotion n | /emotion p50 ms | **/emotion p99 ms** | /emotion busy | loop lag p99 ms | loop lag max ms | "
        "RSS MB | peak RSS MB | bot CPU | stand-in CPU |",
        "|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for step in steps:
        ok = "yes" if not any(p.startswith("MISMATCH") for p in step.problems) else "**NO**"
        analysed = f"{step.analysed}" + (f" ({each(step, '', lambda p: str(p['analysed']))})" if several else "")
        lag_p99 = each(step, fmt(ms(percentile(step.lag, 0.99)), 1), lambda p: fmt(p["loop_lag"]["p99_ms"], 1))
        lag_max = each(step, fmt(ms(max(step.lag, default=None)), 1), lambda p: fmt(p["loop_lag"]["max_ms"], 1))
        rss = each(step, f"{step.rss_mb:.0f}", lambda p: f"{p['rss_mb']:.0f}")
        peak = each(step, f"{step.peak_rss_mb:.0f}", lambda p: f"{p['peak_rss_mb']:.0f}")
        cpu = each(step, f"{step.bot_cpu:.0%}", lambda p: f"{p['cpu_share']:.0%}")
        lines.append(
            f"| {step.rate:g} | {step.sent} | {step.sent_per_second:.0f} | {analysed} | "
            f"**{step.analysed_per_second:.0f}** | {skipped_text(step)} | {ok} | {len(step.emotion_latencies)} | "
            f"{fmt(ms(percentile(step.emotion_latencies, 0.5)))} | "
            f"**{fmt(ms(percentile(step.emotion_latencies, 0.99)))}** | {step.emotion_busy} | "
            f"{lag_p99} | {lag_max} | {rss} | {peak} | {cpu} | {step.standin_cpu:.0%} |"
        )
    lines += ["", "Summary:", ""]
    lines += [f"- {line}" for line in summary["lines"]]
    problems = [f"offered {s.rate:g} msg/s: {p}" for s in steps for p in s.problems] + report["problems"]
    if problems:
        lines += ["", "Problems:", ""] + [f"- {p}" for p in problems]
    lines += [
        "",
        "analysed/s: messages analysed in the step / (first message sent -> last message accounted for). "
        "CPU: CPU seconds per wall second (100% = one core). Peak RSS: VmHWM"
        + (" since the step began" if report["peak_rss_per_step"] else " since start")
        + "; at start-up (model loaded, before any load) it was "
        + (
            " / ".join(f"{process['startup_peak_rss_mb']:.0f}" for process in report["bot_processes"])
            if several
            else f"{report['startup_peak_rss_mb']:.0f}"
        )
        + f" MB. Loop lag: oversleep of a {LAG_PROBE_SECONDS * 1000:g} ms sleep on the bot's loop"
        + (" in each process; analysed: all processes (each process's in brackets)." if several else "."),
    ]
    return "\n".join(lines)


def per_shard(count: int) -> str:
    """How a cell with one value per bot process is ordered: "shard 0 / shard 1"."""
    return " / ".join(f"shard {shard}" for shard in range(count))


def processes_text(report: dict[str, Any]) -> str:
    """Who ran what, with several bot processes."""
    count = report["processes"]
    where = ", ".join(
        f"shard {process['shard']} in pid {process['pid']}" + (" (this script's)" if process["shard"] == 0 else "")
        for process in report["bot_processes"]
    )
    return (
        f"**{count} bot processes**, one shard of {count} each, on one PostgreSQL database: {where}. The stand-in "
        f"plays Discord with {count} shards, one guild each, the channels dealt to them round-robin; the messages "
        "and `/emotion` calls alternate between the shards. "
    )


def summarise(steps: list[Step], total_sent: int, total_analysed: int, stored: int) -> dict[str, Any]:
    lines: list[str] = []
    saturated = next((s for s in steps if s.saturated), None)
    kept_up = [s for s in steps if not s.saturated]
    if saturated is not None:
        lines.append(
            f"Saturation at offered {saturated.rate:g} msg/s ({saturated.saturation}): "
            f"**{saturated.analysed_per_second:.0f} messages analysed per second** (sent "
            f"{saturated.sent_per_second:.0f}/s; skipped and counted: {skipped_text(saturated)})."
        )
    else:
        lines.append("The bot was not saturated at any offered rate (no busy skips, >= 90% of the offered rate).")
    if kept_up:
        best = max(kept_up, key=lambda s: s.analysed_per_second)
        lines.append(
            f"Highest rate kept up with: offered {best.rate:g} msg/s, {best.analysed_per_second:.0f} analysed/s."
        )
    at = saturated or (steps[-1] if steps else None)
    if at is not None:
        lines.append(
            f"`/emotion` under that load (offered {at.rate:g} msg/s): p50 "
            f"{fmt(ms(percentile(at.emotion_latencies, 0.5)))} ms, p99 "
            f"**{fmt(ms(percentile(at.emotion_latencies, 0.99)))} ms** over {len(at.emotion_latencies)} answers "
            f"({at.emotion_busy} said busy, {at.emotion_unanswered} unanswered, {at.emotion_late} later than 3 s); "
            f"loop lag p99 **{fmt(ms(percentile(at.lag, 0.99)), 1)} ms** (max {fmt(ms(max(at.lag, default=None)), 1)})."
        )
    if at is not None and len(at.processes) > 1:
        lines.append(
            f"Per bot process at offered {at.rate:g} msg/s ({per_shard(len(at.processes))}): analysed "
            + " / ".join(str(p["analysed"]) for p in at.processes)
            + ", CPU "
            + " / ".join(f"{p['cpu_share']:.0%}" for p in at.processes)
            + ", loop lag p99 "
            + " / ".join(f"{fmt(p['loop_lag']['p99_ms'], 1)}" for p in at.processes)
            + " ms."
        )
    all_lag = [lag for s in steps for lag in s.lag]
    lines.append(f"Loop lag p99 over the whole run: {fmt(ms(percentile(all_lag, 0.99)), 1)} ms.")
    skips = Counter()
    for s in steps:
        skips.update(s.skipped)
    accounted = total_analysed + sum(skips.values())
    verdict = "OK" if accounted == total_sent and stored == total_analysed else "**MISMATCH**"
    lines.append(
        f"Accounting ({verdict}): sent {total_sent} = analysed {total_analysed} + counted skips "
        f"{sum(skips.values())} ({', '.join(f'{k} {v}' for k, v in sorted(skips.items())) or 'none'}); "
        f"messages in the store: {stored}."
    )
    return {"lines": lines, "saturated_at": saturated and saturated.rate, "ok": verdict == "OK"}


# ----------------------------------------------------------------------------------------------- the run


async def benchmark(args: argparse.Namespace) -> int:
    from bot.app import MoodringBot
    from bot.cli import point_discord_at
    from bot.cluster.sharding import format_shard_ids

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)  # clean up too
    total_limit = 120 + len(args.rates) * (args.seconds_per_step + args.drain_seconds + args.emotion_timeout + 10)
    problems: list[str] = []
    steps: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="moodring-load-") as workdir:
        config = bot_config(args, Path(workdir))  # before anything starts: a bad setting fails here
        print("starting the stand-in process ...", file=sys.stderr)
        standin = await StandIn.start(args)
        children: list[BotChild] = []
        bye: dict[str, Any] = {}
        try:
            async with asyncio.timeout(total_limit):
                if args.processes > 1:
                    others = format_shard_ids(range(1, args.processes))
                    print(f"starting the bot processes for shard(s) {others} of {args.processes} ...", file=sys.stderr)
                for shard in range(1, args.processes):  # they start up while this process's bot does
                    children.append(await BotChild.start(args, shard, standin.info))
                config = connect_config(config, standin.info, 0, args.processes)
                with point_discord_at(standin.info["api_base"], standin.info["gateway_url"]):
                    bot = MoodringBot(config)
                    report = await drive(bot, config, standin, children, args, steps, problems)
        finally:
            byes = await asyncio.gather(*(child.stop(timeout=20) for child in children))
            bye = await standin.stop()
        for child, child_bye in zip(children, byes, strict=True):
            problems += [f"{child.name}: {problem}" for problem in child_bye.get("problems", [])]
            if child.process.returncode:
                problems.append(f"{child.name} exited with status {child.process.returncode}")
        if bye.get("errors"):
            problems.append(f"the stand-in had internal errors: {bye['errors']}")
        if bye.get("unknown_requests"):
            problems.append(f"the bot made {bye['unknown_requests']} requests the stand-in does not know")
        left = children_left()
        if left:
            problems.append(f"child processes left behind: {left}")
        report["problems"] = problems
        report["standin_exit_status"] = standin.process.returncode
        report["children_left"] = left
    print(markdown(report, steps))
    print(
        f"\nThe stand-in process exited with status {standin.process.returncode}"
        + "".join(f"; {child.name}, with status {child.process.returncode}" for child in children)
        + f"; child processes left: {', '.join(map(str, left)) or 'none'}."
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0 if report["summary"]["ok"] and not problems else 1


async def drive(
    bot: MoodringBot,
    config: BotConfig,
    standin: StandIn,
    children: list[BotChild],
    args: argparse.Namespace,
    steps: list[Step],
    problems: list[str],
) -> dict[str, Any]:
    """Start the bot, wait for the other shards' processes, check the channels, run the steps, close the bot;
    everything the report needs."""
    probe = LagProbe()
    async with running(bot, config, problems):
        try:
            others = [await child.ready() for child in children]
            analysis = await ensure_analysis(bot, shard_channels(standin.info, 0, args.processes))
            if any(other["analysis"] != STORE_DEFAULT for other in others):
                analysis = SWITCHED_ON
            startup_peak = proc_status_mb("VmHWM")
            print(f"bot ready (RSS {proc_status_mb('VmRSS'):.0f} MB, peak {startup_peak:.0f} MB)", file=sys.stderr)
            bot_processes = [{"shard": 0, "pid": os.getpid(), "startup_peak_rss_mb": startup_peak}]
            bot_processes += [{key: other[key] for key in ("shard", "pid", "startup_peak_rss_mb")} for other in others]
            probe.start()
            bots = Bots(bot, probe, children)
            for number, rate in enumerate(args.rates, 1):
                print(f"step {number}/{len(args.rates)}: offering {rate:g} msg/s ...", file=sys.stderr)
                step = await run_step(bots, standin, args, rate)
                steps.append(step)
                print(
                    f"  sent {step.sent} ({step.sent_per_second:.0f}/s), analysed {step.analysed} "
                    f"({step.analysed_per_second:.0f}/s), skipped {skipped_text(step)}",
                    file=sys.stderr,
                )
                if step.saturated or not step.drained:
                    break
            total_sent = sum(s.sent for s in steps)
            total_analysed = sum(s.analysed for s in steps)
            await bots.snapshots(full=False, flush=True)  # every process's analyses committed to the store
            until = bot.clock() + 7200
            stored = sum(
                [(await bot.store.mood(guild, None, 0, until)).messages for guild in standin.info["guild_ids"]]
            )
            summary = summarise(steps, total_sent, total_analysed, stored)
        finally:
            await probe.stop()
    return {
        "command": recorded_command(),
        "machine": machine(),
        "config": {
            "model_dir": str(config.model_dir),
            "backend": f"{bot.inference.classifier.backend}, {bot.inference.classifier.threads} intra-op threads",
            "batch_size": config.batch_size,
            "batch_wait_ms": config.batch_wait_ms,
            "queue_size": config.queue_size,
            "channels": args.channels,
            "analysis": analysis,
            "emotion_every": args.emotion_every,
            "rates": args.rates,
            "seconds_per_step": args.seconds_per_step,
            "max_messages": args.max_messages,
        },
        "environment": recorded_environment({**os.environ, **command_line_settings(args)}),
        "processes": args.processes,
        "bot_processes": bot_processes,
        "standin_pid": standin.info["pid"],
        "startup_peak_rss_mb": sum(process["startup_peak_rss_mb"] for process in bot_processes),
        "peak_rss_per_step": all(not p.startswith("peak RSS") for s in steps for p in s.problems),
        "steps": [s.as_dict() for s in steps],
        "store_messages": stored,
        "summary": summary,
    }


def recorded_command() -> str:
    """This run's command line for the report, with any password in a URL shown as `***`."""
    from bot.store.redact import redact_urls

    return shlex.join([Path(sys.executable).name, *map(redact_urls, sys.argv)])


def recorded_environment(environment: Mapping[str, str]) -> list[str]:
    """The `MOODRING_*` settings for the report, as sorted `NAME=value` lines with any password in a URL shown as
    `***` (the model directory is shown on its own)."""
    from bot.store.redact import redact_urls

    return sorted(
        f"{name}={redact_urls(value)}"
        for name, value in environment.items()
        if name.startswith("MOODRING_") and name != "MOODRING_MODEL_DIR"
    )


def positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def rates(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"rates must be comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"rates must be positive, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--channels", type=positive(int), default=4, help="text channels with analysis on")
    parser.add_argument("--rates", type=rates, default=[50.0, 100.0, 200.0, 400.0, 800.0], help="msg/s, one a step")
    parser.add_argument("--seconds-per-step", type=positive(float), default=10.0, help="seconds per step at most")
    parser.add_argument("--max-messages", type=positive(int), default=5000, help="messages per step at most")
    parser.add_argument("--emotion-every", type=positive(float), default=0.1, help="seconds between /emotion calls")
    parser.add_argument("--emotion-timeout", type=positive(float), default=10.0, help="seconds to wait for an answer")
    parser.add_argument("--drain-seconds", type=positive(float), default=30.0, help="wait for the backlog at most")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("GOEMOTIONS_DIR") or REPO.parent / "shared/data/goemotions"),
        help="GoEmotions directory; its dev.tsv texts are the messages ($GOEMOTIONS_DIR)",
    )
    parser.add_argument(
        "--database",
        default=None,
        help="an empty postgresql:// database for the bot's store (default: a fresh SQLite file in a temporary "
        "directory)",
    )
    parser.add_argument(
        "--processes",
        type=positive(int),
        default=1,
        help="run the bot as this many processes, one shard each (more than 1 needs --database postgresql://...)",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="the bot's INFO logs on stderr")
    for option, _, kind, help_text in BOT_SETTINGS:
        parser.add_argument(option, type=kind, default=None, help=help_text)
    parser.add_argument("--standin-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bot-child", type=int, default=None, metavar="SHARD", help=argparse.SUPPRESS)
    return parser


def cluster_refusal(args: argparse.Namespace) -> str | None:
    """Why `--processes` can't run with these options (before anything starts), or None."""
    from bot.store import is_postgres_url

    if args.processes == 1:
        return None
    if not (args.database and is_postgres_url(args.database)):
        return (
            f"--processes {args.processes} needs --database postgresql://...: several bot processes cannot share "
            "one SQLite file (moodring refuses that too)"
        )
    if args.channels < args.processes:
        return f"--processes {args.processes} needs as many --channels or more (a guild per shard), got {args.channels}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.standin_child:
        return run_load_generator(args)
    if args.bot_child is None and (refusal := cluster_refusal(args)):  # a child is told its database on stdin
        print(f"bot_load: {refusal}", file=sys.stderr)
        return 2
    if not (args.data_dir / "dev.tsv").is_file():
        print(
            f"bot_load: {args.data_dir / 'dev.tsv'} not found; set GOEMOTIONS_DIR or pass --data-dir", file=sys.stderr
        )
        return 2
    if args.threads is not None:  # before torch is imported: OpenMP reads these once
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)
    import logging

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if args.bot_child is not None:
        return run_bot_child(args)
    from bot.config import ConfigError

    try:
        return asyncio.run(benchmark(args))
    except ConfigError as error:
        print(f"bot_load: {error}", file=sys.stderr)
        return 2
    except TimeoutError:
        print("bot_load: the run passed its overall deadline; the bot and the stand-in were stopped", file=sys.stderr)
        return 1
    except RuntimeError as error:  # the bot or the stand-in process failed; both were stopped on the way out
        print(f"bot_load: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bot_load: interrupted; the bot and the stand-in process were stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
