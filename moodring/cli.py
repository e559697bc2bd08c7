"""`moodring train | evaluate | classify | run | sync-commands | corrections | db | sandbox`.

Each package registers its own subcommands (`sandbox` is this package's own: moodring/sandbox_command.py) and
imports its heavy modules only when one runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from dotenv import load_dotenv


def build_parser() -> argparse.ArgumentParser:
    from bot import cli as bot_cli
    from model import cli as model_cli
    from moodring import sandbox_command
    from training import cli as training_cli

    parser = argparse.ArgumentParser(prog="moodring", description="Emotion-aware Discord bot and its GoEmotions model.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    training_cli.register(commands)
    model_cli.register(commands)
    bot_cli.register(commands)
    sandbox_command.register(commands)
    _name_each_parser(parser)
    return parser


def _name_each_parser(parser: argparse.ArgumentParser) -> None:
    """Let every (sub)command's parser put itself in the namespace as `parser`, the innermost one winning, so that
    an option no parser knows is reported with the usage of the command it was given to (`main`)."""
    parser.set_defaults(parser=parser)
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for subparser in action.choices.values():
            _name_each_parser(subparser)


def main(argv: list[str] | None = None) -> int:
    load_dotenv()
    # Weight-loading bars from transformers are noise here; training keeps its own Tez progress bar.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # argparse would blame the top-level parser and show its usage, not the subcommand's
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from bot.store.redact import redact_log_lines

    redact_log_lines()  # a password in a URL never reaches a log line, whoever logs it
    for noisy in ("httpx", "httpcore", "urllib3", "filelock", "accelerate", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
