"""
The global cap on live CLI processes.

Each project (an "owner") runs at most one CLI process, and at most
C{max_running} of them may be alive at once across all projects. A process
stays alive between prompts (so the next prompt skips the start-up cost) and
is closed after C{idle_timeout} seconds without work, or earlier when another
project needs its slot.

A slot is in one of three states:

  - C{busy}: the owner is running a prompt;
  - C{idle}: the owner's process is alive and waiting for the next prompt;
  - C{closing}: we asked the owner to end its process (idle timeout or
    eviction) and wait for it to report L{Supervisor.exited}.

A closing slot still counts as live: the count of live processes never
exceeds C{max_running}, even while one is being torn down.

Waiters are served first come, first served across projects. A waiter
whose own previous process is still closing cannot take a new slot before
that process is gone (one process per project); it keeps its place in the
line and the waiters behind it are served meanwhile.

A slot stands for the project's right to one live process, not for one
process id: an owner that replaces its process while busy (a prompt needs
different start-up flags) keeps its slot, starts the new process only after
the old one is gone, and does not report L{Supervisor.exited} in between.

The supervisor calls C{owner.close_process()} synchronously from inside its
own methods (L{Supervisor.release}, L{Supervisor.acquire}, a timer) and
fires grant Deferreds synchronously too; both may re-enter the supervisor,
so state is always updated before either happens.
"""

from __future__ import annotations

from attrs import define
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.logger import Logger

from claudews.interfaces import DelayedCall, ReactorTime, SlotOwner

_log = Logger()

BUSY = "busy"
IDLE = "idle"
CLOSING = "closing"


@define
class _Slot:
    state: str
    idle_since: float = 0.0
    timer: DelayedCall | None = None

    def cancel_timer(self) -> None:
        if self.timer is not None:
            if self.timer.active():
                self.timer.cancel()
            self.timer = None


