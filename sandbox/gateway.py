"""The gateway (websocket) half of the stand-in: sessions, sequence numbers, compression, RESUME."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import secrets
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from . import payloads as p
from .payloads import JSON
from .records import CONNECT_URLS_KEPT, FRAMES_KEPT, SESSION_EVENTS_KEPT, GatewayFrame, RecordLog
from .world import World

try:  # discord.py asks for zstd-stream whenever it can import a zstd decompressor
    import zstandard as _zstd
except ImportError:  # pragma: no cover - depends on the environment
    _zstd = None

_log = logging.getLogger(__name__)

# Close codes Discord uses (https://discord.com/developers/docs/topics/opcodes-and-status-codes).
#: Seconds between a heartbeat and its ACK: a network round trip to Discord (tens of milliseconds). An ACK sent at
#: once over loopback can be handled before discord.py's keep-alive thread has recorded the heartbeat's send time
#: (it does so only after waking from the send), and discord.py then measures the latency from the previous beat, a
#: whole interval, and warns "Can't keep up, shard ID 0 websocket is 41.3s behind" (tests/test_heartbeat_latency.py).
HEARTBEAT_ACK_DELAY_S = 0.05
CLOSE_UNKNOWN_ERROR = 4000
CLOSE_UNKNOWN_OPCODE = 4001
CLOSE_DECODE_ERROR = 4002
CLOSE_NOT_AUTHENTICATED = 4003
CLOSE_AUTHENTICATION_FAILED = 4004
CLOSE_ALREADY_AUTHENTICATED = 4005
CLOSE_INVALID_SEQ = 4007
CLOSE_INVALID_SHARD = 4010
CLOSE_INVALID_API_VERSION = 4012
CLOSE_INVALID_INTENTS = 4013
CLOSE_DISALLOWED_INTENTS = 4014

# Which intent a guild / DM flavour of an event needs.
_EVENT_INTENTS: dict[str, tuple[int, int]] = {
    "MESSAGE_CREATE": (p.INTENT_GUILD_MESSAGES, p.INTENT_DIRECT_MESSAGES),
    "MESSAGE_UPDATE": (p.INTENT_GUILD_MESSAGES, p.INTENT_DIRECT_MESSAGES),
    "MESSAGE_DELETE": (p.INTENT_GUILD_MESSAGES, p.INTENT_DIRECT_MESSAGES),
    "MESSAGE_REACTION_ADD": (p.INTENT_GUILD_MESSAGE_REACTIONS, p.INTENT_DIRECT_MESSAGE_REACTIONS),
    "MESSAGE_REACTION_REMOVE": (p.INTENT_GUILD_MESSAGE_REACTIONS, p.INTENT_DIRECT_MESSAGE_REACTIONS),
    "TYPING_START": (p.INTENT_GUILD_MESSAGE_TYPING, p.INTENT_DIRECT_MESSAGE_TYPING),
    "GUILD_MEMBER_ADD": (p.INTENT_GUILD_MEMBERS, p.INTENT_GUILD_MEMBERS),
    "GUILD_MEMBER_UPDATE": (p.INTENT_GUILD_MEMBERS, p.INTENT_GUILD_MEMBERS),
    "GUILD_MEMBER_REMOVE": (p.INTENT_GUILD_MEMBERS, p.INTENT_GUILD_MEMBERS),
    "PRESENCE_UPDATE": (p.INTENT_GUILD_PRESENCES, p.INTENT_GUILD_PRESENCES),
}
_CONTENT_FIELDS = {"content": "", "embeds": [], "attachments": [], "components": []}
#: The largest payload the gateway reads from a client (a bigger one closes the connection with 1009). What a bot
#: sends is small: IDENTIFY, heartbeats, presence, member requests of at most 100 ids.
MAX_CLIENT_PAYLOAD = 16 * 1024


class _Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...


class ZlibStreamCompressor:
    """``compress=zlib-stream``: one zlib context per connection, every payload ends in a sync flush."""

    def __init__(self) -> None:
        self._ctx = zlib.compressobj()

    def compress(self, data: bytes) -> bytes:
        """Compress one payload; the output ends with ``00 00 ff ff``."""
        return self._ctx.compress(data) + self._ctx.flush(zlib.Z_SYNC_FLUSH)


class ZstdStreamCompressor:
    """``compress=zstd-stream``: one zstd stream per connection, flushed block by block."""

    def __init__(self) -> None:
        if _zstd is None:  # pragma: no cover - guarded by SUPPORTED_COMPRESSION
            raise RuntimeError("zstandard is not installed")
        self._ctx = _zstd.ZstdCompressor().compressobj()

    def compress(self, data: bytes) -> bytes:
        """Compress one payload into a block the client's streaming decompressor can finish."""
        assert _zstd is not None
        return self._ctx.compress(data) + self._ctx.flush(_zstd.COMPRESSOBJ_FLUSH_BLOCK)


