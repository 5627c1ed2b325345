"""
Tests for L{claudews.proctree}.

The timing of L{end_tree} is tested on a fake clock with a fake process
table; a few tests at the end run real process trees on the real reactor.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid

import psutil
import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from claudews.proctree import (
    MARKER_ENV,
    SystemProcessTable,
    SystemTrees,
    at_once,
    end_tree,
    find_marked,
    marker_of,
    new_session_argv,
    reactor_threads,
    tree,
)


class FakeProcess:
    """A process of L{FakeTable}: dies on the signals it does not resist."""

    def __init__(self, table, pid, *, pgid=None, marker=None, parent=None,
                 ignores_term=False, kills_needed=1, exit_delay=None):
        self.table = table
        self.pid = pid
        self.pgid = pid if pgid is None else pgid
        self.marker = marker
        self.parent = parent
        self.ignores_term = ignores_term
        self.kills_needed = kills_needed
        self.exit_delay = exit_delay
        self.alive = True
        self.signals: list[int] = []
        self.born = table.clock.seconds()

    def receive(self, signum):
        self.signals.append(signum)
        if signum == signal.SIGTERM and self.ignores_term:
            return
        if signum == signal.SIGKILL:
            self.kills_needed -= 1
            if self.kills_needed > 0:
                return
        if self.exit_delay is None:
            self.die()
        else:
            self.table.clock.callLater(self.exit_delay, self.die)

    def die(self):
        self.alive = False
        for process in self.table.processes:
            if process.parent is self:
                process.parent = None

    def __repr__(self):
        return "<FakeProcess {}>".format(self.pid)


class FakeTable:
    """A L{ProcessTable} over L{FakeProcess}es."""

    def __init__(self, clock):
        self.clock = clock
        self.processes: list[FakeProcess] = []
        self.groupSignals: list[tuple[int, int]] = []

    def add(self, pid, **kw):
        process = FakeProcess(self, pid, **kw)
        self.processes.append(process)
        return process

    def lookup(self, pid):
        for process in self.processes:
            if process.pid == pid:
                return process
        return None

    def pids(self):
        return [p.pid for p in self.processes if p.alive]

    def now(self):
        return self.clock.seconds()

    def scan(self, roots, group, marker, among=None, born_by=None, marked_by=None, skip=()):
        roots = list(roots)

        def looked_at(p):
            return (p.alive and (among is None or p.pid in among)
                    and (born_by is None or p.born <= born_by))

        def seed(p):
            if p in roots:
                return True
            if marked_by is not None and p.born > marked_by:
                return False
            return ((group is not None and p.pgid == group)
                    or (marker is not None and p.marker == marker))

        found = [p for p in self.processes if looked_at(p) and seed(p) and p not in skip]
        grew = True
        while grew:
            grew = False
            for p in self.processes:
                if p not in found and p.parent in found and looked_at(p) and p not in skip:
                    found.append(p)
                    grew = True
        return found

    def signal(self, process, signum):
        if process.alive:
            process.receive(signum)

    def killpg(self, pgid, signum):
        self.groupSignals.append((pgid, signum))
        for process in self.processes:
            if process.alive and process.pgid == pgid:
                process.receive(signum)

    def pgid(self, process):
        return process.pgid


class EndTreeTimingTests(SynchronousTestCase):
    """L{end_tree}'s escalation, on a fake clock and a fake process table."""

    def setUp(self):
        self.clock = Clock()
        self.table = FakeTable(self.clock)

    def endTree(self, pid, marker, **kw):
        kw.setdefault("grace", 5.0)
        return end_tree(pid, marker, reactor=self.clock, table=self.table, **kw)

    def test_nothing_to_end_fires_at_once(self):
        """With no process found, the Deferred fires at once with nothing killed."""
        d = self.endTree(100, "m")
        self.assertEqual(self.successResultOf(d), [])

    def test_term_suffices_for_a_well_behaved_tree(self):
        """Group, descendants and marked processes get SIGTERM; no SIGKILL is needed."""
        cli = self.table.add(100, marker="m")
        tool = self.table.add(200, parent=cli, exit_delay=1.0)
        orphan = self.table.add(300, marker="m", pgid=300, exit_delay=2.0)
        d = self.endTree(100, "m")
        self.assertEqual(self.table.groupSignals, [(100, signal.SIGTERM)])
        self.assertNoResult(d)
        self.clock.pump([0.1] * 25)
        self.assertEqual(self.successResultOf(d), [])
        self.assertFalse(cli.alive or tool.alive or orphan.alive)
        self.assertEqual(tool.signals, [signal.SIGTERM])
        self.assertEqual(orphan.signals, [signal.SIGTERM])

    def test_descendants_are_found_before_the_parent_dies(self):
        """A child of the root is signalled even though the root dies first."""
        cli = self.table.add(100)
        child = self.table.add(200, pgid=200, parent=cli, exit_delay=1.0)
        d = self.endTree(100, None)
        # The root died of the group signal; its child is now an orphan.
        self.assertFalse(cli.alive)
        self.assertIsNone(child.parent)
        self.assertIn(signal.SIGTERM, child.signals)
        self.clock.pump([0.1] * 15)
        self.assertEqual(self.successResultOf(d), [])

    def test_only_older_spares_what_the_marker_finds_started_since(self):
        """
        Ending a stopped prompt's tools while the CLI lives on: a tool of the
        next prompt (same marker, started meanwhile) is left alone, while a
        child that a tool being ended starts meanwhile is ended too.
        """
        cli = self.table.add(100, marker="m")
        stubborn = self.table.add(200, marker="m", pgid=200, ignores_term=True)
        d = self.endTree(None, "m", grace=2.0, exclude=[cli], only_older=True)
        self.assertEqual(stubborn.signals, [signal.SIGTERM])
        self.clock.advance(0.5)
        next_tool = self.table.add(300, marker="m", pgid=300, parent=cli)
        spawned = self.table.add(400, marker="m", pgid=200, parent=stubborn)
        self.clock.pump([0.1] * 30)
        self.assertEqual(next_tool.signals, [])
        self.assertTrue(next_tool.alive)
        self.assertIn(signal.SIGTERM, spawned.signals)
        self.assertEqual(self.successResultOf(d), [stubborn])

    def test_without_only_older_what_starts_meanwhile_is_ended(self):
        """The CLI's own ending (it is gone) takes whatever carries its marker."""
        self.table.add(200, marker="m", pgid=200, ignores_term=True)
        d = self.endTree(None, "m", grace=2.0)
        self.clock.advance(0.5)
        late = self.table.add(300, marker="m", pgid=300)
        self.clock.pump([0.1] * 30)
        self.assertIn(signal.SIGTERM, late.signals)
        self.successResultOf(d)

    def test_kill_after_grace_for_what_ignores_term(self):
        """A process ignoring SIGTERM gets SIGKILL once grace has passed, not before."""
        self.table.add(100, marker="m")
        stubborn = self.table.add(200, marker="m", pgid=200, ignores_term=True)
        d = self.endTree(100, "m", grace=2.0)
        self.clock.pump([0.1] * 19)
        self.assertNoResult(d)
        self.assertEqual(stubborn.signals, [signal.SIGTERM])
        self.clock.pump([0.1] * 2)
        self.assertEqual(self.successResultOf(d), [stubborn])
        self.assertEqual(stubborn.signals, [signal.SIGTERM, signal.SIGKILL])

    def test_kill_is_repeated_until_gone(self):
        """SIGKILL is sent again on each poll while the process is still there."""
        stubborn = self.table.add(200, marker="m", ignores_term=True, kills_needed=3)
        d = self.endTree(None, "m", grace=1.0)
        self.clock.pump([0.1] * 20)
        self.assertEqual(self.successResultOf(d), [stubborn])
        self.assertEqual(stubborn.signals.count(signal.SIGKILL), 3)

    def test_processes_appearing_during_grace_are_terminated(self):
        """A marked process started after the first look still gets SIGTERM."""
        self.table.add(100, marker="m", exit_delay=1.0)
        d = self.endTree(100, "m")
        self.clock.advance(0.1)
        late = self.table.add(300, marker="m", pgid=300, exit_delay=0.5)
        self.clock.advance(0.1)
        self.assertEqual(late.signals, [signal.SIGTERM])
        self.clock.pump([0.1] * 15)
        self.assertEqual(self.successResultOf(d), [])

    def test_unkillable_process_is_given_up_with_an_error(self):
        """A process surviving SIGKILL is logged as an error and the Deferred fires anyway."""
        stuck = self.table.add(200, marker="m", ignores_term=True, kills_needed=10**6)
        with capturedLogs() as events:
            d = self.endTree(None, "m", grace=1.0, kill_timeout=2.0)
            self.clock.pump([0.1] * 31)
        self.assertEqual(self.successResultOf(d), [stuck])
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["pids"], [200])
        self.assertFalse(self.clock.getDelayedCalls())

    def test_excluded_process_is_never_signalled(self):
        """An excluded root keeps running: no group signal, no own signal; its tools end."""
        cli = self.table.add(100, marker="m")
        tool = self.table.add(200, marker="m", pgid=200, parent=cli)
        groupChild = self.table.add(201, marker="m", parent=cli)
        d = self.endTree(100, "m", exclude=[cli])
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), [])
        self.assertEqual(self.table.groupSignals, [])
        self.assertEqual(cli.signals, [])
        self.assertTrue(cli.alive)
        self.assertFalse(tool.alive or groupChild.alive)

    def test_marker_only(self):
        """With pid None, only the marked processes (and their children) are ended."""
        marked = self.table.add(100, marker="m")
        child = self.table.add(101, parent=marked)
        other = self.table.add(500, marker="other")
        d = self.endTree(None, "m")
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), [])
        self.assertEqual(self.table.groupSignals, [])
        self.assertFalse(marked.alive or child.alive)
        self.assertTrue(other.alive)

    def test_cancel_stops_polling(self):
        """Cancelling the Deferred stops the polling."""
        self.table.add(100, ignores_term=True)
        d = self.endTree(100, None)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertFalse(self.clock.getDelayedCalls())


