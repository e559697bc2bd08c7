"""The sandbox answers only its own page: requests and WebSockets from other origins, requests naming a foreign Host
(DNS rebinding) and page-API POSTs that are not JSON are refused before anything runs, so they change nothing; every
WebSocket refuses oversized messages. Raw HTTP here; tests/test_sandbox_page.py tries the same from a real browser."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest
from standin_fixtures import running_bot

from moodring.sandbox_command import Cast, bot_environment, furnish
from sandbox import DiscordStandIn, payloads
from sandbox.guard import SameOriginGuard

FOREIGN = "http://evil.example"


@dataclass
class Scene:
    """The stand-in with the sandbox's cast, a connected discord.py client, and one valid body per page-API POST."""

    standin: DiscordStandIn
    cast: Cast
    bodies: dict[str, dict[str, Any]]

    def url(self, path: str) -> str:
        return self.standin.base_url + path

    def own(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.standin.port}"

    def snapshot(self) -> tuple[int, int, int]:
        """What a page-API action changes: messages, interactions, events sent on the gateway."""
        world = self.standin.world
        sent = sum(1 for f in self.standin.gateway_frames if f.direction == "send")
        return len(world.messages), len(world.interactions), sent


@pytest.fixture
async def scene(discord_standin: DiscordStandIn) -> AsyncIterator[Scene]:
    standin = discord_standin
    cast = furnish(standin)
    standin.world.overwrite_commands(
        [
            {
                "name": "moodring",
                "description": "Settings",
                "options": [
                    {
                        "type": payloads.OPTION_SUB_COMMAND,
                        "name": "retention",
                        "description": "Keep statistics for",
                        "options": [{"type": payloads.OPTION_INTEGER, "name": "days", "description": "Days"}],
                    }
                ],
            },
            {"name": "Analyze emotions", "type": payloads.COMMAND_MESSAGE},
        ],
        standin.guild_id,
    )
    async with running_bot(discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.05), standin):
        target = await standin.dispatch_message(standin.channel_id, "a message to act on", author=cast.member)
        channel = standin.channel_id
        bodies = {
            "messages": {"channel_id": channel, "author_id": cast.owner, "content": "posted as the owner"},
            "commands": {
                "channel_id": channel,
                "user_id": cast.owner,
                "name": "moodring retention",
                "options": {"days": 1},
            },
            "menu": {"message_id": target["id"], "user_id": cast.owner, "name": "Analyze emotions"},
            "components": {"message_id": target["id"], "user_id": cast.owner, "custom_id": "moodring:confirm"},
        }
        yield Scene(standin, cast, bodies)


async def test_page_api_posts_from_another_origin_or_host_or_not_json_are_refused_and_change_nothing(
    scene: Scene,
) -> None:
    port = scene.standin.port
    attacks: list[tuple[str, dict[str, str], int]] = [
        ("the curl of the issue", {"Origin": FOREIGN, "Content-Type": "text/plain"}, 403),
        ("a foreign Origin, JSON", {"Origin": FOREIGN, "Content-Type": "application/json"}, 403),
        ("an opaque Origin", {"Origin": "null", "Content-Type": "application/json"}, 403),
        ("another local port", {"Origin": f"http://127.0.0.1:{port + 1}", "Content-Type": "application/json"}, 403),
        ("https on our port", {"Origin": f"https://127.0.0.1:{port}", "Content-Type": "application/json"}, 403),
        ("a foreign Referer", {"Referer": FOREIGN + "/attack.html", "Content-Type": "application/json"}, 403),
        ("DNS rebinding", {"Host": f"evil.example:{port}", "Content-Type": "application/json"}, 403),
        ("our name, another port", {"Host": f"127.0.0.1:{port + 1}", "Content-Type": "application/json"}, 403),
        ("our own page, text/plain", {"Origin": scene.own(), "Content-Type": "text/plain"}, 415),
        ("our own page, a form", {"Origin": scene.own(), "Content-Type": "application/x-www-form-urlencoded"}, 415),
        ("our own page, no type", {"Origin": scene.own()}, 415),
    ]
    before = scene.snapshot()
    async with aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as http:
        for path, body in scene.bodies.items():
            for why, headers, status in attacks:
                async with http.post(scene.url(f"/sandbox/api/{path}"), data=_json(body), headers=headers) as answer:
                    assert answer.status == status, (path, why, await answer.text())
                    assert (await answer.json())["error"], (path, why)
        assert scene.snapshot() == before, "a refused request changed the world"
        # The same requests from the sandbox's own page (at either of its names) or from a client that is no page
        # (curl, the tests) are obeyed.
        obeyed = [
            {"Origin": scene.own()},
            {"Origin": scene.own("localhost"), "Host": f"localhost:{port}"},
            {"Referer": scene.own() + "/", "Host": f"localhost:{port}"},
            {},
        ]
        for headers in obeyed:
            for path, body in scene.bodies.items():
                headers = {**headers, "Content-Type": "application/json; charset=utf-8"}
                async with http.post(scene.url(f"/sandbox/api/{path}"), data=_json(body), headers=headers) as answer:
                    assert answer.status == 200, (path, headers, await answer.text())
    messages, interactions, _ = scene.snapshot()
    assert (messages, interactions) == (before[0] + len(obeyed), before[1] + 3 * len(obeyed))
    assert not scene.standin.errors


