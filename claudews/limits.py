"""
What a peer may do before it is refused or slowed down: connections per
address, how long refusals of wrong tokens wait per address, how fast a
connection's requests are handled, and how many log lines refusals may
cost. L{Gate} puts the per-address ones together for the WebSocket
factory.

Each limiter takes the time from the reactor (C{reactor.seconds}, or an
explicit C{now}), so tests drive it with a L{Clock}.
"""

import math
import re
from collections import deque
from typing import Any, Callable
from urllib.parse import quote, quote_plus

from twisted.logger import Logger

from claudews.config import Settings
from claudews.interfaces import DelayedCall, ReactorTime

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


class _WrongTokens:
    __slots__ = ("held", "times")

    def __init__(self, most: int) -> None:
        self.times: deque[float] = deque(maxlen=most)
        self.held = 0


class TokenThrottle:
    """
    Wrong or missing tokens per address, and how long the next refusal to
    that address waits before it is sent: the first C{free} within
    C{window} seconds are answered at once, each further one after
    L{FIRST_DELAY} seconds, doubled each time, at most C{max_delay}.

    Nothing here ever refuses anyone: a correct token is answered at once
    whatever its address did, because a web page can make the browser send
    wrong tokens from the user's own address. The delays slow a guesser
    down and cost a flood of garbage more than it costs the server; at most
    C{held} refusals wait at once per address (the others are answered at
    once), so that waiting refusals never fill the connections an address
    may open.

    At most C{max_addresses} addresses are remembered, the least recently
    failed forgotten first, so a peer with many addresses costs bounded
    memory.
    """

    #: Seconds the first delayed refusal waits.
    FIRST_DELAY = 0.1

    def __init__(
        self,
        seconds: Callable[[], float],
        free: int,
        window: float,
        max_delay: float,
        held: int = 8,
        max_addresses: int = 10000,
    ) -> None:
        self._seconds = seconds
        self.free = free
        self.window = window
        self.max_delay = max_delay
        self._held = held
        self._max = max_addresses
        self._records: dict[str, _WrongTokens] = {}
        # Failures past free that reach max_delay, and a few more.
        self._remember = free + 2 + max(0, int(math.log2(max_delay / self.FIRST_DELAY)) + 1)

    def failed(self, address: str) -> float:
        """
        Count one wrong token from C{address}.

        @return: how many seconds its refusal waits (0: at once). A refusal
            that waits must be L{released} once it is sent or gone.
        """
        now = self._seconds()
        # Popped and put back: dicts keep insertion order, so the first
        # entry is the one that failed least recently.
        record = self._records.pop(address, None) or _WrongTokens(self._remember)
        self._records[address] = record
        while len(self._records) > self._max:
            del self._records[next(iter(self._records))]
        times = record.times
        while times and times[0] <= now - self.window:
            times.popleft()
        times.append(now)
        over = len(times) - self.free
        if over <= 0 or record.held >= self._held:
            return 0.0
        record.held += 1
        return float(min(self.max_delay, self.FIRST_DELAY * 2 ** (over - 1)))

    def released(self, address: str) -> None:
        """
        A waiting refusal to C{address} was sent, or its peer went away.
        """
        record = self._records.get(address)
        if record is not None and record.held > 0:
            record.held -= 1

    def __len__(self) -> int:
        return len(self._records)


class RequestBudget:
    """
    A token bucket of C{burst} requests refilled at C{rate} per second,
    which may go into debt.

    A request may go when the bucket holds a whole request (L{ready}); it
    then takes what it costs (L{spend}), which may take the bucket below
    zero: a message in more fragments than the bucket holds still goes, and
    the ones after it wait until the debt is paid.
    """

    __slots__ = ("rate", "burst", "level", "_last")

    #: A whole request, less what float rounding of the refill may lose (a
    #: timer set for the moment the bucket holds one must find it ready).
    _WHOLE = 1.0 - 1e-9

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.level = float(burst)
        self._last = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._last)
        self._last = now
        self.level = min(float(self.burst), self.level + elapsed * self.rate)

    def ready(self, now: float) -> bool:
        """
        Whether a request may go now.
        """
        self._refill(now)
        return self.level >= self._WHOLE

    def spend(self, now: float, cost: int = 1) -> None:
        """
        Take C{cost} requests' worth, ready or not.
        """
        self._refill(now)
        self.level -= cost

    def wait(self, now: float) -> float:
        """
        Seconds until L{ready} (0 if it is now).
        """
        self._refill(now)
        return max(0.0, (1.0 - self.level) / self.rate)


