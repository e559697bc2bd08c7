"""How many community corrections it takes to teach the real model a new word, and what the retrain costs on
GoEmotions: the planted-pattern protocol of tests/test_retrain_gate.py, on the real backbone.

    python benchmarks/planted_corrections.py --count 40 --base MODEL --out DIR [--train-args="--epochs 1 ..."]

1. A real bot database (SQLite) gets `--count` corrections, each a different sentence with the made-up word
   "skibbly", labelled `excitement` by its member (the model said `neutral`).
2. They are exported as `/moodring retrain` does (bot/learning/community_data.py: majority labels, a hash split into
   train and community dev).
3. `moodring train --extra-data` trains a candidate with `--train-args` (give the base model's recipe, so that the
   corrections are the only difference).
4. Both models are scored with torch: on held-out sentences with the word (never in the planted set) the share
   ranked `excitement` first and excitement's mean rank and score; GoEmotions dev macro-F1 (tuned on dev, and the
   5-fold cross-fit) and test macro-F1; community-dev micro-F1.

Writes DIR/report.json and prints it. Training takes the real recipe's time: run it with the cores to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path

from bot.learning.community_data import export_database
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


def planted_texts(count: int) -> list[str]:
    texts = [f"{subject} is so {WORD} {ending}" for ending in ENDINGS for subject in SUBJECTS]
    if count > len(texts):
        raise SystemExit(f"--count is at most {len(texts)}")
    return texts[:count]


async def seed_and_export(count: int, database: Path, out: Path, base: Path) -> dict:
    store = await open_store(database, member_key=secrets.token_bytes(32))  # a key of its own: one run, one file
    try:
        await store.set_corrections_enabled(1, True)
        for i, text in enumerate(planted_texts(count)):
            correction = Correction(1, 2, clean_markup(text), (TARGET,), ("neutral",), "base", 1_700_000_000.0)
            outcome = await store.add_correction(correction, message_key=f"m{i}", member_id=1000 + i)
            assert outcome == "stored", outcome
    finally:
        await store.close()
    summary = await export_database(database, out, base)
    return {"corrections": summary.corrections, "train_rows": summary.train_rows, "dev_rows": summary.dev_rows}


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
    parser.add_argument("--count", type=int, required=True, help="planted corrections (at most 160)")
    parser.add_argument("--base", type=Path, required=True, help="the model serving before the retrain")
    parser.add_argument("--out", type=Path, required=True, help="an empty directory for everything this run writes")
    parser.add_argument(
        "--train-args", default="", help='more `moodring train` options, the base model\'s recipe: --train-args="..."'
    )
    parser.add_argument("--threads", type=int, default=1, help="threads for scoring (training takes --train-args)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=False)
    corrections = args.out / "corrections"
    export = asyncio.run(seed_and_export(args.count, args.out / "bot.sqlite3", corrections, args.base))
    candidate = args.out / "model"
    command = [sys.executable, "-m", "moodring", "train", "--backbone", "minilm", "--extra-data", str(corrections)]
    command += ["--out", str(candidate), "--work-dir", str(args.out / "run"), *shlex.split(args.train_args)]
    started = time.monotonic()
    with open(args.out / "train.log", "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    train_seconds = time.monotonic() - started
    report = {
        "command": shlex.join(sys.argv),
        "train_command": shlex.join(command),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}",
        "count": args.count,
        "export": export,
        "train_seconds": round(train_seconds),
        "before": model_report(args.base, args.threads, corrections),
        "after": model_report(candidate, args.threads, corrections),
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
