"""
Tests for L{claudews.tap}: the token file, the private data directory,
the start-up log lines and the C{claude --version} probe, on a
L{MemoryReactorClock} that records the processes it is asked to spawn.
"""

import base64
import os
import re
import shutil
import stat
import tempfile

from twisted.internet import protocol
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from claudews import tap
from claudews.config import Settings
from tests.logcapture import LogCapture
from tests.wsmemory import Connection

class TokenFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = os.path.realpath(tempfile.mkdtemp(prefix="claudews-token-"))
        self.addCleanup(shutil.rmtree, self.base, True)
        self.data = os.path.join(self.base, "data")
        self.file = os.path.join(self.data, tap.TOKEN_FILE)

    def settings(self, **overrides: object) -> Settings:
        return Settings(data=self.data, project_roots=(self.base,), **overrides)

    def test_generated_token_holds_at_least_192_random_bits(self) -> None:
        """A generated token is URL-safe base64 of at least 24 random bytes, new each time."""
        token, new = tap.load_token(self.settings())
        self.assertTrue(new)
        self.assertRegex(token, r"^[A-Za-z0-9_-]+$")
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        self.assertGreaterEqual(len(raw) * 8, 192)
        os.remove(self.file)
        self.assertNotEqual(tap.load_token(self.settings())[0], token)

    def test_token_file_and_data_directory_are_private(self) -> None:
        """The token file is created mode 0600 in a data directory of mode 0700."""
        tap.load_token(self.settings())
        self.assertEqual(stat.S_IMODE(os.stat(self.file).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.data).st_mode), 0o700)

    def test_stored_token_is_reused(self) -> None:
        """On the next start the stored token is used again, not regenerated."""
        first, _ = tap.load_token(self.settings())
        self.assertEqual(tap.load_token(self.settings()), (first, False))

    def test_deleting_the_file_rotates_the_token(self) -> None:
        """Deleting DATA/auth_token and restarting gives a new token, stored privately."""
        first, _ = tap.load_token(self.settings())
        os.remove(self.file)
        second, new = tap.load_token(self.settings())
        self.assertTrue(new)
        self.assertNotEqual(first, second)
        self.assertEqual(stat.S_IMODE(os.stat(self.file).st_mode), 0o600)

    def test_empty_readable_file_is_replaced_by_a_private_one(self) -> None:
        """An empty token file of mode 0644 gets a new token and mode 0600."""
        os.makedirs(self.data)
        with open(self.file, "w"):
            pass
        os.chmod(self.file, 0o644)
        token, new = tap.load_token(self.settings())
        self.assertTrue(new)
        self.assertEqual(stat.S_IMODE(os.stat(self.file).st_mode), 0o600)
        with open(self.file) as f:
            self.assertEqual(f.read().strip(), token)

    def test_readable_stored_token_is_made_private(self) -> None:
        """A stored token file other users can read is set to 0600, with a warning."""
        log = LogCapture(self)
        token, _ = tap.load_token(self.settings())
        os.chmod(self.file, 0o644)
        self.assertEqual(tap.load_token(self.settings()), (token, False))
        self.assertEqual(stat.S_IMODE(os.stat(self.file).st_mode), 0o600)
        self.assertEqual(len(log.lines("now mode 0600")), 1)
        self.assertNotIn(token, log.text())

    def test_configured_token_wins_and_writes_no_file(self) -> None:
        """A configured token is used as is and no file is created."""
        self.assertEqual(tap.load_token(self.settings(token="x" * 40)), ("x" * 40, False))
        self.assertFalse(os.path.exists(self.file))

    def test_no_auth_has_no_token(self) -> None:
        """Only the explicit no_auth setting turns authentication off."""
        self.assertEqual(tap.load_token(self.settings(no_auth=True)), (None, False))


class DataDirectoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = os.path.realpath(tempfile.mkdtemp(prefix="claudews-data-"))
        self.addCleanup(shutil.rmtree, self.base, True)
        self.data = os.path.join(self.base, "data")
        self.reactor = MemoryReactorClock()

    def start(self, **overrides: object) -> LogCapture:
        log = LogCapture(self)
        settings = Settings(data=self.data, project_roots=(self.base,), **overrides)
        tap.ClaudewsService(settings, self.reactor)
        return log

    def mode(self) -> int:
        return stat.S_IMODE(os.stat(self.data).st_mode)

    def test_an_open_data_directory_with_state_is_made_0700_with_a_warning(self) -> None:
        """A data directory of mode 0755 that holds state is set to 0700 at start, and the log says so."""
        os.makedirs(os.path.join(self.data, "projects"))
        os.chmod(self.data, 0o755)
        log = self.start()
        self.assertEqual(self.mode(), 0o700)
        [line] = log.lines("data directory")
        self.assertIn(self.data, line)
        self.assertIn("0755", line)
        self.assertIn("0700", line)

    def test_a_fresh_clones_data_directory_is_made_0700_silently(self) -> None:
        """A 0755 data/ holding only the clone's example files and no token is tightened without a warning."""
        os.makedirs(self.data)
        for name in tap.CLONE_FILES:
            with open(os.path.join(self.data, name), "w") as f:
                f.write("# example\n")
        os.chmod(self.data, 0o755)
        log = self.start()
        self.assertEqual(self.mode(), 0o700)
        self.assertEqual(log.lines("data directory"), [])

    def test_an_empty_open_data_directory_is_made_0700_silently(self) -> None:
        """An empty 0755 data directory holds nothing to warn about: made 0700 without a warning."""
        os.makedirs(self.data)
        os.chmod(self.data, 0o755)
        log = self.start()
        self.assertEqual(self.mode(), 0o700)
        self.assertEqual(log.lines("data directory"), [])

    def test_a_token_in_an_open_data_directory_is_warned_about(self) -> None:
        """A 0755 data/ with the clone's files and a token was open with a secret in it: a warning."""
        os.makedirs(self.data)
        with open(os.path.join(self.data, "claudews.example.toml"), "w") as f:
            f.write("# example\n")
        fd = os.open(os.path.join(self.data, tap.TOKEN_FILE), os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"a-token-of-at-least-thirty-two-characters\n")
        os.close(fd)
        os.chmod(self.data, 0o755)
        log = self.start()
        self.assertEqual(self.mode(), 0o700)
        self.assertEqual(len(log.lines("data directory")), 1)

    def test_a_data_directory_open_to_the_group_only_is_made_0700(self) -> None:
        """Group access alone is too much: mode 0750 becomes 0700 as well."""
        os.makedirs(self.data)
        os.chmod(self.data, 0o750)
        self.start(no_auth=True)
        self.assertEqual(self.mode(), 0o700)

    def test_a_private_data_directory_is_left_alone_silently(self) -> None:
        """A data directory of mode 0700 is not touched and nothing is logged about it."""
        os.makedirs(self.data, mode=0o700)
        os.chmod(self.data, 0o700)
        log = self.start()
        self.assertEqual(self.mode(), 0o700)
        self.assertEqual(log.lines("data directory"), [])

    def test_a_missing_data_directory_is_created_0700_without_auth_too(self) -> None:
        """Without a token file to write, the data directory is still created 0700, parents and all."""
        self.data = os.path.join(self.base, "new", "data")
        self.start(no_auth=True)
        self.assertEqual(self.mode(), 0o700)


class _FakeProcess:
    """
    The transport of a process spawned on L{_ProcessReactor}.
    """

    def __init__(self, protocol: protocol.ProcessProtocol) -> None:
        self.protocol = protocol
        self.signals: list[str] = []
        self.ended = False

    def signalProcess(self, signal: str) -> None:
        self.signals.append(signal)

    def prints(self, data: bytes) -> None:
        self.protocol.childDataReceived(1, data)

    def ends(self, code: int | None = 0, signal: int | None = None) -> None:
        if code == 0:
            reason = Failure(ProcessDone(0))
        else:
            reason = Failure(ProcessTerminated(exitCode=code, signal=signal))
        self.ended = True
        self.protocol.processExited(reason)
        self.protocol.processEnded(reason)


class _ProcessReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} that records the processes it is asked to spawn.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[str, list, _FakeProcess]] = []

    def spawnProcess(self, protocol, executable, args=(), env=None, **kwargs):
        process = _FakeProcess(protocol)
        self.spawned.append((executable, list(args), process))
        protocol.makeConnection(process)
        return process


