"""The SQLite engine of the store (the default): one file, one aiosqlite connection.

The file is in WAL mode with ``synchronous=NORMAL``: a committed transaction survives a crash of the bot process
(SIGKILL, OOM, an exception), and SQLite's transactions mean a crash never leaves a half-written or corrupt file.
The schema version is SQLite's ``user_version``.

One bot per file: ``open`` takes an advisory lock (``flock``) on ``<file>.lock`` for the store's lifetime,
so a second bot on the same file is refused with a ``StoreError`` naming it. Start-up problems (a missing
or unwritable directory, a read-only, locked or damaged file) are ``StoreError``s that say what to do.

Every ``sqlite3.Error`` leaves the store as a ``StoreError`` (bot/store/errors.py): transient for a lock held past
``busy_timeout`` and a full, read-only or failing disk; permanent for the rest (a damaged file, a missing table, a
constraint). The migrations are bot/store/migrations/sqlite/*.sql.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import aiosqlite

from bot.store.errors import PermanentStoreError, StoreError, TransientStoreError
from bot.store.interface import (
    DEFAULT_CHANNEL_SETTINGS,
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_MAX_PENDING,
    DEFAULT_RETENTION_DAYS,
    FLUSH_IDS_KEPT_S,
    SALT_SECRET,
    AlertChannel,
    AlertCounts,
    AlertRows,
    AlertSettings,
    ChannelRows,
    ChannelSettings,
    Correction,
    CorrectionOutcome,
    EmotionRows,
    MemberCorrection,
    MoodSummary,
    Schedule,
    ScheduleKind,
    Store,
    alert_settings_from_row,
    check_correction,
    correction_from_row,
    counts_by_channel,
    make_directory,
    member_correction_from_row,
    schedule_from_row,
    summary_from_rows,
    timeline_from_rows,
)
from bot.store.member_key import rehash
from bot.store.migrate import MigrationTarget, load_scripts, migrate
from bot.store.schema import (
    ALERT_CHANNEL_COLUMNS,
    ALERT_SETTINGS_COLUMNS,
    CORRECTION_COLUMNS,
    SCHEDULE_COLUMNS,
    STATISTICS_TABLES,
)

__all__ = ["MIGRATIONS", "SqliteStore"]

log = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT_MS = 5_000

#: MIGRATIONS[i] upgrades a file from user_version i to i + 1 (bot/store/migrations/sqlite/, see bot.store.migrate).
MIGRATIONS: list[str] = load_scripts("sqlite")
#: SQLite's primary result codes of an outage: a lock held past busy_timeout, a full, read-only or failing disk.
TRANSIENT_CODES = frozenset(
    {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR}
)


_UPSERT_CHANNEL_BUCKET = """
    INSERT INTO channel_buckets (guild_id, channel_id, bucket_start, messages) VALUES (?, ?, ?, ?)
    ON CONFLICT (guild_id, channel_id, bucket_start) DO UPDATE SET messages = messages + excluded.messages
"""
_UPSERT_EMOTION_BUCKET = """
    INSERT INTO emotion_buckets (guild_id, channel_id, bucket_start, label, count, score_sum)
    VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (guild_id, channel_id, bucket_start, label)
    DO UPDATE SET count = count + excluded.count, score_sum = score_sum + excluded.score_sum
"""
_UPSERT_ALERT_BUCKET = """
    INSERT INTO alert_buckets (guild_id, channel_id, bucket_start, messages, watched) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (guild_id, channel_id, bucket_start)
    DO UPDATE SET messages = messages + excluded.messages, watched = watched + excluded.watched
"""


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (sqlite3 cannot run a script inside an open transaction)."""
    statements: list[str] = []
    current = ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \t\r\n;"):
                statements.append(current.strip())
            current = ""
    rest = current[:-1].strip()
    if rest:
        statements.append(rest)
    return statements


def _code(error: sqlite3.Error) -> int:
    """The primary result code of an error (0 when SQLite gave none)."""
    return getattr(error, "sqlite_errorcode", 0) & 0xFF


def _kind(error: sqlite3.Error) -> type[StoreError]:
    return TransientStoreError if _code(error) in TRANSIENT_CODES else PermanentStoreError


