"""The sandbox page: a small Discord-like client in the browser, and the JSON + websocket API it talks to.

The page (``static/``: index.html, app.js, style.css; no build step, no framework) lets a person play the members
of the stand-in's server. What they do goes through the same dispatch helpers the tests use, so the bot sees
ordinary gateway events; what the bot does arrives as REST requests that change the world. After every change
(a non-GET request from the bot, or an action from the page) ``/sandbox/ws`` sends ``{"type": "changed"}`` and
the page reads again what it shows.

API (JSON; errors are ``{"error": "..."}`` with status 400; every POST must be ``Content-Type: application/json``,
415 otherwise; only the page's own origin may use it, 403 otherwise: sandbox/guard.py):

* ``GET /sandbox/api/state``: guild, channels, roles (for role mentions and role options), members (with their
  role in the story and their server-wide ``permissions``, by which the page hides the commands whose
  ``default_member_permissions`` a member lacks, as Discord does), the bot (with its ``status``: the activity of
  its last presence update, as Discord shows it under its name), its synced commands
* ``GET /sandbox/api/channels/{channel_id}/messages?viewer=ID``: the last 100 messages member ID can see, oldest first
  (ephemeral answers only for the member who asked)
* ``POST /sandbox/api/messages`` ``{channel_id, author_id, content, reply_to?}``: ``<@id>`` in content mentions
* ``POST /sandbox/api/commands`` ``{channel_id, user_id, name, options}``: ``name`` like ``"moodring channel"``
* ``POST /sandbox/api/menu`` ``{message_id, user_id, name}``: a message context menu command
* ``POST /sandbox/api/components`` ``{message_id, user_id, custom_id, values?}``: a button click or select pick
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import WSMsgType, web

from . import payloads as p
from .payloads import JSON
from .records import RecordedRequest

if TYPE_CHECKING:
    from .gateway import Gateway
    from .world import World

STATIC_DIR = Path(__file__).with_name("static")
MESSAGES_SHOWN = 100
#: The largest message ``/sandbox/ws`` reads (the page sends none; a bigger one closes the socket with 1009).
SOCKET_MAX_MESSAGE = 1024
_MENTION_RE = re.compile(r"<@!?(\d+)>")
_ADMIN = p.PERM_ADMINISTRATOR | p.PERM_MANAGE_GUILD

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PageHost(Protocol):
    """What the page needs of the stand-in that serves it (:class:`sandbox.server.DiscordStandIn`)."""

    world: World
    gateway: Gateway
    guild_id: int
    channel_id: int
    request_listeners: list[Callable[[RecordedRequest], None]]
    dispatch_message: Callable[..., Awaitable[JSON]]
    dispatch_slash_command: Callable[..., Awaitable[JSON]]
    dispatch_context_menu: Callable[..., Awaitable[JSON]]
    dispatch_component: Callable[..., Awaitable[JSON]]

    @property
    def bot_user_id(self) -> int: ...

    def message(self, message_id: int | str) -> JSON | None: ...


class PageError(ValueError):
    """Bad input from the page; answered with status 400 and the message."""


def _json_handler(action: Callable[[JSON], Awaitable[JSON]]) -> Handler:
    """A POST handler: parse the JSON body, run ``action``, answer its result (or the error as 400).

    The body must be declared ``application/json``: a type that another site's page cannot send without a CORS
    preflight (``text/plain`` and the form types it can send are refused with 415 before the body is read).
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.content_type != "application/json":
            return web.json_response({"error": "the body must be sent as Content-Type: application/json"}, status=415)
        try:
            try:
                body = await request.json()
            except ValueError:
                raise PageError("the body must be JSON") from None
            if not isinstance(body, dict):
                raise PageError("expected a JSON object")
            return web.json_response(await action(body))
        except ValueError as error:  # PageError, bad JSON, or what the stand-in refused (an unknown channel...)
            return web.json_response({"error": str(error)}, status=400)

    return handle


def _int(body: Mapping[str, Any], key: str) -> int:
    try:
        return int(body[key])
    except (KeyError, TypeError, ValueError):
        raise PageError(f"{key} must be an id") from None


