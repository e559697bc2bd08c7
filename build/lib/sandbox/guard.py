"""Only the sandbox's own page may drive it: requests from other web pages, and DNS rebinding, are refused.

Any page a person opens in their browser may send requests to ``127.0.0.1``: a no-cors ``fetch``, a form, a
WebSocket. The browser sends them without asking (a POST whose type is ``text/plain``, a form's types, needs no CORS
preflight), and a site whose name it rebinds to ``127.0.0.1`` may even read the answers. So, before any handler runs:

* ``Host``, when given, must name an address this server is reached at, with its port (:meth:`SameOriginGuard.is_own`);
  a rebound name is not one of them.
* ``Origin``, when given, must be this server's own origin (``http``, one of its addresses, its port; bound to every
  interface, an IP address only as the very address the request came to, its ``Host``). Browsers send it on every
  request that can change something (POST, WebSocket handshakes) and on cross-origin reads.
* Without an ``Origin``, a ``Referer``, when given, must be of this server too; the page itself (``/``, ``static/``)
  is exempt, so that a link to the sandbox from another page can be followed.

Clients that are not pages (discord.py, curl, the tests) send neither header and are let through: this guards
against other sites in the person's browser, not against programs they run. The page API also requires
``Content-Type: application/json`` on its POSTs (sandbox/page.py), which no page can send across origins without a
preflight that this server never answers. A refusal is ``403 {"error": ...}`` and changes nothing; the last
:data:`~sandbox.records.REFUSALS_KEPT` are kept in :attr:`SameOriginGuard.refusals`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import hdrs, web
from yarl import URL

from .records import REFUSALS_KEPT, RecordLog

#: Names a loopback address is also reached at.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: Bind addresses that mean every interface.
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    """Whether a bind address is this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Refusal:
    """A request the guard refused, and why."""

    method: str
    path: str
    reason: str


class SameOriginGuard:
    """Refuses requests from other origins and for other hosts; an aiohttp middleware (:meth:`middleware`).

    ``host`` is the address the server is bound to, ``port`` returns the port it listens on (known once started).
    """

    def __init__(self, host: str, *, port: Callable[[], int]) -> None:
        self._port = port
        self._any_address = host in WILDCARD_HOSTS
        if self._any_address:
            self._names = frozenset({"localhost", socket.gethostname().lower()})
        elif is_loopback(host):
            self._names = LOOPBACK_NAMES | {host.lower()}
        else:
            self._names = frozenset({host.lower()})
        self.refusals: RecordLog[Refusal] = RecordLog(maxlen=REFUSALS_KEPT)

    def is_own(self, name: str, port: int) -> bool:
        """Whether ``name:port`` is an address this server is reached at.

        Bound to one address: that address, and for a loopback one also ``localhost``, ``127.0.0.1`` and ``::1``.
        Bound to every interface: any IP address (no DNS name can be rebound to those) and the names that need no
        DNS (``localhost``, this machine's host name). Always on its own port.
        """
        if port != self._port():
            return False
        name = name.lower()
        return name in self._names or (self._any_address and _is_ip_literal(name))

    def _is_own_url(self, url: str, host: str | None = None) -> bool:
        """Whether ``url`` is of this server: ``http``, one of its addresses, its port. On every interface an IP
        address counts only as the very address the request came to (its ``Host``): another machine's page on the
        same port is not the sandbox's."""
        try:
            parsed = URL(url)
            reached = URL(f"http://{host}").host if host is not None else None
        except ValueError:
            return False
        name = (parsed.host or "").lower()
        if parsed.scheme != "http" or not name or not self.is_own(name, parsed.port or 80):
            return False
        return name in self._names or reached is None or name == reached.lower()

    def refusal(self, request: web.Request) -> str | None:
        """Why ``request`` is refused, or ``None`` when it may go on."""
        host = request.headers.get(hdrs.HOST)
        if host is not None and not self._is_own_url(f"http://{host}"):
            return f"this server does not answer for {host!r}"
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None:
            return None if self._is_own_url(origin, host) else f"requests from {origin!r} are not accepted"
        referer = request.headers.get(hdrs.REFERER)
        if referer is not None and not self._is_page(request) and not self._is_own_url(referer, host):
            return "requests from another page are not accepted"
        return None

    @staticmethod
    def _is_page(request: web.Request) -> bool:
        """The page itself (and its files), which a link on another page may open."""
        return request.method in (hdrs.METH_GET, hdrs.METH_HEAD) and (
            request.path == "/" or request.path.startswith("/static/")
        )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer a refused request with 403 before its handler runs."""
        reason = self.refusal(request)
        if reason is None:
            return await handler(request)
        self.refusals.append(Refusal(request.method, request.path, reason))
        return web.json_response({"error": f"refused: {reason} (only the sandbox's own page may use it)"}, status=403)