class Pacer:
    """
    How fast one connection is read: every frame spends from a
    L{RequestBudget} of C{rate} per second in bursts of C{burst}, and once
    it is spent the connection is read no further (C{pause}) until the
    budget holds a request again (C{resume}, from a timer on C{clock}). A
    client over the rate is never refused: what it sent waits, unread or
    unparsed, and is handled in order as the budget refills, while TCP's
    window holds the rest back.

    @ivar paused: whether C{pause} was called and C{resume} not since.
    """

    __slots__ = ("_clock", "_budget", "_pause", "_resume", "_call", "_stopped", "paused")

    def __init__(
        self,
        clock: ReactorTime,
        rate: float,
        burst: int,
        *,
        pause: Callable[[], None],
        resume: Callable[[], None],
    ) -> None:
        self._clock = clock
        self._budget = RequestBudget(rate, burst, clock.seconds())
        self._pause = pause
        self._resume = resume
        self._call: DelayedCall | None = None
        self._stopped = False
        self.paused = False

    def spend(self, cost: int = 1) -> None:
        """
        Count what was just read (C{cost} frames), and pause if that spent
        the budget.
        """
        if self._stopped:
            return
        now = self._clock.seconds()
        self._budget.spend(now, cost)
        if self.paused or self._budget.ready(now):
            return
        self.paused = True
        self._call = self._clock.callLater(self._budget.wait(now), self._due)
        self._pause()

    def stop(self) -> bool:
        """
        Pace no more: the connection is closing or gone. The timer is
        cancelled; reading is left as it is.

        @return: whether reading was paused.
        """
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        paused, self.paused = self.paused, False
        return paused

    def _due(self) -> None:
        self._call = None
        now = self._clock.seconds()
        if not self._budget.ready(now):
            self._call = self._clock.callLater(self._budget.wait(now), self._due)
            return
        self.paused = False
        # What was read before the pause may spend the budget again, and
        # pause again, inside this call.
        self._resume()


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
    Who may open a connection: open connections per address, how long
    refusals of wrong tokens wait per address, and a log of refusals that
    neither shows the token nor floods the disk.

    @ivar peers: an L{AddressCounter} of the open connections.
    @ivar tokens: the L{TokenThrottle}.
    """

    _log = Logger()

    #: Log lines about refusals, and about addresses whose refusals start
    #: to wait, per period: beyond that they are counted, and the count
    #: logged with the next one.
    LOG_LINES = 20
    LOG_PERIOD = 60.0

    def __init__(self, settings: Settings, token: str | None, seconds: Callable[[], float]) -> None:
        self.token = token
        self.peers = AddressCounter()
        self.tokens = TokenThrottle(
            seconds,
            settings.max_failed_handshakes,
            settings.failed_handshake_window,
            settings.failed_handshake_delay,
            # Waiting refusals may hold at most a quarter of the
            # connections an address may open.
            held=max(1, settings.max_connections_per_address // 4),
        )
        self._refusal_log = LogBudget(seconds, self.LOG_LINES, self.LOG_PERIOD)
        self._delay_log = LogBudget(seconds, self.LOG_LINES, self.LOG_PERIOD)

    def redact(self, text: str) -> str:
        """
        C{text} fit for the log: without the token, or anything like one.
        """
        return redact(text, self.token)

    def wrong_token(self, address: str | None) -> float:
        """
        Count a wrong or missing token; the seconds its refusal waits (see
        L{TokenThrottle.failed}, and L{TokenThrottle.released} after).
        """
        if address is None:
            return 0.0
        delay = self.tokens.failed(address)
        if delay == self.tokens.FIRST_DELAY:
            # The first refusal of this address that waits.
            suppressed = self._delay_log.allow()
            if suppressed is not None:
                self._log.info(
                    "Delaying refusals to {address}: {count} wrong tokens within"
                    " {window:g} s{more}",
                    address=address,
                    count=self.tokens.free + 1,
                    window=self.tokens.window,
                    more=_more(suppressed, "addresses"),
                )
        return delay

    def refused(self, address: str | None, peer: str | None, code: int, why: str) -> None:
        """
        Log a refused handshake (HTTP status C{code}), within the log's
        budget. Nothing is counted against the address here: only wrong
        tokens are (L{wrong_token}), and they only ever delay refusals.
        """
        suppressed = self._refusal_log.allow()
        if suppressed is not None:
            self._log.info(
                "Refused {peer}: {code} {why}{more}",
                peer=peer,
                code=code,
                why=self.redact(why),
                more=_more(suppressed, "refusals"),
            )


def _more(suppressed: int, what: str) -> str:
    return " (and %d more %s not logged)" % (suppressed, what) if suppressed else ""
