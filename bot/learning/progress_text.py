"""The retrain's progress message in Discord: one message, edited in place while a retrain runs (bot/cogs/admin.py).

Epoch, step and ETA while training, the dev scores by epoch, and the outcome with both models' scores, all from
the run's `RetrainStatus`, whose `detail` never holds a host path or a child's output. The first training's one-line
progress (`first_training_line`: the log, the bot's status), what members are told meanwhile
(`still_learning`) and the note on readings from a starter (`starter_note`) are made here too.
"""

from __future__ import annotations

import time

from bot.learning.retrain import RetrainStatus


def format_status(status: RetrainStatus) -> str:
    """One progress message, edited in place while the retrain runs."""
    elapsed = time.time() - status.started_at
    lines = ["**Retraining the emotion model**"]
    if status.phase == "starting":
        lines.append("Starting `moodring train`…")
    elif status.phase == "training":
        eta = f", about {duration(status.eta_s)} left" if status.eta_s is not None else ""
        lines.append(
            f"Epoch {status.epoch}/{status.epochs} · step {status.step}/{status.total_steps} ({status.percent}%){eta}"
        )
    elif status.phase == "evaluating":
        lines.append("Training done. Scoring the new model on the dev split…")
    if status.dev_f1:
        lines.append("Dev macro-F1 by epoch: " + ", ".join(f"{f:.3f}" for f in status.dev_f1))
    if status.community_f1:
        lines.append(
            f"Community dev micro-F1 by epoch ({status.community_rows} rows): "
            + ", ".join(f"{f:.3f}" for f in status.community_f1)
        )
    if status.outcome == "swapped":
        before = f" (was {status.current_f1:.3f})" if status.current_f1 is not None else ""
        served = f"✅ New model is now serving: dev macro-F1 {status.candidate_f1:.3f}{before}."
        lines.append(f"{served} {status.detail}" if status.detail else served)
        lines.extend(_community_line(status))
    elif status.outcome == "kept":
        lines.append(
            f"↩️ Kept the current model: new dev macro-F1 {status.candidate_f1:.3f} vs current "
            f"{status.current_f1:.3f} (a new model must be within its tolerance of the current one, and at least as "
            "good on community dev once there are enough corrections)."
        )
        lines.extend(_community_line(status))
    elif status.outcome == "failed":
        lines.append(f"❌ Retraining failed; the current model keeps serving. {status.detail[:900]}")
    elif status.outcome == "cancelled":
        lines.append(f"⏹️ Retraining cancelled ({status.detail}); the current model keeps serving.")
    if status.finished:  # while running, the message changes only when progress does
        lines.append(f"Took {duration(elapsed)}.")
    return "\n".join(lines)


def _community_line(status: RetrainStatus) -> list[str]:
    """Both models' community-dev micro-F1, when there was community dev to score."""
    if status.candidate_community_f1 is None:
        return []
    current = f"{status.current_community_f1:.3f}" if status.current_community_f1 is not None else "—"
    return [
        f"Community dev micro-F1 ({status.community_rows} rows): new {status.candidate_community_f1:.3f} vs current "
        f"{current}."
    ]


STAGE_NAMES = {"starter": "starter model", "full": "full model"}


def first_training_line(status: RetrainStatus) -> str:
    """The first training's progress in one line, e.g. "Learning: full model, epoch 1/2, step 300/2714 (11%), about
    25m 10s left"."""
    stage = STAGE_NAMES.get(status.stage, "first model")
    if status.phase == "starting":
        return f"Learning: starting the {stage}"
    if status.phase == "evaluating":
        return f"Learning: {stage} trained, scoring it on dev"
    if status.phase != "training":
        return f"Learning: {stage} {status.phase}"
    eta = f", about {duration(status.eta_s)} left" if status.eta_s is not None else ""
    epochs = f"epoch {status.epoch}/{status.epochs}, " if status.epochs > 1 else ""
    return f"Learning: {stage}, {epochs}step {status.step}/{status.total_steps} ({status.percent}%){eta}"


def still_learning(status: RetrainStatus) -> str:
    """What a member is told while no model serves yet and the first training runs, with its ETA when known."""
    stage = STAGE_NAMES.get(status.stage, "first model")
    if status.phase == "training" and status.eta_s is not None:
        return (
            f"I'm still learning ({status.percent}% of my {stage} done, about {duration(status.eta_s)} left). "
            "Please try again then."
        )
    if status.phase == "training":
        return f"I'm still learning ({status.percent}% of my {stage} done). Please try again in a few minutes."
    return f"I'm still learning (my {stage} is starting: 0% done). Please try again in a few minutes."


def starter_note(status: RetrainStatus | None) -> str:
    """The note on a reading from a starter model: which model answered, and how far the full one is."""
    if status is None or status.finished or status.stage != "full":
        return "starter model"
    return f"starter model; the full one is {status.percent}% trained"


def duration(seconds: float | None) -> str:
    seconds = int(seconds or 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"