class Threads:
    """
    An L{InThread} whose calls wait until the test runs them, as they
    would in a busy thread pool.
    """

    def __init__(self):
        self.waiting = []

    def __call__(self, f):
        d = Deferred()
        self.waiting.append((f, d))
        return d

    def run(self):
        """Run the oldest waiting call, and fire its Deferred."""
        f, d = self.waiting.pop(0)
        try:
            result = f()
        except Exception:
            d.errback()
        else:
            d.callback(result)


class FailingTable(FakeTable):
    """A L{FakeTable} whose first C{failures} scans raise."""

    failures = 0

    def scan(self, *args, **kw):
        if self.failures:
            self.failures -= 1
            raise OSError("cannot read /proc")
        return super().scan(*args, **kw)


class ThreadedLookTests(SynchronousTestCase):
    """
    The looks at the process table run through an L{InThread}; what is
    decided from them, on the reactor thread once they come back.
    """

    def setUp(self):
        self.clock = Clock()
        self.table = FailingTable(self.clock)
        self.threads = Threads()

    def endTree(self, pid, marker, **kw):
        kw.setdefault("grace", 5.0)
        return end_tree(pid, marker, reactor=self.clock, table=self.table,
                        in_thread=self.threads, **kw)

    def test_tree_never_holds_a_process_started_after_the_call(self):
        """A process started while the look waits for a thread is not in the tree."""
        cli = self.table.add(100, marker="m")
        trees = SystemTrees(self.clock, self.table, in_thread=self.threads)
        d = trees.tree(100, "m")
        tool = self.table.add(300, marker="m", pgid=300, parent=cli)
        self.assertNoResult(d)
        self.threads.run()
        self.assertEqual(self.successResultOf(d), [cli])
        self.assertIn(tool, self.table.scan([cli], 100, "m"))

    def test_a_baseline_is_looked_at_only_when_asked(self):
        """Noting it reads nothing but the pids; the look, later, finds what ran then and still runs."""
        cli = self.table.add(100, marker="m")
        mcp = self.table.add(200, marker="m", parent=cli)
        old_tool = self.table.add(210, marker="m", pgid=210)
        trees = SystemTrees(self.clock, self.table, in_thread=self.threads)
        look = trees.baseline(100, "m")
        self.clock.advance(5)
        self.table.add(300, marker="m", pgid=300, parent=cli)
        old_tool.die()
        self.assertEqual(self.threads.waiting, [])
        d = look()
        self.threads.run()
        self.assertEqual(self.successResultOf(d), [cli, mcp])

    def test_a_baseline_pid_reused_since_is_not_in_it(self):
        """A pid of the baseline that names a process started after it is someone else's."""
        cli = self.table.add(100, marker="m")
        gone = self.table.add(200, marker="m", pgid=200)
        trees = SystemTrees(self.clock, self.table, in_thread=self.threads)
        look = trees.baseline(100, "m")
        gone.die()
        self.clock.advance(5)
        self.table.add(200, marker="m", pgid=200)
        d = look()
        self.threads.run()
        self.assertEqual(self.successResultOf(d), [cli])

    def test_a_baseline_that_cannot_list_the_pids_fails_when_looked_at(self):
        """The failure is the look's Deferred's, not the caller's."""
        def broken():
            raise OSError("no /proc")

        self.table.pids = broken
        trees = SystemTrees(self.clock, self.table, in_thread=self.threads)
        look = trees.baseline(100, "m")
        self.failureResultOf(look(), OSError)

    def test_tree_that_cannot_list_the_pids_fails(self):
        """A failure on the reactor thread is the Deferred's, not the caller's."""
        def broken():
            raise OSError("no /proc")

        self.table.pids = broken
        trees = SystemTrees(self.clock, self.table, in_thread=self.threads)
        self.failureResultOf(trees.tree(100, "m"), OSError)
        self.assertEqual(self.threads.waiting, [])

    def test_no_signal_before_the_first_look_comes_back(self):
        """Signals wait for the snapshot: none while the thread looks."""
        cli = self.table.add(100, marker="m")
        d = self.endTree(100, "m")
        self.assertEqual((self.table.groupSignals, cli.signals), ([], []))
        self.threads.run()
        self.assertEqual(self.table.groupSignals, [(100, signal.SIGTERM)])
        self.assertFalse(cli.alive)
        self.clock.advance(0.1)
        self.threads.run()
        self.assertEqual(self.successResultOf(d), [])

    def test_a_root_reaped_while_looking_gets_no_group_signal(self):
        """Its number may name another group by then: only what the look found is signalled."""
        cli = self.table.add(100, marker="m")
        tool = self.table.add(200, marker="m", parent=cli)
        self.endTree(100, "m")
        cli.die()
        self.table.processes.remove(cli)
        self.threads.run()
        self.assertEqual(self.table.groupSignals, [])
        self.assertEqual(tool.signals, [signal.SIGTERM])

    def test_cancel_while_looking_signals_nothing(self):
        """A look that comes back after a cancel is ignored."""
        cli = self.table.add(100, marker="m")
        d = self.endTree(100, "m")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.threads.run()
        self.assertEqual((self.table.groupSignals, cli.signals), ([], []))
        self.assertFalse(self.clock.getDelayedCalls())

    def test_a_failed_look_is_logged_and_tried_again(self):
        """The group is signalled anyway; the next look finds the rest."""
        cli = self.table.add(100, marker="m")
        orphan = self.table.add(300, marker="m", pgid=300)
        self.table.failures = 1
        d = self.endTree(100, "m")
        self.threads.run()
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertFalse(cli.alive)
        self.assertEqual(orphan.signals, [])
        self.clock.advance(0.1)
        self.threads.run()
        self.assertEqual(orphan.signals, [signal.SIGTERM])
        self.clock.advance(0.1)
        self.threads.run()
        self.assertEqual(self.successResultOf(d), [])

    def test_looks_that_keep_failing_give_up_in_time(self):
        """It always fires: after the grace and the kill timeout at the latest."""
        self.table.add(100, marker="m")
        self.table.failures = 10**6
        d = end_tree(100, "m", reactor=self.clock, table=self.table, grace=1.0,
                     kill_timeout=2.0)
        self.clock.pump([0.1] * 29)
        self.assertNoResult(d)
        self.clock.pump([0.1] * 2)
        self.assertEqual(self.successResultOf(d), [])
        self.assertFalse(self.clock.getDelayedCalls())
        self.flushLoggedErrors(OSError)

    def test_a_clock_has_no_threads(self):
        """Without a thread pool (a Clock), looks run at once."""
        self.assertIs(reactor_threads(self.clock), at_once)

    def test_the_reactors_pool_runs_one_look_at_a_time(self):
        """The next call goes to the pool once the one before has come back."""
        reactor = ThreadedReactor()
        in_thread = reactor_threads(reactor)
        first, second = in_thread(lambda: 1), in_thread(lambda: 2)
        self.assertEqual(len(reactor.pool.calls), 1)
        reactor.pool.run()
        self.assertEqual(self.successResultOf(first), 1)
        self.assertEqual(len(reactor.pool.calls), 1)
        reactor.pool.run()
        self.assertEqual(self.successResultOf(second), 2)


