"""The sandbox's stand-in in a process of its own, for tests/test_sandbox_soak.py (whose memory it measures).

Prints one JSON line (its addresses, token and cast), then answers every line read from stdin with one JSON line: its
resident memory (VmRSS, KiB) and, for everything it keeps, how much it holds and its bound (``None``: unbounded).
Stops at EOF.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import sys
from collections.abc import Sized
from pathlib import Path
from typing import Any

from moodring.sandbox_command import furnish
from sandbox import DiscordStandIn


def resident_kib() -> int:
    """This process's resident memory."""
    return int(re.search(r"^VmRSS:\s+(\d+) kB$", Path("/proc/self/status").read_text(), re.MULTILINE).group(1))


def kept(standin: DiscordStandIn) -> dict[str, Sized]:
    """Everything the stand-in records or accumulates while it runs, by name."""
    world, gateway = standin.world, standin.gateway
    buffers: dict[str, Sized] = {
        "requests": standin.requests,
        "unknown requests": standin.unknown,
        "gateway frames": gateway.frames,
        "gateway connect URLs": gateway.connect_urls,
        "world messages": world.messages,
        "world files": world.files,
        "world reactions": world.reactors,
        "world interactions": world.interactions,
        "guard refusals": standin.guard.refusals,
    }
    for session in gateway.sessions.values():
        buffers[f"events of session {session.session_id}"] = session.events
    return buffers


def report(standin: DiscordStandIn) -> dict[str, Any]:
    gc.collect()
    return {
        "rss_kib": resident_kib(),
        "sessions": len(standin.gateway.sessions),
        "buffers": {name: [len(buffer), getattr(buffer, "maxlen", None)] for name, buffer in kept(standin).items()},
    }


async def main() -> None:
    standin = DiscordStandIn(identify_window_s=0.0)
    cast = furnish(standin)
    async with standin:
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        info = {
            "base_url": standin.base_url,
            "token": standin.token,
            "application_id": standin.application_id,
            "guild_id": standin.guild_id,
            "channel_id": standin.channel_id,
            "member": cast.member,
        }
        print(json.dumps(info), flush=True)
        while await reader.readline():
            print(json.dumps(report(standin)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
