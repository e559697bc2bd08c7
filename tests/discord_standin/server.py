"""``DiscordStandIn``: a local Discord (gateway + REST) for driving the real discord.py client."""

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
from .payloads import JSON
from .records import FaultRule, GatewayFrame, RecordedFile, RecordedRequest, RouteEntry, strip_auth
from .rest import ApiError, RestApi
from .world import InteractionRecord, World

_log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
DEFAULT_TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAw.StandIn.discord-standin-test-token"

#: A user reference accepted by the dispatch helpers: an id, a user payload, or ``None`` (the default user).
UserRef = int | Mapping[str, Any] | None
#: A message reference accepted by the dispatch helpers: an id or a message payload.
MessageRef = int | Mapping[str, Any]
#: Attachment given to a dispatch helper: a raw attachment dict, or ``(filename, bytes[, content_type])``.
AttachmentRef = Mapping[str, Any] | tuple[str, bytes] | tuple[str, bytes, str]

_CALLBACK_ROUTE = "/interactions/{interaction_id}/{interaction_token}/callback"


def _infer_option_type(value: Any) -> int:
    if isinstance(value, bool):
        return p.OPTION_BOOLEAN
    if isinstance(value, int):
        return p.OPTION_INTEGER
    if isinstance(value, float):
        return p.OPTION_NUMBER
    if isinstance(value, tuple) and len(value) >= 2 and isinstance(value[1], bytes | bytearray):
        return p.OPTION_ATTACHMENT
    return p.OPTION_STRING


def _find_component(components: Iterable[Mapping[str, Any]], custom_id: str) -> Mapping[str, Any] | None:
    for comp in components:
        if comp.get("custom_id") == custom_id:
            return comp
        children: list[Mapping[str, Any]] = list(comp.get("components") or [])
        for key in ("component", "accessory"):
            if isinstance(comp.get(key), Mapping):
                children.append(comp[key])
        found = _find_component(children, custom_id)
        if found is not None:
            return found
    return None


