"""The `classify` subcommand."""

from __future__ import annotations

import argparse
import json
import os
import sys
import unicodedata

from model.arguments import MODEL_HELP, add_serving_options, positive_int, serving_threads

BAR_WIDTH = 20


def register(commands: argparse._SubParsersAction) -> None:
    classify = commands.add_parser("classify", help="print the top-5 emotions of each text")
    classify.add_argument(
        "texts", nargs="*", metavar="TEXT", help="texts to classify, UTF-8 (default: one per stdin line)"
    )
    classify.add_argument("--model", help=MODEL_HELP)
    classify.add_argument("--top-k", type=positive_int, default=5, help="emotions to show per text (default: 5)")
    classify.add_argument("--json", action="store_true", help="print a JSON list, one object per text")
    add_serving_options(classify)
    classify.set_defaults(handler=run_classify)


def run_classify(args: argparse.Namespace) -> int:
    from model.storage import ModelError, require_model_directory

    try:  # before torch loads, and before waiting on stdin: a missing model is said at once
        model_dir = require_model_directory(args.model)
    except ModelError as error:
        print(f"moodring classify: {error}", file=sys.stderr)
        return 2
    if args.texts:
        texts = [_decode(os.fsencode(text), f"argument {number}") for number, text in enumerate(args.texts, start=1)]
    else:
        lines = (line.removesuffix(b"\n").removesuffix(b"\r") for line in sys.stdin.buffer)
        texts = [_decode(line, f"line {number}") for number, line in enumerate(lines, start=1)]
    if not texts:
        print("moodring classify: no text given (pass TEXT arguments or lines on stdin)", file=sys.stderr)
        return 2
    threads = serving_threads("classify", args)
    if threads is None:
        return 2
    from model.classifier import EmotionClassifier

    try:
        classifier = EmotionClassifier.load(model_dir, backend=args.backend, threads=threads)
    except ModelError as error:
        print(f"moodring classify: {error}", file=sys.stderr)
        return 2
    predictions = classifier.predict(texts, top_k=args.top_k)
    if args.json:
        print(json.dumps([p.to_dict() for p in predictions], ensure_ascii=False, indent=2))
        return 0
    for prediction in predictions:
        print(format_prediction(prediction))
    return 0


def _decode(data: bytes, where: str) -> str:
    """UTF-8 text; bytes that are not UTF-8 become U+FFFD, with a warning, so that one bad line costs no others."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        print(
            f"moodring classify: {where} is not valid UTF-8; classifying it with U+FFFD for the bad bytes",
            file=sys.stderr,
        )
        return data.decode("utf-8", errors="replace")


#: Characters that would act on the terminal, or reorder what it shows (Unicode's bidirectional overrides and
#: isolates), when a text is printed back.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def terminal_safe(text: str) -> str:
    """`text` with control characters and bidirectional overrides written as escapes (`\\x1b`, `\\u202e`); emoji,
    their joiners and every other printable character stay as they are."""
    return "".join(
        (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        if unicodedata.category(char) == "Cc" or char in _BIDI_CONTROLS
        else char
        for char in text
    )


def format_prediction(prediction) -> str:
    """A small text table in `prediction.top`'s order (labels above their thresholds first, each group by
    probability): label, probability bar, calibrated probability as a percentage, and a check mark when the raw
    score is above the label's threshold. `--json` gives the raw score too."""
    text = terminal_safe(prediction.text)
    shown = text if len(text) <= 100 else text[:99] + "…"
    lines = [f"“{shown}”"]
    if prediction.unreadable:
        lines.append("  (unreadable: no words or emoji the model knows)")
    elif not prediction.top:
        lines.append("  (empty text: nothing to classify)")
    for item in prediction.top:
        filled = round(item.probability * BAR_WIDTH)
        bar = "█" * filled + "·" * (BAR_WIDTH - filled)
        mark = "✓" if item.above_threshold else " "
        lines.append(f"  {mark} {item.label:<15}{bar} {item.probability:>4.0%}")
    if prediction.top:
        lines.append(
            f"  labels: {', '.join(prediction.labels) or '(none above threshold)'} | "
            f"ekman: {', '.join(prediction.ekman)} | sentiment: {', '.join(prediction.sentiment)}"
        )
    return "\n".join(lines) + "\n"
