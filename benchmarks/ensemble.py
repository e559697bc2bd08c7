"""Teachers, their ensemble and a distilled student, side by side on GoEmotions dev and test (issue 25).

    python benchmarks/ensemble.py --model DIR [DIR ...] [--student DIR] [--data-dir DIR] [--json FILE]

Each model scores dev and test as served (`EmotionClassifier`, backend `auto`). The ensemble is the mean of the
`--model` scores. Every row is decided by per-label thresholds tuned on dev; the table reports dev macro-F1 tuned and
scored on all of dev, the 5-fold cross-fit dev estimate (the figure that chooses), and test macro-F1, which is read
for this report only. Prints a Markdown table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from bot_load import cpu_model

from model.classifier import EmotionClassifier
from training.data import load_goemotions, resolve_data_dir
from training.metrics import cross_fit_macro_f1, f1_scores, tune_thresholds


def split_scores(directory: str, rows: dict) -> dict[str, np.ndarray]:
    classifier = EmotionClassifier.load(directory)
    return {split: classifier.predict_scores(rows[split]["text"], batch_size=64) for split in rows}


def figures(scores: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> dict[str, float]:
    thresholds = tune_thresholds(truth["dev"], scores["dev"])
    return {
        "dev_macro_f1": float(f1_scores(truth["dev"], scores["dev"] >= thresholds).mean()),
        "dev_cross_fit_macro_f1": cross_fit_macro_f1(truth["dev"], scores["dev"], "per_label"),
        "test_macro_f1": float(f1_scores(truth["test"], scores["test"] >= thresholds).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", required=True, metavar="DIR", help="the teachers (ensemble members)")
    parser.add_argument("--student", metavar="DIR", help="a model distilled from them")
    parser.add_argument("--data-dir", default=os.environ.get("GOEMOTIONS_DIR"))
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)

    data = load_goemotions(resolve_data_dir(args.data_dir), splits=("dev", "test"))
    truth = {}
    for split, rows in data.splits.items():
        truth[split] = np.zeros((len(rows), len(data.labels)), dtype=bool)
        for i, ids in enumerate(rows["labels"]):
            truth[split][i, ids] = True
    members = {directory: split_scores(directory, data.splits) for directory in args.model}
    rows = {f"member {Path(d).name}": figures(s, truth) for d, s in members.items()}
    mean = {split: np.mean([s[split] for s in members.values()], axis=0) for split in truth}
    rows[f"ensemble of {len(members)} (mean score)"] = figures(mean, truth)
    if args.student:
        rows[f"student {Path(args.student).name}"] = figures(split_scores(args.student, data.splits), truth)

    result = {"cpu": cpu_model(), "command": " ".join(["python", *sys.argv]), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print("| model | dev macro-F1 (tuned on all dev) | dev, cross-fit | test macro-F1 |")
    print("|---|---:|---:|---:|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['dev_macro_f1']:.4f} | {row['dev_cross_fit_macro_f1']:.4f} | {row['test_macro_f1']:.4f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
