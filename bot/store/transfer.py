"""`moodring db migrate-to postgresql://...`: copy a SQLite database into PostgreSQL, then check the copy.

Everything the store keeps is copied, table by table, in ONE PostgreSQL transaction: channel and guild settings
(retention, corrections opt-in), hourly statistics, summary schedules (their ids and last posts, so no summary is
posted twice), corrections and the salt of their member hashes (so a member still cannot correct a message twice),
and the members' opt-outs (their keyed hashes, which the same deployment key reads in PostgreSQL).
A PostgreSQL database that already holds the bot's data (any row but the store's own secrets) is refused, in that
transaction and before anything is written (``TargetNotEmpty``): the copy would overwrite its rows, and the counts
afterwards could not show it. With ``force`` rows are upserted by their key and overwrite what is there, so running it
again copies the same values again instead of adding them twice; a row that conflicts on another unique key (a
schedule for the same channel under another id) fails the whole copy, as one ``StoreError``, with nothing written.
Afterwards the row counts and the statistics totals of both databases are compared: they match when PostgreSQL holds
exactly the copy (stop the bot first; rows the bot wrote into PostgreSQL meanwhile show up as a mismatch).

The SQLite file is opened like a bot opens it (the one-bot lock refuses while a bot runs on it; an older schema is
migrated first), and PostgreSQL through the store, which creates or migrates its schema.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from bot.store.errors import PermanentStoreError
from bot.store.postgres import PostgresStore
from bot.store.schema import TABLES, Table
from bot.store.sqlite import SqliteStore

__all__ = ["TableCheck", "TargetNotEmpty", "copy_sqlite_to_postgres"]

#: What is copied: every table but the store's record of its own writes (``bookkeeping``: the flush ids).
COPIED = tuple(table for table in TABLES if table.group != "bookkeeping")


class TargetNotEmpty(PermanentStoreError):
    """The PostgreSQL database already holds the bot's data, and the copy was not forced."""


def _for_postgres(table: Table, row: tuple) -> tuple:
    """A SQLite row as PostgreSQL takes it (its 0/1 flags as booleans)."""
    pairs = zip(table.columns, row, strict=True)
    return tuple(bool(value) if column in table.booleans else value for column, value in pairs)


def _upsert(table: Table) -> str:
    placeholders = ", ".join(f"${i}" for i in range(1, len(table.columns) + 1))
    updates = ", ".join(f"{c} = excluded.{c}" for c in table.columns if c not in table.key)
    return (
        f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({placeholders}) "
        f"ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {updates}"
    )


@dataclass(frozen=True, slots=True)
class TableCheck:
    """One table after the copy: its rows and totals in SQLite and in PostgreSQL."""

    table: str
    sqlite_rows: int
    postgres_rows: int
    sqlite_totals: dict[str, float]
    postgres_totals: dict[str, float]

    @property
    def matches(self) -> bool:
        return self.sqlite_rows == self.postgres_rows and all(
            math.isclose(self.sqlite_totals[c], self.postgres_totals[c], rel_tol=1e-9, abs_tol=1e-9)
            for c in self.sqlite_totals
        )

    def describe(self) -> str:
        words = [f"{self.table}: {self.sqlite_rows} rows in SQLite, {self.postgres_rows} in PostgreSQL"]
        words += [f"{c} {self.sqlite_totals[c]:g} / {self.postgres_totals[c]:g}" for c in self.sqlite_totals]
        return "; ".join(words) + ("" if self.matches else "  <- MISMATCH")


def _summary_sql(table: Table) -> str:
    sums = "".join(f", COALESCE(SUM({c}), 0)" for c in table.counters)
    return f"SELECT COUNT(*){sums} FROM {table.name}"


async def _refuse_used_target(connection, name: str) -> None:
    """``TargetNotEmpty`` when a table of the bot's data (not its secrets) has a row."""
    used = []
    for table in COPIED:
        if table.group != "secrets":
            rows = await connection.fetchval(f"SELECT COUNT(*) FROM {table.name}")
            if rows:
                used.append(f"{table.name}: {rows} row{'s' if rows != 1 else ''}")
    if used:
        raise TargetNotEmpty(
            f"{name} already holds the bot's data ({', '.join(used)}); copying would overwrite those rows, and the "
            "counts afterwards could not show it. Copy into an empty database, or pass --force to overwrite them."
        )


async def copy_sqlite_to_postgres(sqlite_path: Path, url: str, *, force: bool = False) -> list[TableCheck]:
    """Copy every table of the SQLite file at ``sqlite_path`` into the PostgreSQL database at ``url`` (one
    transaction; into a database that holds the bot's data only with ``force``, overwriting), then compare both; one
    ``TableCheck`` per table. Raises ``TargetNotEmpty``, or ``StoreError`` when either database cannot be used or
    PostgreSQL refuses a row (nothing is written then)."""
    source = await SqliteStore.open(sqlite_path)
    try:
        target = await PostgresStore.open(url)
        try:
            async with target._connection() as connection, connection.transaction():
                if not force:
                    await _refuse_used_target(connection, target.name)
                for table in COPIED:
                    rows = await source._fetchall(f"SELECT {', '.join(table.columns)} FROM {table.name}", ())
                    rows = [_for_postgres(table, row) for row in rows]
                    if rows:
                        await connection.executemany(_upsert(table), rows)
                    if table.identity:
                        await connection.execute(
                            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                            f"GREATEST((SELECT MAX(id) FROM {table.name}), 1))"
                        )
            checks = []
            for table in COPIED:
                (mine,) = await source._fetchall(_summary_sql(table), ())
                theirs = await target._fetchrow(_summary_sql(table))
                checks.append(
                    TableCheck(
                        table.name,
                        int(mine[0]),
                        int(theirs[0]),
                        {c: float(v) for c, v in zip(table.counters, mine[1:], strict=True)},
                        {c: float(v) for c, v in zip(table.counters, theirs[1:], strict=True)},
                    )
                )
            return checks
        finally:
            await target.close()
    finally:
        await source.close()
