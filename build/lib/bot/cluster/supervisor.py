"""`moodring cluster --processes N`: N `moodring run` child processes over the shard range, kept running.

The shard count comes from `--shard-count`, MOODRING_SHARD_COUNT, or Discord's recommendation (GET /gateway/bot's
`shards`); the shards (MOODRING_SHARD_IDS, default all) are dealt to the processes in contiguous runs
(bot/cluster/sharding.py). Each child is a `moodring run` with MOODRING_SHARD_IDS and MOODRING_SHARD_COUNT set; only the
first may train a first model (MOODRING_TRAIN_ON_START), so that N processes don't train N models into one folder.

A child that exits without being asked to is restarted with back-off (bot/backoff.py: 1, 2, 4 ... `restart_cap`
times `restart_base_s`; back to 1 once it has stayed up `stable_after_s`). A child that exits with status 2 (a
setting to fix) is not restarted: it would fail the same way, so the cluster stops with status 2. On SIGTERM or
SIGINT every child's process group gets SIGTERM, SIGKILL if the child has not exited within `stop_timeout_s`, and
is waited for until it is empty (a child's own children included). Children are started and stopped the one way
moodring runs children (model/child_process.py): in sessions of their own, so Ctrl-C reaches only the supervisor,
which stops them once; and watching the supervisor, so they stop by themselves if it dies without warning.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bot.backoff import Backoff
from bot.cluster.options import EXIT_CONFIG, EXIT_UNREACHABLE, add_shard_count_option
from bot.cluster.sharding import ShardSpecError, check_cluster_database, format_shard_ids, split_shards
from model.arguments import positive_int
from model.child_process import Lifeline, start_child, stop_child

log = logging.getLogger(__name__)
DISCORD_API = "https://discord.com/api/v10"


@dataclass(frozen=True)
class ClusterMember:
    """One process of the cluster: its number (from 0) and the shards it runs."""

    index: int
    shard_ids: tuple[int, ...]

    def describe(self, shard_count: int) -> str:
        return f"process {self.index} (shards {format_shard_ids(self.shard_ids)} of {shard_count})"


#: Builds a child's command line from its member and the shard count (injectable: tests use a tiny fake child).
ChildCommand = Callable[[ClusterMember, int], Sequence[str]]


def moodring_run(member: ClusterMember, shard_count: int) -> list[str]:
    """`moodring run` in this interpreter; the shards travel in the environment (`child_environment`)."""
    return [sys.executable, "-m", "moodring", "run"]


def child_environment(base: Mapping[str, str], member: ClusterMember, shard_count: int) -> dict[str, str]:
    """`base` with the member's shards; only process 0 may train a first model."""
    env = {
        **base,
        "MOODRING_SHARD_IDS": format_shard_ids(member.shard_ids),
        "MOODRING_SHARD_COUNT": str(shard_count),
    }
    if member.index > 0:
        env["MOODRING_TRAIN_ON_START"] = "false"
    return env


class ChildExited(Exception):
    """A child process ended without being asked to."""


