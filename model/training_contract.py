"""The contract between the bot's retrainer and its training child: the files that cross the process boundary.

The bot never imports the training code: its retrainer (bot/learning/retrain.py) starts `moodring train` and
`moodring evaluate` as child processes and reads the files they write. Both sides import this module, so that each
file's name and each field the bot reads are written down once, here:

- `moodring train --work-dir W` appends its progress to `progress_path(W)`, one JSON event per line: training's
  `ProgressLog` callback writes through `ProgressWriter`, the retrainer reads with `ProgressReader`. The best
  checkpoint so far is kept in `checkpoint_dir(W)`, and what an interrupted training needs to go on from its last
  finished epoch in `resume_dir(W)` (both large: the retrainer deletes them after a run, except after an interrupted
  first training, which the next start resumes).
- `moodring evaluate --split S` writes its report into the model directory it scored, as `report_path(dir, S)`
  (`write_report`), with a chart beside it (`report_chart_path`). Both names start with `REPORT_PREFIX`, which
  marks them as reports, not model files (`model_checksums`). The retrainer reads a dev report with
  `read_dev_scores`, and reuses one without scoring again only while `reusable_dev_f1` finds that it was computed
  from exactly the files now in use; the report records their checksums (`model_checksums`, `file_sha256`).
- A child started by the bot stops by itself when the bot dies: the pipe it watches is named by
  `model.parent_watch.PARENT_FD_ENV` (the child's side, model/parent_watch.py; the bot's side, model/child_process.py).

Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: In a training's work directory: its progress events and its best checkpoint.
PROGRESS_FILE = "progress.jsonl"
CHECKPOINT_DIR = "best"
RESUME_DIR = "resume"
#: How the reports `moodring evaluate` writes into a model directory begin; they are not part of the model.
REPORT_PREFIX = "eval-"

#: The progress events: `step` (at most every few seconds, and at the last step), `dev` (after each epoch), `done`.
STEP_EVENT, DEV_EVENT, DONE_EVENT = "step", "dev", "done"


def progress_path(work_dir: Path) -> Path:
    return Path(work_dir) / PROGRESS_FILE


def checkpoint_dir(work_dir: Path) -> Path:
    return Path(work_dir) / CHECKPOINT_DIR


def resume_dir(work_dir: Path) -> Path:
    """Where `moodring train` keeps the state after its last finished epoch until the training is complete."""
    return Path(work_dir) / RESUME_DIR


def report_path(model_dir: Path, split: str) -> Path:
    """The JSON report `moodring evaluate --split <split>` writes into the model directory it scored."""
    return Path(model_dir) / f"{REPORT_PREFIX}{split}.json"


def report_chart_path(model_dir: Path, split: str) -> Path:
    """The per-label F1 chart written beside `report_path`."""
    return Path(model_dir) / f"{REPORT_PREFIX}{split}.png"


# --------------------------------------------------------------------------------------------- progress


class ProgressWriter:
    """Writes one training's progress events to its progress file, which it empties first.

    Each line is a JSON object with `event`, `time` (Unix seconds) and the event's fields:
    - `step`: `epoch` (from 1), `epochs`, `step`, `total_steps`, `elapsed_s`, `eta_s` (None before the first
      step) and `loss` (None before one is known);
    - `dev`: `epoch` and that epoch's dev summary, which has `macro_f1` (GoEmotions dev, the selection metric) and,
      when training with community corrections, `community_dev_micro_f1`;
    - `done`: `out` (where the model was exported) and `dev_macro_f1` (of the exported model).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("", encoding="utf-8")

    def step(
        self,
        *,
        epoch: int,
        epochs: int,
        step: int,
        total_steps: int,
        elapsed_s: float,
        eta_s: float | None,
        loss: float | None,
    ) -> None:
        self._write(
            STEP_EVENT,
            epoch=epoch,
            epochs=epochs,
            step=step,
            total_steps=total_steps,
            elapsed_s=elapsed_s,
            eta_s=eta_s,
            loss=loss,
        )

    def dev(self, epoch: int, summary: Mapping[str, float | int | None]) -> None:
        self._write(DEV_EVENT, epoch=epoch, **summary)

    def done(self, out: Path, dev_macro_f1: float) -> None:
        self._write(DONE_EVENT, out=str(out), dev_macro_f1=dev_macro_f1)

    def _write(self, event: str, **fields: object) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"event": event, "time": time.time(), **fields}) + "\n")


