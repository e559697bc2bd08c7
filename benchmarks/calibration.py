"""Expected calibration error on the GoEmotions test split, before (raw scores) and after (calibrated probabilities).

    python benchmarks/calibration.py [--model DIR] [--data-dir DIR] [--backend auto] [--test-rows N]
                                     [--out benchmarks/calibration]

The calibration was fitted on dev when the model was exported (or by `moodring calibrate`); the test split is read
here for this report only, and decides nothing. The backend is the one `moodring evaluate` would serve (`auto`:
int8 ONNX when it is there), with that backend's calibration.

ECE (`model.calibration.expected_calibration_error`): 15 equal-width probability bins on [0, 1]; each bin's
|mean probability - share of positives|, weighted by its share of the entries. "pooled" is over all label-row
pairs of the split (28 x rows entries, most of them negatives near 0); "per-label mean" is the mean of the 28
labels' own ECEs, each over that label's rows. Log-loss and Brier are over all label-row pairs too. Macro-F1 with
the model's thresholds is the same before and after (the decision stays on the raw score): a check.

Writes OUT.json (the figures, per-label ECEs and the diagram's bins) and OUT.png (the reliability diagram, pooled
bins), and prints a Markdown table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from bot_load import cpu_model

from model.calibration import (
    ECE_BINS,
    brier_score,
    expected_calibration_error,
    log_loss,
    reliability_bins,
)
from model.classifier import EmotionClassifier
from model.threads import resolve_threads
from training.data import load_goemotions, resolve_data_dir
from training.metrics import classification_report

OUT = Path(__file__).resolve().parent / "calibration"


def figures(truth: np.ndarray, probabilities: np.ndarray, labels: list[str]) -> dict:
    per_label = {label: expected_calibration_error(truth[:, j], probabilities[:, j]) for j, label in enumerate(labels)}
    return {
        "ece_pooled": expected_calibration_error(truth, probabilities),
        "ece_per_label_mean": float(np.mean(list(per_label.values()))),
        "log_loss": log_loss(truth, probabilities),
        "brier": brier_score(truth, probabilities),
        "ece_per_label": per_label,
        "reliability": reliability_bins(truth, probabilities),
    }


def reliability_diagram(results: dict, path: Path, title: str) -> None:
    """Observed share of positives against mean probability per pooled bin, raw and calibrated, with the bins'
    entry counts below (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curve, counts) = plt.subplots(
        2, 1, figsize=(6, 7), dpi=110, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    curve.plot([0, 1], [0, 1], color="#99AAB5", linestyle="--", label="perfectly calibrated")
    width = 1 / ECE_BINS
    for name, colour, offset in (("raw", "#ED4245", -width / 4), ("calibrated", "#5865F2", width / 4)):
        bins = results[name]["reliability"]
        shown = [(p, y) for p, y in zip(bins["mean_probability"], bins["positive_rate"], strict=True) if p is not None]
        label = f"{name} (pooled ECE {results[name]['ece_pooled']:.3f})"
        curve.plot(*zip(*shown, strict=True), marker="o", color=colour, label=label)
        centres = np.asarray(bins["edges"][:-1]) + width / 2 + offset
        heights = np.where(np.asarray(bins["count"]) > 0, bins["count"], np.nan)  # an empty bin: no bar
        counts.bar(centres, heights, width=width / 2, color=colour, log=True)
    curve.set_xlim(0, 1)
    curve.set_ylim(0, 1)
    curve.set_ylabel("share of positives")
    curve.set_title(title)
    curve.legend(loc="upper left")
    curve.grid(alpha=0.3)
    counts.set_xlabel(f"probability shown ({ECE_BINS} equal-width bins, all label-row pairs)")
    counts.set_ylabel("pairs")
    counts.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="exported model (default: $MOODRING_MODEL_DIR or models/...)")
    parser.add_argument("--data-dir", default=None, help="GoEmotions directory (default: $GOEMOTIONS_DIR)")
    parser.add_argument("--backend", default="auto", help="as `moodring evaluate --backend` (default: auto)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: as `moodring classify`)")
    parser.add_argument("--test-rows", type=int, default=None, help="score only the first N test rows (smoke runs)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"OUT.json and OUT.png (default: {OUT})")
    args = parser.parse_args()

    threads = resolve_threads(args.threads)
    classifier = EmotionClassifier.load(args.model, backend=args.backend, threads=threads)
    if classifier.calibration is None:
        print(f"{args.model or 'the model'} has no calibration: run `moodring calibrate --model DIR` first")
        return 2
    test = load_goemotions(resolve_data_dir(args.data_dir), splits=("test",)).splits["test"]
    if args.test_rows:
        test = test.select(range(min(args.test_rows, len(test))))
    labels = classifier.labels
    truth = np.zeros((len(test), len(labels)), dtype=bool)
    for i, ids in enumerate(test["labels"]):
        truth[i, ids] = True
    scores = classifier.predict_scores(list(test["text"]), batch_size=64)
    probabilities = classifier.probabilities(scores)
    macro_f1 = classification_report(truth, scores >= classifier.thresholds, labels)["macro_f1"]

    record = classifier.metadata.calibration_for(classifier.backend)
    results = {
        "model": str(Path(args.model).resolve()) if args.model else None,
        "backend": classifier.backend,
        "method": record["method"],
        "dev_cross_fit": record["cross_fit"],
        "rows": len(test),
        "bins": ECE_BINS,
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, {threads} intra-op threads",
        "macro_f1": macro_f1,
        "raw": figures(truth, scores, labels),
        "calibrated": figures(truth, probabilities, labels),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out.with_suffix(".json"), args.out.with_suffix(".png")
    json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    title = f"Reliability on GoEmotions test ({len(test)} rows, {classifier.backend}, {record['method']})"
    reliability_diagram(results, png_path, title)

    print(
        f"GoEmotions test, {len(test)} rows x {len(labels)} labels, backend {classifier.backend}, calibration "
        f"`{record['method']}` (chosen by 5-fold cross-fit log-loss on {record['rows']} dev rows); "
        f"{ECE_BINS} equal-width bins. Machine: {results['machine']}. Test macro-F1 {macro_f1:.3f} either way "
        "(the thresholds decide on the raw score).\n"
    )
    print("| percentage shown | ECE, all label-row pairs | ECE, mean of per-label | log-loss | Brier |")
    print("|---|---:|---:|---:|---:|")
    for name, shown in (("raw", "raw sigmoid score"), ("calibrated", "calibrated probability")):
        f = results[name]
        print(
            f"| {shown} | {f['ece_pooled']:.4f} | {f['ece_per_label_mean']:.4f} | {f['log_loss']:.4f} "
            f"| {f['brier']:.4f} |"
        )
    print(f"\nWrote {json_path} and {png_path}.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
