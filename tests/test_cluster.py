"""`moodring cluster`: the supervisor restarts a crashed process with back-off and stops them all, none left behind
(a tiny fake child injected through its constructor); and the real command over two real `moodring run` children
on one PostgreSQL database against the sharding stand-in: every message analysed and every due summary posted exactly
once, a killed process costs only its own guilds until it is restarted, a retrain in one process reaches both, and a
supervisor killed outright (SIGKILL) loses no analysed message, as one stopped with SIGTERM loses none."""

from __future__ import annotations

import ast
import asyncio
import os
import re
import shutil
import signal
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from bot_fixtures import confirm_retrain, threshold_marks
from postgres_fixtures import PostgresServer
from process_guard import process_alive
from test_retrain import TINY_ARGS

from bot.cluster.sharding import shard_of
from bot.cluster.supervisor import ClusterError, ClusterMember, Supervisor, child_environment, recommended_shard_count
from bot.render import model_description
from bot.store import open_store
from model import EmotionClassifier
from model.text_preparation import clean_markup
from sandbox import DiscordStandIn

TEXT = "Thank you so much, this is wonderful!"

# A stand-in for `moodring run`: it records its start (pid; with $FAKE_LEFTOVER the pid of a child of its own that
# it leaves to the supervisor to clean up, else 0; its shard settings; the time), watches its parent like `moodring
# run`, and then waits forever, or exits with the status in $FAKE_EXIT at once.
FAKE_CHILD = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from model.parent_watch import watch_parent

    watch_parent()
    leftover = 0
    if os.environ.get("FAKE_LEFTOVER"):
        leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"]).pid
    fields = [os.getpid(), leftover, os.environ["MOODRING_SHARD_IDS"], os.environ["MOODRING_SHARD_COUNT"],
              os.environ.get("MOODRING_TRAIN_ON_START", "-"), time.monotonic()]
    with open(sys.argv[1], "a") as log:
        log.write(sys.argv[2] + " " + " ".join(map(str, fields)) + "\\n")
    if os.environ.get("FAKE_EXIT"):
        sys.exit(int(os.environ["FAKE_EXIT"]))
    time.sleep(300)
    """
)


def fake_child(log: Path) -> Callable[[ClusterMember, int], list[str]]:
    return lambda member, shard_count: [sys.executable, "-c", FAKE_CHILD, str(log), str(member.index)]


def starts(log: Path) -> list[tuple[int, int, int, str, str, str, float]]:
    """(member, pid, leftover pid, MOODRING_SHARD_IDS, MOODRING_SHARD_COUNT, MOODRING_TRAIN_ON_START, time)."""
    if not log.exists():
        return []
    rows = []
    for line in log.read_text().splitlines():
        index, pid, leftover, ids, count, train, at = line.split()
        rows.append((int(index), int(pid), int(leftover), ids, count, train, float(at)))
    return rows


async def until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.02)


def all_gone(rows) -> bool:
    return not any(process_alive(pid) or (leftover and process_alive(leftover)) for _, pid, leftover, *_ in rows)


MEMBERS = [ClusterMember(0, (0, 1)), ClusterMember(1, (2, 3))]


async def test_a_killed_process_is_restarted_with_back_off_and_stop_leaves_nothing(tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    env = {**os.environ, "FAKE_LEFTOVER": "1"}
    supervisor = Supervisor(MEMBERS, 4, command=fake_child(log), env=env, restart_base_s=0.5, stop_timeout_s=5)
    stop = asyncio.Event()
    running = asyncio.create_task(supervisor.run(stop))
    try:
        await until(lambda: len(starts(log)) == 2, what="both processes started")
        assert sorted(row[:1] + row[3:6] for row in starts(log)) == [(0, "0-1", "4", "-"), (1, "2-3", "4", "false")]
        gaps = []
        for restarts in (1, 2):
            victim = supervisor.processes[0].pid
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            await until(lambda n=restarts: len(starts(log)) == 2 + n, what=f"restart {restarts}")
            row = starts(log)[-1]
            assert row[0] == 0 and row[1] != victim and row[1] == supervisor.processes[0].pid
            gaps.append(row[-1] - killed_at)
        # Back-off: 1 then 2 intervals of 0.5 s (plus the start of a Python process).
        assert gaps[0] >= 0.5 and gaps[1] >= 1.0, gaps
        assert supervisor.restarts == {0: 2}  # the other process was left alone
        assert len(supervisor.left_behind) == 2  # the killed children's own children, killed by the supervisor
    finally:
        stop.set()
        status = await asyncio.wait_for(running, 30)
    assert status == 0
    rows = starts(log)
    assert len(rows) == 4 and all_gone(rows)  # every child and every child's child, checked gone


async def test_a_process_that_needs_a_setting_fixed_stops_the_cluster(tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    env = {**os.environ, "FAKE_EXIT": "2", "FAKE_LEFTOVER": "1"}
    supervisor = Supervisor(MEMBERS, 4, command=fake_child(log), env=env, restart_base_s=0.1, stop_timeout_s=5)
    status = await asyncio.wait_for(supervisor.run(asyncio.Event()), 60)
    assert status == 2
    rows = starts(log)
    assert 1 <= len(rows) <= 2 and supervisor.restarts == {}  # no restart: it would fail the same way
    assert all_gone(rows)


SUPERVISOR = textwrap.dedent(
    """
    import asyncio, sys
    from bot.cluster.supervisor import ClusterMember, Supervisor

    members = [ClusterMember(0, (0,)), ClusterMember(1, (1,))]
    fake = lambda member, count: [sys.executable, "-c", sys.argv[2], sys.argv[1], str(member.index)]
    asyncio.run(Supervisor(members, 2, command=fake).run(asyncio.Event()))
    """
)


async def test_the_processes_stop_by_themselves_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    supervisor = await asyncio.create_subprocess_exec(sys.executable, "-c", SUPERVISOR, str(log), FAKE_CHILD)
    try:
        await until(lambda: len(starts(log)) == 2, what="both processes started")
    finally:
        supervisor.kill()  # no chance to stop its children
        await supervisor.wait()
    await until(lambda: all_gone(starts(log)), timeout=10, what="the orphaned processes gone")


async def test_no_shard_count_without_discord_is_one_clear_error(discord_standin: DiscordStandIn) -> None:
    assert await recommended_shard_count(discord_standin.token, discord_standin.api_base) == 1
    with pytest.raises(ClusterError, match="Discord rejected DISCORD_TOKEN") as rejected:
        await recommended_shard_count("not-the-token", discord_standin.api_base)
    assert rejected.value.status == 2
    with pytest.raises(ClusterError, match="can't ask Discord for the recommended shard count") as unreachable:
        await recommended_shard_count("x", "http://127.0.0.1:9/api/v10")  # the discard port: refused
    assert unreachable.value.status == 75 and "MOODRING_SHARD_COUNT" in str(unreachable.value)


def test_children_get_their_shards_and_only_the_first_may_train_a_first_model() -> None:
    base = {"MOODRING_TRAIN_ON_START": "true", "OTHER": "kept"}
    first = child_environment(base, ClusterMember(0, (0, 1, 2)), 6)
    second = child_environment(base, ClusterMember(1, (3, 4, 5)), 6)
    keys = ("MOODRING_SHARD_IDS", "MOODRING_SHARD_COUNT", "MOODRING_TRAIN_ON_START", "OTHER")
    assert [first[k] for k in keys] == ["0-2", "6", "true", "kept"]
    assert [second[k] for k in keys] == ["3-5", "6", "false", "kept"]


async def test_a_cluster_started_while_postgresql_is_down_comes_up_once_it_starts(
    discord_standin: DiscordStandIn, postgres_server: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    """`moodring cluster` whose database cannot be reached yet: its `moodring run` exits 75 (one line, no traceback)
    and is restarted with back-off, not taken for a setting to fix; once PostgreSQL runs, the process comes up."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DISCORD_TOKEN": discord_standin.token,
        "MOODRING_DISCORD_API": discord_standin.api_base,
        "MOODRING_DISCORD_GATEWAY": discord_standin.gateway_url,
        "MOODRING_MODEL_DIR": str(tmp_path / "no-model"),  # no model to load: the bot answers without one
        "MOODRING_WORK_DIR": str(tmp_path / "runs"),
        "MOODRING_DATABASE": postgres_url,
        "MOODRING_TRAIN_ON_START": "false",
    }
    log_file = tmp_path / "stderr.log"
    postgres_server.stop()
    try:
        with open(log_file, "wb") as stderr:
            cluster = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "moodring", "cluster", "--processes", "1", env=env, stderr=stderr
            )
    except BaseException:
        postgres_server.start()
        raise
    try:
        await until(
            lambda: "restarting process 0" in log_file.read_text() or cluster.returncode is not None,
            120,
            "the first start refused and a restart scheduled",
        )
        assert cluster.returncode is None, log_file.read_text()
        postgres_server.start()
        await discord_standin.wait_until_identified(1, timeout=120)
        cluster.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(cluster.wait(), 60) == 0
    finally:
        if postgres_server.pid is None:
            postgres_server.start()
        if cluster.returncode is None:
            cluster.kill()  # its process stops by itself (parent watch)
            await cluster.wait()
    log = log_file.read_text()
    assert "Traceback" not in log, log
    refusals = [line for line in log.splitlines() if line.startswith("moodring: ")]
    assert refusals and all("cannot connect to PostgreSQL" in line for line in refusals), log
    assert "exited with status 75" in log and "a setting to fix" not in log, log
    assert "all 1 processes stopped" in log


