"""`moodring evaluate --data FILE --label-map MAP`: anyone's labelled TSV or CSV, scored with the tiny model.

The expected figures are counted here, row by row, from the tiny model's own decisions (`EmotionClassifier.predict`:
the labels above their dev-tuned thresholds) and the labels written into the file, so a wrong mapping, a wrong
collapse into Ekman groups or a row read wrong changes them.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from model.classifier import EmotionClassifier
from moodring.cli import main

TEXTS = [
    "I'm so happy for you, congratulations!",
    "This is the worst day ever, I hate it.",
    "Thank you so much for the help.",
    "I'm scared of what happens next.",
    "lol that is hilarious",
    "Why would anyone do that?",
    "I miss her so much, it hurts.",
    "ok",
    "Wow, I did not expect that at all!",
    "That's disgusting, stop.",
]


@pytest.fixture(scope="module")
def decided(tiny_model_dir: Path) -> tuple[EmotionClassifier, list[set[str]]]:
    """The tiny model and, for each of TEXTS, the GoEmotions labels it decides (above their thresholds)."""
    classifier = EmotionClassifier.load(tiny_model_dir, backend="torch", threads=1)
    return classifier, [set(p.labels) for p in classifier.predict(TEXTS, top_k=None)]


def expected_report(columns: list[str], truth: list[set[str]], predicted: list[set[str]]) -> dict:
    """Per-column precision/recall/F1/support and macro/micro F1, counted row by row."""
    per_label, totals = {}, Counter()
    for column in columns:
        counts = Counter()
        for wanted, got in zip(truth, predicted, strict=True):
            counts["tp"] += column in wanted and column in got
            counts["fp"] += column not in wanted and column in got
            counts["fn"] += column in wanted and column not in got
        totals.update(counts)
        tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
        per_label[column] = {
            "precision": float(Fraction(tp, tp + fp)) if tp + fp else 0.0,
            "recall": float(Fraction(tp, tp + fn)) if tp + fn else 0.0,
            "f1": float(Fraction(2 * tp, 2 * tp + fp + fn)) if tp + fp + fn else 0.0,
            "support": tp + fn,
        }
    tp, fp, fn = totals["tp"], totals["fp"], totals["fn"]
    return {
        "per_label": per_label,
        "macro_f1": sum(m["f1"] for m in per_label.values()) / len(columns),
        "micro_f1": float(Fraction(2 * tp, max(2 * tp + fp + fn, 1))),
    }


def assert_figures(report: dict, expected: dict) -> None:
    got = report["decision_rules"]["per_label"]
    assert list(got["per_label"]) == list(expected["per_label"])
    for column, figures in expected["per_label"].items():
        assert got["per_label"][column] == pytest.approx(figures, abs=1e-12), column
    assert report["macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-12)
    assert report["micro_f1"] == pytest.approx(expected["micro_f1"], abs=1e-12)


def write_tsv(path: Path, header: list[str], rows: list[list[str]], delimiter: str = "\t") -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_a_goemotions_map_scores_the_mapped_labels_exactly(decided, tiny_model_dir: Path, tmp_path: Path) -> None:
    from training.evaluate import evaluate_data

    classifier, predicted = decided
    labels = classifier.labels
    common = Counter(label for row in predicted for label in row).most_common(1)[0][0]
    never = next(label for label in labels if all(label not in row for row in predicted))
    label_map = {"yay": [common], "meh": [never], "both": [common, never]}
    map_path = tmp_path / "map.json"
    map_path.write_text(json.dumps({"goemotions": label_map}), encoding="utf-8")
    row_labels = ["yay", "meh", "both", "yay,meh", "meh", "yay", " both , yay ", "meh", "yay", "both"]
    rows = [[f"id{i}", text, tags] for i, (text, tags) in enumerate(zip(TEXTS, row_labels, strict=True))]
    truth = [{target for tag in tags.split(",") for target in label_map[tag.strip()]} for tags in row_labels]
    columns = [label for label in labels if label in {common, never}]  # in the model's label order
    expected = expected_report(columns, truth, [row & set(columns) for row in predicted])

    tsv = write_tsv(tmp_path / "ours.tsv", ["id", "text", "labels"], rows)
    report = evaluate_data(tiny_model_dir, tsv, map_path, backend="torch", threads=1)
    assert report["rows"] == len(TEXTS) and report["level"] == "goemotions" and report["labels"] == columns
    assert_figures(report, expected)
    assert report["thresholds"]["per_label"] == {
        label: classifier.thresholds[labels.index(label)].item() for label in columns
    }
    # Ekman and sentiment figures over the mapped labels only: each group keeps the mapped labels inside it.
    ekman_groups = set(report["ekman"]["per_label"]["per_label"])
    assert ekman_groups == {
        group for group, members in classifier.metadata.ekman_mapping.items() if common in members or never in members
    } | ({"neutral"} & {common, never})

    # The same rows as CSV, its label column quoted around the commas, read the same way.
    csv_path = write_tsv(tmp_path / "ours.csv", ["labels", "text", "id"], [r[::-1] for r in rows], delimiter=",")
    assert '"yay,meh"' in csv_path.read_text(encoding="utf-8")
    assert_figures(evaluate_data(tiny_model_dir, csv_path, map_path, backend="torch", threads=1), expected)


def test_an_ekman_map_collapses_the_predictions_into_groups(decided, tiny_model_dir: Path, tmp_path: Path) -> None:
    from training.evaluate import evaluate_data

    classifier, predicted = decided
    group_of = {label: group for group, members in classifier.metadata.ekman_mapping.items() for label in members}
    # A map in the TSV form: its header names the level; one dataset label may name several groups.
    map_path = tmp_path / "map.tsv"
    map_path.write_text("ours\tekman\nhappy\tjoy\ncross\tanger\ncalm\tneutral\nbittersweet\tjoy,sadness\n")
    row_labels = ["happy", "cross", "happy", "calm", "happy", "calm", "bittersweet", "calm", "happy", "cross"]
    targets = {"happy": {"joy"}, "cross": {"anger"}, "calm": {"neutral"}, "bittersweet": {"joy", "sadness"}}
    truth = [targets[tag] for tag in row_labels]
    columns = ["anger", "joy", "sadness", "neutral"]  # the mapped groups, in the model's Ekman order
    grouped = [{group_of.get(label, label) for label in row} & set(columns) for row in predicted]
    expected = expected_report(columns, truth, grouped)

    data = write_tsv(
        tmp_path / "ours.tsv", ["message", "tag"], [[t, g] for t, g in zip(TEXTS, row_labels, strict=True)]
    )
    report = evaluate_data(
        tiny_model_dir, data, map_path, text_column="message", label_column="tag", backend="torch", threads=1
    )
    assert report["level"] == "ekman" and report["labels"] == columns
    assert_figures(report, expected)
    assert report["ekman"]["per_label"]["macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-12)
    assert set(report["sentiment"]["per_label"]["per_label"]) == {"positive", "negative", "neutral"}


def test_the_cli_prints_the_report_and_writes_it_with_out(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    data = write_tsv(
        tmp_path / "ours.tsv", ["text", "label"], [[t, "x" if i % 2 else "y"] for i, t in enumerate(TEXTS)]
    )
    label_map = tmp_path / "map.json"
    label_map.write_text('{"ekman": {"x": "joy", "y": ["anger"]}}')
    out = tmp_path / "reports" / "ours.json"
    argv = ["evaluate", "--model", str(tiny_model_dir), "--data", str(data), "--label-map", str(label_map)]
    code, printed, err = run_cli([*argv, "--backend", "torch", "--threads", "1", "--out", str(out)], capsys)
    assert code == 0, err
    assert printed.startswith(f"{data}: {len(TEXTS)} rows, labels mapped onto Ekman groups by {label_map}")
    assert "per-label (dev-tuned)" in printed and f"Report: {out}  Chart: {out.with_suffix('.png')}" in printed
    saved = json.loads(out.read_text())
    assert saved["rows"] == len(TEXTS) and saved["labels"] == ["anger", "joy"]
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tiny_model_dir.glob("eval-ours*"))  # nothing written into the model unless asked

    code, printed, err = run_cli([*argv, "--backend", "torch", "--threads", "1", "--json"], capsys)
    assert code == 0, err
    assert json.loads(printed)["macro_f1"] == saved["macro_f1"]


GOOD_MAP = '{"goemotions": {"yay": ["joy"], "meh": ["neutral"]}}'
ROWS = "text\tlabels\nhi\tyay\n"
BAD_CASES = {
    "missing file": (None, GOOD_MAP, "{data}: no such file"),
    "not tsv or csv": (ROWS, GOOD_MAP, "name it .tsv (tab-separated) or .csv"),
    "empty file": ("", GOOD_MAP, "{data}: empty file"),
    "header only": ("text\tlabels\n", GOOD_MAP, "{data}: no rows after the header"),
    "no text column": ("words\tlabels\nhi\tyay\n", GOOD_MAP, "{data}:1: no column 'text' (columns: words, labels)"),
    "unknown label": (ROWS + "ugh\tfurious\n", GOOD_MAP, "{data}:3: label 'furious' is not in {map}"),
    "wrong column count": ("text\tlabels\nhi\tyay\textra\n", GOOD_MAP, "{data}:2: expected 2 columns, got 3"),
    "empty text": (ROWS + "  \tmeh\n", GOOD_MAP, "{data}:3: empty text"),
    "no label": ("text\tlabels\nhi\t , \n", GOOD_MAP, "{data}:2: no label"),
    "map target not a label": (
        ROWS, '{"goemotions": {"yay": ["joyful"]}}', "{map}: 'yay' maps to 'joyful', which is not a GoEmotions label"
    ),
    "map target not a group": (
        ROWS, '{"ekman": {"yay": "amusement"}}', "{map}: 'yay' maps to 'amusement', which is not an Ekman group"
    ),
    "map without a level": (ROWS, '{"yay": "joy"}', '{map}: expected one key, "goemotions" or "ekman"'),
    "map to nothing": (ROWS, '{"goemotions": {"yay": []}}', "{map}: 'yay' maps to nothing"),
    "map not json": (ROWS, '{"goemotions": {"yay": [joy]}}', "{map}:1: invalid JSON"),
    "map tsv bad level": (
        ROWS, "label\tplutchik\nyay\tjoy\n", "{map}:1: the header's second column names the level"
    ),
    "map tsv repeated": (ROWS, "label\tgoemotions\nyay\tjoy\nyay\tlove\n", "{map}:3: 'yay' is mapped twice"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_is_one_line_naming_the_file_and_line(
    case: str, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    content, map_content, message = BAD_CASES[case]
    data = tmp_path / ("ours.txt" if case == "not tsv or csv" else "ours.tsv")
    if content is not None:
        data.write_text(content, encoding="utf-8")
    label_map = tmp_path / ("map.tsv" if map_content.startswith("label\t") else "map.json")
    label_map.write_text(map_content, encoding="utf-8")
    argv = ["evaluate", "--model", str(tiny_model_dir), "--data", str(data), "--label-map", str(label_map)]
    code, printed, err = run_cli([*argv, "--backend", "torch", "--threads", "1"], capsys)
    assert code == 2 and not printed
    assert err.startswith("moodring evaluate: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert message.format(data=data, map=label_map) in err


def test_data_options_go_with_data(tiny_model_dir: Path, capsys) -> None:
    code, _, err = run_cli(["evaluate", "--model", str(tiny_model_dir), "--label-map", "m.json"], capsys)
    assert code == 2 and err == "moodring evaluate: --label-map goes with --data FILE\n"
    code, _, err = run_cli(["evaluate", "--model", str(tiny_model_dir), "--data", "x.tsv"], capsys)
    assert code == 2 and err == "moodring evaluate: --data needs --label-map MAP\n"