async def test_reads_and_rest_answer_only_their_own_host_and_origin(scene: Scene) -> None:
    port = scene.standin.port
    refused = [
        ("/sandbox/api/state", {"Origin": FOREIGN}),
        ("/sandbox/api/state", {"Referer": FOREIGN + "/"}),
        ("/sandbox/api/state", {"Host": f"evil.example:{port}"}),
        (f"/sandbox/api/channels/{scene.standin.channel_id}/messages?viewer={scene.cast.owner}", {"Origin": FOREIGN}),
        ("/", {"Host": f"evil.example:{port}"}),
        ("/static/app.js", {"Host": f"evil.example:{port}"}),
        ("/api/v10/users/@me", {"Host": f"evil.example:{port}"}),
        ("/api/v10/users/@me", {"Origin": FOREIGN}),
    ]
    recorded = len(scene.standin.requests)
    async with aiohttp.ClientSession() as http:
        for path, headers in refused:
            async with http.get(scene.url(path), headers=headers) as answer:
                assert answer.status == 403, (path, headers, await answer.text())
        # A link to the sandbox from another page is followed: the page itself does not need a Referer of ours.
        async with http.get(scene.url("/"), headers={"Referer": FOREIGN + "/readme.html"}) as answer:
            assert answer.status == 200
        auth = {"Authorization": f"Bot {scene.standin.token}"}
        async with http.get(scene.url("/api/v10/users/@me"), headers=auth) as answer:
            assert answer.status == 200  # discord.py sends neither Origin nor Referer
    assert len(scene.standin.requests) == recorded + 1, "a refused REST request was recorded as served"


async def test_websockets_refuse_foreign_origins_and_hosts(scene: Scene) -> None:
    port = scene.standin.port
    gateway = scene.url("/gateway?v=10&encoding=json")
    async with aiohttp.ClientSession() as http:
        for path, headers in [
            ("/sandbox/ws", {"Origin": FOREIGN}),
            ("/sandbox/ws", {"Origin": f"http://localhost:{port + 1}"}),
            ("/sandbox/ws", {"Host": f"evil.example:{port}"}),
            ("/gateway?v=10&encoding=json", {"Origin": FOREIGN}),
            ("/gateway?v=10&encoding=json", {"Host": f"evil.example:{port}"}),
        ]:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(scene.url(path), headers=headers)
            assert refused.value.status == 403, (path, headers)
        # The page's own socket, from its own origin; the gateway without an Origin (discord.py sends none).
        async with http.ws_connect(scene.url("/sandbox/ws"), headers={"Origin": scene.own()}) as page:
            assert not page.closed
        async with http.ws_connect(gateway) as ws:
            assert (await ws.receive_json())["op"] == payloads.OP_HELLO


async def test_every_websocket_refuses_oversized_messages(scene: Scene) -> None:
    sent_before = len(scene.standin.gateway_frames)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(scene.url("/gateway?v=10&encoding=json")) as ws:
            assert (await ws.receive_json())["op"] == payloads.OP_HELLO
            await ws.send_str(_json({"op": payloads.OP_HEARTBEAT, "d": "x" * (1 << 20)}))
            closing = await ws.receive(timeout=10)
            assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        async with http.ws_connect(scene.url("/sandbox/ws"), headers={"Origin": scene.own()}) as page:
            await page.send_str("x" * (64 << 10))
            closing = await page.receive(timeout=10)
            assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    received = [f for f in scene.standin.gateway_frames[sent_before:] if f.direction == "recv"]
    assert received == [], "an oversized gateway message was read"


