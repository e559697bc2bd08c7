"""Retraining from Discord, without ever training in the bot's process.

`moodring train` runs as a child process writing a candidate model; its `progress.jsonl` is read
for progress. When it finishes, `moodring evaluate --split dev --json` scores the candidate and the
serving model the same way, and the candidate replaces the serving model only if it is at least as
good, within a tolerance. Whatever goes wrong, the serving model keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bot.inference import InferenceService
from model import EmotionClassifier
from model.storage import replace_directory

log = logging.getLogger(__name__)


@dataclass
class RetrainStatus:
    """What a progress message shows; `phase` is starting, training, evaluating, or a final phase."""

    phase: str = "starting"
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    total_steps: int = 0
    eta_s: float | None = None
    dev_f1: list[float] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    # Set when the run ends:
    outcome: str | None = None  # swapped, kept, failed, cancelled
    candidate_f1: float | None = None
    current_f1: float | None = None
    detail: str = ""

    @property
    def percent(self) -> int:
        return int(100 * self.step / self.total_steps) if self.total_steps else 0

    @property
    def finished(self) -> bool:
        return self.outcome is not None


ProgressCallback = Callable[[RetrainStatus], Awaitable[None]]


class Retrainer:
    """Runs one retrain at a time. `start` returns False if one is already running."""

    def __init__(
        self,
        inference: InferenceService,
        model_dir: Path,
        work_root: Path,
        *,
        backbone: str,
        data_dir: str | None,
        extra_args: str = "",
        tolerance: float = 0.005,
        progress_interval: float = 5.0,
    ) -> None:
        self.inference = inference
        self.model_dir = Path(model_dir)
        self.work_root = Path(work_root)
        self.backbone = backbone
        self.data_dir = data_dir
        self.extra_args = shlex.split(extra_args)
        self.tolerance = tolerance
        self.progress_interval = progress_interval
        self.status: RetrainStatus | None = None
        self._task: asyncio.Task | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._cancelled = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, on_progress: ProgressCallback | None = None) -> bool:
        if self.running:
            return False
        self.status = RetrainStatus()
        self._cancelled = False
        self._task = asyncio.create_task(self._run(self.status, on_progress), name="moodring-retrain")
        return True

    async def wait(self) -> RetrainStatus:
        assert self._task is not None, "no retrain started"
        return await asyncio.shield(self._task)

    async def cancel(self) -> bool:
        """Stop the running retrain; the serving model is untouched. False if none was running."""
        if not self.running:
            return False
        self._cancelled = True
        self._task.cancel()
        await asyncio.wait({self._task}, timeout=30)
        return True

    async def _run(self, status: RetrainStatus, on_progress: ProgressCallback | None) -> RetrainStatus:
        run_dir = self.work_root / time.strftime("retrain-%Y%m%d-%H%M%S")
        candidate = run_dir / "model"
        progress = _ProgressReader(run_dir / "work" / "progress.jsonl")
        run_dir.mkdir(parents=True, exist_ok=True)
        finished = asyncio.Event()
        reporter = asyncio.create_task(self._report(status, progress, on_progress, finished))
        try:
            await self._train(candidate, run_dir)
            progress.update(status)
            status.phase = "evaluating"  # the reporter task shows it
            status.candidate_f1 = await self._dev_macro_f1(candidate, run_dir / "eval-candidate.log")
            if self.inference.ready and (self.model_dir / "moodring.json").is_file():
                status.current_f1 = await self._dev_macro_f1(self.model_dir, run_dir / "eval-current.log")
            if should_swap(status.candidate_f1, status.current_f1, self.tolerance):
                await self._swap_in(candidate)
                status.outcome = "swapped"
            else:
                status.outcome = "kept"
        except asyncio.CancelledError:  # only `cancel()` and the bot's shutdown cancel this task
            status.outcome = "cancelled"
            status.detail = "cancelled by an owner" if self._cancelled else "the bot is shutting down"
            await self._stop_process()
        except Exception as error:
            status.outcome, status.detail = "failed", str(error)
            log.warning("retrain failed: %s", error)
        finally:
            finished.set()
            await reporter
            status.phase = status.outcome or "cancelled"
            # Keep the logs for whoever investigates; the checkpoint and the candidate are large.
            for heavy in (candidate, run_dir / "work" / "best"):
                shutil.rmtree(heavy, ignore_errors=True)
        await self._notify(status, on_progress)
        return status

    def _command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "moodring", *args]

    async def _spawn(self, command: list[str], log_path: Path) -> int:
        """Run a child process with its output in `log_path`; returns its exit code."""
        # The child never needs the bot's secret; an empty value also stops it re-reading one from .env.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DISCORD_TOKEN": ""}
        with log_path.open("wb") as output:
            self._process = await asyncio.create_subprocess_exec(
                *command,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a Ctrl-C meant for the bot reaches it, which then stops the child
            )
            try:
                return await self._process.wait()
            finally:
                self._process = None

    async def _train(self, candidate: Path, run_dir: Path) -> None:
        args = ["train", "--backbone", self.backbone, "--out", str(candidate), "--work-dir", str(run_dir / "work")]
        if self.data_dir:
            args += ["--data-dir", self.data_dir]
        log_path = run_dir / "train.log"
        code = await self._spawn(self._command(*args, *self.extra_args), log_path)
        if code != 0:
            raise RuntimeError(f"training exited with code {code}: {_last_line(log_path)}")
        if not (candidate / "moodring.json").is_file():
            raise RuntimeError("training finished without exporting a model")

    async def _dev_macro_f1(self, model_dir: Path, log_path: Path) -> float:
        """Dev macro-F1 from the `eval-dev.json` that `moodring evaluate --split dev` writes beside a model.

        A model's earlier report is reused: it goes away with the directory when the model is replaced.
        """
        report = model_dir / "eval-dev.json"
        if not report.is_file():
            args = ["evaluate", "--model", str(model_dir), "--split", "dev"]
            if self.data_dir:
                args += ["--data-dir", self.data_dir]
            code = await self._spawn(self._command(*args), log_path)
            if code != 0:
                raise RuntimeError(f"evaluating {model_dir} exited with code {code}: {_last_line(log_path)}")
        return float(json.loads(report.read_text(encoding="utf-8"))["macro_f1"])

    async def _swap_in(self, candidate: Path) -> None:
        """Load the candidate fully, put it where the serving model lives on disk, then serve it."""
        loop = asyncio.get_running_loop()
        classifier = await loop.run_in_executor(None, EmotionClassifier.load, candidate)
        await loop.run_in_executor(None, replace_directory, candidate, self.model_dir)
        self.inference.swap(classifier)
        log.info("now serving the retrained model from %s", self.model_dir)

    async def _stop_process(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def _report(
        self,
        status: RetrainStatus,
        progress: _ProgressReader,
        on_progress: ProgressCallback | None,
        finished: asyncio.Event,
    ) -> None:
        """Show progress every `progress_interval` until `finished`; never interrupted mid-message."""
        while not finished.is_set():
            if status.phase in ("starting", "training"):
                await asyncio.to_thread(progress.update, status)
            await self._notify(status, on_progress)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), self.progress_interval)

    @staticmethod
    async def _notify(status: RetrainStatus, on_progress: ProgressCallback | None) -> None:
        if on_progress is None:
            return
        try:
            await on_progress(status)
        except Exception as error:
            log.warning("could not report retrain progress: %s", error)


class _ProgressReader:
    """Reads the lines `moodring train` appends to its progress.jsonl, from where it stopped last time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.dev_f1: list[float] = []

    def update(self, status: RetrainStatus) -> None:
        if not self.path.is_file():
            return
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next read
        self.offset += len(complete)
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "step":
                status.phase = "training"
                status.epoch, status.epochs = event["epoch"], event["epochs"]
                status.step, status.total_steps, status.eta_s = event["step"], event["total_steps"], event["eta_s"]
            elif event.get("event") == "dev":
                self.dev_f1.append(event["macro_f1"])
        status.dev_f1 = list(self.dev_f1)


