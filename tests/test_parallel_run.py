"""The suite on several pytest-xdist workers: the end-of-run process check (tests/process_guard.py) sees every
worker's processes and never the workers themselves, timing tests run alone, and each worker runs one thread
(tests/parallel_run.py). Each test runs a small pytest of its own with two workers."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from postgres_fixtures import SKIP_REASON, PostgresServer, find_binaries
from process_guard import process_alive

TESTS = Path(__file__).resolve().parent
SKIP_LINE = f"PostgreSQL tests not run: {SKIP_REASON}"


def run_pytest_on_two_workers(
    directory: Path, test_file: str, *plugins: str, workers: int = 2
) -> subprocess.CompletedProcess[str]:
    """`pytest -n 2` (or `workers`) on `test_file`, written into `directory`, with these plugins of tests/ loaded."""
    options = [option for plugin in plugins for option in ("-p", plugin)]
    options += ["-q", "-p", "no:cacheprovider", "--basetemp", str(directory / "basetemp")]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-n", str(workers), *options, test_file],
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


def test_a_timing_test_runs_while_no_other_test_runs_and_the_others_run_side_by_side(tmp_path: Path) -> None:
    """Each test writes when it starts and ends; the timing test's span must overlap no other test's, while the
    others' spans overlap each other (two workers ran them at once)."""
    (tmp_path / "test_sharing.py").write_text(
        textwrap.dedent(
            """
            import json, os, time
            import pytest

            def spans(tmp_path_factory, name, seconds):
                log = tmp_path_factory.getbasetemp().parent / "spans.jsonl"
                start = time.monotonic()
                time.sleep(seconds)  # the test's work: it holds the machine this long
                with open(log, "a") as out:
                    out.write(json.dumps([name, start, time.monotonic()]) + "\\n")

            @pytest.mark.timing
            def test_timing(tmp_path_factory):
                spans(tmp_path_factory, "timing", 1.0)

            @pytest.mark.parametrize("n", range(8))
            def test_plain(tmp_path_factory, n):
                spans(tmp_path_factory, f"plain {n}", 0.4)
            """
        )
    )
    run = run_pytest_on_two_workers(tmp_path, "test_sharing.py", "parallel_run")
    assert "9 passed" in run.stdout and run.returncode == 0, run.stdout + run.stderr
    spans = {name: (start, end) for name, start, end in map(json.loads, (tmp_path / "basetemp" / "spans.jsonl").open())}
    timing_start, timing_end = spans.pop("timing")
    assert [name for name, (start, end) in spans.items() if start < timing_end and end > timing_start] == []
    assert any(a[0] < b[1] and b[0] < a[1] for a in spans.values() for b in spans.values() if a is not b)


def test_a_worker_and_what_it_starts_run_one_thread(tmp_path: Path) -> None:
    (tmp_path / "test_threads.py").write_text(
        textwrap.dedent(
            """
            import os, subprocess, sys
            import torch

            def test_one_thread_here_and_in_a_child():
                assert torch.get_num_threads() == 1
                child = subprocess.run(
                    [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                    capture_output=True, text=True, check=True,
                )
                assert child.stdout.strip() == "1"
                assert [os.environ[name] for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MOODRING_THREADS")] == [
                    "1", "1", "1"
                ]

            def test_another(): pass
            """
        )
    )
    run = run_pytest_on_two_workers(tmp_path, "test_threads.py", "parallel_run")
    assert "2 passed" in run.stdout and run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("workers", [0, 2])
def test_the_postgresql_tests_left_out_are_counted_in_one_line_on_any_number_of_workers(
    tmp_path: Path, workers: int
) -> None:
    (tmp_path / "conftest.py").write_text("import postgres_fixtures\npostgres_fixtures.find_binaries = lambda: None\n")
    (tmp_path / "test_needs_postgres.py").write_text(
        textwrap.dedent(
            """
            def test_on_postgresql(postgres_url): pass
            def test_on_sqlite(): pass
            """
        )
    )
    run = run_pytest_on_two_workers(tmp_path, "test_needs_postgres.py", "postgres_fixtures", workers=workers)
    assert "1 passed" in run.stdout and run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("PostgreSQL tests not run") == 1 and f"1 {SKIP_LINE}" in run.stdout, run.stdout


@pytest.mark.skipif(find_binaries() is None, reason=SKIP_REASON)
def test_a_postgresql_server_whose_port_was_taken_starts_on_another() -> None:
    """Its port is chosen free before `initdb`, and another worker's process may take it meanwhile."""
    directory = Path(tempfile.mkdtemp(prefix="moodring-pg-"))  # not under pytest's 0700 base: `nobody` runs it
    server = PostgresServer(find_binaries(), directory)
    try:
        server.init()
        with socket.socket() as taker:
            taker.bind(("127.0.0.1", server.port))
            taker.listen()
            taken = server.port
            server.start_first()
            assert server.port != taken and server.pid is not None
            assert server.psql("SELECT 1") == "1"
    finally:
        if server.pid is not None:
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)
