"""The issue-24 benchmarks' own logic: the emoji rows' bootstrap interval, and TweetEval's conversion and halves."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def scripts() -> tuple:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))  # out_of_domain.py imports emoji_rows.py beside it, as a script does
        return importlib.import_module("emoji_rows"), importlib.import_module("out_of_domain")


def test_bootstrap_interval_is_seeded_and_holds_the_figure(scripts) -> None:
    emoji_rows, _ = scripts
    truth = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]] * 5, dtype=bool)
    perfect = emoji_rows.bootstrap_micro_f1(truth, truth, resamples=200, seed=0)
    assert perfect["micro_f1"] == 1.0 and perfect["interval_95"] == [1.0, 1.0]
    predicted = truth.copy()
    predicted[:4] = [[1, 1, 0], [0, 0, 0], [1, 1, 0], [0, 0, 1]]  # one false positive, one false negative
    tp = int((truth & predicted).sum())
    figures = emoji_rows.bootstrap_micro_f1(truth, predicted, resamples=500, seed=3)
    assert figures["micro_f1"] == pytest.approx(2 * tp / (2 * tp + 2))
    low, high = figures["interval_95"]
    assert low < figures["micro_f1"] < high <= 1.0
    assert emoji_rows.bootstrap_micro_f1(truth, predicted, resamples=500, seed=3) == figures
    assert emoji_rows.bootstrap_micro_f1(truth, predicted, resamples=500, seed=4) != figures
    assert emoji_rows.carries_emoji("ok 😂") and not emoji_rows.carries_emoji("ok :) #1")


def test_tweeteval_converts_into_two_fixed_halves_that_evaluate_reads(scripts, tmp_path: Path) -> None:
    from training.labelled_data import read_label_map, read_labelled_rows

    _, out_of_domain = scripts
    texts = [f"tweet {i} &amp; more" for i in range(9)] + ['"quoted" 😡 at the start', "tab-free, comma, text 🙂"]
    labels = [str(i % 4) for i in range(len(texts))]
    (tmp_path / "mapping.txt").write_text("0\tanger\n1\tjoy\n2\toptimism\n3\tsadness")
    (tmp_path / "test_text.txt").write_text("".join(f"{t} \n" for t in texts), encoding="utf-8")
    (tmp_path / "test_labels.txt").write_text("".join(f"{label}\n" for label in labels))
    rows = out_of_domain.read_tweeteval(tmp_path)
    assert rows[0] == ("tweet 0 & more", "anger") and rows[9] == ('"quoted" 😡 at the start', "joy")

    halves = out_of_domain.halves(rows)
    assert sorted(halves["choosing"] + halves["reporting"]) == list(range(len(rows)))
    assert len(halves["choosing"]) == 6 and len(halves["reporting"]) == 5
    reordered = rows[::-1]
    assert {rows[i][0] for i in halves["reporting"]} == {
        reordered[i][0] for i in out_of_domain.halves(reordered)["reporting"]
    }

    path = out_of_domain.write_half(tmp_path / "reporting.tsv", rows, halves["reporting"])
    label_map = read_label_map(
        out_of_domain.MAPS["goemotions"], {"goemotions": ["anger", "joy", "optimism", "sadness"]}
    )
    read = read_labelled_rows(path, label_map)
    assert read.texts == [rows[i][0] for i in halves["reporting"]]
    assert read.labels == [(rows[i][1],) for i in halves["reporting"]]
    ekman = json.loads(out_of_domain.MAPS["ekman"].read_text())["ekman"]
    assert ekman == {"anger": "anger", "joy": "joy", "optimism": "joy", "sadness": "sadness"}
