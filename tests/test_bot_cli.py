"""`moodring run` and `moodring sync-commands`: clear answers for a missing or rejected token, and a
global command sync against the stand-in."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import discord
import pytest
from bot_fixtures import moodring_config

from bot.app import MoodringBot
from bot.cli import _serve
from bot.config import BotConfig, ConfigError
from sandbox import DiscordStandIn


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


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MOODRING_BATCH_WAIT_MS", "nan", "MOODRING_BATCH_WAIT_MS must be a finite number, got 'nan'"),
        ("MOODRING_BATCH_WAIT_MS", "inf", "MOODRING_BATCH_WAIT_MS must be a finite number"),
        ("MOODRING_RETRAIN_TOLERANCE", "nan", "MOODRING_RETRAIN_TOLERANCE must be a finite number"),
        ("MOODRING_RETRAIN_TOLERANCE", "-inf", "MOODRING_RETRAIN_TOLERANCE must be a finite number"),
        ("MOODRING_PROGRESS_INTERVAL_S", "inf", "MOODRING_PROGRESS_INTERVAL_S must be a finite number"),
        ("MOODRING_PROGRESS_INTERVAL_S", "NaN", "MOODRING_PROGRESS_INTERVAL_S must be a finite number"),
        ("MOODRING_DEV_GUILD_ID", "-5", "MOODRING_DEV_GUILD_ID must be a Discord id"),
        ("MOODRING_DEV_GUILD_ID", "0", "MOODRING_DEV_GUILD_ID must be a Discord id"),
        ("MOODRING_DEV_GUILD_ID", str(2**64), "MOODRING_DEV_GUILD_ID must be a Discord id"),
        ("MOODRING_OWNER_IDS", "12, -3", "MOODRING_OWNER_IDS must be comma-separated Discord user ids"),
    ],
)
def test_config_refuses_non_finite_numbers_and_bad_ids(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        BotConfig.from_env({"DISCORD_TOKEN": "x", name: value})


def test_config_chooses_the_serving_backend_and_threads() -> None:
    default = BotConfig.from_env({"DISCORD_TOKEN": "x"})
    assert (default.backend, default.threads) == ("auto", None)  # None: the cores this process may use
    chosen = BotConfig.from_env({"DISCORD_TOKEN": "x", "MOODRING_BACKEND": "onnx-int8", "MOODRING_THREADS": "1"})
    assert (chosen.backend, chosen.threads) == ("onnx-int8", 1)
    with pytest.raises(ConfigError, match=re.escape("MOODRING_BACKEND must be one of auto, torch, onnx, onnx-int8")):
        BotConfig.from_env({"DISCORD_TOKEN": "x", "MOODRING_BACKEND": "gpu"})
    with pytest.raises(ConfigError, match="MOODRING_THREADS must be at least 1"):
        BotConfig.from_env({"DISCORD_TOKEN": "x", "MOODRING_THREADS": "0"})


def test_config_database_is_a_file_or_a_postgresql_url() -> None:
    assert BotConfig.from_env({"DISCORD_TOKEN": "x"}).database == Path("data/moodring.sqlite3")
    assert BotConfig.from_env({"DISCORD_TOKEN": "x", "MOODRING_DATABASE": "/srv/bot.db"}).database == Path(
        "/srv/bot.db"
    )
    url = "postgresql://bot:pg-secret@db.example:5432/moodring"
    key = "/etc/moodring/member.key"  # PostgreSQL needs the deployment key of member hashes (bot/store/member_key.py)
    config = BotConfig.from_env({"DISCORD_TOKEN": "x", "MOODRING_DATABASE": url, "MOODRING_MEMBER_KEY_FILE": key})
    assert config.database == url and isinstance(config.database, str)  # not a Path: that would eat the //
    assert "pg-secret" not in repr(config) and "db.example:5432/moodring" in repr(config)
    for wrong in ("mysql://bot@db/moodring", "postgresql://", "postgresql:///moodring?host="):
        with pytest.raises(ConfigError, match="MOODRING_DATABASE"):
            BotConfig.from_env({"DISCORD_TOKEN": "x", "MOODRING_DATABASE": wrong})


def test_config_accepts_discord_ids() -> None:
    config = BotConfig.from_env(
        {"DISCORD_TOKEN": "x", "MOODRING_DEV_GUILD_ID": "1234567890123456789", "MOODRING_OWNER_IDS": "1;2"}
    )
    assert config.dev_guild_id == 1234567890123456789 and config.owner_ids == {1, 2}


@pytest.mark.parametrize(
    ("retrain_args", "flag"),
    [
        ("--out /tmp/elsewhere", "--out"),
        ("--epochs 2 --out=/tmp/elsewhere", "--out"),
        ("--o /tmp/elsewhere", "--out"),
        ("--work-dir runs/x", "--work-dir"),
        ("--work-dir=runs/x", "--work-dir"),
        ("--work runs/x", "--work-dir"),
        ("--work-d=runs/x", "--work-dir"),
    ],
)
def test_retrain_args_may_not_move_the_output(retrain_args: str, flag: str) -> None:
    with pytest.raises(ConfigError, match=rf"MOODRING_RETRAIN_ARGS may not set {flag}\b.*retrain"):
        BotConfig.from_env({"DISCORD_TOKEN": "x", "MOODRING_RETRAIN_ARGS": retrain_args})


def test_retrain_args_must_parse() -> None:
    with pytest.raises(ConfigError, match=r"MOODRING_RETRAIN_ARGS .*No closing quotation"):
        BotConfig.from_env({"DISCORD_TOKEN": "x", "MOODRING_RETRAIN_ARGS": '--backbone "my model'})


def test_retrain_args_may_tune_training() -> None:
    settings = "--epochs 2 --workers 1 --learning-rate 5e-5 --backbone './my model' --dropout=0.2"
    config = BotConfig.from_env({"DISCORD_TOKEN": "x", "MOODRING_RETRAIN_ARGS": settings})
    assert config.retrain_args == settings


@pytest.fixture
def unreachable_discord(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """discord.py pointed at a loopback port that is bound but not listening: every connection is refused."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{unused.getsockname()[1]}/api/v10"
        monkeypatch.setattr(discord.http.Route, "BASE", base)
        yield base