class FakePool:
    """A thread pool whose calls run when the test says."""

    def __init__(self):
        self.calls = []

    def callInThreadWithCallback(self, onResult, f, *args, **kw):
        self.calls.append((onResult, f, args, kw))

    def run(self):
        onResult, f, args, kw = self.calls.pop(0)
        onResult(True, f(*args, **kw))


@implementer(IReactorThreads)
class ThreadedReactor:
    """The thread part of a reactor, over a L{FakePool}."""

    def __init__(self):
        self.pool = FakePool()

    def getThreadPool(self):
        return self.pool

    def callFromThread(self, f, *args, **kw):
        f(*args, **kw)


# Real processes.  A parent spawns one child per spec ("group": same process
# group; "session": its own session; "+ignore-term": ignores SIGTERM), each
# child reports its pid once ready, then the parent reports and either
# sleeps ("stay") or exits at once ("exit"), orphaning its children.

_KID = r"""\
import os, signal, sys, time
if "ignore-term" in sys.argv[1]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.write(1, b"kid %d %s\n" % (os.getpid(), sys.argv[1].encode()))
time.sleep(600)
"""

_PARENT = r"""\
import os, subprocess, sys, time
mode, kid = sys.argv[1], sys.argv[2]
for spec in sys.argv[3:]:
    subprocess.Popen([sys.executable, "-c", kid, spec],
                     start_new_session="session" in spec)
os.write(1, b"parent %d\n" % os.getpid())
if mode == "exit":
    os._exit(0)
time.sleep(600)
"""


