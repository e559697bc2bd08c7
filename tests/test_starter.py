"""The starter model: a linear head on the frozen tiny SqueezeBERT's embeddings, exported as any model is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model import EmotionClassifier, ModelMetadata
from model.training_contract import ProgressReader, progress_path
from moodring.cli import build_parser
from training.config import TrainArgs
from training.data import load_goemotions
from training.metrics import classification_report
from training.starter import dev_sample, fit_head, label_balanced_sample
from training.train import train


@pytest.fixture(scope="module")
def starter_dir(tmp_path_factory: pytest.TempPathFactory, tiny_backbone_dir: Path, goemotions_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("starter")
    args = TrainArgs(
        data_dir=str(goemotions_dir),
        backbone=str(tiny_backbone_dir),
        out=str(root / "model"),
        work_dir=str(root / "run"),
        max_length=32,
        starter=True,
        starter_rows=400,
        starter_dev_rows=150,
        onnx=False,
    )
    return train(args)


def test_a_starter_is_a_model_with_every_field_a_trained_one_has(starter_dir: Path, tiny_model_dir: Path) -> None:
    starter, trained = (json.loads((d / "moodring.json").read_text()) for d in (starter_dir, tiny_model_dir))
    assert starter.keys() == trained.keys()
    assert starter["training_args"].keys() == trained["training_args"].keys()
    assert starter["training_args"]["starter"] is True and trained["training_args"]["starter"] is False
    meta = ModelMetadata.load(starter_dir)
    assert meta.dev_metrics["dev_sample"] == {"rows": 150, "of": 5426, "seed": 42}  # says it is a sample of dev
    assert meta.dev_metrics["train_rows"] == 400 and meta.dev_metrics["rows"] == 150
    assert set(meta.dev_metrics["cross_fit_macro_f1"]) == {"per_label", "global", "paper_0.3"}
    assert "train.tsv" in meta.data_checksums and "test.tsv" not in meta.data_checksums


def test_the_exported_starter_scores_dev_as_its_training_measured(starter_dir: Path, goemotions_dir: Path) -> None:
    meta = ModelMetadata.load(starter_dir)
    dev = load_goemotions(goemotions_dir, splits=("dev",)).splits["dev"]
    rows = dev.select(dev_sample(len(dev), 150, seed=42))
    truth = np.zeros((len(rows), len(meta.labels)), dtype=bool)
    for i, ids in enumerate(rows["labels"]):
        truth[i, ids] = True
    scores = EmotionClassifier.load(starter_dir, backend="torch").predict_scores(list(rows["text"]))
    report = classification_report(truth, scores >= np.asarray(meta.thresholds), meta.labels)
    assert report["macro_f1"] == pytest.approx(meta.dev_metrics["macro_f1"], abs=1e-3)
    assert report["micro_f1"] == pytest.approx(meta.dev_metrics["micro_f1"], abs=1e-3)


def test_progress_is_reported_as_a_training_reports_it(starter_dir: Path) -> None:
    progress = ProgressReader(progress_path(starter_dir.parent / "run")).read()
    assert progress.training and progress.epochs == 1
    assert progress.step == progress.total_steps == 7 + 3  # batches of 64: 400 train and 150 dev texts
    assert progress.eta_s == 0


def test_the_head_acts_on_raw_embeddings() -> None:
    """Fitted on standardised embeddings, it is folded back to the raw ones the network feeds it."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(600, 6, generator=generator) * torch.tensor([5.0, 0.1, 40, 1, 1, 1]) + 300
    targets = torch.stack([features[:, 0] > 300, features[:, 1] > 300, features[:, 2] < 300], dim=1).float()
    weight, bias = fit_head(features, targets, "bce", seed=0)
    predicted = (features @ weight.T + bias) > 0
    assert (predicted == targets.bool()).float().mean() > 0.95


def test_the_sample_keeps_rare_labels() -> None:
    rng = np.random.default_rng(1)
    labels = [[0] for _ in range(5000)] + [[1] for _ in range(40)] + [[2, 0] for _ in range(20)]
    labels = [labels[i] for i in rng.permutation(len(labels))]
    chosen = label_balanced_sample(labels, rows=300, num_labels=3, seed=3)
    assert len(chosen) == 300 and len(set(chosen.tolist())) == 300
    picked = [labels[i] for i in chosen]
    assert sum(1 in row for row in picked) == 40 and sum(2 in row for row in picked) == 20  # all of the rare ones
    assert np.array_equal(chosen, label_balanced_sample(labels, rows=300, num_labels=3, seed=3))
    assert len(label_balanced_sample(labels[:100], rows=300, num_labels=3, seed=3)) == 100


def test_moodring_train_has_a_starter_switch() -> None:
    args = build_parser().parse_args(["train", "--starter", "--starter-rows", "6000"])
    assert args.starter is True and args.starter_rows == 6000
    assert build_parser().parse_args(["train"]).starter is False
