"""The starter model (`moodring train --starter`): a usable model in a couple of minutes on two CPU cores.

The backbone stays frozen. Its mean-pooled embeddings of a sample of the train split (`starter_rows`, with every
label's rare examples kept: `label_balanced_sample`) train the network's own linear head with torch on the CPU, and
the thresholds are tuned on the embeddings of a sample of dev (`starter_dev_rows`). The result is the network
`moodring train` exports (encoder, masked mean, linear head), so it is exported, loaded and served like any model;
`moodring.json` says it is a starter: `training_args["starter"]` and `dev_metrics["dev_sample"]`.

Embedding costs almost all the time; the head trains in seconds. Progress goes to the work directory's progress
file as `step` events (one per batch embedded), so the bot shows it as it shows a training's.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.linear_view import LinearView
from model.storage import default_model_dir
from model.threads import apply_torch_threads, resolve_threads
from model.training_contract import ProgressWriter, progress_path
from training.backbones import load_backbone
from training.config import TrainArgs
from training.data import PadCollator, encode, load_goemotions, resolve_data_dir
from training.export import DevSet, export_model, git_commit, trained_metadata
from training.losses import make_loss
from training.metrics import dev_figures

log = logging.getLogger(__name__)

#: Texts embedded per forward pass, shortest first so that each batch pads little.
EMBED_BATCH = 64
#: The head's optimisation: full-batch Adam on standardised embeddings, with an L2 penalty on its weights.
HEAD_STEPS = 500
HEAD_LEARNING_RATE = 0.01
HEAD_L2 = 1e-4


def label_balanced_sample(labels: list[list[int]], rows: int, num_labels: int, seed: int) -> np.ndarray:
    """`rows` row indices (all of them if there are fewer), in a seeded order: first every row that brings a label
    still under its share (`rows // num_labels`), then the others. A uniform sample of a few thousand GoEmotions
    rows holds only a dozen examples of its rarest labels; this one keeps up to a share of each."""
    order = np.random.default_rng(seed).permutation(len(labels))
    share = max(1, rows // num_labels)
    counts = np.zeros(num_labels, dtype=int)
    chosen, rest = [], []
    for i in order:
        row_labels = labels[i]
        if len(chosen) < rows and any(counts[j] < share for j in row_labels):
            chosen.append(i)
            counts[row_labels] += 1
        else:
            rest.append(i)
    chosen += rest[: max(0, rows - len(chosen))]
    return np.asarray(sorted(chosen), dtype=np.int64)


def dev_sample(total: int, rows: int, seed: int) -> np.ndarray:
    """The dev rows a starter tunes its thresholds on: `rows` of `total`, a seeded sample, in their order."""
    return np.sort(np.random.default_rng(seed).permutation(total)[:rows])


@torch.no_grad()
def embed(encoder: nn.Module, rows, pad_token_id: int, on_batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean-pooled embeddings `[rows, hidden]` and targets `[rows, labels]` of encoded `rows`, in their order.

    `encoder` maps (input_ids, attention_mask) to the masked mean; `on_batch()` is called after each batch."""
    collate = PadCollator(pad_token_id)
    lengths = [len(ids) for ids in rows["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    embeddings, targets = [None] * len(order), [None] * len(order)
    for start in range(0, len(order), EMBED_BATCH):
        index = order[start : start + EMBED_BATCH]
        batch = collate([rows[int(i)] for i in index])
        pooled = encoder(batch["input_ids"], batch["attention_mask"])
        for k, i in enumerate(index):
            embeddings[i], targets[i] = pooled[k], batch["targets"][k]
        on_batch()
    return torch.stack(embeddings), torch.stack(targets)


def fit_head(features: torch.Tensor, targets: torch.Tensor, loss_name: str, seed: int) -> tuple[torch.Tensor, ...]:
    """A linear head `(weight [labels, hidden], bias [labels])` fitted on `features`, acting on raw embeddings:
    it is fitted on standardised ones, and the standardisation is folded into the weights afterwards."""
    torch.manual_seed(seed)
    mean, std = features.mean(dim=0), features.std(dim=0).clamp(min=1e-6)
    standard = (features - mean) / std
    head = nn.Linear(features.shape[1], targets.shape[1])
    loss_fn = make_loss(loss_name)
    optimizer = torch.optim.Adam(head.parameters(), lr=HEAD_LEARNING_RATE)
    for _ in range(HEAD_STEPS):
        optimizer.zero_grad()
        loss = loss_fn(head(standard), targets) + HEAD_L2 * head.weight.pow(2).sum()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        weight = head.weight / std
        bias = head.bias - weight @ mean
    log.info("starter head fitted: final training loss %.4f", loss.item())
    return weight, bias


def train_starter(args: TrainArgs) -> Path:
    """Train and export a starter model (see the module docstring); returns the export directory."""
    started = time.monotonic()
    out = Path(args.out) if args.out else default_model_dir()
    work_dir = Path(args.work_dir) if args.work_dir else Path("runs") / out.name
    commit = git_commit()
    torch.manual_seed(args.seed)
    threads = resolve_threads(args.threads)
    apply_torch_threads(threads)
    progress = ProgressWriter(progress_path(work_dir))

    data = load_goemotions(resolve_data_dir(args.data_dir), splits=("train", "dev"))
    train_split, dev_split = data.splits["train"], data.splits["dev"]
    num_labels = len(data.labels)
    train_split = train_split.select(
        label_balanced_sample(train_split["labels"], args.starter_rows, num_labels, args.seed)
    )
    dev_total = len(dev_split)
    dev_split = dev_split.select(dev_sample(dev_total, args.starter_dev_rows, args.seed))
    log.info("starter: embedding %d train and %d of %d dev rows", len(train_split), len(dev_split), dev_total)

    backbone = load_backbone(args.backbone, data.labels, dropout=args.dropout)
    network, tokenizer = backbone.network.eval(), backbone.tokenizer
    encoder = LinearView(network)  # the faster channel-last form of the same encoder (model/linear_view.py)
    encoder.classifier = nn.Identity()  # the view's head only: it returns the masked mean
    train_rows = encode(train_split, tokenizer, args.max_length, num_labels, text_preparation=args.text_preparation)
    dev_rows = encode(dev_split, tokenizer, args.max_length, num_labels, text_preparation=args.text_preparation)

    total = -(-len(train_rows) // EMBED_BATCH) - (-len(dev_rows) // EMBED_BATCH)
    done = 0
    embedding_started = time.monotonic()

    def on_batch() -> None:
        nonlocal done
        done += 1
        elapsed = time.monotonic() - embedding_started
        progress.step(
            epoch=1,
            epochs=1,
            step=done,
            total_steps=total,
            elapsed_s=round(elapsed, 1),
            eta_s=round(elapsed / done * (total - done), 1),
            loss=None,
        )

    train_features, train_targets = embed(encoder, train_rows, tokenizer.pad_token_id, on_batch)
    dev_features, dev_targets = embed(encoder, dev_rows, tokenizer.pad_token_id, on_batch)
    log.info("starter: embedded %d texts in %.0f s", len(train_rows) + len(dev_rows), elapsed_since(started))

    weight, bias = fit_head(train_features, train_targets, args.loss, args.seed)
    with torch.no_grad():
        network.classifier.weight.copy_(weight)
        network.classifier.bias.copy_(bias)
        scores = torch.sigmoid(dev_features @ weight.T + bias).numpy()
    truth = dev_targets.numpy().astype(bool)
    thresholds, global_threshold, figures = dev_figures(truth, scores, data.labels)
    dev_metrics = {
        **figures,
        # Thresholds tuned and figures measured on a seeded sample of dev, not all of it.
        "dev_sample": {"rows": len(dev_split), "of": dev_total, "seed": args.seed},
        "train_rows": len(train_split),
        "best_epoch": None,
        "history": [],
    }
    log.info(
        "starter: dev-sample macro-F1 %.4f (%.4f cross-fit), micro-F1 %.4f",
        figures["macro_f1"],
        figures["cross_fit_macro_f1"]["per_label"],
        figures["micro_f1"],
    )
    metadata = trained_metadata(
        args,
        data,
        backbone,
        thresholds=thresholds,
        global_threshold=global_threshold,
        dev_metrics=dev_metrics,
        truth=truth,
        scores=scores,
        processes=1,
        commit=commit,
    )
    export_model(network, tokenizer, metadata, out, onnx=args.onnx, dev=DevSet(list(dev_split["text"]), truth))
    progress.done(out, figures["macro_f1"])
    log.info("exported the starter model %s in %.0f s", out, elapsed_since(started))
    return out


def elapsed_since(started: float) -> float:
    return time.monotonic() - started
