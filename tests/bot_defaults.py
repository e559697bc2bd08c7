"""BotConfig's defaults for tests that build the bot's parts (`InferenceService`, `Retrainer`) without a bot.

Those parts define no defaults of their own (BotConfig is the one home of the bot's), so a test passes BotConfig's,
the way bot/app.py passes the configured ones.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from bot.config import BotConfig
from bot.inference import InferenceService

#: The settings with nothing set (a model directory given, so that none is looked up in the environment).
BOT_DEFAULTS = BotConfig(token="", model_dir=Path("models/unused"))
#: `Retrainer`'s settings from BotConfig's defaults, as bot/app.py passes them.
RETRAIN_SETTINGS: dict[str, Any] = {
    "extra_args": BOT_DEFAULTS.retrain_args,
    "tolerance": BOT_DEFAULTS.retrain_tolerance,
    "progress_interval": BOT_DEFAULTS.progress_interval,
    "community_min_rows": BOT_DEFAULTS.community_dev_min_rows,
}


def inference_service(**settings: Any) -> InferenceService:
    """The service the bot builds from BotConfig's defaults with `settings` (BotConfig fields) changed."""
    return InferenceService.from_config(replace(BOT_DEFAULTS, **settings))
