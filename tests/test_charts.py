"""`/mood`'s chart: the x-axis spans the requested period, whatever the data, with headroom above the top series."""

from __future__ import annotations

from datetime import UTC, datetime

import matplotlib.dates as mdates
import pytest

from bot.charts import mood_figure

HOUR = 3600
UNTIL = 1_780_000_000 - 1_780_000_000 % HOUR  # a whole hour


@pytest.mark.parametrize(("hours", "bin_hours"), [(24, 1), (72, 24), (14 * 24, 24)])
def test_the_x_axis_spans_the_requested_period_even_for_a_single_bucket(hours: int, bin_hours: int) -> None:
    since = UNTIL - hours * HOUR
    timeline = [(UNTIL - 2 * HOUR, 4, {"joy": 4, "love": 1})]  # one dot, as on fresh data
    ax = mood_figure(timeline, ["joy", "love"], "general: last day", bin_hours, since=since, until=UNTIL).axes[0]

    low, high = ax.get_xlim()
    assert mdates.num2date(low) == datetime.fromtimestamp(since, UTC)
    assert mdates.num2date(high) == datetime.fromtimestamp(UNTIL, UTC)
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert 3 <= len(ticks) <= 10, ticks  # readable ticks for 24 h, 3 d and 2 w alike


def test_the_top_series_has_headroom_under_the_frame_and_the_legend() -> None:
    since = UNTIL - 24 * HOUR
    timeline = [(since + h * HOUR, 10, {"joy": 10 if h % 2 else 4}) for h in range(24)]
    ax = mood_figure(timeline, ["joy"], "general: last day", 1, since=since, until=UNTIL).axes[0]

    bottom, top = ax.get_ylim()
    assert bottom == 0
    assert top >= 100 * 1.15  # the highest share is 100 %: the legend sits above it, not on it
