"""
One Claude Code CLI process: its argument list, stdin/stdout framing and the
stream-json control protocol.

The process is started as::

    claude -p --input-format stream-json --output-format stream-json \\
        --verbose --permission-prompt-tool stdio [--resume ID] [flags]

in a session (and process group) of its own, never through a shell:
with glibc's C{posix_spawn} in a thread (L{claudews.spawn}), elsewhere
through a trampoline (L{claudews.proctree.new_session_argv}). Prompts go in on stdin as ``user`` lines;
everything it prints on stdout is framed by newline and handed up, JSON
objects as messages and anything else as plain output.
"""

import uuid
from typing import Any, ContextManager, Mapping, Protocol, cast

from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from claudews import proctree
from claudews import spawn as spawning
from claudews.clicheck import cli_problem, search_path
from claudews.events import encode, parse_line
from claudews.interfaces import ProcessReactor, ProcessTrees

#: Flags every CLI process gets; options of a prompt add more.
BASE_ARGS = (
    "-p",
    "--input-format",
    "stream-json",
    "--output-format",
    "stream-json",
    "--verbose",
    "--permission-prompt-tool",
    "stdio",
)

#: Plain-text output is cut to this many characters per event.
MAX_TEXT = 64 * 1024

#: After this much stderr from one process, further stderr is drained and
#: dropped: a chatty CLI must not fill the history.
MAX_STDERR = 1024 * 1024

#: What L{proctree}'s trampoline prints when it cannot exec the CLI
#: (where L{claudews.spawn} is not available).
_CANNOT_RUN = "claudews: cannot run "

#: Environment variables that make a nested CLI believe it runs inside
#: another Claude Code session.
SCRUBBED_ENV = ("CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT", "CLAUDE_CODE_SSE_PORT")


def build_argv(claude_bin: str, session_id: str | None, flags: tuple[str, ...]) -> list[str]:
    argv = [claude_bin, *BASE_ARGS]
    if session_id:
        argv += ["--resume", session_id]
    argv += list(flags)
    return argv


#: The server's own settings (its token among them, CLAUDEWS_TOKEN) are
#: no business of the CLI or of any tool it runs.
SERVER_ENV_PREFIX = "CLAUDEWS_"


def build_env(
    base: Mapping[str, str], extra: Mapping[str, str], marker: str
) -> dict[str, str]:
    """
    The CLI's environment: the server's, without what would confuse a
    nested CLI and without the server's own C{CLAUDEWS_*} settings, plus
    what the operator set for the CLI (C{extra}, as given), plus the
    process marker.
    """
    env = {
        k: v
        for k, v in base.items()
        if k not in SCRUBBED_ENV and not k.startswith(SERVER_ENV_PREFIX)
    }
    env.update(extra)
    env[proctree.MARKER_ENV] = marker
    return env


class _Pipes(Protocol):
    """The part of a process transport (a zope interface) L{ClaudeProcess} uses."""

    pid: int | None

    def write(self, data: bytes) -> None:
        """Write to the process's stdin."""

    def closeStdin(self) -> None:
        """Close the process's stdin."""


class Listener(Protocol):
    """
    What a L{ClaudeProcess} reports to; L{claudews.project} implements it.
    """

    def cli_message(
        self, process: "ClaudeProcess", message: dict[str, Any], raw: bytes | None = None
    ) -> None:
        """
        Every JSON object the CLI printed, in order; C{raw} is its line
        when that is strict JSON (L{claudews.events.parse_line}).
        """

    def cli_lines(self, process: "ClaudeProcess") -> ContextManager[object]:
        """
        Around the lines of one read from the CLI's stdout: what they
        publish can be stored together, with one write.
        """

    def cli_output(self, process: "ClaudeProcess", stream: str, text: str) -> None:
        """Non-JSON stdout lines and stderr text, bounded."""

    def cli_permission(
        self, process: "ClaudeProcess", request_id: str, request: dict[str, Any]
    ) -> None:
        """A C{can_use_tool} control request, to be answered with L{ClaudeProcess.answer}."""

    def cli_exited(
        self, process: "ClaudeProcess", exit_code: int | None, signal: int | None
    ) -> None:
        """The process is gone and its pipes are closed."""


