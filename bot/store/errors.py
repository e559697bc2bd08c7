"""The store's errors: the only exceptions its public methods raise (besides ``ValueError`` for a bad argument).

Each engine turns its driver's errors (``sqlite3.Error``; asyncpg's errors, ``OSError`` and ``TimeoutError``) into one
of the two kinds below at its boundary, so no caller outside ``bot.store`` names a driver's exception. The message
names the database (a PostgreSQL URL without its password: every message goes through ``redact_urls``) and, where
it can, says what to do; the driver's error is kept as ``__cause__`` (except where it could carry the password).

- ``TransientStoreError``: trying again later can work by itself: the server is down, restarting or not accepting
  connections now, a connection was lost, a timeout, a lock held too long, a full or read-only disk. A loop retries
  it with back-off; ``moodring run`` exits 75 (EX_TEMPFAIL) so that a supervisor restarts it.
- ``PermanentStoreError``: nothing changes until someone fixes something: the credentials, the URL, a missing
  database, missing privileges, a schema newer than this bot, a damaged file, a statement the database refuses, or
  the store was closed. ``moodring run`` exits 2 (a setting to fix).
"""

from __future__ import annotations

from bot.store.redact import redact_urls

__all__ = ["PermanentStoreError", "StoreError", "TransientStoreError"]


class StoreError(Exception):
    """The database cannot be used (the message names it and says what to do). Raised only as one of its two kinds.

    The message is redacted here, once for all of them: a driver's error quoted in it may hold the URL, password
    and all."""

    def __init__(self, message: str) -> None:
        super().__init__(redact_urls(message))


class TransientStoreError(StoreError):
    """An outage: the same call can succeed later without anyone changing anything."""


class PermanentStoreError(StoreError):
    """A setting, a file or the schema must be fixed first (or the store was closed); retrying cannot help."""
