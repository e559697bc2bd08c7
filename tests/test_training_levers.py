"""The accuracy levers of `moodring train` (issue 25): a weight average, layer-wise learning-rate decay and
self-distillation, through the real Tez loop on the tiny SqueezeBERT."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_resume import STEPS_PER_EPOCH, interrupt_at_step, tiny_args
from transformers import SqueezeBertConfig

from model import ModelMetadata
from model.classifier import EmotionClassifier
from model.network import SqueezeBertForEmotions
from model.training_contract import file_sha256, model_checksums, resume_dir
from training.callbacks import WeightAverage
from training.data import load_goemotions
from training.distillation import TEACHER_TARGETS, blend
from training.module import TezEmotionModel
from training.train import train


def small_network(layers: int = 3) -> SqueezeBertForEmotions:
    config = SqueezeBertConfig(
        vocab_size=50,
        hidden_size=8,
        embedding_size=8,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
        num_labels=3,
    )
    torch.manual_seed(0)
    return SqueezeBertForEmotions(config)


def test_the_weight_average_follows_its_formula_and_applied_puts_the_trained_weights_back() -> None:
    network = small_network()
    average = WeightAverage(network, decay=0.9)
    weight = network.classifier.weight
    expected = weight.detach().clone()
    for update in range(1, 6):
        with torch.no_grad():
            weight.add_(1.0)
        average.on_train_step_end(None)
        decay = min(0.9, (1 + update) / (10 + update))
        expected = decay * expected + (1 - decay) * weight.detach()
    trained = weight.detach().clone()
    with pytest.raises(RuntimeError, match="inside"), average.applied():
        assert torch.allclose(weight, expected)
        raise RuntimeError("inside")
    assert torch.equal(weight, trained)  # back, although the block raised
    assert not torch.allclose(expected, trained)
    frozen = [p for p in network.parameters() if not p.requires_grad]
    assert all(all(p is not q for q in average.parameters) for p in frozen)


def test_an_averaged_training_exports_the_average_and_trains_the_same_weights(
    tmp_path: Path, tiny_backbone_dir: Path, goemotions_dir: Path
) -> None:
    plain = train(tiny_args(tmp_path, tiny_backbone_dir, goemotions_dir, "plain"))
    averaged = train(tiny_args(tmp_path, tiny_backbone_dir, goemotions_dir, "averaged", ema=0.8))
    plain_history = ModelMetadata.load(plain).dev_metrics["history"]
    averaged_history = ModelMetadata.load(averaged).dev_metrics["history"]
    # The average never feeds the training: its trained weights score dev exactly as the plain training's did.
    for plain_epoch, averaged_epoch in zip(plain_history, averaged_history, strict=True):
        trained = averaged_epoch["trained_weights"]
        assert trained["macro_f1"] == plain_epoch["macro_f1"]
        assert trained["macro_f1_cross_fit"] == plain_epoch["macro_f1_cross_fit"]
    # What was exported is the average, not the trained weights.
    plain_weights, averaged_weights = (load_file(str(d / "model.safetensors")) for d in (plain, averaged))
    assert not np.array_equal(plain_weights["classifier.weight"].numpy(), averaged_weights["classifier.weight"].numpy())
    assert ModelMetadata.load(averaged).training_args["ema"] == 0.8


def test_an_averaged_training_resumes_with_its_average(
    tmp_path: Path, tiny_backbone_dir: Path, goemotions_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = train(tiny_args(tmp_path, tiny_backbone_dir, goemotions_dir, "straight", ema=0.8))
    args = tiny_args(tmp_path, tiny_backbone_dir, goemotions_dir, "resumed", ema=0.8)
    with monkeypatch.context() as patch:
        interrupt_at_step(patch, STEPS_PER_EPOCH + 2)
        train(args)
    assert resume_dir(Path(args.work_dir)).is_dir()
    resumed = train(args)
    expected, got = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert all(np.array_equal(expected[k].numpy(), got[k].numpy()) for k in expected)


def learning_rates(module: TezEmotionModel) -> dict[str, float]:
    optimizer, _ = module.optimizer_scheduler()
    by_parameter = {id(p): group["initial_lr"] for group in optimizer.param_groups for p in group["params"]}
    return {name: by_parameter[id(p)] for name, p in module.network.named_parameters()}


def test_layer_decay_scales_each_layer_below_the_head() -> None:
    module = TezEmotionModel(small_network(3), 1e-3, 0.01, 0.1, num_train_steps=10, layer_decay=0.5)
    rates = learning_rates(module)
    assert rates["classifier.weight"] == pytest.approx(1e-3)
    for layer in range(3):
        for name in (n for n in rates if n.startswith(f"transformer.encoder.layers.{layer}.")):
            assert rates[name] == pytest.approx(1e-3 * 0.5 ** (3 - layer)), name
    embeddings = [n for n in rates if n.startswith("transformer.embeddings.")]
    assert embeddings and all(rates[n] == pytest.approx(1e-3 * 0.5**4) for n in embeddings)


def test_without_layer_decay_every_parameter_trains_at_the_learning_rate_in_two_groups() -> None:
    module = TezEmotionModel(small_network(3), 1e-3, 0.01, 0.1, num_train_steps=10)
    optimizer, _ = module.optimizer_scheduler()
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.01, 0.0]
    assert set(learning_rates(module).values()) == {1e-3}


def test_a_distilled_training_learns_from_its_teachers_averaged_scores_and_reuses_them(
    tmp_path: Path,
    tiny_backbone_dir: Path,
    goemotions_dir: Path,
    tiny_model_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    plain = train(tiny_args(tmp_path, tiny_backbone_dir, goemotions_dir, "plain", epochs=1))
    args = tiny_args(tmp_path, tiny_backbone_dir, goemotions_dir, "student", epochs=1, teacher=(str(tiny_model_dir),))
    caplog.set_level(logging.INFO, logger="training.distillation")
    student = train(args)
    assert "scoring 96 training texts" in caplog.text
    work = Path(args.work_dir)
    soft = np.load(work / TEACHER_TARGETS)
    texts = load_goemotions(goemotions_dir, splits=("train",)).splits["train"]["text"][:96]
    expected = EmotionClassifier.load(tiny_model_dir).predict_scores(texts)
    assert np.allclose(soft, expected, atol=1e-3)  # one teacher: its own scores, kept as float16
    record = ModelMetadata.load(student).training_args["teacher_targets"]
    assert record["sha256"] == file_sha256(work / TEACHER_TARGETS) and record["rows"] == 96
    assert record["teachers"] == [model_checksums(tiny_model_dir)]
    assert "teacher" not in ModelMetadata.load(student).training_args  # no machine paths in moodring.json
    plain_weights, student_weights = (load_file(str(d / "model.safetensors")) for d in (plain, student))
    assert not np.array_equal(plain_weights["classifier.weight"].numpy(), student_weights["classifier.weight"].numpy())

    caplog.clear()
    again = train(replace(args, out=str(tmp_path / "again")))
    assert "teacher targets: reusing" in caplog.text and "scoring" not in caplog.text
    again_weights = load_file(str(again / "model.safetensors"))  # the very targets again: the same student
    assert all(np.array_equal(student_weights[k].numpy(), again_weights[k].numpy()) for k in student_weights)


def test_blended_targets_mix_labels_and_teacher_scores() -> None:
    hard = np.array([[1.0, 0.0]], dtype=np.float32)
    soft = np.array([[0.6, 0.2]], dtype=np.float32)
    assert np.allclose(blend(hard, soft, 0.25), [[0.9, 0.05]])
    assert np.array_equal(blend(hard, soft, 0.0), hard)
