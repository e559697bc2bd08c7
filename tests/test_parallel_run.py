"""The suite on several pytest-xdist workers: the end-of-run process check (tests/process_guard.py) sees every
worker's processes and never the workers themselves, timing tests run alone, and each worker runs one thread
(tests/parallel_run.py). Each test runs a small pytest of its own with two workers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from process_guard import process_alive

TESTS = Path(__file__).resolve().parent


def run_pytest_on_two_workers(directory: Path, test_file: str, *plugins: str) -> subprocess.CompletedProcess[str]:
    """`pytest -n 2` on `test_file`, written into `directory`, with these plugins of tests/ loaded."""
    options = [option for plugin in plugins for option in ("-p", plugin)]
    options += ["-q", "-p", "no:cacheprovider", "--basetemp", str(directory / "basetemp")]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", *options, test_file],
        cwd=directory,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_parallel_run_names_the_process_a_worker_left_behind_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "test_leaky.py").write_text(
        textwrap.dedent(
            """
            import subprocess, sys
            from pathlib import Path

            def test_starts_a_process_and_forgets_it(tmp_path_factory):
                child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
                (tmp_path_factory.getbasetemp().parent / "leaked").write_text(str(child.pid))

            def test_one(): pass
            def test_two(): pass
            def test_three(): pass
            """
        )
    )
    run = run_pytest_on_two_workers(tmp_path, "test_leaky.py", "process_guard")
    leaked = int((tmp_path / "basetemp" / "leaked").read_text())
    try:
        assert "4 passed" in run.stdout and run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout + run.stderr
        assert re.findall(r"process left behind by the tests: pid (\d+)", run.stdout) == [str(leaked)], run.stdout
        assert not process_alive(leaked)
    finally:
        if process_alive(leaked):
            os.kill(leaked, signal.SIGKILL)
