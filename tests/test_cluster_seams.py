"""The cluster's seams, on a real PostgreSQL: one owner per shard (real `moodring run` processes against the stand-in:
a second process waits, a rolling deploy hands over, a lost lock connection stops the shards before they are taken
again; checked against the statistics in the database); one retrain per cluster, each in a run directory of its own,
and announcements that carry the swapped candidate's checksums; a swap whose announcement failed, found at a ping."""

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
from bot_defaults import inference_service
from bot_fixtures import BotFactory, confirm_retrain, second_model, wait_until
from process_guard import process_alive
from test_cluster import until
from test_retrain import LONG_ARGS, make_retrainer

from bot.cluster.model_sync import ModelSync, read_checksums
from bot.cluster.shard_lock import APPLICATION_NAME, SHARD_LOCK_SPACE
from bot.cluster.sharding import shard_of
from model.metadata import ModelMetadata
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


# --------------------------------------------------------------------------------------------- one retrain per cluster


@pytest.mark.discord_standin(shard_count=2)
async def test_a_retrain_asked_for_in_another_process_of_the_cluster_is_refused_while_one_runs(
    make_moodring_bot: BotFactory,
    discord_standin: DiscordStandIn,
    postgres_url: str,
    shared_model_dir: Path,
    tiny_backbone_dir: Path,
    goemotions_dir: Path,
) -> None:
    """Two bots on one database (shard 0 and shard 1): `/moodring retrain` in the second, while the first retrains,
    says that one is running elsewhere; once the first has stopped, the second may start one."""
    standin = discord_standin
    home = shard_of(standin.guild_id, 2)
    guilds = {home: (standin.guild_id, standin.channel_id)}
    guilds[1 - home] = await standin.add_guild("the other bot's", shard=(1 - home, 2))
    settings = {
        "database": postgres_url,
        "model_dir": shared_model_dir,
        "shard_count": 2,
        "backbone": str(tiny_backbone_dir),
        "data_dir": str(goemotions_dir),
        "retrain_args": LONG_ARGS,  # runs until it is stopped
    }

    async def retrain_in(shard: int) -> str:
        guild_id, channel_id = guilds[shard]
        asked = await standin.dispatch_slash_command(
            "moodring retrain", guild_id=guild_id, channel_id=channel_id, user=standin.owner_id
        )
        return await confirm_retrain(standin, asked, timeout=30)  # Train, under the summary of the corrections

    async with (
        make_moodring_bot(shard_ids=(0,), **settings) as first,
        make_moodring_bot(shard_ids=(1,), **settings) as second,
    ):
        assert "Starting a retrain" in await retrain_in(0)
        assert first.retrainer.running
        refused = await retrain_in(1)
        assert first.retrainer.running, "the first retrain ended before the second was asked for: inconclusive"
        assert "already running in another of this bot's processes" in refused, refused
        assert not second.retrainer.running
        assert (await first.retrainer.cancel()).outcome == "cancelled"
        assert "Starting a retrain" in await retrain_in(1)  # the lock went with the first run
        assert (await second.retrainer.cancel()).outcome == "cancelled"


async def test_retrains_started_at_once_get_run_directories_of_their_own(
    tiny_model_dir: Path, tiny_backbone_dir: Path, goemotions_dir: Path, tmp_path: Path
) -> None:
    """Two retrainers on one work directory (two clusters, or processes without a shared lock) started in the same
    second: each writes into a directory of its own. Each run is held in its export step, which comes after the run
    directory is made, until it is cancelled."""
    exported: list[Path] = []
    both = asyncio.Event()

    async def export(directory: Path) -> None:  # holds the run here until it is cancelled
        exported.append(directory)
        if len(exported) == 2:
            both.set()
        await asyncio.Event().wait()

    services = [inference_service(), inference_service()]
    retrainers = [
        make_retrainer(service, tiny_model_dir, tmp_path, tiny_backbone_dir, goemotions_dir, export_corrections=export)
        for service in services
    ]
    try:
        for service in services:
            service.start()
        assert all([await retrainer.start() for retrainer in retrainers])
        try:
            await asyncio.wait_for(both.wait(), 30)
        finally:
            for retrainer in retrainers:
                await retrainer.cancel()
    finally:
        for service in services:
            await service.close()
    run_dirs = [directory.parent for directory in exported]
    assert len(set(run_dirs)) == 2, run_dirs
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(d.name for d in run_dirs)