class SandboxPage:
    """Serves the page and its API for one stand-in, and tells open pages when something changed."""

    def __init__(self, standin: PageHost) -> None:
        self.standin = standin
        self._sockets: set[web.WebSocketResponse] = set()
        self._announcing: asyncio.Task[None] | None = None
        standin.request_listeners.append(self._on_request)
        standin.gateway.presence_listeners.append(self.changed)  # the bot's status, shown in the sidebar

    def routes(self) -> list[web.AbstractRouteDef]:
        """The page's routes, for the stand-in's aiohttp app."""
        return [
            web.get("/", self._index),
            web.static("/static", STATIC_DIR),
            web.get("/sandbox/ws", self._websocket),
            web.get("/sandbox/api/state", self._state),
            web.get("/sandbox/api/channels/{channel_id}/messages", self._messages),
            web.post("/sandbox/api/messages", _json_handler(self.post_message)),
            web.post("/sandbox/api/commands", _json_handler(self.run_command)),
            web.post("/sandbox/api/menu", _json_handler(self.run_menu)),
            web.post("/sandbox/api/components", _json_handler(self.use_component)),
        ]

    async def close(self) -> None:
        """Close the open pages' websockets."""
        for ws in list(self._sockets):
            await ws.close()

    # --- telling pages about changes ----------------------------------------------------------

    def _on_request(self, request: RecordedRequest) -> None:
        if request.method != "GET":
            self.changed()

    def changed(self) -> None:
        """Announce a change soon; changes close together make one announcement."""
        if self._sockets and (self._announcing is None or self._announcing.done()):
            self._announcing = asyncio.get_running_loop().create_task(self._announce())

    async def _announce(self) -> None:
        await asyncio.sleep(0.05)
        for ws in list(self._sockets):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(json.dumps({"type": "changed"}))

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=SOCKET_MAX_MESSAGE)
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            async for message in ws:  # the page only listens; anything it sends is ignored
                if message.type is WSMsgType.ERROR:
                    break
        finally:
            self._sockets.discard(ws)
        return ws

    # --- reading ------------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def _state(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.state())

    def state(self) -> JSON:
        """What the page needs to draw the server: channels, roles (for role mentions), members, the bot and its
        commands."""
        standin, world = self.standin, self.standin.world
        guild = world.guilds[standin.guild_id]
        channels = [{"id": p.sid(cid), "name": c["name"]} for cid, c in guild.channels.items()]
        members = []
        for uid in guild.members:
            if uid == world.bot_user_id:
                continue
            user = world.users[uid]
            if uid == guild.owner_id:
                role = "owner"
            elif world.permissions(standin.channel_id, uid) & _ADMIN:
                role = "admin"
            else:
                role = "member"
            permissions = p.compute_base_permissions(guild.summary(), guild.members[uid])
            members.append(
                {
                    "id": p.sid(uid),
                    "name": user.get("global_name") or user["username"],
                    "role": role,
                    "permissions": str(permissions),
                }
            )
        commands: dict[tuple[str, int], JSON] = {}  # a guild command hides a global one of the same name
        for command in [*world.global_commands.values(), *world.guild_commands.get(standin.guild_id, {}).values()]:
            commands[command["name"], command["type"]] = command
        return {
            "guild": {"id": p.sid(guild.id), "name": guild.name},
            "channels": channels,
            "roles": [{"id": p.sid(rid), "name": r["name"]} for rid, r in guild.roles.items() if rid != guild.id],
            "members": members,
            "bot": {
                "id": p.sid(world.bot_user_id),
                "name": world.bot_user["username"],
                "online": bool(standin.gateway.connected_sessions()),
                "status": standin.gateway.status_text(),
            },
            "commands": list(commands.values()),
        }

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        try:
            channel_id = int(request.match_info["channel_id"])
            viewer = int(request.query.get("viewer", "0"))
        except ValueError:
            return web.json_response({"error": "ids are numbers"}, status=400)
        return web.json_response(self.messages(channel_id, viewer))

    def messages(self, channel_id: int, viewer: int) -> list[JSON]:
        """The last messages in a channel that ``viewer`` can see, oldest first, in REST shape."""
        world = self.standin.world
        visible = []
        for mid in sorted(world.messages):
            data = world.messages[mid]
            if data["channel_id"] != p.sid(channel_id):
                continue
            if int(data["flags"]) & p.MESSAGE_FLAG_EPHEMERAL:
                asker = (data.get("interaction_metadata") or {}).get("user", {}).get("id")
                if asker != p.sid(viewer):
                    continue
            visible.append(mid)
        shown = []
        for mid in visible[-MESSAGES_SHOWN:]:
            out = world.message_for_rest(mid)
            if out is not None:
                out.pop("_allowed_mentions", None)
                shown.append(out)
        return shown

    # --- acting as a member -------------------------------------------------------------------

    def _member(self, body: Mapping[str, Any], key: str) -> int:
        uid = _int(body, key)
        members = self.standin.world.guilds[self.standin.guild_id].members
        if uid not in members or uid == self.standin.bot_user_id:
            raise PageError(f"{key}: no such member")
        return uid

    def _channel(self, body: Mapping[str, Any]) -> int:
        channel_id = _int(body, "channel_id")
        if channel_id not in self.standin.world.guilds[self.standin.guild_id].channels:
            raise PageError("channel_id: no such channel")
        return channel_id

    def _message(self, body: Mapping[str, Any], key: str) -> JSON:
        data = self.standin.message(_int(body, key))
        if data is None:
            raise PageError(f"{key}: no such message (deleted?)")
        return data

    def _bot_online(self) -> None:
        if not self.standin.gateway.connected_sessions():
            raise PageError("the bot is not connected (yet): try again in a moment")

    async def post_message(self, body: JSON) -> JSON:
        """A member posts a message (a reply with ``reply_to``); mentions are the ``<@id>`` in the text."""
        author = self._member(body, "author_id")
        channel_id = self._channel(body)
        content = str(body.get("content") or "").strip()
        if not 1 <= len(content) <= 2000:
            raise PageError("a message has 1 to 2000 characters")
        reply_to = self._message(body, "reply_to") if body.get("reply_to") else None
        users = self.standin.world.users
        mentions = list(dict.fromkeys(int(m) for m in _MENTION_RE.findall(content) if int(m) in users))
        answer: JSON = {}
        try:
            message = await self.standin.dispatch_message(
                channel_id, content, author=author, mentions=mentions, referenced_message=reply_to
            )
            answer["id"] = message["id"]
        except RuntimeError:  # stored, but no bot is connected to hear it
            answer["warning"] = "posted, but the bot is not connected to see it"
        self.changed()
        return answer

    async def run_command(self, body: JSON) -> JSON:
        """A member runs a slash command; options are typed and checked against what the bot registered."""
        user = self._member(body, "user_id")
        channel_id = self._channel(body)
        name = " ".join(str(body.get("name") or "").lstrip("/").split())
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise PageError("options must be an object")
        root, *path = name.split(" ") if name else [""]
        command = self.standin.world.find_command(root, p.COMMAND_CHAT_INPUT, self.standin.guild_id)
        if command is None:
            raise PageError(f"/{name} is not a command the bot registered")
        schema = command.get("options") or []
        for part in path:
            sub = next((o for o in schema if o["name"] == part), None)
            if sub is None or sub["type"] not in (p.OPTION_SUB_COMMAND, p.OPTION_SUB_COMMAND_GROUP):
                raise PageError(f"/{name} is not a command the bot registered")
            schema = sub.get("options") or []
        if any(o["type"] in (p.OPTION_SUB_COMMAND, p.OPTION_SUB_COMMAND_GROUP) for o in schema):
            raise PageError(f"/{name} needs a subcommand")
        typed = {}
        for spec in schema:
            value = options.get(spec["name"])
            if value is None or value == "":
                if spec.get("required"):
                    raise PageError(f"/{name}: {spec['name']} is required")
                continue
            typed[spec["name"]] = _typed_option(spec, value)
        if unknown := set(options) - {o["name"] for o in schema}:
            raise PageError(f"/{name} has no option {', '.join(sorted(unknown))}")
        self._bot_online()
        interaction = await self.standin.dispatch_slash_command(name, typed, user=user, channel_id=channel_id)
        return {"interaction_id": interaction["id"]}

    async def run_menu(self, body: JSON) -> JSON:
        """A member runs a message context menu command (e.g. "Analyze emotions") on a message."""
        user = self._member(body, "user_id")
        message = self._message(body, "message_id")
        name = str(body.get("name") or "")
        if self.standin.world.find_command(name, p.COMMAND_MESSAGE, self.standin.guild_id) is None:
            raise PageError(f"{name!r} is not a message menu command the bot registered")
        self._bot_online()
        interaction = await self.standin.dispatch_context_menu(name, message, user=user)
        return {"interaction_id": interaction["id"]}

    async def use_component(self, body: JSON) -> JSON:
        """A member clicks a button, or picks ``values`` in a select, on one of the bot's messages."""
        user = self._member(body, "user_id")
        message = self._message(body, "message_id")
        custom_id = str(body.get("custom_id") or "")
        values = body.get("values")
        if values is not None and not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
            raise PageError("values must be a list of strings")
        self._bot_online()
        interaction = await self.standin.dispatch_component(custom_id, message, values=values, user=user)
        return {"interaction_id": interaction["id"]}


