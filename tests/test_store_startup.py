"""Start-up faults of the database, against real files and real processes: a second bot on the same file, a
read-only, locked or corrupt database, a directory that is missing or not writable. Each gives a `StoreError`
that names the file and says what to do, and `moodring run` prints it in one line and exits non-zero.

Permissions are checked in a child process that drops to an unprivileged user when the tests run as root
(root can write to read-only files), so the same tests hold for CI's normal user and for root."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from bot_fixtures import moodring_config

from bot.app import MoodringBot
from bot.cli import _serve
from bot.store import StoreError, open_store
from sandbox import DiscordStandIn

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

# Opens the store and holds it (like a running bot) until its stdin closes.
HOLDER = """
import asyncio, sys

from bot.store import open_store


async def main(path):
    store = await open_store(path)
    print("open", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await store.close()

asyncio.run(main(sys.argv[1]))
"""

# Opens the store as an unprivileged user (dropping root after the imports) and prints the outcome.
OPEN_UNPRIVILEGED = """
import asyncio, os, sys
import bot.store.sqlite  # the engine, imported while still allowed to read everything
from bot.store import StoreError, open_store

if os.geteuid() == 0:
    os.setgroups([]); os.setgid(int(sys.argv[2])); os.setuid(int(sys.argv[2]))

async def main(path):
    try:
        store = await open_store(path, busy_timeout_ms=100)
    except StoreError as error:
        print(f"StoreError: {error}")
        return
    await store.close()
    print("opened")

asyncio.run(main(sys.argv[1]))
"""


@contextlib.contextmanager
def held_by_another_process(path: Path) -> Iterator[subprocess.Popen[str]]:
    """A child process with the store at `path` open, as a running bot would have; stopped and checked after."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        cwd=REPO,
        env=CHILD_ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "open", proc.stderr.read()
        yield proc
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()  # the holder closes its store and exits
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.poll() is not None


def open_unprivileged(path: Path) -> str:
    """What `open_store(path)` says in a child process running as an unprivileged user."""
    result = subprocess.run(
        [sys.executable, "-c", OPEN_UNPRIVILEGED, str(path), str(NOBODY)],
        cwd=REPO,
        env=CHILD_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return result.stdout.strip()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the unprivileged child can reach (pytest's tmp_path is private to its user)."""
    directory = Path(tempfile.mkdtemp(prefix="moodring-startup-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        for path in [directory, *directory.rglob("*")]:
            with contextlib.suppress(OSError):
                path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(directory)


async def make_database(path: Path) -> None:
    store = await open_store(path)
    await store.set_channel_settings(1, 2, reactions=True)
    await store.close()


# ---------------------------------------------------------------- one bot per database


async def test_a_second_store_on_the_same_file_is_refused_while_another_process_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    with held_by_another_process(path) as holder:
        with pytest.raises(StoreError) as refused:
            await open_store(path)
        message = str(refused.value)
        assert str(path) in message and "another moodring" in message and f"PID {holder.pid}" in message
    # The holder closed its store and exited: the lock went with it.
    async with await open_store(path) as store:
        assert (await store.channel_settings(1, 2)).analysis


async def test_the_lock_is_released_when_the_store_closes_in_the_same_process(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    first = await open_store(path)
    with pytest.raises(StoreError, match="another moodring"):
        await open_store(path)
    await first.close()
    await (await open_store(path)).close()


async def test_a_second_moodring_run_exits_with_one_line_naming_the_file(
    discord_standin: DiscordStandIn, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = moodring_config(discord_standin, tiny_model_dir, tmp_path)
    config.database.parent.mkdir(parents=True, exist_ok=True)
    with held_by_another_process(config.database):
        assert await asyncio.wait_for(_serve(MoodringBot(config)), 60) == 2
    err = capsys.readouterr().err
    assert err.startswith("moodring: ") and err.count("\n") == 1, err
    assert str(config.database) in err and "another moodring" in err and "Traceback" not in err


# ---------------------------------------------------------------- unusable files and directories


async def test_a_corrupt_file_says_so_and_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    path.write_bytes(b"this is not a database\n" * 400)
    with pytest.raises(StoreError) as refused:
        await open_store(path)
    message = str(refused.value)
    assert str(path) in message and "not a moodring database or is damaged" in message and "backup" in message


async def test_a_damaged_schema_page_says_so(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    await make_database(path)
    with path.open("r+b") as file:  # page 1 after the 100-byte header holds the schema's b-tree
        file.seek(100)
        file.write(b"\xff" * 3000)
    with pytest.raises(StoreError, match="not a moodring database or is damaged") as refused:
        await open_store(path)
    assert str(path) in str(refused.value)


async def test_a_database_locked_by_another_program_says_so(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    await make_database(path)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # e.g. a sqlite3 shell in the middle of a write
    try:
        with pytest.raises(StoreError) as refused:
            await open_store(path, busy_timeout_ms=100)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    message = str(refused.value)
    assert str(path) in message and "locked by another program" in message
    await (await open_store(path)).close()  # nothing was left half-open


async def test_a_directory_that_cannot_be_created_says_so(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    path = tmp_path / "a-file" / "data" / "bot.db"
    with pytest.raises(StoreError) as refused:
        await open_store(path)
    message = str(refused.value)
    assert str(path.parent) in message and "MOODRING_DATABASE" in message


def test_a_read_only_file_says_so(shared_dir: Path) -> None:
    path = shared_dir / "bot.db"
    asyncio.run(make_database(path))  # in WAL mode, as the bot leaves it, owned by the test's user (root: another user)
    shared_dir.chmod(0o777)  # only the file is read-only
    path.chmod(0o444)
    outcome = open_unprivileged(path)
    assert outcome.startswith("StoreError: ") and str(path) in outcome and "read-only" in outcome, outcome


def test_a_read_only_directory_says_so(shared_dir: Path) -> None:
    path = shared_dir / "bot.db"
    asyncio.run(make_database(path))
    path.chmod(0o666)  # the file is writable, but SQLite needs to create its -wal and -shm files beside it
    shared_dir.chmod(0o755)
    outcome = open_unprivileged(path)
    assert outcome.startswith("StoreError: ") and str(shared_dir) in outcome and "writ" in outcome, outcome


def test_a_new_file_in_an_unwritable_directory_says_so(shared_dir: Path) -> None:
    for path in (shared_dir / "bot.db", shared_dir / "missing" / "bot.db"):
        outcome = open_unprivileged(path)
        assert outcome.startswith("StoreError: ") and str(path.parent) in outcome and "writ" in outcome, outcome
        assert not path.exists()
