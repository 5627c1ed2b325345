"""
One project's stream of events: each is stored in the history, then sent
to every subscriber, and nothing unstored is ever sent.

When the disk refuses a write (full, failing) the events that settle state
(L{KEPT}) wait in memory, in order; others are dropped and counted. Every
later write, and a timer on the injected reactor, tries again; the first
one that succeeds stores what waited. The project that owns the log is
told through callbacks when storing breaks, when it works again and when
a C{prompt.finished} that waited is finally stored. See docs/storage.rst.
"""

from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterator

from twisted.logger import Logger

from claudews.events import CLAUDE, OUTPUT, PROMPT_FINISHED, Event, encode_event, timestamp
from claudews.interfaces import DelayedCall, EventStore, Fanout, ReactorTime, Subscriber
from claudews.subscribers import Subscribers

#: Events that must reach the history even when storing them fails at
#: first: they settle what a client relies on (every queued prompt
#: finishes exactly once). They wait in memory until the disk takes them;
#: other events that cannot be stored are dropped, and never sent.
KEPT = frozenset({PROMPT_FINISHED, "permission.resolved", "session.reset"})

#: Seconds between two attempts to store the events that wait.
STORAGE_RETRY = 5.0

#: At most this many events wait; a disk that stays broken for that long
#: loses the newest (each prompt adds at most a few).
MAX_WAITING = 10000

#: Events a L{EventLog.batch} gathers into one write: what the CLI prints.
#: Nothing waits on whether one was stored (other kinds settle state, and
#: their publisher is told at once: the batch is written before them).
BATCHED = frozenset({CLAUDE, OUTPUT})


def _ignore(*args: object) -> None:
    pass


