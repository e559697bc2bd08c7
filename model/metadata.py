"""The metadata file written beside an exported model (`moodring.json`)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model.text_preparation import TEXT_PREPARATIONS

METADATA_FILE = "moodring.json"
FORMAT_VERSION = 1


@dataclass
class ModelMetadata:
    """Everything needed to use and to reproduce an exported model, besides its weights."""

    labels: list[str]
    thresholds: list[float]
    global_threshold: float
    ekman_mapping: dict[str, list[str]]
    sentiment_mapping: dict[str, list[str]]
    backbone: str
    max_length: int
    training_args: dict[str, Any] = field(default_factory=dict)
    data_checksums: dict[str, str] = field(default_factory=dict)
    dev_metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    created_at: str | None = None
    # Serving files beside the weights, by file name: {"sha256", "bytes", "backend", ...} (see model/onnx_export.py).
    onnx_files: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per-label thresholds tuned on dev with a backend whose scores differ from torch's (e.g. "onnx-int8");
    # a backend not listed here uses `thresholds`.
    thresholds_by_backend: dict[str, list[float]] = field(default_factory=dict)
    # That backend's dev figures: macro-F1 with its own and with the torch thresholds, and its largest score shift.
    dev_metrics_by_backend: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Calibrated probabilities (model/calibration.py `Calibration.to_dict()`), by backend: "torch", and each backend
    # that has its own thresholds; any other backend uses "torch"'s. Empty: uncalibrated, raw scores are shown.
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The `model.text_preparation.prepare` version the model was trained with, and so reads with; 1 (the text as it
    # is) for the models exported before it was recorded.
    text_preparation: int = 1
    # What the int8 thresholds were tuned on, checked at load where the CPU differs (model/cpu.py): {"cpu": the int8
    # kernel path at export, "sample": {"texts": GoEmotions dev texts, "scores": their int8 scores, each text scored
    # alone, to 4 decimals}}. Empty for a model exported before it, or without dev data: served unchecked.
    int8_kernel: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if len(self.thresholds) != len(self.labels):
            raise ValueError(f"{len(self.thresholds)} thresholds for {len(self.labels)} labels")
        for backend, thresholds in self.thresholds_by_backend.items():
            if len(thresholds) != len(self.labels):
                raise ValueError(f"{len(thresholds)} {backend} thresholds for {len(self.labels)} labels")
        from model.calibration import Calibration  # numpy: not on model.storage's cheap import of METADATA_FILE

        for record in self.calibration.values():
            Calibration.from_dict(record, len(self.labels))  # raises ValueError for a bad one
        if self.text_preparation not in TEXT_PREPARATIONS:
            raise ValueError(
                f"text preparation {self.text_preparation!r} is unknown to this moodring (it knows "
                f"{', '.join(map(str, TEXT_PREPARATIONS))}): the model was made by a newer one"
            )

    @property
    def is_starter(self) -> bool:
        """A starter model (`moodring train --starter`): quick and rougher, served until the full one is trained."""
        return bool(self.training_args.get("starter"))

    def thresholds_for(self, backend: str) -> list[float]:
        """The per-label thresholds tuned on dev for `backend`'s scores."""
        return self.thresholds_by_backend.get(backend, self.thresholds)

    def calibration_for(self, backend: str) -> dict[str, Any] | None:
        """The calibration fitted on dev for `backend`'s scores (else torch's); None for an uncalibrated model."""
        return self.calibration.get(backend) or self.calibration.get("torch")

    def save(self, directory: str | Path) -> Path:
        """Write `moodring.json` under a temporary name, then rename it: a reader sees the old or the new file."""
        path = Path(directory) / METADATA_FILE
        partial = path.with_name(f".{METADATA_FILE}.tmp")
        partial.write_text(json.dumps(asdict(self), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(partial, path)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> ModelMetadata:
        path = Path(directory) / METADATA_FILE
        data = json.loads(path.read_text(encoding="utf-8"))
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"{path}: metadata format {version!r}, this moodring reads {FORMAT_VERSION}")
        return cls(**data)

    def group_of(self, mapping: dict[str, list[str]]) -> dict[str, str]:
        """Invert a group -> labels mapping; labels in no group (neutral) map to themselves."""
        inverse = {label: group for group, members in mapping.items() for label in members}
        return {label: inverse.get(label, label) for label in self.labels}
