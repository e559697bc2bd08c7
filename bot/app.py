"""`MoodringBot`: start-up in `setup_hook`, one cog per concern, shared services on the bot."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.cluster.model_sync import ModelSync
from bot.cluster.shard_lock import ShardLocks
from bot.config import BotConfig
from bot.inference import InferenceService
from bot.learning.community_data import export_store
from bot.learning.progress_text import first_training_line, starter_note, still_learning
from bot.learning.retrain import Retrainer, RetrainStatus
from bot.replies import NO_MENTIONS, SOMETHING_WENT_WRONG, InvalidArgument, send_ephemeral
from bot.store import Store, is_postgres_url, open_store
from model import ModelError, ModelNotFoundError
from model.storage import recover_directory

log = logging.getLogger(__name__)

COGS = (
    "bot.cogs.emotions",
    "bot.cogs.corrections",
    "bot.cogs.mood",
    "bot.cogs.alerts",
    "bot.cogs.housekeeping",
    "bot.cogs.admin",
)

NO_MODEL = (
    "I haven't been trained yet, so I can't read emotions. "
    "The bot's owner can train me with `moodring train` or `/moodring retrain`."
)


#: Seconds between two lines of the first training's progress within one stage and phase. Also how often the bot's
#: status changes: discord.py holds every gateway frame (heartbeats too) once a shard sends 110 in a minute.
FIRST_TRAINING_LINE_S = 15.0


def intents_for(config: BotConfig) -> discord.Intents:
    """Guilds and guild messages; message content (privileged) only for automatic analysis."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.guild_reactions = False
    intents.message_content = config.message_content
    return intents


