"""When a channel's share of watched messages rises significantly above that channel's own baseline.

A plain function of counts (``detect``), with no clock, store or Discord, so that the bot (bot/cogs/alerts.py) and
the replay benchmark (benchmarks/alerts_replay.py) run the same test.

- **The counter**: per channel and hour, the messages analysed and how many carried at least one watched emotion
  (bot/store, ``alert_buckets``). Labels overlap, so a share of messages is only measurable this way.
- **The window**: the last ``window_hours`` clock hours, the one in progress included, so that a spike is caught while
  it happens rather than after its hour has ended. The loop tests it every minute; a channel alerts at most once per
  cooldown, and after downtime the loop tests only the window it finds: a catch-up is one test, never a flood.
- **The baseline**: the same channel's share over the ``baseline_days`` before the window (a rolling share). Chosen
  over "the same hours in past weeks": the test is on the *share*, which daily and weekly swings in *volume* leave
  alone (they change how many messages a window has, which the test accounts for), and a rolling baseline has
  hundreds of hours of data where the same-hours one has two to four, so it works after days rather than weeks. The
  baseline share is smoothed, (watched + 1) / (messages + 2), so a quiet history never makes it zero.
- **The test**: one-sided exact binomial: the chance of at least the window's watched messages among its messages if
  each carried a watched emotion with the baseline share. It alerts when that chance is at most the level, the window
  has at least ``min_messages`` analysed messages, the baseline ``min_baseline_messages``, and the window's share is
  at least ``min_ratio`` times the baseline's (a large channel's tiny rise is significant but not worth a ping).
- **Sensitivity** maps to the level (``SENSITIVITY_LEVELS``); each press of **Less sensitive** divides that
  channel's level by ``LESS_SENSITIVE_FACTOR`` and multiplies its minimum ratio by ``LESS_SENSITIVE_RATIO``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bot.store import ALERT_SENSITIVITIES, AlertCounts, AlertSensitivity

__all__ = ["SENSITIVITY_LEVELS", "Finding", "Rules", "binomial_tail", "detect", "level_for"]

#: The test's level (false-alarm chance of one test under the baseline) for each sensitivity.
SENSITIVITY_LEVELS: dict[AlertSensitivity, float] = {"low": 1e-5, "medium": 1e-4, "high": 1e-3}
LESS_SENSITIVE_FACTOR = 10.0
LESS_SENSITIVE_RATIO = 1.25
#: At most this many "Less sensitive" steps count (the level stops at 1e-9 from "low").
MAX_STEPS = 4

assert tuple(SENSITIVITY_LEVELS) == ALERT_SENSITIVITIES


@dataclass(frozen=True, slots=True)
class Rules:
    """The test's settings that are not per guild (BotConfig holds their defaults)."""

    min_messages: int
    min_baseline_messages: int
    min_ratio: float


@dataclass(frozen=True, slots=True)
class Finding:
    """Why a window alerts: its counts and the baseline's, the baseline share tested against, and the p-value."""

    window: AlertCounts
    baseline: AlertCounts
    baseline_share: float
    p_value: float
    level: float

    @property
    def share(self) -> float:
        return self.window.watched / self.window.messages


def level_for(sensitivity: AlertSensitivity, steps: int) -> float:
    """The level of a channel at ``sensitivity`` after ``steps`` presses of **Less sensitive**."""
    return SENSITIVITY_LEVELS[sensitivity] / LESS_SENSITIVE_FACTOR ** min(max(steps, 0), MAX_STEPS)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exactly (summed in log space; no scipy)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    log_choose = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    terms = [log_choose + k * log_p + (n - k) * log_q]
    for i in range(k + 1, n + 1):  # each term from the one before: C(n, i) = C(n, i - 1) (n - i + 1) / i
        terms.append(terms[-1] + math.log(n - i + 1) - math.log(i) + log_p - log_q)
        if terms[-1] < terms[0] - 50 and i > n * p:  # past the mode and negligible: the rest adds nothing
            break
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def detect(
    window: AlertCounts, baseline: AlertCounts, rules: Rules, sensitivity: AlertSensitivity, steps: int = 0
) -> Finding | None:
    """A ``Finding`` when ``window`` rises significantly above ``baseline`` (see the module's docstring), else None."""
    if window.messages < rules.min_messages or baseline.messages < rules.min_baseline_messages:
        return None
    expected = (baseline.watched + 1) / (baseline.messages + 2)
    ratio = rules.min_ratio * LESS_SENSITIVE_RATIO ** min(max(steps, 0), MAX_STEPS)
    if window.watched / window.messages < ratio * expected:
        return None
    level = level_for(sensitivity, steps)
    p_value = binomial_tail(window.watched, window.messages, expected)
    if p_value > level:
        return None
    return Finding(window, baseline, expected, p_value, level)
