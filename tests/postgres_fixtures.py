"""A real PostgreSQL server for the tests, from the Debian binaries (`apt-get install postgresql`).

One server per test session (`postgres_server`), and so one per pytest-xdist worker, each worker being a session of
its own: `initdb` and `pg_ctl` into a temporary directory, on a free port, listening on 127.0.0.1 only, with
password authentication over TCP. `initdb` refuses to run as root, so as root
the server runs as the unprivileged `nobody` (through util-linux's `runuser`), in a directory it owns. Each test
gets a database of its own (`postgres_url`). At the end the server is stopped and checked to be gone.

`store_database` parametrizes a store test over both engines: a SQLite file, and a fresh PostgreSQL database.
Without the binaries the PostgreSQL tests are left out of the run, and the run's summary says so in one line with
how to enable them (skipping each would print a line per test file); under xdist each worker tells the
controller how many it left out, and the controller prints the line.
Registered in tests/conftest.py via `pytest_plugins`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from glob import glob
from pathlib import Path

import pytest
from process_guard import process_alive, wait_until_gone

from bot.store.member_key import create_member_key

SKIP_REASON = "no pg_ctl found; enable them with `apt-get install postgresql`"
_LEFT_OUT = pytest.StashKey[int]()
WORKER_OUTPUT_KEY = "postgres_tests_left_out"
USER = "moodring"
PASSWORD = "moodring-tests"  # a throwaway server on 127.0.0.1 that lives as long as the test run


def find_binaries() -> Path | None:
    """The directory of `initdb` and `pg_ctl`: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    versions = sorted(glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3].split(".")[0]))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """A PostgreSQL server in `directory`, run by `pg_ctl` as an unprivileged user when the tests run as root."""

    def __init__(self, binaries: Path, directory: Path) -> None:
        self.binaries = binaries
        self.directory = directory
        self.data = directory / "data"
        self.port = _free_port()
        self._names = itertools.count()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(directory, nobody.pw_uid, nobody.pw_gid)
            self._as_user = ["runuser", "-u", "nobody", "--"]

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self._as_user, *command], capture_output=True, text=True, timeout=120, cwd=self.directory
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr or result.stdout}")
        return result

    def init(self) -> None:
        password_file = self.directory / "password"
        password_file.write_text(PASSWORD + "\n")
        if self._as_user:
            nobody = pwd.getpwnam("nobody")
            os.chown(password_file, nobody.pw_uid, nobody.pw_gid)
        self._run(
            str(self.binaries / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            USER,
            f"--pwfile={password_file}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )
        password_file.unlink()

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        )
        self._run(
            str(self.binaries / "pg_ctl"),
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
        )

    def start_first(self, attempts: int = 3) -> None:
        """The first start: on another free port if a process took this one since it was chosen (with several
        test workers, another worker's server or stand-in may). Later starts keep the port: URLs are out."""
        for attempt in range(1, attempts + 1):
            try:
                return self.start()
            except RuntimeError:
                if attempt == attempts or "Address already in use" not in self.log.read_text(errors="replace"):
                    raise
                self.port = _free_port()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`immediate`: as abruptly as a crash) and wait until its postmaster is gone."""
        pid = self.pid
        self._run(str(self.binaries / "pg_ctl"), "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data))
        if pid is not None and not wait_until_gone(pid, 30):
            raise RuntimeError(f"the PostgreSQL server (pid {pid}) did not stop")

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().split()[0])
        return None

    def url(self, database: str = "postgres", *, user: str = USER, password: str = PASSWORD) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with the psql client (over TCP, as the superuser); its unaligned output."""
        result = subprocess.run(
            [str(self.binaries / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, self.url(database)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr}")
        return result.stdout.strip()


def _needs_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("store_database") == "postgresql":
        return True
    return bool({"postgres_server", "postgres_url"} & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if find_binaries() is not None:
        return
    left_out = [item for item in items if _needs_postgres(item)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not _needs_postgres(item)]
        config.stash[_LEFT_OUT] = len(left_out)
        if hasattr(config, "workeroutput"):  # an xdist worker: its controller prints the run's summary
            config.workeroutput[WORKER_OUTPUT_KEY] = len(left_out)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """In xdist's controller, as each worker ends: how many PostgreSQL tests it left out (each collects them all)."""
    if left_out := getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY):
        node.config.stash[_LEFT_OUT] = left_out


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    if left_out := config.stash.get(_LEFT_OUT, 0):
        terminalreporter.write_line(f"{left_out} PostgreSQL tests not run: {SKIP_REASON}", yellow=True)


MEMBER_KEY_SETTING = "MOODRING_MEMBER_KEY_FILE"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    binaries = find_binaries()
    if binaries is None:
        pytest.skip(f"PostgreSQL tests skipped: {SKIP_REASON}")
    directory = Path(tempfile.mkdtemp(prefix="moodring-pg-"))
    server = PostgresServer(binaries, directory)
    # The deployment key of member hashes that a PostgreSQL bot needs (bot/store/member_key.py), made once as an
    # operator would, for every bot process the tests start on this server (they inherit the environment).
    key_directory = Path(tempfile.mkdtemp(prefix="moodring-member-key-"))
    create_member_key(key_directory / "member.key")
    saved_key_setting = os.environ.get(MEMBER_KEY_SETTING)
    os.environ[MEMBER_KEY_SETTING] = str(key_directory / "member.key")
    try:
        server.init()
        server.start_first()
        yield server
    finally:
        pid = server.pid
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)
        if saved_key_setting is None:
            os.environ.pop(MEMBER_KEY_SETTING, None)
        else:
            os.environ[MEMBER_KEY_SETTING] = saved_key_setting
        shutil.rmtree(key_directory, ignore_errors=True)
        assert pid is None or not process_alive(pid), f"the PostgreSQL server (pid {pid}) is still running"


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session's server."""
    if postgres_server.pid is None:  # a fault test stopped it
        postgres_server.start()
    return postgres_server.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """What MOODRING_DATABASE would say: a new SQLite file, or the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "bot.db")
    return request.getfixturevalue("postgres_url")


async def raw_rows(database: str, sql: str) -> list[tuple]:
    """The rows `sql` reads from either engine's database (a SQLite path or a PostgreSQL URL), past the store."""
    import sqlite3

    import asyncpg

    from bot.store import is_postgres_url

    if not is_postgres_url(database):
        with sqlite3.connect(database) as con:
            return [tuple(row) for row in con.execute(sql)]
    connection = await asyncpg.connect(database)
    try:
        return [tuple(row) for row in await connection.fetch(sql)]
    finally:
        await connection.close()
