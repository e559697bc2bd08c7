"""`EmotionClassifier`: the one inference API used by the bot, the CLI and the benchmarks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from model.metadata import METADATA_FILE, ModelMetadata
from model.network import SqueezeBertForEmotions

DEFAULT_MODEL_DIR = Path("models/moodring-goemotions")


class ModelError(Exception):
    """An exported model is missing or unusable; the message says what to do."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """No exported model where one was expected; the message says how to make one."""


def default_model_dir() -> Path:
    """`MOODRING_MODEL_DIR` if set, else `models/moodring-goemotions`."""
    return Path(os.environ.get("MOODRING_MODEL_DIR") or DEFAULT_MODEL_DIR)


@dataclass(frozen=True)
class EmotionScore:
    label: str
    score: float
    above_threshold: bool


@dataclass(frozen=True)
class Prediction:
    """The classifier's reading of one text.

    `top` is ranked by score; `labels` are those above their per-label thresholds, ranked.
    `ekman` and `sentiment` are the groups of `labels`, or of the top label when none passes.
    An empty or whitespace-only text gets empty lists.
    """

    text: str
    top: list[EmotionScore]
    labels: list[str]
    ekman: list[str]
    sentiment: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


class EmotionClassifier:
    """A trained GoEmotions classifier loaded from an exported model directory."""

    def __init__(
        self,
        network: SqueezeBertForEmotions,
        tokenizer,
        metadata: ModelMetadata,
        device: str | torch.device = "cpu",
    ) -> None:
        self.network = network.eval().to(device)
        self.tokenizer = tokenizer
        self.metadata = metadata
        self.device = torch.device(device)
        self.labels = list(metadata.labels)
        self.thresholds = np.asarray(metadata.thresholds, dtype=np.float32)
        self._ekman = metadata.group_of(metadata.ekman_mapping)
        self._sentiment = metadata.group_of(metadata.sentiment_mapping)

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu") -> EmotionClassifier:
        """Load an exported model; never touches the network."""
        directory = Path(path) if path is not None else default_model_dir()
        if not (directory / METADATA_FILE).is_file():
            raise ModelNotFoundError(
                f"No trained moodring model in {directory}/ (no {METADATA_FILE}). "
                "Train one with `moodring train --backbone minilm`, or point --model / MOODRING_MODEL_DIR "
                "at an exported model directory."
            )
        _check_model_files(directory)
        try:
            metadata = ModelMetadata.load(directory)
            network = SqueezeBertForEmotions.from_pretrained(directory, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise ModelError(
                f"The model in {directory}/ is incomplete or unreadable ({error}). Re-export it with `moodring train`."
            ) from error
        _check_vocabulary(directory, network.config.vocab_size, len(tokenizer))
        return cls(network, tokenizer, metadata, device=device)

    @torch.inference_mode()
    def predict_scores(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Sigmoid scores, shape `[len(texts), num_labels]`, in the order of `texts`."""
        scores = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        # Longest first, so each batch pads to similar lengths.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch = self.tokenizer(
                [texts[i] for i in index],
                padding=True,
                truncation=True,
                max_length=self.metadata.max_length,
                return_tensors="pt",
            ).to(self.device)
            logits = self.network(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            scores[index] = torch.sigmoid(logits.float()).cpu().numpy()
        return scores

    def predict(self, texts: Sequence[str], top_k: int | None = 5, batch_size: int = 32) -> list[Prediction]:
        """Rank the emotions of each text (`top_k` of them, all for None).

        Empty or whitespace-only texts get an empty prediction.
        """
        texts = list(texts)
        present = [i for i, text in enumerate(texts) if text and text.strip()]
        scores = self.predict_scores([texts[i] for i in present], batch_size=batch_size)
        predictions = [Prediction(text=text, top=[], labels=[], ekman=[], sentiment=[]) for text in texts]
        for row, i in zip(scores, present, strict=True):
            predictions[i] = self._prediction(texts[i], row, top_k)
        return predictions

    def _prediction(self, text: str, row: np.ndarray, top_k: int | None) -> Prediction:
        ranked = np.argsort(-row, kind="stable")
        above = row >= self.thresholds
        top = [EmotionScore(self.labels[j], float(row[j]), bool(above[j])) for j in ranked[:top_k]]
        labels = [self.labels[j] for j in ranked if above[j]]
        grouped = labels or [self.labels[ranked[0]]]
        return Prediction(
            text=text,
            top=top,
            labels=labels,
            ekman=_unique(self._ekman[label] for label in grouped),
            sentiment=_unique(self._sentiment[label] for label in grouped),
        )


#: What `training.export.export_model` writes, all of which `load` needs: without the tokenizer files transformers
#: quietly builds a 5-token vocabulary, and every word becomes [UNK].
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    METADATA_FILE,
    "tokenizer.json",
    "tokenizer_config.json",
)
#: Rows by which a model's embedding may outnumber its tokenizer: some checkpoints pad it to a multiple of 64.
VOCAB_PADDING = 64
_REPAIR_HINT = "Copy the whole model directory again, or train a new one with `moodring train`."


def _check_model_files(directory: Path) -> None:
    """Raise `ModelError` unless every exported file is there and the weights file is a whole safetensors file."""
    from safetensors import SafetensorError, safe_open

    missing = [name for name in MODEL_FILES if not (directory / name).is_file()]
    if missing:
        raise ModelError(f"The model in {directory}/ is incomplete: {', '.join(missing)} missing. {_REPAIR_HINT}")
    weights = directory / "model.safetensors"
    try:
        with safe_open(weights, framework="pt"):  # reads the header, which must describe the file to its last byte
            pass
    except (SafetensorError, OSError) as error:
        raise ModelError(f"{weights} is truncated or corrupt ({error}). {_REPAIR_HINT}") from error


def _check_vocabulary(directory: Path, model_size: int, tokenizer_size: int) -> None:
    """Raise `ModelError` unless the tokenizer's ids are the rows of the model's embedding."""
    if not model_size - VOCAB_PADDING < tokenizer_size <= model_size:
        raise ModelError(
            f"The model in {directory}/ does not match its tokenizer: the tokenizer has {tokenizer_size} tokens, "
            f"the model's vocabulary (vocab_size in config.json) {model_size}. {_REPAIR_HINT}"
        )


def _unique(items) -> list[str]:
    return list(dict.fromkeys(items))
