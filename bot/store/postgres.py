"""The PostgreSQL engine of the store: an asyncpg pool, for several bot processes sharing one database.

``MOODRING_DATABASE=postgresql://user:password@host:5432/dbname`` selects it. The schema is the SQLite one, in
PostgreSQL's types, with the same numbered migrations; the version is the one row of ``moodring_schema``.
Migrations run under a session advisory lock (``pg_advisory_lock``), so processes that start at once apply each
migration exactly once. Statistics are added with ``INSERT ... ON CONFLICT DO UPDATE SET n = table.n + excluded.n``,
which PostgreSQL runs atomically per row: writers in any number of processes never lose an increment. Summary slots
are claimed with a conditional UPDATE (one winner per slot across processes).

A wrong URL, a refused connection, bad credentials or a missing database are ``StoreError``s that say what to do;
the password never appears in a message. Every driver error (asyncpg's, ``OSError``, ``TimeoutError``) leaves the
store as a ``StoreError`` (bot/store/errors.py): transient when the server cannot be reached now, is restarting, lost
the connection, timed out, or is short of resources; permanent for the credentials, the URL, a missing database,
privileges and statements it refuses. The migrations are bot/store/migrations/postgres/*.sql.

The cluster's model sync (bot/cluster/model_sync.py) sends and receives its notifications through ``notify`` and
``listen`` here, so that it too sees only ``StoreError``s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, NoReturn

import asyncpg

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
    member_correction_from_row,
    redact_url,
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

__all__ = ["MIGRATIONS", "MIGRATION_LOCK", "Listener", "LockHolder", "PostgresStore", "hold_locks", "listen", "notify"]

log = logging.getLogger(__name__)

DEFAULT_POOL_SIZE = 5
DEFAULT_CONNECT_TIMEOUT = 10.0
#: The advisory lock key that serialises migrations (any fixed 64-bit number; "moodring" in ASCII).
MIGRATION_LOCK = 0x6D6F6F6472696E67

#: MIGRATIONS[i] upgrades a database from version i to i + 1 (bot/store/migrations/postgres/, see bot.store.migrate).
MIGRATIONS: list[str] = load_scripts("postgres")
#: What the driver raises: asyncpg's errors (server-side, client-side, internal) and those of the socket and timeouts.
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)
#: SQLSTATE classes of an outage: connection exception, transaction rollback (serialization, deadlock), insufficient
#: resources (disk full, too many connections), operator intervention (shutdown, restart, cancel), system error (I/O).
TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")
#: Single SQLSTATEs of an outage: a read-only transaction (a standby, or a server set read-only), a lock not available.
TRANSIENT_SQLSTATES = ("25006", "55P03")

_UPSERT_CHANNEL_BUCKET = """
    INSERT INTO channel_buckets AS b (guild_id, channel_id, bucket_start, messages) VALUES ($1, $2, $3, $4)
    ON CONFLICT (guild_id, channel_id, bucket_start) DO UPDATE SET messages = b.messages + excluded.messages
"""
_UPSERT_EMOTION_BUCKET = """
    INSERT INTO emotion_buckets AS e (guild_id, channel_id, bucket_start, label, count, score_sum)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (guild_id, channel_id, bucket_start, label)
    DO UPDATE SET count = e.count + excluded.count, score_sum = e.score_sum + excluded.score_sum
"""
_UPSERT_ALERT_BUCKET = """
    INSERT INTO alert_buckets AS a (guild_id, channel_id, bucket_start, messages, watched) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (guild_id, channel_id, bucket_start)
    DO UPDATE SET messages = a.messages + excluded.messages, watched = a.watched + excluded.watched