class DiscordStandIn:
    """An aiohttp server on 127.0.0.1 that plays Discord's gateway and REST API for discord.py.

    The world starts with one guild (:attr:`guild_id`) holding one text channel (:attr:`channel_id`),
    the bot (:attr:`bot_user_id`, with a managed role), the application owner (:attr:`owner_id`)
    and a human member (:attr:`user_id`). Use it as ``async with DiscordStandIn() as standin:`` or
    via :meth:`start` / :meth:`stop`, and point discord.py at it with
    :func:`discord_standin.fixtures.point_discord_at`.

    Parameters
    ----------
    token:
        The bot token REST (``Authorization: Bot <token>``) and IDENTIFY must present.
    heartbeat_interval:
        Milliseconds announced in HELLO.
    shard_count:
        What ``GET /gateway/bot`` recommends (for ``AutoShardedBot``).
    privileged_intents:
        Privileged intents the "developer portal" enables; IDENTIFY asking for others is closed
        with 4014 like Discord does.
    enforce_permissions:
        Answer 403 (50001/50013) when the bot lacks channel permissions, like Discord.
    echo_bot_messages:
        Dispatch MESSAGE_CREATE/UPDATE/DELETE and reaction events for the bot's own actions, like
        Discord does (``on_message`` sees the bot's own messages).
    interaction_response_timeout:
        If set (Discord: 3.0), initial interaction responses later than this many seconds get
        ``404 Unknown interaction``. ``None`` (default) disables the check to avoid flaky tests.
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        bot_name: str = "MoodRing",
        guild_name: str = "Stand-in Guild",
        channel_name: str = "general",
        heartbeat_interval: int = 41_250,
        shard_count: int = 1,
        privileged_intents: int = p.PRIVILEGED_INTENTS,
        enforce_permissions: bool = True,
        echo_bot_messages: bool = True,
        interaction_response_timeout: float | None = None,
        bot_user_id: int | None = None,
        application_id: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.world = World(
            token=token,
            bot_name=bot_name,
            bot_user_id=bot_user_id,
            application_id=application_id,
            privileged_intents=privileged_intents,
        )
        guild = self.world.add_guild(guild_name)
        self.guild_id: int = guild.id
        self.channel_id: int = int(self.world.add_text_channel(guild.id, channel_name)["id"])
        self.user_id: int = self.world.add_user("tester", global_name="Test User")
        self.world.add_member(guild.id, self.user_id)
        self._other_bot_id: int | None = None
        self.gateway = Gateway(
            self.world, heartbeat_interval=heartbeat_interval, resume_url=lambda: self.resume_gateway_url
        )
        self.gateway.shard_count = shard_count
        self.rest = RestApi(
            self.world,
            self.gateway,
            base_url=lambda: self.base_url,
            gateway_url=lambda: self.gateway_url,
            enforce_permissions=enforce_permissions,
            echo_bot_messages=echo_bot_messages,
            interaction_response_timeout=interaction_response_timeout,
        )
        self.requests: list[RecordedRequest] = []
        self.faults: list[FaultRule] = []
        self.errors: list[str] = []
        self._request_waiters: list[tuple[Callable[[RecordedRequest], bool], asyncio.Future[RecordedRequest]]] = []
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._resumes_at_drop = 0

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> Self:
        """Bind an ephemeral port on ``host`` and start serving."""
        if self._runner is not None:
            return self
        app = web.Application(client_max_size=100 * 1024 * 1024)
        app.router.add_route("GET", "/", self.gateway.handle)
        app.router.add_route("GET", "/resume", self.gateway.handle)
        app.router.add_route("GET", "/attachments/{channel_id}/{attachment_id}/{filename}", self._serve_attachment)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._handle_rest)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
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
        return f"ws://{self.host}:{self.port}/"

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

    async def send_reconnect(self, *, shard_id: int | None = None) -> None:
        """Send op 7 RECONNECT (the client closes and RESUMEs)."""
        self._resumes_at_drop = self.gateway.resume_count
        await self.gateway.send_op(p.OP_RECONNECT, None, shard_id=shard_id)

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

    async def wait_until_connected(self, timeout: float = 10.0) -> None:
        """Wait until some session has an open gateway connection."""
        await self.gateway.wait_until(lambda: bool(self.gateway.connected_sessions()), timeout, "a gateway session")

    async def dispatch(self, event: str, data: JSON, *, guild_id: int | None = None) -> int:
        """Dispatch any raw event to the sessions owning ``guild_id`` (``RuntimeError`` if none)."""
        return await self.gateway.dispatch(event, data, guild_id=guild_id)

    # --- world lookups and changes ------------------------------------------------------

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

    def dm_channel_id(self, user: UserRef = None) -> int:
        """The id of the DM channel between the bot and a user (created on first use)."""
        return int(self.world.dm_channel_for(self._user_id(user))["id"])

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

    async def set_bot_permissions(self, permissions: int, *, guild_id: int | None = None) -> None:
        """Set the permissions of the bot's managed role (``@everyone``'s still apply on top)."""
        gid = guild_id or self.guild_id
        await self.set_role_permissions(self.world.bot_role_id(gid), permissions, guild_id=gid)

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

    async def dispatch_reaction(self, message: MessageRef, emoji: str, *, user: UserRef = None) -> None:
        """A user adds a reaction (``emoji``: unicode or ``name:id``): MESSAGE_REACTION_ADD."""
        data = self._stored(message)
        uid = self._user_id(user)
        self.world.add_reaction(int(data["id"]), emoji, uid)
        guild_id = int(data["guild_id"]) if data.get("guild_id") else None
        event: JSON = {
            "user_id": p.sid(uid),
            "channel_id": data["channel_id"],
            "message_id": data["id"],
            "message_author_id": data["author"]["id"],
            "emoji": p.reaction_emoji(emoji),
            "burst": False,
            "burst_colors": [],
            "type": 0,
        }
        if guild_id is not None:
            event["guild_id"] = p.sid(guild_id)
            event["member"] = self._member_of(guild_id, uid)
        await self.gateway.dispatch("MESSAGE_REACTION_ADD", event, guild_id=guild_id)

    # --- dispatch helpers: interactions -------------------------------------------------

    async def _dispatch_interaction(
        self,
        itype: int,
        data: JSON,
        *,
        user: UserRef,
        channel_id: int,
        guild_id: int | None,
        member_permissions: int | None,
        message: JSON | None = None,
        locale: str = "en-US",
    ) -> JSON:
        world = self.world
        uid = self._user_id(user)
        channel = copy.deepcopy(world.channel(channel_id))
        assert channel is not None
        perms = member_permissions if member_permissions is not None else world.permissions(channel_id, uid)
        member: JSON | None = None
        if guild_id is not None:
            member = self._member_of(guild_id, uid)
            member["permissions"] = str(perms)
        channel["permissions"] = str(perms)
        app_permissions = world.bot_permissions(channel_id) if guild_id is not None else p.DEFAULT_BOT_PERMISSIONS
        token = world.new_interaction_token()
        iid = p.snowflake()
        payload = p.interaction(
            iid,
            type=itype,
            token=token,
            application_id=world.application_id,
            data=data,
            channel=channel,
            guild_id=guild_id,
            invoker=world.user(uid),
            invoker_member=member,
            app_permissions=app_permissions,
            message_data=message,
            locale=locale,
        )
        world.interactions[token] = InteractionRecord(
            id=iid,
            token=token,
            type=itype,
            payload=copy.deepcopy(payload),
            channel_id=channel_id,
            guild_id=guild_id,
            invoker_id=uid,
            message_id=int(message["id"]) if message else None,
        )
        await self.gateway.dispatch("INTERACTION_CREATE", payload, guild_id=guild_id)
        return payload

    def _command_data(
        self, name: str, ctype: int, guild_id: int | None, command_guild_id: int | Literal["auto"] | None
    ) -> tuple[JSON, JSON | None]:
        if command_guild_id == "auto":
            synced = self.world.find_command(name, ctype, guild_id)
        else:
            synced = self.world.find_command(name, ctype, command_guild_id)
            if synced is not None and synced.get("guild_id") != (
                p.sid(command_guild_id) if command_guild_id is not None else None
            ):
                synced = None
        data: JSON = {"id": synced["id"] if synced else p.sid(p.snowflake()), "name": name, "type": ctype}
        if synced is not None and synced.get("guild_id"):
            data["guild_id"] = synced["guild_id"]
        elif synced is None and isinstance(command_guild_id, int):
            data["guild_id"] = p.sid(command_guild_id)
        return data, synced

    def _option(self, name: str, otype: int, value: Any, ctx: JSON) -> JSON:
        resolved: JSON = ctx["resolved"]
        guild_id: int | None = ctx["guild_id"]
        if otype == p.OPTION_STRING:
            out: Any = str(value)
        elif otype == p.OPTION_INTEGER:
            out = int(value)
        elif otype == p.OPTION_NUMBER:
            out = float(value)
        elif otype == p.OPTION_BOOLEAN:
            out = bool(value)
        elif otype == p.OPTION_ATTACHMENT:
            att = self._attachment_payload(ctx["channel_id"], value)
            resolved.setdefault("attachments", {})[att["id"]] = att
            out = att["id"]
        else:
            target = int(value["id"]) if isinstance(value, Mapping) else int(value)
            rec = self.world.guilds.get(guild_id) if guild_id is not None else None
            is_role = rec is not None and target in rec.roles
            if otype == p.OPTION_CHANNEL:
                channel = copy.deepcopy(self.world.channel(target))
                if channel is None:
                    raise ValueError(f"unknown channel {target}")
                channel["permissions"] = str(self.world.permissions(target, ctx["user_id"]))
                resolved.setdefault("channels", {})[p.sid(target)] = channel
            elif otype == p.OPTION_ROLE or (otype == p.OPTION_MENTIONABLE and is_role):
                assert rec is not None
                resolved.setdefault("roles", {})[p.sid(target)] = copy.deepcopy(rec.roles[target])
            else:
                uid = self._user_id(value if isinstance(value, Mapping) else target)
                resolved.setdefault("users", {})[p.sid(uid)] = self.world.user(uid)
                member = self.world.member(guild_id, uid) if guild_id is not None else None
                if member is not None:
                    partial = p.member_without_user(member)
                    partial["permissions"] = str(self.world.permissions(ctx["channel_id"], uid))
                    resolved.setdefault("members", {})[p.sid(uid)] = partial
            out = p.sid(target)
        return {"name": name, "type": otype, "value": out}

    def _options(
        self,
        path: list[str],
        options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
        schema: list[JSON] | None,
        ctx: JSON,
    ) -> list[JSON]:
        if path:
            head, rest = path[0], path[1:]
            spec = next((o for o in schema or [] if o["name"] == head), None)
            otype = spec["type"] if spec else (p.OPTION_SUB_COMMAND_GROUP if rest else p.OPTION_SUB_COMMAND)
            inner = self._options(rest, options, spec.get("options") if spec else None, ctx)
            return [{"type": otype, "name": head, "options": inner}]
        if options is None:
            return []
        if not isinstance(options, Mapping):
            return [copy.deepcopy(dict(o)) for o in options]
        out = []
        for name, value in options.items():
            spec = next((o for o in schema or [] if o["name"] == name), None)
            otype = spec["type"] if spec else _infer_option_type(value)
            option = self._option(name, otype, value, ctx)
            if name == ctx.get("focused"):
                option["focused"] = True
            out.append(option)
        return out

    async def _dispatch_chat_input(
        self,
        itype: int,
        name: str,
        options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
        *,
        user: UserRef,
        channel_id: int | None,
        guild_id: int | None,
        member_permissions: int | None,
        command_guild_id: int | Literal["auto"] | None,
        focused: str | None = None,
        locale: str = "en-US",
    ) -> JSON:
        channel_id, guild_id = self._resolve_channel(channel_id, guild_id)
        root, *path = name.split()
        data, synced = self._command_data(root, p.COMMAND_CHAT_INPUT, guild_id, command_guild_id)
        ctx: JSON = {
            "resolved": {},
            "guild_id": guild_id,
            "channel_id": channel_id,
            "user_id": self._user_id(user),
            "focused": focused,
        }
        data["options"] = self._options(path, options, synced.get("options") if synced else None, ctx)
        if ctx["resolved"]:
            data["resolved"] = ctx["resolved"]
        return await self._dispatch_interaction(
            itype,
            data,
            user=user,
            channel_id=channel_id,
            guild_id=guild_id,
            member_permissions=member_permissions,
            locale=locale,
        )

    async def dispatch_slash_command(
        self,
        name: str,
        options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        *,
        user: UserRef = None,
        channel_id: int | None = None,
        guild_id: int | None = None,
        member_permissions: int | None = None,
        command_guild_id: int | Literal["auto"] | None = "auto",
        locale: str = "en-US",
    ) -> JSON:
        """A user runs a slash command: INTERACTION_CREATE type 2. Returns the interaction payload.

        ``name`` may contain a subcommand path: ``"moodring channel enable"`` becomes a
        subcommand group + subcommand (types 2/1; the synced schema decides when known).
        ``options`` is either ``{name: value}`` (types come from the synced command, else from the
        Python type; users/channels/roles/attachments get ``resolved`` entries) or a list of raw
        option dicts. The command id and ``data.guild_id`` come from the last sync
        (``command_guild_id="auto"``); pass ``None`` to force a global command or a guild id.
        ``member_permissions`` overrides the invoker's computed channel permissions.
        """
        return await self._dispatch_chat_input(
            p.INTERACTION_APPLICATION_COMMAND,
            name,
            options,
            user=user,
            channel_id=channel_id,
            guild_id=guild_id,
            member_permissions=member_permissions,
            command_guild_id=command_guild_id,
            locale=locale,
        )

    async def dispatch_autocomplete(
        self,
        name: str,
        options: Mapping[str, Any],
        focused: str,
        *,
        user: UserRef = None,
        channel_id: int | None = None,
        command_guild_id: int | Literal["auto"] | None = "auto",
    ) -> JSON:
        """A user is typing option ``focused``: INTERACTION_CREATE type 4 (answered with callback type 8)."""
        return await self._dispatch_chat_input(
            p.INTERACTION_AUTOCOMPLETE,
            name,
            options,
            user=user,
            channel_id=channel_id,
            guild_id=None,
            member_permissions=None,
            command_guild_id=command_guild_id,
            focused=focused,
        )

    async def dispatch_context_menu(
        self,
        name: str,
        target_message: MessageRef | None = None,
        *,
        target_user: UserRef | None = None,
        user: UserRef = None,
        member_permissions: int | None = None,
        command_guild_id: int | Literal["auto"] | None = "auto",
    ) -> JSON:
        """A user runs a message (or user) context menu command: INTERACTION_CREATE type 2, data.type 3 (2).

        The target message (id or payload) goes in ``data.resolved.messages`` with ``target_id``;
        the interaction happens in that message's channel.
        """
        if target_message is None and target_user is None:
            raise ValueError("give target_message or target_user")
        if target_message is not None:
            target = self._stored(target_message)
            target.pop("member", None)
            channel_id, guild_id = self._resolve_channel(int(target["channel_id"]), None)
            ctype = p.COMMAND_MESSAGE
            resolved: JSON = {"messages": {target["id"]: target}}
            target_id = target["id"]
        else:
            channel_id, guild_id = self._resolve_channel(None, None)
            ctype = p.COMMAND_USER
            ctx: JSON = {"resolved": {}, "guild_id": guild_id, "channel_id": channel_id, "user_id": self.user_id}
            target_id = self._option("target", p.OPTION_USER, target_user, ctx)["value"]
            resolved = ctx["resolved"]
        data, _ = self._command_data(name, ctype, guild_id, command_guild_id)
        data.update(target_id=target_id, resolved=resolved)
        return await self._dispatch_interaction(
            p.INTERACTION_APPLICATION_COMMAND,
            data,
            user=user,
            channel_id=channel_id,
            guild_id=guild_id,
            member_permissions=member_permissions,
        )

    async def dispatch_component(
        self,
        custom_id: str,
        message: MessageRef,
        *,
        values: Sequence[str] | None = None,
        component_type: int | None = None,
        user: UserRef = None,
    ) -> JSON:
        """A user clicks a button (or picks select ``values``) on ``message``: INTERACTION_CREATE type 3.

        The component type is looked up in the message's components unless given.
        """
        msg = self._stored(message)
        msg.pop("member", None)
        channel_id, guild_id = self._resolve_channel(int(msg["channel_id"]), None)
        if component_type is None:
            found = _find_component(msg.get("components") or [], custom_id)
            component_type = int(found["type"]) if found else p.COMPONENT_BUTTON
        data: JSON = {"custom_id": custom_id, "component_type": component_type}
        if values is not None or component_type != p.COMPONENT_BUTTON:
            data["values"] = list(values or [])
        return await self._dispatch_interaction(
            p.INTERACTION_MESSAGE_COMPONENT,
            data,
            user=user,
            channel_id=channel_id,
            guild_id=guild_id,
            member_permissions=None,
            message=msg,
        )

    async def dispatch_modal_submit(
        self,
        custom_id: str,
        values: Mapping[str, str],
        *,
        user: UserRef = None,
        channel_id: int | None = None,
    ) -> JSON:
        """A user submits a modal the bot opened: INTERACTION_CREATE type 5.

        ``values`` maps text-input custom ids to what the user typed; the layout mirrors the
        modal the bot sent (callback type 9) when it was recorded.
        """
        channel_id, guild_id = self._resolve_channel(channel_id, None)
        layout: list[JSON] = []
        for r in reversed(self.requests):
            body = r.json if isinstance(r.json, dict) else {}
            if r.route == _CALLBACK_ROUTE and body.get("type") == 9 and body["data"].get("custom_id") == custom_id:
                layout = body["data"].get("components") or []
                break
        components: list[JSON] = []
        for top in layout:
            if top.get("type") == 18 and isinstance(top.get("component"), Mapping):
                inner = top["component"]
                cid = inner.get("custom_id")
                if cid in values:
                    components.append(
                        {"type": 18, "component": {"type": inner["type"], "custom_id": cid, "value": values[cid]}}
                    )
            else:
                row = [
                    {"type": c["type"], "custom_id": c["custom_id"], "value": values[c["custom_id"]]}
                    for c in top.get("components", [])
                    if c.get("custom_id") in values
                ]
                components.append({"type": 1, "components": row})
        if not layout:
            components = [
                {"type": 1, "components": [{"type": p.COMPONENT_TEXT_INPUT, "custom_id": k, "value": v}]}
                for k, v in values.items()
            ]
        data = {"custom_id": custom_id, "components": components}
        return await self._dispatch_interaction(
            p.INTERACTION_MODAL_SUBMIT,
            data,
            user=user,
            channel_id=channel_id,
            guild_id=guild_id,
            member_permissions=None,
        )

    async def wait_for_interaction_response(
        self, interaction: Mapping[str, Any], *, timeout: float = 5.0
    ) -> RecordedRequest:
        """The callback request (``POST /interactions/{id}/{token}/callback``) answering ``interaction``."""
        iid = str(interaction["id"])
        return await self.wait_for_request(
            lambda r: r.route == _CALLBACK_ROUTE and r.params.get("interaction_id") == iid, timeout=timeout
        )
