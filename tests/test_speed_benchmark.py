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


def test_the_table_puts_the_served_backend_beside_both_int8_schemes(speed) -> None:
    rows = speed.backends(None, threads=1)
    assert {"torch fp32", "ONNX fp32 (served)", speed.INT8, "ONNX int8, one text per call"} <= set(rows)
    assert rows[speed.INT8].per_call == speed.REQUEST and rows["ONNX int8, one text per call"].per_call == 1


def test_batch_dependence_is_none_for_fp32_and_for_int8_one_text_per_call(speed, onnx_model_dir) -> None:
    from model import EmotionClassifier

    texts = [f"text number {i} {'and more ' * (i % 7)}" for i in range(2 * speed.REQUEST)]
    fp32 = EmotionClassifier.load(onnx_model_dir, backend="onnx", threads=1)
    assert speed.batch_dependence(fp32, texts, batches=2) < 1e-5
    int8 = EmotionClassifier.load(onnx_model_dir, backend="onnx-int8", threads=1)
    assert speed.batch_dependence(int8, texts, batches=2, per_call=1) == 0.0
    assert speed.batch_dependence(int8, texts, batches=2) > 0.0  # dynamic scales over the request: not 0
