"""Calibrated probabilities: per-label maps from a raw sigmoid score to how often that label is true at that score.

The asymmetric loss the model trains with pushes sigmoid scores up (the dev-tuned thresholds sit between 0.42 and
0.78), so a raw score of 0.78 is no 78% chance. A `Calibration` maps each label's raw scores to probabilities fitted
on dev with one of three methods:

- `temperature`: p = sigmoid(logit(s) / T), one T per label (Guo et al. 2017, per label);
- `platt`: p = sigmoid(a * logit(s) + b), one (a, b) per label (Platt 1999);
- `isotonic`: a non-decreasing piecewise-linear map through at most MAX_BREAKPOINTS (score, probability)
  breakpoints per label, fitted with pool-adjacent-violators (Zadrozny and Elkan 2002); flat beyond its ends.

`choose_calibration` picks the method by cross-fit on dev: folds drawn as the thresholds' cross-fit draws them, each
method fitted on four fifths and scored on the held-out fifth, pooled over all rows and labels; the lowest mean
log-loss wins (Brier is recorded beside it), and the winner is refitted on all of dev. Every map is non-decreasing
in the raw score, so within a label a higher score never shows a lower probability; the decision rule stays on the
raw score and its thresholds. Pure numpy, so the bot, the CLI and training all load it cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

METHODS = ("temperature", "platt", "isotonic")
MAX_BREAKPOINTS = 64  # per label, for the isotonic method: keeps moodring.json small
CROSS_FIT_FOLDS = 5
ECE_BINS = 15
#: Raw scores are clipped this far inside (0, 1) before the logit (float32 sigmoids reach 0 and 1 exactly), and
#: probabilities this far inside it before a log-loss.
_EDGE = 1e-7
_DECIMALS = 6  # fitted parameters are rounded to this many decimals, as stored


def _logit(scores: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(scores, dtype=np.float64), _EDGE, 1 - _EDGE)
    return np.log(clipped) - np.log1p(-clipped)


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * values))  # no overflow for large |values|


def log_loss(truth: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean binary cross-entropy over every entry."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _EDGE, 1 - _EDGE)
    y = np.asarray(truth, dtype=bool)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def brier_score(truth: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean squared difference between probability and outcome over every entry."""
    return float(np.mean((np.asarray(probabilities, dtype=np.float64) - np.asarray(truth, dtype=np.float64)) ** 2))


