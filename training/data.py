"""GoEmotions: load, validate, tokenize and batch.

A local directory in the original layout (`train.tsv`, `dev.tsv`, `test.tsv`, `emotions.txt`,
`ekman_mapping.json`, `sentiment_mapping.json`) is parsed row by row, so that a bad row is reported
with its file and line, then handed to `datasets`. Without a directory the `simplified` config is
read from the Hugging Face hub, with the Ekman and sentiment mappings from the paper's repository
(bundled in `training/resources/`, as the hub dataset has no copy of them).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import datasets
import torch
from torch.utils.data import Sampler

from model.text_preparation import prepare
from model.training_contract import file_sha256

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
HUB_DATASET = "google-research-datasets/go_emotions"
HUB_CONFIG = "simplified"
#: Where a checkout keeps GoEmotions (the project's machines and CI lay `shared/` beside it): the default when neither
#: --data-dir nor GOEMOTIONS_DIR says, so that `moodring evaluate` works after `. .venv/bin/activate` as under make.
CHECKOUT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "goemotions"
#: Seconds to wait for a connection to the hub before saying it cannot be reached (instead of retrying for long).
HUB_PROBE_TIMEOUT_S = 3.0
MAPPING_FILES = {"ekman": "ekman_mapping.json", "sentiment": "sentiment_mapping.json"}


class DataError(ValueError):
    """The data is missing or malformed; the message names the file and line."""


@dataclass
class GoEmotions:
    """The splits asked for (columns `text`, `labels`, `id`), label names and group mappings."""

    splits: dict[str, datasets.Dataset]
    labels: list[str]
    ekman_mapping: dict[str, list[str]]
    sentiment_mapping: dict[str, list[str]]
    source: str
    checksums: dict[str, str] = field(default_factory=dict)


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """`--data-dir`, else `GOEMOTIONS_DIR` (which may come from `.env`), else the checkout's `CHECKOUT_DATA_DIR` when
    it holds GoEmotions, else None for the hub."""
    chosen = data_dir or os.environ.get("GOEMOTIONS_DIR")
    if chosen:
        return Path(chosen).expanduser()
    return CHECKOUT_DATA_DIR if (CHECKOUT_DATA_DIR / "train.tsv").is_file() else None


def load_goemotions(data_dir: str | Path | None, splits: Sequence[str] = SPLITS) -> GoEmotions:
    """Load GoEmotions from a local directory, or from the hub when `data_dir` is None."""
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; choose from {SPLITS}")
    if data_dir is None:
        return _load_from_hub(splits)
    return _load_from_directory(Path(data_dir), splits)


def _load_from_directory(directory: Path, splits: Sequence[str]) -> GoEmotions:
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory (set --data-dir or GOEMOTIONS_DIR to GoEmotions)")
    labels = _read_label_names(directory / "emotions.txt")
    mappings = {name: _read_mapping(directory / file, labels) for name, file in MAPPING_FILES.items()}
    loaded = {split: _read_split(directory / f"{split}.tsv", len(labels)) for split in splits}
    files = ["emotions.txt", *MAPPING_FILES.values(), *(f"{split}.tsv" for split in splits)]
    checksums = {name: file_sha256(directory / name) for name in files}
    for split, rows in loaded.items():
        log.info("%s: %d rows from %s", split, len(rows), directory / f"{split}.tsv")
    return GoEmotions(
        splits={split: datasets.Dataset.from_list(rows) for split, rows in loaded.items()},
        labels=labels,
        ekman_mapping=mappings["ekman"],
        sentiment_mapping=mappings["sentiment"],
        source=str(directory.resolve()),
        checksums=checksums,
    )


def _require(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: file not found (GoEmotions needs {', '.join(_expected_files())})")


def _expected_files() -> list[str]:
    return [f"{split}.tsv" for split in SPLITS] + ["emotions.txt", *MAPPING_FILES.values()]


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; a byte that is not UTF-8 is a `DataError` naming the file, line and column."""
    _require(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line_start = data.rfind(b"\n", 0, error.start) + 1
        line = data.count(b"\n", 0, error.start) + 1
        column = len(data[line_start : error.start].decode("utf-8")) + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[error.start]:02x} at column {column}); save it as UTF-8"
        ) from None


