"""Retraining from Discord, without ever training in the bot's process.

`moodring train` runs as a child process writing a candidate model; its `progress.jsonl` is read
for progress. When it finishes, `moodring evaluate --split dev --json` scores the candidate and the
serving model the same way, and the candidate replaces the serving model only if it passes the gate
(`should_swap`): at least as good on GoEmotions dev within a tolerance and, once there are enough members'
corrections to tell, at least as good on "community dev". Whatever goes wrong, the serving model keeps serving.

Before training, the corrections of the servers that collect them are exported from the bot's own database
(`export_corrections`) and passed as `--extra-data`; the export is deleted when the run ends, since message text
is kept only in the database.

Children never outlive the run: a cancel or the bot's shutdown stops the child (SIGTERM to its process
group, SIGKILL after a grace period), and a child whose bot dies without warning stops by itself
(model/parent_watch.py). Once the swap has begun it is finished, so that memory and disk agree; file
work runs off the event loop. What is posted to Discord is a short reason; the rest goes to the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bot.config import split_retrain_args
from bot.inference import InferenceService
from bot.learning.community_data import ExportSummary
from model.metadata import METADATA_FILE
from model.parent_watch import PARENT_FD_ENV
from model.storage import file_sha256, model_checksums, replace_directory
from model.threads import THREADS_ENV, available_cores

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The report `moodring evaluate --split dev` writes into the model directory it scores.
DEV_REPORT = "eval-dev.json"

#: Writes the corrections for a retrain into a directory; None when there are none to use.
ExportCorrections = Callable[[Path], Awaitable[ExportSummary | None]]
#: Called once a swap is complete (the new model on disk and serving), e.g. to tell the other processes of a cluster
#: (bot/cluster/model_sync.py). It must not raise.
AfterSwap = Callable[[], Awaitable[object]]


class RetrainFailed(RuntimeError):
    """A retrain step failed; the message is short, has no host paths, and may be shown in Discord."""


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


ProgressCallback = Callable[[RetrainStatus], Awaitable[None]]


class Retrainer:
    """Runs one retrain at a time. `start` returns False if one is already running.

    The settings come from the caller (bot/app.py passes BotConfig's): `extra_args` (MOODRING_RETRAIN_ARGS),
    `tolerance` and `community_min_rows` (the gate, `should_swap`), `progress_interval` (seconds between updates).
    """

    def __init__(
        self,
        inference: InferenceService,
        model_dir: Path,
        work_root: Path,
        *,
        backbone: str,
        data_dir: str | None,
        extra_args: str,
        tolerance: float,
        progress_interval: float,
        community_min_rows: int,
        stop_grace_s: float = 10.0,
        export_corrections: ExportCorrections | None = None,
        after_swap: AfterSwap | None = None,
    ) -> None:
        self.inference = inference
        self.model_dir = Path(model_dir)
        self.work_root = Path(work_root)
        self.backbone = backbone
        self.data_dir = data_dir
        self.extra_args = split_retrain_args(extra_args)
        self.tolerance = tolerance
        self.progress_interval = progress_interval
        self.stop_grace_s = stop_grace_s
        self.export_corrections = export_corrections
        self.community_min_rows = community_min_rows
        self.after_swap = after_swap
        self.status: RetrainStatus | None = None
        self._task: asyncio.Task | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._cancel_reason: str | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def child_pid(self) -> int | None:
        """The pid of the child process running now (training or evaluating), if any."""
        return self._process.pid if self._process is not None else None

    def start(self, on_progress: ProgressCallback | None = None) -> bool:
        if self.running:
            return False
        self.status = RetrainStatus()
        self._cancel_reason = None
        self._task = asyncio.create_task(self._run(self.status, on_progress), name="moodring-retrain")
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

    async def _run(self, status: RetrainStatus, on_progress: ProgressCallback | None) -> RetrainStatus:
        run_dir = self.work_root / time.strftime("retrain-%Y%m%d-%H%M%S")
        candidate = run_dir / "model"
        progress = _ProgressReader(run_dir / "work" / "progress.jsonl")
        finished = asyncio.Event()
        reporter = asyncio.create_task(self._report(status, progress, on_progress, finished))
        try:
            await self.inference.reserve_cores(self.child_threads())
            await asyncio.to_thread(run_dir.mkdir, parents=True, exist_ok=True)
            extra = await self._export(run_dir / "corrections", status)
            await self._train(candidate, run_dir, extra)
            await asyncio.to_thread(progress.update, status)
            status.phase = "evaluating"  # the reporter task shows it
            status.candidate_f1, status.candidate_community_f1 = await self._dev_scores(
                candidate, run_dir / "eval-candidate.log", extra
            )
            if self.inference.ready and await asyncio.to_thread((self.model_dir / METADATA_FILE).is_file):
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
                _, stopped_meanwhile = await _finish_despite_cancel(self._swap_in(candidate))
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
            await _finish_despite_cancel(self._finish(status, on_progress, reporter, finished, run_dir, candidate))
        return status

    @property
    def _stop_reason(self) -> str:
        return self._cancel_reason or "the bot is shutting down"

    async def _finish(
        self,
        status: RetrainStatus,
        on_progress: ProgressCallback | None,
        reporter: asyncio.Task,
        finished: asyncio.Event,
        run_dir: Path,
        candidate: Path,
    ) -> None:
        finished.set()
        await reporter
        status.phase = status.outcome or "cancelled"
        # Keep the logs for whoever investigates; the checkpoint and the candidate are large, and the corrections'
        # text is kept in the database only.
        for heavy in (candidate, run_dir / "work" / "best", run_dir / "corrections"):
            await asyncio.to_thread(shutil.rmtree, heavy, ignore_errors=True)
        await self.inference.reserve_cores(0)
        await self._notify(status, on_progress)

    @staticmethod
    def child_threads(cores: int | None = None) -> int:
        """Threads for a training or scoring child: all usable cores but one, which stays the bot's."""
        return max(1, (cores or available_cores()) - 1)

    def child_environment(self, cores: int | None = None) -> dict[str, str]:
        """The environment of a child: the bot's, less its secret, with the child's thread counts.

        OMP_WAIT_POLICY=PASSIVE: OpenMP threads that spin-wait for work take the cores the bot answers on
        (on two shared cores that made inference 40x slower).
        """
        threads = str(self.child_threads(cores))
        # The child never needs the bot's secret; an empty value also stops it re-reading one from .env.
        return {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "DISCORD_TOKEN": "",
            "OMP_WAIT_POLICY": "PASSIVE",
            THREADS_ENV: threads,
            "OMP_NUM_THREADS": threads,
        }

    def _command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "moodring", *args]

    async def _spawn(self, command: list[str], log_path: Path) -> int:
        """Run a child process with its output in `log_path`; returns its exit code.

        Cancelled, it stops the child before returning. The child gets the read end of a pipe whose write
        end this process holds until the child has exited: if the bot dies first, the child sees the pipe
        close and stops itself (model/parent_watch.py).
        """
        lifeline_child_end, lifeline = os.pipe()
        env = {**self.child_environment(), PARENT_FD_ENV: str(lifeline_child_end)}
        try:
            output = await asyncio.to_thread(log_path.open, "wb")
            with output:
                process = await asyncio.create_subprocess_exec(
                    *command,
                    stdout=output,
                    stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL,
                    env=env,
                    pass_fds=(lifeline_child_end,),
                    start_new_session=True,  # a Ctrl-C meant for the bot reaches it, which then stops the child
                )
        except BaseException:
            os.close(lifeline)
            raise
        finally:
            os.close(lifeline_child_end)
        self._process = process
        try:
            return await process.wait()
        except asyncio.CancelledError:
            await _finish_despite_cancel(stop_process_group(process, self.stop_grace_s))
            raise
        finally:
            self._process = None
            os.close(lifeline)

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

    async def _train(self, candidate: Path, run_dir: Path, extra: Path | None = None) -> None:
        args = ["train", "--backbone", self.backbone, "--out", str(candidate), "--work-dir", str(run_dir / "work")]
        if self.data_dir:
            args += ["--data-dir", self.data_dir]
        if extra is not None:
            args += ["--extra-data", str(extra)]
        log_path = run_dir / "train.log"
        code = await self._spawn(self._command(*args, *self.extra_args), log_path)
        if code != 0:
            raise await _child_failed("training", code, log_path)
        if not await asyncio.to_thread((candidate / METADATA_FILE).is_file):
            raise RetrainFailed("Training finished without exporting a model.")

    async def _dev_scores(self, model_dir: Path, log_path: Path, extra: Path | None) -> tuple[float, float | None]:
        """GoEmotions dev macro-F1, and community-dev micro-F1 with `extra` (else None), from the `eval-dev.json`
        that `moodring evaluate --split dev` writes beside a model.

        Without `extra`, the report already there is reused if it was computed from exactly the files now in the
        model directory and the data directory (`reusable_dev_f1`); otherwise the model is scored again.
        """
        report = model_dir / DEV_REPORT
        served = self.inference.classifier
        backend = served.backend if served is not None and model_dir == self.model_dir else self.inference.backend
        reused = None if extra is not None else await asyncio.to_thread(reusable_dev_f1, report, self.data_dir, backend)
        if reused is not None:
            log.info("reusing the dev score of %s from its %s", model_dir, DEV_REPORT)
            return reused, None
        args = ["evaluate", "--model", str(model_dir), "--split", "dev", "--backend", self.inference.backend]
        if self.data_dir:
            args += ["--data-dir", self.data_dir]
        if extra is not None:
            args += ["--extra-data", str(extra)]
        code = await self._spawn(self._command(*args), log_path)
        if code != 0:
            which = "the current model" if model_dir == self.model_dir else "the new model"
            raise await _child_failed(f"scoring {which} on dev", code, log_path)
        return await asyncio.to_thread(_read_scores, report)

    async def _swap_in(self, candidate: Path) -> None:
        """Load the candidate fully, put it where the serving model lives on disk, serve it, then `after_swap`."""
        classifier = await asyncio.to_thread(self.inference.open_model, candidate)
        await asyncio.to_thread(replace_directory, candidate, self.model_dir)
        classifier.relocate(self.model_dir)
        self.inference.swap(classifier)
        log.info("now serving the retrained model from %s", self.model_dir)
        if self.after_swap is not None:
            await self.after_swap()

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


