"""`EmotionClassifier`: the one inference API used by the bot, the CLI and the benchmarks.

torch and transformers' modelling code are imported only by the torch backend (`_TorchScorer`): an ONNX backend
starts without them (issue 26: they were 3.4 s of `moodring classify`'s 4-5 s).
"""

from __future__ import annotations

import contextlib
import json
import logging
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.backends import AUTO_ONNX_BACKEND, BACKEND_CHOICES, FILE_OF_BACKEND, INPUT_NAMES, INT8_BACKEND, OUTPUT_NAME
from model.calibration import Calibration
from model.cpu import describe_kernel_path, int8_kernel_path
from model.metadata import METADATA_FILE, ModelMetadata
from model.storage import ModelError, require_model_directory
from model.text_preparation import prepare
from model.threads import apply_torch_threads, ort_session_options, resolve_threads
from model.tokenizer import TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, FastTokenizer
from model.training_contract import file_sha256

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: The largest change in the stored int8 dev scores (moodring.json `int8_kernel`) on another CPU's int8 kernels that
#: still serves the int8 thresholds tuned at export: one step of their grid (training/metrics.py THRESHOLD_GRID).
INT8_SAMPLE_TOLERANCE = 0.01


@dataclass(frozen=True)
class EmotionScore:
    """One label's reading. `score` is the raw sigmoid score, which the label's threshold decides on;
    `probability` is the calibrated probability fitted on dev (model/calibration.py), what members are shown as a
    percentage. A model without calibration shows its raw score: `probability` is `score` then."""

    label: str
    score: float
    probability: float
    above_threshold: bool


