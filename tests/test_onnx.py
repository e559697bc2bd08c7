"""ONNX serving on the tiny SqueezeBERT (grouped convolutions): export, backends, fallback, thresholds, threads."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from model import EmotionClassifier, ModelError, ModelMetadata
from model.backends import INT8_FILE, ONNX_FILE
from model.linear_view import LinearView
from model.onnx_export import graph_operators
from model.threads import THREADS_ENV, available_cores, resolve_threads
from training.config import TrainArgs
from training.evaluate import evaluate
from training.train import train

TEXTS = [
    "Thank you so much, this made my day!",
    "I am so angry right now, this is unacceptable.",
    "lol that is hilarious 😂",
    "I'm scared of what happens next.",
    "Wow, I did not expect that at all!",
    "That's so sad, I'm sorry for your loss.",
    "ok",
    "Why would anyone do that? I don't get it.",
    "I love you all, you're the best community ever.",
    "Ugh, disgusting. Gross.",
    "a " * 200,
    "Je suis tellement heureux aujourd'hui !",
]
# int8 against fp32 scores on the tiny model: the largest difference measured on TEXTS was 0.0043 (0.0059 on its
# 256 dev rows); the bound leaves room for other CPUs' int8 kernels without hiding a broken graph.
INT8_TOLERANCE = 0.03


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "moodring", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def copy_of(tmp_path: Path):
    def make(directory: Path) -> Path:
        return Path(shutil.copytree(directory, tmp_path / directory.name))

    return make


@pytest.fixture
def torch_threads():
    """Put torch's thread count back after a test that changes it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_linear_view_is_the_same_function(tiny_model_dir: Path) -> None:
    from model.network import SqueezeBertForEmotions

    network = SqueezeBertForEmotions.from_pretrained(tiny_model_dir).eval()
    assert max(m.groups for m in network.modules() if isinstance(m, torch.nn.Conv1d)) > 1  # grouped convs covered
    input_ids = torch.randint(1000, 20000, (3, 17))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 9:], attention_mask[2, 2:] = 0, 0
    with torch.no_grad():
        expected = network(input_ids, attention_mask)
        assert (LinearView(network)(input_ids, attention_mask) - expected).abs().max() < 1e-5


def test_ungrouped_network_exports_as_plain_matmuls(tmp_path: Path) -> None:
    """The served model has groups = 1 everywhere (the MiniLM start): the nn.Linear path of the view and export."""
    import onnxruntime
    from transformers import SqueezeBertConfig

    from model.network import SqueezeBertForEmotions
    from model.onnx_export import export_onnx_files

    torch.manual_seed(0)
    config = SqueezeBertConfig(
        vocab_size=1000,
        hidden_size=32,
        embedding_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=28,
        **dict.fromkeys(["q_groups", "k_groups", "v_groups", "post_attention_groups"], 1),
        **dict.fromkeys(["intermediate_groups", "output_groups"], 1),
    )
    network = SqueezeBertForEmotions(config).eval()
    input_ids = torch.randint(5, 1000, (4, 13))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[3, 4:] = 0
    with torch.no_grad():
        expected = torch.sigmoid(network(input_ids, attention_mask)).numpy()
    records = export_onnx_files(network, tmp_path)
    assert "7-bit, per channel" in records[INT8_FILE]["quantization"]
    assert "Conv" not in graph_operators(tmp_path / ONNX_FILE)
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= graph_operators(tmp_path / INT8_FILE)
    assert_per_channel_7_bit_weights(tmp_path / INT8_FILE)
    feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
    for name, tolerance in ((ONNX_FILE, 1e-4), (INT8_FILE, INT8_TOLERANCE)):
        session = onnxruntime.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        assert np.abs(session.run(None, feed)[0] - expected).max() < tolerance


