"""No process left behind: the test run fails if any process that it started is still alive at its end.

At start-up the run puts `MOODRING_TEST_RUN=<pytest's pid>` into its own environment, so every process the
tests start (and every process those start) carries it, including children that start a new session or
outlive their parent and are re-parented to PID 1. At the end of the run `/proc/*/environ` is scanned for
that marker; whatever still carries it (other than pytest itself) is reported, killed, and the run fails.

Under pytest-xdist the controller sets the marker and its workers inherit it unchanged, so what any worker's
tests start carries the one marker of the run, even after that worker has ended or crashed. Only the
controller checks, once every session hook has run (xdist's stops the workers), so the workers themselves,
which carry the marker too, are gone by then and are never reported.
Registered in tests/conftest.py via `pytest_plugins`; `process_alive` and `wait_until_gone` serve the tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Generator
from pathlib import Path

import pytest

MARKER = "MOODRING_TEST_RUN"
#: How long the end-of-run check waits for processes that are already exiting.
EXIT_GRACE_S = 3.0


def is_xdist_worker(config: pytest.Config) -> bool:
    """Whether this process is a pytest-xdist worker (the controller and a plain run are not)."""
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if not is_xdist_worker(config):
        os.environ[MARKER] = str(os.getpid())


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Generator[None, None, None]:
    yield  # after the other session-finish hooks, among them xdist's, which stops the workers
    if not is_xdist_worker(session.config):
        fail_on_processes_left_behind(session)


def fail_on_processes_left_behind(session: pytest.Session) -> None:
    """Report and kill what still carries this run's marker, and fail the run if there was any."""
    deadline = time.monotonic() + EXIT_GRACE_S
    while (left := processes_left_behind()) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for pid, command in left.items():
        line = f"process left behind by the tests: pid {pid}: {command}"
        if reporter is not None:
            reporter.write_line(line, red=True, bold=True)
        else:
            print(line)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)  # leave the machine clean for the next run
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def processes_left_behind() -> dict[int, str]:
    """Live processes (pid -> command line) that carry this run's marker, pytest excepted."""
    me = os.getpid()
    needle = f"{MARKER}={me}".encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
            if needle not in environ.split(b"\0") or not process_alive(int(entry.name)):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        found[int(entry.name)] = command[:300]
    return found


def process_alive(pid: int) -> bool:
    """Whether `pid` is a running process; a zombie (dead, waiting to be reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat[stat.rfind(")") + 2 :].split(" ", 1)[0]
    return state not in ("Z", "X")


def wait_until_gone(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `pid` to end; True if it did."""
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