@pytest.fixture
def cluster_database(postgres_url: str) -> tuple[str, int]:
    """The database the cluster's processes share, and how many processes it allows: PostgreSQL, two. Without
    the PostgreSQL binaries the test is left out of the run (tests/postgres_fixtures.py)."""
    return postgres_url, 2


@pytest.mark.discord_standin(shard_count=4)
async def test_moodring_cluster_does_each_guilds_work_once_restarts_a_killed_process_and_shares_a_retrain(
    discord_standin: DiscordStandIn,
    cluster_database: tuple[str, int],
    tiny_model_dir: Path,
    tiny_classifier: EmotionClassifier,
    tiny_backbone_dir: Path,
    goemotions_dir: Path,
    tmp_path: Path,
) -> None:
    """Two `moodring run` processes of 2 shards each on one PostgreSQL: every message in 6 guilds is analysed once and
    each due summary posted once, also across a crash and restart of one process; a retrain started in one process
    swaps the model in both (the settings of each say which model answers, and the answers match it)."""
    standin = discord_standin
    database, processes = cluster_database
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "shared" / "model"))  # the swap replaces it
    # 4 shards: process 0 runs shards 0-1, process 1 shards 2-3. Three guilds per process, on both of its shards.
    channels = {standin.guild_id: standin.channel_id}  # guild -> channel

    def process_of(guild_id: int) -> int:
        return shard_of(guild_id, 4) // 2

    for index in (0, 1):
        while (count := sum(process_of(g) == index for g in channels)) < 3:
            guild_id, channel_id = await standin.add_guild(f"of process {index}", shard=(2 * index + count % 2, 4))
            channels[guild_id] = channel_id
    on_process = {index: [g for g in channels if process_of(g) == index] for index in (0, 1)}
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DISCORD_TOKEN": standin.token,
        "MOODRING_DISCORD_API": standin.api_base,
        "MOODRING_DISCORD_GATEWAY": standin.gateway_url,
        "MOODRING_DEV_GUILD_ID": str(standin.guild_id),
        "MOODRING_MODEL_DIR": str(model_dir),
        "MOODRING_DATABASE": database,
        "MOODRING_WORK_DIR": str(tmp_path / "runs"),
        "MOODRING_TRAIN_ON_START": "false",
        "MOODRING_BACKBONE": str(tiny_backbone_dir),
        "GOEMOTIONS_DIR": str(goemotions_dir),
        "MOODRING_RETRAIN_ARGS": TINY_ARGS,
        "MOODRING_RETRAIN_TOLERANCE": "1.0",  # any candidate passes: this is about the swap reaching both processes
    }
    # A daily summary in every guild whose slot passed 12 hours ago: due at once, and not again during the test.
    summary_hour = (time.gmtime().tm_hour - 12) % 24
    scheduled = list(channels.values())
    await add_schedules(database, [(g, channels[g]) for g in channels], summary_hour)
    log_file = tmp_path / "stderr.log"
    sent: Counter[int] = Counter()  # messages each guild's process should have analysed

    def started_pids(index: int) -> list[int]:
        shards = f"{2 * index}-{2 * index + 1}"
        found = re.findall(rf"process {index} \(shards {shards} of 4\) started \(pid (\d+)\)", log_file.read_text())
        return [int(pid) for pid in found]

    async def analysed() -> Counter[int]:
        """Messages analysed per guild, from the statistics the processes wrote to PostgreSQL."""
        connection = await asyncpg.connect(database)
        try:
            rows = await connection.fetch("SELECT guild_id, SUM(messages) FROM channel_buckets GROUP BY guild_id")
        finally:
            await connection.close()
        return Counter({guild_id: int(total) for guild_id, total in rows})

    async def post(guilds: list[int], text: str, *, analysed_by: list[int]) -> None:
        """A message in each of `guilds`; those in `analysed_by` must be analysed, exactly once."""
        for guild_id in guilds:
            await standin.dispatch_message(channels[guild_id], f"{text} in {guild_id}")
        sent.update(analysed_by)
        deadline = time.monotonic() + 60
        while (found := await analysed()) != sent:
            assert time.monotonic() < deadline, f"analysed {found}, expected {sent}"
            await asyncio.sleep(0.1)

    async def summaries_posted(expected: list[int]) -> None:
        """Wait until each channel of `expected` has a summary, then check that no scheduled channel has two."""
        await until(lambda: all(summary_posts(standin, c) for c in expected), 60, "the due summaries posted")
        assert {c: len(summary_posts(standin, c)) for c in scheduled} == dict.fromkeys(scheduled, 1)

    async def serving_models() -> list[str]:
        """The model each process says it serves (`/moodring settings` in a guild of process 0, then of 1)."""
        described = []
        for index in (0, 1):
            guild_id = on_process[index][0]
            asked = await standin.dispatch_slash_command(
                "moodring settings", guild_id=guild_id, channel_id=channels[guild_id], user=standin.owner_id
            )
            embed = (await standin.wait_for_interaction_response(asked, timeout=60)).json["data"]["embeds"][0]
            described.append(next(f["value"] for f in embed["fields"] if f["name"] == "Model"))
        return described

    async def answers() -> list[list[bool]]:
        """The ✅ marks of an /emotion answer in a guild of each process (0, then 1)."""
        marks = []
        for index in (0, 1):
            guild_id = on_process[index][0]
            asked = await standin.dispatch_slash_command(
                "emotion", {"text": TEXT}, guild_id=guild_id, channel_id=channels[guild_id]
            )
            marks.append(threshold_marks(await standin.wait_for_interaction_response(asked, timeout=60)))
        return marks

    before = [s.above_threshold for s in tiny_classifier.predict([clean_markup(TEXT)], top_k=5)[0].top]
    assert any(before)  # the second model marks none: the answers tell the models apart
    with open(log_file, "wb") as stderr:
        cluster = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "moodring", "cluster", "--processes", str(processes), env=env, stderr=stderr
        )
    try:
        await standin.wait_until_identified(4, timeout=120)  # no --shard-count: GET /gateway/bot's 4 shards
        assert sorted(s.shard for s in standin.sessions) == [(0, 4), (1, 4), (2, 4), (3, 4)]
        assert await answers() == [before, before]  # both processes are up, with the tiny model
        assert await serving_models() == [model_description(tiny_classifier)] * 2
        await summaries_posted(scheduled)
        await post(list(channels), "What a lovely day", analysed_by=list(channels))
        # A crash of process 0: its guilds go unanswered until the cluster has started it again; the others don't.
        (first,) = started_pids(0)
        os.kill(first, signal.SIGKILL)
        await until(lambda: not process_alive(first), 10, "the killed process gone")
        await post(list(channels), "Anyone there?", analysed_by=on_process[1])
        # A summary due in a new channel of a guild of the dead process: when it is posted, the restarted process
        # has been through every schedule once, and its own guilds' summaries, posted before the crash, stay single.
        late = await standin.add_text_channel("late-summary", guild_id=on_process[0][0])
        await add_schedules(database, [(on_process[0][0], late)], summary_hour)
        scheduled.append(late)
        await standin.wait_until_identified(6, timeout=120)  # its 2 shards again
        assert len(started_pids(0)) == 2 and len(started_pids(1)) == 1
        assert await answers() == [before, before]  # the restarted process answers
        await summaries_posted([late])
        await post(list(channels), "Welcome back", analysed_by=list(channels))
        # A retrain, started in process 1: it swaps, and process 0 loads the same model from the shared directory.
        asked = await standin.dispatch_slash_command(
            "moodring retrain", guild_id=on_process[1][0], channel_id=channels[on_process[1][0]], user=standin.owner_id
        )
        assert "Starting a retrain" in await confirm_retrain(standin, asked)  # Train, under the summary
        await until(lambda: "another process swapped in" in log_file.read_text(), 300, "process 0 serving the retrain")
        retrained = await asyncio.to_thread(EmotionClassifier.load, model_dir)
        assert model_description(retrained) != model_description(tiny_classifier)
        assert await serving_models() == [model_description(retrained)] * 2
        expected = [s.above_threshold for s in retrained.predict([clean_markup(TEXT)], top_k=5)[0].top]
        assert await answers() == [expected, expected]
        await summaries_posted(scheduled)
        cluster.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(cluster.wait(), 60) == 0
    finally:
        if cluster.returncode is None:
            cluster.kill()  # its processes stop by themselves (parent watch)
            await cluster.wait()
    log = log_file.read_text()
    assert "Traceback" not in log, log
    assert "Discord recommends 4 shards" in log and "restarting process 0 (shards 0-1 of 4) in 1.0 s" in log, log
    assert not any(process_alive(pid) for pid in [*started_pids(0), *started_pids(1), cluster.pid])
    assert "all 2 processes stopped" in log
    assert log.count("another process swapped in") == 1  # process 0; process 1 swapped it in itself


