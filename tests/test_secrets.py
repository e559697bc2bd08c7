"""No secret in argv, logs or reports: a database URL with a password in each place a URL can hold one
(``user:password@``, ``?password=``, ``?sslpassword=``, all at once, a percent-encoded key, several hosts) is fed to
every output that may show it (the redaction itself, the settings' repr and errors, a store's errors, the log lines
of a `moodring` process, `db migrate-to`, `corrections export`, the load benchmark's report), and the password
appears in none. A password given on the command line is refused with one line that says where the URL goes."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import BotConfig, ConfigError
from bot.store import StoreError, open_store, redact_url
from bot.store.redact import has_secret, redact_urls
from moodring.cli import main

REPO = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
SECRET = "hunter2-secret"


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released), so a connection is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PORT = closed_port()
SECRET_URLS = {
    "userinfo": f"postgresql://bot:{SECRET}@127.0.0.1:{PORT}/moodring",
    "password query": f"postgresql://bot@127.0.0.1:{PORT}/moodring?password={SECRET}",
    "sslpassword query": f"postgresql://bot@127.0.0.1:{PORT}/moodring?sslmode=disable&sslpassword={SECRET}",
    "everywhere": f"postgres://bot:{SECRET}@127.0.0.1:{PORT}/moodring?PASSWORD={SECRET}&sslpassword={SECRET}",
    "encoded key": f"postgresql://bot@127.0.0.1:{PORT}/moodring?pass%77ord={SECRET}",
    "several hosts": f"postgresql://bot:{SECRET}@127.0.0.1:{PORT},localhost:{PORT}/moodring",
}
positions = pytest.mark.parametrize("url", SECRET_URLS.values(), ids=SECRET_URLS.keys())


@positions
def test_redaction_hides_the_password_wherever_the_url_holds_it(url: str) -> None:
    shown = redact_url(url)
    assert SECRET not in shown and "***" in shown and "127.0.0.1" in shown
    assert has_secret(url) and not has_secret(shown)
    in_text = redact_urls(f"connecting to {url}: refused ('{url}')")
    assert SECRET not in in_text and in_text.count("127.0.0.1") == 2
    without = f"postgresql://bot@127.0.0.1:{PORT}/moodring?sslmode=require&passfile=/run/pgpass"
    assert redact_url(without) == without and not has_secret(without)


@positions
def test_the_settings_never_show_it(url: str) -> None:
    settings = {"MOODRING_DATABASE": url, "MOODRING_MEMBER_KEY_FILE": "/etc/moodring/member.key"}
    try:
        shown = repr(BotConfig.from_env(settings, require_token=False))
    except ConfigError as error:  # several hosts: refused, and the refusal quotes the URL redacted
        shown = str(error)
    assert SECRET not in shown and "127.0.0.1" in shown
    with pytest.raises(ConfigError) as refused:  # a URL of another kind: its error quotes it redacted
        BotConfig.from_env({**settings, "MOODRING_DATABASE": url.replace("postgres", "mysql", 1)}, require_token=False)
    assert SECRET not in str(refused.value) and "127.0.0.1" in str(refused.value)


@positions
async def test_a_store_error_never_shows_it(url: str) -> None:
    with pytest.raises(StoreError) as error:
        await open_store(url, connect_timeout=5)
    assert "127.0.0.1" in str(error.value) and SECRET not in str(error.value)
    assert error.value.__cause__ is None or SECRET not in str(error.value.__cause__)


LOGGING_CHILD = """
import logging, sys
import bot.cli
from moodring.cli import main

url = sys.argv[1]

def loud(args):
    log = logging.getLogger("asyncpg.pool")
    log.warning("connection to %s lost", url)
    try:
        raise ConnectionError(f"cannot reach {url}")
    except ConnectionError:
        log.exception("giving up on %r", {"database": url})
    return 0

bot.cli.sync_commands = loud  # registered by name when the parser is built
sys.exit(main(["sync-commands"]))
"""


def test_no_log_line_of_a_moodring_process_shows_it() -> None:
    url = SECRET_URLS["everywhere"]
    result = subprocess.run(
        [sys.executable, "-c", LOGGING_CHILD, url], capture_output=True, text=True, env=CHILD_ENV, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "connection to postgres://bot:***@127.0.0.1" in result.stderr and "Traceback" in result.stderr
    assert "ConnectionError: cannot reach postgres://bot:***@" in result.stderr
    assert SECRET not in result.stdout + result.stderr


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    path = tmp_path / "bot.db"

    async def create() -> None:
        async with await open_store(path):
            pass

    asyncio.run(create())
    return path


@positions
def test_db_migrate_to_refuses_a_password_on_argv_and_never_prints_one(
    url: str, sqlite_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MOODRING_TARGET_DATABASE", raising=False)
    assert main(["db", "migrate-to", url, "--database", str(sqlite_file)]) == 2
    said = capsys.readouterr()
    assert "holds a password" in said.err and "MOODRING_TARGET_DATABASE" in said.err
    assert len(said.err.strip().splitlines()) == 1 and SECRET not in said.out + said.err

    monkeypatch.setenv("MOODRING_DATABASE", url)  # the source must be a SQLite file: the refusal quotes it redacted
    assert main(["db", "migrate-to", f"postgresql://bot@127.0.0.1:{PORT}/moodring"]) == 2
    said = capsys.readouterr()
    assert "no such SQLite file" in said.err or "MOODRING_DATABASE" in said.err, said.err
    assert len(said.err.strip().splitlines()) == 1 and SECRET not in said.out + said.err

    monkeypatch.setenv("MOODRING_TARGET_DATABASE", url)  # from the environment: used, and its errors redacted
    assert main(["db", "migrate-to", "--database", str(sqlite_file)]) == 2
    said = capsys.readouterr()
    assert "cannot connect to PostgreSQL at" in said.err, said.err
    assert len(said.err.strip().splitlines()) == 1 and SECRET not in said.out + said.err


@positions
def test_corrections_export_refuses_a_password_on_argv_and_never_prints_one(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["--out", str(tmp_path / "export"), "--model", str(tmp_path)]
    assert main(["corrections", "export", "--database", url, *out]) == 2
    said = capsys.readouterr()
    assert "holds a password" in said.err and "MOODRING_DATABASE" in said.err
    assert len(said.err.strip().splitlines()) == 1 and SECRET not in said.out + said.err

    monkeypatch.setenv("MOODRING_DATABASE", url)  # the bot's own setting: used (here without a model: refused)
    assert main(["corrections", "export", *out]) == 2
    said = capsys.readouterr()
    assert said.err.startswith("moodring corrections export: ") and len(said.err.strip().splitlines()) == 1
    assert SECRET not in said.out + said.err and not (tmp_path / "export").exists()


@positions
def test_the_load_benchmarks_report_never_shows_it(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("bot_load", REPO / "benchmarks" / "bot_load.py")
    bot_load = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bot_load", bot_load)  # its dataclasses look their module up there
    spec.loader.exec_module(bot_load)
    monkeypatch.setattr(sys, "argv", ["bot_load.py", "--database", url, f"--database={url}"])
    command = bot_load.recorded_command()
    environment = bot_load.recorded_environment({"MOODRING_DATABASE": url, "MOODRING_BATCH_SIZE": "8", "HOME": "/x"})
    assert SECRET not in command and command.count("***") >= 2
    assert environment[0] == "MOODRING_BATCH_SIZE=8" and environment[1].startswith("MOODRING_DATABASE=postgres")
    assert len(environment) == 2 and SECRET not in "".join(environment)
