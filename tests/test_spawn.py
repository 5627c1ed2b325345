"""
Tests for claudews.spawn: a CLI started in a thread of the reactor's pool,
on the real reactor, with real processes.
"""

import json
import os
import signal
import sys
import tempfile

import pytest
import pytest_twisted
from twisted.internet import defer, protocol

from claudews import spawn
from claudews.proctree import SystemTrees
from claudews.runner import ClaudeProcess

pytestmark = pytest.mark.skipif(
    spawn._libc is None, reason="needs glibc 2.34 or newer (posix_spawn through ctypes)"
)

# Reports what the child sees of itself, then echoes its stdin.
_REPORT = """\
import json, os, signal, sys
fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
print(json.dumps({
    "cwd": os.getcwd(),
    "leader": os.getsid(0) == os.getpid() == os.getpgid(0),
    "fds": fds,
    "env": os.environ.get("SPAWN_TEST"),
}), flush=True)
sys.stdout.write(sys.stdin.read())
sys.stderr.write("to stderr")
sys.exit(3)
"""


class Collector(protocol.ProcessProtocol):
    def __init__(self):
        self.out = b""
        self.err = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.out += data

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        self.ended.callback(reason.value)


def _open_fds():
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def directory():
    path = os.path.realpath(tempfile.mkdtemp(prefix="claudews-spawn-"))
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    yield path, fd
    os.close(fd)
    os.rmdir(path)


def test_the_reactor_can_spawn():
    """The real reactor has what the threaded start needs; a fake one has not."""
    from twisted.internet import reactor
    from twisted.internet.task import Clock

    assert spawn.available(reactor)
    assert not spawn.available(Clock())


@pytest_twisted.inlineCallbacks
def test_a_child_runs_in_the_directory_in_a_session_of_its_own(directory):
    """Entered by descriptor, session leader, stdin/out/err only, its environment."""
    from twisted.internet import reactor

    path, fd = directory
    child = Collector()
    env = dict(os.environ, SPAWN_TEST="yes")
    yield spawn.spawn(reactor, child, [sys.executable, "-c", _REPORT], env, fd)
    child.transport.write(b"echoed\n")
    child.transport.closeStdin()
    reason = yield child.ended
    first, rest = child.out.split(b"\n", 1)
    seen = json.loads(first)
    assert seen["cwd"] == path
    assert seen["leader"] is True
    assert seen["fds"][:3] == [0, 1, 2] and len(seen["fds"]) == 4  # 4th: listdir's own
    assert seen["env"] == "yes"
    assert rest == b"echoed\n"
    assert child.err == b"to stderr"
    assert reason.exitCode == 3


@pytest_twisted.inlineCallbacks
def test_signals_this_process_ignores_are_not_ignored_in_the_child(directory):
    """Python ignores SIGPIPE and SIGXFSZ; a CLI must get them at their defaults."""
    from twisted.internet import reactor

    _, fd = directory
    ignored_here = [s for s in (signal.SIGPIPE, signal.SIGXFSZ)
                    if signal.getsignal(s) == signal.SIG_IGN]
    assert ignored_here
    child = Collector()
    # grep, not Python (which ignores both itself), reads its own mask.
    yield spawn.spawn(reactor, child, ["grep", "SigIgn", "/proc/self/status"],
                      dict(os.environ), fd)
    yield child.ended
    mask = int(child.out.split()[1], 16)
    for signum in ignored_here:
        assert not mask & (1 << (signum - 1)), signum


@pytest_twisted.inlineCallbacks
def test_the_program_is_looked_up_on_the_childs_path(directory, tmp_path):
    """As execvp in the child's environment would: its PATH, not the server's."""
    from twisted.internet import reactor

    _, fd = directory
    program = tmp_path / "only-here"
    program.write_text("#!/bin/sh\necho found\n")
    program.chmod(0o755)
    child = Collector()
    env = dict(os.environ, PATH=str(tmp_path))
    yield spawn.spawn(reactor, child, ["only-here"], env, fd)
    reason = yield child.ended
    assert child.out == b"found\n"
    assert reason.exitCode in (0, None)


@pytest_twisted.inlineCallbacks
def test_a_program_that_cannot_run_fails_and_leaks_nothing(directory, tmp_path):
    """Missing or not executable: SpawnError, no descriptor left open, never connected."""
    from twisted.internet import reactor

    _, fd = directory
    not_executable = tmp_path / "claude"
    not_executable.write_text("#!/bin/sh\n")
    before = _open_fds()
    for argv in (["/nonexistent/claude"], [str(not_executable)], ["no-such-claude"]):
        child = Collector()
        with pytest.raises(spawn.SpawnError):
            yield spawn.spawn(reactor, child, argv, dict(os.environ, PATH=str(tmp_path)), fd)
        assert child.transport is None
    assert _open_fds() == before


class _Listener:
    def __init__(self):
        self.exits = []
        self.exited = defer.Deferred()

    def cli_message(self, process, message, raw=None):
        pass

    def cli_lines(self, process):
        from contextlib import nullcontext
        return nullcontext()

    def cli_output(self, process, stream, text):
        pass

    def cli_permission(self, process, request_id, request):
        pass

    def cli_exited(self, process, exit_code, signal):
        self.exits.append((exit_code, signal))
        self.exited.callback(None)