class Supervisor:
    """
    Hands out slots for CLI processes, at most C{max_running} at a time.

    @ivar live: the number of slots held (busy, idle or closing).
    @ivar waiting: the number of owners waiting for a slot.
    """

    def __init__(
        self, max_running: int, idle_timeout: float, reactor: ReactorTime
    ) -> None:
        if max_running < 1:
            raise ValueError("max_running must be at least 1")
        self._reactor = reactor
        self._max = max_running
        self._idle_timeout = idle_timeout
        self._slots: dict[SlotOwner, _Slot] = {}
        # An insertion-ordered dict is the FIFO line with O(1) removal.
        self._waiters: dict[SlotOwner, Deferred[None]] = {}
        self._stopped = False

    @property
    def live(self) -> int:
        return len(self._slots)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def holds(self, owner: SlotOwner) -> bool:
        """
        Whether C{owner} holds a slot, busy, idle or closing.
        """
        return owner in self._slots

    def state(self, owner: SlotOwner) -> str | None:
        """
        C{"busy"}, C{"idle"}, C{"closing"}, or C{None} without a slot.
        """
        slot = self._slots.get(owner)
        return None if slot is None else slot.state

    def acquire(self, owner: SlotOwner) -> Deferred[None]:
        """
        Wait until C{owner} may run its process for a prompt.

        An owner that holds a busy or idle slot keeps it (its process is
        reused). Otherwise it gets a free slot, or waits in line; while it
        waits, the longest-idle process of another project is closed to
        make room.

        @return: a Deferred firing with C{None} once granted; cancelling it
            leaves the line. After L{stop} it fails with L{CancelledError}.
        @raise RuntimeError: C{owner} is already waiting. A project runs one
            prompt at a time, so a second acquire before the first fired is a
            bug in the caller, and silently queueing it twice would hand it
            two slots.
        """
        if self._stopped:
            return fail(CancelledError("the supervisor is stopped"))
        if owner in self._waiters:
            raise RuntimeError(f"{owner!r} is already waiting for a slot")
        if self._granted_at_once(owner):
            return succeed(None)
        return self._wait(owner)

    def _granted_at_once(self, owner: SlotOwner) -> bool:
        """
        Make C{owner}'s slot busy if it may run without waiting: it holds a
        live slot already, or one is free and nobody able to take it waits.
        """
        slot = self._slots.get(owner)
        if slot is not None and slot.state != CLOSING:
            slot.cancel_timer()
            # Not logged: it is every prompt of a project whose CLI runs,
            # and twistd's log writes debug lines too.
            slot.state = BUSY
            return True
        if slot is None and len(self._slots) < self._max and not self._eligible():
            self._slots[owner] = _Slot(BUSY)
            _log.debug("{owner} starts a process", owner=owner)
            return True
        return False

    def _wait(self, owner: SlotOwner) -> Deferred[None]:
        """
        Put C{owner} at the end of the line and make room for it.
        """
        d: Deferred[None] = Deferred(lambda _: self._leave(owner))
        self._waiters[owner] = d
        _log.info(
            "{owner} waits for a process slot ({live} live, {waiting} waiting)",
            owner=owner,
            live=len(self._slots),
            waiting=len(self._waiters),
        )
        self._pump()
        return d

    def release(self, owner: SlotOwner) -> None:
        """
        C{owner}'s prompt finished; its process stays alive, idle.

        When others are waiting and no slot is already on its way to them
        (free, or another process closing), this process is closed at once
        and its slot goes to the head of the line: a project with more
        prompts queued calls L{acquire} again and takes its turn behind them.
        """
        slot = self._slots.get(owner)
        if slot is None or slot.state != BUSY:
            return
        slot.state = IDLE
        slot.idle_since = self._reactor.seconds()
        if not self._stopped:
            slot.timer = self._reactor.callLater(
                self._idle_timeout, self._idle_expired, owner
            )
        self._pump()

    def exited(self, owner: SlotOwner) -> None:
        """
        C{owner}'s process is gone (closed, crashed or killed): free its slot,
        whatever its state, for the first waiter.
        """
        slot = self._slots.pop(owner, None)
        if slot is None:
            return
        slot.cancel_timer()
        if slot.state == BUSY:
            _log.info("{owner}'s process exited while busy", owner=owner)
        self._pump()

    def forget(self, owner: SlotOwner) -> None:
        """
        C{owner} is deleted: take it out of the line, failing its Deferred
        with L{CancelledError}. Its slot, if any, is freed by L{exited} once
        the owner has ended its process.
        """
        d = self._waiters.get(owner)
        if d is not None:
            d.cancel()

    def stop(self) -> None:
        """
        Grant nothing more: cancel idle timers and fail every waiter with
        L{CancelledError}. Ending the processes is the owners' business.
        """
        self._stopped = True
        for slot in self._slots.values():
            slot.cancel_timer()
        for d in list(self._waiters.values()):
            d.cancel()

    def _leave(self, owner: SlotOwner) -> None:
        # The Deferred's canceller; Deferred itself errbacks with
        # CancelledError after this returns.
        self._waiters.pop(owner, None)

    def _eligible(self) -> list[SlotOwner]:
        """
        Waiters able to take a slot now, in line order: those whose own
        previous process is not still closing.
        """
        return [o for o in self._waiters if o not in self._slots]

    def _pump(self) -> None:
        """
        Give free slots to waiters in line order, then close idle processes
        until every waiter has a slot coming: one free now or one closing.
        """
        # Each step re-reads the state: a grant callback or close_process()
        # may have re-entered and changed it.
        self._grant_free_slots()
        self._evict_for_waiters()

    def _grant_free_slots(self) -> None:
        while not self._stopped and len(self._slots) < self._max:
            eligible = self._eligible()
            if not eligible:
                break
            owner = eligible[0]
            d = self._waiters.pop(owner)
            self._slots[owner] = _Slot(BUSY)
            _log.info("{owner} gets a process slot", owner=owner)
            d.callback(None)

    def _evict_for_waiters(self) -> None:
        while not self._stopped:
            free = self._max - len(self._slots)
            closing = sum(1 for s in self._slots.values() if s.state == CLOSING)
            # Closing no more than the line needs: each restart costs the
            # evicted project a --resume start-up later.
            if free + closing >= len(self._waiters):
                break
            idle = [(s.idle_since, o) for o, s in self._slots.items() if s.state == IDLE]
            if not idle:
                break
            # min() keeps the first of equal times: the one idle longest in
            # insertion order.
            victim = min(idle, key=lambda pair: pair[0])[1]
            self._close(victim, "evicted for a waiting project")

    def _idle_expired(self, owner: SlotOwner) -> None:
        slot = self._slots.get(owner)
        if slot is None or slot.state != IDLE:
            return
        slot.timer = None
        self._close(owner, "idle timeout")

    def _close(self, owner: SlotOwner, why: str) -> None:
        slot = self._slots[owner]
        slot.cancel_timer()
        slot.state = CLOSING
        _log.info("closing {owner}'s process: {why}", owner=owner, why=why)
        try:
            owner.close_process()
        except Exception:
            # The slot stays closing: only exited() may free it, or the cap
            # could be exceeded by a process that is in fact still alive.
            _log.failure("{owner}.close_process() failed", owner=owner)