def should_swap(candidate_f1: float, current_f1: float | None, tolerance: float) -> bool:
    """Serve the candidate unless it is worse than the current model by more than `tolerance`."""
    return current_f1 is None or candidate_f1 >= current_f1 - tolerance


def _last_line(log_path: Path) -> str:
    """The last non-empty line of a child's log (its error message, usually), read from the file's end."""
    with log_path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(handle.tell() - 4000, 0))
        text = handle.read().decode("utf-8", errors="replace")
    lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "(no output)"


def format_status(status: RetrainStatus) -> str:
    """One progress message, edited in place while the retrain runs."""
    elapsed = time.time() - status.started_at
    lines = ["**Retraining the emotion model**"]
    if status.phase == "starting":
        lines.append("Starting `moodring train`…")
    elif status.phase == "training":
        eta = f", about {_duration(status.eta_s)} left" if status.eta_s is not None else ""
        lines.append(
            f"Epoch {status.epoch}/{status.epochs} · step {status.step}/{status.total_steps} ({status.percent}%){eta}"
        )
    elif status.phase == "evaluating":
        lines.append("Training done. Scoring the new model on the dev split…")
    if status.dev_f1:
        lines.append("Dev macro-F1 by epoch: " + ", ".join(f"{f:.3f}" for f in status.dev_f1))
    if status.outcome == "swapped":
        before = f" (was {status.current_f1:.3f})" if status.current_f1 is not None else ""
        lines.append(f"✅ New model is now serving: dev macro-F1 {status.candidate_f1:.3f}{before}.")
    elif status.outcome == "kept":
        lines.append(
            f"↩️ Kept the current model: new dev macro-F1 {status.candidate_f1:.3f} vs current "
            f"{status.current_f1:.3f} (a new model must be within its tolerance of the current one)."
        )
    elif status.outcome == "failed":
        lines.append(f"❌ Retraining failed; the current model keeps serving. {status.detail[:900]}")
    elif status.outcome == "cancelled":
        lines.append(f"⏹️ Retraining cancelled ({status.detail}); the current model keeps serving.")
    if status.finished:  # while running, the message changes only when progress does
        lines.append(f"Took {_duration(elapsed)}.")
    return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    seconds = int(seconds or 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"