@pytest_twisted.inlineCallbacks
def test_a_cli_that_cannot_be_started_says_how_to_install_it(directory, tmp_path):
    """The start fails with the same advice the trampoline gave; the process counts as ended."""
    from twisted.internet import reactor

    _, fd = directory
    listener = _Listener()
    cli = ClaudeProcess(listener, trees=SystemTrees(reactor), reactor=reactor)
    with pytest.raises(OSError) as caught:
        yield cli.spawn(["claude"], "/", {"PATH": str(tmp_path)}, directory=fd)
    assert str(caught.value).startswith("the Claude Code CLI cannot be run (no claude on PATH)")
    assert cli.ended
    yield cli.terminate(1.0)
    assert listener.exits == []


@pytest_twisted.inlineCallbacks
def test_a_cli_ended_while_it_starts_is_ended_once_it_runs(directory):
    """terminate before the start is done: it waits for it, then ends the process."""
    from twisted.internet import reactor

    _, fd = directory
    listener = _Listener()
    cli = ClaudeProcess(listener, trees=SystemTrees(reactor), reactor=reactor)
    started = cli.spawn(
        [sys.executable, "-c", "import time; time.sleep(600)"], "/", dict(os.environ),
        directory=fd,
    )
    ending = cli.terminate(5.0)
    yield started
    yield ending
    assert cli.ended
    assert listener.exits and listener.exits[0][1] == signal.SIGTERM


@pytest_twisted.inlineCallbacks
def test_a_start_given_up_while_in_the_thread_is_ended_once_it_runs(directory, tmp_path, monkeypatch):
    """
    The prompt's wait is cancelled (a cancel, a deletion, a shutdown) while
    posix_spawn is still in the thread: the CLI that comes up after is
    ended and reaped, its marker kept on record until then, and the
    descriptors of the start are all closed.
    """
    import threading

    import psutil
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread

    from claudews.config import ProjectConfig
    from claudews.liveprocess import LiveProcess, StartGate
    from tests.test_liveprocess import FakeSlots, Listener, Owner

    path, _ = directory
    entered, release = threading.Event(), threading.Event()
    pids = []
    real = spawn._spawn_in_thread

    def held(*args):
        entered.set()
        release.wait(30)
        pids.append(real(*args))
        return pids[-1]

    monkeypatch.setattr(spawn, "_spawn_in_thread", held)
    cli = tmp_path / "claude"
    cli.write_text("#!/bin/sh\nexec sleep 600\n")
    cli.chmod(0o755)
    markers = []
    listener = Listener()
    live = LiveProcess(
        path=path, marker_prefix="test-spawn-", owner=Owner(), listener=listener,
        slots=FakeSlots(), trees=SystemTrees(reactor), reactor=reactor,
        config=ProjectConfig(claude_bin=str(cli), kill_grace=2.0, max_line_bytes=1024, env={}),
        environ=dict(os.environ), markers=markers, save=lambda: None,
        session_id=lambda: None,
        confine=lambda: os.open(path, os.O_RDONLY | os.O_DIRECTORY),
        gate=StartGate(reactor),
    )
    listener.live = live
    before = _open_fds()
    waiting = live.ready(())
    # The gate's turn, then the spawn handed to the thread, which holds it.
    assert (yield deferToThread(entered.wait, 30))
    waiting.cancel()
    with pytest.raises(defer.CancelledError):
        yield waiting
    assert len(markers) == 1
    release.set()
    yield live.shutdown()
    [pid] = pids
    assert not psutil.pid_exists(pid)  # ended and reaped: no zombie either
    assert markers == []
    assert _open_fds() == before


def test_relative_path_entries_are_not_searched(tmp_path, monkeypatch):
    """'.' or an empty entry would be the project's directory: only absolute ones count."""
    program = tmp_path / "claude"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    assert spawn.resolve("claude", {"PATH": ".:"}) is None
    assert spawn.resolve("claude", {"PATH": ".:" + str(tmp_path)}) == str(program)


def test_descriptors_for_the_child_are_never_its_stdio_numbers():
    """A pipe end that came out as 0, 1 or 2 (stdio closed) is moved above them."""
    saved = os.dup(0)
    r, w = os.pipe()
    try:
        os.dup2(r, 0)
        opened = []
        moved = spawn._above_stdio(0, opened)
        assert moved > 2 and opened == [moved]
        assert os.get_inheritable(moved) is False
        os.write(w, b"x")
        assert os.read(moved, 1) == b"x"
        os.close(moved)
    finally:
        os.dup2(saved, 0)
        for fd in (saved, r, w):
            os.close(fd)


@pytest_twisted.inlineCallbacks
def test_out_of_descriptors_fails_the_start_and_leaks_nothing(directory, monkeypatch):
    """EMFILE half-way through making the pipes: SpawnError, every one made closed."""
    from twisted.internet import reactor

    _, fd = directory
    real = os.pipe
    made = []

    def pipe():
        if made:
            raise OSError(24, "Too many open files")
        made.append(real())
        return made[-1]

    monkeypatch.setattr(spawn.os, "pipe", pipe)
    before = _open_fds()
    with pytest.raises(spawn.SpawnError):
        yield spawn.spawn(reactor, Collector(), [sys.executable, "-c", ""], dict(os.environ), fd)
    assert _open_fds() == before
