"""Mood alerts measured: four simulated weeks replayed through the Discord stand-in into the real bot, on its
injectable clock; false alerts per channel-week without a spike, then planted spikes, alerted or not, and how soon.

    python benchmarks/alerts_replay.py --model DIR [--weeks 4] [--seed 28] [--data-dir $GOEMOTIONS_DIR] [--json OUT]

What runs. The real `MoodringBot` (built from `BotConfig` with its defaults, a fresh SQLite file, the model in
`--model`) connects to a `sandbox.DiscordStandIn` in this process, as in the tests. Its clock (`bot.clock`) is the
simulation's: each message is analysed and counted at its simulated time. `/moodring alerts` is run through the
stand-in by the server's owner (moderators' channel #mods, the default emotions and sensitivity). Three channels of
different sizes get GoEmotions dev texts (drawn at random, with replacement) at a Poisson rate that swings with the
hour of day (quiet at night, busiest in the afternoon) and the day of the week (weekends 1.4 times busier, Mondays
0.8), with no planted spike: every alert in those weeks is a false alert. Time moves in slices of 5 minutes (1
minute on the spike days): the slice's messages are dispatched through the gateway, the script waits until the
bot has an outcome for each, flushes the statistics, and runs the alert check at the slice's end. The bot's
counts only change at a slice's end, and the detector is a function of counts, so this tests every state the
minute loop would see (its own loop also runs, on the same simulated clock; the claim keeps them from alerting
twice).

Then two days with a planted spike per channel, each one hour near the channel's peak (13:00-15:00 UTC) at its
usual volume, in which the anger group's share is tripled (the group: the watched emotions,
`BotConfig.alert_labels`), first as GoEmotions' gold labels say (the day after the weeks: what people wrote), then
as the served model reads the texts (the day after: what the detector can see; the model reads each dev text once
before the replay, with the bot's own text preparation and counting rule, and gives the same scores in the bot,
since fp32 ONNX and torch are batch-independent). Reported per channel and spike: whether it was alerted, and the
minutes from the spike's first message to the alert (the alert's own timestamp, the simulated time it was posted),
with the model's share of watched messages over the weeks and in the spike hour. Alerts are read from what the bot
posted to #mods through the stand-in.

The report is JSON (stdout, and `--json OUT`), with the machine's CPU and the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import platform
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HOUR = 3600
T0 = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp())  # a Monday, 00:00 UTC
#: Peak messages per hour of each channel (at 14:00 UTC), and the hour of its planted spikes.
CHANNELS = {"busy": (40.0, 14), "medium": (20.0, 15), "quiet": (10.0, 13)}
#: The planted spikes, in order, one day each after the weeks: by the gold labels, then by the model's reading.
SPIKES = ("gold", "model")
WEEKDAY_FACTOR = (0.8, 1.0, 1.0, 1.0, 1.0, 1.4, 1.4)
OUTCOMES = ("analyzed", "analysis_failed", "analysis_timed_out", "reply_mentions")


def hourly_rate(peak: float, moment: float) -> float:
    """Messages per hour at `moment`: a daily swing (5% of the peak from midnight to 06:00 UTC, the peak at 14:00,
    a quarter of it by 22:00) times the day's weekly factor."""
    when = datetime.fromtimestamp(moment, UTC)
    daily = 0.05 + 0.95 * max(0.0, math.sin(math.pi * (when.hour + 0.5 - 6) / 18)) ** 2
    return peak * daily * WEEKDAY_FACTOR[when.weekday()]


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")


def dev_texts(data_dir: Path, group: set[str]) -> tuple[list[str], list[str]]:
    """GoEmotions dev texts with a gold label in `group`, and the others."""
    names = (data_dir / "emotions.txt").read_text(encoding="utf-8").split()
    inside, outside = [], []
    with open(data_dir / "dev.tsv", encoding="utf-8", newline="") as rows:
        for text, labels, _ in csv.reader(rows, delimiter="\t", quoting=csv.QUOTE_NONE):
            gold = {names[int(i)] for i in labels.split(",")}
            (inside if gold & group else outside).append(text)
    return inside, outside


@dataclass
class Channel:
    name: str
    channel_id: int
    peak: float
    spike_hour: int
    messages: int = 0
    spike_first_at: dict[str, float] = field(default_factory=dict)
    alerts: list[float] = field(default_factory=list)


