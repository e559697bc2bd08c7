"""The bot's single SQLite file: channel/guild settings, hourly emotion statistics and summary schedules.

Everything goes through one aiosqlite connection. The file is in WAL mode with ``synchronous=NORMAL``: a
committed transaction survives a crash of the bot process (SIGKILL, OOM, an exception), and SQLite's
transactions mean a crash never leaves a half-written or corrupt file.

Statistics are written in groups. ``Store.record`` only appends to an in-memory buffer, so the message hot
path never waits on the disk; a background flusher writes the whole buffer every ``flush_interval`` seconds
(default 0.25) in ONE transaction, aggregated into hourly buckets with UPSERTs.

Crash-loss bound: a crash loses at most the analyses recorded during the last ``flush_interval`` (250 ms
by default) plus those of the one in-flight flush transaction (the buffer is swapped out when that
transaction starts and is only counted as flushed once it commits). A clean ``close()`` flushes
everything. While writes fail (disk full, read-only file, a lock held past ``busy_timeout``) the flusher
retries with exponential back-off up to ``FLUSH_BACKOFF_CAP`` intervals (16 s by default), logs one warning
per outage and one line when writes work again; the buffer is capped at ``max_pending`` entries (default
50,000): the oldest are dropped and counted in ``Store.dropped``, so memory never grows without bound.

One bot per file: ``open`` takes an advisory lock (``flock``) on ``<file>.lock`` for the store's lifetime,
so a second bot on the same file is refused with a ``StoreError`` naming it. Start-up problems (a missing
or unwritable directory, a read-only, locked or damaged file) are ``StoreError``s that say what to do.

Channel settings are read on every message, so they are kept in memory (loaded at ``open``, updated by
every change): the message path never reads SQLite, so it never queues behind a prune or a ``/mood``.

Privacy: no user ids are stored anywhere; statistics are per guild, channel and hour. Message text is stored in
one place only: the ``corrections`` table, for servers that opted in (``set_corrections_enabled``), holding the
normalised text a member corrected. One correction per member per message is enforced with a salted hash (the
salt lives in the file, so the hash cannot be matched against a user id without it) that ``prune`` erases once
the guild's retention period has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import math
import os
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self

import aiosqlite

from bot.backoff import Backoff

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "MIGRATIONS",
    "ChannelSettings",
    "Correction",
    "CorrectionOutcome",
    "MoodSummary",
    "Schedule",
    "ScheduleKind",
    "Store",
    "StoreError",
]

log = logging.getLogger(__name__)

BUCKET_SECONDS = 3600
DEFAULT_RETENTION_DAYS = 90
DEFAULT_FLUSH_INTERVAL = 0.25
DEFAULT_MAX_PENDING = 50_000
DEFAULT_BUSY_TIMEOUT_MS = 5_000
FLUSH_BACKOFF_CAP = 64  # flush intervals: 16 s at the default interval

ScheduleKind = Literal["daily", "weekly", "every"]
#: What became of a correction: kept, refused as the member's second one for that message, or refused because the
#: server does not collect corrections (checked in the same transaction as the write).
CorrectionOutcome = Literal["stored", "duplicate", "disabled"]

# Ordered schema migrations; MIGRATIONS[i] upgrades a file from user_version i to i + 1. Append only: never
# edit a migration that has shipped.
MIGRATIONS: list[str] = [
    # 1: per-channel settings, the first thing the bot needs.
    """
    CREATE TABLE channel_settings (
        guild_id INTEGER NOT NULL,
        channel_id INTEGER NOT NULL,
        analysis INTEGER NOT NULL DEFAULT 1,
        reactions INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (guild_id, channel_id)
    );
    """,
    # 2: hourly statistics, summary schedules and guild settings.
    """
    CREATE TABLE channel_buckets (
        guild_id INTEGER NOT NULL,
        channel_id INTEGER NOT NULL,
        bucket_start INTEGER NOT NULL,
        messages INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (guild_id, channel_id, bucket_start)
    ) WITHOUT ROWID;
    CREATE INDEX channel_buckets_guild_time ON channel_buckets (guild_id, bucket_start);

    CREATE TABLE emotion_buckets (
        guild_id INTEGER NOT NULL,
        channel_id INTEGER NOT NULL,
        bucket_start INTEGER NOT NULL,
        label TEXT NOT NULL,
        count INTEGER NOT NULL DEFAULT 0,
        score_sum REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (guild_id, channel_id, bucket_start, label),
        FOREIGN KEY (guild_id, channel_id, bucket_start)
            REFERENCES channel_buckets (guild_id, channel_id, bucket_start) ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE INDEX emotion_buckets_guild_time ON emotion_buckets (guild_id, bucket_start);

    CREATE TABLE summary_schedules (
        id INTEGER PRIMARY KEY,
        guild_id INTEGER NOT NULL,
        channel_id INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('daily', 'weekly', 'every')),
        hour INTEGER CHECK (hour IS NULL OR hour BETWEEN 0 AND 23),
        weekday INTEGER CHECK (weekday IS NULL OR weekday BETWEEN 0 AND 6),
        every_hours INTEGER CHECK (every_hours IS NULL OR every_hours >= 1),
        source_channel_id INTEGER NULL,
        last_posted_at REAL NULL,
        enabled INTEGER NOT NULL DEFAULT 1,
        disabled_reason TEXT NULL,
        UNIQUE (guild_id, channel_id),
        CHECK (kind <> 'daily' OR hour IS NOT NULL),
        CHECK (kind <> 'weekly' OR (hour IS NOT NULL AND weekday IS NOT NULL)),
        CHECK (kind <> 'every' OR every_hours IS NOT NULL)
    );

    CREATE TABLE guild_settings (
        guild_id INTEGER PRIMARY KEY,
        retention_days INTEGER NOT NULL DEFAULT 90 CHECK (retention_days >= 1)
    );
    """,
    # 3: community corrections (opt-in per guild), the only table with message text, and the salt of their hashes.
    """
    ALTER TABLE guild_settings ADD COLUMN corrections INTEGER NOT NULL DEFAULT 0;

    CREATE TABLE corrections (
        id INTEGER PRIMARY KEY,
        guild_id INTEGER NOT NULL,
        channel_id INTEGER NOT NULL,
        text TEXT NOT NULL,
        labels TEXT NOT NULL,
        model_labels TEXT NOT NULL,
        model_version TEXT NOT NULL,
        created_at REAL NOT NULL,
        dedup_hash TEXT NULL UNIQUE
    );
    CREATE INDEX corrections_guild_time ON corrections (guild_id, created_at);

    CREATE TABLE store_secrets (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    INSERT INTO store_secrets (name, value) VALUES ('corrections_salt', randomblob(32));
    """,
]


class StoreError(Exception):
    """The database file cannot be used (the message names it and says what to do), or the store is closed."""


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    analysis: bool = True
    reactions: bool = False


DEFAULT_CHANNEL_SETTINGS = ChannelSettings()


@dataclass(frozen=True, slots=True)
class Correction:
    """A member's answer to "Not quite?": the labels they chose for the text the model saw, and what the model said.

    ``labels`` and ``model_labels`` are in the order given (the model's ranked); no one's id is part of it.
    """

    guild_id: int
    channel_id: int
    text: str
    labels: tuple[str, ...]
    model_labels: tuple[str, ...]
    model_version: str
    created_at: float


@dataclass(slots=True)
class MoodSummary:
    """Totals over a time range: analysed messages, and per-label counts and score sums."""

    messages: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    label_score_sums: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Schedule:
    id: int
    guild_id: int
    channel_id: int  # where the summary is posted
    kind: ScheduleKind
    hour: int | None  # 0-23 UTC, daily and weekly
    weekday: int | None  # 0 = Monday, weekly
    every_hours: int | None  # every
    source_channel_id: int | None  # None = the whole guild
    last_posted_at: float | None
    enabled: bool
    disabled_reason: str | None


# (guild_id, channel_id, at, ((label, score), ...))
_Entry = tuple[int, int, float, tuple[tuple[str, float], ...]]

_SCHEDULE_COLUMNS = (
    "id, guild_id, channel_id, kind, hour, weekday, every_hours, source_channel_id, last_posted_at, enabled, "
    "disabled_reason"
)

# Children before parents (emotion_buckets references channel_buckets).
_STATISTICS_TABLES = ("emotion_buckets", "channel_buckets")
_SETTINGS_TABLES = ("channel_settings", "summary_schedules", "guild_settings")
_CORRECTION_COLUMNS = "guild_id, channel_id, text, labels, model_labels, model_version, created_at"

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


def bucket_start(at: float) -> int:
    """The start (unix seconds, UTC) of the hourly bucket containing ``at``."""
    return int(at // BUCKET_SECONDS) * BUCKET_SECONDS


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


def _schedule(row: sqlite3.Row | tuple) -> Schedule:
    return Schedule(
        id=row[0],
        guild_id=row[1],
        channel_id=row[2],
        kind=row[3],
        hour=row[4],
        weekday=row[5],
        every_hours=row[6],
        source_channel_id=row[7],
        last_posted_at=row[8],
        enabled=bool(row[9]),
        disabled_reason=row[10],
    )


def _filter(guild_id: int, channel_id: int | None, since: float, until: float) -> tuple[str, list[object]]:
    """WHERE clause and parameters for one guild (or one of its channels) and buckets in [since, until)."""
    if channel_id is None:
        return "guild_id = ? AND bucket_start >= ? AND bucket_start < ?", [guild_id, since, until]
    return (
        "guild_id = ? AND channel_id = ? AND bucket_start >= ? AND bucket_start < ?",
        [guild_id, channel_id, since, until],
    )


class Store:
    """Async access to the bot's SQLite file. Open with ``await Store.open(path)``, close with ``await close()``.

    Attributes for observability: ``pending`` (recorded, not yet committed), ``recorded_total``,
    ``flushed_total`` (committed), ``dropped`` (lost to the buffer bound), ``forgotten`` (buffered
    entries discarded by ``forget_guild`` or ``remove_guild``) and ``failed_flushes``; always
    ``recorded_total == flushed_total + pending + dropped + forgotten``.
    """

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
        self._db = db
        self.path = path
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self._lock_fd = lock_fd  # holds the one-bot-per-file lock until close
        # Every settings row, kept current by each change. A key whose write ended in an error (it may or may
        # not have committed) is "unknown" and read back from the file once.
        self._settings: dict[tuple[int, int], ChannelSettings] = settings or {}
        self._settings_unknown: set[tuple[int, int]] = set()
        # One connection: every transaction (and every read, so it never sees another one half done) holds it.
        self._lock = asyncio.Lock()
        self._buffer: deque[_Entry] = deque()
        self._in_flight = 0
        self._overflowing = False
        self._closed = False  # close() has begun: no more record()/flush()
        self._db_closed = False
        self._stopping = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._close_task: asyncio.Future[None] | None = None
        self.recorded_total = 0
        self.flushed_total = 0
        self.dropped = 0
        self.forgotten = 0
        self._flush_backoff = Backoff("writing statistics", log, cap=FLUSH_BACKOFF_CAP, expected=(sqlite3.Error,))
        self._dropped_before_outage = 0

    @property
    def failed_flushes(self) -> int:
        """Background flushes that failed since open (each retried with back-off)."""
        return self._flush_backoff.total_failures

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
    ) -> Store:
        """Open (creating it and its parent directories if needed) and migrate the file, start the flusher.

        ``exclusive`` takes the one-bot-per-file lock; ``False`` is for a program that shares the file with a
        running bot. Raises ``StoreError`` naming the file and what to do when the directory cannot be
        created or written, another bot holds the file, or SQLite finds it read-only, locked or damaged.
        """
        if flush_interval <= 0 or max_pending < 1 or busy_timeout_ms < 0:
            raise ValueError("flush_interval must be > 0, max_pending >= 1 and busy_timeout_ms >= 0")
        path = os.fspath(path)
        lock_fd = None
        if path != ":memory:":
            _make_directory(path)
            if exclusive:
                lock_fd = _lock(path)
        try:
            db, settings = await _connect(path, busy_timeout_ms)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        store = cls(
            db, path, flush_interval=flush_interval, max_pending=max_pending, lock_fd=lock_fd, settings=settings
        )
        store._flusher = asyncio.create_task(store._flush_loop(), name=f"store-flusher:{path}")
        return store

    async def close(self) -> None:
        """Stop the flusher, write everything still buffered, and close the connection.

        Idempotent; concurrent callers all wait for the same close, which a cancelled caller does not abort.
        """
        if self._close_task is None:
            self._closed = True
            self._stopping.set()
            self._close_task = asyncio.ensure_future(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        try:
            if self._flusher is not None:
                await asyncio.wait([self._flusher])  # does not raise if someone cancelled the flusher
            await self._flush()
        except BaseException:
            log.exception("final flush failed: %d analyses lost", self.pending)
            raise
        finally:
            async with self._lock:
                self._db_closed = True
                try:
                    await self._db.close()
                finally:
                    if self._lock_fd is not None:
                        os.close(self._lock_fd)  # releases the lock
                        self._lock_fd = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction. IMMEDIATE takes the write lock up front, so a second connection waits on
        busy_timeout instead of failing when it upgrades a read transaction."""
        async with self._lock:
            self._check_open()
            async with _transaction(self._db, "BEGIN IMMEDIATE") as db:
                yield db

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        """A read transaction: one consistent snapshot across the queries inside it."""
        async with self._lock:
            self._check_open()
            async with _transaction(self._db, "BEGIN") as db:
                yield db

    def _check_open(self) -> None:
        # Calls that were already waiting for the lock when close() began still run before the connection
        # closes; later ones get a clear error instead of aiosqlite's ValueError.
        if self._db_closed:
            raise StoreError("store is closed")

    async def _write_returning(self, sql: str, params: Sequence[object] | dict[str, object]) -> tuple:
        """Run one ``... RETURNING`` statement in its own write transaction; its single row."""
        async with self._write() as db, db.execute(sql, params) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise StoreError("statement returned no row")
        return tuple(row)

    async def _fetchall(self, sql: str, params: Sequence[object]) -> list[tuple]:
        """One SELECT: atomic by itself, so no explicit transaction."""
        async with self._lock:
            self._check_open()
            return [tuple(row) for row in await self._db.execute_fetchall(sql, params)]

    # ------------------------------------------------------------------ settings

    async def channel_settings(self, guild_id: int, channel_id: int) -> ChannelSettings:
        """From memory: no SQLite read, no wait for the connection (this is on the per-message path).

        Only a channel whose last change ended in an error (its outcome unknown) is read back, once; if that read
        fails too, the value from before the change is used.
        """
        self._check_open()
        key = (guild_id, channel_id)
        if key in self._settings_unknown:
            async with self._lock:
                self._check_open()
                if key in self._settings_unknown:
                    try:
                        rows = await self._db.execute_fetchall(
                            "SELECT analysis, reactions FROM channel_settings WHERE guild_id = ? AND channel_id = ?",
                            key,
                        )
                    except sqlite3.Error as error:
                        log.warning("could not read back the settings of channel %s: %s", channel_id, error)
                    else:
                        found = ChannelSettings(bool(rows[0][0]), bool(rows[0][1])) if rows else None
                        self._cache_settings(key, found)
        return self._settings.get(key, DEFAULT_CHANNEL_SETTINGS)

    def _cache_settings(self, key: tuple[int, int], settings: ChannelSettings | None) -> None:
        if settings is None:
            self._settings.pop(key, None)
        else:
            self._settings[key] = settings
        self._settings_unknown.discard(key)

    async def set_channel_settings(
        self, guild_id: int, channel_id: int, *, analysis: bool | None = None, reactions: bool | None = None
    ) -> ChannelSettings:
        """Change only the given fields (the others keep their value, or the default for a new row)."""
        if analysis is None and reactions is None:
            return await self.channel_settings(guild_id, channel_id)
        key = (guild_id, channel_id)
        params = {
            "guild_id": guild_id,
            "channel_id": channel_id,
            "analysis": None if analysis is None else bool(analysis),
            "reactions": None if reactions is None else bool(reactions),
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
        # The cache changes under the same lock as the file, after the commit: no other change can come between.
        async with self._lock:
            self._check_open()
            try:
                async with _transaction(self._db, "BEGIN IMMEDIATE") as db, db.execute(sql, params) as cursor:
                    row = await cursor.fetchone()
            except BaseException:
                self._settings_unknown.add(key)  # cancelled during COMMIT, say: it may have been written
                raise
            settings = ChannelSettings(bool(row[0]), bool(row[1]))
            self._cache_settings(key, settings)
        return settings

    async def guild_channel_settings(self, guild_id: int) -> dict[int, ChannelSettings]:
        """The channels of a guild that have a settings row (the others use the defaults)."""
        rows = await self._fetchall(
            "SELECT channel_id, analysis, reactions FROM channel_settings WHERE guild_id = ? ORDER BY channel_id",
            (guild_id,),
        )
        return {channel_id: ChannelSettings(bool(a), bool(r)) for channel_id, a, r in rows}

    async def retention_days(self, guild_id: int) -> int:
        rows = await self._fetchall("SELECT retention_days FROM guild_settings WHERE guild_id = ?", (guild_id,))
        return int(rows[0][0]) if rows else DEFAULT_RETENTION_DAYS

    async def set_retention_days(self, guild_id: int, days: int) -> int:
        if int(days) < 1:
            raise ValueError("retention must be at least one day")
        async with self._write() as db:
            await db.execute(
                "INSERT INTO guild_settings (guild_id, retention_days) VALUES (?, ?) "
                "ON CONFLICT (guild_id) DO UPDATE SET retention_days = excluded.retention_days",
                (guild_id, int(days)),
            )
        return int(days)

    # ------------------------------------------------------------------ corrections

    async def corrections_enabled(self, guild_id: int) -> bool:
        """Whether the guild collects "Not quite?" corrections (off unless an admin turned it on)."""
        rows = await self._fetchall("SELECT corrections FROM guild_settings WHERE guild_id = ?", (guild_id,))
        return bool(rows[0][0]) if rows else False

    async def set_corrections_enabled(self, guild_id: int, enabled: bool) -> bool:
        async with self._write() as db:
            await db.execute(
                "INSERT INTO guild_settings (guild_id, corrections) VALUES (?, ?) "
                "ON CONFLICT (guild_id) DO UPDATE SET corrections = excluded.corrections",
                (guild_id, int(bool(enabled))),
            )
        return bool(enabled)

    async def has_corrected(self, guild_id: int, message_key: str, member_id: int) -> bool:
        """Whether this member's correction of this message is already kept (within the retention period)."""
        async with self._read() as db:
            digest = await _member_digest(db, guild_id, message_key, member_id)
            rows = await db.execute_fetchall("SELECT 1 FROM corrections WHERE dedup_hash = ?", (digest,))
        return bool(rows)

    async def add_correction(self, correction: Correction, *, message_key: str, member_id: int) -> CorrectionOutcome:
        """Keep a correction unless the guild has corrections off or the member already corrected ``message_key``.

        ``member_id`` is only hashed (with the file's salt, the guild and the message key), never written.
        """
        if not correction.text or not 1 <= len(correction.labels) <= 3:
            raise ValueError("a correction needs its text and one to three labels")
        async with self._write() as db:
            enabled = await db.execute_fetchall(
                "SELECT corrections FROM guild_settings WHERE guild_id = ?", (correction.guild_id,)
            )
            if not enabled or not enabled[0][0]:
                return "disabled"
            digest = await _member_digest(db, correction.guild_id, message_key, member_id)
            async with db.execute(
                f"INSERT INTO corrections ({_CORRECTION_COLUMNS}, dedup_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (dedup_hash) DO NOTHING",
                (
                    correction.guild_id,
                    correction.channel_id,
                    correction.text,
                    ",".join(correction.labels),
                    ",".join(correction.model_labels),
                    correction.model_version,
                    correction.created_at,
                    digest,
                ),
            ) as cursor:
                return "stored" if cursor.rowcount > 0 else "duplicate"

    async def corrections(self, guild_id: int | None = None, *, contributing: bool = False) -> list[Correction]:
        """Every correction of one guild (or of all of them), oldest first; `contributing`: only those of guilds
        that collect corrections now (what training uses: a guild that turns them off stops contributing)."""
        conditions, params = [], []
        if guild_id is not None:
            conditions.append("guild_id = ?")
            params.append(guild_id)
        if contributing:
            conditions.append("guild_id IN (SELECT guild_id FROM guild_settings WHERE corrections = 1)")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = await self._fetchall(f"SELECT {_CORRECTION_COLUMNS} FROM corrections {where} ORDER BY id", params)
        return [
            Correction(
                guild_id=g,
                channel_id=c,
                text=text,
                labels=tuple(labels.split(",")),
                model_labels=tuple(m for m in model_labels.split(",") if m),
                model_version=version,
                created_at=at,
            )
            for g, c, text, labels, model_labels, version, at in rows
        ]

    async def clear_corrections(self, guild_id: int) -> int:
        """Delete every correction of one guild; returns how many."""
        async with self._write() as db, db.execute("DELETE FROM corrections WHERE guild_id = ?", (guild_id,)) as cur:
            return cur.rowcount

    # ------------------------------------------------------------------ statistics: writes

    @property
    def pending(self) -> int:
        """Recorded analyses not yet committed (buffered plus the in-flight transaction)."""
        return len(self._buffer) + self._in_flight

    def record(
        self,
        guild_id: int,
        channel_id: int,
        labels_with_scores: Sequence[tuple[str, float]],
        at: float | None = None,
    ) -> None:
        """Buffer one analysed message (its predicted labels and their scores); never touches the disk.

        The entry is normalised here so that a malformed call fails at its call site, not later inside
        (and for ever breaking) a flush transaction.
        """
        if self._closed:
            raise StoreError("store is closed")
        labels = tuple((str(label), float(score)) for label, score in labels_with_scores)
        if any(not math.isfinite(score) for _, score in labels):
            raise ValueError("scores must be finite")
        self._buffer.append((int(guild_id), int(channel_id), time.time() if at is None else float(at), labels))
        self.recorded_total += 1
        self._trim()

    def _trim(self) -> None:
        excess = len(self._buffer) - self.max_pending
        if excess <= 0:
            return
        for _ in range(excess):
            self._buffer.popleft()
        self.dropped += excess
        if not self._overflowing:
            self._overflowing = True
            if not self._flush_backoff.failing:  # an outage's one warning already said so
                log.warning(
                    "statistics buffer over %d entries (is the disk stuck?): dropping the oldest analyses",
                    self.max_pending,
                )

    async def flush(self) -> int:
        """Write the buffer now, in one transaction; returns the number of analyses written."""
        if self._closed:
            raise StoreError("store is closed")
        return await self._flush()

    async def _flush(self) -> int:
        async with self._lock:
            if not self._buffer:
                return 0
            entries = list(self._buffer)
            self._buffer.clear()
            self._in_flight = len(entries)
            channel_rows: dict[tuple[int, int, int], int] = {}
            emotion_rows: dict[tuple[int, int, int, str], list[float]] = {}
            for guild_id, channel_id, at, labels in entries:
                key = (guild_id, channel_id, bucket_start(at))
                channel_rows[key] = channel_rows.get(key, 0) + 1
                for label, score in labels:
                    totals = emotion_rows.setdefault((*key, label), [0, 0.0])
                    totals[0] += 1
                    totals[1] += score
            db = self._db
            committing = False
            try:
                await db.execute("BEGIN IMMEDIATE")
                # Parents first: emotion_buckets references channel_buckets.
                await db.executemany(_UPSERT_CHANNEL_BUCKET, [(*k, n) for k, n in channel_rows.items()])
                await db.executemany(_UPSERT_EMOTION_BUCKET, [(*k, int(c), s) for k, (c, s) in emotion_rows.items()])
                committing = True
                await db.execute("COMMIT")
            except BaseException as error:
                rolled_back = await _rollback(db)
                # Cancelled while aiosqlite's thread ran COMMIT: it did commit, so re-buffering would count twice.
                committed = committing and not rolled_back and not isinstance(error, sqlite3.Error)
                if committed:
                    self.flushed_total += len(entries)
                else:  # nothing was written: put the entries back in front of what arrived meanwhile
                    self._buffer.extendleft(reversed(entries))
                    self._trim()
                raise
            finally:
                self._in_flight = 0
            self.flushed_total += len(entries)
            if self._flush_backoff.failing:
                dropped = self.dropped - self._dropped_before_outage
                self._flush_backoff.succeeded(f"; {dropped} analyses dropped meanwhile")
            elif self._overflowing:
                log.warning("statistics buffer drained; %d analyses dropped so far", self.dropped)
            self._overflowing = False
            return len(entries)

    async def _flush_loop(self) -> None:
        """Flush every ``flush_interval``; after failures, wait 2, 4, ... up to ``FLUSH_BACKOFF_CAP`` intervals.

        Never ends before ``close()``: any error of a flush is counted, logged once per outage, and retried.
        """
        intervals = 1
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), intervals * self.flush_interval)
            if self._stopping.is_set():
                return  # close() does the final flush
            try:
                await self._flush()
            except Exception as error:
                if not self._flush_backoff.failing:
                    self._dropped_before_outage = self.dropped
                cap = FLUSH_BACKOFF_CAP * self.flush_interval
                consequence = (
                    f"; keeping up to {self.max_pending} analyses in memory (the oldest are dropped beyond that), "
                    f"tries at most {cap:g} s apart"
                )
                intervals = self._flush_backoff.failed(error, consequence)
            else:
                intervals = 1

    # ------------------------------------------------------------------ statistics: queries

    async def mood(self, guild_id: int, channel_id: int | None, since: float, until: float) -> MoodSummary:
        """Totals over the hourly buckets starting in [since, until); ``channel_id=None`` = the whole guild."""
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
        summary = MoodSummary(messages=int(next(iter(messages_row))[0]))
        for label, count, score_sum in label_rows:
            summary.label_counts[label] = int(count)
            summary.label_score_sums[label] = float(score_sum)
        return summary

    async def timeline(
        self, guild_id: int, channel_id: int | None, since: float, until: float
    ) -> list[tuple[int, int, dict[str, int]]]:
        """``(bucket_start, messages, {label: count})`` per hourly bucket starting in [since, until), in order.

        Hours without any analysed message are omitted.
        """
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
        labels: dict[int, dict[str, int]] = {}
        for start, label, count in label_rows:
            labels.setdefault(int(start), {})[label] = int(count)
        return [(int(start), int(messages), labels.get(int(start), {})) for start, messages in bucket_rows]

    # ------------------------------------------------------------------ schedules

    async def upsert_schedule(
        self,
        guild_id: int,
        channel_id: int,
        kind: ScheduleKind,
        *,
        hour: int | None = None,
        weekday: int | None = None,
        every_hours: int | None = None,
        source_channel_id: int | None = None,
    ) -> Schedule:
        """Create or replace the schedule posting into ``channel_id`` (one per target channel).

        A replaced schedule keeps its id and ``last_posted_at`` (so editing it does not post twice in one
        period) and is enabled again.
        """
        if kind == "daily":
            if hour is None or weekday is not None or every_hours is not None:
                raise ValueError("a daily schedule takes an hour only")
        elif kind == "weekly":
            if hour is None or weekday is None or every_hours is not None:
                raise ValueError("a weekly schedule takes an hour and a weekday")
        elif kind == "every":
            if every_hours is None or hour is not None or weekday is not None:
                raise ValueError("an 'every' schedule takes every_hours only")
        else:
            raise ValueError(f"unknown schedule kind {kind!r}")
        if hour is not None and not 0 <= hour <= 23:
            raise ValueError("hour must be 0-23 (UTC)")
        if weekday is not None and not 0 <= weekday <= 6:
            raise ValueError("weekday must be 0 (Monday) to 6 (Sunday)")
        if every_hours is not None and every_hours < 1:
            raise ValueError("every_hours must be at least 1")
        row = await self._write_returning(
            f"""
                INSERT INTO summary_schedules
                    (guild_id, channel_id, kind, hour, weekday, every_hours, source_channel_id)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (guild_id, channel_id) DO UPDATE SET
                    kind = excluded.kind, hour = excluded.hour, weekday = excluded.weekday,
                    every_hours = excluded.every_hours, source_channel_id = excluded.source_channel_id,
                    enabled = 1, disabled_reason = NULL
                RETURNING {_SCHEDULE_COLUMNS}
                """,
            (guild_id, channel_id, kind, hour, weekday, every_hours, source_channel_id),
        )
        return _schedule(row)

    async def schedules(self, guild_id: int | None = None) -> list[Schedule]:
        """All enabled schedules (``guild_id=None``, for the scheduler), or every schedule of one guild."""
        if guild_id is None:
            sql, params = f"SELECT {_SCHEDULE_COLUMNS} FROM summary_schedules WHERE enabled = 1 ORDER BY id", ()
        else:
            sql = f"SELECT {_SCHEDULE_COLUMNS} FROM summary_schedules WHERE guild_id = ? ORDER BY id"
            params = (guild_id,)
        return [_schedule(row) for row in await self._fetchall(sql, params)]

    async def _update_schedule(self, sql: str, params: Sequence[object]) -> bool:
        async with self._write() as db, db.execute(sql, params) as cursor:
            return cursor.rowcount > 0

    async def mark_posted(self, schedule_id: int, at: float) -> bool:
        """Set ``last_posted_at`` (a new schedule starts at its next slot, not with a catch-up post)."""
        return await self._update_schedule(
            "UPDATE summary_schedules SET last_posted_at = ? WHERE id = ?", (at, schedule_id)
        )

    async def claim_slot(self, schedule_id: int, slot: float, at: float) -> bool:
        """Record, before posting, that the summary of ``slot`` is posted at ``at``; False when it already was.

        Atomic: of any number of callers (ticks, processes) exactly one gets True for a slot. Claiming before
        sending means a failed write sends nothing (the next tick tries again), and a post can never be repeated
        because its record failed; a send that fails gives the slot back with ``release_slot``.
        """
        return await self._update_schedule(
            "UPDATE summary_schedules SET last_posted_at = ? "
            "WHERE id = ? AND enabled = 1 AND (last_posted_at IS NULL OR last_posted_at < ?)",
            (at, schedule_id, slot),
        )

    async def release_slot(self, schedule_id: int, at: float, previous: float | None) -> bool:
        """Undo ``claim_slot(..., at)`` (the post was not sent), unless the slot has been claimed again since."""
        return await self._update_schedule(
            "UPDATE summary_schedules SET last_posted_at = ? WHERE id = ? AND last_posted_at = ?",
            (previous, schedule_id, at),
        )

    async def disable_schedule(self, schedule_id: int, reason: str) -> bool:
        """Keep the schedule but stop posting (e.g. the bot lost access to the target channel)."""
        return await self._update_schedule(
            "UPDATE summary_schedules SET enabled = 0, disabled_reason = ? WHERE id = ?", (reason, schedule_id)
        )

    async def delete_schedule(self, schedule_id: int) -> bool:
        return await self._update_schedule("DELETE FROM summary_schedules WHERE id = ?", (schedule_id,))

    # ------------------------------------------------------------------ privacy

    async def forget_guild(self, guild_id: int) -> int:
        """Delete every statistics row of one guild, buffered ones included, and its corrections; returns the rows
        deleted."""
        return await self._delete_guild(guild_id, (*_STATISTICS_TABLES, "corrections"))

    async def remove_guild(self, guild_id: int) -> int:
        """Delete everything kept about a guild (the bot was removed from it): statistics, buffered ones
        included, corrections, channel and guild settings and summary schedules; returns the rows deleted."""
        return await self._delete_guild(guild_id, (*_STATISTICS_TABLES, "corrections", *_SETTINGS_TABLES))

    async def _delete_guild(self, guild_id: int, tables: Sequence[str]) -> int:
        settings = "channel_settings" in tables
        async with self._lock:
            self._check_open()
            keys = {key for key in (*self._settings, *self._settings_unknown) if key[0] == guild_id}
            try:
                async with _transaction(self._db, "BEGIN IMMEDIATE") as db:
                    # Under the lock no flush is in flight, so dropping buffered entries here is final.
                    kept = [entry for entry in self._buffer if entry[0] != guild_id]
                    self.forgotten += len(self._buffer) - len(kept)
                    self._buffer = deque(kept)
                    # Children first and explicitly: rows removed by ON DELETE CASCADE are not counted in rowcount.
                    deleted = 0
                    for table in tables:
                        async with db.execute(f"DELETE FROM {table} WHERE guild_id = ?", (guild_id,)) as cursor:
                            deleted += cursor.rowcount
            except BaseException:
                if settings:
                    self._settings_unknown.update(keys)  # cancelled during COMMIT, say: read back what is there
                raise
            if settings:
                for key in keys:
                    self._cache_settings(key, None)
        return deleted

    async def prune(self, now: float | None = None) -> int:
        """Delete buckets older than each guild's retention (``DEFAULT_RETENTION_DAYS`` without a setting), and
        erase the member hashes of corrections that old (their "Not quite?" buttons have expired); returns the rows
        deleted or erased."""
        now = time.time() if now is None else now
        deleted = 0
        async with self._write() as db:
            async with db.execute(
                """
                UPDATE corrections SET dedup_hash = NULL WHERE dedup_hash IS NOT NULL AND created_at < :now - 86400 *
                    COALESCE((SELECT retention_days FROM guild_settings AS g WHERE g.guild_id = corrections.guild_id),
                    :default_days)
                """,
                {"now": now, "default_days": DEFAULT_RETENTION_DAYS},
            ) as cursor:
                deleted += cursor.rowcount
            for table in ("emotion_buckets", "channel_buckets"):
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


async def _member_digest(db: aiosqlite.Connection, guild_id: int, message_key: str, member_id: int) -> str:
    """The salted hash that stands for "this member corrected this message" (inside the caller's transaction)."""
    rows = await db.execute_fetchall("SELECT value FROM store_secrets WHERE name = 'corrections_salt'")
    salt = bytes(next(iter(rows))[0])
    return hashlib.sha256(salt + f"{int(guild_id)}:{message_key}:{int(member_id)}".encode()).hexdigest()


def _make_directory(path: str) -> None:
    directory = Path(path).parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(
            f"cannot create the directory {directory} for the database {path}: {error.strerror or error}. "
            "Create it, writable by the user that runs the bot, or set MOODRING_DATABASE to a writable place."
        ) from error


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
        raise StoreError(
            f"{path} is in use by another moodring process{f' (PID {holder})' if holder.isdigit() else ''}: "
            "one database serves one bot. Stop the other bot first, or set MOODRING_DATABASE to another file "
            f"(the lock is {lock_path})."
        ) from None
    except OSError as error:
        os.close(fd)
        raise StoreError(f"cannot lock {lock_path} for the database {path}: {error.strerror or error}.") from error
    with contextlib.suppress(OSError):  # only informative
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _unwritable_directory(path: str, lock_path: str, error: OSError) -> StoreError:
    return StoreError(
        f"cannot create {lock_path} beside the database {path}: {error.strerror or error}. The user that runs "
        f"the bot needs write access to the directory {Path(path).parent}, or set MOODRING_DATABASE to a "
        "writable place."
    )


async def _connect(path: str, busy_timeout_ms: int) -> tuple[aiosqlite.Connection, dict]:
    """Connect, configure and migrate; the connection and every channel settings row.

    SQLite's errors about the file itself become ``StoreError``s that say what to do.
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
        await _migrate(db, path)
        rows = await db.execute_fetchall("SELECT guild_id, channel_id, analysis, reactions FROM channel_settings")
    except BaseException as error:
        await db.close()
        if isinstance(error, sqlite3.Error):
            raise _open_error(path, error) from error
        raise
    return db, {(g, c): ChannelSettings(bool(a), bool(r)) for g, c, a, r in rows}


def _open_error(path: str, error: sqlite3.Error) -> Exception:
    """What to tell the operator when SQLite cannot use the file; other errors (a bug) are returned as they are."""
    code = getattr(error, "sqlite_errorcode", 0) & 0xFF
    directory, name = Path(path).parent, Path(path).name
    if code == sqlite3.SQLITE_READONLY:
        return StoreError(
            f"{path} is read-only: give the user that runs the bot write access to it and to its directory "
            f"{directory} (SQLite keeps {name}-wal and {name}-shm beside it)."
        )
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreError(
            f"{path} is locked by another program (a sqlite3 shell, a backup, a file sync?): close it and start "
            "the bot again."
        )
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return StoreError(
            f"{path} is not a moodring database or is damaged ({error}): move it away to start with an empty "
            f"one, or restore a backup (`sqlite3 {path} .recover` may save what is left)."
        )
    if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH):
        return StoreError(
            f"cannot open {path} ({error}): it and its directory {directory} must be readable and writable by "
            "the user that runs the bot."
        )
    if code == sqlite3.SQLITE_FULL:
        return StoreError(f"the disk holding {path} is full: free some space and start the bot again.")
    if code == sqlite3.SQLITE_IOERR:
        return StoreError(f"reading or writing {path} failed ({error}): check the disk.")
    return error


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
        raise StoreError(f"could not switch {path} to WAL mode (journal_mode is {mode!r})")


async def _migrate(db: aiosqlite.Connection, path: str) -> None:
    """Apply the missing migrations, each in its own transaction together with its user_version bump.

    The version is re-read once the write lock is held, so two processes opening the same file at once
    apply each migration exactly once.
    """
    latest = len(MIGRATIONS)
    while True:
        async with _transaction(db, "BEGIN IMMEDIATE"):
            async with db.execute("PRAGMA user_version") as cursor:
                row = await cursor.fetchone()
            version = int(row[0]) if row else 0
            if version > latest:
                raise StoreError(
                    f"{path} has schema version {version}, newer than this bot supports ({latest}); "
                    "upgrade the bot or use another database file"
                )
            if version == latest:
                # A write, so that a read-only file is found now rather than by the first flush.
                await db.execute(f"PRAGMA user_version = {latest}")
                return
            for statement in _statements(MIGRATIONS[version]):
                await db.execute(statement)
            await db.execute(f"PRAGMA user_version = {version + 1}")
        log.info("migrated %s to schema version %d", path, version + 1)


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