class Family:
    """A real process tree with a fresh marker; C{close} leaves nothing behind."""

    def __init__(self, mode, *specs):
        self.marker = "test-" + uuid.uuid4().hex
        env = dict(os.environ, **{MARKER_ENV: self.marker})
        self.popen = subprocess.Popen(
            new_session_argv([sys.executable, "-c", _PARENT, mode, _KID, *specs]),
            env=env, stdout=subprocess.PIPE,
        )
        self.pid = self.popen.pid
        self.parent = psutil.Process(self.pid)
        self.kids: list[psutil.Process] = []
        try:
            bySpec = {}
            for line in _read_lines(self.popen.stdout.fileno(), 1 + len(specs)):
                role, pid, *spec = line.split()
                if role == "kid":
                    bySpec[spec[0]] = psutil.Process(int(pid))
                    self.kids.append(bySpec[spec[0]])
            self.kids = [bySpec[spec] for spec in specs]
        except BaseException:
            self.close()
            raise

    def everyone(self):
        return [self.parent, *self.kids]

    def close(self):
        # By marker as well: a kid whose ready line was never read still goes.
        for process in [*self.everyone(), *find_marked([self.marker])]:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        self.popen.stdout.close()
        self.popen.wait()


def _read_lines(fd, count, timeout=10.0):
    """Read C{count} lines from C{fd}, failing rather than hanging."""
    deadline = time.monotonic() + timeout
    data = b""
    while data.count(b"\n") < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise AssertionError("no ready line within {}s: {!r}".format(timeout, data))
        chunk = os.read(fd, 4096)
        if not chunk:
            raise AssertionError("pipe closed early: {!r}".format(data))
        data += chunk
    return data.decode().splitlines()


