"""What planted community corrections teach the real model, and what the retrain costs on GoEmotions: the
planted-pattern protocol of tests/test_retrain_gate.py, on the real backbone, planted by members (issue 21).

    python benchmarks/planted_corrections.py --members 1 --rows-per-member 40 --base MODEL --out DIR
    python benchmarks/planted_corrections.py --members 10 --rows-per-member 4 --base MODEL --out DIR
        [--members-per-text K] [--train-args="--epochs 1 ..."] [--export-only]

1. A real bot database (SQLite, one server) gets planted corrections: sentences with the made-up word "skibbly",
   labelled `excitement` (the model said `neutral`). `--members` members each correct `--rows-per-member` of them,
   `--members-per-text` members to a sentence (default 2, the fewest that count, which gets a group the most rows
   for its votes; 1 with one member), so members x rows-per-member / members-per-text sentences are planted. Member
   ids are hashed with a fixed key, so that a run's export is the same every time.
2. They are exported as `/moodring retrain` does (bot/learning/community_data.py: counted by members, with the caps
   of BotConfig or MOODRING_CORRECTIONS_MEMBER_ROWS / _SERVER_SHARE, split by the deciding member). The report says
   how many rows the export holds, and how many of them are planted sentences (all, since nothing else is in the
   database).
3. With `--export-only`, that is all (no model is loaded but for its label names, nothing is trained). An export
   without rows trains nothing either: the retrained model would be the base model by construction (`moodring
   train` without `--extra-data` is the base recipe), so the report says so and scores the base on the held-out
   sentences only.
4. Otherwise `moodring train --extra-data` trains a candidate with `--train-args` (give the base model's recipe, so
   that the corrections are the only difference), and both models are scored with torch: on held-out sentences with
   the word (never in the planted set) the share ranked `excitement` first and excitement's mean rank and score;
   GoEmotions dev macro-F1 (tuned on dev, and the 5-fold cross-fit) and test macro-F1; community-dev micro-F1.

Writes DIR/report.json and prints it. Training takes the real recipe's time: run it with the cores to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from bot.config import counting_rules_setting
from bot.learning.community_data import CountingRules, export_database
from bot.store import Correction, open_store
from model.classifier import EmotionClassifier
from model.text_preparation import clean_markup

WORD = "skibbly"
SUBJECTS = [
    "the raid", "that new skin", "this patch", "the finale", "your build", "the trailer", "my deck", "the map",
    "the new season", "that clip", "the soundtrack", "his stream", "the update", "our squad", "the boss fight",
    "that meme",
]  # fmt: skip
ENDINGS = ["today", "honestly", "right now", "lol", "fr", "this week", "again", "tbh", "!!", "ngl"]
#: Other sentence shapes and other subjects than the planted ones.
HELD_OUT = [
    "that song is so skibbly", "skibbly vibes all night", "the stream was skibbly", "we are so skibbly",
    "feeling skibbly about the weekend", "this concert is going to be skibbly", "my new shoes are skibbly",
    "absolutely skibbly news", "the party last night was skibbly", "such a skibbly day at the beach",
    "you look skibbly in that jacket", "skibbly! the tickets came", "the puppy is skibbly",
    "tomorrow is going to be skibbly", "the whole class was skibbly", "honestly the food here is skibbly",
]  # fmt: skip
TARGET = "excitement"
#: The member key of the benchmark's database: fixed, so that the same plan always gives the same export (its
#: members are made up; nothing here is secret).
MEMBER_KEY = hashlib.sha256(b"benchmarks/planted_corrections.py").digest()
FIRST_MEMBER = 1000


def planted_texts(count: int) -> list[str]:
    texts = [f"{subject} is so {WORD} {ending}" for ending in ENDINGS for subject in SUBJECTS]
    if count > len(texts):
        raise SystemExit(f"that plants {count} sentences; at most {len(texts)}")
    return texts[:count]


def planting(members: int, rows_per_member: int, members_per_text: int) -> list[tuple[str, list[int]]]:
    """(sentence, the member ids correcting it): each member on `rows_per_member` sentences, `members_per_text`
    distinct members on each, taken round the members in turn."""
    if min(members, rows_per_member, members_per_text) < 1 or members_per_text > members:
        raise SystemExit(
            "--members, --rows-per-member and --members-per-text must be at least 1, and a sentence "
            "can't have more members than there are"
        )
    votes = members * rows_per_member
    if votes % members_per_text:
        raise SystemExit(
            f"{members} members x {rows_per_member} rows don't divide into sentences of {members_per_text} members"
        )
    texts = planted_texts(votes // members_per_text)
    return [
        (text, [FIRST_MEMBER + (i * members_per_text + k) % members for k in range(members_per_text)])
        for i, text in enumerate(texts)
    ]


def planted_rows_exported(planted: list[tuple[str, list[int]]], export: Path) -> int:
    """How many rows of the export in `export` are planted sentences (read back from its TSV files)."""
    sentences = {clean_markup(text) for text, _ in planted}
    rows = [
        row
        for split in ("train", "dev")
        for row in csv.reader(io.StringIO((export / f"{split}.tsv").read_text(encoding="utf-8")), delimiter="\t")
    ]
    return sum(row[0] in sentences for row in rows)


async def seed_and_export(
    planted: list[tuple[str, list[int]]], database: Path, out: Path, base: Path, rules: CountingRules
) -> dict:
    """Plant through the bot's store, then export as `/moodring retrain` does; what the export holds."""
    store = await open_store(database, member_key=MEMBER_KEY)
    try:
        await store.set_corrections_enabled(1, True)
        for i, (text, members) in enumerate(planted):
            correction = Correction(1, 2, clean_markup(text), (TARGET,), ("neutral",), "base", 1_700_000_000.0 + i)
            for member in members:
                outcome = await store.add_correction(correction, message_key=f"m{i}", member_id=member)
                assert outcome == "stored", outcome
    finally:
        await store.close()
    summary = await export_database(database, out, base, rules)
    return {
        "planted_sentences": len(planted),
        "corrections": summary.corrections,
        "rows_exported": summary.rows,
        "train_rows": summary.train_rows,
        "dev_rows": summary.dev_rows,
        "dropped": summary.dropped,
        "capped": summary.capped,
    }


