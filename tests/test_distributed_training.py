"""`accelerate launch` with 2 CPU processes (gloo) through the real Tez loop on the tiny SqueezeBERT.

Only the main process scores dev, writes progress.jsonl and exports: the test checks there is one export, with
its metrics, one `done` line, and that the launch leaves no process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent))


def group_is_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.skipif(ACCELERATE is None, reason="accelerate's launcher is installed with tez; reinstall the venv")
def test_two_processes_train_one_model(tmp_path: Path, tiny_backbone_dir: Path, goemotions_dir: Path) -> None:
    out, work = tmp_path / "model", tmp_path / "run"
    # `--multi_gpu` is accelerate's name for its torchrun launcher; without a GPU the processes meet over gloo.
    launch = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    train = ["-m", "moodring", "train", "--backbone", str(tiny_backbone_dir), "--data-dir", str(goemotions_dir)]
    train += ["--out", str(out), "--work-dir", str(work), "--epochs", "2", "--batch-size", "16"]
    train += ["--learning-rate", "1e-3", "--max-length", "32", "--train-limit", "256", "--dev-limit", "128"]
    child = subprocess.Popen(
        [*launch, *train, "--no-onnx"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        output, _ = child.communicate(timeout=600)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert child.returncode == 0, output[-3000:]
    assert group_is_gone(child.pid), "a training process outlived the launch"

    metadata = json.loads((out / "moodring.json").read_text())
    assert metadata["training_args"]["processes"] == 2
    assert [epoch["epoch"] for epoch in metadata["dev_metrics"]["history"]] == [1, 2]
    assert 0.0 <= metadata["dev_metrics"]["macro_f1"] <= 1.0
    events = [json.loads(line) for line in (work / "progress.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in events if e["event"] == "dev"] == [1, 2]  # one writer, not one per process
    assert sum(e["event"] == "done" for e in events) == 1
    steps = [e for e in events if e["event"] == "step"]
    # Each process takes every other batch of 16: 256 rows are 16 batches, 8 per process, per epoch.
    assert steps[-1]["step"] == steps[-1]["total_steps"] == 16
    assert "2 processes" in output
