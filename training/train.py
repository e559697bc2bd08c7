"""Fine-tune SqueezeBERT on GoEmotions with Tez, tune thresholds on dev, export.

Read top to bottom: data -> backbone -> (teacher targets) -> loaders -> Tez fit (with our dev callback) -> best
checkpoint -> dev thresholds and calibration -> export (with ONNX fp32/int8 files and int8 dev thresholds).
The test split is never read here.

A training that was interrupted (Ctrl-C, SIGTERM, a crash) goes on from the end of its last finished epoch when it
is started again with the same recipe and work directory (`ResumePoint`); what it did of the epoch it was in is
done again. With the same seed it ends with the weights an uninterrupted training would have had.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from tez import TezConfig
from torch.utils.data import DataLoader, RandomSampler
from tqdm.contrib.logging import logging_redirect_tqdm

from model.network import SqueezeBertForEmotions
from model.storage import default_model_dir
from model.threads import apply_torch_threads, available_cores, resolve_threads
from model.training_contract import checkpoint_dir, progress_path, resume_dir
from training.backbones import load_backbone
from training.callbacks import (
    DevEvaluation,
    EveryProcessTez,
    ProgressLog,
    ResumePoint,
    WeightAverage,
    read_checkpoint,
    read_resume_state,
)
from training.config import TrainArgs
from training.data import (
    LengthGroupedSampler,
    PadCollator,
    encode,
    load_extra_data,
    load_goemotions,
    mix_in,
    resolve_data_dir,
)
from training.distillation import blend, teacher_targets
from training.export import MACHINE_PATHS, DevSet, export_model, git_commit, trained_metadata
from training.metrics import dev_figures
from training.module import TezEmotionModel

log = logging.getLogger(__name__)

#: How a training runs, not what it learns (or a starter's settings): a training may resume under other values.
HOW_NOT_WHAT = ("threads", "workers", "resume", "onnx", "starter_rows", "starter_dev_rows")


class TrainingError(RuntimeError):
    """Training could not produce a model."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resumable_state(work_dir: Path, recipe: dict) -> dict | None:
    """The state an interrupted training left in `work_dir` to go on from, if it was saved for `recipe` and its best
    checkpoint is still the one it chose; else None (logged), and the training starts from zero."""
    saved = read_resume_state(resume_dir(work_dir))
    if saved is None:
        return None
    if saved["recipe"] != recipe:
        changed = sorted(k for k in recipe.keys() | saved["recipe"].keys() if recipe.get(k) != saved["recipe"].get(k))
        log.warning("not resuming the interrupted training in %s: %s changed", work_dir, ", ".join(changed))
        return None
    try:
        best_epoch = read_checkpoint(checkpoint_dir(work_dir))[2]
    except (OSError, ValueError, KeyError):
        best_epoch = None
    if best_epoch != saved["dev_evaluation"]["best_epoch"]:
        log.warning("not resuming the interrupted training in %s: its best checkpoint is gone", work_dir)
        return None
    return saved


