"""benchmarks/ensemble.py: an ensemble is the mean of its members' scores, every row decided by dev-tuned thresholds."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from training.metrics import f1_scores, tune_thresholds

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def ensemble():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))  # it imports bot_load.py beside it, as a script does
        return importlib.import_module("ensemble")


def test_test_figures_use_thresholds_tuned_on_dev_only(ensemble) -> None:
    rng = np.random.default_rng(0)
    truth = {split: rng.random((200, 3)) < 0.3 for split in ("dev", "test")}
    scores = {split: np.clip(truth[split] * 0.4 + rng.random((200, 3)) * 0.6, 0, 1) for split in truth}
    figures = ensemble.figures(scores, truth)
    dev_thresholds = tune_thresholds(truth["dev"], scores["dev"])
    assert figures["test_macro_f1"] == pytest.approx(f1_scores(truth["test"], scores["test"] >= dev_thresholds).mean())
    test_tuned = f1_scores(truth["test"], scores["test"] >= tune_thresholds(truth["test"], scores["test"])).mean()
    assert figures["test_macro_f1"] < test_tuned  # tuning on test would have flattered it


def test_a_model_with_itself_is_an_ensemble_equal_to_the_model(
    ensemble, tiny_model_dir: Path, goemotions_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ensemble.json"
    argv = ["--model", str(tiny_model_dir), str(tiny_model_dir), "--student", str(tiny_model_dir)]
    assert ensemble.main([*argv, "--data-dir", str(goemotions_dir), "--json", str(out)]) == 0
    rows = list(json.loads(out.read_text())["rows"].values())
    assert len(rows) == 3  # the two members under one name, the ensemble, the student
    assert rows[0] == pytest.approx(rows[1]) and rows[1] == pytest.approx(rows[2])
