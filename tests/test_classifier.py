"""`EmotionClassifier.predict` on awkward inputs, and the `classify` command built on it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from model import EmotionClassifier, ModelError, ModelNotFoundError


@pytest.fixture(scope="module")
def classifier(tiny_model_dir: Path) -> EmotionClassifier:
    return EmotionClassifier.load(tiny_model_dir)


def test_predict_ranks_top_k_with_threshold_marks(classifier: EmotionClassifier) -> None:
    (prediction,) = classifier.predict(["Thank you so much, this made my day!"], top_k=5)
    marked = [item.above_threshold for item in prediction.top]
    assert len(prediction.top) == 5 and marked == sorted(marked, reverse=True)  # labels above threshold first
    for group in (True, False):  # each group by probability (Prediction's ranking rule)
        probabilities = [item.probability for item in prediction.top if item.above_threshold is group]
        assert probabilities == sorted(probabilities, reverse=True)
    assert len({item.label for item in prediction.top}) == 5
    for item in prediction.top:
        threshold = classifier.thresholds[classifier.labels.index(item.label)]
        assert item.above_threshold == (item.score >= threshold)
    assert all(label in classifier.labels for label in prediction.labels)
    assert prediction.ekman and prediction.sentiment
    assert set(prediction.sentiment) <= {"positive", "negative", "ambiguous", "neutral"}


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_texts_get_empty_predictions(classifier: EmotionClassifier, text: str) -> None:
    (prediction,) = classifier.predict([text])
    assert prediction.text == text and prediction.top == [] and prediction.labels == []


def test_awkward_inputs_in_one_batch_keep_their_order(classifier: EmotionClassifier) -> None:
    texts = ["😂😂😂", "", "Je suis tellement heureux aujourd'hui !", "這太棒了", "a" * 10_000, "ok " * 5000]
    predictions = classifier.predict(texts)
    assert [p.text for p in predictions] == texts
    assert predictions[1].top == []
    # One 10,000-letter word is a lone [UNK] to WordPiece (100 characters a word at most): unreadable, not neutral.
    assert predictions[4].unreadable and predictions[4].top == []
    for prediction in predictions[:1] + predictions[2:4] + predictions[5:]:
        assert len(prediction.top) == 5
        assert all(0.0 <= item.score <= 1.0 for item in prediction.top)


def test_batching_does_not_change_scores(classifier: EmotionClassifier) -> None:
    texts = ["short", "a somewhat longer sentence about nothing in particular", "mid length text"]
    together = classifier.predict_scores(texts, batch_size=3)
    alone = [classifier.predict_scores([t])[0] for t in texts]
    for row, single in zip(together, alone, strict=True):
        assert abs(row - single).max() < 1e-5


def test_missing_model_says_how_to_train(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="moodring train"):
        EmotionClassifier.load(tmp_path)


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "moodring", *args], input=stdin, capture_output=True, text=True, timeout=120
    )


def test_classify_json(tiny_model_dir: Path) -> None:
    result = run_cli("classify", "--model", str(tiny_model_dir), "--json", "I love it", "")
    assert result.returncode == 0, result.stderr
    items = json.loads(result.stdout)
    assert [item["text"] for item in items] == ["I love it", ""]
    assert set(items[0]) == {"text", "top", "labels", "ekman", "sentiment", "unreadable"}
    assert len(items[0]["top"]) == 5
    assert set(items[0]["top"][0]) == {"label", "score", "probability", "above_threshold"}


def test_classify_table_from_stdin(tiny_model_dir: Path) -> None:
    result = run_cli("classify", "--model", str(tiny_model_dir), stdin="first line\nsecond line\n")
    assert result.returncode == 0, result.stderr
    assert "“first line”" in result.stdout and "“second line”" in result.stdout
    assert result.stdout.count("█") + result.stdout.count("·") == 2 * 5 * 20  # 5 bars of 20 cells per text


def test_classify_without_model_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("classify", "--model", str(tmp_path / "none"), "hi")
    assert result.returncode == 2
    assert "moodring train" in result.stderr and "Traceback" not in result.stderr


def run_cli_bytes(*args: str | bytes, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """`run_cli` with raw bytes in, and stdout and stderr decoded as UTF-8 (strictly: they must be valid)."""
    result = subprocess.run([sys.executable, "-m", "moodring", *args], input=stdin, capture_output=True, timeout=120)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


def test_classify_replaces_invalid_utf8_on_stdin_and_keeps_every_line(tiny_model_dir: Path) -> None:
    result = run_cli_bytes("classify", "--model", str(tiny_model_dir), "--json", stdin=b"\xff\xfe abc\nfine line\n")
    assert result.returncode == 0, result.stderr
    items = json.loads(result.stdout)
    assert [item["text"] for item in items] == ["\ufffd\ufffd abc", "fine line"]
    assert all(len(item["top"]) == 5 for item in items)
    assert "Traceback" not in result.stderr
    assert "line 1 is not valid UTF-8" in result.stderr and "line 2" not in result.stderr


def test_classify_replaces_an_undecodable_argument(tiny_model_dir: Path) -> None:
    # The child sees b"caf\xe9" (Latin-1) as "caf\udce9" in sys.argv (surrogateescape).
    result = run_cli_bytes("classify", "--model", str(tiny_model_dir), "--json", b"caf\xe9 is closed", "so happy")
    assert result.returncode == 0, result.stderr
    assert [item["text"] for item in json.loads(result.stdout)] == ["caf\ufffd is closed", "so happy"]
    assert "argument 1 is not valid UTF-8" in result.stderr and "Traceback" not in result.stderr


def broken_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    return copy


def test_exported_model_has_every_file_load_requires(tiny_model_dir: Path) -> None:
    from model.classifier import MODEL_FILES

    assert sorted(path.name for path in tiny_model_dir.iterdir()) == sorted(MODEL_FILES)


@pytest.mark.parametrize("size", [0, 7, 1000, "half"])
def test_truncated_weights_are_a_model_error(tiny_model_dir: Path, tmp_path: Path, size: int | str) -> None:
    model = broken_copy(tiny_model_dir, tmp_path)
    weights = model / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2 if size == "half" else size)
    with pytest.raises(ModelError, match=r"model\.safetensors.*(truncated|corrupt).*moodring train"):
        EmotionClassifier.load(model)


@pytest.mark.parametrize("missing", ["tokenizer.json", "tokenizer_config.json", "config.json", "model.safetensors"])
def test_missing_model_file_is_a_model_error(tiny_model_dir: Path, tmp_path: Path, missing: str) -> None:
    model = broken_copy(tiny_model_dir, tmp_path)
    (model / missing).unlink()
    with pytest.raises(ModelError, match=rf"{missing}.*moodring train"):
        EmotionClassifier.load(model)


def test_deleted_tokenizer_is_a_model_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = broken_copy(tiny_model_dir, tmp_path)
    for path in model.glob("tokenizer*"):
        path.unlink()
    with pytest.raises(ModelError, match=r"tokenizer.*moodring train"):
        EmotionClassifier.load(model)


def test_tokenizer_for_another_vocabulary_is_a_model_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = broken_copy(tiny_model_dir, tmp_path)
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    vocabulary = tokenizer["model"]["vocab"]
    tokenizer["model"]["vocab"] = {token: index for token, index in vocabulary.items() if index < 1000}
    (model / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ModelError, match=r"tokenizer has 1000 tokens.*30522.*moodring train"):
        EmotionClassifier.load(model)


def test_classify_with_truncated_weights_prints_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = broken_copy(tiny_model_dir, tmp_path)
    os.truncate(model / "model.safetensors", 1000)
    result = run_cli("classify", "--model", str(model), "hi")
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("moodring classify: ") and "model.safetensors" in line and "moodring train" in line
