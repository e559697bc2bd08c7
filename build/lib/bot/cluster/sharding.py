"""Shards and clusters: which process owns which guild, shard ranges, and the database engine a cluster needs.

Discord routes each guild's events to one shard: `(guild_id >> 22) % shard_count`. A cluster is several
`moodring run` processes, each running some of the shards. Work that is per guild but not started by an event
(scheduled summaries) must run only where the guild's shard runs, and cluster-wide work (the retention prune) in
exactly one process: the one that runs shard 0. Standard library only, so the settings can use it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from bot.store import is_postgres_url

#: The shard that does the cluster-wide work (the daily retention prune); every cluster has exactly one.
CLUSTER_WORK_SHARD = 0


class ShardSpecError(ValueError):
    """A shard list that cannot be used; the message says what is wrong."""


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard that receives a guild's events (Discord's rule)."""
    return (guild_id >> 22) % shard_count


def owns_guild(guild_id: int, shard_ids: Collection[int] | None, shard_count: int | None) -> bool:
    """Whether a process running `shard_ids` of `shard_count` shards owns `guild_id`.

    `shard_ids` None means all the shards (one process runs them all); so does an unknown `shard_count`.
    """
    if shard_ids is None or not shard_count:
        return True
    return shard_of(guild_id, shard_count) in shard_ids


def runs_cluster_work(shard_ids: Collection[int] | None) -> bool:
    """Whether this process does the cluster-wide work: it runs `CLUSTER_WORK_SHARD` (or all the shards)."""
    return shard_ids is None or CLUSTER_WORK_SHARD in shard_ids


def parse_shard_ids(text: str) -> tuple[int, ...]:
    """`"0-3"` -> (0, 1, 2, 3); `"0,2,5"` -> (0, 2, 5); `"0-1,4"` -> (0, 1, 4). Sorted, without duplicates.

    ShardSpecError for anything else (empty parts, negative numbers, a range that runs backwards).
    """
    ids: set[int] = set()
    for part in text.replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if not (first.isdigit() and (last.isdigit() if dash else not last)):
            raise ShardSpecError(f"expected shard ids like 0-3 or 0,2,5, got {text!r}")
        start, end = int(first), int(last) if dash else int(first)
        if end < start:
            raise ShardSpecError(f"the range {part} runs backwards (write {end}-{start})")
        ids.update(range(start, end + 1))
    return tuple(sorted(ids))


def check_shard_ids(shard_ids: Sequence[int], shard_count: int) -> None:
    """ShardSpecError unless every id is below `shard_count`."""
    if shard_count < 1:
        raise ShardSpecError(f"the shard count must be at least 1, got {shard_count}")
    too_big = [i for i in shard_ids if i >= shard_count]
    if too_big:
        raise ShardSpecError(
            f"shard ids run from 0 to {shard_count - 1} with {shard_count} shards; "
            f"{', '.join(map(str, too_big))} {'is' if len(too_big) == 1 else 'are'} out of range"
        )


def format_shard_ids(shard_ids: Sequence[int]) -> str:
    """The shortest form `parse_shard_ids` reads back: (0, 1, 2, 5) -> "0-2,5"."""
    parts: list[str] = []
    ids = sorted(shard_ids)
    start = 0
    for index in range(1, len(ids) + 1):
        if index == len(ids) or ids[index] != ids[index - 1] + 1:
            first, last = ids[start], ids[index - 1]
            parts.append(str(first) if first == last else f"{first}-{last}")
            start = index
    return ",".join(parts)


def split_shards(shard_ids: Sequence[int], processes: int) -> list[tuple[int, ...]]:
    """Deal `shard_ids` to `processes` processes in contiguous runs, as evenly as possible (the first get more).

    ShardSpecError when there are fewer shards than processes: a process without a shard would do nothing.
    """
    if processes < 1:
        raise ShardSpecError(f"--processes must be at least 1, got {processes}")
    if len(shard_ids) < processes:
        raise ShardSpecError(
            f"{processes} processes need at least {processes} shards, but there are {len(shard_ids)}; "
            "use fewer processes or a larger shard count"
        )
    size, extra = divmod(len(shard_ids), processes)
    runs, start = [], 0
    for index in range(processes):
        end = start + size + (index < extra)
        runs.append(tuple(shard_ids[start:end]))
        start = end
    return runs


def check_cluster_database(
    database: str | Path, shard_ids: Collection[int] | None, shard_count: int | None, processes: int = 1
) -> None:
    """ShardSpecError when an SQLite database would be used by more than one process.

    A process is one of several when `processes` > 1, or when it runs only some of the shards (the others must be
    running elsewhere). SQLite allows one writing process: a cluster needs PostgreSQL.
    """
    partial = shard_ids is not None and shard_count is not None and set(shard_ids) != set(range(shard_count))
    if is_postgres_url(database) or not (processes > 1 or partial):
        return
    who = f"a cluster of {processes} processes" if processes > 1 else "a process that runs only some of the shards"
    raise ShardSpecError(
        f"MOODRING_DATABASE is an SQLite file ({database}), which only one process can use, but this is {who}. "
        "Set MOODRING_DATABASE to a postgresql:// URL, or run all the shards in one process."
    )
