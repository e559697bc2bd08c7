"""Auto-reactions with a bounded backlog.

Discord allows roughly four reactions a second per channel, and discord.py waits out each 429.
So each channel gets one worker adding reactions in order, with at most `max_pending` messages
waiting; work beyond that is skipped and counted, never queued without bound.
A worker survives any error with one message: it counts and logs it, backs off, and goes on with the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Sequence

import discord

from bot.backoff import Backoff

log = logging.getLogger(__name__)


class ReactionQueue:
    def __init__(self, counters: Counter[str], max_pending: int = 8, idle_seconds: float = 30.0) -> None:
        self.counters = counters
        self.max_pending = max_pending
        self.idle_seconds = idle_seconds
        self._queues: dict[int, asyncio.Queue] = {}
        self._workers: dict[int, asyncio.Task] = {}

    def submit(self, message: discord.Message, emojis: Sequence[str]) -> bool:
        """Queue reactions for `message`; False (and counted) when its channel's backlog is full."""
        channel_id = message.channel.id
        queue = self._queues.setdefault(channel_id, asyncio.Queue(maxsize=self.max_pending))
        try:
            queue.put_nowait((message, list(emojis)))
        except asyncio.QueueFull:
            self.counters["reactions_skipped_backlog"] += 1
            return False
        worker = self._workers.get(channel_id)
        if worker is None or worker.done():
            self._workers[channel_id] = asyncio.create_task(
                self._drain(channel_id, queue), name=f"reactions-{channel_id}"
            )
        return True

    async def _drain(self, channel_id: int, queue: asyncio.Queue) -> None:
        backoff = Backoff(f"adding reactions in channel {channel_id}", log, cap=60)  # 0.5 s doubling to 30 s
        while True:
            try:
                message, emojis = await asyncio.wait_for(queue.get(), self.idle_seconds)
            except TimeoutError:
                if queue.empty():
                    self._workers.pop(channel_id, None)
                    self._queues.pop(channel_id, None)
                    return
                continue
            try:
                await self._react(channel_id, message, emojis)
            except Exception as error:  # e.g. a dropped connection: this message loses its reactions, not the channel
                self.counters["reactions_failed"] += 1
                await asyncio.sleep(0.5 * backoff.failed(error, "; going on with the next message after a pause"))
            else:
                backoff.succeeded()

    async def _react(self, channel_id: int, message: discord.Message, emojis: list[str]) -> None:
        """Add `emojis` in order; Discord's refusals are counted and end this message's reactions."""
        for emoji in emojis:
            try:
                await message.add_reaction(emoji)
            except discord.Forbidden:
                self.counters["reactions_forbidden"] += 1
                log.warning("missing permission to react in channel %s; skipping", channel_id)
                return
            except discord.NotFound:
                self.counters["reactions_message_gone"] += 1
                return
            except discord.HTTPException as error:
                self.counters["reactions_failed"] += 1
                log.warning("could not add a reaction in channel %s: %s", channel_id, error)
                return
            self.counters["reactions_added"] += 1

    async def close(self) -> None:
        for task in self._workers.values():
            task.cancel()
        for task in self._workers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        self._queues.clear()
