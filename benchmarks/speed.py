"""CPU speed, batch dependence and test accuracy of every serving backend of the exported classifier, quiet and
with a busy core.

Backends, all through the same `EmotionClassifier.predict` path (same tokenizer, batching and thresholds):
torch fp32; torch dynamic int8 on the Linear view (if torch's quantized kernels run here); ONNX fp32 (what the bot
serves); ONNX dynamic int8 at batch 32 (the opt-in) and one text per call (its per-row activation scales do not
depend on the batch); and a bert-base-shaped reference with random weights (fine for timing). Each is timed twice:
on a quiet machine, and with another process busy on one core (a single-threaded busy loop that this script starts,
bounds in time and stops). Texts are GoEmotions dev rows. Batch dependence: the largest score change of a dev text
between scored alone and scored inside one of the timed batches of 32. Macro-F1 is on the test split with each
backend's dev-tuned thresholds (the bert-base reference has no trained weights, so none; an untrained head gives
timings and batch dependence, and meaningless F1). Prints a Markdown table; `--json FILE` also writes the figures.

    python benchmarks/speed.py [--model DIR] [--data-dir DIR] [--threads N] [--single 200] [--batches 20]
    python benchmarks/speed.py --model DIR --quick     # a few calls each: checks that everything runs
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from model import EmotionClassifier
from model.cpu import cpu_model_name, int8_kernel_path
from model.threads import resolve_threads

TORCH = "torch fp32"
INT8 = "ONNX int8 (dynamic, MatMul only), batch 32"
#: Texts per request, as the bot's batcher and `EmotionClassifier.predict` group them.
REQUEST = 32
# The burner exits by itself after its bound, even if this script dies without stopping it.
BURNER = """import sys, time
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    pass
"""


class LogitsOnly(nn.Module):
    """Adapts a transformers sequence classifier to the network interface `EmotionClassifier` calls."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits


class Backend(NamedTuple):
    """How to load one row's classifier (loaded one at a time, so memory holds one model), the texts it scores per
    model call (`REQUEST`, or 1 for one text per call), and whether it is a timing-only reference (random weights:
    no accuracy, no batch dependence)."""

    load: Callable[[], EmotionClassifier]
    per_call: int = REQUEST
    timing_only: bool = False


def backends(model: str | None, threads: int) -> dict[str, Backend]:
    """Name -> the backend of that table row."""

    def torch_int8() -> EmotionClassifier:
        from model.linear_view import LinearView

        reference = EmotionClassifier.load(model, backend="torch", threads=threads)
        view = LinearView(reference.scorer.network)
        with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao, not installed
            warnings.simplefilter("ignore")
            quantized = torch.ao.quantization.quantize_dynamic(view, {nn.Linear}, dtype=torch.qint8)
        return EmotionClassifier.from_network(quantized, reference.tokenizer, reference.metadata, threads=threads)

    def bert_base() -> EmotionClassifier:
        from transformers import BertConfig, BertForSequenceClassification

        reference = EmotionClassifier.load(model, backend="torch", threads=threads)
        torch.manual_seed(0)
        inner = BertForSequenceClassification(BertConfig(num_labels=len(reference.labels))).eval()
        network = LogitsOnly(inner)
        return EmotionClassifier.from_network(network, reference.tokenizer, reference.metadata, threads=threads)

    def load(backend: str) -> Callable[[], EmotionClassifier]:
        return lambda: EmotionClassifier.load(model, backend=backend, threads=threads)

    return {
        TORCH: Backend(load("torch")),
        "torch int8 (dynamic, Linear view; torch thresholds)": Backend(torch_int8),
        "ONNX fp32 (served)": Backend(load("onnx")),
        INT8: Backend(load("onnx-int8")),
        "ONNX int8, one text per call": Backend(load("onnx-int8"), per_call=1),
        "bert-base-shaped (random weights)": Backend(bert_base, timing_only=True),
    }


def measure(
    classifier: EmotionClassifier, texts: list[str], single: int, batches: int, per_call: int = REQUEST
) -> dict[str, float]:
    """Single-message latency percentiles (ms) over `single` texts, and texts/s over `batches` requests of `REQUEST`
    texts, scored `per_call` texts per model call."""
    classifier.predict(texts[:REQUEST], batch_size=per_call)  # warm-up
    latencies = []
    for text in texts[:single]:
        start = time.perf_counter()
        classifier.predict([text])
        latencies.append((time.perf_counter() - start) * 1000)
    latencies.sort()
    batch_texts = texts[: REQUEST * batches]
    start = time.perf_counter()
    for i in range(0, len(batch_texts), REQUEST):
        classifier.predict(batch_texts[i : i + REQUEST], batch_size=per_call)
    elapsed = time.perf_counter() - start
    return {
        "p50_ms": statistics.median(latencies),
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))],
        "throughput": len(batch_texts) / elapsed,
    }


def batch_dependence(classifier: EmotionClassifier, texts: list[str], batches: int, per_call: int = REQUEST) -> float:
    """The largest change in any score of the first `batches` * `REQUEST` of `texts` between each scored alone and
    scored in its request of `REQUEST` (`per_call` texts per model call), as `measure` times them: 0 for a backend
    whose readings do not depend on the batch, up to float rounding."""
    rows = texts[: REQUEST * batches]
    alone = classifier.predict_scores(rows, batch_size=1)
    together = np.concatenate(
        [classifier.predict_scores(rows[i : i + REQUEST], batch_size=per_call) for i in range(0, len(rows), REQUEST)]
    )
    return float(np.abs(together - alone).max())


