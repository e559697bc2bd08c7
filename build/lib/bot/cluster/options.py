"""What `moodring run` (bot/cli.py) and `moodring cluster` (bot/cluster/supervisor.py) share: the `--shard-count`
option, and the exit statuses by which a `moodring run` child tells its supervisor whether a restart can help.

Both commands import it from here, so neither imports the other for it.
"""

from __future__ import annotations

import argparse

from model.arguments import positive_int

#: Exit status for a setting to fix (argparse's usage errors too): restarting cannot help.
EXIT_CONFIG = 2
#: Exit status when Discord cannot be reached (sysexits.h EX_TEMPFAIL: try again later).
EXIT_UNREACHABLE = 75


def add_shard_count_option(parser: argparse.ArgumentParser) -> None:
    """`--shard-count N`, as `moodring run` and `moodring cluster` both take it."""
    parser.add_argument(
        "--shard-count",
        type=positive_int,
        metavar="N",
        help="the total number of shards (MOODRING_SHARD_COUNT; default: Discord's recommendation)",
    )