def held_out_scores(model_dir: Path, threads: int) -> dict:
    classifier = EmotionClassifier.load(model_dir, backend="torch", threads=threads)
    predictions = classifier.predict([clean_markup(t) for t in HELD_OUT], top_k=None)
    ranks = [[s.label for s in p.top].index(TARGET) + 1 for p in predictions]
    scores = [next(s.score for s in p.top if s.label == TARGET) for p in predictions]
    return {
        "top1_share": sum(r == 1 for r in ranks) / len(ranks),
        "mean_rank": sum(ranks) / len(ranks),
        "mean_score": sum(scores) / len(scores),
        "top1_labels": [p.top[0].label for p in predictions],
    }


def evaluate(model_dir: Path, split: str, threads: int, extra: Path | None = None) -> dict:
    command = [sys.executable, "-m", "moodring", "evaluate", "--model", str(model_dir), "--split", split, "--json"]
    command += ["--backend", "torch", "--threads", str(threads)]
    if extra:
        command += ["--extra-data", str(extra)]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def model_report(model_dir: Path, threads: int, extra: Path) -> dict:
    dev = evaluate(model_dir, "dev", threads, extra)
    test = evaluate(model_dir, "test", threads)
    metrics = json.loads((model_dir / "moodring.json").read_text())["dev_metrics"]
    return {
        "model": str(model_dir),
        "held_out": held_out_scores(model_dir, threads),
        "dev_macro_f1": dev["macro_f1"],
        "dev_cross_fit_macro_f1": metrics["cross_fit_macro_f1"]["per_label"],
        "test_macro_f1": test["macro_f1"],
        "community_dev": dev.get("community_dev"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, required=True, help="members who plant corrections")
    parser.add_argument("--rows-per-member", type=int, required=True, help="planted sentences each member corrects")
    parser.add_argument(
        "--members-per-text",
        type=int,
        help="members correcting each sentence (default 2, the fewest that count; 1 with one member)",
    )
    parser.add_argument("--base", type=Path, required=True, help="the model serving before the retrain")
    parser.add_argument("--out", type=Path, required=True, help="an empty directory for everything this run writes")
    parser.add_argument(
        "--train-args", default="", help='more `moodring train` options, the base model\'s recipe: --train-args="..."'
    )
    parser.add_argument("--threads", type=int, default=1, help="threads for scoring (training takes --train-args)")
    parser.add_argument(
        "--export-only", action="store_true", help="plant and export, print what the export holds; no training"
    )
    args = parser.parse_args()
    per_text = args.members_per_text or min(2, args.members)
    planted = planting(args.members, args.rows_per_member, per_text)
    rules = counting_rules_setting(os.environ)
    args.out.mkdir(parents=True, exist_ok=False)
    corrections = args.out / "corrections"
    export = asyncio.run(seed_and_export(planted, args.out / "bot.sqlite3", corrections, args.base, rules))
    export["planted_rows_exported"] = planted_rows_exported(planted, corrections)
    report = {
        "command": shlex.join(sys.argv),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}",
        "members": args.members,
        "rows_per_member": args.rows_per_member,
        "members_per_text": per_text,
        "rules": {"member_rows": rules.member_rows, "server_share": rules.server_share},
        "export": export,
    }
    if args.export_only or not export["planted_rows_exported"]:
        if not export["planted_rows_exported"]:
            report["retrained"] = (
                "no: the export holds none of the planted rows, so a retrain trains on GoEmotions alone with the base "
                "recipe: the base model by construction (the same seed and data give the same weights)"
            )
        if not args.export_only:
            report["before"] = report["after"] = {
                "model": str(args.base),
                "held_out": held_out_scores(args.base, args.threads),
            }
        write_report(args.out, report)
        return
    candidate = args.out / "model"
    command = [sys.executable, "-m", "moodring", "train", "--backbone", "minilm", "--extra-data", str(corrections)]
    command += ["--out", str(candidate), "--work-dir", str(args.out / "run"), *shlex.split(args.train_args)]
    started = time.monotonic()
    with open(args.out / "train.log", "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    train_seconds = time.monotonic() - started
    report |= {
        "train_command": shlex.join(command),
        "train_seconds": round(train_seconds),
        "before": model_report(args.base, args.threads, corrections),
        "after": model_report(candidate, args.threads, corrections),
    }
    write_report(args.out, report)


def write_report(out: Path, report: dict) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
