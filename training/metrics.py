"""Multi-label metrics and threshold tuning, computed over a whole split at once (never per batch)."""

from __future__ import annotations

import numpy as np

THRESHOLD_GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)
PAPER_THRESHOLD = 0.3  # the GoEmotions paper's fixed decision threshold


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=float), where=denominator > 0)


def _counts(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    truth, predicted = truth.astype(bool), predicted.astype(bool)
    tp = (truth & predicted).sum(axis=0).astype(float)
    fp = (~truth & predicted).sum(axis=0).astype(float)
    fn = (truth & ~predicted).sum(axis=0).astype(float)
    return tp, fp, fn


def f1_scores(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per-column F1 of boolean matrices `[rows, columns]`; 0 where a column has no positives at all."""
    tp, fp, fn = _counts(truth, predicted)
    return _safe_divide(2 * tp, 2 * tp + fp + fn)


def classification_report(truth: np.ndarray, predicted: np.ndarray, names: list[str]) -> dict:
    """Macro and micro precision/recall/F1 plus per-column figures, as plain JSON-able numbers."""
    tp, fp, fn = _counts(truth, predicted)
    precision, recall = _safe_divide(tp, tp + fp), _safe_divide(tp, tp + fn)
    f1 = _safe_divide(2 * tp, 2 * tp + fp + fn)
    micro_p = float(tp.sum() / max(tp.sum() + fp.sum(), 1))
    micro_r = float(tp.sum() / max(tp.sum() + fn.sum(), 1))
    micro_f1 = float(2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1))
    return {
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "micro_precision": micro_p,
        "micro_recall": micro_r,
        "micro_f1": micro_f1,
        "per_label": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(tp[i] + fn[i]),
            }
            for i, name in enumerate(names)
        },
    }


def community_summary(scores: np.ndarray, truth: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    """Community dev (members' corrections) with the thresholds tuned on GoEmotions dev: micro-F1 (what the
    retrain gate compares; few rows per label make macro-F1 noisy), macro-F1 and its size."""
    report = classification_report(truth, scores >= thresholds, [str(i) for i in range(truth.shape[1])])
    return {
        "community_dev_rows": len(truth),
        "community_dev_micro_f1": report["micro_f1"],
        "community_dev_macro_f1": report["macro_f1"],
    }


def tune_thresholds(
    truth: np.ndarray, scores: np.ndarray, grid: np.ndarray = THRESHOLD_GRID, fallback: float = 0.5
) -> np.ndarray:
    """The threshold on `grid` that maximises each label's own F1 (the lowest one on ties).

    A label with no positive example gives no evidence (every threshold scores 0), so it keeps `fallback`.
    """
    per_threshold = np.stack([f1_scores(truth, scores >= t) for t in grid])  # [len(grid), labels]
    thresholds = grid[per_threshold.argmax(axis=0)].astype(float)
    thresholds[~truth.astype(bool).any(axis=0)] = fallback
    return thresholds


def tune_global_threshold(truth: np.ndarray, scores: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> float:
    """The single threshold on `grid` that maximises macro-F1 (the lowest one on ties)."""
    macro = [f1_scores(truth, scores >= t).mean() for t in grid]
    return float(grid[int(np.argmax(macro))])


def group_members(labels: list[str], mapping: dict[str, list[str]]) -> dict[str, list[str]]:
    """`mapping` (group -> labels), completed with each label in no group as a group of its own (GoEmotions'
    `neutral`)."""
    groups = {name: list(members) for name, members in mapping.items()}
    grouped = {label for members in groups.values() for label in members}
    for label in labels:
        if label not in grouped:
            groups[label] = [label]
    return groups


def collapse(matrix: np.ndarray, labels: list[str], groups: dict[str, list[str]]) -> np.ndarray:
    """One column per group, in the order of `groups`: a row has a group if it has any of its labels."""
    columns = [[labels.index(label) for label in members] for members in groups.values()]
    return np.stack([matrix[:, idx].any(axis=1) for idx in columns], axis=1)


def group_matrix(matrix: np.ndarray, labels: list[str], mapping: dict[str, list[str]]) -> tuple[np.ndarray, list[str]]:
    """Collapse label columns into groups: a row has a group if it has any of its labels.

    Labels in no group (GoEmotions' `neutral`) become a group of their own.
    """
    groups = group_members(labels, mapping)
    return collapse(matrix, labels, groups), list(groups)


#: The decision rules compared everywhere: per-label and global thresholds tuned on dev, and the paper's fixed 0.3.
THRESHOLD_RULES = ("per_label", "global", "paper_0.3")


def fit_thresholds(truth: np.ndarray, scores: np.ndarray, rule: str) -> np.ndarray:
    """One threshold per label under `rule` (one of THRESHOLD_RULES), fitted on `truth` and `scores`."""
    labels = truth.shape[1]
    if rule == "per_label":
        return tune_thresholds(truth, scores)
    if rule == "global":
        return np.full(labels, tune_global_threshold(truth, scores))
    if rule == "paper_0.3":
        return np.full(labels, PAPER_THRESHOLD)
    raise ValueError(f"unknown threshold rule {rule!r}; choose from {THRESHOLD_RULES}")


def cross_fit_macro_f1(truth: np.ndarray, scores: np.ndarray, rule: str, folds: int = 5, seed: int = 0) -> float:
    """Macro-F1 of `rule` when every row is decided by thresholds tuned on the other folds only.

    Tuning and scoring on the same rows flatters per-label thresholds most on the rarest labels (a handful of
    dev examples each); this is the honest estimate used to compare rules and training runs on dev. The
    held-out decisions of all folds are pooled before scoring, so rare labels count every positive once.
    """
    order = np.random.default_rng(seed).permutation(len(truth))
    decided = np.zeros_like(truth, dtype=bool)
    for held_out in np.array_split(order, folds):
        fitted = np.setdiff1d(order, held_out)
        decided[held_out] = scores[held_out] >= fit_thresholds(truth[fitted], scores[fitted], rule)
    return float(f1_scores(truth, decided).mean())


def dev_figures(truth: np.ndarray, scores: np.ndarray, labels: list[str]) -> tuple[np.ndarray, float, dict]:
    """What a trained model records of its dev scores: per-label thresholds and one global threshold tuned on them,
    and the figures `moodring.json`'s `dev_metrics` starts with (rows, macro/micro-F1, the 5-fold cross-fit)."""
    thresholds = tune_thresholds(truth, scores)
    report = classification_report(truth, scores >= thresholds, labels)
    figures = {
        "rows": len(truth),
        "macro_f1": report["macro_f1"],
        "micro_f1": report["micro_f1"],
        # The honest estimate: each dev row decided by thresholds tuned on the other four fifths of dev.
        "cross_fit_macro_f1": {rule: cross_fit_macro_f1(truth, scores, rule) for rule in THRESHOLD_RULES},
    }
    return thresholds, tune_global_threshold(truth, scores), figures
