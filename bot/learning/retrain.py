"""Retraining from Discord, without ever training in the bot's process: the orchestration and the swap gate.

`moodring train` runs as a child process writing a candidate model; its progress file is read for progress.
When it finishes, `moodring evaluate --split dev --json` scores the candidate and the serving model the same
way (the files both children write, and how they are read: model/training_contract.py), and the candidate
replaces the serving model only if it passes the gate (`should_swap`): at least as good on GoEmotions dev within
a tolerance and, once there are enough members' corrections to tell, at least as good on "community dev".
Whatever goes wrong, the serving model keeps serving.

Before training, the corrections of the servers that collect them are exported from the bot's own database
(`export_corrections`) and passed as `--extra-data`; the export is deleted when the run ends, since message text
is kept only in the database. A run that cannot end itself (SIGKILL, the OOM killer) leaves its export behind, so
the bot deletes every export no live retrain holds when it starts (`remove_orphaned_exports`): a retrain holds an
exclusive lock on its run's `corrections.lock` from before it exports until the export is gone, and the kernel
releases that lock when its process dies, however it dies.

Children never outlive the run: a cancel or the bot's shutdown stops the child (SIGTERM to its process
group, SIGKILL after a grace period), and a child whose bot dies without warning stops by itself
(bot/learning/training_child.py). Once the swap has begun it is finished, so that memory and disk agree; file
work runs off the event loop. What is posted to Discord is a short reason (the message itself:
bot/learning/progress_text.py); the rest goes to the log.

The first training (`start(first=True)`, when no model serves or only a starter does) has two stages in one run:
a starter model (`moodring train --starter`, minutes), served as soon as it exists through the same gate and swap,
then the full recipe behind it, which replaces it through the gate like any retrain (a starter is not a model to
beat: the gate compares with the serving model only when it is a full one). It runs in one directory,
`FIRST_RUN_DIR`, whose checkpoint and resume state are kept when it is interrupted, so that the next start goes on
from the last finished epoch (`moodring train` resumes by itself in the same work directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bot.config import split_retrain_args
from bot.inference import InferenceService
from bot.learning.community_data import ExportSummary
from bot.learning.training_child import TrainingChild, child_threads, failure_reason, finish_despite_cancel
from bot.store import StoreError
from model.metadata import METADATA_FILE, ModelMetadata
from model.storage import replace_directory
from model.training_contract import (
    ProgressReader,
    TrainingProgress,
    checkpoint_dir,
    model_checksums,
    progress_path,
    read_dev_scores,
    report_path,
    resume_dir,
    reusable_dev_f1,
)

log = logging.getLogger(__name__)


#: Writes the corrections for a retrain into a directory; None when there are none to use.
ExportCorrections = Callable[[Path], Awaitable[ExportSummary | None]]
#: Called once a swap is complete (the new model on disk and serving) with the checksums of the model's files, taken
#: from the candidate before it replaced the serving model (read after, they could be another process's later swap);
#: e.g. to tell the other processes of a cluster (bot/cluster/model_sync.py). It must not raise.
AfterSwap = Callable[[dict[str, str]], Awaitable[object]]
#: The cluster's one-retrain-at-a-time lock, held for the block: its value says whether this process got it (False:
#: another process is retraining). Raises `StoreError` when the database can't say.
ClusterLock = Callable[[], contextlib.AbstractAsyncContextManager[bool]]

#: Why `start` refused, as shown in Discord.
RUNNING_HERE = "A retrain is already running. Stop it with `/moodring retrain-cancel`."
RUNNING_ELSEWHERE = (
    "A retrain is already running in another of this bot's processes; its progress is in the channel where it was "
    "started. Try again once it has finished."
)
LOCK_UNAVAILABLE = (
    "I can't check whether another of this bot's processes is retraining (its database can't be reached now). "
    "Try again later."
)


#: A run's export of the corrections (inside its run directory), and the lock its retrain holds while it exists.
EXPORT_DIR = "corrections"
EXPORT_LOCK = "corrections.lock"
#: The first training's run directory under the work root: one name, so that a restart finds it and resumes it.
FIRST_RUN_DIR = "first-training"
#: The starter's own options, after the operator's: no ONNX files (a minute more; the full model brings them).
STARTER_ARGS = ("--starter", "--no-onnx")


def lock_export(run_dir: Path) -> int:
    """Take the exclusive lock on `run_dir`'s export (blocking); the open descriptor holds it until it is closed or
    the process ends."""
    descriptor = os.open(run_dir / EXPORT_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    return descriptor


def remove_orphaned_exports(work_root: Path) -> list[Path]:
    """Delete the corrections export of every retrain run under `work_root` whose lock nobody holds (its retrain was
    killed), keeping the run's logs; the exports removed. One a retrain in another process holds is left alone."""
    removed = []
    for run_dir in sorted(work_root.glob("retrain-*")):
        export = run_dir / EXPORT_DIR
        if not export.exists():  # a retrain takes its lock before it exports, and drops it after deleting
            continue
        descriptor = os.open(run_dir / EXPORT_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            continue
        try:
            shutil.rmtree(export, ignore_errors=True)
            removed.append(export)
        finally:
            os.close(descriptor)
    return removed


class RetrainFailed(RuntimeError):
    """A retrain step failed; the message is short, has no host paths, and may be shown in Discord."""


@dataclass
class RetrainStatus:
    """What a progress message shows; `phase` is starting, training, evaluating, or a final phase. A first training
    has a `stage`: "starter", then "full" (the full recipe, trained while the starter serves)."""

    phase: str = "starting"
    first: bool = False
    stage: str = ""
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
    # Community dev (members' corrections): its size, micro-F1 by epoch and of each model.
    community_rows: int = 0
    community_f1: list[float] = field(default_factory=list)
    candidate_community_f1: float | None = None
    current_community_f1: float | None = None
    detail: str = ""  # shown in Discord: never a host path or a child's output

    @property
    def percent(self) -> int:
        return int(100 * self.step / self.total_steps) if self.total_steps else 0

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def next_stage(self, stage: str) -> None:
        """A first training moves on to `stage`: its progress starts again."""
        self.stage, self.phase = stage, "starting"
        self.epoch = self.epochs = self.step = self.total_steps = 0
        self.eta_s, self.dev_f1, self.community_f1 = None, [], []

    def follow(self, progress: TrainingProgress) -> None:
        """Show the training child's progress so far; a run still starting is training once a step is reported."""
        if progress.training:
            if self.phase == "starting":
                self.phase = "training"
            self.epoch, self.epochs = progress.epoch, progress.epochs
            self.step, self.total_steps, self.eta_s = progress.step, progress.total_steps, progress.eta_s
        self.dev_f1 = list(progress.dev_f1)
        self.community_f1 = list(progress.community_f1)


ProgressCallback = Callable[[RetrainStatus], Awaitable[None]]


class Retrainer:
    """Runs one retrain at a time: in this process, and with a `cluster_lock` in the cluster (the lock is held from
    `start` until the run has finished, its swap and `after_swap` included). `start` returns False if one is already
    running; `refusal` then says why.

    The settings come from the caller (bot/app.py passes BotConfig's): `extra_args` (MOODRING_RETRAIN_ARGS),
    `tolerance` and `community_min_rows` (the gate, `should_swap`), `progress_interval` (seconds between updates).
    """

    def __init__(
        self,
        inference: InferenceService,
        model_dir: Path,
        work_root: Path,
        *,
        backbone: str | None,
        data_dir: str | None,
        extra_args: str,
        tolerance: float,
        progress_interval: float,
        community_min_rows: int,
        export_corrections: ExportCorrections | None = None,
        after_swap: AfterSwap | None = None,
        cluster_lock: ClusterLock | None = None,
    ) -> None:
        self.inference = inference
        self.model_dir = Path(model_dir)
        self.work_root = Path(work_root)
        self.backbone = backbone
        self.data_dir = data_dir
        self.extra_args = split_retrain_args(extra_args)
        self.tolerance = tolerance
        self.progress_interval = progress_interval
        self.export_corrections = export_corrections
        self.community_min_rows = community_min_rows
        self.after_swap = after_swap
        self.cluster_lock = cluster_lock
        self.refusal = ""  # why the last `start` that returned False did
        self.status: RetrainStatus | None = None
        self._task: asyncio.Task | None = None
        self._child = TrainingChild()
        self._cancel_reason: str | None = None
        self._progress = ProgressReader(Path(os.devnull))  # the running stage's progress file

    async def remove_orphaned_exports(self) -> None:
        """At start-up: delete the corrections text that killed retrains left in the work directory (one line each)."""
        for export in await asyncio.to_thread(remove_orphaned_exports, self.work_root):
            log.info("removed the corrections exported by an interrupted retrain (%s)", export)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def child_pid(self) -> int | None:
        """The pid of the child process running now (training or evaluating), if any."""
        return self._child.pid

    async def start(self, on_progress: ProgressCallback | None = None, *, first: bool = False) -> bool:
        """Start a retrain unless one is running here or (with a `cluster_lock`) in another process, or the lock
        can't be checked: then False, with `refusal` set to what to tell the owner. `first`: the first training (see
        the module docstring)."""
        if self.running:
            self.refusal = RUNNING_HERE
            return False
        lock = contextlib.AsyncExitStack()
        if self.cluster_lock is not None:
            try:
                free = await lock.enter_async_context(self.cluster_lock())
            except StoreError as error:
                log.warning("not retraining: can't take the cluster's retrain lock (%s)", error)
                self.refusal = LOCK_UNAVAILABLE
                return False
            if not free or self.running:  # another process has it; or this one started meanwhile
                await lock.aclose()
                self.refusal = RUNNING_HERE if self.running else RUNNING_ELSEWHERE
                return False
        self.status = RetrainStatus(first=first)
        self._cancel_reason = None
        self._task = asyncio.create_task(self._run(self.status, on_progress, lock), name="moodring-retrain")
        return True

    async def wait(self) -> RetrainStatus:
        """The final status of the last retrain started, once it has finished."""
        assert self._task is not None and self.status is not None, "no retrain started"
        await asyncio.wait({self._task})
        return self.status

    async def cancel(self, reason: str = "cancelled by an owner") -> RetrainStatus | None:
        """Stop the running retrain and return its final status; None if none was running.

        Returns once the child has exited. A retrain already swapping models finishes the swap (its
        status then says so): the serving model is then the new one, on disk and in memory.
        """
        if not self.running:
            return None
        self._cancel_reason = reason
        self._task.cancel()
        return await self.wait()

    async def _run(
        self, status: RetrainStatus, on_progress: ProgressCallback | None, lock: contextlib.AsyncExitStack
    ) -> RetrainStatus:
        # Unique, not only to the second: two runs started at once (two clusters on one work directory, or a retrain
        # right after one that failed at once) must not write into each other's directory.
        run_dir = self.work_root / f"retrain-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
        if status.first:
            run_dir = self.work_root / FIRST_RUN_DIR
        candidate = run_dir / "model"
        self._progress = ProgressReader(progress_path(self._work_dir(run_dir)))
        finished = asyncio.Event()
        reporter = asyncio.create_task(self._report(status, on_progress, finished))
        export_lock: int | None = None
        try:
            await self.inference.reserve_cores(child_threads())
            await asyncio.to_thread(run_dir.mkdir, parents=True, exist_ok=status.first)
            export_lock = await asyncio.to_thread(lock_export, run_dir)
            if status.first and not self.inference.ready:
                await self._serve_starter(status, run_dir)
            if status.first:
                status.next_stage("full")
                self._progress = ProgressReader(progress_path(self._work_dir(run_dir)))
            extra = await self._export(run_dir / EXPORT_DIR, status)
            await self._train(candidate, run_dir, extra)
            status.follow(await asyncio.to_thread(self._progress.read))
            status.phase = "evaluating"  # the reporter task shows it
            status.candidate_f1, status.candidate_community_f1 = await self._dev_scores(
                candidate, run_dir / "eval-candidate.log", extra
            )
            if self._serving_full_model and await asyncio.to_thread((self.model_dir / METADATA_FILE).is_file):
                status.current_f1, status.current_community_f1 = await self._dev_scores(
                    self.model_dir, run_dir / "eval-current.log", extra
                )
            if should_swap(
                status.candidate_f1,
                status.current_f1,
                self.tolerance,
                candidate_community=status.candidate_community_f1,
                current_community=status.current_community_f1,
                community_rows=status.community_rows,
                min_community_rows=self.community_min_rows,
            ):
                _, stopped_meanwhile = await finish_despite_cancel(self._swap_in(candidate))
                status.outcome = "swapped"
                if stopped_meanwhile:
                    status.detail = f"The stop ({self._stop_reason}) came during the swap, so the swap was finished."
            else:
                status.outcome = "kept"
        except asyncio.CancelledError:  # only `cancel()` and the bot's shutdown cancel this task
            status.outcome, status.detail = "cancelled", self._stop_reason
        except RetrainFailed as failure:
            status.outcome, status.detail = "failed", str(failure)
        except Exception:
            log.exception("retrain failed")
            status.outcome, status.detail = "failed", "An unexpected error; the details are in the bot's log."
        finally:
            # A second cancel (an impatient shutdown) must not leave a half-deleted run or a silent message.
            await finish_despite_cancel(
                self._finish(status, on_progress, reporter, finished, run_dir, candidate, export_lock)
            )
            await finish_despite_cancel(lock.aclose())  # after the swap and its announcement: the cluster's turn
        return status

    @property
    def _serving_full_model(self) -> bool:
        """A model serves, and not a starter (which is only a stand-in until the full model is trained: the gate
        serves whatever the full recipe trains instead of it, as when no model serves)."""
        classifier = self.inference.classifier
        return classifier is not None and not classifier.metadata.is_starter

    @property
    def _stop_reason(self) -> str:
        return self._cancel_reason or "the bot is shutting down"

    @staticmethod
    def _work_dir(run_dir: Path) -> Path:
        """`moodring train`'s work directory in a run: its progress file and its checkpoint."""
        return run_dir / "work"

    async def _finish(
        self,
        status: RetrainStatus,
        on_progress: ProgressCallback | None,
        reporter: asyncio.Task,
        finished: asyncio.Event,
        run_dir: Path,
        candidate: Path,
        export_lock: int | None,
    ) -> None:
        finished.set()
        await reporter
        status.phase = status.outcome or "cancelled"
        # Keep the logs for whoever investigates; the checkpoint and the candidate are large, and the corrections'
        # text is kept in the database only. An unfinished first training keeps what the next start resumes from.
        heavy = [candidate, run_dir / "starter", run_dir / EXPORT_DIR]
        if not status.first or status.outcome in ("swapped", "kept"):
            heavy += [checkpoint_dir(self._work_dir(run_dir)), resume_dir(self._work_dir(run_dir))]
        for directory in heavy:
            await asyncio.to_thread(shutil.rmtree, directory, ignore_errors=True)
        if export_lock is not None:  # only once the export is gone
            os.close(export_lock)
        await self.inference.reserve_cores(0)
        await self._notify(status, on_progress)

    async def _export(self, directory: Path, status: RetrainStatus) -> Path | None:
        """The members' corrections as `--extra-data`, or None without any; a failed export is a failed run."""
        if self.export_corrections is None:
            return None
        try:
            summary = await self.export_corrections(directory)
        except Exception as error:
            log.exception("exporting the corrections for a retrain failed")
            failure = "Exporting the members' corrections failed; the details are in the bot's log."
            raise RetrainFailed(failure) from error
        if summary is None or summary.rows == 0:
            return None
        status.community_rows = summary.dev_rows
        log.info(
            "retraining with %d corrections: %d train and %d community-dev rows",
            summary.corrections,
            summary.train_rows,
            summary.dev_rows,
        )
        return directory

    async def _serve_starter(self, status: RetrainStatus, run_dir: Path) -> None:
        """A first training's first stage: train a starter model and serve it through the gate (which passes any
        model while none serves), judged by the dev figure it measured itself."""
        status.next_stage("starter")
        starter, work_dir = run_dir / "starter", run_dir / "starter-work"
        self._progress = ProgressReader(progress_path(work_dir))
        await self._train(starter, run_dir, work_dir=work_dir, log_name="starter.log", options=STARTER_ARGS)
        metadata = await asyncio.to_thread(ModelMetadata.load, starter)
        starter_f1 = float(metadata.dev_metrics["macro_f1"])
        if should_swap(starter_f1, None, self.tolerance, min_community_rows=self.community_min_rows):
            await finish_despite_cancel(self._swap_in(starter))
            log.info("serving the starter model (dev-sample macro-F1 %.3f) while the full one trains", starter_f1)

    async def _train(
        self,
        candidate: Path,
        run_dir: Path,
        extra: Path | None = None,
        *,
        work_dir: Path | None = None,
        log_name: str = "train.log",
        options: tuple[str, ...] = (),
    ) -> None:
        """`moodring train` into `candidate`, with its progress and checkpoints in `work_dir` (by default the run's)
        and its output in `log_name` in the run directory; `options` come after the operator's."""
        work_dir = work_dir or self._work_dir(run_dir)
        args = ["train", "--out", str(candidate), "--work-dir", str(work_dir)]
        if self.backbone is not None:
            args += ["--backbone", self.backbone]
        if self.data_dir:
            args += ["--data-dir", self.data_dir]
        if extra is not None:
            args += ["--extra-data", str(extra)]
        log_path = run_dir / log_name
        code = await self._child.run([*args, *self.extra_args, *options], log_path)
        if code != 0:
            raise RetrainFailed(await failure_reason("training", code, log_path))
        if not await asyncio.to_thread((candidate / METADATA_FILE).is_file):
            raise RetrainFailed("Training finished without exporting a model.")

    async def _dev_scores(self, model_dir: Path, log_path: Path, extra: Path | None) -> tuple[float, float | None]:
        """GoEmotions dev macro-F1, and community-dev micro-F1 with `extra` (else None), from the `eval-dev.json`
        that `moodring evaluate --split dev` writes beside a model.

        Without `extra`, the report already there is reused if it was computed from exactly the files now in the
        model directory and the data directory (`reusable_dev_f1`); otherwise the model is scored again.
        """
        report = report_path(model_dir, "dev")
        served = self.inference.classifier
        backend = served.backend if served is not None and model_dir == self.model_dir else self.inference.backend
        reused = None if extra is not None else await asyncio.to_thread(reusable_dev_f1, report, self.data_dir, backend)
        if reused is not None:
            log.info("reusing the dev score of %s from its %s", model_dir, report.name)
            return reused, None
        args = ["evaluate", "--model", str(model_dir), "--split", "dev", "--backend", self.inference.backend]
        if self.data_dir:
            args += ["--data-dir", self.data_dir]
        if extra is not None:
            args += ["--extra-data", str(extra)]
        code = await self._child.run(args, log_path)
        if code != 0:
            which = "the current model" if model_dir == self.model_dir else "the new model"
            raise RetrainFailed(await failure_reason(f"scoring {which} on dev", code, log_path))
        return await asyncio.to_thread(read_dev_scores, report)

    async def _swap_in(self, candidate: Path) -> None:
        """Load the candidate fully, put it where the serving model lives on disk, serve it, then `after_swap` with
        the candidate's checksums (taken before the replace)."""
        classifier = await asyncio.to_thread(self.inference.open_model, candidate)
        checksums = await asyncio.to_thread(model_checksums, candidate)
        await asyncio.to_thread(replace_directory, candidate, self.model_dir)
        classifier.relocate(self.model_dir)
        self.inference.swap(classifier)
        log.info("now serving the retrained model from %s", self.model_dir)
        if self.after_swap is not None:
            await self.after_swap(checksums)

    async def _report(
        self, status: RetrainStatus, on_progress: ProgressCallback | None, finished: asyncio.Event
    ) -> None:
        """Show progress every `progress_interval` until `finished`; never interrupted mid-message. The progress
        file read is the current stage's (`_progress`)."""
        while not finished.is_set():
            if status.phase in ("starting", "training"):
                status.follow(await asyncio.to_thread(self._progress.read))
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


def should_swap(
    candidate_f1: float,
    current_f1: float | None,
    tolerance: float,
    *,
    min_community_rows: int,
    candidate_community: float | None = None,
    current_community: float | None = None,
    community_rows: int = 0,
) -> bool:
    """The retrain gate. Serve the candidate when there is no current model (`current_f1` None: none serves, or only
    a starter model); otherwise only if both hold:

    - GoEmotions dev macro-F1 >= the current model's minus `tolerance` (it has not forgotten GoEmotions);
    - with at least `min_community_rows` community-dev rows, community-dev micro-F1 >= the current model's
      (fewer rows, or no corrections at all, say too little to decide either way).
    """
    if current_f1 is None:
        return True
    if candidate_f1 < current_f1 - tolerance:
        return False
    if community_rows < min_community_rows or candidate_community is None or current_community is None:
        return True
    return candidate_community >= current_community
