"""`moodring db migrate-to postgresql://...`: copy a SQLite database into PostgreSQL, then check the copy.

Everything the store keeps is copied, table by table, in ONE PostgreSQL transaction: channel and guild settings
(retention, corrections opt-in), hourly statistics, summary schedules (their ids and last posts, so no summary is
posted twice), corrections and the salt of their member hashes (so a member still cannot correct a message twice).
Rows are upserted by their key and overwrite what is there, so running it again copies the same values again
instead of adding them twice. Afterwards the row counts and the statistics totals of both databases are compared:
they match when PostgreSQL holds exactly the copy (stop the bot first; rows the bot wrote into PostgreSQL meanwhile
show up as a mismatch).

The SQLite file is opened like a bot opens it (the one-bot lock refuses while a bot runs on it; an older schema is
migrated first), and PostgreSQL through the store, which creates or migrates its schema.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from bot.store.postgres import PostgresStore
from bot.store.schema import TABLES, Table
from bot.store.sqlite import SqliteStore

__all__ = ["TableCheck", "copy_sqlite_to_postgres"]


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


async def copy_sqlite_to_postgres(sqlite_path: Path, url: str) -> list[TableCheck]:
    """Copy every table of the SQLite file at ``sqlite_path`` into the PostgreSQL database at ``url`` (one
    transaction, idempotent), then compare both; one ``TableCheck`` per table. Raises ``StoreError`` when either
    database cannot be used."""
    source = await SqliteStore.open(sqlite_path)
    try:
        target = await PostgresStore.open(url)
        try:
            async with target._connection() as connection, connection.transaction():
                for table in TABLES:
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
            for table in TABLES:
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
