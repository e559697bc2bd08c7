"""Tez callbacks for what Tez 0.7.2 gets wrong or lacks.

Tez averages metrics per batch (wrong for F1), its `EarlyStopping` uses `np.Inf` (gone in NumPy 2)
and its full checkpoints pickle a config that `torch.load` refuses by default. `DevEvaluation`
replaces all three: it scores the whole dev split, saves the best weights as safetensors and stops
on a patience. `ProgressLog` writes machine-readable progress for the bot's retrain command. `ResumePoint` keeps
what an interrupted training needs to go on from its last finished epoch, and puts it back when it does.
`WeightAverage` keeps an exponential moving average of the weights, which `DevEvaluation` then scores and saves.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import broadcast
from tez import Tez, enums
from tez.callbacks import Callback
from torch.utils.data import DataLoader, RandomSampler, Sampler

from model.storage import replace_directory, staging_directory
from model.training_contract import ProgressWriter
from training.metrics import PAPER_THRESHOLD, community_summary, cross_fit_macro_f1, f1_scores, tune_thresholds

log = logging.getLogger(__name__)

#: Beside the weights in a checkpoint: the dev predictions they make, which the thresholds are tuned on.
CHECKPOINT_PREDICTIONS = "dev-predictions.npz"
#: In a resume directory: weights, optimiser, schedule, random states and the dev record after the last epoch.
RESUME_STATE = "state.pt"


class EveryProcessTez(Tez):
    """Tez with its callbacks run in every process, not only the main one.

    Tez 0.7.2 calls callbacks only where `is_local_main_process`, so under `accelerate launch` a callback cannot
    make the processes agree (on stopping early, say) and any collective in one deadlocks. Here each callback
    runs everywhere and decides itself what the other processes do: `DevEvaluation` scores dev on the main
    process only and shares its stop decision; `ProgressLog` is only given to the main process.
    """

    @property
    def train_state(self):
        return self._train_state

    @train_state.setter
    def train_state(self, value) -> None:
        self._train_state = value
        if self._callback_runner is not None:
            self._callback_runner(value)


@torch.inference_mode()
def predict_scores(network: torch.nn.Module, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid scores and targets for every row of `loader`, in order."""
    was_training = network.training
    network.eval()
    device = next(network.parameters()).device
    scores, targets = [], []
    for batch in loader:
        logits = network(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        scores.append(torch.sigmoid(logits.float()).cpu().numpy())
        targets.append(batch["targets"].numpy())
    network.train(was_training)
    return np.concatenate(scores), np.concatenate(targets).astype(bool)


def dev_summary(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dev macro-F1 with per-label tuned thresholds (the selection metric), cross-fit, and at 0.3 and 0.5."""
    thresholds = tune_thresholds(truth, scores)
    return {
        "macro_f1": float(f1_scores(truth, scores >= thresholds).mean()),
        "macro_f1_cross_fit": cross_fit_macro_f1(truth, scores, "per_label"),
        "macro_f1_at_0.3": float(f1_scores(truth, scores >= PAPER_THRESHOLD).mean()),
        "macro_f1_at_0.5": float(f1_scores(truth, scores >= 0.5).mean()),
    }


def read_checkpoint(checkpoint_dir: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """The dev scores and targets saved with a checkpoint's weights, and the epoch they are from."""
    with np.load(Path(checkpoint_dir) / CHECKPOINT_PREDICTIONS) as saved:
        return saved["scores"], saved["truth"], int(saved["epoch"])


class WeightAverage(Callback):
    """An exponential moving average of the network's trained parameters, updated after every optimiser step.

    The decay warms up as `min(decay, (1 + n) / (10 + n))` after `n` updates, so the average soon forgets the
    randomly initialised head instead of carrying `decay ** steps` of it to the end. The training itself never sees
    the average: it only reads the weights, so with the same seed the trained weights are those of a training
    without it. `applied()` puts the average in the network for a block (to score dev, to save a checkpoint).
    """

    def __init__(self, network: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.parameters = [p for p in network.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.parameters]
        self.updates = 0

    @torch.no_grad()
    def on_train_step_end(self, tez_trainer, **kwargs) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.average, [p.detach() for p in self.parameters], 1.0 - decay)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The average in the network's parameters for the block; the trained weights back afterwards, whatever
        the block raised."""
        trained = [p.detach().clone() for p in self.parameters]
        with torch.no_grad():
            torch._foreach_copy_([p.detach() for p in self.parameters], self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.detach() for p in self.parameters], trained)

    def state(self) -> dict:
        return {"average": [a.clone() for a in self.average], "updates": self.updates}

    def restore(self, state: dict) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self.average, state["average"])
        self.updates = int(state["updates"])


class DevEvaluation(Callback):
    """After each epoch: score the whole dev split, keep the best weights, stop after `patience` misses.

    A checkpoint is the weights and the dev predictions they make (`read_checkpoint`), written to a
    staging directory and renamed into place, so that an interrupt (Ctrl-C) during a save leaves the
    previous checkpoint whole, with its own predictions. `best_score` changes only once the new one is in place.
    With a `community_loader` (the corrections' dev split) each epoch also reports "community dev"; the best
    epoch is still chosen on GoEmotions dev. With a `weight_average`, the average is what is scored, chosen and
    saved; the trained weights' own dev figures are kept beside it in the history (`trained_weights`), for the record.
    """

    def __init__(
        self,
        dev_loader: DataLoader,
        checkpoint_dir: Path,
        patience: int,
        min_delta: float = 0.0,
        on_evaluated: Callable[[int, dict], None] | None = None,
        community_loader: DataLoader | None = None,
        weight_average: WeightAverage | None = None,
    ) -> None:
        self.dev_loader = dev_loader
        self.weight_average = weight_average
        self.community_loader = community_loader
        self.checkpoint_dir = Path(checkpoint_dir)
        self.patience = patience
        self.min_delta = min_delta
        self.on_evaluated = on_evaluated
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.misses = 0
        self.history: list[dict] = []

    def state(self) -> dict:
        """What it has decided so far (the best epoch, its score, the misses, the history), for `restore`."""
        return {
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "misses": self.misses,
            "history": self.history,
        }

    def restore(self, state: dict) -> None:
        """Go on from `state()` of an interrupted run whose best checkpoint is still in `checkpoint_dir`."""
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        self.misses, self.history = state["misses"], list(state["history"])

    def on_epoch_end(self, tez_trainer, **kwargs) -> None:
        """Under `accelerate launch` only the main process evaluates; the others wait for its stop decision."""
        driver = tez_trainer._driver
        stop = self._evaluate(tez_trainer) if driver.is_main_process else False
        if driver.num_processes > 1:  # a collective: every process leaves the epoch together, and stops together
            stop = bool(broadcast(torch.tensor([stop], device=driver.device)).item())
        if stop:
            tez_trainer.model_state = enums.ModelState.END

    def _evaluate(self, tez_trainer) -> bool:
        """Score dev, keep the best checkpoint; True when patience has run out."""
        network = tez_trainer._driver.unwrap_model(tez_trainer.model).network
        if self.weight_average is None:
            return self._evaluate_weights(tez_trainer, network, {})
        # A pass over a DataLoader draws its seed from torch's random state: the extra pass leaves that state as it
        # was, so the dropout of the epochs that follow, and the trained weights, are those of a plain training.
        with torch.random.fork_rng(devices=[]):
            trained = dev_summary(*predict_scores(network, self.dev_loader))
        with self.weight_average.applied():
            return self._evaluate_weights(tez_trainer, network, {"trained_weights": trained})

    def _evaluate_weights(self, tez_trainer, network: torch.nn.Module, extra: dict) -> bool:
        scores, truth = predict_scores(network, self.dev_loader)
        summary = dev_summary(scores, truth)
        epoch = tez_trainer.current_epoch + 1
        if self.community_loader is not None:
            community_scores, community_truth = predict_scores(network, self.community_loader)
            summary.update(community_summary(community_scores, community_truth, tune_thresholds(truth, scores)))
            log.info(
                "epoch %d: community dev micro-F1 %.4f (%d rows)",
                epoch,
                summary["community_dev_micro_f1"],
                summary["community_dev_rows"],
            )
        self.history.append({"epoch": epoch, **summary, **extra})
        tez_trainer.metrics["valid"].update(summary)
        score = summary["macro_f1"]
        if self.best_score is None or score > self.best_score + self.min_delta:
            log.info("epoch %d: dev macro-F1 %.4f (best so far), saving %s", epoch, score, self.checkpoint_dir)
            self._save_checkpoint(network, scores, truth, epoch)
            self.best_score, self.best_epoch, self.misses = score, epoch, 0
        else:
            self.misses += 1
            log.info(
                "epoch %d: dev macro-F1 %.4f, best %.4f at epoch %d (%d/%d epochs without improvement)",
                epoch,
                score,
                self.best_score,
                self.best_epoch,
                self.misses,
                self.patience,
            )
        if self.on_evaluated is not None:
            self.on_evaluated(epoch, summary)
        if self.misses >= self.patience:
            log.info("stopping early")
            return True
        return False

    def _save_checkpoint(self, network: torch.nn.Module, scores: np.ndarray, truth: np.ndarray, epoch: int) -> None:
        def write(staging: Path) -> None:
            network.save_pretrained(staging)
            np.savez(staging / CHECKPOINT_PREDICTIONS, scores=scores, truth=truth, epoch=epoch)

        write_whole_directory(self.checkpoint_dir, write)


def write_whole_directory(target: Path, write: Callable[[Path], None]) -> None:
    """`write(staging)` fills a staging directory, which then replaces `target`: an interrupt (Ctrl-C included)
    during the write leaves what was in `target` whole, and no half-written copy."""
    staging = staging_directory(target)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_directory(staging, target)


class ProgressLog(Callback):
    """The training's progress for the bot's retrainer, through model/training_contract.py's `ProgressWriter`: a
    `step` event at most every `interval` seconds (and at the last step), `dev` after each epoch (the method is
    `DevEvaluation`'s `on_evaluated`) and `done` after the export."""

    def __init__(self, path: Path, num_epochs: int, interval: float = 2.0, resumed_steps: int = 0) -> None:
        """`resumed_steps`: steps a resumed training did before it was interrupted (the ETA counts this run's)."""
        self.writer = ProgressWriter(path)
        self.num_epochs = num_epochs
        self.interval = interval
        self.resumed_steps = resumed_steps
        self.started = time.monotonic()
        self.last_write = 0.0

    def on_train_step_end(self, tez_trainer, **kwargs) -> None:
        now = time.monotonic()
        step, total = tez_trainer._train_step, tez_trainer.num_train_steps
        if now - self.last_write < self.interval and step != total:
            return
        self.last_write = now
        elapsed = now - self.started
        done_here = step - self.resumed_steps
        eta = elapsed / done_here * (total - step) if done_here > 0 else None
        loss = tez_trainer.metrics["train"].get("loss")
        self.writer.step(
            epoch=tez_trainer.current_epoch + 1,
            epochs=self.num_epochs,
            step=step,
            total_steps=total,
            elapsed_s=round(elapsed, 1),
            eta_s=None if eta is None else round(eta, 1),
            loss=None if loss is None else float(loss),
        )

    def dev(self, epoch: int, summary: dict) -> None:
        self.writer.dev(epoch, summary)

    def done(self, out: Path, dev_macro_f1: float) -> None:
        self.writer.done(out, dev_macro_f1)


class ResumePoint(Callback):
    """After each epoch the main process saves, whole or not at all (`write_whole_directory`), what the training
    needs to go on from there: the network's weights, the optimiser and its learning-rate schedule, the random
    states (dropout's, the batch order's) and `DevEvaluation`'s record (`read_resume_state` reads it back). Given
    such a `saved` state, every process puts it back when training starts, so that Tez runs only the epochs left
    and, with the same seed, ends with the weights an uninterrupted training would have had.

    A state is only for the `recipe` it was saved with (the training's arguments and data), which it records.
    """

    def __init__(
        self,
        directory: Path,
        recipe: dict,
        total_epochs: int,
        sampler: Sampler,
        dev_evaluation: DevEvaluation,
        saved: dict | None = None,
    ) -> None:
        """The weight average, if any, is `dev_evaluation`'s, and is saved and put back with the rest."""
        self.directory = Path(directory)
        self.recipe = recipe
        self.total_epochs = total_epochs
        self.sampler = sampler
        self.dev_evaluation = dev_evaluation
        self.saved = saved

    def on_train_start(self, tez_trainer, **kwargs) -> None:
        if self.saved is None:
            return
        saved = self.saved
        tez_trainer._driver.unwrap_model(tez_trainer.model).network.load_state_dict(saved["network"])
        tez_trainer.optimizer.load_state_dict(saved["optimizer"])
        tez_trainer.scheduler.load_state_dict(saved["scheduler"])
        if self.dev_evaluation.weight_average is not None:
            self.dev_evaluation.weight_average.restore(saved["weight_average"])
        torch.set_rng_state(saved["torch_rng"])
        if isinstance(self.sampler, RandomSampler):
            self.sampler.generator.set_state(saved["sampler"])
        else:  # LengthGroupedSampler: seeded by its epoch
            self.sampler.epoch = int(saved["sampler"])
        steps_per_epoch = len(tez_trainer.train_loader)  # this process's share, as Tez counts its steps
        tez_trainer.current_epoch = saved["epoch"]
        tez_trainer._train_step = steps_per_epoch * saved["epoch"]
        tez_trainer.num_train_steps = steps_per_epoch * self.total_epochs

    def on_epoch_end(self, tez_trainer, **kwargs) -> None:
        """After `DevEvaluation` (listed before this callback), so that the state holds this epoch's record."""
        if not tez_trainer._driver.is_main_process:
            return
        network = tez_trainer._driver.unwrap_model(tez_trainer.model).network
        sampler = self.sampler.generator.get_state() if isinstance(self.sampler, RandomSampler) else self.sampler.epoch
        average = self.dev_evaluation.weight_average
        state = {
            "recipe": self.recipe,
            "epoch": tez_trainer.current_epoch + 1,
            "stopped": tez_trainer.model_state == enums.ModelState.END,  # early: no epoch is left to train
            "network": network.state_dict(),
            "optimizer": tez_trainer.optimizer.state_dict(),
            "scheduler": tez_trainer.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "sampler": sampler,
            "dev_evaluation": self.dev_evaluation.state(),
            "weight_average": None if average is None else average.state(),
        }
        write_whole_directory(self.directory, lambda staging: torch.save(state, staging / RESUME_STATE))
        log.info("epoch %d: saved the state to resume from in %s", state["epoch"], self.directory)


def read_resume_state(directory: Path) -> dict | None:
    """The state `ResumePoint` saved in `directory`, or None when there is none or it can't be read (logged)."""
    path = Path(directory) / RESUME_STATE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a state from another version, or damaged: train from the start instead
        log.warning("cannot resume from %s (%s): training from the start", path, error)
        return None