def third_model(model_dir: Path, destination: Path) -> Path:
    """Another copy of `second_model`'s kind: every threshold 1 too, but its own `moodring.json` and checksums."""
    second_model(model_dir, destination)
    metadata = ModelMetadata.load(destination)
    metadata.created_at = "the third tiny model"
    metadata.save(destination)
    return destination


async def test_two_retrains_swapping_one_after_the_other_leave_every_process_on_the_last_model(
    postgres_url: str,
    shared_model_dir: Path,
    tiny_model_dir: Path,
    tiny_backbone_dir: Path,
    goemotions_dir: Path,
    tmp_path: Path,
) -> None:
    """Process A swaps in candidate X; before A announces it, process B swaps in Y (its own retrain: two retrains,
    as when the retrain lock's connection dropped); then A announces, and B. A must announce X (not the Y it would
    read from the directory now), so that B refuses X with one line and A loads Y when B announces it: both serve
    Y, the directory's model."""
    x = second_model(tiny_model_dir, tmp_path / "a-run" / "model")
    y = third_model(tiny_model_dir, tmp_path / "b-run" / "model")
    services = [inference_service(), inference_service()]
    syncs = [ModelSync(postgres_url, shared_model_dir, service) for service in services]
    b_swapped, a_announced = asyncio.Event(), asyncio.Event()

    async def a_after_swap(*checksums: dict[str, str]) -> None:
        b_swap = asyncio.create_task(retrainer_b._swap_in(y))
        await b_swapped.wait()  # B's model is in the directory
        await syncs[0].announce(*checksums)
        a_announced.set()
        await b_swap

    async def b_after_swap(*checksums: dict[str, str]) -> None:
        b_swapped.set()
        await a_announced.wait()
        await syncs[1].announce(*checksums)

    retrainer_a, retrainer_b = (
        make_retrainer(service, shared_model_dir, tmp_path / name, tiny_backbone_dir, goemotions_dir, after_swap=hook)
        for service, name, hook in zip(services, "ab", (a_after_swap, b_after_swap), strict=True)
    )
    try:
        for service, sync in zip(services, syncs, strict=True):
            service.start()
            await sync.start(lambda service=service: service.load(shared_model_dir))
        await wait_until(lambda: all(sync.settled for sync in syncs), 30, "both listening")
        await retrainer_a._swap_in(x)
        y_checksums = read_checksums(shared_model_dir)
        await wait_until(lambda: syncs[0].loaded == 1 and syncs[1].refused == 1, 30, "A loading B's model")
        assert syncs[0].serving == syncs[1].serving == y_checksums
    finally:
        for sync in syncs:
            await sync.close()
        for service in services:
            await service.close()


# --------------------------------------------------------------------------------------------- a swap that heals


async def test_a_swap_whose_announcement_failed_is_served_after_the_next_ping(
    postgres_url: str,
    shared_model_dir: Path,
    tiny_model_dir: Path,
    tiny_backbone_dir: Path,
    goemotions_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A retrain's swap in one process whose announcement cannot be sent (its database unreachable just then): the
    other process, pinging every 0.5 s, finds the new model in the shared directory and serves it."""
    candidate = second_model(tiny_model_dir, tmp_path / "run" / "model")
    receiving, sending = inference_service(), inference_service()
    receiver = ModelSync(postgres_url, shared_model_dir, receiving, ping_interval=0.5)
    unreachable = "postgresql://moodring:secret-pw@127.0.0.1:9/moodring"  # the discard port: refused
    sender = ModelSync(unreachable, shared_model_dir, sending)
    retrainer = make_retrainer(
        sending, shared_model_dir, tmp_path, tiny_backbone_dir, goemotions_dir, after_swap=sender.announce
    )
    try:
        for service in (receiving, sending):
            service.start()
        await sending.load(shared_model_dir)
        await receiver.start(lambda: receiving.load(shared_model_dir))
        await wait_until(lambda: receiver.settled, 30, "listening")
        await retrainer._swap_in(candidate)  # a real swap; its announcement fails
        assert "could not tell the other processes about the new model" in caplog.text
        await wait_until(lambda: receiver.loaded == 1, 10, "the missed swap served after a ping")
        assert receiver.connections == 1  # not by a reconnect
        assert receiving.classifier.thresholds.min() == 1.0  # the second model
    finally:
        await receiver.close()
        for service in (receiving, sending):
            await service.close()
