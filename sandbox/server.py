"""``DiscordStandIn``: a local Discord (gateway + REST) that the real, unmodified discord.py client runs against."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import math
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, Self
from urllib.parse import unquote

from aiohttp import web

from . import payloads as p
from .gateway import Gateway, GatewaySession
from .interactions import InteractionDispatch
from .page import SandboxPage
from .payloads import JSON
from .records import (
    AttachmentRef,
    FaultRule,
    GatewayFrame,
    MessageRef,
    RecordedFile,
    RecordedRequest,
    RouteEntry,
    UserRef,
    strip_auth,
)
from .rest import ApiError, RestApi
from .world import InteractionRecord, World

_log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
DEFAULT_TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAw.StandIn.discord-standin-test-token"


class DiscordStandIn(InteractionDispatch):
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
    The same server serves the sandbox page (:class:`sandbox.page.SandboxPage`) at ``/``.
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
        self.requests: list[RecordedRequest] = []
        self.faults: list[FaultRule] = []
        self.errors: list[str] = []
        #: Called with every REST request once it is answered (the sandbox page pushes updates from here).
        self.request_listeners: list[Callable[[RecordedRequest], None]] = []
        self.page = SandboxPage(self)
        self._request_waiters: list[tuple[Callable[[RecordedRequest], bool], asyncio.Future[RecordedRequest]]] = []
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._resumes_at_drop = 0

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> Self:
        """Bind ``port`` (0: an ephemeral one) on ``host`` and start serving."""
        if self._runner is not None:
            return self
        app = web.Application(client_max_size=100 * 1024 * 1024)
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

    # --- recorded requests --------------------------------------------------------------

    @property
    def unknown_requests(self) -> list[RecordedRequest]:
        """Requests no route matched (the stand-in does not implement them, or the client is wrong)."""
        return [r for r in self.requests if r.route is None]

    def requests_to(self, method: str, path_substring: str = "") -> list[RecordedRequest]:
        """Recorded requests with that method whose decoded path contains ``path_substring``."""
        return [r for r in self.requests if r.method == method.upper() and path_substring in r.path]

    async def wait_for_request(
        self,
        predicate: Callable[[RecordedRequest], bool] | None = None,
        *,
        method: str | None = None,
        path: str | None = None,
        route: str | None = None,
        status: int | None = None,
        since: int = 0,
        timeout: float = 5.0,
    ) -> RecordedRequest:
        """The first request (from index ``since`` of :attr:`requests`) matching every given filter.

        Already-recorded requests count; otherwise waits up to ``timeout`` seconds. ``path`` is a
        substring of the decoded path, ``route`` an exact route template.
        """

        def matches(r: RecordedRequest) -> bool:
            return (
                (method is None or r.method == method.upper())
                and (path is None or path in r.path)
                and (route is None or r.route == route)
                and (status is None or r.status == status)
                and (predicate is None or predicate(r))
            )

        for r in self.requests[since:]:
            if matches(r):
                return r
        fut: asyncio.Future[RecordedRequest] = asyncio.get_running_loop().create_future()
        self._request_waiters.append((matches, fut))
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            seen = ", ".join(f"{r.method} {r.path}->{r.status}" for r in self.requests[-10:])
            raise TimeoutError(f"no matching request within {timeout}s; last requests: [{seen}]") from None

    # --- fault injection ----------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        status: int = 429,
        retry_after: float = 0.3,
        count: int = 1,
        global_: bool = False,
        *,
        scope: Literal["user", "global", "shared"] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> FaultRule:
        """Make the next ``count`` requests matching ``method`` and ``path_pattern`` fail.

        ``path_pattern`` is either a route template (``/channels/{channel_id}/messages``) or a
        regular expression searched in the decoded API path; ``method`` may be ``"*"``. A 429
        carries Discord's rate-limit body and headers (``retry_after`` seconds); other statuses get
        Discord's error body for that status unless ``body`` is given (403 ->
        ``{"code": 50013, "message": "Missing Permissions"}``). Returns the rule; its ``hits``
        counts how often it fired.
        """
        if body is None:
            if status == 429:
                body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": global_}
            else:
                body = p.default_error_body(status)
        rule = FaultRule(
            method=method.upper(),
            pattern=path_pattern,
            status=status,
            body=body,
            headers=dict(headers or {}),
            remaining=count,
            retry_after=retry_after,
            is_global=global_,
            scope=scope or ("global" if global_ else "user"),
        )
        self.faults.append(rule)
        return rule

    # --- gateway control ----------------------------------------------------------------

    @property
    def identify_count(self) -> int:
        """IDENTIFYs accepted so far."""
        return self.gateway.identify_count

    @property
    def resume_count(self) -> int:
        """RESUMEs accepted so far."""
        return self.gateway.resume_count

    @property
    def heartbeat_count(self) -> int:
        """Heartbeats (op 1) received so far."""
        return self.gateway.heartbeat_count

    @property
    def gateway_frames(self) -> list[GatewayFrame]:
        """Every gateway payload sent and received, in order."""
        return self.gateway.frames

    @property
    def sessions(self) -> list[GatewaySession]:
        """Gateway sessions that have not ended."""
        return self.gateway.live_sessions()

    async def drop_gateway(self, code: int | None = None, *, shard_id: int | None = None) -> int:
        """Drop open gateway connections: abruptly (no close frame) or with close ``code``.

        With a resumable situation (no code, 1000, 4000, ...) discord.py reconnects to
        ``resume_gateway_url`` and RESUMEs; wait for that with :meth:`wait_until_resumed`.
        """
        self._resumes_at_drop = self.gateway.resume_count
        return await self.gateway.drop(code, shard_id=shard_id)

    async def invalidate_session(self, *, resumable: bool = False, shard_id: int | None = None) -> None:
        """Send op 9 INVALID_SESSION; with ``resumable=False`` the client re-IDENTIFYs."""
        if not resumable:
            for session in self.gateway.live_sessions():
                if shard_id is None or session.shard_id == shard_id:
                    session.ended = True
        await self.gateway.send_op(p.OP_INVALID_SESSION, resumable, shard_id=shard_id)

    async def wait_until_identified(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until at least ``count`` IDENTIFYs were answered with READY."""
        await self.gateway.wait_until(lambda: self.gateway.identify_count >= count, timeout, f"{count} IDENTIFY(s)")

    async def wait_until_resumed(self, count: int | None = None, timeout: float = 10.0) -> None:
        """Wait until ``count`` RESUMEs happened (default: one more than at the last drop/reconnect)."""
        target = count if count is not None else self._resumes_at_drop + 1
        await self.gateway.wait_until(lambda: self.gateway.resume_count >= target, timeout, f"{target} RESUME(s)")

    async def dispatch(self, event: str, data: JSON, *, guild_id: int | None = None) -> int:
        """Dispatch any raw event to the sessions owning ``guild_id`` (``RuntimeError`` if none)."""
        return await self.gateway.dispatch(event, data, guild_id=guild_id)

    # --- world lookups and changes ------------------------------------------------------

    async def add_guild(
        self, name: str, *, shard: tuple[int, int] | None = None, channel_name: str = "general"
    ) -> tuple[int, int]:
        """Add a guild with a text channel, the bot and :attr:`user_id` as members; returns (guild id, channel id).

        ``shard=(shard_id, shard_count)`` picks an id on that shard (``(guild_id >> 22) % shard_count``). The
        session of that shard, if one is connected, gets GUILD_CREATE, as when the bot is invited.
        """
        guild_id = p.snowflake()
        if shard is not None:
            shard_id, count = shard
            if not 0 <= shard_id < count:
                raise ValueError(f"shard id {shard_id} is not below the shard count {count}")
            while (guild_id >> 22) % count != shard_id:  # the shard is in the millisecond bits: at most count ms
                guild_id = p.snowflake()
        rec = self.world.add_guild(name, guild_id=guild_id)
        channel_id = int(self.world.add_text_channel(guild_id, channel_name)["id"])
        self.world.add_member(guild_id, self.user_id)
        await self.gateway.dispatch("GUILD_CREATE", rec.payload(), guild_id=guild_id, require_session=False)
        return guild_id, channel_id

    def message(self, message_id: int | str) -> JSON | None:
        """A stored message (REST shape), or ``None``."""
        return self.world.message_for_rest(int(message_id))

    def bot_messages(self, channel_id: int | None = None) -> list[JSON]:
        """Messages authored by the bot (including interaction responses), oldest first."""
        bot = p.sid(self.bot_user_id)
        ids = sorted(
            mid
            for mid, m in self.world.messages.items()
            if m["author"]["id"] == bot and (channel_id is None or m["channel_id"] == p.sid(channel_id))
        )
        return [out for mid in ids if (out := self.world.message_for_rest(mid)) is not None]

    def reactions(self, message_id: int | str) -> dict[str, list[int]]:
        """``{emoji: [user ids]}`` for a message."""
        mid = int(message_id)
        return {emoji: list(users) for (m, emoji), users in self.world.reactors.items() if m == mid and users}

    def interaction(self, ref: Mapping[str, Any] | str | int) -> InteractionRecord:
        """The record of an interaction (by payload, token or id): what the bot answered, message ids."""
        key = str(ref["token"]) if isinstance(ref, Mapping) else str(ref)
        for rec in self.world.interactions.values():
            if key in (rec.token, p.sid(rec.id)):
                return rec
        raise KeyError(key)

    async def add_user(
        self, username: str, *, bot: bool = False, guild_id: int | None = None, roles: Iterable[int] = ()
    ) -> int:
        """Create a user and make them a member of ``guild_id`` (default guild); dispatches GUILD_MEMBER_ADD."""
        uid = self.world.add_user(username, bot=bot)
        gid = guild_id or self.guild_id
        member = copy.deepcopy(self.world.add_member(gid, uid, roles=roles))
        member["guild_id"] = p.sid(gid)
        await self.gateway.dispatch("GUILD_MEMBER_ADD", member, guild_id=gid, require_session=False)
        return uid

    async def add_text_channel(
        self, name: str, *, guild_id: int | None = None, overwrites: Iterable[JSON] = (), topic: str | None = None
    ) -> int:
        """Create a text channel (``overwrites``: see :func:`payloads.overwrite`); dispatches CHANNEL_CREATE."""
        gid = guild_id or self.guild_id
        data = self.world.add_text_channel(gid, name, overwrites=overwrites, topic=topic)
        await self.gateway.dispatch("CHANNEL_CREATE", copy.deepcopy(data), guild_id=gid, require_session=False)
        return int(data["id"])

    async def add_role(self, name: str, *, permissions: int = 0, guild_id: int | None = None) -> int:
        """Create a role; dispatches GUILD_ROLE_CREATE."""
        gid = guild_id or self.guild_id
        data = self.world.add_role(gid, name, permissions=permissions)
        event = {"guild_id": p.sid(gid), "role": copy.deepcopy(data)}
        await self.gateway.dispatch("GUILD_ROLE_CREATE", event, guild_id=gid, require_session=False)
        return int(data["id"])

    async def set_role_permissions(self, role_id: int, permissions: int, *, guild_id: int | None = None) -> None:
        """Change a role's permissions (``role_id == guild_id`` is ``@everyone``); dispatches GUILD_ROLE_UPDATE."""
        gid = guild_id or self.guild_id
        data = self.world.guilds[gid].roles[role_id]
        data["permissions"] = str(permissions)
        event = {"guild_id": p.sid(gid), "role": copy.deepcopy(data)}
        await self.gateway.dispatch("GUILD_ROLE_UPDATE", event, guild_id=gid, require_session=False)

    async def set_permission_overwrite(
        self, channel_id: int, target_id: int, *, allow: int = 0, deny: int = 0, member: bool = False
    ) -> None:
        """Set a channel overwrite for a role (or a member); dispatches CHANNEL_UPDATE."""
        rec = self.world.guild_of_channel(channel_id)
        if rec is None:
            raise KeyError(channel_id)
        channel = rec.channels[channel_id]
        kind = p.OVERWRITE_MEMBER if member else p.OVERWRITE_ROLE
        rest = [o for o in channel["permission_overwrites"] if o["id"] != p.sid(target_id)]
        channel["permission_overwrites"] = [*rest, p.overwrite(target_id, type=kind, allow=allow, deny=deny)]
        await self.gateway.dispatch("CHANNEL_UPDATE", copy.deepcopy(channel), guild_id=rec.id, require_session=False)

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
