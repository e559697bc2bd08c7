"""Fixtures for driving the real `MoodringBot` (bot/app.py) against the Discord stand-in.

`make_moodring_bot(**config)` builds the bot exactly as `moodring run` does, from a `BotConfig` (token from the
stand-in, the session's tiny model, a fresh SQLite file, the stand-in's guild as development guild), so
`setup_hook` opens the store, loads the model and the cogs and syncs the commands; it runs until the block
exits. `moodring_bot` is one such bot with the defaults. Registered in tests/conftest.py via `pytest_plugins`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import pytest
from standin_fixtures import running_bot

from bot.app import MoodringBot
from bot.config import BotConfig
from bot.store import is_postgres_url
from model import EmotionClassifier
from model.metadata import ModelMetadata
from sandbox import DiscordStandIn, RecordedRequest, payloads

#: Member permissions of a server admin (what `/moodring ...` settings commands require).
ADMIN_PERMISSIONS = payloads.DEFAULT_EVERYONE_PERMISSIONS | payloads.PERM_MANAGE_GUILD
#: An ordinary member: @everyone's permissions, no Manage Server.
MEMBER_PERMISSIONS = payloads.DEFAULT_EVERYONE_PERMISSIONS

#: The routes whose request bodies carry message content (and so `allowed_mentions`).
MESSAGE_ROUTES = {
    "/channels/{channel_id}/messages",
    "/channels/{channel_id}/messages/{message_id}",
    "/interactions/{interaction_id}/{interaction_token}/callback",
    "/webhooks/{application_id}/{interaction_token}",
    "/webhooks/{application_id}/{interaction_token}/messages/{message_id}",
}


class BotFactory(Protocol):
    def __call__(self, **config: Any) -> contextlib.AbstractAsyncContextManager[MoodringBot]: ...


def moodring_config(
    standin: DiscordStandIn, model_dir: Path, root: Path, *, backbone: str | None = None, **overrides: Any
) -> BotConfig:
    """A production `BotConfig` pointing at the stand-in, `model_dir` and files under `root`; `overrides` win.

    `backbone` is what the bot's retrains fine-tune, passed as an operator would: `--backbone` in MOODRING_RETRAIN_ARGS
    (the bot itself holds no backbone; `moodring train` chooses).
    """
    settings: dict[str, Any] = {
        "token": standin.token,
        "model_dir": model_dir,
        "database": root / "db.sqlite3",
        "dev_guild_id": standin.guild_id,
        "train_on_start": False,
        "work_dir": root / "runs",
        "data_dir": None,
    }
    settings.update(overrides)
    if backbone is not None:
        settings["retrain_args"] = f"--backbone {shlex.quote(backbone)} {settings.get('retrain_args', '')}".strip()
    if settings.get("member_key_file") is None and is_postgres_url(settings["database"]):
        # The deployment key of member hashes a PostgreSQL bot needs: the one the `postgres_server` fixture made for
        # every bot process on its server (tests/postgres_fixtures.py).
        settings["member_key_file"] = Path(os.environ["MOODRING_MEMBER_KEY_FILE"])
    return BotConfig(**settings)


@pytest.fixture(scope="session")
def tiny_classifier(tiny_model_dir: Path) -> EmotionClassifier:
    """The session's tiny model, loaded in the test process: what the bot should answer, computed directly."""
    return EmotionClassifier.load(tiny_model_dir)


@pytest.fixture
def shared_model_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The model directory a cluster's processes share: a copy of the tiny model, which a swap replaces."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "shared" / "model"))


@pytest.fixture
def make_moodring_bot(discord_standin: DiscordStandIn, tiny_model_dir: Path, tmp_path: Path) -> BotFactory:
    """`async with make_moodring_bot(**config_overrides) as bot:` runs a real `MoodringBot` until the block ends."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[MoodringBot]:
        config = moodring_config(discord_standin, overrides.pop("model_dir", tiny_model_dir), tmp_path, **overrides)
        # guild_ready_timeout: the stand-in sends every GUILD_CREATE at once; don't wait discord.py's 2 s for more.
        bot = MoodringBot(config, guild_ready_timeout=0.05)
        async with running_bot(bot, discord_standin, timeout=30):
            yield bot

    return start


@pytest.fixture
async def moodring_bot(make_moodring_bot: BotFactory) -> AsyncIterator[MoodringBot]:
    """A running `MoodringBot` with the tiny model, commands synced to the stand-in's guild."""
    async with make_moodring_bot() as bot:
        yield bot


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `predicate` every 5 ms until it holds; `TimeoutError` naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.005)


async def confirm_retrain(standin: DiscordStandIn, asked: Mapping[str, Any], *, timeout: float = 5.0) -> str:
    """What `/moodring retrain` (the interaction `asked`, run by the owner) ends with once the owner presses its
    first button (**Train**) under the summary of the corrections; its answer itself when it came without buttons
    (a refusal)."""
    answer = (await standin.wait_for_interaction_response(asked, timeout=timeout)).json["data"]
    if not answer.get("components"):
        return answer["content"]
    prompt = standin.message(standin.interaction(asked).original_message_id)
    train = prompt["components"][0]["components"][0]
    pressed = await standin.dispatch_component(train["custom_id"], prompt, user=standin.owner_id)
    return (await standin.wait_for_interaction_response(pressed, timeout=timeout)).json["data"]["content"]


def store_message(
    standin: DiscordStandIn, content: str, *, channel_id: int | None = None, author: int | None = None
) -> dict[str, Any]:
    """A message that exists on "Discord" (fetchable over REST) but was never dispatched to the bot."""
    channel = channel_id or standin.channel_id
    uid = author or standin.user_id
    guild_id = standin.guild_id
    member = payloads.member_without_user(standin.world.member(guild_id, uid) or {"roles": []})
    data = payloads.message(
        payloads.snowflake(), channel, standin.world.user(uid), content, guild_id=guild_id, member_data=member
    )
    return standin.world.store_message(data)


def message_body(request: RecordedRequest) -> Mapping[str, Any] | None:
    """The message part of a request the bot sent (an interaction callback's `data`), if it has one."""
    if request.route not in MESSAGE_ROUTES or request.method not in ("POST", "PATCH"):
        return None
    body = request.json if isinstance(request.json, dict) else None
    if body is None:
        return None
    if request.route == "/interactions/{interaction_id}/{interaction_token}/callback":
        return body.get("data") if body.get("type") in (4, 7) else None
    return body


def second_model(model_dir: Path, destination: Path) -> Path:
    """A copy of `model_dir` that answers visibly differently: every threshold 1, which no score reaches, so that no
    emotion an answer shows is marked above its threshold (✅). Its `moodring.json` differs, and so do its checksums."""
    shutil.copytree(model_dir, destination)
    metadata = ModelMetadata.load(destination)
    unreachable = [1.0] * len(metadata.labels)
    metadata.thresholds = unreachable
    metadata.thresholds_by_backend = dict.fromkeys(metadata.thresholds_by_backend, unreachable)
    metadata.created_at = "the second tiny model"
    metadata.save(destination)
    return destination


def threshold_marks(callback: RecordedRequest) -> list[bool]:
    """Which emotions of an `/emotion` answer are marked above their threshold (✅): tells the two models apart."""
    embed = callback.json["data"]["embeds"][0]
    value = next(field["value"] for field in embed["fields"] if field["name"] == "Top emotions")
    return [line.startswith("✅") for line in value.splitlines()]