SUPPORTED_COMPRESSION: dict[str, Callable[[], _Compressor]] = {"zlib-stream": ZlibStreamCompressor}
if _zstd is not None:
    SUPPORTED_COMPRESSION["zstd-stream"] = ZstdStreamCompressor


@dataclass
class GatewaySession:
    """A gateway session: survives disconnects until RESUMEd, superseded, or closed with 1000/1001.

    ``events`` are the last dispatches, for RESUME to replay (``SESSION_EVENTS_KEPT``).
    """

    session_id: str
    shard: tuple[int, int]
    intents: int
    identify: JSON
    seq: int = 0
    events: RecordLog[JSON] = field(default_factory=lambda: RecordLog(maxlen=SESSION_EVENTS_KEPT))
    connection: GatewayConnection | None = None
    ended: bool = False

    @property
    def shard_id(self) -> int:
        """This session's shard id."""
        return self.shard[0]

    def owns_guild(self, guild_id: int | None) -> bool:
        """Whether events of that guild (``None`` = DMs, shard 0) are routed to this session."""
        shard_id, count = self.shard
        if guild_id is None:
            return shard_id == 0
        return (guild_id >> 22) % count == shard_id


class GatewayConnection:
    """One websocket connection (a session may see several over its lifetime)."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, compression: str | None) -> None:
        self.request = request
        self.ws = ws
        self.compression = compression
        self._compressor = SUPPORTED_COMPRESSION[compression]() if compression else None
        self._lock = asyncio.Lock()
        self.session: GatewaySession | None = None
        self.heartbeats = 0
        self.server_closed = False

    @property
    def open(self) -> bool:
        """Whether frames can still be written."""
        return not self.ws.closed and self.request.transport is not None

    async def send(self, payload: JSON) -> bool:
        """Encode, compress and send one payload; ``False`` if the connection is gone."""
        text = json.dumps(payload, separators=(",", ":"))
        async with self._lock:
            if not self.open:
                return False
            try:
                if self._compressor is not None:
                    await self.ws.send_bytes(self._compressor.compress(text.encode()))
                else:
                    await self.ws.send_str(text)
            except (ConnectionError, RuntimeError) as exc:
                _log.debug("gateway send failed: %r", exc)
                return False
        return True

    async def close(self, code: int, message: str = "") -> None:
        """Close with a close frame."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=code, message=message.encode())

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()