def _typed_option(spec: Mapping[str, Any], value: Any) -> Any:
    """An option value from the page, as the type the bot registered (Discord's client does this checking)."""
    kind, name = spec["type"], spec["name"]
    try:
        if kind == p.OPTION_BOOLEAN:
            if isinstance(value, str):
                if value.lower() not in ("true", "false"):
                    raise ValueError
                return value.lower() == "true"
            return bool(value)
        if kind == p.OPTION_INTEGER:
            value = int(value)
        elif kind == p.OPTION_NUMBER:
            value = float(value)
        elif kind in (p.OPTION_CHANNEL, p.OPTION_USER, p.OPTION_ROLE, p.OPTION_MENTIONABLE):
            return int(value)
        else:
            value = str(value)
    except (TypeError, ValueError):
        raise PageError(f"{name} must be a {_KIND_NAMES.get(kind, 'value')}") from None
    choices = spec.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        raise PageError(f"{name} must be one of {', '.join(str(c['name']) for c in choices)}")
    return value


_KIND_NAMES = {
    p.OPTION_BOOLEAN: "true or false",
    p.OPTION_INTEGER: "whole number",
    p.OPTION_NUMBER: "number",
    p.OPTION_CHANNEL: "channel",
    p.OPTION_USER: "member",
    p.OPTION_ROLE: "role",
    p.OPTION_MENTIONABLE: "member or role",
}