async def stop_process_group(process: asyncio.subprocess.Process, grace_s: float) -> None:
    """Stop a child that leads its own process group (`start_new_session`), and whatever it started.

    SIGTERM to the group; if the child is still there after `grace_s`, SIGKILL. Then SIGKILL for any
    of its own children that ignored the SIGTERM. Returns once the child has exited.
    """
    if process.returncode is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace_s)
        except TimeoutError:
            log.warning("child %d ignored SIGTERM for %.0f s: killing it", process.pid, grace_s)
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()
    _signal_group(process.pid, signal.SIGKILL)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def _finish_despite_cancel(step: Awaitable[T]) -> tuple[T, bool]:
    """Run `step` to its end even if the caller is cancelled meanwhile (once or more).

    Returns its result and whether a cancel arrived; the cancel is then absorbed: the caller decides
    what it means. For steps that must not stop half-way: stopping a child, the swap, the clean-up.
    """
    task = asyncio.ensure_future(step)
    cancelled = False
    while True:
        try:
            return await asyncio.shield(task), cancelled
        except asyncio.CancelledError:
            if task.done():  # the step itself was cancelled (the event loop is closing)
                raise
            cancelled = True


async def _child_failed(what: str, code: int, log_path: Path) -> RetrainFailed:
    """Log a failed child's last output line (paths, tracebacks: for the host only); a short reason for Discord."""
    how = _exit_description(code)
    last_line = await asyncio.to_thread(_last_line, log_path)
    log.warning("%s %s; its last output: %s (full output in %s)", what, how, last_line, log_path)
    return RetrainFailed(f"{what.capitalize()} {how}; the details are in the bot's log.")


