"""The project's argparse pieces: range-checked numbers (so that a bad value is a usage error, not a traceback) and
the options every command that runs the classifier shares.

`moodring classify`, `evaluate`, `train` (training/config.py), `run` and `cluster` all check their numbers with these.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

from model.storage import DEFAULT_MODEL_DIR

#: `--model`'s help, for every command that reads an exported model.
MODEL_HELP = f"exported model directory (default: $MOODRING_MODEL_DIR, else {DEFAULT_MODEL_DIR})"


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from `minimum` to `maximum` (inclusive; None for no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be a whole number of {_range_words(minimum, maximum)}, got {value}")
        return value

    return parse


def finite_number(
    minimum: float, maximum: float, *, above_minimum: bool = False, below_maximum: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite number from `minimum` to `maximum`, either end excluded on request.

    nan and infinities are refused: every comparison with nan is false, so it would pass any range check.
    """

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        too_low = value <= minimum if above_minimum else value < minimum
        too_high = value >= maximum if below_maximum else value > maximum
        if too_low or too_high:
            words = _range_words(minimum, maximum, above_minimum, below_maximum)
            raise argparse.ArgumentTypeError(f"must be {words}, got {text}")
        return value

    return parse


def _range_words(minimum, maximum, above_minimum: bool = False, below_maximum: bool = False) -> str:
    def show(bound) -> str:
        return str(bound) if isinstance(bound, int) else f"{bound:g}"

    words = f"{'above' if above_minimum else 'at least'} {show(minimum)}"
    if maximum is not None:
        words += f" and {'below' if below_maximum else 'at most'} {show(maximum)}"
    return words


positive_int = whole_number(1)


def add_serving_options(command: argparse.ArgumentParser) -> None:
    """`--backend` and `--threads`, shared by every command that runs the classifier."""
    from model.backends import BACKEND_CHOICES

    command.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default="auto",
        help="inference backend; auto: fp32 ONNX when the model has it and onnxruntime is installed, else torch; "
        "onnx-int8 is faster, but a text's scores move slightly with its batch (default: auto)",
    )
    command.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="intra-op threads (default: $MOODRING_THREADS, else $OMP_NUM_THREADS, else the usable cores)",
    )


def serving_threads(command: str, args: argparse.Namespace) -> int | None:
    """The thread count for `args`, or None after printing why the environment's setting is unusable."""
    from model.threads import resolve_threads

    try:
        return resolve_threads(args.threads)
    except ValueError as error:
        print(f"moodring {command}: {error}", file=sys.stderr)
        return None
