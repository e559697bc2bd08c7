"""Members' trust (issue 21), with the real bot against the stand-in: every reading path (`/emotion`, reply-mentions,
the "Analyze emotions" menu) shares one set of flood limits, and a refused request reads nothing from the database
(on both engines); the corrections' text exported for a retrain never outlives it; a member corrects a text they
type once."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from bot_fixtures import BotFactory, store_message, wait_until
from test_bot_corrections import choose, component, emotion_answer, enable, press
from test_bot_emotions import mention_of_bot, reply_reference

from bot.learning.corrections import ALREADY_CORRECTED, PICK, PICK_CLOSEST_ID
from bot.privacy import privacy_statement
from bot.store import DEFAULT_RETENTION_DAYS, Store
from sandbox import DiscordStandIn, payloads

REPO = Path(__file__).resolve().parents[1]
EPHEMERAL = payloads.MESSAGE_FLAG_EPHEMERAL
CHANNEL_MESSAGES = "/channels/{channel_id}/messages"


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """The bot's database on each engine: a fresh SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "trust.sqlite3"
    return request.getfixturevalue("postgres_url")


def count_store_calls(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the store's public coroutine methods as they are called from now on (every database read or
    write the bot makes goes through one)."""
    calls: list[str] = []
    for name, method in inspect.getmembers(store, inspect.iscoroutinefunction):
        if name.startswith("_"):
            continue

        def counted(*args: Any, _name: str = name, _method: Any = method, **kwargs: Any) -> Any:
            calls.append(_name)
            return _method(*args, **kwargs)

        monkeypatch.setattr(store, name, counted)
    return calls


async def menu(standin: DiscordStandIn, target: dict[str, Any], user: int | None = None) -> dict[str, Any]:
    """Run "Analyze emotions" on `target`; the interaction callback's body."""
    interaction = await standin.dispatch_context_menu("Analyze emotions", target, user=user)
    return (await standin.wait_for_interaction_response(interaction)).json


def is_reading(body: dict[str, Any]) -> bool:
    return bool(body["data"].get("embeds"))


def is_slow_down(body: dict[str, Any]) -> bool:
    data = body["data"]
    return "Slow down" in (data.get("content") or "") and bool(data["flags"] & EPHEMERAL) and not data.get("embeds")


async def test_the_menu_is_flood_limited_like_emotion_and_mentions_and_shares_their_limits(
    make_moodring_bot: BotFactory, discord_standin: DiscordStandIn
) -> None:
    standin = discord_standin
    async with make_moodring_bot(readings_per_user=3, readings_per_channel=100) as bot:
        target = store_message(standin, "I'm so happy for you, congratulations!")
        bodies = [await menu(standin, target) for _ in range(3)]
        assert all(is_reading(body) for body in bodies)
        assert is_slow_down(await menu(standin, target))  # the menu's own flood: one slow-down
        assert bot.counters["readings_refused"] == 1 and bot.inference.served == 3
        bystander = await standin.add_user("bystander")
        assert is_reading(await menu(standin, target, user=bystander))  # per member

        # One window, three paths, one budget: a /emotion and a reply-mention use up what the menu may have.
        bot.clock = lambda: time.time() + bot.config.reading_window_s + 1
        interaction = await standin.dispatch_slash_command("emotion", {"text": "so glad"})
        assert is_reading((await standin.wait_for_interaction_response(interaction)).json)
        since = len(standin.requests)
        await standin.dispatch_message(
            content=f"{mention_of_bot(standin)} and this?",
            mentions=[standin.bot_user_id],
            message_reference=reply_reference(standin, target),
        )
        reply = await standin.wait_for_request(method="POST", route=CHANNEL_MESSAGES, since=since)
        assert reply.json.get("embeds")
        assert is_reading(await menu(standin, target))
        assert is_slow_down(await menu(standin, target))
        await wait_until(lambda: bot.counters["readings_refused"] == 2, what="the second refusal counted")


