"""The `train` and `evaluate` subcommands."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

from model.arguments import MODEL_HELP, add_serving_options, serving_threads

DATA_HELP = "GoEmotions directory in the original TSV layout (default: $GOEMOTIONS_DIR, else the hub)"
EXTRA_HELP = "community corrections in GoEmotions' layout (written by `moodring corrections export`)"
DATA_FILE_HELP = (
    "FILE: .tsv (tab-separated) or .csv (comma-separated), UTF-8, a header row naming a text column and a label "
    "column; several labels in a row are separated by --label-separator. MAP: .json, one key naming the level and "
    'holding data set label -> target or list of targets, e.g. {"goemotions": {"happy": ["joy"], "lol": "amusement"}} '
    'or {"ekman": {"mad": "anger"}}; or .tsv, a header "label<TAB>goemotions" (or ekman), then one label and its '
    "comma-separated targets a row. Ekman groups: anger, disgust, fear, joy, sadness, surprise, neutral; at that "
    "level the model's labels are collapsed into their groups. Only the targets the map reaches are scored."
)


def register(commands: argparse._SubParsersAction) -> None:
    from training.config import TrainArgs
    from training.labelled_data import LABEL_COLUMNS, LABEL_SEPARATOR, TEXT_COLUMN

    train = commands.add_parser("train", help="fine-tune SqueezeBERT on GoEmotions with Tez and export it")
    for spec in fields(TrainArgs):
        flag, help_text, check = "--" + spec.name.replace("_", "-"), spec.metadata["help"], spec.metadata["check"]
        if spec.name == "onnx":
            train.add_argument(
                "--no-onnx", dest="onnx", action="store_false", help=f"do not export {help_text}; exported by default"
            )
        elif spec.type == "bool" and spec.default:
            help_text = f"do not {help_text} (default: {spec.name})"
            train.add_argument(f"--no-{flag[2:]}", dest=spec.name, action="store_false", help=help_text)
        elif spec.type == "bool":
            train.add_argument(flag, action="store_true", help=f"{help_text} (default: off)")
        elif spec.metadata["choices"]:
            help_text += f" (default: {spec.default})"
            train.add_argument(flag, choices=spec.metadata["choices"], default=spec.default, help=help_text)
        elif spec.name == "teacher":
            train.add_argument(
                flag, nargs="+", metavar="DIR", default=spec.default, help=help_text + " (default: none)"
            )
        elif spec.name == "backbone":  # the environment's choice, else TrainArgs'
            help_text += f" (default: $MOODRING_BACKBONE, else {spec.default})"
            train.add_argument(flag, default=os.environ.get("MOODRING_BACKBONE") or spec.default, help=help_text)
        elif check is None:
            train.add_argument(flag, default=spec.default, help=help_text)
        else:  # every numeric option is range-checked here, so a bad value is a usage error, not a traceback
            default = "" if spec.default is None else f" (default: {spec.default})"
            train.add_argument(flag, type=check, default=spec.default, help=help_text + default)
    train.set_defaults(handler=run_train)

    export = commands.add_parser(
        "export-onnx",
        help="add model.onnx (fp32) and model.int8.onnx to an exported model, int8 thresholds tuned on dev",
    )
    export.add_argument("--model", help=MODEL_HELP)
    export.add_argument("--data-dir", help=DATA_HELP)
    export.set_defaults(handler=run_export_onnx)

    calibrate = commands.add_parser(
        "calibrate",
        help="(re)fit the calibrated probabilities an exported model shows, on the dev rows it was trained with",
    )
    calibrate.add_argument("--model", help=MODEL_HELP)
    calibrate.add_argument("--data-dir", help=DATA_HELP)
    calibrate.set_defaults(handler=run_calibrate)

    evaluate = commands.add_parser(
        "evaluate",
        help="report a model's accuracy on the dev or test split, or on your own labelled file",
        description="Report a model's accuracy on GoEmotions' dev or test split (written into the model directory as "
        "eval-<split>.json and .png), or with --data and --label-map on any labelled TSV or CSV file. "
        + DATA_FILE_HELP,
    )
    evaluate.add_argument("--model", help=MODEL_HELP)
    source = evaluate.add_mutually_exclusive_group()
    source.add_argument("--split", choices=["dev", "test"], default="dev", help="test only for the final report")
    source.add_argument("--data", metavar="FILE", help="a labelled .tsv or .csv file with a header row (see above)")
    evaluate.add_argument("--data-dir", help=DATA_HELP)
    evaluate.add_argument("--json", action="store_true", help="print the report as one JSON object")
    evaluate.add_argument("--extra-data", help=EXTRA_HELP + "; its dev split is reported as community dev")
    evaluate.add_argument("--label-map", metavar="MAP", help="with --data: the .json or .tsv map of its labels")
    evaluate.add_argument(
        "--text-column", default=TEXT_COLUMN, help=f"with --data: the text column's name (default: {TEXT_COLUMN})"
    )
    evaluate.add_argument(
        "--label-column", help=f"with --data: the label column's name (default: {' or '.join(LABEL_COLUMNS)})"
    )
    evaluate.add_argument(
        "--label-separator",
        default=LABEL_SEPARATOR,
        help=f"with --data: what separates a row's labels (default: {LABEL_SEPARATOR!r})",
    )
    evaluate.add_argument(
        "--out", metavar="FILE", help="with --data: also write the report there as JSON (chart beside)"
    )
    add_serving_options(evaluate)
    evaluate.set_defaults(handler=run_evaluate)


def run_train(args: argparse.Namespace) -> int:
    from model.parent_watch import watch_parent

    watch_parent()  # started by the bot's retrainer: stop if the bot dies
    from training.backbones import BackboneError
    from training.config import TrainArgs
    from training.data import DataError
    from training.train import TrainingError, train

    names = {f.name for f in fields(TrainArgs)}
    values = {k: v for k, v in vars(args).items() if k in names}
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
    from model.storage import ModelError, require_model_directory

    try:  # before torch and the data load: a missing model is said at once
        require_model_directory(args.model)
    except ModelError as error:
        print(f"moodring evaluate: {error}", file=sys.stderr)
        return 2
    misplaced = _misplaced_data_option(args)
    if misplaced:
        print(f"moodring evaluate: {misplaced}", file=sys.stderr)
        return 2
    from training.data import DataError
    from training.evaluate import evaluate, evaluate_data, format_report
    from training.labelled_data import LabelledDataError

    threads = serving_threads("evaluate", args)
    if threads is None:
        return 2
    try:
        if args.data is None:
            report = evaluate(
                args.model,
                split=args.split,
                data_dir=args.data_dir,
                backend=args.backend,
                threads=threads,
                extra_data=args.extra_data,
            )
        else:
            report = evaluate_data(
                args.model,
                args.data,
                args.label_map,
                text_column=args.text_column,
                label_column=args.label_column,
                separator=args.label_separator,
                backend=args.backend,
                threads=threads,
                out=args.out,
            )
    except (ModelError, DataError, LabelledDataError) as error:
        print(f"moodring evaluate: {error}", file=sys.stderr)
        return 2
    if args.json:
        import json

        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0


def _misplaced_data_option(args: argparse.Namespace) -> str | None:
    """Why `evaluate`'s options do not go together, or None."""
    if args.data is None:
        given = [flag for flag, value in (("--label-map", args.label_map), ("--out", args.out)) if value is not None]
        return f"{given[0]} goes with --data FILE" if given else None
    if args.label_map is None:
        return "--data needs --label-map MAP"
    if args.extra_data is not None:
        return "--extra-data goes with --split (its dev split is reported as community dev)"
    return None


def run_export_onnx(args: argparse.Namespace) -> int:
    from model.storage import ModelError
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


def run_calibrate(args: argparse.Namespace) -> int:
    from model.storage import ModelError, require_model_directory

    try:  # before torch and the data load: a missing model is said at once
        require_model_directory(args.model)
    except ModelError as error:
        print(f"moodring calibrate: {error}", file=sys.stderr)
        return 2
    from training.data import DataError
    from training.export import calibrate

    try:
        metadata = calibrate(args.model, data_dir=args.data_dir)
    except (ModelError, DataError) as error:
        print(f"moodring calibrate: {error}", file=sys.stderr)
        return 2
    for backend, record in metadata.calibration.items():
        figures = record["cross_fit"]
        print(
            f"{backend}: {record['method']} on {record['rows']} dev rows; cross-fit log-loss "
            f"{figures[record['method']]['log_loss']:.4f} (raw scores {figures['raw']['log_loss']:.4f})"
        )
    return 0
