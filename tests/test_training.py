"""The real Tez loop on a tiny SqueezeBERT: train, export, reload, evaluate, interrupt, repeat."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from model import EmotionClassifier, ModelMetadata
from training.config import TrainArgs
from training.train import train


def test_export_is_self_contained(tiny_model_dir: Path) -> None:
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "moodring.json"} <= names
    assert not any(name.endswith((".bin", ".pt")) for name in names)


def test_metadata_round_trip(tiny_model_dir: Path, tiny_backbone_dir: Path) -> None:
    meta = ModelMetadata.load(tiny_model_dir)
    assert len(meta.labels) == 28 and meta.labels[-1] == "neutral"
    assert len(meta.thresholds) == 28 and all(0 < t < 1 for t in meta.thresholds)
    assert 0 < meta.global_threshold < 1
    assert f"local directory {tiny_backbone_dir.name}" in meta.backbone
    assert meta.training_args["epochs"] == 1 and meta.training_args["train_limit"] == 512
    assert str(tiny_backbone_dir) not in (tiny_model_dir / "moodring.json").read_text()  # no machine paths
    assert not {"data_dir", "out", "work_dir"} & set(meta.training_args)
    assert set(meta.data_checksums) >= {"train.tsv", "dev.tsv", "emotions.txt"}
    assert "test.tsv" not in meta.data_checksums  # training never reads the test split
    assert meta.dev_metrics["rows"] == 256 and 0 <= meta.dev_metrics["macro_f1"] <= 1
    assert meta.dev_metrics["history"][0]["epoch"] == 1
    assert {"torch", "transformers", "tez"} <= set(meta.versions)
    assert "joy" in meta.ekman_mapping["joy"]
    meta.save(tiny_model_dir.parent)  # write it elsewhere and read it back unchanged
    assert ModelMetadata.load(tiny_model_dir.parent) == meta


def test_exported_model_predicts_what_training_measured(tiny_dev_report: dict) -> None:
    report = tiny_dev_report
    assert report["rows"] == 5426
    assert set(report["decision_rules"]) == {"per_label", "global", "paper_0.3"}
    assert set(report["ekman"]["per_label"]["per_label"]) == {
        "anger",
        "disgust",
        "fear",
        "joy",
        "sadness",
        "surprise",
        "neutral",
    }
    assert set(report["sentiment"]["paper_0.3"]["per_label"]) == {"positive", "negative", "ambiguous", "neutral"}
    assert Path(report["files"]["chart"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(Path(report["files"]["json"]).read_text())
    assert saved["macro_f1"] == report["macro_f1"]


def test_same_seed_same_result(tmp_path: Path, tiny_backbone_dir: Path, goemotions_dir: Path) -> None:
    def run(name: str, seed: int) -> dict:
        out = train(
            TrainArgs(
                data_dir=str(goemotions_dir),
                backbone=str(tiny_backbone_dir),
                out=str(tmp_path / name),
                work_dir=str(tmp_path / f"{name}-run"),
                epochs=1,
                batch_size=16,
                learning_rate=1e-3,
                max_length=24,
                train_limit=96,
                dev_limit=64,
                seed=seed,
                onnx=False,
            )
        )
        return load_file(str(out / "model.safetensors"))

    first, second, other = run("a", 7), run("b", 7), run("c", 8)
    assert all(np.array_equal(first[k].numpy(), second[k].numpy()) for k in first)
    assert not all(np.array_equal(first[k].numpy(), other[k].numpy()) for k in first)


def test_ctrl_c_keeps_the_best_checkpoint(tmp_path: Path, tiny_backbone_dir: Path, goemotions_dir: Path) -> None:
    out, work = tmp_path / "model", tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "moodring",
        "train",
        "--data-dir",
        str(goemotions_dir),
        "--backbone",
        str(tiny_backbone_dir),
        "--out",
        str(out),
        "--work-dir",
        str(work),
        "--epochs",
        "50",
        "--patience",
        "50",
        "--train-limit",
        "64",
        "--dev-limit",
        "32",
        "--max-length",
        "16",
        "--batch-size",
        "16",
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    progress = work / "progress.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if progress.exists() and '"event": "dev"' in progress.read_text():
            break
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert "exporting the best checkpoint so far" in output
    meta = ModelMetadata.load(out)
    assert 1 <= meta.dev_metrics["best_epoch"] < 50
    assert EmotionClassifier.load(out).predict(["still works"])[0].top


def test_interrupted_checkpoint_save_keeps_the_checkpoint_in_place_whole(
    tmp_path: Path, tiny_backbone_dir: Path, goemotions_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a checkpoint is written: the one in place stays whole, with the predictions of its own weights.

    Two runs share a work directory, as `moodring train` runs do by default (runs/<model name>). The second is
    interrupted in its first checkpoint save, once half-way through the weights and once before any of them.
    """
    import transformers.modeling_utils

    from training.callbacks import read_checkpoint
    from training.metrics import tune_thresholds
    from training.train import TrainingError

    work = tmp_path / "run"

    def run(name: str, seed: int) -> Path:
        return train(
            TrainArgs(
                data_dir=str(goemotions_dir),
                backbone=str(tiny_backbone_dir),
                out=str(tmp_path / name),
                work_dir=str(work),
                epochs=1,
                batch_size=16,
                learning_rate=1e-3,
                max_length=16,
                train_limit=128,
                dev_limit=64,
                seed=seed,
            )
        )

    first = run("first", seed=1)
    checkpoint = {p.name: p.read_bytes() for p in (work / "best").iterdir()}
    # The first run exported its checkpoint's weights, with thresholds tuned on that checkpoint's predictions.
    scores, truth, epoch = read_checkpoint(work / "best")
    assert epoch == 1 and ModelMetadata.load(first).thresholds == pytest.approx(tune_thresholds(truth, scores))
    assert (first / "model.safetensors").read_bytes() == checkpoint["model.safetensors"]

    real_save = transformers.modeling_utils.safe_save_file
    for half_written in (True, False):

        def interrupted_save(tensors: dict, filename: str, metadata=None, half_written=half_written) -> None:
            if not Path(filename).is_relative_to(work):  # the export's save
                real_save(tensors, filename, metadata=metadata)
                return
            if half_written:
                Path(filename).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{half a header")
            raise KeyboardInterrupt

        monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", interrupted_save)
        with pytest.raises(TrainingError, match="no epoch finished"):
            run("second", seed=2)  # nothing of its own to export, and nothing of the first run's exported as its
        assert {p.name: p.read_bytes() for p in (work / "best").iterdir()} == checkpoint
        assert sorted(p.name for p in work.iterdir()) == ["best", "progress.jsonl"]  # no half copy left
        assert not (tmp_path / "second").exists()


def test_replace_directory_swaps_and_restores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from model import storage

    target, new = tmp_path / "models" / "current", tmp_path / "runs" / "candidate"
    target.mkdir(parents=True)
    (target / "weights").write_text("old")
    new.mkdir(parents=True)
    (new / "weights").write_text("new")
    storage.replace_directory(new, target)
    assert (target / "weights").read_text() == "new" and not new.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["current"]  # nothing left beside it

    real_replace = os.replace
    for fault in (OSError("disk full"), KeyboardInterrupt()):  # a failed rename, or Ctrl-C between the two

        def failing_replace(src, dst, fault=fault):
            if Path(src).name.startswith(".current.incoming"):
                raise fault
            return real_replace(src, dst)

        newer = tmp_path / "runs" / "newer"
        newer.mkdir()
        monkeypatch.setattr(storage.os, "replace", failing_replace)
        with pytest.raises(type(fault)):
            storage.replace_directory(newer, target)
        assert (target / "weights").read_text() == "new"  # the serving model is back where it was
        shutil.rmtree(newer, ignore_errors=True)


@pytest.mark.parametrize("groups", [1, 4])
def test_channel_last_training_path_is_the_network_with_its_own_parameters(groups: int) -> None:
    """Training runs through `LinearView(share_weights=True)`: same logits, same gradients, on the same tensors."""
    import torch
    from transformers import SqueezeBertConfig

    from model.network import SqueezeBertForEmotions
    from training.module import TezEmotionModel

    torch.manual_seed(0)
    grouping = {f"{name}_groups": groups for name in ("q", "k", "v", "post_attention", "intermediate", "output")}
    config = SqueezeBertConfig(
        vocab_size=500, hidden_size=32, embedding_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, num_labels=5, **grouping,
    )  # fmt: skip
    network = SqueezeBertForEmotions(config)
    module = TezEmotionModel(network, learning_rate=1e-3, weight_decay=0.0, warmup_ratio=0.0, num_train_steps=1)
    assert {id(p) for p in module.parameters()} == {id(p) for p in network.parameters()}  # no copies to train
    input_ids = torch.randint(5, 500, (3, 11))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:], attention_mask[2, 2:] = 0, 0
    targets = (torch.rand(3, 5) > 0.5).float()
    module.eval()  # dropout off on both paths, so they must agree exactly

    def gradients(loss: torch.Tensor) -> list[torch.Tensor]:
        network.zero_grad()
        loss.backward()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in network.parameters()]

    logits, loss, _ = module(input_ids, attention_mask, targets)
    expected = network(input_ids, attention_mask)
    assert (logits - expected).abs().max() < 1e-5
    for ours, reference in zip(gradients(loss), gradients(module.loss_fn(expected, targets)), strict=True):
        assert torch.allclose(ours, reference, atol=1e-6)

    module.train()
    assert network.training and all(m.training for m in network.modules())
    optimizer, _ = module.optimizer_scheduler()
    before = network.transformer.encoder.layers[0].intermediate.conv1d.weight.detach().clone()
    module(input_ids, attention_mask, targets)[1].backward()
    optimizer.step()
    assert not torch.equal(before, network.transformer.encoder.layers[0].intermediate.conv1d.weight)
