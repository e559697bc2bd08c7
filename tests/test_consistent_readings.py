"""Issue 23, consistent readings: a text's scores do not depend on its batch with the backend the bot serves."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from model import EmotionClassifier, ModelMetadata

#: What "the same reading" means: scores within this, and the same labels above their thresholds.
BATCH_TOLERANCE = 0.002
#: The tiny model's scores all lie within 0.42..0.59 after its one short epoch, where dynamic int8 moves a text's
#: scores by at most 0.0006 with its batch. Its head scaled by 10 spreads them over 0.04..0.97, as a trained
#: model's are; there dynamic int8 moved one text's scores by 0.005 with its batch, and fp32 by 2e-7.
HEAD_SCALE = 10.0
TEXTS = [
    "I can't believe you remembered my birthday!",
    "lol that is hilarious 😂",
    "ok",
    "Why would anyone do that? I don't get it.",
    "a " * 200,
]


@pytest.fixture(scope="module")
def confident_model_dir(tmp_path_factory: pytest.TempPathFactory, onnx_model_dir: Path) -> Path:
    """A copy of the tiny ONNX model with its head's weight and bias scaled by `HEAD_SCALE`, ONNX files re-exported."""
    from model.network import SqueezeBertForEmotions
    from training.export import add_onnx

    directory = tmp_path_factory.mktemp("confident") / "model"
    shutil.copytree(onnx_model_dir, directory)
    network = SqueezeBertForEmotions.from_pretrained(directory, local_files_only=True).eval()
    with torch.no_grad():
        network.classifier.weight.mul_(HEAD_SCALE)
        network.classifier.bias.mul_(HEAD_SCALE)
    network.save_pretrained(directory)
    add_onnx(directory, network, ModelMetadata.load(directory), dev=None)
    return directory


@pytest.fixture(scope="module")
def dev_texts(goemotions_dir: Path) -> list[str]:
    with (goemotions_dir / "dev.tsv").open(newline="", encoding="utf-8") as handle:
        return [row[0] for row in csv.reader(handle, delimiter="\t")]


