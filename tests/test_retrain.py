"""Retraining in a child process: progress, swap or keep by dev macro-F1, failures and cancellation."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from bot.inference import InferenceService
from bot.retrain import Retrainer, RetrainStatus, format_status, should_swap
from model import EmotionClassifier, ModelMetadata

TINY_ARGS = "--epochs 1 --train-limit 64 --dev-limit 64 --max-length 16 --batch-size 16 --learning-rate 1e-3"


def test_swap_rule() -> None:
    assert should_swap(0.40, None, 0.005)  # no current model: anything trained is better than nothing
    assert should_swap(0.50, 0.50, 0.005)
    assert should_swap(0.496, 0.50, 0.005)
    assert not should_swap(0.494, 0.50, 0.005)


@pytest.fixture
async def serving(tmp_path: Path, tiny_model_dir: Path):
    """An inference service serving a copy of the tiny model from `tmp_path/model`."""
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    service = InferenceService()
    service.start()
    await service.load(model_dir)
    yield service, model_dir
    await service.close()


def make_retrainer(service, model_dir: Path, tmp_path: Path, backbone: Path, data_dir: Path, **kwargs) -> Retrainer:
    options = {"extra_args": TINY_ARGS, "tolerance": 0.005, "progress_interval": 0.2} | kwargs
    return Retrainer(service, model_dir, tmp_path / "runs", backbone=str(backbone), data_dir=str(data_dir), **options)


async def test_candidate_within_tolerance_is_swapped_in_while_serving(
    serving, tmp_path: Path, tiny_backbone_dir: Path, goemotions_dir: Path
) -> None:
    service, model_dir = serving
    old = service.classifier
    old_created = ModelMetadata.load(model_dir).created_at
    # A tolerance of 1.0 accepts any candidate, so this checks the swap itself, not which model is better.
    retrainer = make_retrainer(service, model_dir, tmp_path, tiny_backbone_dir, goemotions_dir, tolerance=1.0)
    updates: list[RetrainStatus] = []
    served = 0

    async def report(status: RetrainStatus) -> None:
        updates.append(RetrainStatus(**vars(status)))

    async def keep_asking() -> None:  # requests keep succeeding all through the retrain and the swap
        nonlocal served
        while retrainer.running:
            await service.classify("still there?")
            served += 1
            await asyncio.sleep(0.05)

    assert retrainer.start(report)
    assert not retrainer.start(report)  # one retrain at a time
    asker = asyncio.create_task(keep_asking())
    status = await asyncio.wait_for(retrainer.wait(), 300)
    await asker
    assert status.outcome == "swapped", status.detail
    assert status.candidate_f1 is not None and status.current_f1 is not None
    assert service.classifier is not old and served > 0
    assert ModelMetadata.load(model_dir).created_at != old_created  # the candidate now lives in model_dir
    assert isinstance(EmotionClassifier.load(model_dir), EmotionClassifier)
    phases = [u.phase for u in updates]
    assert "evaluating" in phases and phases[-1] == "swapped"
    assert "New model is now serving" in format_status(status)


async def test_candidate_below_the_bar_is_rejected(
    serving, tmp_path: Path, tiny_backbone_dir: Path, goemotions_dir: Path
) -> None:
    service, model_dir = serving
    old = service.classifier
    before = (model_dir / "model.safetensors").read_bytes()
    # A tolerance of -1.0 demands a macro-F1 gain of a whole point, which no candidate can reach.
    retrainer = make_retrainer(service, model_dir, tmp_path, tiny_backbone_dir, goemotions_dir, tolerance=-1.0)
    retrainer.start()
    status = await asyncio.wait_for(retrainer.wait(), 300)
    assert status.outcome == "kept"
    assert service.classifier is old
    assert (model_dir / "model.safetensors").read_bytes() == before
    text = format_status(status)
    assert f"{status.candidate_f1:.3f}" in text and f"{status.current_f1:.3f}" in text


async def test_failed_training_keeps_the_current_model(serving, tmp_path: Path, tiny_backbone_dir: Path) -> None:
    service, model_dir = serving
    old = service.classifier
    retrainer = make_retrainer(service, model_dir, tmp_path, tiny_backbone_dir, tmp_path / "no-such-data")
    retrainer.start()
    status = await asyncio.wait_for(retrainer.wait(), 120)
    assert status.outcome == "failed"
    assert "no such directory" in status.detail
    assert service.classifier is old and (model_dir / "moodring.json").is_file()
    assert "current model keeps serving" in format_status(status)


async def test_cancel_stops_the_child_and_keeps_the_model(
    serving, tmp_path: Path, tiny_backbone_dir: Path, goemotions_dir: Path
) -> None:
    service, model_dir = serving
    old = service.classifier
    retrainer = make_retrainer(
        service,
        model_dir,
        tmp_path,
        tiny_backbone_dir,
        goemotions_dir,
        extra_args="--epochs 50 --patience 50 --train-limit 256 --dev-limit 32 --max-length 16",
    )
    seen_training = asyncio.Event()

    async def report(status: RetrainStatus) -> None:
        if status.phase == "training":
            seen_training.set()

    retrainer.start(report)
    await asyncio.wait_for(seen_training.wait(), 120)
    assert await retrainer.cancel()
    status = await retrainer.wait()
    assert status.outcome == "cancelled"
    assert service.classifier is old and not retrainer.running
    assert not await retrainer.cancel()  # nothing left to cancel
