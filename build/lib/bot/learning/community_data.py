"""Community corrections as a training set: `moodring corrections export` and `/moodring retrain` write them in
GoEmotions' layout, which `moodring train --extra-data DIR` and `moodring evaluate --extra-data DIR` read with the
same loader as GoEmotions (training/data.py).

One row per corrected text. A label is kept only if a majority of that text's corrections chose it, so a member who
disagrees with everyone else on a message does not decide its labels; a text where no label has a majority is left
out. Rows are split into `train.tsv` and `dev.tsv` by a hash of the text, so a text stays in the same split however
many corrections arrive, and every export of the same corrections is byte for byte the same.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.store import Correction, Store, is_postgres_url, open_store
from model.metadata import ModelMetadata

log = logging.getLogger(__name__)

DEV_PERCENT = 20  # share of corrected texts held out as "community dev"
LABELS_FILE = "emotions.txt"
MAPPING_FILES = {"ekman_mapping": "ekman_mapping.json", "sentiment_mapping": "sentiment_mapping.json"}


class ExportError(ValueError):
    """The corrections cannot be exported; the message says why and what to do."""


@dataclass(frozen=True)
class ExportSummary:
    corrections: int  # read from the database
    train_rows: int
    dev_rows: int
    dropped: int  # texts without a majority label (or with labels the model does not know)

    @property
    def rows(self) -> int:
        return self.train_rows + self.dev_rows


def majority_labels(corrections: Sequence[Correction]) -> dict[str, list[str]]:
    """Text -> the labels chosen by more than half of that text's corrections (texts without one are absent)."""
    by_text: dict[str, list[Correction]] = defaultdict(list)
    for correction in corrections:
        by_text[correction.text].append(correction)
    kept = {}
    for text, group in by_text.items():
        votes = Counter(label for c in group for label in set(c.labels))
        labels = sorted(label for label, count in votes.items() if 2 * count > len(group))
        if labels:
            kept[text] = labels
    return kept


def split_of(text: str, dev_percent: int = DEV_PERCENT) -> str:
    """ "dev" or "train", from a hash of the text: the same text always lands in the same split."""
    bucket = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big") % 100
    return "dev" if bucket < dev_percent else "train"


def write_dataset(
    corrections: Sequence[Correction], out: Path, metadata: ModelMetadata, dev_percent: int = DEV_PERCENT
) -> ExportSummary:
    """Write `train.tsv`, `dev.tsv` (text, label ids, id), `emotions.txt` and the group mappings into `out`.

    Label ids are positions in the model's label list, as in GoEmotions. Blocking file work: run it off the loop.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index = {label: i for i, label in enumerate(metadata.labels)}
    rows: dict[str, list[tuple[str, str, str]]] = {"train": [], "dev": []}
    majority = majority_labels(corrections)
    dropped = len({c.text for c in corrections}) - len(majority)
    for text in sorted(majority):
        ids = [index[label] for label in majority[text] if label in index]
        if not ids:
            dropped += 1
            continue
        row_id = "community-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        rows[split_of(text, dev_percent)].append((text, ",".join(map(str, sorted(ids))), row_id))
    for split, split_rows in rows.items():
        _write_atomically(out / f"{split}.tsv", _tsv(split_rows))
    _write_atomically(out / LABELS_FILE, "".join(f"{label}\n" for label in metadata.labels))
    for attribute, name in MAPPING_FILES.items():
        _write_atomically(out / name, json.dumps(getattr(metadata, attribute), indent=2) + "\n")
    return ExportSummary(len(corrections), len(rows["train"]), len(rows["dev"]), dropped)


async def export_store(store: Store | None, out: Path, model_dir: Path) -> ExportSummary | None:
    """The corrections of the servers that collect them, for `/moodring retrain`; None when there are none, or no
    model yet to name the labels (the first training has no corrections to learn from anyway)."""
    if store is None:
        return None
    corrections = await store.corrections(contributing=True)
    if not corrections:
        return None
    try:
        metadata = await asyncio.to_thread(ModelMetadata.load, model_dir)
    except (OSError, ValueError) as error:
        log.warning(
            "not retraining with the %d corrections: no label names from %s (%s)", len(corrections), model_dir, error
        )
        return None
    return await asyncio.to_thread(write_dataset, corrections, out, metadata)


async def export_database(database: Path | str, out: Path, model_dir: Path) -> ExportSummary:
    """Export the corrections of the servers that collect them from a bot's database file or PostgreSQL URL (it may
    be shared with a running bot: no one-bot lock)."""
    if not is_postgres_url(database) and not Path(database).is_file():
        raise ExportError(f"{database}: no such database file (the bot's MOODRING_DATABASE)")
    try:
        metadata = await asyncio.to_thread(ModelMetadata.load, model_dir)
    except (OSError, ValueError) as error:
        raise ExportError(
            f"cannot read the label names from the model in {model_dir} ({error}); pass --model with a trained model"
        ) from None
    store = await open_store(database, exclusive=False)
    try:
        corrections = await store.corrections(contributing=True)
    finally:
        await store.close()
    return await asyncio.to_thread(write_dataset, corrections, out, metadata)


def _tsv(rows: Sequence[tuple[str, str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")  # quotes a text holding a tab or a newline
    writer.writerows(rows)
    return buffer.getvalue()


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