def largest_batch_change(classifier: EmotionClassifier, texts: list[str], others: list[str]) -> tuple[float, int]:
    """Each of `texts` alone, then inside 4 batches of 31 of `others` at their start, middle and end: the largest
    score change against the text alone, and how many of those readings had other labels above threshold."""
    largest, relabelled = 0.0, 0
    for text in texts:
        (alone,) = classifier.predict([text], top_k=None)
        alone_scores = {item.label: item.score for item in alone.top}
        for start in range(0, 4 * 31, 31):
            group = others[start : start + 31]
            for position in (0, len(group) // 2, len(group)):
                batch = [*group[:position], text, *group[position:]]
                reading = classifier.predict(batch, top_k=None)[position]
                largest = max(largest, max(abs(item.score - alone_scores[item.label]) for item in reading.top))
                relabelled += reading.labels != alone.labels
    return largest, relabelled


@pytest.mark.parametrize("threads", [1, 2])  # 2: the bot's default on two cores splits each product between threads
def test_the_served_backend_gives_a_text_one_reading_in_any_batch(
    confident_model_dir: Path, dev_texts: list[str], caplog: pytest.LogCaptureFixture, threads: int
) -> None:
    with caplog.at_level(logging.INFO, logger="model.classifier"):
        served = EmotionClassifier.load(confident_model_dir, threads=threads)  # backend auto, as the bot loads it
    largest, relabelled = largest_batch_change(served, TEXTS, dev_texts)
    assert largest < BATCH_TOLERANCE and relabelled == 0
    assert served.backend == "onnx"
    assert any("backend auto: onnx from" in r.getMessage() for r in caplog.records)


def test_the_torch_fallback_gives_a_text_one_reading_in_any_batch(tiny_model_dir: Path, dev_texts: list[str]) -> None:
    served = EmotionClassifier.load(tiny_model_dir, threads=1)  # no ONNX files: auto serves torch
    assert served.backend == "torch"
    largest, relabelled = largest_batch_change(served, TEXTS, dev_texts)
    assert largest < BATCH_TOLERANCE and relabelled == 0


def test_dynamic_int8_is_an_opt_in_because_its_readings_depend_on_the_batch(
    confident_model_dir: Path, dev_texts: list[str]
) -> None:
    """Not a property anyone wants: why `onnx-int8` is never what auto serves (docs/operations.md says so)."""
    int8 = EmotionClassifier.load(confident_model_dir, backend="onnx-int8", threads=1)
    largest, _ = largest_batch_change(int8, TEXTS, dev_texts)
    assert largest > BATCH_TOLERANCE


# Issue 23, faithful on any CPU: the int8 opt-in checks, on another int8 kernel path, the dev sample its thresholds
# were tuned with.

#: /proc/cpuinfo of a CPU with AVX2 and no VNNI (the AMD machine of issue 23's last round), abridged.
AVX2_ONLY_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2

processor\t: 1
flags\t\t: fpu sse sse2 avx avx2 avx512f
"""
ARM_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd aes crc32 asimddp sve i8mm\nCPU implementer\t: 0x41\n"


def test_the_int8_kernel_path_reads_the_features_int8_kernels_choose_by() -> None:
    from model.cpu import cpu_flags, cpu_model_name, int8_kernel_path

    assert {"avx2", "fma"} <= cpu_flags(AVX2_ONLY_CPUINFO) and "avx512f" not in cpu_flags(AVX2_ONLY_CPUINFO)
    assert int8_kernel_path(AVX2_ONLY_CPUINFO)["features"] == ["avx2"]
    assert int8_kernel_path(ARM_CPUINFO)["features"] == ["asimddp", "i8mm", "sve"]
    assert int8_kernel_path("")["features"] == []  # no /proc/cpuinfo: nothing known, so nothing matches a record
    assert cpu_model_name(AVX2_ONLY_CPUINFO) == "AMD EPYC 7B12"


def test_export_records_the_int8_kernel_path_and_a_dev_sample(onnx_model_dir: Path, dev_texts: list[str]) -> None:
    from model.cpu import int8_kernel_path
    from training.export import INT8_SAMPLE_ROWS

    record = ModelMetadata.load(onnx_model_dir).int8_kernel
    assert record["cpu"] == int8_kernel_path()
    texts, scores = record["sample"]["texts"], np.asarray(record["sample"]["scores"])
    assert len(texts) == INT8_SAMPLE_ROWS and scores.shape == (INT8_SAMPLE_ROWS, 28)
    assert set(texts) <= set(dev_texts[:256])  # GoEmotions dev rows (the 256 training used), never a member's text
    assert np.array_equal(scores, np.round(scores, 4))
    int8 = EmotionClassifier.load(onnx_model_dir, backend="onnx-int8", threads=1)
    assert np.abs(int8.predict_scores(texts, batch_size=1) - scores).max() <= 5e-5  # each alone, as at export


@pytest.fixture
def serving_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Make this machine read as the CPU whose /proc/cpuinfo text is given."""
    import model.cpu

    def describe(cpuinfo: str) -> None:
        path = tmp_path / "cpuinfo"
        path.write_text(cpuinfo)
        monkeypatch.setattr(model.cpu, "CPUINFO", path)

    return describe


@pytest.fixture
def int8_copy(onnx_model_dir: Path, tmp_path: Path):
    """A copy of the ONNX model whose stored int8 sample scores may be moved by `shift`."""

    def make(shift: float = 0.0) -> Path:
        directory = Path(shutil.copytree(onnx_model_dir, tmp_path / f"model-{shift}"))
        meta = ModelMetadata.load(directory)
        meta.int8_kernel["sample"]["scores"][7][3] += shift
        meta.save(directory)
        return directory

    return make


def load_int8(directory: Path, caplog: pytest.LogCaptureFixture) -> tuple[EmotionClassifier, list[logging.LogRecord]]:
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="model.classifier"):
        classifier = EmotionClassifier.load(directory, backend="onnx-int8", threads=1)
    return classifier, [r for r in caplog.records if r.name == "model.classifier"]