def _read_label_names(path: Path) -> list[str]:
    names = [line.strip() for line in _read_text(path).splitlines()]
    while names and not names[-1]:
        names.pop()
    for number, name in enumerate(names, start=1):
        if not name:
            raise DataError(f"{path}:{number}: empty label name")
    if len(set(names)) != len(names) or not names:
        raise DataError(f"{path}: label names must be unique and non-empty, got {names}")
    return names


def _read_mapping(path: Path, labels: list[str]) -> dict[str, list[str]]:
    text = _read_text(path)
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from error
    if not isinstance(mapping, dict) or not all(isinstance(v, list) for v in mapping.values()):
        raise DataError(f"{path}: expected an object of group -> list of labels")
    for group, members in mapping.items():
        for label in members:
            if label not in labels:
                raise DataError(f"{path}: group {group!r} names unknown label {label!r}")
    return mapping


@dataclass
class ExtraData:
    """Another data set in GoEmotions' layout with the same labels (community corrections:
    bot/learning/community_data.py).

    `train` or `dev` is None when its file has no rows (a few corrections may all land in one split).
    """

    train: datasets.Dataset | None
    dev: datasets.Dataset | None
    source: str
    checksums: dict[str, str] = field(default_factory=dict)


def load_extra_data(directory: str | Path, labels: Sequence[str]) -> ExtraData:
    """`train.tsv` and `dev.tsv` of `directory`, whose `emotions.txt` must list `labels` in the same order.

    Read like GoEmotions (a bad row is a `DataError` naming its file and line), except that a split may be empty.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory (the --extra-data written by `moodring corrections export`)")
    names = _read_label_names(directory / "emotions.txt")
    if names != list(labels):
        raise DataError(f"{directory / 'emotions.txt'}: labels {names} differ from GoEmotions' {list(labels)}")
    splits = {}
    for split in ("train", "dev"):
        rows = _read_split(directory / f"{split}.tsv", len(names), allow_empty=True)
        splits[split] = datasets.Dataset.from_list(rows) if rows else None
        log.info("extra %s: %d rows from %s", split, len(rows), directory / f"{split}.tsv")
    checksums = {f"extra/{name}": file_sha256(directory / name) for name in ("emotions.txt", "train.tsv", "dev.tsv")}
    return ExtraData(splits["train"], splits["dev"], str(directory.resolve()), checksums)


def mix_in(train: datasets.Dataset, extra: datasets.Dataset | None, weight: int) -> datasets.Dataset:
    """`train` followed by `weight` copies of `extra` (oversampled, so that a few rows still count)."""
    if extra is None or weight < 1:
        return train
    extra = extra.cast(train.features)
    return datasets.concatenate_datasets([train, *[extra] * weight])


def _read_split(path: Path, num_labels: int, allow_empty: bool = False) -> list[dict]:
    rows = []
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter="\t")
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if len(row) != 3:
            raise DataError(f"{where}: expected 3 tab-separated columns (text, labels, id), got {len(row)}")
        text, label_field, comment_id = row
        if not text.strip():
            raise DataError(f"{where}: empty text")
        rows.append({"text": text, "labels": _parse_labels(label_field, num_labels, where), "id": comment_id})
    if not rows and not allow_empty:
        raise DataError(f"{path}: no rows")
    return rows


def _parse_labels(field_text: str, num_labels: int, where: str) -> list[int]:
    try:
        ids = [int(part) for part in field_text.split(",")]
    except ValueError:
        raise DataError(f"{where}: label ids must be comma-separated integers, got {field_text!r}") from None
    for label_id in ids:
        if not 0 <= label_id < num_labels:
            raise DataError(f"{where}: label id {label_id} outside 0..{num_labels - 1}")
    return sorted(set(ids))


def _hub_unreachable() -> str | None:
    """Why the hub (`HF_ENDPOINT`, else huggingface.co) cannot be reached, or None: one connection attempt, so that an
    offline machine hears it at once instead of after the hub client's retries. Behind a proxy, the client's own
    connection decides."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return None
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=HUB_PROBE_TIMEOUT_S):
            return None
    except OSError as error:
        return f"{endpoint.hostname}:{port}: {error.strerror or error}"


