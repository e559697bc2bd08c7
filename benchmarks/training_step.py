"""Training steps per second on real GoEmotions batches: SqueezeBERT's own 1x1 convolutions against the channel-last
path that `moodring train` uses (`LinearView(share_weights=True)`, the same function and parameters).

    python benchmarks/training_step.py [--steps 60] [--threads 2]

Both paths run the same batches (batch 32, length-grouped as in training), the same loss and fused AdamW; the
first 5 steps of each are warm-up. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time

import torch
from torch.utils.data import DataLoader

from model.threads import apply_torch_threads, resolve_threads
from training.backbones import load_backbone
from training.config import TrainArgs
from training.data import LengthGroupedSampler, PadCollator, encode, load_goemotions, resolve_data_dir
from training.module import TezEmotionModel

WARM_UP = 5


def steps_per_second(module: TezEmotionModel, forward, batches: list[dict]) -> float:
    optimizer, _ = module.optimizer_scheduler()
    module.train()
    started = None
    for i, batch in enumerate(batches):
        if i == WARM_UP:
            started = time.perf_counter()
        logits = forward(batch["input_ids"], batch["attention_mask"])
        module.loss_fn(logits, batch["targets"]).backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    return (len(batches) - WARM_UP) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    threads = resolve_threads(args.threads)
    apply_torch_threads(threads)
    data = load_goemotions(resolve_data_dir(args.data_dir), splits=("train",))
    backbone = load_backbone("minilm", data.labels)
    rows = encode(
        data.splits["train"], backbone.tokenizer, 64, len(data.labels), text_preparation=TrainArgs().text_preparation
    )
    lengths = [len(ids) for ids in rows["input_ids"]]
    loader = DataLoader(
        rows,
        batch_size=32,
        sampler=LengthGroupedSampler(lengths, 32, seed=42),
        collate_fn=PadCollator(backbone.tokenizer.pad_token_id),
    )
    batches = list(itertools.islice(loader, args.steps + WARM_UP))
    tokens = sum(b["input_ids"].numel() for b in batches[WARM_UP:]) / args.steps
    module = TezEmotionModel(backbone.network, 8e-5, 0.01, 0.1, 1000)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "steps": args.steps,
        "mean_padded_tokens_per_batch": round(tokens, 1),
        "conv1d_steps_per_s": round(steps_per_second(module, lambda i, m: module.network(i, m), batches), 3),
        "channel_last_steps_per_s": round(steps_per_second(module, module.channel_last, batches), 3),
    }
    result["speed_up"] = round(result["channel_last_steps_per_s"] / result["conv1d_steps_per_s"], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
