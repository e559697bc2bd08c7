"""The bot's store: channel/guild settings, hourly emotion statistics, summary schedules and corrections.

One interface, two engines, chosen by ``MOODRING_DATABASE`` (``bot.store.open_store``): a file path is SQLite
(``bot.store.sqlite``, the default: one bot process per file), a ``postgresql://`` URL is PostgreSQL through an
asyncpg pool (``bot.store.postgres``: several bot processes may share one database). This module holds what both
share: the data classes, the statistics buffer with its background flusher and crash bound, the in-memory channel
settings, and the argument checks. Each engine module holds its SQL; the tables are declared in ``bot.store.schema``,
created by the migrations in bot/store/migrations/ (run by ``bot.store.migrate``), and every error a store raises is
one of ``bot.store.errors`` (transient: an outage; permanent: a setting to fix).

Statistics are written in groups. ``Store.record`` only appends to an in-memory buffer, so the message hot
path never waits on the database; a background flusher writes the whole buffer every ``flush_interval`` seconds
(default 0.25) in ONE transaction, aggregated into hourly buckets with UPSERTs that add to what is there (so
writers in several processes never lose an increment).

Crash-loss bound: a crash loses at most the analyses recorded during the last ``flush_interval`` (250 ms
by default) plus those of the one in-flight flush transaction (the buffer is swapped out when that
transaction starts and is only counted as flushed once it commits). A clean ``close()`` flushes
everything. While writes fail (disk full, read-only file, a lock held past ``busy_timeout``, a PostgreSQL server
that is down) the flusher retries with exponential back-off up to ``FLUSH_BACKOFF_CAP`` intervals (16 s by
default), logs one warning per outage and one line when writes work again; the buffer is capped at
``max_pending`` entries (default 50,000): the oldest are dropped and counted in ``Store.dropped``, so memory never
grows without bound.

Channel settings are read on every message, so they are kept in memory (loaded at ``open``, updated by
every change): the message path never reads the database, so it never queues behind a prune or a ``/mood``.

Privacy: no user ids are stored anywhere; statistics are per guild, channel and hour. Message text is stored in
one place only: the ``corrections`` table, for servers that opted in (``set_corrections_enabled``), holding the
normalised text a member corrected. One correction per member per message is enforced with a keyed hash (an HMAC
with the deployment key, kept outside the database: bot/store/member_key.py, so the hash cannot be matched against
a user id without it) that ``prune`` erases once the guild's retention period has passed; a second keyed hash,
the same for all of a member's corrections in every server, lets an export count members (``counted_corrections``)
and is erased with it. A database from before
the key held a salt instead: the first open with a key replaces each hash by HMAC(key, old hash) and deletes the
salt (``SALT_SECRET``).

A member who opts out (``/privacy choice:opt-out``) is kept as the keyed hash of their user id alone (one per user,
across all servers: ``bot.store.member_key.opt_out_digest``) until they opt in again; no guild deletion reaches it.
The opt-outs are read on every message, so they too are kept in memory: loaded at ``open``, changed by this store's
own writes at once, and read again when the change counter (one row, raised by every change in the same
transaction) has moved, which a store polls every ``opt_out_refresh_s`` seconds: the other processes sharing the
database honour an opt-out within that interval plus one poll.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import math
import os
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

from bot.backoff import Backoff
from bot.store.errors import PermanentStoreError, StoreError
from bot.store.member_key import MEMBER_KEY_HOWTO, member_digest, member_hash, opt_out_digest
from bot.store.redact import redact_url
from bot.store.schema import CORRECTION_TABLES, SETTINGS_TABLES, STATISTICS_TABLES

__all__ = [
    "ALERT_SENSITIVITIES",
    "DEFAULT_RETENTION_DAYS",
    "AlertChannel",
    "AlertCounts",
    "AlertSensitivity",
    "AlertSettings",
    "ChannelSettings",
    "Correction",
    "CorrectionOutcome",
    "MemberCorrection",
    "MoodSummary",
    "Schedule",
    "ScheduleKind",
    "Store",
    "is_postgres_url",
    "redact_url",
]

log = logging.getLogger(__name__)

BUCKET_SECONDS = 3600
DEFAULT_RETENTION_DAYS = 90
DEFAULT_FLUSH_INTERVAL = 0.25
DEFAULT_MAX_PENDING = 50_000
FLUSH_BACKOFF_CAP = 64  # flush intervals: 16 s at the default interval
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: The ``store_secrets`` row of a database from before the deployment key: the salt its member hashes were made with.
SALT_SECRET = "corrections_salt"

ScheduleKind = Literal["daily", "weekly", "every"]
#: How readily a guild's mood alerts fire (bot/alerts/detector.py maps each to a test level).
AlertSensitivity = Literal["low", "medium", "high"]
ALERT_SENSITIVITIES: tuple[AlertSensitivity, ...] = ("low", "medium", "high")
#: What became of a correction: kept, refused as the member's second one for that message, or refused because the
#: server does not collect corrections (checked in the same transaction as the write).
CorrectionOutcome = Literal["stored", "duplicate", "disabled"]


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


@dataclass(frozen=True, slots=True)
class MemberCorrection:
    """A correction as an export counts it: with ``member``, the keyed hash of whoever made it (the same for all of
    their corrections, in every server; never their id)."""

    member: str
    correction: Correction


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
    send_pending: bool = False  # the slot claimed at last_posted_at is not known to be posted yet


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """A guild's mood alerts (``/moodring alerts``): posted to ``mod_channel_id`` when a channel's share of messages
    carrying any of ``labels`` rises above its own baseline; ``role_id`` is mentioned (None: no one is pinged)."""

    guild_id: int
    mod_channel_id: int
    labels: tuple[str, ...]
    sensitivity: AlertSensitivity
    role_id: int | None
    enabled: bool
    disabled_reason: str | None  # why the bot switched them off (the moderators' channel went, say)


@dataclass(frozen=True, slots=True)
class AlertChannel:
    """One watched channel's alert state: no user id (who acknowledged is written in the alert message)."""

    guild_id: int
    channel_id: int
    snoozed_until: float | None = None
    steps: int = 0  # times a moderator pressed "Less sensitive" (each makes the test stricter)
    last_alert_at: float | None = None  # the claim of its latest alert
    acknowledged_at: float | None = None  # of that alert