@contextlib.contextmanager
def busy_core(max_seconds: float) -> Iterator[int]:
    """Run a single-threaded busy loop in another process for the duration of the block; yield its pid.

    Waits for the loop to say it is running before yielding, and for it to be gone before returning.
    """
    burner = subprocess.Popen([sys.executable, "-c", BURNER, str(max_seconds)], stdout=subprocess.PIPE, text=True)
    try:
        if burner.stdout.readline().strip() != "ready":
            raise RuntimeError("the CPU burner did not start")
        yield burner.pid
    finally:
        burner.terminate()
        try:
            burner.wait(timeout=10)
        except subprocess.TimeoutExpired:
            burner.kill()
            burner.wait(timeout=10)
        burner.stdout.close()


def macro_f1(classifier: EmotionClassifier, rows: dict) -> float:
    from training.metrics import classification_report

    truth = np.zeros((len(rows["text"]), len(classifier.labels)), dtype=bool)
    for i, ids in enumerate(rows["labels"]):
        truth[i, ids] = True
    scores = classifier.predict_scores(rows["text"], batch_size=64)
    return classification_report(truth, scores >= classifier.thresholds, classifier.labels)["macro_f1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="exported model (default: $MOODRING_MODEL_DIR or models/...)")
    parser.add_argument("--data-dir", default=os.environ.get("GOEMOTIONS_DIR", "../shared/data/goemotions"))
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: as `moodring classify`)")
    parser.add_argument("--single", type=int, default=200, help="single-message calls to time")
    parser.add_argument("--batches", type=int, default=20, help="requests of 32 texts to time")
    parser.add_argument("--test-rows", type=int, default=None, help="score only the first N test rows")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    parser.add_argument("--quick", action="store_true", help="5 single calls, 1 batch, 64 test rows: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.single, args.batches, args.test_rows = 5, 1, 64
    threads = resolve_threads(args.threads)

    from training.data import load_goemotions

    # Timing texts from dev; accuracy from test, with thresholds tuned on dev at export time.
    with (Path(args.data_dir) / "dev.tsv").open(newline="", encoding="utf-8") as handle:
        texts = [row[0] for row in csv.reader(handle, delimiter="\t")]
    test = load_goemotions(args.data_dir, splits=("test",)).splits["test"]
    if args.test_rows:
        test = test.select(range(min(args.test_rows, len(test))))
    test_rows = {"text": list(test["text"]), "labels": list(test["labels"])}

    results: dict[str, dict] = {}
    for name, backend in backends(args.model, threads).items():
        try:
            classifier = backend.load()
            quiet = measure(classifier, texts, args.single, args.batches, backend.per_call)
        except Exception as error:  # "if it works": a backend that cannot run here is reported, not fatal
            results[name] = {"error": f"{type(error).__name__}: {error}".splitlines()[0][:160]}
            continue
        dependence, f1 = None, None
        if not backend.timing_only:
            dependence = batch_dependence(classifier, texts, args.batches, backend.per_call)
            f1 = macro_f1(classifier, test_rows)
        # Bounded well past what the busy measurement can take; stopped as soon as it is done.
        with busy_core(max_seconds=600) as burner_pid:
            busy = measure(classifier, texts, args.single, args.batches, backend.per_call)
        results[name] = {
            "served_as": classifier.backend,
            "texts_per_call": backend.per_call,
            "quiet": quiet,
            "busy": busy,
            "batch_dependence": dependence,
            "macro_f1": f1,
            "burner_pid": burner_pid,
        }
        del classifier

    kernels = int8_kernel_path()
    machine = (
        f"CPU: {cpu_model_name()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), int8 features: "
        f"{', '.join(kernels['features']) or 'none'}; {threads} intra-op threads per backend; "
        f"torch {torch.__version__}, "
        f"onnxruntime {kernels['onnxruntime']}; single-message latency over {args.single} dev texts, throughput "
        f"over {args.batches} requests of {REQUEST} dev texts; batch dependence over those {args.batches * REQUEST} "
        f"texts; test macro-F1 over {len(test_rows['text'])} rows. 'busy': another process spins on one core."
    )
    print(machine + "\n")
    print(
        "| backend | single p50 (ms) | single p95 (ms) | requests of 32: texts/s | largest batch dependence "
        "| busy: p50 (ms) | busy: p95 (ms) | busy: texts/s | test macro-F1 | p50 vs torch | texts/s vs torch "
        "| texts/s vs int8 batch 32 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = results.get(TORCH, {}).get("quiet")
    int8 = results.get(INT8, {}).get("quiet")
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | did not run: {r['error']} |||||||||||")
            continue
        q, b = r["quiet"], r["busy"]
        f1 = "" if r["macro_f1"] is None else f"{r['macro_f1']:.3f}"
        dependence = "" if r["batch_dependence"] is None else f"{r['batch_dependence']:.4f}"
        versus = f"{q['p50_ms'] / base['p50_ms']:.2f}x | {q['throughput'] / base['throughput']:.2f}x" if base else " | "
        versus += f" | {q['throughput'] / int8['throughput']:.2f}x" if int8 else " | "
        print(
            f"| {name} | {q['p50_ms']:.1f} | {q['p95_ms']:.1f} | {q['throughput']:.0f} | {dependence} "
            f"| {b['p50_ms']:.1f} | {b['p95_ms']:.1f} | {b['throughput']:.0f} | {f1} | {versus} |"
        )
    pids = sorted({r["burner_pid"] for r in results.values() if "burner_pid" in r})
    print(f"\nCPU burner processes (all stopped): {', '.join(map(str, pids))}")
    if args.json:
        figures = {"machine": machine, "model": args.model, "int8_kernel_path": kernels, "backends": results}
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
