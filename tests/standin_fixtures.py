"""Point the unmodified discord.py client at a :class:`sandbox.DiscordStandIn`: the ``discord_standin`` fixture
and ``running_bot``.

Nothing in the bot needs a test-only branch: the fixture points discord.py at the stand-in with the bot's own
``bot.cli.point_discord_at`` (what ``moodring run`` does with MOODRING_DISCORD_API / MOODRING_DISCORD_GATEWAY).
Registered in tests/conftest.py via ``pytest_plugins``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import discord
import pytest

from bot.cli import point_discord_at
from sandbox import DiscordStandIn

_log = logging.getLogger(__name__)


async def stop_bot(bot: discord.Client, task: asyncio.Task[None] | None, *, timeout: float = 5.0) -> None:
    """Close ``bot`` and wait for its ``start()`` task to finish (cancelling it if it hangs)."""
    if not bot.is_closed():
        await bot.close()
    if task is None:
        return
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=timeout)


@contextlib.asynccontextmanager
async def running_bot(
    bot: discord.Client,
    standin: DiscordStandIn,
    *,
    token: str | None = None,
    wait_ready: bool = True,
    timeout: float = 10.0,
) -> AsyncIterator[discord.Client]:
    """Run ``bot.start(token)`` in a task; yield once it is ready (``on_ready`` fired); close it after.

    Errors from ``bot.start()`` (``LoginFailure``, ``PrivilegedIntentsRequired``...) are raised here.
    Tip: ``commands.Bot(..., guild_ready_timeout=0.05)`` makes READY fire without discord.py's
    default 2 s wait for further GUILD_CREATEs.
    """
    task = asyncio.create_task(bot.start(token or standin.token), name="discord-standin-bot")
    try:
        if wait_ready:
            deadline = asyncio.get_running_loop().time() + timeout
            while not bot.is_ready():
                if task.done():
                    task.result()  # raises what start() raised
                    raise RuntimeError("bot.start() returned before the bot became ready")
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"bot not ready after {timeout}s")
                await asyncio.sleep(0.01)
        yield bot
    except BaseException:
        with contextlib.suppress(Exception):
            await stop_bot(bot, task)
        if task.done() and not task.cancelled():
            task.exception()  # mark retrieved; the original error is the interesting one
        raise
    else:
        await stop_bot(bot, task)
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``discord_standin`` marker."""
    config.addinivalue_line(
        "markers",
        "discord_standin(**options): keyword arguments for the DiscordStandIn built by the discord_standin fixture",
    )


@pytest.fixture
async def discord_standin(request: pytest.FixtureRequest) -> AsyncIterator[DiscordStandIn]:
    """A running :class:`DiscordStandIn` with discord.py pointed at it (undone after the test).

    Configure it with ``@pytest.mark.discord_standin(heartbeat_interval=1000, ...)``. The test
    fails at teardown if a stand-in route handler crashed (a stand-in bug, not a bot bug). Discord's
    identify rate limit is off (``identify_window_s=0``) unless the marker sets it: a test that starts a
    second bot would otherwise wait discord.py's 5 s before it may identify again.
    """
    marker = request.node.get_closest_marker("discord_standin")
    options = {"identify_window_s": 0.0, **(marker.kwargs if marker is not None else {})}
    standin = DiscordStandIn(**options)
    async with standin:
        with point_discord_at(standin.api_base, standin.gateway_url):
            yield standin
    if standin.errors:
        pytest.fail("the Discord stand-in had internal errors:\n" + "\n".join(standin.errors), pytrace=False)
