"""One model across processes (bot/cluster/model_sync.py) on the PostgreSQL test server: a retrain's swap in one bot is
served by another bot on the same database; an announced model that doesn't check out or doesn't load leaves the
old one serving with one log line; a dropped listener reconnects and catches up on the swap it missed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from bot_defaults import inference_service
from bot_fixtures import BotFactory, moodring_config, second_model, threshold_marks, wait_until

from bot.app import MoodringBot
from bot.cluster.model_sync import CHANNEL, ModelSync, announcement, read_checksums
from bot.cluster.sharding import shard_of
from model import EmotionClassifier
from model.storage import replace_directory
from model.text_preparation import clean_markup
from sandbox import DiscordStandIn

TEXT = "Thank you so much, this is wonderful!"


def marks_of(classifier: EmotionClassifier) -> list[bool]:
    """The ✅ marks of the answer to `TEXT` that `classifier` gives."""
    return [s.above_threshold for s in classifier.predict([clean_markup(TEXT)], top_k=5)[0].top]


def sync_lines(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bot.cluster.model_sync" and r.levelno >= level]


@pytest.mark.discord_standin(shard_count=2)
async def test_a_swap_in_one_bot_is_served_by_the_other_bot_on_the_same_database(
    make_moodring_bot: BotFactory,
    discord_standin: DiscordStandIn,
    postgres_url: str,
    shared_model_dir: Path,
    tiny_classifier: EmotionClassifier,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.cluster.model_sync")
    standin = discord_standin
    before = marks_of(tiny_classifier)
    assert any(before)  # the second model marks none: the answers tell the models apart
    home = shard_of(standin.guild_id, 2)
    guilds = {home: (standin.guild_id, standin.channel_id)}
    guilds[1 - home] = await standin.add_guild("the other bot's", shard=(1 - home, 2))
    candidate = second_model(shared_model_dir, tmp_path / "retrain" / "model")

    async def answers() -> list[list[bool]]:
        """The marks of each bot's answer (shard 0's, then shard 1's)."""
        marks = []
        for shard in (0, 1):
            guild_id, channel_id = guilds[shard]
            asked = await standin.dispatch_slash_command(
                "emotion", {"text": TEXT}, guild_id=guild_id, channel_id=channel_id
            )
            marks.append(threshold_marks(await standin.wait_for_interaction_response(asked, timeout=30)))
        return marks

    settings = {"database": postgres_url, "model_dir": shared_model_dir, "shard_count": 2}
    async with (
        make_moodring_bot(shard_ids=(0,), **settings) as first,
        make_moodring_bot(shard_ids=(1,), **settings) as second,
    ):
        assert await answers() == [before, before]
        served_by_second = second.inference.classifier
        await first.retrainer._swap_in(candidate)  # what a retrain does once its model has passed the gate
        await wait_until(lambda: second.inference.classifier is not served_by_second, 30, "the other bot's swap")
        assert await answers() == [[False] * 5, [False] * 5]
    assert not sync_lines(caplog), [r.getMessage() for r in sync_lines(caplog)]
    served = [m for r in sync_lines(caplog, logging.INFO) if "another process swapped in" in (m := r.getMessage())]
    assert len(served) == 1, served  # the other bot only: the one that swapped ignores its own announcement


async def test_with_sqlite_there_is_nothing_to_synchronise(discord_standin: DiscordStandIn, tmp_path: Path) -> None:
    assert MoodringBot(moodring_config(discord_standin, tmp_path / "model", tmp_path)).model_sync is None


@pytest.fixture
async def receiver(postgres_url: str, shared_model_dir: Path) -> AsyncIterator[ModelSync]:
    """A process's serving side, listening: the tiny model loaded from the shared directory."""
    service = inference_service()
    service.start()
    sync = ModelSync(postgres_url, shared_model_dir, service, retry_interval=2.0)
    try:
        await sync.start(lambda: service.load(shared_model_dir))
        # Settled: the start-up catch-up has read the directory, so it cannot read a swap the test makes half-done.
        await wait_until(lambda: sync.settled, 30, "listening, and the start-up catch-up done")
        yield sync
    finally:
        await sync.close()
        await service.close()


