"""Mood charts (matplotlib's Agg canvas). Pure functions returning PNG bytes; call them off the event loop."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import matplotlib.dates as mdates
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

COLOURS = ["#5865F2", "#57F287", "#FEE75C", "#EB459E", "#ED4245", "#99AAB5"]
#: The y-axis reaches this much above the highest share (the legend goes in the space above the lines).
HEADROOM = 1.3


def mood_chart(
    timeline: list[tuple[int, int, dict[str, int]]],
    labels: list[str],
    title: str,
    bin_hours: int,
    *,
    since: float,
    until: float,
) -> bytes:
    """Share of analysed messages showing each of `labels`, per time bin, as a line chart PNG (`mood_figure`)."""
    fig = mood_figure(timeline, labels, title, bin_hours, since=since, until=until)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def mood_figure(
    timeline: list[tuple[int, int, dict[str, int]]],
    labels: list[str],
    title: str,
    bin_hours: int,
    *,
    since: float,
    until: float,
) -> Figure:
    """The chart of `mood_chart`: one line per label over the period [since, until)."""
    bins: dict[int, tuple[int, dict[str, int]]] = {}
    width = 3600 * bin_hours
    for start, messages, counts in timeline:
        key = start - start % width
        total, merged = bins.get(key, (0, {}))
        for label, count in counts.items():
            merged[label] = merged.get(label, 0) + count
        bins[key] = (total + messages, merged)
    times = sorted(bins)
    when = [datetime.fromtimestamp(t, UTC) for t in times]

    fig = Figure(figsize=(8, 3.6), dpi=100)  # not pyplot: its global state is not thread-safe
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    highest = 0.0
    for colour, label in zip(COLOURS, labels, strict=False):
        shares = [100 * bins[t][1].get(label, 0) / max(bins[t][0], 1) for t in times]
        highest = max([highest, *shares])
        ax.plot(when, shares, marker="o", markersize=3, linewidth=2, label=label, color=colour)
    ax.set_ylabel("% of messages")
    # Headroom above the top series, where the legend sits; a small scale never reads as more than it is.
    ax.set_ylim(0, max(highest, 10.0) * HEADROOM)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    # The whole requested period, so that fresh data is a few dots on a day's (or a fortnight's) axis, not a
    # span of years that matplotlib would choose around a single point.
    ax.set_xlim(datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(until, UTC))
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8, tz=UTC)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%b %d %H:%M" if until - since <= 2 * 86400 else "%b %d", tz=UTC))
    fig.autofmt_xdate()
    if labels:
        ax.legend(loc="upper left", fontsize=8, ncols=min(len(labels), 5))
    fig.tight_layout()
    return fig
