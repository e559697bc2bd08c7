"""bot/limits.py, the one rate limiter: readings (per member and per channel) and corrections (per member)."""

from __future__ import annotations

import pytest

from bot.limits import RateLimits, Refusal


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_readings_are_limited_per_member_and_per_channel_with_one_warning_per_window() -> None:
    clock = Clock()
    limits = RateLimits(60.0, clock, user=2, channel=3)
    assert limits.check(user=1, channel=10) is None and limits.check(user=1, channel=10) is None
    assert limits.check(user=1, channel=10) == Refusal("user", 60.0, warn=True)
    clock.now += 1
    assert limits.check(user=1, channel=10) == Refusal("user", 59.0, warn=False)  # one "slow down" per window
    # The member's refusals took nothing from the channel: another member still gets its last reading.
    assert limits.check(user=2, channel=10) is None
    assert limits.check(user=3, channel=10) == Refusal("channel", 59.0, warn=True)
    # ... and a refusal by the channel's limit takes nothing from the member's: elsewhere, member 3 has both.
    assert limits.check(user=3, channel=11) is None and limits.check(user=3, channel=11) is None
    clock.now += 60  # the next window: reads again, and warns again
    assert limits.check(user=1, channel=10) is None and limits.check(user=1, channel=10) is None
    assert limits.check(user=1, channel=10) == Refusal("user", 60.0, warn=True)


def test_corrections_are_limited_per_member() -> None:
    clock = Clock()
    limits = RateLimits(600.0, clock, member=1)
    assert limits.check(member=7) is None and limits.check(member=8) is None
    assert limits.check(member=7) == Refusal("member", 600.0, warn=True)
    clock.now += 599
    assert limits.check(member=7) == Refusal("member", 1.0, warn=False)
    clock.now += 2
    assert limits.check(member=7) is None
    with pytest.raises(TypeError, match="member"):
        limits.check(user=7)