def _load_from_hub(splits: Sequence[str]) -> GoEmotions:
    unreachable = _hub_unreachable()
    if unreachable is not None:
        raise DataError(
            f"cannot reach the Hugging Face hub ({unreachable}) to load {HUB_DATASET}. "
            "Pass --data-dir or set GOEMOTIONS_DIR to a local GoEmotions directory."
        )
    try:
        hub = datasets.load_dataset(HUB_DATASET, HUB_CONFIG)
    except Exception as error:
        raise DataError(
            f"Could not load {HUB_DATASET} ({HUB_CONFIG}) from the Hugging Face hub: {error}. "
            "Offline? Pass --data-dir or set GOEMOTIONS_DIR to a local GoEmotions directory."
        ) from error
    labels = list(hub["train"].features["labels"].feature.names)
    bundled = resources.files("training") / "resources"
    mappings = {name: json.loads((bundled / file).read_text(encoding="utf-8")) for name, file in MAPPING_FILES.items()}
    hub_names = {"train": "train", "dev": "validation", "test": "test"}
    return GoEmotions(
        splits={split: hub[hub_names[split]] for split in splits},
        labels=labels,
        ekman_mapping=mappings["ekman"],
        sentiment_mapping=mappings["sentiment"],
        source=f"hf://{HUB_DATASET}/{HUB_CONFIG}",
        checksums={split: hub[hub_names[split]]._fingerprint for split in splits},
    )


def encode(
    split: datasets.Dataset, tokenizer, max_length: int, num_labels: int, *, text_preparation: int
) -> datasets.Dataset:
    """Prepare each text as the model will read it (`model.text_preparation.prepare` with `text_preparation`, the
    version `moodring.json` records, so serving prepares alike), tokenize without padding (batches are padded to
    their own longest row) and multi-hot the labels."""

    def encode_batch(batch: dict) -> dict:
        texts = [prepare(text, text_preparation) for text in batch["text"]]
        tokens = tokenizer(texts, truncation=True, max_length=max_length)
        targets = [[1.0 if i in set(ids) else 0.0 for i in range(num_labels)] for ids in batch["labels"]]
        return {"input_ids": tokens["input_ids"], "targets": targets}

    return split.map(encode_batch, batched=True, remove_columns=split.column_names, desc="Tokenizing")


class PadCollator:
    """Pad a list of encoded rows to the longest one and build the attention mask."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(row["input_ids"]) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row["input_ids"])] = torch.tensor(row["input_ids"], dtype=torch.long)
            attention_mask[i, : len(row["input_ids"])] = 1
        targets = torch.tensor([row["targets"] for row in rows], dtype=torch.float32)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "targets": targets}


class LengthGroupedSampler(Sampler[int]):
    """A shuffled order in which neighbours have similar lengths, so padded batches waste little.

    Each epoch: shuffle, cut into windows of `batch_size * window_batches` rows, sort each window by
    length, cut into batches and shuffle the batches. Seeded per epoch, so runs repeat exactly.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, window_batches: int = 50) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.window = batch_size * window_batches
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        batches = []
        for start in range(0, len(order), self.window):
            window = sorted(order[start : start + self.window], key=lambda i: self.lengths[i], reverse=True)
            batches += [window[i : i + self.batch_size] for i in range(0, len(window), self.batch_size)]
        for b in torch.randperm(len(batches), generator=generator).tolist():
            yield from batches[b]
