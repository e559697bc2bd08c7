"""How the tests share the machine when pytest-xdist runs them on several workers (`-n 2` in pyproject.toml).

- **One thread each.** A worker runs torch, OpenMP and MKL with one intra-op thread, and so does every process its
  tests start, unless a test sets its own count: two workers that each spin two OpenMP threads on two cores make
  the run slower, not faster (model/threads.py says why). The variables are set when this module is imported,
  which tests/conftest.py does before any fixture module imports torch, so OpenMP reads them as torch loads; a
  torch that was loaded before is set in `pytest_configure`.
- **Timing tests run alone.** A test marked `timing` asserts a latency or a time bound that another test's load
  on the same cores could break. It waits until no test runs on any worker, and the others wait while it runs:
  a readers-writer lock (`MachineShare`) over two files in the run's base temporary directory, held from a test's
  set-up to its teardown.

In one process (`pytest -n 0`) tests run one at a time anyway, and none of this applies.
Registered in tests/conftest.py via `pytest_plugins`, first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MOODRING_THREADS": "1"}
TIMING_MARKER = "timing"

if os.environ.get("PYTEST_XDIST_WORKER"):  # set by xdist in each worker before it loads any plugin
    os.environ.update(ONE_THREAD)


class MachineShare:
    """The machine as a readers-writer lock between the workers of one run, over two files in `directory`.

    `held(alone=False)` shares the machine with other such tests; `held(alone=True)` waits until no test holds
    it and keeps the others out until it ends. A waiting `alone` holds the turnstile, which every test passes
    on its way in, so the tests that arrive after it wait behind it: it cannot be starved.
    """

    def __init__(self, directory: Path) -> None:
        self._turnstile = (directory / "turnstile.lock").open("a")
        self._machine = (directory / "machine.lock").open("a")

    @contextlib.contextmanager
    def held(self, alone: bool) -> Iterator[None]:
        fcntl.flock(self._turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._machine, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(self._turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(self._machine, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(self._turnstile, fcntl.LOCK_UN)

    def close(self) -> None:
        self._turnstile.close()
        self._machine.close()


_SHARE = pytest.StashKey[MachineShare]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{TIMING_MARKER}: asserts a latency or a time bound, so it runs while no other test runs (parallel_run.py)",
    )
    if hasattr(config, "workerinput"):  # an xdist worker
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
        # xdist gives each worker `<the run's base temporary directory>/<worker id>`: the parent is the run's.
        config.stash[_SHARE] = MachineShare(Path(config.option.basetemp).parent)


def pytest_unconfigure(config: pytest.Config) -> None:
    if share := config.stash.get(_SHARE, None):
        share.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    share = item.config.stash.get(_SHARE, None)
    if share is None:
        return (yield)
    with share.held(alone=item.get_closest_marker(TIMING_MARKER) is not None):
        return (yield)
