"""Child processes that must not outlive this one: started in a process group of their own, stopped with it.

The one way moodring runs such a child: the retrainer's `moodring train` and `moodring evaluate`
(bot/learning/training_child.py), the cluster's `moodring run` processes (bot/cluster/supervisor.py) and the
sandbox's bot (moodring/sandbox_command.py).

- `start_child` starts a command in a new session, so that a Ctrl-C meant for this process reaches only this
  process (which then stops the child, once), with the read end of a `Lifeline` whose write end this process
  holds: if this process dies without warning, even by SIGKILL, the child sees the pipe close and stops itself
  (model/parent_watch.py, the child's side).
- `stop_child` stops the child and whatever it started in its group: SIGTERM to the group, SIGKILL after a grace
  period, and then it kills what is left of the group and waits until the group is gone.

Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

from model.parent_watch import PARENT_FD_ENV

log = logging.getLogger(__name__)

#: Seconds a process group may take to empty after SIGKILL before it is reported as stuck.
KILLED_GROUP_TIMEOUT_S = 5.0


class Lifeline:
    """A pipe for children to watch: they get its read end, this process holds the write end until `close()`.

    Closing it (or the end of a `with` block, or this process's death) tells every child still watching to stop.
    """

    def __init__(self) -> None:
        self.child_end, self._parent_end = os.pipe()
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.child_end)
            os.close(self._parent_end)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def start_child(
    command: Sequence[str], *, lifeline: Lifeline, env: Mapping[str, str], **options: Any
) -> asyncio.subprocess.Process:
    """Start `command` as the leader of a new session (and so of its own process group), watching `lifeline`.

    `env` is the child's whole environment (the lifeline's variable is added); `options` go to
    `asyncio.create_subprocess_exec` (stdout, stderr, stdin). OSError when the command cannot be started.
    """
    return await asyncio.create_subprocess_exec(
        *command,
        env={**env, PARENT_FD_ENV: str(lifeline.child_end)},
        pass_fds=(lifeline.child_end,),
        start_new_session=True,
        **options,
    )


async def stop_child(
    process: asyncio.subprocess.Process, grace_s: float, *, on_kill: Callable[[], object] | None = None
) -> bool:
    """Stop a child from `start_child` and everything in its process group; returns once all of it is gone.

    SIGTERM to the group; if the child is still there after `grace_s`, SIGKILL to the group (`on_kill` says so
    first; without it, a warning is logged). Once the child has exited, whatever is left in its group (a child of
    its own that ignored the SIGTERM, say) is killed, and the group waited for until it is empty. For a child that
    has already exited, only that last step. Returns whether anything of the group outlived the child.
    """
    if process.returncode is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace_s)
        except TimeoutError:
            if on_kill is None:
                log.warning("pid %d did not stop within %.0f s: killing it", process.pid, grace_s)
            else:
                on_kill()
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()
    return await _empty_group(process.pid)


async def _empty_group(pgid: int) -> bool:
    """Kill what is left in a process group whose leader has exited, and wait until it is gone; False if empty."""
    if not _group_alive(pgid):
        return False
    log.warning("process group %d outlived its leader: killing it", pgid)
    _signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + KILLED_GROUP_TIMEOUT_S
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            log.error(
                "process group %d is still there %.0f s after SIGKILL (a process stuck in the kernel?)",
                pgid,
                KILLED_GROUP_TIMEOUT_S,
            )
            return True
        await asyncio.sleep(0.05)
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the group id was reused by someone else's processes: not ours
        return False
    return True


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
