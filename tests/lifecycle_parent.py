"""A parent process for tests/test_lifecycle.py: starts a training child the way the bot does, then waits.

    python tests/lifecycle_parent.py retrainer ROOT BACKBONE DATA_DIR
        A `Retrainer` (bot/learning/retrain.py) starts `moodring train`; once it trains, the child's pid is printed.
        The test then kills this process without warning (SIGKILL): the child must stop by itself.
    python tests/lifecycle_parent.py bot ROOT BACKBONE DATA_DIR
        The real `MoodringBot` served by `bot.cli._serve` (the code behind `moodring run`, with its signal
        handlers) against a Discord stand-in; with no model yet it trains its first one at start-up. Once the
        child is running its pid is printed; the test then sends this process SIGTERM.

Either way the line printed is `child <pid>`, and training runs long enough that only a stop ends it.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

LONG_TRAINING = "--epochs 1000 --patience 1000 --train-limit 256 --dev-limit 32 --max-length 16"


async def retrainer_parent(root: Path, backbone: str, data_dir: str) -> None:
    from bot_defaults import RETRAIN_SETTINGS, inference_service

    from bot.learning.retrain import Retrainer, RetrainStatus

    retrainer = Retrainer(
        inference_service(),
        root / "model",
        root / "runs",
        backbone=backbone,
        data_dir=data_dir,
        **RETRAIN_SETTINGS | {"extra_args": LONG_TRAINING, "progress_interval": 0.2},
    )
    training = asyncio.Event()

    async def report(status: RetrainStatus) -> None:
        if status.phase == "training":
            training.set()

    await retrainer.start(report)
    await training.wait()
    print(f"child {retrainer.child_pid}", flush=True)
    await retrainer.wait()


async def bot_parent(root: Path, backbone: str, data_dir: str) -> int:
    from bot_fixtures import moodring_config

    from bot.app import MoodringBot
    from bot.cli import _serve, point_discord_at
    from sandbox import DiscordStandIn

    async with DiscordStandIn() as standin:
        with point_discord_at(standin.api_base, standin.gateway_url):
            config = moodring_config(
                standin,
                root / "model",  # no model there: the bot trains its first one at start-up
                root,
                train_on_start=True,
                backbone=backbone,
                data_dir=data_dir,
                retrain_args=LONG_TRAINING,
            )
            bot = MoodringBot(config, guild_ready_timeout=0.05)

            async def announce_child() -> None:
                while bot.retrainer.child_pid is None:
                    await asyncio.sleep(0.05)
                print(f"child {bot.retrainer.child_pid}", flush=True)

            announcer = asyncio.create_task(announce_child())
            code = await _serve(bot)
            announcer.cancel()
            return code


def main() -> int:
    mode, root, backbone, data_dir = sys.argv[1:5]
    if mode == "retrainer":
        asyncio.run(retrainer_parent(Path(root), backbone, data_dir))
        return 0
    return asyncio.run(bot_parent(Path(root), backbone, data_dir))


if __name__ == "__main__":
    raise SystemExit(main())