@dataclass(frozen=True)
class Prediction:
    """The classifier's reading of one text.

    The ranking rule (for `top`, and for `labels`, the labels above their per-label thresholds): labels above
    their thresholds come first, then the others; within each group by calibrated probability, ties by raw score.
    The marked labels are the prediction, decided on raw scores, so a label above its threshold can show a lower
    probability than one below it; it is still listed, and marked, first. `top` is the first `top_k` of that
    ranking. `ekman` and `sentiment` are the groups of `labels`, or of the top label when none passes.
    An empty or whitespace-only text gets empty lists. So does an `unreadable` one: a text that, as the model reads
    it, is only unknown tokens (`[UNK]`) and punctuation; it is not scored, since its scores would only say neutral.
    """

    text: str
    top: list[EmotionScore]
    labels: list[str]
    ekman: list[str]
    sentiment: list[str]
    unreadable: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class EmotionClassifier:
    """A trained GoEmotions classifier loaded from an exported model directory.

    One class for every backend: a small scorer per backend turns token ids into sigmoid scores, and
    everything after that (thresholds, ranking, groups) is shared. `backend` says which one serves.
    Every text is first prepared as the model was trained to read it (`prepare`), so callers pass it as it is.
    """

    def __init__(self, scorer: _Scorer, tokenizer: FastTokenizer, metadata: ModelMetadata) -> None:
        self.scorer = scorer
        self.backend = scorer.backend
        self.tokenizer = tokenizer
        self.metadata = metadata
        self.labels = list(metadata.labels)
        self.thresholds = np.asarray(metadata.thresholds_for(scorer.backend), dtype=np.float32)
        record = metadata.calibration_for(scorer.backend)
        self.calibration = Calibration.from_dict(record, len(self.labels)) if record else None
        self._ekman = metadata.group_of(metadata.ekman_mapping)
        self._sentiment = metadata.group_of(metadata.sentiment_mapping)
        # The ids that carry no word: [UNK], the special tokens and punctuation-only tokens ("!", "##.").
        self._wordless_ids = tokenizer.special_ids() | {
            token_id for token, token_id in tokenizer.vocabulary().items() if _is_punctuation(token.removeprefix("##"))
        }

    @classmethod
    def from_network(
        cls,
        network: torch.nn.Module,
        tokenizer: FastTokenizer,
        metadata: ModelMetadata,
        device: str | torch.device = "cpu",
        threads: int | None = None,
    ) -> EmotionClassifier:
        """Serve any torch module with the network's interface (input_ids, attention_mask -> logits)."""
        return cls(_TorchScorer(network, device, resolve_threads(threads)), tokenizer, metadata)

    @property
    def threads(self) -> int:
        """The intra-op threads the scorer runs with."""
        return self.scorer.threads

    def relocate(self, directory: str | Path) -> None:
        """The model's files were moved to `directory` (a retrain's swap): read them there from now on."""
        self.scorer.path = Path(directory) / self.scorer.path.name if self.scorer.path else None

    def set_threads(self, threads: int) -> None:
        """Score with `threads` intra-op threads from the next call on. Blocking (ONNX opens a new session):
        call it from the thread that predicts, never concurrently with `predict`."""
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.scorer.set_threads(threads)

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        device: str = "cpu",
        backend: str = "auto",
        threads: int | None = None,
    ) -> EmotionClassifier:
        """Load an exported model; never touches the network.

        `backend`: "torch", "onnx" (fp32), "onnx-int8", or "auto" (fp32 ONNX when its file is there and
        onnxruntime imports, else torch; one log line says which and why). torch and fp32 ONNX give a text the
        same scores in any batch; dynamic int8 ("onnx-int8", opt-in only) does not: it scales activations per call,
        over the whole batch. On a CPU whose int8 kernels differ from the export's, "onnx-int8" serves fp32 ONNX
        instead unless its stored dev sample still scores the same (`_int8_thresholds_hold_here`). An explicit
        backend that cannot load raises ModelError. `threads`: intra-op threads, default
        `model.threads.resolve_threads()`.
        """
        directory = require_model_directory(path)
        _check_model_files(directory)
        with _unreadable_as_model_error(directory):
            metadata = ModelMetadata.load(directory)
            tokenizer = FastTokenizer.load(directory, metadata.max_length)
            vocab_size = json.loads((directory / "config.json").read_text(encoding="utf-8"))["vocab_size"]
        _check_vocabulary(directory, vocab_size, len(tokenizer))
        threads = resolve_threads(threads)
        classifier = cls(_choose_scorer(directory, metadata, backend, device, threads), tokenizer, metadata)
        if classifier.backend == INT8_BACKEND and not _int8_thresholds_hold_here(classifier):
            return cls(_OnnxScorer.open(directory, metadata, AUTO_ONNX_BACKEND, threads), tokenizer, metadata)
        return classifier

    def prepare(self, text: str) -> str:
        """`text` as this model reads it: the text preparation it was trained with (`metadata.text_preparation`)."""
        return prepare(text, self.metadata.text_preparation)

    def predict_scores(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Sigmoid scores, shape `[len(texts), num_labels]`, in the order of `texts` (each prepared first)."""
        return self._scores([self.prepare(text) for text in texts], batch_size)

    def _scores(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """`predict_scores` of texts already prepared."""
        scores = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        # Longest first, so each batch pads to similar lengths.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            scores[index] = self.scorer.scores(*self.tokenizer.encode([texts[i] for i in index]))
        return scores

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for raw `scores` (`predict_scores`' shape); the scores themselves without a
        calibration."""
        return scores if self.calibration is None else self.calibration.apply(scores)

    def predict(self, texts: Sequence[str], top_k: int | None = 5, batch_size: int = 32) -> list[Prediction]:
        """Rank the emotions of each text (`top_k` of them, all for None).

        Empty or whitespace-only texts get an empty prediction, unreadable ones an empty one marked `unreadable`.
        """
        texts = list(texts)
        prepared = [self.prepare(text) for text in texts]
        present = [i for i, text in enumerate(texts) if text and text.strip()]  # prepared to nothing: unreadable
        readable = self._readable([prepared[i] for i in present])
        scored = [i for i, has_words in zip(present, readable, strict=True) if has_words]
        scores = self._scores([prepared[i] for i in scored], batch_size)
        predictions = [Prediction(text=text, top=[], labels=[], ekman=[], sentiment=[]) for text in texts]
        probabilities = self.probabilities(scores)
        for i, has_words in zip(present, readable, strict=True):
            if not has_words:
                predictions[i] = replace(predictions[i], unreadable=True)
        for row, probability, i in zip(scores, probabilities, scored, strict=True):
            predictions[i] = self._prediction(texts[i], row, probability, top_k)
        return predictions

    def _readable(self, prepared: list[str]) -> list[bool]:
        """Whether each prepared text holds a token with a word in it, among the tokens the model reads."""
        if not prepared:
            return []
        input_ids, _ = self.tokenizer.encode(prepared)  # padded: [PAD] is one of the wordless ids
        return [any(int(token_id) not in self._wordless_ids for token_id in row) for row in input_ids]

    def _prediction(self, text: str, row: np.ndarray, probability: np.ndarray, top_k: int | None) -> Prediction:
        above = row >= self.thresholds
        ranked = np.lexsort((-row, -probability, ~above))  # Prediction's ranking rule: the last key sorts first
        top = [
            EmotionScore(self.labels[j], float(row[j]), float(probability[j]), bool(above[j])) for j in ranked[:top_k]
        ]
        labels = [self.labels[j] for j in ranked if above[j]]
        grouped = labels or [self.labels[ranked[0]]]
        return Prediction(
            text=text,
            top=top,
            labels=labels,
            ekman=_unique(self._ekman[label] for label in grouped),
            sentiment=_unique(self._sentiment[label] for label in grouped),
        )


#: What `training.export.export_model` writes, all of which `load` needs: without the tokenizer files transformers
#: quietly builds a 5-token vocabulary, and every word becomes [UNK].
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    METADATA_FILE,
    TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
)
#: Rows by which a model's embedding may outnumber its tokenizer: some checkpoints pad it to a multiple of 64.
VOCAB_PADDING = 64
_REPAIR_HINT = "Copy the whole model directory again, or train a new one with `moodring train`."


