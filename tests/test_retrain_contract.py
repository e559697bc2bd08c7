"""The files that cross the process boundary between `moodring train`/`evaluate` and the bot's retrainer.

Both sides import model/training_contract.py, and the bot never imports the training code: the retrainer reads
`progress.jsonl` (written through the contract's `ProgressWriter` by `training.callbacks.ProgressLog` during a
real Tez run) and `eval-dev.json` (written by `moodring evaluate`). These tests feed the real files of a real
tiny training and a real `moodring evaluate` child through the contract's readers into the retrainer's status and
its gate, so a renamed file or key fails here instead of in a slow retrain test or in Discord.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from bot.learning.retrain import RetrainStatus, should_swap
from model.training_contract import ProgressReader, read_dev_scores, reusable_dev_f1


def test_the_progress_reader_understands_a_real_training_log(tiny_model_dir: Path) -> None:
    progress = tiny_model_dir.parent / "run" / "progress.jsonl"  # the fixture's --work-dir
    history = json.loads((tiny_model_dir / "moodring.json").read_text())["dev_metrics"]["history"]
    status = RetrainStatus()

    status.follow(ProgressReader(progress).read())

    assert status.phase == "training"
    assert (status.epoch, status.epochs) == (1, 1)
    assert status.step == status.total_steps > 0 and status.eta_s == 0.0
    assert status.dev_f1 == [epoch["macro_f1"] for epoch in history] and len(status.dev_f1) == 1
    assert status.community_f1 == []  # trained without --extra-data


def write_extra_data(directory: Path, labels: list[str]) -> Path:
    """A community-corrections directory in GoEmotions' layout, as `moodring corrections export` writes it."""
    directory.mkdir()
    (directory / "emotions.txt").write_text("\n".join(labels) + "\n")
    (directory / "train.tsv").write_text("")
    rows = ["what a lovely surprise\t26\tc1", "thank you so much\t15\tc2", "this is awful\t2,3\tc3"]
    (directory / "dev.tsv").write_text("\n".join(rows) + "\n")
    return directory


def evaluate_child(model: Path, data_dir: Path, *flags: str) -> dict:
    """`moodring evaluate --split dev --json` in a child process, as the retrainer runs it; its printed report."""
    command = [sys.executable, "-m", "moodring", "evaluate", "--model", str(model), "--split", "dev", "--json"]
    result = subprocess.run(
        [*command, "--data-dir", str(data_dir), "--backend", "torch", *flags],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_gate_reads_what_a_real_evaluate_child_writes(
    tmp_path: Path, tiny_model_dir: Path, goemotions_dir: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model, ignore=shutil.ignore_patterns("eval-*"))
    labels = json.loads((model / "moodring.json").read_text())["labels"]
    extra = write_extra_data(tmp_path / "corrections", labels)

    report = evaluate_child(model, goemotions_dir, "--extra-data", str(extra))

    macro_f1, community_micro_f1 = read_dev_scores(model / "eval-dev.json")
    assert macro_f1 == report["macro_f1"] and 0.0 <= macro_f1 <= 1.0
    assert community_micro_f1 == report["community_dev"]["micro_f1"] and report["community_dev"]["rows"] == 3
    # The gate takes exactly these numbers; a model scored against itself is never worse.
    assert should_swap(macro_f1, macro_f1, 0.0, candidate_community=community_micro_f1,
                       current_community=community_micro_f1, community_rows=3, min_community_rows=1)  # fmt: skip


def test_a_dev_report_is_reused_only_for_the_files_it_was_computed_from(
    tmp_path: Path, tiny_model_dir: Path, goemotions_dir: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model, ignore=shutil.ignore_patterns("eval-*"))
    report = evaluate_child(model, goemotions_dir)

    assert reusable_dev_f1(model / "eval-dev.json", str(goemotions_dir), "torch") == report["macro_f1"]
    assert reusable_dev_f1(model / "eval-dev.json", str(goemotions_dir), "onnx-int8") is None
    (model / "moodring.json").write_text((model / "moodring.json").read_text() + " ")  # the model changed
    assert reusable_dev_f1(model / "eval-dev.json", str(goemotions_dir), "torch") is None
