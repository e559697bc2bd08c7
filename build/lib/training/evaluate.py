"""Score an exported model on the dev or test split: labels, Ekman groups, sentiment groups, chart."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from model.classifier import EmotionClassifier
from model.storage import ModelError, default_model_dir
from model.training_contract import model_checksums, report_chart_path, write_report
from training.data import load_extra_data, load_goemotions, resolve_data_dir
from training.metrics import PAPER_THRESHOLD, classification_report, community_summary, group_matrix

log = logging.getLogger(__name__)


def evaluate(
    model_dir: str | Path | None,
    split: str = "dev",
    data_dir: str | Path | None = None,
    backend: str = "auto",
    threads: int | None = None,
    extra_data: str | Path | None = None,
) -> dict:
    """Report on `split` with the model's dev-tuned thresholds; also writes `eval-<split>.json/.png`.

    Thresholds always come from the model's metadata (tuned on dev at export time, per backend where
    the backend's scores differ), so a test report never uses the test split for any decision. The
    report names the backend that served, and records what it was computed from (`data_dir`, and
    `checksums` of the model's files and of the data files), so that a reader can tell whether it still
    holds (the retrainer reuses a dev report only then: model/training_contract.py). With `extra_data` (community
    corrections) the report also has `community_dev`: rows and micro/macro-F1 on its dev split with the same
    thresholds.
    """
    directory = Path(model_dir) if model_dir else default_model_dir()
    classifier = EmotionClassifier.load(directory, backend=backend, threads=threads)
    data_path = resolve_data_dir(data_dir)
    data = load_goemotions(data_path, splits=(split,))
    rows = data.splits[split]
    if data.labels != classifier.labels:
        raise ModelError(f"the data's labels {data.labels} differ from the model's {classifier.labels}")
    labels = classifier.labels
    truth = np.zeros((len(rows), len(labels)), dtype=bool)
    for i, ids in enumerate(rows["labels"]):
        truth[i, ids] = True
    scores = classifier.predict_scores(rows["text"], batch_size=64)

    meta = classifier.metadata
    decision_rules = {
        "per_label": scores >= classifier.thresholds,
        "global": scores >= meta.global_threshold,
        "paper_0.3": scores >= PAPER_THRESHOLD,
    }
    per_label = classification_report(truth, decision_rules["per_label"], labels)
    report = {
        "split": split,
        "rows": len(rows),
        "model": str(directory),
        "backbone": meta.backbone,
        "backend": classifier.backend,
        "data_dir": str(data_path.resolve()) if data_path else None,
        "checksums": {"model": model_checksums(directory), "data": data.checksums},
        "macro_f1": per_label["macro_f1"],
        "micro_f1": per_label["micro_f1"],
        "thresholds": {
            "per_label": dict(zip(labels, classifier.thresholds.tolist(), strict=True)),
            "global": meta.global_threshold,
        },
        "decision_rules": {},
        "ekman": {},
        "sentiment": {},
    }
    for rule, predicted in decision_rules.items():
        report["decision_rules"][rule] = (
            per_label if rule == "per_label" else classification_report(truth, predicted, labels)
        )
        for name, mapping in (("ekman", meta.ekman_mapping), ("sentiment", meta.sentiment_mapping)):
            group_truth, groups = group_matrix(truth, labels, mapping)
            group_predicted, _ = group_matrix(predicted, labels, mapping)
            report[name][rule] = classification_report(group_truth, group_predicted, groups)

    if extra_data is not None:
        extra = load_extra_data(extra_data, labels)
        report["community_dev"] = _community_dev(classifier, extra.dev)
        report["checksums"]["data"].update(extra.checksums)

    json_path = write_report(report, directory, split)
    chart_path = report_chart_path(directory, split)
    write_f1_chart(per_label["per_label"], chart_path, title=f"Per-label F1 on {split} ({len(rows)} rows)")
    report["files"] = {"json": str(json_path), "chart": str(chart_path)}
    log.info("wrote %s and %s", json_path, chart_path)
    return report


def _community_dev(classifier: EmotionClassifier, rows) -> dict:
    """Rows and F1 on the corrections' dev split (none: 0 rows, no figures)."""
    if rows is None:
        return {"rows": 0, "micro_f1": None, "macro_f1": None}
    truth = np.zeros((len(rows), len(classifier.labels)), dtype=bool)
    for i, ids in enumerate(rows["labels"]):
        truth[i, ids] = True
    scores = classifier.predict_scores(rows["text"], batch_size=64)
    summary = community_summary(scores, truth, classifier.thresholds)
    return {
        "rows": summary["community_dev_rows"],
        "micro_f1": summary["community_dev_micro_f1"],
        "macro_f1": summary["community_dev_macro_f1"],
    }


def write_f1_chart(per_label: dict[str, dict], path: Path, title: str) -> None:
    """A horizontal bar chart of per-label F1, best at the top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranked = sorted(per_label.items(), key=lambda item: item[1]["f1"])
    fig, ax = plt.subplots(figsize=(7, 8), dpi=110)
    ax.barh([name for name, _ in ranked], [m["f1"] for _, m in ranked], color="#5865F2")
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_report(report: dict) -> str:
    """The report as a readable text table."""
    lines = [
        f"{report['split']} split, {report['rows']} rows, model {report['model']}",
        f"backbone: {report['backbone']}",
        f"backend: {report.get('backend', 'torch')}",
        "",
        f"{'decision rule':<22}{'macro-P':>9}{'macro-R':>9}{'macro-F1':>10}{'micro-F1':>10}"
        f"{'Ekman F1':>10}{'sentiment F1':>14}",
    ]
    names = {
        "per_label": "per-label (dev-tuned)",
        "global": f"global {report['thresholds']['global']:.2f} (dev)",
        "paper_0.3": "fixed 0.3 (paper)",
    }
    for rule, metrics in report["decision_rules"].items():
        lines.append(
            f"{names[rule]:<22}{metrics['macro_precision']:>9.3f}{metrics['macro_recall']:>9.3f}"
            f"{metrics['macro_f1']:>10.3f}{metrics['micro_f1']:>10.3f}"
            f"{report['ekman'][rule]['macro_f1']:>10.3f}{report['sentiment'][rule]['macro_f1']:>14.3f}"
        )
    lines += ["", f"{'label':<16}{'threshold':>10}{'precision':>11}{'recall':>8}{'F1':>7}{'support':>9}"]
    thresholds = report["thresholds"]["per_label"]
    for label, m in report["decision_rules"]["per_label"]["per_label"].items():
        lines.append(
            f"{label:<16}{thresholds[label]:>10.2f}{m['precision']:>11.3f}{m['recall']:>8.3f}"
            f"{m['f1']:>7.3f}{m['support']:>9d}"
        )
    community = report.get("community_dev")
    if community is not None:
        figures = (
            f"micro-F1 {community['micro_f1']:.3f}, macro-F1 {community['macro_f1']:.3f}"
            if community["rows"]
            else "no rows"
        )
        lines += ["", f"community dev ({community['rows']} rows, per-label thresholds): {figures}"]
    lines.append("")
    lines.append(f"Report: {report['files']['json']}  Chart: {report['files']['chart']}")
    return "\n".join(lines)