async def notify(url: str, payload: str) -> None:
    """What another process's `announce` sends, with a payload of the test's choosing."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
    finally:
        await connection.close()


async def test_an_announced_model_whose_files_differ_here_is_not_served_and_says_so_in_one_line(
    receiver: ModelSync, postgres_url: str, tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    serving = receiver.inference.classifier
    # The sender's model directory is not the one this process reads (another machine, a copy not synchronised).
    sender_service = inference_service()
    sender = ModelSync(postgres_url, second_model(tiny_model_dir, tmp_path / "elsewhere" / "model"), sender_service)
    try:
        assert await sender.announce(read_checksums(sender.model_dir))
    finally:
        await sender_service.close()
    await wait_until(lambda: receiver.refused == 1, 30, "the announcement handled")
    assert receiver.inference.classifier is serving and receiver.loaded == 0
    (line,) = sync_lines(caplog)
    message = line.getMessage()
    assert "moodring.json differs" in message and "still serving the model this process had" in message, message
    assert line.levelno == logging.ERROR and line.exc_info is None
    assert (await receiver.inference.classify(TEXT)).top  # and it still answers


async def test_an_announced_model_that_does_not_load_leaves_the_old_one_serving_with_one_line(
    receiver: ModelSync, postgres_url: str, tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    serving = receiver.inference.classifier
    broken = second_model(tiny_model_dir, tmp_path / "broken")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # cut short on its way to the shared directory
    await asyncio.to_thread(replace_directory, broken, receiver.model_dir)
    await notify(postgres_url, announcement("another process", read_checksums(receiver.model_dir)))
    await wait_until(lambda: receiver.refused == 1, 30, "the announcement handled")
    assert receiver.inference.classifier is serving and receiver.loaded == 0
    (line,) = sync_lines(caplog)
    message = line.getMessage()
    assert "ModelError" in message and "still serving the model this process had" in message, message
    assert line.exc_info is None and "Traceback" not in caplog.text
    assert (await receiver.inference.classify(TEXT)).top


async def test_notifications_that_are_not_announcements_are_ignored_with_a_warning(
    receiver: ModelSync, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    serving = receiver.inference.classifier
    await notify(postgres_url, "not json")
    await notify(postgres_url, announcement("another process", read_checksums(receiver.model_dir)))  # the barrier
    await wait_until(lambda: receiver.loaded == 1, 30, "the barrier announcement loaded")  # the same files, again
    assert receiver.refused == 0 and receiver.inference.classifier is not serving
    (line,) = sync_lines(caplog)
    assert "not one of ours" in line.getMessage()


async def test_a_dropped_listener_reconnects_and_catches_up_on_the_swap_it_missed(
    receiver: ModelSync, postgres_url: str, tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    new = second_model(tiny_model_dir, tmp_path / "new")
    admin = await asyncpg.connect(postgres_url)
    try:
        ended = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
    finally:
        await admin.close()
    assert [row[0] for row in ended] == [True]
    await wait_until(lambda: not receiver.listening, 10, "the dropped connection noticed")
    # A swap while this process is not listening (it reconnects after 2 s): its announcement is lost.
    await asyncio.to_thread(replace_directory, new, receiver.model_dir)
    sender_service = inference_service()
    try:
        assert await ModelSync(postgres_url, receiver.model_dir, sender_service).announce(
            read_checksums(receiver.model_dir)
        )
    finally:
        await sender_service.close()
    missed = not receiver.listening and receiver.connections == 1
    await wait_until(lambda: receiver.loaded == 1, 30, "the missed model loaded after reconnecting")
    assert missed and receiver.connections == 2
    assert receiver.inference.classifier.thresholds.min() == 1.0  # the second model
    (line,) = sync_lines(caplog)  # the outage: one warning, and no traceback
    assert "listening for model swaps" in line.getMessage() and line.exc_info is None, line.getMessage()
    assert "***" in line.getMessage() and "moodring-tests" not in caplog.text  # the password is not logged


async def test_an_announcement_that_cannot_be_sent_is_one_line_and_never_an_error(
    shared_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = inference_service()
    unreachable = "postgresql://moodring:secret-pw@127.0.0.1:9/moodring"  # the discard port: refused
    try:
        assert (
            await ModelSync(unreachable, shared_model_dir, service).announce(read_checksums(shared_model_dir)) is False
        )
    finally:
        await service.close()
    (line,) = sync_lines(caplog)
    message = line.getMessage()
    assert "could not tell the other processes about the new model" in message and line.exc_info is None, message
    assert "secret-pw" not in caplog.text
