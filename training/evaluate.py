"""Score an exported model on the dev or test split, or on anyone's labelled file: labels, Ekman groups, sentiment
groups, chart."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from model.classifier import EmotionClassifier
from model.metadata import METADATA_FILE, ModelMetadata
from model.storage import ModelError, default_model_dir
from model.training_contract import file_sha256, model_checksums, report_chart_path, write_report
from training.data import load_extra_data, load_goemotions, resolve_data_dir
from training.labelled_data import LABEL_SEPARATOR, LEVELS, TEXT_COLUMN, read_label_map, read_labelled_rows
from training.metrics import (
    PAPER_THRESHOLD,
    classification_report,
    collapse,
    community_summary,
    group_matrix,
    group_members,
)

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
    figures = _rule_reports(truth, _decisions(classifier, scores), labels, meta.ekman_mapping, meta.sentiment_mapping)
    per_label = figures["decision_rules"]["per_label"]
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
        **figures,
    }

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


def evaluate_data(
    model_dir: str | Path | None,
    data: str | Path,
    label_map: str | Path,
    text_column: str = TEXT_COLUMN,
    label_column: str | None = None,
    separator: str = LABEL_SEPARATOR,
    backend: str = "auto",
    threads: int | None = None,
    out: str | Path | None = None,
) -> dict:
    """Report on anyone's labelled file (training/labelled_data.py says its layout and the map's), with the model's
    dev-tuned thresholds, as `evaluate` reports on a split; writes the report to `out` (JSON, the chart beside it
    as .png) only when given, never into the model directory.

    The report's columns (`labels`) are the targets the map reaches, and nothing else: the file says nothing about
    the other labels, so what the model decides for them counts neither way. At the `goemotions` level each column
    is one GoEmotions label; at the `ekman` level each is an Ekman group, which the model has when it decides any
    of the group's labels (`training.metrics.group_matrix`, as for the Ekman figures of a split). The Ekman and
    sentiment figures group those columns further, each group keeping the columns that lie wholly inside it.
    """
    directory = Path(model_dir) if model_dir else default_model_dir()
    try:  # the label names only, so that the files' problems are said before the model loads
        meta = ModelMetadata.load(directory)
    except (OSError, ValueError, TypeError) as error:
        raise ModelError(f"{directory}: cannot read the model's {METADATA_FILE} ({error})") from error
    labels = meta.labels
    ekman = group_members(labels, meta.ekman_mapping)
    mapping = read_label_map(label_map, {"goemotions": labels, "ekman": list(ekman)})
    rows = read_labelled_rows(data, mapping, text_column, label_column, separator)
    classifier = EmotionClassifier.load(directory, backend=backend, threads=threads)
    members = {label: [label] for label in labels} if mapping.level == "goemotions" else ekman
    columns = {name: members[name] for name in mapping.covered(list(members))}
    names = list(columns)
    truth = np.zeros((len(rows.texts), len(names)), dtype=bool)
    for i, row_labels in enumerate(rows.labels):
        for label in row_labels:
            truth[i, [names.index(target) for target in mapping.targets[label]]] = True
    scores = classifier.predict_scores(rows.texts, batch_size=64)
    decisions = {rule: collapse(decided, labels, columns) for rule, decided in _decisions(classifier, scores).items()}
    figures = _rule_reports(
        truth,
        decisions,
        names,
        _within(columns, ekman),
        _within(columns, group_members(labels, meta.sentiment_mapping)),
    )
    per_label = figures["decision_rules"]["per_label"]
    thresholds = dict(zip(labels, classifier.thresholds.tolist(), strict=True))
    report = {
        "data": str(rows.source),
        "label_map": str(mapping.source),
        "level": mapping.level,
        "labels": names,
        "rows": len(rows.texts),
        "model": str(directory),
        "backbone": meta.backbone,
        "backend": classifier.backend,
        "checksums": {
            "model": model_checksums(directory),
            "data": {str(path): file_sha256(path) for path in (rows.source, mapping.source)},
        },
        "macro_f1": per_label["macro_f1"],
        "micro_f1": per_label["micro_f1"],
        "thresholds": {
            "per_label": {name: thresholds[name] for name in names if name in thresholds and columns[name] == [name]},
            "global": meta.global_threshold,
        },
        **figures,
    }
    if out is not None:
        json_path = Path(out)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        chart_path = json_path.with_suffix(".png")
        report["files"] = {"json": str(json_path), "chart": str(chart_path)}
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        title = f"Per-label F1 on {rows.source.name} ({len(rows.texts)} rows)"
        write_f1_chart(per_label["per_label"], chart_path, title=title)
        log.info("wrote %s and %s", json_path, chart_path)
    return report


def _decisions(classifier: EmotionClassifier, scores: np.ndarray) -> dict[str, np.ndarray]:
    """What the model decides under each rule: its dev-tuned per-label and global thresholds, the paper's 0.3."""
    return {
        "per_label": scores >= classifier.thresholds,
        "global": scores >= classifier.metadata.global_threshold,
        "paper_0.3": scores >= PAPER_THRESHOLD,
    }


def _rule_reports(
    truth: np.ndarray,
    decisions: dict[str, np.ndarray],
    names: list[str],
    ekman: dict[str, list[str]],
    sentiment: dict[str, list[str]],
) -> dict:
    """Each rule's figures over the columns `names`, and over their Ekman and sentiment groups (group -> columns)."""
    figures = {"decision_rules": {}, "ekman": {}, "sentiment": {}}
    for rule, predicted in decisions.items():
        figures["decision_rules"][rule] = classification_report(truth, predicted, names)
        for name, mapping in (("ekman", ekman), ("sentiment", sentiment)):
            group_truth, groups = group_matrix(truth, names, mapping)
            group_predicted, _ = group_matrix(predicted, names, mapping)
            figures[name][rule] = classification_report(group_truth, group_predicted, groups)
    return figures


def _within(columns: dict[str, list[str]], groups: dict[str, list[str]]) -> dict[str, list[str]]:
    """`groups` (group -> GoEmotions labels) restated over `columns` (name -> GoEmotions labels): each group keeps
    the columns whose labels all lie inside it; a group left with none is dropped."""
    kept = {
        group: [name for name, members in columns.items() if set(members) <= set(labels)]
        for group, labels in groups.items()
    }
    return {group: names for group, names in kept.items() if names}


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
    if "split" in report:
        source = f"{report['split']} split, {report['rows']} rows"
    else:
        level = LEVELS[report["level"]]
        source = f"{report['data']}: {report['rows']} rows, labels mapped onto {level} by {report['label_map']}"
    lines = [
        f"{source}, model {report['model']}",
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
        threshold = f"{thresholds[label]:>10.2f}" if label in thresholds else f"{'-':>10}"  # an Ekman group has none
        lines.append(
            f"{label:<16}{threshold}{m['precision']:>11.3f}{m['recall']:>8.3f}{m['f1']:>7.3f}{m['support']:>9d}"
        )
    community = report.get("community_dev")
    if community is not None:
        figures = (
            f"micro-F1 {community['micro_f1']:.3f}, macro-F1 {community['macro_f1']:.3f}"
            if community["rows"]
            else "no rows"
        )
        lines += ["", f"community dev ({community['rows']} rows, per-label thresholds): {figures}"]
    if "files" in report:  # always for a split; for a labelled file only when asked (--out)
        lines.append("")
        lines.append(f"Report: {report['files']['json']}  Chart: {report['files']['chart']}")
    return "\n".join(lines)
