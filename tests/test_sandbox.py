"""The sandbox: `moodring run` pointed at a Discord-compatible server through MOODRING_DISCORD_API/_GATEWAY (a real
process: SIGTERM flushes statistics, exit 0), the page's API refusing bad input, and `moodring sandbox` as a process
(page served, real bot child connected, history seeded through the normal path, child stopped and gone on exit)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path

import aiohttp
import pytest
from bot_fixtures import BotFactory
from process_guard import process_alive, wait_until_gone
from test_sandbox_safety import OPERATOR_SETTINGS

from bot.config import BotConfig, ConfigError
from bot.store import open_store
from moodring.sandbox_command import furnish, open_world
from sandbox import DEFAULT_TOKEN, DiscordStandIn, payloads, state
from sandbox.gateway import CLOSE_AUTHENTICATION_FAILED

#: What docs/operations.md promises: SIGTERM to `moodring run` ends it within this many seconds, statistics flushed.
STOP_WITHIN_S = 10.0


def bot_env(tmp_path: Path, model_dir: Path, **extra: str) -> dict[str, str]:
    """`moodring run`'s environment for a test: the tiny model, files under `tmp_path`, no first training."""
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "MOODRING_MODEL_DIR": str(model_dir),
        "MOODRING_DATABASE": str(tmp_path / "db.sqlite3"),
        "MOODRING_WORK_DIR": str(tmp_path / "runs"),
        "MOODRING_TRAIN_ON_START": "false",
        **extra,
    }


