"""An interrupted training goes on from its last finished epoch: the real Tez loop on the tiny SqueezeBERT."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from model import ModelMetadata
from model.training_contract import ProgressReader, progress_path, resume_dir
from training.config import TrainArgs
from training.module import TezEmotionModel
from training.train import train

STEPS_PER_EPOCH = 6  # 96 rows in batches of 16


def tiny_args(tmp_path: Path, backbone: Path, data_dir: Path, name: str, **changes) -> TrainArgs:
    args = TrainArgs(
        data_dir=str(data_dir),
        backbone=str(backbone),
        out=str(tmp_path / name),
        work_dir=str(tmp_path / f"{name}-run"),
        epochs=2,
        patience=5,
        batch_size=16,
        learning_rate=1e-3,
        max_length=24,
        train_limit=96,
        dev_limit=64,
        seed=5,
        onnx=False,
    )
    return replace(args, **changes)


def interrupt_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Ctrl-C in the middle of training step `step` (counted from 1), the way a KeyboardInterrupt arrives."""
    real_forward = TezEmotionModel.forward
    calls = iter(range(1, 10_000))

    def forward(self, *args, **kwargs):
        if next(calls) == step:
            raise KeyboardInterrupt
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(TezEmotionModel, "forward", forward)


def test_an_interrupted_training_resumes_from_its_last_epoch_and_ends_as_an_uninterrupted_one(
    tmp_path: Path,
    tiny_backbone_dir: Path,
    goemotions_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    straight = train(tiny_args(tmp_path, tiny_backbone_dir, goemotions_dir, "straight"))
    assert not resume_dir(tmp_path / "straight-run").exists()  # a complete training leaves nothing to resume

    args = tiny_args(tmp_path, tiny_backbone_dir, goemotions_dir, "resumed")
    work = Path(args.work_dir)
    with monkeypatch.context() as patch:
        interrupt_at_step(patch, STEPS_PER_EPOCH + 2)  # in epoch 2
        interrupted = train(args)
    assert ModelMetadata.load(interrupted).dev_metrics["best_epoch"] == 1  # exported what it had, as before
    assert resume_dir(work).is_dir()

    caplog.set_level(logging.INFO, logger="training.train")
    resumed = train(args)
    assert "resuming from the end of epoch 1 of 2" in caplog.text
    assert not resume_dir(work).exists()

    expected, got = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert expected.keys() == got.keys()
    assert all(np.array_equal(expected[k].numpy(), got[k].numpy()) for k in expected)
    expected_meta, got_meta = ModelMetadata.load(straight), ModelMetadata.load(resumed)
    assert got_meta.dev_metrics["history"] == expected_meta.dev_metrics["history"]
    assert [e["epoch"] for e in got_meta.dev_metrics["history"]] == [1, 2]
    assert got_meta.thresholds == expected_meta.thresholds
    # Whoever reads the progress file sees both epochs' dev scores, and steps counted from the start of training.
    progress = ProgressReader(progress_path(work)).read()
    assert len(progress.dev_f1) == 2 and progress.step == progress.total_steps == 2 * STEPS_PER_EPOCH


def test_a_changed_recipe_starts_from_zero(
    tmp_path: Path,
    tiny_backbone_dir: Path,
    goemotions_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    args = tiny_args(tmp_path, tiny_backbone_dir, goemotions_dir, "model", epochs=3)
    with monkeypatch.context() as patch:
        interrupt_at_step(patch, STEPS_PER_EPOCH + 1)
        train(args)
    assert resume_dir(Path(args.work_dir)).is_dir()

    caplog.set_level(logging.INFO, logger="training.train")
    out = train(replace(args, epochs=1, learning_rate=2e-3))  # another schedule: its state would not fit
    assert "not resuming the interrupted training" in caplog.text and "epochs, learning_rate changed" in caplog.text
    assert "resuming from" not in caplog.text.replace("not resuming", "")
    assert [e["epoch"] for e in ModelMetadata.load(out).dev_metrics["history"]] == [1]


def test_no_resume_trains_from_zero(
    tmp_path: Path,
    tiny_backbone_dir: Path,
    goemotions_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    args = tiny_args(tmp_path, tiny_backbone_dir, goemotions_dir, "model", train_limit=32)  # 2 steps an epoch
    with monkeypatch.context() as patch:
        interrupt_at_step(patch, 3)
        train(args)
    assert resume_dir(Path(args.work_dir)).is_dir()

    caplog.set_level(logging.INFO, logger="training.train")
    out = train(replace(args, resume=False))
    assert "resuming from" not in caplog.text
    assert [e["epoch"] for e in ModelMetadata.load(out).dev_metrics["history"]] == [1, 2]
    assert not resume_dir(Path(args.work_dir)).exists()