@dataclass(frozen=True, slots=True)
class AlertCounts:
    """The alert counter over a span: messages analysed, and those carrying at least one watched emotion."""

    messages: int = 0
    watched: int = 0


#: How long a flush id is kept: far longer than any retry of its batch takes.
FLUSH_IDS_KEPT_S = 86400

# (guild_id, channel_id, at, ((label, score), ...))
_Entry = tuple[int, int, float, tuple[tuple[str, float], ...]]
#: Aggregated buckets of one flush: {(guild, channel, bucket_start): messages} and
#: {(guild, channel, bucket_start, label): (count, score_sum)}.
ChannelRows = dict[tuple[int, int, int], int]
EmotionRows = dict[tuple[int, int, int, str], tuple[int, float]]
#: The alert counter of one flush: {(guild, channel, bucket_start): (messages, watched)}, for guilds with alerts on.
AlertRows = dict[tuple[int, int, int], tuple[int, int]]


def bucket_start(at: float) -> int:
    """The start (unix seconds, UTC) of the hourly bucket containing ``at``."""
    return int(at // BUCKET_SECONDS) * BUCKET_SECONDS


def is_postgres_url(database: str | os.PathLike[str]) -> bool:
    """Whether ``database`` (``MOODRING_DATABASE``) names a PostgreSQL database rather than a SQLite file."""
    return isinstance(database, str) and database.startswith(POSTGRES_SCHEMES)


def schedule_from_row(row: Sequence[Any]) -> Schedule:
    """A ``Schedule`` from a row of ``bot.store.schema.SCHEDULE_COLUMNS``."""
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
        send_pending=bool(row[11]),
        disabled_reason=row[10],
    )


def member_correction_from_row(row: Sequence[Any]) -> MemberCorrection:
    """A ``MemberCorrection`` from a row of ``bot.store.schema.CORRECTION_COLUMNS`` followed by the member hash."""
    return MemberCorrection(member=row[-1], correction=correction_from_row(row[:-1]))


def correction_from_row(row: Sequence[Any]) -> Correction:
    """A ``Correction`` from a row of ``bot.store.schema.CORRECTION_COLUMNS`` (labels stored comma-separated)."""
    guild_id, channel_id, text, labels, model_labels, version, at = row
    return Correction(
        guild_id=guild_id,
        channel_id=channel_id,
        text=text,
        labels=tuple(labels.split(",")),
        model_labels=tuple(m for m in model_labels.split(",") if m),
        model_version=version,
        created_at=at,
    )


def summary_from_rows(messages: int, label_rows: Sequence[Sequence[Any]]) -> MoodSummary:
    """A ``MoodSummary`` from the message total and ``(label, SUM(count), SUM(score_sum))`` rows."""
    summary = MoodSummary(messages=int(messages))
    for label, count, score_sum in label_rows:
        summary.label_counts[label] = int(count)
        summary.label_score_sums[label] = float(score_sum)
    return summary


def timeline_from_rows(
    bucket_rows: Sequence[Sequence[Any]], label_rows: Sequence[Sequence[Any]]
) -> list[tuple[int, int, dict[str, int]]]:
    """``Store.timeline``'s result from ``(bucket_start, SUM(messages))`` and ``(bucket_start, label, SUM(count))``
    rows."""
    labels: dict[int, dict[str, int]] = {}
    for start, label, count in label_rows:
        labels.setdefault(int(start), {})[label] = int(count)
    return [(int(start), int(messages), labels.get(int(start), {})) for start, messages in bucket_rows]


