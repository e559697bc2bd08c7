"""The metadata file written beside an exported model (`moodring.json`)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if len(self.thresholds) != len(self.labels):
            raise ValueError(f"{len(self.thresholds)} thresholds for {len(self.labels)} labels")
        for backend, thresholds in self.thresholds_by_backend.items():
            if len(thresholds) != len(self.labels):
                raise ValueError(f"{len(thresholds)} {backend} thresholds for {len(self.labels)} labels")

    @property
    def is_starter(self) -> bool:
        """A starter model (`moodring train --starter`): quick and rougher, served until the full one is trained."""
        return bool(self.training_args.get("starter"))

    def thresholds_for(self, backend: str) -> list[float]:
        """The per-label thresholds tuned on dev for `backend`'s scores."""
        return self.thresholds_by_backend.get(backend, self.thresholds)

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
