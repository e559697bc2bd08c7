"""CPU speed of the exported classifier against bert-base- and roberta-base-shaped models.

All three run through the same `EmotionClassifier.predict` path (same tokenizer, same batching,
same thresholds); the two baselines have random weights, which is fine for timing. Prints a
Markdown table.

    python benchmarks/speed.py [--model DIR] [--data-dir DIR] [--single 200] [--batches 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

from model import EmotionClassifier


class LogitsOnly(nn.Module):
    """Adapts a transformers sequence classifier to the network interface `EmotionClassifier` calls."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits


def baseline(reference: EmotionClassifier, name: str) -> EmotionClassifier:
    labels = len(reference.labels)
    if name == "bert-base":
        inner = BertForSequenceClassification(BertConfig(num_labels=labels))
    else:  # roberta-base; the BERT tokenizer's ids (< 30522) are valid ids in its 50265-token vocabulary
        inner = RobertaForSequenceClassification(
            RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, num_labels=labels)
        )
    return EmotionClassifier(LogitsOnly(inner), reference.tokenizer, reference.metadata)


def measure(classifier: EmotionClassifier, texts: list[str], single: int, batches: int) -> dict[str, float]:
    classifier.predict(texts[:32])  # warm-up
    latencies = []
    for text in texts[:single]:
        start = time.perf_counter()
        classifier.predict([text])
        latencies.append((time.perf_counter() - start) * 1000)
    latencies.sort()
    batch_texts = texts[: 32 * batches]
    start = time.perf_counter()
    for i in range(0, len(batch_texts), 32):
        classifier.predict(batch_texts[i : i + 32])
    elapsed = time.perf_counter() - start
    return {
        "p50_ms": statistics.median(latencies),
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))],
        "throughput": len(batch_texts) / elapsed,
        "parameters_m": sum(p.numel() for p in classifier.network.parameters()) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="exported model (default: $MOODRING_MODEL_DIR or models/...)")
    parser.add_argument("--data-dir", default=os.environ.get("GOEMOTIONS_DIR", "../shared/data/goemotions"))
    parser.add_argument("--single", type=int, default=200, help="single-message calls to time")
    parser.add_argument("--batches", type=int, default=20, help="batches of 32 to time")
    args = parser.parse_args()

    import csv

    # Dev texts: the test split is read only by `moodring evaluate --split test`.
    with (Path(args.data_dir) / "dev.tsv").open(newline="", encoding="utf-8") as handle:
        texts = [row[0] for row in csv.reader(handle, delimiter="\t")]
    ours = EmotionClassifier.load(args.model)
    results = {"moodring (SqueezeBERT, exported)": measure(ours, texts, args.single, args.batches)}
    for name in ("bert-base", "roberta-base"):
        torch.manual_seed(0)
        results[f"{name}-shaped (random weights)"] = measure(baseline(ours, name), texts, args.single, args.batches)

    base = results["moodring (SqueezeBERT, exported)"]
    print(
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads; texts: GoEmotions dev.tsv\n"
    )
    print(
        "| model | params (M) | single p50 (ms) | single p95 (ms) | batch-32 texts/s | p50 vs ours | texts/s vs ours |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['parameters_m']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['throughput']:.0f} "
            f"| {r['p50_ms'] / base['p50_ms']:.2f}x | {r['throughput'] / base['throughput']:.2f}x |"
        )


if __name__ == "__main__":
    main()
