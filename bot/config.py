"""The bot's settings, read from the environment (and `.env`, loaded by the `moodring` command)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from model import default_model_dir


class ConfigError(ValueError):
    """A setting is missing or malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class BotConfig:
    token: str = field(repr=False)  # never printed or logged
    model_dir: Path = field(default_factory=default_model_dir)
    database: Path = Path("data/moodring.sqlite3")
    dev_guild_id: int | None = None
    owner_ids: frozenset[int] = frozenset()
    message_content: bool = True
    train_on_start: bool = True
    batch_size: int = 16
    batch_wait_ms: float = 10.0
    queue_size: int = 256
    max_reactions: int = 3
    data_dir: str | None = None
    backbone: str = "minilm"
    work_dir: Path = Path("runs")
    retrain_args: str = ""
    retrain_tolerance: float = 0.005
    progress_interval: float = 5.0
    readings_per_user: int = 5  # on-demand readings (/emotion, reply-mentions) per member per window
    readings_per_channel: int = 15  # ... and per channel
    reading_window_s: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, require_token: bool = True) -> BotConfig:
        env = os.environ if env is None else env
        token = env.get("DISCORD_TOKEN", "").strip()
        if require_token and not token:
            raise ConfigError(
                "DISCORD_TOKEN is not set. Create a bot in the Discord developer portal "
                "(https://discord.com/developers/applications -> your app -> Bot -> Reset Token), "
                "then put DISCORD_TOKEN=... in .env (see .env.example)."
            )
        return cls(
            token=token,
            model_dir=Path(env.get("MOODRING_MODEL_DIR") or default_model_dir()),
            database=Path(env.get("MOODRING_DATABASE") or cls.database),
            dev_guild_id=_int(env, "MOODRING_DEV_GUILD_ID"),
            owner_ids=frozenset(_int_list(env, "MOODRING_OWNER_IDS")),
            message_content=_bool(env, "MOODRING_MESSAGE_CONTENT", True),
            train_on_start=_bool(env, "MOODRING_TRAIN_ON_START", True),
            batch_size=_at_least(1, env, "MOODRING_BATCH_SIZE", cls.batch_size),
            batch_wait_ms=_at_least(0.0, env, "MOODRING_BATCH_WAIT_MS", cls.batch_wait_ms),
            queue_size=_at_least(1, env, "MOODRING_QUEUE_SIZE", cls.queue_size),
            max_reactions=_at_least(0, env, "MOODRING_MAX_REACTIONS", cls.max_reactions),
            data_dir=env.get("GOEMOTIONS_DIR") or None,
            backbone=env.get("MOODRING_BACKBONE") or cls.backbone,
            work_dir=Path(env.get("MOODRING_WORK_DIR") or cls.work_dir),
            retrain_args=env.get("MOODRING_RETRAIN_ARGS", ""),
            retrain_tolerance=_float(env, "MOODRING_RETRAIN_TOLERANCE", cls.retrain_tolerance),
            progress_interval=_at_least(0.1, env, "MOODRING_PROGRESS_INTERVAL_S", cls.progress_interval),
            readings_per_user=_at_least(1, env, "MOODRING_READINGS_PER_USER", cls.readings_per_user),
            readings_per_channel=_at_least(1, env, "MOODRING_READINGS_PER_CHANNEL", cls.readings_per_channel),
            reading_window_s=_at_least(1.0, env, "MOODRING_READING_WINDOW_S", cls.reading_window_s),
        )


def _number(env: Mapping[str, str], name: str, kind: type, default):
    """`name` parsed as `kind` (int or float); `default` when unset or empty (0 is a value, not unset)."""
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"{name} must be a {'whole ' if kind is int else ''}number, got {value!r}") from None


def _int(env: Mapping[str, str], name: str) -> int | None:
    return _number(env, name, int, None)


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    return _number(env, name, float, default)


def _at_least(minimum, env: Mapping[str, str], name: str, default):
    """Like `_number` with `minimum`'s type, refusing values below `minimum`."""
    number = _number(env, name, type(minimum), default)
    if number < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {env.get(name)!r}")
    return number


def _int_list(env: Mapping[str, str], name: str) -> list[int]:
    parts = [p.strip() for p in env.get(name, "").replace(";", ",").split(",") if p.strip()]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated Discord user ids, got {env.get(name)!r}") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")
