"""What tests (and benchmarks) use to watch and steer the stand-in; the demo (`moodring sandbox`) needs none of it.

Mixed into :class:`sandbox.server.DiscordStandIn`, which provides the world, the gateway, the recorded requests and
the fault rules its REST plumbing applies: here are the ways to read the recorded requests and wait for one, to
inject faults, to drop and count gateway sessions, and to change the world with the gateway events Discord sends.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from . import payloads as p
from .payloads import JSON
from .records import FaultRule, GatewayFrame, RecordedRequest, RecordLog
from .world import InteractionRecord

if TYPE_CHECKING:
    from .gateway import Gateway, GatewaySession
    from .world import World


class StandInControl:
    """Recorded requests, fault injection, gateway control, and world lookups and changes, for tests."""

    world: World
    gateway: Gateway
    requests: RecordLog[RecordedRequest]
    unknown: RecordLog[RecordedRequest]
    faults: list[FaultRule]
    guild_id: int
    user_id: int
    bot_user_id: int
    _request_waiters: list[tuple[Callable[[RecordedRequest], bool], asyncio.Future[RecordedRequest]]]
    _resumes_at_drop: int = 0  # RESUMEs counted at the last drop: `wait_until_resumed` waits for one more

    # --- recorded requests --------------------------------------------------------------

    @property
    def unknown_requests(self) -> list[RecordedRequest]:
        """The last requests no route matched (the stand-in does not implement them, or the client is wrong)."""
        return list(self.unknown)

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
        after_handling: bool = False,
    ) -> FaultRule:
        """Make the next ``count`` requests matching ``method`` and ``path_pattern`` fail.

        ``path_pattern`` is either a route template (``/channels/{channel_id}/messages``) or a
        regular expression searched in the decoded API path; ``method`` may be ``"*"``. A 429
        carries Discord's rate-limit body and headers (``retry_after`` seconds); other statuses get
        Discord's error body for that status unless ``body`` is given (403 ->
        ``{"code": 50013, "message": "Missing Permissions"}``). With ``after_handling`` the request is
        handled first and its effect kept (a message is created, say), and only the answer is the fault's: a
        5xx whose request did happen. Returns the rule; its ``hits`` counts how often it fired.
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
            after_handling=after_handling,
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
    def gateway_frames(self) -> RecordLog[GatewayFrame]:
        """The last gateway payloads sent and received, in order."""
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
