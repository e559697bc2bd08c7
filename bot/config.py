"""The bot's settings, read from the environment (and `.env`, loaded by the `moodring` command)."""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import parse_qs, urlsplit

from bot.cluster.sharding import ShardSpecError, check_shard_ids, parse_shard_ids
from model.backends import BACKEND_CHOICES
from model.threads import threads_setting

if TYPE_CHECKING:
    from bot.learning.community_data import CountingRules

#: Training options that MOODRING_RETRAIN_ARGS may not set: the retrainer chooses where the candidate model and its
#: run go, and serves the candidate only once it passes the gate; `--out` would overwrite the serving model directly.
RETRAIN_PATH_FLAGS = ("--out", "--work-dir")
#: Discord ids (snowflakes) are positive 64-bit integers.
MAX_SNOWFLAKE = 2**64 - 1
#: Every process of a cluster honours a member's opt-out within this many seconds (the privacy statement says so):
#: within its poll interval plus the poll itself, so the interval may be at most half of it.
OPT_OUT_HONOURED_WITHIN_S = 10.0

T = TypeVar("T")


class DatabaseURL(str):
    """A PostgreSQL URL in MOODRING_DATABASE; its repr hides the password, so printing the settings never shows it."""

    def __repr__(self) -> str:
        from bot.store import redact_url

        return repr(redact_url(self))


class ConfigError(ValueError):
    """A setting is missing or malformed; the message says which and how to fix it."""


def _default_model_dir(env: Mapping[str, str] | None = None) -> Path:
    """`model.default_model_dir(env)`, imported on first use: reading the settings must not load torch."""
    from model import default_model_dir

    return default_model_dir(env)