def check_correction(correction: Correction) -> None:
    if not correction.text or not 1 <= len(correction.labels) <= 3:
        raise ValueError("a correction needs its text and one to three labels")


def check_schedule(kind: str, hour: int | None, weekday: int | None, every_hours: int | None) -> None:
    """Raise ``ValueError`` unless the fields fit the kind of schedule (the schema checks them again)."""
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


def alert_settings_from_row(row: Sequence[Any]) -> AlertSettings:
    """An ``AlertSettings`` from a row of ``bot.store.schema.ALERT_SETTINGS_COLUMNS`` (labels comma-separated)."""
    guild_id, channel_id, labels, sensitivity, role_id, enabled, reason = row
    return AlertSettings(guild_id, channel_id, tuple(labels.split(",")), sensitivity, role_id, bool(enabled), reason)


def counts_by_channel(rows: Sequence[Sequence[Any]]) -> dict[int, tuple[AlertCounts, AlertCounts]]:
    """``Store.alert_counts``' result from ``(channel_id, in_window, SUM(messages), SUM(watched))`` rows."""
    found: dict[int, list[AlertCounts]] = {}
    for channel_id, in_window, messages, watched in rows:
        spans = found.setdefault(int(channel_id), [AlertCounts(), AlertCounts()])
        spans[1 if in_window else 0] = AlertCounts(int(messages), int(watched))
    return {channel_id: (baseline, window) for channel_id, (baseline, window) in found.items()}


def check_alert_settings(mod_channel_id: int, labels: Sequence[str], sensitivity: str) -> tuple[str, ...]:
    """The labels as stored (sorted, distinct); ``ValueError`` for settings the schema would refuse."""
    watched = tuple(sorted({str(label) for label in labels}))
    if not watched or any(not label or "," in label for label in watched):
        raise ValueError("alerts watch at least one emotion, named without commas")
    if sensitivity not in ALERT_SENSITIVITIES:
        raise ValueError(f"sensitivity must be one of {', '.join(ALERT_SENSITIVITIES)}")
    if int(mod_channel_id) < 1:
        raise ValueError("alerts need a moderators' channel")
    return watched


def _aggregate(
    entries: Sequence[_Entry], watched: dict[int, frozenset[str]]
) -> tuple[ChannelRows, EmotionRows, AlertRows]:
    channel_rows: ChannelRows = {}
    emotion_rows: dict[tuple[int, int, int, str], list[float]] = {}
    alert_rows: dict[tuple[int, int, int], list[int]] = {}
    for guild_id, channel_id, at, labels in entries:
        key = (guild_id, channel_id, bucket_start(at))
        channel_rows[key] = channel_rows.get(key, 0) + 1
        for label, score in labels:
            totals = emotion_rows.setdefault((*key, label), [0, 0.0])
            totals[0] += 1
            totals[1] += score
        watching = watched.get(guild_id)
        if watching is not None:
            counts = alert_rows.setdefault(key, [0, 0])
            counts[0] += 1
            counts[1] += any(label in watching for label, _ in labels)
    emotions = {key: (int(count), score) for key, (count, score) in emotion_rows.items()}
    return channel_rows, emotions, {key: (messages, hits) for key, (messages, hits) in alert_rows.items()}


