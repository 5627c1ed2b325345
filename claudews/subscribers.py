"""
A project's subscribers: live fan-out and catch-up replay from history.

A subscriber that asks for C{since} first reads what it missed from disk,
then joins the live stream. Every event is stored before it is sent, so
the switch needs no buffer: while a subscriber replays, live events are not
sent to it (they are already on disk, ahead of its cursor), and it turns
live in the same reactor turn in which its cursor reaches the newest
stored event. Nothing is sent twice and nothing is skipped.
"""

from typing import Callable, Iterator

from twisted.logger import Logger

from claudews import interfaces
from claudews.interfaces import Fanout, ReactorTime, Subscriber
from claudews.outbox import Frames

#: Stored events sent to one subscriber per reactor turn while replaying,
#: so a long replay does not starve other connections.
REPLAY_BATCH = 500

#: A replay's batch ends once its events reach this many bytes: as much
#: as Twisted's transport holds before it tells its producer to pause
#: (C{bufferSize}), which is where a replay that wrote one event at a
#: time stopped to wait for the client.
REPLAY_BYTES = 64 * 1024


class _Replay:
    def __init__(self, cursor: int) -> None:
        self.cursor = cursor
        self.reader: Iterator[tuple[int, bytes]] | None = None


class Subscribers:
    """
    The subscribers of one project, live or catching up.

    @param read_since: L{claudews.interfaces.EventStore.read_since} of the
        project's history.
    @param last_seq: returns the seq of the newest stored event.
    @param fanout: sends one event to many subscribers.
    @param reactor: paces the replay, one batch per turn.
    """

    _log = Logger()

    def __init__(
        self,
        read_since: Callable[[int], Iterator[tuple[int, bytes]]],
        last_seq: Callable[[], int],
        fanout: Fanout,
        reactor: ReactorTime,
    ) -> None:
        self._reactor = reactor
        self._read_since = read_since
        self._last_seq = last_seq
        self._fanout = fanout
        self._live: dict[Subscriber, None] = {}
        self._replaying: dict[Subscriber, _Replay] = {}

    def __contains__(self, subscriber: Subscriber) -> bool:
        return subscriber in self._live or subscriber in self._replaying

    def __len__(self) -> int:
        return len(self._live) + len(self._replaying)

    def __iter__(self) -> Iterator[Subscriber]:
        """Every subscriber, live or still replaying."""
        return iter([*self._live, *self._replaying])

    def add(self, subscriber: Subscriber, since: int | None) -> None:
        """
        Subscribe; with C{since}, first replay every stored event after it.

        The replay starts on a later reactor turn, so that the reply to
        C{subscribe} goes out before the first replayed event.
        """
        self.remove(subscriber)
        if since is None or since >= self._last_seq():
            self._live[subscriber] = None
            return
        self._replaying[subscriber] = _Replay(since)
        self._reactor.callLater(0, self._step, subscriber)

    def remove(self, subscriber: Subscriber) -> None:
        """
        Unsubscribe; a replay under way stops and closes its reader.
        """
        self._live.pop(subscriber, None)
        replay = self._replaying.pop(subscriber, None)
        if replay is not None and replay.reader is not None:
            _close(replay.reader)

    def clear(self) -> None:
        """
        Unsubscribe everyone: the project is going away.
        """
        for subscriber in list(self._replaying):
            self.remove(subscriber)
        self._live.clear()

    def publish(self, line: bytes) -> None:
        """
        Send a stored event to every live subscriber.
        """
        if self._live:
            self._fanout(line, list(self._live))

    def _step(self, subscriber: Subscriber) -> None:
        replay = self._replaying.get(subscriber)
        if replay is None:
            return
        try:
            done = self._send_batch(subscriber, replay)
        except Exception:
            self._log.failure("Replay failed; the subscriber turns live")
            done = True
        if done:
            del self._replaying[subscriber]
            if replay.reader is not None:
                _close(replay.reader)
            self._live[subscriber] = None
        elif subscriber.backlogged():
            drained = subscriber.when_drained()
            drained.addCallback(lambda _: self._step(subscriber))
            drained.addErrback(
                lambda f: self._log.failure("Waiting for a subscriber failed", f)
            )
        else:
            self._reactor.callLater(0, self._step, subscriber)

    def _send_batch(self, subscriber: Subscriber, replay: _Replay) -> bool:
        """
        Send up to L{REPLAY_BATCH} events, and no more than the first that
        reaches L{REPLAY_BYTES}, framed and written together; just one
        when the subscriber is backlogged already. True once caught up.
        """
        lines: list[bytes] = []
        budget = 0 if subscriber.backlogged() else REPLAY_BYTES
        gathered = 0
        caught_up = False
        # Nothing in a batch runs other code: the newest seq stays put.
        last_seq = self._last_seq()
        try:
            while len(lines) < REPLAY_BATCH and (gathered < budget or not lines):
                if replay.cursor >= last_seq:
                    caught_up = True
                    break
                if replay.reader is None:
                    replay.reader = self._read_since(replay.cursor)
                item = next(replay.reader, None)
                if item is None:
                    # The reader stopped short of the newest event (it was
                    # written after the reader looked, or a file was retired
                    # under it): look again from the cursor.
                    _close(replay.reader)
                    replay.reader = self._read_since(replay.cursor)
                    item = next(replay.reader, None)
                    if item is None:
                        # Nothing stored after the cursor is readable (a
                        # damaged tail); there is nothing more to replay.
                        caught_up = True
                        break
                seq, line = item
                if seq <= replay.cursor:
                    continue
                replay.cursor = seq
                lines.append(line)
                gathered += len(line)
        finally:
            # What was read before a reader failed is sent all the same.
            if lines:
                subscriber.send_prepared(Frames(lines), gathered)
        if lines and subscriber.backlogged():
            return False
        return caught_up or replay.cursor >= self._last_seq()


def _close(reader: Iterator[tuple[int, bytes]]) -> None:
    close = getattr(reader, "close", None)
    if close is not None:
        close()
