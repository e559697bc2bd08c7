"""`moodring run` and `moodring sync-commands`: clear answers for a missing or rejected token, and a
global command sync against the stand-in."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from bot_fixtures import moodring_config
from discord_standin import DiscordStandIn

from bot.app import MoodringBot
from bot.cli import _serve
from bot.config import BotConfig, ConfigError


def test_missing_token_says_what_to_do(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
    result = subprocess.run(
        [sys.executable, "-m", "moodring", "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "DISCORD_TOKEN is not set" in result.stderr and ".env" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_errors_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="MOODRING_DEV_GUILD_ID must be a whole number"):
        BotConfig.from_env({"DISCORD_TOKEN": "x", "MOODRING_DEV_GUILD_ID": "my server"})
    with pytest.raises(ConfigError, match="MOODRING_TRAIN_ON_START must be true or false"):
        BotConfig.from_env({"DISCORD_TOKEN": "x", "MOODRING_TRAIN_ON_START": "maybe"})
    with pytest.raises(ConfigError, match="MOODRING_QUEUE_SIZE must be at least 1"):
        BotConfig.from_env({"DISCORD_TOKEN": "x", "MOODRING_QUEUE_SIZE": "-3"})
    zero = BotConfig.from_env({"DISCORD_TOKEN": "x", "MOODRING_MAX_REACTIONS": "0", "MOODRING_BATCH_WAIT_MS": "2.5"})
    assert zero.max_reactions == 0 and zero.batch_wait_ms == 2.5  # 0 is a value, not "unset"
    config = BotConfig.from_env({"DISCORD_TOKEN": "secret-token", "MOODRING_OWNER_IDS": "1, 2"})
    assert config.owner_ids == {1, 2} and "secret-token" not in repr(config)


async def test_rejected_token_is_a_clear_message(
    discord_standin: DiscordStandIn, tiny_model_dir, tmp_path, capsys: pytest.CaptureFixture
) -> None:
    config = moodring_config(discord_standin, tiny_model_dir, tmp_path, token="not-the-token")
    assert await _serve(MoodringBot(config)) == 2
    assert "Discord rejected DISCORD_TOKEN" in capsys.readouterr().err


async def test_sync_commands_publishes_globally(discord_standin: DiscordStandIn, tiny_model_dir, tmp_path) -> None:
    config = moodring_config(discord_standin, tiny_model_dir, tmp_path, dev_guild_id=None)
    assert await _serve(MoodringBot(config), sync_and_exit=True) == 0
    (sync,) = discord_standin.requests_to("PUT", f"/applications/{discord_standin.application_id}/commands")
    names = {command["name"] for command in sync.json}
    assert {"emotion", "mood", "moodring", "Analyze emotions"} <= names
    assert not [r for r in discord_standin.requests_to("PUT", "/guilds/")]  # not to a guild