async def add_schedules(database: str, targets: list[tuple[int, int]], hour: int) -> None:
    """A daily summary at `hour` (UTC) into each (guild, channel), written to the cluster's database."""
    store = await open_store(database)
    try:
        for guild_id, channel_id in targets:
            await store.upsert_schedule(guild_id, channel_id, "daily", hour=hour)
    finally:
        await store.close()


def summary_posts(standin: DiscordStandIn, channel_id: int) -> list:
    return [
        r
        for r in standin.requests_to("POST", f"/channels/{channel_id}/messages")
        if any(e.get("title", "").startswith("Mood in") for e in (r.json or {}).get("embeds", []))
    ]


@pytest.mark.discord_standin(shard_count=2)
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_a_killed_supervisor_loses_no_more_analysed_messages_than_a_stopped_one(
    stop: signal.Signals,
    discord_standin: DiscordStandIn,
    postgres_url: str,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    """A real `moodring cluster --processes 2` stopped (SIGTERM) or killed outright (SIGKILL) while its `moodring run`s
    are analysing a burst: every message analysed is in PostgreSQL's totals, those buffered for the next flush included
    (each process flushes on the SIGTERM that the supervisor sends or, when it is killed, the parent watch), and every
    process is gone."""
    standin = discord_standin
    # 2 shards, one per process, and a guild on each.
    other = await standin.add_guild("of the other process", shard=(1 - shard_of(standin.guild_id, 2), 2))
    channels = {standin.guild_id: standin.channel_id, other[0]: other[1]}
    # Reactions on: a reaction request is the stand-in's sign that a message has been analysed (recorded first).
    store = await open_store(postgres_url)
    try:
        for guild_id, channel_id in channels.items():
            await store.set_channel_settings(guild_id, channel_id, reactions=True)
    finally:
        await store.close()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DISCORD_TOKEN": standin.token,
        "MOODRING_DISCORD_API": standin.api_base,
        "MOODRING_DISCORD_GATEWAY": standin.gateway_url,
        "MOODRING_MODEL_DIR": str(tiny_model_dir),
        "MOODRING_DATABASE": postgres_url,
        "MOODRING_WORK_DIR": str(tmp_path / "runs"),
        "MOODRING_TRAIN_ON_START": "false",
    }
    log_file = tmp_path / "stderr.log"

    async def stored() -> int:
        connection = await asyncpg.connect(postgres_url)
        try:
            return int(await connection.fetchval("SELECT COALESCE(SUM(messages), 0) FROM channel_buckets"))
        finally:
            await connection.close()

    def reactions() -> list[int]:
        """Reaction requests so far, per channel."""
        return [len(standin.requests_to("PUT", f"/channels/{c}/messages/")) for c in channels.values()]

    with open(log_file, "wb") as stderr:
        cluster = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "moodring", "cluster", "--processes", "2", env=env, stderr=stderr
        )
    try:
        await standin.wait_until_identified(2, timeout=120)
        for channel_id in channels.values():  # a first message each, flushed: both processes analyse and write
            await standin.dispatch_message(channel_id, "What a lovely day")
        deadline = time.monotonic() + 60
        while await stored() != len(channels):
            assert time.monotonic() < deadline, f"stored {await stored()} of {len(channels)}"
            await asyncio.sleep(0.05)
        reacted = reactions()
        burst = 10
        for n in range(burst):  # a burst, stopped while it is being analysed and before its flush
            for channel_id in channels.values():
                await standin.dispatch_message(channel_id, f"Thank you so much, this is wonderful! {n}")
        await until(
            lambda: all(now > then for now, then in zip(reactions(), reacted, strict=True)),
            60,
            "a message of the burst analysed in each guild",
        )
        cluster.send_signal(stop)
        status = await asyncio.wait_for(cluster.wait(), 60)
    finally:
        if cluster.returncode is None:
            cluster.kill()
            await cluster.wait()
    pids = [int(pid) for pid in re.findall(r"started \(pid (\d+)\)", log_file.read_text())]
    assert len(pids) == 2, log_file.read_text()
    await until(lambda: not any(process_alive(pid) for pid in pids), 30, "every process gone")
    log = log_file.read_text()
    assert status == (0 if stop == signal.SIGTERM else -signal.SIGKILL), log
    outcomes = [ast.literal_eval(c) for c in re.findall(r"closing; message outcomes since start: (\{.*\})", log)]
    assert len(outcomes) == 2, log  # each process stopped cleanly, by its own SIGTERM handling
    sent = len(channels) * (1 + burst)
    # Every message reached a process before it began to stop, and each one analysed by then is in the totals, those
    # buffered for the next flush included. A reading still queued for inference when the stop came is failed by
    # design ("the bot is shutting down", bot/inference.py close), either way: seen, never analysed, never counted.
    assert sum(o.get("messages_seen", 0) for o in outcomes) == sent, log
    assert sum(o.get("analyzed", 0) for o in outcomes) <= await stored() <= sent, log
    assert "Traceback" not in log, log