class EventLog:
    """
    Stores a project's events and fans them out to its subscribers.

    @ivar subscribers: the project's L{Subscribers}.

    @param path: the project's path, named in every event.
    @param history: its L{claudews.history.History}.
    @param fanout: C{fanout(line, subscribers)} sends one event to many.
    @param broken: called with L{problem} after every write that fails.
        It runs inside the failed write: it must not publish at once.
    @param works_again: called when a write succeeds after failures.
    @param finish_stored: called with the prompt id of a C{prompt.finished}
        that waited and is now stored.
    @param stored: called with every event once it is stored and sent,
        whether at once or after waiting for the disk.
    @param write_failed: called with the error of every write the disk
        refused (the metrics count them).
    """

    _log = Logger()

    def __init__(
        self,
        *,
        path: str,
        history: EventStore,
        fanout: Fanout,
        reactor: ReactorTime,
        broken: Callable[[str], None] = _ignore,
        works_again: Callable[[], None] = _ignore,
        finish_stored: Callable[[str], None] = _ignore,
        stored: Callable[[Event], object] = _ignore,
        write_failed: Callable[[OSError], object] = _ignore,
    ) -> None:
        self._reactor = reactor
        self._path = path
        self._history = history
        self._broken = broken
        self._works_again = works_again
        self._finish_stored = finish_stored
        self._stored = stored
        self._write_failed = write_failed
        #: Why the last write failed, while storing events fails.
        self._storage_error: OSError | None = None
        #: Events of L{KEPT} kinds that wait for the disk, with their times.
        self._waiting: deque[tuple[float, Event]] = deque()
        self._flushing = False
        self._dropped = 0
        self._retry_call: DelayedCall | None = None
        self._closed = False
        #: Open L{batch} contexts, and the events gathered in them:
        #: C{(seq, line, event)}, numbered but not yet written.
        self._batching = 0
        self._batch: list[tuple[int, bytes, Event]] = []
        #: Written events not yet visible (the C{every} fsync policy), in
        #: order: sent once their fsync is done.
        self._unsent: deque[tuple[int, bytes, Event]] = deque()
        #: Called once what was unsent has all been sent.
        self._after_sent: list[Callable[[], object]] = []
        self.subscribers = Subscribers(
            history.read_since, lambda: history.last_seq, fanout, reactor
        )
        history.when_visible(self._send_visible)

    @property
    def last_seq(self) -> int:
        return self._history.last_seq

    @property
    def first_seq(self) -> int:
        return self._history.first_seq

    @property
    def waiting(self) -> int:
        """
        How many events wait for the disk to take them.
        """
        return len(self._waiting)

    def publish(self, event: Event) -> bool:
        """
        Store an event in the history, then send it to every subscriber;
        whether it was stored.

        An event that could not be stored is not sent: clients are never
        told of something a replay would not show. One of the L{KEPT}
        kinds then waits, and is stored and sent as soon as the disk takes
        it again, before any later event; any other is dropped.
        """
        if self._closed:
            # A process of a deleted project, still dying, may print on.
            self._log.debug(
                "Dropped a {kind} event of {path}: its history is closed",
                kind=event.kind,
                path=self._path,
            )
            return False
        now = self._reactor.seconds()
        if self._batching and event.kind in BATCHED and not self._waiting:
            seq = self._history.written_seq + len(self._batch) + 1
            line = encode_event(self._path, seq, timestamp(now), event)
            self._batch.append((seq, line, event))
            return True
        if self._batch:
            # In order: what was gathered before this event goes first.
            self._write_batch()
        if self._waiting and (self._flushing or not self._flush()):
            self._hold(now, event)
            return False
        if self._store(now, event):
            if self._storage_error is not None:
                self._storage_works()
            return True
        self._hold(now, event)
        return False

    @contextmanager
    def batch(self) -> Iterator[None]:
        """
        A context in which the CLI's events (L{BATCHED}) are gathered and
        stored with one write when it ends (or when an event of another
        kind comes), then sent: a CLI streaming fast prints many lines per
        read, and a write per line was most of their cost. When that write
        fails they are dropped, as they would have been one by one.
        """
        self._batching += 1
        try:
            yield
        finally:
            self._batching -= 1
            if not self._batching and self._batch:
                self._write_batch()

    def _write_batch(self) -> None:
        batch, self._batch = self._batch, []
        try:
            self._history.append_many(batch[0][0], [line for _, line, _ in batch])
        except OSError as e:
            # None of them is stored, or, when the batch was split at a
            # file's rotation, the first few: those are sent.
            written = [item for item in batch if item[0] <= self._history.written_seq]
            self._dropped += len(batch) - len(written)
            self._storage_failed(e)
            if written:
                self._stored_lines(written)
            return
        self._stored_lines(batch)
        if self._storage_error is not None:
            self._storage_works()

    def _store(self, now: float, event: Event) -> bool:
        seq = self._history.written_seq + 1
        line = encode_event(self._path, seq, timestamp(now), event)
        try:
            self._history.append(seq, line)
        except OSError as e:
            self._storage_failed(e)
            return False
        self._stored_lines([(seq, line, event)])
        return True

    def _stored_lines(self, stored: list[tuple[int, bytes, Event]]) -> None:
        """
        Written events: sent now if they are visible already (they are but
        under the C{every} policy), else when they become so.
        """
        self._unsent.extend(stored)
        self._send_visible(self._history.last_seq)

    def _send_visible(self, last_seq: int) -> None:
        """
        Send, in order, the written events up to C{last_seq}.
        """
        unsent = self._unsent
        while unsent and unsent[0][0] <= last_seq:
            _, line, event = unsent.popleft()
            self.subscribers.publish(line)
            self._stored(event)
        if not unsent and self._after_sent:
            callbacks, self._after_sent = self._after_sent, []
            for callback in callbacks:
                callback()

    def after_sent(self, callback: Callable[[], object]) -> None:
        """
        Call C{callback} once every event stored so far has been sent: at
        once, but under the C{every} policy when their fsync is done (so
        that what follows from them, a project shown idle, never overtakes
        them).
        """
        if not self._unsent:
            callback()
        elif callback not in self._after_sent:
            self._after_sent.append(callback)

    def _hold(self, now: float, event: Event) -> None:
        if event.kind in KEPT and len(self._waiting) < MAX_WAITING:
            self._waiting.append((now, event))
        else:
            self._dropped += 1

    def _flush(self) -> bool:
        """
        Store the events that wait, in order; whether all of them were.
        """
        self._flushing = True
        try:
            while self._waiting:
                now, event = self._waiting[0]
                if not self._store(now, event):
                    return False
                self._waiting.popleft()
                if event.kind == PROMPT_FINISHED and event.prompt_id is not None:
                    self._finish_stored(event.prompt_id)
        finally:
            self._flushing = False
        self._storage_works()
        return True

    def _storage_failed(self, error: OSError) -> None:
        first = self._storage_error is None
        self._storage_error = error
        self._write_failed(error)
        if self._retry_call is None or not self._retry_call.active():
            self._retry_call = self._reactor.callLater(STORAGE_RETRY, self._retry)
        if first:
            self._log.error(
                "Cannot store events of {path}: {error}; a running prompt fails, "
                "new prompts are refused until a write succeeds again",
                path=self._path,
                error=error,
            )
        self._broken(_problem(error))

    def _storage_works(self) -> None:
        if self._storage_error is None:
            return
        self._log.info(
            "Storing events of {path} works again ({dropped} events could not "
            "be stored and were never sent)",
            path=self._path,
            dropped=self._dropped,
        )
        self._storage_error = None
        self._dropped = 0
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        self._works_again()

    def _retry(self) -> None:
        self._retry_call = None
        if self._storage_error is None:
            return
        # With nothing waiting there is nothing to test the disk with; the
        # next event will.
        if self._waiting:
            self._flush()

    def problem(self) -> str | None:
        """
        Why events cannot be stored now, or C{None}.
        """
        if self._storage_error is None:
            return None
        return _problem(self._storage_error)

    # -- subscribers and pages

    def subscribe(self, subscriber: Subscriber, since: int | None) -> None:
        """
        Send C{subscriber} the events after C{since} (none if C{None}),
        then every new one.
        """
        if since is not None and since > self.last_seq:
            # The client's seq belongs to an earlier history of this path.
            since = 0
        self.subscribers.add(subscriber, since)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.remove(subscriber)

    # -- the end

    def stop(self) -> bool:
        """
        Give what waits a last chance, stop retrying and drop the
        subscribers; whether every event was stored.
        """
        if self._waiting:
            # What is still refused stays open in the metadata, and the
            # next start interrupts it.
            self._flush()
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self.subscribers.clear()
        return not self._waiting

    def close(self) -> None:
        """
        Write the history to disk and close it.
        """
        self._closed = True
        try:
            self._history.flush()
        except OSError as e:
            self._log.error("fsync of the history of {path} failed: {error}", path=self._path, error=e)
        self._history.close()


def _problem(error: OSError) -> str:
    return "cannot store events: %s" % (error,)
