"""The bot's first training: a starter model served within minutes, the full recipe behind it, resumed after a
restart; its progress in the log and in the bot's status; readings that say which model answered."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from bot_fixtures import BotFactory, wait_until

from bot.learning.progress_text import first_training_line, starter_note, still_learning
from bot.learning.retrain import FIRST_RUN_DIR, RetrainStatus
from model import ModelMetadata
from model.training_contract import checkpoint_dir, resume_dir
from sandbox import DiscordStandIn

#: The starter on a few hundred texts; the full recipe with epochs of 60 steps (long enough to stop in one).
FIRST_ARGS = (
    "--starter-rows 300 --starter-dev-rows 100 --epochs 2 --patience 5 --train-limit 960 --dev-limit 64 "
    "--max-length 16 --batch-size 16 --learning-rate 1e-3"
)


def footer_of(response) -> str:
    return response.json["data"]["embeds"][0]["footer"]["text"]


async def test_the_first_training_serves_a_starter_then_resumes_the_full_model_after_a_restart(
    discord_standin: DiscordStandIn,
    make_moodring_bot: BotFactory,
    tiny_backbone_dir: Path,
    goemotions_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    model_dir, run_dir = tmp_path / "first-model", tmp_path / "runs" / FIRST_RUN_DIR
    settings = {
        "model_dir": model_dir,
        "train_on_start": True,
        "backbone": str(tiny_backbone_dir),
        "data_dir": str(goemotions_dir),
        "retrain_args": FIRST_ARGS,
        "progress_interval": 0.2,
    }
    async with make_moodring_bot(**settings) as bot:
        await wait_until(lambda: bot.inference.ready, timeout=240, what="the starter model serving")
        assert ModelMetadata.load(model_dir).is_starter and bot.retrainer.running
        reading = await discord_standin.dispatch_slash_command("emotion", {"text": "what a lovely surprise"})
        footer = footer_of(await discord_standin.wait_for_interaction_response(reading))
        assert "starter model; the full one is " in footer and "% trained" in footer
        # Stopped (as by Ctrl-C) once the full training has finished an epoch, and before it ends.
        await wait_until(lambda: resume_dir(run_dir / "work").is_dir(), timeout=240, what="epoch 1's resume state")
    assert bot.retrainer.status.outcome == "cancelled"
    assert resume_dir(run_dir / "work").is_dir() and checkpoint_dir(run_dir / "work").is_dir()  # kept to resume
    # Progress where people look: the log (the terminal) and the bot's status (the member list, the sandbox sidebar).
    assert "Learning: starter model, step " in caplog.text and "Learning: full model, epoch 1/2, step " in caplog.text
    assert "No trained moodring model" not in caplog.text  # no warning to do what the bot is doing
    presences = [f.payload["d"] for f in discord_standin.gateway.frames if f.payload.get("op") == 3]
    assert any("Learning: full model" in str(presence) for presence in presences)
    assert discord_standin.gateway.status_text() == ""  # cleared when the training stopped
    starter_log = (run_dir / "starter.log").read_bytes()

    caplog.clear()
    async with make_moodring_bot(**settings) as bot:  # the restart: a starter serves, the full training goes on
        assert bot.inference.ready and bot.inference.classifier.metadata.is_starter
        assert bot.retrainer.running and bot.retrainer.status.stage == "full"
        status = await asyncio.wait_for(bot.retrainer.wait(), 300)
        # The full model replaces the starter, a stand-in not compared with (the tiny random backbone's starter may
        # well score better on dev than its full model).
        assert status.outcome == "swapped", status.detail
        assert status.current_f1 is None
        assert not bot.inference.classifier.metadata.is_starter
        reading = await discord_standin.dispatch_slash_command("emotion", {"text": "what a lovely surprise"})
        assert "starter" not in footer_of(await discord_standin.wait_for_interaction_response(reading))
    assert (run_dir / "starter.log").read_bytes() == starter_log  # no second starter
    assert "resuming from the end of epoch 1 of 2" in (run_dir / "train.log").read_text()
    history = ModelMetadata.load(model_dir).dev_metrics["history"]
    assert [entry["epoch"] for entry in history] == [1, 2]
    assert not resume_dir(run_dir / "work").exists() and not checkpoint_dir(run_dir / "work").exists()


def test_first_training_texts() -> None:
    status = RetrainStatus(first=True, stage="starter")
    assert still_learning(status) == (
        "I'm still learning (my starter model is starting: 0% done). Please try again in a few minutes."
    )
    assert first_training_line(status) == "Learning: starting the starter model"
    status.phase, status.step, status.total_steps, status.epochs, status.eta_s = "training", 30, 120, 1, 95
    assert still_learning(status) == (
        "I'm still learning (25% of my starter model done, about 1m 35s left). Please try again then."
    )
    assert first_training_line(status) == "Learning: starter model, step 30/120 (25%), about 1m 35s left"
    status.next_stage("full")
    assert status.step == 0 and status.eta_s is None and status.phase == "starting"
    status.phase, status.epoch, status.epochs, status.step, status.total_steps = "training", 1, 2, 700, 2000
    status.eta_s = 1500
    assert first_training_line(status) == "Learning: full model, epoch 1/2, step 700/2000 (35%), about 25m 00s left"
    assert starter_note(status) == "starter model; the full one is 35% trained"
    assert starter_note(None) == "starter model"
