"""The `train` and `evaluate` subcommands."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from model.cli import add_serving_options, finite_number, positive_int, serving_threads, whole_number

DATA_HELP = "GoEmotions directory in the original TSV layout (default: $GOEMOTIONS_DIR, else the hub)"
EXTRA_HELP = "community corrections in GoEmotions' layout (written by `moodring corrections export`)"
MAX_POSITIONS = 512
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
    # Every numeric option has its range checked here, so that a bad value is a usage error, not a traceback.
    for name, kind, help_text in [
        ("epochs", positive_int, "training epochs"),
        ("batch_size", positive_int, "training batch size"),
        ("learning_rate", finite_number(0.0, 1.0, above_minimum=True), "peak AdamW learning rate"),
        ("weight_decay", finite_number(0.0, 1.0), "AdamW weight decay"),
        ("warmup_ratio", finite_number(0.0, 1.0), "share of steps spent warming up the learning rate"),
        # [CLS] and [SEP] at least; 512 positions in every SqueezeBERT and BERT checkpoint.
        ("max_length", whole_number(2, MAX_POSITIONS), "tokens kept per text"),
        ("dropout", finite_number(0.0, 1.0, below_maximum=True), "dropout before the classification head"),
        ("seed", whole_number(0, 2**32 - 1), "random seed (same seed, same data: same result on the CPU)"),
        ("workers", whole_number(0), "data-loader worker processes"),
        ("patience", positive_int, "epochs without dev improvement before stopping"),
        ("train_limit", positive_int, "use only the first N training rows"),
        ("dev_limit", positive_int, "use only the first N dev rows"),
    ]:
        flag = "--" + name.replace("_", "-")
        train.add_argument(flag, type=kind, default=defaults[name], help=f"{help_text} (default: {defaults[name]})")
    train.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32", help="fp16/bf16 on a GPU")
    train.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch intra-op threads (default: $MOODRING_THREADS, else $OMP_NUM_THREADS, else the usable cores)",
    )
    train.add_argument(
        "--no-onnx",
        dest="onnx",
        action="store_false",
        help="skip model.onnx / model.int8.onnx (add them later with `moodring export-onnx`)",
    )
    train.add_argument("--extra-data", help=EXTRA_HELP + "; its train split is mixed into GoEmotions' train")
    train.add_argument(
        "--extra-weight",
        type=positive_int,
        default=defaults["extra_weight"],
        help=f"copies of the extra train split mixed in (default: {defaults['extra_weight']})",
    )
    train.set_defaults(handler=run_train)

    export = commands.add_parser(
        "export-onnx",
        help="add model.onnx (fp32) and model.int8.onnx to an exported model, int8 thresholds tuned on dev",
    )
    export.add_argument("--model", help=MODEL_HELP)
    export.add_argument("--data-dir", help=DATA_HELP)
    export.set_defaults(handler=run_export_onnx)

    evaluate = commands.add_parser("evaluate", help="report a model's accuracy on the dev or test split")
    evaluate.add_argument("--model", help=MODEL_HELP)
    evaluate.add_argument("--split", choices=["dev", "test"], default="dev", help="test only for the final report")
    evaluate.add_argument("--data-dir", help=DATA_HELP)
    evaluate.add_argument("--json", action="store_true", help="print the report as one JSON object")
    evaluate.add_argument("--extra-data", help=EXTRA_HELP + "; its dev split is reported as community dev")
    add_serving_options(evaluate)
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
    if serving_threads("train", args) is None:
        return 2
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

    threads = serving_threads("evaluate", args)
    if threads is None:
        return 2
    try:
        report = evaluate(
            args.model,
            split=args.split,
            data_dir=args.data_dir,
            backend=args.backend,
            threads=threads,
            extra_data=args.extra_data,
        )
    except (ModelError, DataError) as error:
        print(f"moodring evaluate: {error}", file=sys.stderr)
        return 2
    if args.json:
        import json

        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0


def run_export_onnx(args: argparse.Namespace) -> int:
    from model.classifier import ModelError
    from training.data import DataError
    from training.export import export_onnx

    try:
        metadata = export_onnx(args.model, data_dir=args.data_dir)
    except (ModelError, DataError) as error:
        print(f"moodring export-onnx: {error}", file=sys.stderr)
        return 2
    int8 = metadata.dev_metrics_by_backend["onnx-int8"]
    print(
        f"Added {', '.join(metadata.onnx_files)}. Dev macro-F1: int8 {int8['macro_f1']:.4f} with its own thresholds, "
        f"torch fp32 {int8['torch_macro_f1']:.4f}; largest score shift {int8['max_score_shift']:.4f}."
    )
    return 0
