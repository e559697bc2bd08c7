"""A Discord stand-in on 127.0.0.1 for testing the real, unmodified discord.py client.

``DiscordStandIn`` serves gateway v10 (JSON, zlib-stream/zstd-stream) and the REST routes a bot
uses; ``fixtures`` patches discord.py to talk to it. See ``tests/test_standin.py`` for examples.
"""

from . import payloads
from .fixtures import discord_standin, point_discord_at, running_bot, stop_bot
from .records import FaultRule, GatewayFrame, RecordedFile, RecordedRequest
from .server import DEFAULT_TOKEN, DiscordStandIn
from .world import InteractionRecord

__all__ = [
    "DEFAULT_TOKEN",
    "DiscordStandIn",
    "FaultRule",
    "GatewayFrame",
    "InteractionRecord",
    "RecordedFile",
    "RecordedRequest",
    "discord_standin",
    "payloads",
    "point_discord_at",
    "running_bot",
    "stop_bot",
]
