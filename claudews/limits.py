"""
What a peer may do before it is refused: connections per address, failed
handshakes per address, requests per connection, and how many log lines
refusals may cost. L{Gate} puts the per-address ones together for the
WebSocket factory.

Each limiter takes the time from the reactor (C{reactor.seconds}, or an
explicit C{now}), so tests drive it with a L{Clock}.
"""

import re
from collections import deque
from typing import Any, Callable
from urllib.parse import quote, quote_plus

from twisted.logger import Logger

from claudews.config import Settings

#: L{RequestBudget.spend} verdicts.
OK = "ok"
REFUSE = "refuse"
CLOSE = "close"

_SECRET = re.compile(r"(?i)(token=|bearer\s+)[^\s&#;\"']+")
REDACTED = "<redacted>"


def redact(text: str, secret: str | None) -> str:
    """
    C{text} with C{secret} (as given, or percent-encoded) and the value of
    any C{token=} parameter or C{Bearer} credential replaced.

    A refused handshake's reason can quote the request line, and with it
    a C{?token=}; the wrong token of one client may be another's right one.
    """
    if secret:
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(form, REDACTED)
    return _SECRET.sub(lambda m: m.group(1) + REDACTED, text)


def peer_address(address: Any) -> str:
    """
    The part of a peer's address that limits count by: the IP address, or
    the kind of address for those without one (every local peer on a UNIX
    socket is one address).
    """
    host = getattr(address, "host", None)
    if isinstance(host, str):
        return host
    return type(address).__name__


class AddressCounter:
    """
    Open connections per peer address; addresses with none are forgotten.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def add(self, address: str) -> int:
        count = self._counts.get(address, 0) + 1
        self._counts[address] = count
        return count

    def remove(self, address: str) -> None:
        count = self._counts.get(address, 0) - 1
        if count > 0:
            self._counts[address] = count
        else:
            self._counts.pop(address, None)

    def count(self, address: str) -> int:
        return self._counts.get(address, 0)

    def __len__(self) -> int:
        return len(self._counts)


class _Failures:
    __slots__ = ("blocked_until", "times")

    def __init__(self, limit: int) -> None:
        self.times: deque[float] = deque(maxlen=limit)
        self.blocked_until = 0.0


class HandshakeGuard:
    """
    Failed handshakes per address: an address that fails C{failures} times
    within C{window} seconds is blocked for C{block} seconds.

    At most C{max_addresses} addresses are remembered, the least recently
    failed forgotten first, so a peer with many addresses costs bounded
    memory (and, past that bound, escapes the count: the other limits
    still hold).
    """

    def __init__(
        self,
        seconds: Callable[[], float],
        failures: int,
        window: float,
        block: float,
        max_addresses: int = 10000,
    ) -> None:
        self._seconds = seconds
        self.failures = failures
        self.window = window
        self.block = block
        self._max = max_addresses
        self._records: dict[str, _Failures] = {}

    def blocked(self, address: str) -> bool:
        record = self._records.get(address)
        return record is not None and record.blocked_until > self._seconds()

    def failed(self, address: str) -> bool:
        """
        Count one failed handshake.

        @return: True if it starts a block of C{address}.
        """
        now = self._seconds()
        # Popped and put back: dicts keep insertion order, so the first
        # entry is the one that failed least recently.
        record = self._records.pop(address, None) or _Failures(self.failures)
        self._records[address] = record
        while len(self._records) > self._max:
            del self._records[next(iter(self._records))]
        if record.blocked_until > now:
            return False
        times = record.times
        while times and times[0] <= now - self.window:
            times.popleft()
        times.append(now)
        if len(times) < self.failures:
            return False
        times.clear()
        record.blocked_until = now + self.block
        return True

    def __len__(self) -> int:
        return len(self._records)


class RequestBudget:
    """
    A token bucket of C{burst} requests refilled at C{rate} per second.

    A request that finds the bucket empty is refused and still taken from
    it, so the bucket goes into debt: a client that keeps sending while it
    is refused reaches a debt of C{burst} and is closed, one that slows
    down to C{rate} or less works its way out of it.
    """

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.level = float(burst)
        self._last = now

    def spend(self, now: float) -> str:
        """
        Take one request: L{OK}, L{REFUSE} or L{CLOSE}.
        """
        elapsed = max(0.0, now - self._last)
        self._last = now
        self.level = min(float(self.burst), self.level + elapsed * self.rate)
        self.level -= 1
        if self.level >= 0:
            return OK
        if self.level < -self.burst:
            return CLOSE
        return REFUSE


class LogBudget:
    """
    At most C{lines} log lines per C{period} seconds about one kind of
    thing, so that a peer cannot fill the disk through the log.
    """

    def __init__(self, seconds: Callable[[], float], lines: int, period: float) -> None:
        self._seconds = seconds
        self.lines = lines
        self.period = period
        self._start = float("-inf")
        self._count = 0
        self._suppressed = 0

    def allow(self) -> int | None:
        """
        @return: None if this line must not be logged; otherwise how many
            were suppressed since the last one that was.
        """
        now = self._seconds()
        if now - self._start >= self.period:
            self._start = now
            self._count = 0
        if self._count >= self.lines:
            self._suppressed += 1
            return None
        self._count += 1
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed


class Gate:
    """
    Who may open a connection: open connections per address, failed
    handshakes per address (and the blocks they lead to), and a log of
    refusals that neither shows the token nor floods the disk.

    @ivar peers: an L{AddressCounter} of the open connections.
    @ivar guard: the L{HandshakeGuard}.
    """

    _log = Logger()

    #: Log lines about refusals, and about blocks, per period: beyond that
    #: they are counted, and the count logged with the next one.
    LOG_LINES = 20
    LOG_PERIOD = 60.0

    def __init__(self, settings: Settings, token: str | None, seconds: Callable[[], float]) -> None:
        self.token = token
        self.peers = AddressCounter()
        self.guard = HandshakeGuard(
            seconds,
            settings.max_failed_handshakes,
            settings.failed_handshake_window,
            settings.failed_handshake_block,
        )
        self._refusal_log = LogBudget(seconds, self.LOG_LINES, self.LOG_PERIOD)
        self._block_log = LogBudget(seconds, self.LOG_LINES, self.LOG_PERIOD)

    def redact(self, text: str) -> str:
        """
        C{text} fit for the log: without the token, or anything like one.
        """
        return redact(text, self.token)

    def refused(self, address: str | None, peer: str | None, code: int, why: str) -> None:
        """
        Count and log a refused handshake (HTTP status C{code}); block its
        address once it failed too often.

        Refusals for want of capacity (503) are not the peer's fault and do
        not count; those of a blocked address (429) are not logged one by
        one, the block was.
        """
        blocks = False
        if address is not None and code not in (429, 503):
            blocks = self.guard.failed(address)
        if code != 429:
            suppressed = self._refusal_log.allow()
            if suppressed is not None:
                self._log.info(
                    "Refused {peer}: {code} {why}{more}",
                    peer=peer,
                    code=code,
                    why=self.redact(why),
                    more=_more(suppressed, "refusals"),
                )
        if blocks:
            suppressed = self._block_log.allow()
            if suppressed is not None:
                self._log.warn(
                    "Blocking {address} for {block:g} s: {count} failed handshakes"
                    " within {window:g} s{more}",
                    address=address,
                    block=self.guard.block,
                    count=self.guard.failures,
                    window=self.guard.window,
                    more=_more(suppressed, "blocks"),
                )


def _more(suppressed: int, what: str) -> str:
    return " (and %d more %s not logged)" % (suppressed, what) if suppressed else ""