class Supervisor:
    """Runs one child per member until `run`'s stop event is set; see the module docstring for the contract."""

    def __init__(
        self,
        members: Sequence[ClusterMember],
        shard_count: int,
        *,
        command: ChildCommand = moodring_run,
        env: Mapping[str, str] | None = None,
        restart_base_s: float = 1.0,
        restart_cap: int = 64,
        stable_after_s: float = 60.0,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.members = tuple(members)
        self.shard_count = shard_count
        self.command = command
        self.env = dict(os.environ if env is None else env)
        self.restart_base_s = restart_base_s
        self.restart_cap = restart_cap
        self.stable_after_s = stable_after_s
        self.stop_timeout_s = stop_timeout_s
        self.processes: dict[int, asyncio.subprocess.Process] = {}  # member index -> its current child
        self.restarts: Counter[int] = Counter()
        self.left_behind: list[int] = []  # process groups that had to be killed after their child had exited
        self._stopping = asyncio.Event()
        self._fatal: int | None = None

    async def run(self, stop: asyncio.Event) -> int:
        """Keep every child running until `stop` is set (or a child needs a setting fixed); stop them all.

        Returns 0; `EXIT_CONFIG` when a child exited with it, 1 when a child could not be started at all.
        """
        lifeline = Lifeline()  # the children watch it: it closes when we end, however we end
        keepers = [asyncio.create_task(self._keep_running(m, lifeline)) for m in self.members]
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({stopped, *keepers}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._stopping.set()
            stopped.cancel()
            for keeper in keepers:  # first, so that none starts a child after stop_all has looked
                keeper.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
            try:
                await self.stop_all()
            finally:
                lifeline.close()
        return self._fatal or 0

    async def _keep_running(self, member: ClusterMember, lifeline: Lifeline) -> None:
        what = member.describe(self.shard_count)
        backoff = Backoff(what, log, cap=self.restart_cap, expected=(ChildExited,))
        while not self._stopping.is_set():
            try:
                child = await start_child(
                    self.command(member, self.shard_count),
                    lifeline=lifeline,
                    env=child_environment(self.env, member, self.shard_count),
                )
            except OSError as error:  # the command itself cannot run: restarting cannot help
                log.error("cannot start %s: %s; stopping the cluster", what, error)
                self._fatal = 1
                return
            self.processes[member.index] = child
            log.info("%s started (pid %d)", what, child.pid)
            exited = asyncio.create_task(child.wait())
            done, _ = await asyncio.wait({exited}, timeout=self.stable_after_s)
            if not done:
                backoff.succeeded(f" (pid {child.pid} has been up {self.stable_after_s:.0f} s)")
            status = await exited
            if self._stopping.is_set():
                return
            await self._stop(child)  # it has exited: what it started and left behind
            if status == EXIT_CONFIG:
                log.error("%s exited with status %d (a setting to fix): stopping the cluster", what, status)
                self._fatal = EXIT_CONFIG
                return
            wait = backoff.failed(ChildExited(f"exited with status {status}"), "") * self.restart_base_s
            log.info("restarting %s in %.1f s", what, wait)
            self.restarts[member.index] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)

    async def stop_all(self) -> None:
        """Stop every child at once: SIGTERM to its process group, SIGKILL if it is still there after
        `stop_timeout_s`; returns once every child has exited and every group is empty."""
        await asyncio.gather(*(self._stop(child) for child in self.processes.values()))
        log.info("all %d processes stopped", len(self.processes))

    async def _stop(self, child: asyncio.subprocess.Process) -> None:
        """Stop a child, or only empty the group of one that has exited; a group that outlived its child is
        counted in `left_behind`."""
        if await stop_child(child, self.stop_timeout_s):
            self.left_behind.append(child.pid)


# --------------------------------------------------------------------------------------------- the command


def register(commands: argparse._SubParsersAction) -> None:
    cluster = commands.add_parser(
        "cluster",
        help="run the bot as several processes, each with some of the shards (needs a PostgreSQL database)",
        description="Start N `moodring run` processes over the shards, restart one that crashes (with back-off), "
        "and stop them all on Ctrl-C or SIGTERM. Settings as for `moodring run`.",
    )
    cluster.add_argument("--processes", type=positive_int, required=True, metavar="N", help="how many processes")
    add_shard_count_option(cluster)
    cluster.set_defaults(handler=run_cluster)


class ClusterError(Exception):
    """The cluster cannot start; the message says why, `status` is the exit status."""

    def __init__(self, message: str, status: int = EXIT_CONFIG) -> None:
        super().__init__(message)
        self.status = status


def run_cluster(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from bot.config import BotConfig, ConfigError

    try:
        config = BotConfig.from_env()
        if args.shard_count is not None:
            config = replace(config, shard_count=args.shard_count)
        check_cluster_database(config.database, config.shard_ids, config.shard_count, args.processes)
        return asyncio.run(_run_cluster(config, args.processes))
    except (ConfigError, ShardSpecError) as error:
        print(f"moodring: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except ClusterError as error:
        print(f"moodring: {error}", file=sys.stderr)
        return error.status


async def _run_cluster(config, processes: int) -> int:
    shard_count = config.shard_count or await recommended_shard_count(config.token, config.discord_api)
    shard_ids = config.shard_ids or tuple(range(shard_count))
    members = [ClusterMember(i, ids) for i, ids in enumerate(split_shards(shard_ids, processes))]
    supervisor = Supervisor(members, shard_count)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await supervisor.run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def recommended_shard_count(token: str, api: str | None) -> int:
    """Discord's recommended shard count: GET /gateway/bot's `shards`. ClusterError when it cannot be had."""
    import aiohttp

    url = (api or DISCORD_API) + "/gateway/bot"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            http.get(url, headers={"Authorization": f"Bot {token}"}) as response,
        ):
            if response.status == 401:
                raise ClusterError("Discord rejected DISCORD_TOKEN. Reset the token in the developer portal.")
            if response.status != 200:
                raise ClusterError(
                    f"Discord answered {response.status} when asked for the recommended shard count; "
                    "set MOODRING_SHARD_COUNT or --shard-count",
                    EXIT_UNREACHABLE,
                )
            body = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        raise ClusterError(
            f"can't ask Discord for the recommended shard count ({error or type(error).__name__}); "
            "set MOODRING_SHARD_COUNT or --shard-count",
            EXIT_UNREACHABLE,
        ) from None
    shards = body.get("shards") if isinstance(body, dict) else None
    if not isinstance(shards, int) or shards < 1:
        raise ClusterError(f"Discord's /gateway/bot gave no usable shard count ({shards!r})", EXIT_UNREACHABLE)
    log.info("Discord recommends %d shards", shards)
    return shards
