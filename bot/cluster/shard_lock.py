"""One owner per shard across the processes that share a PostgreSQL database (nothing here runs with SQLite).

The contract:

- **Before a shard connects** to Discord, its process takes the session advisory lock (`SHARD_LOCK_SPACE`, shard id)
  on a connection of its own (`bot.store.postgres.hold_locks`). While another process holds it, this one logs one line
  saying so and waits: that is how a rolling deploy hands over (start the new process, stop the old one; the new one
  connects the shard once the old one has closed it). The same `moodring run` started twice waits the same way.
- **The lock lives as long as that connection.** It is pinged every `ping_interval` seconds; when it is lost (server
  restart, failover, network), another process may take the lock at once, so this one first disconnects every shard
  it runs (`stop_shards`), then reconnects with back-off, takes each lock again (waiting as above), and only then
  connects its shards again (`start_shards`). Two owners never overlap, except for as long as a silently dead
  connection goes unnoticed on both sides (at most `ping_interval` plus the ping's timeout, here; the server
  releases the lock when it notices).
- The lock is keyed by shard id alone: processes that run different shard counts (a re-shard) lock the ids they have
  in common, which over-serialises but never lets two processes receive one guild's events under one count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from bot.backoff import Backoff
from bot.store import StoreError, redact_url
from bot.store.postgres import LockHolder, hold_locks

__all__ = ["APPLICATION_NAME", "SHARD_LOCK_SPACE", "ShardLocks"]

log = logging.getLogger(__name__)

#: The first key of a shard's advisory lock (the second is the shard id): "sh" in ASCII. Two-key advisory locks
#: never collide with one-key ones (the migration lock), so any fixed number serves.
SHARD_LOCK_SPACE = 0x7368
#: How the lock connection is named in `pg_stat_activity` (operators and tests find it by this).
APPLICATION_NAME = "moodring shard locks"
#: Seconds to connect and to ping before giving up on that try.
CONNECT_TIMEOUT = 10.0
#: Reconnect waits: `retry_interval` times 1, 2, 4 ... up to this many.
RETRY_CAP = 32


class ShardLocks:
    """Holds this process's shard locks; see the module docstring. `acquire` before a shard connects; `close` after
    every shard has closed (closing releases the locks)."""

    def __init__(
        self,
        url: str,
        *,
        stop_shards: Callable[[], Awaitable[None]],
        start_shards: Callable[[], Awaitable[None]],
        ping_interval: float = 5.0,
        retry_interval: float = 1.0,
    ) -> None:
        self.url = url
        self.stop_shards = stop_shards
        self.start_shards = start_shards
        self.ping_interval = ping_interval
        self.retry_interval = retry_interval
        self.held: set[int] = set()  # the shards whose lock this process holds (or held before the connection went)
        self._backoff = Backoff(
            f"holding the shard locks on {redact_url(url)}", log, cap=RETRY_CAP, expected=(StoreError,)
        )
        self._mutex = asyncio.Lock()
        self._holder: LockHolder | None = None
        self._connection: contextlib.AsyncExitStack | None = None
        self._watcher: asyncio.Task | None = None
        self._closed = False

    async def acquire(self, shard_id: int) -> bool:
        """Return once this process holds shard `shard_id`'s lock (at once if it does already): True; False when
        `close` was called meanwhile (the shard must not connect). Raises `StoreError` when the database cannot be
        reached."""
        async with self._mutex:
            if self._closed:
                return False
            if shard_id in self.held:
                return True
            try:
                await self._take(await self._connect(), shard_id)
            except StoreError:
                if self._closed:  # `close` ended the connection this was waiting on
                    return False
                raise
            self.held.add(shard_id)
            if self._watcher is None:
                self._watcher = asyncio.create_task(self._watch(), name="moodring-shard-locks")
            return True

    async def close(self) -> None:
        """Stop watching and release every lock (the connection is terminated, which also ends a wait in
        `acquire`); call it once every shard has closed."""
        self._closed = True
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        self._watcher = None
        if self._holder is not None:
            self._holder.terminate()
        async with self._mutex:
            await self._disconnect()
        self.held.clear()

    async def _connect(self) -> LockHolder:
        if self._holder is None:
            stack = contextlib.AsyncExitStack()
            self._holder = await stack.enter_async_context(
                hold_locks(self.url, APPLICATION_NAME, timeout=CONNECT_TIMEOUT)
            )
            self._connection = stack
        return self._holder

    async def _disconnect(self) -> None:
        stack, self._connection, self._holder = self._connection, None, None
        if stack is not None:
            await stack.aclose()

    async def _take(self, holder: LockHolder, shard_id: int) -> None:
        def busy() -> None:
            log.warning(
                "shard %d is run by another process on this database; waiting until it stops (a rolling deploy "
                "hands over this way)",
                shard_id,
            )

        await holder.lock(SHARD_LOCK_SPACE, shard_id, busy)

    async def _watch(self) -> None:
        """Ping the lock connection; when it is lost, stop the shards, take every lock again, start the shards."""
        while True:
            try:
                await self._holder.until_lost(self.ping_interval)  # connected: by `acquire`, then by `_retake`
            except StoreError as error:
                shards = ", ".join(map(str, sorted(self.held)))
                log.warning("lost the connection that holds the locks of shards %s (%s): stopping them", shards, error)
            await self.stop_shards()
            await self._retake()
            await self.start_shards()
            log.info("holding the locks of shards %s again: started them", ", ".join(map(str, sorted(self.held))))

    async def _retake(self) -> None:
        """Reconnect with back-off and take every held lock again."""
        while True:
            async with self._mutex:
                await self._disconnect()
                try:
                    holder = await self._connect()
                    for shard_id in sorted(self.held):
                        await self._take(holder, shard_id)
                except StoreError as error:
                    wait = self._backoff.failed(error, "; its shards stay stopped until then")
                else:
                    self._backoff.succeeded("")
                    return
            await asyncio.sleep(self.retry_interval * wait)