class MoodringBot(commands.AutoShardedBot):
    """Works with any number of shards: nothing here assumes a single gateway connection. Runs the
    shards `config.shard_ids` of `config.shard_count` (bot/cluster/sharding.py), or all of Discord's recommended
    count when unset.

    Extra keyword arguments are discord.py client options (e.g. `guild_ready_timeout`).
    """

    def __init__(self, config: BotConfig, *, member_key: bytes | None = None, **options: Any) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents_for(config),
            allowed_mentions=NO_MENTIONS,
            owner_ids=set(config.owner_ids) or None,
            help_command=None,
            shard_count=config.shard_count,
            shard_ids=list(config.shard_ids) if config.shard_ids is not None else None,
            **options,
        )
        self.config = config
        self.inference = InferenceService.from_config(config)
        # Several processes share a PostgreSQL database: a swap in one reaches the others (bot/cluster/model_sync.py).
        self.model_sync = (
            ModelSync(config.database, config.model_dir, self.inference) if is_postgres_url(config.database) else None
        )
        self.retrainer = Retrainer(
            self.inference,
            config.model_dir,
            config.work_dir,
            backbone=None,  # `moodring train` chooses: $MOODRING_BACKBONE, else TrainArgs' default
            data_dir=config.data_dir,
            extra_args=config.retrain_args,
            tolerance=config.retrain_tolerance,
            progress_interval=config.progress_interval,
            export_corrections=lambda out: export_store(self.store, out, config.model_dir, config.counting_rules),
            community_min_rows=config.community_dev_min_rows,
            after_swap=self._announce_model,
            cluster_lock=self.model_sync.retrain_lock if self.model_sync else None,  # one retrain per cluster
        )
        self.store: Store | None = None
        self._member_key = member_key  # `moodring run` reads it before connecting; else `setup_hook` does
        # With PostgreSQL each shard runs in one process of a cluster only: its lock is taken before it connects.
        self.shard_locks = (
            ShardLocks(config.database, stop_shards=self._stop_shards, start_shards=self._start_shards)
            if is_postgres_url(config.database)
            else None
        )
        self.counters: Counter[str] = Counter()
        self._first_training_shown: tuple[tuple[str, str], float] = (("", ""), 0.0)  # (stage, phase), when
        self.clock: Callable[[], float] = time.time  # one clock for schedules and statistics; tests move it

    async def setup_hook(self) -> None:
        member_key = self._member_key or await asyncio.to_thread(self.config.member_key)
        self.store = await open_store(
            self.config.database, member_key=member_key, opt_out_refresh_s=self.config.opt_out_refresh_s
        )
        await self.retrainer.remove_orphaned_exports()  # before any retrain of this process can start
        self.inference.start()
        loaded = await (self.model_sync.start(self.load_model) if self.model_sync else self.load_model())
        serving_starter = loaded and self.inference.classifier.metadata.is_starter
        if (not loaded or serving_starter) and self.config.train_on_start:
            log.info(
                "%s: training %s in child processes (MOODRING_TRAIN_ON_START); progress below, logs in %s",
                "serving a starter model" if serving_starter else f"no model in {self.config.model_dir} yet",
                "the full model behind it" if serving_starter else "a starter model, then the full one behind it",
                self.config.work_dir,
            )
            await self.retrainer.start(self._show_first_training, first=True)
        for extension in COGS:
            await self.load_extension(extension)
        self.tree.on_error = self.on_app_command_error
        # What is loaded by now (torch, transformers, the model, the cogs) lives as long as the bot. Keep it out of
        # the cyclic garbage collector: a full collection over its ~450k objects blocks the event loop for a few
        # hundred milliseconds whenever it happens to run. Collected once here, before the gateway connects.
        gc.collect()
        gc.freeze()
        if self.config.dev_guild_id:
            guild = discord.Object(id=self.config.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to development guild %s", len(synced), self.config.dev_guild_id)

    async def launch_shard(self, gateway: Any, shard_id: int, *, initial: bool = False) -> None:
        """discord.py's, once this process owns the shard (waits while another process runs it)."""
        owned = self.shard_locks is None or await self.shard_locks.acquire(shard_id)
        if owned and not self.is_closed():
            await super().launch_shard(gateway, shard_id, initial=initial)

    async def _stop_shards(self) -> None:
        """Disconnect every shard (the lock connection was lost: another process may own them now)."""
        await asyncio.gather(*(shard.disconnect() for shard in self.shards.values()))
        log.info("disconnected shards %s until their locks are held again", sorted(self.shards))

    async def _start_shards(self) -> None:
        if not self.is_closed():
            await asyncio.gather(*(shard.connect() for shard in self.shards.values()))

    async def load_model(self) -> bool:
        """Serve the exported model if there is one; the bot runs (and says so) without it."""
        try:
            await asyncio.to_thread(recover_directory, self.config.model_dir)  # after a crash mid-swap
            await self.inference.load(self.config.model_dir)
        except ModelNotFoundError as error:
            if not self.config.train_on_start:  # else the first training starts now: nothing for the operator to do
                log.warning("%s", error)
            return False
        except ModelError as error:  # says what is wrong and what to do: no traceback needed
            log.error("%s Answering without a model meanwhile.", error)
            return False
        except Exception:
            log.exception("could not load the model in %s; answering without one", self.config.model_dir)
            return False
        log.info("serving the model in %s", self.config.model_dir)
        return True

    async def _announce_model(self, checksums: dict[str, str]) -> None:
        """After this process swapped in a retrained model (whose files have `checksums`): the cluster's other
        processes load it too."""
        if self.model_sync is not None:
            await self.model_sync.announce(checksums)

    def no_model_message(self) -> str:
        """What members are told while no model is serving."""
        status = self.retrainer.status
        if self.retrainer.running and status is not None:
            return still_learning(status)
        return NO_MODEL

    def model_note(self) -> str | None:
        """Which model answers, when it is not a full one: "starter model; the full one is 35% trained"."""
        classifier = self.inference.classifier
        if classifier is None or not classifier.metadata.is_starter:
            return None
        return starter_note(self.retrainer.status if self.retrainer.running else None)

    async def _show_first_training(self, status: RetrainStatus) -> None:
        """The first training's progress where people look: a log line (the terminal) and the bot's status (the
        member list, the sandbox's sidebar), at each new stage or phase and every `FIRST_TRAINING_LINE_S` between;
        the status is cleared when the training ends."""
        now = time.monotonic()
        stage, shown_at = (status.stage, status.phase), self._first_training_shown
        if not status.finished and stage == shown_at[0] and now - shown_at[1] < FIRST_TRAINING_LINE_S:
            return
        self._first_training_shown = (stage, now)
        line = first_training_line(status)
        if status.finished:
            log.info("first training %s. %s", status.outcome, status.detail)
        else:
            log.info("%s", line)
        if self.is_ready():  # before the gateway is connected there is no status to set
            activity = None if status.finished else discord.CustomActivity(name=line[:128])
            await self.change_presence(activity=activity)

    async def on_ready(self) -> None:
        log.info("connected as %s (%s) to %d guilds", self.user, getattr(self.user, "id", "?"), len(self.guilds))

    async def on_message(self, message: discord.Message) -> None:
        """No prefix commands: a message mentioning the bot asks for a reading (bot/cogs/emotions.py), and handing
        it to discord.py's command parser as well would log a `CommandNotFound` error for each one."""

    async def on_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        if isinstance(error, app_commands.MissingPermissions):
            message = "You need the **Manage Server** permission to do that."
        elif isinstance(error, app_commands.NoPrivateMessage):
            message = "That only works in a server."
        elif isinstance(error, app_commands.CheckFailure):
            message = str(error) or "You can't use that command."
        elif isinstance(error, InvalidArgument):
            message = str(error)
        elif self.is_closed():  # shutting down: Discord's session is gone, and so is the answer
            log.info("shutting down: could not finish %r", interaction.command and interaction.command.qualified_name)
            return
        else:
            log.error("command %r failed", interaction.command and interaction.command.qualified_name, exc_info=error)
            message = SOMETHING_WENT_WRONG
        await send_ephemeral(interaction, message)

    async def close(self) -> None:
        log.info("closing; message outcomes since start: %s", dict(self.counters))
        if self.model_sync is not None:
            await self.model_sync.close()
        await self.retrainer.cancel("the bot is shutting down")
        # Readings still waiting are answered "shutting down" while Discord can still be told.
        await self.inference.close()
        await super().close()
        if self.shard_locks is not None:  # after the shards have closed: only then may another process run them
            await self.shard_locks.close()
        if self.store is not None:
            await self.store.close()
