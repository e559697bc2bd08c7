"""benchmarks/bot_load.py run small: `--processes 2` on one PostgreSQL database (both bot processes analyse their
shard's messages, the accounting adds up across them, no process left behind), and refused with SQLite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from postgres_fixtures import PASSWORD
from process_guard import process_alive

REPO = Path(__file__).resolve().parents[1]
BOT_LOAD = REPO / "benchmarks" / "bot_load.py"


def run_bot_load(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """The script as a user runs it, with this checkout's packages (the bot, the `sandbox` stand-in) importable."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, str(BOT_LOAD), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )


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
