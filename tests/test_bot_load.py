"""benchmarks/bot_load.py run small: `--processes 2` on one PostgreSQL database (both bot processes analyse their
shard's messages, the accounting adds up across them, no process left behind), and refused with SQLite."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from postgres_fixtures import PASSWORD
from process_guard import process_alive, wait_until_gone

REPO = Path(__file__).resolve().parents[1]
BOT_LOAD = REPO / "benchmarks" / "bot_load.py"


def script_environment() -> dict[str, str]:
    """This checkout's packages (the bot, the `sandbox` stand-in) importable, one thread each."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_bot_load(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """The script as a user runs it."""
    return subprocess.run(
        [sys.executable, str(BOT_LOAD), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=script_environment(),
        cwd=REPO,
    )


def children_of(pid: int) -> dict[int, str]:
    """The live processes whose parent is `pid`: their command lines."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def read_until(stream: Any, needle: str, timeout: float) -> str:
    """What `stream` (a text pipe) says up to and including the line with `needle`; TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    said = ""
    while needle not in said:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            raise TimeoutError(f"{needle!r} not seen within {timeout} s; saw: {said[-2000:]}")
        line = stream.readline()
        if not line:
            raise AssertionError(f"the script ended before {needle!r}: {said[-2000:]}")
        said += line
    return said


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (("--processes", "2"), "postgresql://"),  # SQLite: the default database
        (("--processes", "2", "--database", str(Path("bot.sqlite3"))), "postgresql://"),
        # A shard without a channel would get no load (nothing connects: the refusal comes first).
        (("--processes", "3", "--channels", "2", "--database", "postgresql://u:p@127.0.0.1:9/none"), "--channels"),
    ],
)
def test_processes_that_cannot_run_are_refused_with_one_line_before_anything_starts(
    tmp_path: Path, options: tuple[str, ...], says: str
) -> None:
    out = tmp_path / "load.json"
    result = run_bot_load(*options, "--json", str(out), timeout=60)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"--processes {options[1]}" in result.stderr and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not out.exists()


