"""Write a self-contained model directory: weights, config, tokenizer, `moodring.json` and the ONNX files."""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.backends import INT8_BACKEND
from model.calibration import choose_calibration
from model.metadata import ModelMetadata
from model.network import SqueezeBertForEmotions
from model.storage import default_model_dir, replace_directory, staging_directory

if TYPE_CHECKING:
    from model.classifier import EmotionClassifier
    from training.backbones import Backbone
    from training.config import TrainArgs
    from training.data import GoEmotions

log = logging.getLogger(__name__)

#: Dev texts whose int8 scores `moodring.json` keeps, for the check on another CPU (`int8_kernel_record`).
INT8_SAMPLE_ROWS = 32


@dataclass(frozen=True)
class DevSet:
    """Dev texts and their labels as a boolean matrix `[rows, labels]`, for tuning a backend's thresholds."""

    texts: list[str]
    truth: np.ndarray


def library_versions() -> dict[str, str]:
    import datasets
    import numpy
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tez": importlib.metadata.version("tez"),
        "datasets": datasets.__version__,
        "numpy": numpy.__version__,
    }


def git_commit() -> str | None:
    """The commit this code runs from, with `-dirty` if the tree has changes; None outside git."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


#: TrainArgs fields that say where this machine kept things: not recorded, so `moodring.json` reads the same anywhere
#: (data is identified by its checksums, the backbone by name, teachers by their targets' record).
MACHINE_PATHS = ("data_dir", "out", "work_dir", "extra_data", "teacher")


def trained_metadata(
    args: TrainArgs,
    data: GoEmotions,
    backbone: Backbone,
    *,
    thresholds: np.ndarray,
    global_threshold: float,
    dev_metrics: dict,
    truth: np.ndarray,
    scores: np.ndarray,
    processes: int,
    commit: str | None,
    teacher_targets: dict | None = None,
) -> ModelMetadata:
    """The `moodring.json` of a model `args` trained on `data`, from its dev `truth` and `scores`: the one place
    `train` and the starter build it, so that a starter carries every field a full model does."""
    return ModelMetadata(
        labels=data.labels,
        thresholds=[float(t) for t in thresholds],
        global_threshold=global_threshold,
        ekman_mapping=data.ekman_mapping,
        sentiment_mapping=data.sentiment_mapping,
        backbone=backbone.describe(),
        max_length=args.max_length,
        text_preparation=args.text_preparation,
        training_args={k: v for k, v in asdict(args).items() if k not in MACHINE_PATHS}
        | {"backbone": backbone.portable_name, "processes": processes}
        | ({"teacher_targets": teacher_targets} if teacher_targets else {}),
        data_checksums=data.checksums,
        dev_metrics=dev_metrics,
        versions=library_versions(),
        git_commit=commit,
        created_at=now_iso(),
        # What members are shown as a percentage: fitted on the same dev scores as the thresholds.
        calibration={"torch": choose_calibration(truth, scores, seed=args.seed).to_dict()},
    )


def export_model(
    network: SqueezeBertForEmotions,
    tokenizer,
    metadata: ModelMetadata,
    out: Path,
    onnx: bool = True,
    dev: DevSet | None = None,
) -> Path:
    """Write the model to `out`, replacing what was there only once the new copy is complete.

    With `onnx`, the copy also gets `model.onnx` and `model.int8.onnx` (see `add_onnx`). If that step
    fails, the model is exported without them (served by torch) and the log says how to add them later:
    hours of training are not thrown away for a serving file.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_directory(out)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        network.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        metadata.save(staging)
        if onnx:
            try:
                add_onnx(staging, network, metadata, dev)
            except Exception:
                log.exception(
                    "ONNX export failed, exporting without it (add it later: `moodring export-onnx --model %s`)",
                    out,
                )
                drop_onnx(staging, metadata)
        replace_directory(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def drop_onnx(directory: Path, metadata: ModelMetadata) -> None:
    """Remove the ONNX files and everything recorded about them."""
    from model.backends import FILE_OF_BACKEND

    for name in FILE_OF_BACKEND.values():
        (Path(directory) / name).unlink(missing_ok=True)
    metadata.onnx_files = {}
    metadata.thresholds_by_backend.pop(INT8_BACKEND, None)
    metadata.dev_metrics_by_backend.pop(INT8_BACKEND, None)
    metadata.calibration.pop(INT8_BACKEND, None)
    metadata.int8_kernel = {}
    metadata.save(directory)


def add_onnx(
    directory: Path, network: SqueezeBertForEmotions, metadata: ModelMetadata, dev: DevSet | None
) -> ModelMetadata:
    """Write `model.onnx` and `model.int8.onnx` into an exported model directory and record their checksums.

    int8 scores differ from fp32 ones by up to a few hundredths, which moves the best per-label thresholds;
    with `dev`, the int8 backend gets its own thresholds and calibration, fitted on `dev` through the served int8
    path, and its dev figures next to torch's, and `int8_kernel` records what they were tuned on
    (`int8_kernel_record`). Without `dev`, any int8 thresholds, calibration and record from an earlier export are
    dropped (the int8 backend then uses torch's, unchecked). `moodring.json` is rewritten after each step.
    """
    import onnx
    import onnxruntime
    import torch

    from model.classifier import EmotionClassifier
    from model.onnx_export import export_onnx_files
    from training.metrics import classification_report, tune_thresholds

    log.info("exporting ONNX (fp32 and dynamic int8) to %s", directory)
    metadata.onnx_files = export_onnx_files(network, directory)
    metadata.versions = {**metadata.versions, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    metadata.thresholds_by_backend.pop(INT8_BACKEND, None)
    metadata.dev_metrics_by_backend.pop(INT8_BACKEND, None)
    metadata.calibration.pop(INT8_BACKEND, None)
    metadata.int8_kernel = {}
    metadata.save(directory)
    if dev is None:
        log.warning("no dev split: the int8 backend uses the torch thresholds and calibration")
        return metadata

    threads = torch.get_num_threads()  # what this (training) process already uses
    classifiers = {
        backend: EmotionClassifier.load(directory, backend=backend, threads=threads)
        for backend in ("torch", INT8_BACKEND)
    }
    scores = {backend: classifier.predict_scores(dev.texts, 64) for backend, classifier in classifiers.items()}
    thresholds = tune_thresholds(dev.truth, scores[INT8_BACKEND])
    shift = np.abs(scores[INT8_BACKEND] - scores["torch"])
    labels = metadata.labels
    torch_thresholds = np.asarray(metadata.thresholds)
    metadata.thresholds_by_backend[INT8_BACKEND] = [float(t) for t in thresholds]
    metadata.calibration[INT8_BACKEND] = choose_calibration(
        dev.truth, scores[INT8_BACKEND], seed=calibration_seed(metadata)
    ).to_dict()
    metadata.dev_metrics_by_backend[INT8_BACKEND] = {
        "rows": len(dev.texts),
        "macro_f1": classification_report(dev.truth, scores[INT8_BACKEND] >= thresholds, labels)["macro_f1"],
        "macro_f1_with_torch_thresholds": classification_report(
            dev.truth, scores[INT8_BACKEND] >= torch_thresholds, labels
        )["macro_f1"],
        "torch_macro_f1": classification_report(dev.truth, scores["torch"] >= torch_thresholds, labels)["macro_f1"],
        "max_score_shift": float(shift.max()),
        "mean_score_shift": float(shift.mean()),
        "thresholds_changed": int((np.abs(thresholds - torch_thresholds) > 1e-9).sum()),
    }
    metadata.int8_kernel = int8_kernel_record(classifiers[INT8_BACKEND], dev.texts, shift)
    metadata.save(directory)
    figures = metadata.dev_metrics_by_backend[INT8_BACKEND]
    log.info(
        "int8 on dev: macro-F1 %.4f with its own thresholds (torch fp32: %.4f), largest score shift %.4f",
        figures["macro_f1"],
        figures["torch_macro_f1"],
        figures["max_score_shift"],
    )
    return metadata


def int8_kernel_record(int8: EmotionClassifier, texts: list[str], shift: np.ndarray) -> dict:
    """What `EmotionClassifier.load` checks the int8 backend against on another CPU: this machine's int8 kernel
    path, and the `INT8_SAMPLE_ROWS` of `texts` whose int8 scores moved most from torch's (`shift`, `[rows, labels]`;
    the rows most sensitive to the kernels), with their int8 scores, each text scored alone (batch-independent)."""
    from model.cpu import int8_kernel_path

    rows = sorted(np.argsort(-shift.max(axis=1), kind="stable")[:INT8_SAMPLE_ROWS].tolist())
    sample = [texts[i] for i in rows]
    scores = int8.predict_scores(sample, batch_size=1).astype(np.float64)
    return {"cpu": int8_kernel_path(), "sample": {"texts": sample, "scores": np.round(scores, 4).tolist()}}


def export_onnx(model_dir: str | Path | None, data_dir: str | Path | None = None) -> ModelMetadata:
    """`moodring export-onnx`: add the ONNX files to an exported model, with int8 thresholds tuned on the dev
    rows its training used (`dev_limit` included). Reads the data before writing anything."""
    from model.classifier import EmotionClassifier

    classifier = EmotionClassifier.load(model_dir, backend="torch")
    metadata = classifier.metadata
    dev = training_dev_set(metadata, data_dir)
    directory = Path(model_dir) if model_dir else default_model_dir()
    return add_onnx(directory, classifier.scorer.network, metadata, dev)


def training_dev_set(metadata: ModelMetadata, data_dir: str | Path | None) -> DevSet:
    """The dev rows the model's training tuned its thresholds on (`dev_limit` included)."""
    from model.storage import ModelError
    from training.data import load_goemotions, resolve_data_dir

    data = load_goemotions(resolve_data_dir(data_dir), splits=("dev",))
    if data.labels != metadata.labels:
        raise ModelError(f"the data's labels {data.labels} differ from the model's {metadata.labels}")
    rows = data.splits["dev"]
    limit = metadata.training_args.get("dev_limit")
    if limit:
        rows = rows.select(range(min(limit, len(rows))))
    truth = np.zeros((len(rows), len(metadata.labels)), dtype=bool)
    for i, ids in enumerate(rows["labels"]):
        truth[i, ids] = True
    return DevSet(list(rows["text"]), truth)


def calibration_seed(metadata: ModelMetadata) -> int:
    """The training seed, which the calibration's cross-fit folds are drawn with."""
    from training.config import TrainArgs

    return int(metadata.training_args.get("seed", TrainArgs.seed))


def calibrate(model_dir: str | Path | None, data_dir: str | Path | None = None) -> ModelMetadata:
    """`moodring calibrate`: (re)fit an exported model's calibration on the dev rows its training used, without
    retraining: for torch, and for each backend with its own thresholds (int8 ONNX), through that backend's
    served path. Only `moodring.json` changes; thresholds and weights stay. Reads the data before writing."""
    import torch

    from model.classifier import EmotionClassifier

    directory = Path(model_dir) if model_dir else default_model_dir()
    classifier = EmotionClassifier.load(directory, backend="torch")
    metadata = classifier.metadata
    dev = training_dev_set(metadata, data_dir)
    threads = torch.get_num_threads()
    seed = calibration_seed(metadata)
    calibration = {"torch": choose_calibration(dev.truth, classifier.predict_scores(dev.texts, 64), seed).to_dict()}
    for backend in metadata.thresholds_by_backend:
        scores = EmotionClassifier.load(directory, backend=backend, threads=threads).predict_scores(dev.texts, 64)
        calibration[backend] = choose_calibration(dev.truth, scores, seed).to_dict()
    metadata.calibration = calibration
    metadata.save(directory)
    return metadata
