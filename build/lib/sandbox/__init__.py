"""A local Discord: gateway v10 and the REST routes a bot uses, for the real, unmodified discord.py client.

The test suite drives the bot with it (tests/standin_fixtures.py; ``sandbox.control`` is what tests use to watch
and steer it), and ``moodring sandbox`` (moodring/sandbox_command.py) serves it with a web page for trying the bot
in a browser (``sandbox.page``). It imports nothing of moodring: the bot talks to it only over HTTP and the
websocket, as it does to Discord. See README.md beside this file.
"""

from . import payloads
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
    "payloads",
]
