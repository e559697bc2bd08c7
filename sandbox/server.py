"""``DiscordStandIn``: a local Discord (gateway + REST) that the real, unmodified discord.py client runs against.

This module is the server: its lifecycle, addresses, REST plumbing and posting messages as members (what the
sandbox page needs too). What tests and benchmarks use to watch and steer it is in control.py; interactions in
interactions.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import logging
import math
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self
from urllib.parse import unquote

from aiohttp import web

from . import payloads as p
from .control import StandInControl
from .gateway import Gateway
from .guard import SameOriginGuard
from .interactions import InteractionDispatch
from .page import SandboxPage
from .payloads import JSON
from .records import (
    REQUESTS_KEPT,
    UNKNOWN_REQUESTS_KEPT,
    AttachmentRef,
    FaultRule,
    MessageRef,
    RecordedFile,
    RecordedRequest,
    RecordLog,
    RouteEntry,
    UserRef,
    strip_auth,
)
from .rest import ApiError, RestApi
from .world import World

_log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
#: The token a stand-in accepts unless it is given one: for tests, which run it for themselves. Anyone can read it here,
#: so `moodring sandbox` makes a token of its own each run.
DEFAULT_TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAw.StandIn.discord-standin-test-token"


class DiscordStandIn(InteractionDispatch, StandInControl):
    """An aiohttp server that plays Discord's gateway and REST API for discord.py.

    The world starts with one guild (:attr:`guild_id`) holding one text channel (:attr:`channel_id`),
    the bot (:attr:`bot_user_id`, with a managed role), the application owner (:attr:`owner_id`, also
    the guild's owner) and a human member (:attr:`user_id`). Use it as ``async with DiscordStandIn() as
    standin:`` or via :meth:`start` / :meth:`stop`. The bot reaches it through :attr:`api_base` (discord.py's
    ``Route.BASE``) and :attr:`gateway_url` (``DiscordWebSocket.DEFAULT_GATEWAY``).

    ``token`` is what REST (``Authorization: Bot <token>``) and IDENTIFY must present; ``heartbeat_interval``
    the milliseconds announced in HELLO; ``port`` 0 binds an ephemeral port. Sharding as on Discord: GET
    /gateway/bot recommends ``shard_count`` shards, each guild's events go only to the session of the shard that
    owns it, and IDENTIFY is limited to one per ``shard_id % max_concurrency`` bucket per ``identify_window_s``
    (sooner: INVALID_SESSION, and the client identifies again). Permissions are enforced like
    Discord (403 50001/50013), and the bot's own actions are echoed as gateway events, like Discord.
    The same server serves the sandbox page (:class:`sandbox.page.SandboxPage`) at ``/``. Tests watch and steer it
    through :class:`sandbox.control.StandInControl`'s methods (recorded requests, faults, the gateway, the world).
    Every request passes :attr:`guard` first (:class:`sandbox.guard.SameOriginGuard`): another web page, or a name
    rebound to this address, gets 403 and changes nothing.
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        bot_name: str = "MoodRing",
        guild_name: str = "Stand-in Guild",
        channel_name: str = "general",
        owner_name: tuple[str, str] = ("standin-owner", "Stand-in Owner"),
        user_name: tuple[str, str] = ("tester", "Test User"),
        heartbeat_interval: int = 41_250,
        host: str = "127.0.0.1",
        port: int = 0,
        shard_count: int = 1,
        max_concurrency: int = 1,
        identify_window_s: float = 5.0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.world = World(token=token, bot_name=bot_name, owner_name=owner_name)
        guild = self.world.add_guild(guild_name)
        self.guild_id: int = guild.id
        self.channel_id: int = int(self.world.add_text_channel(guild.id, channel_name)["id"])
        self.user_id: int = self.world.add_user(user_name[0], global_name=user_name[1])
        self.world.add_member(guild.id, self.user_id)
        self._other_bot_id: int | None = None
        self.gateway = Gateway(
            self.world,
            heartbeat_interval=heartbeat_interval,
            resume_url=lambda: self.resume_gateway_url,
            shard_count=shard_count,
            max_concurrency=max_concurrency,
            identify_window_s=identify_window_s,
        )
        self.rest = RestApi(
            self.world, self.gateway, base_url=lambda: self.base_url, gateway_url=lambda: self.gateway_url
        )
        self.requests: RecordLog[RecordedRequest] = RecordLog(maxlen=REQUESTS_KEPT)
        self.unknown: RecordLog[RecordedRequest] = RecordLog(maxlen=UNKNOWN_REQUESTS_KEPT)
        self.faults: list[FaultRule] = []
        self.errors: list[str] = []
        #: Called with every REST request once it is answered (the sandbox page pushes updates from here).
        self.request_listeners: list[Callable[[RecordedRequest], None]] = []
        self.page = SandboxPage(self)
        self.guard = SameOriginGuard(host, port=lambda: self.port)
        self._request_waiters: list[tuple[Callable[[RecordedRequest], bool], asyncio.Future[RecordedRequest]]] = []
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> Self:
        """Bind ``port`` (0: an ephemeral one) on ``host`` and start serving."""
        if self._runner is not None:
            return self
        app = web.Application(client_max_size=100 * 1024 * 1024, middlewares=[self.guard.middleware])
        app.router.add_route("GET", "/gateway", self.gateway.handle)
        app.router.add_route("GET", "/resume", self.gateway.handle)
        app.router.add_route("GET", "/attachments/{channel_id}/{attachment_id}/{filename}", self._serve_attachment)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._handle_rest)
        app.add_routes(self.page.routes())
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        _log.debug("Discord stand-in listening on %s", self.base_url)
        return self

    async def stop(self) -> None:
        """Close gateway connections and stop the server. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await self.page.close()
        await self.gateway.close_all()
        await runner.cleanup()
        for _, fut in self._request_waiters:
            if not fut.done():
                fut.cancel()
        self._request_waiters.clear()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- addresses ----------------------------------------------------------------------

    @property
    def token(self) -> str:
        """The bot token the stand-in accepts."""
        return self.world.token

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._port is None:
            raise RuntimeError("the stand-in is not running; call start() first")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        """What ``discord.http.Route.BASE`` must be: ``http://127.0.0.1:PORT/api/v10``."""
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """The gateway URL (``DiscordWebSocket.DEFAULT_GATEWAY`` and ``GET /gateway/bot``)."""
        return f"ws://{self.host}:{self.port}/gateway"

    @property
    def resume_gateway_url(self) -> str:
        """The ``resume_gateway_url`` sent in READY (a different path, so RESUMEs are visible)."""
        return f"ws://{self.host}:{self.port}/resume"

    @property
    def bot_user_id(self) -> int:
        """The bot's user id."""
        return self.world.bot_user_id

    @property
    def application_id(self) -> int:
        """The application id (equal to the bot user id unless configured)."""
        return self.world.application_id

    @property
    def owner_id(self) -> int:
        """The application owner's user id (also the guild owner)."""
        return self.world.owner_id

    # --- REST plumbing ------------------------------------------------------------------

    async def _parse_body(self, request: web.Request) -> tuple[Any, list[RecordedFile]]:
        files: list[RecordedFile] = []
        if request.content_type.startswith("multipart/"):
            body: Any = None
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not hasattr(part, "filename"):
                    continue  # nested multipart, Discord does not use it
                data = bytes(await part.read())  # type: ignore[union-attr]
                filename = part.filename  # type: ignore[union-attr]
                if filename is None and part.name == "payload_json":
                    body = json.loads(data.decode() or "null")
                elif filename is not None:
                    ctype = part.headers.get("Content-Type")
                    files.append(RecordedFile(part.name or "", filename, ctype, data))
            return body, files
        raw = await request.read() if request.can_read_body else b""
        if not raw:
            return None, files
        try:
            return json.loads(raw), files
        except ValueError:
            return raw.decode(errors="replace"), files

    def _ratelimit_headers(
        self, route: str | None, *, limit: int, remaining: int, reset_after: float
    ) -> dict[str, str]:
        bucket = hashlib.sha1((route or "unknown").encode()).hexdigest()[:16]
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket,
        }

    def _fault_reply(self, rule: FaultRule, route: str | None) -> tuple[int, Any, dict[str, str]]:
        headers: dict[str, str] = {}
        if rule.status == 429:
            headers.update(self._ratelimit_headers(route, limit=1, remaining=0, reset_after=rule.retry_after))
            headers["Retry-After"] = str(max(1, math.ceil(rule.retry_after)))
            headers["X-RateLimit-Scope"] = rule.scope
            if rule.is_global:
                headers["X-RateLimit-Global"] = "true"
        headers.update(rule.headers)
        return rule.status, copy.deepcopy(rule.body), headers

    async def _respond(
        self, request: web.Request, rec: RecordedRequest, entry: RouteEntry | None
    ) -> tuple[int, Any, dict[str, str]]:
        auth = request.headers.get("Authorization")
        rec.authorized = auth == f"Bot {self.token}"
        if entry is not None and ((auth is not None and not rec.authorized) or (entry.needs_auth and auth is None)):
            return 401, {"message": "401: Unauthorized", "code": 0}, {}
        for rule in self.faults:
            if rule.matches(rec.method, rec.path, rec.route):
                rule.remaining -= 1
                rule.hits += 1
                if rule.after_handling and entry is not None:
                    with contextlib.suppress(ApiError):  # done, or refused: the client is told the fault either way
                        await entry.handler(rec)
                return self._fault_reply(rule, rec.route)
        if entry is None:
            return 404, {"message": "404: Not Found", "code": 0}, {}
        headers = self._ratelimit_headers(entry.template, limit=5, remaining=4, reset_after=1.0)
        try:
            status, body = await entry.handler(rec)
        except ApiError as exc:
            return exc.status, exc.body, headers
        except Exception as exc:  # a bug in the stand-in: surface it quickly, not as a retried 500
            self.errors.append(f"{rec.method} {rec.path}: {traceback.format_exc()}")
            _log.exception("stand-in handler failed")
            return 400, {"message": f"Stand-in internal error: {exc!r}", "code": 0}, headers
        return status, body, headers

    async def _handle_rest(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.rel_url.raw_path[len(API_PREFIX) :] or "/"
        match = self.rest.routes.match(request.method, raw_path)
        entry, params = match if match is not None else (None, {})
        body, files = await self._parse_body(request)
        rec = RecordedRequest(
            method=request.method,
            path=unquote(raw_path),
            route=entry.template if entry else None,
            params=params,
            query=dict(request.query),
            headers=strip_auth(request.headers),
            json=body,
            files=files,
        )
        status, response, headers = await self._respond(request, rec, entry)
        rec.status = status
        rec.response = response
        return self._finish(rec, status, response, headers)

    async def _handle_unknown(self, request: web.Request) -> web.StreamResponse:
        body, files = await self._parse_body(request)
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            route=None,
            params={},
            query=dict(request.query),
            headers=strip_auth(request.headers),
            json=body,
            files=files,
        )
        rec.status = 404
        rec.response = {"message": "404: Not Found", "code": 0}
        return self._finish(rec, 404, rec.response, {})

    def _finish(self, rec: RecordedRequest, status: int, body: Any, headers: dict[str, str]) -> web.StreamResponse:
        self.requests.append(rec)
        if rec.route is None:
            self.unknown.append(rec)
        for predicate, fut in list(self._request_waiters):
            if not fut.done() and predicate(rec):
                fut.set_result(rec)
        self._request_waiters = [(pr, f) for pr, f in self._request_waiters if not f.done()]
        for listener in self.request_listeners:
            listener(rec)
        headers = {"Via": "1.1 google", **headers}  # discord.py only trusts a 429 that came "via" a proxy
        if body is None:
            return web.Response(status=status, headers=headers)
        # Exactly "application/json": discord.py compares the header verbatim (no "; charset=...").
        headers["Content-Type"] = "application/json"
        return web.Response(body=json.dumps(body).encode(), status=status, headers=headers)

    async def _serve_attachment(self, request: web.Request) -> web.StreamResponse:
        stored = self.world.files.get(int(request.match_info["attachment_id"]))
        if stored is None:
            return web.Response(status=404, text="404: Not Found")
        return web.Response(body=stored.data, content_type=stored.content_type or "application/octet-stream")

    # --- lookups -----------------------------------------------------------------------

    def message(self, message_id: int | str) -> JSON | None:
        """A stored message (REST shape), or ``None``."""
        return self.world.message_for_rest(int(message_id))

    # --- building blocks for dispatch helpers -------------------------------------------

    def _user_id(self, user: UserRef) -> int:
        if user is None:
            return self.user_id
        if isinstance(user, int):
            if user not in self.world.users:
                raise ValueError(f"unknown user id {user}; create it with add_user()")
            return user
        uid = int(user["id"])
        if uid not in self.world.users:
            self.world.users[uid] = copy.deepcopy(dict(user))
        return uid

    def _member_of(self, guild_id: int, user_id: int) -> JSON:
        member = self.world.member(guild_id, user_id)
        if member is None:
            member = copy.deepcopy(self.world.add_member(guild_id, user_id))
        return member

    def _resolve_channel(self, channel_id: int | None, guild_id: int | None) -> tuple[int, int | None]:
        if channel_id is None:
            if guild_id is None or guild_id == self.guild_id:
                return self.channel_id, self.guild_id
            rec = self.world.guilds[guild_id]
            return next(iter(rec.channels)), guild_id
        if self.world.channel(channel_id) is None:
            raise ValueError(f"unknown channel {channel_id}")
        rec = self.world.guild_of_channel(channel_id)
        actual = rec.id if rec else None
        if guild_id is not None and guild_id != actual:
            raise ValueError(f"channel {channel_id} is not in guild {guild_id}")
        return channel_id, actual

    def _attachment_payload(self, channel_id: int, ref: AttachmentRef) -> JSON:
        if isinstance(ref, Mapping):
            return dict(ref)
        filename, data = ref[0], bytes(ref[1])
        ctype = ref[2] if len(ref) > 2 else None  # type: ignore[misc]
        aid = self.world.store_file(filename, data, ctype)
        url = f"{self.base_url}/attachments/{channel_id}/{aid}/{filename}"
        return p.attachment(aid, filename, size=len(data), url=url, content_type=ctype)

    def _stored(self, ref: MessageRef) -> JSON:
        mid = int(ref if isinstance(ref, int | str) else ref["id"])
        data = self.world.message_for_rest(mid)
        if data is None:
            if isinstance(ref, Mapping):
                return copy.deepcopy(dict(ref))
            raise ValueError(f"unknown message {mid}")
        data.pop("_allowed_mentions", None)
        return data

    # --- dispatch helpers: messages -----------------------------------------------------

    async def dispatch_message(
        self,
        channel_id: int | None = None,
        content: str = "",
        *,
        author: UserRef = None,
        mentions: Sequence[UserRef] = (),
        mention_roles: Sequence[int] = (),
        mention_everyone: bool = False,
        referenced_message: MessageRef | None = None,
        message_reference: Mapping[str, Any] | None = None,
        webhook_id: int | None = None,
        bot: bool = False,
        attachments: Sequence[AttachmentRef] = (),
        sticker_items: Sequence[Mapping[str, Any] | int] = (),
        embeds: Sequence[JSON] = (),
        components: Sequence[JSON] = (),
    ) -> JSON:
        """A user (or bot, or webhook) posts a message: MESSAGE_CREATE, stored for REST.

        ``author`` defaults to :attr:`user_id` (or a generic other bot when ``bot=True``);
        ``referenced_message`` (id or payload) makes it a reply; ``message_reference`` sets a raw
        reference (e.g. a forward). Attachments may be ``(filename, bytes[, content_type])``; their
        URLs are served by the stand-in so ``Attachment.read()`` works. Returns the gateway payload.
        """
        channel_id, guild_id = self._resolve_channel(channel_id, None)
        world = self.world
        member_data: JSON | None = None
        if webhook_id is not None:
            name = author.get("username", "Captain Hook") if isinstance(author, Mapping) else "Captain Hook"
            author_data = p.user(webhook_id, name, bot=True)
            author_data["discriminator"] = "0000"
        else:
            if author is None and bot:
                if self._other_bot_id is None:
                    self._other_bot_id = world.add_user("OtherBot", bot=True)
                author = self._other_bot_id
            uid = self._user_id(author)
            author_data = world.user(uid)
            if bot:
                author_data["bot"] = True
            if guild_id is not None:
                member_data = p.member_without_user(self._member_of(guild_id, uid))
        mention_payloads = []
        for ref in mentions:
            mid = self._user_id(ref)
            data = world.user(mid)
            if guild_id is not None:
                data["member"] = p.member_without_user(self._member_of(guild_id, mid))
            mention_payloads.append(data)
        reference: JSON | None = dict(message_reference) if message_reference is not None else None
        resolved_ref: JSON | None = None
        msg_type = p.MESSAGE_DEFAULT
        if referenced_message is not None:
            resolved_ref = self._stored(referenced_message)
            resolved_ref.pop("member", None)
            reference = p.message_reference(int(resolved_ref["id"]), int(resolved_ref["channel_id"]), guild_id)
            msg_type = p.MESSAGE_REPLY
        stickers = [
            {"id": p.sid(s), "name": "sticker", "format_type": 1} if isinstance(s, int) else dict(s)
            for s in sticker_items
        ]
        data = p.message(
            p.snowflake(),
            channel_id,
            author_data,
            content,
            guild_id=guild_id,
            member_data=member_data,
            mentions=mention_payloads,
            mention_roles=mention_roles,
            mention_everyone=mention_everyone,
            embeds=embeds,
            attachments=[self._attachment_payload(channel_id, a) for a in attachments],
            components=components,
            sticker_items=stickers,
            message_reference=reference,
            referenced_message=resolved_ref,
            include_referenced=msg_type == p.MESSAGE_REPLY,
            webhook_id=webhook_id,
            type=msg_type,
        )
        world.store_message(data)
        await self.gateway.dispatch("MESSAGE_CREATE", data, guild_id=guild_id)
        return copy.deepcopy(data)
