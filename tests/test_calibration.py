"""Calibrated probabilities (model/calibration.py): the fits on synthetic scores of known miscalibration, how they are
stored in `moodring.json`, how the classifier serves them beside the raw score, and how they are (re)fitted."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from bot.render import emotion_lines
from model import EmotionClassifier, ModelError, ModelMetadata
from model.calibration import (
    MAX_BREAKPOINTS,
    METHODS,
    Calibration,
    choose_calibration,
    expected_calibration_error,
    fit_calibration,
)
from model.classifier import EmotionScore, Prediction
from model.metadata import METADATA_FILE

LABELS = 6


def synthetic(rows: int, seed: int, distortion) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn with true probability sigmoid(z), and scores sigmoid(distortion(z)) for them."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.5, 1.5, size=(rows, LABELS)) + np.linspace(-1, 1, LABELS)
    truth = rng.random((rows, LABELS)) < 1 / (1 + np.exp(-z))
    return truth, 1 / (1 + np.exp(-distortion(z)))


def pushed_up(z: np.ndarray) -> np.ndarray:
    """What the asymmetric loss does, roughly: scores too high, and too sure."""
    return 2.0 * z + 2.0


@pytest.mark.parametrize("method", METHODS)
def test_each_method_reduces_held_out_ece_of_pushed_up_scores(method: str) -> None:
    truth, scores = synthetic(6000, seed=1, distortion=pushed_up)
    fit, held_out = slice(0, 4000), slice(4000, None)
    calibration = fit_calibration(method, truth[fit], scores[fit])
    before = expected_calibration_error(truth[held_out], scores[held_out])
    after = expected_calibration_error(truth[held_out], calibration.apply(scores[held_out]))
    assert before > 0.1
    # A temperature alone cannot undo a shift (its map keeps 0.5 at 0.5), so it must only help; the others fix it.
    assert after < (before if method == "temperature" else 0.02), (before, after)


def test_cross_fit_chooses_the_lowest_held_out_log_loss_and_is_deterministic() -> None:
    truth, scores = synthetic(3000, seed=2, distortion=pushed_up)
    chosen = choose_calibration(truth, scores, seed=42)
    losses = {method: chosen.cross_fit[method]["log_loss"] for method in METHODS}
    assert chosen.method == min(losses, key=losses.get)
    assert chosen.cross_fit[chosen.method]["log_loss"] < chosen.cross_fit["raw"]["log_loss"]
    assert chosen.cross_fit[chosen.method]["brier"] < chosen.cross_fit["raw"]["brier"]
    assert (chosen.rows, chosen.seed) == (3000, 42)
    assert choose_calibration(truth, scores, seed=42) == chosen
    other = choose_calibration(truth, scores, seed=7)
    assert other.cross_fit != chosen.cross_fit  # other folds, other held-out figures


def test_isotonic_map_is_monotone_and_capped() -> None:
    truth, scores = synthetic(5000, seed=3, distortion=lambda z: 3 * np.sin(z) + z)  # a wiggly distortion
    calibration = fit_calibration("isotonic", truth, scores)
    grid = np.linspace(0, 1, 2001)
    probabilities = calibration.apply(np.repeat(grid[:, None], LABELS, axis=1))
    assert (np.diff(probabilities, axis=0) >= 0).all()
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    for x, y in calibration.parameters:
        assert 2 <= len(x) == len(y) <= MAX_BREAKPOINTS
        assert (np.diff(x) > 0).all() and (np.diff(y) >= 0).all()


def test_temperature_of_a_calibrated_source_is_about_one() -> None:
    truth, scores = synthetic(40_000, seed=4, distortion=lambda z: z)
    temperatures = [t for (t,) in fit_calibration("temperature", truth, scores).parameters]
    assert np.allclose(temperatures, 1.0, atol=0.05), temperatures
    # and an overconfident source (logits doubled) gets a temperature of about 2
    truth, scores = synthetic(40_000, seed=5, distortion=lambda z: 2 * z)
    temperatures = [t for (t,) in fit_calibration("temperature", truth, scores).parameters]
    assert np.allclose(temperatures, 2.0, atol=0.15), temperatures


def test_a_label_without_positives_gets_finite_maps() -> None:
    truth, scores = synthetic(500, seed=6, distortion=pushed_up)
    truth[:, 0] = False
    for method in METHODS:
        calibration = fit_calibration(method, truth, scores)
        probabilities = calibration.apply(scores)
        assert np.isfinite(probabilities).all(), method
        if method != "temperature":  # a temperature keeps a score's side of 0.5, so it cannot say "never"
            assert probabilities[:, 0].max() < 0.05, method
        Calibration.from_dict(json.loads(json.dumps(calibration.to_dict())), LABELS)


@pytest.mark.parametrize(
    ("method", "label_map", "message"),
    [
        ("isotonic", [[0.1, 0.5, 0.9], [0.2, 0.1, 0.8]], "never decrease"),
        ("isotonic", [[0.5, 0.1], [0.1, 0.2]], "x must increase"),
        ("isotonic", [[0.1, 0.5], [0.1, 1.2]], r"y in \[0, 1\]"),
        ("platt", [-1.0, 0.0], "a >= 0"),
        ("temperature", [0.0], "T > 0"),
        ("sigmoid", [1.0], "not one of"),
    ],
)
def test_a_bad_stored_calibration_is_refused(method: str, label_map: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Calibration.from_dict({"method": method, "parameters": [label_map] * LABELS}, LABELS)


def test_a_stored_calibration_needs_one_map_per_label() -> None:
    with pytest.raises(ValueError, match="one map per label"):
        Calibration.from_dict({"method": "temperature", "parameters": [[1.0]] * (LABELS - 1)}, LABELS)


def metadata_for(labels: list[str], calibration: dict) -> ModelMetadata:
    return ModelMetadata(
        labels=labels,
        thresholds=[0.5] * len(labels),
        global_threshold=0.5,
        ekman_mapping={},
        sentiment_mapping={},
        backbone="test",
        max_length=16,
        calibration=calibration,
    )


def test_metadata_round_trip_keeps_the_calibration_by_backend(tmp_path: Path) -> None:
    truth, scores = synthetic(800, seed=7, distortion=pushed_up)
    records = {
        "torch": choose_calibration(truth, scores, seed=42).to_dict(),
        "onnx-int8": fit_calibration("isotonic", truth, scores).to_dict(),
    }
    metadata = metadata_for([f"label{j}" for j in range(LABELS)], records)
    metadata.save(tmp_path)
    loaded = ModelMetadata.load(tmp_path)
    assert loaded == metadata
    assert loaded.calibration_for("onnx-int8") == records["onnx-int8"]
    assert loaded.calibration_for("onnx") == loaded.calibration_for("torch") == records["torch"]


def test_old_metadata_without_calibration_loads_uncalibrated(tmp_path: Path) -> None:
    metadata = metadata_for(["a", "b"], {})
    old = asdict(metadata)
    del old["calibration"]  # as every moodring.json written before calibration existed
    (tmp_path / METADATA_FILE).write_text(json.dumps(old), encoding="utf-8")
    loaded = ModelMetadata.load(tmp_path)
    assert loaded.calibration == {} and loaded.calibration_for("torch") is None


class FixedScorer:
    """A scorer that gives every text the same raw scores."""

    backend = "torch"
    path = None
    threads = 1

    def __init__(self, row: list[float]) -> None:
        self.row = np.asarray(row, dtype=np.float32)

    def scores(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return np.tile(self.row, (len(input_ids), 1))


@pytest.fixture(scope="module")
def tokenizer():
    from model.tokenizer import FastTokenizer
    from training.backbones import minilm_directory

    return FastTokenizer.load(minilm_directory(), 64)


def test_ranking_puts_labels_above_threshold_first_each_group_by_probability(tokenizer) -> None:
    labels = ["joy", "approval", "anger", "fear"]
    metadata = metadata_for(labels, {})
    metadata.thresholds = [0.40, 0.78, 0.50, 0.30]
    # Platt maps (a, b on the logit): approval's high threshold comes with a map that lowers its scores.
    metadata.calibration = {
        "torch": {"method": "platt", "parameters": [[1.0, -1.0], [1.0, -0.5], [1.0, 0.0], [1.0, 0.0]]}
    }
    # raw:        joy 0.45 (above), approval 0.70 (below), anger 0.60 (above), fear 0.35 (above)
    classifier = EmotionClassifier(FixedScorer([0.45, 0.70, 0.60, 0.35]), tokenizer, metadata)
    (prediction,) = classifier.predict(["hello"], top_k=None)
    probability = {item.label: item.probability for item in prediction.top}
    assert probability["approval"] > probability["joy"]  # a label below its threshold shows more than one above
    assert [item.label for item in prediction.top] == ["anger", "fear", "joy", "approval"]
    assert [item.above_threshold for item in prediction.top] == [True, True, True, False]
    assert prediction.labels == ["anger", "fear", "joy"]  # the prediction: decided on raw scores, as ranked
    for item in prediction.top:
        assert item.score == pytest.approx([0.45, 0.70, 0.60, 0.35][labels.index(item.label)])
    assert probability["joy"] == pytest.approx(1 / (1 + np.exp(-(np.log(0.45 / 0.55) - 1.0))), abs=1e-6)
    (two,) = classifier.predict(["hello"], top_k=2)
    assert two.top == prediction.top[:2]

    metadata.calibration = {}  # uncalibrated: the probability shown is the raw score, ranked by the same rule
    (raw,) = EmotionClassifier(FixedScorer([0.45, 0.70, 0.60, 0.35]), tokenizer, metadata).predict(["hello"])
    assert all(item.probability == item.score for item in raw.top)
    assert [item.label for item in raw.top] == ["anger", "joy", "fear", "approval"]


def test_embed_lines_show_the_probability_and_mark_the_decision() -> None:
    prediction = Prediction(
        text="ily guys",
        top=[
            EmotionScore("love", score=0.81, probability=0.34, above_threshold=True),
            EmotionScore("neutral", score=0.66, probability=0.41, above_threshold=False),
        ],
        labels=["love"],
        ekman=["joy"],
        sentiment=["positive"],
    )
    lines = emotion_lines(prediction)
    assert lines[0].startswith("✅") and "**love**" in lines[0] and lines[0].endswith("34%")
    assert lines[1].startswith("▫️") and "**neutral**" in lines[1] and lines[1].endswith("41%")
    assert "`████░░░░░░░░`" in lines[0] and "`█████░░░░░░░`" in lines[1]  # 12-cell bars of 0.34 and 0.41


def test_the_tiny_model_is_calibrated_at_export_and_serves_it(tiny_model_dir: Path) -> None:
    metadata = ModelMetadata.load(tiny_model_dir)
    record = metadata.calibration["torch"]
    assert record["method"] in METHODS and record["rows"] == metadata.dev_metrics["rows"]
    assert record["seed"] == metadata.training_args["seed"]
    classifier = EmotionClassifier.load(tiny_model_dir, backend="torch")
    texts = ["Thank you so much, this made my day!", "I am so angry right now"]
    scores = classifier.predict_scores(texts)
    expected = Calibration.from_dict(record, len(metadata.labels)).apply(scores)
    for prediction, row, probabilities in zip(classifier.predict(texts, top_k=None), scores, expected, strict=True):
        for item in prediction.top:
            j = classifier.labels.index(item.label)
            assert item.score == pytest.approx(float(row[j]))
            assert item.probability == pytest.approx(float(probabilities[j]), abs=1e-6)
            assert item.above_threshold == (row[j] >= classifier.thresholds[j])


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moodring", *args], capture_output=True, text=True, timeout=300)


def test_calibrate_refits_an_uncalibrated_model_and_changes_nothing_else(
    tiny_model_dir: Path, goemotions_dir: Path, tmp_path: Path
) -> None:
    directory = tmp_path / "model"
    shutil.copytree(tiny_model_dir, directory)
    before = json.loads((directory / METADATA_FILE).read_text(encoding="utf-8"))
    stripped = {key: value for key, value in before.items() if key != "calibration"}
    (directory / METADATA_FILE).write_text(json.dumps(stripped), encoding="utf-8")
    classifier = EmotionClassifier.load(directory, backend="torch")
    (prediction,) = classifier.predict(["Thank you so much!"])
    assert classifier.calibration is None
    assert all(item.probability == item.score for item in prediction.top)

    result = run_cli("calibrate", "--model", str(directory), "--data-dir", str(goemotions_dir))
    assert result.returncode == 0, result.stderr
    assert re.match(r"torch: (temperature|platt|isotonic) on 256 dev rows; cross-fit log-loss", result.stdout)
    after = json.loads((directory / METADATA_FILE).read_text(encoding="utf-8"))
    assert {key: value for key, value in after.items() if key != "calibration"} == stripped
    assert list(after["calibration"]) == ["torch"]
    refitted = after["calibration"]["torch"]
    assert refitted["method"] in METHODS
    assert (refitted["rows"], refitted["seed"]) == (256, before["training_args"]["seed"])
    assert EmotionClassifier.load(directory, backend="torch").calibration is not None


def test_calibrate_without_a_model_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("calibrate", "--model", str(tmp_path / "none"))
    assert result.returncode == 2
    assert "moodring train" in result.stderr and "Traceback" not in result.stderr


def test_int8_backend_gets_its_own_calibration(onnx_model_dir: Path) -> None:
    metadata = ModelMetadata.load(onnx_model_dir)
    assert set(metadata.calibration) == {"torch", "onnx-int8"}
    int8 = EmotionClassifier.load(onnx_model_dir, backend="onnx-int8")
    assert int8.calibration == Calibration.from_dict(metadata.calibration["onnx-int8"], len(metadata.labels))
    fp32 = EmotionClassifier.load(onnx_model_dir, backend="onnx")
    assert fp32.calibration == Calibration.from_dict(metadata.calibration["torch"], len(metadata.labels))


def test_a_corrupt_stored_calibration_is_a_model_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    directory = tmp_path / "model"
    shutil.copytree(tiny_model_dir, directory)
    data = json.loads((directory / METADATA_FILE).read_text(encoding="utf-8"))
    data["calibration"]["torch"]["parameters"] = data["calibration"]["torch"]["parameters"][:-1]
    (directory / METADATA_FILE).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ModelError, match="one map per label"):
        EmotionClassifier.load(directory, backend="torch")


def test_calibration_benchmark_smoke_run(onnx_model_dir: Path, goemotions_dir: Path, tmp_path: Path) -> None:
    benchmark = Path(__file__).resolve().parents[1] / "benchmarks" / "calibration.py"
    out = tmp_path / "calibration"
    options = ["--model", str(onnx_model_dir), "--data-dir", str(goemotions_dir), "--test-rows", "64", "--threads", "1"]
    result = subprocess.run(
        [sys.executable, str(benchmark), *options, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert (report["rows"], report["bins"], report["backend"]) == (64, 15, "onnx")  # auto: the served fp32 ONNX
    for name in ("raw", "calibrated"):
        assert 0 <= report[name]["ece_pooled"] <= 1 and len(report[name]["ece_per_label"]) == 28
        assert sum(report[name]["reliability"]["count"]) == 64 * 28
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    assert "| raw sigmoid score |" in result.stdout and "| calibrated probability |" in result.stdout