def test_another_cpu_whose_int8_scores_still_match_keeps_int8_and_its_thresholds(
    int8_copy, serving_cpu, caplog: pytest.LogCaptureFixture
) -> None:
    directory = int8_copy(shift=0.004)  # within the tolerance: rounding, or a kernel that sums in another order
    serving_cpu(AVX2_ONLY_CPUINFO)
    classifier, lines = load_int8(directory, caplog)
    meta = ModelMetadata.load(directory)
    assert classifier.backend == "onnx-int8"
    assert classifier.thresholds.tolist() == pytest.approx(meta.thresholds_by_backend["onnx-int8"])
    (line,) = lines
    assert line.levelno == logging.INFO and "x86_64 avx2, onnxruntime" in line.getMessage()
    assert "agree within 0.004" in line.getMessage()


def test_another_cpu_whose_int8_scores_moved_falls_back_to_fp32_onnx_in_one_line(
    int8_copy, serving_cpu, caplog: pytest.LogCaptureFixture
) -> None:
    from model.classifier import INT8_SAMPLE_TOLERANCE

    directory = int8_copy(shift=0.05)  # as if this CPU's int8 kernels moved one stored score by 0.05
    serving_cpu(AVX2_ONLY_CPUINFO)
    classifier, lines = load_int8(directory, caplog)
    assert classifier.backend == "onnx"
    assert classifier.thresholds.tolist() == pytest.approx(ModelMetadata.load(directory).thresholds)
    assert classifier.predict(["still works"])[0].top
    (line,) = lines
    message = line.getMessage()
    assert line.levelno == logging.WARNING and message.startswith("backend onnx-int8: serving fp32 ONNX instead")
    assert "x86_64 avx2, onnxruntime" in message and "by up to 0.05" in message
    assert f"more than {INT8_SAMPLE_TOLERANCE:.2f}" in message


def test_the_cpu_the_thresholds_were_tuned_on_serves_int8_without_re_scoring(
    int8_copy, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = int8_copy(shift=0.05)  # a sample that would fail the check, were it scored
    scored = []
    original = EmotionClassifier.predict_scores
    monkeypatch.setattr(
        EmotionClassifier, "predict_scores", lambda self, *a, **k: scored.append(a) or original(self, *a, **k)
    )
    classifier, lines = load_int8(directory, caplog)
    assert classifier.backend == "onnx-int8" and scored == [] and lines == []


def test_a_model_without_the_record_serves_int8_unchecked_in_one_debug_line(
    onnx_model_dir: Path, tmp_path: Path, serving_cpu, caplog: pytest.LogCaptureFixture
) -> None:
    directory = Path(shutil.copytree(onnx_model_dir, tmp_path / "old"))
    path = directory / "moodring.json"
    data = json.loads(path.read_text())
    del data["int8_kernel"]  # exported before issue 23
    path.write_text(json.dumps(data))
    serving_cpu(AVX2_ONLY_CPUINFO)
    classifier, lines = load_int8(directory, caplog)
    assert classifier.backend == "onnx-int8"
    (line,) = lines
    assert line.levelno == logging.DEBUG and "not checked" in line.getMessage()


# Issue 26: the classifier tokenizes with the `tokenizers` library (no transformers import); the ids must be the ones
# transformers' tokenizer gives, or every reading would change with the start-up fix.

AWKWARD_TEXTS = [
    "😂😂😂 bro",
    "Je suis tellement heureux aujourd'hui !",
    "這太棒了",
    "a" * 10_000,
    "ok " * 5000,
    "[CLS] literal [SEP] special [PAD] tokens [MASK] [UNK]",
    "\x1b[31m red \u202e reversed",
    "Ünïcödé ÀÉÎ ß",
    "  leading and trailing  ",
    "tab\there\nnewline",
    "\u200d\ufeff",
    "[NAME] is here",
    "SHOUTING WORDS",
]


def test_the_serving_tokenizer_gives_transformers_ids(tiny_model_dir: Path, dev_texts: list[str]) -> None:
    from transformers import AutoTokenizer

    from model.tokenizer import FastTokenizer

    max_length = ModelMetadata.load(tiny_model_dir).max_length
    served = FastTokenizer.load(tiny_model_dir, max_length)
    reference = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    assert len(served) == len(reference)
    texts = AWKWARD_TEXTS + dev_texts[:1000]
    for start in range(0, len(texts), 64):
        batch = texts[start : start + 64]
        expected = reference(batch, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        input_ids, attention_mask = served.encode(batch)
        assert np.array_equal(input_ids, expected["input_ids"]), start
        assert np.array_equal(attention_mask, expected["attention_mask"]), start