class ClaudeProcess(protocol.ProcessProtocol):
    """
    A live CLI process.

    @ivar flags: the option flags it was started with; a prompt whose
        options map to other flags needs another process.
    @ivar marker: the value of L{proctree.MARKER_ENV} in its environment and
        that of everything it starts.
    @ivar total_cost: the last C{total_cost_usd} it reported (a running
        total for the life of the process).
    """

    _log = Logger()

    def __init__(
        self,
        listener: Listener,
        *,
        trees: ProcessTrees,
        reactor: ProcessReactor,
        flags: tuple[str, ...] = (),
        max_line_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self._reactor = reactor
        self._trees = trees
        self._listener = listener
        self.flags = tuple(flags)
        self.marker = uuid.uuid4().hex
        self.total_cost = 0.0
        self.pid: int | None = None
        #: The process has exited and been reaped: its pid is free again.
        self.reaped = False
        self.ended = False
        self._ended_waiters: list[defer.Deferred[None]] = []
        self._max_line = max_line_bytes
        self._parts: list[bytes] = []
        self._size = 0
        self._discarding = False
        self._stderr_seen = 0
        self._stderr_tail = b""
        self._stdin_open = True
        self._exit_code: int | None = None
        self._signal: int | None = None
        self._bin = ""
        self._search_path = ""
        #: Being started in a thread (L{claudews.spawn}): not connected yet.
        self._starting = False
        self._start_waiters: list[defer.Deferred[None]] = []
        #: Printed something or ended: done loading (see L{when_booted}).
        self._booted = False
        self._boot_waiters: list[defer.Deferred[None]] = []

    # -- starting and stopping

    def spawn(
        self, argv: list[str], cwd: str, env: dict[str, str], directory: int | None = None
    ) -> defer.Deferred[None]:
        """
        Start the CLI in C{cwd}, or, given the descriptor C{directory} of
        it, in that very directory; the caller may close C{directory}
        once this returns. Fires once it runs, or fails with L{OSError}
        when it cannot be started at all. Cancelling the Deferred gives up
        waiting, not the start: a process that comes up after is this
        one's, to L{terminate}, which waits for the start.

        Where L{spawn.available}, the start waits in a thread, not on the
        reactor thread (see L{claudews.spawn}); elsewhere it goes through
        the trampoline of L{proctree.new_session_argv}.
        """
        self._bin, self._search_path = argv[0], search_path(environ=env)
        if directory is not None and spawning.available(self._reactor):
            self._starting = True
            started = spawning.spawn(self._reactor, self, argv, env, directory)
            # The caller's Deferred is a copy: its cancel must not cut the
            # start's own chain, which adopts the child once it runs.
            waiting: defer.Deferred[None] = defer.Deferred()
            started.addCallbacks(self._started, self._start_failed).chainDeferred(waiting)
            return waiting
        wrapped = proctree.new_session_argv(argv)
        child_fds: dict[int, object] = {0: "w", 1: "r", 2: "r"}
        if directory is not None:
            child_fds[proctree.CWD_FD] = directory
            env = dict(env, **{proctree.CWD_FD_ENV: str(proctree.CWD_FD)})
        try:
            self._reactor.spawnProcess(
                self, wrapped[0], wrapped, env=env,
                # With the directory's descriptor the trampoline changes
                # into it; without a path Twisted starts the child with
                # posix_spawn instead of forking this whole process.
                path=cwd if directory is None else None,
                childFDs=child_fds,
            )
        except OSError:
            return defer.fail()
        return defer.succeed(None)

    def _started(self, _: None) -> None:
        self._start_settled()

    def _start_settled(self) -> None:
        """The start is over, one way or the other: what waited for it goes on."""
        self._starting = False
        waiters, self._start_waiters = self._start_waiters, []
        for d in waiters:
            d.callback(None)

    def _after_start(self) -> defer.Deferred[None]:
        """Fires once the start under way is over (see L{_start_settled})."""
        d: defer.Deferred[None] = defer.Deferred()
        self._start_waiters.append(d)
        return d

    def _start_failed(self, failure: Failure) -> Failure:
        """The start failed: an L{OSError} says so as the trampoline did."""
        # Never connected: nothing runs, nothing is left to end.
        self.ended = self.reaped = True
        self._stdin_open = False
        self._boot_done()
        self._start_settled()
        error = failure.value
        if isinstance(error, OSError):
            # Said as the trampoline said it, with how to install the CLI.
            problem = cli_problem(self._bin, self._search_path)
            raise OSError(problem or "cannot run %s: %s" % (self._bin, error.strerror))
        return failure

    @property
    def _pipes(self) -> _Pipes:
        # Twisted's IProcessTransport is a zope interface mypy cannot
        # check; this is the part of it used here.
        assert self.transport is not None, "not connected"
        return cast(_Pipes, self.transport)

    def connectionMade(self) -> None:
        self.pid = self._pipes.pid

    def close_stdin(self) -> None:
        """
        End of input: the CLI finishes what it is doing and exits.
        """
        if self._starting:
            self._after_start().addCallback(lambda _: self.close_stdin())
            return
        if self._stdin_open and not self.ended:
            self._stdin_open = False
            self._pipes.closeStdin()

    def terminate(self, grace: float) -> defer.Deferred[None]:
        """
        End the process and everything it started (see L{proctree.end_tree}).

        The Deferred fires once the process has ended; it always fires.
        """
        if self._starting:
            # Once it runs (or could not start): ending it before is
            # ending nothing, and it would run on.
            return self._after_start().addCallback(lambda _: self.terminate(grace))
        if self.ended:
            return defer.succeed(None)
        self.close_stdin()
        # Once reaped, the pid may name another process: the marker alone
        # then finds what is left.
        done = self._trees.end(None if self.reaped else self.pid, self.marker, grace=grace)
        done.addErrback(self._tree_failed)
        # processEnded follows the last death within a reactor turn or two;
        # wait for it so callers see the listener's cli_exited first. Not
        # forever: something unmarked may hold its pipes open.
        return done.addCallback(lambda _: self._ended_within(grace))

    def _tree_failed(self, failure: Failure) -> None:
        self._log.failure("Ending process tree failed", failure)

    def _ended_within(self, seconds: float) -> defer.Deferred[None]:
        d = self.when_ended()
        d.addTimeout(seconds, cast(IReactorTime, self._reactor))
        d.addErrback(self._still_open)
        return d

    def _still_open(self, failure: Failure) -> Failure | None:
        if not isinstance(failure.value, defer.TimeoutError):
            return failure
        self._log.error(
            "CLI process {pid} was ended but its pipes are still open; "
            "giving up waiting for them",
            pid=self.pid,
        )
        return None

    def when_booted(self) -> defer.Deferred[None]:
        """
        Fires once the CLI has printed something (it has loaded), or has
        ended, or could not start.
        """
        if self._booted:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._boot_waiters.append(d)
        return d

    def _boot_done(self) -> None:
        if self._booted:
            return
        self._booted = True
        waiters, self._boot_waiters = self._boot_waiters, []
        for d in waiters:
            d.callback(None)

    def when_ended(self) -> defer.Deferred[None]:
        if self.ended:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._ended_waiters.append(d)
        return d

    # -- talking to it

    def _send(self, message: dict[str, Any]) -> bool:
        # Not before it runs: L{LiveProcess.ready} hands it out only then.
        if self._starting or not self._stdin_open or self.ended:
            return False
        self._pipes.write(encode(message) + b"\n")
        return True

    def send_prompt(self, text: str) -> bool:
        return self._send(
            {
                "type": "user",
                "message": {"role": "user", "content": text},
                "parent_tool_use_id": None,
                "session_id": "",
            }
        )

    def interrupt(self) -> bool:
        """
        Ask the CLI to stop the current prompt; it answers with a
        C{control_response} and then a C{result}, and lives on.
        """
        return self._send(
            {
                "type": "control_request",
                "request_id": "claudews-" + uuid.uuid4().hex[:12],
                "request": {"subtype": "interrupt"},
            }
        )

    def answer(self, request_id: str, response: dict[str, Any]) -> bool:
        return self._send(
            {
                "type": "control_response",
                "response": {
                    "subtype": "success",
                    "request_id": request_id,
                    "response": response,
                },
            }
        )

    def _refuse(self, request_id: Any, subtype: Any) -> None:
        self._send(
            {
                "type": "control_response",
                "response": {
                    "subtype": "error",
                    "request_id": request_id,
                    "error": "claudews does not support control request %r"
                    % (subtype,),
                },
            }
        )

    # -- stdout framing

    def outReceived(self, data: bytes) -> None:
        if not self._booted:
            self._boot_done()
        end = data.find(b"\n")
        if end < 0:
            self._collect(data)
            return
        # A read carries many lines when the CLI streams fast: their
        # events go to the history in one write.
        with self._listener.cli_lines(self):
            start = 0
            while end >= 0:
                self._collect(data[start:end])
                self._line_done()
                start = end + 1
                end = data.find(b"\n", start)
            if start < len(data):
                self._collect(data[start:])

    def _collect(self, chunk: bytes) -> None:
        if self._discarding:
            self._size += len(chunk)
            return
        self._parts.append(chunk)
        self._size += len(chunk)
        if self._size > self._max_line:
            # Keep reading (the pipe must drain) but stop keeping the line.
            self._parts = []
            self._discarding = True

    def _line_done(self) -> None:
        parts, size = self._parts, self._size
        self._parts, self._size = [], 0
        if self._discarding:
            self._discarding = False
            self._listener.cli_output(
                self,
                "stdout",
                "[claudews: dropped a stdout line of %d bytes, over the limit of %d]"
                % (size, self._max_line),
            )
            return
        line = parts[0] if len(parts) == 1 else b"".join(parts)
        stripped = line.strip()
        if not stripped:
            return
        try:
            message, strict = parse_line(stripped)
        except (ValueError, RecursionError):
            message, strict = None, False
        if not isinstance(message, dict):
            self._listener.cli_output(self, "stdout", _text(line))
            return
        self._dispatch(message, stripped if strict else None)

    def _dispatch(self, message: dict[str, Any], raw: bytes | None = None) -> None:
        total = message.get("total_cost_usd")
        # Before the listener hears of it: a result can start the next
        # prompt at once, which takes the running total as its base.
        if message.get("type") == "result" and isinstance(total, (int, float)):
            self.total_cost = float(total)
        self._listener.cli_message(self, message, raw)
        if message.get("type") != "control_request":
            return
        request = message.get("request")
        request_id = message.get("request_id")
        subtype = request.get("subtype") if isinstance(request, dict) else None
        if (
            subtype == "can_use_tool"
            and isinstance(request, dict)
            and isinstance(request_id, str)
        ):
            self._listener.cli_permission(self, request_id, request)
        else:
            self._refuse(request_id, subtype)

    # -- stderr and the end

    def errReceived(self, data: bytes) -> None:
        if not self._booted:
            self._boot_done()
        self._stderr_tail = (self._stderr_tail + data)[-2048:]
        before = self._stderr_seen
        self._stderr_seen += len(data)
        if before >= MAX_STDERR:
            return
        keep = data[: MAX_STDERR - before]
        self._listener.cli_output(self, "stderr", _text(keep))
        if self._stderr_seen >= MAX_STDERR:
            self._listener.cli_output(
                self,
                "stderr",
                "[claudews: stderr over %d bytes; the rest is not kept]" % (MAX_STDERR,),
            )

    @property
    def stderr_tail(self) -> str:
        tail = self._stderr_tail.decode("utf-8", "replace")
        if self._exit_code == 127 and _CANNOT_RUN in tail:
            # The trampoline could not exec the CLI: say how to install it.
            return cli_problem(self._bin, self._search_path) or tail
        return tail

    def processExited(self, reason: Failure) -> None:
        self.reaped = True
        if isinstance(reason.value, error.ProcessTerminated):
            self._exit_code = reason.value.exitCode
            self._signal = reason.value.signal
        else:
            self._exit_code = 0

    def processEnded(self, reason: Failure) -> None:
        self.ended = True
        self._stdin_open = False
        self._boot_done()
        try:
            if self._parts or self._discarding:
                self._line_done()
            self._listener.cli_exited(self, self._exit_code, self._signal)
        finally:
            waiters, self._ended_waiters = self._ended_waiters, []
            for d in waiters:
                # A waiter may have given up (timed out) already.
                if not d.called:
                    d.callback(None)


def _text(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + "[claudews: %d more characters]" % (
            len(text) - MAX_TEXT,
        )
    return text