def _check_model_files(directory: Path) -> None:
    """Raise `ModelError` unless every exported file is there and the weights file is a whole safetensors file."""
    from safetensors import SafetensorError, safe_open

    missing = [name for name in MODEL_FILES if not (directory / name).is_file()]
    if missing:
        raise ModelError(f"The model in {directory}/ is incomplete: {', '.join(missing)} missing. {_REPAIR_HINT}")
    weights = directory / "model.safetensors"
    try:
        # Reads the header, which must describe the file to its last byte ("numpy": "pt" would import torch).
        with safe_open(weights, framework="numpy"):
            pass
    except (SafetensorError, OSError) as error:
        raise ModelError(f"{weights} is truncated or corrupt ({error}). {_REPAIR_HINT}") from error


@contextlib.contextmanager
def _unreadable_as_model_error(directory: Path) -> Iterator[None]:
    """Turn what reading a model's files raises into one `ModelError` that says how to repair it."""
    try:
        yield
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ModelError(
            f"The model in {directory}/ is incomplete or unreadable ({error}). Re-export it with `moodring train`."
        ) from error


def _check_vocabulary(directory: Path, model_size: int, tokenizer_size: int) -> None:
    """Raise `ModelError` unless the tokenizer's ids are the rows of the model's embedding."""
    if not model_size - VOCAB_PADDING < tokenizer_size <= model_size:
        raise ModelError(
            f"The model in {directory}/ does not match its tokenizer: the tokenizer has {tokenizer_size} tokens, "
            f"the model's vocabulary (vocab_size in config.json) {model_size}. {_REPAIR_HINT}"
        )


def _is_punctuation(token: str) -> bool:
    return bool(token) and all(unicodedata.category(char).startswith("P") for char in token)


def _unique(items) -> list[str]:
    return list(dict.fromkeys(items))


class _Unavailable(ModelError):
    """The backend cannot run here (no onnxruntime, no file); not a fault in the model."""