def train(args: TrainArgs) -> Path:
    """Run one training and export the best model; returns the export directory.

    Under `accelerate launch` with N processes, each process trains on every Nth batch (`--batch-size` is per
    process, so the effective batch is N times it) and gradients are averaged. Only the main process scores dev,
    writes checkpoints and progress.jsonl, tunes thresholds and exports; the others wait for it at each epoch's end
    and at the export.

    With `args.starter`, a starter model instead (training/starter.py), in one process.
    """
    if args.starter:
        from training.starter import train_starter

        return train_starter(args)
    out = Path(args.out) if args.out else default_model_dir()
    work_dir = Path(args.work_dir) if args.work_dir else Path("runs") / out.name
    best_dir = checkpoint_dir(work_dir)
    commit = git_commit()  # of the code that trains, before anything can change under us
    # One process, or the group `accelerate launch` started. Without a GPU its processes meet over gloo on the CPU.
    processes = PartialState(cpu=not torch.cuda.is_available() or parse_flag_from_env("ACCELERATE_USE_CPU"))
    main = processes.is_main_process
    seed_everything(args.seed)  # the same initial weights and batch order in every process
    threads = resolve_threads(args.threads)
    if processes.num_processes > 1 and args.threads is None:  # N processes share the cores, never oversubscribe
        threads = min(threads, max(1, available_cores() // processes.num_processes))
    apply_torch_threads(threads)

    data = load_goemotions(resolve_data_dir(args.data_dir), splits=("train", "dev"))
    train_split, dev_split = data.splits["train"], data.splits["dev"]
    if args.train_limit:
        train_split = train_split.select(range(min(args.train_limit, len(train_split))))
    if args.dev_limit:
        dev_split = dev_split.select(range(min(args.dev_limit, len(dev_split))))
    extra = load_extra_data(args.extra_data, data.labels) if args.extra_data else None
    if extra is not None:  # community corrections: train mixed in, dev reported beside GoEmotions dev
        train_split = mix_in(train_split, extra.train, args.extra_weight)
        data.checksums.update(extra.checksums)
    log.info("data: %s (train %d rows, dev %d rows)", data.source, len(train_split), len(dev_split))

    backbone = load_backbone(args.backbone, data.labels, dropout=args.dropout)
    log.info("backbone: %s", backbone.describe())
    tokenizer = backbone.tokenizer
    num_labels = len(data.labels)
    preparation = args.text_preparation
    train_rows = encode(train_split, tokenizer, args.max_length, num_labels, text_preparation=preparation)
    dev_rows = encode(dev_split, tokenizer, args.max_length, num_labels, text_preparation=preparation)
    distilled = None  # self-distillation: the teachers' averaged scores, blended into the labels
    if args.teacher:
        soft, record = teacher_targets(args.teacher, train_split["text"], data.labels, work_dir)
        targets = blend(np.array(train_rows["targets"], dtype=np.float32), soft, args.teacher_weight)
        train_rows = train_rows.remove_columns("targets").add_column("targets", targets.tolist())
        distilled = {k: v for k, v in record.items() if k != "teachers"} | {
            "teachers": [teacher["checksums"] for teacher in record["teachers"]]
        }
    # Dev is scored shortest first, so each batch pads little; row order changes no metric.
    by_length = np.argsort([len(ids) for ids in dev_rows["input_ids"]], kind="stable")
    dev_rows, dev_split = dev_rows.select(by_length), dev_split.select(by_length)

    collate = PadCollator(tokenizer.pad_token_id)
    lengths = [len(ids) for ids in train_rows["input_ids"]]
    if args.sampler == "length":
        sampler = LengthGroupedSampler(lengths, args.batch_size, seed=args.seed)
    else:  # uniform, seeded: each batch mixes every length and pads to its longest text
        sampler = RandomSampler(train_rows, generator=torch.Generator().manual_seed(args.seed))
    train_loader = DataLoader(
        train_rows, batch_size=args.batch_size, sampler=sampler, collate_fn=collate, num_workers=args.workers
    )
    dev_loader = DataLoader(dev_rows, batch_size=64, shuffle=False, collate_fn=collate, num_workers=args.workers)
    community_loader = None
    if extra is not None and extra.dev is not None:
        community_rows = encode(extra.dev, tokenizer, args.max_length, num_labels, text_preparation=preparation)
        community_loader = DataLoader(community_rows, batch_size=64, collate_fn=collate, num_workers=args.workers)
    # Our own loaders go to Tez, so TezConfig's loader settings (num_jobs, pin_memory) do not apply. Tez hands
    # them to accelerate, which gives each of N processes every Nth batch: the schedule counts one process's steps.
    num_train_steps = math.ceil(len(train_loader) / processes.num_processes) * args.epochs

    recipe = {k: v for k, v in asdict(args).items() if k not in MACHINE_PATHS + HOW_NOT_WHAT} | {
        "processes": processes.num_processes,
        "data_checksums": data.checksums,
        "teacher_targets": distilled and distilled["sha256"],
    }
    saved = resumable_state(work_dir, recipe) if args.resume else None
    done_epochs = saved["epoch"] if saved else 0
    epochs_left = 0 if saved and saved["stopped"] else args.epochs - done_epochs

    module = TezEmotionModel(
        backbone.network,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio,
        num_train_steps=num_train_steps,
        loss=args.loss,
        layer_decay=args.layer_decay,
    )
    resumed_steps = num_train_steps // args.epochs * done_epochs
    progress = ProgressLog(progress_path(work_dir), args.epochs, resumed_steps=resumed_steps) if main else None
    dev_evaluation = DevEvaluation(
        dev_loader,
        best_dir,
        patience=args.patience,
        on_evaluated=progress.dev if progress else None,
        community_loader=community_loader,
        weight_average=WeightAverage(module.network, args.ema) if args.ema else None,
    )
    if saved is not None:
        dev_evaluation.restore(saved["dev_evaluation"])
        for record in dev_evaluation.history if progress else ():  # the epochs done before, for whoever reads
            progress.dev(record["epoch"], {k: v for k, v in record.items() if k != "epoch"})
        log.info("resuming from the end of epoch %d of %d (%s)", done_epochs, args.epochs, resume_dir(work_dir))
    resume = ResumePoint(resume_dir(work_dir), recipe, args.epochs, sampler, dev_evaluation, saved)
    config = TezConfig(
        training_batch_size=args.batch_size,
        epochs=epochs_left,  # Tez runs the epochs left; `ResumePoint` tells it where it stands
        step_scheduler_after="batch",
        clip_grad_norm=1.0,
        fp16=args.precision == "fp16",
        bf16=args.precision == "bf16",
    )
    trainer = EveryProcessTez(module)
    log.info(
        "training: %d epochs x %d steps, batch %d x %d processes, %d threads each",
        args.epochs,
        num_train_steps // args.epochs,
        args.batch_size,
        processes.num_processes,
        threads,
    )
    # `resume` after `dev_evaluation`: the state it saves at an epoch's end holds that epoch's dev record.
    callbacks = [dev_evaluation, resume] if progress is None else [dev_evaluation, progress, resume]
    if dev_evaluation.weight_average is not None:  # updated after each step, before anything reads the step
        callbacks.insert(0, dev_evaluation.weight_average)
    interrupted = False
    try:
        if epochs_left:
            with logging_redirect_tqdm():
                trainer.fit(train_rows, config=config, train_loader=train_loader, callbacks=callbacks)
    except KeyboardInterrupt:
        interrupted = True
        log.warning(
            "interrupted: exporting the best checkpoint so far (the same command resumes from %s)", resume_dir(work_dir)
        )
    if not main:  # the main process exports; wait for it (if it fails instead, the launcher stops this process)
        processes.wait_for_everyone()
        return out
    if dev_evaluation.best_score is None:
        raise TrainingError("no epoch finished, so there is no checkpoint to export")

    # The weights and the dev predictions they make come from one checkpoint, so the thresholds match the weights.
    network = SqueezeBertForEmotions.from_pretrained(best_dir)
    scores, truth, best_epoch = read_checkpoint(best_dir)
    thresholds, global_threshold, figures = dev_figures(truth, scores, data.labels)
    dev_metrics = {**figures, "best_epoch": best_epoch, "history": dev_evaluation.history}
    log.info(
        "best epoch %d: dev macro-F1 %.4f (%.4f cross-fit), micro-F1 %.4f",
        best_epoch,
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
        processes=processes.num_processes,
        commit=commit,
        teacher_targets=distilled,
    )
    export_model(network, tokenizer, metadata, out, onnx=args.onnx, dev=DevSet(list(dev_split["text"]), truth))
    if not interrupted:
        shutil.rmtree(resume_dir(work_dir), ignore_errors=True)  # complete: nothing left to resume
    progress.done(out, figures["macro_f1"])
    log.info("exported %s", out)
    processes.wait_for_everyone()
    return out
