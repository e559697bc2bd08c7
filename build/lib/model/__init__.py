"""The emotion classifier and its inference API. Imports neither `bot` nor `training`.

The names below are imported on first use (PEP 562), so that `import model.cli` (the `moodring` parser, its
`--help` and its argument errors) does not pay for torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOMES = {
    "EmotionClassifier": "model.classifier",
    "EmotionScore": "model.classifier",
    "ModelError": "model.storage",
    "ModelNotFoundError": "model.storage",
    "Prediction": "model.classifier",
    "default_model_dir": "model.storage",
    "ModelMetadata": "model.metadata",
    "SqueezeBertForEmotions": "model.network",
}

__all__ = [
    "EmotionClassifier",
    "EmotionScore",
    "ModelError",
    "ModelMetadata",
    "ModelNotFoundError",
    "Prediction",
    "SqueezeBertForEmotions",
    "default_model_dir",
]

if TYPE_CHECKING:
    from model.classifier import EmotionClassifier, EmotionScore, Prediction
    from model.metadata import ModelMetadata
    from model.network import SqueezeBertForEmotions
    from model.storage import ModelError, ModelNotFoundError, default_model_dir


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