def _ended(pid, marker, **kw):
    """L{end_tree} on the real reactor, failing rather than hanging on a bug."""
    from twisted.internet import reactor

    return end_tree(pid, marker, reactor=reactor, **kw).addTimeout(30, reactor)


def _gone(process):
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _survivors(family):
    return [p.pid for p in family.everyone() if not _gone(p)]


@pytest_twisted.inlineCallbacks
def test_real_tree_ends_on_sigterm():
    """A well-behaved tree, with a child in its own session, ends without SIGKILL."""
    family = Family("stay", "group", "session")
    try:
        killed = yield _ended(family.pid, family.marker, grace=5.0)
        assert killed == []
        assert _survivors(family) == []
    finally:
        family.close()


@pytest_twisted.inlineCallbacks
def test_real_child_ignoring_sigterm_is_killed_after_grace():
    """A child that ignores SIGTERM is killed once the grace time is over."""
    family = Family("stay", "group", "session+ignore-term")
    try:
        killed = yield _ended(family.pid, family.marker, grace=0.5)
        assert [p.pid for p in killed] == [family.kids[1].pid]
        assert _survivors(family) == []
    finally:
        family.close()


@pytest_twisted.inlineCallbacks
def test_real_orphan_in_own_session_is_found_by_marker():
    """A child in its own session outliving its parent is no descendant, yet ends."""
    family = Family("exit", "session")
    try:
        # Wait for the parent's exit without reaping it, as Twisted would not
        # have reaped the CLI yet either.
        os.waitid(os.P_PID, family.pid, os.WEXITED | os.WNOWAIT)
        orphan = family.kids[0]
        assert orphan.ppid() != family.pid
        assert orphan not in tree(family.pid, None)
        assert orphan in tree(family.pid, family.marker)
        killed = yield _ended(family.pid, family.marker, grace=5.0)
        assert killed == []
        assert _gone(orphan)
    finally:
        family.close()