def model_watched(model_dir: Path, texts: list[str], group: set[str]) -> list[str]:
    """The texts the served model reads with a watched emotion, by the bot's rule (bot/cogs/emotions.py: the
    emotions above their thresholds, else the top one; unreadable texts are not counted)."""
    from model import EmotionClassifier
    from model.text_preparation import clean_markup

    classifier = EmotionClassifier.load(model_dir)
    prepared = [clean_markup(text) for text in texts]
    kept = [(text, ready) for text, ready in zip(texts, prepared, strict=True) if ready]
    predictions = classifier.predict([ready for _, ready in kept], top_k=None, batch_size=64)
    watched = []
    for (text, _), prediction in zip(kept, predictions, strict=True):
        shown = [s.label for s in prediction.top if s.above_threshold] or [prediction.top[0].label]
        if not prediction.unreadable and group & set(shown):
            watched.append(text)
    return watched


def outcomes(bot) -> int:
    return sum(count for key, count in bot.counters.items() if key in OUTCOMES or key.startswith("skipped_"))


async def replay(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bot.app import MoodringBot
    from bot.cli import point_discord_at
    from bot.config import BotConfig
    from sandbox import DiscordStandIn, payloads

    rng = random.Random(args.seed)
    group = set(BotConfig.alert_labels)
    inside, outside = dev_texts(Path(args.data_dir), group)
    every = inside + outside
    started = time.monotonic()
    read_watched = model_watched(Path(args.model), every, group)
    flagged = set(read_watched)
    pools = {
        "gold": (inside, outside, len(inside) / len(every)),
        "model": (read_watched, [t for t in every if t not in flagged], len(read_watched) / len(every)),
    }
    print(f"read the dev texts: {len(read_watched)} of {len(every)} watched", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        standin = DiscordStandIn(identify_window_s=0.0)
        async with standin:
            guild = standin.guild_id
            channels = [Channel("busy", standin.channel_id, *CHANNELS["busy"])]
            for name in ("medium", "quiet"):
                channel_id = int(standin.world.add_text_channel(guild, name)["id"])
                channels.append(Channel(name, channel_id, *CHANNELS[name]))
            mods = int(standin.world.add_text_channel(guild, "mods")["id"])
            config = BotConfig(
                token=standin.token,
                model_dir=Path(args.model),
                database=Path(workdir) / "db.sqlite3",
                dev_guild_id=guild,
                train_on_start=False,
                work_dir=Path(workdir) / "runs",
            )
            with point_discord_at(standin.api_base, standin.gateway_url):
                bot = MoodringBot(config, guild_ready_timeout=0.05)
                clock = {"now": T0}
                bot.clock = lambda: clock["now"]
                task = asyncio.create_task(bot.start(standin.token))
                try:
                    while not bot.is_ready():
                        if task.done():
                            task.result()
                        await asyncio.sleep(0.05)
                    while bot.get_cog("Alerts") is None or not bot.inference.classifier:
                        await asyncio.sleep(0.05)
                    asked = await standin.dispatch_slash_command(
                        "moodring alerts",
                        {"channel": mods},
                        user=standin.owner_id,
                        member_permissions=payloads.DEFAULT_EVERYONE_PERMISSIONS | payloads.PERM_MANAGE_GUILD,
                    )
                    answer = (await standin.wait_for_interaction_response(asked, timeout=30)).json["data"]["content"]
                    if "**on**" not in answer:
                        raise RuntimeError(f"/moodring alerts did not switch alerts on: {answer}")
                    await run_hours(bot, standin, channels, rng, every, pools, clock, args)
                    counts = await spike_counts(bot, guild, channels, args)
                finally:
                    await bot.close()
                    await asyncio.wait([task], timeout=30)
            read_alerts(standin, mods, channels)
    return report(args, channels, pools, counts, time.monotonic() - started)


def spike_start(args: argparse.Namespace, kind: str, channel: Channel) -> int:
    return T0 + (args.weeks * 7 + SPIKES.index(kind)) * 86400 + channel.spike_hour * HOUR


async def run_hours(bot, standin, channels, rng, every, pools, clock, args) -> None:
    alerts = bot.get_cog("Alerts")
    hours = (args.weeks * 7 + len(SPIKES)) * 24
    spike_days = T0 + args.weeks * 7 * 86400
    sent = 0
    for hour in range(hours):
        start = T0 + hour * HOUR
        slice_s = 60 if start >= spike_days else 300
        arrivals: list[tuple[float, Channel, str]] = []
        for channel in channels:
            kind = next((k for k in SPIKES if spike_start(args, k, channel) == start), None)
            for _ in range(poisson(rng, hourly_rate(channel.peak, start))):
                if kind is None:
                    text = rng.choice(every)
                else:  # the anger group's share tripled
                    group, others, group_share = pools[kind]
                    text = rng.choice(group if rng.random() < min(1.0, 3 * group_share) else others)
                arrivals.append((start + rng.random() * HOUR, channel, text))
            if kind is not None:
                times = [at for at, c, _ in arrivals if c is channel]
                if times:
                    channel.spike_first_at[kind] = min(times)
        arrivals.sort(key=lambda item: item[0])
        index = 0
        for edge in range(start + slice_s, start + HOUR + 1, slice_s):
            batch = []
            while index < len(arrivals) and arrivals[index][0] < edge:
                batch.append(arrivals[index])
                index += 1
            if batch:
                clock["now"] = batch[-1][0]  # the slice's messages are counted in its hour, as they arrive
                for _, channel, text in batch:
                    await standin.dispatch_message(channel.channel_id, text)
                    channel.messages += 1
                sent += len(batch)
                deadline = time.monotonic() + 120
                while outcomes(bot) < sent:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the bot answered {outcomes(bot)} of {sent} messages")
                    await asyncio.sleep(0.002)
                await bot.store.flush()
            clock["now"] = float(edge)
            await alerts.check_alerts(float(edge))
        if hour % 24 == 23:
            print(f"day {hour // 24 + 1}: {sent} messages", file=sys.stderr, flush=True)


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method; the means here are small)."""
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


async def spike_counts(bot, guild: int, channels: list[Channel], args: argparse.Namespace) -> dict:
    """What the model saw: each channel's share of watched messages over the weeks, and in each spike hour."""
    from bot.store import AlertCounts

    spike_days = T0 + args.weeks * 7 * 86400
    found = {}
    for channel in channels:
        weeks = await bot.store.alert_counts(guild, T0, spike_days, spike_days)
        base = weeks[channel.channel_id][0] if channel.channel_id in weeks else AlertCounts()
        found[channel.name] = {"weeks_messages": base.messages, "weeks_watched_share": share(base)}
        for kind in SPIKES:
            at = spike_start(args, kind, channel)
            hour = await bot.store.alert_counts(guild, at, at, at + HOUR)
            window = hour[channel.channel_id][1] if channel.channel_id in hour else AlertCounts()
            found[channel.name][kind] = {"messages": window.messages, "watched_share": share(window)}
    return found


def share(counts) -> float:
    return round(counts.watched / max(counts.messages, 1), 4)


def read_alerts(standin, mods: int, channels: list[Channel]) -> None:
    by_id = {c.channel_id: c for c in channels}
    for message in standin.bot_messages(mods):
        embeds = message.get("embeds") or []
        if not embeds or not embeds[0].get("title", "").startswith("Mood alert"):
            continue
        channel_id = int(embeds[0]["url"].rsplit("/", 1)[1])
        posted = datetime.fromisoformat(embeds[0]["timestamp"]).timestamp()
        by_id[channel_id].alerts.append(posted)


def report(args: argparse.Namespace, channels: list[Channel], pools: dict, counts: dict, elapsed: float) -> dict:
    spike_days = T0 + args.weeks * 7 * 86400
    rows = {}
    false_total = 0
    for channel in channels:
        false_alerts = [at for at in channel.alerts if at < spike_days]
        false_total += len(false_alerts)
        row = {
            "peak_per_hour": channel.peak,
            "messages": channel.messages,
            "false_alerts": len(false_alerts),
            "false_alerts_per_week": round(len(false_alerts) / args.weeks, 3),
            "false_alert_times": [datetime.fromtimestamp(at, UTC).isoformat() for at in false_alerts],
            "weeks_messages": counts[channel.name]["weeks_messages"],
            "weeks_watched_share": counts[channel.name]["weeks_watched_share"],
        }
        for kind in SPIKES:
            at = spike_start(args, kind, channel)
            caught = [moment for moment in channel.alerts if at <= moment < at + HOUR]
            first = channel.spike_first_at.get(kind)
            row[f"spike_{kind}"] = {
                "hour": datetime.fromtimestamp(at, UTC).isoformat(),
                "alerted": bool(caught),
                "delay_min": round((caught[0] - first) / 60, 1) if caught and first is not None else None,
                **counts[channel.name][kind],
            }
        rows[channel.name] = row
    return {
        "command": "python " + " ".join(sys.argv),
        "cpu": cpu_model(),
        "model": str(args.model),
        "weeks": args.weeks,
        "seed": args.seed,
        "anger_group_share_of_dev_texts": {kind: round(pool[2], 4) for kind, pool in pools.items()},
        "false_alerts_per_channel_week": round(false_total / (args.weeks * len(channels)), 3),
        "channels": rows,
        "elapsed_s": round(elapsed, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained model directory (moodring.json inside)")
    parser.add_argument("--data-dir", default=None, help="GoEmotions (dev.tsv, emotions.txt); default $GOEMOTIONS_DIR")
    parser.add_argument("--weeks", type=int, default=4)
    parser.add_argument("--seed", type=int, default=28)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    if args.data_dir is None:
        import os

        args.data_dir = os.environ.get("GOEMOTIONS_DIR")
        if not args.data_dir:
            parser.error("set GOEMOTIONS_DIR or --data-dir")
    result = asyncio.run(replay(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