class StartupLogTests(SynchronousTestCase):
    """
    What the service logs once it listens, started on a reactor that
    listens in memory (port 8765 on 0.0.0.0, or the UNIX socket).
    """

    def listening_log(self, **overrides: object) -> LogCapture:
        base = os.path.realpath(tempfile.mkdtemp(prefix="claudews-start-"))
        self.addCleanup(shutil.rmtree, base, True)
        values: dict = dict(
            data=os.path.join(base, "data"), project_roots=(base,), claude_bin=_executable(base)
        )
        values.update(overrides)
        settings = Settings(**values)
        reactor = _ProcessReactor()
        service = tap.ClaudewsService(settings, reactor)
        log = LogCapture(self)
        service.startService()
        [(_, _, process)] = reactor.spawned
        self.addCleanup(_stop, self, service, process, reactor)
        self.stop = lambda: _stop(self, service, process, reactor)
        self.service = service
        return log

    def test_short_configured_token_is_warned_about_without_showing_it(self) -> None:
        """A configured token under 32 characters is logged as weak, and never logged."""
        log = self.listening_log(token="short-Token")
        self.assertEqual(len(log.lines("only 11 characters")), 1)
        self.assertNotIn("short-Token", log.text())

    def test_generated_token_is_logged_once_and_not_called_weak(self) -> None:
        """The first start logs the generated token in the one line that says where to connect."""
        log = self.listening_log()
        lines = log.lines(re.escape(self.service.token))
        self.assertEqual(len(lines), 1)
        self.assertIn("?token=", lines[0])
        self.assertIn("ws://localhost:8765/ws?token=", lines[0])
        # The console's URL carries it after "#": browsers never send that part.
        self.assertIn("http://localhost:8765/#token=" + self.service.token, lines[0])
        self.assertEqual(log.lines("may be guessed"), [])

    def test_a_stored_token_is_not_logged(self) -> None:
        """On a later start the log says where the token is, not what it is."""
        self.listening_log()
        token = self.service.token
        self.stop()
        log = self.listening_log(data=self.service.settings.data)
        self.assertEqual(self.service.token, token)
        [line] = log.lines("claudews listening")
        self.assertIn("token in ", line)
        self.assertNotIn(token, log.text())

    def test_no_auth_is_warned_about(self) -> None:
        """Without authentication the log says so, and where the server listens."""
        log = self.listening_log(no_auth=True)
        self.assertEqual(len(log.lines("Authentication is OFF")), 1)
        self.assertEqual(
            log.lines("claudews listening"),
            ["claudews listening on ws://localhost:8765/ws; console at http://localhost:8765/"],
        )

    def test_unix_socket_allows_the_loopback_hosts_without_a_port(self) -> None:
        """Listening on a UNIX socket, the Host allow-list has the loopback names, no "None" port."""
        log = self.listening_log(listen="unix:/run/claudews.sock")
        hosts = self.service.factory.allowed_hosts()
        self.assertTrue({"localhost", "127.0.0.1", "[::1]"} <= hosts, hosts)
        self.assertFalse([h for h in hosts if h.endswith(":none")], hosts)
        self.assertEqual(len(log.lines("UNIX socket /run/claudews.sock")), 1)
        self.assertEqual(log.lines(r"localhost:(None)?/ws"), [])


