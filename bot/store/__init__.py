"""The bot's store: settings, hourly statistics, summary schedules, mood alerts, corrections, in SQLite or PostgreSQL.

``interface`` holds the engine-independent part (data classes, the write buffer, the contract every engine keeps);
``sqlite`` and ``postgres`` are the engines; ``schema`` declares the tables, which the numbered scripts in
``migrations/`` create (run by ``migrate``); ``errors`` holds the only exceptions a store raises; ``transfer`` copies
a SQLite file into PostgreSQL. ``open_store`` picks the engine from ``MOODRING_DATABASE``; the engines are imported
only when chosen, so reading the settings never imports a database driver.
"""

from __future__ import annotations

import os
from typing import Any

from bot.store.errors import PermanentStoreError, StoreError, TransientStoreError
from bot.store.interface import (
    ALERT_SENSITIVITIES,
    DEFAULT_RETENTION_DAYS,
    AlertChannel,
    AlertCounts,
    AlertSensitivity,
    AlertSettings,
    ChannelSettings,
    Correction,
    CorrectionOutcome,
    MemberCorrection,
    MoodSummary,
    Schedule,
    ScheduleKind,
    Store,
    is_postgres_url,
    redact_url,
)

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
    "PermanentStoreError",
    "Schedule",
    "ScheduleKind",
    "Store",
    "StoreError",
    "TransientStoreError",
    "is_postgres_url",
    "open_store",
    "redact_url",
]


async def open_store(database: str | os.PathLike[str], **options: Any) -> Store:
    """Open the store that ``database`` names: a ``postgresql://`` URL or a SQLite file path.

    Options: ``flush_interval`` and ``max_pending`` for both engines, and each engine's own (see
    ``SqliteStore.open``, ``PostgresStore.open``).
    """
    if is_postgres_url(database):
        from bot.store.postgres import PostgresStore

        return await PostgresStore.open(str(database), **options)
    from bot.store.sqlite import SqliteStore

    return await SqliteStore.open(database, **options)