def _binned(truth: np.ndarray, probabilities: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin on [0, 1] (the last one closed): entries, sum of probabilities, sum of outcomes."""
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(truth, dtype=np.float64).ravel()
    which = np.minimum((p * bins).astype(int), bins - 1)
    return (
        np.bincount(which, minlength=bins),
        np.bincount(which, weights=p, minlength=bins),
        np.bincount(which, weights=y, minlength=bins),
    )


def expected_calibration_error(truth: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over every entry: `bins` equal-width bins on [0, 1], each bin's |mean probability - share of positives|
    weighted by its share of the entries. For a `[rows, labels]` matrix that is every label-row pair pooled; pass
    one column for one label's ECE."""
    counts, sums_p, sums_y = _binned(truth, probabilities, bins)
    return float(np.abs(sums_p - sums_y).sum() / max(counts.sum(), 1))


def reliability_bins(truth: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> dict[str, list]:
    """What a reliability diagram plots, per bin of `expected_calibration_error`: entries, mean probability and
    share of positives (None for an empty bin)."""
    counts, sums_p, sums_y = _binned(truth, probabilities, bins)
    return {
        "edges": [i / bins for i in range(bins + 1)],
        "count": counts.tolist(),
        "mean_probability": [float(s / c) if c else None for s, c in zip(sums_p, counts, strict=True)],
        "positive_rate": [float(s / c) if c else None for s, c in zip(sums_y, counts, strict=True)],
    }


def _smoothed_targets(truth: np.ndarray) -> np.ndarray:
    """Platt's targets: (N+ + 1) / (N+ + 2) for positives, 1 / (N- + 2) for negatives. They keep the fit finite for a
    label whose dev rows are all negative (or that the scores separate perfectly)."""
    y = np.asarray(truth, dtype=bool)
    positives = int(y.sum())
    return np.where(y, (positives + 1) / (positives + 2), 1 / (len(y) - positives + 2))


def _fit_logistic(design: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Coefficients of sigmoid(design @ coef) that minimise the cross-entropy to `targets` (Newton's method with
    step halving, started from a slope of 1 and no bias)."""

    def loss(coef: np.ndarray) -> float:
        u = design @ coef
        return float(np.sum(np.logaddexp(0.0, u) - targets * u))

    coef = np.zeros(design.shape[1])
    coef[0] = 1.0
    current = loss(coef)
    for _ in range(100):
        p = _sigmoid(design @ coef)
        gradient = design.T @ (p - targets)
        hessian = (design * (p * (1 - p))[:, None]).T @ design + 1e-9 * np.eye(design.shape[1])
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while size > 1e-8:
            trial = coef - size * step
            value = loss(trial)
            if value <= current:
                break
            size /= 2
        else:
            break
        coef, improvement, current = trial, current - value, value
        if improvement < 1e-12 * max(1.0, abs(current)):
            break
    return coef


def _fit_temperature(truth: np.ndarray, scores: np.ndarray) -> list[float]:
    """[T]: the slope is 1/T; a slope that is not positive (scores that do not rank the label) gives T = 1e3."""
    (slope,) = _fit_logistic(_logit(scores)[:, None], _smoothed_targets(truth))
    return [1e3 if slope <= 1e-3 else round(float(1.0 / slope), _DECIMALS)]


def _fit_platt(truth: np.ndarray, scores: np.ndarray) -> list[float]:
    """[a, b], with a >= 0 so that the map never decreases (a negative slope becomes a = 0, b the base rate)."""
    targets = _smoothed_targets(truth)
    z = _logit(scores)
    slope, bias = _fit_logistic(np.stack([z, np.ones_like(z)], axis=1), targets)
    if slope < 0:
        slope, bias = 0.0, float(_logit(np.array([targets.mean()]))[0])
    return [round(float(slope), _DECIMALS), round(float(bias), _DECIMALS)]


def _pool_adjacent_violators(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to `values` in weighted least squares."""
    means: list[float] = []
    masses: list[float] = []
    lengths: list[int] = []
    for value, weight in zip(values.tolist(), weights.tolist(), strict=True):
        means.append(value)
        masses.append(weight)
        lengths.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            mass = masses[-2] + masses[-1]
            means[-2] = (means[-2] * masses[-2] + means[-1] * masses[-1]) / mass
            masses[-2] = mass
            lengths[-2] += lengths[-1]
            del means[-1], masses[-1], lengths[-1]
    return np.repeat(means, lengths)


def _fit_isotonic(truth: np.ndarray, scores: np.ndarray) -> list[list[float]]:
    """[x, y]: breakpoints of the isotonic fit of truth on score (ties pooled first), thinned to MAX_BREAKPOINTS
    points evenly spaced in rank; interpolated linearly between them. Any subsequence of a non-decreasing fit is
    non-decreasing, so thinning keeps the map monotone."""
    x, inverse, counts = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True, return_counts=True)
    positives = np.bincount(inverse, weights=np.asarray(truth, dtype=np.float64), minlength=len(x))
    y = _pool_adjacent_violators(positives / counts, counts.astype(np.float64))
    if len(x) > MAX_BREAKPOINTS:
        ranks = np.cumsum(counts) - counts / 2  # each unique score's mid-rank
        wanted = np.linspace(ranks[0], ranks[-1], MAX_BREAKPOINTS)
        keep = np.unique(np.clip(np.searchsorted(ranks, wanted), 0, len(x) - 1))
        x, y = x[keep], y[keep]
    x, y = np.round(x, _DECIMALS), np.round(y, _DECIMALS)
    strictly = np.concatenate([[True], np.diff(x) > 0])  # rounding may merge two neighbours
    return [x[strictly].tolist(), y[strictly].tolist()]


_FITTERS: dict[str, Callable[[np.ndarray, np.ndarray], list]] = {
    "temperature": _fit_temperature,
    "platt": _fit_platt,
    "isotonic": _fit_isotonic,
}


def _apply_one(method: str, parameters: list, scores: np.ndarray) -> np.ndarray:
    if method == "temperature":
        return _sigmoid(_logit(scores) / parameters[0])
    if method == "platt":
        return _sigmoid(parameters[0] * _logit(scores) + parameters[1])
    return np.interp(np.asarray(scores, dtype=np.float64), parameters[0], parameters[1])


@dataclass(frozen=True)
class Calibration:
    """One method's per-label maps, as fitted on dev, and how the cross-fit that chose it scored every method.

    `parameters[j]` is label j's map: [T] (temperature), [a, b] (platt) or [x breakpoints, y values] (isotonic).
    Stored in `moodring.json` as `to_dict()`; `from_dict` checks a stored one against the model's label count.
    """

    method: str
    parameters: list[list]
    rows: int = 0
    seed: int = 0
    cross_fit: dict[str, dict[str, float]] = field(default_factory=dict)

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for raw scores `[rows, labels]` (or one row `[labels]`), as float32."""
        scores = np.asarray(scores)
        columns = scores.reshape(-1, len(self.parameters))
        probabilities = np.stack(
            [_apply_one(self.method, parameters, columns[:, j]) for j, parameters in enumerate(self.parameters)],
            axis=1,
        )
        return probabilities.reshape(scores.shape).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "parameters": self.parameters,
            "rows": self.rows,
            "seed": self.seed,
            "cross_fit": self.cross_fit,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any], num_labels: int) -> Calibration:
        """A stored calibration; ValueError unless it is one of METHODS with a valid, monotone map per label."""
        method, parameters = record.get("method"), record.get("parameters")
        if method not in METHODS:
            raise ValueError(f"calibration method {method!r} is not one of {', '.join(METHODS)}")
        if not isinstance(parameters, list) or len(parameters) != num_labels:
            raise ValueError(f"calibration needs one map per label ({num_labels})")
        for j, label_map in enumerate(parameters):
            _check_map(method, label_map, j)
        return cls(
            method=method,
            parameters=parameters,
            rows=int(record.get("rows", 0)),
            seed=int(record.get("seed", 0)),
            cross_fit=dict(record.get("cross_fit", {})),
        )


def _check_map(method: str, label_map: Any, index: int) -> None:
    where = f"calibration ({method}) of label {index}"

    def finite(values: Any, count: int | None = None) -> bool:
        return (
            isinstance(values, list)
            and (count is None or len(values) == count)
            and all(isinstance(v, int | float) and math.isfinite(v) for v in values)
        )

    if method == "temperature" and not (finite(label_map, 1) and label_map[0] > 0):
        raise ValueError(f"{where}: needs [T] with T > 0, got {label_map!r}")
    if method == "platt" and not (finite(label_map, 2) and label_map[0] >= 0):
        raise ValueError(f"{where}: needs [a, b] with a >= 0, got {label_map!r}")
    if method == "isotonic":
        if not (isinstance(label_map, list) and len(label_map) == 2 and finite(label_map[0]) and finite(label_map[1])):
            raise ValueError(f"{where}: needs [x breakpoints, y values]")
        x, y = np.asarray(label_map[0]), np.asarray(label_map[1])
        if not 1 <= len(x) == len(y) <= MAX_BREAKPOINTS:
            raise ValueError(f"{where}: needs 1 to {MAX_BREAKPOINTS} breakpoints, as many x as y")
        if (np.diff(x) <= 0).any() or (np.diff(y) < 0).any() or y.min() < 0 or y.max() > 1:
            raise ValueError(f"{where}: x must increase and y in [0, 1] must never decrease")


def fit_calibration(method: str, truth: np.ndarray, scores: np.ndarray, seed: int = 0) -> Calibration:
    """`method`'s maps fitted per label on `truth` (boolean `[rows, labels]`) and raw `scores` of the same shape."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose from {METHODS}")
    truth = np.asarray(truth, dtype=bool)
    parameters = [_FITTERS[method](truth[:, j], scores[:, j]) for j in range(truth.shape[1])]
    return Calibration(method=method, parameters=parameters, rows=len(truth), seed=seed)


def choose_calibration(truth: np.ndarray, scores: np.ndarray, seed: int, folds: int = CROSS_FIT_FOLDS) -> Calibration:
    """The method of METHODS with the lowest cross-fit log-loss, refitted on all rows.

    The folds are drawn as `training.metrics.cross_fit_macro_f1` draws them: a permutation of the rows by `seed`
    (the training seed, at export), split into `folds` parts. Each held-out part is calibrated by maps fitted on
    the others; the held-out probabilities of all parts are pooled and scored (log-loss and Brier over every
    label-row pair). `cross_fit` records those figures for every method and for the raw scores.
    """
    truth = np.asarray(truth, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.random.default_rng(seed).permutation(len(truth))
    parts = np.array_split(order, folds)
    figures = {"raw": {"log_loss": log_loss(truth, scores), "brier": brier_score(truth, scores)}}
    for method in METHODS:
        held_out = np.zeros_like(scores)
        for part in parts:
            fitted = np.setdiff1d(order, part)
            held_out[part] = fit_calibration(method, truth[fitted], scores[fitted]).apply(scores[part])
        figures[method] = {"log_loss": log_loss(truth, held_out), "brier": brier_score(truth, held_out)}
    best = min(METHODS, key=lambda method: figures[method]["log_loss"])
    chosen = fit_calibration(best, truth, scores, seed)
    rounded = {name: {k: round(v, _DECIMALS) for k, v in values.items()} for name, values in figures.items()}
    return Calibration(method=best, parameters=chosen.parameters, rows=len(truth), seed=seed, cross_fit=rounded)
