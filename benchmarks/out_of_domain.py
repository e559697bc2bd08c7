"""An out-of-domain, emoji-rich labelled set (issue 24): TweetEval's emotion task, scored by `evaluate --data`.

    python benchmarks/out_of_domain.py --tweeteval DIR --model MODEL [--half reporting] [--backend torch] [--out FILE]

DIR is a copy of `datasets/emotion/` of https://github.com/cardiffnlp/tweeteval (`test_text.txt`, `test_labels.txt`,
`mapping.txt`: 1,421 test tweets, one label each of anger, joy, optimism, sadness; 333 carry Unicode emoji). No
tweet is committed here: TweetEval is "released without any restrictions but restrictions may apply to individual
tasks (which are derived from existing datasets) or Twitter"; this task is SemEval-2018 Task 1 (Affect in Tweets),
and Twitter's terms govern the tweets' text. The model never trains on it.

1. Convert: the test split becomes `DIR/moodring_choosing.tsv` and `DIR/moodring_reporting.tsv` (header `id`, `text`,
   `labels`; HTML entities such as `&amp;` unescaped, as a chat client would show them). The halves are fixed by the
   SHA-256 of each tweet's text (the rows sorted by it, the first half choosing), so they do not depend on row order,
   a seed or a library version. Choose between options on the choosing half only; report the reporting half.
2. Score the half asked for (`--half`, default reporting), all of its rows and, apart, its rows that carry emoji
   (`emoji.emoji_count`), with both label maps of benchmarks/label_maps/:
   - `tweeteval_emotion.json`, GoEmotions level, the headline: each TweetEval label is the GoEmotions label of the
     same name (GoEmotions has all four). Only those four labels are scored; what the model says of the other 24
     counts neither way, since the tweets were not labelled for them.
   - `tweeteval_emotion_ekman.json`, Ekman level, the lenient view: the model's labels are collapsed into Ekman
     groups (anger also by annoyance or disapproval, joy by amusement, love, excitement..., sadness by
     disappointment, grief...), and optimism, which GoEmotions' own Ekman mapping puts under joy, counts as joy.
     Mapping anger to [anger, annoyance] at the GoEmotions level would not be that: a row carries every target of
     its label, so it would ask for both.
   TweetEval gives each tweet one label, so at the GoEmotions level a joy tweet the model reads as joy and optimism
   also counts a false optimism; the Ekman view does not.

Writes the JSON report (default benchmarks/out_of_domain_<model directory name>_<half>.json) and prints a summary.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import json
import tempfile
from pathlib import Path

from emoji_rows import carries_emoji, cpu_name  # benchmarks/emoji_rows.py, beside this script

from training.evaluate import evaluate_data, format_report

BENCHMARKS = Path(__file__).resolve().parent
MAPS = {
    "goemotions": BENCHMARKS / "label_maps" / "tweeteval_emotion.json",
    "ekman": BENCHMARKS / "label_maps" / "tweeteval_emotion_ekman.json",
}
HALVES = ("choosing", "reporting")
SPLIT = "test"


def read_tweeteval(directory: Path) -> list[tuple[str, str]]:
    """(text, label name) of every row of the test split, texts unescaped and stripped."""
    names = dict(line.split("\t") for line in (directory / "mapping.txt").read_text().splitlines() if line.strip())
    texts = (directory / f"{SPLIT}_text.txt").read_text(encoding="utf-8").splitlines()
    labels = (directory / f"{SPLIT}_labels.txt").read_text(encoding="utf-8").split()
    if len(texts) != len(labels):
        raise SystemExit(f"{directory}: {len(texts)} texts but {len(labels)} labels in the {SPLIT} split")
    return [(html.unescape(text).strip(), names[label]) for text, label in zip(texts, labels, strict=True)]


def halves(rows: list[tuple[str, str]]) -> dict[str, list[int]]:
    """Row numbers of the choosing and reporting halves: sorted by the SHA-256 of the text, then by row number."""
    order = sorted(range(len(rows)), key=lambda i: (hashlib.sha256(rows[i][0].encode("utf-8")).hexdigest(), i))
    middle = (len(order) + 1) // 2
    return {"choosing": sorted(order[:middle]), "reporting": sorted(order[middle:])}


def write_half(path: Path, rows: list[tuple[str, str]], numbers: list[int]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["id", "text", "labels"])
        writer.writerows([f"{SPLIT}-{i + 1}", *rows[i]] for i in numbers)
    return path


def summary(report: dict) -> dict:
    return {
        "rows": report["rows"],
        "labels": report["labels"],
        "macro_f1": report["macro_f1"],
        "micro_f1": report["micro_f1"],
        "per_label_f1": {name: m["f1"] for name, m in report["decision_rules"]["per_label"]["per_label"].items()},
        "decision_rules": {rule: m["macro_f1"] for rule, m in report["decision_rules"].items()},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tweeteval", required=True, help="a copy of TweetEval's datasets/emotion/ directory")
    parser.add_argument("--model", required=True, help="exported model directory")
    parser.add_argument("--half", choices=HALVES, default="reporting", help="which half to score (default: reporting)")
    parser.add_argument("--backend", default="torch", help="serving backend (default: torch)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: as moodring classify)")
    parser.add_argument("--out", help="the JSON report (default: benchmarks/out_of_domain_<model name>_<half>.json)")
    args = parser.parse_args(argv)

    directory, model_dir = Path(args.tweeteval), Path(args.model)
    rows = read_tweeteval(directory)
    numbers = halves(rows)
    files = {half: write_half(directory / f"moodring_{half}.tsv", rows, numbers[half]) for half in HALVES}
    chosen = numbers[args.half]
    with_emoji = [i for i in chosen if carries_emoji(rows[i][0])]
    report = {
        "benchmark": f"TweetEval emotion, {SPLIT} split, {args.half} half (of {len(rows)} rows)",
        "source": "https://github.com/cardiffnlp/tweeteval datasets/emotion (SemEval-2018 Task 1, Affect in Tweets)",
        "data": str(files[args.half]),
        "model": str(model_dir.resolve()),
        "backend": args.backend,
        "rows": len(chosen),
        "rows_with_emoji": len(with_emoji),
        "cpu": cpu_name(),
        "maps": {},
    }
    with tempfile.TemporaryDirectory() as scratch:
        emoji_file = write_half(Path(scratch) / "with_emoji.tsv", rows, with_emoji)
        for level, label_map in MAPS.items():
            scored = {}
            for name, data in (("all_rows", files[args.half]), ("emoji_rows", emoji_file)):
                full = evaluate_data(model_dir, data, label_map, backend=args.backend, threads=args.threads)
                scored[name] = summary(full)
                if name == "all_rows":
                    print(format_report(full), end="\n\n")
            report["maps"][level] = {"label_map": str(label_map.relative_to(BENCHMARKS.parent)), **scored}
    out = Path(args.out) if args.out else BENCHMARKS / f"out_of_domain_{model_dir.resolve().name}_{args.half}.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for level, scored in report["maps"].items():
        every, emoji_only = scored["all_rows"], scored["emoji_rows"]
        print(
            f"{level}: macro-F1 {every['macro_f1']:.3f}, micro-F1 {every['micro_f1']:.3f} on {every['rows']} rows; "
            f"on its {emoji_only['rows']} rows with emoji macro-F1 {emoji_only['macro_f1']:.3f}, "
            f"micro-F1 {emoji_only['micro_f1']:.3f}"
        )
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