async def test_a_refused_correction_press_reads_nothing_from_the_database(
    make_moodring_bot: BotFactory,
    discord_standin: DiscordStandIn,
    database: Path | str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    standin = discord_standin
    async with make_moodring_bot(database=database, corrections_per_member=1) as bot:
        await enable(standin)
        answers = [await emotion_answer(standin, f"so skibbly #{i}") for i in range(2)]
        assert (await press(standin, answers[0]))["content"] == PICK
        calls = count_store_calls(bot.store, monkeypatch)
        refused = await press(standin, answers[1])
        assert refused["content"].startswith("Slow down") and int(refused["flags"]) & EPHEMERAL
        assert calls == []  # not even whether the server collects corrections, nor its retention
        assert bot.counters["corrections_refused"] == 1


# ----------------------------------------------------------------------------------------------- exported text


def leftover_export(work_dir: Path, run: str) -> Path:
    """What a retrain killed with SIGKILL (or by the OOM killer) during its training leaves: its run directory with
    the corrections' text exported in GoEmotions' layout, which only its own `_finish` would have removed."""
    export = work_dir / run / "corrections"
    export.mkdir(parents=True)
    (export / "train.tsv").write_text("that new skin is so skibbly\t13\tc1\n", encoding="utf-8")
    (export / "dev.tsv").write_text("so skibbly again\t13\tc2\n", encoding="utf-8")
    (work_dir / run / "train.log").write_text("epoch 1 ...\n", encoding="utf-8")
    return export


async def test_corrections_exported_by_a_killed_retrain_are_removed_when_the_bot_starts(
    make_moodring_bot: BotFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    work_dir = tmp_path / "runs"
    export = leftover_export(work_dir, "retrain-20261204-101500")
    with caplog.at_level(logging.INFO, logger="bot"):
        async with make_moodring_bot(work_dir=work_dir):
            assert not export.exists()
    assert (work_dir / "retrain-20261204-101500" / "train.log").is_file()  # the logs stay for whoever investigates
    removed = [r.getMessage() for r in caplog.records if "interrupted retrain" in r.getMessage()]
    assert removed == [f"removed the corrections exported by an interrupted retrain ({export})"]
    assert "deleted when the retrain ends" in privacy_statement(DEFAULT_RETENTION_DAYS)


HOLDER = """
import sys
from pathlib import Path

from bot.learning.retrain import lock_export

lock_export(Path(sys.argv[1]))  # as a retrain does before it exports
print("holding", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


async def test_the_export_of_a_retrain_running_in_another_process_is_left_alone(
    make_moodring_bot: BotFactory, tmp_path: Path
) -> None:
    """A cluster's processes share the work directory: one that restarts must not delete the export a retrain in
    another process is training on. The lock that tells them apart is released by the kernel when its holder dies."""
    work_dir = tmp_path / "runs"
    export = leftover_export(work_dir, "retrain-20261204-120000")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(export.parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))},
        text=True,
    )
    try:
        assert await asyncio.to_thread(holder.stdout.readline) == "holding\n"
        async with make_moodring_bot(work_dir=work_dir):
            assert export.is_dir()
    finally:
        holder.stdin.close()
        await asyncio.to_thread(holder.wait, 30)
        holder.stdout.close()
    async with make_moodring_bot(work_dir=work_dir):  # its holder has gone: an orphan now
        assert not export.exists()


# ----------------------------------------------------------------------------------------------- typed text


async def test_a_member_corrects_a_text_they_type_once_however_many_times_they_ask(
    make_moodring_bot: BotFactory, discord_standin: DiscordStandIn, database: Path | str
) -> None:
    """`/emotion` answers are keyed by the text they read, not by the answer: asking again about the same text and
    correcting it again is refused, so one member cannot stack corrections of a text they typed themselves."""
    standin = discord_standin
    async with make_moodring_bot(database=database) as bot:
        await enable(standin)
        first = await emotion_answer(standin, "the raid was so skibbly")
        picker = await press(standin, first)
        label = component(picker, PICK_CLOSEST_ID)["options"][0]["value"]
        assert "Thank you" in (await choose(standin, picker, [label]))["data"]["content"]
        again = await emotion_answer(standin, "the  raid was so skibbly")  # the same text to the model
        assert (await press(standin, again))["content"] == ALREADY_CORRECTED
        member = await standin.add_user("another member")  # another member may correct it
        picker = await press(standin, again, user=member)
        assert "Thank you" in (await choose(standin, picker, [label], user=member))["data"]["content"]
        assert len(await bot.store.corrections()) == 2
