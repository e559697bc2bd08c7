"""The retrain's progress message in Discord: one message, edited in place while a retrain runs (bot/cogs/admin.py).

Epoch, step and ETA while training, the dev scores by epoch, and the outcome with both models' scores, all from
the run's `RetrainStatus`, whose `detail` never holds a host path or a child's output.
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
        eta = f", about {_duration(status.eta_s)} left" if status.eta_s is not None else ""
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
        lines.append(f"Took {_duration(elapsed)}.")
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


def _duration(seconds: float | None) -> str:
    seconds = int(seconds or 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"