@pytest_twisted.inlineCallbacks
def test_real_exclude_keeps_the_cli_alive():
    """Excluding the CLI ends its tools, in its group or not, and spares the CLI."""
    family = Family("stay", "group", "session")
    try:
        killed = yield _ended(family.pid, family.marker, grace=5.0, exclude=[family.parent])
        assert killed == []
        assert all(_gone(kid) for kid in family.kids)
        assert not _gone(family.parent)
    finally:
        family.close()


@pytest_twisted.inlineCallbacks
def test_real_marker_alone_ends_everything():
    """With pid None, the marker alone finds and ends the whole family."""
    family = Family("stay", "group", "session")
    try:
        assert {p.pid for p in find_marked([family.marker])} == {
            p.pid for p in family.everyone()
        }
        killed = yield _ended(None, family.marker, grace=5.0)
        assert killed == []
        assert _survivors(family) == []
    finally:
        family.close()


@pytest.fixture
def clocked():
    """The real table, a time on its clock, then a real tree started after it."""
    table = SystemProcessTable()
    before = table.now()
    if before is None:
        pytest.skip("no boot-time clock here")
    family = Family("stay", "session")
    yield table, before, family
    family.close()


def test_real_scan_finds_processes_marked_since_only_as_descendants(clocked):
    """marked_by: a carrier of the marker started after it is not found by the marker."""
    table, before, family = clocked
    assert table.scan([], None, family.marker, marked_by=before - 1.0) == []
    found = table.scan([family.parent], None, family.marker, marked_by=before - 1.0)
    assert {p.pid for p in found} == {p.pid for p in family.everyone()}


