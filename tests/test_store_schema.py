"""The schema's one declaration (bot/store/schema.py) against what the migrations (bot/store/migrations/) really create,
on both engines: the same tables, the same columns in the same order, the same keys, and (in PostgreSQL's types) the
same flags and generated ids. A column added to a migration but not to the declaration fails here. Also: both
engines' migrations carry the same numbers, ship with the package, and the row readers match the data classes."""

from __future__ import annotations

import dataclasses
import sqlite3
import tomllib
from pathlib import Path

import asyncpg

from bot.store import Correction, Schedule, is_postgres_url, open_store
from bot.store.schema import CORRECTION_COLUMNS, SCHEDULE_COLUMNS, TABLES

REPO = Path(__file__).resolve().parents[1]
MIGRATIONS = REPO / "bot" / "store" / "migrations"
#: Kept by the PostgreSQL migration runner, not one of the store's tables.
RUNNER_TABLES = {"moodring_schema"}


def declared() -> dict[str, tuple[str, ...]]:
    return {table.name: table.columns for table in TABLES}


def sqlite_schema(path: str) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]], dict[str, set[str]]]:
    """Columns, primary keys and the columns of each type, per table, as SQLite reports them."""
    columns, keys, types = {}, {}, {}
    with sqlite3.connect(path) as con:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for name in names:
            info = con.execute(f"PRAGMA table_info({name})").fetchall()  # cid, name, type, notnull, default, pk
            columns[name] = tuple(row[1] for row in info)
            keys[name] = tuple(row[1] for row in sorted(info, key=lambda row: row[5]) if row[5])
            types[name] = {f"{row[1]} {row[2]}" for row in info}
    return columns, keys, types


async def postgres_schema(url: str) -> tuple[dict, dict, dict, dict]:
    """Columns, primary keys, BOOLEAN columns and identity columns, per table, from information_schema."""
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT table_name, column_name, data_type, is_identity FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        )
        key_rows = await connection.fetch(
            "SELECT k.table_name, k.column_name FROM information_schema.table_constraints AS c "
            "JOIN information_schema.key_column_usage AS k USING (constraint_schema, constraint_name) "
            "WHERE c.table_schema = 'public' AND c.constraint_type = 'PRIMARY KEY' "
            "ORDER BY k.table_name, k.ordinal_position"
        )
    finally:
        await connection.close()
    columns: dict[str, tuple[str, ...]] = {}
    booleans: dict[str, tuple[str, ...]] = {}
    identities: dict[str, tuple[str, ...]] = {}
    for table, column, data_type, identity in rows:
        columns[table] = (*columns.get(table, ()), column)
        booleans.setdefault(table, ())
        identities.setdefault(table, ())
        if data_type == "boolean":
            booleans[table] += (column,)
        if identity == "YES":
            identities[table] += (column,)
    keys: dict[str, tuple[str, ...]] = {}
    for table, column in key_rows:
        keys[table] = (*keys.get(table, ()), column)
    return columns, keys, booleans, identities


async def test_the_declaration_is_what_the_migrations_create(store_database: str) -> None:
    await (await open_store(store_database)).close()  # every migration applied to an empty database
    if is_postgres_url(store_database):
        columns, keys, booleans, identities = await postgres_schema(store_database)
        for table in RUNNER_TABLES:
            columns.pop(table)
        assert columns == declared()
        assert {t: keys.get(t, ()) for t in columns} == {t.name: t.key for t in TABLES}
        assert {t: booleans[t] for t in columns} == {t.name: t.booleans for t in TABLES}
        assert {t: identities[t] for t in columns} == {t.name: ("id",) if t.identity else () for t in TABLES}
    else:
        columns, keys, types = sqlite_schema(store_database)
        assert columns == declared()
        assert keys == {t.name: t.key for t in TABLES}
        for table in TABLES:  # a flag is a 0/1 INTEGER; a generated id is the rowid (INTEGER PRIMARY KEY)
            assert {f"{c} INTEGER" for c in table.booleans} <= types[table.name], table.name
            assert ("id INTEGER" in types[table.name] and table.key == ("id",)) == table.identity, table.name
    for table in TABLES:
        assert set(table.key) | set(table.booleans) | set(table.counters) <= set(table.columns), table.name


def test_both_engines_have_the_same_migration_numbers() -> None:
    def numbers(engine: str) -> list[int]:
        return sorted(int(path.name.split("_", 1)[0]) for path in (MIGRATIONS / engine).glob("*.sql"))

    assert numbers("sqlite") == numbers("postgres") == list(range(1, len(numbers("sqlite")) + 1))


def test_the_migrations_ship_with_the_package() -> None:
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["bot"]
    shipped = {path for pattern in package_data for path in (REPO / "bot").glob(pattern)}
    assert set(MIGRATIONS.rglob("*.sql")) <= shipped and shipped


def test_the_row_readers_read_the_columns_of_the_data_classes() -> None:
    """`schedule_from_row` and `correction_from_row` read rows by position: the declared order is the fields'."""
    assert SCHEDULE_COLUMNS.split(", ") == [f.name for f in dataclasses.fields(Schedule)]
    assert CORRECTION_COLUMNS.split(", ") == [f.name for f in dataclasses.fields(Correction)]
