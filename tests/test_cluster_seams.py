"""The cluster's seams, on a real PostgreSQL: one owner per shard (real `moodring run` processes against the stand-in:
a second process waits, a rolling deploy hands over, a lost lock connection stops the shards before they are taken
again; checked against the statistics in the database)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from process_guard import process_alive
from test_cluster import until

from bot.cluster.shard_lock import APPLICATION_NAME, SHARD_LOCK_SPACE
from sandbox import DiscordStandIn


def run_env(standin: DiscordStandIn, database: str, model_dir: Path, tmp_path: Path) -> dict[str, str]:
    """The environment of a `moodring run` of all 2 shards on `database`, against the stand-in."""
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DISCORD_TOKEN": standin.token,
        "MOODRING_DISCORD_API": standin.api_base,
        "MOODRING_DISCORD_GATEWAY": standin.gateway_url,
        "MOODRING_MODEL_DIR": str(model_dir),
        "MOODRING_DATABASE": database,
        "MOODRING_WORK_DIR": str(tmp_path / "runs"),
        "MOODRING_TRAIN_ON_START": "false",
        "MOODRING_SHARD_COUNT": "2",
    }


class RunProcess:
    """A `moodring run` child whose stderr goes to a file."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    def text(self) -> str:
        return self.log.read_text()


@pytest.fixture
async def start_run(tmp_path: Path) -> AsyncIterator:
    started: list[RunProcess] = []

    async def start(name: str, env: dict[str, str]) -> RunProcess:
        log = tmp_path / f"{name}.log"
        with open(log, "wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "moodring", "run", env=env, stderr=stderr
            )
        started.append(RunProcess(process, log))
        return started[-1]

    try:
        yield start
    finally:
        for run in started:
            if run.process.returncode is None:
                run.process.kill()
                await run.process.wait()
        assert not any(process_alive(run.process.pid) for run in started)


async def analysed(database: str) -> Counter[int]:
    """Messages analysed per guild, from the statistics the processes wrote to PostgreSQL."""
    connection = await asyncpg.connect(database)
    try:
        rows = await connection.fetch("SELECT guild_id, SUM(messages) FROM channel_buckets GROUP BY guild_id")
    finally:
        await connection.close()
    return Counter({guild_id: int(total) for guild_id, total in rows})


@pytest.mark.discord_standin(shard_count=2)
async def test_one_owner_per_shard_a_rolling_deploy_hands_over_and_a_lost_lock_stops_the_shards_first(
    discord_standin: DiscordStandIn, postgres_url: str, tiny_model_dir: Path, tmp_path: Path, start_run
) -> None:
    """Two `moodring run`s of the same 2 shards: the second waits (one line) and every message is counted once; a
    SIGTERM of the first (a rolling deploy) hands both shards to the second, a SIGKILL of that one to a third; and
    when the third's lock connection is cut while the test takes the locks, it disconnects its shards until it holds
    them again."""
    standin = discord_standin
    channels = {standin.guild_id: standin.channel_id}
    for shard in (0, 1):
        guild_id, channel_id = await standin.add_guild(f"on shard {shard}", shard=(shard, 2))
        channels[guild_id] = channel_id
    env = run_env(standin, postgres_url, tiny_model_dir, tmp_path)
    sent: Counter[int] = Counter()

    async def post(text: str) -> None:
        for guild_id, channel_id in channels.items():
            await standin.dispatch_message(channel_id, f"{text} in {guild_id}")
        sent.update(list(channels))  # one message per guild
        await until_counted()

    async def until_counted() -> None:
        deadline = asyncio.get_running_loop().time() + 60
        while (found := await analysed(postgres_url)) != sent:
            assert asyncio.get_running_loop().time() < deadline, f"analysed {found}, expected {sent}"
            await asyncio.sleep(0.1)

    first = await start_run("first", env)
    await standin.wait_until_identified(2, timeout=120)
    second = await start_run("second", env)
    await until(
        lambda: "is run by another process" in second.text() or standin.identify_count > 2,
        120,
        "the second process waiting (or connecting)",
    )
    assert standin.identify_count == 2, "the second process connected shards that the first runs"
    assert second.text().count("is run by another process") == 1  # one line: it waits for shard 0 first
    await post("What a lovely day")
    await post("Still here")
    assert standin.identify_count == 2 and sorted(s.shard for s in standin.sessions) == [(0, 2), (1, 2)]

    # A rolling deploy: the old process stops cleanly, the waiting one takes both shards over.
    first.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(first.process.wait(), 60) == 0
    await standin.wait_until_identified(4, timeout=60)
    await post("Hello again")

    # The owner dies without a word: its connection goes, and with it the locks; a third process takes over.
    third = await start_run("third", env)
    await until(lambda: "is run by another process" in third.text(), 120, "the third process waiting")
    second.process.kill()
    await second.process.wait()
    await standin.wait_until_identified(6, timeout=60)
    await post("Anyone there?")

    # The third's lock connection is cut, and the test takes the shards' locks before the third can take them back.
    locker = await asyncpg.connect(postgres_url)
    try:
        holders = await locker.fetch(
            "SELECT DISTINCT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objsubid = 2",
            SHARD_LOCK_SPACE,
        )
        assert len(holders) == 1  # the third process's lock connection, holding both shards
        (name,) = await locker.fetchrow("SELECT application_name FROM pg_stat_activity WHERE pid = $1", holders[0][0])
        assert name == APPLICATION_NAME
        assert await locker.fetchval("SELECT pg_terminate_backend($1)", holders[0][0])
        for shard in (0, 1):
            await locker.execute("SELECT pg_advisory_lock($1, $2)", SHARD_LOCK_SPACE, shard)
        await until(lambda: not standin.sessions, 60, "the third process's shards disconnected")
        await until(lambda: third.text().count("shard 0 is run by another process") == 2, 60, "the third waiting")
        assert standin.identify_count == 6  # it does not connect a shard whose lock it lacks
    finally:
        await locker.close()  # releases the test's locks
    await standin.wait_until_identified(8, timeout=60)
    await post("Back again")

    third.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(third.process.wait(), 60) == 0
    for run in (first, second, third):
        assert "Traceback" not in run.text(), run.text()


# -------------------------------------------------