@pytest.mark.parametrize("sync_and_exit", [False, True], ids=["run", "sync-commands"])
async def test_unreachable_discord_is_one_line(
    unreachable_discord: str, tiny_model_dir, tmp_path, capsys: pytest.CaptureFixture, sync_and_exit: bool
) -> None:
    config = BotConfig(token="x", model_dir=tiny_model_dir, database=tmp_path / "db.sqlite3", train_on_start=False)
    assert await _serve(MoodringBot(config), sync_and_exit=sync_and_exit) == 75
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("moodring: can't reach Discord (") and "refused" in line.lower(), line
    assert "network" in line


@pytest.mark.discord_standin()
async def test_discord_server_error_is_one_line(
    discord_standin: DiscordStandIn, tiny_model_dir, tmp_path, capsys: pytest.CaptureFixture
) -> None:
    discord_standin.fail_next("GET", "/users/@me", status=503)
    config = moodring_config(discord_standin, tiny_model_dir, tmp_path)
    assert await _serve(MoodringBot(config), sync_and_exit=True) == 75
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("moodring: can't reach Discord (Discord answered 503"), line


def test_unreachable_discord_from_the_command_line(tmp_path) -> None:
    """`moodring sync-commands` with discord.py pointed at a refused port: no traceback, exit 75 (EX_TEMPFAIL)."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        script = (
            "import sys, discord.http\n"
            f"discord.http.Route.BASE = 'http://127.0.0.1:{unused.getsockname()[1]}/api/v10'\n"
            "from moodring.cli import main\n"
            "sys.exit(main(['sync-commands']))\n"
        )
        env = {**os.environ, "DISCORD_TOKEN": "x", "MOODRING_DATABASE": str(tmp_path / "db.sqlite3")}
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
    assert result.returncode == 75, result.stderr
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "can't reach Discord" in line] == [
        result.stderr.splitlines()[-1]
    ]


@pytest.mark.discord_standin()
async def test_refused_command_sync_is_one_line(
    discord_standin: DiscordStandIn, tiny_model_dir, tmp_path, capsys: pytest.CaptureFixture
) -> None:
    """The development guild's sync answered 403 (the bot is not in that guild): one line, exit 2."""
    discord_standin.fail_next("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", status=403)
    config = moodring_config(discord_standin, tiny_model_dir, tmp_path)
    assert await _serve(MoodringBot(config)) == 2
    err = capsys.readouterr().err  # also has transformers' weight-loading bar: the bot got as far as setup_hook
    (line,) = [line for line in err.splitlines() if line.startswith("moodring")]
    assert "Traceback" not in err
    assert line.startswith("moodring: Discord refused a request (403 Forbidden"), line
    assert "MOODRING_DEV_GUILD_ID" in line
