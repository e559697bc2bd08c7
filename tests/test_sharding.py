"""Shard ownership, shard lists and their settings, and the refusal to share an SQLite file between processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bot.cluster.sharding import (
    ShardSpecError,
    check_cluster_database,
    format_shard_ids,
    owns_guild,
    parse_shard_ids,
    runs_cluster_work,
    shard_of,
    split_shards,
)
from bot.config import BotConfig, ConfigError

# Guild ids whose shard (out of 4) is known: the shard is in the bits from 22 up.
GUILD_ON = {shard: (1_000 * 4 + shard) << 22 | 0x1234 for shard in range(4)}


def test_a_guild_belongs_to_the_shard_discord_sends_it_to() -> None:
    assert [shard_of(GUILD_ON[s], 4) for s in range(4)] == [0, 1, 2, 3]
    assert shard_of(81384788765712384, 1) == 0
    assert shard_of(81384788765712384, 4) == (81384788765712384 >> 22) % 4


def test_a_process_owns_the_guilds_of_its_shards() -> None:
    assert [owns_guild(GUILD_ON[s], {1, 2}, 4) for s in range(4)] == [False, True, True, False]
    assert [owns_guild(GUILD_ON[s], [0], 4) for s in range(4)] == [True, False, False, False]
    assert all(owns_guild(GUILD_ON[s], None, 4) for s in range(4))  # all the shards
    assert all(owns_guild(GUILD_ON[s], None, None) for s in range(4))  # one process, count not known yet


def test_cluster_wide_work_runs_in_the_process_of_shard_zero() -> None:
    assert runs_cluster_work(None) and runs_cluster_work((0, 1)) and runs_cluster_work([0])
    assert not runs_cluster_work((1,)) and not runs_cluster_work((2, 3))
    # Every split of the shards has exactly one such process.
    for processes in (1, 2, 3, 4):
        assert sum(runs_cluster_work(run) for run in split_shards(range(4), processes)) == 1


@pytest.mark.parametrize(
    ("text", "ids"),
    [("0", (0,)), ("0-3", (0, 1, 2, 3)), ("0,2,5", (0, 2, 5)), ("5,0-1,1", (0, 1, 5)), (" 2 - 3 ", (2, 3))],
)
def test_shard_lists_parse(text: str, ids: tuple[int, ...]) -> None:
    assert parse_shard_ids(text) == ids
    assert parse_shard_ids(format_shard_ids(ids)) == ids


@pytest.mark.parametrize("text", ["", "a", "-1", "1-", "-", "0,,1", "0-1-2", "1.5", "3-1", "0;1"])
def test_bad_shard_lists_are_refused(text: str) -> None:
    with pytest.raises(ShardSpecError, match=r"shard ids like 0-3|runs backwards"):
        parse_shard_ids(text)


def test_shards_are_split_in_contiguous_runs() -> None:
    assert split_shards(range(8), 2) == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert split_shards(range(5), 2) == [(0, 1, 2), (3, 4)]
    assert split_shards((4, 5, 6), 3) == [(4,), (5,), (6,)]
    with pytest.raises(ShardSpecError, match="3 processes need at least 3 shards, but there are 2"):
        split_shards(range(2), 3)


def test_shard_settings_are_read_and_checked() -> None:
    config = BotConfig.from_env({"DISCORD_TOKEN": "x", "MOODRING_SHARD_COUNT": "8", "MOODRING_SHARD_IDS": "0-3"})
    assert (config.shard_count, config.shard_ids) == (8, (0, 1, 2, 3))
    plain = BotConfig.from_env({"DISCORD_TOKEN": "x"})
    assert (plain.shard_count, plain.shard_ids) == (None, None)
    with pytest.raises(ConfigError, match=r"MOODRING_SHARD_IDS \(--shards\) needs MOODRING_SHARD_COUNT"):
        BotConfig.from_env({"DISCORD_TOKEN": "x", "MOODRING_SHARD_IDS": "0-3"})
    with pytest.raises(ConfigError, match="shard ids run from 0 to 3 with 4 shards; 4, 5 are out of range"):
        BotConfig.from_env({"DISCORD_TOKEN": "x", "MOODRING_SHARD_COUNT": "4", "MOODRING_SHARD_IDS": "2-5"})
    with pytest.raises(ConfigError, match="MOODRING_SHARD_IDS: expected shard ids like 0-3"):
        BotConfig.from_env({"DISCORD_TOKEN": "x", "MOODRING_SHARD_COUNT": "4", "MOODRING_SHARD_IDS": "all"})
    with pytest.raises(ConfigError, match="MOODRING_SHARD_COUNT must be at least 1"):
        BotConfig.from_env({"DISCORD_TOKEN": "x", "MOODRING_SHARD_COUNT": "0"})


def test_only_postgresql_may_be_shared_by_processes() -> None:
    check_cluster_database("data/m.sqlite3", None, None)  # one process, all shards
    check_cluster_database("data/m.sqlite3", (0, 1), 2)  # one process, every shard listed
    check_cluster_database("postgresql://db/m", (0,), 2, processes=4)
    with pytest.raises(ShardSpecError, match=r"SQLite file \(data/m.sqlite3\).*a cluster of 2 processes"):
        check_cluster_database("data/m.sqlite3", None, None, processes=2)
    with pytest.raises(ShardSpecError, match=r"runs only some of the shards.*postgresql:// URL"):
        check_cluster_database("data/m.sqlite3", (1,), 2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["cluster", "--processes", "2"], "a cluster of 2 processes"),
        (["run", "--shards", "1", "--shard-count", "2"], "a process that runs only some of the shards"),
    ],
)
def test_sqlite_refuses_a_cluster_at_start_up(tmp_path, argv: list[str], message: str) -> None:
    """One line on stderr, status 2, before anything connects (there is no Discord here to connect to)."""
    env = {
        **os.environ,
        "DISCORD_TOKEN": "x",
        "MOODRING_DATABASE": str(tmp_path / "db.sqlite3"),
        "MOODRING_MODEL_DIR": str(tmp_path / "no-model"),
        "MOODRING_DISCORD_API": "http://127.0.0.1:9/api/v10",  # the discard port: nothing must be asked
        "MOODRING_DISCORD_GATEWAY": "ws://127.0.0.1:9/gateway",
    }
    result = subprocess.run(
        [sys.executable, "-m", "moodring", *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("moodring: MOODRING_DATABASE is an SQLite file") and message in line, line
    assert "postgresql://" in line and not (tmp_path / "db.sqlite3").exists()


def test_shard_flags_are_checked_by_the_parser(tmp_path) -> None:
    env = {**os.environ, "DISCORD_TOKEN": "x"}
    for argv, message in [
        (["run", "--shards", "3-1"], "argument --shards: the range 3-1 runs backwards"),
        (["run", "--shard-count", "0"], "argument --shard-count: must be a whole number of at least 1"),
        (["cluster", "--processes", "0"], "argument --processes: must be a whole number of at least 1"),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "moodring", *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2 and message in result.stderr.strip().splitlines()[-1], result.stderr