def _exit_description(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was stopped by {signal.Signals(-code).name}"
    except ValueError:
        return f"was stopped by signal {-code}"


def reusable_dev_f1(report_path: Path, data_dir: str | None, backend: str | None = None) -> float | None:
    """The macro-F1 in a dev report, if it was computed from exactly the files now in use; else None.

    The report (written by `moodring evaluate`, training/evaluate.py) records the data directory and
    checksums of the model's files and of the data files it read. It is trusted only if that is still
    `data_dir` and every checksum still matches. Never for data from the hub (`data_dir` None), which
    has no files here to check, nor for a report of another `backend` than the one named. Blocking file
    work: run it off the event loop.
    """
    if data_dir is None:
        return None
    report_path = Path(report_path)
    data = Path(data_dir).expanduser().resolve()
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        recorded = report["checksums"]
        if backend is not None and report.get("backend") != backend:
            return None
        if report.get("data_dir") is None or Path(report["data_dir"]).resolve() != data or not recorded["data"]:
            return None
        if recorded["model"] != model_checksums(report_path.parent):
            return None
        if any(file_sha256(data / name) != digest for name, digest in recorded["data"].items()):
            return None
        return float(report["macro_f1"])
    except (OSError, ValueError, KeyError, TypeError):  # no report, an old one, or not one at all
        return None


def _read_scores(report_path: Path) -> tuple[float, float | None]:
    """(GoEmotions dev macro-F1, community dev micro-F1 or None) from a dev report."""
    report = json.loads(Path(report_path).read_text(encoding="utf-8"))
    community = (report.get("community_dev") or {}).get("micro_f1")
    return float(report["macro_f1"]), None if community is None else float(community)


class _ProgressReader:
    """Reads the lines `moodring train` appends to its progress.jsonl, from where it stopped last time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.dev_f1: list[float] = []
        self.community_f1: list[float] = []

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
                if event.get("community_dev_micro_f1") is not None:
                    self.community_f1.append(event["community_dev_micro_f1"])
        status.dev_f1 = list(self.dev_f1)
        status.community_f1 = list(self.community_f1)


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
    """The retrain gate. Serve the candidate when there is no current model; otherwise only if both hold:

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


def _last_line(log_path: Path) -> str:
    """The last non-empty line of a child's log (its error message, usually), read from the file's end."""
    try:
        with log_path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(handle.tell() - 4000, 0))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError as error:
        return f"(no output: {error})"
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
    if status.community_f1:
        lines.append(
            f"Community dev micro-F1 by epoch ({status.community_rows} rows): "
            + ", ".join(f"{f:.3f}" for f in status.community_f1)
        )
    if status.outcome == "swapped":
        before = f" (was {status.current_f1:.3f})" if status.current_f1 is not None else ""
        served = f"✅ New model is now serving: dev macro-F1 {status.candidate_f1:.3f}{before}."
        lines.append(f"{served} {status.detail}" if status.detail else served)
        lines.extend(_community_line(status))
    elif status.outcome == "kept":
        lines.append(
            f"↩️ Kept the current model: new dev macro-F1 {status.candidate_f1:.3f} vs current "
            f"{status.current_f1:.3f} (a new model must be within its tolerance of the current one, and at least as "
            "good on community dev once there are enough corrections)."
        )
        lines.extend(_community_line(status))
    elif status.outcome == "failed":
        lines.append(f"❌ Retraining failed; the current model keeps serving. {status.detail[:900]}")
    elif status.outcome == "cancelled":
        lines.append(f"⏹️ Retraining cancelled ({status.detail}); the current model keeps serving.")
    if status.finished:  # while running, the message changes only when progress does
        lines.append(f"Took {_duration(elapsed)}.")
    return "\n".join(lines)


def _community_line(status: RetrainStatus) -> list[str]:
    """Both models' community-dev micro-F1, when there was community dev to score."""
    if status.candidate_community_f1 is None:
        return []
    current = f"{status.current_community_f1:.3f}" if status.current_community_f1 is not None else "—"
    return [
        f"Community dev micro-F1 ({status.community_rows} rows): new {status.candidate_community_f1:.3f} vs current "
        f"{current}."
    ]


def _duration(seconds: float | None) -> str:
    seconds = int(seconds or 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"
