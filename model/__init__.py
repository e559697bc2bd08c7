"""The emotion classifier and its inference API. Imports neither `bot` nor `training`."""

from model.classifier import (
    EmotionClassifier,
    EmotionScore,
    ModelError,
    ModelNotFoundError,
    Prediction,
    default_model_dir,
)
from model.metadata import ModelMetadata
from model.network import SqueezeBertForEmotions

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
