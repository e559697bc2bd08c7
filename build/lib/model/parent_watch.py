"""A child process that stops by itself when the process that started it dies, however suddenly.

The parent makes a pipe, passes its read end to the child (`pass_fds`) with the descriptor's number in
`MOODRING_PARENT_FD`, and keeps the write end open while the child should run. The child calls
`watch_parent()`: a daemon thread blocks reading the pipe. The parent never writes, so the read returns
only at end-of-file, when the write end closes: the parent closed it, or died (even by SIGKILL, since the
kernel closes a dead process's descriptors). The child then sends itself SIGTERM, and ends outright after
`grace_s` if it is still there. Called by `moodring train`, `moodring evaluate` and `moodring run`; the parent's
side is model/child_process.py (the retrainer, the cluster's supervisor, `moodring sandbox`). Standard library only.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

log = logging.getLogger(__name__)

PARENT_FD_ENV = "MOODRING_PARENT_FD"


def watch_parent(grace_s: float = 5.0) -> bool:
    """If started with `MOODRING_PARENT_FD`, end this process when the parent's end of that pipe closes.

    Returns whether a watch was started. The variable is removed, so this process's own children don't inherit it.
    """
    value = os.environ.pop(PARENT_FD_ENV, None)
    if not value:
        return False
    try:
        descriptor = int(value)
        os.set_inheritable(descriptor, False)
    except (ValueError, OSError) as error:
        log.warning("ignoring %s=%r: %s", PARENT_FD_ENV, value, error)
        return False
    threading.Thread(
        target=_stop_when_closed, args=(descriptor, grace_s), name="moodring-parent-watch", daemon=True
    ).start()
    return True


def _stop_when_closed(descriptor: int, grace_s: float) -> None:
    try:
        while os.read(descriptor, 4096):
            pass
    except OSError:  # the descriptor is unusable: the parent can't be watched, so don't outlive it silently
        pass
    log.warning("the process that started this one has gone: stopping")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)
    os._exit(128 + signal.SIGTERM)
