"""The mood alerts' test itself (bot/alerts/detector.py), as a function of counts: the exact binomial tail, when a
window fires and when not, the minimums, and what sensitivity and "Less sensitive" do."""

from __future__ import annotations

import math

import pytest

from bot.alerts.detector import SENSITIVITY_LEVELS, Rules, binomial_tail, detect, level_for
from bot.store import ALERT_SENSITIVITIES, AlertCounts

RULES = Rules(min_messages=20, min_baseline_messages=200, min_ratio=1.5)
BASELINE = AlertCounts(400, 40)  # a 10% share (41/402 smoothed)


def test_the_binomial_tail_is_exact() -> None:
    for n, p in ((30, 0.1), (12, 0.5), (200, 0.03)):
        for k in range(n + 1):
            exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
            assert binomial_tail(k, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-300)
    assert binomial_tail(0, 10, 0.3) == 1.0 and binomial_tail(11, 10, 0.3) == 0.0
    assert binomial_tail(3, 10, 0.0) == 0.0 and binomial_tail(3, 10, 1.0) == 1.0
    assert binomial_tail(9000, 10000, 0.5) < 1e-300  # far in the tail: no overflow, no error


def test_a_rise_above_the_channel_baseline_fires_and_an_ordinary_window_does_not() -> None:
    fired = detect(AlertCounts(30, 12), BASELINE, RULES, "medium")
    assert fired is not None and fired.share == 0.4
    assert fired.baseline_share == pytest.approx(41 / 402) and fired.p_value == pytest.approx(1.8677e-5, rel=1e-3)
    assert detect(AlertCounts(30, 4), BASELINE, RULES, "high") is None  # an ordinary share
    assert detect(AlertCounts(30, 9), BASELINE, RULES, "medium") is None  # p = 0.0023: not significant
    assert detect(AlertCounts(19, 19), BASELINE, RULES, "high") is None  # too few messages in the window
    assert detect(AlertCounts(30, 30), AlertCounts(199, 0), RULES, "high") is None  # too short a baseline
    # A large channel: significant, but less than min_ratio times its baseline.
    assert detect(AlertCounts(5000, 700), AlertCounts(50000, 5000), RULES, "high") is None
    assert detect(AlertCounts(5000, 800), AlertCounts(50000, 5000), RULES, "high") is not None


def test_sensitivity_and_less_sensitive_set_the_level() -> None:
    assert tuple(SENSITIVITY_LEVELS) == ALERT_SENSITIVITIES
    assert level_for("low", 0) < level_for("medium", 0) < level_for("high", 0)
    assert level_for("medium", 1) == pytest.approx(level_for("medium", 0) / 10)
    assert level_for("medium", 99) == level_for("medium", 4)  # capped
    window = AlertCounts(30, 12)  # p = 1.9e-5
    assert detect(window, BASELINE, RULES, "low") is None
    assert detect(window, BASELINE, RULES, "medium") is not None
    assert detect(window, BASELINE, RULES, "medium", steps=1) is None  # one press of Less sensitive
    assert detect(AlertCounts(30, 15), BASELINE, RULES, "medium", steps=1) is not None
