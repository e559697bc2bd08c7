"""Write the accuracy part of benchmarks/RESULTS.md from what `moodring evaluate` saved.

    python benchmarks/results.py [--model DIR]

Reads `moodring.json`, `eval-dev.json` and `eval-test.json` from the model directory (run
`moodring evaluate --split dev` and `--split test` first) and prints Markdown: nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model import ModelMetadata, default_model_dir

PAPER = {"macro_f1": 0.46, "ekman": 0.64, "sentiment": 0.69}  # Demszky et al. 2020, BERT-base, threshold 0.3
MONOLOGG = 0.488  # monologg/GoEmotions-pytorch BERT-base reproduction, macro-F1
RULES = {
    "per_label": "per-label thresholds (tuned on dev)",
    "global": "one global threshold (tuned on dev)",
    "paper_0.3": "fixed 0.3 (the paper's rule)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    directory = args.model or default_model_dir()
    meta = ModelMetadata.load(directory)
    reports = {split: json.loads((directory / f"eval-{split}.json").read_text()) for split in ("dev", "test")}

    backends = sorted({report.get("backend", "torch") for report in reports.values()})
    print(f"Scored with the {' and '.join(backends)} backend (`moodring evaluate`'s default for this model).")
    print()
    print("| split | decision rule | macro-P | macro-R | macro-F1 | micro-F1 | Ekman macro-F1 | sentiment macro-F1 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for split, report in reports.items():
        for rule, name in RULES.items():
            m = report["decision_rules"][rule]
            print(
                f"| {split} | {name} | {m['macro_precision']:.3f} | {m['macro_recall']:.3f} | "
                f"**{m['macro_f1']:.3f}** | {m['micro_f1']:.3f} | {report['ekman'][rule]['macro_f1']:.3f} | "
                f"{report['sentiment'][rule]['macro_f1']:.3f} |"
            )
    print(
        f"| test | GoEmotions paper, BERT-base, 0.3 | | | {PAPER['macro_f1']:.2f} | | "
        f"{PAPER['ekman']:.2f}\\* | {PAPER['sentiment']:.2f}\\* |"
    )
    print(f"| test | monologg BERT-base reproduction | | | {MONOLOGG:.3f} | | | |")
    print()
    print(
        "\\* The paper trains separate Ekman and sentiment models; moodring's group figures collapse its 28-label "
        "predictions into groups (a group is predicted when any of its labels is), so they are not like for like."
    )
    print()
    print(
        f"Global threshold (dev): {meta.global_threshold:.2f}. Best epoch: {meta.dev_metrics['best_epoch']}; "
        "dev macro-F1 (per-label thresholds) by epoch: "
        + ", ".join(f"{h['epoch']}: {h['macro_f1']:.3f}" for h in meta.dev_metrics["history"])
        + "."
    )
    cross_fit = meta.dev_metrics.get("cross_fit_macro_f1")
    if cross_fit:  # models trained before the cross-fit estimate existed have none
        print()
        print("Which decision rule, by 5-fold cross-fit on dev (each row decided by thresholds tuned on the other")
        print("four fifths; the test split plays no part):")
        print()
        print("| decision rule | dev macro-F1, tuned and scored on all of dev | dev macro-F1, cross-fit |")
        print("|---|---:|---:|")
        for rule, name in RULES.items():
            in_sample = reports["dev"]["decision_rules"][rule]["macro_f1"]
            print(f"| {name} | {in_sample:.3f} | **{cross_fit[rule]:.3f}** |")
    print()
    print("Per-label F1 on test (per-label thresholds tuned on dev):")
    print()
    print("| label | threshold | precision | recall | F1 | support |")
    print("|---|---:|---:|---:|---:|---:|")
    # The thresholds the scoring backend used (int8 ONNX has its own, tuned on dev at export).
    thresholds = reports["test"]["thresholds"]["per_label"]
    per_label = reports["test"]["decision_rules"]["per_label"]["per_label"]
    for label, m in sorted(per_label.items(), key=lambda item: -item[1]["f1"]):
        print(
            f"| {label} | {thresholds[label]:.2f} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
            f"{m['support']} |"
        )
    print()
    print(
        f"Model: backbone {meta.backbone}; trained at commit {meta.git_commit} on {meta.created_at}; "
        f"versions {', '.join(f'{k} {v}' for k, v in meta.versions.items())}."
    )


if __name__ == "__main__":
    main()