def assert_per_channel_7_bit_weights(path: Path) -> None:
    """Every quantized weight has its own scale per output column (one per-tensor scale let the outlier columns
    of a real MiniLM cost 0.007 test macro-F1), and its values fit 7 bits, so AVX2's u8 x s8 pair sums
    (VPMADDUBSW, int16) cannot saturate on CPUs without VNNI: 2 * 255 * 64 = 32640 <= 32767."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {item.name: numpy_helper.to_array(item) for item in graph.initializer}
    products = [node for node in graph.node if node.op_type == "MatMulInteger"]
    assert products
    for node in products:
        weight, zero_point = weights[node.input[1]], weights[node.input[3]]
        assert weight.dtype == np.int8 and zero_point.shape == (weight.shape[-1],), node.name
        assert np.abs(weight.astype(np.int32)).max() <= 64, node.name


def test_export_records_each_file_in_the_metadata(onnx_model_dir: Path, tiny_model_dir: Path) -> None:
    meta = ModelMetadata.load(onnx_model_dir)
    assert set(meta.onnx_files) == {ONNX_FILE, INT8_FILE}
    for name, record in meta.onnx_files.items():
        assert record["sha256"] == sha256(onnx_model_dir / name)
        assert record["bytes"] == (onnx_model_dir / name).stat().st_size
    assert meta.onnx_files[INT8_FILE]["backend"] == "onnx-int8"
    assert "per tensor" in meta.onnx_files[INT8_FILE]["quantization"]  # grouped weights: see quantization_for
    assert {"onnx", "onnxruntime"} <= set(meta.versions)
    int8 = meta.dev_metrics_by_backend["onnx-int8"]
    assert int8["rows"] == 256  # the dev rows training used (dev_limit), not the whole split
    assert 0 < int8["max_score_shift"] < 0.1 and 0 <= int8["macro_f1"] <= 1
    assert len(meta.thresholds_by_backend["onnx-int8"]) == 28
    before = ModelMetadata.load(tiny_model_dir)  # everything else is kept as it was
    assert (meta.thresholds, meta.dev_metrics, meta.training_args) == (
        before.thresholds,
        before.dev_metrics,
        before.training_args,
    )
    assert not any(p.name.startswith(".") for p in onnx_model_dir.iterdir())  # no temporary files left


def test_int8_graph_quantizes_matmuls_and_no_convolutions(onnx_model_dir: Path) -> None:
    fp32, int8 = graph_operators(onnx_model_dir / ONNX_FILE), graph_operators(onnx_model_dir / INT8_FILE)
    assert "Conv" not in fp32 and {"MatMul"} <= fp32
    assert not int8 & {"Conv", "ConvInteger", "QLinearConv"}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= int8


def test_onnx_fp32_scores_match_torch(onnx_model_dir: Path) -> None:
    reference = EmotionClassifier.load(onnx_model_dir, backend="torch").predict_scores(TEXTS, batch_size=5)
    onnx = EmotionClassifier.load(onnx_model_dir, backend="onnx")
    assert onnx.backend == "onnx"
    assert np.abs(onnx.predict_scores(TEXTS, batch_size=5) - reference).max() < 1e-4
    assert np.abs(onnx.predict_scores(TEXTS[:1])[0] - reference[0]).max() < 1e-4  # another batch and sequence size


def test_int8_scores_are_close_and_rank_the_same_top_label(onnx_model_dir: Path) -> None:
    reference = EmotionClassifier.load(onnx_model_dir, backend="torch").predict_scores(TEXTS)
    int8 = EmotionClassifier.load(onnx_model_dir, backend="onnx-int8").predict_scores(TEXTS)
    assert np.abs(int8 - reference).max() < INT8_TOLERANCE
    assert (int8.argmax(axis=1) == reference.argmax(axis=1)).all()


def test_each_backend_uses_its_own_dev_thresholds(onnx_model_dir: Path) -> None:
    meta = ModelMetadata.load(onnx_model_dir)
    for backend, expected in [
        ("torch", meta.thresholds),
        ("onnx", meta.thresholds),
        ("onnx-int8", meta.thresholds_by_backend["onnx-int8"]),
    ]:
        classifier = EmotionClassifier.load(onnx_model_dir, backend=backend)
        assert classifier.thresholds.tolist() == pytest.approx(expected)
        (prediction,) = classifier.predict(["Thank you so much!"])
        for item in prediction.top:
            assert item.above_threshold == (item.score >= expected[classifier.labels.index(item.label)])


def test_auto_serves_fp32_onnx_and_says_so(onnx_model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="model.classifier"):
        classifier = EmotionClassifier.load(onnx_model_dir)
    assert classifier.backend == "onnx"
    (line,) = [r.getMessage() for r in caplog.records if "backend auto" in r.getMessage()]
    assert "onnx" in line and ONNX_FILE in line


def auto_fallback(directory: Path, caplog: pytest.LogCaptureFixture) -> str:
    """Load with backend auto, check that torch serves, and return the one log line that says why."""
    with caplog.at_level(logging.INFO, logger="model.classifier"):
        classifier = EmotionClassifier.load(directory)
    assert classifier.backend == "torch"
    assert classifier.predict(["still works"])[0].top
    (line,) = [r.getMessage() for r in caplog.records if "backend auto" in r.getMessage()]
    assert line.startswith("backend auto: torch")
    return line


def test_auto_falls_back_to_torch_without_onnxruntime(
    onnx_model_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    assert "onnxruntime is not installed" in auto_fallback(onnx_model_dir, caplog)
    with pytest.raises(ModelError, match="onnxruntime is not installed"):
        EmotionClassifier.load(onnx_model_dir, backend="onnx-int8")


def test_auto_falls_back_to_torch_without_the_file(tiny_model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert f"no {ONNX_FILE}" in auto_fallback(tiny_model_dir, caplog)
    for backend in ("onnx", "onnx-int8"):
        with pytest.raises(ModelError, match="moodring export-onnx"):
            EmotionClassifier.load(tiny_model_dir, backend=backend)


def test_corrupt_file_falls_back_for_auto_and_is_a_model_error_when_asked_for(
    onnx_model_dir: Path, copy_of, caplog: pytest.LogCaptureFixture
) -> None:
    directory = copy_of(onnx_model_dir)
    for path in (directory / INT8_FILE, directory / ONNX_FILE):  # ONNX_FILE last: the one auto serves
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated, as by a full disk
    assert "corrupt" in auto_fallback(directory, caplog)
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    for backend in ("onnx", "onnx-int8"):
        with pytest.raises(ModelError, match=r"corrupt.*moodring export-onnx"):
            EmotionClassifier.load(directory, backend=backend)

    # Garbage whose checksum was recorded too: onnxruntime's own parse error is still a ModelError.
    meta = ModelMetadata.load(directory)
    for path in (directory / INT8_FILE, directory / ONNX_FILE):
        path.write_bytes(b"not an onnx graph" * 100)
        meta.onnx_files[path.name]["sha256"] = sha256(path)
    meta.save(directory)
    for backend in ("onnx", "onnx-int8"):
        with pytest.raises(ModelError, match="corrupt or unreadable"):
            EmotionClassifier.load(directory, backend=backend)
    caplog.clear()
    auto_fallback(directory, caplog)


def test_metadata_without_the_onnx_fields_still_loads(onnx_model_dir: Path, copy_of) -> None:
    directory = copy_of(onnx_model_dir)
    path = directory / "moodring.json"
    data = json.loads(path.read_text())
    for field in ("onnx_files", "thresholds_by_backend", "dev_metrics_by_backend"):
        del data[field]
    path.write_text(json.dumps(data))
    meta = ModelMetadata.load(directory)
    assert meta.onnx_files == {} and meta.thresholds_for("onnx-int8") == meta.thresholds
    # Files nobody recorded are not trusted: an explicit backend says so, auto serves torch.
    with pytest.raises(ModelError, match="not recorded"):
        EmotionClassifier.load(directory, backend="onnx-int8")
    assert EmotionClassifier.load(directory).backend == "torch"


def test_resolve_threads_order() -> None:
    assert resolve_threads(3, environ={THREADS_ENV: "5"}) == 3
    assert resolve_threads(None, environ={THREADS_ENV: "5", "OMP_NUM_THREADS": "4"}) == 5
    assert resolve_threads(None, environ={"OMP_NUM_THREADS": "4"}) == 4
    assert resolve_threads(None, environ={}) == available_cores() == len(os.sched_getaffinity(0))
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(ValueError, match=THREADS_ENV):
            resolve_threads(None, environ={THREADS_ENV: bad})
    with pytest.raises(ValueError):
        resolve_threads(0)


def test_torch_backend_runs_with_the_configured_threads(tiny_model_dir: Path, torch_threads) -> None:
    classifier = EmotionClassifier.load(tiny_model_dir, backend="torch", threads=2)
    assert classifier.threads == 2 and torch.get_num_threads() == 2
    seen = []
    classifier.scorer.network.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))

    def in_another_thread() -> None:
        torch.set_num_threads(1)  # a worker thread whose OpenMP count is not the configured one
        classifier.predict(["hello there"])

    with ThreadPoolExecutor(1) as worker:
        worker.submit(in_another_thread).result()
    assert seen == [2]


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_onnx_sessions_get_the_configured_threads_and_do_not_spin(onnx_model_dir: Path, backend: str) -> None:
    classifier = EmotionClassifier.load(onnx_model_dir, backend=backend, threads=2)
    options = classifier.scorer.session.get_session_options()
    assert classifier.threads == 2
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_train_exports_onnx_with_int8_thresholds(
    tmp_path: Path, tiny_backbone_dir: Path, goemotions_dir: Path, torch_threads
) -> None:
    out = train(replace(tiny_args(tmp_path, tiny_backbone_dir, goemotions_dir), threads=2))
    assert torch.get_num_threads() == 2  # the count asked for, not OMP_NUM_THREADS=1 from the environment
    meta = ModelMetadata.load(out)
    assert meta.training_args["threads"] == 2
    assert {name: record["sha256"] for name, record in meta.onnx_files.items()} == {
        name: sha256(out / name) for name in (ONNX_FILE, INT8_FILE)
    }
    assert len(meta.thresholds_by_backend["onnx-int8"]) == 28
    assert meta.dev_metrics_by_backend["onnx-int8"]["rows"] == 48
    assert EmotionClassifier.load(out).backend == "onnx"
    assert sorted(p.name for p in out.parent.iterdir()) == ["model", "run"]  # no staging directory left


def test_failed_onnx_export_still_exports_the_model(
    tmp_path: Path,
    tiny_backbone_dir: Path,
    goemotions_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import model.onnx_export

    def broken(*_args, **_kwargs):
        raise RuntimeError("exporter bug")

    monkeypatch.setattr(model.onnx_export, "export_onnx_files", broken)
    with caplog.at_level(logging.ERROR):
        out = train(tiny_args(tmp_path, tiny_backbone_dir, goemotions_dir))
    assert "moodring export-onnx" in caplog.text and "exporter bug" in caplog.text
    assert not (out / ONNX_FILE).exists() and not (out / INT8_FILE).exists()
    assert ModelMetadata.load(out).onnx_files == {}
    assert EmotionClassifier.load(out).backend == "torch"


def tiny_args(tmp_path: Path, backbone: Path, data: Path) -> TrainArgs:
    return TrainArgs(
        data_dir=str(data),
        backbone=str(backbone),
        out=str(tmp_path / "model"),
        work_dir=str(tmp_path / "run"),
        epochs=1,
        batch_size=16,
        learning_rate=1e-3,
        max_length=16,
        train_limit=64,
        dev_limit=48,
    )


def test_evaluate_reports_the_backend_and_its_thresholds(onnx_model_dir: Path, goemotions_dir: Path) -> None:
    report = evaluate(onnx_model_dir, split="dev", data_dir=goemotions_dir, backend="onnx-int8", threads=1)
    assert report["backend"] == "onnx-int8"
    int8_thresholds = ModelMetadata.load(onnx_model_dir).thresholds_by_backend["onnx-int8"]
    assert list(report["thresholds"]["per_label"].values()) == pytest.approx(int8_thresholds)


def test_classify_cli_backend_and_threads(
    onnx_model_dir: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moodring.cli import main

    model = str(onnx_model_dir)
    assert main(["classify", "--model", model, "--backend", "onnx-int8", "--threads", "1", "--json", "hi"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["text"] == "hi"

    assert main(["classify", "--model", str(tiny_model_dir), "--backend", "onnx-int8", "hi"]) == 2
    assert "moodring export-onnx" in capsys.readouterr().err
    monkeypatch.setenv(THREADS_ENV, "lots")
    assert main(["classify", "--model", model, "hi"]) == 2
    assert f"{THREADS_ENV} must be a whole number" in capsys.readouterr().err


def test_classify_with_an_onnx_backend_imports_neither_torch_nor_transformers(onnx_model_dir: Path) -> None:
    """Issue 26: they were 3.4 s of `moodring classify`'s start-up; the ONNX backends need neither."""
    program = (
        "import sys, json\n"
        "from moodring.cli import main\n"
        "for backend in sys.argv[2:]:\n"
        "    assert main(['classify', '--model', sys.argv[1], '--backend', backend, '--json', 'hi']) == 0\n"
        "print(json.dumps(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules)))\n"
    )
    backends = ["onnx", "onnx-int8", "auto"]
    run = subprocess.run(
        [sys.executable, "-c", program, str(onnx_model_dir), *backends], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == []


def test_export_onnx_without_dev_data_is_a_clear_error_and_writes_nothing(
    tiny_model_dir: Path, copy_of, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from moodring.cli import main

    directory = copy_of(tiny_model_dir)
    before = sorted(p.name for p in directory.iterdir())
    assert main(["export-onnx", "--model", str(directory), "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "moodring export-onnx:" in capsys.readouterr().err
    assert sorted(p.name for p in directory.iterdir()) == before
    assert main(["export-onnx", "--model", str(tmp_path / "no-model")]) == 2
    assert "moodring train" in capsys.readouterr().err