def test_two_bot_processes_on_postgresql_each_analyse_their_shard_and_every_message_is_accounted_for(
    tmp_path: Path, tiny_model_dir: Path, goemotions_dir: Path, postgres_url: str
) -> None:
    out = tmp_path / "load.json"
    result = run_bot_load(
        "--processes", "2", "--database", postgres_url, "--model", str(tiny_model_dir),
        "--data-dir", str(goemotions_dir), "--channels", "2", "--rates", "10", "--seconds-per-step", "2",
        "--max-messages", "16", "--emotion-every", "0.5", "--threads", "1", "--json", str(out),
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:] + result.stdout[-4000:]
    report = json.loads(out.read_text())
    assert report["processes"] == 2 and report["problems"] == [] and report["summary"]["ok"]
    bots = report["bot_processes"]
    assert [b["shard"] for b in bots] == [0, 1] and bots[0]["pid"] != bots[1]["pid"]
    (step,) = report["steps"]
    assert step["problems"] == [] and step["drained"]
    sent, analysed = step["sent"], step["analysed"]
    assert sent > 0 and sent == step["outcomes"]["messages_seen"] == analysed + sum(step["skipped"].values())
    assert analysed == step["store_recorded"] == step["store_committed"] == report["store_messages"]
    shares = step["processes"]
    assert [s["shard"] for s in shares] == [0, 1]
    # The messages alternate between the shards: each process saw half of them, and analysed some.
    assert sorted(s["messages_seen"] for s in shares) == [sent // 2, sent - sent // 2]
    assert all(s["analysed"] > 0 for s in shares) and sum(s["analysed"] for s in shares) == analysed
    assert all(s["cpu_share"] > 0 and s["rss_mb"] > 0 for s in shares)
    assert step["emotion"]["answered"] > 0
    assert report["children_left"] == []
    for pid in [b["pid"] for b in bots[1:]] + [report["standin_pid"]]:
        assert not process_alive(pid), f"pid {pid} is still running"
    assert "**2 bot processes**" in result.stdout and "shard 0 / shard 1" in result.stdout, result.stdout
    assert PASSWORD not in result.stdout and PASSWORD not in out.read_text()


def test_one_process_on_sqlite_is_the_run_it_was(tmp_path: Path, tiny_model_dir: Path, goemotions_dir: Path) -> None:
    out = tmp_path / "load.json"
    result = run_bot_load(
        "--model", str(tiny_model_dir), "--data-dir", str(goemotions_dir), "--channels", "2", "--rates", "10",
        "--seconds-per-step", "2", "--max-messages", "10", "--emotion-every", "0.5", "--threads", "1",
        "--json", str(out), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:] + result.stdout[-4000:]
    report = json.loads(out.read_text())
    assert report["processes"] == 1 and report["problems"] == [] and report["summary"]["ok"]
    (step,) = report["steps"]
    assert step["sent"] == step["analysed"] == step["store_recorded"] == report["store_messages"] > 0
    (process,) = step["processes"]
    assert process["pid"] == report["bot_processes"][0]["pid"] and process["analysed"] == step["analysed"]
    assert step["bot_cpu_share"] == process["cpu_share"] and step["rss_mb"] == process["rss_mb"]
    assert "RSS, CPU and loop lag below are the bot's process only." in result.stdout
    assert "bot processes" not in result.stdout and " / " not in result.stdout.split("|---")[-1].split("Summary")[0]


@pytest.mark.timing  # two bot processes under load on 2 cores: beside the other worker, it once ended 0, not 130
def test_ctrl_c_during_a_two_process_run_stops_every_process_with_one_line(
    tiny_model_dir: Path, goemotions_dir: Path, postgres_url: str
) -> None:
    script = subprocess.Popen(
        [
            sys.executable, str(BOT_LOAD), "--processes", "2", "--database", postgres_url,
            "--model", str(tiny_model_dir), "--data-dir", str(goemotions_dir), "--channels", "2", "--rates", "2",
            "--seconds-per-step", "120", "--max-messages", "1000", "--emotion-every", "1", "--threads", "1",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=script_environment(), cwd=REPO,
        start_new_session=True,  # its own process group, which Ctrl-C signals as a whole
    )  # fmt: skip
    try:
        read_until(script.stderr, "step 1/1", timeout=300)  # barrier: every process is up and the load is on
        children = children_of(script.pid)
        assert sorted("--bot-child 1" in c or "--standin-child" in c for c in children.values()) == [True, True]
        os.killpg(script.pid, signal.SIGINT)
        assert script.wait(timeout=120) == 130
        said = script.stderr.read()
        assert "Traceback" not in said and "ERROR" not in said, said
        assert said.strip().splitlines()[-1].startswith("bot_load: interrupted"), said
        for pid in children:
            assert wait_until_gone(pid, 10), f"{children[pid]} (pid {pid}) is still running"
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
            script.wait()
        script.stdout.close()
        script.stderr.close()


def test_every_way_on_message_ends_counts_as_an_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drain waits until the outcomes add up to the messages sent: a counter `on_message` ends with that the
    script does not count as an outcome would leave it waiting, then report a mismatch."""
    import importlib.util
    import re

    spec = importlib.util.spec_from_file_location("bot_load", BOT_LOAD)
    bot_load = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bot_load", bot_load)  # its dataclasses look their module up there
    spec.loader.exec_module(bot_load)
    source = (REPO / "bot" / "cogs" / "emotions.py").read_text()
    body = source[source.index("async def on_message") : source.index('counters["analyzed"] += 1')]
    endings = set(re.findall(r'counters\["(\w+)"\] \+= 1\n\s+(?:await [^\n]+\n\s+)?return', body)) | {"analyzed"}
    assert {"skipped_busy", "analysis_failed", "reply_mentions"} <= endings  # the pattern finds them
    assert [name for name in sorted(endings) if not bot_load.is_outcome(name)] == []
