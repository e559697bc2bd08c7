"""Self-distillation: the averaged scores of several trained models (the teachers) as soft targets for one student.

`teacher_targets` scores the training texts with each teacher (as served: `EmotionClassifier`, which prepares each
text the way that teacher was trained), averages the scores and keeps them in one file with a record of where they
came from. A later training with the same teachers and texts reuses that file instead of scoring again; the record,
with the file's sha256, goes into the student's `moodring.json`. `blend` mixes them into the hard labels.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model.classifier import EmotionClassifier
from model.storage import ModelError
from model.training_contract import file_sha256, model_checksums

log = logging.getLogger(__name__)

#: In a training's work directory: the averaged teacher scores and, beside them, the record they were made for.
TEACHER_TARGETS = "teacher-targets.npy"
TEACHER_RECORD = "teacher-targets.json"


def texts_sha256(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()


def teacher_targets(teachers: Sequence[str], texts: Sequence[str], labels: list[str], work_dir: Path) -> tuple:
    """`(targets, record)`: the teachers' mean sigmoid scores, shape `[len(texts), len(labels)]`, and what they were
    computed from (each teacher's path and model checksums, the texts' sha256) with the targets file's sha256.

    Reuses `work_dir`'s targets when their record names the same teachers (by checksum) and texts. A teacher whose
    labels differ from `labels` is a `ModelError`.
    """
    work_dir = Path(work_dir)
    wanted = {
        "teachers": [{"path": str(Path(t).resolve()), "checksums": model_checksums(Path(t))} for t in teachers],
        "texts_sha256": texts_sha256(texts),
        "rows": len(texts),
    }
    targets_path, record_path = work_dir / TEACHER_TARGETS, work_dir / TEACHER_RECORD
    if targets_path.is_file() and record_path.is_file():
        saved = json.loads(record_path.read_text())
        if {k: saved.get(k) for k in wanted} == wanted and saved.get("sha256") == file_sha256(targets_path):
            log.info("teacher targets: reusing %s (sha256 %s)", targets_path, saved["sha256"][:12])
            return np.load(targets_path).astype(np.float32), saved
    total = np.zeros((len(texts), len(labels)), dtype=np.float64)
    for number, teacher in enumerate(teachers, 1):
        classifier = EmotionClassifier.load(teacher)
        if classifier.labels != labels:
            raise ModelError(f"teacher {teacher} has labels {classifier.labels}, not the data's {labels}")
        log.info("teacher %d of %d: scoring %d training texts with %s", number, len(teachers), len(texts), teacher)
        total += classifier.predict_scores(list(texts), batch_size=64)
    # Kept as float16 (2.4 MB for GoEmotions' train split; a score to about 0.0005), and trained on as saved, so a
    # training that reuses the file gets the very targets the first one had.
    targets = (total / len(teachers)).astype(np.float16)
    work_dir.mkdir(parents=True, exist_ok=True)
    np.save(targets_path, targets)
    record = {**wanted, "sha256": file_sha256(targets_path)}
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    log.info("teacher targets: wrote %s (sha256 %s)", targets_path, record["sha256"][:12])
    return targets.astype(np.float32), record


def blend(hard: np.ndarray, soft: np.ndarray, weight: float) -> np.ndarray:
    """`(1 - weight) * hard + weight * soft`: the student's targets."""
    return ((1.0 - weight) * hard + weight * soft).astype(np.float32)