@pytest.mark.parametrize(
    ("bound_to", "own", "foreign"),
    [
        ("127.0.0.1", ["127.0.0.1", "localhost", "LOCALHOST"], ["127.0.0.2", "10.0.0.5", "evil.example", "localhost."]),
        ("localhost", ["localhost", "127.0.0.1", "::1"], ["evil.example", "10.0.0.5"]),
        ("::1", ["::1", "localhost", "127.0.0.1"], ["evil.example"]),
        ("192.0.2.7", ["192.0.2.7"], ["localhost", "127.0.0.1", "192.0.2.8", "evil.example"]),
        ("sandbox.lan", ["sandbox.lan", "SANDBOX.lan"], ["localhost", "evil.example", "192.0.2.7"]),
        # Every interface: any address, and the names that need no DNS; never a name that could be rebound.
        ("0.0.0.0", ["127.0.0.1", "192.0.2.7", "::1", "localhost"], ["evil.example"]),
        ("::", ["127.0.0.1", "2001:db8::1", "localhost"], ["evil.example"]),
    ],
)
def test_own_addresses_are_those_the_server_is_reached_at_on_its_port(
    bound_to: str, own: list[str], foreign: list[str]
) -> None:
    guard = SameOriginGuard(bound_to, port=lambda: 8765)
    for name in own:
        assert guard.is_own(name, 8765), name
        assert not guard.is_own(name, 8766), name
    for name in foreign:
        assert not guard.is_own(name, 8765), name


@pytest.mark.parametrize("bound_to", ["0.0.0.0", "::", "127.0.0.1"])
def test_an_origin_must_be_the_address_the_request_came_to(bound_to: str) -> None:
    """Bound to every interface, any IP address is one of the server's: a page served from another machine's address
    on the same port must still not count as the sandbox's own page, so an IP address must be the Host the browser
    sent."""
    from aiohttp.test_utils import make_mocked_request

    guard = SameOriginGuard(bound_to, port=lambda: 8765)

    def refused(origin: str | None, host: str = "127.0.0.1:8765", referer: str | None = None) -> bool:
        headers = {"Host": host, **({"Origin": origin} if origin else {}), **({"Referer": referer} if referer else {})}
        return guard.refusal(make_mocked_request("POST", "/sandbox/api/messages", headers=headers)) is not None

    assert not refused("http://127.0.0.1:8765")
    assert not refused("http://localhost:8765", host="localhost:8765")
    assert refused("http://203.0.113.9:8765")  # another machine's page, same port
    assert not refused("http://localhost:8765")  # another of its own names: the sandbox's page all the same
    assert refused(None, referer="http://203.0.113.9:8765/")
    assert not refused(None, referer="http://127.0.0.1:8765/")


def _json(body: object) -> str:
    return json.dumps(body)


#: Settings an operator may have in their environment (or .env) for their real bot.
OPERATOR_SETTINGS = {
    "MOODRING_MODEL_DIR": "/srv/moodring/models/production",
    "MOODRING_DATABASE": "postgresql://moodring:hunter2@db.internal:5432/moodring",
    "MOODRING_RETRAIN_ARGS": "--epochs 40 --patience 5",
    "MOODRING_WORK_DIR": "/srv/moodring/runs",
    "MOODRING_BACKBONE": "squeezebert/squeezebert-uncased",
    "MOODRING_OWNER_IDS": "123456789012345678",
    "MOODRING_DISCORD_API": "https://discord.example/api/v10",
    "DISCORD_TOKEN": "the-real-bots-token",
    "PGPASSWORD": "hunter2",
    "AWS_SECRET_ACCESS_KEY": "another secret of the operator's",
}


async def test_the_bot_child_gets_only_what_the_sandbox_chose(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The operator's settings for their real bot (its model, its database, its retraining, its token) do not reach
    the sandbox's bot; what a Python program needs to run does."""
    needed = {
        "PATH": "/usr/local/bin:/usr/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": str(tmp_path),
        "PYTHONPATH": "/work/checkout",
        "GOEMOTIONS_DIR": "/data/goemotions",
        "MOODRING_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    for name, value in {**OPERATOR_SETTINGS, **needed}.items():
        monkeypatch.setenv(name, value)
    async with DiscordStandIn(token="made-for-this-run") as standin:
        env = bot_environment(standin, tmp_path / "bot.sqlite3", tmp_path / "model")
    leaked = {name: env[name] for name in OPERATOR_SETTINGS if env.get(name) == OPERATOR_SETTINGS[name]}
    assert leaked == {}
    assert {name: env.get(name) for name in needed} == needed
    assert env["MOODRING_MODEL_DIR"] == str(tmp_path / "model")
    assert env["MOODRING_DATABASE"] == str(tmp_path / "bot.sqlite3")
    assert env["DISCORD_TOKEN"] == "made-for-this-run"
    assert env["PYTHON_DOTENV_DISABLED"] == "1", "the child would read the operator's settings from .env"
