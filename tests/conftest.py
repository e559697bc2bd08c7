"""Shared fixtures: the GoEmotions directory and a tiny SqueezeBERT trained through the real Tez loop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# How the tests share the machine on several pytest-xdist workers (tests/parallel_run.py; first, so that a worker's
# one-thread settings are in place before bot_fixtures imports torch), fixtures for driving the real discord.py
# client against a local Discord stand-in (the `sandbox` package; tests/standin_fixtures.py), for running the real
# MoodringBot against it (tests/bot_fixtures.py), the end-of-run check that no process the tests started is still
# alive (tests/process_guard.py), and a real PostgreSQL server (tests/postgres_fixtures.py).
pytest_plugins = ("parallel_run", "standin_fixtures", "bot_fixtures", "process_guard", "postgres_fixtures")

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("GOEMOTIONS_DIR") or REPO.parent / "shared" / "data" / "goemotions")


@pytest.fixture(scope="session")
def goemotions_dir() -> Path:
    if not (DATA_DIR / "train.tsv").is_file():
        pytest.fail(f"GoEmotions not found at {DATA_DIR}; set GOEMOTIONS_DIR")
    return DATA_DIR


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised (seeded) 2-layer SqueezeBERT (grouped convolutions) with the MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, SqueezeBertConfig, SqueezeBertModel

    from training.backbones import minilm_directory

    directory = tmp_path_factory.mktemp("tiny-squeezebert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_directory())
    config = SqueezeBertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        embedding_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        q_groups=2,
        k_groups=2,
        v_groups=2,
        post_attention_groups=2,
        intermediate_groups=4,
        output_groups=4,
    )
    torch.manual_seed(0)  # the same tiny backbone every run, so that training results are the same too
    SqueezeBertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_backbone_dir: Path, goemotions_dir: Path) -> Path:
    """The tiny backbone fine-tuned for one epoch on a slice of GoEmotions with Tez, then exported.

    Without ONNX files, so that only the tests that use them pay for them (tests/test_onnx.py adds them).
    """
    from training.config import TrainArgs
    from training.train import train

    root = tmp_path_factory.mktemp("tiny-model")
    args = TrainArgs(
        data_dir=str(goemotions_dir),
        backbone=str(tiny_backbone_dir),
        out=str(root / "model"),
        work_dir=str(root / "run"),
        epochs=1,
        batch_size=32,
        learning_rate=1e-3,
        max_length=32,
        train_limit=512,
        dev_limit=256,
        onnx=False,
    )
    return train(args)


@pytest.fixture(scope="session")
def onnx_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, goemotions_dir: Path) -> Path:
    """A copy of the tiny model with the ONNX files added by `moodring export-onnx`, as a user would."""
    import shutil
    import subprocess
    import sys

    directory = tmp_path_factory.mktemp("tiny-onnx") / "model"
    shutil.copytree(tiny_model_dir, directory)
    result = subprocess.run(
        [sys.executable, "-m", "moodring", "export-onnx", "--model", str(directory), "--data-dir", str(goemotions_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return directory


@pytest.fixture(scope="session")
def tiny_dev_report(tiny_model_dir: Path, goemotions_dir: Path) -> dict:
    """The tiny model's report on the whole dev split; `eval-dev.json` and `eval-dev.png` are written beside it."""
    from training.evaluate import evaluate

    return evaluate(tiny_model_dir, split="dev", data_dir=goemotions_dir)
