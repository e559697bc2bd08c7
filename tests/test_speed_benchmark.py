"""The speed benchmark's CPU burner: started, running, bounded in time, and gone afterwards."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SPEED = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("speed_benchmark", SPEED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_burner_runs_during_the_block_and_is_gone_after(speed) -> None:
    with speed.busy_core(max_seconds=120) as pid:
        assert alive(pid)
        assert Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] in {"R", "S"}
    assert not alive(pid)


def test_burner_stops_by_itself_at_its_bound(speed) -> None:
    burner = subprocess.run([sys.executable, "-c", speed.BURNER, "0.2"], capture_output=True, text=True, timeout=60)
    assert burner.returncode == 0 and burner.stdout == "ready\n"