class _TorchScorer:
    """Scores through the torch network (fp32, on any device). The one importer of torch in this module."""

    backend = "torch"
    path = None  # no file is read after loading

    def __init__(self, network: torch.nn.Module, device: str | torch.device, threads: int) -> None:
        import torch

        self.device = torch.device(device)
        self.network = network.eval().to(self.device)
        self.threads = threads
        apply_torch_threads(threads)

    @classmethod
    def load(cls, directory: Path, device: str, threads: int) -> _TorchScorer:
        """The exported network in `directory`; ModelError if it does not load."""
        from model.network import SqueezeBertForEmotions

        with _unreadable_as_model_error(directory):
            network = SqueezeBertForEmotions.from_pretrained(directory, local_files_only=True)
        return cls(network, device, threads)

    def set_threads(self, threads: int) -> None:
        self.threads = threads  # applied by the next `scores` call, in whichever thread makes it

    def scores(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        apply_torch_threads(self.threads)  # per calling thread: the bot's worker may not be the loading thread
        with torch.inference_mode():
            logits = self.network(
                input_ids=torch.from_numpy(input_ids).to(self.device),
                attention_mask=torch.from_numpy(attention_mask).to(self.device),
            )
            return torch.sigmoid(logits.float()).cpu().numpy()


class _OnnxScorer:
    """Scores through an ONNX Runtime session on the CPU (`model.onnx` or `model.int8.onnx`)."""

    def __init__(self, session, backend: str, path: Path, threads: int) -> None:
        self.session = session
        self.backend = backend
        self.path = path
        self.threads = threads

    @classmethod
    def open(cls, directory: Path, metadata: ModelMetadata, backend: str, threads: int) -> _OnnxScorer:
        """Open `backend`'s file after checking it against its SHA-256 in `moodring.json`; ModelError if unusable."""
        path = directory / FILE_OF_BACKEND[backend]
        export = f"`moodring export-onnx --model {directory}`"
        redo = f"Re-export it with {export}."
        try:
            import onnxruntime  # noqa: F401 (is it installed? the session is opened below)
        except ImportError as error:
            raise _Unavailable(f"onnxruntime is not installed ({error}); `pip install onnxruntime`") from error
        if not path.is_file():
            raise _Unavailable(f"no {path.name} in {directory}/. Add it with {export}.")
        record = metadata.onnx_files.get(path.name)
        if record is None:
            raise ModelError(f"{path} is not recorded in {METADATA_FILE}. {redo}")
        try:
            if file_sha256(path) != record.get("sha256"):
                raise ModelError(f"{path} is corrupt: its SHA-256 differs from the one in {METADATA_FILE}. {redo}")
            session = _cpu_session(path, threads)
        except ModelError:
            raise
        except Exception as error:  # onnxruntime raises its own exception types for unreadable graphs
            raise ModelError(f"{path} is corrupt or unreadable ({error}). {redo}") from error
        inputs = {item.name for item in session.get_inputs()}
        outputs = {item.name for item in session.get_outputs()}
        if inputs != set(INPUT_NAMES) or OUTPUT_NAME not in outputs:
            found = f"inputs {sorted(inputs)}, outputs {sorted(outputs)}"
            raise ModelError(f"{path} is not a moodring graph ({found}). {redo}")
        return cls(session, backend, path, threads)

    def set_threads(self, threads: int) -> None:
        """ONNX Runtime fixes a session's thread pool when it opens it, so open the same file again."""
        if threads != self.threads:
            self.session = _cpu_session(self.path, threads)
            self.threads = threads

    def scores(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {
            "input_ids": input_ids.astype(np.int64, copy=False),
            "attention_mask": attention_mask.astype(np.int64, copy=False),
        }
        return self.session.run([OUTPUT_NAME], feed)[0]


def _cpu_session(path: Path, threads: int):
    """An ONNX Runtime session for `path` on the CPU, with `threads` intra-op threads that never spin."""
    import onnxruntime

    return onnxruntime.InferenceSession(
        str(path), sess_options=ort_session_options(threads), providers=["CPUExecutionProvider"]
    )


_Scorer = _TorchScorer | _OnnxScorer


def _choose_scorer(directory: Path, metadata: ModelMetadata, backend: str, device: str, threads: int) -> _Scorer:
    """The scorer for `backend`; for "auto", fp32 ONNX when it loads on the CPU, else torch, logged in one line."""
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}")
    on_cpu = str(device).partition(":")[0] == "cpu"
    if backend == "torch":
        return _TorchScorer.load(directory, device, threads)
    if backend != "auto":
        if not on_cpu:
            raise ModelError(f"the {backend} backend runs on the CPU only, not on {device}; use the torch backend")
        return _OnnxScorer.open(directory, metadata, backend, threads)
    level, reason = logging.INFO, f"device {device}"
    if on_cpu:
        try:
            scorer = _OnnxScorer.open(directory, metadata, AUTO_ONNX_BACKEND, threads)
        except ModelError as error:
            level = logging.INFO if isinstance(error, _Unavailable) else logging.WARNING
            reason = str(error)
        else:
            log.info("backend auto: %s from %s, %d threads", AUTO_ONNX_BACKEND, scorer.path, threads)
            return scorer
    log.log(level, "backend auto: torch, %d threads (ONNX not used: %s)", threads, reason)
    return _TorchScorer.load(directory, device, threads)


def _int8_thresholds_hold_here(classifier: EmotionClassifier) -> bool:
    """Whether the int8 thresholds tuned at export may serve on this CPU.

    Yes where it runs the int8 kernel path they were tuned on (model/cpu.py; nothing is re-scored), or where the
    stored dev sample, each text scored alone as at export, moves by at most `INT8_SAMPLE_TOLERANCE`; no, said in one
    warning line, otherwise. A model exported without the record is served unchecked (one debug line).
    """
    record = classifier.metadata.int8_kernel
    if not record:
        log.debug("backend onnx-int8: no int8 kernel record in %s (an older export): not checked", METADATA_FILE)
        return True
    here = int8_kernel_path()
    if here == record["cpu"]:
        return True
    sample = record["sample"]
    stored = np.asarray(sample["scores"], dtype=np.float32)
    change = float(np.abs(classifier.predict_scores(sample["texts"], batch_size=1) - stored).max())
    kernels = f"this CPU's int8 kernels ({describe_kernel_path(here)}) are not those its thresholds were tuned on "
    kernels += f"({describe_kernel_path(record['cpu'])})"
    if change > INT8_SAMPLE_TOLERANCE:
        log.warning(
            "backend onnx-int8: serving fp32 ONNX instead: %s, and they move its %d stored dev scores by up to %.4f "
            "(more than %.2f)",
            kernels,
            len(stored),
            change,
            INT8_SAMPLE_TOLERANCE,
        )
        return False
    log.info("backend onnx-int8: %s, but its %d stored dev scores agree within %.4f", kernels, len(stored), change)
    return True