def test_real_scan_leaves_out_processes_started_after_born_by(clocked):
    """A pid of C{among} whose process started after C{born_by} is not looked at."""
    table, before, family = clocked
    among = table.pids()
    after = table.now()
    found = table.scan([], None, family.marker, among, after)
    assert family.pid in {p.pid for p in found}
    assert table.scan([], None, family.marker, among, before - 1.0) == []


class _ThreadNoting(SystemProcessTable):
    """The real process table, noting the thread of each scan."""

    def __init__(self):
        self.threads = []

    def scan(self, *args, **kw):
        self.threads.append(threading.get_ident())
        return super().scan(*args, **kw)


@pytest_twisted.inlineCallbacks
def test_real_trees_are_looked_at_off_the_reactor_thread():
    """With the reactor's thread pool, the scans of tree and end run in another thread."""
    from twisted.internet import reactor

    family = Family("stay", "session")
    try:
        table = _ThreadNoting()
        trees = SystemTrees(reactor, table)
        found = yield trees.tree(family.pid, family.marker).addTimeout(30, reactor)
        assert {p.pid for p in found} == {p.pid for p in family.everyone()}
        killed = yield trees.end(family.pid, family.marker, grace=5.0).addTimeout(30, reactor)
        assert killed == []
        assert _survivors(family) == []
        assert len(table.threads) >= 2
        assert threading.get_ident() not in table.threads
    finally:
        family.close()


class SystemTests(SynchronousTestCase):
    """The real process table: trampoline, tree and marker lookups."""

    def test_new_session_argv_makes_the_program_a_session_leader(self):
        """The spawned pid is the program's own pid, process group and session."""
        proc = subprocess.Popen(
            new_session_argv([sys.executable, "-c",
                              "import os; print(os.getpid(), os.getpgid(0), os.getsid(0))"]),
            stdout=subprocess.PIPE,
        )
        out, _ = proc.communicate(timeout=10)
        self.assertEqual(out.split(), [str(proc.pid).encode()] * 3)

    def test_new_session_argv_restores_sigpipe(self):
        """The program does not inherit the trampoline's ignored SIGPIPE."""
        proc = subprocess.Popen(
            new_session_argv(["sh", "-c", "grep SigIgn /proc/$$/status"]),
            stdout=subprocess.PIPE,
        )
        out, _ = proc.communicate(timeout=10)
        ignored = int(out.split()[1], 16)
        self.assertFalse(ignored & (1 << (signal.SIGPIPE - 1)))

    def test_new_session_argv_missing_program_exits_127(self):
        """A program that cannot be run gives exit status 127 and one stderr line."""
        proc = subprocess.Popen(
            new_session_argv(["/nonexistent/claude-xyz", "-p"]), stderr=subprocess.PIPE
        )
        _, err = proc.communicate(timeout=10)
        self.assertEqual(proc.returncode, 127)
        self.assertEqual(len(err.splitlines()), 1)
        self.assertIn(b"/nonexistent/claude-xyz", err)

    def test_tree_excludes_the_caller_and_zombies(self):
        """The calling process is never part of a tree, and a zombie root is not either."""
        self.assertNotIn(os.getpid(), [p.pid for p in tree(os.getpid(), None)])
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        try:
            self.assertEqual(tree(proc.pid, None), [])
        finally:
            proc.wait()

    def test_find_marked_by_value_and_prefix(self):
        """Marked processes are found by exact marker or by prefix, with their marker readable."""
        family = Family("stay")
        self.addCleanup(family.close)
        self.assertEqual([p.pid for p in find_marked([family.marker])], [family.pid])
        self.assertEqual([p.pid for p in find_marked(prefix=family.marker[:20])], [family.pid])
        self.assertEqual(find_marked(["test-unused"]), [])
        self.assertEqual(marker_of(family.parent), family.marker)
