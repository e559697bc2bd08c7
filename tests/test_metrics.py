"""Metrics over whole splits and threshold tuning, on synthetic scores with known answers."""

from __future__ import annotations

import numpy as np

from training.metrics import (
    classification_report,
    cross_fit_macro_f1,
    f1_scores,
    group_matrix,
    tune_global_threshold,
    tune_thresholds,
)


def test_f1_and_report_known_values() -> None:
    truth = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=bool)
    predicted = np.array([[1, 1], [0, 1], [0, 0], [0, 0]], dtype=bool)
    # label 0: tp 1, fn 1 -> F1 2/3; label 1: tp 1, fp 1, fn 1 -> F1 1/2
    assert np.allclose(f1_scores(truth, predicted), [2 / 3, 1 / 2])
    report = classification_report(truth, predicted, ["a", "b"])
    assert np.isclose(report["macro_f1"], (2 / 3 + 1 / 2) / 2)
    assert np.isclose(report["micro_f1"], 2 * 2 / (2 * 2 + 1 + 2))
    assert report["per_label"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}


def test_label_without_positives_scores_zero() -> None:
    truth = np.zeros((3, 1), dtype=bool)
    assert f1_scores(truth, np.zeros((3, 1), dtype=bool)).tolist() == [0.0]


def test_per_label_thresholds_recover_the_separating_value() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((2000, 3)) < 0.3
    # Each label's positives score above its own cut-off and negatives below it.
    cuts = np.array([0.2, 0.55, 0.8])
    below = rng.uniform(0.0, 1.0, truth.shape) * cuts
    above = cuts + rng.uniform(0.01, 1.0, truth.shape) * (1 - cuts)
    scores = np.where(truth, above, below)
    thresholds = tune_thresholds(truth, scores)
    assert np.all(thresholds >= cuts - 0.01) and np.all(thresholds <= cuts + 0.02)
    assert np.allclose(f1_scores(truth, scores >= thresholds), 1.0)


def test_global_threshold_maximises_macro_f1() -> None:
    truth = np.array([[1, 0], [0, 1], [0, 0], [1, 1]], dtype=bool)
    scores = np.array([[0.7, 0.1], [0.2, 0.65], [0.3, 0.2], [0.9, 0.8]])
    threshold = tune_global_threshold(truth, scores)
    assert 0.3 < threshold <= 0.65
    assert f1_scores(truth, scores >= threshold).mean() == 1.0


def test_group_matrix_collapses_and_keeps_ungrouped_labels() -> None:
    labels = ["joy", "love", "anger", "neutral"]
    matrix = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=bool)
    grouped, names = group_matrix(matrix, labels, {"positive": ["joy", "love"], "negative": ["anger"]})
    assert names == ["positive", "negative", "neutral"]
    assert grouped.tolist() == [[True, False, False], [True, True, False], [False, False, True]]


def test_cross_fit_scores_each_row_with_thresholds_tuned_elsewhere() -> None:
    """On pure noise, tuning on the scored rows flatters per-label thresholds; the cross-fit estimate does not."""
    rng = np.random.default_rng(1)
    truth = rng.random((400, 6)) < np.array([0.3, 0.2, 0.1, 0.05, 0.03, 0.02])
    noise = rng.random(truth.shape)
    in_sample = f1_scores(truth, noise >= tune_thresholds(truth, noise)).mean()
    assert cross_fit_macro_f1(truth, noise, "per_label") < in_sample - 0.02

    # Where each label has its own separating value, the cross-fit per-label rule finds it on the other folds.
    # Label j separates at 0.1 + 0.15 j, so no single threshold separates them all.
    separable = np.linspace(0.1, 0.85, 6) + np.where(truth, 0.05, -0.05) * noise
    assert cross_fit_macro_f1(truth, separable, "per_label") == 1.0
    assert cross_fit_macro_f1(truth, separable, "global") < 1.0
    assert cross_fit_macro_f1(truth, separable, "paper_0.3") == f1_scores(truth, separable >= 0.3).mean()
