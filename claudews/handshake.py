"""
Who gets past the opening handshake, and who is refused with what.

Refusals, in the order they are checked:

  - far too many connections: dropped at once, before any handshake;
  - 431: a request line and headers over L{MAX_HANDSHAKE_BYTES};
  - 503: too many connections from the address (Autobahn itself answers
    503 past C{max_connections});
  - 404: a path other than C{/ws};
  - 403: a C{Host} not on the host allow-list, or an C{Origin} that is
    neither on the origin allow-list nor the server's own (its console);
  - 401: no token, or a wrong one; past a few of those from one address
    the 401 waits a while (L{refusal_delay}).

No address is ever blocked: a web page can make the user's browser send
any of these from the user's own address, and a correct token is always
answered at once. docs/security.rst says why each of these exists. The protocol in
L{claudews.websocket} applies these checks; they live here so that each
reads, and is tested, on its own.
"""

import hmac
from typing import Any, Iterable

from attrs import frozen
from twisted.internet import defer

from claudews import limits
from claudews.config import Settings
from claudews.interfaces import DelayedCall, ReactorTime

#: A handshake request (request line and headers) may be this long; Autobahn
#: itself would buffer an endless one until the handshake timeout.
MAX_HANDSHAKE_BYTES = 64 * 1024

#: Seconds a client has to finish its opening handshake.
OPEN_HANDSHAKE_TIMEOUT = 10

_LOOPBACK = ("localhost", "127.0.0.1", "[::1]")


@frozen
class Refusal:
    """
    A handshake refused with HTTP status C{code} and C{reason}; C{why} is
    what to log, where it says more than the reason.
    """

    code: int
    reason: str
    why: str | None = None


def far_too_many(from_address: int, connections: int, settings: Settings) -> bool:
    """
    Whether a new connection is so far over the limits that it is not a
    client waiting for its 503: it is dropped before it holds a descriptor
    for the handshake time.
    """
    return (
        from_address > 2 * settings.max_connections_per_address
        or connections > 2 * settings.max_connections
    )


def before_parsing(data: bytes, address: str | None, gate: limits.Gate, most: int) -> Refusal | None:
    """
    The refusals decided before Autobahn parses C{data}, the handshake
    received so far; C{most} is the bound on connections per address.

    Nothing is refused for its address until the request is complete: a
    refusal answers a request.
    """
    end = data.find(b"\r\n\r\n")
    if end > MAX_HANDSHAKE_BYTES or (end < 0 and len(data) > MAX_HANDSHAKE_BYTES):
        return Refusal(431, "Request Header Fields Too Large")
    if end < 0 or address is None:
        return None
    if gate.peers.count(address) > most:
        why = "over %d connections from %s" % (most, address)
        return Refusal(503, "Service Unavailable", why)
    return None


def refusal_delay(refusal: Refusal, address: str | None, gate: limits.Gate) -> float:
    """
    The seconds C{refusal} waits before it is sent: only a wrong or
    missing token ever does, and never long enough to run into the
    handshake timeout. A delay is L{limits.TokenThrottle.released} once
    over.
    """
    if refusal.code != 401:
        return 0.0
    return min(gate.wrong_token(address), OPEN_HANDSHAKE_TIMEOUT / 2)


def check_request(
    request: Any, hosts: frozenset[str], origins: frozenset[str], token: str | None
) -> Refusal | None:
    """
    The refusal of an Autobahn C{ConnectionRequest}, if any: its path, its
    C{Host} (one of C{hosts}), its C{Origin} (absent, or one of C{origins})
    and its token.
    """
    if request.path != "/ws":
        return Refusal(404, "Not Found")
    host = request.headers.get("host", "").strip().lower()
    if host not in hosts:
        return Refusal(403, "Host not allowed", "Host %r not allowed" % (host[:200],))
    origin = request.headers.get("origin")
    if origin is not None and not origin_allowed(origin.strip().lower(), host, origins):
        return Refusal(403, "Origin not allowed", "Origin %r not allowed" % (origin[:200],))
    if token is not None and not authorized(request, token):
        return Refusal(401, "Unauthorized", "missing or wrong token")
    return None


def origin_allowed(origin: str, host: str, origins: frozenset[str]) -> bool:
    """
    Whether a page of C{origin} may connect: one on the allow-list, or one
    served by this server itself (the console), whose origin is the very
    C{Host} the handshake names, already checked against the host
    allow-list. A page of any other site cannot make a browser send our
    Host with its own Origin.
    """
    return origin in origins or origin in ("http://" + host, "https://" + host)


def authorized(request: Any, token: str) -> bool:
    """
    Whether C{request} carries C{token}, as C{Authorization: Bearer} or as
    the one C{?token=} parameter; compared in constant time.
    """
    given = None
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        given = header[7:].strip()
    else:
        tokens = request.params.get("token") or []
        given = tokens[0] if len(tokens) == 1 else None
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


def allowed_hosts(
    listen_host: str | None, listen_port: int | None, extra: Iterable[str]
) -> frozenset[str]:
    """
    The C{Host} values a handshake may carry: the loopback names and the
    listening address, with the listening port (without it too on 80 and
    443), and the configured C{extra} ones as they are written.

    C{listen_port} is C{None} on a UNIX socket.
    """
    hosts = set(_LOOPBACK)
    if listen_host and listen_host not in ("0.0.0.0", "::", ""):
        hosts.add("[%s]" % (listen_host,) if ":" in listen_host else listen_host)
    allowed = set(h.lower() for h in extra)
    if listen_port is None:
        # A UNIX socket has no port for a client to name: the loopback
        # names alone, as clients of one (curl --unix-socket) send them.
        # Whatever a proxy in front sends goes in allowed-host.
        return frozenset(allowed | hosts)
    for host in hosts:
        allowed.add("%s:%s" % (host, listen_port))
        if listen_port in (80, 443):
            allowed.add(host)
    return frozenset(allowed)


class LateRefusal:
    """
    A wrong token's refusal that waits (L{refusal_delay}): it holds one of
    the address's waiting places (C{gate.tokens}) until it is sent, or
    until the peer goes away.
    """

    def __init__(self, reactor: ReactorTime, gate: limits.Gate, address: str | None) -> None:
        self._reactor = reactor
        self._gate = gate
        self._address = address
        self._call: DelayedCall | None = None

    def after(self, delay: float, deny: Exception) -> defer.Deferred[None]:
        """
        A Deferred that fails with C{deny} in C{delay} seconds.
        """
        refused: defer.Deferred[None] = defer.Deferred()

        def refuse() -> None:
            self._call = None
            self._release()
            refused.errback(deny)

        self._call = self._reactor.callLater(delay, refuse)
        return refused

    def forget(self) -> None:
        """
        The peer went away while its refusal waited.
        """
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
            self._release()

    def _release(self) -> None:
        if self._address is not None:
            self._gate.tokens.released(self._address)