"""
#: The guild's retention in seconds, for a row of ``alias`` ($2: the default in days).
_RETENTION = (
    "86400 * COALESCE((SELECT retention_days FROM guild_settings AS g WHERE g.guild_id = {alias}.guild_id),"
    " $2::integer)"
)


def _filter(guild_id: int, channel_id: int | None, since: float, until: float) -> tuple[str, list[object]]:
    """WHERE clause and parameters for one guild (or one of its channels) and buckets in [since, until)."""
    # bucket_start is a whole second; [since, until) over reals equals [ceil(since), ceil(until)) over integers.
    low, high = -int(-since // 1), -int(-until // 1)
    if channel_id is None:
        return "guild_id = $1 AND bucket_start >= $2 AND bucket_start < $3", [guild_id, low, high]
    return (
        "guild_id = $1 AND channel_id = $4 AND bucket_start >= $2 AND bucket_start < $3",
        [guild_id, low, high, channel_id],
    )


def _rowcount(status: str) -> int:
    """The row count of a command status such as ``UPDATE 3`` or ``DELETE 0``."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresStore(Store):
    """The store in a PostgreSQL database through an asyncpg pool. Reads and writes take a pooled connection each
    (``_connection``, where the driver's errors become the store's); ``_lock`` only serialises flushes, guild
    deletions and settings changes within this process."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        url: str,
        *,
        flush_interval: float,
        max_pending: int,
        settings: dict[tuple[int, int], ChannelSettings],
    ) -> None:
        super().__init__(redact_url(url), flush_interval=flush_interval, max_pending=max_pending, settings=settings)
        self._pool = pool
        #: How many migrations this process applied when it opened the database (0 when another had).
        self.migrations_applied = 0

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_pending: int = DEFAULT_MAX_PENDING,
        pool_size: int = DEFAULT_POOL_SIZE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        exclusive: bool = True,
        member_key: bytes | None = None,
        opt_out_refresh_s: float | None = None,
    ) -> PostgresStore:
        """Connect a pool to ``url``, migrate the database, load the channel settings and the opt-outs, start the
        flusher and, with ``opt_out_refresh_s``, the poll that reads the opt-outs other processes changed.

        ``member_key`` hashes members (bot/store/member_key.py; the bot reads it from its file, never made for
        PostgreSQL: every process sharing the database must use the same one); without it the store keeps no
        correction, and the first open with it of a database from before the key replaces each hash by HMAC(key,
        old hash) and deletes the salt.

        ``exclusive`` is accepted for callers that work with both engines and means nothing here: several processes
        may share one PostgreSQL database.

        Raises ``StoreError`` saying what to do when the URL is malformed, the server refuses or cannot be reached
        (``TransientStoreError``: start again later), the credentials are wrong, the database does not exist, or its
        schema is newer than this bot.
        """
        if flush_interval <= 0 or max_pending < 1 or pool_size < 1:
            raise ValueError("flush_interval must be > 0, max_pending >= 1 and pool_size >= 1")
        if opt_out_refresh_s is not None and opt_out_refresh_s <= 0:
            raise ValueError("opt_out_refresh_s must be > 0")
        name = redact_url(url)
        try:
            # min_size=0: no background refill of a floor of connections, which logs a traceback for every try
            # while the server is down; a connection is made when one is needed, and its error reaches the caller.
            pool = await asyncpg.create_pool(
                url, min_size=0, max_size=pool_size, timeout=connect_timeout, command_timeout=60
            )
        except Exception as error:
            raise _store_error(name, error) from None  # the driver's own message may quote the URL
        try:
            async with pool.acquire() as connection:
                applied = await migrate(_PostgresSchema(connection, name), MIGRATIONS)
                if member_key is not None:
                    await _adopt_member_key(connection, name, member_key)
                rows = await connection.fetch("SELECT guild_id, channel_id, analysis, reactions FROM channel_settings")
        except BaseException as error:
            await pool.close()
            if isinstance(error, StoreError) or not isinstance(error, Exception):
                raise
            raise _store_error(name, error) from error
        settings = {(g, c): ChannelSettings(a, r) for g, c, a, r in rows}
        store = cls(pool, url, flush_interval=flush_interval, max_pending=max_pending, settings=settings)
        store.migrations_applied = applied
        store.member_key = member_key
        await store._open(opt_out_refresh_s)
        return store

    async def _disconnect(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), 10)
        except DRIVER_ERRORS:
            self._pool.terminate()  # the server is gone: don't wait for a polite goodbye

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection for the block. The engine's boundary: every query runs in one, and a driver error in
        the block leaves it as a ``StoreError``."""
        self._check_open()
        with _driver_errors(self.name):
            async with self._pool.acquire() as connection:
                yield connection

    async def _fetch(self, sql: str, *params: object) -> list[asyncpg.Record]:
        async with self._connection() as connection:
            return await connection.fetch(sql, *params)

    async def _fetchrow(self, sql: str, *params: object) -> asyncpg.Record | None:
        async with self._connection() as connection:
            return await connection.fetchrow(sql, *params)

    async def _execute(self, sql: str, *params: object) -> int:
        """One statement in its own transaction; the rows it touched."""
        async with self._connection() as connection:
            return _rowcount(await connection.execute(sql, *params))

    async def _changed(self, sql: str, *params: object) -> bool:
        """Whether one statement (in its own transaction) touched a row."""
        return await self._execute(sql, *params) > 0

    # ------------------------------------------------------------------ settings

    async def _read_channel_settings(self, key: tuple[int, int]) -> ChannelSettings | None:
        row = await self._fetchrow(
            "SELECT analysis, reactions FROM channel_settings WHERE guild_id = $1 AND channel_id = $2", *key
        )
        return ChannelSettings(row[0], row[1]) if row else None

    async def _upsert_channel_settings(
        self, guild_id: int, channel_id: int, analysis: bool | None, reactions: bool | None
    ) -> ChannelSettings:
        row = await self._fetchrow(
            """
            INSERT INTO channel_settings AS s (guild_id, channel_id, analysis, reactions)
            VALUES ($1, $2, COALESCE($3::boolean, $5::boolean), COALESCE($4::boolean, $6::boolean))
            ON CONFLICT (guild_id, channel_id) DO UPDATE SET
                analysis = COALESCE($3::boolean, s.analysis), reactions = COALESCE($4::boolean, s.reactions)
            RETURNING analysis, reactions
            """,
            guild_id,
            channel_id,
            analysis,
            reactions,
            DEFAULT_CHANNEL_SETTINGS.analysis,
            DEFAULT_CHANNEL_SETTINGS.reactions,
        )
        return ChannelSettings(row[0], row[1])

    async def guild_channel_settings(self, guild_id: int) -> dict[int, ChannelSettings]:
        rows = await self._fetch(
            "SELECT channel_id, analysis, reactions FROM channel_settings WHERE guild_id = $1 ORDER BY channel_id",
            guild_id,
        )
        return {channel_id: ChannelSettings(a, r) for channel_id, a, r in rows}

    async def retention_days(self, guild_id: int) -> int:
        rows = await self._fetch("SELECT retention_days FROM guild_settings WHERE guild_id = $1", guild_id)
        return int(rows[0][0]) if rows else DEFAULT_RETENTION_DAYS

    async def _set_guild_setting(self, guild_id: int, column: str, value: object) -> None:
        await self._execute(
            f"INSERT INTO guild_settings (guild_id, {column}) VALUES ($1, $2) "
            f"ON CONFLICT (guild_id) DO UPDATE SET {column} = excluded.{column}",
            guild_id,
            value,
        )

    # ------------------------------------------------------------------ corrections

    async def corrections_enabled(self, guild_id: int) -> bool:
        rows = await self._fetch("SELECT corrections FROM guild_settings WHERE guild_id = $1", guild_id)
        return bool(rows[0][0]) if rows else False

    async def has_corrected(self, guild_id: int, message_key: str, member_id: int) -> bool:
        digest = self._member_digest(guild_id, message_key, member_id)
        async with self._connection() as connection:
            return await connection.fetchval("SELECT EXISTS (SELECT 1 FROM corrections WHERE dedup_hash = $1)", digest)

    async def add_correction(self, correction: Correction, *, message_key: str, member_id: int) -> CorrectionOutcome:
        check_correction(correction)
        digest = self._member_digest(correction.guild_id, message_key, member_id)
        async with self._connection() as connection, connection.transaction():
            # FOR SHARE: an admin turning corrections off waits for this insert, or this insert sees it off.
            enabled = await connection.fetchval(
                "SELECT corrections FROM guild_settings WHERE guild_id = $1 FOR SHARE", correction.guild_id
            )
            if not enabled:
                return "disabled"
            status = await connection.execute(
                f"INSERT INTO corrections ({CORRECTION_COLUMNS}, dedup_hash, voter_hash) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (dedup_hash) DO NOTHING",
                correction.guild_id,
                correction.channel_id,
                correction.text,
                ",".join(correction.labels),
                ",".join(correction.model_labels),
                correction.model_version,
                correction.created_at,
                digest,
                self._member_hash(member_id),
            )
        return "stored" if _rowcount(status) > 0 else "duplicate"

    async def corrections(self, guild_id: int | None = None, *, contributing: bool = False) -> list[Correction]:
        conditions, params = [], []
        if guild_id is not None:
            params.append(guild_id)
            conditions.append(f"guild_id = ${len(params)}")
        if contributing:
            conditions.append("guild_id IN (SELECT guild_id FROM guild_settings WHERE corrections)")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = await self._fetch(f"SELECT {CORRECTION_COLUMNS} FROM corrections {where} ORDER BY id", *params)
        return [correction_from_row(row) for row in rows]

    async def counted_corrections(self) -> list[MemberCorrection]:
        rows = await self._fetch(
            f"SELECT {CORRECTION_COLUMNS}, voter_hash FROM corrections WHERE voter_hash IS NOT NULL "
            "AND guild_id IN (SELECT guild_id FROM guild_settings WHERE corrections) ORDER BY id"
        )
        return [member_correction_from_row(row) for row in rows]

    async def clear_corrections(self, guild_id: int) -> int:
        return await self._execute("DELETE FROM corrections WHERE guild_id = $1", guild_id)

    # ------------------------------------------------------------------ opt-outs

    async def _read_opt_outs(self, known: int | None) -> tuple[int, frozenset[str] | None]:
        async with self._connection() as connection, connection.transaction(isolation="repeatable_read"):
            version = await connection.fetchval("SELECT version FROM opt_out_changes")
            if version == known:
                return version, None
            rows = await connection.fetch("SELECT digest FROM opt_outs")
        return version, frozenset(row[0] for row in rows)

    async def _write_opt_out(self, digest: str, opted_out: bool, at: float) -> bool:
        async with self._connection() as connection, connection.transaction():
            if opted_out:
                status = await connection.execute(
                    "INSERT INTO opt_outs (digest, opted_out_at) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING",
                    digest,
                    at,
                )
            else:
                status = await connection.execute("DELETE FROM opt_outs WHERE digest = $1", digest)
            changed = _rowcount(status) > 0
            if changed:
                await connection.execute("UPDATE opt_out_changes SET version = version + 1")
        return changed

    # ------------------------------------------------------------------ statistics

    async def _write_buckets(
        self, channel_rows: ChannelRows, emotion_rows: EmotionRows, alert_rows: AlertRows, flush_id: str
    ) -> None:
        # Sorted keys: two processes flushing overlapping buckets take the row locks in the same order (no deadlock).
        now = time.time()
        async with self._connection() as connection:
            transaction = connection.transaction()
            await transaction.start()
            try:
                await connection.execute("DELETE FROM statistics_flushes WHERE at < $1", now - FLUSH_IDS_KEPT_S)
                first = await connection.fetchval(
                    "INSERT INTO statistics_flushes (id, at) VALUES ($1, $2) "
                    "ON CONFLICT (id) DO NOTHING RETURNING TRUE",
                    flush_id,
                    now,
                )
                if first:  # else an earlier try of this batch committed
                    await connection.executemany(
                        _UPSERT_CHANNEL_BUCKET, [(*k, n) for k, n in sorted(channel_rows.items())]
                    )
                    await connection.executemany(
                        _UPSERT_EMOTION_BUCKET, [(*k, c, s) for k, (c, s) in sorted(emotion_rows.items())]
                    )
                    await connection.executemany(
                        _UPSERT_ALERT_BUCKET, [(*k, n, w) for k, (n, w) in sorted(alert_rows.items())]
                    )
            except BaseException:
                await _rollback(transaction)
                raise
            try:
                await transaction.commit()
            except asyncio.CancelledError:
                # The COMMIT was sent; whether it arrived is unknown. A cancelled caller must not count twice, and
                # PostgreSQL finishes a COMMIT it received: count it as written.
                self._flush_committed = True
                raise
            except BaseException:  # the connection went with the COMMIT sent: the next flush settles it by its id
                self._flush_outcome_unknown = True
                raise

    async def mood(self, guild_id: int, channel_id: int | None, since: float, until: float) -> MoodSummary:
        where, params = _filter(guild_id, channel_id, since, until)
        async with self._connection() as connection, connection.transaction(isolation="repeatable_read"):
            messages = await connection.fetchval(
                f"SELECT COALESCE(SUM(messages), 0) FROM channel_buckets WHERE {where}", *params
            )
            label_rows = await connection.fetch(
                f"SELECT label, SUM(count), SUM(score_sum) FROM emotion_buckets WHERE {where} "
                "GROUP BY label ORDER BY label",
                *params,
            )
        return summary_from_rows(int(messages), label_rows)

    async def timeline(
        self, guild_id: int, channel_id: int | None, since: float, until: float
    ) -> list[tuple[int, int, dict[str, int]]]:
        where, params = _filter(guild_id, channel_id, since, until)
        async with self._connection() as connection, connection.transaction(isolation="repeatable_read"):
            bucket_rows = await connection.fetch(
                f"SELECT bucket_start, SUM(messages) FROM channel_buckets WHERE {where} "
                "GROUP BY bucket_start ORDER BY bucket_start",
                *params,
            )
            label_rows = await connection.fetch(
                f"SELECT bucket_start, label, SUM(count) FROM emotion_buckets WHERE {where} "
                "GROUP BY bucket_start, label ORDER BY bucket_start, label",
                *params,
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
        row = await self._fetchrow(
            f"""
            INSERT INTO summary_schedules (guild_id, channel_id, kind, hour, weekday, every_hours, source_channel_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (guild_id, channel_id) DO UPDATE SET
                kind = excluded.kind, hour = excluded.hour, weekday = excluded.weekday,
                every_hours = excluded.every_hours, source_channel_id = excluded.source_channel_id,
                enabled = TRUE, disabled_reason = NULL, send_pending = FALSE
            RETURNING {SCHEDULE_COLUMNS}
            """,
            guild_id,
            channel_id,
            kind,
            hour,
            weekday,
            every_hours,
            source_channel_id,
        )
        return schedule_from_row(row)

    async def schedules(self, guild_id: int | None = None) -> list[Schedule]:
        if guild_id is None:
            rows = await self._fetch(f"SELECT {SCHEDULE_COLUMNS} FROM summary_schedules WHERE enabled ORDER BY id")
        else:
            rows = await self._fetch(
                f"SELECT {SCHEDULE_COLUMNS} FROM summary_schedules WHERE guild_id = $1 ORDER BY id", guild_id
            )
        return [schedule_from_row(row) for row in rows]

    async def mark_posted(self, schedule_id: int, at: float) -> bool:
        return await self._changed("UPDATE summary_schedules SET last_posted_at = $1 WHERE id = $2", at, schedule_id)

    async def claim_slot(self, schedule_id: int, slot: float, at: float) -> bool:
        # Under READ COMMITTED a second UPDATE of the row waits for the first and re-checks the WHERE clause on the
        # row it committed: one winner per slot, across processes.
        return await self._changed(
            "UPDATE summary_schedules SET last_posted_at = $1, send_pending = TRUE "
            "WHERE id = $2 AND enabled AND (last_posted_at IS NULL OR last_posted_at < $3)",
            at,
            schedule_id,
            slot,
        )

    async def confirm_slot(self, schedule_id: int, at: float) -> bool:
        return await self._changed(
            "UPDATE summary_schedules SET send_pending = FALSE WHERE id = $1 AND send_pending AND last_posted_at = $2",
            schedule_id,
            at,
        )

    async def release_slot(self, schedule_id: int, at: float, previous: float | None) -> bool:
        return await self._changed(
            "UPDATE summary_schedules SET last_posted_at = $1, send_pending = FALSE "
            "WHERE id = $2 AND last_posted_at = $3",
            previous,
            schedule_id,
            at,
        )

    async def disable_schedule(self, schedule_id: int, reason: str) -> bool:
        return await self._changed(
            "UPDATE summary_schedules SET enabled = FALSE, disabled_reason = $1 WHERE id = $2", reason, schedule_id
        )

    async def delete_schedule(self, schedule_id: int) -> bool:
        return await self._changed("DELETE FROM summary_schedules WHERE id = $1", schedule_id)

    # ------------------------------------------------------------------ mood alerts

    async def _enabled_alert_settings(self) -> list[AlertSettings]:
        rows = await self._fetch(f"SELECT {ALERT_SETTINGS_COLUMNS} FROM alert_settings WHERE enabled ORDER BY guild_id")
        return [alert_settings_from_row(row) for row in rows]

    async def alert_settings(self, guild_id: int) -> AlertSettings | None:
        row = await self._fetchrow(f"SELECT {ALERT_SETTINGS_COLUMNS} FROM alert_settings WHERE guild_id = $1", guild_id)
        return alert_settings_from_row(row) if row else None

    async def _upsert_alert_settings(self, settings: AlertSettings) -> AlertSettings:
        labels = ",".join(settings.labels)
        async with self._connection() as connection, connection.transaction():
            await connection.execute(
                "DELETE FROM alert_buckets WHERE guild_id = $1 AND EXISTS (SELECT 1 FROM alert_settings "
                "WHERE guild_id = $1 AND labels <> $2)",
                settings.guild_id,
                labels,
            )
            row = await connection.fetchrow(
                f"""
                INSERT INTO alert_settings ({ALERT_SETTINGS_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, NULL)
                ON CONFLICT (guild_id) DO UPDATE SET
                    mod_channel_id = excluded.mod_channel_id, labels = excluded.labels,
                    sensitivity = excluded.sensitivity, role_id = excluded.role_id, enabled = excluded.enabled,
                    disabled_reason = NULL
                RETURNING {ALERT_SETTINGS_COLUMNS}
                """,
                settings.guild_id,
                settings.mod_channel_id,
                labels,
                settings.sensitivity,
                settings.role_id,
                settings.enabled,
            )
        return alert_settings_from_row(row)

    async def _disable_alerts(self, guild_id: int, reason: str) -> bool:
        return await self._changed(
            "UPDATE alert_settings SET enabled = FALSE, disabled_reason = $1 WHERE guild_id = $2 AND enabled",
            reason,
            guild_id,
        )

    async def alert_channels(self, guild_id: int) -> dict[int, AlertChannel]:
        rows = await self._fetch(f"SELECT {ALERT_CHANNEL_COLUMNS} FROM alert_channels WHERE guild_id = $1", guild_id)
        return {row[1]: AlertChannel(*row) for row in rows}

    async def alert_counts(
        self, guild_id: int, since: float, window_start: float, until: float
    ) -> dict[int, tuple[AlertCounts, AlertCounts]]:
        # bucket_start is a whole second: [a, b) over reals is [ceil(a), ceil(b)) over integers.
        since_s, window_s, until_s = (-int(-moment // 1) for moment in (since, window_start, until))
        rows = await self._fetch(
            "SELECT channel_id, bucket_start >= $2, SUM(messages), SUM(watched) FROM alert_buckets "
            "WHERE guild_id = $1 AND bucket_start >= $3 AND bucket_start < $4 GROUP BY 1, 2",
            guild_id,
            window_s,
            since_s,
            until_s,
        )
        return counts_by_channel(rows)

    async def claim_alert(self, guild_id: int, channel_id: int, since: float, at: float) -> bool:
        # As ``claim_slot``: a second writer of the row waits for the first and re-checks the WHERE clause on the row
        # it committed (an INSERT that meets a row inserted meanwhile does the same through ON CONFLICT).
        row = await self._fetchrow(
            """
            INSERT INTO alert_channels AS a (guild_id, channel_id, last_alert_at) VALUES ($1, $2, $3)
            ON CONFLICT (guild_id, channel_id) DO UPDATE SET last_alert_at = $3, acknowledged_at = NULL
            WHERE (a.last_alert_at IS NULL OR a.last_alert_at < $4)
                AND (a.snoozed_until IS NULL OR a.snoozed_until <= $3)
            RETURNING TRUE
            """,
            guild_id,
            channel_id,
            at,
            since,
        )
        return row is not None

    async def release_alert(self, guild_id: int, channel_id: int, at: float, previous: float | None) -> bool:
        return await self._changed(
            "UPDATE alert_channels SET last_alert_at = $1 "
            "WHERE guild_id = $2 AND channel_id = $3 AND last_alert_at = $4",
            previous,
            guild_id,
            channel_id,
            at,
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
        row = await self._fetchrow(
            f"""
            INSERT INTO alert_channels AS a (guild_id, channel_id, snoozed_until, steps, acknowledged_at)
            VALUES ($1, $2, $3::float8, $4::integer, $5::float8)
            ON CONFLICT (guild_id, channel_id) DO UPDATE SET
                snoozed_until = COALESCE($3::float8, a.snoozed_until), steps = a.steps + $4::integer,
                acknowledged_at = COALESCE($5::float8, a.acknowledged_at)
            RETURNING {ALERT_CHANNEL_COLUMNS}
            """,
            guild_id,
            channel_id,
            snoozed_until,
            int(more_steps),
            acknowledged_at,
        )
        return AlertChannel(*row)

    # ------------------------------------------------------------------ privacy

    async def _delete_rows(self, guild_id: int, tables: Sequence[str]) -> int:
        async with self._connection() as connection, connection.transaction():
            self._forget_buffered(guild_id)
            deleted = 0
            for table in tables:  # children first, counted explicitly (cascaded rows are not in the status)
                deleted += _rowcount(await connection.execute(f"DELETE FROM {table} WHERE guild_id = $1", guild_id))
        return deleted

    async def prune(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        deleted = 0
        async with self._connection() as connection, connection.transaction():
            status = await connection.execute(
                "UPDATE corrections SET dedup_hash = NULL, voter_hash = NULL "
                "WHERE dedup_hash IS NOT NULL AND created_at < $1::float8 - " + _RETENTION.format(alias="corrections"),
                now,
                DEFAULT_RETENTION_DAYS,
            )
            deleted += _rowcount(status)
            for table in STATISTICS_TABLES:
                status = await connection.execute(
                    f"DELETE FROM {table} WHERE bucket_start < $1::float8 - " + _RETENTION.format(alias=table),
                    now,
                    DEFAULT_RETENTION_DAYS,
                )
                deleted += _rowcount(status)
        return deleted


async def _rollback(transaction: Any) -> None:
    """Roll back, ignoring a connection that is already gone (the server then drops the transaction itself)."""
    with contextlib.suppress(*DRIVER_ERRORS):
        await transaction.rollback()


class _PostgresSchema(MigrationTarget):
    """The database as the migration runner sees it: the version is the one row of ``moodring_schema``, and a session
    advisory lock is held throughout, so of several processes opening a fresh database at once exactly one applies
    each migration; the others wait, then find nothing to do."""

    noun = "database"

    def __init__(self, connection: asyncpg.Connection, name: str) -> None:
        super().__init__(name)
        self.connection = connection

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        await self.connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        try:
            await self.connection.execute(
                "CREATE TABLE IF NOT EXISTS moodring_schema (version INTEGER NOT NULL);"
                "INSERT INTO moodring_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM moodring_schema)"
            )
            yield
        finally:
            # A connection that died meanwhile has lost its session lock anyway; its error is the one to report.
            with contextlib.suppress(*DRIVER_ERRORS):
                await self.connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.connection.transaction()

    async def version(self) -> int:
        return await self.connection.fetchval("SELECT version FROM moodring_schema")

    async def set_version(self, version: int) -> None:
        await self.connection.execute("UPDATE moodring_schema SET version = $1", version)

    async def run(self, script: str) -> None:
        await self.connection.execute(script)

    async def up_to_date(self, version: int) -> None:
        """Nothing to do: the version row stays as it is."""


async def _adopt_member_key(connection: asyncpg.Connection, name: str, key: bytes) -> None:
    """In a database from before the deployment key, replace each member hash by HMAC(key, old hash) and delete the
    salt, in one transaction. Of several processes opening it at once, the one whose DELETE takes the salt does it;
    the others wait on that row, then find no salt."""
    async with connection.transaction():
        if await connection.fetchval("DELETE FROM store_secrets WHERE name = $1 RETURNING name", SALT_SECRET) is None:
            return
        rows = await connection.fetch("SELECT id, dedup_hash FROM corrections WHERE dedup_hash IS NOT NULL")
        await connection.executemany(
            "UPDATE corrections SET dedup_hash = $1 WHERE id = $2", [(rehash(key, h), i) for i, h in rows]
        )
    log.info("%s: member hashes now keyed with the deployment key; the old salt is deleted", name)


# --------------------------------------------------------------------------------------------- notifications


async def notify(url: str, channel: str, payload: str, *, timeout: float) -> None:
    """Send one ``NOTIFY`` on ``channel`` over a connection of its own, closed after; ``timeout`` seconds for each
    step. Raises ``StoreError``."""
    with _driver_errors(redact_url(url)):
        connection = await asyncpg.connect(url, timeout=timeout)
        try:
            await connection.execute("SELECT pg_notify($1, $2)", channel, payload, timeout=timeout)
        finally:
            await connection.close(timeout=timeout)


class Listener:
    """A connection of its own that LISTENs on one channel, for as long as ``listen``'s block runs (or holds session
    advisory locks: ``LockHolder``)."""

    def __init__(self, connection: asyncpg.Connection, name: str, timeout: float) -> None:
        self._connection = connection
        self._name = name
        self._timeout = timeout
        self._lost = asyncio.Event()
        connection.add_termination_listener(lambda _: self._lost.set())

    async def until_lost(self, ping_interval: float, on_ping: Callable[[], None] | None = None) -> NoReturn:
        """Wait until the connection is lost, pinging every ``ping_interval`` seconds so that one that is silently
        gone is found too (and calling ``on_ping`` after each ping that answered); then raise
        ``TransientStoreError`` (or the error of the ping that failed)."""
        with _driver_errors(self._name):
            while not self._lost.is_set() and not self._connection.is_closed():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._lost.wait(), ping_interval)
                    break
                await self._connection.execute("SELECT 1", timeout=self._timeout)
                if on_ping is not None:
                    on_ping()
        raise TransientStoreError("the dedicated connection was closed")


@contextlib.asynccontextmanager
async def listen(
    url: str, channel: str, on_payload: Callable[[str], None], *, timeout: float
) -> AsyncIterator[Listener]:
    """A dedicated connection that LISTENs on ``channel`` during the block and calls ``on_payload`` with each
    notification's payload (on the event loop); terminated after. Raises ``StoreError`` when it cannot connect or
    listen (``timeout`` seconds to connect)."""
    name = redact_url(url)
    with _driver_errors(name):
        connection = await asyncpg.connect(url, timeout=timeout)
    try:
        listener = Listener(connection, name, timeout)
        with _driver_errors(name):
            await connection.add_listener(channel, lambda _connection, _pid, _channel, payload: on_payload(payload))
        yield listener
    finally:
        if not connection.is_closed():
            connection.terminate()


class LockHolder(Listener):
    """A connection of its own that holds session advisory locks for as long as ``hold_locks``'s block runs. A
    session lock lives as long as its connection: when ``until_lost`` raises, every lock taken here may already be
    another session's."""

    async def lock(self, space: int, key: int, on_busy: Callable[[], None]) -> None:
        """Take the advisory lock (``space``, ``key``): at once if it is free, else call ``on_busy`` once and wait
        (without a time limit) until the session that holds it releases it or ends. Raises ``StoreError``."""
        if await self.try_lock(space, key):
            return
        on_busy()
        with _driver_errors(self._name):
            await self._connection.execute("SELECT pg_advisory_lock($1, $2)", space, key, timeout=None)

    def terminate(self) -> None:
        """End the connection now (its locks are released, and a wait in ``lock`` raises ``StoreError``)."""
        self._connection.terminate()

    async def try_lock(self, space: int, key: int) -> bool:
        """Take the advisory lock (``space``, ``key``) if it is free; whether it was. Raises ``StoreError``."""
        with _driver_errors(self._name):
            return await self._connection.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)", space, key, timeout=self._timeout
            )


@contextlib.asynccontextmanager
async def hold_locks(url: str, application_name: str, *, timeout: float) -> AsyncIterator[LockHolder]:
    """A dedicated connection (named ``application_name`` in ``pg_stat_activity``) for session advisory locks during
    the block; terminated after, which releases them all. Raises ``StoreError`` when it cannot connect."""
    name = redact_url(url)
    with _driver_errors(name):
        connection = await asyncpg.connect(url, timeout=timeout, server_settings={"application_name": application_name})
    try:
        yield LockHolder(connection, name, timeout)
    finally:
        if not connection.is_closed():
            connection.terminate()


# --------------------------------------------------------------------------------------------- errors


@contextlib.contextmanager
def _driver_errors(name: str) -> Iterator[None]:
    """The engine's boundary: a driver error in the block leaves it as ``_store_error``'s ``StoreError``."""
    try:
        yield
    except DRIVER_ERRORS as error:
        # A configuration error may quote the URL, password and all: not kept as the cause.
        raise _store_error(name, error) from (None if isinstance(error, asyncpg.ClientConfigurationError) else error)


def _transient(error: BaseException) -> bool:
    """Whether trying again later can succeed by itself (see ``TRANSIENT_SQLSTATE_CLASSES``): for the server's errors
    by their SQLSTATE; the client's (a lost or broken connection, a socket error, a timeout) are, except a bad
    setting or a server without a feature."""
    if isinstance(error, asyncpg.PostgresError):
        state = error.sqlstate or ""
        return state[:2] in TRANSIENT_SQLSTATE_CLASSES or state in TRANSIENT_SQLSTATES
    if isinstance(error, asyncpg.ClientConfigurationError | asyncpg.UnsupportedServerFeatureError):
        return False
    return isinstance(error, DRIVER_ERRORS)


def _store_error(name: str, error: BaseException) -> StoreError:
    """What to tell the operator when the database at ``name`` (the URL without its password) cannot be used."""
    if isinstance(error, StoreError):
        return error
    # One line: a server error's text may go on with DETAIL and HINT lines (a unique violation names the key).
    text = " ".join(str(error).split())
    if isinstance(error, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        return PermanentStoreError(
            f"PostgreSQL refused the user or password in MOODRING_DATABASE ({name}): {text}. Check the user name "
            "and password in the URL (postgresql://user:password@host:port/database)."
        )
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        return PermanentStoreError(
            f"the database in MOODRING_DATABASE ({name}) does not exist: create it (createdb, or CREATE DATABASE) "
            "and start the bot again."
        )
    if isinstance(error, asyncpg.InsufficientPrivilegeError):
        return PermanentStoreError(
            f"the user in MOODRING_DATABASE ({name}) may not create or use the bot's tables: {text}. Make it the "
            "owner of the database, or grant it CREATE on the schema."
        )
    if isinstance(error, asyncpg.ClientConfigurationError | ValueError):
        return PermanentStoreError(
            f"MOODRING_DATABASE is not a valid PostgreSQL URL ({name}): {text}. Write it as "
            "postgresql://user:password@host:port/database, or give a file path for SQLite."
        )
    if isinstance(error, OSError | TimeoutError | asyncpg.CannotConnectNowError | asyncpg.InterfaceError):
        reason = getattr(error, "strerror", None) or text or type(error).__name__
        return TransientStoreError(
            f"cannot connect to PostgreSQL at {name}: {reason}. Check that the server runs and that the host and "
            "port in MOODRING_DATABASE are right."
        )
    if _transient(error):
        reason = text or type(error).__name__
        return TransientStoreError(f"PostgreSQL at {name} cannot serve the store now: {reason}")
    if isinstance(error, asyncpg.PostgresError):
        return PermanentStoreError(f"PostgreSQL at {name} refused the store: {text}")
    return PermanentStoreError(f"cannot use PostgreSQL at {name}: {type(error).__name__}: {text}")