def _filter(guild_id: int, channel_id: int | None, since: float, until: float) -> tuple[str, list[object]]:
    """WHERE clause and parameters for one guild (or one of its channels) and buckets in [since, until)."""
    if channel_id is None:
        return "guild_id = ? AND bucket_start >= ? AND bucket_start < ?", [guild_id, since, until]
    return (
        "guild_id = ? AND channel_id = ? AND bucket_start >= ? AND bucket_start < ?",
        [guild_id, channel_id, since, until],
    )


class SqliteStore(Store):
    """The store in one SQLite file, through one aiosqlite connection (every statement holds ``_lock``)."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: str,
        *,
        flush_interval: float,
        max_pending: int,
        lock_fd: int | None = None,
        settings: dict[tuple[int, int], ChannelSettings] | None = None,
    ) -> None:
        super().__init__(path, flush_interval=flush_interval, max_pending=max_pending, settings=settings or {})
        self._db = db
        self._lock_fd = lock_fd  # holds the one-bot-per-file lock until close

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_pending: int = DEFAULT_MAX_PENDING,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        exclusive: bool = True,
        member_key: bytes | None = None,
        opt_out_refresh_s: float | None = None,
    ) -> SqliteStore:
        """Open (creating it and its parent directories if needed) and migrate the file, read the opt-outs, start the
        flusher (and, with ``opt_out_refresh_s``, the poll that reads the opt-outs other programs on the file changed).

        ``member_key`` hashes members (bot/store/member_key.py; the bot reads it from its file, made on first run
        for SQLite); without it the store keeps no correction, and the first open with it of a file from before the
        key replaces each hash by HMAC(key, old hash) and deletes the salt.

        ``exclusive`` takes the one-bot-per-file lock; ``False`` is for a program that shares the file with a
        running bot. Raises ``StoreError`` naming the file and what to do when the directory cannot be
        created or written, another bot holds the file, or SQLite finds it read-only, locked or damaged.
        """
        if flush_interval <= 0 or max_pending < 1 or busy_timeout_ms < 0:
            raise ValueError("flush_interval must be > 0, max_pending >= 1 and busy_timeout_ms >= 0")
        if opt_out_refresh_s is not None and opt_out_refresh_s <= 0:
            raise ValueError("opt_out_refresh_s must be > 0")
        path = os.fspath(path)
        lock_fd = None
        if path != ":memory:":
            make_directory(path)
            if exclusive:
                lock_fd = _lock(path)
        try:
            db, settings = await _connect(path, busy_timeout_ms, member_key)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        store = cls(
            db, path, flush_interval=flush_interval, max_pending=max_pending, lock_fd=lock_fd, settings=settings
        )
        store.member_key = member_key
        await store._open(opt_out_refresh_s)
        return store

    async def _disconnect(self) -> None:
        try:
            with self._driver_errors():
                await self._db.close()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the lock
                self._lock_fd = None

    @contextlib.contextmanager
    def _driver_errors(self) -> Iterator[None]:
        """SQLite's errors in the block leave as the store's (the engine's boundary: every statement runs in one)."""
        try:
            yield
        except sqlite3.Error as error:
            raise _kind(error)(f"{self.name}: {error}") from error

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction. IMMEDIATE takes the write lock up front, so a second connection waits on
        busy_timeout instead of failing when it upgrades a read transaction."""
        async with self._lock:
            self._check_open()
            with self._driver_errors():
                async with _transaction(self._db, "BEGIN IMMEDIATE") as db:
                    yield db

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        """A read transaction: one consistent snapshot across the queries inside it."""
        async with self._lock:
            self._check_open()
            with self._driver_errors():
                async with _transaction(self._db, "BEGIN") as db:
                    yield db

    async def _write_returning(self, sql: str, params: Sequence[object] | dict[str, object]) -> tuple:
        """Run one ``... RETURNING`` statement in its own write transaction; its single row."""
        async with self._write() as db, db.execute(sql, params) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise PermanentStoreError(f"{self.name}: the statement returned no row")
        return tuple(row)

    async def _fetchall(self, sql: str, params: Sequence[object]) -> list[tuple]:
        """One SELECT: atomic by itself, so no explicit transaction."""
        async with self._lock:
            self._check_open()
            with self._driver_errors():
                return [tuple(row) for row in await self._db.execute_fetchall(sql, params)]

    # ------------------------------------------------------------------ settings

    async def _read_channel_settings(self, key: tuple[int, int]) -> ChannelSettings | None:
        with self._driver_errors():
            rows = await self._db.execute_fetchall(
                "SELECT analysis, reactions FROM channel_settings WHERE guild_id = ? AND channel_id = ?", key
            )
        return ChannelSettings(bool(rows[0][0]), bool(rows[0][1])) if rows else None

    async def _upsert_channel_settings(
        self, guild_id: int, channel_id: int, analysis: bool | None, reactions: bool | None
    ) -> ChannelSettings:
        params = {
            "guild_id": guild_id,
            "channel_id": channel_id,
            "analysis": analysis,
            "reactions": reactions,
            "default_analysis": DEFAULT_CHANNEL_SETTINGS.analysis,
            "default_reactions": DEFAULT_CHANNEL_SETTINGS.reactions,
        }
        sql = """
            INSERT INTO channel_settings (guild_id, channel_id, analysis, reactions)
            VALUES (:guild_id, :channel_id, COALESCE(:analysis, :default_analysis),
                    COALESCE(:reactions, :default_reactions))
            ON CONFLICT (guild_id, channel_id) DO UPDATE SET
                analysis = COALESCE(:analysis, analysis), reactions = COALESCE(:reactions, reactions)
            RETURNING analysis, reactions
        """
        with self._driver_errors():
            async with _transaction(self._db, "BEGIN IMMEDIATE") as db, db.execute(sql, params) as cursor:
                row = await cursor.fetchone()
        return ChannelSettings(bool(row[0]), bool(row[1]))

    async def guild_channel_settings(self, guild_id: int) -> dict[int, ChannelSettings]:
        rows = await self._fetchall(
            "SELECT channel_id, analysis, reactions FROM channel_settings WHERE guild_id = ? ORDER BY channel_id",
            (guild_id,),
        )
        return {channel_id: ChannelSettings(bool(a), bool(r)) for channel_id, a, r in rows}

    async def retention_days(self, guild_id: int) -> int:
        rows = await self._fetchall("SELECT retention_days FROM guild_settings WHERE guild_id = ?", (guild_id,))
        return int(rows[0][0]) if rows else DEFAULT_RETENTION_DAYS

    async def _set_guild_setting(self, guild_id: int, column: str, value: object) -> None:
        async with self._write() as db:
            await db.execute(
                f"INSERT INTO guild_settings (guild_id, {column}) VALUES (?, ?) "
                f"ON CONFLICT (guild_id) DO UPDATE SET {column} = excluded.{column}",
                (guild_id, value),
            )

    # ------------------------------------------------------------------ corrections

    async def corrections_enabled(self, guild_id: int) -> bool:
        rows = await self._fetchall("SELECT corrections FROM guild_settings WHERE guild_id = ?", (guild_id,))
        return bool(rows[0][0]) if rows else False

    async def has_corrected(self, guild_id: int, message_key: str, member_id: int) -> bool:
        async with self._read() as db:
            digest = self._member_digest(guild_id, message_key, member_id)
            rows = await db.execute_fetchall("SELECT 1 FROM corrections WHERE dedup_hash = ?", (digest,))
        return bool(rows)

    async def add_correction(self, correction: Correction, *, message_key: str, member_id: int) -> CorrectionOutcome:
        check_correction(correction)
        async with self._write() as db:
            enabled = await db.execute_fetchall(
                "SELECT corrections FROM guild_settings WHERE guild_id = ?", (correction.guild_id,)
            )
            if not enabled or not enabled[0][0]:
                return "disabled"
            digest = self._member_digest(correction.guild_id, message_key, member_id)
            async with db.execute(
                f"INSERT INTO corrections ({CORRECTION_COLUMNS}, dedup_hash, voter_hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedup_hash) DO NOTHING",
                (
                    correction.guild_id,
                    correction.channel_id,
                    correction.text,
                    ",".join(correction.labels),
                    ",".join(correction.model_labels),
                    correction.model_version,
                    correction.created_at,
                    digest,
                    self._member_hash(member_id),
                ),
            ) as cursor:
                return "stored" if cursor.rowcount > 0 else "duplicate"

    async def corrections(self, guild_id: int | None = None, *, contributing: bool = False) -> list[Correction]:
        conditions, params = [], []
        if guild_id is not None:
            conditions.append("guild_id = ?")
            params.append(guild_id)
        if contributing:
            conditions.append("guild_id IN (SELECT guild_id FROM guild_settings WHERE corrections = 1)")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = await self._fetchall(f"SELECT {CORRECTION_COLUMNS} FROM corrections {where} ORDER BY id", params)
        return [correction_from_row(row) for row in rows]

    async def counted_corrections(self) -> list[MemberCorrection]:
        rows = await self._fetchall(
            f"SELECT {CORRECTION_COLUMNS}, voter_hash FROM corrections WHERE voter_hash IS NOT NULL "
            "AND guild_id IN (SELECT guild_id FROM guild_settings WHERE corrections = 1) ORDER BY id",
            (),
        )
        return [member_correction_from_row(row) for row in rows]

    async def clear_corrections(self, guild_id: int) -> int:
        async with self._write() as db, db.execute("DELETE FROM corrections WHERE guild_id = ?", (guild_id,)) as cur:
            return cur.rowcount

    # ------------------------------------------------------------------ opt-outs

    async def _read_opt_outs(self, known: int | None) -> tuple[int, frozenset[str] | None]:
        async with self._read() as db:
            ((version,),) = await db.execute_fetchall("SELECT version FROM opt_out_changes")
            if version == known:
                return version, None
            rows = await db.execute_fetchall("SELECT digest FROM opt_outs")
        return version, frozenset(digest for (digest,) in rows)

    async def _write_opt_out(self, digest: str, opted_out: bool, at: float) -> bool:
        if opted_out:
            sql = "INSERT INTO opt_outs (digest, opted_out_at) VALUES (?, ?) ON CONFLICT (digest) DO NOTHING"
            params: tuple[object, ...] = (digest, at)
        else:
            sql, params = "DELETE FROM opt_outs WHERE digest = ?", (digest,)
        async with self._write() as db:
            async with db.execute(sql, params) as cursor:
                changed = cursor.rowcount > 0
            if changed:
                await db.execute("UPDATE opt_out_changes SET version = version + 1")
        return changed

    # ------------------------------------------------------------------ statistics

    async def _write_buckets(
        self, channel_rows: ChannelRows, emotion_rows: EmotionRows, alert_rows: AlertRows, flush_id: str
    ) -> None:
        db = self._db
        committing = False
        now = time.time()
        with self._driver_errors():
            try:
                await db.execute("BEGIN IMMEDIATE")
                await db.execute("DELETE FROM statistics_flushes WHERE at < ?", (now - FLUSH_IDS_KEPT_S,))
                cursor = await db.execute(
                    "INSERT INTO statistics_flushes (id, at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING", (flush_id, now)
                )
                if cursor.rowcount:  # else an earlier try of this batch committed
                    # Parents first: emotion_buckets references channel_buckets.
                    await db.executemany(_UPSERT_CHANNEL_BUCKET, [(*k, n) for k, n in channel_rows.items()])
                    await db.executemany(_UPSERT_EMOTION_BUCKET, [(*k, c, s) for k, (c, s) in emotion_rows.items()])
                    await db.executemany(_UPSERT_ALERT_BUCKET, [(*k, n, w) for k, (n, w) in alert_rows.items()])
                committing = True
                await db.execute("COMMIT")
            except BaseException as error:
                rolled_back = await _rollback(db)
                # Cancelled while aiosqlite's thread ran COMMIT: it did commit.
                self._flush_committed = committing and not rolled_back and not isinstance(error, sqlite3.Error)
                raise

    async def mood(self, guild_id: int, channel_id: int | None, since: float, until: float) -> MoodSummary:
        where, params = _filter(guild_id, channel_id, since, until)
        async with self._read() as db:
            messages_row = await db.execute_fetchall(
                f"SELECT COALESCE(SUM(messages), 0) FROM channel_buckets WHERE {where}", params
            )
            label_rows = await db.execute_fetchall(
                f"SELECT label, SUM(count), SUM(score_sum) FROM emotion_buckets WHERE {where} "
                "GROUP BY label ORDER BY label",
                params,
            )
        return summary_from_rows(int(next(iter(messages_row))[0]), label_rows)

    async def timeline(
        self, guild_id: int, channel_id: int | None, since: float, until: float
    ) -> list[tuple[int, int, dict[str, int]]]:
        where, params = _filter(guild_id, channel_id, since, until)
        async with self._read() as db:
            bucket_rows = await db.execute_fetchall(
                f"SELECT bucket_start, SUM(messages) FROM channel_buckets WHERE {where} "
                "GROUP BY bucket_start ORDER BY bucket_start",
                params,
            )
            label_rows = await db.execute_fetchall(
                f"SELECT bucket_start, label, SUM(count) FROM emotion_buckets WHERE {where} "
                "GROUP BY bucket_start, label ORDER BY bucket_start, label",
                params,
            )
        return timeline_from_rows(bucket_rows, label_rows)

    # ------------------------------------------------------------------ schedules

    async def _upsert_schedule(
        self,
        guild_id: int,
        channel_id: int,
        kind: ScheduleKind,
        hour: int | None,
        weekday: int | None,
        every_hours: int | None,
        source_channel_id: int | None,
    ) -> Schedule:
        row = await self._write_returning(
            f"""
                INSERT INTO summary_schedules
                    (guild_id, channel_id, kind, hour, weekday, every_hours, source_channel_id)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (guild_id, channel_id) DO UPDATE SET
                    kind = excluded.kind, hour = excluded.hour, weekday = excluded.weekday,
                    every_hours = excluded.every_hours, source_channel_id = excluded.source_channel_id,
                    enabled = 1, disabled_reason = NULL, send_pending = 0
                RETURNING {SCHEDULE_COLUMNS}
                """,
            (guild_id, channel_id, kind, hour, weekday, every_hours, source_channel_id),
        )
        return schedule_from_row(row)

    async def schedules(self, guild_id: int | None = None) -> list[Schedule]:
        if guild_id is None:
            sql, params = f"SELECT {SCHEDULE_COLUMNS} FROM summary_schedules WHERE enabled = 1 ORDER BY id", ()
        else:
            sql = f"SELECT {SCHEDULE_COLUMNS} FROM summary_schedules WHERE guild_id = ? ORDER BY id"
            params = (guild_id,)
        return [schedule_from_row(row) for row in await self._fetchall(sql, params)]

    async def _changed(self, sql: str, params: Sequence[object]) -> bool:
        """One statement in its own write transaction; whether it changed a row."""
        async with self._write() as db, db.execute(sql, params) as cursor:
            return cursor.rowcount > 0

    async def mark_posted(self, schedule_id: int, at: float) -> bool:
        return await self._changed("UPDATE summary_schedules SET last_posted_at = ? WHERE id = ?", (at, schedule_id))

    async def claim_slot(self, schedule_id: int, slot: float, at: float) -> bool:
        return await self._changed(
            "UPDATE summary_schedules SET last_posted_at = ?, send_pending = 1 "
            "WHERE id = ? AND enabled = 1 AND (last_posted_at IS NULL OR last_posted_at < ?)",
            (at, schedule_id, slot),
        )

    async def confirm_slot(self, schedule_id: int, at: float) -> bool:
        return await self._changed(
            "UPDATE summary_schedules SET send_pending = 0 WHERE id = ? AND send_pending = 1 AND last_posted_at = ?",
            (schedule_id, at),
        )

    async def release_slot(self, schedule_id: int, at: float, previous: float | None) -> bool:
        return await self._changed(
            "UPDATE summary_schedules SET last_posted_at = ?, send_pending = 0 WHERE id = ? AND last_posted_at = ?",
            (previous, schedule_id, at),
        )

    async def disable_schedule(self, schedule_id: int, reason: str) -> bool:
        return await self._changed(
            "UPDATE summary_schedules SET enabled = 0, disabled_reason = ? WHERE id = ?", (reason, schedule_id)
        )

    async def delete_schedule(self, schedule_id: int) -> bool:
        return await self._changed("DELETE FROM summary_schedules WHERE id = ?", (schedule_id,))

    # ------------------------------------------------------------------ mood alerts

    async def _enabled_alert_settings(self) -> list[AlertSettings]:
        rows = await self._fetchall(
            f"SELECT {ALERT_SETTINGS_COLUMNS} FROM alert_settings WHERE enabled = 1 ORDER BY guild_id", ()
        )
        return [alert_settings_from_row(row) for row in rows]

    async def alert_settings(self, guild_id: int) -> AlertSettings | None:
        rows = await self._fetchall(
            f"SELECT {ALERT_SETTINGS_COLUMNS} FROM alert_settings WHERE guild_id = ?", (guild_id,)
        )
        return alert_settings_from_row(rows[0]) if rows else None

    async def _upsert_alert_settings(self, settings: AlertSettings) -> AlertSettings:
        labels = ",".join(settings.labels)
        async with self._write() as db:
            await db.execute(
                "DELETE FROM alert_buckets WHERE guild_id = ? AND EXISTS (SELECT 1 FROM alert_settings "
                "WHERE guild_id = ? AND labels <> ?)",
                (settings.guild_id, settings.guild_id, labels),
            )
            async with db.execute(
                f"""
                INSERT INTO alert_settings ({ALERT_SETTINGS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL)
                ON CONFLICT (guild_id) DO UPDATE SET
                    mod_channel_id = excluded.mod_channel_id, labels = excluded.labels,
                    sensitivity = excluded.sensitivity, role_id = excluded.role_id, enabled = excluded.enabled,
                    disabled_reason = NULL
                RETURNING {ALERT_SETTINGS_COLUMNS}
                """,
                (
                    settings.guild_id,
                    settings.mod_channel_id,
                    labels,
                    settings.sensitivity,
                    settings.role_id,
                    int(settings.enabled),
                ),
            ) as cursor:
                row = await cursor.fetchone()
        return alert_settings_from_row(row)

    async def _disable_alerts(self, guild_id: int, reason: str) -> bool:
        return await self._changed(
            "UPDATE alert_settings SET enabled = 0, disabled_reason = ? WHERE guild_id = ? AND enabled = 1",
            (reason, guild_id),
        )

    async def alert_channels(self, guild_id: int) -> dict[int, AlertChannel]:
        rows = await self._fetchall(
            f"SELECT {ALERT_CHANNEL_COLUMNS} FROM alert_channels WHERE guild_id = ?", (guild_id,)
        )
        return {row[1]: AlertChannel(*row) for row in rows}

    async def alert_counts(
        self, guild_id: int, since: float, window_start: float, until: float
    ) -> dict[int, tuple[AlertCounts, AlertCounts]]:
        rows = await self._fetchall(
            "SELECT channel_id, bucket_start >= ?, SUM(messages), SUM(watched) FROM alert_buckets "
            "WHERE guild_id = ? AND bucket_start >= ? AND bucket_start < ? GROUP BY 1, 2",
            (window_start, guild_id, since, until),
        )
        return counts_by_channel(rows)

    async def claim_alert(self, guild_id: int, channel_id: int, since: float, at: float) -> bool:
        async with (
            self._write() as db,
            db.execute(
                """
            INSERT INTO alert_channels (guild_id, channel_id, last_alert_at) VALUES (:guild, :channel, :at)
            ON CONFLICT (guild_id, channel_id) DO UPDATE SET last_alert_at = :at, acknowledged_at = NULL
            WHERE (last_alert_at IS NULL OR last_alert_at < :since) AND (snoozed_until IS NULL OR snoozed_until <= :at)
            RETURNING 1
            """,
                {"guild": guild_id, "channel": channel_id, "at": at, "since": since},
            ) as cursor,
        ):
            return await cursor.fetchone() is not None

    async def release_alert(self, guild_id: int, channel_id: int, at: float, previous: float | None) -> bool:
        return await self._changed(
            "UPDATE alert_channels SET last_alert_at = ? WHERE guild_id = ? AND channel_id = ? AND last_alert_at = ?",
            (previous, guild_id, channel_id, at),
        )

    async def update_alert_channel(
        self,
        guild_id: int,
        channel_id: int,
        *,
        snoozed_until: float | None = None,
        more_steps: int = 0,
        acknowledged_at: float | None = None,
    ) -> AlertChannel:
        row = await self._write_returning(
            f"""
            INSERT INTO alert_channels (guild_id, channel_id, snoozed_until, steps, acknowledged_at)
            VALUES (:guild, :channel, :snoozed, :steps, :acknowledged)
            ON CONFLICT (guild_id, channel_id) DO UPDATE SET
                snoozed_until = COALESCE(:snoozed, snoozed_until), steps = steps + :steps,
                acknowledged_at = COALESCE(:acknowledged, acknowledged_at)
            RETURNING {ALERT_CHANNEL_COLUMNS}
            """,
            {
                "guild": guild_id,
                "channel": channel_id,
                "snoozed": snoozed_until,
                "steps": int(more_steps),
                "acknowledged": acknowledged_at,
            },
        )
        return AlertChannel(*row)

    # ------------------------------------------------------------------ privacy

    async def _delete_rows(self, guild_id: int, tables: Sequence[str]) -> int:
        with self._driver_errors():
            async with _transaction(self._db, "BEGIN IMMEDIATE") as db:
                self._forget_buffered(guild_id)
                # Children first and explicitly: rows removed by ON DELETE CASCADE are not counted in rowcount.
                deleted = 0
                for table in tables:
                    async with db.execute(f"DELETE FROM {table} WHERE guild_id = ?", (guild_id,)) as cursor:
                        deleted += cursor.rowcount
        return deleted

    async def prune(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        deleted = 0
        async with self._write() as db:
            async with db.execute(
                """
                UPDATE corrections SET dedup_hash = NULL, voter_hash = NULL
                WHERE dedup_hash IS NOT NULL AND created_at < :now - 86400 *
                    COALESCE((SELECT retention_days FROM guild_settings AS g WHERE g.guild_id = corrections.guild_id),
                    :default_days)
                """,
                {"now": now, "default_days": DEFAULT_RETENTION_DAYS},
            ) as cursor:
                deleted += cursor.rowcount
            for table in STATISTICS_TABLES:
                async with db.execute(
                    f"""
                    DELETE FROM {table} WHERE bucket_start < :now - 86400 * COALESCE(
                        (SELECT retention_days FROM guild_settings AS g WHERE g.guild_id = {table}.guild_id),
                        :default_days)
                    """,
                    {"now": now, "default_days": DEFAULT_RETENTION_DAYS},
                ) as cursor:
                    deleted += cursor.rowcount
        return deleted


async def _adopt_member_key(db: aiosqlite.Connection, path: str, key: bytes) -> None:
    """In a database from before the deployment key, replace each member hash by HMAC(key, old hash) and delete the
    salt, in one transaction (nothing happens in one without a salt)."""
    async with _transaction(db, "BEGIN IMMEDIATE"):
        if not await db.execute_fetchall("SELECT 1 FROM store_secrets WHERE name = ?", (SALT_SECRET,)):
            return
        rows = await db.execute_fetchall("SELECT id, dedup_hash FROM corrections WHERE dedup_hash IS NOT NULL")
        keyed = [(rehash(key, old_hash), row_id) for row_id, old_hash in rows]
        await db.executemany("UPDATE corrections SET dedup_hash = ? WHERE id = ?", keyed)
        await db.execute("DELETE FROM store_secrets WHERE name = ?", (SALT_SECRET,))
    log.info("%s: member hashes now keyed with the deployment key; the old salt is deleted", path)


def _lock(path: str) -> int:
    """Take the one-bot-per-file lock: ``flock`` on ``<path>.lock``, held until its descriptor is closed (the
    kernel releases it when the process dies, however it dies). Writes this process's id into the file."""
    lock_path = f"{path}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except PermissionError as error:
        try:  # another user's lock file: flock works on a read-only descriptor too
            fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            raise _unwritable_directory(path, lock_path, error) from error
    except OSError as error:
        raise _unwritable_directory(path, lock_path, error) from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        raise PermanentStoreError(
            f"{path} is in use by another moodring process{f' (PID {holder})' if holder.isdigit() else ''}: "
            "one database serves one bot. Stop the other bot first, or set MOODRING_DATABASE to another file "
            f"(the lock is {lock_path})."
        ) from None
    except OSError as error:
        os.close(fd)
        raise PermanentStoreError(
            f"cannot lock {lock_path} for the database {path}: {error.strerror or error}."
        ) from error
    with contextlib.suppress(OSError):  # only informative
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _unwritable_directory(path: str, lock_path: str, error: OSError) -> StoreError:
    return PermanentStoreError(
        f"cannot create {lock_path} beside the database {path}: {error.strerror or error}. The user that runs "
        f"the bot needs write access to the directory {Path(path).parent}, or set MOODRING_DATABASE to a "
        "writable place."
    )


async def _connect(path: str, busy_timeout_ms: int, member_key: bytes | None) -> tuple[aiosqlite.Connection, dict]:
    """Connect, configure and migrate (and key the member hashes of an older file: ``_adopt_member_key``); the
    connection and every channel settings row.

    SQLite's errors become ``StoreError``s; those about the file itself say what to do.
    """
    try:
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        db = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as error:
        raise _open_error(path, error) from error
    try:
        await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        await _enable_wal(db, path, busy_timeout_ms)
        await db.execute("PRAGMA foreign_keys = ON")
        await db.execute("PRAGMA synchronous = NORMAL")
        await migrate(_SqliteSchema(db, path), MIGRATIONS)
        if member_key is not None:
            await _adopt_member_key(db, path, member_key)
        rows = await db.execute_fetchall("SELECT guild_id, channel_id, analysis, reactions FROM channel_settings")
    except BaseException as error:
        await db.close()
        if isinstance(error, sqlite3.Error):
            raise _open_error(path, error) from error
        raise
    return db, {(g, c): ChannelSettings(bool(a), bool(r)) for g, c, a, r in rows}


def _open_error(path: str, error: sqlite3.Error) -> StoreError:
    """What to tell the operator when SQLite cannot use the file."""
    code = _code(error)
    directory, name = Path(path).parent, Path(path).name
    if code == sqlite3.SQLITE_READONLY:
        return TransientStoreError(
            f"{path} is read-only: give the user that runs the bot write access to it and to its directory "
            f"{directory} (SQLite keeps {name}-wal and {name}-shm beside it)."
        )
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return TransientStoreError(
            f"{path} is locked by another program (a sqlite3 shell, a backup, a file sync?): close it and start "
            "the bot again."
        )
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return PermanentStoreError(
            f"{path} is not a moodring database or is damaged ({error}): move it away to start with an empty "
            f"one, or restore a backup (`sqlite3 {path} .recover` may save what is left)."
        )
    if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH):
        return PermanentStoreError(
            f"cannot open {path} ({error}): it and its directory {directory} must be readable and writable by "
            "the user that runs the bot."
        )
    if code == sqlite3.SQLITE_FULL:
        return TransientStoreError(f"the disk holding {path} is full: free some space and start the bot again.")
    if code == sqlite3.SQLITE_IOERR:
        return TransientStoreError(f"reading or writing {path} failed ({error}): check the disk.")
    return _kind(error)(f"cannot use {path}: {error}")


async def _enable_wal(db: aiosqlite.Connection, path: str, busy_timeout_ms: int) -> None:
    """``PRAGMA journal_mode = WAL``, retried: while another connection is switching the same new file to WAL,
    SQLite answers "database is locked" at once, without calling the busy handler."""
    deadline = time.monotonic() + busy_timeout_ms / 1000
    delay = 0.005
    while True:
        try:
            async with db.execute("PRAGMA journal_mode = WAL") as cursor:
                row = await cursor.fetchone()
            break
        except sqlite3.OperationalError as error:
            busy = (getattr(error, "sqlite_errorcode", 0) & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() >= deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
    mode = str(row[0]).lower() if row else None
    if path != ":memory:" and mode != "wal":
        raise PermanentStoreError(f"could not switch {path} to WAL mode (journal_mode is {mode!r})")


class _SqliteSchema(MigrationTarget):
    """The file as the migration runner sees it: the version is ``user_version``, and each step is a ``BEGIN
    IMMEDIATE`` transaction, whose write lock makes two processes opening the file at once take turns."""

    noun = "database file"

    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        super().__init__(path)
        self.db = db

    def transaction(self) -> contextlib.AbstractAsyncContextManager[aiosqlite.Connection]:
        return _transaction(self.db, "BEGIN IMMEDIATE")

    async def version(self) -> int:
        async with self.db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def set_version(self, version: int) -> None:
        await self.db.execute(f"PRAGMA user_version = {int(version)}")

    async def run(self, script: str) -> None:
        for statement in _statements(script):
            await self.db.execute(statement)

    async def up_to_date(self, version: int) -> None:
        # A write, so that a read-only file is found now rather than by the first flush.
        await self.set_version(version)


@contextlib.asynccontextmanager
async def _transaction(db: aiosqlite.Connection, begin: str) -> AsyncIterator[aiosqlite.Connection]:
    """BEGIN ... COMMIT, or ROLLBACK on any error or cancellation.

    BEGIN is inside the try: a task cancelled while BEGIN waits on busy_timeout still has it run in
    aiosqlite's thread, and the ROLLBACK queued behind it ends that transaction.
    """
    try:
        await db.execute(begin)
        yield db
        await db.execute("COMMIT")
    except BaseException:
        await _rollback(db)
        raise


async def _rollback(db: aiosqlite.Connection) -> bool:
    """ROLLBACK; False when no transaction was open (it never began, or it already committed)."""
    try:
        await db.execute("ROLLBACK")
    except (sqlite3.Error, ValueError):  # ValueError: the connection is closed
        return False
    return True
