"""
The server's metrics, in Prometheus' text format (C{GET /metrics},
L{claudews.site}).

One L{Metrics} per server, made by L{claudews.tap} and passed to the rooms
that count: the connection factory (connections open, what is sent), the
requests of a connection (by type and error code), the registry (events
stored and prompts finished, through the same observer as the
notifications; CLI processes alive) and the event log (storage failures,
through a callback). Its own C{CollectorRegistry}: never prometheus_client's
global one, so two servers in one process (the tests) never share counts.

Every label takes a bounded set of values (request types the server knows,
error codes, event kinds, prompt statuses): what a client sends never
becomes a label of its own.
"""

from collections import Counter as Tally
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from claudews.events import PROMPT_FINISHED, PROMPT_STARTED, Event
from claudews.interfaces import ReactorTime

#: The C{Content-Type} of L{Metrics.render}.
CONTENT_TYPE = CONTENT_TYPE_LATEST.encode("ascii")

#: The C{type} label of a request that names no type the server knows.
UNKNOWN = "unknown"

#: The C{code} label of a request answered without an error.
OK = "ok"

#: Prompt durations, seconds: from a quick answer to the default timeout
#: and past it.
DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class Metrics:
    """
    The counters and gauges of one server.

    @param reactor: times a prompt from C{prompt.started} to
        C{prompt.finished}.
    @param request_types: the request types counted by name; any other is
        counted as L{UNKNOWN}.
    """

    def __init__(self, reactor: ReactorTime, request_types: Iterable[str] = ()) -> None:
        self._reactor = reactor
        self._types = frozenset(request_types)
        #: When each running prompt started, by project path and prompt id.
        self._started: dict[tuple[str, str], float] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        # What is counted per event and per subscriber is tallied in plain
        # ints and added to the counters when they are read: a counter's
        # inc takes a lock, and two or three per delivery were a tenth of a
        # fan-out's CPU. Registered first, so every read sees it added.
        self._messages = self._bytes = self._events = 0
        self._stored: Tally[str] = Tally()
        r.register(_Settle(self))  # type: ignore[arg-type]
        self.connections = Gauge("claudews_connections", "Open WebSocket connections.", registry=r)
        self.requests = Counter(
            "claudews_requests", "Requests answered, by type and error code ('ok': none).",
            ["type", "code"], registry=r,
        )
        self.prompts = Counter(
            "claudews_prompts", "Prompts finished, by final status.", ["status"], registry=r
        )
        self.prompt_duration = Histogram(
            "claudews_prompt_duration_seconds",
            "Time from a prompt's start to its end (prompts that started).",
            buckets=DURATION_BUCKETS, registry=r,
        )
        self.events_stored = Counter(
            "claudews_events_stored", "Events stored in a project's history, by kind.",
            ["kind"], registry=r,
        )
        self.events_sent = Counter(
            "claudews_events_sent", "Live events handed to subscribed connections.", registry=r
        )
        self.messages_sent = Counter(
            "claudews_messages_sent", "WebSocket messages sent (replies, events, pages).",
            registry=r,
        )
        self.bytes_sent = Counter(
            "claudews_sent_bytes", "Payload bytes of the messages sent.", registry=r
        )
        self.slow_closes = Counter(
            "claudews_slow_client_closes", "Connections closed as too slow (1008).", registry=r
        )
        self.cli_processes = Gauge(
            "claudews_cli_processes", "Live CLI processes (busy, idle or ending).", registry=r
        )
        self.storage_failures = Counter(
            "claudews_storage_failures", "Writes of events the disk refused.", registry=r
        )

    # -- gauges read when scraped

    def track_connections(self, count: Callable[[], int]) -> None:
        self.connections.set_function(count)

    def track_processes(self, count: Callable[[], int]) -> None:
        self.cli_processes.set_function(count)

    # -- counted as it happens

    def request(self, kind: object, code: str | None) -> None:
        """A request of type C{kind} was answered, with error C{code} or none."""
        label = kind if isinstance(kind, str) and kind in self._types else UNKNOWN
        self.requests.labels(type=label, code=code or OK).inc()

    def sent(self, size: int) -> None:
        """A message (or a page's fragment) of C{size} bytes went out."""
        self._messages += 1
        self._bytes += size

    def fanned_out(self, subscribers: int) -> None:
        self._events += subscribers

    def settle(self) -> None:
        """Add what was tallied since the last read to the counters."""
        if self._messages:
            self.messages_sent.inc(self._messages)
            self.bytes_sent.inc(self._bytes)
            self._messages = self._bytes = 0
        if self._events:
            self.events_sent.inc(self._events)
            self._events = 0
        if self._stored:
            for kind, n in self._stored.items():
                self.events_stored.labels(kind=kind).inc(n)
            self._stored.clear()

    def slow_close(self) -> None:
        self.slow_closes.inc()

    def storage_failed(self, error: object = None) -> None:
        self.storage_failures.inc()

    def observe(self, path: str, event: Event) -> None:
        """An event of the project at C{path} was stored."""
        self._stored[event.kind] += 1
        prompt_id = event.prompt_id
        if prompt_id is None:
            return
        if event.kind == PROMPT_STARTED:
            self._started[(path, prompt_id)] = self._reactor.seconds()
        elif event.kind == PROMPT_FINISHED:
            self.prompts.labels(status=str(event.fields.get("status"))).inc()
            started = self._started.pop((path, prompt_id), None)
            if started is not None:
                self.prompt_duration.observe(max(0.0, self._reactor.seconds() - started))

    # -- the scrape

    def render(self) -> bytes:
        """Every metric, in Prometheus' text format."""
        return generate_latest(self.registry)


class _Settle:
    """
    A collector of nothing that settles L{Metrics}' tallies when the
    registry is read (a scrape, or a test's C{get_sample_value}).
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[object]:
        return []

    def collect(self) -> list[object]:
        self._metrics.settle()
        return []
