"""Training settings: a plain dataclass with no heavy imports, so the CLI can read its defaults cheaply."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BACKBONE = "squeezebert/squeezebert-uncased"


@dataclass
class TrainArgs:
    data_dir: str | None = None
    backbone: str = DEFAULT_BACKBONE
    out: str | None = None  # default: MOODRING_MODEL_DIR or models/moodring-goemotions
    work_dir: str | None = None  # best checkpoint and progress log; default: runs/<out name>
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 8e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_length: int = 64
    dropout: float = 0.1
    seed: int = 42
    workers: int = 0
    patience: int = 2
    precision: str = "fp32"  # fp32, fp16 or bf16 (the last two on a GPU)
    train_limit: int | None = None  # use only the first N training rows (quick runs, tests)
    dev_limit: int | None = None
    threads: int | None = None  # torch intra-op threads; default: MOODRING_THREADS, OMP_NUM_THREADS, usable cores
    onnx: bool = True  # also export model.onnx and model.int8.onnx (with int8 thresholds tuned on dev)
    extra_data: str | None = None  # community corrections in GoEmotions' layout (`moodring corrections export`)
    extra_weight: int = 1  # copies of the extra train split mixed into GoEmotions' train