@dataclass(frozen=True)
class BotConfig:
    token: str = field(repr=False)  # never printed or logged
    model_dir: Path = field(default_factory=_default_model_dir)
    database: Path | DatabaseURL = Path("data/moodring.sqlite3")  # a SQLite file, or a postgresql:// URL
    # The deployment key of member hashes (bot/store/member_key.py), outside the database. None: for SQLite, the
    # file beside the database, made on first run; PostgreSQL needs one named (every process must use the same).
    member_key_file: Path | None = None
    dev_guild_id: int | None = None
    owner_ids: frozenset[int] = frozenset()
    message_content: bool = True
    train_on_start: bool = True
    batch_size: int = 16
    batch_wait_ms: float = 10.0
    queue_size: int = 256
    max_reactions: int = 3
    data_dir: str | None = None
    work_dir: Path = Path("runs")
    retrain_args: str = ""
    retrain_tolerance: float = 0.005
    progress_interval: float = 5.0
    readings_per_user: int = 5  # on-demand readings (/emotion, the menu, reply-mentions) per member per window
    readings_per_channel: int = 15  # ... and per channel
    reading_window_s: float = 60.0
    corrections_per_member: int = 5  # "Not quite?" corrections a member may start per window
    corrections_window_s: float = 600.0
    community_dev_min_rows: int = 50  # the retrain gate compares community-dev F1 only with at least this many rows
    # How an export counts corrections (bot/learning/community_data.py, issue 21): one member's votes back at most
    # this many of its rows, and one server gives at most this share of its rows (or as many as one member may,
    # if that is more: a bot in one server can still learn).
    corrections_member_rows: int = 20
    corrections_server_share: float = 0.5
    # A scheduled summary whose send may not have gone through (a crash after its claim, a 5xx, a dropped
    # connection) is sent again with the same message nonce only this long after its claim: well inside the "few
    # minutes" in which Discord returns the first message for a nonce instead of posting a second (bot/cogs/mood.py).
    summary_retry_window_s: float = 120.0
    # Mood alerts (bot/alerts/detector.py says how they decide): the window in clock hours (the one in progress
    # included), the baseline's days before it, the least analysed messages in each, the least rise of the share, and
    # at most one alert per channel per cooldown. A server's first `/moodring alerts` watches `alert_labels` at
    # `alert_sensitivity` unless the admin chooses others.
    alert_window_hours: int = 1
    alert_baseline_days: int = 14
    alert_min_messages: int = 20
    alert_min_baseline_messages: int = 200
    alert_min_ratio: float = 1.5
    alert_cooldown_s: float = 6 * 3600.0
    alert_labels: tuple[str, ...] = ("anger", "annoyance", "disgust", "disapproval")
    alert_sensitivity: str = "medium"
    # How often each process reads the opt-outs' change counter (bot/store/interface.py), so that an opt-out another
    # process recorded is honoured within OPT_OUT_HONOURED_WITHIN_S; one small read per interval.
    opt_out_refresh_s: float = 2.0
    # auto: fp32 ONNX when the model has it and onnxruntime imports, else torch (both give a text the same scores in
    # any batch); onnx-int8, faster but batch-dependent, only when asked for.
    backend: str = "auto"
    # Inference intra-op threads (MOODRING_THREADS); None: OMP_NUM_THREADS, else the cores this process may use.
    threads: int | None = None
    # A Discord-compatible server instead of Discord (`moodring sandbox`): discord.py's REST base and gateway URL.
    discord_api: str | None = None
    discord_gateway: str | None = None
    # Sharding (bot/cluster/sharding.py): None and None is one process with Discord's recommended count of shards.
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None  # which of the shard_count shards this process runs; None: all

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
        counting = counting_rules_setting(env)
        return cls(
            token=token,
            database=database_setting(env, cls.database),
            member_key_file=Path(env["MOODRING_MEMBER_KEY_FILE"]) if env.get("MOODRING_MEMBER_KEY_FILE") else None,
            dev_guild_id=_snowflake(env, "MOODRING_DEV_GUILD_ID"),
            owner_ids=frozenset(_int_list(env, "MOODRING_OWNER_IDS")),
            message_content=_bool(env, "MOODRING_MESSAGE_CONTENT", True),
            train_on_start=_bool(env, "MOODRING_TRAIN_ON_START", True),
            batch_size=_at_least(1, env, "MOODRING_BATCH_SIZE", cls.batch_size),
            batch_wait_ms=_at_least(0.0, env, "MOODRING_BATCH_WAIT_MS", cls.batch_wait_ms),
            queue_size=_at_least(1, env, "MOODRING_QUEUE_SIZE", cls.queue_size),
            max_reactions=_at_least(0, env, "MOODRING_MAX_REACTIONS", cls.max_reactions),
            data_dir=env.get("GOEMOTIONS_DIR") or None,
            work_dir=Path(env.get("MOODRING_WORK_DIR") or cls.work_dir),
            retrain_args=_checked(split_retrain_args, env, "MOODRING_RETRAIN_ARGS"),
            retrain_tolerance=_float(env, "MOODRING_RETRAIN_TOLERANCE", cls.retrain_tolerance),
            progress_interval=_at_least(0.1, env, "MOODRING_PROGRESS_INTERVAL_S", cls.progress_interval),
            backend=_choice(env, "MOODRING_BACKEND", BACKEND_CHOICES, cls.backend),
            threads=_parsed(threads_setting, env),
            readings_per_user=_at_least(1, env, "MOODRING_READINGS_PER_USER", cls.readings_per_user),
            readings_per_channel=_at_least(1, env, "MOODRING_READINGS_PER_CHANNEL", cls.readings_per_channel),
            reading_window_s=_at_least(1.0, env, "MOODRING_READING_WINDOW_S", cls.reading_window_s),
            corrections_per_member=_at_least(1, env, "MOODRING_CORRECTIONS_PER_MEMBER", cls.corrections_per_member),
            corrections_window_s=_at_least(1.0, env, "MOODRING_CORRECTIONS_WINDOW_S", cls.corrections_window_s),
            community_dev_min_rows=_at_least(1, env, "MOODRING_COMMUNITY_DEV_MIN_ROWS", cls.community_dev_min_rows),
            alert_window_hours=_at_least(1, env, "MOODRING_ALERT_WINDOW_HOURS", cls.alert_window_hours),
            alert_cooldown_s=_at_least(60.0, env, "MOODRING_ALERT_COOLDOWN_S", cls.alert_cooldown_s),
            corrections_member_rows=counting.member_rows,
            corrections_server_share=counting.server_share,
            discord_api=_url(env, "MOODRING_DISCORD_API", ("http", "https")),
            discord_gateway=_url(env, "MOODRING_DISCORD_GATEWAY", ("ws", "wss")),
            shard_count=_at_least(1, env, "MOODRING_SHARD_COUNT", cls.shard_count),
            shard_ids=_shard_ids(env, "MOODRING_SHARD_IDS"),
            # Last: the default imports torch, which a bad setting above should not wait for.
            model_dir=_default_model_dir(env),
        )

    @property
    def counting_rules(self) -> CountingRules:
        """`corrections_member_rows` and `corrections_server_share`, as an export takes them."""
        from bot.learning.community_data import CountingRules

        return CountingRules(member_rows=self.corrections_member_rows, server_share=self.corrections_server_share)

    @property
    def member_key_path(self) -> Path:
        """The file holding the deployment key of member hashes: MOODRING_MEMBER_KEY_FILE, else (SQLite) the file
        beside the database."""
        from bot.store.member_key import member_key_beside

        return self.member_key_file if self.member_key_file is not None else member_key_beside(self.database)

    def member_key(self) -> bytes:
        """The deployment key in `member_key_path` (file work: off the event loop), made on first run for SQLite and
        never for PostgreSQL. Raises `PermanentStoreError` with one line saying how to make one."""
        from bot.store import is_postgres_url
        from bot.store.member_key import load_member_key

        return load_member_key(self.member_key_path, create=not is_postgres_url(self.database))

    def __post_init__(self) -> None:
        from bot.store import is_postgres_url
        from bot.store.member_key import MEMBER_KEY_HOWTO

        if self.member_key_file is None and is_postgres_url(self.database):
            raise ConfigError(
                "MOODRING_MEMBER_KEY_FILE is not set: with PostgreSQL every process of the bot must hash members "
                f"with the same key, kept outside the database; {MEMBER_KEY_HOWTO}"
            )
        if not 0 < self.opt_out_refresh_s <= OPT_OUT_HONOURED_WITHIN_S / 2:
            raise ConfigError(
                f"opt_out_refresh_s must be above 0 and at most {OPT_OUT_HONOURED_WITHIN_S / 2:g} s: every process "
                f"must honour an opt-out within {OPT_OUT_HONOURED_WITHIN_S:g} s, got {self.opt_out_refresh_s!r}"
            )
        if min(self.alert_window_hours, self.alert_baseline_days, self.alert_min_messages) < 1 or not (
            self.alert_labels and self.alert_min_ratio >= 1 and self.alert_cooldown_s > 0
        ):
            raise ConfigError(
                "the mood alerts' settings need a window, baseline and minimum of at least 1, a minimum ratio of at "
                "least 1, a cooldown above 0 and at least one watched emotion"
            )
        if (self.discord_api is None) != (self.discord_gateway is None):
            raise ConfigError(
                "MOODRING_DISCORD_API and MOODRING_DISCORD_GATEWAY go together: set both (`moodring sandbox` serves "
                "http://127.0.0.1:8765/api/v10 and ws://127.0.0.1:8765/gateway) or neither (Discord itself)."
            )
        if self.shard_ids is not None:
            if self.shard_count is None:
                raise ConfigError(
                    "MOODRING_SHARD_IDS (--shards) needs MOODRING_SHARD_COUNT (--shard-count): the ids are "
                    "numbered out of the total count of shards"
                )
            try:
                check_shard_ids(self.shard_ids, self.shard_count)
            except ShardSpecError as error:
                raise ConfigError(f"MOODRING_SHARD_IDS (--shards): {error}") from None