@dataclass
class TrainingProgress:
    """What a training's progress events say so far."""

    training: bool = False  # a step has been reported
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    total_steps: int = 0
    eta_s: float | None = None
    dev_f1: list[float] = field(default_factory=list)  # GoEmotions dev macro-F1, by epoch
    community_f1: list[float] = field(default_factory=list)  # community-dev micro-F1, by epoch (with community dev)


class ProgressReader:
    """Reads a progress file while the training appends to it, each time from where it stopped the last time."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self.progress = TrainingProgress()

    def read(self) -> TrainingProgress:
        """The progress so far, with every line completed since the last read. Blocking file work."""
        if not self.path.is_file():
            return self.progress
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next read
        self.offset += len(complete)
        progress = self.progress
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == STEP_EVENT:
                progress.training = True
                progress.epoch, progress.epochs = event["epoch"], event["epochs"]
                progress.step, progress.total_steps = event["step"], event["total_steps"]
                progress.eta_s = event["eta_s"]
            elif event.get("event") == DEV_EVENT:
                progress.dev_f1.append(event["macro_f1"])
                if event.get("community_dev_micro_f1") is not None:
                    progress.community_f1.append(event["community_dev_micro_f1"])
        return progress


# --------------------------------------------------------------------------------------------- evaluation reports


def write_report(report: Mapping[str, object], model_dir: Path, split: str) -> Path:
    """Write `moodring evaluate`'s report on `split` into `model_dir`; returns its path.

    The fields the bot reads: `macro_f1`; `community_dev` ({`rows`, `micro_f1`, `macro_f1`}) with community
    corrections; `backend`; `data_dir` (None for data from the hub); `checksums`: {`model`: `model_checksums` of
    the directory, `data`: {name: `file_sha256`} of every data file read (GoEmotions' files by their name in
    `data_dir`, community corrections' as `extra/<name>`)}.
    """
    path = report_path(model_dir, split)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path


def read_dev_scores(path: Path) -> tuple[float, float | None]:
    """(GoEmotions dev macro-F1, community-dev micro-F1 or None) from a dev report."""
    report = json.loads(Path(path).read_text(encoding="utf-8"))
    community = (report.get("community_dev") or {}).get("micro_f1")
    return float(report["macro_f1"]), None if community is None else float(community)


def reusable_dev_f1(path: Path, data_dir: str | None, backend: str | None = None) -> float | None:
    """The macro-F1 in a dev report, if it was computed from exactly the files now in use; else None.

    The report is trusted only if its data directory is still `data_dir` and every checksum it records (of the
    model's files and of the data files it read) still matches. Never for data from the hub (`data_dir` None),
    which has no files here to check, nor for a report of another `backend` than the one named. Blocking file work.
    """
    if data_dir is None:
        return None
    path = Path(path)
    data = Path(data_dir).expanduser().resolve()
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        recorded = report["checksums"]
        if backend is not None and report.get("backend") != backend:
            return None
        if report.get("data_dir") is None or Path(report["data_dir"]).resolve() != data or not recorded["data"]:
            return None
        if recorded["model"] != model_checksums(path.parent):
            return None
        if any(file_sha256(data / name) != digest for name, digest in recorded["data"].items()):
            return None
        return float(report["macro_f1"])
    except (OSError, ValueError, KeyError, TypeError):  # no report, an old one, or not one at all
        return None


def model_checksums(directory: Path) -> dict[str, str]:
    """SHA-256 of every file of the model in `directory` (all files in it, less the reports)."""
    directory = Path(directory)
    return {
        path.name: file_sha256(path)
        for path in sorted(directory.iterdir())
        if path.is_file() and not path.name.startswith(REPORT_PREFIX)
    }


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex; read in chunks, so a model-sized file costs no memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
