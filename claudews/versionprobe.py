"""
C{claude --version}, asked once at start for C{server.info}: a hung CLI
must neither delay anything nor outlive the server. A CLI that is not
there at all is said at start in one line, with the command that installs
it (L{claudews.clicheck}).
"""

import os
from typing import Any, Mapping

from twisted.internet import defer, error, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from claudews.clicheck import cli_problem, search_path
from claudews.interfaces import ProcessReactor

#: Seconds C{claude --version} may take before it is killed.
VERSION_TIMEOUT = 30.0

#: What of C{claude --version}'s output is kept (server.info trims to 200).
_VERSION_BYTES = 4096



class _VersionProtocol(protocol.ProcessProtocol):
    """
    C{claude --version}: C{exited} fires once the process is gone; C{ended}
    fires with what it printed (C{None} when it printed nothing or failed)
    and why it ended, once its pipes are closed too (a child it left may
    hold them longer).
    """

    def __init__(self) -> None:
        self.output = b""
        self.exited: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[tuple[str | None, Failure]] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        if len(self.output) < _VERSION_BYTES:
            self.output += data[: _VERSION_BYTES - len(self.output)]

    def errReceived(self, data: bytes) -> None:
        # Read and dropped: a chatty CLI must never block on a full pipe.
        pass

    def processExited(self, reason: Failure) -> None:
        self.exited.callback(None)

    def processEnded(self, reason: Failure) -> None:
        version = None
        if isinstance(reason.value, error.ProcessDone):
            version = self.output.decode("utf-8", "replace").strip()[:200] or None
        self.ended.callback((version, reason))


class VersionProbe:
    """
    Asks C{claude --version} once, killing it after L{VERSION_TIMEOUT}: a
    hung CLI must neither delay anything nor outlive the server.

    @ivar version: what it said; C{None} until it has answered, or when it
        could not.
    @ivar problem: why the CLI cannot be run at all (L{cli_problem}), found
        at L{start}; C{None} when it can.
    """

    _log = Logger()

    def __init__(
        self, reactor: ProcessReactor, claude_bin: str, extra_env: Mapping[str, str] | None = None
    ) -> None:
        self._reactor = reactor
        self._bin = claude_bin
        self._env = dict(os.environ, **(extra_env or {}))
        self._process: _VersionProtocol | None = None
        self.version: str | None = None
        self.problem: str | None = None

    def start(self) -> None:
        self.problem = cli_problem(self._bin, search_path(environ=self._env))
        if self.problem is not None:
            self._log.error("{problem}", problem=self.problem[0].upper() + self.problem[1:])
            return
        process = _VersionProtocol()
        try:
            self._reactor.spawnProcess(
                process, self._bin, [self._bin, "--version"], env=self._env
            )
        except OSError as e:
            self._log.warn("Could not run {bin} --version: {error}", bin=self._bin, error=e)
            return
        self._process = process
        timeout = self._reactor.callLater(VERSION_TIMEOUT, self._too_slow)

        def ended(result: tuple[str | None, Failure]) -> None:
            if timeout.active():
                timeout.cancel()
                self._ended(*result)
            # Otherwise _too_slow said so already.

        process.ended.addCallback(ended).addErrback(
            lambda f: self._log.failure("Asking the CLI its version failed", f)
        )

    def _ended(self, version: str | None, reason: Failure) -> None:
        if version is None:
            self._log.warn(
                "Could not run {bin} --version: {error}",
                bin=self._bin,
                error=reason.getErrorMessage()
                if isinstance(reason.value, error.ProcessTerminated)
                else "it printed nothing",
            )
            return
        self.version = version
        # Tests (and people) wait for this line to know server.info has it.
        self._log.info("Claude Code CLI: {version}", version=version)

    def _too_slow(self) -> None:
        self._log.warn(
            "{bin} --version did not answer within {timeout} s; killed",
            bin=self._bin,
            timeout=VERSION_TIMEOUT,
        )
        self.stop()

    def stop(self) -> defer.Deferred[None]:
        """
        Kill C{claude --version} if it still runs; fires once it is gone.
        """
        process = self._process
        if process is None or process.exited.called:
            return defer.succeed(None)
        transport: Any = process.transport
        try:
            transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass
        gone: defer.Deferred[None] = defer.Deferred()

        def exited(result: object) -> object:
            gone.callback(None)
            return result

        process.exited.addBoth(exited)
        return gone