def counting_rules_setting(env: Mapping[str, str]) -> CountingRules:
    """MOODRING_CORRECTIONS_MEMBER_ROWS and MOODRING_CORRECTIONS_SERVER_SHARE (BotConfig's defaults when unset): the
    one reader of both, for `BotConfig.from_env` and for `moodring corrections export`, which needs no token."""
    from bot.learning.community_data import CountingRules

    share = _float(env, "MOODRING_CORRECTIONS_SERVER_SHARE", BotConfig.corrections_server_share)
    if not 0 < share <= 1:
        raise ConfigError(f"MOODRING_CORRECTIONS_SERVER_SHARE must be above 0 and at most 1, got {share!r}")
    member_rows = _at_least(1, env, "MOODRING_CORRECTIONS_MEMBER_ROWS", BotConfig.corrections_member_rows)
    return CountingRules(member_rows=member_rows, server_share=share)


def _number(env: Mapping[str, str], name: str, kind: type, default):
    """`name` parsed as `kind` (int or float); `default` when unset or empty (0 is a value, not unset).

    nan and infinities are refused: every comparison with nan is false, so it would pass any range check.
    """
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{name} must be a {'whole ' if kind is int else ''}number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return number


def database_setting(env: Mapping[str, str], default: Path) -> Path | DatabaseURL:
    """MOODRING_DATABASE: a file path (SQLite), or a postgresql:// URL naming at least a host."""
    value = env.get("MOODRING_DATABASE", "").strip()
    if not value:
        return default
    if "://" not in value:
        return Path(value)
    from bot.store import is_postgres_url, redact_url

    shown = redact_url(value)
    if not is_postgres_url(value):
        raise ConfigError(
            f"MOODRING_DATABASE must be a file path (SQLite) or a postgresql://user:password@host:port/database "
            f"URL, got {shown!r}"
        )
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (parsed only to check it)
    except ValueError as error:
        raise ConfigError(f"MOODRING_DATABASE is not a valid URL ({error}): {shown!r}") from None
    if not parts.hostname and not parse_qs(parts.query).get("host"):  # ?host=/run/postgresql: a Unix socket
        raise ConfigError(f"MOODRING_DATABASE must name the PostgreSQL host, got {shown!r}")
    return DatabaseURL(value)


