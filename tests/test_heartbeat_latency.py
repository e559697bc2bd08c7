"""The gateway's heartbeat ACK and discord.py's latency: no false "Can't keep up ... websocket is 41.3s behind".

discord.py's keep-alive thread sends a heartbeat through the event loop and records the send time only once that
send has completed and the thread has woken up again (discord/gateway.py, `KeepAliveHandler.run`). An ACK that
arrives and is handled on the loop before that (the stand-in answered at once, over loopback) is measured from the
previous beat: a whole heartbeat interval. Discord's ACK comes a network round trip later; the stand-in waits
`sandbox.gateway.HEARTBEAT_ACK_DELAY_S` before acknowledging, as Discord's round trip would.
"""

from __future__ import annotations

import asyncio
import threading
import time

import discord
import pytest
from standin_fixtures import running_bot

from sandbox import DiscordStandIn

INTERVAL_MS = 1000
BEATS = 10


@pytest.mark.timing  # latencies: alone on the machine
@pytest.mark.discord_standin(heartbeat_interval=INTERVAL_MS)
async def test_latency_is_a_round_trip_not_a_heartbeat_interval_on_a_busy_bot(
    discord_standin: DiscordStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conditions that showed the warning in the sandbox: a loop busy with work and another Python thread
    (the model's) competing for the GIL, over several heartbeats with a short interval."""
    latencies: list[float] = []
    original_ack = discord.gateway.KeepAliveHandler.ack

    def recording_ack(handler: discord.gateway.KeepAliveHandler) -> None:
        original_ack(handler)
        latencies.append(handler.latency)

    monkeypatch.setattr(discord.gateway.KeepAliveHandler, "ack", recording_ack)
    stop = threading.Event()

    def model_thread() -> None:  # pure-Python work that holds the GIL in slices, as inference bookkeeping does
        while not stop.is_set():
            sum(i * i for i in range(20_000))

    async def busy_loop() -> None:  # handlers that run for a few milliseconds at a time
        while True:
            deadline = time.perf_counter() + 0.004
            while time.perf_counter() < deadline:
                pass
            await asyncio.sleep(0)

    client = discord.Client(intents=discord.Intents.none())
    worker = threading.Thread(target=model_thread, daemon=True)
    worker.start()
    try:
        async with running_bot(client, discord_standin):
            load = asyncio.create_task(busy_loop())
            try:
                deadline = asyncio.get_running_loop().time() + 60
                while len(latencies) < BEATS and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.05)
            finally:
                load.cancel()
    finally:
        stop.set()
        worker.join()
    assert len(latencies) >= BEATS, latencies
    # A latency of a whole interval was measured from the previous beat (the send time was not recorded yet); a busy
    # loop and the GIL make a real one a few tens of milliseconds, far below half an interval.
    assert max(latencies) < INTERVAL_MS / 1000 / 2, [round(x, 3) for x in latencies]
