"""The store's write throughput per engine: N analyses recorded and written in grouped flushes, as the bot does.

    python benchmarks/store_write.py --database /tmp/bench.sqlite3 [--analyses 100000] [--group 250]
    python benchmarks/store_write.py --database postgresql://user:password@127.0.0.1:5432/bench

Each analysis has 2 labels and lands in one of `--channels` channels of `--guilds` guilds over 24 hourly buckets,
so flushes both add to existing rows and insert new ones. `--group` analyses are recorded per flush (the bot
flushes every 250 ms, so a group is what arrives in one interval). Prints one JSON line: the engine, the analyses
written per second and the flushes (transactions) per second. Use an empty database, and run it with nothing else on
the machine: the figures mean nothing on shared cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time

from bot.store import is_postgres_url, open_store, redact_url
from bot.store.interface import bucket_start

T0 = bucket_start(1_700_000_000.0)
LABELS = (("joy", 0.75), ("admiration", 0.5))


async def measure(database: str, analyses: int, group: int, guilds: int, channels: int) -> dict:
    store = await open_store(database, flush_interval=3600)  # flushed here, not by the background flusher
    try:
        flushes = 0
        started = time.perf_counter()
        for i in range(analyses):
            store.record(i % guilds, 1000 + i % channels, LABELS, at=T0 + (i % 24) * 3600)
            if (i + 1) % group == 0:
                await store.flush()
                flushes += 1
        if await store.flush():
            flushes += 1
        elapsed = time.perf_counter() - started
        assert store.flushed_total == analyses and store.dropped == 0
    finally:
        await store.close()
    return {
        "engine": "postgresql" if is_postgres_url(database) else "sqlite",
        "database": redact_url(database),
        "analyses": analyses,
        "group": group,
        "seconds": round(elapsed, 3),
        "analyses_per_s": round(analyses / elapsed),
        "flushes_per_s": round(flushes / elapsed, 1),
        "machine": platform.processor() or platform.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="a SQLite file or a postgresql:// URL (an empty database)")
    parser.add_argument("--analyses", type=int, default=100_000)
    parser.add_argument("--group", type=int, default=250, help="analyses per flush")
    parser.add_argument("--guilds", type=int, default=10)
    parser.add_argument("--channels", type=int, default=50)
    args = parser.parse_args()
    if min(args.analyses, args.group, args.guilds, args.channels) < 1:
        parser.error("every number must be at least 1")
    print(json.dumps(asyncio.run(measure(args.database, args.analyses, args.group, args.guilds, args.channels))))


if __name__ == "__main__":
    main()
