"""A sandbox that runs for long holds no more than one that runs for minutes: 10,000 messages through the page API
(with the page open, a bot answering, reacting, uploading and reconnecting, members running commands and another
site trying its luck) leave everything the stand-in keeps within its bound, and its memory flat."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from sandbox import DiscordStandIn, payloads
from sandbox.records import SESSION_EVENTS_KEPT

SOAK_STANDIN = Path(__file__).with_name("soak_standin.py")
MESSAGES = 10_000
#: Resident memory the stand-in's process may gain between message 2,000 and the last one.
MAX_GROWTH_MIB = 30


@contextlib.asynccontextmanager
async def standin_process(tmp_path: Path) -> AsyncIterator[tuple[dict[str, Any], asyncio.subprocess.Process]]:
    """tests/soak_standin.py running, and its first line; stopped (EOF on its stdin) and waited for after."""
    with open(tmp_path / "standin.log", "wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SOAK_STANDIN),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert line, (tmp_path / "standin.log").read_text()
        yield json.loads(line), process
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def measure(process: asyncio.subprocess.Process) -> dict[str, Any]:
    process.stdin.write(b"measure\n")
    await process.stdin.drain()
    return json.loads(await asyncio.wait_for(process.stdout.readline(), 60))


class RawBot:
    """Just enough of a bot on the gateway for the stand-in to deliver events to: IDENTIFY, then read everything."""

    def __init__(self, http: aiohttp.ClientSession, info: dict[str, Any]) -> None:
        self.http, self.info = http, info
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reading: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """A fresh session (closing the previous one normally, which ends it)."""
        await self.close()
        self.ws = await self.http.ws_connect(self.info["base_url"] + "/gateway?v=10&encoding=json")
        assert (await self.ws.receive_json(timeout=10))["op"] == payloads.OP_HELLO
        intents = payloads.INTENT_GUILDS | payloads.INTENT_GUILD_MESSAGES | payloads.INTENT_MESSAGE_CONTENT
        await self.ws.send_json({"op": payloads.OP_IDENTIFY, "d": {"token": self.info["token"], "intents": intents}})
        while (await self.ws.receive_json(timeout=10)).get("t") != "READY":
            pass
        self.reading = asyncio.create_task(self.read(self.ws))

    @staticmethod
    async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
        """Read (and drop) everything until the socket closes."""
        async for _ in ws:
            pass

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            assert self.reading is not None
            await self.reading


async def test_ten_thousand_page_messages_leave_every_buffer_within_its_bound_and_memory_flat(tmp_path: Path) -> None:
    async with standin_process(tmp_path) as (info, process), aiohttp.ClientSession() as http:
        base, channel = info["base_url"], info["channel_id"]
        auth = {"Authorization": f"Bot {info['token']}"}
        bot = RawBot(http, info)
        await bot.connect()
        page = await http.ws_connect(base + "/sandbox/ws", headers={"Origin": base})  # told of every change
        reading_page = asyncio.create_task(RawBot.read(page))
        commands = f"{base}/api/v10/applications/{info['application_id']}/guilds/{info['guild_id']}/commands"
        async with http.put(commands, json=[{"name": "ping", "description": "Ping"}], headers=auth) as answer:
            assert answer.status == 200, await answer.text()

        async def ok(answer: aiohttp.ClientResponse) -> Any:
            async with answer:
                assert answer.status in (200, 204), await answer.text()
                return await answer.json() if answer.status == 200 else None

        member = info["member"]
        at_2000: dict[str, Any] = {}
        for number in range(1, MESSAGES + 1):
            posted = await ok(
                await http.post(
                    base + "/sandbox/api/messages",
                    json={
                        "channel_id": channel,
                        "author_id": member,
                        "content": f"message {number}: " + "so glad " * 25,
                    },
                )
            )
            if number % 4 == 0:  # the bot answers in the channel
                reply = {"content": f"answer to {number}: " + "thank you " * 30}
                await ok(await http.post(f"{base}/api/v10/channels/{channel}/messages", json=reply, headers=auth))
            if number % 5 == 0:  # the bot reacts; a member runs a command
                reaction = f"/channels/{channel}/messages/{posted['id']}/reactions/%F0%9F%98%80/@me"
                await ok(await http.put(base + "/api/v10" + reaction, headers=auth))
                command = {"channel_id": channel, "user_id": member, "name": "ping", "options": {}}
                await ok(await http.post(base + "/sandbox/api/commands", json=command))
            if number % 10 == 0:  # the bot uploads a chart
                form = aiohttp.FormData()
                form.add_field("payload_json", json.dumps({"content": "a chart"}), content_type="application/json")
                form.add_field("files[0]", os.urandom(20_000), filename="mood.png", content_type="image/png")
                await ok(await http.post(f"{base}/api/v10/channels/{channel}/messages", data=form, headers=auth))
            if number % 100 == 0:  # another site tries; the bot asks for a route the stand-in does not know
                foreign = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
                async with http.post(base + "/sandbox/api/messages", data="{}", headers=foreign) as refused:
                    assert refused.status == 403
                async with http.get(f"{base}/api/v10/channels/{channel}/pins", headers=auth) as unknown:
                    assert unknown.status == 404
            if number % 1000 == 0:  # the bot reconnects with a new session
                await bot.connect()
            if number == 2000:
                at_2000 = await measure(process)
        at_end = await measure(process)
        await bot.close()
        await page.close()
        await reading_page
    unbounded = {name: length for name, (length, bound) in at_end["buffers"].items() if bound is None}
    assert not unbounded, f"kept without a bound: {unbounded}"
    over = {name: (length, bound) for name, (length, bound) in at_end["buffers"].items() if length > bound}
    assert not over, f"over their bound: {over}"
    assert at_end["sessions"] == 1, "sessions that ended are still kept"
    growth_mib = (at_end["rss_kib"] - at_2000["rss_kib"]) / 1024
    assert growth_mib < MAX_GROWTH_MIB, f"the stand-in grew by {growth_mib:.1f} MiB from message 2,000 to {MESSAGES:,}"


async def test_a_resume_from_further_back_than_a_session_keeps_is_refused(discord_standin: DiscordStandIn) -> None:
    """A session keeps its last `SESSION_EVENTS_KEPT` events for RESUME: a client that missed more must identify
    afresh (INVALID_SESSION, not resumable), rather than resume with a hole in what it received."""
    standin = discord_standin
    gateway = standin.gateway_url + "?v=10&encoding=json"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(gateway) as ws:
            await ws.receive_json(timeout=10)
            await ws.send_json({"op": payloads.OP_IDENTIFY, "d": {"token": standin.token, "intents": 513}})
            session_id = (await ws.receive_json(timeout=10))["d"]["session_id"]
            await ws.close(code=4000)  # not 1000: the session stays resumable
        for number in range(SESSION_EVENTS_KEPT + 10):  # delivered to the session while it is disconnected
            await standin.dispatch_message(content=f"missed {number}")
        (session,) = standin.sessions
        assert len(session.events) == SESSION_EVENTS_KEPT
        behind = {"token": standin.token, "session_id": session_id}
        # The refused one first: the accepted one takes the session over, and closing it normally ends the session.
        for seq, resumed in ((session.seq - SESSION_EVENTS_KEPT - 1, False), (session.seq - SESSION_EVENTS_KEPT, True)):
            async with http.ws_connect(standin.resume_gateway_url + "?v=10&encoding=json") as ws:
                await ws.receive_json(timeout=10)
                await ws.send_json({"op": payloads.OP_RESUME, "d": {**behind, "seq": seq}})
                first = await ws.receive_json(timeout=10)
                if resumed:
                    assert first["s"] == seq + 1, first  # the replay starts right after what the client had
                else:
                    assert (first["op"], first["d"]) == (payloads.OP_INVALID_SESSION, False), first