def _executable(base: str, name: str = "claude") -> str:
    """
    An executable file in C{base} to stand for the CLI: the service asks
    only about a CLI that is there (L{claudews.clicheck}).
    """
    path = os.path.join(base, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(path, 0o755)
    return path


def _stop(
    testcase: SynchronousTestCase,
    service: tap.ClaudewsService,
    process: "_FakeProcess",
    reactor: MemoryReactorClock,
) -> None:
    """
    Stop C{service}, its C{claude --version} (C{process}) ending as killed.
    """
    if service.running:
        d = service.stopService()
        if not process.ended:
            process.ends(None, 9)
        # Past Autobahn's close handshake timeout, for connections left open.
        reactor.advance(10)
        testcase.successResultOf(d)


class ClaudeVersionTests(SynchronousTestCase):
    """
    server.info's CLI version, as L{tap.ClaudewsService} asks
    C{claude --version} once at start.
    """

    def setUp(self) -> None:
        base = os.path.realpath(tempfile.mkdtemp(prefix="claudews-version-"))
        self.addCleanup(shutil.rmtree, base, True)
        self.reactor = _ProcessReactor()
        self.log = LogCapture(self)
        self.bin = _executable(base)
        settings = Settings(data=os.path.join(base, "data"), project_roots=(base,), claude_bin=self.bin)
        self.service = tap.ClaudewsService(settings, self.reactor)
        self.service.startService()
        self.addCleanup(self.stop)
        [(self.executable, self.args, self.process)] = self.reactor.spawned

    def stop(self) -> None:
        _stop(self, self.service, self.process, self.reactor)

    def info(self) -> dict:
        c = Connection(self.service.factory, token=self.service.token, host="localhost:8765")
        self.assertEqual(c.status, 101, c.response)
        reply = c.request("server.info", 1)
        self.assertIs(reply["ok"], True, reply)
        return reply["result"]["claude"]

    def test_the_configured_cli_is_asked(self) -> None:
        """The version comes from the configured CLI, run as `BIN --version`."""
        self.assertEqual((self.executable, self.args), (self.bin, [self.bin, "--version"]))

    def test_server_info_does_not_wait_for_the_version(self) -> None:
        """While `claude --version` runs, server.info is answered at once with version null."""
        self.assertEqual(self.info(), {"bin": self.bin, "version": None, "problem": None})

    def test_the_version_is_reported_and_logged_once_known(self) -> None:
        """Once the CLI answered, server.info has its version and the log says it in one line."""
        self.process.prints(b"2.0.1 (Claude Code)\n")
        self.assertEqual(self.log.lines("Claude Code CLI:"), [])
        self.process.ends(0)
        self.assertEqual(self.info()["version"], "2.0.1 (Claude Code)")
        self.assertEqual(self.log.lines("Claude Code CLI: "), ["Claude Code CLI: 2.0.1 (Claude Code)"])

    def test_a_failing_cli_leaves_the_version_null(self) -> None:
        """A CLI that exits non-zero gives no version, and a warning."""
        self.process.prints(b"oops\n")
        self.process.ends(1)
        self.assertIsNone(self.info()["version"])
        self.assertEqual(len(self.log.lines("Could not run %s --version" % (self.bin,))), 1)

    def test_a_hung_cli_is_killed_after_the_timeout(self) -> None:
        """`claude --version` that never ends is killed after VERSION_TIMEOUT; the version stays null."""
        self.reactor.advance(tap.VERSION_TIMEOUT - 0.1)
        self.assertEqual(self.process.signals, [])
        self.reactor.advance(0.1)
        self.assertEqual(self.process.signals, ["KILL"])
        self.process.ends(None, 9)
        self.assertIsNone(self.info()["version"])
        self.assertEqual(len(self.log.lines("did not answer within")), 1)
        self.assertEqual(self.log.lines("Could not run"), [])

    def test_stopping_kills_a_running_cli_and_waits_for_it(self) -> None:
        """Shutdown kills a `claude --version` still running and finishes once it has ended."""
        d = self.service.stopService()
        self.assertEqual(self.process.signals, ["KILL"])
        self.assertNoResult(d)
        self.process.ends(None, 9)
        self.successResultOf(d)

    def test_stopping_does_not_wait_for_pipes_a_killed_cli_left_open(self) -> None:
        """Once the killed CLI has exited, shutdown goes on, even while a child of it holds its pipes."""
        d = self.service.stopService()
        reason = Failure(ProcessTerminated(signal=9))
        self.process.protocol.processExited(reason)
        self.successResultOf(d)
        self.process.ended = True
        self.process.protocol.processEnded(reason)

    def test_no_timer_is_left_once_the_cli_answered(self) -> None:
        """The kill timer is cancelled when the CLI answers in time."""
        self.process.prints(b"2.0.1\n")
        self.process.ends(0)
        self.reactor.advance(tap.VERSION_TIMEOUT * 2)
        self.assertEqual(self.process.signals, [])


class _BusyReactor(_ProcessReactor):
    """A reactor on which every port is taken."""

    def listenTCP(self, port, factory, backlog=50, interface=""):
        from twisted.internet.error import CannotListenError

        raise CannotListenError(interface, port, OSError(98, "Address already in use"))


class MissingCLITests(SynchronousTestCase):
    """
    A CLI that is not there: one line at start with the command that
    installs it, and the same line in server.info.
    """

    def setUp(self) -> None:
        base = os.path.realpath(tempfile.mkdtemp(prefix="claudews-nocli-"))
        self.addCleanup(shutil.rmtree, base, True)
        self.reactor = _ProcessReactor()
        self.log = LogCapture(self)
        self.bin = os.path.join(base, "no-claude-here")
        settings = Settings(data=os.path.join(base, "data"), project_roots=(base,), claude_bin=self.bin)
        self.service = tap.ClaudewsService(settings, self.reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def test_one_line_at_start_names_the_install_command(self) -> None:
        """A missing CLI is one line at start, naming it and `npm install -g @anthropic-ai/claude-code`."""
        [line] = self.log.lines("Claude Code CLI cannot be run")
        self.assertIn(self.bin, line)
        self.assertIn("npm install -g @anthropic-ai/claude-code", line)
        self.assertEqual(self.log.lines("Could not run"), [])
        self.assertEqual(self.reactor.spawned, [])

    def test_server_info_has_the_same_problem(self) -> None:
        """server.info's claude.problem is the start-up line's text; the version stays null."""
        c = Connection(self.service.factory, token=self.service.token, host="localhost:8765")
        claude = c.request("server.info", 1)["result"]["claude"]
        self.assertIsNone(claude["version"])
        self.assertIn("npm install -g @anthropic-ai/claude-code", claude["problem"])
        [line] = self.log.lines("Claude Code CLI cannot be run")
        self.assertTrue(line.lower().endswith(claude["problem"].lower()), (line, claude["problem"]))


class StartTests(SynchronousTestCase):
    """
    L{tap.start}, what makeService does before twistd goes on: every reason
    not to start is one L{tap.StartError} line, found before the reactor runs.
    """

    def setUp(self) -> None:
        self.base = os.path.realpath(tempfile.mkdtemp(prefix="claudews-start-"))
        self.addCleanup(shutil.rmtree, self.base, True)
        self.data = os.path.join(self.base, "data")

    def settings(self, **overrides: object) -> Settings:
        values: dict = dict(
            data=self.data, project_roots=(self.base,), token="t" * 40, claude_bin=_executable(self.base)
        )
        values.update(overrides)
        return Settings(**values)

    def start(self, reactor=None, twistd=None, **overrides: object) -> tap.ClaudewsService:
        server = tap.start(self.settings(**overrides), reactor or _ProcessReactor(), twistd)
        self.addCleanup(server._lock.release)
        return server

    def test_a_busy_port_is_one_line_and_frees_the_data_directory(self) -> None:
        """A port that cannot be listened on is a StartError naming the endpoint and the reason."""
        e = self.assertRaises(tap.StartError, tap.start, self.settings(), _BusyReactor(), None)
        self.assertEqual(
            str(e).splitlines(),
            ["cannot listen on tcp:8765:interface=127.0.0.1: Couldn't listen on"
             " 127.0.0.1:8765: [Errno 98] Address already in use."],
        )
        self.start()

    def test_a_second_server_on_the_data_directory_is_refused(self) -> None:
        """While one server holds DATA, a second one's start names the holder's pid."""
        self.start()
        e = self.assertRaises(tap.StartError, tap.start, self.settings(), _ProcessReactor(), None)
        self.assertIn("in use by process %d" % (os.getpid(),), str(e))

    def test_an_unusable_data_directory_is_one_line(self) -> None:
        """A data path that is a file cannot be used: said in one line naming it."""
        with open(self.data, "w"):
            pass
        e = self.assertRaises(tap.StartError, tap.start, self.settings(), _ProcessReactor(), None)
        self.assertIn("cannot use the data directory " + self.data, str(e))
        self.assertEqual(len(str(e).splitlines()), 1)

    def test_the_log_file_is_made_private_before_twistd_opens_it(self) -> None:
        """With --logfile FILE, FILE exists mode 0600 once start returns."""
        logfile = os.path.join(self.base, "claudews.log")
        self.start(twistd={"logfile": logfile, "nodaemon": 0})
        self.assertEqual(stat.S_IMODE(os.stat(logfile).st_mode), 0o600)

    def test_stopping_releases_the_data_directory(self) -> None:
        """Once the service stopped, another server may take the directory."""
        reactor = _ProcessReactor()
        server = self.start(reactor)
        server.startService()
        [(_, _, process)] = reactor.spawned
        _stop(self, server, process, reactor)
        self.start()

    def test_a_generated_token_is_not_logged_to_a_file(self) -> None:
        """Logging to a file, the first start names the token file, never the token."""
        reactor = _ProcessReactor()
        log = LogCapture(self)
        server = self.start(reactor, {"logfile": os.path.join(self.base, "l"), "nodaemon": 1}, token=None)
        server.startService()
        [(_, _, process)] = reactor.spawned
        self.addCleanup(_stop, self, server, process, reactor)
        [line] = log.lines("claudews listening")
        self.assertIn("a new token was generated and stored in " + os.path.join(self.data, "auth_token"), line)
        self.assertNotIn(server.token, log.text())

    def test_a_bad_value_under_twistd_is_one_line_without_usage(self) -> None:
        """tap.Options turns a bad value into SystemExit with one line, not a usage error."""
        options = tap.Options(environ={"HOME": self.base})
        e = self.assertRaises(SystemExit, options.parseOptions, ["--max-running", "two"])
        self.assertEqual(e.code, "claudews: --max-running: must be an integer number, not 'two'")
