"""The mood alerts' part of the store (migration 8), on both engines: the settings, the counter of watched messages
per channel and hour (counted at the flush for guilds with alerts on, restarted when the watched emotions change,
pruned with the statistics, deleted by both guild deletions), the alert claim (one winner per cooldown, also when
two stores race for it, refused while snoozed) and the moderators' actions."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path

import pytest
from postgres_fixtures import raw_rows

from bot.store import AlertChannel, AlertCounts, is_postgres_url, open_store
from bot.store.sqlite import MIGRATIONS

REPO = Path(__file__).resolve().parents[1]
H = 3600
T0 = 1_800_000_000 - 1_800_000_000 % H  # a whole hour
WATCHED = ("anger", "annoyance")


async def alerts_on(store, guild: int = 1, labels: tuple[str, ...] = WATCHED, enabled: bool = True):
    return await store.set_alert_settings(
        guild, mod_channel_id=50, labels=labels, sensitivity="medium", role_id=None, enabled=enabled
    )


async def test_the_counter_counts_watched_messages_of_guilds_with_alerts_on(store_database: str) -> None:
    async with await open_store(store_database, flush_interval=3600) as store:
        assert await store.alert_settings(1) is None
        saved = await alerts_on(store, labels=("annoyance", "anger", "anger"))
        assert saved.labels == WATCHED and saved.enabled and saved.role_id is None
        store.record(1, 2, [("anger", 0.9), ("sadness", 0.6)], at=T0 + 10)  # one message with two watched labels..
        store.record(1, 2, [("annoyance", 0.9), ("anger", 0.7)], at=T0 + 20)  # ..counts once
        store.record(1, 2, [("joy", 0.9)], at=T0 + 30)
        store.record(1, 2, [], at=T0 + H)  # nothing above threshold: analysed, not watched
        store.record(1, 3, [("anger", 0.8)], at=T0 + 2 * H)
        store.record(7, 2, [("anger", 0.8)], at=T0)  # a guild without alerts: nothing counted for it
        await store.flush()
        counts = await store.alert_counts(1, T0, T0 + H, T0 + 3 * H)
        assert counts == {
            2: (AlertCounts(3, 2), AlertCounts(1, 0)),
            3: (AlertCounts(), AlertCounts(1, 1)),
        }
        assert await store.alert_counts(7, 0, T0, T0 + 9 * H) == {}
        assert await raw_rows(store_database, "SELECT COUNT(*) FROM alert_buckets WHERE guild_id = 7") == [(0,)]

        # The same labels again keep the counter; others restart it (a baseline never mixes two sets).
        await alerts_on(store, labels=WATCHED)
        assert await store.alert_counts(1, 0, T0, T0 + 9 * H) != {}
        await alerts_on(store, labels=("disgust",))
        assert await store.alert_counts(1, 0, T0, T0 + 9 * H) == {}
        store.record(1, 2, [("anger", 0.9)], at=T0 + 3 * H)
        store.record(1, 2, [("disgust", 0.9)], at=T0 + 3 * H)
        await store.flush()
        assert await store.alert_counts(1, 0, T0, T0 + 9 * H) == {2: (AlertCounts(), AlertCounts(2, 1))}

        # Off: no longer counted, and the settings say so.
        await alerts_on(store, labels=("disgust",), enabled=False)
        store.record(1, 2, [("disgust", 0.9)], at=T0 + 3 * H)
        await store.flush()
        assert await store.alert_counts(1, 0, T0, T0 + 9 * H) == {2: (AlertCounts(), AlertCounts(2, 1))}
        assert await store.enabled_alert_settings() == []
        with pytest.raises(ValueError):
            await alerts_on(store, labels=())


async def test_another_process_turning_alerts_on_is_counted_after_the_next_read(store_database: str) -> None:
    async with (
        await open_store(store_database, flush_interval=3600, exclusive=False) as first,
        await open_store(store_database, flush_interval=3600, exclusive=False) as second,
    ):
        await alerts_on(second)
        first.record(1, 2, [("anger", 0.9)], at=T0)
        await first.flush()  # it has not read the settings since they changed: not counted yet
        assert await first.alert_counts(1, 0, T0, T0 + H) == {}
        assert [s.guild_id for s in await first.enabled_alert_settings()] == [1]  # what the alert loop reads
        first.record(1, 2, [("anger", 0.9)], at=T0)
        await first.flush()
        assert await first.alert_counts(1, 0, T0, T0 + H) == {2: (AlertCounts(), AlertCounts(1, 1))}


async def test_a_read_of_the_settings_that_a_change_overtook_does_not_undo_it(store_database: str) -> None:
    """The alert loop's read began before an admin's change and ended after it: the change is still counted (it
    failed before: the read's older answer wiped the watched emotions until the next read)."""
    async with await open_store(store_database, flush_interval=3600) as store:
        read = store._enabled_alert_settings

        async def overtaken() -> list:
            before = await read()  # nothing on yet
            await alerts_on(store)  # meanwhile, this store's own change
            return before

        store._enabled_alert_settings = overtaken
        assert await store.enabled_alert_settings() == []
        store._enabled_alert_settings = read
        store.record(1, 2, [("anger", 0.9)], at=T0)
        await store.flush()
        assert await store.alert_counts(1, 0, T0, T0 + H) == {2: (AlertCounts(), AlertCounts(1, 1))}


async def test_alerts_are_switched_off_once(store_database: str) -> None:
    async with await open_store(store_database) as store:
        await alerts_on(store)
        assert await store.disable_alerts(1, "its channel was deleted")
        assert not await store.disable_alerts(1, "its channel was deleted")  # told once
        saved = await store.alert_settings(1)
        assert not saved.enabled and saved.disabled_reason == "its channel was deleted"
        assert (await alerts_on(store)).disabled_reason is None  # set up again: on, no reason


async def test_one_alert_per_cooldown_and_none_while_snoozed(store_database: str) -> None:
    async with await open_store(store_database) as store:
        await alerts_on(store)
        assert await store.claim_alert(1, 2, since=T0 - 6 * H, at=T0)
        assert not await store.claim_alert(1, 2, since=T0 - 6 * H, at=T0 + 60)  # inside the cooldown
        assert await store.claim_alert(1, 3, since=T0 - 6 * H, at=T0 + 60)  # another channel has its own
        assert await store.release_alert(1, 3, T0 + 60, None)  # Discord refused it: given back
        assert await store.claim_alert(1, 3, since=T0 - 6 * H, at=T0 + 120)

        state = await store.update_alert_channel(1, 2, acknowledged_at=T0 + 5)
        assert state == AlertChannel(1, 2, None, 0, T0, T0 + 5)
        state = await store.update_alert_channel(1, 2, snoozed_until=T0 + 24 * H, more_steps=1)
        assert (state.snoozed_until, state.steps, state.acknowledged_at) == (T0 + 24 * H, 1, T0 + 5)
        assert not await store.claim_alert(1, 2, since=T0 + 12 * H, at=T0 + 23 * H)  # after the cooldown: snoozed
        assert await store.claim_alert(1, 2, since=T0 + 18 * H, at=T0 + 24 * H)
        assert (await store.alert_channels(1))[2] == AlertChannel(1, 2, T0 + 24 * H, 1, T0 + 24 * H, None)
        assert (await store.update_alert_channel(1, 9, more_steps=1)).steps == 1  # a channel never alerted


async def test_two_stores_racing_for_an_alert_claim_it_once(store_database: str) -> None:
    async with (
        await open_store(store_database, exclusive=False) as first,
        await open_store(store_database, exclusive=False) as second,
    ):
        await alerts_on(first)
        for attempt in range(5):
            at = T0 + attempt * 7 * H
            won = await asyncio.gather(
                *(store.claim_alert(1, 2, since=at - 6 * H, at=at) for store in (first, second, first, second))
            )
            assert sorted(won) == [False, False, False, True]


CLAIMING_CHILD = """
import asyncio, sys
from pathlib import Path
from bot.store import open_store

async def main(database, ready, go, windows):
    store = await open_store(database, exclusive=False)
    try:
        Path(ready).touch()
        while not Path(go).exists():  # the barrier: both children claim at once
            await asyncio.sleep(0.001)
        for window in range(int(windows)):
            at = 1_800_000_000 + window * 7 * 3600
            if await store.claim_alert(1, 2, since=at - 6 * 3600, at=at):
                print(window, flush=True)
    finally:
        await store.close()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_two_processes_claim_each_alert_once(store_database: str, tmp_path) -> None:
    """Two processes on one database race for 20 cooldown windows of one channel: each is won exactly once."""
    async with await open_store(store_database, exclusive=False) as store:
        await alerts_on(store)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    go = tmp_path / "go"
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLAIMING_CHILD, store_database, str(tmp_path / f"ready{i}"), str(go), "20",
            cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        for i in range(2)
    ]  # fmt: skip
    try:
        async with asyncio.timeout(60):
            while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
                await asyncio.sleep(0.01)
            go.touch()
            outputs = [await child.communicate() for child in children]
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
    assert [child.returncode for child in children] == [0, 0], [err.decode() for _, err in outputs]
    won = [int(line) for out, _ in outputs for line in out.split()]
    assert sorted(won) == list(range(20))  # every window once, by one process or the other


async def test_guild_deletions_and_the_prune_reach_the_alerts(store_database: str) -> None:
    async with await open_store(store_database, flush_interval=3600) as store:
        for guild in (1, 2):
            await alerts_on(store, guild)
            store.record(guild, 5, [("anger", 0.9)], at=T0)
            await store.claim_alert(guild, 5, since=T0 - H, at=T0)
        store.record(1, 5, [("anger", 0.9)], at=T0 + 100 * 86400)  # recent: kept by the prune
        await store.flush()
        await store.prune(T0 + 100 * 86400)  # the default 90 days: the first hour goes
        assert await store.alert_counts(1, 0, T0, T0 + 101 * 86400) == {5: (AlertCounts(), AlertCounts(1, 1))}

        await store.forget_guild(1)  # statistics: the counter goes, the settings stay
        assert await store.alert_counts(1, 0, T0, T0 + 101 * 86400) == {}
        assert await store.alert_settings(1) is not None

        store.record(2, 5, [("anger", 0.9)], at=T0 + 100 * 86400)
        await store.flush()
        await store.remove_guild(2)  # everything of the guild
        store.record(2, 5, [("anger", 0.9)], at=T0 + 100 * 86400)  # no longer watched: not counted
        await store.flush()
        for table in ("alert_settings", "alert_channels", "alert_buckets"):
            assert await raw_rows(store_database, f"SELECT COUNT(*) FROM {table} WHERE guild_id = 2") == [(0,)]
        assert await store.alert_settings(1) is not None and await store.alert_channels(1) != {}


async def test_a_version_7_file_migrates_to_alerts(tmp_path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as con:
        for script in MIGRATIONS[:7]:
            con.executescript(script)
        con.execute("PRAGMA user_version = 7")
        con.execute("INSERT INTO guild_settings (guild_id, retention_days) VALUES (1, 30)")
    async with await open_store(str(path)) as store:
        assert not is_postgres_url(store.name)
        assert await store.retention_days(1) == 30 and await store.alert_settings(1) is None
        await alerts_on(store)
        assert (await store.alert_settings(1)).labels == WATCHED
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 8
