"""The `moodring` command line: help and argument errors answer without loading torch, and every numeric
training option is range-checked by the parser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from moodring.cli import build_parser

HEAVY_MODULES = ("torch", "transformers", "datasets", "discord")
# A missing data directory too, so that a parser without range checks fails fast instead of training.
TRAIN_ERROR = ["train", "--data-dir", "/nonexistent/goemotions", "--dropout", "2"]

# Run in a fresh interpreter, so that modules other tests imported cannot hide an import done here.
PROBE = textwrap.dedent(
    """
    import contextlib, io, json, sys

    from moodring.cli import build_parser, main

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    answers = {}
    for argv in [["--help"], *([name, "--help"] for name in commands), TRAIN_ERROR, ["run"]]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exit:
                code = exit.code
        answers[" ".join(argv)] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
    heavy = [name for name in HEAVY if name in sys.modules]
    print(json.dumps({"commands": sorted(commands), "answers": answers, "heavy": heavy}))
    """
)


def test_help_and_argument_errors_import_no_heavy_module(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
    script = f"HEAVY = {HEAVY_MODULES!r}\nTRAIN_ERROR = {TRAIN_ERROR!r}\n" + PROBE
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["commands"] == [
        "calibrate", "classify", "cluster", "corrections", "db", "evaluate", "export-onnx", "run", "sandbox",
        "sync-commands", "train",
    ]  # fmt: skip
    answers = report["answers"]
    for name in ["--help", *(f"{command} --help" for command in report["commands"])]:
        assert answers[name]["code"] == 0 and "usage: moodring" in answers[name]["stdout"], name
    train_error = answers[" ".join(TRAIN_ERROR)]
    assert train_error["code"] == 2 and "argument --dropout" in train_error["stderr"]
    assert answers["run"]["code"] == 2 and "DISCORD_TOKEN is not set" in answers["run"]["stderr"]
    assert report["heavy"] == []  # torch, transformers, datasets and discord.py load only when a command runs


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--dropout", "2", "at least 0 and below 1"),
        ("--dropout", "-0.1", "at least 0 and below 1"),
        ("--dropout", "nan", "finite"),
        ("--workers", "-1", "at least 0"),
        ("--workers", "two", "whole number"),
        ("--learning-rate", "nan", "finite"),
        ("--learning-rate", "inf", "finite"),
        ("--learning-rate", "0", "above 0 and at most 1"),
        ("--learning-rate", "-1e-5", "above 0 and at most 1"),
        ("--weight-decay", "-0.01", "at least 0 and at most 1"),
        ("--weight-decay", "-inf", "finite"),
        ("--warmup-ratio", "1.5", "at least 0 and at most 1"),
        ("--epochs", "0", "at least 1"),
        ("--batch-size", "-32", "at least 1"),
        ("--max-length", "1", "at least 2 and at most 512"),
        ("--max-length", "100000", "at least 2 and at most 512"),
        ("--seed", "-1", "at least 0 and at most 4294967295"),
        ("--seed", str(2**32), "at least 0 and at most 4294967295"),
        ("--patience", "0", "at least 1"),
        ("--train-limit", "0", "at least 1"),
        ("--dev-limit", "-5", "at least 1"),
    ],
)
def test_training_options_are_range_checked(
    capsys: pytest.CaptureFixture, option: str, value: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(["train", f"{option}={value}"])  # "=": argparse reads "-1" alone as an option
    assert exit.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"moodring train: error: argument {option}") and message in error, error


def test_training_options_in_range_parse() -> None:
    edges = "--dropout 0 --workers 0 --learning-rate 1e-4 --weight-decay 0 --warmup-ratio 1 --max-length 512"
    args = build_parser().parse_args(["train", *edges.split(), "--seed", "0", "--dev-limit", "10"])
    assert (args.dropout, args.workers, args.learning_rate, args.weight_decay) == (0.0, 0, 1e-4, 0.0)
    assert (args.warmup_ratio, args.max_length, args.seed, args.dev_limit) == (1.0, 512, 0, 10)


def test_model_package_names_resolve_to_their_homes() -> None:
    import importlib

    import model

    assert sorted(model.__all__) == sorted(model._HOMES)
    for name in model.__all__:
        assert getattr(model, name) is getattr(importlib.import_module(model._HOMES[name]), name)
    with pytest.raises(AttributeError):
        model.NoSuchName  # noqa: B018


def test_a_plain_train_uses_trainargs_offline_backbone(monkeypatch: pytest.MonkeyPatch) -> None:
    """`moodring train` with no --backbone trains from TrainArgs' default, the offline `minilm` (the one every
    published figure was measured with; a hub-only default made a plain `moodring train` fail offline)."""
    from training.config import TrainArgs

    monkeypatch.delenv("MOODRING_BACKBONE", raising=False)
    assert build_parser().parse_args(["train"]).backbone == TrainArgs().backbone == "minilm"
    monkeypatch.setenv("MOODRING_BACKBONE", "./my-backbone")  # the environment's choice wins over the default
    assert build_parser().parse_args(["train"]).backbone == "./my-backbone"


# A subcommand's own usage for its bad options, and a missing model named at once, before torch is imported.
FAST_ANSWERS = textwrap.dedent(
    """
    import contextlib, io, json, sys

    from moodring.cli import main

    answers = {}
    for argv in (["classify", "--jsn", "x"], ["db", "migrate-to", "--frobnicate", "x"], *CASES):
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exit:
                code = exit.code
        answers[" ".join(argv)] = {"code": code, "stderr": err.getvalue()}
    print(json.dumps({"answers": answers, "torch": "torch" in sys.modules}))
    """
)


def test_bad_options_get_their_subcommands_usage_and_a_missing_model_is_named_at_once(tmp_path) -> None:
    not_a_model = tmp_path / "README.md"
    not_a_model.write_text("# not a model\n")
    cases = [
        ["classify", "--model", str(not_a_model), "hi"],
        ["classify", "--model", str(tmp_path / "none"), "hi"],
        ["evaluate", "--model", str(tmp_path / "none")],
    ]
    script = f"CASES = {cases!r}\n" + FAST_ANSWERS
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    answers = report["answers"]
    classify = answers["classify --jsn x"]
    assert classify["code"] == 2 and classify["stderr"].startswith("usage: moodring classify"), classify
    assert "unrecognized arguments: --jsn" in classify["stderr"]
    assert answers["db migrate-to --frobnicate x"]["stderr"].startswith("usage: moodring db migrate-to")
    file_case, missing_case, evaluate_case = (answers[" ".join(case)] for case in cases)
    no_model = f"No trained moodring model in {tmp_path / 'none'} "
    assert file_case["code"] == 2 and f"{not_a_model} is a file, not a model directory" in file_case["stderr"]
    assert missing_case["code"] == 2 and no_model in missing_case["stderr"]
    assert evaluate_case["code"] == 2 and no_model in evaluate_case["stderr"]
    assert not report["torch"]  # named before the classifier (and torch, and the data) is loaded


def test_train_help_shows_every_default_and_reads_right() -> None:
    from training.config import TrainArgs

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    for action in train._actions:
        if action.dest in ("help", "onnx") or not action.option_strings:
            continue
        default = getattr(TrainArgs, action.dest, None)
        if default is not None:
            assert "(default: " in (action.help or ""), f"{action.option_strings[0]} does not show its default"
    no_onnx = next(action for action in train._actions if "--no-onnx" in action.option_strings)
    assert not no_onnx.help.startswith("skip: also"), no_onnx.help


def test_classify_shows_control_characters_escaped() -> None:
    """Input text is printed back: escapes and control characters must not reach the terminal as themselves."""
    from types import SimpleNamespace

    from model.cli import format_prediction

    shown = format_prediction(
        SimpleNamespace(text="so \x1b[31mred\x1b[0m\x07 \u202eevil 😂\u200d", top=[], unreadable=False)
    )
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    assert "so \\x1b[31mred\\x1b[0m\\x07 \\u202eevil 😂\u200d" in shown  # emoji (and their joiners) kept
