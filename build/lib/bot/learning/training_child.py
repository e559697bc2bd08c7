"""The retrainer's child processes: `moodring train` and `moodring evaluate`, one at a time.

A child runs in a process group of its own, with a lifeline to the bot (model/child_process.py): a cancel (an
owner's, or the bot's shutdown) stops it and whatever it started (SIGTERM to its group, SIGKILL after a grace
period) before the cancel goes on, and a child whose bot dies without warning stops by itself. Its output goes to
a log file of the run, for the host only: what a failure tells Discord is a short reason (`failure_reason`). It
gets the bot's environment less the bot's secret, and all usable cores but one, which stays the bot's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TypeVar

from model.child_process import Lifeline, start_child, stop_child
from model.threads import THREADS_ENV, available_cores

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds a stopped child (a cancel, the bot's shutdown) has to exit after SIGTERM before it is killed.
STOP_GRACE_S = 10.0


class TrainingChild:
    """Runs the retrainer's `moodring` children, one at a time; `pid` is the one running now, if any."""

    def __init__(self) -> None:
        self.stop_grace_s = STOP_GRACE_S
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def run(self, args: Sequence[str], log_path: Path) -> int:
        """`moodring ARGS` with its output in `log_path`; returns its exit code.

        Cancelled, it stops the child (and its group) before returning, even if cancelled again meanwhile.
        """
        with Lifeline() as lifeline:
            output = await asyncio.to_thread(log_path.open, "wb")
            with output:
                process = await start_child(
                    [sys.executable, "-m", "moodring", *args],
                    lifeline=lifeline,
                    env=child_environment(),
                    stdout=output,
                    stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL,
                )
            self._process = process
            try:
                return await process.wait()
            except asyncio.CancelledError:
                await finish_despite_cancel(stop_child(process, self.stop_grace_s, on_kill=self._say_killing))
                raise
            finally:
                self._process = None

    def _say_killing(self) -> None:
        log.warning("child %d ignored SIGTERM for %.0f s: killing it", self.pid, self.stop_grace_s)


def child_threads(cores: int | None = None) -> int:
    """Threads for a training or scoring child: all usable cores but one, which stays the bot's."""
    return max(1, (cores or available_cores()) - 1)


def child_environment(cores: int | None = None) -> dict[str, str]:
    """The environment of a child: the bot's, less its secret, with the child's thread counts.

    OMP_WAIT_POLICY=PASSIVE: OpenMP threads that spin-wait for work take the cores the bot answers on
    (on two shared cores that made inference 40x slower).
    """
    threads = str(child_threads(cores))
    # The child never needs the bot's secret; an empty value also stops it re-reading one from .env.
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DISCORD_TOKEN": "",
        "OMP_WAIT_POLICY": "PASSIVE",
        THREADS_ENV: threads,
        "OMP_NUM_THREADS": threads,
    }


async def failure_reason(what: str, code: int, log_path: Path) -> str:
    """A failed child's reason, short enough for Discord; its last output line (paths, tracebacks) goes to the log."""
    how = _exit_description(code)
    last_line = await asyncio.to_thread(_last_line, log_path)
    log.warning("%s %s; its last output: %s (full output in %s)", what, how, last_line, log_path)
    return f"{what.capitalize()} {how}; the details are in the bot's log."


def _exit_description(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was stopped by {signal.Signals(-code).name}"
    except ValueError:
        return f"was stopped by signal {-code}"


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


async def finish_despite_cancel(step: Awaitable[T]) -> tuple[T, bool]:
    """Run `step` to its end even if the caller is cancelled meanwhile (once or more).

    Returns its result and whether a cancel arrived; the cancel is then absorbed: the caller decides
    what it means. For steps that must not stop half-way: stopping a child, and the retrainer's swap and clean-up.
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