def _snowflake(env: Mapping[str, str], name: str) -> int | None:
    """A Discord id (server, channel or user), or None when unset."""
    number = _number(env, name, int, None)
    if number is not None and not 0 < number <= MAX_SNOWFLAKE:
        raise ConfigError(
            f"{name} must be a Discord id (a positive whole number; copy it with Developer Mode on), "
            f"got {env.get(name)!r}"
        )
    return number


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    """A URL with one of `schemes` and a host, or None when unset."""
    value = env.get(name, "").strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(f"{name} must be a {' or '.join(schemes)} URL with a host, got {value!r}")
    return value.rstrip("/") if parts.scheme.startswith("http") else value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    return _number(env, name, float, default)


def _at_least(minimum, env: Mapping[str, str], name: str, default):
    """Like `_number` with `minimum`'s type, refusing values below `minimum`."""
    number = _number(env, name, type(minimum), default)
    if number is not None and number < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {env.get(name)!r}")
    return number


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _int_list(env: Mapping[str, str], name: str) -> list[int]:
    parts = [p.strip() for p in env.get(name, "").replace(";", ",").split(",") if p.strip()]
    try:
        ids = [int(p) for p in parts]
    except ValueError:
        ids = []
    if len(ids) != len(parts) or not all(0 < i <= MAX_SNOWFLAKE for i in ids):
        raise ConfigError(f"{name} must be comma-separated Discord user ids, got {env.get(name)!r}")
    return ids


def _shard_ids(env: Mapping[str, str], name: str) -> tuple[int, ...] | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        return parse_shard_ids(value)
    except ShardSpecError as error:
        raise ConfigError(f"{name}: {error}") from None


def split_retrain_args(value: str, name: str = "MOODRING_RETRAIN_ARGS") -> list[str]:
    """Extra `moodring train` options for retraining, split like a shell; ConfigError if one is a `RETRAIN_PATH_FLAGS`.

    argparse also accepts an unambiguous prefix (`--wo`, `--work-d`) and `--flag=value`, so any option that could
    be read as one of those flags is refused.
    """
    try:
        tokens = shlex.split(value)
    except ValueError as error:
        raise ConfigError(f"{name} is not a valid shell-quoted list of `moodring train` options ({error})") from None
    for token in tokens:
        option = token.split("=", 1)[0]
        for flag in RETRAIN_PATH_FLAGS:
            if len(option) > 2 and option.startswith("--") and flag.startswith(option):
                raise ConfigError(
                    f"{name} may not set {flag} (given as {token!r}): the retrainer chooses where the candidate "
                    "goes and serves it only if it passes the retrain gate. Remove it; set MOODRING_MODEL_DIR or "
                    "MOODRING_WORK_DIR instead."
                )
    return tokens


def _parsed(read: Callable[[Mapping[str, str]], T], env: Mapping[str, str]) -> T:
    """`read(env)`, a setting's own reader; its ValueError (which names the setting) becomes a ConfigError."""
    try:
        return read(env)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _checked(check, env: Mapping[str, str], name: str) -> str:
    """The raw value of `name`, once `check(value, name)` has accepted it."""
    value = env.get(name, "")
    check(value, name)
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")
