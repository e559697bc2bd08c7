"""What the stand-in records (REST requests, gateway frames), how much of it it keeps, and how faults are described.

Everything the stand-in records or accumulates is bounded, by the constants below: recorded requests, gateway frames
and a session's events in a :class:`RecordLog`, the world's messages, files, reactions and interactions in a
:class:`RecentDict`. The oldest goes when a new one comes, so a sandbox that runs for days holds no more than one that
runs for minutes. The bounds are far above what a test makes (tests index the records: see :class:`RecordLog`).
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload
from urllib.parse import unquote

from .payloads import JSON

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

#: REST requests recorded, with their bodies and files (``DiscordStandIn.requests``); and apart, those no route
#: matched (``unknown_requests``), so that a long run still shows any it made.
REQUESTS_KEPT = 2_000
UNKNOWN_REQUESTS_KEPT = 100
#: Gateway payloads recorded, sent and received (``Gateway.frames``), and connection URLs (``Gateway.connect_urls``).
FRAMES_KEPT = 5_000
CONNECT_URLS_KEPT = 100
#: Events a gateway session keeps for RESUME to replay; a client further behind is told to identify afresh.
SESSION_EVENTS_KEPT = 1_000
#: Messages the world keeps, all channels together; an older one is gone, as if deleted (the page shows 100).
MESSAGES_KEPT = 5_000
#: Attachment files served; an older one answers 404, like an expired link.
FILES_KEPT = 200
#: Reactions kept, one per message and emoji.
REACTIONS_KEPT = 5_000
#: Interactions kept; an older one is unknown to REST, as Discord's are after 15 minutes.
INTERACTIONS_KEPT = 1_000
#: Requests the guard refused (sandbox/guard.py).
REFUSALS_KEPT = 100
#: Message nonces remembered for ``enforce_nonce`` (each for ``rest.NONCE_WINDOW_S`` at most).
NONCES_KEPT = 1_000


class RecordLog(deque[T]):
    """The last ``maxlen`` records, oldest first: a deque that also takes slices, as the list it replaces did.

    Positions count from the oldest record kept, so a ``since = len(log)`` taken earlier still points at the first
    record after it as long as none was dropped meanwhile: while fewer than ``maxlen`` records came since.
    """

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> list[T]: ...

    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            return list(self)[index]
        return super().__getitem__(index)


class RecentDict(OrderedDict[K, V]):
    """A dict of the last ``maxlen`` keys added: adding one more drops the oldest (a new value keeps a key's place)."""

    def __init__(self, maxlen: int, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        super().__init__()
        self.maxlen = maxlen
        self.update(items)

    def __setitem__(self, key: K, value: V) -> None:
        if key not in self and len(self) >= self.maxlen:
            self.popitem(last=False)
        super().__setitem__(key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.maxlen, list(self.items()))


#: A user reference accepted by the dispatch helpers: an id, a user payload, or ``None`` (the default user).
UserRef = int | Mapping[str, Any] | None
#: A message reference accepted by the dispatch helpers: an id or a message payload.
MessageRef = int | Mapping[str, Any]
#: Attachment given to a dispatch helper: a raw attachment dict, or ``(filename, bytes[, content_type])``.
AttachmentRef = Mapping[str, Any] | tuple[str, bytes] | tuple[str, bytes, str]


@dataclass(frozen=True)
class RecordedFile:
    """One file part of a multipart request."""

    field: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    """One REST request the client made, and how the stand-in answered it.

    ``path`` is relative to the API base (``/channels/1/messages``), URL-decoded; ``route``
    is the matched template (``/channels/{channel_id}/messages``) or ``None`` for unknown
    routes. ``json`` is the JSON body, or the parsed ``payload_json`` part of a multipart body.
    """

    method: str
    path: str
    route: str | None
    params: dict[str, str]
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    files: list[RecordedFile]
    status: int = 0
    response: Any = None
    authorized: bool = False
    at: float = field(default_factory=time.monotonic)

    @property
    def filenames(self) -> list[str]:
        """Names of the uploaded files, in order."""
        return [f.filename for f in self.files]

    def __repr__(self) -> str:
        return f"<RecordedRequest {self.method} {self.path} -> {self.status}>"


@dataclass
class GatewayFrame:
    """One gateway payload, in either direction (``"recv"`` = from the client)."""

    direction: str
    shard_id: int | None
    payload: JSON
    at: float = field(default_factory=time.monotonic)

    @property
    def op(self) -> int | None:
        """The payload's opcode."""
        return self.payload.get("op")

    @property
    def event(self) -> str | None:
        """The dispatch event name, for op 0."""
        return self.payload.get("t")


@dataclass
class FaultRule:
    """A scripted failure for matching REST requests (see ``DiscordStandIn.fail_next``)."""

    method: str
    pattern: str
    status: int
    body: Any
    headers: dict[str, str]
    remaining: int
    retry_after: float = 0.0
    is_global: bool = False
    scope: str = "user"
    #: Handle the request first (a message is created, say), then answer with the fault: a 5xx that did post.
    after_handling: bool = False
    hits: int = 0
    regex: re.Pattern[str] | None = None

    def matches(self, method: str, path: str, route: str | None) -> bool:
        """Whether a request is targeted by this rule."""
        if self.remaining <= 0:
            return False
        if self.method not in ("*", method):
            return False
        if route is not None and self.pattern == route:
            return True
        if self.regex is None:
            try:
                self.regex = re.compile(self.pattern)
            except re.error:
                self.regex = re.compile(re.escape(self.pattern))
        return self.regex.search(path) is not None


Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class RouteEntry:
    """A REST route: ``method`` + template, its handler and whether it needs ``Authorization``."""

    method: str
    template: str
    handler: Handler
    needs_auth: bool = True

    @property
    def segments(self) -> list[str]:
        """The template split on ``/``."""
        return self.template.strip("/").split("/")


class RouteTable:
    """Matches raw request paths against Discord route templates; literal segments win."""

    def __init__(self) -> None:
        self._routes: list[RouteEntry] = []

    def add(self, method: str, template: str, handler: Handler, *, needs_auth: bool = True) -> None:
        """Register a route."""
        self._routes.append(RouteEntry(method, template, handler, needs_auth))

    def match(self, method: str, raw_path: str) -> tuple[RouteEntry, dict[str, str]] | None:
        """The best route for a raw (still percent-encoded) path, with decoded parameters."""
        parts = raw_path.strip("/").split("/")
        best: tuple[int, RouteEntry, dict[str, str]] | None = None
        for entry in self._routes:
            if entry.method != method:
                continue
            segments = entry.segments
            if len(segments) != len(parts):
                continue
            params: dict[str, str] = {}
            literal = 0
            for seg, part in zip(segments, parts, strict=True):
                if seg.startswith("{") and seg.endswith("}"):
                    params[seg[1:-1]] = unquote(part)
                elif seg == unquote(part):
                    literal += 1
                else:
                    break
            else:
                if best is None or literal > best[0]:
                    best = (literal, entry, params)
        return None if best is None else (best[1], best[2])

    def templates(self) -> list[str]:
        """All registered ``METHOD template`` strings."""
        return [f"{r.method} {r.template}" for r in self._routes]


def strip_auth(headers: Mapping[str, str]) -> dict[str, str]:
    """Request headers without credentials."""
    return {k: v for k, v in headers.items() if k.lower() != "authorization"}