class Gateway:
    """Speaks gateway v10 (JSON) to discord.py."""

    def __init__(
        self,
        world: World,
        *,
        heartbeat_interval: int,
        resume_url: Callable[[], str],
        shard_count: int = 1,
        max_concurrency: int = 1,
        identify_window_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if shard_count < 1 or max_concurrency < 1 or identify_window_s < 0:
            raise ValueError("shard_count and max_concurrency must be at least 1, identify_window_s at least 0")
        self.world = world
        self.heartbeat_interval = heartbeat_interval
        self._resume_url = resume_url
        self.shard_count = shard_count  # what GET /gateway/bot recommends (AutoShardedBot)
        #: Discord's identify rate limit: one IDENTIFY per bucket (shard_id % max_concurrency) per window.
        self.max_concurrency = max_concurrency
        self.identify_window_s = identify_window_s
        self.clock = clock
        self._identified_at: dict[int, float] = {}  # bucket -> when it last accepted an IDENTIFY
        self.identify_refused = 0  # IDENTIFYs answered with INVALID_SESSION for coming too soon
        self._acks: set[asyncio.Future[None]] = set()  # heartbeat ACKs on their way (HEARTBEAT_ACK_DELAY_S)
        self.sessions: dict[str, GatewaySession] = {}  # live ones, and those ended since the last IDENTIFY
        self.connections: list[GatewayConnection] = []
        self.frames: RecordLog[GatewayFrame] = RecordLog(maxlen=FRAMES_KEPT)
        self.connect_urls: RecordLog[str] = RecordLog(maxlen=CONNECT_URLS_KEPT)
        self.identify_count = 0
        self.resume_count = 0
        self.heartbeat_count = 0
        #: The bot's last PRESENCE_UPDATE (op 3) `d`, whose activity is the status Discord shows under its name.
        self.presence: JSON | None = None
        #: Called after each PRESENCE_UPDATE (the sandbox page redraws its sidebar from here).
        self.presence_listeners: list[Callable[[], None]] = []
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    def status_text(self) -> str:
        """The bot's status as Discord shows it under its name: its first activity's custom `state`, else its `name`
        ("" without one)."""
        activities = (self.presence or {}).get("activities") or []
        first = activities[0] if activities and isinstance(activities[0], dict) else {}
        return str(first.get("state") or first.get("name") or "")

    # --- waiting --------------------------------------------------------------------------

    def poke(self) -> None:
        """Re-check every pending ``wait_until`` condition."""
        for cond, fut in list(self._waiters):
            if not fut.done() and cond():
                fut.set_result(None)
        self._waiters = [(c, f) for c, f in self._waiters if not f.done()]

    async def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait until ``condition()`` is true (checked whenever gateway state changes)."""
        if condition():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((condition, fut))
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}") from None

    # --- sessions -----------------------------------------------------------------------

    def live_sessions(self) -> list[GatewaySession]:
        """Sessions that still receive (or buffer) events."""
        return [s for s in self.sessions.values() if not s.ended]

    def connected_sessions(self) -> list[GatewaySession]:
        """Live sessions that currently have an open connection."""
        return [s for s in self.live_sessions() if s.connection is not None and s.connection.open]

    def _filter_for(self, session: GatewaySession, event: str, data: JSON) -> JSON | None:
        """What ``session`` receives of an event given its intents (``None``: nothing)."""
        in_guild = data.get("guild_id") is not None
        needed = _EVENT_INTENTS.get(event)
        if needed is not None and not session.intents & (needed[0] if in_guild else needed[1]):
            return None
        if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE") and not session.intents & p.INTENT_MESSAGE_CONTENT:
            bot_id = p.sid(self.world.bot_user_id)
            author_id = (data.get("author") or {}).get("id")
            mentioned = any(m.get("id") == bot_id for m in data.get("mentions", []))
            if in_guild and author_id != bot_id and not mentioned:
                data = {**data, **{k: v for k, v in _CONTENT_FIELDS.items() if k in data}}
                data.pop("poll", None)
        return data

    async def dispatch(
        self, event: str, data: JSON, *, guild_id: int | None = None, require_session: bool = True
    ) -> int:
        """Send (or buffer, while disconnected) a DISPATCH to every session owning ``guild_id``.

        Returns the number of sessions the event was queued for.
        """
        targets = [s for s in self.live_sessions() if s.owns_guild(guild_id)]
        if not targets and require_session:
            raise RuntimeError(f"cannot dispatch {event}: no bot has an open gateway session")
        delivered = 0
        for session in targets:
            filtered = self._filter_for(session, event, copy.deepcopy(data))
            if filtered is None:
                continue
            await self._send_dispatch(session, event, filtered)
            delivered += 1
        return delivered

    async def _send_dispatch(self, session: GatewaySession, event: str, data: JSON) -> None:
        session.seq += 1
        frame = {"op": p.OP_DISPATCH, "t": event, "s": session.seq, "d": data}
        session.events.append(frame)
        conn = session.connection
        if conn is not None:
            await self._send(conn, frame)

    async def _acknowledge_later(self, conn: GatewayConnection) -> None:
        await asyncio.sleep(HEARTBEAT_ACK_DELAY_S)
        await self._send(conn, {"op": p.OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None})

    async def _send(self, conn: GatewayConnection, frame: JSON) -> bool:
        shard_id = conn.session.shard_id if conn.session else None
        self.frames.append(GatewayFrame("send", shard_id, frame))
        return await conn.send(frame)

    # --- the websocket handler ----------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler for gateway (and resume-gateway) connections."""
        self.connect_urls.append(str(request.rel_url))
        compression = request.query.get("compress")
        ws = web.WebSocketResponse(max_msg_size=MAX_CLIENT_PAYLOAD, autoping=True)
        await ws.prepare(request)
        if compression is not None and compression not in SUPPORTED_COMPRESSION:
            await ws.close(code=CLOSE_DECODE_ERROR, message=b"Unsupported compression")
            return ws
        conn = GatewayConnection(request, ws, compression)
        self.connections.append(conn)
        try:
            if request.query.get("v", "10") != "10":
                await conn.close(CLOSE_INVALID_API_VERSION, "Invalid API version")
                return ws
            if request.query.get("encoding", "json") != "json":
                await conn.close(CLOSE_DECODE_ERROR, "Only JSON encoding is supported by the stand-in")
                return ws
            await self._send(
                conn,
                {
                    "op": p.OP_HELLO,
                    "d": {"heartbeat_interval": self.heartbeat_interval, "_trace": ['["standin-gateway"]']},
                    "s": None,
                    "t": None,
                },
            )
            await self._receive_loop(conn)
        finally:
            self._on_disconnect(conn)
        return ws

    async def _receive_loop(self, conn: GatewayConnection) -> None:
        async for msg in conn.ws:
            if msg.type is not WSMsgType.TEXT:
                if msg.type is WSMsgType.BINARY:
                    await conn.close(CLOSE_DECODE_ERROR, "Decode error")
                break
            try:
                payload = json.loads(msg.data)
                op = payload["op"]
            except (ValueError, KeyError, TypeError):
                await conn.close(CLOSE_DECODE_ERROR, "Decode error")
                break
            shard_id = conn.session.shard_id if conn.session else None
            self.frames.append(GatewayFrame("recv", shard_id, payload))
            await self._on_op(conn, op, payload.get("d"))
            self.poke()

    async def _on_op(self, conn: GatewayConnection, op: int, data: Any) -> None:
        if op == p.OP_HEARTBEAT:
            conn.heartbeats += 1
            self.heartbeat_count += 1
            # After a round trip (HEARTBEAT_ACK_DELAY_S), without holding up the connection's other frames.
            ack = asyncio.ensure_future(self._acknowledge_later(conn))
            self._acks.add(ack)
            ack.add_done_callback(self._acks.discard)
        elif op == p.OP_IDENTIFY:
            await self._on_identify(conn, data)
        elif op == p.OP_RESUME:
            await self._on_resume(conn, data)
        elif conn.session is None:
            await conn.close(CLOSE_NOT_AUTHENTICATED, "Not authenticated.")
        elif op == p.OP_REQUEST_GUILD_MEMBERS:
            await self._on_request_members(conn.session, data)
        elif op == p.OP_PRESENCE_UPDATE:  # nothing to answer
            self.presence = data if isinstance(data, dict) else None
            for listener in self.presence_listeners:
                listener()
        elif op == p.OP_VOICE_STATE_UPDATE:
            pass  # recorded in ``frames``; nothing to answer
        else:
            await conn.close(CLOSE_UNKNOWN_OPCODE, "Unknown opcode.")

    async def _on_identify(self, conn: GatewayConnection, data: JSON) -> None:
        world = self.world
        if conn.session is not None:
            await conn.close(CLOSE_ALREADY_AUTHENTICATED, "Already authenticated.")
            return
        if not isinstance(data, dict) or data.get("token") != world.token:
            await conn.close(CLOSE_AUTHENTICATION_FAILED, "Authentication failed.")
            return
        intents = data.get("intents")
        if not isinstance(intents, int):
            await conn.close(CLOSE_INVALID_INTENTS, "Invalid intent(s).")
            return
        if intents & p.PRIVILEGED_INTENTS & ~world.privileged_intents:
            await conn.close(CLOSE_DISALLOWED_INTENTS, "Disallowed intent(s).")
            return
        shard = data.get("shard") or [0, 1]
        if not (
            isinstance(shard, list)
            and len(shard) == 2
            and all(type(n) is int for n in shard)
            and 0 <= shard[0] < shard[1]
        ):
            await conn.close(CLOSE_INVALID_SHARD, "Invalid shard.")
            return
        shard_t = (shard[0], shard[1])
        bucket = shard_t[0] % self.max_concurrency  # Discord's rate_limit_key
        now = self.clock()
        last = self._identified_at.get(bucket)
        if last is not None and now - last < self.identify_window_s:
            # Too soon for this bucket: like Discord, INVALID_SESSION (not resumable); the client identifies again.
            self.identify_refused += 1
            await self._send(conn, {"op": p.OP_INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        self._identified_at[bucket] = now
        for old in self.live_sessions():
            if old.shard == shard_t:
                old.ended = True  # a fresh IDENTIFY supersedes the shard's old session
        # An ended session can never be resumed: forget it, and the events it kept.
        self.sessions = {sid: s for sid, s in self.sessions.items() if not s.ended}
        session = GatewaySession(
            session_id=secrets.token_hex(16), shard=shard_t, intents=intents, identify=copy.deepcopy(data)
        )
        session.connection = conn
        conn.session = session
        self.sessions[session.session_id] = session
        self.identify_count += 1
        guilds = [rec for gid, rec in world.guilds.items() if session.owns_guild(gid)]
        ready = {
            "v": 10,
            "user": copy.deepcopy(world.bot_user),
            "user_settings": {},
            "guilds": [{"id": p.sid(rec.id), "unavailable": True} for rec in guilds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self._resume_url(),
            "shard": list(shard_t),
            "application": {"id": p.sid(world.application_id), "flags": world.application_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["standin"],
            "_trace": ['["standin-gateway"]'],
        }
        await self._send_dispatch(session, "READY", ready)
        for rec in guilds:
            await self._send_dispatch(session, "GUILD_CREATE", rec.payload())

    async def _on_resume(self, conn: GatewayConnection, data: JSON) -> None:
        if not isinstance(data, dict) or data.get("token") != self.world.token:
            await conn.close(CLOSE_AUTHENTICATION_FAILED, "Authentication failed.")
            return
        session = self.sessions.get(str(data.get("session_id")))
        seq = data.get("seq")
        if (
            session is None
            or session.ended
            or not isinstance(seq, int)
            or seq > session.seq
            or (session.events and session.events[0]["s"] > seq + 1)  # missed more than the session kept
        ):
            await self._send(conn, {"op": p.OP_INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        previous = session.connection
        if previous is not None and previous is not conn:
            previous.session = None
            previous.abort()
        session.connection = conn
        conn.session = session
        for frame in session.events:
            if frame["s"] > seq:
                await self._send(conn, frame)
        await self._send_dispatch(session, "RESUMED", {"_trace": ['["standin-gateway"]']})
        self.resume_count += 1

    async def _on_request_members(self, session: GatewaySession, data: JSON) -> None:
        guild_id = int(data["guild_id"])
        rec = self.world.guilds.get(guild_id)
        members = list(rec.members.values()) if rec else []
        if data.get("user_ids"):
            wanted = {p.sid(u) for u in data["user_ids"]}
            members = [m for m in members if m["user"]["id"] in wanted]
        elif data.get("query"):
            prefix = str(data["query"]).lower()
            members = [m for m in members if m["user"]["username"].lower().startswith(prefix)]
        limit = data.get("limit") or 0
        if limit:
            members = members[:limit]
        chunk: JSON = {
            "guild_id": p.sid(guild_id),
            "members": copy.deepcopy(members),
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        if data.get("presences"):
            chunk["presences"] = []
        await self._send_dispatch(session, "GUILD_MEMBERS_CHUNK", chunk)

    def _on_disconnect(self, conn: GatewayConnection) -> None:
        with contextlib.suppress(ValueError):
            self.connections.remove(conn)
        session = conn.session
        if session is not None and session.connection is conn:
            session.connection = None
            # Discord invalidates a session that the client closes normally.
            if conn.ws.close_code in (1000, 1001) and not conn.server_closed:
                session.ended = True
        self.poke()

    # --- server-side actions ------------------------------------------------------------

    async def drop(self, code: int | None = None, *, shard_id: int | None = None) -> int:
        """Close open connections (abruptly when ``code`` is ``None``); returns how many."""
        dropped = 0
        for conn in list(self.connections):
            if shard_id is not None and (conn.session is None or conn.session.shard_id != shard_id):
                continue
            conn.server_closed = True
            if code is None:
                conn.abort()
            else:
                await conn.close(code, "Stand-in closed the connection")
            dropped += 1
        return dropped

    async def send_op(self, op: int, data: Any, *, shard_id: int | None = None) -> None:
        """Send a raw non-dispatch opcode (e.g. RECONNECT, INVALID_SESSION) to open connections."""
        for conn in list(self.connections):
            if shard_id is not None and (conn.session is None or conn.session.shard_id != shard_id):
                continue
            await self._send(conn, {"op": op, "d": data, "s": None, "t": None})

    async def close_all(self) -> None:
        """Close every connection (server shutdown), and drop the ACKs still on their way."""
        for ack in list(self._acks):
            ack.cancel()
        for conn in list(self.connections):
            conn.server_closed = True
            await conn.close(1001, "Stand-in shutting down")