@contextlib.asynccontextmanager
async def child(*args: str, env: dict[str, str], cwd: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m moodring ARGS`, stdout piped, stderr into `cwd/stderr.log` (a pipe nobody reads could fill up
    and stall it); killed (and checked gone) if the test leaves it running."""
    with open(cwd / "stderr.log", "wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "moodring", *args, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=stderr
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        with contextlib.suppress(TimeoutError):  # to EOF, so that asyncio closes the pipe while its loop runs
            await asyncio.wait_for(process.stdout.read(), 5)
        assert not process_alive(process.pid)


def test_discord_endpoint_settings_go_together_and_must_be_urls() -> None:
    base = {"DISCORD_TOKEN": "x"}
    assert BotConfig.from_env(base).discord_api is None
    api, gateway = "http://127.0.0.1:8765/api/v10/", "ws://127.0.0.1:8765/gateway"
    with pytest.raises(ConfigError, match="MOODRING_DISCORD_API and MOODRING_DISCORD_GATEWAY go together"):
        BotConfig.from_env({**base, "MOODRING_DISCORD_API": api})
    with pytest.raises(ConfigError, match="MOODRING_DISCORD_API must be a http or https URL"):
        BotConfig.from_env({**base, "MOODRING_DISCORD_API": "127.0.0.1:8765", "MOODRING_DISCORD_GATEWAY": gateway})
    with pytest.raises(ConfigError, match="MOODRING_DISCORD_GATEWAY must be a ws or wss URL"):
        BotConfig.from_env({**base, "MOODRING_DISCORD_API": api, "MOODRING_DISCORD_GATEWAY": api})
    config = BotConfig.from_env({**base, "MOODRING_DISCORD_API": api, "MOODRING_DISCORD_GATEWAY": gateway})
    assert (config.discord_api, config.discord_gateway) == ("http://127.0.0.1:8765/api/v10", gateway)


async def test_moodring_run_reaches_the_standin_through_the_settings_and_sigterm_flushes(
    discord_standin: DiscordStandIn, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A real `moodring run` process, pointed at the stand-in by the settings alone: it connects, analyses messages,
    and on SIGTERM writes every analysis to the database and exits 0 within `STOP_WITHIN_S`."""
    standin = discord_standin
    env = bot_env(
        tmp_path,
        tiny_model_dir,
        DISCORD_TOKEN=standin.token,
        MOODRING_DISCORD_API=standin.api_base,
        MOODRING_DISCORD_GATEWAY=standin.gateway_url,
        MOODRING_DEV_GUILD_ID=str(standin.guild_id),
    )
    async with child("run", env=env, cwd=tmp_path) as bot:
        await standin.wait_for_request(method="PUT", path=f"/guilds/{standin.guild_id}/commands", timeout=120)
        await standin.wait_until_identified(1, timeout=60)
        texts = [f"message {i}: I love this, thank you so much!" for i in range(6)]
        for text in texts:
            await standin.dispatch_message(content=text)
        # Barrier: a reading asked after the messages is answered after theirs (one FIFO inference queue).
        marker = await standin.dispatch_slash_command("emotion", {"text": "and this one?"})
        await standin.wait_for_interaction_response(marker, timeout=30)
        bot.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(bot.wait(), STOP_WITHIN_S)
    stderr = (tmp_path / "stderr.log").read_text()
    assert code == 0, stderr
    assert "NOT CONNECTING TO DISCORD: MOODRING_DISCORD_API=" + standin.api_base in stderr
    assert "shut down cleanly" in stderr and "Traceback" not in stderr
    store = await open_store(tmp_path / "db.sqlite3")
    try:
        mood = await store.mood(standin.guild_id, standin.channel_id, 0, 2**40)
    finally:
        await store.close()
    assert mood.messages == len(texts)


async def test_the_page_api_refuses_bad_input_politely(discord_standin: DiscordStandIn) -> None:
    standin = discord_standin
    cast = furnish(standin)
    api = standin.base_url + "/sandbox/api/"
    async with aiohttp.ClientSession() as http:

        async def post(path: str, body: object) -> tuple[int, dict]:
            async with http.post(api + path, json=body) as response:
                return response.status, await response.json()

        cases = [
            ("messages", {"channel_id": standin.channel_id, "author_id": standin.bot_user_id, "content": "hi"}),
            ("messages", {"channel_id": 1, "author_id": cast.member, "content": "hi"}),
            ("messages", {"channel_id": standin.channel_id, "author_id": cast.member, "content": " "}),
            ("messages", {"channel_id": standin.channel_id, "author_id": "me", "content": "hi"}),
            ("messages", ["not", "an", "object"]),
            ("commands", {"channel_id": standin.channel_id, "user_id": cast.member, "name": "nope"}),
            ("menu", {"message_id": 12345, "user_id": cast.member, "name": "Analyze emotions"}),
            ("components", {"message_id": 12345, "user_id": cast.member, "custom_id": "x"}),
        ]
        for path, body in cases:
            status, answer = await post(path, body)
            assert status == 400 and answer["error"], (path, body, answer)
        async with http.post(
            api + "messages", data="{not json", headers={"Content-Type": "application/json"}
        ) as response:
            assert response.status == 400 and "JSON" in (await response.json())["error"]
    assert not standin.errors


async def test_ephemeral_answers_are_shown_only_to_the_member_who_asked(
    discord_standin: DiscordStandIn, make_moodring_bot: BotFactory
) -> None:
    standin = discord_standin
    cast = furnish(standin)
    async with make_moodring_bot():
        asked = await standin.dispatch_slash_command(
            "emotion", {"text": "only for me", "ephemeral": True}, user=cast.member
        )
        await standin.wait_for_interaction_response(asked)
        answer = standin.interaction(asked).original_message_id
        seen_by_asker = [int(m["id"]) for m in standin.page.messages(standin.channel_id, cast.member)]
        seen_by_admin = [int(m["id"]) for m in standin.page.messages(standin.channel_id, cast.admin)]
    assert answer in seen_by_asker and answer not in seen_by_admin


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_moodring_sandbox_runs_the_real_bot_and_leaves_nothing_behind(
    tiny_model_dir: Path, goemotions_dir: Path, tmp_path: Path
) -> None:
    """`moodring sandbox --seed-history 12`: the page is served, the bot child connects and analyses the seeded
    messages (`/mood` counts them), and SIGTERM stops the sandbox (exit 0) and its bot child (gone).

    The child gets the sandbox's model, database and a token made for this run, not the settings the operator's
    environment holds for their real bot; the public `DEFAULT_TOKEN` opens nothing; another site's page is refused."""
    port = free_port()
    env = bot_env(tmp_path, tiny_model_dir, GOEMOTIONS_DIR=str(goemotions_dir))
    env.pop("DISCORD_TOKEN", None)  # none needed
    env.update(OPERATOR_SETTINGS)  # the operator's real bot's
    args = ["--port", str(port), "--seed-history", "12", "--model", str(tiny_model_dir)]
    async with child("sandbox", *args, env=env, cwd=tmp_path) as sandbox:

        async def line(containing: str) -> str:
            while True:
                text = (await asyncio.wait_for(sandbox.stdout.readline(), 180)).decode()
                assert text, f"the sandbox ended before printing {containing!r}"
                if containing in text:
                    return text

        assert line_is(await line("Sandbox at"), f"Sandbox at http://127.0.0.1:{port}")
        bot_pid = int((await line("Bot: moodring run (pid ")).split("(pid ")[1].split(")")[0])
        await line("Seeded #general with 12")
        bot_env_seen = process_environment(bot_pid)
        token = bot_env_seen["DISCORD_TOKEN"]
        assert token != DEFAULT_TOKEN and token.encode() not in Path(f"/proc/{bot_pid}/cmdline").read_bytes()
        assert bot_env_seen["MOODRING_MODEL_DIR"] == str(tiny_model_dir)
        leaked = {name for name, value in OPERATOR_SETTINGS.items() if bot_env_seen.get(name) == value}
        assert not leaked, leaked
        assert bot_env_seen["PYTHON_DOTENV_DISABLED"] == "1"
        api = f"http://127.0.0.1:{port}/sandbox/api/"
        async with aiohttp.ClientSession() as http:
            await the_public_token_opens_nothing(http, f"http://127.0.0.1:{port}")
            foreign = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
            async with http.post(api + "commands", data="{}", headers=foreign) as response:
                assert response.status == 403
            state = await (await http.get(api + "state")).json()
            assert state["bot"]["online"] and {c["name"] for c in state["commands"]} >= {"emotion", "mood", "moodring"}
            member = next(m["id"] for m in state["members"] if m["role"] == "member")
            general = state["channels"][0]["id"]

            async def messages() -> list[dict]:
                return await (await http.get(api + f"channels/{general}/messages?viewer={member}")).json()

            welcome = (await messages())[0]  # a fresh world: the sandbox's own welcome comes first, not the bot's
            assert welcome["author"]["system"] and welcome["author"]["id"] != state["bot"]["id"], welcome
            assert "Welcome to the moodring sandbox" in welcome["content"], welcome

            async def run(name: str, **options: object) -> dict:
                """Run /name as the member; the bot's answer (a new message with an embed, no longer loading)."""
                before = int((await messages())[-1]["id"])
                body = {"channel_id": general, "user_id": member, "name": name, "options": options}
                own = {"Origin": f"http://localhost:{port}"}  # the page, opened at http://localhost:PORT
                async with http.post(api + "commands", json=body, headers=own) as response:
                    assert response.status == 200, await response.text()
                deadline = asyncio.get_running_loop().time() + 30
                while asyncio.get_running_loop().time() < deadline:
                    for message in await messages():
                        if int(message["id"]) > before and message["embeds"] and not message["flags"] & 128:
                            return message
                    await asyncio.sleep(0.1)
                raise AssertionError(f"/{name} was not answered")

            await run("emotion", text="a barrier: asked after the seeded messages")
            for _ in range(5):  # statistics reach the database within 250 ms of an analysis
                mood = (await run("mood"))["embeds"][0]
                if mood["description"].startswith("12 messages analysed"):
                    break
            assert mood["description"].startswith("12 messages analysed"), mood
        sandbox.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(sandbox.wait(), 45)
        out = (await sandbox.stdout.read()).decode()
    err = (tmp_path / "stderr.log").read_text()
    assert code == 0, err
    assert "Bot stopped (exit status 0)." in out, out
    assert token not in out and token not in err
    assert wait_until_gone(bot_pid, 5)
    assert "Traceback" not in err


def process_environment(pid: int) -> dict[str, str]:
    """The environment a running process was started with."""
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


async def the_public_token_opens_nothing(http: aiohttp.ClientSession, base_url: str) -> None:
    """`DEFAULT_TOKEN` is in the source for anyone to read: the sandbox's gateway and REST refuse it."""
    async with http.ws_connect(base_url.replace("http", "ws") + "/gateway?v=10&encoding=json") as ws:
        assert (await ws.receive_json(timeout=10))["op"] == payloads.OP_HELLO
        identify = {"token": DEFAULT_TOKEN, "intents": 513, "properties": {}}
        await ws.send_json({"op": payloads.OP_IDENTIFY, "d": identify})
        closing = await ws.receive(timeout=10)
        assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == CLOSE_AUTHENTICATION_FAILED, closing
    async with http.get(base_url + "/api/v10/users/@me", headers={"Authorization": f"Bot {DEFAULT_TOKEN}"}) as answer:
        assert answer.status == 401


def line_is(text: str, expected: str) -> bool:
    return text.strip() == expected


async def test_the_bot_child_stops_itself_when_the_sandbox_is_killed(tiny_model_dir: Path, tmp_path: Path) -> None:
    """SIGKILL leaves the sandbox no chance to stop its bot: the bot's lifeline closes, and it stops by itself
    (instead of retrying a vanished server for ever, as discord.py would)."""
    port = free_port()
    env = bot_env(tmp_path, tiny_model_dir)
    async with child("sandbox", "--port", str(port), "--model", str(tiny_model_dir), env=env, cwd=tmp_path) as sandbox:
        bot_pid = None
        while bot_pid is None:
            text = (await asyncio.wait_for(sandbox.stdout.readline(), 60)).decode()
            assert text, "the sandbox ended before starting its bot"
            if "(pid " in text:
                bot_pid = int(text.split("(pid ")[1].split(")")[0])
        try:
            async with aiohttp.ClientSession() as http:
                deadline = asyncio.get_running_loop().time() + 120
                while not (await (await http.get(f"http://127.0.0.1:{port}/sandbox/api/state")).json())["bot"][
                    "online"
                ]:
                    assert asyncio.get_running_loop().time() < deadline, "the bot did not connect"
                    await asyncio.sleep(0.2)
            sandbox.kill()
            # Not `await sandbox.wait()` first: asyncio waits for its stdout pipe too, which the bot child holds.
            assert await asyncio.to_thread(wait_until_gone, bot_pid, 15), "the bot child outlived the sandbox"
            await sandbox.wait()
        finally:
            if process_alive(bot_pid):
                os.kill(bot_pid, signal.SIGKILL)
    stderr = (tmp_path / "stderr.log").read_text()
    assert "the process that started this one has gone: stopping" in stderr, stderr


async def test_a_fresh_sandbox_is_welcomed_and_a_saved_one_is_not_welcomed_again(tmp_path: Path) -> None:
    """The sandbox's own welcome (from its system user, not the bot) is posted in #general of a fresh world only;
    a world loaded from --state keeps the one it had."""
    saved = tmp_path / "sandbox.json"
    first = DiscordStandIn()
    cast = open_world(first, saved, "http://127.0.0.1:1")

    def welcomes(standin: DiscordStandIn) -> list[dict]:
        return [m for m in standin.world.messages.values() if m["author"].get("system")]

    (welcome,) = welcomes(first)
    assert welcome["channel_id"] == payloads.sid(cast.channels[0]) and welcome["author"]["username"] == "sandbox"
    async with first:  # saving needs its address
        state.save(first, saved, asdict(cast))
    second = DiscordStandIn()
    assert open_world(second, saved, "http://127.0.0.1:2") == cast
    assert welcomes(second) == [welcome]


async def test_state_file_keeps_the_world_between_runs(tmp_path: Path) -> None:
    """`--state FILE`: members, channels, messages (with attachments), reactions and the bot's registered commands
    come back in a new sandbox, attachments served at its address; a damaged file is a clear error."""
    first = DiscordStandIn()
    cast = furnish(first)
    async with first:
        await first.page.post_message(
            {"channel_id": first.channel_id, "author_id": cast.member, "content": "remember me"}
        )
        (message_id,) = first.world.messages
        picture = first._attachment_payload(first.channel_id, ("mood.png", b"\x89PNG fake", "image/png"))
        first.world.messages[message_id]["attachments"] = [picture]
        first.world.add_reaction(message_id, "😀", first.bot_user_id)
        first.world.overwrite_commands([{"name": "emotion", "description": "Read emotions"}], first.guild_id)
        saved = first.page.state()
        state.save(first, tmp_path / "sandbox.json", {"owner": cast.owner})
    second = DiscordStandIn(port=free_port())
    assert state.load(second, tmp_path / "sandbox.json", f"http://127.0.0.1:{second._requested_port}") == {
        "owner": cast.owner
    }
    async with second:
        assert second.page.state() == {**saved, "bot": {**saved["bot"], "online": False}}
        (message,) = second.page.messages(second.channel_id, cast.member)
        assert message["content"] == "remember me" and message["reactions"][0]["emoji"]["name"] == "😀"
        async with aiohttp.ClientSession() as http, http.get(message["attachments"][0]["url"]) as response:
            assert message["attachments"][0]["url"].startswith(second.base_url)
            assert response.status == 200 and await response.read() == b"\x89PNG fake"
    (tmp_path / "broken.json").write_text('{"version": 1, "users": ')
    with pytest.raises(state.StateError, match="cannot read the sandbox state"):
        state.load(DiscordStandIn(), tmp_path / "broken.json", "http://127.0.0.1:1")


def training_children(pid: int) -> list[int]:
    """The `moodring train` processes that `pid` started (its direct children whose command line says train)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child_pid in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    if b"train" in Path(f"/proc/{child_pid}/cmdline").read_bytes().split(b"\0"):
                        found.append(int(child_pid))
    return found


async def test_sigterm_to_moodring_run_stops_its_training_child(
    discord_standin: DiscordStandIn, tiny_backbone_dir: Path, goemotions_dir: Path, tmp_path: Path
) -> None:
    """A real `moodring run` with no model trains its first one in a child; SIGTERM to the bot stops that child
    too (the bot exits 0, the child is gone when it does), rather than leaving a training run behind.

    Two layers give that: the retrainer stops the child's process group when its task is cancelled, and the child
    stops itself when its pipe to the bot closes. This test fails only when both fail (checked by breaking both).
    """
    standin = discord_standin
    env = bot_env(
        tmp_path,
        tmp_path / "no-model-yet",
        DISCORD_TOKEN=standin.token,
        MOODRING_DISCORD_API=standin.api_base,
        MOODRING_DISCORD_GATEWAY=standin.gateway_url,
        MOODRING_DEV_GUILD_ID=str(standin.guild_id),
        MOODRING_TRAIN_ON_START="true",
        MOODRING_BACKBONE=str(tiny_backbone_dir),
        GOEMOTIONS_DIR=str(goemotions_dir),
        # Trains until stopped: the child must still be running when the bot is told to stop.
        MOODRING_RETRAIN_ARGS="--epochs 1000 --patience 1000 --train-limit 256 --dev-limit 32 --max-length 16",
    )
    async with child("run", env=env, cwd=tmp_path) as bot:
        await standin.wait_until_identified(1, timeout=60)
        trainers: list[int] = []
        for _ in range(1200):  # the child starts once the bot is up; 60 s at most
            trainers = training_children(bot.pid)
            if trainers:
                break
            await asyncio.sleep(0.05)
        assert trainers, (tmp_path / "stderr.log").read_text()
        progress = list((tmp_path / "runs").rglob("progress.jsonl"))
        for _ in range(1200):  # and it is training, not still starting
            progress = list((tmp_path / "runs").rglob("progress.jsonl"))
            if progress and '"step"' in progress[0].read_text():
                break
            await asyncio.sleep(0.05)
        bot.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(bot.wait(), STOP_WITHIN_S + 10)  # + the child's SIGTERM-to-SIGKILL grace
        # Gone when the bot exits: stopped by the bot, not later by its own watch on the bot's pipe.
        still_running = [pid for pid in trainers if process_alive(pid)]
        assert all(wait_until_gone(pid, 10) for pid in still_running)  # tidy up before failing
        assert not still_running, "the training child outlived the bot"
    stderr = (tmp_path / "stderr.log").read_text()
    assert code == 0, stderr
    assert "shut down cleanly" in stderr and "Traceback" not in stderr