class Store(abc.ABC):
    """The store interface and what both engines share. Open with ``await bot.store.open_store(database)``
    (or an engine's own ``open``), close with ``await close()``.

    Errors: every public method (``open`` and ``close`` too) raises only ``StoreError``s for a database that cannot
    be used (``TransientStoreError`` for an outage, ``PermanentStoreError`` for a setting to fix or a closed store;
    bot/store/errors.py), and ``ValueError`` for a bad argument. Each engine turns its driver's errors into them.

    Attributes for observability: ``pending`` (recorded, not yet committed), ``recorded_total``,
    ``flushed_total`` (committed), ``dropped`` (lost to the buffer bound), ``forgotten`` (buffered
    entries discarded by ``forget_guild`` or ``remove_guild``) and ``failed_flushes``; always
    ``recorded_total == flushed_total + pending + dropped + forgotten``. Of the opt-outs' poll: ``opt_out_polls``
    (reads that worked, the one at open included), ``opt_out_reloads`` (those that found a change and read every
    opt-out) and ``opt_out_poll_failures``.
    """

    def __init__(
        self, name: str, *, flush_interval: float, max_pending: int, settings: dict[tuple[int, int], ChannelSettings]
    ) -> None:
        self.name = name  # the file, or the URL without its password: for messages
        #: The deployment key of member hashes (bot/store/member_key.py); None: this store hashes nobody.
        self.member_key: bytes | None = None
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        # Every settings row, kept current by each change. A key whose write ended in an error (it may or may
        # not have committed) is "unknown" and read back from the database once.
        self._settings: dict[tuple[int, int], ChannelSettings] = settings
        self._settings_unknown: set[tuple[int, int]] = set()
        # Held by every flush and guild deletion (so a deletion never races a flush of the same guild's buffer),
        # and by whatever else an engine needs to serialise (SQLite: its one connection).
        self._lock = asyncio.Lock()
        self._buffer: deque[_Entry] = deque()
        self._in_flight = 0
        self._overflowing = False
        self._closed = False  # close() has begun: no more record()/flush()
        self._db_closed = False
        self._stopping = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._close_task: asyncio.Future[None] | None = None
        self._flush_committed = False  # set by an engine's _write_buckets once its COMMIT went through
        self._flush_outcome_unknown = False  # set by an engine's _write_buckets when its COMMIT's answer was lost
        # A batch whose COMMIT's outcome is unknown, with its flush id: the next flush writes it again under that id,
        # which the engine skips if the id is in the database (that COMMIT went through).
        self._unsettled: tuple[str, list[_Entry]] | None = None
        self.recorded_total = 0
        self.flushed_total = 0
        self.dropped = 0
        self.forgotten = 0
        self._flush_backoff = Backoff("writing statistics", log, cap=FLUSH_BACKOFF_CAP, expected=(StoreError,))
        self._dropped_before_outage = 0
        # The opt-outs' keyed hashes, as of the change counter ``_opt_out_version`` (None: unknown, so the next poll
        # reads them all). ``_opt_out_lock`` keeps a poll and a change of this store from crossing.
        self._opt_outs: frozenset[str] = frozenset()
        self._opt_out_version: int | None = None
        self._opt_out_lock = asyncio.Lock()
        self._opt_out_poller: asyncio.Task[None] | None = None
        # Every failure of the poll is retried at the next interval (the interval is the promise); logged once.
        self._opt_out_backoff = Backoff("reading the opt-outs", log, cap=1, expected=(StoreError,))
        self.opt_out_polls = 0
        self.opt_out_reloads = 0
        # The watched emotions of every guild with alerts on, which each flush counts into alert_buckets: read at
        # open, changed by this store's own writes at once, and read again by every ``enabled_alert_settings`` (the
        # alert loop's, each minute: a change another process made is counted from then on).
        self._watched: dict[int, frozenset[str]] = {}
        # Raised by each of those own writes: a read that a write of this store overtook is not taken (it may
        # predate the write, and would undo it until the next read).
        self._watched_changes = 0

    @property
    def failed_flushes(self) -> int:
        """Background flushes that failed since open (each retried with back-off)."""
        return self._flush_backoff.total_failures

    @property
    def opt_out_poll_failures(self) -> int:
        """Polls of the opt-outs that failed since open (each tried again after the interval)."""
        return self._opt_out_backoff.total_failures

    # ------------------------------------------------------------------ lifecycle

    async def _open(self, opt_out_refresh_s: float | None) -> None:
        """The end of an engine's ``open``: read the opt-outs and the alerts' watched emotions, and start the
        flusher, and the opt-outs' poll every ``opt_out_refresh_s`` seconds (None: none, for a store that is the only
        writer of its database). When a read fails, the store is disconnected and the error raised."""
        try:
            await self.refresh_opt_outs()
            await self.enabled_alert_settings()
        except BaseException:
            self._db_closed = True
            await self._disconnect()
            raise
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"store-flusher:{self.name}")
        if opt_out_refresh_s is not None:
            self._opt_out_poller = asyncio.create_task(
                self._opt_out_loop(opt_out_refresh_s), name=f"store-opt-outs:{self.name}"
            )

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
            if self._opt_out_poller is not None:  # a poll waiting on the database would hold up the close
                self._opt_out_poller.cancel()
                await asyncio.wait([self._opt_out_poller])
            if self._flusher is not None:
                await asyncio.wait([self._flusher])  # does not raise if someone cancelled the flusher
            await self._flush()
        except BaseException as error:
            expected = isinstance(error, StoreError)  # the database's fault: one line; anything else: the traceback
            log.error(
                "final flush failed: %d analyses lost (%s)", self.pending, error, exc_info=None if expected else error
            )
            raise
        finally:
            async with self._lock:
                self._db_closed = True
                await self._disconnect()

    @abc.abstractmethod
    async def _disconnect(self) -> None:
        """Close the connection(s) and release what the engine holds (called once, under the lock)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        # Calls that were already waiting for the lock when close() began still run before the connection
        # closes; later ones get a clear error instead of the driver's.
        if self._db_closed:
            raise PermanentStoreError("store is closed")

    # ------------------------------------------------------------------ settings

    async def channel_settings(self, guild_id: int, channel_id: int) -> ChannelSettings:
        """From memory: no database read, no wait for a connection (this is on the per-message path).

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
                        found = await self._read_channel_settings(key)
                    except StoreError as error:
                        log.warning("could not read back the settings of channel %s: %s", channel_id, error)
                    else:
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
        # The cache changes under the same lock as the database, after the commit: no other change can come between.
        async with self._lock:
            self._check_open()
            try:
                settings = await self._upsert_channel_settings(
                    guild_id,
                    channel_id,
                    None if analysis is None else bool(analysis),
                    None if reactions is None else bool(reactions),
                )
            except BaseException:
                self._settings_unknown.add(key)  # cancelled during COMMIT, say: it may have been written
                raise
            self._cache_settings(key, settings)
        return settings

    @abc.abstractmethod
    async def _read_channel_settings(self, key: tuple[int, int]) -> ChannelSettings | None:
        """The channel's row (under the lock), None without one."""

    @abc.abstractmethod
    async def _upsert_channel_settings(
        self, guild_id: int, channel_id: int, analysis: bool | None, reactions: bool | None
    ) -> ChannelSettings:
        """Insert or update the channel's row (None: keep the value, or the default for a new row), in one
        transaction under the lock; the row as committed."""

    @abc.abstractmethod
    async def guild_channel_settings(self, guild_id: int) -> dict[int, ChannelSettings]:
        """The channels of a guild that have a settings row (the others use the defaults)."""

    @abc.abstractmethod
    async def retention_days(self, guild_id: int) -> int: ...

    async def set_retention_days(self, guild_id: int, days: int) -> int:
        if int(days) < 1:
            raise ValueError("retention must be at least one day")
        await self._set_guild_setting(guild_id, "retention_days", int(days))
        return int(days)

    @abc.abstractmethod
    async def _set_guild_setting(self, guild_id: int, column: str, value: object) -> None:
        """Upsert one column of the guild's ``guild_settings`` row (the others keep their value)."""

    # ------------------------------------------------------------------ corrections

    @abc.abstractmethod
    async def corrections_enabled(self, guild_id: int) -> bool:
        """Whether the guild collects "Not quite?" corrections (off unless an admin turned it on)."""

    async def set_corrections_enabled(self, guild_id: int, enabled: bool) -> bool:
        await self._set_guild_setting(guild_id, "corrections", bool(enabled))
        return bool(enabled)

    def _key(self) -> bytes:
        """The member key; ``PermanentStoreError`` for a store opened without one."""
        if self.member_key is None:
            raise PermanentStoreError(
                f"{self.name} was opened without a member key to hash members with: {MEMBER_KEY_HOWTO}"
            )
        return self.member_key

    def _member_digest(self, guild_id: int, message_key: str, member_id: int) -> str:
        return member_digest(self._key(), guild_id, message_key, member_id)

    def _member_hash(self, member_id: int) -> str:
        return member_hash(self._key(), member_id)

    @abc.abstractmethod
    async def has_corrected(self, guild_id: int, message_key: str, member_id: int) -> bool:
        """Whether this member's correction of this message is already kept (within the retention period)."""

    @abc.abstractmethod
    async def add_correction(self, correction: Correction, *, message_key: str, member_id: int) -> CorrectionOutcome:
        """Keep a correction unless the guild has corrections off or the member already corrected ``message_key``.

        ``member_id`` is only hashed, never written: with the deployment key, the guild and the message key (one
        correction per member per message), and with the key alone (``counted_corrections``' member).
        """

    @abc.abstractmethod
    async def corrections(self, guild_id: int | None = None, *, contributing: bool = False) -> list[Correction]:
        """Every correction of one guild (or of all of them), oldest first; `contributing`: only those of guilds
        that collect corrections now (what training uses: a guild that turns them off stops contributing)."""

    @abc.abstractmethod
    async def counted_corrections(self) -> list[MemberCorrection]:
        """The corrections an export counts, oldest first: those of guilds that collect corrections now that still
        carry their member's hash (``prune`` erases it after the guild's retention period, and corrections kept
        before schema version 7 have none)."""

    @abc.abstractmethod
    async def clear_corrections(self, guild_id: int) -> int:
        """Delete every correction of one guild; returns how many."""

    # ------------------------------------------------------------------ opt-outs

    def is_opted_out(self, member_id: int) -> bool:
        """Whether the member opted out of being read (``/privacy``), from memory: no database read, since this is
        on the per-message path. Raises ``PermanentStoreError`` for a store opened without the member key."""
        return opt_out_digest(self._key(), member_id) in self._opt_outs

    async def set_opted_out(self, member_id: int, opted_out: bool) -> bool:
        """Record a member's choice in every server: keep the keyed hash of their id (``opted_out``), or delete it;
        whether that changed anything. This store honours it at once, the others sharing the database at their next
        poll. Raises ``PermanentStoreError`` for a store opened without the member key."""
        digest = opt_out_digest(self._key(), member_id)
        async with self._opt_out_lock:
            self._check_open()
            try:
                changed = await self._write_opt_out(digest, bool(opted_out), time.time())
            except BaseException:
                self._opt_out_version = None  # cancelled during COMMIT, say: the next poll reads what is there
                raise
            self._opt_outs = self._opt_outs | {digest} if opted_out else self._opt_outs - {digest}
        return changed

    async def refresh_opt_outs(self) -> bool:
        """Read every opt-out again if the change counter moved since the last read (else only the counter is read);
        whether it had moved."""
        async with self._opt_out_lock:
            self._check_open()
            version, digests = await self._read_opt_outs(self._opt_out_version)
            self.opt_out_polls += 1
            if digests is None:
                return False
            self._opt_out_version, self._opt_outs = version, digests
            self.opt_out_reloads += 1
            return True

    async def _opt_out_loop(self, interval: float) -> None:
        """``refresh_opt_outs`` every ``interval`` seconds until ``close()``. A failed poll keeps the opt-outs read
        before, logs one warning per outage, and is tried again after the same interval."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)
            if self._stopping.is_set():
                return
            try:
                await self.refresh_opt_outs()
            except Exception as error:
                self._opt_out_backoff.failed(error, "; honouring the opt-outs read before")
            else:
                self._opt_out_backoff.succeeded()

    @abc.abstractmethod
    async def _read_opt_outs(self, known: int | None) -> tuple[int, frozenset[str] | None]:
        """The change counter and, unless it equals ``known``, every opt-out's digest (None when it does), both from
        one snapshot."""

    @abc.abstractmethod
    async def _write_opt_out(self, digest: str, opted_out: bool, at: float) -> bool:
        """Insert (at ``at``) or delete the digest's row and, if that changed a row, raise the change counter, in one
        transaction; whether it changed a row."""

    # ------------------------------------------------------------------ statistics: writes

    @property
    def pending(self) -> int:
        """Recorded analyses not yet known to be committed (buffered, the in-flight transaction, a batch whose
        COMMIT's outcome is unknown)."""
        return len(self._buffer) + self._in_flight + (len(self._unsettled[1]) if self._unsettled else 0)

    def record(
        self,
        guild_id: int,
        channel_id: int,
        labels_with_scores: Sequence[tuple[str, float]],
        at: float | None = None,
    ) -> None:
        """Buffer one analysed message (its predicted labels and their scores); never touches the database.

        The entry is normalised here so that a malformed call fails at its call site, not later inside
        (and for ever breaking) a flush transaction.
        """
        if self._closed:
            raise PermanentStoreError("store is closed")
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
                    "statistics buffer over %d entries (is the database stuck?): dropping the oldest analyses",
                    self.max_pending,
                )

    async def flush(self) -> int:
        """Write the buffer now, in one transaction; returns the number of analyses written."""
        if self._closed:
            raise PermanentStoreError("store is closed")
        return await self._flush()

    async def _flush(self) -> int:
        async with self._lock:
            if not self._buffer and self._unsettled is None:
                return 0
            written = 0
            if self._unsettled is not None:  # first the batch of unknown outcome, under its own id
                flush_id, entries = self._unsettled
                self._unsettled = None
                written += await self._write_batch(flush_id, entries)
            if self._buffer:
                entries = list(self._buffer)
                self._buffer.clear()
                written += await self._write_batch(uuid.uuid4().hex, entries)
            if self._flush_backoff.failing:
                dropped = self.dropped - self._dropped_before_outage
                self._flush_backoff.succeeded(f"; {dropped} analyses dropped meanwhile")
            elif self._overflowing:
                log.warning("statistics buffer drained; %d analyses dropped so far", self.dropped)
            self._overflowing = False
            return written

    async def _write_batch(self, flush_id: str, entries: list[_Entry]) -> int:
        """Write one batch (``_write_buckets``); on an error, count it, keep it to write again under the same id, or
        put it back in the buffer, as the engine found its COMMIT: through, unknown, or not reached."""
        self._in_flight = len(entries)
        self._flush_committed = self._flush_outcome_unknown = False
        try:
            await self._write_buckets(*_aggregate(entries, self._watched), flush_id)
        except BaseException:
            if self._flush_committed:  # cancelled after COMMIT went through: re-buffering would count twice
                self.flushed_total += len(entries)
            elif self._flush_outcome_unknown:  # the connection went during COMMIT: the next flush settles it
                self._unsettled = (flush_id, entries)
            else:  # nothing was written: put the entries back in front of what arrived meanwhile
                self._buffer.extendleft(reversed(entries))
                self._trim()
            raise
        finally:
            self._in_flight = 0
        self.flushed_total += len(entries)
        return len(entries)

    @abc.abstractmethod
    async def _write_buckets(
        self, channel_rows: ChannelRows, emotion_rows: EmotionRows, alert_rows: AlertRows, flush_id: str
    ) -> None:
        """Add the rows to the buckets and the alert counter in ONE transaction (under the lock), together with
        ``flush_id`` in ``statistics_flushes``; write nothing (and succeed) when ``flush_id`` is there already: an
        earlier try of this batch committed. Ids older than ``FLUSH_IDS_KEPT_S`` go in the same transaction. Sets
        ``_flush_committed`` when an error (a cancellation) arrives after the COMMIT went through,
        ``_flush_outcome_unknown`` when the COMMIT was sent and its answer lost."""

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

    @abc.abstractmethod
    async def mood(self, guild_id: int, channel_id: int | None, since: float, until: float) -> MoodSummary:
        """Totals over the hourly buckets starting in [since, until); ``channel_id=None`` = the whole guild."""

    @abc.abstractmethod
    async def timeline(
        self, guild_id: int, channel_id: int | None, since: float, until: float
    ) -> list[tuple[int, int, dict[str, int]]]:
        """``(bucket_start, messages, {label: count})`` per hourly bucket starting in [since, until), in order.

        Hours without any analysed message are omitted.
        """

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
        period) and is enabled again; a post of it still pending (``send_pending``) is given up.
        """
        check_schedule(kind, hour, weekday, every_hours)
        return await self._upsert_schedule(guild_id, channel_id, kind, hour, weekday, every_hours, source_channel_id)

    @abc.abstractmethod
    async def _upsert_schedule(
        self,
        guild_id: int,
        channel_id: int,
        kind: ScheduleKind,
        hour: int | None,
        weekday: int | None,
        every_hours: int | None,
        source_channel_id: int | None,
    ) -> Schedule: ...

    @abc.abstractmethod
    async def schedules(self, guild_id: int | None = None) -> list[Schedule]:
        """All enabled schedules (``guild_id=None``, for the scheduler), or every schedule of one guild."""

    @abc.abstractmethod
    async def mark_posted(self, schedule_id: int, at: float) -> bool:
        """Set ``last_posted_at`` (a new schedule starts at its next slot, not with a catch-up post)."""

    @abc.abstractmethod
    async def claim_slot(self, schedule_id: int, slot: float, at: float) -> bool:
        """Record, before posting, that the summary of ``slot`` is posted at ``at``; False when it already was.

        Atomic: of any number of callers (ticks, processes) exactly one gets True for a slot. Claiming before
        sending means a failed write sends nothing (the next tick tries again), and a post can never be repeated
        because its record failed; a send that Discord refused gives the slot back with ``release_slot``. The claim
        is ``send_pending`` until ``confirm_slot``: a send whose outcome is unknown is retried from that.
        """

    @abc.abstractmethod
    async def confirm_slot(self, schedule_id: int, at: float) -> bool:
        """The post claimed at ``at`` was sent (or given up): no longer ``send_pending``; False when the schedule was
        claimed again, released or replaced since."""

    @abc.abstractmethod
    async def release_slot(self, schedule_id: int, at: float, previous: float | None) -> bool:
        """Undo ``claim_slot(..., at)`` (the post was not sent), unless the slot has been claimed again since."""

    @abc.abstractmethod
    async def disable_schedule(self, schedule_id: int, reason: str) -> bool:
        """Keep the schedule but stop posting (e.g. the bot lost access to the target channel)."""

    @abc.abstractmethod
    async def delete_schedule(self, schedule_id: int) -> bool: ...

    # ------------------------------------------------------------------ mood alerts

    async def enabled_alert_settings(self) -> list[AlertSettings]:
        """Every guild's alert settings that are on (for the alert loop), by guild; the flushes count, from now on,
        exactly these guilds' watched emotions."""
        changes = self._watched_changes
        enabled = await self._enabled_alert_settings()
        if changes == self._watched_changes:
            self._watched = {settings.guild_id: frozenset(settings.labels) for settings in enabled}
        return enabled

    @abc.abstractmethod
    async def _enabled_alert_settings(self) -> list[AlertSettings]: ...

    @abc.abstractmethod
    async def alert_settings(self, guild_id: int) -> AlertSettings | None:
        """The guild's alert settings, on or off; None when they were never set."""

    async def set_alert_settings(
        self,
        guild_id: int,
        *,
        mod_channel_id: int,
        labels: Sequence[str],
        sensitivity: AlertSensitivity,
        role_id: int | None,
        enabled: bool,
    ) -> AlertSettings:
        """Create or replace the guild's alert settings (switched on or off as asked, with no reason kept).

        Changing the watched emotions deletes the guild's alert counter in the same transaction: a baseline is
        never a mix of two sets of emotions, so alerts wait until the new set has a baseline of its own.
        """
        watched = check_alert_settings(mod_channel_id, labels, sensitivity)
        saved = await self._upsert_alert_settings(
            AlertSettings(guild_id, int(mod_channel_id), watched, sensitivity, role_id, bool(enabled), None)
        )
        if saved.enabled:
            self._watched[guild_id] = frozenset(saved.labels)
        else:
            self._watched.pop(guild_id, None)
        self._watched_changes += 1
        return saved

    @abc.abstractmethod
    async def _upsert_alert_settings(self, settings: AlertSettings) -> AlertSettings:
        """Insert or replace the row and, when its labels changed, delete the guild's ``alert_buckets``, in one
        transaction; the row as committed."""

    async def disable_alerts(self, guild_id: int, reason: str) -> bool:
        """Switch the guild's alerts off (the bot cannot post them); True only for the call that switched them off,
        so of any number of callers (ticks, processes) one tells the admins."""
        changed = await self._disable_alerts(guild_id, reason)
        self._watched.pop(guild_id, None)
        self._watched_changes += 1
        return changed

    @abc.abstractmethod
    async def _disable_alerts(self, guild_id: int, reason: str) -> bool: ...

    @abc.abstractmethod
    async def alert_channels(self, guild_id: int) -> dict[int, AlertChannel]:
        """The guild's channels that have an alert state (the others have none: never alerted, snoozed or made
        less sensitive)."""

    @abc.abstractmethod
    async def alert_counts(
        self, guild_id: int, since: float, window_start: float, until: float
    ) -> dict[int, tuple[AlertCounts, AlertCounts]]:
        """Per channel of the guild with counts: (baseline, window), the counter summed over the hourly buckets
        starting in [since, window_start) and in [window_start, until)."""

    @abc.abstractmethod
    async def claim_alert(self, guild_id: int, channel_id: int, since: float, at: float) -> bool:
        """Record, before posting, that the channel's alert is posted at ``at``; False when it already had one at or
        after ``since`` (its cooldown) or is snoozed past ``at``. Atomic like ``claim_slot``: of any number of
        callers (ticks, processes) exactly one gets True; a send Discord refused gives it back with
        ``release_alert``."""

    @abc.abstractmethod
    async def release_alert(self, guild_id: int, channel_id: int, at: float, previous: float | None) -> bool:
        """Undo ``claim_alert(..., at)`` (the alert was not sent): ``last_alert_at`` back to ``previous``, unless it
        was claimed again since."""

    @abc.abstractmethod
    async def update_alert_channel(
        self,
        guild_id: int,
        channel_id: int,
        *,
        snoozed_until: float | None = None,
        more_steps: int = 0,
        acknowledged_at: float | None = None,
    ) -> AlertChannel:
        """A moderator's action on a channel's alert: snooze it until ``snoozed_until``, add ``more_steps`` to its
        "less sensitive" steps, or record ``acknowledged_at`` (None and 0: unchanged); the state as committed."""

    # ------------------------------------------------------------------ privacy

    async def forget_guild(self, guild_id: int) -> int:
        """Delete every statistics row of one guild (its alert counter included), buffered ones included, and its
        corrections; returns the rows deleted."""
        return await self._delete_guild(guild_id, (*STATISTICS_TABLES, *CORRECTION_TABLES))

    async def remove_guild(self, guild_id: int) -> int:
        """Delete everything kept about a guild (the bot was removed from it): statistics, buffered ones
        included, corrections, channel and guild settings, summary schedules and alert settings and states; returns
        the rows deleted. The
        opt-outs stay (as with ``forget_guild``): each is a member's own choice, in every server."""
        return await self._delete_guild(guild_id, (*STATISTICS_TABLES, *CORRECTION_TABLES, *SETTINGS_TABLES))

    async def _delete_guild(self, guild_id: int, tables: Sequence[str]) -> int:
        settings = "channel_settings" in tables
        if settings:
            self._watched.pop(guild_id, None)
            self._watched_changes += 1
        async with self._lock:
            self._check_open()
            keys = {key for key in (*self._settings, *self._settings_unknown) if key[0] == guild_id}
            try:
                deleted = await self._delete_rows(guild_id, tables)
            except BaseException:
                if settings:
                    self._settings_unknown.update(keys)  # cancelled during COMMIT, say: read back what is there
                raise
            if settings:
                for key in keys:
                    self._cache_settings(key, None)
        return deleted

    def _forget_buffered(self, guild_id: int) -> None:
        """Drop the guild's buffered entries (engines call it inside the deleting transaction, under the lock, so
        no flush is in flight and dropping them is final)."""
        kept = [entry for entry in self._buffer if entry[0] != guild_id]
        self.forgotten += len(self._buffer) - len(kept)
        self._buffer = deque(kept)
        if self._unsettled is not None:  # committed or not, the guild's rows of that batch are gone after this
            flush_id, entries = self._unsettled
            kept = [entry for entry in entries if entry[0] != guild_id]
            self.forgotten += len(entries) - len(kept)
            self._unsettled = (flush_id, kept)

    @abc.abstractmethod
    async def _delete_rows(self, guild_id: int, tables: Sequence[str]) -> int:
        """Delete the guild's rows from ``tables`` (children first) and its buffered entries (``_forget_buffered``)
        in one transaction, under the lock; the rows deleted."""

    @abc.abstractmethod
    async def prune(self, now: float | None = None) -> int:
        """Delete buckets older than each guild's retention (``DEFAULT_RETENTION_DAYS`` without a setting), and
        erase both member hashes of corrections that old (their "Not quite?" buttons have expired, and no export
        counts them any more); returns the rows deleted or erased."""


def make_directory(path: str) -> None:
    """Create the parent directory of a database file, or say what to do."""
    directory = Path(path).parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PermanentStoreError(
            f"cannot create the directory {directory} for the database {path}: {error.strerror or error}. "
            "Create it, writable by the user that runs the bot, or set MOODRING_DATABASE to a writable place."
        ) from error
