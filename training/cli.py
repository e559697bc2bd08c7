"""The `train` and `evaluate` subcommands."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from model.cli import positive_int

DATA_HELP = "GoEmotions directory in the original TSV layout (default: $GOEMOTIONS_DIR, else the hub)"
MODEL_HELP = "exported model directory (default: $MOODRING_MODEL_DIR or models/moodring-goemotions)"


def register(commands: argparse._SubParsersAction) -> None:
    from training.config import TrainArgs

    defaults = {f.name: f.default for f in fields(TrainArgs)}
    train = commands.add_parser("train", help="fine-tune SqueezeBERT on GoEmotions with Tez and export it")
    train.add_argument("--data-dir", help=DATA_HELP)
    train.add_argument(
        "--backbone",
        default=None,
        help="hub id, local directory, or `minilm` (offline pretrained start; needs .[offline]); "
        "default: $MOODRING_BACKBONE or squeezebert/squeezebert-uncased",
    )
    train.add_argument("--out", help="where to export the model " + MODEL_HELP[MODEL_HELP.index("(") :])
    train.add_argument("--work-dir", help="best checkpoint and progress.jsonl (default: runs/<out name>)")
    for name, kind, help_text in [
        ("epochs", positive_int, "training epochs"),
        ("batch_size", positive_int, "training batch size"),
        ("learning_rate", float, "peak AdamW learning rate"),
        ("weight_decay", float, "AdamW weight decay"),
        ("warmup_ratio", float, "share of steps spent warming up the learning rate"),
        ("max_length", positive_int, "tokens kept per text"),
        ("dropout", float, "dropout before the classification head"),
        ("seed", int, "random seed (same seed, same data: same result on the CPU)"),
        ("workers", int, "data-loader worker processes"),
        ("patience", positive_int, "epochs without dev improvement before stopping"),
        ("train_limit", positive_int, "use only the first N training rows"),
        ("dev_limit", positive_int, "use only the first N dev rows"),
    ]:
        flag = "--" + name.replace("_", "-")
        train.add_argument(flag, type=kind, default=defaults[name], help=f"{help_text} (default: {defaults[name]})")
    train.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32", help="fp16/bf16 on a GPU")
    train.set_defaults(handler=run_train)

    evaluate = commands.add_parser("evaluate", help="report a model's accuracy on the dev or test split")
    evaluate.add_argument("--model", help=MODEL_HELP)
    evaluate.add_argument("--split", choices=["dev", "test"], default="dev", help="test only for the final report")
    evaluate.add_argument("--data-dir", help=DATA_HELP)
    evaluate.add_argument("--json", action="store_true", help="print the report as one JSON object")
    evaluate.set_defaults(handler=run_evaluate)


def run_train(args: argparse.Namespace) -> int:
    import os

    from model.parent_watch import watch_parent

    watch_parent()  # started by the bot's retrainer: stop if the bot dies
    from training.backbones import BackboneError
    from training.config import DEFAULT_BACKBONE, TrainArgs
    from training.data import DataError
    from training.train import TrainingError, train

    names = {f.name for f in fields(TrainArgs)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["backbone"] = args.backbone or os.environ.get("MOODRING_BACKBONE") or DEFAULT_BACKBONE
    try:
        out = train(TrainArgs(**values))
    except (DataError, BackboneError, TrainingError) as error:
        print(f"moodring train: {error}", file=sys.stderr)
        return 2
    print(f'Model exported to {out}. Try: moodring classify --model {out} "What a lovely surprise!"')
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from model.parent_watch import watch_parent

    watch_parent()  # started by the bot's retrainer: stop if the bot dies
    from model.classifier import ModelError
    from training.data import DataError
    from training.evaluate import evaluate, format_report

    try:
        report = evaluate(args.model, split=args.split, data_dir=args.data_dir)
    except (ModelError, DataError) as error:
        print(f"moodring evaluate: {error}", file=sys.stderr)
        return 2
    if args.json:
        import json

        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0
