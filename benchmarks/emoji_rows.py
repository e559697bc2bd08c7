"""Micro-F1 on the GoEmotions test rows that carry Unicode emoji, with a bootstrap 95% interval (issue 24).

    python benchmarks/emoji_rows.py --model DIR [--data-dir GOEMOTIONS] [--backend torch] [--out FILE]

A row carries emoji when `emoji.emoji_count` finds one in its text (the `emoji` package's own list, so a plain
digit or `#` is not one; about 108 of the 5,427 test rows). That is too few rows for a 28-label macro-F1 (most
labels have a handful of positives or none), so the figure is micro-F1 with the model's dev-tuned per-label
thresholds, and its 95% percentile interval over `--resamples` bootstrap resamples of the rows (seeded: the same
rows and model give the same interval). The model reads each text as `moodring evaluate --split test` does.

Writes the JSON report (default benchmarks/emoji_rows_<model directory name>.json) and prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
from pathlib import Path

import emoji
import numpy as np

from model.classifier import EmotionClassifier
from training.data import load_goemotions, resolve_data_dir
from training.metrics import classification_report

RESAMPLES = 2000
SEED = 0
BENCHMARKS = Path(__file__).resolve().parent


def carries_emoji(text: str) -> bool:
    return emoji.emoji_count(text) > 0


def bootstrap_micro_f1(truth: np.ndarray, predicted: np.ndarray, resamples: int, seed: int) -> dict:
    """Micro-F1 of boolean `[rows, labels]` matrices and its 95% percentile interval over `resamples` resamples of
    the rows (with replacement, `numpy.random.default_rng(seed)`)."""
    truth, predicted = truth.astype(bool), predicted.astype(bool)
    tp = (truth & predicted).sum(axis=1)
    fp = (~truth & predicted).sum(axis=1)
    fn = (truth & ~predicted).sum(axis=1)
    drawn = np.random.default_rng(seed).integers(0, len(truth), size=(resamples, len(truth)))
    tp_s, errors = tp[drawn].sum(axis=1), (fp[drawn] + fn[drawn]).sum(axis=1)
    micro = 2 * tp_s / np.maximum(2 * tp_s + errors, 1)
    low, high = np.percentile(micro, [2.5, 97.5])
    return {
        "micro_f1": float(2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1)),
        "interval_95": [float(low), float(high)],
        "resamples": resamples,
        "seed": seed,
    }


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(classifier: EmotionClassifier) -> dict:
    return {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "threads": classifier.threads, "python": sys.version}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="exported model directory")
    parser.add_argument("--data-dir", help="GoEmotions (default: $GOEMOTIONS_DIR, else the checkout's shared/ copy)")
    parser.add_argument("--backend", default="torch", help="serving backend (default: torch)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: as moodring classify)")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help=f"bootstrap resamples (default: {RESAMPLES})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"bootstrap seed (default: {SEED})")
    parser.add_argument("--out", help="the JSON report (default: benchmarks/emoji_rows_<model directory name>.json)")
    args = parser.parse_args(argv)

    model_dir = Path(args.model)
    data_dir = resolve_data_dir(args.data_dir)
    data = load_goemotions(data_dir, splits=("test",))
    test = data.splits["test"]
    chosen = [i for i, text in enumerate(test["text"]) if carries_emoji(text)]
    rows = test.select(chosen)
    classifier = EmotionClassifier.load(model_dir, backend=args.backend, threads=args.threads)
    truth = np.zeros((len(rows), len(classifier.labels)), dtype=bool)
    for i, ids in enumerate(rows["labels"]):
        truth[i, ids] = True
    predicted = classifier.predict_scores(rows["text"], batch_size=64) >= classifier.thresholds
    figures = classification_report(truth, predicted, classifier.labels)
    report = {
        "benchmark": "GoEmotions test rows with Unicode emoji (emoji.emoji_count > 0)",
        "model": str(model_dir.resolve()),
        "backbone": classifier.metadata.backbone,
        "backend": classifier.backend,
        "data_dir": str(data_dir.resolve()) if data_dir else data.source,
        "emoji_package": emoji.__version__,
        "test_rows": len(test),
        "rows": len(rows),
        "decision_rule": "per-label thresholds tuned on dev (the model's)",
        **bootstrap_micro_f1(truth, predicted, args.resamples, args.seed),
        "micro_precision": figures["micro_precision"],
        "micro_recall": figures["micro_recall"],
        "labels_with_support": sum(1 for m in figures["per_label"].values() if m["support"]),
        "machine": machine(classifier),
    }
    out = Path(args.out) if args.out else BENCHMARKS / f"emoji_rows_{model_dir.resolve().name}.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    low, high = report["interval_95"]
    print(
        f"{report['rows']} emoji rows: micro-F1 {report['micro_f1']:.3f} (95% interval {low:.3f}-{high:.3f}, "
        f"{args.resamples} resamples, seed {args.seed}); wrote {out}"
    )
    return report


if __name__ == "__main__":
    main()
